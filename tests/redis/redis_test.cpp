// Redis-specific behaviour: URLs, authentication, key layout and Cluster slots, script
// reloading, bad data in the store, reconnection, blocking wake-ups and default retention.

#include <atomic>
#include <cerrno>
#include <chrono>
#include <random>
#include <cstdint>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <jobq/jobq.hpp>

#include "redis/helpers.hpp"
#include "redis/reply_dropper.hpp"
#include "support.hpp"

using namespace std::chrono_literals;
using jobq::JobState;
using redis_test::server_url;
using redis_test::Store;

extern char** environ;

namespace {

jobq::NewJob job(std::string queue = "q", nlohmann::json payload = {{"n", 1}}) {
  jobq::NewJob j;
  j.queue = std::move(queue);
  j.name = "noop";
  j.payload = std::move(payload);
  j.backoff = jobq::Backoff::fixed(0ms);
  return j;
}

jobq::ClaimRequest from(std::vector<std::string> queues, std::size_t limit = 1, jobq::Millis lease = 30s) {
  return {std::move(queues), limit, lease};
}

// Redis Cluster's key slot: CRC16/XMODEM of the hash tag (or the whole key) mod 16384.
unsigned key_slot(std::string_view key) {
  if (const auto open = key.find('{'); open != std::string_view::npos) {
    const auto close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1) key = key.substr(open + 1, close - open - 1);
  }
  unsigned crc = 0;
  for (unsigned char c : key) {
    crc ^= static_cast<unsigned>(c) << 8;
    for (int i = 0; i < 8; ++i) crc = (crc & 0x8000) ? ((crc << 1) ^ 0x1021) : (crc << 1);
    crc &= 0xffff;
  }
  return crc % 16384;
}

std::vector<std::string> keys_under(jobq::RedisBackend& b, const std::string& pattern) {
  std::vector<std::string> out;
  std::string cursor = "0";
  do {
    auto r = b.command({"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"});
    cursor = r.elements.at(0).str;
    for (const auto& k : r.elements.at(1).elements) out.push_back(k.str);
  } while (cursor != "0");
  return out;
}

std::string type_of(jobq::RedisBackend& b, const std::string& key) { return b.command({"TYPE", key}).str; }

using jobq_test::eventually;

int free_port() {
  std::mt19937 rng{std::random_device{}()};
  for (int i = 0; i < 200; ++i) {
    const int port = 20000 + static_cast<int>(rng() % 25000);
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool refused = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 && errno == ECONNREFUSED;
    ::close(fd);
    if (refused) return port;  // nobody listens there
  }
  throw std::runtime_error("no free loopback port");
}

/// A throwaway redis-server with a password on a free loopback port, stopped at the end.
struct PasswordServer {
  int port = free_port();
  pid_t pid = -1;
  std::string dir;

  explicit PasswordServer(const std::string& password) {
    char tmpl[] = "/tmp/jobq-redis-auth-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir = tmpl;
    // A port free when probed can be taken before redis-server binds it (another test's
    // outgoing connection gets it as its local port): if the server exits, try another port.
    for (int attempt = 0; attempt < 5; ++attempt, port = free_port()) {
      std::vector<std::string> args{"redis-server", "--port", std::to_string(port), "--bind", "127.0.0.1",
                                    "--save", "", "--appendonly", "no", "--dir", dir, "--logfile", dir + "/log",
                                    "--requirepass", password, "--databases", "4"};
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      if (posix_spawnp(&pid, "redis-server", nullptr, nullptr, argv.data(), environ) != 0) {
        throw std::runtime_error("cannot start redis-server (is it installed?)");
      }
      bool exited = false;
      const bool up = eventually([&] {
        int status = 0;
        if (::waitpid(pid, &status, WNOHANG) == pid) {
          exited = true;
          return true;
        }
        try {
          jobq::RedisBackend b("redis://:" + password + "@127.0.0.1:" + std::to_string(port) + "/0",
                               {.connect_timeout = 200ms});
          return true;
        } catch (const jobq::Error&) {
          return false;
        }
      }, 10s);
      if (exited) {
        pid = -1;
        continue;
      }
      if (!up) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        throw std::runtime_error("the throwaway redis-server did not answer (log in " + dir + "/log)");
      }
      return;
    }
    throw std::runtime_error("the throwaway redis-server exited at start 5 times (ports taken?)");
  }
  PasswordServer(const PasswordServer&) = delete;
  PasswordServer& operator=(const PasswordServer&) = delete;
  ~PasswordServer() {
    if (pid > 0) {
      ::kill(pid, SIGTERM);
      int status = 0;
      ::waitpid(pid, &status, 0);
    }
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  [[nodiscard]] std::string url(const std::string& userinfo, int db = 0) const {
    return "redis://" + userinfo + "@127.0.0.1:" + std::to_string(port) + "/" + std::to_string(db);
  }
};

}  // namespace

