// SQLite-specific flow tests: the upgrade from schema 6, what the flow tables hold as members
// finish, and the timing of a 20,000-member chord ([.bench]). The behaviour itself is in the
// conformance suite (conformance/flows.hpp).

#include <jobq/sqlite.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "sqlite/helpers.hpp"

using namespace std::chrono_literals;
using jobq::JobState;
using sqlite_test::RawDb;
using sqlite_test::TempDir;

namespace {

jobq::NewJob job_in(std::string queue, int n = 0) {
  jobq::NewJob j;
  j.queue = std::move(queue);
  j.name = "noop";
  j.payload = {{"n", n}};
  return j;
}

// Claims everything ready in `queue` and completes it with its payload's n; returns how many.
std::size_t drain(jobq::SqliteBackend& store, const std::string& queue, std::size_t limit = 64) {
  std::size_t done = 0;
  for (;;) {
    auto got = store.claim({{queue}, limit, 30s});
    if (got.empty()) return done;
    std::vector<jobq::Completion> cs;
    for (const auto& j : got) cs.push_back({j.id, j.lease_token, j.payload.at("n")});
    for (bool ok : store.complete_many(cs)) CHECK(ok);
    done += got.size();
  }
}

}  // namespace

TEST_CASE("a schema 6 file is upgraded to 7: old jobs are in no flow, waiting is a state", "[sqlite][migrations][flow]") {
  TempDir dir;
  REQUIRE(jobq::detail::sqlite::migrations().size() >= 7);
  {
    RawDb raw(dir.file());
    sqlite_test::write_old_schema(raw, 6);
    raw.exec(
        "INSERT INTO jobq_jobs (queue, name, payload, state, priority, max_attempts, run_at, created_at, "
        "backoff) VALUES ('old', 'noop', '{\"n\":1}', 'queued', 0, 3, 0, 0, '{\"kind\":\"fixed\",\"delay_ms\":0,\"jitter\":0.0}')");
    CHECK_THROWS(raw.exec("UPDATE jobq_jobs SET state = 'waiting' WHERE id = 1"));
  }
  jobq::ManualClock clock;
  jobq::SqliteBackend store{dir.file(), {.clock = clock.fn()}};
  CHECK(store.schema_version() == jobq::detail::sqlite::latest_schema_version());
  {
    RawDb raw(dir.file());
    CHECK(raw.scalar("PRAGMA integrity_check") == "ok");
    CHECK_THAT(raw.scalar("SELECT sql FROM sqlite_schema WHERE name = 'jobq_jobs'"),
               Catch::Contains("state = 'cancelled' OR state = 'waiting')") && Catch::Contains("depends_on TEXT"));
    CHECK_THROWS(raw.exec("UPDATE jobq_jobs SET state = 'bogus' WHERE id = 1"));
  }
  const auto old = store.get(1);
  REQUIRE(old);
  CHECK(old->flow_id == 0);
  CHECK(old->depends_on.empty());
  CHECK_FALSE(old->expires_at);  // migration 10: old jobs have no deadline
  CHECK_FALSE(store.flow(1));
  // A flow after the old job: ids continue after it.
  jobq::NewFlow f;
  f.members = {{job_in("old", 2)}, {job_in("old", 3), {0}}};
  const auto ids = store.enqueue_flow(f);
  CHECK(ids == std::vector<jobq::JobId>{2, 3});
  CHECK(store.counts("old").waiting == 1);
  CHECK(drain(store, "old") == 3);
  CHECK(store.get(3)->state == JobState::completed);
}

TEST_CASE("flow ids stay above pruned ids, and the flow tables empty as members finish", "[sqlite][flow]") {
  TempDir dir;
  jobq::ManualClock clock;
  jobq::SqliteBackend store{dir.file(), {.clock = clock.fn()}};
  const auto solo = store.enqueue(job_in("q")).id;
  drain(store, "q");
  clock.advance(2h);
  REQUIRE(store.prune("q", {1h, 1h, 1h}) == 1);  // the table is empty now; AUTOINCREMENT remembers
  jobq::NewFlow f;
  f.members = {{job_in("q", 1)}, {job_in("q", 2)}, {job_in("q", 3), {0, 1}}};
  f.on_failure = job_in("errors");
  const auto ids = store.enqueue_flow(f);
  CHECK(ids.front() == solo + 1);
  RawDb raw(dir.file());
  CHECK(raw.scalar("SELECT count(*) FROM jobq_deps") == "2");
  CHECK(raw.scalar("SELECT pending FROM jobq_waiting WHERE job_id = " + std::to_string(ids[2])) == "2");
  CHECK(raw.scalar("SELECT count(*) FROM jobq_flows") == "1");
  CHECK(drain(store, "q") == 3);
  CHECK(raw.scalar("SELECT count(*) FROM jobq_waiting") == "0");
  CHECK(store.get(ids[2])->result == nlohmann::json(3));
  clock.advance(2h);
  CHECK(store.prune("q", {1h, 1h, 1h}) == 3);
  CHECK(raw.scalar("SELECT count(*) FROM jobq_deps") == "0");
  CHECK(raw.scalar("SELECT count(*) FROM jobq_flows") == "0");
  CHECK_FALSE(store.flow(ids[0]));
}

