#pragma once

// Every SQL statement of the SQLite backend except the migrations (migrations.hpp), each with
// the index it relies on. The schema they read is the one migrations.hpp builds.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace jobq::detail::sqlite::sql {

/// @brief True when `s` ends where a string literal does, so `s.data()` may go to sqlite3_exec,
/// which reads up to the NUL.
consteval bool ends_in_nul(std::string_view s) { return s.data()[s.size()] == '\0'; }

// Transactions. Every write of the backend's own takes BEGIN IMMEDIATE: the write lock before
// the first read, so a transaction never has to upgrade its lock (and fail SQLITE_BUSY) halfway.
inline constexpr std::string_view begin_immediate = R"sql(BEGIN IMMEDIATE)sql";
inline constexpr std::string_view commit = R"sql(COMMIT)sql";
inline constexpr std::string_view rollback = R"sql(ROLLBACK)sql";
// Transactional enqueue inside a caller's open transaction: its statements all or nothing.
inline constexpr std::string_view savepoint_enqueue = R"sql(SAVEPOINT jobq_enqueue)sql";
inline constexpr std::string_view release_enqueue = R"sql(RELEASE jobq_enqueue)sql";
inline constexpr std::string_view rollback_enqueue = R"sql(ROLLBACK TO jobq_enqueue; RELEASE jobq_enqueue)sql";

// Opening a connection (connection.hpp). PRAGMAs take no bound parameters, so the two with a
// number (page_size, schema_version) get it appended to these texts.
inline constexpr std::string_view set_page_size = R"sql(PRAGMA page_size = )sql";
inline constexpr std::string_view read_page_size = R"sql(PRAGMA page_size)sql";
inline constexpr std::string_view set_wal_mode = R"sql(PRAGMA journal_mode = WAL)sql";
/// @brief Indexed by SqliteSynchronous.
inline constexpr std::array<std::string_view, 4> set_synchronous = {
    R"sql(PRAGMA synchronous = OFF)sql", R"sql(PRAGMA synchronous = NORMAL)sql",
    R"sql(PRAGMA synchronous = FULL)sql", R"sql(PRAGMA synchronous = EXTRA)sql"};
inline constexpr std::string_view set_temp_store_memory = R"sql(PRAGMA temp_store = MEMORY)sql";
// A WAL that grew while a long reader held back checkpoints is cut back to 16 MB when it is next
// reset (SQLite otherwise keeps the file at its largest size forever).
inline constexpr std::string_view set_wal_size_limit = R"sql(PRAGMA journal_size_limit = 16777216)sql";
// A read-only open's probe: fails when the file cannot be read at all (no WAL index possible).
inline constexpr std::string_view probe_schema = R"sql(SELECT count(*) FROM sqlite_schema)sql";

// Schema bookkeeping (migrations.hpp).
inline constexpr std::string_view has_version_table = R"sql(
SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'jobq_schema_version'
)sql";
inline constexpr std::string_view read_version = R"sql(
SELECT coalesce(max(version), 0) FROM jobq_schema_version
)sql";
// One line, as files have stored it in sqlite_schema since the first release.
inline constexpr std::string_view create_version_table =
    R"sql(CREATE TABLE IF NOT EXISTS jobq_schema_version (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at INTEGER NOT NULL))sql";
inline constexpr std::string_view record_version = R"sql(
INSERT INTO jobq_schema_version (version, description, applied_at) VALUES (?1, ?2, ?3)
)sql";
inline constexpr std::string_view read_schema_cookie = R"sql(PRAGMA schema_version)sql";
inline constexpr std::string_view set_schema_cookie = R"sql(PRAGMA schema_version = )sql";

/// @brief `pragma` (set_page_size, set_schema_cookie) with its number appended.
inline std::string with_number(std::string_view pragma, std::int64_t n) {
  std::string text(pragma);
  text += std::to_string(n);
  return text;
}

static_assert(ends_in_nul(commit) && ends_in_nul(rollback) && ends_in_nul(begin_immediate) &&
              ends_in_nul(savepoint_enqueue) && ends_in_nul(release_enqueue) && ends_in_nul(rollback_enqueue) &&
              ends_in_nul(set_temp_store_memory) && ends_in_nul(probe_schema) &&
              ends_in_nul(create_version_table));
static_assert(ends_in_nul(set_synchronous[0]) && ends_in_nul(set_synchronous[1]) &&
              ends_in_nul(set_synchronous[2]) && ends_in_nul(set_synchronous[3]));

