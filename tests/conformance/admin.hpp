#pragma once
// Conformance cases: unique keys, cancel, pause, counts, retention, listing and queues().

#include "conformance/common.hpp"

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
    ids.push_back(b.enqueue(with_attempts(1)).id);
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
  const auto one = with_attempts(1);
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

TEMPLATE_LIST_TEST_CASE("retention by count keeps the newest finished jobs of each state", "[conformance]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto one = with_attempts(1);
  std::vector<jobq::JobId> completed, dead;
  for (int i = 0; i < 5; ++i) {
    const auto id = b.enqueue(one).id;
    auto j = claim_one(b);
    REQUIRE(j.id == id);
    b.complete(id, j.lease_token, nullptr);
    completed.push_back(id);
    fx.clock.advance(1s);
  }
  for (int i = 0; i < 3; ++i) {
    const auto id = b.enqueue(one).id;
    auto j = claim_one(b);
    REQUIRE(j.id == id);
    b.fail({id, j.lease_token, "x", std::nullopt});
    dead.push_back(id);
    fx.clock.advance(1s);
  }
  const auto other = b.enqueue(make_job("other")).id;
  {
    auto o = claim_one(b, "other");
    b.complete(other, o.lease_token, nullptr);
  }
  const auto queued = b.enqueue(one).id;

  const jobq::Retention count_only{.completed = std::nullopt, .dead = std::nullopt,
                                   .cancelled = std::nullopt, .max_jobs = 2};
  CHECK(b.prune("q", count_only) == 3 + 1);  // the three oldest completed, the oldest dead
  for (std::size_t i = 0; i < completed.size(); ++i) CHECK(b.get(completed[i]).has_value() == (i >= 3));
  CHECK_FALSE(b.get(dead[0]));
  CHECK(b.get(dead[1]));
  CHECK(b.get(dead[2]));
  CHECK(b.get(other));   // other queue untouched
  CHECK(b.get(queued));  // never finished: never pruned
  CHECK(b.prune("q", count_only) == 0);
  CHECK(b.counts("q") == jobq::Counts{.queued = 1, .completed = 2, .dead = 2});

  // Age and count together: age first, then the cap on what is left.
  const jobq::Retention both{.completed = 4500ms, .dead = std::nullopt, .cancelled = std::nullopt, .max_jobs = 1};
  CHECK(b.prune("q", both) == 2);  // completed[3] by age (completed[4] is younger), dead[1] by count
  CHECK_FALSE(b.get(completed[3]));
  CHECK(b.get(completed[4]));
  CHECK_FALSE(b.get(dead[1]));
  CHECK(b.get(dead[2]));
  CHECK(b.counts("q") == jobq::Counts{.queued = 1, .completed = 1, .dead = 1});
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
