// Backend URL parsing: jobq::parse_backend_url (what open_backend accepts, without opening
// anything), jobq::mask_url, and the Redis backend's own redis:// parser. Only
// jobq::InvalidArgument may escape, and neither a masked URL nor an error message may contain
// the URL's password. "The password" is read the RFC 3986 way: in the authority (up to the
// first '/', '?' or '#' after "scheme://"), between the first ':' and the last '@'; checked
// when it is 4+ letters/digits/'-'/'_'. The check is differential: the same URL with another
// password of the same length must give a text quoting the real one no less often (fixed
// words like "postgresql" in a message are not leaks).

#include <cctype>
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

void must_hide(std::string_view text, std::string_view control, const std::string& pw, std::string_view url,
               const char* where) {
  if (!pw.empty() && count(text, pw) > count(control, pw)) {
    std::fprintf(stderr, "%s shows the password of '%.*s': %.*s\n", where, static_cast<int>(url.size()), url.data(),
                 static_cast<int>(text.size()), text.data());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view url(reinterpret_cast<const char*>(data), size);
  const auto pw = password_of(url);
  const auto other = pw.empty() ? std::string(url) : with_other_password(url, pw);
  // What each parser says about a URL: its masked form, or its error message.
  const auto open_says = [](std::string_view u) -> std::string {
    try {
      const auto parsed = jobq::parse_backend_url(u);
      if (parsed.kind == "sqlite" && parsed.target.empty()) std::abort();
      return {};
    } catch (const jobq::InvalidArgument& e) {
      return e.what();
    }
  };
  must_hide(jobq::mask_url(url), jobq::mask_url(other), pw, url, "mask_url");
  must_hide(open_says(url), open_says(other), pw, url, "parse_backend_url's error");
#if JOBQ_OPEN_WITH_REDIS
  const auto redis_says = [](std::string_view u) -> std::string {
    try {
      const auto r = jobq::detail::redis::parse_url(u);
      if (r.port < 1 || r.port > 65535 || r.db < 0) std::abort();
      return r.masked;
    } catch (const jobq::InvalidArgument& e) {
      return e.what();
    }
  };
  must_hide(redis_says(url), redis_says(other), pw, url, "the redis URL parser");
#endif
  return 0;
}
