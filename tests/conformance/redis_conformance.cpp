#include <memory>
#include <optional>

#include <catch2/catch.hpp>

#include "redis/helpers.hpp"

/// The Redis backend: the test server (JOBQ_TEST_REDIS_URL) under a fresh key prefix per test
/// case, with every key of that prefix deleted afterwards.
struct RedisFixture {
  static constexpr const char* name = "redis";
  static constexpr bool completed_notice_has_progress = true;
  jobq::ManualClock clock;
  redis_test::Store store{clock.fn(), "conf"};
  std::optional<jobq::RedisBackend> other;

  jobq::RedisBackend& backend() { return store.backend; }
  /// A second object on the same URL and prefix (what another process would have).
  jobq::RedisBackend& second_backend() {
    if (!other) other.emplace(redis_test::server_url(), redis_test::options(clock.fn(), store.prefix));
    return *other;
  }
  std::unique_ptr<jobq::RedisBackend> open_with_payload_limit(std::size_t max_payload_bytes) {
    auto o = redis_test::options(clock.fn(), store.prefix);
    o.max_payload_bytes = max_payload_bytes;
    return std::make_unique<jobq::RedisBackend>(redis_test::server_url(), o);
  }

  /// True while no job was ever written under the prefix (not even its id index).
  bool no_job_stored() { return store.backend.command({"EXISTS", store.prefix + ":jobqueue"}).integer == 0; }
  /// After a group-limit race: nothing left parked or counted as active.
  void check_group_bookkeeping(const std::string& queue) {
    CHECK(store.backend.command({"ZCARD", store.prefix + ":{" + queue + "}:parked"}).integer == 0);
    CHECK(store.backend.command({"HLEN", store.prefix + ":{" + queue + "}:gactive"}).integer == 0);
  }
};

using Backends = std::tuple<RedisFixture>;
#include "conformance/suite.hpp"
