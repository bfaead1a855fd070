#include <memory>

#include <jobq/memory.hpp>

/// The in-memory backend: a fresh store per test case.
struct MemoryFixture {
  static constexpr const char* name = "memory";
  static constexpr bool completed_notice_has_progress = true;
  jobq::ManualClock clock;
  jobq::MemoryBackend store{{.clock = clock.fn()}};
  jobq::MemoryBackend& backend() { return store; }
  /// A MemoryBackend cannot share its state with another object, so the "second object" is this
  /// one through a second handle: the two-object cases then check one object used from both sides.
  jobq::MemoryBackend& second_backend() { return store; }
  /// A store of its own (see second_backend).
  std::unique_ptr<jobq::MemoryBackend> open_with_payload_limit(std::size_t max_payload_bytes) {
    return std::make_unique<jobq::MemoryBackend>(
        jobq::MemoryOptions{.clock = clock.fn(), .max_payload_bytes = max_payload_bytes});
  }
};

using Backends = std::tuple<MemoryFixture>;
#include "conformance/suite.hpp"
