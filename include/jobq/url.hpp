#pragma once

/// @file
/// jobq::mask_url: a backend URL or libpq connection string with every password hidden, the
/// one reading of "where the password is" that the tools and every backend share.

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace jobq {

namespace detail::url {

/// @brief A half-open range [begin, end) of a string.
struct Span {
  std::size_t begin;  ///< first character
  std::size_t end;    ///< one past the last
};

/// @brief The whitespace libpq's keyword/value parser skips (isspace in the C locale).
constexpr bool is_space(char c) noexcept {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

constexpr char lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

/// @brief Where the userinfo of a URL may start: after "scheme://", or at the ':' of
/// "scheme:" (no "//": `sqlite:path:pw@x` hides everything after the scheme up to the '@').
/// npos when `s` does not start with a URI scheme ([A-Za-z][A-Za-z0-9+.-]*:).
constexpr std::size_t after_scheme(std::string_view s) noexcept {
  const auto alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  if (s.empty() || !alpha(s[0])) return std::string_view::npos;
  std::size_t i = 1;
  while (i < s.size() && (alpha(s[i]) || (s[i] >= '0' && s[i] <= '9') || s[i] == '+' || s[i] == '.' || s[i] == '-')) {
    ++i;
  }
  if (i >= s.size() || s[i] != ':') return std::string_view::npos;
  return s.substr(i, 3) == "://" ? i + 3 : i;
}

constexpr int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/// @brief `s` with its %XX escapes decoded; a malformed escape is kept as it is.
inline std::string percent_decoded(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

/// @brief True for a parameter name that holds a secret: any name containing "password",
/// in any case, after %-decoding ("password", "sslpassword", "pass%77ord").
inline bool is_secret_key(std::string_view key) {
  std::string k = percent_decoded(key);
  std::transform(k.begin(), k.end(), k.begin(), lower);
  return k.find("password") != std::string::npos;
}

inline void add_password_spans(std::string_view s, std::size_t base, std::vector<Span>& out);

/// Spans of a URL ("scheme://..."): the password of the userinfo, which runs to the LAST '@'
/// (a password may hold '/', '@', ':', '?', '[' unencoded and no host holds an '@', so this
/// never shows part of one, at worst hides a little more), and the value of every query
/// parameter whose name holds "password". Query parameters without '=' right after such a
/// value are hidden with it (`password=a&b` is most likely the password "a&b").
inline void add_url_spans(std::string_view s, std::size_t start, std::size_t base, std::vector<Span>& out) {
  std::size_t rest = start;
  if (const auto at = s.rfind('@'); at != std::string_view::npos && at >= start) {
    if (const auto colon = s.find(':', start); colon < at) out.push_back({base + colon + 1, base + at});
    rest = at + 1;
  }
  const auto query = s.find('?', rest);
  // Before the query no parameter is valid, but a server may echo what it takes for a
  // database name ("db password=x"): hide those too.
  const auto head = s.substr(0, query);
  for (auto p = rest; p < head.size(); ++p) {
    if (lower(head[p]) != 'p' || !is_secret_key(head.substr(p, 8))) continue;
    auto v = p + 8;
    while (v < head.size() && is_space(head[v])) ++v;
    if (v >= head.size() || head[v] != '=') continue;
    auto e = v + 1;
    while (e < head.size() && !is_space(head[e]) && head[e] != '&') ++e;
    out.push_back({base + v + 1, base + e});
    p = e;
  }
  if (query == std::string_view::npos) return;
  bool after_secret = false;
  for (auto p = query + 1; p <= s.size();) {
    auto e = s.find_first_of("&?", p);  // libpq splits at '&' only: a '?' here hides a little more
    if (e == std::string_view::npos) e = s.size();
    const auto param = s.substr(p, e - p);
    const auto eq = param.find('=');
    if (eq == std::string_view::npos) {
      if (after_secret && !param.empty()) out.back().end = base + e;
    } else if (is_secret_key(param.substr(0, eq))) {
      out.push_back({base + p + eq + 1, base + e});
      after_secret = true;
    } else {
      after_secret = false;
    }
    p = e + 1;
  }
}

/// Spans of libpq keyword/value pairs (`key = value`, value unquoted up to whitespace or in
/// single quotes, backslash escaping the next character - libpq's own grammar): every value
/// whose key holds "password", with the words without '=' that follow it (`password=a b`
/// is most likely the password "a b"); the spans of a value that is itself a URL
/// (`dbname=postgresql://u:pw@h/db`). An unterminated quote hides the rest of the string.
inline void add_keyword_spans(std::string_view s, std::size_t base, std::vector<Span>& out) {
  bool after_secret = false;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && is_space(s[i])) ++i;
    if (i >= s.size()) break;
    const auto key_begin = i;
    while (i < s.size() && s[i] != '=' && !is_space(s[i])) ++i;
    const auto key = s.substr(key_begin, i - key_begin);
    auto j = i;
    while (j < s.size() && is_space(s[j])) ++j;
    if (j >= s.size() || s[j] != '=') {  // a word without '='
      if (after_secret) {
        out.back().end = base + i;
      } else {
        add_password_spans(key, base + key_begin, out);  // "redis://u:pw@h" pasted in
      }
      continue;
    }
    add_password_spans(key, base + key_begin, out);
    i = j + 1;
    while (i < s.size() && is_space(s[i])) ++i;
    const auto value_begin = i;
    const bool quoted = i < s.size() && s[i] == '\'';
    bool closed = false;
    if (quoted) {
      for (++i; i < s.size() && s[i] != '\''; ++i) {
        if (s[i] == '\\') ++i;
      }
      closed = i < s.size();
      i = std::min(i + 1, s.size());
    } else {
      for (; i < s.size() && !is_space(s[i]); ++i) {
        if (s[i] == '\\') ++i;
      }
      i = std::min(i, s.size());
    }
    after_secret = is_secret_key(key);
    if (after_secret) {
      out.push_back({base + value_begin, base + i});
    } else {
      auto value = s.substr(value_begin, i - value_begin);
      auto value_base = base + value_begin;
      if (quoted) {
        value.remove_prefix(1);
        ++value_base;
        if (closed) value.remove_suffix(1);
      }
      add_password_spans(value, value_base, out);
    }
  }
}

/// @brief Adds the spans of `s` (offset by `base`) that hold a password.
inline void add_password_spans(std::string_view s, std::size_t base, std::vector<Span>& out) {
  if (const auto start = after_scheme(s); start != std::string_view::npos) {
    add_url_spans(s, start, base, out);
  } else if (s.find('=') != std::string_view::npos) {
    add_keyword_spans(s, base, out);
  } else {  // maybe a URL behind something (" redis://u:pw@h"): all from the first ':' to the last '@'
    add_url_spans(s, 0, base, out);
  }
}

/// @brief The ranges of `conninfo` that hold a password, sorted and not overlapping.
inline std::vector<Span> password_spans(std::string_view conninfo) {
  std::vector<Span> spans;
  add_password_spans(conninfo, 0, spans);
  std::sort(spans.begin(), spans.end(), [](Span a, Span b) { return a.begin < b.begin; });
  std::vector<Span> merged;
  for (const auto sp : spans) {
    if (!merged.empty() && sp.begin <= merged.back().end) {
      merged.back().end = std::max(merged.back().end, sp.end);
    } else {
      merged.push_back(sp);
    }
  }
  return merged;
}

/// @brief Every form in which a password of `conninfo` may reach a message: as written,
/// %-decoded, and without its quotes and backslash escapes. Longest first; none empty.
inline std::vector<std::string> secrets_of(std::string_view conninfo) {
  std::vector<std::string> out;
  const auto add = [&](std::string s) {
    if (!s.empty() && std::find(out.begin(), out.end(), s) == out.end()) out.push_back(std::move(s));
  };
  for (const auto sp : password_spans(conninfo)) {
    const auto raw = conninfo.substr(sp.begin, sp.end - sp.begin);
    add(std::string(raw));
    add(percent_decoded(raw));
    auto inner = raw;
    if (!inner.empty() && inner.front() == '\'') inner.remove_prefix(1);
    if (!inner.empty() && inner.back() == '\'') inner.remove_suffix(1);
    std::string unescaped;
    for (std::size_t i = 0; i < inner.size(); ++i) {
      if (inner[i] == '\\' && ++i == inner.size()) break;  // as libpq: a last backslash is dropped
      unescaped += inner[i];
    }
    add(std::move(unescaped));
  }
  std::sort(out.begin(), out.end(), [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  return out;
}

}  // namespace detail::url

/// @brief `url` with every password replaced by ***, safe to print or put in an error message:
/// the password of `scheme://user:password@host` (which runs to the last '@', so it may hold
/// '/', '@', ':', '[' or any %-escape, valid or not), and the value of every parameter whose
/// name holds "password" (`?password=`, `&sslpassword=`, libpq's `password=x` and
/// `password = 'quoted x'`). Works on URLs that fail to parse.
inline std::string mask_url(std::string_view url) {
  std::string out;
  std::size_t from = 0;
  for (const auto sp : detail::url::password_spans(url)) {
    out.append(url.substr(from, sp.begin - from));
    out += "***";
    from = sp.end;
  }
  out.append(url.substr(from));
  return out;
}

namespace detail::url {

/// @brief `text` (an error message from a client library) with `conninfo` replaced by its
/// masked form and every form of its passwords by ***; for messages jobq does not write.
inline std::string scrub(std::string text, std::string_view conninfo) {
  const auto replace_all = [&](std::string_view from, std::string_view to) {
    for (auto p = text.find(from); p != std::string::npos; p = text.find(from, p + to.size())) {
      text.replace(p, from.size(), to);
    }
  };
  if (!conninfo.empty()) replace_all(conninfo, mask_url(conninfo));
  for (const auto& s : secrets_of(conninfo)) replace_all(s, "***");
  return text;
}

}  // namespace detail::url

}  // namespace jobq
