#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstdint>
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

namespace jobq {

/// @brief Options of the in-memory backend.
struct MemoryOptions {
  ClockFn clock = system_clock();  ///< where time comes from (tests pass a ManualClock)
};

/// @brief Thread-safe in-process backend: the reference implementation of the Backend
/// semantics, and the store unit tests use. Nothing survives the process.
///
/// One mutex guards everything; every operation is short (no I/O), so a finer scheme would buy
/// little. Waiters sleep on a condition variable that enqueue/retry/release/resume notify.
class MemoryBackend {
 public:
  /// @brief An empty store.
  explicit MemoryBackend(MemoryOptions options = {}) : clock_(std::move(options.clock)) {}

  MemoryBackend(const MemoryBackend&) = delete;
  MemoryBackend& operator=(const MemoryBackend&) = delete;

  /// @brief The backend's clock.
  [[nodiscard]] TimePoint now() const { return clock_(); }

  /// @brief Stores a job (or returns the holder of its unique key).
  EnqueueResult enqueue(const NewJob& job) {
    validate(job);
    std::unique_lock lock(mutex_);
    auto r = insert_locked(job, now());
    notify_locked();
    return r;
  }

  /// @brief Stores many jobs, all or nothing.
  std::vector<EnqueueResult> enqueue_many(std::span<const NewJob> jobs) {
    for (const auto& j : jobs) validate(j);  // before any write: all or nothing
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
    for (const auto& q : req.queues) validate_queue_name(q);
    std::unique_lock lock(mutex_);
    const auto t = now();
    std::vector<QueueState*> qs;
    for (const auto& name : req.queues) {
      auto& q = queues_[name];
      if (q.paused) continue;
      promote_due_locked(q, t);
      if (!q.ready.empty()) qs.push_back(&q);
    }
    std::vector<JobRecord> out;
    while (out.size() < req.limit) {
      QueueState* best = nullptr;
      for (auto* q : qs) {
        if (!q->ready.empty() && (best == nullptr || *q->ready.begin() < *best->ready.begin())) best = q;
      }
      if (best == nullptr) break;
      const JobId id = std::get<2>(*best->ready.begin());
      best->ready.erase(best->ready.begin());
      auto& job = jobs_.at(id);
      move_counts(*best, job.state, JobState::active);
      job.state = JobState::active;
      job.attempts += 1;
      job.lease_token = detail::new_lease_token();
      job.lease_until = t + req.lease;
      active_.insert(id);
      out.push_back(job);
    }
    return out;
  }

  /// @brief Records a success if the lease token is current.
  bool complete(JobId id, const std::string& token, const nlohmann::json& result) {
    std::unique_lock lock(mutex_);
    return complete_locked(id, token, result, now());
  }

  /// @brief Records many successes; one bool per completion.
  std::vector<bool> complete_many(std::span<const Completion> completions) {
    std::unique_lock lock(mutex_);
    const auto t = now();
    std::vector<bool> out;
    out.reserve(completions.size());
    for (const auto& c : completions) out.push_back(complete_locked(c.id, c.lease_token, c.result, t));
    return out;
  }

  /// @brief Records a failed attempt: retry at f.retry_at, or dead.
  FailOutcome fail(const Failure& f) {
    std::unique_lock lock(mutex_);
    auto* job = leased_locked(f.id, f.lease_token);
    if (job == nullptr) return FailOutcome::rejected;
    const auto t = now();
    job->errors.push_back({job->attempts, f.error, t});
    const bool retry = f.retry_at.has_value() && job->attempts < job->max_attempts;
    if (retry) {
      requeue_locked(*job, *f.retry_at);
      notify_locked();
      return FailOutcome::retried;
    }
    finish_locked(*job, JobState::dead, t);
    return FailOutcome::dead;
  }

  /// @brief Heartbeat: pushes the lease deadline to now + lease.
  bool extend_lease(JobId id, const std::string& token, Millis lease) {
    std::unique_lock lock(mutex_);
    auto* job = leased_locked(id, token);
    if (job == nullptr) return false;
    job->lease_until = now() + lease;
    return true;
  }

