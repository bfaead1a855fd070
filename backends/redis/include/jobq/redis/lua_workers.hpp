#pragma once
// The worker registry's scripts: register_worker, unregister_worker, workers. They receive no
// queue keys but the registry's two, KEYS[1] <prefix>:{~workers}:info (hash id -> WorkerInfo
// JSON) and KEYS[2] <prefix>:{~workers}:expiry (zset id, score expires_at), one slot.
// A key of the wrong type fails at the script's first command that touches it; each script
// reads both keys or writes the hash before the sorted set, so such a failure writes nothing.

#include <string_view>

namespace jobq::detail::redis::lua {

// worker_register. ARGV: now, id, expires_at, info. Deletes the entries with expires_at < now,
// then stores this one (its own stale entry is replaced, not left deleted).
inline constexpr std::string_view worker_register = R"lua(
-- keys:
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
bulk('HDEL', KEYS[1], gone, 1)
redis.call('HSET', KEYS[1], ARGV[2], ARGV[4])
if #gone > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1]) end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return 1
)lua";

// worker_unregister. ARGV: id. Returns 1 if there was an entry, else 0.
inline constexpr std::string_view worker_unregister = R"lua(
-- keys:
local n = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return n
)lua";

// workers (read-only). ARGV: now. Returns {id, info, ...} of the entries with expires_at >= now,
// in no particular order.
inline constexpr std::string_view workers = R"lua(
-- keys:
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], '+inf')
local infos = mget(KEYS[1], ids)
local out = {}
for i = 1, #ids do
  if infos[i] then
    out[#out + 1] = ids[i]
    out[#out + 1] = infos[i]
  end
end
return out
)lua";

}  // namespace jobq::detail::redis::lua
