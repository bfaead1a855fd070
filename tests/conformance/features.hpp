#pragma once
// Conformance cases for limits, groups, throttle/debounce, schedules, notices, wait_for and
// payload limits (issue #7 and #9). Included by suite.hpp; same fixtures, same rules: the clock
// moves by hand, waits only let other threads (or the backend's listener) catch up.

#include <date/date.h>

namespace conformance {

inline jobq::TimePoint utc(int y, unsigned m, unsigned d, int h = 0, int min = 0) {
  return std::chrono::time_point_cast<jobq::Millis>(
      date::sys_days{date::year{y} / date::month{m} / date::day{d}} + std::chrono::hours{h} +
      std::chrono::minutes{min});
}

using jobq_test::NoticeLog;

template <class B>
std::size_t queued_in(B& b, const std::string& queue) {
  return static_cast<std::size_t>(b.counts(queue).queued);
}

}  // namespace conformance

// ---------------------------------------------------------------------------------------------
// Payload size limit

TEMPLATE_LIST_TEST_CASE("a payload above the maximum size is refused and nothing is written",
                        "[conformance][bad-input][limits]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  const std::string big(jobq::default_max_payload_bytes + 1, 'x');
  try {
    b.enqueue(make_job("q", {{"blob", big}}));
    FAIL("an oversized payload was accepted");
  } catch (const jobq::InvalidArgument& e) {
    CHECK_THAT(e.what(), Catch::Contains("max_payload_bytes"));
  }
  std::vector<jobq::NewJob> batch{make_job("q"), make_job("q", {{"blob", big}})};
  CHECK_THROWS_AS(b.enqueue_many(batch), jobq::InvalidArgument);
  CHECK(b.counts("q") == jobq::Counts{});
  // Just under the limit is fine (the JSON adds {"blob":""} around the string).
  const std::string fits(jobq::default_max_payload_bytes - 64, 'y');
  const auto r = b.enqueue(make_job("q", {{"blob", fits}}));
  CHECK(b.get(r.id)->payload["blob"].template get<std::string>().size() == fits.size());
}

// ---------------------------------------------------------------------------------------------
// Groups and queue limits

TEMPLATE_LIST_TEST_CASE("queue limits are stored per queue and validated", "[conformance][limits]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  CHECK(b.queue_limits("q") == jobq::QueueLimits{});
  const jobq::QueueLimits l{jobq::RateLimit{100, 1min}, 3};
  b.set_queue_limits("q", l);
  CHECK(b.queue_limits("q") == l);
  CHECK(b.queue_limits("other") == jobq::QueueLimits{});
  CHECK_THROWS_AS(b.set_queue_limits("q", {jobq::RateLimit{0, 1min}, 0}), jobq::InvalidArgument);
  CHECK_THROWS_AS(b.set_queue_limits("q", {jobq::RateLimit{5, 0ms}, 0}), jobq::InvalidArgument);
  CHECK_THROWS_AS(b.set_queue_limits("q", {std::nullopt, -1}), jobq::InvalidArgument);
  CHECK_THROWS_AS(b.set_queue_limits("bad queue", l), jobq::InvalidArgument);
  CHECK(b.queue_limits("q") == l);  // a refused change changes nothing
  b.set_queue_limits("q", {});
  CHECK(b.queue_limits("q") == jobq::QueueLimits{});
}

TEMPLATE_LIST_TEST_CASE("a job's group is stored and returned", "[conformance][limits]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  auto nj = make_job();
  nj.group = "tenant-42";
  const auto id = b.enqueue(nj).id;
  CHECK(b.get(id)->group == "tenant-42");
  CHECK(claim_one(b).group == "tenant-42");
  CHECK(b.get(b.enqueue(make_job()).id)->group.empty());
  nj.group = std::string(jobq::max_group_length + 1, 'g');
  CHECK_THROWS_AS(b.enqueue(nj), jobq::InvalidArgument);
}

