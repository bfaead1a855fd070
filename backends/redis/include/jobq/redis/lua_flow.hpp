#pragma once
// The flow scripts (issue 16). Every script touches one queue's slot only, so flows stay
// Cluster-ready although their members may live in several queues (several slots):
//   - enqueue_flow writes each queue's members with flow_write, the other queues first, every
//     member there waiting on the pseudo-dependency 0 ("the flow is committed"); the home queue
//     (the first member's) last: its call is the commit point. It stores the flow-wide data and
//     puts a "0 completed" record for each member of another queue in its outbox.
//   - The end of a member (complete, fail, recover, cancel) or its re-drive settles its
//     dependents of the same queue in that same script (flow_spread, lua_prelude.hpp) and puts
//     a record for each dependent of another queue in Q:outbox, in the same atomic step.
//   - The client applies outbox records with settle in the dependent's slot, then removes them
//     with outbox_ack. settle is idempotent (Q:resolved keeps the newest seq per member and
//     dependency), so a crash between the steps only leaves records to apply again;
//     recover_expired drains every outbox it finds.
//   - A member that dies by its own failure also puts "! <flow> <member>" in its outbox: the
//     client runs flow_fire in the home slot (the fired flag: at most one error callback per
//     flow), then writes the callback with flow_write under the id and nonce flow_fire kept, so
//     every retry of it writes the same job once.

#include <string_view>

