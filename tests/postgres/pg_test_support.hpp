#pragma once
// Helpers shared by the PostgreSQL tests: the server URL from the environment (a missing
// variable fails the test, never skips it), unique throwaway schemas, raw libpq connections.

#include <cstdlib>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>

#include <libpq-fe.h>

namespace pgtest {

/// The test server (scripts/test.sh exports it); throws, failing the test, when unset.
inline std::string url() {
  const char* u = std::getenv("JOBQ_TEST_POSTGRES_URL");
  if (u == nullptr || *u == '\0') {
    throw std::runtime_error(
        "JOBQ_TEST_POSTGRES_URL is not set: run the tests through scripts/test.sh, or export "
        "JOBQ_TEST_POSTGRES_URL=postgresql://user@127.0.0.1:PORT/db of a throwaway server");
  }
  return u;
}

/// A random lower-case suffix for schema and role names.
inline std::string random_suffix(std::size_t n = 12) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char chars[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::string s;
  for (std::size_t i = 0; i < n; ++i) s += chars[rng() % 36];
  return s;
}

struct ConnDeleter {
  void operator()(PGconn* c) const noexcept { PQfinish(c); }
};
using Conn = std::unique_ptr<PGconn, ConnDeleter>;

/// A plain libpq connection to `conninfo` (default: the test server); throws if it fails.
inline Conn connect(const std::string& conninfo = url()) {
  Conn c{PQconnectdb(conninfo.c_str())};
  if (PQstatus(c.get()) != CONNECTION_OK) {
    throw std::runtime_error(std::string("test connection failed: ") + PQerrorMessage(c.get()));
  }
  PQsetNoticeProcessor(c.get(), [](void*, const char*) {}, nullptr);
  return c;
}

/// Runs SQL (no parameters) and returns the first value of the first row ("" if none).
inline std::string exec(PGconn* c, const std::string& sql) {
  PGresult* r = PQexec(c, sql.c_str());
  const auto st = PQresultStatus(r);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    std::string msg = PQresultErrorMessage(r);
    PQclear(r);
    throw std::runtime_error("test SQL failed: " + sql + ": " + msg);
  }
  std::string v = (st == PGRES_TUPLES_OK && PQntuples(r) > 0) ? PQgetvalue(r, 0, 0) : "";
  PQclear(r);
  return v;
}

/// A unique schema name; the schema (if created) is dropped with everything in it on scope exit.
struct TempSchema {
  std::string name = "jobq_t_" + random_suffix();
  TempSchema() = default;
  TempSchema(const TempSchema&) = delete;
  TempSchema& operator=(const TempSchema&) = delete;
  ~TempSchema() {
    try {
      auto c = connect();
      exec(c.get(), "DROP SCHEMA IF EXISTS \"" + name + "\" CASCADE");
    } catch (...) {
      // Best effort: a leftover schema in a throwaway server harms nothing.
    }
  }
};

/// Undoes migration 8 of schema `q` (quoted), keeping the jobs: a store written before deadlines
/// (the two functions get back their migration 7 text, the edits of migration 8 taken out).
inline void downgrade_to_v7(PGconn* c, const std::string& q) {
  exec(c, "DO $do$ DECLARE d text; BEGIN\n"
          "  d := pg_get_functiondef('" + q + ".claim_limited(text[], bigint, int, bigint, text[])'::regprocedure);\n"
          "  EXECUTE replace(d, ' AND (j.expires_at IS NULL OR j.expires_at >= p_now)', '');\n"
          "  d := pg_get_functiondef('" + q + ".enqueue_keyed(text, text, json, int, int, bigint, bigint, jsonb, bigint,"
          " bigint, text, text, bigint, bigint, bigint)'::regprocedure);\n"
          "  DROP FUNCTION " + q + ".enqueue_keyed(text, text, json, int, int, bigint, bigint, jsonb, bigint, bigint,"
          " text, text, bigint, bigint, bigint);\n"
          "  EXECUTE regexp_replace(regexp_replace(d, ',\\s*p_expires_at( bigint)?\\)', ')', 'g'),"
          " ',\\s*expires_at\\)', ')', 'g');\n"
          "END $do$");
  exec(c, "ALTER TABLE " + q + ".jobs DROP COLUMN expires_at");
  exec(c, "DELETE FROM " + q + ".schema_migrations WHERE version > 7");
}