TEMPLATE_LIST_TEST_CASE("group concurrency caps active jobs per group without blocking other groups",
                        "[conformance][limits]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  b.set_queue_limits("q", {std::nullopt, 2});
  auto in_group = [](std::string g, int n) {
    auto j = make_job("q", {{"n", n}});
    j.group = std::move(g);
    return j;
  };
  // Tenant "a" floods the queue first; "b" and ungrouped jobs come after it.
  std::vector<jobq::JobId> a;
  for (int i = 0; i < 5; ++i) a.push_back(b.enqueue(in_group("a", i)).id);
  const auto b1 = b.enqueue(in_group("b", 0)).id;
  const auto none = b.enqueue(make_job("q")).id;
  const auto b2 = b.enqueue(in_group("b", 1)).id;
  const auto b3 = b.enqueue(in_group("b", 2)).id;

  auto got = b.claim(claim_from({"q"}, 10));
  CHECK(ids_of(got) == std::vector<jobq::JobId>{a[0], a[1], b1, none, b2});
  CHECK(b.claim(claim_from({"q"}, 10)).empty());
  CHECK(b.get(a[2])->attempts == 0);  // held back untouched

  // Each way a job stops being active frees its group's slot.
  REQUIRE(b.complete(a[0], got[0].lease_token, nullptr));
  CHECK(ids_of(b.claim(claim_from({"q"}, 10))) == std::vector<jobq::JobId>{a[2]});
  CHECK(b.fail({a[1], got[1].lease_token, "boom", fx.clock.now() + 1h}) == jobq::FailOutcome::retried);
  CHECK(ids_of(b.claim(claim_from({"q"}, 10))) == std::vector<jobq::JobId>{a[3]});
  REQUIRE(b.release(b1, got[2].lease_token));
  CHECK(ids_of(b.claim(claim_from({"q"}, 10))) == std::vector<jobq::JobId>{b1});
  // A slot freed by lease expiry too.
  fx.clock.advance(31s);
  b.recover_expired();
  const auto after = ids_of(b.claim(claim_from({"q"}, 10, 1h)));
  CHECK(after.size() == 5);  // 2 of a, 2 of b, and the ungrouped one again
  CHECK(std::count(after.begin(), after.end(), b3) == 1);

  // Without limits groups mean nothing.
  b.set_queue_limits("q", {});
  fx.clock.advance(2h);
  b.recover_expired();
  CHECK(b.claim(claim_from({"q"}, 20)).size() == 8);  // all but the completed one
}

TEMPLATE_LIST_TEST_CASE("group limits belong to their queue", "[conformance][limits]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  b.set_queue_limits("limited", {std::nullopt, 1});
  for (const char* q : {"limited", "limited", "free", "free"}) {
    auto j = make_job(q);
    j.group = "t";
    b.enqueue(j);
  }
  CHECK(b.claim(claim_from({"limited", "free"}, 10)).size() == 3);
}

TEMPLATE_LIST_TEST_CASE("a rate limit allows max starts in any window and holds the rest untouched",
                        "[conformance][limits]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  b.set_queue_limits("q", {jobq::RateLimit{3, 1min}, 0});
  std::vector<jobq::JobId> ids;
  for (int i = 0; i < 8; ++i) ids.push_back(b.enqueue(make_job("q", {{"n", i}})).id);
  auto first = b.claim(claim_from({"q"}, 10));
  CHECK(first.size() == 3);
  CHECK(b.claim(claim_from({"q"}, 10)).empty());
  // Finishing or releasing does not give the start back: the third party saw the call.
  REQUIRE(b.complete(first[0].id, first[0].lease_token, nullptr));
  REQUIRE(b.release(first[1].id, first[1].lease_token));
  fx.clock.advance(30s);
  CHECK(b.claim(claim_from({"q"}, 10)).empty());
  CHECK(b.get(ids[5])->attempts == 0);
  CHECK(b.get(ids[5])->state == JobState::queued);
  fx.clock.advance(29s + 999ms);
  CHECK(b.claim(claim_from({"q"}, 10)).empty());
  fx.clock.advance(1ms);  // the first three starts leave the window
  auto second = b.claim(claim_from({"q"}, 2));
  CHECK(second.size() == 2);
  fx.clock.advance(10s);
  CHECK(b.claim(claim_from({"q"}, 10)).size() == 1);
  fx.clock.advance(50s);
  CHECK(b.claim(claim_from({"q"}, 10)).size() == 2);
  // Other queues are not limited.
  for (int i = 0; i < 5; ++i) b.enqueue(make_job("other"));
  CHECK(b.claim(claim_from({"other"}, 10)).size() == 5);
}

TEMPLATE_LIST_TEST_CASE("limits hold when many threads claim at once", "[conformance][limits][concurrency]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  b.set_queue_limits("rated", {jobq::RateLimit{37, 1h}, 0});
  b.set_queue_limits("grouped", {std::nullopt, 2});
  std::vector<jobq::NewJob> rated, grouped;
  for (int i = 0; i < 120; ++i) rated.push_back(make_job("rated", {{"n", i}}));
  for (int i = 0; i < 120; ++i) {
    auto j = make_job("grouped", {{"n", i}});
    j.group = "g" + std::to_string(i % 5);
    grouped.push_back(j);
  }
  b.enqueue_many(rated);
  b.enqueue_many(grouped);
  std::mutex m;
  std::vector<jobq::JobRecord> got_rated, got_grouped;
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20; ++i) {
        auto r = b.claim(claim_from({"rated"}, 3));
        auto g = b.claim(claim_from({"grouped"}, 3));
        std::lock_guard lock(m);
        got_rated.insert(got_rated.end(), r.begin(), r.end());
        got_grouped.insert(got_grouped.end(), g.begin(), g.end());
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(got_rated.size() == 37);
  CHECK(got_grouped.size() == 10);  // 5 groups x 2
  std::map<std::string, int> per_group;
  for (const auto& j : got_grouped) ++per_group[j.group];
  for (const auto& [g, n] : per_group) CHECK(n == 2);
  std::set<jobq::JobId> unique;
  for (const auto& j : got_rated) unique.insert(j.id);
  CHECK(unique.size() == got_rated.size());
}

