#pragma once
// The Lua scripts of the Redis backend: every state change is one of these, run atomically by
// Redis with EVALSHA. Included by jobq/redis.hpp only.
//
// Key layout of one queue (Q = "<prefix>:{<queue>}", so every key of a queue shares the hash
// tag {<queue>} and lives in one Redis Cluster slot). Every script gets the NK = 15 keys of each
// queue it touches in KEYS, in this order; no script builds a key name itself.
//
//    1 Q:jobs            hash    id -> job document (JSON; integers stored as decimal strings
//                                because cjson rounds numbers to 14 digits)
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
//
// Time is never read inside a script: the client passes `now` from its injected clock.

#include <array>
#include <cstddef>
#include <string>
#include <string_view>

namespace jobq::detail::redis {

/// @brief Keys per queue, in the order scripts receive them.
inline constexpr std::array<std::string_view, 15> queue_key_suffixes = {
    "jobs",          "ready",    "delayed",        "leases",    "ids:queued",
    "ids:active",    "ids:completed", "ids:dead",  "ids:cancelled",
    "done:completed", "done:dead", "done:cancelled", "unique",   "paused",
    "wake"};

/// @brief The scripts, in the order of `script_bodies`.
enum class Script : std::size_t {
  enqueue, claim, complete, fail, extend, release, progress, recover,
  cancel, redrive, pause, resume, counts, list, prune, peek, count_
};

/// @brief How many scripts there are.
inline constexpr std::size_t script_count = static_cast<std::size_t>(Script::count_);

// Shared helpers, prepended to every script.
inline constexpr std::string_view script_prelude = R"lua(
local NK = 15
local JOBS, READY, DELAYED, LEASES, UNIQUE, PAUSED, WAKE = 1, 2, 3, 4, 13, 14, 15
local IDS = {queued = 5, active = 6, completed = 7, dead = 8, cancelled = 9}
local DONE = {completed = 10, dead = 11, cancelled = 12}
local TYPES = {'hash', 'zset', 'zset', 'zset', 'zset', 'zset', 'zset', 'zset', 'zset', 'zset',
               'zset', 'zset', 'hash', 'string', 'list'}
local WAKE_MAX = 32

local function key(q, i) return KEYS[(q - 1) * NK + i] end
local function nqueues() return #KEYS / NK end
local function fail(msg) error({err = msg}) end
local function int(x) return string.format('%d', x) end

-- Checked before any write: a script that stopped half-way on WRONGTYPE would leave a job
-- indexed in some keys and not others (Redis does not roll a script back).
local function check_types(q)
  for i = 1, NK do
    local t = redis.call('TYPE', key(q, i))['ok']
    if t ~= 'none' and t ~= TYPES[i] then
      fail('WRONGTYPE jobq: key ' .. key(q, i) .. ' holds a ' .. t .. ' where jobq keeps a ' .. TYPES[i])
    end
  end
end
local function check_all() for q = 1, nqueues() do check_types(q) end end

local STATES = {queued = true, active = true, completed = true, dead = true, cancelled = true}
local function load(q, id)
  local raw = redis.call('HGET', key(q, JOBS), id)
  if not raw then return nil end
  local ok, doc = pcall(cjson.decode, raw)
  if not ok or type(doc) ~= 'table' or not STATES[doc.state] or not tonumber(doc.attempts)
      or not tonumber(doc.max_attempts) or not tonumber(doc.priority) or not tonumber(doc.run_at) then
    fail('jobq: job ' .. id .. ' in ' .. key(q, JOBS) .. ' is corrupted (not a jobq job document)')
  end
  return doc
end
local function save(q, id, doc) redis.call('HSET', key(q, JOBS), id, cjson.encode(doc)) end

local function rank(run_at, id)
  local at = tonumber(run_at)
  if at < 0 then at = 0 elseif at > 4e18 then at = 4e18 end
  return string.format('%016x%014x', at, tonumber(id))
end

local function unindex(q, id, doc)
  local st = doc.state
  redis.call('ZREM', key(q, IDS[st]), id)
  if st == 'queued' then
    local r = rank(doc.run_at, id)
    redis.call('ZREM', key(q, READY), r)
    redis.call('ZREM', key(q, DELAYED), r .. doc.priority)
  elseif st == 'active' then
    redis.call('ZREM', key(q, LEASES), id)
  else
    redis.call('ZREM', key(q, DONE[st]), id)
  end
end

local function index(q, id, doc, now)
  local st = doc.state
  redis.call('ZADD', key(q, IDS[st]), id, id)
  if st == 'queued' then
    local r = rank(doc.run_at, id)
    if tonumber(doc.run_at) <= now then
      redis.call('ZADD', key(q, READY), 0 - tonumber(doc.priority), r)
    else
      redis.call('ZADD', key(q, DELAYED), doc.run_at, r .. doc.priority)
    end
  elseif st == 'active' then
    redis.call('ZADD', key(q, LEASES), doc.lease_until, id)
  else
    redis.call('ZADD', key(q, DONE[st]), doc.finished_at, id)
  end
end

local function release_unique(q, id, doc)
  local uk = doc.unique_key
  if type(uk) == 'string' and uk ~= '' and redis.call('HGET', key(q, UNIQUE), uk) == id then
    redis.call('HDEL', key(q, UNIQUE), uk)
  end
end

local function holds_unique(doc, now)
  if doc.state == 'queued' or doc.state == 'active' then return true end
  return doc.state == 'completed' and tonumber(doc.finished_at) ~= nil
      and tonumber(doc.finished_at) + (tonumber(doc.unique_for_ms) or 0) > now
end

local function wake(q, n)
  local marks = {}
  for i = 1, math.min(n, WAKE_MAX) do marks[i] = '1' end
  redis.call('RPUSH', key(q, WAKE), unpack(marks))
  redis.call('LTRIM', key(q, WAKE), 0, WAKE_MAX - 1)
end

local function append_error(doc, attempt, message, now)
  local e = cjson.encode({attempt = attempt, message = message, at = now})
  local errs = doc.errors
  if type(errs) ~= 'string' or errs == '' or errs == '[]' then
    doc.errors = '[' .. e .. ']'
  else
    doc.errors = string.sub(errs, 1, -2) .. ',' .. e .. ']'
  end
end

local function finish(q, id, doc, state, now)
  unindex(q, id, doc)
  doc.state = state
  doc.finished_at = int(now)
  doc.lease_token = nil
  doc.lease_until = nil
  -- A completed job keeps its unique key for unique_for; dead and cancelled ones release it.
  if state ~= 'completed' or (tonumber(doc.unique_for_ms) or 0) <= 0 then release_unique(q, id, doc) end
  index(q, id, doc, now)
  save(q, id, doc)
end

local function requeue(q, id, doc, run_at, now)
  unindex(q, id, doc)
  doc.state = 'queued'
  doc.run_at = run_at
  doc.lease_token = nil
  doc.lease_until = nil
  index(q, id, doc, now)
  save(q, id, doc)
  wake(q, 1)
end

-- The job if it is active under this lease token; also the document as found, for the
-- idempotent replay of a call whose reply was lost (retry flag set by the client).
local function leased(q, id, token)
  local doc = load(q, id)
  if doc and doc.state == 'active' and token ~= '' and doc.lease_token == token then return doc, doc end
  return nil, doc
end
)lua";

