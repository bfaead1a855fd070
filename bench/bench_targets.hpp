#pragma once
// One "target" per backend: make() returns a fresh, empty store (a new file, schema or key
// prefix), so every repetition starts from the same state. Shared by jobq-bench and the
// Google Benchmark micro-benchmarks.
//
// For jobq-bench's W6 and --processes, the server and file targets also have: id() (the last
// made store's file, schema or prefix), open(id) (another handle on that store, for a child
// process; not cleaned up by this target), size(id) (what the store takes on disk or in the
// server, as JSON) and conflicts() (server-wide counters of failed transactions, where there
// are any).
#include <chrono>
#include <filesystem>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

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
  static std::string id() { return ""; }
  static std::unique_ptr<jobq::MemoryBackend> open(const std::string&) {
    throw std::invalid_argument("memory: a store cannot be shared across processes");
  }
  static nlohmann::json size(const std::string&) { return nlohmann::json::object(); }  // nothing outside the process
  static nlohmann::json conflicts() { return nlohmann::json::object(); }
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
  std::string id() const { return files.back().string(); }
  static std::unique_ptr<jobq::SqliteBackend> open(const std::string& path) {
    return std::make_unique<jobq::SqliteBackend>(path);
  }
  /// The database file and its WAL, in bytes.
  static nlohmann::json size(const std::string& path) {
    const auto bytes = [](const std::string& f) -> std::uintmax_t {
      std::error_code ec;
      const auto n = std::filesystem::file_size(f, ec);
      return ec ? 0 : n;
    };
    return {{"file_bytes", bytes(path)}, {"wal_bytes", bytes(path + "-wal")}};
  }
  static nlohmann::json conflicts() { return nlohmann::json::object(); }  // busy waits are not counted
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
    return open(schemas.back());
  }
  std::string id() const { return schemas.back(); }
  std::unique_ptr<jobq::PostgresBackend> open(const std::string& schema) const {
    return std::make_unique<jobq::PostgresBackend>(url, jobq::PostgresOptions{.schema = schema, .pool_size = 8});
  }
  /// The schema's tables with their indexes and TOAST (pg_total_relation_size), the indexes
  /// alone, and the statistics collector's live and dead tuples and autovacuum runs. Waits
  /// 1.5 s first: a server process reports its counts at most once a second.
  nlohmann::json size(const std::string& schema) const {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    return query_row(
        "SELECT coalesce(sum(pg_total_relation_size(relid)), 0), coalesce(sum(pg_indexes_size(relid)), 0), "
        "coalesce(sum(n_live_tup), 0), coalesce(sum(n_dead_tup), 0), coalesce(sum(autovacuum_count), 0) "
        "FROM pg_stat_user_tables WHERE schemaname = $1",
        schema, {"total_bytes", "index_bytes", "live_tuples", "dead_tuples", "autovacuums"});
  }
  /// This database's rolled-back transactions and deadlocks (pg_stat_database): server-wide,
  /// so other clients of the same database count too.
  nlohmann::json conflicts() const {
    return query_row("SELECT xact_rollback, deadlocks FROM pg_stat_database WHERE datname = $1",
                     "", {"xact_rollback", "deadlocks"});
  }

 private:
  // One row of integers; an empty `param` means the current database's name.
  nlohmann::json query_row(const char* sql, const std::string& param, std::vector<std::string> names) const {
    PGconn* c = PQconnectdb(url.c_str());
    nlohmann::json out = nlohmann::json::object();
    if (PQstatus(c) == CONNECTION_OK) {
      const std::string p = param.empty() ? PQdb(c) : param;
      const char* values[] = {p.c_str()};
      PGresult* r = PQexecParams(c, sql, 1, nullptr, values, nullptr, nullptr, 0);
      if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        for (int i = 0; i < static_cast<int>(names.size()); ++i) {
          out[names[static_cast<std::size_t>(i)]] = std::stoll(PQgetvalue(r, 0, i));
        }
      }
      PQclear(r);
    }
    PQfinish(c);
    return out;
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
  std::string id() const { return stores.back().prefix; }
  std::unique_ptr<jobq::RedisBackend, void (*)(jobq::RedisBackend*)> open(const std::string& prefix) const {
    return {new jobq::RedisBackend(url, jobq::RedisOptions{.prefix = prefix}), [](jobq::RedisBackend* b) { delete b; }};
  }
  /// The server's used_memory (INFO memory: server-wide, so earlier repetitions' stores, kept
  /// until the target goes, count too), and the keys under the store's prefix (SCAN) with
  /// their MEMORY USAGE summed.
  nlohmann::json size(const std::string& prefix) const {
    auto b = open(prefix);
    const auto info = b->command({"INFO", "memory"}).str;
    const auto at = info.find("used_memory:");
    long long used = at == std::string::npos ? -1 : std::stoll(info.substr(at + 12));
    long long keys = 0, bytes = 0;
    std::string cursor = "0";
    do {
      auto r = b->command({"SCAN", cursor, "MATCH", prefix + ":*", "COUNT", "1000"});
      cursor = r.elements.at(0).str;
      for (const auto& k : r.elements.at(1).elements) {
        ++keys;
        bytes += b->command({"MEMORY", "USAGE", k.str, "SAMPLES", "0"}).integer;  // every element
      }
    } while (cursor != "0");
    return {{"used_memory", used}, {"keys", keys}, {"prefix_bytes", bytes}};
  }
  static nlohmann::json conflicts() { return nlohmann::json::object(); }  // scripts run one at a time
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
