#pragma once

#include <algorithm>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "jobq/backend.hpp"
#include "jobq/cron.hpp"

namespace jobq {

/// @brief What a schedule does with ticks that came due while no scheduler ran.
enum class MissedTicks {
  run_once,  ///< enqueue one job for all of them, then continue from now
  skip,      ///< enqueue nothing for a tick later than misfire_grace; continue from now
};

/// @brief How a schedule runs and what its jobs look like. Field order allows designated
/// initializers: `{.tz = "America/New_York", .missed = MissedTicks::skip}`.
struct ScheduleOptions {
  std::string tz = "UTC";                  ///< IANA time zone the cron fields are read in
  MissedTicks missed = MissedTicks::run_once;  ///< after downtime
  Millis misfire_grace{60'000};            ///< a tick fired later than this counts as missed
  int priority = 0;                        ///< of each enqueued job
  int max_attempts = 3;                    ///< of each enqueued job
  Backoff backoff = {};                    ///< of each enqueued job (not custom)
  Millis timeout{0};                       ///< of each enqueued job
  std::string group{};                     ///< of each enqueued job
};

/// @brief A recurring job: on every tick of `cron` (in options.tz) enqueue job_name(payload)
/// on `queue`. Stored in the backend; any number of schedulers may run it, and each tick
/// enqueues exactly one job (Backend::fire_schedule is a compare-and-set).
struct Schedule {
  std::string name{};         ///< unique in the store ([A-Za-z0-9_.-], 1..128)
  std::string cron{};         ///< 5 or 6 fields, or an @alias (see CronExpr)
  std::string queue{};        ///< where jobs go
  std::string job_name{};     ///< the handler name
  nlohmann::json payload{};   ///< each job's payload
  ScheduleOptions options{};  ///< zone, missed-tick policy, job options
};

/// @brief A stored schedule with its next tick.
struct ScheduleInfo {
  Schedule schedule;  ///< what it runs
  TimePoint next_run; ///< the next tick not yet fired
};

/// @brief The spec a backend stores for a schedule (everything but its name).
inline nlohmann::json to_json(const Schedule& s) {
  return {{"cron", s.cron},
          {"queue", s.queue},
          {"job_name", s.job_name},
          {"payload", s.payload},
          {"tz", s.options.tz},
          {"missed", s.options.missed == MissedTicks::skip ? "skip" : "run_once"},
          {"misfire_grace_ms", s.options.misfire_grace.count()},
          {"priority", s.options.priority},
          {"max_attempts", s.options.max_attempts},
          {"backoff", s.options.backoff.to_json()},
          {"timeout_ms", s.options.timeout.count()},
          {"group", s.options.group}};
}

/// @brief Inverse of to_json(Schedule); throws InvalidArgument on a malformed spec.
inline Schedule schedule_from_json(const std::string& name, const nlohmann::json& j) {
  try {
    Schedule s;
    s.name = name;
    s.cron = j.at("cron").get<std::string>();
    s.queue = j.at("queue").get<std::string>();
    s.job_name = j.at("job_name").get<std::string>();
    s.payload = j.value("payload", nlohmann::json{});
    s.options.tz = j.value("tz", std::string("UTC"));
    s.options.missed = j.value("missed", std::string("run_once")) == "skip" ? MissedTicks::skip : MissedTicks::run_once;
    s.options.misfire_grace = Millis{json_integer_or<std::int64_t>(j, "misfire_grace_ms", 60'000)};
    s.options.priority = json_integer_or<int>(j, "priority", 0);
    s.options.max_attempts = json_integer_or<int>(j, "max_attempts", 3);
    if (j.contains("backoff")) s.options.backoff = Backoff::from_json(j.at("backoff"));
    s.options.timeout = Millis{json_integer_or<std::int64_t>(j, "timeout_ms", 0)};
    s.options.group = j.value("group", std::string{});
    return s;
  } catch (const nlohmann::json::exception& e) {
    throw InvalidArgument("schedule '" + name + "' has a malformed stored spec: " + e.what());
  }
}

/// @brief The job one tick of `s` enqueues.
inline NewJob make_job(const Schedule& s) {
  NewJob j;
  j.queue = s.queue;
  j.name = s.job_name;
  j.payload = s.payload;
  j.priority = s.options.priority;
  j.max_attempts = s.options.max_attempts;
  j.backoff = s.options.backoff;
  j.timeout = s.options.timeout;
  j.group = s.options.group;
  return j;
}

/// @brief Throws InvalidArgument unless `s` can be stored and will fire: a valid name, cron
/// expression, time zone and job.
inline void validate(const Schedule& s) {
  check_json(s.payload, "payload");  // first: make_job below copies it
  validate_schedule_name(s.name);
  check_duration(s.options.misfire_grace, "misfire_grace");
  const auto expr = CronExpr::parse(s.cron);
  const auto* tz = find_time_zone(s.options.tz);
  validate(make_job(s));
  if (!expr.next(system_now(), tz)) {
    throw InvalidArgument("cron expression '" + s.cron + "' never fires");
  }
}

/// @brief Stores (or replaces) a schedule; its first tick is the first after the backend's
/// now. Saving an identical schedule again keeps its pending tick, so applications may save
/// their schedules at every start without losing a tick that is due.
template <Backend B>
void save_schedule(B& backend, const Schedule& s) {
  validate(s);
  const auto spec = to_json(s);
  for (const auto& stored : backend.schedules()) {
    if (stored.name == s.name && stored.spec == spec) return;
  }
  const auto next = CronExpr::parse(s.cron).next(backend.now(), find_time_zone(s.options.tz));
  backend.put_schedule(StoredSchedule{s.name, spec, *next});
}

/// @brief Every stored schedule with its next tick, by name.
template <Backend B>
std::vector<ScheduleInfo> load_schedules(B& backend) {
  std::vector<ScheduleInfo> out;
  for (auto& st : backend.schedules()) out.push_back({schedule_from_json(st.name, st.spec), st.next_run});
  return out;
}

/// @brief Fires every schedule whose tick is due at the backend's now: enqueues one job (or
/// none, for a missed tick under MissedTicks::skip) and moves the schedule to its first tick
/// after now. Safe to call from any number of threads and processes at once: each tick is won
/// by exactly one caller. Returns the jobs this call enqueued. A schedule that cannot be read
/// is skipped and its error thrown after the others were fired.
template <Backend B>
std::size_t run_due_schedules(B& backend) {
  const auto now = backend.now();
  std::size_t fired = 0;
  std::exception_ptr first_error;
  for (const auto& st : backend.schedules()) {
    if (st.next_run > now) continue;
    try {
      const auto s = schedule_from_json(st.name, st.spec);
      const auto next = CronExpr::parse(s.cron).next(now, find_time_zone(s.options.tz));
      // A schedule that can no longer fire is parked far ahead instead of firing each call.
      const auto next_run = next.value_or(now + std::chrono::hours(24 * 365 * 100));
      const bool missed = now - st.next_run > s.options.misfire_grace;
      std::optional<NewJob> job;
      if (!(missed && s.options.missed == MissedTicks::skip)) job = make_job(s);
      if (backend.fire_schedule(st.name, st.next_run, next_run, job) && job) ++fired;
    } catch (...) {
      if (!first_error) first_error = std::current_exception();
    }
  }
  if (first_error) std::rethrow_exception(first_error);
  return fired;
}

}  // namespace jobq
