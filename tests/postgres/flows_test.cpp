// PostgreSQL-specific checks of flows beyond the conformance suite: a 20,000-member chord
// drained by 16 threads at once (each completion decrements the same callback row), members
// shared by two callbacks (locks taken in one order: no deadlock), death and re-drive down a
// long chain, and the v3 -> v4 upgrade.

#include <atomic>
#include <chrono>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include <jobq/jobq.hpp>
#include <jobq/postgres.hpp>

#include "postgres/pg_test_support.hpp"

using namespace std::chrono_literals;

namespace {

jobq::NewJob job(std::string queue = "q") {
  jobq::NewJob j;
  j.queue = std::move(queue);
  j.name = "noop";
  j.payload = {{"n", 1}};
  j.max_attempts = 1;
  return j;
}

struct Store {
  jobq::ManualClock clock;
  pgtest::TempSchema schema;
  jobq::PostgresBackend b{pgtest::url(), {.clock = clock.fn(), .schema = schema.name}};
};

/// Claims (limit 64) and completes with complete_many on `threads` threads until `queue` has
/// nothing left to claim for a while; how many jobs were completed.
std::size_t drain(jobq::PostgresBackend& b, const std::string& queue, int threads) {
  std::atomic<std::size_t> done{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (int idle = 0; idle < 3;) {
        auto jobs = b.claim({{queue}, 64, 1h});
        if (jobs.empty()) {
          ++idle;
          std::this_thread::sleep_for(20ms);
          continue;
        }
        idle = 0;
        std::vector<jobq::Completion> cs;
        for (const auto& j : jobs) cs.push_back({j.id, j.lease_token, nullptr});
        for (bool ok : b.complete_many(cs)) {
          if (ok) ++done;
        }
      }
    });
  }
  for (auto& t : pool) t.join();
  return done.load();
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

TEST_CASE("a 20,000-member chord drained by 16 threads releases its callback once, after all",
          "[postgres][flow]") {
  Store s;
  std::vector<jobq::NewJob> members(20'000, job());
  jobq::Flow f;
  f.chord(members, job("callback"));
  const auto t0 = std::chrono::steady_clock::now();
  const auto ids = s.b.enqueue_flow(f.spec());
  const auto enqueue_s = seconds_since(t0);
  REQUIRE(ids.size() == 20'001);
  CHECK(s.b.counts("callback").waiting == 1);

  const auto t1 = std::chrono::steady_clock::now();
  CHECK(drain(s.b, "q", 16) == 20'000);
  const auto drain_s = seconds_since(t1);
  std::cout << "postgres chord of 20,000: enqueue_flow " << enqueue_s << " s, drain on 16 threads "
            << drain_s << " s\n";

  CHECK(s.b.counts("q").completed == 20'000);
  CHECK(s.b.counts("callback").queued == 1);
  auto cb = s.b.claim({{"callback"}, 10, 1h});
  REQUIRE(cb.size() == 1);
  CHECK(cb[0].id == ids.back());
  CHECK(cb[0].depends_on.size() == 20'000);
}

TEST_CASE("members shared by two callbacks, completed on 16 threads, release each callback once",
          "[postgres][flow]") {
  Store s;
  jobq::Flow f;
  auto steps = f.group(std::vector<jobq::NewJob>(2'000, job()));
  auto a = f.add(job("callback"), steps);
  auto b = f.add(job("callback"), steps);
  (void)a;
  (void)b;
  const auto ids = s.b.enqueue_flow(f.spec());
  CHECK(drain(s.b, "q", 16) == 2'000);
  auto cb = s.b.claim({{"callback"}, 10, 1h});
  REQUIRE(cb.size() == 2);
  CHECK(s.b.counts("callback").waiting == 0);
  (void)ids;
}

TEST_CASE("a death runs down a 1,000-member chain and a re-drive brings the chain back",
          "[postgres][flow]") {
  Store s;
  jobq::Flow f;
  f.chain(std::vector<jobq::NewJob>(1'000, job()));
  const auto ids = s.b.enqueue_flow(f.spec());
  auto first = s.b.claim({{"q"}, 10, 1h});
  REQUIRE(first.size() == 1);
  REQUIRE(s.b.fail({first[0].id, first[0].lease_token, "boom", std::nullopt}) == jobq::FailOutcome::dead);
  CHECK(s.b.counts("q").dead == 1'000);
  const auto last = s.b.get(ids.back());
  REQUIRE(last);
  REQUIRE(!last->errors.empty());
  // Each dependent names its own dependency and the root cause, not the whole chain.
  CHECK(last->errors.back().message == jobq::dead_dependency_error(ids[ids.size() - 2], "boom"));

  REQUIRE(s.b.redrive(ids.front()));
  const auto c = s.b.counts("q");
  CHECK(c.queued == 1);
  CHECK(c.waiting == 999);
  CHECK(drain(s.b, "q", 4) == 1'000);
  CHECK(s.b.counts("q").completed == 1'000);
}

TEST_CASE("a version 3 schema is upgraded to flows: jobs kept and claimable, flows stored",
          "[postgres][flow][migration]") {
  pgtest::TempSchema schema;
  const std::string q = "\"" + schema.name + "\"";
  jobq::ManualClock clock;
  std::vector<jobq::JobId> old;
  {
    jobq::PostgresBackend b{pgtest::url(), {.clock = clock.fn(), .schema = schema.name}};
    for (int i = 0; i < 3; ++i) old.push_back(b.enqueue(job("old")).id);
  }
  auto c = pgtest::connect();
  pgtest::downgrade_to_v3(c.get(), q);
  CHECK(pgtest::exec(c.get(), "SELECT max(version) FROM " + q + ".schema_migrations") == "3");

  jobq::PostgresBackend b{pgtest::url(), {.clock = clock.fn(), .schema = schema.name}};
  CHECK(b.schema_version() == jobq::PostgresBackend::latest_schema_version);
  const auto got = b.claim({{"old"}, 10, 1h});
  REQUIRE(got.size() == 3);
  CHECK(got[0].flow_id == 0);
  CHECK(got[0].depends_on.empty());
  for (const auto& j : got) REQUIRE(b.complete(j.id, j.lease_token, nullptr));

  jobq::Flow f;
  f.chain({job("new"), job("new")});
  const auto ids = b.enqueue_flow(f.spec());
  CHECK(b.counts("new").waiting == 1);
  auto one = b.claim({{"new"}, 10, 1h});
  REQUIRE(one.size() == 1);
  REQUIRE(b.complete(one[0].id, one[0].lease_token, nullptr));
  auto two = b.claim({{"new"}, 10, 1h});
  REQUIRE(two.size() == 1);
  CHECK(two[0].id == ids[1]);
  CHECK(two[0].depends_on == std::vector<jobq::JobId>{ids[0]});
}
