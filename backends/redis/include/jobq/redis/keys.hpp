#pragma once
// The Redis key layout: the keys of one queue (one table, in the order scripts receive them),
// the global keys, and the names built from a prefix.
//
// Key layout of one queue (Q = "<prefix>:{<queue>}", so every key of a queue shares the hash
// tag {<queue>} and lives in one Redis Cluster slot). Every script gets the keys of each queue it
// touches in KEYS, in this order; no script builds a key name itself.
//
//    1 Q:jobs            hash    id -> the job's fixed fields as JSON (written once by enqueue;
//                                integers as decimal strings). Scripts never decode it on the
//                                hot paths: the fields that change live in Q:state
//    2 Q:ready           zset    queued jobs that are due; score -priority, member
//                                hex16(run_at) .. hex14(id), so ZRANGE order is priority desc,
//                                then run_at asc, then id asc (members of equal score sort
//                                lexicographically)
//    3 Q:delayed         zset    queued jobs not yet due; score run_at, member = the ready
//                                member .. priority (so claim promotes without reading the job)
//    4 Q:leases          zset    active jobs; score lease_until, member id
//  5-9 Q:ids:<state>     zset    every job of a state (queued, active, completed, dead,
//                                cancelled); score = member = id: exact counts (ZCARD) and
//                                stable pages by id (ZRANGE)
// 10-12 Q:done:<state>   zset    finished jobs (completed, dead, cancelled); score finished_at,
//                                for prune
//   13 Q:unique          hash    unique key -> id of the job that holds or last held it
//   14 Q:paused          string  present while the queue is paused
//   15 Q:wake            list    wake-up markers (at most 32) that waiting workers BLPOP
//   16 Q:state           hash    id -> the job's changing fields, 11 words separated by spaces
//                                (see parse_hot): state attempts max_attempts priority run_at
//                                lease_until finished_at unique_for lease_token last_token
//                                last_outcome ('-' = none). A job exists iff it has this entry
//   17 Q:errors          hash    id -> JSON array of the failed attempts (absent: none)
//   18 Q:results         hash    id -> the result JSON of a completed job (absent: null)
//   19 Q:progress        hash    id -> "<percent> <message>" (absent: 0, "")
//   20 Q:limits          hash    queue limits: rate_max, rate_window (ms), group_concurrency, concurrency,
//                                and rate_used (starts in the ledger below); absent: none
//   21 Q:starts          zset    rate-limit ledger: one entry per claim call that started jobs,
//                                score = its time, member "<claim seed>:<n>"; entries older
//                                than the window are dropped (and subtracted from rate_used)
//   22 Q:groups          hash    id -> group key, for jobs that have one
//   23 Q:gactive         hash    group key -> active jobs of that group (absent: 0)
//   24 Q:parked          zset    queued, due jobs held back because their group was at its
//                                limit; score 0, member len3(group) .. group .. hex8(2^31-1 -
//                                priority) .. the ready member, so one group's jobs are one
//                                ZRANGEBYLEX range in claim order
//   25 Q:ids:waiting     zset    flow members waiting for their dependencies (score = member = id)
//   26 Q:dependents      hash    flow member id -> who waits for it: "<id>:<queue> ..." (any queue)
//   27 Q:pending         hash    flow member with dependencies -> "pending bad cof": how many are
//                                not resolved, how many are dead or cancelled, continue_on_failure
//   28 Q:resolved        hash    "<member>:<dependency>" -> "<seq> <outcome>" as last applied
//                                (c completed, d dead, x cancelled, - re-driven): a record whose
//                                seq is not newer is a replay and changes nothing (lua_flow.hpp)
//   29 Q:member          hash    flow member id -> its flow id
//   30 Q:fdone           zset    finished flow members, score finished_at (not in Q:done:*: only
//                                whole flows are pruned)
//   31 Q:outbox          list    records for other queues' slots, applied by the client (lua_flow.hpp)
//   32 Q:seq             string  counter of this slot's flow records
//   33 Q:flows           hash    flow-wide data of the flows whose first member is here (home):
//                                "<fid>:m" members "<id>:<queue> ...", "<fid>:f" the on_failure
//                                job, "<fid>:x" fired ("<id> <nonce> <dependency>", or "-"),
//                                "<fid>:a" aborted (its commit came too late: the time)
//   34 Q:uncommitted     zset    members written here by an enqueue_flow whose commit (in the
//                                home slot) has not reached them yet; score = written at, for
//                                the maintenance pass that discards those of a flow never committed
//   35 Q:deadlines       zset    jobs with a deadline (expires_at), score = it, member id: added by
//                                enqueue, read by claim (a queued job past it is not started) and
//                                by recover, which expires queued ones and drops entries of jobs
//                                that ended or are gone (active and waiting ones stay: the deadline
//                                counts again if they are queued again)
//   36 Q:none            zset    never written: the empty first key of check_keys' ZDIFF
//
// Scripts with a "-- keys: NAME ..." line receive only those keys (in this order); the others
// receive all but Q:none (35). key(q, NAME) finds a key by its position in the script's own layout.
// Notices (Backend::subscribe) are PUBLISHed to "<prefix>:events" (not a key: a channel) as a
// JSON array per script call, only while someone subscribes to it (PUBSUB NUMSUB).
//
// Time is never read inside a script: the client passes `now` from its injected clock.

