#include <catch2/catch.hpp>

#include <date/date.h>

#include <jobq/cron.hpp>
#include <jobq/schedule.hpp>

using namespace std::chrono_literals;

namespace {

jobq::TimePoint utc(int y, unsigned m, unsigned d, int h = 0, int min = 0, int s = 0) {
  return std::chrono::time_point_cast<jobq::Millis>(date::sys_days{date::year{y} / date::month{m} / date::day{d}} +
                                                    std::chrono::hours{h} + std::chrono::minutes{min} +
                                                    std::chrono::seconds{s});
}

// The successive firing instants of `cron` in `tz` after `from`.
std::vector<jobq::TimePoint> ticks(const std::string& cron, const std::string& tz, jobq::TimePoint from, int n) {
  const auto expr = jobq::CronExpr::parse(cron);
  std::vector<jobq::TimePoint> out;
  for (int i = 0; i < n; ++i) {
    auto t = expr.next(from, tz);
    REQUIRE(t);
    out.push_back(*t);
    from = *t;
  }
  return out;
}

}  // namespace

TEST_CASE("cron fields: values, ranges, steps, lists and names", "[cron]") {
  const auto t0 = utc(2030, 1, 1);  // a Tuesday
  CHECK(ticks("*/15 * * * *", "UTC", t0, 3) ==
        std::vector{utc(2030, 1, 1, 0, 15), utc(2030, 1, 1, 0, 30), utc(2030, 1, 1, 0, 45)});
  CHECK(ticks("5,10-12 3 * * *", "UTC", t0, 5) ==
        std::vector{utc(2030, 1, 1, 3, 5), utc(2030, 1, 1, 3, 10), utc(2030, 1, 1, 3, 11), utc(2030, 1, 1, 3, 12),
                    utc(2030, 1, 2, 3, 5)});
  CHECK(ticks("0 9 * * MON-FRI", "UTC", utc(2030, 1, 4, 10), 2) ==
        std::vector{utc(2030, 1, 7, 9), utc(2030, 1, 8, 9)});  // Friday 10:00 -> Monday
  CHECK(ticks("0 0 1 JAN,jul *", "UTC", t0, 2) == std::vector{utc(2030, 7, 1), utc(2031, 1, 1)});
  CHECK(ticks("0 12 * * 7", "UTC", t0, 1) == std::vector{utc(2030, 1, 6, 12)});  // 7 = Sunday
  CHECK(ticks("0 0 10-20/5 * *", "UTC", t0, 3) == std::vector{utc(2030, 1, 10), utc(2030, 1, 15), utc(2030, 1, 20)});
  CHECK(ticks("30 */20 * * *", "UTC", t0, 3) ==
        std::vector{utc(2030, 1, 1, 0, 30), utc(2030, 1, 1, 20, 30), utc(2030, 1, 2, 0, 30)});
  CHECK(ticks("0 3/8 * * *", "UTC", t0, 3) ==
        std::vector{utc(2030, 1, 1, 3), utc(2030, 1, 1, 11), utc(2030, 1, 1, 19)});
}

TEST_CASE("cron: six fields add seconds; aliases expand", "[cron]") {
  const auto t0 = utc(2030, 1, 1);
  CHECK(ticks("*/20 * * * * *", "UTC", t0, 3) ==
        std::vector{utc(2030, 1, 1, 0, 0, 20), utc(2030, 1, 1, 0, 0, 40), utc(2030, 1, 1, 0, 1, 0)});
  CHECK(ticks("@hourly", "UTC", t0, 1) == std::vector{utc(2030, 1, 1, 1)});
  CHECK(ticks("@daily", "UTC", t0, 1) == std::vector{utc(2030, 1, 2)});
  CHECK(ticks("@midnight", "UTC", t0, 1) == std::vector{utc(2030, 1, 2)});
  CHECK(ticks("@weekly", "UTC", t0, 1) == std::vector{utc(2030, 1, 6)});
  CHECK(ticks("@monthly", "UTC", t0, 1) == std::vector{utc(2030, 2, 1)});
  CHECK(ticks("@yearly", "UTC", t0, 1) == std::vector{utc(2031, 1, 1)});
  CHECK(ticks("@ANNUALLY", "UTC", t0, 1) == std::vector{utc(2031, 1, 1)});
  // Strictly after: a tick at `after` itself is not returned; milliseconds are honoured.
  CHECK(jobq::CronExpr::parse("* * * * *").next(utc(2030, 1, 1, 0, 1), "UTC") == utc(2030, 1, 1, 0, 2));
  CHECK(jobq::CronExpr::parse("* * * * *").next(utc(2030, 1, 1, 0, 0, 59) + 999ms, "UTC") == utc(2030, 1, 1, 0, 1));
}

TEST_CASE("cron: restricted day-of-month and day-of-week match either (Vixie rule)", "[cron]") {
  // The 13th or any Friday.
  CHECK(ticks("0 0 13 * FRI", "UTC", utc(2030, 1, 1), 3) ==
        std::vector{utc(2030, 1, 4), utc(2030, 1, 11), utc(2030, 1, 13)});
  // A star in one of them restricts by the other only.
  CHECK(ticks("0 0 */10 * *", "UTC", utc(2030, 1, 1), 2) == std::vector{utc(2030, 1, 11), utc(2030, 1, 21)});
  // Feb 29 only exists in leap years.
  CHECK(ticks("0 0 29 2 *", "UTC", utc(2030, 1, 1), 2) == std::vector{utc(2032, 2, 29), utc(2036, 2, 29)});
}

