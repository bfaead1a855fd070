#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <string_view>

#include "jobq/error.hpp"

namespace jobq {

/// @brief Milliseconds: the resolution every backend stores times with.
using Millis = std::chrono::milliseconds;

/// @brief A wall-clock instant at millisecond resolution (what backends persist).
using TimePoint = std::chrono::time_point<std::chrono::system_clock, Millis>;

/// @brief The longest duration jobq accepts (delay, timeout, lease, unique_for, throttle,
/// debounce, backoff): 100 years. Longer ones are refused, so that adding one to a time never
/// overflows, whichever backend stores it (milliseconds, nanoseconds or a Redis score).
inline constexpr Millis max_duration = std::chrono::hours(24 * 365 * 100);

/// @brief The earliest and latest instants a job's run_at may name (1970-01-01 and the end
/// of 9999-12-31, UTC): every store keeps them as milliseconds with room to add max_duration.
inline constexpr TimePoint min_time{Millis{0}};
/// @brief See min_time.
inline constexpr TimePoint max_time{Millis{253'402'300'799'999}};

/// @brief Throws InvalidArgument naming `what` unless 0 <= d <= max_duration.
inline void check_duration(Millis d, std::string_view what) {
  if (d.count() < 0) throw InvalidArgument(std::string(what) + " must not be negative");
  if (d > max_duration) {
    throw InvalidArgument(std::string(what) + " of " + std::to_string(d.count()) +
                          " ms is longer than the maximum of 100 years (jobq::max_duration)");
  }
}

/// @brief The clock a backend reads time from; injectable so tests can move time by hand.
using ClockFn = std::function<TimePoint()>;

/// @brief The real wall clock, truncated to milliseconds.
inline TimePoint system_now() {
  return std::chrono::time_point_cast<Millis>(std::chrono::system_clock::now());
}

/// @brief A ClockFn reading the system clock (every backend's default).
inline ClockFn system_clock() { return [] { return system_now(); }; }

/// @brief Milliseconds since the Unix epoch, the integer form backends store.
constexpr std::int64_t to_epoch_ms(TimePoint t) noexcept { return t.time_since_epoch().count(); }

/// @brief Inverse of to_epoch_ms.
constexpr TimePoint from_epoch_ms(std::int64_t ms) noexcept { return TimePoint{Millis{ms}}; }

/// @brief `t` as ISO 8601 UTC with milliseconds ("2030-01-01T00:00:00.000Z"), for messages.
inline std::string iso_time(TimePoint t) {
  using namespace std::chrono;
  const auto day = floor<days>(t);
  const year_month_day ymd{day};
  const hh_mm_ss hms{t - day};
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02d.%03dZ", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()), static_cast<int>(hms.hours().count()),
                static_cast<int>(hms.minutes().count()), static_cast<int>(hms.seconds().count()),
                static_cast<int>(hms.subseconds().count()));
  return buf;
}

/// @brief A clock that only moves when told to; thread-safe. Used by the conformance suite.
class ManualClock {
 public:
  /// @brief Starts at a fixed instant (2030-01-01T00:00:00Z) unless given another.
  explicit ManualClock(TimePoint start = from_epoch_ms(1'893'456'000'000)) : ms_(to_epoch_ms(start)) {}

  /// @brief The current manual time.
  [[nodiscard]] TimePoint now() const noexcept { return from_epoch_ms(ms_.load()); }

  /// @brief Moves time forward by d.
  void advance(Millis d) noexcept { ms_.fetch_add(d.count()); }

  /// @brief Sets the time to t.
  void set(TimePoint t) noexcept { ms_.store(to_epoch_ms(t)); }

  /// @brief A ClockFn reading this clock; the clock must outlive the backend using it.
  [[nodiscard]] ClockFn fn() const {
    return [this] { return now(); };
  }

 private:
  std::atomic<std::int64_t> ms_;
};

}  // namespace jobq