/// @brief Script bodies, indexed by Script.
inline constexpr std::array<std::string_view, script_count> script_bodies = {
// enqueue. KEYS: NK per queue. ARGV: now, call nonce, then per job: queue index, id, run_at,
// priority, unique key, job document (carrying the nonce). Returns id, created (1/0) per job.
// All reads first, then writes.
R"lua(
local now, nonce = tonumber(ARGV[1]), ARGV[2]
check_all()
local results, writes, taken = {}, {}, {}
for i = 3, #ARGV, 6 do
  local q, id, uk = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 4]
  local out_id, created = id, 1
  -- Ids are allocated before the call, so a job already stored under this id with this call's
  -- nonce was written by an earlier attempt whose reply was lost: report it as created.
  local existing = load(q, id)
  if existing and existing.nonce ~= nonce then
    fail('jobq: job id ' .. id .. ' already exists in ' .. key(q, JOBS) ..
         ': the id counter went back (was the <prefix>:id key deleted?)')
  end
  if not existing then
    local holder = nil
    if uk ~= '' then
      holder = taken[q .. ':' .. uk]
      if not holder then
        local hid = redis.call('HGET', key(q, UNIQUE), uk)
        if hid then
          local h = load(q, hid)
          if h and holds_unique(h, now) then holder = hid end
        end
      end
    end
    if holder then
      out_id, created = holder, 0
    else
      writes[#writes + 1] = i
      if uk ~= '' then taken[q .. ':' .. uk] = id end
    end
  end
  results[#results + 1] = out_id
  results[#results + 1] = created
end
local woken = {}
for _, i in ipairs(writes) do
  local q, id, uk = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 4]
  redis.call('HSET', key(q, JOBS), id, ARGV[i + 5])
  index(q, id, {state = 'queued', run_at = ARGV[i + 2], priority = ARGV[i + 3]}, now)
  if uk ~= '' then redis.call('HSET', key(q, UNIQUE), uk, id) end
  woken[q] = (woken[q] or 0) + 1
end
for q, n in pairs(woken) do wake(q, n) end
return results
)lua",

// claim. KEYS: NK per queue. ARGV: now, limit, lease ms, token seed. Promotes due delayed jobs,
// takes the best `limit` ready jobs over all unpaused queues, leases them. Returns documents.
R"lua(
local now, limit, lease, seed = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
check_all()
local cands = {}
for q = 1, nqueues() do
  if redis.call('EXISTS', key(q, PAUSED)) == 0 then
    -- Bounded so one claim stays short; a larger backlog of due jobs is promoted over the next
    -- claims (ordering among the not yet promoted ones is then approximate).
    local due = redis.call('ZRANGEBYSCORE', key(q, DELAYED), '-inf', now, 'LIMIT', 0, 1000)
    for _, m in ipairs(due) do
      redis.call('ZREM', key(q, DELAYED), m)
      redis.call('ZADD', key(q, READY), 0 - tonumber(string.sub(m, 31)), string.sub(m, 1, 30))
    end
    local top = redis.call('ZRANGE', key(q, READY), 0, limit - 1, 'WITHSCORES')
    for i = 1, #top, 2 do cands[#cands + 1] = {q, top[i], tonumber(top[i + 1])} end
  end
end
table.sort(cands, function(a, b)
  if a[3] ~= b[3] then return a[3] < b[3] end
  return a[2] < b[2]
end)
local picked = {}
for _, c in ipairs(cands) do
  if #picked >= limit then break end
  local q, m = c[1], c[2]
  -- run_at in the future only if the clock went back since the job was promoted: not yet.
  if tonumber(string.sub(m, 1, 16), 16) <= math.max(now, 0) then
    local id = int(tonumber(string.sub(m, 17), 16))
    local doc = load(q, id)
    if doc and doc.state == 'queued' and rank(doc.run_at, id) == m then
      picked[#picked + 1] = {q, id, doc}
    else
      redis.call('ZREM', key(q, READY), m)  -- an index entry without its job: drop it
    end
  end
end
local out = {}
for i, p in ipairs(picked) do
  local q, id, doc = p[1], p[2], p[3]
  unindex(q, id, doc)
  doc.state = 'active'
  doc.attempts = int(tonumber(doc.attempts) + 1)
  doc.lease_token = seed .. string.format('%06x', i)
  doc.lease_until = int(now + lease)
  index(q, id, doc, now)
  local raw = cjson.encode(doc)
  redis.call('HSET', key(q, JOBS), id, raw)
  out[i] = raw
end
return out
)lua",

// complete. ARGV: id, token, now, result JSON, retry flag. Returns 1 or 0.
R"lua(
check_types(1)
local id, token, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local doc, seen = leased(1, id, token)
if not doc then
  if ARGV[5] == '1' and seen and token ~= '' and seen.last_token == token
      and seen.last_outcome == 'completed' then return 1 end
  return 0
end
doc.result = ARGV[4]
doc.last_token, doc.last_outcome = token, 'completed'
finish(1, id, doc, 'completed', now)
return 1
)lua",

