// Several processes on one SQLite file: exactly-once draining, and recovery after SIGKILL.
// The worker processes are the sqlite_child program (path compiled in as JOBQ_SQLITE_CHILD).

#include <jobq/jobq.hpp>
#include <jobq/sqlite.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <algorithm>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "sqlite/helpers.hpp"

extern char** environ;

using namespace std::chrono_literals;
using sqlite_test::TempDir;

namespace {

pid_t spawn_child(const std::vector<std::string>& args) {
  std::vector<std::string> all{JOBQ_SQLITE_CHILD};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, JOBQ_SQLITE_CHILD, nullptr, nullptr, argv.data(), environ);
  if (rc != 0) throw std::runtime_error("posix_spawn " + std::string(JOBQ_SQLITE_CHILD) + " failed: " + std::to_string(rc));
  return pid;
}

/// Waits for the child to exit (bounded); returns its exit status, or -1 if killed by a signal
/// or still running at the deadline (then it is killed).
int wait_child(pid_t pid, std::chrono::seconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (true) {
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (r < 0) return -1;
    if (std::chrono::steady_clock::now() >= end) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(20ms);
  }
}

jobq::NewJob noop(std::string queue, int n) {
  jobq::NewJob j;
  j.queue = std::move(queue);
  j.name = "noop";
  j.payload = {{"n", n}};
  return j;
}

}  // namespace

TEST_CASE("4 worker processes drain 20,000 jobs from one file, each exactly once", "[sqlite][multiprocess]") {
  TempDir dir;
  const auto db = dir.file();
  constexpr int total = 20'000;
  constexpr int processes = 4;
  std::vector<jobq::JobId> ids;
  {
    jobq::SqliteBackend store{db};
    std::vector<jobq::NewJob> batch;
    for (int i = 0; i < total; ++i) {
      batch.push_back(noop("drain", i));
      if (batch.size() == 1000) {
        for (const auto& r : store.enqueue_many(batch)) ids.push_back(r.id);
        batch.clear();
      }
    }
    REQUIRE(store.counts("drain").queued == total);
  }  // closed before the children open it

  std::vector<pid_t> children;
  for (int p = 0; p < processes; ++p) {
    children.push_back(spawn_child({"drain", db, "drain", dir.file("done-" + std::to_string(p) + ".txt")}));
  }
  for (auto pid : children) CHECK(wait_child(pid, 600s) == 0);

  std::map<jobq::JobId, int> seen;
  std::vector<std::size_t> per_process;
  for (int p = 0; p < processes; ++p) {
    std::ifstream in(dir.file("done-" + std::to_string(p) + ".txt"));
    std::size_t n = 0;
    for (jobq::JobId id = 0; in >> id; ++n) ++seen[id];
    per_process.push_back(n);
  }
  std::size_t duplicates = 0;
  for (const auto& [id, n] : seen) duplicates += n > 1 ? 1 : 0;
  CHECK(duplicates == 0);
  CHECK(seen.size() == total);
  std::size_t missing = 0;
  for (auto id : ids) missing += seen.contains(id) ? 0 : 1;
  CHECK(missing == 0);
  INFO("jobs per process: " << per_process[0] << ' ' << per_process[1] << ' ' << per_process[2] << ' '
                            << per_process[3]);
  std::size_t busy = 0;
  for (auto n : per_process) busy += n > 0 ? 1 : 0;
  CHECK(busy >= 2);  // the work really was shared

  jobq::SqliteBackend store{db};
  const auto c = store.counts("drain");
  CHECK(c.completed == total);
  CHECK(c.queued == 0);
  CHECK(c.active == 0);
  CHECK(c.dead == 0);
}

