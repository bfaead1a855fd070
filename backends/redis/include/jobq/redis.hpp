#pragma once
// jobq's Redis backend: every state change is one Lua script (EVALSHA); the keys of a queue
// share the hash tag {queue}. See backends/redis/README.md for the guarantees, and the parts in
// jobq/redis/: keys.hpp (the key layout), scripts.hpp and lua_*.hpp (the scripts),
// backend.hpp (RedisBackend).

#include "jobq/redis/options.hpp"     // RedisOptions
#include "jobq/redis/error.hpp"       // RedisError
#include "jobq/redis/connection.hpp"  // RedisReply
#include "jobq/redis/backend.hpp"     // RedisBackend
