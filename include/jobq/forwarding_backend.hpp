#pragma once

/// @file
/// The Backend operations forwarded once. ForwardingBackend<Derived> implements each of them
/// by calling the backend Derived wraps, so a wrapper (AnyBackend, a decorator, a test double)
/// restates none; detail::BackendInterface is their virtual form, what AnyBackend erases a
/// backend to. An operation added to the concept goes into both lists below, side by side;
/// static_assert(Backend<AnyBackend>) and AnyBackend's model (abstract when the forwarder is
/// missing) catch one left out.
///
/// Plain member functions rather than an X-macro list: each forwarder reads as the call it
/// makes, and compiler errors and debuggers show it as itself.

#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "jobq/backend.hpp"

namespace jobq {

namespace detail {

/// @brief The Backend operations as pure virtual functions (AnyBackend's erased backend).
class BackendInterface {
 public:
  virtual ~BackendInterface() = default;
  virtual TimePoint now() const = 0;
  virtual EnqueueResult enqueue(const NewJob& job) = 0;
  virtual std::vector<EnqueueResult> enqueue_many(std::span<const NewJob> jobs) = 0;
  virtual std::vector<JobRecord> claim(const ClaimRequest& req) = 0;
  virtual bool complete(JobId id, const std::string& token, const nlohmann::json& result) = 0;
  virtual std::vector<bool> complete_many(std::span<const Completion> completions) = 0;
  virtual FailOutcome fail(const Failure& f) = 0;
  virtual bool extend_lease(JobId id, const std::string& token, Millis lease) = 0;
  virtual bool release(JobId id, const std::string& token) = 0;
  virtual bool snooze(JobId id, const std::string& token, TimePoint run_at) = 0;
  virtual bool set_progress(JobId id, const std::string& token, int percent, const std::string& message) = 0;
  virtual Recovered recover_expired() = 0;
  virtual std::optional<JobRecord> get(JobId id) = 0;
  virtual bool cancel(JobId id) = 0;
  virtual bool redrive(JobId id) = 0;
  virtual std::vector<bool> cancel_many(std::span<const JobId> ids) = 0;
  virtual std::vector<bool> redrive_many(std::span<const JobId> ids) = 0;
  virtual void pause(const std::string& queue) = 0;
  virtual void resume(const std::string& queue) = 0;
  virtual bool is_paused(const std::string& queue) = 0;
  virtual Counts counts(const std::string& queue) = 0;
  virtual std::size_t prune(const std::string& queue, const Retention& retention) = 0;
  virtual std::vector<JobRecord> list(const std::string& queue, JobState state, Page page) = 0;
  virtual void wait_for_work(std::span<const std::string> queues, Millis timeout, std::stop_token stop) = 0;
  virtual void set_queue_limits(const std::string& queue, const QueueLimits& limits) = 0;
  virtual QueueLimits queue_limits(const std::string& queue) = 0;
  virtual void put_schedule(const StoredSchedule& s) = 0;
  virtual bool remove_schedule(const std::string& name) = 0;
  virtual std::vector<StoredSchedule> schedules() = 0;
  virtual bool fire_schedule(const std::string& name, TimePoint expected, TimePoint next,
                             const std::optional<NewJob>& job) = 0;
  virtual void register_worker(const WorkerInfo& w) = 0;
  virtual bool unregister_worker(const std::string& id) = 0;
  virtual std::vector<WorkerInfo> workers() = 0;
  virtual Subscription subscribe(std::span<const std::string> queues, NoticeFn fn) = 0;
  virtual Subscription watch_cancels(std::span<const std::string> queues, NoticeFn fn) = 0;
  virtual std::vector<std::optional<JobRecord>> get_many(std::span<const JobId> ids) = 0;
  virtual bool run_now(JobId id) = 0;
  virtual bool remove(JobId id) = 0;
  virtual std::optional<JobId> find_unique(const std::string& queue, const std::string& unique_key) = 0;
  virtual std::vector<JobId> enqueue_flow(const NewFlow& flow) = 0;
  virtual std::size_t cancel_flow(JobId id) = 0;
  virtual std::optional<FlowRecord> flow(JobId id) = 0;

