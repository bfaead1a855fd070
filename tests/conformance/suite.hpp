#pragma once
// The one conformance suite. Every behaviour is written once and runs against every backend
// fixture listed in `Backends`, which the including file defines:
//
//   struct XFixture {
//     static constexpr const char* name = "x";
//     jobq::ManualClock clock;       // the backend reads time from clock.fn()
//     XBackend& backend();           // a fresh, isolated, empty store (RAII cleanup)
//   };
//   using Backends = std::tuple<XFixture>;
//   #include "conformance/suite.hpp"
//
// Time is moved by hand (clock.advance); nothing sleeps for delays, backoff, leases or
// retention. Waits below only let worker threads catch up.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <pthread.h>

#include <catch2/catch.hpp>

#include <jobq/jobq.hpp>

#include "support.hpp"

namespace conformance {

using namespace std::chrono_literals;
using jobq::JobState;

/// A typed job used by the worker cases.
struct Greet {
  static constexpr std::string_view job_name = "greet";
  std::string who;
  int fail_times = 0;
  NLOHMANN_DEFINE_TYPE_INTRUSIVE(Greet, who, fail_times)
};

inline jobq::NewJob make_job(std::string queue = "q", nlohmann::json payload = {{"n", 1}},
                             std::string name = "noop") {
  jobq::NewJob j;
  j.queue = std::move(queue);
  j.name = std::move(name);
  j.payload = std::move(payload);
  j.backoff = jobq::Backoff::fixed(0ms);
  return j;
}

inline jobq::ClaimRequest claim_from(std::vector<std::string> queues, std::size_t limit = 1,
                                     jobq::Millis lease = 30s) {
  return jobq::ClaimRequest{std::move(queues), limit, lease};
}

using jobq_test::eventually;  // for worker threads to catch up

inline std::vector<jobq::JobId> ids_of(const std::vector<jobq::JobRecord>& jobs) {
  std::vector<jobq::JobId> out;
  for (const auto& j : jobs) out.push_back(j.id);
  return out;
}

template <class B>
jobq::JobRecord claim_one(B& b, const std::string& queue = "q", jobq::Millis lease = 30s) {
  auto got = b.claim(claim_from({queue}, 1, lease));
  REQUIRE(got.size() == 1);
  return got.front();
}

template <class B>
JobState state_of(B& b, jobq::JobId id) {
  auto j = b.get(id);
  REQUIRE(j.has_value());
  return j->state;
}

inline jobq::WorkerOptions fast_worker(int concurrency = 2) {
  jobq::WorkerOptions o;
  o.queues = {"q"};
  o.concurrency = concurrency;
  o.poll_interval = 10ms;
  o.maintenance_interval = 0ms;
  o.shutdown_grace = 5s;
  o.on_error = [](const std::exception&) {};
  return o;
}

}  // namespace conformance

using namespace conformance;

// ---------------------------------------------------------------------------------------------
// Enqueue and get

TEMPLATE_LIST_TEST_CASE("an enqueued job is stored with every field", "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  auto nj = make_job("q", {{"to", "a@b.c"}, {"n", 42}, {"quote", "it's \"x\"; DROP TABLE jobs;--"}},
                     "send-email");
  nj.priority = 7;
  nj.max_attempts = 5;
  nj.backoff = jobq::Backoff::exponential(2s, 1min).with_jitter(0.25);
  nj.timeout = 1500ms;
  nj.unique_key = "welcome:42";
  nj.unique_for = 10min;
  const auto r = b.enqueue(nj);
  CHECK(r.created);
  auto j = b.get(r.id);
  REQUIRE(j);
  CHECK(j->id == r.id);
  CHECK(j->queue == "q");
  CHECK(j->name == "send-email");
  CHECK(j->payload == nj.payload);
  CHECK(j->state == JobState::queued);
  CHECK(j->priority == 7);
  CHECK(j->attempts == 0);
  CHECK(j->max_attempts == 5);
  CHECK(j->run_at == fx.clock.now());
  CHECK(j->created_at == fx.clock.now());
  CHECK_FALSE(j->finished_at);
  CHECK_FALSE(j->lease_until);
  CHECK(j->backoff == nj.backoff);
  CHECK(j->timeout == 1500ms);
  CHECK(j->unique_key == "welcome:42");
  CHECK(j->unique_for == 10min);
  CHECK(j->result.is_null());
  CHECK(j->errors.empty());
  CHECK_FALSE(b.get(r.id + 1000000));
}

TEMPLATE_LIST_TEST_CASE("ids are distinct and increase in enqueue order", "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto a = b.enqueue(make_job()).id;
  const auto c = b.enqueue(make_job("other")).id;
  const auto d = b.enqueue(make_job()).id;
  CHECK(a < c);
  CHECK(c < d);
}

// ---------------------------------------------------------------------------------------------
// Claim order, delays, leases

TEMPLATE_LIST_TEST_CASE("claim orders by priority, then run_at, then enqueue order", "[conformance]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto t = fx.clock.now();
  auto low1 = make_job();
  auto high_late = make_job();
  high_late.priority = 5;
  auto high_early = make_job();
  high_early.priority = 5;
  high_early.run_at = t - 1min;
  auto low2 = make_job();
  auto neg = make_job();
  neg.priority = -3;
  const auto id_neg = b.enqueue(neg).id;
  const auto id_low1 = b.enqueue(low1).id;
  const auto id_high_late = b.enqueue(high_late).id;
  const auto id_high_early = b.enqueue(high_early).id;
  const auto id_low2 = b.enqueue(low2).id;

  SECTION("one batch") {
    auto got = b.claim(claim_from({"q"}, 10));
    CHECK(ids_of(got) ==
          std::vector<jobq::JobId>{id_high_early, id_high_late, id_low1, id_low2, id_neg});
  }
  SECTION("one at a time") {
    std::vector<jobq::JobId> order;
    for (int i = 0; i < 5; ++i) order.push_back(claim_one(b).id);
    CHECK(order == std::vector<jobq::JobId>{id_high_early, id_high_late, id_low1, id_low2, id_neg});
    CHECK(b.claim(claim_from({"q"}, 10)).empty());
  }
}

