#pragma once
// Connection strings: checking that libpq and jobq read them alike, and describing them
// (user@host:port/dbname) without the password, for messages.

#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include <libpq-fe.h>

#include "jobq/backend.hpp"
#include "jobq/url.hpp"

namespace jobq::detail::pg {

/// Why libpq refused to parse a connection string, in words of our own: libpq's messages
/// quote the string or a piece of it, and that piece may be the password.
inline std::string_view parse_failure_reason(std::string_view libpq_message) {
  constexpr std::pair<std::string_view, std::string_view> reasons[] = {
      {"IPv6 host address", "a malformed [IPv6] host"},
      {"unexpected character", "an unexpected character after the host"},
      {"invalid percent-encoded token", "a malformed %-escape"},
      {"forbidden value %00", "a %00 escape"},
      {"query parameter", "a malformed query parameter"},
      {"invalid connection option", "an unknown parameter"},
      {"missing \"=\"", "a word without '=' (quote values that hold spaces: key='a b')"},
      {"unterminated quoted string", "an unterminated quoted value"},
  };
  for (const auto& [found, reason] : reasons) {
    if (libpq_message.find(found) != std::string_view::npos) return reason;
  }
  return "libpq cannot parse it";
}

/// user@host:port/dbname of a connection string (libpq URI or keyword/value pairs), never its
/// password; also the check that it parses (InvalidArgument, the string masked, otherwise).
/// A URI that libpq and jobq::mask_url would split differently is refused: libpq ends the
/// userinfo at the first '@' or '/', so an unencoded '/' or '@' in a password puts the rest
/// of it into the host, port or database name, which messages show.
inline std::string describe_conninfo(const std::string& conninfo) {
  const auto masked = jobq::mask_url(conninfo);
  const std::string_view s(conninfo);
  for (std::string_view scheme : {"postgresql://", "postgres://"}) {
    if (!s.starts_with(scheme)) continue;
    const auto at = s.rfind('@');
    const auto colon = s.find(':', scheme.size());
    if (at != std::string_view::npos && colon < at && s.find_first_of("@/", scheme.size()) != at) {
      throw InvalidArgument("postgres: invalid connection string '" + masked +
                            "': an unencoded '/' or '@' in the user name or password, or an '@' after "
                            "the host; write them as %2F and %40");
    }
    // libpq would take a password= before the query for part of the host or database name.
    const auto query = s.find('?', at == std::string_view::npos ? scheme.size() : at + 1);
    for (const auto sp : url::password_spans(s)) {
      if (sp.end != at && (query == std::string_view::npos || sp.begin < query)) {
        throw InvalidArgument("postgres: invalid connection string '" + masked +
                              "': a password parameter outside the query string (after '?')");
      }
    }
  }
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
  if (opts == nullptr) {
    const std::string reason(err != nullptr ? parse_failure_reason(err) : "out of memory");
    if (err != nullptr) PQfreemem(err);
    throw InvalidArgument("postgres: invalid connection string '" + masked + "': " + reason);
  }
  std::unordered_map<std::string, std::string> v;
  for (auto* o = opts; o->keyword != nullptr; ++o) {
    if (o->val != nullptr) v[o->keyword] = o->val;
  }
  PQconninfoFree(opts);
  std::string out = "postgresql://";
  if (v.contains("user")) out += v["user"] + "@";
  out += v.contains("host") ? v["host"] : (v.contains("hostaddr") ? v["hostaddr"] : "localhost");
  if (v.contains("port")) out += ":" + v["port"];
  if (v.contains("dbname")) out += "/" + jobq::mask_url(v["dbname"]);  // dbname=postgresql://u:pw@h/x
  return url::scrub(std::move(out), conninfo);
}

}  // namespace jobq::detail::pg
