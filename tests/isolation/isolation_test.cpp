// Isolated handlers: each attempt in a child process (include/jobq/isolation.hpp), run by a
// Worker over the memory backend. Every case starts its pool while the test process is still
// single-threaded (no Worker running), as a program would first thing in main.
#include <dirent.h>
#include <sys/wait.h>

#include <atomic>
#include <fstream>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include <jobq/isolation.hpp>
#include <jobq/jobq.hpp>
#include <jobq/memory.hpp>

#include "support.hpp"

using namespace std::chrono_literals;

namespace {

struct Task {
  static constexpr std::string_view job_name = "task";
  std::string what;
  int n = 0;
  NLOHMANN_DEFINE_TYPE_INTRUSIVE(Task, what, n)
};

volatile int* null_pointer = nullptr;

// What a child does for each Task, by name.
nlohmann::json misbehave(const Task& t, jobq::JobContext& ctx) {
  if (t.what == "ok") return {{"pid", ::getpid()}, {"n", t.n}};
  if (t.what == "segv") return *null_pointer;
  if (t.what == "abort") std::abort();
  if (t.what == "exit") std::_Exit(3);
  if (t.what == "exit0") std::_Exit(0);
  if (t.what == "sometimes") {
    if (t.n % 100 == 99) return *null_pointer;
    return t.n;
  }
  if (t.what == "permanent") throw jobq::Permanent("bad input");
  if (t.what == "throw") throw std::runtime_error("flaky");
  if (t.what == "hog") {
    std::vector<std::vector<char>> hoard;
    for (;;) hoard.emplace_back(16 << 20, 'x');
  }
  if (t.what == "spin") {
    volatile std::uint64_t x = 0;
    for (;;) x = x + 1;
  }
  if (t.what == "progress") {
    ctx.progress(40, "almost");
    return "done";
  }
  if (t.what == "polite") {  // stops when asked
    while (!ctx.stop_requested()) std::this_thread::sleep_for(1ms);
    throw std::runtime_error("stopped");
  }
  if (t.what == "deaf") {  // ignores its stop token
    for (;;) std::this_thread::sleep_for(1ms);
  }
  if (t.what == "deps") return ctx.results<int>();
  return nullptr;
}

int open_descriptors() {
  int n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (::readdir(d) != nullptr) ++n;
    ::closedir(d);
  }
  return n;
}

[[maybe_unused]] std::size_t resident_bytes() {  // unused under ASan (no memory limit there)
  std::ifstream statm("/proc/self/statm");
  std::size_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

struct Case {
  jobq::MemoryBackend store;
  jobq::Queue<jobq::MemoryBackend> q{store, "iso"};

  jobq::WorkerOptions options(int concurrency = 2) const {
    jobq::WorkerOptions o;
    o.queues = {"iso"};
    o.concurrency = concurrency;
    o.poll_interval = 10ms;
    o.shutdown_grace = 5s;
    o.log = {jobq::LogLevel::off, {}};
    return o;
  }

  jobq::JobRecord finished(jobq::JobId id) {
    REQUIRE(jobq_test::eventually([&] { return jobq::is_finished(q.get(id)->state); }, 30s));
    return *q.get(id);
  }
};

jobq::Isolated isolated() {
  jobq::Isolated iso;
  iso.handle<Task>(misbehave);
  return iso;
}

}  // namespace

TEST_CASE("crashes, aborts and exits fail only their attempt, with errors a person understands", "[isolation]") {
  Case c;
  auto pool = isolated().start();
  const auto segv = c.q.enqueue(Task{"segv"}, {.max_attempts = 1});
  const auto abrt = c.q.enqueue(Task{"abort"}, {.max_attempts = 1});
  const auto exit3 = c.q.enqueue(Task{"exit"}, {.max_attempts = 1});
  const auto perm = c.q.enqueue(Task{"permanent"}, {.max_attempts = 5});
  const auto exit0 = c.q.enqueue(Task{"exit0"}, {.max_attempts = 2, .backoff = jobq::Backoff::fixed(0ms)});
  const auto ok = c.q.enqueue(Task{"ok", 7});
  std::vector<jobq::JobId> local;
  for (int i = 0; i < 50; ++i) local.push_back(c.q.enqueue("local", i));
  jobq::Worker w{c.store, c.options()};
  w.handle<Task>(pool.handler<Task>());
  w.handle("local", [](const nlohmann::json& n, jobq::JobContext&) { return n; });  // in a thread
  w.start();
#if defined(__SANITIZE_ADDRESS__)
  // The sanitizers catch the fault themselves, report it and exit 1.
  CHECK(c.finished(segv).errors.back().message == "handler exited with status 1 without a result");
#else
  CHECK(c.finished(segv).errors.back().message == "handler killed by signal 11 (SIGSEGV)");
#endif
  CHECK(c.finished(abrt).errors.back().message == "handler killed by signal 6 (SIGABRT)");
  CHECK(c.finished(exit3).errors.back().message == "handler exited with status 3 without a result");
  const auto e0 = c.finished(exit0);
  CHECK(e0.state == jobq::JobState::dead);  // retried once, then out of attempts
  CHECK(e0.attempts == 2);
  CHECK(e0.errors.back().message == "handler exited with status 0 without a result");
  for (auto id : local) CHECK(c.finished(id).state == jobq::JobState::completed);
  const auto p = c.finished(perm);
  CHECK(p.state == jobq::JobState::dead);  // Permanent in the child: dead now
  CHECK(p.attempts == 1);
  CHECK(p.errors.back().message == "bad input");
  const auto good = c.finished(ok);
  CHECK(good.state == jobq::JobState::completed);
  CHECK(good.result.at("n") == 7);
  CHECK(good.result.at("pid") != ::getpid());  // it ran elsewhere
  w.stop();
}

