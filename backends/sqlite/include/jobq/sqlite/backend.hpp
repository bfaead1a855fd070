#pragma once

#include <sqlite3.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "jobq/backend.hpp"
#include "jobq/error.hpp"
#include "jobq/events.hpp"
#include "jobq/job.hpp"
#include "jobq/sqlite/claim.hpp"
#include "jobq/sqlite/connection.hpp"
#include "jobq/sqlite/enqueue.hpp"
#include "jobq/sqlite/error.hpp"
#include "jobq/sqlite/flows.hpp"
#include "jobq/sqlite/migrations.hpp"
#include "jobq/sqlite/options.hpp"
#include "jobq/sqlite/rows.hpp"
#include "jobq/sqlite/statements.hpp"
#include "jobq/sqlite/waiting.hpp"
#include "jobq/time.hpp"
#include "jobq/worker_info.hpp"

namespace jobq {

/// @brief Backend on one SQLite file in WAL mode, shared by the threads of a process and by any
/// number of processes on the same host.
///
/// Connections (detail::sqlite::ConnectionPool): one writer connection, used under a mutex, and
/// a small pool of reader connections; reads (get, list, counts, the wait_for_work poll) use
/// the readers, which WAL never blocks on the writer. Every statement is prepared once per
/// connection.
class SqliteBackend {
  using Connection = detail::sqlite::Connection;

 public:
  /// @brief Opens (or creates) the database at `path` and brings its schema up to date.
  explicit SqliteBackend(std::string path, SqliteOptions options = {})
      : path_(std::move(path)),
        opt_(detail::sqlite::checked(path_, std::move(options))),
        pool_(path_, opt_),
        db_file_(file_of(pool_.writer_handle())),
        hubs_(detail::sqlite::hubs_for(db_file_.empty() ? path_ : db_file_)) {
    detail::sqlite::migrate(pool_, path_, opt_.read_only, opt_.clock);
  }

  SqliteBackend(const SqliteBackend&) = delete;
  SqliteBackend& operator=(const SqliteBackend&) = delete;

  /// @brief True when the file was opened for inspection only (SqliteOptions::read_only).
  [[nodiscard]] bool read_only() const noexcept { return opt_.read_only; }

  /// @brief The database file's path as given.
  [[nodiscard]] const std::string& path() const noexcept { return path_; }

  /// @brief The schema version of the open file (detail::sqlite::latest_schema_version() once open).
  int schema_version() {
    return pool_.read("read schema version", [](Connection& c) {
      auto s = c.query(detail::sqlite::sql::read_version, "read schema version");
      return s.step() ? static_cast<int>(s.integer(0)) : 0;
    });
  }

  /// @brief The backend's clock.
  [[nodiscard]] TimePoint now() const { return opt_.clock(); }

  /// @brief Stores a job (or returns the holder of its unique key), in its own transaction.
  EnqueueResult enqueue(const NewJob& job) {
    auto r = enqueue_many(std::span<const NewJob>(&job, 1));
    return r.front();
  }

  /// @brief Stores many jobs in one transaction, all or nothing.
  std::vector<EnqueueResult> enqueue_many(std::span<const NewJob> jobs) {
    std::vector<detail::sqlite::Encoded> encoded;
    encoded.reserve(jobs.size());
    for (const auto& j : jobs) encoded.push_back(encode(j));  // before any write
    if (jobs.empty()) return {};
    bool wake = false;
    auto out = pool_.write("enqueue", [&](Connection& c) {
      const auto t = now();
      std::vector<EnqueueResult> res;
      res.reserve(jobs.size());
      for (std::size_t i = 0; i < jobs.size(); ++i) {
        res.push_back(detail::sqlite::insert_job(detail::sqlite::cached(c, "enqueue"), jobs[i], encoded[i], t));
        wake = wake || detail::sqlite::ready_now(res.back(), jobs[i], t);
      }
      return res;
    });
    if (wake) notify();
    return out;
  }

