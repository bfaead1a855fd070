#pragma once

// Waking up: this process's waiters (notify, wait_for_work), the polled look at the file for
// work that others enqueued or that came due, and the notice hub shared per file.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <stop_token>
#include <string>

#include <nlohmann/json.hpp>

#include "jobq/error.hpp"
#include "jobq/events.hpp"
#include "jobq/job.hpp"
#include "jobq/sqlite/connection.hpp"
#include "jobq/sqlite/rows.hpp"
#include "jobq/sqlite/statements.hpp"
#include "jobq/time.hpp"

namespace jobq::detail::sqlite {

/// @brief The notice hubs of one database file in this process: every SqliteBackend object on
/// the same file shares them, so a subscriber sees changes made through any of them.
struct FileHubs {
  NoticeHub events;   ///< subscribe
  NoticeHub cancels;  ///< watch_cancels
};

/// @brief The hubs of `file`, made on first use and freed with the last object on it.
inline std::shared_ptr<FileHubs> hubs_for(const std::string& file) {
  static std::mutex mutex;
  static std::map<std::string, std::weak_ptr<FileHubs>> hubs;
  std::lock_guard lock(mutex);
  for (auto it = hubs.begin(); it != hubs.end();) {
    it = it->second.expired() ? hubs.erase(it) : std::next(it);
  }
  auto& slot = hubs[file];
  if (auto h = slot.lock()) return h;
  auto h = std::make_shared<FileHubs>();
  slot = h;
  return h;
}

/// @brief next_due of a limited queue that has ready jobs (read-only: the ledger is pruned by claims).
inline std::optional<std::int64_t> limited_due(Connection& c, const std::string& q, const QueueLimits& l,
                                              std::int64_t t_ms) {
  if (l.rate) {
    auto s = c.query(sql::rate_used, "poll for work: rate ledger");
    s.bind(1, q).bind(2, t_ms - l.rate->window.count());
    if (s.step() && s.integer(0) >= l.rate->max && !s.is_null(1)) return s.integer(1) + l.rate->window.count();
  }
  // The queue's slots are full: a completion (which notifies) frees one, nothing time-based.
  if (l.concurrency > 0 && queue_active(c, q) >= l.concurrency) return std::nullopt;
  if (l.group_concurrency > 0) {
    std::set<std::string> full;
    {
      auto s = c.query(sql::group_active, "poll for work: active jobs per group");
      s.bind(1, q);
      while (s.step()) {
        if (s.integer(1) >= l.group_concurrency) full.insert(s.text(0));
      }
    }
    auto ex = nlohmann::json::array();
    for (const auto& g : full) ex.push_back(g);
    {
      auto s = c.query(sql::candidates, "poll for work: candidates");
      s.bind(1, q).bind(2, t_ms).bind(3, ex.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
      while (s.step()) {
        if (s.is_null(3) || !full.contains(s.text(3))) return t_ms;
      }
    }
    auto s = c.query(sql::next_delayed, "poll for work: next delayed");
    s.bind(1, q).bind(2, t_ms);
    if (s.step() && !s.is_null(0)) return s.integer(0);
    return std::nullopt;
  }
  return t_ms;
}

/// @brief When the non-paused queues may next have a claimable job: the earliest run_at of a queued
/// job, except that for a limited queue whose ready jobs are all held back, the time its rate
/// window frees a start, or (group slots full) its next delayed job; a slot freed by a
/// completion is then found by the next poll. Without that a worker would spin on empty claims.
inline std::optional<TimePoint> next_due(ConnectionPool& pool, std::span<const std::string> queues,
                                         const ClockFn& now) {
  try {
    return pool.read("poll for work", [&](Connection& c) {
      const auto t_ms = to_epoch_ms(now());
      std::optional<std::int64_t> due;
      for (const auto& q : queues) {
        const auto st = read_settings(c, q);
        if (st.paused) continue;
        std::optional<std::int64_t> q_due;
        {
          auto s = c.query(sql::next_due, "poll for work");
          s.bind(1, q);
          if (s.step() && !s.is_null(0)) q_due = s.integer(0);
        }
        if (q_due && *q_due <= t_ms && st.limited()) q_due = limited_due(c, q, st.limits, t_ms);
        if (q_due && (!due || *q_due < *due)) due = q_due;
      }
      return due ? std::optional<TimePoint>(from_epoch_ms(*due)) : std::nullopt;
    });
  } catch (const Error& e) {
    // A busy file is only a missed hint: "due now", the next claim will wait its turn. Any
    // other failure (a corrupt page) is thrown, so the worker reports it to on_error instead
    // of waiting for work forever.
    if (e.category() != ErrorCategory::conflict && !e.is_transient()) throw;
    return now();
  }
}

/// @brief The waiters of one SqliteBackend object: notify() wakes every wait() at once.
class Waiters {
 public:
  /// @brief Wakes every current wait().
  void notify() {
    {
      std::lock_guard lock(mutex_);
      ++generation_;
    }
    cv_.notify_all();
  }

  /// @brief Sleeps until notify(), the timeout, stop, or the time `due()` returns (nullopt:
  /// nothing queued), asking `due()` again every `poll_interval`.
  template <class Due>
  void wait(Millis timeout, std::stop_token stop, Millis poll_interval, Due&& due, const ClockFn& now) {
    using steady = std::chrono::steady_clock;
    const auto deadline = steady::now() + timeout;
    std::unique_lock lock(mutex_);
    const auto seen = generation_;
    while (!stop.stop_requested()) {
      lock.unlock();
      const auto next = due();  // throws what the worker must report
      lock.lock();
      if (generation_ != seen) return;
      auto slice = poll_interval;
      if (next) {
        const auto until_due = *next - now();
        if (until_due <= Millis{0}) return;
        slice = std::min(slice, until_due);
      }
      const auto left = deadline - steady::now();
      if (left <= steady::duration::zero()) return;
      if (cv_.wait_for(lock, stop, std::min<steady::duration>(slice, left), [&] { return generation_ != seen; })) {
        return;
      }
    }
  }

 private:
  std::mutex mutex_;
  std::condition_variable_any cv_;
  std::uint64_t generation_ = 0;
};

}  // namespace jobq::detail::sqlite
