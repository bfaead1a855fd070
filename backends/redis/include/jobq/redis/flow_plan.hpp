#pragma once
// The client side of flows (see lua_flow.hpp): the flow_write calls of an enqueue_flow, one per
// queue, and the outbox records read back.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "jobq/flow.hpp"
#include "jobq/redis/connection.hpp"
#include "jobq/redis/keys.hpp"
#include "jobq/redis/records.hpp"

namespace jobq::detail::redis {

/// @brief The flow_write arguments of one queue (after now and nonce).
struct FlowWrite {
  std::string queue;
  Args argv;
};

/// @brief One member as flow_write stores it: `deps` its dependencies, `pending` how many it
/// waits for (its dependencies, plus the flow's commit outside the home queue; 0 for the error
/// callback, whose dependency is already dead), `dependents` its Q:dependents entry ('' none).
inline void append_flow_member(Args& argv, const NewJob& j, JobId id, JobId fid, const std::vector<JobId>& deps,
                               bool cof, std::size_t pending, const std::string& dependents, std::int64_t t,
                               const std::string& payload, const std::string& nonce) {
  const auto run_at = j.run_at ? to_epoch_ms(*j.run_at) : t;
  const auto member = rank(run_at, id);
  argv.push_back(std::to_string(id));
  argv.push_back(make_doc(j, id, t, payload, j.backoff.to_json().dump(), nonce, flow_fields(fid, deps, cof)));
  argv.push_back(std::string(pending > 0 ? "waiting" : "queued") + " 0 " + std::to_string(j.max_attempts) + ' ' +
                 std::to_string(j.priority) + ' ' + std::to_string(run_at) + " - - - - - -");
  if (pending > 0) {
    argv.insert(argv.end(), {"w", "", ""});
  } else if (run_at <= t) {
    argv.insert(argv.end(), {"r", std::to_string(-static_cast<std::int64_t>(j.priority)), member});
  } else {
    argv.insert(argv.end(), {"d", std::to_string(run_at), member + std::to_string(j.priority)});
  }
  argv.push_back(pending > 0 ? std::to_string(pending) + " 0 " + (cof ? "1" : "0") : std::string());
  argv.push_back(dependents);
  argv.push_back(j.group);
  argv.push_back(deadline_arg(j));
}

/// @brief The flow_write calls of a validated flow with ids `ids` (ids[0] = the flow's id): the
/// home queue (the first member's) last, since its call commits the flow.
inline std::vector<FlowWrite> plan_flow(const NewFlow& flow, const std::vector<JobId>& ids,
                                        const std::vector<std::string>& payloads, std::int64_t t,
                                        const std::string& nonce) {
  const auto n = flow.members.size();
  const auto& home = flow.members[0].job.queue;
  std::vector<std::string> dependents(n);
  std::string members, others;
  for (std::size_t i = 0; i < n; ++i) {
    const auto& q = flow.members[i].job.queue;
    const auto tag = std::to_string(ids[i]) + ':' + q;
    const auto append = [&](std::string& list) {
      if (!list.empty()) list += ' ';
      list += tag;
    };
    for (auto d : flow.members[i].after) append(dependents[d]);
    append(members);
    if (q != home) append(others);
  }
  std::vector<FlowWrite> out;
  std::unordered_map<std::string, std::size_t> at;
  const auto fid = std::to_string(ids[0]);
  for (std::size_t i = 0; i < n; ++i) {
    const auto& m = flow.members[i];
    auto [it, fresh] = at.emplace(m.job.queue, out.size());
    if (fresh) {
      const bool is_home = m.job.queue == home;
      std::string on_failure = is_home && flow.on_failure ? to_json(*flow.on_failure).dump() : std::string();
      out.push_back({m.job.queue, {fid, is_home ? members : "", on_failure, is_home ? others : ""}});
    }
    std::vector<JobId> deps;
    for (auto d : m.after) deps.push_back(ids[d]);
    append_flow_member(out[it->second].argv, m.job, ids[i], ids[0], deps, m.continue_on_failure,
                       deps.size() + (m.job.queue != home ? 1 : 0),
                       dependents[i], t, payloads[i], nonce);
  }
  std::rotate(out.begin(), out.begin() + 1, out.end());  // the home queue (first seen) last
  return out;
}

/// @brief A flow's member list as the home slot keeps it ("<id>:<queue> ..."): (id, queue) pairs.
inline std::vector<std::pair<JobId, std::string>> parse_members(std::string_view list) {
  std::vector<std::pair<JobId, std::string>> out;
  for (std::size_t pos = 0; pos < list.size();) {
    const auto sp = std::min(list.find(' ', pos), list.size());
    const auto tag = list.substr(pos, sp - pos);
    pos = sp + 1;
    const auto colon = tag.find(':');
    if (tag.empty() || colon == std::string_view::npos) continue;
    out.emplace_back(to_i64(tag.substr(0, colon)), std::string(tag.substr(colon + 1)));
  }
  return out;
}

/// @brief An outbox record: a dependency's outcome for a member of `queue`, or (fire) a member
/// that died by its own failure, for its flow's error callback.
struct OutboxRecord {
  std::string raw;  ///< as stored (outbox_ack removes it by value)
  bool fire = false;
  std::string queue;                         ///< the member's queue (not fire)
  std::array<std::string, 5> fields{};       ///< member, dependency, seq, outcome, message
  JobId flow = 0, member = 0;                ///< fire
};

/// @brief Parses a record; `where` names the outbox in the error.
inline OutboxRecord parse_outbox_record(std::string raw, const std::string& where) {
  OutboxRecord r;
  r.raw = std::move(raw);
  const std::string_view s = r.raw;
  std::vector<std::string_view> w;
  std::size_t pos = 0;
  const std::size_t words = s.starts_with("! ") ? 3 : 6;
  while (w.size() + 1 < words) {
    const auto sp = s.find(' ', pos);
    if (sp == std::string_view::npos) break;
    w.push_back(s.substr(pos, sp - pos));
    pos = sp + 1;
  }
  w.push_back(s.substr(std::min(pos, s.size())));
  try {
    if (w.size() != words) throw std::invalid_argument("too few words");
    if (words == 3) {
      r.fire = true;
      r.flow = to_i64(w[1]);
      r.member = to_i64(w[2]);
    } else {
      r.queue = std::string(w[0]);
      validate_queue_name(r.queue);
      for (std::size_t i = 0; i < 5; ++i) r.fields[i] = std::string(w[i + 1]);
    }
  } catch (const std::exception& e) {
    throw RedisError(ErrorCategory::backend, "redis: flow record '" + r.raw + "' in " + where + " is corrupted: " + e.what());
  }
  return r;
}

}  // namespace jobq::detail::redis
