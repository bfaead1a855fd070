// SQLite-specific behaviour: the file, migrations, transactional enqueue, wake-ups, bad input.

#include <jobq/jobq.hpp>
#include <jobq/sqlite.hpp>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <thread>

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "sqlite/helpers.hpp"

using namespace std::chrono_literals;
using jobq::JobState;
using sqlite_test::RawDb;
using sqlite_test::TempDir;

namespace {

jobq::NewJob make_job(std::string queue = "q", nlohmann::json payload = {{"n", 1}}) {
  jobq::NewJob j;
  j.queue = std::move(queue);
  j.name = "noop";
  j.payload = std::move(payload);
  return j;
}

jobq::ClaimRequest claim_from(std::string queue, std::size_t limit = 10) {
  return jobq::ClaimRequest{{std::move(queue)}, limit, 30s};
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

template <class F>
jobq::Error error_of(F&& f) {
  try {
    f();
  } catch (const jobq::Error& e) {
    return e;
  }
  FAIL("expected a jobq::Error");
  throw std::logic_error("unreachable");
}

}  // namespace

TEST_CASE("the file is created in WAL mode with jobq_ tables beside the application's own", "[sqlite]") {
  TempDir dir;
  {
    RawDb app(dir.file());
    app.exec("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)");
    app.exec("INSERT INTO users (email) VALUES ('a@b.c')");
  }
  jobq::ManualClock clock;
  jobq::SqliteBackend store{dir.file(), {.clock = clock.fn()}};
  CHECK(store.schema_version() == jobq::detail::sqlite::latest_schema_version());
  store.enqueue(make_job());

  RawDb raw(dir.file());
  CHECK(raw.scalar("PRAGMA journal_mode") == "wal");
  CHECK(raw.scalar("SELECT count(*) FROM users") == "1");
  // Everything jobq made is prefixed (sqlite_sequence is SQLite's own AUTOINCREMENT table).
  CHECK(raw.scalar("SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'jobq\\_%' ESCAPE '\\' "
                   "AND name NOT IN ('users', 'sqlite_sequence')") == "0");
  CHECK(raw.scalar("SELECT count(*) FROM sqlite_schema WHERE name LIKE 'jobq\\_%' ESCAPE '\\'") != "0");
  CHECK(raw.scalar("SELECT count(*) FROM jobq_jobs") == "1");
}

TEST_CASE("a WAL that a long reader made grow shrinks back once the reader is gone", "[sqlite]") {
  TempDir dir;
  jobq::SqliteBackend store{dir.file()};
  const auto wal = [&] { return std::filesystem::file_size(dir.file() + "-wal"); };
  constexpr std::uintmax_t limit = 16'777'216;  // the backend's journal_size_limit
  RawDb reader(dir.file());
  reader.exec("BEGIN");
  CHECK(reader.scalar("SELECT count(*) FROM jobq_jobs") == "0");  // holds its snapshot
  std::vector<jobq::NewJob> batch(1'000, make_job("q", {{"text", std::string(1'000, 'x')}}));
  for (int i = 0; i < 24; ++i) store.enqueue_many(batch);
  REQUIRE(wal() > 20'000'000);  // no checkpoint could pass the reader
  reader.exec("COMMIT");
  for (int i = 0; i < 10 && wal() > limit; ++i) store.enqueue(make_job());
  CHECK(wal() <= limit);
  CHECK(RawDb(dir.file()).scalar("SELECT count(*) FROM jobq_jobs WHERE length(payload) > 1000") == "24000");
}

TEST_CASE("re-opening keeps jobs, and a second backend on the same file sees them", "[sqlite]") {
  TempDir dir;
  jobq::ManualClock clock;
  jobq::JobId id = 0;
  {
    jobq::SqliteBackend store{dir.file(), {.clock = clock.fn()}};
    id = store.enqueue(make_job("q", {{"kept", true}})).id;
  }
  jobq::SqliteBackend a{dir.file(), {.clock = clock.fn()}};
  jobq::SqliteBackend b{dir.file(), {.clock = clock.fn()}};
  REQUIRE(a.get(id));
  CHECK(a.get(id)->payload == nlohmann::json{{"kept", true}});
  auto got = b.claim(claim_from("q"));
  REQUIRE(got.size() == 1);
  CHECK(a.get(id)->state == JobState::active);
  CHECK(a.claim(claim_from("q")).empty());
  CHECK(a.complete(id, got[0].lease_token, {{"ok", 1}}));
  CHECK(b.get(id)->state == JobState::completed);
}