TEST_CASE("cron: malformed expressions are refused with a message naming the problem", "[cron][bad-input]") {
  auto refuses = [](const std::string& cron, const std::string& needle) {
    try {
      (void)jobq::CronExpr::parse(cron);
      FAIL("accepted '" << cron << "'");
    } catch (const jobq::InvalidArgument& e) {
      CHECK_THAT(e.what(), Catch::Contains(needle));
    }
  };
  refuses("", "empty");
  refuses("* * * *", "fields");
  refuses("* * * * * * *", "fields");
  refuses("60 * * * *", "minute");
  refuses("* 24 * * *", "hour");
  refuses("* * 0 * *", "day-of-month");
  refuses("* * * 13 *", "month");
  refuses("* * * * 8", "day-of-week");
  refuses("* * * FOO *", "unknown name");
  refuses("5-1 * * * *", "ends before it starts");
  refuses("*/0 * * * *", "outside");
  refuses("1,,2 * * * *", "empty list item");
  refuses("1-2-3 * * * *", "not a number");
  refuses("99999999999999999999 * * * *", "not a number");
  refuses("@sometimes", "alias");
  CHECK_FALSE(jobq::CronExpr::parse("0 0 31 4 *").next(utc(2030, 1, 1), "UTC"));  // April 31
  CHECK_THROWS_AS(jobq::find_time_zone("Nowhere/Special"), jobq::InvalidArgument);
}

TEST_CASE("cron in a time zone follows its offset", "[cron][tz]") {
  // 09:00 in New York is 14:00 UTC in winter (EST) and 13:00 UTC in summer (EDT).
  CHECK(ticks("0 9 * * *", "America/New_York", utc(2030, 1, 1), 1) == std::vector{utc(2030, 1, 1, 14)});
  CHECK(ticks("0 9 * * *", "America/New_York", utc(2030, 7, 1), 1) == std::vector{utc(2030, 7, 1, 13)});
  CHECK(ticks("0 9 * * *", "Asia/Kolkata", utc(2030, 1, 1), 1) == std::vector{utc(2030, 1, 1, 3, 30)});
}

TEST_CASE("DST spring forward: a time in the gap runs once, when the gap ends", "[cron][tz][dst]") {
  // 2026-03-08, America/New_York: 02:00 EST jumps to 03:00 EDT (07:00 UTC); 02:30 does not exist.
  const auto before = utc(2026, 3, 7, 12);
  CHECK(ticks("30 2 * * *", "America/New_York", before, 3) ==
        std::vector{utc(2026, 3, 8, 7), utc(2026, 3, 9, 6, 30), utc(2026, 3, 10, 6, 30)});
  // Every 15 minutes: 02:00..02:45 collapse into the one run at 03:00 EDT; 03:15 follows.
  CHECK(ticks("*/15 * * * *", "America/New_York", utc(2026, 3, 8, 6, 30), 4) ==
        std::vector{utc(2026, 3, 8, 6, 45), utc(2026, 3, 8, 7, 0), utc(2026, 3, 8, 7, 15), utc(2026, 3, 8, 7, 30)});
}

TEST_CASE("DST fall back: a repeated time runs once, at its first occurrence", "[cron][tz][dst]") {
  // 2026-11-01, America/New_York: 02:00 EDT falls back to 01:00 EST (06:00 UTC); 01:30 happens
  // at 05:30 UTC (EDT) and again at 06:30 UTC (EST).
  CHECK(ticks("30 1 * * *", "America/New_York", utc(2026, 10, 31, 12), 2) ==
        std::vector{utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)});
  // Hourly through the repeated hour: 01:00 EDT, then 02:00 EST (the second 01:00 is skipped).
  CHECK(ticks("0 * * * *", "America/New_York", utc(2026, 11, 1, 4, 30), 3) ==
        std::vector{utc(2026, 11, 1, 5), utc(2026, 11, 1, 7), utc(2026, 11, 1, 8)});
  // Starting inside the second pass, times already fired in the first pass are not repeated.
  CHECK(jobq::CronExpr::parse("45 1 * * *").next(utc(2026, 11, 1, 6, 10), "America/New_York") ==
        utc(2026, 11, 2, 6, 45));
}

TEST_CASE("schedules: specs round-trip through JSON", "[schedule]") {
  jobq::Schedule s{"nightly", "0 9 * * 1-5", "reports", "report", {{"kind", "daily"}},
                   {.tz = "America/New_York", .missed = jobq::MissedTicks::skip, .misfire_grace = 5min,
                    .priority = 2, .max_attempts = 7, .backoff = jobq::Backoff::fixed(3s), .timeout = 10s,
                    .group = "tenant-1"}};
  jobq::validate(s);
  const auto back = jobq::schedule_from_json("nightly", jobq::to_json(s));
  CHECK(jobq::to_json(back) == jobq::to_json(s));
  CHECK(back.options.missed == jobq::MissedTicks::skip);
  CHECK(back.options.group == "tenant-1");
  CHECK_THROWS_AS(jobq::schedule_from_json("x", {{"cron", 5}}), jobq::InvalidArgument);
  s.queue = "bad queue";
  CHECK_THROWS_AS(jobq::validate(s), jobq::InvalidArgument);
}
