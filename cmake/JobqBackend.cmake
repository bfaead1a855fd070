# jobq_backend_enabled(<NAME> <found-var> <out-var>): applies the ON/OFF/AUTO switch
# JOBQ_WITH_<NAME> once the backend's dependency lookup has set <found-var>.
function(jobq_backend_enabled name found out)
  set(mode "${JOBQ_WITH_${name}}")
  if(mode STREQUAL "OFF")
    set(${out} FALSE PARENT_SCOPE)
  elseif(${found})
    set(${out} TRUE PARENT_SCOPE)
  elseif(mode STREQUAL "ON")
    message(FATAL_ERROR "JOBQ_WITH_${name}=ON but its client library was not found")
  else()
    message(STATUS "jobq: ${name} backend skipped (client library not found)")
    set(${out} FALSE PARENT_SCOPE)
  endif()
endfunction()

# jobq_install_component(<name> <config file>): installs an optional part as find_package
# component <name>: the calling directory's include/, target jobq_<name> in its own export set
# and <config file> as jobq-<name>-config.cmake, which jobqConfig.cmake loads only on request.
function(jobq_install_component name config)
  set(dest ${CMAKE_INSTALL_DATADIR}/jobq/cmake)
  install(DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}/include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
  install(TARGETS jobq_${name} EXPORT jobq-${name}-targets)
  install(EXPORT jobq-${name}-targets NAMESPACE jobq:: DESTINATION ${dest})
  install(FILES ${config} DESTINATION ${dest} RENAME jobq-${name}-config.cmake)
endfunction()
