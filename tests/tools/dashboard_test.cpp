// The dashboard in a real headless Chromium (Debian chromium + chromium-driver, driven over
// the WebDriver protocol): the page is loaded from a live HttpServer over a SQLite store, the
// numbers it shows are checked against the admin CLI's view of the same file, and clicking
// "re-drive" / "cancel" moves the jobs; the workers page follows worker processes (one killed).
// Then the JSON API's paging of the job lists.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include <jobq/http.hpp>
#include <jobq/memory.hpp>
#include <jobq/open.hpp>
#include <jobq/worker.hpp>

#include "video_flow.hpp"

extern char** environ;

namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

std::string random_suffix() {
  std::random_device rd;
  return std::to_string(rd() % 1'000'000'000);
}

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// The admin CLI's JSON answer (an independent reader of the same store).
json cli_json(const std::vector<std::string>& args) {
  const auto out = std::filesystem::temp_directory_path() / ("jobq-dash-cli-" + random_suffix());
  std::string cmd = quote(JOBQ_CLI_PATH);
  for (const auto& a : args) cmd += " " + quote(a);
  cmd += " >" + quote(out.string());
  const int status = std::system(cmd.c_str());
  const auto text = slurp(out);
  std::filesystem::remove(out);
  INFO(cmd << "\n" << text);
  REQUIRE((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  return json::parse(text);
}

// A SQLite file in the temp directory, removed with its -wal and -shm files at the end of the scope.
struct TempDb {
  std::filesystem::path path;
  explicit TempDb(const std::string& stem)
      : path(std::filesystem::temp_directory_path() / (stem + "-" + random_suffix() + ".db")) {}
  TempDb(const TempDb&) = delete;
  TempDb& operator=(const TempDb&) = delete;
  ~TempDb() {
    for (const char* ext : {"", "-wal", "-shm"}) std::filesystem::remove(path.string() + ext);
  }
  [[nodiscard]] std::string url() const { return "sqlite://" + path.string(); }
};

// GET `path`, expecting `status`; the JSON answer.
json get_json(httplib::Client& http, const std::string& path, int status = 200) {
  auto r = http.Get(path.c_str());
  REQUIRE(r);
  INFO(path << ": " << r->body);
  REQUIRE(r->status == status);
  return json::parse(r->body);
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

std::string base64_decode(const std::string& in) {
  std::string out;
  unsigned bits = 0;
  int have = 0;
  for (const char c : in) {
    int v = -1;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '+') v = 62;
    else if (c == '/') v = 63;
    if (v < 0) continue;  // '=' padding, line breaks
    bits = (bits << 6) | static_cast<unsigned>(v);
    if ((have += 6) >= 8) {
      have -= 8;
      out += static_cast<char>((bits >> have) & 0xff);
    }
  }
  return out;
}

// chromedriver as a child process, and one WebDriver session on headless Chromium.
class Browser {
 public:
  Browser() {
    const std::string chromium = JOBQ_CHROMIUM_PATH, driver = JOBQ_CHROMEDRIVER_PATH;
    if (chromium.empty() || driver.empty() || !std::filesystem::exists(chromium) || !std::filesystem::exists(driver)) {
      FAIL("chromium and chromedriver are required (Debian: apt-get install chromium chromium-driver); "
           "found chromium='" << chromium << "' chromedriver='" << driver << "'");
    }
    port_ = free_port();
    const std::string port_arg = "--port=" + std::to_string(port_);
    std::vector<char*> argv{const_cast<char*>(driver.c_str()), const_cast<char*>(port_arg.c_str()), nullptr};
    REQUIRE(posix_spawn(&pid_, driver.c_str(), nullptr, nullptr, argv.data(), environ) == 0);
    client_ = std::make_unique<httplib::Client>("127.0.0.1", port_);
    client_->set_read_timeout(60, 0);
    for (int i = 0; i < 200; ++i) {
      if (auto r = client_->Get("/status"); r && r->status == 200) break;
      std::this_thread::sleep_for(50ms);
    }
    profile_ = std::filesystem::temp_directory_path() / ("jobq-chromium-" + random_suffix());
    const json caps = {
        {"capabilities",
         {{"alwaysMatch",
           {{"browserName", "chrome"},
            {"goog:chromeOptions",
             {{"binary", chromium},
              {"args",
               {"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--user-data-dir=" + profile_.string()}}}}}}}}};
    const auto r = call("POST", "/session", caps);
    session_ = r.at("sessionId").get<std::string>();
  }

  ~Browser() {
    if (!session_.empty()) client_->Delete(("/session/" + session_).c_str());
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int st = 0;
      ::waitpid(pid_, &st, 0);
    }
    std::error_code ec;
    std::filesystem::remove_all(profile_, ec);
  }

  void go(const std::string& url) { call("POST", path("/url"), {{"url", url}}); }

  json script(const std::string& js) {
    return call("POST", path("/execute/sync"), {{"script", js}, {"args", json::array()}});
  }

  // Polls a JS expression until it is truthy.
  json wait_for(const std::string& expr, std::chrono::milliseconds limit = 15s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    for (;;) {
      auto v = script("return (" + expr + ");");
      if (!v.is_null() && v != false && v != 0 && v != "") return v;
      if (std::chrono::steady_clock::now() > deadline) FAIL("timed out waiting for: " << expr);
      std::this_thread::sleep_for(100ms);
    }
  }

  // The viewport size, through the window's (headless Chromium has no window decorations).
  void resize(int width, int height) {
    call("POST", path("/window/rect"), {{"width", width}, {"height", height}});
    const auto inner = script("return [window.innerWidth, window.innerHeight];");
    call("POST", path("/window/rect"), {{"width", 2 * width - inner[0].get<int>()},
                                        {"height", 2 * height - inner[1].get<int>()}});
  }

  // The visible part of the page as a PNG file (WebDriver answers it in base64).
  void screenshot(const std::filesystem::path& file) {
    const auto png = base64_decode(call("GET", path("/screenshot"), json()).get<std::string>());
    std::ofstream(file, std::ios::binary).write(png.data(), static_cast<std::streamsize>(png.size()));
  }

  // A real (WebDriver) click on the element matching a CSS selector.
  void click(const std::string& css) {
    const auto e = call("POST", path("/element"), {{"using", "css selector"}, {"value", css}});
    const auto id = e.at("element-6066-11e4-a52e-4f735466cecf").get<std::string>();
    call("POST", path("/element/" + id + "/click"), json::object());
  }

 private:
  std::string path(const std::string& rest) const { return "/session/" + session_ + rest; }

  json call(const std::string& method, const std::string& p, const json& body) {
    auto r = method == "POST" ? client_->Post(p.c_str(), body.dump(), "application/json") : client_->Get(p.c_str());
    INFO(method << " " << p);
    REQUIRE(r);
    const auto j = json::parse(r->body, nullptr, false);
    INFO("status " << r->status << ": " << r->body.substr(0, 2000));
    REQUIRE(r->status == 200);
    REQUIRE_FALSE(j.is_discarded());
    return j.at("value");
  }

  int port_ = 0;
  pid_t pid_ = -1;
  std::unique_ptr<httplib::Client> client_;
  std::string session_;
  std::filesystem::path profile_;
};

}  // namespace

namespace {

std::string required_env(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) FAIL(name << " is not set (the test servers: source /tmp/srv/env or CI's services)");
  return v;
}

// /api/queues' per-queue history on one store whose clock the test moves: completions and failed
// attempts per minute read from the store (no worker of this process ran), jobs/min over the
// last five full minutes, and the depth that the server samples (at start, then at most every
// 10 s on request; its own thread is kept out by a depth_interval of an hour).
void check_queue_history(jobq::AnyBackend& store, jobq::ManualClock& clock, const std::string& q) {
  jobq::Queue work{store, q};
  for (int i = 0; i < 8; ++i) work.enqueue("work", {{"n", i}}, {.max_attempts = 2});
  auto c = store.claim({{q}, 5, 60s});
  REQUIRE(c.size() == 5);
  for (int i = 0; i < 3; ++i) REQUIRE(store.complete(c[i].id, c[i].lease_token, {}));
  REQUIRE(store.fail({c[3].id, c[3].lease_token, "timeout", store.now() + 1h}) == jobq::FailOutcome::retried);
  REQUIRE(store.fail({c[4].id, c[4].lease_token, "broken", std::nullopt}) == jobq::FailOutcome::dead);
  // the same unique key in two queues: search finds both
  jobq::Queue other{store, q + "-other"};
  const auto held_a = work.enqueue("work", {}, {.delay = 1h, .unique_key = "report:7"});
  const auto held_b = other.enqueue("work", {}, {.unique_key = "report:7"});

  jobq::Metrics metrics;
  jobq::HttpServer server{store, metrics, {.port = 0, .queues = {q, q + "-other"}, .depth_interval = 1h}};
  server.start();
  httplib::Client http("127.0.0.1", server.port());
  const auto get = [&](const std::string& path, int status = 200) { return get_json(http, path, status); };
  const auto queue = [&] { return get("/api/queues").at("queues").at(0); };
  const auto total = [](const json& series) {
    long n = 0;
    for (const auto& v : series) n += v.get<long>();
    return n;
  };

  auto j = queue();
  REQUIRE(j.at("queue") == q);
  REQUIRE(j.at("completed_per_minute").size() == 60);
  CHECK(j["completed_per_minute"][59] == 3);
  CHECK(total(j["completed_per_minute"]) == 3);
  REQUIRE(j.at("failed_per_minute").size() == 60);
  CHECK(j["failed_per_minute"][59] == 2);  // the retried attempt and the dead one
  CHECK(total(j["failed_per_minute"]) == 2);
  CHECK(j.at("jobs_per_minute") == 0.0);  // the current minute is not a full one
  REQUIRE(j.at("depth_per_minute").size() == 60);
  CHECK(j["depth_per_minute"][59] == 5);  // 3 never claimed, the retrying one, the delayed one
  CHECK(j["depth_per_minute"][58].is_null());  // before the server started

  clock.advance(1min);  // the minute is a full one now; the depth is sampled again
  j = queue();
  CHECK(j["completed_per_minute"][58] == 3);
  CHECK(j["failed_per_minute"][58] == 2);
  CHECK(j.at("jobs_per_minute") == 0.6);
  CHECK(j["depth_per_minute"][58] == 5);
  CHECK(j["depth_per_minute"][59] == 5);
  work.enqueue("work", {});
  work.enqueue("work", {});
  CHECK(queue()["depth_per_minute"][59] == 5);  // sampled less than 10 s ago
  clock.advance(10s);
  CHECK(queue()["depth_per_minute"][59] == 7);

  clock.advance(2h);  // all of it out of the last hour
  j = queue();
  CHECK(total(j["completed_per_minute"]) == 0);
  CHECK(total(j["failed_per_minute"]) == 0);
  CHECK(j["depth_per_minute"][58].is_null());
  CHECK(j["depth_per_minute"][59] == 7);

  auto found = get("/api/search?q=report:7").at("jobs");
  REQUIRE(found.size() == 2);
  CHECK(found[0].at("id") == held_a);
  CHECK(found[1].at("id") == held_b);
  found = get("/api/search?q=" + std::to_string(held_b)).at("jobs");
  REQUIRE(found.size() == 1);
  CHECK(found[0].at("queue") == q + "-other");
  server.stop();
}

// /api/queues' per-minute completions and failures are read from the store at most once per
// throughput_refresh (10 s) of its clock, and again in a new minute; the counts never wait.
void check_throughput_cache(jobq::AnyBackend& store, jobq::ManualClock& clock, const std::string& q) {
  jobq::Queue work{store, q};
  const auto finish = [&](int n) {
    for (int i = 0; i < n; ++i) work.enqueue("work", {});
    auto c = store.claim({{q}, static_cast<std::size_t>(n), 60s});
    REQUIRE(c.size() == static_cast<std::size_t>(n));
    for (const auto& j : c) REQUIRE(store.complete(j.id, j.lease_token, {}));
  };
  finish(2);
  clock.advance(45s);

  jobq::Metrics metrics;
  jobq::HttpServer server{store, metrics, {.port = 0, .queues = {q}, .depth_interval = 1h}};
  REQUIRE(server.options().throughput_refresh == 10s);
  jobq::HttpServer uncached{store, metrics, {.port = 0, .queues = {q}, .depth_interval = 1h, .throughput_refresh = 0s}};
  server.start();
  uncached.start();
  httplib::Client http("127.0.0.1", server.port());
  httplib::Client http_uncached("127.0.0.1", uncached.port());
  const auto queue = [&](httplib::Client& c) { return get_json(c, "/api/queues").at("queues").at(0); };

  auto j = queue(http);  // :45, computed
  CHECK(j["completed_per_minute"][59] == 2);
  finish(3);
  clock.advance(9s);
  j = queue(http);  // :54
  CHECK(j["completed_per_minute"][59] == 2);  // computed 9 s ago
  CHECK(j["counts"]["completed"] == 5);       // read on each request
  CHECK(queue(http_uncached)["completed_per_minute"][59] == 5);
  clock.advance(1s);
  CHECK(queue(http)["completed_per_minute"][59] == 5);  // :55, 10 s: computed again
  finish(1);
  clock.advance(4s);
  CHECK(queue(http)["completed_per_minute"][59] == 5);  // :59
  clock.advance(2s);  // 6 s later, but the series of the last minute would be one minute off
  j = queue(http);
  CHECK(j["completed_per_minute"][58] == 6);
  CHECK(j["completed_per_minute"][59] == 0);
  server.stop();
  uncached.stop();
  CHECK_THROWS_AS((jobq::HttpServer{store, metrics, {.port = 0, .throughput_refresh = -1s}}), jobq::InvalidArgument);
}

// Runs check(url, options) for a fresh store of each backend (a SECTION each), based on `o`;
// the memory one only if `with_memory` (it cannot be shared with another process).
template <class F>
void on_every_store(jobq::OpenOptions o, const std::string& sqlite_stem, bool with_memory, F&& check) {
  if (with_memory) {
    SECTION("memory") { check(std::string("memory://"), o); }
  }
  SECTION("sqlite") {
    const TempDb db{sqlite_stem};
    check(db.url(), o);
  }
  SECTION("postgres") {
    o.postgres_schema = "jobq_dash_" + random_suffix();
    check(required_env("JOBQ_TEST_POSTGRES_URL"), o);
  }
  SECTION("redis") {
    o.redis_prefix = "jobq-dash-" + random_suffix();
    check(required_env("JOBQ_TEST_REDIS_URL"), o);
  }
}

// Runs check on a fresh store of each backend (a SECTION each), opened with `o`.
template <class F>
void on_every_backend(jobq::OpenOptions o, const std::string& sqlite_stem, F&& check) {
  on_every_store(std::move(o), sqlite_stem, true, [&](const std::string& url, const jobq::OpenOptions& opened) {
    auto store = jobq::open_backend(url, opened);
    check(store);
  });
}

// A worker process on the store at `url`: forked while this process has no other thread, it
// runs one jobq::Worker (one handler thread, nothing leased ahead, a 1 s heartbeat, so its
// registry entry goes 3 s after the last one) whose "hold" handler runs until the process is
// killed.
pid_t fork_worker(const std::string& url, const jobq::OpenOptions& o, const std::string& queue) {
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    try {
      auto store = jobq::open_backend(url, o);
      jobq::Worker worker{store, {.queues = {queue}, .concurrency = 1, .prefetch = 0, .lease = 3s,
                                  .heartbeat_interval = 1s, .poll_interval = 200ms, .retention = std::nullopt}};
      worker.handle("hold", [](const json&, jobq::JobContext&) {
        for (;;) std::this_thread::sleep_for(1s);
      });
      worker.start();
      for (;;) ::pause();
    } catch (...) {
    }
    ::_exit(1);
  }
  return pid;
}