  /// @brief Leases up to req.limit ready jobs, best first across the queues, in one BEGIN
  /// IMMEDIATE transaction: the queues' settings rows (paused, limits), then one
  /// UPDATE … RETURNING (a single job: pick, lease and read it by primary key).
  ///
  /// Queues without limits take the same single statement as before limits existed. A queue
  /// with limits (set_queue_limits) is walked in claim order skipping saturated groups, as far
  /// as its rate allowance goes, and the chosen jobs are leased by id. The transaction holds
  /// SQLite's one write lock, so the limits hold across every thread and process on the file.
  ///
  /// A claimed row that cannot be decoded (say its payload is not valid JSON) is not returned:
  /// it is made dead in the same transaction with an error naming the problem, so it can never
  /// block its queue; its stored columns are kept for inspection and redrive after repair.
  std::vector<JobRecord> claim(const ClaimRequest& req) {
    const auto queues = claim_queues(req);
    if (queues.empty() || req.limit == 0) return {};
    const auto limit = static_cast<std::int64_t>(std::min<std::size_t>(req.limit, INT64_MAX));
    detail::sqlite::FlowEffects fx;  // of a corrupted row made dead
    auto out = pool_.write("claim", [&](Connection& c) {
      fx = {};
      return detail::sqlite::claim_jobs(c, queues, req, limit, now(), fx);
    });
    // RETURNING hands rows back in no particular order.
    std::sort(out.begin(), out.end(), claims_before);
    after(fx);
    return out;
  }

  /// @brief Records a success if the lease token is current.
  bool complete(JobId id, const std::string& token, const nlohmann::json& result) {
    check_json(result, "result");  // before the copy below, which recurses
    Completion c{id, token, result};
    return complete_many(std::span<const Completion>(&c, 1)).front();
  }

  /// @brief Records many successes in one transaction; one bool per completion.
  std::vector<bool> complete_many(std::span<const Completion> completions) {
    std::vector<std::string> results;
    results.reserve(completions.size());
    for (const auto& c : completions) results.push_back(dump_for_storage(c.result, "result"));
    if (completions.empty()) return {};
    // Notices cost a RETURNING per job: built only while someone in this process listens.
    const bool announce = !hubs_->events.empty();
    std::vector<JobNotice> notices;
    detail::sqlite::FlowEffects fx;
    auto ok = pool_.write("complete", [&](Connection& c) {
      notices.clear();
      fx = {};
      const auto now_t = now();
      const auto t = to_epoch_ms(now_t);
      std::vector<bool> out;
      out.reserve(completions.size());
      bool waiting = false;  // else no completion has a dependent to settle
      if (auto w = c.query(detail::sqlite::sql::any_waiting, "complete"); w.step()) waiting = w.integer(0) != 0;
      for (std::size_t i = 0; i < completions.size(); ++i) {
        const auto& done = completions[i];
        if (done.lease_token.empty()) {
          out.push_back(false);
          continue;
        }
        auto s = c.query(announce ? detail::sqlite::sql::complete_notice : detail::sqlite::sql::complete, "complete");
        s.bind(1, done.id).bind(2, done.lease_token).bind(3, t).bind(4, results[i]);
        if (!announce) {
          out.push_back(s.run() == 1);
        } else if (s.step()) {
          notices.push_back({JobNotice::Kind::completed, done.id, s.text(0), static_cast<int>(s.integer(1)), 0, {}});
          s.run();
          out.push_back(true);
        } else {
          out.push_back(false);
        }
        if (out.back() && waiting) detail::sqlite::settle_dependents(c, done.id, JobState::completed, {}, now_t, fx);
      }
      return out;
    });
    hubs_->events.publish(notices);  // after the commit: only committed changes are announced
    after(fx);
    return ok;
  }

  /// @brief Records a failed attempt: retry at f.retry_at, or dead.
  FailOutcome fail(const Failure& f) {
    if (f.lease_token.empty()) return FailOutcome::rejected;
    const auto message = detail::sqlite::as_json_text(f.error);
    JobNotice notice;
    detail::sqlite::FlowEffects fx;
    const auto [outcome, wake] = pool_.write("fail", [&](Connection& c) {
      fx = {};
      const auto t = now();
      auto s = c.query(detail::sqlite::sql::fail, "fail");
      s.bind(1, f.id).bind(2, f.lease_token).bind(3, to_epoch_ms(t)).bind(4, message);
      if (f.retry_at) {
        s.bind(5, to_epoch_ms(*f.retry_at));
      } else {
        s.bind_null(5);
      }
      if (!s.step()) return std::pair{FailOutcome::rejected, false};
      const bool retried = s.text(0) == "queued";
      notice = {retried ? JobNotice::Kind::failed : JobNotice::Kind::dead, f.id, s.text(1),
                static_cast<int>(s.integer(2)), 0, f.error};
      const JobId flow_id = s.is_null(3) ? 0 : s.integer(3);
      s.run();
      if (!retried && flow_id != 0) detail::sqlite::died(c, f.id, flow_id, f.error, t, fx);
      return std::pair{retried ? FailOutcome::retried : FailOutcome::dead, retried && *f.retry_at <= t};
    });
    if (wake) notify();
    if (outcome != FailOutcome::rejected) hubs_->events.publish(notice);
    after(fx);
    return outcome;
  }

