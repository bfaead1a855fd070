#pragma once
// The scripts that change a queue or a job outside a lease: cancel, redrive, pause, resume,
// prune, and limits (set_queue_limits).

#include <string_view>

namespace jobq::detail::redis::lua {

// cancel (queued, waiting or active jobs: cancel, cancel_many), each id in turn as if alone.
// ARGV: now, ids. Returns {1 or 0 per id, flow records sent}. An active job's lease token goes
// (finish), so its worker's calls are refused; its group's slot is freed as when it ends; its
// cancel is published on channel('cancels') whoever listens (watch_cancels).
inline constexpr std::string_view cancel = R"lua(
errors().check_types(1)
local now = tonumber(ARGV[1])
local out, sent = {}, 0
local function one(id)
  local h = hot(1, id)
  if not h then return 0 end
  check_doc(1, id, redis.call('HGET', key(1, JOBS), id))
  if h.state ~= 'queued' and h.state ~= 'waiting' and h.state ~= 'active' then return 0 end
  sent = sent + cancel_job(id, h, now)
  return 1
end
for i = 2, #ARGV do out[#out + 1] = one(ARGV[i]) end
out[#out + 1] = sent
return out
)lua";

// redrive (redrive, redrive_many), each id in turn as if alone. ARGV: now, ids. Returns {1 or 0
// per id, flow records sent}. A flow member that does not continue on failure is refused while
// one of its dependencies is not completed (as last settled here); its dependents that died
// because of it wait again (flow_spread).
inline constexpr std::string_view redrive = R"lua(
errors().check_types(1)
local now = tonumber(ARGV[1])
local out, sent, woke = {}, 0, 0
local function one(id)
  local h = hot(1, id)
  if not h or h.state ~= 'dead' then return 0 end
  local member = redis.call('HEXISTS', key(1, MEMBER), id) == 1
  local pe = member and redis.call('HGET', key(1, PENDING), id)
  if pe and string.match(pe, ' (%d)$') ~= '1' then
    local doc = cjson.decode(redis.call('HGET', key(1, JOBS), id))
    for d in string.gmatch(doc.depends_on or '', '%d+') do
      local r = redis.call('HGET', key(1, RESOLVED), id .. ':' .. d)
      if not r or string.sub(r, -1) ~= 'c' then return 0 end
    end
  end
  local uk = h.unique_for ~= '-' and unique_key_of(1, id)
  local take = false
  if uk then
    local hid = redis.call('HGET', key(1, UNIQUE), uk)
    local other = hid and hid ~= id and hot(1, hid)
    take = not other or not holds_unique(other, now)
  end
  unindex(1, id, h)
  h.state = 'queued'
  h.attempts = 0
  h.finished_at = '-'
  h.run_at = int(now)
  if take then redis.call('HSET', key(1, UNIQUE), uk, id) end
  index(1, id, h, now)
  save(1, id, h)
  woke = woke + 1
  if member then
    local _, n = flow_spread(now, {{id, '-', ''}}, {})
    sent = sent + n
  end
  return 1
end
for i = 2, #ARGV do out[#out + 1] = one(ARGV[i]) end
if woke > 0 then wake(1, woke) end
out[#out + 1] = sent
return out
)lua";

// pause
inline constexpr std::string_view pause = R"lua(
errors().check_types(1)
redis.call('SET', key(1, PAUSED), '1')
return 1
)lua";

// resume
inline constexpr std::string_view resume = R"lua(
errors().check_types(1)
redis.call('DEL', key(1, PAUSED))
wake(1, 1)
return 1
)lua";

// prune. ARGV: cutoff for completed, dead, cancelled (finished_at strictly before it is deleted;
// '' keeps forever), keep at most N per state ('' = no cap), batch size. Returns deleted ids.
inline constexpr std::string_view prune = R"lua(
errors().check_types(1)
local batch = tonumber(ARGV[5])
local deleted = {}
local function drop(id, state)
  local raw = redis.call('HGET', key(1, STATE), id)
  local h = raw and string.match(raw, HOT) and parse_hot(1, id, raw)
  if h and h.state ~= state then
    -- the index disagrees with the job (never written so): fix the index, keep the job
    redis.call('ZREM', key(1, DONE[state]), id)
    return
  end
  drop_finished(1, id, state, h)
  deleted[#deleted + 1] = id
end
for i, state in ipairs({'completed', 'dead', 'cancelled'}) do
  if ARGV[i] ~= '' and #deleted < batch then
    local ids = redis.call('ZRANGEBYSCORE', key(1, DONE[state]), '-inf', '(' .. ARGV[i],
                           'LIMIT', 0, batch - #deleted)
    for _, id in ipairs(ids) do drop(id, state) end
  end
  if ARGV[4] ~= '' and #deleted < batch then
    local excess = redis.call('ZCARD', key(1, DONE[state])) - tonumber(ARGV[4])
    if excess > 0 then
      local ids = redis.call('ZRANGE', key(1, DONE[state]), 0, math.min(excess, batch - #deleted) - 1)
      for _, id in ipairs(ids) do drop(id, state) end
    end
  end
end
return deleted
)lua";

// limits (set_queue_limits). ARGV: rate max ('' = no rate limit), window ms, group concurrency
// (0 = none), queue concurrency
// (0 = none). Every parked job goes back to the ready set: the next claims park again what the
// new limit still holds back.
inline constexpr std::string_view limits = R"lua(
errors().check_types(1, {LIMITS, PARKED, READY, WAKE})
if ARGV[1] == '' then
  redis.call('HDEL', key(1, LIMITS), 'rate_max', 'rate_window')
else
  redis.call('HSET', key(1, LIMITS), 'rate_max', ARGV[1], 'rate_window', ARGV[2])
end
if tonumber(ARGV[3]) > 0 then
  redis.call('HSET', key(1, LIMITS), 'group_concurrency', ARGV[3])
else
  redis.call('HDEL', key(1, LIMITS), 'group_concurrency')
end
if tonumber(ARGV[4]) > 0 then
  redis.call('HSET', key(1, LIMITS), 'concurrency', ARGV[4])
else
  redis.call('HDEL', key(1, LIMITS), 'concurrency')
end
local n = 0
repeat
  local moved = unpark_members(1, redis.call('ZRANGE', key(1, PARKED), 0, 999))
  n = n + moved
until moved == 0
wake(1, math.max(n, 1))
return 1
)lua";

}  // namespace jobq::detail::redis::lua
