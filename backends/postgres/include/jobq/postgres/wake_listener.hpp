#pragma once
// wait_for_work's wake-ups: LISTEN on the schema's wake-up channel ('jobq:<schema>', sent by
// enqueues, retries, resume and new limits in any process) and local wake-ups (this process).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "jobq/postgres/connection.hpp"

namespace jobq::detail::pg {

/// One thread at a time owns the LISTEN connection; other waiters, and poll-only mode, sleep
/// on a condition variable that the owner (on a notification) and local changes wake.
class WakeListener {
 public:
  WakeListener(const Connector& connector, const StatementTable& statements, const PostgresOptions& opt)
      : connector_(&connector), statements_(&statements), opt_(&opt) {
    open_wake_pipe();
  }

  WakeListener(const WakeListener&) = delete;
  WakeListener& operator=(const WakeListener&) = delete;

  ~WakeListener() {
    for (int fd : wake_pipe_) {
      if (fd >= 0) ::close(fd);
    }
  }

  /// Wakes every waiter of this process (work may be ready: an enqueue, a retry, ...).
  void wake() {
    {
      std::lock_guard lock(wake_mutex_);
      generation_.fetch_add(1);
    }
    wake_cv_.notify_all();
    poke_wake_pipe();
  }

  /// Blocks until a notification for one of the queues, a local wake-up, the deadline or a
  /// stop request; returns at once when ready_now() says a job is already ready.
  template <class ReadyNow>
  void wait(std::span<const std::string> queues, std::chrono::steady_clock::time_point deadline,
            const std::stop_token& stop, ReadyNow&& ready_now) {
    const auto generation = generation_.load();
    if (opt_->listen) {
      std::unique_lock owner(listen_mutex_, std::try_to_lock);
      if (owner.owns_lock()) {
        listen_wait(queues, deadline, stop, generation, ready_now);
        return;
      }
    }
    if (ready_now()) return;
    sleep_until(deadline, stop, generation);
  }

 private:
  // Holds listen_mutex_.
  template <class ReadyNow>
  void listen_wait(std::span<const std::string> queues, std::chrono::steady_clock::time_point deadline,
                   const std::stop_token& stop, std::uint64_t generation, ReadyNow& ready_now) {
    if (!listen_conn_) {
      try {
        auto c = connector_->connect();
        Result r{PQexec(c.get(), statements_->listen_wake.c_str())};
        if (!r || PQresultStatus(r.get()) != PGRES_COMMAND_OK) throw Lost{false, "LISTEN failed"};
        listen_conn_ = std::move(c);
      } catch (const Lost&) {
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
    if (ready_now()) return;
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
          wake();  // threads waiting on the condition variable go too
          return;
        }
      }
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

  const Connector* connector_;
  const StatementTable* statements_;
  const PostgresOptions* opt_;

  std::mutex listen_mutex_;
  ConnPtr listen_conn_;
  std::mutex wake_mutex_;
  std::condition_variable wake_cv_;
  std::atomic<std::uint64_t> generation_{0};
  int wake_pipe_[2] = {-1, -1};
};

}  // namespace jobq::detail::pg
