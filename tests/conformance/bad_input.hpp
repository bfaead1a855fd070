#pragma once
// Conformance cases for hostile and out-of-range input (issue #23): values that are deeply
// nested, not valid UTF-8, or at the ends of their ranges. Each is refused before anything is
// written, with the same InvalidArgument on every backend, or stored and ordered correctly.
// Included by suite.hpp; same fixtures and rules.

#include <climits>

namespace conformance {

/// A JSON array nested `depth` deep, built by the (iterative) parser: building it by hand
/// would recurse, and so would the checks this file is about if they were written naively.
inline nlohmann::json nested(std::size_t depth) {
  return nlohmann::json::parse(std::string(depth, '[') + std::string(depth, ']'));
}

inline const std::string bad_utf8 = "caf\xc3";  // a lead byte with no continuation

}  // namespace conformance

TEMPLATE_LIST_TEST_CASE("a payload nested deeper than max_json_depth is refused, nothing written",
                        "[conformance][bad-input]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  // 100,000 levels is 200 KB, under the payload cap: a recursive dump of it overflowed the stack.
  for (const std::size_t depth : {jobq::max_json_depth + 1, std::size_t{100'000}}) {
    CAPTURE(depth);
    CHECK_THROWS_WITH(b.enqueue(make_job("q", nested(depth))), Catch::Contains("nested deeper than 512 levels"));
    std::vector<jobq::NewJob> batch;
    batch.push_back(make_job("q"));
    batch.push_back(make_job("q", nested(depth)));
    CHECK_THROWS_AS(b.enqueue_many(batch), jobq::InvalidArgument);
    jobq::Queue q{b, "q"};
    CHECK_THROWS_AS(q.enqueue_many(batch), jobq::InvalidArgument);
    CHECK_THROWS_AS(q.enqueue("noop", nested(depth)), jobq::InvalidArgument);
  }
  CHECK(b.counts("q") == jobq::Counts{});
  const auto id = b.enqueue(make_job("q", nested(jobq::max_json_depth))).id;  // the limit itself is fine
  CHECK(b.get(id)->payload == nested(jobq::max_json_depth));
}

TEMPLATE_LIST_TEST_CASE("a result that cannot be stored is refused and changes nothing",
                        "[conformance][bad-input]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  b.enqueue(make_job());
  b.enqueue(make_job());
  auto jobs = b.claim(claim_from({"q"}, 2));
  REQUIRE(jobs.size() == 2);
  // Made afresh for each use: copying the deep one would itself recurse.
  const auto bad = [](int which) {
    switch (which) {
      case 0: return nlohmann::json(conformance::bad_utf8);
      case 1: return nlohmann::json{{"k", {1, conformance::bad_utf8}}};
      case 2: return nlohmann::json{{conformance::bad_utf8, 1}};
      default: return nested(100'000);
    }
  };
  for (int which = 0; which < 4; ++which) {
    CAPTURE(which);
    CHECK_THROWS_AS(b.complete(jobs[0].id, jobs[0].lease_token, bad(which)), jobq::InvalidArgument);
    // All or nothing: the good completion beside the bad one is not written either.
    std::vector<jobq::Completion> both(2);
    both[0] = {jobs[1].id, jobs[1].lease_token, "fine"};
    both[1].id = jobs[0].id;
    both[1].lease_token = jobs[0].lease_token;
    both[1].result = bad(which);
    CHECK_THROWS_AS(b.complete_many(both), jobq::InvalidArgument);
  }
  CHECK_THROWS_WITH(b.complete(jobs[0].id, jobs[0].lease_token, conformance::bad_utf8),
                    Catch::Contains("result contains a string that is not valid UTF-8"));
  CHECK(b.counts("q") == jobq::Counts{.active = 2});
  CHECK(b.complete(jobs[0].id, jobs[0].lease_token, "ok"));
  CHECK(b.complete(jobs[1].id, jobs[1].lease_token, nested(jobq::max_json_depth)));
  CHECK(b.get(jobs[1].id)->result == nested(jobq::max_json_depth));
}

TEMPLATE_LIST_TEST_CASE("a worker fails only the job whose result cannot be stored",
                        "[conformance][bad-input][worker]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Queue q{b, "q"};
  std::vector<jobq::JobId> ids;
  for (int i = 0; i < 40; ++i) ids.push_back(q.enqueue("echo", {{"i", i}}, {.max_attempts = 1}));
  auto opt = fast_worker(8);
  jobq::Worker w{b, opt};
  // One poisoned result among successes that the committer batches with it.
  w.handle("echo", [](const nlohmann::json& p, jobq::JobContext&) {
    const int i = p.at("i").get<int>();
    if (i == 7) return nlohmann::json(conformance::bad_utf8);
    if (i == 8) return nested(100'000);
    return nlohmann::json(i);
  });
  CHECK(w.run_until_idle(60s));
  CHECK(q.counts() == jobq::Counts{.completed = 38, .dead = 2});
  const auto poisoned = q.get(ids[7]);
  REQUIRE(poisoned->errors.size() == 1);
  CHECK_THAT(poisoned->errors[0].message, Catch::Contains("result contains a string that is not valid UTF-8"));
  CHECK_THAT(q.get(ids[8])->errors.at(0).message, Catch::Contains("nested deeper than 512 levels"));
  CHECK(q.get(ids[9])->result == 9);
  CHECK(w.stats().processed == 38);
  CHECK(w.stats().lost_leases == 0);
}

TEMPLATE_LIST_TEST_CASE("a schedule whose job is nested too deep is refused", "[conformance][bad-input][schedule]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Queue q{b, "q"};
  CHECK_THROWS_AS(q.schedule("deep", "* * * * *", {}, "noop", nested(100'000)), jobq::InvalidArgument);
  CHECK(b.schedules().empty());
  CHECK_THROWS_AS(b.fire_schedule("none", fx.clock.now(), fx.clock.now(), make_job("q", nested(100'000))),
                  jobq::InvalidArgument);
  CHECK(b.counts("q") == jobq::Counts{});
}

TEMPLATE_LIST_TEST_CASE("names and keys that are not valid UTF-8 are refused, nothing written",
                        "[conformance][bad-input]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  // Each of these was stored by some backend and then broke every JSON read of its queue.
  for (const std::string& bad : {conformance::bad_utf8, std::string("\xff"), std::string("\xed\xa0\x80"),
                                 std::string("\xc0\xaf"), std::string("\xf4\x90\x80\x80")}) {
    auto named = make_job("q", {}, bad);
    CHECK_THROWS_WITH(b.enqueue(named), Catch::Contains("job name is not valid UTF-8"));
    auto keyed = make_job();
    keyed.unique_key = bad;
    CHECK_THROWS_WITH(b.enqueue(keyed), Catch::Contains("unique key is not valid UTF-8"));
    auto grouped = make_job();
    grouped.group = bad;
    CHECK_THROWS_WITH(b.enqueue(grouped), Catch::Contains("group key is not valid UTF-8"));
  }
  CHECK(b.counts("q") == jobq::Counts{});
  auto fine = make_job("q", {}, "r\xc3\xa9sum\xc3\xa9");  // valid UTF-8 is welcome
  fine.unique_key = "\xe2\x82\xac";
  const auto id = b.enqueue(fine).id;
  CHECK(b.get(id)->name == "r\xc3\xa9sum\xc3\xa9");
  CHECK(b.list("q", JobState::queued, {}).size() == 1);
}

TEMPLATE_LIST_TEST_CASE("priorities at both ends of the int range order correctly", "[conformance][bad-input]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  std::map<int, jobq::JobId> by_priority;
  for (const int p : {0, INT_MIN, 1, INT_MAX, -1, INT_MIN + 1, INT_MAX - 1}) {
    auto j = make_job();
    j.priority = p;
    by_priority[p] = b.enqueue(j).id;
  }
  std::vector<int> order;
  for (const auto& j : b.claim(claim_from({"q"}, 10))) order.push_back(j.priority);
  CHECK(order == std::vector<int>{INT_MAX, INT_MAX - 1, 1, 0, -1, INT_MIN + 1, INT_MIN});
  CHECK(b.get(by_priority[INT_MIN])->priority == INT_MIN);
}

TEMPLATE_LIST_TEST_CASE("durations beyond max_duration are refused, the longest allowed works",
                        "[conformance][bad-input]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto huge = jobq::Millis::max();
  const auto over = jobq::max_duration + 1ms;
  for (const auto d : {huge, over}) {
    CAPTURE(d.count());
    auto timeout = make_job();
    timeout.timeout = d;
    CHECK_THROWS_WITH(b.enqueue(timeout), Catch::Contains("timeout of") && Catch::Contains("100 years"));
    auto held = make_job();
    held.unique_key = "k";
    held.unique_for = d;
    CHECK_THROWS_AS(b.enqueue(held), jobq::InvalidArgument);
    auto throttled = make_job();
    throttled.unique_key = "k";
    throttled.throttle = d;
    CHECK_THROWS_AS(b.enqueue(throttled), jobq::InvalidArgument);
    auto debounced = make_job();
    debounced.unique_key = "k";
    debounced.debounce = d;
    CHECK_THROWS_AS(b.enqueue(debounced), jobq::InvalidArgument);
    jobq::Queue q{b, "q"};
    CHECK_THROWS_WITH(q.enqueue("noop", {}, {.delay = d}), Catch::Contains("delay of"));
    CHECK_THROWS_AS(jobq::Backoff::fixed(d), jobq::InvalidArgument);
    CHECK_THROWS_AS(jobq::Backoff::exponential(1s, d), jobq::InvalidArgument);
    CHECK_THROWS_AS(b.claim(claim_from({"q"}, 1, d)), jobq::InvalidArgument);
  }
  auto late = make_job();
  late.run_at = jobq::max_time + 1ms;
  CHECK_THROWS_AS(b.enqueue(late), jobq::InvalidArgument);
  CHECK(b.counts("q") == jobq::Counts{});

  // The longest allowed values do what they say: not due, held, not expired.
  jobq::Queue q{b, "q"};
  const auto delayed = q.enqueue("noop", {}, {.delay = jobq::max_duration});
  CHECK(b.get(delayed)->run_at == fx.clock.now() + jobq::max_duration);
  CHECK(b.claim(claim_from({"q"})).empty());
  auto held = make_job();
  held.unique_key = "k";
  held.unique_for = jobq::max_duration;
  held.timeout = jobq::max_duration;
  const auto first = b.enqueue(held).id;
  const auto job = claim_one(b, "q", jobq::max_duration);
  REQUIRE(job.id == first);
  CHECK_THROWS_AS(b.extend_lease(job.id, job.lease_token, huge), jobq::InvalidArgument);
  CHECK(b.extend_lease(job.id, job.lease_token, jobq::max_duration));
  fx.clock.advance(std::chrono::hours(24 * 365));
  CHECK(b.recover_expired() == jobq::Recovered{});
  CHECK(b.complete(job.id, job.lease_token, nullptr));
  fx.clock.advance(std::chrono::hours(24 * 365));
  CHECK_FALSE(b.enqueue(held).created);  // the key is still held, 1 of 100 years later
}

TEMPLATE_LIST_TEST_CASE("the queue names '.' and '..' are refused", "[conformance][bad-input]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  for (const std::string bad : {".", ".."}) {
    CHECK_THROWS_WITH(b.enqueue(make_job(bad)), Catch::Contains("is reserved"));
    CHECK_THROWS_AS(b.pause(bad), jobq::InvalidArgument);
  }
  b.enqueue(make_job("..."));  // only the two path segments are reserved
  CHECK(b.counts("...").queued == 1);
}
