#pragma once

// SQLite handles as the backend uses them: prepared statements, connections (WAL, busy timeout,
// the read-only and immutable opens) and the pool of one writer under a mutex and idle readers,
// with the transactions run on them.

#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "jobq/error.hpp"
#include "jobq/sqlite/error.hpp"
#include "jobq/sqlite/options.hpp"
#include "jobq/sqlite/statements.hpp"

namespace jobq::detail::sqlite {

/// @brief A prepared statement in use: binds, steps, reads columns, and resets on destruction
/// (or finalizes, when it owns a one-off statement on a caller's connection).
class Stmt {
 public:
  /// @brief Wraps `stmt` of `db`; `what` (a string literal) names the operation in errors.
  Stmt(sqlite3* db, sqlite3_stmt* stmt, std::string_view what, bool owned) noexcept
      : db_(db), stmt_(stmt), what_(what), owned_(owned) {}
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  Stmt(Stmt&& o) noexcept
      : db_(o.db_), stmt_(std::exchange(o.stmt_, nullptr)), what_(o.what_), owned_(o.owned_) {}
  Stmt& operator=(Stmt&&) = delete;
  ~Stmt() {
    if (stmt_ == nullptr) return;
    if (owned_) {
      sqlite3_finalize(stmt_);
    } else {
      sqlite3_reset(stmt_);
      sqlite3_clear_bindings(stmt_);
    }
  }

  /// @brief Binds parameter ?i (1-based); the overloads below bind text, NULL or an optional.
  Stmt& bind(int i, std::int64_t v) { return check(sqlite3_bind_int64(stmt_, i, v)); }
  Stmt& bind(int i, int v) { return check(sqlite3_bind_int64(stmt_, i, v)); }
  Stmt& bind(int i, std::string_view v) {
    return check(sqlite3_bind_text64(stmt_, i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
  }
  Stmt& bind(int i, const char* v) { return bind(i, std::string_view(v)); }
  Stmt& bind(int i, const std::string& v) { return bind(i, std::string_view(v)); }
  Stmt& bind_null(int i) { return check(sqlite3_bind_null(stmt_, i)); }
  template <class T>
  Stmt& bind(int i, const std::optional<T>& v) {
    return v ? bind(i, *v) : bind_null(i);
  }

  /// @brief Runs one step: true when a row is available, false when done.
  bool step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw error_from(db_, sqlite3_extended_errcode(db_), what_);
  }

  /// @brief Steps to the end (a statement without rows); returns the rows changed.
  int run() {
    while (step()) {
    }
    return sqlite3_changes(db_);
  }

  /// @brief The rowid of the connection's last INSERT (outside triggers) that completed.
  [[nodiscard]] std::int64_t last_insert_rowid() const { return sqlite3_last_insert_rowid(db_); }

  /// @brief Resets the statement early (its RETURNING rows all read), keeping it prepared.
  void reset() { sqlite3_reset(stmt_); }

  /// @brief Column readers for the current row (0-based).
  [[nodiscard]] bool is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  [[nodiscard]] std::int64_t integer(int col) const { return sqlite3_column_int64(stmt_, col); }
  [[nodiscard]] std::string text(int col) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
    return p == nullptr ? std::string() : std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, col)));
  }

 private:
  Stmt& check(int rc) {
    if (rc != SQLITE_OK) throw error_from(db_, rc, what_);
    return *this;
  }

  sqlite3* db_;
  sqlite3_stmt* stmt_;
  std::string_view what_;  // always a string literal
  bool owned_;
};

/// @brief Prepares a one-off statement on a connection jobq does not own.
inline Stmt prepare_once(sqlite3* db, std::string_view sql, std::string_view what) {
  sqlite3_stmt* s = nullptr;
  const int rc = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &s, nullptr);
  if (rc != SQLITE_OK) {
    auto err = error_from(db, rc, what);
    sqlite3_finalize(s);
    throw err;
  }
  return Stmt(db, s, what, true);
}

