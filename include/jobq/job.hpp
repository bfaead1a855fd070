#pragma once

#include <algorithm>
#include <concepts>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "jobq/backoff.hpp"
#include "jobq/error.hpp"
#include "jobq/time.hpp"

namespace jobq {

/// @brief A job's identity, unique within one backend store.
using JobId = std::int64_t;

/// @brief Where a job is in its life.
///
/// queued: ready or due later (run_at may be in the future: delayed or backing off); active:
/// leased by a worker; completed, dead (out of attempts or permanent failure), cancelled:
/// finished; waiting: a flow member whose dependencies have not all finished (not claimable).
enum class JobState { queued, active, completed, dead, cancelled, waiting };

/// @brief Every state, in enum order (for loops over counts and lists).
inline constexpr JobState all_job_states[] = {JobState::queued, JobState::active, JobState::completed,
                                              JobState::dead, JobState::cancelled, JobState::waiting};

/// @brief Whether a job in state `s` has finished (completed, dead or cancelled).
constexpr bool is_finished(JobState s) noexcept {
  return s == JobState::completed || s == JobState::dead || s == JobState::cancelled;
}

/// @brief The stored name of a state ("queued", "active", ...).
constexpr std::string_view to_string(JobState s) noexcept {
  switch (s) {
    case JobState::queued: return "queued";
    case JobState::active: return "active";
    case JobState::completed: return "completed";
    case JobState::dead: return "dead";
    case JobState::cancelled: return "cancelled";
    case JobState::waiting: return "waiting";
  }
  return "unknown";
}

/// @brief Parses a stored state name; throws InvalidArgument for anything else.
inline JobState job_state_from_string(std::string_view s) {
  for (auto st : all_job_states) {
    if (to_string(st) == s) return st;
  }
  throw InvalidArgument("unknown job state '" + std::string(s) + "'");
}

/// @brief A typed job: a struct with a name and an nlohmann_json form.
template <class T>
concept Job = requires(const T& t, const nlohmann::json& j) {
  { T::job_name } -> std::convertible_to<std::string_view>;
  { nlohmann::json(t) };
  { j.get<T>() } -> std::same_as<T>;
};

/// @brief Limits on names and payloads, checked before anything is written.
inline constexpr std::size_t max_queue_name_length = 128;
/// @brief Longest job name accepted.
inline constexpr std::size_t max_job_name_length = 255;
/// @brief Longest unique key accepted.
inline constexpr std::size_t max_unique_key_length = 512;
/// @brief Longest group key accepted.
inline constexpr std::size_t max_group_length = 255;
/// @brief Default largest serialized payload a backend accepts (each backend's
/// Options::max_payload_bytes overrides it).
inline constexpr std::size_t default_max_payload_bytes = std::size_t{1} << 20;

/// @brief Throws InvalidArgument unless `name` is 1..128 characters of [A-Za-z0-9_.-].
///
/// The set is narrow on purpose: queue names become parts of Redis keys (inside a `{}` hash
/// tag) and SQL values, and appear in URLs of the dashboard.
inline void validate_queue_name(std::string_view name) {
  if (name.empty()) throw InvalidArgument("queue name is empty");
  if (name.size() > max_queue_name_length) {
    throw InvalidArgument("queue name is longer than " + std::to_string(max_queue_name_length) +
                          " characters");
  }
  const bool ok = std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
  });
  if (!ok) {
    throw InvalidArgument("queue name '" + std::string(name) +
                          "' is invalid: use only letters, digits, '_', '-' and '.'");
  }
  // "." and ".." would be path segments that browsers and proxies rewrite in URLs.
  if (name == "." || name == "..") throw InvalidArgument("queue name '" + std::string(name) + "' is reserved");
}

