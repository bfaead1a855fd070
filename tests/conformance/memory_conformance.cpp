#include <jobq/memory.hpp>

/// The in-memory backend: a fresh store per test case.
struct MemoryFixture {
  static constexpr const char* name = "memory";
  jobq::ManualClock clock;
  jobq::MemoryBackend store{{.clock = clock.fn()}};
  jobq::MemoryBackend& backend() { return store; }
};

using Backends = std::tuple<MemoryFixture>;
#include "conformance/suite.hpp"
