#pragma once
// The scripts of a leased job: complete, fail, extend (heartbeat), release, progress, and
// recover for leases that expired.

#include <string_view>

namespace jobq::detail::redis::lua {

// complete (also complete_many, for the completions of one queue). ARGV: now, retry flag, then
// per completion: id, token, result JSON ('' = null, not stored). Returns 1 or 0 per completion,
// then how many flow records went to the outbox.
inline constexpr std::string_view complete = R"lua(
-- keys: JOBS READY DELAYED LEASES IDS.queued IDS.active IDS.completed IDS.dead IDS.cancelled DONE.completed DONE.dead DONE.cancelled WAKE STATE ERRORS RESULTS PROGRESS LIMITS GROUPS GACTIVE PARKED IDS.waiting DEPENDENTS PENDING RESOLVED MEMBER FDONE OUTBOX SEQ NONE
-- lazy parsing: parse_hot
-- lazy grouping: left_active
-- lazy notifying: notice publish percent qname
local ch = channel()
local listen = listening(ch)
local grouped = redis.call('EXISTS', key(1, GROUPS)) == 1
local flowing = redis.call('EXISTS', key(1, MEMBER)) == 1
local sent = 0
local now, retry = tonumber(ARGV[1]), ARGV[2] == '1'
local fin = int(now)
local ids = {}
for i = 3, #ARGV, 3 do ids[#ids + 1] = ARGV[i] end
local raws = mget(key(1, STATE), ids)
-- An active entry: "attempts max_attempts priority run_at", unique_for, lease_token; the
-- completed entry is built from them without a table per job (parse_hot when this does not
-- match: another state, or a corrupted entry).
local ACTIVE = '^active (%d+ %d+ %-?%d+ %-?%d+) %S+ %S+ (%S+) (%S+) %S+ %S+$'
local cur, changed, out = {}, {}, {}
local leases, results = {}, {}
local tries = {}
for k, id in ipairs(ids) do
  local token = ARGV[3 * k + 1]
  local s = cur[id] or raws[k]
  local four, uf, tk
  if s then four, uf, tk = string.match(s, ACTIVE) end
  if four and token ~= '' and tk == token then
    cur[id] = 'completed ' .. four .. ' - ' .. fin .. ' ' .. uf .. ' - ' .. token .. ' completed'
    changed[#changed + 1] = id
    tries[#tries + 1] = four
    local r = ARGV[3 * k + 2]
    if r ~= '' then
      results[#results + 1] = id
      results[#results + 1] = r
    end
    out[k] = 1
  else
    local h = s and parsing()(1, id, s)
    if retry and h and token ~= '' and h.last_token == token and h.outcome == 'completed' then
      out[k] = 1
    else
      out[k] = 0
    end
  end
end
if #changed > 0 then
  -- Type checks of the keys written without a read first, then reads, then the writes.
  local touched = {LEASES, IDS.active, IDS.completed, DONE.completed}
  if #results > 0 then touched[#touched + 1] = RESULTS end
  if grouped then
    for _, k in ipairs({GROUPS, GACTIVE, LIMITS, PARKED, READY, WAKE}) do touched[#touched + 1] = k end
  end
  if flowing then
    for _, k in ipairs({READY, DELAYED, WAKE, ERRORS, IDS.waiting, IDS.dead, IDS.cancelled, DONE.dead,
                        DONE.cancelled, DEPENDENTS, PENDING, RESOLVED, FDONE, OUTBOX, SEQ}) do
      touched[#touched + 1] = k
    end
  end
  check_keys(1, touched)
  local ps = listen and mget(key(1, PROGRESS), changed)
  -- Flow members go to Q:fdone instead of Q:done:completed (only whole flows are pruned).
  local fm = flowing and mget(key(1, MEMBER), changed) or {}
  local idpairs, done, state, ends, moved = {}, {}, {}, {}, {}
  for j, id in ipairs(changed) do
    idpairs[2 * j - 1], idpairs[2 * j] = id, id
    state[2 * j - 1], state[2 * j] = id, cur[id]
    if fm[j] then
      ends[#ends + 1] = {id, 'c', ''}
      moved[#moved + 1] = fin
      moved[#moved + 1] = id
    else
      done[#done + 1] = fin
      done[#done + 1] = id
    end
  end
  bulk('ZREM', key(1, IDS.active), changed, 1)
  bulk('ZREM', key(1, LEASES), changed, 1)
  bulk('ZADD', key(1, IDS.completed), idpairs, 2)
  bulk('ZADD', key(1, DONE.completed), done, 2)
  bulk('HSET', key(1, STATE), state, 2)
  bulk('HSET', key(1, RESULTS), results, 2)
  if grouped then grouping()(1, changed, true) else freed_slots(1, #changed) end
  if #ends > 0 then
    -- What waits on these members is settled (released) in this step.
    bulk('ZADD', key(1, FDONE), moved, 2)
    local _
    _, sent = flow_spread(now, ends, {})
  end
  if listen then
    local nt, pub, pct, qn = notifying()
    local list, queue = {}, qn(1)
    for j, id in ipairs(changed) do
      list[j] = nt('completed', id, queue, tonumber(string.match(tries[j], '^%d+')), pct(ps[j]), '')
    end
    pub(ch, list)
  end
end
out[#ids + 1] = sent
return out
)lua";

// fail. ARGV: id, token, now, message, retry_at ('' = none), retry flag.
// Returns {0 rejected, 1 retried or 2 dead; how many flow records went to the outbox}.
inline constexpr std::string_view fail = R"lua(
errors().check_types(1)
local id, token, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local h, seen = leased(1, id, token)
if not h then
  if ARGV[6] == '1' and seen and token ~= '' and seen.last_token == token then
    if seen.outcome == 'retried' then return {1, 0} end
    if seen.outcome == 'dead' then return {2, 0} end
  end
  return {0, 0}
end
local attempts = h.attempts
append_error(1, id, attempts, ARGV[4], now)
h.last_token = token
local retried = ARGV[5] ~= '' and attempts < tonumber(h.max_attempts)
if retried then
  h.outcome = 'retried'
  requeue(1, id, h, ARGV[5], now)
else
  h.outcome = 'dead'
  finish(1, id, h, 'dead', now)
end
left_active(1, {id})
local ch = channel()
if listening(ch) then
  publish(ch, {notice(retried and 'failed' or 'dead', id, qname(1), attempts, 0, ARGV[4])})
end
local sent = retried and 0 or flow_died(id, ARGV[4], now)
return {retried and 1 or 2, sent}
)lua";

// extend. ARGV: id, token, now, lease ms. Returns 1 or 0.
inline constexpr std::string_view extend = R"lua(
errors().check_types(1)
local id, now = ARGV[1], tonumber(ARGV[3])
local h = leased(1, id, ARGV[2])
if not h then return 0 end
h.lease_until = int(now + tonumber(ARGV[4]))
redis.call('ZADD', key(1, LEASES), h.lease_until, id)
save(1, id, h)
return 1
)lua";

// release, and snooze (release at a chosen time). ARGV: id, token, now, retry flag, run_at.
// Returns 1 or 0.
inline constexpr std::string_view release = R"lua(
errors().check_types(1)
local id, token, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local h, seen = leased(1, id, token)
if not h then
  if ARGV[4] == '1' and seen and token ~= '' and seen.last_token == token
      and seen.outcome == 'released' then return 1 end
  return 0
end
h.attempts = math.max(h.attempts - 1, 0)
h.last_token, h.outcome = token, 'released'
requeue(1, id, h, int(tonumber(ARGV[5])), now)
left_active(1, {id})
return 1
)lua";

// progress. ARGV: id, token, percent, message. Returns 1 or 0.
inline constexpr std::string_view progress = R"lua(
-- lazy notifying: notice publish qname
errors().check_types(1)
local h = leased(1, ARGV[1], ARGV[2])
if not h then return 0 end
redis.call('HSET', key(1, PROGRESS), ARGV[1], ARGV[3] .. ' ' .. ARGV[4])
local ch = channel()
if listening(ch) then
  local nt, pub, qn = notifying()
  pub(ch, {nt('progress', ARGV[1], qn(1), h.attempts, tonumber(ARGV[3]), ARGV[4])})
end
return 1
)lua";

// recover. ARGV: now, max jobs, error message, the cutoff for uncommitted flow members.
// Returns {retried, dead, examined, outbox length, deadline entries settled, {"<id> <flow id>" of
// the members written before the cutoff and still waiting for their flow's commit}}. After the
// leases, the deadlines (Q:deadlines) passed before now: a queued job ends cancelled, "expired:
// not started by <ISO time>" appended; an entry of a job that ended or is gone is dropped; an
// active or waiting job keeps its entry (stepped over).
inline constexpr std::string_view recover = R"lua(
errors().check_types(1)
local now, max = tonumber(ARGV[1]), tonumber(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', key(1, LEASES), '-inf', now, 'LIMIT', 0, max)
local hs = {}
for i, id in ipairs(ids) do hs[i] = hot(1, id) or false end
local retried, dead = 0, 0
local left, list = {}, {}
local queue = qname(1)
local died = {}
for i, id in ipairs(ids) do
  local h = hs[i]
  if not h or h.state ~= 'active' then
    redis.call('ZREM', key(1, LEASES), id)  -- an index entry without an active job: drop it
    if not h then redis.call('ZREM', key(1, IDS.active), id) end
  else
    local attempts = h.attempts
    append_error(1, id, attempts, ARGV[3], now)
    left[#left + 1] = id
    if attempts < tonumber(h.max_attempts) then
      requeue(1, id, h, int(now), now)
      retried = retried + 1
      list[#list + 1] = notice('failed', id, queue, attempts, 0, ARGV[3])
    else
      finish(1, id, h, 'dead', now)
      died[#died + 1] = id
      dead = dead + 1
      list[#list + 1] = notice('dead', id, queue, attempts, 0, ARGV[3])
    end
  end
end
left_active(1, left)
local ch = channel()
if #list > 0 and listening(ch) then publish(ch, list) end
for _, id in ipairs(died) do flow_died(id, ARGV[3], now) end
local settled, kept = 0, 0
while settled < max do
  local late = redis.call('ZRANGEBYSCORE', key(1, DEADLINES), '-inf', '(' .. int(now), 'WITHSCORES', 'LIMIT', kept, 100)
  if #late == 0 then break end
  for i = 1, #late, 2 do
    local id = late[i]
    local h = hot(1, id)
    if h and (h.state == 'active' or h.state == 'waiting') then
      kept = kept + 1
    else
      if h and h.state == 'queued' then
        append_error(1, id, h.attempts, 'expired: not started by ' .. iso_time(tonumber(late[i + 1])), now)
        cancel_job(id, h, now)
      end
      redis.call('ZREM', key(1, DEADLINES), id)
      settled = settled + 1
    end
  end
end
local stale = redis.call('ZRANGEBYSCORE', key(1, UNCOMMITTED), '-inf', ARGV[4], 'LIMIT', 0, max)
for i, id in ipairs(stale) do stale[i] = id .. ' ' .. (redis.call('HGET', key(1, MEMBER), id) or '0') end
return {retried, dead, #ids, redis.call('LLEN', key(1, OUTBOX)), settled, stale}
)lua";

}  // namespace jobq::detail::redis::lua
