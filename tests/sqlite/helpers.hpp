#pragma once
// Test helpers for the SQLite backend: a temp directory and a raw connection.

#include <sqlite3.h>

#include <filesystem>
#include <stdexcept>
#include <string>

#include <stdlib.h>

#include <jobq/sqlite/migrations.hpp>

namespace sqlite_test {

/// A fresh directory under the temp dir, removed with everything in it.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "jobq-sqlite-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + tmpl);
    path = tmpl;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  [[nodiscard]] std::string file(const std::string& name = "jobs.db") const { return (path / name).string(); }
};

/// A plain sqlite3 connection, as an application would hold one.
struct RawDb {
  sqlite3* db = nullptr;
  explicit RawDb(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) != SQLITE_OK) {
      std::string msg = sqlite3_errmsg(db);
      sqlite3_close_v2(db);
      throw std::runtime_error("open " + path + ": " + msg);
    }
    sqlite3_busy_timeout(db, 5000);
  }
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;
  ~RawDb() { sqlite3_close_v2(db); }

  void exec(const std::string& sql) const {
    char* err = nullptr;
    if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err != nullptr ? err : "?";
      sqlite3_free(err);
      throw std::runtime_error("exec '" + sql + "': " + msg);
    }
  }

  /// The first column of the first row as text ("" when no row).
  [[nodiscard]] std::string scalar(const std::string& sql) const {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) != SQLITE_OK) {
      throw std::runtime_error("prepare '" + sql + "': " + sqlite3_errmsg(db));
    }
    std::string out;
    const int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW && sqlite3_column_text(s, 0) != nullptr) {
      out = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
    } else if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
      std::string msg = sqlite3_errmsg(db);
      sqlite3_finalize(s);
      throw std::runtime_error("step '" + sql + "': " + msg);
    }
    sqlite3_finalize(s);
    return out;
  }
};

/// Writes jobq's schema as it was at `version` (migrations 1..version), as an older jobq left it.
inline void write_old_schema(const RawDb& raw, int version) {
  raw.exec("PRAGMA journal_mode = WAL");
  raw.exec(
      "CREATE TABLE jobq_schema_version (version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
      "applied_at INTEGER NOT NULL)");
  const auto all = jobq::detail::sqlite::migrations();
  for (int v = 1; v <= version; ++v) {
    raw.exec(all[static_cast<std::size_t>(v - 1)].sql);
    raw.exec("INSERT INTO jobq_schema_version VALUES (" + std::to_string(v) + ", 'old', 0)");
  }
}

}  // namespace sqlite_test
