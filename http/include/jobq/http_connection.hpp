#pragma once

/// @file
/// Connection handling of jobq::HttpServer (internal): how long a request may take to arrive,
/// how large its head may be, how many connections are served at once. cpp-httplib 0.11 reads a
/// request line or header line of any length into memory, any number of header lines, and gives
/// each read its own timeout (a client sending a byte a second holds a thread forever); its fixed
/// pool of 8 threads is then all an attacker needs to take. So on 0.11 (Debian 12's
/// libcpp-httplib-dev) jobq serves each connection itself through httplib::Server's
/// process_request() over a socket stream of its own. Other versions changed those internals:
/// there only httplib's public settings are used (per-read timeout, a larger pool).

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>

#include <httplib.h>
#include <nlohmann/json.hpp>

#ifndef _WIN32
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#endif

namespace jobq::detail {

/// @brief What a connection may cost (from HttpOptions).
struct HttpLimits {
  std::size_t max_connections;                 ///< served at once; more get 503
  std::chrono::milliseconds request_timeout;   ///< from a request's first byte to its last
  std::chrono::milliseconds read_timeout;      ///< longest silence inside a request
  std::size_t max_header_bytes;                ///< request line + header lines
  std::size_t max_body_bytes;                  ///< larger bodies are refused before being read
  std::chrono::milliseconds keep_alive_timeout{2000};  ///< idle wait for a connection's next request
  std::size_t keep_alive_requests = 100;               ///< requests per connection
  std::chrono::milliseconds write_timeout{5000};       ///< longest wait for the client to take each write
};

/// @brief True where jobq serves connections itself (see the file comment).
#ifdef _WIN32
inline constexpr bool http_own_connections = false;
#else
inline constexpr bool http_own_connections = std::string_view(CPPHTTPLIB_VERSION).substr(0, 5) == "0.11.";
#endif

/// @brief The headers every response carries: no framing (clickjacking), no MIME sniffing.
inline constexpr std::string_view http_default_csp = "default-src 'none'; frame-ancestors 'none'";

inline void add_security_headers(httplib::Response& res) {
  if (!res.has_header("X-Frame-Options")) res.set_header("X-Frame-Options", "DENY");
  if (!res.has_header("X-Content-Type-Options")) res.set_header("X-Content-Type-Options", "nosniff");
  if (!res.has_header("Content-Security-Policy")) {
    res.set_header("Content-Security-Policy", std::string(http_default_csp));
  }
}

/// @brief What a handler asks of the connection its request came on (set per request).
struct HttpRequestControl {
  enum class Trip { none, head_too_large, too_slow };
  bool close = false;      ///< close after this response (its body, if any, was not read)
  Trip trip = Trip::none;  ///< why reading the request stopped
};

/// @brief The control of the request the calling thread is serving (null where httplib serves).
inline thread_local HttpRequestControl* http_current_request = nullptr;

/// @brief A whole response written without httplib, for connections it never sees (JSON body).
inline std::string http_canned_response(int status, std::string_view reason, const std::string& message) {
  const auto body = nlohmann::json{{"error", message}}.dump();
  std::string r = "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason) +
                  "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                  "\r\nConnection: close\r\nCache-Control: no-store\r\nX-Frame-Options: DENY\r\n"
                  "X-Content-Type-Options: nosniff\r\nContent-Security-Policy: " +
                  std::string(http_default_csp) + "\r\n";
  if (status == 503) r += "Retry-After: 1\r\n";
  return r + "\r\n" + body;
}

#ifndef _WIN32

/// @brief Runs each connection on a thread of its own, at most `limit` at once; a connection over
/// the limit is handed back at once, on the accepting thread, with http_refusing set (answered
/// 503 and closed without reading it). Threads exist only while connections do.
class HttpConnectionThreads final : public httplib::TaskQueue {
 public:
  explicit HttpConnectionThreads(std::size_t limit) : limit_(limit) {}
  HttpConnectionThreads(const HttpConnectionThreads&) = delete;
  HttpConnectionThreads& operator=(const HttpConnectionThreads&) = delete;
  ~HttpConnectionThreads() override { shutdown(); }

  /// @brief Set while a refused connection is handed back.
  static inline thread_local bool refusing = false;

  void enqueue(std::function<void()> fn) override {
    if (!reserve()) return refuse(fn);
    try {
      // Detached: shutdown() waits for release(), the last thing a connection thread does with us.
      std::thread([this, fn] {
        fn();
        release();
      }).detach();
    } catch (const std::system_error&) {
      release();
      refuse(fn);
    }
  }

  /// @brief Waits until every connection thread is done.
  void shutdown() override {
    std::unique_lock lock(mutex_);
    idle_.wait(lock, [this] { return running_ == 0; });
  }