// Child processes SIGKILLed and reaped at the end of the scope (or earlier, one by one).
struct Children {
  std::vector<pid_t> pids;
  Children() = default;
  Children(const Children&) = delete;
  Children& operator=(const Children&) = delete;
  ~Children() {
    for (const pid_t p : pids) kill(p);
  }
  static void kill(pid_t p) {
    ::kill(p, SIGKILL);
    int st = 0;
    ::waitpid(p, &st, 0);
  }
};

// The workers page (#/workers) over two worker processes on one store: a row each with the job
// it runs (a link to the job's page); the one SIGKILLed leaves the page once its registry
// entry expires, the other stays.
void check_workers_page(const std::string& url, const jobq::OpenOptions& o) {
  const auto q = "held-" + random_suffix();
  std::vector<jobq::JobId> jobs;
  {
    auto store = jobq::open_backend(url, o);  // made here, and closed before the fork
    jobq::Queue held{store, q};
    for (int i = 0; i < 2; ++i) jobs.push_back(held.enqueue("hold", {{"n", i}}));
  }
  Children children;
  for (int i = 0; i < 2; ++i) children.pids.push_back(fork_worker(url, o, q));

  auto store = jobq::open_backend(url, o);
  jobq::Metrics metrics;
  jobq::HttpServer server{store, metrics, {.port = 0, .queues = {q}}};
  server.start();
  Browser browser;
  browser.go("http://127.0.0.1:" + std::to_string(server.port()) + "/#/workers");
  const auto rows = [&] {
    return browser.script(R"JS(
      return [...document.querySelectorAll("#workers tbody tr")].map(tr => {
        const f = name => tr.querySelector('[data-field="' + name + '"]').textContent;
        return { id: tr.dataset.worker, pid: Number(f("pid")), host: f("host"), queues: f("queues"),
                 concurrency: f("concurrency"), leased: f("leased"), age: f("heartbeat-age"),
                 jobs: [...tr.querySelectorAll('[data-field="running"] a')].map(a => a.getAttribute("href")) };
      }).sort((a, b) => a.pid - b.pid);)JS");
  };
  // both running their job (each worker claims one: one thread, no prefetch)
  browser.wait_for(R"(!document.getElementById("view-workers").hidden && document.getElementById("view-overview").hidden &&
                      [...document.querySelectorAll('#workers td[data-field="running"] a')].length === 2)", 30s);
  auto shown = rows();
  REQUIRE(shown.size() == 2);
  auto pids = children.pids;
  std::sort(pids.begin(), pids.end());  // as the rows are
  std::vector<std::string> links;
  for (std::size_t i = 0; i < 2; ++i) {
    INFO(shown.dump());
    CHECK(shown[i]["pid"] == pids[i]);
    CHECK(shown[i]["id"].get<std::string>().find(":" + std::to_string(pids[i]) + ":") != std::string::npos);
    CHECK(shown[i]["queues"] == q);
    CHECK(shown[i]["concurrency"] == "1");
    CHECK(shown[i]["leased"] == "");
    CHECK(shown[i]["age"].get<std::string>().ends_with("s"));
    REQUIRE(shown[i]["jobs"].size() == 1);
    links.push_back(shown[i]["jobs"][0].get<std::string>());
  }
  std::sort(links.begin(), links.end());
  CHECK(links == std::vector<std::string>{"#/job/" + std::to_string(jobs[0]), "#/job/" + std::to_string(jobs[1])});

  // one killed: its entry expires (3 s) and the page's next refresh drops its row
  const pid_t killed = children.pids[0], alive = children.pids[1];
  Children::kill(killed);
  children.pids.erase(children.pids.begin());
  browser.wait_for(R"(document.querySelectorAll("#workers tbody tr").length === 1)", 30s);
  shown = rows();
  REQUIRE(shown.size() == 1);
  CHECK(shown[0]["pid"] == alive);
  CHECK(shown[0]["jobs"].size() == 1);
  CHECK(store.workers().size() == 1);
  server.stop();
}

}  // namespace