  /// @brief Heartbeat: pushes the lease deadline to now + lease.
  bool extend_lease(JobId id, const std::string& token, Millis lease) {
    check_duration(lease, "lease");
    if (token.empty()) return false;
    return pool_.write("extend lease", [&](Connection& c) {
      return c.query(detail::sqlite::sql::extend_lease, "extend lease")
                 .bind(1, id)
                 .bind(2, token)
                 .bind(3, to_epoch_ms(now() + lease))
                 .run() == 1;
    });
  }

  /// @brief Gives a leased job back without counting the attempt.
  bool release(JobId id, const std::string& token) { return snooze(id, token, now()); }

  /// @brief Gives a leased job back to run at run_at, without counting the attempt.
  bool snooze(JobId id, const std::string& token, TimePoint run_at) {
    if (token.empty()) return false;
    const bool ok = pool_.write("snooze", [&](Connection& c) {
      return c.query(detail::sqlite::sql::release, "snooze").bind(1, id).bind(2, token).bind(3, to_epoch_ms(run_at)).run() ==
             1;
    });
    if (ok) notify();
    return ok;
  }

  /// @brief Records progress (clamped to 0..100) of an active job.
  bool set_progress(JobId id, const std::string& token, int percent, const std::string& message) {
    if (token.empty()) return false;
    const int pct = std::clamp(percent, 0, 100);
    JobNotice notice;
    const bool ok = pool_.write("set progress", [&](Connection& c) {
      auto s = c.query(detail::sqlite::sql::set_progress, "set progress");
      s.bind(1, id).bind(2, token).bind(3, pct).bind(4, message);
      if (!s.step()) return false;
      notice = {JobNotice::Kind::progress, id, s.text(0), static_cast<int>(s.integer(1)), pct, message};
      s.run();
      return true;
    });
    if (ok) hubs_->events.publish(notice);
    return ok;
  }

  /// @brief Requeues (or kills, on the last attempt) every job whose lease has expired.
  Recovered recover_expired() {
    std::vector<JobNotice> notices;
    detail::sqlite::FlowEffects fx;
    const auto r = pool_.write("recover expired leases", [&](Connection& c) {
      notices.clear();
      fx = {};
      const auto t = now();
      Recovered rec;
      std::vector<std::pair<JobId, JobId>> dead_members;  // (job, flow)
      {
        auto s = c.query(detail::sqlite::sql::recover_expired, "recover expired leases");
        s.bind(1, to_epoch_ms(t)).bind(2, lease_expired_message);
        while (s.step()) {
          const bool retried = s.text(0) == "queued";
          (retried ? rec.retried : rec.dead) += 1;
          notices.push_back({retried ? JobNotice::Kind::failed : JobNotice::Kind::dead, s.integer(1), s.text(2),
                             static_cast<int>(s.integer(3)), 0, lease_expired_message});
          if (!retried && !s.is_null(4)) dead_members.emplace_back(s.integer(1), s.integer(4));
        }
      }
      for (const auto& [id, flow_id] : dead_members) detail::sqlite::died(c, id, flow_id, lease_expired_message, t, fx);
      return rec;
    });
    if (r.retried > 0) notify();
    hubs_->events.publish(notices);
    after(fx);
    constexpr std::size_t batch = 500;  // a bounded write transaction each
    while (expire_due(batch) == batch) {
    }
    return r;
  }

  /// @brief The job, if it exists. A row that cannot be decoded throws SqliteError naming it.
  std::optional<JobRecord> get(JobId id) {
    return pool_.read("get job", [&](Connection& c) -> std::optional<JobRecord> {
      auto s = c.query(detail::sqlite::sql::read_job, "get job");
      s.bind(1, id);
      if (!s.step()) return std::nullopt;
      return detail::sqlite::decode(s);
    });
  }

  /// @brief Cancels a queued, waiting or active job (and, per their policy, what waits for it).
  bool cancel(JobId id) { return cancel_many(std::span<const JobId>(&id, 1)).front(); }

