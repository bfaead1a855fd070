#include <catch2/catch.hpp>

#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include <jobq/jobq.hpp>
#include <jobq/memory.hpp>
#include <jobq/metrics.hpp>

using namespace std::chrono_literals;

namespace {
bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos || text.rfind(line + "\n", 0) == 0;
}
}  // namespace

TEST_CASE("Metrics: events, samples and the Prometheus text") {
  jobq::ManualClock clock;
  jobq::Metrics m{{.clock = clock.fn(), .buckets = {0.1, 1}}};
  using K = jobq::JobEvent::Kind;
  m.observe({K::started, 1, "emails", "send", 1, 0ms, ""});
  m.observe({K::completed, 1, "emails", "send", 1, 50ms, ""});
  m.observe({K::failed, 2, "emails", "send", 1, 500ms, "boom"});
  m.observe({K::retried, 2, "emails", "send", 1, 500ms, "boom"});
  m.observe({K::failed, 3, "emails", "send", 3, 2000ms, "boom"});
  m.observe({K::dead, 3, "emails", "send", 3, 2000ms, "boom"});
  m.observe({K::lost_lease, 4, "emails", "send", 1, 10ms, ""});
  m.enqueued("emails", 3);
  m.track("images");
  m.set_sample("emails", {{.queued = 4, .active = 1, .completed = 7, .dead = 2, .cancelled = 1, .delayed = 3}, true, 90s});

  const auto text = m.prometheus();
  INFO(text);
  CHECK(has_line(text, "# TYPE jobq_jobs gauge"));
  CHECK(has_line(text, R"(jobq_jobs{queue="emails",state="queued"} 4)"));
  CHECK(has_line(text, R"(jobq_jobs{queue="emails",state="dead"} 2)"));
  CHECK(has_line(text, R"(jobq_jobs{queue="emails",state="waiting"} 0)"));  // every state, flows or not
  CHECK(has_line(text, "# TYPE jobq_jobs_delayed gauge"));
  CHECK(has_line(text, R"(jobq_jobs_delayed{queue="emails"} 3)"));  // of the 4 queued
  CHECK(text.find("state=\"delayed\"") == std::string::npos);     // not a state: sums stay right
  CHECK(has_line(text, R"(jobq_queue_paused{queue="emails"} 1)"));
  CHECK(has_line(text, R"(jobq_oldest_waiting_age_seconds{queue="emails"} 90)"));
  CHECK(has_line(text, R"(jobq_jobs_enqueued_total{queue="emails"} 3)"));
  CHECK(has_line(text, R"(jobq_jobs_enqueued_total{queue="images"} 0)"));
  CHECK(has_line(text, R"(jobq_jobs_completed_total{queue="emails",job="send"} 1)"));
  CHECK(has_line(text, R"(jobq_jobs_failed_total{queue="emails",job="send"} 2)"));
  CHECK(has_line(text, R"(jobq_jobs_retried_total{queue="emails",job="send"} 1)"));
  CHECK(has_line(text, R"(jobq_jobs_dead_total{queue="emails",job="send"} 1)"));
  CHECK(has_line(text, R"(jobq_leases_lost_total{queue="emails",job="send"} 1)"));
  CHECK(has_line(text, "# TYPE jobq_job_duration_seconds histogram"));
  CHECK(has_line(text, R"(jobq_job_duration_seconds_bucket{queue="emails",job="send",le="0.1"} 1)"));
  CHECK(has_line(text, R"(jobq_job_duration_seconds_bucket{queue="emails",job="send",le="1"} 2)"));
  CHECK(has_line(text, R"(jobq_job_duration_seconds_bucket{queue="emails",job="send",le="+Inf"} 3)"));
  CHECK(has_line(text, R"(jobq_job_duration_seconds_sum{queue="emails",job="send"} 2.55)"));
  CHECK(has_line(text, R"(jobq_job_duration_seconds_count{queue="emails",job="send"} 3)"));
  // a queue nothing ran in yet has its series at 0, labelled by queue only
  CHECK(has_line(text, R"(jobq_jobs_completed_total{queue="images"} 0)"));
  CHECK(has_line(text, R"(jobq_job_queue_wait_seconds_count{queue="images"} 0)"));

  auto snap = m.snapshot();
  CHECK(snap["emails"]["counts"]["delayed"] == 3);
  CHECK(snap["emails"]["completed_per_minute"].size() == 60);
  CHECK(snap["emails"]["completed_per_minute"].back() == 1);
  CHECK(snap["emails"]["failed_per_minute"].back() == 2);
  clock.advance(2min);
  m.observe({K::completed, 5, "emails", "send", 1, 5ms, ""});
  snap = m.snapshot();
  CHECK(snap["emails"]["completed_per_minute"][57] == 1);
  CHECK(snap["emails"]["completed_per_minute"][59] == 1);
  clock.advance(61min);
  snap = m.snapshot();
  CHECK(snap["emails"]["completed_per_minute"] == nlohmann::json(std::vector<int>(60, 0)));
  CHECK(m.queues() == std::vector<std::string>{"emails", "images"});
}