/// @brief Throws InvalidArgument unless `name` is 1..255 bytes of UTF-8 with no space or
/// control character.
inline void validate_job_name(std::string_view name) {
  if (name.empty()) throw InvalidArgument("job name is empty");
  if (name.size() > max_job_name_length) {
    throw InvalidArgument("job name is longer than " + std::to_string(max_job_name_length) +
                          " characters");
  }
  // Checked first: the messages below quote the name, and an error must itself be valid text.
  if (!detail::is_valid_utf8(name)) throw InvalidArgument("job name is not valid UTF-8");
  for (unsigned char c : name) {
    if (c <= 0x20 || c == 0x7f) {
      throw InvalidArgument("job name '" + std::string(name) +
                            "' contains a space or control character");
    }
  }
}

/// @brief Throws InvalidArgument unless a key (unique key, group) is at most `max` bytes of
/// valid UTF-8: it is stored as text and read back as JSON by the tools.
inline void validate_text_key(std::string_view key, const char* what, std::size_t max) {
  if (key.size() > max) {
    throw InvalidArgument(std::string(what) + " is longer than " + std::to_string(max) + " characters");
  }
  if (!detail::is_valid_utf8(key)) throw InvalidArgument(std::string(what) + " is not valid UTF-8");
}

/// @brief A job to be written by Backend::enqueue; Queue fills it from EnqueueOptions.
struct NewJob {
  std::string queue{};                   ///< validated queue name
  std::string name{};                    ///< job name, selects the handler
  nlohmann::json payload{};              ///< the job's arguments
  int priority = 0;                      ///< higher runs first
  std::optional<TimePoint> run_at{};     ///< not claimable before; nullopt = now
  int max_attempts = 3;                  ///< attempts before the job is dead (>= 1)
  Backoff backoff{};                     ///< retry delay policy (stored as JSON)
  Millis timeout{0};                     ///< per-attempt time limit; 0 = none
  std::string unique_key{};              ///< empty = not unique
  Millis unique_for{0};                  ///< keep the key held this long after completion
  std::string group{};                   ///< group key (e.g. tenant); empty = none
  Millis throttle{0};                    ///< with unique_key: key held this long from enqueue
  Millis debounce{0};                    ///< with unique_key: run this long after the last enqueue
  std::optional<TimePoint> expires_at{}; ///< not started (claimed) by then: cancelled, never run; nullopt = no deadline
};

/// @brief Throws InvalidArgument when a NewJob cannot be stored as given. Backends call it
/// first in enqueue, before writing anything.
inline void validate(const NewJob& job) {
  check_json(job.payload, "payload");  // first: the checks below may copy or dump it
  validate_queue_name(job.queue);
  validate_job_name(job.name);
  if (job.max_attempts < 1) throw InvalidArgument("max_attempts must be at least 1");
  check_duration(job.timeout, "timeout");
  check_duration(job.unique_for, "unique_for");
  check_duration(job.throttle, "throttle");
  check_duration(job.debounce, "debounce");
  if (job.run_at && (*job.run_at < min_time || *job.run_at > max_time)) {
    throw InvalidArgument("run_at must be between 1970-01-01 and 9999-12-31");
  }
  validate_text_key(job.unique_key, "unique key", max_unique_key_length);
  validate_text_key(job.group, "group key", max_group_length);
  if ((job.throttle.count() > 0 || job.debounce.count() > 0) && job.unique_key.empty()) {
    throw InvalidArgument("throttle and debounce need a unique_key (the key they apply to)");
  }
  if (job.throttle.count() > 0 && job.debounce.count() > 0) {
    throw InvalidArgument("a job is either throttled or debounced, not both");
  }
  if (job.debounce.count() > 0 && (job.run_at || job.unique_for.count() > 0 || job.expires_at)) {
    throw InvalidArgument("debounce sets run_at itself; do not combine it with delay, run_at, unique_for or a deadline");
  }
  if (job.expires_at && (*job.expires_at < min_time || *job.expires_at > max_time)) {
    throw InvalidArgument("expires_at must be between 1970-01-01 and 9999-12-31");
  }
  if (job.payload.is_discarded()) throw InvalidArgument("payload is not valid JSON");
  if (job.backoff.kind() == Backoff::Kind::custom) {
    throw InvalidArgument(
        "backoff: a custom backoff function cannot be stored with a job; set it on the worker "
        "handler instead (worker.handle<T>(fn, {.backoff = ...}))");
  }
}

