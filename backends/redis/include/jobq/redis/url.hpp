#pragma once
// redis:// URLs: parsed once by the backend; the masked form is what messages show.

#include <charconv>
#include <string>
#include <string_view>
#include <system_error>

#include "jobq/error.hpp"
#include "jobq/url.hpp"

namespace jobq::detail::redis {

/// @brief A parsed redis:// URL.
struct Url {
  std::string host = "127.0.0.1";  ///< host name or address
  int port = 6379;                 ///< TCP port
  std::string user;                ///< ACL user (empty: AUTH with the password only)
  std::string password;            ///< empty: no AUTH
  int db = 0;                      ///< database for SELECT
  std::string masked;              ///< the URL with the password replaced by ***, for messages
};

/// @brief Decodes %XX escapes of a URL part; throws InvalidArgument on a bad escape.
inline std::string percent_decode(std::string_view s, const std::string& masked) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    unsigned v = 0;
    if (i + 2 >= s.size() ||
        std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16).ptr != s.data() + i + 3) {
      throw InvalidArgument("redis URL '" + masked + "' has a bad %-escape");
    }
    out += static_cast<char>(v);
    i += 2;
  }
  return out;
}

/// @brief A decimal in [lo, hi]; throws InvalidArgument naming `what` (not quoting `s`, which
/// may hold a password: `redis://h/0&password=x`; the masked URL shows it).
inline int parse_int(std::string_view s, int lo, int hi, const char* what, const std::string& masked) {
  int v = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size() || v < lo || v > hi) {
    throw InvalidArgument("redis URL '" + masked + "' has an invalid " + what + " (expected " + std::to_string(lo) +
                          ".." + std::to_string(hi) + ")");
  }
  return v;
}

/// @brief Parses redis://[[user]:password@]host[:port][/db]; throws InvalidArgument.
inline Url parse_url(std::string_view url) {
  Url u;
  u.masked = mask_url(url);
  constexpr std::string_view scheme = "redis://";
  if (url.substr(0, scheme.size()) != scheme) {
    if (url.substr(0, 9) == "rediss://") {
      throw InvalidArgument("redis URL '" + u.masked + "': TLS (rediss://) is not supported");
    }
    throw InvalidArgument("redis URL '" + u.masked +
                          "' is malformed: expected redis://[user:password@]host:port/db");
  }
  auto rest = url.substr(scheme.size());
  // The userinfo runs to the last '@', as jobq::mask_url reads it: a password may hold '/',
  // '?', '#' or '@' unencoded (base64 ones hold '/'); a host, port or database number none.
  if (const auto at = rest.rfind('@'); at != std::string_view::npos) {
    const auto userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    const auto colon = userinfo.find(':');
    if (colon == std::string_view::npos) {
      u.user = percent_decode(userinfo, u.masked);
    } else {
      u.user = percent_decode(userinfo.substr(0, colon), u.masked);
      u.password = percent_decode(userinfo.substr(colon + 1), u.masked);
    }
  }
  if (rest.find_first_of("?#") != std::string_view::npos) {
    throw InvalidArgument("redis URL '" + u.masked + "' has query or fragment parts, which are not supported");
  }
  const auto slash = rest.find('/');
  const auto authority = rest.substr(0, slash);
  const auto path = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
  std::string_view host = authority;
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {  // [IPv6]:port
    const auto close = authority.find(']');
    if (close == std::string_view::npos) throw InvalidArgument("redis URL '" + u.masked + "' has an unclosed '['");
    host = authority.substr(1, close - 1);
    const auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') throw InvalidArgument("redis URL '" + u.masked + "' is malformed after ']'");
      port = after.substr(1);
      if (port.empty()) throw InvalidArgument("redis URL '" + u.masked + "' has an empty port");
    }
  } else if (const auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
    if (port.empty()) throw InvalidArgument("redis URL '" + u.masked + "' has an empty port");
  }
  if (host.empty()) throw InvalidArgument("redis URL '" + u.masked + "' has no host");
  for (char c : host) {
    if (c == '/' || c == '@' || c == ' ' || static_cast<unsigned char>(c) < 0x21) {
      throw InvalidArgument("redis URL '" + u.masked + "' has an invalid host");
    }
  }
  u.host = std::string(host);
  if (!port.empty()) u.port = parse_int(port, 1, 65535, "port", u.masked);
  if (!path.empty()) u.db = parse_int(path, 0, 1'000'000, "database number", u.masked);
  return u;
}

}  // namespace jobq::detail::redis
