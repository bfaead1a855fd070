// The users table on PostgreSQL: the application's own libpq connection to the jobs' database;
// jobq::PostgresBackend::enqueue(PGconn*, job) writes the jobs inside its transaction.
#pragma once

#include <libpq-fe.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <jobq/postgres.hpp>

#include "users.hpp"

namespace service {

/// @brief Users in the PostgreSQL database the jobs live in (table `users` in the connection's
/// default schema; jobq keeps its tables in schema `jobq`).
class PostgresUsers final : public Users {
 public:
  /// @brief Connects to `url` (the jobs' database) and creates the users table.
  PostgresUsers(jobq::PostgresBackend& jobs, const std::string& url) : jobs_(jobs), conn_(PQconnectdb(url.c_str())) {
    if (PQstatus(conn_.get()) != CONNECTION_OK) {
      throw DatabaseUnavailable("users: cannot connect to " + jobs.target() + ": " + error_text());
    }
    configure();
    // Two API processes starting at once must not both create the table: serialise on a lock.
    exec("SELECT pg_advisory_lock(hashtext('service users table'))");
    exec(R"sql(
      CREATE TABLE IF NOT EXISTS users (
        id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        email      text NOT NULL UNIQUE,
        name       text NOT NULL,
        job_ids    bigint[] NOT NULL DEFAULT '{}',
        created_at timestamptz NOT NULL DEFAULT now()
      ))sql");
    exec("SELECT pg_advisory_unlock(hashtext('service users table'))");
  }

  User create(const std::string& email, const std::string& name, const JobsFor& jobs_for) override {
    std::lock_guard lock(mutex_);  // one connection: one request at a time
    // Any exception below rolls everything back: the user and the jobs.
    Transaction tx(*this);
    User user{.id = 0, .email = email, .name = name, .jobs = {}};
    auto inserted = exec("INSERT INTO users (email, name) VALUES ($1, $2) RETURNING id", {email, name});
    user.id = std::stoll(PQgetvalue(inserted.get(), 0, 0));
    for (const auto& job : jobs_for(user)) user.jobs.push_back(jobs_.enqueue(conn_.get(), job).id);
    exec("UPDATE users SET job_ids = $1 WHERE id = $2", {pg_array(user.jobs), std::to_string(user.id)});
    tx.commit();
    return user;
  }

  std::optional<User> find(long long id) override {
    std::lock_guard lock(mutex_);
    auto r = exec_reconnecting("SELECT email, name, array_to_json(job_ids) FROM users WHERE id = $1", {std::to_string(id)});
    if (PQntuples(r.get()) == 0) return std::nullopt;
    return User{.id = id, .email = PQgetvalue(r.get(), 0, 0), .name = PQgetvalue(r.get(), 0, 1),
                .jobs = nlohmann::json::parse(PQgetvalue(r.get(), 0, 2)).get<std::vector<jobq::JobId>>()};
  }

 private:
  struct Finish {
    void operator()(PGconn* c) const noexcept { PQfinish(c); }
  };
  struct Clear {
    void operator()(PGresult* r) const noexcept { PQclear(r); }
  };
  using Result = std::unique_ptr<PGresult, Clear>;

  /// @brief BEGIN; rolled back on destruction unless committed.
  class Transaction {
   public:
    explicit Transaction(PostgresUsers& u) : u_(u) { u_.exec_reconnecting("BEGIN"); }
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    ~Transaction() {
      if (PQtransactionStatus(u_.conn_.get()) != PQTRANS_IDLE) PQclear(PQexec(u_.conn_.get(), "ROLLBACK"));
    }
    void commit() { u_.exec("COMMIT"); }

   private:
    PostgresUsers& u_;
  };

  /// @brief Runs one statement; throws EmailTaken on a unique violation, DatabaseUnavailable when
  /// the server is gone or shutting down, std::runtime_error otherwise.
  Result exec(const char* sql, const std::vector<std::string>& params = {}) {
    std::vector<const char*> values;
    for (const auto& p : params) values.push_back(p.c_str());
    Result r(PQexecParams(conn_.get(), sql, static_cast<int>(values.size()), nullptr, values.data(), nullptr,
                          nullptr, 0));
    const auto status = PQresultStatus(r.get());
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return r;
    const char* state = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE);
    const std::string sqlstate = state != nullptr ? state : "";
    const std::string msg = "users: " + error_text();
    if (sqlstate == "23505") throw EmailTaken("a user with email " + params.at(0) + " already exists");
    if (PQstatus(conn_.get()) != CONNECTION_OK || sqlstate.starts_with("08") || sqlstate.starts_with("57P")) {
      throw DatabaseUnavailable(msg);
    }
    throw std::runtime_error(msg);
  }

  /// @brief exec() for a statement that is safe to repeat: a connection the server dropped
  /// (restart, failover, pg_terminate_backend) is re-opened once, and the statement sent again.
  Result exec_reconnecting(const char* sql, const std::vector<std::string>& params = {}) {
    if (PQstatus(conn_.get()) == CONNECTION_OK) {
      try {
        return exec(sql, params);
      } catch (const DatabaseUnavailable&) {
        if (PQstatus(conn_.get()) == CONNECTION_OK) throw;  // up, but shutting down or refusing
      }
    }
    PQreset(conn_.get());
    if (PQstatus(conn_.get()) != CONNECTION_OK) {
      throw DatabaseUnavailable("users: cannot reconnect to " + jobs_.target() + ": " + error_text());
    }
    configure();
    return exec(sql, params);
  }

  void configure() {
    exec("SET application_name = 'service_api'");
    exec("SET client_min_messages = warning");  // no NOTICE on stderr for CREATE ... IF NOT EXISTS
  }

  /// @brief libpq's last error on one line.
  std::string error_text() const {
    std::string s = PQerrorMessage(conn_.get());
    std::replace(s.begin(), s.end(), '\n', ' ');
    std::replace(s.begin(), s.end(), '\t', ' ');
    while (!s.empty() && s.back() == ' ') s.pop_back();
    return s;
  }

  static std::string pg_array(const std::vector<jobq::JobId>& ids) {
    std::string s = "{";
    for (auto id : ids) s += (s.size() > 1 ? "," : "") + std::to_string(id);
    return s + "}";
  }

  jobq::PostgresBackend& jobs_;
  std::unique_ptr<PGconn, Finish> conn_;
  std::mutex mutex_;
};

}  // namespace service