/// Undoes migration 7 of schema `q` (quoted) too (flow_revive keeps its new text; the upgrade
/// replaces it again).
inline void downgrade_to_v6(PGconn* c, const std::string& q) {
  downgrade_to_v7(c, q);
  exec(c, "DELETE FROM " + q + ".schema_migrations WHERE version > 6");
}

/// Undoes migration 6 of schema `q` (quoted), keeping the jobs and limits: a store written
/// before queue concurrency (claim_limited keeps its new text; the upgrade replaces it again).
inline void downgrade_to_v5(PGconn* c, const std::string& q) {
  downgrade_to_v6(c, q);
  exec(c, "ALTER TABLE " + q + ".queue_limits DROP COLUMN concurrency");
  exec(c, "DELETE FROM " + q + ".schema_migrations WHERE version > 5");
}

/// Undoes migrations 5 and 6 of schema `q` (quoted), keeping the jobs: a store written before
/// the worker registry.
inline void downgrade_to_v4(PGconn* c, const std::string& q) {
  downgrade_to_v5(c, q);
  exec(c, "DROP TABLE " + q + ".workers");
  exec(c, "DELETE FROM " + q + ".schema_migrations WHERE version > 4");
}

/// Undoes migration 4 of schema `q` (quoted), keeping the jobs: a store written before flows.
inline void downgrade_to_v3(PGconn* c, const std::string& q) {
  downgrade_to_v4(c, q);
  for (const char* sql : {
           "DROP FUNCTION %s.flow_died(bigint[], boolean, text, boolean, bigint)",
           "DROP FUNCTION %s.flow_revive(bigint)",
           "DROP TABLE %s.job_deps, %s.flows",
           "ALTER TABLE %s.jobs DROP COLUMN flow_id, DROP COLUMN depends_on,"
           " DROP COLUMN continue_on_failure, DROP COLUMN pending",
           "ALTER TABLE %s.jobs DROP CONSTRAINT jobs_state_check",
           "ALTER TABLE %s.jobs ADD CONSTRAINT jobs_state_check"
           " CHECK (state IN ('queued','active','completed','dead','cancelled'))",
           "DELETE FROM %s.schema_migrations WHERE version > 3",
       }) {
    std::string s = sql;
    for (auto at = s.find("%s"); at != std::string::npos; at = s.find("%s")) s.replace(at, 2, q);
    exec(c, s);
  }
}

/// Undoes migration 3 of schema `q` (quoted), keeping the jobs: what a store written by the
/// previous jobq looks like, for upgrade tests.
inline void downgrade_to_v2(PGconn* c, const std::string& q) {
  downgrade_to_v3(c, q);
  for (const char* sql : {
           "DROP FUNCTION %s.claim_limited(text[], bigint, int, bigint, text[])",
           "DROP FUNCTION %s.enqueue_keyed(text, text, json, int, int, bigint, bigint, jsonb, bigint,"
           " bigint, text, text, bigint, bigint)",
           "DROP FUNCTION %s.notify_events(text[])",
           "DROP TABLE %s.queue_limits, %s.rate_ledger, %s.schedules, %s.event_listeners",
           "DROP INDEX %s.jobs_unique_holder",
           "ALTER TABLE %s.jobs DROP COLUMN group_key",
           "CREATE UNIQUE INDEX jobs_unique_live ON %s.jobs (queue, unique_key)"
           " WHERE unique_key IS NOT NULL AND holds_key AND state IN ('queued', 'active')",
           "CREATE INDEX jobs_unique_key ON %s.jobs (queue, unique_key) WHERE unique_key IS NOT NULL",
           "DELETE FROM %s.schema_migrations WHERE version > 2",
       }) {
    std::string s = sql;
    for (auto at = s.find("%s"); at != std::string::npos; at = s.find("%s")) s.replace(at, 2, q);
    exec(c, s);
  }
}

}  // namespace pgtest
