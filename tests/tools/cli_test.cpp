// The admin CLI, run as a separate process against real stores; each store is also opened in
// this process (open_backend, same URL) to seed jobs and to check what the CLI did.
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <sys/wait.h>

#include <jobq/open.hpp>
#include <jobq/queue.hpp>
#include <jobq/worker.hpp>

#include "flow_tree.hpp"
#include "video_flow.hpp"

namespace {

struct Run {
  int rc = -1;
  std::string out, err;
  nlohmann::json json() const {
    auto j = nlohmann::json::parse(out, nullptr, false);
    INFO("stdout: " << out << "\nstderr: " << err);
    REQUIRE_FALSE(j.is_discarded());
    return j;
  }
};

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string random_suffix() {
  std::random_device rd;
  return std::to_string(rd() % 1'000'000'000);
}

// Runs `jobq args...` with a clean JOBQ_URL; stdout and stderr captured through temp files.
Run jobq_cli(const std::vector<std::string>& args, const std::string& stdin_text = {}) {
  const auto dir = std::filesystem::temp_directory_path();
  const auto tag = random_suffix();
  const auto out = dir / ("jobq-cli-out-" + tag), err = dir / ("jobq-cli-err-" + tag),
             in = dir / ("jobq-cli-in-" + tag);
  std::ofstream(in) << stdin_text;
  std::string cmd = "env -u JOBQ_URL " + quote(JOBQ_CLI_PATH);
  for (const auto& a : args) cmd += " " + quote(a);
  cmd += " <" + quote(in.string()) + " >" + quote(out.string()) + " 2>" + quote(err.string());
  const int status = std::system(cmd.c_str());
  Run r;
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  std::filesystem::remove(in);
  return r;
}

struct Store {
  std::string url;
  std::vector<std::string> options;  // --pg-schema / --redis-prefix for isolation
  jobq::OpenOptions open;

  std::vector<std::string> args(std::vector<std::string> rest) const {
    std::vector<std::string> a{"--url", url};
    a.insert(a.end(), options.begin(), options.end());
    a.insert(a.end(), rest.begin(), rest.end());
    return a;
  }
};

std::string required_env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') {
    FAIL(name << " is not set: run the tests through scripts/test.sh, which starts the server");
  }
  return v;
}

