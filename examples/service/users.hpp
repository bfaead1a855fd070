// The example service's users table, kept in the application's own database: the same SQLite
// file or PostgreSQL database as the jobs, so that a user and their jobs are written in ONE
// transaction (see users_sqlite.hpp and users_postgres.hpp; copy the one you use).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <jobq/job.hpp>

namespace service {

/// @brief A registered user and the jobs enqueued with them.
struct User {
  long long id = 0;
  std::string email, name;
  std::vector<jobq::JobId> jobs;  ///< enqueued in the transaction that stored the user
};

/// @brief The email address belongs to another user (the unique constraint said so).
struct EmailTaken : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// @brief The database cannot be reached or is busy right now; the request may be retried.
struct DatabaseUnavailable : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// @brief The jobs to enqueue for a new user; called inside the transaction, once the user has
/// an id.
using JobsFor = std::function<std::vector<jobq::NewJob>(const User&)>;

/// @brief The users table, on the application's own connection to the jobs' database.
/// Safe to call from the HTTP server's threads.
class Users {
 public:
  virtual ~Users() = default;
  /// @brief Stores a user and enqueues jobs_for(user) in one transaction: both or neither.
  /// Throws EmailTaken, DatabaseUnavailable, jobq::Error (a job was refused), std::exception.
  virtual User create(const std::string& email, const std::string& name, const JobsFor& jobs_for) = 0;
  /// @brief The user with this id, or nullopt.
  virtual std::optional<User> find(long long id) = 0;
};

}  // namespace service
