#pragma once
// The release: the one place it is written. CMakeLists.txt reads project(VERSION) from here.

#define JOBQ_VERSION_MAJOR 0
#define JOBQ_VERSION_MINOR 1
#define JOBQ_VERSION_PATCH 0
#define JOBQ_VERSION_STRING "0.1.0"
