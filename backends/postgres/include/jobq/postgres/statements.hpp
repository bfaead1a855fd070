#pragma once
// Every statement the backend sends, in one place, with the index each one relies on.
//
// Each is a raw string written with the placeholder {schema} where the schema name goes:
// "{schema}".jobs for the tables and functions, 'jobq:{schema}' for the wake-up channel.
// StatementTable fills it in once, when the backend is made (the name was checked to be
// [a-z0-9_] only, so it needs no escaping). The prepared ones are named jobq_<name>.

#include <array>
#include <cstddef>
#include <string>
#include <string_view>

namespace jobq::detail::pg {

namespace sql {

// ---------------------------------------------------------------------------------------------
// Enqueue. Each insert statement sends its own NOTIFY (once per queue of a batch, only for rows
// really inserted); migration 2 dropped the AFTER INSERT trigger that did it for them, whose
// transition table cost a tenth of a bulk insert. NOTIFY is transactional: a waiter wakes only
// when the jobs are visible.

// $1 queue $2 name $3 payload $4 priority $5 max_attempts $6 run_at $7 now $8 backoff
// $9 timeout_ms $10 unique_for_ms $11 group (NULL = none) $12 expires_at (NULL = none)
inline constexpr std::string_view enqueue_one = R"sql(
WITH ins AS (INSERT INTO "{schema}".jobs (queue, name, payload, state, priority, max_attempts, run_at,
                                          created_at, backoff, timeout_ms, unique_key, unique_for_ms, group_key,
                                          expires_at)
             VALUES ($1, $2, $3::json, 'queued', $4::int, $5::int, $6::bigint, $7::bigint,
                     $8::jsonb, $9::bigint, NULL, $10::bigint, $11::text, $12::bigint) RETURNING id, queue)
SELECT i.id FROM ins i CROSS JOIN LATERAL pg_notify('jobq:{schema}', i.queue) n
)sql";

// The same ($12 expires_at) plus $13 unique_key $14 throttle_ms $15 debounce_ms: see
// enqueue_keyed in migration 7 (the key's holder, throttle and debounce, retried on a lost race).
inline constexpr std::string_view enqueue_keyed = R"sql(
SELECT job_id, created FROM "{schema}".enqueue_keyed($1::text, $2::text, $3::json, $4::int,
  $5::int, $6::bigint, $7::bigint, $8::jsonb, $9::bigint, $10::bigint, $11::text, $13::text,
  $14::bigint, $15::bigint, $12::bigint)
)sql";

// Arrays of a batch; ids come from one sequence in ORDER BY ord, so sorted ids map back to
// input order. Backoff policies come once each ($8) with a 1-based index per job ($9):
// parsing the same jsonb for every row was a tenth of the statement's server time.
// $1 queues $2 names $3 payloads $4 priorities $5 max_attempts $6 run_ats $7 now
// $8 distinct backoffs $9 backoff index $10 timeouts $11 unique_fors $12 distinct queues
// $13 groups $14 expires_ats
inline constexpr std::string_view enqueue_batch = R"sql(
WITH ins AS (INSERT INTO "{schema}".jobs (queue, name, payload, state, priority, max_attempts, run_at,
                                          created_at, backoff, timeout_ms, unique_key, unique_for_ms, group_key,
                                          expires_at)
             SELECT q, n, p::json, 'queued', pr, ma, ra, $7::bigint, ($8::jsonb[])[bi], t, NULL, uf, g, ex
               FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::int[], $6::bigint[],
                           $9::int[], $10::bigint[], $11::bigint[], $13::text[], $14::bigint[])
                    WITH ORDINALITY AS x(q, n, p, pr, ma, ra, bi, t, uf, g, ex, ord)
              ORDER BY ord RETURNING id),
     woke AS (SELECT count(*) FROM unnest($12::text[]) AS q(name)
              CROSS JOIN LATERAL pg_notify('jobq:{schema}', q.name) n)
SELECT ins.id FROM woke, ins
)sql";

// Flows: ids are taken first (reserve_ids, in order) so that dependencies, given as member
// indexes, can be stored as ids in the same insert. jobs_id_seq is the identity's sequence,
// named as a constant: pg_get_serial_sequence per row was a third of a 20,000-member flow.
inline constexpr std::string_view reserve_ids = R"sql(
SELECT nextval('"{schema}".jobs_id_seq'::regclass) FROM generate_series(1, $1::int) ORDER BY 1
)sql";

// All members of a flow, its flows row and its job_deps edges in one statement. A member
// with dependencies waits with all of them pending. $1 ids $2 queues $3 names $4 payloads
// $5 priorities $6 max_attempts $7 run_ats $8 now $9 distinct backoffs $10 backoff index
// $11 timeouts $12 unique_fors $13 groups $14 depends_on (array literals) $15 continue on
// failure $16 flow id $17 on_failure (flow_doc, NULL = none) $18 distinct queues $19 expires_ats
inline constexpr std::string_view insert_flow = R"sql(
WITH fl AS (INSERT INTO "{schema}".flows (id, on_failure) VALUES ($16::bigint, $17::jsonb) RETURNING id),
  ins AS (INSERT INTO "{schema}".jobs (id, queue, name, payload, state, priority, max_attempts, run_at,
                                       created_at, backoff, timeout_ms, unique_key, unique_for_ms,
                                       group_key, flow_id, depends_on, continue_on_failure, pending, expires_at)
          OVERRIDING SYSTEM VALUE
          SELECT i, q, n, p::json, CASE WHEN cardinality(d::bigint[]) = 0 THEN 'queued' ELSE 'waiting' END,
                 pr, ma, ra, $8::bigint, ($9::jsonb[])[bi], t, NULL, uf, g, $16::bigint, d::bigint[], cf,
                 cardinality(d::bigint[]), ex
            FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::int[], $6::int[],
                        $7::bigint[], $10::int[], $11::bigint[], $12::bigint[], $13::text[], $14::text[],
                        $15::boolean[], $19::bigint[]) AS x(i, q, n, p, pr, ma, ra, bi, t, uf, g, d, cf, ex)
          RETURNING id, depends_on),
  deps AS (INSERT INTO "{schema}".job_deps (dep_id, job_id) SELECT unnest(depends_on), id FROM ins),
  woke AS (SELECT count(*) FROM unnest($18::text[]) AS q(name)
           CROSS JOIN LATERAL pg_notify('jobq:{schema}', q.name) n)
SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM woke), (SELECT count(*) FROM fl)
)sql";

// ---------------------------------------------------------------------------------------------
// Claim and outcomes. Job notices (Backend::subscribe) are sent by the statement that makes
// the change, so only committed changes are announced: one NOTIFY per statement carrying a
// JSON array (notify_events, migration 3, splits it below the 8000-byte payload limit), from
// the CTE `note` over the changed rows. Only when some process listens (event_listeners):
// without subscribers a statement pays one index probe. The scalar subquery over `note` makes
// it run (an unreferenced SELECT CTE would not).

// Per queue, an ordered scan of the partial index jobs_ready (queue, priority DESC, run_at,
// id) WHERE state = 'queued', locking with SKIP LOCKED so concurrent claimers never wait
// for or share a row; then the best `limit` across the queues. A job past its deadline is
// stepped over (recover_expired ends it): a filter on the row the scan reads anyway.
// When one of the queues has limits (a queue_limits row), the fast path takes nothing and
// claim_limited (migration 3) claims instead, under a lock on those queues' limits rows.
// Both branches test the same InitPlan in the same snapshot, so exactly one of them runs;
// unlimited queues pay one index probe of queue_limits and no lock.
// $1 queues $2 now $3 limit $4 lease_until $5 tokens
inline constexpr std::string_view claim = R"sql(
WITH picked AS (
  SELECT c.id, row_number() OVER (ORDER BY c.priority DESC, c.run_at, c.id) AS rn
    FROM unnest($1::text[]) AS q(name)
    CROSS JOIN LATERAL (
      SELECT j.id, j.priority, j.run_at FROM "{schema}".jobs j
       WHERE j.state = 'queued' AND j.queue = q.name AND j.run_at <= $2::bigint
         AND (j.expires_at IS NULL OR j.expires_at >= $2::bigint)
       ORDER BY j.priority DESC, j.run_at, j.id
       LIMIT $3::int FOR UPDATE SKIP LOCKED) c
   WHERE NOT EXISTS (SELECT 1 FROM "{schema}".paused_queues p WHERE p.queue = q.name)
     AND NOT (SELECT EXISTS (SELECT 1 FROM "{schema}".queue_limits l WHERE l.queue = ANY($1::text[])))
   ORDER BY c.priority DESC, c.run_at, c.id LIMIT $3::int),
  fast AS (UPDATE "{schema}".jobs j SET state = 'active', attempts = j.attempts + 1,
                  lease_token = ($5::text[])[picked.rn], lease_until = $4::bigint
             FROM picked WHERE j.id = picked.id
           RETURNING j.id, j.queue, j.name, j.payload, j.state, j.priority, j.attempts, j.max_attempts,
                     j.run_at, j.created_at, j.finished_at, j.lease_until, j.lease_token, j.backoff,
                     j.timeout_ms, j.unique_key, j.unique_for_ms, j.result, j.errors, j.progress,
                     j.progress_message, j.group_key, j.flow_id, j.depends_on, j.continue_on_failure,
                     j.expires_at)
SELECT * FROM fast
UNION ALL
SELECT j.id, j.queue, j.name, j.payload, j.state, j.priority, j.attempts, j.max_attempts,
       j.run_at, j.created_at, j.finished_at, j.lease_until, j.lease_token, j.backoff,
       j.timeout_ms, j.unique_key, j.unique_for_ms, j.result, j.errors, j.progress,
       j.progress_message, j.group_key, j.flow_id, j.depends_on, j.continue_on_failure, j.expires_at
  FROM "{schema}".claim_limited($1::text[], $2::bigint, $3::int, $4::bigint, $5::text[]) j
 WHERE (SELECT EXISTS (SELECT 1 FROM "{schema}".queue_limits l WHERE l.queue = ANY($1::text[])))
)sql";

// $1 ids $2 tokens $3 results (json texts) $4 now; returns the 1-based positions done, each
// with the number of queues woken by releases.
// done_token remembers which lease finished the job, for retries after a lost answer.
// In the same statement, flow dependents waiting for the completed jobs (job_deps by dep_id)
// count them resolved; those left with nothing pending become queued, and their queues are
// woken. Concurrent completions decrement the same dependent: `locked` takes the dependents'
// row locks in id order (no deadlock), and `rel` re-reads pending on the locked row
// (READ COMMITTED re-checks an updated row), so each is released exactly once.
inline constexpr std::string_view complete_many = R"sql(
WITH done AS (
  UPDATE "{schema}".jobs j SET state = 'completed', finished_at = $4::bigint,
         result = (($3::text[])[c.ord])::json, lease_token = NULL, lease_until = NULL,
         done_token = j.lease_token
    FROM unnest($1::bigint[], $2::text[]) WITH ORDINALITY AS c(id, token, ord)
   WHERE j.id = c.id AND j.state = 'active' AND j.lease_token = c.token
  RETURNING c.ord, j.id, j.queue, j.attempts, j.progress, j.flow_id),
  note AS (SELECT "{schema}".notify_events(array_agg(json_build_object('kind', 'completed', 'id', id,
                    'queue', queue, 'attempt', attempts, 'progress', progress, 'message', '')::text))
             FROM done WHERE (SELECT EXISTS (SELECT 1 FROM "{schema}".event_listeners)) HAVING count(*) > 0),
  freed AS (SELECT d.job_id AS id, count(*) AS n FROM done JOIN "{schema}".job_deps d ON d.dep_id = done.id
             WHERE done.flow_id IS NOT NULL GROUP BY d.job_id),
  locked AS (SELECT w.id, f.n FROM "{schema}".jobs w JOIN freed f ON f.id = w.id
              WHERE w.state = 'waiting' ORDER BY w.id FOR UPDATE OF w),
  rel AS (UPDATE "{schema}".jobs w SET pending = w.pending - l.n,
                 state = CASE WHEN w.pending <= l.n THEN 'queued' ELSE 'waiting' END,
                 run_at = CASE WHEN w.pending <= l.n THEN greatest(w.run_at, $4::bigint) ELSE w.run_at END
            FROM locked l WHERE w.id = l.id AND w.state = 'waiting' RETURNING w.queue, w.state),
  woke AS (SELECT count(pg_notify('jobq:{schema}', q.queue)) AS n
             FROM (SELECT DISTINCT queue FROM rel WHERE state = 'queued') q)
