# Installs the headers, pkg-config files and a CMake config package in share/jobq/cmake:
# find_package(jobq CONFIG) gives jobq::core and jobq::memory; each optional part (sqlite, postgres, redis, http) installs
# its own export set and jobq-<name>-config.cmake next to them from its own CMakeLists.txt, and
# jobqConfig.cmake loads one only when that component is requested (see cmake/jobqConfig.cmake.in).
include(CMakePackageConfigHelpers)

install(DIRECTORY include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY backends/memory/include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS jobq_core jobq_memory EXPORT jobq-core-targets)
install(EXPORT jobq-core-targets NAMESPACE jobq:: DESTINATION ${CMAKE_INSTALL_DATADIR}/jobq/cmake)

configure_package_config_file(cmake/jobqConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/jobqConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_DATADIR}/jobq/cmake)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/jobqConfigVersion.cmake
  COMPATIBILITY SameMinorVersion ARCH_INDEPENDENT)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/jobqConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/jobqConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_DATADIR}/jobq/cmake)

# pkg-config files in <libdir>/pkgconfig, relocatable (prefix from ${pcfiledir}): jobq (core and
# memory) and one per installed part, e.g. `pkg-config --cflags --libs jobq-sqlite`. Header-only,
# so Libs holds only what the headers need; date has no .pc file, hence -ldate-tz directly.
set(jobq_pc_dir ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
if(IS_ABSOLUTE "${jobq_pc_dir}")
  set(jobq_pc_to_prefix "${CMAKE_INSTALL_PREFIX}")
else()
  file(RELATIVE_PATH jobq_pc_to_prefix "/jobq-prefix/${jobq_pc_dir}" "/jobq-prefix")
  string(REGEX REPLACE "/$" "" jobq_pc_to_prefix "${jobq_pc_to_prefix}")
endif()
# jobq_pkg_config(<file stem> <description> <requires> <libs>)
function(jobq_pkg_config name description requires libs)
  set(jobq_pc_name ${name})
  set(jobq_pc_description "${description}")
  set(jobq_pc_requires "${requires}")
  set(jobq_pc_libs "${libs}")
  configure_file(${PROJECT_SOURCE_DIR}/cmake/jobq.pc.in ${PROJECT_BINARY_DIR}/pkgconfig/${name}.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/pkgconfig/${name}.pc DESTINATION ${jobq_pc_dir})
endfunction()
jobq_pkg_config(jobq "${PROJECT_DESCRIPTION} (core, memory backend)" "nlohmann_json >= 3.10" "-ldate-tz -pthread")
set(jobq_pc_parts
  "sqlite|SQLite backend|sqlite3 >= 3.35"
  "postgres|PostgreSQL backend|libpq"
  "redis|Redis backend|hiredis >= 0.14"
  "http|metrics endpoint and dashboard|cpp-httplib")
foreach(part IN LISTS jobq_pc_parts)
  string(REPLACE "|" ";" part "${part}")
  list(GET part 0 name)
  list(GET part 1 what)
  list(GET part 2 needs)
  if(TARGET jobq_${name})
    jobq_pkg_config(jobq-${name} "jobq: ${what}" "jobq = ${PROJECT_VERSION}, ${needs}" "")
  endif()
endforeach()
