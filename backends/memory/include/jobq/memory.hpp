#pragma once

#include <algorithm>
#include <array>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <stop_token>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "jobq/backend.hpp"
#include "jobq/worker_info.hpp"

namespace jobq {

/// @brief Options of the in-memory backend.
struct MemoryOptions {
  ClockFn clock = system_clock();  ///< where time comes from (tests pass a ManualClock)
  std::size_t max_payload_bytes = default_max_payload_bytes;  ///< larger payloads are refused
};

/// @brief Thread-safe in-process backend: the reference implementation of the Backend
/// semantics, and the store unit tests use. Nothing survives the process.
///
/// One mutex guards everything; every operation is short (no I/O), so a finer scheme would buy
/// little. Waiters sleep on a condition variable that enqueue/retry/release/resume notify.
class MemoryBackend {
 public:
  /// @brief An empty store.
  explicit MemoryBackend(MemoryOptions options = {})
      : clock_(std::move(options.clock)), max_payload_bytes_(options.max_payload_bytes) {}

  MemoryBackend(const MemoryBackend&) = delete;
  MemoryBackend& operator=(const MemoryBackend&) = delete;

  /// @brief The backend's clock.
  [[nodiscard]] TimePoint now() const { return clock_(); }

  /// @brief Stores a job (or returns the holder of its unique key).
  EnqueueResult enqueue(const NewJob& job) {
    check(job);
    std::unique_lock lock(mutex_);
    auto r = insert_locked(job, now());
    notify_locked();
    return r;
  }

  /// @brief Stores many jobs, all or nothing.
  std::vector<EnqueueResult> enqueue_many(std::span<const NewJob> jobs) {
    for (const auto& j : jobs) check(j);  // before any write: all or nothing
    std::unique_lock lock(mutex_);
    const auto t = now();
    std::vector<EnqueueResult> out;
    out.reserve(jobs.size());
    for (const auto& j : jobs) out.push_back(insert_locked(j, t));
    notify_locked();
    return out;
  }

  /// @brief Leases up to req.limit ready jobs, best first across the queues.
  std::vector<JobRecord> claim(const ClaimRequest& req) {
    const auto queues = claim_queues(req);
    std::unique_lock lock(mutex_);
    const auto t = now();
    // Per queue: the next claimable entry of its ready set (skipping groups at their limit)
    // and how many starts its rate limit still allows.
    struct Cursor {
      QueueState* q;
      std::set<ReadyKey>::iterator next;
      std::int64_t allowed;
    };
    std::vector<Cursor> cs;
    for (const auto& name : queues) {
      auto& q = queues_[name];
      if (q.paused || std::any_of(cs.begin(), cs.end(), [&](const Cursor& c) { return c.q == &q; })) continue;
      promote_due_locked(q, t);
      if (q.ready.empty()) continue;
      std::int64_t allowed = static_cast<std::int64_t>(req.limit);
      if (q.limits.rate) {
        drop_old_starts_locked(q, t);
        allowed = std::min(allowed, q.limits.rate->max - static_cast<std::int64_t>(q.starts.size()));
      }
      if (q.limits.concurrency > 0) {
        allowed = std::min(allowed, static_cast<std::int64_t>(q.limits.concurrency) -
                                        static_cast<std::int64_t>(q.counts.active));
      }
      if (allowed <= 0) continue;
      Cursor c{&q, q.ready.begin(), allowed};
      skip_blocked_locked(c.q, c.next);
      cs.push_back(c);
    }
    std::vector<JobRecord> out;
    std::vector<JobNotice> notices;  // of jobs met past their deadline
    std::size_t ready = 0;
    for (const auto& c : cs) ready += c.q->ready.size();
    out.reserve(std::min(req.limit, ready));
    while (out.size() < req.limit) {
      Cursor* best = nullptr;
      for (auto& c : cs) {
        if (c.allowed > 0 && c.next != c.q->ready.end() && (best == nullptr || *c.next < *best->next)) best = &c;
      }
      if (best == nullptr) break;
      auto& q = *best->q;
      const JobId id = std::get<2>(*best->next);
      best->next = q.ready.erase(best->next);
      auto& job = jobs_.at(id);
      if (expired(job, t)) {  // met here before the maintenance pass: it ends, never runs
        expire_locked(job, t, notices);
        skip_blocked_locked(&q, best->next);
        continue;
      }
      if (job.expires_at) deadlines_.erase({to_epoch_ms(*job.expires_at), id});
      move_counts(q, job.state, JobState::active);
      job.state = JobState::active;
      job.attempts += 1;
      job.lease_token = detail::new_lease_token();
      job.lease_until = t + req.lease;
      active_.insert(id);
      if (!job.group.empty()) ++q.active_by_group[job.group];
      if (q.limits.rate) q.starts.push_back(t);
      --best->allowed;
      skip_blocked_locked(&q, best->next);
      out.push_back(job);
    }
    lock.unlock();
    hub_.publish(notices);
    return out;
  }

  /// @brief Records a success if the lease token is current.
  bool complete(JobId id, const std::string& token, const nlohmann::json& result) {
    check_json(result, "result");
    std::vector<JobNotice> notices;
    bool ok = false;
    {
      std::unique_lock lock(mutex_);
      ok = complete_locked(id, token, result, now(), notices);
    }
    hub_.publish(notices);
    return ok;
  }