TEST_CASE("a file of an older schema version is upgraded on open", "[sqlite][migrations]") {
  TempDir dir;
  const auto migrations = jobq::detail::sqlite::migrations();
  REQUIRE(migrations.size() >= 2);
  {
    // A file as the first release left it: only migration 1, one job in its shape.
    RawDb raw(dir.file());
    raw.exec("PRAGMA journal_mode = WAL");
    raw.exec(
        "CREATE TABLE jobq_schema_version (version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
        "applied_at INTEGER NOT NULL)");
    raw.exec(migrations[0].sql);
    raw.exec("INSERT INTO jobq_schema_version VALUES (1, 'jobs table', 0)");
    raw.exec(
        "INSERT INTO jobq_jobs (queue, name, payload, state, priority, max_attempts, run_at, created_at, "
        "backoff) VALUES ('old', 'noop', '{\"v\":1}', 'queued', 0, 3, 0, 0, "
        "'{\"kind\":\"fixed\",\"delay_ms\":0,\"jitter\":0.0}')");
  }
  jobq::ManualClock clock;
  jobq::SqliteBackend store{dir.file(), {.clock = clock.fn()}};
  CHECK(store.schema_version() == jobq::detail::sqlite::latest_schema_version());
  {
    RawDb raw(dir.file());
    CHECK(raw.scalar("SELECT count(*) FROM jobq_schema_version") == std::to_string(migrations.size()));
    CHECK(raw.scalar("SELECT count(*) FROM sqlite_schema WHERE name = 'jobq_queues'") == "1");
  }
  CHECK(store.counts("old").queued == 1);  // migration 3 counted the jobs already there
  auto got = store.claim(claim_from("old"));
  REQUIRE(got.size() == 1);
  CHECK(store.counts("old").active == 1);
  CHECK(got[0].payload == nlohmann::json{{"v", 1}});
  CHECK(got[0].progress == 0);
  CHECK(store.set_progress(got[0].id, got[0].lease_token, 40, "upgraded"));
  store.pause("old");
  CHECK(store.is_paused("old"));
}

TEST_CASE("a file of a newer schema version is refused with a clear error", "[sqlite][migrations]") {
  TempDir dir;
  jobq::ManualClock clock;
  { jobq::SqliteBackend store{dir.file(), {.clock = clock.fn()}}; }
  const int newer = jobq::detail::sqlite::latest_schema_version() + 1;
  {
    RawDb raw(dir.file());
    raw.exec("INSERT INTO jobq_schema_version VALUES (" + std::to_string(newer) + ", 'future', 0)");
  }
  const auto e = error_of([&] { jobq::SqliteBackend store{dir.file(), {.clock = clock.fn()}}; });
  CHECK(e.category() == jobq::ErrorCategory::conflict);
  CHECK_THAT(e.what(), Catch::Contains("schema version " + std::to_string(newer)) &&
                           Catch::Contains("newer") && Catch::Contains(dir.file()));
  RawDb raw(dir.file());
  CHECK(raw.scalar("SELECT max(version) FROM jobq_schema_version") == std::to_string(newer));
}

