// A backend outage longer than the Worker's retry budget (about 7 s of retries when recording
// an outcome) must surface through on_error and the metrics, never as a silent stop; once the
// backend is back, every job completes. The outage is a FaultBackend view whose link is cut:
// every call throws jobq::ConnectionError, as it would with the server down.

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include <jobq/jobq.hpp>
#include <jobq/memory.hpp>
#include <jobq/metrics.hpp>

#include "chaos/fault_backend.hpp"

using namespace std::chrono_literals;

namespace {
bool wait_until(auto pred, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return pred();
}
}  // namespace

TEST_CASE("an outage longer than the retry budget is reported and counted; jobs complete after it",
          "[chaos][outage]") {
  jobq::MemoryBackend store;
  jobq_chaos::FaultBackend<jobq::MemoryBackend> link{store, "memory"};
  jobq::Metrics metrics;
  std::atomic<int> reported{0};
  std::mutex m;
  std::vector<std::string> messages;

  constexpr int total = 60;
  jobq::Queue q{store, "outage"};
  for (int i = 0; i < total; ++i) q.enqueue("work", {{"i", i}}, {.max_attempts = 50});

  jobq::WorkerOptions o;
  o.queues = {"outage"};
  o.concurrency = 2;
  o.lease = 1s;
  o.poll_interval = 100ms;
  o.maintenance_interval = 200ms;
  o.on_error = metrics.error_observer([&](const std::exception& e) {
    ++reported;
    std::lock_guard lock(m);
    if (messages.size() < 20) messages.emplace_back(e.what());
  });
  o.on_event = metrics.observer();
  jobq::Worker w{link, o};
  std::atomic<int> runs{0};
  w.handle("work", [&](const nlohmann::json&) {
    ++runs;
    std::this_thread::sleep_for(40ms);
  });
  w.start();

  REQUIRE(wait_until([&] { return store.counts("outage").completed >= 10; }, 20s));
  // Cut the link while handlers are running: their outcomes cannot be recorded, heartbeats and
  // claims fail. 9 s is longer than record()'s 8 tries with backoff (50 ms doubling to 2 s).
  link.set_down(true);
  const auto completed_at_cut = store.counts("outage").completed;
  std::this_thread::sleep_for(9s);
  const int reported_during = reported.load();
  const auto stats_during = w.stats();
  CHECK(store.counts("outage").completed == completed_at_cut);  // nothing got through
  link.set_down(false);

  // Errors were reported (not swallowed) and counted by category.
  CHECK(reported_during >= 5);
  CHECK(metrics.errors().count("connection") == 1);
  CHECK(metrics.errors().at("connection") >= static_cast<std::uint64_t>(reported_during));
  CHECK(metrics.prometheus().find("jobq_worker_errors_total{category=\"connection\"}") != std::string::npos);
  {
    std::lock_guard lock(m);
    REQUIRE(!messages.empty());
    CHECK(messages.front().find("connection refused (simulated outage)") != std::string::npos);
  }
  INFO("in flight during the outage: " << stats_during.in_flight);

  // The worker did not stop: after the outage it drains the queue, recovering the leases that
  // expired while the link was down (their outcomes were given up on).
  REQUIRE(wait_until([&] { return store.counts("outage").completed == total; }, 60s));
  w.stop();
  CHECK(store.counts("outage") == jobq::Counts{.completed = total});
  std::size_t expired = 0;
  for (const auto& j : store.list("outage", jobq::JobState::completed, {0, total})) {
    for (const auto& e : j.errors) expired += e.message.find("lease expired") != std::string::npos;
  }
  CHECK(expired >= 1);  // a job whose completion could not be recorded ran again
  CHECK(runs.load() >= total + 1);
  WARN("errors reported: " << reported.load() << ", handler runs: " << runs.load() << " for " << total
                           << " jobs, leases expired: " << expired);
}