// flow, cancel-flow, and the waiting state in queues, jobs and show.
void exercise_flows(const Store& s, jobq::AnyBackend& b, const std::string& q) {
  const auto mail = q + "-mail";
  jobq::Queue<jobq::AnyBackend> queue{b, q};
  const auto plain = queue.enqueue("plain", {});
  const auto v = enqueue_video_flow(b, q, mail);
  const auto& ids = v.ids;
  const auto first = std::to_string(v.fetch), last = std::to_string(v.notify);

  // the tree, from any member; the same as jobq::cli::flow_tree of the backend's record
  auto r = jobq_cli(s.args({"flow", last}));
  REQUIRE(r.rc == 0);
  CHECK(r.out == jobq::cli::flow_tree(*b.flow(ids.id)));
  CHECK(r.out.starts_with("flow " + first + ": 4 members, 1 queued, 3 waiting\n#" + first + " fetch [" + q + "]"));
  CHECK(r.out.find("   └─ #" + last + " (see above)\n") != std::string::npos);
  r = jobq_cli(s.args({"flow", std::to_string(v.low), "--json"}));
  REQUIRE(r.rc == 0);
  auto j = r.json();
  CHECK(j.at("id") == ids.id);
  REQUIRE(j.at("members").size() == 4);
  CHECK(j["members"][3].at("queue") == mail);
  CHECK(j["members"][3].at("depends_on") == nlohmann::json{v.low, v.high});
  CHECK(j["members"][3].at("flow_id") == ids.id);

  // a job in no flow, and one that does not exist: exit 3, JSON under --json
  r = jobq_cli(s.args({"flow", std::to_string(plain)}));
  CHECK(r.rc == 3);
  CHECK(r.err == "jobq: job " + std::to_string(plain) + " is in no flow\n");
  r = jobq_cli(s.args({"--json", "flow", std::to_string(plain)}));
  CHECK(r.rc == 3);
  CHECK(r.out.empty());
  CHECK(nlohmann::json::parse(r.err) == nlohmann::json{{"error", "job " + std::to_string(plain) + " is in no flow"},
                                                       {"code", 3}});
  CHECK(jobq_cli(s.args({"flow", "987654321"})).rc == 3);

  // waiting in queues, jobs and show
  r = jobq_cli(s.args({"queues", "-q", q, "-q", mail, "--json"}));
  REQUIRE(r.rc == 0);
  CHECK(r.json()[0].at("counts").at("waiting") == 2);
  CHECK(r.json()[1].at("counts").at("waiting") == 1);
  r = jobq_cli(s.args({"queues", "-q", mail}));
  REQUIRE(r.rc == 0);
  CHECK(r.out.find("CANCELLED  WAITING") != std::string::npos);
  r = jobq_cli(s.args({"jobs", q, "--state", "waiting", "--json"}));
  REQUIRE(r.rc == 0);
  REQUIRE(r.json().at("jobs").size() == 2);
  CHECK(r.json()["jobs"][0].at("id") == v.low);
  r = jobq_cli(s.args({"jobs", q, "--state", "waiting"}));
  REQUIRE(r.rc == 0);
  CHECK(r.out.find("transcode-1080  waiting") != std::string::npos);
  r = jobq_cli(s.args({"show", last}));
  REQUIRE(r.rc == 0);
  CHECK(r.out.find("  flow:       " + first + " (jobq flow " + last + ")\n") != std::string::npos);
  CHECK(r.out.find("  after:      " + std::to_string(v.low) + " " + std::to_string(v.high) + "\n") !=
        std::string::npos);

  // cancel takes a waiting job; cancel-flow the rest, then nothing is left
  CHECK(jobq_cli(s.args({"cancel", last})).rc == 0);
  CHECK(b.get(v.notify)->state == jobq::JobState::cancelled);
  r = jobq_cli(s.args({"cancel-flow", std::to_string(v.high), "--json"}));
  REQUIRE(r.rc == 0);
  CHECK(r.json() == nlohmann::json{{"flow", ids.id}, {"cancelled", 3}});
  for (auto id : ids.members) CHECK(b.get(id)->state == jobq::JobState::cancelled);
  r = jobq_cli(s.args({"cancel-flow", first}));
  CHECK(r.rc == 0);
  CHECK(r.out == "cancelled 0 jobs of flow " + first + " (none was queued or waiting)\n");
  r = jobq_cli(s.args({"cancel-flow", std::to_string(plain)}));
  CHECK(r.rc == 3);
  CHECK(r.err.find("is in no flow") != std::string::npos);
  CHECK(b.get(plain)->state == jobq::JobState::queued);
}