TEST_CASE("dashboard API: completed, failed and depth per minute, and search across queues, on every backend") {
  jobq::ManualClock clock;
  jobq::OpenOptions o;
  o.clock = clock.fn();
  const auto q = "charts-" + random_suffix();
  on_every_backend(o, "jobq-dash-charts", [&](jobq::AnyBackend& store) { check_queue_history(store, clock, q); });
}

TEST_CASE("dashboard in headless Chromium: numbers match the store, re-drive, cancel and pause work") {
  const TempDb db{"jobq-dashboard"};
  const auto url = db.url();
  auto store = jobq::open_backend(url);

  // emails: 3 completed, 2 dead, 1 failing (retry in an hour), 2 waiting; images: 1 dead
  jobq::Queue emails{store, "emails"};
  jobq::Queue images{store, "images"};
  for (int i = 0; i < 6; ++i) emails.enqueue("send-email", {{"to", "user" + std::to_string(i) + "@example.com"}});
  auto claimed = store.claim({{"emails"}, 6, 60s});
  REQUIRE(claimed.size() == 6);
  for (int i = 0; i < 3; ++i) REQUIRE(store.complete(claimed[i].id, claimed[i].lease_token, {{"sent", true}}));
  for (int i = 3; i < 5; ++i) {
    REQUIRE(store.fail({claimed[i].id, claimed[i].lease_token, "smtp: connection refused", std::nullopt}) ==
            jobq::FailOutcome::dead);
  }
  const auto retrying = claimed[5].id;
  REQUIRE(store.fail({retrying, claimed[5].lease_token, "smtp: timeout", store.now() + 1h}) ==
          jobq::FailOutcome::retried);
  emails.enqueue("send-email", {{"to", "late@example.com"}});
  emails.enqueue("send-email", {{"to", "later@example.com"}});
  images.enqueue("resize", {{"path", "cat.png"}});
  auto img = store.claim({{"images"}, 1, 60s});
  REQUIRE(store.fail({img.at(0).id, img.at(0).lease_token, "decoder crashed", std::nullopt}) == jobq::FailOutcome::dead);
  const auto dead_email = claimed[3].id;
  // a worker of another process, as the registry holds it
  const jobq::WorkerInfo worker{.id = "web-1:4242:1-abc", .host = "web-1", .pid = 4242, .queues = {"emails"},
                                .concurrency = 4, .started_at = store.now() - 5min, .heartbeat_at = store.now(),
                                .expires_at = store.now() + 1h, .running = {{claimed[0].id, store.now() - 30s}},
                                .leased = {7, 8}};
  store.register_worker(worker);

  jobq::Metrics metrics;
  jobq::HttpServer server{store, metrics, {.port = 0, .queues = {"emails", "images"}}};
  server.start();
  const auto base = "http://127.0.0.1:" + std::to_string(server.port());

  Browser browser;
  browser.go(base + "/");
  browser.wait_for("Number(document.body.dataset.loaded) >= 1");

  // the numbers shown are the store's, as the CLI reads them from the file
  const auto shown = browser.script(R"(
    const out = {};
    for (const tr of document.querySelectorAll("#queues tbody tr")) {
      const q = {};
      for (const td of tr.querySelectorAll("td[data-field]")) q[td.dataset.field] = td.textContent;
      out[tr.dataset.queue] = q;
    }
    return out;)");
  const auto cli = cli_json({"--url", url, "--json", "queues", "-q", "emails", "-q", "images"});
  REQUIRE(cli.size() == 2);
  for (const auto& q : cli) {
    const auto name = q.at("queue").get<std::string>();
    INFO("queue " << name << " shown " << shown.dump());
    REQUIRE(shown.contains(name));
    for (const char* state : {"queued", "active", "completed", "dead", "cancelled", "waiting"}) {
      CHECK(shown[name][state] == std::to_string(q.at("counts").at(state).get<long>()));
    }
    CHECK(shown[name]["delayed"] == std::to_string(q.at("counts").at("delayed").get<long>()));
    CHECK(shown[name]["hour"] == std::to_string(q.at("completed_last_hour").get<long>()));
    CHECK(shown[name]["paused"] == "running");
  }
  CHECK(shown["emails"]["dead"] == "2");
  CHECK(shown["emails"]["queued"] == "3");
  CHECK(shown["emails"]["delayed"] == "1");  // the retry in an hour
  CHECK(shown["images"]["dead"] == "1");

  // the live workers in short, linked to their page
  CHECK(browser.script("return document.getElementById('workers-summary').textContent;") ==
        "1 live worker: 1 running, 2 leased ahead, 4 handler threads");
  CHECK(browser.script("return document.querySelector('#workers-summary a').getAttribute('href');") == "#/workers");

  // per queue: jobs/min, completed and failed attempts of the last hour, and the depth sampled
  const auto spark = [&](const std::string& queue, const std::string& svg, const std::string& attr) {
    return browser.script("return document.querySelector('#queues tr[data-queue=\"" + queue + "\"] svg." + svg +
                          "').getAttribute('" + attr + "');");
  };
  CHECK(shown["emails"]["rate"] == "0.0");  // all of it in the current minute
  CHECK(spark("emails", "spark-throughput", "data-completed") == "3");
  CHECK(spark("emails", "spark-throughput", "data-failed") == "3");  // 2 dead, 1 retried
  CHECK(spark("images", "spark-throughput", "data-failed") == "1");
  CHECK(spark("emails", "spark-depth", "data-last") == "3");
  CHECK(browser.script(R"(return document.querySelectorAll('#queues tr[data-queue="emails"] svg.spark-throughput rect.fail').length;)") == 1);

  // throughput chart: 60 one-minute bars, the 3 completions in the last one
  CHECK(browser.script(R"(return document.querySelectorAll("#chart rect").length;)") == 60);
  CHECK(browser.script(R"(return document.getElementById("chart").getAttribute("data-total");)") == "3");

  // failed and dead jobs with their errors
  CHECK(browser.script(R"(return document.querySelectorAll("#dead-jobs tbody tr").length;)") == 3);
  const auto dead_text = browser.script(R"(return document.getElementById("dead-jobs").textContent;)").get<std::string>();
  CHECK(dead_text.find("smtp: connection refused") != std::string::npos);
  CHECK(dead_text.find("decoder crashed") != std::string::npos);
  const auto retry_text =
      browser.script(R"(return document.getElementById("retrying-jobs").textContent;)").get<std::string>();
  CHECK(retry_text.find("smtp: timeout") != std::string::npos);

  // re-drive one dead job by clicking its button: it leaves the dead list and is queued again
  browser.click("#dead-jobs tr[data-job-id=\"" + std::to_string(dead_email) + "\"] button.redrive");
  browser.wait_for(R"(!document.querySelector('#dead-jobs tr[data-job-id=")" + std::to_string(dead_email) +
                   R"("]') && document.querySelector('#queues tr[data-queue="emails"] td[data-field="dead"]').textContent === "1")");
  CHECK(browser.script(R"(return document.querySelector('#queues tr[data-queue="emails"] td[data-field="queued"]').textContent;)") ==
        "4");
  auto job = cli_json({"--url", url, "--json", "show", std::to_string(dead_email)});
  CHECK(job.at("state") == "queued");
  CHECK(job.at("attempts") == 0);
  CHECK(job.at("errors").size() == 1);  // kept

  // cancel the failing job
  browser.click("#retrying-jobs tr[data-job-id=\"" + std::to_string(retrying) + "\"] button.cancel");
  browser.wait_for(R"(document.querySelector('#queues tr[data-queue="emails"] td[data-field="cancelled"]').textContent === "1")");
  CHECK(cli_json({"--url", url, "--json", "show", std::to_string(retrying)}).at("state") == "cancelled");

  // pause from the page
  browser.click(R"(#queues tr[data-queue="images"] button.pause)");
  browser.wait_for(R"(document.querySelector('#queues tr[data-queue="images"] td[data-field="paused"]').textContent === "paused")");
  CHECK(store.is_paused("images"));

  // the metrics endpoint agrees; actions need the header
  httplib::Client http("127.0.0.1", server.port());
  auto r = http.Get("/metrics");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body.find("jobq_jobs{queue=\"emails\",state=\"dead\"} 1\n") != std::string::npos);
  CHECK(r->body.find("jobq_queue_paused{queue=\"images\"} 1\n") != std::string::npos);
  r = http.Post(("/api/jobs/" + std::to_string(img.at(0).id) + "/redrive").c_str(), "", "text/plain");
  REQUIRE(r);
  CHECK(r->status == 403);
  CHECK(store.get(img.at(0).id)->state == jobq::JobState::dead);
  r = http.Get("/api/jobs/987654321");
  REQUIRE(r);
  CHECK(r->status == 404);

  // a list cut at 50 says how many more; an error of several lines keeps its line breaks
  store.resume("images");
  for (int i = 0; i < 50; ++i) images.enqueue("resize", {{"path", "dog" + std::to_string(i) + ".png"}});
  const auto batch = store.claim({{"images"}, 50, 60s});
  REQUIRE(batch.size() == 50);
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const std::string error = i == 0 ? "decode failed\n  at frame 3\n  <b>not markup</b>" : "decoder crashed";
    REQUIRE(store.fail({batch[i].id, batch[i].lease_token, error, std::nullopt}) == jobq::FailOutcome::dead);
  }
  browser.wait_for(R"(document.getElementById("dead-more").textContent.includes("1 more in images"))");
  const auto multi = browser.script("return document.querySelector('#dead-jobs tr[data-job-id=\"" +
                                    std::to_string(batch[0].id) + "\"] td.err').innerText;");
  CHECK(multi == "decode failed\n  at frame 3\n  <b>not markup</b>");
  CHECK(browser.script(R"(return document.getElementById("retrying-more").textContent;)") == "");

  // the workers page: what each runs (for how long) and holds, linked to the jobs' pages
  browser.click("#workers-summary a");
  browser.wait_for(R"(!document.getElementById("view-workers").hidden && document.querySelector("#workers tbody tr"))");
  const auto workers = browser.script(R"(
    return [...document.querySelectorAll("#workers tbody tr")].map(tr => ({ id: tr.dataset.worker,
      running: tr.querySelector('[data-field="running"]').textContent,
      leased: tr.querySelector('[data-field="leased"]').textContent,
      links: [...tr.querySelectorAll("a")].map(a => a.getAttribute("href")) }));)");
  REQUIRE(workers.size() == 1);
  CHECK(workers[0]["id"] == worker.id);
  CHECK(workers[0]["running"].get<std::string>().starts_with(std::to_string(claimed[0].id) + " ("));
  CHECK(workers[0]["leased"] == "7, 8");
  CHECK(workers[0]["links"] == json{"#/queue/emails", "#/job/" + std::to_string(claimed[0].id), "#/job/7", "#/job/8"});
  server.stop();
}

TEST_CASE("dashboard workers page: two worker processes; the one killed leaves when its heartbeat expires") {
  on_every_store({}, "jobq-dash-workers", false, check_workers_page);
}

TEST_CASE("dashboard API: retrying jobs behind many delayed ones are listed; lists say when there is more") {
  jobq::ManualClock clock;
  jobq::MemoryBackend store{{clock.fn()}};
  jobq::Queue mail{store, "mail"};
  for (int i = 0; i < 55; ++i) mail.enqueue("digest", {}, {.delay = 1h});
  std::vector<jobq::JobId> retrying;
  for (int i = 0; i < 2; ++i) {
    mail.enqueue("send", {});
    auto c = store.claim({{"mail"}, 1, 60s});
    REQUIRE(c.size() == 1);
    REQUIRE(store.fail({c[0].id, c[0].lease_token, "smtp: timeout", store.now() + 1h}) == jobq::FailOutcome::retried);
    retrying.push_back(c[0].id);
  }

  jobq::Metrics metrics;
  jobq::HttpServer server{store, metrics, {.port = 0, .queues = {"mail"}}};
  server.start();
  httplib::Client http("127.0.0.1", server.port());
  const auto get = [&](const std::string& path, int status = 200) { return get_json(http, path, status); };

  auto page = get("/api/jobs?state=queued&failed=1&queue=mail");
  REQUIRE(page.at("jobs").size() == 2);
  CHECK(page["jobs"][0].at("id") == retrying[0]);
  CHECK(page["jobs"][1].at("id") == retrying[1]);
  CHECK(page.at("more") == false);
  page = get("/api/jobs?state=queued&failed=1&queue=mail&limit=1");
  REQUIRE(page.at("jobs").size() == 1);
  CHECK(page["jobs"][0].at("id") == retrying[0]);
  CHECK(page.at("more") == true);

  page = get("/api/jobs?state=queued&queue=mail");  // 57 queued, cut at 50
  CHECK(page.at("jobs").size() == 50);
  CHECK(page.at("more") == true);
  page = get("/api/jobs?state=queued&queue=mail&offset=50");
  CHECK(page.at("jobs").size() == 7);
  CHECK(page.at("more") == false);
  server.stop();

  // the scan is bounded: past max_failed_scan jobs the answer is "more", not a full read
  jobq::HttpServer bounded{store, metrics, {.port = 0, .queues = {"mail"}, .max_failed_scan = 20}};
  bounded.start();
  httplib::Client http2("127.0.0.1", bounded.port());
  auto r = http2.Get("/api/jobs?state=queued&failed=1&queue=mail");
  REQUIRE(r);
  page = json::parse(r->body);
  CHECK(page.at("jobs").empty());
  CHECK(page.at("more") == true);
  bounded.stop();
}

TEST_CASE("dashboard: waiting counts, and the flow of a job in the page and the API") {
  jobq::MemoryBackend store;
  jobq::Queue videos{store, "videos"};
  jobq::Queue mail{store, "mail"};
  // fetch, then two transcodes, then notify; fetch completes and one transcode dies (notify too)
  const auto v = enqueue_video_flow(store, "videos", "mail");
  const auto& ids = v.ids;
  auto c = store.claim({{"videos"}, 1, 60s});
  REQUIRE(store.complete(c.at(0).id, c.at(0).lease_token, {}));
  c = store.claim({{"videos"}, 1, 60s});
  REQUIRE(c.at(0).id == v.low);
  REQUIRE(store.fail({v.low, c[0].lease_token, "codec missing", std::nullopt}) == jobq::FailOutcome::dead);
  REQUIRE(store.get(v.notify)->state == jobq::JobState::dead);
  // a second flow still waiting: 2 waiting in mail
  jobq::Flow g;
  g.chain({videos.make("cut", {}), mail.make("send", {}), mail.make("log", {})});
  const auto waiting = videos.enqueue_flow(g);
  const auto plain = mail.enqueue("plain", {});

  jobq::Metrics metrics;
  jobq::HttpServer server{store, metrics, {.port = 0, .queues = {"videos", "mail"}}};
  server.start();
  httplib::Client http("127.0.0.1", server.port());
  const auto get = [&](const std::string& path, int status = 200) { return get_json(http, path, status); };

  auto queues = get("/api/queues");
  REQUIRE(queues.at("queues").size() == 2);
  CHECK(queues["queues"][0].at("queue") == "mail");
  CHECK(queues["queues"][0].at("counts").at("waiting") == 2);
  CHECK(get("/api/jobs?queue=mail&state=waiting").at("jobs").size() == 2);
  auto r = http.Get("/metrics");
  REQUIRE(r);
  CHECK(r->body.find("jobq_jobs{queue=\"mail\",state=\"waiting\"} 2\n") != std::string::npos);

  auto flow = get("/api/jobs/" + std::to_string(v.high) + "/flow");
  CHECK(flow.at("id") == ids.id);
  CHECK(flow.at("size") == 4);
  CHECK(flow.at("more") == false);
  CHECK(flow.at("counts") == json{{"queued", 1}, {"active", 0}, {"completed", 1}, {"dead", 2}, {"cancelled", 0},
                                  {"waiting", 0}, {"delayed", 0}});
  REQUIRE(flow.at("members").size() == 4);
  CHECK(flow["members"][3].at("depends_on") == json{v.low, v.high});
  CHECK(flow["members"][3].at("errors").at(0).at("message") ==
        jobq::dead_dependency_error(v.low, "codec missing"));
  flow = get("/api/jobs/" + std::to_string(waiting.id) + "/flow?limit=2");
  CHECK(flow.at("size") == 3);
  CHECK(flow.at("members").size() == 2);
  CHECK(flow.at("more") == true);
  CHECK(get("/api/jobs/" + std::to_string(plain) + "/flow", 404).at("error") ==
        "job " + std::to_string(plain) + " is in no flow");
  CHECK(get("/api/jobs/987654321/flow", 404).at("error") == "job 987654321 not found");
  // cancel now takes a waiting job too
  r = http.Post(("/api/jobs/" + std::to_string(waiting.members[2]) + "/cancel").c_str(),
                httplib::Headers{{"X-Jobq-Action", "1"}}, "", "text/plain");
  REQUIRE(r);
  CHECK(r->status == 200);

  // the page: a waiting column, and a dead member's "flow" button shows its flow
  Browser browser;
  browser.go("http://127.0.0.1:" + std::to_string(server.port()) + "/");
  browser.wait_for("Number(document.body.dataset.loaded) >= 1");
  CHECK(browser.script(R"(return document.querySelector('#queues tr[data-queue="mail"] td[data-field="waiting"]').textContent;)") ==
        "1");
  CHECK(browser.script("return document.getElementById('flow').hidden;") == true);
  browser.click("#dead-jobs tr[data-job-id=\"" + std::to_string(v.notify) + "\"] button.flow");
  browser.wait_for("!document.getElementById('flow').hidden");
  const auto rows = browser.script(R"(
    return [...document.querySelectorAll("#flow tbody tr")].map(tr =>
      [Number(tr.dataset.jobId), tr.dataset.state, tr.querySelector('td[data-field="after"]').textContent]);)");
  CHECK(rows == json{{v.fetch, "completed", ""},
                     {v.low, "dead", std::to_string(v.fetch)},
                     {v.high, "queued", std::to_string(v.fetch)},
                     {v.notify, "dead", std::to_string(v.low) + ", " + std::to_string(v.high)}});
  CHECK(browser.script("return document.getElementById('flow-status').textContent;") ==
        "flow " + std::to_string(ids.id) + ": 4 members, 1 queued, 1 completed, 2 dead");
  // the shown flow follows the store; any job's flow by id
  c = store.claim({{"videos"}, 1, 60s});
  REQUIRE(c.at(0).id == v.high);
  browser.wait_for(R"(document.querySelector('#flow tr[data-job-id=")" + std::to_string(v.high) +
                   R"("]').dataset.state === "active")");
  browser.script("document.getElementById('flow-job').value = '" + std::to_string(plain) + "';");
  browser.click("#flow-show");
  browser.wait_for("document.getElementById('flow').hidden");
  CHECK(browser.script("return document.getElementById('flow-status').textContent;") ==
        "job " + std::to_string(plain) + " is in no flow");
  server.stop();
}

TEST_CASE("jobq dashboard: serves a store until SIGINT, the token from a file; a public address needs one") {
  const auto dir = std::filesystem::temp_directory_path() / ("jobq-dash-cmd-" + random_suffix());
  std::filesystem::create_directories(dir);
  struct Cleanup {
    std::filesystem::path p;
    ~Cleanup() { std::filesystem::remove_all(p); }
  } cleanup{dir};
  const std::string url = "sqlite://" + (dir / "jobs.db").string();
  {
    auto store = jobq::open_backend(url);
    jobq::Queue{store, "emails"}.enqueue("send", {});
  }
  const auto cli = quote(JOBQ_CLI_PATH) + " --url " + quote(url);
  int status = std::system((cli + " dashboard --host 0.0.0.0 --port 0 >/dev/null 2>&1").c_str());
  CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 2));  // no token, not loopback
  status = std::system((quote(JOBQ_CLI_PATH) + " --url " + quote("sqlite://" + (dir / "typo.db").string()) +
                        " dashboard --port 0 >/dev/null 2>&1").c_str());
  CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 3));  // no store there, and none made
  CHECK_FALSE(std::filesystem::exists(dir / "typo.db"));
  // --throughput-refresh takes a positive duration, checked before the store is opened
  const auto refresh_error = [&](const std::string& value) {
    const auto err = dir / "err";
    status = std::system((quote(JOBQ_CLI_PATH) + " --url " + quote("sqlite://" + (dir / "typo.db").string()) +
                          " dashboard --port 0 --throughput-refresh " + quote(value) + " >/dev/null 2>" +
                          quote(err.string())).c_str());
    CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 2));
    return slurp(err);
  };
  for (const char* bad : {"0s", "never"}) {
    CHECK(refresh_error(bad) == "jobq: dashboard: --throughput-refresh must be a positive duration (e.g. 10s, 1m), not '" +
                                    std::string(bad) + "'\n");
  }
  CHECK(refresh_error("10").starts_with("jobq: invalid duration '10'"));
  CHECK_FALSE(std::filesystem::exists(dir / "typo.db"));

  const std::string token = "tok-0123456789abcdef";
  std::ofstream(dir / "token") << token << "\n";
  int out[2];
  REQUIRE(::pipe(out) == 0);
  const std::string token_file = (dir / "token").string();
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::close(out[0]);
    ::execl(JOBQ_CLI_PATH, "jobq", "--url", url.c_str(), "dashboard", "--port", "0", "--token-file",
            token_file.c_str(), "--throughput-refresh", "1m", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out[1]);
  std::string printed;
  char buf[512];
  for (int i = 0; i < 200 && printed.find('\n') == std::string::npos; ++i) {
    pollfd p{out[0], POLLIN, 0};
    if (::poll(&p, 1, 50) > 0) {
      const auto n = ::read(out[0], buf, sizeof buf);
      if (n <= 0) break;
      printed.append(buf, static_cast<std::size_t>(n));
    }
  }
  INFO(printed);
  const auto at = printed.find("http://127.0.0.1:");
  REQUIRE(at != std::string::npos);
  CHECK(printed.find(", token required") != std::string::npos);
  const int port = std::stoi(printed.substr(at + 17));
  httplib::Client c("127.0.0.1", port);
  auto r = c.Get("/api/queues");
  REQUIRE(r);
  CHECK(r->status == 401);
  r = c.Get("/api/queues", {{"Authorization", "Bearer " + token}});
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body.find("\"emails\"") != std::string::npos);

  ::kill(pid, SIGINT);  // Ctrl-C
  int st = 0;
  REQUIRE(::waitpid(pid, &st, 0) == pid);
  CHECK((WIFEXITED(st) && WEXITSTATUS(st) == 0));
  while (true) {
    const auto n = ::read(out[0], buf, sizeof buf);
    if (n <= 0) break;
    printed.append(buf, static_cast<std::size_t>(n));
  }
  ::close(out[0]);
  CHECK(printed.find("jobq dashboard stopped") != std::string::npos);
}

