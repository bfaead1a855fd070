// SQLite-specific tests of issue #7: limits across several backend objects on one file (each with
// its own writer connection, as separate processes have), schedules fired by racing schedulers,
// notices between objects, the upgrade from schema 3, and the payload limit.

#include <jobq/sqlite.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "sqlite/helpers.hpp"

using namespace std::chrono_literals;
using jobq::JobNotice;
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

/// The largest number of active jobs of one group in the queue, read from the file itself.
int max_active_per_group(const RawDb& raw, const std::string& queue) {
  const auto v = raw.scalar(
      "SELECT coalesce(max(c), 0) FROM (SELECT count(*) AS c FROM jobq_jobs WHERE state = 'active' AND group_key IS NOT NULL AND queue = '" +
      queue + "' GROUP BY group_key)");
  return v.empty() ? 0 : std::stoi(v);
}

struct NoticeLog {
  std::mutex m;
  std::vector<JobNotice> seen;
  jobq::NoticeFn fn() {
    return [this](const JobNotice& n) {
      std::lock_guard lock(m);
      seen.push_back(n);
    };
  }
  std::vector<JobNotice> all() {
    std::lock_guard lock(m);
    return seen;
  }
};

}  // namespace

TEST_CASE("group concurrency holds across backend objects and threads racing", "[sqlite][limits][concurrency]") {
  TempDir dir;
  jobq::ManualClock clock;
  jobq::SqliteBackend a{dir.file(), {.clock = clock.fn()}};
  jobq::SqliteBackend b{dir.file(), {.clock = clock.fn()}};
  constexpr int k = 2;
  a.set_queue_limits("g", {std::nullopt, k});
  std::vector<jobq::NewJob> jobs;
  for (int i = 0; i < 300; ++i) jobs.push_back(job_in("g", "tenant-" + std::to_string(i % 5)));
  for (int i = 0; i < 60; ++i) jobs.push_back(job_in("g"));  // no group: never limited
  a.enqueue_many(jobs);

  std::mutex m;
  std::map<std::string, int> active;  // by the claimers' own count: never above k
  int worst = 0;
  std::atomic<int> done{0};
  std::atomic<bool> stop{false};
  int worst_seen_in_file = 0;
  std::thread monitor([&] {
    RawDb raw(dir.file());
    while (!stop.load()) worst_seen_in_file = std::max(worst_seen_in_file, max_active_per_group(raw, "g"));
  });
  std::vector<std::thread> claimers;
  for (int t = 0; t < 6; ++t) {
    claimers.emplace_back([&, t] {
      auto& store = t % 2 == 0 ? a : b;
      int idle = 0;
      while (done.load() < 360 && idle < 2000) {
        auto got = store.claim({{"g"}, 3, 30s});
        if (got.empty()) {
          ++idle;
          std::this_thread::yield();
          continue;
        }
        idle = 0;
        {
          std::lock_guard lock(m);
          for (const auto& j : got) {
            if (j.group.empty()) continue;
            worst = std::max(worst, ++active[j.group]);
          }
        }
        // Long enough that another claimer's claim lands while these are held, even under ASan.
        std::this_thread::sleep_for(2ms);
        std::vector<jobq::Completion> cs;
        {
          std::lock_guard lock(m);
          for (const auto& j : got) {
            if (!j.group.empty()) --active[j.group];  // before the commit: our count stays <= the file's
            cs.push_back({j.id, j.lease_token, nullptr});
          }
        }
        const auto ok = store.complete_many(cs);
        done += static_cast<int>(std::count(ok.begin(), ok.end(), true));
      }
    });
  }
  for (auto& c : claimers) c.join();
  stop = true;
  monitor.join();
  CHECK(done.load() == 360);
  CHECK(worst <= k);
  CHECK(worst == k);  // the limit was reached, not just respected by running one at a time
  CHECK(worst_seen_in_file <= k);
  CHECK(a.counts("g").completed == 360);
}

