#pragma once
// Conformance cases: leases, heartbeats, release and progress.

#include "conformance/common.hpp"

// ---------------------------------------------------------------------------------------------
// Leases

TEMPLATE_LIST_TEST_CASE("an expired lease is recovered and counted as an attempt", "[conformance]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto id = b.enqueue(with_attempts(2)).id;
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

TEMPLATE_LIST_TEST_CASE("a stale lease token cannot complete or fail a job", "[conformance]", Backends) {
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

TEMPLATE_LIST_TEST_CASE("snooze gives a job back until a chosen time without burning an attempt",
                        "[conformance][snooze]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto id = b.enqueue(with_attempts(2)).id;
  auto j = claim_one(b);
  REQUIRE(b.fail({id, j.lease_token, "first try", fx.clock.now()}) == jobq::FailOutcome::retried);
  j = claim_one(b, "q", 10s);
  CHECK(j.attempts == 2);
  const auto wake_at = fx.clock.now() + 5min;
  CHECK(b.snooze(id, j.lease_token, wake_at));
  auto s = b.get(id);
  REQUIRE(s);
  CHECK(s->state == JobState::queued);
  CHECK(s->run_at == wake_at);
  CHECK(s->attempts == 1);  // the snoozed attempt does not count
  CHECK_FALSE(s->lease_until);
  CHECK(s->lease_token.empty());
  REQUIRE(s->errors.size() == 1);  // the earlier failure stays
  CHECK(s->errors[0].message == "first try");
  CHECK(b.counts("q") == jobq::Counts{.queued = 1, .delayed = 1});

  CHECK_FALSE(b.snooze(id, j.lease_token, fx.clock.now()));  // the lease is gone
  CHECK_FALSE(b.extend_lease(id, j.lease_token, 10s));
  fx.clock.advance(4min + 59s);
  CHECK(b.recover_expired() == jobq::Recovered{0, 0});  // past the old lease: nothing is leased
  CHECK(b.claim(claim_from({"q"})).empty());
  fx.clock.advance(1s);
  const auto again = claim_one(b);
  CHECK(again.id == id);
  CHECK(again.attempts == 2);  // the last one allowed: the snooze gave it back
  CHECK(b.complete(id, again.lease_token, nullptr));
}

TEMPLATE_LIST_TEST_CASE("a job claimed once and snoozed has used no attempt", "[conformance][snooze]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto id = b.enqueue(make_job()).id;
  const auto other = b.enqueue(make_job()).id;
  const auto j = claim_one(b);
  REQUIRE(j.id == id);
  CHECK(b.snooze(id, j.lease_token, fx.clock.now() + 10s));
  CHECK(b.get(id)->attempts == 0);
  CHECK(claim_one(b).id == other);  // not claimable before its run_at
  CHECK(b.claim(claim_from({"q"})).empty());
  fx.clock.advance(10s);
  const auto again = claim_one(b);
  CHECK(again.id == id);
  CHECK(again.attempts == 1);
  CHECK(again.lease_token != j.lease_token);
  CHECK_FALSE(b.snooze(id, j.lease_token, fx.clock.now()));  // an old token, on a job leased again
  CHECK_FALSE(b.snooze(id, "", fx.clock.now()));
  CHECK_FALSE(b.snooze(id + 1000000, again.lease_token, fx.clock.now()));
  auto s = b.get(id);
  CHECK(s->state == JobState::active);
  CHECK(s->lease_token == again.lease_token);
  CHECK(s->attempts == 1);
  // A run_at in the past: ready at once, as release is.
  CHECK(b.snooze(id, again.lease_token, fx.clock.now() - 1min));
  CHECK(b.counts("q") == jobq::Counts{.queued = 1, .active = 1});
  CHECK(claim_one(b).id == id);
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
