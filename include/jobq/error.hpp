#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace jobq {

/// @brief What kind of failure an Error reports; lets callers decide to retry or give up.
enum class ErrorCategory {
  connection,        ///< the backend cannot be reached or the connection broke (transient)
  invalid_argument,  ///< the caller passed something malformed (permanent)
  not_found,         ///< the named job, queue or object does not exist
  conflict,          ///< the state changed under the caller (stale lease, locked, schema mismatch)
  backend,           ///< the backend reported a failure of its own (SQL error, Redis error reply)
};

/// @brief Human-readable name of a category ("connection", "invalid_argument", ...).
constexpr std::string_view to_string(ErrorCategory c) noexcept {
  switch (c) {
    case ErrorCategory::connection: return "connection";
    case ErrorCategory::invalid_argument: return "invalid_argument";
    case ErrorCategory::not_found: return "not_found";
    case ErrorCategory::conflict: return "conflict";
    case ErrorCategory::backend: return "backend";
  }
  return "unknown";
}

/// @brief Base of every error jobq throws; backends derive from it to keep native detail.
class Error : public std::runtime_error {
 public:
  /// @brief An error of a category with a message that says what went wrong and where.
  Error(ErrorCategory category, const std::string& message)
      : std::runtime_error(message), category_(category) {}

  /// @brief The category, to tell transient (connection) from permanent errors.
  [[nodiscard]] ErrorCategory category() const noexcept { return category_; }

  /// @brief True when retrying the same call later may succeed.
  [[nodiscard]] bool is_transient() const noexcept {
    return category_ == ErrorCategory::connection;
  }

 private:
  ErrorCategory category_;
};

/// @brief Malformed input: bad queue name, bad payload, bad option, bad connection string.
class InvalidArgument : public Error {
 public:
  /// @brief An invalid-argument error with its message.
  explicit InvalidArgument(const std::string& message)
      : Error(ErrorCategory::invalid_argument, message) {}
};

/// @brief The backend is unreachable or the connection was lost.
class ConnectionError : public Error {
 public:
  /// @brief A connection error with its message (never including credentials).
  explicit ConnectionError(const std::string& message)
      : Error(ErrorCategory::connection, message) {}
};

/// @brief A referenced object does not exist.
class NotFound : public Error {
 public:
  /// @brief A not-found error with its message.
  explicit NotFound(const std::string& message) : Error(ErrorCategory::not_found, message) {}
};

/// @brief The stored state conflicts with the request (e.g. a newer schema version).
class Conflict : public Error {
 public:
  /// @brief A conflict error with its message.
  explicit Conflict(const std::string& message) : Error(ErrorCategory::conflict, message) {}
};

/// @brief Thrown by a handler to fail its job without further retries (straight to dead).
class Permanent : public std::runtime_error {
 public:
  /// @brief A permanent failure with the reason stored in the job's error list.
  explicit Permanent(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace jobq