SELECT done.ord, woke.n FROM done, woke WHERE (SELECT count(*) FROM note) >= 0
)sql";

// $1 ids $2 tokens: which of them were finished by that very token, and their state now.
inline constexpr std::string_view done_check = R"sql(
SELECT c.ord, j.state FROM unnest($1::bigint[], $2::text[]) WITH ORDINALITY AS c(id, token, ord)
  JOIN "{schema}".jobs j ON j.id = c.id AND j.done_token = c.token
)sql";

// $1 id $2 token $3 message $4 retry_at (NULL = dead) $5 now. A flow member that dies takes
// its dependents with it (flow_died, migration 4) in the same statement.
inline constexpr std::string_view fail = R"sql(
WITH f AS (UPDATE "{schema}".jobs SET
    errors = errors || jsonb_build_array(jsonb_build_object(
             'attempt', attempts, 'message', $3::text, 'at', $5::bigint)),
    state = CASE WHEN $4::bigint IS NOT NULL AND attempts < max_attempts THEN 'queued' ELSE 'dead' END,
    run_at = CASE WHEN $4::bigint IS NOT NULL AND attempts < max_attempts THEN $4::bigint ELSE run_at END,
    finished_at = CASE WHEN $4::bigint IS NOT NULL AND attempts < max_attempts THEN NULL
                  ELSE $5::bigint END,
    lease_token = NULL, lease_until = NULL, done_token = lease_token
  WHERE id = $1::bigint AND state = 'active' AND lease_token = $2::text
  RETURNING id, queue, state, attempts, flow_id),
  note AS (SELECT "{schema}".notify_events(array_agg(json_build_object('kind',
                    CASE state WHEN 'dead' THEN 'dead' ELSE 'failed' END, 'id', id, 'queue', queue,
                    'attempt', attempts, 'progress', 0, 'message', left($3::text, 1000))::text))
             FROM f WHERE (SELECT EXISTS (SELECT 1 FROM "{schema}".event_listeners)) HAVING count(*) > 0),
  settle AS (SELECT "{schema}".flow_died(array_agg(id), false, $3::text, true, $5::bigint)
               FROM f WHERE state = 'dead' AND flow_id IS NOT NULL HAVING count(*) > 0)
SELECT state FROM f WHERE (SELECT count(*) FROM note) >= 0 AND (SELECT count(*) FROM settle) >= 0
)sql";

inline constexpr std::string_view extend = R"sql(
UPDATE "{schema}".jobs SET lease_until = $3::bigint
 WHERE id = $1::bigint AND state = 'active' AND lease_token = $2::text RETURNING id
)sql";

// snooze, and release ($3 = now).
inline constexpr std::string_view release = R"sql(
UPDATE "{schema}".jobs SET state = 'queued', run_at = $3::bigint, attempts = attempts - 1,
       lease_token = NULL, lease_until = NULL, done_token = lease_token
 WHERE id = $1::bigint AND state = 'active' AND lease_token = $2::text RETURNING id
)sql";

// Undoes claims whose answer was lost: $1 tokens $2 now.
inline constexpr std::string_view release_tokens = R"sql(
UPDATE "{schema}".jobs SET state = 'queued', run_at = $2::bigint, attempts = attempts - 1,
       lease_token = NULL, lease_until = NULL
 WHERE state = 'active' AND lease_token = ANY($1::text[]) RETURNING id
)sql";

inline constexpr std::string_view progress = R"sql(
WITH p AS (UPDATE "{schema}".jobs SET progress = $3::int, progress_message = $4::text
            WHERE id = $1::bigint AND state = 'active' AND lease_token = $2::text
           RETURNING id, queue, attempts, progress),
  note AS (SELECT "{schema}".notify_events(array_agg(json_build_object('kind', 'progress', 'id', id,
                    'queue', queue, 'attempt', attempts, 'progress', progress,
                    'message', left($4::text, 1000))::text))
             FROM p WHERE (SELECT EXISTS (SELECT 1 FROM "{schema}".event_listeners)) HAVING count(*) > 0)
SELECT id FROM p WHERE (SELECT count(*) FROM note) >= 0
)sql";

// ---------------------------------------------------------------------------------------------
// Maintenance

// One node at a time: the try-lock is an InitPlan evaluated once, before any row; a node
// that does not get it updates nothing. Uses jobs_active_lease (lease_until) WHERE active.
// $1 now $2 lock name
inline constexpr std::string_view recover = R"sql(
WITH r AS (UPDATE "{schema}".jobs SET
    errors = errors || jsonb_build_array(jsonb_build_object(
             'attempt', attempts, 'message', 'lease expired (worker lost or too slow)',
             'at', $1::bigint)),
    state = CASE WHEN attempts < max_attempts THEN 'queued' ELSE 'dead' END,
    run_at = CASE WHEN attempts < max_attempts THEN $1::bigint ELSE run_at END,
    finished_at = CASE WHEN attempts < max_attempts THEN NULL ELSE $1::bigint END,
    lease_token = NULL, lease_until = NULL
  WHERE (SELECT pg_try_advisory_xact_lock(hashtextextended($2::text, 0)))
    AND state = 'active' AND lease_until <= $1::bigint RETURNING id, queue, state, attempts, flow_id),
  note AS (SELECT "{schema}".notify_events(array_agg(json_build_object('kind',
                    CASE state WHEN 'dead' THEN 'dead' ELSE 'failed' END, 'id', id, 'queue', queue,
                    'attempt', attempts, 'progress', 0,
                    'message', 'lease expired (worker lost or too slow)')::text))
             FROM r WHERE (SELECT EXISTS (SELECT 1 FROM "{schema}".event_listeners)) HAVING count(*) > 0),
  settle AS (SELECT "{schema}".flow_died(array_agg(id), false, 'lease expired (worker lost or too slow)',
                                         true, $1::bigint)
               FROM r WHERE state = 'dead' AND flow_id IS NOT NULL HAVING count(*) > 0)
