#pragma once
// ReplyDropper: a loopback TCP proxy to the test server that can lose one reply. Armed with a
// needle, it passes the next request containing it on to the server, waits for the server's
// answer and closes the client's connection instead of forwarding it: exactly a connection lost
// after the server ran the command, which no restart or CLIENT KILL hits reliably.

#include <atomic>
#include <cerrno>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jobq/redis.hpp>

namespace redis_test {

/// @brief A proxy in front of the server of `url`; url() is the same URL through the proxy.
class ReplyDropper {
 public:
  explicit ReplyDropper(const std::string& url) : upstream_(jobq::detail::redis::parse_url(url)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(listen_fd_, 16) != 0 || ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      throw std::runtime_error("ReplyDropper: cannot listen on loopback");
    }
    port_ = ntohs(a.sin_port);
    url_ = url;
    const auto hp = upstream_.host + ":" + std::to_string(upstream_.port);
    const auto at = url_.find(hp);
    if (at == std::string::npos) throw std::runtime_error("ReplyDropper: the test URL must name host:port");
    url_.replace(at, hp.size(), "127.0.0.1:" + std::to_string(port_));
    accept_thread_ = std::thread([this] { accept_loop(); });
  }
  ReplyDropper(const ReplyDropper&) = delete;
  ReplyDropper& operator=(const ReplyDropper&) = delete;
  ~ReplyDropper() {
    stop_ = true;
    accept_thread_.join();
    std::vector<std::thread> pumps;
    {
      std::lock_guard lock(mutex_);
      pumps.swap(pumps_);
    }
    for (auto& t : pumps) t.join();
    ::close(listen_fd_);
  }

  /// @brief The server's URL through this proxy.
  [[nodiscard]] const std::string& url() const noexcept { return url_; }

  /// @brief Loses the reply to the next request whose bytes contain `needle` (once).
  void drop_reply_to(std::string needle) {
    std::lock_guard lock(mutex_);
    needle_ = std::move(needle);
  }

  /// @brief Replies lost so far.
  [[nodiscard]] int dropped() const noexcept { return dropped_; }

 private:
  void accept_loop() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      const int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) continue;
      std::lock_guard lock(mutex_);
      pumps_.emplace_back([this, client] { pump(client); });
    }
  }

  int connect_upstream() const {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(upstream_.port));
    if (fd < 0 || ::inet_pton(AF_INET, upstream_.host.c_str(), &a.sin_addr) != 1 ||
        ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      if (fd >= 0) ::close(fd);
      return -1;
    }
    return fd;
  }

  static bool send_all(int fd, const char* p, std::size_t n) {
    while (n > 0) {
      const auto w = ::send(fd, p, n, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return false;
      p += w;
      n -= static_cast<std::size_t>(w);
    }
    return true;
  }

  // Copies bytes both ways; a request with the needle makes the server's next bytes (its
  // reply: the connection is not pipelined) vanish with the connection.
  void pump(int client) {
    const int server = connect_upstream();
    bool drop_next = false;
    std::string tail;  // the last bytes from the client, for a needle split across reads
    std::vector<char> buf(64 * 1024);
    while (server >= 0 && !stop_) {
      pollfd p[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
      if (::poll(p, 2, 20) <= 0) continue;
      if (p[0].revents != 0) {
        const auto n = ::recv(client, buf.data(), buf.size(), 0);
        if (n <= 0) break;
        {
          std::lock_guard lock(mutex_);
          if (!needle_.empty()) {
            tail.append(buf.data(), static_cast<std::size_t>(n));
            if (tail.find(needle_) != std::string::npos) {
              drop_next = true;
              needle_.clear();
            }
            if (tail.size() > 4096) tail.erase(0, tail.size() - 4096);
          }
        }
        if (!send_all(server, buf.data(), static_cast<std::size_t>(n))) break;
      }
      if (p[1].revents != 0) {
        const auto n = ::recv(server, buf.data(), buf.size(), 0);
        if (n <= 0) break;
        if (drop_next) {
          ++dropped_;
          break;
        }
        if (!send_all(client, buf.data(), static_cast<std::size_t>(n))) break;
      }
    }
    if (server >= 0) ::close(server);
    ::close(client);
  }

  jobq::detail::redis::Url upstream_;
  std::string url_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> dropped_{0};
  std::mutex mutex_;
  std::string needle_;
  std::vector<std::thread> pumps_;
  std::thread accept_thread_;
};

}  // namespace redis_test