TEST_CASE("transactional enqueue exists iff the caller's transaction commits", "[sqlite][transactional]") {
  TempDir dir;
  jobq::ManualClock clock;
  jobq::SqliteBackend store{dir.file(), {.clock = clock.fn()}};
  RawDb app(dir.file());
  app.exec("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)");

  SECTION("commit") {
    app.exec("BEGIN");
    app.exec("INSERT INTO orders (item) VALUES ('book')");
    const auto r = store.enqueue(app.db, make_job("mail", {{"order", "book"}}));
    CHECK(r.created);
    CHECK_FALSE(store.get(r.id));  // not visible to others before the commit
    app.exec("COMMIT");
    REQUIRE(store.get(r.id));
    CHECK(store.get(r.id)->payload == nlohmann::json{{"order", "book"}});
    CHECK(store.counts("mail").queued == 1);
    CHECK(app.scalar("SELECT count(*) FROM orders") == "1");
  }
  SECTION("rollback") {
    app.exec("BEGIN");
    app.exec("INSERT INTO orders (item) VALUES ('book')");
    const auto r = store.enqueue(app.db, make_job("mail"));
    CHECK(r.created);
    app.exec("ROLLBACK");
    CHECK_FALSE(store.get(r.id));
    CHECK(store.counts("mail") == jobq::Counts{});
    CHECK(store.claim(claim_from("mail")).empty());
    CHECK(app.scalar("SELECT count(*) FROM orders") == "0");
  }
  SECTION("outside a transaction it commits at once") {
    const auto r = store.enqueue(app.db, make_job("mail"));
    CHECK(store.get(r.id));
    CHECK(sqlite3_get_autocommit(app.db) != 0);
  }
  SECTION("a unique key dedups against committed jobs") {
    auto j = make_job("mail");
    j.unique_key = "order:1";
    const auto first = store.enqueue(j);
    app.exec("BEGIN");
    const auto again = store.enqueue(app.db, j);
    app.exec("COMMIT");
    CHECK(again == jobq::EnqueueResult{first.id, false});
    CHECK(store.counts("mail").queued == 1);
  }
  SECTION("an invalid job throws and leaves the caller's transaction usable") {
    app.exec("BEGIN");
    app.exec("INSERT INTO orders (item) VALUES ('pen')");
    auto bad = make_job("mail");
    bad.max_attempts = 0;
    CHECK_THROWS_AS(store.enqueue(app.db, bad), jobq::InvalidArgument);
    CHECK(sqlite3_get_autocommit(app.db) == 0);
    app.exec("COMMIT");
    CHECK(app.scalar("SELECT count(*) FROM orders") == "1");
    CHECK(store.counts("mail") == jobq::Counts{});
  }
  SECTION("a connection on another file is refused") {
    RawDb other(dir.file("other.db"));
    const auto e = error_of([&] { store.enqueue(other.db, make_job("mail")); });
    CHECK(e.category() == jobq::ErrorCategory::invalid_argument);
    CHECK_THAT(e.what(), Catch::Contains("other.db"));
  }
}

TEST_CASE("wait_for_work: enqueue in this process wakes at once, other processes are polled",
          "[sqlite][wait]") {
  TempDir dir;
  jobq::ManualClock clock;
  const std::vector<std::string> queues{"q"};
  using steady = std::chrono::steady_clock;

  SECTION("an in-process enqueue wakes a waiter without waiting for the poll") {
    jobq::SqliteBackend store{dir.file(), {.clock = clock.fn(), .poll_interval = 60s}};
    std::atomic<bool> woke{false};
    std::thread waiter([&] {
      store.wait_for_work(queues, 60s, {});
      woke = true;
    });
    std::this_thread::sleep_for(100ms);
    const auto t0 = steady::now();
    store.enqueue(make_job("q"));
    waiter.join();
    CHECK(woke);
    CHECK(steady::now() - t0 < 10s);
  }
  SECTION("a job written by another connection is found by the poll") {
    jobq::SqliteBackend waiting{dir.file(), {.clock = clock.fn(), .poll_interval = 20ms}};
    jobq::SqliteBackend other{dir.file(), {.clock = clock.fn()}};  // stands in for another process
    std::atomic<bool> woke{false};
    std::thread waiter([&] {
      waiting.wait_for_work(queues, 60s, {});
      woke = true;
    });
    std::this_thread::sleep_for(100ms);
    CHECK_FALSE(woke);
    const auto t0 = steady::now();
    other.enqueue(make_job("q"));
    waiter.join();
    CHECK(steady::now() - t0 < 10s);
  }
  SECTION("with work ready it returns at once; a paused queue's work does not count") {
    jobq::SqliteBackend store{dir.file(), {.clock = clock.fn(), .poll_interval = 10ms}};
    store.enqueue(make_job("q"));
    auto t0 = steady::now();
    store.wait_for_work(queues, 30s, {});
    CHECK(steady::now() - t0 < 5s);
    store.pause("q");
    t0 = steady::now();
    store.wait_for_work(queues, 200ms, {});
    CHECK(steady::now() - t0 >= 200ms);
  }
  SECTION("a transactional enqueue inside a transaction is found after the commit") {
    jobq::SqliteBackend store{dir.file(), {.clock = clock.fn(), .poll_interval = 20ms}};
    RawDb app(dir.file());
    std::atomic<bool> woke{false};
    std::thread waiter([&] {
      store.wait_for_work(queues, 60s, {});
      woke = true;
    });
    app.exec("BEGIN");
    store.enqueue(app.db, make_job("q"));
    std::this_thread::sleep_for(150ms);
    CHECK_FALSE(woke);  // not committed: nothing to find, and no wake-up was sent
    app.exec("COMMIT");
    waiter.join();
    CHECK(woke);
  }
  SECTION("stop ends the wait") {
    jobq::SqliteBackend store{dir.file(), {.clock = clock.fn(), .poll_interval = 60s}};
    std::stop_source stop;
    std::thread waiter([&] { store.wait_for_work(queues, 60s, stop.get_token()); });
    std::this_thread::sleep_for(50ms);
    const auto t0 = steady::now();
    stop.request_stop();
    waiter.join();
    CHECK(steady::now() - t0 < 10s);
  }
}