SELECT state FROM r WHERE (SELECT count(*) FROM note) >= 0 AND (SELECT count(*) FROM settle) >= 0
)sql";

// Queued jobs past their deadline (jobs_deadline), at most $2, become cancelled with the reason
// "expired: not started by <ISO time>", as cancel does (flow dependents too). SKIP LOCKED: a
// concurrent pass takes other rows. $1 now $2 batch
inline constexpr std::string_view expire = R"sql(
WITH x AS (SELECT id FROM "{schema}".jobs WHERE state = 'queued' AND expires_at < $1::bigint
            ORDER BY expires_at LIMIT $2::int FOR UPDATE SKIP LOCKED),
  c AS (UPDATE "{schema}".jobs j SET state = 'cancelled', finished_at = $1::bigint,
               errors = j.errors || jsonb_build_array(jsonb_build_object('attempt', j.attempts,
                 'message', 'expired: not started by ' || to_char((to_timestamp(j.expires_at / 1000)
                    + (j.expires_at % 1000) * interval '1 millisecond') AT TIME ZONE 'UTC',
                    'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                 'at', $1::bigint))
          FROM x WHERE j.id = x.id AND j.state = 'queued'
        RETURNING j.id, j.queue, j.attempts, j.progress, j.flow_id),
  note AS (SELECT "{schema}".notify_events(array_agg(json_build_object('kind', 'cancelled', 'id', id,
                    'queue', queue, 'attempt', attempts, 'progress', progress, 'message', '')::text))
             FROM c WHERE (SELECT EXISTS (SELECT 1 FROM "{schema}".event_listeners)) HAVING count(*) > 0),
  settle AS (SELECT "{schema}".flow_died(array_agg(id), true, '', false, $1::bigint)
               FROM c WHERE flow_id IS NOT NULL HAVING count(*) > 0)
SELECT id FROM c WHERE (SELECT count(*) FROM note) >= 0 AND (SELECT count(*) FROM settle) >= 0
)sql";

// Flow members are left to prune_flows.
// Uses jobs_finished (queue, state, finished_at); at most 10,000 rows per statement so a
// large backlog is deleted in short transactions. $1 queue $2 now $3..$5 keep ms (NULL =
// forever) $6 lock name
// The ids as an array (ARRAY(...) is an InitPlan): the rows go by the primary key. With
// "id IN (subquery)" both the custom and the generic plan were a hash semi join over a
// sequential scan of the whole table.
inline constexpr std::string_view prune = R"sql(
DELETE FROM "{schema}".jobs WHERE id = ANY (ARRAY(
  SELECT id FROM "{schema}".jobs WHERE queue = $1::text AND flow_id IS NULL
     AND (SELECT pg_try_advisory_xact_lock(hashtextextended($6::text, 0)))
     AND ((state = 'completed' AND finished_at + $3::bigint < $2::bigint)
       OR (state = 'dead' AND finished_at + $4::bigint < $2::bigint)
       OR (state = 'cancelled' AND finished_at + $5::bigint < $2::bigint))
   LIMIT 10000))
)sql";

// Whole flows with a finished member in $1 (jobs_flow_finished) whose members, in any queue,
// are all finished and expired (jobs_flow); at most 100 flows per statement. Params and lock
// as prune; returns the jobs deleted.
inline constexpr std::string_view prune_flows = R"sql(
WITH gone AS (
  SELECT DISTINCT c.flow_id AS id FROM "{schema}".jobs c
   WHERE c.queue = $1::text AND c.flow_id IS NOT NULL AND c.finished_at IS NOT NULL
     AND (SELECT pg_try_advisory_xact_lock(hashtextextended($6::text, 0)))
     AND NOT EXISTS (SELECT 1 FROM "{schema}".jobs m WHERE m.flow_id = c.flow_id
                      AND NOT coalesce((m.state = 'completed' AND m.finished_at + $3::bigint < $2::bigint)
                                    OR (m.state = 'dead' AND m.finished_at + $4::bigint < $2::bigint)
                                    OR (m.state = 'cancelled' AND m.finished_at + $5::bigint < $2::bigint), false))
   LIMIT 100),
  dj AS (DELETE FROM "{schema}".jobs j USING gone WHERE j.flow_id = gone.id RETURNING j.id),
  dd AS (DELETE FROM "{schema}".job_deps d USING dj WHERE d.dep_id = dj.id),  -- both ends are members
  df AS (DELETE FROM "{schema}".flows f USING gone WHERE f.id = gone.id)
SELECT count(*) FROM dj
)sql";

// All but the newest $3 jobs of a finished state, by jobs_finished read backwards; batches and
// lock as prune. $1 queue $2 state $3 jobs kept $4 lock name
inline constexpr std::string_view prune_beyond = R"sql(
DELETE FROM "{schema}".jobs WHERE id = ANY (ARRAY(
  SELECT id FROM "{schema}".jobs WHERE queue = $1::text AND state = $2::text
     AND finished_at IS NOT NULL AND flow_id IS NULL
     AND (SELECT pg_try_advisory_xact_lock(hashtextextended($4::text, 0)))
   ORDER BY finished_at DESC, id DESC OFFSET $3::bigint LIMIT 10000))
)sql";

