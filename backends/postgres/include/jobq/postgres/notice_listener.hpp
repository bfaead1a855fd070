#pragma once
// Job notices: one connection and thread per channel and backend object, started by the first
// subscriber, stopped by the destructor. The events listener (Backend::subscribe) LISTENs on
// 'jobq:<schema>:events' and registers in event_listeners (so statements start sending
// notices); the cancels listener (watch_cancels) LISTENs on 'jobq:<schema>:cancels', which
// the cancel statement always sends to. Both hand what arrives to their subscribers.

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <nlohmann/json.hpp>

#include "jobq/postgres/connection.hpp"

namespace jobq::detail::pg {

class NoticeListener {
 public:
  /// Which channel: the events one (registered in event_listeners) or the cancels one.
  enum class Channel { events, cancels };

  NoticeListener(const Connector& connector, const StatementTable& statements, const PostgresOptions& opt,
                 Channel channel)
      : connector_(&connector), statements_(&statements), opt_(&opt), channel_(channel) {}

  NoticeListener(const NoticeListener&) = delete;
  NoticeListener& operator=(const NoticeListener&) = delete;

  ~NoticeListener() { stop(); }

  /// Starts the listener if needed and waits until it LISTENs (PostgresError if it cannot
  /// within reconnect_give_up), then adds the subscriber.
  Subscription subscribe(std::span<const std::string> queues, NoticeFn fn) {
    start();
    return hub_.subscribe(queues, std::move(fn));
  }

 private:
  void start() {
    std::unique_lock lock(mutex_);
    if (!started_) {
      int fds[2];
      if (::pipe(fds) == 0) {
        for (int fd : fds) {
          ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
          ::fcntl(fd, F_SETFD, FD_CLOEXEC);
        }
        pipe_[0] = fds[0];
        pipe_[1] = fds[1];
      }
      started_ = true;
      thread_ = std::thread([this] { loop(); });
    }
    if (!cv_.wait_for(lock, opt_->reconnect_give_up, [&] { return listening_; })) {
      throw PostgresError(ErrorCategory::connection,
                          "postgres: subscribe: cannot listen for job notices on " + connector_->target() +
                              " within " + std::to_string(opt_->reconnect_give_up.count()) + " ms: " + error_,
                          "08006");
    }
  }

  void stop() noexcept {
    {
      std::lock_guard lock(mutex_);
      if (!started_) return;
      stop_ = true;
    }
    cv_.notify_all();
    if (pipe_[1] >= 0) {
      const char byte = 1;
      [[maybe_unused]] const auto n = ::write(pipe_[1], &byte, 1);
    }
    if (thread_.joinable()) thread_.join();
    for (int& fd : pipe_) {
      if (fd >= 0) ::close(fd);
      fd = -1;
    }
  }

  bool stopping() {
    std::lock_guard lock(mutex_);
    return stop_;
  }

  ConnPtr connect_and_register() {
    auto c = connector_->connect();
    if (channel_ == Channel::cancels) {
      exec_text(c.get(), statements_->listen_cancels);
      return c;
    }
    exec_text(c.get(), statements_->listen_events);
    exec_text(c.get(), statements_->forget_gone_listeners);
    exec_text(c.get(), statements_->register_listener);
    return c;
  }

  void loop() {
    ConnPtr conn;
    auto delay = opt_->reconnect_backoff_min;
    while (!stopping()) {
      if (!conn) {
        std::string error;
        try {
          conn = connect_and_register();
        } catch (const Lost& lost) {
          error = lost.message;
        } catch (const std::exception& e) {
          error = e.what();
        }
        std::unique_lock lock(mutex_);
        if (conn) {
          listening_ = true;
          error_.clear();
          delay = opt_->reconnect_backoff_min;
          cv_.notify_all();
          continue;
        }
        error_ = error;
        cv_.wait_for(lock, delay, [&] { return stop_; });
        delay = std::min(delay * 2, opt_->reconnect_backoff_max);
        continue;
      }
      pollfd p[2] = {{PQsocket(conn.get()), POLLIN, 0}, {pipe_[0], POLLIN, 0}};
      if (::poll(p, pipe_[0] >= 0 ? 2 : 1, 1000) <= 0) continue;
      if (pipe_[0] >= 0 && p[1].revents != 0) {
        char buf[16];
        while (::read(pipe_[0], buf, sizeof buf) > 0) {
        }
      }
      if (p[0].revents == 0) continue;
      if (PQconsumeInput(conn.get()) == 0 || PQstatus(conn.get()) != CONNECTION_OK) {
        // Lost: notices until the reconnect are lost too (best effort, Backend::subscribe).
        conn.reset();
        std::lock_guard lock(mutex_);
        listening_ = false;
        error_ = "the listener connection was lost";
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
    if (conn && channel_ == Channel::events) {
      // Best effort: a row left behind only makes statements send notices nobody reads.
      Result r{PQexec(conn.get(), statements_->unregister_listener.c_str())};
    }
  }

  const Connector* connector_;
  const StatementTable* statements_;
  const PostgresOptions* opt_;
  Channel channel_;

  NoticeHub hub_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::thread thread_;
  bool started_ = false;
  bool stop_ = false;
  bool listening_ = false;
  std::string error_;
  int pipe_[2] = {-1, -1};
};

}  // namespace jobq::detail::pg
