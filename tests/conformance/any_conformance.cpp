// The whole suite through AnyBackend (type erasure over the memory backend): every operation,
// the new ones included, must forward unchanged.
#include <memory>

#include <jobq/any_backend.hpp>
#include <jobq/memory.hpp>

struct AnyMemoryFixture {
  static constexpr const char* name = "any(memory)";
  jobq::ManualClock clock;
  jobq::AnyBackend store{std::make_unique<jobq::MemoryBackend>(jobq::MemoryOptions{.clock = clock.fn()}), "memory"};
  jobq::AnyBackend& backend() { return store; }
};

using Backends = std::tuple<AnyMemoryFixture>;
#include "conformance/suite.hpp"
