#pragma once
// Conformance cases for deadlines of queued jobs (EnqueueOptions::expires_at / expire_in): a job
// not started by its deadline is never run and ends cancelled with the reason, whether a claim
// meets it or only the maintenance pass (recover_expired) does. See Backend::claim.

#include "conformance/common.hpp"
#include "conformance/two_objects.hpp"

namespace conformance {

/// make_job() whose deadline is `at`.
inline jobq::NewJob expiring(jobq::TimePoint at, jobq::NewJob j = make_job()) {
  j.expires_at = at;
  return j;
}

/// Checks job `id` ended as an expired job does: cancelled at `now`, with the reason last.
template <class B>
void check_expired(B& b, jobq::JobId id, jobq::TimePoint deadline, jobq::TimePoint now) {
  auto j = b.get(id);
  REQUIRE(j.has_value());
  CHECK(j->state == JobState::cancelled);
  CHECK(j->finished_at == now);
  REQUIRE_FALSE(j->errors.empty());
  CHECK(j->errors.back().message == jobq::expired_error(deadline));
  CHECK(j->errors.back().at == now);
}

/// No claim from `queues` gets a job now; then the maintenance pass runs (it expires the late ones).
template <class B>
void claim_nothing_then_maintain(B& b, std::vector<std::string> queues = {"q"}) {
  CHECK(b.claim(claim_from(std::move(queues), 10)).empty());
  b.recover_expired();
}

}  // namespace conformance

TEMPLATE_LIST_TEST_CASE("a job with expire_in claimed in time runs, and once started its deadline no longer applies",
                        "[conformance][deadline][two-objects]", Backends) {
  TestType fx;
  auto& a = fx.backend();
  auto& b = fx.second_backend();
  jobq::Queue<std::remove_reference_t<decltype(a)>> q{a, "q"};
  const auto deadline = fx.clock.now() + 10s;
  const auto id = q.enqueue("noop", {{"n", 1}}, {.expire_in = 10s});
  CHECK(b.get(id)->expires_at == deadline);
  CHECK(jobq::to_json(*b.get(id))["expires_at"] == jobq::to_epoch_ms(deadline));
  fx.clock.advance(10s);  // at the deadline itself a job may still start
  auto job = claim_one(b);
  CHECK(job.id == id);
  CHECK(job.expires_at == deadline);
  fx.clock.advance(20s);
  b.recover_expired();  // the lease (30 s) still holds: nothing to do
  CHECK(a.get(id)->state == JobState::active);
  CHECK(a.complete(id, job.lease_token, nullptr));
  CHECK(b.get(id)->state == JobState::completed);
  CHECK(b.get(id)->errors.empty());
}

TEMPLATE_LIST_TEST_CASE("a job whose deadline passes while queued is never claimed and ends cancelled with the reason",
                        "[conformance][deadline][two-objects]", Backends) {
  TestType fx;
  auto& a = fx.backend();
  auto& b = fx.second_backend();
  const auto deadline = fx.clock.now() + 5s;
  auto late = expiring(deadline);
  late.priority = 10;  // first in claim order
  const auto expired = a.enqueue(late).id;
  const auto plain = a.enqueue(make_job()).id;
  const auto kept = a.enqueue(expiring(fx.clock.now() + 1h)).id;
  fx.clock.advance(5s + 1ms);
  const auto got = b.claim(claim_from({"q"}, 10));
  CHECK(ids_of(got) == std::vector<jobq::JobId>{plain, kept});
  b.recover_expired();  // ends it if the claim only stepped over it
  check_expired(a, expired, deadline, fx.clock.now());
  CHECK(a.get(expired)->attempts == 0);
  CHECK(a.counts("q").cancelled == 1);
  CHECK(a.counts("q").queued == 0);
  CHECK_FALSE(a.cancel(expired));  // terminal
  claim_nothing_then_maintain(b);
}

TEMPLATE_LIST_TEST_CASE("a deadline in the past or before run_at is refused, nothing written",
                        "[conformance][deadline][bad-input]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto now = fx.clock.now();
  CHECK_THROWS_AS(b.enqueue(expiring(now - 1ms)), jobq::InvalidArgument);
  auto delayed = expiring(now + 5s);
  delayed.run_at = now + 10s;
  CHECK_THROWS_WITH(b.enqueue(delayed), Catch::Contains("before run_at") && Catch::Contains("could never start"));
  const std::vector<jobq::NewJob> batch{make_job(), expiring(now - 1s)};
  CHECK_THROWS_AS(b.enqueue_many(batch), jobq::InvalidArgument);
  jobq::Flow flow;
  flow.chain({make_job(), expiring(now - 1s)});
  CHECK_THROWS_AS(b.enqueue_flow(flow.spec()), jobq::InvalidArgument);
  jobq::Queue<std::remove_reference_t<decltype(b)>> q{b, "q"};
  CHECK_THROWS_AS(q.enqueue("noop", {}, {.delay = 1min, .expire_in = 30s}), jobq::InvalidArgument);
  CHECK(b.counts("q") == jobq::Counts{});
  auto same = expiring(now + 5s);
  same.run_at = now + 5s;  // a deadline at run_at itself leaves an instant to start
  CHECK(b.enqueue(same).created);
  const auto many = b.enqueue_many(std::vector<jobq::NewJob>{expiring(now + 1s), expiring(now + 2s)});
  CHECK(b.get(many[1].id)->expires_at == now + 2s);
}

