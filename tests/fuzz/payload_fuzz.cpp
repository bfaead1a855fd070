// Decoding what a backend hands a worker: JSON bytes parsed, then
//  - get<T>() into a typed job, exactly as Worker::handle<T> does: a payload that does not fit
//    must raise nlohmann::json::exception (which the Worker turns into jobq::Permanent), and
//    nothing else may escape;
//  - Backoff::from_json and errors_from_json, the stored forms every backend decodes: only
//    jobq::InvalidArgument may escape, and a decoded policy's delays must be computable.
//
// Found by this target (see docs/reliability.md): nlohmann's get<integer>() of a JSON float
// outside the integer type's range is a plain static_cast, i.e. undefined behaviour (x86-64
// yields INT_MIN; UBSan aborts). The stored forms (errors_from_json, Backoff::from_json) now read
// integers through jobq::json_integer and are fuzzed with every input. Typed payloads decode
// through the user's from_json (nlohmann's): inputs holding such a float (<= -1 or >= 2^31) are
// not decoded as typed jobs here — a documented limit of nlohmann, not of jobq.

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <jobq/backoff.hpp>
#include <jobq/error.hpp>
#include <jobq/job.hpp>

namespace {

struct Address {
  std::string city;
  int zip = 0;
  NLOHMANN_DEFINE_TYPE_INTRUSIVE(Address, city, zip)
};

struct SendEmail {
  static constexpr std::string_view job_name = "send-email";
  std::string to;
  std::vector<std::string> cc;
  int priority = 0;
  std::int64_t user_id = 0;
  std::uint32_t retries = 0;
  double score = 0;
  bool html = false;
  std::map<std::string, std::string> headers;
  std::vector<Address> addresses;
  nlohmann::json extra;
  NLOHMANN_DEFINE_TYPE_INTRUSIVE(SendEmail, to, cc, priority, user_id, retries, score, html, headers, addresses, extra)
};
static_assert(jobq::Job<SendEmail>);

template <class T>
void decode_as_worker_does(const nlohmann::json& payload, std::string_view name) {
  try {
    const T value = payload.get<T>();
    // A decoded job must serialise again (the Queue does this on enqueue).
    (void)nlohmann::json(value).dump();
  } catch (const nlohmann::json::exception& e) {
    const jobq::Permanent p("payload does not match job type '" + std::string(name) + "': " + e.what());
    (void)p;
  }
}

// True if every float in `j` converts to every integer type used above without UB.
bool floats_in_integer_range(const nlohmann::json& j) {
  if (j.is_number_float()) {
    const double v = j.get<double>();
    return v > -1.0 && v < 2147483648.0;
  }
  if (j.is_structured()) {
    for (const auto& e : j) {
      if (!floats_in_integer_range(e)) return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  if (floats_in_integer_range(j)) {
    decode_as_worker_does<SendEmail>(j, SendEmail::job_name);
    decode_as_worker_does<Address>(j, "address");
  }
  try {
    const auto b = jobq::Backoff::from_json(j);
    for (int attempt = 1; attempt <= 64; ++attempt) (void)b.delay(attempt);
    (void)b.to_json();
  } catch (const jobq::InvalidArgument&) {
  }
  try {
    const auto errors = jobq::errors_from_json(j);
    (void)jobq::errors_to_json(errors).dump();
  } catch (const jobq::InvalidArgument&) {
  }
  return 0;
}
