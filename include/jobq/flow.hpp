#pragma once

/// @file
/// Workflows: jobs that wait for other jobs. A flow is a set of member jobs (in any queues) and
/// the dependencies between them (a DAG), stored atomically by Backend::enqueue_flow. A member
/// with dependencies starts `waiting` and becomes `queued` in the same atomic step that
/// completes its last dependency; chains, groups and chords are shapes of it (Flow builds them).
/// The semantics every backend honours are in backend.hpp and docs/workflows.md.

#include <algorithm>
#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "jobq/error.hpp"
#include "jobq/job.hpp"

namespace jobq {

/// @brief Most members one flow may have (one transaction / one script writes them all).
inline constexpr std::size_t max_flow_members = 100'000;

/// @brief One job of a NewFlow and what it waits for.
struct FlowMember {
  NewJob job{};                      ///< the job (no unique key, throttle or debounce)
  std::vector<std::size_t> after{};  ///< indices of the members it depends on, in result order
  bool continue_on_failure = false;  ///< run even when a dependency is dead or cancelled
};

/// @brief What Backend::enqueue_flow stores, all or nothing.
struct NewFlow {
  std::vector<FlowMember> members{};  ///< in any order; ids are returned in this order
  std::optional<NewJob> on_failure{}; ///< enqueued once, when the first member dies by its own failure
};

/// @brief A stored flow: every member (the error callback too, once enqueued), by id, each with
/// its depends_on. Its id is its first member's id.
struct FlowRecord {
  JobId id = 0;                    ///< the flow's id (= members' flow_id)
  std::vector<JobRecord> members;  ///< by id
};

/// @brief The error a dependent gets when a dependency dies and it does not continue on failure:
/// "dependency 42 is dead: <the root cause>". When the dependency itself died of one of its own
/// ("dependency 41 is dead: boom"), that prefix is dropped, so the text does not grow down a chain.
inline std::string dead_dependency_error(JobId dependency, std::string_view last_error) {
  constexpr std::string_view head = "dependency ";
  constexpr std::string_view tail = " is dead: ";
  if (last_error.substr(0, head.size()) == head) {
    const auto digits = last_error.find_first_not_of("0123456789", head.size());
    if (digits != std::string_view::npos && digits > head.size() && last_error.substr(digits, tail.size()) == tail) {
      last_error.remove_prefix(digits + tail.size());
    }
  }
  return "dependency " + std::to_string(dependency) + " is dead: " + std::string(last_error);
}

/// @brief The error a dependent gets when a dependency is cancelled.
inline std::string cancelled_dependency_error(JobId dependency) {
  return "dependency " + std::to_string(dependency) + " was cancelled";
}

namespace detail {

inline void validate_flow_job(const NewJob& job, const std::string& what) {
  try {
    validate(job);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(what + ": " + e.what());
  }
  if (!job.unique_key.empty()) {
    // A deduplicated member would tie the flow to a job outside it.
    throw InvalidArgument(what + ": flow members cannot have a unique key, throttle or debounce");
  }
}

}  // namespace detail

/// @brief Throws InvalidArgument when a flow cannot be stored as given: no members, too many,
/// an invalid member (validate(NewJob)), a member with a unique key, a dependency index out of
/// range, on itself or listed twice, or a cycle. Backends call it first in enqueue_flow.
inline void validate(const NewFlow& flow) {
  const auto n = flow.members.size();
  if (n == 0) throw InvalidArgument("flow has no members");
  if (n > max_flow_members) {
    throw InvalidArgument("flow has " + std::to_string(n) + " members, above the maximum of " +
                          std::to_string(max_flow_members));
  }
  std::vector<std::size_t> indegree(n, 0);
  std::vector<std::vector<std::size_t>> dependents(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto& m = flow.members[i];
    const auto what = "flow member " + std::to_string(i);
    detail::validate_flow_job(m.job, what);
    std::vector<std::size_t> seen = m.after;
    std::sort(seen.begin(), seen.end());
    if (std::adjacent_find(seen.begin(), seen.end()) != seen.end()) {
      throw InvalidArgument(what + " lists the same dependency twice");
    }
    for (auto d : m.after) {
      if (d >= n) throw InvalidArgument(what + " depends on member " + std::to_string(d) + ", which does not exist");
      if (d == i) throw InvalidArgument(what + " depends on itself");
      dependents[d].push_back(i);
      ++indegree[i];
    }
  }
  // Kahn's algorithm: whatever is left once no member is free lies on a cycle.
  std::vector<std::size_t> ready;
  for (std::size_t i = 0; i < n; ++i) {
    if (indegree[i] == 0) ready.push_back(i);
  }
  std::size_t done = 0;
  while (!ready.empty()) {
    const auto i = ready.back();
    ready.pop_back();
    ++done;
    for (auto d : dependents[i]) {
      if (--indegree[d] == 0) ready.push_back(d);
    }
  }
  if (done != n) {
    for (std::size_t i = 0; i < n; ++i) {
      if (indegree[i] > 0) {
        throw InvalidArgument("flow has a cycle: member " + std::to_string(i) +
                              " depends, through others, on itself");
      }
    }
  }
  if (flow.on_failure) {
    detail::validate_flow_job(*flow.on_failure, "flow on_failure job");
    // It is enqueued when a member dies, long after the flow: a deadline fixed now means little.
    if (flow.on_failure->expires_at) throw InvalidArgument("flow on_failure job: it cannot have a deadline (expires_at)");
  }
}

/// @brief A NewJob as JSON, for backends that store the flow's on_failure job as a document.
inline nlohmann::json to_json(const NewJob& j) {
  return {{"queue", j.queue},
          {"name", j.name},
          {"payload", j.payload},
          {"priority", j.priority},
          {"run_at", j.run_at ? nlohmann::json(to_epoch_ms(*j.run_at)) : nlohmann::json(nullptr)},
          {"max_attempts", j.max_attempts},
          {"backoff", j.backoff.to_json()},
          {"timeout_ms", j.timeout.count()},
          {"group", j.group}};
}

/// @brief Inverse of to_json(NewJob); throws InvalidArgument on a malformed value.
inline NewJob new_job_from_json(const nlohmann::json& j) {
  try {
    NewJob n;
    n.queue = j.at("queue").get<std::string>();
    n.name = j.at("name").get<std::string>();
    n.payload = j.value("payload", nlohmann::json{});
    n.priority = json_integer_or<int>(j, "priority", 0);
    if (j.contains("run_at") && !j.at("run_at").is_null()) {
      n.run_at = from_epoch_ms(json_integer<std::int64_t>(j.at("run_at"), "run_at"));
    }
    n.max_attempts = json_integer_or<int>(j, "max_attempts", 3);
    if (j.contains("backoff")) n.backoff = Backoff::from_json(j.at("backoff"));
    n.timeout = Millis{json_integer_or<std::int64_t>(j, "timeout_ms", 0)};
    n.group = j.value("group", std::string{});
    return n;
  } catch (const nlohmann::json::exception& e) {
    throw InvalidArgument(std::string("stored flow job is malformed: ") + e.what());
  }
}

/// @brief How a flow member treats dead or cancelled dependencies (Flow::add).
struct FlowOptions {
  bool continue_on_failure = false;  ///< run with what completed instead of dying too
};

/// @brief Builds a NewFlow: add members (from Queue::make, so each may go to its own queue)
/// with the members they come after. Steps name members; EnqueuedFlow maps them to ids.
///
///     jobq::Flow flow;
///     auto a = flow.add(videos.make(Transcode{"720p"}));
///     auto b = flow.add(videos.make(Transcode{"1080p"}));
///     flow.add(mail.make(Notify{42}), {a, b});    // runs once both are completed
///     auto ids = videos.enqueue_flow(flow);
class Flow {
 public:
  /// @brief A member of this flow (its index).
  struct Step {
    std::size_t index = 0;  ///< position in the flow's members
    friend bool operator==(const Step&, const Step&) = default;
  };

