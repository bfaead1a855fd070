#pragma once

#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "jobq/backend.hpp"
#include "jobq/error.hpp"
#include "jobq/job.hpp"
#include "jobq/time.hpp"

namespace jobq {

/// @brief SQLite's `PRAGMA synchronous` levels (see SqliteOptions::synchronous).
enum class SqliteSynchronous { off, normal, full, extra };

/// @brief Options of SqliteBackend.
struct SqliteOptions {
  ClockFn clock = system_clock();  ///< where time comes from (tests pass a ManualClock)
  /// How long a write waits for another connection's (usually another process's) write lock
  /// before it fails with a `conflict` SqliteError ("database is locked").
  Millis busy_timeout{5'000};
  /// How often wait_for_work looks at the file for jobs that other processes enqueued (or that
  /// came due); enqueues in this process wake waiters at once without it.
  Millis poll_interval{100};
  /// `normal` (default): in WAL mode every commit is atomic and the file is never corrupted,
  /// but the last transactions before a power loss or OS crash may roll back (a process crash
  /// loses nothing). `full`: fsync on every commit, durable across power loss, slower.
  SqliteSynchronous synchronous = SqliteSynchronous::normal;
  /// Reader connections kept open between reads (get, list, counts, polling).
  std::size_t max_idle_readers = 4;
};

/// @brief An error reported by SQLite, keeping its (extended) result code.
class SqliteError : public Error {
 public:
  /// @brief An error of a category with its message and SQLite's result code.
  SqliteError(ErrorCategory category, const std::string& message, int code = SQLITE_ERROR)
      : Error(category, message), code_(code) {}

  /// @brief SQLite's primary result code (SQLITE_BUSY, SQLITE_NOTADB, ...).
  [[nodiscard]] int code() const noexcept { return code_ & 0xff; }
  /// @brief SQLite's extended result code (SQLITE_BUSY_TIMEOUT, SQLITE_IOERR_WRITE, ...).
  [[nodiscard]] int extended_code() const noexcept { return code_; }

 private:
  int code_;
};

class SqliteBackend;

namespace detail::sqlite {

/// @brief How an SQLite result code maps onto jobq's error categories.
inline ErrorCategory category_of(int code) noexcept {
  switch (code & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return ErrorCategory::conflict;  // another connection holds the lock
    case SQLITE_CANTOPEN: return ErrorCategory::connection;
    case SQLITE_NOTADB: return ErrorCategory::invalid_argument;
    default: return ErrorCategory::backend;
  }
}

/// @brief Builds the SqliteError for a failed call on `db` (nullptr: only the code is known).
inline SqliteError error_from(sqlite3* db, int code, std::string_view what) {
  std::string msg = "sqlite: ";
  msg += what;
  msg += ": ";
  msg += db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(code);
  const int primary = code & 0xff;
  if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED) {
    msg += " (another connection held the lock for longer than the busy timeout)";
  } else if (primary == SQLITE_NOTADB) {
    msg += " (the file exists but is not an SQLite database)";
  }
  return SqliteError(category_of(code), msg, code);
}

/// @brief One step in the schema's history; applied in order, each recorded in
/// jobq_schema_version so re-opening an older file upgrades it.
struct Migration {
  int version;
  const char* description;
  const char* sql;
};

/// @brief Every migration, oldest first. Append only: never edit one that has shipped.
inline std::span<const Migration> migrations() {
  static constexpr Migration all[] = {
      {1, "jobs table",
       R"sql(
CREATE TABLE jobq_jobs (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids are never reused after prune
  queue         TEXT    NOT NULL,
  name          TEXT    NOT NULL,
  payload       TEXT    NOT NULL,                   -- JSON
  state         TEXT    NOT NULL CHECK (state IN ('queued','active','completed','dead','cancelled')),
  priority      INTEGER NOT NULL DEFAULT 0,
  attempts      INTEGER NOT NULL DEFAULT 0,
  max_attempts  INTEGER NOT NULL,
  run_at        INTEGER NOT NULL,                   -- epoch ms, like every time below
  created_at    INTEGER NOT NULL,
  finished_at   INTEGER,
  lease_until   INTEGER,
  lease_token   TEXT,
  backoff       TEXT    NOT NULL,                   -- JSON (Backoff::to_json)
  timeout_ms    INTEGER NOT NULL DEFAULT 0,
  unique_key    TEXT,                               -- NULL: not unique
  unique_for_ms INTEGER NOT NULL DEFAULT 0,
  result        TEXT,                               -- JSON, NULL until completed
  errors        TEXT    NOT NULL DEFAULT '[]'       -- JSON array (errors_to_json)
);
-- claim: walked in claim order within one queue, holding only queued jobs.
CREATE INDEX jobq_jobs_ready ON jobq_jobs (queue, priority DESC, run_at, id) WHERE state = 'queued';
-- recover_expired.
CREATE INDEX jobq_jobs_leases ON jobq_jobs (lease_until) WHERE state = 'active';
-- enqueue's unique-key lookup.
CREATE INDEX jobq_jobs_unique ON jobq_jobs (queue, unique_key) WHERE unique_key IS NOT NULL;
-- list.
CREATE INDEX jobq_jobs_by_state ON jobq_jobs (queue, state, id);
)sql"},
      {2, "paused queues, progress, due and prune indexes",
       R"sql(
CREATE TABLE jobq_queues (
  name   TEXT PRIMARY KEY,
  paused INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
ALTER TABLE jobq_jobs ADD COLUMN progress INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobq_jobs ADD COLUMN progress_message TEXT NOT NULL DEFAULT '';
-- wait_for_work: the earliest run_at of a queue in O(log n).
CREATE INDEX jobq_jobs_due ON jobq_jobs (queue, run_at) WHERE state = 'queued';
-- prune.
CREATE INDEX jobq_jobs_finished ON jobq_jobs (queue, state, finished_at) WHERE finished_at IS NOT NULL;
)sql"},
      {3, "jobs per queue and state, kept by triggers",
       R"sql(
-- counts() in O(1) instead of counting index entries. Triggers, not backend code, keep it, so
-- transactional enqueues on callers' connections and hand edits stay counted too.
CREATE TABLE jobq_counts (
  queue TEXT    NOT NULL,
  state TEXT    NOT NULL,
  n     INTEGER NOT NULL,
  PRIMARY KEY (queue, state)
) WITHOUT ROWID;
INSERT INTO jobq_counts (queue, state, n)
  SELECT queue, state, count(*) FROM jobq_jobs GROUP BY queue, state;
CREATE TRIGGER jobq_jobs_counts_insert AFTER INSERT ON jobq_jobs BEGIN
  INSERT INTO jobq_counts (queue, state, n) VALUES (NEW.queue, NEW.state, 1)
    ON CONFLICT (queue, state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER jobq_jobs_counts_delete AFTER DELETE ON jobq_jobs BEGIN
  UPDATE jobq_counts SET n = n - 1 WHERE queue = OLD.queue AND state = OLD.state;
END;
CREATE TRIGGER jobq_jobs_counts_update AFTER UPDATE OF queue, state ON jobq_jobs
  WHEN OLD.queue IS NOT NEW.queue OR OLD.state IS NOT NEW.state BEGIN
  UPDATE jobq_counts SET n = n - 1 WHERE queue = OLD.queue AND state = OLD.state;
  INSERT INTO jobq_counts (queue, state, n) VALUES (NEW.queue, NEW.state, 1)
    ON CONFLICT (queue, state) DO UPDATE SET n = n + 1;
END;
)sql"},
  };
  return all;
}

/// @brief The schema version this header writes and understands.
inline int latest_schema_version() { return migrations().back().version; }

/// @brief A prepared statement in use: binds, steps, reads columns, and resets on destruction
/// (or finalizes, when it owns a one-off statement on a caller's connection).
class Stmt {
 public:
  /// @brief Wraps `stmt` of `db`; `what` (a string literal) names the operation in errors.
  Stmt(sqlite3* db, sqlite3_stmt* stmt, std::string_view what, bool owned) noexcept
      : db_(db), stmt_(stmt), what_(what), owned_(owned) {}
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  Stmt(Stmt&& o) noexcept
      : db_(o.db_), stmt_(std::exchange(o.stmt_, nullptr)), what_(o.what_), owned_(o.owned_) {}
  Stmt& operator=(Stmt&&) = delete;
  ~Stmt() {
    if (stmt_ == nullptr) return;
    if (owned_) {
      sqlite3_finalize(stmt_);
    } else {
      sqlite3_reset(stmt_);
      sqlite3_clear_bindings(stmt_);
    }
  }

  /// @brief Binds parameter ?i (1-based); the overloads below bind text, NULL or an optional.
  Stmt& bind(int i, std::int64_t v) { return check(sqlite3_bind_int64(stmt_, i, v)); }
  Stmt& bind(int i, int v) { return check(sqlite3_bind_int64(stmt_, i, v)); }
  Stmt& bind(int i, std::string_view v) {
    return check(sqlite3_bind_text64(stmt_, i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
  }
  Stmt& bind(int i, const char* v) { return bind(i, std::string_view(v)); }
  Stmt& bind(int i, const std::string& v) { return bind(i, std::string_view(v)); }
  Stmt& bind_null(int i) { return check(sqlite3_bind_null(stmt_, i)); }
  template <class T>
  Stmt& bind(int i, const std::optional<T>& v) {
    return v ? bind(i, *v) : bind_null(i);
  }

  /// @brief Runs one step: true when a row is available, false when done.
  bool step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw error_from(db_, sqlite3_extended_errcode(db_), what_);
  }

  /// @brief Steps to the end (a statement without rows); returns the rows changed.
  int run() {
    while (step()) {
    }
    return sqlite3_changes(db_);
  }

  /// @brief Resets the statement early (its RETURNING rows all read), keeping it prepared.
  void reset() { sqlite3_reset(stmt_); }

  /// @brief Column readers for the current row (0-based).
  [[nodiscard]] bool is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  [[nodiscard]] std::int64_t integer(int col) const { return sqlite3_column_int64(stmt_, col); }
  [[nodiscard]] std::string text(int col) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
    return p == nullptr ? std::string() : std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, col)));
  }