TEMPLATE_LIST_TEST_CASE("a worker waits out a rate limit without failing jobs or using attempts",
                        "[conformance][limits][worker]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Queue q{b, "q"};
  q.set_limits({jobq::RateLimit{2, 1min}, 0});
  for (int i = 0; i < 5; ++i) q.enqueue(Greet{"n" + std::to_string(i)});
  jobq::Worker w{b, fast_worker(4)};
  w.template handle<Greet>([](const Greet&) {});
  w.start();
  CHECK(eventually([&] { return q.counts().completed == 2; }));
  std::this_thread::sleep_for(100ms);
  CHECK(q.counts().completed == 2);
  for (const auto& j : q.list(JobState::queued)) CHECK(j.attempts == 0);
  fx.clock.advance(1min);
  CHECK(eventually([&] { return q.counts().completed == 4; }));
  fx.clock.advance(1min);
  CHECK(eventually([&] { return q.counts().completed == 5; }));
  w.stop();
  CHECK(w.stats().failed == 0);
}

TEMPLATE_LIST_TEST_CASE("a worker never runs more than the group limit at once", "[conformance][limits][worker]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Queue q{b, "q"};
  q.set_limits({std::nullopt, 1});
  for (int i = 0; i < 6; ++i) q.enqueue(Greet{"t" + std::to_string(i % 2)}, {.group = "tenant-" + std::to_string(i % 2)});
  std::mutex m;
  std::map<std::string, int> running, most;
  jobq::Worker w{b, fast_worker(4)};
  w.template handle<Greet>([&](const Greet& g) {
    {
      std::lock_guard lock(m);
      most[g.who] = std::max(most[g.who], ++running[g.who]);
    }
    std::this_thread::sleep_for(5ms);
    std::lock_guard lock(m);
    --running[g.who];
  });
  CHECK(w.run_until_idle(60s));
  CHECK(q.counts().completed == 6);
  CHECK(most == std::map<std::string, int>{{"t0", 1}, {"t1", 1}});
}

TEMPLATE_LIST_TEST_CASE("queue concurrency caps the active jobs of a queue; each way out frees a slot",
                        "[conformance][limits][queue-concurrency]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  const jobq::QueueLimits l{.concurrency = 3};
  b.set_queue_limits("q", l);
  CHECK(b.queue_limits("q") == l);
  CHECK_THROWS_AS(b.set_queue_limits("q", {.concurrency = -1}), jobq::InvalidArgument);
  CHECK(b.queue_limits("q") == l);  // a refused change changes nothing
  std::vector<jobq::JobId> ids;
  for (int i = 0; i < 10; ++i) ids.push_back(b.enqueue(make_job("q", {{"n", i}})).id);
  auto got = b.claim(claim_from({"q"}, 10));
  REQUIRE(ids_of(got) == std::vector<jobq::JobId>{ids[0], ids[1], ids[2]});
  CHECK(b.claim(claim_from({"q"}, 10)).empty());
  CHECK(b.get(ids[3])->attempts == 0);  // held back untouched
  CHECK(b.get(ids[3])->state == JobState::queued);
  CHECK(b.counts("q").active == 3);

  REQUIRE(b.complete(got[0].id, got[0].lease_token, nullptr));
  auto one = b.claim(claim_from({"q"}, 10));
  REQUIRE(ids_of(one) == std::vector<jobq::JobId>{ids[3]});
  CHECK(b.claim(claim_from({"q"}, 10)).empty());
  CHECK(b.fail({got[1].id, got[1].lease_token, "boom", fx.clock.now() + 1h}) == jobq::FailOutcome::retried);
  CHECK(ids_of(b.claim(claim_from({"q"}, 10))) == std::vector<jobq::JobId>{ids[4]});
  REQUIRE(b.release(got[2].id, got[2].lease_token));
  CHECK(ids_of(b.claim(claim_from({"q"}, 10))) == std::vector<jobq::JobId>{ids[2]});
  REQUIRE(b.cancel(one[0].id));
  CHECK(ids_of(b.claim(claim_from({"q"}, 10))) == std::vector<jobq::JobId>{ids[5]});
  CHECK(b.claim(claim_from({"q"}, 10)).empty());
  // Lease expiry frees every slot at once; the recovered jobs queue again, behind nobody.
  fx.clock.advance(31s);
  b.recover_expired();
  CHECK(b.claim(claim_from({"q"}, 10, 1h)).size() == 3);
  CHECK(b.counts("q").active == 3);

  // Other queues are not limited, and a claim over both fills the rest from the free one.
  for (int i = 0; i < 4; ++i) b.enqueue(make_job("free"));
  CHECK(b.claim(claim_from({"q", "free"}, 10)).size() == 4);
  // 0 = unlimited.
  b.set_queue_limits("q", {});
  CHECK(b.claim(claim_from({"q"}, 20)).size() == 4);  // the rest: 1 completed, 1 cancelled, 3 active, 1 retrying in 1h
}

