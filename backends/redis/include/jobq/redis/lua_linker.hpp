#pragma once
// The Lua linker: builds a script's source from its body. The source is
//   1. the key constants of the script's layout (NK, KEYTYPES, one local per key of keys.hpp);
//   2. the sections of lua::prelude (split at "-- §" lines) defining a function the body calls,
//      directly or through another section taken (the first section always);
//   3. the body, where a line "-- lazy NAME: f g" becomes `local function NAME() <sections f
//      and g need> return f, g end`: helpers only some calls use (debounce, groups, notices)
//      are then created by the calls that use them, not by every call (Lua creates a script's
//      local functions afresh on each call; each costs a few hundred instructions).
// A body line "-- keys: NAME ..." names the queue keys the script receives; without it a script
// receives every key but Q:none.

#include <algorithm>
#include <array>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "jobq/redis/keys.hpp"
#include "jobq/redis/lua_prelude.hpp"

namespace jobq::detail::redis {

/// @brief The lines of `text`, each with its '\n' (the last may lack one).
inline std::vector<std::string_view> lua_lines(std::string_view text) {
  std::vector<std::string_view> out;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    out.push_back(text.substr(0, nl == std::string_view::npos ? text.size() : nl + 1));
    text.remove_prefix(out.back().size());
  }
  return out;
}

/// @brief The space-separated words of `text`.
inline std::vector<std::string_view> lua_words(std::string_view text) {
  std::vector<std::string_view> out;
  for (std::size_t pos = 0; pos < text.size();) {
    const auto start = text.find_first_not_of(' ', pos);
    if (start == std::string_view::npos) break;
    const auto end = std::min(text.find(' ', start), text.size());
    out.push_back(text.substr(start, end - start));
    pos = end;
  }
  return out;
}

/// @brief The prelude split at its "-- §" lines.
inline std::vector<std::string_view> prelude_sections() {
  constexpr std::string_view mark = "-- \xc2\xa7\n";
  std::vector<std::string_view> sections;
  for (std::string_view rest = lua::prelude;;) {
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
                                         const std::vector<bool>& have) {
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

/// @brief The queue keys a script receives (indices into queue_keys, in that order): the body's
/// "-- keys: NAME ..." line, or else every key but Q:none. Fewer keys make a cheaper call (each
/// is an argument to parse and a Lua string to create).
inline std::vector<std::size_t> script_key_indices(std::string_view body) {
  std::vector<std::size_t> out;
  constexpr std::string_view kw = "-- keys:";
  const auto at = body.find(kw);
  if (at == std::string_view::npos) {
    for (std::size_t i = 0; i + 1 < queue_keys.size(); ++i) out.push_back(i);
    return out;
  }
  const auto named = lua_words(body.substr(at + kw.size(), body.find('\n', at) - at - kw.size()));
  for (std::size_t i = 0; i < queue_keys.size(); ++i) {
    for (auto word : named) {
      if (word == queue_keys[i].lua_name) out.push_back(i);
    }
  }
  return out;
}

/// @brief The Lua constants of a script's key layout: NK, the position of each key in it
/// (false: not passed), and KEYTYPES (the type letter of each position).
inline std::string key_header(const std::vector<std::size_t>& indices) {
  std::array<std::string, queue_keys.size()> pos;
  pos.fill("false");
  std::string types;
  for (std::size_t j = 0; j < indices.size(); ++j) {
    pos[indices[j]] = std::to_string(j + 1);
    types += static_cast<char>(queue_keys[indices[j]].type);
  }
  std::string out = "local NK = " + std::to_string(indices.size()) + "\nlocal KEYTYPES = '" + types + "'\n";
  std::string ids = "local IDS = {", done = "local DONE = {";
  for (std::size_t i = 0; i < queue_keys.size(); ++i) {
    const auto name = queue_keys[i].lua_name;
    if (name.starts_with("IDS.")) {
      ids += std::string(name.substr(4)) + " = " + pos[i] + ", ";
    } else if (name.starts_with("DONE.")) {
      done += std::string(name.substr(5)) + " = " + pos[i] + ", ";
    } else {
      out += "local " + std::string(name) + " = " + pos[i] + "\n";
    }
  }
  return out + ids + "}\n" + done + "}\n";
}

/// @brief `source` without its comment-only lines: the comments are for readers of this code,
/// and Redis 7 refuses an argument above 16 KB from a client before AUTH, so a script sent
/// whole would turn the clear NOAUTH reply into a closed connection.
inline std::string without_comment_lines(const std::string& source) {
  std::string out;
  out.reserve(source.size());
  for (auto line : lua_lines(source)) {
    const auto first = line.find_first_not_of(" \t");
    if (first != std::string_view::npos && line.substr(first).starts_with("--")) continue;
    out += line;
  }
  return out;
}

/// @brief A script's source from its body (see the top of this file).
inline std::string build_script(std::string_view body) {
  constexpr std::string_view lazy_kw = "-- lazy ";
  const auto sections = prelude_sections();
  std::string eager;  // the body without its lazy lines: what the top level must define
  for (auto line : lua_lines(body)) {
    if (!line.starts_with(lazy_kw)) eager += line;
  }
  std::vector<bool> none(sections.size(), false);
  none[0] = true;
  auto top = sections_needed(eager, sections, none);
  top[0] = true;
  std::string out = key_header(script_key_indices(body));
  for (std::size_t i = 0; i < sections.size(); ++i) {
    if (top[i]) out += sections[i];
  }
  for (auto line : lua_lines(body)) {
    if (!line.starts_with(lazy_kw)) {
      out += line;
      continue;
    }
    const auto colon = line.find(':');
    const auto name = line.substr(lazy_kw.size(), colon - lazy_kw.size());
    std::string wanted, returned;
    for (auto fn : lua_words(line.substr(colon + 1, line.find_last_not_of(" \n") - colon))) {
      wanted += std::string(fn) + "( ";
      returned += (returned.empty() ? "" : ", ") + std::string(fn);
    }
    const auto inner = sections_needed(wanted, sections, top);
    out += "local function " + std::string(name) + "()\n";
    for (std::size_t i = 0; i < sections.size(); ++i) {
      if (inner[i]) out += sections[i];
    }
    out += "return " + returned + "\nend\n";
  }
  return without_comment_lines(out);
}

}  // namespace jobq::detail::redis