 private:
  Stmt& check(int rc) {
    if (rc != SQLITE_OK) throw error_from(db_, rc, what_);
    return *this;
  }

  sqlite3* db_;
  sqlite3_stmt* stmt_;
  std::string_view what_;  // always a string literal
  bool owned_;
};

/// @brief Prepares a one-off statement on a connection jobq does not own.
inline Stmt prepare_once(sqlite3* db, std::string_view sql, std::string_view what) {
  sqlite3_stmt* s = nullptr;
  const int rc = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &s, nullptr);
  if (rc != SQLITE_OK) {
    auto err = error_from(db, rc, what);
    sqlite3_finalize(s);
    throw err;
  }
  return Stmt(db, s, what, true);
}

/// @brief One open connection with its prepared statements (prepared once, kept by SQL text).
/// Used by one thread at a time, hence SQLITE_OPEN_NOMUTEX.
class Connection {
 public:
  /// @brief Opens `path` in WAL mode with the options' busy timeout and synchronous level.
  Connection(const std::string& path, const SqliteOptions& opt) {
    const int rc = sqlite3_open_v2(path.c_str(), &db_,
                                   SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                   nullptr);
    if (rc != SQLITE_OK) {
      std::string msg = "sqlite: cannot open database '" + path + "': " +
                        (db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc));
      if ((rc & 0xff) == SQLITE_CANTOPEN) msg += " (does its directory exist and is it writable?)";
      sqlite3_close_v2(db_);
      db_ = nullptr;
      throw SqliteError(category_of(rc), msg, rc);
    }
    try {
      sqlite3_extended_result_codes(db_, 1);
      sqlite3_busy_timeout(db_, static_cast<int>(std::min<Millis::rep>(opt.busy_timeout.count(), INT32_MAX)));
      // The first statement reads the header: a file that is not a database fails here.
      std::string mode;
      {
        auto s = prepare("PRAGMA journal_mode = WAL", "open database: set WAL journal mode");
        if (s.step()) mode = s.text(0);
      }
      if (mode != "wal") {
        throw SqliteError(ErrorCategory::backend,
                          "sqlite: '" + path + "' could not be put in WAL journal mode (got '" +
                              mode + "'); jobq needs WAL for concurrent readers and processes");
      }
      static constexpr const char* sync[] = {"PRAGMA synchronous = OFF", "PRAGMA synchronous = NORMAL",
                                             "PRAGMA synchronous = FULL", "PRAGMA synchronous = EXTRA"};
      exec(sync[static_cast<int>(opt.synchronous)], "set synchronous");
      // RETURNING and IN (subquery) build small ephemeral tables; on disk (Debian's default)
      // they cost a temp file per claim, about 10x the claim itself.
      exec("PRAGMA temp_store = MEMORY", "set temp_store");
    } catch (const SqliteError& e) {
      close();
      if (e.code() == SQLITE_NOTADB || e.code() == SQLITE_BUSY) {
        throw SqliteError(e.category(), std::string(e.what()) + " [database '" + path + "']", e.extended_code());
      }
      throw;
    } catch (...) {
      close();
      throw;
    }
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() { close(); }