TEMPLATE_LIST_TEST_CASE("queue concurrency combines with a group limit and a rate limit",
                        "[conformance][limits][queue-concurrency]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  b.set_queue_limits("q", {.rate = jobq::RateLimit{5, 1min}, .group_concurrency = 1, .concurrency = 3});
  CHECK(b.queue_limits("q").concurrency == 3);
  CHECK(b.queue_limits("q").group_concurrency == 1);
  for (int i = 0; i < 12; ++i) {
    auto j = make_job("q", {{"n", i}});
    j.group = "t" + std::to_string(i % 4);
    b.enqueue(j);
  }
  // 4 groups could run one each, but the queue allows 3.
  auto got = b.claim(claim_from({"q"}, 10));
  REQUIRE(got.size() == 3);
  std::set<std::string> groups;
  for (const auto& j : got) groups.insert(j.group);
  CHECK(groups.size() == 3);
  CHECK(b.claim(claim_from({"q"}, 10)).empty());
  // Finish two: the queue has room for 2, the group limit allows 2 (the fourth group and one
  // of the finished), the rate limit has 2 starts left.
  REQUIRE(b.complete(got[0].id, got[0].lease_token, nullptr));
  REQUIRE(b.complete(got[1].id, got[1].lease_token, nullptr));
  auto more = b.claim(claim_from({"q"}, 10));
  CHECK(more.size() == 2);
  CHECK(b.counts("q").active == 3);
  // The rate limit is now spent: finishing frees a queue slot, but nothing starts this window.
  REQUIRE(b.complete(more[0].id, more[0].lease_token, nullptr));
  CHECK(b.claim(claim_from({"q"}, 10)).empty());
  fx.clock.advance(1min);
  CHECK(b.claim(claim_from({"q"}, 10)).size() == 1);  // the queue is full again
  CHECK(b.counts("q").active == 3);
}

TEMPLATE_LIST_TEST_CASE("a worker never runs more than the queue's concurrency at once",
                        "[conformance][limits][queue-concurrency][worker]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Queue q{b, "q"};
  q.set_limits({.concurrency = 2});
  for (int i = 0; i < 8; ++i) q.enqueue(Greet{"n" + std::to_string(i)});
  std::mutex m;
  int running = 0;
  int most = 0;
  jobq::Worker w{b, fast_worker(6)};
  w.template handle<Greet>([&](const Greet&) {
    {
      std::lock_guard lock(m);
      most = std::max(most, ++running);
    }
    std::this_thread::sleep_for(5ms);
    std::lock_guard lock(m);
    --running;
  });
  CHECK(w.run_until_idle(60s));
  CHECK(q.counts().completed == 8);
  CHECK(most <= 2);
  CHECK(w.stats().failed == 0);
}

// ---------------------------------------------------------------------------------------------
// Throttle and debounce

TEMPLATE_LIST_TEST_CASE("throttle keeps the first job of a key for its window, whatever its state",
                        "[conformance][unique]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  auto nj = make_job("q", {{"v", 1}});
  nj.unique_key = "sync:7";
  nj.throttle = 10min;
  const auto first = b.enqueue(nj);
  CHECK(first.created);
  nj.payload = {{"v", 2}};
  CHECK(b.enqueue(nj) == jobq::EnqueueResult{first.id, false});
  auto j = claim_one(b);
  REQUIRE(b.complete(j.id, j.lease_token, nullptr));
  fx.clock.advance(9min);
  CHECK(b.enqueue(nj) == jobq::EnqueueResult{first.id, false});  // finished, still in window
  CHECK(b.get(first.id)->payload == nlohmann::json{{"v", 1}});
  fx.clock.advance(1min);
  const auto second = b.enqueue(nj);
  CHECK(second.created);
  CHECK(second.id != first.id);
  CHECK(b.get(second.id)->payload == nlohmann::json{{"v", 2}});
  // Another key or queue is another window.
  nj.unique_key = "sync:8";
  CHECK(b.enqueue(nj).created);
  nj.queue = "other";
  CHECK(b.enqueue(nj).created);
}

