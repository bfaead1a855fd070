#pragma once

// Flows: storing a flow's members and edges, and what a member's completion, death, cancel or
// redrive does to the members waiting for it. Each function runs on the writer inside the BEGIN
// IMMEDIATE transaction of the change that causes it, so a dependent is released (or doomed)
// exactly once however many writers, threads or processes finish its dependencies.

#include <cstdint>
#include <limits>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "jobq/error.hpp"
#include "jobq/events.hpp"
#include "jobq/flow.hpp"
#include "jobq/job.hpp"
#include "jobq/sqlite/connection.hpp"
#include "jobq/sqlite/enqueue.hpp"
#include "jobq/sqlite/statements.hpp"
#include "jobq/time.hpp"

namespace jobq::detail::sqlite {

/// @brief What a change did to other flow members, acted on after its commit.
struct FlowEffects {
  bool wake = false;               ///< a member became queued: wake this process's waiters
  std::vector<JobNotice> notices;  ///< members that died or were cancelled with their dependency
};

/// @brief Inserts one flow member, queued or waiting; `id` nullopt takes the next id (the error
/// callback).
inline JobId insert_member(Connection& c, const NewJob& job, const Encoded& e, std::optional<JobId> id,
                           JobId flow_id, bool continue_on_failure, const std::optional<std::string>& depends_on,
                           bool waiting, TimePoint t) {
  auto s = c.query(sql::insert_member, "enqueue flow");
  s.bind(1, id)
      .bind(2, job.queue)
      .bind(3, job.name)
      .bind(4, e.payload)
      .bind(5, waiting ? "waiting" : "queued")
      .bind(6, job.priority)
      .bind(7, job.max_attempts)
      .bind(8, to_epoch_ms(job.run_at.value_or(t)))
      .bind(9, to_epoch_ms(t))
      .bind(10, e.backoff)
      .bind(11, static_cast<std::int64_t>(job.timeout.count()))
      .bind(12, static_cast<std::int64_t>(job.unique_for.count()))
      .bind(14, flow_id)
      .bind(15, continue_on_failure ? 1 : 0)
      .bind(16, depends_on)
      .bind(17, deadline_ms(job));
  if (job.group.empty()) {
    s.bind_null(13);
  } else {
    s.bind(13, job.group);
  }
  s.run();
  return id.value_or(s.last_insert_rowid());
}

/// @brief Stores `flow` (validated, its members encoded as `e`) at `t`: members with the ids
/// next_job_id gives, in order, so each row is written once with its depends_on; then the edges
/// and pending counts in two statements. Sets `wake` when a member is ready now.
inline std::vector<JobId> store_flow(Connection& c, const NewFlow& flow, std::span<const Encoded> e, TimePoint t,
                                     bool& wake) {
  JobId first = 0;
  {
    auto s = c.query(sql::next_job_id, "enqueue flow");
    s.step();
    first = s.integer(0);
  }
  const auto n = static_cast<JobId>(flow.members.size());
  std::vector<JobId> ids;
  ids.reserve(flow.members.size());
  for (JobId i = 0; i < n; ++i) ids.push_back(first + i);
  std::string deps;
  for (std::size_t i = 0; i < flow.members.size(); ++i) {
    const auto& m = flow.members[i];
    std::optional<std::string> depends_on;
    if (!m.after.empty()) {
      deps = "[";
      for (auto d : m.after) {
        if (deps.size() > 1) deps += ',';
        deps += std::to_string(ids[d]);
      }
      deps += ']';
      depends_on = deps;
    } else if (m.job.run_at.value_or(t) <= t) {
      wake = true;
    }
    insert_member(c, m.job, e[i], ids[i], first, m.continue_on_failure, depends_on, depends_on.has_value(), t);
  }
  c.query(sql::link_members, "enqueue flow: dependencies").bind(1, first).bind(2, ids.back()).run();
  c.query(sql::count_pending, "enqueue flow: waiting jobs").bind(1, first).bind(2, ids.back()).run();
  if (flow.on_failure) {
    c.query(sql::insert_flow, "enqueue flow").bind(1, first).bind(2, to_json(*flow.on_failure).dump()).run();
  }
  return ids;
}

/// @brief `done` has just finished in `state` (completed, dead or cancelled; `last_error` its
/// last error when dead): releases the waiting dependents it resolves and finishes those it
/// dooms, and so on down the flow (a stack: chains may be long).
inline void settle_dependents(Connection& c, JobId done, JobState state, std::string last_error, TimePoint t,
                              FlowEffects& fx) {
  struct Step {
    JobId id;
    std::string error;
  };
  struct Dependent {
    JobId id;
    std::int64_t pending;
    bool continue_on_failure;
    std::string queue;
  };
  const auto t_ms = to_epoch_ms(t);
  std::vector<Step> stack{{done, std::move(last_error)}};
  std::vector<Dependent> waiting;
  while (!stack.empty()) {
    const auto dep = std::move(stack.back());
    stack.pop_back();
    waiting.clear();
    {
      auto s = c.query(sql::waiting_dependents, "settle dependents");
      s.bind(1, dep.id);
      while (s.step()) waiting.push_back({s.integer(0), s.integer(1), s.integer(2) != 0, s.text(3)});
    }
    for (auto& x : waiting) {
      if (state == JobState::completed || x.continue_on_failure) {
        if (x.pending > 1) {
          c.query(sql::count_resolved, "settle dependents").bind(1, x.id).run();
          continue;
        }
        c.query(sql::forget_waiting, "settle dependents").bind(1, x.id).run();
        c.query(sql::release_waiting, "settle dependents: release").bind(1, x.id).bind(2, t_ms).run();
        fx.wake = true;
        continue;
      }
      const bool cancelled = state == JobState::cancelled;
      auto why = cancelled ? cancelled_dependency_error(dep.id) : dead_dependency_error(dep.id, dep.error);
      c.query(sql::forget_waiting, "settle dependents").bind(1, x.id).run();
      c.query(sql::doom_waiting, "settle dependents: doom")
          .bind(1, x.id)
          .bind(2, t_ms)
          .bind(3, to_string(state))
          .bind(4, as_json_text(why))
          .run();
      fx.notices.push_back(
          {cancelled ? JobNotice::Kind::cancelled : JobNotice::Kind::dead, x.id, std::move(x.queue), 0, 0, why});
      stack.push_back({x.id, std::move(why)});
    }
  }
}

/// @brief Member `id` of flow `flow_id` died by its own failure (fail, lease recovery, a
/// corrupted row) with `last_error`: its dependents per their policy, and the flow's error
/// callback the first time (queued, depends_on = {id}, continuing on failure).
inline void died(Connection& c, JobId id, JobId flow_id, const std::string& last_error, TimePoint t,
                 FlowEffects& fx) {
  settle_dependents(c, id, JobState::dead, last_error, t, fx);
  std::string stored;
  {
    auto s = c.query(sql::fire_on_failure, "enqueue flow error callback");
    s.bind(1, flow_id);
    if (!s.step()) return;
    stored = s.text(0);
    s.run();
  }
  NewJob job;
  try {
    job = new_job_from_json(nlohmann::json::parse(stored));
  } catch (const std::exception&) {
    // Written by enqueue_flow, so only a hand edit gets here; refusing would roll back (and so
    // block) the failure that fired it. The callback is dropped, the flow marked fired.
    return;
  }
  const Encoded e{job.payload.dump(), job.backoff.to_json().dump()};
  const auto callback = insert_member(c, job, e, std::nullopt, flow_id, true, "[" + std::to_string(id) + "]", false, t);
  c.query(sql::link_members, "enqueue flow error callback").bind(1, callback).bind(2, callback).run();
  if (job.run_at.value_or(t) <= t) fx.wake = true;
}

/// @brief Dead member `id` was re-driven: what died because of it waits again (unless another
/// dependency dooms it), a waiting dependent that continues on failure counts it unresolved
/// again, and so on down the flow.
inline void revive_dependents(Connection& c, JobId id) {
  struct Dependent {
    JobId id;
    std::string state;
    std::int64_t attempts;
    bool continue_on_failure;
  };
  std::vector<JobId> stack{id};
  std::vector<Dependent> deps;
  while (!stack.empty()) {
    const JobId dep = stack.back();
    stack.pop_back();
    deps.clear();
    {
      auto s = c.query(sql::all_dependents, "redrive: dependents");
      s.bind(1, dep);
      while (s.step()) deps.push_back({s.integer(0), s.text(1), s.integer(2), s.integer(3) != 0});
    }
    for (const auto& x : deps) {
      if (x.state == "waiting") {
        if (x.continue_on_failure) c.query(sql::count_unresolved, "redrive: dependents").bind(1, x.id).run();
        continue;
      }
      if (x.state != "dead" || x.attempts != 0) continue;  // it ran: it stays as it ended
      std::int64_t pending = 0;
      {
        auto s = c.query(sql::revive_check, "redrive: dependents");
        s.bind(1, x.id).bind(2, dep);
        s.step();
        if (s.integer(1) > 0) continue;  // another dependency is dead or cancelled too
        pending = s.integer(0);
      }
      c.query(sql::revive, "redrive: dependents").bind(1, x.id).run();
      c.query(sql::wait_again, "redrive: dependents").bind(1, x.id).bind(2, pending).run();
      stack.push_back(x.id);
    }
  }
}

/// @brief cancel_flow on flow `flow_id` at `t`: every queued or waiting member cancelled at once
/// (so none is released in between), no error callback afterwards. Returns how many.
inline std::size_t cancel_members(Connection& c, JobId flow_id, TimePoint t, FlowEffects& fx) {
  c.query(sql::disarm_on_failure, "cancel flow").bind(1, flow_id).run();
  std::size_t n = 0;
  {
    auto s = c.query(sql::cancel_members, "cancel flow");
    s.bind(1, flow_id).bind(2, to_epoch_ms(t));
    while (s.step()) {
      fx.notices.push_back({JobNotice::Kind::cancelled, s.integer(0), s.text(1), 0, 0, {}});
      ++n;
    }
  }
  c.query(sql::forget_flow_waiting, "cancel flow").bind(1, flow_id).run();
  return n;
}

/// @brief Deletes the whole flows with a member in `queue` whose members are all finished and
/// older than the retention of their state; returns how many jobs went.
inline std::size_t prune_flows(Connection& c, const std::string& queue, const Retention& retention, TimePoint t) {
  const auto cutoff = [&](const std::optional<Millis>& keep) {
    return keep ? to_epoch_ms(t - *keep) : std::numeric_limits<std::int64_t>::min();
  };
  const std::pair<JobState, std::optional<Millis>> rules[] = {
      {JobState::completed, retention.completed}, {JobState::dead, retention.dead}, {JobState::cancelled, retention.cancelled}};
  std::set<JobId> flows;
  for (const auto& [state, keep] : rules) {
    if (!keep) continue;
    auto s = c.query(sql::flow_candidates, "prune flows");
    s.bind(1, queue).bind(2, to_string(state)).bind(3, cutoff(keep));
    while (s.step()) flows.insert(s.integer(0));
  }
  std::size_t n = 0;
  for (JobId f : flows) {
    {
      auto s = c.query(sql::flow_kept, "prune flows");
      s.bind(1, f).bind(2, cutoff(retention.completed)).bind(3, cutoff(retention.dead)).bind(4, cutoff(retention.cancelled));
      if (s.step()) continue;
    }
    c.query(sql::delete_flow_deps, "prune flows").bind(1, f).run();
    c.query(sql::delete_flow_row, "prune flows").bind(1, f).run();
    n += static_cast<std::size_t>(c.query(sql::delete_flow_jobs, "prune flows").bind(1, f).run());
  }
  return n;
}

}  // namespace jobq::detail::sqlite