  /// @brief cancel() of each id in order, in one transaction; one bool per id.
  std::vector<bool> cancel_many(std::span<const JobId> ids) {
    check_bulk_size(ids.size(), "cancel_many");
    if (ids.empty()) return {};
    detail::sqlite::FlowEffects fx;
    auto out = pool_.write("cancel", [&](Connection& c) {
      fx = {};
      const auto t = now();
      std::vector<bool> done;
      done.reserve(ids.size());
      for (JobId id : ids) done.push_back(cancel_in(c, id, t, fx));
      return done;
    });
    after(fx);
    hubs_->cancels.publish(fx.notices);
    return out;
  }

  /// @brief Puts a dead job back in its queue with a fresh attempt budget (errors kept). A flow
  /// member: false while a dependency is not completed (unless it continues on failure); what
  /// died because of it waits again.
  bool redrive(JobId id) { return redrive_many(std::span<const JobId>(&id, 1)).front(); }

  /// @brief redrive() of each id in order, in one transaction; one bool per id.
  std::vector<bool> redrive_many(std::span<const JobId> ids) {
    check_bulk_size(ids.size(), "redrive_many");
    if (ids.empty()) return {};
    auto out = pool_.write("redrive", [&](Connection& c) {
      const auto t = now();
      std::vector<bool> done;
      done.reserve(ids.size());
      for (JobId id : ids) done.push_back(redrive_in(c, id, t));
      return done;
    });
    if (std::find(out.begin(), out.end(), true) != out.end()) notify();
    return out;
  }

  /// @brief Stops claims from a queue (kept in jobq_queues, so every process sees it).
  void pause(const std::string& queue) { set_paused(queue, true); }

  /// @brief Restores claims from a queue.
  void resume(const std::string& queue) {
    set_paused(queue, false);
    notify();
  }

  /// @brief Whether a queue is paused.
  bool is_paused(const std::string& queue) {
    validate_queue_name(queue);
    return pool_.read("is paused", [&](Connection& c) {
      auto s = c.query(detail::sqlite::sql::is_paused, "is paused");
      s.bind(1, queue);
      return s.step() && s.integer(0) != 0;
    });
  }

  /// @brief Jobs per state in a queue.
  Counts counts(const std::string& queue) {
    validate_queue_name(queue);
    return pool_.read("counts", [&](Connection& c) { return detail::sqlite::read_counts(c, queue, now()); });
  }

  /// @brief Deletes finished jobs older than the retention of their state, then all but the
  /// newest retention.max_jobs of each finished state (both outside flows), then the whole
  /// flows with a member in the queue whose members are all finished and that old. Jobs go in
  /// batches of kPruneBatch, a write transaction each, so claims and completions run between
  /// them (one DELETE of 100,000 rows held the file's write lock for 1.4 s).
  std::size_t prune(const std::string& queue, const Retention& retention) {
    validate_queue_name(queue);
    const auto t = now();
    std::size_t n = 0;
    // Each batch is found from the index's start (what the last one deleted is gone), so the
    // batches together cost what one DELETE would.
    const auto batches = [&](auto&& bind_cut) {
      for (;;) {
        const auto done = pool_.write("prune", [&](Connection& c) {
          auto s = bind_cut(c);
          return static_cast<std::size_t>(s.run());
        });
        n += done;
        if (done < static_cast<std::size_t>(kPruneBatch)) return;
      }
    };
    const std::pair<JobState, std::optional<Millis>> rules[] = {
        {JobState::completed, retention.completed},
        {JobState::dead, retention.dead},
        {JobState::cancelled, retention.cancelled}};
    for (const auto& rule : rules) {
      const std::string_view state = to_string(rule.first);
      if (const auto keep = rule.second) {
        const auto cut = to_epoch_ms(t - *keep);
        batches([&](Connection& c) {
          auto s = c.query(detail::sqlite::sql::prune, "prune");
          s.bind(1, queue).bind(2, state).bind(3, cut).bind(4, kPruneBatch);
          return s;
        });
      }
      if (retention.max_jobs == 0) continue;
      // By count: the newest job past the kept ones, read once; then everything up to it.
      const auto cut = pool_.read("prune", [&](Connection& c) -> std::optional<std::pair<std::int64_t, std::int64_t>> {
        auto s = c.query(detail::sqlite::sql::prune_cutoff, "prune");
        s.bind(1, queue).bind(2, state).bind(3, static_cast<std::int64_t>(std::min<std::size_t>(retention.max_jobs, INT64_MAX)));
        if (!s.step()) return std::nullopt;
        return std::pair{s.integer(0), s.integer(1)};
      });
      if (!cut) continue;
      batches([&](Connection& c) {
        auto s = c.query(detail::sqlite::sql::prune_before, "prune");
        s.bind(1, queue).bind(2, state).bind(3, cut->first).bind(4, cut->second).bind(5, kPruneBatch);
        return s;
      });
    }
    return n + pool_.write("prune", [&](Connection& c) { return detail::sqlite::prune_flows(c, queue, retention, t); });
  }

