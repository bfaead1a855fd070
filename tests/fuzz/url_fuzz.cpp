// Backend URL parsing: jobq::parse_backend_url (what open_backend accepts, without opening
// anything), jobq::mask_url, and the Redis backend's own redis:// parser. Only
// jobq::InvalidArgument may escape, and neither a masked URL nor an error message may contain
// the URL's password. "The password" is read the RFC 3986 way: in the authority (up to the
// first '/', '?' or '#' after "scheme://"), between the first ':' and the last '@'. It is only
// checked when it is at least 6 bytes long and occurs nowhere else in the URL (a message may
// quote the rest of the URL, e.g. a bad port).

#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <string>
#include <string_view>

#include <jobq/error.hpp>
#include <jobq/open.hpp>

namespace {

std::size_t count(std::string_view hay, std::string_view needle) {
  std::size_t n = 0;
  for (auto p = hay.find(needle); p != std::string_view::npos; p = hay.find(needle, p + 1)) ++n;
  return n;
}

// The password, or empty when there is none worth checking.
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
  if (pw.size() < 6 || count(url, pw) != 1) return {};
  return std::string(pw);
}

void must_hide(std::string_view text, const std::string& pw, std::string_view url, const char* where) {
  if (!pw.empty() && text.find(pw) != std::string_view::npos) {
    std::fprintf(stderr, "%s shows the password of '%.*s': %.*s\n", where, static_cast<int>(url.size()), url.data(),
                 static_cast<int>(text.size()), text.data());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view url(reinterpret_cast<const char*>(data), size);
  const auto pw = password_of(url);
  must_hide(jobq::mask_url(url), pw, url, "mask_url");
  try {
    const auto parsed = jobq::parse_backend_url(url);
    if (parsed.kind == "sqlite" && parsed.target.empty()) std::abort();
  } catch (const jobq::InvalidArgument& e) {
    must_hide(e.what(), pw, url, "parse_backend_url's error");
  }
#if JOBQ_OPEN_WITH_REDIS
  try {
    const auto u = jobq::detail::redis::parse_url(url);
    must_hide(u.masked, pw, url, "the redis URL's masked form");
    if (u.port < 1 || u.port > 65535 || u.db < 0) std::abort();
  } catch (const jobq::InvalidArgument& e) {
    must_hide(e.what(), pw, url, "the redis URL parser's error");
  }
#endif
  return 0;
}
