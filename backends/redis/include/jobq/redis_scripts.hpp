#pragma once
// The Lua scripts of the Redis backend: every state change is one of these, run atomically by
// Redis with EVALSHA. Included by jobq/redis.hpp only.
//
// Key layout of one queue (Q = "<prefix>:{<queue>}", so every key of a queue shares the hash
// tag {<queue>} and lives in one Redis Cluster slot). Every script gets the NK = 19 keys of each
// queue it touches in KEYS, in this order; no script builds a key name itself.
//
//    1 Q:jobs            hash    id -> the job's fixed fields as JSON (written once by enqueue;
//                                integers as decimal strings). Scripts never decode it on the
//                                hot paths: the fields that change live in Q:state
//    2 Q:ready           zset    queued jobs that are due; score -priority, member
//                                hex16(run_at) .. hex14(id), so ZRANGE order is priority desc,
//                                then run_at asc, then id asc (members of equal score sort
//                                lexicographically)
//    3 Q:delayed         zset    queued jobs not yet due; score run_at, member = the ready
//                                member .. priority (so claim promotes without reading the job)
//    4 Q:leases          zset    active jobs; score lease_until, member id
//  5-9 Q:ids:<state>     zset    every job of a state (queued, active, completed, dead,
//                                cancelled); score = member = id: exact counts (ZCARD) and
//                                stable pages by id (ZRANGE)
// 10-12 Q:done:<state>   zset    finished jobs (completed, dead, cancelled); score finished_at,
//                                for prune
//   13 Q:unique          hash    unique key -> id of the job that holds or last held it
//   14 Q:paused          string  present while the queue is paused
//   15 Q:wake            list    wake-up markers (at most 32) that waiting workers BLPOP
//   16 Q:state           hash    id -> the job's changing fields, 11 words separated by spaces
//                                (see parse_hot): state attempts max_attempts priority run_at
//                                lease_until finished_at unique_for lease_token last_token
//                                last_outcome ('-' = none). A job exists iff it has this entry
//   17 Q:errors          hash    id -> JSON array of the failed attempts (absent: none)
//   18 Q:results         hash    id -> the result JSON of a completed job (absent: null)
//   19 Q:progress        hash    id -> "<percent> <message>" (absent: 0, "")
//
// Time is never read inside a script: the client passes `now` from its injected clock.

#include <array>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace jobq::detail::redis {

/// @brief Keys per queue, in the order scripts receive them.
inline constexpr std::array<std::string_view, 19> queue_key_suffixes = {
    "jobs",          "ready",    "delayed",        "leases",    "ids:queued",
    "ids:active",    "ids:completed", "ids:dead",  "ids:cancelled",
    "done:completed", "done:dead", "done:cancelled", "unique",   "paused",
    "wake",          "state",    "errors",         "results",   "progress"};

/// @brief Words of a Q:state entry.
inline constexpr std::size_t hot_fields = 11;

/// @brief The scripts, in the order of `script_bodies`.
enum class Script : std::size_t {
  enqueue, claim, complete, fail, extend, release, progress, recover,
  cancel, redrive, pause, resume, counts, list, prune, peek, fetch, count_
};

/// @brief How many scripts there are.
inline constexpr std::size_t script_count = static_cast<std::size_t>(Script::count_);

// Shared helpers, prepended to every script.
inline constexpr std::string_view script_prelude = R"lua(
local NK = 19
local JOBS, READY, DELAYED, LEASES, UNIQUE, PAUSED, WAKE = 1, 2, 3, 4, 13, 14, 15
local STATE, ERRORS, RESULTS, PROGRESS = 16, 17, 18, 19
local IDS = {queued = 5, active = 6, completed = 7, dead = 8, cancelled = 9}
local DONE = {completed = 10, dead = 11, cancelled = 12}
local TYPES = {'hash', 'zset', 'zset', 'zset', 'zset', 'zset', 'zset', 'zset', 'zset', 'zset',
               'zset', 'zset', 'hash', 'string', 'list', 'hash', 'hash', 'hash', 'hash'}
