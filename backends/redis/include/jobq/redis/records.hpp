#pragma once
// How a job is stored and read back: the fixed part (a JSON document in Q:jobs), the state
// entry (Q:state), the enqueue script's arguments, and the schedule and limit records.

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "jobq/job.hpp"
#include "jobq/redis/connection.hpp"
#include "jobq/redis/keys.hpp"
#include "jobq/worker_info.hpp"

namespace jobq::detail::redis {

/// @brief Text as valid UTF-8 (invalid bytes become U+FFFD): error and progress messages are
/// stored inside JSON documents, which must be UTF-8.
inline std::string valid_utf8(const std::string& s) {
  const auto quoted = nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return nlohmann::json::parse(quoted).get<std::string>();
}

/// @brief A completion's result as a script argument: '' for null (nothing stored).
inline std::string result_arg(const nlohmann::json& result) {
  return result.is_null() ? std::string() : dump_for_storage(result, "result");
}

/// @brief A JSON string literal exactly as nlohmann::json::dump() writes it: printable ASCII is
/// copied, '"', '\\' and control characters escaped; text with other bytes goes through
/// nlohmann (UTF-8 validation; throws on invalid bytes).
inline void append_json_string(std::string& out, std::string_view s) {
  for (unsigned char c : s) {
    if (c >= 0x80) {
      out += nlohmann::json(std::string(s)).dump();
      return;
    }
  }
  out += '"';
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\t': out += "\\t"; break;
      case '\n': out += "\\n"; break;
      case '\f': out += "\\f"; break;
      case '\r': out += "\\r"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

/// @brief The fixed fields of a job (Q:jobs): the JSON object nlohmann::json would write (keys sorted,
/// no spaces), formatted directly (a json object per job cost more client time than the
/// script's own work on a bulk enqueue). Integers as decimal strings: cjson (Redis' JSON in
/// Lua, which reads the unique key back) keeps only 14 digits. `nonce`: which enqueue call
/// wrote it (see the enqueue script); `group` absent: none (and in documents of format 1).
/// `flow`: a flow member's fields (flow_fields), last; absent in other jobs.
inline std::string make_doc(const NewJob& j, JobId id, std::int64_t t, const std::string& payload,
                            const std::string& backoff, const std::string& nonce, std::string_view flow = {}) {
  std::string d;
  d.reserve(200 + payload.size() + j.name.size() + j.queue.size() + j.unique_key.size() + j.group.size());
  try {
    d += "{\"backoff\":";
    append_json_string(d, backoff);
    d += ",\"created_at\":\"" + std::to_string(t) + '"';
    if (j.expires_at) d += ",\"expires_at\":\"" + std::to_string(to_epoch_ms(*j.expires_at)) + '"';
    if (!j.group.empty()) {
      d += ",\"group\":";
      append_json_string(d, j.group);
    }
    d += ",\"id\":\"" + std::to_string(id) + "\",\"name\":";
    append_json_string(d, j.name);
    d += ",\"nonce\":\"" + nonce + "\",\"payload\":";
    append_json_string(d, payload);
    d += ",\"queue\":";
    append_json_string(d, j.queue);
    d += ",\"timeout_ms\":\"" + std::to_string(j.timeout.count()) + "\",\"unique_for_ms\":\"" +
         std::to_string(j.unique_for.count()) + "\",\"unique_key\":";
    append_json_string(d, j.unique_key);
    d += flow;
    d += '}';
  } catch (const nlohmann::json::exception&) {
    throw InvalidArgument("job name, unique key or group is not valid UTF-8");
  }
  return d;
}

/// @brief A flow member's fields of its fixed part: flow_id, depends_on ("<id> <id> ...": the
/// flow scripts read it) and continue_on_failure ("1"/"0"), as strings like every integer there.
inline std::string flow_fields(JobId flow_id, const std::vector<JobId>& depends_on, bool continue_on_failure) {
  std::string f = ",\"continue_on_failure\":\"" + std::string(continue_on_failure ? "1" : "0") + "\",\"depends_on\":\"";
  for (std::size_t i = 0; i < depends_on.size(); ++i) {
    if (i > 0) f += ' ';
    f += std::to_string(depends_on[i]);
  }
  return f + "\",\"flow_id\":\"" + std::to_string(flow_id) + '"';
}

// The fields of a fixed part, in the order of FixedPart::names.
enum class Fixed : std::size_t {
  id, queue, name, payload, created_at, backoff, timeout_ms, unique_key, unique_for_ms, group, expires_at,
  flow_id, depends_on, continue_on_failure, count_
};

/// @brief A fixed part read by SAX: it is one flat object of strings (the integers too), so the
/// fields go straight into their slots with no DOM of maps (the cost of reading 20,000 records
/// for a chord's callback). Unknown keys are skipped; a value that is not a string is an error.
class FixedPart {
 public:
  static constexpr std::array<std::string_view, static_cast<std::size_t>(Fixed::count_)> names{
      "id", "queue", "name", "payload", "created_at", "backoff", "timeout_ms", "unique_key", "unique_for_ms",
      "group", "expires_at", "flow_id", "depends_on", "continue_on_failure"};

  explicit FixedPart(std::string_view raw) { nlohmann::json::sax_parse(raw, this); }

  /// @brief Why the record is not a flat object of strings ("" when it is).
  [[nodiscard]] const std::string& error() const { return error_; }
  [[nodiscard]] const std::optional<std::string>& get(Fixed f) const { return values_[static_cast<std::size_t>(f)]; }
  [[nodiscard]] const std::string& at(Fixed f) const {
    const auto& v = get(f);
    if (!v) throw std::invalid_argument("field '" + std::string(names[static_cast<std::size_t>(f)]) + "' is missing");
    return *v;
  }

  // The nlohmann SAX interface. A bad value is noted and the parse goes on, so the job's id is
  // known for the error message wherever the bad value is.
  bool key(std::string& k) {
    if (depth_ == 1) {
      key_ = k;
      at_ = static_cast<std::size_t>(std::find(names.begin(), names.end(), k) - names.begin());
    }
    return true;
  }
  bool string(std::string& v) {
    if (depth_ == 1 && at_ < values_.size()) values_[at_] = std::move(v);
    return depth_ > 0 || bad("not an object");
  }
  bool start_object(std::size_t) { return ++depth_ == 1 || bad("field '" + key_ + "' is not a string"); }
  bool end_object() { return --depth_, true; }
  bool start_array(std::size_t) { return ++depth_ == 1 ? bad("not an object") : bad("field '" + key_ + "' is not a string"); }
  bool end_array() { return --depth_, true; }
  bool null() { return scalar(); }
  bool boolean(bool) { return scalar(); }
  bool number_integer(std::int64_t) { return scalar(); }
  bool number_unsigned(std::uint64_t) { return scalar(); }
  bool number_float(double, const std::string&) { return scalar(); }
  bool binary(std::vector<std::uint8_t>&) { return scalar(); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::json::exception& e) {
    if (error_.empty()) error_ = e.what();
    return false;
  }

 private:
  bool scalar() { return depth_ > 0 ? bad("field '" + key_ + "' is not a string") : bad("not an object"); }
  bool bad(std::string why) {
    if (error_.empty()) error_ = std::move(why);
    return depth_ > 0;  // inside the object: go on (to read the id); a bare value: stop
  }

  std::array<std::optional<std::string>, names.size()> values_{};
  std::size_t at_ = names.size();
  std::string key_;
  int depth_ = 0;
  std::string error_;
};

/// @brief A stored backoff: nearly every job of a store has the same one, so the last one this
/// thread read is kept and a repeat costs a string compare, not a JSON parse.
inline Backoff parse_backoff(const std::string& text) {
  thread_local std::string last_text;
  thread_local Backoff last;
  if (text != last_text || last_text.empty()) {
    last = Backoff::from_json(nlohmann::json::parse(text));
    last_text = text;
  }
  return last;
}

/// @brief A job from its fixed part (Q:jobs), its state entry (Q:state: 11 words, '-' = none), and
/// its errors, result and progress ('' = none). `base` ("<prefix>:{queue}:", or empty when
/// unknown) names the key in error messages.
inline JobRecord parse_job(std::string_view raw, std::string_view hot, std::string_view errors,
                           std::string_view result, std::string_view progress, const std::string& base) {
  using detail::redis::to_i64;
  using detail::redis::to_int;
  std::string id = "?";
  const char* part = "jobs";
  try {
    const FixedPart d(raw);
    if (d.get(Fixed::id)) id = *d.get(Fixed::id);
    if (!d.error().empty()) throw std::invalid_argument(d.error());
    const auto str = [&](Fixed f) -> const std::string& { return d.at(f); };
    JobRecord r;
    r.id = to_i64(str(Fixed::id));
    r.queue = str(Fixed::queue);
    r.name = str(Fixed::name);
    r.payload = nlohmann::json::parse(str(Fixed::payload));
    r.created_at = from_epoch_ms(to_i64(str(Fixed::created_at)));
    r.backoff = parse_backoff(str(Fixed::backoff));
    r.timeout = Millis{to_i64(str(Fixed::timeout_ms))};
    r.unique_key = str(Fixed::unique_key);
    r.unique_for = Millis{to_i64(str(Fixed::unique_for_ms))};
    if (const auto& g = d.get(Fixed::group)) r.group = *g;
    if (const auto& e = d.get(Fixed::expires_at)) r.expires_at = from_epoch_ms(to_i64(*e));
    if (const auto& f = d.get(Fixed::flow_id)) {
      r.flow_id = to_i64(*f);
      const auto& deps = str(Fixed::depends_on);
      for (std::size_t pos = 0; pos < deps.size();) {
        const auto sp = std::min(deps.find(' ', pos), deps.size());
        r.depends_on.push_back(to_i64(std::string_view(deps).substr(pos, sp - pos)));
        pos = sp + 1;
      }
      r.continue_on_failure = str(Fixed::continue_on_failure) == "1";
    }
    part = "state";
    std::array<std::string_view, hot_fields> w{};
    std::size_t n = 0;
    for (std::size_t pos = 0; pos <= hot.size() && n < w.size();) {
      const auto sp = std::min(hot.find(' ', pos), hot.size());
      w[n++] = hot.substr(pos, sp - pos);
      pos = sp + 1;
    }
    if (n != w.size() || w.back().find(' ') != std::string_view::npos) {
      throw std::invalid_argument("state entry '" + std::string(hot) + "' is malformed");
    }
    r.state = job_state_from_string(w[0]);
    r.attempts = to_int(w[1]);
    r.max_attempts = to_int(w[2]);
    r.priority = to_int(w[3]);
    r.run_at = from_epoch_ms(to_i64(w[4]));
    if (w[6] != "-") r.finished_at = from_epoch_ms(to_i64(w[6]));
    if (r.state == JobState::active) {
      r.lease_until = from_epoch_ms(to_i64(w[5]));
      r.lease_token = std::string(w[8]);
    }
    part = "results";
    if (!result.empty()) r.result = nlohmann::json::parse(result);
    part = "errors";
    if (!errors.empty()) r.errors = errors_from_json(nlohmann::json::parse(errors));
    part = "progress";
    if (!progress.empty()) {
      const auto sp = progress.find(' ');
      r.progress = to_int(progress.substr(0, sp));
      if (sp != std::string_view::npos) r.progress_message = std::string(progress.substr(sp + 1));
    }
    return r;
  } catch (const std::exception& e) {
    const auto in = base.empty() ? std::string(" (claimed)") : " in " + base + part;
    throw RedisError(ErrorCategory::backend,
                     "redis: job " + id + in + " is corrupted (not a jobq job record): " + e.what());
  }
}

/// @brief An enqueue batch, validated: its queues (in order of first use), each queue's index
/// in that list, and each job's serialized payload.
struct Batch {
  std::vector<std::string> queues;
  std::unordered_map<std::string, std::size_t> index;
  std::vector<std::string> payloads;
};

/// @brief Validates every job of a batch at `now` (InvalidArgument, nothing written) and
/// serializes the payloads.
inline Batch prepare_batch(std::span<const NewJob> jobs, std::size_t max_payload_bytes, TimePoint now) {
  Batch b;
  b.payloads.reserve(jobs.size());
  for (const auto& j : jobs) {
    validate(j);
    check_deadline(j, now);
    if (b.index.emplace(j.queue, b.queues.size()).second) b.queues.push_back(j.queue);
    b.payloads.push_back(j.payload.dump());  // validate(j) ran check_json: no throw, no second walk
    check_payload_size(b.payloads.back().size(), max_payload_bytes);
  }
  return b;
}

/// @brief Whether a batch needs the enqueue script's wide layout (11 arguments per job instead
/// of 6): more than one queue, or a unique key, group, throttle, debounce or deadline.
inline bool wide_layout(std::span<const NewJob> jobs, std::size_t queue_count) {
  return queue_count > 1 || std::any_of(jobs.begin(), jobs.end(), [](const NewJob& j) {
           return !j.unique_key.empty() || !j.group.empty() || j.debounce.count() > 0 || j.throttle.count() > 0 ||
                  j.expires_at;
         });
}

/// @brief A job's deadline as a script argument: epoch ms, '' for none (Q:deadlines).
inline std::string deadline_arg(const NewJob& j) {
  return j.expires_at ? std::to_string(to_epoch_ms(*j.expires_at)) : std::string();
}

/// @brief Appends one job's arguments to the enqueue script's ARGV (see lua::enqueue): `queue`
/// is its 1-based queue index in the wide layout, 0 in the narrow one. The index entries and the
/// state entry are formatted here, so the script only files them.
inline void append_enqueue_args(Args& argv, const NewJob& j, JobId id, std::int64_t t, std::size_t queue,
                                const std::string& payload, const std::string& nonce) {
  const bool wide = queue > 0;
  const auto run_at = j.debounce.count() > 0 ? t + j.debounce.count() : j.run_at ? to_epoch_ms(*j.run_at) : t;
  const bool due = run_at <= t;
  const auto member = rank(run_at, id);
  if (wide) argv.push_back(std::to_string(queue));
  argv.push_back(std::to_string(id));
  argv.push_back(due ? "r" : "d");
  argv.push_back(due ? std::to_string(-static_cast<std::int64_t>(j.priority)) : std::to_string(run_at));
  argv.push_back(due ? member : member + std::to_string(j.priority));
  argv.push_back("queued 0 " + std::to_string(j.max_attempts) + ' ' + std::to_string(j.priority) + ' ' +
                 std::to_string(run_at) + " - - " +
                 (j.unique_key.empty() ? std::string("-") : std::to_string(j.unique_for.count())) + " - - -");
  argv.push_back(make_doc(j, id, t, payload, j.backoff.to_json().dump(), nonce));
  if (wide) {
    argv.push_back(j.unique_key);
    argv.push_back(j.group);
    argv.push_back(j.debounce.count() > 0   ? "d" + std::to_string(j.debounce.count())
                   : j.throttle.count() > 0 ? "t" + std::to_string(j.throttle.count())
                                            : std::string());
    argv.push_back(deadline_arg(j));
  }
}

/// @brief The completions of one queue (complete_many): their positions, and the complete
/// script's arguments after now and the retry flag (id, token, result per completion).
struct CompletionGroup {
  std::string queue;
  std::vector<std::size_t> which;
  Args argv;
};

/// @brief Completions grouped by queue, in order of first appearance; `queues[i]` is the queue
/// of completion i (nullopt: no such job, left out).
inline std::vector<CompletionGroup> group_completions(std::span<const Completion> completions,
                                                      const std::vector<std::optional<std::string>>& queues) {
  std::vector<CompletionGroup> groups;
  for (std::size_t i = 0; i < completions.size(); ++i) {
    if (!queues[i]) continue;
    auto g = std::find_if(groups.begin(), groups.end(), [&](const CompletionGroup& x) { return x.queue == *queues[i]; });
    if (g == groups.end()) g = groups.insert(groups.end(), CompletionGroup{*queues[i], {}, {}});
    g->which.push_back(i);
    g->argv.push_back(std::to_string(completions[i].id));
    g->argv.push_back(completions[i].lease_token);
    g->argv.push_back(result_arg(completions[i].result));
  }
  return groups;
}

/// @brief A schedule entry of <prefix>:schedules ("next_run nonce spec"); `key` names the hash
/// in error messages.
inline StoredSchedule parse_schedule(const std::string& name, std::string_view v, const std::string& key) {
  try {
    const auto sp1 = v.find(' ');
    const auto sp2 = sp1 == std::string_view::npos ? sp1 : v.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos) throw std::invalid_argument("not 'next_run nonce spec'");
    return {name, nlohmann::json::parse(v.substr(sp2 + 1)), from_epoch_ms(to_i64(v.substr(0, sp1)))};
  } catch (const std::exception& e) {
    throw RedisError(ErrorCategory::backend, "redis: schedule '" + name + "' in " + key + " is corrupted: " + e.what());
  }
}

/// @brief A worker entry of <prefix>:{~workers}:info (to_json(WorkerInfo)); `key` names the hash
/// in error messages.
inline WorkerInfo parse_worker(std::string_view id, std::string_view v, const std::string& key) {
  try {
    return worker_info_from_json(nlohmann::json::parse(v));
  } catch (const std::exception& e) {
    throw RedisError(ErrorCategory::backend, "redis: worker '" + std::string(id) + "' in " + key + " is corrupted: " + e.what());
  }
}

/// @brief Queue limits from the HMGET of Q:limits' rate_max, rate_window, group_concurrency, concurrency;
/// `key` names the hash in error messages.
inline QueueLimits parse_limits(const redisReply* const* e, const std::string& key) {
  QueueLimits l;
  try {
    if (e[0]->type == REDIS_REPLY_STRING && e[1]->type == REDIS_REPLY_STRING) {
      l.rate = RateLimit{to_i64(text(e[0])), Millis{to_i64(text(e[1]))}};
    }
    if (e[2]->type == REDIS_REPLY_STRING) l.group_concurrency = to_int(text(e[2]));
    if (e[3]->type == REDIS_REPLY_STRING) l.concurrency = to_int(text(e[3]));
  } catch (const std::exception& ex) {
    throw RedisError(ErrorCategory::backend, "redis: " + key + " is corrupted: " + ex.what());
  }
  return l;
}

/// @brief Checks the store format (`key`, <prefix>:version) on the first connection: format 1
/// (before jobq #7) had no version key and is a subset of format 2, so an absent key is set to
/// `version`; a newer format is refused (its records may not parse here). `store` names the
/// store in the message ("prefix 'p' on <url>"). With `create` false nothing is written, and a
/// store with neither the key nor a queue list (`queues_key`) is refused (not_found).
inline void check_store_format(Connection& c, const std::string& key, int version, const std::string& store,
                               bool create = true, const std::string& queues_key = {}) {
  std::vector<Args> cmds;
  if (create) cmds.push_back({"SET", key, std::to_string(version), "NX"});
  cmds.push_back({"GET", key});
  if (!create) cmds.push_back({"EXISTS", queues_key});
  const auto replies = c.pipeline(cmds);
  for (const auto& r : replies) expect_ok(r, "reading the store format (" + key + ")");
  const auto& got = replies[create ? 1 : 0];
  if (got->type == REDIS_REPLY_NIL) {
    if (replies.back()->type == REDIS_REPLY_INTEGER && replies.back()->integer == 1) return;  // format 1
    throw RedisError(ErrorCategory::not_found,
                     "redis: no jobq store under " + store + " (no " + key + " key; nothing was created)");
  }
  std::int64_t v = 0;
  try {
    v = to_i64(text(got.get()));
  } catch (const std::exception&) {
    throw RedisError(ErrorCategory::backend, "redis: " + key + " is not a jobq store format version");
  }
  if (v > version) {
    throw RedisError(ErrorCategory::backend, "redis: the store under " + store + " has format " + std::to_string(v) +
                                                 "; this jobq reads formats up to " + std::to_string(version) +
                                                 " (upgrade jobq)");
  }
  if (create && v < version) {
    // Only ever raised: a newer jobq may have raised it further meanwhile.
    expect_ok(c.command({"EVAL",
                         "if (tonumber(redis.call('GET', KEYS[1])) or 0) < tonumber(ARGV[1]) then "
                         "redis.call('SET', KEYS[1], ARGV[1]) end return 1",
                         "1", key, std::to_string(version)}),
              "raising the store format (" + key + ")");
  }
}

}  // namespace jobq::detail::redis
