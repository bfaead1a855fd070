# Component "sqlite" of find_package(jobq COMPONENTS sqlite): jobq::sqlite and SQLite3 (CMake's
# FindSQLite3, as the build used), which must be >= 3.35 for UPDATE ... RETURNING.
include(CMakeFindDependencyMacro)
find_dependency(SQLite3)
if(SQLite3_VERSION VERSION_LESS 3.35)
  set(jobq_sqlite_FOUND FALSE)
  set(jobq_NOT_FOUND_MESSAGE "jobq component sqlite: needs SQLite >= 3.35, found ${SQLite3_VERSION}")
  return()
endif()
include("${CMAKE_CURRENT_LIST_DIR}/jobq-sqlite-targets.cmake")
set(jobq_sqlite_FOUND TRUE)
