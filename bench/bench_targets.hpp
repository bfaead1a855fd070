#pragma once
// One "target" per backend: make() returns a fresh, empty store (a new file, schema or key
// prefix), so every repetition starts from the same state. Shared by jobq-bench and the
// Google Benchmark micro-benchmarks.
#include <filesystem>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <jobq/memory.hpp>
#ifdef JOBQ_BENCH_SQLITE
#include <jobq/sqlite.hpp>
#endif
#ifdef JOBQ_BENCH_POSTGRES
#include <libpq-fe.h>  // only to drop the throwaway schemas afterwards

#include <jobq/postgres.hpp>
#endif
#ifdef JOBQ_BENCH_REDIS
#include <jobq/redis.hpp>
#endif

namespace bench {

inline std::string random_suffix() {
  static std::mt19937_64 rng{std::random_device{}()};
  return std::to_string(rng() % 1'000'000'000);
}

struct MemoryTarget {
  static std::string name() { return "memory"; }
  std::unique_ptr<jobq::MemoryBackend> make() { return std::make_unique<jobq::MemoryBackend>(); }
};

#ifdef JOBQ_BENCH_SQLITE
/// A durable file in WAL mode (synchronous=NORMAL, the backend's default) per repetition.
struct SqliteTarget {
  std::filesystem::path dir;
  std::vector<std::filesystem::path> files;
  explicit SqliteTarget(std::string d)
      : dir(d.empty() ? std::filesystem::temp_directory_path() : std::filesystem::path(d)) {}
  ~SqliteTarget() {
    std::error_code ec;
    for (const auto& f : files) {
      for (const char* ext : {"", "-wal", "-shm"}) std::filesystem::remove(f.string() + ext, ec);
    }
  }
  static std::string name() { return "sqlite"; }
  std::unique_ptr<jobq::SqliteBackend> make() {
    files.push_back(dir / ("jobq-bench-" + random_suffix() + ".db"));
    return std::make_unique<jobq::SqliteBackend>(files.back().string());
  }
};
#endif

#ifdef JOBQ_BENCH_POSTGRES
/// A fresh schema per repetition on the server at `url`, dropped when the target goes.
struct PostgresTarget {
  std::string url;
  std::vector<std::string> schemas;
  explicit PostgresTarget(std::string u) : url(std::move(u)) {
    if (url.empty()) throw std::invalid_argument("postgres: --url is required");
  }
  ~PostgresTarget() {
    PGconn* c = PQconnectdb(url.c_str());
    if (PQstatus(c) == CONNECTION_OK) {
      PQsetNoticeProcessor(c, [](void*, const char*) {}, nullptr);  // DROP ... CASCADE chatter
      for (const auto& s : schemas) PQclear(PQexec(c, ("DROP SCHEMA IF EXISTS " + s + " CASCADE").c_str()));
    }
    PQfinish(c);
  }
  static std::string name() { return "postgres"; }
  std::unique_ptr<jobq::PostgresBackend> make() {
    schemas.push_back("jobq_bench_" + random_suffix());
    return std::make_unique<jobq::PostgresBackend>(url, jobq::PostgresOptions{.schema = schemas.back(),
                                                                              .pool_size = 8});
  }
};
#endif

#ifdef JOBQ_BENCH_REDIS
/// A fresh key prefix per repetition on the server at `url`; its keys are deleted when the
/// target goes (the target owns the stores for that reason; make() hands out non-owning ones).
struct RedisTarget {
  struct Store {
    std::string prefix;
    std::unique_ptr<jobq::RedisBackend> backend;
  };
  std::string url;
  std::vector<Store> stores;
  explicit RedisTarget(std::string u) : url(std::move(u)) {
    if (url.empty()) throw std::invalid_argument("redis: --url is required");
  }
  ~RedisTarget() {
    for (auto& s : stores) {
      try {
        std::string cursor = "0";
        do {
          auto r = s.backend->command({"SCAN", cursor, "MATCH", s.prefix + ":*", "COUNT", "1000"});
          cursor = r.elements.at(0).str;
          std::vector<std::string> del{"UNLINK"};
          for (const auto& k : r.elements.at(1).elements) del.push_back(k.str);
          if (del.size() > 1) s.backend->command(del);
        } while (cursor != "0");
      } catch (const std::exception&) {
        // a throwaway server: leftovers are harmless
      }
    }
  }
  static std::string name() { return "redis"; }
  std::unique_ptr<jobq::RedisBackend, void (*)(jobq::RedisBackend*)> make() {
    auto prefix = "jobqbench" + random_suffix();
    auto backend = std::make_unique<jobq::RedisBackend>(url, jobq::RedisOptions{.prefix = prefix});
    stores.push_back({std::move(prefix), std::move(backend)});
    return {stores.back().backend.get(), [](jobq::RedisBackend*) {}};
  }
};
#endif

/// Calls fn(target) with the target for `backend`; throws for a backend not built in.
template <class Fn>
int dispatch(const std::string& backend, const std::string& url, Fn&& fn) {
  if (backend == "memory") {
    MemoryTarget t;
    fn(t);
    return 0;
  }
#ifdef JOBQ_BENCH_SQLITE
  if (backend == "sqlite") {
    SqliteTarget t{url};
    fn(t);
    return 0;
  }
#endif
#ifdef JOBQ_BENCH_POSTGRES
  if (backend == "postgres") {
    PostgresTarget t{url};
    fn(t);
    return 0;
  }
#endif
#ifdef JOBQ_BENCH_REDIS
  if (backend == "redis") {
    RedisTarget t{url};
    fn(t);
    return 0;
  }
#endif
  (void)url;
  throw std::invalid_argument("backend '" + backend + "' is unknown or not built into this binary");
}

}  // namespace bench
