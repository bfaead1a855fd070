#pragma once

// Claiming: which queues a claim may take from (paused, limited), the pick in claim order, the
// lease, and a limited queue's walk past saturated groups within its rate allowance.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "jobq/error.hpp"
#include "jobq/job.hpp"
#include "jobq/sqlite/connection.hpp"
#include "jobq/sqlite/flows.hpp"
#include "jobq/sqlite/rows.hpp"
#include "jobq/sqlite/statements.hpp"
#include "jobq/time.hpp"

namespace jobq::detail::sqlite {

/// @brief A job a limited claim picked, before it is leased.
struct Candidate {
  JobId id;
  std::int64_t priority;
  std::int64_t run_at;
  std::size_t queue;  // index into the claim's queue list
};

/// @brief A claim touching a limited queue: the best `limit` of each open queue, and of each limited
/// queue as many as its rate allowance and its groups' free slots allow, merged in claim order.
/// Records the rate-limited queues' claims in the ledger; returns the chosen ids (JSON array).
inline nlohmann::json pick_limited(Connection& c, const std::vector<std::string>& open,
                                   const std::vector<std::pair<std::string, QueueLimits>>& limited,
                                   TimePoint t, std::size_t limit) {
  const auto t_ms = to_epoch_ms(t);
  std::vector<Candidate> cands;
  std::vector<const std::string*> names;  // candidate.queue -> name
  std::vector<bool> rated;                // candidate.queue -> has a rate limit
  const auto walk = [&](const std::string& q, std::size_t allowance, int k, bool rate) {
    const auto qi = names.size();
    names.push_back(&q);
    rated.push_back(rate);
    std::map<std::string, int> active;
    std::set<std::string> excluded;
    if (k > 0) {
      auto s = c.query(sql::group_active, "claim: active jobs per group");
      s.bind(1, q);
      while (s.step()) {
        auto g = s.text(0);
        const auto n = static_cast<int>(s.integer(1));
        if (n >= k) excluded.insert(g);
        active.emplace(std::move(g), n);
      }
    }
    std::set<JobId> picked;
    bool again = true;
    // Each pass excludes every group known to be saturated in the statement itself, so a
    // saturated group's backlog is stepped over inside SQLite, never returned row by row. A
    // group filled by this batch restarts the walk (at most once per group, ids already
    // picked are skipped).
    while (again && picked.size() < allowance) {
      again = false;
      auto ex = nlohmann::json::array();
      for (const auto& g : excluded) ex.push_back(g);
      auto s = c.query(sql::candidates, "claim: candidates");
      s.bind(1, q).bind(2, t_ms).bind(3, ex.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
      while (picked.size() < allowance && s.step()) {
        const JobId id = s.integer(0);
        if (picked.contains(id)) continue;
        if (k > 0 && !s.is_null(3)) {
          auto g = s.text(3);
          int& n = active[g];
          if (n >= k) {
            if (excluded.insert(std::move(g)).second) {
              again = true;
              break;
            }
            continue;  // a key the JSON filter cannot match (invalid UTF-8): skipped here
          }
          ++n;
        }
        picked.insert(id);
        cands.push_back({id, s.integer(1), s.integer(2), qi});
      }
    }
  };
  for (const auto& q : open) walk(q, limit, 0, false);
  for (const auto& [q, l] : limited) {
    std::size_t allowance = limit;
    if (l.rate) {
      const auto floor = t_ms - l.rate->window.count();
      c.query(sql::rate_prune, "claim: prune rate ledger").bind(1, q).bind(2, floor).run();
      auto s = c.query(sql::rate_used, "claim: read rate ledger");
      s.bind(1, q).bind(2, floor);
      const auto used = s.step() ? s.integer(0) : 0;
      if (used >= l.rate->max) continue;
      allowance = std::min(allowance, static_cast<std::size_t>(l.rate->max - used));
    }
    if (l.concurrency > 0) {
      const auto active = queue_active(c, q);
      if (active >= l.concurrency) continue;
      allowance = std::min(allowance, static_cast<std::size_t>(l.concurrency - active));
    }
    walk(q, allowance, l.group_concurrency, l.rate.has_value());
  }
  std::sort(cands.begin(), cands.end(), [](const Candidate& a, const Candidate& b) {
    if (a.priority != b.priority) return a.priority > b.priority;
    if (a.run_at != b.run_at) return a.run_at < b.run_at;
    return a.id < b.id;
  });
  if (cands.size() > limit) cands.resize(limit);
  std::vector<std::int64_t> per_queue(names.size(), 0);
  auto ids = nlohmann::json::array();
  for (const auto& cand : cands) {
    ids.push_back(cand.id);
    ++per_queue[cand.queue];
  }
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (!rated[i] || per_queue[i] == 0) continue;
    c.query(sql::rate_record, "claim: record in rate ledger").bind(1, *names[i]).bind(2, t_ms).bind(3, per_queue[i]).run();
  }
  return ids;
}

/// @brief The claim of `req` from `queues` at `t`, on the writer `c` inside its BEGIN IMMEDIATE
/// transaction; `limit` is req.limit (> 0). Returns the leased jobs in no particular order.
///
/// Queues without limits take the same single statement as before limits existed. A queue
/// with limits (set_queue_limits) is walked in claim order skipping saturated groups, as far
/// as its rate allowance goes, and the chosen jobs are leased by id. A claimed row that cannot
/// be decoded is not returned: it is made dead in the same transaction (sql::kill_corrupt), and
/// if it is a flow member, what waits for it learns so (`fx`).
inline std::vector<JobRecord> claim_jobs(Connection& c, std::span<const std::string> queues,
                                         const ClaimRequest& req, std::int64_t limit, TimePoint t,
                                         FlowEffects& fx) {
  std::vector<std::string> open;
  std::vector<std::pair<std::string, QueueLimits>> limited;
  for (const auto& q : queues) {
    const auto st = read_settings(c, q);
    if (st.paused) continue;
    if (st.limited()) {
      limited.emplace_back(q, st.limits);
    } else {
      open.push_back(q);
    }
  }
  std::vector<JobRecord> jobs;
  std::vector<std::pair<JobId, std::string>> broken;
  const auto take = [&](Stmt& s) {
    while (s.step()) {
      try {
        jobs.push_back(decode(s));
      } catch (const Error& e) {
        broken.emplace_back(s.integer(0), e.what());
      }
    }
  };
  const auto lease_one = [&](JobId id) {
    if (c.query(sql::lease_one, "claim").bind(1, id).bind(2, to_epoch_ms(t + req.lease)).run() != 1) {
      return;
    }
    auto s = c.query(sql::read_job, "claim");
    s.bind(1, id);
    take(s);
  };
  if (limited.empty()) {
    if (open.empty()) return jobs;
    if (limit == 1) {
      std::optional<JobId> id;
      {
        auto s = open.size() == 1 ? c.query(sql::claim_pick_one_queue, "claim") : c.query(sql::claim_pick(open.size()), "claim");
        s.bind(1, to_epoch_ms(t)).bind(2, limit);
        for (std::size_t i = 0; i < open.size(); ++i) s.bind(static_cast<int>(i + 4), open[i]);
        if (s.step()) id = s.integer(0);
      }
      if (id) lease_one(*id);
    } else {
      static const std::string claim_one = sql::claim_batch(1);  // the usual case, built once
      auto s = open.size() == 1 ? c.query(claim_one, "claim") : c.query(sql::claim_batch(open.size()), "claim");
      s.bind(1, to_epoch_ms(t)).bind(2, limit).bind(3, to_epoch_ms(t + req.lease));
      for (std::size_t i = 0; i < open.size(); ++i) s.bind(static_cast<int>(i + 4), open[i]);
      take(s);
    }
  } else {
    const auto ids = pick_limited(c, open, limited, t, static_cast<std::size_t>(limit));
    if (ids.size() == 1) {
      lease_one(ids.front().get<JobId>());
    } else if (!ids.empty()) {
      auto s = c.query(sql::claim_ids, "claim");
      s.bind(1, to_epoch_ms(t + req.lease)).bind(2, ids.dump());
      take(s);
    }
  }
  for (const auto& [id, why] : broken) {
    JobId flow_id = 0;
    {
      auto s = c.query(sql::kill_corrupt, "claim: mark corrupted job dead");
      s.bind(1, id).bind(2, to_epoch_ms(t)).bind(3, as_json_text(why));
      if (s.step() && !s.is_null(0)) flow_id = s.integer(0);
      s.run();
    }
    if (flow_id != 0) died(c, id, flow_id, why, t, fx);
  }
  return jobs;
}

}  // namespace jobq::detail::sqlite