/// @brief One open connection with its prepared statements (prepared once, kept by SQL text).
/// Used by one thread at a time, hence SQLITE_OPEN_NOMUTEX.
class Connection {
 public:
  /// @brief Opens `path` in WAL mode with the options' busy timeout and synchronous level.
  Connection(const std::string& path, const SqliteOptions& opt) {
    if (opt.read_only) {
      open_read_only(path, opt);
      return;
    }
    const int rc = sqlite3_open_v2(path.c_str(), &db_,
                                   SQLITE_OPEN_READWRITE | (opt.create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOMUTEX,
                                   nullptr);
    if (rc != SQLITE_OK) {
      std::string msg = "sqlite: cannot open database '" + path + "': " +
                        (db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc));
      auto category = category_of(rc);
      if ((rc & 0xff) == SQLITE_CANTOPEN && !opt.create && !std::filesystem::exists(path)) {
        msg = "sqlite: no jobq store at '" + path + "': the file does not exist (nothing was created)";
        category = ErrorCategory::not_found;
      } else if ((rc & 0xff) == SQLITE_CANTOPEN) {
        msg += " (does its directory exist and is it writable?)";
      }
      sqlite3_close_v2(db_);
      db_ = nullptr;
      throw SqliteError(category, msg, rc);
    }
    if (sqlite3_db_readonly(db_, "main") == 1) {  // SQLite fell back to read-only: not writable
      close();
      throw SqliteError(ErrorCategory::backend, "sqlite: database '" + path + "' is read-only", SQLITE_READONLY);
    }
    try {
      sqlite3_extended_result_codes(db_, 1);
      wait_when_busy(opt.busy_timeout);
      // The first statement reads the header: a file that is not a database fails here.
      if (!opt.create) refuse_unless_jobq_store(path);
      std::string mode;
      // Before WAL mode is set: it only takes effect on a file that has no page yet.
      exec(sql::with_number(sql::set_page_size, static_cast<std::int64_t>(opt.page_size)).c_str(), "set page_size");
      {
        auto s = prepare(sql::set_wal_mode, "open database: set WAL journal mode");
        if (s.step()) mode = s.text(0);
      }
      if (mode != "wal") {
        throw SqliteError(ErrorCategory::backend,
                          "sqlite: '" + path + "' could not be put in WAL journal mode (got '" +
                              mode + "'); jobq needs WAL for concurrent readers and processes");
      }
      exec(sql::set_synchronous[static_cast<std::size_t>(opt.synchronous)].data(), "set synchronous");
      // RETURNING and IN (subquery) build small ephemeral tables; on disk (Debian's default)
      // they cost a temp file per claim, about 10x the claim itself.
      exec(sql::set_temp_store_memory.data(), "set temp_store");
      exec(sql::set_wal_size_limit.data(), "set journal_size_limit");
      // SQLite checkpoints the WAL into the file (and fsyncs both) once it holds 1000 pages: 4 MB
      // at the default page size. Kept at about 4 MB whatever the page size, so smaller pages
      // mean fewer bytes per commit, not more checkpoints (each costs two fsyncs).
      if (auto s = prepare(sql::read_page_size, "read page_size"); s.step()) {
        sqlite3_wal_autocheckpoint(db_, static_cast<int>(std::max<std::int64_t>(1000, 4'096'000 / std::max<std::int64_t>(s.integer(0), 512))));
      }
    } catch (const SqliteError& e) {
      close();
      if (e.code() == SQLITE_NOTADB || e.code() == SQLITE_BUSY) {
        throw SqliteError(e.category(), std::string(e.what()) + " [database '" + path + "']", e.extended_code());
      }
      throw;
    } catch (...) {
      close();
      throw;
    }
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() { close(); }

  /// @brief The raw handle.
  [[nodiscard]] sqlite3* handle() const noexcept { return db_; }

  /// @brief The cached statement for `sql`, prepared on first use.
  Stmt query(std::string_view sql, std::string_view what) {
    auto it = cache_.find(sql);
    if (it == cache_.end()) {
      sqlite3_stmt* s = nullptr;
      const int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                                        SQLITE_PREPARE_PERSISTENT, &s, nullptr);
      if (rc != SQLITE_OK) {
        auto err = error_from(db_, rc, what);
        sqlite3_finalize(s);
        throw err;
      }
      it = cache_.emplace(std::string(sql), s).first;
    }
    return Stmt(db_, it->second, what, false);
  }

  /// @brief Runs SQL (NUL-terminated, maybe several statements) without keeping it: schema
  /// setup, migrations.
  void exec(const char* sql, std::string_view what) {
    char* err = nullptr;
    const int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
    sqlite3_free(err);
    if (rc != SQLITE_OK) throw error_from(db_, sqlite3_extended_errcode(db_), what);
  }

