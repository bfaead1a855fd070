// Backend URL parsing: jobq::parse_backend_url (what open_backend accepts, without opening
// anything), jobq::mask_url, the Redis backend's own redis:// parser and the PostgreSQL
// backend's connection-string check (libpq's parser, no connection). Only
// jobq::InvalidArgument may escape, and no masked URL, Redis URL or PostgreSQL target and no
// error message may contain the password. Two checks:
//
// - Planted: an input with exactly one byte 0x01 is a template; the 0x01 becomes the
//   password token (`planted`). Where the template puts it in a password, no text may contain
//   the token: in a URL between the first ':' after "scheme://" (or the ':' of "scheme:") and
//   the last '@' (a password may hold '/', '@', '[', '?', bad %-escapes...), or right after
//   "?password=" / "&password=" behind that '@'; in libpq keyword/value pairs right after
//   "password=" at the start or after whitespace.
// - Differential, for any input: "the password" read the RFC 3986 way (in the authority up to
//   the first '/', '?' or '#', between the first ':' and the last '@'), when it is 4+
//   letters/digits/'-'/'_'; the same URL with another password of the same length must give a
//   text quoting the real one no less often (fixed words like "postgresql" are not leaks).

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <string_view>

#include <jobq/error.hpp>
#include <jobq/open.hpp>

namespace {

constexpr std::string_view planted = "Pl4ntedPw";

std::size_t count(std::string_view hay, std::string_view needle) {
  std::size_t n = 0;
  for (auto p = hay.find(needle); p != std::string_view::npos; p = hay.find(needle, p + 1)) ++n;
  return n;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  }
  return true;
}

// Where the userinfo may start: after "scheme://", at the ':' of "scheme:", or npos (a
// keyword/value string).
std::size_t after_scheme(std::string_view s) {
  if (s.empty() || !std::isalpha(static_cast<unsigned char>(s[0]))) return std::string_view::npos;
  std::size_t i = 1;
  while (i < s.size() && (std::isalnum(static_cast<unsigned char>(s[i])) || s[i] == '+' || s[i] == '.' || s[i] == '-')) {
    ++i;
  }
  if (i >= s.size() || s[i] != ':') return std::string_view::npos;
  return s.substr(i, 3) == "://" ? i + 3 : i;
}

// True if the token at `p` (in the URL after planting) lies in a password, by the rules above.
bool in_password(std::string_view url, std::size_t p) {
  const auto end = p + planted.size();
  const auto value_of = [&](std::string_view key) { return p >= key.size() && iequals(url.substr(p - key.size(), key.size()), key); };
  if (const auto start = after_scheme(url); start != std::string_view::npos) {
    const auto at = url.rfind('@');
    const bool has_at = at != std::string_view::npos && at >= start;
    const auto colon = url.find(':', start);
    if (has_at && colon < p && end <= at) return true;
    return (!has_at || p > at) && (value_of("?password=") || value_of("&password="));
  }
  return value_of("password=") &&
         (p == 9 || std::isspace(static_cast<unsigned char>(url[p - 10])) != 0);
}

// The password, or empty when there is none worth checking (the differential check).
std::string password_of(std::string_view url) {
  const auto scheme = url.find("://");
  if (scheme == std::string_view::npos) return {};
  const auto start = scheme + 3;
  const auto end = url.find_first_of("/?#", start);
  const auto authority = url.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
  const auto at = authority.rfind('@');
  if (at == std::string_view::npos) return {};
  const auto colon = authority.find(':');
  if (colon == std::string_view::npos || colon > at) return {};
  const auto pw = authority.substr(colon + 1, at - colon - 1);
  if (pw.size() < 4) return {};
  for (unsigned char c : pw) {
    if (!std::isalnum(c) && c != '-' && c != '_') return {};
  }
  return std::string(pw);
}

// `url` with its password (at the same place) replaced by another of the same length.
std::string with_other_password(std::string_view url, const std::string& pw) {
  std::string other(pw.size(), 'Q');
  if (other == pw) other.assign(pw.size(), 'R');
  std::string out(url);
  const auto at = out.find(':', out.find("://") + 3);
  return out.replace(at + 1, pw.size(), other);
}

// `s` printable: other bytes as \xNN.
std::string printable(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  return out;
}

[[noreturn]] void leak(std::string_view text, std::string_view url, const char* where) {
  std::fprintf(stderr, "%s shows the password of '%s': %s\n", where, printable(url).c_str(), printable(text).c_str());
  std::abort();
}

// What a parser says about a URL: its masked form (or target), or its error message.
using Parser = std::function<std::string(std::string_view)>;

std::string says(const Parser& parse, std::string_view url) {
  try {
    return parse(url);
  } catch (const jobq::InvalidArgument& e) {
    return e.what();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::vector<std::pair<const char*, Parser>> parsers = {
      {"mask_url", [](std::string_view u) { return jobq::mask_url(u); }},
      {"parse_backend_url's error",
       [](std::string_view u) -> std::string {
         const auto parsed = jobq::parse_backend_url(u);
         if (parsed.kind == "sqlite" && parsed.target.empty()) std::abort();
         return {};
       }},
#if JOBQ_OPEN_WITH_REDIS
      {"the redis URL parser",
       [](std::string_view u) {
         const auto r = jobq::detail::redis::parse_url(u);
         if (r.port < 1 || r.port > 65535 || r.db < 0) std::abort();
         return r.masked;
       }},
#endif
#if JOBQ_OPEN_WITH_POSTGRES
      {"the postgres connection-string check",
       [](std::string_view u) {
         if (u.find('\0') != std::string_view::npos) return std::string();  // a C string for libpq
         return jobq::detail::pg::describe_conninfo(std::string(u));
       }},
#endif
  };

  // Planted: the token wherever the template's single 0x01 is.
  if (count(input, "\x01") == 1 && input.find(planted) == std::string_view::npos) {
    std::string url(input);
    const auto p = url.find('\x01');
    url.replace(p, 1, planted);
    if (in_password(url, p)) {
      for (const auto& [where, parse] : parsers) {
        const auto text = says(parse, url);
        if (text.find(planted) != std::string::npos) leak(text, url, where);
      }
    }
  }

  // Differential, on the input as it is.
  const auto pw = password_of(input);
  const auto other = pw.empty() ? std::string(input) : with_other_password(input, pw);
  for (const auto& [where, parse] : parsers) {
    const auto text = says(parse, input);
    if (!pw.empty() && count(text, pw) > count(says(parse, other), pw)) leak(text, input, where);
  }
  return 0;
}
