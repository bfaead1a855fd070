#pragma once
// Conformance cases: bulk enqueues, many threads at once, wait_for_work, and bad names and
// options.

#include "conformance/common.hpp"

// ---------------------------------------------------------------------------------------------
// Volume and concurrency

TEMPLATE_LIST_TEST_CASE("a bulk enqueue of 10,000 jobs is all claimable", "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  std::vector<jobq::NewJob> batch;
  for (int i = 0; i < 10'000; ++i) batch.push_back(make_job("q", {{"i", i}}));
  const auto rs = b.enqueue_many(batch);
  REQUIRE(rs.size() == 10'000);
  std::set<jobq::JobId> ids;
  for (const auto& r : rs) {
    CHECK(r.created);
    ids.insert(r.id);
  }
  CHECK(ids.size() == 10'000);
  CHECK(b.counts("q").queued == 10'000);
  std::set<jobq::JobId> claimed;
  int expected_i = 0;
  bool in_order = true;
  for (;;) {
    auto got = b.claim(claim_from({"q"}, 500));
    if (got.empty()) break;
    for (const auto& j : got) {
      claimed.insert(j.id);
      in_order = in_order && j.payload.at("i").template get<int>() == expected_i++;
    }
  }
  CHECK(in_order);  // FIFO within one priority
  CHECK(claimed == ids);
  CHECK(b.counts("q").active == 10'000);
}

TEMPLATE_LIST_TEST_CASE("a bulk enqueue with one invalid job writes nothing", "[conformance]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  std::vector<jobq::NewJob> batch{make_job(), make_job(), make_job("bad queue!")};
  CHECK_THROWS_AS(b.enqueue_many(batch), jobq::InvalidArgument);
  CHECK(b.counts("q") == jobq::Counts{});
}

TEMPLATE_LIST_TEST_CASE("8 threads claiming at once never share a job and drain the queue", "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  constexpr int total = 2'000;
  std::vector<jobq::NewJob> batch;
  for (int i = 0; i < total; ++i) batch.push_back(make_job());
  b.enqueue_many(batch);
  std::mutex m;
  std::vector<jobq::JobId> all;
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      try {
        for (;;) {
          auto got = b.claim(claim_from({"q"}, 7));
          if (got.empty()) return;
          for (const auto& j : got) {
            if (!b.complete(j.id, j.lease_token, nullptr)) ++errors;
          }
          std::lock_guard lock(m);
          for (const auto& j : got) all.push_back(j.id);
        }
      } catch (...) {
        ++errors;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(errors == 0);
  CHECK(all.size() == static_cast<std::size_t>(total));
  CHECK(std::set<jobq::JobId>(all.begin(), all.end()).size() == static_cast<std::size_t>(total));
  CHECK(b.counts("q") == jobq::Counts{.completed = total});
}

namespace conformance {

/// Blocks a thread in wait_for_work on "q", then runs `wake`: the wait must end soon after.
template <class B, class Wake>
void check_wait_ended_by(B& b, std::stop_token stop, Wake wake) {
  std::atomic<bool> woke{false};
  std::thread waiter([&] {
    b.wait_for_work(std::vector<std::string>{"q"}, 20s, stop);
    woke = true;
  });
  std::this_thread::sleep_for(100ms);  // let it block
  wake();
  CHECK(eventually([&] { return woke.load(); }, 10s));
  waiter.join();
}

}  // namespace conformance

TEMPLATE_LIST_TEST_CASE("wait_for_work wakes on enqueue and on stop", "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  const std::vector<std::string> queues{"q"};
  SECTION("ready work returns at once") {
    b.enqueue(make_job());
    const auto t0 = std::chrono::steady_clock::now();
    b.wait_for_work(queues, 10s, {});
    CHECK(std::chrono::steady_clock::now() - t0 < 5s);
  }
  SECTION("an enqueue wakes a waiter") {
    check_wait_ended_by(b, {}, [&] { b.enqueue(make_job()); });
  }
  SECTION("a stop request ends the wait") {
    std::stop_source stop;
    check_wait_ended_by(b, stop.get_token(), [&] { stop.request_stop(); });
  }
}

// ---------------------------------------------------------------------------------------------
// Bad input

TEMPLATE_LIST_TEST_CASE("bad queue names, job names and options are refused, nothing written",
                        "[conformance]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  const std::string too_long(jobq::max_queue_name_length + 1, 'x');
  for (const std::string& bad : {std::string(), too_long, std::string("has space"),
                                std::string("semi;colon"), std::string("{brace}"),
                                std::string("q'; DROP TABLE jobq_jobs;--")}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(b.enqueue(make_job(bad)), jobq::InvalidArgument);
    CHECK_THROWS_AS(jobq::Queue(b, bad), jobq::InvalidArgument);
  }
  CHECK_THROWS_AS(b.enqueue(make_job("q", {}, "")), jobq::InvalidArgument);
  CHECK_THROWS_AS(b.enqueue(make_job("q", {}, "two words")), jobq::InvalidArgument);
  auto zero = make_job();
  zero.max_attempts = 0;
  CHECK_THROWS_AS(b.enqueue(zero), jobq::InvalidArgument);
  auto custom = make_job();
  custom.backoff = jobq::Backoff::custom([](int) { return jobq::Millis{5}; });
  CHECK_THROWS_WITH(b.enqueue(custom), Catch::Contains("custom backoff"));
  CHECK(b.counts("q") == jobq::Counts{});
  try {
    b.enqueue(make_job(""));
    FAIL("no error");
  } catch (const jobq::Error& e) {
    CHECK(e.category() == jobq::ErrorCategory::invalid_argument);
    CHECK(std::string(e.what()).find("queue name") != std::string::npos);
  }
}

TEMPLATE_LIST_TEST_CASE("payloads that look like SQL or Lua are stored verbatim", "[conformance]",
                        Backends) {
  TestType fx;
  auto& b = fx.backend();
  const nlohmann::json payload = {
      {"sql", "'); DELETE FROM jobq_jobs; --"},
      {"lua", "]] redis.call('FLUSHALL') --[["},
      {"unicode", "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"},
      {"nested", {{"a", {1, 2.5, nullptr, true}}}},
      {"nul", std::string("a\0b", 3)},
  };
  const auto id = b.enqueue(make_job("q", payload, "x-y.z:1")).id;
  CHECK(b.get(id)->payload == payload);
  CHECK(claim_one(b).payload == payload);
}