//
// Global keys (outside any queue's slot): <prefix>:id (the job id counter), <prefix>:jobqueue
// (hash id -> queue), <prefix>:queues (set of queue names, for recover_expired),
// <prefix>:schedules (hash name -> "next_run nonce spec") and <prefix>:version (store format).
//
// The worker registry (slot {~workers}, see KeyNames::workers): <prefix>:{~workers}:info (hash
// worker id -> to_json(WorkerInfo)) and <prefix>:{~workers}:expiry (zset, score expires_at).

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "jobq/job.hpp"

namespace jobq::detail::redis {

/// @brief The Redis type of a key; its letter is what the scripts' KEYTYPES string holds.
enum class KeyType : char { hash = 'h', zset = 'z', string = 's', list = 'l' };

/// @brief One key of a queue: `<prefix>:{<queue>}:<suffix>`, called `lua_name` in the scripts
/// (`key(q, READY)`; `IDS.queued` and `DONE.dead` are entries of the Lua tables IDS and DONE).
struct QueueKey {
  std::string_view suffix;
  std::string_view lua_name;
  KeyType type;
};

/// @brief The keys of a queue, in the layout's order (numbered as in the comment above).
inline constexpr std::array queue_keys = {
    QueueKey{"jobs", "JOBS", KeyType::hash},
    QueueKey{"ready", "READY", KeyType::zset},
    QueueKey{"delayed", "DELAYED", KeyType::zset},
    QueueKey{"leases", "LEASES", KeyType::zset},
    QueueKey{"ids:queued", "IDS.queued", KeyType::zset},
    QueueKey{"ids:active", "IDS.active", KeyType::zset},
    QueueKey{"ids:completed", "IDS.completed", KeyType::zset},
    QueueKey{"ids:dead", "IDS.dead", KeyType::zset},
    QueueKey{"ids:cancelled", "IDS.cancelled", KeyType::zset},
    QueueKey{"done:completed", "DONE.completed", KeyType::zset},
    QueueKey{"done:dead", "DONE.dead", KeyType::zset},
    QueueKey{"done:cancelled", "DONE.cancelled", KeyType::zset},
    QueueKey{"unique", "UNIQUE", KeyType::hash},
    QueueKey{"paused", "PAUSED", KeyType::string},
    QueueKey{"wake", "WAKE", KeyType::list},
    QueueKey{"state", "STATE", KeyType::hash},
    QueueKey{"errors", "ERRORS", KeyType::hash},
    QueueKey{"results", "RESULTS", KeyType::hash},
    QueueKey{"progress", "PROGRESS", KeyType::hash},
    QueueKey{"limits", "LIMITS", KeyType::hash},
    QueueKey{"starts", "STARTS", KeyType::zset},
    QueueKey{"groups", "GROUPS", KeyType::hash},
    QueueKey{"gactive", "GACTIVE", KeyType::hash},
    QueueKey{"parked", "PARKED", KeyType::zset},
    QueueKey{"ids:waiting", "IDS.waiting", KeyType::zset},
    QueueKey{"dependents", "DEPENDENTS", KeyType::hash},
    QueueKey{"pending", "PENDING", KeyType::hash},
    QueueKey{"resolved", "RESOLVED", KeyType::hash},
    QueueKey{"member", "MEMBER", KeyType::hash},
    QueueKey{"fdone", "FDONE", KeyType::zset},
    QueueKey{"outbox", "OUTBOX", KeyType::list},
    QueueKey{"seq", "SEQ", KeyType::string},
    QueueKey{"flows", "FLOWS", KeyType::hash},
    QueueKey{"uncommitted", "UNCOMMITTED", KeyType::zset},
    QueueKey{"deadlines", "DEADLINES", KeyType::zset},
    QueueKey{"none", "NONE", KeyType::zset},
};

/// @brief True if no two keys share a suffix or a Lua name.
constexpr bool queue_keys_distinct() {
  for (std::size_t i = 0; i < queue_keys.size(); ++i) {
    for (std::size_t j = i + 1; j < queue_keys.size(); ++j) {
      if (queue_keys[i].suffix == queue_keys[j].suffix || queue_keys[i].lua_name == queue_keys[j].lua_name) return false;
    }
  }
  return true;
}
static_assert(queue_keys_distinct(), "jobq: two queue keys share a suffix or a Lua name");
static_assert(queue_keys.back().lua_name == "NONE", "jobq: Q:none is last (scripts without a keys line get all but it)");

/// @brief Words of a Q:state entry.
inline constexpr std::size_t hot_fields = 11;

/// @brief The ready-set member of a job: hex16(run_at clamped to [0, 4e18]) hex14(id), as the
/// scripts' rank() makes it.
inline std::string rank(std::int64_t run_at, JobId id) {
  const auto at = std::clamp<std::int64_t>(run_at, 0, 4'000'000'000'000'000'000LL);
  char buf[40];
  const int n = std::snprintf(buf, sizeof buf, "%016llx%014llx", static_cast<unsigned long long>(at),
                              static_cast<unsigned long long>(id));
  return std::string(buf, static_cast<std::size_t>(n));
}

/// @brief The key names of one prefix, with a per-queue cache of each queue's key names.
class KeyNames {
 public:
  explicit KeyNames(std::string prefix) : prefix_(std::move(prefix)) {}