local WAKE_MAX = 32
local BULK = 500  -- elements per variadic command (unpack() has a stack limit)

local function key(q, i) return KEYS[(q - 1) * NK + i] end
local function nqueues() return #KEYS / NK end
local function fail(msg) error({err = msg}) end
local function int(x) return string.format('%d', x) end

-- Checked before any write: a script that stopped half-way on WRONGTYPE would leave a job
-- indexed in some keys and not others (Redis does not roll a script back). `only` lists the
-- keys a script touches (nil: all of them).
local function check_types(q, only)
  local n = only and #only or NK
  for j = 1, n do
    local i = only and only[j] or j
    local t = redis.call('TYPE', key(q, i))['ok']
    if t ~= 'none' and t ~= TYPES[i] then
      fail('WRONGTYPE jobq: key ' .. key(q, i) .. ' holds a ' .. t .. ' where jobq keeps a ' .. TYPES[i])
    end
  end
end
local function check_all(only) for q = 1, nqueues() do check_types(q, only) end end

-- §
-- One variadic command over a flat list of arguments, in chunks of BULK elements of `step`
-- arguments each.
local function bulk(cmd, k, args, step)
  local n = #args
  local per = BULK * step
  for i = 1, n, per do redis.call(cmd, k, unpack(args, i, math.min(i + per - 1, n))) end
end

