#include <catch2/catch.hpp>

#include <jobq/any_backend.hpp>
#include <jobq/jobq.hpp>
#include <jobq/memory.hpp>
#include <jobq/open.hpp>

namespace {

// A backend with everything but queues(): AnyBackend must refuse to list its queues clearly.
class NoListing {
 public:
  explicit NoListing(jobq::ClockFn clock) : inner_({std::move(clock)}) {}
  jobq::TimePoint now() const { return inner_.now(); }
  jobq::EnqueueResult enqueue(const jobq::NewJob& j) { return inner_.enqueue(j); }
  std::vector<jobq::EnqueueResult> enqueue_many(std::span<const jobq::NewJob> js) { return inner_.enqueue_many(js); }
  std::vector<jobq::JobRecord> claim(const jobq::ClaimRequest& r) { return inner_.claim(r); }
  bool complete(jobq::JobId id, const std::string& t, const nlohmann::json& r) { return inner_.complete(id, t, r); }
  std::vector<bool> complete_many(std::span<const jobq::Completion> cs) { return inner_.complete_many(cs); }
  jobq::FailOutcome fail(const jobq::Failure& f) { return inner_.fail(f); }
  bool extend_lease(jobq::JobId id, const std::string& t, jobq::Millis l) { return inner_.extend_lease(id, t, l); }
  bool release(jobq::JobId id, const std::string& t) { return inner_.release(id, t); }
  bool set_progress(jobq::JobId id, const std::string& t, int p, const std::string& m) {
    return inner_.set_progress(id, t, p, m);
  }
  jobq::Recovered recover_expired() { return inner_.recover_expired(); }
  std::optional<jobq::JobRecord> get(jobq::JobId id) { return inner_.get(id); }
  bool cancel(jobq::JobId id) { return inner_.cancel(id); }
  bool redrive(jobq::JobId id) { return inner_.redrive(id); }
  void pause(const std::string& q) { inner_.pause(q); }
  void resume(const std::string& q) { inner_.resume(q); }
  bool is_paused(const std::string& q) { return inner_.is_paused(q); }
  jobq::Counts counts(const std::string& q) { return inner_.counts(q); }
  std::size_t prune(const std::string& q, const jobq::Retention& r) { return inner_.prune(q, r); }
  std::vector<jobq::JobRecord> list(const std::string& q, jobq::JobState s, jobq::Page p) { return inner_.list(q, s, p); }
  void wait_for_work(std::span<const std::string> qs, jobq::Millis t, std::stop_token st) {
    inner_.wait_for_work(qs, t, std::move(st));
  }
  void set_queue_limits(const std::string& q, const jobq::QueueLimits& l) { inner_.set_queue_limits(q, l); }
  jobq::QueueLimits queue_limits(const std::string& q) { return inner_.queue_limits(q); }
  void put_schedule(const jobq::StoredSchedule& s) { inner_.put_schedule(s); }
  bool remove_schedule(const std::string& n) { return inner_.remove_schedule(n); }
  std::vector<jobq::StoredSchedule> schedules() { return inner_.schedules(); }
  bool fire_schedule(const std::string& n, jobq::TimePoint e, jobq::TimePoint x, const std::optional<jobq::NewJob>& j) {
    return inner_.fire_schedule(n, e, x, j);
  }
  jobq::Subscription subscribe(std::span<const std::string> qs, jobq::NoticeFn fn) {
    return inner_.subscribe(qs, std::move(fn));
  }

 private:
  jobq::MemoryBackend inner_;
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