// fail. ARGV: id, token, now, message, retry_at ('' = none), retry flag.
// Returns 0 rejected, 1 retried, 2 dead.
R"lua(
check_types(1)
local id, token, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local doc, seen = leased(1, id, token)
if not doc then
  if ARGV[6] == '1' and seen and token ~= '' and seen.last_token == token then
    if seen.last_outcome == 'retried' then return 1 end
    if seen.last_outcome == 'dead' then return 2 end
  end
  return 0
end
local attempts = tonumber(doc.attempts)
append_error(doc, attempts, ARGV[4], now)
doc.last_token = token
if ARGV[5] ~= '' and attempts < tonumber(doc.max_attempts) then
  doc.last_outcome = 'retried'
  requeue(1, id, doc, ARGV[5], now)
  return 1
end
doc.last_outcome = 'dead'
finish(1, id, doc, 'dead', now)
return 2
)lua",

// extend. ARGV: id, token, now, lease ms. Returns 1 or 0.
R"lua(
check_types(1)
local id, now = ARGV[1], tonumber(ARGV[3])
local doc = leased(1, id, ARGV[2])
if not doc then return 0 end
unindex(1, id, doc)
doc.lease_until = int(now + tonumber(ARGV[4]))
index(1, id, doc, now)
save(1, id, doc)
return 1
)lua",

// release. ARGV: id, token, now, retry flag. Returns 1 or 0.
R"lua(
check_types(1)
local id, token, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local doc, seen = leased(1, id, token)
if not doc then
  if ARGV[4] == '1' and seen and token ~= '' and seen.last_token == token
      and seen.last_outcome == 'released' then return 1 end
  return 0