TEMPLATE_LIST_TEST_CASE("claim sets state, attempt, lease deadline and a fresh token", "[conformance]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto id = b.enqueue(make_job()).id;
  const auto got = claim_one(b, "q", 45s);
  CHECK(got.id == id);
  CHECK(got.state == JobState::active);
  CHECK(got.attempts == 1);
  CHECK(got.payload == nlohmann::json{{"n", 1}});
  REQUIRE(got.lease_until);
  CHECK(*got.lease_until == fx.clock.now() + 45s);
  CHECK(got.lease_token.size() >= 16);
  auto stored = b.get(id);
  REQUIRE(stored);
  CHECK(stored->state == JobState::active);
  CHECK(stored->attempts == 1);
  CHECK(b.claim(claim_from({"q"})).empty());  // leased jobs are not claimable
}

TEMPLATE_LIST_TEST_CASE("claim honours the limit and only the named queues", "[conformance]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  for (int i = 0; i < 5; ++i) b.enqueue(make_job("q"));
  for (int i = 0; i < 3; ++i) b.enqueue(make_job("other"));
  CHECK(b.claim(claim_from({"q"}, 2)).size() == 2);
  CHECK(b.claim(claim_from({"nobody"}, 10)).empty());
  auto rest = b.claim(claim_from({"q"}, 10));
  CHECK(rest.size() == 3);
  for (const auto& j : rest) CHECK(j.queue == "q");
  CHECK(b.counts("other").queued == 3);
}

TEMPLATE_LIST_TEST_CASE("claim across queues takes the best job of all of them", "[conformance]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto a = b.enqueue(make_job("a")).id;
  auto hi = make_job("b");
  hi.priority = 9;
  const auto bh = b.enqueue(hi).id;
  const auto b2 = b.enqueue(make_job("b")).id;
  auto got = b.claim(claim_from({"a", "b"}, 10));
  CHECK(ids_of(got) == std::vector<jobq::JobId>{bh, a, b2});
}

TEMPLATE_LIST_TEST_CASE("a delayed job is invisible until it is due", "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  auto later = make_job();
  later.run_at = fx.clock.now() + 30s;
  const auto id = b.enqueue(later).id;
  CHECK(b.claim(claim_from({"q"})).empty());
  CHECK(b.counts("q").queued == 1);
  fx.clock.advance(29'999ms);
  CHECK(b.claim(claim_from({"q"})).empty());
  fx.clock.advance(1ms);
  CHECK(claim_one(b).id == id);
}

TEMPLATE_LIST_TEST_CASE("a due delayed job ranks by priority with ready jobs", "[conformance]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  auto later = make_job();
  later.priority = 10;
  later.run_at = fx.clock.now() + 5s;
  const auto delayed = b.enqueue(later).id;
  const auto plain = b.enqueue(make_job()).id;
  fx.clock.advance(6s);
  auto got = b.claim(claim_from({"q"}, 2));
  CHECK(ids_of(got) == std::vector<jobq::JobId>{delayed, plain});
}

// ---------------------------------------------------------------------------------------------
// Completion, failure, retries, dead letters

TEMPLATE_LIST_TEST_CASE("complete stores the result and finishes the job", "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto id = b.enqueue(make_job()).id;
  const auto j = claim_one(b);
  fx.clock.advance(3s);
  CHECK(b.complete(id, j.lease_token, {{"sent", true}, {"bytes", 512}}));
  auto s = b.get(id);
  REQUIRE(s);
  CHECK(s->state == JobState::completed);
  CHECK(s->result == nlohmann::json{{"sent", true}, {"bytes", 512}});
  REQUIRE(s->finished_at);
  CHECK(*s->finished_at == fx.clock.now());
  CHECK_FALSE(s->lease_until);
  CHECK_FALSE(b.complete(id, j.lease_token, nullptr));  // twice: refused
}

TEMPLATE_LIST_TEST_CASE("complete_many records several completions in one call", "[conformance]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  for (int i = 0; i < 4; ++i) b.enqueue(make_job());
  auto got = b.claim(claim_from({"q"}, 4));
  REQUIRE(got.size() == 4);
  std::vector<jobq::Completion> cs;
  for (const auto& j : got) cs.push_back({j.id, j.lease_token, {{"id", j.id}}});
  cs[2].lease_token = "not-the-token";
  const auto ok = b.complete_many(cs);
  CHECK(ok == std::vector<bool>{true, true, false, true});
  CHECK(b.counts("q").completed == 3);
  CHECK(b.counts("q").active == 1);
  CHECK(b.get(got[0].id)->result == nlohmann::json{{"id", got[0].id}});
  CHECK(state_of(b, got[2].id) == JobState::active);
}

TEMPLATE_LIST_TEST_CASE("a failed attempt is retried at the time asked for", "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto id = b.enqueue(make_job()).id;
  const auto j = claim_one(b);
  CHECK(b.fail({id, j.lease_token, "smtp timeout", fx.clock.now() + 10s}) == jobq::FailOutcome::retried);
  auto s = b.get(id);
  REQUIRE(s);
  CHECK(s->state == JobState::queued);
  CHECK(s->run_at == fx.clock.now() + 10s);
  REQUIRE(s->errors.size() == 1);
  CHECK(s->errors[0].attempt == 1);
  CHECK(s->errors[0].message == "smtp timeout");
  CHECK(s->errors[0].at == fx.clock.now());
  CHECK(b.claim(claim_from({"q"})).empty());
  fx.clock.advance(10s);
  const auto again = claim_one(b);
  CHECK(again.id == id);
  CHECK(again.attempts == 2);
  CHECK(again.lease_token != j.lease_token);
}

TEMPLATE_LIST_TEST_CASE("each backoff kind stored with the job gives the right retry times",
                        "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  struct Case {
    jobq::Backoff policy;
    std::vector<jobq::Millis> expected;  // delay after attempt 1, 2, 3, 4
  };
  const std::vector<Case> cases = {
      {jobq::Backoff::fixed(5s), {5s, 5s, 5s, 5s}},
      {jobq::Backoff::exponential(1s, 5s), {1s, 2s, 4s, 5s}},
      {jobq::Backoff::exponential(100ms, 1h, 3.0), {100ms, 300ms, 900ms, 2700ms}},
  };
  for (const auto& c : cases) {
    auto nj = make_job();
    nj.backoff = c.policy;
    nj.max_attempts = 5;
    const auto id = b.enqueue(nj).id;
    for (std::size_t attempt = 1; attempt <= c.expected.size(); ++attempt) {
      const auto j = claim_one(b);
      REQUIRE(j.id == id);
      REQUIRE(j.attempts == static_cast<int>(attempt));
      // What the worker does: the stored policy decides the delay.
      const auto retry_at = b.now() + j.backoff.delay(j.attempts, 0.0);
      REQUIRE(b.fail({id, j.lease_token, "e", retry_at}) == jobq::FailOutcome::retried);
      CHECK(b.get(id)->run_at == fx.clock.now() + c.expected[attempt - 1]);
      fx.clock.advance(c.expected[attempt - 1] - 1ms);
      CHECK(b.claim(claim_from({"q"})).empty());
      fx.clock.advance(1ms);
    }
    const auto last = claim_one(b);
    CHECK(b.complete(id, last.lease_token, nullptr));
  }
  SECTION("jitter keeps the delay within its range") {
    auto nj = make_job();
    nj.backoff = jobq::Backoff::fixed(10s).with_jitter(0.5);
    const auto id = b.enqueue(nj).id;
    const auto j = claim_one(b);
    CHECK(j.backoff.jitter() == 0.5);
    const auto d = j.backoff.delay(1);
    CHECK(d >= 5s);
    CHECK(d <= 10s);
    b.fail({id, j.lease_token, "e", b.now() + d});
    CHECK(b.get(id)->run_at - fx.clock.now() == d);
  }
}