/// @brief Throws InvalidArgument when job.expires_at is before `now` or before its run_at: a job
/// that could never start. Backends call it beside validate(job), with their clock's now.
inline void check_deadline(const NewJob& job, TimePoint now) {
  if (!job.expires_at) return;
  if (*job.expires_at < now) {
    throw InvalidArgument("expires_at " + iso_time(*job.expires_at) + " is in the past (now " + iso_time(now) +
                          "): the job could never start");
  }
  if (job.run_at && *job.expires_at < *job.run_at) {
    throw InvalidArgument("expires_at " + iso_time(*job.expires_at) + " is before run_at " + iso_time(*job.run_at) +
                          ": the job could never start");
  }
}

/// @brief The error an expired job ends with (cancelled, never run).
inline std::string expired_error(TimePoint expires_at) { return "expired: not started by " + iso_time(expires_at); }

/// @brief Throws InvalidArgument when a serialized payload is larger than `max_bytes`.
/// Backends call it on the text they are about to store, so the check costs no extra dump.
inline void check_payload_size(std::size_t bytes, std::size_t max_bytes) {
  if (bytes > max_bytes) {
    throw InvalidArgument("payload is " + std::to_string(bytes) + " bytes, above the maximum of " +
                          std::to_string(max_bytes) + " (Options::max_payload_bytes)");
  }
}

/// @brief What Backend::enqueue returns: the job's id, and whether it was newly created
/// (false when a held unique key returned the existing job's id).
struct EnqueueResult {
  JobId id = 0;          ///< the new job, or the job holding the unique key
  bool created = false;  ///< false for a deduplicated enqueue
  friend bool operator==(const EnqueueResult&, const EnqueueResult&) = default;
};

/// @brief The error of one failed attempt, kept for every attempt.
struct AttemptError {
  int attempt = 0;      ///< 1-based attempt number
  std::string message;  ///< what the handler threw, or why the lease was lost
  TimePoint at{};       ///< when it was recorded
  friend bool operator==(const AttemptError&, const AttemptError&) = default;
};

/// @brief A job as stored: what Backend::get, list and claim return.
struct JobRecord {
  JobId id = 0;                             ///< identity
  std::string queue{};                      ///< queue name
  std::string name;                         ///< job name
  nlohmann::json payload;                   ///< arguments
  JobState state = JobState::queued;        ///< current state
  int priority = 0;                         ///< higher first
  int attempts = 0;                         ///< attempts started so far (claims)
  int max_attempts = 3;                     ///< attempts allowed
  TimePoint run_at{};                       ///< earliest time it may be claimed
  TimePoint created_at{};                   ///< enqueue time
  std::optional<TimePoint> finished_at;     ///< when it became completed/dead/cancelled
  std::optional<TimePoint> lease_until;     ///< lease deadline while active
  std::string lease_token;                  ///< the current lease's token while active
  Backoff backoff;                          ///< retry policy
  Millis timeout{0};                        ///< per-attempt limit, 0 = none
  std::string unique_key{};                 ///< empty = not unique
  Millis unique_for{0};                     ///< key held this long after completion
  nlohmann::json result;                    ///< handler's result once completed (null otherwise)
  std::vector<AttemptError> errors;         ///< one entry per failed attempt, oldest first
  int progress = 0;                         ///< 0..100, set by the handler
  std::string progress_message;             ///< optional text with the progress
  std::string group{};                      ///< group key; empty = none
  JobId flow_id = 0;                        ///< the flow it belongs to (its first member's id); 0 = none
  std::vector<JobId> depends_on{};          ///< flow members it waits for, in the order given
  bool continue_on_failure = false;         ///< runs even when a dependency is dead or cancelled
  std::optional<TimePoint> expires_at;      ///< not started by then: cancelled as expired; nullopt = none
};

