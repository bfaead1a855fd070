#pragma once
// Conformance cases: completion, failure, retries and dead letters.

#include "conformance/common.hpp"

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
  const auto id = b.enqueue(with_attempts(3)).id;
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
  const auto id = b.enqueue(with_attempts(10)).id;
  const auto j = claim_one(b);
  CHECK(b.fail({id, j.lease_token, "permanent: bad address", std::nullopt}) == jobq::FailOutcome::dead);
  CHECK(state_of(b, id) == JobState::dead);
  CHECK(b.get(id)->errors.at(0).message == "permanent: bad address");
}

TEMPLATE_LIST_TEST_CASE("a dead job can be re-driven", "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto id = b.enqueue(with_attempts(1)).id;
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
