#pragma once

// The SQLite backend: SqliteBackend (one file in WAL mode, shared by threads and processes), its
// SqliteOptions and SqliteError. The parts live in jobq/sqlite/:
//   options.hpp     SqliteOptions, SqliteSynchronous
//   error.hpp       SqliteError, and how SQLite result codes map onto jobq's error categories
//   statements.hpp  every SQL statement, with the index it relies on
//   migrations.hpp  the schema's history, oldest first, and migrate()
//   connection.hpp  statements, connections (WAL, read-only/immutable open), the writer and readers
//   rows.hpp        decoding jobs, queue settings, counts and schedules from rows
//   enqueue.hpp     unique-key rules, insert, transactional enqueue on a caller's connection
//   claim.hpp       claiming, with queue limits (groups, rate)
//   waiting.hpp     wait_for_work's waiters and poll, the per-file notice hub
//   backend.hpp     SqliteBackend: the Backend operations

#include "jobq/sqlite/backend.hpp"
#include "jobq/sqlite/error.hpp"
#include "jobq/sqlite/options.hpp"
