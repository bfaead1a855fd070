#pragma once
// Conformance cases for two backend objects on one store (fixture.second_backend()): what two
// processes sharing a database see. Racing schedulers, group and rate limits, unique keys,
// notices and the payload limit. Where a fixture cannot share a store between objects (memory,
// AnyBackend over memory) its second object is the first one again; the cases still hold.
//
// Optional fixture hooks, used where a fixture has them:
//   active_per_group_probe()        -> callable(queue) reading the most active jobs of one group
//                                      straight from the store (called from a monitor thread)
//   check_group_bookkeeping(queue)  after a group-limit race: no internal state left behind
//   check_rate_bookkeeping(queue)   after a rate-limit race: the ledger is pruned and forgotten
//   no_job_stored()                 true while nothing of any job was written

#include "conformance/common.hpp"

namespace conformance {

/// Runs `n` threads at once, the even ones on the fixture's first object and the odd ones on its
/// second, and joins them. `fn(backend, index)` must not use Catch's assertions (not thread-safe).
/// The first exception a thread throws is rethrown here after the join, so the case fails with
/// its message instead of terminating the program.
template <class F, class Fn>
void race_on_both(F& fx, int n, Fn fn) {
  auto& a = fx.backend();
  auto& b = fx.second_backend();
  std::mutex m;
  std::exception_ptr first;
  std::vector<std::thread> threads;
  for (int t = 0; t < n; ++t) {
    threads.emplace_back([&, t] {
      try {
        fn(t % 2 == 0 ? a : b, t);
      } catch (...) {
        std::lock_guard lock(m);
        if (!first) first = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  if (first) std::rethrow_exception(first);
}

/// The notices a log holds so far, in arrival order.
inline std::vector<jobq::JobNotice> notices_of(jobq_test::NoticeLog& log) {
  std::lock_guard lock(log.m);
  return log.seen;
}

/// A notice with its progress zeroed: JobNotice::progress is specified for progress notices only.
inline jobq::JobNotice without_progress(jobq::JobNotice n) {
  n.progress = 0;
  return n;
}

}  // namespace conformance

TEMPLATE_LIST_TEST_CASE("racing schedulers on two objects fire each tick exactly once",
                        "[conformance][two-objects][schedule][concurrency]", Backends) {
  TestType fx;
  auto& a = fx.backend();
  auto& b = fx.second_backend();
  const auto t0 = fx.clock.now();
  a.put_schedule({"tick", {{"every", "1m"}}, t0});
  constexpr int ticks = 20;
  std::atomic<int> fired{0};
  // Every scheduler tries every tick in order: whoever fired tick k - 1 tries k next, so none is
  // skipped, and each tick is contended by the others.
  race_on_both(fx, 6, [&](auto& be, int) {
    for (int k = 0; k < ticks; ++k) {
      const auto at = t0 + std::chrono::minutes(k);
      if (be.fire_schedule("tick", at, at + 1min, make_job("s", {{"tick", k}}))) ++fired;
    }
  });
  CHECK(fired == ticks);
  CHECK(a.counts("s").queued == ticks);
  std::set<int> seen;
  for (const auto& j : b.list("s", JobState::queued, {0, 1000})) seen.insert(j.payload["tick"].template get<int>());
  CHECK(seen.size() == static_cast<std::size_t>(ticks));  // one job per tick, no tick twice
  const auto schedules = b.schedules();
  REQUIRE(schedules.size() == 1);
  CHECK(schedules[0].next_run == t0 + std::chrono::minutes(ticks));
  CHECK(schedules[0].spec == nlohmann::json{{"every", "1m"}});
}

TEMPLATE_LIST_TEST_CASE("group concurrency holds across two objects and many threads",
                        "[conformance][two-objects][limits][concurrency]", Backends) {
  TestType fx;
  constexpr int k = 2;
  constexpr int grouped = 160;
  constexpr int total = 200;
  fx.backend().set_queue_limits("g", {std::nullopt, k});
  std::vector<jobq::NewJob> jobs;
  for (int i = 0; i < total; ++i) {
    auto j = make_job("g", {{"i", i}});
    if (i < grouped) j.group = "t" + std::to_string(i % 4);  // the rest have no group: never limited
    jobs.push_back(j);
  }
  fx.second_backend().enqueue_many(jobs);

  // The claimers' own count of a group's active jobs rises after a claim returns and falls before
  // the completion is sent, so a count above k proves the store had that many active at once.
  std::mutex m;
  std::map<std::string, int> active;
  std::set<jobq::JobId> seen;
  int worst = 0;
  bool duplicate = false;
  std::atomic<int> done{0};
  std::atomic<int> rejected{0};
  std::atomic<bool> stop{false};
  int worst_in_store = 0;
  std::thread monitor;
  if constexpr (requires { fx.active_per_group_probe(); }) {
    monitor = std::thread([&, probe = fx.active_per_group_probe()] {
      while (!stop.load()) worst_in_store = std::max(worst_in_store, probe("g"));
    });
  }
  race_on_both(fx, 6, [&](auto& be, int) {
    for (int idle = 0; done.load() < total && idle < 2000;) {
      auto got = be.claim(claim_from({"g"}, 3));
      if (got.empty()) {
        ++idle;
        std::this_thread::sleep_for(1ms);
        continue;
      }
      idle = 0;
      {
        std::lock_guard lock(m);
        for (const auto& j : got) {
          duplicate = duplicate || !seen.insert(j.id).second;
          if (!j.group.empty()) worst = std::max(worst, ++active[j.group]);
        }
      }
      // Long enough that another claimer's claim lands while these are held, even under ASan.
      std::this_thread::sleep_for(2ms);
      for (const auto& j : got) {
        {
          std::lock_guard lock(m);
          if (!j.group.empty()) --active[j.group];
        }
        if (!be.complete(j.id, j.lease_token, nullptr)) ++rejected;
        ++done;
      }
    }
  });
  stop = true;
  if (monitor.joinable()) monitor.join();
  CHECK(done == total);
  CHECK(rejected == 0);
  CHECK_FALSE(duplicate);
  CHECK(worst <= k);
  CHECK(worst == k);  // the limit was reached, not just respected by running one at a time
  CHECK(worst_in_store <= k);
  CHECK(fx.backend().counts("g").completed == total);
  if constexpr (requires { fx.check_group_bookkeeping("g"); }) fx.check_group_bookkeeping("g");
}

TEMPLATE_LIST_TEST_CASE("queue concurrency holds across two objects and many threads",
                        "[conformance][two-objects][limits][queue-concurrency][concurrency]", Backends) {
  TestType fx;
  constexpr int k = 3;
  constexpr int total = 200;
  fx.backend().set_queue_limits("c", {.concurrency = k});
  std::vector<jobq::NewJob> jobs;
  for (int i = 0; i < total; ++i) {
    auto j = make_job("c", {{"i", i}});
    if (i % 3 == 0) j.group = "t" + std::to_string(i % 4);
    jobs.push_back(j);
  }
  fx.second_backend().enqueue_many(jobs);

  // The claimers' count of leases held rises after a claim returns and falls before the
  // completion is sent, so a count above k proves the store had that many active at once; the
  // store's own count is read after every claim too.
  std::mutex m;
  std::set<jobq::JobId> seen;
  int held = 0;
  int worst = 0;
  std::int64_t worst_in_store = 0;
  bool duplicate = false;
  std::atomic<int> done{0};
  std::atomic<int> rejected{0};
  race_on_both(fx, 8, [&](auto& be, int t) {
    std::mt19937 rng(static_cast<unsigned>(t) * 7919U + 1U);
    for (int idle = 0; done.load() < total && idle < 2000;) {
      auto got = be.claim(claim_from({"c"}, 1 + rng() % 5));
      const auto active = be.counts("c").active;
      if (got.empty()) {
        ++idle;
        std::this_thread::sleep_for(1ms);
        continue;
      }
      idle = 0;
      {
        std::lock_guard lock(m);
        worst_in_store = std::max(worst_in_store, active);
        for (const auto& j : got) duplicate = duplicate || !seen.insert(j.id).second;
        held += static_cast<int>(got.size());
        worst = std::max(worst, held);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1 + rng() % 3));
      for (const auto& j : got) {
        {
          std::lock_guard lock(m);
          --held;
        }
        if (!be.complete(j.id, j.lease_token, nullptr)) ++rejected;
        ++done;
      }
    }
  });
  CHECK(done == total);
  CHECK(rejected == 0);
  CHECK_FALSE(duplicate);
  CHECK(worst <= k);
  CHECK(worst == k);  // the limit was reached, not just respected by running one at a time
  CHECK(worst_in_store <= k);
  CHECK(fx.backend().counts("c").completed == total);
  if constexpr (requires { fx.check_group_bookkeeping("c"); }) fx.check_group_bookkeeping("c");
}

TEMPLATE_LIST_TEST_CASE("a rate limit holds across two objects and many threads in every window",
                        "[conformance][two-objects][limits][concurrency]", Backends) {
  TestType fx;
  auto& a = fx.backend();
  const jobq::RateLimit rate{7, 1000ms};
  constexpr int total = 100;
  fx.second_backend().set_queue_limits("r", {rate, 0});
  a.enqueue_many(std::vector<jobq::NewJob>(total, make_job("r")));

  // Steps of 250 ms; at each, 6 claimers race until the limit stops them all.
  std::vector<std::pair<std::int64_t, int>> starts;  // (clock ms, jobs claimed at that time)
  int claimed = 0;
  for (int step = 0; claimed < total && step < 200; ++step) {
    std::atomic<int> n{0};
    race_on_both(fx, 6, [&](auto& be, int) {
      for (int i = 0; i < 5; ++i) n += static_cast<int>(be.claim(claim_from({"r"}, 2)).size());
    });
    starts.emplace_back(jobq::to_epoch_ms(fx.clock.now()), n.load());
    claimed += n.load();
    if (step == 0) CHECK(a.counts("r").queued == total - rate.max);
    fx.clock.advance(250ms);
  }
  CHECK(claimed == total);
  for (const auto& [at, n] : starts) {
    int in_window = 0;
    for (const auto& [at2, n2] : starts) {
      if (at2 > at - rate.window.count() && at2 <= at) in_window += n2;
    }
    INFO("window ending at " << at);
    CHECK(in_window <= rate.max);
  }
  // The window slides: 7 starts at t0, none until t0 + 1 s frees them.
  REQUIRE(starts.size() > 4);
  CHECK(starts[0].second == 7);
  CHECK(starts[1].second == 0);
  CHECK(starts[3].second == 0);
  CHECK(starts[4].second == 7);
  // Held-back jobs were not touched: every job was claimed once, at its first attempt.
  const auto jobs = a.list("r", JobState::active, {0, 1000});
  CHECK(jobs.size() == static_cast<std::size_t>(total));
  CHECK(std::all_of(jobs.begin(), jobs.end(), [](const auto& j) { return j.attempts == 1; }));
  if constexpr (requires { fx.check_rate_bookkeeping("r"); }) fx.check_rate_bookkeeping("r");
}

TEMPLATE_LIST_TEST_CASE("throttle and debounce keys hold under concurrent enqueues from two objects",
                        "[conformance][two-objects][unique][concurrency]", Backends) {
  TestType fx;
  auto& a = fx.backend();
  auto& b = fx.second_backend();
  const auto debounced = [](nlohmann::json payload) {
    auto d = make_job("d", std::move(payload));
    d.unique_key = "doc";
    d.debounce = 5s;
    return d;
  };
  std::mutex m;
  std::set<jobq::JobId> ids;
  race_on_both(fx, 8, [&](auto& be, int t) {
    for (int i = 0; i < 20; ++i) {
      auto th = make_job("th");
      th.unique_key = "sync";
      th.throttle = 1min;
      const auto r1 = be.enqueue(debounced({{"t", t}, {"i", i}}));
      const auto r2 = be.enqueue(th);
      std::lock_guard lock(m);
      ids.insert(r1.id);
      ids.insert(r2.id);
    }
  });
  CHECK(ids.size() == 2);
  CHECK(a.counts("d").queued == 1);
  CHECK(a.counts("th").queued == 1);
  // Debounce while the holder runs: a second job is queued beside the active one.
  fx.clock.advance(5s);
  REQUIRE(a.claim(claim_from({"d"}, 1, 1h)).size() == 1);
  CHECK(b.enqueue(debounced({{"late", true}})).created);
  CHECK(a.counts("d").active == 1);
  CHECK(a.counts("d").queued == 1);
}

TEMPLATE_LIST_TEST_CASE("a subscriber on one object hears every change made through the other, in order",
                        "[conformance][two-objects][events]", Backends) {
  TestType fx;
  auto& a = fx.backend();          // listens
  auto& b = fx.second_backend();   // makes every change
  TestType elsewhere;              // another store: its subscribers hear none of this
  jobq_test::NoticeLog log, other_log, witness;
  auto sub = a.subscribe({}, log.fn());
  auto other_sub = elsewhere.backend().subscribe({}, other_log.fn());

  const auto twice = with_attempts(2);
  const auto id = b.enqueue(twice).id;
  auto j = claim_one(b);
  REQUIRE(b.set_progress(id, j.lease_token, 40, "forty"));
  CHECK(a.get(id)->progress == 40);  // read back through the other object
  CHECK(a.get(id)->progress_message == "forty");
  REQUIRE(b.fail({id, j.lease_token, "boom", fx.clock.now()}) == jobq::FailOutcome::retried);
  j = claim_one(b);
  REQUIRE(b.complete(id, j.lease_token, {{"answer", 42}}));
  const auto gone = b.enqueue(make_job()).id;
  REQUIRE(b.cancel(gone));
  const auto fatal = b.enqueue(with_attempts(1)).id;
  j = claim_one(b);
  REQUIRE(b.fail({fatal, j.lease_token, "fatal", std::nullopt}) == jobq::FailOutcome::dead);
  const auto dying = b.enqueue(twice).id;
  for (const auto expected : {jobq::Recovered{1, 0}, jobq::Recovered{0, 1}}) {
    REQUIRE(claim_one(b, "q", 1s).id == dying);
    fx.clock.advance(2s);
    CHECK(b.recover_expired() == expected);
  }

  using K = jobq::JobNotice::Kind;
  REQUIRE(eventually([&] { return log.size() >= 7; }, 10s));
  auto seen = notices_of(log);
  REQUIRE(seen.size() == 7);
  CHECK(seen[0] == jobq::JobNotice{K::progress, id, "q", 1, 40, "forty"});
  CHECK(without_progress(seen[1]) == jobq::JobNotice{K::failed, id, "q", 1, 0, "boom"});
  // What a completed notice carries as progress is the backend's choice; each fixture says.
  const int done_progress = TestType::completed_notice_has_progress ? 40 : 0;
  CHECK(seen[2] == jobq::JobNotice{K::completed, id, "q", 2, done_progress, ""});
  CHECK(seen[3] == jobq::JobNotice{K::cancelled, gone, "q", 0, 0, ""});
  CHECK(seen[4] == jobq::JobNotice{K::dead, fatal, "q", 1, 0, "fatal"});
  for (const auto i : {5, 6}) {
    auto& n = seen[static_cast<std::size_t>(i)];
    CHECK_THAT(n.message, Catch::Contains("lease expired"));
    n.message.clear();
  }
  CHECK(seen[5] == jobq::JobNotice{K::failed, dying, "q", 1, 0, ""});
  CHECK(seen[6] == jobq::JobNotice{K::dead, dying, "q", 2, 0, ""});
  CHECK(log.count(K::completed, id) == 1);  // once, not once per subscription path

  const auto rec = a.get(id);  // the result and progress, through the other object
  REQUIRE(rec);
  CHECK(rec->result == nlohmann::json{{"answer", 42}});
  CHECK(rec->progress == 40);
  CHECK(rec->progress_message == "forty");

  // An ended subscription hears nothing more; the witness shows the notice was sent.
  sub.cancel();
  auto witness_sub = b.subscribe({}, witness.fn());
  const auto late = b.enqueue(make_job()).id;
  REQUIRE(b.cancel(late));
  REQUIRE(eventually([&] { return witness.has(K::cancelled, late); }));
  CHECK(log.size() == 7);
  CHECK(other_log.size() == 0);
}

TEMPLATE_LIST_TEST_CASE("a job one object claimed and another cancelled is lost to the first",
                        "[conformance][two-objects][cancel]", Backends) {
  TestType fx;
  auto& a = fx.backend();          // the worker's
  auto& b = fx.second_backend();   // the operator's
  const auto id = a.enqueue(make_job()).id;
  const auto j = claim_one(a, "q", 10s);
  REQUIRE(b.cancel(id));
  CHECK_FALSE(a.extend_lease(id, j.lease_token, 10s));
  CHECK_FALSE(a.complete(id, j.lease_token, {{"late", true}}));
  CHECK(a.fail({id, j.lease_token, "late", std::nullopt}) == jobq::FailOutcome::rejected);
  CHECK_FALSE(a.snooze(id, j.lease_token, a.now()));
  fx.clock.advance(1min);
  CHECK(a.recover_expired() == jobq::Recovered{0, 0});
  for (auto* be : {&a, &b}) {
    auto s = be->get(id);
    REQUIRE(s);
    CHECK(s->state == JobState::cancelled);
    CHECK(s->result.is_null());
    CHECK(s->errors.empty());
  }
}

/// Runs one job whose handler waits for its stop token under a worker on the fixture's first
/// object with `opt`, cancels it through the second, and checks that the handler stopped and
/// its late result was refused.
template <class F>
void cancel_running_job(jobq::WorkerOptions opt) {
  auto&& [fx, a, q] = WorkerCase<F>{};
  auto& b = fx.second_backend();  // the operator's
  const auto id = q.enqueue(Greet{"long"});
  std::atomic<bool> started{false}, stopped{false};
  jobq::Worker w{a, opt};
  w.template handle<Greet>([&](const Greet&, jobq::JobContext& ctx) {
    started = true;
    while (!ctx.stop_requested()) std::this_thread::sleep_for(1ms);
    stopped = true;
    return std::string("too late");
  });
  w.start();
  REQUIRE(eventually([&] { return started.load(); }));
  REQUIRE(b.cancel(id));
  CHECK(eventually([&] { return stopped.load(); }, 30s));
  w.stop();
  const auto j = b.get(id);
  REQUIRE(j);
  CHECK(j->state == JobState::cancelled);
  CHECK(j->result.is_null());
  CHECK(w.stats().lost_leases == 1);
  CHECK(w.stats().processed == 0);
}

TEMPLATE_LIST_TEST_CASE("a running job cancelled through another object stops at once, not at a heartbeat",
                        "[conformance][two-objects][cancel][worker]", Backends) {
  auto opt = fast_worker(1);
  opt.lease = 600s;
  opt.heartbeat_interval = 300s;  // no heartbeat within the case: only the cancel watch can tell
  cancel_running_job<TestType>(opt);
}

TEMPLATE_LIST_TEST_CASE("without instant_cancel a running job cancelled elsewhere stops at its next heartbeat",
                        "[conformance][two-objects][cancel][worker]", Backends) {
  auto opt = fast_worker(1);
  opt.instant_cancel = false;
  opt.lease = 30s;
  opt.heartbeat_interval = 50ms;
  cancel_running_job<TestType>(opt);
}

TEMPLATE_LIST_TEST_CASE("max_payload_bytes is per object and refuses before anything is written",
                        "[conformance][two-objects][bad-input][limits]", Backends) {
  TestType fx;
  auto& b = fx.backend();  // the default limit
  const auto limited = fx.open_with_payload_limit(100);
  auto& l = *limited;
  const nlohmann::json big = {{"blob", std::string(100, 'x')}};
  CHECK_THROWS_AS(l.enqueue(make_job("q", big)), jobq::InvalidArgument);
  CHECK_THROWS_WITH(l.enqueue(make_job("q", big)), Catch::Contains("max_payload_bytes"));
  const std::vector<jobq::NewJob> batch{make_job("q"), make_job("q", big)};
  CHECK_THROWS_AS(l.enqueue_many(batch), jobq::InvalidArgument);
  const auto t0 = fx.clock.now();
  CHECK_THROWS_AS(l.fire_schedule("none", t0, t0, make_job("q", big)), jobq::InvalidArgument);
  l.put_schedule({"s", {{"every", "1m"}}, t0});
  CHECK_THROWS_AS(l.fire_schedule("s", t0, t0 + 1min, make_job("q", big)), jobq::InvalidArgument);
  CHECK(l.schedules().at(0).next_run == t0);  // the tick was not consumed
  CHECK(l.counts("q") == jobq::Counts{});
  CHECK(b.counts("q") == jobq::Counts{});
  if constexpr (requires { fx.no_job_stored(); }) CHECK(fx.no_job_stored());
  CHECK(l.enqueue(make_job("q", {{"blob", std::string(80, 'y')}})).created);
  CHECK(b.enqueue(make_job("q", big)).created);  // the limit belongs to the object that has it
}
