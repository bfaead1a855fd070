#pragma once
// jobq's Redis backend: every state change is one Lua script (EVALSHA); the keys of a queue
// share the hash tag {queue}. See backends/redis/README.md for the key layout and guarantees,
// and jobq/redis_scripts.hpp for the scripts.

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
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

#include "jobq/backend.hpp"
#include "jobq/redis_scripts.hpp"
#include "jobq/url.hpp"

namespace jobq {

/// @brief An error from the Redis backend; keeps the server's reply text when there was one.
class RedisError : public Error {
 public:
  /// @brief An error of a category, with a message and the Redis reply (may be empty).
  RedisError(ErrorCategory category, const std::string& message, std::string reply = {})
      : Error(category, message), reply_(std::move(reply)) {}

  /// @brief The error reply Redis sent (e.g. "WRONGPASS ..."), or empty for I/O failures.
  [[nodiscard]] const std::string& reply() const noexcept { return reply_; }

 private:
  std::string reply_;
};

/// @brief Options of the Redis backend.
struct RedisOptions {
  ClockFn clock = system_clock();        ///< where time comes from (tests pass a ManualClock)
  std::string prefix = "jobq";           ///< first part of every key; tests use a unique one
  std::size_t pool_size = 8;             ///< command connections at most (blocking waits use own ones)
  Millis connect_timeout{2'000};         ///< TCP connect limit per attempt
  Millis command_timeout{10'000};        ///< limit on one command's reply
  Millis reconnect_window{5'000};        ///< how long a call keeps reconnecting before it throws
  /// Finished jobs older than this are deleted automatically (nullopt: never by age). Default:
  /// completed 24 h, dead 7 days, cancelled 24 h.
  std::optional<Retention> retention = Retention{};
  std::size_t retention_max_jobs = 100'000;  ///< at most this many per finished state and queue; 0 = no cap
  Millis prune_interval{60'000};         ///< automatic prune of a queue at most this often (backend clock)
  std::size_t id_block = 64;             ///< job ids reserved per round trip to the id counter
  std::size_t max_payload_bytes = default_max_payload_bytes;  ///< larger serialized payloads are refused
};

/// @brief A reply of RedisBackend::command.
struct RedisReply {
  /// @brief The RESP2 reply kinds (errors are thrown, never returned).
  enum class Type { nil, string, status, integer, array };
  Type type = Type::nil;             ///< kind of reply
  std::string str;                   ///< string / status text
  long long integer = 0;             ///< integer value
  std::vector<RedisReply> elements;  ///< array elements
};

namespace detail::redis {

/// @brief One command: its name and arguments, binary-safe.
using Args = std::vector<std::string>;

/// @brief A parsed redis:// URL.
struct Url {
  std::string host = "127.0.0.1";  ///< host name or address
  int port = 6379;                 ///< TCP port
  std::string user;                ///< ACL user (empty: AUTH with the password only)
  std::string password;            ///< empty: no AUTH
  int db = 0;                      ///< database for SELECT
  std::string masked;              ///< the URL with the password replaced by ***, for messages
};

/// @brief Decodes %XX escapes of a URL part; throws InvalidArgument on a bad escape.
inline std::string percent_decode(std::string_view s, const std::string& masked) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    unsigned v = 0;
    if (i + 2 >= s.size() ||
        std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16).ptr != s.data() + i + 3) {
      throw InvalidArgument("redis URL '" + masked + "' has a bad %-escape");
    }
    out += static_cast<char>(v);
    i += 2;
  }
  return out;
}

/// @brief A decimal in [lo, hi]; throws InvalidArgument naming `what` (not quoting `s`, which
/// may hold a password: `redis://h/0&password=x`; the masked URL shows it).
inline int parse_int(std::string_view s, int lo, int hi, const char* what, const std::string& masked) {
  int v = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size() || v < lo || v > hi) {
    throw InvalidArgument("redis URL '" + masked + "' has an invalid " + what + " (expected " + std::to_string(lo) +
                          ".." + std::to_string(hi) + ")");
  }
  return v;
}

/// @brief Parses redis://[[user]:password@]host[:port][/db]; throws InvalidArgument.
inline Url parse_url(std::string_view url) {
  Url u;
  u.masked = mask_url(url);
  constexpr std::string_view scheme = "redis://";
  if (url.substr(0, scheme.size()) != scheme) {
    if (url.substr(0, 9) == "rediss://") {
      throw InvalidArgument("redis URL '" + u.masked + "': TLS (rediss://) is not supported");
    }
    throw InvalidArgument("redis URL '" + u.masked +
                          "' is malformed: expected redis://[user:password@]host:port/db");
  }
  auto rest = url.substr(scheme.size());
  // The userinfo runs to the last '@', as jobq::mask_url reads it: a password may hold '/',
  // '?', '#' or '@' unencoded (base64 ones hold '/'); a host, port or database number none.
  if (const auto at = rest.rfind('@'); at != std::string_view::npos) {
    const auto userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    const auto colon = userinfo.find(':');
    if (colon == std::string_view::npos) {
      u.user = percent_decode(userinfo, u.masked);
    } else {
      u.user = percent_decode(userinfo.substr(0, colon), u.masked);
      u.password = percent_decode(userinfo.substr(colon + 1), u.masked);
    }
  }
  if (rest.find_first_of("?#") != std::string_view::npos) {
    throw InvalidArgument("redis URL '" + u.masked + "' has query or fragment parts, which are not supported");
  }
  const auto slash = rest.find('/');
  const auto authority = rest.substr(0, slash);
  const auto path = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
  std::string_view host = authority;
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {  // [IPv6]:port
    const auto close = authority.find(']');
    if (close == std::string_view::npos) throw InvalidArgument("redis URL '" + u.masked + "' has an unclosed '['");
    host = authority.substr(1, close - 1);
    const auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') throw InvalidArgument("redis URL '" + u.masked + "' is malformed after ']'");
      port = after.substr(1);
      if (port.empty()) throw InvalidArgument("redis URL '" + u.masked + "' has an empty port");
    }
  } else if (const auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
    if (port.empty()) throw InvalidArgument("redis URL '" + u.masked + "' has an empty port");
  }
  if (host.empty()) throw InvalidArgument("redis URL '" + u.masked + "' has no host");
  for (char c : host) {
    if (c == '/' || c == '@' || c == ' ' || static_cast<unsigned char>(c) < 0x21) {
      throw InvalidArgument("redis URL '" + u.masked + "' has an invalid host");
    }
  }
  u.host = std::string(host);
  if (!port.empty()) u.port = parse_int(port, 1, 65535, "port", u.masked);
  if (!path.empty()) u.db = parse_int(path, 0, 1'000'000, "database number", u.masked);
  return u;
}

/// @brief Frees a hiredis reply (for Reply).
struct ReplyFree {
  void operator()(redisReply* r) const noexcept {
    if (r != nullptr) freeReplyObject(r);
  }
};
/// @brief An owned hiredis reply.
using Reply = std::unique_ptr<redisReply, ReplyFree>;

/// @brief The string of a string, status or error reply.
inline std::string_view text(const redisReply* r) {
  return r->str == nullptr ? std::string_view{} : std::string_view(r->str, r->len);
}

/// @brief True for an error reply.
inline bool is_error(const Reply& r) { return r->type == REDIS_REPLY_ERROR; }

/// @brief Error replies that mean the command was not run and may be sent again later.
inline bool reply_is_transient(std::string_view reply) {
  const auto word = reply.substr(0, reply.find(' '));
  return word == "LOADING" || word == "BUSY" || word == "TRYAGAIN" || word == "MASTERDOWN" ||
         word == "CLUSTERDOWN" || word == "READONLY";
}

/// @brief The jobq error category of an error reply.
inline ErrorCategory reply_category(std::string_view reply) {
  const auto word = reply.substr(0, reply.find(' '));
  if (reply_is_transient(reply)) return ErrorCategory::connection;
  if (word == "NOAUTH" || word == "WRONGPASS" || word == "NOPERM") return ErrorCategory::invalid_argument;
  return ErrorCategory::backend;
}

/// @brief Thrown for transient error replies (LOADING, BUSY, ...): not executed, safe to resend.
class Rejected : public RedisError {
 public:
  using RedisError::RedisError;
};

/// @brief Throws the RedisError (or Rejected) for an error reply.
[[noreturn]] inline void throw_reply(const std::string& what, std::string_view reply) {
  std::string r(reply);
  if (reply_is_transient(reply)) throw Rejected(ErrorCategory::connection, "redis: " + what + ": " + r, r);
  throw RedisError(reply_category(reply), "redis: " + what + ": " + r, r);
}

/// @brief A duration as a timeval for hiredis (at least 1 ms).
inline timeval to_timeval(Millis d) {
  const auto ms = std::max<Millis::rep>(d.count(), 1);
  timeval tv{};
  tv.tv_sec = static_cast<decltype(tv.tv_sec)>(ms / 1000);
  tv.tv_usec = static_cast<decltype(tv.tv_usec)>((ms % 1000) * 1000);
  return tv;
}

