#pragma once
// PostgresBackend: the Backend operations, each a statement (statements.hpp) run through the
// connection pool's retry policy (pool.hpp); waiting and notices have listeners of their own.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <libpq-fe.h>
#include <nlohmann/json.hpp>

#include "jobq/backend.hpp"
#include "jobq/postgres/connection.hpp"
#include "jobq/postgres/inserts.hpp"
#include "jobq/postgres/migrations.hpp"
#include "jobq/postgres/notice_listener.hpp"
#include "jobq/postgres/options.hpp"
#include "jobq/postgres/pool.hpp"
#include "jobq/postgres/statements.hpp"
#include "jobq/postgres/values.hpp"
#include "jobq/postgres/wake_listener.hpp"
#include "jobq/worker_info.hpp"

namespace jobq {

/// @brief PostgreSQL backend: jobs in their own schema, claimed with FOR UPDATE SKIP LOCKED,
/// woken with LISTEN/NOTIFY; any number of processes on any number of hosts.
///
/// Thread-safe: one object is shared by all threads of a process (a small connection pool).
/// Not fork-safe: a child process makes its own object.
class PostgresBackend {
  using Conn = detail::pg::Conn;
  using Replay = detail::pg::Replay;
  using S = detail::pg::Statement;

 public:
  /// @brief The schema version this library writes (numbered migrations 1..N).
  static constexpr int latest_schema_version = detail::pg::latest_schema_version;

  /// @brief Connects (libpq connection string or URL), then creates or upgrades the schema.
  /// Throws InvalidArgument (bad options or connection string), PostgresError (refused,
  /// unreachable, rejected login, schema owned by someone else, newer schema).
  explicit PostgresBackend(std::string conninfo, PostgresOptions options = {})
      : opt_(checked(std::move(options))),
        connector_(std::move(conninfo), opt_),
        statements_(opt_.schema),
        channel_("jobq:" + opt_.schema),
        pool_(connector_, statements_, opt_),
        wake_(connector_, statements_, opt_),
        notices_(connector_, statements_, opt_, detail::pg::NoticeListener::Channel::events),
        cancels_(connector_, statements_, opt_, detail::pg::NoticeListener::Channel::cancels) {
    detail::pg::migrate(pool_, statements_, opt_.schema, connector_.target(), opt_.create);
  }

  PostgresBackend(const PostgresBackend&) = delete;
  PostgresBackend& operator=(const PostgresBackend&) = delete;

  /// @brief Stops the notice listener and closes every connection; no call may be running.
  ~PostgresBackend() = default;

  // ------------------------------------------------------------------------------------------
  // The Backend operations, in the concept's order

  /// @brief The backend's clock.
  [[nodiscard]] TimePoint now() const { return opt_.clock(); }

  /// @brief Stores a job (or returns the holder of its unique key).
  ///
  /// A connection lost after the statement was sent leaves its outcome unknown: that is a
  /// ConnectionError saying so, never a silent second insert.
  EnqueueResult enqueue(const NewJob& job) {
    const auto payload = checked_payload(job);
    auto r = pool_.with_retry("enqueue", Replay::never, [&](Conn& c, bool) {
      return detail::pg::insert_one(c, job, payload, now());
    });
    wake_.wake();
    return r;
  }

  /// @brief Stores many jobs in one transaction, all or nothing.
  std::vector<EnqueueResult> enqueue_many(std::span<const NewJob> jobs) {
    const auto payloads = checked_payloads(jobs);
    if (jobs.empty()) return {};
    auto out = pool_.with_retry("enqueue_many", Replay::never, [&](Conn& c, bool) {
      return detail::pg::in_transaction(c, [&] { return detail::pg::insert_many(c, jobs, payloads, now()); });
    });
    wake_.wake();
    return out;
  }

