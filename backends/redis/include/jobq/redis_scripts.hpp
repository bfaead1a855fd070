#pragma once
// The Lua scripts of the Redis backend: every state change is one of these, run atomically by
// Redis with EVALSHA. Included by jobq/redis.hpp only.
//
// Key layout of one queue (Q = "<prefix>:{<queue>}", so every key of a queue shares the hash
// tag {<queue>} and lives in one Redis Cluster slot). Every script gets the keys of each queue it
// touches in KEYS, in this order; no script builds a key name itself.
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
//   20 Q:limits          hash    queue limits: rate_max, rate_window (ms), group_concurrency,
//                                and rate_used (starts in the ledger below); absent: none
//   21 Q:starts          zset    rate-limit ledger: one entry per claim call that started jobs,
//                                score = its time, member "<claim seed>:<n>"; entries older
//                                than the window are dropped (and subtracted from rate_used)
//   22 Q:groups          hash    id -> group key, for jobs that have one
//   23 Q:gactive         hash    group key -> active jobs of that group (absent: 0)
//   24 Q:parked          zset    queued, due jobs held back because their group was at its
//                                limit; score 0, member len3(group) .. group .. hex8(2^31-1 -
//                                priority) .. the ready member, so one group's jobs are one
//                                ZRANGEBYLEX range in claim order
//   25 Q:none            zset    never written: the empty first key of check_keys' ZDIFF
//
// Scripts with a "-- keys: NAME ..." line receive only those keys (in this order); the others
// receive the first 24. key(q, NAME) finds a key by its position in the script's own layout.
// Notices (Backend::subscribe) are PUBLISHed to "<prefix>:events" (not a key: a channel) as a
// JSON array per script call, only while someone subscribes to it (PUBSUB NUMSUB).
//
// Time is never read inside a script: the client passes `now` from its injected clock.

#include <algorithm>
#include <array>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace jobq::detail::redis {

/// @brief Keys per queue, in the order scripts receive them (the last, Q:none, is never written:
/// the empty first key of the one-call type check, see check_keys).
inline constexpr std::array<std::string_view, 25> queue_key_suffixes = {
    "jobs",          "ready",    "delayed",        "leases",    "ids:queued",
    "ids:active",    "ids:completed", "ids:dead",  "ids:cancelled",
    "done:completed", "done:dead", "done:cancelled", "unique",   "paused",
    "wake",          "state",    "errors",         "results",   "progress",
    "limits",        "starts",   "groups",         "gactive",   "parked",
    "none"};

/// @brief The Lua name of each key in queue_key_suffixes (what scripts write in `key(q, NAME)`).
inline constexpr std::array<std::string_view, 25> queue_key_names = {
    "JOBS", "READY", "DELAYED", "LEASES", "IDS.queued", "IDS.active", "IDS.completed", "IDS.dead",
    "IDS.cancelled", "DONE.completed", "DONE.dead", "DONE.cancelled", "UNIQUE", "PAUSED", "WAKE",
    "STATE", "ERRORS", "RESULTS", "PROGRESS", "LIMITS", "STARTS", "GROUPS", "GACTIVE", "PARKED", "NONE"};

/// @brief The type of each key: hash, zset, string, list.
inline constexpr std::string_view queue_key_types = "hzzzzzzzzzzzhslhhhhhzhhzz";

/// @brief Words of a Q:state entry.
inline constexpr std::size_t hot_fields = 11;

/// @brief The scripts, in the order of `script_bodies`.
enum class Script : std::size_t {
  enqueue, claim, complete, fail, extend, release, progress, recover,
  cancel, redrive, pause, resume, counts, list, prune, peek, fetch, limits, undo_claim, count_
};

/// @brief How many scripts there are.
inline constexpr std::size_t script_count = static_cast<std::size_t>(Script::count_);

// Shared helpers, prepended to every script.
inline constexpr std::string_view script_prelude = R"lua(
local WAKE_MAX = 32
local BULK = 500  -- elements per variadic command (unpack() has a stack limit)

