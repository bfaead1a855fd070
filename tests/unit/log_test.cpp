#include <sstream>

#include <catch2/catch.hpp>

#include <jobq/jobq.hpp>

TEST_CASE("job events describe themselves in one line with the job's context", "[log]") {
  jobq::JobEvent e{jobq::JobEvent::Kind::failed, 42, "emails", "send-email", 2, jobq::Millis{15}, "timeout"};
  CHECK(jobq::describe(e) == "job 42 send-email (emails): failed on attempt 2 after 15 ms: timeout");
  e.kind = jobq::JobEvent::Kind::dead;
  CHECK(jobq::describe(e) == "job 42 send-email (emails): dead after attempt 2: timeout");
  e.kind = jobq::JobEvent::Kind::progress;
  e.progress = 50;
  e.message = "half";
  CHECK(jobq::describe(e) == "job 42 send-email (emails): progress 50%: half");
  CHECK(jobq::to_string(jobq::JobEvent::Kind::lost_lease) == "lost_lease");
  CHECK(jobq::to_string(jobq::LogLevel::warning) == "warning");
  CHECK(jobq::log_level_of(jobq::JobEvent::Kind::started) == jobq::LogLevel::debug);
  CHECK(jobq::log_level_of(jobq::JobEvent::Kind::completed) == jobq::LogLevel::info);
  CHECK(jobq::log_level_of(jobq::JobEvent::Kind::failed) == jobq::LogLevel::warning);
  CHECK(jobq::log_level_of(jobq::JobEvent::Kind::dead) == jobq::LogLevel::error);
}

TEST_CASE("the stream writer stamps each line with UTC time and level", "[log]") {
  std::ostringstream out;
  const jobq::Logger log{jobq::LogLevel::info, jobq::stream_writer(out)};
  CHECK(log.enabled(jobq::LogLevel::error));
  CHECK_FALSE(log.enabled(jobq::LogLevel::debug));
  log.write({jobq::LogLevel::warning, "job 1 x (q): lease lost", nullptr});
  const auto line = out.str();
  // 2026-12-03T16:31:02.123Z warning jobq: ...
  REQUIRE(line.size() > 25);
  CHECK(line[4] == '-');
  CHECK(line[10] == 'T');
  CHECK(line[19] == '.');
  CHECK(line[23] == 'Z');
  CHECK(line.substr(24) == " warning jobq: job 1 x (q): lease lost\n");
  CHECK_FALSE((jobq::Logger{jobq::LogLevel::off, jobq::stream_writer(out)}.enabled(jobq::LogLevel::error)));
  CHECK_FALSE(jobq::Logger{}.enabled(jobq::LogLevel::error));  // no writer
}

TEST_CASE("fan_out calls every observer in turn and skips empty ones", "[log]") {
  std::vector<int> calls;
  auto both = jobq::fan_out({[&](const jobq::JobEvent&) { calls.push_back(1); }, {},
                             [&](const jobq::JobEvent& e) { calls.push_back(static_cast<int>(e.id)); }});
  both(jobq::JobEvent{jobq::JobEvent::Kind::completed, 7});
  CHECK(calls == std::vector<int>{1, 7});
}