/// @brief The columns of a whole job, in the order decode() (rows.hpp) reads them; every
/// statement returning jobs selects exactly this list (checked below each).
inline constexpr std::string_view job_columns = R"sql(id, queue, name, payload, state, priority, attempts,
  max_attempts, run_at, created_at, finished_at, lease_until, lease_token, backoff, timeout_ms,
  unique_key, unique_for_ms, result, errors, progress, progress_message, group_key,
  flow_id, continue_on_failure, depends_on, expires_at)sql";

/// @brief True when `statement` selects job_columns as one piece.
consteval bool has_job_columns(std::string_view statement) {
  return statement.find(job_columns) != std::string_view::npos;
}

// Enqueue.

// jobq_jobs_unique (its rowid order gives the newest first). The key's holder is the latest
// job of the queue with that key, in any state; enqueue decides from its state what to do.
inline constexpr std::string_view find_holder = R"sql(
SELECT id, state, finished_at, unique_for_ms, created_at FROM jobq_jobs
WHERE queue = ?1 AND unique_key = ?2 ORDER BY id DESC LIMIT 1
)sql";

// Debounce: the queued holder takes the latest payload and runs debounce after this enqueue.
inline constexpr std::string_view debounce = R"sql(
UPDATE jobq_jobs SET payload = ?2, run_at = ?3 WHERE id = ?1 AND state = 'queued'
)sql";

// No RETURNING on the backend's own writer: it buffers its rows in an ephemeral table, a new
// in-memory b-tree per statement; the id is sqlite3_last_insert_rowid, which the counts
// trigger's own insert does not change once the statement is done, and which no other thread
// can change (the writer is used under its mutex). A caller's connection (transactional
// enqueue) may be shared by threads, so there the id comes back with the row (insert_returning).
inline constexpr std::string_view insert = R"sql(
INSERT INTO jobq_jobs (queue, name, payload, state, priority, max_attempts, run_at, created_at,
  backoff, timeout_ms, unique_key, unique_for_ms, group_key, expires_at)
VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
)sql";
inline constexpr std::string_view insert_returning = R"sql(
INSERT INTO jobq_jobs (queue, name, payload, state, priority, max_attempts, run_at, created_at,
  backoff, timeout_ms, unique_key, unique_for_ms, group_key, expires_at)
VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) RETURNING id
)sql";

// Claim.

// A queue's paused flag and limits (no row: not paused, no limits).
inline constexpr std::string_view queue_settings = R"sql(
SELECT paused, group_concurrency, rate_max, rate_window_ms, concurrency FROM jobq_queues WHERE name = ?1
)sql";

// A queue's active jobs (jobq_counts, kept by triggers): for its concurrency limit.
inline constexpr std::string_view queue_active = R"sql(
SELECT n FROM jobq_counts WHERE queue = ?1 AND state = 'active'
)sql";

// Picks the ids a claim from one unlimited, non-paused queue leases: ?1 = now, ?2 = limit,
// ?4 = the queue. A job past its deadline is stepped over (recover_expired ends it); the index
// carries expires_at, so it still covers the pick. It walks jobq_jobs_ready in claim order and stops after ?2 rows, so a batch
// costs O(limit) index steps however many jobs wait (ready ones; delayed jobs of a higher
// priority are stepped over). INDEXED BY because, without ANALYZE statistics, the planner
// preferred the run_at range of an index on (queue, run_at) and sorted every ready job.
inline constexpr std::string_view claim_pick_one_queue = R"sql(
SELECT id FROM jobq_jobs INDEXED BY jobq_jobs_ready WHERE state = 'queued' AND queue = ?4
AND run_at <= ?1 AND (expires_at IS NULL OR expires_at >= ?1) ORDER BY priority DESC, run_at, id LIMIT ?2
)sql";

/// @brief claim_pick_one_queue for `n` queues, ?4… : each queue is its own arm (stopping after
/// ?2 rows, so O(limit · queues) index steps), the arms merged. Built, not a constant: it has
/// one arm per queue of the claim. Each text stays prepared in its connection's cache.
inline std::string claim_pick(std::size_t n) {
  if (n == 1) return std::string(claim_pick_one_queue);
  std::string arms;
  for (std::size_t i = 0; i < n; ++i) {
    std::string p = "?";  // not "?" + std::string: GCC 12 -O3 reports a false -Wrestrict on it
    p += std::to_string(i + 4);
    if (i > 0) arms += " UNION ALL ";
    arms += "SELECT * FROM (SELECT id, priority, run_at FROM jobq_jobs INDEXED BY jobq_jobs_ready "
            "WHERE state = 'queued' AND queue = " +
            p + " AND run_at <= ?1 AND (expires_at IS NULL OR expires_at >= ?1) ORDER BY priority DESC, run_at, id LIMIT ?2)";
  }
  return "SELECT id FROM (" + arms + ") ORDER BY priority DESC, run_at, id LIMIT ?2";
}

