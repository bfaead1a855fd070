// jobq-soak: does a long-running worker's memory stay flat? Runs --jobs no-op jobs through one
// Worker (retention set, so finished jobs are pruned during maintenance) while a producer keeps
// a bounded backlog queued, and samples the process's resident set (VmRSS) every
// --sample-every completions. Prints one JSON line. Exit 1 if the jobs did not all complete or
// (with --max-growth-kb) RSS grew more than that between the first sample and the last.
//
//   jobq-soak --backend memory --jobs 1000000 --sample-every 100000
//   jobq-soak --backend sqlite --jobs 1000000 --sample-every 100000 [--path /tmp/soak.db]

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <jobq/jobq.hpp>
#include <jobq/open.hpp>

using namespace std::chrono_literals;

namespace {

long rss_kb() {
  std::ifstream in("/proc/self/status");
  std::string key;
  while (in >> key) {
    if (key == "VmRSS:") {
      long kb = 0;
      in >> kb;
      return kb;
    }
    in.ignore(4096, '\n');
  }
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"jobq-soak: memory of a long-running worker with retention"};
  std::string backend = "memory", path;
  long jobs = 1'000'000, every = 100'000, backlog = 10'000, max_growth_kb = 0;
  int concurrency = 4;
  app.add_option("--backend", backend, "memory or sqlite");
  app.add_option("--path", path, "sqlite file (default: a temp file, removed)");
  app.add_option("--jobs", jobs)->check(CLI::Range(1L, 1'000'000'000L));
  app.add_option("--sample-every", every)->check(CLI::Range(1L, 1'000'000'000L));
  app.add_option("--backlog", backlog, "jobs kept queued ahead of the worker")->check(CLI::Range(1L, 10'000'000L));
  app.add_option("--concurrency", concurrency)->check(CLI::Range(1, 256));
  app.add_option("--max-growth-kb", max_growth_kb, "fail if RSS grows more than this after the first sample (0: never)");
  CLI11_PARSE(app, argc, argv);

  std::string url = "memory://";
  bool remove = false;
  if (backend == "sqlite") {
    if (path.empty()) {
      path = (std::filesystem::temp_directory_path() / ("jobq-soak-" + std::to_string(::getpid()) + ".db")).string();
      remove = true;
    }
    url = "sqlite://" + std::filesystem::absolute(path).string();
  } else if (backend != "memory") {
    std::cerr << "jobq-soak: --backend must be memory or sqlite\n";
    return 2;
  }

  nlohmann::ordered_json samples = nlohmann::ordered_json::array();
  const long rss_start = rss_kb();
  bool ok = false;
  double seconds = 0;
  {
    auto store = jobq::open_backend(url);
    jobq::WorkerOptions o;
    o.queues = {"soak"};
    o.concurrency = concurrency;
    o.poll_interval = 100ms;
    o.maintenance_interval = 500ms;
    o.retention = jobq::Retention{.completed = 0ms, .dead = 0ms, .cancelled = 0ms};
    o.on_error = [](const std::exception& e) { std::cerr << "jobq-soak worker: " << e.what() << '\n'; };
    std::atomic<long> done{0};
    o.on_event = [&](const jobq::JobEvent& e) {
      if (e.kind == jobq::JobEvent::Kind::completed) ++done;
    };
    jobq::Worker<jobq::AnyBackend> w(store, o);
    w.handle("noop", [](const nlohmann::json&) {});
    w.start();

    const auto t0 = std::chrono::steady_clock::now();
    long enqueued = 0, next_sample = every;
    const auto sample = [&](long at) {
      const auto c = store.counts("soak");
      samples.push_back({{"completed", at},
                         {"rss_kb", rss_kb()},
                         {"stored_jobs", c.queued + c.active + c.completed + c.dead + c.cancelled},
                         {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}});
    };
    const auto deadline = t0 + std::chrono::seconds(3600);
    while (done.load() < jobs && std::chrono::steady_clock::now() < deadline) {
      if (enqueued < jobs && enqueued - done.load() < backlog) {
        std::vector<jobq::NewJob> batch;
        for (; enqueued < jobs && batch.size() < 1000; ++enqueued) {
          jobq::NewJob j;
          j.queue = "soak";
          j.name = "noop";
          j.payload = {{"n", enqueued}};
          batch.push_back(std::move(j));
        }
        store.enqueue_many(batch);
      } else {
        std::this_thread::sleep_for(1ms);
      }
      while (done.load() >= next_sample && next_sample <= jobs) {
        sample(next_sample);
        next_sample += every;
      }
    }
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    w.stop();
    ok = done.load() >= jobs;
  }
  if (remove) {
    for (const auto* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + suffix);
  }

  long growth = 0;
  if (samples.size() >= 2) growth = samples.back()["rss_kb"].get<long>() - samples.front()["rss_kb"].get<long>();
  if (max_growth_kb > 0 && growth > max_growth_kb) ok = false;
  const nlohmann::ordered_json out = {{"backend", backend},
                              {"ok", ok},
                              {"jobs", jobs},
                              {"concurrency", concurrency},
                              {"backlog", backlog},
                              {"seconds", seconds},
                              {"jobs_per_s", seconds > 0 ? static_cast<double>(jobs) / seconds : 0.0},
                              {"rss_kb_at_start", rss_start},
                              {"rss_growth_kb_first_to_last_sample", growth},
                              {"samples", samples}};
  std::cout << out.dump() << std::endl;
  return ok ? 0 : 1;
}
