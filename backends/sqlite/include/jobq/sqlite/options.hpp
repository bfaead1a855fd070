#pragma once

#include <cstddef>
#include <string>
#include <utility>

#include "jobq/error.hpp"
#include "jobq/job.hpp"
#include "jobq/time.hpp"

namespace jobq {

/// @brief SQLite's `PRAGMA synchronous` levels (see SqliteOptions::synchronous).
enum class SqliteSynchronous { off, normal, full, extra };

/// @brief Options of SqliteBackend.
struct SqliteOptions {
  ClockFn clock = system_clock();  ///< where time comes from (tests pass a ManualClock)
  /// How long a write waits for another connection's (usually another process's) write lock
  /// before it fails with a `conflict` SqliteError ("database is locked").
  Millis busy_timeout{5'000};
  /// How often wait_for_work looks at the file for jobs that other processes enqueued (or that
  /// came due); enqueues in this process wake waiters at once without it.
  Millis poll_interval{100};
  /// `normal` (default): in WAL mode every commit is atomic and the file is never corrupted,
  /// but the last transactions before a power loss or OS crash may roll back (a process crash
  /// loses nothing). `full`: fsync on every commit, durable across power loss, slower.
  SqliteSynchronous synchronous = SqliteSynchronous::normal;
  /// Reader connections kept open between reads (get, list, counts, polling).
  std::size_t max_idle_readers = 4;
  /// Largest serialized payload enqueue accepts (InvalidArgument above it, nothing written).
  std::size_t max_payload_bytes = default_max_payload_bytes;
  /// Page size of a database file this backend creates (a power of two, 512 to 65536); an
  /// existing file keeps its own. Every commit writes each page it touched whole to the WAL
  /// (and a checkpoint later writes and fsyncs them again), and a single enqueue or claim
  /// touches about six pages: 1 KiB pages write a quarter of the bytes of SQLite's default 4 KiB.
  std::size_t page_size = 1024;
  /// Open an existing file for inspection only: nothing is created or migrated, and every
  /// write fails with a clear error. Chosen by itself when the file cannot be written (a
  /// read-only file, directory or mount), so `jobq queues` works on a read-only copy.
  bool read_only = false;
  /// false: open only a file that already holds a jobq store. A missing file, or one without
  /// jobq's tables, is a `not_found` error and is left as it was (no file, no WAL mode, no
  /// tables): what tools that only look at a store use, so a mistyped path creates nothing.
  bool create = true;
};


namespace detail::sqlite {

/// @brief `options` for a backend on `path`, checked: InvalidArgument on a path that names no
/// file or an option out of range.
inline SqliteOptions checked(const std::string& path, SqliteOptions options) {
  if (path.empty() || path == ":memory:" || path.starts_with("file:")) {
    throw InvalidArgument(
        "sqlite: path must name a database file (got '" + path +
        "'); an in-memory database is private to one connection, use MemoryBackend instead");
  }
  if (!options.clock) throw InvalidArgument("sqlite: options.clock is empty");
  if (options.poll_interval <= Millis{0}) throw InvalidArgument("sqlite: poll_interval must be positive");
  if (options.busy_timeout < Millis{0}) throw InvalidArgument("sqlite: busy_timeout must not be negative");
  if (options.page_size < 512 || options.page_size > 65536 || (options.page_size & (options.page_size - 1)) != 0) {
    throw InvalidArgument("sqlite: page_size must be a power of two from 512 to 65536 (got " +
                          std::to_string(options.page_size) + ")");
  }
  return options;
}

}  // namespace detail::sqlite

}  // namespace jobq
