// Passwords never appear in error messages, whichever way a URL is wrong (unreachable server,
// malformed URL, refused TLS, rejected AUTH), through the backends and through open_backend();
// PostgreSQL TLS settings in the URL's query string reach libpq.

#include <chrono>
#include <cstdlib>
#include <functional>
#include <string>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <jobq/open.hpp>

using namespace std::chrono_literals;

namespace {

constexpr const char* secret = "Sup3r-Secret-Pw";

std::string env_or_fail(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') {
    FAIL(name << " is not set: run the tests through scripts/test.sh");
  }
  return v;
}

// A loopback port nothing listens on (bound, then closed).
int closed_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// host:port of a test server URL ("scheme://[user@]host:port/...").
std::string host_port(const std::string& url) {
  auto rest = url.substr(url.find("://") + 3);
  if (const auto at = rest.find('@'); at != std::string::npos && at < rest.find('/')) rest = rest.substr(at + 1);
  return rest.substr(0, rest.find('/'));
}

// The message of the jobq::Error `fn` throws (fails the test if it throws nothing).
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const jobq::Error& e) {
    return e.what();
  }
  FAIL("no jobq::Error was thrown");
  return {};
}

}  // namespace

TEST_CASE("open_backend: refused URLs never show the password", "[security]") {
  for (const std::string& url : {std::string("mysql://root:") + secret + "@db/app",
                                std::string("sqlite:relative:") + secret + "@x",
                                std::string("ftp://u:") + secret + "@h/x?password=" + secret}) {
    const auto msg = error_of([&] { (void)jobq::open_backend(url); });
    INFO(msg);
    CHECK(msg.find(secret) == std::string::npos);
    CHECK(msg.find("***") != std::string::npos);
  }
  CHECK(jobq::parse_backend_url("sqlite:///var/lib/jobs.db").target == "/var/lib/jobs.db");
  CHECK(jobq::parse_backend_url("redis://h:1/0").kind == "redis");
}

#if JOBQ_OPEN_WITH_POSTGRES
TEST_CASE("PostgreSQL: errors from URLs with a password never contain it", "[security][postgres]") {
  const auto base = env_or_fail("JOBQ_TEST_POSTGRES_URL");
  const auto server = host_port(base);
  const auto closed = "127.0.0.1:" + std::to_string(closed_port());
  jobq::PostgresOptions fast;
  fast.connect_timeout = 2s;
  fast.reconnect_give_up = 1s;
  const std::vector<std::string> urls = {
      // unreachable server: URI form, keyword form, password in the query string
      "postgresql://app:" + std::string(secret) + "@" + closed + "/postgres",
      "host=127.0.0.1 port=" + closed.substr(10) + " user=app password=" + secret + " dbname=postgres",
      "postgresql://app@" + closed + "/postgres?password=" + secret,
      // malformed: bad port, unknown parameter, bad sslmode value, unterminated keyword string
      "postgresql://app:" + std::string(secret) + "@127.0.0.1:notaport/postgres",
      "postgresql://app:" + std::string(secret) + "@" + server + "/postgres?no_such_option=1",
      "postgresql://app:" + std::string(secret) + "@" + server + "/postgres?sslmode=bogus",
      "host=127.0.0.1 password='" + std::string(secret),
      // a real server that refuses: TLS required but not offered
      "postgresql://postgres:" + std::string(secret) + "@" + server + "/postgres?sslmode=require",
  };
  for (const auto& url : urls) {
    INFO(url);
    const auto direct = error_of([&] { jobq::PostgresBackend b(url, fast); });
    INFO(direct);
    CHECK(direct.find(secret) == std::string::npos);
    if (url.rfind("postgresql://", 0) == 0) {
      const auto opened = error_of([&] { (void)jobq::open_backend(url); });
      INFO(opened);
      CHECK(opened.find(secret) == std::string::npos);
    }
  }
}

TEST_CASE("PostgreSQL: TLS settings in the URL reach libpq", "[security][postgres][tls]") {
  const auto base = env_or_fail("JOBQ_TEST_POSTGRES_URL");
  const auto sep = base.find('?') == std::string::npos ? "?" : "&";
  // The test server has no TLS: sslmode=disable connects, require is refused by libpq itself,
  // and an invalid value is reported by libpq's parser - so the parameter got through.
  jobq::PostgresOptions o;
  o.schema = "jobq_tls_check";
  o.reconnect_give_up = 1s;
  CHECK_NOTHROW(jobq::PostgresBackend(base + sep + "sslmode=disable", o));
  CHECK_NOTHROW(jobq::PostgresBackend(base + sep + "sslmode=prefer&sslrootcert=/nonexistent/ca.pem", o));
  const auto required = error_of([&] { jobq::PostgresBackend b(base + sep + "sslmode=require", o); });
  CHECK_THAT(required, Catch::Contains("SSL"));
  const auto bogus = error_of([&] { jobq::PostgresBackend b(base + sep + "sslmode=bogus", o); });
  CHECK_THAT(bogus, Catch::Contains("sslmode"));
  const auto keyword = error_of([&] {
    jobq::PostgresBackend b("host=127.0.0.1 port=" + host_port(base).substr(host_port(base).rfind(':') + 1) +
                                " user=postgres dbname=postgres sslmode=require",
                            o);
  });
  CHECK_THAT(keyword, Catch::Contains("SSL"));
}
#endif

#if JOBQ_OPEN_WITH_REDIS
TEST_CASE("Redis: errors from URLs with a password never contain it", "[security][redis]") {
  const auto base = env_or_fail("JOBQ_TEST_REDIS_URL");
  const auto server = host_port(base);
  const auto closed = "127.0.0.1:" + std::to_string(closed_port());
  jobq::RedisOptions fast;
  fast.connect_timeout = 500ms;
  fast.reconnect_window = 500ms;
  const std::vector<std::string> urls = {
      "redis://:" + std::string(secret) + "@" + closed + "/0",            // unreachable
      "redis://bob:" + std::string(secret) + "@" + closed + "/0",         // unreachable, ACL user
      "redis://:" + std::string(secret) + "@" + server + "/0",            // AUTH refused: no password set
      "redis://bob:" + std::string(secret) + "@" + server + "/0",         // AUTH refused: no such user
      "redis://:" + std::string(secret) + "@127.0.0.1:notaport/0",       // malformed port
      "redis://:" + std::string(secret) + "@" + server + "/notadb",       // malformed db
      "redis://:" + std::string(secret) + "@" + server + "/0?timeout=1",  // query not supported
      "redis://:" + std::string(secret) + "%zz@" + server + "/0",         // bad escape
      "rediss://:" + std::string(secret) + "@" + server + "/0",           // TLS: not supported
  };
  for (const auto& url : urls) {
    INFO(url);
    const auto direct = error_of([&] { jobq::RedisBackend b(url, fast); });
    INFO(direct);
    CHECK(direct.find(secret) == std::string::npos);
    const auto opened = error_of([&] { (void)jobq::open_backend(url); });
    INFO(opened);
    CHECK(opened.find(secret) == std::string::npos);
  }
  const auto tls = error_of([&] { jobq::RedisBackend b("rediss://" + server + "/0", fast); });
  CHECK_THAT(tls, Catch::Contains("TLS (rediss://) is not supported"));
}
#endif
