#include <jobq/postgres.hpp>

#include "postgres/pg_test_support.hpp"

/// PostgreSQL: a fresh schema (jobq_t_<random>) per test case, dropped in the destructor.
struct PostgresFixture {
  static constexpr const char* name = "postgres";
  jobq::ManualClock clock;
  pgtest::TempSchema schema;
  jobq::PostgresBackend store{pgtest::url(), {.clock = clock.fn(), .schema = schema.name}};
  jobq::PostgresBackend& backend() { return store; }
};

using Backends = std::tuple<PostgresFixture>;
#include "conformance/suite.hpp"
