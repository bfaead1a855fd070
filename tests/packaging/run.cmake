# Driver of the packaging tests, run as `cmake -P run.cmake` with -D options:
#   MODE=install   SOURCE BUILD PREFIX [OPTIONS]: fresh configure of jobq, then cmake --install
#   MODE=consumer  SOURCE BUILD [OPTIONS] [STEPS=configure|build|run] [EXPECT_FAIL=<regex>]:
#                  fresh configure of a consumer project (and build, run its `consumer`); with
#                  EXPECT_FAIL, configure must fail and its output match the regex.
#   GENERATOR; OPTIONS as "|"-separated -D arguments passed to the configure step; PREFIX_PATH
#   (":"-separated) put in front of the environment's CMAKE_PREFIX_PATH.
cmake_minimum_required(VERSION 3.21)

if(DEFINED ENV{CMAKE_PREFIX_PATH})
  set(PREFIX_PATH "${PREFIX_PATH}:$ENV{CMAKE_PREFIX_PATH}")
endif()
string(REGEX REPLACE "::+" ":" PREFIX_PATH "${PREFIX_PATH}")
string(REGEX REPLACE "^:|:$" "" PREFIX_PATH "${PREFIX_PATH}")
set(ENV{CMAKE_PREFIX_PATH} "${PREFIX_PATH}")

string(REPLACE "|" ";" options "${OPTIONS}")
if(NOT STEPS)
  set(STEPS "configure|build|run")
endif()
string(REPLACE "|" ";" steps "${STEPS}")

function(step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}):\n${ARGN}\n${out}")
  endif()
  message(STATUS "${what}: ok")
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE "${BUILD}")
if(MODE STREQUAL "install")
  file(REMOVE_RECURSE "${PREFIX}")
  step("configure jobq" ${CMAKE_COMMAND} -S "${SOURCE}" -B "${BUILD}" -G "${GENERATOR}" ${options})
  step("install jobq" ${CMAKE_COMMAND} --install "${BUILD}" --prefix "${PREFIX}")
  file(GLOB configs RELATIVE "${PREFIX}/share/jobq/cmake" "${PREFIX}/share/jobq/cmake/*.cmake")
  list(JOIN configs " " configs)
  message(STATUS "installed share/jobq/cmake: ${configs}")
elseif(MODE STREQUAL "consumer")
  set(configure ${CMAKE_COMMAND} -S "${SOURCE}" -B "${BUILD}" -G "${GENERATOR}" ${options})
  if(EXPECT_FAIL)
    execute_process(COMMAND ${configure} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
    if(rc EQUAL 0)
      message(FATAL_ERROR "configure succeeded but should have failed:\n${out}")
    endif()
    string(REGEX REPLACE "[ \t\r\n]+" " " flat "${out}")  # CMake wraps long messages
    if(NOT flat MATCHES "${EXPECT_FAIL}")
      message(FATAL_ERROR "configure failed, but its output does not match '${EXPECT_FAIL}':\n${out}")
    endif()
    message(STATUS "configure failed as expected, output matches '${EXPECT_FAIL}'")
    return()
  endif()
  step("configure consumer" ${configure})
  if("build" IN_LIST steps)
    step("build consumer" ${CMAKE_COMMAND} --build "${BUILD}" --target consumer)
  endif()
  if("run" IN_LIST steps)
    step("run consumer" "${BUILD}/consumer")
    message(STATUS "${step_output}")
  endif()
else()
  message(FATAL_ERROR "MODE must be install or consumer (got '${MODE}')")
endif()