  /// @brief Adds a member that runs after every step in `after` has completed (results in
  /// that order). Steps must come from this flow.
  Step add(NewJob job, std::vector<Step> after = {}, FlowOptions options = {}) {
    FlowMember m{std::move(job), {}, options.continue_on_failure};
    m.after.reserve(after.size());
    for (auto s : after) {
      if (s.index >= flow_.members.size()) throw InvalidArgument("flow: a step from another flow");
      m.after.push_back(s.index);
    }
    flow_.members.push_back(std::move(m));
    return {flow_.members.size() - 1};
  }

  /// @brief Adds each job in turn, each after the one before (the first after `after`);
  /// returns the last step.
  Step chain(std::vector<NewJob> jobs, std::vector<Step> after = {}) {
    if (jobs.empty()) throw InvalidArgument("flow: an empty chain");
    Step last{};
    for (auto& j : jobs) {
      last = add(std::move(j), std::move(after));
      after = {last};
    }
    return last;
  }

  /// @brief Adds jobs that run in parallel (each after `after`); returns their steps.
  std::vector<Step> group(std::vector<NewJob> jobs, const std::vector<Step>& after = {}) {
    std::vector<Step> steps;
    steps.reserve(jobs.size());
    for (auto& j : jobs) steps.push_back(add(std::move(j), after));
    return steps;
  }

  /// @brief A group, then `callback`, which gets every group member's result in member order;
  /// returns the callback's step.
  Step chord(std::vector<NewJob> jobs, NewJob callback, FlowOptions options = {}) {
    auto steps = group(std::move(jobs));
    return add(std::move(callback), std::move(steps), options);
  }

  /// @brief A job enqueued once, when the first member dies by its own failure (Celery's
  /// link_error); it depends on that member, so its context shows the error.
  void on_failure(NewJob job) { flow_.on_failure = std::move(job); }

  /// @brief The members so far.
  [[nodiscard]] std::size_t size() const noexcept { return flow_.members.size(); }
  /// @brief What Backend::enqueue_flow takes.
  [[nodiscard]] const NewFlow& spec() const noexcept { return flow_; }

 private:
  NewFlow flow_;
};

/// @brief What Queue::enqueue_flow returns: the flow's id and each member's id.
struct EnqueuedFlow {
  JobId id = 0;                ///< the flow (its first member)
  std::vector<JobId> members;  ///< in the order members were added
  /// @brief The id of a step's job.
  JobId operator[](Flow::Step s) const { return members.at(s.index); }
};

}  // namespace jobq
