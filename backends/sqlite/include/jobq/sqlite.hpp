#pragma once

#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <set>
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
#include "jobq/events.hpp"
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
  /// Largest serialized payload enqueue accepts (InvalidArgument above it, nothing written).
  std::size_t max_payload_bytes = default_max_payload_bytes;
  /// Page size of a database file this backend creates (a power of two, 512 to 65536); an
  /// existing file keeps its own. Every commit writes each page it touched whole to the WAL
  /// (and a checkpoint later writes and fsyncs them again), and a single enqueue or claim
  /// touches about six pages: 1 KiB pages write a quarter of the bytes of SQLite's default 4 KiB.
  std::size_t page_size = 1024;
  /// Open an existing file for inspection only: nothing is created or migrated, and every
  /// write fails with a clear error. Chosen by itself when the file cannot be written (a
  /// read-only file, directory or mount), so `jobq queues` works on a read-only copy.
  bool read_only = false;
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
  } else if (primary == SQLITE_CORRUPT) {
    msg += " (the database file is corrupt: restore it from a backup; PRAGMA integrity_check lists the damage)";
  } else if (primary == SQLITE_READONLY) {
    msg += " (the database file, its directory or its mount is read-only)";
  }
  return SqliteError(category_of(code), msg, code);
}

/// @brief One step in the schema's history; applied in order, each recorded in
/// jobq_schema_version so re-opening an older file upgrades it.
struct Migration {
  int version;
  const char* description;
  const char* sql;
  bool edits_schema_text = false;  ///< rewrites sqlite_schema: schema_version must be bumped
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
      {4, "groups, queue limits, rate ledger, schedules",
       R"sql(
ALTER TABLE jobq_jobs ADD COLUMN group_key TEXT;  -- NULL: no group
-- claim with group_concurrency: active jobs per (queue, group); few rows (bounded by workers).
CREATE INDEX jobq_jobs_group_active ON jobq_jobs (queue, group_key)
  WHERE state = 'active' AND group_key IS NOT NULL;
-- Queue limits live beside the paused flag; a row exists only for queues someone configured.
ALTER TABLE jobq_queues ADD COLUMN group_concurrency INTEGER NOT NULL DEFAULT 0;  -- 0: unlimited
ALTER TABLE jobq_queues ADD COLUMN rate_max INTEGER;        -- NULL: no rate limit
ALTER TABLE jobq_queues ADD COLUMN rate_window_ms INTEGER;
-- Sliding-window rate limit: one row per claim batch of a rate-limited queue, pruned by the
-- claims themselves once older than the window.
CREATE TABLE jobq_rate_ledger (
  queue TEXT    NOT NULL,
  at_ms INTEGER NOT NULL,
  n     INTEGER NOT NULL
);
CREATE INDEX jobq_rate_ledger_queue ON jobq_rate_ledger (queue, at_ms);
CREATE TABLE jobq_schedules (
  name     TEXT    PRIMARY KEY,
  spec     TEXT    NOT NULL,  -- JSON, opaque to the backend
  next_run INTEGER NOT NULL   -- epoch ms
) WITHOUT ROWID;
)sql"},
      {5, "ready index covers group and state",
       R"sql(
-- The claim order index now carries group_key and state too, so it covers the claim's candidate
-- queries: a limited claim steps over a saturated group's backlog in the index alone, never
-- reading those rows (2.5 us -> a fraction per skipped job), and the plain claim reads no row
-- until it updates it.
DROP INDEX jobq_jobs_ready;
CREATE INDEX jobq_jobs_ready ON jobq_jobs (queue, priority DESC, run_at, id, group_key, state)
  WHERE state = 'queued';
)sql"},
      {6, "drop the due index; state check without an IN list",
       R"sql(
-- Every enqueue, claim and retry wrote a page of jobq_jobs_due besides one of jobq_jobs_ready
-- (one of six pages a single enqueue writes). The poll's earliest run_at per queue now comes
-- from jobq_jobs_ready: one seek per distinct priority among the queue's queued jobs.
DROP INDEX IF EXISTS jobq_jobs_due;
-- SQLite evaluates a CHECK's IN list of more than two constants by building an ephemeral
-- b-tree of it, on every INSERT and every UPDATE of state: a quarter of a single enqueue's
-- instructions. The same constraint spelt with OR needs none. A CHECK cannot be altered, and
-- the constraint is equivalent (no stored row can violate it), so the table's definition is
-- edited in place, as SQLite documents for such changes; migrate() then bumps schema_version
-- so every connection re-reads it.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema SET sql = replace(sql,
    'CHECK (state IN (''queued'',''active'',''completed'',''dead'',''cancelled''))',
    'CHECK (state = ''queued'' OR state = ''active'' OR state = ''completed'' OR state = ''dead'' OR state = ''cancelled'')')
  WHERE type = 'table' AND name = 'jobq_jobs';
PRAGMA writable_schema = OFF;
)sql", true},
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

