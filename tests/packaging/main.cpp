// A jobq consumer: enqueues one job and runs it with a Worker, on the memory backend and on
// SQLite. Built by the packaging tests both through find_package(jobq) against an install tree
// and through add_subdirectory(jobq). Optional parts that the build found are only compiled in.
#include <jobq/jobq.hpp>
#include <jobq/memory.hpp>
#include <jobq/sqlite.hpp>
#ifdef JOBQ_CONSUMER_POSTGRES
#include <jobq/postgres.hpp>
static_assert(jobq::Backend<jobq::PostgresBackend>);
#endif
#ifdef JOBQ_CONSUMER_REDIS
#include <jobq/redis.hpp>
static_assert(jobq::Backend<jobq::RedisBackend>);
#endif
#ifdef JOBQ_CONSUMER_HTTP
#include <jobq/http.hpp>
#endif
#ifdef JOBQ_CONSUMER_OPEN
#include <jobq/open.hpp>
#endif

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <unistd.h>

namespace {

// Enqueues {"n": 41}, runs it with a one-thread worker, and checks the handler saw it once.
template <jobq::Backend B>
bool run_one(B& backend, const char* label) {
  jobq::Queue<B> queue{backend, "packaging"};
  queue.enqueue("add_one", {{"n", 41}});
  int result = 0;
  int calls = 0;
  jobq::Worker<B> worker{backend, {.queues = {"packaging"}, .concurrency = 1}};
  worker.handle("add_one", [&](const nlohmann::json& payload, jobq::JobContext&) {
    result = payload.at("n").get<int>() + 1;
    ++calls;
  });
  const bool idle = worker.run_until_idle(std::chrono::seconds(30));
  const auto counts = queue.counts();
  const bool ok = idle && calls == 1 && result == 42 && counts.completed == 1 && counts.queued == 0;
  std::printf("%s: %s (idle=%d calls=%d result=%d completed=%lld)\n", label, ok ? "ok" : "FAILED",
              idle ? 1 : 0, calls, result, static_cast<long long>(counts.completed));
  return ok;
}

}  // namespace

int main() {
  bool ok = true;
  {
    jobq::MemoryBackend memory;
    ok = run_one(memory, "memory") && ok;
  }
#ifdef JOBQ_CONSUMER_OPEN
  {
    auto opened = jobq::open_backend("memory://");
    ok = run_one(opened, "open_backend(memory://)") && ok;
    ok = jobq::mask_url("redis://u:secret@h:1/0").find("secret") == std::string::npos && ok;
  }
#endif
  const auto path = std::filesystem::temp_directory_path() /
                    ("jobq-packaging-" + std::to_string(::getpid()) + ".db");
  {
    jobq::SqliteBackend sqlite{path.string()};
    ok = run_one(sqlite, "sqlite") && ok;
  }
  for (const char* suffix : {"", "-wal", "-shm"}) {
    std::error_code ignored;
    std::filesystem::remove(path.string() + suffix, ignored);
  }
  return ok ? 0 : 1;
}
