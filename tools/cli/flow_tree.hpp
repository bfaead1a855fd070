#pragma once

/// @file
/// How `jobq flow` prints a flow: as a tree from the members that wait for nothing down to the
/// members that run after them, or as JSON. Apart from main.cpp so that tests can call it.

#include <algorithm>
#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "jobq/flow.hpp"
#include "jobq/job.hpp"

namespace jobq::cli {

/// @brief `s` on one line (newlines become spaces), cut to `max` characters with "...".
inline std::string one_line(std::string s, std::size_t max) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  if (s.size() > max) s = s.substr(0, max - 3) + "...";
  return s;
}

/// @brief A flow as JSON: {"id", "members": [to_json(member), ...]}; each member's depends_on
/// holds the edges.
inline nlohmann::json flow_to_json(const FlowRecord& flow) {
  auto members = nlohmann::json::array();
  for (const auto& m : flow.members) members.push_back(to_json(m));
  return {{"id", flow.id}, {"members", std::move(members)}};
}

/// @brief Levels a flow tree indents at most; deeper members are printed at that depth (their
/// "after" still names what they wait for), so a long chain stays linear in size.
inline constexpr std::size_t flow_tree_max_depth = 32;

/// @brief A flow for people: a header with the members per state, then one line per member
/// (id, name, queue, state, attempts, what it runs after, the last error of a dead or cancelled
/// one) under each of its dependencies. A member reached a second time (a DAG: it has several
/// dependencies) is printed in full once, then as "#ID (see above)".
inline std::string flow_tree(const FlowRecord& flow) {
  const auto n = flow.members.size();
  std::map<JobId, std::size_t> index;
  for (std::size_t i = 0; i < n; ++i) index.emplace(flow.members[i].id, i);

  // Dependents in id order; a member none of whose dependencies is in the record starts a tree.
  std::vector<std::vector<std::size_t>> dependents(n);
  std::vector<std::size_t> roots;
  for (std::size_t i = 0; i < n; ++i) {
    bool any_inside = false;
    for (const auto d : flow.members[i].depends_on) {
      if (const auto it = index.find(d); it != index.end()) {
        dependents[it->second].push_back(i);
        any_inside = true;
      }
    }
    if (!any_inside) roots.push_back(i);
  }
  for (auto& d : dependents) {
    std::sort(d.begin(), d.end(), [&](auto a, auto b) { return flow.members[a].id < flow.members[b].id; });
  }

  Counts counts;
  for (const auto& m : flow.members) ++count_of(counts, m.state);
  std::string out = "flow " + std::to_string(flow.id) + ": " + std::to_string(n) + " member" + (n == 1 ? "" : "s");
  for (const auto s : all_job_states) {
    if (const auto c = count_of(counts, s); c > 0) out += ", " + std::to_string(c) + " " + std::string(to_string(s));
  }
  out += "\n";

  const auto describe = [](const JobRecord& m) {
    std::string line = "#" + std::to_string(m.id) + " " + m.name + " [" + m.queue + "] " +
                       std::string(to_string(m.state)) + ", attempts " + std::to_string(m.attempts) + "/" +
                       std::to_string(m.max_attempts);
    if (!m.depends_on.empty()) {
      line += ", after";
      for (const auto d : m.depends_on) line += " #" + std::to_string(d);
    }
    if (m.continue_on_failure) line += " (continues on failure)";
    if ((m.state == JobState::dead || m.state == JobState::cancelled) && !m.errors.empty()) {
      line += ": " + one_line(m.errors.back().message, 80);
    }
    return line;
  };

  // Depth first with an explicit stack: a chain of 100,000 members must not overflow the C++ one.
  struct Visit {
    std::size_t member;
    std::string prefix;  // what the ancestors draw on this line
    std::size_t depth;   // 0: a tree's root
    bool last;           // the last of its siblings
  };
  std::vector<bool> printed(n, false);
  std::vector<Visit> stack;
  const auto visit_tree = [&](std::size_t root) {
    stack.push_back({root, "", 0, true});
    while (!stack.empty()) {
      auto v = std::move(stack.back());
      stack.pop_back();
      const auto& m = flow.members[v.member];
      const std::string branch = v.depth == 0 ? "" : v.last ? "└─ " : "├─ ";
      if (printed[v.member]) {
        out += v.prefix + branch + "#" + std::to_string(m.id) + " (see above)\n";
        continue;
      }
      printed[v.member] = true;
      out += v.prefix + branch + describe(m) + "\n";
      const auto& children = dependents[v.member];
      const bool indent = v.depth > 0 && v.depth < flow_tree_max_depth;
      const auto child_prefix = indent ? v.prefix + (v.last ? "   " : "│  ") : v.prefix;
      const auto child_depth = std::min(v.depth + 1, flow_tree_max_depth);
      for (auto it = children.rbegin(); it != children.rend(); ++it) {
        stack.push_back({*it, child_prefix, child_depth, it == children.rbegin()});
      }
    }
  };
  for (const auto r : roots) visit_tree(r);
  for (std::size_t i = 0; i < n; ++i) {  // only a record with a cycle leaves members unreached
    if (!printed[i]) visit_tree(i);
  }
  return out;
}

}  // namespace jobq::cli
