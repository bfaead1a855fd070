// Redis flows across queues (several Cluster slots): a release takes two steps there (the
// finishing script puts a record in its outbox, the client applies it in the dependent's slot),
// so these tests stop an operation after the first step, or apply without removing the record,
// and check that another backend object's recover_expired finishes the release exactly once.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include <jobq/jobq.hpp>

#include "redis/helpers.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using jobq::JobState;
using redis_test::server_url;
using redis_test::Store;

namespace {

jobq::NewJob job(std::string queue) {
  jobq::NewJob j;
  j.queue = std::move(queue);
  j.name = "noop";
  j.payload = {{"n", 1}};
  j.backoff = jobq::Backoff::fixed(0ms);
  j.max_attempts = 1;
  return j;
}

// A second backend object on the store of `s` whose operations stop after `steps` steps of a
// cross-queue release (0: records left in the outbox; 1: applied, not removed).
struct Crashing {
  jobq::RedisBackend backend;
  Crashing(const Store& s, const jobq::ClockFn& clock, int steps)
      : backend(server_url(), [&] {
          auto o = redis_test::options(clock, s.prefix);
          o.flow_record_steps = steps;
          return o;
        }()) {}
};

// A store, a backend object on it that stops after `steps` (crash.backend) and the store's own
// object (s.backend), which finishes what the other left.
struct Stopped {
  jobq::ManualClock clock;
  Store s{clock.fn()};
  Crashing crash;
  explicit Stopped(int steps) : crash(s, clock.fn(), steps) {}
};

std::int64_t outbox(jobq::RedisBackend& b, const std::string& prefix, const std::string& queue) {
  return b.command({"LLEN", prefix + ":{" + queue + "}:outbox"}).integer;
}

JobState state_of(jobq::RedisBackend& b, jobq::JobId id) {
  auto j = b.get(id);
  REQUIRE(j.has_value());
  return j->state;
}

jobq::JobRecord claim_one(jobq::RedisBackend& b, const std::string& queue) {
  auto got = b.claim({{queue}, 1, 30s});
  REQUIRE(got.size() == 1);
  return got.front();
}

}  // namespace

TEST_CASE("a cross-queue flow left after the first step of each release is finished by another object's recover_expired",
          "[redis][flow]") {
  Stopped fx(0);
  auto& [clock, s, crash] = fx;
  auto& a = crash.backend;
  jobq::Flow flow;
  flow.chain({job("q1"), job("q2")});
  const auto ids = a.enqueue_flow(flow.spec());
  // The commit's records for q2 are still in q1's outbox: q2's member waits, not claimable.
  CHECK(outbox(a, s.prefix, "q1") == 1);
  CHECK(a.counts("q2").waiting == 1);
  s.backend.recover_expired();
  CHECK(outbox(a, s.prefix, "q1") == 0);
  CHECK(state_of(a, ids[1]) == JobState::waiting);  // now only on its dependency

  auto first = claim_one(a, "q1");
  REQUIRE(a.complete(first.id, first.lease_token, {{"out", 1}}));
  CHECK(outbox(a, s.prefix, "q1") == 1);
  CHECK(state_of(a, ids[1]) == JobState::waiting);
  CHECK(a.claim({{"q2"}, 1, 30s}).empty());
  s.backend.recover_expired();
  CHECK(outbox(a, s.prefix, "q1") == 0);
  CHECK(state_of(a, ids[1]) == JobState::queued);
  CHECK(claim_one(a, "q2").id == ids[1]);
}