TEST_CASE("Metrics: queue wait per job name, names beyond the cap counted as other") {
  jobq::ManualClock clock;
  jobq::Metrics m{{.clock = clock.fn(), .wait_buckets = {1, 10}, .max_job_names = 2}};
  using K = jobq::JobEvent::Kind;
  const auto started = [&](const std::string& name, jobq::Millis waited) {
    jobq::JobEvent e{K::started, 1, "emails", name, 1};
    e.waited = waited;
    m.observe(e);
  };
  started("send", 500ms);
  started("send", 4s);
  started(R"(say"hi\)", 20s);  // quoted in the label as Prometheus wants
  started("third", 1s);         // a third name: over the cap of 2
  started("fourth", 1s);
  const auto text = m.prometheus();
  INFO(text);
  CHECK(has_line(text, "# TYPE jobq_job_queue_wait_seconds histogram"));
  CHECK(has_line(text, R"(jobq_job_queue_wait_seconds_bucket{queue="emails",job="send",le="1"} 1)"));
  CHECK(has_line(text, R"(jobq_job_queue_wait_seconds_bucket{queue="emails",job="send",le="10"} 2)"));
  CHECK(has_line(text, R"(jobq_job_queue_wait_seconds_sum{queue="emails",job="send"} 4.5)"));
  CHECK(has_line(text, R"(jobq_job_queue_wait_seconds_bucket{queue="emails",job="say\"hi\\",le="+Inf"} 1)"));
  CHECK(has_line(text, R"(jobq_jobs_started_total{queue="emails",job="other"} 2)"));
  CHECK(text.find("third") == std::string::npos);
  const auto snap = m.snapshot();
  CHECK(snap["emails"]["started"] == 5);
  CHECK(snap["emails"]["wait_count"] == 5);
  CHECK(snap["emails"]["jobs"]["send"]["wait_sum_seconds"] == 4.5);
}

TEST_CASE("Metrics from a running Worker, a CountingQueue and the backend") {
  jobq::ManualClock clock;
  jobq::MemoryBackend store{{clock.fn()}};
  jobq::Metrics metrics{{.clock = clock.fn()}};
  jobq::CountingQueue q{store, "work", metrics};
  q.enqueue("ok", {});
  q.enqueue("ok", {}, {.unique_key = "u"});
  q.enqueue("ok", {}, {.unique_key = "u"});  // deduplicated: not counted
  q.enqueue("bad", {}, {.max_attempts = 1});

  std::mutex mu;
  std::vector<jobq::JobEvent::Kind> kinds;
  jobq::Worker w{store, {.queues = {"work"}, .concurrency = 2, .poll_interval = 10ms,
                         .on_event = [&](const jobq::JobEvent& e) {
                           metrics.observe(e);
                           std::lock_guard lock(mu);
                           kinds.push_back(e.kind);
                         }}};
  w.handle("ok", [](const nlohmann::json&, jobq::JobContext&) {});
  w.handle("bad", [](const nlohmann::json&, jobq::JobContext&) { throw std::runtime_error("nope"); });
  clock.advance(3s);  // each job has been due for 3 s when it starts
  REQUIRE(w.run_until_idle(10s));

  using K = jobq::JobEvent::Kind;
  CHECK(std::count(kinds.begin(), kinds.end(), K::started) == 3);
  CHECK(metrics.snapshot()["work"]["wait_sum_seconds"] == 9.0);
  CHECK(metrics.snapshot()["work"]["jobs"]["bad"]["wait_sum_seconds"] == 3.0);
  CHECK(std::count(kinds.begin(), kinds.end(), K::completed) == 2);
  CHECK(std::count(kinds.begin(), kinds.end(), K::failed) == 1);
  CHECK(std::count(kinds.begin(), kinds.end(), K::dead) == 1);

  const std::vector<std::string> queues{"work"};
  metrics.sample(store, queues);
  CHECK(has_line(metrics.prometheus(), "jobq_workers 0"));  // it stopped, and left the registry
  {
    jobq::Worker idle{store, {.queues = {"work"}, .poll_interval = 10ms, .log = {jobq::LogLevel::off, {}}}};
    idle.start();
    for (int i = 0; i < 500 && store.workers().empty(); ++i) std::this_thread::sleep_for(10ms);
    metrics.sample(store, queues);
    const auto text = metrics.prometheus();
    CHECK(has_line(text, "jobq_workers 1"));
    CHECK(has_line(text, R"(jobq_worker_jobs{state="running"} 0)"));
    CHECK(has_line(text, R"(jobq_worker_jobs{state="leased"} 0)"));
  }
  auto snap = metrics.snapshot()["work"];
  CHECK(snap["enqueued"] == 3);
  CHECK(snap["completed"] == 2);
  CHECK(snap["dead"] == 1);
  CHECK(snap["counts"]["completed"] == 2);
  CHECK(snap["counts"]["dead"] == 1);
  CHECK(snap["oldest_waiting_seconds"].is_null());

  // completions per minute come from the store, whoever ran the jobs
  auto per_minute = jobq::completions_per_minute(store, "work");
  CHECK(per_minute[59] == 2);
  clock.advance(3min);
  per_minute = jobq::completions_per_minute(store, "work");
  CHECK(per_minute[56] == 2);
  CHECK(per_minute[59] == 0);

  // oldest waiting: age of the first ready queued job
  q.enqueue("ok", {});
  clock.advance(42s);
  CHECK(jobq::oldest_waiting(store, "work") == std::optional<jobq::Millis>(42s));
  q.enqueue("later", {}, {.delay = 1h});
  CHECK(jobq::oldest_waiting(store, "empty") == std::nullopt);
}

