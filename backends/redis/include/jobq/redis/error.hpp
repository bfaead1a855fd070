#pragma once
// RedisError, and how a Redis error reply maps to jobq's error categories.

#include <string>
#include <string_view>
#include <utility>

#include "jobq/error.hpp"

namespace jobq {

/// @brief An error from the Redis backend; keeps the server's reply text when there was one.
class RedisError : public Error {
 public:
  /// @brief An error of a category, with a message and the Redis reply (may be empty).
  RedisError(ErrorCategory category, const std::string& message, std::string reply = {})
      : Error(category, message), reply_(std::move(reply)) {}

  /// @brief The error reply Redis sent (e.g. "WRONGPASS ..."), or empty for I/O failures.
  [[nodiscard]] const std::string& reply() const noexcept { return reply_; }

 private:
  std::string reply_;
};

namespace detail::redis {

/// @brief Error replies that mean the command was not run and may be sent again later.
inline bool reply_is_transient(std::string_view reply) {
  const auto word = reply.substr(0, reply.find(' '));
  return word == "LOADING" || word == "BUSY" || word == "TRYAGAIN" || word == "MASTERDOWN" ||
         word == "CLUSTERDOWN" || word == "READONLY";
}

/// @brief The jobq error category of an error reply.
inline ErrorCategory reply_category(std::string_view reply) {
  const auto word = reply.substr(0, reply.find(' '));
  if (reply_is_transient(reply)) return ErrorCategory::connection;
  if (word == "NOAUTH" || word == "WRONGPASS" || word == "NOPERM") return ErrorCategory::invalid_argument;
  return ErrorCategory::backend;
}

/// @brief Thrown for transient error replies (LOADING, BUSY, ...): not executed, safe to resend.
class Rejected : public RedisError {
 public:
  using RedisError::RedisError;
};

/// @brief Throws the RedisError (or Rejected) for an error reply.
[[noreturn]] inline void throw_reply(const std::string& what, std::string_view reply) {
  std::string r(reply);
  if (reply_is_transient(reply)) throw Rejected(ErrorCategory::connection, "redis: " + what + ": " + r, r);
  throw RedisError(reply_category(reply), "redis: " + what + ": " + r, r);
}

}  // namespace detail::redis
}  // namespace jobq
