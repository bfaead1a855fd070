#pragma once
// Conformance cases: the job page's actions and search (issue 18): run_now, remove and
// find_unique.

#include "conformance/common.hpp"

// ---------------------------------------------------------------------------------------------
// run_now

TEMPLATE_LIST_TEST_CASE("run_now makes a delayed job claimable at once, untouched otherwise", "[conformance]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  auto later = make_job();
  later.run_at = fx.clock.now() + 1h;
  later.priority = 3;
  const auto id = b.enqueue(later).id;
  CHECK(b.claim(claim_from({"q"})).empty());
  CHECK(b.run_now(id));
  const auto before = b.get(id);
  REQUIRE(before);
  CHECK(before->state == JobState::queued);
  CHECK(before->run_at == fx.clock.now());
  CHECK(before->attempts == 0);
  CHECK(before->priority == 3);
  const auto j = claim_one(b);  // the clock has not moved
  CHECK(j.id == id);
  CHECK(j.attempts == 1);
  CHECK(b.counts("q") == jobq::Counts{.active = 1});
}

TEMPLATE_LIST_TEST_CASE("run_now of a job waiting out a retry backoff keeps its attempts and errors",
                        "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto id = b.enqueue(with_attempts(5)).id;
  const auto j = claim_one(b);
  REQUIRE(b.fail({id, j.lease_token, "smtp timeout", fx.clock.now() + 10min}) == jobq::FailOutcome::retried);
  CHECK(b.claim(claim_from({"q"})).empty());
  CHECK(b.run_now(id));
  const auto again = claim_one(b);
  CHECK(again.id == id);
  CHECK(again.attempts == 2);
  REQUIRE(again.errors.size() == 1);
  CHECK(again.errors[0].message == "smtp timeout");
  CHECK(again.errors[0].attempt == 1);
}

TEMPLATE_LIST_TEST_CASE("run_now refuses due, active, finished and unknown jobs", "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto due = b.enqueue(make_job()).id;
  CHECK_FALSE(b.run_now(due));  // already due
  const auto j = claim_one(b);
  CHECK_FALSE(b.run_now(due));  // active
  REQUIRE(b.complete(due, j.lease_token, nullptr));
  CHECK_FALSE(b.run_now(due));  // completed
  auto later = make_job();
  later.run_at = fx.clock.now() + 1h;
  const auto cancelled = b.enqueue(later).id;
  REQUIRE(b.cancel(cancelled));
  CHECK_FALSE(b.run_now(cancelled));
  CHECK_FALSE(b.run_now(987'654'321));
  const auto c = b.get(cancelled);
  REQUIRE(c);
  CHECK(c->state == JobState::cancelled);
  CHECK(c->run_at == fx.clock.now() + 1h);
  CHECK(b.counts("q") == jobq::Counts{.completed = 1, .cancelled = 1});
}

TEMPLATE_LIST_TEST_CASE("run_now wakes a worker waiting on the queue", "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  auto later = make_job();
  later.run_at = fx.clock.now() + 1h;
  const auto id = b.enqueue(later).id;
  check_wait_ended_by(b, {}, [&] { CHECK(b.run_now(id)); });
}

TEMPLATE_LIST_TEST_CASE("run_now on one object makes a job another object delayed claimable there",
                        "[conformance]", Backends) {
  TestType fx;
  auto& a = fx.backend();
  auto& other = fx.second_backend();
  auto later = make_job();
  later.run_at = fx.clock.now() + 1h;
  const auto id = a.enqueue(later).id;
  CHECK(a.claim(claim_from({"q"})).empty());
  CHECK(other.run_now(id));
  CHECK_FALSE(other.run_now(id));  // due now
  CHECK(claim_one(a).id == id);
}

// ---------------------------------------------------------------------------------------------
// remove

TEMPLATE_LIST_TEST_CASE("remove deletes completed, dead and cancelled jobs", "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto done = b.enqueue(make_job()).id;
  const auto j = claim_one(b);
  REQUIRE(b.complete(done, j.lease_token, {{"ok", true}}));
  const auto dead = b.enqueue(with_attempts(1)).id;
  const auto k = claim_one(b);
  REQUIRE(b.fail({dead, k.lease_token, "boom", std::nullopt}) == jobq::FailOutcome::dead);
  const auto cancelled = b.enqueue(make_job()).id;
  REQUIRE(b.cancel(cancelled));
  const auto kept = b.enqueue(make_job()).id;
  REQUIRE(b.counts("q") == jobq::Counts{.queued = 1, .completed = 1, .dead = 1, .cancelled = 1});

  CHECK(b.remove(done));
  CHECK_FALSE(b.get(done));
  CHECK(b.counts("q") == jobq::Counts{.queued = 1, .dead = 1, .cancelled = 1});
  CHECK(b.remove(dead));
  CHECK_FALSE(b.get(dead));
  CHECK(b.remove(cancelled));
  CHECK_FALSE(b.get(cancelled));
  CHECK(b.counts("q") == jobq::Counts{.queued = 1});
  CHECK(b.list("q", JobState::completed, {}).empty());
  CHECK(b.list("q", JobState::dead, {}).empty());
  CHECK(b.list("q", JobState::cancelled, {}).empty());
  CHECK_FALSE(b.remove(done));  // gone already
  CHECK_FALSE(b.redrive(dead));
  const std::vector<jobq::JobId> ids{done, dead, kept};
  const auto many = b.get_many(ids);
  REQUIRE(many.size() == 3);
  CHECK_FALSE(many[0]);
  CHECK_FALSE(many[1]);
  CHECK(many[2]);
  CHECK(b.prune("q", jobq::Retention{.completed = 0ms, .dead = 0ms, .cancelled = 0ms}) == 0);
}