TEST_CASE("a record applied but not removed (a crash before the removal) changes nothing when applied again",
          "[redis][flow]") {
  Stopped fx(1);
  auto& [clock, s, crash] = fx;
  auto& a = crash.backend;
  jobq::Flow flow;
  flow.chord({job("q1"), job("q1")}, job("cb"));
  const auto ids = a.enqueue_flow(flow.spec());
  s.backend.recover_expired();  // the commit's records, applied once more
  CHECK(a.counts("cb").waiting == 1);
  auto one = claim_one(a, "q1");
  REQUIRE(a.complete(one.id, one.lease_token, nullptr));
  CHECK(outbox(a, s.prefix, "q1") == 1);
  // A replay must not count the same dependency twice: the callback still waits for the other.
  s.backend.recover_expired();
  s.backend.recover_expired();
  CHECK(outbox(a, s.prefix, "q1") == 0);
  CHECK(state_of(a, ids[2]) == JobState::waiting);
  auto two = claim_one(a, "q1");
  REQUIRE(a.complete(two.id, two.lease_token, nullptr));
  CHECK(state_of(a, ids[2]) == JobState::queued);  // applied at once by step 1 of 2
  s.backend.recover_expired();
  CHECK(a.counts("cb").queued == 1);
  CHECK(claim_one(a, "cb").id == ids[2]);
}

TEST_CASE("death, cancellation, the error callback and a re-drive across queues survive a stop after the first step",
          "[redis][flow]") {
  Stopped fx(0);
  auto& [clock, s, crash] = fx;
  auto& a = crash.backend;

  SECTION("death") {
    jobq::Flow flow;
    flow.chain({job("q1"), job("q2"), job("q3")});
    flow.on_failure(job("errors"));
    const auto ids = a.enqueue_flow(flow.spec());
    s.backend.recover_expired();
    auto j = claim_one(a, "q1");
    REQUIRE(a.fail({j.id, j.lease_token, "boom", std::nullopt}) == jobq::FailOutcome::dead);
    CHECK(state_of(a, ids[1]) == JobState::waiting);
    CHECK(a.counts("errors") == jobq::Counts{});
    s.backend.recover_expired();
    CHECK(state_of(a, ids[1]) == JobState::dead);
    CHECK(state_of(a, ids[2]) == JobState::dead);  // q2 then q3: the records of q2's outbox too
    CHECK(a.get(ids[2])->errors.back().message ==
          jobq::dead_dependency_error(ids[1], jobq::dead_dependency_error(ids[0], "boom")));
    CHECK(a.counts("errors").queued == 1);
    s.backend.recover_expired();
    CHECK(a.counts("errors").queued == 1);  // once per flow
    CHECK(a.flow(ids[0])->members.size() == 4);

    // The re-drive revives q2 and q3 once its record is applied.
    REQUIRE(a.redrive(ids[0]));
    CHECK(state_of(a, ids[1]) == JobState::dead);
    s.backend.recover_expired();
    CHECK(state_of(a, ids[1]) == JobState::waiting);
    CHECK(state_of(a, ids[2]) == JobState::waiting);
    auto again = claim_one(a, "q1");
    REQUIRE(a.complete(again.id, again.lease_token, nullptr));
    s.backend.recover_expired();
    CHECK(state_of(a, ids[1]) == JobState::queued);
  }

  SECTION("cancellation") {
    jobq::Flow flow;
    flow.chain({job("q1"), job("q2")});
    const auto ids = a.enqueue_flow(flow.spec());
    s.backend.recover_expired();
    REQUIRE(a.cancel(ids[0]));
    CHECK(state_of(a, ids[1]) == JobState::waiting);
    s.backend.recover_expired();
    CHECK(state_of(a, ids[1]) == JobState::cancelled);
    CHECK(a.get(ids[1])->errors.back().message == jobq::cancelled_dependency_error(ids[0]));
  }

  SECTION("the error callback, applied but not removed") {
    Crashing half(s, clock.fn(), 1);
    jobq::Flow flow;
    flow.add(job("q1"));
    flow.on_failure(job("errors"));
    const auto ids = half.backend.enqueue_flow(flow.spec());
    auto j = claim_one(half.backend, "q1");
    REQUIRE(half.backend.fail({j.id, j.lease_token, "boom", std::nullopt}) == jobq::FailOutcome::dead);
    CHECK(half.backend.counts("errors").queued == 1);
    CHECK(outbox(a, s.prefix, "q1") == 1);
    s.backend.recover_expired();
    CHECK(outbox(a, s.prefix, "q1") == 0);
    CHECK(half.backend.counts("errors").queued == 1);
    CHECK(half.backend.flow(ids[0])->members.size() == 2);
  }
}

