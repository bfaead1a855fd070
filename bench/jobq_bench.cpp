// jobq-bench: runs the standard workloads against one backend and prints one JSON line per
// result (with the parameters used and every repetition), so bench/run.sh can tabulate
// medians across backends.
//
//   W1  enqueue one job at a time, waiting for each                 (N = 5,000)
//   W2  bulk enqueue in batches of 1,000                            (N = 50,000)
//   W3  drain N = 20,000 queued jobs with a no-op handler, at concurrency 1 and 16
//   W4  enqueue-to-handler-start latency on an idle worker, 200 samples 20 ms apart
//   W5  a chord of N = 20,000 no-op members plus a callback (one enqueue_flow), drained at
//       concurrency 16 until the callback's completion is recorded; (N + 1) / seconds, and the
//       median ratio to a W3 drain at concurrency 16 run right before each repetition
//   W6  (only when named) cost as work grows: W3 c=16 from a backlog of 1,000,000 queued jobs
//       (W6-backlog), and again after 10,000,000 jobs have passed through the store with the
//       default retention (W6-passed; W6-passed-pruned: that store pruned first, untimed, and
//       drained again); ratios to a 20,000-job W3 c=16 drain in each repetition, and the
//       store's size before and after (PostgreSQL, Redis, SQLite)
//
// Usage: jobq-bench --backend memory|sqlite|postgres|redis [--url URL] [--workloads W1,W3]
//                   [--reps 3] [--scale 1.0] [--processes 1 2 4]   (W3 in P worker processes)
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <jobq/isolation.hpp>
#include <jobq/jobq.hpp>

#include "bench_targets.hpp"

namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using nlohmann::json;

double seconds_since(steady::time_point t0) {
  return std::chrono::duration<double>(steady::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  if (v.empty()) return 0;
  const auto n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  if (v.empty()) return 0;
  const auto idx = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size()))) - 1;
  return v[std::min(idx, v.size() - 1)];
}

jobq::NewJob bench_job(int i) {
  jobq::NewJob j;
  j.queue = "bench";
  j.name = "noop";
  j.payload = {{"i", i}, {"to", "user@example.com"}};
  return j;
}

void print(const std::string& backend, const std::string& workload, json params, const std::vector<double>& reps,
           const std::string& unit) {
  json line = {{"backend", backend}, {"workload", workload}, {"params", std::move(params)},
               {"unit", unit}, {"reps", reps}, {"median", median(reps)}};
  std::cout << line.dump() << std::endl;
}

template <class Target>
double w1_enqueue_one(Target& target, int n) {
  auto store = target.make();
  const auto t0 = steady::now();
  for (int i = 0; i < n; ++i) store->enqueue(bench_job(i));
  return n / seconds_since(t0);
}

template <class Target>
double w2_enqueue_bulk(Target& target, int n, int batch) {
  auto store = target.make();
  std::vector<jobq::NewJob> jobs;
  for (int i = 0; i < batch; ++i) jobs.push_back(bench_job(i));
  const auto t0 = steady::now();
  for (int done = 0; done < n; done += batch) store->enqueue_many(jobs);
  return n / seconds_since(t0);
}

int g_prefetch = -1;  // --prefetch; -1 = the Worker's default (adaptive)
// --isolated: W3's handlers run in child processes (started in main, before any thread).
std::optional<jobq::ProcessPool> g_pool;
std::vector<int> g_concurrency{1, 16};  // --concurrency: W3's runs

// Queues n bench jobs in batches of 1,000.
template <class Store>
void enqueue_n(Store& store, int n) {
  std::vector<jobq::NewJob> jobs;
  for (int i = 0; i < n; ++i) {
    jobs.push_back(bench_job(i));
    if (jobs.size() == 1000 || i == n - 1) {
      store.enqueue_many(jobs);
      jobs.clear();
    }
  }
}

