#pragma once
// The scripts of the job page's actions and search (issue 18): run_now, remove, find_unique.
// Each is one call in the job's (or the queue's) slot; the job's queue comes from the global
// id map first, as for cancel and redrive.

#include <string_view>

namespace jobq::detail::redis::lua {

// run_now. ARGV: now, id. A queued job not yet due becomes due now (its other fields kept) and
// a worker of the queue is woken. Returns 1, or 0 with nothing changed.
inline constexpr std::string_view run_now = R"lua(
-- keys: JOBS READY DELAYED IDS.queued WAKE STATE GROUPS PARKED NONE
errors().check_types(1)
local now = tonumber(ARGV[1])
local id = ARGV[2]
local h = hot(1, id)
if not h or h.state ~= 'queued' or tonumber(h.run_at) <= now then return 0 end
unindex(1, id, h)
h.run_at = int(now)
index(1, id, h, now)
save(1, id, h)
wake(1, 1)
return 1
)lua";

// remove. ARGV: id. Deletes a finished job outside flows as prune does (drop_finished). Returns
// {id} (the client then drops it from the id map, as after prune) or {} with nothing changed.
inline constexpr std::string_view remove = R"lua(
-- keys: JOBS IDS.completed IDS.dead IDS.cancelled DONE.completed DONE.dead DONE.cancelled UNIQUE STATE ERRORS RESULTS PROGRESS GROUPS MEMBER NONE
errors().check_types(1)
local id = ARGV[1]
local h = hot(1, id)
if not h or (h.state ~= 'completed' and h.state ~= 'dead' and h.state ~= 'cancelled') then return {} end
if redis.call('HEXISTS', key(1, MEMBER), id) == 1 then return {} end  -- flows go whole, by prune
drop_finished(1, id, h.state, h)
return {id}
)lua";

// find_unique (read-only). ARGV: unique key, now. Returns the id of the key's holder (Q:unique,
// as enqueue reads it) while it holds the key (holds_unique), else ''.
inline constexpr std::string_view find_unique = R"lua(
-- keys: UNIQUE STATE NONE
local id = redis.call('HGET', key(1, UNIQUE), ARGV[1])
local h = id and hot(1, id)
if h and holds_unique(h, tonumber(ARGV[2])) then return id end
return ''
)lua";

}  // namespace jobq::detail::redis::lua