  /// @brief The rowid of the connection's last INSERT (outside triggers) that completed.
  [[nodiscard]] std::int64_t last_insert_rowid() const { return sqlite3_last_insert_rowid(db_); }

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
    if (opt.read_only) {
      open_read_only(path, opt);
      return;
    }
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
    if (sqlite3_db_readonly(db_, "main") == 1) {  // SQLite fell back to read-only: not writable
      close();
      throw SqliteError(ErrorCategory::backend, "sqlite: database '" + path + "' is read-only", SQLITE_READONLY);
    }
    try {
      sqlite3_extended_result_codes(db_, 1);
      sqlite3_busy_timeout(db_, static_cast<int>(std::min<Millis::rep>(opt.busy_timeout.count(), INT32_MAX)));
      // The first statement reads the header: a file that is not a database fails here.
      std::string mode;
      // Before WAL mode is set: it only takes effect on a file that has no page yet.
      exec(("PRAGMA page_size = " + std::to_string(opt.page_size)).c_str(), "set page_size");
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
      // SQLite checkpoints the WAL into the file (and fsyncs both) once it holds 1000 pages: 4 MB
      // at the default page size. Kept at about 4 MB whatever the page size, so smaller pages
      // mean fewer bytes per commit, not more checkpoints (each costs two fsyncs).
      if (auto s = prepare("PRAGMA page_size", "read page_size"); s.step()) {
        sqlite3_wal_autocheckpoint(db_, static_cast<int>(std::max<std::int64_t>(1000, 4'096'000 / std::max<std::int64_t>(s.integer(0), 512))));
      }
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

 private:
  // SQLITE_OPEN_READONLY; if even reading fails because the WAL index (-shm) cannot be made
  // (a read-only directory or mount), again as immutable: nobody can be writing such a file.
  void open_read_only(const std::string& path, const SqliteOptions& opt) {
    std::string uri = "file:";
    for (const char ch : path) {
      if (ch == '%' || ch == '?' || ch == '#') {
        static constexpr char hex[] = "0123456789abcdef";
        uri += '%';
        uri += hex[static_cast<unsigned char>(ch) >> 4];
        uri += hex[static_cast<unsigned char>(ch) & 0xf];
      } else {
        uri += ch;
      }
    }
    for (const char* mode : {"?mode=ro", "?mode=ro&immutable=1"}) {
      const int rc = sqlite3_open_v2((uri + mode).c_str(), &db_, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX,
                                     nullptr);
      if (rc != SQLITE_OK) {
        std::string msg = "sqlite: cannot open database '" + path + "' read-only: " +
                          (db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc));
        if ((rc & 0xff) == SQLITE_CANTOPEN) msg += " (does it exist?)";
        close();
        throw SqliteError(category_of(rc), msg, rc);
      }
      sqlite3_extended_result_codes(db_, 1);
      sqlite3_busy_timeout(db_, static_cast<int>(std::min<Millis::rep>(opt.busy_timeout.count(), INT32_MAX)));
      const int probe = sqlite3_exec(db_, "SELECT count(*) FROM sqlite_schema", nullptr, nullptr, nullptr);
      if (probe == SQLITE_OK) return;
      auto err = error_from(db_, sqlite3_extended_errcode(db_), "open database read-only");
      close();
      if ((probe & 0xff) != SQLITE_CANTOPEN) throw err;
    }
    throw SqliteError(ErrorCategory::backend, "sqlite: cannot read database '" + path + "' read-only", SQLITE_CANTOPEN);
  }

 public:

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
    "result, errors, progress, progress_message, group_key";

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
  r.group = s.text(21);
  return r;
}


// Statements (one place, with the index each relies on).

// jobq_jobs_unique (its rowid order gives the newest first). The key's holder is the latest
// job of the queue with that key, in any state; enqueue decides from its state what to do.
inline constexpr const char* sql_find_holder =
    "SELECT id, state, finished_at, unique_for_ms, created_at FROM jobq_jobs "
    "WHERE queue = ?1 AND unique_key = ?2 ORDER BY id DESC LIMIT 1";

// Debounce: the queued holder takes the latest payload and runs debounce after this enqueue.
inline constexpr const char* sql_debounce =
    "UPDATE jobq_jobs SET payload = ?2, run_at = ?3 WHERE id = ?1 AND state = 'queued'";

// No RETURNING on the backend's own writer: it buffers its rows in an ephemeral table, a new
// in-memory b-tree per statement; the id is sqlite3_last_insert_rowid, which the counts
// trigger's own insert does not change once the statement is done, and which no other thread
// can change (the writer is used under its mutex). A caller's connection (transactional
// enqueue) may be shared by threads, so there the id comes back with the row (sql_insert_returning).
inline constexpr const char* sql_insert =
    "INSERT INTO jobq_jobs (queue, name, payload, state, priority, max_attempts, run_at, created_at, "
    "backoff, timeout_ms, unique_key, unique_for_ms, group_key) "
    "VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";
inline constexpr const char* sql_insert_returning =
    "INSERT INTO jobq_jobs (queue, name, payload, state, priority, max_attempts, run_at, created_at, "
    "backoff, timeout_ms, unique_key, unique_for_ms, group_key) "
    "VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) RETURNING id";

// Primary key; only the holder of the current lease token matches.
inline constexpr const char* sql_complete =
    "UPDATE jobq_jobs SET state = 'completed', finished_at = ?3, result = ?4, lease_token = NULL, "
    "lease_until = NULL WHERE id = ?1 AND state = 'active' AND lease_token = ?2";
// The same, returning what a notice needs; used only while someone in this process listens, so
// the hot path without subscribers stays as it was.
inline constexpr const char* sql_complete_notice =
    "UPDATE jobq_jobs SET state = 'completed', finished_at = ?3, result = ?4, lease_token = NULL, "
    "lease_until = NULL WHERE id = ?1 AND state = 'active' AND lease_token = ?2 RETURNING queue, attempts";

// The error is passed as JSON text (json(?4)) so its string is escaped and valid UTF-8.
inline constexpr const char* sql_fail =
    "UPDATE jobq_jobs SET "
    "errors = json_insert(errors, '$[#]', json_object('attempt', attempts, 'message', json(?4), 'at', ?3)), "
    "state = CASE WHEN ?5 IS NOT NULL AND attempts < max_attempts THEN 'queued' ELSE 'dead' END, "
    "run_at = CASE WHEN ?5 IS NOT NULL AND attempts < max_attempts THEN ?5 ELSE run_at END, "
    "finished_at = CASE WHEN ?5 IS NOT NULL AND attempts < max_attempts THEN NULL ELSE ?3 END, "
    "lease_token = NULL, lease_until = NULL "
    "WHERE id = ?1 AND state = 'active' AND lease_token = ?2 RETURNING state, queue, attempts";

inline constexpr const char* sql_extend =
    "UPDATE jobq_jobs SET lease_until = ?3 WHERE id = ?1 AND state = 'active' AND lease_token = ?2";

inline constexpr const char* sql_release =
    "UPDATE jobq_jobs SET state = 'queued', run_at = ?3, attempts = attempts - 1, "
    "lease_token = NULL, lease_until = NULL WHERE id = ?1 AND state = 'active' AND lease_token = ?2";

inline constexpr const char* sql_progress =
    "UPDATE jobq_jobs SET progress = ?3, progress_message = ?4 "
    "WHERE id = ?1 AND state = 'active' AND lease_token = ?2 RETURNING queue, attempts";

/// @brief The error recorded (and announced) for a job whose lease ran out.
inline constexpr const char* lease_expired_message = "lease expired (worker lost or too slow)";

// jobq_jobs_leases.
inline constexpr const char* sql_recover =
    "UPDATE jobq_jobs SET "
    "errors = json_insert(errors, '$[#]', json_object('attempt', attempts, "
    "'message', ?2, 'at', ?1)), "
    "state = CASE WHEN attempts < max_attempts THEN 'queued' ELSE 'dead' END, "
    "run_at = CASE WHEN attempts < max_attempts THEN ?1 ELSE run_at END, "
    "finished_at = CASE WHEN attempts < max_attempts THEN NULL ELSE ?1 END, "
    "lease_token = NULL, lease_until = NULL "
    "WHERE state = 'active' AND lease_until <= ?1 RETURNING state, id, queue, attempts";