// The W3 Worker's options: no maintenance, a short poll; everything else (the retention, its
// prune right at start) the Worker's default.
jobq::WorkerOptions w3_options(int concurrency) {
  return {.queues = {"bench"}, .concurrency = concurrency, .prefetch = g_prefetch, .poll_interval = 100ms,
          .maintenance_interval = 0ms};
}

// Drains n queued no-op jobs with one W3 Worker; jobs/s from start() until the n-th handler call.
template <class Store>
double drain(Store& store, int n, int concurrency) {
  std::atomic<int> done{0};
  std::mutex m;
  std::condition_variable cv;
  jobq::Worker w{store, w3_options(concurrency)};
  const auto count = [&] {
    if (++done == n) {
      std::lock_guard lock(m);
      cv.notify_all();
    }
  };
  if (g_pool) {
    w.handle("noop", [&, run = g_pool->handler()](const json& p, jobq::JobContext& ctx) {
      auto r = run(p, ctx);  // the round trip to a child
      count();
      return r;
    });
  } else {
    w.handle("noop", [&](const json&) { count(); });
  }
  const auto t0 = steady::now();
  w.start();
  {
    std::unique_lock lock(m);
    if (!cv.wait_for(lock, 600s, [&] { return done.load() >= n; })) {
      throw std::runtime_error("drain: " + std::to_string(n) + " jobs did not finish in 600 s");
    }
  }
  const double rate = n / seconds_since(t0);
  w.stop();
  return rate;
}

template <class Target>
double w3_drain(Target& target, int n, int concurrency) {
  auto store = target.make();
  enqueue_n(*store, n);
  return drain(*store, n, concurrency);
}