  /// @brief A page of a queue's jobs in one state, by id. A row that cannot be decoded throws
  /// SqliteError naming it.
  std::vector<JobRecord> list(const std::string& queue, JobState state, Page page) {
    validate_queue_name(queue);
    return pool_.read("list jobs", [&](Connection& c) {
      std::vector<JobRecord> out;
      auto s = c.query(detail::sqlite::sql::list_jobs, "list jobs");
      s.bind(1, queue)
          .bind(2, to_string(state))
          .bind(3, static_cast<std::int64_t>(std::min<std::size_t>(page.limit, INT64_MAX)))
          .bind(4, static_cast<std::int64_t>(std::min<std::size_t>(page.offset, INT64_MAX)));
      while (s.step()) out.push_back(detail::sqlite::decode(s));
      return out;
    });
  }

  /// @brief Sleeps until work may be ready in one of the queues, the timeout, or stop.
  ///
  /// An enqueue, retry, release, redrive, recovery or resume in this process wakes it at once.
  /// Work from other processes (and delayed jobs coming due) is found by looking at the file
  /// every poll_interval — an indexed read per queue (jobq_jobs_ready), no write lock.
  void wait_for_work(std::span<const std::string> queues, Millis timeout, std::stop_token stop) {
    waiters_.wait(
        timeout, std::move(stop), opt_.poll_interval,
        [&] { return detail::sqlite::next_due(pool_, queues, opt_.clock); }, opt_.clock);
  }

  /// @brief Sets a queue's limits (kept in jobq_queues beside its paused flag; every claim of
  /// every process reads them in its transaction).
  void set_queue_limits(const std::string& queue, const QueueLimits& limits) {
    validate_queue_name(queue);
    validate(limits);
    pool_.write("set queue limits", [&](Connection& c) {
      auto s = c.query(detail::sqlite::sql::set_limits, "set queue limits");
      s.bind(1, queue).bind(2, limits.group_concurrency).bind(5, limits.concurrency);
      if (limits.rate) {
        s.bind(3, limits.rate->max).bind(4, static_cast<std::int64_t>(limits.rate->window.count()));
      } else {
        s.bind_null(3).bind_null(4);
      }
      s.run();
      if (!limits.rate) {  // claims of an unlimited queue no longer prune its ledger
        c.query(detail::sqlite::sql::rate_forget, "set queue limits: clear rate ledger").bind(1, queue).run();
      }
    });
    notify();  // a raised limit may make waiting jobs claimable
  }

  /// @brief A queue's limits (none unless set).
  QueueLimits queue_limits(const std::string& queue) {
    validate_queue_name(queue);
    return pool_.read("queue limits", [&](Connection& c) { return detail::sqlite::read_settings(c, queue).limits; });
  }

  /// @brief Inserts or replaces the schedule named s.name (its spec stored as JSON text).
  void put_schedule(const StoredSchedule& schedule) {
    validate_schedule_name(schedule.name);
    const auto spec = dump_for_storage(schedule.spec, "schedule spec");
    pool_.write("put schedule", [&](Connection& c) {
      c.query(detail::sqlite::sql::put_schedule, "put schedule")
          .bind(1, schedule.name)
          .bind(2, spec)
          .bind(3, to_epoch_ms(schedule.next_run))
          .run();
    });
  }

  /// @brief Deletes a schedule; false if there was none of that name.
  bool remove_schedule(const std::string& name) {
    validate_schedule_name(name);
    return pool_.write("remove schedule", [&](Connection& c) {
      return c.query(detail::sqlite::sql::remove_schedule, "remove schedule").bind(1, name).run() == 1;
    });
  }

  /// @brief Every schedule, by name.
  std::vector<StoredSchedule> schedules() {
    return pool_.read("list schedules", [](Connection& c) { return detail::sqlite::read_schedules(c); });
  }