TEMPLATE_LIST_TEST_CASE("debounce runs the latest payload once the key has been quiet for the window",
                        "[conformance][unique]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  auto nj = make_job("q", {{"v", 1}});
  nj.unique_key = "reindex:doc-1";
  nj.debounce = 5s;
  const auto first = b.enqueue(nj);
  CHECK(first.created);
  CHECK(b.get(first.id)->run_at == fx.clock.now() + 5s);
  fx.clock.advance(3s);
  nj.payload = {{"v", 2}};
  CHECK(b.enqueue(nj) == jobq::EnqueueResult{first.id, false});
  CHECK(b.get(first.id)->payload == nlohmann::json{{"v", 2}});
  CHECK(b.get(first.id)->run_at == fx.clock.now() + 5s);
  fx.clock.advance(4s);  // 7 s after the first enqueue, 4 s after the last
  CHECK(b.claim(claim_from({"q"}, 5)).empty());
  fx.clock.advance(1s);
  auto running = claim_one(b);
  CHECK(running.id == first.id);
  CHECK(running.payload == nlohmann::json{{"v", 2}});
  // While it runs, a new enqueue starts a new debounced job rather than touching the running one.
  nj.payload = {{"v", 3}};
  const auto next = b.enqueue(nj);
  CHECK(next.created);
  CHECK(next.id != first.id);
  CHECK(b.get(first.id)->payload == nlohmann::json{{"v", 2}});
  nj.payload = {{"v", 4}};
  CHECK(b.enqueue(nj) == jobq::EnqueueResult{next.id, false});
  CHECK(b.counts("q").queued == 1);
  CHECK(b.counts("q").active == 1);
  REQUIRE(b.complete(running.id, running.lease_token, nullptr));
  fx.clock.advance(5s);
  CHECK(claim_one(b).payload == nlohmann::json{{"v", 4}});
}

TEMPLATE_LIST_TEST_CASE("throttle and debounce options are validated", "[conformance][unique][bad-input]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  auto nj = make_job();
  nj.throttle = 1s;
  CHECK_THROWS_AS(b.enqueue(nj), jobq::InvalidArgument);  // no key
  nj.unique_key = "k";
  nj.debounce = 1s;
  CHECK_THROWS_AS(b.enqueue(nj), jobq::InvalidArgument);  // both
  nj.throttle = 0ms;
  nj.run_at = fx.clock.now() + 1h;
  CHECK_THROWS_AS(b.enqueue(nj), jobq::InvalidArgument);  // debounce sets run_at itself
  nj.run_at.reset();
  nj.debounce = -1ms;
  CHECK_THROWS_AS(b.enqueue(nj), jobq::InvalidArgument);
  CHECK(b.counts("q") == jobq::Counts{});
}

// ---------------------------------------------------------------------------------------------
// Schedules

TEMPLATE_LIST_TEST_CASE("a schedule enqueues one job per tick and moves to the next tick",
                        "[conformance][schedule]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  fx.clock.set(conformance::utc(2030, 1, 7, 8, 30));  // Monday 08:30 UTC
  jobq::Queue q{b, "reports"};
  q.schedule("nightly-report", "0 9 * * 1-5", {.priority = 3}, Greet{"board"});
  auto list = q.schedules();
  REQUIRE(list.size() == 1);
  CHECK(list[0].schedule.name == "nightly-report");
  CHECK(list[0].schedule.cron == "0 9 * * 1-5");
  CHECK(list[0].schedule.job_name == "greet");
  CHECK(list[0].next_run == conformance::utc(2030, 1, 7, 9));
  CHECK(jobq::run_due_schedules(b) == 0);
  fx.clock.set(conformance::utc(2030, 1, 7, 9));
  CHECK(jobq::run_due_schedules(b) == 1);
  CHECK(jobq::run_due_schedules(b) == 0);  // the same tick never fires twice
  auto jobs = b.list("reports", JobState::queued, {});
  REQUIRE(jobs.size() == 1);
  CHECK(jobs[0].name == "greet");
  CHECK(jobs[0].payload == nlohmann::json(Greet{"board"}));
  CHECK(jobs[0].priority == 3);
  CHECK(q.schedules()[0].next_run == conformance::utc(2030, 1, 8, 9));
  // Friday's tick is followed by Monday's.
  fx.clock.set(conformance::utc(2030, 1, 11, 9, 0) + 5s);
  b.put_schedule({"nightly-report", b.schedules()[0].spec, conformance::utc(2030, 1, 11, 9)});
  CHECK(jobq::run_due_schedules(b) == 1);
  CHECK(q.schedules()[0].next_run == conformance::utc(2030, 1, 14, 9));
}

