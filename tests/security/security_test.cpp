// Passwords never appear in error messages, whichever way a URL is wrong (unreachable server,
// malformed URL, refused TLS, rejected AUTH), through the backends and through open_backend(),
// not even a piece of one cut at a character a parser stops at ('/', '@', '[', '%zz');
// PostgreSQL TLS settings in the URL's query string reach libpq.

#include <chrono>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

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

// A password in two halves that must never show, whatever separates them: libpq and naive
// parsers cut a password at '/', '@', '[' or a bad %-escape and quote a piece of it.
constexpr const char* head = "Sup3rHead";
constexpr const char* tail = "T4ilSecret";

// Fails the test if `msg` shows either half.
void check_hidden(const std::string& msg) {
  INFO(msg);
  CHECK(msg.find(head) == std::string::npos);
  CHECK(msg.find(tail) == std::string::npos);
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

TEST_CASE("PostgreSQL: malformed connection strings never show any piece of the password",
          "[security][postgres]") {
  const auto server = host_port(env_or_fail("JOBQ_TEST_POSTGRES_URL"));
  const auto port = server.substr(server.rfind(':') + 1);
  const std::string h = head, t = tail, pw = h + t;
  jobq::PostgresOptions fast;
  fast.connect_timeout = 2s;
  fast.reconnect_give_up = 1s;
  const std::vector<std::string> strings = {
      // libpq's URI parser quotes the whole URI or the password in its message
      "postgresql://u:" + pw + "@[::1/db",
      "postgresql://u:" + pw + "@[]:5432",
      "postgresql://u:" + pw + "@[::1]x",
      "postgresql://u:" + h + "%zz" + t + "@" + server + "/db",
      "postgresql://u:" + h + "%00" + t + "@" + server + "/db",
      "postgresql://u:" + h + "%" + t + "%@" + server + "/db",
      "postgresql://" + server + "/db?password=" + h + "%zz" + t,
      "postgresql://" + server + "/db?password=" + h + "=" + t,
      "postgresql://" + server + "/db?password=" + h + "&" + t,
      // libpq would end the userinfo at the first '/' or '@' and take the rest of the password
      // for the host, port or database name (which its messages and the server's quote)
      "postgresql://u:" + h + "/" + t + "@127.0.0.1:" + port + "/db",
      "postgres://u:" + h + "/" + t + "@" + server + "/db",
      "postgresql://u:5432/" + pw + "@" + server + "/db",
      "postgresql://u:" + h + "@" + t + "@" + server + "/db",
      "postgresql://u:" + pw + "@" + server + "/db?application_name=x@y",
      "postgresql://" + server + ",h&password=" + pw + ":1,/db",  // a password= before the query
      "postgresql://" + server + "/db password=" + pw,
      // the password in other forms, each next to a refused part
      "postgresql://u:" + h + "[" + t + "@" + server + "/db?sslmode=bogus",
      "postgresql://u:" + h + "?" + t + "@" + server + "/db?no_such_option=1",
      "postgresql://u:" + h + "#" + t + "@" + server + "/db?sslmode=bogus",
      "postgresql://" + server + "/db?pass%77ord=" + pw + "&sslmode=bogus",
      "postgresql://" + server + "/db?sslpassword=" + pw + "&sslmode=bogus",
      // keyword/value strings: an unquoted space, an unterminated quote, a quoted password
      // next to a bad value, a URL as the database name (the server says it does not exist)
      "host=127.0.0.1 port=" + port + " password=" + h + " " + t,
      "host=127.0.0.1 port=" + port + " password='" + h + " " + t,
      "host=127.0.0.1 port=" + port + " password = '" + h + "\\' " + t + "' sslmode=bogus",
      "host=127.0.0.1 port=" + port + " user=postgres dbname=postgresql://u:" + pw + "@h/x",
  };
  for (const auto& conninfo : strings) {
    INFO(conninfo);
    check_hidden(error_of([&] { jobq::PostgresBackend b(conninfo, fast); }));
    check_hidden(error_of([&] { (void)jobq::open_backend(conninfo); }));
    try {
      (void)jobq::parse_backend_url(conninfo);
    } catch (const jobq::Error& e) {
      check_hidden(e.what());
    }
  }
  // Refused before libpq sees it, with a message that says what to do.
  const auto slash = error_of([&] { jobq::PostgresBackend b("postgresql://u:" + h + "/" + t + "@" + server, fast); });
  CHECK_THAT(slash, Catch::Contains("postgresql://u:***@" + server) && Catch::Contains("%2F"));
  const auto bracket = error_of([&] { jobq::PostgresBackend b("postgresql://u:" + pw + "@[::1/db", fast); });
  CHECK_THAT(bracket, Catch::Contains("invalid connection string 'postgresql://u:***@[::1/db'") &&
                          Catch::Contains("[IPv6]"));
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

TEST_CASE("Redis: malformed URLs never show any piece of the password", "[security][redis]") {
  const auto server = host_port(env_or_fail("JOBQ_TEST_REDIS_URL"));
  const auto closed = "127.0.0.1:" + std::to_string(closed_port());
  const std::string h = head, t = tail, pw = h + t;
  jobq::RedisOptions fast;
  fast.connect_timeout = 500ms;
  fast.reconnect_window = 500ms;
  const std::vector<std::string> urls = {
      // what a password holds unencoded ('/' in base64 ones): parsed, then unreachable or refused
      "redis://u:" + h + "/" + t + "@" + closed + "/0",
      "redis://u:" + h + "/" + t + "@" + server + "/0",
      "redis://:" + h + "/" + t + "@" + server + "/0",
      "redis://u:" + h + "@" + t + "@" + server + "/0",
      "redis://u:" + h + ":" + t + "@" + server + "/0",
      "redis://:" + h + "?" + t + "@" + server + "/0",
      "redis://:" + h + "#" + t + "@" + server + "/0",
      "redis://:" + h + "[" + t + "@" + server + "/0",
      "redis://:" + h + "%00" + t + "@" + server + "/0",
      // malformed around the password
      "redis://:" + h + "%zz" + t + "@" + server + "/0",
      "redis://:" + h + "%" + t + "%@" + server + "/0",
      "redis://u:" + h + "/" + t + "@127.0.0.1:notaport/0",
      "redis://u:" + h + "/" + t + "@" + server + "/x",
      "redis://u:" + pw + "@[::1/0",
      "redis://u:" + pw + "@[]:6379",
      "redis://u:" + pw + "@[::1]x",
      "redis://u:" + pw + "@" + server + "/0?password=" + pw,
      "redis://" + server + "/0?password=" + pw,
      "rediss://u:" + h + "/" + t + "@" + server + "/0",
  };
  for (const auto& url : urls) {
    INFO(url);
    check_hidden(error_of([&] { jobq::RedisBackend b(url, fast); }));
    check_hidden(error_of([&] { (void)jobq::open_backend(url); }));
  }
}
#endif