  /// @brief If the schedule's next_run is still `expected`: sets it to `next` and enqueues
  /// `job` (if any) exactly as enqueue does, in one transaction; true. Otherwise (another
  /// scheduler fired this tick, or the schedule is gone) changes nothing; false.
  bool fire_schedule(const std::string& name, TimePoint expected, TimePoint next,
                     const std::optional<NewJob>& job) {
    validate_schedule_name(name);
    std::optional<detail::sqlite::Encoded> e;
    if (job) e = encode(*job);  // before any write
    bool wake = false;
    const bool fired = pool_.write("fire schedule", [&](Connection& c) {
      if (c.query(detail::sqlite::sql::fire_schedule, "fire schedule")
              .bind(1, name)
              .bind(2, to_epoch_ms(expected))
              .bind(3, to_epoch_ms(next))
              .run() != 1) {
        return false;
      }
      if (job) {
        const auto t = now();
        const auto r = detail::sqlite::insert_job(detail::sqlite::cached(c, "fire schedule: enqueue"), *job, *e, t);
        wake = detail::sqlite::ready_now(r, *job, t);
      }
      return true;
    });
    if (wake) notify();
    return fired;
  }

  /// @brief Stores (or replaces) a worker's entry and deletes the expired ones, in one
  /// transaction.
  void register_worker(const WorkerInfo& w) {
    validate_worker_id(w.id);
    const auto info = dump_for_storage(to_json(w), "worker info");
    pool_.write("register worker", [&](Connection& c) {
      c.query(detail::sqlite::sql::prune_workers, "register worker: prune").bind(1, to_epoch_ms(now())).run();
      c.query(detail::sqlite::sql::put_worker, "register worker")
          .bind(1, w.id)
          .bind(2, to_epoch_ms(w.expires_at))
          .bind(3, info)
          .run();
    });
  }

  /// @brief Deletes a worker's entry; false if there was none.
  bool unregister_worker(const std::string& id) {
    return pool_.write("unregister worker", [&](Connection& c) {
      return c.query(detail::sqlite::sql::remove_worker, "unregister worker").bind(1, id).run() == 1;
    });
  }

  /// @brief The entries not expired, by id.
  std::vector<WorkerInfo> workers() {
    const auto t = to_epoch_ms(now());
    return pool_.read("list workers", [&](Connection& c) { return detail::sqlite::read_workers(c, t); });
  }

  /// @brief Calls fn for every notice of `queues` (all when empty) from this process: changes
  /// made through any SqliteBackend object on the same file in this process, announced after
  /// their commit. Other processes' changes are not delivered: backends/sqlite/README.md, "Limits, schedules, events".
  Subscription subscribe(std::span<const std::string> queues, NoticeFn fn) {
    return keep_hubs(hubs_->events.subscribe(queues, std::move(fn)));
  }

  /// @brief Calls fn for every cancel_many notice of `queues` (all when empty) made through
  /// any SqliteBackend object on the same file in this process, after its commit. Workers in
  /// other processes see a cancel at their next heartbeat (backends/sqlite/README.md).
  Subscription watch_cancels(std::span<const std::string> queues, NoticeFn fn) {
    return keep_hubs(hubs_->cancels.subscribe(queues, std::move(fn)));
  }

  /// @brief get() of each id, in one statement (one snapshot).
  std::vector<std::optional<JobRecord>> get_many(std::span<const JobId> ids) {
    if (ids.empty()) return {};
    const auto list = nlohmann::json(std::vector<JobId>(ids.begin(), ids.end())).dump();
    auto found = pool_.read("get jobs", [&](Connection& c) {
      std::unordered_map<JobId, JobRecord> rows;
      auto s = c.query(detail::sqlite::sql::read_jobs, "get jobs");
      s.bind(1, list);
      while (s.step()) {
        auto r = detail::sqlite::decode(s);
        rows.emplace(r.id, std::move(r));
      }
      return rows;
    });
    std::vector<std::optional<JobRecord>> out;
    out.reserve(ids.size());
    for (JobId id : ids) {
      auto it = found.find(id);
      out.push_back(it == found.end() ? std::nullopt : std::optional<JobRecord>(it->second));
    }
    return out;
  }

  /// @brief Makes a queued job that is not yet due due now, in one statement (and wakes this
  /// process's waiters; other processes see it at their next poll).
  bool run_now(JobId id) {
    const auto changed = pool_.write("run now", [&](Connection& c) {
      return c.query(detail::sqlite::sql::run_now, "run now").bind(1, id).bind(2, to_epoch_ms(now())).run();
    });
    if (changed != 1) return false;
    notify();
    return true;
  }

  /// @brief Deletes a finished job outside flows, in one statement, as prune does.
  bool remove(JobId id) {
    return pool_.write("remove", [&](Connection& c) {
      return c.query(detail::sqlite::sql::remove_job, "remove").bind(1, id).run() == 1;
    });
  }

