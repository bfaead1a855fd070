// PostgreSQL-specific behaviour beyond the conformance suite: transactional enqueue,
// concurrent migrations, cross-process wake-ups, poll-only mode, single-node maintenance,
// replaced connections and bad input.

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include <jobq/jobq.hpp>
#include <jobq/postgres.hpp>

#include "postgres/pg_test_support.hpp"

using namespace std::chrono_literals;

namespace {

jobq::NewJob make_job(std::string queue = "q", nlohmann::json payload = {{"n", 1}}) {
  jobq::NewJob j;
  j.queue = std::move(queue);
  j.name = "noop";
  j.payload = std::move(payload);
  return j;
}

struct Store {
  jobq::ManualClock clock;
  pgtest::TempSchema schema;
  jobq::PostgresBackend b;
  explicit Store(jobq::PostgresOptions o = {})
      : b(pgtest::url(), with_defaults(std::move(o), clock, schema.name)) {}
  static jobq::PostgresOptions with_defaults(jobq::PostgresOptions o, const jobq::ManualClock& c,
                                             const std::string& schema) {
    o.clock = c.fn();
    o.schema = schema;
    return o;
  }
};

/// The URL of the test server with another user / password / database / port.
std::string url_with(const std::string& user, const std::string& password, const std::string& db,
                     const std::string& port = {}) {
  auto c = pgtest::connect();
  std::string u = "postgresql://" + user;
  if (!password.empty()) u += ":" + password;
  u += std::string("@") + PQhost(c.get()) + ":" + (port.empty() ? std::string(PQport(c.get())) : port) + "/" + db;
  return u;
}

template <class F>
jobq::PostgresError catch_pg(F&& f) {
  try {
    f();
  } catch (const jobq::PostgresError& e) {
    return e;
  }
  FAIL("no PostgresError thrown");
  return jobq::PostgresError(jobq::ErrorCategory::backend, "unreachable");
}

}  // namespace

TEST_CASE("a job enqueued in the caller's transaction exists iff it commits", "[postgres]") {
  Store s;
  auto tx = pgtest::connect();
  SECTION("commit") {
    pgtest::exec(tx.get(), "BEGIN");
    const auto r = s.b.enqueue(tx.get(), make_job());
    CHECK(r.created);
    const std::vector<jobq::NewJob> more{make_job(), make_job("other")};
    CHECK(s.b.enqueue_many(tx.get(), more).size() == 2);
    CHECK(s.b.counts("q").queued == 0);  // not visible before commit
    CHECK_FALSE(s.b.get(r.id));
    pgtest::exec(tx.get(), "COMMIT");
    CHECK(s.b.counts("q").queued == 2);
    CHECK(s.b.counts("other").queued == 1);
    CHECK(s.b.get(r.id)->state == jobq::JobState::queued);
  }
  SECTION("rollback") {
    pgtest::exec(tx.get(), "BEGIN");
    pgtest::exec(tx.get(), "CREATE TEMP TABLE orders (id int)");
    const auto r = s.b.enqueue(tx.get(), make_job());
    auto unique = make_job();
    unique.unique_key = "order:1";
    s.b.enqueue(tx.get(), unique);
    pgtest::exec(tx.get(), "ROLLBACK");
    CHECK(s.b.counts("q") == jobq::Counts{});
    CHECK_FALSE(s.b.get(r.id));
    CHECK(s.b.enqueue(unique).created);  // the rolled-back job never held its key
  }
  SECTION("an idle connection commits at once; an aborted transaction is refused") {
    const auto r = s.b.enqueue(tx.get(), make_job());
    CHECK(s.b.get(r.id));
    const std::vector<jobq::NewJob> two{make_job(), make_job()};
    CHECK(s.b.enqueue_many(tx.get(), two).size() == 2);
    CHECK(s.b.counts("q").queued == 3);
    pgtest::exec(tx.get(), "BEGIN");
    CHECK_THROWS(pgtest::exec(tx.get(), "SELECT 1/0"));
    auto e = catch_pg([&] { s.b.enqueue(tx.get(), make_job()); });
    CHECK(e.category() == jobq::ErrorCategory::conflict);
    pgtest::exec(tx.get(), "ROLLBACK");
    CHECK_THROWS_AS(s.b.enqueue(static_cast<PGconn*>(nullptr), make_job()), jobq::InvalidArgument);
  }
  SECTION("a waiter wakes when the transaction commits") {
    std::atomic<bool> woke{false};
    std::thread waiter([&] {
      const std::vector<std::string> qs{"q"};
      s.b.wait_for_work(qs, 20s, {});
      woke = true;
    });
    std::this_thread::sleep_for(200ms);
    pgtest::exec(tx.get(), "BEGIN");
    s.b.enqueue(tx.get(), make_job());
    std::this_thread::sleep_for(300ms);
    CHECK_FALSE(woke.load());  // NOTIFY is delivered at commit, not before
    pgtest::exec(tx.get(), "COMMIT");
    const auto t0 = std::chrono::steady_clock::now();
    waiter.join();
    CHECK(std::chrono::steady_clock::now() - t0 < 5s);
  }
}