// ---------------------------------------------------------------------------------------------
// Inspection and admin

// The columns of a job, in the order row_to_job (values.hpp) reads them.
inline constexpr std::string_view get = R"sql(
SELECT id, queue, name, payload, state, priority, attempts, max_attempts, run_at, created_at,
       finished_at, lease_until, lease_token, backoff, timeout_ms, unique_key, unique_for_ms,
       result, errors, progress, progress_message, group_key, flow_id, depends_on, continue_on_failure,
       expires_at
  FROM "{schema}".jobs WHERE id = $1::bigint
)sql";

// $1 ids
inline constexpr std::string_view get_many = R"sql(
SELECT id, queue, name, payload, state, priority, attempts, max_attempts, run_at, created_at,
       finished_at, lease_until, lease_token, backoff, timeout_ms, unique_key, unique_for_ms,
       result, errors, progress, progress_message, group_key, flow_id, depends_on, continue_on_failure,
       expires_at
  FROM "{schema}".jobs WHERE id = ANY($1::bigint[])
)sql";

// run_now: a queued job not yet due becomes due now ($2), waking waiters on its queue (the
// requeue trigger fires on a change of state only). $1 id $2 now
inline constexpr std::string_view run_now = R"sql(
WITH r AS (UPDATE "{schema}".jobs SET run_at = $2::bigint
            WHERE id = $1::bigint AND state = 'queued' AND run_at > $2::bigint RETURNING id, queue)
SELECT r.id FROM r CROSS JOIN LATERAL pg_notify('jobq:{schema}', r.queue) n
)sql";

// remove: a finished job outside flows, deleted as prune deletes one (with it goes its
// holds_key, so the key has no holder). $1 id
inline constexpr std::string_view remove_job = R"sql(
DELETE FROM "{schema}".jobs WHERE id = $1::bigint AND state IN ('completed', 'dead', 'cancelled')
   AND flow_id IS NULL RETURNING id
)sql";

// find_unique: the key's holder (jobs_unique_holder), when it holds the key as enqueue_keyed
// decides (throttle aside). $1 queue $2 key $3 now
inline constexpr std::string_view find_unique = R"sql(
SELECT id FROM "{schema}".jobs
 WHERE queue = $1::text AND unique_key = $2::text AND holds_key
   AND (state IN ('queued', 'active') OR (state = 'completed' AND finished_at + unique_for_ms > $3::bigint))
)sql";

// Every member of job $1's flow, by id (jobs_flow).
inline constexpr std::string_view flow_members = R"sql(
SELECT id, queue, name, payload, state, priority, attempts, max_attempts, run_at, created_at,
       finished_at, lease_until, lease_token, backoff, timeout_ms, unique_key, unique_for_ms,
       result, errors, progress, progress_message, group_key, flow_id, depends_on, continue_on_failure,
       expires_at
  FROM "{schema}".jobs WHERE flow_id = (SELECT flow_id FROM "{schema}".jobs WHERE id = $1::bigint)
 ORDER BY id
)sql";

// A queued, waiting or active job (its lease goes: the worker's calls are refused); its flow's
// dependents follow (flow_died). done_token stays: it names a lease that finished the job.
// The cancel of an active job is always sent on the cancels channel (watch_cancels), read from
// the statement's snapshot: a claim that commits while this waits for the row is not seen, and
// its worker learns of the cancel at its next heartbeat instead.
inline constexpr std::string_view cancel = R"sql(
WITH was AS (SELECT state FROM "{schema}".jobs WHERE id = $1::bigint),
  c AS (UPDATE "{schema}".jobs SET state = 'cancelled', finished_at = $2::bigint,
               lease_token = NULL, lease_until = NULL
         WHERE id = $1::bigint AND state IN ('queued', 'waiting', 'active')
        RETURNING id, queue, attempts, progress, flow_id,
                  json_build_object('kind', 'cancelled', 'id', id, 'queue', queue, 'attempt', attempts,
                                    'progress', progress, 'message', '')::text AS notice),
  note AS (SELECT "{schema}".notify_events(array_agg(notice))
             FROM c WHERE (SELECT EXISTS (SELECT 1 FROM "{schema}".event_listeners)) HAVING count(*) > 0),
  watch AS (SELECT pg_notify('jobq:{schema}:cancels', '[' || notice || ']')
              FROM c WHERE (SELECT state FROM was) = 'active'),
  settle AS (SELECT "{schema}".flow_died(array_agg(id), true, '', false, $2::bigint)
               FROM c WHERE flow_id IS NOT NULL HAVING count(*) > 0)
SELECT id FROM c WHERE (SELECT count(*) FROM note) >= 0 AND (SELECT count(*) FROM watch) >= 0
                   AND (SELECT count(*) FROM settle) >= 0
)sql";

// Every queued or waiting member of job $1's flow, rows locked in id order first (as releases
// lock them), then the flow's error callback disarmed. $2 now
inline constexpr std::string_view cancel_flow = R"sql(
WITH m AS (SELECT j.id FROM "{schema}".jobs j
            WHERE j.flow_id = (SELECT flow_id FROM "{schema}".jobs WHERE id = $1::bigint)
              AND j.state IN ('queued', 'waiting') ORDER BY j.id FOR UPDATE),
  c AS (UPDATE "{schema}".jobs j SET state = 'cancelled', finished_at = $2::bigint
          FROM m WHERE j.id = m.id AND j.state IN ('queued', 'waiting')
        RETURNING j.id, j.queue, j.attempts, j.progress),
  f AS (UPDATE "{schema}".flows SET fired = true
         WHERE id = (SELECT flow_id FROM "{schema}".jobs WHERE id = $1::bigint)
           AND (SELECT count(*) FROM c) >= 0 RETURNING id),
  note AS (SELECT "{schema}".notify_events(array_agg(json_build_object('kind', 'cancelled', 'id', id,
                    'queue', queue, 'attempt', attempts, 'progress', progress, 'message', '')::text))
             FROM c WHERE (SELECT EXISTS (SELECT 1 FROM "{schema}".event_listeners)) HAVING count(*) > 0)