  /// @brief Rolls back an open transaction, if any; never throws (used on error paths).
  void rollback() noexcept {
    if (db_ != nullptr && sqlite3_get_autocommit(db_) == 0) {
      sqlite3_exec(db_, sql::rollback.data(), nullptr, nullptr, nullptr);
    }
  }

 private:
  // Before anything changes the file (page size, WAL mode): a file without jobq's tables is
  // left exactly as it was.
  void refuse_unless_jobq_store(const std::string& path) {
    auto s = prepare(sql::has_version_table, "open database: look for jobq's tables");
    if (s.step() && s.integer(0) == 0) {
      throw SqliteError(ErrorCategory::not_found,
                        "sqlite: no jobq store at '" + path + "': the file holds no jobq tables (nothing was changed)",
                        SQLITE_NOTFOUND);
    }
  }

  // SQLITE_OPEN_READONLY; if even reading fails because the WAL index (-shm) cannot be made
  // (a read-only directory or mount), again as immutable: nobody can be writing such a file.
  void open_read_only(const std::string& path, const SqliteOptions& opt) {
    std::string uri = "file:";
    for (const char ch : path) {
      if (ch == '%' || ch == '?' || ch == '#') {
        static constexpr char hex[] = "0123456789abcdef";
        uri += '%';
        uri += hex[static_cast<unsigned char>(ch) >> 4];
        uri += hex[static_cast<unsigned char>(ch) & 0xf];
      } else {
        uri += ch;
      }
    }
    for (const char* mode : {"?mode=ro", "?mode=ro&immutable=1"}) {
      const int rc = sqlite3_open_v2((uri + mode).c_str(), &db_, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX,
                                     nullptr);
      if (rc != SQLITE_OK) {
        std::string msg = "sqlite: cannot open database '" + path + "' read-only: " +
                          (db_ != nullptr ? sqlite3_errmsg(db_) : sqlite3_errstr(rc));
        auto category = category_of(rc);
        if ((rc & 0xff) == SQLITE_CANTOPEN && !std::filesystem::exists(path)) {
          msg = "sqlite: no jobq store at '" + path + "': the file does not exist";
          category = ErrorCategory::not_found;
        }
        close();
        throw SqliteError(category, msg, rc);
      }
      sqlite3_extended_result_codes(db_, 1);
      wait_when_busy(opt.busy_timeout);
      const int probe = sqlite3_exec(db_, sql::probe_schema.data(), nullptr, nullptr, nullptr);
      if (probe == SQLITE_OK) {
        try {
          refuse_unless_jobq_store(path);
        } catch (...) {
          close();
          throw;
        }
        return;
      }
      auto err = error_from(db_, sqlite3_extended_errcode(db_), "open database read-only");
      close();
      if ((probe & 0xff) != SQLITE_CANTOPEN) throw err;
    }
    throw SqliteError(ErrorCategory::backend, "sqlite: cannot read database '" + path + "' read-only", SQLITE_CANTOPEN);
  }

  Stmt prepare(std::string_view sql, std::string_view what) {
    return prepare_once(db_, sql, what);
  }

  // SQLite's own busy timeout sleeps in steps growing to 100 ms, so a process waiting for the
  // file lock keeps missing the short gaps between another busy process's transactions and
  // starves until it times out (two objects on one file, 8 threads, a loaded machine). Polling
  // every 50-500 us, jittered so waiters do not move in step, catches those gaps.
  void wait_when_busy(Millis timeout) {
    busy_timeout_ = timeout;
    sqlite3_busy_handler(db_, timeout > Millis{0} ? &Connection::on_busy : nullptr, this);
  }

  static int on_busy(void* self, int attempt) noexcept {
    auto& c = *static_cast<Connection*>(self);
    const auto now = std::chrono::steady_clock::now();
    if (attempt == 0) c.busy_since_ = now;
    if (now - c.busy_since_ >= c.busy_timeout_) return 0;
    c.busy_jitter_ = c.busy_jitter_ * 6364136223846793005ULL + 1442695040888963407ULL;
    std::this_thread::sleep_for(std::chrono::microseconds(50 + (c.busy_jitter_ >> 33) % 450));
    return 1;
  }

  void close() noexcept {
    for (auto& [sql, s] : cache_) sqlite3_finalize(s);
    cache_.clear();
    if (db_ != nullptr) sqlite3_close_v2(db_);
    db_ = nullptr;
  }