TEST_CASE("redis URLs are parsed, and malformed ones refused without echoing the password", "[redis][url]") {
  using jobq::detail::redis::parse_url;
  auto u = parse_url("redis://alice:s%40cret@db.example:6380/3");
  CHECK(u.host == "db.example");
  CHECK(u.port == 6380);
  CHECK(u.user == "alice");
  CHECK(u.password == "s@cret");
  CHECK(u.db == 3);
  CHECK(u.masked == "redis://alice:***@db.example:6380/3");
  u = parse_url("redis://:pw@127.0.0.1");
  CHECK(u.user.empty());
  CHECK(u.password == "pw");
  CHECK(u.port == 6379);
  CHECK(u.db == 0);
  u = parse_url("redis://[::1]:7000/");
  CHECK(u.host == "::1");
  CHECK(u.port == 7000);
  // The userinfo runs to the last '@': base64 passwords hold '/', others '@', '?', '#', ':'.
  u = parse_url("redis://u:S3CRET/pw@127.0.0.1:6379/0");
  CHECK(u.user == "u");
  CHECK(u.password == "S3CRET/pw");
  CHECK(u.host == "127.0.0.1");
  CHECK(u.port == 6379);
  CHECK(u.db == 0);
  CHECK(u.masked == "redis://u:***@127.0.0.1:6379/0");
  u = parse_url("redis://:a/b@c?d#e:f@[::1]:7000/4");
  CHECK(u.user.empty());
  CHECK(u.password == "a/b@c?d#e:f");
  CHECK(u.host == "::1");
  CHECK(u.port == 7000);
  CHECK(u.db == 4);
  CHECK(u.masked == "redis://:***@[::1]:7000/4");

  for (const std::string bad : {"", "localhost:6379", "http://x:1/0", "redis://", "redis://:1/0",
                                "redis://h:notaport/0", "redis://h:0/0", "redis://h:70000/0", "redis://h:/0",
                                "redis://h:1/db", "redis://h:1/-1", "redis://h:1/0?timeout=1", "rediss://h:1/0",
                                "redis://user:topsecret@h:99999/0", "redis://user:topsecret@h:1/x%zz",
                                "redis://[::1:1/0"}) {
    CAPTURE(bad);
    try {
      jobq::RedisBackend b(bad);
      FAIL("accepted");
    } catch (const jobq::InvalidArgument& e) {
      CHECK(e.category() == jobq::ErrorCategory::invalid_argument);
      CHECK(std::string(e.what()).find("topsecret") == std::string::npos);
      CHECK(std::string(e.what()).find("redis") != std::string::npos);
    }
  }
}

TEST_CASE("bad options are refused", "[redis]") {
  CHECK_THROWS_AS(jobq::RedisBackend(server_url(), {.prefix = ""}), jobq::InvalidArgument);
  CHECK_THROWS_AS(jobq::RedisBackend(server_url(), {.prefix = "a{b}"}), jobq::InvalidArgument);
  CHECK_THROWS_AS(jobq::RedisBackend(server_url(), {.prefix = "x", .pool_size = 0}), jobq::InvalidArgument);
}

TEST_CASE("an unreachable server is a connection error naming the server, not the password", "[redis]") {
  const auto port = free_port();
  const auto url = "redis://bob:hunter2@127.0.0.1:" + std::to_string(port) + "/0";
  try {
    jobq::RedisBackend b(url, {.connect_timeout = 500ms});
    FAIL("connected");
  } catch (const jobq::RedisError& e) {
    CHECK(e.category() == jobq::ErrorCategory::connection);
    CHECK(e.is_transient());
    const std::string msg = e.what();
    CHECK(msg.find("127.0.0.1:" + std::to_string(port)) != std::string::npos);
    CHECK(msg.find("hunter2") == std::string::npos);
  }
}