  /// @brief The raw handle.
  [[nodiscard]] sqlite3* handle() const noexcept { return db_; }

  /// @brief The cached statement for `sql`, prepared on first use.
  Stmt query(const std::string& sql, std::string_view what) {
    auto it = cache_.find(sql);
    if (it == cache_.end()) {
      sqlite3_stmt* s = nullptr;
      const int rc = sqlite3_prepare_v3(db_, sql.c_str(), static_cast<int>(sql.size()),
                                        SQLITE_PREPARE_PERSISTENT, &s, nullptr);
      if (rc != SQLITE_OK) {
        auto err = error_from(db_, rc, what);
        sqlite3_finalize(s);
        throw err;
      }
      it = cache_.emplace(sql, s).first;
    }
    return Stmt(db_, it->second, what, false);
  }

  /// @brief Runs SQL without keeping the statement (schema setup, migrations).
  void exec(const char* sql, std::string_view what) {
    char* err = nullptr;
    const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
    sqlite3_free(err);
    if (rc != SQLITE_OK) throw error_from(db_, sqlite3_extended_errcode(db_), what);
  }

  /// @brief Rolls back an open transaction, if any; never throws (used on error paths).
  void rollback() noexcept {
    if (db_ != nullptr && sqlite3_get_autocommit(db_) == 0) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    }
  }

 private:
  Stmt prepare(const char* sql, std::string_view what) {
    return prepare_once(db_, sql, what);
  }

  void close() noexcept {
    for (auto& [sql, s] : cache_) sqlite3_finalize(s);
    cache_.clear();
    if (db_ != nullptr) sqlite3_close_v2(db_);
    db_ = nullptr;
  }

  sqlite3* db_ = nullptr;
  std::unordered_map<std::string, sqlite3_stmt*> cache_;
};

// Column list shared by every statement that returns whole jobs; decode() reads this order.
inline constexpr const char* job_columns =
    "id, queue, name, payload, state, priority, attempts, max_attempts, run_at, created_at, "
    "finished_at, lease_until, lease_token, backoff, timeout_ms, unique_key, unique_for_ms, "
    "result, errors, progress, progress_message";

/// @brief Parses a stored JSON column; a malformed value names the job and the column.
inline nlohmann::json parse_column(const std::string& text, JobId id, const char* column) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) {
    throw SqliteError(ErrorCategory::backend, "sqlite: job " + std::to_string(id) + " is corrupted: its " +
                                                  column + " is not valid JSON");
  }
  return j;
}

/// @brief The job in the current row (selected with job_columns).
inline JobRecord decode(const Stmt& s) {
  JobRecord r;
  r.id = s.integer(0);
  r.queue = s.text(1);
  r.name = s.text(2);
  r.payload = parse_column(s.text(3), r.id, "payload");
  try {
    r.state = job_state_from_string(s.text(4));
    r.backoff = Backoff::from_json(parse_column(s.text(13), r.id, "backoff"));
    if (!s.is_null(17)) r.result = parse_column(s.text(17), r.id, "result");
    r.errors = errors_from_json(parse_column(s.text(18), r.id, "errors"));
  } catch (const SqliteError&) {
    throw;
  } catch (const Error& e) {
    throw SqliteError(ErrorCategory::backend,
                      "sqlite: job " + std::to_string(r.id) + " is corrupted: " + e.what());
  }
  r.priority = static_cast<int>(s.integer(5));
  r.attempts = static_cast<int>(s.integer(6));
  r.max_attempts = static_cast<int>(s.integer(7));
  r.run_at = from_epoch_ms(s.integer(8));
  r.created_at = from_epoch_ms(s.integer(9));
  if (!s.is_null(10)) r.finished_at = from_epoch_ms(s.integer(10));
  if (!s.is_null(11)) r.lease_until = from_epoch_ms(s.integer(11));
  r.lease_token = s.text(12);
  r.timeout = Millis{s.integer(14)};
  r.unique_key = s.text(15);
  r.unique_for = Millis{s.integer(16)};
  r.progress = static_cast<int>(s.integer(19));
  r.progress_message = s.text(20);
  return r;
}

/// @brief JSON text for storage; invalid UTF-8 in strings is refused, before anything is written.
inline std::string dump_json(const nlohmann::json& j, const char* what) {
  try {
    return j.dump();
  } catch (const nlohmann::json::exception& e) {
    throw InvalidArgument(std::string(what) + " cannot be stored as JSON: " + e.what());
  }
}

// Statements (one place, with the index each relies on).

// jobq_jobs_unique. A key is held by a queued or active job, or a completed one within its
// unique_for window; the newest holder wins if a redrive made two.
inline constexpr const char* sql_find_unique =
    "SELECT id FROM jobq_jobs WHERE queue = ?1 AND unique_key = ?2 AND "
    "(state IN ('queued', 'active') OR (state = 'completed' AND finished_at + unique_for_ms > ?3)) "
    "ORDER BY id DESC LIMIT 1";

inline constexpr const char* sql_insert =
    "INSERT INTO jobq_jobs (queue, name, payload, state, priority, max_attempts, run_at, created_at, "
    "backoff, timeout_ms, unique_key, unique_for_ms) "
    "VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) RETURNING id";

// Primary key; only the holder of the current lease token matches.
inline constexpr const char* sql_complete =
    "UPDATE jobq_jobs SET state = 'completed', finished_at = ?3, result = ?4, lease_token = NULL, "
    "lease_until = NULL WHERE id = ?1 AND state = 'active' AND lease_token = ?2";

