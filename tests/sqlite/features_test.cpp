// SQLite-specific tests of issue #7: limits over a large backlog and several queues, wake-ups,
// subscriptions outliving their backend, upgrades from schemas 3 and 5, the payload limit on the
// caller's connection, page sizes. Two objects on one file are in the conformance suite
// (conformance/two_objects.hpp).

#include <jobq/sqlite.hpp>

#include <chrono>
#include <vector>

#include <catch2/catch.hpp>

#include "sqlite/helpers.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using jobq::JobState;
using sqlite_test::RawDb;
using sqlite_test::TempDir;

namespace {

jobq::NewJob job_in(std::string queue, std::string group = {}, nlohmann::json payload = {{"n", 1}}) {
  jobq::NewJob j;
  j.queue = std::move(queue);
  j.name = "noop";
  j.payload = std::move(payload);
  j.group = std::move(group);
  return j;
}

}  // namespace

TEST_CASE("a saturated group's backlog does not block other groups, and costs little", "[sqlite][limits]") {
  TempDir dir;
  jobq::ManualClock clock;
  jobq::SqliteBackend store{dir.file(), {.clock = clock.fn()}};
  store.set_queue_limits("q", {std::nullopt, 1});
  std::vector<jobq::NewJob> jobs;
  for (int i = 0; i < 20'000; ++i) jobs.push_back(job_in("q", "big"));
  store.enqueue_many(jobs);
  auto late = job_in("q", "small");
  late.priority = -1;  // last in claim order
  const auto small = store.enqueue(late).id;
  const auto first = store.claim({{"q"}, 5, 30s});
  REQUIRE(first.size() == 2);  // one of "big", then its backlog is skipped to "small"
  CHECK(first[0].group == "big");
  CHECK(first[1].id == small);
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(store.claim({{"q"}, 5, 30s}).empty());
  // The 20,000 rows of the saturated group are stepped over inside one statement.
  CHECK(std::chrono::steady_clock::now() - t0 < 2s);
}

TEST_CASE("a claim over limited and unlimited queues keeps the claim order", "[sqlite][limits]") {
  TempDir dir;
  jobq::ManualClock clock;
  jobq::SqliteBackend store{dir.file(), {.clock = clock.fn()}};
  store.set_queue_limits("lim", {jobq::RateLimit{2, 1min}, 0});
  std::vector<jobq::JobId> ids;
  for (int i = 0; i < 4; ++i) {
    ids.push_back(store.enqueue(job_in("lim")).id);
    ids.push_back(store.enqueue(job_in("free")).id);
  }
  auto hi = job_in("free");
  hi.priority = 5;
  const auto top = store.enqueue(hi).id;
  const auto got = store.claim({{"lim", "free", "paused"}, 4, 30s});
  REQUIRE(got.size() == 4);
  CHECK(got[0].id == top);
  CHECK(got[1].id == ids[0]);  // lim, then free, then lim: enqueue order
  CHECK(got[2].id == ids[1]);
  CHECK(got[3].id == ids[2]);
  const auto more = store.claim({{"lim", "free"}, 10, 30s});
  CHECK(more.size() == 3);  // the rate of "lim" is spent: only "free" jobs
  for (const auto& j : more) CHECK(j.queue == "free");
}

TEST_CASE("wait_for_work does not spin on a queue whose ready jobs are held back by limits",
          "[sqlite][limits][wakeup]") {
  TempDir dir;
  jobq::ManualClock clock;
  jobq::SqliteBackend store{dir.file(), {.clock = clock.fn(), .poll_interval = 20ms}};
  const std::vector<std::string> queues{"r"};
  store.set_queue_limits("r", {jobq::RateLimit{1, 10s}, 0});
  store.enqueue(job_in("r"));
  store.enqueue(job_in("r"));
  REQUIRE(store.claim({{"r"}, 5, 30s}).size() == 1);
  auto t0 = std::chrono::steady_clock::now();
  store.wait_for_work(queues, 150ms, {});
  CHECK(std::chrono::steady_clock::now() - t0 >= 120ms);  // waited: the window is not over
  clock.advance(10s);
  t0 = std::chrono::steady_clock::now();
  store.wait_for_work(queues, 2s, {});
  CHECK(std::chrono::steady_clock::now() - t0 < 1s);  // the window passed: work is ready
  CHECK(store.claim({{"r"}, 5, 30s}).size() == 1);

  const std::vector<std::string> gq{"g"};
  store.set_queue_limits("g", {std::nullopt, 1});
  store.enqueue(job_in("g", "t"));
  store.enqueue(job_in("g", "t"));
  REQUIRE(store.claim({{"g"}, 5, 30s}).size() == 1);
  t0 = std::chrono::steady_clock::now();
  store.wait_for_work(gq, 150ms, {});
  CHECK(std::chrono::steady_clock::now() - t0 >= 120ms);
  store.enqueue(job_in("g", "other"));  // wakes it, and is claimable
  t0 = std::chrono::steady_clock::now();
  store.wait_for_work(gq, 2s, {});
  CHECK(std::chrono::steady_clock::now() - t0 < 1s);
  CHECK(store.claim({{"g"}, 5, 30s}).size() == 1);
}

TEST_CASE("a subscription may outlive its backend object", "[sqlite][events]") {
  TempDir dir;
  jobq::Subscription sub;
  jobq_test::NoticeLog log;
  {
    jobq::SqliteBackend store{dir.file()};
    sub = store.subscribe({}, log.fn());
  }
  sub.cancel();  // the hub is kept alive by the subscription: no dangling pointer (ASan)
  CHECK(log.size() == 0);
}

TEST_CASE("a schema 3 file is upgraded: old jobs stay claimable, limits and schedules work",
          "[sqlite][migrations]") {
  TempDir dir;
  const auto migrations = jobq::detail::sqlite::migrations();
  REQUIRE(migrations.size() >= 4);
  {
    RawDb raw(dir.file());
    raw.exec("PRAGMA journal_mode = WAL");
    raw.exec(
        "CREATE TABLE jobq_schema_version (version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
        "applied_at INTEGER NOT NULL)");
    for (int v = 1; v <= 3; ++v) {
      raw.exec(migrations[static_cast<std::size_t>(v - 1)].sql);
      raw.exec("INSERT INTO jobq_schema_version VALUES (" + std::to_string(v) + ", 'old', 0)");
    }
    raw.exec("INSERT INTO jobq_queues (name, paused) VALUES ('paused-q', 1)");
    for (int i = 0; i < 3; ++i) {
      raw.exec(
          "INSERT INTO jobq_jobs (queue, name, payload, state, priority, max_attempts, run_at, created_at, "
          "backoff, unique_key) VALUES ('old', 'noop', '{\"v\":" + std::to_string(i) +
          "}', 'queued', 0, 3, 0, 0, '{\"kind\":\"fixed\",\"delay_ms\":0,\"jitter\":0.0}', " +
          (i == 0 ? "'k'" : "NULL") + ")");
    }
  }
  jobq::ManualClock clock;
  jobq::SqliteBackend store{dir.file(), {.clock = clock.fn()}};
  CHECK(store.schema_version() == jobq::detail::sqlite::latest_schema_version());
  {
    RawDb raw(dir.file());  // the claim index now covers group and state
    CHECK_THAT(raw.scalar("SELECT sql FROM sqlite_schema WHERE name = 'jobq_jobs_ready'"),
               Catch::Contains("group_key, state"));
  }
  CHECK(store.is_paused("paused-q"));
  CHECK(store.queue_limits("paused-q") == jobq::QueueLimits{});
  CHECK(store.counts("old").queued == 3);
  // The old unique key is still held by its queued job.
  auto dup = job_in("old");
  dup.unique_key = "k";
  CHECK_FALSE(store.enqueue(dup).created);
  store.set_queue_limits("old", {jobq::RateLimit{2, 1min}, 1});
  auto got = store.claim({{"old"}, 10, 30s});
  REQUIRE(got.size() == 2);  // rate 2; old jobs have no group, so the group limit does not apply
  CHECK(got[0].payload == nlohmann::json{{"v", 0}});
  CHECK(got[0].group.empty());
  store.put_schedule({"s", {{"every", "1m"}}, clock.now()});
  CHECK(store.schedules().size() == 1);
}

// The rest of the payload limit is in the conformance suite (two_objects.hpp); the caller's own
// connection is SQLite's.
TEST_CASE("max_payload_bytes refuses a large payload on the caller's connection too", "[sqlite][bad-input][limits]") {
  TempDir dir;
  jobq::ManualClock clock;
  jobq::SqliteBackend store{dir.file(), {.clock = clock.fn(), .max_payload_bytes = 100}};
  const nlohmann::json big = {{"blob", std::string(100, 'x')}};
  {
    RawDb raw(dir.file());
    CHECK_THROWS_AS(store.enqueue(raw.db, job_in("q", {}, big)), jobq::InvalidArgument);
  }
  CHECK(store.counts("q") == jobq::Counts{});
}

TEST_CASE("debounce while the holder runs makes a second job with the same key", "[sqlite][unique]") {
  TempDir dir;
  jobq::ManualClock clock;
  jobq::SqliteBackend store{dir.file(), {.clock = clock.fn()}};
  auto nj = job_in("q", {}, {{"v", 1}});
  nj.unique_key = "k";
  nj.debounce = 5s;
  const auto first = store.enqueue(nj);
  CHECK(first.created);
  nj.payload = {{"v", 2}};
  clock.advance(3s);
  CHECK(store.enqueue(nj) == jobq::EnqueueResult{first.id, false});
  CHECK(store.get(first.id)->payload == nlohmann::json{{"v", 2}});
  CHECK(store.get(first.id)->run_at == clock.now() + 5s);
  clock.advance(5s);
  const auto got = store.claim({{"q"}, 5, 30s});
  REQUIRE(got.size() == 1);
  nj.payload = {{"v", 3}};
  const auto second = store.enqueue(nj);  // the holder is active: a new queued job
  CHECK(second.created);
  CHECK(second.id != first.id);
  nj.payload = {{"v", 4}};
  CHECK(store.enqueue(nj) == jobq::EnqueueResult{second.id, false});
  CHECK(store.get(second.id)->payload == nlohmann::json{{"v", 4}});
  CHECK(store.complete(first.id, got[0].lease_token, nullptr));
  CHECK(store.counts("q").queued == 1);
}

TEST_CASE("a schema 5 file is upgraded to 6: the due index goes, the state check means the same",
          "[sqlite][migrations]") {
  TempDir dir;
  const auto migrations = jobq::detail::sqlite::migrations();
  REQUIRE(migrations.size() >= 6);
  {
    RawDb raw(dir.file());
    raw.exec("PRAGMA journal_mode = WAL");
    raw.exec(
        "CREATE TABLE jobq_schema_version (version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
        "applied_at INTEGER NOT NULL)");
    for (int v = 1; v <= 5; ++v) {
      raw.exec(migrations[static_cast<std::size_t>(v - 1)].sql);
      raw.exec("INSERT INTO jobq_schema_version VALUES (" + std::to_string(v) + ", 'old', 0)");
    }
    for (int i = 0; i < 4; ++i) {
      raw.exec(
          "INSERT INTO jobq_jobs (queue, name, payload, state, priority, max_attempts, run_at, created_at, "
          "backoff) VALUES ('old', 'noop', '{\"v\":" + std::to_string(i) + "}', 'queued', " + std::to_string(i % 2) +
          ", 3, 0, 0, '{\"kind\":\"fixed\",\"delay_ms\":0,\"jitter\":0.0}')");
    }
    CHECK_THROWS(raw.exec("INSERT INTO jobq_jobs (queue, name, payload, state, max_attempts, run_at, created_at, "
                          "backoff) VALUES ('old', 'noop', '{}', 'bogus', 3, 0, 0, '{}')"));
  }
  jobq::ManualClock clock;
  jobq::SqliteBackend store{dir.file(), {.clock = clock.fn()}};
  CHECK(store.schema_version() == jobq::detail::sqlite::latest_schema_version());
  {
    RawDb raw(dir.file());
    CHECK(raw.scalar("SELECT count(*) FROM sqlite_schema WHERE name = 'jobq_jobs_due'") == "0");
    CHECK_THAT(raw.scalar("SELECT sql FROM sqlite_schema WHERE name = 'jobq_jobs'"),
               Catch::Contains("state = 'queued' OR state = 'active'"));
    CHECK(raw.scalar("PRAGMA integrity_check") == "ok");
    // Still the same constraint, on inserts and on updates.
    CHECK_THROWS(raw.exec("UPDATE jobq_jobs SET state = 'bogus' WHERE id = 1"));
    CHECK_THROWS(raw.exec("INSERT INTO jobq_jobs (queue, name, payload, state, max_attempts, run_at, created_at, "
                          "backoff) VALUES ('old', 'noop', '{}', 'bogus', 3, 0, 0, '{}')"));
    CHECK(raw.scalar("SELECT count(*) FROM jobq_jobs") == "4");
  }
  CHECK(store.counts("old").queued == 4);
  // Claim order is kept: priority 1 first (ids 2 and 4), then 0.
  auto got = store.claim({{"old"}, 1, 30s});
  REQUIRE(got.size() == 1);
  CHECK(got[0].id == 2);
  got = store.claim({{"old"}, 3, 30s});
  REQUIRE(got.size() == 3);
  CHECK(got[0].id == 4);
  CHECK(got[1].id == 1);
  CHECK(store.counts("old").active == 4);
  // A second object on the upgraded file (schema re-read, nothing to migrate) works too.
  jobq::SqliteBackend again{dir.file(), {.clock = clock.fn()}};
  CHECK(again.enqueue(job_in("old")).created);
  CHECK(again.counts("old").queued == 1);
}

TEST_CASE("the poll finds the earliest due job across priorities", "[sqlite][wakeup]") {
  TempDir dir;
  jobq::ManualClock clock;
  jobq::SqliteBackend store{dir.file(), {.clock = clock.fn(), .poll_interval = 20ms}};
  const std::vector<std::string> queues{"p"};
  const auto at = [&](int priority, std::chrono::milliseconds delay) {
    auto j = job_in("p");
    j.priority = priority;
    j.run_at = clock.now() + delay;
    store.enqueue(j);
  };
  at(5, 10s);
  at(0, 2s);
  at(-3, 20s);
  at(0, 30s);
  auto t0 = std::chrono::steady_clock::now();
  store.wait_for_work(queues, 150ms, {});
  CHECK(std::chrono::steady_clock::now() - t0 >= 120ms);  // nothing due yet
  clock.advance(3s);  // the priority 0 job is due; the higher priority one is not
  t0 = std::chrono::steady_clock::now();
  store.wait_for_work(queues, 2s, {});
  CHECK(std::chrono::steady_clock::now() - t0 < 1s);
  auto got = store.claim({{"p"}, 5, 30s});
  REQUIRE(got.size() == 1);
  CHECK(got[0].priority == 0);
}

TEST_CASE("new files get the page_size option; existing files keep theirs", "[sqlite][options]") {
  TempDir dir;
  {
    jobq::SqliteBackend store{dir.file()};
    RawDb raw(dir.file());
    CHECK(raw.scalar("PRAGMA page_size") == "1024");
  }
  {
    jobq::SqliteBackend store{dir.file("big.db"), {.page_size = 8192}};
    CHECK(store.enqueue(job_in("q")).created);
    RawDb raw(dir.file("big.db"));
    CHECK(raw.scalar("PRAGMA page_size") == "8192");
  }
  {
    RawDb app(dir.file("app.db"));  // the application's own file, made first
    app.exec("PRAGMA page_size = 4096; CREATE TABLE users (id INTEGER PRIMARY KEY)");
  }
  {
    jobq::SqliteBackend store{dir.file("app.db")};
    CHECK(store.enqueue(job_in("q")).created);
    CHECK(store.claim({{"q"}, 1, 30s}).size() == 1);
    RawDb raw(dir.file("app.db"));
    CHECK(raw.scalar("PRAGMA page_size") == "4096");
  }
  for (std::size_t bad : {std::size_t{0}, std::size_t{256}, std::size_t{1000}, std::size_t{131072}}) {
    CHECK_THROWS_AS((jobq::SqliteBackend{dir.file("bad.db"), {.page_size = bad}}), jobq::InvalidArgument);
  }
}

TEST_CASE("a schema 7 file is upgraded to 8: old jobs kept, the worker registry works", "[sqlite][migrations][workers]") {
  TempDir dir;
  REQUIRE(jobq::detail::sqlite::migrations().size() >= 8);
  {
    RawDb raw(dir.file());
    sqlite_test::write_old_schema(raw, 7);
    raw.exec(
        "INSERT INTO jobq_jobs (queue, name, payload, state, priority, max_attempts, run_at, created_at, "
        "backoff) VALUES ('old', 'noop', '{\"n\":1}', 'queued', 0, 3, 0, 0, '{\"kind\":\"fixed\",\"delay_ms\":0,\"jitter\":0.0}')");
    CHECK(raw.scalar("SELECT count(*) FROM sqlite_schema WHERE name = 'jobq_workers'") == "0");
  }
  jobq::ManualClock clock;
  jobq::SqliteBackend store{dir.file(), {.clock = clock.fn()}};
  CHECK(store.schema_version() == jobq::detail::sqlite::latest_schema_version());
  CHECK(store.counts("old").queued == 1);
  jobq::WorkerInfo w;
  w.id = "host:1:1-ab";
  w.heartbeat_at = clock.now();
  w.expires_at = clock.now() + 30s;
  store.register_worker(w);
  CHECK(store.workers() == std::vector<jobq::WorkerInfo>{w});
  RawDb raw(dir.file());
  CHECK(raw.scalar("PRAGMA integrity_check") == "ok");
  CHECK(raw.scalar("SELECT expires_at FROM jobq_workers") == std::to_string(jobq::to_epoch_ms(w.expires_at)));
  CHECK(raw.scalar("SELECT count(*) FROM sqlite_schema WHERE name = 'jobq_workers_expiry'") == "1");
}