TEST_CASE("many backends starting at once migrate the schema exactly once", "[postgres]") {
  pgtest::TempSchema schema;
  std::atomic<int> ok{0};
  std::vector<std::string> errors;
  std::mutex m;
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      try {
        jobq::PostgresBackend b{pgtest::url(), {.schema = schema.name, .pool_size = 1}};
        b.enqueue(make_job());
        ++ok;
      } catch (const std::exception& e) {
        std::lock_guard lock(m);
        errors.emplace_back(e.what());
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(errors.empty());
  CHECK(ok == 8);
  auto c = pgtest::connect();
  CHECK(pgtest::exec(c.get(), "SELECT count(*) FROM \"" + schema.name + "\".schema_migrations") ==
        std::to_string(jobq::PostgresBackend::latest_schema_version));
  jobq::PostgresBackend b{pgtest::url(), {.schema = schema.name}};
  CHECK(b.schema_version() == jobq::PostgresBackend::latest_schema_version);
  CHECK(b.counts("q").queued == 8);
}

TEST_CASE("a version 1 schema is upgraded in place, its jobs kept", "[postgres]") {
  pgtest::TempSchema schema;
  const std::string q = "\"" + schema.name + "\"";
  {
    jobq::PostgresBackend b{pgtest::url(), {.schema = schema.name}};
    b.enqueue(make_job());
  }
  // Back to version 1: it notified by an AFTER INSERT trigger with a transition table.
  auto c = pgtest::connect();
  pgtest::downgrade_to_v2(c.get(), q);
  pgtest::exec(c.get(), "DELETE FROM " + q + ".schema_migrations WHERE version > 1");
  pgtest::exec(c.get(),
               "CREATE FUNCTION " + q + ".notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $fn$\n"
               "BEGIN PERFORM pg_notify('jobq:' || TG_TABLE_SCHEMA, d.queue)"
               " FROM (SELECT DISTINCT queue FROM new_rows) AS d; RETURN NULL; END $fn$");
  pgtest::exec(c.get(), "CREATE TRIGGER jobs_notify_inserted AFTER INSERT ON " + q +
                            ".jobs REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT"
                            " EXECUTE FUNCTION " + q + ".notify_inserted()");
  jobq::PostgresBackend b{pgtest::url(), {.schema = schema.name}};
  CHECK(b.schema_version() == jobq::PostgresBackend::latest_schema_version);
  CHECK(pgtest::exec(c.get(), "SELECT count(*) FROM pg_trigger t JOIN pg_class r ON r.oid = t.tgrelid"
                              " JOIN pg_namespace n ON n.oid = r.relnamespace WHERE n.nspname = '" +
                                  schema.name + "' AND t.tgname = 'jobs_notify_inserted'") == "0");
  CHECK(b.counts("q").queued == 1);
  b.enqueue(make_job());
  CHECK(b.counts("q").queued == 2);
}

TEST_CASE("every kind of enqueue notifies once per queue, and only when it inserts", "[postgres]") {
  Store s;
  auto listener = pgtest::connect();
  pgtest::exec(listener.get(), "LISTEN \"jobq:" + s.schema.name + "\"");
  auto received = [&] {
    std::multiset<std::string> out;
    std::this_thread::sleep_for(100ms);
    PQconsumeInput(listener.get());
    while (PGnotify* n = PQnotifies(listener.get())) {
      out.insert(n->extra);
      PQfreemem(n);
    }
    return out;
  };
  s.b.enqueue(make_job("a"));
  CHECK(received() == std::multiset<std::string>{"a"});
  std::vector<jobq::NewJob> batch{make_job("a"), make_job("b"), make_job("a"), make_job("c")};
  s.b.enqueue_many(batch);
  CHECK(received() == std::multiset<std::string>{"a", "b", "c"});
  auto unique = make_job("u");
  unique.unique_key = "k";
  CHECK(s.b.enqueue(unique).created);
  CHECK(received() == std::multiset<std::string>{"u"});
  CHECK_FALSE(s.b.enqueue(unique).created);  // deduplicated: nothing new, no wake-up
  CHECK(received().empty());
  auto tx = pgtest::connect();
  pgtest::exec(tx.get(), "BEGIN");
  s.b.enqueue_many(tx.get(), std::vector<jobq::NewJob>{make_job("t"), make_job("t")});
  CHECK(received().empty());  // not before the caller's COMMIT
  pgtest::exec(tx.get(), "COMMIT");
  CHECK(received() == std::multiset<std::string>{"t"});
}

TEST_CASE("a schema written by a newer jobq is refused", "[postgres]") {
  Store s;
  auto c = pgtest::connect();
  pgtest::exec(c.get(), "INSERT INTO \"" + s.schema.name + "\".schema_migrations (version) VALUES (999)");
  auto e = catch_pg([&] { jobq::PostgresBackend b(pgtest::url(), {.schema = s.schema.name}); });
  CHECK(e.category() == jobq::ErrorCategory::conflict);
  CHECK_THAT(e.what(), Catch::Contains("version 999") && Catch::Contains("newer"));
}

TEST_CASE("a NOTIFY from another backend object wakes a waiter", "[postgres]") {
  Store s{{.poll_interval = 30s}};  // long: only the notification can end the wait early
  jobq::PostgresBackend producer{pgtest::url(), {.schema = s.schema.name}};
  const std::vector<std::string> qs{"q"};
  SECTION("enqueue") {
    std::atomic<bool> woke{false};
    std::thread waiter([&] {
      s.b.wait_for_work(qs, 30s, {});
      woke = true;
    });
    std::this_thread::sleep_for(200ms);
    producer.enqueue(make_job("elsewhere"));  // another queue: no wake-up
    std::this_thread::sleep_for(300ms);
    CHECK_FALSE(woke.load());
    const auto t0 = std::chrono::steady_clock::now();
    producer.enqueue(make_job());
    waiter.join();
    CHECK(std::chrono::steady_clock::now() - t0 < 5s);
  }
  SECTION("resume and release") {
    s.b.enqueue(make_job());
    auto j = s.b.claim({{"q"}, 1, 30s}).at(0);
    std::thread waiter([&] { s.b.wait_for_work(qs, 30s, {}); });
    std::this_thread::sleep_for(200ms);
    const auto t0 = std::chrono::steady_clock::now();
    producer.release(j.id, j.lease_token);
    waiter.join();
    CHECK(std::chrono::steady_clock::now() - t0 < 5s);
  }
  SECTION("stop") {
    std::stop_source stop;
    std::thread waiter([&] { s.b.wait_for_work(qs, 30s, stop.get_token()); });
    std::this_thread::sleep_for(200ms);
    const auto t0 = std::chrono::steady_clock::now();
    stop.request_stop();
    waiter.join();
    CHECK(std::chrono::steady_clock::now() - t0 < 1s);
  }
}

TEST_CASE("poll-only mode without prepared statements works (connection poolers)", "[postgres]") {
  Store s{{.poll_interval = 200ms, .listen = false, .prepared_statements = false}};
  const std::vector<std::string> qs{"q"};
  auto t0 = std::chrono::steady_clock::now();
  s.b.wait_for_work(qs, 10s, {});  // nothing ready: returns after the poll interval
  CHECK(std::chrono::steady_clock::now() - t0 >= 150ms);
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);
  const auto id = s.b.enqueue(make_job()).id;
  t0 = std::chrono::steady_clock::now();
  s.b.wait_for_work(qs, 10s, {});
  CHECK(std::chrono::steady_clock::now() - t0 < 150ms);  // ready: at once
  auto got = s.b.claim({{"q"}, 5, 30s});
  REQUIRE(got.size() == 1);
  CHECK(got[0].id == id);
  CHECK(s.b.complete(id, got[0].lease_token, {{"ok", true}}));
  CHECK(s.b.counts("q").completed == 1);
}

