#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <span>
#include <stop_token>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "jobq/backend.hpp"
#include "jobq/log.hpp"
#include "jobq/schedule.hpp"
#include "jobq/worker_info.hpp"

namespace jobq {

/// @brief Something that happened to a job in a Worker; see WorkerOptions::on_event.
struct JobEvent {
  /// @brief started: a handler begins; completed: its success was recorded; failed: an attempt
  /// failed, followed by its outcome: retried, dead, or lost_lease (the lease was no longer
  /// ours, so nothing was recorded; also sent when a success is refused for that reason);
  /// progress: the handler reported progress (recorded in the backend).
  /// snoozed: the handler asked to run again later (JobContext::snooze; duration = the
  /// delay): queued again, no attempt used.
  enum class Kind { started, completed, failed, retried, dead, lost_lease, progress, snoozed };
  Kind kind = Kind::started;  ///< what happened
  JobId id = 0;               ///< the job
  std::string queue{};        ///< its queue
  std::string name{};         ///< its job name
  int attempt = 0;            ///< the attempt number, from 1
  Millis duration{0};         ///< handler run time (completed, failed and outcomes; else 0)
  std::string error{};        ///< the failure message (failed and outcomes; else empty)
  int progress = 0;           ///< percent (progress events)
  std::string message{};      ///< the progress message (progress events)
  /// started: how long the job had been due when this attempt began (the backend's now() −
  /// run_at: since the enqueue for an immediate job, since the delay or the retry backoff ran
  /// out otherwise; 0 if a clock runs behind); else 0.
  Millis waited{0};
};

/// @brief One on_event observer that calls each of `observers` in turn, empty ones skipped:
/// `.on_event = jobq::fan_out({metrics.observer(), my_hook})`.
inline std::function<void(const JobEvent&)> fan_out(std::vector<std::function<void(const JobEvent&)>> observers) {
  std::erase_if(observers, [](const auto& f) { return !f; });
  return [all = std::move(observers)](const JobEvent& e) {
    for (const auto& f : all) f(e);
  };
}

/// @brief The event kind's name ("started", "completed", ...).
constexpr std::string_view to_string(JobEvent::Kind k) noexcept {
  switch (k) {
    case JobEvent::Kind::started: return "started";
    case JobEvent::Kind::completed: return "completed";
    case JobEvent::Kind::failed: return "failed";
    case JobEvent::Kind::retried: return "retried";
    case JobEvent::Kind::dead: return "dead";
    case JobEvent::Kind::lost_lease: return "lost_lease";
    case JobEvent::Kind::progress: return "progress";
    case JobEvent::Kind::snoozed: return "snoozed";
  }
  return "unknown";
}

/// @brief The level the Worker logs an event at: started and progress debug, completed and
/// retried info, failed and lost_lease warning, dead error.
constexpr LogLevel log_level_of(JobEvent::Kind k) noexcept {
  switch (k) {
    case JobEvent::Kind::started:
    case JobEvent::Kind::progress: return LogLevel::debug;
    case JobEvent::Kind::completed:
    case JobEvent::Kind::retried:
    case JobEvent::Kind::snoozed: return LogLevel::info;
    case JobEvent::Kind::failed:
    case JobEvent::Kind::lost_lease: return LogLevel::warning;
    case JobEvent::Kind::dead: return LogLevel::error;
  }
  return LogLevel::info;
}

/// @brief One line about an event: "job 42 send-email (emails): failed on attempt 2 after
/// 15 ms: timeout".
inline std::string describe(const JobEvent& e) {
  std::string s = "job " + std::to_string(e.id) + " " + e.name + " (" + e.queue + "): ";
  const auto ms = " after " + std::to_string(e.duration.count()) + " ms";
  const auto attempt = std::to_string(e.attempt);
  switch (e.kind) {
    case JobEvent::Kind::started: s += "started attempt " + attempt; break;
    case JobEvent::Kind::completed: s += "completed on attempt " + attempt + ms; break;
    case JobEvent::Kind::failed: s += "failed on attempt " + attempt + ms + ": " + e.error; break;
    case JobEvent::Kind::retried: s += "will be retried (attempt " + attempt + " failed)"; break;
    case JobEvent::Kind::dead: s += "dead after attempt " + attempt + ": " + e.error; break;
    case JobEvent::Kind::lost_lease: s += "lease lost on attempt " + attempt + ": its outcome was not recorded"; break;
    case JobEvent::Kind::snoozed: s += "snoozed for " + std::to_string(e.duration.count()) + " ms"; break;
    case JobEvent::Kind::progress:
      s += "progress " + std::to_string(e.progress) + "%";
      if (!e.message.empty()) s += ": " + e.message;
      break;
  }
  return s;
}

/// @brief Options of a Worker.
struct WorkerOptions {
  std::vector<std::string> queues{};   ///< queues to claim from (at least one)
  int concurrency = 1;                 ///< handler threads
  int prefetch = -1;                   ///< extra jobs leased ahead of busy threads; -1 = adaptive (see Worker)
  Millis lease{30'000};                ///< lease per claim; renewed by heartbeats
  Millis heartbeat_interval{0};        ///< 0 = lease / 3
  Millis poll_interval{1'000};         ///< longest single wait for work (a wake-up cuts it short)
  Millis maintenance_interval{5'000};  ///< how often to recover expired leases; 0 = never
  Millis schedule_interval{1'000};     ///< how often to fire due schedules; 0 = never
  Millis shutdown_grace{10'000};       ///< how long stop() waits for running handlers
  /// Finished jobs the worker deletes from its queues (the one place jobq prunes on its own):
  /// by default completed and cancelled after 24 h, dead after 7 days, and at most 100,000 per
  /// finished state and queue; nullopt keeps everything.
  std::optional<Retention> retention = Retention{.max_jobs = 100'000};
  Millis prune_interval{60'000};       ///< how often to prune (the first right at start); 0 = never
  /// Register in the store's worker registry (jobq workers, the dashboard, jobq show's
  /// running/leased), renewed every heartbeat_interval with the jobs it runs and holds; the
  /// entry goes at stop(), or by itself max(lease, 3 heartbeats) after the last renewal.
  bool registry = true;
  /// Stop a handler whose job is cancelled as soon as the store says so (Backend::watch_cancels:
  /// one listening connection per worker on PostgreSQL and Redis), not at the next heartbeat.
  /// The heartbeat still catches a cancel the watch missed.
  bool instant_cancel = true;
  /// Called with errors the loops survive (backend down, ...). Default: logged at error level.
  std::function<void(const std::exception&)> on_error{};
  /// Called on worker threads for every JobEvent (metrics, custom hooks); must be thread-safe and
  /// quick. Exceptions it throws go to on_error. Default: none. Several: jobq::fan_out.
  std::function<void(const JobEvent&)> on_event{};
  /// One line per job event at its level (log_level_of) and per surviving error. Default:
  /// warnings and errors to stderr with time, level and job; {.level = LogLevel::off} silences.
  Logger log = stderr_logger();
};

/// @brief Per-handler options.
struct HandlerOptions {
  std::optional<Backoff> backoff{};///< overrides the job's stored backoff (custom functions here)
};

/// @brief Counters of a Worker since it was made.
struct WorkerStats {
  std::uint64_t processed = 0;    ///< attempts completed successfully
  std::uint64_t failed = 0;       ///< attempts that failed (retried or dead)
  std::uint64_t retried = 0;      ///< failed attempts scheduled for retry
  std::uint64_t dead = 0;         ///< jobs moved to dead by this worker
  std::uint64_t lost_leases = 0;  ///< results refused because the lease was no longer ours
  std::uint64_t snoozed = 0;      ///< attempts that asked to run again later (no attempt used)
  std::uint64_t in_flight = 0;    ///< jobs claimed and not yet finished, now
  std::uint64_t prefetch = 0;     ///< jobs it may lease ahead of busy threads, now (adaptive: as sized)
};

/// @brief A finished (or failed) dependency of a flow member, as its handler sees it.
struct Dependency {
  JobId id = 0;                    ///< the dependency's job
  std::string name;                ///< its job name
  std::string queue;               ///< its queue
  JobState state = JobState::completed;  ///< completed, or dead/cancelled (continue_on_failure)
  nlohmann::json result;           ///< its result when completed
  std::string error;               ///< its last error, if any
};

namespace detail {
template <class R>
struct result_of_job {
  using type = R;
};
template <class R>
  requires requires { typename R::result_type; }
struct result_of_job<R> {
  using type = typename R::result_type;
};
}  // namespace detail

/// @brief What a handler sees of its job: identity, cancellation, progress, and the results of
/// the flow members it depends on.
class JobContext {
 public:
  /// @brief Loads the dependencies of a job (the Worker passes one that asks the backend).
  using DependencyLoader = std::function<std::vector<Dependency>(const JobRecord&)>;

  /// @brief Made by the Worker for one attempt.
  JobContext(const JobRecord& job, std::stop_token stop,
             std::function<bool(int, const std::string&)> progress, DependencyLoader load = {})
      : job_(&job), stop_(std::move(stop)), progress_(std::move(progress)), load_(std::move(load)) {}

  /// @brief The job's id.
  [[nodiscard]] JobId id() const noexcept { return job_->id; }
  /// @brief This attempt's number, from 1.
  [[nodiscard]] int attempt() const noexcept { return job_->attempts; }
  /// @brief The whole job record as claimed.
  [[nodiscard]] const JobRecord& job() const noexcept { return *job_; }
  /// @brief Requested when the attempt times out, the lease is lost, or the worker shuts down.
  [[nodiscard]] std::stop_token stop_token() const noexcept { return stop_; }
  /// @brief Shorthand for stop_token().stop_requested().
  [[nodiscard]] bool stop_requested() const noexcept { return stop_.stop_requested(); }
  /// @brief Records progress (0..100) and an optional message; false if the lease is lost.
  bool progress(int percent, const std::string& message = {}) { return progress_(percent, message); }

  /// @brief Asks to run this job again `delay` from now instead of finishing it: when the
  /// handler returns (normally; a throw still fails the attempt), the job goes back to queued
  /// at now + delay and the attempt is not counted (River's JobSnooze, Oban's {:snooze, n}).
  /// Its result, if any, is dropped. A rate limit's or an upstream's "try again in 30 s".
  void snooze(Millis delay) {
    check_duration(delay, "snooze");
    snooze_ = std::max(delay, Millis{0});
  }
  /// @brief The delay snooze() asked for, if it was called.
  [[nodiscard]] std::optional<Millis> snoozed() const noexcept { return snooze_; }

  /// @brief The jobs this flow member depends on, in the order the flow gave them (empty
  /// outside flows); read from the backend once, on first use.
  const std::vector<Dependency>& dependencies() {
    if (!deps_) deps_ = job_->depends_on.empty() || !load_ ? std::vector<Dependency>{} : load_(*job_);
    return *deps_;
  }

  /// @brief The results of the completed dependencies, in order, as R (or R::result_type when
  /// R is a job type that names one). Throws InvalidArgument when a result does not convert.
  template <class R>
  std::vector<typename detail::result_of_job<R>::type> results() {
    std::vector<typename detail::result_of_job<R>::type> out;
    for (const auto& d : dependencies()) {
      if (d.state == JobState::completed) out.push_back(convert<R>(d));
    }
    return out;
  }

  /// @brief The result of dependency `index` (0: the one before it in a chain) as R.
  /// Throws InvalidArgument when there is no such dependency or it did not complete.
  template <class R>
  typename detail::result_of_job<R>::type result(std::size_t index = 0) {
    const auto& deps = dependencies();
    if (index >= deps.size()) {
      throw InvalidArgument("job " + std::to_string(id()) + " has no dependency #" + std::to_string(index));
    }
    if (deps[index].state != JobState::completed) {
      throw InvalidArgument("dependency " + std::to_string(deps[index].id) + " did not complete (" +
                            std::string(to_string(deps[index].state)) + ")");
    }
    return convert<R>(deps[index]);
  }

 private:
  template <class R>
  static typename detail::result_of_job<R>::type convert(const Dependency& d) {
    using T = typename detail::result_of_job<R>::type;
    try {
      return d.result.get<T>();
    } catch (const nlohmann::json::exception& e) {
      throw InvalidArgument("result of dependency " + std::to_string(d.id) + " does not convert: " + e.what());
    }
  }

  const JobRecord* job_;
  std::optional<Millis> snooze_;
  std::stop_token stop_;
  std::function<bool(int, const std::string&)> progress_;
  DependencyLoader load_;
  std::optional<std::vector<Dependency>> deps_;
};

/// @brief The dependencies of `job` read from `backend` in one get_many call; a dependency
/// that no longer exists shows as dead with an error saying so.
template <class B>
std::vector<Dependency> load_dependencies(B& backend, const JobRecord& job) {
  const auto records = backend.get_many(std::span<const JobId>(job.depends_on));
  std::vector<Dependency> out;
  out.reserve(records.size());
  for (std::size_t i = 0; i < records.size(); ++i) {
    if (!records[i]) {
      out.push_back({job.depends_on[i], {}, {}, JobState::dead, nullptr,
                     "dependency " + std::to_string(job.depends_on[i]) + " no longer exists"});
      continue;
    }
    const auto& r = *records[i];
    out.push_back({r.id, r.name, r.queue, r.state, r.result, r.errors.empty() ? std::string{} : r.errors.back().message});
  }
  return out;
}

namespace detail {

// Calls a handler as fn(value, ctx) or fn(value); its result (or null for void) as JSON.
template <class F, class V>
nlohmann::json call_handler(F& fn, const V& value, JobContext& ctx) {
  if constexpr (std::is_invocable_v<F&, const V&, JobContext&>) {
    using R = std::invoke_result_t<F&, const V&, JobContext&>;
    if constexpr (std::is_void_v<R>) {
      fn(value, ctx);
      return nullptr;
    } else {
      return nlohmann::json(fn(value, ctx));
    }
  } else {
    static_assert(std::is_invocable_v<F&, const V&>,
                  "handler must be callable as fn(const T&, JobContext&) or fn(const T&)");
    using R = std::invoke_result_t<F&, const V&>;
    if constexpr (std::is_void_v<R>) {
      fn(value);
      return nullptr;
    } else {
      return nlohmann::json(fn(value));
    }
  }
}

// A typed handler over a job record: a payload that does not deserialize into T is permanent.
// Shared by Worker::handle and Isolated::handle (the child's side).
template <Job T, class F>
auto typed_handler(F fn) {
  return [fn = std::move(fn)](const JobRecord& job, JobContext& ctx) -> nlohmann::json {
    std::optional<T> value;
    try {
      value.emplace(job.payload.get<T>());
    } catch (const nlohmann::json::exception& e) {
      throw Permanent("payload does not match job type '" + std::string(T::job_name) + "': " + e.what());
    }
    return call_handler(fn, *value, ctx);
  };
}

// An untyped handler over a job record: fn gets the payload as JSON.
template <class F>
auto untyped_handler(F fn) {
  return [fn = std::move(fn)](const JobRecord& job, JobContext& ctx) -> nlohmann::json {
    return call_handler(fn, job.payload, ctx);
  };
}

// Raised inside the worker when no handler matches; an ordinary (retried) failure.
struct NoHandler : std::runtime_error {
  using std::runtime_error::runtime_error;
};
}  // namespace detail

/// @brief The consumer: claims jobs in batches up to its free slots, runs their handlers on
/// `concurrency` threads, heartbeats leases, enforces timeouts, retries with backoff,
/// dead-letters, and shuts down gracefully.
///
/// Threads: `concurrency` runners, one committer (successes, batched by group commit), one
/// keeper (heartbeats, timeouts, expired-lease recovery, due schedules) and, with a retention,
/// one pruner (a long prune never delays a heartbeat). A runner with
/// nothing to run claims for all of them (one at a time: claim / wait_for_work, up to
/// concurrency + prefetch jobs leased and not yet finished), so a job reaches its handler
/// without a thread hand-off; successes go to the committer, which records them while the
/// runners go on. Handlers never heartbeat.
template <Backend B>
class Worker {
 public:
  /// @brief A stopped worker over `backend`; register handlers, then start().
  Worker(B& backend, WorkerOptions options) : backend_(&backend), opt_(std::move(options)) {
    if (opt_.queues.empty()) throw InvalidArgument("worker: no queues given");
    for (const auto& q : opt_.queues) validate_queue_name(q);
    if (opt_.concurrency < 1) throw InvalidArgument("worker: concurrency must be at least 1");
    adaptive_ = opt_.prefetch < 0;
    const auto c = static_cast<std::size_t>(opt_.concurrency);
    // Adaptive: start as the fixed default did (prefetch = concurrency) until measured.
    window_ = c + (adaptive_ ? c : static_cast<std::size_t>(opt_.prefetch));
    max_window_ = adaptive_ ? c + std::max(c, kMaxAdaptivePrefetch) : window_;
    max_uncommitted_ = std::max<std::size_t>(1'024, 4 * max_window_);
    if (opt_.lease < Millis{10}) throw InvalidArgument("worker: lease must be at least 10 ms");
    check_duration(opt_.lease, "worker: lease");
    check_duration(std::max(opt_.heartbeat_interval, Millis{0}), "worker: heartbeat_interval");
    check_duration(std::max(opt_.poll_interval, Millis{0}), "worker: poll_interval");
    check_duration(std::max(opt_.maintenance_interval, Millis{0}), "worker: maintenance_interval");
    check_duration(std::max(opt_.schedule_interval, Millis{0}), "worker: schedule_interval");
    check_duration(std::max(opt_.prune_interval, Millis{0}), "worker: prune_interval");
    check_duration(std::max(opt_.shutdown_grace, Millis{0}), "worker: shutdown_grace");
    if (opt_.heartbeat_interval <= Millis{0}) opt_.heartbeat_interval = opt_.lease / 3;
    if (opt_.poll_interval <= Millis{0}) opt_.poll_interval = Millis{1'000};
    if (!opt_.on_error) {
      opt_.on_error = [log = opt_.log](const std::exception& e) {
        if (!log.enabled(LogLevel::error)) return;
        const std::string text = std::string("worker: ") + e.what();
        log.write({LogLevel::error, text, nullptr});
      };
    }
    observe_ = opt_.on_event || opt_.log.enabled(LogLevel::error);
    id_ = make_worker_id();
  }

  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  /// @brief Stops (gracefully) if still running.
  ~Worker() { stop(); }

  /// @brief Registers the handler of typed job T: fn(const T&, JobContext&) or fn(const T&),
  /// returning void or a value stored as the job's JSON result. A payload that does not
  /// deserialize into T fails the job permanently (dead) with a message saying so.
  template <Job T, class F>
  void handle(F fn, HandlerOptions options = {}) {
    add_handler(std::string(T::job_name), std::move(options),
                detail::typed_handler<T>(std::move(fn)));
  }

  /// @brief Registers the handler of an untyped job: fn(const nlohmann::json&, JobContext&).
  template <class F>
  void handle(const std::string& job_name, F fn, HandlerOptions options = {}) {
    validate_job_name(job_name);
    add_handler(job_name, std::move(options),
                detail::untyped_handler(std::move(fn)));
  }

  /// @brief Starts the threads and returns; stop() or the destructor ends them.
  void start() {
    watch_cancels();  // before the first claim: a cancel of any job it runs is heard
    std::lock_guard lock(mutex_);
    if (running_) return;
    running_ = true;
    started_at_ = backend_->now();
    fetch_stop_ = std::stop_source{};
    tasks_.reserve(max_window_);  // never reallocated while running (a Task is large to move)
    committer_ = std::thread([this] { commit_loop(); });
    keeper_ = std::jthread([this](std::stop_token st) { keeper_loop(st); });
    if (opt_.retention && opt_.prune_interval > Millis{0}) {
      pruner_ = std::jthread([this](std::stop_token st) { prune_loop(st); });
    }
    for (int i = 0; i < opt_.concurrency; ++i) runners_.emplace_back([this] { run_loop(); });
  }

  /// @brief Graceful stop: stop claiming, give back jobs not started, wait up to shutdown_grace
  /// for running handlers, then release the leases of those still running (another worker
  /// takes them at once), request their stop, and join. A handler that ignores its stop token
  /// delays the return of stop() until it returns.
  void stop() {
    std::vector<Task> pending;
    {
      std::unique_lock lock(mutex_);
      if (!running_ || stopping_) return;
      stopping_ = true;  // no runner claims or starts a job from now on
      fetch_stop_.request_stop();
      slots_cv_.wait(lock, [&] { return !fetching_; });
      pending.assign(std::make_move_iterator(tasks_.begin() + static_cast<std::ptrdiff_t>(tasks_head_)),
                     std::make_move_iterator(tasks_.end()));
      tasks_.clear();
      tasks_head_ = 0;
    }
    for (auto& t : pending) {
      give_back(*t.flight);
      finish_flight(t.job.id);
    }

    // Handlers still running after the grace period: hand their jobs to another worker now.
    // Successes waiting for the committer are kept; it records them before it stops.
    std::vector<std::shared_ptr<Flight>> still;
    {
      std::unique_lock lock(mutex_);
      slots_cv_.wait_for(lock, opt_.shutdown_grace, [&] { return flights_.empty(); });
      for (auto& [id, f] : flights_) {
        if (f->succeeded) continue;
        f->released = true;
        f->stop.request_stop();
        still.push_back(f);
      }
    }
    for (auto& f : still) give_back(*f);

    {
      std::lock_guard lock(mutex_);
      shutting_down_ = true;
    }
    tasks_cv_.notify_all();
    for (auto& t : runners_) t.join();
    runners_.clear();
    {
      std::lock_guard lock(done_mutex_);
      committer_stop_ = true;
    }
    done_cv_.notify_all();
    if (committer_.joinable()) committer_.join();
    keeper_.request_stop();
    keeper_cv_.notify_all();
    if (keeper_.joinable()) keeper_.join();
    {
      std::lock_guard lock(watch_mutex_);
      cancel_watch_.cancel();  // waits for a callback in progress, which takes mutex_
    }
    if (opt_.registry) {
      try {
        backend_->unregister_worker(id_);
      } catch (const std::exception& e) {
        report(e);
      }
    }
    pruner_.request_stop();
    if (pruner_.joinable()) pruner_.join();

    std::lock_guard lock(mutex_);
    flights_.clear();
    retired_.clear();
    retired_spare_.clear();
    uncommitted_ = 0;
    committer_stop_ = false;
    running_ = false;
    stopping_ = false;
    shutting_down_ = false;
    stop_requested_ = false;
  }

  /// @brief Runs until SIGINT or SIGTERM (or request_stop()), then stops gracefully.
  /// Blocks both signals in the calling thread (and so in the worker's threads) meanwhile.
  void run_until_signal() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigset_t old;
    pthread_sigmask(SIG_BLOCK, &set, &old);
    start();
    while (!stop_requested_.load()) {
      timespec tick{0, 100'000'000};
      const int sig = sigtimedwait(&set, nullptr, &tick);
      if (sig == SIGINT || sig == SIGTERM) break;
    }
    stop();
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
  }

  /// @brief Makes run_until_signal() return (thread-safe).
  void request_stop() noexcept { stop_requested_ = true; }

  /// @brief Starts, runs until every queue of the worker has no queued or active job (delayed
  /// retries included) or `limit` passes, then stops. Returns true if the queues went idle.
  bool run_until_idle(Millis limit = Millis{60'000}) {
    start();
    const auto deadline = std::chrono::steady_clock::now() + limit;
    bool idle = false;
    while (!idle && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(Millis{5});
      try {
        idle = in_flight() == 0;
        for (const auto& q : opt_.queues) {
          if (!idle) break;
          const auto c = backend_->counts(q);
          idle = c.queued == 0 && c.active == 0;
        }
      } catch (const std::exception& e) {
        report(e);
      }
    }
    stop();
    return idle;
  }

  /// @brief The counters so far.
  [[nodiscard]] WorkerStats stats() const {
    WorkerStats s;
    s.processed = processed_.load();
    s.failed = failed_.load();
    s.retried = retried_.load();
    s.dead = dead_.load();
    s.lost_leases = lost_leases_.load();
    s.snoozed = snoozed_.load();
    s.in_flight = in_flight();
    std::lock_guard lock(mutex_);
    s.prefetch = window_ - static_cast<std::size_t>(opt_.concurrency);
    return s;
  }

  /// @brief The options in force (with defaults filled in).
  [[nodiscard]] const WorkerOptions& options() const noexcept { return opt_; }

  /// @brief Its id in the worker registry ("host:pid:n-random"), fixed for the object's life.
  [[nodiscard]] const std::string& id() const noexcept { return id_; }

 private:
  using Fn = std::function<nlohmann::json(const JobRecord&, JobContext&)>;
  struct Handler {
    Fn fn;
    HandlerOptions options;
  };
  // One claimed job, from claim until its outcome is recorded.
  struct Flight {
    JobId id = 0;
    std::string token;
    std::stop_source stop;
    std::optional<std::chrono::steady_clock::time_point> deadline;  // set when it starts
    std::atomic<bool> timed_out{false};
    std::atomic<bool> released{false};   // lease given back at shutdown: record nothing
    TimePoint started_at{};              // backend clock; written before `running` is set
    std::atomic<bool> running{false};    // its handler has started (the registry tells leased apart)
    std::atomic<bool> succeeded{false};  // handed to the committer: never give it back
    std::string queue, name;            // for JobEvents
    int attempt = 0;
    TimePoint run_at{};                 // for the started event's wait
    std::chrono::steady_clock::time_point started{};
    Millis ran{0};                      // handler run time, once it returned
  };
  struct Task {
    JobRecord job;
    std::shared_ptr<Flight> flight;
  };
  struct Done {
    Completion completion;
    std::shared_ptr<Flight> flight;
  };
  using Flights = std::map<JobId, std::shared_ptr<Flight>>;
  // What the committer has recorded, handed back to a runner to free. The runners allocated
  // it, and glibc frees another thread's memory under that thread's arena lock: the committer
  // freeing it contended with the runner's mallocs and caused most of W3's context switches.
  struct Retired {
    std::vector<Done> dones;
    std::vector<Completion> completions;
    std::vector<typename Flights::node_type> nodes;
    void clear() {
      dones.clear();
      completions.clear();
      nodes.clear();
    }
  };
  template <class T>
  static void append(std::vector<T>& to, std::vector<T>& from) {
    if (to.empty()) {
      to.swap(from);
    } else {
      std::move(from.begin(), from.end(), std::back_inserter(to));
      from.clear();
    }
  }

  void add_handler(std::string name, HandlerOptions options, Fn fn) {
    std::lock_guard lock(mutex_);
    if (running_) throw Error(ErrorCategory::conflict, "worker: register handlers before start()");
    handlers_[std::move(name)] = Handler{std::move(fn), std::move(options)};
  }

  std::uint64_t in_flight() const {
    std::lock_guard lock(mutex_);
    return flights_.size();
  }

  void report(const std::exception& e) noexcept {
    try {
      opt_.on_error(e);
    } catch (...) {
    }
  }

  // Sleeps for an error backoff, waking early on stop.
  static void pause_for(std::stop_token st, Millis d) {
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lock(m);
    cv.wait_for(lock, st, d, [] { return false; });
  }

  // Jobs leased and not yet run to an outcome; successes waiting for the committer do not
  // count, so runners never wait for a commit (the backlog bound below keeps them honest).
  std::size_t window_used_locked() const { return flights_.size() - uncommitted_.load(); }

  bool can_claim_locked() const {
    return !stopping_ && !fetching_ && window_used_locked() < window_ && uncommitted_.load() < max_uncommitted_;
  }

  void run_loop() {
    for (;;) {
      std::optional<Task> task;
      std::size_t free = 0;
      {
        std::unique_lock lock(mutex_);
        tasks_cv_.wait(lock, [&] { return shutting_down_ || (!stopping_ && (tasks_head_ < tasks_.size() || can_claim_locked())); });
        if (shutting_down_) return;
        // Claim when nothing is queued to run, or (with other runners to keep busy) when half
        // the window is free: batches stay large and no runner starves.
        const bool claim = can_claim_locked() &&
                           (tasks_head_ == tasks_.size() || (opt_.concurrency > 1 && window_ - window_used_locked() >= (window_ + 1) / 2));
        if (claim) {
          fetching_ = true;
          std::swap(retired_, retired_spare_);
          free = window_ - window_used_locked();
        } else {
          task.emplace(std::move(tasks_[tasks_head_++]));
          if (tasks_head_ == tasks_.size()) {
            tasks_.clear();  // keeps the capacity: no allocation per job
            tasks_head_ = 0;
          }
          if (task->job.timeout > Millis{0}) {
            // Capped: a job stored by other code may hold any timeout, and the sum must not wrap.
            task->flight->deadline = std::chrono::steady_clock::now() + std::min(task->job.timeout, max_duration);
            ++keeper_kicks_;
          }
        }
      }
      if (!task) {
        fetch(free);
        continue;
      }
      if (task->job.timeout > Millis{0}) keeper_cv_.notify_all();
      if (!execute(*task)) finish_flight(task->job.id);  // else the committer finishes it
    }
  }

  // An exponentially weighted mean (1/8 new): racing updates may lose one sample, which only
  // makes the mean a little older.
  static void observe(std::atomic<double>& mean, std::chrono::steady_clock::duration d) noexcept {
    const double ns = static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count());
    const double old = mean.load(std::memory_order_relaxed);
    mean.store(old == 0 ? ns : old + (ns - old) / 8, std::memory_order_relaxed);
  }

  // Adaptive prefetch: lease ahead what the runners will start during two claim round trips
  // (so a claim in flight never leaves a runner idle), at least 1, at most kMaxAdaptivePrefetch,
  // and never more than the runners start within a quarter of the lease (a leased job must not
  // wait so long that its lease runs out). Slow handlers therefore lease almost nothing ahead
  // (no hoarding: other workers get their share) and fast ones lease deep batches, which is
  // what round trips need.
  void resize_window_locked() {
    const double handler = handler_ns_.load(std::memory_order_relaxed);
    const double claim = claim_ns_.load(std::memory_order_relaxed);
    if (handler <= 0 || claim <= 0) return;  // not measured yet
    const double c = static_cast<double>(opt_.concurrency);
    const double per_job = std::max(handler, 1'000.0);  // 1 µs: a no-op handler's floor
    const double lease_ns = static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(opt_.lease).count());
    const double cap = std::min(static_cast<double>(kMaxAdaptivePrefetch), c * lease_ns / 4 / per_job);
    const double want = std::clamp(2 * c * claim / per_job, 1.0, std::max(1.0, cap));
    window_ = opt_.concurrency + static_cast<std::size_t>(want);
  }

  // One claim for `free` slots by the runner that set fetching_; waits for work when there is none.
  void fetch(std::size_t free) {
    retired_spare_.clear();  // keeps the vectors' capacity
    const auto st = fetch_stop_.get_token();
    try {
      const auto asked = std::chrono::steady_clock::now();
      auto jobs = backend_->claim({opt_.queues, free, opt_.lease});
      if (!jobs.empty()) observe(claim_ns_, std::chrono::steady_clock::now() - asked);
      fetch_backoff_ = Millis{50};
      if (jobs.empty()) {
        // A backend may wake us while nothing can be claimed (a rate limit or a full group
        // holds ready jobs back): after a few instant wake-ups, back off instead of spinning.
        if (quick_empty_ >= 3) {
          pause_for(st, std::min(opt_.poll_interval, Millis{5L << std::min(quick_empty_ - 3, 8)}));
        }
        const auto waited = std::chrono::steady_clock::now();
        backend_->wait_for_work(opt_.queues, opt_.poll_interval, st);
        quick_empty_ = std::chrono::steady_clock::now() - waited < Millis{2} ? quick_empty_ + 1 : 0;
      } else {
        quick_empty_ = 0;
        std::lock_guard lock(mutex_);
        tasks_.erase(tasks_.begin(), tasks_.begin() + static_cast<std::ptrdiff_t>(tasks_head_));
        tasks_head_ = 0;
        for (auto& j : jobs) {
          auto f = std::make_shared<Flight>();
          f->id = j.id;
          f->token = j.lease_token;
          if (observe_) {
            f->queue = j.queue;
            f->name = j.name;
            f->attempt = j.attempts;
            f->run_at = j.run_at;
          }
          flights_[j.id] = f;
          tasks_.push_back(Task{std::move(j), std::move(f)});
        }
        if (adaptive_) resize_window_locked();
      }
    } catch (const std::exception& e) {
      report(e);
      pause_for(st, fetch_backoff_);
      fetch_backoff_ = std::min(fetch_backoff_ * 2, Millis{5'000});
    }
    {
      std::lock_guard lock(mutex_);
      fetching_ = false;
    }
    // Idle runners take the new jobs (or the turn to wait for work); stop() waits for this.
    tasks_cv_.notify_all();
    slots_cv_.notify_all();
  }

  // Runs one attempt and records its outcome. Returns true when a success was handed to the
  // committer, which records it (batched) and then frees the slot.
  bool execute(Task& task) {
    const auto& job = task.job;
    auto& flight = *task.flight;
    // Captures two pointers: small enough for std::function's inline storage (no allocation).
    JobContext ctx(job, flight.stop.get_token(), [this, &task](int pct, const std::string& msg) {
      const auto& job = task.job;
      auto& flight = *task.flight;
      if (flight.released) return false;
      try {
        const bool ok = backend_->set_progress(job.id, flight.token, pct, msg);
        if (ok && observe_) {
          JobEvent e{JobEvent::Kind::progress, job.id, job.queue, job.name, job.attempts, Millis{0}, {},
                     std::clamp(pct, 0, 100), msg};
          publish(e);
        }
        return ok;
      } catch (const std::exception& e) {
        report(e);
        return false;
      }
    }, [this](const JobRecord& j) { return load_dependencies(*backend_, j); });

    flight.started = std::chrono::steady_clock::now();
    if (opt_.registry) flight.started_at = backend_->now();
    flight.running = true;
    emit(flight, JobEvent::Kind::started);
    nlohmann::json result;
    std::string error;
    bool ok = false;
    bool permanent = false;
    const Handler* handler = nullptr;
    try {
      auto it = handlers_.find(job.name);
      if (it == handlers_.end()) {
        throw detail::NoHandler("no handler registered for job '" + job.name +
                                "' on this worker (queue '" + job.queue + "')");
      }
      handler = &it->second;
      result = handler->fn(job, ctx);
      // Here, not in the committer: a result no backend can store fails only its own job.
      check_json(result, "the handler's result");
      ok = true;
    } catch (const Permanent& e) {
      error = e.what();
      permanent = true;
    } catch (const std::exception& e) {
      error = e.what();
    } catch (...) {
      error = "handler threw a non-standard exception";
    }
    const auto ran = std::chrono::steady_clock::now() - flight.started;
    flight.ran = std::chrono::duration_cast<Millis>(ran);
    if (adaptive_) observe(handler_ns_, ran);
    if (flight.timed_out) {
      ok = false;
      permanent = false;
      // What the handler said on its way out (an isolated child killed) is kept after it.
      error = "timed out after " + std::to_string(job.timeout.count()) + " ms" + (error.empty() ? "" : ": " + error);
    }
    if (flight.released) return false;  // shutdown gave the lease back; another worker runs it

    if (ok && ctx.snoozed()) {
      const auto delay = *ctx.snoozed();
      record([&] { return "the snooze of job " + std::to_string(job.id); }, [&] {
        if (backend_->snooze(job.id, flight.token, backend_->now() + delay)) {
          ++snoozed_;
          flight.ran = delay;  // the event's duration: how long it sleeps
          emit(flight, JobEvent::Kind::snoozed);
        } else {
          ++lost_leases_;
          emit(flight, JobEvent::Kind::lost_lease, "snooze refused: the lease was no longer held");
        }
      });
      return false;
    }
    if (ok) {
      flight.succeeded = true;
      ++uncommitted_;  // frees this job's window slot: the runner may claim again at once
      bool first = false;
      {
        std::lock_guard lock(done_mutex_);
        first = done_.empty();
        done_.push_back({Completion{job.id, flight.token, std::move(result)}, task.flight});
      }
      // Only the first success of a batch wakes the committer; the rest join it while it lingers.
      if (first) done_cv_.notify_one();
      return true;
    }
    ++failed_;
    Failure f{job.id, flight.token, error, std::nullopt};
    if (!permanent) {
      const Backoff& policy = handler && handler->options.backoff ? *handler->options.backoff : job.backoff;
      f.retry_at = backend_->now() + policy.delay(job.attempts);
    }
    emit(flight, JobEvent::Kind::failed, error);
    record_failure(flight, f);
    return false;
  }

  // Records a failed attempt (retrying transient errors) and counts and emits its outcome.
  void record_failure(const Flight& flight, const Failure& f) {
    record([&] { return "the failure of job " + std::to_string(f.id); }, [&] {
      switch (backend_->fail(f)) {
        case FailOutcome::retried: ++retried_; emit(flight, JobEvent::Kind::retried, f.error); break;
        case FailOutcome::dead: ++dead_; emit(flight, JobEvent::Kind::dead, f.error); break;
        case FailOutcome::rejected: ++lost_leases_; emit(flight, JobEvent::Kind::lost_lease, f.error); break;
      }
    });
  }

  // Group commit: whatever successes piled up while the previous batch was being written go
  // out in one complete_many call (one round trip / transaction). A batch smaller than
  // kCommitBatchTarget waits kCommitLinger first, so a fast backend is not woken per job (a
  // wake-up costs more than recording a job in memory); a completion is recorded at most that
  // much later, and handlers never wait for it.
  void commit_loop() {
    // Reused across batches (swapped with done_) so a batch allocates nothing of its own.
    std::vector<Done> batch;
    std::vector<Completion> cs;
    std::vector<const Flight*> fs;
    for (;;) {
      batch.clear();
      cs.clear();
      fs.clear();
      {
        std::unique_lock lock(done_mutex_);
        done_cv_.wait(lock, [&] { return !done_.empty() || committer_stop_; });
        if (done_.empty()) return;
        if (done_.size() < kCommitBatchTarget && !committer_stop_) {
          lock.unlock();
          std::this_thread::sleep_for(kCommitLinger);
          lock.lock();
        }
        batch.swap(done_);
      }
      for (auto& d : batch) {
        if (!d.flight->released) {
          cs.push_back(std::move(d.completion));
          fs.push_back(d.flight.get());
        }
      }
      if (!cs.empty()) {
        record([&] { return "the completion of " + std::to_string(cs.size()) + " job(s)"; }, [&] {
          std::vector<bool> ok;
          refused_.clear();
          try {
            ok = backend_->complete_many(cs);
          } catch (const InvalidArgument&) {
            ok = complete_each(cs, fs);
          }
          for (std::size_t i = 0, r = 0; i < ok.size(); ++i) {
            if (r < refused_.size() && refused_[r] == i) {
              ++r;  // failed by complete_each
              continue;
            }
            ++(ok[i] ? processed_ : lost_leases_);
            if (i < fs.size()) emit(*fs[i], ok[i] ? JobEvent::Kind::completed : JobEvent::Kind::lost_lease);
          }
        });
      }
      {
        std::lock_guard lock(mutex_);
        const auto n = batch.size();
        for (const auto& d : batch) retired_.nodes.push_back(flights_.extract(d.flight->id));
        append(retired_.dones, batch);
        append(retired_.completions, cs);
        uncommitted_ -= n;
      }
      slots_cv_.notify_all();
      tasks_cv_.notify_all();  // runners held back by the backlog bound
    }
  }

  // complete_many's fallback: each completion alone, so that one result the backend refuses
  // (though check_json passed it) does not drop the others, whose leases would expire and use
  // attempts. A refused one fails its job for good: the same result would be refused again.
  std::vector<bool> complete_each(const std::vector<Completion>& cs, const std::vector<const Flight*>& fs) {
    std::vector<bool> ok(cs.size(), false);
    for (std::size_t i = 0; i < cs.size(); ++i) {
      try {
        ok[i] = backend_->complete(cs[i].id, cs[i].lease_token, cs[i].result);
      } catch (const InvalidArgument& e) {
        const std::string error = std::string("the handler's result cannot be stored: ") + e.what();
        ++failed_;
        emit(*fs[i], JobEvent::Kind::failed, error);
        refused_.push_back(i);
        record_failure(*fs[i], Failure{cs[i].id, cs[i].lease_token, error, std::nullopt});
      }
    }
    return ok;
  }

  // Records an outcome, retrying transient backend errors for a while; if it never succeeds
  // the lease expires and the job is recovered (at-least-once), so nothing is lost.
  template <class D, class F>
  void record(D&& describe, F&& op) {
    Millis backoff{50};
    for (int tries = 0;; ++tries) {
      try {
        op();
        return;
      } catch (const Error& e) {
        report(e);
        if (!e.is_transient()) return;
        if (tries >= 8) {
          // Say what giving up means, not only why each try failed.
          report(ConnectionError("worker gave up recording " + describe() + " after " + std::to_string(tries + 1) +
                                 " tries; the lease will expire and the job will run again"));
          return;
        }
      } catch (const std::exception& e) {
        report(e);
        return;
      }
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, Millis{2'000});
    }
  }

  void emit(const Flight& f, JobEvent::Kind kind, const std::string& error = {}) noexcept {
    if (!observe_) return;
    try {
      const bool started = kind == JobEvent::Kind::started;
      JobEvent e{kind, f.id, f.queue, f.name, f.attempt, started ? Millis{0} : f.ran, error};
      if (started) e.waited = std::max(Millis{0}, std::chrono::duration_cast<Millis>(backend_->now() - f.run_at));
      publish(e);
    } catch (...) {
    }
  }

  // To on_event and the log; neither may stop the worker.
  void publish(const JobEvent& e) noexcept {
    if (opt_.on_event) {
      try {
        opt_.on_event(e);
      } catch (const std::exception& ex) {
        report(ex);
      } catch (...) {
      }
    }
    const auto level = log_level_of(e.kind);
    if (!opt_.log.enabled(level)) return;
    try {
      const auto text = describe(e);
      opt_.log.write({level, text, &e});
    } catch (...) {
    }
  }

  void give_back(Flight& f) {
    f.released = true;
    f.stop.request_stop();
    try {
      backend_->release(f.id, f.token);
    } catch (const std::exception& e) {
      report(e);  // the lease will expire instead
    }
  }

  void finish_flight(JobId id) {
    {
      std::lock_guard lock(mutex_);
      flights_.erase(id);
    }
    slots_cv_.notify_all();
    tasks_cv_.notify_all();  // a runner may be waiting for a free slot to claim
  }

  void keeper_loop(std::stop_token st) {
    using steady = std::chrono::steady_clock;
    auto next_beat = steady::now() + opt_.heartbeat_interval;
    // Periodic chores, each first right at start; an interval of 0 turns one off.
    struct Chore {
      Millis interval;
      void (Worker::*run)();
      steady::time_point next = steady::now();
    };
    std::array chores{Chore{opt_.maintenance_interval, &Worker::maintain},
                      Chore{opt_.schedule_interval, &Worker::fire_schedules},
                      Chore{opt_.registry ? opt_.heartbeat_interval : Millis{0}, &Worker::announce}};
    while (!st.stop_requested()) {
      const auto now = steady::now();
      std::vector<std::shared_ptr<Flight>> flights, cancelled;
      auto wake = next_beat;
      std::uint64_t kicks = 0;  // read with the flights so a kick after the scan still wakes us
      {
        std::lock_guard lock(mutex_);
        kicks = keeper_kicks_;
        for (JobId id : cancel_checks_) {
          if (auto it = flights_.find(id); it != flights_.end()) cancelled.push_back(it->second);
        }
        cancel_checks_.clear();
        for (auto& [id, f] : flights_) {
          flights.push_back(f);
          if (f->deadline) {
            if (*f->deadline <= now) {
              if (!f->timed_out.exchange(true)) f->stop.request_stop();
            } else {
              wake = std::min(wake, *f->deadline);
            }
          }
        }
      }
      for (auto& f : cancelled) renew(*f);  // the store confirms the cancel: its lease is gone
      if (now >= next_beat) {
        for (auto& f : flights) renew(*f);
        watch_cancels();  // again if it failed (the store was down): until then heartbeats catch cancels
        next_beat = steady::now() + opt_.heartbeat_interval;
        wake = std::min(wake, next_beat);
      }
      for (auto& chore : chores) {
        if (chore.interval <= Millis{0}) continue;
        if (now >= chore.next) {
          (this->*chore.run)();
          chore.next = steady::now() + chore.interval;
        }
        wake = std::min(wake, chore.next);
      }
      std::unique_lock lock(mutex_);
      keeper_cv_.wait_until(lock, st, wake, [&] { return keeper_kicks_ != kicks; });
    }
  }

  // Renews f's lease; a refusal (cancelled, or lost to another worker) stops its handler.
  void renew(Flight& f) {
    if (f.released) return;
    try {
      if (!backend_->extend_lease(f.id, f.token, opt_.lease)) f.stop.request_stop();
    } catch (const std::exception& e) {
      report(e);
    }
  }

  // WorkerOptions::instant_cancel: until it works, a failure is reported at each try.
  void watch_cancels() {
    if (!opt_.instant_cancel) return;
    std::lock_guard lock(watch_mutex_);
    if (cancel_watch_) return;
    try {
      cancel_watch_ = backend_->watch_cancels(opt_.queues, [this](const JobNotice& n) { heard_cancel(n); });
    } catch (const std::exception& e) {
      report(e);
    }
  }

  // On the backend's notice thread (or the canceller's): the keeper checks with the store.
  void heard_cancel(const JobNotice& n) {
    if (n.kind != JobNotice::Kind::cancelled) return;
    {
      std::lock_guard lock(mutex_);
      if (!flights_.contains(n.id)) return;
      cancel_checks_.push_back(n.id);
      ++keeper_kicks_;
    }
    keeper_cv_.notify_all();
  }

  void maintain() {
    try {
      backend_->recover_expired();
    } catch (const std::exception& e) {
      report(e);
    }
  }

  // The registry entry: what this worker runs and holds now. Read under the mutex, written
  // outside it (a slow store must not hold up the runners).
  void announce() {
    WorkerInfo w;
    w.id = id_;
    w.host = host_name();
    w.pid = static_cast<int>(::getpid());
    w.queues = opt_.queues;
    w.concurrency = opt_.concurrency;
    {
      std::lock_guard lock(mutex_);
      for (const auto& [id, f] : flights_) {
        if (f->running) {
          w.running.push_back({id, f->started_at});
        } else {
          w.leased.push_back(id);
        }
      }
      w.started_at = started_at_;
    }
    try {
      w.heartbeat_at = backend_->now();
      w.expires_at = w.heartbeat_at + std::max(opt_.lease, 3 * opt_.heartbeat_interval);
      backend_->register_worker(w);
    } catch (const std::exception& e) {
      report(e);
    }
  }

  static std::string host_name() {
    char buf[256] = {};
    if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown";
    return buf;
  }

  // Unique among the workers of a store: host and pid tell processes apart, the counter the
  // workers of one process, the random part a pid reused after a restart.
  static std::string make_worker_id() {
    static std::atomic<std::uint64_t> next{0};
    std::random_device rd;
    static constexpr char hex[] = "0123456789abcdef";
    std::string tag;
    for (int i = 0; i < 6; ++i) tag += hex[rd() % 16];
    std::string host = host_name();
    for (auto& c : host) {
      if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) c = '_';
    }
    return host.substr(0, 100) + ":" + std::to_string(::getpid()) + ":" + std::to_string(++next) + "-" + tag;
  }

  void fire_schedules() {
    try {
      run_due_schedules(*backend_);
    } catch (const std::exception& e) {
      report(e);
    }
  }

  // Its own thread: a prune of a large store can take seconds, and must not delay heartbeats.
  void prune_loop(std::stop_token st) {
    std::mutex m;
    std::condition_variable_any cv;
    while (!st.stop_requested()) {
      for (const auto& q : opt_.queues) {
        if (st.stop_requested()) return;
        try {
          backend_->prune(q, *opt_.retention);
        } catch (const std::exception& e) {
          report(e);
        }
      }
      std::unique_lock lock(m);
      cv.wait_for(lock, st, opt_.prune_interval, [] { return false; });
    }
  }

  B* backend_;
  WorkerOptions opt_;
  std::unordered_map<std::string, Handler> handlers_;  // read-only once running
  bool observe_ = false;  // events go somewhere: on_event or a log that takes at least errors

  mutable std::mutex mutex_;
  std::condition_variable_any slots_cv_;   // a flight finished
  std::condition_variable tasks_cv_;       // a task arrived, or shutdown
  std::condition_variable_any keeper_cv_;  // a timed job started
  std::uint64_t keeper_kicks_ = 0;         // bumped (under mutex_) to wake the keeper
  Flights flights_;
  std::vector<JobId> cancel_checks_;        // flights a cancel notice named, for the keeper
  std::mutex watch_mutex_;                  // guards cancel_watch_ (start, keeper, stop)
  Subscription cancel_watch_;               // instant_cancel
  Retired retired_;  // from the committer, to be freed by the next runner that claims
  std::vector<Task> tasks_;   // claimed, not started: a FIFO from tasks_head_
  std::size_t tasks_head_ = 0;
  std::size_t window_ = 0;                   // concurrency + prefetch (adaptive: resized per claim)
  std::size_t max_window_ = 0;               // the largest window_ can be
  bool adaptive_ = false;                    // prefetch < 0
  static constexpr std::size_t kMaxAdaptivePrefetch = 512;
  std::atomic<double> handler_ns_{0};        // mean handler time (adaptive)
  std::atomic<double> claim_ns_{0};          // mean claim round trip (adaptive)
  static constexpr std::size_t kCommitBatchTarget = 64;            // no linger from this size on
  static constexpr std::chrono::microseconds kCommitLinger{200};  // see commit_loop
  std::size_t max_uncommitted_ = 0;          // successes the committer may fall behind by
  std::atomic<std::size_t> uncommitted_{0};  // successes in flights_ handed to the committer
  bool fetching_ = false;                    // a runner is claiming or waiting for work
  bool running_ = false;
  std::string id_;          // in the worker registry
  TimePoint started_at_{};  // of the last start(), for the registry
  bool stopping_ = false;                    // stop() began: no more claims or starts
  bool shutting_down_ = false;
  std::atomic<bool> stop_requested_{false};

  std::mutex done_mutex_;  // guards done_ and committer_stop_; never held with mutex_
  std::condition_variable done_cv_;
  std::vector<Done> done_;
  bool committer_stop_ = false;

  // Only the runner that set fetching_ touches these.
  Retired retired_spare_;  // swapped with retired_ under mutex_, then freed outside it
  std::stop_source fetch_stop_;
  Millis fetch_backoff_{50};
  int quick_empty_ = 0;  // empty claims right after a wait that returned at once

  std::vector<std::thread> runners_;
  std::thread committer_;
  std::jthread keeper_;
  std::jthread pruner_;  // only with a retention and a prune interval

  std::atomic<std::uint64_t> processed_{0}, failed_{0}, retried_{0}, dead_{0}, lost_leases_{0}, snoozed_{0};
  std::vector<std::size_t> refused_;  // committer only: batch positions complete_each failed
};

}  // namespace jobq