-- §
-- HMGET in chunks; the result has one entry per id (false when absent).
local function mget(k, ids)
  local out = {}
  for i = 1, #ids, BULK do
    local part = redis.call('HMGET', k, unpack(ids, i, math.min(i + BULK - 1, #ids)))
    for j = 1, #part do out[#out + 1] = part[j] end
  end
  return out
end

-- §
local function corrupted(q, id, where)
  fail('jobq: job ' .. id .. ' in ' .. key(q, where) .. ' is corrupted (not a jobq job record)')
end

-- §
local STATES = {queued = true, active = true, completed = true, dead = true, cancelled = true}
local HOT = '^(%l+) (%d+) (%d+) (%-?%d+) (%-?%d+) (%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$'
local function parse_hot(q, id, s)
  local st, at, ma, pr, ra, lu, fa, uf, tk, lt, oc = string.match(s, HOT)
  if not st or not STATES[st] then corrupted(q, id, STATE) end
  return {state = st, attempts = tonumber(at), max_attempts = ma, priority = pr, run_at = ra,
          lease_until = lu, finished_at = fa, unique_for = uf, token = tk, last_token = lt,
          outcome = oc}
end
-- §
local function pack(h)
  return table.concat({h.state, int(h.attempts), h.max_attempts, h.priority, h.run_at, h.lease_until,
                       h.finished_at, h.unique_for, h.token, h.last_token, h.outcome}, ' ')
end
-- §
local function hot(q, id)
  local s = redis.call('HGET', key(q, STATE), id)
  if not s then return nil end
  return parse_hot(q, id, s)
end
-- §
local function save(q, id, h) redis.call('HSET', key(q, STATE), id, pack(h)) end

-- §
-- The fixed part must be a document of this id (cheap check; the client parses it fully).
local function check_doc(q, id, raw)
  if type(raw) ~= 'string' or string.sub(raw, 1, 1) ~= '{'
      or not string.find(raw, '"id":"' .. id .. '"', 1, true) then
    corrupted(q, id, JOBS)
  end
end

-- §
local function rank(run_at, id)
  local at = tonumber(run_at)
  if at < 0 then at = 0 elseif at > 4e18 then at = 4e18 end
  return string.format('%016x%014x', at, tonumber(id))
end

-- §
local function unindex(q, id, h)
  local st = h.state
  redis.call('ZREM', key(q, IDS[st]), id)
  if st == 'queued' then
    local r = rank(h.run_at, id)
    redis.call('ZREM', key(q, READY), r)
    redis.call('ZREM', key(q, DELAYED), r .. h.priority)
  elseif st == 'active' then
    redis.call('ZREM', key(q, LEASES), id)
  else
    redis.call('ZREM', key(q, DONE[st]), id)
  end
end

-- §
local function index(q, id, h, now)
  local st = h.state
  redis.call('ZADD', key(q, IDS[st]), id, id)
  if st == 'queued' then
    local r = rank(h.run_at, id)
    if tonumber(h.run_at) <= now then
      redis.call('ZADD', key(q, READY), 0 - tonumber(h.priority), r)
    else
      redis.call('ZADD', key(q, DELAYED), h.run_at, r .. h.priority)
    end
  elseif st == 'active' then
    redis.call('ZADD', key(q, LEASES), h.lease_until, id)
  else
    redis.call('ZADD', key(q, DONE[st]), h.finished_at, id)
  end
end

-- §
-- The unique key of a job that has one (h.unique_for ~= '-'): read from its fixed part, which
-- is decoded only here (jobs with a unique key, when they finish).
local function unique_key_of(q, id)
  local raw = redis.call('HGET', key(q, JOBS), id)
  if not raw then return nil end
  local ok, doc = pcall(cjson.decode, raw)
  if ok and type(doc) == 'table' and type(doc.unique_key) == 'string' and doc.unique_key ~= '' then
    return doc.unique_key
  end
  return nil
end

-- §
local function release_unique(q, id, h)
  if h.unique_for == '-' then return end
  local uk = unique_key_of(q, id)
  if uk and redis.call('HGET', key(q, UNIQUE), uk) == id then redis.call('HDEL', key(q, UNIQUE), uk) end
end

-- §
local function holds_unique(h, now)
  if h.state == 'queued' or h.state == 'active' then return true end
  return h.state == 'completed' and tonumber(h.finished_at) ~= nil
      and tonumber(h.finished_at) + (tonumber(h.unique_for) or 0) > now
end

-- §
local function wake(q, n)
  local marks = {}
  for i = 1, math.min(n, WAKE_MAX) do marks[i] = '1' end
  if redis.call('RPUSH', key(q, WAKE), unpack(marks)) > WAKE_MAX then
    redis.call('LTRIM', key(q, WAKE), 0, WAKE_MAX - 1)
  end
end

-- §
local function append_error(q, id, attempt, message, now)
  local e = cjson.encode({attempt = attempt, message = message, at = now})
  local errs = redis.call('HGET', key(q, ERRORS), id)
  if not errs or errs == '' or errs == '[]' then
    errs = '[' .. e .. ']'
  else
    errs = string.sub(errs, 1, -2) .. ',' .. e .. ']'
  end
  redis.call('HSET', key(q, ERRORS), id, errs)
end

-- §
local function finish(q, id, h, state, now)
  unindex(q, id, h)
  h.state = state
  h.finished_at = int(now)
  h.token = '-'
  h.lease_until = '-'
  -- A completed job keeps its unique key for unique_for; dead and cancelled ones release it.
  if state ~= 'completed' or (tonumber(h.unique_for) or 0) <= 0 then release_unique(q, id, h) end
  index(q, id, h, now)
  save(q, id, h)
end

-- §
local function requeue(q, id, h, run_at, now)
  unindex(q, id, h)
  h.state = 'queued'
  h.run_at = run_at
  h.token = '-'
  h.lease_until = '-'
  index(q, id, h, now)
  save(q, id, h)
  wake(q, 1)
end

-- §
-- The job if it is active under this lease token; also the record as found, for the
-- idempotent replay of a call whose reply was lost (retry flag set by the client).
local function leased(q, id, token)
  local h = hot(q, id)
  if h and h.state == 'active' and token ~= '' and h.token == token then return h, h end
  return nil, h
end

-- §
-- What get/list return per job: fixed part, state entry, errors, result, progress.
local function row(q, id, out)
  local h = redis.call('HGET', key(q, STATE), id)
  if not h then return end
  out[#out + 1] = redis.call('HGET', key(q, JOBS), id) or ''
  out[#out + 1] = h
  out[#out + 1] = redis.call('HGET', key(q, ERRORS), id) or ''
  out[#out + 1] = redis.call('HGET', key(q, RESULTS), id) or ''
  out[#out + 1] = redis.call('HGET', key(q, PROGRESS), id) or ''
end
)lua";

/// @brief Script bodies, indexed by Script.
inline constexpr std::array<std::string_view, script_count> script_bodies = {
// enqueue. KEYS: NK per queue. ARGV: now, call nonce, then per job: queue index, id, unique key,
// 'r' (due: ready) or 'd' (delayed), its index score and member, the state entry, the fixed
// part (carrying the nonce); the client formats them (rank() and the state entry as here).
// Returns id, created (1/0) per job. All reads first, then writes, one command per key.
R"lua(
local now, nonce = tonumber(ARGV[1]), ARGV[2]
check_all({JOBS, STATE, READY, DELAYED, IDS.queued, UNIQUE, WAKE})
local W = 8
local byq = {}
for i = 3, #ARGV, W do
  local q = tonumber(ARGV[i])
  local g = byq[q]
  if not g then
    g = {ids = {}, at = {}}
    byq[q] = g
  end
  g.ids[#g.ids + 1] = ARGV[i + 1]
  g.at[#g.at + 1] = i
end
local existing = {}
for q, g in pairs(byq) do
  local docs = mget(key(q, JOBS), g.ids)
  for j, i in ipairs(g.at) do existing[i] = docs[j] end
end
local results, taken = {}, {}
local w = {}
local marker = '"nonce":"' .. nonce .. '"'
for i = 3, #ARGV, W do
  local q, id, uk = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2]
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
        local hid = redis.call('HGET', key(q, UNIQUE), uk)
        if hid then
          local h = hot(q, hid)
          if h and holds_unique(h, now) then holder = hid end
        end
      end
    end
    if holder then
      out_id, created = holder, 0
    else
      local g = w[q]
      if not g then
        g = {jobs = {}, state = {}, ids = {}, r = {}, d = {}, unique = {}, n = 0}
        w[q] = g
      end
      local n = #g.jobs
      g.jobs[n + 1], g.jobs[n + 2] = id, ARGV[i + 7]
      g.state[n + 1], g.state[n + 2] = id, ARGV[i + 6]
      g.ids[n + 1], g.ids[n + 2] = id, id
      local z = g[ARGV[i + 3]]
      z[#z + 1] = ARGV[i + 4]
      z[#z + 1] = ARGV[i + 5]
      if uk ~= '' then
        taken[q .. ':' .. uk] = id
        g.unique[#g.unique + 1] = uk
        g.unique[#g.unique + 1] = id
      end
      g.n = g.n + 1
    end
  end
  results[#results + 1] = out_id
  results[#results + 1] = created
end
for q, g in pairs(w) do
  bulk('HSET', key(q, JOBS), g.jobs, 2)
  bulk('HSET', key(q, STATE), g.state, 2)
  bulk('ZADD', key(q, IDS.queued), g.ids, 2)
  bulk('ZADD', key(q, READY), g.r, 2)
  bulk('ZADD', key(q, DELAYED), g.d, 2)
  bulk('HSET', key(q, UNIQUE), g.unique, 2)
  wake(q, g.n)
end
return results
)lua",

// claim. KEYS: NK per queue. ARGV: now, limit, lease ms, token seed. Promotes due delayed jobs,
// takes the best `limit` ready jobs over all unpaused queues, leases them. Returns per job:
// fixed part, new state entry, errors (false: none), progress (false: none).
R"lua(
local now, limit, lease, seed = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
check_all({JOBS, STATE, READY, DELAYED, LEASES, IDS.queued, IDS.active, PAUSED, ERRORS, PROGRESS})
local cands = {}
for q = 1, nqueues() do
  if redis.call('EXISTS', key(q, PAUSED)) == 0 then
    -- Bounded so one claim stays short; a larger backlog of due jobs is promoted over the next
    -- claims (ordering among the not yet promoted ones is then approximate).
    local due = redis.call('ZRANGEBYSCORE', key(q, DELAYED), '-inf', now, 'LIMIT', 0, 1000)
    if #due > 0 then
      local adds = {}
      for _, m in ipairs(due) do
        adds[#adds + 1] = 0 - tonumber(string.sub(m, 31))
        adds[#adds + 1] = string.sub(m, 1, 30)
      end
      bulk('ZREM', key(q, DELAYED), due, 1)
      bulk('ZADD', key(q, READY), adds, 2)
    end
    local top = redis.call('ZRANGE', key(q, READY), 0, limit - 1, 'WITHSCORES')
    for i = 1, #top, 2 do cands[#cands + 1] = {q, top[i], tonumber(top[i + 1])} end
  end
end
if nqueues() > 1 then
  table.sort(cands, function(a, b)
    if a[3] ~= b[3] then return a[3] < b[3] end
    return a[2] < b[2]
  end)
end
local horizon = math.max(now, 0)
local picked = {}
local stale = {}
local pos = 1
-- Reads in batches (one HMGET per queue and key); entries whose job is gone or no longer
-- queued at that rank are index leftovers: dropped, and the next candidates are read.
while #picked < limit and pos <= #cands do
  local batch, byq = {}, {}
  while #batch < limit - #picked and pos <= #cands do
    local c = cands[pos]
    pos = pos + 1
    -- run_at in the future only if the clock went back since the job was promoted: not yet.
    if tonumber(string.sub(c[2], 1, 16), 16) <= horizon then
      local e = {q = c[1], m = c[2], id = int(tonumber(string.sub(c[2], 17), 16))}
      batch[#batch + 1] = e
      byq[e.q] = byq[e.q] or {}
      local l = byq[e.q]
      l[#l + 1] = e
    end
  end
  for q, l in pairs(byq) do
    local ids = {}
    for j, e in ipairs(l) do ids[j] = e.id end
    local hs = mget(key(q, STATE), ids)
    local ds = mget(key(q, JOBS), ids)
    for j, e in ipairs(l) do
      e.raw = hs[j]
      e.doc = ds[j]
    end
  end
  for _, e in ipairs(batch) do
    local h = e.raw and parse_hot(e.q, e.id, e.raw)
    if h and h.state == 'queued' and rank(h.run_at, e.id) == e.m then
      check_doc(e.q, e.id, e.doc)
      e.h = h
      picked[#picked + 1] = e
    else
      stale[#stale + 1] = e
    end
  end
end
for _, e in ipairs(stale) do redis.call('ZREM', key(e.q, READY), e.m) end
local lease_until = int(now + lease)
local w = {}
for i, e in ipairs(picked) do
  local g = w[e.q]
  if not g then
    g = {ready = {}, ids = {}, active = {}, leases = {}, state = {}, list = {}}
    w[e.q] = g
  end
  local h = e.h
  h.state = 'active'
  h.attempts = h.attempts + 1
  h.token = seed .. string.format('%06x', i)
  h.lease_until = lease_until
  e.packed = pack(h)
  local n = #g.ids
  g.ready[n + 1] = e.m
  g.ids[n + 1] = e.id
  g.list[n + 1] = e
  g.active[2 * n + 1], g.active[2 * n + 2] = e.id, e.id
  g.leases[2 * n + 1], g.leases[2 * n + 2] = lease_until, e.id
  g.state[2 * n + 1], g.state[2 * n + 2] = e.id, e.packed
end
for q, g in pairs(w) do
  bulk('ZREM', key(q, READY), g.ready, 1)
  bulk('ZREM', key(q, IDS.queued), g.ids, 1)
  bulk('ZADD', key(q, IDS.active), g.active, 2)
  bulk('ZADD', key(q, LEASES), g.leases, 2)
  bulk('HSET', key(q, STATE), g.state, 2)
  local es = mget(key(q, ERRORS), g.ids)
  local ps = mget(key(q, PROGRESS), g.ids)
  for j, e in ipairs(g.list) do
    e.errors = es[j]
    e.progress = ps[j]
  end
end
local out = {}
for _, e in ipairs(picked) do
  out[#out + 1] = e.doc
  out[#out + 1] = e.packed
  out[#out + 1] = e.errors
  out[#out + 1] = e.progress
end
return out
)lua",

// complete (also complete_many, for the completions of one queue). ARGV: now, retry flag, then
// per completion: id, token, result JSON ('' = null, not stored). Returns 1 or 0 per completion.
R"lua(
check_types(1, {JOBS, STATE, LEASES, IDS.active, IDS.completed, DONE.completed, UNIQUE, RESULTS})
local now, retry = tonumber(ARGV[1]), ARGV[2] == '1'
local fin = int(now)
local ids = {}
for i = 3, #ARGV, 3 do ids[#ids + 1] = ARGV[i] end
local raws = mget(key(1, STATE), ids)
local cur, changed, out = {}, {}, {}
local leases, results = {}, {}
for k, id in ipairs(ids) do
  local token = ARGV[3 * k + 1]
  local h = cur[id]
  if h == nil then
    h = raws[k] and parse_hot(1, id, raws[k]) or false
    cur[id] = h
  end
  if h and h.state == 'active' and token ~= '' and h.token == token then
    h.state = 'completed'
    h.finished_at = fin
    h.token, h.lease_until = '-', '-'
    h.last_token, h.outcome = token, 'completed'
    -- A completed job keeps its unique key for unique_for.
    if h.unique_for ~= '-' and tonumber(h.unique_for) <= 0 then release_unique(1, id, h) end
    changed[#changed + 1] = id
    local r = ARGV[3 * k + 2]
    if r ~= '' then
      results[#results + 1] = id
      results[#results + 1] = r
    end
    out[k] = 1
  elseif retry and h and token ~= '' and h.last_token == token and h.outcome == 'completed' then
    out[k] = 1
  else
    out[k] = 0
  end
end
if #changed > 0 then
  local idpairs, done, state = {}, {}, {}
  for j, id in ipairs(changed) do
    idpairs[2 * j - 1], idpairs[2 * j] = id, id
    done[2 * j - 1], done[2 * j] = fin, id
    state[2 * j - 1], state[2 * j] = id, pack(cur[id])
  end
  bulk('ZREM', key(1, IDS.active), changed, 1)
  bulk('ZREM', key(1, LEASES), changed, 1)
  bulk('ZADD', key(1, IDS.completed), idpairs, 2)
  bulk('ZADD', key(1, DONE.completed), done, 2)
  bulk('HSET', key(1, STATE), state, 2)
  bulk('HSET', key(1, RESULTS), results, 2)
end
return out
)lua",

// fail. ARGV: id, token, now, message, retry_at ('' = none), retry flag.
// Returns 0 rejected, 1 retried, 2 dead.
R"lua(
check_types(1)
local id, token, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local h, seen = leased(1, id, token)
if not h then
  if ARGV[6] == '1' and seen and token ~= '' and seen.last_token == token then
    if seen.outcome == 'retried' then return 1 end
    if seen.outcome == 'dead' then return 2 end
  end
  return 0
end
local attempts = h.attempts
append_error(1, id, attempts, ARGV[4], now)
h.last_token = token
if ARGV[5] ~= '' and attempts < tonumber(h.max_attempts) then
  h.outcome = 'retried'
  requeue(1, id, h, ARGV[5], now)
  return 1
end
h.outcome = 'dead'
finish(1, id, h, 'dead', now)
return 2
)lua",

// extend. ARGV: id, token, now, lease ms. Returns 1 or 0.
R"lua(
check_types(1)
local id, now = ARGV[1], tonumber(ARGV[3])
local h = leased(1, id, ARGV[2])
if not h then return 0 end
h.lease_until = int(now + tonumber(ARGV[4]))
redis.call('ZADD', key(1, LEASES), h.lease_until, id)
save(1, id, h)
return 1
)lua",

// release. ARGV: id, token, now, retry flag. Returns 1 or 0.
R"lua(
check_types(1)
local id, token, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local h, seen = leased(1, id, token)
if not h then
  if ARGV[4] == '1' and seen and token ~= '' and seen.last_token == token
      and seen.outcome == 'released' then return 1 end
  return 0
end
h.attempts = math.max(h.attempts - 1, 0)
h.last_token, h.outcome = token, 'released'
requeue(1, id, h, int(now), now)
return 1
)lua",

// progress. ARGV: id, token, percent, message. Returns 1 or 0.
R"lua(
check_types(1)
local h = leased(1, ARGV[1], ARGV[2])
if not h then return 0 end
redis.call('HSET', key(1, PROGRESS), ARGV[1], ARGV[3] .. ' ' .. ARGV[4])
return 1
)lua",

// recover. ARGV: now, max jobs, error message. Returns {retried, dead, examined}.
R"lua(
check_types(1)
local now, max = tonumber(ARGV[1]), tonumber(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', key(1, LEASES), '-inf', now, 'LIMIT', 0, max)
local hs = {}
for i, id in ipairs(ids) do hs[i] = hot(1, id) or false end
local retried, dead = 0, 0
for i, id in ipairs(ids) do
  local h = hs[i]
  if not h or h.state ~= 'active' then
    redis.call('ZREM', key(1, LEASES), id)  -- an index entry without an active job: drop it
    if not h then redis.call('ZREM', key(1, IDS.active), id) end
  else
    local attempts = h.attempts
    append_error(1, id, attempts, ARGV[3], now)
    if attempts < tonumber(h.max_attempts) then
      requeue(1, id, h, int(now), now)
      retried = retried + 1
    else
      finish(1, id, h, 'dead', now)
      dead = dead + 1
    end
  end
end
return {retried, dead, #ids}
)lua",

// cancel. ARGV: id, now. Returns 1 or 0.
R"lua(
check_types(1)
local h = hot(1, ARGV[1])
if not h then return 0 end
check_doc(1, ARGV[1], redis.call('HGET', key(1, JOBS), ARGV[1]))
if h.state ~= 'queued' then return 0 end
finish(1, ARGV[1], h, 'cancelled', tonumber(ARGV[2]))
return 1
)lua",

// redrive. ARGV: id, now. Returns 1 or 0.
R"lua(
check_types(1)
local id, now = ARGV[1], tonumber(ARGV[2])
local h = hot(1, id)
if not h or h.state ~= 'dead' then return 0 end
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
wake(1, 1)
return 1
)lua",

// pause
R"lua(
check_types(1)
redis.call('SET', key(1, PAUSED), '1')
return 1
)lua",

// resume
R"lua(
check_types(1)
redis.call('DEL', key(1, PAUSED))
wake(1, 1)
return 1
)lua",

// counts. Returns {queued, active, completed, dead, cancelled}.
R"lua(
check_types(1)
return {redis.call('ZCARD', key(1, IDS.queued)), redis.call('ZCARD', key(1, IDS.active)),
        redis.call('ZCARD', key(1, IDS.completed)), redis.call('ZCARD', key(1, IDS.dead)),
        redis.call('ZCARD', key(1, IDS.cancelled))}
)lua",

// list. ARGV: state, offset, limit (> 0). Returns 5 values per job (see row), ordered by id.
R"lua(
check_types(1)
local first = tonumber(ARGV[2])
local ids = redis.call('ZRANGE', key(1, IDS[ARGV[1]]), first, first + tonumber(ARGV[3]) - 1)
local out = {}
for _, id in ipairs(ids) do row(1, id, out) end
return out
)lua",

// prune. ARGV: cutoff for completed, dead, cancelled (finished_at strictly before it is deleted;
// '' keeps forever), keep at most N per state ('' = no cap), batch size. Returns deleted ids.
R"lua(
check_types(1)
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
  if h then release_unique(1, id, h) end
  for _, k in ipairs({JOBS, STATE, ERRORS, RESULTS, PROGRESS}) do redis.call('HDEL', key(1, k), id) end
  redis.call('ZREM', key(1, IDS[state]), id)
  redis.call('ZREM', key(1, DONE[state]), id)
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
)lua",

// peek (read-only). ARGV: now. Returns '-1' if an unpaused queue has due work, else the
// earliest run_at of a delayed job, else '-2'.
R"lua(
local now = tonumber(ARGV[1])
local next_due = nil
for q = 1, nqueues() do
  if redis.call('EXISTS', key(q, PAUSED)) == 0 then
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
)lua",

// fetch (read-only; get). ARGV: id. Returns the 5 values of row(), or an empty array.
R"lua(
local out = {}
row(1, ARGV[1], out)
return out
)lua",
};

/// @brief The prelude sections (split at "-- §" lines) a body needs: the first always, then
/// every section defining a function called by the body or by a section already taken. A
/// script defines only the helpers it uses: each call creates its closures afresh, and the
/// whole prelude cost about 4 us per call.
inline std::string prelude_for(std::string_view body) {
  constexpr std::string_view mark = "-- \xc2\xa7\n";
  std::vector<std::string_view> sections;
  for (std::string_view rest = script_prelude;;) {
    const auto at = rest.find(mark);
    sections.push_back(rest.substr(0, at));
    if (at == std::string_view::npos) break;
    rest.remove_prefix(at + mark.size());
  }
  const auto is_ident = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  };
  const auto calls = [&](std::string_view text, std::string_view name) {
    const std::string call = std::string(name) + "(";
    for (auto at = text.find(call); at != std::string_view::npos; at = text.find(call, at + 1)) {
      if (at == 0 || !is_ident(text[at - 1])) return true;
    }
    return false;
  };
  const auto defines = [](std::string_view section) {  // names of `local function NAME(`
    std::vector<std::string_view> names;
    constexpr std::string_view kw = "local function ";
    for (auto at = section.find(kw); at != std::string_view::npos; at = section.find(kw, at + 1)) {
      const auto start = at + kw.size();
      names.push_back(section.substr(start, section.find('(', start) - start));
    }
    return names;
  };
  std::vector<bool> taken(sections.size(), false);
  taken[0] = true;
  for (bool grew = true; grew;) {
    grew = false;
    for (std::size_t i = 1; i < sections.size(); ++i) {
      if (taken[i]) continue;
      bool needed = false;
      for (auto name : defines(sections[i])) {
        needed = needed || calls(body, name);
        for (std::size_t j = 0; j < sections.size() && !needed; ++j) needed = taken[j] && calls(sections[j], name);
      }
      if (needed) taken[i] = grew = true;
    }
  }
  std::string out;
  for (std::size_t i = 0; i < sections.size(); ++i) {
    if (taken[i]) out += sections[i];
  }
  return out;
}

/// @brief The full source of a script (the prelude sections it needs + body), built once.
inline const std::string& script_source(Script s) {
  static const std::array<std::string, script_count> sources = [] {
    std::array<std::string, script_count> out;
    for (std::size_t i = 0; i < script_count; ++i) {
      out[i] = prelude_for(script_bodies[i]) + std::string(script_bodies[i]);
    }
    return out;
  }();
  return sources[static_cast<std::size_t>(s)];
}

}  // namespace jobq::detail::redis
