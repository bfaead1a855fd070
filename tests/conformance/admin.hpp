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

TEMPLATE_LIST_TEST_CASE("queued, delayed and active jobs can be cancelled, finished ones cannot", "[conformance][cancel]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq_test::NoticeLog log;
  auto sub = b.subscribe({}, log.fn());
  const auto a = b.enqueue(make_job()).id;
  auto later = make_job();
  later.run_at = fx.clock.now() + 1h;
  const auto d = b.enqueue(later).id;
  CHECK(b.cancel(d));  // delayed jobs are queued too
  const auto j = claim_one(b, "q", 10s);
  REQUIRE(j.id == a);
  fx.clock.advance(1s);
  CHECK(b.cancel(a));  // active: its worker finds out at its next heartbeat
  auto s = b.get(a);
  REQUIRE(s);
  CHECK(s->state == JobState::cancelled);
  CHECK(s->finished_at == fx.clock.now());
  CHECK_FALSE(s->lease_until);
  CHECK(s->lease_token.empty());
  CHECK(s->attempts == 1);
  CHECK(state_of(b, d) == JobState::cancelled);
  CHECK(b.get(d)->finished_at);
  CHECK(b.counts("q") == jobq::Counts{.cancelled = 2});
  CHECK_FALSE(b.cancel(d));
  CHECK_FALSE(b.cancel(a));
  CHECK_FALSE(b.cancel(a + 1000000));

  const auto done = b.enqueue(make_job()).id;
  const auto dj = claim_one(b);
  REQUIRE(b.complete(done, dj.lease_token, nullptr));
  CHECK_FALSE(b.cancel(done));
  CHECK(state_of(b, done) == JobState::completed);
  fx.clock.advance(2h);
  CHECK(b.claim(claim_from({"q"})).empty());
  using K = jobq::JobNotice::Kind;
  CHECK(eventually([&] { return log.has(K::cancelled, a) && log.has(K::cancelled, d); }));
}

TEMPLATE_LIST_TEST_CASE("the worker of a cancelled active job is refused and changes nothing", "[conformance][cancel]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto id = b.enqueue(make_job()).id;
  const auto j = claim_one(b, "q", 10s);
  REQUIRE(b.set_progress(id, j.lease_token, 30, "a third"));
  REQUIRE(b.cancel(id));
  CHECK_FALSE(b.extend_lease(id, j.lease_token, 10s));  // the heartbeat tells the worker
  CHECK_FALSE(b.complete(id, j.lease_token, {{"late", true}}));
  CHECK(b.complete_many(std::vector<jobq::Completion>{{id, j.lease_token, nullptr}}) == std::vector<bool>{false});
  CHECK(b.fail({id, j.lease_token, "late", b.now()}) == jobq::FailOutcome::rejected);
  CHECK(b.fail({id, j.lease_token, "late", std::nullopt}) == jobq::FailOutcome::rejected);
  CHECK_FALSE(b.set_progress(id, j.lease_token, 90, "late"));
  CHECK_FALSE(b.snooze(id, j.lease_token, b.now() + 1min));
  CHECK_FALSE(b.release(id, j.lease_token));
  fx.clock.advance(1h);  // far past the lease it had
  CHECK(b.recover_expired() == jobq::Recovered{0, 0});
  auto s = b.get(id);
  REQUIRE(s);
  CHECK(s->state == JobState::cancelled);
  CHECK(s->finished_at == fx.clock.now() - 1h);
  CHECK(s->result.is_null());
  CHECK(s->errors.empty());
  CHECK(s->attempts == 1);
  CHECK(s->progress == 30);
  CHECK(b.counts("q") == jobq::Counts{.cancelled = 1});
  CHECK(b.claim(claim_from({"q"})).empty());
}

TEMPLATE_LIST_TEST_CASE("cancelling an active job releases its unique key and its group's slot",
                        "[conformance][cancel][limits]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  b.set_queue_limits("q", {std::nullopt, 1});
  auto keyed = make_job();
  keyed.unique_key = "only-one";
  keyed.group = "g";
  const auto first = b.enqueue(keyed).id;
  auto other = make_job();
  other.group = "g";
  const auto next = b.enqueue(other).id;
  REQUIRE(claim_one(b).id == first);
  CHECK(b.claim(claim_from({"q"})).empty());  // the group is at its limit
  CHECK(b.enqueue(keyed).id == first);         // the active job holds the key
  REQUIRE(b.cancel(first));
  CHECK(claim_one(b).id == next);
  const auto again = b.enqueue(keyed);
  CHECK(again.created);
  CHECK(again.id != first);
}

// ---------------------------------------------------------------------------------------------
// cancel_many and redrive_many: cancel / redrive of each id in order, in one call