  /// @brief "<prefix>:{<queue>}:", the start of every key of the queue.
  [[nodiscard]] std::string queue_base(std::string_view queue) const {
    return prefix_ + ":{" + std::string(queue) + "}:";
  }

  /// @brief A global key: "<prefix>:<name>".
  [[nodiscard]] std::string global(std::string_view name) const { return prefix_ + ":" + std::string(name); }

  /// @brief A key of the worker registry: "<prefix>:{~workers}:<name>". One hash tag for all of
  /// them (one slot, one script); '~' is not allowed in queue names, so no queue shares it.
  [[nodiscard]] std::string workers(std::string_view name) const {
    return prefix_ + ":{~workers}:" + std::string(name);
  }

  /// @brief The SCAN pattern of every key under the prefix ("<prefix>:*", glob characters of
  /// the prefix escaped).
  [[nodiscard]] std::string scan_pattern() const {
    std::string pattern;
    for (char c : prefix_) {
      if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') pattern += '\\';
      pattern += c;
    }
    return pattern + ":*";
  }

  /// @brief Appends the keys of `queue` at the positions `which` (indices into queue_keys).
  void append(std::vector<std::string>& out, std::string_view queue, const std::vector<std::size_t>& which) {
    const auto names = names_of(queue);
    for (auto i : which) out.push_back((*names)[i]);
  }

 private:
  std::shared_ptr<const std::vector<std::string>> names_of(std::string_view queue) {
    std::lock_guard lock(mutex_);
    auto it = names_.find(std::string(queue));
    if (it != names_.end()) return it->second;
    if (names_.size() >= 10'000) names_.clear();
    const auto base = queue_base(queue);
    auto names = std::make_shared<std::vector<std::string>>();
    for (const auto& k : queue_keys) names->push_back(base + std::string(k.suffix));
    return names_.emplace(std::string(queue), std::move(names)).first->second;
  }

  std::string prefix_;
  std::mutex mutex_;
  std::unordered_map<std::string, std::shared_ptr<const std::vector<std::string>>> names_;  // queue -> its keys
};

}  // namespace jobq::detail::redis
