// Redis-specific tests of the #7 features: wake-ups at a rate limit, parked groups, the notice
// listener after its connection is killed, format-1 stores. Two objects on one prefix (limits,
// schedulers, notices, the payload limit) are in the conformance suite (two_objects.hpp).

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "redis/helpers.hpp"
#include "support.hpp"

using namespace std::chrono_literals;

namespace {

jobq::NewJob job(const std::string& queue, int n = 0, std::string group = {}) {
  jobq::NewJob j;
  j.queue = queue;
  j.name = "work";
  j.payload = {{"n", n}};
  j.group = std::move(group);
  return j;
}

jobq::ClaimRequest from(const std::string& queue, std::size_t limit, jobq::Millis lease = 1h) {
  return {{queue}, limit, lease};
}

using jobq_test::eventually;

using Log = jobq_test::NoticeLog;

}  // namespace

TEST_CASE("wait_for_work does not spin on a queue at its rate limit", "[redis][limits]") {
  jobq::ManualClock clock;
  redis_test::Store store(clock.fn(), "ratewait");
  auto& b = store.backend;
  b.set_queue_limits("q", {jobq::RateLimit{1, 1h}, 0});
  b.enqueue(job("q"));
  b.enqueue(job("q"));
  REQUIRE(b.claim(from("q", 5)).size() == 1);
  b.command({"DEL", store.prefix + ":{q}:wake"});  // the enqueues' wake-up markers (spurious wake-ups are allowed)
  const std::vector<std::string> qs{"q"};
  const auto t0 = std::chrono::steady_clock::now();
  b.wait_for_work(qs, 300ms, {});
  CHECK(std::chrono::steady_clock::now() - t0 >= 250ms);  // blocked: no work for an hour
  clock.advance(1h);
  const auto t1 = std::chrono::steady_clock::now();
  b.wait_for_work(qs, 5s, {});
  CHECK(std::chrono::steady_clock::now() - t1 < 2s);  // the window passed: work at once
}

TEST_CASE("parked jobs of a group come back in order, also after a cancel or a limit change", "[redis][limits]") {
  jobq::ManualClock clock;
  redis_test::Store store(clock.fn(), "park");
  auto& b = store.backend;
  b.set_queue_limits("q", {std::nullopt, 1});
  auto low = job("q", 1, "g");
  auto high = job("q", 2, "g");
  high.priority = 5;
  const auto first = b.enqueue(job("q", 0, "g")).id;
  const auto l = b.enqueue(low).id;
  const auto h = b.enqueue(high).id;
  const auto l2 = b.enqueue(job("q", 3, "g")).id;
  auto a = b.claim(from("q", 1));
  REQUIRE(a.size() == 1);
  CHECK(a[0].id == h);  // priority first
  CHECK(b.claim(from("q", 10)).empty());
  CHECK(b.command({"ZCARD", store.prefix + ":{q}:parked"}).integer == 3);
  REQUIRE(b.complete(h, a[0].lease_token, nullptr));
  a = b.claim(from("q", 10));
  REQUIRE(a.size() == 1);
  CHECK(a[0].id == first);
  // The next in line is cancelled while ready: the one after it must not stay parked.
  REQUIRE(b.complete(first, a[0].lease_token, nullptr));
  REQUIRE(b.cancel(l));
  a = b.claim(from("q", 10));
  REQUIRE(a.size() == 1);
  CHECK(a[0].id == l2);
  // Raising the limit brings every parked job back.
  const auto m1 = b.enqueue(job("q", 4, "g")).id;
  const auto m2 = b.enqueue(job("q", 5, "g")).id;
  CHECK(b.claim(from("q", 10)).empty());
  b.set_queue_limits("q", {std::nullopt, 3});
  auto more = b.claim(from("q", 10));
  REQUIRE(more.size() == 2);
  CHECK(more[0].id == m1);
  CHECK(more[1].id == m2);
}

