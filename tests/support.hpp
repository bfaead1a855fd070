#pragma once
// Small helpers every test program shares: waiting for other threads (or a backend's listener)
// to catch up, and collecting the notices a subscription delivers.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <jobq/events.hpp>

namespace jobq_test {

/// Waits (real time, bounded) until pred holds; true if it did.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(20)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return pred();
}

/// Collects the notices a subscription delivers on another thread.
struct NoticeLog {
  std::mutex m;
  std::vector<jobq::JobNotice> seen;

  jobq::NoticeFn fn() {
    return [this](const jobq::JobNotice& n) {
      std::lock_guard lock(m);
      seen.push_back(n);
    };
  }
  std::size_t size() {
    std::lock_guard lock(m);
    return seen.size();
  }
  std::optional<jobq::JobNotice> find(jobq::JobNotice::Kind kind, jobq::JobId id) {
    std::lock_guard lock(m);
    for (const auto& n : seen) {
      if (n.kind == kind && n.id == id) return n;
    }
    return std::nullopt;
  }
  bool has(jobq::JobNotice::Kind kind, jobq::JobId id) { return find(kind, id).has_value(); }
  std::size_t count(jobq::JobNotice::Kind kind) {
    std::lock_guard lock(m);
    return static_cast<std::size_t>(std::count_if(seen.begin(), seen.end(), [&](const auto& n) { return n.kind == kind; }));
  }
  std::size_t count(jobq::JobNotice::Kind kind, jobq::JobId id) {
    std::lock_guard lock(m);
    return static_cast<std::size_t>(
        std::count_if(seen.begin(), seen.end(), [&](const auto& n) { return n.kind == kind && n.id == id; }));
  }
};

}  // namespace jobq_test