 private:
  bool reserve() {
    std::lock_guard lock(mutex_);
    if (running_ >= limit_) return false;
    ++running_;
    return true;
  }

  void release() {
    std::lock_guard lock(mutex_);
    if (--running_ == 0) idle_.notify_all();
  }

  static void refuse(const std::function<void()>& fn) {
    refusing = true;
    fn();
    refusing = false;
  }

  std::size_t limit_;
  std::size_t running_ = 0;
  std::mutex mutex_;
  std::condition_variable idle_;
};

/// @brief One client connection as httplib 0.11's Stream: reads are buffered, each waits at most
/// read_timeout and never past the request's deadline, and a request's head is cut off at
/// max_header_bytes (httplib reads it a byte at a time, so the count is exact). A template only so
/// that it is compiled where httplib has this Stream interface.
template <class Stream = httplib::Stream>
class HttpConnection final : public Stream {
 public:
  using Trip = HttpRequestControl::Trip;

  HttpConnection(int sock, const HttpLimits& limits) : sock_(sock), limits_(&limits) {}

  HttpRequestControl control;  ///< of the request being read

  /// @brief Waits up to `idle` for the next request to begin.
  bool wait_for_request(std::chrono::milliseconds idle) { return pos_ < end_ || wait(POLLIN, idle) > 0; }

  /// @brief A new request begins: its deadline starts now.
  void begin_request() {
    control = {};
    deadline_ = std::chrono::steady_clock::now() + limits_->request_timeout;
    in_head_ = true;
    head_bytes_ = 0;
    wrote_ = false;
  }

  /// @brief The request line and headers have been read (the body, if any, may follow).
  void end_of_head() { in_head_ = false; }

  /// @brief Whether any of the response was written.
  [[nodiscard]] bool wrote() const { return wrote_; }

  bool is_readable() const override { return pos_ < end_ || wait(POLLIN, read_wait()) > 0; }
  bool is_writable() const override { return wait(POLLOUT, limits_->write_timeout) > 0; }