TEST_CASE("jobs held by a worker killed with SIGKILL are completed by another after the lease",
          "[sqlite][multiprocess]") {
  TempDir dir;
  const auto db = dir.file();
  jobq::ManualClock clock;
  jobq::SqliteBackend store{db, {.clock = clock.fn()}};
  std::vector<jobq::JobId> ids;
  for (int i = 0; i < 10; ++i) ids.push_back(store.enqueue(noop("crash", i)).id);

  const auto ready = dir.file("held.txt");
  const pid_t child =
      spawn_child({"hold", db, "crash", "5", std::to_string(jobq::to_epoch_ms(clock.now())), ready});
  const auto end = std::chrono::steady_clock::now() + 60s;
  while (!std::filesystem::exists(ready) && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(10ms);
  }
  REQUIRE(std::filesystem::exists(ready));
  std::vector<std::pair<jobq::JobId, std::string>> held;
  {
    std::ifstream in(ready);
    jobq::JobId id = 0;
    std::string token;
    while (in >> id >> token) held.emplace_back(id, token);
  }
  REQUIRE(held.size() == 5);
  CHECK(store.counts("crash").active == 5);

  REQUIRE(kill(child, SIGKILL) == 0);
  CHECK(wait_child(child, 30s) == -1);

  // Before the lease ends nothing is recovered; after it, all five go back to the queue.
  clock.advance(29s);
  CHECK(store.recover_expired() == jobq::Recovered{0, 0});
  clock.advance(2s);
  CHECK(store.recover_expired() == jobq::Recovered{5, 0});
  for (const auto& [id, token] : held) CHECK_FALSE(store.complete(id, token, nullptr));  // fenced

  std::mutex m;
  std::map<jobq::JobId, int> runs;
  jobq::Worker worker{store, {.queues = {"crash"}, .concurrency = 2, .poll_interval = 50ms}};
  worker.handle("noop", [&](const nlohmann::json&, jobq::JobContext& ctx) {
    std::lock_guard lock(m);
    ++runs[ctx.id()];
  });
  REQUIRE(worker.run_until_idle(60s));

  CHECK(runs.size() == 10);
  for (const auto& [id, n] : runs) CHECK(n == 1);
  const auto c = store.counts("crash");
  CHECK(c.completed == 10);
  CHECK(c.active + c.queued + c.dead == 0);
  for (const auto& [id, token] : held) {
    const auto job = store.get(id);
    REQUIRE(job);
    CHECK(job->attempts == 2);
    REQUIRE(job->errors.size() == 1);
    CHECK_THAT(job->errors[0].message, Catch::Contains("lease expired"));
  }
}

TEST_CASE("group concurrency and a rate limit hold across 3 processes", "[sqlite][multiprocess][limits]") {
  TempDir dir;
  const auto db = dir.file();
  constexpr int k = 2;
  const jobq::RateLimit rate{30, 100ms};
  constexpr int total = 600;
  {
    jobq::SqliteBackend store{db};
    store.set_queue_limits("lim", {rate, k});
    std::vector<jobq::NewJob> jobs;
    for (int i = 0; i < total; ++i) {
      auto j = noop("lim", i);
      j.group = "tenant-" + std::to_string(i % 6);
      jobs.push_back(std::move(j));
    }
    store.enqueue_many(jobs);
  }
  std::vector<pid_t> pids;
  std::vector<std::string> outs;
  for (int p = 0; p < 3; ++p) {
    outs.push_back(dir.file("out-" + std::to_string(p) + ".txt"));
    pids.push_back(spawn_child({"limited", db, "lim", "2", outs.back()}));
  }
  // Watch the file while they run: never more than k active jobs of one group.
  int worst = 0;
  std::vector<int> status(pids.size(), -2);  // -2: still running
  {
    sqlite_test::RawDb raw(db);
    const auto deadline = std::chrono::steady_clock::now() + 120s;
    while (std::count(status.begin(), status.end(), -2) > 0 && std::chrono::steady_clock::now() < deadline) {
      worst = std::max(worst, std::stoi(raw.scalar(
                                  "SELECT coalesce(max(c), 0) FROM (SELECT count(*) AS c FROM jobq_jobs "
                                  "WHERE queue = 'lim' AND state = 'active' GROUP BY group_key)")));
      for (std::size_t i = 0; i < pids.size(); ++i) {
        int st = 0;
        if (status[i] == -2 && waitpid(pids[i], &st, WNOHANG) == pids[i]) {
          status[i] = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        }
      }
    }
  }
  for (std::size_t i = 0; i < pids.size(); ++i) {
    if (status[i] == -2) status[i] = wait_child(pids[i], 1s);  // past the deadline: killed
    CHECK(status[i] == 0);
  }
  std::vector<std::int64_t> starts;
  std::set<long> ids;
  for (const auto& o : outs) {
    std::ifstream in(o);
    long id = 0;
    std::int64_t at = 0;
    std::string group;
    while (in >> id >> at >> group) {
      CHECK(ids.insert(id).second);  // each job claimed once
      starts.push_back(at);
    }
  }
  CHECK(ids.size() == static_cast<std::size_t>(total));
  CHECK(worst <= k);
  std::sort(starts.begin(), starts.end());
  std::size_t worst_window = 0;
  for (std::size_t i = 0, j = 0; i < starts.size(); ++i) {
    while (starts[j] <= starts[i] - rate.window.count()) ++j;
    worst_window = std::max(worst_window, i - j + 1);  // claims in (starts[i] - window, starts[i]]
  }
  CHECK(worst_window <= static_cast<std::size_t>(rate.max));
  CHECK(worst_window >= static_cast<std::size_t>(rate.max) / 2);  // and the limit was approached
}