// redrive --all and cancel over more jobs than one batch (the CLI sends 500 ids per call).
void exercise_bulk(const Store& s, jobq::AnyBackend& b, const std::string& q) {
  std::vector<jobq::NewJob> jobs(1'200);
  for (auto& j : jobs) {
    j.queue = q;
    j.name = "bulk";
    j.max_attempts = 1;
  }
  b.enqueue_many(jobs);
  for (;;) {
    const auto got = b.claim({{q}, 1000, jobq::Millis{60'000}});
    if (got.empty()) break;
    for (const auto& j : got) REQUIRE(b.fail({j.id, j.lease_token, "boom", std::nullopt}) == jobq::FailOutcome::dead);
  }
  REQUIRE(b.counts(q).dead == 1'200);
  auto r = jobq_cli(s.args({"redrive", "--all", "--queue", q}));
  REQUIRE(r.rc == 0);
  CHECK(r.out == "re-drove 1200 dead jobs of queue " + q + "\n");
  CHECK(r.err.empty());  // no progress when stderr is not a terminal
  CHECK(b.counts(q) == jobq::Counts{.queued = 1'200});

  std::vector<std::string> args{"cancel"};
  std::string want;
  for (const auto& j : b.list(q, jobq::JobState::queued, {0, 600})) {
    args.push_back(std::to_string(j.id));
    want += "cancelled job " + std::to_string(j.id) + "\n";
  }
  REQUIRE(args.size() == 601);
  args.push_back("987654321");
  args.push_back(args[1]);  // a repeat: refused, it is cancelled by then
  r = jobq_cli(s.args(args));
  CHECK(r.rc == 3);
  CHECK(r.out == want);
  CHECK(r.err == "jobq: job 987654321: not found\njobq: job " + args[1] + ": it is cancelled, not queued, waiting or active\n");
  CHECK(b.counts(q) == jobq::Counts{.queued = 600, .cancelled = 600});
  r = jobq_cli(s.args({"cancel", args[1], args[600], "--json"}));
  CHECK(r.rc == 4);
  CHECK(r.json().at("ok").empty());
  CHECK(r.json().at("refused").size() == 2);
}

// workers, and show telling a running job from one leased ahead
void exercise_workers(const Store& s, jobq::AnyBackend& b, const std::string& q) {
  jobq::Queue<jobq::AnyBackend> queue{b, q};
  const auto first = queue.enqueue("block", {}, {.priority = 5});
  const auto second = queue.enqueue("block", {});
  std::atomic<bool> finish{false};
  jobq::Worker w{b, {.queues = {q}, .concurrency = 1, .prefetch = 1, .lease = jobq::Millis{3'000}, .poll_interval = jobq::Millis{10},
                     .log = {jobq::LogLevel::off, {}}}};
  w.handle("block", [&](const nlohmann::json&, jobq::JobContext& ctx) {
    while (!finish && !ctx.stop_requested()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  w.start();
  const auto registered = [&] {
    for (const auto& e : b.workers()) {
      if (e.id == w.id() && e.running.size() == 1 && e.leased.size() == 1) return true;
    }
    return false;
  };
  for (int i = 0; i < 1000 && !registered(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  REQUIRE(registered());

  auto r = jobq_cli(s.args({"workers", "--json"}));
  REQUIRE(r.rc == 0);
  bool found = false;
  for (const auto& e : r.json()) {
    if (e.at("id") != w.id()) continue;
    found = true;
    CHECK(e.at("queues") == nlohmann::json{q});
    CHECK(e.at("running").at(0).at("id") == first);
    CHECK(e.at("leased") == nlohmann::json{second});
  }
  CHECK(found);
  r = jobq_cli(s.args({"workers"}));
  REQUIRE(r.rc == 0);
  CHECK(r.out.starts_with("ID  "));
  CHECK(r.out.find(w.id()) != std::string::npos);

  r = jobq_cli(s.args({"show", std::to_string(first)}));
  REQUIRE(r.rc == 0);
  CHECK(r.out.find("held by:    worker " + w.id()) != std::string::npos);
  CHECK(r.out.find("running since") != std::string::npos);
  r = jobq_cli(s.args({"show", std::to_string(second)}));
  CHECK(r.out.find("leased ahead, not started yet") != std::string::npos);
  r = jobq_cli(s.args({"show", std::to_string(second), "--json"}));
  CHECK(r.json().at("holder").at("running") == false);
  CHECK(r.json().at("holder").at("worker") == w.id());

  finish = true;
  w.stop();
  r = jobq_cli(s.args({"workers", "--json"}));
  REQUIRE(r.rc == 0);
  for (const auto& e : r.json()) CHECK(e.at("id") != w.id());  // gone at a clean stop
}

// enqueue --expire-in: the deadline is stored, shown, and refused when malformed.
void exercise_deadlines(const Store& s, jobq::AnyBackend& b, const std::string& q) {
  auto r = jobq_cli(s.args({"--json", "enqueue", q, "report", "{}", "--expire-in", "10m"}));
  REQUIRE(r.rc == 0);
  const auto id = r.json().at("id").get<jobq::JobId>();
  const auto stored = b.get(id);
  REQUIRE(stored);
  REQUIRE(stored->expires_at);
  const auto left = *stored->expires_at - b.now();
  CHECK(left > std::chrono::minutes(9));
  CHECK(left <= std::chrono::minutes(10));
  r = jobq_cli(s.args({"show", std::to_string(id)}));
  REQUIRE(r.rc == 0);
  CHECK(r.out.find("expires:") != std::string::npos);
  r = jobq_cli(s.args({"show", std::to_string(id), "--json"}));
  CHECK(r.json().at("expires_at") == jobq::to_epoch_ms(*stored->expires_at));
  r = jobq_cli(s.args({"enqueue", q, "report", "{}", "--expire-in", "soon"}));
  CHECK(r.rc == 2);
  r = jobq_cli(s.args({"enqueue", q, "report", "{}", "--delay", "1h", "--expire-in", "1m"}));
  CHECK(r.rc == 2);
  CHECK(r.err.find("before run_at") != std::string::npos);
  CHECK(b.counts(q).queued == 1);  // the refused ones wrote nothing
}

// Every command against one store.
void exercise(const Store& s) {
  auto b = jobq::open_backend(s.url, s.open);
  const std::string q = "cli-" + random_suffix();
  INFO("store " << jobq::mask_url(s.url) << " queue " << q);

  // enqueue from JSON: argument, file on stdin, dedup, invalid JSON
  auto r = jobq_cli(s.args({"--json", "enqueue", q, "send-email", R"({"to":"ada@example.com"})", "--priority", "5"}));
  REQUIRE(r.rc == 0);
  const auto id1 = r.json().at("id").get<jobq::JobId>();
  CHECK(r.json().at("created") == true);
  r = jobq_cli(s.args({"enqueue", q, "send-email", "-f", "-", "--unique-key", "k1"}), R"({"to":"grace@example.com"})");
  REQUIRE(r.rc == 0);
  CHECK(r.out.find("enqueued job") != std::string::npos);
  r = jobq_cli(s.args({"enqueue", q, "send-email", "--unique-key", "k1", "--json"}));
  REQUIRE(r.rc == 0);
  CHECK(r.json().at("created") == false);
  r = jobq_cli(s.args({"enqueue", q, "send-email", "{not json"}));
  CHECK(r.rc == 2);
  CHECK(r.err.find("not valid JSON") != std::string::npos);
  r = jobq_cli(s.args({"enqueue", q, "bad name", "{}"}));
  CHECK(r.rc == 2);
  // 100,000 levels deep (200 KB): refused with a clear error, where it used to crash (SIGSEGV).
  r = jobq_cli(s.args({"enqueue", q, "deep", "-f", "-"}), std::string(100'000, '[') + std::string(100'000, ']'));
  CHECK(r.rc == 2);
  CHECK(r.err.find("nested deeper than 512 levels") != std::string::npos);
  r = jobq_cli(s.args({"enqueue", q, "later", "--delay", "106751991167d"}));
  CHECK(r.rc == 2);
  CHECK(r.err.find("longer than the maximum of 100 years") != std::string::npos);
  r = jobq_cli(s.args({"enqueue", q, "caf\xc3", "{}"}));
  CHECK(r.rc == 2);
  r = jobq_cli(s.args({"enqueue", q, "ok", R"({"s":"caf\u00e9"})", "--unique-key", "caf\xc3"}));
  CHECK(r.rc == 2);
  CHECK(r.err.find("unique key is not valid UTF-8") != std::string::npos);
  r = jobq_cli(s.args({"--json", "enqueue", q, "resize", "{}", "--max-attempts", "1"}));
  REQUIRE(r.rc == 0);
  const auto id3 = r.json().at("id").get<jobq::JobId>();

  auto stored = b.get(id1);
  REQUIRE(stored);
  CHECK(stored->payload == nlohmann::json{{"to", "ada@example.com"}});
  CHECK(stored->priority == 5);

  // one completes, one dies (claim order: priority 5 first, then by id)
  auto claimed = b.claim({{q}, 3, jobq::Millis{60'000}});
  REQUIRE(claimed.size() == 3);
  for (const auto& j : claimed) {
    if (j.id == id1) {
      REQUIRE(b.complete(j.id, j.lease_token, {{"sent", true}}));
    } else if (j.id == id3) {
      REQUIRE(b.fail({j.id, j.lease_token, "storage unavailable", std::nullopt}) == jobq::FailOutcome::dead);
    } else {
      REQUIRE(b.release(j.id, j.lease_token));
    }
  }

  // queues: counts match the backend's
  r = jobq_cli(s.args({"queues", "--queue", q, "--json"}));
  REQUIRE(r.rc == 0);
  auto qs = r.json();
  REQUIRE(qs.size() == 1);
  const auto c = b.counts(q);
  CHECK(qs[0].at("queue") == q);
  CHECK(qs[0].at("counts").at("queued") == c.queued);
  CHECK(qs[0].at("counts").at("completed") == c.completed);
  CHECK(qs[0].at("counts").at("dead") == c.dead);
  CHECK(qs[0].at("counts").at("delayed") == c.delayed);
  CHECK(c.queued == 1);
  CHECK(c.completed == 1);
  CHECK(c.dead == 1);
  CHECK(qs[0].at("completed_last_hour") == 1);
  r = jobq_cli(s.args({"queues", "-q", q}));
  REQUIRE(r.rc == 0);
  CHECK(r.out.find("QUEUE") != std::string::npos);
  CHECK(r.out.find("QUEUED  DELAYED  ACTIVE") != std::string::npos);  // of the queued, those not due yet
  CHECK(r.out.find(q) != std::string::npos);
  r = jobq_cli(s.args({"queues", "--json"}));
  if (b.can_list_queues()) {
    REQUIRE(r.rc == 0);
    bool found = false;
    for (const auto& e : r.json()) found = found || e.at("queue") == q;
    CHECK(found);
  } else {
    CHECK(r.rc == 2);
    CHECK(r.err.find("not supported") != std::string::npos);
  }

  // jobs by state, paged
  r = jobq_cli(s.args({"jobs", q, "--state", "dead", "--json"}));
  REQUIRE(r.rc == 0);
  auto jobs = r.json().at("jobs");
  REQUIRE(jobs.size() == 1);
  CHECK(jobs[0].at("id") == id3);
  r = jobq_cli(s.args({"jobs", q, "--state", "dead"}));
  REQUIRE(r.rc == 0);
  CHECK(r.out.find("storage unavailable") != std::string::npos);
  r = jobq_cli(s.args({"jobs", q, "--state", "completed", "--limit", "1", "--offset", "1", "--json"}));
  REQUIRE(r.rc == 0);
  CHECK(r.json().at("jobs").empty());

  // show
  r = jobq_cli(s.args({"show", std::to_string(id3), "--json"}));
  REQUIRE(r.rc == 0);
  CHECK(r.json().at("state") == "dead");
  CHECK(r.json().at("errors").at(0).at("message") == "storage unavailable");
  r = jobq_cli(s.args({"show", std::to_string(id1)}));
  REQUIRE(r.rc == 0);
  CHECK(r.out.find(R"({"sent":true})") != std::string::npos);
  r = jobq_cli(s.args({"show", "987654321"}));
  CHECK(r.rc == 3);
  CHECK(r.err.find("not found") != std::string::npos);

  // redrive one; a second time is refused
  r = jobq_cli(s.args({"redrive", std::to_string(id3)}));
  CHECK(r.rc == 0);
  CHECK(b.get(id3)->state == jobq::JobState::queued);
  r = jobq_cli(s.args({"redrive", std::to_string(id3)}));
  CHECK(r.rc == 4);
  CHECK(r.err.find("not dead") != std::string::npos);

  // redrive --all: kill both queued jobs first
  for (const auto& j : b.claim({{q}, 5, jobq::Millis{60'000}})) {
    b.fail({j.id, j.lease_token, "boom", std::nullopt});
  }
  REQUIRE(b.counts(q).dead == 2);
  r = jobq_cli(s.args({"redrive", "--all", "--queue", q, "--json"}));
  REQUIRE(r.rc == 0);
  CHECK(r.json().at("redriven").at(q) == 2);
  CHECK(b.counts(q).dead == 0);
  CHECK(b.counts(q).queued == 2);
  CHECK(jobq_cli(s.args({"redrive", "--all"})).rc == 2);

  // cancel
  r = jobq_cli(s.args({"cancel", std::to_string(id3), "987654321"}));
  CHECK(r.rc == 3);
  CHECK(b.get(id3)->state == jobq::JobState::cancelled);
  CHECK(jobq_cli(s.args({"cancel", std::to_string(id1)})).rc == 4);  // completed

  // pause / resume
  CHECK(jobq_cli(s.args({"pause", q})).rc == 0);
  CHECK(b.is_paused(q));
  CHECK(jobq_cli(s.args({"resume", q})).rc == 0);
  CHECK_FALSE(b.is_paused(q));
  // a queue the store does not know is not made by a typo, only on request
  const auto unknown = q + "-typo";
  r = jobq_cli(s.args({"pause", unknown}));
  CHECK(r.rc == 3);
  CHECK(r.err.find("--create") != std::string::npos);
  CHECK_FALSE(b.is_paused(unknown));
  const auto is_listed = [&](const std::string& name) {
    const auto all = b.queues();
    return std::find(all.begin(), all.end(), name) != all.end();
  };
  CHECK_FALSE(is_listed(unknown));
  CHECK(jobq_cli(s.args({"pause", "--create", unknown})).rc == 0);
  CHECK(b.is_paused(unknown));
  CHECK(is_listed(unknown));
  CHECK(jobq_cli(s.args({"resume", unknown})).rc == 0);

  // prune: nothing is old enough by default
  r = jobq_cli(s.args({"prune", q, "--json"}));
  REQUIRE(r.rc == 0);
  CHECK(r.json().at("pruned").at(q) == 0);
  CHECK(jobq_cli(s.args({"prune", q, "--dead", "forever"})).rc == 2);

  // schedules: listed with their next run, removed by name
  const std::string sched = "nightly-" + q;
  jobq::Queue<jobq::AnyBackend>{b, q}.schedule(sched, "0 9 * * 1-5", {.tz = "America/New_York"}, "report", {});
  r = jobq_cli(s.args({"schedules"}));
  REQUIRE(r.rc == 0);
  CHECK(r.out.find(sched) != std::string::npos);
  CHECK(r.out.find("America/New_York") != std::string::npos);
  r = jobq_cli(s.args({"schedules", "--json"}));
  REQUIRE(r.rc == 0);
  bool listed = false;
  for (const auto& e : r.json()) {
    if (e.at("name") == sched) {
      listed = true;
      CHECK(e.at("cron") == "0 9 * * 1-5");
      CHECK(e.at("queue") == q);
      CHECK(e.at("next_run").get<std::int64_t>() > jobq::to_epoch_ms(b.now()));
    }
  }
  CHECK(listed);
  CHECK(jobq_cli(s.args({"unschedule", sched})).rc == 0);
  CHECK(jobq_cli(s.args({"unschedule", sched})).rc == 3);

  // limits: show, set, clear
  r = jobq_cli(s.args({"limits", q, "--rate", "100/1m", "--group-concurrency", "3", "--json"}));
  REQUIRE(r.rc == 0);
  CHECK(b.queue_limits(q) == jobq::QueueLimits{jobq::RateLimit{100, jobq::Millis{60'000}}, 3});
  r = jobq_cli(s.args({"limits", q}));
  REQUIRE(r.rc == 0);
  CHECK(r.out.find("100 per") != std::string::npos);
  CHECK(r.out.find("concurrency unlimited") != std::string::npos);
  r = jobq_cli(s.args({"limits", q, "--concurrency", "4", "--json"}));
  REQUIRE(r.rc == 0);
  CHECK(r.json().at("limits").at("concurrency") == 4);
  CHECK(b.queue_limits(q) == jobq::QueueLimits{jobq::RateLimit{100, jobq::Millis{60'000}}, 3, 4});
  r = jobq_cli(s.args({"limits", q}));
  REQUIRE(r.rc == 0);
  CHECK(r.out.find(", concurrency 4") != std::string::npos);
  CHECK(jobq_cli(s.args({"limits", q, "--concurrency", "-1"})).rc == 2);
  CHECK(jobq_cli(s.args({"limits", q, "--rate", "lots"})).rc == 2);
  CHECK(jobq_cli(s.args({"limits", q, "--group-concurrency", "-5"})).rc == 2);
  CHECK(jobq_cli(s.args({"jobs", q, "--offset", "-1"})).rc == 2);
  CHECK(jobq_cli(s.args({"limits", q, "--rate", "none", "--group-concurrency", "0", "--concurrency", "0"})).rc == 0);
  CHECK(b.queue_limits(q) == jobq::QueueLimits{});

  exercise_flows(s, b, q + "-flow");
  exercise_bulk(s, b, q + "-bulk");
  exercise_workers(s, b, q + "-work");
  exercise_deadlines(s, b, q + "-deadline");
}

}  // namespace

TEST_CASE("jobq CLI on SQLite") {
  const auto path = std::filesystem::temp_directory_path() / ("jobq-cli-" + random_suffix() + ".db");
  struct Cleanup {
    std::filesystem::path p;
    ~Cleanup() {
      for (const char* ext : {"", "-wal", "-shm"}) std::filesystem::remove(p.string() + ext);
    }
  } cleanup{path};
  exercise({"sqlite://" + path.string(), {}, {}});
}

TEST_CASE("jobq CLI on PostgreSQL") {
  const auto url = required_env("JOBQ_TEST_POSTGRES_URL");
  const std::string schema = "jobq_cli_" + random_suffix();
  jobq::OpenOptions o;
  o.postgres_schema = schema;
  exercise({url, {"--pg-schema", schema}, o});
}

TEST_CASE("jobq CLI on Redis") {
  const auto url = required_env("JOBQ_TEST_REDIS_URL");
  const std::string prefix = "jobq-cli-" + random_suffix();
  jobq::OpenOptions o;
  o.redis_prefix = prefix;
  exercise({url, {"--redis-prefix", prefix}, o});
}

// Only enqueue (and pause --create, limits --rate/--group-concurrency) may create a store: any
// other command on a store that is not there fails with exit 3, and finds it still not there.
void no_store_is_created(const Store& s) {
  for (const auto& cmd :
       {std::vector<std::string>{"queues"}, {"queues", "-q", "a"}, {"jobs", "a"}, {"show", "1"}, {"flow", "1"},
        {"schedules"}, {"limits", "a"}, {"cancel", "1"}, {"redrive", "--all", "-q", "a"}, {"pause", "a"},
        {"resume", "a"}, {"prune", "a"}, {"unschedule", "nightly"}}) {
    INFO(cmd.front());
    for (int twice = 0; twice < 2; ++twice) {  // had the first made the store, the second would find it
      const auto r = jobq_cli(s.args(cmd));
      CHECK(r.rc == 3);
      CHECK(r.err.find("no jobq store") != std::string::npos);
      CHECK(r.err.find("nothing was created") != std::string::npos);
    }
  }
  CHECK(jobq_cli(s.args({"enqueue", "a", "hello"})).rc == 0);  // this one creates it
  CHECK(jobq_cli(s.args({"jobs", "a"})).rc == 0);
}

TEST_CASE("jobq CLI: commands that only look at a store never create one") {
  const auto dir = std::filesystem::temp_directory_path() / ("jobq-cli-nostore-" + random_suffix());
  std::filesystem::create_directories(dir);
  struct Cleanup {
    std::filesystem::path p;
    ~Cleanup() { std::filesystem::remove_all(p); }
  } cleanup{dir};

  SECTION("SQLite: a mistyped path") {
    const auto path = dir / "typo.db";
    no_store_is_created({"sqlite://" + path.string(), {}, {}});
  }
  SECTION("SQLite: a database of another program is left as it was") {
    const auto path = dir / "other.db";
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, "CREATE TABLE accounts(id INTEGER PRIMARY KEY)", nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
    const auto before = slurp(path);
    for (const std::string cmd : {"queues", "jobs"}) {
      auto r = jobq_cli({"--url", "sqlite://" + path.string(), cmd, "a"});
      if (cmd == "queues") r = jobq_cli({"--url", "sqlite://" + path.string(), cmd});
      CHECK(r.rc == 3);
      CHECK(r.err.find("holds no jobq tables") != std::string::npos);
    }
    CHECK(slurp(path) == before);  // not even put in WAL mode
    CHECK_FALSE(std::filesystem::exists(path.string() + "-wal"));
  }
  SECTION("PostgreSQL: a mistyped schema") {
    no_store_is_created({required_env("JOBQ_TEST_POSTGRES_URL"), {"--pg-schema", "jobq_typo_" + random_suffix()}, {}});
  }
  SECTION("Redis: a mistyped prefix") {
    no_store_is_created({required_env("JOBQ_TEST_REDIS_URL"), {"--redis-prefix", "jobq-typo-" + random_suffix()}, {}});
  }
}

TEST_CASE("jobq CLI: usage and connection errors") {
  auto r = jobq_cli({"queues", "-q", "a"});
  CHECK(r.rc == 2);
  CHECK(r.err.find("JOBQ_URL") != std::string::npos);
  r = jobq_cli({"--url", "mysql://x/y", "queues", "-q", "a"});
  CHECK(r.rc == 2);
  CHECK(r.err.find("not supported") != std::string::npos);
  r = jobq_cli({"--url", "sqlite:relative.db", "queues", "-q", "a"});
  CHECK(r.rc == 2);
  r = jobq_cli({"--url", "memory://", "frobnicate"});
  CHECK(r.rc == 2);
  r = jobq_cli({"--url", "memory://", "jobs", "q", "--state", "sleeping"});
  CHECK(r.rc == 2);
  r = jobq_cli({"--url", "memory://", "queues", "-q", "bad queue"});
  CHECK(r.rc == 2);
  r = jobq_cli({"--help"});
  CHECK(r.rc == 0);
  CHECK(r.out.find("redrive") != std::string::npos);
  // a refused connection: exit 1, and the password never shows
  r = jobq_cli({"--url", "postgresql://app:s3cret-pw@127.0.0.1:1/app", "queues", "-q", "a"});
  CHECK(r.rc == 1);
  CHECK(r.err.find("s3cret-pw") == std::string::npos);
  CHECK(r.out.find("s3cret-pw") == std::string::npos);
  r = jobq_cli({"--url", "redis://:s3cret-pw@127.0.0.1:1/0", "queues", "-q", "a"});
  CHECK(r.rc == 1);
  CHECK(r.err.find("s3cret-pw") == std::string::npos);
  // malformed URLs (issue 23): no piece of the password shows, wherever a parser cuts it
  for (const std::string url :
       {"postgresql://u:S3CRETpw@[::1/db", "postgresql://u:S3CRETpw@[]:5432", "postgresql://u:S3CRETpw@[::1]x",
        "postgresql://u:S3CRET%zzpw@127.0.0.1:1/db", "postgresql://u:S3CRET%00pw@127.0.0.1:1/db",
        "postgresql://u:S3CRET/pw@127.0.0.1:1/db", "postgresql://u:S3CRET@pw@127.0.0.1:1/db",
        "redis://u:S3CRET/pw@127.0.0.1:1/0", "redis://u:S3CRET/pw@127.0.0.1:x/0", "rediss://u:S3CRET/pw@h/0"}) {
    INFO(url);
    r = jobq_cli({"--url", url, "queues", "-q", "a"});
    INFO(r.err);
    CHECK(r.rc != 0);
    CHECK(r.err.find("S3CRET") == std::string::npos);
    CHECK(r.out.find("S3CRET") == std::string::npos);
  }
}

TEST_CASE("jobq CLI: --version") {
  const auto r = jobq_cli({"--version"});
  CHECK(r.rc == 0);
  CHECK(r.out == "jobq " JOBQ_EXPECTED_VERSION "\n");
}

TEST_CASE("jobq CLI: errors under --json are JSON on stderr") {
  // stderr holds one object whose code is the exit code; stdout stays empty
  const auto json_error = [](const Run& r) {
    INFO("stdout: " << r.out << "\nstderr: " << r.err);
    const auto j = nlohmann::json::parse(r.err, nullptr, false);
    REQUIRE(j.is_object());
    CHECK(j.at("code") == r.rc);
    CHECK(r.out.empty());
    return j.at("error").get<std::string>();
  };
  auto r = jobq_cli({"--json", "queues", "-q", "a"});
  CHECK(r.rc == 2);
  CHECK(json_error(r).find("JOBQ_URL") != std::string::npos);
  r = jobq_cli({"--url", "memory://", "frobnicate", "--json"});
  CHECK(r.rc == 2);
  json_error(r);
  r = jobq_cli({"--url", "memory://", "--json", "jobs", "q", "--state", "sleeping"});
  CHECK(r.rc == 2);
  CHECK(json_error(r).find("sleeping") != std::string::npos);
  r = jobq_cli({"--url", "memory://", "--json", "queues", "-q", "bad queue"});
  CHECK(r.rc == 2);
  json_error(r);
  r = jobq_cli({"--url", "memory://", "show", "42", "--json"});
  CHECK(r.rc == 3);
  CHECK(json_error(r) == "job 42 not found");
  r = jobq_cli({"--url", "memory://", "flow", "42", "--json"});
  CHECK(r.rc == 3);
  CHECK(json_error(r) == "job 42 not found");
  r = jobq_cli({"--url", "memory://", "cancel-flow", "42", "--json"});
  CHECK(r.rc == 3);
  CHECK(json_error(r) == "job 42 not found");
  r = jobq_cli({"--json", "--url", "postgresql://app:s3cret-pw@127.0.0.1:1/app", "queues", "-q", "a"});
  CHECK(r.rc == 1);
  CHECK(json_error(r).find("s3cret-pw") == std::string::npos);
  // refusals of redrive/cancel are in stdout's "refused", not repeated on stderr
  r = jobq_cli({"--url", "memory://", "--json", "cancel", "42"});
  CHECK(r.rc == 3);
  CHECK(r.err.empty());
  CHECK(r.json().at("refused").at(0).at("id") == 42);
  // without --json, errors stay prose
  r = jobq_cli({"--url", "memory://", "show", "42"});
  CHECK(r.rc == 3);
  CHECK(r.err == "jobq: job 42 not found\n");
}
