// A worker process for the multi-process tests (started by multiprocess_test.cpp).
//
//   sqlite_child drain <db> <queue> <out-file>
//     runs a jobq::Worker until the queue is idle; each handler appends its job id to out-file.
//   sqlite_child hold <db> <queue> <count> <clock-ms> <ready-file>
//     with the clock fixed at clock-ms, claims <count> jobs (30 s lease), writes "id token" lines
//     to ready-file (renamed into place when complete), then sleeps until killed.
//   sqlite_child limited <db> <queue> <threads> <out-file>
//     <threads> threads claim (up to 3 at a time) and complete until the queue has nothing queued
//     or active; appends "id claim-ms group" per claimed job to out-file (claim-ms = the time the
//     backend used, read back from lease_until).

#include <jobq/jobq.hpp>
#include <jobq/sqlite.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

int drain(const std::string& db, const std::string& queue, const std::string& out_path) {
  jobq::SqliteBackend store{db, {.poll_interval = 20ms}};
  std::ofstream out(out_path, std::ios::app);
  std::mutex out_mutex;
  jobq::Worker worker{store, {.queues = {queue}, .concurrency = 4, .poll_interval = 200ms}};
  worker.handle("noop", [&](const nlohmann::json&, jobq::JobContext& ctx) {
    std::lock_guard lock(out_mutex);
    out << ctx.id() << '\n';
  });
  const bool idle = worker.run_until_idle(600'000ms);
  out.flush();
  if (!idle || !out) {
    std::cerr << "drain: " << (idle ? "could not write " + out_path : "queue did not go idle") << '\n';
    return 1;
  }
  return 0;
}

int hold(const std::string& db, const std::string& queue, std::size_t count, std::int64_t clock_ms,
         const std::string& ready_path) {
  jobq::ManualClock clock{jobq::from_epoch_ms(clock_ms)};
  jobq::SqliteBackend store{db, {.clock = clock.fn()}};
  const auto jobs = store.claim({{queue}, count, 30s});
  {
    std::ofstream ready(ready_path + ".tmp");
    for (const auto& j : jobs) ready << j.id << ' ' << j.lease_token << '\n';
  }
  std::rename((ready_path + ".tmp").c_str(), ready_path.c_str());
  for (;;) std::this_thread::sleep_for(1s);  // until SIGKILL
}

int limited(const std::string& db, const std::string& queue, int threads, const std::string& out_path) {
  jobq::SqliteBackend store{db, {.poll_interval = 5ms}};
  std::ofstream out(out_path, std::ios::app);
  std::mutex out_mutex;
  const std::vector<std::string> queues{queue};
  constexpr auto lease = 30s;
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&] {
      for (;;) {
        auto jobs = store.claim({{queue}, 3, lease});
        if (jobs.empty()) {
          const auto n = store.counts(queue);
          if (n.queued == 0 && n.active == 0) return;
          store.wait_for_work(queues, 20ms, {});
          continue;
        }
        {
          std::lock_guard lock(out_mutex);
          for (const auto& j : jobs) {
            out << j.id << ' ' << jobq::to_epoch_ms(*j.lease_until - lease) << ' ' << j.group << '\n';
          }
        }
        std::this_thread::sleep_for(1ms);  // keep them active a while: the limits must bite
        std::vector<jobq::Completion> done;
        for (const auto& j : jobs) done.push_back({j.id, j.lease_token, nullptr});
        store.complete_many(done);
      }
    });
  }
  for (auto& t : ts) t.join();
  out.flush();
  return out ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "drain" && argc == 5) return drain(argv[2], argv[3], argv[4]);
    if (mode == "hold" && argc == 7) {
      return hold(argv[2], argv[3], std::stoul(argv[4]), std::stoll(argv[5]), argv[6]);
    }
    if (mode == "limited" && argc == 6) return limited(argv[2], argv[3], std::stoi(argv[4]), argv[5]);
    std::cerr << "usage: sqlite_child drain <db> <queue> <out> | hold <db> <queue> <n> <clock-ms> <ready>\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "sqlite_child: " << e.what() << '\n';
    return 1;
  }
}
