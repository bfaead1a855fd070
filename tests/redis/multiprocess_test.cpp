// Four worker processes (fork, each with its own backend object) drain 20,000 jobs; every job is
// completed exactly once and none is lost.

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <jobq/jobq.hpp>

#include "redis/helpers.hpp"

using namespace std::chrono_literals;

namespace {

// The child: its own backend and worker; each handled job's id goes to its own file.
[[noreturn]] void child(const std::string& url, const std::string& prefix, const std::string& file) {
  int code = 0;
  try {
    jobq::RedisOptions opt;
    opt.prefix = prefix;
    jobq::RedisBackend backend(url, opt);
    std::ofstream out(file);
    std::mutex m;
    jobq::WorkerOptions wo;
    wo.queues = {"bulk"};
    wo.concurrency = 4;
    wo.poll_interval = 100ms;
    wo.on_error = [](const std::exception& e) { std::fprintf(stderr, "child worker: %s\n", e.what()); };
    jobq::Worker worker(backend, wo);
    worker.handle("work", [&](const nlohmann::json&, jobq::JobContext& ctx) {
      std::lock_guard lock(m);
      out << ctx.id() << '\n';
    });
    if (!worker.run_until_idle(600s)) code = 2;
    out.flush();
    if (!out) code = 3;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "child failed: %s\n", e.what());
    code = 1;
  }
  std::fflush(stderr);
  ::_exit(code);
}

}  // namespace

TEST_CASE("4 worker processes drain 20,000 jobs, each completed exactly once", "[redis][multiprocess]") {
  constexpr int total = 20'000;
  constexpr int processes = 4;
  const auto url = redis_test::server_url();
  const auto prefix = redis_test::unique_prefix("mp");
  redis_test::Store store(prefix, [&] {
    jobq::RedisOptions o;
    o.prefix = prefix;
    return o;
  }());
  auto& b = store.backend;

  std::vector<jobq::NewJob> batch;
  std::set<jobq::JobId> ids;
  for (int i = 0; i < total; ++i) {
    jobq::NewJob j;
    j.queue = "bulk";
    j.name = "work";
    j.payload = {{"i", i}};
    batch.push_back(std::move(j));
    if (batch.size() == 2'000) {
      for (const auto& r : b.enqueue_many(batch)) ids.insert(r.id);
      batch.clear();
    }
  }
  REQUIRE(ids.size() == static_cast<std::size_t>(total));
  REQUIRE(b.counts("bulk").queued == total);

  char tmpl[] = "/tmp/jobq-redis-mp-XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl;
  std::vector<pid_t> pids;
  std::vector<std::string> files;
  for (int p = 0; p < processes; ++p) {
    files.push_back(dir + "/worker-" + std::to_string(p) + ".ids");
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) child(url, prefix, files.back());
    pids.push_back(pid);
  }
  for (auto pid : pids) {
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }

  std::map<jobq::JobId, int> seen;
  std::vector<std::size_t> per_process;
  for (const auto& f : files) {
    std::ifstream in(f);
    std::size_t n = 0;
    for (jobq::JobId id; in >> id;) {
      ++seen[id];
      ++n;
    }
    per_process.push_back(n);
    std::remove(f.c_str());
  }
  ::rmdir(dir.c_str());
  CAPTURE(per_process);
  std::size_t twice = 0;
  for (const auto& [id, n] : seen) twice += n > 1 ? 1 : 0;
  CHECK(twice == 0);
  CHECK(seen.size() == static_cast<std::size_t>(total));
  for (auto id : ids) CHECK(seen.contains(id));
  for (auto n : per_process) CHECK(n > 0);  // the work was shared
  CHECK(b.counts("bulk") == jobq::Counts{.completed = total});
}