TEST_CASE("bad paths and options are clear errors", "[sqlite][bad-input]") {
  TempDir dir;
  SECTION("a path in a missing directory") {
    const auto path = (dir.path / "no" / "such" / "dir" / "jobs.db").string();
    const auto e = error_of([&] { jobq::SqliteBackend store{path}; });
    CHECK(e.category() == jobq::ErrorCategory::connection);
    CHECK_THAT(e.what(), Catch::Contains(path) && Catch::Contains("cannot open"));
    CHECK_FALSE(std::filesystem::exists(dir.path / "no"));
  }
  SECTION("a file that is not a database is refused and left untouched") {
    const auto path = dir.file("notes.txt");
    std::string text;
    for (int i = 0; i < 200; ++i) text += "these are my notes, not a database\n";
    { std::ofstream(path, std::ios::binary) << text; }
    const auto e = error_of([&] { jobq::SqliteBackend store{path}; });
    CHECK(e.category() == jobq::ErrorCategory::invalid_argument);
    CHECK_THAT(e.what(), Catch::Contains("not a database") && Catch::Contains(path));
    try {
      jobq::SqliteBackend store{path};
      FAIL("opening a text file should fail");
    } catch (const jobq::SqliteError& native) {
      CHECK(native.code() == SQLITE_NOTADB);
    }
    CHECK(slurp(path) == text);
    CHECK_FALSE(std::filesystem::exists(path + "-wal"));
  }
  SECTION("in-memory and empty paths, and bad options") {
    CHECK_THROWS_AS(jobq::SqliteBackend{":memory:"}, jobq::InvalidArgument);
    CHECK_THROWS_AS(jobq::SqliteBackend{""}, jobq::InvalidArgument);
    CHECK_THROWS_AS((jobq::SqliteBackend{dir.file(), {.poll_interval = 0ms}}), jobq::InvalidArgument);
    CHECK_THROWS_AS((jobq::SqliteBackend{dir.file(), {.busy_timeout = -1ms}}), jobq::InvalidArgument);
    CHECK_THROWS_AS((jobq::SqliteBackend{dir.file(), {.clock = nullptr}}), jobq::InvalidArgument);
  }
}