TEMPLATE_LIST_TEST_CASE("racing schedulers enqueue exactly one job per tick", "[conformance][schedule][concurrency]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  fx.clock.set(conformance::utc(2030, 1, 1, 0, 0) + 30s);
  jobq::Queue q{b, "q"};
  q.schedule("every-minute", "* * * * *", {}, "tick", {{"k", 1}});
  q.schedule("every-5s", "*/5 * * * * *", {}, "tick5", {});
  for (int minute = 1; minute <= 5; ++minute) {
    fx.clock.set(conformance::utc(2030, 1, 1, 0, minute));
    std::atomic<std::size_t> fired{0};
    std::vector<std::thread> schedulers;
    for (int t = 0; t < 6; ++t) {
      schedulers.emplace_back([&] {
        for (int i = 0; i < 3; ++i) fired += jobq::run_due_schedules(b);
      });
    }
    for (auto& t : schedulers) t.join();
    CHECK(fired == 2);
  }
  CHECK(b.counts("q").queued == 10);
}

TEMPLATE_LIST_TEST_CASE("missed ticks run once or are skipped, as the schedule says", "[conformance][schedule]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  fx.clock.set(conformance::utc(2030, 1, 1, 0, 10));
  jobq::Queue q{b, "q"};
  q.schedule("once", "0 * * * *", {}, "once", {});
  q.schedule("skip", "0 * * * *", {.missed = jobq::MissedTicks::skip, .misfire_grace = 2min}, "skip", {});
  fx.clock.set(conformance::utc(2030, 1, 1, 4, 30));  // down through 01:00..04:00
  CHECK(jobq::run_due_schedules(b) == 1);
  auto names = [&] {
    std::multiset<std::string> out;
    for (const auto& j : b.list("q", JobState::queued, {})) out.insert(j.name);
    return out;
  };
  CHECK(names() == std::multiset<std::string>{"once"});
  for (const auto& s : q.schedules()) CHECK(s.next_run == conformance::utc(2030, 1, 1, 5));
  // A little late is within the grace: it still runs.
  fx.clock.set(conformance::utc(2030, 1, 1, 5, 1));
  CHECK(jobq::run_due_schedules(b) == 2);
  CHECK(names() == std::multiset<std::string>{"once", "once", "skip"});
}

TEMPLATE_LIST_TEST_CASE("schedules are listed, updated and removed", "[conformance][schedule]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  fx.clock.set(conformance::utc(2030, 1, 1, 0, 10));
  jobq::Queue q{b, "q"};
  jobq::Queue other{b, "other"};
  q.schedule("b-hourly", "@hourly", {}, "h", {});
  q.schedule("a-daily", "@daily", {.tz = "Europe/Paris"}, "d", {{"x", 1}});
  other.schedule("c-other", "0 12 * * *", {}, "o", {});
  REQUIRE(b.schedules().size() == 3);
  CHECK(b.schedules()[0].name == "a-daily");  // by name
  auto mine = q.schedules();
  REQUIRE(mine.size() == 2);
  CHECK(mine[0].schedule.options.tz == "Europe/Paris");
  CHECK(mine[0].next_run == conformance::utc(2030, 1, 1, 23));  // Paris midnight = 23:00 UTC in winter
  CHECK(mine[1].next_run == conformance::utc(2030, 1, 1, 1));

  // Saving the same schedule again (as every application start does) keeps a due tick.
  fx.clock.set(conformance::utc(2030, 1, 1, 1, 0) + 20s);
  q.schedule("b-hourly", "@hourly", {}, "h", {});
  CHECK(q.schedules()[1].next_run == conformance::utc(2030, 1, 1, 1));
  // A changed schedule starts from now.
  q.schedule("b-hourly", "30 * * * *", {}, "h", {});
  CHECK(q.schedules()[1].next_run == conformance::utc(2030, 1, 1, 1, 30));
  CHECK(q.schedules()[1].schedule.cron == "30 * * * *");

  CHECK(q.unschedule("b-hourly"));
  CHECK_FALSE(q.unschedule("b-hourly"));
  CHECK(b.schedules().size() == 2);
  CHECK_FALSE(b.fire_schedule("b-hourly", conformance::utc(2030, 1, 1, 1, 30), fx.clock.now(), make_job()));
  CHECK(b.counts("q") == jobq::Counts{});
}

TEMPLATE_LIST_TEST_CASE("fire_schedule is a compare-and-set that writes nothing when it loses",
                        "[conformance][schedule]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  const auto t0 = fx.clock.now();
  b.put_schedule({"s", {{"opaque", "spec"}, {"n", 1}}, t0});
  CHECK(b.schedules() == std::vector<jobq::StoredSchedule>{{"s", {{"opaque", "spec"}, {"n", 1}}, t0}});
  CHECK_FALSE(b.fire_schedule("s", t0 + 1s, t0 + 1h, make_job()));
  CHECK(b.counts("q") == jobq::Counts{});
  auto bad = make_job("bad queue");
  CHECK_THROWS_AS(b.fire_schedule("s", t0, t0 + 1h, bad), jobq::InvalidArgument);
  CHECK(b.schedules()[0].next_run == t0);  // nothing changed
  CHECK(b.fire_schedule("s", t0, t0 + 1h, make_job()));
  CHECK(b.counts("q").queued == 1);
  CHECK_FALSE(b.fire_schedule("s", t0, t0 + 2h, make_job()));
  CHECK(b.fire_schedule("s", t0 + 1h, t0 + 2h, std::nullopt));  // a skipped tick
  CHECK(b.counts("q").queued == 1);
  CHECK(b.schedules()[0].next_run == t0 + 2h);
  CHECK_THROWS_AS(b.put_schedule({"bad name", {}, t0}), jobq::InvalidArgument);
}