TEST_CASE("a thrown error is retried like any failure and progress reaches the backend", "[isolation]") {
  Case c;
  auto pool = isolated().start();
  const auto flaky = c.q.enqueue(Task{"throw"}, {.max_attempts = 2, .backoff = jobq::Backoff::fixed(0ms)});
  const auto prog = c.q.enqueue(Task{"progress"});
  jobq::Worker w{c.store, c.options()};
  w.handle<Task>(pool.handler<Task>());
  w.start();
  const auto f = c.finished(flaky);
  CHECK(f.state == jobq::JobState::dead);
  CHECK(f.attempts == 2);
  CHECK(f.errors.size() == 2);
  CHECK(f.errors.back().message == "flaky");
  const auto pr = c.finished(prog);
  CHECK(pr.result == "done");
  CHECK(pr.progress == 40);
  CHECK(pr.progress_message == "almost");
  w.stop();
}

TEST_CASE("children are reused across jobs and replaced after max_jobs_per_child or a crash", "[isolation]") {
  Case c;
  auto pool = isolated().start({.max_jobs_per_child = 3});
  std::vector<jobq::JobId> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(c.q.enqueue(Task{"ok", i}));
  jobq::Worker w{c.store, c.options(1)};
  w.handle<Task>(pool.handler<Task>());
  w.start();
  std::vector<int> pids;
  for (auto id : ids) pids.push_back(c.finished(id).result.at("pid").get<int>());
  CHECK(pids[0] == pids[1]);
  CHECK(pids[1] == pids[2]);
  CHECK(pids[3] != pids[2]);  // recycled after 3 attempts
  CHECK(pids[3] == pids[5]);
  const auto crash = c.q.enqueue(Task{"segv"}, {.max_attempts = 1});
  c.finished(crash);
  const auto after = c.q.enqueue(Task{"ok"});
  CHECK(c.finished(after).result.at("pid").get<int>() != pids[5]);
  w.stop();
  CHECK(pool.started() == 4);
  CHECK(pool.children() == 1);
}

TEST_CASE("a timeout asks the child to stop, and one that does not listen is killed after the grace period",
          "[isolation]") {
  Case c;
  auto pool = isolated().start({.grace = 300ms});
  const auto polite = c.q.enqueue(Task{"polite"}, {.max_attempts = 1, .timeout = 200ms});
  const auto deaf = c.q.enqueue(Task{"deaf"}, {.max_attempts = 1, .timeout = 200ms});
  jobq::Worker w{c.store, c.options()};
  w.handle<Task>(pool.handler<Task>());
  w.start();
  CHECK(c.finished(polite).errors.back().message.find("stopped") != std::string::npos);
  const auto d = c.finished(deaf);
  CHECK(d.state == jobq::JobState::dead);
  CHECK(d.errors.back().message.find("killed") != std::string::npos);
  w.stop();
}

TEST_CASE("cancelling a running job stops its child, and one that does not listen is killed after the grace period",
          "[isolation][cancel]") {
  Case c;
  auto pool = isolated().start({.grace = 300ms});
  const auto deaf = c.q.enqueue(Task{"deaf"}, {.max_attempts = 1});
  jobq::Worker w{c.store, c.options(1)};
  w.handle<Task>(pool.handler<Task>());
  w.start();
  REQUIRE(jobq_test::eventually([&] { return c.q.get(deaf)->state == jobq::JobState::active; }, 30s));
  REQUIRE(c.q.cancel(deaf));
  // The only slot frees once the child is gone: the next job runs in a new child.
  const auto next = c.q.enqueue(Task{"ok"});
  CHECK(c.finished(next).state == jobq::JobState::completed);
  CHECK(c.q.get(deaf)->state == jobq::JobState::cancelled);
  w.stop();
  CHECK(pool.started() == 2);
}

