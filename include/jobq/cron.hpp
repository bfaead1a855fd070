#pragma once

#include <algorithm>
#include <array>
#include <bitset>
#include <cctype>
#include <charconv>
#include <chrono>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <date/date.h>
#include <date/tz.h>

#include "jobq/error.hpp"
#include "jobq/time.hpp"

namespace jobq {

/// @brief Looks up an IANA time zone ("America/New_York", "UTC") in the system tz database;
/// throws InvalidArgument for an unknown name.
inline const date::time_zone* find_time_zone(std::string_view name) {
  try {
    return date::locate_zone(std::string(name));
  } catch (const std::exception&) {
    throw InvalidArgument("unknown time zone '" + std::string(name) +
                          "' (expected an IANA name such as 'UTC' or 'Europe/Paris')");
  }
}

/// @brief A parsed cron expression: 5 fields (minute hour day-of-month month day-of-week) or 6
/// (seconds first); `*`, ranges `a-b`, steps `*/n` and `a-b/n`, lists `a,b`, names (JAN..DEC,
/// SUN..SAT; 0 and 7 are Sunday) and the aliases @yearly @annually @monthly @weekly @daily
/// @midnight @hourly. As in Vixie cron, when both day fields are restricted (neither starts
/// with '*') a day matching either one matches; otherwise a day must match both.
///
/// Time zones and DST (next()): cron fields are matched against local wall-clock time, and each
/// matching wall-clock time fires at most once. A time that does not exist (spring forward)
/// fires at the instant the gap ends (02:30 on a 02:00->03:00 day fires at 03:00, once; several
/// times in one gap collapse into that one run). A time that occurs twice (fall back) fires at
/// its first occurrence only.
class CronExpr {
 public:
  /// @brief Parses `text`; throws InvalidArgument saying which field is wrong and why.
  static CronExpr parse(std::string_view text) {
    std::string expanded(trim(text));
    if (expanded.empty()) throw InvalidArgument("cron expression is empty");
    if (expanded.front() == '@') expanded = std::string(alias(expanded));
    std::vector<std::string_view> fields;
    std::string_view rest = expanded;
    while (!rest.empty()) {
      const auto start = rest.find_first_not_of(" \t");
      if (start == std::string_view::npos) break;
      rest.remove_prefix(start);
      const auto end = rest.find_first_of(" \t");
      fields.push_back(rest.substr(0, end));
      rest.remove_prefix(end == std::string_view::npos ? rest.size() : end);
    }
    if (fields.size() != 5 && fields.size() != 6) {
      throw InvalidArgument("cron expression '" + std::string(text) + "' has " +
                            std::to_string(fields.size()) +
                            " fields; expected 5 (min hour dom mon dow) or 6 (sec min hour dom mon dow)");
    }
    CronExpr c;
    c.text_ = std::string(text);
    std::size_t i = 0;
    if (fields.size() == 6) {
      c.seconds_ = field<60>(fields[i++], 0, 59, "second", {});
    } else {
      c.seconds_.set(0);
    }
    c.minutes_ = field<60>(fields[i++], 0, 59, "minute", {});
    c.hours_ = field<24>(fields[i++], 0, 23, "hour", {});
    c.dom_star_ = fields[i].front() == '*';
    c.dom_ = field<32>(fields[i++], 1, 31, "day-of-month", {});
    static constexpr std::array<std::string_view, 12> months = {
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
    c.months_ = field<13>(fields[i++], 1, 12, "month", {months.data(), months.size()});
    c.dow_star_ = fields[i].front() == '*';
    static constexpr std::array<std::string_view, 7> days = {"SUN", "MON", "TUE", "WED",
                                                             "THU", "FRI", "SAT"};
    auto dow = field<8>(fields[i++], 0, 7, "day-of-week", {days.data(), days.size()}, 0);
    if (dow.test(7)) dow.set(0);  // 7 is Sunday too
    for (int d = 0; d < 7; ++d) c.dow_[static_cast<std::size_t>(d)] = dow.test(static_cast<std::size_t>(d));
    return c;
  }

  /// @brief The expression as given.
  [[nodiscard]] const std::string& text() const noexcept { return text_; }

  /// @brief The first firing instant strictly after `after` in time zone `tz`, or nullopt if
  /// the expression never fires (e.g. "0 0 30 2 *").
  [[nodiscard]] std::optional<TimePoint> next(TimePoint after, const date::time_zone* tz) const {
    using namespace std::chrono;
    const auto after_s = floor<seconds>(after);
    auto from = tz->to_local(after_s) + seconds{1};
    // Each candidate wall time resolves to one instant; skip those at or before `after`
    // (possible inside a repeated hour, whose times already fired in its first pass).
    for (int guard = 0; guard < 100'000; ++guard) {
      const auto local = next_local(from);
      if (!local) return std::nullopt;
      const auto instant = tz->to_sys(*local, date::choose::earliest);
      if (instant > after_s) return time_point_cast<Millis>(instant);
      from = *local + seconds{1};
    }
    return std::nullopt;
  }

  /// @brief Shorthand for next() in a named zone.
  [[nodiscard]] std::optional<TimePoint> next(TimePoint after, std::string_view tz = "UTC") const {
    return next(after, find_time_zone(tz));
  }

 private:
  static std::string_view trim(std::string_view s) {
    const auto b = s.find_first_not_of(" \t\r\n");
    if (b == std::string_view::npos) return {};
    const auto e = s.find_last_not_of(" \t\r\n");
    return s.substr(b, e - b + 1);
  }

  static std::string_view alias(std::string_view a) {
    std::string lower(a);
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    if (lower == "@yearly" || lower == "@annually") return "0 0 1 1 *";
    if (lower == "@monthly") return "0 0 1 * *";
    if (lower == "@weekly") return "0 0 * * 0";
    if (lower == "@daily" || lower == "@midnight") return "0 0 * * *";
    if (lower == "@hourly") return "0 * * * *";
    throw InvalidArgument("unknown cron alias '" + std::string(a) +
                          "' (use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)");
  }

  static int value(std::string_view tok, int lo, int hi, const char* what,
                   std::span<const std::string_view> names, int name_base) {
    if (tok.empty()) throw InvalidArgument(std::string("cron ") + what + ": empty value");
    if (std::isalpha(static_cast<unsigned char>(tok.front()))) {
      std::string up(tok);
      std::transform(up.begin(), up.end(), up.begin(),
                     [](unsigned char ch) { return static_cast<char>(std::toupper(ch)); });
      for (std::size_t i = 0; i < names.size(); ++i) {
        if (names[i] == up) return static_cast<int>(i) + name_base;
      }
      throw InvalidArgument(std::string("cron ") + what + ": unknown name '" + std::string(tok) + "'");
    }
    int v = 0;
    const auto* end = tok.data() + tok.size();
    const auto [p, ec] = std::from_chars(tok.data(), end, v);
    if (ec != std::errc{} || p != end) {
      throw InvalidArgument(std::string("cron ") + what + ": '" + std::string(tok) + "' is not a number");
    }
    if (v < lo || v > hi) {
      throw InvalidArgument(std::string("cron ") + what + ": " + std::to_string(v) + " is outside " +
                            std::to_string(lo) + "-" + std::to_string(hi));
    }
    return v;
  }

  template <std::size_t N>
  static std::bitset<N> field(std::string_view f, int lo, int hi, const char* what,
                              std::span<const std::string_view> names, int name_base = 1) {
    std::bitset<N> bits;
    std::string_view rest = f;
    while (true) {
      const auto comma = rest.find(',');
      const auto item = rest.substr(0, comma);
      if (item.empty()) throw InvalidArgument(std::string("cron ") + what + ": empty list item in '" + std::string(f) + "'");
      auto range = item;
      int step = 1;
      if (const auto slash = item.find('/'); slash != std::string_view::npos) {
        range = item.substr(0, slash);
        step = value(item.substr(slash + 1), 1, hi - lo + 1, what, {}, 0);
      }
      int a = lo;
      int b = hi;
      if (range != "*") {
        const auto dash = range.find('-');
        a = value(range.substr(0, dash), lo, hi, what, names, name_base);
        if (dash != std::string_view::npos) {
          b = value(range.substr(dash + 1), lo, hi, what, names, name_base);
          if (b < a) {
            throw InvalidArgument(std::string("cron ") + what + ": range '" + std::string(range) +
                                  "' ends before it starts");
          }
        } else if (item.find('/') == std::string_view::npos) {
          b = a;  // a single value; "a/n" means a to the maximum in steps of n
        }
      }
      for (int v = a; v <= b; v += step) bits.set(static_cast<std::size_t>(v));
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
    return bits;
  }

  [[nodiscard]] bool day_matches(date::year_month_day ymd, date::weekday wd) const {
    if (!months_.test(static_cast<unsigned>(ymd.month()))) return false;
    const bool dom = dom_.test(static_cast<unsigned>(ymd.day()));
    const bool dow = dow_.test(wd.c_encoding());
    // Vixie cron: a field written with '*' (even "*/n") makes the two combine with AND.
    if (dom_star_ || dow_star_) return dom && dow;
    return dom || dow;
  }

  // The first matching local wall time at or after `from` (searched up to 8 years ahead, enough
  // for Feb 29 across a skipped leap year).
  [[nodiscard]] std::optional<date::local_seconds> next_local(date::local_seconds from) const {
    using namespace std::chrono;
    auto day = date::floor<date::days>(from);
    auto tod = duration_cast<seconds>(from - day).count();
    for (int i = 0; i < 366 * 8 + 2; ++i, day += date::days{1}, tod = 0) {
      if (!day_matches(date::year_month_day{day}, date::weekday{day})) continue;
      const int h0 = static_cast<int>(tod / 3600);
      const int m0 = static_cast<int>(tod / 60 % 60);
      const int s0 = static_cast<int>(tod % 60);
      for (int h = h0; h < 24; ++h) {
        if (!hours_.test(static_cast<std::size_t>(h))) continue;
        for (int m = h == h0 ? m0 : 0; m < 60; ++m) {
          if (!minutes_.test(static_cast<std::size_t>(m))) continue;
          for (int s = (h == h0 && m == m0) ? s0 : 0; s < 60; ++s) {
            if (seconds_.test(static_cast<std::size_t>(s))) return day + hours{h} + minutes{m} + seconds{s};
          }
        }
      }
    }
    return std::nullopt;
  }

  std::string text_;
  std::bitset<60> seconds_, minutes_;
  std::bitset<24> hours_;
  std::bitset<32> dom_;
  std::bitset<13> months_;
  std::bitset<7> dow_;
  bool dom_star_ = false, dow_star_ = false;
};

}  // namespace jobq