/// @brief Whether a queued job has missed its deadline at `now` (it may no longer be claimed).
inline bool expired(const JobRecord& job, TimePoint now) noexcept { return job.expires_at && *job.expires_at < now; }

/// @brief The claim order every backend honours: higher priority first, then earlier run_at,
/// then enqueue order (id). For backends whose claim statement returns rows unordered.
inline bool claims_before(const JobRecord& a, const JobRecord& b) noexcept {
  if (a.priority != b.priority) return a.priority > b.priority;
  if (a.run_at != b.run_at) return a.run_at < b.run_at;
  return a.id < b.id;
}

/// @brief Serialises errors the way every backend stores them: [{"attempt","message","at"}].
inline nlohmann::json errors_to_json(const std::vector<AttemptError>& errors) {
  auto arr = nlohmann::json::array();
  for (const auto& e : errors) {
    arr.push_back({{"attempt", e.attempt}, {"message", e.message}, {"at", to_epoch_ms(e.at)}});
  }
  return arr;
}

/// @brief Inverse of errors_to_json; throws InvalidArgument on a malformed value.
inline std::vector<AttemptError> errors_from_json(const nlohmann::json& j) {
  std::vector<AttemptError> out;
  if (j.is_null()) return out;
  try {
    for (const auto& e : j) {
      out.push_back({json_integer<int>(e.at("attempt"), "error attempt"), e.at("message").get<std::string>(),
                     from_epoch_ms(json_integer<std::int64_t>(e.at("at"), "error time"))});
    }
  } catch (const nlohmann::json::exception& ex) {
    throw InvalidArgument(std::string("stored error list is malformed: ") + ex.what());
  }
  return out;
}

/// @brief A whole job as JSON (for the CLI, the dashboard and logs).
inline nlohmann::json to_json(const JobRecord& r) {
  nlohmann::json j = {
      {"id", r.id},
      {"queue", r.queue},
      {"name", r.name},
      {"payload", r.payload},
      {"state", to_string(r.state)},
      {"priority", r.priority},
      {"attempts", r.attempts},
      {"max_attempts", r.max_attempts},
      {"run_at", to_epoch_ms(r.run_at)},
      {"created_at", to_epoch_ms(r.created_at)},
      {"finished_at", r.finished_at ? nlohmann::json(to_epoch_ms(*r.finished_at)) : nullptr},
      {"lease_until", r.lease_until ? nlohmann::json(to_epoch_ms(*r.lease_until)) : nullptr},
      {"timeout_ms", r.timeout.count()},
      {"unique_key", r.unique_key},
      {"unique_for_ms", r.unique_for.count()},
      {"result", r.result},
      {"errors", errors_to_json(r.errors)},
      {"progress", r.progress},
      {"progress_message", r.progress_message},
      {"group", r.group},
      {"expires_at", r.expires_at ? nlohmann::json(to_epoch_ms(*r.expires_at)) : nullptr},
  };
  if (r.flow_id != 0) {
    j["flow_id"] = r.flow_id;
    j["depends_on"] = r.depends_on;
    j["continue_on_failure"] = r.continue_on_failure;
  }
  if (r.backoff.kind() != Backoff::Kind::custom) j["backoff"] = r.backoff.to_json();
  return j;
}