TEST_CASE("expired-lease recovery and pruning run on one node at a time", "[postgres]") {
  Store s;
  s.b.enqueue(make_job());
  s.b.claim({{"q"}, 1, 10s});
  s.clock.advance(11s);
  auto other = pgtest::connect();  // another node, in the middle of its maintenance
  pgtest::exec(other.get(), "SELECT pg_advisory_lock(hashtextextended('jobq:recover:" + s.schema.name + "', 0))");
  CHECK(s.b.recover_expired() == jobq::Recovered{});
  CHECK(s.b.counts("q").active == 1);
  pgtest::exec(other.get(), "SELECT pg_advisory_unlock_all()");
  CHECK(s.b.recover_expired() == jobq::Recovered{1, 0});
  CHECK(s.b.counts("q").queued == 1);

  auto j = s.b.claim({{"q"}, 1, 10s}).at(0);
  s.b.complete(j.id, j.lease_token, nullptr);
  s.clock.advance(48h);
  pgtest::exec(other.get(), "SELECT pg_advisory_lock(hashtextextended('jobq:prune:" + s.schema.name + "', 0))");
  CHECK(s.b.prune("q", {}) == 0);
  pgtest::exec(other.get(), "SELECT pg_advisory_unlock_all()");
  CHECK(s.b.prune("q", {}) == 1);
}