// The claim of a batch: one UPDATE … WHERE id IN (the pick) RETURNING the jobs; ?3 = lease_until.
inline constexpr std::string_view claim_batch_head = R"sql(
UPDATE jobq_jobs SET state = 'active', attempts = attempts + 1,
  lease_token = lower(hex(randomblob(16))), lease_until = ?3 WHERE id IN (
)sql";
inline constexpr std::string_view claim_batch_tail = R"sql(
) RETURNING id, queue, name, payload, state, priority, attempts,
  max_attempts, run_at, created_at, finished_at, lease_until, lease_token, backoff, timeout_ms,
  unique_key, unique_for_ms, result, errors, progress, progress_message, group_key,
  flow_id, continue_on_failure, depends_on, expires_at
)sql";
static_assert(has_job_columns(claim_batch_tail));

/// @brief The batch claim from `n` queues: claim_batch_head, claim_pick(n), claim_batch_tail.
inline std::string claim_batch(std::size_t n) {
  std::string out(claim_batch_head);
  out += claim_pick(n);
  out += claim_batch_tail;
  return out;
}

// A claim of one job: picked (claim_pick), leased and read by primary key (read_job), three
// plain statements instead of claim_batch's UPDATE … IN (…) RETURNING, whose IN list and
// RETURNING rows each build an ephemeral in-memory b-tree: 30% fewer instructions per single
// claim. A batch takes claim_batch (there the per-statement cost of two statements per job is more).
inline constexpr std::string_view lease_one = R"sql(
UPDATE jobq_jobs SET state = 'active', attempts = attempts + 1,
  lease_token = lower(hex(randomblob(16))), lease_until = ?2 WHERE id = ?1 AND state = 'queued'
)sql";

// Leases the jobs whose ids are in the JSON array ?2 (chosen by a limited claim).
inline constexpr std::string_view claim_ids = R"sql(
UPDATE jobq_jobs SET state = 'active', attempts = attempts + 1,
  lease_token = lower(hex(randomblob(16))), lease_until = ?1
WHERE id IN (SELECT value FROM json_each(?2)) AND state = 'queued'
RETURNING id, queue, name, payload, state, priority, attempts,
  max_attempts, run_at, created_at, finished_at, lease_until, lease_token, backoff, timeout_ms,
  unique_key, unique_for_ms, result, errors, progress, progress_message, group_key,
  flow_id, continue_on_failure, depends_on, expires_at
)sql";
static_assert(has_job_columns(claim_ids));

// jobq_jobs_group_active: only active jobs with a group, so as many rows as running jobs.
inline constexpr std::string_view group_active = R"sql(
SELECT group_key, count(*) FROM jobq_jobs WHERE queue = ?1 AND state = 'active'
AND group_key IS NOT NULL GROUP BY group_key
)sql";

// Ready jobs of a limited queue in claim order, without the groups in the JSON array ?3 (the
// saturated ones). Stepped only as far as the claim needs (no LIMIT: the index gives the order).
inline constexpr std::string_view candidates = R"sql(
SELECT id, priority, run_at, group_key FROM jobq_jobs INDEXED BY jobq_jobs_ready
WHERE state = 'queued' AND queue = ?1 AND run_at <= ?2 AND (expires_at IS NULL OR expires_at >= ?2)
AND (group_key IS NULL OR group_key NOT IN (SELECT value FROM json_each(?3)))
ORDER BY priority DESC, run_at, id
)sql";

// jobq_rate_ledger_queue. ?2 = now - window: claims at or before it no longer count.
inline constexpr std::string_view rate_prune = R"sql(
DELETE FROM jobq_rate_ledger WHERE queue = ?1 AND at_ms <= ?2
)sql";
inline constexpr std::string_view rate_used = R"sql(
SELECT coalesce(sum(n), 0), min(at_ms) FROM jobq_rate_ledger WHERE queue = ?1 AND at_ms > ?2
)sql";
inline constexpr std::string_view rate_forget = R"sql(DELETE FROM jobq_rate_ledger WHERE queue = ?1)sql";
inline constexpr std::string_view rate_record = R"sql(
INSERT INTO jobq_rate_ledger (queue, at_ms, n) VALUES (?1, ?2, ?3)
)sql";

// A claimed job whose stored row cannot be decoded: dead at once, so it never blocks a queue.
// The stored columns are left as they are for inspection; errors restarts if it is the broken one.
inline constexpr std::string_view kill_corrupt = R"sql(
UPDATE jobq_jobs SET
  errors = json_insert(CASE WHEN json_valid(errors) AND json_type(errors) = 'array' THEN errors
    ELSE '[]' END, '$[#]', json_object('attempt', attempts, 'message', json(?3), 'at', ?2)),
  state = 'dead', finished_at = ?2, lease_token = NULL, lease_until = NULL
