#pragma once
// Conformance cases: enqueue and get, claim order, delays.

#include "conformance/common.hpp"

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