TEST_CASE("An on_event hook that throws is reported, not fatal") {
  jobq::MemoryBackend store;
  jobq::Queue q{store, "w"};
  q.enqueue("ok", {});
  std::atomic<int> errors{0};
  jobq::Worker w{store, {.queues = {"w"}, .poll_interval = 10ms,
                         .on_error = [&](const std::exception&) { ++errors; },
                         .on_event = [](const jobq::JobEvent&) { throw std::runtime_error("hook"); }}};
  w.handle("ok", [](const nlohmann::json&, jobq::JobContext&) {});
  CHECK(w.run_until_idle(10s));
  CHECK(q.counts().completed == 1);
  CHECK(errors >= 2);
}

TEST_CASE("Metrics: worker errors by category, passed on to the next hook") {
  jobq::ManualClock clock;
  jobq::Metrics m{{.clock = clock.fn()}};
  std::vector<std::string> passed;
  auto hook = m.error_observer([&](const std::exception& e) { passed.emplace_back(e.what()); });
  CHECK(has_line(m.prometheus(), "jobq_worker_last_error_timestamp_seconds 0"));

  hook(jobq::ConnectionError("redis down"));
  hook(jobq::ConnectionError("redis still down"));
  clock.advance(1500ms);
  hook(jobq::Error(jobq::ErrorCategory::backend, "bad reply"));
  hook(std::runtime_error("something else"));

  CHECK(passed == std::vector<std::string>{"redis down", "redis still down", "bad reply", "something else"});
  CHECK(m.errors() == std::map<std::string, std::uint64_t>{{"backend", 1}, {"connection", 2}, {"other", 1}});
  const auto text = m.prometheus();
  INFO(text);
  CHECK(has_line(text, "# TYPE jobq_worker_errors_total counter"));
  CHECK(has_line(text, R"(jobq_worker_errors_total{category="connection"} 2)"));
  CHECK(has_line(text, R"(jobq_worker_errors_total{category="backend"} 1)"));
  CHECK(has_line(text, R"(jobq_worker_errors_total{category="other"} 1)"));
  const auto ms = jobq::to_epoch_ms(clock.now());
  char expected[80];
  std::snprintf(expected, sizeof expected, "jobq_worker_last_error_timestamp_seconds %lld.%03lld",
                static_cast<long long>(ms / 1000), static_cast<long long>(ms % 1000));
  CHECK(has_line(text, expected));
}

TEST_CASE("Metrics: a Worker's on_error hook from error_observer() counts backend errors") {
  jobq::MemoryBackend store;
  jobq::Metrics m;
  std::atomic<int> seen{0};
  // An unknown job name is an ordinary failure, not a loop error; a failing on_event hook is one.
  jobq::Worker w{store, {.queues = {"q"}, .poll_interval = 10ms,
                         .on_error = m.error_observer([&](const std::exception&) { ++seen; }),
                         .on_event = [](const jobq::JobEvent&) { throw jobq::ConnectionError("sink down"); }}};
  w.handle("work", [](const nlohmann::json&) {});
  jobq::Queue q{store, "q"};
  q.enqueue("work", {});
  CHECK(w.run_until_idle(10s));
  CHECK(seen.load() >= 2);  // started + completed events
  CHECK(m.errors().at("connection") == static_cast<std::uint64_t>(seen.load()));
}

