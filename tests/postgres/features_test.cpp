// PostgreSQL-specific checks of the issue #7 features beyond the conformance suite: group limits
// over a long backlog and several queues, seen from two backend objects on one schema (each with
// its own pool and listener: to the server, two processes), notices that exceed one NOTIFY, the
// listener's reconnect and registry, the payload limit inside a caller's transaction, and the
// v2 -> v3 upgrade. The other two-object cases are in conformance/two_objects.hpp.

#include <chrono>
#include <string>
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

// The rest of the payload limit is in the conformance suite (two_objects.hpp); a caller's
// transaction is PostgreSQL's own.
TEST_CASE("a payload above the limit is refused in a caller's transaction, which stays intact",
          "[postgres][bad-input]") {
  jobq::ManualClock clock;
  pgtest::TempSchema schema;
  jobq::PostgresBackend b{pgtest::url(), {.clock = clock.fn(), .schema = schema.name, .max_payload_bytes = 100}};
  const std::vector<jobq::NewJob> batch{job(), job("q", {{"blob", std::string(200, 'x')}})};
  auto tx = pgtest::connect();
  pgtest::exec(tx.get(), "BEGIN");
  CHECK_THROWS_AS(b.enqueue_many(tx.get(), batch), jobq::InvalidArgument);
  pgtest::exec(tx.get(), "COMMIT");  // the caller's transaction is intact and holds no job
  CHECK(b.counts("q") == jobq::Counts{});
}

TEST_CASE("a version 2 schema is upgraded: jobs kept and claimable, unique keys still held",
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
  CHECK(b.schema_version() == jobq::PostgresBackend::latest_schema_version);
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

TEST_CASE("a version 5 schema is upgraded to queue concurrency: limits kept, concurrency 0 until set",
          "[postgres][migration][limits]") {
  pgtest::TempSchema schema;
  const std::string q = "\"" + schema.name + "\"";
  jobq::ManualClock clock;
  {
    jobq::PostgresBackend b{pgtest::url(), {.clock = clock.fn(), .schema = schema.name}};
    b.set_queue_limits("old", {std::nullopt, 2});
    for (int i = 0; i < 5; ++i) b.enqueue(job("old"));
  }
  auto c = pgtest::connect();
  pgtest::downgrade_to_v5(c.get(), q);
  CHECK(pgtest::exec(c.get(), "SELECT max(version) FROM " + q + ".schema_migrations") == "5");
  jobq::PostgresBackend b{pgtest::url(), {.clock = clock.fn(), .schema = schema.name}};
  CHECK(b.schema_version() == jobq::PostgresBackend::latest_schema_version);
  CHECK(b.queue_limits("old") == jobq::QueueLimits{std::nullopt, 2, 0});
  b.set_queue_limits("old", {std::nullopt, 2, 3});
  CHECK(b.claim({{"old"}, 10, 1h}).size() == 3);
  CHECK(b.counts("old").queued == 2);
}

TEST_CASE("a version 4 schema is upgraded to the worker registry: jobs kept, workers stored",
          "[postgres][migration][workers]") {
  pgtest::TempSchema schema;
  const std::string q = "\"" + schema.name + "\"";
  jobq::ManualClock clock;
  {
    jobq::PostgresBackend b{pgtest::url(), {.clock = clock.fn(), .schema = schema.name}};
    b.enqueue(job("old"));
  }
  auto c = pgtest::connect();
  pgtest::downgrade_to_v4(c.get(), q);
  CHECK(pgtest::exec(c.get(), "SELECT max(version) FROM " + q + ".schema_migrations") == "4");
  CHECK(pgtest::exec(c.get(), "SELECT count(*) FROM pg_tables WHERE schemaname = '" + schema.name +
                                  "' AND tablename = 'workers'") == "0");

  jobq::PostgresBackend b{pgtest::url(), {.clock = clock.fn(), .schema = schema.name}};
  CHECK(b.schema_version() == jobq::PostgresBackend::latest_schema_version);
  CHECK(b.counts("old").queued == 1);
  jobq::WorkerInfo w;
  w.id = "host:1:1-ab";
  w.heartbeat_at = clock.now();
  w.expires_at = clock.now() + 30s;
  b.register_worker(w);
  CHECK(b.workers() == std::vector<jobq::WorkerInfo>{w});
  CHECK(pgtest::exec(c.get(), "SELECT expires_at FROM " + q + ".workers") == std::to_string(jobq::to_epoch_ms(w.expires_at)));
}