/// @brief One hiredis connection (not thread-safe: used by one thread at a time via the pool).
class Connection {
 public:
  Connection(const Url& url, Millis connect_timeout, Millis command_timeout)
      : ctx_(redisConnectWithTimeout(url.host.c_str(), url.port, to_timeval(connect_timeout))),
        where_(url.masked) {
    if (!ctx_) throw RedisError(ErrorCategory::connection, "redis: cannot connect to " + where_ + ": out of memory");
    if (ctx_->err != 0) {
      throw RedisError(ErrorCategory::connection, "redis: cannot connect to " + where_ + ": " + ctx_->errstr);
    }
    set_timeout(command_timeout);
    std::vector<Args> init;
    if (!url.password.empty()) {
      init.push_back(url.user.empty() ? Args{"AUTH", url.password} : Args{"AUTH", url.user, url.password});
    }
    if (url.db != 0) init.push_back({"SELECT", std::to_string(url.db)});
    if (init.empty()) return;
    auto replies = pipeline(init);
    for (std::size_t i = 0; i < replies.size(); ++i) {
      if (is_error(replies[i])) {
        const std::string step = init[i][0] == "AUTH" ? "authentication" : "SELECT " + init[i][1];
        throw_reply(step + " failed on " + where_, text(replies[i].get()));
      }
    }
  }

  ~Connection() = default;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  /// @brief True once an I/O error or timeout left the connection unusable.
  [[nodiscard]] bool broken() const noexcept { return broken_; }

  /// @brief The socket (for shutdown() by a stop callback).
  [[nodiscard]] int fd() const noexcept { return ctx_->fd; }

  /// @brief False if the server closed the connection while it sat idle (Redis never sends
  /// unsolicited data to a plain connection, so anything readable means EOF or an error).
  [[nodiscard]] bool idle_ok() const noexcept {
    if (broken_) return false;
    pollfd p{ctx_->fd, POLLIN, 0};
    return ::poll(&p, 1, 0) == 0;
  }

  /// @brief Sets the send/receive timeout of the socket.
  void set_timeout(Millis t) {
    if (redisSetTimeout(ctx_.get(), to_timeval(t)) != REDIS_OK) lost("setting a timeout");
  }

  /// @brief Sends every command, then reads one reply each (one round trip). Error replies
  /// are returned, I/O failures thrown (connection category).
  template <class Cmds>
  std::vector<Reply> pipeline(const Cmds& cmds) {
    if (broken_) throw RedisError(ErrorCategory::connection, "redis: connection to " + where_ + " is broken");
    // The request is formatted here and written in one loop: hiredis' own output buffer moves
    // its unsent rest to the front after every partial write, which is quadratic for the
    // megabyte pipelines of a bulk enqueue.
    out_.clear();
    for (const auto& c : cmds) append_command(out_, args_of(c));
    write_all(out_);
    std::vector<Reply> out;
    out.reserve(std::size(cmds));
    for (std::size_t i = 0; i < std::size(cmds); ++i) {
      void* r = nullptr;
      if (redisGetReply(ctx_.get(), &r) != REDIS_OK || r == nullptr) lost("waiting for a reply");
      out.emplace_back(static_cast<redisReply*>(r));
    }
    if (out_.capacity() > (std::size_t{1} << 20)) std::string().swap(out_);  // no large idle buffer
    return out;
  }

  /// @brief One command, one reply.
  Reply command(const Args& args) { return std::move(pipeline(std::span<const Args>(&args, 1)).front()); }

  /// @brief Sends one command without reading its reply (a subscribed connection's PING).
  void send_only(const Args& args) {
    out_.clear();
    append_command(out_, args);
    write_all(out_);
  }

  /// @brief Reads what the socket has (call when poll() says readable) and returns every
  /// complete reply; throws (connection category) on EOF or an error.
  std::vector<Reply> read_available() {
    if (redisBufferRead(ctx_.get()) != REDIS_OK) lost("reading");
    std::vector<Reply> out;
    for (;;) {
      void* r = nullptr;
      if (redisGetReplyFromReader(ctx_.get(), &r) != REDIS_OK) lost("parsing a reply");
      if (r == nullptr) break;
      out.emplace_back(static_cast<redisReply*>(r));
    }
    return out;
  }

 private:
  static const Args& args_of(const Args& a) { return a; }
  template <class C>
  static const Args& args_of(const C& c) { return c.args; }

  // RESP: *<n> then $<len> <bytes> per argument.
  static void append_command(std::string& out, const Args& args) {
    const auto num = [&](char tag, std::size_t n) {
      char buf[24];
      const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, n);
      (void)ec;
      out += tag;
      out.append(buf, end);
      out += "\r\n";
    };
    num('*', args.size());
    for (const auto& a : args) {
      num('$', a.size());
      out += a;
      out += "\r\n";
    }
  }

  void write_all(std::string_view data) {
    while (!data.empty()) {
      const auto n = ::send(ctx_->fd, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        broken_ = true;
        const std::string why = errno == EAGAIN || errno == EWOULDBLOCK ? "timed out" : std::strerror(errno);
        throw RedisError(ErrorCategory::connection, "redis: connection to " + where_ + " lost while sending a command: " + why);
      }
      data.remove_prefix(static_cast<std::size_t>(n));
    }
  }

  [[noreturn]] void lost(const char* what) {
    broken_ = true;
    const std::string why = ctx_->errstr[0] != '\0' ? ctx_->errstr : "I/O error";
    throw RedisError(ErrorCategory::connection, "redis: connection to " + where_ + " lost while " + what + ": " + why);
  }

  struct ContextFree {
    void operator()(redisContext* c) const noexcept { redisFree(c); }
  };
  std::unique_ptr<redisContext, ContextFree> ctx_;
  std::string where_;
  bool broken_ = false;
  std::string out_;  // the request being sent, reused
};

/// @brief A hiredis reply as a RedisReply.
inline RedisReply to_public(const redisReply* r) {
  RedisReply out;
  switch (r->type) {
    case REDIS_REPLY_STRING: out.type = RedisReply::Type::string; out.str = std::string(text(r)); break;
    case REDIS_REPLY_STATUS: out.type = RedisReply::Type::status; out.str = std::string(text(r)); break;
    case REDIS_REPLY_INTEGER: out.type = RedisReply::Type::integer; out.integer = r->integer; break;
    case REDIS_REPLY_ARRAY:
      out.type = RedisReply::Type::array;
      for (std::size_t i = 0; i < r->elements; ++i) out.elements.push_back(to_public(r->element[i]));
      break;
    default: break;
  }
  return out;
}

/// @brief A whole decimal string as int64; throws std::invalid_argument otherwise.
inline std::int64_t to_i64(std::string_view s) {
  std::int64_t v = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size()) {
    throw std::invalid_argument("'" + std::string(s) + "' is not an integer");
  }
  return v;
}

/// @brief A whole decimal string as int; throws when malformed or out of range.
inline int to_int(std::string_view s) {
  const auto v = to_i64(s);
  if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max()) {
    throw std::out_of_range("'" + std::string(s) + "' is out of range");
  }
  return static_cast<int>(v);
}

/// @brief An integer reply, or a decimal string reply, as int64 (throws on anything else).
inline std::int64_t reply_int(const redisReply* r, const std::string& what) {
  if (r->type == REDIS_REPLY_INTEGER) return r->integer;
  if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) {
    try {
      return to_i64(text(r));
    } catch (const std::exception&) {
    }
  }
  throw RedisError(ErrorCategory::backend, "redis: unexpected reply to " + what);
}

/// @brief The ready-set member of a job: hex16(run_at clamped to [0, 4e18]) hex14(id), as the
/// scripts' rank() makes it.
inline std::string rank(std::int64_t run_at, JobId id) {
  const auto at = std::clamp<std::int64_t>(run_at, 0, 4'000'000'000'000'000'000LL);
  char buf[40];
  const int n = std::snprintf(buf, sizeof buf, "%016llx%014llx", static_cast<unsigned long long>(at),
                              static_cast<unsigned long long>(id));
  return std::string(buf, static_cast<std::size_t>(n));
}

/// @brief Text as valid UTF-8 (invalid bytes become U+FFFD): error and progress messages are
/// stored inside JSON documents, which must be UTF-8.
inline std::string valid_utf8(const std::string& s) {
  const auto quoted = nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return nlohmann::json::parse(quoted).get<std::string>();
}

}  // namespace detail::redis

/// @brief Backend on Redis (>= 6.2; tested with 7.0) through hiredis: jobs live in hashes and
/// sorted sets under `<prefix>:{<queue>}:…`, every state change is one Lua script, workers
/// wait on a wake-up list with BLPOP. Share one object between all threads of a process.
class RedisBackend {
 public:
  /// @brief Connects to `url` (redis://[user:password@]host:port/db). Throws InvalidArgument
  /// for a malformed URL or bad options, RedisError for an unreachable server or a wrong password.
  explicit RedisBackend(std::string url, RedisOptions options = {})
      : url_(detail::redis::parse_url(url)), opt_(std::move(options)) {
    if (!opt_.clock) throw InvalidArgument("redis: options.clock is empty");
    if (opt_.prefix.empty() || opt_.prefix.find_first_of("{} ") != std::string::npos) {
      throw InvalidArgument("redis: key prefix '" + opt_.prefix +
                            "' is invalid: it must be non-empty, without spaces or braces");
    }
    if (opt_.pool_size == 0) throw InvalidArgument("redis: pool_size must be at least 1");
    if (opt_.id_block == 0) opt_.id_block = 1;
    ignore_sigpipe();
    auto first = std::make_unique<detail::redis::Connection>(url_, opt_.connect_timeout, opt_.command_timeout);
    load_scripts(*first, true);
    check_format(*first);
    std::lock_guard lock(pool_mutex_);
    idle_.push_back(std::move(first));
    open_ = 1;
  }