SELECT count(*) FROM c WHERE (SELECT count(*) FROM note) >= 0 AND (SELECT count(*) FROM f) >= 0
)sql";

// A re-driven job takes its unique key back unless the key's holder (holds_key: at most
// one job per key, index jobs_unique_holder) still holds it. The old holder lets go first:
// the InitPlan over `unhold` runs before the row is updated, so the unique index never
// sees two holders. A flow member is refused while a dependency it needs is not completed.
inline constexpr std::string_view redrive = R"sql(
WITH t AS (SELECT id, queue, unique_key FROM "{schema}".jobs d
            WHERE id = $1::bigint AND state = 'dead'
              AND (continue_on_failure OR NOT EXISTS (
                    SELECT 1 FROM unnest(d.depends_on) AS o(id) JOIN "{schema}".jobs oj ON oj.id = o.id
                     WHERE oj.state <> 'completed'))
            FOR UPDATE),
     h AS (SELECT o.id, (o.state IN ('queued', 'active') OR (o.state = 'completed'
                   AND o.finished_at + o.unique_for_ms > $2::bigint)) AS held
             FROM "{schema}".jobs o, t WHERE o.queue = t.queue AND o.unique_key = t.unique_key
              AND o.holds_key AND o.id <> t.id),
     unhold AS (UPDATE "{schema}".jobs o SET holds_key = false FROM h
                 WHERE o.id = h.id AND NOT h.held RETURNING o.id)
UPDATE "{schema}".jobs j SET state = 'queued', run_at = $2::bigint, attempts = 0,
       finished_at = NULL,
       holds_key = j.unique_key IS NULL OR NOT EXISTS (SELECT 1 FROM h WHERE h.held)
  FROM t WHERE j.id = t.id AND (SELECT count(*) FROM unhold) >= 0 RETURNING j.id, j.flow_id
)sql";

// After redrive of flow member $1, in its transaction (flow_revive, migration 4).
inline constexpr std::string_view revive = R"sql(SELECT "{schema}".flow_revive($1::bigint))sql";

inline constexpr std::string_view pause = R"sql(
INSERT INTO "{schema}".paused_queues (queue) VALUES ($1::text) ON CONFLICT DO NOTHING
)sql";

// $1 queue $2 wake-up channel
inline constexpr std::string_view resume = R"sql(
WITH d AS (DELETE FROM "{schema}".paused_queues WHERE queue = $1::text RETURNING 1)
SELECT pg_notify($2::text, $1::text), (SELECT count(*) FROM d)
)sql";

inline constexpr std::string_view is_paused = R"sql(
SELECT 1 FROM "{schema}".paused_queues WHERE queue = $1::text
)sql";

// Per state, then a row 'delayed': the queued jobs with run_at > $2 (now), read from jobs_ready
// alone. One statement: one snapshot, so delayed never exceeds queued.
inline constexpr std::string_view counts = R"sql(
SELECT state, count(*) FROM "{schema}".jobs WHERE queue = $1::text GROUP BY state
UNION ALL
SELECT 'delayed', count(*) FROM "{schema}".jobs
 WHERE queue = $1::text AND state = 'queued' AND run_at > $2::bigint
)sql";

// A skip scan over jobs_queue_state (queue, state, id): one index probe per queue, not one
// row per job; plus queues that are paused but hold no job.
inline constexpr std::string_view queues = R"sql(
WITH RECURSIVE q(queue) AS (
  (SELECT queue FROM "{schema}".jobs ORDER BY queue LIMIT 1)
  UNION ALL
  SELECT (SELECT j.queue FROM "{schema}".jobs j WHERE j.queue > q.queue ORDER BY j.queue LIMIT 1)
    FROM q WHERE q.queue IS NOT NULL)
SELECT queue FROM q WHERE queue IS NOT NULL
UNION SELECT queue FROM "{schema}".paused_queues ORDER BY 1
)sql";

// Ordered by the whole key of jobs_queue_state (the same order as by id, queue and state
// being fixed), so the generic plan reads that index instead of filtering the primary key.
inline constexpr std::string_view list = R"sql(
SELECT id, queue, name, payload, state, priority, attempts, max_attempts, run_at, created_at,
       finished_at, lease_until, lease_token, backoff, timeout_ms, unique_key, unique_for_ms,
       result, errors, progress, progress_message, group_key, flow_id, depends_on, continue_on_failure,
       expires_at
  FROM "{schema}".jobs WHERE queue = $1::text AND state = $2::text
 ORDER BY queue, state, id LIMIT $3::bigint OFFSET $4::bigint
)sql";

// ---------------------------------------------------------------------------------------------
// Waiting

// Limited queues never count as ready: their jobs may be held back by a limit, and a
// waiter that returned at once would spin on claims. They are polled (poll_interval) and
// woken by NOTIFY like the others. $1 queues $2 now
inline constexpr std::string_view ready = R"sql(
SELECT 1 FROM unnest($1::text[]) AS q(name)
 WHERE NOT EXISTS (SELECT 1 FROM "{schema}".paused_queues p WHERE p.queue = q.name)
   AND NOT EXISTS (SELECT 1 FROM "{schema}".queue_limits l WHERE l.queue = q.name)
   AND EXISTS (SELECT 1 FROM "{schema}".jobs j
                WHERE j.state = 'queued' AND j.queue = q.name AND j.run_at <= $2::bigint)
 LIMIT 1
)sql";

// ---------------------------------------------------------------------------------------------
// Limits and schedules

