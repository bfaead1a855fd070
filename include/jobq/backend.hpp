#pragma once

#include <chrono>
#include <concepts>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "jobq/error.hpp"
#include "jobq/events.hpp"
#include "jobq/flow.hpp"
#include "jobq/job.hpp"
#include "jobq/time.hpp"
#include "jobq/worker_info.hpp"

namespace jobq {

/// @brief Most ids one cancel_many / redrive_many call takes (a bounded transaction or script).
inline constexpr std::size_t max_bulk_ids = 1000;

/// @brief Throws InvalidArgument when `n` ids are more than one bulk call takes.
inline void check_bulk_size(std::size_t n, const char* op) {
  if (n > max_bulk_ids) {
    throw InvalidArgument(std::string(op) + ": " + std::to_string(n) + " ids, more than " +
                          std::to_string(max_bulk_ids) + " per call; send them in chunks");
  }
}

/// @brief find_unique's check of its key: empty, too long or not UTF-8 is InvalidArgument (no
/// job can hold such a key).
inline void check_unique_key(const std::string& unique_key) {
  if (unique_key.empty()) throw InvalidArgument("find_unique: the unique key is empty");
  validate_text_key(unique_key, "unique key", max_unique_key_length);
}

/// @brief The storage contract every backend satisfies. Each operation is one atomic state
/// change in the backend, and every backend is safe to share between threads.
///
/// Semantics (checked by tests/conformance for every backend):
/// - `now()`: the backend's clock (injected; system clock by default). All times below use it.
/// - `enqueue(job)`: validate(job) first, check_deadline(job, now()), and
///   check_payload_size(serialized payload, Options::max_payload_bytes) (InvalidArgument,
///   nothing written). The key holder is the
///   latest job of the same queue with job.unique_key (when non-empty):
///   - debounce > 0: if the holder is queued, replace its payload and set its run_at =
///     now + debounce, return {holder, created=false}; otherwise (none, active or finished)
///     store a new job with run_at = now + debounce.
///   - otherwise, if the holder is queued or active, or completed with finished_at +
///     unique_for > now, or (throttle > 0) was created after now - throttle in any state:
///     return {holder, created=false}, nothing changed.
///   - otherwise store it as queued with run_at = job.run_at or now, attempts 0, its group.
/// - `enqueue_many(jobs)`: the same for each, all-or-nothing (one transaction / pipeline).
/// - `claim(req)`: atomically take up to req.limit queued jobs with run_at <= now, and no
///   deadline passed (expires_at unset or >= now), from the non-paused queues in req.queues, ordered by priority desc, run_at asc, id asc; for each:
///   state active, attempts + 1, a fresh lease token, lease_until = now + req.lease.
///   Queue limits (set_queue_limits) hold across all processes: a job whose group already has
///   group_concurrency active jobs in its queue is skipped (jobs after it still qualify), and
///   a queue with a rate limit hands out at most rate.max jobs in any window of rate.window
///   (counting claims, released ones included), and a queue with a concurrency limit never has
///   more than concurrency active jobs (a claim takes at most concurrency - active of it, even
///   with many claimers at once). A job held back by a limit stays queued untouched (no
///   attempt used); when an active job of a limited queue finishes, wait_for_work wakes.
///   A queued job past its deadline is never returned: the claim may expire it (as
///   recover_expired does) or step over it and leave it to recover_expired. The deadline is
///   checked only while a job is queued: an active job keeps running, and a job queued again
///   (retry, release, snooze, redrive) is checked against the same deadline.
/// - `complete(id, token, result)`: if active with that token: completed, finished_at = now,
///   result stored, lease cleared, unique key released (or held until now + unique_for).
///   Otherwise change nothing and return false.
/// - `complete_many(completions)`: the same for each, in one round trip; one bool per item.
/// - `fail(f)`: if active with that token: the error appended (attempt = attempts); if
///   f.retry_at and attempts < max_attempts: queued with run_at = *f.retry_at, else dead with
///   finished_at = now. Stale token: FailOutcome::rejected, nothing changed.
/// - `extend_lease(id, token, lease)`: heartbeat; lease_until = now + lease if still held.
/// - `snooze(id, token, run_at)`: if active with that token: queued at the given run_at,
///   attempts - 1 (the attempt does not count), lease cleared, errors untouched; wait_for_work
///   wakes. Stale token: false, nothing changed.
/// - `release(id, token)`: snooze(id, token, now): give a leased job back untouched (graceful
///   shutdown).
/// - `set_progress(id, token, percent 0..100, message)`: progress of an active job.
/// - `recover_expired()`: every active job with lease_until <= now: an error "lease expired"
///   appended; queued at run_at = now if attempts < max_attempts, else dead. Returns counts.
///   Then every queued job with expires_at < now expires: cancelled (finished_at = now), the
///   error {attempts, expired_error(expires_at)} appended, unique key released, a cancelled
///   notice, its flow's dependents as for cancel (not counted in the result).
/// - `get(id)`: the job, or nullopt.
/// - `cancel(id)`: a queued, waiting or active job becomes cancelled (finished_at = now, lease
///   and lease token cleared, unique key released, a cancelled notice); any other state: false.
///   The worker holding an active one finds out at its next heartbeat (extend_lease: false);
///   its complete, fail and set_progress are refused, and recover_expired never sees it.
/// - `redrive(id)`: a dead job becomes queued, run_at = now, attempts 0, errors kept; else false.
/// - `cancel_many(ids)` / `redrive_many(ids)`: cancel / redrive of each id in input order, as
///   if called one after another (a repeated id: false after its first time; unknown: false),
///   in one transaction / round trip; one bool per id. At most max_bulk_ids (1000) ids per
///   call, else InvalidArgument with nothing changed. On Redis the ids of one queue go in one
///   script; a flow dependent in another queue is settled after that script (as for cancel).
/// - `pause(queue)` / `resume(queue)` / `is_paused(queue)`: paused queues are not claimed from.
/// - `counts(queue)`: exact jobs per state, and `delayed`: of the queued ones, those with
///   run_at > now.
/// - `prune(queue, retention)`: delete finished jobs of the queue whose finished_at is older
///   than now - the retention of their state; returns how many. Never touches queued/active.
/// - `list(queue, state, page)`: jobs of that state, in a stable order (by id) so that pages
///   together list each job once.
/// - `set_queue_limits(queue, limits)` / `queue_limits(queue)`: validate(limits); stored per
///   queue (default: none), read by every claim.
/// - `put_schedule(s)`: insert or replace the schedule named s.name (validate_schedule_name).
///   `remove_schedule(name)`: false if absent. `schedules()`: all, by name.
/// - `fire_schedule(name, expected, next, job)`: atomically, if the schedule exists and its
///   next_run == expected: set next_run = next and, if job is set, enqueue it exactly as
///   enqueue(job) does; return true. Else change nothing and return false. This compare-and-set
///   is what makes each tick enqueue once with any number of schedulers.
/// - Worker registry (jobq/worker_info.hpp): what live Workers say about themselves.
///   `register_worker(w)`: validate_worker_id(w.id) first (InvalidArgument, nothing written);
///   then in one atomic step store w exactly as given (insert, or replace the entry of the same
///   id; the caller sets heartbeat_at and expires_at from now()) and delete every other entry
///   whose expires_at < now. `unregister_worker(id)`: delete the entry; false when absent (an
///   invalid id is never stored: false). `workers()`: every entry with expires_at >= now, by id;
///   an expired entry is never returned, pruned or not.
/// - `subscribe(queues, fn)`: fn gets a JobNotice for every complete (completed), fail
///   (failed when retried, else dead), recover_expired (failed/dead, "lease expired"),
///   set_progress (progress) and cancel (cancelled) of those queues (all when empty), in any
///   process sharing the store, from when subscribe returns until the Subscription ends.
///   Delivery is best effort (a dropped connection may lose notices): callers that must know
///   poll get() as well (Queue::wait_for does).
/// - `watch_cancels(queues, fn)`: fn gets a cancelled JobNotice for every cancel (cancel,
///   cancel_many) of an active job of those queues (all when empty), from when it returns
///   until the Subscription ends; other notices of the same call may come too (check kind).
///   Unlike subscribe it costs the other operations nothing: Workers keep one open to stop a
///   cancelled handler at once instead of at their next heartbeat. From every process sharing
///   the store, except where the backend says otherwise (SQLite: this process only). Best
///   effort like subscribe: a receiver confirms with extend_lease before acting.
/// - `get_many(ids)`: get() of each id, in one round trip; nullopt for a missing one.
/// - `run_now(id)`: a queued job whose run_at is still in the future (delayed, or waiting out a
///   retry backoff) gets run_at = now, and wait_for_work wakes for its queue; attempts, errors
///   and everything else are kept. Any other state, a queued job already due, or an unknown
///   id: false, nothing changed. One atomic step.
/// - `remove(id)`: deletes a finished job (completed, dead or cancelled) and everything stored
///   for it, as prune deletes a job: get is nullopt, counts and list drop it, and a unique key
///   it held is free (the next enqueue with the key creates a job). A flow member is refused
///   (false, nothing changed): flows are deleted whole, by prune. Not finished, or unknown:
///   false. One atomic step.
/// - `find_unique(queue, unique_key)`: validate_queue_name and check_unique_key (empty key:
///   InvalidArgument). The job that holds the key in the queue, i.e. the one a plain enqueue
///   with the key (no throttle or debounce) would return instead of storing a new job: the
///   key's holder while queued or active, or completed with finished_at + unique_for > now.
///   Otherwise (no holder, or it finished and let the key go) nullopt. A read only.
/// - Flows (jobq/flow.hpp, docs/workflows.md). A job's flow_id, depends_on and
///   continue_on_failure are set when its flow is stored and never change; claim, get, list and
///   flow return them. "Resolved" dependency: completed, or dead/cancelled when the dependent
///   continues on failure.
///   - `enqueue_flow(flow)`: validate(flow) and check_payload_size of every member first
///     (InvalidArgument, nothing written); then, in one atomic step, store every member in
///     the given order (ids in that order, flow_id = the first member's id): a member without
///     dependencies exactly as enqueue would (queued, run_at = job.run_at or now), one with
///     dependencies as waiting (run_at = job.run_at or now: it is also not claimed before
///     then). Returns the ids.
///   - When a job completes (complete, complete_many), in the same atomic step: each waiting
///     dependent whose dependencies are now all resolved becomes queued, run_at = max(run_at,
///     now), and wait_for_work wakes for its queue. This holds however many workers complete
///     dependencies at once: a dependent is released exactly once.
///   - When a job becomes dead (fail, recover_expired, or this rule) or cancelled (cancel,
///     cancel_flow), in the same atomic step: each waiting dependent that continues on failure
///     is released when its dependencies are all resolved; each other waiting dependent
///     becomes dead (cancelled if the dependency was cancelled), finished_at = now, with an
///     error {attempt 0, dead_dependency_error(id, its last error) or
///     cancelled_dependency_error(id)}, and the rule applies to its dependents in turn. A dead
///     notice is published for each dependent that died. When a member dies by its own
///     failure (fail or recover_expired, not this rule) and its flow has an on_failure job not
///     yet enqueued, that job is enqueued in the same step as a flow member: queued,
///     depends_on = {the dead member}, continue_on_failure = true; at most once per flow.
///   - `redrive(id)` of a flow member: false when one of its dependencies is not completed and
///     it does not continue on failure (re-drive that dependency instead). Otherwise queued as
///     usual, and in the same step each dependent that died because of it (dead, attempts 0)
///     returns to waiting (finished_at cleared, errors kept), unless another of its
///     dependencies is dead or cancelled and it does not continue on failure; and so on down
///     the flow.
///   - `cancel(id)` also cancels a waiting job, and an active member (its dependents as for a
///     queued one).
///   - `cancel_flow(id)`: cancels every queued or waiting member of the flow of job `id` (a
///     member that is active finishes its attempt; what depends on it is already cancelled).
///     Returns how many; 0 when the job is in no flow or absent.
///   - `flow(id)`: the flow job `id` belongs to, every member by id; nullopt when the job does
///     not exist or is in no flow.
///   - `counts` and `list` know waiting. `prune` never deletes a flow member unless every
///     member of its flow is finished and each is older than the retention of its state; then
///     the whole flow goes, whichever of its queues is pruned (Retention::max_jobs counts jobs
///     outside flows only).
/// - `wait_for_work(queues, timeout, stop)`: block until work may be ready in one of the
///   queues (an enqueue, a retry, a release, a resume, or a delayed job coming due), the
///   timeout passes, or stop is requested. Spurious wake-ups are allowed; it is a hint only.
///
/// An operation added here is also added to the forwarding layer (jobq/forwarding_backend.hpp),
/// which AnyBackend and the test wrappers share.
//
// One concept rather than one per role (job store, work signal, queue admin, schedules): its
// users need nearly all of it. Queue uses every operation but the worker's lease calls; Worker
// the lease calls, counts, prune and the schedules; both go through the schedule helpers
// (schedule.hpp), which take a whole Backend. Only Metrics (now, counts, is_paused, list) and the
// HTTP server would ask for less, and no partial backend or test double needs that yet.
template <class B>
concept Backend = requires(B& b, const B& cb, const NewJob& job, std::span<const NewJob> jobs,
                           const ClaimRequest& req, JobId id, const std::string& token,
                           const nlohmann::json& result, std::span<const Completion> completions,
                           const Failure& failure, Millis lease, const std::string& queue,
                           JobState state, const Retention& retention, Page page,
                           std::span<const std::string> queues, std::stop_token stop,
                           const QueueLimits& limits, const StoredSchedule& schedule,
                           TimePoint at, const std::optional<NewJob>& maybe_job, NoticeFn fn,
                           const NewFlow& flow, std::span<const JobId> ids, const WorkerInfo& worker) {
  { cb.now() } -> std::same_as<TimePoint>;
  { b.enqueue(job) } -> std::same_as<EnqueueResult>;
  { b.enqueue_many(jobs) } -> std::same_as<std::vector<EnqueueResult>>;
  { b.claim(req) } -> std::same_as<std::vector<JobRecord>>;
  { b.complete(id, token, result) } -> std::same_as<bool>;
  { b.complete_many(completions) } -> std::same_as<std::vector<bool>>;
  { b.fail(failure) } -> std::same_as<FailOutcome>;
  { b.extend_lease(id, token, lease) } -> std::same_as<bool>;
  { b.release(id, token) } -> std::same_as<bool>;
  { b.snooze(id, token, at) } -> std::same_as<bool>;
  { b.set_progress(id, token, 50, token) } -> std::same_as<bool>;
  { b.recover_expired() } -> std::same_as<Recovered>;
  { b.get(id) } -> std::same_as<std::optional<JobRecord>>;
  { b.cancel(id) } -> std::same_as<bool>;
  { b.redrive(id) } -> std::same_as<bool>;
  { b.cancel_many(ids) } -> std::same_as<std::vector<bool>>;
  { b.redrive_many(ids) } -> std::same_as<std::vector<bool>>;
  { b.pause(queue) } -> std::same_as<void>;
  { b.resume(queue) } -> std::same_as<void>;
  { b.is_paused(queue) } -> std::same_as<bool>;
  { b.counts(queue) } -> std::same_as<Counts>;
  { b.prune(queue, retention) } -> std::same_as<std::size_t>;
  { b.list(queue, state, page) } -> std::same_as<std::vector<JobRecord>>;
  { b.wait_for_work(queues, lease, stop) } -> std::same_as<void>;
  { b.set_queue_limits(queue, limits) } -> std::same_as<void>;
  { b.queue_limits(queue) } -> std::same_as<QueueLimits>;
  { b.put_schedule(schedule) } -> std::same_as<void>;
  { b.remove_schedule(queue) } -> std::same_as<bool>;
  { b.schedules() } -> std::same_as<std::vector<StoredSchedule>>;
  { b.fire_schedule(queue, at, at, maybe_job) } -> std::same_as<bool>;
  { b.register_worker(worker) } -> std::same_as<void>;
  { b.unregister_worker(token) } -> std::same_as<bool>;
  { b.workers() } -> std::same_as<std::vector<WorkerInfo>>;
  { b.subscribe(queues, fn) } -> std::same_as<Subscription>;
  { b.watch_cancels(queues, fn) } -> std::same_as<Subscription>;
  { b.get_many(ids) } -> std::same_as<std::vector<std::optional<JobRecord>>>;
  { b.run_now(id) } -> std::same_as<bool>;
  { b.remove(id) } -> std::same_as<bool>;
  { b.find_unique(queue, token) } -> std::same_as<std::optional<JobId>>;
  { b.enqueue_flow(flow) } -> std::same_as<std::vector<JobId>>;
  { b.cancel_flow(id) } -> std::same_as<std::size_t>;
  { b.flow(id) } -> std::same_as<std::optional<FlowRecord>>;
};

}  // namespace jobq
