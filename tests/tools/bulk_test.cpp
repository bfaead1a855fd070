// The dashboard's bulk actions at scale: re-driving 100,000 dead jobs (SQLite, PostgreSQL) or
// cancelling 100,000 queued ones (Redis) goes a page at a time, so a worker of another queue
// goes on claiming while it runs (no transaction, lock or script holds the store for the whole
// action).
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <jobq/http.hpp>
#include <jobq/open.hpp>

namespace {

using namespace std::chrono_literals;

std::string random_suffix() {
  std::random_device rd;
  return std::to_string(rd() % 1'000'000'000);
}

std::string required_env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') FAIL(name << " is not set: run the tests through scripts/test.sh, which starts the server");
  return v;
}

// `n` queued jobs of `queue`; when `dead`, dead after their only attempt (claimed and failed on
// four threads).
void fill(jobq::AnyBackend& b, const std::string& queue, std::size_t n, bool dead) {
  std::vector<jobq::NewJob> jobs(n);
  for (auto& j : jobs) {
    j.queue = queue;
    j.name = "bulk";
    j.max_attempts = 1;
  }
  for (std::size_t at = 0; at < n; at += 10'000) {
    b.enqueue_many({jobs.begin() + static_cast<std::ptrdiff_t>(at),
                    jobs.begin() + static_cast<std::ptrdiff_t>(std::min(n, at + 10'000))});
  }
  if (!dead) return;
  std::vector<std::thread> threads;
  std::atomic<bool> failed{false};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      try {
        for (;;) {
          const auto got = b.claim({{queue}, 500, 10min});
          if (got.empty()) return;
          for (const auto& j : got) b.fail({j.id, j.lease_token, "boom", std::nullopt});
        }
      } catch (...) {
        failed = true;
      }
    });
  }
  for (auto& t : threads) t.join();
  REQUIRE_FALSE(failed);
  REQUIRE(b.counts(queue).dead == static_cast<std::int64_t>(n));
}

// Re-drives `n` dead jobs (dead) or cancels `n` queued ones through POST /api/queues/bulk.
void bulk_while_claiming(const std::string& url, const jobq::OpenOptions& open, bool dead) {
  auto b = jobq::open_backend(url, open);
  const auto q = "bulk-" + random_suffix();
  const auto other = q + "-other";
  constexpr std::int64_t n = 100'000;
  fill(b, q, static_cast<std::size_t>(n), dead);

  jobq::Metrics metrics;
  jobq::HttpServer server{b, metrics, {.port = 0, .queues = {q}}};
  server.start();

  // The worker of the other queue: enqueue, claim, complete, and note how far the bulk action
  // had got (the dead jobs left) each time a claim came back.
  std::atomic<bool> stop{false};
  std::atomic<std::size_t> during{0}, cycles{0};
  std::atomic<bool> worker_failed{false};
  std::thread worker([&] {
    try {
      while (!stop) {
        b.enqueue([&] {
          jobq::NewJob j;
          j.queue = other;
          j.name = "tick";
          return j;
        }());
        for (const auto& j : b.claim({{other}, 10, 1min})) {
          if (!b.complete(j.id, j.lease_token, nullptr)) worker_failed = true;
        }
        ++cycles;
        const auto c = b.counts(q);
        const auto left = dead ? c.dead : c.queued;
        if (left > n / 10 && left < n - n / 10) ++during;
      }
    } catch (...) {
      worker_failed = true;
    }
  });

  httplib::Client http("127.0.0.1", server.port());
  http.set_read_timeout(600, 0);
  const auto r = http.Post(("/api/queues/bulk?queue=" + q + (dead ? "&action=redrive&state=dead" : "&action=cancel&state=queued")).c_str(),
                           httplib::Headers{{"X-Jobq-Action", "1"}}, "", "text/plain");
  stop = true;
  worker.join();
  server.stop();
  REQUIRE(r);
  INFO(r->body);
  REQUIRE(r->status == 200);
  const auto body = nlohmann::json::parse(r->body);
  CHECK(body.at("done") == n);
  CHECK(body.at("refused") == 0);
  CHECK_FALSE(worker_failed);
  CHECK(b.counts(q) == (dead ? jobq::Counts{.queued = n} : jobq::Counts{.cancelled = n}));
  // One long lock would let no claim through between 10% and 90% of the action (SQLite's
  // writer lock, a Redis script), or would show the count jump from all to none (one
  // PostgreSQL transaction).
  INFO(cycles << " claims by the other queue's worker, " << during << " of them mid-action");
  CHECK(during >= 3);
}

}  // namespace

TEST_CASE("a bulk re-drive of 100,000 dead jobs lets a worker claim while it runs: SQLite", "[bulk][sqlite]") {
  const auto path = std::filesystem::temp_directory_path() / ("jobq-bulk-" + random_suffix() + ".db");
  struct Cleanup {
    std::filesystem::path p;
    ~Cleanup() {
      for (const char* ext : {"", "-wal", "-shm"}) std::filesystem::remove(p.string() + ext);
    }
  } cleanup{path};
  bulk_while_claiming("sqlite://" + path.string(), {}, true);
}

TEST_CASE("a bulk re-drive of 100,000 dead jobs lets a worker claim while it runs: PostgreSQL", "[bulk][postgres]") {
  jobq::OpenOptions o;
  o.postgres_schema = "jobq_bulk_" + random_suffix();
  bulk_while_claiming(required_env("JOBQ_TEST_POSTGRES_URL"), o, true);  // a throwaway server: left there
}

TEST_CASE("a bulk cancel of 100,000 queued jobs lets a worker claim while it runs: Redis", "[bulk][redis]") {
  jobq::OpenOptions o;
  o.redis_prefix = "jobq-bulk-" + random_suffix();
  bulk_while_claiming(required_env("JOBQ_TEST_REDIS_URL"), o, false);
}
