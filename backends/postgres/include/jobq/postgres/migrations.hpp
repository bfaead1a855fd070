#pragma once
// The schema's history as numbered migrations, and migrate(), which brings a schema at any
// earlier version up to the latest. Each migration's SQL (PL/pgSQL included) is written with
// the placeholder {schema}, like the statements (statements.hpp).

#include <array>
#include <cstddef>
#include <string>
#include <string_view>

#include <libpq-fe.h>

#include "jobq/postgres/pool.hpp"

namespace jobq::detail::pg {

/// One step in the schema's history; applied once, in order, inside the migration transaction,
/// and recorded in schema_migrations. Append only: never edit one that has shipped.
struct Migration {
  int version;
  std::string_view description;
  std::string_view sql;
};

inline constexpr std::array<Migration, 8> migrations = {{
    {1, "jobs (times are epoch ms from the backend's clock), paused queues, wake-up triggers",
     R"sql(
CREATE TABLE "{schema}".jobs (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  queue text NOT NULL,
  name text NOT NULL,
  payload json NOT NULL,  -- json, not jsonb: kept verbatim (key order, \u0000)
  state text NOT NULL CHECK (state IN ('queued','active','completed','dead','cancelled')),
  priority int NOT NULL DEFAULT 0,
  attempts int NOT NULL DEFAULT 0,
  max_attempts int NOT NULL CHECK (max_attempts >= 1),
  run_at bigint NOT NULL,
  created_at bigint NOT NULL,
  finished_at bigint,
  lease_until bigint,
  lease_token text,
  done_token text,
  backoff jsonb NOT NULL,
  timeout_ms bigint NOT NULL DEFAULT 0,
  unique_key text,
  unique_for_ms bigint NOT NULL DEFAULT 0,
  holds_key boolean NOT NULL DEFAULT true,
  result json,
  errors jsonb NOT NULL DEFAULT '[]',
  progress int NOT NULL DEFAULT 0,
  progress_message text NOT NULL DEFAULT '');
CREATE INDEX jobs_ready ON "{schema}".jobs (queue, priority DESC, run_at, id) WHERE state = 'queued';
CREATE INDEX jobs_active_lease ON "{schema}".jobs (lease_until) WHERE state = 'active';
CREATE INDEX jobs_queue_state ON "{schema}".jobs (queue, state, id);
CREATE INDEX jobs_finished ON "{schema}".jobs (queue, state, finished_at) WHERE finished_at IS NOT NULL;
CREATE UNIQUE INDEX jobs_unique_live ON "{schema}".jobs (queue, unique_key)
  WHERE unique_key IS NOT NULL AND holds_key AND state IN ('queued', 'active');
CREATE INDEX jobs_unique_key ON "{schema}".jobs (queue, unique_key) WHERE unique_key IS NOT NULL;
CREATE TABLE "{schema}".paused_queues (queue text PRIMARY KEY);
-- NOTIFY is transactional: a waiter wakes only once the new jobs are visible.
CREATE FUNCTION "{schema}".notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  PERFORM pg_notify('jobq:' || TG_TABLE_SCHEMA, d.queue)
     FROM (SELECT DISTINCT queue FROM new_rows) AS d;
  RETURN NULL;
END $fn$;
CREATE FUNCTION "{schema}".notify_requeued() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  PERFORM pg_notify('jobq:' || TG_TABLE_SCHEMA, NEW.queue);
  RETURN NULL;
END $fn$;
CREATE TRIGGER jobs_notify_inserted AFTER INSERT ON "{schema}".jobs
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
  EXECUTE FUNCTION "{schema}".notify_inserted();
CREATE TRIGGER jobs_notify_requeued AFTER UPDATE OF state ON "{schema}".jobs FOR EACH ROW
  WHEN (NEW.state = 'queued' AND OLD.state <> 'queued')
  EXECUTE FUNCTION "{schema}".notify_requeued();
)sql"},

    {2, "the insert statements notify themselves (see sql::enqueue_one): no transition table",
     R"sql(
DROP TRIGGER jobs_notify_inserted ON "{schema}".jobs;
DROP FUNCTION "{schema}".notify_inserted();
)sql"},

    {3,
     "(issue #7) groups, queue limits with a rate ledger, stored schedules, job notices, and one "
     "holder per unique key (throttle/debounce)",
     R"sql(
ALTER TABLE "{schema}".jobs ADD COLUMN group_key text;
-- Counting active jobs per group, for limited queues only; jobs without a group or not
-- active are not in it, so the hot path writes no entry.
CREATE INDEX jobs_active_group ON "{schema}".jobs (queue, group_key)
  WHERE state = 'active' AND group_key IS NOT NULL;
-- holds_key now marks THE holder of a key (the latest job enqueued with it, or a re-driven
-- one that took it back) in every state, not only while queued/active: the holder decides
-- throttle (its created_at) and debounce (replace it while queued), and a new holder coexists
-- with an active old one. Existing stores keep per key the live holder, else the newest.
UPDATE "{schema}".jobs SET holds_key = false WHERE unique_key IS NOT NULL AND holds_key
  AND id NOT IN (SELECT DISTINCT ON (queue, unique_key) id FROM "{schema}".jobs
    WHERE unique_key IS NOT NULL AND holds_key
    ORDER BY queue, unique_key, (state IN ('queued', 'active')) DESC, id DESC);
DROP INDEX "{schema}".jobs_unique_live;
DROP INDEX "{schema}".jobs_unique_key;
CREATE UNIQUE INDEX jobs_unique_holder ON "{schema}".jobs (queue, unique_key)
  WHERE unique_key IS NOT NULL AND holds_key;
-- A queue with a row here is limited (no row = no limits).
CREATE TABLE "{schema}".queue_limits (
  queue text PRIMARY KEY,
  rate_max bigint CHECK (rate_max >= 1),
  rate_window_ms bigint CHECK (rate_window_ms >= 1),
  group_concurrency int NOT NULL DEFAULT 0 CHECK (group_concurrency >= 0),
  CHECK ((rate_max IS NULL) = (rate_window_ms IS NULL)));
-- One row per claim of a rate-limited queue: n starts at at_ms. Pruned by the claims.
CREATE TABLE "{schema}".rate_ledger (queue text NOT NULL, at_ms bigint NOT NULL, n int NOT NULL);
CREATE INDEX rate_ledger_queue_at ON "{schema}".rate_ledger (queue, at_ms);
CREATE TABLE "{schema}".schedules (name text PRIMARY KEY, spec text NOT NULL, next_run bigint NOT NULL);
-- Backends whose listener connection LISTENs for notices; statements build notices only
-- when a row exists. A stale row (a crashed process) costs notices nobody reads; the next
-- listener to start removes rows of sessions that are gone.
CREATE TABLE "{schema}".event_listeners (pid int PRIMARY KEY, since timestamptz NOT NULL DEFAULT now());

-- Sends notices (JSON texts) as JSON arrays, each NOTIFY below the 8000-byte limit
-- (a notice's message is cut at 1000 characters, so one notice always fits).
CREATE FUNCTION "{schema}".notify_events(p_notices text[]) RETURNS int LANGUAGE plpgsql AS $fn$
DECLARE v_buf text := ''; v_one text; v_sent int := 0;
BEGIN
  IF p_notices IS NULL THEN RETURN 0; END IF;
  FOREACH v_one IN ARRAY p_notices LOOP
    IF v_buf <> '' AND octet_length(v_buf) + octet_length(v_one) + 3 > 7900 THEN
      PERFORM pg_notify('jobq:{schema}:events', '[' || v_buf || ']');
      v_sent := v_sent + 1; v_buf := '';
    END IF;
    v_buf := CASE WHEN v_buf = '' THEN v_one ELSE v_buf || ',' || v_one END;
  END LOOP;
  IF v_buf <> '' THEN PERFORM pg_notify('jobq:{schema}:events', '[' || v_buf || ']'); v_sent := v_sent + 1; END IF;
  RETURN v_sent;
END $fn$;

-- Enqueue of a job with a unique key (Backend::enqueue): decided against the key's holder.
-- Each statement of a VOLATILE function takes a fresh snapshot (READ COMMITTED), so after
-- losing a race (a changed holder, or a conflict on jobs_unique_holder, on which INSERT waits
-- for the winner to commit) the loop sees the winner. Under REPEATABLE READ it never would:
-- bounded, then 40001.
CREATE FUNCTION "{schema}".enqueue_keyed(p_queue text, p_name text, p_payload json,
    p_priority int, p_max_attempts int, p_run_at bigint, p_now bigint, p_backoff jsonb,
    p_timeout bigint, p_unique_for bigint, p_group text, p_key text, p_throttle bigint,
    p_debounce bigint)
 RETURNS TABLE (job_id bigint, created boolean) LANGUAGE plpgsql AS $fn$
DECLARE h record; v_id bigint;
BEGIN
  FOR v_try IN 1..50 LOOP
    SELECT j.id, j.state, j.created_at, j.finished_at, j.unique_for_ms INTO h
      FROM "{schema}".jobs j WHERE j.queue = p_queue AND j.unique_key = p_key AND j.holds_key;
    IF FOUND THEN
      IF p_debounce > 0 THEN
        IF h.state = 'queued' THEN
          UPDATE "{schema}".jobs SET payload = p_payload, run_at = p_now + p_debounce
           WHERE id = h.id AND state = 'queued' AND holds_key;
          IF FOUND THEN job_id := h.id; created := false; RETURN NEXT; RETURN; END IF;
          CONTINUE;  -- claimed meanwhile: look again
        END IF;
      ELSIF h.state IN ('queued', 'active')
         OR (h.state = 'completed' AND h.finished_at + h.unique_for_ms > p_now)
         OR (p_throttle > 0 AND h.created_at + p_throttle > p_now) THEN
        job_id := h.id; created := false; RETURN NEXT; RETURN;
      END IF;
      -- The key passes to the new job; the old holder keeps its state (an active one runs on).
      UPDATE "{schema}".jobs SET holds_key = false WHERE id = h.id AND holds_key AND state = h.state;
      IF NOT FOUND THEN CONTINUE; END IF;
    END IF;
    INSERT INTO "{schema}".jobs (queue, name, payload, state, priority, max_attempts, run_at,
                                 created_at, backoff, timeout_ms, unique_key, unique_for_ms, group_key)
    VALUES (p_queue, p_name, p_payload, 'queued', p_priority, p_max_attempts,
            CASE WHEN p_debounce > 0 THEN p_now + p_debounce ELSE p_run_at END, p_now, p_backoff,
            p_timeout, p_key, p_unique_for, p_group)
    ON CONFLICT (queue, unique_key) WHERE unique_key IS NOT NULL AND holds_key DO NOTHING
    RETURNING id INTO v_id;
    IF FOUND THEN
      PERFORM pg_notify('jobq:{schema}', p_queue);
      job_id := v_id; created := true; RETURN NEXT; RETURN;
    END IF;
  END LOOP;
  RAISE EXCEPTION 'unique key % of queue % is held by a job this transaction cannot see (REPEATABLE READ?)',
    p_key, p_queue USING ERRCODE = '40001';
END $fn$;

-- Claim from queues of which at least one has limits (see sql::claim). The FOR UPDATE on
-- their queue_limits rows serializes such claims across all processes until commit; the
-- statements after it see every earlier claim (fresh snapshots), so the active counts per
-- group and the ledger are exact. Completions lower the counts without the lock, which can
-- only hold a job back for one claim longer, never let one through.
-- Candidates come in claim order from jobs_ready; groups already at their limit are excluded
-- in the query, and only groups that fill up during this claim are skipped row by row. With
-- several queues each one is scanned for at most 4 x limit + 100 candidates (a later claim
-- goes on).
CREATE FUNCTION "{schema}".claim_limited(p_queues text[], p_now bigint, p_limit int,
    p_lease_until bigint, p_tokens text[]) RETURNS SETOF "{schema}".jobs LANGUAGE plpgsql AS $fn$
DECLARE
  v_lim record; r record; cur refcursor;
  v_ids bigint[] := '{}';
  v_allowed jsonb := '{}';  -- queue -> starts left in the window (rate-limited only)
  v_gmax jsonb := '{}';     -- queue -> group concurrency (grouped queues only)
  v_active jsonb := '{}';   -- queue \n group -> active jobs, picked ones included
  v_full jsonb := '{}';     -- queue \n group of groups already at their limit
  v_key text; v_n bigint;
BEGIN
  PERFORM 1 FROM "{schema}".queue_limits WHERE queue = ANY(p_queues) ORDER BY queue FOR UPDATE;
  FOR v_lim IN SELECT * FROM "{schema}".queue_limits WHERE queue = ANY(p_queues) LOOP
    IF v_lim.rate_max IS NOT NULL THEN
      DELETE FROM "{schema}".rate_ledger WHERE queue = v_lim.queue AND at_ms <= p_now - v_lim.rate_window_ms;
      SELECT v_lim.rate_max - coalesce(sum(x.n), 0) INTO v_n FROM "{schema}".rate_ledger x
       WHERE x.queue = v_lim.queue;
      v_allowed := v_allowed || jsonb_build_object(v_lim.queue, v_n);
    END IF;
    IF v_lim.group_concurrency > 0 THEN
      v_gmax := v_gmax || jsonb_build_object(v_lim.queue, v_lim.group_concurrency);
    END IF;
  END LOOP;
  IF v_gmax <> '{}' THEN
    SELECT coalesce(jsonb_object_agg(a.k, a.n), '{}'),
           coalesce(jsonb_object_agg(a.k, true) FILTER (WHERE a.n >= (v_gmax ->> a.queue)::bigint), '{}')
      INTO v_active, v_full
      FROM (SELECT j.queue, j.queue || E'\n' || j.group_key AS k, count(*) AS n FROM "{schema}".jobs j
             WHERE j.queue = ANY(p_queues) AND j.state = 'active' AND j.group_key IS NOT NULL
               AND v_gmax ? j.queue GROUP BY j.queue, j.group_key) a;
  END IF;
  IF cardinality(p_queues) = 1 THEN
    OPEN cur FOR SELECT j.id, j.queue, j.group_key FROM "{schema}".jobs j
      WHERE j.state = 'queued' AND j.queue = p_queues[1] AND j.run_at <= p_now
        AND NOT EXISTS (SELECT 1 FROM "{schema}".paused_queues p WHERE p.queue = j.queue)
        AND coalesce((v_allowed ->> j.queue)::bigint, 1) > 0
        AND (j.group_key IS NULL OR NOT (v_full ? (j.queue || E'\n' || j.group_key)))
      ORDER BY j.priority DESC, j.run_at, j.id;
  ELSE
    OPEN cur FOR SELECT c.id, c.queue, c.group_key FROM unnest(p_queues) AS q(name)
      CROSS JOIN LATERAL (SELECT j.id, j.queue, j.group_key, j.priority, j.run_at FROM "{schema}".jobs j
        WHERE j.state = 'queued' AND j.queue = q.name AND j.run_at <= p_now
          AND coalesce((v_allowed ->> j.queue)::bigint, 1) > 0
          AND (j.group_key IS NULL OR NOT (v_full ? (j.queue || E'\n' || j.group_key)))
        ORDER BY j.priority DESC, j.run_at, j.id LIMIT 4 * p_limit + 100) c
      WHERE NOT EXISTS (SELECT 1 FROM "{schema}".paused_queues p WHERE p.queue = q.name)
      ORDER BY c.priority DESC, c.run_at, c.id;
  END IF;
  LOOP
    FETCH cur INTO r;
    EXIT WHEN NOT FOUND;
    IF v_allowed ? r.queue AND (v_allowed ->> r.queue)::bigint <= 0 THEN CONTINUE; END IF;
    IF r.group_key IS NOT NULL AND v_gmax ? r.queue THEN
      v_key := r.queue || E'\n' || r.group_key;
      v_n := coalesce((v_active ->> v_key)::bigint, 0);
      IF v_n >= (v_gmax ->> r.queue)::bigint THEN CONTINUE; END IF;
      v_active := v_active || jsonb_build_object(v_key, v_n + 1);
    END IF;
    IF v_allowed ? r.queue THEN
      v_allowed := v_allowed || jsonb_build_object(r.queue, (v_allowed ->> r.queue)::bigint - 1);
    END IF;
    v_ids := v_ids || r.id;
    EXIT WHEN cardinality(v_ids) >= p_limit;
  END LOOP;
  CLOSE cur;
  IF cardinality(v_ids) = 0 THEN RETURN; END IF;
  -- state = 'queued' again: a cancel or a debounce may have changed a row meanwhile
  -- (claims of these queues cannot: they wait for our lock).
  RETURN QUERY
    WITH u AS (UPDATE "{schema}".jobs j SET state = 'active', attempts = j.attempts + 1,
                      lease_token = p_tokens[p.ord], lease_until = p_lease_until
                 FROM unnest(v_ids) WITH ORDINALITY AS p(id, ord)
                WHERE j.id = p.id AND j.state = 'queued' AND j.run_at <= p_now RETURNING j.*),
         led AS (INSERT INTO "{schema}".rate_ledger (queue, at_ms, n)
                 SELECT u.queue, p_now, count(*) FROM u WHERE v_allowed ? u.queue GROUP BY u.queue)
    SELECT * FROM u;
END $fn$;
)sql"},
    {4, "flows: members' dependencies (job_deps), the flows table, the waiting state, release "
        "and death propagation (flow_died, flow_revive)",
     R"sql(
ALTER TABLE "{schema}".jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE "{schema}".jobs ADD CONSTRAINT jobs_state_check
  CHECK (state IN ('queued','active','completed','dead','cancelled','waiting'));
-- flow_id: the flow's first member (NULL = in no flow). depends_on is never changed; pending
-- counts the unresolved dependencies of a waiting job.
ALTER TABLE "{schema}".jobs ADD COLUMN flow_id bigint,
  ADD COLUMN depends_on bigint[] NOT NULL DEFAULT '{}',
  ADD COLUMN continue_on_failure boolean NOT NULL DEFAULT false,
  ADD COLUMN pending int NOT NULL DEFAULT 0;
CREATE INDEX jobs_flow ON "{schema}".jobs (flow_id) WHERE flow_id IS NOT NULL;
CREATE INDEX jobs_flow_finished ON "{schema}".jobs (queue, flow_id)
  WHERE flow_id IS NOT NULL AND finished_at IS NOT NULL;
-- One row per dependency: the dependents of a job by dep_id.
CREATE TABLE "{schema}".job_deps (dep_id bigint NOT NULL, job_id bigint NOT NULL,
                                  PRIMARY KEY (dep_id, job_id));
-- on_failure: the error callback's columns (see flow_doc in inserts.hpp); fired once it is
-- enqueued or the flow is cancelled.
CREATE TABLE "{schema}".flows (id bigint PRIMARY KEY, on_failure jsonb,
                               fired boolean NOT NULL DEFAULT false);

-- Jobs p_ids have just become dead (p_cancelled: cancelled) with last error p_msg: their
-- waiting dependents are released (continue on failure) or finish the same way, down the flow,
-- each error naming its own dependency and the root cause (as jobq::dead_dependency_error).
-- p_own: they died by their own failure, so their flows' error callbacks fire (once per flow).
-- Every waiting job below p_ids is locked first, in id order, as complete_many's release
-- locks: level by level, a later level could hold smaller ids and deadlock with a release.
CREATE FUNCTION "{schema}".flow_died(p_ids bigint[], p_cancelled boolean, p_msg text,
                                     p_own boolean, p_now bigint) RETURNS int
LANGUAGE plpgsql AS $fn$
DECLARE
  v_ids bigint[] := p_ids;
  v_msgs text[] := array_fill(p_msg, ARRAY[cardinality(p_ids)]);
  v_next_ids bigint[]; v_next_msgs text[];
  v_notes text[] := '{}';
  v_queues text[] := '{}';
  v_state text := CASE WHEN p_cancelled THEN 'cancelled' ELSE 'dead' END;
  v_msg text; v_got text; v_id bigint; v_doc jsonb; v_n int := 0;
  r record;
BEGIN
  PERFORM 1 FROM "{schema}".jobs w
   WHERE w.id IN (WITH RECURSIVE down(id) AS (
                    SELECT d.job_id FROM "{schema}".job_deps d WHERE d.dep_id = ANY(p_ids)
                    UNION SELECT d.job_id FROM "{schema}".job_deps d JOIN down ON d.dep_id = down.id)
                  SELECT id FROM down)
     AND w.state = 'waiting' ORDER BY w.id FOR UPDATE;
  WHILE cardinality(v_ids) > 0 LOOP
    v_next_ids := '{}'; v_next_msgs := '{}';
    FOR r IN SELECT w.id, w.queue, w.continue_on_failure, x.id AS dep, x.msg
               FROM unnest(v_ids, v_msgs) AS x(id, msg)
               JOIN "{schema}".job_deps d ON d.dep_id = x.id
               JOIN "{schema}".jobs w ON w.id = d.job_id
              WHERE w.state = 'waiting' ORDER BY w.id FOR UPDATE OF w LOOP
      IF r.continue_on_failure THEN
        v_got := NULL;
        UPDATE "{schema}".jobs SET pending = pending - 1,
               state = CASE WHEN pending <= 1 THEN 'queued' ELSE 'waiting' END,
               run_at = CASE WHEN pending <= 1 THEN greatest(run_at, p_now) ELSE run_at END
         WHERE id = r.id AND state = 'waiting' RETURNING state INTO v_got;
        IF v_got = 'queued' THEN v_queues := v_queues || r.queue; END IF;
        CONTINUE;
      END IF;
      v_msg := CASE WHEN p_cancelled THEN 'dependency ' || r.dep || ' was cancelled'
                    ELSE 'dependency ' || r.dep || ' is dead: '
                         || regexp_replace(r.msg, '^dependency [0-9]+ is dead: ', '') END;
      UPDATE "{schema}".jobs SET state = v_state, finished_at = p_now,
             errors = errors || jsonb_build_array(jsonb_build_object('attempt', 0, 'message', v_msg, 'at', p_now))
       WHERE id = r.id AND state = 'waiting';
      IF NOT FOUND THEN CONTINUE; END IF;
      v_n := v_n + 1;
      v_next_ids := v_next_ids || r.id;
      v_next_msgs := v_next_msgs || v_msg;
      v_notes := v_notes || json_build_object('kind', v_state, 'id', r.id, 'queue', r.queue,
                   'attempt', 0, 'progress', 0, 'message', left(v_msg, 1000))::text;
    END LOOP;
    v_ids := v_next_ids; v_msgs := v_next_msgs;
  END LOOP;
  IF p_own THEN
    FOR r IN SELECT DISTINCT ON (j.flow_id) j.flow_id, j.id FROM "{schema}".jobs j
              WHERE j.id = ANY(p_ids) AND j.flow_id IS NOT NULL ORDER BY j.flow_id, j.id LOOP
      UPDATE "{schema}".flows SET fired = true WHERE id = r.flow_id AND NOT fired AND on_failure IS NOT NULL
        RETURNING on_failure INTO v_doc;
      IF NOT FOUND THEN CONTINUE; END IF;
      INSERT INTO "{schema}".jobs (queue, name, payload, state, priority, max_attempts, run_at, created_at,
                                   backoff, timeout_ms, unique_key, unique_for_ms, group_key, flow_id,
                                   depends_on, continue_on_failure, pending)
        VALUES (v_doc->>'queue', v_doc->>'name', (v_doc->>'payload')::json, 'queued',
                (v_doc->>'priority')::int, (v_doc->>'max_attempts')::int,
                coalesce((v_doc->>'run_at')::bigint, p_now), p_now, v_doc->'backoff',
                (v_doc->>'timeout_ms')::bigint, NULL, (v_doc->>'unique_for_ms')::bigint,
                v_doc->>'group', r.flow_id, ARRAY[r.id], true, 0)
        RETURNING id INTO v_id;
      INSERT INTO "{schema}".job_deps (dep_id, job_id) VALUES (r.id, v_id);
      v_queues := v_queues || (v_doc->>'queue');
    END LOOP;
  END IF;
  PERFORM pg_notify('jobq:{schema}', q) FROM (SELECT DISTINCT unnest(v_queues) AS q) x;
  IF cardinality(v_notes) > 0 AND EXISTS (SELECT 1 FROM "{schema}".event_listeners) THEN
    PERFORM "{schema}".notify_events(v_notes);
  END IF;
  RETURN v_n;
END $fn$;

-- Job p_id was re-driven: what died because of it (dead, attempts 0) waits again unless
-- another of its dependencies dooms it, down the flow; dependents that continue on failure
-- count it as unresolved again.
CREATE FUNCTION "{schema}".flow_revive(p_id bigint) RETURNS int LANGUAGE plpgsql AS $fn$
DECLARE v_ids bigint[] := ARRAY[p_id]; v_n int := 0;
BEGIN
  WHILE cardinality(v_ids) > 0 LOOP
    UPDATE "{schema}".jobs w SET pending = w.pending + x.n
      FROM (SELECT d.job_id, count(*) AS n FROM "{schema}".job_deps d WHERE d.dep_id = ANY(v_ids)
             GROUP BY d.job_id) x
     WHERE w.id = x.job_id AND w.state = 'waiting' AND w.continue_on_failure;
    WITH back AS (
      UPDATE "{schema}".jobs w SET state = 'waiting', finished_at = NULL,
             pending = (SELECT count(*) FROM unnest(w.depends_on) AS o(id)
                          JOIN "{schema}".jobs oj ON oj.id = o.id WHERE oj.state <> 'completed')
       WHERE w.id IN (SELECT d.job_id FROM "{schema}".job_deps d WHERE d.dep_id = ANY(v_ids))
         AND w.state = 'dead' AND w.attempts = 0
         AND NOT EXISTS (SELECT 1 FROM unnest(w.depends_on) AS o(id)
                           JOIN "{schema}".jobs oj ON oj.id = o.id WHERE oj.state IN ('dead', 'cancelled'))
      RETURNING w.id)
    SELECT coalesce(array_agg(id), '{}') INTO v_ids FROM back;
    v_n := v_n + cardinality(v_ids);
  END LOOP;
  RETURN v_n;
END $fn$;
)sql"},
    {5, "(issue 18) the worker registry",
     R"sql(
-- One row per registered Worker: its WorkerInfo as JSON text (kept verbatim, as a payload is),
-- and its expiry beside it so that each registration deletes the expired rows by index.
CREATE TABLE "{schema}".workers (id text PRIMARY KEY, expires_at bigint NOT NULL, info text NOT NULL);
CREATE INDEX workers_expiry ON "{schema}".workers (expires_at);
)sql"},
    {6, "(issue 21) queue concurrency: queue_limits.concurrency, claim_limited honours it",
     R"sql(
ALTER TABLE "{schema}".queue_limits
  ADD COLUMN concurrency int NOT NULL DEFAULT 0 CHECK (concurrency >= 0);  -- 0: unlimited
-- As in migration 3, and a queue with a concurrency limit takes at most concurrency minus its
-- active jobs, counted after the FOR UPDATE on its queue_limits row, so concurrent claimers
-- (which wait for that lock) never see a stale count.
CREATE OR REPLACE FUNCTION "{schema}".claim_limited(p_queues text[], p_now bigint, p_limit int,
    p_lease_until bigint, p_tokens text[]) RETURNS SETOF "{schema}".jobs LANGUAGE plpgsql AS $fn$
DECLARE
  v_lim record; r record; cur refcursor;
  v_ids bigint[] := '{}';
  v_allowed jsonb := '{}';  -- queue -> starts left in the window (rate-limited only)
  v_gmax jsonb := '{}';     -- queue -> group concurrency (grouped queues only)
  v_active jsonb := '{}';   -- queue \n group -> active jobs, picked ones included
  v_full jsonb := '{}';     -- queue \n group of groups already at their limit
  v_cap jsonb := '{}';      -- queue -> free slots (concurrency - active; limited queues only)
  v_key text; v_n bigint;
BEGIN
  PERFORM 1 FROM "{schema}".queue_limits WHERE queue = ANY(p_queues) ORDER BY queue FOR UPDATE;
  FOR v_lim IN SELECT * FROM "{schema}".queue_limits WHERE queue = ANY(p_queues) LOOP
    IF v_lim.rate_max IS NOT NULL THEN
      DELETE FROM "{schema}".rate_ledger WHERE queue = v_lim.queue AND at_ms <= p_now - v_lim.rate_window_ms;
      SELECT v_lim.rate_max - coalesce(sum(x.n), 0) INTO v_n FROM "{schema}".rate_ledger x
       WHERE x.queue = v_lim.queue;
      v_allowed := v_allowed || jsonb_build_object(v_lim.queue, v_n);
    END IF;
    IF v_lim.group_concurrency > 0 THEN
      v_gmax := v_gmax || jsonb_build_object(v_lim.queue, v_lim.group_concurrency);
    END IF;
    IF v_lim.concurrency > 0 THEN
      SELECT v_lim.concurrency - count(*) INTO v_n FROM "{schema}".jobs j
       WHERE j.queue = v_lim.queue AND j.state = 'active';
      v_cap := v_cap || jsonb_build_object(v_lim.queue, v_n);
    END IF;
  END LOOP;
  IF v_gmax <> '{}' THEN
    SELECT coalesce(jsonb_object_agg(a.k, a.n), '{}'),
           coalesce(jsonb_object_agg(a.k, true) FILTER (WHERE a.n >= (v_gmax ->> a.queue)::bigint), '{}')
      INTO v_active, v_full
      FROM (SELECT j.queue, j.queue || E'\n' || j.group_key AS k, count(*) AS n FROM "{schema}".jobs j
             WHERE j.queue = ANY(p_queues) AND j.state = 'active' AND j.group_key IS NOT NULL
               AND v_gmax ? j.queue GROUP BY j.queue, j.group_key) a;
  END IF;
  IF cardinality(p_queues) = 1 THEN
    OPEN cur FOR SELECT j.id, j.queue, j.group_key FROM "{schema}".jobs j
      WHERE j.state = 'queued' AND j.queue = p_queues[1] AND j.run_at <= p_now
        AND NOT EXISTS (SELECT 1 FROM "{schema}".paused_queues p WHERE p.queue = j.queue)
        AND coalesce((v_allowed ->> j.queue)::bigint, 1) > 0
        AND coalesce((v_cap ->> j.queue)::bigint, 1) > 0
        AND (j.group_key IS NULL OR NOT (v_full ? (j.queue || E'\n' || j.group_key)))
      ORDER BY j.priority DESC, j.run_at, j.id;
  ELSE
    OPEN cur FOR SELECT c.id, c.queue, c.group_key FROM unnest(p_queues) AS q(name)
      CROSS JOIN LATERAL (SELECT j.id, j.queue, j.group_key, j.priority, j.run_at FROM "{schema}".jobs j
        WHERE j.state = 'queued' AND j.queue = q.name AND j.run_at <= p_now
          AND coalesce((v_allowed ->> j.queue)::bigint, 1) > 0
          AND coalesce((v_cap ->> j.queue)::bigint, 1) > 0
          AND (j.group_key IS NULL OR NOT (v_full ? (j.queue || E'\n' || j.group_key)))
        ORDER BY j.priority DESC, j.run_at, j.id LIMIT 4 * p_limit + 100) c
      WHERE NOT EXISTS (SELECT 1 FROM "{schema}".paused_queues p WHERE p.queue = q.name)
      ORDER BY c.priority DESC, c.run_at, c.id;
  END IF;
  LOOP
    FETCH cur INTO r;
    EXIT WHEN NOT FOUND;
    IF v_allowed ? r.queue AND (v_allowed ->> r.queue)::bigint <= 0 THEN CONTINUE; END IF;
    IF v_cap ? r.queue AND (v_cap ->> r.queue)::bigint <= 0 THEN CONTINUE; END IF;
    IF r.group_key IS NOT NULL AND v_gmax ? r.queue THEN
      v_key := r.queue || E'\n' || r.group_key;
      v_n := coalesce((v_active ->> v_key)::bigint, 0);
      IF v_n >= (v_gmax ->> r.queue)::bigint THEN CONTINUE; END IF;
      v_active := v_active || jsonb_build_object(v_key, v_n + 1);
    END IF;
    IF v_allowed ? r.queue THEN
      v_allowed := v_allowed || jsonb_build_object(r.queue, (v_allowed ->> r.queue)::bigint - 1);
    END IF;
    IF v_cap ? r.queue THEN
      v_cap := v_cap || jsonb_build_object(r.queue, (v_cap ->> r.queue)::bigint - 1);
    END IF;
    v_ids := v_ids || r.id;
    EXIT WHEN cardinality(v_ids) >= p_limit;
    -- One queue whose slots or starts are used up: nothing after this row can be taken.
    EXIT WHEN cardinality(p_queues) = 1 AND (coalesce((v_cap ->> r.queue)::bigint, 1) <= 0
                                             OR coalesce((v_allowed ->> r.queue)::bigint, 1) <= 0);
  END LOOP;
  CLOSE cur;
  IF cardinality(v_ids) = 0 THEN RETURN; END IF;
  -- state = 'queued' again: a cancel or a debounce may have changed a row meanwhile
  -- (claims of these queues cannot: they wait for our lock).
  RETURN QUERY
    WITH u AS (UPDATE "{schema}".jobs j SET state = 'active', attempts = j.attempts + 1,
                      lease_token = p_tokens[p.ord], lease_until = p_lease_until
                 FROM unnest(v_ids) WITH ORDINALITY AS p(id, ord)
                WHERE j.id = p.id AND j.state = 'queued' AND j.run_at <= p_now RETURNING j.*),
         led AS (INSERT INTO "{schema}".rate_ledger (queue, at_ms, n)
                 SELECT u.queue, p_now, count(*) FROM u WHERE v_allowed ? u.queue GROUP BY u.queue)
    SELECT * FROM u;
END $fn$;
)sql"},
    {7, "(issue 16) flow_revive locks what it may change in id order first, as releases do",
     R"sql(
-- As in migration 4, after locking every job below p_id in id order: level by level, a later
-- level could hold smaller ids than a release (complete_many, flow_died) locks first, and the
-- two would deadlock.
CREATE OR REPLACE FUNCTION "{schema}".flow_revive(p_id bigint) RETURNS int LANGUAGE plpgsql AS $fn$
DECLARE v_ids bigint[] := ARRAY[p_id]; v_n int := 0;
BEGIN
  PERFORM 1 FROM "{schema}".jobs w
   WHERE w.id IN (WITH RECURSIVE down(id) AS (
                    SELECT d.job_id FROM "{schema}".job_deps d WHERE d.dep_id = p_id
                    UNION SELECT d.job_id FROM "{schema}".job_deps d JOIN down ON d.dep_id = down.id)
                  SELECT id FROM down)
   ORDER BY w.id FOR UPDATE;
  WHILE cardinality(v_ids) > 0 LOOP
    UPDATE "{schema}".jobs w SET pending = w.pending + x.n
      FROM (SELECT d.job_id, count(*) AS n FROM "{schema}".job_deps d WHERE d.dep_id = ANY(v_ids)
             GROUP BY d.job_id) x
     WHERE w.id = x.job_id AND w.state = 'waiting' AND w.continue_on_failure;
    WITH back AS (
      UPDATE "{schema}".jobs w SET state = 'waiting', finished_at = NULL,
             pending = (SELECT count(*) FROM unnest(w.depends_on) AS o(id)
                          JOIN "{schema}".jobs oj ON oj.id = o.id WHERE oj.state <> 'completed')
       WHERE w.id IN (SELECT d.job_id FROM "{schema}".job_deps d WHERE d.dep_id = ANY(v_ids))
         AND w.state = 'dead' AND w.attempts = 0
         AND NOT EXISTS (SELECT 1 FROM unnest(w.depends_on) AS o(id)
                           JOIN "{schema}".jobs oj ON oj.id = o.id WHERE oj.state IN ('dead', 'cancelled'))
      RETURNING w.id)
    SELECT coalesce(array_agg(id), '{}') INTO v_ids FROM back;
    v_n := v_n + cardinality(v_ids);
  END LOOP;
  RETURN v_n;
END $fn$;
)sql"},
    {8, "(issue 21) deadlines of queued jobs: jobs.expires_at, claims step over jobs past it",
     R"sql(
-- EnqueueOptions::expires_at, epoch ms; NULL: no deadline. A queued job past it is never claimed;
-- recover_expired cancels it (sql::expire), reading queued jobs with a deadline only.
ALTER TABLE "{schema}".jobs ADD COLUMN expires_at bigint;
CREATE INDEX jobs_deadline ON "{schema}".jobs (expires_at) WHERE state = 'queued' AND expires_at IS NOT NULL;
-- enqueue_keyed as in migration 1, storing the deadline too (a new parameter, so a new function).
DROP FUNCTION "{schema}".enqueue_keyed(text, text, json, int, int, bigint, bigint, jsonb, bigint, bigint,
                                       text, text, bigint, bigint);
CREATE FUNCTION "{schema}".enqueue_keyed(p_queue text, p_name text, p_payload json,
    p_priority int, p_max_attempts int, p_run_at bigint, p_now bigint, p_backoff jsonb,
    p_timeout bigint, p_unique_for bigint, p_group text, p_key text, p_throttle bigint,
    p_debounce bigint, p_expires_at bigint)
 RETURNS TABLE (job_id bigint, created boolean) LANGUAGE plpgsql AS $fn$
DECLARE h record; v_id bigint;
BEGIN
  FOR v_try IN 1..50 LOOP
    SELECT j.id, j.state, j.created_at, j.finished_at, j.unique_for_ms INTO h
      FROM "{schema}".jobs j WHERE j.queue = p_queue AND j.unique_key = p_key AND j.holds_key;
    IF FOUND THEN
      IF p_debounce > 0 THEN
        IF h.state = 'queued' THEN
          UPDATE "{schema}".jobs SET payload = p_payload, run_at = p_now + p_debounce
           WHERE id = h.id AND state = 'queued' AND holds_key;
          IF FOUND THEN job_id := h.id; created := false; RETURN NEXT; RETURN; END IF;
          CONTINUE;  -- claimed meanwhile: look again
        END IF;
      ELSIF h.state IN ('queued', 'active')
         OR (h.state = 'completed' AND h.finished_at + h.unique_for_ms > p_now)
         OR (p_throttle > 0 AND h.created_at + p_throttle > p_now) THEN
        job_id := h.id; created := false; RETURN NEXT; RETURN;
      END IF;
      -- The key passes to the new job; the old holder keeps its state (an active one runs on).
      UPDATE "{schema}".jobs SET holds_key = false WHERE id = h.id AND holds_key AND state = h.state;
      IF NOT FOUND THEN CONTINUE; END IF;
    END IF;
    INSERT INTO "{schema}".jobs (queue, name, payload, state, priority, max_attempts, run_at,
                                 created_at, backoff, timeout_ms, unique_key, unique_for_ms, group_key,
                                 expires_at)
    VALUES (p_queue, p_name, p_payload, 'queued', p_priority, p_max_attempts,
            CASE WHEN p_debounce > 0 THEN p_now + p_debounce ELSE p_run_at END, p_now, p_backoff,
            p_timeout, p_key, p_unique_for, p_group, p_expires_at)
    ON CONFLICT (queue, unique_key) WHERE unique_key IS NOT NULL AND holds_key DO NOTHING
    RETURNING id INTO v_id;
    IF FOUND THEN
      PERFORM pg_notify('jobq:{schema}', p_queue);
      job_id := v_id; created := true; RETURN NEXT; RETURN;
    END IF;
  END LOOP;
  RAISE EXCEPTION 'unique key % of queue % is held by a job this transaction cannot see (REPEATABLE READ?)',
    p_key, p_queue USING ERRCODE = '40001';
END $fn$;
-- claim_limited (migration 6) steps over jobs past their deadline too: its three run_at tests
-- (both candidate scans and the final update) gain the deadline's, edited into the installed
-- definition rather than copied, so the filter is the same wherever the claim tests run_at.
DO $do$
DECLARE d text; e text;
BEGIN
  d := pg_get_functiondef('"{schema}".claim_limited(text[], bigint, int, bigint, text[])'::regprocedure);
  e := replace(d, 'j.run_at <= p_now', 'j.run_at <= p_now AND (j.expires_at IS NULL OR j.expires_at >= p_now)');
  IF (length(e) - length(d)) <> 3 * length(' AND (j.expires_at IS NULL OR j.expires_at >= p_now)') THEN
    RAISE EXCEPTION 'claim_limited is not the definition migration 6 installed';
  END IF;
  EXECUTE e;
END $do$;
)sql"},
}};

/// The schema version this library writes.
inline constexpr int latest_schema_version = migrations.back().version;

static_assert([] {
  for (std::size_t i = 0; i < migrations.size(); ++i) {
    if (migrations[i].version != static_cast<int>(i) + 1) return false;
  }
  return true;
}(), "migrations are numbered 1..N in order");

/// "connected as ..., schema owned by ..." for a refused migration, or "owner unknown".
inline std::string schema_owner(Conn& c, const std::string& schema) {
  try {
    auto r = exec_text(c.raw(), sql::schema_owner, {schema});
    std::string who = std::string("connected as \"") + PQgetvalue(r.get(), 0, 0) + "\"";
    if (!PQgetisnull(r.get(), 0, 1)) who += std::string(", schema owned by \"") + PQgetvalue(r.get(), 0, 1) + "\"";
    return who;
  } catch (...) {
    return "owner unknown";
  }
}

/// Creates or upgrades the schema under a transaction-scoped advisory lock, so any number of
/// processes may start at once: one migrates, the others wait and then find it done. With
/// `create` false, a schema that holds no jobq store is refused (not_found) and left alone.
inline void migrate(ConnectionPool& pool, const StatementTable& statements, const std::string& schema,
                    const std::string& target, bool create = true) {
  auto lease = [&] {
    try {
      return pool.acquire();
    } catch (const Lost& lost) {
      throw PostgresError(ErrorCategory::connection, "postgres: " + lost.message, "08001");
    }
  }();
  Conn& c = *lease;
  PGconn* pg = c.raw();
  try {
    in_transaction(c, [&] {
      exec_text(pg, sql::migration_lock, {"jobq:migrate:" + schema});
      const bool has_schema = PQntuples(exec_text(pg, sql::find_schema, {schema}).get()) != 0;
      const bool has_table = has_schema && PQntuples(exec_text(pg, sql::find_migrations_table, {schema}).get()) != 0;
      if (!has_table && !create) {
        throw PostgresError(ErrorCategory::not_found,
                            "postgres: no jobq store in schema \"" + schema + "\" on " + target +
                                (has_schema ? ": the schema holds no jobq tables" : ": the schema does not exist") +
                                " (nothing was created)");
      }
      if (!has_schema) exec_text(pg, statements.create_schema);
      if (!has_table) exec_text(pg, statements.create_migrations_table);
      auto v = exec_text(pg, statements.schema_version);
      const auto version = static_cast<int>(to_i64(PQgetvalue(v.get(), 0, 0)));
      if (version > latest_schema_version) {
        throw PostgresError(ErrorCategory::conflict,
                            "postgres: schema \"" + schema + "\" is at version " + std::to_string(version) +
                                ", newer than this jobq (" + std::to_string(latest_schema_version) +
                                "); upgrade jobq");
      }
      for (const auto& m : migrations) {
        if (m.version <= version) continue;
        // The simple protocol: a migration is many statements.
        check(pg, PQexec(pg, with_schema(m.sql, schema).c_str()), "migration " + std::to_string(m.version));
        exec_text(pg, statements.record_migration, {std::to_string(m.version)});
      }
      return 0;
    });
  } catch (const Lost& lost) {
    throw PostgresError(ErrorCategory::connection,
                        "postgres: connection to " + target + " lost while setting up schema \"" + schema +
                            "\": " + lost.message,
                        "08006");
  } catch (const PostgresError& e) {
    if (e.sqlstate() != "42501") throw;
    throw PostgresError(e.category(),
                        "postgres: cannot set up schema \"" + schema + "\" (" + schema_owner(c, schema) +
                            "): " + e.what() + "; grant this role rights on it, or choose another schema",
                        e.sqlstate());
  }
}

}  // namespace jobq::detail::pg