WHERE id = ?1 RETURNING flow_id
)sql";

// Lease holders. Primary key; only the holder of the current lease token matches.

inline constexpr std::string_view complete = R"sql(
UPDATE jobq_jobs SET state = 'completed', finished_at = ?3, result = ?4, lease_token = NULL,
  lease_until = NULL
WHERE id = ?1 AND state = 'active' AND lease_token = ?2
)sql";
// The same, returning what a notice needs; used only while someone in this process listens, so
// the hot path without subscribers stays as it was.
inline constexpr std::string_view complete_notice = R"sql(
UPDATE jobq_jobs SET state = 'completed', finished_at = ?3, result = ?4, lease_token = NULL,
  lease_until = NULL
WHERE id = ?1 AND state = 'active' AND lease_token = ?2 RETURNING queue, attempts
)sql";

// The error is passed as JSON text (json(?4)) so its string is escaped and valid UTF-8.
inline constexpr std::string_view fail = R"sql(
UPDATE jobq_jobs SET
  errors = json_insert(errors, '$[#]', json_object('attempt', attempts, 'message', json(?4), 'at', ?3)),
  state = CASE WHEN ?5 IS NOT NULL AND attempts < max_attempts THEN 'queued' ELSE 'dead' END,
  run_at = CASE WHEN ?5 IS NOT NULL AND attempts < max_attempts THEN ?5 ELSE run_at END,
  finished_at = CASE WHEN ?5 IS NOT NULL AND attempts < max_attempts THEN NULL ELSE ?3 END,
  lease_token = NULL, lease_until = NULL
WHERE id = ?1 AND state = 'active' AND lease_token = ?2 RETURNING state, queue, attempts, flow_id
)sql";

inline constexpr std::string_view extend_lease = R"sql(
UPDATE jobq_jobs SET lease_until = ?3 WHERE id = ?1 AND state = 'active' AND lease_token = ?2
)sql";

// snooze, and release (run_at = now).
inline constexpr std::string_view release = R"sql(
UPDATE jobq_jobs SET state = 'queued', run_at = ?3, attempts = attempts - 1,
  lease_token = NULL, lease_until = NULL
WHERE id = ?1 AND state = 'active' AND lease_token = ?2
)sql";

inline constexpr std::string_view set_progress = R"sql(
UPDATE jobq_jobs SET progress = ?3, progress_message = ?4
WHERE id = ?1 AND state = 'active' AND lease_token = ?2 RETURNING queue, attempts
)sql";

// jobq_jobs_leases.
inline constexpr std::string_view recover_expired = R"sql(
UPDATE jobq_jobs SET
  errors = json_insert(errors, '$[#]', json_object('attempt', attempts, 'message', ?2, 'at', ?1)),
  state = CASE WHEN attempts < max_attempts THEN 'queued' ELSE 'dead' END,
  run_at = CASE WHEN attempts < max_attempts THEN ?1 ELSE run_at END,
  finished_at = CASE WHEN attempts < max_attempts THEN NULL ELSE ?1 END,
  lease_token = NULL, lease_until = NULL
WHERE state = 'active' AND lease_until <= ?1 RETURNING state, id, queue, attempts, flow_id
)sql";

// jobq_jobs_deadline: queued jobs past their deadline (?1 = now), at most ?2, for recover_expired.
inline constexpr std::string_view due_deadlines = R"sql(
SELECT id, expires_at FROM jobq_jobs WHERE state = 'queued' AND expires_at IS NOT NULL AND expires_at < ?1
ORDER BY expires_at LIMIT ?2
)sql";
// An expiring job's reason (?2, JSON text) at ?3, appended just before cancel ends it.
inline constexpr std::string_view note_expired = R"sql(
UPDATE jobq_jobs SET errors = json_insert(errors, '$[#]', json_object('attempt', attempts, 'message', json(?2), 'at', ?3))
WHERE id = ?1 AND state = 'queued'
)sql";

// Jobs.

// Primary key (get; a single claim reads its job back).
inline constexpr std::string_view read_job = R"sql(
SELECT id, queue, name, payload, state, priority, attempts,
  max_attempts, run_at, created_at, finished_at, lease_until, lease_token, backoff, timeout_ms,
  unique_key, unique_for_ms, result, errors, progress, progress_message, group_key,
  flow_id, continue_on_failure, depends_on, expires_at
FROM jobq_jobs WHERE id = ?1
)sql";
static_assert(has_job_columns(read_job));