// The error is passed as JSON text (json(?4)) so its string is escaped and valid UTF-8.
inline constexpr const char* sql_fail =
    "UPDATE jobq_jobs SET "
    "errors = json_insert(errors, '$[#]', json_object('attempt', attempts, 'message', json(?4), 'at', ?3)), "
    "state = CASE WHEN ?5 IS NOT NULL AND attempts < max_attempts THEN 'queued' ELSE 'dead' END, "
    "run_at = CASE WHEN ?5 IS NOT NULL AND attempts < max_attempts THEN ?5 ELSE run_at END, "
    "finished_at = CASE WHEN ?5 IS NOT NULL AND attempts < max_attempts THEN NULL ELSE ?3 END, "
    "lease_token = NULL, lease_until = NULL "
    "WHERE id = ?1 AND state = 'active' AND lease_token = ?2 RETURNING state";

inline constexpr const char* sql_extend =
    "UPDATE jobq_jobs SET lease_until = ?3 WHERE id = ?1 AND state = 'active' AND lease_token = ?2";

inline constexpr const char* sql_release =
    "UPDATE jobq_jobs SET state = 'queued', run_at = ?3, attempts = attempts - 1, "
    "lease_token = NULL, lease_until = NULL WHERE id = ?1 AND state = 'active' AND lease_token = ?2";

inline constexpr const char* sql_progress =
    "UPDATE jobq_jobs SET progress = ?3, progress_message = ?4 "
    "WHERE id = ?1 AND state = 'active' AND lease_token = ?2";

// jobq_jobs_leases.
inline constexpr const char* sql_recover =
    "UPDATE jobq_jobs SET "
    "errors = json_insert(errors, '$[#]', json_object('attempt', attempts, "
    "'message', 'lease expired (worker lost or too slow)', 'at', ?1)), "
    "state = CASE WHEN attempts < max_attempts THEN 'queued' ELSE 'dead' END, "
    "run_at = CASE WHEN attempts < max_attempts THEN ?1 ELSE run_at END, "
    "finished_at = CASE WHEN attempts < max_attempts THEN NULL ELSE ?1 END, "
    "lease_token = NULL, lease_until = NULL "
    "WHERE state = 'active' AND lease_until <= ?1 RETURNING state";

// A claimed job whose stored row cannot be decoded: dead at once, so it never blocks a queue.
// The stored columns are left as they are for inspection; errors restarts if it is the broken one.
inline constexpr const char* sql_kill_corrupt =
    "UPDATE jobq_jobs SET "
    "errors = json_insert(CASE WHEN json_valid(errors) AND json_type(errors) = 'array' THEN errors "
    "ELSE '[]' END, '$[#]', json_object('attempt', attempts, 'message', json(?3), 'at', ?2)), "
    "state = 'dead', finished_at = ?2, lease_token = NULL, lease_until = NULL WHERE id = ?1";

inline constexpr const char* sql_cancel =
    "UPDATE jobq_jobs SET state = 'cancelled', finished_at = ?2 WHERE id = ?1 AND state = 'queued'";

inline constexpr const char* sql_redrive =
    "UPDATE jobq_jobs SET state = 'queued', run_at = ?2, attempts = 0, finished_at = NULL "
    "WHERE id = ?1 AND state = 'dead'";

inline constexpr const char* sql_set_paused =
    "INSERT INTO jobq_queues (name, paused) VALUES (?1, ?2) "
    "ON CONFLICT (name) DO UPDATE SET paused = excluded.paused";

inline constexpr const char* sql_is_paused = "SELECT paused FROM jobq_queues WHERE name = ?1";
// Queues with jobs (jobq_counts) or a paused flag (jobq_queues).
inline constexpr const char* sql_queues =
    "SELECT queue FROM jobq_counts WHERE n > 0 UNION SELECT name FROM jobq_queues ORDER BY 1";

// jobq_counts (migration 3), kept by triggers.
inline constexpr const char* sql_counts = "SELECT state, n FROM jobq_counts WHERE queue = ?1";

// jobq_jobs_finished.
inline constexpr const char* sql_prune =
    "DELETE FROM jobq_jobs WHERE queue = ?1 AND state = ?2 AND finished_at IS NOT NULL "
    "AND finished_at < ?3";

// jobq_jobs_due; the paused test does not depend on the row, so SQLite evaluates it once.
inline constexpr const char* sql_next_due =
    "SELECT min(run_at) FROM jobq_jobs WHERE state = 'queued' AND queue = ?1 "
    "AND NOT EXISTS (SELECT 1 FROM jobq_queues WHERE name = ?1 AND paused = 1)";

/// @brief The claim statement for `n` queues: one UPDATE … RETURNING. Each queue is its own
/// arm walking jobq_jobs_ready in claim order and stopping after ?2 rows, so a batch costs
/// O(limit · queues) index steps however many jobs wait (ready ones; delayed jobs of a higher
/// priority are stepped over); the arms are then merged. INDEXED BY because, without ANALYZE
/// statistics, the planner prefers the run_at range of jobq_jobs_due and sorts every ready job.
inline std::string claim_sql(std::size_t n) {
  static constexpr const char* head =
      "UPDATE jobq_jobs SET state = 'active', attempts = attempts + 1, "
      "lease_token = lower(hex(randomblob(16))), lease_until = ?3 WHERE id IN (";
  if (n == 1) {  // the common case, without the merge
    return std::string(head) +
           "SELECT id FROM jobq_jobs INDEXED BY jobq_jobs_ready WHERE state = 'queued' AND queue = ?4 "
           "AND run_at <= ?1 AND NOT EXISTS (SELECT 1 FROM jobq_queues WHERE name = ?4 AND paused = 1) "
           "ORDER BY priority DESC, run_at, id LIMIT ?2) RETURNING " + job_columns;
  }
  std::string arms;
  for (std::size_t i = 0; i < n; ++i) {
    const auto p = "?" + std::to_string(i + 4);
    if (i > 0) arms += " UNION ALL ";
    arms += "SELECT * FROM (SELECT id, priority, run_at FROM jobq_jobs INDEXED BY jobq_jobs_ready "
            "WHERE state = 'queued' AND queue = " +
            p + " AND run_at <= ?1 AND NOT EXISTS (SELECT 1 FROM jobq_queues WHERE name = " + p +
            " AND paused = 1) ORDER BY priority DESC, run_at, id LIMIT ?2)";
  }
  return std::string(head) + "SELECT id FROM (" + arms +
         ") ORDER BY priority DESC, run_at, id LIMIT ?2) RETURNING " + job_columns;
}

}  // namespace detail::sqlite