  sqlite3* db_ = nullptr;
  Millis busy_timeout_{0};
  std::chrono::steady_clock::time_point busy_since_{};
  std::uint64_t busy_jitter_ = reinterpret_cast<std::uintptr_t>(this);
  // Found by the statement's text without copying it (a string_view constant or a built text).
  struct TextHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view text) const noexcept { return std::hash<std::string_view>{}(text); }
  };
  std::unordered_map<std::string, sqlite3_stmt*, TextHash, std::equal_to<>> cache_;
};

/// @brief Runs SQL (NUL-terminated) on a connection jobq does not own.
inline void exec_on(sqlite3* db, const char* sql, std::string_view what) {
  const int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) throw error_from(db, sqlite3_extended_errcode(db), what);
}

/// @brief The connections of one SqliteBackend: one writer, used under a mutex, and a small pool
/// of reader connections.
///
/// SQLite admits one writer per file at a time anyway; serialising this process's writers on a
/// mutex means threads never meet in SQLite's sleeping busy handler (which backs off in steps of
/// up to 100 ms), so only other processes ever wait on the file lock. WAL readers do not block
/// the writer, so reads use pooled connections of their own.
class ConnectionPool {
 public:
  /// @brief Opens the writer on `path`; a file that cannot be written is opened for inspection
  /// instead, and `opt.read_only` set. Both are the backend's and outlive the pool.
  ConnectionPool(const std::string& path, SqliteOptions& opt) : path_(path), opt_(opt) {
    try {
      writer_ = std::make_unique<Connection>(path, opt);
    } catch (const SqliteError& e) {
      if (e.code() != SQLITE_READONLY) throw;
      opt.read_only = true;
      writer_ = std::make_unique<Connection>(path, opt);
    }
  }
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  /// @brief The writer's raw handle.
  [[nodiscard]] sqlite3* writer_handle() const noexcept { return writer_->handle(); }

  /// @brief Runs f(connection) in a BEGIN IMMEDIATE transaction on the writer; rolls back if it
  /// throws. `what` names the operation in errors.
  template <class F>
  auto write(std::string_view what, F&& f) -> std::invoke_result_t<F&, Connection&> {
    if (opt_.read_only) {
      throw SqliteError(ErrorCategory::backend,
                        "sqlite: " + std::string(what) + ": database '" + path_ + "' is open read-only", SQLITE_READONLY);
    }
    std::lock_guard lock(write_mutex_);
    auto& c = *writer_;
    c.query(sql::begin_immediate, what).run();
    try {
      if constexpr (std::is_void_v<decltype(f(c))>) {
        f(c);
        c.query(sql::commit, what).run();
      } else {
        auto r = f(c);
        c.query(sql::commit, what).run();
        return r;
      }
    } catch (...) {
      c.rollback();
      throw;
    }
  }

  /// @brief Runs f(connection) on a pooled reader connection (opened when none is idle).
  template <class F>
  auto read(std::string_view, F&& f) -> std::invoke_result_t<F&, Connection&> {
    std::unique_ptr<Connection> c;
    {
      std::lock_guard lock(pool_mutex_);
      if (!readers_.empty()) {
        c = std::move(readers_.back());
        readers_.pop_back();
      }
    }
    if (!c) c = std::make_unique<Connection>(path_, opt_);
    struct Return {
      ConnectionPool* self;
      std::unique_ptr<Connection>& c;
      ~Return() {
        c->rollback();
        std::lock_guard lock(self->pool_mutex_);
        if (self->readers_.size() < self->opt_.max_idle_readers) self->readers_.push_back(std::move(c));
      }
    } give_back{this, c};
    return f(*c);
  }

  /// @brief The writer outside any transaction, for migrating the schema (migrations.hpp)
  /// while it holds lock_writer(), or before any other thread has the pool.
  [[nodiscard]] Connection& writer() noexcept { return *writer_; }
  /// @brief Holds the write mutex, as write() does.
  [[nodiscard]] std::unique_lock<std::mutex> lock_writer() { return std::unique_lock(write_mutex_); }

  /// @brief Replaces the writer by a fresh connection (one that has not parsed the old schema),
  /// holding lock_writer().
  void reopen_writer() { writer_ = std::make_unique<Connection>(path_, opt_); }

 private:
  const std::string& path_;
  const SqliteOptions& opt_;

  std::mutex write_mutex_;  // serialises this process's writers on writer_
  std::unique_ptr<Connection> writer_;

  std::mutex pool_mutex_;
  std::vector<std::unique_ptr<Connection>> readers_;
};

}  // namespace jobq::detail::sqlite