  /// @brief Records many successes; one bool per completion.
  std::vector<bool> complete_many(std::span<const Completion> completions) {
    for (const auto& c : completions) check_json(c.result, "result");  // all or nothing
    std::vector<JobNotice> notices;
    std::vector<bool> out;
    out.reserve(completions.size());
    {
      std::unique_lock lock(mutex_);
      const auto t = now();
      for (const auto& c : completions) out.push_back(complete_locked(c.id, c.lease_token, c.result, t, notices));
    }
    hub_.publish(notices);
    return out;
  }

  /// @brief Records a failed attempt: retry at f.retry_at, or dead.
  FailOutcome fail(const Failure& f) {
    std::vector<JobNotice> notices;
    FailOutcome outcome = FailOutcome::rejected;
    {
      std::unique_lock lock(mutex_);
      auto* job = leased_locked(f.id, f.lease_token);
      if (job == nullptr) return FailOutcome::rejected;
      const auto t = now();
      job->errors.push_back({job->attempts, f.error, t});
      const bool retry = f.retry_at.has_value() && job->attempts < job->max_attempts;
      notices.push_back({retry ? JobNotice::Kind::failed : JobNotice::Kind::dead, job->id, job->queue, job->attempts, 0, f.error});
      if (retry) {
        requeue_locked(*job, *f.retry_at);
        notify_locked();
        outcome = FailOutcome::retried;
      } else {
        finish_locked(*job, JobState::dead, t);
        died_locked(*job, t, notices);
        outcome = FailOutcome::dead;
      }
    }
    hub_.publish(notices);
    return outcome;
  }

  /// @brief Heartbeat: pushes the lease deadline to now + lease.
  bool extend_lease(JobId id, const std::string& token, Millis lease) {
    check_duration(lease, "lease");
    std::unique_lock lock(mutex_);
    auto* job = leased_locked(id, token);
    if (job == nullptr) return false;
    job->lease_until = now() + lease;
    return true;
  }

  /// @brief Gives a leased job back without counting the attempt.
  bool release(JobId id, const std::string& token) { return snooze(id, token, now()); }

  /// @brief Gives a leased job back to run at run_at, without counting the attempt.
  bool snooze(JobId id, const std::string& token, TimePoint run_at) {
    std::unique_lock lock(mutex_);
    auto* job = leased_locked(id, token);
    if (job == nullptr) return false;
    job->attempts -= 1;
    requeue_locked(*job, run_at);
    notify_locked();  // also when delayed: a sleeping waiter's deadline may now be too late
    return true;
  }

  /// @brief Records progress of an active job.
  bool set_progress(JobId id, const std::string& token, int percent, const std::string& message) {
    JobNotice notice;
    {
      std::unique_lock lock(mutex_);
      auto* job = leased_locked(id, token);
      if (job == nullptr) return false;
      job->progress = std::clamp(percent, 0, 100);
      job->progress_message = message;
      notice = {JobNotice::Kind::progress, id, job->queue, job->attempts, job->progress, message};
    }
    hub_.publish(notice);
    return true;
  }

  /// @brief Requeues (or kills, on the last attempt) every job whose lease has expired.
  Recovered recover_expired() {
    std::vector<JobNotice> notices;
    Recovered r;
    {
      std::unique_lock lock(mutex_);
      r = recover_expired_locked(notices);
    }
    hub_.publish(notices);
    return r;
  }

