#pragma once

/// @file
/// FaultBackend<B>: a view of a shared backend whose connection can be cut. While it is down
/// every call throws jobq::ConnectionError, exactly what a worker sees when its server is
/// unreachable; crash() cuts it for good, which is how the in-process (memory) chaos run
/// simulates a worker process dying: its leases are never renewed or finished, so they expire.

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <jobq/backend.hpp>
#include <jobq/error.hpp>
#include <jobq/forwarding_backend.hpp>

namespace jobq_chaos {

/// @brief Forwards every Backend call to a shared backend unless the link is down.
template <jobq::Backend B>
class FaultBackend : public jobq::ForwardingBackend<FaultBackend<B>> {
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

  /// @brief See jobq::Backend::claim; the observer sees it even when the link is down.
  std::vector<jobq::JobRecord> claim(const jobq::ClaimRequest& r) {
    if (!claims_.sending) return Forwarding::claim(r);
    claims_.sending(r);
    std::vector<jobq::JobRecord> jobs;
    try {
      jobs = Forwarding::claim(r);
    } catch (...) {
      claims_.received(nullptr);
      throw;
    }
    claims_.received(&jobs);
    return jobs;
  }

  /// @brief The shared backend's queue names, where B can list them.
  auto queues()
    requires requires(B& b) { b.queues(); }
  {
    return this->forward("queues").queues();
  }

 private:
  using Forwarding = jobq::ForwardingBackend<FaultBackend>;
  friend Forwarding;
  B& wrapped() const { return *backend_; }

  // Every call but now() (a clock never fails) throws while the link is down.
  void before_call(const char* op) {
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