/// @brief Backend on one SQLite file in WAL mode, shared by the threads of a process and by any
/// number of processes on the same host.
///
/// Connections: one writer connection, used under a mutex, and a small pool of reader
/// connections. SQLite admits one writer per file at a time anyway; serialising this process's
/// writers on a mutex means threads never meet in SQLite's sleeping busy handler (which backs off
/// in steps of up to 100 ms), so only other processes ever wait on the file lock. WAL readers do
/// not block the writer, so reads (get, list, counts, the wait_for_work poll) use pooled
/// connections of their own. Every statement is prepared once per connection.
class SqliteBackend {
 public:
  /// @brief Opens (or creates) the database at `path` and brings its schema up to date.
  explicit SqliteBackend(std::string path, SqliteOptions options = {})
      : path_(std::move(path)), opt_(std::move(options)) {
    if (path_.empty() || path_ == ":memory:" || path_.starts_with("file:")) {
      throw InvalidArgument(
          "sqlite: path must name a database file (got '" + path_ +
          "'); an in-memory database is private to one connection, use MemoryBackend instead");
    }
    if (!opt_.clock) throw InvalidArgument("sqlite: options.clock is empty");
    if (opt_.poll_interval <= Millis{0}) throw InvalidArgument("sqlite: poll_interval must be positive");
    if (opt_.busy_timeout < Millis{0}) throw InvalidArgument("sqlite: busy_timeout must not be negative");
    writer_ = std::make_unique<detail::sqlite::Connection>(path_, opt_);
    if (const char* f = sqlite3_db_filename(writer_->handle(), "main")) db_file_ = f;
    migrate();
  }

  SqliteBackend(const SqliteBackend&) = delete;
  SqliteBackend& operator=(const SqliteBackend&) = delete;

  /// @brief The backend's clock.
  [[nodiscard]] TimePoint now() const { return opt_.clock(); }

  /// @brief The database file's path as given.
  [[nodiscard]] const std::string& path() const noexcept { return path_; }

  /// @brief The schema version of the open file (detail::sqlite::latest_schema_version() once open).
  int schema_version() {
    return read("read schema version", [](detail::sqlite::Connection& c) {
      auto s = c.query("SELECT coalesce(max(version), 0) FROM jobq_schema_version", "read schema version");
      return s.step() ? static_cast<int>(s.integer(0)) : 0;
    });
  }

  /// @brief Stores a job (or returns the holder of its unique key), in its own transaction.
  EnqueueResult enqueue(const NewJob& job) {
    auto r = enqueue_many(std::span<const NewJob>(&job, 1));
    return r.front();
  }

  /// @brief Stores many jobs in one transaction, all or nothing.
  std::vector<EnqueueResult> enqueue_many(std::span<const NewJob> jobs) {
    std::vector<Encoded> encoded;
    encoded.reserve(jobs.size());
    for (const auto& j : jobs) encoded.push_back(encode(j));  // before any write
    if (jobs.empty()) return {};
    bool wake = false;
    auto out = write("enqueue", [&](detail::sqlite::Connection& c) {
      const auto t = now();
      std::vector<EnqueueResult> res;
      res.reserve(jobs.size());
      for (std::size_t i = 0; i < jobs.size(); ++i) {
        res.push_back(insert(
            [&](const char* sql) { return c.query(sql, "enqueue"); }, jobs[i], encoded[i], t));
        wake = wake || (res.back().created && jobs[i].run_at.value_or(t) <= t);
      }
      return res;
    });
    if (wake) notify();
    return out;
  }

  /// @brief Transactional enqueue on the caller's own connection `db` (same database file),
  /// inside the caller's transaction if one is open: the job exists iff that transaction commits.
  /// Starts no transaction of its own inside the caller's (a savepoint makes the job's own
  /// statements all-or-nothing). The schema must already exist (open a SqliteBackend on the file
  /// first). In-process waiters are woken at once only when `db` was in autocommit mode; a job
  /// enqueued inside an open transaction is found by the next poll, or call notify() after commit.
  EnqueueResult enqueue(sqlite3* db, const NewJob& job) {
    if (db == nullptr) throw InvalidArgument("sqlite: enqueue on a null connection");
    const auto e = encode(job);
    const char* file = sqlite3_db_filename(db, "main");
    if (file == nullptr || std::string_view(file) != db_file_) {
      throw InvalidArgument(std::string("sqlite: transactional enqueue: the connection is on '") +
                            (file != nullptr ? file : "?") + "', not on this backend's database '" +
                            db_file_ + "'");
    }
    const bool autocommit = sqlite3_get_autocommit(db) != 0;
    const auto t = now();
    // Outside a transaction, BEGIN IMMEDIATE takes the write lock before the unique-key read, as
    // the backend's own writes do; inside one, the caller owns locking and a savepoint suffices.
    const char* begin = autocommit ? "BEGIN IMMEDIATE" : "SAVEPOINT jobq_enqueue";
    exec_on(db, begin, "transactional enqueue: begin");
    EnqueueResult r;
    try {
      r = insert(
          [&](const char* sql) {
            return detail::sqlite::prepare_once(db, sql, "transactional enqueue");
          },
          job, e, t);
      exec_on(db, autocommit ? "COMMIT" : "RELEASE jobq_enqueue", "transactional enqueue: commit");
    } catch (...) {
      if (autocommit) {
        if (sqlite3_get_autocommit(db) == 0) sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
      } else {
        sqlite3_exec(db, "ROLLBACK TO jobq_enqueue; RELEASE jobq_enqueue", nullptr, nullptr, nullptr);
      }
      throw;
    }
    if (autocommit && r.created && job.run_at.value_or(t) <= t) notify();
    return r;
  }

  /// @brief Wakes this process's wait_for_work callers (e.g. after committing a transaction
  /// that enqueued jobs through enqueue(sqlite3*, job)).
  void notify() {
    {
      std::lock_guard lock(wait_mutex_);
      ++generation_;
    }
    wait_cv_.notify_all();
  }

