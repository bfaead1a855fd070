#pragma once

#include <memory>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "jobq/backend.hpp"
#include "jobq/error.hpp"

namespace jobq {

/// @brief A backend chosen at run time: owns any jobq::Backend behind a virtual interface and
/// is itself a Backend, so Queue, Worker, Metrics and the HTTP server take it like any other.
///
/// For tools that get the backend from a URL (the admin CLI, a dashboard). Programs that know
/// their backend at compile time should use it directly: every call here costs one virtual
/// dispatch, negligible next to a database round trip.
class AnyBackend {
 public:
  /// @brief Takes ownership of `backend`; `kind` names it in messages ("sqlite", "redis", ...).
  template <Backend B>
    requires(!std::is_same_v<B, AnyBackend>)
  explicit AnyBackend(std::unique_ptr<B> backend, std::string kind = "backend")
      : impl_(std::make_unique<Model<B>>(std::move(backend))), kind_(std::move(kind)) {
    if (!static_cast<Model<B>&>(*impl_).backend) throw InvalidArgument("AnyBackend: null backend");
  }

  AnyBackend(AnyBackend&&) noexcept = default;
  AnyBackend& operator=(AnyBackend&&) noexcept = default;

  /// @brief What kind of backend this is ("memory", "sqlite", "postgres", "redis", ...).
  [[nodiscard]] const std::string& kind() const noexcept { return kind_; }

  /// @brief The wrapped backend if it is a B, else nullptr (for backend-specific calls).
  template <Backend B>
  [[nodiscard]] B* target() noexcept {
    auto* m = dynamic_cast<Model<B>*>(impl_.get());
    return m ? m->backend.get() : nullptr;
  }

  /// @brief Whether the wrapped backend can list its queue names (see queues()).
  [[nodiscard]] bool can_list_queues() const noexcept { return impl_->can_list_queues(); }

  /// @brief Every queue name the store knows; throws jobq::Error (category backend) when the
  /// wrapped backend cannot list queues.
  std::vector<std::string> queues() { return impl_->queues(kind_); }

  /// @brief The backend's clock.
  [[nodiscard]] TimePoint now() const { return impl_->now(); }
  /// @brief See Backend::enqueue.
  EnqueueResult enqueue(const NewJob& job) { return impl_->enqueue(job); }
  /// @brief See Backend::enqueue_many.
  std::vector<EnqueueResult> enqueue_many(std::span<const NewJob> jobs) { return impl_->enqueue_many(jobs); }
  /// @brief See Backend::claim.
  std::vector<JobRecord> claim(const ClaimRequest& req) { return impl_->claim(req); }
  /// @brief See Backend::complete.
  bool complete(JobId id, const std::string& token, const nlohmann::json& result) {
    return impl_->complete(id, token, result);
  }
  /// @brief See Backend::complete_many.
  std::vector<bool> complete_many(std::span<const Completion> completions) {
    return impl_->complete_many(completions);
  }
  /// @brief See Backend::fail.
  FailOutcome fail(const Failure& f) { return impl_->fail(f); }
  /// @brief See Backend::extend_lease.
  bool extend_lease(JobId id, const std::string& token, Millis lease) {
    return impl_->extend_lease(id, token, lease);
  }
  /// @brief See Backend::release.
  bool release(JobId id, const std::string& token) { return impl_->release(id, token); }
  /// @brief See Backend::set_progress.
  bool set_progress(JobId id, const std::string& token, int percent, const std::string& message) {
    return impl_->set_progress(id, token, percent, message);
  }
  /// @brief See Backend::recover_expired.
  Recovered recover_expired() { return impl_->recover_expired(); }
  /// @brief See Backend::get.
  std::optional<JobRecord> get(JobId id) { return impl_->get(id); }
  /// @brief See Backend::cancel.
  bool cancel(JobId id) { return impl_->cancel(id); }
  /// @brief See Backend::redrive.
  bool redrive(JobId id) { return impl_->redrive(id); }
  /// @brief See Backend::pause.
  void pause(const std::string& queue) { impl_->pause(queue); }
  /// @brief See Backend::resume.
  void resume(const std::string& queue) { impl_->resume(queue); }
  /// @brief See Backend::is_paused.
  bool is_paused(const std::string& queue) { return impl_->is_paused(queue); }
  /// @brief See Backend::counts.
  Counts counts(const std::string& queue) { return impl_->counts(queue); }
  /// @brief See Backend::prune.
  std::size_t prune(const std::string& queue, const Retention& retention) {
    return impl_->prune(queue, retention);
  }
  /// @brief See Backend::list.
  std::vector<JobRecord> list(const std::string& queue, JobState state, Page page) {
    return impl_->list(queue, state, page);
  }
  /// @brief See Backend::wait_for_work.
  void wait_for_work(std::span<const std::string> queues, Millis timeout, std::stop_token stop) {
    impl_->wait_for_work(queues, timeout, std::move(stop));
  }
  /// @brief See Backend::set_queue_limits.
  void set_queue_limits(const std::string& queue, const QueueLimits& limits) {
    impl_->set_queue_limits(queue, limits);
  }
  /// @brief See Backend::queue_limits.
  QueueLimits queue_limits(const std::string& queue) { return impl_->queue_limits(queue); }
  /// @brief See Backend::put_schedule.
  void put_schedule(const StoredSchedule& s) { impl_->put_schedule(s); }
  /// @brief See Backend::remove_schedule.
  bool remove_schedule(const std::string& name) { return impl_->remove_schedule(name); }
  /// @brief See Backend::schedules.
  std::vector<StoredSchedule> schedules() { return impl_->schedules(); }
  /// @brief See Backend::fire_schedule.
  bool fire_schedule(const std::string& name, TimePoint expected, TimePoint next, const std::optional<NewJob>& job) {
    return impl_->fire_schedule(name, expected, next, job);
  }
  /// @brief See Backend::subscribe.
  Subscription subscribe(std::span<const std::string> queues, NoticeFn fn) {
    return impl_->subscribe(queues, std::move(fn));
  }

