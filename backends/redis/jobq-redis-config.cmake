# Component "redis" of find_package(jobq COMPONENTS redis): finds hiredis the way the build did
# (pkg-config), then loads the jobq::redis target.
include(CMakeFindDependencyMacro)
find_dependency(PkgConfig)
if(NOT TARGET PkgConfig::HIREDIS)
  pkg_check_modules(HIREDIS QUIET IMPORTED_TARGET GLOBAL hiredis>=0.14)
endif()
if(TARGET PkgConfig::HIREDIS)
  include("${CMAKE_CURRENT_LIST_DIR}/jobq-redis-targets.cmake")
  set(jobq_redis_FOUND TRUE)
else()
  set(jobq_redis_FOUND FALSE)
  set(jobq_NOT_FOUND_MESSAGE "jobq component redis: hiredis not found through pkg-config")
endif()