// A claimed job whose stored row cannot be decoded: dead at once, so it never blocks a queue.
// The stored columns are left as they are for inspection; errors restarts if it is the broken one.
inline constexpr const char* sql_kill_corrupt =
    "UPDATE jobq_jobs SET "
    "errors = json_insert(CASE WHEN json_valid(errors) AND json_type(errors) = 'array' THEN errors "
    "ELSE '[]' END, '$[#]', json_object('attempt', attempts, 'message', json(?3), 'at', ?2)), "
    "state = 'dead', finished_at = ?2, lease_token = NULL, lease_until = NULL WHERE id = ?1";

inline constexpr const char* sql_cancel =
    "UPDATE jobq_jobs SET state = 'cancelled', finished_at = ?2 WHERE id = ?1 AND state = 'queued' "
    "RETURNING queue";

inline constexpr const char* sql_redrive =
    "UPDATE jobq_jobs SET state = 'queued', run_at = ?2, attempts = 0, finished_at = NULL "
    "WHERE id = ?1 AND state = 'dead'";

inline constexpr const char* sql_set_paused =
    "INSERT INTO jobq_queues (name, paused) VALUES (?1, ?2) "
    "ON CONFLICT (name) DO UPDATE SET paused = excluded.paused";

inline constexpr const char* sql_is_paused = "SELECT paused FROM jobq_queues WHERE name = ?1";

// A queue's paused flag and limits (no row: not paused, no limits).
inline constexpr const char* sql_queue_settings =
    "SELECT paused, group_concurrency, rate_max, rate_window_ms FROM jobq_queues WHERE name = ?1";

inline constexpr const char* sql_set_limits =
    "INSERT INTO jobq_queues (name, paused, group_concurrency, rate_max, rate_window_ms) "
    "VALUES (?1, 0, ?2, ?3, ?4) ON CONFLICT (name) DO UPDATE SET "
    "group_concurrency = excluded.group_concurrency, rate_max = excluded.rate_max, "
    "rate_window_ms = excluded.rate_window_ms";

// jobq_rate_ledger_queue. ?2 = now - window: claims at or before it no longer count.
inline constexpr const char* sql_rate_prune = "DELETE FROM jobq_rate_ledger WHERE queue = ?1 AND at_ms <= ?2";
inline constexpr const char* sql_rate_used =
    "SELECT coalesce(sum(n), 0), min(at_ms) FROM jobq_rate_ledger WHERE queue = ?1 AND at_ms > ?2";
inline constexpr const char* sql_rate_forget = "DELETE FROM jobq_rate_ledger WHERE queue = ?1";
inline constexpr const char* sql_rate_record = "INSERT INTO jobq_rate_ledger (queue, at_ms, n) VALUES (?1, ?2, ?3)";

// jobq_jobs_group_active: only active jobs with a group, so as many rows as running jobs.
inline constexpr const char* sql_group_active =
    "SELECT group_key, count(*) FROM jobq_jobs WHERE queue = ?1 AND state = 'active' "
    "AND group_key IS NOT NULL GROUP BY group_key";

// Ready jobs of a limited queue in claim order, without the groups in the JSON array ?3 (the
// saturated ones). Stepped only as far as the claim needs (no LIMIT: the index gives the order).
inline constexpr const char* sql_candidates =
    "SELECT id, priority, run_at, group_key FROM jobq_jobs INDEXED BY jobq_jobs_ready "
    "WHERE state = 'queued' AND queue = ?1 AND run_at <= ?2 "
    "AND (group_key IS NULL OR group_key NOT IN (SELECT value FROM json_each(?3))) "
    "ORDER BY priority DESC, run_at, id";

// Schedules: name is the primary key.
inline constexpr const char* sql_put_schedule =
    "INSERT INTO jobq_schedules (name, spec, next_run) VALUES (?1, ?2, ?3) "
    "ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, next_run = excluded.next_run";
inline constexpr const char* sql_remove_schedule = "DELETE FROM jobq_schedules WHERE name = ?1";
inline constexpr const char* sql_schedules = "SELECT name, spec, next_run FROM jobq_schedules ORDER BY name";
// The compare-and-set that makes each tick fire once, whoever races for it.
inline constexpr const char* sql_fire_schedule =
    "UPDATE jobq_schedules SET next_run = ?3 WHERE name = ?1 AND next_run = ?2";
// Queues with jobs (jobq_counts) or a paused flag (jobq_queues).
inline constexpr const char* sql_queues =
    "SELECT queue FROM jobq_counts WHERE n > 0 UNION SELECT name FROM jobq_queues ORDER BY 1";

// jobq_counts (migration 3), kept by triggers.
inline constexpr const char* sql_counts = "SELECT state, n FROM jobq_counts WHERE queue = ?1";

// jobq_jobs_finished.
inline constexpr const char* sql_prune =
    "DELETE FROM jobq_jobs WHERE queue = ?1 AND state = ?2 AND finished_at IS NOT NULL "
    "AND finished_at < ?3";

// The earliest run_at of a queue's queued jobs, from jobq_jobs_ready (migration 6): it is
// ordered by priority first, so the queue's distinct priorities are visited from the top, one
// seek each, and each gives its own earliest run_at with one more seek. The caller has checked
// the queue is not paused.
inline constexpr const char* sql_next_due =
    "WITH RECURSIVE p(pr) AS ("
    "SELECT (SELECT priority FROM jobq_jobs INDEXED BY jobq_jobs_ready WHERE state = 'queued' "
    "AND queue = ?1 ORDER BY priority DESC LIMIT 1) "
    "UNION ALL SELECT (SELECT priority FROM jobq_jobs INDEXED BY jobq_jobs_ready WHERE state = 'queued' "
    "AND queue = ?1 AND priority < p.pr ORDER BY priority DESC LIMIT 1) FROM p WHERE p.pr IS NOT NULL) "
    "SELECT min((SELECT run_at FROM jobq_jobs INDEXED BY jobq_jobs_ready WHERE state = 'queued' "
    "AND queue = ?1 AND priority = p.pr ORDER BY priority DESC, run_at LIMIT 1)) "
    "FROM p WHERE p.pr IS NOT NULL";