// $1 queue $2 rate max $3 rate window ms (both NULL = no rate) $4 group concurrency $5 channel
// $6 queue concurrency.
// A raised limit may free work: waiters are woken.
inline constexpr std::string_view set_limits = R"sql(
WITH u AS (INSERT INTO "{schema}".queue_limits (queue, rate_max, rate_window_ms, group_concurrency, concurrency)
           VALUES ($1::text, $2::bigint, $3::bigint, $4::int, $6::int) ON CONFLICT (queue) DO UPDATE
           SET rate_max = EXCLUDED.rate_max, rate_window_ms = EXCLUDED.rate_window_ms,
               group_concurrency = EXCLUDED.group_concurrency, concurrency = EXCLUDED.concurrency
           RETURNING queue)
SELECT pg_notify($5::text, queue) FROM u
)sql";

// No limits = no row: claims of the queue take the fast path again. $1 queue $2 channel
inline constexpr std::string_view clear_limits = R"sql(
WITH d AS (DELETE FROM "{schema}".queue_limits WHERE queue = $1::text RETURNING queue)
SELECT pg_notify($2::text, queue) FROM d
)sql";

inline constexpr std::string_view get_limits = R"sql(
SELECT rate_max, rate_window_ms, group_concurrency, concurrency FROM "{schema}".queue_limits
 WHERE queue = $1::text
)sql";

// The spec is stored as the JSON text given and parsed back as is.
inline constexpr std::string_view put_schedule = R"sql(
INSERT INTO "{schema}".schedules (name, spec, next_run) VALUES ($1::text, $2::text, $3::bigint)
ON CONFLICT (name) DO UPDATE SET spec = EXCLUDED.spec, next_run = EXCLUDED.next_run
)sql";

inline constexpr std::string_view remove_schedule = R"sql(
DELETE FROM "{schema}".schedules WHERE name = $1::text RETURNING 1
)sql";

// Byte order (COLLATE "C"), as std::string compares.
inline constexpr std::string_view list_schedules = R"sql(
SELECT name, spec, next_run FROM "{schema}".schedules ORDER BY name COLLATE "C"
)sql";

// The compare-and-set: a concurrent firing waits on the row lock, then re-checks next_run
// on the committed row (READ COMMITTED) and updates nothing. $1 name $2 expected $3 next
inline constexpr std::string_view fire_schedule = R"sql(
UPDATE "{schema}".schedules SET next_run = $3::bigint
 WHERE name = $1::text AND next_run = $2::bigint RETURNING 1
)sql";

// ---------------------------------------------------------------------------------------------
// The worker registry

// One statement: the prune and the upsert. The prune skips rows another registration holds
// (it is deleting them, or renewing one), so registrations never wait on each other's prune and
// cannot deadlock; it spares $1, which the upsert writes (a row changes once per statement).
// $1 id $2 expires_at $3 info $4 now
inline constexpr std::string_view register_worker = R"sql(
WITH gone AS (DELETE FROM "{schema}".workers WHERE id IN (
    SELECT id FROM "{schema}".workers WHERE expires_at < $4::bigint AND id <> $1::text
       FOR UPDATE SKIP LOCKED))
INSERT INTO "{schema}".workers (id, expires_at, info) VALUES ($1::text, $2::bigint, $3::text)
ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at, info = EXCLUDED.info
)sql";

inline constexpr std::string_view unregister_worker = R"sql(
DELETE FROM "{schema}".workers WHERE id = $1::text RETURNING 1
)sql";

// Byte order (COLLATE "C"), as std::string compares. $1 now
inline constexpr std::string_view list_workers = R"sql(
SELECT id, info FROM "{schema}".workers WHERE expires_at >= $1::bigint ORDER BY id COLLATE "C"
)sql";

// ---------------------------------------------------------------------------------------------
// Not prepared: run once per connection or per backend object.

inline constexpr std::string_view schema_version = R"sql(
SELECT coalesce(max(version), 0) FROM "{schema}".schema_migrations
)sql";

// Run on each new pool connection (ConnectionPool::open says why).
inline constexpr std::string_view generic_plans = "SET plan_cache_mode = force_generic_plan";

// Migrations (migrations.hpp) run under this lock, $1 = "jobq:migrate:<schema>".
inline constexpr std::string_view migration_lock =
    "SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))";

// Catalog lookups, $1 = the schema name: CREATE ... IF NOT EXISTS would demand CREATE
// privileges even when everything exists, and a role that only uses a migrated schema has none.
inline constexpr std::string_view find_schema = R"sql(
SELECT pg_get_userbyid(nspowner), current_user FROM pg_namespace WHERE nspname = $1::text
)sql";
inline constexpr std::string_view find_migrations_table = R"sql(
SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = $1::text AND c.relname = 'schema_migrations'
)sql";
inline constexpr std::string_view schema_owner = R"sql(
SELECT current_user, (SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = $1::text)
)sql";

inline constexpr std::string_view create_schema = R"sql(CREATE SCHEMA "{schema}")sql";
inline constexpr std::string_view create_migrations_table = R"sql(
CREATE TABLE "{schema}".schema_migrations (version int PRIMARY KEY,
                                           applied_at timestamptz NOT NULL DEFAULT now())
)sql";
inline constexpr std::string_view record_migration = R"sql(
INSERT INTO "{schema}".schema_migrations (version) VALUES ($1::int)
)sql";

// The wait_for_work connection (wake_listener.hpp).
inline constexpr std::string_view listen_wake = R"sql(LISTEN "jobq:{schema}")sql";

// The notice listener's connection (notice_listener.hpp): LISTEN, forget the rows of sessions
// that are gone, register (statements send notices while a row exists), unregister at the end.
inline constexpr std::string_view listen_events = R"sql(LISTEN "jobq:{schema}:events")sql";
// watch_cancels' connection: LISTEN only (cancels of active jobs are always sent).
inline constexpr std::string_view listen_cancels = R"sql(LISTEN "jobq:{schema}:cancels")sql";
inline constexpr std::string_view forget_gone_listeners = R"sql(
DELETE FROM "{schema}".event_listeners e
 WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = e.pid)
)sql";
inline constexpr std::string_view register_listener = R"sql(
INSERT INTO "{schema}".event_listeners (pid) VALUES (pg_backend_pid()) ON CONFLICT DO NOTHING
)sql";
inline constexpr std::string_view unregister_listener = R"sql(
DELETE FROM "{schema}".event_listeners WHERE pid = pg_backend_pid()
)sql";

}  // namespace sql

