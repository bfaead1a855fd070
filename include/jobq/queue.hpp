#pragma once

#include <chrono>
#include <concepts>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "jobq/backend.hpp"
#include "jobq/schedule.hpp"

namespace jobq {

/// @brief Per-enqueue options. Field order allows designated initializers in this order.
struct EnqueueOptions {
  int priority = 0;                  ///< higher runs first
  std::optional<Millis> delay{};     ///< not before now + delay
  std::optional<TimePoint> run_at{}; ///< not before this instant (wins over delay)
  std::optional<Millis> expire_in{}; ///< deadline now + expire_in: not started by then, never run
  std::optional<TimePoint> expires_at{}; ///< deadline (wins over expire_in); see Backend::claim
  int max_attempts = 3;              ///< attempts before dead (>= 1)
  Backoff backoff = {};              ///< retry delays (default: exponential from 1 s, cap 1 h)
  Millis timeout{0};                 ///< per-attempt time limit; 0 = none
  std::string unique_key{};          ///< dedup key within the queue; empty = none
  Millis unique_for{0};              ///< keep the key held this long after completion
  Millis throttle{0};                ///< with unique_key: at most one job per this window
  Millis debounce{0};                ///< with unique_key: run this long after the last enqueue
  std::string group{};               ///< group key for QueueLimits::group_concurrency
  std::string queue{};               ///< overrides the Queue's own name when non-empty
};

/// @brief The producer's facade over a backend and one queue name.
template <Backend B>
class Queue {
 public:
  /// @brief A queue named `name` (validated: InvalidArgument if empty, too long or bad chars).
  Queue(B& backend, std::string name) : backend_(&backend), name_(std::move(name)) {
    validate_queue_name(name_);
  }

  /// @brief The queue's name.
  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  /// @brief The backend it writes to.
  [[nodiscard]] B& backend() const noexcept { return *backend_; }

  /// @brief Builds the backend request for an untyped job (for mixed bulk enqueues).
  [[nodiscard]] NewJob make(std::string_view job_name, nlohmann::json payload,
                            const EnqueueOptions& o = {}) const {
    NewJob j;
    j.queue = o.queue.empty() ? name_ : o.queue;
    j.name = std::string(job_name);
    j.payload = std::move(payload);
    j.priority = o.priority;
    if (o.run_at) {
      j.run_at = o.run_at;
    } else if (o.delay) {
      check_duration(*o.delay, "delay");  // before the sum, which could overflow
      j.run_at = backend_->now() + *o.delay;
    }
    if (o.expires_at) {
      j.expires_at = o.expires_at;
    } else if (o.expire_in) {
      check_duration(*o.expire_in, "expire_in");
      j.expires_at = backend_->now() + *o.expire_in;
    }
    j.max_attempts = o.max_attempts;
    j.backoff = o.backoff;
    j.timeout = o.timeout;
    j.unique_key = o.unique_key;
    j.unique_for = o.unique_for;
    j.throttle = o.throttle;
    j.debounce = o.debounce;
    j.group = o.group;
    return j;
  }

  /// @brief Builds the backend request for a typed job.
  template <Job T>
  [[nodiscard]] NewJob make(const T& job, const EnqueueOptions& o = {}) const {
    return make(T::job_name, nlohmann::json(job), o);
  }

  /// @brief Enqueues a typed job; returns its id (or the id holding its unique key).
  template <Job T>
  JobId enqueue(const T& job, const EnqueueOptions& o = {}) {
    return backend_->enqueue(make(job, o)).id;
  }

  /// @brief Enqueues an untyped job by name and JSON payload.
  JobId enqueue(std::string_view job_name, nlohmann::json payload, const EnqueueOptions& o = {}) {
    return backend_->enqueue(make(job_name, std::move(payload), o)).id;
  }

  /// @brief Enqueues and says whether the job was created or deduplicated by its unique key.
  EnqueueResult submit(const NewJob& job) { return backend_->enqueue(job); }

  /// @brief Enqueues many jobs in one atomic call: typed jobs (all with options `o`) or
  /// prepared NewJobs (see make).
  template <std::ranges::input_range R>
    requires Job<std::ranges::range_value_t<R>> ||
             std::same_as<std::ranges::range_value_t<R>, NewJob>
  std::vector<JobId> enqueue_many(const R& jobs, const EnqueueOptions& o = {}) {
    using V = std::ranges::range_value_t<R>;
    if constexpr (std::same_as<V, NewJob> && std::ranges::contiguous_range<R>) {
      // No copy: the backend validates each payload (depth first) before anything walks it.
      return ids(backend_->enqueue_many(std::span<const NewJob>(std::ranges::data(jobs), std::ranges::size(jobs))));
    } else if constexpr (std::same_as<V, NewJob>) {
      std::vector<NewJob> batch(std::ranges::begin(jobs), std::ranges::end(jobs));
      return ids(backend_->enqueue_many(batch));
    } else {
      std::vector<NewJob> batch;
      for (const auto& j : jobs) batch.push_back(make(j, o));
      return ids(backend_->enqueue_many(batch));
    }
  }

