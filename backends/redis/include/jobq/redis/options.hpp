#pragma once
// RedisOptions: the settings of a RedisBackend.

#include <cstddef>
#include <optional>
#include <string>

#include "jobq/backend.hpp"

namespace jobq {

/// @brief Options of the Redis backend.
struct RedisOptions {
  ClockFn clock = system_clock();        ///< where time comes from (tests pass a ManualClock)
  std::string prefix = "jobq";           ///< first part of every key; tests use a unique one
  std::size_t pool_size = 8;             ///< command connections at most (blocking waits use own ones)
  Millis connect_timeout{2'000};         ///< TCP connect limit per attempt
  Millis command_timeout{10'000};        ///< limit on one command's reply
  Millis reconnect_window{5'000};        ///< how long a call keeps reconnecting before it throws
  std::size_t id_block = 64;             ///< job ids reserved per round trip to the id counter
  std::size_t max_payload_bytes = default_max_payload_bytes;  ///< larger serialized payloads are refused
  /// false: open only a store that exists under the prefix (its `<prefix>:version` key); else a
  /// `not_found` error and no key is written. For tools that only look at a store, so a
  /// mistyped prefix or database number creates nothing.
  bool create = true;
  /// Tests only: how far an operation takes the flow records it left for other queues (see
  /// lua_flow.hpp): 2 applies and removes them, 1 applies without removing (a crash before the
  /// removal), 0 leaves them (a crash after the first step). recover_expired always takes both.
  int flow_record_steps = 2;
  /// Tests only: an enqueue_flow across queues throws after its first step, before the commit
  /// (a crash there): recover_expired discards its members once the commit is overdue.
  bool flow_stop_before_commit = false;
};

}  // namespace jobq