  /// @brief Gives a leased job back without counting the attempt.
  bool release(JobId id, const std::string& token) {
    std::unique_lock lock(mutex_);
    auto* job = leased_locked(id, token);
    if (job == nullptr) return false;
    job->attempts -= 1;
    requeue_locked(*job, now());
    notify_locked();
    return true;
  }

  /// @brief Records progress of an active job.
  bool set_progress(JobId id, const std::string& token, int percent, const std::string& message) {
    std::unique_lock lock(mutex_);
    auto* job = leased_locked(id, token);
    if (job == nullptr) return false;
    job->progress = std::clamp(percent, 0, 100);
    job->progress_message = message;
    return true;
  }

  /// @brief Requeues (or kills, on the last attempt) every job whose lease has expired.
  Recovered recover_expired() {
    std::unique_lock lock(mutex_);
    const auto t = now();
    std::vector<JobId> expired;
    for (JobId id : active_) {
      const auto& job = jobs_.at(id);
      if (job.lease_until && *job.lease_until <= t) expired.push_back(id);
    }
    Recovered r;
    for (JobId id : expired) {
      auto& job = jobs_.at(id);
      job.errors.push_back({job.attempts, "lease expired (worker lost or too slow)", t});
      if (job.attempts < job.max_attempts) {
        requeue_locked(job, t);
        ++r.retried;
      } else {
        finish_locked(job, JobState::dead, t);
        ++r.dead;
      }
    }
    if (r.retried > 0) notify_locked();
    return r;
  }

