#pragma once
// Inserting jobs, on a pool connection or on the caller's own (transactional enqueue): one
// statement per job with a unique key, one per run of up to 5,000 jobs without; a flow in one.

#include <algorithm>
#include <cstddef>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <libpq-fe.h>

#include "jobq/backend.hpp"
#include "jobq/flow.hpp"
#include "jobq/postgres/connection.hpp"
#include "jobq/postgres/statements.hpp"
#include "jobq/postgres/values.hpp"

namespace jobq::detail::pg {

/// The job's group as a parameter: NULL for none.
inline Param group_param(const NewJob& j) {
  return j.group.empty() ? std::nullopt : Param(j.group);
}

/// The caller's connection for enqueue(PGconn*, ...), refused when it cannot take a statement.
inline PGconn* check_caller_conn(PGconn* tx) {
  if (tx == nullptr) throw InvalidArgument("postgres: transactional enqueue needs a connection");
  if (PQstatus(tx) != CONNECTION_OK) {
    throw PostgresError(ErrorCategory::connection, "postgres: the caller's connection is broken", "08003");
  }
  switch (PQtransactionStatus(tx)) {
    case PQTRANS_INERROR:
      throw PostgresError(ErrorCategory::conflict,
                          "postgres: the caller's transaction is aborted; roll it back first", "25P02");
    case PQTRANS_ACTIVE:
      throw InvalidArgument("postgres: the caller's connection is busy with another command");
    default: break;
  }
  // The schema must exist already (this object's constructor made sure of it).
  return tx;
}

/// The job's deadline as a parameter: NULL for none.
inline Param deadline_param(const NewJob& j) {
  return j.expires_at ? Param(ms(*j.expires_at)) : std::nullopt;
}

/// $1..$12 of sql::enqueue_one (and of sql::enqueue_keyed, which adds three).
inline Params job_params(const NewJob& j, const std::string& payload, TimePoint t) {
  return {j.queue,
          j.name,
          payload,
          std::to_string(j.priority),
          std::to_string(j.max_attempts),
          ms(j.run_at.value_or(t)),
          ms(t),
          j.backoff.to_json().dump(),
          std::to_string(j.timeout.count()),
          std::to_string(j.unique_for.count()),
          group_param(j),
          deadline_param(j)};
}

/// Inserts one job (C: Conn or CallerConn), or finds the holder of its unique key.
template <class C>
EnqueueResult insert_one(C& c, const NewJob& job, const std::string& payload, TimePoint t) {
  auto params = job_params(job, payload, t);
  if (job.unique_key.empty()) {
    auto r = c.exec(Statement::enqueue_one, params);
    return {to_i64(PQgetvalue(r.get(), 0, 0)), true};
  }
  // Unique keys, throttle and debounce: the function enqueue_keyed (migration 3) decides
  // against the key's holder and retries itself when a concurrent enqueue wins the key.
  params.emplace_back(job.unique_key);
  params.emplace_back(std::to_string(job.throttle.count()));
  params.emplace_back(std::to_string(job.debounce.count()));
  auto r = c.exec(Statement::enqueue_keyed, params);
  return {to_i64(PQgetvalue(r.get(), 0, 0)), PQgetvalue(r.get(), 0, 1)[0] == 't'};
}

/// The per-job arrays of a multi-row insert (enqueue_batch, insert_flow). Backoff policies go
/// once each with a 1-based index per job; queues once each, for their NOTIFY.
struct BatchColumns {
  std::vector<Param> q, n, p, pr, ma, ra, b, bi, to, uf, g, ex, queues;
  std::unordered_map<std::string, std::size_t> policy_index;  // backoff text -> index in b
  std::unordered_set<std::string> seen;                        // queues so far