TEST_CASE("AUTH with a password (and user) and SELECT of a database", "[redis][auth]") {
  PasswordServer server("right-pass");
  SECTION("a wrong password is a clear, permanent error that keeps the reply") {
    try {
      jobq::RedisBackend b(server.url(":wrong-pass"));
      FAIL("connected");
    } catch (const jobq::RedisError& e) {
      CHECK(e.category() == jobq::ErrorCategory::invalid_argument);
      CHECK_FALSE(e.is_transient());
      CHECK(e.reply().rfind("WRONGPASS", 0) == 0);
      const std::string msg = e.what();
      CHECK(msg.find("authentication failed") != std::string::npos);
      CHECK(msg.find("wrong-pass") == std::string::npos);
      CHECK(msg.find("***") != std::string::npos);
    }
  }
  SECTION("no password at all: NOAUTH on the first command") {
    try {
      jobq::RedisBackend b("redis://127.0.0.1:" + std::to_string(server.port) + "/0");
      FAIL("connected");
    } catch (const jobq::RedisError& e) {
      CHECK(e.reply().rfind("NOAUTH", 0) == 0);
      CHECK(e.category() == jobq::ErrorCategory::invalid_argument);
    }
  }
  SECTION("the right password works, and the database number is honoured") {
    jobq::ManualClock clock;
    jobq::RedisBackend db2(server.url(":right-pass", 2), redis_test::options(clock.fn(), "jobq"));
    jobq::RedisBackend db0(server.url(":right-pass", 0), redis_test::options(clock.fn(), "jobq"));
    const auto id = db2.enqueue(job()).id;
    CHECK(db2.counts("q").queued == 1);
    CHECK(db0.counts("q").queued == 0);
    CHECK(db2.claim(from({"q"})).at(0).id == id);
    CHECK(db2.command({"DBSIZE"}).integer > 0);
    CHECK(db0.command({"DBSIZE"}).integer == 1);  // only its store format key
    CHECK(db0.command({"EXISTS", "jobq:version"}).integer == 1);
  }
  SECTION("a user and password (ACL)") {
    jobq::RedisBackend admin(server.url(":right-pass"));
    admin.command({"ACL", "SETUSER", "worker", "on", ">worker-pass", "~*", "&*", "+@all"});
    jobq::ManualClock clock;
    jobq::RedisBackend b(server.url("worker:worker-pass"), redis_test::options(clock.fn(), "jobq"));
    CHECK(b.enqueue(job()).created);
    try {
      jobq::RedisBackend bad(server.url("worker:nope"));
      FAIL("connected");
    } catch (const jobq::RedisError& e) {
      CHECK(e.reply().rfind("WRONGPASS", 0) == 0);
      CHECK(std::string(e.what()).find("worker:***@") != std::string::npos);
    }
  }
  SECTION("a database number the server does not have") {
    try {
      jobq::RedisBackend b(server.url(":right-pass", 99));
      FAIL("connected");
    } catch (const jobq::RedisError& e) {
      CHECK(std::string(e.what()).find("SELECT 99") != std::string::npos);
      CHECK(e.reply().find("out of range") != std::string::npos);
    }
  }
}

TEST_CASE("every key of a queue is under the prefix and in the queue's Cluster slot", "[redis][keys]") {
  jobq::ManualClock clock;
  Store s(clock.fn());
  auto& b = s.backend;
  auto nj = job("emails");
  nj.unique_key = "u1";
  const auto a = b.enqueue(nj).id;
  auto later = job("emails");
  later.run_at = clock.now() + 1h;
  b.enqueue(later);
  const auto c = b.enqueue(job("emails")).id;
  auto got = b.claim(from({"emails"}, 2));
  REQUIRE(got.size() == 2);
  b.complete(got[0].id, got[0].lease_token, nullptr);
  b.fail({got[1].id, got[1].lease_token, "x", std::nullopt});
  b.enqueue(job("emails"));
  auto x = b.enqueue(job("emails")).id;
  b.cancel(x);
  nj.unique_key = "u2";
  b.enqueue(nj);
  b.pause("emails");
  CHECK((a < c));
  // The #7 keys: limits, the rate ledger, groups, active counts per group, parked jobs.
  b.set_queue_limits("emails", {jobq::RateLimit{100, std::chrono::minutes(1)}, 1});
  b.resume("emails");
  for (int i = 0; i < 3; ++i) {
    auto g = job("emails");
    g.group = "tenant";
    g.priority = 10;
    b.enqueue(g);
  }
  REQUIRE(b.claim(from({"emails"}, 5)).at(0).group == "tenant");  // the other two are parked
  b.enqueue(job("emails"));
  b.pause("emails");
  b.put_schedule({"nightly", {{"cron", "0 3 * * *"}}, clock.now()});

  const std::string base = s.prefix + ":{emails}:";
  CHECK(type_of(b, base + "jobs") == "hash");
  CHECK(type_of(b, base + "ready") == "zset");
  CHECK(type_of(b, base + "delayed") == "zset");
  CHECK(type_of(b, base + "ids:queued") == "zset");
  CHECK(type_of(b, base + "ids:completed") == "zset");
  CHECK(type_of(b, base + "ids:dead") == "zset");
  CHECK(type_of(b, base + "ids:cancelled") == "zset");
  CHECK(type_of(b, base + "done:completed") == "zset");
  CHECK(type_of(b, base + "unique") == "hash");
  CHECK(type_of(b, base + "paused") == "string");
  CHECK(type_of(b, base + "wake") == "list");
  CHECK(type_of(b, s.prefix + ":id") == "string");
  CHECK(type_of(b, s.prefix + ":jobqueue") == "hash");
  CHECK(type_of(b, s.prefix + ":queues") == "set");
  CHECK(type_of(b, s.prefix + ":version") == "string");
  CHECK(type_of(b, s.prefix + ":schedules") == "hash");
  CHECK(type_of(b, base + "limits") == "hash");
  CHECK(type_of(b, base + "starts") == "zset");
  CHECK(type_of(b, base + "groups") == "hash");
  CHECK(type_of(b, base + "gactive") == "hash");
  CHECK(type_of(b, base + "parked") == "zset");

  const auto slot = key_slot("{emails}");
  std::set<std::string> globals{s.prefix + ":id", s.prefix + ":jobqueue", s.prefix + ":queues",
                                s.prefix + ":version", s.prefix + ":schedules"};
  for (const auto& k : keys_under(b, s.prefix + ":*")) {
    CAPTURE(k);
    if (globals.contains(k)) continue;
    CHECK(k.rfind(base, 0) == 0);
    CHECK(key_slot(k) == slot);
  }
  // The wake list is bounded whatever the number of enqueues.
  std::vector<jobq::NewJob> many(200, job("emails"));
  b.enqueue_many(many);
  CHECK(b.command({"LLEN", base + "wake"}).integer <= 32);
}