  /// @brief Leases up to req.limit ready jobs, best first across the queues, in one statement.
  std::vector<JobRecord> claim(const ClaimRequest& req) {
    const auto queues = claim_queues(req);
    if (queues.empty() || req.limit == 0) return {};
    const auto limit = std::min<std::size_t>(req.limit, 10'000);
    std::vector<detail::pg::Param> qp(queues.begin(), queues.end());
    const auto queues_lit = detail::pg::text_array(qp);
    return pool_.with_retry("claim", Replay::safe, [&](Conn& c, bool) {
      flush_pending_releases(c);
      // Tokens are made here, not in SQL, so that a claim whose answer was lost can be undone
      // by token (release_tokens) instead of leaving its jobs active until the lease runs out.
      std::vector<detail::pg::Param> tokens;
      tokens.reserve(limit);
      for (std::size_t i = 0; i < limit; ++i) tokens.emplace_back(detail::new_lease_token());
      const auto t = now();
      detail::pg::Result r;
      try {
        r = c.exec(S::claim, {queues_lit, ms(t), std::to_string(limit), ms(t + req.lease),
                              detail::pg::text_array(tokens)});
      } catch (const detail::pg::Lost& lost) {
        if (lost.unknown) remember_pending_release(tokens);
        throw;
      }
      auto jobs = detail::pg::rows_to_jobs(r.get());
      std::sort(jobs.begin(), jobs.end(), claims_before);
      return jobs;
    });
  }

  /// @brief Records a success if the lease token is current.
  bool complete(JobId id, const std::string& token, const nlohmann::json& result) {
    check_json(result, "result");  // before the copy below, which recurses
    const Completion one{id, token, result};
    return complete_many(std::span<const Completion>(&one, 1)).front();
  }

  /// @brief Records many successes in one round trip; one bool per completion.
  ///
  /// If the connection breaks with the outcome unknown, the retry asks the rows that did not
  /// change whether this token already finished them (done_token), so an applied completion
  /// reports true and nothing changes twice. The same holds when with_retry gave up and the
  /// caller (the worker) sends the completion again: see outcome_retry.
  std::vector<bool> complete_many(std::span<const Completion> completions) {
    std::vector<bool> out(completions.size(), false);
    std::vector<std::int64_t> ids;
    std::vector<detail::pg::Param> tokens, results;
    std::vector<std::size_t> index;  // position in `completions` of each sent item
    for (std::size_t i = 0; i < completions.size(); ++i) {
      const auto& c = completions[i];
      // A repeated id can succeed once at most; only its first occurrence is sent.
      if (c.lease_token.empty() || std::find(ids.begin(), ids.end(), c.id) != ids.end()) continue;
      ids.push_back(c.id);
      tokens.emplace_back(strip_nul(c.lease_token));
      results.emplace_back(dump_for_storage(c.result, "result"));
      index.push_back(i);
    }
    if (ids.empty()) return out;
    const auto ids_lit = detail::pg::int_array(ids);
    const auto tokens_lit = detail::pg::text_array(tokens);
    const auto results_lit = detail::pg::text_array(results);
    bool released = false;  // flow dependents became queued: wake this process's waiters too
    pool_.outcome_retry("complete", tokens, [&](Conn& c, bool uncertain) {
      auto r = c.exec(S::complete_many, {ids_lit, tokens_lit, results_lit, ms(now())});
      std::vector<bool> done(ids.size(), false);
      for (int row = 0; row < PQntuples(r.get()); ++row) {
        done[static_cast<std::size_t>(detail::pg::to_i64(PQgetvalue(r.get(), row, 0)) - 1)] = true;
        released = released || detail::pg::to_i64(PQgetvalue(r.get(), row, 1)) > 0;
      }
      if (uncertain) {
        auto again = c.exec(S::done_check, {ids_lit, tokens_lit});
        for (int row = 0; row < PQntuples(again.get()); ++row) {
          const auto ord = static_cast<std::size_t>(detail::pg::to_i64(PQgetvalue(again.get(), row, 0)) - 1);
          if (std::string_view(PQgetvalue(again.get(), row, 1)) == "completed") done[ord] = true;
        }
      }
      for (std::size_t k = 0; k < done.size(); ++k) out[index[k]] = done[k];
      return 0;
    });
    if (released) wake_.wake();
    return out;
  }

  /// @brief Records a failed attempt: retry at f.retry_at, or dead.
  FailOutcome fail(const Failure& f) {
    if (f.lease_token.empty()) return FailOutcome::rejected;
    const auto token = strip_nul(f.lease_token);
    const auto message = detail::pg::safe_text(f.error);
    const auto outcome = pool_.outcome_retry("fail", {token}, [&](Conn& c, bool uncertain) {
      const auto t = now();
      auto r = c.exec(S::fail, {std::to_string(f.id), token, message,
                                f.retry_at ? detail::pg::Param(ms(*f.retry_at)) : std::nullopt, ms(t)});
      if (PQntuples(r.get()) == 1) return detail::pg::outcome_of(PQgetvalue(r.get(), 0, 0));
      if (!uncertain) return FailOutcome::rejected;
      auto again = c.exec(S::done_check, {"{" + std::to_string(f.id) + "}", detail::pg::text_array({token})});
      if (PQntuples(again.get()) == 0) return FailOutcome::rejected;
      return detail::pg::outcome_of(PQgetvalue(again.get(), 0, 1));
    });
    // A dead flow member may release dependents or enqueue its flow's error callback.
    if (outcome != FailOutcome::rejected) wake_.wake();
    return outcome;
  }

  /// @brief Heartbeat: pushes the lease deadline to now + lease.
  bool extend_lease(JobId id, const std::string& token, Millis lease) {
    check_duration(lease, "lease");
    if (token.empty()) return false;
    return pool_.with_retry("extend_lease", Replay::safe, [&](Conn& c, bool) {
      return PQntuples(c.exec(S::extend, {std::to_string(id), strip_nul(token), ms(now() + lease)}).get()) == 1;
    });
  }

  /// @brief Gives a leased job back without counting the attempt.
  bool release(JobId id, const std::string& token) { return snooze(id, token, now()); }

  /// @brief Gives a leased job back to run at run_at, without counting the attempt.
  bool snooze(JobId id, const std::string& token, TimePoint run_at) {
    if (token.empty()) return false;
    const auto tok = strip_nul(token);
    const bool ok = pool_.outcome_retry("snooze", {tok}, [&](Conn& c, bool uncertain) {
      if (PQntuples(c.exec(S::release, {std::to_string(id), tok, ms(run_at)}).get()) == 1) return true;
      if (!uncertain) return false;
      auto again = c.exec(S::done_check, {"{" + std::to_string(id) + "}", detail::pg::text_array({tok})});
      return PQntuples(again.get()) == 1;
    });
    if (ok) wake_.wake();
    return ok;
  }

  /// @brief Records progress (clamped to 0..100) of an active job.
  bool set_progress(JobId id, const std::string& token, int percent, const std::string& message) {
    if (token.empty()) return false;
    const auto msg = detail::pg::safe_text(message);
    return pool_.with_retry("set_progress", Replay::safe, [&](Conn& c, bool) {
      return PQntuples(c.exec(S::progress, {std::to_string(id), strip_nul(token),
                                            std::to_string(std::clamp(percent, 0, 100)), msg})
                           .get()) == 1;
    });
  }

  /// @brief Requeues (or kills, on the last attempt) every job whose lease has expired. Runs
  /// on one node at a time: returns {} at once when another node holds the maintenance lock.
  Recovered recover_expired() {
    auto rec = pool_.with_retry("recover_expired", Replay::safe, [&](Conn& c, bool) {
      flush_pending_releases(c);
      auto r = c.exec(S::recover, {ms(now()), "jobq:recover:" + opt_.schema});
      Recovered out;
      for (int row = 0; row < PQntuples(r.get()); ++row) {
        if (std::string_view(PQgetvalue(r.get(), row, 0)) == "dead") {
          ++out.dead;
        } else {
          ++out.retried;
        }
      }
      return out;
    });
    if (rec.retried > 0 || rec.dead > 0) wake_.wake();
    constexpr int batch = 500;  // a bounded transaction each
    while (expire_due(batch) == batch) {
    }
    return rec;
  }

  /// @brief The job, if it exists.
  std::optional<JobRecord> get(JobId id) {
    return pool_.with_retry("get", Replay::safe, [&](Conn& c, bool) -> std::optional<JobRecord> {
      auto r = c.exec(S::get, {std::to_string(id)});
      if (PQntuples(r.get()) == 0) return std::nullopt;
      return detail::pg::row_to_job(r.get(), 0);
    });
  }

  /// @brief Cancels a queued, waiting or active job (and, per their policy, what waits for it).
  bool cancel(JobId id) { return cancel_many(std::span<const JobId>(&id, 1)).front(); }

  /// @brief cancel() of each id in order, in one transaction (one id: one statement, no
  /// transaction needed); one bool per id. Two batches locking the same jobs in opposite
  /// orders may deadlock: one fails (ErrorCategory::conflict) with nothing changed.
  std::vector<bool> cancel_many(std::span<const JobId> ids) {
    check_bulk_size(ids.size(), "cancel_many");
    if (ids.empty()) return {};
    const auto out = pool_.with_retry("cancel", Replay::never, [&](Conn& c, bool) {
      const auto t = ms(now());
      const auto each = [&] {
        std::vector<bool> done;
        done.reserve(ids.size());
        for (JobId id : ids) done.push_back(PQntuples(c.exec(S::cancel, {std::to_string(id), t}).get()) == 1);
        return done;
      };
      return ids.size() == 1 ? each() : detail::pg::in_transaction(c, each);
    });
    // dependents that continue on failure may have been released
    if (std::find(out.begin(), out.end(), true) != out.end()) wake_.wake();
    return out;
  }

  /// @brief Puts a dead job back in its queue with a fresh attempt budget; in a flow, what
  /// died because of it waits again (same transaction).
  bool redrive(JobId id) { return redrive_many(std::span<const JobId>(&id, 1)).front(); }

  /// @brief redrive() of each id in order, in one transaction; one bool per id.
  std::vector<bool> redrive_many(std::span<const JobId> ids) {
    check_bulk_size(ids.size(), "redrive_many");
    if (ids.empty()) return {};
    const auto out = pool_.with_retry("redrive", Replay::never, [&](Conn& c, bool) {
      return detail::pg::in_transaction(c, [&] {
        const auto t = ms(now());
        std::vector<bool> done;
        done.reserve(ids.size());
        for (JobId id : ids) {
          auto r = c.exec(S::redrive, {std::to_string(id), t});
          done.push_back(PQntuples(r.get()) == 1);
          if (done.back() && !PQgetisnull(r.get(), 0, 1)) c.exec(S::revive, {std::to_string(id)});
        }
        return done;
      });
    });
    if (std::find(out.begin(), out.end(), true) != out.end()) wake_.wake();
    return out;
  }

  /// @brief Stops claims from a queue (all processes).
  void pause(const std::string& queue) {
    validate_queue_name(queue);
    pool_.with_retry("pause", Replay::safe, [&](Conn& c, bool) { return c.exec(S::pause, {queue}) != nullptr; });
  }

  /// @brief Restores claims from a queue and wakes its waiters.
  void resume(const std::string& queue) {
    validate_queue_name(queue);
    pool_.with_retry("resume", Replay::safe,
                     [&](Conn& c, bool) { return c.exec(S::resume, {queue, channel_}) != nullptr; });
    wake_.wake();
  }

  /// @brief Whether a queue is paused.
  bool is_paused(const std::string& queue) {
    validate_queue_name(queue);
    return pool_.with_retry("is_paused", Replay::safe, [&](Conn& c, bool) {
      return PQntuples(c.exec(S::is_paused, {queue}).get()) == 1;
    });
  }

  /// @brief Jobs per state in a queue (exact).
  Counts counts(const std::string& queue) {
    validate_queue_name(queue);
    return pool_.with_retry("counts", Replay::safe, [&](Conn& c, bool) {
      auto r = c.exec(S::counts, {queue, ms(now())});
      Counts out;
      for (int row = 0; row < PQntuples(r.get()); ++row) {
        const auto n = detail::pg::to_i64(PQgetvalue(r.get(), row, 1));
        const std::string_view state = PQgetvalue(r.get(), row, 0);
        (state == "delayed" ? out.delayed : count_of(out, job_state_from_string(state))) = n;
      }
      return out;
    });
  }

  /// @brief Deletes finished jobs older than the retention of their state, then all but the
  /// newest retention.max_jobs of each finished state (one node at a time, like
  /// recover_expired: 0 when another node is pruning). Flow members go only as whole flows.
  std::size_t prune(const std::string& queue, const Retention& retention) {
    validate_queue_name(queue);
    auto keep = [](const std::optional<Millis>& m) {
      return m ? detail::pg::Param(std::to_string(m->count())) : std::nullopt;
    };
    const auto t = now();
    const auto lock = "jobq:prune:" + opt_.schema;
    // Each statement deletes at most 10,000 rows: repeated until a short batch.
    const auto batches = [&](S s, const detail::pg::Params& params) {
      std::size_t total = 0;
      for (;;) {
        const auto n = pool_.with_retry("prune", Replay::safe, [&](Conn& c, bool) {
          auto r = c.exec(s, params);
          return static_cast<std::size_t>(detail::pg::to_i64(PQcmdTuples(r.get())));
        });
        total += n;
        if (n < 10'000) return total;
      }
    };
    const detail::pg::Params params{queue, ms(t), keep(retention.completed), keep(retention.dead),
                                    keep(retention.cancelled), lock};
    auto total = batches(S::prune, params);
    // Whole flows, 100 at a time, until none is left (or another node holds the lock).
    for (;;) {
      const auto n = pool_.with_retry("prune", Replay::safe, [&](Conn& c, bool) {
        auto r = c.exec(S::prune_flows, params);
        return static_cast<std::size_t>(detail::pg::to_i64(PQgetvalue(r.get(), 0, 0)));
      });
      if (n == 0) break;
      total += n;
    }
    if (retention.max_jobs > 0) {
      for (const auto state : {JobState::completed, JobState::dead, JobState::cancelled}) {
        total += batches(S::prune_beyond, {queue, std::string(to_string(state)),
                                           std::to_string(retention.max_jobs), lock});
      }
    }
    return total;
  }

  /// @brief A page of a queue's jobs in one state, by id.
  std::vector<JobRecord> list(const std::string& queue, JobState state, Page page) {
    validate_queue_name(queue);
    return pool_.with_retry("list", Replay::safe, [&](Conn& c, bool) {
      auto r = c.exec(S::list, {queue, std::string(to_string(state)), std::to_string(page.limit),
                                std::to_string(page.offset)});
      return detail::pg::rows_to_jobs(r.get());
    });
  }

  /// @brief Blocks until work may be ready in one of the queues (a NOTIFY from any process, an
  /// enqueue in this one), min(timeout, poll_interval) passes, or stop is requested.
  ///
  /// One thread at a time owns the LISTEN connection; other callers, and poll-only mode, sleep
  /// on an in-process condition variable. It returns at once when a job is already ready.
  void wait_for_work(std::span<const std::string> queues, Millis timeout, std::stop_token stop) {
    const auto deadline = std::chrono::steady_clock::now() + std::min(timeout, opt_.poll_interval);
    wake_.wait(queues, deadline, stop, [&] { return ready_now(queues); });
  }

  /// @brief Sets the limits every claim of the queue honours, in every process (default: none).
  void set_queue_limits(const std::string& queue, const QueueLimits& limits) {
    validate_queue_name(queue);
    validate(limits);
    pool_.with_retry("set_queue_limits", Replay::safe, [&](Conn& c, bool) {
      if (limits == QueueLimits{}) return c.exec(S::clear_limits, {queue, channel_}) != nullptr;
      const auto rate = limits.rate;
      return c.exec(S::set_limits,
                    {queue, rate ? detail::pg::Param(std::to_string(rate->max)) : std::nullopt,
                     rate ? detail::pg::Param(std::to_string(rate->window.count())) : std::nullopt,
                     std::to_string(limits.group_concurrency), channel_,
                     std::to_string(limits.concurrency)}) != nullptr;
    });
    wake_.wake();
  }

  /// @brief The limits of a queue (none by default).
  QueueLimits queue_limits(const std::string& queue) {
    validate_queue_name(queue);
    return pool_.with_retry("queue_limits", Replay::safe, [&](Conn& c, bool) {
      auto r = c.exec(S::get_limits, {queue});
      QueueLimits l;
      if (PQntuples(r.get()) == 0) return l;
      if (!PQgetisnull(r.get(), 0, 0)) {
        l.rate = RateLimit{detail::pg::to_i64(PQgetvalue(r.get(), 0, 0)),
                           Millis{detail::pg::to_i64(PQgetvalue(r.get(), 0, 1))}};
      }
      l.group_concurrency = static_cast<int>(detail::pg::to_i64(PQgetvalue(r.get(), 0, 2)));
      l.concurrency = static_cast<int>(detail::pg::to_i64(PQgetvalue(r.get(), 0, 3)));
      return l;
    });
  }

  /// @brief Inserts or replaces the schedule named s.name.
  void put_schedule(const StoredSchedule& sched) {
    validate_schedule_name(sched.name);
    const auto spec = dump_for_storage(sched.spec, "schedule spec");
    detail::pg::require_no_nul(spec, "schedule spec");
    pool_.with_retry("put_schedule", Replay::safe, [&](Conn& c, bool) {
      return c.exec(S::put_schedule, {sched.name, spec, ms(sched.next_run)}) != nullptr;
    });
  }

  /// @brief Removes a schedule; false if there was none.
  bool remove_schedule(const std::string& name) {
    return pool_.with_retry("remove_schedule", Replay::never, [&](Conn& c, bool) {
      return PQntuples(c.exec(S::remove_schedule, {strip_nul(name)}).get()) == 1;
    });
  }

  /// @brief Every schedule, by name.
  std::vector<StoredSchedule> schedules() {
    return pool_.with_retry("schedules", Replay::safe, [&](Conn& c, bool) {
      auto r = c.exec(S::list_schedules, {});
      std::vector<StoredSchedule> out;
      for (int row = 0; row < PQntuples(r.get()); ++row) {
        StoredSchedule sched;
        sched.name = PQgetvalue(r.get(), row, 0);
        try {
          sched.spec = nlohmann::json::parse(PQgetvalue(r.get(), row, 1));
        } catch (const nlohmann::json::exception& e) {
          throw PostgresError(ErrorCategory::backend,
                              "postgres: stored schedule '" + sched.name + "' is not valid JSON: " + e.what());
        }
        sched.next_run = from_epoch_ms(detail::pg::to_i64(PQgetvalue(r.get(), row, 2)));
        out.push_back(std::move(sched));
      }
      return out;
    });
  }

  /// @brief If the schedule's next_run == expected: sets it to `next` and enqueues `job` (when
  /// set), in one transaction; true. Otherwise changes nothing; false.
  ///
  /// A connection lost before the commit was answered is a ConnectionError (the tick may or may
  /// not have fired), never a second enqueue.
  bool fire_schedule(const std::string& name, TimePoint expected, TimePoint next,
                     const std::optional<NewJob>& job) {
    std::optional<std::string> payload;
    if (job) payload = checked_payload(*job);
    const bool fired = pool_.with_retry("fire_schedule", Replay::never, [&](Conn& c, bool) {
      return detail::pg::in_transaction(c, [&] {
        auto r = c.exec(S::fire_schedule, {strip_nul(name), ms(expected), ms(next)});
        if (PQntuples(r.get()) == 0) return false;
        if (job) detail::pg::insert_one(c, *job, *payload, now());
        return true;
      });
    });
    if (fired && job) wake_.wake();
    return fired;
  }

  /// @brief Stores (or replaces) a worker's entry and deletes the expired ones, in one
  /// statement. Sent again after a lost connection: the same write twice is the same state.
  void register_worker(const WorkerInfo& w) {
    validate_worker_id(w.id);
    const auto info = dump_for_storage(to_json(w), "worker info");
    pool_.with_retry("register_worker", Replay::safe, [&](Conn& c, bool) {
      return c.exec(S::register_worker, {w.id, ms(w.expires_at), info, ms(now())}) != nullptr;
    });
  }

  /// @brief Deletes a worker's entry; false if there was none.
  bool unregister_worker(const std::string& id) {
    if (id.find('\0') != std::string::npos) return false;  // never stored, and libpq would cut it short
    return pool_.with_retry("unregister_worker", Replay::never, [&](Conn& c, bool) {
      return PQntuples(c.exec(S::unregister_worker, {id}).get()) == 1;
    });
  }

  /// @brief The entries not expired, by id.
  std::vector<WorkerInfo> workers() {
    return pool_.with_retry("workers", Replay::safe, [&](Conn& c, bool) {
      auto r = c.exec(S::list_workers, {ms(now())});
      std::vector<WorkerInfo> out;
      for (int row = 0; row < PQntuples(r.get()); ++row) {
        const std::string id = PQgetvalue(r.get(), row, 0);
        try {
          out.push_back(worker_info_from_json(nlohmann::json::parse(PQgetvalue(r.get(), row, 1))));
        } catch (const std::exception& e) {  // not JSON, or not a WorkerInfo
          throw PostgresError(ErrorCategory::backend, "postgres: stored worker '" + id + "' is corrupted: " + e.what());
        }
      }
      return out;
    });
  }

  /// @brief Calls fn for each notice of `queues` (all when empty) made by any process on this
  /// schema, until the Subscription ends. Returns once the listener is LISTENing, so changes
  /// committed after it returns are delivered; throws ConnectionError if it cannot listen.
  Subscription subscribe(std::span<const std::string> queues, NoticeFn fn) {
    for (const auto& q : queues) validate_queue_name(q);
    if (!fn) throw InvalidArgument("subscribe: the callback is empty");
    return notices_.subscribe(queues, std::move(fn));
  }

  /// @brief Calls fn for each cancel of an active job of `queues` (all when empty) by any
  /// process on this schema, until the Subscription ends: a LISTEN of its own, on a channel the
  /// cancel statement always sends to. Returns once LISTENing; ConnectionError if it cannot.
  Subscription watch_cancels(std::span<const std::string> queues, NoticeFn fn) {
    return cancels_.subscribe(queues, std::move(fn));
  }

  /// @brief The jobs, in the order of ids (nullopt where absent), in one round trip.
  std::vector<std::optional<JobRecord>> get_many(std::span<const JobId> ids) {
    std::vector<std::optional<JobRecord>> out(ids.size());
    if (ids.empty()) return out;
    const auto ids_lit = detail::pg::int_array(std::vector<JobId>(ids.begin(), ids.end()));
    auto jobs = pool_.with_retry("get_many", Replay::safe, [&](Conn& c, bool) {
      return detail::pg::rows_to_jobs(c.exec(S::get_many, {ids_lit}).get());
    });
    std::unordered_map<JobId, std::size_t> at;
    for (std::size_t i = 0; i < jobs.size(); ++i) at.emplace(jobs[i].id, i);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (auto it = at.find(ids[i]); it != at.end()) out[i] = jobs[it->second];
    }
    return out;
  }

  /// @brief Makes a queued job that is not yet due due now, in one statement that also wakes
  /// its queue's waiters in every process (NOTIFY).
  bool run_now(JobId id) {
    const bool ok = pool_.with_retry("run_now", Replay::never, [&](Conn& c, bool) {
      return PQntuples(c.exec(S::run_now, {std::to_string(id), ms(now())}).get()) == 1;
    });
    if (ok) wake_.wake();
    return ok;
  }

  /// @brief Deletes a finished job outside flows, in one statement, as prune does.
  bool remove(JobId id) {
    return pool_.with_retry("remove", Replay::never, [&](Conn& c, bool) {
      return PQntuples(c.exec(S::remove_job, {std::to_string(id)}).get()) == 1;
    });
  }

  /// @brief The job holding a unique key of a queue (the holder enqueue_keyed reads).
  std::optional<JobId> find_unique(const std::string& queue, const std::string& unique_key) {
    validate_queue_name(queue);
    check_unique_key(unique_key);
    detail::pg::require_no_nul(unique_key, "unique key");
    return pool_.with_retry("find_unique", Replay::safe, [&](Conn& c, bool) -> std::optional<JobId> {
      auto r = c.exec(S::find_unique, {queue, unique_key, ms(now())});
      if (PQntuples(r.get()) == 0) return std::nullopt;
      return detail::pg::to_i64(PQgetvalue(r.get(), 0, 0));
    });
  }

  /// @brief Stores a flow (members, dependencies, error callback) in one transaction.
  std::vector<JobId> enqueue_flow(const NewFlow& flow) {
    validate(flow);
    std::vector<std::string> payloads;
    payloads.reserve(flow.members.size() + 1);
    for (const auto& m : flow.members) payloads.push_back(checked_payload(m.job));
    if (flow.on_failure) payloads.push_back(checked_payload(*flow.on_failure));
    auto ids = pool_.with_retry("enqueue_flow", Replay::never, [&](Conn& c, bool) {
      return detail::pg::in_transaction(c, [&] { return detail::pg::insert_flow(c, flow, payloads, now()); });
    });
    wake_.wake();
    return ids;
  }

  /// @brief Cancels every queued or waiting member of job id's flow; how many.
  std::size_t cancel_flow(JobId id) {
    return pool_.with_retry("cancel_flow", Replay::never, [&](Conn& c, bool) {
      auto r = c.exec(S::cancel_flow, {std::to_string(id), ms(now())});
      return static_cast<std::size_t>(detail::pg::to_i64(PQgetvalue(r.get(), 0, 0)));
    });
  }

  /// @brief The flow job id belongs to, every member by id.
  std::optional<FlowRecord> flow(JobId id) {
    return pool_.with_retry("flow", Replay::safe, [&](Conn& c, bool) -> std::optional<FlowRecord> {
      auto members = detail::pg::rows_to_jobs(c.exec(S::flow_members, {std::to_string(id)}).get());
      if (members.empty()) return std::nullopt;
      FlowRecord f{members.front().flow_id, std::move(members)};
      return f;
    });
  }


  // ------------------------------------------------------------------------------------------
  // Beyond the concept

  /// @brief Transactional enqueue on the caller's own connection: inside the caller's open
  /// transaction the job exists iff that transaction commits. On an idle connection it runs
  /// in a transaction of its own. Never retried (the connection is the caller's).
  EnqueueResult enqueue(PGconn* tx, const NewJob& job) {
    const auto payload = checked_payload(job);
    detail::pg::CallerConn c{detail::pg::check_caller_conn(tx), &statements_};
    return detail::pg::insert_one(c, job, payload, now());
  }

  /// @brief enqueue_many on the caller's own connection (see enqueue(PGconn*, job)).
  std::vector<EnqueueResult> enqueue_many(PGconn* tx, std::span<const NewJob> jobs) {
    const auto payloads = checked_payloads(jobs);
    detail::pg::CallerConn c{detail::pg::check_caller_conn(tx), &statements_};
    if (jobs.empty()) return {};
    if (PQtransactionStatus(tx) == PQTRANS_IDLE) {
      return detail::pg::in_transaction(c, [&] { return detail::pg::insert_many(c, jobs, payloads, now()); });
    }
    return detail::pg::insert_many(c, jobs, payloads, now());
  }

  /// @brief Every queue that holds jobs or is paused, sorted by name.
  std::vector<std::string> queues() {
    return pool_.with_retry("queues", Replay::safe, [&](Conn& c, bool) {
      auto r = c.exec(S::queues, {});
      std::vector<std::string> out;
      for (int row = 0; row < PQntuples(r.get()); ++row) out.emplace_back(PQgetvalue(r.get(), row, 0));
      return out;
    });
  }

  /// @brief The schema this backend uses.
  [[nodiscard]] const std::string& schema() const noexcept { return opt_.schema; }

  /// @brief The server address this backend talks to, without the password.
  [[nodiscard]] const std::string& target() const noexcept { return connector_.target(); }

  /// @brief Connection trouble survived so far.
  [[nodiscard]] PostgresStats stats() const noexcept {
    return {pool_.retries(), pool_.unknown_outcomes(), claims_undone_.load()};
  }

  /// @brief The schema's applied migration version (reads the server).
  int schema_version() {
    return pool_.with_retry("read schema version", Replay::safe, [&](Conn& c, bool) {
      auto r = detail::pg::exec_text(c.raw(), statements_.schema_version);
      return static_cast<int>(detail::pg::to_i64(PQgetvalue(r.get(), 0, 0)));
    });
  }

 private:
  static PostgresOptions checked(PostgresOptions o) {
    detail::pg::check_options(o);
    return o;
  }

  // Shorthands for the conversions (values.hpp) nearly every operation makes.
  static std::string ms(TimePoint t) { return detail::pg::ms(t); }
  static std::string strip_nul(std::string s) { return detail::pg::strip_nul(std::move(s)); }

  // ------------------------------------------------------------------------------------------
  // Cancels up to `batch` queued jobs past their deadline (sql::expire); returns how many.
  int expire_due(int batch) {
    return pool_.with_retry("recover_expired: deadlines", Replay::safe, [&](Conn& c, bool) {
      return PQntuples(c.exec(S::expire, {ms(now()), std::to_string(batch)}).get());
    });
  }

  // Enqueue internals

  /// validate(job) and the payload as it will be stored, refused when above max_payload_bytes.
  std::string checked_payload(const NewJob& job) const {
    validate(job);
    check_deadline(job, now());
    detail::pg::require_no_nul(job.unique_key, "unique key");
    detail::pg::require_no_nul(job.group, "group key");
    auto text = job.payload.dump();  // validate(job) ran check_json: no throw, no second walk
    check_payload_size(text.size(), opt_.max_payload_bytes);
    return text;
  }

  // Every job is checked before the first one is written: all or nothing, even inside the
  // caller's own transaction.
  std::vector<std::string> checked_payloads(std::span<const NewJob> jobs) const {
    std::vector<std::string> out;
    out.reserve(jobs.size());
    for (const auto& j : jobs) out.push_back(checked_payload(j));
    return out;
  }

  // ------------------------------------------------------------------------------------------
  // Lost claims

  void remember_pending_release(const std::vector<detail::pg::Param>& tokens) {
    std::lock_guard lock(pending_mutex_);
    pending_release_.insert(pending_release_.end(), tokens.begin(), tokens.end());
  }

  /// Gives back the jobs of claims whose answer never arrived (their tokens were ours).
  void flush_pending_releases(Conn& c) {
    std::vector<detail::pg::Param> tokens;
    {
      std::lock_guard lock(pending_mutex_);
      if (pending_release_.empty()) return;
      tokens.swap(pending_release_);
    }
    try {
      auto r = c.exec(S::release_tokens, {detail::pg::text_array(tokens), ms(now())});
      claims_undone_ += static_cast<std::uint64_t>(PQntuples(r.get()));
      if (PQntuples(r.get()) > 0) wake_.wake();
    } catch (...) {
      remember_pending_release(tokens);  // idempotent: try again next time
      throw;
    }
  }

  // ------------------------------------------------------------------------------------------
  // Waiting

  /// Whether one of the queues has a job ready now (true when that cannot be told).
  bool ready_now(std::span<const std::string> queues) {
    std::vector<detail::pg::Param> qs;
    for (const auto& q : queues) {
      validate_queue_name(q);
      qs.emplace_back(q);
    }
    try {
      auto lease = pool_.acquire();
      return PQntuples((*lease).exec(S::ready, {detail::pg::text_array(qs), ms(now())}).get()) > 0;
    } catch (const Error&) {
      throw;
    } catch (...) {
      return true;  // cannot tell: let the caller's claim report the problem
    }
  }

  PostgresOptions opt_;
  detail::pg::Connector connector_;
  detail::pg::StatementTable statements_;  // the schema filled in
  std::string channel_;                    // wake-up channel: 'jobq:<schema>'
  detail::pg::ConnectionPool pool_;
  detail::pg::WakeListener wake_;          // wait_for_work
  detail::pg::NoticeListener notices_;     // subscribe
  detail::pg::NoticeListener cancels_;     // watch_cancels

  std::mutex pending_mutex_;
  std::vector<detail::pg::Param> pending_release_;  // tokens of claims whose answer was lost
  std::atomic<std::uint64_t> claims_undone_{0};
};

static_assert(Backend<PostgresBackend>);

}  // namespace jobq