  void add(const NewJob& j, const std::string& payload, TimePoint t) {
    q.emplace_back(j.queue);
    if (seen.insert(j.queue).second) queues.emplace_back(j.queue);
    n.emplace_back(j.name);
    p.emplace_back(payload);
    g.emplace_back(group_param(j));
    ex.emplace_back(deadline_param(j));
    pr.emplace_back(std::to_string(j.priority));
    ma.emplace_back(std::to_string(j.max_attempts));
    ra.emplace_back(ms(j.run_at.value_or(t)));
    auto policy = j.backoff.to_json().dump();
    auto [at, added] = policy_index.try_emplace(policy, b.size() + 1);
    if (added) b.emplace_back(std::move(policy));
    bi.emplace_back(std::to_string(at->second));
    to.emplace_back(std::to_string(j.timeout.count()));
    uf.emplace_back(std::to_string(j.unique_for.count()));
  }
};

/// Inserts jobs in order (inside the caller's transaction: all or nothing).
template <class C>
std::vector<EnqueueResult> insert_many(C& c, std::span<const NewJob> jobs,
                                       const std::vector<std::string>& payloads, TimePoint t) {
  std::vector<EnqueueResult> out;
  out.reserve(jobs.size());
  std::size_t i = 0;
  while (i < jobs.size()) {
    if (!jobs[i].unique_key.empty()) {
      out.push_back(insert_one(c, jobs[i], payloads[i], t));
      ++i;
      continue;
    }
    // A run of jobs without unique keys: one INSERT for all of them, in order.
    std::size_t end = i;
    while (end < jobs.size() && jobs[end].unique_key.empty() && end - i < 5'000) ++end;
    BatchColumns cols;
    for (std::size_t k = i; k < end; ++k) cols.add(jobs[k], payloads[k], t);
    auto r = c.exec(Statement::enqueue_batch,
                    {text_array(cols.q), text_array(cols.n), text_array(cols.p), text_array(cols.pr),
                     text_array(cols.ma), text_array(cols.ra), ms(t), text_array(cols.b), text_array(cols.bi),
                     text_array(cols.to), text_array(cols.uf), text_array(cols.queues), text_array(cols.g),
                     text_array(cols.ex)});
    std::vector<JobId> ids;
    for (int row = 0; row < PQntuples(r.get()); ++row) ids.push_back(to_i64(PQgetvalue(r.get(), row, 0)));
    std::sort(ids.begin(), ids.end());
    for (auto id : ids) out.push_back({id, true});
    i = end;
  }
  return out;
}

/// A flow's error callback as flows.on_failure: the columns flow_died (migration 4) inserts.
inline std::string flow_doc(const NewJob& j, const std::string& payload) {
  nlohmann::json doc = {{"queue", j.queue},
                        {"name", j.name},
                        {"payload", payload},  // the text as enqueue stores it
                        {"priority", j.priority},
                        {"max_attempts", j.max_attempts},
                        {"run_at", j.run_at ? nlohmann::json(to_epoch_ms(*j.run_at)) : nlohmann::json()},
                        {"backoff", j.backoff.to_json()},
                        {"timeout_ms", j.timeout.count()},
                        {"unique_for_ms", j.unique_for.count()},
                        {"group", j.group.empty() ? nlohmann::json() : nlohmann::json(j.group)}};
  return doc.dump();
}

/// Stores a validated flow inside the caller's transaction; the ids, in member order.
/// payloads: the members' then (last) the on_failure job's, as stored.
template <class C>
std::vector<JobId> insert_flow(C& c, const NewFlow& flow, const std::vector<std::string>& payloads, TimePoint t) {
  const auto n = flow.members.size();
  auto r = c.exec(Statement::reserve_ids, {std::to_string(n)});
  std::vector<JobId> ids;
  ids.reserve(n);
  for (int row = 0; row < PQntuples(r.get()); ++row) ids.push_back(to_i64(PQgetvalue(r.get(), row, 0)));
  BatchColumns cols;
  std::vector<Param> deps, cont;
  for (std::size_t k = 0; k < n; ++k) {
    const auto& m = flow.members[k];
    cols.add(m.job, payloads[k], t);
    std::vector<JobId> after;
    after.reserve(m.after.size());
    for (auto d : m.after) after.push_back(ids[d]);
    deps.emplace_back(int_array(after));
    cont.emplace_back(m.continue_on_failure ? "t" : "f");
  }
  const Param doc = flow.on_failure ? Param(flow_doc(*flow.on_failure, payloads.back())) : std::nullopt;
  c.exec(Statement::insert_flow,
         {int_array(ids), text_array(cols.q), text_array(cols.n), text_array(cols.p), text_array(cols.pr),
          text_array(cols.ma), text_array(cols.ra), ms(t), text_array(cols.b), text_array(cols.bi),
          text_array(cols.to), text_array(cols.uf), text_array(cols.g), text_array(deps), text_array(cont),
          std::to_string(ids.front()), doc, text_array(cols.queues), text_array(cols.ex)});
  return ids;
}

}  // namespace jobq::detail::pg