  /// @brief Stops the notice listener (if subscribe started it). Subscriptions must end first.
  ~RedisBackend() { stop_listener(); }

  RedisBackend(const RedisBackend&) = delete;
  RedisBackend& operator=(const RedisBackend&) = delete;

  /// @brief The store format this backend writes (the `<prefix>:version` key). Format 2 (jobq
  /// #7: groups, limits, schedules) reads format-1 stores as they are: no data is rewritten.
  static constexpr int format_version = 2;

  /// @brief The backend's clock.
  [[nodiscard]] TimePoint now() const { return opt_.clock(); }

  /// @brief The URL connected to, password masked.
  [[nodiscard]] const std::string& url() const noexcept { return url_.masked; }

  /// @brief The key prefix.
  [[nodiscard]] const std::string& prefix() const noexcept { return opt_.prefix; }

  /// @brief Stores a job (or returns the holder of its unique key).
  EnqueueResult enqueue(const NewJob& job) { return enqueue_many(std::span<const NewJob>(&job, 1)).front(); }

  /// @brief Stores many jobs in one script call: all or nothing.
  std::vector<EnqueueResult> enqueue_many(std::span<const NewJob> jobs) {
    if (jobs.empty()) return {};
    return enqueue_impl(jobs, {}, {}).second;
  }

 private:
  // enqueue_many, and fire_schedule when `cas` ("name expected next") is set: then the script
  // first compares-and-sets the schedule (`schedule_key`) and enqueues only if that succeeded.
  // Returns (fired, results); plain enqueues always "fire".
  std::pair<bool, std::vector<EnqueueResult>> enqueue_impl(std::span<const NewJob> jobs, const std::string& cas,
                                                           const std::string& schedule_key) {
    std::vector<std::string> queues;
    std::unordered_map<std::string, std::size_t> qindex;
    std::vector<std::string> payloads;
    payloads.reserve(jobs.size());
    for (const auto& j : jobs) {
      validate(j);
      if (qindex.emplace(j.queue, queues.size()).second) queues.push_back(j.queue);
      payloads.push_back(j.payload.dump());  // validate(j) ran check_json: no throw, no second walk
      check_payload_size(payloads.back().size(), opt_.max_payload_bytes);
    }
    const auto ids = allocate_ids(jobs.size());
    const auto t = to_epoch_ms(now());

    Args keys;
    for (const auto& q : queues) append_queue_keys(keys, q, Script::enqueue);
    if (!cas.empty()) keys.push_back(schedule_key);
    Args argv;
    argv.reserve(4 + jobs.size() * 10);
    argv.push_back(std::to_string(t));
    const auto nonce = detail::new_lease_token();
    argv.push_back(nonce);
    argv.push_back(cas);
    // The narrow layout (6 arguments per job instead of 10) when the wide-only fields are all
    // empty: one queue, no unique keys, groups, throttle or debounce.
    const bool wide = queues.size() > 1 || std::any_of(jobs.begin(), jobs.end(), [](const NewJob& j) {
                        return !j.unique_key.empty() || !j.group.empty() || j.debounce.count() > 0 || j.throttle.count() > 0;
                      });
    argv.push_back(wide ? "1" : "");
    Args mapping{"HSET", global_key("jobqueue")};
    for (std::size_t i = 0; i < jobs.size(); ++i) {
      const auto& j = jobs[i];
      const auto run_at = j.debounce.count() > 0 ? t + j.debounce.count() : j.run_at ? to_epoch_ms(*j.run_at) : t;
      // The index entries and the state entry are formatted here, so the script only files them.
      const bool due = run_at <= t;
      const auto member = detail::redis::rank(run_at, ids[i]);
      if (wide) argv.push_back(std::to_string(qindex[j.queue] + 1));
      argv.push_back(std::to_string(ids[i]));
      argv.push_back(due ? "r" : "d");
      argv.push_back(due ? std::to_string(-static_cast<std::int64_t>(j.priority)) : std::to_string(run_at));
      argv.push_back(due ? member : member + std::to_string(j.priority));
      argv.push_back("queued 0 " + std::to_string(j.max_attempts) + ' ' + std::to_string(j.priority) + ' ' +
                     std::to_string(run_at) + " - - " +
                     (j.unique_key.empty() ? std::string("-") : std::to_string(j.unique_for.count())) + " - - -");
      argv.push_back(make_doc(j, ids[i], t, payloads[i], j.backoff.to_json().dump(), nonce));
      if (wide) {
        argv.push_back(j.unique_key);
        argv.push_back(j.group);
        argv.push_back(j.debounce.count() > 0   ? "d" + std::to_string(j.debounce.count())
                       : j.throttle.count() > 0 ? "t" + std::to_string(j.throttle.count())
                                                : std::string());
      }
      mapping.push_back(std::to_string(ids[i]));
      mapping.push_back(j.queue);
    }
    std::vector<Cmd> cmds;
    // The id -> queue mapping goes first: once the script has run, the job is claimable and
    // complete(id) on another process must find its queue.
    if (!jobs.empty()) cmds.push_back({std::move(mapping), std::nullopt});
    if (auto fresh = unregistered(queues); !fresh.empty()) {
      Args sadd{"SADD", global_key("queues")};
      sadd.insert(sadd.end(), fresh.begin(), fresh.end());
      cmds.push_back({std::move(sadd), std::nullopt});
    }
    cmds.push_back({script_args(Script::enqueue, keys, std::move(argv)), Script::enqueue});

    const auto reply = run(true, [&](Connection& c, bool) {
      auto rs = exec(c, cmds);
      for (std::size_t i = 0; i + 1 < rs.size(); ++i) {
        if (detail::redis::is_error(rs[i])) detail::redis::throw_reply("enqueue failed", text(rs[i].get()));
      }
      return std::move(rs.back());
    });
    const char* what = cas.empty() ? "enqueue" : "fire_schedule";
    expect_ok(reply, what);
    const std::size_t extra = cas.empty() ? 0 : 1;
    if (reply->type != REDIS_REPLY_ARRAY) throw RedisError(ErrorCategory::backend, std::string("redis: unexpected reply to ") + what);
    if (!cas.empty() && reply->elements == 1 && detail::redis::reply_int(reply->element[0], what) == 0) {
      if (jobs.empty()) return {false, {}};
      Args unused{"HDEL", global_key("jobqueue")};
      for (auto id : ids) unused.push_back(std::to_string(id));
      try {  // the ids the lost race did not use; a leftover entry is harmless
        run(true, [&](Connection& c, bool) { return c.command(unused); });
      } catch (const std::exception&) {
      }
      return {false, {}};
    }
    if (reply->elements != jobs.size() * 2 + extra) {
      throw RedisError(ErrorCategory::backend, std::string("redis: unexpected reply to ") + what);
    }
    std::vector<EnqueueResult> out;
    out.reserve(jobs.size());
    Args unused{"HDEL", global_key("jobqueue")};
    for (std::size_t i = 0; i < jobs.size(); ++i) {
      const JobId id = detail::redis::reply_int(reply->element[2 * i], "enqueue");
      const bool created = detail::redis::reply_int(reply->element[2 * i + 1], "enqueue") == 1;
      out.push_back({id, created});
      if (id != ids[i]) unused.push_back(std::to_string(ids[i]));
    }
    mark_registered(queues);
    {
      std::lock_guard lock(cache_mutex_);
      for (std::size_t i = 0; i < jobs.size(); ++i) {
        if (out[i].created) remember_locked(out[i].id, jobs[i].queue);
      }
    }
    if (unused.size() > 2) {
      try {  // ids a deduplicated enqueue did not use; a leftover entry is harmless
        run(true, [&](Connection& c, bool) { return c.command(unused); });
      } catch (const std::exception&) {
      }
    }
    return {true, std::move(out)};
  }

 public:

  /// @brief Leases up to req.limit (at most 1000) ready jobs, best first across the queues.
  std::vector<JobRecord> claim(const ClaimRequest& req) {
    const auto queues = claim_queues(req);
    if (req.limit == 0 || queues.empty()) return {};
    const auto limit = std::min<std::size_t>(req.limit, 1000);
    const auto lease = std::max<Millis::rep>(req.lease.count(), 0);
    Args keys;
    for (const auto& q : queues) append_queue_keys(keys, q, Script::claim);
    // A claim whose reply was lost may have leased jobs nobody will run: it is remembered (its
    // token seed and lease deadline identify its jobs) and undone, attempts not counted, before
    // the next claim on a new connection or recover_expired; then it is sent again afresh.
    const auto reply = run(true, [&](Connection& c, bool) {
      undo_lost_claims(c);
      const auto t = to_epoch_ms(now());
      LostClaim sent{queues, detail::new_lease_token(), std::to_string(t + lease)};
      Reply r;
      try {
        r = eval(c, Script::claim, keys, {std::to_string(t), std::to_string(limit), std::to_string(lease), sent.seed});
      } catch (const detail::redis::Rejected&) {
        throw;  // refused (LOADING, ...): not run
      } catch (const RedisError& e) {
        if (e.is_transient()) remember_lost_claim(std::move(sent));
        throw;
      }
      expect_ok(r, "claim");
      return r;
    });
    if (reply->type != REDIS_REPLY_ARRAY) throw RedisError(ErrorCategory::backend, "redis: unexpected reply to claim");
    if (reply->elements % 4 != 0) throw RedisError(ErrorCategory::backend, "redis: unexpected reply to claim");
    std::vector<JobRecord> out;
    out.reserve(reply->elements / 4);
    for (std::size_t i = 0; i < reply->elements; i += 4) {
      const auto* e = reply->element + i;
      out.push_back(parse_job(text(e[0]), text(e[1]), text(e[2]), {}, text(e[3]), {}));
    }
    {
      std::lock_guard lock(cache_mutex_);
      for (const auto& j : out) remember_locked(j.id, j.queue);
    }
    auto_prune(queues);
    return out;
  }