TEMPLATE_LIST_TEST_CASE("cancel_many cancels each queued or active job once, in input order, and refuses the rest",
                        "[conformance][bulk]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq_test::NoticeLog log;
  auto sub = b.subscribe({}, log.fn());
  const auto active = b.enqueue(make_job()).id;
  const auto done = b.enqueue(make_job()).id;
  for (const auto& j : b.claim(claim_from({"q"}, 2))) {
    if (j.id == done) REQUIRE(b.complete(done, j.lease_token, nullptr));
  }
  const auto queued = b.enqueue(make_job()).id;
  auto later = make_job("other");
  later.run_at = fx.clock.now() + 1h;
  const auto delayed = b.enqueue(later).id;
  const std::vector<jobq::JobId> ids{queued, active, done, queued + 1'000'000, queued, delayed, active};
  CHECK(b.cancel_many(ids) == std::vector<bool>{true, true, false, false, false, true, false});
  CHECK(state_of(b, queued) == JobState::cancelled);
  CHECK(b.get(queued)->finished_at == fx.clock.now());
  CHECK(state_of(b, delayed) == JobState::cancelled);
  CHECK(state_of(b, active) == JobState::cancelled);
  CHECK(b.get(active)->lease_token.empty());
  CHECK(state_of(b, done) == JobState::completed);
  CHECK(b.counts("q") == jobq::Counts{.completed = 1, .cancelled = 2});
  CHECK(b.counts("other") == jobq::Counts{.cancelled = 1});
  using K = jobq::JobNotice::Kind;
  CHECK(eventually([&] {
    return log.has(K::cancelled, queued) && log.has(K::cancelled, delayed) && log.has(K::cancelled, active);
  }));
  CHECK(b.cancel_many(std::vector<jobq::JobId>{queued, delayed, active}) == std::vector<bool>{false, false, false});
}

TEMPLATE_LIST_TEST_CASE("redrive_many re-drives the dead jobs of two queues, each once", "[conformance][bulk]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto d1 = b.enqueue(with_attempts(1)).id;
  const auto d2 = b.enqueue(with_attempts(1)).id;
  const auto d3 = b.enqueue(with_attempts(1, make_job("other"))).id;
  for (const auto& j : b.claim(claim_from({"q", "other"}, 3))) {
    REQUIRE(b.fail({j.id, j.lease_token, "broke", std::nullopt}) == jobq::FailOutcome::dead);
  }
  const auto queued = b.enqueue(make_job()).id;
  fx.clock.advance(1min);
  const std::vector<jobq::JobId> ids{d3, queued, d1, d3, d2, d2 + 1'000'000};
  CHECK(b.redrive_many(ids) == std::vector<bool>{true, false, true, false, true, false});
  for (auto id : {d1, d2, d3}) {
    const auto j = b.get(id);
    REQUIRE(j);
    CHECK(j->state == JobState::queued);
    CHECK(j->attempts == 0);
    CHECK(j->run_at == fx.clock.now());
    CHECK_FALSE(j->finished_at.has_value());
    CHECK(j->errors.size() == 1);  // kept
  }
  CHECK(b.counts("q") == jobq::Counts{.queued = 3});
  CHECK(b.counts("other") == jobq::Counts{.queued = 1});
  CHECK(b.claim(claim_from({"q", "other"}, 10)).size() == 4);
}

TEMPLATE_LIST_TEST_CASE("cancel_many and redrive_many follow the flow rules item by item", "[conformance][bulk][flow]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  {  // b is cancelled first, so c dies with it and is no longer cancellable
    jobq::Flow flow;
    flow.chain({make_job(), make_job(), make_job()});
    const auto ids = b.enqueue_flow(flow.spec());
    CHECK(b.cancel_many(std::vector<jobq::JobId>{ids[1], ids[2]}) == std::vector<bool>{true, false});
    CHECK(state_of(b, ids[2]) == JobState::cancelled);
    const auto c = b.get(ids[2]);
    REQUIRE_FALSE(c->errors.empty());
    CHECK(c->errors.back().message == jobq::cancelled_dependency_error(ids[1]));
    CHECK(state_of(b, ids[0]) == JobState::queued);
    CHECK(b.cancel_many(std::vector<jobq::JobId>{ids[0]}) == std::vector<bool>{true});
  }
  {  // the dependent first: refused while its dependency is dead; after it, already waiting again
    jobq::Flow flow;
    flow.chain({with_attempts(1, make_job("f")), make_job("f")});
    const auto ids = b.enqueue_flow(flow.spec());
    const auto j = claim_one(b, "f");
    REQUIRE(b.fail({j.id, j.lease_token, "boom", std::nullopt}) == jobq::FailOutcome::dead);
    REQUIRE(state_of(b, ids[1]) == JobState::dead);
    CHECK(b.redrive_many(std::vector<jobq::JobId>{ids[1], ids[0], ids[1]}) == std::vector<bool>{false, true, false});
    CHECK(state_of(b, ids[0]) == JobState::queued);
    CHECK(state_of(b, ids[1]) == JobState::waiting);
  }
}