// Queued, waiting or active: an active job's lease goes, so its worker's calls are refused.
inline constexpr std::string_view cancel = R"sql(
UPDATE jobq_jobs SET state = 'cancelled', finished_at = ?2, lease_token = NULL, lease_until = NULL
WHERE id = ?1 AND (state = 'queued' OR state = 'waiting' OR state = 'active') RETURNING queue, flow_id
)sql";

inline constexpr std::string_view redrive = R"sql(
UPDATE jobq_jobs SET state = 'queued', run_at = ?2, attempts = 0, finished_at = NULL
WHERE id = ?1 AND state = 'dead'
)sql";

// Queues.

inline constexpr std::string_view set_paused = R"sql(
INSERT INTO jobq_queues (name, paused) VALUES (?1, ?2)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused
)sql";

inline constexpr std::string_view is_paused = R"sql(SELECT paused FROM jobq_queues WHERE name = ?1)sql";

// Queues with jobs (jobq_counts) or a paused flag (jobq_queues).
inline constexpr std::string_view queues = R"sql(
SELECT queue FROM jobq_counts WHERE n > 0 UNION SELECT name FROM jobq_queues ORDER BY 1
)sql";

// jobq_counts (migration 3), kept by triggers, and a row 'delayed': the queued jobs with
// run_at > ?2, counted per distinct priority in jobq_jobs_ready (the skip scan of next_due
// below), so ready jobs are stepped over by seeks, not counted one by one. One statement: one
// snapshot, so delayed never exceeds queued.
inline constexpr std::string_view counts = R"sql(
WITH RECURSIVE p(pr) AS (
  SELECT (SELECT priority FROM jobq_jobs INDEXED BY jobq_jobs_ready WHERE state = 'queued'
          AND queue = ?1 ORDER BY priority DESC LIMIT 1)
  UNION ALL SELECT (SELECT priority FROM jobq_jobs INDEXED BY jobq_jobs_ready WHERE state = 'queued'
          AND queue = ?1 AND priority < p.pr ORDER BY priority DESC LIMIT 1) FROM p WHERE p.pr IS NOT NULL)
SELECT state, n FROM jobq_counts WHERE queue = ?1
UNION ALL
SELECT 'delayed', coalesce(sum((SELECT count(*) FROM jobq_jobs INDEXED BY jobq_jobs_ready WHERE state = 'queued'
                                  AND queue = ?1 AND priority = p.pr AND run_at > ?2)), 0)
FROM p WHERE p.pr IS NOT NULL
)sql";

// jobq_jobs_finished; at most ?4 jobs (one batch: prune loops, a transaction per batch).
inline constexpr std::string_view prune = R"sql(
DELETE FROM jobq_jobs WHERE id IN (
  SELECT id FROM jobq_jobs WHERE queue = ?1 AND state = ?2 AND finished_at IS NOT NULL
  AND finished_at < ?3 AND flow_id IS NULL LIMIT ?4)
)sql";
// jobq_jobs_finished, read backwards (its implicit last column is the id): the newest job past
// the newest ?3, i.e. the first one prune_before deletes (no row: nothing to cut). Flow members
// are pruned with their flow (flow_prunable), and not counted here.
inline constexpr std::string_view prune_cutoff = R"sql(
SELECT finished_at, id FROM jobq_jobs INDEXED BY jobq_jobs_finished WHERE queue = ?1 AND state = ?2
  AND finished_at IS NOT NULL AND flow_id IS NULL ORDER BY finished_at DESC, id DESC LIMIT 1 OFFSET ?3
)sql";
// jobq_jobs_finished: at most ?5 jobs at or before (finished_at ?3, id ?4) (a batch of the cut).
inline constexpr std::string_view prune_before = R"sql(
DELETE FROM jobq_jobs WHERE id IN (
  SELECT id FROM jobq_jobs INDEXED BY jobq_jobs_finished WHERE queue = ?1 AND state = ?2
  AND finished_at IS NOT NULL AND flow_id IS NULL AND (finished_at, id) <= (?3, ?4) LIMIT ?5)
)sql";

// jobq_jobs_by_state.
inline constexpr std::string_view list_jobs = R"sql(
SELECT id, queue, name, payload, state, priority, attempts,
  max_attempts, run_at, created_at, finished_at, lease_until, lease_token, backoff, timeout_ms,
  unique_key, unique_for_ms, result, errors, progress, progress_message, group_key,
  flow_id, continue_on_failure, depends_on, expires_at
FROM jobq_jobs WHERE queue = ?1 AND state = ?2 ORDER BY id LIMIT ?3 OFFSET ?4
)sql";
static_assert(has_job_columns(list_jobs));

inline constexpr std::string_view set_limits = R"sql(
INSERT INTO jobq_queues (name, paused, group_concurrency, rate_max, rate_window_ms, concurrency)
VALUES (?1, 0, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO UPDATE SET
  group_concurrency = excluded.group_concurrency, rate_max = excluded.rate_max,
  rate_window_ms = excluded.rate_window_ms, concurrency = excluded.concurrency
)sql";

