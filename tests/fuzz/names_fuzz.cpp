// Queue and job name validation against a plain restatement of the rules: a queue name is
// 1..128 of [A-Za-z0-9_.-] other than "." and ".."; a job name 1..255 bytes of valid UTF-8
// none of which is a space, a control character (<= 0x20) or DEL. Accepting what the rules refuse (a name that would be spliced into
// a Redis key or a URL) or refusing what they allow aborts; the only exception allowed is
// jobq::InvalidArgument.

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <jobq/error.hpp>
#include <jobq/job.hpp>

namespace {

bool queue_ok(std::string_view s) {
  if (s.empty() || s.size() > 128) return false;
  for (unsigned char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                    c == '-' || c == '.';
    if (!ok) return false;
  }
  return s != "." && s != "..";
}

// UTF-8 per RFC 3629: shortest forms only, no surrogates, nothing above U+10FFFF.
bool utf8_ok(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if (b < 0x80) {
      len = 1;
      cp = b;
    } else if ((b & 0xE0) == 0xC0) {
      len = 2;
      cp = b & 0x1F;
    } else if ((b & 0xF0) == 0xE0) {
      len = 3;
      cp = b & 0x0F;
    } else if ((b & 0xF8) == 0xF0) {
      len = 4;
      cp = b & 0x07;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (std::size_t k = 1; k < len; ++k) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      if ((c & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (c & 0x3F);
    }
    const std::uint32_t min_for_len[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_for_len[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

bool job_ok(std::string_view s) {
  if (s.empty() || s.size() > 255 || !utf8_ok(s)) return false;
  for (unsigned char c : s) {
    if (c <= 0x20 || c == 0x7f) return false;
  }
  return true;
}

template <class F>
bool accepts(F validate, std::string_view s) {
  try {
    validate(s);
    return true;
  } catch (const jobq::InvalidArgument& e) {
    if (std::string_view(e.what()).empty()) std::abort();  // a refusal must say why
    return false;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view s(reinterpret_cast<const char*>(data), size);
  if (accepts(jobq::validate_queue_name, s) != queue_ok(s)) std::abort();
  if (accepts(jobq::validate_job_name, s) != job_ok(s)) std::abort();
  // A whole job made of the input: validate() must refuse it exactly when a name is bad.
  jobq::NewJob job;
  job.queue = std::string(s.substr(0, s.size() / 2));
  job.name = std::string(s.substr(s.size() / 2));
  const bool valid = accepts([&](std::string_view) { jobq::validate(job); }, s);
  if (valid && (!queue_ok(job.queue) || !job_ok(job.name))) std::abort();
  return 0;
}
