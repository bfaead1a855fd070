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