/// @brief Parameters of Backend::claim.
struct ClaimRequest {
  std::vector<std::string> queues{};  ///< claim from any of these (paused ones are skipped)
  std::size_t limit = 1;            ///< at most this many jobs
  Millis lease{30'000};             ///< lease length; the worker heartbeats before it ends
};

/// @brief Checks a claim request (queue names, lease) and returns its queues, each once, in the
/// order given; every backend's claim starts here.
inline std::vector<std::string> claim_queues(const ClaimRequest& req) {
  std::vector<std::string> queues;
  queues.reserve(req.queues.size());
  for (const auto& q : req.queues) {
    validate_queue_name(q);
    if (std::find(queues.begin(), queues.end(), q) == queues.end()) queues.push_back(q);
  }
  check_duration(req.lease, "lease");
  return queues;
}

/// @brief One successful attempt to record (Backend::complete_many).
struct Completion {
  JobId id = 0;            ///< the job
  std::string lease_token{}; ///< token from the claim; a stale token is rejected
  nlohmann::json result{};   ///< stored as the job's result
};

/// @brief One failed attempt to record (Backend::fail).
struct Failure {
  JobId id = 0;                       ///< the job
  std::string lease_token{};          ///< token from the claim; a stale token is rejected
  std::string error{};                ///< kept in the job's error list
  std::optional<TimePoint> retry_at{};  ///< retry then; nullopt = no retry (dead now)
};

/// @brief What Backend::fail did.
enum class FailOutcome {
  rejected,  ///< the lease token was stale or the job not active: nothing changed
  retried,   ///< queued again for retry_at
  dead,      ///< out of attempts or permanent: dead
};

/// @brief Jobs per state in one queue.
struct Counts {
  std::int64_t queued = 0;     ///< waiting, including delayed ones
  std::int64_t active = 0;     ///< leased
  std::int64_t completed = 0;  ///< finished successfully (until pruned)
  std::int64_t dead = 0;       ///< out of attempts (until pruned or re-driven)
  std::int64_t cancelled = 0;  ///< cancelled (until pruned)
  std::int64_t waiting = 0;    ///< flow members waiting for their dependencies
  /// Of the queued jobs, how many have run_at > now (a delay or a retry backoff): part of
  /// `queued`, not a state of its own, so queued - delayed are ready now.
  std::int64_t delayed = 0;
  friend bool operator==(const Counts&, const Counts&) = default;
};

/// @brief The count of state `s` in `c`.
constexpr std::int64_t& count_of(Counts& c, JobState s) noexcept {
  switch (s) {
    case JobState::queued: return c.queued;
    case JobState::active: return c.active;
    case JobState::completed: return c.completed;
    case JobState::dead: return c.dead;
    case JobState::waiting: return c.waiting;
    case JobState::cancelled: break;
  }
  return c.cancelled;
}

/// @brief What Backend::recover_expired did.
struct Recovered {
  std::size_t retried = 0;  ///< leases expired, requeued (the attempt counts)
  std::size_t dead = 0;     ///< leases expired on the last attempt: dead
  friend bool operator==(const Recovered&, const Recovered&) = default;
};

/// @brief How long finished jobs are kept before Backend::prune deletes them
/// (measured from finished_at; nullopt keeps them forever by age), and how many of each
/// finished state a queue keeps at most (the newest by finished_at; 0 = no cap).
struct Retention {
  std::optional<Millis> completed = std::chrono::hours(24);   ///< keep completed jobs
  std::optional<Millis> dead = std::chrono::hours(24 * 7);    ///< keep dead jobs
  std::optional<Millis> cancelled = std::chrono::hours(24);   ///< keep cancelled jobs
  std::size_t max_jobs = 0;  ///< keep at most this many per finished state and queue; 0 = no cap
};

/// @brief At most `max` job starts (claims) per queue in any `window`, across all workers.
struct RateLimit {
  std::int64_t max = 0;  ///< starts allowed per window (>= 1)
  Millis window{0};      ///< the sliding window (>= 1 ms)
  friend bool operator==(const RateLimit&, const RateLimit&) = default;
};

/// @brief Limits a backend enforces when claiming from one queue (Backend::set_queue_limits).
struct QueueLimits {
  std::optional<RateLimit> rate{};  ///< start rate; nullopt = unlimited
  int group_concurrency = 0;        ///< active jobs per group key at most; 0 = unlimited
  int concurrency = 0;              ///< active jobs of the queue at most (all workers); 0 = unlimited
  friend bool operator==(const QueueLimits&, const QueueLimits&) = default;
};

/// @brief Throws InvalidArgument for a limit that cannot be enforced.
inline void validate(const QueueLimits& l) {
  if (l.rate && (l.rate->max < 1 || l.rate->window < Millis{1})) {
    throw InvalidArgument("rate limit needs max >= 1 and a window of at least 1 ms");
  }
  if (l.group_concurrency < 0) throw InvalidArgument("group_concurrency must not be negative");
  if (l.concurrency < 0) throw InvalidArgument("concurrency must not be negative");
}

/// @brief Limits as JSON ({"rate":{"max","window_ms"}|null,"group_concurrency","concurrency"}), for backends
/// that store them as one document.
inline nlohmann::json to_json(const QueueLimits& l) {
  return {{"rate", l.rate ? nlohmann::json{{"max", l.rate->max}, {"window_ms", l.rate->window.count()}}
                          : nlohmann::json(nullptr)},
          {"group_concurrency", l.group_concurrency},
          {"concurrency", l.concurrency}};
}

/// @brief Inverse of to_json(QueueLimits); throws InvalidArgument on a malformed value.
inline QueueLimits queue_limits_from_json(const nlohmann::json& j) {
  QueueLimits l;
  if (j.is_null()) return l;
  try {
    if (j.contains("rate") && !j.at("rate").is_null()) {
      l.rate = RateLimit{json_integer<std::int64_t>(j.at("rate").at("max"), "rate max"),
                         Millis{json_integer<std::int64_t>(j.at("rate").at("window_ms"), "rate window_ms")}};
    }
    l.group_concurrency = json_integer_or<int>(j, "group_concurrency", 0);
    l.concurrency = json_integer_or<int>(j, "concurrency", 0);  // absent in documents from before
  } catch (const nlohmann::json::exception& e) {
    throw InvalidArgument(std::string("stored queue limits are malformed: ") + e.what());
  }
  return l;
}

/// @brief A schedule as a backend stores it: a name, an opaque spec (jobq::Schedule as JSON,
/// read only by the core) and the next tick due. See Backend::fire_schedule.
struct StoredSchedule {
  std::string name{};        ///< unique within the store
  nlohmann::json spec{};     ///< what to enqueue and when (core-defined JSON)
  TimePoint next_run{};      ///< the next tick not yet fired
  friend bool operator==(const StoredSchedule&, const StoredSchedule&) = default;
};

/// @brief Throws InvalidArgument unless a schedule name is 1..128 of [A-Za-z0-9_.-].
inline void validate_schedule_name(std::string_view name) {
  try {
    validate_queue_name(name);
  } catch (const InvalidArgument& e) {
    std::string msg = e.what();
    if (msg.rfind("queue", 0) == 0) msg.replace(0, 5, "schedule");
    throw InvalidArgument(msg);
  }
}

/// @brief A page of Backend::list.
struct Page {
  std::size_t offset = 0;   ///< jobs to skip
  std::size_t limit = 100;  ///< jobs to return at most
};

namespace detail {

/// @brief A fresh random lease token (128 bits, hex); unguessable enough to fence stale workers.
inline std::string new_lease_token() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char hex[] = "0123456789abcdef";
  std::string s(32, '0');
  for (int half = 0; half < 2; ++half) {
    auto v = rng();
    for (int i = 0; i < 16; ++i) {
      s[static_cast<std::size_t>(half * 16 + i)] = hex[v & 0xf];
      v >>= 4;
    }
  }
  return s;
}

}  // namespace detail
}  // namespace jobq