TEST_CASE("a rate limit holds across backend objects and threads racing", "[sqlite][limits][concurrency]") {
  TempDir dir;
  jobq::ManualClock clock;
  jobq::SqliteBackend a{dir.file(), {.clock = clock.fn()}};
  jobq::SqliteBackend b{dir.file(), {.clock = clock.fn()}};
  const jobq::RateLimit rate{7, 1000ms};
  b.set_queue_limits("r", {rate, 0});
  std::vector<jobq::NewJob> jobs;
  for (int i = 0; i < 100; ++i) jobs.push_back(job_in("r"));
  a.enqueue_many(jobs);

  // Steps of 250 ms; at each, 6 claimers race until the limit stops them all.
  std::vector<std::pair<std::int64_t, int>> starts;  // (clock ms, jobs claimed at that time)
  int total = 0;
  for (int step = 0; total < 100 && step < 200; ++step) {
    std::atomic<int> n{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < 6; ++t) {
      ts.emplace_back([&, t] {
        auto& store = t % 2 == 0 ? a : b;
        for (int i = 0; i < 5; ++i) n += static_cast<int>(store.claim({{"r"}, 2, 30s}).size());
      });
    }
    for (auto& t : ts) t.join();
    starts.emplace_back(jobq::to_epoch_ms(clock.now()), n.load());
    total += n.load();
    clock.advance(250ms);
  }
  CHECK(total == 100);
  for (const auto& [at, n] : starts) {
    int in_window = 0;
    for (const auto& [at2, n2] : starts) {
      if (at2 > at - rate.window.count() && at2 <= at) in_window += n2;
    }
    INFO("window ending at " << at);
    CHECK(in_window <= rate.max);
  }
  // The window slides: 7 starts at t0, none until t0 + 1 s frees them.
  CHECK(starts[0].second == 7);
  CHECK(starts[1].second == 0);
  CHECK(starts[4].second == 7);
  // Held-back jobs were not touched: still attempt 0.
  RawDb raw(dir.file());
  CHECK(raw.scalar("SELECT max(attempts) FROM jobq_jobs") == "1");
  // The ledger is pruned by the claims themselves.
  CHECK(std::stoi(raw.scalar("SELECT count(*) FROM jobq_rate_ledger")) <= 4);
  // Removing the limit forgets the ledger (no claim would prune it any more).
  a.set_queue_limits("r", {});
  CHECK(raw.scalar("SELECT count(*) FROM jobq_rate_ledger") == "0");
}

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

TEST_CASE("schedulers racing on two backend objects fire each tick exactly once", "[sqlite][schedule][concurrency]") {
  TempDir dir;
  jobq::ManualClock clock;
  jobq::SqliteBackend a{dir.file(), {.clock = clock.fn()}};
  jobq::SqliteBackend b{dir.file(), {.clock = clock.fn()}};
  const auto t0 = clock.now();
  a.put_schedule({"tick", {{"cron", "* * * * * *"}}, t0});
  constexpr int ticks = 40;
  std::atomic<int> wins{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 6; ++t) {
    ts.emplace_back([&, t] {
      auto& store = t % 2 == 0 ? a : b;
      for (int k = 0; k < ticks; ++k) {
        auto nj = job_in("sched", {}, {{"tick", k}});
        if (store.fire_schedule("tick", t0 + std::chrono::seconds(k), t0 + std::chrono::seconds(k + 1), nj)) ++wins;
      }
    });
  }
  for (auto& t : ts) t.join();
  CHECK(wins.load() == ticks);
  CHECK(a.counts("sched").queued == ticks);
  std::set<int> seen;
  for (const auto& j : b.list("sched", JobState::queued, {0, 1000})) seen.insert(j.payload["tick"].get<int>());
  CHECK(seen.size() == static_cast<std::size_t>(ticks));
  REQUIRE(b.schedules().size() == 1);
  CHECK(b.schedules()[0].next_run == t0 + std::chrono::seconds(ticks));
  CHECK(b.schedules()[0].spec == nlohmann::json{{"cron", "* * * * * *"}});
}

