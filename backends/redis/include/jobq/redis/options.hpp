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
  /// Finished jobs older than this are deleted automatically (nullopt: never by age). Default:
  /// completed 24 h, dead 7 days, cancelled 24 h.
  std::optional<Retention> retention = Retention{};
  std::size_t retention_max_jobs = 100'000;  ///< at most this many per finished state and queue; 0 = no cap
  Millis prune_interval{60'000};         ///< automatic prune of a queue at most this often (backend clock)
  std::size_t id_block = 64;             ///< job ids reserved per round trip to the id counter
  std::size_t max_payload_bytes = default_max_payload_bytes;  ///< larger serialized payloads are refused
};

}  // namespace jobq