TEST_CASE("a database locked past the busy timeout is a conflict error, nothing damaged",
          "[sqlite][bad-input]") {
  TempDir dir;
  jobq::ManualClock clock;
  jobq::SqliteBackend store{dir.file(), {.clock = clock.fn(), .busy_timeout = 100ms}};
  const auto kept = store.enqueue(make_job("q", {{"kept", 1}})).id;

  RawDb other(dir.file());  // another process holding the write lock
  other.exec("BEGIN IMMEDIATE");
  other.exec("INSERT INTO jobq_queues (name, paused) VALUES ('elsewhere', 0)");

  const auto t0 = std::chrono::steady_clock::now();
  const auto e = error_of([&] { store.enqueue(make_job("q")); });
  CHECK(std::chrono::steady_clock::now() - t0 >= 90ms);
  CHECK(e.category() == jobq::ErrorCategory::conflict);
  CHECK_THAT(e.what(), Catch::Contains("locked") && Catch::Contains("enqueue"));
  try {
    store.claim(claim_from("q"));
    FAIL("claim should fail while the file is locked");
  } catch (const jobq::SqliteError& native) {
    CHECK(native.code() == SQLITE_BUSY);
  }
  // WAL readers are not blocked by the writer.
  CHECK(store.counts("q").queued == 1);
  CHECK(store.get(kept)->state == JobState::queued);

  other.exec("ROLLBACK");
  CHECK(store.counts("q").queued == 1);  // the failed enqueue wrote nothing
  const auto got = store.claim(claim_from("q"));
  REQUIRE(got.size() == 1);
  CHECK(got[0].id == kept);
  CHECK(store.complete(kept, got[0].lease_token, nullptr));
  CHECK(store.enqueue(make_job("q")).created);
}

TEST_CASE("a corrupted payload row is a clear error naming the job and never blocks the queue",
          "[sqlite][bad-input]") {
  TempDir dir;
  jobq::ManualClock clock;
  jobq::SqliteBackend store{dir.file(), {.clock = clock.fn()}};
  std::vector<jobq::JobId> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(store.enqueue(make_job("q", {{"i", i}})).id);
  const auto bad = ids[1];
  {
    RawDb raw(dir.file());
    raw.exec("UPDATE jobq_jobs SET payload = '{\"i\": 1, broken' WHERE id = " + std::to_string(bad));
  }

  const auto e = error_of([&] { (void)store.get(bad); });
  CHECK(e.category() == jobq::ErrorCategory::backend);
  CHECK_THAT(e.what(), Catch::Contains("job " + std::to_string(bad)) && Catch::Contains("payload"));
  CHECK_THROWS_AS(store.list("q", JobState::queued, {}), jobq::SqliteError);
  CHECK(store.get(ids[0])->payload == nlohmann::json{{"i", 0}});

  // Claim hands out the good jobs and makes the broken one dead, with the reason kept.
  auto got = store.claim(claim_from("q", 10));
  REQUIRE(got.size() == 2);
  CHECK(got[0].id == ids[0]);
  CHECK(got[1].id == ids[2]);
  const auto c = store.counts("q");
  CHECK(c.active == 2);
  CHECK(c.dead == 1);
  CHECK(c.queued == 0);
  {
    RawDb raw(dir.file());
    CHECK(raw.scalar("SELECT state FROM jobq_jobs WHERE id = " + std::to_string(bad)) == "dead");
    CHECK_THAT(raw.scalar("SELECT errors ->> '$[0].message' FROM jobq_jobs WHERE id = " + std::to_string(bad)),
               Catch::Contains("payload is not valid JSON"));
    // Left as stored, for inspection; repaired by hand it can be re-driven.
    CHECK(raw.scalar("SELECT payload FROM jobq_jobs WHERE id = " + std::to_string(bad)) == "{\"i\": 1, broken");
    raw.exec("UPDATE jobq_jobs SET payload = '{\"i\": 1}' WHERE id = " + std::to_string(bad));
  }
  for (const auto& j : got) CHECK(store.complete(j.id, j.lease_token, nullptr));
  CHECK(store.redrive(bad));
  auto again = store.claim(claim_from("q"));
  REQUIRE(again.size() == 1);
  CHECK(again[0].payload == nlohmann::json{{"i", 1}});
  CHECK(again[0].errors.size() == 1);
}

