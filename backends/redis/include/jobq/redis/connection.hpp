#pragma once
// One hiredis connection and its replies: the only part that talks to the socket.

#include <hiredis/hiredis.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "jobq/redis/error.hpp"
#include "jobq/redis/url.hpp"
#include "jobq/time.hpp"

namespace jobq {

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

/// @brief Throws the RedisError for an error reply, saying what failed.
inline void expect_ok(const Reply& r, const std::string& what) {
  if (is_error(r)) throw_reply(what + " failed", text(r.get()));
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

}  // namespace detail::redis
}  // namespace jobq
