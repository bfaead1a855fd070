#pragma once
// RedisBackend: the Backend operations, in the order of the concept (jobq/backend.hpp), then the
// extras (url, prefix, queues, command, purge). Each operation formats its script's arguments,
// runs the script through the pool and reads the reply; the parts do the rest.

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "jobq/backend.hpp"
#include "jobq/redis/connection.hpp"
#include "jobq/redis/flow_plan.hpp"
#include "jobq/redis/job_queues.hpp"
#include "jobq/redis/keys.hpp"
#include "jobq/redis/listener.hpp"
#include "jobq/redis/lost_claims.hpp"
#include "jobq/redis/options.hpp"
#include "jobq/redis/pool.hpp"
#include "jobq/redis/records.hpp"
#include "jobq/redis/scripts.hpp"
#include "jobq/redis/url.hpp"
#include "jobq/worker_info.hpp"

namespace jobq {

/// @brief Backend on Redis (>= 6.2; tested with 7.0) through hiredis: jobs live in hashes and
/// sorted sets under `<prefix>:{<queue>}:…`, every state change is one Lua script, workers
/// wait on a wake-up list with BLPOP. Share one object between all threads of a process.
class RedisBackend {
  using Connection = detail::redis::Connection;
  using Reply = detail::redis::Reply;
  using Args = detail::redis::Args;
  using Cmd = detail::redis::Cmd;
  using Script = detail::redis::Script;

 public:
  /// @brief Connects to `url` (redis://[user:password@]host:port/db). Throws InvalidArgument
  /// for a malformed URL or bad options, RedisError for an unreachable server or a wrong password.
  explicit RedisBackend(std::string url, RedisOptions options = {})
      : url_(detail::redis::parse_url(url)),
        opt_(std::move(options)),
        keys_(opt_.prefix),
        pool_(url_, opt_),
        listener_(url_, opt_, hub_, "events"),
        cancels_listener_(url_, opt_, cancels_, "cancels") {
    if (!opt_.clock) throw InvalidArgument("redis: options.clock is empty");
    if (opt_.prefix.empty() || opt_.prefix.find_first_of("{} ") != std::string::npos) {
      throw InvalidArgument("redis: key prefix '" + opt_.prefix +
                            "' is invalid: it must be non-empty, without spaces or braces");
    }
    if (opt_.pool_size == 0) throw InvalidArgument("redis: pool_size must be at least 1");
    if (opt_.id_block == 0) opt_.id_block = 1;
    detail::redis::ignore_sigpipe();
    auto first = pool_.open();
    scripts_ = detail::redis::ScriptRunner(detail::redis::load_scripts(*first, url_.masked));
    detail::redis::check_store_format(*first, keys_.global("version"), format_version,
                                      "prefix '" + opt_.prefix + "' on " + url_.masked, opt_.create,
                                      keys_.global("queues"));
    pool_.adopt(std::move(first));
  }

  /// @brief Stops the notice listeners (if started). Subscriptions must end first.
  ~RedisBackend() {
    listener_.stop();
    cancels_listener_.stop();
  }

  RedisBackend(const RedisBackend&) = delete;
  RedisBackend& operator=(const RedisBackend&) = delete;

  /// @brief The store format this backend writes (the `<prefix>:version` key). Format 2 (jobq
  /// #7: groups, limits, schedules) reads format-1 stores as they are: no data is rewritten.
  /// Format 3 (flows and their waiting jobs, snoozes, cancels of active jobs) reads formats 1
  /// and 2 as they are; opening one (unless options.create is off) raises its key to 3, so an
  /// older jobq, which would misread a waiting job, refuses the store from then on.
  static constexpr int format_version = 3;

  /// @brief The backend's clock.
  [[nodiscard]] TimePoint now() const { return opt_.clock(); }

  /// @brief Stores a job (or returns the holder of its unique key).
  EnqueueResult enqueue(const NewJob& job) { return enqueue_many(std::span<const NewJob>(&job, 1)).front(); }

  /// @brief Stores many jobs in one script call: all or nothing.
  std::vector<EnqueueResult> enqueue_many(std::span<const NewJob> jobs) {
    if (jobs.empty()) return {};
    return enqueue_impl(jobs, {}).second;
  }

  /// @brief Leases up to req.limit (at most 1000) ready jobs, best first across the queues.
  std::vector<JobRecord> claim(const ClaimRequest& req) {
    const auto queues = claim_queues(req);
    if (req.limit == 0 || queues.empty()) return {};
    const auto limit = std::min<std::size_t>(req.limit, 1000);
    const auto lease = std::max<Millis::rep>(req.lease.count(), 0);
    Args keys;
    for (const auto& q : queues) append_keys(keys, q, Script::claim);
    // A claim whose reply was lost is remembered and undone (see lost_claims.hpp); then it is
    // sent again afresh.
    const auto reply = run(true, [&](Connection& c, bool) {
      undo_lost_claims(c);
      const auto t = to_epoch_ms(now());
      auto r = lost_claims_.send(queues, std::to_string(t + lease), [&](const std::string& seed) {
        return scripts_.eval(c, Script::claim, keys, {std::to_string(t), std::to_string(limit), std::to_string(lease), seed});
      });
      expect_ok(r, "claim");
      return r;
    });
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements % 4 != 0) unexpected("claim");
    std::vector<JobRecord> out;
    out.reserve(reply->elements / 4);
    for (std::size_t i = 0; i < reply->elements; i += 4) {
      const auto* e = reply->element + i;
      out.push_back(detail::redis::parse_job(text(e[0]), text(e[1]), text(e[2]), {}, text(e[3]), {}));
    }
    cache_.remember_each([&](auto remember) {
      for (const auto& j : out) remember(j.id, j.queue);
    });
    return out;
  }

