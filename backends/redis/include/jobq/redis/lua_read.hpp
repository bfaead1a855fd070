#pragma once
// The read-only scripts: counts, list, peek (wait_for_work), fetch (get).

#include <string_view>

namespace jobq::detail::redis::lua {

// counts. ARGV: now. Returns {queued, active, completed, dead, cancelled, waiting, delayed}:
// delayed are the queued jobs not yet due, in Q:delayed by run_at (one that came due stays
// there until a claim moves it, and is ready).
inline constexpr std::string_view counts = R"lua(
errors().check_types(1)
return {redis.call('ZCARD', key(1, IDS.queued)), redis.call('ZCARD', key(1, IDS.active)),
        redis.call('ZCARD', key(1, IDS.completed)), redis.call('ZCARD', key(1, IDS.dead)),
        redis.call('ZCARD', key(1, IDS.cancelled)), redis.call('ZCARD', key(1, IDS.waiting)),
        redis.call('ZCOUNT', key(1, DELAYED), '(' .. ARGV[1], '+inf')}
)lua";

// list. ARGV: state, offset, limit (> 0). Returns 5 values per job (see row), ordered by id.
inline constexpr std::string_view list = R"lua(
errors().check_types(1)
local first = tonumber(ARGV[2])
local ids = redis.call('ZRANGE', key(1, IDS[ARGV[1]]), first, first + tonumber(ARGV[3]) - 1)
local out = {}
for _, id in ipairs(ids) do row(1, id, out) end
return out
)lua";

// peek (read-only). ARGV: now. Returns '-1' if an unpaused queue has due work, else the
// earliest run_at of a delayed job, else '-2'.
inline constexpr std::string_view peek = R"lua(
local now = tonumber(ARGV[1])
local next_due = nil
for q = 1, nqueues() do
  local blocked = false
  if redis.call('EXISTS', key(q, PAUSED)) == 0 then
    -- A queue at its rate limit has no work before its oldest start in the window expires.
    local l = redis.call('HMGET', key(q, LIMITS), 'rate_max', 'rate_window', 'rate_used', 'concurrency')
    -- A queue with all its concurrency slots taken has no work until one leaves (which wakes).
    if (tonumber(l[4]) or 0) > 0 and redis.call('ZCARD', key(q, IDS.active)) >= tonumber(l[4]) then
      blocked = true
    end
    if l[1] then
      local cut = now - tonumber(l[2])
      local used = tonumber(l[3]) or 0
      for _, m in ipairs(redis.call('ZRANGEBYSCORE', key(q, STARTS), '-inf', cut)) do
        used = used - (tonumber(string.match(m, ':(%d+)$')) or 0)
      end
      if used >= tonumber(l[1]) then
        local first = redis.call('ZRANGEBYSCORE', key(q, STARTS), '(' .. cut, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
        if #first > 0 then
          blocked = true
          local at = tonumber(first[2]) + tonumber(l[2])
          if not next_due or at < next_due then next_due = at end
        end
      end
    end
  end
  if not blocked and redis.call('EXISTS', key(q, PAUSED)) == 0 then
    if redis.call('ZCARD', key(q, READY)) > 0 then return '-1' end
    local first = redis.call('ZRANGE', key(q, DELAYED), 0, 0, 'WITHSCORES')
    if #first > 0 then
      local at = tonumber(first[2])
      if at <= now then return '-1' end
      if not next_due or at < next_due then next_due = at end
    end
  end
end
if next_due then return int(math.min(next_due, 4e18)) end
return '-2'
)lua";

// fetch (read-only; get). ARGV: id. Returns the 5 values of row(), or an empty array.
inline constexpr std::string_view fetch = R"lua(
local out = {}
row(1, ARGV[1], out)
return out
)lua";

}  // namespace jobq::detail::redis::lua
