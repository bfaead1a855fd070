#include <catch2/catch.hpp>

#include <jobq/backoff.hpp>

using namespace std::chrono_literals;
using jobq::Backoff;
using jobq::Millis;

TEST_CASE("fixed backoff waits the same delay every time", "[backoff]") {
  const auto b = Backoff::fixed(3s);
  for (int a = 1; a <= 10; ++a) CHECK(b.delay(a, 0.0) == 3s);
}

TEST_CASE("exponential backoff doubles from the base up to the cap", "[backoff]") {
  const auto b = Backoff::exponential(500ms, 10s);
  CHECK(b.delay(1, 0.0) == 500ms);
  CHECK(b.delay(2, 0.0) == 1s);
  CHECK(b.delay(3, 0.0) == 2s);
  CHECK(b.delay(5, 0.0) == 8s);
  CHECK(b.delay(6, 0.0) == 10s);
  CHECK(b.delay(500, 0.0) == 10s);  // no overflow far past the cap
}

TEST_CASE("exponential backoff honours a custom factor", "[backoff]") {
  const auto b = Backoff::exponential(1s, 1h, 1.5);
  CHECK(b.delay(1, 0.0) == 1000ms);
  CHECK(b.delay(2, 0.0) == 1500ms);
  CHECK(b.delay(3, 0.0) == 2250ms);
  CHECK_THROWS_AS(Backoff::exponential(1s, 1h, 0.5), jobq::InvalidArgument);
}

TEST_CASE("jitter reduces a delay by at most its fraction", "[backoff]") {
  const auto b = Backoff::fixed(10s).with_jitter(0.3);
  CHECK(b.delay(1, 0.0) == 10s);
  CHECK(b.delay(1, 0.5) == 8500ms);
  CHECK(b.delay(1, 0.999) > 7s);
  for (int i = 0; i < 1000; ++i) {
    const auto d = b.delay(1);
    CHECK(d >= 7s);
    CHECK(d <= 10s);
  }
  CHECK_THROWS_AS(Backoff::fixed(1s).with_jitter(1.5), jobq::InvalidArgument);
}

TEST_CASE("custom backoff calls the function with the attempt number", "[backoff]") {
  const auto b = Backoff::custom([](int attempt) { return Millis{attempt * attempt * 100}; });
  CHECK(b.delay(1, 0.0) == 100ms);
  CHECK(b.delay(3, 0.0) == 900ms);
  CHECK_THROWS_AS(Backoff::custom(nullptr), jobq::InvalidArgument);
}

TEST_CASE("negative custom delays are clamped to zero", "[backoff]") {
  const auto b = Backoff::custom([](int) { return Millis{-5}; });
  CHECK(b.delay(1, 0.0) == 0ms);
}

TEST_CASE("stored backoff policies round-trip through JSON", "[backoff]") {
  for (const auto& b : {Backoff::fixed(2s), Backoff::exponential(1s, 1min, 3.0).with_jitter(0.2), Backoff{}}) {
    const auto back = Backoff::from_json(b.to_json());
    CHECK(back == b);
    for (int a = 1; a < 8; ++a) CHECK(back.delay(a, 0.4) == b.delay(a, 0.4));
  }
}

TEST_CASE("custom policies cannot be stored, and malformed stored ones are refused", "[backoff]") {
  CHECK_THROWS_AS(Backoff::custom([](int) { return Millis{1}; }).to_json(), jobq::InvalidArgument);
  CHECK_THROWS_AS(Backoff::from_json({{"kind", "linear"}}), jobq::InvalidArgument);
  CHECK_THROWS_AS(Backoff::from_json({{"kind", "fixed"}}), jobq::InvalidArgument);
  CHECK_THROWS_AS(Backoff::from_json(42), jobq::InvalidArgument);
}

TEST_CASE("the default policy is exponential from one second", "[backoff]") {
  const Backoff b;
  CHECK(b.kind() == Backoff::Kind::exponential);
  CHECK(b.delay(1, 0.0) == 1s);
  CHECK(b.delay(2, 0.0) == 2s);
}
