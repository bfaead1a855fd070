#pragma once
// The enqueue script (enqueue, enqueue_many and fire_schedule). KEYS and ARGV as described
// below; key names as in keys.hpp.

#include <string_view>

namespace jobq::detail::redis::lua {

// enqueue (also fire_schedule). KEYS: NK per queue, then for fire_schedule the schedules hash.
// ARGV: now, call nonce, compare-and-set ('' for enqueue; "name expected next" for
// fire_schedule), layout ('1' wide, '' narrow), then per job, wide: queue index, id, 'r' (due:
// ready) or 'd' (delayed), its index score and member, the state entry, the fixed part
// (carrying the nonce), unique key, group, mode ('' plain, 't<ms>' throttle, 'd<ms>' debounce),
// deadline ('' none, else expires_at: Q:deadlines);
// narrow (a batch of one queue without unique keys, groups, throttle or debounce: fewer
// arguments to parse): id .. fixed part only. The client formats them (rank() and the state
// entry as here). Returns id, created (1/0) per job, then for fire_schedule 1 (fired),
// or just {0} when the compare-and-set failed. Plain batches read first, then write one command
// per key; a batch with throttle or debounce jobs writes job by job (a later job of the batch
// must see an earlier one as its key's holder).
inline constexpr std::string_view enqueue = R"lua(
-- keys: JOBS READY DELAYED IDS.queued UNIQUE WAKE STATE LIMITS GROUPS GACTIVE PARKED DEADLINES NONE
-- lazy uniqueness: hot holds_unique
local now, nonce, cas, wide = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4] == '1'
local FIRST = 5
local W, O = 6, 0  -- fields per job, offset of the id
if wide then W, O = 11, 1 end
local byq = {}
local special, grouped, uniq, expiring = false, false, false, false
for i = FIRST, #ARGV, W do
  local q = wide and tonumber(ARGV[i]) or 1
  local g = byq[q]
  if not g then
    g = {ids = {}, at = {}}
    byq[q] = g
  end
  g.ids[#g.ids + 1] = ARGV[i + O]
  g.at[#g.at + 1] = i
  if wide then
    if ARGV[i + 9] ~= '' then special = true end
    if ARGV[i + 8] ~= '' then grouped = true end
    if ARGV[i + 7] ~= '' then uniq = true end
    if ARGV[i + 10] ~= '' then expiring = true end
  end
end
-- Only the keys this batch may write and does not read first (Q:jobs is read below; a read of
-- a key of the wrong type fails before anything is written). The wake list's length is kept
-- for the wake-up of the (single) flush below.
local touched = {STATE, READY, DELAYED, IDS.queued}
if uniq then touched[#touched + 1] = UNIQUE end
if expiring then touched[#touched + 1] = DEADLINES end
if grouped or special then touched[#touched + 1] = GROUPS end
if special then
  touched[#touched + 1] = PARKED
  touched[#touched + 1] = LIMITS
  touched[#touched + 1] = GACTIVE
end
local wlen = {}
for q in pairs(byq) do
  check_keys(q, touched)
  local n = redis.pcall('LLEN', key(q, WAKE))
  if type(n) == 'table' then errors().read_failed(key(q, WAKE), 'list', n) end
  wlen[q] = n
end
local existing = {}
for q, g in pairs(byq) do
  local docs = mget(key(q, JOBS), g.ids)
  for j, i in ipairs(g.at) do existing[i] = docs[j] end
end
local marker = '"nonce":"' .. nonce .. '"'
if cas ~= '' then
  -- fire_schedule: compare-and-set of next_run; the entry is "<next_run> <nonce of the call that
  -- set it> <spec>", so a call resent after a lost reply recognises its own earlier success.
  local sk = KEYS[#KEYS]
  local t = redis.call('TYPE', sk)['ok']
  if t ~= 'none' and t ~= 'hash' then fail('WRONGTYPE jobq: key ' .. sk .. ' holds a ' .. t .. ' where jobq keeps a hash') end
  local name, expected, nxt = string.match(cas, '^(%S+) (%S+) (%S+)$')
  local cur = redis.call('HGET', sk, name)
  if not cur then return {0} end
  local at, who, spec = string.match(cur, '^(%-?%d+) (%S+) (.*)$')
  if not at then fail('jobq: schedule ' .. name .. ' in ' .. sk .. ' is corrupted') end
  if not (at == nxt and who == nonce) then
    if at ~= expected then return {0} end
    redis.call('HSET', sk, name, nxt .. ' ' .. nonce .. ' ' .. spec)
  end
end
local results, taken = {}, {}
local w = {}
local function flush()
  for q, g in pairs(w) do
    bulk('HSET', key(q, JOBS), g.jobs, 2)
    bulk('HSET', key(q, STATE), g.state, 2)
    bulk('ZADD', key(q, IDS.queued), g.ids, 2)
    bulk('ZADD', key(q, READY), g.r, 2)
    bulk('ZADD', key(q, DELAYED), g.d, 2)
    bulk('HSET', key(q, UNIQUE), g.unique, 2)
    bulk('HSET', key(q, GROUPS), g.groups, 2)
    bulk('ZADD', key(q, DEADLINES), g.dls, 2)
    wake(q, g.n, wlen[q])
    wlen[q] = nil  -- a later flush (job by job) reads it again
  end
  w = {}
end
-- Debounce and its helpers are created only by the calls that debounce.
-- lazy debouncing: debounce
local debounce_fn = nil
for i = FIRST, #ARGV, W do
  local q, id, uk, grp, mode = 1, ARGV[i + O], '', '', ''
  if wide then q, uk, grp, mode = tonumber(ARGV[i]), ARGV[i + 7], ARGV[i + 8], ARGV[i + 9] end
  local out_id, created = id, 1
  -- Ids are allocated before the call, so a job already stored under this id with this call's
  -- nonce was written by an earlier attempt whose reply was lost: report it as created.
  local old = existing[i]
  if old and not string.find(old, marker, 1, true) then
    fail('jobq: job id ' .. id .. ' already exists in ' .. key(q, JOBS) ..
         ': the id counter went back (was the <prefix>:id key deleted?)')
  end
  if not old then
    local holder = nil
    if uk ~= '' then
      holder = taken[q .. ':' .. uk]
      if not holder then
        -- The holder is the latest job of the queue with this key, in any state.
        local hid = redis.call('HGET', key(q, UNIQUE), uk)
        local hot_fn, holds_fn = uniqueness()
        local h = hid and hot_fn(q, hid)
        if h then
          local kind = string.sub(mode, 1, 1)
          if kind == 'd' then
            if h.state == 'queued' then
              debounce_fn = debounce_fn or debouncing()
              debounce_fn(q, hid, h, tonumber(string.sub(mode, 2)), ARGV[i + O + 5], now)
              holder = hid
            end
          elseif holds_fn(h, now) then
            holder = hid
          elseif kind == 't' then
            local c = string.match(redis.call('HGET', key(q, JOBS), hid) or '', '"created_at":"(%-?%d+)"')
            if c and tonumber(c) + tonumber(string.sub(mode, 2)) > now then holder = hid end
          end
        end
      end
    end
    if holder then
      out_id, created = holder, 0
    else
      local g = w[q]
      if not g then
        g = {jobs = {}, state = {}, ids = {}, r = {}, d = {}, unique = {}, groups = {}, dls = {}, n = 0}
        w[q] = g
      end
      local n = #g.jobs
      g.jobs[n + 1], g.jobs[n + 2] = id, ARGV[i + O + 5]
      g.state[n + 1], g.state[n + 2] = id, ARGV[i + O + 4]
      g.ids[n + 1], g.ids[n + 2] = id, id
      local z = g[ARGV[i + O + 1]]
      z[#z + 1] = ARGV[i + O + 2]
      z[#z + 1] = ARGV[i + O + 3]
      if uk ~= '' then
        if not special then taken[q .. ':' .. uk] = id end
        g.unique[#g.unique + 1] = uk
        g.unique[#g.unique + 1] = id
      end
      if grp ~= '' then
        g.groups[#g.groups + 1] = id
        g.groups[#g.groups + 1] = grp
      end
      if wide and ARGV[i + 10] ~= '' then
        g.dls[#g.dls + 1] = ARGV[i + 10]
        g.dls[#g.dls + 1] = id
      end
      g.n = g.n + 1
      if special then flush() end
    end
  end
  results[#results + 1] = out_id
  results[#results + 1] = created
end
flush()
if cas ~= '' then results[#results + 1] = 1 end
return results
)lua";

}  // namespace jobq::detail::redis::lua