TEST_CASE("pooled connections killed by the server are replaced without an error", "[postgres]") {
  const std::string app = "jobq_kill_" + pgtest::random_suffix(6);
  Store s{{.pool_size = 3, .application_name = app}};
  for (int i = 0; i < 10; ++i) s.b.enqueue(make_job());
  auto admin = pgtest::connect();
  const auto killed = pgtest::exec(admin.get(),
      "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '" + app + "'");
  CHECK(killed != "0");
  std::this_thread::sleep_for(100ms);
  auto got = s.b.claim({{"q"}, 10, 30s});  // no error: the dead connection is noticed before use
  CHECK(got.size() == 10);
  std::vector<jobq::Completion> cs;
  for (const auto& j : got) cs.push_back({j.id, j.lease_token, nullptr});
  CHECK(s.b.complete_many(cs) == std::vector<bool>(10, true));
}

TEST_CASE("a statement cut off by the server is retried without a double change", "[postgres]") {
  const std::string app = "jobq_cut_" + pgtest::random_suffix(6);
  Store s{{.application_name = app}};
  const auto id = s.b.enqueue(make_job()).id;
  auto j = s.b.claim({{"q"}, 1, 30s}).at(0);
  auto locker = pgtest::connect();
  pgtest::exec(locker.get(), "BEGIN");
  pgtest::exec(locker.get(), "SELECT 1 FROM \"" + s.schema.name + "\".jobs WHERE id = " + std::to_string(id) + " FOR UPDATE");
  std::atomic<int> result{-1};
  std::thread completer([&] { result = s.b.complete(id, j.lease_token, {{"v", 1}}) ? 1 : 0; });
  auto admin = pgtest::connect();
  // Wait until complete() blocks on the row lock, then kill its connection mid-statement.
  std::string killed = "0";
  for (int i = 0; i < 200 && killed == "0"; ++i) {
    std::this_thread::sleep_for(20ms);
    killed = pgtest::exec(admin.get(),
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '" + app +
        "' AND wait_event_type = 'Lock'");
  }
  CHECK(killed == "1");
  std::this_thread::sleep_for(300ms);
  pgtest::exec(locker.get(), "COMMIT");
  completer.join();
  CHECK(result == 1);
  auto stored = s.b.get(id);
  CHECK(stored->state == jobq::JobState::completed);
  CHECK(stored->result == nlohmann::json{{"v", 1}});
  CHECK_FALSE(s.b.complete(id, j.lease_token, nullptr));
}