  /// @brief Leases up to req.limit ready jobs, best first across the queues: one
  /// UPDATE … RETURNING in a BEGIN IMMEDIATE transaction.
  ///
  /// A claimed row that cannot be decoded (say its payload is not valid JSON) is not returned:
  /// it is made dead in the same transaction with an error naming the problem, so it can never
  /// block its queue; its stored columns are kept for inspection and redrive after repair.
  std::vector<JobRecord> claim(const ClaimRequest& req) {
    std::vector<std::string> queues;
    for (const auto& q : req.queues) {
      validate_queue_name(q);
      if (std::find(queues.begin(), queues.end(), q) == queues.end()) queues.push_back(q);
    }
    if (queues.empty() || req.limit == 0) return {};
    const auto sql = detail::sqlite::claim_sql(queues.size());
    auto out = write("claim", [&](detail::sqlite::Connection& c) {
      const auto t = now();
      std::vector<JobRecord> jobs;
      std::vector<std::pair<JobId, std::string>> broken;
      {
        auto s = c.query(sql, "claim");
        s.bind(1, to_epoch_ms(t))
            .bind(2, static_cast<std::int64_t>(std::min<std::size_t>(req.limit, INT64_MAX)))
            .bind(3, to_epoch_ms(t + req.lease));
        for (std::size_t i = 0; i < queues.size(); ++i) s.bind(static_cast<int>(i + 4), queues[i]);
        while (s.step()) {
          try {
            jobs.push_back(detail::sqlite::decode(s));
          } catch (const Error& e) {
            broken.emplace_back(s.integer(0), e.what());
          }
        }
      }
      for (const auto& [id, why] : broken) {
        c.query(detail::sqlite::sql_kill_corrupt, "claim: mark corrupted job dead")
            .bind(1, id)
            .bind(2, to_epoch_ms(t))
            .bind(3, nlohmann::json(why).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace))
            .run();
      }
      return jobs;
    });
    // RETURNING hands rows back in no particular order.
    std::sort(out.begin(), out.end(), claims_before);
    return out;
  }

  /// @brief Records a success if the lease token is current.
  bool complete(JobId id, const std::string& token, const nlohmann::json& result) {
    Completion c{id, token, result};
    return complete_many(std::span<const Completion>(&c, 1)).front();
  }

  /// @brief Records many successes in one transaction; one bool per completion.
  std::vector<bool> complete_many(std::span<const Completion> completions) {
    std::vector<std::string> results;
    results.reserve(completions.size());
    for (const auto& c : completions) results.push_back(detail::sqlite::dump_json(c.result, "result"));
    if (completions.empty()) return {};
    return write("complete", [&](detail::sqlite::Connection& c) {
      const auto t = to_epoch_ms(now());
      std::vector<bool> out;
      out.reserve(completions.size());
      for (std::size_t i = 0; i < completions.size(); ++i) {
        const auto& done = completions[i];
        out.push_back(!done.lease_token.empty() &&
                      c.query(detail::sqlite::sql_complete, "complete")
                              .bind(1, done.id)
                              .bind(2, done.lease_token)
                              .bind(3, t)
                              .bind(4, results[i])
                              .run() == 1);
      }
      return out;
    });
  }

  /// @brief Records a failed attempt: retry at f.retry_at, or dead.
  FailOutcome fail(const Failure& f) {
    if (f.lease_token.empty()) return FailOutcome::rejected;
    const auto message =
        nlohmann::json(f.error).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    const auto [outcome, wake] = write("fail", [&](detail::sqlite::Connection& c) {
      const auto t = now();
      auto s = c.query(detail::sqlite::sql_fail, "fail");
      s.bind(1, f.id).bind(2, f.lease_token).bind(3, to_epoch_ms(t)).bind(4, message);
      if (f.retry_at) {
        s.bind(5, to_epoch_ms(*f.retry_at));
      } else {
        s.bind_null(5);
      }
      if (!s.step()) return std::pair{FailOutcome::rejected, false};
      const bool retried = s.text(0) == "queued";
      s.run();
      return std::pair{retried ? FailOutcome::retried : FailOutcome::dead, retried && *f.retry_at <= t};
    });
    if (wake) notify();
    return outcome;
  }

  /// @brief Heartbeat: pushes the lease deadline to now + lease.
  bool extend_lease(JobId id, const std::string& token, Millis lease) {
    if (token.empty()) return false;
    return write("extend lease", [&](detail::sqlite::Connection& c) {
      return c.query(detail::sqlite::sql_extend, "extend lease")
                 .bind(1, id)
                 .bind(2, token)
                 .bind(3, to_epoch_ms(now() + lease))
                 .run() == 1;
    });
  }

  /// @brief Gives a leased job back without counting the attempt.
  bool release(JobId id, const std::string& token) {
    if (token.empty()) return false;
    const bool ok = write("release", [&](detail::sqlite::Connection& c) {
      return c.query(detail::sqlite::sql_release, "release")
                 .bind(1, id)
                 .bind(2, token)
                 .bind(3, to_epoch_ms(now()))
                 .run() == 1;
    });
    if (ok) notify();
    return ok;
  }

  /// @brief Records progress (clamped to 0..100) of an active job.
  bool set_progress(JobId id, const std::string& token, int percent, const std::string& message) {
    if (token.empty()) return false;
    return write("set progress", [&](detail::sqlite::Connection& c) {
      return c.query(detail::sqlite::sql_progress, "set progress")
                 .bind(1, id)
                 .bind(2, token)
                 .bind(3, std::clamp(percent, 0, 100))
                 .bind(4, message)
                 .run() == 1;
    });
  }

  /// @brief Requeues (or kills, on the last attempt) every job whose lease has expired.
  Recovered recover_expired() {
    const auto r = write("recover expired leases", [&](detail::sqlite::Connection& c) {
      Recovered rec;
      auto s = c.query(detail::sqlite::sql_recover, "recover expired leases");
      s.bind(1, to_epoch_ms(now()));
      while (s.step()) (s.text(0) == "queued" ? rec.retried : rec.dead) += 1;
      return rec;
    });
    if (r.retried > 0) notify();
    return r;
  }

  /// @brief The job, if it exists. A row that cannot be decoded throws SqliteError naming it.
  std::optional<JobRecord> get(JobId id) {
    return read("get job", [&](detail::sqlite::Connection& c) -> std::optional<JobRecord> {
      auto s = c.query(std::string("SELECT ") + detail::sqlite::job_columns + " FROM jobq_jobs WHERE id = ?1",
                       "get job");
      s.bind(1, id);
      if (!s.step()) return std::nullopt;
      return detail::sqlite::decode(s);
    });
  }

  /// @brief Cancels a queued job.
  bool cancel(JobId id) {
    return write("cancel", [&](detail::sqlite::Connection& c) {
      return c.query(detail::sqlite::sql_cancel, "cancel").bind(1, id).bind(2, to_epoch_ms(now())).run() == 1;
    });
  }

  /// @brief Puts a dead job back in its queue with a fresh attempt budget (errors kept).
  bool redrive(JobId id) {
    const bool ok = write("redrive", [&](detail::sqlite::Connection& c) {
      return c.query(detail::sqlite::sql_redrive, "redrive").bind(1, id).bind(2, to_epoch_ms(now())).run() == 1;
    });
    if (ok) notify();
    return ok;
  }

  /// @brief Stops claims from a queue (kept in jobq_queues, so every process sees it).
  void pause(const std::string& queue) { set_paused(queue, true); }

  /// @brief Restores claims from a queue.
  void resume(const std::string& queue) {
    set_paused(queue, false);
    notify();
  }

  /// @brief Whether a queue is paused.
  bool is_paused(const std::string& queue) {
    validate_queue_name(queue);
    return read("is paused", [&](detail::sqlite::Connection& c) {
      auto s = c.query(detail::sqlite::sql_is_paused, "is paused");
      s.bind(1, queue);
      return s.step() && s.integer(0) != 0;
    });
  }

  /// @brief Every queue that holds jobs or was paused, sorted by name.
  std::vector<std::string> queues() {
    return read("queues", [&](detail::sqlite::Connection& c) {
      auto s = c.query(detail::sqlite::sql_queues, "queues");
      std::vector<std::string> out;
      while (s.step()) out.push_back(s.text(0));
      return out;
    });
  }

  /// @brief Jobs per state in a queue.
  Counts counts(const std::string& queue) {
    validate_queue_name(queue);
    return read("counts", [&](detail::sqlite::Connection& c) {
      Counts n;
      auto s = c.query(detail::sqlite::sql_counts, "counts");
      s.bind(1, queue);
      while (s.step()) {
        const auto v = s.integer(1);
        switch (job_state_from_string(s.text(0))) {
          case JobState::queued: n.queued = v; break;
          case JobState::active: n.active = v; break;
          case JobState::completed: n.completed = v; break;
          case JobState::dead: n.dead = v; break;
          case JobState::cancelled: n.cancelled = v; break;
        }
      }
      return n;
    });
  }

  /// @brief Deletes finished jobs older than the retention of their state.
  std::size_t prune(const std::string& queue, const Retention& retention) {
    validate_queue_name(queue);
    return write("prune", [&](detail::sqlite::Connection& c) {
      const auto t = now();
      std::size_t n = 0;
      const std::pair<JobState, std::optional<Millis>> rules[] = {
          {JobState::completed, retention.completed},
          {JobState::dead, retention.dead},
          {JobState::cancelled, retention.cancelled}};
      for (const auto& [state, keep] : rules) {
        if (!keep) continue;
        n += static_cast<std::size_t>(c.query(detail::sqlite::sql_prune, "prune")
                                          .bind(1, queue)
                                          .bind(2, to_string(state))
                                          .bind(3, to_epoch_ms(t - *keep))
                                          .run());
      }
      return n;
    });
  }

  /// @brief A page of a queue's jobs in one state, by id. A row that cannot be decoded throws
  /// SqliteError naming it.
  std::vector<JobRecord> list(const std::string& queue, JobState state, Page page) {
    validate_queue_name(queue);
    return read("list jobs", [&](detail::sqlite::Connection& c) {
      std::vector<JobRecord> out;
      auto s = c.query(std::string("SELECT ") + detail::sqlite::job_columns +
                           " FROM jobq_jobs WHERE queue = ?1 AND state = ?2 ORDER BY id LIMIT ?3 OFFSET ?4",
                       "list jobs");
      s.bind(1, queue)
          .bind(2, to_string(state))
          .bind(3, static_cast<std::int64_t>(std::min<std::size_t>(page.limit, INT64_MAX)))
          .bind(4, static_cast<std::int64_t>(std::min<std::size_t>(page.offset, INT64_MAX)));
      while (s.step()) out.push_back(detail::sqlite::decode(s));
      return out;
    });
  }

  /// @brief Sleeps until work may be ready in one of the queues, the timeout, or stop.
  ///
  /// An enqueue, retry, release, redrive, recovery or resume in this process wakes it at once.
  /// Work from other processes (and delayed jobs coming due) is found by looking at the file
  /// every poll_interval — a single indexed read per queue (jobq_jobs_due), no write lock.
  void wait_for_work(std::span<const std::string> queues, Millis timeout, std::stop_token stop) {
    using steady = std::chrono::steady_clock;
    const auto deadline = steady::now() + timeout;
    std::unique_lock lock(wait_mutex_);
    const auto seen = generation_;
    while (!stop.stop_requested()) {
      lock.unlock();
      const auto due = next_due(queues);  // nullopt: nothing queued (or an error: claim will say)
      lock.lock();
      if (generation_ != seen) return;
      auto slice = opt_.poll_interval;
      if (due) {
        const auto until_due = *due - now();
        if (until_due <= Millis{0}) return;
        slice = std::min(slice, until_due);
      }
      const auto left = deadline - steady::now();
      if (left <= steady::duration::zero()) return;
      if (wait_cv_.wait_for(lock, stop, std::min<steady::duration>(slice, left),
                            [&] { return generation_ != seen; })) {
        return;
      }
    }
  }

 private:
  struct Encoded {
    std::string payload;
    std::string backoff;
  };

  static Encoded encode(const NewJob& job) {
    validate(job);
    return {detail::sqlite::dump_json(job.payload, "payload"), job.backoff.to_json().dump()};
  }

  // Unique-key check then insert; the caller holds the write lock (BEGIN IMMEDIATE) or is in its
  // own transaction, so no other writer can slip in between.
  template <class Prepare>
  static EnqueueResult insert(Prepare&& prepare, const NewJob& job, const Encoded& e, TimePoint t) {
    if (!job.unique_key.empty()) {
      auto s = prepare(detail::sqlite::sql_find_unique);
      s.bind(1, job.queue).bind(2, job.unique_key).bind(3, to_epoch_ms(t));
      if (s.step()) return {s.integer(0), false};
    }
    auto s = prepare(detail::sqlite::sql_insert);
    s.bind(1, job.queue)
        .bind(2, job.name)
        .bind(3, e.payload)
        .bind(4, job.priority)
        .bind(5, job.max_attempts)
        .bind(6, to_epoch_ms(job.run_at.value_or(t)))
        .bind(7, to_epoch_ms(t))
        .bind(8, e.backoff)
        .bind(9, static_cast<std::int64_t>(job.timeout.count()))
        .bind(11, static_cast<std::int64_t>(job.unique_for.count()));
    if (job.unique_key.empty()) {
      s.bind_null(10);
    } else {
      s.bind(10, job.unique_key);
    }
    s.step();
    const JobId id = s.integer(0);
    s.run();
    return {id, true};
  }

  static void exec_on(sqlite3* db, const char* sql, std::string_view what) {
    const int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) throw detail::sqlite::error_from(db, sqlite3_extended_errcode(db), what);
  }

  // Runs f(connection) in a BEGIN IMMEDIATE transaction on the writer; rolls back if it throws.
  template <class F>
  auto write(std::string_view what, F&& f) -> std::invoke_result_t<F&, detail::sqlite::Connection&> {
    std::lock_guard lock(write_mutex_);
    auto& c = *writer_;
    c.query("BEGIN IMMEDIATE", what).run();
    try {
      if constexpr (std::is_void_v<decltype(f(c))>) {
        f(c);
        c.query("COMMIT", what).run();
      } else {
        auto r = f(c);
        c.query("COMMIT", what).run();
        return r;
      }
    } catch (...) {
      c.rollback();
      throw;
    }
  }

  // Runs f(connection) on a pooled reader connection.
  template <class F>
  auto read(std::string_view, F&& f) -> std::invoke_result_t<F&, detail::sqlite::Connection&> {
    std::unique_ptr<detail::sqlite::Connection> c;
    {
      std::lock_guard lock(pool_mutex_);
      if (!readers_.empty()) {
        c = std::move(readers_.back());
        readers_.pop_back();
      }
    }
    if (!c) c = std::make_unique<detail::sqlite::Connection>(path_, opt_);
    struct Return {
      SqliteBackend* self;
      std::unique_ptr<detail::sqlite::Connection>& c;
      ~Return() {
        c->rollback();
        std::lock_guard lock(self->pool_mutex_);
        if (self->readers_.size() < self->opt_.max_idle_readers) self->readers_.push_back(std::move(c));
      }
    } give_back{this, c};
    return f(*c);
  }

  void set_paused(const std::string& queue, bool paused) {
    validate_queue_name(queue);
    write("pause/resume", [&](detail::sqlite::Connection& c) {
      c.query(detail::sqlite::sql_set_paused, "pause/resume").bind(1, queue).bind(2, paused ? 1 : 0).run();
    });
  }

  // The earliest run_at of a queued job in the non-paused queues, if any.
  std::optional<TimePoint> next_due(std::span<const std::string> queues) {
    try {
      return read("poll for work", [&](detail::sqlite::Connection& c) {
        std::optional<TimePoint> due;
        for (const auto& q : queues) {
          auto s = c.query(detail::sqlite::sql_next_due, "poll for work");
          s.bind(1, q);
          if (s.step() && !s.is_null(0)) {
            const auto t = from_epoch_ms(s.integer(0));
            if (!due || t < *due) due = t;
          }
        }
        return due;
      });
    } catch (const Error&) {
      return std::nullopt;  // a hint only; the next claim reports the problem
    }
  }

  // Creates or upgrades the schema; refuses a file written by a newer jobq.
  void migrate() {
    namespace d = detail::sqlite;
    auto& c = *writer_;
    const auto current = [&] {
      auto has = c.query("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'jobq_schema_version'",
                         "read schema version");
      has.step();
      if (has.integer(0) == 0) return 0;
      has.reset();
      auto v = c.query("SELECT coalesce(max(version), 0) FROM jobq_schema_version", "read schema version");
      v.step();
      return static_cast<int>(v.integer(0));
    };
    const auto refuse_newer = [&](int v) {
      if (v > d::latest_schema_version()) {
        throw SqliteError(ErrorCategory::conflict,
                          "sqlite: database '" + path_ + "' has jobq schema version " + std::to_string(v) +
                              ", newer than the " + std::to_string(d::latest_schema_version()) +
                              " this build supports; upgrade jobq to open it",
                          SQLITE_ERROR);
      }
    };
    const int seen = current();  // most opens find the schema current: no write lock needed
    refuse_newer(seen);
    if (seen == d::latest_schema_version()) return;
    std::lock_guard lock(write_mutex_);
    c.exec("BEGIN IMMEDIATE", "migrate schema: begin");
    try {
      c.exec(
          "CREATE TABLE IF NOT EXISTS jobq_schema_version (version INTEGER PRIMARY KEY, "
          "description TEXT NOT NULL, applied_at INTEGER NOT NULL)",
          "migrate schema: create version table");
      const int from = current();  // again, under the lock: another process may have migrated
      refuse_newer(from);
      for (const auto& m : d::migrations()) {
        if (m.version <= from) continue;
        c.exec(m.sql, "migrate schema to version " + std::to_string(m.version));
        c.query("INSERT INTO jobq_schema_version (version, description, applied_at) VALUES (?1, ?2, ?3)",
                "migrate schema")
            .bind(1, m.version)
            .bind(2, m.description)
            .bind(3, to_epoch_ms(now()))
            .run();
      }
      c.exec("COMMIT", "migrate schema: commit");
    } catch (...) {
      c.rollback();
      throw;
    }
  }

  std::string path_;
  std::string db_file_;  // SQLite's absolute name of the file, to check callers' connections
  SqliteOptions opt_;

  std::mutex write_mutex_;  // serialises this process's writers on writer_
  std::unique_ptr<detail::sqlite::Connection> writer_;

  std::mutex pool_mutex_;
  std::vector<std::unique_ptr<detail::sqlite::Connection>> readers_;

  std::mutex wait_mutex_;
  std::condition_variable_any wait_cv_;
  std::uint64_t generation_ = 0;
};

static_assert(Backend<SqliteBackend>);

}  // namespace jobq