TEMPLATE_LIST_TEST_CASE("a job is dead after max attempts with every error kept", "[conformance]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  auto nj = make_job();
  nj.max_attempts = 3;
  const auto id = b.enqueue(nj).id;
  for (int i = 1; i <= 3; ++i) {
    const auto j = claim_one(b);
    const auto outcome = b.fail({id, j.lease_token, std::string("boom ").append(std::to_string(i)), b.now()});
    CHECK(outcome == (i < 3 ? jobq::FailOutcome::retried : jobq::FailOutcome::dead));
    fx.clock.advance(1s);
  }
  auto s = b.get(id);
  REQUIRE(s);
  CHECK(s->state == JobState::dead);
  CHECK(s->attempts == 3);
  REQUIRE(s->finished_at);
  REQUIRE(s->errors.size() == 3);
  for (int i = 0; i < 3; ++i) {
    CHECK(s->errors[static_cast<std::size_t>(i)].attempt == i + 1);
    CHECK(s->errors[static_cast<std::size_t>(i)].message == std::string("boom ").append(std::to_string(i + 1)));
  }
  CHECK(b.claim(claim_from({"q"})).empty());
  auto dead = b.list("q", JobState::dead, {});
  REQUIRE(dead.size() == 1);
  CHECK(dead[0].id == id);
}

TEMPLATE_LIST_TEST_CASE("a failure without a retry time is dead at once", "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  auto nj = make_job();
  nj.max_attempts = 10;
  const auto id = b.enqueue(nj).id;
  const auto j = claim_one(b);
  CHECK(b.fail({id, j.lease_token, "permanent: bad address", std::nullopt}) == jobq::FailOutcome::dead);
  CHECK(state_of(b, id) == JobState::dead);
  CHECK(b.get(id)->errors.at(0).message == "permanent: bad address");
}

TEMPLATE_LIST_TEST_CASE("a dead job can be re-driven", "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  auto nj = make_job();
  nj.max_attempts = 1;
  const auto id = b.enqueue(nj).id;
  auto j = claim_one(b);
  b.fail({id, j.lease_token, "first", b.now()});
  REQUIRE(state_of(b, id) == JobState::dead);
  fx.clock.advance(1h);
  CHECK(b.redrive(id));
  auto s = b.get(id);
  CHECK(s->state == JobState::queued);
  CHECK(s->attempts == 0);
  CHECK(s->run_at == fx.clock.now());
  CHECK_FALSE(s->finished_at);
  CHECK(s->errors.size() == 1);  // history kept
  CHECK(b.counts("q") == jobq::Counts{1, 0, 0, 0, 0});
  j = claim_one(b);
  CHECK(j.attempts == 1);
  CHECK(b.complete(id, j.lease_token, nullptr));
  CHECK_FALSE(b.redrive(id));  // only dead jobs
  CHECK_FALSE(b.redrive(id + 1000000));
}

// ---------------------------------------------------------------------------------------------
// Leases

TEMPLATE_LIST_TEST_CASE("an expired lease is recovered and counted as an attempt", "[conformance]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  auto nj = make_job();
  nj.max_attempts = 2;
  const auto id = b.enqueue(nj).id;
  claim_one(b, "q", 10s);
  fx.clock.advance(9s);
  CHECK(b.recover_expired() == jobq::Recovered{0, 0});
  CHECK(state_of(b, id) == JobState::active);
  fx.clock.advance(1s);
  CHECK(b.recover_expired() == jobq::Recovered{1, 0});
  auto s = b.get(id);
  CHECK(s->state == JobState::queued);
  CHECK(s->attempts == 1);
  REQUIRE(s->errors.size() == 1);
  CHECK(s->errors[0].attempt == 1);
  const auto second = claim_one(b, "q", 10s);
  CHECK(second.attempts == 2);
  fx.clock.advance(10s);
  CHECK(b.recover_expired() == jobq::Recovered{0, 1});
  CHECK(state_of(b, id) == JobState::dead);
  CHECK(b.get(id)->errors.size() == 2);
}

TEMPLATE_LIST_TEST_CASE("a stale lease token cannot complete or fail a job", "[conformance]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto id = b.enqueue(make_job()).id;
  const auto first = claim_one(b, "q", 5s);
  fx.clock.advance(5s);
  b.recover_expired();
  const auto second = claim_one(b, "q", 5s);
  REQUIRE(second.id == id);

  CHECK_FALSE(b.complete(id, first.lease_token, {{"late", true}}));
  CHECK(b.fail({id, first.lease_token, "late", b.now()}) == jobq::FailOutcome::rejected);
  CHECK_FALSE(b.extend_lease(id, first.lease_token, 1min));
  CHECK_FALSE(b.release(id, first.lease_token));
  CHECK_FALSE(b.set_progress(id, first.lease_token, 50, "late"));
  CHECK_FALSE(b.complete(id, "", nullptr));
  auto s = b.get(id);
  CHECK(s->state == JobState::active);
  CHECK(s->attempts == 2);
  CHECK(s->result.is_null());
  CHECK(s->errors.size() == 1);  // only the recovery's entry
  CHECK(*s->lease_until == fx.clock.now() + 5s);
  CHECK(b.complete(id, second.lease_token, {{"ok", 1}}));
  CHECK(b.get(id)->result == nlohmann::json{{"ok", 1}});
}

