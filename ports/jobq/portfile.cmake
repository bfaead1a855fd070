# Overlay port of jobq: builds the jobq source tree this port lives in (ports/jobq/ -> ../..),
# or the one named by the environment variable JOBQ_SOURCE_PATH. Use it with
#   vcpkg install jobq[sqlite,postgres] --overlay-ports=<jobq>/ports
# (in manifest mode: "overlay-ports" in vcpkg-configuration.json). A release port would use
# vcpkg_from_github/vcpkg_from_git with a REF and SHA512 instead of the local tree.
set(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../..")
if(DEFINED ENV{JOBQ_SOURCE_PATH})
  set(SOURCE_PATH "$ENV{JOBQ_SOURCE_PATH}")
endif()
get_filename_component(SOURCE_PATH "${SOURCE_PATH}" ABSOLUTE)
if(NOT EXISTS "${SOURCE_PATH}/include/jobq/jobq.hpp")
  message(FATAL_ERROR "jobq sources not found in ${SOURCE_PATH} (set JOBQ_SOURCE_PATH)")
endif()

# Header-only: one configuration is enough, nothing is compiled.
set(VCPKG_BUILD_TYPE release)

# Each feature turns its part ON, every other one OFF (never AUTO, so the result does not depend
# on what else happens to be installed).
vcpkg_check_features(OUT_FEATURE_OPTIONS FEATURE_OPTIONS
  FEATURES
    sqlite   JOBQ_WITH_SQLITE
    postgres JOBQ_WITH_POSTGRES
    redis    JOBQ_WITH_REDIS
    http     JOBQ_WITH_HTTP
)

if("redis" IN_LIST FEATURES)
  # jobq finds hiredis with pkg_check_modules.
  vcpkg_find_acquire_program(PKGCONFIG)
  set(ENV{PKG_CONFIG} "${PKGCONFIG}")
endif()

vcpkg_cmake_configure(
  SOURCE_PATH "${SOURCE_PATH}"
  OPTIONS
    ${FEATURE_OPTIONS}
    -DJOBQ_BUILD_TESTS=OFF
    -DJOBQ_BUILD_EXAMPLES=OFF
    -DJOBQ_BUILD_BENCH=OFF
    -DJOBQ_BUILD_TOOLS=OFF
    -DJOBQ_INSTALL=ON
)
vcpkg_cmake_install()
vcpkg_cmake_config_fixup(PACKAGE_NAME jobq CONFIG_PATH share/jobq/cmake)

file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
