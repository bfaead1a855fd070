#pragma once
// Conformance cases for the worker registry: register_worker, unregister_worker, workers().
// Expiry is the backend's clock (fx.clock); setting it back after a registration shows whether
// an expired entry was deleted or only hidden.

#include "conformance/common.hpp"
#include "conformance/two_objects.hpp"  // race_on_both

namespace conformance {

/// A worker entry with every field set, registered at `now` for `ttl`.
inline jobq::WorkerInfo make_worker(std::string id, jobq::TimePoint now, jobq::Millis ttl = 30s) {
  jobq::WorkerInfo w;
  w.id = std::move(id);
  w.host = "h\xc3\xb4te-7";  // UTF-8 kept as is
  w.pid = 4242;
  w.queues = {"emails", "q"};
  w.concurrency = 8;
  w.started_at = now - 1min;
  w.heartbeat_at = now;
  w.expires_at = now + ttl;
  w.running = {{1, now - 5s}, {9'007'199'254'740'993, now - 1s}};  // above 2^53: not squeezed through a double
  w.leased = {3};
  return w;
}

inline std::vector<std::string> worker_ids(const std::vector<jobq::WorkerInfo>& ws) {
  std::vector<std::string> out;
  for (const auto& w : ws) out.push_back(w.id);
  return out;
}

}  // namespace conformance

TEMPLATE_LIST_TEST_CASE("a registered worker is listed exactly as given", "[conformance][workers]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  CHECK(b.workers().empty());
  const auto w = make_worker("host-1:4242:1-ab12", fx.clock.now());
  b.register_worker(w);
  const auto got = b.workers();
  REQUIRE(got.size() == 1);
  CHECK(got.front() == w);

  jobq::WorkerInfo bare;  // empty lists and zero times round-trip too
  bare.id = "bare";
  bare.expires_at = fx.clock.now();
  b.register_worker(bare);
  const auto both = b.workers();
  REQUIRE(both.size() == 2);
  CHECK(both.front() == bare);
  CHECK(both.back() == w);
}

TEMPLATE_LIST_TEST_CASE("re-registering a worker replaces its entry", "[conformance][workers]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  auto w = make_worker("w", fx.clock.now());
  b.register_worker(w);
  fx.clock.advance(5s);
  w.heartbeat_at = fx.clock.now();
  w.expires_at = fx.clock.now() + 30s;
  w.running = {{7, fx.clock.now()}};
  w.leased = {};
  b.register_worker(w);
  const auto got = b.workers();
  REQUIRE(got.size() == 1);
  CHECK(got.front() == w);
}

TEMPLATE_LIST_TEST_CASE("workers are listed by id, in byte order", "[conformance][workers]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  for (const char* id : {"w-b", "w-a.1", "W-z", "w-c", "w-a"}) b.register_worker(make_worker(id, fx.clock.now()));
  CHECK(worker_ids(b.workers()) == std::vector<std::string>{"W-z", "w-a", "w-a.1", "w-b", "w-c"});
}

TEMPLATE_LIST_TEST_CASE("an expired worker is not listed, and the next registration deletes it",
                        "[conformance][workers]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto t0 = fx.clock.now();
  b.register_worker(make_worker("short", t0, 10s));
  b.register_worker(make_worker("long", t0, 60s));
  fx.clock.advance(10s);
  CHECK(worker_ids(b.workers()) == std::vector<std::string>{"long", "short"});  // expires_at == now: alive
  fx.clock.advance(1ms);
  CHECK(worker_ids(b.workers()) == std::vector<std::string>{"long"});  // hidden before any prune

  b.register_worker(make_worker("other", fx.clock.now()));
  fx.clock.set(t0);  // back to when "short" was alive: gone for good, not just hidden
  CHECK(worker_ids(b.workers()) == std::vector<std::string>{"long", "other"});
  CHECK_FALSE(b.unregister_worker("short"));
}

TEMPLATE_LIST_TEST_CASE("an expired worker registering again is listed again", "[conformance][workers]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  b.register_worker(make_worker("w", fx.clock.now(), 1s));
  fx.clock.advance(2s);
  CHECK(b.workers().empty());
  const auto again = make_worker("w", fx.clock.now());
  b.register_worker(again);  // its own stale entry is replaced, never pruned in its place
  const auto got = b.workers();
  REQUIRE(got.size() == 1);
  CHECK(got.front() == again);
}

TEMPLATE_LIST_TEST_CASE("unregister_worker deletes the entry once", "[conformance][workers]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  b.register_worker(make_worker("a", fx.clock.now()));
  b.register_worker(make_worker("b", fx.clock.now()));
  CHECK(b.unregister_worker("a"));
  CHECK(worker_ids(b.workers()) == std::vector<std::string>{"b"});
  CHECK_FALSE(b.unregister_worker("a"));
  CHECK_FALSE(b.unregister_worker("never"));
  fx.clock.set(fx.clock.now() - 1h);  // deleted, not merely hidden
  CHECK(worker_ids(b.workers()) == std::vector<std::string>{"b"});
}

TEMPLATE_LIST_TEST_CASE("an invalid worker id is refused and nothing is stored", "[conformance][workers]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  const std::vector<std::string> bad{"", "has space", "tab\there", "nl\n", std::string("nul\0x", 5), "del\x7f",
                                     std::string(jobq::max_worker_id_length + 1, 'w')};
  for (const auto& id : bad) {
    CAPTURE(id);
    CHECK_THROWS_AS(b.register_worker(make_worker(id, fx.clock.now())), jobq::InvalidArgument);
    CHECK_FALSE(b.unregister_worker(id));
  }
  CHECK(b.workers().empty());
  const std::string longest(jobq::max_worker_id_length, 'w');
  b.register_worker(make_worker(longest, fx.clock.now()));
  CHECK(worker_ids(b.workers()) == std::vector<std::string>{longest});
  CHECK_FALSE(b.unregister_worker(std::string("nul\0x", 5)));  // not "nul": the id is whole
  b.register_worker(make_worker("nul", fx.clock.now()));
  CHECK_FALSE(b.unregister_worker(std::string("nul\0x", 5)));
  CHECK(b.workers().size() == 2);
}

TEMPLATE_LIST_TEST_CASE("two objects on one store see each other's workers",
                        "[conformance][workers][two-objects]", Backends) {
  TestType fx;
  auto& a = fx.backend();
  auto& b = fx.second_backend();
  const auto w1 = make_worker("w1", fx.clock.now());
  a.register_worker(w1);
  const auto seen = b.workers();
  REQUIRE(seen.size() == 1);
  CHECK(seen.front() == w1);
  b.register_worker(make_worker("w2", fx.clock.now()));
  CHECK(worker_ids(a.workers()) == std::vector<std::string>{"w1", "w2"});
  CHECK(a.unregister_worker("w2"));
  CHECK(worker_ids(b.workers()) == std::vector<std::string>{"w1"});
  CHECK_FALSE(b.unregister_worker("w2"));
}

TEMPLATE_LIST_TEST_CASE("racing registrations on two objects keep every live worker and prune the rest",
                        "[conformance][workers][two-objects][concurrency]", Backends) {
  TestType fx;
  const auto t0 = fx.clock.now();
  for (int i = 0; i < 40; ++i) fx.backend().register_worker(make_worker("old-" + std::to_string(i), t0, 1s));
  fx.clock.advance(2s);
  constexpr int threads = 6;
  // Every registration prunes the same expired entries while the others write theirs.
  race_on_both(fx, threads, [&](auto& be, int t) {
    for (int k = 0; k < 10; ++k) be.register_worker(make_worker("live-" + std::to_string(t), fx.clock.now()));
  });
  std::vector<std::string> want;
  for (int t = 0; t < threads; ++t) want.push_back("live-" + std::to_string(t));
  CHECK(worker_ids(fx.second_backend().workers()) == want);
  fx.clock.set(t0);
  CHECK(worker_ids(fx.backend().workers()) == want);  // the old entries were deleted
}
