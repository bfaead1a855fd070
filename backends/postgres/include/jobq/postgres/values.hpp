#pragma once
// Values to and from PostgreSQL's text format: statement parameters (plain and array
// literals) and the rows that come back.

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <libpq-fe.h>
#include <nlohmann/json.hpp>

#include "jobq/backend.hpp"

namespace jobq::detail::pg {

/// One statement parameter in text form; nullopt is SQL NULL.
using Param = std::optional<std::string>;
using Params = std::vector<Param>;

/// A time as a parameter: epoch ms from the backend's clock.
inline std::string ms(TimePoint t) { return std::to_string(to_epoch_ms(t)); }

/// Text without its NUL bytes, which libpq would take for the end of the parameter.
inline std::string strip_nul(std::string s) {
  std::erase(s, '\0');
  return s;
}

/// A PostgreSQL array literal of text elements ({"a","b\"c",NULL}).
inline std::string text_array(const std::vector<Param>& items) {
  std::string out = "{";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ',';
    if (!items[i]) {
      out += "NULL";
      continue;
    }
    out += '"';
    for (char c : *items[i]) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  }
  out += '}';
  return out;
}

/// An integer array literal ({1,2,3}).
template <class Int>
std::string int_array(const std::vector<Int>& items) {
  std::string out = "{";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ',';
    out += std::to_string(items[i]);
  }
  out += '}';
  return out;
}

/// The ids of an integer array in text form ({1,2,3}).
inline std::vector<std::int64_t> int_array_from(std::string_view text) {
  std::vector<std::int64_t> out;
  const char* p = text.data();
  const char* end = p + text.size();
  while (p < end) {
    if (*p == '{' || *p == '}' || *p == ',') {
      ++p;
      continue;
    }
    std::int64_t v = 0;
    auto [next, ec] = std::from_chars(p, end, v);
    if (ec != std::errc{}) break;
    out.push_back(v);
    p = next;
  }
  return out;
}

/// Text safe to store in a text column: valid UTF-8 (bad bytes replaced) without NUL bytes.
/// Used for error and progress messages, which come from arbitrary exceptions.
inline std::string safe_text(const std::string& s) {
  std::string out =
      nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  out = nlohmann::json::parse(out).get<std::string>();
  std::erase(out, '\0');
  return out;
}

/// Refuses text that PostgreSQL cannot hold (NUL bytes); libpq would silently cut it short.
inline void require_no_nul(const std::string& s, std::string_view what) {
  if (s.find('\0') != std::string::npos) throw InvalidArgument(std::string(what) + " contains a NUL byte");
}

/// An integer column or command tag.
inline std::int64_t to_i64(const char* s) {
  std::int64_t v = 0;
  std::from_chars(s, s + std::strlen(s), v);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Rows: every statement that returns whole jobs selects the columns of sql::get, in its order.

inline std::optional<TimePoint> opt_time(const PGresult* r, int row, int col) {
  if (PQgetisnull(r, row, col)) return std::nullopt;
  return from_epoch_ms(to_i64(PQgetvalue(r, row, col)));
}

/// The job in row `row` of a result with the columns of sql::get.
inline JobRecord row_to_job(const PGresult* r, int row) {
  auto text = [&](int col) {
    return std::string(PQgetvalue(r, row, col), static_cast<std::size_t>(PQgetlength(r, row, col)));
  };
  auto i64 = [&](int col) { return to_i64(PQgetvalue(r, row, col)); };
  JobRecord j;
  j.id = i64(0);
  j.queue = text(1);
  j.name = text(2);
  j.payload = nlohmann::json::parse(text(3));
  j.state = job_state_from_string(text(4));
  j.priority = static_cast<int>(i64(5));
  j.attempts = static_cast<int>(i64(6));
  j.max_attempts = static_cast<int>(i64(7));
  j.run_at = from_epoch_ms(i64(8));
  j.created_at = from_epoch_ms(i64(9));
  j.finished_at = opt_time(r, row, 10);
  j.lease_until = opt_time(r, row, 11);
  j.lease_token = text(12);
  j.backoff = Backoff::from_json(nlohmann::json::parse(text(13)));
  j.timeout = Millis{i64(14)};
  j.unique_key = text(15);
  j.unique_for = Millis{i64(16)};
  if (!PQgetisnull(r, row, 17)) j.result = nlohmann::json::parse(text(17));
  j.errors = errors_from_json(nlohmann::json::parse(text(18)));
  j.progress = static_cast<int>(i64(19));
  j.progress_message = text(20);
  j.group = text(21);
  if (!PQgetisnull(r, row, 22)) j.flow_id = i64(22);
  j.depends_on = int_array_from(PQgetvalue(r, row, 23));
  j.continue_on_failure = PQgetvalue(r, row, 24)[0] == 't';
  j.expires_at = opt_time(r, row, 25);
  return j;
}

inline std::vector<JobRecord> rows_to_jobs(const PGresult* r) {
  std::vector<JobRecord> out;
  out.reserve(static_cast<std::size_t>(PQntuples(r)));
  for (int row = 0; row < PQntuples(r); ++row) out.push_back(row_to_job(r, row));
  return out;
}

/// The outcome of a failure from the job's state after it.
inline FailOutcome outcome_of(std::string_view state) {
  return state == "dead" ? FailOutcome::dead : FailOutcome::retried;
}

}  // namespace jobq::detail::pg