TEMPLATE_LIST_TEST_CASE("bad schedules are refused with a clear error", "[conformance][schedule][bad-input]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Queue q{b, "q"};
  auto refuses = [&](const std::string& name, const std::string& cron, const jobq::ScheduleOptions& o,
                     const std::string& needle) {
    try {
      q.schedule(name, cron, o, "j", {});
      FAIL("schedule '" << cron << "' was accepted");
    } catch (const jobq::InvalidArgument& e) {
      CHECK_THAT(e.what(), Catch::Contains(needle));
    }
  };
  refuses("s", "61 * * * *", {}, "minute");
  refuses("s", "* * * *", {}, "fields");
  refuses("s", "0 0 30 2 *", {}, "never fires");
  refuses("s", "@fortnightly", {}, "alias");
  refuses("s", "0 9 * * *", {.tz = "Mars/Olympus_Mons"}, "time zone");
  refuses("s p", "0 9 * * *", {}, "schedule name");
  CHECK(b.schedules().empty());
}

TEMPLATE_LIST_TEST_CASE("a worker fires due schedules and runs their jobs", "[conformance][schedule][worker]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  fx.clock.set(conformance::utc(2030, 3, 1, 8, 59));
  jobq::Queue q{b, "q"};
  q.schedule("greeting", "0 9 * * *", {.tz = "UTC"}, Greet{"morning"});
  auto opt = fast_worker(1);
  opt.schedule_interval = 5ms;
  jobq::Worker w{b, opt};
  std::atomic<int> runs{0};
  w.template handle<Greet>([&](const Greet& g) {
    CHECK(g.who == "morning");
    ++runs;
  });
  w.start();
  std::this_thread::sleep_for(50ms);
  CHECK(runs == 0);
  fx.clock.set(conformance::utc(2030, 3, 1, 9, 0));
  CHECK(eventually([&] { return runs.load() == 1; }));
  std::this_thread::sleep_for(50ms);
  w.stop();
  CHECK(runs == 1);
  CHECK(b.counts("q").completed == 1);
}

// ---------------------------------------------------------------------------------------------
// Notices, progress, results and wait_for

TEMPLATE_LIST_TEST_CASE("subscribers are told of completions, failures, progress and cancels",
                        "[conformance][events]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  conformance::NoticeLog log, all;
  const std::vector<std::string> qs{"q"};
  auto sub = b.subscribe(qs, log.fn());
  auto sub_all = b.subscribe({}, all.fn());
  auto nj = make_job();
  nj.max_attempts = 2;
  const auto id = b.enqueue(nj).id;
  auto j = claim_one(b);
  REQUIRE(b.set_progress(id, j.lease_token, 30, "a third"));
  REQUIRE(b.fail({id, j.lease_token, "flaky", fx.clock.now()}) == jobq::FailOutcome::retried);
  j = claim_one(b);
  REQUIRE(b.fail({id, j.lease_token, "flaky again", fx.clock.now()}) == jobq::FailOutcome::dead);
  REQUIRE(b.redrive(id));
  j = claim_one(b);
  REQUIRE(b.complete(id, j.lease_token, {{"ok", true}}));
  const auto gone = b.enqueue(make_job()).id;
  REQUIRE(b.cancel(gone));
  const auto expiring = b.enqueue(make_job()).id;
  claim_one(b, "q", 1s);
  fx.clock.advance(2s);
  b.recover_expired();
  b.enqueue(make_job("elsewhere"));
  auto e = claim_one(b, "elsewhere");
  REQUIRE(b.complete(e.id, e.lease_token, nullptr));

  using K = jobq::JobNotice::Kind;
  REQUIRE(eventually([&] { return log.has(K::failed, expiring) && all.has(K::completed, e.id); }));
  auto p = log.find(K::progress, id);
  REQUIRE(p);
  CHECK(p->progress == 30);
  CHECK(p->message == "a third");
  CHECK(p->queue == "q");
  CHECK(p->attempt == 1);
  auto f = log.find(K::failed, id);
  REQUIRE(f);
  CHECK(f->message == "flaky");
  CHECK(log.find(K::dead, id)->attempt == 2);
  CHECK(log.find(K::completed, id)->attempt == 1);  // redriven: attempts start again
  CHECK(log.has(K::cancelled, gone));
  CHECK_THAT(log.find(K::failed, expiring)->message, Catch::Contains("lease expired"));
  CHECK_FALSE(log.has(K::completed, e.id));  // another queue
  CHECK(all.has(K::completed, id));

  // Once the subscription ends, nothing more arrives.
  sub.cancel();
  const auto before = log.size();
  const auto late = b.enqueue(make_job()).id;
  REQUIRE(b.cancel(late));
  REQUIRE(eventually([&] { return all.has(K::cancelled, late); }));
  CHECK(log.size() == before);
  CHECK_THROWS_AS(b.subscribe(std::vector<std::string>{"bad queue"}, log.fn()), jobq::InvalidArgument);
}

