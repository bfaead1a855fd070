#pragma once
// Test helpers for the Redis backend: the test server's URL (required), unique key prefixes.

#include <jobq/redis.hpp>

#include <atomic>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>

#include <unistd.h>

namespace redis_test {

/// The test server (JOBQ_TEST_REDIS_URL). A missing variable is a failure, never a skip.
inline std::string server_url() {
  const char* url = std::getenv("JOBQ_TEST_REDIS_URL");
  if (url == nullptr || *url == '\0') {
    throw std::runtime_error(
        "JOBQ_TEST_REDIS_URL is not set: the Redis tests need a Redis 7 server "
        "(scripts/test.sh starts one and sets it, e.g. redis://127.0.0.1:6379/0)");
  }
  return url;
}

/// The script that restarts the test server (JOBQ_TEST_REDIS_RESTART); missing = failure.
inline std::string restart_script() {
  const char* s = std::getenv("JOBQ_TEST_REDIS_RESTART");
  if (s == nullptr || *s == '\0') {
    throw std::runtime_error("JOBQ_TEST_REDIS_RESTART is not set: scripts/test.sh sets it to a script "
                             "that restarts the test Redis server");
  }
  return s;
}

/// A key prefix no other test (or test process) uses.
inline std::string unique_prefix(const std::string& tag = "t") {
  static std::atomic<int> counter{0};
  static const auto salt = std::random_device{}();
  return "jobqtest:" + tag + ":" + std::to_string(::getpid()) + "." + std::to_string(salt % 100000) + "." +
         std::to_string(counter++);
}

/// Backend options for tests: a manual clock, a unique prefix.
inline jobq::RedisOptions options(const jobq::ClockFn& clock, const std::string& prefix) {
  jobq::RedisOptions o;
  o.clock = clock;
  o.prefix = prefix;
  return o;
}

/// A backend on the test server under a unique prefix; every key it wrote is deleted after.
struct Store {
  std::string prefix;
  jobq::RedisBackend backend;
  Store(const jobq::ClockFn& clock, const std::string& tag = "t")
      : prefix(unique_prefix(tag)), backend(server_url(), options(clock, prefix)) {}
  Store(const std::string& p, jobq::RedisOptions o) : prefix(p), backend(server_url(), std::move(o)) {}
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;
  ~Store() {
    try {
      backend.purge();
    } catch (...) {
    }
  }
};

}  // namespace redis_test
