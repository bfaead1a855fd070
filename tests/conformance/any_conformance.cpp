// The whole suite through AnyBackend (type erasure over the memory backend): every operation,
// the new ones included, must forward unchanged.
#include <memory>

#include <jobq/any_backend.hpp>
#include <jobq/memory.hpp>

struct AnyMemoryFixture {
  static constexpr const char* name = "any(memory)";
  static constexpr bool completed_notice_has_progress = true;
  jobq::ManualClock clock;
  jobq::AnyBackend store = wrap({.clock = clock.fn()});
  jobq::AnyBackend& backend() { return store; }
  /// AnyBackend owns the MemoryBackend it wraps, and memory cannot share its state, so the
  /// "second object" is this one through a second handle (as in memory_conformance.cpp).
  jobq::AnyBackend& second_backend() { return store; }
  /// A store of its own (see second_backend).
  std::unique_ptr<jobq::AnyBackend> open_with_payload_limit(std::size_t max_payload_bytes) {
    return std::make_unique<jobq::AnyBackend>(wrap({.clock = clock.fn(), .max_payload_bytes = max_payload_bytes}));
  }

  static jobq::AnyBackend wrap(jobq::MemoryOptions o) {
    return jobq::AnyBackend{std::make_unique<jobq::MemoryBackend>(std::move(o)), "memory"};
  }
};

using Backends = std::tuple<AnyMemoryFixture>;
#include "conformance/suite.hpp"