TEST_CASE("scripts are reloaded after the server's script cache is flushed", "[redis][scripts]") {
  jobq::ManualClock clock;
  Store s(clock.fn());
  auto& b = s.backend;
  b.enqueue(job());
  b.command({"SCRIPT", "FLUSH"});
  const auto id = b.enqueue(job()).id;  // EVALSHA -> NOSCRIPT -> SCRIPT LOAD -> EVALSHA
  auto got = b.claim(from({"q"}, 5));
  CHECK(got.size() == 2);
  b.command({"SCRIPT", "FLUSH"});
  std::vector<jobq::Completion> cs;
  for (const auto& j : got) cs.push_back({j.id, j.lease_token, nullptr});
  CHECK(b.complete_many(cs) == std::vector<bool>{true, true});
  CHECK(b.get(id)->state == JobState::completed);
}

TEST_CASE("a key of the wrong type where a queue key should be is a clear error, nothing written",
          "[redis][bad-data]") {
  jobq::ManualClock clock;
  Store s(clock.fn());
  auto& b = s.backend;
  const std::string base = s.prefix + ":{q}:";
  b.command({"SET", base + "ids:queued", "not a sorted set"});
  try {
    b.enqueue(job());
    FAIL("enqueued");
  } catch (const jobq::RedisError& e) {
    CHECK(e.category() == jobq::ErrorCategory::backend);
    CHECK(e.reply().rfind("WRONGTYPE", 0) == 0);
    CHECK(std::string(e.what()).find(base + "ids:queued") != std::string::npos);
    CHECK(std::string(e.what()).find("zset") != std::string::npos);
  }
  CHECK(b.command({"EXISTS", base + "jobs"}).integer == 0);
  CHECK(b.command({"EXISTS", base + "ready"}).integer == 0);
  CHECK_THROWS_AS(b.claim(from({"q"})), jobq::RedisError);
  CHECK_THROWS_AS(b.counts("q"), jobq::RedisError);
  b.command({"DEL", base + "ids:queued"});
  CHECK(b.enqueue(job()).created);

  b.command({"SET", base + "jobs", "x"});
  CHECK_THROWS_WITH(b.claim(from({"q"})), Catch::Contains("WRONGTYPE"));
}

TEST_CASE("the worker registry is two keys of one slot; a key of the wrong type there writes nothing",
          "[redis][workers][bad-data]") {
  jobq::ManualClock clock;
  Store s(clock.fn());
  auto& b = s.backend;
  const std::string info = s.prefix + ":{~workers}:info", expiry = s.prefix + ":{~workers}:expiry";
  jobq::WorkerInfo w;
  w.id = "w1";
  w.expires_at = clock.now() + 30s;
  b.register_worker(w);
  CHECK(type_of(b, info) == "hash");
  CHECK(type_of(b, expiry) == "zset");
  CHECK(key_slot(info) == key_slot(expiry));
  CHECK(b.command({"ZSCORE", expiry, "w1"}).str == std::to_string(jobq::to_epoch_ms(w.expires_at)));
  CHECK(jobq::worker_info_from_json(nlohmann::json::parse(b.command({"HGET", info, "w1"}).str)) == w);

  // Each key of the wrong type in turn: the registration fails and neither key changes.
  for (const auto& bad : {info, expiry}) {
    CAPTURE(bad);
    b.purge();
    b.command({"SET", bad, "not jobq's"});
    auto other = w;
    other.id = "w2";
    CHECK_THROWS_WITH(b.register_worker(other), Catch::Contains("WRONGTYPE"));
    if (bad == expiry) CHECK_THROWS_AS(b.workers(), jobq::RedisError);  // with no entry, info is never read
    CHECK(b.command({"EXISTS", bad == info ? expiry : info}).integer == 0);
    CHECK(b.command({"GET", bad}).str == "not jobq's");
  }
}

