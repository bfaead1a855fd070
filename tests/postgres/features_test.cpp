// PostgreSQL-specific checks of the issue #7 features beyond the conformance suite: limits,
// schedules, unique keys and notices across two backend objects on one schema (each with its own
// connection pool and listener: to the server they are two processes), the v2 -> v3 upgrade,
// the payload limit inside a caller's transaction, and notices that exceed one NOTIFY.

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include <jobq/jobq.hpp>
#include <jobq/postgres.hpp>

#include "postgres/pg_test_support.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

namespace {

jobq::NewJob job(std::string queue = "q", nlohmann::json payload = {{"n", 1}}) {
  jobq::NewJob j;
  j.queue = std::move(queue);
  j.name = "noop";
  j.payload = std::move(payload);
  return j;
}

/// Two backend objects on one schema, sharing one manual clock.
struct Pair {
  jobq::ManualClock clock;
  pgtest::TempSchema schema;
  jobq::PostgresBackend a{pgtest::url(), {.clock = clock.fn(), .schema = schema.name}};
  jobq::PostgresBackend b{pgtest::url(), {.clock = clock.fn(), .schema = schema.name}};
  std::string q() const { return "\"" + schema.name + "\""; }
};

using jobq_test::eventually;

using Log = jobq_test::NoticeLog;

}  // namespace