TEST_CASE("payload strings that are not valid UTF-8 are refused before anything is written",
          "[sqlite][bad-input]") {
  TempDir dir;
  jobq::ManualClock clock;
  jobq::SqliteBackend store{dir.file(), {.clock = clock.fn()}};
  std::vector<jobq::NewJob> jobs{make_job("q"), make_job("q", {{"s", std::string("\xff\xfe")}})};
  CHECK_THROWS_AS(store.enqueue_many(jobs), jobq::InvalidArgument);
  CHECK(store.counts("q") == jobq::Counts{});
  // An error message with such bytes is stored with replacement characters, not refused.
  store.enqueue(make_job("q"));
  auto got = store.claim(claim_from("q"));
  REQUIRE(got.size() == 1);
  CHECK(store.fail({got[0].id, got[0].lease_token, std::string("bad \xff byte"), std::nullopt}) ==
        jobq::FailOutcome::dead);
  const auto job = store.get(got[0].id);
  REQUIRE(job->errors.size() == 1);
  CHECK_THAT(job->errors[0].message, Catch::StartsWith("bad "));
}

TEST_CASE("synchronous levels open and work", "[sqlite]") {
  TempDir dir;
  for (auto level : {jobq::SqliteSynchronous::off, jobq::SqliteSynchronous::normal,
                     jobq::SqliteSynchronous::full, jobq::SqliteSynchronous::extra}) {
    jobq::SqliteBackend store{dir.file(), {.synchronous = level}};
    CHECK(store.enqueue(make_job("q")).created);
  }
  jobq::SqliteBackend store{dir.file()};
  CHECK(store.counts("q").queued == 4);
}

TEST_CASE("a corrupted error list is named too, and claim still makes the job dead", "[sqlite][bad-input]") {
  TempDir dir;
  jobq::ManualClock clock;
  jobq::SqliteBackend store{dir.file(), {.clock = clock.fn()}};
  const auto id = store.enqueue(make_job("q")).id;
  {
    RawDb raw(dir.file());
    raw.exec("UPDATE jobq_jobs SET errors = 'oops' WHERE id = " + std::to_string(id));
  }
  const auto e = error_of([&] { (void)store.get(id); });
  CHECK_THAT(e.what(), Catch::Contains("job " + std::to_string(id)) && Catch::Contains("errors"));
  CHECK(store.claim(claim_from("q")).empty());
  CHECK(store.counts("q").dead == 1);
  RawDb raw(dir.file());
  CHECK(raw.scalar("SELECT json_array_length(errors) FROM jobq_jobs WHERE id = " + std::to_string(id)) == "1");
}

TEST_CASE("ids are never reused after the newest job is pruned", "[sqlite]") {
  TempDir dir;
  jobq::ManualClock clock;
  jobq::JobId first = 0;
  {
    jobq::SqliteBackend store{dir.file(), {.clock = clock.fn()}};
    first = store.enqueue(make_job("q")).id;
    const auto got = store.claim(claim_from("q"));
    REQUIRE(got.size() == 1);
    REQUIRE(store.complete(first, got[0].lease_token, nullptr));
    clock.advance(48h);
    REQUIRE(store.prune("q", jobq::Retention{}) == 1);
  }
  jobq::SqliteBackend store{dir.file(), {.clock = clock.fn()}};
  CHECK(store.enqueue(make_job("q")).id > first);
}