  /// @brief The job, if it exists.
  std::optional<JobRecord> get(JobId id) {
    std::unique_lock lock(mutex_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return std::nullopt;
    return it->second;
  }

  /// @brief Cancels a queued job.
  bool cancel(JobId id) {
    std::unique_lock lock(mutex_);
    auto it = jobs_.find(id);
    if (it == jobs_.end() || it->second.state != JobState::queued) return false;
    auto& job = it->second;
    unlink_queued_locked(job);
    finish_locked(job, JobState::cancelled, now());
    return true;
  }

  /// @brief Puts a dead job back in its queue with a fresh attempt budget.
  bool redrive(JobId id) {
    std::unique_lock lock(mutex_);
    auto it = jobs_.find(id);
    if (it == jobs_.end() || it->second.state != JobState::dead) return false;
    auto& job = it->second;
    job.attempts = 0;
    job.finished_at.reset();
    auto& q = queues_.at(job.queue);
    if (!job.unique_key.empty() && !q.unique.contains(job.unique_key)) q.unique[job.unique_key] = id;
    requeue_locked(job, now());
    notify_locked();
    return true;
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
      if (q.paused || c.queued + c.active + c.completed + c.dead + c.cancelled > 0) out.push_back(name);
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  /// @brief Jobs per state in a queue.
  Counts counts(const std::string& queue) {
    validate_queue_name(queue);
    std::unique_lock lock(mutex_);
    auto it = queues_.find(queue);
    return it == queues_.end() ? Counts{} : it->second.counts;
  }

  /// @brief Deletes finished jobs older than the retention of their state.
  std::size_t prune(const std::string& queue, const Retention& retention) {
    validate_queue_name(queue);
    std::unique_lock lock(mutex_);
    auto qit = queues_.find(queue);
    if (qit == queues_.end()) return 0;
    const auto t = now();
    std::size_t n = 0;
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      const auto& job = it->second;
      const auto keep = keep_for(retention, job.state);
      if (job.queue == queue && job.finished_at && keep && *job.finished_at + *keep < t) {
        move_counts(qit->second, job.state, std::nullopt);
        release_unique_locked(job);
        it = jobs_.erase(it);
        ++n;
      } else {
        ++it;
      }
    }
    return n;
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
      const auto& q = it->second;
      if (!q.ready.empty()) return;
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

 private:
  // ready: (-priority, run_at, id) so begin() is the next job to claim.
  using ReadyKey = std::tuple<int, std::int64_t, JobId>;

  struct QueueState {
    std::set<ReadyKey> ready;                          // queued, run_at <= now (when promoted)
    std::set<std::pair<std::int64_t, JobId>> delayed;  // queued, run_at in the future
    std::unordered_map<std::string, JobId> unique;     // unique key -> job holding it
    Counts counts;
    bool paused = false;
  };

  static std::optional<Millis> keep_for(const Retention& r, JobState s) {
    switch (s) {
      case JobState::completed: return r.completed;
      case JobState::dead: return r.dead;
      case JobState::cancelled: return r.cancelled;
      default: return std::nullopt;
    }
  }

  static std::int64_t& count_of(Counts& c, JobState s) {
    switch (s) {
      case JobState::queued: return c.queued;
      case JobState::active: return c.active;
      case JobState::completed: return c.completed;
      case JobState::dead: return c.dead;
      case JobState::cancelled: break;
    }
    return c.cancelled;
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
      if (it != q.unique.end()) {
        auto jt = jobs_.find(it->second);
        if (jt != jobs_.end() && unique_held_locked(jt->second, t)) return {jt->first, false};
      }
    }
    const JobId id = next_id_++;
    JobRecord r;
    r.id = id;
    r.queue = nj.queue;
    r.name = nj.name;
    r.payload = nj.payload;
    r.priority = nj.priority;
    r.max_attempts = nj.max_attempts;
    r.run_at = nj.run_at.value_or(t);
    r.created_at = t;
    r.backoff = nj.backoff;
    r.timeout = nj.timeout;
    r.unique_key = nj.unique_key;
    r.unique_for = nj.unique_for;
    auto& job = jobs_.emplace(id, std::move(r)).first->second;
    if (!job.unique_key.empty()) q.unique[job.unique_key] = id;
    move_counts(q, std::nullopt, JobState::queued);
    link_queued_locked(q, job, t);
    return {id, true};
  }

  void link_queued_locked(QueueState& q, const JobRecord& job, TimePoint t) {
    const auto at = to_epoch_ms(job.run_at);
    if (job.run_at <= t) {
      q.ready.emplace(-job.priority, at, job.id);
    } else {
      q.delayed.emplace(at, job.id);
    }
  }

  void unlink_queued_locked(const JobRecord& job) {
    auto& q = queues_.at(job.queue);
    const auto at = to_epoch_ms(job.run_at);
    q.ready.erase({-job.priority, at, job.id});
    q.delayed.erase({at, job.id});
  }

  void promote_due_locked(QueueState& q, TimePoint t) {
    const auto now_ms = to_epoch_ms(t);
    while (!q.delayed.empty() && q.delayed.begin()->first <= now_ms) {
      const auto [at, id] = *q.delayed.begin();
      q.delayed.erase(q.delayed.begin());
      q.ready.emplace(-jobs_.at(id).priority, at, id);
    }
  }

  // Active job -> queued again at run_at (retry, release, recovery) or dead -> queued (redrive).
  void requeue_locked(JobRecord& job, TimePoint run_at) {
    auto& q = queues_.at(job.queue);
    move_counts(q, job.state, JobState::queued);
    active_.erase(job.id);
    job.state = JobState::queued;
    job.run_at = run_at;
    job.lease_token.clear();
    job.lease_until.reset();
    link_queued_locked(q, job, now());
  }

  void finish_locked(JobRecord& job, JobState state, TimePoint t) {
    auto& q = queues_.at(job.queue);
    move_counts(q, job.state, state);
    active_.erase(job.id);
    job.state = state;
    job.finished_at = t;
    job.lease_token.clear();
    job.lease_until.reset();
    // Completed jobs may keep their key for unique_for; dead/cancelled release it now.
    if (state != JobState::completed || job.unique_for.count() == 0) release_unique_locked(job);
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

  bool complete_locked(JobId id, const std::string& token, const nlohmann::json& result, TimePoint t) {
    auto* job = leased_locked(id, token);
    if (job == nullptr) return false;
    job->result = result;
    finish_locked(*job, JobState::completed, t);
    return true;
  }

  void notify_locked() {
    ++generation_;
    if (waiters_ > 0) cv_.notify_all();
  }

  ClockFn clock_;
  std::mutex mutex_;
  std::condition_variable_any cv_;
  std::uint64_t generation_ = 0;
  int waiters_ = 0;
  JobId next_id_ = 1;
  std::map<JobId, JobRecord> jobs_;  // ordered: list() pages by id
  std::unordered_map<std::string, QueueState> queues_;
  std::unordered_set<JobId> active_;
};

static_assert(Backend<MemoryBackend>);

}  // namespace jobq
