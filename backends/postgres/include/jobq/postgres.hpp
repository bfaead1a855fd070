#pragma once
/// @file
/// @brief The PostgreSQL backend (jobq::PostgresBackend), its options and its error type.
///
/// The parts, in jobq/postgres/:
/// - options.hpp: PostgresOptions, PostgresError, PostgresStats
/// - conninfo.hpp: connection strings checked and described without the password
/// - values.hpp: parameters and rows in PostgreSQL's text format
/// - statements.hpp: every statement's SQL, with the schema filled in once
/// - connection.hpp: libpq handles, errors, connecting, running statements
/// - pool.hpp: the connection pool and the retry policy
/// - inserts.hpp: enqueue's inserts, on a pool connection or the caller's
/// - migrations.hpp: the numbered schema migrations and migrate()
/// - wake_listener.hpp: LISTEN/NOTIFY wake-ups for wait_for_work
/// - notice_listener.hpp: the job notices of subscribe
/// - backend.hpp: PostgresBackend, the Backend operations in the concept's order

#include "jobq/postgres/backend.hpp"
#include "jobq/postgres/options.hpp"
