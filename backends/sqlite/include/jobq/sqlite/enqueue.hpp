#pragma once

// Storing a job: its columns encoded before any write, the unique-key rules, the insert, and the
// transactional enqueue on a caller's own connection.

#include <sqlite3.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "jobq/error.hpp"
#include "jobq/job.hpp"
#include "jobq/sqlite/connection.hpp"
#include "jobq/sqlite/statements.hpp"
#include "jobq/time.hpp"

namespace jobq::detail::sqlite {

/// @brief A job's JSON columns, serialized (and checked) before any write.
struct Encoded {
  std::string payload;
  std::string backoff;
};

/// @brief A message as JSON text, invalid UTF-8 replaced (bound to json(?) in SQL).
inline std::string as_json_text(const std::string& message) {
  return nlohmann::json(message).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

/// @brief validate(job), then its columns; a payload over `max_payload_bytes` is InvalidArgument.
inline Encoded encode(const NewJob& job, std::size_t max_payload_bytes) {
  validate(job);
  Encoded e{job.payload.dump(), job.backoff.to_json().dump()};  // validate(job) ran check_json
  check_payload_size(e.payload.size(), max_payload_bytes);
  return e;
}

/// @brief The expires_at column of `job` (NULL: no deadline).
inline std::optional<std::int64_t> deadline_ms(const NewJob& job) {
  return job.expires_at ? std::optional(to_epoch_ms(*job.expires_at)) : std::nullopt;
}

/// @brief Whether the key holder in row `s` of sql::find_holder (in state `state`) holds its key
/// at `t_ms`: queued or active, or completed less than unique_for ago (throttle aside). What
/// enqueue dedupes on and find_unique reports.
template <class Row>
bool holds_key(Row& s, std::string_view state, std::int64_t t_ms) {
  return state == "queued" || state == "active" ||
         (state == "completed" && !s.is_null(2) && s.integer(2) + s.integer(3) > t_ms);
}

/// @brief Unique-key rules (throttle, debounce) then insert; the caller holds the write lock
/// (BEGIN IMMEDIATE) or is in its own transaction, so no other writer can slip in between.
/// `prepare(text)` gives the Stmt; `own_writer`: the backend's writer connection, under its
/// mutex (see sql::insert).
template <class Prepare>
EnqueueResult insert_job(Prepare&& prepare, const NewJob& job, const Encoded& e, TimePoint t,
                         bool own_writer = true) {
  const auto t_ms = to_epoch_ms(t);
  auto run_at = to_epoch_ms(job.run_at.value_or(t));
  if (!job.unique_key.empty()) {
    std::optional<JobId> holder;
    std::string state;
    bool held = false;
    {
      auto s = prepare(sql::find_holder);
      s.bind(1, job.queue).bind(2, job.unique_key);
      if (s.step()) {
        holder = s.integer(0);
        state = s.text(1);
        held = holds_key(s, state, t_ms) || (job.throttle > Millis{0} && s.integer(4) > t_ms - job.throttle.count());
      }
    }
    if (job.debounce > Millis{0}) {
      run_at = t_ms + job.debounce.count();
      if (holder && state == "queued") {
        prepare(sql::debounce).bind(1, *holder).bind(2, e.payload).bind(3, run_at).run();
        return {*holder, false};
      }
    } else if (held) {
      return {*holder, false};
    }
  }
  auto s = prepare(own_writer ? sql::insert : sql::insert_returning);
  s.bind(1, job.queue)
      .bind(2, job.name)
      .bind(3, e.payload)
      .bind(4, job.priority)
      .bind(5, job.max_attempts)
      .bind(6, run_at)
      .bind(7, t_ms)
      .bind(8, e.backoff)
      .bind(9, static_cast<std::int64_t>(job.timeout.count()))
      .bind(11, static_cast<std::int64_t>(job.unique_for.count()));
  if (job.unique_key.empty()) {
    s.bind_null(10);
  } else {
    s.bind(10, job.unique_key);
  }
  if (job.group.empty()) {
    s.bind_null(12);
  } else {
    s.bind(12, job.group);
  }
  s.bind(13, deadline_ms(job));
  if (own_writer) {
    s.run();
    return {s.last_insert_rowid(), true};
  }
  s.step();
  const JobId id = s.integer(0);
  s.run();
  return {id, true};
}

/// @brief The `prepare` insert_job takes on the backend's writer: its cached statements.
inline auto cached(Connection& c, std::string_view what) {
  return [&c, what](std::string_view text) { return c.query(text, what); };
}

/// @brief Whether an enqueue at `t` that gave `r` should wake this process's waiters at once:
/// a new job that is ready now.
inline bool ready_now(const EnqueueResult& r, const NewJob& job, TimePoint t) {
  return r.created && job.debounce == Millis{0} && job.run_at.value_or(t) <= t;
}

/// @brief The transactional enqueue on the caller's connection `db`, inside the caller's
/// transaction if one is open (a savepoint), else in a BEGIN IMMEDIATE of its own.
inline EnqueueResult enqueue_on(sqlite3* db, const NewJob& job, const Encoded& e, TimePoint t) {
  const bool autocommit = sqlite3_get_autocommit(db) != 0;
  // Outside a transaction, BEGIN IMMEDIATE takes the write lock before the unique-key read, as
  // the backend's own writes do; inside one, the caller owns locking and a savepoint suffices.
  exec_on(db, (autocommit ? sql::begin_immediate : sql::savepoint_enqueue).data(), "transactional enqueue: begin");
  try {
    const auto r = insert_job(
        [&](std::string_view text) { return prepare_once(db, text, "transactional enqueue"); }, job, e, t, false);
    exec_on(db, (autocommit ? sql::commit : sql::release_enqueue).data(), "transactional enqueue: commit");
    return r;
  } catch (...) {
    if (autocommit) {
      if (sqlite3_get_autocommit(db) == 0) sqlite3_exec(db, sql::rollback.data(), nullptr, nullptr, nullptr);
    } else {
      sqlite3_exec(db, sql::rollback_enqueue.data(), nullptr, nullptr, nullptr);
    }
    throw;
  }
}

}  // namespace jobq::detail::sqlite