// Schedules: name is the primary key.

inline constexpr std::string_view put_schedule = R"sql(
INSERT INTO jobq_schedules (name, spec, next_run) VALUES (?1, ?2, ?3)
ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, next_run = excluded.next_run
)sql";
inline constexpr std::string_view remove_schedule = R"sql(DELETE FROM jobq_schedules WHERE name = ?1)sql";
inline constexpr std::string_view schedules = R"sql(SELECT name, spec, next_run FROM jobq_schedules ORDER BY name)sql";
// The compare-and-set that makes each tick fire once, whoever races for it.
inline constexpr std::string_view fire_schedule = R"sql(
UPDATE jobq_schedules SET next_run = ?3 WHERE name = ?1 AND next_run = ?2
)sql";

// The worker registry (migration 8): id is the primary key; jobq_workers_expiry for the rest.

// register_worker, in one transaction: the expired entries go, then the upsert.
inline constexpr std::string_view prune_workers = R"sql(DELETE FROM jobq_workers WHERE expires_at < ?1)sql";
inline constexpr std::string_view put_worker = R"sql(
INSERT INTO jobq_workers (id, expires_at, info) VALUES (?1, ?2, ?3)
ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at, info = excluded.info
)sql";
inline constexpr std::string_view remove_worker = R"sql(DELETE FROM jobq_workers WHERE id = ?1)sql";
// By id in BINARY collation: byte order, as std::string compares.
inline constexpr std::string_view workers = R"sql(
SELECT id, info FROM jobq_workers WHERE expires_at >= ?1 ORDER BY id
)sql";

// Flows (migration 7).

// get_many: primary key, once per id of the JSON array ?1 (in no particular order).
inline constexpr std::string_view read_jobs = R"sql(
SELECT id, queue, name, payload, state, priority, attempts,
  max_attempts, run_at, created_at, finished_at, lease_until, lease_token, backoff, timeout_ms,
  unique_key, unique_for_ms, result, errors, progress, progress_message, group_key,
  flow_id, continue_on_failure, depends_on, expires_at
FROM jobq_jobs WHERE id IN (SELECT value FROM json_each(?1))
)sql";
static_assert(has_job_columns(read_jobs));

// run_now: a queued job not yet due (?2: now) becomes due now; primary key.
inline constexpr std::string_view run_now = R"sql(
UPDATE jobq_jobs SET run_at = ?2 WHERE id = ?1 AND state = 'queued' AND run_at > ?2
)sql";

// remove: a finished job outside flows, as prune deletes one (the counts triggers follow; its
// unique key goes with the row: find_holder then finds an older job with the key, or none).
inline constexpr std::string_view remove_job = R"sql(
DELETE FROM jobq_jobs WHERE id = ?1 AND state IN ('completed', 'dead', 'cancelled')
AND finished_at IS NOT NULL AND flow_id IS NULL
)sql";

// find_unique reads the key's holder with find_holder (as enqueue does) and decides as enqueue.

// jobq_jobs_flow: every member of the flow job ?1 belongs to, by id.
inline constexpr std::string_view read_flow = R"sql(
SELECT id, queue, name, payload, state, priority, attempts,
  max_attempts, run_at, created_at, finished_at, lease_until, lease_token, backoff, timeout_ms,
  unique_key, unique_for_ms, result, errors, progress, progress_message, group_key,
  flow_id, continue_on_failure, depends_on, expires_at
FROM jobq_jobs WHERE flow_id = (SELECT flow_id FROM jobq_jobs WHERE id = ?1) AND flow_id IS NOT NULL
ORDER BY id
)sql";
static_assert(has_job_columns(read_flow));

inline constexpr std::string_view flow_of = R"sql(SELECT flow_id FROM jobq_jobs WHERE id = ?1)sql";

// The id the next insert into jobq_jobs would get (AUTOINCREMENT: above every id it ever had),
// so that a flow's members get known ids and each row is written once, dependencies included.
inline constexpr std::string_view next_job_id = R"sql(
SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'jobq_jobs'), 0),
           coalesce((SELECT max(id) FROM jobq_jobs), 0)) + 1
)sql";

// A flow member; ?1 NULL (the error callback) takes the next id. ?5: 'queued' or 'waiting'.
inline constexpr std::string_view insert_member = R"sql(
INSERT INTO jobq_jobs (id, queue, name, payload, state, priority, max_attempts, run_at, created_at,
  backoff, timeout_ms, unique_for_ms, group_key, flow_id, continue_on_failure, depends_on, expires_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
)sql";

