#pragma once

/// @file
/// The Worker's log: levels, one record per line, and a default writer to stderr. A program
/// with its own logging (spdlog, fmt, syslog) plugs in a Logger whose `write` forwards the
/// record; `level` filters before any text is made.

#include <chrono>
#include <ctime>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>

namespace jobq {

struct JobEvent;

/// @brief How much a log line matters.
enum class LogLevel { debug, info, warning, error, off };

/// @brief The level's name ("debug", "info", "warning", "error", "off").
constexpr std::string_view to_string(LogLevel l) noexcept {
  switch (l) {
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warning: return "warning";
    case LogLevel::error: return "error";
    case LogLevel::off: return "off";
  }
  return "unknown";
}

/// @brief One line: its level, its text (without time or level), and the job event it is
/// about (null for the worker's own messages, such as a backend error it survives).
struct LogRecord {
  LogLevel level = LogLevel::info;  ///< how much it matters
  std::string_view text;            ///< e.g. "job 42 send-email (emails): dead after attempt 3: ..."
  const JobEvent* event = nullptr;  ///< the job context, when about a job
};

/// @brief A log sink: records below `level` are never made; `write` gets the others (from
/// worker threads at once: it must be thread-safe). An empty `write` logs nothing.
struct Logger {
  LogLevel level = LogLevel::warning;                ///< the least level written
  std::function<void(const LogRecord&)> write = {};  ///< where records go

  /// @brief Whether a record of level `l` would be written.
  [[nodiscard]] bool enabled(LogLevel l) const noexcept {
    return write && l >= level && level != LogLevel::off;
  }
};

/// @brief Writes "2026-12-03T16:31:02.123Z warning jobq: <text>" lines to `out` (one lock per
/// line, so lines from several threads never interleave). `out` must outlive the logger.
inline std::function<void(const LogRecord&)> stream_writer(std::ostream& out) {
  auto m = std::make_shared<std::mutex>();
  return [&out, m](const LogRecord& r) {
    using namespace std::chrono;
    const auto now = system_clock::now();
    const auto t = system_clock::to_time_t(now);
    const auto ms = duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
    std::tm tm{};
    gmtime_r(&t, &tm);
    char stamp[32];
    const auto n = std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    std::string line(stamp, n);
    line += '.';
    line += static_cast<char>('0' + ms / 100);
    line += static_cast<char>('0' + ms / 10 % 10);
    line += static_cast<char>('0' + ms % 10);
    line += "Z ";
    line += to_string(r.level);
    line += " jobq: ";
    line += r.text;
    line += '\n';
    std::lock_guard lock(*m);
    out << line << std::flush;
  };
}

/// @brief The default: warnings and errors (failed attempts, dead jobs, lost leases, errors the
/// worker survives) to stderr; `stderr_logger(LogLevel::info)` adds a line per completed job.
inline Logger stderr_logger(LogLevel level = LogLevel::warning) { return {level, stream_writer(std::cerr)}; }

}  // namespace jobq
