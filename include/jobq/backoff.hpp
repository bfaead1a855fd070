#pragma once

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <random>
#include <string>

#include <nlohmann/json.hpp>

#include "jobq/error.hpp"
#include "jobq/json.hpp"
#include "jobq/time.hpp"

namespace jobq {

/// @brief How long to wait before retry number `attempt` (1-based: the attempt that failed).
///
/// Fixed and exponential policies are values that travel with the job (stored as JSON), so any
/// worker process computes the same delay. A custom function cannot travel between processes;
/// it is set per handler on the Worker (see Worker::handle) and refused in enqueue options.
class Backoff {
 public:
  /// @brief The policy kinds.
  enum class Kind { fixed, exponential, custom };

  /// @brief The default policy: exponential from 1 s, doubling, capped at 1 h, no jitter.
  Backoff() = default;

  /// @brief Wait the same delay before every retry.
  static Backoff fixed(Millis delay) {
    check_duration(delay, "backoff delay");
    Backoff b;
    b.kind_ = Kind::fixed;
    b.base_ = delay;
    return b;
  }

  /// @brief Wait base * factor^(attempt-1), never more than cap.
  static Backoff exponential(Millis base, Millis cap = std::chrono::hours(1), double factor = 2.0) {
    if (!(factor >= 1.0)) throw InvalidArgument("backoff: exponential factor must be >= 1");
    check_duration(base, "backoff base");
    check_duration(cap, "backoff cap");
    Backoff b;
    b.kind_ = Kind::exponential;
    b.base_ = base;
    b.cap_ = cap;
    b.factor_ = factor;
    return b;
  }

  /// @brief A user function of the attempt number (worker-side only; see class comment).
  static Backoff custom(std::function<Millis(int attempt)> fn) {
    if (!fn) throw InvalidArgument("backoff: custom function is empty");
    Backoff b;
    b.kind_ = Kind::custom;
    b.custom_ = std::make_shared<std::function<Millis(int)>>(std::move(fn));
    return b;
  }

  /// @brief The same policy with jitter: each delay is reduced by a random share up to `fraction`.
  [[nodiscard]] Backoff with_jitter(double fraction) const {
    if (fraction < 0.0 || fraction > 1.0) throw InvalidArgument("backoff: jitter must be in [0, 1]");
    Backoff b = *this;
    b.jitter_ = fraction;
    return b;
  }

  /// @brief The policy kind.
  [[nodiscard]] Kind kind() const noexcept { return kind_; }
  /// @brief The jitter fraction (0 = none).
  [[nodiscard]] double jitter() const noexcept { return jitter_; }

  /// @brief The delay before the retry that follows failed attempt `attempt`, with `unit` in
  /// [0, 1) choosing where in the jitter range it falls (0 = no reduction).
  [[nodiscard]] Millis delay(int attempt, double unit) const {
    attempt = std::max(attempt, 1);
    Millis d{0};
    switch (kind_) {
      case Kind::fixed: d = base_; break;
      case Kind::exponential: {
        const double raw = static_cast<double>(base_.count()) * std::pow(factor_, attempt - 1);
        // `raw < cap` is false for inf and NaN (0 * inf) too: those take the cap.
        d = raw < static_cast<double>(cap_.count()) ? Millis{static_cast<Millis::rep>(raw)} : cap_;
        break;
      }
      case Kind::custom: d = (*custom_)(attempt); break;
    }
    d = std::clamp(d, Millis{0}, max_duration);  // a custom function may return anything
    if (jitter_ > 0.0) {
      const auto cut = static_cast<Millis::rep>(static_cast<double>(d.count()) * jitter_ * unit);
      d -= Millis{cut};
    }
    return d;
  }

  /// @brief The delay with jitter drawn from a thread-local random generator.
  [[nodiscard]] Millis delay(int attempt) const {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    return delay(attempt, std::uniform_real_distribution<double>(0.0, 1.0)(rng));
  }

  /// @brief The stored form. Throws InvalidArgument for a custom policy.
  [[nodiscard]] nlohmann::json to_json() const {
    switch (kind_) {
      case Kind::fixed:
        return {{"kind", "fixed"}, {"delay_ms", base_.count()}, {"jitter", jitter_}};
      case Kind::exponential:
        return {{"kind", "exponential"}, {"base_ms", base_.count()}, {"cap_ms", cap_.count()},
                {"factor", factor_}, {"jitter", jitter_}};
      case Kind::custom: break;
    }
    throw InvalidArgument(
        "backoff: a custom backoff function cannot be stored with a job; set it on the worker "
        "handler instead (worker.handle<T>(fn, {.backoff = ...}))");
  }

  /// @brief Parses the stored form; throws InvalidArgument on anything else.
  static Backoff from_json(const nlohmann::json& j) {
    try {
      const auto kind = j.at("kind").get<std::string>();
      Backoff b;
      if (kind == "fixed") {
        b = fixed(Millis{json_integer<std::int64_t>(j.at("delay_ms"), "backoff delay_ms")});
      } else if (kind == "exponential") {
        b = exponential(Millis{json_integer<std::int64_t>(j.at("base_ms"), "backoff base_ms")},
                        Millis{json_integer<std::int64_t>(j.at("cap_ms"), "backoff cap_ms")},
                        j.at("factor").get<double>());
      } else {
        throw InvalidArgument("backoff: unknown kind '" + kind + "'");
      }
      return b.with_jitter(j.value("jitter", 0.0));
    } catch (const nlohmann::json::exception& e) {
      throw InvalidArgument(std::string("backoff: malformed stored policy: ") + e.what());
    }
  }

  /// @brief Equal when they are the same serializable policy (custom ones never compare equal).
  friend bool operator==(const Backoff& a, const Backoff& b) {
    if (a.kind_ == Kind::custom || b.kind_ == Kind::custom) return false;
    return a.to_json() == b.to_json();
  }

 private:
  Kind kind_ = Kind::exponential;
  Millis base_{1000};
  Millis cap_{std::chrono::hours(1)};
  double factor_ = 2.0;
  double jitter_ = 0.0;
  std::shared_ptr<std::function<Millis(int)>> custom_;
};

}  // namespace jobq