TEST_CASE("limits: CPU time per attempt and memory, from the kernel's own rlimits", "[isolation]") {
  Case c;
#if defined(__SANITIZE_ADDRESS__)
  CHECK_THROWS_WITH(isolated().start({.memory_bytes = 256u << 20}), Catch::Contains("AddressSanitizer"));
  auto pool = isolated().start({.cpu = 1s});
#else
  auto pool = isolated().start({.memory_bytes = 256u << 20, .cpu = 1s});
  const auto hog = c.q.enqueue(Task{"hog"}, {.max_attempts = 1});  // asks for 2 GiB and more
  const auto rss_before = resident_bytes();
#endif
  const auto spin = c.q.enqueue(Task{"spin"}, {.max_attempts = 1});
  const auto ok = c.q.enqueue(Task{"ok"});
  jobq::Worker w{c.store, c.options()};
  w.handle<Task>(pool.handler<Task>());
  w.start();
#if !defined(__SANITIZE_ADDRESS__)
  CHECK(c.finished(hog).errors.back().message == "handler exceeded its memory limit (256 MiB)");
  CHECK(resident_bytes() < rss_before + (64u << 20));  // the parent did not grow with it
#endif
  CHECK(c.finished(spin).errors.back().message == "handler exceeded its CPU limit (1 s)");
  CHECK(c.finished(ok).state == jobq::JobState::completed);
  w.stop();
}

TEST_CASE("10,000 isolated jobs with a crash in every 100 are all accounted for", "[isolation][volume]") {
  Case c;
  auto pool = isolated().start();
  std::vector<jobq::NewJob> batch;
  for (int i = 0; i < 10'000; ++i) batch.push_back(c.q.make(Task{"sometimes", i}, {.max_attempts = 1}));
  const auto ids = c.q.enqueue_many(batch);
  jobq::Worker w{c.store, c.options(4)};
  w.handle<Task>(pool.handler<Task>());
  w.start();
  REQUIRE(jobq_test::eventually([&] { return c.q.counts().completed + c.q.counts().dead == 10'000; }, 120s));
  w.stop();
  const auto counts = c.q.counts();
  CHECK(counts.completed == 9'900);
  CHECK(counts.dead == 100);
  CHECK(counts.queued + counts.active == 0);
  for (const auto& d : c.q.list(jobq::JobState::dead, {0, 200})) {
    CHECK(d.payload.at("n").get<int>() % 100 == 99);
  }
  CHECK(pool.started() >= 100);  // every crash cost its child
}

TEST_CASE("a flow member in a child reads its dependencies' results", "[isolation][flow]") {
  Case c;
  auto pool = isolated().start();
  jobq::Flow flow;
  flow.chord({c.q.make("num", 2), c.q.make("num", 3)}, c.q.make(Task{"deps"}));
  const auto ids = c.q.enqueue_flow(flow);
  jobq::Worker w{c.store, c.options()};
  w.handle("num", [](const nlohmann::json& n, jobq::JobContext&) { return n.get<int>() * 10; });
  w.handle<Task>(pool.handler<Task>());
  w.start();
  CHECK(c.finished(ids.members.back()).result == nlohmann::json{20, 30});
  w.stop();
}

TEST_CASE("the pool leaves no zombies and no descriptors behind, and refuses a threaded start", "[isolation]") {
  const int fds = open_descriptors();
  {
    Case c;
    auto pool = isolated().start();
    std::vector<jobq::JobId> ids;
    for (int i = 0; i < 4; ++i) ids.push_back(c.q.enqueue(Task{i % 2 == 0 ? "ok" : "segv"}, {.max_attempts = 1}));
    jobq::Worker w{c.store, c.options(2)};
    w.handle<Task>(pool.handler<Task>());
    w.start();
    for (auto id : ids) c.finished(id);
    CHECK_THROWS_WITH(isolated().start(), Catch::Contains("before the program starts any thread"));
    w.stop();
  }
  CHECK(open_descriptors() == fds);
  errno = 0;
  CHECK(::waitpid(-1, nullptr, WNOHANG) == -1);  // no child of ours is left, not even a zombie
  CHECK(errno == ECHILD);
}
