// jobq::HttpServer against hostile clients, over raw loopback sockets: request bodies and headers
// are capped before they are read, only the configured host names are served, actions check
// Origin, every response forbids framing and sniffing, and slow clients (slowloris) neither hold
// a connection past the request deadline nor keep /metrics from answering.

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <jobq/http.hpp>
#include <jobq/jobq.hpp>
#include <jobq/memory.hpp>

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

// One TCP connection to the server under test, driven byte by byte.
class RawClient {
 public:
  explicit RawClient(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;
  ~RawClient() { ::close(fd_); }

  [[nodiscard]] bool connected() const { return connected_; }

  // False once the server has closed (EPIPE / ECONNRESET) or the send timed out.
  bool send(std::string_view s) {
    while (!s.empty()) {
      const auto n = ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      s.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  void set_send_timeout(std::chrono::milliseconds t) {
    timeval tv{static_cast<time_t>(t.count() / 1000), static_cast<suseconds_t>((t.count() % 1000) * 1000)};
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }

  // What arrives until the server closes the connection or `limit` passes (see closed()).
  std::string read_until_closed(std::chrono::milliseconds limit) {
    std::string out;
    const auto deadline = Clock::now() + limit;
    char buf[4096];
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return out;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
      const auto n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {
        closed_ = true;
        return out;
      }
      out.append(buf, static_cast<std::size_t>(n));
    }
  }

  [[nodiscard]] bool closed() const { return closed_; }

 private:
  int fd_ = -1;
  bool connected_ = false;
  bool closed_ = false;
};

int status_of(const std::string& response) {
  if (response.rfind("HTTP/1.1 ", 0) != 0 || response.size() < 12) return 0;
  return std::stoi(response.substr(9, 3));
}

// The value of header `name` (case-insensitive) in a raw response, or "" if absent.
std::string header_of(const std::string& response, std::string name) {
  auto lower = [](std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  };
  const auto head = lower(response.substr(0, response.find("\r\n\r\n") + 2));
  name = "\r\n" + lower(name) + ": ";
  const auto at = head.find(name);
  if (at == std::string::npos) return "";
  const auto from = at + name.size();
  return response.substr(from, head.find("\r\n", from) - from);
}

// One request on its own connection ("Connection: close"), the whole response.
std::string round_trip(int port, const std::string& request, std::chrono::milliseconds limit = 3s) {
  RawClient c(port);
  REQUIRE(c.connected());
  REQUIRE(c.send(request));
  auto out = c.read_until_closed(limit);
  INFO(request << "\n---\n" << out);
  REQUIRE(c.closed());
  return out;
}

std::string get(int port, const std::string& path, const std::string& host) {
  return round_trip(port, "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n");
}

std::string post(int port, const std::string& path, const std::string& host, const std::string& extra = "") {
  return round_trip(port, "POST " + path + " HTTP/1.1\r\nHost: " + host + "\r\nX-Jobq-Action: 1\r\n" + extra +
                            "Content-Length: 0\r\nConnection: close\r\n\r\n");
}

long vm_rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

// A live HttpServer over a memory store with one queued job (`job`) in queue "emails".
struct Served {
  explicit Served(jobq::HttpOptions o = {}) : options(std::move(o)) {
    options.port = 0;
    options.queues = {"emails"};
    job = jobq::Queue{store, "emails"}.enqueue("send", {{"to", "a@example.com"}});
    server = std::make_unique<jobq::HttpServer<jobq::MemoryBackend>>(store, metrics, options);
    server->start();
    port = server->port();
    host = "127.0.0.1:" + std::to_string(port);
  }
  jobq::HttpOptions options;
  jobq::MemoryBackend store;
  jobq::Metrics metrics;
  std::unique_ptr<jobq::HttpServer<jobq::MemoryBackend>> server;
  jobq::JobId job = 0;
  int port = 0;
  std::string host;
};

}  // namespace

TEST_CASE("http: a declared body over the cap is refused with 413 before any of it is read", "[http][body]") {
  Served s;
  RawClient c(s.port);
  REQUIRE(c.send("POST /api/jobs/" + std::to_string(s.job) + "/cancel HTTP/1.1\r\nHost: " + s.host +
                 "\r\nX-Jobq-Action: 1\r\nContent-Type: text/plain\r\nContent-Length: 50000000\r\n\r\n"));
  const auto t0 = Clock::now();
  const auto out = c.read_until_closed(3s);  // the body is never sent: the server must not wait for it
  INFO(out);
  CHECK(status_of(out) == 413);
  CHECK(c.closed());
  CHECK(Clock::now() - t0 < 2s);
  CHECK(s.store.get(s.job)->state == jobq::JobState::queued);
}

TEST_CASE("http: sending a 40 MB body neither grows the server's memory nor is read to the end", "[http][body]") {
  Served s;
  const long before = vm_rss_kib();
  REQUIRE(before > 0);
  std::atomic<bool> done{false};
  std::atomic<long> peak{before};
  std::thread sampler([&] {
    while (!done) {
      peak = std::max(peak.load(), vm_rss_kib());
      std::this_thread::sleep_for(5ms);
    }
  });
  constexpr std::size_t body = 40u << 20, chunk = 1u << 20;
  const std::string block(chunk, 'x');
  std::size_t sent = 0;
  {
    RawClient c(s.port);
    c.set_send_timeout(3s);
    REQUIRE(c.send("POST /api/jobs/" + std::to_string(s.job) + "/cancel HTTP/1.1\r\nHost: " + s.host +
                   "\r\nX-Jobq-Action: 1\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body) +
                   "\r\n\r\n"));
    while (sent < body && c.send(block)) sent += chunk;
  }
  std::this_thread::sleep_for(100ms);
  done = true;
  sampler.join();
  INFO("RSS before " << before << " KiB, peak " << peak << " KiB; client sent " << sent << " of " << body);
  CHECK(sent < body);                      // the server closed instead of reading it all
  CHECK(peak - before < 16 * 1024);        // and buffered none of it
  CHECK(s.store.get(s.job)->state == jobq::JobState::queued);
}

TEST_CASE("http: a chunked body is refused with 413 without reading it", "[http][body]") {
  Served s;
  RawClient c(s.port);
  REQUIRE(c.send("POST /api/jobs/" + std::to_string(s.job) + "/cancel HTTP/1.1\r\nHost: " + s.host +
                 "\r\nX-Jobq-Action: 1\r\nTransfer-Encoding: chunked\r\n\r\n"));
  const auto out = c.read_until_closed(3s);
  INFO(out);
  CHECK(status_of(out) == 413);
  CHECK(c.closed());
  CHECK(s.store.get(s.job)->state == jobq::JobState::queued);
}

TEST_CASE("http: a POST without Content-Length has no body and is answered at once", "[http][body]") {
  Served s;
  RawClient c(s.port);
  REQUIRE(c.send("POST /api/jobs/" + std::to_string(s.job) + "/cancel HTTP/1.1\r\nHost: " + s.host +
                 "\r\nX-Jobq-Action: 1\r\n\r\n"));
  const auto t0 = Clock::now();
  std::string out;
  while (out.find("\"ok\":true") == std::string::npos && Clock::now() - t0 < 3s) out += c.read_until_closed(100ms);
  INFO(out);
  CHECK(status_of(out) == 200);
  CHECK(Clock::now() - t0 < 1s);
  CHECK(s.store.get(s.job)->state == jobq::JobState::cancelled);
}

TEST_CASE("http: request headers over the cap are refused with 431 and the connection closed", "[http][headers]") {
  Served s;
  std::string request = "GET /api/queues HTTP/1.1\r\nHost: " + s.host + "\r\n";
  for (int i = 0; i < 64; ++i) request += "X-Filler-" + std::to_string(i) + ": " + std::string(1000, 'a') + "\r\n";
  request += "Connection: close\r\n\r\n";
  const auto out = round_trip(s.port, request);
  CHECK(status_of(out) == 431);
}

TEST_CASE("http: a request line that never ends is not buffered: the connection is closed", "[http][headers]") {
  Served s;
  RawClient c(s.port);
  c.set_send_timeout(3s);
  const std::string block(64 * 1024, 'a');
  const auto t0 = Clock::now();
  std::size_t sent = 0;
  REQUIRE(c.send("GET /"));
  while (sent < (64u << 20) && c.send(block)) sent += block.size();
  c.read_until_closed(3s);
  INFO("sent " << sent << " bytes");
  CHECK(c.closed());
  CHECK(sent < (64u << 20));
  CHECK(Clock::now() - t0 < 4s);
}

TEST_CASE("http: only loopback host names are served by default, with or without a port", "[http][host]") {
  Served s;
  const auto port = std::to_string(s.port);
  for (const std::string& host : std::vector<std::string>{"127.0.0.1", "127.0.0.1:" + port, "localhost", "localhost:" + port, "LocalHost:" + port,
                                 "[::1]", "[::1]:" + port}) {
    INFO("Host: " << host);
    CHECK(status_of(get(s.port, "/api/queues", host)) == 200);
    CHECK(status_of(get(s.port, "/metrics", host)) == 200);
  }
  for (const std::string& host : std::vector<std::string>{"evil.example", "evil.example:" + port, "localhost.evil.example", "127.0.0.1.nip.io",
                                 "localhost:" + port + "@evil.example", "[::1]x", "localhost:80x"}) {
    INFO("Host: " << host);
    const auto out = get(s.port, "/api/jobs?queue=emails", host);
    CHECK(status_of(out) == 421);
    CHECK(out.find("send") == std::string::npos);  // no job leaks
    CHECK(out.find("not an allowed host") != std::string::npos);
  }
  // nor may a rebinding page act
  const auto out = post(s.port, "/api/jobs/" + std::to_string(s.job) + "/cancel", "evil.example:" + port);
  CHECK(status_of(out) == 421);
  CHECK(s.store.get(s.job)->state == jobq::JobState::queued);
  // no Host at all (HTTP/1.0), or an empty one
  CHECK(status_of(round_trip(s.port, "GET /api/queues HTTP/1.0\r\n\r\n")) == 400);
  CHECK(status_of(get(s.port, "/api/queues", "")) == 400);
}

TEST_CASE("http: allowed_hosts replaces the loopback names; the bound address stays accepted", "[http][host]") {
  Served s{{.allowed_hosts = {"jobs.example.com"}}};
  CHECK(status_of(get(s.port, "/api/queues", "jobs.example.com")) == 200);
  CHECK(status_of(get(s.port, "/api/queues", "JOBS.example.com:443")) == 200);
  CHECK(status_of(get(s.port, "/api/queues", s.host)) == 200);
  CHECK(status_of(get(s.port, "/api/queues", "localhost")) == 421);
  CHECK(status_of(post(s.port, "/api/jobs/" + std::to_string(s.job) + "/cancel", "jobs.example.com",
                       "Origin: https://jobs.example.com\r\n")) == 200);
}

TEST_CASE("http: an action with an Origin header must come from an allowed host", "[http][origin]") {
  Served s;
  const auto cancel = "/api/jobs/" + std::to_string(s.job) + "/cancel";
  const auto port = std::to_string(s.port);
  for (const std::string& origin : std::vector<std::string>{"http://evil.example", "http://evil.example:" + port, "null", "file://",
                                   "http://localhost.evil.example:" + port, "http://127.0.0.1:" + port + "/x",
                                   "localhost"}) {
    INFO("Origin: " << origin);
    const auto out = post(s.port, cancel, s.host, "Origin: " + origin + "\r\n");
    CHECK(status_of(out) == 403);
    CHECK(out.find("Origin") != std::string::npos);
    CHECK(s.store.get(s.job)->state == jobq::JobState::queued);
  }
  // the action header is still needed with a good Origin
  CHECK(status_of(round_trip(s.port, "POST " + cancel + " HTTP/1.1\r\nHost: " + s.host + "\r\nOrigin: http://" + s.host +
                                       "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")) == 403);
  CHECK(s.store.get(s.job)->state == jobq::JobState::queued);
  CHECK(status_of(post(s.port, cancel, s.host, "Origin: http://localhost:" + port + "\r\n")) == 200);
  CHECK(s.store.get(s.job)->state == jobq::JobState::cancelled);
  // without Origin (curl, scripts) the action header alone is enough, as before
  auto job2 = jobq::Queue{s.store, "emails"}.enqueue("send", {});
  CHECK(status_of(post(s.port, "/api/jobs/" + std::to_string(job2) + "/cancel", s.host)) == 200);
}

TEST_CASE("http: every response forbids framing and content sniffing", "[http][headers]") {
  Served s;
  std::vector<std::string> responses = {
      get(s.port, "/", s.host),
      get(s.port, "/metrics", s.host),
      get(s.port, "/api/queues", s.host),
      get(s.port, "/api/jobs/987654321", s.host),
      get(s.port, "/no/such/page", s.host),
      get(s.port, "/api/queues", "evil.example"),
      post(s.port, "/api/jobs/1/cancel", s.host, "Origin: http://evil.example\r\n"),
      round_trip(s.port, "POST /api/jobs/1/cancel HTTP/1.1\r\nHost: " + s.host + "\r\nContent-Length: 9999999\r\n\r\n"),
  };
  for (const auto& r : responses) {
    INFO(r.substr(0, r.find("\r\n\r\n")));
    CHECK(status_of(r) != 0);
    CHECK(header_of(r, "X-Frame-Options") == "DENY");
    CHECK(header_of(r, "X-Content-Type-Options") == "nosniff");
    CHECK(header_of(r, "Content-Security-Policy").find("frame-ancestors 'none'") != std::string::npos);
  }
  // the dashboard's own policy lets its inline script fetch the API, and nothing else
  const auto csp = header_of(responses[0], "Content-Security-Policy");
  CHECK(csp.find("default-src 'none'") != std::string::npos);
  CHECK(csp.find("connect-src 'self'") != std::string::npos);
  CHECK(header_of(responses[1], "Content-Security-Policy").find("default-src 'none'") != std::string::npos);
}

TEST_CASE("http: slow clients (one header line every 2 s) do not keep /metrics from answering", "[http][slowloris]") {
  Served s;
  struct Attack {  // stops and joins the attackers however the test ends
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    ~Attack() {
      stop = true;
      for (auto& t : threads) t.join();
    }
  } attack;
  auto& stop = attack.stop;
  auto& slow = attack.threads;
  for (int i = 0; i < 16; ++i) {  // more than the 8 threads httplib's own pool has
    slow.emplace_back([&] {
      while (!stop) {  // a dropped attacker reconnects at once
        RawClient c(s.port);
        if (!c.send("GET /metrics HTTP/1.1\r\nHost: " + s.host + "\r\n")) continue;
        for (int line = 0; !stop; ++line) {
          for (int t = 0; t < 20 && !stop; ++t) std::this_thread::sleep_for(100ms);
          if (!c.send("X-Slow-" + std::to_string(line) + ": 1\r\n")) break;
        }
      }
    });
  }
  std::this_thread::sleep_for(500ms);
  int answered = 0;
  const auto until = Clock::now() + 8s;
  while (Clock::now() < until) {
    httplib::Client client("127.0.0.1", s.port);
    client.set_connection_timeout(3s);
    client.set_read_timeout(3s);
    const auto t0 = Clock::now();
    const auto r = client.Get("/metrics");
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
    INFO("request " << answered << " took " << took.count() << " ms");
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(took < 3s);
    ++answered;
    std::this_thread::sleep_for(250ms);
  }
  CHECK(answered >= 10);
}

TEST_CASE("http: a request that trickles in faster than the read timeout is cut off at the request deadline",
          "[http][slowloris]") {
  Served s;
  RawClient c(s.port);
  const std::string request = "GET /metrics HTTP/1.1\r\nHost: " + s.host + "\r\n" + std::string(200, 'X');
  const auto t0 = Clock::now();
  std::size_t i = 0;
  while (i < request.size() && Clock::now() - t0 < 12s && c.send(request.substr(i++, 1))) {
    std::this_thread::sleep_for(300ms);  // well under the 1 s per-read timeout
  }
  c.read_until_closed(1s);
  const auto took = Clock::now() - t0;
  INFO("dropped after " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms, " << i
                        << " bytes");
  CHECK(c.closed());
  CHECK(took < 8s);  // request deadline 5 s
}

TEST_CASE("http: connections over the limit get 503 at once; the server recovers when they go", "[http][slowloris]") {
  Served s;
  std::vector<std::unique_ptr<RawClient>> held;
  for (std::size_t i = 0; i < s.options.max_connections; ++i) {
    held.push_back(std::make_unique<RawClient>(s.port));
    REQUIRE(held.back()->send("GET /metrics HTTP/1.1\r\n"));  // an unfinished request holds its connection
  }
  std::this_thread::sleep_for(200ms);
  const auto t0 = Clock::now();
  const auto out = get(s.port, "/metrics", s.host);
  CHECK(status_of(out) == 503);
  CHECK(header_of(out, "X-Frame-Options") == "DENY");
  CHECK(Clock::now() - t0 < 1s);
  held.clear();
  std::this_thread::sleep_for(200ms);
  CHECK(status_of(get(s.port, "/metrics", s.host)) == 200);
}

TEST_CASE("http: stop() returns promptly while slow clients are connected", "[http][slowloris]") {
  Served s;
  std::vector<std::unique_ptr<RawClient>> held;
  for (int i = 0; i < 4; ++i) {
    held.push_back(std::make_unique<RawClient>(s.port));
    REQUIRE(held.back()->send("GET /metrics HTTP/1.1\r\n"));
  }
  std::this_thread::sleep_for(200ms);
  const auto t0 = Clock::now();
  s.server->stop();
  CHECK(Clock::now() - t0 < 1s);
}

TEST_CASE("http: pause and resume take the queue name in the query too", "[http][actions]") {
  Served s;
  auto out = post(s.port, "/api/queues/pause?queue=emails", s.host);
  CHECK(status_of(out) == 200);
  CHECK(s.store.is_paused("emails"));
  out = post(s.port, "/api/queues/resume?queue=emails", s.host);
  CHECK(status_of(out) == 200);
  CHECK_FALSE(s.store.is_paused("emails"));
  CHECK(status_of(post(s.port, "/api/queues/pause?queue=bad%20name", s.host)) == 400);
  CHECK(status_of(post(s.port, "/api/queues/pause", s.host)) == 400);
  CHECK(status_of(round_trip(s.port, "POST /api/queues/pause?queue=emails HTTP/1.1\r\nHost: " + s.host +
                                         "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")) == 403);
  CHECK_FALSE(s.store.is_paused("emails"));
}

TEST_CASE("http: with a token every request needs it; the login form sets an HttpOnly SameSite cookie", "[http][auth]") {
  const std::string token = "s3cret-token-0123456789";
  Served s{{.token = token}};
  const auto req = [&](const std::string& line, const std::string& extra, const std::string& body = "") {
    return round_trip(s.port, line + " HTTP/1.1\r\nHost: " + s.host + "\r\n" + extra + "Content-Length: " +
                                  std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
  };
  // nothing without it: programs get 401, people the login form
  auto out = get(s.port, "/api/queues", s.host);
  CHECK(status_of(out) == 401);
  CHECK(header_of(out, "WWW-Authenticate") == "Bearer");
  CHECK(out.find("emails") == std::string::npos);
  CHECK(status_of(get(s.port, "/metrics", s.host)) == 401);
  CHECK(status_of(get(s.port, "/api/jobs/" + std::to_string(s.job), s.host)) == 401);
  out = get(s.port, "/", s.host);
  CHECK(status_of(out) == 303);
  CHECK(header_of(out, "Location") == "/login");
  CHECK(status_of(post(s.port, "/api/jobs/" + std::to_string(s.job) + "/cancel", s.host)) == 401);
  CHECK(s.store.get(s.job)->state == jobq::JobState::queued);
  CHECK(status_of(req("GET /api/queues", "Authorization: Bearer wrong-token-0123456789\r\n")) == 401);
  CHECK(status_of(req("GET /api/queues", "Authorization: Bearer " + token + "x\r\n")) == 401);
  CHECK(status_of(req("GET /api/queues", "Cookie: jobq_token=" + token.substr(1) + "\r\n")) == 401);
  // the login page needs none; it is a form without script
  out = get(s.port, "/login", s.host);
  CHECK(status_of(out) == 200);
  CHECK(out.find(R"(<form method="post" action="/login">)") != std::string::npos);
  CHECK(out.find("<script") == std::string::npos);
  CHECK(header_of(out, "Content-Security-Policy").find("form-action 'self'") != std::string::npos);
  // a wrong token: no cookie
  out = req("POST /login", "Content-Type: application/x-www-form-urlencoded\r\n", "token=guess-guess-guess-guess");
  CHECK(status_of(out) == 401);
  CHECK(header_of(out, "Set-Cookie").empty());
  // the right one, as a bearer header or through the form's cookie
  CHECK(status_of(req("GET /api/queues", "Authorization: Bearer " + token + "\r\n")) == 200);
  out = req("POST /login", "Content-Type: application/x-www-form-urlencoded\r\n", "token=" + token);
  CHECK(status_of(out) == 303);
  CHECK(header_of(out, "Location") == "/");
  const auto cookie = header_of(out, "Set-Cookie");
  CHECK(cookie.starts_with("jobq_token=" + token + ";"));
  CHECK(cookie.find("HttpOnly") != std::string::npos);
  CHECK(cookie.find("SameSite=Strict") != std::string::npos);
  const auto with_cookie = "Cookie: theme=dark; jobq_token=" + token + "\r\n";
  CHECK(status_of(req("GET /", with_cookie)) == 200);
  CHECK(status_of(req("GET /api/queues", with_cookie)) == 200);
  CHECK(status_of(req("POST /api/jobs/" + std::to_string(s.job) + "/cancel", with_cookie + "X-Jobq-Action: 1\r\n")) ==
        200);
  CHECK(s.store.get(s.job)->state == jobq::JobState::cancelled);
}

TEST_CASE("http: a non-loopback address needs a token or an explicit no_auth", "[http][auth]") {
  jobq::MemoryBackend store;
  jobq::Metrics m;
  using Server = jobq::HttpServer<jobq::MemoryBackend>;
  CHECK_THROWS_WITH((Server{store, m, {.host = "0.0.0.0", .port = 0}}), Catch::Contains("needs an access token"));
  CHECK_THROWS_AS((Server{store, m, {.host = "::", .port = 0}}), jobq::InvalidArgument);
  CHECK_NOTHROW(Server{store, m, {.host = "0.0.0.0", .port = 0, .no_auth = true}});
  CHECK_NOTHROW(Server{store, m, {.host = "0.0.0.0", .port = 0, .token = "0123456789abcdef"}});
  CHECK_NOTHROW(Server{store, m, {.host = "127.0.0.1", .port = 0}});
  CHECK_THROWS_AS((Server{store, m, {.port = 0, .token = "short"}}), jobq::InvalidArgument);
  CHECK_THROWS_AS((Server{store, m, {.port = 0, .token = "with space 0123456789"}}), jobq::InvalidArgument);
}