// The hot scripts check the keys they write in one ZDIFF (+HLEN/LLEN) and read the others
// before their first write: a wrong type anywhere still fails before anything changes.
TEST_CASE("claim and complete refuse a key of the wrong type before writing anything", "[redis][bad-data]") {
  jobq::ManualClock clock;
  for (const std::string k : {"leases", "ids:active", "ids:queued", "errors", "progress", "ready", "delayed"}) {
    CAPTURE(k);
    Store s(clock.fn());
    auto& b = s.backend;
    const std::string base = s.prefix + ":{q}:";
    const auto id = b.enqueue(job()).id;
    b.command({"DEL", base + k});
    b.command({"SET", base + k, "x"});
    try {
      b.claim(from({"q"}));
      FAIL("claimed");
    } catch (const jobq::RedisError& e) {
      CHECK(e.reply().rfind("WRONGTYPE", 0) == 0);
      CHECK(std::string(e.what()).find(base + k) != std::string::npos);
    }
    b.command({"DEL", base + k});
    if (k == "ids:queued" || k == "ready") continue;  // the job's own index entry went with the key
    CHECK(b.get(id)->state == JobState::queued);
    CHECK(b.get(id)->attempts == 0);
    REQUIRE(b.claim(from({"q"})).size() == 1);
  }
  for (const std::string k : {"leases", "ids:active", "ids:completed", "done:completed", "results"}) {
    CAPTURE(k);
    Store s(clock.fn());
    auto& b = s.backend;
    const std::string base = s.prefix + ":{q}:";
    b.enqueue(job());
    const auto got = b.claim(from({"q"}));
    REQUIRE(got.size() == 1);
    const auto saved = b.command({"DUMP", base + k});
    b.command({"DEL", base + k});
    b.command({"SET", base + k, "x"});
    try {
      b.complete(got[0].id, got[0].lease_token, {{"ok", true}});
      FAIL("completed");
    } catch (const jobq::RedisError& e) {
      CHECK(e.reply().rfind("WRONGTYPE", 0) == 0);
      CHECK(std::string(e.what()).find(base + k) != std::string::npos);
    }
    b.command({"DEL", base + k});
    if (saved.type == jobq::RedisReply::Type::string) b.command({"RESTORE", base + k, "0", saved.str});
    CHECK(b.get(got[0].id)->state == JobState::active);
    CHECK(b.complete(got[0].id, got[0].lease_token, {{"ok", true}}));
    CHECK(b.get(got[0].id)->result == nlohmann::json{{"ok", true}});
  }
}

TEST_CASE("a corrupted job is a clear error naming the job", "[redis][bad-data]") {
  jobq::ManualClock clock;
  Store s(clock.fn());
  auto& b = s.backend;
  const auto id = b.enqueue(job()).id;
  const auto jobs = s.prefix + ":{q}:jobs";
  for (const std::string bad : {"not json at all", "{\"state\":\"queued\"}", "[1,2,3]", "42"}) {
    CAPTURE(bad);
    b.command({"HSET", jobs, std::to_string(id), bad});
    try {
      b.get(id);
      FAIL("read");
    } catch (const jobq::RedisError& e) {
      CHECK(e.category() == jobq::ErrorCategory::backend);
      CHECK(std::string(e.what()).find("corrupted") != std::string::npos);
      CHECK(std::string(e.what()).find(jobs) != std::string::npos);
    }
    try {
      b.claim(from({"q"}));
      FAIL("claimed");
    } catch (const jobq::RedisError& e) {
      CHECK(std::string(e.what()).find("job " + std::to_string(id)) != std::string::npos);
      CHECK(std::string(e.what()).find("corrupted") != std::string::npos);
    }
    CHECK_THROWS_AS(b.cancel(id), jobq::RedisError);
  }
  CHECK(b.counts("q").queued == 1);  // nothing moved
  // A job document whose embedded payload is broken is caught on the C++ side.
  auto doc = nlohmann::json::parse(b.command({"HGET", jobs, std::to_string(b.enqueue(job()).id)}).str);
  doc["payload"] = "{broken";
  const auto id2 = std::stoll(doc["id"].get<std::string>());
  b.command({"HSET", jobs, std::to_string(id2), doc.dump()});
  CHECK_THROWS_WITH(b.get(id2), Catch::Contains("corrupted") && Catch::Contains("job " + std::to_string(id2)));
  // The fixed part is a flat object of strings: a number, a nested object or a missing field is
  // refused (get and get_many read it the same way), naming the job.
  const auto good = doc;
  for (const auto& [field, value] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"timeout_ms", 5}, {"backoff", nlohmann::json::object()}, {"name", nullptr}, {"queue", nlohmann::json()}}) {
    CAPTURE(field);
    auto d = good;
    d["payload"] = "{}";
    if (value.is_null() && field == "queue") d.erase(field); else d[field] = value;
    b.command({"HSET", jobs, std::to_string(id2), d.dump()});
    CHECK_THROWS_WITH(b.get(id2), Catch::Contains("corrupted") && Catch::Contains("job " + std::to_string(id2)));
    const std::vector<jobq::JobId> both{id2};
    CHECK_THROWS_WITH(b.get_many(both), Catch::Contains("corrupted"));
  }
}