// The same after ?2 (now): the next delayed job of a queue (wait_for_work, group-limited queue).
inline constexpr const char* sql_next_delayed =
    "WITH RECURSIVE p(pr) AS ("
    "SELECT (SELECT priority FROM jobq_jobs INDEXED BY jobq_jobs_ready WHERE state = 'queued' "
    "AND queue = ?1 ORDER BY priority DESC LIMIT 1) "
    "UNION ALL SELECT (SELECT priority FROM jobq_jobs INDEXED BY jobq_jobs_ready WHERE state = 'queued' "
    "AND queue = ?1 AND priority < p.pr ORDER BY priority DESC LIMIT 1) FROM p WHERE p.pr IS NOT NULL) "
    "SELECT min((SELECT run_at FROM jobq_jobs INDEXED BY jobq_jobs_ready WHERE state = 'queued' "
    "AND queue = ?1 AND priority = p.pr AND run_at > ?2 ORDER BY priority DESC, run_at LIMIT 1)) "
    "FROM p WHERE p.pr IS NOT NULL";

/// @brief Picks the ids a claim of `n` unlimited, non-paused queues (checked by the caller in the
/// same transaction) leases: ?1 = now, ?2 = limit, ?4… = the queues. Each queue is its own arm
/// walking jobq_jobs_ready in claim order and stopping after ?2 rows, so a batch costs
/// O(limit · queues) index steps however many jobs wait (ready ones; delayed jobs of a higher
/// priority are stepped over); the arms are then merged. INDEXED BY because, without ANALYZE
/// statistics, the planner preferred the run_at range of an index on (queue, run_at) and sorted
/// every ready job.
inline std::string claim_pick_sql(std::size_t n) {
  if (n == 1) {  // the common case, without the merge
    return "SELECT id FROM jobq_jobs INDEXED BY jobq_jobs_ready WHERE state = 'queued' AND queue = ?4 "
           "AND run_at <= ?1 ORDER BY priority DESC, run_at, id LIMIT ?2";
  }
  std::string arms;
  for (std::size_t i = 0; i < n; ++i) {
    std::string p = "?";  // not "?" + std::string: GCC 12 -O3 reports a false -Wrestrict on it
    p += std::to_string(i + 4);
    if (i > 0) arms += " UNION ALL ";
    arms += "SELECT * FROM (SELECT id, priority, run_at FROM jobq_jobs INDEXED BY jobq_jobs_ready "
            "WHERE state = 'queued' AND queue = " +
            p + " AND run_at <= ?1 ORDER BY priority DESC, run_at, id LIMIT ?2)";
  }
  return "SELECT id FROM (" + arms + ") ORDER BY priority DESC, run_at, id LIMIT ?2";
}

/// @brief The claim of a batch: one UPDATE … WHERE id IN (claim_pick_sql) RETURNING the jobs;
/// ?3 = lease_until.
inline std::string claim_sql(std::size_t n) {
  return "UPDATE jobq_jobs SET state = 'active', attempts = attempts + 1, "
         "lease_token = lower(hex(randomblob(16))), lease_until = ?3 WHERE id IN (" +
         claim_pick_sql(n) + ") RETURNING " + job_columns;
}

// A claim of one job: picked (claim_pick_sql), leased and read by primary key, three plain
// statements instead of claim_sql's UPDATE … IN (…) RETURNING, whose IN list and RETURNING
// rows each build an ephemeral in-memory b-tree: 30% fewer instructions per single claim. A
// batch takes claim_sql (there the per-statement cost of two statements per job is more).
inline constexpr const char* sql_lease_one =
    "UPDATE jobq_jobs SET state = 'active', attempts = attempts + 1, "
    "lease_token = lower(hex(randomblob(16))), lease_until = ?2 WHERE id = ?1 AND state = 'queued'";
inline const std::string& read_job_sql() {
  static const std::string sql = std::string("SELECT ") + job_columns + " FROM jobq_jobs WHERE id = ?1";
  return sql;
}

/// @brief Leases the jobs whose ids are in the JSON array ?2 (chosen by a limited claim).
inline const std::string& claim_ids_sql() {
  static const std::string sql =
      std::string("UPDATE jobq_jobs SET state = 'active', attempts = attempts + 1, "
                  "lease_token = lower(hex(randomblob(16))), lease_until = ?1 "
                  "WHERE id IN (SELECT value FROM json_each(?2)) AND state = 'queued' RETURNING ") +
      job_columns;
  return sql;
}

/// @brief The notice hub of one database file in this process: every SqliteBackend object on
/// the same file shares it, so a subscriber sees changes made through any of them.
inline std::shared_ptr<NoticeHub> hub_for(const std::string& file) {
  static std::mutex mutex;
  static std::map<std::string, std::weak_ptr<NoticeHub>> hubs;
  std::lock_guard lock(mutex);
  for (auto it = hubs.begin(); it != hubs.end();) {
    it = it->second.expired() ? hubs.erase(it) : std::next(it);
  }
  auto& slot = hubs[file];
  if (auto hub = slot.lock()) return hub;
  auto hub = std::make_shared<NoticeHub>();
  slot = hub;
  return hub;
}

/// @brief What claim reads about one queue in its transaction.
struct QueueSettings {
  bool paused = false;
  QueueLimits limits{};
  [[nodiscard]] bool limited() const noexcept { return limits.rate || limits.group_concurrency > 0; }
};

/// @brief Reads a queue's settings row (defaults when it has none).
inline QueueSettings read_settings(Connection& c, const std::string& queue) {
  QueueSettings out;
  auto s = c.query(sql_queue_settings, "read queue settings");
  s.bind(1, queue);
  if (s.step()) {
    out.paused = s.integer(0) != 0;
    out.limits.group_concurrency = static_cast<int>(s.integer(1));
    if (!s.is_null(2) && !s.is_null(3)) out.limits.rate = RateLimit{s.integer(2), Millis{s.integer(3)}};
  }
  return out;
}

