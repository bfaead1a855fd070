#pragma once
// The script table (each script's id, name and body in one place) and how scripts are run:
// SCRIPT LOAD on every new connection, EVALSHA, and a reload after NOSCRIPT.

#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "jobq/redis/connection.hpp"
#include "jobq/redis/lua_admin.hpp"
#include "jobq/redis/lua_claim.hpp"
#include "jobq/redis/lua_enqueue.hpp"
#include "jobq/redis/lua_flow.hpp"
#include "jobq/redis/lua_job_admin.hpp"
#include "jobq/redis/lua_lease.hpp"
#include "jobq/redis/lua_linker.hpp"
#include "jobq/redis/lua_read.hpp"
#include "jobq/redis/lua_workers.hpp"

namespace jobq::detail::redis {

/// @brief The scripts, in the order of `script_defs`.
enum class Script : std::size_t {
  enqueue, claim, complete, fail, extend, release, progress, recover,
  cancel, redrive, pause, resume, counts, list, prune, peek, fetch, limits, undo_claim,
  flow_write, settle, outbox_ack, flow_fire, flow_home, cancel_many, flow_prunable,
  flow_expired, flow_drop, flow_abort, flow_discard,
  worker_register, worker_unregister, workers,
  run_now, remove, find_unique,
  count_
};

/// @brief A script: its id, its name (for messages) and its body (see lua_linker.hpp).
struct ScriptDef {
  Script id;
  std::string_view name;
  std::string_view body;
};

/// @brief Every script, in the order of Script.
inline constexpr std::array script_defs = {
    ScriptDef{Script::enqueue, "enqueue", lua::enqueue},
    ScriptDef{Script::claim, "claim", lua::claim},
    ScriptDef{Script::complete, "complete", lua::complete},
    ScriptDef{Script::fail, "fail", lua::fail},
    ScriptDef{Script::extend, "extend", lua::extend},
    ScriptDef{Script::release, "release", lua::release},
    ScriptDef{Script::progress, "progress", lua::progress},
    ScriptDef{Script::recover, "recover", lua::recover},
    ScriptDef{Script::cancel, "cancel", lua::cancel},
    ScriptDef{Script::redrive, "redrive", lua::redrive},
    ScriptDef{Script::pause, "pause", lua::pause},
    ScriptDef{Script::resume, "resume", lua::resume},
    ScriptDef{Script::counts, "counts", lua::counts},
    ScriptDef{Script::list, "list", lua::list},
    ScriptDef{Script::prune, "prune", lua::prune},
    ScriptDef{Script::peek, "peek", lua::peek},
    ScriptDef{Script::fetch, "fetch", lua::fetch},
    ScriptDef{Script::limits, "limits", lua::limits},
    ScriptDef{Script::undo_claim, "undo_claim", lua::undo_claim},
    ScriptDef{Script::flow_write, "flow_write", lua::flow_write},
    ScriptDef{Script::settle, "settle", lua::settle},
    ScriptDef{Script::outbox_ack, "outbox_ack", lua::outbox_ack},
    ScriptDef{Script::flow_fire, "flow_fire", lua::flow_fire},
    ScriptDef{Script::flow_home, "flow_home", lua::flow_home},
    ScriptDef{Script::cancel_many, "cancel_many", lua::cancel_many},
    ScriptDef{Script::flow_prunable, "flow_prunable", lua::flow_prunable},
    ScriptDef{Script::flow_expired, "flow_expired", lua::flow_expired},
    ScriptDef{Script::flow_drop, "flow_drop", lua::flow_drop},
    ScriptDef{Script::flow_abort, "flow_abort", lua::flow_abort},
    ScriptDef{Script::flow_discard, "flow_discard", lua::flow_discard},
    ScriptDef{Script::worker_register, "worker_register", lua::worker_register},
    ScriptDef{Script::worker_unregister, "worker_unregister", lua::worker_unregister},
    ScriptDef{Script::workers, "workers", lua::workers},
    ScriptDef{Script::run_now, "run_now", lua::run_now},
    ScriptDef{Script::remove, "remove", lua::remove},
    ScriptDef{Script::find_unique, "find_unique", lua::find_unique},
};

/// @brief How many scripts there are.
inline constexpr std::size_t script_count = script_defs.size();

/// @brief True if script_defs[i] is the script with value i, for every value of Script.
constexpr bool scripts_match_enum() {
  if (script_defs.size() != static_cast<std::size_t>(Script::count_)) return false;
  for (std::size_t i = 0; i < script_defs.size(); ++i) {
    if (script_defs[i].id != static_cast<Script>(i)) return false;
  }
  return true;
}
static_assert(scripts_match_enum(), "jobq: the script table must list every Script, in the enum's order");

/// @brief The queue keys script `s` receives (see script_key_indices), built once.
inline const std::vector<std::size_t>& script_keys(Script s) {
  static const auto keys = [] {
    std::array<std::vector<std::size_t>, script_count> out;
    for (std::size_t i = 0; i < script_count; ++i) out[i] = script_key_indices(script_defs[i].body);
    return out;
  }();
  return keys[static_cast<std::size_t>(s)];
}

/// @brief The full source of a script (see build_script), built once.
inline const std::string& script_source(Script s) {
  static const auto sources = [] {
    std::array<std::string, script_count> out;
    for (std::size_t i = 0; i < script_count; ++i) out[i] = build_script(script_defs[i].body);
    return out;
  }();
  return sources[static_cast<std::size_t>(s)];
}

/// @brief The SHA1 of each script, as SCRIPT LOAD returns it.
using ScriptShas = std::array<std::string, script_count>;

/// @brief Loads every script on a connection (one round trip). New connections do this: after a
/// server restart the script cache is empty, and new connections are made exactly then.
/// `where`: the masked URL, for messages.
inline ScriptShas load_scripts(Connection& c, const std::string& where) {
  std::vector<Args> cmds;
  for (const auto& s : script_defs) cmds.push_back({"SCRIPT", "LOAD", script_source(s.id)});
  auto replies = c.pipeline(cmds);
  ScriptShas shas;
  for (std::size_t i = 0; i < replies.size(); ++i) {
    if (is_error(replies[i])) throw_reply("loading the jobq scripts into " + where + " failed", text(replies[i].get()));
    shas[i] = std::string(text(replies[i].get()));
  }
  return shas;
}

/// @brief One command of a pipeline; `script` is set for an EVALSHA (resent after SCRIPT LOAD
/// on NOSCRIPT).
struct Cmd {
  Args args;
  std::optional<Script> script;
};

/// @brief Calls of the loaded scripts by EVALSHA.
class ScriptRunner {
 public:
  /// @brief Scripts known by these SHA1s (from load_scripts).
  explicit ScriptRunner(ScriptShas shas = {}) : shas_(std::move(shas)) {}

