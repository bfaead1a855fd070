#include "redis/helpers.hpp"

/// The Redis backend: the test server (JOBQ_TEST_REDIS_URL) under a fresh key prefix per test
/// case, with every key of that prefix deleted afterwards. Automatic pruning is off so the
/// suite's retention case sees only explicit prune() calls.
struct RedisFixture {
  static constexpr const char* name = "redis";
  jobq::ManualClock clock;
  redis_test::Store store{clock.fn(), "conf"};
  jobq::RedisBackend& backend() { return store.backend; }
};

using Backends = std::tuple<RedisFixture>;
#include "conformance/suite.hpp"