  /// @brief Stores a whole flow atomically (its members name their own queues: make() on any
  /// Queue, or NewJobs by hand). Throws InvalidArgument, with nothing written, for an invalid
  /// member, a unique key on a member, or a cycle.
  EnqueuedFlow enqueue_flow(const Flow& flow) {
    EnqueuedFlow out;
    out.members = backend_->enqueue_flow(flow.spec());
    out.id = out.members.empty() ? 0 : out.members.front();
    return out;
  }

  /// @brief The flow job `id` belongs to (every member with its state, dependencies and
  /// result), or nullopt when the job is in no flow.
  std::optional<FlowRecord> flow(JobId id) { return backend_->flow(id); }
  /// @brief Cancels every member of job `id`'s flow that has not started; returns how many.
  std::size_t cancel_flow(JobId id) { return backend_->cancel_flow(id); }

  /// @brief The job, if it exists.
  std::optional<JobRecord> get(JobId id) { return backend_->get(id); }
  /// @brief Cancels a queued, waiting or active job (an active one's worker is refused from then
  /// on); false otherwise.
  bool cancel(JobId id) { return backend_->cancel(id); }
  /// @brief Re-drives a dead job; false if it is not dead.
  bool redrive(JobId id) { return backend_->redrive(id); }
  /// @brief Stops workers claiming from this queue.
  void pause() { backend_->pause(name_); }
  /// @brief Lets workers claim from this queue again.
  void resume() { backend_->resume(name_); }
  /// @brief Whether the queue is paused.
  bool is_paused() { return backend_->is_paused(name_); }
  /// @brief Jobs per state.
  Counts counts() { return backend_->counts(name_); }
  /// @brief A page of jobs in one state.
  std::vector<JobRecord> list(JobState state, Page page = {}) { return backend_->list(name_, state, page); }
  /// @brief Deletes finished jobs older than the retention policy.
  std::size_t prune(const Retention& r = {}) { return backend_->prune(name_, r); }

  /// @brief Sets this queue's rate limit and group concurrency (enforced by every claim).
  void set_limits(const QueueLimits& limits) { backend_->set_queue_limits(name_, limits); }
  /// @brief This queue's limits.
  QueueLimits limits() { return backend_->queue_limits(name_); }

  /// @brief Stores (or replaces) a recurring typed job on this queue: every tick of `cron` in
  /// options.tz enqueues `job` once, whichever workers run (see save_schedule).
  template <Job T>
  void schedule(const std::string& schedule_name, std::string_view cron, const ScheduleOptions& options,
                const T& job) {
    schedule(schedule_name, cron, options, T::job_name, nlohmann::json(job));
  }

  /// @brief The same for an untyped job.
  void schedule(const std::string& schedule_name, std::string_view cron, const ScheduleOptions& options,
                std::string_view job_name, nlohmann::json payload) {
    save_schedule(*backend_, Schedule{schedule_name, std::string(cron), name_, std::string(job_name),
                                      std::move(payload), options});
  }

  /// @brief Removes a schedule; false if there was none.
  bool unschedule(const std::string& schedule_name) { return backend_->remove_schedule(schedule_name); }

  /// @brief The schedules that enqueue into this queue, by name.
  std::vector<ScheduleInfo> schedules() {
    auto all = load_schedules(*backend_);
    std::erase_if(all, [&](const ScheduleInfo& s) { return s.schedule.queue != name_; });
    return all;
  }

  /// @brief Calls fn for every notice of this queue, from any process, until the returned
  /// subscription ends (see Backend::subscribe).
  Subscription subscribe(NoticeFn fn) {
    return backend_->subscribe(std::span<const std::string>(&name_, 1), std::move(fn));
  }

  /// @brief Blocks until job `id` is finished (completed, dead or cancelled) and returns it, or
  /// returns nullopt after `timeout`. Throws NotFound for an unknown id. Woken by the backend's
  /// notices, and polls as well, so a lost notice only costs latency.
  std::optional<JobRecord> wait_for(JobId id, Millis timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    auto job = backend_->get(id);
    if (!job) throw NotFound("job " + std::to_string(id) + " does not exist");
    if (finished(*job)) return job;
    struct Wake {
      std::mutex m;
      std::condition_variable cv;
      bool poked = false;
    };
    auto wake = std::make_shared<Wake>();
    const std::string queue = job->queue;
    auto sub = backend_->subscribe(std::span<const std::string>(&queue, 1), [wake, id](const JobNotice& n) {
      if (n.id != id || n.kind == JobNotice::Kind::progress) return;
      std::lock_guard lock(wake->m);
      wake->poked = true;
      wake->cv.notify_all();
    });
    Millis poll{50};
    for (;;) {
      job = backend_->get(id);
      if (!job) throw NotFound("job " + std::to_string(id) + " was deleted while waiting for it");
      if (finished(*job)) return job;
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) return std::nullopt;
      std::unique_lock lock(wake->m);
      wake->cv.wait_until(lock, std::min(deadline, now + poll), [&] { return wake->poked; });
      wake->poked = false;
      poll = std::min(poll * 2, Millis{1'000});
    }
  }

 private:
  static bool finished(const JobRecord& j) { return is_finished(j.state); }

  static std::vector<JobId> ids(const std::vector<EnqueueResult>& rs) {
    std::vector<JobId> out;
    out.reserve(rs.size());
    for (const auto& r : rs) out.push_back(r.id);
    return out;
  }

  B* backend_;
  std::string name_;
};

}  // namespace jobq