  // Not (yet) Backend operations: what AnyBackend::queues() needs from the erased backend.
  virtual bool can_list_queues() const noexcept = 0;
  virtual std::vector<std::string> queues(const std::string& kind) = 0;
};

/// @brief ForwardingBackend's default base: no virtual functions.
struct NoInterface {};

}  // namespace detail

/// @brief Every Backend operation, forwarded to the backend that Derived wraps (CRTP).
///
/// Derived provides `wrapped() const`, returning a reference to that backend (a wrapper is a
/// handle: its const now() reads the wrapped clock). To intercept every call it defines
/// `before_call(const char* op)`, run with the operation's name before each one except now()
/// (the clock is local, not a call to the store); to change one operation it defines that
/// operation itself and calls ForwardingBackend's to forward. Derived befriends
/// ForwardingBackend when these are private. With Interface = detail::BackendInterface each
/// forwarder overrides the virtual operation of the same name.
template <class Derived, class Interface = detail::NoInterface>
class ForwardingBackend : public Interface {
 public:
  /// @brief See Backend::now (never intercepted).
  TimePoint now() const { return self().wrapped().now(); }
  /// @brief See Backend::enqueue.
  EnqueueResult enqueue(const NewJob& job) { return forward("enqueue").enqueue(job); }
  /// @brief See Backend::enqueue_many.
  std::vector<EnqueueResult> enqueue_many(std::span<const NewJob> jobs) {
    return forward("enqueue_many").enqueue_many(jobs);
  }
  /// @brief See Backend::claim.
  std::vector<JobRecord> claim(const ClaimRequest& req) { return forward("claim").claim(req); }
  /// @brief See Backend::complete.
  bool complete(JobId id, const std::string& token, const nlohmann::json& result) {
    return forward("complete").complete(id, token, result);
  }
  /// @brief See Backend::complete_many.
  std::vector<bool> complete_many(std::span<const Completion> completions) {
    return forward("complete_many").complete_many(completions);
  }
  /// @brief See Backend::fail.
  FailOutcome fail(const Failure& f) { return forward("fail").fail(f); }
  /// @brief See Backend::extend_lease.
  bool extend_lease(JobId id, const std::string& token, Millis lease) {
    return forward("extend_lease").extend_lease(id, token, lease);
  }
  /// @brief See Backend::release.
  bool release(JobId id, const std::string& token) { return forward("release").release(id, token); }
  /// @brief See Backend::snooze.
  bool snooze(JobId id, const std::string& token, TimePoint run_at) {
    return forward("snooze").snooze(id, token, run_at);
  }
  /// @brief See Backend::set_progress.
  bool set_progress(JobId id, const std::string& token, int percent, const std::string& message) {
    return forward("set_progress").set_progress(id, token, percent, message);
  }
  /// @brief See Backend::recover_expired.
  Recovered recover_expired() { return forward("recover_expired").recover_expired(); }
  /// @brief See Backend::get.
  std::optional<JobRecord> get(JobId id) { return forward("get").get(id); }
  /// @brief See Backend::cancel.
  bool cancel(JobId id) { return forward("cancel").cancel(id); }
  /// @brief See Backend::redrive.
  bool redrive(JobId id) { return forward("redrive").redrive(id); }
  /// @brief See Backend::cancel_many.
  std::vector<bool> cancel_many(std::span<const JobId> ids) { return forward("cancel_many").cancel_many(ids); }
  /// @brief See Backend::redrive_many.
  std::vector<bool> redrive_many(std::span<const JobId> ids) { return forward("redrive_many").redrive_many(ids); }
  /// @brief See Backend::pause.
  void pause(const std::string& queue) { forward("pause").pause(queue); }
  /// @brief See Backend::resume.
  void resume(const std::string& queue) { forward("resume").resume(queue); }
  /// @brief See Backend::is_paused.
  bool is_paused(const std::string& queue) { return forward("is_paused").is_paused(queue); }
  /// @brief See Backend::counts.
  Counts counts(const std::string& queue) { return forward("counts").counts(queue); }
  /// @brief See Backend::prune.
  std::size_t prune(const std::string& queue, const Retention& retention) {
    return forward("prune").prune(queue, retention);
  }
  /// @brief See Backend::list.
  std::vector<JobRecord> list(const std::string& queue, JobState state, Page page) {
    return forward("list").list(queue, state, page);
  }
  /// @brief See Backend::wait_for_work.
  void wait_for_work(std::span<const std::string> queues, Millis timeout, std::stop_token stop) {
    forward("wait_for_work").wait_for_work(queues, timeout, std::move(stop));
  }
  /// @brief See Backend::set_queue_limits.
  void set_queue_limits(const std::string& queue, const QueueLimits& limits) {
    forward("set_queue_limits").set_queue_limits(queue, limits);
  }
  /// @brief See Backend::queue_limits.
  QueueLimits queue_limits(const std::string& queue) { return forward("queue_limits").queue_limits(queue); }
  /// @brief See Backend::put_schedule.
  void put_schedule(const StoredSchedule& s) { forward("put_schedule").put_schedule(s); }
  /// @brief See Backend::remove_schedule.
  bool remove_schedule(const std::string& name) { return forward("remove_schedule").remove_schedule(name); }
  /// @brief See Backend::schedules.
  std::vector<StoredSchedule> schedules() { return forward("schedules").schedules(); }
  /// @brief See Backend::fire_schedule.
  bool fire_schedule(const std::string& name, TimePoint expected, TimePoint next, const std::optional<NewJob>& job) {
    return forward("fire_schedule").fire_schedule(name, expected, next, job);
  }
  /// @brief See Backend::register_worker.
  void register_worker(const WorkerInfo& w) { forward("register_worker").register_worker(w); }
  /// @brief See Backend::unregister_worker.
  bool unregister_worker(const std::string& id) { return forward("unregister_worker").unregister_worker(id); }
  /// @brief See Backend::workers.
  std::vector<WorkerInfo> workers() { return forward("workers").workers(); }
  /// @brief See Backend::subscribe.
  Subscription subscribe(std::span<const std::string> queues, NoticeFn fn) {
    return forward("subscribe").subscribe(queues, std::move(fn));
  }
  /// @brief See Backend::watch_cancels.
  Subscription watch_cancels(std::span<const std::string> queues, NoticeFn fn) {
    return forward("watch_cancels").watch_cancels(queues, std::move(fn));
  }
  /// @brief See Backend::get_many.
  std::vector<std::optional<JobRecord>> get_many(std::span<const JobId> ids) {
    return forward("get_many").get_many(ids);
  }
  /// @brief See Backend::run_now.
  bool run_now(JobId id) { return forward("run_now").run_now(id); }
  /// @brief See Backend::remove.
  bool remove(JobId id) { return forward("remove").remove(id); }
  /// @brief See Backend::find_unique.
  std::optional<JobId> find_unique(const std::string& queue, const std::string& unique_key) {
    return forward("find_unique").find_unique(queue, unique_key);
  }
  /// @brief See Backend::enqueue_flow.
  std::vector<JobId> enqueue_flow(const NewFlow& flow) { return forward("enqueue_flow").enqueue_flow(flow); }
  /// @brief See Backend::cancel_flow.
  std::size_t cancel_flow(JobId id) { return forward("cancel_flow").cancel_flow(id); }
  /// @brief See Backend::flow.
  std::optional<FlowRecord> flow(JobId id) { return forward("flow").flow(id); }

 protected:
  /// @brief The default hook: nothing to do before a call.
  void before_call(const char* /*op*/) {}

  /// @brief Runs Derived's before_call(op) and returns the wrapped backend to call `op` on.
  decltype(auto) forward(const char* op) {
    self().before_call(op);
    return self().wrapped();
  }

 private:
  Derived& self() { return static_cast<Derived&>(*this); }
  const Derived& self() const { return static_cast<const Derived&>(*this); }
};

}  // namespace jobq