TEMPLATE_LIST_TEST_CASE("a heartbeat keeps a lease alive", "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto id = b.enqueue(make_job()).id;
  const auto j = claim_one(b, "q", 10s);
  for (int i = 0; i < 5; ++i) {
    fx.clock.advance(8s);
    CHECK(b.extend_lease(id, j.lease_token, 10s));
    CHECK(b.recover_expired() == jobq::Recovered{0, 0});
  }
  CHECK(*b.get(id)->lease_until == fx.clock.now() + 10s);
  fx.clock.advance(10s);
  CHECK(b.recover_expired() == jobq::Recovered{1, 0});
  CHECK_FALSE(b.extend_lease(id, j.lease_token, 10s));
}

TEMPLATE_LIST_TEST_CASE("release gives a job back without burning an attempt", "[conformance]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto id = b.enqueue(make_job()).id;
  const auto j = claim_one(b);
  fx.clock.advance(2s);
  CHECK(b.release(id, j.lease_token));
  auto s = b.get(id);
  CHECK(s->state == JobState::queued);
  CHECK(s->attempts == 0);
  CHECK(s->run_at == fx.clock.now());
  CHECK(s->errors.empty());
  CHECK_FALSE(b.release(id, j.lease_token));
  CHECK(claim_one(b).attempts == 1);
}

TEMPLATE_LIST_TEST_CASE("progress of an active job is visible through get", "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto id = b.enqueue(make_job()).id;
  const auto j = claim_one(b);
  CHECK(b.set_progress(id, j.lease_token, 40, "resized 4 of 10"));
  auto s = b.get(id);
  CHECK(s->progress == 40);
  CHECK(s->progress_message == "resized 4 of 10");
  CHECK(b.set_progress(id, j.lease_token, 100, ""));
  CHECK(b.get(id)->progress == 100);
}

// ---------------------------------------------------------------------------------------------
// Uniqueness

TEMPLATE_LIST_TEST_CASE("a unique key dedups while queued or active and is released after",
                        "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  auto nj = make_job();
  nj.unique_key = "charge:order-7";
  const auto first = b.enqueue(nj);
  CHECK(first.created);
  const auto dup = b.enqueue(nj);
  CHECK_FALSE(dup.created);
  CHECK(dup.id == first.id);

  auto other_queue = nj;
  other_queue.queue = "other";
  CHECK(b.enqueue(other_queue).created);  // keys are per queue

  const auto j = claim_one(b);
  CHECK(b.enqueue(nj).id == first.id);  // active still holds it
  CHECK(b.complete(first.id, j.lease_token, nullptr));
  const auto after = b.enqueue(nj);
  CHECK(after.created);
  CHECK(after.id != first.id);
  CHECK(b.counts("q").queued == 1);
}

TEMPLATE_LIST_TEST_CASE("a unique key is held for its window after completion", "[conformance]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  auto nj = make_job();
  nj.unique_key = "digest:user-1";
  nj.unique_for = 1h;
  const auto first = b.enqueue(nj).id;
  const auto j = claim_one(b);
  b.complete(first, j.lease_token, nullptr);
  fx.clock.advance(59min);
  CHECK(b.enqueue(nj).id == first);
  fx.clock.advance(1min);
  const auto next = b.enqueue(nj);
  CHECK(next.created);
  CHECK(next.id != first);
}

TEMPLATE_LIST_TEST_CASE("cancelled and dead jobs release their unique key", "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  auto nj = make_job();
  nj.unique_key = "k";
  nj.unique_for = 1h;
  nj.max_attempts = 1;
  const auto a = b.enqueue(nj).id;
  CHECK(b.cancel(a));
  const auto c = b.enqueue(nj);
  CHECK(c.created);
  const auto j = claim_one(b);
  b.fail({c.id, j.lease_token, "x", std::nullopt});
  CHECK(b.enqueue(nj).created);
}

TEMPLATE_LIST_TEST_CASE("a unique key inside one bulk enqueue dedups too", "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  auto nj = make_job();
  nj.unique_key = "same";
  std::vector<jobq::NewJob> batch{nj, make_job(), nj};
  const auto rs = b.enqueue_many(batch);
  REQUIRE(rs.size() == 3);
  CHECK(rs[0].created);
  CHECK(rs[1].created);
  CHECK_FALSE(rs[2].created);
  CHECK(rs[2].id == rs[0].id);
  CHECK(b.counts("q").queued == 2);
}

// ---------------------------------------------------------------------------------------------
// Cancel, pause, counts, retention, listing

TEMPLATE_LIST_TEST_CASE("a queued job can be cancelled, an active one cannot", "[conformance]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto a = b.enqueue(make_job()).id;
  auto later = make_job();
  later.run_at = fx.clock.now() + 1h;
  const auto d = b.enqueue(later).id;
  CHECK(b.cancel(d));  // delayed jobs are queued too
  const auto c = claim_one(b).id;
  REQUIRE(c == a);
  CHECK_FALSE(b.cancel(a));
  CHECK(state_of(b, a) == JobState::active);
  CHECK(state_of(b, d) == JobState::cancelled);
  CHECK(b.get(d)->finished_at);
  CHECK_FALSE(b.cancel(d));
  CHECK_FALSE(b.cancel(a + 1000000));
  fx.clock.advance(2h);
  CHECK(b.claim(claim_from({"q"})).empty());
}

