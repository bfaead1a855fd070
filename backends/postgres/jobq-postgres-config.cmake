# Component "postgres" of find_package(jobq): jobq::postgres and its libpq dependency.
include(CMakeFindDependencyMacro)
find_dependency(PostgreSQL)
include("${CMAKE_CURRENT_LIST_DIR}/jobq-postgres-targets.cmake")
set(jobq_postgres_FOUND TRUE)
