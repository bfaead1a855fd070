// The server restarts (an immediate shutdown, like a crash) in the middle of a drain: the
// worker keeps running, reconnects with backoff, and no job is lost or left active.

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include <jobq/jobq.hpp>
#include <jobq/postgres.hpp>

#include "postgres/pg_test_support.hpp"

using namespace std::chrono_literals;

TEST_CASE("a server restart during a drain loses no job and leaves none active", "[postgres][restart]") {
  const char* restart = std::getenv("JOBQ_TEST_POSTGRES_RESTART");
  if (restart == nullptr || *restart == '\0') {
    FAIL("JOBQ_TEST_POSTGRES_RESTART is not set: run the tests through scripts/test.sh");
  }
  pgtest::TempSchema schema;
  constexpr int total = 3'000;
  jobq::PostgresBackend b{pgtest::url(), {.schema = schema.name, .pool_size = 4,
                                          .reconnect_give_up = 60s}};
  std::vector<jobq::NewJob> batch;
  for (int i = 0; i < total; ++i) {
    jobq::NewJob j;
    j.queue = "drain";
    j.name = "work";
    j.payload = {{"i", i}};
    batch.push_back(std::move(j));
  }
  auto start_time = [] {
    auto c = pgtest::connect();
    return pgtest::exec(c.get(), "SELECT pg_postmaster_start_time()");
  };
  const auto started_before = start_time();
  std::set<jobq::JobId> ids;
  for (const auto& r : b.enqueue_many(batch)) ids.insert(r.id);
  REQUIRE(ids.size() == static_cast<std::size_t>(total));

  std::mutex m;
  std::multiset<jobq::JobId> handled;
  std::atomic<int> worker_errors{0};
  jobq::WorkerOptions opt;
  opt.queues = {"drain"};
  opt.concurrency = 4;
  opt.poll_interval = 100ms;
  opt.maintenance_interval = 1s;
  opt.on_error = [&](const std::exception&) { ++worker_errors; };
  jobq::Worker w{b, opt};
  w.handle("work", [&](const nlohmann::json&, jobq::JobContext& ctx) {
    std::this_thread::sleep_for(1ms);
    std::lock_guard lock(m);
    handled.insert(ctx.id());
  });

  std::atomic<bool> restarted{false};
  std::atomic<int> restart_rc{-1};
  std::thread restarter([&] {
    for (int i = 0; i < 6000; ++i) {
      {
        std::lock_guard lock(m);
        if (handled.size() >= static_cast<std::size_t>(total / 4)) break;
      }
      std::this_thread::sleep_for(5ms);
    }
    restart_rc = std::system(restart);
    restarted = true;
  });
  const bool idle = w.run_until_idle(240s);
  restarter.join();
  REQUIRE(restart_rc == 0);
  CHECK(restarted);
  CHECK(idle);
  CHECK(start_time() != started_before);  // the server really restarted

  const auto c = b.counts("drain");
  CHECK(c == jobq::Counts{.completed = total});
  std::set<jobq::JobId> distinct(handled.begin(), handled.end());
  CHECK(distinct == ids);  // every job ran; a repeat is allowed (at-least-once) but counted
  WARN("handler runs: " << handled.size() << " for " << total << " jobs; worker errors reported: "
                        << worker_errors.load() << "; backend retries: " << b.stats().retries
                        << ", unknown outcomes: " << b.stats().unknown_outcomes
                        << ", claimed jobs given back: " << b.stats().claims_undone);
  CHECK(handled.size() < static_cast<std::size_t>(total) + 50);
}
