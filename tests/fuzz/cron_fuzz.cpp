// Cron expressions: CronExpr::parse on arbitrary text may only throw jobq::InvalidArgument, and
// next() of a parsed expression must return an instant strictly after the one given (or
// nullopt), strictly increasing when applied again, in zones with DST gaps and folds.
// Input: byte 0 picks the zone, bytes 1..4 the start instant, the rest is the expression.

#include <array>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <jobq/cron.hpp>
#include <jobq/error.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 5) return 0;
  static const std::array<const date::time_zone*, 5> zones = {
      jobq::find_time_zone("UTC"), jobq::find_time_zone("America/New_York"),
      jobq::find_time_zone("Europe/Paris"), jobq::find_time_zone("Australia/Lord_Howe"),  // 30 min DST
      jobq::find_time_zone("Asia/Kathmandu")};                                             // +05:45
  const auto* tz = zones[data[0] % zones.size()];
  const std::uint32_t raw = static_cast<std::uint32_t>(data[1]) | static_cast<std::uint32_t>(data[2]) << 8 |
                            static_cast<std::uint32_t>(data[3]) << 16 | static_cast<std::uint32_t>(data[4]) << 24;
  // 1970 .. 2106, second resolution (plus a sub-second part from the low bits).
  const jobq::TimePoint after{jobq::Millis{static_cast<std::int64_t>(raw) * 1000 + raw % 1000}};
  const std::string_view text(reinterpret_cast<const char*>(data + 5), size - 5);
  std::optional<jobq::CronExpr> expr;
  try {
    expr.emplace(jobq::CronExpr::parse(text));
  } catch (const jobq::InvalidArgument&) {
    return 0;
  }
  auto t = after;
  for (int i = 0; i < 3; ++i) {
    const auto n = expr->next(t, tz);
    if (!n) break;
    if (*n <= t) std::abort();  // must move forward
    t = *n;
  }
  return 0;
}