/// The prepared statements, by the position of their text in StatementTable.
enum class Statement : std::size_t {
  enqueue_one,
  enqueue_keyed,
  enqueue_batch,
  reserve_ids,
  insert_flow,
  claim,
  complete_many,
  done_check,
  fail,
  extend,
  release,
  release_tokens,
  progress,
  recover,
  expire,
  get,
  get_many,
  run_now,
  remove_job,
  find_unique,
  flow_members,
  cancel,
  cancel_flow,
  redrive,
  revive,
  pause,
  resume,
  is_paused,
  counts,
  queues,
  prune,
  prune_flows,
  prune_beyond,
  list,
  ready,
  set_limits,
  clear_limits,
  get_limits,
  put_schedule,
  remove_schedule,
  list_schedules,
  fire_schedule,
  register_worker,
  unregister_worker,
  list_workers,
  count_,
};

/// Statement text with every {schema} replaced by the schema name.
inline std::string with_schema(std::string_view text, std::string_view schema) {
  constexpr std::string_view placeholder = "{schema}";
  std::string out;
  out.reserve(text.size() + 8 * schema.size());
  for (std::size_t pos = 0;;) {
    const auto at = text.find(placeholder, pos);
    out.append(text.substr(pos, at - pos));
    if (at == std::string_view::npos) return out;
    out.append(schema);
    pos = at + placeholder.size();
  }
}

/// The statements of one schema, filled in once when the backend is made.
struct StatementTable {
  struct Prepared {
    std::string name;  // jobq_<name>: the prepared statement, and what error messages name
    std::string text;
  };

  explicit StatementTable(std::string_view schema) {
    using S = Statement;
    auto def = [&](S id, std::string_view name, std::string_view text) {
      prepared[static_cast<std::size_t>(id)] = {"jobq_" + std::string(name), with_schema(text, schema)};
    };
    def(S::enqueue_one, "enqueue_one", sql::enqueue_one);
    def(S::enqueue_keyed, "enqueue_keyed", sql::enqueue_keyed);
    def(S::enqueue_batch, "enqueue_batch", sql::enqueue_batch);
    def(S::reserve_ids, "reserve_ids", sql::reserve_ids);
    def(S::insert_flow, "insert_flow", sql::insert_flow);
    def(S::claim, "claim", sql::claim);
    def(S::complete_many, "complete_many", sql::complete_many);
    def(S::done_check, "done_check", sql::done_check);
    def(S::fail, "fail", sql::fail);
    def(S::extend, "extend", sql::extend);
    def(S::release, "release", sql::release);
    def(S::release_tokens, "release_tokens", sql::release_tokens);
    def(S::progress, "progress", sql::progress);
    def(S::recover, "recover", sql::recover);
    def(S::expire, "expire", sql::expire);
    def(S::get, "get", sql::get);
    def(S::get_many, "get_many", sql::get_many);
    def(S::run_now, "run_now", sql::run_now);
    def(S::remove_job, "remove_job", sql::remove_job);
    def(S::find_unique, "find_unique", sql::find_unique);
    def(S::flow_members, "flow_members", sql::flow_members);
    def(S::cancel, "cancel", sql::cancel);
    def(S::cancel_flow, "cancel_flow", sql::cancel_flow);
    def(S::redrive, "redrive", sql::redrive);
    def(S::revive, "revive", sql::revive);
    def(S::pause, "pause", sql::pause);
    def(S::resume, "resume", sql::resume);
    def(S::is_paused, "is_paused", sql::is_paused);
    def(S::counts, "counts", sql::counts);
    def(S::queues, "queues", sql::queues);
    def(S::prune, "prune", sql::prune);
    def(S::prune_flows, "prune_flows", sql::prune_flows);
    def(S::prune_beyond, "prune_beyond", sql::prune_beyond);
    def(S::list, "list", sql::list);
    def(S::ready, "ready", sql::ready);
    def(S::set_limits, "set_limits", sql::set_limits);
    def(S::clear_limits, "clear_limits", sql::clear_limits);
    def(S::get_limits, "get_limits", sql::get_limits);
    def(S::put_schedule, "put_schedule", sql::put_schedule);
    def(S::remove_schedule, "remove_schedule", sql::remove_schedule);
    def(S::list_schedules, "list_schedules", sql::list_schedules);
    def(S::fire_schedule, "fire_schedule", sql::fire_schedule);
    def(S::register_worker, "register_worker", sql::register_worker);
    def(S::unregister_worker, "unregister_worker", sql::unregister_worker);
    def(S::list_workers, "list_workers", sql::list_workers);
    schema_version = with_schema(sql::schema_version, schema);
    create_schema = with_schema(sql::create_schema, schema);
    create_migrations_table = with_schema(sql::create_migrations_table, schema);
    record_migration = with_schema(sql::record_migration, schema);
    listen_wake = with_schema(sql::listen_wake, schema);
    listen_events = with_schema(sql::listen_events, schema);
    listen_cancels = with_schema(sql::listen_cancels, schema);
    forget_gone_listeners = with_schema(sql::forget_gone_listeners, schema);
    register_listener = with_schema(sql::register_listener, schema);
    unregister_listener = with_schema(sql::unregister_listener, schema);
  }

  [[nodiscard]] const Prepared& operator[](Statement s) const { return prepared[static_cast<std::size_t>(s)]; }

  std::array<Prepared, static_cast<std::size_t>(Statement::count_)> prepared;
  std::string schema_version;
  std::string create_schema;
  std::string create_migrations_table;
  std::string record_migration;
  std::string listen_wake;
  std::string listen_events;
  std::string listen_cancels;
  std::string forget_gone_listeners;
  std::string register_listener;
  std::string unregister_listener;
};

}  // namespace jobq::detail::pg
