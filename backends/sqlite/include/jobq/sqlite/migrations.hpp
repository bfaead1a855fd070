#pragma once

// The schema's history: the migrations, oldest first, and migrate(), which brings a file up to
// the latest (or refuses one written by a newer jobq).

#include <sqlite3.h>

#include <array>
#include <cstddef>
#include <mutex>
#include <span>
#include <string>
#include <string_view>

#include "jobq/sqlite/connection.hpp"
#include "jobq/sqlite/error.hpp"
#include "jobq/sqlite/statements.hpp"
#include "jobq/time.hpp"

namespace jobq::detail::sqlite {

/// @brief One step in the schema's history; applied in order, each recorded in
/// jobq_schema_version so re-opening an older file upgrades it.
struct Migration {
  int version;
  std::string_view description;
  const char* sql;  ///< NUL-terminated: run by sqlite3_exec (several statements)
  bool edits_schema_text = false;  ///< rewrites sqlite_schema: schema_version must be bumped
};

/// @brief Every migration, oldest first. Append only: never edit one that has shipped (a file's
/// stored table definitions are these texts, and migrations 6 and 7 rewrite one of them).
inline constexpr std::array<Migration, 10> all_migrations{{
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
  {7, "flows: members, dependencies, waiting jobs, error callbacks",
   R"sql(
-- Set when a member's flow is stored, never changed. depends_on comes last: reading the other
-- columns never walks its overflow pages (a chord's callback lists every member).
ALTER TABLE jobq_jobs ADD COLUMN flow_id INTEGER;  -- NULL: in no flow; else its first member's id
ALTER TABLE jobq_jobs ADD COLUMN continue_on_failure INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobq_jobs ADD COLUMN depends_on TEXT;  -- JSON array of ids, in result order; NULL: none
-- flow(), cancel_flow, prune: a flow's members.
CREATE INDEX jobq_jobs_flow ON jobq_jobs (flow_id) WHERE flow_id IS NOT NULL;
-- Dependency -> dependents: what a completion, death or cancel settles, what a redrive revives.
CREATE TABLE jobq_deps (
  dep_id INTEGER NOT NULL,
  job_id INTEGER NOT NULL,
  PRIMARY KEY (dep_id, job_id)
) WITHOUT ROWID;
-- A row per waiting job: its unresolved dependencies. Apart from jobq_jobs so that each
-- completion of a chord member rewrites this small row, not the callback's long one.
CREATE TABLE jobq_waiting (
  job_id  INTEGER PRIMARY KEY,
  pending INTEGER NOT NULL
);
-- Flows with an error callback: the job (to_json(NewJob)), and whether it was enqueued (or the
-- flow cancelled).
CREATE TABLE jobq_flows (
  id         INTEGER PRIMARY KEY,  -- the flow's id
  on_failure TEXT    NOT NULL,
  fired      INTEGER NOT NULL DEFAULT 0
);
-- The state check admits 'waiting'. Loosening a CHECK cannot break a stored row, so the text is
-- edited in place as in migration 6 (after the ALTERs above, which reparse the table).
PRAGMA writable_schema = ON;
UPDATE sqlite_schema SET sql = replace(sql,
    'OR state = ''dead'' OR state = ''cancelled'')',
    'OR state = ''dead'' OR state = ''cancelled'' OR state = ''waiting'')')
  WHERE type = 'table' AND name = 'jobq_jobs';
PRAGMA writable_schema = OFF;
)sql", true},
  {8, "worker registry",
   R"sql(
-- One row per registered Worker: its WorkerInfo as JSON, and its expiry beside it so that each
-- registration deletes the expired rows by index.
CREATE TABLE jobq_workers (
  id         TEXT    PRIMARY KEY,
  expires_at INTEGER NOT NULL,  -- epoch ms
  info       TEXT    NOT NULL   -- JSON (to_json(WorkerInfo))
) WITHOUT ROWID;
CREATE INDEX jobq_workers_expiry ON jobq_workers (expires_at);
)sql"},
  {9, "queue concurrency",
   R"sql(
-- claim takes at most concurrency minus the queue's active jobs (jobq_counts); 0: unlimited.
ALTER TABLE jobq_queues ADD COLUMN concurrency INTEGER NOT NULL DEFAULT 0;
)sql"},
  {10, "deadlines of queued jobs",
   R"sql(
-- EnqueueOptions::expires_at, epoch ms; NULL: no deadline. A queued job past it is never claimed.
ALTER TABLE jobq_jobs ADD COLUMN expires_at INTEGER;
-- The claim steps over jobs past their deadline: the claim order index carries expires_at, so it
-- still covers the claim's pick (no row read until the update).
DROP INDEX jobq_jobs_ready;
CREATE INDEX jobq_jobs_ready ON jobq_jobs (queue, priority DESC, run_at, id, group_key, state, expires_at)
  WHERE state = 'queued';
-- recover_expired: queued jobs with a deadline only, so jobs without one never write to it.
CREATE INDEX jobq_jobs_deadline ON jobq_jobs (expires_at) WHERE state = 'queued' AND expires_at IS NOT NULL;
)sql"},
}};

static_assert([] {
  for (std::size_t i = 0; i < all_migrations.size(); ++i) {
    if (all_migrations[i].version != static_cast<int>(i) + 1) return false;
  }
  return true;
}(), "migrations are numbered 1, 2, 3, ... in order");

/// @brief Every migration, oldest first.
inline std::span<const Migration> migrations() { return all_migrations; }

/// @brief The schema version this header writes and understands.
inline constexpr int latest_schema_version() { return all_migrations.back().version; }

/// @brief The schema version of the file on `c` (0: no jobq schema yet).
inline int stored_schema_version(Connection& c) {
  auto has = c.query(sql::has_version_table, "read schema version");
  has.step();
  if (has.integer(0) == 0) return 0;
  has.reset();
  auto v = c.query(sql::read_version, "read schema version");
  v.step();
  return static_cast<int>(v.integer(0));
}

/// @brief Creates or upgrades the schema of the pool's file to latest_schema_version(); refuses
/// a file written by a newer jobq, and an older one opened read-only. Called by the backend's
/// constructor, before any other thread has the pool.
inline void migrate(ConnectionPool& pool, const std::string& path, bool read_only, const ClockFn& clock) {
  auto& c = pool.writer();
  const auto refuse_newer = [&](int v) {
    if (v > latest_schema_version()) {
      throw SqliteError(ErrorCategory::conflict,
                        "sqlite: database '" + path + "' has jobq schema version " + std::to_string(v) +
                            ", newer than the " + std::to_string(latest_schema_version()) +
                            " this build supports; upgrade jobq to open it",
                        SQLITE_ERROR);
    }
  };
  const int seen = stored_schema_version(c);  // most opens find the schema current: no write lock needed
  refuse_newer(seen);
  if (seen == latest_schema_version()) return;
  if (read_only) {
    throw SqliteError(ErrorCategory::conflict,
                      "sqlite: database '" + path + "' is open read-only and has jobq schema version " +
                          std::to_string(seen) + ", older than the " + std::to_string(latest_schema_version()) +
                          " this build reads; open it writable once to upgrade it",
                      SQLITE_READONLY);
  }
  const auto lock = pool.lock_writer();
  // Migration 6 edits sqlite_schema, which SQLITE_DBCONFIG_DEFENSIVE (on in some builds)
  // forbids; this connection is jobq's own.
  sqlite3_db_config(c.handle(), SQLITE_DBCONFIG_DEFENSIVE, 0, nullptr);
  bool edited = false;
  c.exec(sql::begin_immediate.data(), "migrate schema: begin");
  try {
    c.exec(sql::create_version_table.data(), "migrate schema: create version table");
    const int from = stored_schema_version(c);  // again, under the lock: another process may have migrated
    refuse_newer(from);
    for (const auto& m : all_migrations) {
      if (m.version <= from) continue;
      c.exec(m.sql, "migrate schema to version " + std::to_string(m.version));
      if (m.edits_schema_text) {
        auto v = c.query(sql::read_schema_cookie, "migrate schema: read schema_version");
        v.step();
        const auto next = v.integer(0) + 1;
        v.reset();
        c.exec(sql::with_number(sql::set_schema_cookie, next).c_str(), "migrate schema: bump schema_version");
        edited = true;
      }
      c.query(sql::record_version, "migrate schema")
          .bind(1, m.version)
          .bind(2, m.description)
          .bind(3, to_epoch_ms(clock()))
          .run();
    }
    c.exec(sql::commit.data(), "migrate schema: commit");
  } catch (...) {
    c.rollback();
    throw;
  }
  // This connection may still hold the definitions it parsed before the edit.
  if (edited) pool.reopen_writer();
}

}  // namespace jobq::detail::sqlite