  /// @brief Records a success if the lease token is current.
  bool complete(JobId id, const std::string& token, const nlohmann::json& result) {
    const auto q = queue_of(id);
    if (!q) return false;
    const auto result_text = detail::redis::result_arg(result);
    const auto reply = call(true, "complete", Script::complete, *q, [&](bool retry) {
      return Args{now_str(), retry ? "1" : "0", std::to_string(id), token, result_text};
    });
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) unexpected("complete");
    if (detail::redis::reply_int(reply->element[1], "complete") > 0) settle_records({*q});
    return detail::redis::reply_int(reply->element[0], "complete") == 1;
  }

  /// @brief Records many successes in one round trip: one script call per queue for all of
  /// that queue's completions; one bool per completion.
  std::vector<bool> complete_many(std::span<const Completion> completions) {
    std::vector<JobId> ids;
    ids.reserve(completions.size());
    for (const auto& c : completions) ids.push_back(c.id);
    const auto queues = queues_of(ids);
    std::vector<bool> out(completions.size(), false);
    const auto groups = detail::redis::group_completions(completions, queues);
    if (groups.empty()) return out;
    const auto replies = run(true, [&](Connection& c, bool retry) {
      std::vector<Cmd> cmds;
      const auto t = now_str();
      for (const auto& g : groups) {
        Args argv{t, retry ? "1" : "0"};
        argv.insert(argv.end(), g.argv.begin(), g.argv.end());
        cmds.push_back(scripts_.cmd(Script::complete, keys_for(g.queue, Script::complete), std::move(argv)));
      }
      return scripts_.exec(c, cmds);
    });
    std::vector<std::string> sent;
    for (std::size_t k = 0; k < groups.size(); ++k) {
      expect_ok(replies[k], "complete_many");
      const auto* r = replies[k].get();
      const auto n = groups[k].which.size();
      if (r->type != REDIS_REPLY_ARRAY || r->elements != n + 1) unexpected("complete_many");
      for (std::size_t j = 0; j < n; ++j) {
        out[groups[k].which[j]] = detail::redis::reply_int(r->element[j], "complete_many") == 1;
      }
      if (detail::redis::reply_int(r->element[n], "complete_many") > 0) sent.push_back(groups[k].queue);
    }
    if (!sent.empty()) settle_records(std::move(sent));
    return out;
  }

  /// @brief Records a failed attempt: retry at f.retry_at, or dead.
  FailOutcome fail(const Failure& f) {
    const auto q = queue_of(f.id);
    if (!q) return FailOutcome::rejected;
    const auto message = detail::redis::valid_utf8(f.error);
    const auto retry_at = f.retry_at ? std::to_string(to_epoch_ms(*f.retry_at)) : std::string();
    const auto reply = call(true, "fail", Script::fail, *q, [&](bool retry) {
      return Args{std::to_string(f.id), f.lease_token, now_str(), message, retry_at, retry ? "1" : "0"};
    });
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) unexpected("fail");
    if (detail::redis::reply_int(reply->element[1], "fail") > 0) settle_records({*q});
    switch (detail::redis::reply_int(reply->element[0], "fail")) {
      case 1: return FailOutcome::retried;
      case 2: return FailOutcome::dead;
      default: break;
    }
    return FailOutcome::rejected;
  }

  /// @brief Heartbeat: pushes the lease deadline to now + lease.
  bool extend_lease(JobId id, const std::string& token, Millis lease) {
    check_duration(lease, "lease");
    const auto q = queue_of(id);
    if (!q) return false;
    const auto ms = std::to_string(std::max<Millis::rep>(lease.count(), 0));
    return job_call(true, "extend_lease", Script::extend, *q, [&](bool) {
      return Args{std::to_string(id), token, now_str(), ms};
    });
  }

  /// @brief Gives a leased job back without counting the attempt.
  bool release(JobId id, const std::string& token) { return snooze(id, token, now()); }

  /// @brief Gives a leased job back to run at run_at, without counting the attempt.
  bool snooze(JobId id, const std::string& token, TimePoint run_at) {
    const auto q = queue_of(id);
    if (!q) return false;
    const auto at = std::to_string(to_epoch_ms(run_at));
    return job_call(true, "snooze", Script::release, *q, [&](bool retry) {
      return Args{std::to_string(id), token, now_str(), retry ? "1" : "0", at};
    });
  }

  /// @brief Records progress (clamped to 0..100) of an active job.
  bool set_progress(JobId id, const std::string& token, int percent, const std::string& message) {
    const auto q = queue_of(id);
    if (!q) return false;
    const auto msg = detail::redis::valid_utf8(message);
    const auto pct = std::to_string(std::clamp(percent, 0, 100));
    return job_call(true, "set_progress", Script::progress, *q, [&](bool) { return Args{std::to_string(id), token, pct, msg}; });
  }

  /// @brief Requeues (or kills, on the last attempt) every job whose lease has expired, in
  /// every queue this store has seen; then applies every flow record left in an outbox (by
  /// this pass or by a process that stopped between the two steps of a release).
  Recovered recover_expired() {
    const auto members = run(true, [&](Connection& c, bool) {
      undo_lost_claims(c);  // before their leases can expire here
      return c.command({"SMEMBERS", keys_.global("queues")});
    });
    expect_ok(members, "recover_expired (SMEMBERS)");
    std::vector<std::string> pending;
    for (std::size_t i = 0; i < members->elements; ++i) {
      std::string q(text(members->element[i]));
      try {
        validate_queue_name(q);
        pending.push_back(std::move(q));
      } catch (const InvalidArgument&) {  // not written by jobq: not a queue to recover
      }
    }
    constexpr std::size_t batch = 500;
    Recovered total;
    std::vector<std::string> outboxes;
    Uncommitted stale;
    while (!pending.empty()) {
      const auto replies = run(true, [&](Connection& c, bool) {
        std::vector<Cmd> cmds;
        const auto t = to_epoch_ms(now());
        const auto cutoff = std::to_string(t - flow_commit_grace.count());
        for (const auto& q : pending) {
          cmds.push_back(scripts_.cmd(Script::recover, keys_for(q, Script::recover),
                                      {std::to_string(t), std::to_string(batch), "lease expired (worker lost or too slow)", cutoff}));
        }
        return scripts_.exec(c, cmds);
      });
      std::vector<std::string> again;
      for (std::size_t i = 0; i < pending.size(); ++i) {
        expect_ok(replies[i], "recover_expired");
        const auto* r = replies[i].get();
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 6 || r->element[5]->type != REDIS_REPLY_ARRAY) {
          unexpected("recover_expired");
        }
        const auto n = [&](std::size_t k) { return static_cast<std::size_t>(detail::redis::reply_int(r->element[k], "recover_expired")); };
        total.retried += n(0);
        total.dead += n(1);
        if (n(2) == batch || n(4) >= batch) again.push_back(pending[i]);  // n(4): deadlines settled
        if (n(3) > 0 && std::find(outboxes.begin(), outboxes.end(), pending[i]) == outboxes.end()) outboxes.push_back(pending[i]);
        for (std::size_t k = 0; k < r->element[5]->elements; ++k) {
          const std::string_view entry = text(r->element[5]->element[k]);
          const auto sp = entry.find(' ');
          if (sp == std::string_view::npos) unexpected("recover_expired");
          stale[std::string(entry.substr(sp + 1))][pending[i]].emplace_back(entry.substr(0, sp));
        }
      }
      pending = std::move(again);
    }
    if (!outboxes.empty()) settle_records(std::move(outboxes), true);
    if (!stale.empty()) discard_uncommitted(stale);
    return total;
  }

  /// @brief The job, if it exists.
  std::optional<JobRecord> get(JobId id) {
    const auto q = queue_of(id);
    if (!q) return std::nullopt;
    const auto reply = call(true, "get", Script::fetch, *q, [&](bool) { return Args{std::to_string(id)}; });
    if (reply->type != REDIS_REPLY_ARRAY || (reply->elements != 0 && reply->elements != 5)) unexpected("get");
    if (reply->elements == 0) return std::nullopt;
    const auto* e = reply->element;
    return detail::redis::parse_job(text(e[0]), text(e[1]), text(e[2]), text(e[3]), text(e[4]), keys_.queue_base(*q));
  }

  /// @brief Cancels a queued, waiting or active job (and, per their policy, what waits for it).
  bool cancel(JobId id) { return cancel_many(std::span<const JobId>(&id, 1)).front(); }

  /// @brief Puts a dead job back in its queue with a fresh attempt budget (a flow member: what
  /// died because of it waits again).
  bool redrive(JobId id) { return redrive_many(std::span<const JobId>(&id, 1)).front(); }

  /// @brief cancel() of each id in order: one cancel script per queue for all of that queue's
  /// ids, in one round trip; one bool per id. A flow dependent in another queue is settled
  /// after the scripts (settle_records), as for cancel.
  std::vector<bool> cancel_many(std::span<const JobId> ids) { return each_in_queue("cancel_many", Script::cancel, ids); }

  /// @brief redrive() of each id in order, grouped by queue as cancel_many is.
  std::vector<bool> redrive_many(std::span<const JobId> ids) { return each_in_queue("redrive_many", Script::redrive, ids); }

  /// @brief Stops claims from a queue.
  void pause(const std::string& queue) { pause_or_resume(queue, Script::pause); }

  /// @brief Restores claims from a queue (and wakes its waiting workers).
  void resume(const std::string& queue) { pause_or_resume(queue, Script::resume); }

  /// @brief Whether a queue is paused.
  bool is_paused(const std::string& queue) {
    validate_queue_name(queue);
    const auto reply = run(true, [&](Connection& c, bool) { return c.command({"EXISTS", keys_.queue_base(queue) + "paused"}); });
    expect_ok(reply, "is_paused");
    return detail::redis::reply_int(reply.get(), "is_paused") == 1;
  }

  /// @brief Jobs per state in a queue (exact).
  Counts counts(const std::string& queue) {
    validate_queue_name(queue);
    const auto reply = call(true, "counts", Script::counts, queue, [&](bool) { return Args{now_str()}; });
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 7) unexpected("counts");
    auto n = [&](std::size_t i) { return detail::redis::reply_int(reply->element[i], "counts"); };
    return Counts{.queued = n(0), .active = n(1), .completed = n(2), .dead = n(3), .cancelled = n(4),
                  .waiting = n(5), .delayed = n(6)};
  }

  /// @brief Deletes finished jobs older than the retention of their state, then all but the
  /// newest retention.max_jobs of each finished state (jobs outside flows); in batches of 1000,
  /// one script each. Then the whole flows with a member here whose members are all finished
  /// and past retention, in every queue they live in (prune_flows).
  std::size_t prune(const std::string& queue, const Retention& retention) {
    validate_queue_name(queue);
    constexpr std::size_t batch = 1000;
    const auto cut = [&](const std::optional<Millis>& keep, TimePoint t) {
      return keep ? std::to_string(to_epoch_ms(t) - keep->count()) : std::string();
    };
    const auto max_jobs = retention.max_jobs > 0 ? std::to_string(retention.max_jobs) : std::string();
    std::size_t total = 0;
    for (;;) {
      const auto t = now();
      const auto reply = call(true, "prune", Script::prune, queue, [&](bool) {
        return Args{cut(retention.completed, t), cut(retention.dead, t), cut(retention.cancelled, t),
                    max_jobs, std::to_string(batch)};
      });
      if (reply->elements == 0) break;
      forget_pruned(reply);
      total += reply->elements;
      if (reply->elements < batch) break;
    }
    const auto t = now();
    return total + prune_flows(queue, {cut(retention.completed, t), cut(retention.dead, t), cut(retention.cancelled, t)});
  }

  /// @brief A page of a queue's jobs in one state, by id.
  std::vector<JobRecord> list(const std::string& queue, JobState state, Page page) {
    validate_queue_name(queue);
    if (page.limit == 0) return {};
    constexpr std::size_t max_index = std::size_t{1} << 52;  // exact in a Lua number
    const auto offset = std::min(page.offset, max_index);
    const auto limit = std::min(page.limit, max_index);
    const auto reply = call(true, "list", Script::list, queue, [&](bool) {
      return Args{std::string(to_string(state)), std::to_string(offset), std::to_string(limit)};
    });
    if (reply->elements % 5 != 0) unexpected("list");
    std::vector<JobRecord> out;
    for (std::size_t i = 0; i < reply->elements; i += 5) {
      const auto* e = reply->element + i;
      out.push_back(detail::redis::parse_job(text(e[0]), text(e[1]), text(e[2]), text(e[3]), text(e[4]), keys_.queue_base(queue)));
    }
    return out;
  }

  /// @brief Blocks (BLPOP on the queues' wake lists, on a connection of its own) until work
  /// may be ready, the timeout or the next delayed job's run_at passes, or stop is requested.
  void wait_for_work(std::span<const std::string> queues, Millis timeout, std::stop_token stop) {
    if (stop.stop_requested() || queues.empty() || timeout <= Millis{0}) return;
    Args keys;
    Args wake_keys{"BLPOP"};
    for (const auto& q : queues) {
      validate_queue_name(q);
      append_keys(keys, q, Script::peek);
      wake_keys.push_back(keys_.queue_base(q) + "wake");
    }
    auto conn = pool_.acquire_blocking();
    bool reusable = false;
    try {
      // peek: -1 if work is due, else the earliest run_at of a delayed job, else -2.
      const auto peek = scripts_.eval(*conn, Script::peek, keys, {now_str()});
      expect_ok(peek, "wait_for_work");
      const auto due = detail::redis::reply_int(peek.get(), "wait_for_work");
      auto wait = timeout;
      if (due >= 0) wait = std::min(wait, Millis{std::max<std::int64_t>(due - to_epoch_ms(now()), 0)});
      if (due != -1 && wait > Millis{0}) {
        reusable = detail::redis::blocking_pop(*conn, wake_keys, wait, opt_.command_timeout, stop);
      } else {
        reusable = true;
      }
    } catch (const RedisError&) {
      if (!stop.stop_requested()) {
        pool_.give_back_blocking(std::move(conn), false);
        throw;
      }
    }
    pool_.give_back_blocking(std::move(conn), reusable && !stop.stop_requested());
  }

  /// @brief Sets the limits every claim of the queue honours, in every process.
  void set_queue_limits(const std::string& queue, const QueueLimits& limits) {
    validate_queue_name(queue);
    validate(limits);
    Args argv{limits.rate ? std::to_string(limits.rate->max) : std::string(),
              limits.rate ? std::to_string(limits.rate->window.count()) : std::string(),
              std::to_string(limits.group_concurrency), std::to_string(limits.concurrency)};
    call(true, "set_queue_limits", Script::limits, queue, [&](bool) { return argv; });
  }

  /// @brief The limits of a queue (none by default).
  QueueLimits queue_limits(const std::string& queue) {
    validate_queue_name(queue);
    const auto key = keys_.queue_base(queue) + "limits";
    const auto reply = run(true, [&](Connection& c, bool) {
      return c.command({"HMGET", key, "rate_max", "rate_window", "group_concurrency", "concurrency"});
    });
    expect_ok(reply, "queue_limits");
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 4) unexpected("queue_limits");
    return detail::redis::parse_limits(reply->element, key);
  }

  /// @brief Inserts or replaces a schedule (`<prefix>:schedules`: name -> "next_run nonce spec").
  void put_schedule(const StoredSchedule& s) {
    validate_schedule_name(s.name);
    const auto value = std::to_string(to_epoch_ms(s.next_run)) + " - " + dump_for_storage(s.spec, "schedule spec");
    const auto reply = run(true, [&](Connection& c, bool) { return c.command({"HSET", keys_.global("schedules"), s.name, value}); });
    expect_ok(reply, "put_schedule");
  }

  /// @brief Removes a schedule; false if there was none.
  bool remove_schedule(const std::string& name) {
    validate_schedule_name(name);
    const auto reply = run(false, [&](Connection& c, bool) { return c.command({"HDEL", keys_.global("schedules"), name}); });
    expect_ok(reply, "remove_schedule");
    return detail::redis::reply_int(reply.get(), "remove_schedule") == 1;
  }

  /// @brief Every schedule, by name.
  std::vector<StoredSchedule> schedules() {
    const auto key = keys_.global("schedules");
    const auto reply = run(true, [&](Connection& c, bool) { return c.command({"HGETALL", key}); });
    expect_ok(reply, "schedules");
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements % 2 != 0) unexpected("schedules");
    std::vector<StoredSchedule> out;
    for (std::size_t i = 0; i < reply->elements; i += 2) {
      out.push_back(detail::redis::parse_schedule(std::string(text(reply->element[i])), text(reply->element[i + 1]), key));
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    return out;
  }

  /// @brief If the schedule's next_run is `expected`: sets it to `next` and enqueues `job` (if
  /// any), in one script; true if it did. With several schedulers exactly one wins each tick.
  bool fire_schedule(const std::string& name, TimePoint expected, TimePoint next, const std::optional<NewJob>& job) {
    validate_schedule_name(name);
    const auto cas = name + ' ' + std::to_string(to_epoch_ms(expected)) + ' ' + std::to_string(to_epoch_ms(next));
    if (job) return enqueue_impl(std::span<const NewJob>(&*job, 1), cas).first;
    return enqueue_impl({}, cas).first;
  }

  /// @brief Stores (or replaces) a worker's entry and deletes the expired ones, in one script
  /// (`<prefix>:{~workers}:info` and `:expiry`, one slot).
  void register_worker(const WorkerInfo& w) {
    validate_worker_id(w.id);
    const Args argv{now_str(), w.id, std::to_string(to_epoch_ms(w.expires_at)), dump_for_storage(to_json(w), "worker info")};
    const auto reply = run(true, [&](Connection& c, bool) { return scripts_.eval(c, Script::worker_register, worker_keys(), argv); });
    expect_ok(reply, "register_worker");
  }

  /// @brief Deletes a worker's entry; false if there was none.
  bool unregister_worker(const std::string& id) {
    const auto reply = run(false, [&](Connection& c, bool) {
      return scripts_.eval(c, Script::worker_unregister, worker_keys(), {id});
    });
    expect_ok(reply, "unregister_worker");
    return detail::redis::reply_int(reply.get(), "unregister_worker") == 1;
  }

  /// @brief The entries not expired, by id (one script: one snapshot).
  std::vector<WorkerInfo> workers() {
    const auto keys = worker_keys();
    const auto reply = run(true, [&](Connection& c, bool) { return scripts_.eval(c, Script::workers, keys, {now_str()}); });
    expect_ok(reply, "workers");
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements % 2 != 0) unexpected("workers");
    std::vector<WorkerInfo> out;
    for (std::size_t i = 0; i < reply->elements; i += 2) {
      out.push_back(detail::redis::parse_worker(text(reply->element[i]), text(reply->element[i + 1]), keys.front()));
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    return out;
  }

  /// @brief Calls fn for every notice of `queues` (all when empty), from any process on this
  /// prefix, until the subscription ends. Returns once the listener's SUBSCRIBE is active.
  Subscription subscribe(std::span<const std::string> queues, NoticeFn fn) {
    auto sub = hub_.subscribe(queues, std::move(fn));
    listener_.start();
    return sub;
  }
  /// @brief Calls fn for every cancel of an active job of `queues` (all when empty) from any
  /// process on this prefix, until the subscription ends (a connection of its own,
  /// SUBSCRIBEd to "<prefix>:cancels", which the cancel script always publishes to).
  Subscription watch_cancels(std::span<const std::string> queues, NoticeFn fn) {
    auto sub = cancels_.subscribe(queues, std::move(fn));
    cancels_listener_.start();
    return sub;
  }
  /// @brief The jobs, in the order of `ids` (nullopt: no such job): one script call per queue,
  /// in one round trip.
  std::vector<std::optional<JobRecord>> get_many(std::span<const JobId> ids) {
    const std::vector<JobId> all(ids.begin(), ids.end());
    return fetch_jobs(all, queues_of(all));
  }

  /// @brief Makes a queued job that is not yet due due now and wakes a worker of its queue: the
  /// job's queue from the id map (cached), then one script in the queue's slot.
  bool run_now(JobId id) {
    const auto q = queue_of(id);
    if (!q) return false;
    return job_call(false, "run_now", Script::run_now, *q, [&](bool) { return Args{now_str(), std::to_string(id)}; });
  }

  /// @brief Deletes a finished job outside flows as prune does: one script in its queue's slot,
  /// then the id leaves the global id map (forget_pruned, as after prune).
  bool remove(JobId id) {
    const auto q = queue_of(id);
    if (!q) return false;
    const auto reply = call(false, "remove", Script::remove, *q, [&](bool) { return Args{std::to_string(id)}; });
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements > 1) unexpected("remove");
    if (reply->elements == 0) return false;
    forget_pruned(reply);
    return true;
  }

  /// @brief The job holding a unique key of a queue (Q:unique, as enqueue reads it): one
  /// read-only script.
  std::optional<JobId> find_unique(const std::string& queue, const std::string& unique_key) {
    validate_queue_name(queue);
    check_unique_key(unique_key);
    const auto reply = call(true, "find_unique", Script::find_unique, queue, [&](bool) { return Args{unique_key, now_str()}; });
    const auto id = text(reply.get());
    if (id.empty()) return std::nullopt;
    return detail::redis::to_i64(id);
  }

  /// @brief Stores a flow (see lua_flow.hpp for what is atomic where): one flow_write per
  /// queue, the other queues' members first (waiting on the commit), the home queue's last
  /// (the commit point: a flow that fails before it leaves no claimable member).
  std::vector<JobId> enqueue_flow(const NewFlow& flow) {
    validate(flow);
    std::vector<std::string> payloads;
    payloads.reserve(flow.members.size());
    const auto checked_at = now();
    for (const auto& m : flow.members) {
      check_deadline(m.job, checked_at);
      payloads.push_back(m.job.payload.dump());
      check_payload_size(payloads.back().size(), opt_.max_payload_bytes);
    }
    if (flow.on_failure) check_payload_size(flow.on_failure->payload.dump().size(), opt_.max_payload_bytes);
    const auto ids = allocate_ids(flow.members.size());
    std::vector<std::string> queues;
    Args mapping{"HSET", keys_.global("jobqueue")};
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const auto& q = flow.members[i].job.queue;
      if (std::find(queues.begin(), queues.end(), q) == queues.end()) queues.push_back(q);
      mapping.push_back(std::to_string(ids[i]));
      mapping.push_back(q);
    }
    if (flow.on_failure) queues.push_back(flow.on_failure->queue);  // registered for recover_expired
    const auto t = to_epoch_ms(now());
    const auto nonce = detail::new_lease_token();
    auto writes = detail::redis::plan_flow(flow, ids, payloads, t, nonce);
    std::vector<Cmd> first{{std::move(mapping), std::nullopt}};
    if (auto fresh = cache_.unregistered(queues); !fresh.empty()) {
      Args sadd{"SADD", keys_.global("queues")};
      sadd.insert(sadd.end(), fresh.begin(), fresh.end());
      first.push_back({std::move(sadd), std::nullopt});
    }
    const auto write_cmd = [&](const detail::redis::FlowWrite& w) {
      Args argv{std::to_string(t), nonce};
      argv.insert(argv.end(), w.argv.begin(), w.argv.end());
      return scripts_.cmd(Script::flow_write, keys_for(w.queue, Script::flow_write), std::move(argv));
    };
    for (std::size_t i = 0; i + 1 < writes.size(); ++i) first.push_back(write_cmd(writes[i]));
    // One queue: one round trip. Else everything but the commit in one round trip, checked
    // before the commit is sent.
    if (writes.size() == 1) first.push_back(write_cmd(writes.back()));
    const auto replies = run(true, [&](Connection& c, bool) { return scripts_.exec(c, first); });
    for (const auto& r : replies) expect_ok(r, "enqueue_flow");
    if (writes.size() > 1) {
      if (opt_.flow_stop_before_commit) {
        throw RedisError(ErrorCategory::connection, "redis: enqueue_flow stopped before its commit (flow_stop_before_commit)");
      }
      const std::vector<Cmd> commit{write_cmd(writes.back())};
      expect_ok(run(true, [&](Connection& c, bool) { return scripts_.exec(c, commit); }).front(), "enqueue_flow");
    }
    cache_.mark_registered(queues);
    cache_.remember_each([&](auto remember) {
      for (std::size_t i = 0; i < ids.size(); ++i) remember(ids[i], flow.members[i].job.queue);
    });
    if (writes.size() > 1) settle_records({writes.back().queue});
    return ids;
  }

  /// @brief Cancels every queued or waiting member of job id's flow: all of one queue's at once
  /// (one script per queue), the flow's error callback disabled first.
  std::size_t cancel_flow(JobId id) {
    const auto members = flow_members(id, true);
    if (!members) return 0;
    std::vector<std::string> queues;
    std::vector<Args> argvs;
    const auto t = now_str();
    for (const auto& [member, q] : members->second) {
      auto at = std::find(queues.begin(), queues.end(), q);
      if (at == queues.end()) {
        queues.push_back(q);
        argvs.push_back({t});
        at = std::prev(queues.end());
      }
      argvs[static_cast<std::size_t>(at - queues.begin())].push_back(std::to_string(member));
    }
    const auto replies = run(false, [&](Connection& c, bool) {
      std::vector<Cmd> cmds;
      for (std::size_t i = 0; i < queues.size(); ++i) {
        cmds.push_back(scripts_.cmd(Script::cancel_many, keys_for(queues[i], Script::cancel_many), argvs[i]));
      }
      return scripts_.exec(c, cmds);
    });
    std::size_t n = 0;
    std::vector<std::string> sent;
    for (std::size_t i = 0; i < replies.size(); ++i) {
      expect_ok(replies[i], "cancel_flow");
      const auto* r = replies[i].get();
      if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) unexpected("cancel_flow");
      n += static_cast<std::size_t>(detail::redis::reply_int(r->element[0], "cancel_flow"));
      if (detail::redis::reply_int(r->element[1], "cancel_flow") > 0) sent.push_back(queues[i]);
    }
    if (!sent.empty()) settle_records(std::move(sent));
    return n;
  }

  /// @brief The flow of job id, every member by id (read queue by queue: not one snapshot when
  /// members live in several queues).
  std::optional<FlowRecord> flow(JobId id) {
    const auto members = flow_members(id, false);
    if (!members) return std::nullopt;
    std::vector<JobId> ids;
    std::vector<std::optional<std::string>> queues;
    for (const auto& [member, q] : members->second) {
      ids.push_back(member);
      queues.emplace_back(q);
    }
    FlowRecord r{members->first, {}};
    for (auto& j : fetch_jobs(ids, queues)) {
      if (j) r.members.push_back(std::move(*j));
    }
    std::sort(r.members.begin(), r.members.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    return r;
  }

  // --- beyond the Backend concept -------------------------------------------------------------

  /// @brief The URL connected to, password masked.
  [[nodiscard]] const std::string& url() const noexcept { return url_.masked; }

  /// @brief The key prefix.
  [[nodiscard]] const std::string& prefix() const noexcept { return opt_.prefix; }

  /// @brief Every queue this store has seen (the `<prefix>:queues` set), sorted by name.
  std::vector<std::string> queues() {
    const auto members = run(true, [&](Connection& c, bool) { return c.command({"SMEMBERS", keys_.global("queues")}); });
    expect_ok(members, "queues (SMEMBERS)");
    std::vector<std::string> out;
    for (std::size_t i = 0; i < members->elements; ++i) out.emplace_back(text(members->element[i]));
    std::sort(out.begin(), out.end());
    return out;
  }

  /// @brief Runs one Redis command on a pooled connection (an escape hatch for tools and
  /// tests). Error replies are thrown as RedisError.
  RedisReply command(const std::vector<std::string>& args) {
    if (args.empty()) throw InvalidArgument("redis: command needs at least a name");
    const auto reply = run(false, [&](Connection& c, bool) { return c.command(args); });
    expect_ok(reply, args.front());
    return detail::redis::to_public(reply.get());
  }

  /// @brief Deletes every key under the prefix (all queues, jobs and counters of this store):
  /// for tests and resets, while no other backend object uses the prefix. Returns the count.
  std::size_t purge() {
    const auto pattern = keys_.scan_pattern();
    std::size_t deleted = 0;
    std::string cursor = "0";
    do {
      const auto reply = run(true, [&](Connection& c, bool) {
        return c.command({"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"});
      });
      expect_ok(reply, "purge (SCAN)");
      cursor = std::string(text(reply->element[0]));
      const auto* keys = reply->element[1];
      if (keys->elements > 0) {
        Args del{"UNLINK"};
        for (std::size_t i = 0; i < keys->elements; ++i) del.emplace_back(text(keys->element[i]));
        const auto r = run(true, [&](Connection& c, bool) { return c.command(del); });
        expect_ok(r, "purge (UNLINK)");
        deleted += static_cast<std::size_t>(r->integer);
      }
    } while (cursor != "0");
    ids_.reset();  // the counter is gone: reserve afresh
    cache_.clear();
    return deleted;
  }

 private:
  // --- enqueue and fire_schedule ----------------------------------------------------------------

  // enqueue_many, and fire_schedule when `cas` ("name expected next") is set: then the script
  // first compares-and-sets the schedule (<prefix>:schedules) and enqueues only if that
  // succeeded. Returns (fired, results); plain enqueues always "fire".
  std::pair<bool, std::vector<EnqueueResult>> enqueue_impl(std::span<const NewJob> jobs, const std::string& cas) {
    const auto batch = detail::redis::prepare_batch(jobs, opt_.max_payload_bytes, now());
    const auto ids = allocate_ids(jobs.size());
    const auto cmds = enqueue_commands(jobs, batch, ids, cas);
    const auto reply = run(true, [&](Connection& c, bool) {
      auto rs = scripts_.exec(c, cmds);
      for (std::size_t i = 0; i + 1 < rs.size(); ++i) {
        if (detail::redis::is_error(rs[i])) detail::redis::throw_reply("enqueue failed", text(rs[i].get()));
      }
      return std::move(rs.back());
    });
    const char* what = cas.empty() ? "enqueue" : "fire_schedule";
    expect_ok(reply, what);
    if (reply->type != REDIS_REPLY_ARRAY) unexpected(what);
    Args unused{"HDEL", keys_.global("jobqueue")};  // ids the script did not use
    if (!cas.empty() && reply->elements == 1 && detail::redis::reply_int(reply->element[0], what) == 0) {
      if (jobs.empty()) return {false, {}};
      for (auto id : ids) unused.push_back(std::to_string(id));
      unmap_unused(unused);  // the lost race used none
      return {false, {}};
    }
    if (reply->elements != jobs.size() * 2 + (cas.empty() ? 0 : 1)) unexpected(what);
    std::vector<EnqueueResult> out;
    out.reserve(jobs.size());
    for (std::size_t i = 0; i < jobs.size(); ++i) {
      const JobId id = detail::redis::reply_int(reply->element[2 * i], "enqueue");
      const bool created = detail::redis::reply_int(reply->element[2 * i + 1], "enqueue") == 1;
      out.push_back({id, created});
      if (id != ids[i]) unused.push_back(std::to_string(ids[i]));
    }
    cache_.mark_registered(batch.queues);
    cache_.remember_each([&](auto remember) {
      for (std::size_t i = 0; i < jobs.size(); ++i) {
        if (out[i].created) remember(out[i].id, jobs[i].queue);
      }
    });
    if (unused.size() > 2) unmap_unused(unused);  // ids a deduplicated enqueue did not use
    return {true, std::move(out)};
  }

  // The pipeline of an enqueue: the id -> queue map entries, the registration of new queues,
  // and the script call.
  std::vector<Cmd> enqueue_commands(std::span<const NewJob> jobs, const detail::redis::Batch& batch,
                                    const std::vector<JobId>& ids, const std::string& cas) {
    const auto t = to_epoch_ms(now());
    Args keys;
    for (const auto& q : batch.queues) append_keys(keys, q, Script::enqueue);
    if (!cas.empty()) keys.push_back(keys_.global("schedules"));
    const auto nonce = detail::new_lease_token();
    const bool wide = detail::redis::wide_layout(jobs, batch.queues.size());
    Args argv{std::to_string(t), nonce, cas, wide ? "1" : ""};
    argv.reserve(4 + jobs.size() * 10);
    Args mapping{"HSET", keys_.global("jobqueue")};
    for (std::size_t i = 0; i < jobs.size(); ++i) {
      detail::redis::append_enqueue_args(argv, jobs[i], ids[i], t, wide ? batch.index.at(jobs[i].queue) + 1 : 0,
                                         batch.payloads[i], nonce);
      mapping.push_back(std::to_string(ids[i]));
      mapping.push_back(jobs[i].queue);
    }
    std::vector<Cmd> cmds;
    // The id -> queue mapping goes first: once the script has run, the job is claimable and
    // complete(id) on another process must find its queue.
    if (!jobs.empty()) cmds.push_back({std::move(mapping), std::nullopt});
    if (auto fresh = cache_.unregistered(batch.queues); !fresh.empty()) {
      Args sadd{"SADD", keys_.global("queues")};
      sadd.insert(sadd.end(), fresh.begin(), fresh.end());
      cmds.push_back({std::move(sadd), std::nullopt});
    }
    cmds.push_back(scripts_.cmd(Script::enqueue, keys, std::move(argv)));
    return cmds;
  }

  // Best effort: a leftover id -> queue entry is harmless.
  void unmap_unused(const Args& hdel) {
    try {
      run(true, [&](Connection& c, bool) { return c.command(hdel); });
    } catch (const std::exception&) {
    }
  }

  // --- flows ---------------------------------------------------------------------------------

  // The flow of job id and its members (id, queue) from the home slot (flow_home; `stop`: the
  // flow fires no error callback from now on); nullopt when the job is in no flow.
  std::optional<std::pair<JobId, std::vector<std::pair<JobId, std::string>>>> flow_members(JobId id, bool stop) {
    const auto job = get(id);
    if (!job || job->flow_id == 0) return std::nullopt;
    const auto home = queue_of(job->flow_id);
    if (!home) return std::nullopt;
    const auto reply = call(true, "flow", Script::flow_home, *home, [&](bool) {
      return Args{std::to_string(job->flow_id), stop ? "1" : "0"};
    });
    return std::pair{job->flow_id, detail::redis::parse_members(text(reply.get()))};
  }

  // prune's flows: candidates from `queue` (flow_prunable), each checked in every queue of its
  // members (flow_expired), then deleted queue by queue, the home queue last with the flow-wide
  // data (flow_drop). `cuts`: the cutoffs of completed, dead, cancelled. Returns jobs deleted.
  std::size_t prune_flows(const std::string& queue, const Args& cuts) {
    constexpr std::size_t batch = 100;
    std::size_t total = 0;
    for (;;) {
      Args argv = cuts;
      argv.push_back(std::to_string(batch));
      const auto fids = call(true, "prune", Script::flow_prunable, queue, [&](bool) { return argv; });
      std::size_t deleted = 0;
      for (std::size_t i = 0; i < fids->elements; ++i) {
        deleted += prune_flow(detail::redis::to_i64(text(fids->element[i])), cuts);
      }
      total += deleted;
      if (fids->elements < batch || deleted == 0) break;
    }
    return total;
  }

  std::size_t prune_flow(JobId fid, const Args& cuts) {
    const auto home = queue_of(fid);
    if (!home) return 0;
    const auto list = call(true, "prune", Script::flow_home, *home, [&](bool) { return Args{std::to_string(fid), "0"}; });
    std::vector<std::string> queues;
    std::vector<Args> ids;
    for (const auto& [member, q] : detail::redis::parse_members(text(list.get()))) {
      auto at = std::find(queues.begin(), queues.end(), q);
      if (at == queues.end()) {
        queues.push_back(q);
        ids.emplace_back();
        at = std::prev(queues.end());
      }
      ids[static_cast<std::size_t>(at - queues.begin())].push_back(std::to_string(member));
    }
    if (queues.empty()) return 0;
    const auto expired = run(true, [&](Connection& c, bool) {
      std::vector<Cmd> cmds;
      for (std::size_t k = 0; k < queues.size(); ++k) {
        Args argv = cuts;
        argv.insert(argv.end(), ids[k].begin(), ids[k].end());
        cmds.push_back(scripts_.cmd(Script::flow_expired, keys_for(queues[k], Script::flow_expired), std::move(argv)));
      }
      return scripts_.exec(c, cmds);
    });
    for (const auto& r : expired) {
      expect_ok(r, "prune");
      if (detail::redis::reply_int(r.get(), "prune") != 1) return 0;
    }
    std::size_t n = 0;
    const auto drop = [&](std::size_t k, bool is_home) {
      Args argv{std::to_string(fid), is_home ? "1" : ""};
      argv.insert(argv.end(), ids[k].begin(), ids[k].end());
      const auto r = call(true, "prune", Script::flow_drop, queues[k], [&](bool) { return argv; });
      if (r->elements > 0) forget_pruned(r);
      n += r->elements;
    };
    for (std::size_t k = 0; k < queues.size(); ++k) {
      if (queues[k] != *home) drop(k, false);
    }
    const auto h = std::find(queues.begin(), queues.end(), *home);
    if (h != queues.end()) drop(static_cast<std::size_t>(h - queues.begin()), true);
    return n;
  }

  // The jobs `ids` of queues `queues` (nullopt: none), in one round trip: per queue and per
  // chunk of kFetchChunk ids, one MULTI of an HMGET per hash a record is read from (native
  // HMGETs cost the server a tenth of a script's per-id HGETs; MULTI keeps each chunk a snapshot,
  // and a chunk bounds how long the server is busy with one).
  std::vector<std::optional<JobRecord>> fetch_jobs(const std::vector<JobId>& ids,
                                                   const std::vector<std::optional<std::string>>& queues) {
    static constexpr std::array<std::string_view, 5> fields{"jobs", "state", "errors", "results", "progress"};
    static constexpr std::size_t kFetchChunk = 5'000;
    std::vector<std::optional<JobRecord>> out(ids.size());
    const auto groups = detail::redis::group_by_queue(queues);
    struct Chunk {
      std::size_t queue;
      std::span<const std::size_t> which;  // indexes into ids
    };
    std::vector<Chunk> chunks;
    for (std::size_t k = 0; k < groups.names.size(); ++k) {
      const std::span<const std::size_t> all(groups.which[k]);
      for (std::size_t at = 0; at < all.size(); at += kFetchChunk) {
        chunks.push_back({k, all.subspan(at, std::min(kFetchChunk, all.size() - at))});
      }
    }
    if (chunks.empty()) return out;
    constexpr std::size_t per_chunk = fields.size() + 2;  // MULTI, the HMGETs, EXEC
    const auto replies = run(true, [&](Connection& c, bool) {
      std::vector<Args> cmds;
      cmds.reserve(chunks.size() * per_chunk);
      for (const auto& ch : chunks) {
        const auto base = keys_.queue_base(groups.names[ch.queue]);
        cmds.push_back({"MULTI"});
        for (const auto f : fields) {
          Args a{"HMGET", base + std::string(f)};
          a.reserve(ch.which.size() + 2);
          for (const auto i : ch.which) a.push_back(std::to_string(ids[i]));
          cmds.push_back(std::move(a));
        }
        cmds.push_back({"EXEC"});
      }
      return c.pipeline(cmds);
    });
    for (std::size_t n = 0; n < chunks.size(); ++n) {
      const auto& ch = chunks[n];
      for (std::size_t j = 0; j + 1 < per_chunk; ++j) expect_ok(replies[n * per_chunk + j], "get_many");
      const auto& exec = replies[n * per_chunk + per_chunk - 1];
      expect_ok(exec, "get_many");
      const auto* r = exec.get();
      if (r->type != REDIS_REPLY_ARRAY || r->elements != fields.size()) unexpected("get_many");
      for (std::size_t f = 0; f < fields.size(); ++f) {
        const auto* h = r->element[f];
        if (h->type == REDIS_REPLY_ERROR) detail::redis::throw_reply("get_many failed", text(h));
        if (h->type != REDIS_REPLY_ARRAY || h->elements != ch.which.size()) unexpected("get_many");
      }
      const auto base = keys_.queue_base(groups.names[ch.queue]);
      for (std::size_t j = 0; j < ch.which.size(); ++j) {
        const auto col = [&](std::size_t f) { return text(r->element[f]->element[j]); };
        if (r->element[1]->element[j]->type != REDIS_REPLY_STRING) continue;  // no state: no job
        out[ch.which[j]] = detail::redis::parse_job(col(0), col(1), col(2), col(3), col(4), base);
      }
    }
    return out;
  }

  // cancel_many and redrive_many: script `s` once per queue with that queue's ids (in input
  // order; keys of one hash tag each), the calls in one round trip. Each replies {1 or 0 per
  // id, flow records sent}.
  std::vector<bool> each_in_queue(const char* what, Script s, std::span<const JobId> ids) {
    check_bulk_size(ids.size(), what);
    std::vector<bool> out(ids.size(), false);
    if (ids.empty()) return out;
    const std::vector<JobId> all(ids.begin(), ids.end());
    const auto groups = detail::redis::group_by_queue(queues_of(all));
    const auto& names = groups.names;
    const auto& which = groups.which;
    if (names.empty()) return out;
    const auto replies = run(false, [&](Connection& c, bool) {
      std::vector<Cmd> cmds;
      const auto t = now_str();
      for (std::size_t k = 0; k < names.size(); ++k) {
        Args argv{t};
        for (auto i : which[k]) argv.push_back(std::to_string(all[i]));
        cmds.push_back(scripts_.cmd(s, keys_for(names[k], s), std::move(argv)));
      }
      return scripts_.exec(c, cmds);
    });
    // The queues whose script did run have their records settled before an error is thrown.
    std::vector<std::string> sent;
    const Reply* failed = nullptr;
    for (std::size_t k = 0; k < names.size(); ++k) {
      if (detail::redis::is_error(replies[k])) {
        failed = failed != nullptr ? failed : &replies[k];
        continue;
      }
      const auto* r = replies[k].get();
      const auto n = which[k].size();
      if (r->type != REDIS_REPLY_ARRAY || r->elements != n + 1) unexpected(what);
      for (std::size_t j = 0; j < n; ++j) out[which[k][j]] = detail::redis::reply_int(r->element[j], what) == 1;
      if (detail::redis::reply_int(r->element[n], what) > 0) sent.push_back(names[k]);
    }
    if (!sent.empty()) settle_records(std::move(sent));
    if (failed != nullptr) expect_ok(*failed, what);
    return out;
  }

  // The second step of a cross-slot release: applies the records in the outboxes of `queues`
  // with settle in each member's slot, then removes them (outbox_ack); the records that applies
  // in turn, until no outbox has any. `always`: whatever opt_.flow_record_steps says.
  void settle_records(std::vector<std::string> queues, bool always = false) {
    const int steps = always ? 2 : opt_.flow_record_steps;
    if (steps <= 0) return;
    constexpr long chunk = 1000;
    for (std::size_t round = 0; !queues.empty() && round < 10'000; ++round) {
      std::vector<std::string> next;
      const auto again = [&](const std::string& q) {
        if (std::find(next.begin(), next.end(), q) == next.end()) next.push_back(q);
      };
      for (const auto& q : queues) {
        const auto outbox = keys_.queue_base(q) + "outbox";
        const auto head = run(true, [&](Connection& c, bool) {
          return c.command({"LRANGE", outbox, "0", std::to_string(chunk - 1)});
        });
        expect_ok(head, "reading " + outbox);
        if (head->elements == 0) continue;
        std::vector<detail::redis::OutboxRecord> records;
        std::vector<std::string> targets;
        std::vector<Args> argvs;
        for (std::size_t i = 0; i < head->elements; ++i) {
          records.push_back(detail::redis::parse_outbox_record(std::string(text(head->element[i])), outbox));
          const auto& r = records.back();
          if (r.fire) continue;
          auto at = std::find(targets.begin(), targets.end(), r.queue);
          if (at == targets.end()) {
            targets.push_back(r.queue);
            argvs.push_back({now_str()});
            at = std::prev(targets.end());
          }
          auto& argv = argvs[static_cast<std::size_t>(at - targets.begin())];
          argv.insert(argv.end(), r.fields.begin(), r.fields.end());
        }
        const auto replies = run(true, [&](Connection& c, bool) {
          std::vector<Cmd> cmds;
          for (std::size_t k = 0; k < targets.size(); ++k) {
            cmds.push_back(scripts_.cmd(Script::settle, keys_for(targets[k], Script::settle), argvs[k]));
          }
          return scripts_.exec(c, cmds);
        });
        for (std::size_t k = 0; k < replies.size(); ++k) {
          expect_ok(replies[k], "applying flow records");
          if (detail::redis::reply_int(replies[k].get(), "settle") > 0) again(targets[k]);
        }
        for (const auto& r : records) {
          if (r.fire) fire_callback(r.flow, r.member);
        }
        if (steps < 2) continue;
        Args ack;
        for (auto& r : records) ack.push_back(std::move(r.raw));
        call(true, "removing flow records", Script::outbox_ack, q, [&](bool) { return ack; });
        if (static_cast<long>(head->elements) == chunk) again(q);
      }
      queues = std::move(next);
    }
  }

  // The error callback of flow `fid` after member `dead` died: flow_fire in the home slot (the
  // fired flag), then the callback written under the id and nonce that won there.
  void fire_callback(JobId fid, JobId dead) {
    const auto home = queue_of(fid);
    if (!home) return;
    const auto fresh = allocate_ids(1).front();
    const auto reply = call(true, "firing a flow's error callback", Script::flow_fire, *home, [&](bool) {
      return Args{std::to_string(fid), std::to_string(fresh), detail::new_lease_token(), std::to_string(dead)};
    });
    if (reply->type != REDIS_REPLY_ARRAY) unexpected("flow_fire");
    if (reply->elements != 2) return;
    const std::string fired(text(reply->element[0]));
    const auto sp1 = fired.find(' ');
    const auto sp2 = fired.find(' ', sp1 + 1);
    if (sp1 == std::string::npos || sp2 == std::string::npos) unexpected("flow_fire");
    const auto id = detail::redis::to_i64(std::string_view(fired).substr(0, sp1));
    const auto nonce = fired.substr(sp1 + 1, sp2 - sp1 - 1);
    const auto member = detail::redis::to_i64(std::string_view(fired).substr(sp2 + 1));
    const auto job = new_job_from_json(nlohmann::json::parse(text(reply->element[1])));
    const auto t = to_epoch_ms(now());
    Args argv{std::to_string(t), nonce, std::to_string(fid), "", "", ""};
    detail::redis::append_flow_member(argv, job, id, fid, {member}, true, 0, "", t, job.payload.dump(), nonce);
    std::vector<Cmd> cmds{{{"HSET", keys_.global("jobqueue"), std::to_string(id), job.queue}, std::nullopt},
                          {{"SADD", keys_.global("queues"), job.queue}, std::nullopt},
                          scripts_.cmd(Script::flow_write, keys_for(job.queue, Script::flow_write), std::move(argv))};
    const auto replies = run(true, [&](Connection& c, bool) { return scripts_.exec(c, cmds); });
    for (const auto& r : replies) expect_ok(r, "enqueueing a flow's error callback");
    cache_.remember(id, job.queue);
  }

  // --- the small operations on one job or queue ------------------------------------------------

  // Runs script `s` with the keys of `queue` and argv(retry) (retry: this is a resend) through
  // the pool; an error reply is thrown naming `what`. A call whose reply was lost is sent again
  // only when `idempotent` (see Pool::run).
  template <class Argv>
  Reply call(bool idempotent, const char* what, Script s, std::string_view queue, Argv&& argv) {
    auto reply = run(idempotent, [&](Connection& c, bool retry) { return scripts_.eval(c, s, keys_for(queue, s), argv(retry)); });
    expect_ok(reply, what);
    return reply;
  }

  // call(), for the scripts that reply 1 (done) or 0.
  template <class Argv>
  bool job_call(bool idempotent, const char* what, Script s, std::string_view queue, Argv&& argv) {
    return detail::redis::reply_int(call(idempotent, what, s, queue, std::forward<Argv>(argv)).get(), what) == 1;
  }

  void pause_or_resume(const std::string& queue, Script s) {
    validate_queue_name(queue);
    const std::vector<std::string> one{queue};
    const auto fresh = cache_.unregistered(one);
    const auto replies = run(true, [&](Connection& c, bool) {
      std::vector<Cmd> cmds;
      if (!fresh.empty()) cmds.push_back({{"SADD", keys_.global("queues"), queue}, std::nullopt});
      cmds.push_back(scripts_.cmd(s, keys_for(queue, s), {}));
      return scripts_.exec(c, cmds);
    });
    for (const auto& r : replies) expect_ok(r, s == Script::pause ? "pause" : "resume");
    cache_.mark_registered(one);
  }

  // --- flows whose enqueue_flow stopped before its commit ---------------------------------------

  // How long after its first step a flow's commit may still come: the members of a flow not
  // committed by then are discarded (a later commit fails, so nothing is half-stored).
  static constexpr Millis flow_commit_grace{60'000};

  // flow id -> queue -> members written there that still wait for the commit.
  using Uncommitted = std::map<std::string, std::map<std::string, Args>>;

  // The home slot decides once (flow_abort): committed (its records reach the members) or
  // aborted; the members of an aborted flow are then deleted queue by queue.
  void discard_uncommitted(const Uncommitted& stale) {
    for (const auto& entry : stale) {
      const auto& fid = entry.first;  // not a structured binding: lambdas below capture it
      JobId id = 0;
      try {
        id = detail::redis::to_i64(fid);
      } catch (const std::exception&) {
        continue;  // not a member jobq wrote
      }
      const auto home = queue_of(id);
      if (!home) continue;  // the first step maps every id first: not ours
      const bool committed = job_call(true, "recover_expired (flow_abort)", Script::flow_abort, *home,
                                      [&](bool) { return Args{fid, now_str()}; });
      if (committed) continue;
      for (const auto& [q, ids_here] : entry.second) {
        const auto& ids = ids_here;
        const auto gone = call(true, "recover_expired (flow_discard)", Script::flow_discard, q, [&](bool) { return ids; });
        if (gone->elements > 0) forget_pruned(gone);
      }
    }
  }

  // --- pruned jobs leave the global id map --------------------------------------------------

  void forget_pruned(const detail::redis::Reply& reply) {
    Args unmap{"HDEL", keys_.global("jobqueue")};
    for (std::size_t i = 0; i < reply->elements; ++i) {
      unmap.emplace_back(text(reply->element[i]));
      try {
        cache_.forget(detail::redis::to_i64(text(reply->element[i])));
      } catch (const std::exception&) {
      }
    }
    const auto r = run(true, [&](Connection& c, bool) { return c.command(unmap); });
    expect_ok(r, "prune (HDEL " + keys_.global("jobqueue") + ")");
  }

  // --- keys, ids, queues of jobs ----------------------------------------------------------------

  // The keys of `queue` that script `s` receives (see detail::redis::script_keys).
  void append_keys(Args& keys, std::string_view queue, Script s) { keys_.append(keys, queue, detail::redis::script_keys(s)); }

  // The worker registry's keys, as the worker scripts receive them (lua_workers.hpp).
  Args worker_keys() const { return {keys_.workers("info"), keys_.workers("expiry")}; }

  Args keys_for(std::string_view queue, Script s) {
    Args keys;
    keys.reserve(detail::redis::queue_keys.size());
    append_keys(keys, queue, s);
    return keys;
  }

  std::vector<JobId> allocate_ids(std::size_t n) {
    return ids_.take(n, opt_.id_block, [&](std::size_t want) {
      const auto reply = run(true, [&](Connection& c, bool) {
        return c.command({"INCRBY", keys_.global("id"), std::to_string(want)});
      });
      expect_ok(reply, "allocating job ids");
      return detail::redis::reply_int(reply.get(), "INCRBY");
    });
  }

  std::optional<std::string> queue_of(JobId id) { return queues_of(std::vector<JobId>{id}).front(); }

  // The queue of each job (nullopt: no such job).
  std::vector<std::optional<std::string>> queues_of(const std::vector<JobId>& ids) {
    return cache_.lookup(ids, keys_.global("jobqueue"), [&](const Args& hmget) {
      auto reply = run(true, [&](Connection& c, bool) { return c.command(hmget); });
      expect_ok(reply, "looking up the queue of a job");
      return reply;
    });
  }

  // --- small helpers ---------------------------------------------------------------------------

  template <class F>
  auto run(bool idempotent, F&& f) -> std::invoke_result_t<F&, Connection&, bool> {
    return pool_.run(idempotent, std::forward<F>(f));
  }

  void undo_lost_claims(Connection& c) {
    lost_claims_.undo(c, scripts_, keys_, [&] { return now_str(); });
  }

  std::string now_str() const { return std::to_string(to_epoch_ms(now())); }

  static void expect_ok(const Reply& r, const std::string& what) { detail::redis::expect_ok(r, what); }

  [[noreturn]] static void unexpected(const std::string& what) {
    throw RedisError(ErrorCategory::backend, "redis: unexpected reply to " + what);
  }

  static std::string_view text(const redisReply* r) { return detail::redis::text(r); }

  detail::redis::Url url_;
  RedisOptions opt_;
  detail::redis::KeyNames keys_;
  detail::redis::ScriptRunner scripts_;  // written in the constructor only
  detail::redis::Pool pool_;
  detail::redis::IdBlock ids_;
  detail::redis::QueueCache cache_;
  detail::redis::LostClaims lost_claims_;  // claims whose reply was lost, to undo

  NoticeHub hub_;
  detail::redis::Listener listener_;  // after hub_: stopped before hub_ goes
  NoticeHub cancels_;
  detail::redis::Listener cancels_listener_;  // watch_cancels
};

static_assert(Backend<RedisBackend>);

}  // namespace jobq