// Found by a fault probe: with damaged pages a worker waited for work forever, telling nobody.
TEST_CASE("a corrupt database file reaches on_error instead of stalling the worker", "[sqlite][bad-input]") {
  TempDir dir;
  {
    jobq::SqliteBackend store{dir.file()};
    std::vector<jobq::NewJob> jobs(3000, make_job("q", {{"pad", std::string(200, 'x')}}));
    store.enqueue_many(jobs);
  }
  {
    RawDb raw(dir.file());
    raw.exec("PRAGMA wal_checkpoint(TRUNCATE)");
  }
  // Overwrite the middle third of the file (table and index pages) with garbage.
  const auto size = std::filesystem::file_size(dir.file());
  {
    std::fstream f(dir.file(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(size / 3));
    const std::string junk(size / 3, '\x5a');
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  jobq::SqliteBackend store{dir.file()};
  std::mutex m;
  std::vector<std::string> errors;
  jobq::Worker w{store, {.queues = {"q"}, .concurrency = 2, .poll_interval = 20ms,
                         .on_error = [&](const std::exception& e) {
                           std::lock_guard lock(m);
                           errors.emplace_back(e.what());
                         }}};
  w.handle("noop", [](const nlohmann::json&) {});
  w.start();
  for (int i = 0; i < 200; ++i) {
    {
      std::lock_guard lock(m);
      if (!errors.empty()) break;
    }
    std::this_thread::sleep_for(20ms);
  }
  w.stop();
  std::lock_guard lock(m);
  REQUIRE_FALSE(errors.empty());
  CHECK_THAT(errors.front(), Catch::Contains("malformed") && Catch::Contains("corrupt"));
}

namespace {

// A read-only place holding a copy of a database: a read-only tmpfs mount as root (root writes
// through file modes), a directory and file without write permission otherwise.
struct ReadOnlyCopy {
  TempDir dir;
  std::filesystem::path mount = dir.path / "ro";
  bool mounted = false;
  explicit ReadOnlyCopy(const std::string& db) {
    std::filesystem::create_directory(mount);
    if (geteuid() == 0) {
      REQUIRE(std::system(("mount -t tmpfs -o size=16m jobq-ro " + mount.string()).c_str()) == 0);
      mounted = true;
    }
    std::filesystem::copy_file(db, file());
    if (mounted) {
      REQUIRE(std::system(("mount -o remount,ro " + mount.string()).c_str()) == 0);
    } else {
      chmod(file().c_str(), 0444);
      chmod(mount.c_str(), 0555);
    }
  }
  ReadOnlyCopy(const ReadOnlyCopy&) = delete;
  ReadOnlyCopy& operator=(const ReadOnlyCopy&) = delete;
  ~ReadOnlyCopy() {
    if (mounted) {
      (void)std::system(("umount " + mount.string()).c_str());
    } else {
      chmod(mount.c_str(), 0755);
    }
  }
  [[nodiscard]] std::string file() const { return (mount / "jobs.db").string(); }
};

}  // namespace

TEST_CASE("a database that cannot be written opens read-only for inspection", "[sqlite][bad-input]") {
  TempDir src;
  {
    jobq::SqliteBackend store{src.file()};
    store.enqueue(make_job("mail"));
    store.enqueue(make_job("mail"));
    store.pause("reports");
  }
  SECTION("a read-only file or mount is detected") {
    ReadOnlyCopy ro(src.file());
    jobq::SqliteBackend store{ro.file()};
    CHECK(store.read_only());
    CHECK(store.queues() == std::vector<std::string>{"mail", "reports"});
    CHECK(store.counts("mail").queued == 2);
    CHECK(store.list("mail", JobState::queued, {}).size() == 2);
    const auto e = error_of([&] { store.enqueue(make_job("mail")); });
    CHECK_THAT(e.what(), Catch::Contains("read-only"));
    CHECK_FALSE(e.is_transient());
    CHECK_THROWS_WITH(store.claim(claim_from("mail")), Catch::Contains("read-only"));
    CHECK(std::filesystem::exists(ro.file()));
  }
  SECTION("or asked for, and then nothing is created") {
    jobq::SqliteBackend store{src.file(), {.read_only = true}};
    CHECK(store.read_only());
    CHECK(store.counts("mail").queued == 2);
    CHECK_THROWS_WITH(store.pause("mail"), Catch::Contains("read-only"));
    const auto missing = src.file("nosuch.db");
    const auto e = error_of([&] { jobq::SqliteBackend none{missing, {.read_only = true}}; });
    CHECK_THAT(e.what(), Catch::Contains("no jobq store at") && Catch::Contains("does not exist"));
    CHECK(e.category() == jobq::ErrorCategory::not_found);
    CHECK_FALSE(std::filesystem::exists(missing));
    // nor is a file without jobq's tables changed by looking
    const auto empty = src.file("empty.db");
    std::ofstream{empty};
    const auto e2 = error_of([&] { jobq::SqliteBackend none{empty, {.read_only = true}}; });
    CHECK_THAT(e2.what(), Catch::Contains("holds no jobq tables"));
    CHECK(std::filesystem::file_size(empty) == 0);
    // and a writable open that may not create refuses the same
    const auto e3 = error_of([&] { jobq::SqliteBackend none{missing, {.create = false}}; });
    CHECK(e3.category() == jobq::ErrorCategory::not_found);
    CHECK_FALSE(std::filesystem::exists(missing));
  }
}
