#pragma once
// The claim script, and undo_claim for a claim whose reply was lost.

#include <string_view>

namespace jobq::detail::redis::lua {

// claim. KEYS: NK per queue. ARGV: now, limit, lease ms, token seed. Promotes due delayed jobs,
// takes the best `limit` ready jobs over all unpaused queues within their limits, leases them.
// Returns per job: fixed part, new state entry, errors (false: none), progress (false: none).
inline constexpr std::string_view claim = R"lua(
-- keys: JOBS READY DELAYED LEASES IDS.queued IDS.active PAUSED STATE ERRORS PROGRESS LIMITS STARTS GROUPS GACTIVE PARKED DEADLINES NONE
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
local lims, grouped, dated = {}, {}, {}
for q = 1, nqueues() do
  local l = redis.pcall('HMGET', key(q, LIMITS), 'rate_max', 'rate_window', 'group_concurrency', 'rate_used',
                        'concurrency')
  if l.err then errors().read_failed(key(q, LIMITS), 'hash', l) end
  lims[q] = l
  grouped[q] = redis.call('EXISTS', key(q, GROUPS)) == 1
  dated[q] = redis.call('ZCARD', key(q, DEADLINES)) > 0  -- no deadlines: no check per job
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
-- Past its deadline: never started. Taken out of the ready set (as a stale entry is); the job
-- stays queued in Q:deadlines, where recover ends it.
local function late(q, id)
  if not dated[q] then return false end
  local d = redis.call('ZSCORE', key(q, DEADLINES), id)
  return d and tonumber(d) < now
end
local stale = {}
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
    -- Queue concurrency: at most the free slots (the script is atomic: no other claim runs).
    if (tonumber(l[5]) or 0) > 0 then
      want = math.min(want, tonumber(l[5]) - redis.call('ZCARD', key(q, IDS.active)))
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
            if late(q, ids[k]) then  -- before its group counts it
              stale[#stale + 1] = {q = q, m = m}
            elseif not g then
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
    if ok and late(e.q, e.id) then ok = false end
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
)lua";

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
inline constexpr std::string_view undo_claim = R"lua(
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
)lua";

}  // namespace jobq::detail::redis::lua
