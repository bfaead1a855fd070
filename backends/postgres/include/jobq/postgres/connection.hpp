#pragma once
// libpq underneath the backend: handles, the errors of a failed statement or connection,
// opening a connection, and running statements on the two kinds of connection (the pool's,
// whose statements are prepared, and a caller's, for transactional enqueue).

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <poll.h>

#include <libpq-fe.h>

#include "jobq/backend.hpp"
#include "jobq/postgres/conninfo.hpp"
#include "jobq/postgres/options.hpp"
#include "jobq/postgres/statements.hpp"
#include "jobq/postgres/values.hpp"
#include "jobq/url.hpp"

namespace jobq::detail::pg {

struct ResultDeleter {
  void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

struct ConnDeleter {
  void operator()(PGconn* c) const noexcept { PQfinish(c); }
};
using ConnPtr = std::unique_ptr<PGconn, ConnDeleter>;

/// Thrown inside the backend when a connection broke; `unknown` = the statement may have been
/// applied (it was sent and no answer came back). Never escapes the backend.
struct Lost {
  bool unknown = false;
  std::string message;
};

/// A SQLSTATE of a broken or refused connection, worth a new connection and another try.
inline bool is_transient_sqlstate(std::string_view s) {
  return s.starts_with("08") || s == "57P01" || s == "57P02" || s == "57P03" || s == "53300";
}

/// The jobq error category of a SQLSTATE.
inline ErrorCategory category_for(std::string_view s) {
  if (is_transient_sqlstate(s)) return ErrorCategory::connection;
  if (s == "23505" || s == "40001" || s == "40P01" || s == "55P03") return ErrorCategory::conflict;
  if (s.starts_with("22") || s.starts_with("23") || s.starts_with("28") || s == "42602") {
    return ErrorCategory::invalid_argument;
  }
  if (s == "3D000" || s == "3F000") return ErrorCategory::not_found;
  return ErrorCategory::backend;
}

inline std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

/// libpq's message with the "LOCATION:" lines of verbose mode and the SQLSTATE prefix removed;
/// the SQLSTATE found (connection-time errors have no PGresult to read it from) goes to `state`.
inline std::string clean_message(std::string_view raw, std::string* state) {
  std::string out;
  std::size_t pos = 0;
  while (pos < raw.size()) {
    auto end = raw.find('\n', pos);
    if (end == std::string_view::npos) end = raw.size();
    std::string line(raw.substr(pos, end - pos));
    pos = end + 1;
    if (line.starts_with("LOCATION:")) continue;
    for (const char* sev : {"FATAL:  ", "ERROR:  "}) {
      const auto at = line.find(sev);
      const auto code = at == std::string::npos ? at : at + std::strlen(sev);
      if (code != std::string::npos && line.size() > code + 7 && line[code + 5] == ':' &&
          line[code + 6] == ' ') {
        const auto candidate = line.substr(code, 5);
        if (std::all_of(candidate.begin(), candidate.end(),
                        [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z'); })) {
          if (state != nullptr && state->empty()) *state = candidate;
          line.erase(code, 7);
        }
      }
    }
    if (!out.empty()) out += ' ';
    out += line;
  }
  return trim(out);
}

// ---------------------------------------------------------------------------------------------
// Results

/// Turns a failed result into Lost (connection broke) or a thrown PostgresError.
[[noreturn]] inline void raise(PGconn* pg, const PGresult* r, std::string_view what) {
  std::string state;
  if (r != nullptr) {
    const char* s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (s != nullptr) state = s;
  }
  std::string msg = trim(r != nullptr && PQresultErrorMessage(r)[0] != '\0' ? PQresultErrorMessage(r)
                                                                            : PQerrorMessage(pg));
  msg = clean_message(msg, nullptr);
  if (PQstatus(pg) != CONNECTION_OK || is_transient_sqlstate(state)) {
    // An error the server sent (it has a SQLSTATE) means the statement was not applied; a
    // connection that died without an answer leaves the outcome unknown.
    throw Lost{state.empty() && PQstatus(pg) != CONNECTION_OK, msg};
  }
  if (state.empty()) state = "XX000";
  throw PostgresError(category_for(state),
                      "postgres: " + std::string(what) + " failed: " + msg + " [SQLSTATE " + state + "]",
                      state);
}

/// The parameters as libpq takes them (NULL for SQL NULL).
inline std::vector<const char*> c_params(const Params& params) {
  std::vector<const char*> v;
  v.reserve(params.size());
  for (const auto& p : params) v.push_back(p ? p->c_str() : nullptr);
  return v;
}

/// The result if the statement succeeded; raise() otherwise.
inline Result check(PGconn* pg, PGresult* res, std::string_view what) {
  Result r{res};
  const auto st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) raise(pg, r.get(), what);
  return r;
}

/// Runs one statement given as text, with parameters (not prepared).
inline Result exec_text(PGconn* pg, std::string_view text, const Params& params = {}) {
  const std::string sql(text);
  auto values = c_params(params);
  return check(pg,
               PQexecParams(pg, sql.c_str(), static_cast<int>(params.size()), nullptr, values.data(),
                            nullptr, nullptr, 0),
               "statement");
}

// ---------------------------------------------------------------------------------------------
// Connecting

/// Opens connections to one server: the caller's connection string with our settings.
class Connector {
 public:
  /// Checks the connection string (InvalidArgument) and describes it for messages.
  Connector(std::string conninfo, const PostgresOptions& opt)
      : conninfo_(std::move(conninfo)), target_(describe_conninfo(conninfo_)), opt_(&opt) {}

  /// user@host:port/dbname, never the password.
  [[nodiscard]] const std::string& target() const noexcept { return target_; }

  /// A fresh connection. Connection-time errors carry their SQLSTATE through verbose messages
  /// (there is no PGresult to ask); transient ones become Lost, the rest PostgresError.
  [[nodiscard]] ConnPtr connect() const {
    const auto timeout = std::to_string(std::max<long long>(opt_->connect_timeout.count(), 1));
    // Ours first, then the caller's string (expand_dbname), which overrides them; then the
    // encoding, which nothing may override because the backend sends UTF-8.
    const char* keys[] = {"connect_timeout", "application_name", "keepalives", "keepalives_idle",
                          "keepalives_interval", "keepalives_count", "dbname", "client_encoding",
                          nullptr};
    const char* vals[] = {timeout.c_str(), opt_->application_name.c_str(), "1", "30", "10", "3",
                          conninfo_.c_str(), "UTF8", nullptr};
    ConnPtr c{PQconnectStartParams(keys, vals, 1)};
    if (!c) throw ConnectionError("postgres: out of memory creating a connection to " + target_);
    PQsetErrorVerbosity(c.get(), PQERRORS_VERBOSE);
    const auto deadline = std::chrono::steady_clock::now() + opt_->connect_timeout + std::chrono::seconds(1);
    auto st = PGRES_POLLING_WRITING;
    while (PQstatus(c.get()) != CONNECTION_BAD && st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
      const auto left = std::chrono::duration_cast<Millis>(deadline - std::chrono::steady_clock::now());
      if (left <= Millis{0}) {
        throw Lost{false, "timed out after " + std::to_string(opt_->connect_timeout.count()) +
                              " s connecting to " + target_};
      }
      pollfd p{PQsocket(c.get()), static_cast<short>(st == PGRES_POLLING_READING ? POLLIN : POLLOUT), 0};
      ::poll(&p, 1, static_cast<int>(std::min<Millis::rep>(left.count(), 1000)));
      st = PQconnectPoll(c.get());
    }
    if (PQstatus(c.get()) != CONNECTION_OK) {
      std::string state;
      // libpq quotes what it was given (a host name, a port, a database name): never the
      // password once describe_conninfo accepted the string, scrubbed all the same.
      auto msg = detail::url::scrub(clean_message(PQerrorMessage(c.get()), &state), conninfo_);
      if (state.empty() || is_transient_sqlstate(state)) {
        throw Lost{false, "cannot connect to " + target_ + ": " + msg};
      }
      throw PostgresError(category_for(state),
                          "postgres: cannot connect to " + target_ + ": " + msg + " [SQLSTATE " + state + "]",
                          state);
    }
    PQsetErrorVerbosity(c.get(), PQERRORS_DEFAULT);
    // Server NOTICEs ("schema already exists", ...) are not the application's business.
    PQsetNoticeProcessor(c.get(), [](void*, const char*) {}, nullptr);
    return c;
  }

 private:
  std::string conninfo_;
  std::string target_;
  const PostgresOptions* opt_;
};

// ---------------------------------------------------------------------------------------------
// The two kinds of connection

/// A pool connection: each statement is prepared on it the first time it runs there (unless
/// prepared_statements is off, for PgBouncer in transaction mode).
struct Conn {
  ConnPtr pg;
  const StatementTable* statements = nullptr;
  bool prepare = true;
  std::vector<bool> prepared = std::vector<bool>(static_cast<std::size_t>(Statement::count_), false);

  [[nodiscard]] PGconn* raw() const noexcept { return pg.get(); }

  /// Runs a statement of the table (Lost if the connection broke, PostgresError otherwise).
  Result exec(Statement s, const Params& params) {
    const auto& st = (*statements)[s];
    const auto i = static_cast<std::size_t>(s);
    auto values = c_params(params);
    const int n = static_cast<int>(params.size());
    if (!prepare) {
      return check(raw(), PQexecParams(raw(), st.text.c_str(), n, nullptr, values.data(), nullptr, nullptr, 0),
                   st.name);
    }
    if (!prepared[i]) {
      Result p{PQprepare(raw(), st.name.c_str(), st.text.c_str(), n, nullptr)};
      if (!p || PQresultStatus(p.get()) != PGRES_COMMAND_OK) {
        try {
          raise(raw(), p.get(), "prepare " + st.name);
        } catch (Lost& lost) {
          lost.unknown = false;  // a PREPARE changes no data
          throw;
        }
      }
      prepared[i] = true;
    }
    return check(raw(), PQexecPrepared(raw(), st.name.c_str(), n, values.data(), nullptr, nullptr, 0), st.name);
  }
};

/// The caller's connection for transactional enqueue: never prepared on, never retried.
struct CallerConn {
  PGconn* pg;
  const StatementTable* statements;

  [[nodiscard]] PGconn* raw() const noexcept { return pg; }

  /// Runs a statement of the table by its text.
  Result exec(Statement s, const Params& params) {
    const auto& st = (*statements)[s];
    auto values = c_params(params);
    return check(pg,
                 PQexecParams(pg, st.text.c_str(), static_cast<int>(params.size()), nullptr, values.data(),
                              nullptr, nullptr, 0),
                 st.name);
  }
};

/// BEGIN; fn(); COMMIT on one connection. A failure before COMMIT rolls back (Lost with
/// unknown = false: nothing was applied); only a COMMIT without an answer is unknown.
template <class C, class F>
std::invoke_result_t<F&> in_transaction(C& c, F&& fn) {
  exec_text(c.raw(), "BEGIN");
  std::optional<decltype(fn())> out;
  try {
    out.emplace(fn());
  } catch (Lost& lost) {
    lost.unknown = false;  // nothing was committed
    throw;
  } catch (...) {
    if (PQstatus(c.raw()) == CONNECTION_OK) Result{PQexec(c.raw(), "ROLLBACK")};
    throw;
  }
  exec_text(c.raw(), "COMMIT");  // a Lost here keeps unknown = true: the commit may have happened
  return std::move(*out);
}

}  // namespace jobq::detail::pg
