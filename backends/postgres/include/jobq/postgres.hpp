#pragma once

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <nlohmann/json.hpp>

#include "jobq/backend.hpp"
#include "jobq/url.hpp"

namespace jobq {

/// @brief An error reported by PostgreSQL or libpq, keeping the server's SQLSTATE (empty when
/// the failure happened on the client side, e.g. a refused connection).
class PostgresError : public Error {
 public:
  /// @brief An error of a category with its message and SQLSTATE.
  PostgresError(ErrorCategory category, const std::string& message, std::string sqlstate = {})
      : Error(category, message), sqlstate_(std::move(sqlstate)) {}

  /// @brief The five-character SQLSTATE ("42501", "08006", ...), or empty.
  [[nodiscard]] const std::string& sqlstate() const noexcept { return sqlstate_; }

 private:
  std::string sqlstate_;
};

/// @brief Options of the PostgreSQL backend.
struct PostgresOptions {
  /// Where job times come from. Every time is computed here and sent as a statement parameter
  /// (epoch ms), never read from the server's now(): see backends/postgres/README.md, "Time".
  ClockFn clock = system_clock();
  std::string schema = "jobq";                    ///< own schema: [a-z_][a-z0-9_]*, at most 48 chars
  std::size_t pool_size = 4;                      ///< connections shared by the calling threads
  Millis poll_interval{1'000};                    ///< longest wait_for_work sleep without a wake-up
  bool listen = true;                             ///< LISTEN/NOTIFY wake-ups; false = poll only
  bool prepared_statements = true;                ///< false for PgBouncer (transaction mode) < 1.21
  std::chrono::seconds connect_timeout{5};        ///< per connection attempt
  Millis reconnect_backoff_min{50};               ///< first wait before reconnecting
  Millis reconnect_backoff_max{2'000};            ///< longest wait between reconnect attempts
  Millis reconnect_give_up{15'000};               ///< a call gives up (ConnectionError) after this
  std::string application_name = "jobq";          ///< shown in pg_stat_activity
  std::size_t max_payload_bytes = default_max_payload_bytes;  ///< larger payloads are refused
};

/// @brief Counters of connection trouble a PostgresBackend survived (for logs and tests).
struct PostgresStats {
  std::uint64_t retries = 0;           ///< calls retried on a new connection after one broke
  std::uint64_t unknown_outcomes = 0;  ///< statements whose answer was lost with the connection
  std::uint64_t claims_undone = 0;     ///< jobs of unanswered claims given back by their tokens
};

namespace detail::pg {

struct ResultDeleter {
  void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

struct ConnDeleter {
  void operator()(PGconn* c) const noexcept { PQfinish(c); }
};
using ConnPtr = std::unique_ptr<PGconn, ConnDeleter>;

/// Thrown inside the backend when a connection broke; `unknown` = the statement may have been
/// applied (it was sent and no answer came back). Never escapes the backend.
struct Lost {
  bool unknown = false;
  std::string message;
};

/// One statement parameter in text form; nullopt is SQL NULL.
using Param = std::optional<std::string>;
using Params = std::vector<Param>;

inline bool is_transient_sqlstate(std::string_view s) {
  return s.starts_with("08") || s == "57P01" || s == "57P02" || s == "57P03" || s == "53300";
}

inline ErrorCategory category_for(std::string_view s) {
  if (is_transient_sqlstate(s)) return ErrorCategory::connection;
  if (s == "23505" || s == "40001" || s == "40P01" || s == "55P03") return ErrorCategory::conflict;
  if (s.starts_with("22") || s.starts_with("23") || s.starts_with("28") || s == "42602") {
    return ErrorCategory::invalid_argument;
  }
  if (s == "3D000" || s == "3F000") return ErrorCategory::not_found;
  return ErrorCategory::backend;
}

inline std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

/// libpq's message with the "LOCATION:" lines of verbose mode and the SQLSTATE prefix removed;
/// the SQLSTATE found (connection-time errors have no PGresult to read it from) goes to `state`.
inline std::string clean_message(std::string_view raw, std::string* state) {
  std::string out;
  std::size_t pos = 0;
  while (pos < raw.size()) {
    auto end = raw.find('\n', pos);
    if (end == std::string_view::npos) end = raw.size();
    std::string line(raw.substr(pos, end - pos));
    pos = end + 1;
    if (line.starts_with("LOCATION:")) continue;
    for (const char* sev : {"FATAL:  ", "ERROR:  "}) {
      const auto at = line.find(sev);
      const auto code = at == std::string::npos ? at : at + std::strlen(sev);
      if (code != std::string::npos && line.size() > code + 7 && line[code + 5] == ':' &&
          line[code + 6] == ' ') {
        const auto candidate = line.substr(code, 5);
        if (std::all_of(candidate.begin(), candidate.end(),
                        [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z'); })) {
          if (state != nullptr && state->empty()) *state = candidate;
          line.erase(code, 7);
        }
      }
    }
    if (!out.empty()) out += ' ';
    out += line;
  }
  return trim(out);
}

/// Why libpq refused to parse a connection string, in words of our own: libpq's messages
/// quote the string or a piece of it, and that piece may be the password.
inline std::string_view parse_failure_reason(std::string_view libpq_message) {
  constexpr std::pair<std::string_view, std::string_view> reasons[] = {
      {"IPv6 host address", "a malformed [IPv6] host"},
      {"unexpected character", "an unexpected character after the host"},
      {"invalid percent-encoded token", "a malformed %-escape"},
      {"forbidden value %00", "a %00 escape"},
      {"query parameter", "a malformed query parameter"},
      {"invalid connection option", "an unknown parameter"},
      {"missing \"=\"", "a word without '=' (quote values that hold spaces: key='a b')"},
      {"unterminated quoted string", "an unterminated quoted value"},
  };
  for (const auto& [found, reason] : reasons) {
    if (libpq_message.find(found) != std::string_view::npos) return reason;
  }
  return "libpq cannot parse it";
}

/// user@host:port/dbname of a connection string (libpq URI or keyword/value pairs), never its
/// password; also the check that it parses (InvalidArgument, the string masked, otherwise).
/// A URI that libpq and jobq::mask_url would split differently is refused: libpq ends the
/// userinfo at the first '@' or '/', so an unencoded '/' or '@' in a password puts the rest
/// of it into the host, port or database name, which messages show.
inline std::string describe_conninfo(const std::string& conninfo) {
  const auto masked = jobq::mask_url(conninfo);
  const std::string_view s(conninfo);
  for (std::string_view scheme : {"postgresql://", "postgres://"}) {
    if (!s.starts_with(scheme)) continue;
    const auto at = s.rfind('@');
    const auto colon = s.find(':', scheme.size());
    if (at != std::string_view::npos && colon < at && s.find_first_of("@/", scheme.size()) != at) {
      throw InvalidArgument("postgres: invalid connection string '" + masked +
                            "': an unencoded '/' or '@' in the user name or password, or an '@' after "
                            "the host; write them as %2F and %40");
    }
    // libpq would take a password= before the query for part of the host or database name.
    const auto query = s.find('?', at == std::string_view::npos ? scheme.size() : at + 1);
    for (const auto sp : url::password_spans(s)) {
      if (sp.end != at && (query == std::string_view::npos || sp.begin < query)) {
        throw InvalidArgument("postgres: invalid connection string '" + masked +
                              "': a password parameter outside the query string (after '?')");
      }
    }
  }
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
  if (opts == nullptr) {
    const std::string reason(err != nullptr ? parse_failure_reason(err) : "out of memory");
    if (err != nullptr) PQfreemem(err);
    throw InvalidArgument("postgres: invalid connection string '" + masked + "': " + reason);
  }
  std::unordered_map<std::string, std::string> v;
  for (auto* o = opts; o->keyword != nullptr; ++o) {
    if (o->val != nullptr) v[o->keyword] = o->val;
  }
  PQconninfoFree(opts);
  std::string out = "postgresql://";
  if (v.contains("user")) out += v["user"] + "@";
  out += v.contains("host") ? v["host"] : (v.contains("hostaddr") ? v["hostaddr"] : "localhost");
  if (v.contains("port")) out += ":" + v["port"];
  if (v.contains("dbname")) out += "/" + jobq::mask_url(v["dbname"]);  // dbname=postgresql://u:pw@h/x
  return url::scrub(std::move(out), conninfo);
}

/// A PostgreSQL array literal of text elements ({"a","b\"c",NULL}).
inline std::string text_array(const std::vector<Param>& items) {
  std::string out = "{";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ',';
    if (!items[i]) {
      out += "NULL";
      continue;
    }
    out += '"';
    for (char c : *items[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  out += '}';
  return out;
}

/// An integer array literal ({1,2,3}).
template <class Int>
std::string int_array(const std::vector<Int>& items) {
  std::string out = "{";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ',';
    out += std::to_string(items[i]);
  }
  out += '}';
  return out;
}


/// Text safe to store in a text column: valid UTF-8 (bad bytes replaced) without NUL bytes.
/// Used for error and progress messages, which come from arbitrary exceptions.
inline std::string safe_text(const std::string& s) {
  std::string out =
      nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  out = nlohmann::json::parse(out).get<std::string>();
  std::erase(out, '\0');
  return out;
}

/// Refuses text that PostgreSQL cannot hold (NUL bytes); libpq would silently cut it short.
inline void require_no_nul(const std::string& s, std::string_view what) {
  if (s.find('\0') != std::string::npos) throw InvalidArgument(std::string(what) + " contains a NUL byte");
}

inline std::int64_t to_i64(const char* s) {
  std::int64_t v = 0;
  std::from_chars(s, s + std::strlen(s), v);
  return v;
}

inline std::string quote_ident(std::string_view name) {
  std::string out;  // not "\"" + ... + "\"": GCC 12 at -O3 reports a bogus -Wrestrict for that
  out.reserve(name.size() + 2);
  out += '"';
  out += name;
  out += '"';
  return out;
}

}  // namespace detail::pg

/// @brief PostgreSQL backend: jobs in their own schema, claimed with FOR UPDATE SKIP LOCKED,
/// woken with LISTEN/NOTIFY; any number of processes on any number of hosts.
///
/// Thread-safe: one object is shared by all threads of a process (a small connection pool).
/// Not fork-safe: a child process makes its own object.
class PostgresBackend {
 public:
  /// @brief The schema version this library writes (numbered migrations 1..N).
  static constexpr int latest_schema_version = 3;

  /// @brief Connects (libpq connection string or URL), then creates or upgrades the schema.
  /// Throws InvalidArgument (bad options or connection string), PostgresError (refused,
  /// unreachable, rejected login, schema owned by someone else, newer schema).
  explicit PostgresBackend(std::string conninfo, PostgresOptions options = {})
      : conninfo_(std::move(conninfo)), opt_(std::move(options)) {
    validate_options();
    target_ = detail::pg::describe_conninfo(conninfo_);
    schema_q_ = detail::pg::quote_ident(opt_.schema);
    channel_ = "jobq:" + opt_.schema;
    events_channel_ = channel_ + ":events";
    build_statements();
    migrate();
    open_wake_pipe();
  }

  PostgresBackend(const PostgresBackend&) = delete;
  PostgresBackend& operator=(const PostgresBackend&) = delete;

  /// @brief Stops the notice listener and closes every connection; no call may be running.
  ~PostgresBackend() {
    stop_listener();
    for (int fd : wake_pipe_) {
      if (fd >= 0) ::close(fd);
    }
  }

  /// @brief The backend's clock.
  [[nodiscard]] TimePoint now() const { return opt_.clock(); }

  /// @brief The schema this backend uses.
  [[nodiscard]] const std::string& schema() const noexcept { return opt_.schema; }

  /// @brief The server address this backend talks to, without the password.
  [[nodiscard]] const std::string& target() const noexcept { return target_; }

  /// @brief Connection trouble survived so far.
  [[nodiscard]] PostgresStats stats() const noexcept {
    return {retries_.load(), unknown_outcomes_.load(), claims_undone_.load()};
  }

  /// @brief The schema's applied migration version (reads the server).
  int schema_version() {
    return with_retry("read schema version", Replay::safe, [&](Conn& c, bool) {
      auto r = exec_sql(c, "SELECT coalesce(max(version), 0) FROM " + schema_q_ + ".schema_migrations", {});
      return static_cast<int>(detail::pg::to_i64(PQgetvalue(r.get(), 0, 0)));
    });
  }

  // ------------------------------------------------------------------------------------------
  // Enqueue

  /// @brief Stores a job (or returns the holder of its unique key).
  ///
  /// A connection lost after the statement was sent leaves its outcome unknown: that is a
  /// ConnectionError saying so, never a silent second insert.
  EnqueueResult enqueue(const NewJob& job) {
    const auto payload = checked_payload(job);
    auto r = with_retry("enqueue", Replay::never, [&](Conn& c, bool) {
      return insert_one(c, job, payload, now());
    });
    wake_local();
    return r;
  }

  /// @brief Stores many jobs in one transaction, all or nothing.
  std::vector<EnqueueResult> enqueue_many(std::span<const NewJob> jobs) {
    const auto payloads = checked_payloads(jobs);
    if (jobs.empty()) return {};
    auto out = with_retry("enqueue_many", Replay::never, [&](Conn& c, bool) {
      return in_transaction(c, [&] { return insert_many(c, jobs, payloads, now()); });
    });
    wake_local();
    return out;
  }

  /// @brief Transactional enqueue on the caller's own connection: inside the caller's open
  /// transaction the job exists iff that transaction commits. On an idle connection it runs
  /// in a transaction of its own. Never retried (the connection is the caller's).
  EnqueueResult enqueue(PGconn* tx, const NewJob& job) {
    const auto payload = checked_payload(job);
    CallerConn c{check_caller_conn(tx)};
    return insert_one(c, job, payload, now());
  }

  /// @brief enqueue_many on the caller's own connection (see enqueue(PGconn*, job)).
  std::vector<EnqueueResult> enqueue_many(PGconn* tx, std::span<const NewJob> jobs) {
    const auto payloads = checked_payloads(jobs);
    CallerConn c{check_caller_conn(tx)};
    if (jobs.empty()) return {};
    if (PQtransactionStatus(tx) == PQTRANS_IDLE) {
      return in_transaction(c, [&] { return insert_many(c, jobs, payloads, now()); });
    }
    return insert_many(c, jobs, payloads, now());
  }

  // ------------------------------------------------------------------------------------------
  // Claim and outcomes

  /// @brief Leases up to req.limit ready jobs, best first across the queues, in one statement.
  std::vector<JobRecord> claim(const ClaimRequest& req) {
    const auto queues = claim_queues(req);
    if (queues.empty() || req.limit == 0) return {};
    const auto limit = std::min<std::size_t>(req.limit, 10'000);
    std::vector<detail::pg::Param> qp(queues.begin(), queues.end());
    const auto queues_lit = detail::pg::text_array(qp);
    return with_retry("claim", Replay::safe, [&](Conn& c, bool) {
      flush_pending_releases(c);
      // Tokens are made here, not in SQL, so that a claim whose answer was lost can be undone
      // by token (release_tokens) instead of leaving its jobs active until the lease runs out.
      std::vector<detail::pg::Param> tokens;
      tokens.reserve(limit);
      for (std::size_t i = 0; i < limit; ++i) tokens.emplace_back(detail::new_lease_token());
      const auto t = now();
      detail::pg::Result r;
      try {
        r = exec(c, S::claim,
                 {queues_lit, ms(t), std::to_string(limit), ms(t + req.lease),
                  detail::pg::text_array(tokens)});
      } catch (const detail::pg::Lost& lost) {
        if (lost.unknown) remember_pending_release(tokens);
        throw;
      }
      auto jobs = rows_to_jobs(r.get());
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
    outcome_retry("complete", tokens, [&](Conn& c, bool uncertain) {
      auto r = exec(c, S::complete_many, {ids_lit, tokens_lit, results_lit, ms(now())});
      std::vector<bool> done(ids.size(), false);
      for (int row = 0; row < PQntuples(r.get()); ++row) {
        done[static_cast<std::size_t>(detail::pg::to_i64(PQgetvalue(r.get(), row, 0)) - 1)] = true;
      }
      if (uncertain) {
        auto again = exec(c, S::done_check, {ids_lit, tokens_lit});
        for (int row = 0; row < PQntuples(again.get()); ++row) {
          const auto ord = static_cast<std::size_t>(detail::pg::to_i64(PQgetvalue(again.get(), row, 0)) - 1);
          if (std::string_view(PQgetvalue(again.get(), row, 1)) == "completed") done[ord] = true;
        }
      }
      for (std::size_t k = 0; k < done.size(); ++k) out[index[k]] = done[k];
      return 0;
    });
    return out;
  }

  /// @brief Records a failed attempt: retry at f.retry_at, or dead.
  FailOutcome fail(const Failure& f) {
    if (f.lease_token.empty()) return FailOutcome::rejected;
    const auto token = strip_nul(f.lease_token);
    const auto message = detail::pg::safe_text(f.error);
    const auto outcome = outcome_retry("fail", {token}, [&](Conn& c, bool uncertain) {
      const auto t = now();
      auto r = exec(c, S::fail,
                    {std::to_string(f.id), token, message,
                     f.retry_at ? detail::pg::Param(ms(*f.retry_at)) : std::nullopt, ms(t)});
      if (PQntuples(r.get()) == 1) return outcome_of(PQgetvalue(r.get(), 0, 0));
      if (!uncertain) return FailOutcome::rejected;
      auto again = exec(c, S::done_check, {"{" + std::to_string(f.id) + "}",
                                           detail::pg::text_array({token})});
      if (PQntuples(again.get()) == 0) return FailOutcome::rejected;
      return outcome_of(PQgetvalue(again.get(), 0, 1));
    });
    if (outcome == FailOutcome::retried) wake_local();
    return outcome;
  }

  /// @brief Heartbeat: pushes the lease deadline to now + lease.
  bool extend_lease(JobId id, const std::string& token, Millis lease) {
    check_duration(lease, "lease");
    if (token.empty()) return false;
    return with_retry("extend_lease", Replay::safe, [&](Conn& c, bool) {
      return PQntuples(exec(c, S::extend, {std::to_string(id), strip_nul(token), ms(now() + lease)}).get()) == 1;
    });
  }

  /// @brief Gives a leased job back without counting the attempt.
  bool release(JobId id, const std::string& token) {
    if (token.empty()) return false;
    const auto tok = strip_nul(token);
    const bool ok = outcome_retry("release", {tok}, [&](Conn& c, bool uncertain) {
      if (PQntuples(exec(c, S::release, {std::to_string(id), tok, ms(now())}).get()) == 1) return true;
      if (!uncertain) return false;
      auto again = exec(c, S::done_check, {"{" + std::to_string(id) + "}", detail::pg::text_array({tok})});
      return PQntuples(again.get()) == 1;
    });
    if (ok) wake_local();
    return ok;
  }

  /// @brief Records progress (clamped to 0..100) of an active job.
  bool set_progress(JobId id, const std::string& token, int percent, const std::string& message) {
    if (token.empty()) return false;
    const auto msg = detail::pg::safe_text(message);
    return with_retry("set_progress", Replay::safe, [&](Conn& c, bool) {
      return PQntuples(exec(c, S::progress, {std::to_string(id), strip_nul(token),
                                             std::to_string(std::clamp(percent, 0, 100)), msg})
                           .get()) == 1;
    });
  }

  // ------------------------------------------------------------------------------------------
  // Maintenance

  /// @brief Requeues (or kills, on the last attempt) every job whose lease has expired. Runs
  /// on one node at a time: returns {} at once when another node holds the maintenance lock.
  Recovered recover_expired() {
    auto rec = with_retry("recover_expired", Replay::safe, [&](Conn& c, bool) {
      flush_pending_releases(c);
      auto r = exec(c, S::recover, {ms(now()), "jobq:recover:" + opt_.schema});
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
    if (rec.retried > 0) wake_local();
    return rec;
  }

  /// @brief Deletes finished jobs older than the retention of their state (one node at a
  /// time, like recover_expired: 0 when another node is pruning).
  std::size_t prune(const std::string& queue, const Retention& retention) {
    validate_queue_name(queue);
    auto keep = [](const std::optional<Millis>& m) {
      return m ? detail::pg::Param(std::to_string(m->count())) : std::nullopt;
    };
    const auto t = now();
    std::size_t total = 0;
    for (;;) {
      const auto n = with_retry("prune", Replay::safe, [&](Conn& c, bool) {
        auto r = exec(c, S::prune, {queue, ms(t), keep(retention.completed), keep(retention.dead),
                                    keep(retention.cancelled), "jobq:prune:" + opt_.schema});
        return static_cast<std::size_t>(detail::pg::to_i64(PQcmdTuples(r.get())));
      });
      total += n;
      if (n < 10'000) return total;
    }
  }

  // ------------------------------------------------------------------------------------------
  // Inspection and admin

  /// @brief The job, if it exists.
  std::optional<JobRecord> get(JobId id) {
    return with_retry("get", Replay::safe, [&](Conn& c, bool) -> std::optional<JobRecord> {
      auto r = exec(c, S::get, {std::to_string(id)});
      if (PQntuples(r.get()) == 0) return std::nullopt;
      return row_to_job(r.get(), 0);
    });
  }

  /// @brief Cancels a queued job.
  bool cancel(JobId id) {
    return with_retry("cancel", Replay::never, [&](Conn& c, bool) {
      return PQntuples(exec(c, S::cancel, {std::to_string(id), ms(now())}).get()) == 1;
    });
  }

  /// @brief Puts a dead job back in its queue with a fresh attempt budget.
  bool redrive(JobId id) {
    const bool ok = with_retry("redrive", Replay::never, [&](Conn& c, bool) {
      return PQntuples(exec(c, S::redrive, {std::to_string(id), ms(now())}).get()) == 1;
    });
    if (ok) wake_local();
    return ok;
  }

  /// @brief Stops claims from a queue (all processes).
  void pause(const std::string& queue) {
    validate_queue_name(queue);
    with_retry("pause", Replay::safe, [&](Conn& c, bool) { return exec(c, S::pause, {queue}) != nullptr; });
  }

  /// @brief Restores claims from a queue and wakes its waiters.
  void resume(const std::string& queue) {
    validate_queue_name(queue);
    with_retry("resume", Replay::safe,
               [&](Conn& c, bool) { return exec(c, S::resume, {queue, channel_}) != nullptr; });
    wake_local();
  }

  /// @brief Whether a queue is paused.
  bool is_paused(const std::string& queue) {
    validate_queue_name(queue);
    return with_retry("is_paused", Replay::safe, [&](Conn& c, bool) {
      return PQntuples(exec(c, S::is_paused, {queue}).get()) == 1;
    });
  }

  /// @brief Every queue that holds jobs or is paused, sorted by name.
  std::vector<std::string> queues() {
    return with_retry("queues", Replay::safe, [&](Conn& c, bool) {
      auto r = exec(c, S::queues, {});
      std::vector<std::string> out;
      for (int row = 0; row < PQntuples(r.get()); ++row) out.emplace_back(PQgetvalue(r.get(), row, 0));
      return out;
    });
  }

  /// @brief Jobs per state in a queue (exact).
  Counts counts(const std::string& queue) {
    validate_queue_name(queue);
    return with_retry("counts", Replay::safe, [&](Conn& c, bool) {
      auto r = exec(c, S::counts, {queue});
      Counts out;
      for (int row = 0; row < PQntuples(r.get()); ++row) {
        const auto n = detail::pg::to_i64(PQgetvalue(r.get(), row, 1));
        switch (job_state_from_string(PQgetvalue(r.get(), row, 0))) {
          case JobState::queued: out.queued = n; break;
          case JobState::active: out.active = n; break;
          case JobState::completed: out.completed = n; break;
          case JobState::dead: out.dead = n; break;
          case JobState::cancelled: out.cancelled = n; break;
        }
      }
      return out;
    });
  }

  /// @brief A page of a queue's jobs in one state, by id.
  std::vector<JobRecord> list(const std::string& queue, JobState state, Page page) {
    validate_queue_name(queue);
    return with_retry("list", Replay::safe, [&](Conn& c, bool) {
      auto r = exec(c, S::list, {queue, std::string(to_string(state)), std::to_string(page.limit),
                                 std::to_string(page.offset)});
      return rows_to_jobs(r.get());
    });
  }

  // ------------------------------------------------------------------------------------------
  // Limits, schedules, notices

  /// @brief Sets the limits every claim of the queue honours, in every process (default: none).
  void set_queue_limits(const std::string& queue, const QueueLimits& limits) {
    validate_queue_name(queue);
    validate(limits);
    with_retry("set_queue_limits", Replay::safe, [&](Conn& c, bool) {
      if (limits == QueueLimits{}) return exec(c, S::clear_limits, {queue, channel_}) != nullptr;
      const auto rate = limits.rate;
      return exec(c, S::set_limits,
                  {queue, rate ? detail::pg::Param(std::to_string(rate->max)) : std::nullopt,
                   rate ? detail::pg::Param(std::to_string(rate->window.count())) : std::nullopt,
                   std::to_string(limits.group_concurrency), channel_}) != nullptr;
    });
    wake_local();
  }

  /// @brief The limits of a queue (none by default).
  QueueLimits queue_limits(const std::string& queue) {
    validate_queue_name(queue);
    return with_retry("queue_limits", Replay::safe, [&](Conn& c, bool) {
      auto r = exec(c, S::get_limits, {queue});
      QueueLimits l;
      if (PQntuples(r.get()) == 0) return l;
      if (!PQgetisnull(r.get(), 0, 0)) {
        l.rate = RateLimit{detail::pg::to_i64(PQgetvalue(r.get(), 0, 0)),
                           Millis{detail::pg::to_i64(PQgetvalue(r.get(), 0, 1))}};
      }
      l.group_concurrency = static_cast<int>(detail::pg::to_i64(PQgetvalue(r.get(), 0, 2)));
      return l;
    });
  }

  /// @brief Inserts or replaces the schedule named s.name.
  void put_schedule(const StoredSchedule& sched) {
    validate_schedule_name(sched.name);
    const auto spec = dump_for_storage(sched.spec, "schedule spec");
    detail::pg::require_no_nul(spec, "schedule spec");
    with_retry("put_schedule", Replay::safe, [&](Conn& c, bool) {
      return exec(c, S::put_schedule, {sched.name, spec, ms(sched.next_run)}) != nullptr;
    });
  }

  /// @brief Removes a schedule; false if there was none.
  bool remove_schedule(const std::string& name) {
    return with_retry("remove_schedule", Replay::never, [&](Conn& c, bool) {
      return PQntuples(exec(c, S::remove_schedule, {strip_nul(name)}).get()) == 1;
    });
  }

  /// @brief Every schedule, by name.
  std::vector<StoredSchedule> schedules() {
    return with_retry("schedules", Replay::safe, [&](Conn& c, bool) {
      auto r = exec(c, S::list_schedules, {});
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
    const bool fired = with_retry("fire_schedule", Replay::never, [&](Conn& c, bool) {
      return in_transaction(c, [&] {
        auto r = exec(c, S::fire_schedule, {strip_nul(name), ms(expected), ms(next)});
        if (PQntuples(r.get()) == 0) return false;
        if (job) insert_one(c, *job, *payload, now());
        return true;
      });
    });
    if (fired && job) wake_local();
    return fired;
  }

  /// @brief Calls fn for each notice of `queues` (all when empty) made by any process on this
  /// schema, until the Subscription ends. Returns once the listener is LISTENing, so changes
  /// committed after it returns are delivered; throws ConnectionError if it cannot listen.
  Subscription subscribe(std::span<const std::string> queues, NoticeFn fn) {
    for (const auto& q : queues) validate_queue_name(q);
    if (!fn) throw InvalidArgument("subscribe: the callback is empty");
    start_listener();
    return hub_.subscribe(queues, std::move(fn));
  }

  // ------------------------------------------------------------------------------------------
  // Waiting

  /// @brief Blocks until work may be ready in one of the queues (a NOTIFY from any process, an
  /// enqueue in this one), min(timeout, poll_interval) passes, or stop is requested.
  ///
  /// One thread at a time owns the LISTEN connection; other callers, and poll-only mode, sleep
  /// on an in-process condition variable. It returns at once when a job is already ready.
  void wait_for_work(std::span<const std::string> queues, Millis timeout, std::stop_token stop) {
    const auto deadline = std::chrono::steady_clock::now() + std::min(timeout, opt_.poll_interval);
    const auto generation = generation_.load();
    if (opt_.listen) {
      std::unique_lock owner(listen_mutex_, std::try_to_lock);
      if (owner.owns_lock()) {
        listen_wait(queues, deadline, stop, generation);
        return;
      }
    }
    if (ready_now(queues)) return;
    std::unique_lock lock(wake_mutex_);
    while (!stop.stop_requested() && generation_.load() == generation) {
      const auto left = deadline - std::chrono::steady_clock::now();
      if (left <= std::chrono::steady_clock::duration::zero()) return;
      wake_cv_.wait_for(lock, std::min<std::chrono::steady_clock::duration>(left, Millis{100}));
    }
  }

 private:
  // ------------------------------------------------------------------------------------------
  // Connections

  struct Conn {
    detail::pg::ConnPtr pg;
    std::vector<bool> prepared;
  };

  // The caller's connection for transactional enqueue: never prepared on, never retried.
  struct CallerConn {
    PGconn* pg;
  };

  enum class Replay {
    safe,   // a retry after an unknown outcome is harmless (reads, idempotent or fenced writes)
    never,  // an unknown outcome is reported as a ConnectionError instead of retried
  };

  enum class S : std::size_t {
    enqueue_one,
    enqueue_keyed,
    enqueue_batch,
    claim,
    complete_many,
    done_check,
    fail,
    extend,
    release,
    release_tokens,
    progress,
    recover,
    get,
    cancel,
    redrive,
    pause,
    resume,
    is_paused,
    counts,
    queues,
    prune,
    list,
    ready,
    set_limits,
    clear_limits,
    get_limits,
    put_schedule,
    remove_schedule,
    list_schedules,
    fire_schedule,
    count_,
  };

  static std::string ms(TimePoint t) { return std::to_string(to_epoch_ms(t)); }

  static std::string strip_nul(std::string s) {
    std::erase(s, '\0');
    return s;
  }

  void validate_options() {
    const auto& s = opt_.schema;
    const bool ok = !s.empty() && s.size() <= 48 && !(s[0] >= '0' && s[0] <= '9') &&
                    std::all_of(s.begin(), s.end(), [](char c) {
                      return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
                    });
    if (!ok) {
      throw InvalidArgument("postgres: schema name '" + s +
                            "' is invalid: use 1..48 characters of [a-z0-9_], not starting with a digit");
    }
    if (opt_.pool_size < 1) throw InvalidArgument("postgres: pool_size must be at least 1");
    if (opt_.poll_interval <= Millis{0}) throw InvalidArgument("postgres: poll_interval must be positive");
    if (!opt_.clock) throw InvalidArgument("postgres: clock is empty");
    if (opt_.reconnect_backoff_min <= Millis{0} || opt_.reconnect_backoff_max < opt_.reconnect_backoff_min) {
      throw InvalidArgument("postgres: reconnect backoff must be positive with min <= max");
    }
  }

  /// A fresh connection. Connection-time errors carry their SQLSTATE through verbose messages
  /// (there is no PGresult to ask); transient ones become Lost, the rest PostgresError.
  detail::pg::ConnPtr connect() {
    const auto timeout = std::to_string(std::max<long long>(opt_.connect_timeout.count(), 1));
    // Ours first, then the caller's string (expand_dbname), which overrides them; then the
    // encoding, which nothing may override because the backend sends UTF-8.
    const char* keys[] = {"connect_timeout", "application_name", "keepalives", "keepalives_idle",
                          "keepalives_interval", "keepalives_count", "dbname", "client_encoding",
                          nullptr};
    const char* vals[] = {timeout.c_str(), opt_.application_name.c_str(), "1", "30", "10", "3",
                          conninfo_.c_str(), "UTF8", nullptr};
    detail::pg::ConnPtr c{PQconnectStartParams(keys, vals, 1)};
    if (!c) throw ConnectionError("postgres: out of memory creating a connection to " + target_);
    PQsetErrorVerbosity(c.get(), PQERRORS_VERBOSE);
    const auto deadline = std::chrono::steady_clock::now() + opt_.connect_timeout + std::chrono::seconds(1);
    auto st = PGRES_POLLING_WRITING;
    while (PQstatus(c.get()) != CONNECTION_BAD && st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
      const auto left = std::chrono::duration_cast<Millis>(deadline - std::chrono::steady_clock::now());
      if (left <= Millis{0}) {
        throw detail::pg::Lost{false, "timed out after " + std::to_string(opt_.connect_timeout.count()) +
                                          " s connecting to " + target_};
      }
      pollfd p{PQsocket(c.get()), static_cast<short>(st == PGRES_POLLING_READING ? POLLIN : POLLOUT), 0};
      ::poll(&p, 1, static_cast<int>(std::min<Millis::rep>(left.count(), 1000)));
      st = PQconnectPoll(c.get());
    }
    if (PQstatus(c.get()) != CONNECTION_OK) {
      std::string state;
      // libpq quotes what it was given (a host name, a port, a database name): never the
      // password once describe_conninfo accepted the string, scrubbed all the same.
      auto msg = detail::url::scrub(detail::pg::clean_message(PQerrorMessage(c.get()), &state), conninfo_);
      if (state.empty() || detail::pg::is_transient_sqlstate(state)) {
        throw detail::pg::Lost{false, "cannot connect to " + target_ + ": " + msg};
      }
      throw PostgresError(detail::pg::category_for(state),
                          "postgres: cannot connect to " + target_ + ": " + msg + " [SQLSTATE " + state + "]",
                          state);
    }
    PQsetErrorVerbosity(c.get(), PQERRORS_DEFAULT);
    // Server NOTICEs ("schema already exists", ...) are not the application's business.
    PQsetNoticeProcessor(c.get(), [](void*, const char*) {}, nullptr);
    return c;
  }

  // A leased pool connection; returned on destruction unless it broke.
  class Lease {
   public:
    Lease(PostgresBackend& b, std::unique_ptr<Conn> c) : b_(&b), c_(std::move(c)) {}
    Lease(Lease&& o) noexcept : b_(std::exchange(o.b_, nullptr)), c_(std::move(o.c_)) {}
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (b_ != nullptr) b_->give_back(std::move(c_));
    }
    Conn& operator*() { return *c_; }

   private:
    PostgresBackend* b_;
    std::unique_ptr<Conn> c_;
  };

  static bool healthy_idle(PGconn* pg) {
    if (PQstatus(pg) != CONNECTION_OK || PQtransactionStatus(pg) != PQTRANS_IDLE) return false;
    // A server that restarted closed our socket; reading it now finds that out before a
    // statement is sent, so the statement's outcome is never in doubt for this reason.
    pollfd p{PQsocket(pg), POLLIN, 0};
    if (::poll(&p, 1, 0) > 0) {
      if (PQconsumeInput(pg) == 0 || PQstatus(pg) != CONNECTION_OK) return false;
      while (PGnotify* n = PQnotifies(pg)) PQfreemem(n);
    }
    return true;
  }

  Lease acquire() {
    std::unique_ptr<Conn> conn;
    {
      std::unique_lock lock(pool_mutex_);
      const bool got = pool_cv_.wait_for(lock, opt_.reconnect_give_up, [&] {
        return !idle_.empty() || open_ < opt_.pool_size;
      });
      if (!got) throw ConnectionError("postgres: no pooled connection became free within " +
                                      std::to_string(opt_.reconnect_give_up.count()) + " ms");
      if (!idle_.empty()) {
        conn = std::move(idle_.back());
        idle_.pop_back();
      } else {
        ++open_;
      }
    }
    if (conn && healthy_idle(conn->pg.get())) return Lease(*this, std::move(conn));
    conn.reset();
    try {
      auto fresh = std::make_unique<Conn>();
      fresh->pg = connect();
      fresh->prepared.assign(static_cast<std::size_t>(S::count_), false);
      if (opt_.prepared_statements && PQserverVersion(fresh->pg.get()) >= 120000) {
        // The statements are planned once per connection, not per call: with custom plans
        // (the default for the first executions, and for good when the generic plan's cost
        // estimate is higher, as for claim) planning cost more server time than executing.
        // Every statement is a keyed lookup whose plan does not depend on its values.
        exec_sql(*fresh, "SET plan_cache_mode = force_generic_plan", {});
      }
      return Lease(*this, std::move(fresh));
    } catch (...) {
      give_back(nullptr);
      throw;
    }
  }

  void give_back(std::unique_ptr<Conn> c) {
    {
      std::lock_guard lock(pool_mutex_);
      if (c && PQstatus(c->pg.get()) == CONNECTION_OK && PQtransactionStatus(c->pg.get()) == PQTRANS_IDLE) {
        idle_.push_back(std::move(c));
      } else {
        --open_;
      }
    }
    c.reset();
    pool_cv_.notify_one();
  }

  // ------------------------------------------------------------------------------------------
  // Executing statements

  /// Turns a failed result into Lost (connection broke) or a thrown PostgresError.
  [[noreturn]] void raise(PGconn* pg, const PGresult* r, std::string_view what) {
    std::string state;
    if (r != nullptr) {
      const char* s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
      if (s != nullptr) state = s;
    }
    std::string msg = detail::pg::trim(r != nullptr && PQresultErrorMessage(r)[0] != '\0'
                                           ? PQresultErrorMessage(r)
                                           : PQerrorMessage(pg));
    msg = detail::pg::clean_message(msg, nullptr);
    if (PQstatus(pg) != CONNECTION_OK || detail::pg::is_transient_sqlstate(state)) {
      // An error the server sent (it has a SQLSTATE) means the statement was not applied; a
      // connection that died without an answer leaves the outcome unknown.
      throw detail::pg::Lost{state.empty() && PQstatus(pg) != CONNECTION_OK, msg};
    }
    if (state.empty()) state = "XX000";
    throw PostgresError(detail::pg::category_for(state),
                        "postgres: " + std::string(what) + " failed: " + msg + " [SQLSTATE " + state + "]",
                        state);
  }

  static std::vector<const char*> c_params(const detail::pg::Params& params) {
    std::vector<const char*> v;
    v.reserve(params.size());
    for (const auto& p : params) v.push_back(p ? p->c_str() : nullptr);
    return v;
  }

  detail::pg::Result exec(Conn& c, S s, const detail::pg::Params& params) {
    const auto i = static_cast<std::size_t>(s);
    auto values = c_params(params);
    const int n = static_cast<int>(params.size());
    if (!opt_.prepared_statements) {
      return check(c.pg.get(),
                   PQexecParams(c.pg.get(), sql_[i].c_str(), n, nullptr, values.data(), nullptr, nullptr, 0),
                   names_[i]);
    }
    if (!c.prepared[i]) {
      detail::pg::Result p{PQprepare(c.pg.get(), names_[i].c_str(), sql_[i].c_str(), n, nullptr)};
      if (!p || PQresultStatus(p.get()) != PGRES_COMMAND_OK) {
        try {
          raise(c.pg.get(), p.get(), "prepare " + names_[i]);
        } catch (detail::pg::Lost& lost) {
          lost.unknown = false;  // a PREPARE changes no data
          throw;
        }
      }
      c.prepared[i] = true;
    }
    return check(c.pg.get(),
                 PQexecPrepared(c.pg.get(), names_[i].c_str(), n, values.data(), nullptr, nullptr, 0),
                 names_[i]);
  }

  detail::pg::Result exec(CallerConn& c, S s, const detail::pg::Params& params) {
    const auto i = static_cast<std::size_t>(s);
    auto values = c_params(params);
    return check(c.pg,
                 PQexecParams(c.pg, sql_[i].c_str(), static_cast<int>(params.size()), nullptr,
                              values.data(), nullptr, nullptr, 0),
                 names_[i]);
  }

  template <class C>
  detail::pg::Result exec_sql(C& c, const std::string& sql, const detail::pg::Params& params) {
    PGconn* pg = raw(c);
    auto values = c_params(params);
    return check(pg,
                 PQexecParams(pg, sql.c_str(), static_cast<int>(params.size()), nullptr, values.data(),
                              nullptr, nullptr, 0),
                 "statement");
  }

  static PGconn* raw(Conn& c) { return c.pg.get(); }
  static PGconn* raw(CallerConn& c) { return c.pg; }

  detail::pg::Result check(PGconn* pg, PGresult* res, std::string_view what) {
    detail::pg::Result r{res};
    const auto st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) raise(pg, r.get(), what);
    return r;
  }

  /// Runs fn(connection, uncertain) on a pooled connection; a broken connection is replaced
  /// and fn run again with backoff until reconnect_give_up. `uncertain` tells fn that an
  /// earlier try may have been applied (only with Replay::safe; Replay::never throws instead).
  template <class F>
  std::invoke_result_t<F&, Conn&, bool> with_retry(std::string_view what, Replay replay, F&& fn) {
    const auto give_up = std::chrono::steady_clock::now() + opt_.reconnect_give_up;
    auto delay = opt_.reconnect_backoff_min;
    bool uncertain = false;
    for (;;) {
      try {
        auto lease = acquire();
        return fn(*lease, uncertain);
      } catch (const detail::pg::Lost& lost) {
        if (lost.unknown) ++unknown_outcomes_;
        if (lost.unknown && replay == Replay::never) {
          throw PostgresError(ErrorCategory::connection,
                              "postgres: " + std::string(what) + ": connection to " + target_ +
                                  " lost before the server answered; the change may or may not "
                                  "have been applied: " + lost.message,
                              "08006");
        }
        uncertain = uncertain || lost.unknown;
        if (std::chrono::steady_clock::now() + delay > give_up) {
          throw PostgresError(ErrorCategory::connection,
                              "postgres: " + std::string(what) + ": connection to " + target_ +
                                  " lost and not re-established within " +
                                  std::to_string(opt_.reconnect_give_up.count()) + " ms: " + lost.message,
                              "08006");
        }
        ++retries_;
        std::this_thread::sleep_for(delay);
        delay = std::min(delay * 2, opt_.reconnect_backoff_max);
      }
    }
  }

  /// with_retry for an outcome (complete, fail, release) of the leases `tokens`. When it gives
  /// up, the outcome may have been applied without an answer; the tokens are remembered, and a
  /// later call with one of them (the worker sending the outcome again) starts uncertain, so
  /// it asks done_token and reports an applied outcome as applied rather than as a lost lease.
  template <class F>
  std::invoke_result_t<F&, Conn&, bool> outcome_retry(std::string_view what, const detail::pg::Params& tokens,
                                                       F&& fn) {
    bool resend = false;
    {
      std::lock_guard lock(unanswered_mutex_);
      for (const auto& t : tokens) resend = unanswered_.erase(*t) > 0 || resend;
    }
    try {
      return with_retry(what, Replay::safe, [&](Conn& c, bool uncertain) { return fn(c, uncertain || resend); });
    } catch (const Error& e) {
      if (e.is_transient()) {
        std::lock_guard lock(unanswered_mutex_);
        if (unanswered_.size() > 100'000) unanswered_.clear();  // bounded: callers that never resend
        for (const auto& t : tokens) unanswered_.insert(*t);
      }
      throw;
    }
  }

  /// BEGIN; fn(); COMMIT on one connection. A failure before COMMIT rolls back (Lost with
  /// unknown = false: nothing was applied); only a COMMIT without an answer is unknown.
  template <class C, class F>
  std::invoke_result_t<F&> in_transaction(C& c, F&& fn) {
    exec_sql(c, "BEGIN", {});
    std::optional<decltype(fn())> out;
    try {
      out.emplace(fn());
    } catch (detail::pg::Lost& lost) {
      lost.unknown = false;  // nothing was committed
      throw;
    } catch (...) {
      if (PQstatus(raw(c)) == CONNECTION_OK) detail::pg::Result{PQexec(raw(c), "ROLLBACK")};
      throw;
    }
    exec_sql(c, "COMMIT", {});  // a Lost here keeps unknown = true: the commit may have happened
    return std::move(*out);
  }

  // ------------------------------------------------------------------------------------------
  // Schema and statements

  void build_statements() {
    const std::string& s = schema_q_;
    const std::string cols =
        "id, queue, name, payload, state, priority, attempts, max_attempts, run_at, created_at, "
        "finished_at, lease_until, lease_token, backoff, timeout_ms, unique_key, unique_for_ms, "
        "result, errors, progress, progress_message, group_key";
    const std::string jcols =
        "j.id, j.queue, j.name, j.payload, j.state, j.priority, j.attempts, j.max_attempts, "
        "j.run_at, j.created_at, j.finished_at, j.lease_until, j.lease_token, j.backoff, "
        "j.timeout_ms, j.unique_key, j.unique_for_ms, j.result, j.errors, j.progress, "
        "j.progress_message, j.group_key";
    const std::string insert_cols =
        "INSERT INTO " + s + ".jobs (queue, name, payload, state, priority, max_attempts, run_at, "
        "created_at, backoff, timeout_ms, unique_key, unique_for_ms, group_key) ";
    // Job notices (Backend::subscribe), sent by the statement that makes the change, so only
    // committed changes are announced: one NOTIFY per statement carrying a JSON array
    // (notify_events splits it below the 8000-byte payload limit). Only when some process
    // listens (event_listeners): without subscribers a statement pays one index probe.
    // `from` names the CTE of changed rows; the rest are SQL expressions over its columns.
    auto notices = [&](const std::string& from, const std::string& kind, const std::string& attempt,
                       const std::string& progress, const std::string& message) {
      return " note AS (SELECT " + s + ".notify_events(array_agg(json_build_object("
             "'kind', " + kind + ", 'id', id, 'queue', queue, 'attempt', " + attempt +
             ", 'progress', " + progress + ", 'message', " + message + ")::text))"
             " FROM " + from + " WHERE (SELECT EXISTS (SELECT 1 FROM " + s + ".event_listeners))"
             " HAVING count(*) > 0)";
    };
    sql_.assign(static_cast<std::size_t>(S::count_), {});
    names_.assign(static_cast<std::size_t>(S::count_), {});
    auto def = [&](S id, const char* name, std::string sql) {
      sql_[static_cast<std::size_t>(id)] = std::move(sql);
      names_[static_cast<std::size_t>(id)] = std::string("jobq_") + name;
    };

    // $1 queue $2 name $3 payload $4 priority $5 max_attempts $6 run_at $7 now $8 backoff
    // $9 timeout_ms $10 unique_for_ms $11 group (NULL = none)
    // Each insert statement sends its own NOTIFY (once per queue of a batch, only for rows
    // really inserted); migration 2 dropped the AFTER INSERT trigger that did it for them,
    // whose transition table cost a tenth of a bulk insert. NOTIFY is transactional: a waiter
    // wakes only when the jobs are visible.
    const std::string notify = "pg_notify('" + channel_ + "', ";
    def(S::enqueue_one, "enqueue_one",
        "WITH ins AS (" + insert_cols +
            "VALUES ($1, $2, $3::json, 'queued', $4::int, $5::int, $6::bigint, $7::bigint, "
            "$8::jsonb, $9::bigint, NULL, $10::bigint, $11::text) RETURNING id, queue)"
            " SELECT i.id FROM ins i CROSS JOIN LATERAL " + notify + "i.queue) n");
    // The same plus $12 unique_key $13 throttle_ms $14 debounce_ms: see enqueue_keyed in
    // migration 3 (the key's holder, throttle and debounce, retried on a lost race).
    def(S::enqueue_keyed, "enqueue_keyed",
        "SELECT job_id, created FROM " + s + ".enqueue_keyed($1::text, $2::text, $3::json, $4::int,"
        " $5::int, $6::bigint, $7::bigint, $8::jsonb, $9::bigint, $10::bigint, $11::text, $12::text,"
        " $13::bigint, $14::bigint)");
    // Arrays of a batch; ids come from one sequence in ORDER BY ord, so sorted ids map back to
    // input order. Backoff policies come once each ($8) with a 1-based index per job ($9):
    // parsing the same jsonb for every row was a tenth of the statement's server time.
    // $1 queues $2 names $3 payloads $4 priorities $5 max_attempts $6 run_ats $7 now
    // $8 distinct backoffs $9 backoff index $10 timeouts $11 unique_fors $12 distinct queues
    // $13 groups
    def(S::enqueue_batch, "enqueue_batch",
        "WITH ins AS (" + insert_cols +
            "SELECT q, n, p::json, 'queued', pr, ma, ra, $7::bigint, ($8::jsonb[])[bi], t, NULL, uf, g"
            " FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::int[], $6::bigint[],"
            "             $9::int[], $10::bigint[], $11::bigint[], $13::text[])"
            "      WITH ORDINALITY AS x(q, n, p, pr, ma, ra, bi, t, uf, g, ord)"
            " ORDER BY ord RETURNING id),"
            " woke AS (SELECT count(*) FROM unnest($12::text[]) AS q(name)"
            "          CROSS JOIN LATERAL " + notify + "q.name) n)"
            " SELECT ins.id FROM woke, ins");
    // Per queue, an ordered scan of the partial index jobs_ready (queue, priority DESC, run_at,
    // id) WHERE state = 'queued', locking with SKIP LOCKED so concurrent claimers never wait
    // for or share a row; then the best `limit` across the queues.
    // When one of the queues has limits (a queue_limits row), the fast path takes nothing and
    // claim_limited (migration 3) claims instead, under a lock on those queues' limits rows.
    // Both branches test the same InitPlan in the same snapshot, so exactly one of them runs;
    // unlimited queues pay one index probe of queue_limits and no lock.
    // $1 queues $2 now $3 limit $4 lease_until $5 tokens
    const std::string limited =
        "(SELECT EXISTS (SELECT 1 FROM " + s + ".queue_limits l WHERE l.queue = ANY($1::text[])))";
    def(S::claim, "claim",
        "WITH picked AS ("
        " SELECT c.id, row_number() OVER (ORDER BY c.priority DESC, c.run_at, c.id) AS rn"
        "   FROM unnest($1::text[]) AS q(name)"
        "   CROSS JOIN LATERAL ("
        "     SELECT j.id, j.priority, j.run_at FROM " + s + ".jobs j"
        "      WHERE j.state = 'queued' AND j.queue = q.name AND j.run_at <= $2::bigint"
        "      ORDER BY j.priority DESC, j.run_at, j.id"
        "      LIMIT $3::int FOR UPDATE SKIP LOCKED) c"
        "  WHERE NOT EXISTS (SELECT 1 FROM " + s + ".paused_queues p WHERE p.queue = q.name)"
        "    AND NOT " + limited +
        "  ORDER BY c.priority DESC, c.run_at, c.id LIMIT $3::int),"
        " fast AS (UPDATE " + s + ".jobs j SET state = 'active', attempts = j.attempts + 1,"
        "        lease_token = ($5::text[])[picked.rn], lease_until = $4::bigint"
        "   FROM picked WHERE j.id = picked.id RETURNING " + jcols + ")"
        " SELECT * FROM fast"
        " UNION ALL"
        " SELECT " + jcols + " FROM " + s + ".claim_limited($1::text[], $2::bigint, $3::int,"
        "   $4::bigint, $5::text[]) j WHERE " + limited);
    // $1 ids $2 tokens $3 results (json texts) $4 now; returns the 1-based positions done.
    // done_token remembers which lease finished the job, for retries after a lost answer.
    // The scalar subquery over `note` makes it run (an unreferenced SELECT CTE would not).
    def(S::complete_many, "complete_many",
        "WITH done AS ("
        " UPDATE " + s + ".jobs j SET state = 'completed', finished_at = $4::bigint,"
        "       result = (($3::text[])[c.ord])::json, lease_token = NULL, lease_until = NULL,"
        "       done_token = j.lease_token"
        "  FROM unnest($1::bigint[], $2::text[]) WITH ORDINALITY AS c(id, token, ord)"
        " WHERE j.id = c.id AND j.state = 'active' AND j.lease_token = c.token"
        " RETURNING c.ord, j.id, j.queue, j.attempts, j.progress),"
        + notices("done", "'completed'", "attempts", "progress", "''") +
        " SELECT ord FROM done WHERE (SELECT count(*) FROM note) >= 0");
    // $1 ids $2 tokens: which of them were finished by that very token, and their state now.
    def(S::done_check, "done_check",
        "SELECT c.ord, j.state FROM unnest($1::bigint[], $2::text[]) WITH ORDINALITY AS c(id, token, ord)"
        "  JOIN " + s + ".jobs j ON j.id = c.id AND j.done_token = c.token");
    // $1 id $2 token $3 message $4 retry_at (NULL = dead) $5 now
    def(S::fail, "fail",
        "WITH f AS (UPDATE " + s + ".jobs SET"
        "  errors = errors || jsonb_build_array(jsonb_build_object("
        "           'attempt', attempts, 'message', $3::text, 'at', $5::bigint)),"
        "  state = CASE WHEN $4::bigint IS NOT NULL AND attempts < max_attempts THEN 'queued' ELSE 'dead' END,"
        "  run_at = CASE WHEN $4::bigint IS NOT NULL AND attempts < max_attempts THEN $4::bigint ELSE run_at END,"
        "  finished_at = CASE WHEN $4::bigint IS NOT NULL AND attempts < max_attempts THEN NULL"
        "                ELSE $5::bigint END,"
        "  lease_token = NULL, lease_until = NULL, done_token = lease_token"
        " WHERE id = $1::bigint AND state = 'active' AND lease_token = $2::text"
        " RETURNING id, queue, state, attempts),"
        + notices("f", "CASE state WHEN 'dead' THEN 'dead' ELSE 'failed' END", "attempts", "0",
                  "left($3::text, 1000)") +
        " SELECT state FROM f WHERE (SELECT count(*) FROM note) >= 0");
    def(S::extend, "extend",
        "UPDATE " + s + ".jobs SET lease_until = $3::bigint"
        " WHERE id = $1::bigint AND state = 'active' AND lease_token = $2::text RETURNING id");
    def(S::release, "release",
        "UPDATE " + s + ".jobs SET state = 'queued', run_at = $3::bigint, attempts = attempts - 1,"
        "       lease_token = NULL, lease_until = NULL, done_token = lease_token"
        " WHERE id = $1::bigint AND state = 'active' AND lease_token = $2::text RETURNING id");
    // Undoes claims whose answer was lost: $1 tokens $2 now.
    def(S::release_tokens, "release_tokens",
        "UPDATE " + s + ".jobs SET state = 'queued', run_at = $2::bigint, attempts = attempts - 1,"
        "       lease_token = NULL, lease_until = NULL"
        " WHERE state = 'active' AND lease_token = ANY($1::text[]) RETURNING id");
    def(S::progress, "progress",
        "WITH p AS (UPDATE " + s + ".jobs SET progress = $3::int, progress_message = $4::text"
        " WHERE id = $1::bigint AND state = 'active' AND lease_token = $2::text"
        " RETURNING id, queue, attempts, progress),"
        + notices("p", "'progress'", "attempts", "progress", "left($4::text, 1000)") +
        " SELECT id FROM p WHERE (SELECT count(*) FROM note) >= 0");
    // One node at a time: the try-lock is an InitPlan evaluated once, before any row; a node
    // that does not get it updates nothing. Uses jobs_active_lease (lease_until) WHERE active.
    // $1 now $2 lock name
    def(S::recover, "recover",
        "WITH r AS (UPDATE " + s + ".jobs SET"
        "  errors = errors || jsonb_build_array(jsonb_build_object("
        "           'attempt', attempts, 'message', 'lease expired (worker lost or too slow)',"
        "           'at', $1::bigint)),"
        "  state = CASE WHEN attempts < max_attempts THEN 'queued' ELSE 'dead' END,"
        "  run_at = CASE WHEN attempts < max_attempts THEN $1::bigint ELSE run_at END,"
        "  finished_at = CASE WHEN attempts < max_attempts THEN NULL ELSE $1::bigint END,"
        "  lease_token = NULL, lease_until = NULL"
        " WHERE (SELECT pg_try_advisory_xact_lock(hashtextextended($2::text, 0)))"
        "   AND state = 'active' AND lease_until <= $1::bigint RETURNING id, queue, state, attempts),"
        + notices("r", "CASE state WHEN 'dead' THEN 'dead' ELSE 'failed' END", "attempts", "0",
                  "'lease expired (worker lost or too slow)'") +
        " SELECT state FROM r WHERE (SELECT count(*) FROM note) >= 0");
    def(S::get, "get", "SELECT " + cols + " FROM " + s + ".jobs WHERE id = $1::bigint");
    def(S::cancel, "cancel",
        "WITH c AS (UPDATE " + s + ".jobs SET state = 'cancelled', finished_at = $2::bigint"
        " WHERE id = $1::bigint AND state = 'queued' RETURNING id, queue, attempts, progress),"
        + notices("c", "'cancelled'", "attempts", "progress", "''") +
        " SELECT id FROM c WHERE (SELECT count(*) FROM note) >= 0");
    // A re-driven job takes its unique key back unless the key's holder (holds_key: at most
    // one job per key, index jobs_unique_holder) still holds it. The old holder lets go first:
    // the InitPlan over `unhold` runs before the row is updated, so the unique index never
    // sees two holders.
    def(S::redrive, "redrive",
        "WITH t AS (SELECT id, queue, unique_key FROM " + s + ".jobs"
        "            WHERE id = $1::bigint AND state = 'dead' FOR UPDATE),"
        " h AS (SELECT o.id, (o.state IN ('queued', 'active') OR (o.state = 'completed'"
        "               AND o.finished_at + o.unique_for_ms > $2::bigint)) AS held"
        "        FROM " + s + ".jobs o, t WHERE o.queue = t.queue AND o.unique_key = t.unique_key"
        "         AND o.holds_key AND o.id <> t.id),"
        " unhold AS (UPDATE " + s + ".jobs o SET holds_key = false FROM h"
        "             WHERE o.id = h.id AND NOT h.held RETURNING o.id)"
        " UPDATE " + s + ".jobs j SET state = 'queued', run_at = $2::bigint, attempts = 0,"
        "       finished_at = NULL,"
        "       holds_key = j.unique_key IS NULL OR NOT EXISTS (SELECT 1 FROM h WHERE h.held)"
        "  FROM t WHERE j.id = t.id AND (SELECT count(*) FROM unhold) >= 0 RETURNING j.id");
    def(S::pause, "pause",
        "INSERT INTO " + s + ".paused_queues (queue) VALUES ($1::text) ON CONFLICT DO NOTHING");
    def(S::resume, "resume",
        "WITH d AS (DELETE FROM " + s + ".paused_queues WHERE queue = $1::text RETURNING 1)"
        " SELECT pg_notify($2::text, $1::text), (SELECT count(*) FROM d)");
    def(S::is_paused, "is_paused", "SELECT 1 FROM " + s + ".paused_queues WHERE queue = $1::text");
    // A skip scan over jobs_queue_state (queue, state, id): one index probe per queue, not one
    // row per job; plus queues that are paused but hold no job.
    def(S::queues, "queues",
        "WITH RECURSIVE q(queue) AS ("
        " (SELECT queue FROM " + s + ".jobs ORDER BY queue LIMIT 1)"
        " UNION ALL"
        " SELECT (SELECT j.queue FROM " + s + ".jobs j WHERE j.queue > q.queue ORDER BY j.queue LIMIT 1)"
        " FROM q WHERE q.queue IS NOT NULL)"
        " SELECT queue FROM q WHERE queue IS NOT NULL"
        " UNION SELECT queue FROM " + s + ".paused_queues ORDER BY 1");
    def(S::counts, "counts",
        "SELECT state, count(*) FROM " + s + ".jobs WHERE queue = $1::text GROUP BY state");
    // Uses jobs_finished (queue, state, finished_at); at most 10,000 rows per statement so a
    // large backlog is deleted in short transactions. $1 queue $2 now $3..$5 keep ms (NULL =
    // forever) $6 lock name
    // The ids as an array (ARRAY(...) is an InitPlan): the rows go by the primary key. With
    // "id IN (subquery)" both the custom and the generic plan were a hash semi join over a
    // sequential scan of the whole table.
    def(S::prune, "prune",
        "DELETE FROM " + s + ".jobs WHERE id = ANY (ARRAY("
        " SELECT id FROM " + s + ".jobs WHERE queue = $1::text"
        "   AND (SELECT pg_try_advisory_xact_lock(hashtextextended($6::text, 0)))"
        "   AND ((state = 'completed' AND finished_at + $3::bigint < $2::bigint)"
        "     OR (state = 'dead' AND finished_at + $4::bigint < $2::bigint)"
        "     OR (state = 'cancelled' AND finished_at + $5::bigint < $2::bigint))"
        " LIMIT 10000))");
    // Ordered by the whole key of jobs_queue_state (the same order as by id, queue and state
    // being fixed), so the generic plan reads that index instead of filtering the primary key.
    def(S::list, "list",
        "SELECT " + cols + " FROM " + s + ".jobs WHERE queue = $1::text AND state = $2::text"
        " ORDER BY queue, state, id LIMIT $3::bigint OFFSET $4::bigint");
    // Limited queues never count as ready: their jobs may be held back by a limit, and a
    // waiter that returned at once would spin on claims. They are polled (poll_interval) and
    // woken by NOTIFY like the others.
    def(S::ready, "ready",
        "SELECT 1 FROM unnest($1::text[]) AS q(name)"
        " WHERE NOT EXISTS (SELECT 1 FROM " + s + ".paused_queues p WHERE p.queue = q.name)"
        "   AND NOT EXISTS (SELECT 1 FROM " + s + ".queue_limits l WHERE l.queue = q.name)"
        "   AND EXISTS (SELECT 1 FROM " + s + ".jobs j"
        "                WHERE j.state = 'queued' AND j.queue = q.name AND j.run_at <= $2::bigint)"
        " LIMIT 1");
    // $1 queue $2 rate max $3 rate window ms (both NULL = no rate) $4 group concurrency $5 channel.
    // A raised limit may free work: waiters are woken.
    def(S::set_limits, "set_limits",
        "WITH u AS (INSERT INTO " + s + ".queue_limits (queue, rate_max, rate_window_ms, group_concurrency)"
        " VALUES ($1::text, $2::bigint, $3::bigint, $4::int) ON CONFLICT (queue) DO UPDATE"
        " SET rate_max = EXCLUDED.rate_max, rate_window_ms = EXCLUDED.rate_window_ms,"
        "     group_concurrency = EXCLUDED.group_concurrency RETURNING queue)"
        " SELECT pg_notify($5::text, queue) FROM u");
    // No limits = no row: claims of the queue take the fast path again.
    def(S::clear_limits, "clear_limits",
        "WITH d AS (DELETE FROM " + s + ".queue_limits WHERE queue = $1::text RETURNING queue)"
        " SELECT pg_notify($2::text, queue) FROM d");
    def(S::get_limits, "get_limits",
        "SELECT rate_max, rate_window_ms, group_concurrency FROM " + s + ".queue_limits"
        " WHERE queue = $1::text");
    // The spec is stored as the JSON text given and parsed back as is.
    def(S::put_schedule, "put_schedule",
        "INSERT INTO " + s + ".schedules (name, spec, next_run) VALUES ($1::text, $2::text, $3::bigint)"
        " ON CONFLICT (name) DO UPDATE SET spec = EXCLUDED.spec, next_run = EXCLUDED.next_run");
    def(S::remove_schedule, "remove_schedule",
        "DELETE FROM " + s + ".schedules WHERE name = $1::text RETURNING 1");
    // Byte order (COLLATE "C"), as std::string compares.
    def(S::list_schedules, "list_schedules",
        "SELECT name, spec, next_run FROM " + s + ".schedules ORDER BY name COLLATE \"C\"");
    // The compare-and-set: a concurrent firing waits on the row lock, then re-checks next_run
    // on the committed row (READ COMMITTED) and updates nothing. $1 name $2 expected $3 next
    def(S::fire_schedule, "fire_schedule",
        "UPDATE " + s + ".schedules SET next_run = $3::bigint"
        " WHERE name = $1::text AND next_run = $2::bigint RETURNING 1");
  }

  /// Numbered migrations; each runs once, in order, inside the migration transaction.
  std::vector<std::string> migrations() const {
    const std::string& s = schema_q_;
    return {
        // 1: jobs (times are epoch ms from the backend's clock), paused queues, wake-up triggers.
        "CREATE TABLE " + s + ".jobs ("
        " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " queue text NOT NULL,"
        " name text NOT NULL,"
        " payload json NOT NULL,"  // json, not jsonb: kept verbatim (key order, \\u0000)
        " state text NOT NULL CHECK (state IN ('queued','active','completed','dead','cancelled')),"
        " priority int NOT NULL DEFAULT 0,"
        " attempts int NOT NULL DEFAULT 0,"
        " max_attempts int NOT NULL CHECK (max_attempts >= 1),"
        " run_at bigint NOT NULL,"
        " created_at bigint NOT NULL,"
        " finished_at bigint,"
        " lease_until bigint,"
        " lease_token text,"
        " done_token text,"
        " backoff jsonb NOT NULL,"
        " timeout_ms bigint NOT NULL DEFAULT 0,"
        " unique_key text,"
        " unique_for_ms bigint NOT NULL DEFAULT 0,"
        " holds_key boolean NOT NULL DEFAULT true,"
        " result json,"
        " errors jsonb NOT NULL DEFAULT '[]',"
        " progress int NOT NULL DEFAULT 0,"
        " progress_message text NOT NULL DEFAULT '');\n"
        "CREATE INDEX jobs_ready ON " + s + ".jobs (queue, priority DESC, run_at, id)"
        " WHERE state = 'queued';\n"
        "CREATE INDEX jobs_active_lease ON " + s + ".jobs (lease_until) WHERE state = 'active';\n"
        "CREATE INDEX jobs_queue_state ON " + s + ".jobs (queue, state, id);\n"
        "CREATE INDEX jobs_finished ON " + s + ".jobs (queue, state, finished_at)"
        " WHERE finished_at IS NOT NULL;\n"
        "CREATE UNIQUE INDEX jobs_unique_live ON " + s + ".jobs (queue, unique_key)"
        " WHERE unique_key IS NOT NULL AND holds_key AND state IN ('queued', 'active');\n"
        "CREATE INDEX jobs_unique_key ON " + s + ".jobs (queue, unique_key)"
        " WHERE unique_key IS NOT NULL;\n"
        "CREATE TABLE " + s + ".paused_queues (queue text PRIMARY KEY);\n"
        // NOTIFY is transactional: a waiter wakes only once the new jobs are visible.
        "CREATE FUNCTION " + s + ".notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $fn$\n"
        "BEGIN\n"
        "  PERFORM pg_notify('jobq:' || TG_TABLE_SCHEMA, d.queue)"
        "     FROM (SELECT DISTINCT queue FROM new_rows) AS d;\n"
        "  RETURN NULL;\n"
        "END $fn$;\n"
        "CREATE FUNCTION " + s + ".notify_requeued() RETURNS trigger LANGUAGE plpgsql AS $fn$\n"
        "BEGIN\n"
        "  PERFORM pg_notify('jobq:' || TG_TABLE_SCHEMA, NEW.queue);\n"
        "  RETURN NULL;\n"
        "END $fn$;\n"
        "CREATE TRIGGER jobs_notify_inserted AFTER INSERT ON " + s + ".jobs"
        " REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT"
        " EXECUTE FUNCTION " + s + ".notify_inserted();\n"
        "CREATE TRIGGER jobs_notify_requeued AFTER UPDATE OF state ON " + s + ".jobs FOR EACH ROW"
        " WHEN (NEW.state = 'queued' AND OLD.state <> 'queued')"
        " EXECUTE FUNCTION " + s + ".notify_requeued();\n",
        // 2: the insert statements notify themselves (see enqueue_one): no transition table.
        "DROP TRIGGER jobs_notify_inserted ON " + s + ".jobs;\n"
        "DROP FUNCTION " + s + ".notify_inserted();\n",
        migration_3(),
    };
  }

  /// 3 (issue #7): groups, queue limits with a rate ledger, stored schedules, job notices, and
  /// one holder per unique key (throttle/debounce).
  std::string migration_3() const {
    const std::string& s = schema_q_;
    const std::string wake = "'" + channel_ + "'";          // [a-z0-9_:] only: safe as a literal
    const std::string events = "'" + events_channel_ + "'";
    return
        "ALTER TABLE " + s + ".jobs ADD COLUMN group_key text;\n"
        // Counting active jobs per group, for limited queues only; jobs without a group or not
        // active are not in it, so the hot path writes no entry.
        "CREATE INDEX jobs_active_group ON " + s + ".jobs (queue, group_key)"
        " WHERE state = 'active' AND group_key IS NOT NULL;\n"
        // holds_key now marks THE holder of a key (the latest job enqueued with it, or a
        // re-driven one that took it back) in every state, not only while queued/active: the
        // holder decides throttle (its created_at) and debounce (replace it while queued), and a
        // new holder coexists with an active old one. Existing stores keep per key the live
        // holder, else the newest.
        "UPDATE " + s + ".jobs SET holds_key = false WHERE unique_key IS NOT NULL AND holds_key"
        " AND id NOT IN (SELECT DISTINCT ON (queue, unique_key) id FROM " + s + ".jobs"
        "   WHERE unique_key IS NOT NULL AND holds_key"
        "   ORDER BY queue, unique_key, (state IN ('queued', 'active')) DESC, id DESC);\n"
        "DROP INDEX " + s + ".jobs_unique_live;\n"
        "DROP INDEX " + s + ".jobs_unique_key;\n"
        "CREATE UNIQUE INDEX jobs_unique_holder ON " + s + ".jobs (queue, unique_key)"
        " WHERE unique_key IS NOT NULL AND holds_key;\n"
        // A queue with a row here is limited (no row = no limits).
        "CREATE TABLE " + s + ".queue_limits ("
        " queue text PRIMARY KEY,"
        " rate_max bigint CHECK (rate_max >= 1),"
        " rate_window_ms bigint CHECK (rate_window_ms >= 1),"
        " group_concurrency int NOT NULL DEFAULT 0 CHECK (group_concurrency >= 0),"
        " CHECK ((rate_max IS NULL) = (rate_window_ms IS NULL)));\n"
        // One row per claim of a rate-limited queue: n starts at at_ms. Pruned by the claims.
        "CREATE TABLE " + s + ".rate_ledger (queue text NOT NULL, at_ms bigint NOT NULL, n int NOT NULL);\n"
        "CREATE INDEX rate_ledger_queue_at ON " + s + ".rate_ledger (queue, at_ms);\n"
        "CREATE TABLE " + s + ".schedules (name text PRIMARY KEY, spec text NOT NULL, next_run bigint NOT NULL);\n"
        // Backends whose listener connection LISTENs for notices; statements build notices only
        // when a row exists. A stale row (a crashed process) costs notices nobody reads; the next
        // listener to start removes rows of sessions that are gone.
        "CREATE TABLE " + s + ".event_listeners (pid int PRIMARY KEY, since timestamptz NOT NULL DEFAULT now());\n"
        // Sends notices (JSON texts) as JSON arrays, each NOTIFY below the 8000-byte limit
        // (a notice's message is cut at 1000 characters, so one notice always fits).
        "CREATE FUNCTION " + s + ".notify_events(p_notices text[]) RETURNS int LANGUAGE plpgsql AS $fn$\n"
        "DECLARE v_buf text := ''; v_one text; v_sent int := 0;\n"
        "BEGIN\n"
        "  IF p_notices IS NULL THEN RETURN 0; END IF;\n"
        "  FOREACH v_one IN ARRAY p_notices LOOP\n"
        "    IF v_buf <> '' AND octet_length(v_buf) + octet_length(v_one) + 3 > 7900 THEN\n"
        "      PERFORM pg_notify(" + events + ", '[' || v_buf || ']');\n"
        "      v_sent := v_sent + 1; v_buf := '';\n"
        "    END IF;\n"
        "    v_buf := CASE WHEN v_buf = '' THEN v_one ELSE v_buf || ',' || v_one END;\n"
        "  END LOOP;\n"
        "  IF v_buf <> '' THEN PERFORM pg_notify(" + events + ", '[' || v_buf || ']'); v_sent := v_sent + 1; END IF;\n"
        "  RETURN v_sent;\n"
        "END $fn$;\n"
        // Enqueue of a job with a unique key (Backend::enqueue): decided against the key's
        // holder. Each statement of a VOLATILE function takes a fresh snapshot (READ
        // COMMITTED), so after losing a race (a changed holder, or a conflict on
        // jobs_unique_holder, on which INSERT waits for the winner to commit) the loop sees the
        // winner. Under REPEATABLE READ it never would: bounded, then 40001.
        "CREATE FUNCTION " + s + ".enqueue_keyed(p_queue text, p_name text, p_payload json,"
        " p_priority int, p_max_attempts int, p_run_at bigint, p_now bigint, p_backoff jsonb,"
        " p_timeout bigint, p_unique_for bigint, p_group text, p_key text, p_throttle bigint,"
        " p_debounce bigint)\n"
        " RETURNS TABLE (job_id bigint, created boolean) LANGUAGE plpgsql AS $fn$\n"
        "DECLARE h record; v_id bigint;\n"
        "BEGIN\n"
        "  FOR v_try IN 1..50 LOOP\n"
        "    SELECT j.id, j.state, j.created_at, j.finished_at, j.unique_for_ms INTO h\n"
        "      FROM " + s + ".jobs j WHERE j.queue = p_queue AND j.unique_key = p_key AND j.holds_key;\n"
        "    IF FOUND THEN\n"
        "      IF p_debounce > 0 THEN\n"
        "        IF h.state = 'queued' THEN\n"
        "          UPDATE " + s + ".jobs SET payload = p_payload, run_at = p_now + p_debounce\n"
        "           WHERE id = h.id AND state = 'queued' AND holds_key;\n"
        "          IF FOUND THEN job_id := h.id; created := false; RETURN NEXT; RETURN; END IF;\n"
        "          CONTINUE;\n"  // claimed meanwhile: look again
        "        END IF;\n"
        "      ELSIF h.state IN ('queued', 'active')\n"
        "         OR (h.state = 'completed' AND h.finished_at + h.unique_for_ms > p_now)\n"
        "         OR (p_throttle > 0 AND h.created_at + p_throttle > p_now) THEN\n"
        "        job_id := h.id; created := false; RETURN NEXT; RETURN;\n"
        "      END IF;\n"
        // The key passes to the new job; the old holder keeps its state (an active one runs on).
        "      UPDATE " + s + ".jobs SET holds_key = false WHERE id = h.id AND holds_key AND state = h.state;\n"
        "      IF NOT FOUND THEN CONTINUE; END IF;\n"
        "    END IF;\n"
        "    INSERT INTO " + s + ".jobs (queue, name, payload, state, priority, max_attempts, run_at,"
        " created_at, backoff, timeout_ms, unique_key, unique_for_ms, group_key)\n"
        "    VALUES (p_queue, p_name, p_payload, 'queued', p_priority, p_max_attempts,"
        " CASE WHEN p_debounce > 0 THEN p_now + p_debounce ELSE p_run_at END, p_now, p_backoff,"
        " p_timeout, p_key, p_unique_for, p_group)\n"
        "    ON CONFLICT (queue, unique_key) WHERE unique_key IS NOT NULL AND holds_key DO NOTHING\n"
        "    RETURNING id INTO v_id;\n"
        "    IF FOUND THEN\n"
        "      PERFORM pg_notify(" + wake + ", p_queue);\n"
        "      job_id := v_id; created := true; RETURN NEXT; RETURN;\n"
        "    END IF;\n"
        "  END LOOP;\n"
        "  RAISE EXCEPTION 'unique key % of queue % is held by a job this transaction cannot see"
        " (REPEATABLE READ?)', p_key, p_queue USING ERRCODE = '40001';\n"
        "END $fn$;\n"
        // Claim from queues of which at least one has limits (see S::claim). The FOR UPDATE on
        // their queue_limits rows serializes such claims across all processes until commit;
        // the statements after it see every earlier claim (fresh snapshots), so the active
        // counts per group and the ledger are exact. Completions lower the counts without the
        // lock, which can only hold a job back for one claim longer, never let one through.
        // Candidates come in claim order from jobs_ready; groups already at their limit are
        // excluded in the query, and only groups that fill up during this claim are skipped
        // row by row. With several queues each one is scanned for at most 4 x limit + 100
        // candidates (a later claim goes on).
        "CREATE FUNCTION " + s + ".claim_limited(p_queues text[], p_now bigint, p_limit int,"
        " p_lease_until bigint, p_tokens text[]) RETURNS SETOF " + s + ".jobs LANGUAGE plpgsql AS $fn$\n"
        "DECLARE\n"
        "  v_lim record; r record; cur refcursor;\n"
        "  v_ids bigint[] := '{}';\n"
        "  v_allowed jsonb := '{}';\n"   // queue -> starts left in the window (rate-limited only)
        "  v_gmax jsonb := '{}';\n"      // queue -> group concurrency (grouped queues only)
        "  v_active jsonb := '{}';\n"    // queue \n group -> active jobs, picked ones included
        "  v_full jsonb := '{}';\n"      // queue \n group of groups already at their limit
        "  v_key text; v_n bigint;\n"
        "BEGIN\n"
        "  PERFORM 1 FROM " + s + ".queue_limits WHERE queue = ANY(p_queues) ORDER BY queue FOR UPDATE;\n"
        "  FOR v_lim IN SELECT * FROM " + s + ".queue_limits WHERE queue = ANY(p_queues) LOOP\n"
        "    IF v_lim.rate_max IS NOT NULL THEN\n"
        "      DELETE FROM " + s + ".rate_ledger WHERE queue = v_lim.queue AND at_ms <= p_now - v_lim.rate_window_ms;\n"
        "      SELECT v_lim.rate_max - coalesce(sum(x.n), 0) INTO v_n FROM " + s + ".rate_ledger x WHERE x.queue = v_lim.queue;\n"
        "      v_allowed := v_allowed || jsonb_build_object(v_lim.queue, v_n);\n"
        "    END IF;\n"
        "    IF v_lim.group_concurrency > 0 THEN\n"
        "      v_gmax := v_gmax || jsonb_build_object(v_lim.queue, v_lim.group_concurrency);\n"
        "    END IF;\n"
        "  END LOOP;\n"
        "  IF v_gmax <> '{}' THEN\n"
        "    SELECT coalesce(jsonb_object_agg(a.k, a.n), '{}'),\n"
        "           coalesce(jsonb_object_agg(a.k, true) FILTER (WHERE a.n >= (v_gmax ->> a.queue)::bigint), '{}')\n"
        "      INTO v_active, v_full\n"
        "      FROM (SELECT j.queue, j.queue || E'\\n' || j.group_key AS k, count(*) AS n FROM " + s + ".jobs j\n"
        "             WHERE j.queue = ANY(p_queues) AND j.state = 'active' AND j.group_key IS NOT NULL\n"
        "               AND v_gmax ? j.queue GROUP BY j.queue, j.group_key) a;\n"
        "  END IF;\n"
        "  IF cardinality(p_queues) = 1 THEN\n"
        "    OPEN cur FOR SELECT j.id, j.queue, j.group_key FROM " + s + ".jobs j\n"
        "      WHERE j.state = 'queued' AND j.queue = p_queues[1] AND j.run_at <= p_now\n"
        "        AND NOT EXISTS (SELECT 1 FROM " + s + ".paused_queues p WHERE p.queue = j.queue)\n"
        "        AND coalesce((v_allowed ->> j.queue)::bigint, 1) > 0\n"
        "        AND (j.group_key IS NULL OR NOT (v_full ? (j.queue || E'\\n' || j.group_key)))\n"
        "      ORDER BY j.priority DESC, j.run_at, j.id;\n"
        "  ELSE\n"
        "    OPEN cur FOR SELECT c.id, c.queue, c.group_key FROM unnest(p_queues) AS q(name)\n"
        "      CROSS JOIN LATERAL (SELECT j.id, j.queue, j.group_key, j.priority, j.run_at FROM " + s + ".jobs j\n"
        "        WHERE j.state = 'queued' AND j.queue = q.name AND j.run_at <= p_now\n"
        "          AND coalesce((v_allowed ->> j.queue)::bigint, 1) > 0\n"
        "          AND (j.group_key IS NULL OR NOT (v_full ? (j.queue || E'\\n' || j.group_key)))\n"
        "        ORDER BY j.priority DESC, j.run_at, j.id LIMIT 4 * p_limit + 100) c\n"
        "      WHERE NOT EXISTS (SELECT 1 FROM " + s + ".paused_queues p WHERE p.queue = q.name)\n"
        "      ORDER BY c.priority DESC, c.run_at, c.id;\n"
        "  END IF;\n"
        "  LOOP\n"
        "    FETCH cur INTO r;\n"
        "    EXIT WHEN NOT FOUND;\n"
        "    IF v_allowed ? r.queue AND (v_allowed ->> r.queue)::bigint <= 0 THEN CONTINUE; END IF;\n"
        "    IF r.group_key IS NOT NULL AND v_gmax ? r.queue THEN\n"
        "      v_key := r.queue || E'\\n' || r.group_key;\n"
        "      v_n := coalesce((v_active ->> v_key)::bigint, 0);\n"
        "      IF v_n >= (v_gmax ->> r.queue)::bigint THEN CONTINUE; END IF;\n"
        "      v_active := v_active || jsonb_build_object(v_key, v_n + 1);\n"
        "    END IF;\n"
        "    IF v_allowed ? r.queue THEN\n"
        "      v_allowed := v_allowed || jsonb_build_object(r.queue, (v_allowed ->> r.queue)::bigint - 1);\n"
        "    END IF;\n"
        "    v_ids := v_ids || r.id;\n"
        "    EXIT WHEN cardinality(v_ids) >= p_limit;\n"
        "  END LOOP;\n"
        "  CLOSE cur;\n"
        "  IF cardinality(v_ids) = 0 THEN RETURN; END IF;\n"
        // state = 'queued' again: a cancel or a debounce may have changed a row meanwhile
        // (claims of these queues cannot: they wait for our lock).
        "  RETURN QUERY\n"
        "    WITH u AS (UPDATE " + s + ".jobs j SET state = 'active', attempts = j.attempts + 1,\n"
        "                      lease_token = p_tokens[p.ord], lease_until = p_lease_until\n"
        "                 FROM unnest(v_ids) WITH ORDINALITY AS p(id, ord)\n"
        "                WHERE j.id = p.id AND j.state = 'queued' AND j.run_at <= p_now RETURNING j.*),\n"
        "         led AS (INSERT INTO " + s + ".rate_ledger (queue, at_ms, n)\n"
        "                 SELECT u.queue, p_now, count(*) FROM u WHERE v_allowed ? u.queue GROUP BY u.queue)\n"
        "    SELECT * FROM u;\n"
        "END $fn$;\n";
  }

  /// Creates or upgrades the schema under a transaction-scoped advisory lock, so any number of
  /// processes may start at once: one migrates, the others wait and then find it done.
  void migrate() {
    Lease lease = [&] {
      try {
        return acquire();
      } catch (const detail::pg::Lost& lost) {
        throw PostgresError(ErrorCategory::connection, "postgres: " + lost.message, "08001");
      }
    }();
    Conn& c = *lease;
    const auto all = migrations();
    try {
      in_transaction(c, [&] {
        exec_sql(c, "SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))",
                 {"jobq:migrate:" + opt_.schema});
        // Catalog lookups first: CREATE ... IF NOT EXISTS would demand CREATE privileges even
        // when everything exists, and a role that only uses a migrated schema has none.
        auto ns = exec_sql(c,
                           "SELECT pg_get_userbyid(nspowner), current_user FROM pg_namespace"
                           " WHERE nspname = $1::text",
                           {opt_.schema});
        if (PQntuples(ns.get()) == 0) exec_sql(c, "CREATE SCHEMA " + schema_q_, {});
        auto has_table = exec_sql(c,
                                  "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                                  " WHERE n.nspname = $1::text AND c.relname = 'schema_migrations'",
                                  {opt_.schema});
        if (PQntuples(has_table.get()) == 0) {
          exec_sql(c,
                   "CREATE TABLE " + schema_q_ +
                       ".schema_migrations (version int PRIMARY KEY,"
                       " applied_at timestamptz NOT NULL DEFAULT now())",
                   {});
        }
        auto v = exec_sql(c, "SELECT coalesce(max(version), 0) FROM " + schema_q_ + ".schema_migrations", {});
        const auto version = static_cast<int>(detail::pg::to_i64(PQgetvalue(v.get(), 0, 0)));
        if (version > latest_schema_version) {
          throw PostgresError(ErrorCategory::conflict,
                              "postgres: schema \"" + opt_.schema + "\" is at version " +
                                  std::to_string(version) + ", newer than this jobq (" +
                                  std::to_string(latest_schema_version) + "); upgrade jobq");
        }
        for (int n = version + 1; n <= latest_schema_version; ++n) {
          detail::pg::Result r{PQexec(c.pg.get(), all[static_cast<std::size_t>(n - 1)].c_str())};
          check(c.pg.get(), r.release(), "migration " + std::to_string(n));
          exec_sql(c, "INSERT INTO " + schema_q_ + ".schema_migrations (version) VALUES ($1::int)",
                   {std::to_string(n)});
        }
        return 0;
      });
    } catch (const detail::pg::Lost& lost) {
      throw PostgresError(ErrorCategory::connection,
                          "postgres: connection to " + target_ + " lost while setting up schema \"" +
                              opt_.schema + "\": " + lost.message,
                          "08006");
    } catch (const PostgresError& e) {
      if (e.sqlstate() != "42501") throw;
      throw PostgresError(e.category(),
                          "postgres: cannot set up schema \"" + opt_.schema + "\" (" + schema_owner(c) +
                              "): " + e.what() +
                              "; grant this role rights on it, or choose another schema",
                          e.sqlstate());
    }
  }

  std::string schema_owner(Conn& c) {
    try {
      auto r = exec_sql(c,
                        "SELECT current_user, (SELECT pg_get_userbyid(nspowner) FROM pg_namespace"
                        " WHERE nspname = $1::text)",
                        {opt_.schema});
      std::string who = std::string("connected as \"") + PQgetvalue(r.get(), 0, 0) + "\"";
      if (!PQgetisnull(r.get(), 0, 1)) who += std::string(", schema owned by \"") + PQgetvalue(r.get(), 0, 1) + "\"";
      return who;
    } catch (...) {
      return "owner unknown";
    }
  }

  // ------------------------------------------------------------------------------------------
  // Enqueue internals

  /// validate(job) and the payload as it will be stored, refused when above max_payload_bytes.
  std::string checked_payload(const NewJob& job) const {
    validate(job);
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

  static detail::pg::Param group_param(const NewJob& j) {
    return j.group.empty() ? std::nullopt : detail::pg::Param(j.group);
  }

  PGconn* check_caller_conn(PGconn* tx) const {
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

  static detail::pg::Params job_params(const NewJob& j, const std::string& payload, TimePoint t) {
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
            group_param(j)};
  }

  template <class C>
  EnqueueResult insert_one(C& c, const NewJob& job, const std::string& payload, TimePoint t) {
    auto params = job_params(job, payload, t);
    if (job.unique_key.empty()) {
      auto r = exec(c, S::enqueue_one, params);
      return {detail::pg::to_i64(PQgetvalue(r.get(), 0, 0)), true};
    }
    // Unique keys, throttle and debounce: the function enqueue_keyed (migration 3) decides
    // against the key's holder and retries itself when a concurrent enqueue wins the key.
    params.emplace_back(job.unique_key);
    params.emplace_back(std::to_string(job.throttle.count()));
    params.emplace_back(std::to_string(job.debounce.count()));
    auto r = exec(c, S::enqueue_keyed, params);
    return {detail::pg::to_i64(PQgetvalue(r.get(), 0, 0)), PQgetvalue(r.get(), 0, 1)[0] == 't'};
  }

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
      std::vector<detail::pg::Param> q, n, p, pr, ma, ra, b, bi, to, uf, g;
      std::unordered_map<std::string, std::size_t> policy_index;  // backoff text -> 1-based index
      for (std::size_t k = i; k < end; ++k) {
        const auto& j = jobs[k];
        q.emplace_back(j.queue);
        n.emplace_back(j.name);
        p.emplace_back(payloads[k]);
        g.emplace_back(group_param(j));
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
      std::vector<detail::pg::Param> queues;
      std::unordered_set<std::string> seen;
      for (const auto& name : q) {
        if (seen.insert(*name).second) queues.push_back(name);
      }
      using detail::pg::text_array;
      auto r = exec(c, S::enqueue_batch,
                    {text_array(q), text_array(n), text_array(p), text_array(pr), text_array(ma),
                     text_array(ra), ms(t), text_array(b), text_array(bi), text_array(to),
                     text_array(uf), text_array(queues), text_array(g)});
      std::vector<JobId> ids;
      for (int row = 0; row < PQntuples(r.get()); ++row) ids.push_back(detail::pg::to_i64(PQgetvalue(r.get(), row, 0)));
      std::sort(ids.begin(), ids.end());
      for (auto id : ids) out.push_back({id, true});
      i = end;
    }
    return out;
  }

  // ------------------------------------------------------------------------------------------
  // Rows

  static std::optional<TimePoint> opt_time(const PGresult* r, int row, int col) {
    if (PQgetisnull(r, row, col)) return std::nullopt;
    return from_epoch_ms(detail::pg::to_i64(PQgetvalue(r, row, col)));
  }

  static JobRecord row_to_job(const PGresult* r, int row) {
    auto text = [&](int col) { return std::string(PQgetvalue(r, row, col), static_cast<std::size_t>(PQgetlength(r, row, col))); };
    auto i64 = [&](int col) { return detail::pg::to_i64(PQgetvalue(r, row, col)); };
    JobRecord j;
    j.id = i64(0);
    j.queue = text(1);
    j.name = text(2);
    j.payload = nlohmann::json::parse(text(3));
    j.state = job_state_from_string(text(4));
    j.priority = static_cast<int>(i64(5));
    j.attempts = static_cast<int>(i64(6));
    j.max_attempts = static_cast<int>(i64(7));
    j.run_at = from_epoch_ms(i64(8));
    j.created_at = from_epoch_ms(i64(9));
    j.finished_at = opt_time(r, row, 10);
    j.lease_until = opt_time(r, row, 11);
    j.lease_token = text(12);
    j.backoff = Backoff::from_json(nlohmann::json::parse(text(13)));
    j.timeout = Millis{i64(14)};
    j.unique_key = text(15);
    j.unique_for = Millis{i64(16)};
    if (!PQgetisnull(r, row, 17)) j.result = nlohmann::json::parse(text(17));
    j.errors = errors_from_json(nlohmann::json::parse(text(18)));
    j.progress = static_cast<int>(i64(19));
    j.progress_message = text(20);
    j.group = text(21);
    return j;
  }

  static std::vector<JobRecord> rows_to_jobs(const PGresult* r) {
    std::vector<JobRecord> out;
    out.reserve(static_cast<std::size_t>(PQntuples(r)));
    for (int row = 0; row < PQntuples(r); ++row) out.push_back(row_to_job(r, row));
    return out;
  }

  static FailOutcome outcome_of(std::string_view state) {
    return state == "dead" ? FailOutcome::dead : FailOutcome::retried;
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
      auto r = exec(c, S::release_tokens, {detail::pg::text_array(tokens), ms(now())});
      claims_undone_ += static_cast<std::uint64_t>(PQntuples(r.get()));
      if (PQntuples(r.get()) > 0) wake_local();
    } catch (...) {
      remember_pending_release(tokens);  // idempotent: try again next time
      throw;
    }
  }

  // ------------------------------------------------------------------------------------------
  // Waiting internals

  void wake_local() {
    {
      std::lock_guard lock(wake_mutex_);
      generation_.fetch_add(1);
    }
    wake_cv_.notify_all();
    poke_wake_pipe();
  }

  // A self-pipe in the LISTEN owner's poll(): a local wake-up (an enqueue in this process) or a
  // stop request ends its wait at once instead of at the next 100 ms check. Without the pipe
  // (it could not be made) those are seen within 100 ms, as before.
  void open_wake_pipe() {
    int fds[2];
    if (::pipe(fds) != 0) return;
    for (int fd : fds) {
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
      ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    wake_pipe_[0] = fds[0];
    wake_pipe_[1] = fds[1];
  }

  void poke_wake_pipe() noexcept {
    if (wake_pipe_[1] < 0) return;
    const char byte = 1;
    [[maybe_unused]] const auto n = ::write(wake_pipe_[1], &byte, 1);  // full pipe: already poked
  }

  void drain_wake_pipe() noexcept {
    if (wake_pipe_[0] < 0) return;
    char buf[64];
    while (::read(wake_pipe_[0], buf, sizeof buf) > 0) {
    }
  }

  bool ready_now(std::span<const std::string> queues) {
    std::vector<detail::pg::Param> qs;
    for (const auto& q : queues) {
      validate_queue_name(q);
      qs.emplace_back(q);
    }
    try {
      auto lease = acquire();
      return PQntuples(exec(*lease, S::ready, {detail::pg::text_array(qs), ms(now())}).get()) > 0;
    } catch (const Error&) {
      throw;
    } catch (...) {
      return true;  // cannot tell: let the caller's claim report the problem
    }
  }

  // Holds listen_mutex_.
  void listen_wait(std::span<const std::string> queues, std::chrono::steady_clock::time_point deadline,
                   const std::stop_token& stop, std::uint64_t generation) {
    if (!listen_conn_) {
      try {
        auto c = connect();
        detail::pg::Result r{PQexec(c.get(), ("LISTEN " + detail::pg::quote_ident(channel_)).c_str())};
        if (!r || PQresultStatus(r.get()) != PGRES_COMMAND_OK) throw detail::pg::Lost{false, "LISTEN failed"};
        listen_conn_ = std::move(c);
      } catch (const detail::pg::Lost&) {
        // Server away: sleep out this wait (a short one) rather than spin; claims report it.
        sleep_until(deadline, stop, generation);
        return;
      }
    }
    PGconn* pg = listen_conn_.get();
    auto drain = [&](bool* hit) {
      if (PQconsumeInput(pg) == 0 || PQstatus(pg) != CONNECTION_OK) return false;
      while (PGnotify* n = PQnotifies(pg)) {
        if (hit != nullptr && std::find(queues.begin(), queues.end(), std::string_view(n->extra)) != queues.end()) {
          *hit = true;
        }
        PQfreemem(n);
      }
      return true;
    };
    if (!drain(nullptr)) {
      listen_conn_.reset();
      return;
    }
    drain_wake_pipe();  // earlier pokes; the generation check below covers what they meant
    std::stop_callback on_stop(stop, [this] { poke_wake_pipe(); });
    // LISTEN is active before this check, so an enqueue after it is seen as a notification.
    if (ready_now(queues)) return;
    while (!stop.stop_requested() && generation_.load() == generation) {
      const auto left = std::chrono::duration_cast<Millis>(deadline - std::chrono::steady_clock::now());
      if (left <= Millis{0}) return;
      pollfd p[2] = {{PQsocket(pg), POLLIN, 0}, {wake_pipe_[0], POLLIN, 0}};
      // At most 100 ms per poll, in case the wake-up pipe is missing.
      if (::poll(p, 2, static_cast<int>(std::min<Millis::rep>(left.count(), 100))) > 0) {
        if (p[1].revents != 0) drain_wake_pipe();
        if (p[0].revents == 0) continue;
        bool hit = false;
        if (!drain(&hit)) {
          listen_conn_.reset();
          return;
        }
        if (hit) {
          wake_local();  // threads waiting on the condition variable go too
          return;
        }
      }
    }
  }

  // ------------------------------------------------------------------------------------------
  // Notice listener: one connection and thread per backend object, started by the first
  // subscribe, stopped by the destructor. It LISTENs on the events channel, registers in
  // event_listeners (so statements start sending notices), and hands what arrives to hub_.

  void start_listener() {
    std::unique_lock lock(ev_mutex_);
    if (!ev_started_) {
      int fds[2];
      if (::pipe(fds) == 0) {
        for (int fd : fds) {
          ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
          ::fcntl(fd, F_SETFD, FD_CLOEXEC);
        }
        ev_pipe_[0] = fds[0];
        ev_pipe_[1] = fds[1];
      }
      ev_started_ = true;
      ev_thread_ = std::thread([this] { listener_loop(); });
    }
    if (!ev_cv_.wait_for(lock, opt_.reconnect_give_up, [&] { return ev_listening_; })) {
      throw PostgresError(ErrorCategory::connection,
                          "postgres: subscribe: cannot listen for job notices on " + target_ +
                              " within " + std::to_string(opt_.reconnect_give_up.count()) +
                              " ms: " + ev_error_,
                          "08006");
    }
  }

  void stop_listener() noexcept {
    {
      std::lock_guard lock(ev_mutex_);
      if (!ev_started_) return;
      ev_stop_ = true;
    }
    ev_cv_.notify_all();
    if (ev_pipe_[1] >= 0) {
      const char byte = 1;
      [[maybe_unused]] const auto n = ::write(ev_pipe_[1], &byte, 1);
    }
    if (ev_thread_.joinable()) ev_thread_.join();
    for (int& fd : ev_pipe_) {
      if (fd >= 0) ::close(fd);
      fd = -1;
    }
  }

  bool listener_stopping() {
    std::lock_guard lock(ev_mutex_);
    return ev_stop_;
  }

  detail::pg::ConnPtr listener_connect() {
    auto c = connect();
    CallerConn cc{c.get()};
    exec_sql(cc, "LISTEN " + detail::pg::quote_ident(events_channel_), {});
    exec_sql(cc,
             "DELETE FROM " + schema_q_ + ".event_listeners e"
             " WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = e.pid)",
             {});
    exec_sql(cc, "INSERT INTO " + schema_q_ + ".event_listeners (pid) VALUES (pg_backend_pid())"
                 " ON CONFLICT DO NOTHING", {});
    return c;
  }

  void listener_loop() {
    detail::pg::ConnPtr conn;
    auto delay = opt_.reconnect_backoff_min;
    while (!listener_stopping()) {
      if (!conn) {
        std::string error;
        try {
          conn = listener_connect();
        } catch (const detail::pg::Lost& lost) {
          error = lost.message;
        } catch (const std::exception& e) {
          error = e.what();
        }
        std::unique_lock lock(ev_mutex_);
        if (conn) {
          ev_listening_ = true;
          ev_error_.clear();
          delay = opt_.reconnect_backoff_min;
          ev_cv_.notify_all();
          continue;
        }
        ev_error_ = error;
        ev_cv_.wait_for(lock, delay, [&] { return ev_stop_; });
        delay = std::min(delay * 2, opt_.reconnect_backoff_max);
        continue;
      }
      pollfd p[2] = {{PQsocket(conn.get()), POLLIN, 0}, {ev_pipe_[0], POLLIN, 0}};
      if (::poll(p, ev_pipe_[0] >= 0 ? 2 : 1, 1000) <= 0) continue;
      if (ev_pipe_[0] >= 0 && p[1].revents != 0) {
        char buf[16];
        while (::read(ev_pipe_[0], buf, sizeof buf) > 0) {
        }
      }
      if (p[0].revents == 0) continue;
      if (PQconsumeInput(conn.get()) == 0 || PQstatus(conn.get()) != CONNECTION_OK) {
        // Lost: notices until the reconnect are lost too (best effort, Backend::subscribe).
        conn.reset();
        std::lock_guard lock(ev_mutex_);
        ev_listening_ = false;
        ev_error_ = "the listener connection was lost";
        continue;
      }
      std::vector<JobNotice> got;
      while (PGnotify* n = PQnotifies(conn.get())) {
        try {
          for (const auto& item : nlohmann::json::parse(n->extra)) got.push_back(job_notice_from_json(item));
        } catch (const std::exception&) {
          // Not ours (someone NOTIFYing on our channel): ignored.
        }
        PQfreemem(n);
      }
      hub_.publish(got);
    }
    if (conn) {
      // Best effort: a row left behind only makes statements send notices nobody reads.
      detail::pg::Result r{PQexec(conn.get(), ("DELETE FROM " + schema_q_ +
                                               ".event_listeners WHERE pid = pg_backend_pid()").c_str())};
    }
  }

  void sleep_until(std::chrono::steady_clock::time_point deadline, const std::stop_token& stop,
                   std::uint64_t generation) {
    std::unique_lock lock(wake_mutex_);
    while (!stop.stop_requested() && generation_.load() == generation) {
      const auto left = deadline - std::chrono::steady_clock::now();
      if (left <= std::chrono::steady_clock::duration::zero()) return;
      wake_cv_.wait_for(lock, std::min<std::chrono::steady_clock::duration>(left, Millis{100}));
    }
  }

  std::string conninfo_;
  PostgresOptions opt_;
  std::string target_;
  std::string schema_q_;
  std::string channel_;
  std::string events_channel_;
  std::vector<std::string> sql_;
  std::vector<std::string> names_;

  std::mutex pool_mutex_;
  std::condition_variable pool_cv_;
  std::vector<std::unique_ptr<Conn>> idle_;
  std::size_t open_ = 0;

  std::mutex pending_mutex_;
  std::vector<detail::pg::Param> pending_release_;

  std::mutex listen_mutex_;
  detail::pg::ConnPtr listen_conn_;
  std::mutex wake_mutex_;
  std::condition_variable wake_cv_;
  std::atomic<std::uint64_t> generation_{0};
  int wake_pipe_[2] = {-1, -1};

  NoticeHub hub_;
  std::mutex ev_mutex_;
  std::condition_variable ev_cv_;
  std::thread ev_thread_;
  bool ev_started_ = false;
  bool ev_stop_ = false;
  bool ev_listening_ = false;
  std::string ev_error_;
  int ev_pipe_[2] = {-1, -1};

  std::atomic<std::uint64_t> retries_{0};
  std::atomic<std::uint64_t> unknown_outcomes_{0};
  std::atomic<std::uint64_t> claims_undone_{0};
  std::mutex unanswered_mutex_;
  std::unordered_set<std::string> unanswered_;  // see outcome_retry
};

static_assert(Backend<PostgresBackend>);

}  // namespace jobq