TEST_CASE("the notice listener reconnects after its connection is killed", "[redis][events]") {
  jobq::ManualClock clock;
  redis_test::Store store(clock.fn(), "relisten");
  Log log;
  auto sub = store.backend.subscribe({}, log.fn());
  // Find the listener by the name it gives its connection, and kill it.
  const auto name = "jobq-events:" + store.prefix;
  const auto list = store.backend.command({"CLIENT", "LIST", "TYPE", "pubsub"}).str;
  std::string id;
  for (std::size_t at = 0; at < list.size();) {
    const auto end = std::min(list.find('\n', at), list.size());
    const auto line = list.substr(at, end - at);
    if (line.find(" name=" + name + " ") != std::string::npos) id = line.substr(3, line.find(' ') - 3);
    at = end + 1;
  }
  REQUIRE_FALSE(id.empty());
  CHECK(store.backend.command({"CLIENT", "KILL", "ID", id}).integer == 1);
  // Notices sent while it reconnects may be lost (best effort); later ones arrive.
  bool delivered = eventually([&] {
    const auto c = store.backend.enqueue(job("q")).id;
    store.backend.cancel(c);
    std::this_thread::sleep_for(20ms);
    return log.find(jobq::JobNotice::Kind::cancelled, c).has_value();
  }, 10s);
  CHECK(delivered);
}

TEST_CASE("a format-1 store (before #7) is read and upgraded in place", "[redis][format]") {
  jobq::ManualClock clock;
  redis_test::Store store(clock.fn(), "fmt1");
  auto& raw = store.backend;
  const auto p = store.prefix;
  const auto Q = p + ":{old}:";
  const auto t = jobq::to_epoch_ms(clock.now());
  const auto backoff = jobq::Backoff{}.to_json().dump();
  auto doc = [&](int id, const std::string& uk) {
    return nlohmann::json{{"id", std::to_string(id)}, {"queue", "old"}, {"name", "legacy"},
                          {"payload", "{\"v\":" + std::to_string(id) + "}"}, {"created_at", std::to_string(t)},
                          {"backoff", backoff}, {"timeout_ms", "0"}, {"unique_key", uk}, {"unique_for_ms", "0"},
                          {"nonce", "n1"}}
        .dump();
  };
  // Exactly what format 1 wrote for two queued jobs (one with a unique key): no version key, no
  // group anywhere.
  raw.command({"DEL", p + ":version"});
  raw.command({"SET", p + ":id", "2"});
  raw.command({"SADD", p + ":queues", "old"});
  raw.command({"HSET", p + ":jobqueue", "1", "old", "2", "old"});
  raw.command({"HSET", Q + "jobs", "1", doc(1, ""), "2", doc(2, "k")});
  raw.command({"HSET", Q + "state", "1", "queued 0 3 0 " + std::to_string(t) + " - - - - - -", "2",
               "queued 0 3 0 " + std::to_string(t) + " - - 0 - - -"});
  raw.command({"ZADD", Q + "ready", "0", jobq::detail::redis::rank(t, 1), "0", jobq::detail::redis::rank(t, 2)});
  raw.command({"ZADD", Q + "ids:queued", "1", "1", "2", "2"});
  raw.command({"HSET", Q + "unique", "k", "2"});

  jobq::RedisBackend upgraded(redis_test::server_url(), redis_test::options(clock.fn(), p));
  CHECK(raw.command({"GET", p + ":version"}).str == "3");  // raised: older jobq refuses it now
  auto k = job("old");
  k.unique_key = "k";
  CHECK(upgraded.enqueue(k) == jobq::EnqueueResult{2, false});  // the old job holds its key
  auto got = upgraded.claim(from("old", 10));
  REQUIRE(got.size() == 2);
  CHECK(got[0].id == 1);
  CHECK(got[0].payload == nlohmann::json{{"v", 1}});
  CHECK(got[0].group.empty());
  for (const auto& j : got) REQUIRE(upgraded.complete(j.id, j.lease_token, nullptr));
  CHECK(upgraded.enqueue(k).created);
  upgraded.set_queue_limits("old", {std::nullopt, 1});
  CHECK(upgraded.claim(from("old", 10)).size() == 1);

  // A newer format is refused, with the reason.
  raw.command({"SET", p + ":version", "4"});
  try {
    jobq::RedisBackend newer(redis_test::server_url(), redis_test::options(clock.fn(), p));
    FAIL("a format-4 store was opened");
  } catch (const jobq::RedisError& e) {
    CHECK_THAT(e.what(), Catch::Contains("format 4"));
  }
}