TEST_CASE("an id counter that went back is detected, not silently merged", "[redis][bad-data]") {
  jobq::ManualClock clock;
  Store s(clock.fn());
  const auto id = s.backend.enqueue(job()).id;
  s.backend.command({"DEL", s.prefix + ":id"});
  jobq::RedisBackend fresh(server_url(), redis_test::options(clock.fn(), s.prefix));
  CHECK_THROWS_WITH(fresh.enqueue(job()), Catch::Contains("job id " + std::to_string(id) + " already exists") &&
                                              Catch::Contains("id counter went back"));
  CHECK(s.backend.counts("q").queued == 1);
  CHECK(s.backend.get(id)->payload == nlohmann::json{{"n", 1}});
}

TEST_CASE("binary-safe unique keys and very large numbers survive", "[redis]") {
  jobq::ManualClock clock;
  Store s(clock.fn());
  auto& b = s.backend;
  auto a = job();
  a.unique_key = std::string("k\0a", 3);
  auto c = job();
  c.unique_key = std::string("k\0b", 3);
  const auto ra = b.enqueue(a);
  const auto rc = b.enqueue(c);
  CHECK(ra.created);
  CHECK(rc.created);
  CHECK(b.enqueue(a).id == ra.id);
  CHECK(b.get(ra.id)->unique_key == a.unique_key);

  auto big = job("q", {{"i64", 9'007'199'254'740'993LL}, {"u64", 18'446'744'073'709'551'615ULL}});
  big.timeout = jobq::max_duration;  // longer ones are refused (issue #23)
  big.unique_for = jobq::max_duration - jobq::Millis{1};
  big.priority = -2'000'000'000;
  const auto id = b.enqueue(big).id;
  auto r = b.get(id);
  CHECK(r->payload == big.payload);
  CHECK(r->timeout == big.timeout);
  CHECK(r->unique_for == big.unique_for);
  CHECK(r->priority == big.priority);

  auto bad = job();
  bad.payload = {{"s", std::string("\xff\xfe")}};
  CHECK_THROWS_AS(b.enqueue(bad), jobq::InvalidArgument);
}

TEST_CASE("an error message that is not UTF-8 is stored with replacement characters", "[redis]") {
  jobq::ManualClock clock;
  Store s(clock.fn());
  auto& b = s.backend;
  const auto id = b.enqueue(job()).id;
  const auto j = b.claim(from({"q"})).at(0);
  CHECK(b.fail({id, j.lease_token, std::string("bad \xff byte"), std::nullopt}) == jobq::FailOutcome::dead);
  CHECK(b.get(id)->errors.at(0).message == "bad \xef\xbf\xbd byte");
}

TEST_CASE("a connection closed by the server is replaced transparently", "[redis][reconnect]") {
  jobq::ManualClock clock;
  const auto prefix = redis_test::unique_prefix();
  auto opt = redis_test::options(clock.fn(), prefix);
  opt.pool_size = 1;
  Store s(prefix, opt);
  auto& b = s.backend;
  jobq::RedisBackend killer(server_url());
  const auto id = b.enqueue(job()).id;
  for (int round = 0; round < 3; ++round) {
    const auto client = b.command({"CLIENT", "ID"}).integer;
    killer.command({"CLIENT", "KILL", "ID", std::to_string(client)});
    CHECK(b.get(id).has_value());
    CHECK(b.command({"CLIENT", "ID"}).integer != client);
  }
  auto j = b.claim(from({"q"}));
  REQUIRE(j.size() == 1);
  killer.command({"CLIENT", "KILL", "ID", std::to_string(b.command({"CLIENT", "ID"}).integer)});
  CHECK(b.complete(id, j[0].lease_token, nullptr));
}

namespace {

// A claim of up to `limit` jobs from "q" whose reply the proxy loses after the server ran it:
// the lost claim is the one with the (otherwise unused) lease 123457 ms, "$6\r\n123457\r\n" as
// Redis receives it. Returns what the claim, or else one more claim (1 h lease), leased.
std::vector<jobq::JobRecord> claim_losing_reply(jobq::RedisBackend& b, redis_test::ReplyDropper& proxy,
                                                std::size_t limit) {
  proxy.drop_reply_to("$6\r\n123457\r\n");
  std::vector<jobq::JobRecord> got;
  try {
    got = b.claim(from({"q"}, limit, 123457ms));
  } catch (const jobq::Error& e) {
    WARN("the claim threw: " << e.what());
  }
  REQUIRE(proxy.dropped() == 1);
  if (got.empty()) got = b.claim(from({"q"}, limit, 1h));
  return got;
}

}  // namespace

// Issue 23.3: the reply to a claim is lost after the server ran it. The job must not stay
// leased to nobody until the lease ends (which uses its attempt: with max_attempts 1 it would be
// dead, never run); the claim is undone and sent again, and the job runs on attempt 1.
TEST_CASE("a claim whose reply was lost is undone without using an attempt", "[redis][reconnect][lost-claim]") {
  jobq::ManualClock clock;
  const auto prefix = redis_test::unique_prefix();
  auto opt = redis_test::options(clock.fn(), prefix);
  opt.pool_size = 1;
  Store cleanup(prefix, opt);  // direct, for the checks
  redis_test::ReplyDropper proxy(server_url());
  jobq::RedisBackend b(proxy.url(), opt);
  auto& direct = cleanup.backend;

  auto j = job();
  j.max_attempts = 1;
  const auto id = b.enqueue(j).id;
  const auto got = claim_losing_reply(b, proxy, 1);
  if (got.empty()) {
    // Not given back: leased to nobody until the lost lease ends, and that uses its attempt.
    clock.advance(124s);
    b.recover_expired();
    const auto after = direct.get(id);
    REQUIRE(after);
    FAIL("the lost claim's job was not given back; when the lease ended it was "
         << jobq::to_string(after->state) << " after " << after->attempts << " attempt(s), never run");
  }
  REQUIRE(got.size() == 1);
  CHECK(got[0].id == id);
  CHECK(got[0].attempts == 1);
  CHECK(b.complete(id, got[0].lease_token, nullptr));
  clock.advance(1h);  // nothing of the lost claim is left to expire
  const auto recovered = b.recover_expired();
  CHECK(recovered.retried + recovered.dead == 0);
  const auto done = direct.get(id);
  REQUIRE(done);
  CHECK(done->state == JobState::completed);
  CHECK(done->attempts == 1);
  CHECK(done->errors.empty());
}

TEST_CASE("undoing a lost claim gives back its group slot and rate-limit start, and wakes waiters",
          "[redis][reconnect][lost-claim]") {
  jobq::ManualClock clock;
  const auto prefix = redis_test::unique_prefix();
  auto opt = redis_test::options(clock.fn(), prefix);
  opt.pool_size = 1;
  Store cleanup(prefix, opt);
  redis_test::ReplyDropper proxy(server_url());
  jobq::RedisBackend b(proxy.url(), opt);
  auto& direct = cleanup.backend;
  direct.set_queue_limits("q", {jobq::RateLimit{2, 1h}, 1});
  std::vector<jobq::JobId> ids;
  for (int i = 0; i < 2; ++i) {
    auto j = job("q", {{"n", i}});
    j.group = "g";
    j.max_attempts = 1;
    ids.push_back(direct.enqueue(j).id);
  }
  // Waiting workers BLPOP the queue's wake list; nothing in a claim pushes to it, the undo does.
  const auto wake_key = prefix + ":{q}:wake";
  direct.command({"DEL", wake_key});
  const auto got = claim_losing_reply(b, proxy, 2);
  CHECK(direct.command({"LLEN", wake_key}).integer > 0);
  // Group limit 1: one job at a time, the first; the lost claim's slot and start are given back,
  // so the rate limit (2 per hour) still lets the second job start after the first.
  REQUIRE(got.size() == 1);
  CHECK(got[0].id == ids[0]);
  CHECK(got[0].attempts == 1);
  CHECK(b.complete(ids[0], got[0].lease_token, nullptr));
  auto second = b.claim(from({"q"}, 2, 1h));
  REQUIRE(second.size() == 1);
  CHECK(second[0].id == ids[1]);
  CHECK(second[0].attempts == 1);
}

TEST_CASE("wait_for_work blocks, wakes on another client's enqueue and on due delayed jobs",
          "[redis][wait]") {
  const auto prefix = redis_test::unique_prefix();
  Store s(prefix, redis_test::options(jobq::system_clock(), prefix));
  jobq::RedisBackend producer(server_url(), redis_test::options(jobq::system_clock(), prefix));
  auto& b = s.backend;
  const std::vector<std::string> queues{"a", "b"};
  using steady = std::chrono::steady_clock;

  SECTION("times out when nothing happens") {
    const auto t0 = steady::now();
    b.wait_for_work(queues, 300ms, {});
    const auto took = steady::now() - t0;
    CHECK(took >= 250ms);
    CHECK(took < 3s);
  }
  SECTION("an enqueue through another connection wakes it") {
    b.wait_for_work(queues, 10ms, {});  // eat stale markers, if any
    std::atomic<bool> woke{false};
    steady::time_point woke_at;
    std::thread waiter([&] {
      b.wait_for_work(queues, 20s, {});
      woke_at = steady::now();
      woke = true;
    });
    std::this_thread::sleep_for(200ms);
    CHECK_FALSE(woke);
    const auto sent = steady::now();
    producer.enqueue(job("b"));
    REQUIRE(eventually([&] { return woke.load(); }, 10s));
    waiter.join();
    CHECK(woke_at - sent < 2s);
  }
  SECTION("a delayed job cuts the wait short when it comes due") {
    auto later = job("a");
    later.run_at = producer.now() + 400ms;
    producer.enqueue(later);
    b.wait_for_work(queues, 10ms, {});  // consume the enqueue's marker
    const auto t0 = steady::now();
    b.wait_for_work(queues, 20s, {});
    CHECK(steady::now() - t0 < 5s);
    CHECK(b.claim(from({"a"})).size() == 1);
  }
  SECTION("a resume wakes waiters of a paused queue") {
    producer.pause("a");
    producer.enqueue(job("a"));
    b.wait_for_work(queues, 10ms, {});
    std::atomic<bool> woke{false};
    std::thread waiter([&] {
      b.wait_for_work(queues, 20s, {});
      woke = true;
    });
    std::this_thread::sleep_for(200ms);
    CHECK_FALSE(woke);
    producer.resume("a");
    CHECK(eventually([&] { return woke.load(); }, 10s));
    waiter.join();
  }
  SECTION("a stop request ends the wait and the backend stays usable") {
    for (int i = 0; i < 3; ++i) {
      std::stop_source stop;
      std::atomic<bool> woke{false};
      std::thread waiter([&] {
        b.wait_for_work(queues, 20s, stop.get_token());
        woke = true;
      });
      std::this_thread::sleep_for(100ms);
      stop.request_stop();
      CHECK(eventually([&] { return woke.load(); }, 5s));
      waiter.join();
    }
    CHECK(b.enqueue(job("a")).created);
  }
}

// The defaults and the worker's automatic prune are conformance cases; here: a pruned job
// leaves the global id map too, by age and by count.
TEST_CASE("pruned jobs leave the id map: by age and by count", "[redis][retention]") {
  jobq::ManualClock clock;
  const auto prefix = redis_test::unique_prefix();
  Store s(prefix, redis_test::options(clock.fn(), prefix));
  auto& b = s.backend;

  SECTION("by age") {
    for (int i = 0; i < 3; ++i) b.enqueue(job());
    for (const auto& j : b.claim(from({"q"}, 3))) b.complete(j.id, j.lease_token, nullptr);
    CHECK(b.counts("q").completed == 3);
    CHECK(b.command({"HLEN", prefix + ":jobqueue"}).integer == 3);
    clock.advance(25h);
    CHECK(b.prune("q", jobq::Retention{}) == 3);
    CHECK(b.counts("q").completed == 0);
    CHECK(b.command({"HLEN", prefix + ":jobqueue"}).integer == 0);
  }
  SECTION("by count") {
    std::vector<jobq::NewJob> batch(10, job());
    b.enqueue_many(batch);
    for (const auto& j : b.claim(from({"q"}, 10))) b.complete(j.id, j.lease_token, nullptr);
    CHECK(b.counts("q").completed == 10);
    CHECK(b.prune("q", jobq::Retention{.max_jobs = 4}) == 6);
    CHECK(b.counts("q").completed == 4);
    CHECK(b.command({"HLEN", prefix + ":jobqueue"}).integer == 4);
  }
}

TEST_CASE("the id counter and id map are shared by backends on one prefix", "[redis]") {
  jobq::ManualClock clock;
  const auto prefix = redis_test::unique_prefix();
  Store s(prefix, redis_test::options(clock.fn(), prefix));
  jobq::RedisBackend other(server_url(), redis_test::options(clock.fn(), prefix));
  std::set<jobq::JobId> ids;
  for (int i = 0; i < 100; ++i) {
    std::string queue = "q";
    queue += std::to_string(i % 3);  // not "q" + ...: GCC 12 -O3 reports a false -Wrestrict
    ids.insert(s.backend.enqueue(job(queue)).id);
    ids.insert(other.enqueue(job(queue)).id);
  }
  CHECK(ids.size() == 200);
  // Each backend finds the other's jobs by id alone.
  for (auto id : ids) REQUIRE(other.get(id).has_value());
  auto j = s.backend.claim(from({"q1"}));
  REQUIRE(j.size() == 1);
  CHECK(other.complete(j[0].id, j[0].lease_token, {{"by", "other"}}));
  CHECK(other.recover_expired() == jobq::Recovered{});
  clock.advance(1h);
  auto k = other.claim(from({"q2"}, 1, 1s));
  clock.advance(2s);
  CHECK(s.backend.recover_expired() == jobq::Recovered{1, 0});  // found through <prefix>:queues
  CHECK(s.backend.get(k.at(0).id)->state == JobState::queued);
}
