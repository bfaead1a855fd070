#pragma once

// Reading rows back: whole jobs (selected as sql::job_columns), a queue's settings, its counts,
// the schedules.

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "jobq/error.hpp"
#include "jobq/job.hpp"
#include "jobq/sqlite/connection.hpp"
#include "jobq/sqlite/error.hpp"
#include "jobq/sqlite/statements.hpp"
#include "jobq/time.hpp"
#include "jobq/worker_info.hpp"

namespace jobq::detail::sqlite {

/// @brief Parses a stored JSON column; a malformed value names the job and the column.
inline nlohmann::json parse_column(const std::string& text, JobId id, const char* column) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) {
    throw SqliteError(ErrorCategory::backend, "sqlite: job " + std::to_string(id) + " is corrupted: its " +
                                                  column + " is not valid JSON");
  }
  return j;
}

/// @brief The job in the current row (selected as sql::job_columns).
inline JobRecord decode(const Stmt& s) {
  JobRecord r;
  r.id = s.integer(0);
  r.queue = s.text(1);
  r.name = s.text(2);
  r.payload = parse_column(s.text(3), r.id, "payload");
  try {
    r.state = job_state_from_string(s.text(4));
    r.backoff = Backoff::from_json(parse_column(s.text(13), r.id, "backoff"));
    if (!s.is_null(17)) r.result = parse_column(s.text(17), r.id, "result");
    r.errors = errors_from_json(parse_column(s.text(18), r.id, "errors"));
    if (!s.is_null(24)) r.depends_on = parse_column(s.text(24), r.id, "depends_on").get<std::vector<JobId>>();
  } catch (const SqliteError&) {
    throw;
  } catch (const nlohmann::json::exception& e) {  // depends_on is not an array of ids
    throw SqliteError(ErrorCategory::backend,
                      "sqlite: job " + std::to_string(r.id) + " is corrupted: " + e.what());
  } catch (const Error& e) {
    throw SqliteError(ErrorCategory::backend,
                      "sqlite: job " + std::to_string(r.id) + " is corrupted: " + e.what());
  }
  r.priority = static_cast<int>(s.integer(5));
  r.attempts = static_cast<int>(s.integer(6));
  r.max_attempts = static_cast<int>(s.integer(7));
  r.run_at = from_epoch_ms(s.integer(8));
  r.created_at = from_epoch_ms(s.integer(9));
  if (!s.is_null(10)) r.finished_at = from_epoch_ms(s.integer(10));
  if (!s.is_null(11)) r.lease_until = from_epoch_ms(s.integer(11));
  if (!s.is_null(25)) r.expires_at = from_epoch_ms(s.integer(25));
  r.lease_token = s.text(12);
  r.timeout = Millis{s.integer(14)};
  r.unique_key = s.text(15);
  r.unique_for = Millis{s.integer(16)};
  r.progress = static_cast<int>(s.integer(19));
  r.progress_message = s.text(20);
  r.group = s.text(21);
  r.flow_id = s.is_null(22) ? 0 : s.integer(22);
  r.continue_on_failure = s.integer(23) != 0;
  return r;
}


/// @brief What claim reads about one queue in its transaction.
struct QueueSettings {
  bool paused = false;
  QueueLimits limits{};
  [[nodiscard]] bool limited() const noexcept { return limits.rate || limits.group_concurrency > 0 || limits.concurrency > 0; }
};

/// @brief Reads a queue's settings row (defaults when it has none).
inline QueueSettings read_settings(Connection& c, const std::string& queue) {
  QueueSettings out;
  auto s = c.query(sql::queue_settings, "read queue settings");
  s.bind(1, queue);
  if (s.step()) {
    out.paused = s.integer(0) != 0;
    out.limits.group_concurrency = static_cast<int>(s.integer(1));
    if (!s.is_null(2) && !s.is_null(3)) out.limits.rate = RateLimit{s.integer(2), Millis{s.integer(3)}};
    out.limits.concurrency = static_cast<int>(s.integer(4));
  }
  return out;
}

/// @brief A queue's active jobs (jobq_counts).
inline std::int64_t queue_active(Connection& c, const std::string& q) {
  auto s = c.query(sql::queue_active, "active jobs of the queue");
  s.bind(1, q);
  return s.step() ? s.integer(0) : 0;
}

/// @brief Jobs per state in a queue (jobq_counts).
inline Counts read_counts(Connection& c, const std::string& queue, TimePoint now) {
  Counts n;
  auto s = c.query(sql::counts, "counts");
  s.bind(1, queue).bind(2, to_epoch_ms(now));
  while (s.step()) {
    const auto v = s.integer(1);
    const auto state = s.text(0);
    (state == "delayed" ? n.delayed : count_of(n, job_state_from_string(state))) = v;
  }
  return n;
}

/// @brief Every schedule, by name. A spec that is not valid JSON throws SqliteError naming it.
inline std::vector<StoredSchedule> read_schedules(Connection& c) {
  std::vector<StoredSchedule> out;
  auto s = c.query(sql::schedules, "list schedules");
  while (s.step()) {
    auto spec = nlohmann::json::parse(s.text(1), nullptr, false);
    if (spec.is_discarded()) {
      throw SqliteError(ErrorCategory::backend,
                        "sqlite: schedule '" + s.text(0) + "' is corrupted: its spec is not valid JSON");
    }
    out.push_back({s.text(0), std::move(spec), from_epoch_ms(s.integer(2))});
  }
  return out;
}

/// @brief The worker entries with expires_at >= `now_ms`, by id.
inline std::vector<WorkerInfo> read_workers(Connection& c, std::int64_t now_ms) {
  std::vector<WorkerInfo> out;
  auto s = c.query(sql::workers, "list workers");
  s.bind(1, now_ms);
  while (s.step()) {
    const auto corrupted = [&](const std::string& why) {
      return SqliteError(ErrorCategory::backend, "sqlite: worker '" + s.text(0) + "' is corrupted: " + why);
    };
    auto info = nlohmann::json::parse(s.text(1), nullptr, false);
    if (info.is_discarded()) throw corrupted("its info is not valid JSON");
    try {
      out.push_back(worker_info_from_json(info));
    } catch (const InvalidArgument& e) {
      throw corrupted(e.what());
    }
  }
  return out;
}

}  // namespace jobq::detail::sqlite