/// @brief A job a limited claim picked, before it is leased.
struct Candidate {
  JobId id;
  std::int64_t priority;
  std::int64_t run_at;
  std::size_t queue;  // index into the claim's queue list
};

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
    if (opt_.page_size < 512 || opt_.page_size > 65536 || (opt_.page_size & (opt_.page_size - 1)) != 0) {
      throw InvalidArgument("sqlite: page_size must be a power of two from 512 to 65536 (got " +
                            std::to_string(opt_.page_size) + ")");
    }
    try {
      writer_ = std::make_unique<detail::sqlite::Connection>(path_, opt_);
    } catch (const SqliteError& e) {
      if (e.code() != SQLITE_READONLY) throw;
      opt_.read_only = true;  // the file cannot be written: open it for inspection
      writer_ = std::make_unique<detail::sqlite::Connection>(path_, opt_);
    }
    if (const char* f = sqlite3_db_filename(writer_->handle(), "main")) db_file_ = f;
    hub_ = detail::sqlite::hub_for(db_file_.empty() ? path_ : db_file_);
    migrate();
  }

  /// @brief True when the file was opened for inspection only (SqliteOptions::read_only).
  [[nodiscard]] bool read_only() const noexcept { return opt_.read_only; }

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
        wake = wake || (res.back().created && jobs[i].debounce == Millis{0} && jobs[i].run_at.value_or(t) <= t);
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
          job, e, t, false);
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

  /// @brief Leases up to req.limit ready jobs, best first across the queues, in one BEGIN
  /// IMMEDIATE transaction: the queues' settings rows (paused, limits), then one
  /// UPDATE … RETURNING (a single job: pick, lease and read it by primary key).
  ///
  /// Queues without limits take the same single statement as before limits existed. A queue
  /// with limits (set_queue_limits) is walked in claim order skipping saturated groups, as far
  /// as its rate allowance goes, and the chosen jobs are leased by id. The transaction holds
  /// SQLite's one write lock, so the limits hold across every thread and process on the file.
  ///
  /// A claimed row that cannot be decoded (say its payload is not valid JSON) is not returned:
  /// it is made dead in the same transaction with an error naming the problem, so it can never
  /// block its queue; its stored columns are kept for inspection and redrive after repair.
  std::vector<JobRecord> claim(const ClaimRequest& req) {
    const auto queues = claim_queues(req);
    if (queues.empty() || req.limit == 0) return {};
    const auto limit = static_cast<std::int64_t>(std::min<std::size_t>(req.limit, INT64_MAX));
    auto out = write("claim", [&](detail::sqlite::Connection& c) {
      const auto t = now();
      std::vector<std::string> open;
      std::vector<std::pair<std::string, QueueLimits>> limited;
      for (const auto& q : queues) {
        const auto st = detail::sqlite::read_settings(c, q);
        if (st.paused) continue;
        if (st.limited()) {
          limited.emplace_back(q, st.limits);
        } else {
          open.push_back(q);
        }
      }
      std::vector<JobRecord> jobs;
      std::vector<std::pair<JobId, std::string>> broken;
      const auto take = [&](detail::sqlite::Stmt& s) {
        while (s.step()) {
          try {
            jobs.push_back(detail::sqlite::decode(s));
          } catch (const Error& e) {
            broken.emplace_back(s.integer(0), e.what());
          }
        }
      };
      const auto lease_one = [&](JobId id) {
        if (c.query(detail::sqlite::sql_lease_one, "claim").bind(1, id).bind(2, to_epoch_ms(t + req.lease)).run() != 1) {
          return;
        }
        auto s = c.query(detail::sqlite::read_job_sql(), "claim");
        s.bind(1, id);
        take(s);
      };
      if (limited.empty()) {
        if (open.empty()) return jobs;
        if (limit == 1) {
          static const std::string pick_one = detail::sqlite::claim_pick_sql(1);  // the usual case, built once
          std::optional<JobId> id;
          {
            auto s = open.size() == 1 ? c.query(pick_one, "claim") : c.query(detail::sqlite::claim_pick_sql(open.size()), "claim");
            s.bind(1, to_epoch_ms(t)).bind(2, limit);
            for (std::size_t i = 0; i < open.size(); ++i) s.bind(static_cast<int>(i + 4), open[i]);
            if (s.step()) id = s.integer(0);
          }
          if (id) lease_one(*id);
        } else {
          static const std::string claim_one = detail::sqlite::claim_sql(1);  // the usual case, built once
          auto s = open.size() == 1 ? c.query(claim_one, "claim") : c.query(detail::sqlite::claim_sql(open.size()), "claim");
          s.bind(1, to_epoch_ms(t)).bind(2, limit).bind(3, to_epoch_ms(t + req.lease));
          for (std::size_t i = 0; i < open.size(); ++i) s.bind(static_cast<int>(i + 4), open[i]);
          take(s);
        }
      } else {
        const auto ids = pick_limited(c, open, limited, t, static_cast<std::size_t>(limit));
        if (ids.size() == 1) {
          lease_one(ids.front().get<JobId>());
        } else if (!ids.empty()) {
          auto s = c.query(detail::sqlite::claim_ids_sql(), "claim");
          s.bind(1, to_epoch_ms(t + req.lease)).bind(2, ids.dump());
          take(s);
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
    check_json(result, "result");  // before the copy below, which recurses
    Completion c{id, token, result};
    return complete_many(std::span<const Completion>(&c, 1)).front();
  }

  /// @brief Records many successes in one transaction; one bool per completion.
  std::vector<bool> complete_many(std::span<const Completion> completions) {
    std::vector<std::string> results;
    results.reserve(completions.size());
    for (const auto& c : completions) results.push_back(dump_for_storage(c.result, "result"));
    if (completions.empty()) return {};
    // Notices cost a RETURNING per job: built only while someone in this process listens.
    const bool announce = !hub_->empty();
    std::vector<JobNotice> notices;
    auto ok = write("complete", [&](detail::sqlite::Connection& c) {
      notices.clear();
      const auto t = to_epoch_ms(now());
      std::vector<bool> out;
      out.reserve(completions.size());
      for (std::size_t i = 0; i < completions.size(); ++i) {
        const auto& done = completions[i];
        if (done.lease_token.empty()) {
          out.push_back(false);
        } else if (!announce) {
          out.push_back(c.query(detail::sqlite::sql_complete, "complete")
                            .bind(1, done.id)
                            .bind(2, done.lease_token)
                            .bind(3, t)
                            .bind(4, results[i])
                            .run() == 1);
        } else {
          auto s = c.query(detail::sqlite::sql_complete_notice, "complete");
          s.bind(1, done.id).bind(2, done.lease_token).bind(3, t).bind(4, results[i]);
          const bool hit = s.step();
          if (hit) {
            notices.push_back({JobNotice::Kind::completed, done.id, s.text(0), static_cast<int>(s.integer(1)), 0, {}});
            s.run();
          }
          out.push_back(hit);
        }
      }
      return out;
    });
    hub_->publish(notices);  // after the commit: only committed changes are announced
    return ok;
  }

  /// @brief Records a failed attempt: retry at f.retry_at, or dead.
  FailOutcome fail(const Failure& f) {
    if (f.lease_token.empty()) return FailOutcome::rejected;
    const auto message =
        nlohmann::json(f.error).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    JobNotice notice;
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
      notice = {retried ? JobNotice::Kind::failed : JobNotice::Kind::dead, f.id, s.text(1),
                static_cast<int>(s.integer(2)), 0, f.error};
      s.run();
      return std::pair{retried ? FailOutcome::retried : FailOutcome::dead, retried && *f.retry_at <= t};
    });
    if (wake) notify();
    if (outcome != FailOutcome::rejected) hub_->publish(notice);
    return outcome;
  }

  /// @brief Heartbeat: pushes the lease deadline to now + lease.
  bool extend_lease(JobId id, const std::string& token, Millis lease) {
    check_duration(lease, "lease");
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
    const int pct = std::clamp(percent, 0, 100);
    JobNotice notice;
    const bool ok = write("set progress", [&](detail::sqlite::Connection& c) {
      auto s = c.query(detail::sqlite::sql_progress, "set progress");
      s.bind(1, id).bind(2, token).bind(3, pct).bind(4, message);
      if (!s.step()) return false;
      notice = {JobNotice::Kind::progress, id, s.text(0), static_cast<int>(s.integer(1)), pct, message};
      s.run();
      return true;
    });
    if (ok) hub_->publish(notice);
    return ok;
  }

  /// @brief Requeues (or kills, on the last attempt) every job whose lease has expired.
  Recovered recover_expired() {
    std::vector<JobNotice> notices;
    const auto r = write("recover expired leases", [&](detail::sqlite::Connection& c) {
      notices.clear();
      Recovered rec;
      auto s = c.query(detail::sqlite::sql_recover, "recover expired leases");
      s.bind(1, to_epoch_ms(now())).bind(2, detail::sqlite::lease_expired_message);
      while (s.step()) {
        const bool retried = s.text(0) == "queued";
        (retried ? rec.retried : rec.dead) += 1;
        notices.push_back({retried ? JobNotice::Kind::failed : JobNotice::Kind::dead, s.integer(1), s.text(2),
                           static_cast<int>(s.integer(3)), 0, detail::sqlite::lease_expired_message});
      }
      return rec;
    });
    if (r.retried > 0) notify();
    hub_->publish(notices);
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
    std::string queue;
    const bool ok = write("cancel", [&](detail::sqlite::Connection& c) {
      auto s = c.query(detail::sqlite::sql_cancel, "cancel");
      s.bind(1, id).bind(2, to_epoch_ms(now()));
      if (!s.step()) return false;
      queue = s.text(0);
      s.run();
      return true;
    });
    if (ok) hub_->publish(JobNotice{JobNotice::Kind::cancelled, id, queue, 0, 0, {}});
    return ok;
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

  /// @brief Sets a queue's limits (kept in jobq_queues beside its paused flag; every claim of
  /// every process reads them in its transaction).
  void set_queue_limits(const std::string& queue, const QueueLimits& limits) {
    validate_queue_name(queue);
    validate(limits);
    write("set queue limits", [&](detail::sqlite::Connection& c) {
      auto s = c.query(detail::sqlite::sql_set_limits, "set queue limits");
      s.bind(1, queue).bind(2, limits.group_concurrency);
      if (limits.rate) {
        s.bind(3, limits.rate->max).bind(4, static_cast<std::int64_t>(limits.rate->window.count()));
      } else {
        s.bind_null(3).bind_null(4);
      }
      s.run();
      if (!limits.rate) {  // claims of an unlimited queue no longer prune its ledger
        c.query(detail::sqlite::sql_rate_forget, "set queue limits: clear rate ledger").bind(1, queue).run();
      }
    });
    notify();  // a raised limit may make waiting jobs claimable
  }

  /// @brief A queue's limits (none unless set).
  QueueLimits queue_limits(const std::string& queue) {
    validate_queue_name(queue);
    return read("queue limits",
                [&](detail::sqlite::Connection& c) { return detail::sqlite::read_settings(c, queue).limits; });
  }

  /// @brief Inserts or replaces the schedule named s.name (its spec stored as JSON text).
  void put_schedule(const StoredSchedule& schedule) {
    validate_schedule_name(schedule.name);
    const auto spec = dump_for_storage(schedule.spec, "schedule spec");
    write("put schedule", [&](detail::sqlite::Connection& c) {
      c.query(detail::sqlite::sql_put_schedule, "put schedule")
          .bind(1, schedule.name)
          .bind(2, spec)
          .bind(3, to_epoch_ms(schedule.next_run))
          .run();
    });
  }

  /// @brief Deletes a schedule; false if there was none of that name.
  bool remove_schedule(const std::string& name) {
    validate_schedule_name(name);
    return write("remove schedule", [&](detail::sqlite::Connection& c) {
      return c.query(detail::sqlite::sql_remove_schedule, "remove schedule").bind(1, name).run() == 1;
    });
  }

  /// @brief Every schedule, by name.
  std::vector<StoredSchedule> schedules() {
    return read("list schedules", [&](detail::sqlite::Connection& c) {
      std::vector<StoredSchedule> out;
      auto s = c.query(detail::sqlite::sql_schedules, "list schedules");
      while (s.step()) {
        auto spec = nlohmann::json::parse(s.text(1), nullptr, false);
        if (spec.is_discarded()) {
          throw SqliteError(ErrorCategory::backend,
                            "sqlite: schedule '" + s.text(0) + "' is corrupted: its spec is not valid JSON");
        }
        out.push_back({s.text(0), std::move(spec), from_epoch_ms(s.integer(2))});
      }
      return out;
    });
  }

  /// @brief If the schedule's next_run is still `expected`: sets it to `next` and enqueues
  /// `job` (if any) exactly as enqueue does, in one transaction; true. Otherwise (another
  /// scheduler fired this tick, or the schedule is gone) changes nothing; false.
  bool fire_schedule(const std::string& name, TimePoint expected, TimePoint next,
                     const std::optional<NewJob>& job) {
    validate_schedule_name(name);
    std::optional<Encoded> e;
    if (job) e = encode(*job);  // before any write
    bool wake = false;
    const bool fired = write("fire schedule", [&](detail::sqlite::Connection& c) {
      if (c.query(detail::sqlite::sql_fire_schedule, "fire schedule")
              .bind(1, name)
              .bind(2, to_epoch_ms(expected))
              .bind(3, to_epoch_ms(next))
              .run() != 1) {
        return false;
      }
      if (job) {
        const auto t = now();
        const auto r = insert([&](const char* sql) { return c.query(sql, "fire schedule: enqueue"); }, *job, *e, t);
        wake = r.created && job->debounce == Millis{0} && job->run_at.value_or(t) <= t;
      }
      return true;
    });
    if (wake) notify();
    return fired;
  }

  /// @brief Calls fn for every notice of `queues` (all when empty) from this process: changes
  /// made through any SqliteBackend object on the same file in this process, announced after
  /// their commit. Other processes' changes are not delivered: backends/sqlite/README.md, "Events".
  Subscription subscribe(std::span<const std::string> queues, NoticeFn fn) {
    auto inner = std::make_shared<Subscription>(hub_->subscribe(queues, std::move(fn)));
    // The hub may be shared with other objects on the file: keep it alive with the subscription.
    return Subscription([hub = hub_, inner] { inner->cancel(); });
  }

  /// @brief Sleeps until work may be ready in one of the queues, the timeout, or stop.
  ///
  /// An enqueue, retry, release, redrive, recovery or resume in this process wakes it at once.
  /// Work from other processes (and delayed jobs coming due) is found by looking at the file
  /// every poll_interval — an indexed read per queue (jobq_jobs_ready), no write lock.
  void wait_for_work(std::span<const std::string> queues, Millis timeout, std::stop_token stop) {
    using steady = std::chrono::steady_clock;
    const auto deadline = steady::now() + timeout;
    std::unique_lock lock(wait_mutex_);
    const auto seen = generation_;
    while (!stop.stop_requested()) {
      lock.unlock();
      const auto due = next_due(queues);  // nullopt: nothing queued; throws what the worker must report
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

  Encoded encode(const NewJob& job) const {
    validate(job);
    Encoded e{job.payload.dump(), job.backoff.to_json().dump()};  // validate(job) ran check_json
    check_payload_size(e.payload.size(), opt_.max_payload_bytes);
    return e;
  }

  // Unique-key rules (throttle, debounce) then insert; the caller holds the write lock (BEGIN
  // IMMEDIATE) or is in its own transaction, so no other writer can slip in between.
  template <class Prepare>
  // `own_writer`: the backend's writer connection, under write_mutex_ (see sql_insert).
  static EnqueueResult insert(Prepare&& prepare, const NewJob& job, const Encoded& e, TimePoint t,
                              bool own_writer = true) {
    const auto t_ms = to_epoch_ms(t);
    auto run_at = to_epoch_ms(job.run_at.value_or(t));
    if (!job.unique_key.empty()) {
      std::optional<JobId> holder;
      std::string state;
      bool held = false;
      {
        auto s = prepare(detail::sqlite::sql_find_holder);
        s.bind(1, job.queue).bind(2, job.unique_key);
        if (s.step()) {
          holder = s.integer(0);
          state = s.text(1);
          held = state == "queued" || state == "active" ||
                 (state == "completed" && !s.is_null(2) && s.integer(2) + s.integer(3) > t_ms) ||
                 (job.throttle > Millis{0} && s.integer(4) > t_ms - job.throttle.count());
        }
      }
      if (job.debounce > Millis{0}) {
        run_at = t_ms + job.debounce.count();
        if (holder && state == "queued") {
          prepare(detail::sqlite::sql_debounce).bind(1, *holder).bind(2, e.payload).bind(3, run_at).run();
          return {*holder, false};
        }
      } else if (held) {
        return {*holder, false};
      }
    }
    auto s = prepare(own_writer ? detail::sqlite::sql_insert : detail::sqlite::sql_insert_returning);
    s.bind(1, job.queue)
        .bind(2, job.name)
        .bind(3, e.payload)
        .bind(4, job.priority)
        .bind(5, job.max_attempts)
        .bind(6, run_at)
        .bind(7, t_ms)
        .bind(8, e.backoff)
        .bind(9, static_cast<std::int64_t>(job.timeout.count()))
        .bind(11, static_cast<std::int64_t>(job.unique_for.count()));
    if (job.unique_key.empty()) {
      s.bind_null(10);
    } else {
      s.bind(10, job.unique_key);
    }
    if (job.group.empty()) {
      s.bind_null(12);
    } else {
      s.bind(12, job.group);
    }
    if (own_writer) {
      s.run();
      return {s.last_insert_rowid(), true};
    }
    s.step();
    const JobId id = s.integer(0);
    s.run();
    return {id, true};
  }

  // A claim touching a limited queue: the best `limit` of each open queue, and of each limited
  // queue as many as its rate allowance and its groups' free slots allow, merged in claim order.
  // Records the rate-limited queues' claims in the ledger; returns the chosen ids (JSON array).
  static nlohmann::json pick_limited(detail::sqlite::Connection& c, const std::vector<std::string>& open,
                                     const std::vector<std::pair<std::string, QueueLimits>>& limited,
                                     TimePoint t, std::size_t limit) {
    namespace d = detail::sqlite;
    const auto t_ms = to_epoch_ms(t);
    std::vector<d::Candidate> cands;
    std::vector<const std::string*> names;  // candidate.queue -> name
    std::vector<bool> rated;                // candidate.queue -> has a rate limit
    const auto walk = [&](const std::string& q, std::size_t allowance, int k, bool rate) {
      const auto qi = names.size();
      names.push_back(&q);
      rated.push_back(rate);
      std::map<std::string, int> active;
      std::set<std::string> excluded;
      if (k > 0) {
        auto s = c.query(d::sql_group_active, "claim: active jobs per group");
        s.bind(1, q);
        while (s.step()) {
          auto g = s.text(0);
          const auto n = static_cast<int>(s.integer(1));
          if (n >= k) excluded.insert(g);
          active.emplace(std::move(g), n);
        }
      }
      std::set<JobId> picked;
      bool again = true;
      // Each pass excludes every group known to be saturated in the statement itself, so a
      // saturated group's backlog is stepped over inside SQLite, never returned row by row. A
      // group filled by this batch restarts the walk (at most once per group, ids already
      // picked are skipped).
      while (again && picked.size() < allowance) {
        again = false;
        auto ex = nlohmann::json::array();
        for (const auto& g : excluded) ex.push_back(g);
        auto s = c.query(d::sql_candidates, "claim: candidates");
        s.bind(1, q).bind(2, t_ms).bind(3, ex.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
        while (picked.size() < allowance && s.step()) {
          const JobId id = s.integer(0);
          if (picked.contains(id)) continue;
          if (k > 0 && !s.is_null(3)) {
            auto g = s.text(3);
            int& n = active[g];
            if (n >= k) {
              if (excluded.insert(std::move(g)).second) {
                again = true;
                break;
              }
              continue;  // a key the JSON filter cannot match (invalid UTF-8): skipped here
            }
            ++n;
          }
          picked.insert(id);
          cands.push_back({id, s.integer(1), s.integer(2), qi});
        }
      }
    };
    for (const auto& q : open) walk(q, limit, 0, false);
    for (const auto& [q, l] : limited) {
      std::size_t allowance = limit;
      if (l.rate) {
        const auto floor = t_ms - l.rate->window.count();
        c.query(d::sql_rate_prune, "claim: prune rate ledger").bind(1, q).bind(2, floor).run();
        auto s = c.query(d::sql_rate_used, "claim: read rate ledger");
        s.bind(1, q).bind(2, floor);
        const auto used = s.step() ? s.integer(0) : 0;
        if (used >= l.rate->max) continue;
        allowance = std::min(allowance, static_cast<std::size_t>(l.rate->max - used));
      }
      walk(q, allowance, l.group_concurrency, l.rate.has_value());
    }
    std::sort(cands.begin(), cands.end(), [](const d::Candidate& a, const d::Candidate& b) {
      if (a.priority != b.priority) return a.priority > b.priority;
      if (a.run_at != b.run_at) return a.run_at < b.run_at;
      return a.id < b.id;
    });
    if (cands.size() > limit) cands.resize(limit);
    std::vector<std::int64_t> per_queue(names.size(), 0);
    auto ids = nlohmann::json::array();
    for (const auto& cand : cands) {
      ids.push_back(cand.id);
      ++per_queue[cand.queue];
    }
    for (std::size_t i = 0; i < names.size(); ++i) {
      if (!rated[i] || per_queue[i] == 0) continue;
      c.query(d::sql_rate_record, "claim: record in rate ledger").bind(1, *names[i]).bind(2, t_ms).bind(3, per_queue[i]).run();
    }
    return ids;
  }

  static void exec_on(sqlite3* db, const char* sql, std::string_view what) {
    const int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) throw detail::sqlite::error_from(db, sqlite3_extended_errcode(db), what);
  }

  // Runs f(connection) in a BEGIN IMMEDIATE transaction on the writer; rolls back if it throws.
  template <class F>
  auto write(std::string_view what, F&& f) -> std::invoke_result_t<F&, detail::sqlite::Connection&> {
    if (opt_.read_only) {
      throw SqliteError(ErrorCategory::backend,
                        "sqlite: " + std::string(what) + ": database '" + path_ + "' is open read-only", SQLITE_READONLY);
    }
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

  // When the non-paused queues may next have a claimable job: the earliest run_at of a queued
  // job, except that for a limited queue whose ready jobs are all held back, the time its rate
  // window frees a start, or (group slots full) its next delayed job; a slot freed by a
  // completion is then found by the next poll. Without that a worker would spin on empty claims.
  std::optional<TimePoint> next_due(std::span<const std::string> queues) {
    namespace d = detail::sqlite;
    try {
      return read("poll for work", [&](d::Connection& c) {
        const auto t_ms = to_epoch_ms(now());
        std::optional<std::int64_t> due;
        for (const auto& q : queues) {
          const auto st = d::read_settings(c, q);
          if (st.paused) continue;
          std::optional<std::int64_t> q_due;
          {
            auto s = c.query(d::sql_next_due, "poll for work");
            s.bind(1, q);
            if (s.step() && !s.is_null(0)) q_due = s.integer(0);
          }
          if (q_due && *q_due <= t_ms && st.limited()) q_due = limited_due(c, q, st.limits, t_ms);
          if (q_due && (!due || *q_due < *due)) due = q_due;
        }
        return due ? std::optional<TimePoint>(from_epoch_ms(*due)) : std::nullopt;
      });
    } catch (const Error& e) {
      // A busy file is only a missed hint: "due now", the next claim will wait its turn. Any
      // other failure (a corrupt page) is thrown, so the worker reports it to on_error instead
      // of waiting for work forever.
      if (e.category() != ErrorCategory::conflict && !e.is_transient()) throw;
      return now();
    }
  }

  // next_due of a limited queue that has ready jobs (read-only: the ledger is pruned by claims).
  static std::optional<std::int64_t> limited_due(detail::sqlite::Connection& c, const std::string& q,
                                                 const QueueLimits& l, std::int64_t t_ms) {
    namespace d = detail::sqlite;
    if (l.rate) {
      auto s = c.query(d::sql_rate_used, "poll for work: rate ledger");
      s.bind(1, q).bind(2, t_ms - l.rate->window.count());
      if (s.step() && s.integer(0) >= l.rate->max && !s.is_null(1)) return s.integer(1) + l.rate->window.count();
    }
    if (l.group_concurrency > 0) {
      std::set<std::string> full;
      {
        auto s = c.query(d::sql_group_active, "poll for work: active jobs per group");
        s.bind(1, q);
        while (s.step()) {
          if (s.integer(1) >= l.group_concurrency) full.insert(s.text(0));
        }
      }
      auto ex = nlohmann::json::array();
      for (const auto& g : full) ex.push_back(g);
      {
        auto s = c.query(d::sql_candidates, "poll for work: candidates");
        s.bind(1, q).bind(2, t_ms).bind(3, ex.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
        while (s.step()) {
          if (s.is_null(3) || !full.contains(s.text(3))) return t_ms;
        }
      }
      auto s = c.query(d::sql_next_delayed, "poll for work: next delayed");
      s.bind(1, q).bind(2, t_ms);
      if (s.step() && !s.is_null(0)) return s.integer(0);
      return std::nullopt;
    }
    return t_ms;
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
    if (opt_.read_only) {
      throw SqliteError(ErrorCategory::conflict,
                        "sqlite: database '" + path_ + "' is open read-only and has jobq schema version " +
                            std::to_string(seen) + ", older than the " + std::to_string(d::latest_schema_version()) +
                            " this build reads; open it writable once to upgrade it",
                        SQLITE_READONLY);
    }
    std::lock_guard lock(write_mutex_);
    // Migration 6 edits sqlite_schema, which SQLITE_DBCONFIG_DEFENSIVE (on in some builds)
    // forbids; this connection is jobq's own.
    sqlite3_db_config(c.handle(), SQLITE_DBCONFIG_DEFENSIVE, 0, nullptr);
    bool edited = false;
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
        if (m.edits_schema_text) {
          auto v = c.query("PRAGMA schema_version", "migrate schema: read schema_version");
          v.step();
          const auto next = v.integer(0) + 1;
          v.reset();
          c.exec(("PRAGMA schema_version = " + std::to_string(next)).c_str(), "migrate schema: bump schema_version");
          edited = true;
        }
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
    // This connection may still hold the definitions it parsed before the edit.
    if (edited) writer_ = std::make_unique<detail::sqlite::Connection>(path_, opt_);
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

  std::shared_ptr<NoticeHub> hub_;  // shared by every object on this file in this process
};

static_assert(Backend<SqliteBackend>);

}  // namespace jobq