TEST_CASE("a long chain dies down its length in one fail", "[sqlite][flow]") {
  TempDir dir;
  jobq::ManualClock clock;
  jobq::SqliteBackend store{dir.file(), {.clock = clock.fn()}};
  jobq::NewFlow f;
  for (std::size_t i = 0; i < 1'000; ++i) {
    f.members.push_back({job_in("q", static_cast<int>(i)), i == 0 ? std::vector<std::size_t>{} : std::vector<std::size_t>{i - 1}});
  }
  f.members.front().job.max_attempts = 1;
  const auto ids = store.enqueue_flow(f);
  auto got = store.claim({{"q"}, 1, 30s});
  REQUIRE(got.size() == 1);
  CHECK(store.fail({got[0].id, got[0].lease_token, "boom", std::nullopt}) == jobq::FailOutcome::dead);
  CHECK(store.counts("q").dead == 1'000);
  const auto second = store.get(ids[1]);
  REQUIRE(second);
  REQUIRE(second->errors.size() == 1);
  CHECK(second->errors[0].message == jobq::dead_dependency_error(ids[0], "boom"));
  const auto last = store.get(ids.back());
  REQUIRE(last);
  REQUIRE(last->errors.size() == 1);
  CHECK_THAT(last->errors[0].message, Catch::StartsWith("dependency " + std::to_string(ids[ids.size() - 2]) + " is dead: "));
  // Re-driving the head revives the whole chain.
  CHECK(store.redrive(ids.front()));
  CHECK(store.counts("q").waiting == 999);
  CHECK(drain(store, "q") == 1'000);
}

TEST_CASE("a corrupted member made dead by claim kills its dependents and fires the error callback",
          "[sqlite][flow][bad-input]") {
  TempDir dir;
  jobq::ManualClock clock;
  jobq::SqliteBackend store{dir.file(), {.clock = clock.fn()}};
  jobq::NewFlow f;
  f.members = {{job_in("q", 1)}, {job_in("q", 2), {0}}, {job_in("q", 3), {0}, true}};
  f.on_failure = job_in("errors");
  const auto ids = store.enqueue_flow(f);
  {
    RawDb raw(dir.file());
    raw.exec("UPDATE jobq_jobs SET payload = '{broken' WHERE id = " + std::to_string(ids[0]));
  }
  std::vector<jobq::JobNotice> seen;
  auto sub = store.subscribe({}, [&](const jobq::JobNotice& n) { seen.push_back(n); });
  CHECK(store.claim({{"q"}, 8, 30s}).empty());  // the broken row is not handed out
  CHECK(store.get(ids[1])->state == JobState::dead);
  CHECK_THAT(store.get(ids[1])->errors.at(0).message, Catch::StartsWith("dependency " + std::to_string(ids[0]) + " is dead: "));
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].kind == jobq::JobNotice::Kind::dead);
  CHECK(seen[0].id == ids[1]);
  // The one continuing on failure and the error callback are ready.
  const auto got = store.claim({{"q", "errors"}, 8, 30s});
  REQUIRE(got.size() == 2);
  CHECK(got[0].id == ids[2]);
  CHECK(got[1].queue == "errors");
  CHECK(got[1].flow_id == ids[0]);
  CHECK(got[1].depends_on == std::vector<jobq::JobId>{ids[0]});
}

TEST_CASE("bench: a 20,000-member chord, enqueued and drained with claim(64) + complete_many", "[.bench][sqlite][flow]") {
  TempDir dir;
  jobq::SqliteBackend store{dir.file()};
  jobq::Flow flow;
  std::vector<jobq::NewJob> members;
  for (int i = 0; i < 20'000; ++i) members.push_back(job_in("q", i));
  flow.chord(std::move(members), job_in("q", -1));
  const auto t0 = std::chrono::steady_clock::now();
  const auto ids = store.enqueue_flow(flow.spec());
  const auto t1 = std::chrono::steady_clock::now();
  const auto n = drain(store, "q");
  const auto t2 = std::chrono::steady_clock::now();
  CHECK(n == 20'001);
  const auto cb = store.get(ids.back());
  REQUIRE(cb);
  CHECK(cb->state == JobState::completed);
  CHECK(cb->depends_on.size() == 20'000);
  const auto deps = store.get_many(cb->depends_on);
  const auto t3 = std::chrono::steady_clock::now();
  CHECK(deps.size() == 20'000);
  const auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
  std::printf("chord of 20000 + callback: enqueue_flow %.0f ms, drain %.0f ms (%.0f jobs/s), get_many(20000) %.0f ms\n",
              ms(t1 - t0), ms(t2 - t1), 20'001 / (ms(t2 - t1) / 1000.0), ms(t3 - t2));
  // The same without a flow, for comparison.
  std::vector<jobq::NewJob> plain;
  for (int i = 0; i < 20'001; ++i) plain.push_back(job_in("p", i));
  const auto u0 = std::chrono::steady_clock::now();
  store.enqueue_many(plain);
  const auto u1 = std::chrono::steady_clock::now();
  drain(store, "p");
  const auto u2 = std::chrono::steady_clock::now();
  std::printf("20001 plain jobs: enqueue_many %.0f ms, drain %.0f ms (%.0f jobs/s)\n", ms(u1 - u0), ms(u2 - u1),
              20'001 / (ms(u2 - u1) / 1000.0));
  // The other way round: one root, 20,000 members after it, all released by its completion.
  jobq::Flow fan;
  const auto root = fan.add(job_in("f", 0));
  std::vector<jobq::NewJob> after;
  for (int i = 0; i < 20'000; ++i) after.push_back(job_in("f", i));
  fan.group(std::move(after), {root});
  store.enqueue_flow(fan.spec());
  auto head = store.claim({{"f"}, 1, 30s});
  REQUIRE(head.size() == 1);
  const auto v0 = std::chrono::steady_clock::now();
  CHECK(store.complete(head[0].id, head[0].lease_token, nullptr));
  const auto v1 = std::chrono::steady_clock::now();
  CHECK(store.counts("f").queued == 20'000);
  std::printf("fan-out of 20000 after one root: the root's complete %.0f ms\n", ms(v1 - v0));
}
