#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "jobq/error.hpp"
#include "jobq/job.hpp"

namespace jobq {

/// @brief A state change a backend publishes to subscribers in any process
/// (Backend::subscribe): what an API process listens to for job outcomes.
struct JobNotice {
  /// @brief completed: success recorded; failed: an attempt failed and the job will be retried;
  /// dead: out of attempts or permanent failure; progress: the handler reported progress;
  /// cancelled: a queued job was cancelled.
  enum class Kind { completed, failed, dead, progress, cancelled };
  Kind kind = Kind::completed;  ///< what happened
  JobId id = 0;                 ///< the job
  std::string queue{};          ///< its queue
  int attempt = 0;              ///< the job's attempts so far (for cancelled: before it was cancelled)
  int progress = 0;             ///< progress percent (progress notices)
  std::string message{};        ///< error (failed/dead) or progress message
  friend bool operator==(const JobNotice&, const JobNotice&) = default;
};

/// @brief The wire name of a notice kind ("completed", ...).
constexpr std::string_view to_string(JobNotice::Kind k) noexcept {
  switch (k) {
    case JobNotice::Kind::completed: return "completed";
    case JobNotice::Kind::failed: return "failed";
    case JobNotice::Kind::dead: return "dead";
    case JobNotice::Kind::progress: return "progress";
    case JobNotice::Kind::cancelled: return "cancelled";
  }
  return "unknown";
}

/// @brief A notice as JSON: {"kind","id","queue","attempt","progress","message"}; the format
/// PostgreSQL NOTIFY and Redis PUBLISH carry between processes.
inline nlohmann::json to_json(const JobNotice& n) {
  return {{"kind", to_string(n.kind)}, {"id", n.id},           {"queue", n.queue},
          {"attempt", n.attempt},      {"progress", n.progress}, {"message", n.message}};
}

/// @brief Inverse of to_json(JobNotice); throws InvalidArgument on anything else.
inline JobNotice job_notice_from_json(const nlohmann::json& j) {
  try {
    JobNotice n;
    const auto kind = j.at("kind").get<std::string>();
    bool known = false;
    for (auto k : {JobNotice::Kind::completed, JobNotice::Kind::failed, JobNotice::Kind::dead,
                   JobNotice::Kind::progress, JobNotice::Kind::cancelled}) {
      if (to_string(k) == kind) {
        n.kind = k;
        known = true;
      }
    }
    if (!known) throw InvalidArgument("unknown notice kind '" + kind + "'");
    n.id = json_integer<JobId>(j.at("id"), "notice id");
    n.queue = j.at("queue").get<std::string>();
    n.attempt = json_integer_or<int>(j, "attempt", 0);
    n.progress = json_integer_or<int>(j, "progress", 0);
    n.message = j.value("message", std::string{});
    return n;
  } catch (const nlohmann::json::exception& e) {
    throw InvalidArgument(std::string("malformed job notice: ") + e.what());
  }
}

/// @brief Called for each notice; must be thread-safe and quick (it runs on a backend thread or
/// on the thread that made the change).
using NoticeFn = std::function<void(const JobNotice&)>;

/// @brief Keeps a Backend::subscribe callback registered; destroying (or cancel()) unregisters
/// it, and once that returns the callback is never called again. Do not destroy a subscription
/// from inside its own callback.
class Subscription {
 public:
  /// @brief An empty subscription.
  Subscription() = default;
  /// @brief Owns `cancel`, called once on destruction or cancel().
  explicit Subscription(std::function<void()> cancel) : cancel_(std::move(cancel)) {}
  Subscription(Subscription&& o) noexcept : cancel_(std::exchange(o.cancel_, nullptr)) {}
  Subscription& operator=(Subscription&& o) noexcept {
    if (this != &o) {
      cancel();
      cancel_ = std::exchange(o.cancel_, nullptr);
    }
    return *this;
  }
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;
  ~Subscription() { cancel(); }

  /// @brief Unregisters now (idempotent).
  void cancel() noexcept {
    if (auto c = std::exchange(cancel_, nullptr)) {
      try {
        c();
      } catch (...) {
      }
    }
  }

  /// @brief Whether it is still registered.
  explicit operator bool() const noexcept { return static_cast<bool>(cancel_); }

 private:
  std::function<void()> cancel_;
};

/// @brief The in-process fan-out every backend uses for its local subscribers: the memory and
/// SQLite backends publish into it directly, PostgreSQL and Redis from their listener thread.
class NoticeHub {
 public:
  /// @brief Registers fn for notices of `queues` (all queues when empty).
  Subscription subscribe(std::span<const std::string> queues, NoticeFn fn) {
    for (const auto& q : queues) validate_queue_name(q);
    if (!fn) throw InvalidArgument("subscribe: the callback is empty");
    auto l = std::make_shared<Listener>();
    l->queues.insert(queues.begin(), queues.end());
    l->fn = std::move(fn);
    std::uint64_t id = 0;
    {
      std::lock_guard lock(mutex_);
      id = next_id_++;
      listeners_.emplace(id, l);
    }
    return Subscription([this, id, l] {
      {
        std::lock_guard lock(mutex_);
        listeners_.erase(id);
      }
      std::lock_guard call(l->call);  // waits for a call in progress
      l->fn = nullptr;
    });
  }

  /// @brief Whether anyone listens (lets publishers skip building notices).
  [[nodiscard]] bool empty() const {
    std::lock_guard lock(mutex_);
    return listeners_.empty();
  }

  /// @brief Delivers notices to the listeners of their queues; a callback's exception is
  /// swallowed (a subscriber cannot break the publisher). Call without backend locks held.
  void publish(std::span<const JobNotice> notices) const {
    if (notices.empty()) return;
    std::vector<std::shared_ptr<Listener>> ls;
    {
      std::lock_guard lock(mutex_);
      for (const auto& [id, l] : listeners_) ls.push_back(l);
    }
    for (const auto& l : ls) {
      std::lock_guard call(l->call);
      if (!l->fn) continue;
      for (const auto& n : notices) {
        if (!l->queues.empty() && !l->queues.contains(n.queue)) continue;
        try {
          l->fn(n);
        } catch (...) {
        }
      }
    }
  }

  /// @brief One notice.
  void publish(const JobNotice& n) const { publish(std::span<const JobNotice>(&n, 1)); }

 private:
  struct Listener {
    std::set<std::string> queues;
    NoticeFn fn;
    std::mutex call;
  };
  mutable std::mutex mutex_;
  std::uint64_t next_id_ = 1;
  std::map<std::uint64_t, std::shared_ptr<Listener>> listeners_;
};

}  // namespace jobq