TEMPLATE_LIST_TEST_CASE("pause stops claims from a queue and resume restores them", "[conformance]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  b.enqueue(make_job("q"));
  b.enqueue(make_job("other"));
  CHECK_FALSE(b.is_paused("q"));
  b.pause("q");
  CHECK(b.is_paused("q"));
  CHECK_FALSE(b.is_paused("other"));
  CHECK(b.claim(claim_from({"q"})).empty());
  auto got = b.claim(claim_from({"q", "other"}, 5));
  REQUIRE(got.size() == 1);
  CHECK(got[0].queue == "other");
  b.enqueue(make_job("q"));  // enqueue still works while paused
  CHECK(b.counts("q").queued == 2);
  b.resume("q");
  CHECK_FALSE(b.is_paused("q"));
  CHECK(b.claim(claim_from({"q"}, 5)).size() == 2);
}

TEMPLATE_LIST_TEST_CASE("counts per state are exact", "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  CHECK(b.counts("q") == jobq::Counts{});
  std::vector<jobq::JobId> ids;
  for (int i = 0; i < 7; ++i) {
    auto nj = make_job();
    nj.max_attempts = 1;
    ids.push_back(b.enqueue(nj).id);
  }
  auto later = make_job();
  later.run_at = fx.clock.now() + 1h;
  b.enqueue(later);
  b.enqueue(make_job("other"));
  auto got = b.claim(claim_from({"q"}, 4));
  REQUIRE(got.size() == 4);
  b.complete(got[0].id, got[0].lease_token, nullptr);
  b.complete(got[1].id, got[1].lease_token, nullptr);
  b.fail({got[2].id, got[2].lease_token, "x", b.now()});  // last attempt: dead
  b.cancel(ids[6]);
  CHECK(b.counts("q") == jobq::Counts{.queued = 3, .active = 1, .completed = 2, .dead = 1, .cancelled = 1});
  CHECK(b.counts("other") == jobq::Counts{.queued = 1});
  CHECK(b.counts("empty") == jobq::Counts{});
}

TEMPLATE_LIST_TEST_CASE("retention prunes only finished jobs older than the policy", "[conformance]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  auto one = make_job();
  one.max_attempts = 1;
  const auto done = b.enqueue(one).id;
  const auto dead = b.enqueue(one).id;
  const auto cancelled = b.enqueue(one).id;
  const auto queued = b.enqueue(one).id;
  const auto active = b.enqueue(one).id;
  const auto other = b.enqueue(make_job("other")).id;
  auto j = claim_one(b);
  REQUIRE(j.id == done);
  b.complete(done, j.lease_token, nullptr);
  j = claim_one(b);
  REQUIRE(j.id == dead);
  b.fail({dead, j.lease_token, "x", std::nullopt});
  b.cancel(cancelled);
  {
    auto o = claim_one(b, "other");
    b.complete(other, o.lease_token, nullptr);
  }
  fx.clock.advance(30min);
  j = b.claim(claim_from({"q"}, 2)).at(0);  // leases `queued` and `active`
  REQUIRE(j.id == queued);

  const jobq::Retention policy{.completed = 1h, .dead = 2h, .cancelled = std::nullopt};
  CHECK(b.prune("q", policy) == 0);
  fx.clock.advance(31min);
  CHECK(b.prune("q", policy) == 1);  // the completed one
  CHECK_FALSE(b.get(done));
  CHECK(b.get(dead));
  CHECK(b.get(cancelled));  // kept forever by this policy
  CHECK(b.get(other));      // other queue untouched
  fx.clock.advance(1h);
  CHECK(b.prune("q", policy) == 1);
  CHECK_FALSE(b.get(dead));
  fx.clock.advance(24h * 30);
  CHECK(b.prune("q", policy) == 0);
  CHECK(state_of(b, queued) == JobState::active);
  CHECK(state_of(b, active) == JobState::active);
  CHECK(b.counts("q") == jobq::Counts{.active = 2, .cancelled = 1});
}

TEMPLATE_LIST_TEST_CASE("list pages through the jobs of one state, each once", "[conformance]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  std::set<jobq::JobId> queued;
  for (int i = 0; i < 25; ++i) queued.insert(b.enqueue(make_job()).id);
  b.enqueue(make_job("other"));
  const auto j = claim_one(b);
  queued.erase(j.id);
  std::set<jobq::JobId> seen;
  std::size_t pages = 0;
  for (std::size_t off = 0;; off += 10) {
    auto page = b.list("q", JobState::queued, {off, 10});
    if (page.empty()) break;
    ++pages;
    CHECK(page.size() <= 10);
    for (const auto& r : page) {
      CHECK(r.state == JobState::queued);
      CHECK(r.queue == "q");
      CHECK(seen.insert(r.id).second);
    }
  }
  CHECK(pages == 3);
  CHECK(seen == queued);
  auto active = b.list("q", JobState::active, {});
  REQUIRE(active.size() == 1);
  CHECK(active[0].id == j.id);
  CHECK(b.list("q", JobState::dead, {}).empty());
}

// ---------------------------------------------------------------------------------------------
// Volume and concurrency

