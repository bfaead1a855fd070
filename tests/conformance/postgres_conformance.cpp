#include <memory>
#include <optional>

#include <jobq/postgres.hpp>

#include "postgres/pg_test_support.hpp"

/// PostgreSQL: a fresh schema (jobq_t_<random>) per test case, dropped in the destructor.
struct PostgresFixture {
  static constexpr const char* name = "postgres";
  static constexpr bool completed_notice_has_progress = true;
  jobq::ManualClock clock;
  pgtest::TempSchema schema;
  jobq::PostgresBackend store{pgtest::url(), options()};
  std::optional<jobq::PostgresBackend> other;

  jobq::PostgresBackend& backend() { return store; }
  /// A second object on the same URL and schema, with its own pool and listener: to the
  /// server, another process.
  jobq::PostgresBackend& second_backend() {
    if (!other) other.emplace(pgtest::url(), options());
    return *other;
  }
  std::unique_ptr<jobq::PostgresBackend> open_with_payload_limit(std::size_t max_payload_bytes) {
    auto o = options();
    o.max_payload_bytes = max_payload_bytes;
    return std::make_unique<jobq::PostgresBackend>(pgtest::url(), o);
  }

  jobq::PostgresOptions options() const { return {.clock = clock.fn(), .schema = schema.name}; }
};

using Backends = std::tuple<PostgresFixture>;
#include "conformance/suite.hpp"