  /// @brief The job holding a unique key of a queue (enqueue's holder lookup, one read).
  std::optional<JobId> find_unique(const std::string& queue, const std::string& unique_key) {
    validate_queue_name(queue);
    check_unique_key(unique_key);
    const auto t_ms = to_epoch_ms(now());
    return pool_.read("find unique", [&](Connection& c) -> std::optional<JobId> {
      auto s = c.query(detail::sqlite::sql::find_holder, "find unique");
      s.bind(1, queue).bind(2, unique_key);
      if (!s.step() || !detail::sqlite::holds_key(s, s.text(1), t_ms)) return std::nullopt;
      return s.integer(0);
    });
  }

  /// @brief Stores a flow's members, dependencies and error callback in one transaction, all or
  /// nothing; returns the members' ids in the flow's order.
  std::vector<JobId> enqueue_flow(const NewFlow& flow) {
    validate(flow);
    std::vector<detail::sqlite::Encoded> encoded;
    encoded.reserve(flow.members.size());
    for (const auto& m : flow.members) encoded.push_back(encode(m.job));  // before any write
    bool wake = false;
    auto ids = pool_.write("enqueue flow", [&](Connection& c) {
      wake = false;
      return detail::sqlite::store_flow(c, flow, encoded, now(), wake);
    });
    if (wake) notify();
    return ids;
  }

  /// @brief Cancels every queued or waiting member of job id's flow; 0 when it is in none.
  std::size_t cancel_flow(JobId id) {
    detail::sqlite::FlowEffects fx;
    const auto n = pool_.write("cancel flow", [&](Connection& c) -> std::size_t {
      fx = {};
      JobId flow_id = 0;
      {
        auto s = c.query(detail::sqlite::sql::flow_of, "cancel flow");
        s.bind(1, id);
        if (!s.step() || s.is_null(0)) return 0;
        flow_id = s.integer(0);
      }
      return detail::sqlite::cancel_members(c, flow_id, now(), fx);
    });
    after(fx);
    return n;
  }

  /// @brief The flow of job id, every member by id (one statement); nullopt when it is in none.
  std::optional<FlowRecord> flow(JobId id) {
    return pool_.read("get flow", [&](Connection& c) -> std::optional<FlowRecord> {
      FlowRecord r;
      auto s = c.query(detail::sqlite::sql::read_flow, "get flow");
      s.bind(1, id);
      while (s.step()) r.members.push_back(detail::sqlite::decode(s));
      if (r.members.empty()) return std::nullopt;
      r.id = r.members.front().flow_id;
      return r;
    });
  }


  // Beyond the Backend concept.

  /// @brief Transactional enqueue on the caller's own connection `db` (same database file),
  /// inside the caller's transaction if one is open: the job exists iff that transaction commits.
  /// Starts no transaction of its own inside the caller's (a savepoint makes the job's own
  /// statements all-or-nothing). The schema must already exist (open a SqliteBackend on the file
  /// first). In-process waiters are woken at once only when `db` was in autocommit mode; a job
  /// enqueued inside an open transaction is found by the next poll, or call notify() after commit.
  EnqueueResult enqueue(sqlite3* db, const NewJob& job) {
    if (db == nullptr) throw InvalidArgument("sqlite: enqueue on a null connection");
    const auto e = encode(job);
    const char* file = sqlite3_db_filename(db, "main");
    if (file == nullptr || std::string_view(file) != db_file_) {
      throw InvalidArgument(std::string("sqlite: transactional enqueue: the connection is on '") +
                            (file != nullptr ? file : "?") + "', not on this backend's database '" +
                            db_file_ + "'");
    }
    const bool autocommit = sqlite3_get_autocommit(db) != 0;
    const auto t = now();
    const auto r = detail::sqlite::enqueue_on(db, job, e, t);
    if (autocommit && r.created && job.run_at.value_or(t) <= t) notify();
    return r;
  }

  /// @brief Wakes this process's wait_for_work callers (e.g. after committing a transaction
  /// that enqueued jobs through enqueue(sqlite3*, job)).
  void notify() { waiters_.notify(); }

  /// @brief Every queue that holds jobs or was paused, sorted by name.
  std::vector<std::string> queues() {
    return pool_.read("queues", [&](Connection& c) {
      auto s = c.query(detail::sqlite::sql::queues, "queues");
      std::vector<std::string> out;
      while (s.step()) out.push_back(s.text(0));
      return out;
    });
  }