TEMPLATE_LIST_TEST_CASE("a bulk enqueue of 10,000 jobs is all claimable", "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  std::vector<jobq::NewJob> batch;
  for (int i = 0; i < 10'000; ++i) batch.push_back(make_job("q", {{"i", i}}));
  const auto rs = b.enqueue_many(batch);
  REQUIRE(rs.size() == 10'000);
  std::set<jobq::JobId> ids;
  for (const auto& r : rs) {
    CHECK(r.created);
    ids.insert(r.id);
  }
  CHECK(ids.size() == 10'000);
  CHECK(b.counts("q").queued == 10'000);
  std::set<jobq::JobId> claimed;
  int expected_i = 0;
  bool in_order = true;
  for (;;) {
    auto got = b.claim(claim_from({"q"}, 500));
    if (got.empty()) break;
    for (const auto& j : got) {
      claimed.insert(j.id);
      in_order = in_order && j.payload.at("i").template get<int>() == expected_i++;
    }
  }
  CHECK(in_order);  // FIFO within one priority
  CHECK(claimed == ids);
  CHECK(b.counts("q").active == 10'000);
}

TEMPLATE_LIST_TEST_CASE("a bulk enqueue with one invalid job writes nothing", "[conformance]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  std::vector<jobq::NewJob> batch{make_job(), make_job(), make_job("bad queue!")};
  CHECK_THROWS_AS(b.enqueue_many(batch), jobq::InvalidArgument);
  CHECK(b.counts("q") == jobq::Counts{});
}

TEMPLATE_LIST_TEST_CASE("8 threads claiming at once never share a job and drain the queue",
                        "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  constexpr int total = 2'000;
  std::vector<jobq::NewJob> batch;
  for (int i = 0; i < total; ++i) batch.push_back(make_job());
  b.enqueue_many(batch);
  std::mutex m;
  std::vector<jobq::JobId> all;
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      try {
        for (;;) {
          auto got = b.claim(claim_from({"q"}, 7));
          if (got.empty()) return;
          for (const auto& j : got) {
            if (!b.complete(j.id, j.lease_token, nullptr)) ++errors;
          }
          std::lock_guard lock(m);
          for (const auto& j : got) all.push_back(j.id);
        }
      } catch (...) {
        ++errors;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(errors == 0);
  CHECK(all.size() == static_cast<std::size_t>(total));
  CHECK(std::set<jobq::JobId>(all.begin(), all.end()).size() == static_cast<std::size_t>(total));
  CHECK(b.counts("q") == jobq::Counts{.completed = total});
}

TEMPLATE_LIST_TEST_CASE("wait_for_work wakes on enqueue and on stop", "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  const std::vector<std::string> queues{"q"};
  SECTION("ready work returns at once") {
    b.enqueue(make_job());
    const auto t0 = std::chrono::steady_clock::now();
    b.wait_for_work(queues, 10s, {});
    CHECK(std::chrono::steady_clock::now() - t0 < 5s);
  }
  SECTION("an enqueue wakes a waiter") {
    std::atomic<bool> woke{false};
    std::thread waiter([&] {
      b.wait_for_work(queues, 20s, {});
      woke = true;
    });
    std::this_thread::sleep_for(100ms);  // let it block
    b.enqueue(make_job());
    CHECK(eventually([&] { return woke.load(); }, 10s));
    waiter.join();
  }
  SECTION("a stop request ends the wait") {
    std::stop_source stop;
    std::atomic<bool> woke{false};
    std::thread waiter([&] {
      b.wait_for_work(queues, 20s, stop.get_token());
      woke = true;
    });
    std::this_thread::sleep_for(100ms);
    stop.request_stop();
    CHECK(eventually([&] { return woke.load(); }, 10s));
    waiter.join();
  }
}

// ---------------------------------------------------------------------------------------------
// Bad input

TEMPLATE_LIST_TEST_CASE("bad queue names, job names and options are refused, nothing written",
                        "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  const std::string too_long(jobq::max_queue_name_length + 1, 'x');
  for (const std::string& bad : {std::string(), too_long, std::string("has space"),
                                std::string("semi;colon"), std::string("{brace}"),
                                std::string("q'; DROP TABLE jobq_jobs;--")}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(b.enqueue(make_job(bad)), jobq::InvalidArgument);
    CHECK_THROWS_AS(jobq::Queue(b, bad), jobq::InvalidArgument);
  }
  CHECK_THROWS_AS(b.enqueue(make_job("q", {}, "")), jobq::InvalidArgument);
  CHECK_THROWS_AS(b.enqueue(make_job("q", {}, "two words")), jobq::InvalidArgument);
  auto zero = make_job();
  zero.max_attempts = 0;
  CHECK_THROWS_AS(b.enqueue(zero), jobq::InvalidArgument);
  auto custom = make_job();
  custom.backoff = jobq::Backoff::custom([](int) { return jobq::Millis{5}; });
  CHECK_THROWS_WITH(b.enqueue(custom), Catch::Contains("custom backoff"));
  CHECK(b.counts("q") == jobq::Counts{});
  try {
    b.enqueue(make_job(""));
    FAIL("no error");
  } catch (const jobq::Error& e) {
    CHECK(e.category() == jobq::ErrorCategory::invalid_argument);
    CHECK(std::string(e.what()).find("queue name") != std::string::npos);
  }
}

TEMPLATE_LIST_TEST_CASE("payloads that look like SQL or Lua are stored verbatim", "[conformance]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  const nlohmann::json payload = {
      {"sql", "'); DELETE FROM jobq_jobs; --"},
      {"lua", "]] redis.call('FLUSHALL') --[["},
      {"unicode", "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"},
      {"nested", {{"a", {1, 2.5, nullptr, true}}}},
      {"nul", std::string("a\0b", 3)},
  };
  const auto id = b.enqueue(make_job("q", payload, "x-y.z:1")).id;
  CHECK(b.get(id)->payload == payload);
  CHECK(claim_one(b).payload == payload);
}

// ---------------------------------------------------------------------------------------------
// Queue facade and Worker, end to end

TEMPLATE_LIST_TEST_CASE("Queue enqueues typed jobs with options", "[conformance][queue]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Queue q{b, "emails"};
  const auto id = q.enqueue(Greet{"ada"}, {.priority = 3, .delay = 30s, .max_attempts = 4,
                                           .backoff = jobq::Backoff::exponential(2s),
                                           .unique_key = "greet:ada"});
  auto j = q.get(id);
  REQUIRE(j);
  CHECK(j->name == "greet");
  CHECK(j->queue == "emails");
  CHECK(j->payload.template get<Greet>().who == "ada");
  CHECK(j->run_at == fx.clock.now() + 30s);
  CHECK(j->max_attempts == 4);
  CHECK(q.enqueue(Greet{"ada"}, {.unique_key = "greet:ada"}) == id);
  const std::vector<Greet> many{{"a"}, {"b"}, {"c"}};
  CHECK(q.enqueue_many(many).size() == 3);
  CHECK(q.counts().queued == 4);
  const auto raw = q.enqueue("resize", {{"w", 100}}, {.queue = "images"});
  CHECK(b.get(raw)->queue == "images");
}

TEMPLATE_LIST_TEST_CASE("a worker runs handlers and stores their results", "[conformance][worker]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Queue q{b, "q"};
  std::vector<jobq::JobId> ids;
  for (int i = 0; i < 20; ++i) ids.push_back(q.enqueue(Greet{std::string("user").append(std::to_string(i))}));
  const auto raw = q.enqueue("add", {{"a", 2}, {"b", 3}});
  jobq::Worker w{b, fast_worker(4)};
  w.template handle<Greet>([](const Greet& g, jobq::JobContext& ctx) {
    ctx.progress(50, "half");
    return "hello " + g.who;
  });
  w.handle("add", [](const nlohmann::json& p, jobq::JobContext&) { return p["a"].get<int>() + p["b"].get<int>(); });
  CHECK(w.run_until_idle(60s));
  CHECK(q.counts() == jobq::Counts{.completed = 21});
  CHECK(q.get(ids[3])->result == "hello user3");
  CHECK(q.get(ids[3])->progress == 50);
  CHECK(q.get(raw)->result == 5);
  CHECK(w.stats().processed == 21);
  CHECK(w.stats().failed == 0);
}

TEMPLATE_LIST_TEST_CASE("a worker retries a throwing handler until it succeeds", "[conformance][worker]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Queue q{b, "q"};
  const auto id = q.enqueue(Greet{"flaky", 2}, {.max_attempts = 5, .backoff = jobq::Backoff::fixed(0ms)});
  jobq::Worker w{b, fast_worker()};
  w.template handle<Greet>([](const Greet& g, jobq::JobContext& ctx) {
    if (ctx.attempt() <= g.fail_times) throw std::runtime_error(std::string("try ").append(std::to_string(ctx.attempt())));
  });
  CHECK(w.run_until_idle(60s));
  auto j = q.get(id);
  CHECK(j->state == JobState::completed);
  CHECK(j->attempts == 3);
  REQUIRE(j->errors.size() == 2);
  CHECK(j->errors[0].message == "try 1");
  CHECK(j->errors[1].message == "try 2");
  CHECK(w.stats().retried == 2);
  CHECK(w.stats().processed == 1);
}

TEMPLATE_LIST_TEST_CASE("a worker schedules retries by the backoff policy", "[conformance][worker]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Queue q{b, "q"};
  const auto exp_id = q.enqueue(Greet{"exp", 9}, {.max_attempts = 3, .backoff = jobq::Backoff::exponential(10s)});
  const auto custom_id = q.enqueue("custom", {}, {.max_attempts = 3});
  jobq::Worker w{b, fast_worker()};
  w.template handle<Greet>([](const Greet&) { throw std::runtime_error("no"); });
  w.handle("custom", [](const nlohmann::json&) { throw std::runtime_error("no"); },
           {.backoff = jobq::Backoff::custom([](int attempt) { return jobq::Millis{attempt * 7000}; })});
  w.start();
  const auto t0 = fx.clock.now();
  REQUIRE(eventually([&] { return q.get(exp_id)->errors.size() == 1 && q.get(custom_id)->errors.size() == 1; }));
  CHECK(q.get(exp_id)->run_at == t0 + 10s);
  CHECK(q.get(custom_id)->run_at == t0 + 7s);
  fx.clock.advance(10s);
  REQUIRE(eventually([&] { return q.get(exp_id)->errors.size() == 2 && q.get(custom_id)->errors.size() == 2; }));
  CHECK(q.get(exp_id)->run_at == t0 + 10s + 20s);
  CHECK(q.get(custom_id)->run_at == t0 + 10s + 14s);
  fx.clock.advance(20s);
  REQUIRE(eventually([&] { return q.get(exp_id)->state == JobState::dead && q.get(custom_id)->state == JobState::dead; }));
  w.stop();
  CHECK(q.get(exp_id)->errors.size() == 3);
  CHECK(w.stats().dead == 2);
}

TEMPLATE_LIST_TEST_CASE("jobq::Permanent sends a job to dead without retries", "[conformance][worker]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Queue q{b, "q"};
  const auto id = q.enqueue(Greet{"bad"}, {.max_attempts = 10});
  jobq::Worker w{b, fast_worker()};
  w.template handle<Greet>([](const Greet&) { throw jobq::Permanent("address rejected"); });
  CHECK(w.run_until_idle(60s));
  auto j = q.get(id);
  CHECK(j->state == JobState::dead);
  CHECK(j->attempts == 1);
  CHECK(j->errors.at(0).message == "address rejected");
}

TEMPLATE_LIST_TEST_CASE("a timed-out attempt is asked to stop and fails", "[conformance][worker]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Queue q{b, "q"};
  const auto id = q.enqueue(Greet{"slow"}, {.max_attempts = 1, .timeout = 100ms});
  std::atomic<bool> saw_stop{false};
  jobq::Worker w{b, fast_worker()};
  w.template handle<Greet>([&](const Greet&, jobq::JobContext& ctx) {
    const auto end = std::chrono::steady_clock::now() + 30s;
    while (!ctx.stop_requested() && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(1ms);
    saw_stop = ctx.stop_requested();
  });
  CHECK(w.run_until_idle(60s));
  CHECK(saw_stop);
  auto j = q.get(id);
  CHECK(j->state == JobState::dead);
  CHECK(j->errors.at(0).message.find("timed out") != std::string::npos);
}

TEMPLATE_LIST_TEST_CASE("graceful shutdown releases jobs that did not finish", "[conformance][worker]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Queue q{b, "q"};
  std::vector<jobq::JobId> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(q.enqueue(Greet{"x"}));
  auto opt = fast_worker(2);
  opt.shutdown_grace = 50ms;
  std::atomic<int> started{0};
  std::atomic<bool> release{false};
  jobq::Worker w{b, opt};
  w.template handle<Greet>([&](const Greet&, jobq::JobContext& ctx) {
    ++started;
    while (!ctx.stop_requested() && !release) std::this_thread::sleep_for(1ms);
  });
  w.start();
  REQUIRE(eventually([&] { return started.load() == 2; }));
  w.stop();
  const auto c = q.counts();
  CHECK(c.queued == 6);
  CHECK(c.active == 0);
  for (auto id : ids) CHECK(q.get(id)->attempts == 0);  // released attempts do not count
  CHECK(w.stats().in_flight == 0);
}

TEMPLATE_LIST_TEST_CASE("run_until_signal stops on SIGTERM and hands jobs back", "[conformance][worker]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Queue q{b, "q"};
  const auto id = q.enqueue(Greet{"long"});
  auto opt = fast_worker(1);
  opt.shutdown_grace = 20ms;
  std::atomic<bool> started{false};
  jobq::Worker w{b, opt};
  w.template handle<Greet>([&](const Greet&, jobq::JobContext& ctx) {
    started = true;
    while (!ctx.stop_requested()) std::this_thread::sleep_for(1ms);
  });
  const pthread_t self = pthread_self();
  std::thread killer([&] {
    if (eventually([&] { return started.load(); })) pthread_kill(self, SIGTERM);
  });
  w.run_until_signal();
  killer.join();
  CHECK(started);
  CHECK(q.get(id)->state == JobState::queued);
}

TEMPLATE_LIST_TEST_CASE("a payload of the wrong shape fails its job permanently, the worker goes on",
                        "[conformance][worker][bad-input]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Queue q{b, "q"};
  const auto bad = q.enqueue("greet", {{"who", 42}}, {.max_attempts = 5});
  const auto good = q.enqueue(Greet{"fine"});
  jobq::Worker w{b, fast_worker(1)};
  w.template handle<Greet>([](const Greet& g) { return g.who; });
  CHECK(w.run_until_idle(60s));
  auto j = q.get(bad);
  CHECK(j->state == JobState::dead);
  CHECK(j->attempts == 1);
  CHECK(j->errors.at(0).message.find("payload does not match job type 'greet'") != std::string::npos);
  CHECK(q.get(good)->state == JobState::completed);
}

TEMPLATE_LIST_TEST_CASE("a job with no handler fails with a clear error and is kept",
                        "[conformance][worker][bad-input]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Queue q{b, "q"};
  const auto id = q.enqueue("nobody-handles-this", {}, {.max_attempts = 2, .backoff = jobq::Backoff::fixed(0ms)});
  jobq::Worker w{b, fast_worker(1)};
  w.template handle<Greet>([](const Greet&) {});
  CHECK(w.run_until_idle(60s));
  auto j = q.get(id);
  CHECK(j->state == JobState::dead);  // kept: it can be re-driven once a handler exists
  CHECK(j->errors.at(0).message.find("no handler registered for job 'nobody-handles-this'") != std::string::npos);
  CHECK(q.redrive(id));
}

TEMPLATE_LIST_TEST_CASE("a worker recovers leases abandoned by a dead worker", "[conformance][worker]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Queue q{b, "q"};
  const auto id = q.enqueue(Greet{"orphan"});
  const auto lost = b.claim(claim_from({"q"}, 1, 10s));  // a worker that then "crashed"
  REQUIRE(lost.size() == 1);
  fx.clock.advance(11s);
  auto opt = fast_worker(1);
  opt.maintenance_interval = 10ms;
  jobq::Worker w{b, opt};
  w.template handle<Greet>([](const Greet&) {});
  CHECK(w.run_until_idle(60s));
  auto j = q.get(id);
  CHECK(j->state == JobState::completed);
  CHECK(j->attempts == 2);
  CHECK(j->errors.size() == 1);
  CHECK_FALSE(b.complete(id, lost[0].lease_token, nullptr));
}

TEMPLATE_LIST_TEST_CASE("worker options are validated", "[conformance][worker][bad-input]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  using W = jobq::Worker<std::remove_reference_t<decltype(b)>>;
  CHECK_THROWS_AS(W(b, {}), jobq::InvalidArgument);
  CHECK_THROWS_AS(W(b, {.queues = {"bad name"}}), jobq::InvalidArgument);
  CHECK_THROWS_AS(W(b, {.queues = {"q"}, .concurrency = 0}), jobq::InvalidArgument);
}

TEMPLATE_LIST_TEST_CASE("a worker heartbeats the leases of running jobs", "[conformance][worker]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Queue q{b, "q"};
  const auto id = q.enqueue(Greet{"long"});
  auto opt = fast_worker(1);
  opt.lease = 300ms;  // heartbeats every 100 ms of real time, each to manual now + 300 ms
  std::atomic<bool> started{false};
  std::atomic<bool> finish{false};
  jobq::Worker w{b, opt};
  w.template handle<Greet>([&](const Greet&, jobq::JobContext& ctx) {
    started = true;
    while (!finish && !ctx.stop_requested()) std::this_thread::sleep_for(1ms);
  });
  w.start();
  REQUIRE(eventually([&] { return started.load(); }));
  for (int i = 0; i < 3; ++i) {
    fx.clock.advance(250ms);  // past the claim's deadline, but the heartbeat moves it along
    const auto target = fx.clock.now() + 300ms;
    CHECK(eventually([&] { return q.get(id)->lease_until == target; }, 10s));
    CHECK(b.recover_expired() == jobq::Recovered{0, 0});
  }
  finish = true;
  w.stop();
  CHECK(q.get(id)->state == JobState::completed);
  CHECK(q.get(id)->attempts == 1);
}

TEMPLATE_LIST_TEST_CASE("Queue enqueue honours an absolute run_at and bulk NewJobs", "[conformance][queue]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Queue q{b, "q"};
  const auto at = fx.clock.now() + 2h;
  const auto id = q.enqueue("report", {{"month", 11}}, {.delay = 5s, .run_at = at});
  CHECK(q.get(id)->run_at == at);  // run_at wins over delay
  std::vector<jobq::NewJob> mixed{q.make("a", {{"x", 1}}), q.make(Greet{"z"}, {.priority = 4})};
  const auto ids = q.enqueue_many(mixed);
  REQUIRE(ids.size() == 2);
  CHECK(q.get(ids[1])->priority == 4);
  CHECK(q.get(ids[1])->name == "greet");
  const auto dup = q.submit(q.make("a", {}, {.unique_key = "u"}));
  CHECK(dup.created);
  CHECK_FALSE(q.submit(q.make("a", {}, {.unique_key = "u"})).created);
}

// queues() is a capability every shipped backend has (the CLI's and dashboard's directory); the
// Backend concept does not require it, so a minimal custom backend still fits AnyBackend.
TEMPLATE_LIST_TEST_CASE("queues() names every queue with jobs or a pause", "[conformance][queues]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  CHECK(b.queues().empty());
  b.enqueue(make_job("beta"));
  b.enqueue(make_job("alpha"));
  b.enqueue(make_job("alpha"));
  b.pause("gamma");
  CHECK(b.queues() == std::vector<std::string>{"alpha", "beta", "gamma"});
}

// Limits, groups, throttle/debounce, schedules, notices, wait_for, payload size, injection.
#include "conformance/features.hpp"
// Deeply nested values, invalid UTF-8, the ends of int and duration ranges.
#include "conformance/bad_input.hpp"