  ssize_t read(char* ptr, size_t size) override {
    if (control.trip != Trip::none) return -1;
    if (pos_ == end_) {
      const auto left = read_wait();
      if (left <= std::chrono::milliseconds(0) || wait(POLLIN, left) == 0) {
        control.trip = Trip::too_slow;
        return -1;
      }
      const auto n = ::recv(sock_, buf_, sizeof buf_, 0);
      if (n <= 0) return n;
      pos_ = 0;
      end_ = static_cast<std::size_t>(n);
    }
    const auto n = std::min(size, end_ - pos_);
    if (in_head_) {
      if (head_bytes_ + n > limits_->max_header_bytes) {
        control.trip = Trip::head_too_large;
        return -1;
      }
      head_bytes_ += n;
    }
    std::memcpy(ptr, buf_ + pos_, n);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (!is_writable()) return -1;
    const auto n = ::send(sock_, ptr, size, MSG_NOSIGNAL);
    if (n > 0) wrote_ = true;
    return n;
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override { address(&::getpeername, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { address(&::getsockname, ip, port); }
  int socket() const override { return sock_; }

 private:
  // The wait allowed for the next bytes: read_timeout, cut short by the request's deadline.
  std::chrono::milliseconds read_wait() const {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - std::chrono::steady_clock::now());
    return std::min(left, limits_->read_timeout);
  }

  int wait(short events, std::chrono::milliseconds t) const {
    pollfd p{sock_, events, 0};
    int r = 0;
    do {
      r = ::poll(&p, 1, static_cast<int>(std::max<std::chrono::milliseconds::rep>(t.count(), 0)));
    } while (r < 0 && errno == EINTR);
    return r;
  }

  void address(int (*get)(int, sockaddr*, socklen_t*), std::string& ip, int& port) const {
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    char host[NI_MAXHOST] = "", serv[NI_MAXSERV] = "0";
    if (get(sock_, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
      ::getnameinfo(reinterpret_cast<sockaddr*>(&a), len, host, sizeof host, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV);
    }
    ip = host;
    port = std::atoi(serv);
  }

  int sock_;
  const HttpLimits* limits_;
  std::chrono::steady_clock::time_point deadline_{};
  bool in_head_ = true;
  std::size_t head_bytes_ = 0;
  bool wrote_ = false;
  char buf_[4096];
  std::size_t pos_ = 0, end_ = 0;
};

/// @brief httplib::Server whose connections jobq serves (httplib 0.11; see the file comment).
template <class Base = httplib::Server>
class GuardedHttpServer final : public Base {
 public:
  explicit GuardedHttpServer(const HttpLimits& limits) : limits_(limits) {
    this->new_task_queue = [this] { return new HttpConnectionThreads(limits_.max_connections); };
    this->set_payload_max_length(limits_.max_body_bytes);
  }

  /// @brief Accepts connections again (before listening).
  void open_connections() {
    std::lock_guard lock(mutex_);
    stopping_ = false;
  }

  /// @brief After binding: httplib 0.11 listens with a backlog of 5, so a burst of connections
  /// (a browser opens 6) waits out a 1 s SYN retransmit; listen() again with room for the limit.
  void widen_backlog() { ::listen(this->svr_sock_, static_cast<int>(std::max<std::size_t>(64, 2 * limits_.max_connections))); }

  /// @brief Cuts every open connection short (after stop(), so that no new one comes).
  void close_connections() {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    for (const int fd : open_) ::shutdown(fd, SHUT_RDWR);
  }

 private:
  using Trip = HttpRequestControl::Trip;

  bool process_and_close_socket(int sock) override {
    if (HttpConnectionThreads::refusing) {
      send_now(sock, http_canned_response(503, "Service Unavailable",
                                          "too many connections (HttpOptions::max_connections = " +
                                              std::to_string(limits_.max_connections) + ")"));
      ::close(sock);
      return false;
    }
    {
      std::lock_guard lock(mutex_);
      if (stopping_) {
        ::close(sock);
        return false;
      }
      open_.insert(sock);
    }
    HttpConnection<> conn(sock, limits_);
    http_current_request = &conn.control;
    bool ret = false;
    bool linger = false;
    for (auto left = limits_.keep_alive_requests; left > 0 && this->svr_sock_ != INVALID_SOCKET; --left) {
      if (!conn.wait_for_request(limits_.keep_alive_timeout)) break;
      conn.begin_request();
      bool closed = false;
      ret = this->process_request(conn, left == 1, closed, [&conn](httplib::Request& req) {
        conn.end_of_head();
        // RFC 9112 6.3: no Content-Length and no Transfer-Encoding means no body (httplib 0.11
        // would read until the client closes).
        if (!req.has_header("Content-Length") && !req.has_header("Transfer-Encoding")) {
          req.set_header("Content-Length", "0");
        }
      });
      if (conn.control.trip != Trip::none) {
        if (!conn.wrote()) send_now(sock, trip_response(conn.control.trip));
        ret = false;
        break;
      }
      if (conn.control.close) linger = true;
      if (!ret || closed || conn.control.close) break;
    }
    http_current_request = nullptr;
    {
      std::lock_guard lock(mutex_);
      open_.erase(sock);
    }
    if (linger) drain(sock);
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
    return ret;
  }

  std::string trip_response(Trip trip) const {
    return trip == Trip::head_too_large
               ? http_canned_response(431, "Request Header Fields Too Large",
                                      "request line and headers exceed " + std::to_string(limits_.max_header_bytes) +
                                          " bytes")
               : http_canned_response(408, "Request Timeout", "request not received in time");
  }

  // Best effort, never blocking: for connections that get no more of our time.
  static void send_now(int sock, const std::string& data) {
    [[maybe_unused]] const auto n = ::send(sock, data.data(), data.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  }

  // After a refusal whose body was left unread: closing with unread data would send a reset that
  // can destroy our answer in the client's buffers, so finish sending, then read and drop what the
  // client already sent, a little and briefly.
  static void drain(int sock) {
    ::shutdown(sock, SHUT_WR);
    char buf[4096];
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
    for (std::size_t total = 0; total < 256 * 1024 && std::chrono::steady_clock::now() < until;) {
      pollfd p{sock, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      const auto n = ::recv(sock, buf, sizeof buf, 0);
      if (n <= 0) return;
      total += static_cast<std::size_t>(n);
    }
  }

  HttpLimits limits_;
  std::mutex mutex_;
  std::set<int> open_;
  bool stopping_ = false;
};

#endif  // !_WIN32

/// @brief httplib::Server with only its public settings (httplib versions other than 0.11).
template <class Base = httplib::Server>
class PlainHttpServer final : public Base {
 public:
  explicit PlainHttpServer(const HttpLimits& limits) {
    const auto threads = limits.max_connections;
    this->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    this->set_payload_max_length(limits.max_body_bytes);
    this->set_read_timeout(limits.read_timeout);
    this->set_write_timeout(limits.write_timeout);
    this->set_keep_alive_timeout(std::max<time_t>(1, limits.keep_alive_timeout.count() / 1000));
    this->set_keep_alive_max_count(limits.keep_alive_requests);
  }
  void open_connections() {}
  void widen_backlog() {}
  void close_connections() {}
};

#ifdef _WIN32
using HttpListener = PlainHttpServer<>;
#else
/// @brief The httplib::Server HttpServer uses.
using HttpListener = std::conditional_t<http_own_connections, GuardedHttpServer<>, PlainHttpServer<>>;
#endif

}  // namespace jobq::detail
