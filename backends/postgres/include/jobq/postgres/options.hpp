#pragma once
// The PostgreSQL backend's public options, its error type and its connection counters.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <utility>

#include "jobq/backend.hpp"

namespace jobq {

/// @brief An error reported by PostgreSQL or libpq, keeping the server's SQLSTATE (empty when
/// the failure happened on the client side, e.g. a refused connection).
class PostgresError : public Error {
 public:
  /// @brief An error of a category with its message and SQLSTATE.
  PostgresError(ErrorCategory category, const std::string& message, std::string sqlstate = {})
      : Error(category, message), sqlstate_(std::move(sqlstate)) {}

  /// @brief The five-character SQLSTATE ("42501", "08006", ...), or empty.
  [[nodiscard]] const std::string& sqlstate() const noexcept { return sqlstate_; }

 private:
  std::string sqlstate_;
};

/// @brief Options of the PostgreSQL backend.
struct PostgresOptions {
  /// Where job times come from. Every time is computed here and sent as a statement parameter
  /// (epoch ms), never read from the server's now(): see backends/postgres/README.md, "Time".
  ClockFn clock = system_clock();
  std::string schema = "jobq";                    ///< own schema: [a-z_][a-z0-9_]*, at most 48 chars
  std::size_t pool_size = 4;                      ///< connections shared by the calling threads
  Millis poll_interval{1'000};                    ///< longest wait_for_work sleep without a wake-up
  bool listen = true;                             ///< LISTEN/NOTIFY wake-ups; false = poll only
  bool prepared_statements = true;                ///< false for PgBouncer (transaction mode) < 1.21
  std::chrono::seconds connect_timeout{5};        ///< per connection attempt
  Millis reconnect_backoff_min{50};               ///< first wait before reconnecting
  Millis reconnect_backoff_max{2'000};            ///< longest wait between reconnect attempts
  Millis reconnect_give_up{15'000};               ///< a call gives up (ConnectionError) after this
  std::string application_name = "jobq";          ///< shown in pg_stat_activity
  std::size_t max_payload_bytes = default_max_payload_bytes;  ///< larger payloads are refused
  /// false: open only a schema that already holds a jobq store; a missing schema (or one
  /// without jobq's tables) is a `not_found` error and nothing is created. For tools that only
  /// look at a store, so a mistyped schema or database creates nothing.
  bool create = true;
};

/// @brief Counters of connection trouble a PostgresBackend survived (for logs and tests).
struct PostgresStats {
  std::uint64_t retries = 0;           ///< calls retried on a new connection after one broke
  std::uint64_t unknown_outcomes = 0;  ///< statements whose answer was lost with the connection
  std::uint64_t claims_undone = 0;     ///< jobs of unanswered claims given back by their tokens
};

namespace detail::pg {

/// Refuses options the backend cannot work with (InvalidArgument). The schema name is checked
/// strictly because the statements splice it into their text (statements.hpp).
inline void check_options(const PostgresOptions& opt) {
  const auto& s = opt.schema;
  const bool ok = !s.empty() && s.size() <= 48 && !(s[0] >= '0' && s[0] <= '9') &&
                  std::all_of(s.begin(), s.end(), [](char c) {
                    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
                  });
  if (!ok) {
    throw InvalidArgument("postgres: schema name '" + s +
                          "' is invalid: use 1..48 characters of [a-z0-9_], not starting with a digit");
  }
  if (opt.pool_size < 1) throw InvalidArgument("postgres: pool_size must be at least 1");
  if (opt.poll_interval <= Millis{0}) throw InvalidArgument("postgres: poll_interval must be positive");
  if (!opt.clock) throw InvalidArgument("postgres: clock is empty");
  if (opt.reconnect_backoff_min <= Millis{0} || opt.reconnect_backoff_max < opt.reconnect_backoff_min) {
    throw InvalidArgument("postgres: reconnect backoff must be positive with min <= max");
  }
}

}  // namespace detail::pg
}  // namespace jobq