 private:
  /// @brief The error recorded (and announced) for a job whose lease ran out.
  static constexpr const char* lease_expired_message = "lease expired (worker lost or too slow)";
  static constexpr std::int64_t kPruneBatch = 5'000;  // jobs per prune transaction

  static std::string file_of(sqlite3* db) {
    const char* f = sqlite3_db_filename(db, "main");
    return f != nullptr ? f : "";
  }

  // cancel of job `id` inside the caller's transaction; its notice, then its flow's, go to fx.
  static bool cancel_in(Connection& c, JobId id, TimePoint t, detail::sqlite::FlowEffects& fx) {
    JobId flow_id = 0;
    {
      auto s = c.query(detail::sqlite::sql::cancel, "cancel");
      s.bind(1, id).bind(2, to_epoch_ms(t));
      if (!s.step()) return false;
      fx.notices.push_back(JobNotice{JobNotice::Kind::cancelled, id, s.text(0), 0, 0, {}});
      flow_id = s.is_null(1) ? 0 : s.integer(1);
      s.run();
    }
    if (flow_id != 0) {
      c.query(detail::sqlite::sql::forget_waiting, "cancel").bind(1, id).run();
      detail::sqlite::settle_dependents(c, id, JobState::cancelled, {}, t, fx);
    }
    return true;
  }

  // redrive of job `id` inside the caller's transaction.
  static bool redrive_in(Connection& c, JobId id, TimePoint t) {
    JobId flow_id = 0;
    {
      auto s = c.query(detail::sqlite::sql::redrive_check, "redrive");
      s.bind(1, id);
      if (!s.step()) return false;
      flow_id = s.is_null(0) ? 0 : s.integer(0);
      if (flow_id != 0 && s.integer(1) == 0 && s.integer(2) > 0) return false;  // re-drive that one instead
    }
    if (c.query(detail::sqlite::sql::redrive, "redrive").bind(1, id).bind(2, to_epoch_ms(t)).run() != 1) {
      return false;
    }
    if (flow_id != 0) detail::sqlite::revive_dependents(c, id);
    return true;
  }

  // The hubs may be shared with other objects on the file: kept alive with the subscription.
  Subscription keep_hubs(Subscription sub) {
    auto inner = std::make_shared<Subscription>(std::move(sub));
    return Subscription([hubs = hubs_, inner] { inner->cancel(); });
  }

  // After the commit: announce what a flow change did to other members, wake for released ones.
  void after(const detail::sqlite::FlowEffects& fx) {
    hubs_->events.publish(fx.notices);
    if (fx.wake) notify();
  }

  detail::sqlite::Encoded encode(const NewJob& job) const {
    check_deadline(job, now());
    return detail::sqlite::encode(job, opt_.max_payload_bytes);
  }

  // Cancels up to `batch` queued jobs past their deadline, each with its reason, in one
  // transaction; returns how many.
  std::size_t expire_due(std::size_t batch) {
    detail::sqlite::FlowEffects fx;
    const auto n = pool_.write("expire jobs past their deadline", [&](Connection& c) {
      fx = {};
      const auto t = now();
      std::vector<std::pair<JobId, std::int64_t>> due;
      {
        auto s = c.query(detail::sqlite::sql::due_deadlines, "expire jobs past their deadline");
        s.bind(1, to_epoch_ms(t)).bind(2, static_cast<std::int64_t>(batch));
        while (s.step()) due.emplace_back(s.integer(0), s.integer(1));
      }
      for (const auto& [id, at] : due) {
        c.query(detail::sqlite::sql::note_expired, "expire job")
            .bind(1, id)
            .bind(2, detail::sqlite::as_json_text(expired_error(from_epoch_ms(at))))
            .bind(3, to_epoch_ms(t))
            .run();
        cancel_in(c, id, t, fx);
      }
      return due.size();
    });
    after(fx);
    return n;
  }

  void set_paused(const std::string& queue, bool paused) {
    validate_queue_name(queue);
    pool_.write("pause/resume", [&](Connection& c) {
      c.query(detail::sqlite::sql::set_paused, "pause/resume").bind(1, queue).bind(2, paused ? 1 : 0).run();
    });
  }

  std::string path_;
  SqliteOptions opt_;
  detail::sqlite::ConnectionPool pool_;  // refers to path_ and opt_
  std::string db_file_;                  // SQLite's absolute name of the file, to check callers' connections
  std::shared_ptr<detail::sqlite::FileHubs> hubs_;  // shared by every object on this file in this process
  detail::sqlite::Waiters waiters_;
};

static_assert(Backend<SqliteBackend>);

}  // namespace jobq
