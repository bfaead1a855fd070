#pragma once
// The Lua helpers every script may use (see lua_linker.hpp: a script gets the sections it
// calls). Sections are separated by "-- §" lines; the first goes into every script.

#include <string_view>

namespace jobq::detail::redis::lua {

inline constexpr std::string_view prelude = R"lua(
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
local STATES = {queued = true, active = true, completed = true, dead = true, cancelled = true, waiting = true}
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
  elseif st ~= 'waiting' then
    redis.call('ZREM', key(q, DONE[st]), id)
    if FDONE then redis.call('ZREM', key(q, FDONE), id) end
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
  elseif st ~= 'waiting' then
    -- A finished flow member goes to Q:fdone: only its whole flow is pruned.
    local z = key(q, DONE[st])
    if MEMBER and redis.call('HEXISTS', key(q, MEMBER), id) == 1 then z = key(q, FDONE) end
    redis.call('ZADD', z, h.finished_at, id)
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
-- Deletes finished job id of index `state` and everything stored for it in its queue (prune,
-- remove); h: its parsed Q:state entry, nil when that is gone. The client then drops the id
-- from the global id map (forget_pruned).
local function drop_finished(q, id, state, h)
  if h then release_unique(q, id, h) end
  for _, k in ipairs({JOBS, STATE, ERRORS, RESULTS, PROGRESS, GROUPS}) do redis.call('HDEL', key(q, k), id) end
  redis.call('ZREM', key(q, IDS[state]), id)
  redis.call('ZREM', key(q, DONE[state]), id)
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
-- n jobs of a queue with a concurrency limit left the active state: as many waiters may claim.
local function freed_slots(q, n)
  if n > 0 and (tonumber(redis.call('HGET', key(q, LIMITS), 'concurrency')) or 0) > 0 then wake(q, n) end
end

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
  freed_slots(q, #ids)
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
-- Notices go to one channel per prefix, and are built only while someone listens there;
-- cancels of active jobs also go to channel('cancels'), always (watch_cancels).
local function channel(kind)
  return (string.match(KEYS[1], '^(.*):{[^}]*}:jobs$') or 'jobq') .. ':' .. (kind or 'events')
end

-- §
-- Deletes flow member id of queue q (its Q:state entry parsed: h) and everything stored for it.
local function forget_member(q, id, h)
  local ok, d = pcall(cjson.decode, redis.call('HGET', key(q, JOBS), id) or '')
  local fields = {id .. ':0'}
  if ok and type(d) == 'table' and type(d.depends_on) == 'string' then
    for dep in string.gmatch(d.depends_on, '%d+') do fields[#fields + 1] = id .. ':' .. dep end
  end
  redis.call('HDEL', key(q, RESOLVED), unpack(fields))
  for _, k in ipairs({JOBS, STATE, ERRORS, RESULTS, PROGRESS, GROUPS, MEMBER, PENDING, DEPENDENTS}) do
    redis.call('HDEL', key(q, k), id)
  end
  redis.call('ZREM', key(q, IDS[h.state]), id)
  redis.call('ZREM', key(q, FDONE), id)
  if DONE[h.state] then redis.call('ZREM', key(q, DONE[h.state]), id) end
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
-- Flows (lua_flow.hpp): what the end or re-drive of jobs of queue 1 means for the flow members
-- waiting on them. `ends`: {id, outcome, message} per job that just finished (c completed, d
-- dead, x cancelled; message: its last error) or was re-driven (-); `applies`: records of other
-- slots {member, dependency, seq, outcome, message} to settle here. A dependent in this queue is
-- settled at once, in this script; one in another queue gets a record in Q:outbox ("<queue>
-- <member> <dependency> <seq> <outcome> <message>"), which the client applies there. Returns
-- the notices of the dependents that died and how many records went to the outbox.
local function flow_spread(now, ends, applies)
  local me = qname(1)
  local seq = nil
  local notes, woke, sent = {}, 0, 0
  local function fs_res(v, cof) return v == 'c' or (cof and (v == 'd' or v == 'x')) end
  local function fs_bad(v) return v == 'd' or v == 'x' end
  local function fs_apply(x, d, s, o, m)
    local rk = x .. ':' .. d
    local old = redis.call('HGET', key(1, RESOLVED), rk)
    local s0, oo = '0', '-'
    if old then s0, oo = string.match(old, '^(%d+) (%S)$') end
    if tonumber(s0) >= tonumber(s) then return end  -- a replay
    redis.call('HSET', key(1, RESOLVED), rk, s .. ' ' .. o)
    local pe = redis.call('HGET', key(1, PENDING), x)
    if not pe then return end
    local p, b, c = string.match(pe, '^(%-?%d+) (%-?%d+) (%d)$')
    p, b = tonumber(p), tonumber(b)
    local cof = c == '1'
    if fs_res(oo, cof) then p = p + 1 end
    if fs_res(o, cof) then p = p - 1 end
    if fs_bad(oo) then b = b - 1 end
    if fs_bad(o) then b = b + 1 end
    redis.call('HSET', key(1, PENDING), x, int(p) .. ' ' .. int(b) .. ' ' .. c)
    local h = hot(1, x)
    if not h then return end
    if h.state == 'waiting' then
      if fs_bad(o) and not cof then
        -- The root cause is kept, not nested (jobq::dead_dependency_error).
        local root = string.match(m, '^dependency %d+ is dead: (.*)$') or m
        local msg = o == 'x' and ('dependency ' .. d .. ' was cancelled') or ('dependency ' .. d .. ' is dead: ' .. root)
        local st = o == 'x' and 'cancelled' or 'dead'
        append_error(1, x, 0, msg, now)
        finish(1, x, h, st, now)
        notes[#notes + 1] = {st, x, msg}
        ends[#ends + 1] = {x, o, msg}
      elseif p <= 0 then
        unindex(1, x, h)
        h.state = 'queued'
        if tonumber(h.run_at) < now then h.run_at = int(now) end
        index(1, x, h, now)
        save(1, x, h)
        woke = woke + 1
      end
    elseif o == '-' and h.state == 'dead' and h.attempts == 0 and (cof or b == 0) then
      -- It died because of this dependency: it waits again, and so on down the flow.
      unindex(1, x, h)
      h.state = 'waiting'
      h.finished_at = '-'
      index(1, x, h, now)
      save(1, x, h)
      ends[#ends + 1] = {x, '-', ''}
    end
  end
  for _, a in ipairs(applies) do fs_apply(a[1], a[2], a[3], a[4], a[5]) end
  local i = 1
  while i <= #ends do
    local e = ends[i]
    i = i + 1
    local ds = redis.call('HGET', key(1, DEPENDENTS), e[1])
    if ds then
      seq = seq or redis.call('INCR', key(1, SEQ))
      for x, q in string.gmatch(ds, '(%d+):(%S+)') do
        if q == me then
          fs_apply(x, e[1], seq, e[2], e[3])
        else
          redis.call('RPUSH', key(1, OUTBOX), q .. ' ' .. x .. ' ' .. e[1] .. ' ' .. int(seq) .. ' ' .. e[2] .. ' ' .. e[3])
          sent = sent + 1
        end
      end
    end
  end
  if woke > 0 then wake(1, woke) end
  return notes, sent
end

-- §
-- Notices of flow_spread's dead or cancelled dependents, if someone listens.
local function flow_notices(notes)
  if #notes == 0 then return end
  local ch = channel()
  if not listening(ch) then return end
  local list, queue = {}, qname(1)
  for _, n in ipairs(notes) do list[#list + 1] = notice(n[1], n[2], queue, 0, 0, n[3]) end
  publish(ch, list)
end

-- §
-- A flow member died by its own failure (fail, recover): its dependents are settled, and the
-- client is asked to fire the flow's error callback ("! <flow> <member>"). Returns how many
-- records went to the outbox.
local function flow_died(id, msg, now)
  local fid = redis.call('HGET', key(1, MEMBER), id)
  if not fid then return 0 end
  local notes, sent = flow_spread(now, {{id, 'd', msg}}, {})
  flow_notices(notes)
  redis.call('RPUSH', key(1, OUTBOX), '! ' .. fid .. ' ' .. id)
  return sent + 1
end

-- §
-- Cancels job `id` of queue 1, queued, waiting or active in `h` (cancel; recover for a job past
-- its deadline): its group's slot, a notice, its flow's dependents. Returns how many records went
-- to the outbox.
local function cancel_job(id, h, now)
  local was = h.state
  finish(1, id, h, 'cancelled', now)
  if was == 'active' then
    left_active(1, {id})
  else
    local g = was == 'queued' and redis.call('HGET', key(1, GROUPS), id)
    if g then refill(1, g) end
  end
  local ch = channel()
  local heard = listening(ch)
  -- A running job's worker may be elsewhere: the cancels channel tells it at once.
  if heard or was == 'active' then
    local n = {notice('cancelled', id, qname(1), h.attempts, percent(redis.call('HGET', key(1, PROGRESS), id)), '')}
    if heard then publish(ch, n) end
    if was == 'active' then publish(channel('cancels'), n) end
  end
  if redis.call('HEXISTS', key(1, MEMBER), id) == 1 then
    local notes, n = flow_spread(now, {{id, 'x', ''}}, {})
    flow_notices(notes)
    return n
  end
  return 0
end

-- §
-- Epoch ms as ISO 8601 UTC with milliseconds (jobq::iso_time): civil date from days since the
-- epoch (H. Hinnant's algorithm), since scripts have no os.date.
local function iso_time(ms)
  local s = math.floor(ms / 1000)
  local z = math.floor(s / 86400)
  local sec = s - z * 86400
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, m, d, math.floor(sec / 3600),
                       math.floor(sec % 3600 / 60), sec % 60, ms % 1000)
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

}  // namespace jobq::detail::redis::lua