namespace jobq::detail::redis::lua {

// flow_write: the members of one queue. ARGV: now, nonce, flow id, the member list ("<id>:<queue>
// ...", home only, else ''), the on_failure job (JSON, home only, else ''), the commit records'
// targets ("<id>:<queue> ...": the members of other queues, home only, else ''), then per
// member: id, fixed part, state entry, 'r' ready / 'd' delayed / 'w' waiting, index score and
// member, Q:pending entry ('' none), Q:dependents entry ('' none), group ('' none), deadline
// ('' none; Q:deadlines). Returns 1,
// or 0 when this call's nonce already wrote them (a resend).
inline constexpr std::string_view flow_write = R"lua(
errors().check_types(1)
local now, nonce, fid = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local FIRST, W = 7, 10
local first = redis.call('HGET', key(1, JOBS), ARGV[FIRST])
if first then
  if string.find(first, '"nonce":"' .. nonce .. '"', 1, true) then return 0 end
  fail('jobq: job id ' .. ARGV[FIRST] .. ' already exists in ' .. key(1, JOBS) ..
       ': the id counter went back (was the <prefix>:id key deleted?)')
end
local home = ARGV[4] ~= ''
if home and redis.call('HEXISTS', key(1, FLOWS), fid .. ':a') == 1 then
  fail('jobq: enqueue_flow: flow ' .. fid .. ' came too late to commit: the maintenance pass had ' ..
       'discarded its members in other queues; nothing of it is stored')
end
local jobs, state, mem, queued, waiting, r, d, pend, deps, groups, dls = {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}
local uncommitted = {}
local function add(t, a, b)
  t[#t + 1] = a
  t[#t + 1] = b
end
local n = 0
for i = FIRST, #ARGV, W do
  local id = ARGV[i]
  add(jobs, id, ARGV[i + 1])
  add(state, id, ARGV[i + 2])
  add(mem, id, fid)
  if ARGV[i + 3] == 'w' then
    add(waiting, id, id)
    if not home then add(uncommitted, now, id) end
  else
    add(queued, id, id)
    add(ARGV[i + 3] == 'r' and r or d, ARGV[i + 4], ARGV[i + 5])
    n = n + 1
  end
  if ARGV[i + 6] ~= '' then add(pend, id, ARGV[i + 6]) end
  if ARGV[i + 7] ~= '' then add(deps, id, ARGV[i + 7]) end
  if ARGV[i + 8] ~= '' then add(groups, id, ARGV[i + 8]) end
  if ARGV[i + 9] ~= '' then add(dls, ARGV[i + 9], id) end
end
bulk('HSET', key(1, JOBS), jobs, 2)
bulk('HSET', key(1, STATE), state, 2)
bulk('HSET', key(1, MEMBER), mem, 2)
bulk('ZADD', key(1, IDS.queued), queued, 2)
bulk('ZADD', key(1, IDS.waiting), waiting, 2)
bulk('ZADD', key(1, READY), r, 2)
bulk('ZADD', key(1, DELAYED), d, 2)
bulk('HSET', key(1, PENDING), pend, 2)
bulk('HSET', key(1, DEPENDENTS), deps, 2)
bulk('HSET', key(1, GROUPS), groups, 2)
bulk('ZADD', key(1, UNCOMMITTED), uncommitted, 2)
bulk('ZADD', key(1, DEADLINES), dls, 2)
if home then redis.call('HSET', key(1, FLOWS), fid .. ':m', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', key(1, FLOWS), fid .. ':f', ARGV[5]) end
if ARGV[6] ~= '' then
  local seq = int(redis.call('INCR', key(1, SEQ)))
  local recs = {}
  for x, q in string.gmatch(ARGV[6], '(%d+):(%S+)') do recs[#recs + 1] = q .. ' ' .. x .. ' 0 ' .. seq .. ' c ' end
  bulk('RPUSH', key(1, OUTBOX), recs, 1)
end
if n > 0 then wake(1, n) end
return 1
)lua";

// settle: applies outbox records of other slots to this queue's members. ARGV: now, then per
// record: member, dependency, seq, outcome, message. Returns how many records it put in this
// queue's outbox in turn.
inline constexpr std::string_view settle = R"lua(
errors().check_types(1)
local now = tonumber(ARGV[1])
local applies, committed = {}, {}
for i = 2, #ARGV, 5 do
  applies[#applies + 1] = {ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]}
  if ARGV[i + 1] == '0' then committed[#committed + 1] = ARGV[i] end
end
bulk('ZREM', key(1, UNCOMMITTED), committed, 1)
local notes, sent = flow_spread(now, {}, applies)
flow_notices(notes)
return sent
)lua";

// outbox_ack: removes applied records. ARGV: the records, as read from the head of Q:outbox.
// Records are only appended, so they are usually still the head (one LTRIM); when another
// client removed them first, each is removed by value (what is already gone stays gone).
inline constexpr std::string_view outbox_ack = R"lua(
-- keys: OUTBOX NONE
errors().check_types(1)
local n = #ARGV
local head = redis.call('LRANGE', key(1, OUTBOX), 0, n - 1)
local same = #head == n
for i = 1, n do
  if not same then break end
  same = head[i] == ARGV[i]
end
if same then
  redis.call('LTRIM', key(1, OUTBOX), n, -1)
else
  for i = 1, n do redis.call('LREM', key(1, OUTBOX), 1, ARGV[i]) end
end
return 1
)lua";

// flow_fire (home slot): the error callback of a flow, at most once. ARGV: flow id, a fresh id,
// a fresh nonce, the member that died. Returns {} when the flow has no callback or was
// cancelled, else {"<id> <nonce> <member>" as first fired, the job (JSON)}.
inline constexpr std::string_view flow_fire = R"lua(
-- keys: FLOWS NONE
errors().check_types(1)
local fid = ARGV[1]
local job = redis.call('HGET', key(1, FLOWS), fid .. ':f')
if not job then return {} end
local x = redis.call('HGET', key(1, FLOWS), fid .. ':x')
if x == '-' then return {} end
if not x then
  x = ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[4]
  redis.call('HSET', key(1, FLOWS), fid .. ':x', x)
  local m = redis.call('HGET', key(1, FLOWS), fid .. ':m') or ''
  redis.call('HSET', key(1, FLOWS), fid .. ':m', m .. ' ' .. ARGV[2] .. ':' .. cjson.decode(job).queue)
end
return {x, job}
)lua";

// flow_abort (home slot): decides the fate of a flow whose members elsewhere still wait for
// its commit. ARGV: flow id, now. Returns 1 when it is committed (its records will reach them),
// else marks it aborted (its commit will fail) and returns 0.
inline constexpr std::string_view flow_abort = R"lua(
-- keys: FLOWS NONE
errors().check_types(1)
if redis.call('HEXISTS', key(1, FLOWS), ARGV[1] .. ':m') == 1 then return 1 end
redis.call('HSETNX', key(1, FLOWS), ARGV[1] .. ':a', ARGV[2])
return 0
)lua";

// flow_discard: deletes members of an aborted flow (flow_abort) written here, those still
// waiting for the commit. ARGV: ids. Returns the deleted ids.
inline constexpr std::string_view flow_discard = R"lua(
errors().check_types(1)
local deleted = {}
for i = 1, #ARGV do
  local id = ARGV[i]
  local h = redis.call('ZSCORE', key(1, UNCOMMITTED), id) and hot(1, id)
  if h and h.state == 'waiting' then
    forget_member(1, id, h)
    deleted[#deleted + 1] = id
  end
  redis.call('ZREM', key(1, UNCOMMITTED), id)
end
return deleted
)lua";

// flow_home (home slot): a flow's member list ("<id>:<queue> ...", '' unknown). ARGV: flow id,
// stop ('1': cancel_flow; from now on the flow fires no error callback).
inline constexpr std::string_view flow_home = R"lua(
-- keys: FLOWS NONE
errors().check_types(1)
if ARGV[2] == '1' then redis.call('HSETNX', key(1, FLOWS), ARGV[1] .. ':x', '-') end
return redis.call('HGET', key(1, FLOWS), ARGV[1] .. ':m') or ''
)lua";

// cancel_many (cancel_flow, one queue): cancels the listed jobs that are queued or waiting, all
// at once, then settles what waits on them. ARGV: now, ids. Returns {cancelled, records sent}.
inline constexpr std::string_view cancel_many = R"lua(
errors().check_types(1)
local now = tonumber(ARGV[1])
local ends, notes = {}, {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local h = hot(1, id)
  if h and (h.state == 'queued' or h.state == 'waiting') then
    local was = h.state
    finish(1, id, h, 'cancelled', now)
    local g = was == 'queued' and redis.call('HGET', key(1, GROUPS), id)
    if g then refill(1, g) end
    ends[#ends + 1] = {id, 'x', ''}
    notes[#notes + 1] = {'cancelled', id, ''}
  end
end
local n = #ends
local more, sent = flow_spread(now, ends, {})
for _, x in ipairs(more) do notes[#notes + 1] = x end
flow_notices(notes)
return {n, sent}
)lua";

// flow_prunable: the flows with a finished member here that is past the retention of its state
// (candidates: flow_expired then checks every member). ARGV: cutoff for completed, dead,
// cancelled (finished_at strictly before it; '' keeps forever), most flows to return. Returns
// flow ids. Walks Q:fdone oldest first, at most 50,000 entries per call.
inline constexpr std::string_view flow_prunable = R"lua(
-- keys: STATE MEMBER FDONE NONE
errors().check_types(1)
local cut = {completed = ARGV[1], dead = ARGV[2], cancelled = ARGV[3]}
local want = tonumber(ARGV[4])
local latest = nil
for _, c in pairs(cut) do
  if c ~= '' and (not latest or tonumber(c) > latest) then latest = tonumber(c) end
end
if not latest then return {} end
local out, seen = {}, {}
for start = 0, 49000, 1000 do
  local ids = redis.call('ZRANGEBYSCORE', key(1, FDONE), '-inf', '(' .. int(latest), 'LIMIT', start, 1000)
  if #ids == 0 then break end
  local fids = mget(key(1, MEMBER), ids)
  for i, id in ipairs(ids) do
    local fid = fids[i]
    if fid and not seen[fid] then
      local raw = redis.call('HGET', key(1, STATE), id)
      local h = raw and parse_hot(1, id, raw)
      local c = h and cut[h.state]
      if c and c ~= '' and tonumber(h.finished_at) < tonumber(c) then
        seen[fid] = true
        out[#out + 1] = fid
        if #out >= want then return out end
      end
    end
  end
end
return out
)lua";

// flow_expired: whether every listed member of this queue is finished and past the retention
// of its state (a member already gone counts as such). ARGV: the three cutoffs as in
// flow_prunable, then ids. Returns 1 or 0.
inline constexpr std::string_view flow_expired = R"lua(
-- keys: STATE NONE
errors().check_types(1)
local cut = {completed = ARGV[1], dead = ARGV[2], cancelled = ARGV[3]}
for i = 4, #ARGV do
  local raw = redis.call('HGET', key(1, STATE), ARGV[i])
  if raw then
    local h = parse_hot(1, ARGV[i], raw)
    local c = cut[h.state]
    if not c or c == '' or tonumber(h.finished_at) >= tonumber(c) then return 0 end
  end
end
return 1
)lua";

// flow_drop: deletes a flow's members of this queue, all or none (none when one of them is no
// longer finished: re-driven since flow_expired looked), and in the home slot the flow-wide
// data (called there last). ARGV: flow id, home ('1' or ''), ids. Returns the deleted ids.
inline constexpr std::string_view flow_drop = R"lua(
errors().check_types(1)
local hs = {}
for i = 3, #ARGV do
  local raw = redis.call('HGET', key(1, STATE), ARGV[i])
  local h = raw and parse_hot(1, ARGV[i], raw)
  if h and (h.state == 'queued' or h.state == 'active' or h.state == 'waiting') then return {} end
  hs[i] = h
end
local deleted = {}
for i = 3, #ARGV do
  local id, h = ARGV[i], hs[i]
  if h then
    forget_member(1, id, h)
    deleted[#deleted + 1] = id
  end
end
if ARGV[2] == '1' then redis.call('HDEL', key(1, FLOWS), ARGV[1] .. ':m', ARGV[1] .. ':f', ARGV[1] .. ':x') end
return deleted
)lua";

}  // namespace jobq::detail::redis::lua