// In a long outage the backend's own retries can run out after the server applied an
// outcome; the worker then sends it again. That resend must count as applied, not as a lost
// lease, so that the worker's stats and events match the store.
TEST_CASE("an outcome the server applied without an answer is applied when sent again", "[postgres]") {
  const std::string app = "jobq_gaveup_" + pgtest::random_suffix(6);
  Store s{{.reconnect_give_up = 300ms, .application_name = app}};
  const auto id = s.b.enqueue(make_job()).id;
  const auto j = s.b.claim({{"q"}, 1, 30s}).at(0);
  // Another process on the same store, standing in for "the server applied it".
  jobq::PostgresBackend other(pgtest::url(), Store::with_defaults({}, s.clock, s.schema.name));
  auto locker = pgtest::connect();
  pgtest::exec(locker.get(), "BEGIN");
  pgtest::exec(locker.get(), "SELECT 1 FROM \"" + s.schema.name + "\".jobs WHERE id = " + std::to_string(id) + " FOR UPDATE");
  std::atomic<bool> done{false}, transient{false};
  std::thread completer([&] {
    try {
      s.b.complete(id, j.lease_token, {{"v", 1}});
    } catch (const jobq::Error& e) {
      transient = e.is_transient();
    }
    done = true;
  });
  // Every try of complete() waits on the row lock and is cut off, until with_retry gives up.
  auto admin = pgtest::connect();
  for (int i = 0; i < 500 && !done; ++i) {
    pgtest::exec(admin.get(), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '" +
                                  app + "' AND wait_event_type = 'Lock'");
    std::this_thread::sleep_for(10ms);
  }
  completer.join();
  REQUIRE(transient);
  pgtest::exec(locker.get(), "COMMIT");
  CHECK(other.complete(id, j.lease_token, {{"v", 1}}));
  // The worker sends its completion again: it was applied, so it is not a lost lease.
  CHECK(s.b.complete(id, j.lease_token, {{"v", 1}}));
  // A second duplicate is an ordinary stale call again.
  CHECK_FALSE(s.b.complete(id, j.lease_token, {{"v", 1}}));
  CHECK(s.b.get(id)->result == nlohmann::json{{"v", 1}});
}

TEST_CASE("text that PostgreSQL could choke on is stored safely", "[postgres][bad-input]") {
  Store s;
  auto nj = make_job("q", {{"sql", "'; DROP SCHEMA jobq CASCADE; --"}, {"nul", std::string("a\0b", 3)}});
  nj.unique_key = "it's a \"key\"; DELETE FROM jobs";
  const auto id = s.b.enqueue(nj).id;
  CHECK(s.b.enqueue(nj).id == id);
  auto j = s.b.claim({{"q"}, 1, 30s}).at(0);
  CHECK(j.payload == nj.payload);
  CHECK(j.unique_key == nj.unique_key);
  CHECK(s.b.set_progress(id, j.lease_token, 250, "bad \xff utf-8 and a \0 nul"));
  CHECK(s.b.fail({id, j.lease_token, "boom \xfe\xff'); --", s.b.now()}) == jobq::FailOutcome::retried);
  auto stored = s.b.get(id);
  CHECK(stored->progress == 100);
  REQUIRE(stored->errors.size() == 1);
  CHECK_THAT(stored->errors[0].message, Catch::StartsWith("boom ") && Catch::EndsWith("'); --"));
  auto bad_key = make_job();
  bad_key.unique_key = std::string("k\0k", 3);
  CHECK_THROWS_AS(s.b.enqueue(bad_key), jobq::InvalidArgument);
  auto bad_utf8 = make_job("q", {{"s", "\xff\xfe"}});
  CHECK_THROWS_AS(s.b.enqueue(bad_utf8), jobq::InvalidArgument);
  CHECK(s.b.counts("q").queued == 1);
}

