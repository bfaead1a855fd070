// The users table on SQLite: the application's own sqlite3 connection to the jobs' database
// file; jobq::SqliteBackend::enqueue(sqlite3*, job) writes the jobs inside its transaction.
#pragma once

#include <sqlite3.h>

#include <mutex>
#include <string>

#include <jobq/sqlite.hpp>

#include "users.hpp"

namespace service {

/// @brief Users in the SQLite file the jobs live in.
class SqliteUsers final : public Users {
 public:
  /// @brief Opens a connection of our own to `jobs`' file and creates the users table.
  explicit SqliteUsers(jobq::SqliteBackend& jobs) : jobs_(jobs) {
    if (sqlite3_open_v2(jobs.path().c_str(), &db_, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
      const std::string why = db_ != nullptr ? sqlite3_errmsg(db_) : "out of memory";
      sqlite3_close(db_);
      throw DatabaseUnavailable("users: cannot open " + jobs.path() + ": " + why);
    }
    sqlite3_busy_timeout(db_, 5'000);  // wait for the worker's writes instead of failing at once
    exec(R"sql(
      CREATE TABLE IF NOT EXISTS users (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        email      TEXT NOT NULL UNIQUE,
        name       TEXT NOT NULL,
        job_ids    TEXT NOT NULL DEFAULT '[]',  -- JSON array
        created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
      ))sql");
  }
  SqliteUsers(const SqliteUsers&) = delete;
  SqliteUsers& operator=(const SqliteUsers&) = delete;
  ~SqliteUsers() override { sqlite3_close(db_); }

  User create(const std::string& email, const std::string& name, const JobsFor& jobs_for) override {
    std::lock_guard lock(mutex_);  // one connection: one request at a time
    // IMMEDIATE takes the file's write lock now, so the transaction cannot fail half-way for
    // want of it. Any exception below rolls everything back: the user and the jobs.
    Transaction tx(*this, "BEGIN IMMEDIATE");
    User user{.id = 0, .email = email, .name = name, .jobs = {}};
    {
      Statement insert(*this, "INSERT INTO users (email, name) VALUES (?1, ?2)");
      insert.bind(1, email).bind(2, name);
      if (const int rc = insert.step(); rc == SQLITE_CONSTRAINT) {
        throw EmailTaken("a user with email " + email + " already exists");
      } else if (rc != SQLITE_DONE) {
        fail("insert user");
      }
      user.id = sqlite3_last_insert_rowid(db_);
    }
    for (const auto& job : jobs_for(user)) user.jobs.push_back(jobs_.enqueue(db_, job).id);
    {
      Statement update(*this, "UPDATE users SET job_ids = ?1 WHERE id = ?2");
      update.bind(1, nlohmann::json(user.jobs).dump()).bind(2, user.id);
      if (update.step() != SQLITE_DONE) fail("record job ids");
    }
    tx.commit();
    return user;
  }

  std::optional<User> find(long long id) override {
    std::lock_guard lock(mutex_);
    Statement select(*this, "SELECT email, name, job_ids FROM users WHERE id = ?1");
    select.bind(1, id);
    const int rc = select.step();
    if (rc == SQLITE_DONE) return std::nullopt;
    if (rc != SQLITE_ROW) fail("read user");
    return User{.id = id, .email = select.text(0), .name = select.text(1),
                .jobs = nlohmann::json::parse(select.text(2)).get<std::vector<jobq::JobId>>()};
  }

 private:
  /// @brief BEGIN …; rolled back on destruction unless committed.
  class Transaction {
   public:
    Transaction(SqliteUsers& u, const char* begin) : u_(u) { u_.exec(begin); }
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    ~Transaction() {
      if (sqlite3_get_autocommit(u_.db_) == 0) sqlite3_exec(u_.db_, "ROLLBACK", nullptr, nullptr, nullptr);
    }
    void commit() { u_.exec("COMMIT"); }

   private:
    SqliteUsers& u_;
  };

  /// @brief A prepared statement, finalized on destruction.
  class Statement {
   public:
    Statement(SqliteUsers& u, const char* sql) : u_(u) {
      if (sqlite3_prepare_v2(u_.db_, sql, -1, &stmt_, nullptr) != SQLITE_OK) u_.fail("prepare");
    }
    Statement(const Statement&) = delete;
    Statement& operator=(const Statement&) = delete;
    ~Statement() { sqlite3_finalize(stmt_); }
    Statement& bind(int i, const std::string& v) {
      sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
      return *this;
    }
    Statement& bind(int i, long long v) {
      sqlite3_bind_int64(stmt_, i, v);
      return *this;
    }
    int step() { return sqlite3_step(stmt_) & 0xff; }  // the primary result code
    std::string text(int col) { return reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col)); }

   private:
    SqliteUsers& u_;
    sqlite3_stmt* stmt_ = nullptr;
  };

  void exec(const char* sql) {
    if (sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) != SQLITE_OK) fail(sql);
  }

  /// @brief Throws for the connection's last error: busy or I/O trouble is worth a retry (503).
  [[noreturn]] void fail(const std::string& what) {
    const std::string msg = "users: " + what + ": " + sqlite3_errmsg(db_);
    switch (sqlite3_errcode(db_)) {
      case SQLITE_BUSY:
      case SQLITE_LOCKED:
      case SQLITE_IOERR:
      case SQLITE_CANTOPEN:
      case SQLITE_FULL: throw DatabaseUnavailable(msg);
      default: throw std::runtime_error(msg);
    }
  }

  jobq::SqliteBackend& jobs_;
  sqlite3* db_ = nullptr;
  std::mutex mutex_;
};

}  // namespace service