TEST_CASE("an enqueue_flow that fails before its commit leaves no claimable member, and maintenance deletes it",
          "[redis][flow]") {
  jobq::ManualClock clock;
  Store s(clock.fn());
  auto& b = s.backend;
  b.command({"SET", s.prefix + ":{home}:jobs", "not a hash"});  // the home queue's write fails
  jobq::Flow flow;
  auto first = flow.add(job("home"));
  flow.add(job("other"));
  flow.add(job("other"), {first});
  CHECK_THROWS(b.enqueue_flow(flow.spec()));
  CHECK(b.claim({{"other"}, 10, 30s}).empty());
  CHECK(b.counts("other").queued == 0);
  CHECK(b.counts("other").waiting == 2);  // written, waiting for a commit that never came
  b.command({"DEL", s.prefix + ":{home}:jobs"});
  b.recover_expired();
  CHECK(b.claim({{"other"}, 10, 30s}).empty());
  CHECK(b.counts("other").waiting == 2);  // its commit may still come within the grace
  clock.advance(61s);
  b.recover_expired();
  CHECK(b.counts("other") == jobq::Counts{});
  CHECK(b.command({"HLEN", s.prefix + ":{other}:jobs"}).integer == 0);
  CHECK(b.command({"ZCARD", s.prefix + ":{other}:uncommitted"}).integer == 0);
  CHECK(b.command({"HLEN", s.prefix + ":{home}:flows"}).integer == 1);  // the aborted mark
}

TEST_CASE("a process that dies between an enqueue_flow's steps leaves nothing once the commit is overdue",
          "[redis][flow]") {
  jobq::ManualClock clock;
  Store s(clock.fn());
  auto o = redis_test::options(clock.fn(), s.prefix);
  o.flow_stop_before_commit = true;
  jobq::RedisBackend dying(server_url(), o);
  jobq::Flow flow;
  flow.chord({job("q1"), job("q2"), job("q3")}, job("q3"));
  CHECK_THROWS_AS(dying.enqueue_flow(flow.spec()), jobq::RedisError);
  CHECK(s.backend.counts("q2").waiting == 1);
  CHECK(s.backend.counts("q3").waiting == 2);
  CHECK(s.backend.counts("q1") == jobq::Counts{});  // the home queue is the commit: not written
  clock.advance(61s);
  s.backend.recover_expired();
  for (const auto* q : {"q1", "q2", "q3"}) CHECK(s.backend.counts(q) == jobq::Counts{});
  // The same flow enqueued again by a live process runs whole.
  const auto ids = s.backend.enqueue_flow(flow.spec());
  CHECK(s.backend.counts("q3").waiting == 1);  // the callback; its group member is queued
  clock.advance(61s);
  s.backend.recover_expired();  // committed: kept
  for (const auto& q : {"q1", "q2", "q3"}) {
    for (auto& j : s.backend.claim({{q}, 10, 30s})) REQUIRE(s.backend.complete(j.id, j.lease_token, nullptr));
  }
  CHECK(state_of(s.backend, ids.back()) == JobState::queued);
}