// W6 (b): m jobs through the store, as a service would pass them: enqueue_many batches of
// 1,000 kept at most 20,000 ahead of a Worker with the default options (concurrency 16,
// retention 24 h / 100,000 per finished state) but a prune every `prune_interval`.
template <class Store>
void pass_through(Store& store, int m, jobq::Millis prune_interval) {
  std::atomic<int> done{0};
  std::mutex mu;
  std::condition_variable cv;
  jobq::Worker w{store, {.queues = {"bench"}, .concurrency = 16, .prune_interval = prune_interval}};
  w.handle("noop", [&](const json&) {
    const int d = ++done;
    if (d % 1000 == 0 || d == m) {
      std::lock_guard lock(mu);
      cv.notify_all();
    }
  });
  w.start();
  std::vector<jobq::NewJob> jobs;
  for (int i = 0; i < 1000; ++i) jobs.push_back(bench_job(i));
  for (int sent = 0; sent < m;) {
    {
      std::unique_lock lock(mu);
      if (!cv.wait_for(lock, 600s, [&] { return sent - done.load() < 20'000; })) {
        throw std::runtime_error("W6: the pass-through stalled for 600 s");
      }
    }
    const int k = std::min(1000, m - sent);
    store.enqueue_many(std::span<const jobq::NewJob>(jobs.data(), static_cast<std::size_t>(k)));
    sent += k;
  }
  std::unique_lock lock(mu);
  if (!cv.wait_for(lock, 600s, [&] { return done.load() >= m; })) throw std::runtime_error("W6: the pass-through stalled");
  lock.unlock();
  w.stop();
}

// --processes: W3 with the drain in P child processes (this binary, run again with --child-store),
// each a Worker at the given concurrency on the same store. The children count handler calls in
// one shared counter (a memfd they map); the parent times from its "go" until the counter is n.
std::vector<int> g_processes;  // empty: W3 in this process

struct SharedCount {
  int fd = -1;
  std::atomic<long long>* count = nullptr;
  explicit SharedCount(int inherited = -1) : fd(inherited) {
    if (fd < 0) {
      fd = memfd_create("jobq-bench-count", 0);  // no CLOEXEC: the children inherit it
      if (fd < 0 || ftruncate(fd, sizeof(long long)) != 0) throw std::runtime_error("memfd_create failed");
    }
    void* p = mmap(nullptr, sizeof(long long), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap of the shared counter failed");
    count = static_cast<std::atomic<long long>*>(p);
    static_assert(std::atomic<long long>::is_always_lock_free);
  }
  ~SharedCount() {
    munmap(count, sizeof(long long));
    close(fd);
  }
  SharedCount(const SharedCount&) = delete;
  SharedCount& operator=(const SharedCount&) = delete;
};

// One child: its stdin takes the parent's commands ('g' start, 'q' stop), its stdout gives
// "ready" and, at the end, its Worker's stats as a JSON line.
struct Child {
  pid_t pid = -1;
  FILE* to = nullptr;
  FILE* from = nullptr;
};

Child spawn_child(const std::vector<std::string>& args) {
  int in[2], out[2];
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  Child c;
  const int rc = posix_spawn(&c.pid, "/proc/self/exe", &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  close(in[0]);
  close(out[1]);
  if (rc != 0) throw std::runtime_error("posix_spawn failed");
  c.to = fdopen(in[1], "w");
  c.from = fdopen(out[0], "r");
  return c;
}

std::string read_line(FILE* f) {
  std::string line;
  for (int ch; (ch = std::fgetc(f)) != EOF && ch != '\n';) line += static_cast<char>(ch);
  return line;
}

// The child's side: a W3 Worker on the store `id`, started and stopped by the parent.
template <class Target>
int child_drain(Target& target, const std::string& id, int shm_fd, int concurrency) {
  SharedCount shared{shm_fd};
  auto store = target.open(id);
  jobq::Worker w{*store, w3_options(concurrency)};
  w.handle("noop", [&](const json&) { shared.count->fetch_add(1, std::memory_order_relaxed); });
  std::cout << "ready" << std::endl;
  for (int ch; (ch = std::getchar()) != EOF && ch != 'g';) {
  }
  w.start();
  for (int ch; (ch = std::getchar()) != EOF && ch != 'q';) {
  }
  w.stop();
  const auto st = w.stats();
  std::cout << json{{"processed", st.processed}, {"failed", st.failed}, {"lost_leases", st.lost_leases}}.dump()
            << std::endl;
  return 0;
}

struct ProcessesResult {
  double rate = 0;
  json children = json::array();
  json conflicts;  // the backend's counters, after minus before
};

template <class Target>
ProcessesResult w3_processes(Target& target, const std::string& backend, const std::string& url, int n,
                             int concurrency, int processes) {
  if (backend == "memory") throw std::invalid_argument("--processes: a memory store cannot be shared across processes");
  auto store = target.make();
  enqueue_n(*store, n);
  SharedCount shared;
  std::vector<Child> children;
  for (int i = 0; i < processes; ++i) {
    children.push_back(spawn_child({"jobq-bench", "--backend", backend, "--url", url, "--child-store", target.id(),
                                    "--child-shm-fd", std::to_string(shared.fd), "--concurrency",
                                    std::to_string(concurrency), "--prefetch", std::to_string(g_prefetch)}));
  }
  const auto check_alive = [&] {
    for (auto& c : children) {
      int status = 0;
      if (c.pid > 0 && waitpid(c.pid, &status, WNOHANG) == c.pid) {
        c.pid = -1;
        throw std::runtime_error("W3 --processes: a child exited early (status " + std::to_string(status) + ")");
      }
    }
  };
  for (auto& c : children) {
    if (read_line(c.from) != "ready") {
      check_alive();
      throw std::runtime_error("W3 --processes: a child did not start");
    }
  }
  const auto before = target.conflicts();
  const auto t0 = steady::now();
  for (auto& c : children) {
    std::fputc('g', c.to);
    std::fflush(c.to);
  }
  while (shared.count->load() < n) {
    std::this_thread::sleep_for(200us);
    if (seconds_since(t0) > 600) throw std::runtime_error("W3 --processes: the drain did not finish in 600 s");
    check_alive();
  }
  ProcessesResult r;
  r.rate = n / seconds_since(t0);
  for (auto& c : children) {
    std::fputc('q', c.to);
    std::fflush(c.to);
  }
  for (auto& c : children) {
    const auto line = read_line(c.from);
    r.children.push_back(json::parse(line, nullptr, false));
    std::fclose(c.to);
    std::fclose(c.from);
    int status = 0;
    waitpid(c.pid, &status, 0);
  }
  const auto after = target.conflicts();
  r.conflicts = json::object();
  for (const auto& [k, v] : after.items()) r.conflicts[k] = v.template get<long long>() - before.value(k, 0LL);
  return r;
}

// The callback reads all n results (ctx.dependencies(): one get_many), as a real chord's would.
template <class Target>
double w5_chord(Target& target, int n, int concurrency) {
  auto store = target.make();
  jobq::Queue queue{*store, "bench"};
  jobq::Flow flow;
  std::vector<jobq::NewJob> members;
  members.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) members.push_back(bench_job(i));
  auto callback = bench_job(n);
  callback.name = "callback";
  flow.chord(std::move(members), std::move(callback));
  const auto callback_id = queue.enqueue_flow(flow).members.back();

  std::mutex m;
  std::condition_variable cv;
  bool done = false;
  std::string error;
  jobq::WorkerOptions o{.queues = {"bench"}, .concurrency = concurrency, .prefetch = g_prefetch,
                        .poll_interval = 100ms, .maintenance_interval = 0ms};
  o.on_event = [&](const jobq::JobEvent& e) {
    if (e.id != callback_id || e.kind == jobq::JobEvent::Kind::started) return;
    std::lock_guard lock(m);
    if (e.kind != jobq::JobEvent::Kind::completed) error = e.error.empty() ? "callback did not complete" : e.error;
    done = true;
    cv.notify_all();
  };
  jobq::Worker w{*store, std::move(o)};
  w.handle("noop", [](const json&) {});
  w.handle("callback", [n](const json&, jobq::JobContext& ctx) {
    const auto got = ctx.dependencies().size();
    if (got != static_cast<std::size_t>(n)) {
      throw jobq::Permanent("callback saw " + std::to_string(got) + " dependencies");
    }
  });
  const auto t0 = steady::now();
  w.start();
  {
    std::unique_lock lock(m);
    if (!cv.wait_for(lock, 600s, [&] { return done; })) throw std::runtime_error("W5: the chord did not finish in 600 s");
  }
  const double rate = (n + 1) / seconds_since(t0);
  w.stop();
  if (!error.empty()) throw std::runtime_error("W5: " + error);
  return rate;
}

// Returns per-sample latencies in milliseconds.
template <class Target>
std::vector<double> w4_latency(Target& target, int samples, std::chrono::milliseconds gap) {
  auto store = target.make();
  std::mutex m;
  std::condition_variable cv;
  std::optional<steady::time_point> started;
  jobq::Worker w{*store, {.queues = {"bench"}, .concurrency = 1, .poll_interval = 1000ms,
                          .maintenance_interval = 0ms}};
  w.handle("noop", [&](const json&) {
    const auto t = steady::now();
    std::lock_guard lock(m);
    started = t;
    cv.notify_all();
  });
  w.start();
  std::this_thread::sleep_for(200ms);  // let the worker go idle in its wait
  std::vector<double> out;
  for (int i = 0; i < samples; ++i) {
    {
      std::lock_guard lock(m);
      started.reset();
    }
    const auto t0 = steady::now();
    store->enqueue(bench_job(i));
    std::unique_lock lock(m);
    if (!cv.wait_for(lock, 10s, [&] { return started.has_value(); })) {
      throw std::runtime_error("W4: a job did not start within 10 s");
    }
    out.push_back(std::chrono::duration<double, std::milli>(*started - t0).count());
    lock.unlock();
    std::this_thread::sleep_for(gap);
  }
  w.stop();
  return out;
}

json counts_json(const jobq::Counts& c) {
  return {{"queued", c.queued}, {"active", c.active}, {"completed", c.completed}, {"dead", c.dead}};
}

template <class Target>
void run(Target& target, const std::string& url, const std::vector<std::string>& workloads, int reps, double scale) {
  auto wants = [&](const std::string& w) {
    return std::find(workloads.begin(), workloads.end(), w) != workloads.end();
  };
  auto scaled = [&](int n) { return std::max(1, static_cast<int>(n * scale)); };
  const std::string name = target.name();
  if (wants("W1")) {
    std::vector<double> r;
    for (int i = 0; i < reps; ++i) r.push_back(w1_enqueue_one(target, scaled(5'000)));
    print(name, "W1", {{"n", scaled(5'000)}}, r, "jobs/s");
  }
  if (wants("W2")) {
    std::vector<double> r;
    const int n = std::max(1000, scaled(50'000) / 1000 * 1000);
    for (int i = 0; i < reps; ++i) r.push_back(w2_enqueue_bulk(target, n, 1000));
    print(name, "W2", {{"n", n}, {"batch", 1000}}, r, "jobs/s");
  }
  if (wants("W3") && !g_processes.empty()) {
    for (int c : g_concurrency) {
      for (int p : g_processes) {
        std::vector<double> r;
        json children, conflicts = json::array();
        for (int i = 0; i < reps; ++i) {
          auto res = w3_processes(target, name, url, scaled(20'000), c, p);
          r.push_back(res.rate);
          children = std::move(res.children);  // the last repetition's
          conflicts.push_back(std::move(res.conflicts));
        }
        print(name, "W3",
              {{"n", scaled(20'000)}, {"concurrency", c}, {"processes", p},
               {"prefetch", g_prefetch < 0 ? json("adaptive") : json(g_prefetch)}, {"children", children},
               {"conflicts", conflicts}},
              r, "jobs/s");
      }
    }
  } else if (wants("W3")) {
    for (int c : g_concurrency) {
      std::vector<double> r;
      for (int i = 0; i < reps; ++i) r.push_back(w3_drain(target, scaled(20'000), c));
      print(name, "W3",
            {{"n", scaled(20'000)}, {"concurrency", c},
             {"prefetch", g_prefetch < 0 ? json("adaptive") : json(g_prefetch)}, {"isolated", g_pool.has_value()}},
            r, "jobs/s");
    }
  }
  if (wants("W4")) {
    std::vector<double> p50, p99;
    const int samples = std::max(5, scaled(200));
    for (int i = 0; i < reps; ++i) {
      const auto lat = w4_latency(target, samples, 20ms);
      p50.push_back(percentile(lat, 50));
      p99.push_back(percentile(lat, 99));
    }
    print(name, "W4-p50", {{"samples", samples}, {"gap_ms", 20}}, p50, "ms");
    print(name, "W4-p99", {{"samples", samples}, {"gap_ms", 20}}, p99, "ms");
  }
  if (wants("W5")) {
    // Each repetition is paired with a W3 drain at the same concurrency right before it, so the
    // ratio compares runs under the same machine load.
    constexpr int c = 16;
    const int n = scaled(20'000);
    std::vector<double> r, w3, ratios;
    for (int i = 0; i < reps; ++i) {
      w3.push_back(w3_drain(target, n, c));
      r.push_back(w5_chord(target, n, c));
      ratios.push_back(r.back() / w3.back());
    }
    print(name, "W5", {{"members", n}, {"concurrency", c}, {"w3_paired", std::round(median(w3))},
                       {"ratio_to_w3", std::round(median(ratios) * 1000) / 1000}}, r, "jobs/s");
  }
  if (wants("W6")) {
    // (a) a backlog of 1,000,000 queued jobs drained as W3 c=16 does; (b) the same after
    // 10,000,000 jobs have passed through the store (both scaled). Each repetition first runs a
    // plain W3 c=16 drain of 20,000 jobs (or of the backlog, if smaller): the ratios are the
    // median of each repetition's rate over that one's. The pass-through's Worker prunes every
    // 60 s x scale, so a scaled run prunes as often per job passed as the full one would; the
    // drain's Worker prunes at its start, as every Worker does, while it drains.
    constexpr int c = 16;
    const int backlog = scaled(1'000'000);
    const int passed = scaled(10'000'000);
    const int n_w3 = std::min(20'000, backlog);
    const jobq::Millis prune_every{std::max<long long>(1000, std::llround(60'000 * scale))};
    std::vector<double> w3, ra, rb, rq, ratio_a, ratio_b, ratio_q;
    json sizes;
    double pass_s = 0;
    for (int i = 0; i < reps; ++i) {
      w3.push_back(w3_drain(target, n_w3, c));
      {
        auto store = target.make();
        const auto id = target.id();
        const auto t0 = steady::now();
        enqueue_n(*store, backlog);
        sizes["enqueue_backlog_s"] = std::round(seconds_since(t0) * 10) / 10;
        sizes["a_before"] = target.size(id);
        ra.push_back(drain(*store, backlog, c));
        sizes["a_after"] = target.size(id);
      }
      {
        auto store = target.make();
        const auto id = target.id();
        sizes["b_empty"] = target.size(id);
        const auto t0 = steady::now();
        pass_through(*store, passed, prune_every);
        pass_s = seconds_since(t0);
        sizes["b_passed"] = target.size(id);
        sizes["b_passed_counts"] = counts_json(store->counts("bench"));
        enqueue_n(*store, backlog);
        sizes["b_before"] = target.size(id);
        rb.push_back(drain(*store, backlog, c));
        sizes["b_after"] = target.size(id);
        sizes["b_after_counts"] = counts_json(store->counts("bench"));
        // The same store once more, pruned first (untimed): what the drain's own prune costs.
        const auto t1 = steady::now();
        sizes["b2_pruned"] = store->prune("bench", *jobq::WorkerOptions{}.retention);
        sizes["b2_prune_s"] = std::round(seconds_since(t1) * 100) / 100;
        enqueue_n(*store, backlog);
        rq.push_back(drain(*store, backlog, c));
        sizes["b2_after"] = target.size(id);
      }
      ratio_a.push_back(ra.back() / w3.back());
      ratio_b.push_back(rb.back() / w3.back());
      ratio_q.push_back(rq.back() / w3.back());
    }
    const auto r3 = [](double x) { return std::round(x * 1000) / 1000; };
    print(name, "W6-backlog",
          {{"backlog", backlog}, {"concurrency", c}, {"w3_n", n_w3}, {"w3_paired", std::round(median(w3))},
           {"ratio_to_w3", r3(median(ratio_a))}, {"ratios", ratio_a}},
          ra, "jobs/s");
    print(name, "W6-passed",
          {{"backlog", backlog}, {"passed", passed}, {"pass_s", std::round(pass_s * 10) / 10}, {"prune_interval_ms", prune_every.count()},
           {"concurrency", c}, {"w3_paired", std::round(median(w3))}, {"ratio_to_w3", r3(median(ratio_b))},
           {"ratios", ratio_b}, {"sizes", sizes}},
          rb, "jobs/s");
    print(name, "W6-passed-pruned",
          {{"backlog", backlog}, {"passed", passed}, {"concurrency", c}, {"w3_paired", std::round(median(w3))},
           {"ratio_to_w3", r3(median(ratio_q))}, {"ratios", ratio_q}},
          rq, "jobs/s");
  }
}

// Prints a table of medians from the JSON lines of a bench/run.sh run.
int print_table(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::map<std::string, std::vector<double>> raw;  // raw server limits: median over reps
  std::vector<std::pair<std::string, json>> rows;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] != '{') continue;
    const auto j = json::parse(line, nullptr, false);
    if (j.is_discarded()) continue;
    if (j.contains("tps")) {
      raw[j["backend"].get<std::string>() + " " + j["workload"].get<std::string>()].push_back(j["tps"].get<double>());
    } else {
      rows.emplace_back(j["backend"].get<std::string>(), j);
    }
  }
  std::printf("%-10s %-8s %-28s %14s %s\n", "backend", "workload", "params", "median", "unit");
  for (const auto& [backend, j] : rows) {
    std::printf("%-10s %-8s %-28s %14.2f %s\n", backend.c_str(), j["workload"].get<std::string>().c_str(),
                j["params"].dump().c_str(), j["median"].get<double>(), j["unit"].get<std::string>().c_str());
  }
  for (const auto& [name, v] : raw) std::printf("%-48s %14.2f ops/s\n", name.c_str(), median(v));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"jobq benchmark driver: one JSON line per result"};
  std::string backend = "memory";
  std::string url;
  std::string workloads = "W1,W2,W3,W4,W5";
  int reps = 3;
  double scale = 1.0;
  std::string table;
  app.add_option("--backend", backend, "memory, sqlite, postgres or redis");
  app.add_option("--table", table, "print a table of medians from a JSON-lines file and exit");
  app.add_option("--url", url, "connection URL / file path (sqlite: a directory for temp files)");
  app.add_option("--workloads", workloads, "comma-separated subset of W1,W2,W3,W4,W5,W6 (W6 only when named)");
  app.add_option("--reps", reps, "repetitions per workload")->check(CLI::Range(1, 100));
  app.add_option("--scale", scale, "multiply every N by this (CI smoke runs use 0.01)")
      ->check(CLI::Range(0.0001, 100.0));
  app.add_option("--prefetch", g_prefetch, "W3: jobs leased ahead of busy threads (-1 = adaptive)");
  bool isolated = false;
  app.add_flag("--isolated", isolated, "W3: run the no-op handlers in child processes (jobq::Isolated)");
  app.add_option("--concurrency", g_concurrency, "W3: the Worker concurrencies to run (default 1 16)")
      ->check(CLI::PositiveNumber);
  app.add_option("--processes", g_processes,
                 "W3: drain in this many worker processes (each a Worker at --concurrency) on one store; "
                 "several values run in turn (not memory)")
      ->check(CLI::PositiveNumber);
  std::string child_store;
  int child_shm_fd = -1;
  app.add_option("--child-store", child_store)->group("");  // internal: a --processes child
  app.add_option("--child-shm-fd", child_shm_fd)->group("");
  CLI11_PARSE(app, argc, argv);
  if (isolated) {
    jobq::Isolated iso;  // before any thread: the pool forks its zygote now
    iso.handle("noop", [](const json&, jobq::JobContext&) {});
    g_pool.emplace(iso.start());
  }

  std::vector<std::string> ws;
  for (std::size_t pos = 0; pos <= workloads.size();) {
    const auto next = std::min(workloads.find(',', pos), workloads.size());
    if (next > pos) ws.push_back(workloads.substr(pos, next - pos));
    pos = next + 1;
  }
  try {
    if (!table.empty()) return print_table(table);
    if (!child_store.empty()) {
      return bench::dispatch(backend, url, [&](auto& target) {
        child_drain(target, child_store, child_shm_fd, g_concurrency.at(0));
      });
    }
    return bench::dispatch(backend, url, [&](auto& target) { run(target, url, ws, reps, scale); });
  } catch (const std::exception& e) {
    std::cerr << "jobq-bench: " << e.what() << "\n";
    return 1;
  }
}