TEST_CASE("bad connection settings give clear errors without passwords", "[postgres][bad-input]") {
  SECTION("a broken connection string") {
    CHECK_THROWS_AS(jobq::PostgresBackend("host=127.0.0.1 port", {}), jobq::InvalidArgument);
    CHECK_THROWS_AS(jobq::PostgresBackend("postgresql://u:pw@[::1/db", {}), jobq::InvalidArgument);
    CHECK_THROWS_WITH(jobq::PostgresBackend("nonsense=1", {}), Catch::Contains("invalid connection string"));
  }
  SECTION("bad options") {
    CHECK_THROWS_AS(jobq::PostgresBackend(pgtest::url(), {.schema = "Bad-Schema"}), jobq::InvalidArgument);
    CHECK_THROWS_AS(jobq::PostgresBackend(pgtest::url(), {.schema = "x\"; DROP"}), jobq::InvalidArgument);
    CHECK_THROWS_AS(jobq::PostgresBackend(pgtest::url(), {.pool_size = 0}), jobq::InvalidArgument);
  }
  SECTION("an unreachable server") {
    // Port 1 on loopback: nothing listens there.
    const auto u = url_with("postgres", "s3cret-pw", "postgres", "1");
    const auto t0 = std::chrono::steady_clock::now();
    auto e = catch_pg([&] { jobq::PostgresBackend b(u, {.connect_timeout = 2s}); });
    CHECK(std::chrono::steady_clock::now() - t0 < 10s);
    CHECK(e.category() == jobq::ErrorCategory::connection);
    CHECK(e.is_transient());
    CHECK_THAT(e.what(), Catch::Contains("cannot connect") && Catch::Contains(":1/postgres"));
    CHECK_THAT(e.what(), !Catch::Contains("s3cret-pw"));
  }
  SECTION("a database that does not exist") {
    auto e = catch_pg([&] { jobq::PostgresBackend b(url_with("postgres", "", "no_such_db_jobq"), {}); });
    CHECK(e.sqlstate() == "3D000");
    CHECK(e.category() == jobq::ErrorCategory::not_found);
    CHECK_THAT(e.what(), Catch::Contains("no_such_db_jobq"));
  }
  SECTION("a role that may not log in") {
    auto admin = pgtest::connect();
    const auto role = "jobq_nologin_" + pgtest::random_suffix(6);
    pgtest::exec(admin.get(), "CREATE ROLE " + role + " NOLOGIN");
    auto e = catch_pg([&] { jobq::PostgresBackend b(url_with(role, "pw-not-shown", "postgres"), {}); });
    pgtest::exec(admin.get(), "DROP ROLE " + role);
    CHECK(e.sqlstate() == "28000");
    CHECK(e.category() == jobq::ErrorCategory::invalid_argument);
    CHECK_THAT(e.what(), Catch::Contains("not permitted to log in") && !Catch::Contains("pw-not-shown"));
  }
}

