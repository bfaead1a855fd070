#include <catch2/catch.hpp>

#include <jobq/any_backend.hpp>
#include <jobq/jobq.hpp>
#include <jobq/memory.hpp>
#include <jobq/open.hpp>

namespace {

// A backend with everything but queues() (ForwardingBackend forwards the Backend operations
// only): AnyBackend must refuse to list its queues clearly.
class NoListing : public jobq::ForwardingBackend<NoListing> {
 public:
  explicit NoListing(jobq::ClockFn clock) : inner_({std::move(clock)}) {}
  jobq::MemoryBackend& wrapped() const { return inner_; }

 private:
  mutable jobq::MemoryBackend inner_;  // mutable: wrapped() is const, for now()
};

}  // namespace

TEST_CASE("AnyBackend forwards every operation to the backend it owns") {
  jobq::ManualClock clock;
  jobq::AnyBackend any(std::make_unique<jobq::MemoryBackend>(jobq::MemoryOptions{clock.fn()}), "memory");
  CHECK(any.kind() == "memory");
  REQUIRE(any.target<jobq::MemoryBackend>() != nullptr);
  CHECK(any.target<NoListing>() == nullptr);
  CHECK(any.now() == clock.now());

  jobq::Queue q{any, "emails"};
  const auto a = q.enqueue("send", {{"to", "a"}}, {.max_attempts = 1});
  const auto b = q.enqueue("send", {{"to", "b"}}, {.unique_key = "k"});
  CHECK(q.enqueue("send", {{"to", "c"}}, {.unique_key = "k"}) == b);
  CHECK(q.counts().queued == 2);
  CHECK(any.target<jobq::MemoryBackend>()->counts("emails").queued == 2);  // same store

  auto claimed = any.claim({{"emails"}, 2, jobq::Millis{1000}});
  REQUIRE(claimed.size() == 2);
  CHECK(any.set_progress(claimed[0].id, claimed[0].lease_token, 50, "half"));
  CHECK(any.extend_lease(claimed[0].id, claimed[0].lease_token, jobq::Millis{1000}));
  CHECK(any.fail({a, claimed[0].lease_token, "boom", std::nullopt}) == jobq::FailOutcome::dead);
  CHECK(any.complete_many(std::vector<jobq::Completion>{{b, claimed[1].lease_token, 1}}) == std::vector<bool>{true});
  CHECK(q.list(jobq::JobState::dead).size() == 1);
  CHECK(any.can_list_queues());
  CHECK(any.queues() == std::vector<std::string>{"emails"});
  CHECK(q.redrive(a));
  CHECK(q.cancel(a));
  q.pause();
  CHECK(q.is_paused());
  q.resume();
  clock.advance(std::chrono::hours(48));
  CHECK(q.prune() == 2);
  CHECK(any.recover_expired() == jobq::Recovered{});
  CHECK_FALSE(any.get(a));


  // a Worker runs on it like on any backend
  q.enqueue("send", {{"to", "d"}});
  jobq::Worker w{any, {.queues = {"emails"}, .poll_interval = jobq::Millis{10}}};
  w.handle("send", [](const nlohmann::json&, jobq::JobContext&) {});
  CHECK(w.run_until_idle(jobq::Millis{10'000}));
  CHECK(q.counts().completed == 1);

  // moving keeps the store
  jobq::AnyBackend moved = std::move(any);
  CHECK(moved.counts("emails").completed == 1);
}

TEST_CASE("AnyBackend over a backend without queues() says listing is not supported") {
  jobq::ManualClock clock;
  jobq::AnyBackend any(std::make_unique<NoListing>(clock.fn()), "custom");
  CHECK_FALSE(any.can_list_queues());
  try {
    any.queues();
    FAIL("queues() should throw");
  } catch (const jobq::Error& e) {
    CHECK(e.category() == jobq::ErrorCategory::backend);
    CHECK(std::string(e.what()).find("not supported by the custom backend") != std::string::npos);
  }
}

TEST_CASE("open_backend parses URLs and refuses others clearly") {
  auto m = jobq::open_backend("memory://");
  CHECK(m.kind() == "memory");
  CHECK(m.counts("x") == jobq::Counts{});

  for (const char* bad : {"", "mysql://u@h/db", "sqlite:jobs.db", "sqlite://", "sqlite:///", "sqlite:///a.db?mode=ro",
                          "file:///tmp/x.db", "http://localhost"}) {
    INFO(bad);
    CHECK_THROWS_AS(jobq::open_backend(bad), jobq::InvalidArgument);
  }
  try {
    jobq::open_backend("mongodb://admin:hunter2@db:27017/jobs");
    FAIL("should throw");
  } catch (const jobq::InvalidArgument& e) {
    CHECK(std::string(e.what()).find("hunter2") == std::string::npos);
    CHECK(std::string(e.what()).find("admin:***@db") != std::string::npos);
  }
}