TEMPLATE_LIST_TEST_CASE("wait_for returns a job once it finishes, or nothing at the timeout",
                        "[conformance][events]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Queue q{b, "q"};
  const auto id = q.enqueue("resize", {{"w", 640}});
  std::thread finisher([&] {
    std::this_thread::sleep_for(100ms);
    auto j = claim_one(b);
    b.set_progress(j.id, j.lease_token, 50, "half");
    b.complete(j.id, j.lease_token, {{"url", "https://cdn/x.png"}});
  });
  const auto started = std::chrono::steady_clock::now();
  auto done = q.wait_for(id, 20s);
  finisher.join();
  REQUIRE(done);
  CHECK(done->state == JobState::completed);
  CHECK(done->result == nlohmann::json{{"url", "https://cdn/x.png"}});
  CHECK(done->progress == 50);
  CHECK(std::chrono::steady_clock::now() - started < 15s);

  const auto pending = q.enqueue("resize", {});
  CHECK_FALSE(q.wait_for(pending, 50ms));
  REQUIRE(q.cancel(pending));
  CHECK(q.wait_for(pending, 10s)->state == JobState::cancelled);
  CHECK_THROWS_AS(q.wait_for(987654321, 10ms), jobq::NotFound);
}

TEMPLATE_LIST_TEST_CASE("a worker reports progress events and stores the handler's result",
                        "[conformance][events][worker]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Queue q{b, "q"};
  const auto id = q.enqueue(Greet{"ada"});
  std::mutex m;
  std::vector<jobq::JobEvent> events;
  auto opt = fast_worker(1);
  opt.on_event = [&](const jobq::JobEvent& e) {
    std::lock_guard lock(m);
    events.push_back(e);
  };
  jobq::Worker w{b, opt};
  w.template handle<Greet>([](const Greet& g, jobq::JobContext& ctx) {
    ctx.progress(60, "drafting");
    return "hello " + g.who;
  });
  CHECK(w.run_until_idle(60s));
  CHECK(q.get(id)->result == "hello ada");
  std::lock_guard lock(m);
  auto it = std::find_if(events.begin(), events.end(),
                         [](const jobq::JobEvent& e) { return e.kind == jobq::JobEvent::Kind::progress; });
  REQUIRE(it != events.end());
  CHECK(it->progress == 60);
  CHECK(it->message == "drafting");
  CHECK(it->id == id);
}

// ---------------------------------------------------------------------------------------------
// Injection-looking input is data, never code

TEMPLATE_LIST_TEST_CASE("SQL- and Lua-looking names, keys and payloads are stored verbatim",
                        "[conformance][security]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  const std::string sql = "x'); DROP TABLE jobs; --";
  const std::string lua = "\"]] redis.call('FLUSHALL') --[[";
  auto nj = make_job("q", {{"sql", sql}, {"lua", lua}, {sql, lua}}, "job';DELETE-FROM-jobs;--");
  nj.unique_key = sql + lua;
  nj.group = lua + sql;
  const auto r = b.enqueue(nj);
  auto j = claim_one(b);
  CHECK(j.id == r.id);
  CHECK(j.name == nj.name);
  CHECK(j.payload == nj.payload);
  CHECK(j.unique_key == nj.unique_key);
  CHECK(j.group == nj.group);
  REQUIRE(b.set_progress(j.id, j.lease_token, 1, sql + lua));
  CHECK(b.get(r.id)->progress_message == sql + lua);
  REQUIRE(b.fail({j.id, j.lease_token, lua + sql, fx.clock.now()}) == jobq::FailOutcome::retried);
  CHECK(b.get(r.id)->errors.at(0).message == lua + sql);
  b.put_schedule({"s", {{"cron", sql}, {"lua", lua}}, fx.clock.now()});
  CHECK(b.schedules().at(0).spec == nlohmann::json{{"cron", sql}, {"lua", lua}});
  for (const auto& bad : {std::string("q'; DROP TABLE jobs; --"), std::string("{q}"), std::string("q:x")}) {
    CHECK_THROWS_AS(b.enqueue(make_job(bad)), jobq::InvalidArgument);
  }
  CHECK(b.counts("q").queued == 1);
}
