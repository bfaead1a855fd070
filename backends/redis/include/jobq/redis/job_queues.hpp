#pragma once
// Client-side bookkeeping of a backend: job ids reserved in blocks from <prefix>:id, the queue
// of each job (ids never move between queues; the store's <prefix>:jobqueue is the truth), and
// the queues known to be registered in <prefix>:queues.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "jobq/job.hpp"
#include "jobq/redis/connection.hpp"

namespace jobq::detail::redis {

/// @brief Positions of jobs grouped by queue (one script call per queue): `which[k]` are the
/// positions, in input order, of the jobs of `names[k]`; queues in order of first appearance.
struct JobsByQueue {
  std::vector<std::string> names;
  std::vector<std::vector<std::size_t>> which;
};

/// @brief `queues[i]` is the queue of job i (nullopt: no such job, left out).
inline JobsByQueue group_by_queue(const std::vector<std::optional<std::string>>& queues) {
  JobsByQueue g;
  for (std::size_t i = 0; i < queues.size(); ++i) {
    if (!queues[i]) continue;
    auto at = std::find(g.names.begin(), g.names.end(), *queues[i]);
    if (at == g.names.end()) {
      g.names.push_back(*queues[i]);
      g.which.emplace_back();
      at = std::prev(g.names.end());
    }
    g.which[static_cast<std::size_t>(at - g.names.begin())].push_back(i);
  }
  return g;
}

/// @brief Job ids reserved for this process in blocks, so most enqueues need no round trip for
/// their ids.
class IdBlock {
 public:
  /// @brief n fresh ids; when the block runs out, `reserve(count)` reserves `count` more (at
  /// least `block`) and returns the counter's new value (the last id reserved).
  template <class Reserve>
  std::vector<JobId> take(std::size_t n, std::size_t block, Reserve&& reserve) {
    std::lock_guard lock(mutex_);
    if (static_cast<std::size_t>(end_ - next_) < n) {
      const auto want = std::max(n, block);
      end_ = reserve(want) + 1;
      next_ = end_ - static_cast<JobId>(want);
    }
    std::vector<JobId> ids(n);
    for (auto& id : ids) id = next_++;
    return ids;
  }

  /// @brief Forgets the reserved ids (the counter was deleted: reserve afresh).
  void reset() {
    std::lock_guard lock(mutex_);
    next_ = end_;
  }

 private:
  std::mutex mutex_;
  JobId next_ = 0;  // [next_, end_) is reserved for this object
  JobId end_ = 0;
};

/// @brief A bounded cache of the queue of each job, and the set of queues known to be
/// registered in <prefix>:queues. Thread-safe.
class QueueCache {
 public:
  /// @brief Remembers the queue of a job.
  void remember(JobId id, const std::string& queue) {
    std::lock_guard lock(mutex_);
    remember_locked(id, queue);
  }

  /// @brief Calls each(remember) under one lock, where remember(id, queue) remembers a job's
  /// queue (for a batch of jobs).
  template <class Each>
  void remember_each(Each&& each) {
    std::lock_guard lock(mutex_);
    each([this](JobId id, const std::string& queue) { remember_locked(id, queue); });
  }

  /// @brief The queue of each job: cached, else looked up with fetch(HMGET of `map`, the
  /// <prefix>:jobqueue hash), which returns the reply. nullopt: no such job.
  template <class Fetch>
  std::vector<std::optional<std::string>> lookup(const std::vector<JobId>& ids, const std::string& map, Fetch&& fetch) {
    std::vector<std::size_t> missing;
    auto out = find(ids, missing);
    if (missing.empty()) return out;
    std::vector<std::string> hmget{"HMGET", map};
    for (auto i : missing) hmget.push_back(std::to_string(ids[i]));
    const auto reply = fetch(hmget);
    for (std::size_t k = 0; k < missing.size() && k < reply->elements; ++k) {
      const auto* e = reply->element[k];
      if (e->type != REDIS_REPLY_STRING) continue;
      std::string q(text(e));
      try {
        validate_queue_name(q);
      } catch (const InvalidArgument&) {
        throw RedisError(ErrorCategory::backend,
                         "redis: " + map + " maps job " + std::to_string(ids[missing[k]]) + " to an invalid queue name");
      }
      remember(ids[missing[k]], q);
      out[missing[k]] = std::move(q);
    }
    return out;
  }

  /// @brief Forgets a job (pruned).
  void forget(JobId id) {
    std::lock_guard lock(mutex_);
    queue_of_.erase(id);
  }

  /// @brief The queues not known to be registered yet.
  std::vector<std::string> unregistered(const std::vector<std::string>& queues) {
    std::lock_guard lock(mutex_);
    std::vector<std::string> out;
    for (const auto& q : queues) {
      if (!registered_.contains(q)) out.push_back(q);
    }
    return out;
  }

  /// @brief Notes queues as registered.
  void mark_registered(const std::vector<std::string>& queues) {
    std::lock_guard lock(mutex_);
    for (const auto& q : queues) registered_.insert(q);
  }

  /// @brief Forgets everything (the store was purged).
  void clear() {
    std::lock_guard lock(mutex_);
    queue_of_.clear();
    names_.clear();
    registered_.clear();
  }

 private:
  // The cached queue of each id; the positions of positive ids not cached go to `missing`.
  std::vector<std::optional<std::string>> find(const std::vector<JobId>& ids, std::vector<std::size_t>& missing) {
    std::vector<std::optional<std::string>> out(ids.size());
    std::lock_guard lock(mutex_);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (auto it = queue_of_.find(ids[i]); it != queue_of_.end()) {
        out[i] = names_[it->second];
      } else if (ids[i] > 0) {
        missing.push_back(i);
      }
    }
    return out;
  }

  void remember_locked(JobId id, const std::string& queue) {
    if (queue_of_.size() >= 200'000) queue_of_.clear();  // a bounded cache; misses cost one HGET
    auto it = std::find(names_.begin(), names_.end(), queue);
    if (it == names_.end()) {
      if (names_.size() >= 10'000) {
        names_.clear();
        queue_of_.clear();
      }
      names_.push_back(queue);
      it = std::prev(names_.end());
    }
    queue_of_[id] = static_cast<std::uint32_t>(it - names_.begin());
  }

  std::mutex mutex_;
  std::unordered_map<JobId, std::uint32_t> queue_of_;  // id -> index into names_
  std::vector<std::string> names_;
  std::unordered_set<std::string> registered_;  // queues known to be in <prefix>:queues
};

}  // namespace jobq::detail::redis