TEST_CASE("a committed flow whose commit records are overdue is released, never discarded", "[redis][flow]") {
  Stopped fx(0);
  auto& [clock, s, crash] = fx;
  jobq::Flow flow;
  flow.chain({job("q1"), job("q2")});
  const auto ids = crash.backend.enqueue_flow(flow.spec());
  CHECK(outbox(s.backend, s.prefix, "q1") == 1);  // the commit's record, not applied
  clock.advance(10min);
  s.backend.recover_expired();
  CHECK(state_of(s.backend, ids[1]) == JobState::waiting);  // on its dependency only now
  CHECK(s.backend.command({"ZCARD", s.prefix + ":{q2}:uncommitted"}).integer == 0);
  auto first = claim_one(s.backend, "q1");
  REQUIRE(s.backend.complete(first.id, first.lease_token, nullptr));
  CHECK(claim_one(s.backend, "q2").id == ids[1]);
}

TEST_CASE("a flow's keys live in its queues' slots", "[redis][flow][keys]") {
  jobq::ManualClock clock;
  Store s(clock.fn());
  auto& b = s.backend;
  jobq::Flow flow;
  flow.chain({job("a"), job("b")});
  flow.on_failure(job("a"));
  const auto ids = b.enqueue_flow(flow.spec());
  auto j = claim_one(b, "a");
  REQUIRE(b.fail({j.id, j.lease_token, "boom", std::nullopt}) == jobq::FailOutcome::dead);
  for (const auto& k : {"dependents", "pending", "resolved", "member", "fdone", "seq", "flows"}) {
    CAPTURE(k);
    CHECK(b.command({"EXISTS", s.prefix + ":{a}:" + k}).integer + b.command({"EXISTS", s.prefix + ":{b}:" + k}).integer >= 1);
  }
  for (const auto& k : b.command({"KEYS", s.prefix + ":{*"}).elements) {
    CAPTURE(k.str);
    CHECK((k.str.rfind(s.prefix + ":{a}:", 0) == 0 || k.str.rfind(s.prefix + ":{b}:", 0) == 0));
  }
  CHECK(b.get(ids[1])->state == JobState::dead);
}

// Claims (limit 64) and completes (complete_many) on 16 threads until `last` has completed.
void drain(jobq::RedisBackend& b, const std::string& queue, jobq::JobId last) {
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&] {
      while (!done) {
        auto got = b.claim({{queue}, 64, 30s});
        if (got.empty()) {
          std::this_thread::sleep_for(1ms);
          continue;
        }
        std::vector<jobq::Completion> cs;
        bool saw_last = false;
        for (auto& j : got) {
          saw_last = saw_last || j.id == last;
          cs.push_back({j.id, j.lease_token, nullptr});
        }
        b.complete_many(cs);
        if (saw_last) done = true;
      }
    });
  }
  for (auto& t : threads) t.join();
}

// Not run by default: `redis_tests "[.flow-bench]"`. The same drain of 20,001 plain jobs is the
// reference (W3-like).
TEST_CASE("bench: a 20,000-member chord, enqueued and drained on 16 threads", "[.flow-bench]") {
  Store s(jobq::system_clock());
  auto& b = s.backend;
  const auto ms = [](auto d) { return static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()); };
  using clock = std::chrono::steady_clock;

  std::vector<jobq::NewJob> plain(20'001, job("plain"));
  auto t0 = clock::now();
  const auto r = b.enqueue_many(plain);
  auto t1 = clock::now();
  drain(b, "plain", r.back().id);
  auto t2 = clock::now();
  CHECK(b.counts("plain").completed == 20'001);
  std::printf("20,001 plain jobs: enqueue_many %lld ms, drain %lld ms\n", ms(t1 - t0), ms(t2 - t1));

  std::vector<jobq::NewJob> parts(20'000, job("bench"));
  jobq::Flow flow;
  flow.chord(std::move(parts), job("bench"));
  t0 = clock::now();
  const auto ids = b.enqueue_flow(flow.spec());
  t1 = clock::now();
  drain(b, "bench", ids.back());
  t2 = clock::now();
  CHECK(b.get(ids.back())->state == JobState::completed);
  std::printf("20,000-member chord: enqueue_flow %lld ms, drain until the callback completed %lld ms\n",
              ms(t1 - t0), ms(t2 - t1));
}