TEST_CASE("dashboard pages: a queue's jobs filtered and paged, a job page and its actions, search, bulk, schedules") {
  const TempDb db{"jobq-dashboard-pages"};
  const auto url = db.url();
  auto store = jobq::open_backend(url);
  // mail: 60 dead "welcome" jobs and 60 dead "digest" ones, one of them with <script> in its error;
  // a delayed job holding a unique key; a completed one; a nightly schedule
  jobq::Queue mail{store, "mail"};
  for (int i = 0; i < 120; ++i) {
    mail.enqueue(i % 2 ? "digest" : "welcome", {{"to", "user" + std::to_string(i) + "@example.com"}}, {.max_attempts = 1});
  }
  for (;;) {
    const auto got = store.claim({{"mail"}, 100, 60s});
    if (got.empty()) break;
    for (const auto& j : got) {
      const auto error = j.payload.at("to") == "user7@example.com" ? "<script>alert(1)</script>" : "mailbox full";
      REQUIRE(store.fail({j.id, j.lease_token, error, std::nullopt}) == jobq::FailOutcome::dead);
    }
  }
  const auto delayed = mail.enqueue("digest", {{"to", "later@example.com"}}, {.delay = 1h, .unique_key = "digest:42"});
  const auto done = mail.enqueue("welcome", {{"to", "done@example.com"}});
  {
    const auto c = store.claim({{"mail"}, 1, 60s});
    REQUIRE(c.size() == 1);
    REQUIRE(c[0].id == done);
    REQUIRE(store.complete(done, c[0].lease_token, {{"sent", true}}));
  }
  mail.schedule("nightly", "0 3 * * *", {.tz = "Europe/Paris"}, "digest", {});

  jobq::Metrics metrics;
  jobq::HttpServer server{store, metrics, {.port = 0, .queues = {"mail"}}};
  server.start();
  const auto base = "http://127.0.0.1:" + std::to_string(server.port());
  Browser browser;
  browser.script("window.confirm = () => true;");  // WebDriver cannot answer a dialog; a page load resets it
  browser.go(base + "/#/queue/mail");
  browser.wait_for(R"(!document.getElementById("view-queue").hidden && document.querySelectorAll("#q-jobs tbody tr").length > 0)");
  browser.click(R"(#q-tabs button[data-state="dead"])");
  browser.wait_for(R"(document.querySelector('#q-tabs button.on').dataset.state === "dead" &&
                      document.querySelectorAll("#q-jobs tbody tr").length === 50)");
  // newest first, 50 a page; the next page goes on where this one ended
  const auto ids = [&] {
    return browser.script(R"(return [...document.querySelectorAll("#q-jobs tbody tr")].map(tr => Number(tr.dataset.jobId));)");
  };
  auto first_page = ids();
  CHECK(first_page[0].get<jobq::JobId>() > first_page[49].get<jobq::JobId>());
  browser.click("#q-older");
  browser.wait_for("document.getElementById('q-page').textContent.startsWith('jobs 51')");
  CHECK(ids()[0].get<jobq::JobId>() == first_page[49].get<jobq::JobId>() - 1);
  // filter by name, then by text in the error
  browser.script("document.getElementById('q-filter-name').value = 'digest';");
  browser.click("#q-filter-go");
  browser.wait_for(R"JS([...document.querySelectorAll("#q-jobs tbody tr td:nth-child(2)")].every(td => td.textContent === "digest") &&
                        document.querySelectorAll("#q-jobs tbody tr").length === 50)JS");
  browser.script("document.getElementById('q-filter-name').value = ''; document.getElementById('q-filter-text').value = '<script>';");
  browser.click("#q-filter-go");
  browser.wait_for(R"(document.querySelectorAll("#q-jobs tbody tr").length === 1)");
  // shown as text, never run
  CHECK(browser.script(R"(return document.querySelector("#q-jobs tbody tr td.err").textContent;)") == "<script>alert(1)</script>");
  CHECK(browser.script("return document.querySelectorAll('#q-jobs script').length;") == 0);

  // bulk: re-drive every dead "welcome" job, confirmed with the count
  browser.script("window.confirm = () => true; document.getElementById('q-filter-text').value = '';"
                 "document.getElementById('q-filter-name').value = 'welcome';");
  browser.click("#q-filter-go");
  browser.wait_for("!document.getElementById('q-bulk').hidden");
  browser.click("#q-bulk");
  browser.wait_for("document.getElementById('q-bulk-status').textContent === 're-drove 60'");
  CHECK(store.counts("mail").dead == 60);
  for (const auto& j : store.list("mail", jobq::JobState::dead, {0, 100})) CHECK(j.name == "digest");

  // a job page: fields, payload, attempts; run now on the delayed one
  browser.go(base + "/#/job/" + std::to_string(delayed));
  browser.wait_for(R"(!document.getElementById("view-job").hidden && document.querySelector('#j-fields dd[data-field="unique key"]'))");
  CHECK(browser.script(R"(return document.querySelector('#j-fields dd[data-field="unique key"]').textContent;)") == "digest:42");
  CHECK(browser.script("return document.getElementById('j-payload').textContent;") ==
        "{\n  \"to\": \"later@example.com\"\n}");
  browser.click(R"(#j-actions button[data-action="run_now"])");
  browser.wait_for(R"(!document.querySelector('#j-actions button[data-action="run_now"]'))");
  CHECK(store.get(delayed)->run_at <= store.now());
  // delete a finished job
  browser.script("window.confirm = () => true;");
  browser.go(base + "/#/job/" + std::to_string(done));
  browser.wait_for(R"(document.querySelector('#j-actions button[data-action="remove"]'))");
  browser.script("window.confirm = () => true;");
  browser.click(R"(#j-actions button[data-action="remove"])");
  browser.wait_for("location.hash === '#/queue/mail'");
  CHECK_FALSE(store.get(done));

  // search by unique key and by id, from any page
  browser.script("document.getElementById('search').value = 'digest:42';");
  browser.click("#search-go");
  browser.wait_for("location.hash === '#/job/" + std::to_string(delayed) + "'");
  browser.script("document.getElementById('search').value = 'no-such-key';");
  browser.click("#search-go");
  browser.wait_for("document.getElementById('search-status').textContent === 'nothing found for no-such-key'");

  // schedules
  browser.go(base + "/#/schedules");
  browser.wait_for(R"(document.querySelector('#schedules tr[data-schedule="nightly"]'))");
  CHECK(browser.script(R"JS(return document.querySelector('#schedules tr[data-schedule="nightly"] td:nth-child(3)').textContent;)JS") ==
        "Europe/Paris");
}

TEST_CASE("dashboard API: per-minute figures are cached for throughput_refresh, on every backend") {
  jobq::ManualClock clock;
  jobq::OpenOptions o;
  o.clock = clock.fn();
  const auto q = "cache-" + random_suffix();
  on_every_backend(o, "jobq-dash-cache", [&](jobq::AnyBackend& store) { check_throughput_cache(store, clock, q); });
}

// Not a check: makes the PNGs of docs/screenshots/ (docs/operating.md says how to run it). A
// SQLite store lives through a simulated hour on a manual clock that ends at the real time, so
// the charts have an hour of completions, failures and depth: four queues, retries, dead jobs, a
// paused queue, two workers of other processes, schedules and a flow.
TEST_CASE("dashboard screenshots for the docs", "[.screenshots]") {
  const TempDb db{"jobq-dashboard-shots"};
  const auto real_now = std::chrono::floor<std::chrono::seconds>(jobq::system_now());
  jobq::ManualClock clock{real_now - 60min};
  jobq::OpenOptions o;
  o.clock = clock.fn();
  auto store = jobq::open_backend(db.url(), o);
  jobq::Queue emails{store, "emails"}, images{store, "images"}, webhooks{store, "webhooks"}, reports{store, "reports"};

  jobq::Metrics metrics;
  jobq::HttpServer server{store, metrics, {.port = 0, .queues = {"emails", "images", "webhooks", "reports"},
                                           .depth_interval = 1h}};
  server.start();
  httplib::Client http("127.0.0.1", server.port());

  std::mt19937 rng(18);
  const auto between = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const char* smtp_errors[] = {"smtp: connection refused (mx1.example.net:25)", "smtp: timeout after 30 s",
                               "smtp: 550 5.1.1 mailbox unavailable"};
  // Runs what is due in `q`, up to `n`; a job fails with `fail_pct` % chance (its attempt's
  // error), retried in 2 min until its attempts are used up.
  const auto work = [&](const std::string& q, std::size_t n, int fail_pct, auto&& error_of) {
    for (const auto& j : store.claim({{q}, n, 60s})) {
      if (between(1, 100) <= fail_pct || j.payload.contains("bounces")) {
        const auto retry = j.attempts < j.max_attempts ? std::optional(store.now() + 2min) : std::nullopt;
        store.fail({j.id, j.lease_token, error_of(j), retry});
      } else {
        store.complete(j.id, j.lease_token, {{"ok", true}});
      }
    }
  };
  int user = 0;
  for (int minute = 0; minute < 60; ++minute) {
    for (int i = between(8, 16); i > 0; --i) {
      emails.enqueue("send-welcome", {{"to", "user" + std::to_string(++user) + "@example.com"}});
    }
    if (minute % 4 == 0) emails.enqueue("send-receipt", {{"order", 41'000 + minute}});
    if (minute % 8 == 3) {
      emails.enqueue("send-welcome", {{"to", "user" + std::to_string(++user) + "@mail.invalid"}, {"bounces", true}});
    }
    for (int i = between(2, 6); i > 0; --i) images.enqueue("resize", {{"path", "uploads/" + std::to_string(user + i) + ".jpg"}, {"width", 640}});
    // webhooks back up from minute 20 to 40 (the endpoint is slow), then drain
    for (int i = between(4, 9); i > 0; --i) webhooks.enqueue("deliver", {{"url", "https://hooks.example.com/orders"}, {"event", "order.paid"}});
    if (minute % 10 == 0) reports.enqueue("build-report", {{"kind", "daily"}}, {.delay = 2h});
    work("emails", 20, 6, [&](const jobq::JobRecord& j) { return smtp_errors[(j.attempts - 1) % 3]; });
    work("images", 8, 3, [](const jobq::JobRecord&) { return "libvips: VipsJpeg: premature end of JPEG file"; });
    work("webhooks", minute >= 20 && minute < 40 ? 3 : 14, 10,
         [](const jobq::JobRecord&) { return "HTTP 503 from hooks.example.com: upstream unavailable"; });
    clock.advance(1min);
    REQUIRE(http.Get("/api/queues"));  // the depth sample of this minute
  }
  REQUIRE(clock.now() == real_now);
  // now: two images running on a worker of another process, one of them leased ahead; reports paused
  for (const char* path : {"uploads/huge-panorama.tif", "uploads/scan-0042.tif", "uploads/team.jpg"}) {
    images.enqueue("resize", {{"path", path}, {"width", 4096}});
  }
  const auto running = store.claim({{"images"}, 3, 10min});
  REQUIRE(running.size() == 3);
  store.register_worker({.id = "web-1:4242:1-7f3a", .host = "web-1", .pid = 4242, .queues = {"emails", "images"},
                         .concurrency = 4, .started_at = store.now() - 3h, .heartbeat_at = store.now() - 2s,
                         .expires_at = store.now() + 1h,
                         .running = {{running[0].id, store.now() - 95s}, {running[1].id, store.now() - 12s}},
                         .leased = {running.back().id}});
  store.register_worker({.id = "web-2:977:1-c2d9", .host = "web-2", .pid = 977, .queues = {"webhooks"},
                         .concurrency = 8, .started_at = store.now() - 50min, .heartbeat_at = store.now() - 4s,
                         .expires_at = store.now() + 1h});
  store.pause("reports");
  emails.schedule("weekly-digest", "0 8 * * 1", {.tz = "Europe/Paris"}, "send-digest", {});
  reports.schedule("nightly-revenue", "30 2 * * *", {.tz = "America/New_York"}, "build-report", {{"kind", "revenue"}});
  images.schedule("purge-thumbnails", "*/15 * * * *", {}, "purge", {});
  const auto v = enqueue_video_flow(store, "images", "emails");
  {
    auto c = store.claim({{"images"}, 1, 60s});  // the fetch completes, the 720p transcode dies
    REQUIRE(c.at(0).id == v.fetch);
    REQUIRE(store.complete(v.fetch, c[0].lease_token, {}));
    c = store.claim({{"images"}, 1, 60s});
    REQUIRE(c.at(0).id == v.low);
    REQUIRE(store.fail({v.low, c[0].lease_token, "ffmpeg: Unknown encoder 'libx264'", std::nullopt}) ==
            jobq::FailOutcome::dead);
  }
  auto dead_mail = store.list("emails", jobq::JobState::dead, {0, 1000});
  std::erase_if(dead_mail, [](const jobq::JobRecord& j) { return !j.payload.contains("bounces"); });
  REQUIRE(dead_mail.size() >= 5);
  REQUIRE(dead_mail[0].errors.size() == 3);

  const std::filesystem::path dir = JOBQ_SCREENSHOT_DIR;
  std::filesystem::create_directories(dir);
  const auto base = "http://127.0.0.1:" + std::to_string(server.port());
  Browser browser;
  browser.resize(1280, 800);
  const auto shot = [&](const std::string& name) {
    std::this_thread::sleep_for(300ms);  // the last paint
    browser.screenshot(dir / (name + ".png"));
  };
  browser.go(base + "/");
  browser.wait_for("Number(document.body.dataset.loaded) >= 1");
  CHECK(browser.script("return document.documentElement.scrollWidth;") <= 1280);  // no sideways scrolling
  shot("overview");

  browser.go(base + "/#/workers");
  browser.wait_for(R"(!document.getElementById("view-workers").hidden && document.querySelectorAll("#workers tbody tr").length === 2)");
  shot("workers");

  browser.go(base + "/#/queue/emails");
  browser.wait_for(R"(!document.getElementById("view-queue").hidden && document.querySelectorAll("#q-jobs tbody tr").length > 0)");
  browser.click(R"(#q-tabs button[data-state="dead"])");
  browser.wait_for(R"(document.querySelector('#q-tabs button.on').dataset.state === "dead" &&
                      document.querySelectorAll("#q-jobs tbody tr").length > 0)");
  shot("queue");

  browser.go(base + "/#/job/" + std::to_string(dead_mail[0].id));
  browser.wait_for(R"(!document.getElementById("view-job").hidden && document.querySelectorAll("#j-errors tbody tr").length === 3)");
  // the attempts' errors at the bottom of the picture, the fields above them
  browser.script("window.scrollBy(0, document.getElementById('j-errors').getBoundingClientRect().bottom - innerHeight + 16);");
  shot("job");

  browser.go(base + "/#/schedules");
  browser.wait_for(R"(document.querySelectorAll("#schedules tbody tr").length === 3)");
  shot("schedules");
  server.stop();
}
