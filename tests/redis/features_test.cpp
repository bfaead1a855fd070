// Redis-specific tests of the #7 features: limits enforced across backend objects and threads,
// racing schedulers on two objects, notices across objects (and after the listener's
// connection is killed), format-1 stores, payload size, parked groups.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
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

/// A second backend object on the same store (what another process would have).
jobq::RedisBackend twin(const redis_test::Store& s, const jobq::ClockFn& clock) {
  return jobq::RedisBackend(redis_test::server_url(), redis_test::options(clock, s.prefix));
}

using jobq_test::eventually;

using Log = jobq_test::NoticeLog;

}  // namespace

TEST_CASE("group concurrency holds across backend objects and threads", "[redis][limits]") {
  jobq::ManualClock clock;
  redis_test::Store store(clock.fn(), "grp");
  auto other = twin(store, clock.fn());
  constexpr int K = 2;
  store.backend.set_queue_limits("q", {std::nullopt, K});
  std::vector<jobq::NewJob> jobs;
  for (int i = 0; i < 240; ++i) jobs.push_back(job("q", i, "g" + std::to_string(i % 4)));
  for (int i = 0; i < 40; ++i) jobs.push_back(job("q", 1000 + i));  // ungrouped
  store.backend.enqueue_many(jobs);

  std::mutex m;
  std::map<std::string, int> active;  // raised after claim returns, lowered before complete
  std::atomic<int> worst{0};
  std::atomic<int> done{0};
  std::atomic<int> rejected{0};
  std::set<jobq::JobId> seen;
  bool duplicate = false;
  auto worker = [&](jobq::RedisBackend& b) {
    for (int idle = 0; idle < 200 && done.load() < 280;) {
      auto got = b.claim(from("q", 3));
      if (got.empty()) {
        ++idle;
        std::this_thread::sleep_for(1ms);
        continue;
      }
      {
        std::lock_guard lock(m);
        for (const auto& j : got) {
          duplicate = duplicate || !seen.insert(j.id).second;
          if (j.group.empty()) continue;
          const int n = ++active[j.group];
          worst = std::max(worst.load(), n);
        }
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      for (const auto& j : got) {
        {
          std::lock_guard lock(m);
          if (!j.group.empty()) --active[j.group];
        }
        if (!b.complete(j.id, j.lease_token, nullptr)) ++rejected;  // checked after join: Catch is not thread-safe
        ++done;
      }
    }
  };
  std::vector<std::thread> ts;
  for (int i = 0; i < 3; ++i) ts.emplace_back(worker, std::ref(store.backend));
  for (int i = 0; i < 3; ++i) ts.emplace_back(worker, std::ref(other));
  for (auto& t : ts) t.join();
  CHECK(done == 280);
  CHECK(rejected == 0);
  CHECK(worst.load() <= K);
  CHECK(worst.load() == K);  // and the limit was actually used
  CHECK_FALSE(duplicate);
  CHECK(store.backend.counts("q").completed == 280);
  // Nothing left parked or counted as active.
  CHECK(store.backend.command({"ZCARD", store.prefix + ":{q}:parked"}).integer == 0);
  CHECK(store.backend.command({"HLEN", store.prefix + ":{q}:gactive"}).integer == 0);
}

TEST_CASE("a rate limit holds across backend objects and threads", "[redis][limits]") {
  jobq::ManualClock clock;
  redis_test::Store store(clock.fn(), "rate");
  auto other = twin(store, clock.fn());
  store.backend.set_queue_limits("q", {jobq::RateLimit{25, 1min}, 0});
  std::vector<jobq::NewJob> jobs;
  for (int i = 0; i < 100; ++i) jobs.push_back(job("q", i));
  store.backend.enqueue_many(jobs);
  auto race = [&] {
    std::atomic<std::size_t> got{0};
    std::vector<std::thread> ts;
    for (int i = 0; i < 6; ++i) {
      ts.emplace_back([&, i] {
        auto& b = i % 2 == 0 ? store.backend : other;
        for (int k = 0; k < 15; ++k) got += b.claim(from("q", 2)).size();
      });
    }
    for (auto& t : ts) t.join();
    return got.load();
  };
  CHECK(race() == 25);
  clock.advance(59s);
  CHECK(race() == 0);
  clock.advance(1s);
  CHECK(race() == 25);
  CHECK(store.backend.counts("q").queued == 50);
}

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

TEST_CASE("racing schedulers on two backend objects fire each tick exactly once", "[redis][schedule]") {
  jobq::ManualClock clock;
  redis_test::Store store(clock.fn(), "sched");
  auto other = twin(store, clock.fn());
  const auto t0 = jobq::from_epoch_ms(1'900'000'000'000);
  store.backend.put_schedule({"tick", {{"every", "1m"}}, t0});
  constexpr int ticks = 20;
  const auto last = t0 + std::chrono::minutes(ticks);
  std::atomic<int> fired{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < 6; ++i) {
    ts.emplace_back([&, i] {
      auto& b = i % 2 == 0 ? store.backend : other;
      for (;;) {
        const auto next = b.schedules().at(0).next_run;
        if (next >= last) break;
        if (b.fire_schedule("tick", next, next + 1min, job("q", static_cast<int>(jobq::to_epoch_ms(next) / 60'000)))) ++fired;
      }
    });
  }
  for (auto& t : ts) t.join();
  CHECK(fired == ticks);
  CHECK(store.backend.counts("q").queued == ticks);
  std::set<int> ns;
  for (const auto& j : store.backend.list("q", jobq::JobState::queued, {0, 100})) ns.insert(j.payload["n"].get<int>());
  CHECK(ns.size() == static_cast<std::size_t>(ticks));  // one job per tick, no tick twice
  CHECK(store.backend.schedules().at(0).spec == nlohmann::json{{"every", "1m"}});
}

TEST_CASE("notices reach a subscriber on another backend object", "[redis][events]") {
  jobq::ManualClock clock;
  redis_test::Store store(clock.fn(), "events");
  auto producer = twin(store, clock.fn());
  Log log;
  auto sub = store.backend.subscribe({}, log.fn());
  using K = jobq::JobNotice::Kind;

  auto nj = job("q");
  nj.max_attempts = 2;
  const auto id = producer.enqueue(nj).id;
  auto j = producer.claim(from("q", 1)).at(0);
  REQUIRE(producer.set_progress(id, j.lease_token, 40, "forty"));
  REQUIRE(producer.fail({id, j.lease_token, "boom", clock.now()}) == jobq::FailOutcome::retried);
  j = producer.claim(from("q", 1)).at(0);
  REQUIRE(producer.complete(id, j.lease_token, {{"answer", 42}}));
  const auto cancelled = producer.enqueue(job("q")).id;
  REQUIRE(producer.cancel(cancelled));
  const auto dying = producer.enqueue(nj).id;
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto d = producer.claim(from("q", 1, 1s)).at(0);
    CHECK(d.id == dying);
    clock.advance(2s);
    producer.recover_expired();
  }
  REQUIRE(eventually([&] { return log.find(K::dead, dying).has_value(); }, 10s));
  CHECK(log.find(K::progress, id)->progress == 40);
  CHECK(log.find(K::progress, id)->message == "forty");
  CHECK(log.find(K::failed, id)->message == "boom");
  CHECK(log.find(K::completed, id)->attempt == 2);
  CHECK(log.find(K::completed, id)->progress == 40);
  CHECK(log.find(K::cancelled, cancelled).has_value());
  CHECK(log.find(K::failed, dying)->message.find("lease expired") != std::string::npos);
  CHECK(log.count(K::completed, id) == 1);  // once, not once per subscription path
  // Results and progress are visible from the other object.
  const auto seen = store.backend.get(id);
  CHECK(seen->result == nlohmann::json{{"answer", 42}});
  CHECK(seen->progress == 40);
  CHECK(seen->progress_message == "forty");
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
  CHECK(raw.command({"GET", p + ":version"}).str == "2");
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
  raw.command({"SET", p + ":version", "3"});
  try {
    jobq::RedisBackend newer(redis_test::server_url(), redis_test::options(clock.fn(), p));
    FAIL("a format-3 store was opened");
  } catch (const jobq::RedisError& e) {
    CHECK_THAT(e.what(), Catch::Contains("format 3"));
  }
}

TEST_CASE("max_payload_bytes refuses a large payload before anything is written", "[redis][limits]") {
  jobq::ManualClock clock;
  auto o = redis_test::options(clock.fn(), redis_test::unique_prefix("payload"));
  o.max_payload_bytes = 100;
  redis_test::Store store(o.prefix, o);
  auto& b = store.backend;
  auto small = job("q");
  auto big = job("q");
  big.payload = {{"blob", std::string(100, 'x')}};
  const std::vector<jobq::NewJob> batch{small, big};
  CHECK_THROWS_AS(b.enqueue_many(batch), jobq::InvalidArgument);
  CHECK_THROWS_AS(b.fire_schedule("s", clock.now(), clock.now(), big), jobq::InvalidArgument);
  CHECK(b.counts("q") == jobq::Counts{});
  CHECK(b.command({"EXISTS", store.prefix + ":jobqueue"}).integer == 0);
  CHECK(b.enqueue(small).created);
}
