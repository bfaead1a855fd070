#include <catch2/catch.hpp>

#include <jobq/jobq.hpp>

TEST_CASE("queue names accept letters, digits, '_', '-', '.' up to 128 characters", "[names]") {
  CHECK_NOTHROW(jobq::validate_queue_name("emails"));
  CHECK_NOTHROW(jobq::validate_queue_name("tenant-42.reports_v2"));
  CHECK_NOTHROW(jobq::validate_queue_name(std::string(128, 'a')));
  CHECK_THROWS_AS(jobq::validate_queue_name(""), jobq::InvalidArgument);
  CHECK_THROWS_AS(jobq::validate_queue_name(std::string(129, 'a')), jobq::InvalidArgument);
  for (const char* bad : {"a b", "a:b", "a{b}", "a/b", "ä", "a\nb", "a'b"}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(jobq::validate_queue_name(bad), jobq::InvalidArgument);
  }
}

TEST_CASE("job names refuse spaces and control characters", "[names]") {
  CHECK_NOTHROW(jobq::validate_job_name("send-email"));
  CHECK_NOTHROW(jobq::validate_job_name("App::Mailer#deliver"));
  CHECK_THROWS_AS(jobq::validate_job_name(""), jobq::InvalidArgument);
  CHECK_THROWS_AS(jobq::validate_job_name("two words"), jobq::InvalidArgument);
  CHECK_THROWS_AS(jobq::validate_job_name(std::string(256, 'x')), jobq::InvalidArgument);
}

TEST_CASE("job states round-trip through their names", "[job]") {
  for (auto s : jobq::all_job_states) CHECK(jobq::job_state_from_string(jobq::to_string(s)) == s);
  CHECK(jobq::to_string(jobq::JobState::waiting) == "waiting");
  CHECK_THROWS_AS(jobq::job_state_from_string("failed"), jobq::InvalidArgument);
}

TEST_CASE("attempt errors round-trip through JSON", "[job]") {
  const std::vector<jobq::AttemptError> errors{{1, "boom", jobq::from_epoch_ms(1000)},
                                               {2, "again", jobq::from_epoch_ms(5000)}};
  CHECK(jobq::errors_from_json(jobq::errors_to_json(errors)) == errors);
  CHECK(jobq::errors_from_json(nullptr).empty());
  CHECK_THROWS_AS(jobq::errors_from_json(nlohmann::json::array({{{"attempt", "x"}}})), jobq::InvalidArgument);
}

TEST_CASE("lease tokens are 32 hex characters and differ", "[job]") {
  const auto a = jobq::detail::new_lease_token();
  const auto b = jobq::detail::new_lease_token();
  CHECK(a.size() == 32);
  CHECK(a != b);
  CHECK(a.find_first_not_of("0123456789abcdef") == std::string::npos);
}

TEST_CASE("errors carry their category", "[errors]") {
  const jobq::ConnectionError c("server gone");
  CHECK(c.category() == jobq::ErrorCategory::connection);
  CHECK(c.is_transient());
  const jobq::InvalidArgument i("bad");
  CHECK_FALSE(i.is_transient());
  CHECK(jobq::to_string(i.category()) == "invalid_argument");
}

TEST_CASE("a manual clock moves only when told", "[time]") {
  jobq::ManualClock clock;
  const auto t0 = clock.now();
  auto fn = clock.fn();
  CHECK(fn() == t0);
  clock.advance(std::chrono::seconds(5));
  CHECK(fn() == t0 + std::chrono::seconds(5));
}

TEST_CASE("stored integers are read without undefined conversions", "[json][bad-input]") {
  using nlohmann::json;
  CHECK(jobq::json_integer<int>(json(42), "n") == 42);
  CHECK(jobq::json_integer<int>(json(3.0), "n") == 3);
  CHECK(jobq::json_integer<std::int64_t>(json(-9'000'000'000LL), "n") == -9'000'000'000LL);
  CHECK_THROWS_AS(jobq::json_integer<int>(json(1e300), "n"), jobq::InvalidArgument);
  CHECK_THROWS_AS(jobq::json_integer<int>(json(2147483648.0), "n"), jobq::InvalidArgument);
  CHECK_THROWS_AS(jobq::json_integer<int>(json(9'000'000'000LL), "n"), jobq::InvalidArgument);
  CHECK_THROWS_AS(jobq::json_integer<int>(json(1.5), "n"), jobq::InvalidArgument);
  CHECK_THROWS_AS(jobq::json_integer<int>(json("7"), "n"), jobq::InvalidArgument);
  CHECK_THROWS_AS(jobq::json_integer<std::int64_t>(json(18446744073709551615ULL), "n"), jobq::InvalidArgument);
  CHECK_THROWS_AS(jobq::json_integer<std::int64_t>(json(9.3e18), "n"), jobq::InvalidArgument);
  // The decoders of stored documents use it.
  CHECK_THROWS_AS(jobq::errors_from_json(json::parse(R"([{"attempt":1e300,"message":"m","at":0}])")),
                  jobq::InvalidArgument);
  CHECK_THROWS_AS(jobq::Backoff::from_json(json::parse(R"({"kind":"fixed","delay_ms":1e300})")),
                  jobq::InvalidArgument);
  CHECK_THROWS_AS(jobq::queue_limits_from_json(json::parse(R"({"rate":{"max":1e99,"window_ms":1}})")),
                  jobq::InvalidArgument);
}
