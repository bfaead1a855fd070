#pragma once
// The connection pool shared by the calling threads, and the retry policy: a call whose
// connection broke runs again on a new one, unless its first try may have been applied.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

#include <poll.h>

#include <libpq-fe.h>

#include "jobq/postgres/connection.hpp"

namespace jobq::detail::pg {

/// What a retry may assume when the earlier try's outcome is unknown.
enum class Replay {
  safe,   // a retry after an unknown outcome is harmless (reads, idempotent or fenced writes)
  never,  // an unknown outcome is reported as a ConnectionError instead of retried
};

/// Up to pool_size connections, opened on demand; a call waits for a free one at most
/// reconnect_give_up.
class ConnectionPool {
 public:
  ConnectionPool(const Connector& connector, const StatementTable& statements, const PostgresOptions& opt)
      : connector_(&connector), statements_(&statements), opt_(&opt) {}

  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  /// A leased pool connection; returned on destruction unless it broke.
  class Lease {
   public:
    Lease(ConnectionPool& pool, std::unique_ptr<Conn> c) : pool_(&pool), c_(std::move(c)) {}
    Lease(Lease&& o) noexcept : pool_(std::exchange(o.pool_, nullptr)), c_(std::move(o.c_)) {}
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (pool_ != nullptr) pool_->give_back(std::move(c_));
    }
    Conn& operator*() { return *c_; }

   private:
    ConnectionPool* pool_;
    std::unique_ptr<Conn> c_;
  };

  /// An idle healthy connection, or a new one. Throws Lost when the server cannot be reached.
  Lease acquire() {
    std::unique_ptr<Conn> conn;
    {
      std::unique_lock lock(mutex_);
      const bool got = cv_.wait_for(lock, opt_->reconnect_give_up, [&] {
        return !idle_.empty() || open_ < opt_->pool_size;
      });
      if (!got) throw ConnectionError("postgres: no pooled connection became free within " +
                                      std::to_string(opt_->reconnect_give_up.count()) + " ms");
      if (!idle_.empty()) {
        conn = std::move(idle_.back());
        idle_.pop_back();
      } else {
        ++open_;
      }
    }
    if (conn && healthy_idle(conn->raw())) return Lease(*this, std::move(conn));
    conn.reset();
    try {
      return Lease(*this, open());
    } catch (...) {
      give_back(nullptr);
      throw;
    }
  }

  /// Runs fn(connection, uncertain) on a pooled connection; a broken connection is replaced
  /// and fn run again with backoff until reconnect_give_up. `uncertain` tells fn that an
  /// earlier try may have been applied (only with Replay::safe; Replay::never throws instead).
  template <class F>
  std::invoke_result_t<F&, Conn&, bool> with_retry(std::string_view what, Replay replay, F&& fn) {
    const auto give_up = std::chrono::steady_clock::now() + opt_->reconnect_give_up;
    auto delay = opt_->reconnect_backoff_min;
    bool uncertain = false;
    for (;;) {
      try {
        auto lease = acquire();
        return fn(*lease, uncertain);
      } catch (const Lost& lost) {
        if (lost.unknown) ++unknown_outcomes_;
        if (lost.unknown && replay == Replay::never) {
          throw PostgresError(ErrorCategory::connection,
                              "postgres: " + std::string(what) + ": connection to " + connector_->target() +
                                  " lost before the server answered; the change may or may not "
                                  "have been applied: " + lost.message,
                              "08006");
        }
        uncertain = uncertain || lost.unknown;
        if (std::chrono::steady_clock::now() + delay > give_up) {
          throw PostgresError(ErrorCategory::connection,
                              "postgres: " + std::string(what) + ": connection to " + connector_->target() +
                                  " lost and not re-established within " +
                                  std::to_string(opt_->reconnect_give_up.count()) + " ms: " + lost.message,
                              "08006");
        }
        ++retries_;
        std::this_thread::sleep_for(delay);
        delay = std::min(delay * 2, opt_->reconnect_backoff_max);
      }
    }
  }

  /// with_retry for an outcome (complete, fail, release) of the leases `tokens`. When it gives
  /// up, the outcome may have been applied without an answer; the tokens are remembered, and a
  /// later call with one of them (the worker sending the outcome again) starts uncertain, so
  /// it asks done_token and reports an applied outcome as applied rather than as a lost lease.
  template <class F>
  std::invoke_result_t<F&, Conn&, bool> outcome_retry(std::string_view what, const Params& tokens, F&& fn) {
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

  /// Calls retried on a new connection so far.
  [[nodiscard]] std::uint64_t retries() const noexcept { return retries_.load(); }
  /// Statements whose answer was lost with their connection so far.
  [[nodiscard]] std::uint64_t unknown_outcomes() const noexcept { return unknown_outcomes_.load(); }

 private:
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

  std::unique_ptr<Conn> open() {
    auto fresh = std::make_unique<Conn>();
    fresh->pg = connector_->connect();
    fresh->statements = statements_;
    fresh->prepare = opt_->prepared_statements;
    if (opt_->prepared_statements && PQserverVersion(fresh->raw()) >= 120000) {
      // The statements are planned once per connection, not per call: with custom plans
      // (the default for the first executions, and for good when the generic plan's cost
      // estimate is higher, as for claim) planning cost more server time than executing.
      // Every statement is a keyed lookup whose plan does not depend on its values.
      exec_text(fresh->raw(), sql::generic_plans);
    }
    return fresh;
  }

  void give_back(std::unique_ptr<Conn> c) {
    {
      std::lock_guard lock(mutex_);
      if (c && PQstatus(c->raw()) == CONNECTION_OK && PQtransactionStatus(c->raw()) == PQTRANS_IDLE) {
        idle_.push_back(std::move(c));
      } else {
        --open_;
      }
    }
    c.reset();
    cv_.notify_one();
  }

  const Connector* connector_;
  const StatementTable* statements_;
  const PostgresOptions* opt_;

  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Conn>> idle_;
  std::size_t open_ = 0;

  std::atomic<std::uint64_t> retries_{0};
  std::atomic<std::uint64_t> unknown_outcomes_{0};
  std::mutex unanswered_mutex_;
  std::unordered_set<std::string> unanswered_;  // see outcome_retry
};

}  // namespace jobq::detail::pg