  /// @brief The EVALSHA command of script `s` with `keys` and `argv`.
  [[nodiscard]] Args args(Script s, const Args& keys, Args argv) const {
    Args a;
    a.reserve(3 + keys.size() + argv.size());
    a.push_back("EVALSHA");
    a.push_back(shas_[static_cast<std::size_t>(s)]);
    a.push_back(std::to_string(keys.size()));
    a.insert(a.end(), keys.begin(), keys.end());
    for (auto& v : argv) a.push_back(std::move(v));
    return a;
  }

  /// @brief The EVALSHA of `s` as a pipeline command.
  [[nodiscard]] Cmd cmd(Script s, const Args& keys, Args argv) const { return {args(s, keys, std::move(argv)), s}; }

  /// @brief Runs the commands in one round trip; an EVALSHA answered NOSCRIPT (script cache
  /// flushed) was not run, so it is loaded and sent again. Another client may flush again
  /// between the load and the resend, so this retries a few times before giving up.
  static std::vector<Reply> exec(Connection& c, const std::vector<Cmd>& cmds) {
    auto replies = c.pipeline(cmds);
    for (std::size_t i = 0; i < replies.size(); ++i) {
      for (int attempt = 0; cmds[i].script && is_noscript(replies[i]); ++attempt) {
        if (attempt == 5) throw_reply("a script kept disappearing from the cache", text(replies[i].get()));
        auto loaded = c.command({"SCRIPT", "LOAD", script_source(*cmds[i].script)});
        if (is_error(loaded)) throw_reply("reloading a script failed", text(loaded.get()));
        replies[i] = c.command(cmds[i].args);
      }
    }
    return replies;
  }

  /// @brief Runs one script and returns its reply (error replies included).
  Reply eval(Connection& c, Script s, const Args& keys, Args argv) const {
    std::vector<Cmd> cmds;
    cmds.push_back(cmd(s, keys, std::move(argv)));
    return std::move(exec(c, cmds).front());
  }

 private:
  static bool is_noscript(const Reply& r) { return is_error(r) && text(r.get()).starts_with("NOSCRIPT"); }

  ScriptShas shas_;
};

}  // namespace jobq::detail::redis