TEST_CASE("a wrong password is refused with SQLSTATE 28P01", "[postgres][bad-input]") {
  // The test server trusts everyone; a pg_hba.conf rule for one fresh role makes a real
  // password check. The file is restored afterwards; the rule names only that role.
  auto admin = pgtest::connect();
  const auto role = "jobq_pw_" + pgtest::random_suffix(6);
  const auto hba = pgtest::exec(admin.get(), "SHOW hba_file");
  const auto original = pgtest::exec(admin.get(), "SELECT pg_read_file('" + hba + "')");
  auto write_hba = [&](const std::string& content) {
    // CSV with delimiter and quote bytes that never occur writes each line verbatim.
    char* lit = PQescapeLiteral(admin.get(), content.c_str(), content.size());
    const std::string literal = lit;
    PQfreemem(lit);
    pgtest::exec(admin.get(), "COPY (SELECT l FROM unnest(string_to_array(" + literal +
                                  "::text, E'\\n')) AS l WHERE l <> '') TO '" + hba +
                                  "' WITH (FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02')");
    pgtest::exec(admin.get(), "SELECT pg_reload_conf()");
  };
  pgtest::exec(admin.get(), "CREATE ROLE " + role + " LOGIN PASSWORD 'right-pw'");
  write_hba("host all " + role + " 127.0.0.1/32 scram-sha-256\nhost all " + role +
            " ::1/128 scram-sha-256\n" + original);
  struct Restore {
    std::function<void()> fn;
    ~Restore() { fn(); }
  } restore{[&] {
    write_hba(original);
    pgtest::exec(admin.get(), "DROP ROLE IF EXISTS " + role);
  }};
  const auto wrong = url_with(role, "wrong-pw", "postgres");
  std::optional<jobq::PostgresError> err;
  for (int i = 0; i < 100; ++i) {  // the reload is asynchronous
    try {
      jobq::PostgresBackend b(wrong, {.schema = "jobq_pw_never"});
    } catch (const jobq::PostgresError& e) {
      if (e.sqlstate() == "28P01") {
        err = e;
        break;
      }
    } catch (...) {
    }
    std::this_thread::sleep_for(50ms);
  }
  REQUIRE(err);
  CHECK(err->category() == jobq::ErrorCategory::invalid_argument);
  CHECK_FALSE(err->is_transient());
  CHECK_THAT(err->what(), Catch::Contains("password authentication failed") && Catch::Contains(role));
  CHECK_THAT(err->what(), !Catch::Contains("wrong-pw"));
}

TEST_CASE("a schema owned by someone else gives a clear error", "[postgres][bad-input]") {
  auto admin = pgtest::connect();
  const auto role = "jobq_limited_" + pgtest::random_suffix(6);
  pgtest::TempSchema schema;
  pgtest::exec(admin.get(), "CREATE ROLE " + role + " LOGIN");
  pgtest::exec(admin.get(), "CREATE SCHEMA \"" + schema.name + "\"");  // owned by the admin
  std::optional<jobq::PostgresError> err;
  try {
    jobq::PostgresBackend b(url_with(role, "", PQdb(admin.get())), {.schema = schema.name});
  } catch (const jobq::PostgresError& e) {
    err = e;
  }
  SECTION("without rights it fails") {
    REQUIRE(err);
    CHECK(err->sqlstate() == "42501");
    CHECK_THAT(err->what(), Catch::Contains(schema.name) && Catch::Contains("connected as \"" + role + "\"") &&
                                Catch::Contains("owned by \"postgres\""));
  }
  SECTION("a role with only usage rights can use a schema migrated by its owner") {
    jobq::PostgresBackend owner(pgtest::url(), {.schema = schema.name});
    pgtest::exec(admin.get(), "GRANT USAGE ON SCHEMA \"" + schema.name + "\" TO " + role);
    pgtest::exec(admin.get(), "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA \"" + schema.name +
                                  "\" TO " + role);
    jobq::PostgresBackend user(url_with(role, "", PQdb(admin.get())), {.schema = schema.name});
    const auto id = user.enqueue(make_job()).id;
    CHECK(owner.get(id));
  }
  pgtest::exec(admin.get(), "DROP SCHEMA \"" + schema.name + "\" CASCADE");
  pgtest::exec(admin.get(), "DROP ROLE " + role);
}

TEST_CASE("prune deletes a large backlog in bounded batches", "[postgres]") {
  Store s;
  std::vector<jobq::NewJob> batch(25'000, make_job());
  s.b.enqueue_many(batch);
  for (;;) {
    auto got = s.b.claim({{"q"}, 10'000, 30s});
    if (got.empty()) break;
    std::vector<jobq::Completion> cs;
    for (const auto& j : got) cs.push_back({j.id, j.lease_token, nullptr});
    s.b.complete_many(cs);
  }
  REQUIRE(s.b.counts("q").completed == 25'000);
  s.b.enqueue(make_job());  // queued: never pruned
  s.clock.advance(25h);
  CHECK(s.b.prune("q", {}) == 25'000);
  CHECK(s.b.counts("q") == jobq::Counts{.queued = 1});
}
