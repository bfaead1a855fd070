#pragma once

/// @file
/// jobq::open_backend(url): a backend chosen at run time from a URL, as an AnyBackend.
/// Built with whichever backends the build has (JOBQ_OPEN_WITH_SQLITE / _POSTGRES / _REDIS,
/// set by the jobq::open target); a URL of a backend the build lacks is refused clearly.

#include <memory>
#include <string>
#include <string_view>

#include "jobq/any_backend.hpp"
#include "jobq/error.hpp"
#include "jobq/memory.hpp"
#include "jobq/time.hpp"
#include "jobq/url.hpp"  // jobq::mask_url
#if JOBQ_OPEN_WITH_SQLITE
#include "jobq/sqlite.hpp"
#endif
#if JOBQ_OPEN_WITH_POSTGRES
#include "jobq/postgres.hpp"
#endif
#if JOBQ_OPEN_WITH_REDIS
#include "jobq/redis.hpp"
#endif

namespace jobq {

/// @brief Settings open_backend applies to whichever backend the URL names.
struct OpenOptions {
  ClockFn clock = system_clock();  ///< the backend's clock
  std::string postgres_schema{};   ///< PostgreSQL schema; empty = the backend's default ("jobq")
  std::string redis_prefix{};      ///< Redis key prefix; empty = the backend's default ("jobq")
  /// false: open only an existing store (SQLite file, PostgreSQL schema, Redis prefix) and
  /// create nothing; a missing one is a `not_found` error. `memory://` is always a new store.
  bool create = true;
};

/// @brief What a backend URL names, found without opening or connecting to anything.
struct BackendUrl {
  std::string kind;    ///< "memory", "sqlite", "postgres" or "redis"
  std::string target;  ///< sqlite: the file path; postgres, redis: the URL as given; memory: empty
};

/// @brief Parses a backend URL as open_backend does (see there), without opening it. Throws
/// InvalidArgument, with the password masked, for every URL open_backend refuses before
/// opening (whichever backends this build has: a URL of a missing backend parses fine here).
inline BackendUrl parse_backend_url(std::string_view url) {
  const auto masked = mask_url(url);
  const auto starts = [&](std::string_view p) { return url.substr(0, p.size()) == p; };
  if (url == "memory://" || url == "memory:") return {"memory", {}};
  if (starts("sqlite:")) {
    if (!starts("sqlite://")) {
      throw InvalidArgument("backend URL '" + masked +
                            "' is malformed: use sqlite:///absolute/path.db or sqlite://relative/path.db");
    }
    std::string path(url.substr(9));
    if (path.empty() || path == "/") throw InvalidArgument("backend URL '" + masked + "' names no database file");
    if (path.find_first_of("?#") != std::string::npos) {
      throw InvalidArgument("backend URL '" + masked + "': query parameters are not supported for sqlite");
    }
    return {"sqlite", std::move(path)};
  }
  if (starts("postgresql://") || starts("postgres://")) return {"postgres", std::string(url)};
  if (starts("redis://") || starts("rediss://")) return {"redis", std::string(url)};
  throw InvalidArgument("backend URL '" + masked +
                        "' is not supported: expected memory://, sqlite:///path.db, postgresql://..., "
                        "or redis://host:port/db");
}

/// @brief Opens the backend a URL names:
/// `memory://` (a fresh in-process store), `sqlite:///abs/path.db` or `sqlite://relative.db`,
/// `postgresql://…` or `postgres://…` (a libpq URI), `redis://[user:password@]host:port/db`.
/// Throws InvalidArgument for any other URL (or a backend this build lacks), and the backend's
/// own errors when it cannot connect. Messages never contain the password.
inline AnyBackend open_backend(std::string_view url, const OpenOptions& options = {}) {
  const auto parsed = parse_backend_url(url);
  [[maybe_unused]] const auto missing = [&](const char* what, const char* option) {
    return InvalidArgument(std::string("backend URL '") + mask_url(url) + "' needs the " + what +
                           " backend, which this build of jobq does not include (configure with " +
                           option + "=ON)");
  };
  if (parsed.kind == "memory") {
    return AnyBackend(std::make_unique<MemoryBackend>(MemoryOptions{options.clock}), "memory");
  }
  if (parsed.kind == "sqlite") {
#if JOBQ_OPEN_WITH_SQLITE
    SqliteOptions o;
    o.clock = options.clock;
    o.create = options.create;
    return AnyBackend(std::make_unique<SqliteBackend>(parsed.target, std::move(o)), "sqlite");
#else
    throw missing("SQLite", "JOBQ_WITH_SQLITE");
#endif
  }
  if (parsed.kind == "postgres") {
#if JOBQ_OPEN_WITH_POSTGRES
    PostgresOptions o;
    o.clock = options.clock;
    o.create = options.create;
    if (!options.postgres_schema.empty()) o.schema = options.postgres_schema;
    return AnyBackend(std::make_unique<PostgresBackend>(parsed.target, std::move(o)), "postgres");
#else
    throw missing("PostgreSQL", "JOBQ_WITH_POSTGRES");
#endif
  }
#if JOBQ_OPEN_WITH_REDIS
  RedisOptions o;
  o.clock = options.clock;
  o.create = options.create;
  if (!options.redis_prefix.empty()) o.prefix = options.redis_prefix;
  return AnyBackend(std::make_unique<RedisBackend>(parsed.target, std::move(o)), "redis");
#else
  throw missing("Redis", "JOBQ_WITH_REDIS");
#endif
}

}  // namespace jobq
