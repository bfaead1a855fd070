# A stand-in for cpp-httplib's upstream CMake config (httplib::httplib), found by the consumer of
# packaging_http_found_as_built although the jobq install found cpp-httplib through pkg-config.
if(NOT TARGET httplib::httplib)
  add_library(httplib::httplib INTERFACE IMPORTED)
endif()
set(httplib_FOUND TRUE)
