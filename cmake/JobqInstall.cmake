# Installs the headers and a CMake config package in share/jobq/cmake: find_package(jobq CONFIG)
# gives jobq::core and jobq::memory; each optional part (sqlite, postgres, redis, http) installs
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