TEST_CASE("group and rate limits hold across two backend objects claiming from many threads",
          "[postgres][limits]") {
  Pair p;
  p.a.set_queue_limits("g", {std::nullopt, 2});
  p.a.set_queue_limits("r", {jobq::RateLimit{25, 1h}, 0});
  std::vector<jobq::NewJob> g, r;
  for (int i = 0; i < 300; ++i) {
    auto j = job("g", {{"i", i}});
    j.group = "t" + std::to_string(i % 4);
    g.push_back(j);
  }
  for (int i = 0; i < 100; ++i) r.push_back(job("r", {{"i", i}}));
  p.a.enqueue_many(g);
  p.b.enqueue_many(r);

  // Claimers complete what they claim, so group slots free and fill again all the time. The
  // tracker counts a job from after its claim returned until before its completion is sent,
  // so a count above the limit proves the server had that many active at once.
  std::mutex m;
  std::map<std::string, int> running;
  int most = 0;
  std::atomic<int> rated{0}, done{0}, lost{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      auto& be = t % 2 == 0 ? p.a : p.b;
      for (int round = 0; round < 400 && done.load() < 300; ++round) {
        rated += static_cast<int>(be.claim({{"r"}, 3, 1h}).size());
        auto got = be.claim({{"g"}, 3, 1h});
        {
          std::lock_guard lock(m);
          for (const auto& j : got) most = std::max(most, ++running[j.group]);
        }
        std::this_thread::sleep_for(1ms);
        for (const auto& j : got) {
          {
            std::lock_guard lock(m);
            --running[j.group];
          }
          if (!be.complete(j.id, j.lease_token, nullptr)) ++lost;  // Catch2 asserts on this thread only
          ++done;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(done == 300);
  CHECK(lost == 0);
  CHECK(most <= 2);
  CHECK(most >= 1);
  CHECK(rated == 25);  // the clock stands still: one window
  CHECK(p.b.counts("r").queued == 75);
  p.clock.advance(1h);
  CHECK(p.b.claim({{"r"}, 100, 1h}).size() == 25);
  CHECK(p.a.claim({{"r"}, 100, 1h}).empty());
}

TEST_CASE("a saturated group does not hide later groups, however long its backlog", "[postgres][limits]") {
  Pair p;
  p.a.set_queue_limits("q", {std::nullopt, 1});
  std::vector<jobq::NewJob> flood;
  for (int i = 0; i < 3000; ++i) {
    auto j = job("q", {{"i", i}});
    j.group = "big";
    flood.push_back(j);
  }
  p.a.enqueue_many(flood);
  auto late = job("q");
  late.group = "small";
  const auto small = p.a.enqueue(late).id;
  const auto first = p.a.claim({{"q"}, 5, 1h});
  REQUIRE(first.size() == 2);  // one of "big" (the rest skipped), then "small"
  CHECK(first[1].id == small);
  CHECK(p.b.claim({{"q"}, 5, 1h}).empty());  // "big" is excluded in the query now
  REQUIRE(p.b.complete(first[0].id, first[0].lease_token, nullptr));
  CHECK(p.a.claim({{"q"}, 5, 1h}).size() == 1);
}

TEST_CASE("a multi-queue claim with one limited queue keeps the global claim order", "[postgres][limits]") {
  Pair p;
  p.a.set_queue_limits("lim", {jobq::RateLimit{1, 1h}, 0});
  auto hi = job("lim");
  hi.priority = 5;
  const auto lim_hi = p.a.enqueue(hi).id;
  const auto lim_lo = p.a.enqueue(job("lim")).id;
  const auto free1 = p.a.enqueue(job("free")).id;
  auto got = p.b.claim({{"free", "lim"}, 3, 1h});
  REQUIRE(got.size() == 2);
  CHECK(got[0].id == lim_hi);
  CHECK(got[1].id == free1);
  CHECK(p.a.get(lim_lo)->state == jobq::JobState::queued);
}

TEST_CASE("racing schedulers in two backend objects fire each tick once", "[postgres][schedule]") {
  Pair p;
  const auto t0 = p.clock.now();
  p.a.put_schedule({"tick", {{"every", "1m"}}, t0});
  std::atomic<int> fired{0};
  for (int tick = 0; tick < 10; ++tick) {
    const auto expected = t0 + tick * 1min;
    std::vector<std::thread> threads;
    for (int t = 0; t < 6; ++t) {
      threads.emplace_back([&, t] {
        auto& be = t % 2 == 0 ? p.a : p.b;
        if (be.fire_schedule("tick", expected, expected + 1min, job("s", {{"tick", tick}}))) ++fired;
      });
    }
    for (auto& t : threads) t.join();
  }
  CHECK(fired == 10);
  CHECK(p.a.counts("s").queued == 10);
  CHECK(p.b.schedules().at(0).next_run == t0 + 10min);
  CHECK(p.b.schedules().at(0).spec == nlohmann::json{{"every", "1m"}});
}

TEST_CASE("unique keys with throttle and debounce hold under concurrent enqueues from two objects",
          "[postgres][unique]") {
  Pair p;
  std::vector<std::thread> threads;
  std::mutex m;
  std::set<jobq::JobId> ids;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      auto& be = t % 2 == 0 ? p.a : p.b;
      for (int i = 0; i < 20; ++i) {
        auto d = job("d", {{"t", t}, {"i", i}});
        d.unique_key = "doc";
        d.debounce = 5s;
        auto th = job("th");
        th.unique_key = "sync";
        th.throttle = 1min;
        const auto r1 = be.enqueue(d);
        const auto r2 = be.enqueue(th);
        std::lock_guard lock(m);
        ids.insert(r1.id);
        ids.insert(r2.id);
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(ids.size() == 2);
  CHECK(p.a.counts("d").queued == 1);
  CHECK(p.a.counts("th").queued == 1);
  // Debounce while the holder runs: a second job is queued beside the active one.
  p.clock.advance(5s);
  auto running = p.a.claim({{"d"}, 1, 1h});
  REQUIRE(running.size() == 1);
  auto d = job("d", {{"late", true}});
  d.unique_key = "doc";
  d.debounce = 5s;
  const auto next = p.b.enqueue(d);
  CHECK(next.created);
  CHECK(p.a.counts("d").active == 1);
  CHECK(p.a.counts("d").queued == 1);
}

TEST_CASE("notices cross backend objects: progress, completion, failure, death, cancel",
          "[postgres][events]") {
  Pair p;
  Log log;
  const std::vector<std::string> qs{"q"};
  auto sub = p.a.subscribe(qs, log.fn());  // a listens; b makes every change
  auto nj = job();
  nj.max_attempts = 2;
  const auto id = p.b.enqueue(nj).id;
  auto j = p.b.claim({{"q"}, 1, 1h}).at(0);
  REQUIRE(p.b.set_progress(id, j.lease_token, 40, "forty"));
  CHECK(p.a.get(id)->progress == 40);  // progress read back through the other object
  CHECK(p.a.get(id)->progress_message == "forty");
  REQUIRE(p.b.fail({id, j.lease_token, "oops", p.clock.now()}) == jobq::FailOutcome::retried);
  j = p.b.claim({{"q"}, 1, 1h}).at(0);
  REQUIRE(p.b.complete(id, j.lease_token, {{"answer", 42}}));
  CHECK(p.a.get(id)->result == nlohmann::json{{"answer", 42}});
  const auto gone = p.b.enqueue(job()).id;
  REQUIRE(p.b.cancel(gone));
  auto dying = job();
  dying.max_attempts = 1;
  const auto dead = p.b.enqueue(dying).id;
  j = p.b.claim({{"q"}, 1, 1h}).at(0);
  REQUIRE(p.b.fail({dead, j.lease_token, "fatal", std::nullopt}) == jobq::FailOutcome::dead);
  using K = jobq::JobNotice::Kind;
  REQUIRE(eventually([&] { return log.find(K::dead, dead).has_value(); }));
  CHECK(log.find(K::progress, id)->progress == 40);
  CHECK(log.find(K::progress, id)->message == "forty");
  CHECK(log.find(K::failed, id)->message == "oops");
  CHECK(log.find(K::completed, id)->attempt == 2);
  CHECK(log.find(K::cancelled, gone));
  CHECK(log.find(K::dead, dead)->message == "fatal");
}

TEST_CASE("notices of a large batch are split over several NOTIFYs; long messages are cut",
          "[postgres][events]") {
  Pair p;
  Log log;
  auto sub = p.a.subscribe({}, log.fn());
  std::vector<jobq::NewJob> many(600, job("bulk"));
  p.b.enqueue_many(many);
  auto got = p.b.claim({{"bulk"}, 600, 1h});
  REQUIRE(got.size() == 600);
  std::vector<jobq::Completion> cs;
  for (const auto& j : got) cs.push_back({j.id, j.lease_token, {{"id", j.id}}});
  p.b.complete_many(cs);  // ~600 x 90 bytes: far above one NOTIFY's 8000
  CHECK(eventually([&] { return log.count(jobq::JobNotice::Kind::completed) == 600; }));
  p.b.enqueue(job("long"));
  auto j = p.b.claim({{"long"}, 1, 1h}).at(0);
  const std::string huge(20'000, 'e');
  REQUIRE(p.b.set_progress(j.id, j.lease_token, 5, huge));
  CHECK(p.b.get(j.id)->progress_message == huge);  // stored whole
  REQUIRE(eventually([&] { return log.find(jobq::JobNotice::Kind::progress, j.id).has_value(); }));
  CHECK(log.find(jobq::JobNotice::Kind::progress, j.id)->message.size() == 1000);
}

TEST_CASE("the notice listener reconnects after its connection is killed", "[postgres][events]") {
  Pair p;
  Log log;
  auto sub = p.a.subscribe({}, log.fn());
  auto admin = pgtest::connect();
  const auto pid = pgtest::exec(admin.get(), "SELECT pid FROM " + p.q() + ".event_listeners LIMIT 1");
  REQUIRE_FALSE(pid.empty());
  pgtest::exec(admin.get(), "SELECT pg_terminate_backend(" + pid + ")");
  // Once it is back (a new row in event_listeners), notices flow again.
  REQUIRE(eventually([&] {
    return pgtest::exec(admin.get(), "SELECT count(*) FROM " + p.q() + ".event_listeners WHERE pid <> " + pid) == "1";
  }));
  const auto id = p.b.enqueue(job()).id;
  REQUIRE(p.b.cancel(id));
  CHECK(eventually([&] { return log.find(jobq::JobNotice::Kind::cancelled, id).has_value(); }));
  // Without subscribers (objects destroyed) no notices are built: the registry empties.
  sub.cancel();
}

TEST_CASE("statements build no notices while nobody listens", "[postgres][events]") {
  Pair p;
  auto admin = pgtest::connect();
  const auto listeners = [&] { return pgtest::exec(admin.get(), "SELECT count(*) FROM " + p.q() + ".event_listeners"); };
  CHECK(listeners() == "0");
  {
    jobq::PostgresBackend c{pgtest::url(), {.clock = p.clock.fn(), .schema = p.schema.name}};
    Log log;
    auto sub = c.subscribe({}, log.fn());
    CHECK(listeners() == "1");
  }
  CHECK(listeners() == "0");  // the destroyed backend unregistered its listener
}

TEST_CASE("a payload above the limit is refused before anything is written, even in a caller's transaction",
          "[postgres][bad-input]") {
  jobq::ManualClock clock;
  pgtest::TempSchema schema;
  jobq::PostgresBackend b{pgtest::url(), {.clock = clock.fn(), .schema = schema.name, .max_payload_bytes = 100}};
  const std::vector<jobq::NewJob> batch{job(), job("q", {{"blob", std::string(200, 'x')}})};
  CHECK_THROWS_AS(b.enqueue(batch[1]), jobq::InvalidArgument);
  CHECK_THROWS_AS(b.enqueue_many(batch), jobq::InvalidArgument);
  auto tx = pgtest::connect();
  pgtest::exec(tx.get(), "BEGIN");
  CHECK_THROWS_AS(b.enqueue_many(tx.get(), batch), jobq::InvalidArgument);
  pgtest::exec(tx.get(), "COMMIT");  // the caller's transaction is intact and holds no job
  CHECK(b.counts("q") == jobq::Counts{});
  CHECK_THROWS_AS(b.fire_schedule("none", clock.now(), clock.now(), batch[1]), jobq::InvalidArgument);
  CHECK(b.enqueue(job("q", {{"blob", std::string(80, 'y')}})).created);
}

TEST_CASE("a version 2 schema is upgraded to 3: jobs kept and claimable, unique keys still held",
          "[postgres][migration]") {
  pgtest::TempSchema schema;
  const std::string q = "\"" + schema.name + "\"";
  jobq::ManualClock clock;
  std::vector<jobq::JobId> plain;
  jobq::JobId held = 0;
  {
    jobq::PostgresBackend b{pgtest::url(), {.clock = clock.fn(), .schema = schema.name}};
    for (int i = 0; i < 3; ++i) plain.push_back(b.enqueue(job("old")).id);
    auto u = job("old");
    u.unique_key = "k";
    held = b.enqueue(u).id;
  }
  auto c = pgtest::connect();
  pgtest::downgrade_to_v2(c.get(), q);
  // Version 2 kept holds_key on finished jobs too: two finished holders of "k" beside the live one.
  pgtest::exec(c.get(), "INSERT INTO " + q + ".jobs (queue, name, payload, state, max_attempts, run_at,"
                        " created_at, finished_at, backoff, unique_key)"
                        " SELECT 'old', 'noop', '{}', s, 1, 0, 0, 0, (SELECT backoff FROM " + q + ".jobs LIMIT 1), 'k'"
                        " FROM unnest(ARRAY['completed', 'cancelled']) AS s");
  CHECK(pgtest::exec(c.get(), "SELECT max(version) FROM " + q + ".schema_migrations") == "2");

  jobq::PostgresBackend b{pgtest::url(), {.clock = clock.fn(), .schema = schema.name}};
  CHECK(b.schema_version() == 3);
  CHECK(pgtest::exec(c.get(), "SELECT count(*) FROM " + q + ".jobs WHERE unique_key = 'k' AND holds_key") == "1");
  auto u = job("old");
  u.unique_key = "k";
  CHECK(b.enqueue(u) == jobq::EnqueueResult{held, false});  // the live holder still holds
  auto got = b.claim({{"old"}, 10, 1h});
  CHECK(got.size() == 4);
  CHECK(b.get(plain[0])->group.empty());
  for (const auto& j : got) REQUIRE(b.complete(j.id, j.lease_token, nullptr));
  CHECK(b.enqueue(u).created);  // released once completed
  // The new features work on the upgraded store.
  b.set_queue_limits("old", {std::nullopt, 1});
  auto g = job("old");
  g.group = "t";
  b.enqueue(g);
  b.enqueue(g);
  CHECK(b.claim({{"old"}, 10, 1h}).size() == 2);  // the keyed job and one of group t
}