// The edges and pending counts of the members ?1..?2 (primary key range), from depends_on.
inline constexpr std::string_view link_members = R"sql(
INSERT INTO jobq_deps (dep_id, job_id)
SELECT e.value, j.id FROM jobq_jobs j, json_each(j.depends_on) e WHERE j.id BETWEEN ?1 AND ?2
)sql";
inline constexpr std::string_view count_pending = R"sql(
INSERT INTO jobq_waiting (job_id, pending)
SELECT id, json_array_length(depends_on) FROM jobq_jobs
WHERE id BETWEEN ?1 AND ?2 AND state = 'waiting'
)sql";

inline constexpr std::string_view insert_flow = R"sql(
INSERT INTO jobq_flows (id, on_failure) VALUES (?1, ?2)
)sql";
// The flow's error callback, at most once: whoever sets fired gets the job.
inline constexpr std::string_view fire_on_failure = R"sql(
UPDATE jobq_flows SET fired = 1 WHERE id = ?1 AND fired = 0 RETURNING on_failure
)sql";
inline constexpr std::string_view disarm_on_failure = R"sql(UPDATE jobq_flows SET fired = 1 WHERE id = ?1)sql";

// Whether any job waits: without one, no completion has a dependent to settle (complete_many
// asks once per transaction instead of probing jobq_deps per job).
inline constexpr std::string_view any_waiting = R"sql(SELECT EXISTS (SELECT 1 FROM jobq_waiting))sql";

// jobq_deps' primary key, then each waiting dependent by its id (CROSS JOIN keeps that order).
// continue_on_failure and queue come before depends_on in the row: no overflow page is read.
inline constexpr std::string_view waiting_dependents = R"sql(
SELECT w.job_id, w.pending, j.continue_on_failure, j.queue
FROM jobq_deps d CROSS JOIN jobq_waiting w ON w.job_id = d.job_id CROSS JOIN jobq_jobs j ON j.id = w.job_id
WHERE d.dep_id = ?1
)sql";
// Every dependent, whatever its state (redrive).
inline constexpr std::string_view all_dependents = R"sql(
SELECT j.id, j.state, j.attempts, j.continue_on_failure
FROM jobq_deps d CROSS JOIN jobq_jobs j ON j.id = d.job_id WHERE d.dep_id = ?1
)sql";

// One dependency of waiting job ?1 resolved; the last one queues it, not before ?2 (now).
inline constexpr std::string_view count_resolved = R"sql(
UPDATE jobq_waiting SET pending = pending - 1 WHERE job_id = ?1
)sql";
inline constexpr std::string_view count_unresolved = R"sql(
UPDATE jobq_waiting SET pending = pending + 1 WHERE job_id = ?1
)sql";
inline constexpr std::string_view release_waiting = R"sql(
UPDATE jobq_jobs SET state = 'queued', run_at = max(run_at, ?2) WHERE id = ?1 AND state = 'waiting'
)sql";
inline constexpr std::string_view forget_waiting = R"sql(DELETE FROM jobq_waiting WHERE job_id = ?1)sql";

// A waiting job whose dependency is dead or cancelled and which does not continue on failure:
// finished likewise (?3), the reason (JSON text ?4) appended as attempt 0.
inline constexpr std::string_view doom_waiting = R"sql(
UPDATE jobq_jobs SET state = ?3, finished_at = ?2,
  errors = json_insert(errors, '$[#]', json_object('attempt', 0, 'message', json(?4), 'at', ?2))
WHERE id = ?1 AND state = 'waiting'
)sql";

// Redrive of a flow member ?1 (dead): its dependencies not completed (0 lets it go, or it
// continues on failure).
inline constexpr std::string_view redrive_check = R"sql(
SELECT j.flow_id, j.continue_on_failure,
  (SELECT count(*) FROM json_each(j.depends_on) e CROSS JOIN jobq_jobs o ON o.id = e.value
   WHERE o.state <> 'completed')
FROM jobq_jobs j WHERE j.id = ?1 AND j.state = 'dead'
)sql";
// A dependent ?1 that died because of ?2 (being re-driven): its dependencies not completed, and
// how many others than ?2 are dead or cancelled (then it stays dead).
inline constexpr std::string_view revive_check = R"sql(
SELECT coalesce(sum(o.state <> 'completed'), 0),
  coalesce(sum(o.id <> ?2 AND (o.state = 'dead' OR o.state = 'cancelled')), 0)
FROM jobq_jobs j, json_each(j.depends_on) e CROSS JOIN jobq_jobs o ON o.id = e.value WHERE j.id = ?1
)sql";
inline constexpr std::string_view revive = R"sql(
UPDATE jobq_jobs SET state = 'waiting', finished_at = NULL WHERE id = ?1 AND state = 'dead'
)sql";
inline constexpr std::string_view wait_again = R"sql(
INSERT INTO jobq_waiting (job_id, pending) VALUES (?1, ?2)
)sql";