TEMPLATE_LIST_TEST_CASE("remove refuses queued, active and unknown jobs", "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto active = b.enqueue(make_job()).id;
  const auto j = claim_one(b);
  const auto queued = b.enqueue(make_job()).id;
  auto later = make_job();
  later.run_at = fx.clock.now() + 1h;
  const auto delayed = b.enqueue(later).id;
  CHECK_FALSE(b.remove(active));
  CHECK_FALSE(b.remove(queued));
  CHECK_FALSE(b.remove(delayed));
  CHECK_FALSE(b.remove(987'654'321));
  const auto c = b.counts("q");  // fields, not the whole Counts: a delayed count may be added
  CHECK(c.queued == 2);
  CHECK(c.active == 1);
  CHECK(b.complete(active, j.lease_token, nullptr));  // its lease is untouched
  CHECK(claim_one(b).id == queued);
}

TEMPLATE_LIST_TEST_CASE("a removed job's unique key is free again", "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  auto nj = make_job();
  nj.unique_key = "report:2026-12";
  nj.unique_for = 1h;  // completed, it would hold the key for an hour
  const auto first = b.enqueue(nj).id;
  const auto j = claim_one(b);
  REQUIRE(b.complete(first, j.lease_token, nullptr));
  CHECK(b.enqueue(nj).id == first);
  CHECK(b.remove(first));
  CHECK_FALSE(b.find_unique("q", nj.unique_key));
  const auto next = b.enqueue(nj);
  CHECK(next.created);
  CHECK(next.id != first);
  CHECK(b.find_unique("q", nj.unique_key) == next.id);
  CHECK(b.enqueue(nj).id == next.id);
}

TEMPLATE_LIST_TEST_CASE("remove refuses flow members: flows are deleted whole, by prune", "[conformance]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::NewFlow flow;
  flow.members.push_back({make_job(), {}, false});
  flow.members.push_back({make_job(), {0}, false});
  const auto ids = b.enqueue_flow(flow);
  REQUIRE(ids.size() == 2);
  REQUIRE(b.cancel_flow(ids[0]) == 2);
  CHECK_FALSE(b.remove(ids[0]));
  CHECK_FALSE(b.remove(ids[1]));
  CHECK(b.get(ids[0]));
  CHECK(b.get(ids[1]));
  const auto f = b.flow(ids[1]);
  REQUIRE(f);
  CHECK(f->members.size() == 2);
  CHECK(b.counts("q") == jobq::Counts{.cancelled = 2});
}

// ---------------------------------------------------------------------------------------------
// find_unique

TEMPLATE_LIST_TEST_CASE("find_unique finds the job an enqueue with the key would dedupe to", "[conformance]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  auto nj = make_job();
  nj.unique_key = "sync:account-9";
  CHECK_FALSE(b.find_unique("q", nj.unique_key));
  const auto id = b.enqueue(nj).id;
  b.enqueue(make_job());  // no key
  CHECK(b.find_unique("q", nj.unique_key) == id);
  CHECK_FALSE(b.find_unique("other", nj.unique_key));  // keys are per queue
  CHECK_FALSE(b.find_unique("q", "sync:account-10"));
  CHECK(b.find_unique("q", nj.unique_key) == b.enqueue(nj).id);
  const auto j = claim_one(b);
  REQUIRE(j.id == id);
  CHECK(b.find_unique("q", nj.unique_key) == id);  // active still holds it
  REQUIRE(b.complete(id, j.lease_token, nullptr));
  CHECK_FALSE(b.find_unique("q", nj.unique_key));  // released on completion
  const auto next = b.enqueue(nj).id;
  CHECK(next != id);
  CHECK(b.find_unique("q", nj.unique_key) == next);
  REQUIRE(b.cancel(next));
  CHECK_FALSE(b.find_unique("q", nj.unique_key));  // cancelled jobs release it
}

TEMPLATE_LIST_TEST_CASE("find_unique follows unique_for after completion, and dead jobs release the key",
                        "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  auto nj = with_attempts(1);
  nj.unique_key = "digest:user-1";
  nj.unique_for = 1h;
  const auto id = b.enqueue(nj).id;
  const auto j = claim_one(b);
  REQUIRE(b.complete(id, j.lease_token, nullptr));
  fx.clock.advance(59min);
  CHECK(b.find_unique("q", nj.unique_key) == id);
  CHECK(b.enqueue(nj).id == id);
  fx.clock.advance(1min);
  CHECK_FALSE(b.find_unique("q", nj.unique_key));
  const auto next = b.enqueue(nj).id;
  CHECK(next != id);
  const auto k = claim_one(b);
  REQUIRE(b.fail({next, k.lease_token, "x", std::nullopt}) == jobq::FailOutcome::dead);
  CHECK_FALSE(b.find_unique("q", nj.unique_key));
}

TEMPLATE_LIST_TEST_CASE("find_unique checks its queue name and key", "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  CHECK_THROWS_AS(b.find_unique("", "k"), jobq::InvalidArgument);
  CHECK_THROWS_AS(b.find_unique("has space", "k"), jobq::InvalidArgument);
  CHECK_THROWS_AS(b.find_unique("{brace}", "k"), jobq::InvalidArgument);
  CHECK_THROWS_AS(b.find_unique("q", ""), jobq::InvalidArgument);
  CHECK_THROWS_AS(b.find_unique("q", std::string(jobq::max_unique_key_length + 1, 'k')), jobq::InvalidArgument);
  CHECK_THROWS_AS(b.find_unique("q", "\xff\xfe"), jobq::InvalidArgument);
  CHECK(b.counts("q") == jobq::Counts{});
}