  /// @brief The job, if it exists.
  std::optional<JobRecord> get(JobId id) {
    std::unique_lock lock(mutex_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return std::nullopt;
    return it->second;
  }

  /// @brief get() of each id.
  std::vector<std::optional<JobRecord>> get_many(std::span<const JobId> ids) {
    std::unique_lock lock(mutex_);
    std::vector<std::optional<JobRecord>> out;
    out.reserve(ids.size());
    for (JobId id : ids) {
      auto it = jobs_.find(id);
      out.push_back(it == jobs_.end() ? std::nullopt : std::optional<JobRecord>(it->second));
    }
    return out;
  }

  /// @brief Makes a queued job that is not yet due due now (and wakes waiters); else false.
  bool run_now(JobId id) {
    std::unique_lock lock(mutex_);
    const auto t = now();
    auto it = jobs_.find(id);
    if (it == jobs_.end() || it->second.state != JobState::queued || it->second.run_at <= t) return false;
    auto& job = it->second;
    unlink_queued_locked(job);
    job.run_at = t;
    link_queued_locked(queues_.at(job.queue), job, t);
    notify_locked();
    return true;
  }

  /// @brief Deletes a finished job outside flows, as prune does; else false.
  bool remove(JobId id) {
    std::unique_lock lock(mutex_);
    auto it = jobs_.find(id);
    if (it == jobs_.end() || !is_finished(it->second.state) || it->second.flow_id != 0) return false;
    erase_finished_locked(it);
    return true;
  }

  /// @brief The job holding a unique key of a queue, if one does.
  std::optional<JobId> find_unique(const std::string& queue, const std::string& unique_key) {
    validate_queue_name(queue);
    check_unique_key(unique_key);
    std::unique_lock lock(mutex_);
    auto qit = queues_.find(queue);
    if (qit == queues_.end()) return std::nullopt;
    auto it = qit->second.unique.find(unique_key);
    auto jt = it == qit->second.unique.end() ? jobs_.end() : jobs_.find(it->second);
    if (jt == jobs_.end() || !unique_held_locked(jt->second, now())) return std::nullopt;
    return jt->first;
  }

  /// @brief Cancels a queued, waiting or active job (and, per their policy, what waits for it).
  bool cancel(JobId id) { return cancel_many(std::span<const JobId>(&id, 1)).front(); }

  /// @brief cancel() of each id in order, under one lock; one bool per id.
  std::vector<bool> cancel_many(std::span<const JobId> ids) {
    check_bulk_size(ids.size(), "cancel_many");
    std::vector<JobNotice> notices;
    std::vector<bool> out;
    out.reserve(ids.size());
    {
      std::unique_lock lock(mutex_);
      const auto t = now();
      for (JobId id : ids) out.push_back(cancel_one_locked(id, t, notices));
    }
    hub_.publish(notices);
    cancels_.publish(notices);
    return out;
  }

  /// @brief Stores a flow's members and dependencies, all or nothing.
  std::vector<JobId> enqueue_flow(const NewFlow& flow) {
    validate(flow);
    for (const auto& m : flow.members) check(m.job);
    std::unique_lock lock(mutex_);
    const auto t = now();
    const JobId first = next_id_;
    next_id_ += static_cast<JobId>(flow.members.size());
    std::vector<JobId> ids;
    ids.reserve(flow.members.size());
    for (std::size_t i = 0; i < flow.members.size(); ++i) ids.push_back(first + static_cast<JobId>(i));
    auto& f = flows_[first];
    f.on_failure = flow.on_failure;
    f.members = ids;
    for (std::size_t i = 0; i < flow.members.size(); ++i) {
      const auto& m = flow.members[i];
      std::vector<JobId> deps;
      deps.reserve(m.after.size());
      for (auto d : m.after) deps.push_back(ids[d]);
      add_member_locked(m.job, ids[i], first, std::move(deps), m.continue_on_failure, t);
    }
    notify_locked();
    return ids;
  }

  /// @brief Cancels every member of job id's flow that has not started.
  std::size_t cancel_flow(JobId id) {
    std::vector<JobNotice> notices;
    std::size_t n = 0;
    {
      std::unique_lock lock(mutex_);
      auto* f = flow_of_locked(id);
      if (f == nullptr) return 0;
      f->fired = true;  // a cancelled flow calls no error callback
      const auto t = now();
      // Every member that has not started goes at once, so none is released in between.
      for (JobId m : f->members) {
        auto& job = jobs_.at(m);
        if (!cancellable(job.state)) continue;
        cancel_locked(job, t, notices);
        ++n;
      }
    }
    hub_.publish(notices);
    return n;
  }

  /// @brief The flow of job id, every member by id.
  std::optional<FlowRecord> flow(JobId id) {
    std::unique_lock lock(mutex_);
    auto* f = flow_of_locked(id);
    if (f == nullptr) return std::nullopt;
    FlowRecord r{jobs_.at(id).flow_id, {}};
    r.members.reserve(f->members.size());
    for (JobId m : f->members) r.members.push_back(jobs_.at(m));
    std::sort(r.members.begin(), r.members.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    return r;
  }

 private:
  Recovered recover_expired_locked(std::vector<JobNotice>& notices) {
    static const std::string lease_expired = "lease expired (worker lost or too slow)";
    const auto t = now();
    std::vector<JobId> expired;
    for (JobId id : active_) {
      const auto& job = jobs_.at(id);
      if (job.lease_until && *job.lease_until <= t) expired.push_back(id);
    }
    Recovered r;
    for (JobId id : expired) {
      auto& job = jobs_.at(id);
      job.errors.push_back({job.attempts, lease_expired, t});
      const bool retry = job.attempts < job.max_attempts;
      notices.push_back({retry ? JobNotice::Kind::failed : JobNotice::Kind::dead, id, job.queue, job.attempts, 0, lease_expired});
      if (retry) {
        requeue_locked(job, t);
        ++r.retried;
      } else {
        finish_locked(job, JobState::dead, t);
        died_locked(job, t, notices);
        ++r.dead;
      }
    }
    if (r.retried > 0) notify_locked();
    expire_due_locked(t, notices);
    return r;
  }

  // Every queued job past its deadline ends cancelled (deadlines_: queued jobs only).
  void expire_due_locked(TimePoint t, std::vector<JobNotice>& notices) {
    std::vector<JobId> due;
    for (auto it = deadlines_.begin(); it != deadlines_.end() && it->first < to_epoch_ms(t); ++it) due.push_back(it->second);
    for (JobId id : due) expire_locked(jobs_.at(id), t, notices);
  }

  // A queued job not started by its deadline: cancelled with the reason, as cancel() does.
  void expire_locked(JobRecord& job, TimePoint t, std::vector<JobNotice>& notices) {
    job.errors.push_back({job.attempts, expired_error(*job.expires_at), t});
    cancel_locked(job, t, notices);
    resolved_locked(job, t, notices);
  }

 public:

  /// @brief Puts a dead job back in its queue with a fresh attempt budget.
  bool redrive(JobId id) { return redrive_many(std::span<const JobId>(&id, 1)).front(); }

  /// @brief redrive() of each id in order, under one lock; one bool per id.
  std::vector<bool> redrive_many(std::span<const JobId> ids) {
    check_bulk_size(ids.size(), "redrive_many");
    std::vector<bool> out;
    out.reserve(ids.size());
    std::unique_lock lock(mutex_);
    const auto t = now();
    bool any = false;
    for (JobId id : ids) {
      out.push_back(redrive_one_locked(id, t));
      any = any || out.back();
    }
    if (any) notify_locked();
    return out;
  }

  /// @brief Stops claims from a queue.
  void pause(const std::string& queue) {
    validate_queue_name(queue);
    std::unique_lock lock(mutex_);
    queues_[queue].paused = true;
  }

  /// @brief Restores claims from a queue.
  void resume(const std::string& queue) {
    validate_queue_name(queue);
    std::unique_lock lock(mutex_);
    queues_[queue].paused = false;
    notify_locked();
  }

  /// @brief Whether a queue is paused.
  bool is_paused(const std::string& queue) {
    validate_queue_name(queue);
    std::unique_lock lock(mutex_);
    auto it = queues_.find(queue);
    return it != queues_.end() && it->second.paused;
  }

  /// @brief Every queue that holds jobs or is paused, sorted by name.
  std::vector<std::string> queues() {
    std::unique_lock lock(mutex_);
    std::vector<std::string> out;
    for (const auto& [name, q] : queues_) {
      const auto& c = q.counts;
      if (q.paused || c.queued + c.active + c.completed + c.dead + c.cancelled + c.waiting > 0) out.push_back(name);
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  /// @brief Jobs per state in a queue.
  Counts counts(const std::string& queue) {
    validate_queue_name(queue);
    std::unique_lock lock(mutex_);
    auto it = queues_.find(queue);
    if (it == queues_.end()) return Counts{};
    auto& q = it->second;
    promote_due_locked(q, now());  // then the delayed set holds exactly the jobs not yet due
    auto c = q.counts;
    c.delayed = static_cast<std::int64_t>(q.delayed.size());
    return c;
  }

  /// @brief Deletes finished jobs older than the retention of their state.
  std::size_t prune(const std::string& queue, const Retention& retention) {
    validate_queue_name(queue);
    std::unique_lock lock(mutex_);
    auto qit = queues_.find(queue);
    if (qit == queues_.end()) return 0;
    const auto t = now();
    std::size_t n = 0;
    const auto erase = [&](std::map<JobId, JobRecord>::iterator it) {
      ++n;
      return erase_finished_locked(it);
    };
    // Survivors by age, per finished state, collected only for a count cap.
    std::array<std::vector<std::map<JobId, JobRecord>::iterator>, 3> kept;
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      const auto& job = it->second;
      const auto keep = keep_for(retention, job.state);
      if (job.queue != queue || !job.finished_at || job.flow_id != 0) {
        ++it;
      } else if (keep && *job.finished_at + *keep < t) {
        it = erase(it);
      } else if (retention.max_jobs > 0) {
        kept.at(finished_index(job.state)).push_back(it++);
      } else {
        ++it;
      }
    }
    if (retention.max_jobs > 0) {
      for (auto& same_state : kept) {
        if (same_state.size() <= retention.max_jobs) continue;
        // The oldest go first: by finished_at, then by id.
        const auto excess = same_state.size() - retention.max_jobs;
        std::nth_element(same_state.begin(), same_state.begin() + static_cast<std::ptrdiff_t>(excess - 1),
                         same_state.end(), [](auto a, auto b) {
                           return std::pair(*a->second.finished_at, a->first) <
                                  std::pair(*b->second.finished_at, b->first);
                         });
        for (std::size_t i = 0; i < excess; ++i) erase(same_state[i]);
      }
    }
    return n + prune_flows_locked(queue, retention, t);
  }

  /// @brief A page of a queue's jobs in one state, by id.
  std::vector<JobRecord> list(const std::string& queue, JobState state, Page page) {
    validate_queue_name(queue);
    std::unique_lock lock(mutex_);
    std::vector<JobRecord> out;
    std::size_t skipped = 0;
    for (const auto& [id, job] : jobs_) {
      if (job.queue != queue || job.state != state) continue;
      if (skipped++ < page.offset) continue;
      if (out.size() >= page.limit) break;
      out.push_back(job);
    }
    return out;
  }

  /// @brief Sleeps until work may be ready in one of the queues, the timeout, or stop.
  void wait_for_work(std::span<const std::string> queues, Millis timeout, std::stop_token stop) {
    std::unique_lock lock(mutex_);
    const auto t = now();
    auto wait = timeout;
    for (const auto& name : queues) {
      auto it = queues_.find(name);
      if (it == queues_.end() || it->second.paused) continue;
      auto& q = it->second;
      if (q.limits.rate) {
        drop_old_starts_locked(q, t);
        if (static_cast<std::int64_t>(q.starts.size()) >= q.limits.rate->max) {
          // Nothing can start before the oldest start leaves the window.
          wait = std::min(wait, std::chrono::duration_cast<Millis>(q.starts.front() + q.limits.rate->window - t));
          continue;
        }
      }
      if (q.limits.concurrency > 0 && static_cast<std::int64_t>(q.counts.active) >= q.limits.concurrency) {
        continue;  // a job leaving active wakes us
      }
      if (!q.ready.empty()) {
        auto first = q.ready.begin();
        skip_blocked_locked(&q, first);
        if (first != q.ready.end()) return;  // else a job leaving active wakes us
      }
      if (!q.delayed.empty()) {
        const auto due = from_epoch_ms(q.delayed.begin()->first) - t;
        if (due <= Millis{0}) return;
        wait = std::min(wait, std::chrono::duration_cast<Millis>(due));
      }
    }
    const auto generation = generation_;
    ++waiters_;
    cv_.wait_for(lock, stop, wait, [&] { return generation_ != generation; });
    --waiters_;
  }

  /// @brief Sets the limits claims honour for a queue.
  void set_queue_limits(const std::string& queue, const QueueLimits& limits) {
    validate_queue_name(queue);
    validate(limits);
    std::unique_lock lock(mutex_);
    queues_[queue].limits = limits;
    notify_locked();  // a raised limit may free work
  }

  /// @brief The limits of a queue (none by default).
  QueueLimits queue_limits(const std::string& queue) {
    validate_queue_name(queue);
    std::unique_lock lock(mutex_);
    auto it = queues_.find(queue);
    return it == queues_.end() ? QueueLimits{} : it->second.limits;
  }

  /// @brief Inserts or replaces a schedule.
  void put_schedule(const StoredSchedule& s) {
    validate_schedule_name(s.name);
    std::unique_lock lock(mutex_);
    schedules_[s.name] = s;
  }

  /// @brief Removes a schedule; false if there was none.
  bool remove_schedule(const std::string& name) {
    std::unique_lock lock(mutex_);
    return schedules_.erase(name) > 0;
  }

  /// @brief Every schedule, by name.
  std::vector<StoredSchedule> schedules() {
    std::unique_lock lock(mutex_);
    std::vector<StoredSchedule> out;
    for (const auto& [name, s] : schedules_) out.push_back(s);
    return out;
  }

  /// @brief Compare-and-set of a schedule's next tick, enqueueing its job in the same step.
  bool fire_schedule(const std::string& name, TimePoint expected, TimePoint next,
                     const std::optional<NewJob>& job) {
    if (job) check(*job);
    std::unique_lock lock(mutex_);
    auto it = schedules_.find(name);
    if (it == schedules_.end() || it->second.next_run != expected) return false;
    it->second.next_run = next;
    if (job) {
      insert_locked(*job, now());
      notify_locked();
    }
    return true;
  }

  /// @brief Stores (or replaces) a worker's entry, dropping every other expired one.
  void register_worker(const WorkerInfo& w) {
    validate_worker_id(w.id);
    std::unique_lock lock(mutex_);
    const auto t = now();
    std::erase_if(workers_, [&](const auto& e) { return e.second.expires_at < t; });
    workers_[w.id] = w;
  }

  /// @brief Removes a worker's entry; false if there was none.
  bool unregister_worker(const std::string& id) {
    std::unique_lock lock(mutex_);
    return workers_.erase(id) > 0;
  }

  /// @brief The entries not expired, by id.
  std::vector<WorkerInfo> workers() {
    std::unique_lock lock(mutex_);
    const auto t = now();
    std::vector<WorkerInfo> out;
    for (const auto& [id, w] : workers_) {
      if (w.expires_at >= t) out.push_back(w);
    }
    return out;
  }

  /// @brief Calls fn for every notice of `queues` (all when empty) until the subscription ends.
  Subscription subscribe(std::span<const std::string> queues, NoticeFn fn) {
    return hub_.subscribe(queues, std::move(fn));
  }

  /// @brief Calls fn for every cancel_many notice of `queues` (all when empty): the cancelled
  /// jobs', active or not, and their dependents'.
  Subscription watch_cancels(std::span<const std::string> queues, NoticeFn fn) {
    return cancels_.subscribe(queues, std::move(fn));
  }

 private:
  // ready: (-priority, run_at, id) so begin() is the next job to claim; negated in 64 bits,
  // since -INT_MIN does not fit an int.
  using ReadyKey = std::tuple<std::int64_t, std::int64_t, JobId>;
  static std::int64_t rank(int priority) noexcept { return -static_cast<std::int64_t>(priority); }

  struct QueueState {
    std::set<ReadyKey> ready;                          // queued, run_at <= now (when promoted)
    std::set<std::pair<std::int64_t, JobId>> delayed;  // queued, run_at in the future
    std::unordered_map<std::string, JobId> unique;     // unique key -> latest job with it
    Counts counts;
    bool paused = false;
    QueueLimits limits;
    std::deque<TimePoint> starts;                          // claim times inside the rate window
    std::unordered_map<std::string, int> active_by_group;  // only groups with active jobs
  };

  struct FlowState {
    std::vector<JobId> members;          // by id (the error callback last, once enqueued)
    std::optional<NewJob> on_failure;    // enqueued when the first member dies by its own failure
    bool fired = false;                  // on_failure enqueued (or the flow cancelled)
  };

  // Not started: what cancel_flow takes (an active member finishes its attempt).
  static bool cancellable(JobState s) noexcept { return s == JobState::queued || s == JobState::waiting; }

  bool cancel_one_locked(JobId id, TimePoint t, std::vector<JobNotice>& notices) {
    auto it = jobs_.find(id);
    if (it == jobs_.end() || !(cancellable(it->second.state) || it->second.state == JobState::active)) return false;
    cancel_locked(it->second, t, notices);
    resolved_locked(it->second, t, notices);
    return true;
  }

  bool redrive_one_locked(JobId id, TimePoint t) {
    auto it = jobs_.find(id);
    if (it == jobs_.end() || it->second.state != JobState::dead) return false;
    auto& job = it->second;
    if (!job.continue_on_failure) {
      for (JobId d : job.depends_on) {
        if (jobs_.at(d).state != JobState::completed) return false;  // re-drive that one instead
      }
    }
    job.attempts = 0;
    job.finished_at.reset();
    auto& q = queues_.at(job.queue);
    if (!job.unique_key.empty()) {
      auto it = q.unique.find(job.unique_key);
      auto jt = it == q.unique.end() ? jobs_.end() : jobs_.find(it->second);
      if (jt == jobs_.end() || !unique_held_locked(jt->second, t)) q.unique[job.unique_key] = id;
    }
    requeue_locked(job, t);
    revive_dependents_locked(job);
    return true;
  }

  FlowState* flow_of_locked(JobId id) {
    auto it = jobs_.find(id);
    if (it == jobs_.end() || it->second.flow_id == 0) return nullptr;
    auto ft = flows_.find(it->second.flow_id);
    return ft == flows_.end() ? nullptr : &ft->second;
  }

  JobRecord make_record(const NewJob& nj, JobId id, TimePoint t) const {
    JobRecord r;
    r.id = id;
    r.queue = nj.queue;
    r.name = nj.name;
    r.payload = nj.payload;
    r.priority = nj.priority;
    r.max_attempts = nj.max_attempts;
    r.run_at = nj.debounce.count() > 0 ? t + nj.debounce : nj.run_at.value_or(t);
    r.created_at = t;
    r.backoff = nj.backoff;
    r.timeout = nj.timeout;
    r.unique_key = nj.unique_key;
    r.unique_for = nj.unique_for;
    r.group = nj.group;
    r.expires_at = nj.expires_at;
    return r;
  }

  // A flow member: queued when it has no dependencies, else waiting for all of them.
  JobRecord& add_member_locked(const NewJob& nj, JobId id, JobId flow_id, std::vector<JobId> deps, bool cont,
                               TimePoint t) {
    auto r = make_record(nj, id, t);
    r.flow_id = flow_id;
    r.depends_on = std::move(deps);
    r.continue_on_failure = cont;
    auto& q = queues_[nj.queue];
    auto& job = jobs_.emplace(id, std::move(r)).first->second;
    for (JobId d : job.depends_on) dependents_[d].push_back(id);
    if (job.depends_on.empty()) {
      move_counts(q, std::nullopt, JobState::queued);
      link_queued_locked(q, job, t);
    } else {
      job.state = JobState::waiting;
      move_counts(q, std::nullopt, JobState::waiting);
      pending_[id] = job.depends_on.size();
    }
    return job;
  }

  void cancel_locked(JobRecord& job, TimePoint t, std::vector<JobNotice>& notices) {
    if (job.state == JobState::queued) unlink_queued_locked(job);
    pending_.erase(job.id);
    finish_locked(job, JobState::cancelled, t);
    notices.push_back({JobNotice::Kind::cancelled, job.id, job.queue, job.attempts, job.progress, {}});
  }

  // A member died by its own failure: its dependents per their policy, and the flow's error
  // callback the first time.
  void died_locked(JobRecord& job, TimePoint t, std::vector<JobNotice>& notices) {
    if (job.flow_id == 0) return;
    resolved_locked(job, t, notices);
    auto ft = flows_.find(job.flow_id);
    if (ft == flows_.end() || ft->second.fired || !ft->second.on_failure) return;
    ft->second.fired = true;
    const JobId id = next_id_++;
    ft->second.members.push_back(id);
    add_member_locked(*ft->second.on_failure, id, job.flow_id, {}, true, t).depends_on = {job.id};
    dependents_[job.id].push_back(id);
    notify_locked();
  }

  // `done` has just finished (completed, dead or cancelled): release the waiting dependents
  // it resolves, and finish those it dooms, down the flow (a stack: chains may be long).
  void resolved_locked(const JobRecord& done, TimePoint t, std::vector<JobNotice>& notices) {
    std::vector<JobId> stack{done.id};
    while (!stack.empty()) {
      const auto& dep = jobs_.at(stack.back());
      stack.pop_back();
      auto dt = dependents_.find(dep.id);
      if (dt == dependents_.end()) continue;
      for (JobId x : dt->second) {
        auto& job = jobs_.at(x);
        if (job.state != JobState::waiting) continue;
        if (resolves(dep, job)) {  // dep has settled: completed, dead or cancelled
          if (--pending_.at(x) > 0) continue;
          pending_.erase(x);
          auto& q = queues_.at(job.queue);
          move_counts(q, JobState::waiting, JobState::queued);
          job.state = JobState::queued;
          job.run_at = std::max(job.run_at, t);
          link_queued_locked(q, job, t);
          notify_locked();
          continue;
        }
        const bool cancelled = dep.state == JobState::cancelled;
        const std::string last = dep.errors.empty() ? std::string{} : dep.errors.back().message;
        job.errors.push_back(
            {0, cancelled ? cancelled_dependency_error(dep.id) : dead_dependency_error(dep.id, last), t});
        pending_.erase(x);
        finish_locked(job, cancelled ? JobState::cancelled : JobState::dead, t);
        notices.push_back({cancelled ? JobNotice::Kind::cancelled : JobNotice::Kind::dead, x, job.queue, 0, 0,
                           job.errors.back().message});
        stack.push_back(x);
      }
    }
  }

  // Dependency failed for `job`'s policy?
  bool dooms(const JobRecord& dep, const JobRecord& job) const {
    return !job.continue_on_failure && (dep.state == JobState::dead || dep.state == JobState::cancelled);
  }
  bool resolves(const JobRecord& dep, const JobRecord& job) const {
    return dep.state == JobState::completed ||
           (job.continue_on_failure && (dep.state == JobState::dead || dep.state == JobState::cancelled));
  }

  // `job` was re-driven: what died because of it waits again, down the flow.
  void revive_dependents_locked(const JobRecord& job) {
    std::vector<JobId> stack{job.id};
    while (!stack.empty()) {
      const JobId dep_id = stack.back();
      stack.pop_back();
      auto dt = dependents_.find(dep_id);
      if (dt == dependents_.end()) continue;
      for (JobId x : dt->second) {
        auto& d = jobs_.at(x);
        if (d.state == JobState::waiting && d.continue_on_failure) {
          ++pending_.at(x);  // the re-driven dependency counts as unresolved again
          continue;
        }
        if (d.state != JobState::dead || d.attempts != 0) continue;
        std::size_t pending = 0;
        bool doomed = false;
        for (JobId other : d.depends_on) {
          const auto& o = jobs_.at(other);
          if (other != dep_id && dooms(o, d)) doomed = true;
          if (!resolves(o, d)) ++pending;
        }
        if (doomed) continue;
        auto& q = queues_.at(d.queue);
        move_counts(q, JobState::dead, JobState::waiting);
        d.state = JobState::waiting;
        d.finished_at.reset();
        pending_[x] = pending;
        stack.push_back(x);
      }
    }
  }

  // Whole flows with a member in `queue`, once every member is finished and past retention.
  std::size_t prune_flows_locked(const std::string& queue, const Retention& retention, TimePoint t) {
    std::vector<JobId> gone;
    for (const auto& [fid, f] : flows_) {
      bool here = false;
      bool expired = true;
      for (JobId m : f.members) {
        const auto& job = jobs_.at(m);
        here = here || job.queue == queue;
        const auto keep = keep_for(retention, job.state);
        if (!job.finished_at || !keep || *job.finished_at + *keep >= t) {
          expired = false;
          break;
        }
      }
      if (here && expired) gone.push_back(fid);
    }
    std::size_t n = 0;
    for (JobId fid : gone) {
      for (JobId m : flows_.at(fid).members) {
        auto it = jobs_.find(m);
        move_counts(queues_.at(it->second.queue), it->second.state, std::nullopt);
        dependents_.erase(m);
        jobs_.erase(it);
        ++n;
      }
      flows_.erase(fid);
    }
    return n;
  }

  void check(const NewJob& job) const {
    validate(job);
    check_deadline(job, now());
    check_payload_size(job.payload.dump().size(), max_payload_bytes_);
  }

  // Forgets starts that left the rate window (t - window, t].
  static void drop_old_starts_locked(QueueState& q, TimePoint t) {
    while (!q.starts.empty() && q.starts.front() <= t - q.limits.rate->window) q.starts.pop_front();
  }

  bool group_full_locked(const QueueState& q, const JobRecord& job) const {
    if (q.limits.group_concurrency <= 0 || job.group.empty()) return false;
    auto it = q.active_by_group.find(job.group);
    return it != q.active_by_group.end() && it->second >= q.limits.group_concurrency;
  }

  // Moves `it` past ready jobs whose group is at its limit.
  void skip_blocked_locked(const QueueState* q, std::set<ReadyKey>::iterator& it) const {
    if (q->limits.group_concurrency <= 0) return;
    while (it != q->ready.end() && group_full_locked(*q, jobs_.at(std::get<2>(*it)))) ++it;
  }

  void leave_active_locked(QueueState& q, const JobRecord& job) {
    if (job.state != JobState::active) return;
    active_.erase(job.id);
    if (q.limits.concurrency > 0) notify_locked();  // a held-back job of the queue may start
    if (job.group.empty()) return;
    auto it = q.active_by_group.find(job.group);
    if (it != q.active_by_group.end() && --it->second <= 0) q.active_by_group.erase(it);
    if (q.limits.group_concurrency > 0) notify_locked();  // a held-back job of the group may start
  }

  static std::size_t finished_index(JobState s) {
    return s == JobState::completed ? 0 : s == JobState::dead ? 1 : 2;
  }

  static std::optional<Millis> keep_for(const Retention& r, JobState s) {
    switch (s) {
      case JobState::completed: return r.completed;
      case JobState::dead: return r.dead;
      case JobState::cancelled: return r.cancelled;
      default: return std::nullopt;
    }
  }

  static void move_counts(QueueState& q, std::optional<JobState> from, std::optional<JobState> to) {
    if (from) --count_of(q.counts, *from);
    if (to) ++count_of(q.counts, *to);
  }

  bool unique_held_locked(const JobRecord& holder, TimePoint t) const {
    if (holder.state == JobState::queued || holder.state == JobState::active) return true;
    return holder.state == JobState::completed && holder.finished_at &&
           *holder.finished_at + holder.unique_for > t;
  }

  EnqueueResult insert_locked(const NewJob& nj, TimePoint t) {
    auto& q = queues_[nj.queue];
    if (!nj.unique_key.empty()) {
      auto it = q.unique.find(nj.unique_key);
      auto jt = it == q.unique.end() ? jobs_.end() : jobs_.find(it->second);
      if (jt != jobs_.end()) {
        auto& holder = jt->second;
        if (nj.debounce.count() > 0) {
          if (holder.state == JobState::queued) {
            unlink_queued_locked(holder);
            holder.payload = nj.payload;
            holder.run_at = t + nj.debounce;
            link_queued_locked(q, holder, t);
            return {holder.id, false};
          }
        } else if (unique_held_locked(holder, t) ||
                   (nj.throttle.count() > 0 && holder.created_at + nj.throttle > t)) {
          return {holder.id, false};
        }
      }
    }
    const JobId id = next_id_++;
    auto& job = jobs_.emplace(id, make_record(nj, id, t)).first->second;
    if (!job.unique_key.empty()) q.unique[job.unique_key] = id;
    move_counts(q, std::nullopt, JobState::queued);
    link_queued_locked(q, job, t);
    return {id, true};
  }

  void link_queued_locked(QueueState& q, const JobRecord& job, TimePoint t) {
    const auto at = to_epoch_ms(job.run_at);
    if (job.run_at <= t) {
      q.ready.emplace(rank(job.priority), at, job.id);
    } else {
      q.delayed.emplace(at, job.id);
    }
    if (job.expires_at) deadlines_.emplace(to_epoch_ms(*job.expires_at), job.id);
  }

  void unlink_queued_locked(const JobRecord& job) {
    auto& q = queues_.at(job.queue);
    const auto at = to_epoch_ms(job.run_at);
    q.ready.erase({rank(job.priority), at, job.id});
    q.delayed.erase({at, job.id});
    if (job.expires_at) deadlines_.erase({to_epoch_ms(*job.expires_at), job.id});
  }

  void promote_due_locked(QueueState& q, TimePoint t) {
    const auto now_ms = to_epoch_ms(t);
    while (!q.delayed.empty() && q.delayed.begin()->first <= now_ms) {
      const auto [at, id] = *q.delayed.begin();
      q.delayed.erase(q.delayed.begin());
      q.ready.emplace(rank(jobs_.at(id).priority), at, id);
    }
  }

  // Active job -> queued again at run_at (retry, release, recovery) or dead -> queued (redrive).
  void requeue_locked(JobRecord& job, TimePoint run_at) {
    auto& q = queues_.at(job.queue);
    move_counts(q, job.state, JobState::queued);
    leave_active_locked(q, job);
    job.state = JobState::queued;
    job.run_at = run_at;
    job.lease_token.clear();
    job.lease_until.reset();
    link_queued_locked(q, job, now());
  }

  void finish_locked(JobRecord& job, JobState state, TimePoint t) {
    auto& q = queues_.at(job.queue);
    move_counts(q, job.state, state);
    leave_active_locked(q, job);
    job.state = state;
    job.finished_at = t;
    job.lease_token.clear();
    job.lease_until.reset();
    // The key map keeps pointing here (throttle windows count from this job's enqueue);
    // unique_held_locked decides whether the key is still held.
  }

  // Deletes a finished job outside flows (prune, remove); returns the next job.
  std::map<JobId, JobRecord>::iterator erase_finished_locked(std::map<JobId, JobRecord>::iterator it) {
    move_counts(queues_.at(it->second.queue), it->second.state, std::nullopt);
    release_unique_locked(it->second);
    return jobs_.erase(it);
  }

  void release_unique_locked(const JobRecord& job) {
    if (job.unique_key.empty()) return;
    auto& q = queues_.at(job.queue);
    auto it = q.unique.find(job.unique_key);
    if (it != q.unique.end() && it->second == job.id) q.unique.erase(it);
  }

  JobRecord* leased_locked(JobId id, const std::string& token) {
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return nullptr;
    auto& job = it->second;
    if (job.state != JobState::active || token.empty() || job.lease_token != token) return nullptr;
    return &job;
  }

  bool complete_locked(JobId id, const std::string& token, const nlohmann::json& result, TimePoint t,
                       std::vector<JobNotice>& notices) {
    auto* job = leased_locked(id, token);
    if (job == nullptr) return false;
    job->result = result;
    finish_locked(*job, JobState::completed, t);
    if (!hub_.empty()) notices.push_back({JobNotice::Kind::completed, id, job->queue, job->attempts, job->progress, {}});
    if (job->flow_id != 0) resolved_locked(*job, t, notices);
    return true;
  }

  void notify_locked() {
    ++generation_;
    if (waiters_ > 0) cv_.notify_all();
  }

  ClockFn clock_;
  std::size_t max_payload_bytes_;
  NoticeHub hub_;
  NoticeHub cancels_;  // watch_cancels
  std::map<std::string, StoredSchedule> schedules_;
  std::map<std::string, WorkerInfo> workers_;  // by id: workers() lists in this order
  std::mutex mutex_;
  std::condition_variable_any cv_;
  std::uint64_t generation_ = 0;
  int waiters_ = 0;
  JobId next_id_ = 1;
  std::map<JobId, JobRecord> jobs_;  // ordered: list() pages by id
  std::unordered_map<std::string, QueueState> queues_;
  std::unordered_set<JobId> active_;
  std::set<std::pair<std::int64_t, JobId>> deadlines_;         // queued jobs with expires_at, by it
  std::unordered_map<JobId, FlowState> flows_;                 // by flow id (its first member)
  std::unordered_map<JobId, std::vector<JobId>> dependents_;   // job -> flow members waiting for it
  std::unordered_map<JobId, std::size_t> pending_;             // waiting job -> unresolved dependencies
};

static_assert(Backend<MemoryBackend>);

}  // namespace jobq
