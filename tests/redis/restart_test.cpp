// The test server is restarted (JOBQ_TEST_REDIS_RESTART) while a worker drains a queue: the
// worker keeps running, reconnects, and every job ends completed (none lost, none stuck active).

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

#include "redis/helpers.hpp"

using namespace std::chrono_literals;

namespace {
// The server's run_id: a new one each time redis-server starts.
std::string run_id(jobq::RedisBackend& b) {
  const auto info = b.command({"INFO", "server"}).str;
  const auto at = info.find("run_id:");
  return at == std::string::npos ? std::string() : info.substr(at + 7, 40);
}
}  // namespace

TEST_CASE("a Redis restart during a drain loses no job and leaves none active", "[redis][restart]") {
  const auto restart = redis_test::restart_script();
  const auto prefix = redis_test::unique_prefix("restart");
  jobq::RedisOptions opt;
  opt.prefix = prefix;
  opt.reconnect_window = 10s;
  redis_test::Store store(prefix, opt);
  auto& b = store.backend;

  constexpr int total = 3'000;
  std::vector<jobq::NewJob> batch;
  for (int i = 0; i < total; ++i) {
    jobq::NewJob j;
    j.queue = "drain";
    j.name = "work";
    j.payload = {{"i", i}};
    j.max_attempts = 20;
    j.backoff = jobq::Backoff::fixed(10ms);
    batch.push_back(std::move(j));
  }
  std::set<jobq::JobId> ids;
  for (const auto& r : b.enqueue_many(batch)) ids.insert(r.id);
  const auto run_id_before = run_id(b);
  REQUIRE(ids.size() == static_cast<std::size_t>(total));

  std::mutex m;
  std::multiset<jobq::JobId> handled;
  std::atomic<int> errors{0};
  jobq::WorkerOptions wo;
  wo.queues = {"drain"};
  wo.concurrency = 8;
  wo.lease = 2s;
  wo.poll_interval = 200ms;
  wo.maintenance_interval = 250ms;
  wo.on_error = [&](const std::exception&) { ++errors; };
  jobq::Worker worker(b, wo);
  worker.handle("work", [&](const nlohmann::json&, jobq::JobContext& ctx) {
    std::this_thread::sleep_for(1ms);
    std::lock_guard lock(m);
    handled.insert(ctx.id());
  });

  std::atomic<int> restart_status{-1};
  std::thread restarter([&] {
    for (;;) {
      {
        std::lock_guard lock(m);
        if (handled.size() >= static_cast<std::size_t>(total / 4)) break;
      }
      std::this_thread::sleep_for(5ms);
    }
    restart_status = std::system(restart.c_str());
  });
  const bool idle = worker.run_until_idle(300s);
  restarter.join();

  CHECK(restart_status == 0);
  CHECK(idle);
  CHECK(run_id(b) != run_id_before);  // the server really went away and came back
  WARN("errors the worker saw and survived: " << errors.load());
  const auto counts = b.counts("drain");
  CHECK(counts == jobq::Counts{.completed = total});
  std::set<jobq::JobId> distinct;
  {
    std::lock_guard lock(m);
    distinct.insert(handled.begin(), handled.end());
    CAPTURE(handled.size());
  }
  CHECK(distinct == ids);
  for (auto id : ids) {
    auto j = b.get(id);
    REQUIRE(j);
    CHECK(j->state == jobq::JobState::completed);
  }
}