end
doc.attempts = int(math.max(tonumber(doc.attempts) - 1, 0))
doc.last_token, doc.last_outcome = token, 'released'
requeue(1, id, doc, int(now), now)
return 1
)lua",

// progress. ARGV: id, token, percent, message. Returns 1 or 0.
R"lua(
check_types(1)
local doc = leased(1, ARGV[1], ARGV[2])
if not doc then return 0 end
doc.progress = ARGV[3]
doc.progress_message = ARGV[4]
save(1, ARGV[1], doc)
return 1
)lua",

// recover. ARGV: now, max jobs, error message. Returns {retried, dead, examined}.
R"lua(
check_types(1)
local now, max = tonumber(ARGV[1]), tonumber(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', key(1, LEASES), '-inf', now, 'LIMIT', 0, max)
local docs = {}
for i, id in ipairs(ids) do docs[i] = load(1, id) or false end
local retried, dead = 0, 0
for i, id in ipairs(ids) do
  local doc = docs[i]
  if not doc or doc.state ~= 'active' then
    redis.call('ZREM', key(1, LEASES), id)  -- an index entry without an active job: drop it
    if not doc then redis.call('ZREM', key(1, IDS.active), id) end
  else
    local attempts = tonumber(doc.attempts)
    append_error(doc, attempts, ARGV[3], now)
    if attempts < tonumber(doc.max_attempts) then
      requeue(1, id, doc, int(now), now)
      retried = retried + 1
    else
      finish(1, id, doc, 'dead', now)
      dead = dead + 1
    end
  end
end
return {retried, dead, #ids}
)lua",

// cancel. ARGV: id, now. Returns 1 or 0.
R"lua(
check_types(1)
local doc = load(1, ARGV[1])
if not doc or doc.state ~= 'queued' then return 0 end
finish(1, ARGV[1], doc, 'cancelled', tonumber(ARGV[2]))
return 1
)lua",

// redrive. ARGV: id, now. Returns 1 or 0.
R"lua(
check_types(1)
local id, now = ARGV[1], tonumber(ARGV[2])
local doc = load(1, id)
if not doc or doc.state ~= 'dead' then return 0 end
local uk = doc.unique_key
local take = false
if type(uk) == 'string' and uk ~= '' then
  local hid = redis.call('HGET', key(1, UNIQUE), uk)
  local h = hid and hid ~= id and load(1, hid)
  take = not h or not holds_unique(h, now)
end
unindex(1, id, doc)
doc.state = 'queued'
doc.attempts = '0'
doc.finished_at = nil
doc.run_at = int(now)
if take then redis.call('HSET', key(1, UNIQUE), uk, id) end
index(1, id, doc, now)
save(1, id, doc)
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

// list. ARGV: state, offset, limit (> 0). Returns documents ordered by id.
R"lua(
check_types(1)
local first = tonumber(ARGV[2])
local ids = redis.call('ZRANGE', key(1, IDS[ARGV[1]]), first, first + tonumber(ARGV[3]) - 1)
local out = {}
for _, id in ipairs(ids) do
  local raw = redis.call('HGET', key(1, JOBS), id)
  if raw then out[#out + 1] = raw end
end
return out
)lua",

// prune. ARGV: cutoff for completed, dead, cancelled (finished_at strictly before it is deleted;
// '' keeps forever), keep at most N per state ('' = no cap), batch size. Returns deleted ids.
R"lua(
check_types(1)
local batch = tonumber(ARGV[5])
local deleted = {}
local function drop(id, state)
  local raw = redis.call('HGET', key(1, JOBS), id)
  local ok, doc = false, nil
  if raw then ok, doc = pcall(cjson.decode, raw) end
  if ok and type(doc) == 'table' and doc.state ~= state then
    -- the index disagrees with the job (never written so): fix the index, keep the job
    redis.call('ZREM', key(1, DONE[state]), id)
    return
  end
  if ok and type(doc) == 'table' then release_unique(1, id, doc) end
  if raw then redis.call('HDEL', key(1, JOBS), id) end
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
};

/// @brief The full source of a script (prelude + body), built once.
inline const std::string& script_source(Script s) {
  static const std::array<std::string, script_count> sources = [] {
    std::array<std::string, script_count> out;
    for (std::size_t i = 0; i < script_count; ++i) {
      out[i] = std::string(script_prelude) + std::string(script_bodies[i]);
    }
    return out;
  }();
  return sources[static_cast<std::size_t>(s)];
}

}  // namespace jobq::detail::redis
