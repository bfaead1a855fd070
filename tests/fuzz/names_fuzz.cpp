// Queue and job name validation against a plain restatement of the rules: a queue name is
// 1..128 of [A-Za-z0-9_.-]; a job name 1..255 bytes none of which is a space, a control
// character (<= 0x20) or DEL. Accepting what the rules refuse (a name that would be spliced into
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
  return true;
}

bool job_ok(std::string_view s) {
  if (s.empty() || s.size() > 255) return false;
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
