#pragma once
// The connection pool: command connections (at most pool_size), connections for blocking waits
// (kept apart: a BLPOP holds its connection for the whole wait), and run(), which retries
// through reconnects.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "jobq/redis/connection.hpp"
#include "jobq/redis/options.hpp"
#include "jobq/redis/scripts.hpp"

namespace jobq::detail::redis {

/// @brief hiredis writes with write(2): a server that closed the socket would kill the process
/// with SIGPIPE. Ignored only if the application has not installed a handler of its own.
inline void ignore_sigpipe() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction current {};
    if (::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
      std::signal(SIGPIPE, SIG_IGN);
    }
  });
}

/// @brief Connections to one server, shared by every thread of a backend.
class Pool {
 public:
  /// @brief A pool for `url` with the sizes and timeouts of `opt`; connects lazily.
  Pool(Url url, const RedisOptions& opt)
      : url_(std::move(url)),
        size_(opt.pool_size),
        connect_timeout_(opt.connect_timeout),
        command_timeout_(opt.command_timeout),
        reconnect_window_(opt.reconnect_window) {}

  /// @brief A new connection, not pooled yet (the backend's first: it checks the store on it).
  [[nodiscard]] std::unique_ptr<Connection> open() const {
    return std::make_unique<Connection>(url_, connect_timeout_, command_timeout_);
  }

  /// @brief Adds the first connection (made by open(), scripts loaded) to the idle ones.
  void adopt(std::unique_ptr<Connection> first) {
    std::lock_guard lock(mutex_);
    idle_.push_back(std::move(first));
    open_ = 1;
  }

  /// @brief Runs f(connection, retry) with a pooled connection. Connection failures and
  /// transient error replies (LOADING after a restart, ...) are retried with backoff for
  /// reconnect_window; a call whose reply was lost is sent again only when `idempotent` (then
  /// with retry = true).
  template <class F>
  auto run(bool idempotent, F&& f) -> std::invoke_result_t<F&, Connection&, bool> {
    const auto deadline = std::chrono::steady_clock::now() + reconnect_window_;
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
            Pool* self;
            std::unique_ptr<Connection>& c;
            ~Return() { self->give_back(std::move(c)); }
          } guard{this, c};
          try {
            return f(*c, retry);
          } catch (const Rejected&) {
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

  /// @brief A connection for a blocking wait (an idle one, or a new one, reconnecting for
  /// reconnect_window).
  std::unique_ptr<Connection> acquire_blocking() {
    {
      std::lock_guard lock(mutex_);
      while (!idle_blocking_.empty()) {
        auto c = std::move(idle_blocking_.back());
        idle_blocking_.pop_back();
        if (c->idle_ok()) return c;
      }
    }
    return connect_retrying();
  }

  /// @brief Keeps a blocking connection for the next wait if it is `reusable` and intact.
  void give_back_blocking(std::unique_ptr<Connection> c, bool reusable) {
    if (!reusable || c->broken()) return;
    std::lock_guard lock(mutex_);
    if (idle_blocking_.size() < size_) idle_blocking_.push_back(std::move(c));
  }

 private:
  std::unique_ptr<Connection> connect() {
    auto c = open();
    load_scripts(*c, url_.masked);
    return c;
  }

  std::unique_ptr<Connection> acquire() {
    std::unique_lock lock(mutex_);
    for (;;) {
      while (!idle_.empty()) {
        auto c = std::move(idle_.back());
        idle_.pop_back();
        if (c->idle_ok()) return c;
        --open_;  // closed by the server (restart, timeout): dropped
      }
      if (open_ < size_) {
        ++open_;
        lock.unlock();
        try {
          return connect();
        } catch (...) {
          lock.lock();
          --open_;
          cv_.notify_one();
          throw;
        }
      }
      cv_.wait(lock);
    }
  }

  void give_back(std::unique_ptr<Connection> c) {
    {
      std::lock_guard lock(mutex_);
      if (c->broken()) {
        --open_;
      } else {
        idle_.push_back(std::move(c));
      }
    }
    cv_.notify_one();
  }

  std::unique_ptr<Connection> connect_retrying() {
    const auto deadline = std::chrono::steady_clock::now() + reconnect_window_;
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

  Url url_;
  std::size_t size_;
  Millis connect_timeout_;
  Millis command_timeout_;
  Millis reconnect_window_;

  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Connection>> idle_;
  std::vector<std::unique_ptr<Connection>> idle_blocking_;
  std::size_t open_ = 0;
};

}  // namespace jobq::detail::redis
