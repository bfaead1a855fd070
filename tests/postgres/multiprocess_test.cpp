// Four worker processes (fork, each with its own backend object and connections) drain 20,000
// jobs: every job is completed exactly once and none is lost.

#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <jobq/postgres.hpp>

#include "postgres/pg_test_support.hpp"

using namespace std::chrono_literals;

namespace {

// One worker process: two threads claiming batches of 25 and completing them in one round
// trip each; every completed id is appended to `file`. Returns the process exit code.
int run_worker_process(const std::string& url, const std::string& schema, const std::string& file) {
  try {
    jobq::PostgresBackend b{url, {.schema = schema, .pool_size = 2}};
    std::ofstream out(file);
    std::mutex m;
    int failures = 0;
    auto loop = [&] {
      const std::vector<std::string> queues{"mp"};
      for (;;) {
        auto jobs = b.claim({queues, 25, std::chrono::minutes(5)});
        if (jobs.empty()) {
          const auto c = b.counts("mp");
          if (c.queued == 0 && c.active == 0) return;
          b.wait_for_work(queues, 200ms, {});
          continue;
        }
        std::vector<jobq::Completion> done;
        for (const auto& j : jobs) done.push_back({j.id, j.lease_token, nullptr});
        const auto ok = b.complete_many(done);
        std::lock_guard lock(m);
        for (std::size_t i = 0; i < ok.size(); ++i) {
          if (ok[i]) {
            out << jobs[i].id << '\n';
          } else {
            ++failures;
          }
        }
      }
    };
    std::thread t1(loop), t2(loop);
    t1.join();
    t2.join();
    out.flush();
    return failures == 0 && out.good() ? 0 : 3;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "worker process failed: %s\n", e.what());
    return 2;
  }
}

}  // namespace

TEST_CASE("4 worker processes drain 20,000 jobs, each completed exactly once", "[postgres][multiprocess]") {
  constexpr int total = 20'000;
  constexpr int processes = 4;
  const auto url = pgtest::url();
  pgtest::TempSchema schema;
  std::set<jobq::JobId> ids;
  {
    // Enqueued and closed before fork(): no connection is shared with a child.
    jobq::PostgresBackend b{url, {.schema = schema.name}};
    std::vector<jobq::NewJob> batch;
    for (int i = 0; i < total; ++i) {
      jobq::NewJob j;
      j.queue = "mp";
      j.name = "n";
      j.payload = {{"i", i}};
      batch.push_back(std::move(j));
    }
    for (const auto& r : b.enqueue_many(batch)) ids.insert(r.id);
  }
  REQUIRE(ids.size() == static_cast<std::size_t>(total));

  char dir_template[] = "/tmp/jobq-pg-mp.XXXXXX";
  REQUIRE(mkdtemp(dir_template) != nullptr);
  const std::string dir = dir_template;
  std::vector<pid_t> children;
  for (int p = 0; p < processes; ++p) {
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      // _exit: the child must not run the parent's atexit handlers or Catch2's teardown.
      _exit(run_worker_process(url, schema.name, dir + "/worker-" + std::to_string(p) + ".ids"));
    }
    children.push_back(pid);
  }
  for (auto pid : children) {
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }

  std::map<jobq::JobId, int> seen;
  std::vector<std::size_t> per_process;
  for (int p = 0; p < processes; ++p) {
    const auto path = dir + "/worker-" + std::to_string(p) + ".ids";
    std::ifstream in(path);
    std::size_t n = 0;
    for (jobq::JobId id = 0; in >> id;) {
      ++seen[id];
      ++n;
    }
    per_process.push_back(n);
    std::remove(path.c_str());
  }
  ::rmdir(dir.c_str());
  std::size_t twice = 0;
  std::set<jobq::JobId> completed;
  for (const auto& [id, n] : seen) {
    completed.insert(id);
    if (n != 1) ++twice;
  }
  CHECK(twice == 0);
  CHECK(completed == ids);
  for (auto n : per_process) CHECK(n > 0);  // every process took part
  jobq::PostgresBackend b{url, {.schema = schema.name}};
  CHECK(b.counts("mp") == jobq::Counts{.completed = total});
}