TEMPLATE_LIST_TEST_CASE("a retrying job whose deadline passes before its next attempt ends cancelled",
                        "[conformance][deadline][two-objects]", Backends) {
  TestType fx;
  auto& a = fx.backend();
  auto& b = fx.second_backend();
  const auto deadline = fx.clock.now() + 10s;
  const auto id = a.enqueue(expiring(deadline, with_attempts(3))).id;
  auto job = claim_one(a);
  REQUIRE(a.fail({id, job.lease_token, "boom", fx.clock.now() + 20s}) == jobq::FailOutcome::retried);
  fx.clock.advance(30s);
  claim_nothing_then_maintain(b);
  check_expired(a, id, deadline, fx.clock.now());
  const auto errors = a.get(id)->errors;
  REQUIRE(errors.size() == 2);
  CHECK(errors[0].message == "boom");
  CHECK(errors[1].attempt == 1);
}

TEMPLATE_LIST_TEST_CASE("a released job that misses its deadline expires too",
                        "[conformance][deadline]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto deadline = fx.clock.now() + 10s;
  const auto id = b.enqueue(expiring(deadline)).id;
  auto job = claim_one(b);
  REQUIRE(b.release(id, job.lease_token));
  fx.clock.advance(11s);
  claim_nothing_then_maintain(b);
  check_expired(b, id, deadline, fx.clock.now());
}

TEMPLATE_LIST_TEST_CASE("the maintenance pass expires jobs of a queue nobody claims from, delayed ones too",
                        "[conformance][deadline][two-objects]", Backends) {
  TestType fx;
  auto& a = fx.backend();
  auto& b = fx.second_backend();
  const auto t0 = fx.clock.now();
  const auto ready = a.enqueue(expiring(t0 + 1s, make_job("idle"))).id;
  auto later = expiring(t0 + 1s, make_job("idle"));
  later.run_at = t0 + 1s;
  const auto delayed = a.enqueue(later).id;
  const auto kept = a.enqueue(expiring(t0 + 1h, make_job("idle"))).id;
  b.recover_expired();
  CHECK(a.counts("idle").cancelled == 0);
  fx.clock.advance(2s);
  b.recover_expired();
  check_expired(a, ready, t0 + 1s, fx.clock.now());
  check_expired(a, delayed, t0 + 1s, fx.clock.now());
  CHECK(state_of(a, kept) == JobState::queued);
  const auto c = a.counts("idle");
  CHECK(c.cancelled == 2);
  CHECK(c.queued == 1);
  b.recover_expired();  // nothing left to expire: no change
  CHECK(a.counts("idle") == c);
}

TEMPLATE_LIST_TEST_CASE("an expired job frees its unique key", "[conformance][deadline][unique][two-objects]",
                        Backends) {
  TestType fx;
  auto& a = fx.backend();
  auto& b = fx.second_backend();
  auto j = expiring(fx.clock.now() + 1s);
  j.unique_key = "k";
  const auto first = a.enqueue(j).id;
  CHECK(b.enqueue(make_job()).created);
  auto again = make_job();
  again.unique_key = "k";
  CHECK(b.enqueue(again).id == first);  // held while queued
  fx.clock.advance(2s);
  b.recover_expired();
  CHECK(state_of(a, first) == JobState::cancelled);
  CHECK_FALSE(a.find_unique("q", "k").has_value());
  const auto second = b.enqueue(again);
  CHECK(second.created);
  CHECK(second.id != first);
}

TEMPLATE_LIST_TEST_CASE("a flow member that expires cancels what depends on it",
                        "[conformance][deadline][flow][two-objects]", Backends) {
  TestType fx;
  auto& a = fx.backend();
  auto& b = fx.second_backend();
  const auto deadline = fx.clock.now() + 1s;
  jobq::Flow flow;
  flow.chain({expiring(deadline, make_job("q1")), make_job("q2")});
  const auto ids = a.enqueue_flow(flow.spec());
  REQUIRE(ids.size() == 2);
  CHECK(b.get(ids[0])->expires_at == deadline);
  fx.clock.advance(2s);
  claim_nothing_then_maintain(b, {"q1", "q2"});
  check_expired(a, ids[0], deadline, fx.clock.now());
  CHECK(state_of(a, ids[1]) == JobState::cancelled);
  CHECK(a.get(ids[1])->errors.back().message == jobq::cancelled_dependency_error(ids[0]));
}

TEMPLATE_LIST_TEST_CASE("a claim from limited queues steps over jobs past their deadline too",
                        "[conformance][deadline][limits]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  b.set_queue_limits("lim", {.group_concurrency = 1, .concurrency = 10});
  auto late = expiring(fx.clock.now() + 1s, make_job("lim"));
  late.priority = 5;
  late.group = "g";
  const auto expired = b.enqueue(late).id;
  auto grouped = make_job("lim");
  grouped.group = "g";
  const auto ready = b.enqueue(grouped).id;
  const auto other = b.enqueue(make_job("q")).id;
  fx.clock.advance(2s);
  CHECK(ids_of(b.claim(claim_from({"lim"}, 10))) == std::vector<jobq::JobId>{ready});
  CHECK(ids_of(b.claim(claim_from({"lim", "q"}, 10))) == std::vector<jobq::JobId>{other});
  b.recover_expired();
  check_expired(b, expired, fx.clock.now() - 1s, fx.clock.now());
}