// cancel_flow (jobq_jobs_flow): every member of flow ?1 that has not started, at once.
inline constexpr std::string_view cancel_members = R"sql(
UPDATE jobq_jobs SET state = 'cancelled', finished_at = ?2
WHERE flow_id = ?1 AND (state = 'queued' OR state = 'waiting') RETURNING id, queue
)sql";
inline constexpr std::string_view forget_flow_waiting = R"sql(
DELETE FROM jobq_waiting WHERE job_id IN (SELECT id FROM jobq_jobs WHERE flow_id = ?1)
)sql";

// Prune. Flows with a member of queue ?1 in state ?2 finished before ?3 (jobq_jobs_finished:
// the queue's jobs outside flows that are as old were just deleted, so these are members).
inline constexpr std::string_view flow_candidates = R"sql(
SELECT DISTINCT flow_id FROM jobq_jobs INDEXED BY jobq_jobs_finished
WHERE queue = ?1 AND state = ?2 AND finished_at IS NOT NULL AND finished_at < ?3 AND flow_id IS NOT NULL
)sql";
// jobq_jobs_flow: a member of flow ?1 to keep (not finished, or finished after the cutoff of its
// state: ?2 completed, ?3 dead, ?4 cancelled; INT64_MIN when that state is kept forever).
inline constexpr std::string_view flow_kept = R"sql(
SELECT 1 FROM jobq_jobs WHERE flow_id = ?1 AND NOT coalesce(finished_at <
  CASE state WHEN 'completed' THEN ?2 WHEN 'dead' THEN ?3 WHEN 'cancelled' THEN ?4 END, 0) LIMIT 1
)sql";
// A whole flow; its edges all start at its members (jobq_deps' primary key).
inline constexpr std::string_view delete_flow_deps = R"sql(
DELETE FROM jobq_deps WHERE dep_id IN (SELECT id FROM jobq_jobs WHERE flow_id = ?1)
)sql";
inline constexpr std::string_view delete_flow_row = R"sql(DELETE FROM jobq_flows WHERE id = ?1)sql";
inline constexpr std::string_view delete_flow_jobs = R"sql(DELETE FROM jobq_jobs WHERE flow_id = ?1)sql";

// Waiting for work.

// The earliest run_at of a queue's queued jobs, from jobq_jobs_ready (migration 6): it is
// ordered by priority first, so the queue's distinct priorities are visited from the top, one
// seek each, and each gives its own earliest run_at with one more seek. The caller has checked
// the queue is not paused.
inline constexpr std::string_view next_due = R"sql(
WITH RECURSIVE p(pr) AS (
  SELECT (SELECT priority FROM jobq_jobs INDEXED BY jobq_jobs_ready WHERE state = 'queued'
          AND queue = ?1 ORDER BY priority DESC LIMIT 1)
  UNION ALL SELECT (SELECT priority FROM jobq_jobs INDEXED BY jobq_jobs_ready WHERE state = 'queued'
          AND queue = ?1 AND priority < p.pr ORDER BY priority DESC LIMIT 1) FROM p WHERE p.pr IS NOT NULL)
SELECT min((SELECT run_at FROM jobq_jobs INDEXED BY jobq_jobs_ready WHERE state = 'queued'
            AND queue = ?1 AND priority = p.pr ORDER BY priority DESC, run_at LIMIT 1))
FROM p WHERE p.pr IS NOT NULL
)sql";
// The same after ?2 (now): the next delayed job of a queue (wait_for_work, group-limited queue).
inline constexpr std::string_view next_delayed = R"sql(
WITH RECURSIVE p(pr) AS (
  SELECT (SELECT priority FROM jobq_jobs INDEXED BY jobq_jobs_ready WHERE state = 'queued'
          AND queue = ?1 ORDER BY priority DESC LIMIT 1)
  UNION ALL SELECT (SELECT priority FROM jobq_jobs INDEXED BY jobq_jobs_ready WHERE state = 'queued'
          AND queue = ?1 AND priority < p.pr ORDER BY priority DESC LIMIT 1) FROM p WHERE p.pr IS NOT NULL)
SELECT min((SELECT run_at FROM jobq_jobs INDEXED BY jobq_jobs_ready WHERE state = 'queued'
            AND queue = ?1 AND priority = p.pr AND run_at > ?2 ORDER BY priority DESC, run_at LIMIT 1))
FROM p WHERE p.pr IS NOT NULL
)sql";

}  // namespace jobq::detail::sqlite::sql