TEMPLATE_LIST_TEST_CASE("cancel_many and redrive_many take at most 1000 ids; empty input is empty output",
                        "[conformance][bulk]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto queued = b.enqueue(make_job()).id;
  const auto dead = b.enqueue(with_attempts(1, make_job("d"))).id;
  auto j = claim_one(b, "d");
  REQUIRE(b.fail({dead, j.lease_token, "x", std::nullopt}) == jobq::FailOutcome::dead);
  std::vector<jobq::JobId> many(jobq::max_bulk_ids + 1, queued);
  many.back() = dead;
  CHECK_THROWS_AS(b.cancel_many(many), jobq::InvalidArgument);
  CHECK_THROWS_AS(b.redrive_many(many), jobq::InvalidArgument);
  CHECK(state_of(b, queued) == JobState::queued);
  CHECK(state_of(b, dead) == JobState::dead);
  CHECK(b.cancel_many({}).empty());
  CHECK(b.redrive_many({}).empty());

  many.pop_back();  // exactly the cap: the first of a repeated id is the one that counts
  many.back() = dead;
  std::vector<bool> want(jobq::max_bulk_ids, false);
  want.front() = true;
  CHECK(b.cancel_many(many) == want);
  want.front() = false;
  want.back() = true;
  CHECK(b.redrive_many(many) == want);
  CHECK(state_of(b, queued) == JobState::cancelled);
  CHECK(state_of(b, dead) == JobState::queued);
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
  CHECK(b.counts("q") ==
        jobq::Counts{.queued = 3, .active = 1, .completed = 2, .dead = 1, .cancelled = 1, .delayed = 1});
  CHECK(b.counts("other") == jobq::Counts{.queued = 1});
  CHECK(b.counts("empty") == jobq::Counts{});
}

TEMPLATE_LIST_TEST_CASE("counts tell the delayed queued jobs from the ready ones", "[conformance][counts]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto t0 = fx.clock.now();
  b.enqueue(make_job());
  auto due_now = make_job();
  due_now.run_at = t0;  // run_at == now: ready
  b.enqueue(due_now);
  for (const auto in : {1min, 2min}) {
    auto later = make_job();
    later.run_at = t0 + in;
    b.enqueue(later);
  }
  auto long_ago = make_job();
  long_ago.run_at = t0 - 1h;
  b.enqueue(long_ago);
  CHECK(b.counts("q") == jobq::Counts{.queued = 5, .delayed = 2});

  // A retry with a backoff waits as a delayed job; the attempt that failed is not queued.
  auto retried = with_attempts(3, make_job("r"));
  const auto r = b.enqueue(retried).id;
  const auto j = claim_one(b, "r");
  CHECK(b.counts("r") == jobq::Counts{.active = 1});
  REQUIRE(b.fail({r, j.lease_token, "busy", t0 + 90s}) == jobq::FailOutcome::retried);
  CHECK(b.counts("r") == jobq::Counts{.queued = 1, .delayed = 1});

  fx.clock.advance(1min);  // the first delayed job comes due, the second is still ahead
  CHECK(b.counts("q") == jobq::Counts{.queued = 5, .delayed = 1});
  CHECK(b.counts("r").delayed == 1);
  fx.clock.advance(30s);  // the retry's run_at: due
  CHECK(b.counts("r") == jobq::Counts{.queued = 1});
  fx.clock.advance(30s);
  CHECK(b.counts("q") == jobq::Counts{.queued = 5});
  CHECK(b.claim(claim_from({"q"}, 10)).size() == 5);
  CHECK(b.counts("q") == jobq::Counts{.active = 5});
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

TEMPLATE_LIST_TEST_CASE("retention prunes a backlog larger than one batch, by age and by count",
                        "[conformance][retention]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  // 12,000 cancelled jobs (a backend may prune in batches of a few thousand, a transaction each).
  std::vector<jobq::JobId> ids;
  for (int chunk = 0; chunk < 12; ++chunk) {
    std::vector<jobq::NewJob> batch(1'000, make_job());
    std::vector<jobq::JobId> part;
    for (const auto& r : b.enqueue_many(batch)) part.push_back(r.id);
    REQUIRE(std::ranges::count(b.cancel_many(part), true) == 1'000);
    ids.insert(ids.end(), part.begin(), part.end());
    fx.clock.advance(1s);
  }
  const auto kept = b.enqueue(make_job()).id;
  const jobq::Retention cap{.completed = std::nullopt, .dead = std::nullopt, .cancelled = std::nullopt,
                            .max_jobs = 1'500};
  CHECK(b.prune("q", cap) == 12'000 - 1'500);
  CHECK(b.counts("q").cancelled == 1'500);
  CHECK_FALSE(b.get(ids[12'000 - 1'501]));
  CHECK(b.get(ids[12'000 - 1'500]));  // the newest 1,500 stay
  CHECK(b.prune("q", cap) == 0);
  fx.clock.advance(1h);
  CHECK(b.prune("q", {.completed = 1h, .dead = 1h, .cancelled = 30min}) == 1'500);
  CHECK(b.counts("q") == jobq::Counts{.queued = 1});
  CHECK(b.get(kept));
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
