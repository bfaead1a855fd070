#pragma once
// Claims whose reply was lost: they may have leased jobs nobody will run. Each is remembered
// (its token seed and lease deadline identify its jobs) and undone, attempts not counted, by
// the undo_claim script before the next claim on a new connection or recover_expired.

#include <algorithm>
#include <iterator>
#include <mutex>
#include <string>
#include <vector>

#include "jobq/job.hpp"
#include "jobq/redis/connection.hpp"
#include "jobq/redis/keys.hpp"
#include "jobq/redis/scripts.hpp"

namespace jobq::detail::redis {

/// @brief A claim whose reply was lost.
struct LostClaim {
  std::vector<std::string> queues;
  std::string seed;      ///< the claim's token seed: its jobs' tokens are seed + 6 hex digits
  std::string deadline;  ///< the claim's now + lease: its jobs' score in Q:leases
};

/// @brief The lost claims still to undo. Thread-safe.
class LostClaims {
 public:
  /// @brief Sends a claim of `queues` whose leases end at `deadline`: returns send(seed) for a
  /// fresh token seed, and remembers the claim to undo if its reply was lost (a connection
  /// error; a refusal such as LOADING means it did not run).
  template <class Send>
  Reply send(const std::vector<std::string>& queues, std::string deadline, Send&& send_claim) {
    LostClaim sent{queues, new_lease_token(), std::move(deadline)};
    try {
      return send_claim(sent.seed);
    } catch (const Rejected&) {
      throw;
    } catch (const RedisError& e) {
      if (e.is_transient()) {
        std::lock_guard lock(mutex_);
        claims_.push_back(std::move(sent));
      }
      throw;
    }
  }

  /// @brief Gives back the jobs of the remembered claims (one undo_claim call per set of
  /// queues) on `c`, at time now() (epoch ms as text); kept for the next try if the connection
  /// fails (undoing twice changes nothing).
  template <class Now>
  void undo(Connection& c, const ScriptRunner& scripts, KeyNames& keys, Now&& now) {
    std::vector<LostClaim> lost;
    {
      std::lock_guard lock(mutex_);
      if (claims_.empty()) return;
      lost.swap(claims_);
    }
    try {
      std::vector<Cmd> cmds;
      std::vector<const std::vector<std::string>*> sets;
      const std::string t = now();
      for (const auto& l : lost) {
        auto at = std::find_if(sets.begin(), sets.end(), [&](const auto* qs) { return *qs == l.queues; });
        if (at == sets.end()) {
          Args names;
          for (const auto& q : l.queues) keys.append(names, q, script_keys(Script::undo_claim));
          cmds.push_back(scripts.cmd(Script::undo_claim, names, {t}));
          sets.push_back(&l.queues);
          at = sets.end() - 1;
        }
        auto& args = cmds[static_cast<std::size_t>(at - sets.begin())].args;
        args.push_back(l.seed);
        args.push_back(l.deadline);
      }
      for (const auto& r : ScriptRunner::exec(c, cmds)) expect_ok(r, "undoing a claim whose reply was lost");
    } catch (const RedisError& e) {
      // A permanent error (a key of the wrong type) would fail every later claim: dropped, and
      // those jobs are recovered when their leases end.
      if (e.is_transient()) {
        std::lock_guard lock(mutex_);
        claims_.insert(claims_.end(), std::make_move_iterator(lost.begin()), std::make_move_iterator(lost.end()));
      }
      throw;
    }
  }

 private:
  std::mutex mutex_;
  std::vector<LostClaim> claims_;
};

}  // namespace jobq::detail::redis