 private:
  struct Concept {
    virtual ~Concept() = default;
    virtual bool can_list_queues() const noexcept = 0;
    virtual std::vector<std::string> queues(const std::string& kind) = 0;
    virtual TimePoint now() const = 0;
    virtual EnqueueResult enqueue(const NewJob& job) = 0;
    virtual std::vector<EnqueueResult> enqueue_many(std::span<const NewJob> jobs) = 0;
    virtual std::vector<JobRecord> claim(const ClaimRequest& req) = 0;
    virtual bool complete(JobId id, const std::string& token, const nlohmann::json& result) = 0;
    virtual std::vector<bool> complete_many(std::span<const Completion> completions) = 0;
    virtual FailOutcome fail(const Failure& f) = 0;
    virtual bool extend_lease(JobId id, const std::string& token, Millis lease) = 0;
    virtual bool release(JobId id, const std::string& token) = 0;
    virtual bool set_progress(JobId id, const std::string& token, int percent, const std::string& message) = 0;
    virtual Recovered recover_expired() = 0;
    virtual std::optional<JobRecord> get(JobId id) = 0;
    virtual bool cancel(JobId id) = 0;
    virtual bool redrive(JobId id) = 0;
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
    virtual Subscription subscribe(std::span<const std::string> queues, NoticeFn fn) = 0;
  };

  template <Backend B>
  struct Model final : Concept {
    explicit Model(std::unique_ptr<B> b) : backend(std::move(b)) {}

    // queues() is not (yet) part of the Backend concept: forward it only where it exists.
    static constexpr bool listable = requires(B& b) {
      { b.queues() } -> std::convertible_to<std::vector<std::string>>;
    };
    bool can_list_queues() const noexcept override { return listable; }
    std::vector<std::string> queues(const std::string& kind) override {
      if constexpr (listable) {
        return backend->queues();
      } else {
        throw Error(ErrorCategory::backend, "listing queues is not supported by the " + kind +
                                                " backend yet; name the queues explicitly");
      }
    }

    TimePoint now() const override { return backend->now(); }
    EnqueueResult enqueue(const NewJob& job) override { return backend->enqueue(job); }
    std::vector<EnqueueResult> enqueue_many(std::span<const NewJob> jobs) override {
      return backend->enqueue_many(jobs);
    }
    std::vector<JobRecord> claim(const ClaimRequest& req) override { return backend->claim(req); }
    bool complete(JobId id, const std::string& token, const nlohmann::json& result) override {
      return backend->complete(id, token, result);
    }
    std::vector<bool> complete_many(std::span<const Completion> completions) override {
      return backend->complete_many(completions);
    }
    FailOutcome fail(const Failure& f) override { return backend->fail(f); }
    bool extend_lease(JobId id, const std::string& token, Millis lease) override {
      return backend->extend_lease(id, token, lease);
    }
    bool release(JobId id, const std::string& token) override { return backend->release(id, token); }
    bool set_progress(JobId id, const std::string& token, int percent, const std::string& message) override {
      return backend->set_progress(id, token, percent, message);
    }
    Recovered recover_expired() override { return backend->recover_expired(); }
    std::optional<JobRecord> get(JobId id) override { return backend->get(id); }
    bool cancel(JobId id) override { return backend->cancel(id); }
    bool redrive(JobId id) override { return backend->redrive(id); }
    void pause(const std::string& queue) override { backend->pause(queue); }
    void resume(const std::string& queue) override { backend->resume(queue); }
    bool is_paused(const std::string& queue) override { return backend->is_paused(queue); }
    Counts counts(const std::string& queue) override { return backend->counts(queue); }
    std::size_t prune(const std::string& queue, const Retention& retention) override {
      return backend->prune(queue, retention);
    }
    std::vector<JobRecord> list(const std::string& queue, JobState state, Page page) override {
      return backend->list(queue, state, page);
    }
    void wait_for_work(std::span<const std::string> queues, Millis timeout, std::stop_token stop) override {
      backend->wait_for_work(queues, timeout, std::move(stop));
    }
    void set_queue_limits(const std::string& queue, const QueueLimits& limits) override {
      backend->set_queue_limits(queue, limits);
    }
    QueueLimits queue_limits(const std::string& queue) override { return backend->queue_limits(queue); }
    void put_schedule(const StoredSchedule& s) override { backend->put_schedule(s); }
    bool remove_schedule(const std::string& name) override { return backend->remove_schedule(name); }
    std::vector<StoredSchedule> schedules() override { return backend->schedules(); }
    bool fire_schedule(const std::string& name, TimePoint expected, TimePoint next,
                       const std::optional<NewJob>& job) override {
      return backend->fire_schedule(name, expected, next, job);
    }
    Subscription subscribe(std::span<const std::string> queues, NoticeFn fn) override {
      return backend->subscribe(queues, std::move(fn));
    }

    std::unique_ptr<B> backend;
  };

  std::unique_ptr<Concept> impl_;
  std::string kind_;
};

static_assert(Backend<AnyBackend>);

}  // namespace jobq