TEST_CASE("a subscriber on one backend object hears changes made through another on the same file",
          "[sqlite][events]") {
  TempDir dir;
  TempDir other_dir;
  jobq::ManualClock clock;
  jobq::SqliteBackend api{dir.file(), {.clock = clock.fn()}};
  jobq::SqliteBackend worker{dir.file(), {.clock = clock.fn()}};
  jobq::SqliteBackend elsewhere{other_dir.file(), {.clock = clock.fn()}};
  NoticeLog log;
  NoticeLog other_log;
  auto sub = api.subscribe({}, log.fn());
  auto other_sub = elsewhere.subscribe({}, other_log.fn());

  auto retrying = job_in("q");
  retrying.max_attempts = 2;
  const auto done_id = worker.enqueue(job_in("q")).id;
  const auto fail_id = worker.enqueue(retrying).id;
  const auto cancel_id = worker.enqueue(job_in("q")).id;
  auto got = worker.claim({{"q"}, 2, 30s});
  REQUIRE(got.size() == 2);
  CHECK(worker.set_progress(done_id, got[0].lease_token, 40, "halfway"));
  CHECK(worker.complete(done_id, got[0].lease_token, {{"answer", 42}}));
  CHECK(worker.fail({fail_id, got[1].lease_token, "boom", clock.now()}) == jobq::FailOutcome::retried);
  CHECK(worker.cancel(cancel_id));
  REQUIRE(worker.claim({{"q"}, 1, 1s}).size() == 1);  // fail_id's second (last) attempt
  clock.advance(2s);
  CHECK(worker.recover_expired() == jobq::Recovered{0, 1});

  const auto seen = log.all();
  REQUIRE(seen.size() == 5);
  CHECK(seen[0] == JobNotice{JobNotice::Kind::progress, done_id, "q", 1, 40, "halfway"});
  CHECK(seen[1] == JobNotice{JobNotice::Kind::completed, done_id, "q", 1, 0, ""});
  CHECK(seen[2] == JobNotice{JobNotice::Kind::failed, fail_id, "q", 1, 0, "boom"});
  CHECK(seen[3] == JobNotice{JobNotice::Kind::cancelled, cancel_id, "q", 0, 0, ""});
  CHECK(seen[4].kind == JobNotice::Kind::dead);
  CHECK(seen[4].id == fail_id);
  CHECK(seen[4].attempt == 2);
  CHECK_THAT(seen[4].message, Catch::Contains("lease expired"));
  CHECK(other_log.all().empty());  // another file's subscribers hear nothing

  // Progress and the result are visible through the other object (another connection).
  const auto rec = api.get(done_id);
  REQUIRE(rec);
  CHECK(rec->progress == 40);
  CHECK(rec->progress_message == "halfway");
  CHECK(rec->result == nlohmann::json{{"answer", 42}});

  // Ended subscriptions hear nothing more, even when they outlive the backend objects' peers.
  sub.cancel();
  const auto id = worker.enqueue(job_in("q")).id;
  CHECK(worker.cancel(id));
  CHECK(log.all().size() == 5);
}

TEST_CASE("a subscription may outlive its backend object", "[sqlite][events]") {
  TempDir dir;
  jobq::Subscription sub;
  NoticeLog log;
  {
    jobq::SqliteBackend store{dir.file()};
    sub = store.subscribe({}, log.fn());
  }
  sub.cancel();  // the hub is kept alive by the subscription: no dangling pointer (ASan)
  CHECK(log.all().empty());
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

TEST_CASE("max_payload_bytes refuses large payloads everywhere before anything is written",
          "[sqlite][bad-input][limits]") {
  TempDir dir;
  jobq::ManualClock clock;
  jobq::SqliteBackend store{dir.file(), {.clock = clock.fn(), .max_payload_bytes = 100}};
  const nlohmann::json big = {{"blob", std::string(100, 'x')}};
  CHECK_THROWS_WITH(store.enqueue(job_in("q", {}, big)), Catch::Contains("max_payload_bytes"));
  std::vector<jobq::NewJob> batch{job_in("q"), job_in("q", {}, big)};
  CHECK_THROWS_AS(store.enqueue_many(batch), jobq::InvalidArgument);
  {
    RawDb raw(dir.file());
    CHECK_THROWS_AS(store.enqueue(raw.db, job_in("q", {}, big)), jobq::InvalidArgument);
  }
  const auto t0 = clock.now();
  store.put_schedule({"s", {}, t0});
  CHECK_THROWS_AS(store.fire_schedule("s", t0, t0 + 1min, job_in("q", {}, big)), jobq::InvalidArgument);
  CHECK(store.schedules()[0].next_run == t0);  // the tick was not consumed
  CHECK(store.counts("q") == jobq::Counts{});
  CHECK(store.enqueue(job_in("q", {}, {{"blob", std::string(80, 'y')}})).created);
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