local function key(q, i) return KEYS[(q - 1) * NK + i] end
local function nqueues() return math.floor(#KEYS / NK) end  -- fire_schedule adds one key
local function fail(msg) error({err = msg}) end
local function int(x) return string.format('%d', x) end

-- §
-- Helpers of the error paths (and of the scripts that check every key), created only when
-- called: a script's local functions are created afresh on every call.
-- check_types: run before any write, because a script that stopped half-way on WRONGTYPE would
-- leave a job indexed in some keys and not others (Redis does not roll a script back); `only`
-- lists the keys a script touches (nil: all of them); one TYPE call per key (check_keys does
-- it in one or two calls on the hot paths). read_failed: a read (pcall) that failed; a key of
-- the wrong type is named the same way. corrupted: a job record that is not jobq's.
local function errors()
  local TYPENAMES = {h = 'hash', z = 'zset', s = 'string', l = 'list'}
  local function check_types(q, only)
    local n = only and #only or NK
    for j = 1, n do
      local i = only and only[j] or j
      local want = TYPENAMES[string.sub(KEYTYPES, i, i)]
      local t = redis.call('TYPE', key(q, i))['ok']
      if t ~= 'none' and t ~= want then
        fail('WRONGTYPE jobq: key ' .. key(q, i) .. ' holds a ' .. t .. ' where jobq keeps a ' .. want)
      end
    end
  end
  local function read_failed(k, want, r)
    local t = redis.call('TYPE', k)['ok']
    if t ~= 'none' and t ~= want then
      fail('WRONGTYPE jobq: key ' .. k .. ' holds a ' .. t .. ' where jobq keeps a ' .. want)
    end
    error(r)
  end
  local function corrupted(q, id, where)
    fail('jobq: job ' .. id .. ' in ' .. key(q, where) .. ' is corrupted (not a jobq job record)')
  end
  return {check_types = check_types, read_failed = read_failed, corrupted = corrupted}
end

-- §
-- check_types for the hot paths, in one or two calls instead of one per key: a ZDIFF whose
-- first key is the never-written (so empty) Q:none checks every sorted set of `only` at once
-- and costs nothing else; hashes and lists get an HLEN / LLEN. Any error (a wrong type, or a
-- Redis before 6.2 without ZDIFF) runs check_types, which names the key. A plain set where a
-- sorted set belongs passes ZDIFF (it accepts sets) and fails at its first write instead.
local LENCMD = {h = 'HLEN', l = 'LLEN', s = 'STRLEN'}
local function check_keys(q, only)
  local z = {'ZDIFF', 1, key(q, NONE)}
  local ok = true
  for _, i in ipairs(only) do
    local c = string.sub(KEYTYPES, i, i)
    if c == 'z' then
      z[#z + 1] = key(q, i)
    else
      local r = redis.pcall(LENCMD[c], key(q, i))
      if type(r) == 'table' and r.err then ok = false end
    end
  end
  if ok and #z > 3 then
    z[2] = #z - 2
    local r = redis.pcall(unpack(z))
    if type(r) == 'table' and r.err then ok = false end
  end
  if not ok then errors().check_types(q, only) end
end

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
    local part = redis.pcall('HMGET', k, unpack(ids, i, math.min(i + BULK - 1, #ids)))
    if part.err then errors().read_failed(k, 'hash', part) end
    for j = 1, #part do out[#out + 1] = part[j] end
  end
  return out
end

-- §
local STATES = {queued = true, active = true, completed = true, dead = true, cancelled = true}
local HOT = '^(%l+) (%d+) (%d+) (%-?%d+) (%-?%d+) (%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$'
local function parse_hot(q, id, s)
  local st, at, ma, pr, ra, lu, fa, uf, tk, lt, oc = string.match(s, HOT)
  if not st or not STATES[st] then errors().corrupted(q, id, STATE) end
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
    errors().corrupted(q, id, JOBS)
  end
end

-- §
-- The parked-set member of a job of group g (see the key layout).
local function pmember(g, priority, r)
  return string.format('%03d', #g) .. g .. string.format('%08x', 2147483647 - tonumber(priority)) .. r
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
    local g = redis.call('HGET', key(q, GROUPS), id)
    if g then redis.call('ZREM', key(q, PARKED), pmember(g, h.priority, r)) end
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
-- At most WAKE_MAX markers: only the missing ones are pushed (a full list costs one LLEN and
-- no write). `len`: the list's length if the caller just read it.
local function wake(q, n, len)
  local k = math.min(n, WAKE_MAX - (len or redis.call('LLEN', key(q, WAKE))))
  if k <= 0 then return end
  local marks = {}
  for i = 1, k do marks[i] = '1' end
  redis.call('RPUSH', key(q, WAKE), unpack(marks))
end

-- §
-- Moves parked members back to the ready set (score -priority, member the ready member).
local function unpark_members(q, ms)
  if #ms == 0 then return 0 end
  local adds = {}
  for _, m in ipairs(ms) do
    local s = string.sub(m, 4 + tonumber(string.sub(m, 1, 3)))
    adds[#adds + 1] = tonumber(string.sub(s, 1, 8), 16) - 2147483647
    adds[#adds + 1] = string.sub(s, 9)
  end
  bulk('ZREM', key(q, PARKED), ms, 1)
  bulk('ZADD', key(q, READY), adds, 2)
  return #ms
end

-- §
-- Unparks up to n of group g's parked jobs, best first.
local function unpark(q, g, n)
  if n <= 0 then return 0 end
  local p = string.format('%03d', #g) .. g
  return unpark_members(q, redis.call('ZRANGEBYLEX', key(q, PARKED), '[' .. p, '(' .. p .. '\255', 'LIMIT', 0, n))
end

-- §
local function group_limit(q) return tonumber(redis.call('HGET', key(q, LIMITS), 'group_concurrency')) or 0 end

-- §
-- A ready job of group g went away (cancelled, debounced into the future): parked jobs of g
-- that fit under the group limit go back to the ready set, so none waits for a completion
-- that will not come.
local function refill(q, g)
  local gc = group_limit(q)
  if gc <= 0 then return end
  local n = unpark(q, g, gc - (tonumber(redis.call('HGET', key(q, GACTIVE), g)) or 0))
  if n > 0 then wake(q, n) end
end

-- §
-- Jobs that left the active state: their groups' active counts go down, and under a group
-- limit as many parked jobs of each group as now fit go back to the ready set. `grouped`:
-- whether Q:groups exists, if the caller knows (nil: checked here).
local function left_active(q, ids, grouped)
  if grouped == nil then grouped = redis.call('EXISTS', key(q, GROUPS)) == 1 end
  if #ids == 0 or not grouped then return end
  local gs = mget(key(q, GROUPS), ids)
  local gc = nil
  local woke = 0
  for i = 1, #ids do
    local g = gs[i]
    if g then
      local n = redis.call('HINCRBY', key(q, GACTIVE), g, -1)
      if n <= 0 then
        redis.call('HDEL', key(q, GACTIVE), g)
        n = 0
      end
      gc = gc or group_limit(q)
      if gc > 0 then woke = woke + unpark(q, g, gc - n) end
    end
  end
  if woke > 0 then wake(q, woke) end
end

-- §
-- Notices go to one channel per prefix, and are built only while someone listens there.
local function channel()
  return (string.match(KEYS[1], '^(.*):{[^}]*}:jobs$') or 'jobq') .. ':events'
end

-- §
local function listening(ch) return redis.call('PUBSUB', 'NUMSUB', ch)[2] > 0 end

-- §
local function qname(q) return string.match(key(q, JOBS), ':{([^}]*)}:jobs$') or '' end

-- §
-- One notice as JSON (jobq::to_json(JobNotice)); queue names need no escaping.
local function notice(kind, id, queue, attempt, progress, msg)
  return '{"kind":"' .. kind .. '","id":' .. id .. ',"queue":"' .. queue .. '","attempt":' ..
         int(attempt) .. ',"progress":' .. int(progress) .. ',"message":' .. cjson.encode(msg or '') .. '}'
end

-- §
local function publish(ch, list)
  if #list > 0 then redis.call('PUBLISH', ch, '[' .. table.concat(list, ',') .. ']') end
end

-- §
local function percent(p) return p and tonumber(string.match(p, '^(%d+)')) or 0 end

-- §
-- Debounce onto a queued holder: its payload is replaced and it runs `ms` from now.
local function debounce(q, hid, h, ms, doc, now)
  local raw = redis.call('HGET', key(q, JOBS), hid)
  check_doc(q, hid, raw)
  local d = cjson.decode(raw)
  d.payload = cjson.decode(doc).payload
  redis.call('HSET', key(q, JOBS), hid, cjson.encode(d))
  unindex(q, hid, h)
  h.run_at = int(now + ms)
  index(q, hid, h, now)
  save(q, hid, h)
  local g = redis.call('HGET', key(q, GROUPS), hid)
  if g then refill(q, g) end
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
  -- Q:unique keeps pointing here (a throttle window counts from this job's enqueue);
  -- holds_unique decides whether the key is still held.
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
// enqueue (also fire_schedule). KEYS: NK per queue, then for fire_schedule the schedules hash.
// ARGV: now, call nonce, compare-and-set ('' for enqueue; "name expected next" for
// fire_schedule), layout ('1' wide, '' narrow), then per job, wide: queue index, id, 'r' (due:
// ready) or 'd' (delayed), its index score and member, the state entry, the fixed part
// (carrying the nonce), unique key, group, mode ('' plain, 't<ms>' throttle, 'd<ms>' debounce);
// narrow (a batch of one queue without unique keys, groups, throttle or debounce: fewer
// arguments to parse): id .. fixed part only. The client formats them (rank() and the state
// entry as here). Returns id, created (1/0) per job, then for fire_schedule 1 (fired),
// or just {0} when the compare-and-set failed. Plain batches read first, then write one command
// per key; a batch with throttle or debounce jobs writes job by job (a later job of the batch
// must see an earlier one as its key's holder).
R"lua(
-- keys: JOBS READY DELAYED IDS.queued UNIQUE WAKE STATE LIMITS GROUPS GACTIVE PARKED NONE
-- lazy uniqueness: hot holds_unique
local now, nonce, cas, wide = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4] == '1'
local FIRST = 5
local W, O = 6, 0  -- fields per job, offset of the id
if wide then W, O = 10, 1 end
local byq = {}
local special, grouped, uniq = false, false, false
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
  end
end
-- Only the keys this batch may write and does not read first (Q:jobs is read below; a read of
-- a key of the wrong type fails before anything is written). The wake list's length is kept
-- for the wake-up of the (single) flush below.
local touched = {STATE, READY, DELAYED, IDS.queued}
if uniq then touched[#touched + 1] = UNIQUE end
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
        g = {jobs = {}, state = {}, ids = {}, r = {}, d = {}, unique = {}, groups = {}, n = 0}
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
)lua",

// claim. KEYS: NK per queue. ARGV: now, limit, lease ms, token seed. Promotes due delayed jobs,
// takes the best `limit` ready jobs over all unpaused queues within their limits, leases them.
// Returns per job: fixed part, new state entry, errors (false: none), progress (false: none).
R"lua(
-- keys: JOBS READY DELAYED LEASES IDS.queued IDS.active PAUSED STATE ERRORS PROGRESS LIMITS STARTS GROUPS GACTIVE PARKED NONE
-- lazy parsing: parse_hot
-- lazy parking: pmember
local now, limit, lease, seed = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
-- A queued state entry: attempts, "max_attempts priority run_at" (run_at also alone),
-- "finished_at unique_for", "last_token last_outcome".
local QUEUED = '^queued (%d+) (%d+ %-?%d+ (%-?%d+)) %S+ (%S+ %S+) %S+ (%S+ %S+)$'
-- Reads before any write: the limits (an HMGET on a key of the wrong type fails here, before
-- anything changed) and whether the queue has grouped jobs; then the type checks of the keys
-- each queue will write without reading them first (Q:jobs, Q:state, Q:errors and Q:progress
-- are read before the first write; the limit and group keys only where they are used).
local lims, grouped = {}, {}
for q = 1, nqueues() do
  local l = redis.pcall('HMGET', key(q, LIMITS), 'rate_max', 'rate_window', 'group_concurrency', 'rate_used')
  if l.err then errors().read_failed(key(q, LIMITS), 'hash', l) end
  lims[q] = l
  grouped[q] = redis.call('EXISTS', key(q, GROUPS)) == 1
  local touched = {READY, DELAYED, LEASES, IDS.queued, IDS.active}
  if l[1] then touched[#touched + 1] = STARTS end
  if l[3] or grouped[q] then
    for _, k in ipairs({GROUPS, GACTIVE, PARKED}) do touched[#touched + 1] = k end
  end
  check_keys(q, touched)
end
-- Ready entries a group-limited queue examines per claim beyond `limit`: what it skips is
-- parked, so a later claim does not examine it again.
local SCAN = 2000
local cands = {}
local info = {}
for q = 1, nqueues() do
  if redis.call('EXISTS', key(q, PAUSED)) == 0 then
    local l = lims[q]
    local qi = {gc = tonumber(l[3]) or 0, rate = l[1] and true or false}
    info[q] = qi
    local want = limit
    if qi.rate then
      -- Sliding window: starts recorded at or before now - window have expired.
      local used = tonumber(l[4]) or 0
      local cut = now - tonumber(l[2])
      local old = redis.call('ZRANGEBYSCORE', key(q, STARTS), '-inf', cut)
      if #old > 0 then
        for _, m in ipairs(old) do used = used - (tonumber(string.match(m, ':(%d+)$')) or 0) end
        if used < 0 then used = 0 end
        redis.call('ZREMRANGEBYSCORE', key(q, STARTS), '-inf', cut)
        redis.call('HSET', key(q, LIMITS), 'rate_used', int(used))
      end
      want = math.min(want, tonumber(l[1]) - used)
    end
    if want > 0 then
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
      if qi.gc <= 0 then
        local top = redis.call('ZRANGE', key(q, READY), 0, want - 1, 'WITHSCORES')
        for i = 1, #top, 2 do cands[#cands + 1] = {q, top[i], tonumber(top[i + 1])} end
      else
        -- Group limit: walk the ready set in order, counting each group's active jobs plus
        -- the candidates taken so far; a job whose group is full is skipped (and parked below).
        qi.base, qi.count, qi.skipped = {}, {}, {}
        local taken, start = 0, 0
        local chunk = math.max(want, 100)
        while taken < want and start < want + SCAN do
          local top = redis.call('ZRANGE', key(q, READY), start, start + chunk - 1, 'WITHSCORES')
          if #top == 0 then break end
          local ids = {}
          for i = 1, #top, 2 do ids[#ids + 1] = int(tonumber(string.sub(top[i], 17), 16)) end
          local gs = mget(key(q, GROUPS), ids)
          for k = 1, #ids do
            if taken >= want then break end
            local m, score, g = top[2 * k - 1], tonumber(top[2 * k]), gs[k]
            if not g then
              cands[#cands + 1] = {q, m, score}
              taken = taken + 1
            else
              if not qi.base[g] then
                qi.base[g] = tonumber(redis.call('HGET', key(q, GACTIVE), g)) or 0
                qi.count[g] = qi.base[g]
              end
              if qi.count[g] < qi.gc then
                qi.count[g] = qi.count[g] + 1
                cands[#cands + 1] = {q, m, score, g}
                taken = taken + 1
              else
                qi.skipped[#qi.skipped + 1] = {m, score, g}
              end
            end
          end
          start = start + chunk
        end
      end
    end
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
      local e = {q = c[1], m = c[2], id = int(tonumber(string.sub(c[2], 17), 16)), g = c[4]}
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
    -- The words of a queued entry the claim keeps, without a table per job (parse_hot, which
    -- also reports a corrupted entry, only when this does not match).
    local at, mid, ra, fu, tail
    if e.raw then at, mid, ra, fu, tail = string.match(e.raw, QUEUED) end
    local ok = at and rank(ra, e.id) == e.m
    if not at and e.raw then
      local h = parsing()(e.q, e.id, e.raw)
      ok = h.state == 'queued' and rank(h.run_at, e.id) == e.m
      if ok then at, mid, fu, tail = int(h.attempts), h.max_attempts .. ' ' .. h.priority .. ' ' .. h.run_at,
          h.finished_at .. ' ' .. h.unique_for, h.last_token .. ' ' .. h.outcome end
    end
    if ok then
      check_doc(e.q, e.id, e.doc)
      e.at, e.mid, e.fu, e.tail = tonumber(at) + 1, mid, fu, tail
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
  e.packed = 'active ' .. int(e.at) .. ' ' .. e.mid .. ' ' .. lease_until .. ' ' .. e.fu .. ' ' ..
             seed .. string.format('%06x', i) .. ' ' .. e.tail
  local n = #g.ids
  g.ready[n + 1] = e.m
  g.ids[n + 1] = e.id
  g.list[n + 1] = e
  g.active[2 * n + 1], g.active[2 * n + 2] = e.id, e.id
  g.leases[2 * n + 1], g.leases[2 * n + 2] = lease_until, e.id
  g.state[2 * n + 1], g.state[2 * n + 2] = e.id, e.packed
end
-- Read before the first write (a key of the wrong type fails here, with nothing changed).
for q, g in pairs(w) do
  local es = mget(key(q, ERRORS), g.ids)
  local ps = mget(key(q, PROGRESS), g.ids)
  for j, e in ipairs(g.list) do
    e.errors = es[j]
    e.progress = ps[j]
  end
end
for q, g in pairs(w) do
  bulk('ZREM', key(q, READY), g.ready, 1)
  bulk('ZREM', key(q, IDS.queued), g.ids, 1)
  bulk('ZADD', key(q, IDS.active), g.active, 2)
  bulk('ZADD', key(q, LEASES), g.leases, 2)
  bulk('HSET', key(q, STATE), g.state, 2)
  -- Active jobs per group (kept for every grouped job, so a limit set later counts right).
  local qi = info[q]
  local gs
  if qi.gc > 0 then
    gs = {}
    for j, e in ipairs(g.list) do gs[j] = e.g or false end
  elseif grouped[q] then
    gs = mget(key(q, GROUPS), g.ids)
  end
  if gs then
    local per = {}
    for j = 1, #g.ids do
      if gs[j] then per[gs[j]] = (per[gs[j]] or 0) + 1 end
    end
    for grp, n in pairs(per) do redis.call('HINCRBY', key(q, GACTIVE), grp, n) end
  end
  if qi.rate then
    redis.call('ZADD', key(q, STARTS), now, seed .. ':' .. #g.ids)
    redis.call('HINCRBY', key(q, LIMITS), 'rate_used', #g.ids)
  end
end
-- Skipped jobs whose group is full now are parked until one of its jobs leaves the active state.
for q, qi in pairs(info) do
  if qi.skipped and #qi.skipped > 0 then
    local full, rem, adds = {}, {}, {}
    for _, s in ipairs(qi.skipped) do
      local g = s[3]
      if full[g] == nil then
        full[g] = (tonumber(redis.call('HGET', key(q, GACTIVE), g)) or 0) >= qi.gc
      end
      if full[g] then
        rem[#rem + 1] = s[1]
        adds[#adds + 1] = 0
        adds[#adds + 1] = parking()(g, 0 - s[2], s[1])
      end
    end
    bulk('ZREM', key(q, READY), rem, 1)
    bulk('ZADD', key(q, PARKED), adds, 2)
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
-- keys: JOBS LEASES IDS.active IDS.completed DONE.completed STATE RESULTS PROGRESS LIMITS GROUPS GACTIVE PARKED READY WAKE NONE
-- lazy parsing: parse_hot
-- lazy grouping: left_active
-- lazy notifying: notice publish percent qname
local ch = channel()
local listen = listening(ch)
local grouped = redis.call('EXISTS', key(1, GROUPS)) == 1
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
  check_keys(1, touched)
  local ps = listen and mget(key(1, PROGRESS), changed)
  local idpairs, done, state = {}, {}, {}
  for j, id in ipairs(changed) do
    idpairs[2 * j - 1], idpairs[2 * j] = id, id
    done[2 * j - 1], done[2 * j] = fin, id
    state[2 * j - 1], state[2 * j] = id, cur[id]
  end
  bulk('ZREM', key(1, IDS.active), changed, 1)
  bulk('ZREM', key(1, LEASES), changed, 1)
  bulk('ZADD', key(1, IDS.completed), idpairs, 2)
  bulk('ZADD', key(1, DONE.completed), done, 2)
  bulk('HSET', key(1, STATE), state, 2)
  bulk('HSET', key(1, RESULTS), results, 2)
  if grouped then grouping()(1, changed, true) end
  if listen then
    local nt, pub, pct, qn = notifying()
    local list, queue = {}, qn(1)
    for j, id in ipairs(changed) do
      list[j] = nt('completed', id, queue, tonumber(string.match(tries[j], '^%d+')), pct(ps[j]), '')
    end
    pub(ch, list)
  end
end
return out
)lua",

// fail. ARGV: id, token, now, message, retry_at ('' = none), retry flag.
// Returns 0 rejected, 1 retried, 2 dead.
R"lua(
errors().check_types(1)
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
return retried and 1 or 2
)lua",

// extend. ARGV: id, token, now, lease ms. Returns 1 or 0.
R"lua(
errors().check_types(1)
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
requeue(1, id, h, int(now), now)
left_active(1, {id})
return 1
)lua",

// progress. ARGV: id, token, percent, message. Returns 1 or 0.
R"lua(
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
)lua",

// recover. ARGV: now, max jobs, error message. Returns {retried, dead, examined}.
R"lua(
errors().check_types(1)
local now, max = tonumber(ARGV[1]), tonumber(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', key(1, LEASES), '-inf', now, 'LIMIT', 0, max)
local hs = {}
for i, id in ipairs(ids) do hs[i] = hot(1, id) or false end
local retried, dead = 0, 0
local left, list = {}, {}
local queue = qname(1)
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
      dead = dead + 1
      list[#list + 1] = notice('dead', id, queue, attempts, 0, ARGV[3])
    end
  end
end
left_active(1, left)
local ch = channel()
if #list > 0 and listening(ch) then publish(ch, list) end
return {retried, dead, #ids}
)lua",

// cancel. ARGV: id, now. Returns 1 or 0.
R"lua(
errors().check_types(1)
local h = hot(1, ARGV[1])
if not h then return 0 end
check_doc(1, ARGV[1], redis.call('HGET', key(1, JOBS), ARGV[1]))
if h.state ~= 'queued' then return 0 end
finish(1, ARGV[1], h, 'cancelled', tonumber(ARGV[2]))
local g = redis.call('HGET', key(1, GROUPS), ARGV[1])
if g then refill(1, g) end
local ch = channel()
if listening(ch) then
  local p = percent(redis.call('HGET', key(1, PROGRESS), ARGV[1]))
  publish(ch, {notice('cancelled', ARGV[1], qname(1), h.attempts, p, '')})
end
return 1
)lua",

// redrive. ARGV: id, now. Returns 1 or 0.
R"lua(
errors().check_types(1)
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
errors().check_types(1)
redis.call('SET', key(1, PAUSED), '1')
return 1
)lua",

// resume
R"lua(
errors().check_types(1)
redis.call('DEL', key(1, PAUSED))
wake(1, 1)
return 1
)lua",

// counts. Returns {queued, active, completed, dead, cancelled}.
R"lua(
errors().check_types(1)
return {redis.call('ZCARD', key(1, IDS.queued)), redis.call('ZCARD', key(1, IDS.active)),
        redis.call('ZCARD', key(1, IDS.completed)), redis.call('ZCARD', key(1, IDS.dead)),
        redis.call('ZCARD', key(1, IDS.cancelled))}
)lua",

// list. ARGV: state, offset, limit (> 0). Returns 5 values per job (see row), ordered by id.
R"lua(
errors().check_types(1)
local first = tonumber(ARGV[2])
local ids = redis.call('ZRANGE', key(1, IDS[ARGV[1]]), first, first + tonumber(ARGV[3]) - 1)
local out = {}
for _, id in ipairs(ids) do row(1, id, out) end
return out
)lua",

// prune. ARGV: cutoff for completed, dead, cancelled (finished_at strictly before it is deleted;
// '' keeps forever), keep at most N per state ('' = no cap), batch size. Returns deleted ids.
R"lua(
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
  if h then release_unique(1, id, h) end
  for _, k in ipairs({JOBS, STATE, ERRORS, RESULTS, PROGRESS, GROUPS}) do redis.call('HDEL', key(1, k), id) end
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
  local blocked = false
  if redis.call('EXISTS', key(q, PAUSED)) == 0 then
    -- A queue at its rate limit has no work before its oldest start in the window expires.
    local l = redis.call('HMGET', key(q, LIMITS), 'rate_max', 'rate_window', 'rate_used')
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
)lua",

// fetch (read-only; get). ARGV: id. Returns the 5 values of row(), or an empty array.
R"lua(
local out = {}
row(1, ARGV[1], out)
return out
)lua",

// limits (set_queue_limits). ARGV: rate max ('' = no rate limit), window ms, group concurrency
// (0 = none). Every parked job goes back to the ready set: the next claims park again what the
// new limit still holds back.
R"lua(
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
local n = 0
repeat
  local moved = unpark_members(1, redis.call('ZRANGE', key(1, PARKED), 0, 999))
  n = n + moved
until moved == 0
wake(1, math.max(n, 1))
return 1
)lua",

// undo_claim: gives back the jobs of claims whose reply never reached the client, without
// counting their attempt. KEYS: NK per queue of the claims (the claim's queues). ARGV: now, then
// per claim: its token seed and its lease deadline (the claim's now + lease). Returns the number
// of jobs given back.
// The claim records nothing for this: its jobs are found through Q:leases, where they all have
// the claim's deadline as score, and their tokens start with its seed (seed .. hex6). The hot
// claim path stays as it is; only this rare call pays one ZRANGEBYSCORE per claim and queue.
// Nobody else knows these tokens, so a job that still has one is exactly as the claim left
// it: active, attempts + 1, last token and outcome untouched. It goes back to its place in the
// ready set (same run_at), and its group and rate-limit counts are taken back.
R"lua(
-- lazy grouping: left_active
local now = tonumber(ARGV[1])
local undone = 0
for q = 1, nqueues() do
  errors().check_types(q)
  for i = 2, #ARGV, 2 do
    local seed, deadline = ARGV[i], ARGV[i + 1]
    local given = {}
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', key(q, LEASES), deadline, deadline)) do
      local h = hot(q, id)
      if h and h.state == 'active' and #h.token == #seed + 6 and string.sub(h.token, 1, #seed) == seed then
        h.attempts = math.max(h.attempts - 1, 0)
        requeue(q, id, h, h.run_at, now)
        given[#given + 1] = id
      end
    end
    if #given > 0 then
      grouping()(q, given)
      local member = seed .. ':' .. #given  -- the claim's rate-limit entry, if all its jobs came back
      if redis.call('ZSCORE', key(q, STARTS), member) then
        redis.call('ZREM', key(q, STARTS), member)
        redis.call('HINCRBY', key(q, LIMITS), 'rate_used', 0 - #given)
      end
      undone = undone + #given
    end
  end
end
return undone
)lua",
};

/// @brief The prelude split at its "-- §" lines (the first section always goes in).
inline std::vector<std::string_view> prelude_sections() {
  constexpr std::string_view mark = "-- \xc2\xa7\n";
  std::vector<std::string_view> sections;
  for (std::string_view rest = script_prelude;;) {
    const auto at = rest.find(mark);
    sections.push_back(rest.substr(0, at));
    if (at == std::string_view::npos) break;
    rest.remove_prefix(at + mark.size());
  }
  return sections;
}

/// @brief Which sections `text` needs beyond `have`: every section defining a function called
/// by `text` or by a section taken here (the sections in `have` are already defined).
inline std::vector<bool> sections_needed(std::string_view text, const std::vector<std::string_view>& sections,
                                         std::vector<bool> have) {
  const auto is_ident = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  };
  const auto calls = [&](std::string_view where, std::string_view name) {
    const std::string call = std::string(name) + "(";
    for (auto at = where.find(call); at != std::string_view::npos; at = where.find(call, at + 1)) {
      if (at == 0 || !is_ident(where[at - 1])) return true;
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
  for (bool grew = true; grew;) {
    grew = false;
    for (std::size_t i = 0; i < sections.size(); ++i) {
      if (taken[i] || have[i]) continue;
      bool needed = false;
      for (auto name : defines(sections[i])) {
        needed = needed || calls(text, name);
        for (std::size_t j = 0; j < sections.size() && !needed; ++j) needed = taken[j] && calls(sections[j], name);
      }
      if (needed) taken[i] = grew = true;
    }
  }
  return taken;
}

/// @brief The queue keys a script receives (indices into queue_key_suffixes, in that order): the
/// body's "-- keys: NAME ..." line, or else every key but Q:none. Fewer keys make a cheaper call
/// (each is an argument to parse and a Lua string to create).
inline std::vector<std::size_t> script_key_indices(std::string_view body) {
  std::vector<std::size_t> out;
  constexpr std::string_view kw = "-- keys:";
  const auto at = body.find(kw);
  if (at == std::string_view::npos) {
    for (std::size_t i = 0; i + 1 < queue_key_suffixes.size(); ++i) out.push_back(i);
    return out;
  }
  const auto line = body.substr(at + kw.size(), body.find('\n', at) - at - kw.size());
  for (std::size_t i = 0; i < queue_key_names.size(); ++i) {
    for (std::size_t pos = 0; pos < line.size();) {
      const auto start = line.find_first_not_of(' ', pos);
      if (start == std::string_view::npos) break;
      const auto end = std::min(line.find(' ', start), line.size());
      if (line.substr(start, end - start) == queue_key_names[i]) out.push_back(i);
      pos = end;
    }
  }
  return out;
}

/// @brief The Lua constants of a script's key layout: NK, the position of each key in it
/// (false: not passed), and KEYTYPES (the type letter of each position).
inline std::string key_header(const std::vector<std::size_t>& indices) {
  std::array<std::string, queue_key_names.size()> pos;
  pos.fill("false");
  std::string types;
  for (std::size_t j = 0; j < indices.size(); ++j) {
    pos[indices[j]] = std::to_string(j + 1);
    types += queue_key_types[indices[j]];
  }
  std::string out = "local NK = " + std::to_string(indices.size()) + "\nlocal KEYTYPES = '" + types + "'\n";
  std::string ids = "local IDS = {", done = "local DONE = {";
  for (std::size_t i = 0; i < queue_key_names.size(); ++i) {
    const auto name = queue_key_names[i];
    if (name.substr(0, 4) == "IDS.") {
      ids += std::string(name.substr(4)) + " = " + pos[i] + ", ";
    } else if (name.substr(0, 5) == "DONE.") {
      done += std::string(name.substr(5)) + " = " + pos[i] + ", ";
    } else {
      out += "local " + std::string(name) + " = " + pos[i] + "\n";
    }
  }
  return out + ids + "}\n" + done + "}\n";
}

/// @brief A script's source: its key constants, the prelude sections its body calls, then the body. A body line
/// "-- lazy NAME: f g" becomes `local function NAME() <sections f and g need> return f, g end`:
/// helpers only some calls use (debounce, groups, notices) are then created by the calls that
/// use them, not by every call (Lua creates a script's local functions afresh on each call;
/// each costs a few hundred instructions).
inline std::string build_script(std::string_view body) {
  const auto sections = prelude_sections();
  struct Lazy {
    std::string name, fns;
  };
  std::vector<Lazy> lazies;
  std::string eager;  // the body without its lazy lines: what the top level must define
  for (std::string_view rest = body; !rest.empty();) {
    const auto nl = rest.find('\n');
    const auto line = rest.substr(0, nl == std::string_view::npos ? rest.size() : nl + 1);
    rest.remove_prefix(line.size());
    constexpr std::string_view kw = "-- lazy ";
    if (line.substr(0, kw.size()) == kw) {
      const auto colon = line.find(':');
      lazies.push_back({std::string(line.substr(kw.size(), colon - kw.size())),
                        std::string(line.substr(colon + 1, line.find_last_not_of(" \n") - colon))});
    } else {
      eager += line;
    }
  }
  std::vector<bool> none(sections.size(), false);
  none[0] = true;
  auto top = sections_needed(eager, sections, none);
  top[0] = true;
  std::string out = key_header(script_key_indices(body));
  for (std::size_t i = 0; i < sections.size(); ++i) {
    if (top[i]) out += sections[i];
  }
  for (std::string_view rest = body; !rest.empty();) {
    const auto nl = rest.find('\n');
    const auto line = rest.substr(0, nl == std::string_view::npos ? rest.size() : nl + 1);
    rest.remove_prefix(line.size());
    if (line.substr(0, 8) != "-- lazy ") {
      out += line;
      continue;
    }
    const auto& lazy = lazies.front();
    std::string wanted, returned;
    for (std::size_t at = 0; at < lazy.fns.size();) {
      const auto start = lazy.fns.find_first_not_of(' ', at);
      if (start == std::string::npos) break;
      const auto end = std::min(lazy.fns.find(' ', start), lazy.fns.size());
      const auto fn = lazy.fns.substr(start, end - start);
      wanted += fn + "( ";
      returned += (returned.empty() ? "" : ", ") + fn;
      at = end;
    }
    const auto inner = sections_needed(wanted, sections, top);
    out += "local function " + lazy.name + "()\n";
    for (std::size_t i = 0; i < sections.size(); ++i) {
      if (inner[i]) out += sections[i];
    }
    out += "return " + returned + "\nend\n";
    lazies.erase(lazies.begin());
  }
  return out;
}

/// @brief The queue keys script `s` receives, built once (see script_key_indices).
inline const std::vector<std::size_t>& script_keys(Script s) {
  static const std::array<std::vector<std::size_t>, script_count> keys = [] {
    std::array<std::vector<std::size_t>, script_count> out;
    for (std::size_t i = 0; i < script_count; ++i) out[i] = script_key_indices(script_bodies[i]);
    return out;
  }();
  return keys[static_cast<std::size_t>(s)];
}

/// @brief The full source of a script, built once.
inline const std::string& script_source(Script s) {
  static const std::array<std::string, script_count> sources = [] {
    std::array<std::string, script_count> out;
    for (std::size_t i = 0; i < script_count; ++i) out[i] = build_script(script_bodies[i]);
    return out;
  }();
  return sources[static_cast<std::size_t>(s)];
}

}  // namespace jobq::detail::redis