  /// @brief Records a success if the lease token is current.
  bool complete(JobId id, const std::string& token, const nlohmann::json& result) {
    const auto q = queue_of(id);
    if (!q) return false;
    const auto result_text = result_arg(result);
    const auto reply = run(true, [&](Connection& c, bool retry) {
      return eval(c, Script::complete, queue_keys(*q, Script::complete), {now_str(), retry ? "1" : "0", std::to_string(id), token, result_text});
    });
    expect_ok(reply, "complete");
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 1) {
      throw RedisError(ErrorCategory::backend, "redis: unexpected reply to complete");
    }
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
    struct Group {
      std::string queue;
      std::vector<std::size_t> which;
      Args argv;  // after now and the retry flag
    };
    std::vector<Group> groups;
    for (std::size_t i = 0; i < completions.size(); ++i) {
      if (!queues[i]) continue;
      auto g = std::find_if(groups.begin(), groups.end(), [&](const Group& x) { return x.queue == *queues[i]; });
      if (g == groups.end()) g = groups.insert(groups.end(), Group{*queues[i], {}, {}});
      g->which.push_back(i);
      g->argv.push_back(std::to_string(completions[i].id));
      g->argv.push_back(completions[i].lease_token);
      g->argv.push_back(result_arg(completions[i].result));
    }
    if (groups.empty()) return out;
    const auto replies = run(true, [&](Connection& c, bool retry) {
      std::vector<Cmd> cmds;
      const auto t = now_str();
      for (const auto& g : groups) {
        Args argv{t, retry ? "1" : "0"};
        argv.insert(argv.end(), g.argv.begin(), g.argv.end());
        cmds.push_back({script_args(Script::complete, queue_keys(g.queue, Script::complete), std::move(argv)), Script::complete});
      }
      return exec(c, cmds);
    });
    for (std::size_t k = 0; k < groups.size(); ++k) {
      expect_ok(replies[k], "complete_many");
      const auto* r = replies[k].get();
      if (r->type != REDIS_REPLY_ARRAY || r->elements != groups[k].which.size()) {
        throw RedisError(ErrorCategory::backend, "redis: unexpected reply to complete_many");
      }
      for (std::size_t j = 0; j < r->elements; ++j) {
        out[groups[k].which[j]] = detail::redis::reply_int(r->element[j], "complete_many") == 1;
      }
    }
    return out;
  }

  /// @brief Records a failed attempt: retry at f.retry_at, or dead.
  FailOutcome fail(const Failure& f) {
    const auto q = queue_of(f.id);
    if (!q) return FailOutcome::rejected;
    const auto message = detail::redis::valid_utf8(f.error);
    const auto retry_at = f.retry_at ? std::to_string(to_epoch_ms(*f.retry_at)) : std::string();
    const auto reply = run(true, [&](Connection& c, bool retry) {
      return eval(c, Script::fail, queue_keys(*q, Script::fail),
                  {std::to_string(f.id), f.lease_token, now_str(), message, retry_at, retry ? "1" : "0"});
    });
    expect_ok(reply, "fail");
    switch (detail::redis::reply_int(reply.get(), "fail")) {
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
    const auto reply = run(true, [&](Connection& c, bool) {
      return eval(c, Script::extend, queue_keys(*q, Script::extend),
                  {std::to_string(id), token, now_str(), std::to_string(std::max<Millis::rep>(lease.count(), 0))});
    });
    expect_ok(reply, "extend_lease");
    return detail::redis::reply_int(reply.get(), "extend_lease") == 1;
  }

  /// @brief Gives a leased job back without counting the attempt.
  bool release(JobId id, const std::string& token) {
    const auto q = queue_of(id);
    if (!q) return false;
    const auto reply = run(true, [&](Connection& c, bool retry) {
      return eval(c, Script::release, queue_keys(*q, Script::release), {std::to_string(id), token, now_str(), retry ? "1" : "0"});
    });
    expect_ok(reply, "release");
    return detail::redis::reply_int(reply.get(), "release") == 1;
  }

  /// @brief Records progress (clamped to 0..100) of an active job.
  bool set_progress(JobId id, const std::string& token, int percent, const std::string& message) {
    const auto q = queue_of(id);
    if (!q) return false;
    const auto msg = detail::redis::valid_utf8(message);
    const auto pct = std::to_string(std::clamp(percent, 0, 100));
    const auto reply = run(true, [&](Connection& c, bool) {
      return eval(c, Script::progress, queue_keys(*q, Script::progress), {std::to_string(id), token, pct, msg});
    });
    expect_ok(reply, "set_progress");
    return detail::redis::reply_int(reply.get(), "set_progress") == 1;
  }

  /// @brief Every queue this store has seen (the `<prefix>:queues` set), sorted by name.
  std::vector<std::string> queues() {
    const auto members = run(true, [&](Connection& c, bool) { return c.command({"SMEMBERS", global_key("queues")}); });
    expect_ok(members, "queues (SMEMBERS)");
    std::vector<std::string> out;
    for (std::size_t i = 0; i < members->elements; ++i) out.emplace_back(text(members->element[i]));
    std::sort(out.begin(), out.end());
    return out;
  }

  /// @brief Requeues (or kills, on the last attempt) every job whose lease has expired, in
  /// every queue this store has seen.
  Recovered recover_expired() {
    const auto members = run(true, [&](Connection& c, bool) {
      undo_lost_claims(c);  // before their leases can expire here
      return c.command({"SMEMBERS", global_key("queues")});
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
    while (!pending.empty()) {
      const auto replies = run(true, [&](Connection& c, bool) {
        std::vector<Cmd> cmds;
        const auto t = now_str();
        for (const auto& q : pending) {
          cmds.push_back({script_args(Script::recover, queue_keys(q, Script::recover),
                                      {t, std::to_string(batch), "lease expired (worker lost or too slow)"}),
                          Script::recover});
        }
        return exec(c, cmds);
      });
      std::vector<std::string> again;
      for (std::size_t i = 0; i < pending.size(); ++i) {
        expect_ok(replies[i], "recover_expired");
        const auto* r = replies[i].get();
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
          throw RedisError(ErrorCategory::backend, "redis: unexpected reply to recover_expired");
        }
        total.retried += static_cast<std::size_t>(detail::redis::reply_int(r->element[0], "recover_expired"));
        total.dead += static_cast<std::size_t>(detail::redis::reply_int(r->element[1], "recover_expired"));
        if (static_cast<std::size_t>(detail::redis::reply_int(r->element[2], "recover_expired")) == batch) {
          again.push_back(pending[i]);
        }
      }
      pending = std::move(again);
    }
    return total;
  }

  /// @brief The job, if it exists.
  std::optional<JobRecord> get(JobId id) {
    const auto q = queue_of(id);
    if (!q) return std::nullopt;
    const auto reply = run(true, [&](Connection& c, bool) {
      return eval(c, Script::fetch, queue_keys(*q, Script::fetch), {std::to_string(id)});
    });
    expect_ok(reply, "get");
    if (reply->type != REDIS_REPLY_ARRAY || (reply->elements != 0 && reply->elements != 5)) {
      throw RedisError(ErrorCategory::backend, "redis: unexpected reply to get");
    }
    if (reply->elements == 0) return std::nullopt;
    const auto* e = reply->element;
    return parse_job(text(e[0]), text(e[1]), text(e[2]), text(e[3]), text(e[4]), queue_base(*q));
  }

  /// @brief Cancels a queued job.
  bool cancel(JobId id) {
    const auto q = queue_of(id);
    if (!q) return false;
    const auto reply = run(false, [&](Connection& c, bool) {
      return eval(c, Script::cancel, queue_keys(*q, Script::cancel), {std::to_string(id), now_str()});
    });
    expect_ok(reply, "cancel");
    return detail::redis::reply_int(reply.get(), "cancel") == 1;
  }

  /// @brief Puts a dead job back in its queue with a fresh attempt budget.
  bool redrive(JobId id) {
    const auto q = queue_of(id);
    if (!q) return false;
    const auto reply = run(false, [&](Connection& c, bool) {
      return eval(c, Script::redrive, queue_keys(*q, Script::redrive), {std::to_string(id), now_str()});
    });
    expect_ok(reply, "redrive");
    return detail::redis::reply_int(reply.get(), "redrive") == 1;
  }

  /// @brief Stops claims from a queue.
  void pause(const std::string& queue) { pause_or_resume(queue, Script::pause); }

  /// @brief Restores claims from a queue (and wakes its waiting workers).
  void resume(const std::string& queue) { pause_or_resume(queue, Script::resume); }

  /// @brief Whether a queue is paused.
  bool is_paused(const std::string& queue) {
    validate_queue_name(queue);
    const auto reply = run(true, [&](Connection& c, bool) { return c.command({"EXISTS", queue_base(queue) + "paused"}); });
    expect_ok(reply, "is_paused");
    return detail::redis::reply_int(reply.get(), "is_paused") == 1;
  }

  /// @brief Jobs per state in a queue (exact).
  Counts counts(const std::string& queue) {
    validate_queue_name(queue);
    const auto reply = run(true, [&](Connection& c, bool) { return eval(c, Script::counts, queue_keys(queue, Script::counts), {}); });
    expect_ok(reply, "counts");
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 5) {
      throw RedisError(ErrorCategory::backend, "redis: unexpected reply to counts");
    }
    auto n = [&](std::size_t i) { return detail::redis::reply_int(reply->element[i], "counts"); };
    return Counts{n(0), n(1), n(2), n(3), n(4)};
  }

  /// @brief Deletes finished jobs older than the retention of their state.
  std::size_t prune(const std::string& queue, const Retention& retention) {
    validate_queue_name(queue);
    return prune_impl(queue, retention, 0);
  }

  /// @brief A page of a queue's jobs in one state, by id.
  std::vector<JobRecord> list(const std::string& queue, JobState state, Page page) {
    validate_queue_name(queue);
    if (page.limit == 0) return {};
    constexpr std::size_t max_index = std::size_t{1} << 52;  // exact in a Lua number
    const auto offset = std::min(page.offset, max_index);
    const auto limit = std::min(page.limit, max_index);
    const auto reply = run(true, [&](Connection& c, bool) {
      return eval(c, Script::list, queue_keys(queue, Script::list),
                  {std::string(to_string(state)), std::to_string(offset), std::to_string(limit)});
    });
    expect_ok(reply, "list");
    if (reply->elements % 5 != 0) throw RedisError(ErrorCategory::backend, "redis: unexpected reply to list");
    std::vector<JobRecord> out;
    for (std::size_t i = 0; i < reply->elements; i += 5) {
      const auto* e = reply->element + i;
      out.push_back(parse_job(text(e[0]), text(e[1]), text(e[2]), text(e[3]), text(e[4]), queue_base(queue)));
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
      append_queue_keys(keys, q, Script::peek);
      wake_keys.push_back(queue_base(q) + "wake");
    }
    auto conn = acquire_blocking();
    bool reusable = false;
    try {
      const auto peek = eval(*conn, Script::peek, keys, {now_str()});
      expect_ok(peek, "wait_for_work");
      const auto due = detail::redis::reply_int(peek.get(), "wait_for_work");
      auto wait = timeout;
      if (due == -1) {
        reusable = true;
      } else {
        if (due >= 0) wait = std::min(wait, Millis{std::max<std::int64_t>(due - to_epoch_ms(now()), 0)});
        if (wait > Millis{0}) {
          reusable = blocking_pop(*conn, wake_keys, wait, stop);
        } else {
          reusable = true;
        }
      }
    } catch (const RedisError&) {
      if (!stop.stop_requested()) {
        give_back_blocking(std::move(conn), false);
        throw;
      }
    }
    give_back_blocking(std::move(conn), reusable && !stop.stop_requested());
  }

  /// @brief Sets the limits every claim of the queue honours, in every process.
  void set_queue_limits(const std::string& queue, const QueueLimits& limits) {
    validate_queue_name(queue);
    validate(limits);
    Args argv{limits.rate ? std::to_string(limits.rate->max) : std::string(),
              limits.rate ? std::to_string(limits.rate->window.count()) : std::string(),
              std::to_string(limits.group_concurrency)};
    const auto reply = run(true, [&](Connection& c, bool) { return eval(c, Script::limits, queue_keys(queue, Script::limits), argv); });
    expect_ok(reply, "set_queue_limits");
  }

  /// @brief The limits of a queue (none by default).
  QueueLimits queue_limits(const std::string& queue) {
    validate_queue_name(queue);
    const auto reply = run(true, [&](Connection& c, bool) {
      return c.command({"HMGET", queue_base(queue) + "limits", "rate_max", "rate_window", "group_concurrency"});
    });
    expect_ok(reply, "queue_limits");
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3) {
      throw RedisError(ErrorCategory::backend, "redis: unexpected reply to queue_limits");
    }
    QueueLimits l;
    const auto* e = reply->element;
    try {
      if (e[0]->type == REDIS_REPLY_STRING && e[1]->type == REDIS_REPLY_STRING) {
        l.rate = RateLimit{detail::redis::to_i64(text(e[0])), Millis{detail::redis::to_i64(text(e[1]))}};
      }
      if (e[2]->type == REDIS_REPLY_STRING) l.group_concurrency = detail::redis::to_int(text(e[2]));
    } catch (const std::exception& ex) {
      throw RedisError(ErrorCategory::backend, "redis: " + queue_base(queue) + "limits is corrupted: " + ex.what());
    }
    return l;
  }

  /// @brief Inserts or replaces a schedule (`<prefix>:schedules`: name -> "next_run nonce spec").
  void put_schedule(const StoredSchedule& s) {
    validate_schedule_name(s.name);
    const auto value = std::to_string(to_epoch_ms(s.next_run)) + " - " + dump_for_storage(s.spec, "schedule spec");
    const auto reply = run(true, [&](Connection& c, bool) { return c.command({"HSET", global_key("schedules"), s.name, value}); });
    expect_ok(reply, "put_schedule");
  }

  /// @brief Removes a schedule; false if there was none.
  bool remove_schedule(const std::string& name) {
    validate_schedule_name(name);
    const auto reply = run(false, [&](Connection& c, bool) { return c.command({"HDEL", global_key("schedules"), name}); });
    expect_ok(reply, "remove_schedule");
    return detail::redis::reply_int(reply.get(), "remove_schedule") == 1;
  }

  /// @brief Every schedule, by name.
  std::vector<StoredSchedule> schedules() {
    const auto reply = run(true, [&](Connection& c, bool) { return c.command({"HGETALL", global_key("schedules")}); });
    expect_ok(reply, "schedules");
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements % 2 != 0) {
      throw RedisError(ErrorCategory::backend, "redis: unexpected reply to schedules");
    }
    std::vector<StoredSchedule> out;
    for (std::size_t i = 0; i < reply->elements; i += 2) {
      const std::string name(text(reply->element[i]));
      const auto v = text(reply->element[i + 1]);
      try {
        const auto sp1 = v.find(' ');
        const auto sp2 = sp1 == std::string_view::npos ? sp1 : v.find(' ', sp1 + 1);
        if (sp2 == std::string_view::npos) throw std::invalid_argument("not 'next_run nonce spec'");
        out.push_back({name, nlohmann::json::parse(v.substr(sp2 + 1)), from_epoch_ms(detail::redis::to_i64(v.substr(0, sp1)))});
      } catch (const std::exception& e) {
        throw RedisError(ErrorCategory::backend,
                         "redis: schedule '" + name + "' in " + global_key("schedules") + " is corrupted: " + e.what());
      }
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    return out;
  }

  /// @brief If the schedule's next_run is `expected`: sets it to `next` and enqueues `job` (if
  /// any), in one script; true if it did. With several schedulers exactly one wins each tick.
  bool fire_schedule(const std::string& name, TimePoint expected, TimePoint next, const std::optional<NewJob>& job) {
    validate_schedule_name(name);
    const auto cas = name + ' ' + std::to_string(to_epoch_ms(expected)) + ' ' + std::to_string(to_epoch_ms(next));
    if (job) return enqueue_impl(std::span<const NewJob>(&*job, 1), cas, global_key("schedules")).first;
    return enqueue_impl({}, cas, global_key("schedules")).first;
  }

  /// @brief Calls fn for every notice of `queues` (all when empty), from any process on this
  /// prefix, until the subscription ends. Returns once the listener's SUBSCRIBE is active.
  Subscription subscribe(std::span<const std::string> queues, NoticeFn fn) {
    auto sub = hub_.subscribe(queues, std::move(fn));
    start_listener();
    return sub;
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
    std::string pattern;
    for (char c : opt_.prefix) {
      if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') pattern += '\\';
      pattern += c;
    }
    pattern += ":*";
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
    {
      std::lock_guard lock(id_mutex_);
      next_id_ = id_end_;  // the counter is gone: reserve afresh
    }
    std::lock_guard lock(cache_mutex_);
    queue_of_.clear();
    queue_names_.clear();
    registered_.clear();
    return deleted;
  }

 private:
  using Connection = detail::redis::Connection;
  using Reply = detail::redis::Reply;
  using Args = detail::redis::Args;
  using Script = detail::redis::Script;

  struct Cmd {
    Args args;
    std::optional<Script> script;  // set for EVALSHA: resent after SCRIPT LOAD on NOSCRIPT
  };

  // --- store format ---------------------------------------------------------------------------

  // Format 1 (before jobq #7) had no version key and is a subset of format 2, so an absent key
  // is set to 2; a newer format is refused (its records may not parse here).
  void check_format(Connection& c) {
    const auto key = global_key("version");
    const std::vector<Args> cmds{{"SET", key, std::to_string(format_version), "NX"}, {"GET", key}};
    const auto replies = c.pipeline(cmds);
    for (const auto& r : replies) expect_ok(r, "reading the store format (" + key + ")");
    std::int64_t v = 0;
    try {
      v = detail::redis::to_i64(text(replies[1].get()));
    } catch (const std::exception&) {
      throw RedisError(ErrorCategory::backend, "redis: " + key + " is not a jobq store format version");
    }
    if (v > format_version) {
      throw RedisError(ErrorCategory::backend, "redis: the store under prefix '" + opt_.prefix + "' on " + url_.masked +
                                                   " has format " + std::to_string(v) + "; this jobq reads formats up to " +
                                                   std::to_string(format_version) + " (upgrade jobq)");
    }
  }

  // --- notices ------------------------------------------------------------------------------

  std::string events_channel() const { return opt_.prefix + ":events"; }

  // Starts the listener thread on first use; returns once its SUBSCRIBE is confirmed.
  void start_listener() {
    std::unique_lock lock(listen_mutex_);
    if (!listen_thread_.joinable()) {
      if (::pipe2(listen_pipe_.data(), O_CLOEXEC | O_NONBLOCK) != 0) {
        throw RedisError(ErrorCategory::backend, std::string("redis: cannot create the notice listener's pipe: ") + std::strerror(errno));
      }
      listen_thread_ = std::thread([this] { listen_loop(); });
    }
    const auto deadline = std::chrono::steady_clock::now() + opt_.reconnect_window + opt_.connect_timeout;
    if (!listen_cv_.wait_until(lock, deadline, [&] { return listen_active_; })) {
      throw RedisError(ErrorCategory::connection, "redis: cannot subscribe to " + events_channel() + " on " + url_.masked +
                                                      (listen_error_.empty() ? std::string() : ": " + listen_error_));
    }
  }

  void stop_listener() noexcept {
    listen_stop_ = true;
    if (listen_thread_.joinable()) {
      const char b = 'x';
      [[maybe_unused]] const auto n = ::write(listen_pipe_[1], &b, 1);
      listen_thread_.join();
    }
    for (int& fd : listen_pipe_) {
      if (fd >= 0) ::close(fd);
      fd = -1;
    }
  }

  // Sleeps up to `d`; false if stop was requested.
  bool listen_pause(Millis d) {
    pollfd p{listen_pipe_[0], POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(d.count()));
    return !listen_stop_;
  }

  // The listener: a connection of its own SUBSCRIBEd to the channel, reconnecting with backoff
  // after a loss (notices sent meanwhile are lost: delivery is best effort).
  void listen_loop() {
    Millis pause{25};
    while (!listen_stop_) {
      try {
        Connection c(url_, opt_.connect_timeout, opt_.command_timeout);
        c.command({"CLIENT", "SETNAME", "jobq-events:" + opt_.prefix});  // for CLIENT LIST; an error is fine
        const auto r = c.command({"SUBSCRIBE", events_channel()});
        if (detail::redis::is_error(r)) detail::redis::throw_reply("SUBSCRIBE " + events_channel(), text(r.get()));
        {
          std::lock_guard lock(listen_mutex_);
          listen_active_ = true;
          listen_error_.clear();
        }
        listen_cv_.notify_all();
        pause = Millis{25};
        listen_pump(c);
      } catch (const std::exception& e) {
        std::lock_guard lock(listen_mutex_);
        listen_active_ = false;
        listen_error_ = e.what();
      }
      if (listen_stop_ || !listen_pause(pause)) break;
      pause = std::min(pause * 2, Millis{1'000});
    }
    std::lock_guard lock(listen_mutex_);
    listen_active_ = false;
  }

  // Delivers what arrives until stop (returns) or a connection loss (throws). An idle
  // connection is checked with a PING every 30 s.
  void listen_pump(Connection& c) {
    constexpr Millis idle_ping{30'000};
    auto last = std::chrono::steady_clock::now();
    bool pinged = false;
    for (;;) {
      std::array<pollfd, 2> fds{pollfd{c.fd(), POLLIN, 0}, pollfd{listen_pipe_[0], POLLIN, 0}};
      const int n = ::poll(fds.data(), fds.size(), 1'000);
      if (n < 0 && errno != EINTR) throw RedisError(ErrorCategory::connection, std::string("redis: poll: ") + std::strerror(errno));
      if (listen_stop_) return;
      if (n > 0 && fds[0].revents != 0) {
        for (const auto& r : c.read_available()) deliver(r.get());
        last = std::chrono::steady_clock::now();
        pinged = false;
      } else if (const auto idle = std::chrono::steady_clock::now() - last; idle > idle_ping + opt_.command_timeout) {
        throw RedisError(ErrorCategory::connection, "redis: no reply to PING on the notice connection");
      } else if (idle > idle_ping && !pinged) {
        c.send_only({"PING"});
        pinged = true;
      }
    }
  }

  // A pub/sub message: ["message", channel, JSON array (or object) of notices].
  void deliver(const redisReply* r) {
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 || text(r->element[0]) != "message") return;
    std::vector<JobNotice> notices;
    try {
      const auto j = nlohmann::json::parse(text(r->element[2]));
      if (j.is_array()) {
        for (const auto& n : j) notices.push_back(job_notice_from_json(n));
      } else {
        notices.push_back(job_notice_from_json(j));
      }
    } catch (const std::exception&) {
      return;  // not from jobq: ignored
    }
    hub_.publish(notices);
  }

  // --- connections -------------------------------------------------------------------------

  static void ignore_sigpipe() {
    // hiredis writes with write(2): a server that closed the socket would kill the process with
    // SIGPIPE. Ignored only if the application has not installed a handler of its own.
    static std::once_flag once;
    std::call_once(once, [] {
      struct sigaction current {};
      if (::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
        std::signal(SIGPIPE, SIG_IGN);
      }
    });
  }

  std::unique_ptr<Connection> connect() {
    auto c = std::make_unique<Connection>(url_, opt_.connect_timeout, opt_.command_timeout);
    load_scripts(*c, false);
    return c;
  }

  // Loads every script on a new connection (one round trip): after a server restart the script
  // cache is empty, and new connections are made exactly then.
  void load_scripts(Connection& c, bool record) {
    std::vector<Args> cmds;
    for (std::size_t i = 0; i < detail::redis::script_count; ++i) {
      cmds.push_back({"SCRIPT", "LOAD", detail::redis::script_source(static_cast<Script>(i))});
    }
    auto replies = c.pipeline(cmds);
    for (std::size_t i = 0; i < replies.size(); ++i) {
      if (detail::redis::is_error(replies[i])) {
        detail::redis::throw_reply("loading the jobq scripts into " + url_.masked + " failed", text(replies[i].get()));
      }
      if (record) sha_[i] = std::string(text(replies[i].get()));
    }
  }

  std::unique_ptr<Connection> acquire() {
    std::unique_lock lock(pool_mutex_);
    for (;;) {
      while (!idle_.empty()) {
        auto c = std::move(idle_.back());
        idle_.pop_back();
        if (c->idle_ok()) return c;
        --open_;  // closed by the server (restart, timeout): dropped
      }
      if (open_ < opt_.pool_size) {
        ++open_;
        lock.unlock();
        try {
          return connect();
        } catch (...) {
          lock.lock();
          --open_;
          pool_cv_.notify_one();
          throw;
        }
      }
      pool_cv_.wait(lock);
    }
  }

  void give_back(std::unique_ptr<Connection> c) {
    {
      std::lock_guard lock(pool_mutex_);
      if (c->broken()) {
        --open_;
      } else {
        idle_.push_back(std::move(c));
      }
    }
    pool_cv_.notify_one();
  }

  std::unique_ptr<Connection> acquire_blocking() {
    {
      std::lock_guard lock(pool_mutex_);
      while (!idle_blocking_.empty()) {
        auto c = std::move(idle_blocking_.back());
        idle_blocking_.pop_back();
        if (c->idle_ok()) return c;
      }
    }
    return connect_retrying();
  }

  void give_back_blocking(std::unique_ptr<Connection> c, bool reusable) {
    if (!reusable || c->broken()) return;
    std::lock_guard lock(pool_mutex_);
    if (idle_blocking_.size() < opt_.pool_size) idle_blocking_.push_back(std::move(c));
  }

  std::unique_ptr<Connection> connect_retrying() {
    const auto deadline = std::chrono::steady_clock::now() + opt_.reconnect_window;
    Millis pause{25};
    for (;;) {
      try {
        return connect();
      } catch (const RedisError& e) {
        if (!e.is_transient() || std::chrono::steady_clock::now() + pause > deadline) throw;
      }
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, Millis{1'000});
    }
  }

  // BLPOP on the wake lists; a stop request shuts the socket down, which ends the wait at once.
  // Returns whether the connection can be reused.
  bool blocking_pop(Connection& conn, const Args& wake_keys, Millis wait, std::stop_token& stop) {
    Args cmd = wake_keys;
    const auto ms = std::max<Millis::rep>(wait.count(), 1);
    std::string secs = std::to_string(ms / 1000) + ".";
    const auto frac = std::to_string(ms % 1000);
    secs += std::string(3 - frac.size(), '0') + frac;
    cmd.push_back(std::move(secs));
    const int fd = conn.fd();
    std::mutex m;
    bool done = false;
    bool interrupted = false;
    std::stop_callback on_stop(stop, [&] {
      std::lock_guard lock(m);
      if (!done) {
        interrupted = true;
        ::shutdown(fd, SHUT_RDWR);
      }
    });
    conn.set_timeout(Millis{ms} + opt_.command_timeout);
    Reply reply;
    try {
      reply = conn.command(cmd);
    } catch (const RedisError&) {
      std::lock_guard lock(m);
      done = true;
      if (interrupted) return false;
      throw;
    }
    std::lock_guard lock(m);
    done = true;
    if (interrupted) return false;
    if (detail::redis::is_error(reply)) detail::redis::throw_reply("wait_for_work (BLPOP) failed", text(reply.get()));
    conn.set_timeout(opt_.command_timeout);
    return true;
  }

  // Runs f(connection, retry) with a pooled connection. Connection failures and transient error
  // replies (LOADING after a restart, ...) are retried with backoff for reconnect_window; a
  // call whose reply was lost is sent again only when `idempotent` (then with retry = true).
  template <class F>
  auto run(bool idempotent, F&& f) -> std::invoke_result_t<F&, Connection&, bool> {
    const auto deadline = std::chrono::steady_clock::now() + opt_.reconnect_window;
    Millis pause{25};
    bool retry = false;
    for (;;) {
      {
        std::unique_ptr<Connection> c;
        try {
          c = acquire();
        } catch (const RedisError& e) {
          if (!e.is_transient() || std::chrono::steady_clock::now() + pause > deadline) throw;
        }
        if (c) {
          struct Return {
            RedisBackend* self;
            std::unique_ptr<Connection>& c;
            ~Return() { self->give_back(std::move(c)); }
          } guard{this, c};
          try {
            return f(*c, retry);
          } catch (const detail::redis::Rejected&) {
            if (std::chrono::steady_clock::now() + pause > deadline) throw;
          } catch (const RedisError& e) {
            if (!e.is_transient() || !idempotent || std::chrono::steady_clock::now() + pause > deadline) throw;
            retry = true;
          }
        }
      }
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, Millis{1'000});
    }
  }

  Args script_args(Script s, const Args& keys, Args argv) const {
    Args a;
    a.reserve(3 + keys.size() + argv.size());
    a.push_back("EVALSHA");
    a.push_back(sha_[static_cast<std::size_t>(s)]);
    a.push_back(std::to_string(keys.size()));
    a.insert(a.end(), keys.begin(), keys.end());
    for (auto& v : argv) a.push_back(std::move(v));
    return a;
  }

  // Runs the commands in one round trip; an EVALSHA answered NOSCRIPT (script cache flushed)
  // was not run, so it is loaded and sent again. Another client may flush again between the
  // load and the resend, so this retries a few times before giving up.
  std::vector<Reply> exec(Connection& c, const std::vector<Cmd>& cmds) {
    auto replies = c.pipeline(cmds);
    for (std::size_t i = 0; i < replies.size(); ++i) {
      for (int attempt = 0; cmds[i].script && is_noscript(replies[i]); ++attempt) {
        if (attempt == 5) detail::redis::throw_reply("a script kept disappearing from the cache", text(replies[i].get()));
        auto loaded = c.command({"SCRIPT", "LOAD", detail::redis::script_source(*cmds[i].script)});
        if (detail::redis::is_error(loaded)) detail::redis::throw_reply("reloading a script failed", text(loaded.get()));
        replies[i] = c.command(cmds[i].args);
      }
    }
    return replies;
  }

  // --- claims whose reply was lost ---------------------------------------------------------

  struct LostClaim {
    std::vector<std::string> queues;
    std::string seed;      // the claim's token seed: its jobs' tokens are seed + 6 hex digits
    std::string deadline;  // the claim's now + lease: its jobs' score in Q:leases
  };

  void remember_lost_claim(LostClaim lost) {
    std::lock_guard lock(lost_mutex_);
    lost_claims_.push_back(std::move(lost));
  }

  // Gives back the jobs of remembered lost claims (Script::undo_claim), one call per set of
  // queues; kept for the next try if the connection fails (undoing twice changes nothing).
  void undo_lost_claims(Connection& c) {
    std::vector<LostClaim> lost;
    {
      std::lock_guard lock(lost_mutex_);
      if (lost_claims_.empty()) return;
      lost.swap(lost_claims_);
    }
    try {
      std::vector<Cmd> cmds;
      std::vector<const std::vector<std::string>*> sets;
      const auto t = now_str();
      for (const auto& l : lost) {
        auto at = std::find_if(sets.begin(), sets.end(), [&](const auto* qs) { return *qs == l.queues; });
        if (at == sets.end()) {
          Args keys;
          for (const auto& q : l.queues) append_queue_keys(keys, q, Script::undo_claim);
          cmds.push_back({script_args(Script::undo_claim, keys, {t}), Script::undo_claim});
          sets.push_back(&l.queues);
          at = sets.end() - 1;
        }
        auto& args = cmds[static_cast<std::size_t>(at - sets.begin())].args;
        args.push_back(l.seed);
        args.push_back(l.deadline);
      }
      for (const auto& r : exec(c, cmds)) expect_ok(r, "undoing a claim whose reply was lost");
    } catch (const RedisError& e) {
      // A permanent error (a key of the wrong type) would fail every later claim: dropped, and
      // those jobs are recovered when their leases end.
      if (e.is_transient()) {
        std::lock_guard lock(lost_mutex_);
        lost_claims_.insert(lost_claims_.end(), std::make_move_iterator(lost.begin()), std::make_move_iterator(lost.end()));
      }
      throw;
    }
  }

  static bool is_noscript(const Reply& r) {
    return detail::redis::is_error(r) && text(r.get()).starts_with("NOSCRIPT");
  }

  Reply eval(Connection& c, Script s, const Args& keys, Args argv) {
    std::vector<Cmd> cmds;
    cmds.push_back({script_args(s, keys, std::move(argv)), s});
    return std::move(exec(c, cmds).front());
  }

  static void expect_ok(const Reply& r, const std::string& what) {
    if (detail::redis::is_error(r)) detail::redis::throw_reply(what + " failed", text(r.get()));
  }

  static std::string_view text(const redisReply* r) { return detail::redis::text(r); }

  // --- keys ------------------------------------------------------------------------------

  std::string queue_base(std::string_view queue) const { return opt_.prefix + ":{" + std::string(queue) + "}:"; }

  // The keys of `queue` that script `s` receives (see detail::redis::script_keys), from a
  // per-queue cache of the key names.
  void append_queue_keys(Args& keys, std::string_view queue, Script s) {
    const auto names = queue_key_names_ptr(queue);
    for (auto i : detail::redis::script_keys(s)) keys.push_back((*names)[i]);
  }

  Args queue_keys(std::string_view queue, Script s) {
    Args keys;
    keys.reserve(detail::redis::queue_key_suffixes.size());
    append_queue_keys(keys, queue, s);
    return keys;
  }

  std::shared_ptr<const std::vector<std::string>> queue_key_names_ptr(std::string_view queue) {
    std::lock_guard lock(keys_mutex_);
    auto it = key_names_.find(std::string(queue));
    if (it != key_names_.end()) return it->second;
    if (key_names_.size() >= 10'000) key_names_.clear();
    const auto base = queue_base(queue);
    auto names = std::make_shared<std::vector<std::string>>();
    for (auto suffix : detail::redis::queue_key_suffixes) names->push_back(base + std::string(suffix));
    return key_names_.emplace(std::string(queue), std::move(names)).first->second;
  }

  // The three keys outside any queue's slot: the id counter, the id -> queue map and the set
  // of queue names (for recover_expired).
  std::string global_key(std::string_view name) const { return opt_.prefix + ":" + std::string(name); }

  std::string now_str() const { return std::to_string(to_epoch_ms(now())); }

  // --- ids and the id -> queue map ------------------------------------------------------------

  std::vector<JobId> allocate_ids(std::size_t n) {
    std::lock_guard lock(id_mutex_);
    if (static_cast<std::size_t>(id_end_ - next_id_) < n) {
      const auto want = std::max(n, opt_.id_block);
      const auto reply = run(true, [&](Connection& c, bool) {
        return c.command({"INCRBY", global_key("id"), std::to_string(want)});
      });
      expect_ok(reply, "allocating job ids");
      id_end_ = detail::redis::reply_int(reply.get(), "INCRBY") + 1;
      next_id_ = id_end_ - static_cast<JobId>(want);
    }
    std::vector<JobId> ids(n);
    for (auto& id : ids) id = next_id_++;
    return ids;
  }

  void remember_locked(JobId id, const std::string& queue) {
    if (queue_of_.size() >= 200'000) queue_of_.clear();  // a bounded cache; misses cost one HGET
    auto it = std::find(queue_names_.begin(), queue_names_.end(), queue);
    if (it == queue_names_.end()) {
      if (queue_names_.size() >= 10'000) {
        queue_names_.clear();
        queue_of_.clear();
      }
      queue_names_.push_back(queue);
      it = std::prev(queue_names_.end());
    }
    queue_of_[id] = static_cast<std::uint32_t>(it - queue_names_.begin());
  }

  std::optional<std::string> queue_of(JobId id) { return queues_of(std::vector<JobId>{id}).front(); }

  std::vector<std::optional<std::string>> queues_of(const std::vector<JobId>& ids) {
    std::vector<std::optional<std::string>> out(ids.size());
    Args lookup{"HMGET", global_key("jobqueue")};
    std::vector<std::size_t> missing;
    {
      std::lock_guard lock(cache_mutex_);
      for (std::size_t i = 0; i < ids.size(); ++i) {
        if (auto it = queue_of_.find(ids[i]); it != queue_of_.end()) {
          out[i] = queue_names_[it->second];
        } else if (ids[i] > 0) {
          missing.push_back(i);
          lookup.push_back(std::to_string(ids[i]));
        }
      }
    }
    if (missing.empty()) return out;
    const auto reply = run(true, [&](Connection& c, bool) { return c.command(lookup); });
    expect_ok(reply, "looking up the queue of a job");
    std::lock_guard lock(cache_mutex_);
    for (std::size_t k = 0; k < missing.size() && k < reply->elements; ++k) {
      const auto* e = reply->element[k];
      if (e->type != REDIS_REPLY_STRING) continue;
      std::string q(text(e));
      try {
        validate_queue_name(q);
      } catch (const InvalidArgument&) {
        throw RedisError(ErrorCategory::backend, "redis: " + global_key("jobqueue") + " maps job " +
                                                     std::to_string(ids[missing[k]]) + " to an invalid queue name");
      }
      remember_locked(ids[missing[k]], q);
      out[missing[k]] = std::move(q);
    }
    return out;
  }

  std::vector<std::string> unregistered(const std::vector<std::string>& queues) {
    std::lock_guard lock(cache_mutex_);
    std::vector<std::string> out;
    for (const auto& q : queues) {
      if (!registered_.contains(q)) out.push_back(q);
    }
    return out;
  }

  void mark_registered(const std::vector<std::string>& queues) {
    std::lock_guard lock(cache_mutex_);
    for (const auto& q : queues) registered_.insert(q);
  }

  // --- operations ---------------------------------------------------------------------------

  void pause_or_resume(const std::string& queue, Script s) {
    validate_queue_name(queue);
    const std::vector<std::string> one{queue};
    const auto fresh = unregistered(one);
    const auto replies = run(true, [&](Connection& c, bool) {
      std::vector<Cmd> cmds;
      if (!fresh.empty()) cmds.push_back({{"SADD", global_key("queues"), queue}, std::nullopt});
      cmds.push_back({script_args(s, queue_keys(queue, s), {}), s});
      return exec(c, cmds);
    });
    for (const auto& r : replies) expect_ok(r, s == Script::pause ? "pause" : "resume");
    mark_registered(one);
  }

  std::size_t prune_impl(const std::string& queue, const Retention& retention, std::size_t max_jobs) {
    constexpr std::size_t batch = 1000;
    const auto cut = [&](const std::optional<Millis>& keep, TimePoint t) {
      return keep ? std::to_string(to_epoch_ms(t) - keep->count()) : std::string();
    };
    std::size_t total = 0;
    for (;;) {
      const auto t = now();
      const auto reply = run(true, [&](Connection& c, bool) {
        return eval(c, Script::prune, queue_keys(queue, Script::prune),
                    {cut(retention.completed, t), cut(retention.dead, t), cut(retention.cancelled, t),
                     max_jobs > 0 ? std::to_string(max_jobs) : std::string(), std::to_string(batch)});
      });
      expect_ok(reply, "prune");
      if (reply->elements == 0) break;
      Args unmap{"HDEL", global_key("jobqueue")};
      {
        std::lock_guard lock(cache_mutex_);
        for (std::size_t i = 0; i < reply->elements; ++i) {
          unmap.emplace_back(text(reply->element[i]));
          try {
            queue_of_.erase(detail::redis::to_i64(text(reply->element[i])));
          } catch (const std::exception&) {
          }
        }
      }
      const auto r = run(true, [&](Connection& c, bool) { return c.command(unmap); });
      expect_ok(r, "prune (HDEL " + global_key("jobqueue") + ")");
      total += reply->elements;
      if (reply->elements < batch) break;
    }
    return total;
  }

  // Default retention: the claim path prunes each queue it serves at most once per
  // prune_interval, so finished jobs do not pile up even if nobody calls prune().
  void auto_prune(const std::vector<std::string>& queues) {
    if (!opt_.retention && opt_.retention_max_jobs == 0) return;
    const auto t = now();
    for (const auto& q : queues) {
      {
        std::lock_guard lock(cache_mutex_);
        auto [it, fresh] = last_prune_.try_emplace(q, t);
        if (!fresh) {
          if (t - it->second < opt_.prune_interval) continue;
          it->second = t;
        }  // the first claim of a queue prunes too: leftovers of earlier processes
      }
      try {
        prune_impl(q, opt_.retention.value_or(Retention{std::nullopt, std::nullopt, std::nullopt}),
                   opt_.retention_max_jobs);
      } catch (const std::exception&) {
        // Best effort: the claimed jobs must reach the caller; the next interval tries again.
      }
    }
  }

  // --- documents ---------------------------------------------------------------------------

  // A completion's result as a script argument: '' for null (nothing stored).
  static std::string result_arg(const nlohmann::json& result) {
    return result.is_null() ? std::string() : dump_for_storage(result, "result");
  }

  // A JSON string literal exactly as nlohmann::json::dump() writes it: printable ASCII is
  // copied, '"', '\\' and control characters escaped; text with other bytes goes through
  // nlohmann (UTF-8 validation; throws on invalid bytes).
  static void append_json_string(std::string& out, std::string_view s) {
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

  // The fixed fields of a job (Q:jobs): the JSON object nlohmann::json would write (keys sorted,
  // no spaces), formatted directly (a json object per job cost more client time than the
  // script's own work on a bulk enqueue). Integers as decimal strings: cjson (Redis' JSON in
  // Lua, which reads the unique key back) keeps only 14 digits. `nonce`: which enqueue call
  // wrote it (see the enqueue script); `group` absent: none (and in documents of format 1).
  static std::string make_doc(const NewJob& j, JobId id, std::int64_t t, const std::string& payload,
                              const std::string& backoff, const std::string& nonce) {
    std::string d;
    d.reserve(200 + payload.size() + j.name.size() + j.queue.size() + j.unique_key.size() + j.group.size());
    try {
      d += "{\"backoff\":";
      append_json_string(d, backoff);
      d += ",\"created_at\":\"" + std::to_string(t) + '"';
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
      d += '}';
    } catch (const nlohmann::json::exception&) {
      throw InvalidArgument("job name, unique key or group is not valid UTF-8");
    }
    return d;
  }

  // A job from its fixed part (Q:jobs), its state entry (Q:state: 11 words, '-' = none), and
  // its errors, result and progress ('' = none). `base` ("<prefix>:{queue}:", or empty when
  // unknown) names the key in error messages.
  static JobRecord parse_job(std::string_view raw, std::string_view hot, std::string_view errors,
                             std::string_view result, std::string_view progress, const std::string& base) {
    using detail::redis::to_i64;
    using detail::redis::to_int;
    nlohmann::json d;
    std::string id = "?";
    const char* part = "jobs";
    try {
      d = nlohmann::json::parse(raw);
      if (d.is_object() && d.contains("id") && d["id"].is_string()) id = d["id"].get<std::string>();
      const auto str = [&](const char* k) -> const std::string& { return d.at(k).get_ref<const std::string&>(); };
      JobRecord r;
      r.id = to_i64(str("id"));
      r.queue = str("queue");
      r.name = str("name");
      r.payload = nlohmann::json::parse(str("payload"));
      r.created_at = from_epoch_ms(to_i64(str("created_at")));
      r.backoff = Backoff::from_json(nlohmann::json::parse(str("backoff")));
      r.timeout = Millis{to_i64(str("timeout_ms"))};
      r.unique_key = str("unique_key");
      r.unique_for = Millis{to_i64(str("unique_for_ms"))};
      if (const auto g = d.find("group"); g != d.end()) r.group = g->get<std::string>();
      part = "state";
      std::array<std::string_view, detail::redis::hot_fields> w{};
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

  detail::redis::Url url_;
  RedisOptions opt_;
  std::array<std::string, detail::redis::script_count> sha_;  // written in the constructor only

  std::mutex pool_mutex_;
  std::condition_variable pool_cv_;
  std::vector<std::unique_ptr<Connection>> idle_;
  std::vector<std::unique_ptr<Connection>> idle_blocking_;
  std::size_t open_ = 0;

  std::mutex id_mutex_;
  JobId next_id_ = 0;  // [next_id_, id_end_) is reserved for this object
  JobId id_end_ = 0;

  std::mutex keys_mutex_;
  std::unordered_map<std::string, std::shared_ptr<const std::vector<std::string>>> key_names_;  // queue -> its keys

  std::mutex lost_mutex_;
  std::vector<LostClaim> lost_claims_;  // claims whose reply was lost, to undo

  std::mutex cache_mutex_;
  std::unordered_map<JobId, std::uint32_t> queue_of_;  // ids never move between queues
  std::vector<std::string> queue_names_;
  std::unordered_set<std::string> registered_;  // queues known to be in <prefix>:queues
  std::unordered_map<std::string, TimePoint> last_prune_;

  NoticeHub hub_;
  std::mutex listen_mutex_;
  std::condition_variable listen_cv_;
  bool listen_active_ = false;  // SUBSCRIBEd right now
  std::string listen_error_;    // why not, if not
  std::atomic<bool> listen_stop_{false};
  std::array<int, 2> listen_pipe_{-1, -1};  // written to stop the listener at once
  std::thread listen_thread_;
};

static_assert(Backend<RedisBackend>);

}  // namespace jobq
