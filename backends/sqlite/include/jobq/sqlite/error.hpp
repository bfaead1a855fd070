#pragma once

#include <sqlite3.h>

#include <string>
#include <string_view>

#include "jobq/error.hpp"

namespace jobq {

/// @brief An error reported by SQLite, keeping its (extended) result code.
class SqliteError : public Error {
 public:
  /// @brief An error of a category with its message and SQLite's result code.
  SqliteError(ErrorCategory category, const std::string& message, int code = SQLITE_ERROR)
      : Error(category, message), code_(code) {}

  /// @brief SQLite's primary result code (SQLITE_BUSY, SQLITE_NOTADB, ...).
  [[nodiscard]] int code() const noexcept { return code_ & 0xff; }
  /// @brief SQLite's extended result code (SQLITE_BUSY_TIMEOUT, SQLITE_IOERR_WRITE, ...).
  [[nodiscard]] int extended_code() const noexcept { return code_; }

 private:
  int code_;
};

namespace detail::sqlite {

/// @brief How an SQLite result code maps onto jobq's error categories.
inline ErrorCategory category_of(int code) noexcept {
  switch (code & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return ErrorCategory::conflict;  // another connection holds the lock
    case SQLITE_CANTOPEN: return ErrorCategory::connection;
    case SQLITE_NOTADB: return ErrorCategory::invalid_argument;
    default: return ErrorCategory::backend;
  }
}

/// @brief Builds the SqliteError for a failed call on `db` (nullptr: only the code is known).
inline SqliteError error_from(sqlite3* db, int code, std::string_view what) {
  std::string msg = "sqlite: ";
  msg += what;
  msg += ": ";
  msg += db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(code);
  const int primary = code & 0xff;
  if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED) {
    msg += " (another connection held the lock for longer than the busy timeout)";
  } else if (primary == SQLITE_NOTADB) {
    msg += " (the file exists but is not an SQLite database)";
  } else if (primary == SQLITE_CORRUPT) {
    msg += " (the database file is corrupt: restore it from a backup; PRAGMA integrity_check lists the damage)";
  } else if (primary == SQLITE_READONLY) {
    msg += " (the database file, its directory or its mount is read-only)";
  }
  return SqliteError(category_of(code), msg, code);
}

}  // namespace detail::sqlite

}  // namespace jobq