TEST_CASE("oldest_waiting: the oldest due job, not the lowest id, read page by page") {
  jobq::ManualClock clock;
  jobq::MemoryBackend store{{clock.fn()}};
  jobq::Queue q{store, "work"};
  // lower ids delayed for an hour hide the ready job from a first-page look
  for (int i = 0; i < 600; ++i) q.enqueue("later", {}, {.delay = 1h});
  CHECK(jobq::oldest_waiting(store, "work") == std::optional<jobq::Millis>(0ms));  // queued, none due
  q.enqueue("ready", {});
  clock.advance(33s);
  CHECK(jobq::oldest_waiting(store, "work") == std::optional<jobq::Millis>(33s));
  // the bound: only the first 100 jobs are read, all delayed
  CHECK(jobq::oldest_waiting(store, "work", 100) == std::optional<jobq::Millis>(0ms));

  // measured from run_at: a delayed job that came due 10 s ago has waited 10 s
  jobq::Queue other{store, "other"};
  other.enqueue("soon", {}, {.delay = 20s});
  clock.advance(30s);
  CHECK(jobq::oldest_waiting(store, "other") == std::optional<jobq::Millis>(10s));

  jobq::Metrics m{{.clock = clock.fn()}};
  const std::vector<std::string> queues{"work"};
  m.sample(store, queues);
  CHECK(has_line(m.prometheus(), R"(jobq_oldest_waiting_age_seconds{queue="work"} 63)"));
}

TEST_CASE("Metrics: build info, and every error series at 0 before the first error") {
  jobq::Metrics m;
  auto text = m.prometheus();
  INFO(text);
  CHECK(has_line(text, "# TYPE jobq_build_info gauge"));
  CHECK(has_line(text, R"(jobq_build_info{version=")" JOBQ_VERSION_STRING R"("} 1)"));
  CHECK(std::string(JOBQ_VERSION_STRING).find(".") != std::string::npos);
  for (const char* c : {"connection", "invalid_argument", "not_found", "conflict", "backend", "other"}) {
    CHECK(has_line(text, std::string(R"(jobq_worker_errors_total{category=")") + c + R"("} 0)"));
  }
  m.observe_error(jobq::Error(jobq::ErrorCategory::connection, "down"));
  text = m.prometheus();
  CHECK(has_line(text, R"(jobq_worker_errors_total{category="connection"} 1)"));
  CHECK(has_line(text, R"(jobq_worker_errors_total{category="backend"} 0)"));
  CHECK(m.errors() == std::map<std::string, std::uint64_t>{{"connection", 1}});  // observed ones only
}

TEST_CASE("throughput_per_minute: failed attempts of jobs in any state, by each attempt's time; the newest `sample` per state") {
  jobq::ManualClock clock;
  jobq::MemoryBackend store{{clock.fn()}};
  jobq::Queue q{store, "work"};
  const auto fail_once = [&](jobq::JobId id, std::optional<jobq::TimePoint> retry_at) {
    const auto c = store.claim({{"work"}, 1, 60s});
    REQUIRE(c.size() == 1);
    REQUIRE(c[0].id == id);
    return store.fail({id, c[0].lease_token, "boom", retry_at});
  };
  // a: fails, then completes 2 minutes later; b: fails twice, a minute apart (the second: dead)
  const auto a = q.enqueue("a", {});
  REQUIRE(fail_once(a, store.now() + 2min) == jobq::FailOutcome::retried);
  const auto b = q.enqueue("b", {});
  clock.advance(1min);
  REQUIRE(fail_once(b, store.now()) == jobq::FailOutcome::retried);
  clock.advance(1min);
  REQUIRE(fail_once(b, std::nullopt) == jobq::FailOutcome::dead);
  const auto c = store.claim({{"work"}, 1, 60s});
  REQUIRE(c.at(0).id == a);
  REQUIRE(store.complete(a, c[0].lease_token, {}));

  auto t = jobq::throughput_per_minute(store, "work");
  CHECK(t.failed[57] == 1);  // a's failure, counted although a completed since
  CHECK(t.failed[58] == 1);  // b's first failure, whose job is dead now
  CHECK(t.failed[59] == 1);
  CHECK(t.completed[59] == 1);
  CHECK(t.completed == jobq::completions_per_minute(store, "work"));

  // with a sample of 1 per state, only the newest dead and completed job is read
  const auto d = q.enqueue("d", {});
  REQUIRE(fail_once(d, std::nullopt) == jobq::FailOutcome::dead);
  t = jobq::throughput_per_minute(store, "work", 1);
  CHECK(t.failed[58] == 0);  // b, now the older of two dead jobs, is not read
  CHECK(t.failed[59] == 1);  // d
  CHECK(t.failed[57] == 1);  // a, the one completed job

  clock.advance(1min);  // the last full minute holds a's completion: 1 in 5 minutes
  CHECK(jobq::jobs_per_minute(jobq::throughput_per_minute(store, "work").completed) == 0.2);
}
