#pragma once
// Wake-ups and notices: the BLPOP a waiting worker blocks in, and the listener thread that
// receives the scripts' PUBLISHed notices (Backend::subscribe) on a connection of its own.

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "jobq/events.hpp"
#include "jobq/redis/connection.hpp"
#include "jobq/redis/options.hpp"

namespace jobq::detail::redis {

/// @brief BLPOP on the wake lists (`wake_keys`: "BLPOP" and the lists) for up to `wait`; a stop
/// request shuts the socket down, which ends the wait at once. Returns whether the connection
/// can be reused.
inline bool blocking_pop(Connection& conn, const Args& wake_keys, Millis wait, Millis command_timeout,
                         std::stop_token& stop) {
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
  conn.set_timeout(Millis{ms} + command_timeout);
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
  if (is_error(reply)) throw_reply("wait_for_work (BLPOP) failed", text(reply.get()));
  conn.set_timeout(command_timeout);
  return true;
}

/// @brief A notice listener: a thread with a connection of its own SUBSCRIBEd to
/// "<prefix>:<kind>" (events: subscribe, cancels: watch_cancels), publishing what arrives to a
/// NoticeHub. Started on first use.
class Listener {
 public:
  /// @brief A listener for `url` with the timeouts and prefix of `opt`, publishing to `hub`.
  Listener(Url url, const RedisOptions& opt, NoticeHub& hub, std::string_view kind)
      : url_(std::move(url)),
        kind_(kind),
        channel_(opt.prefix + ":" + kind_),
        prefix_(opt.prefix),
        connect_timeout_(opt.connect_timeout),
        command_timeout_(opt.command_timeout),
        reconnect_window_(opt.reconnect_window),
        hub_(hub) {}

  ~Listener() { stop(); }
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  /// @brief Starts the listener thread on first use; returns once its SUBSCRIBE is confirmed.
  void start() {
    std::unique_lock lock(mutex_);
    if (!thread_.joinable()) {
      if (::pipe2(pipe_.data(), O_CLOEXEC | O_NONBLOCK) != 0) {
        throw RedisError(ErrorCategory::backend, std::string("redis: cannot create the notice listener's pipe: ") + std::strerror(errno));
      }
      thread_ = std::thread([this] { loop(); });
    }
    const auto deadline = std::chrono::steady_clock::now() + reconnect_window_ + connect_timeout_;
    if (!cv_.wait_until(lock, deadline, [&] { return active_; })) {
      throw RedisError(ErrorCategory::connection, "redis: cannot subscribe to " + channel_ + " on " + url_.masked +
                                                      (error_.empty() ? std::string() : ": " + error_));
    }
  }

  /// @brief Stops the thread (if started) at once.
  void stop() noexcept {
    stop_ = true;
    if (thread_.joinable()) {
      const char b = 'x';
      [[maybe_unused]] const auto n = ::write(pipe_[1], &b, 1);
      thread_.join();
    }
    for (int& fd : pipe_) {
      if (fd >= 0) ::close(fd);
      fd = -1;
    }
  }

 private:
  // Sleeps up to `d`; false if stop was requested.
  bool pause(Millis d) {
    pollfd p{pipe_[0], POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(d.count()));
    return !stop_;
  }

  // Reconnects with backoff after a loss (notices sent meanwhile are lost: delivery is best
  // effort).
  void loop() {
    Millis backoff{25};
    while (!stop_) {
      try {
        Connection c(url_, connect_timeout_, command_timeout_);
        c.command({"CLIENT", "SETNAME", "jobq-" + kind_ + ":" + prefix_});  // for CLIENT LIST; an error is fine
        const auto r = c.command({"SUBSCRIBE", channel_});
        if (is_error(r)) throw_reply("SUBSCRIBE " + channel_, text(r.get()));
        {
          std::lock_guard lock(mutex_);
          active_ = true;
          error_.clear();
        }
        cv_.notify_all();
        backoff = Millis{25};
        pump(c);
      } catch (const std::exception& e) {
        std::lock_guard lock(mutex_);
        active_ = false;
        error_ = e.what();
      }
      if (stop_ || !pause(backoff)) break;
      backoff = std::min(backoff * 2, Millis{1'000});
    }
    std::lock_guard lock(mutex_);
    active_ = false;
  }

  // Delivers what arrives until stop (returns) or a connection loss (throws). An idle
  // connection is checked with a PING every 30 s.
  void pump(Connection& c) {
    constexpr Millis idle_ping{30'000};
    auto last = std::chrono::steady_clock::now();
    bool pinged = false;
    for (;;) {
      std::array<pollfd, 2> fds{pollfd{c.fd(), POLLIN, 0}, pollfd{pipe_[0], POLLIN, 0}};
      const int n = ::poll(fds.data(), fds.size(), 1'000);
      if (n < 0 && errno != EINTR) throw RedisError(ErrorCategory::connection, std::string("redis: poll: ") + std::strerror(errno));
      if (stop_) return;
      if (n > 0 && fds[0].revents != 0) {
        for (const auto& r : c.read_available()) deliver(r.get());
        last = std::chrono::steady_clock::now();
        pinged = false;
      } else if (const auto idle = std::chrono::steady_clock::now() - last; idle > idle_ping + command_timeout_) {
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

  Url url_;
  std::string kind_;
  std::string channel_;
  std::string prefix_;
  Millis connect_timeout_;
  Millis command_timeout_;
  Millis reconnect_window_;
  NoticeHub& hub_;

  std::mutex mutex_;
  std::condition_variable cv_;
  bool active_ = false;  // SUBSCRIBEd right now
  std::string error_;    // why not, if not
  std::atomic<bool> stop_{false};
  std::array<int, 2> pipe_{-1, -1};  // written to stop the listener at once
  std::thread thread_;
};

}  // namespace jobq::detail::redis
