#pragma once

/// @file
/// FaultBackend<B>: a view of a shared backend whose connection can be cut. While it is down
/// every call throws jobq::ConnectionError, exactly what a worker sees when its server is
/// unreachable; crash() cuts it for good, which is how the in-process (memory) chaos run
/// simulates a worker process dying: its leases are never renewed or finished, so they expire.

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <utility>
#include <vector>

#include <jobq/backend.hpp>
#include <jobq/error.hpp>

namespace jobq_chaos {

/// @brief Forwards every Backend call to a shared backend unless the link is down.
template <jobq::Backend B>
class FaultBackend {
 public:
  /// @brief A view of `backend` (which must outlive it), up.
  explicit FaultBackend(B& backend, std::string name = "backend") : backend_(&backend), name_(std::move(name)) {}

  /// @brief Cuts (true) or restores (false) the link.
  void set_down(bool down) noexcept { down_ = down; }
  /// @brief Cuts the link for good: the simulated process is dead.
  void crash() noexcept {
    crashed_ = true;
    down_ = true;
  }
  /// @brief Whether calls fail now.
  [[nodiscard]] bool down() const noexcept { return down_; }
  /// @brief Told about every claim: before it is sent (the request) and after it returns (the
  /// jobs, or nullptr when it threw). The chaos ledger records them; set before any claim.
  struct ClaimObserver {
    std::function<void(const jobq::ClaimRequest&)> sending;    ///< before the claim goes out
    std::function<void(const std::vector<jobq::JobRecord>*)> received;  ///< its jobs; nullptr: it threw
  };
  /// @brief Sets the claim observer (before the view is used).
  void observe_claims(ClaimObserver o) { claims_ = std::move(o); }

  /// @brief Calls refused so far.
  [[nodiscard]] std::uint64_t refused() const noexcept { return refused_; }

  /// @brief The shared backend's clock (a clock never fails).
  [[nodiscard]] jobq::TimePoint now() const { return backend_->now(); }

  /// @brief See jobq::Backend: each call below throws ConnectionError while the link is down.
  jobq::EnqueueResult enqueue(const jobq::NewJob& j) { return guard("enqueue"), backend_->enqueue(j); }
  std::vector<jobq::EnqueueResult> enqueue_many(std::span<const jobq::NewJob> j) {
    return guard("enqueue_many"), backend_->enqueue_many(j);
  }
  std::vector<jobq::JobRecord> claim(const jobq::ClaimRequest& r) {
    if (!claims_.sending) return guard("claim"), backend_->claim(r);
    claims_.sending(r);
    std::vector<jobq::JobRecord> jobs;
    try {
      guard("claim");
      jobs = backend_->claim(r);
    } catch (...) {
      claims_.received(nullptr);
      throw;
    }
    claims_.received(&jobs);
    return jobs;
  }
  bool complete(jobq::JobId id, const std::string& token, const nlohmann::json& result) {
    return guard("complete"), backend_->complete(id, token, result);
  }
  std::vector<bool> complete_many(std::span<const jobq::Completion> c) {
    return guard("complete_many"), backend_->complete_many(c);
  }
  jobq::FailOutcome fail(const jobq::Failure& f) { return guard("fail"), backend_->fail(f); }
  bool extend_lease(jobq::JobId id, const std::string& token, jobq::Millis lease) {
    return guard("extend_lease"), backend_->extend_lease(id, token, lease);
  }
  bool release(jobq::JobId id, const std::string& token) { return guard("release"), backend_->release(id, token); }
  bool set_progress(jobq::JobId id, const std::string& token, int percent, const std::string& message) {
    return guard("set_progress"), backend_->set_progress(id, token, percent, message);
  }
  jobq::Recovered recover_expired() { return guard("recover_expired"), backend_->recover_expired(); }
  std::optional<jobq::JobRecord> get(jobq::JobId id) { return guard("get"), backend_->get(id); }
  bool cancel(jobq::JobId id) { return guard("cancel"), backend_->cancel(id); }
  bool redrive(jobq::JobId id) { return guard("redrive"), backend_->redrive(id); }
  void pause(const std::string& q) { guard("pause"), backend_->pause(q); }
  void resume(const std::string& q) { guard("resume"), backend_->resume(q); }
  bool is_paused(const std::string& q) { return guard("is_paused"), backend_->is_paused(q); }
  jobq::Counts counts(const std::string& q) { return guard("counts"), backend_->counts(q); }
  std::size_t prune(const std::string& q, const jobq::Retention& r) { return guard("prune"), backend_->prune(q, r); }
  std::vector<jobq::JobRecord> list(const std::string& q, jobq::JobState s, jobq::Page p) {
    return guard("list"), backend_->list(q, s, p);
  }
  void wait_for_work(std::span<const std::string> queues, jobq::Millis timeout, std::stop_token stop) {
    guard("wait_for_work"), backend_->wait_for_work(queues, timeout, std::move(stop));
  }

  // Newer operations, forwarded only where B has them, so the view follows the Backend concept
  // as it grows without naming types an older core lacks.
#define JOBQ_CHAOS_FORWARD(op)                                                     \
  template <class... A, class BB = B>                                              \
  auto op(A&&... a)->decltype(std::declval<BB&>().op(std::forward<A>(a)...)) {     \
    guard(#op);                                                                    \
    return backend_->op(std::forward<A>(a)...);                                    \
  }
  JOBQ_CHAOS_FORWARD(queues)
  JOBQ_CHAOS_FORWARD(set_queue_limits)
  JOBQ_CHAOS_FORWARD(queue_limits)
  JOBQ_CHAOS_FORWARD(put_schedule)
  JOBQ_CHAOS_FORWARD(remove_schedule)
  JOBQ_CHAOS_FORWARD(schedules)
  JOBQ_CHAOS_FORWARD(fire_schedule)
  JOBQ_CHAOS_FORWARD(subscribe)
#undef JOBQ_CHAOS_FORWARD

 private:
  void guard(const char* op) {
    if (!down_) return;
    ++refused_;
    throw jobq::ConnectionError(name_ + ": " + op + ": connection refused (" +
                                (crashed_ ? "simulated crash" : "simulated outage") + ")");
  }

  B* backend_;
  std::string name_;
  std::atomic<bool> down_{false};
  std::atomic<bool> crashed_{false};
  std::atomic<std::uint64_t> refused_{0};
  ClaimObserver claims_;
};

}  // namespace jobq_chaos
