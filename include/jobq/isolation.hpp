#pragma once

/// @file
/// Handlers that run in child processes with memory and CPU limits (Linux). A handler that
/// crashes, aborts, runs out of memory or spins takes only its child with it; the attempt fails
/// with an error a person understands and the Worker goes on.
///
/// Fork safety: a multi-threaded process must not fork and go on running arbitrary code. So
/// `Isolated::start()` forks once, while the program is still single-threaded, a small "zygote"
/// process that holds a copy of the registered handlers; every child is forked from the zygote
/// (single-threaded too) on request, and its socket is passed back to the parent. Children are
/// reused across jobs (one round trip over a socket per attempt) and replaced after
/// `max_jobs_per_child` attempts or when they die. Children die with the zygote and the zygote
/// with the parent (PR_SET_PDEATHSIG); the zygote reaps every child, the pool the zygote.
///
///     jobq::Isolated isolated;
///     isolated.handle<Render>(render);                 // runs in a child
///     auto pool = isolated.start({.memory_bytes = 512 << 20, .cpu = 60s});  // before any thread
///     jobq::Worker worker{store, {.queues = {"renders"}}};
///     worker.handle<Render>(pool.handler<Render>());   // the parent claims, heartbeats, records

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "jobq/error.hpp"
#include "jobq/job.hpp"
#include "jobq/worker.hpp"

namespace jobq {

/// @brief Limits of each child process (Isolated::start).
struct IsolationLimits {
  std::size_t memory_bytes = 0;       ///< address space of a child (RLIMIT_AS); 0 = none
  std::chrono::seconds cpu{0};        ///< CPU time per attempt (RLIMIT_CPU); 0 = none
  int max_jobs_per_child = 1'000;     ///< a child is replaced after this many attempts
  Millis grace{5'000};                ///< after a stop (timeout, lost lease, shutdown): SIGKILL then
};

namespace detail::iso {

inline bool write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    const auto w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

inline bool read_all(int fd, char* p, std::size_t n) {
  while (n > 0) {
    const auto r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

// Frames: a 4-byte little-endian length, then that much JSON.
inline bool send_frame(int fd, const nlohmann::json& j) {
  const auto text = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  const auto n = static_cast<std::uint32_t>(text.size());
  char head[4] = {static_cast<char>(n & 0xff), static_cast<char>((n >> 8) & 0xff),
                  static_cast<char>((n >> 16) & 0xff), static_cast<char>((n >> 24) & 0xff)};
  return write_all(fd, head, 4) && write_all(fd, text.data(), text.size());
}

inline std::optional<nlohmann::json> read_frame(int fd) {
  unsigned char head[4];
  if (!read_all(fd, reinterpret_cast<char*>(head), 4)) return std::nullopt;
  const std::uint32_t n = head[0] | (head[1] << 8) | (head[2] << 16) | (static_cast<std::uint32_t>(head[3]) << 24);
  std::string text(n, '\0');
  if (!read_all(fd, text.data(), n)) return std::nullopt;
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

// A pid and a descriptor in one message (SCM_RIGHTS).
inline bool send_child(int sock, pid_t pid, int fd) {
  char data[sizeof(pid_t)];
  std::memcpy(data, &pid, sizeof pid);
  iovec iov{data, sizeof data};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  auto* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  return ::sendmsg(sock, &msg, MSG_NOSIGNAL) == static_cast<ssize_t>(sizeof data);
}

inline std::pair<pid_t, int> recv_child(int sock) {
  char data[sizeof(pid_t)];
  iovec iov{data, sizeof data};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  if (::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) != static_cast<ssize_t>(sizeof data)) return {-1, -1};
  auto* c = CMSG_FIRSTHDR(&msg);
  if (c == nullptr || c->cmsg_type != SCM_RIGHTS) return {-1, -1};
  pid_t pid = 0;
  int fd = -1;
  std::memcpy(&pid, data, sizeof pid);
  std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
  return {pid, fd};
}

inline std::string signal_name(int sig) {
  const char* abbrev = ::sigabbrev_np(sig);
  return "signal " + std::to_string(sig) + (abbrev != nullptr ? " (SIG" + std::string(abbrev) + ")" : std::string{});
}

inline std::string mib(std::size_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

/// What a child died of, as an attempt error.
inline std::string death_text(int status, const IsolationLimits& lim) {
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    if (sig == SIGXCPU && lim.cpu.count() > 0) {
      return "handler exceeded its CPU limit (" + std::to_string(lim.cpu.count()) + " s)";
    }
    return "handler killed by " + signal_name(sig);
  }
  if (WIFEXITED(status)) {
    return "handler exited with status " + std::to_string(WEXITSTATUS(status)) + " without a result";
  }
  return "handler process ended without a result";
}

inline int threads_of_this_process() {
  std::ifstream in("/proc/self/status");
  std::string key;
  while (in >> key) {
    if (key == "Threads:") {
      int n = 0;
      in >> n;
      return n;
    }
    in.ignore(4096, '\n');
  }
  return 1;
}

using ChildFn = std::function<nlohmann::json(const JobRecord&, JobContext&)>;
using ChildHandlers = std::unordered_map<std::string, ChildFn>;

// The child's self-pipe: SIGTERM writes a byte, a watcher thread turns it into a stop request.
inline int& stop_pipe_write_end() {
  static int fd = -1;
  return fd;
}

extern "C" inline void on_child_sigterm(int) {
  const char b = 'T';
  [[maybe_unused]] const auto n = ::write(stop_pipe_write_end(), &b, 1);
}

[[noreturn]] inline void child_main(int sock, const ChildHandlers& handlers, const IsolationLimits& lim) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (lim.memory_bytes > 0) {
    const rlimit as{lim.memory_bytes, lim.memory_bytes};
    ::setrlimit(RLIMIT_AS, &as);
  }
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) ::_exit(120);
  stop_pipe_write_end() = pipe_fds[1];
  std::mutex m;
  std::stop_source* current = nullptr;
  std::thread([&m, &current, rd = pipe_fds[0]] {
    char b = 0;
    while (::read(rd, &b, 1) > 0 || errno == EINTR) {
      std::lock_guard lock(m);
      if (current != nullptr) current->request_stop();
    }
  }).detach();
  // The program's own crash handlers (a backtrace printer, a test framework's) would hide
  // what the child died of.
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGXCPU, SIGINT}) ::signal(sig, SIG_DFL);
  struct sigaction sa{};
  sa.sa_handler = on_child_sigterm;
  ::sigaction(SIGTERM, &sa, nullptr);
  // The parent's mask came through fork (a worker may block signals to wait for them).
  sigset_t wanted;
  sigemptyset(&wanted);
  sigaddset(&wanted, SIGTERM);
  sigaddset(&wanted, SIGXCPU);
  ::sigprocmask(SIG_UNBLOCK, &wanted, nullptr);
  std::mutex write_mutex;
  for (;;) {
    auto req = read_frame(sock);
    if (!req) ::_exit(0);  // the parent closed: retired, or the pool is gone
    if (lim.cpu.count() > 0) {
      rusage ru{};
      ::getrusage(RUSAGE_SELF, &ru);
      rlimit cpu{};
      ::getrlimit(RLIMIT_CPU, &cpu);
      // RLIMIT_CPU counts the process's whole life: this attempt may use `cpu` more.
      cpu.rlim_cur = static_cast<rlim_t>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + 1 + lim.cpu.count());
      if (cpu.rlim_max != RLIM_INFINITY && cpu.rlim_cur > cpu.rlim_max) cpu.rlim_cur = cpu.rlim_max;
      ::setrlimit(RLIMIT_CPU, &cpu);
    }
    nlohmann::json reply;
    try {
      JobRecord job;
      job.id = req->at("id").get<JobId>();
      job.queue = req->at("queue").get<std::string>();
      job.name = req->at("name").get<std::string>();
      job.attempts = req->at("attempt").get<int>();
      job.payload = std::move(req->at("payload"));
      std::vector<Dependency> deps;
      for (const auto& d : req->at("deps")) {
        job.depends_on.push_back(d.at("id").get<JobId>());
        deps.push_back({d.at("id").get<JobId>(), d.at("name").get<std::string>(), d.at("queue").get<std::string>(),
                        job_state_from_string(d.at("state").get<std::string>()), d.at("result"),
                        d.at("error").get<std::string>()});
      }
      std::stop_source stop;
      {
        std::lock_guard lock(m);
        current = &stop;
      }
      JobContext ctx(job, stop.get_token(),
                     [&](int pct, const std::string& msg) {
                       std::lock_guard lock(write_mutex);
                       return send_frame(sock, {{"progress", pct}, {"message", msg}});
                     },
                     [&](const JobRecord&) { return deps; });
      auto it = handlers.find(job.name);
      if (it == handlers.end()) throw Permanent("no isolated handler registered for job '" + job.name + "'");
      try {
        reply = {{"result", it->second(job, ctx)}};
        if (ctx.snoozed()) reply["snooze_ms"] = ctx.snoozed()->count();  // the parent snoozes it
      } catch (const Permanent& e) {
        reply = {{"error", e.what()}, {"permanent", true}};
      } catch (const std::bad_alloc&) {
        reply = {{"error", lim.memory_bytes > 0 ? "handler exceeded its memory limit (" + mib(lim.memory_bytes) + ")"
                                                : std::string("handler ran out of memory")},
                 {"permanent", false}};
      } catch (const std::exception& e) {
        reply = {{"error", e.what()}, {"permanent", false}};
      } catch (...) {
        reply = {{"error", "handler threw a non-standard exception"}, {"permanent", false}};
      }
      std::lock_guard lock(m);
      current = nullptr;
    } catch (const std::exception& e) {
      reply = {{"error", std::string("isolated child: malformed request: ") + e.what()}, {"permanent", true}};
    }
    std::lock_guard lock(write_mutex);
    if (!send_frame(sock, reply)) ::_exit(0);
  }
}

[[noreturn]] inline void zygote_main(int ctl, pid_t parent, const ChildHandlers& handlers,
                                     const IsolationLimits& lim) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(0);  // the parent died before the line above
  // Ctrl-C reaches the whole process group: the parent decides what stops, and how.
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGTERM, SIG_IGN);
  ::signal(SIGPIPE, SIG_IGN);
  for (;;) {
    auto req = read_frame(ctl);
    if (!req) {
      // The pool is gone: its children read end-of-file and exit; reap them all.
      while (::waitpid(-1, nullptr, 0) > 0 || errno == EINTR) {
      }
      ::_exit(0);
    }
    const auto op = req->value("op", std::string{});
    if (op == "spawn") {
      int sv[2];
      if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        send_child(ctl, -1, ctl);  // a descriptor must travel; the parent closes it
        continue;
      }
      const pid_t pid = ::fork();
      if (pid == 0) {
        ::close(ctl);
        ::close(sv[0]);
        child_main(sv[1], handlers, lim);
      }
      ::close(sv[1]);
      send_child(ctl, pid, sv[0]);
      ::close(sv[0]);
    } else if (op == "reap") {
      int status = 0;
      const pid_t pid = req->value("pid", -1);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      send_frame(ctl, {{"status", status}});
    }
  }
}

}  // namespace detail::iso

/// @brief A running set of child processes for isolated handlers (made by Isolated::start).
/// Thread-safe: Worker runners call its handlers at once, each attempt in a child of its own.
class ProcessPool {
 public:
  ProcessPool(ProcessPool&&) noexcept = default;
  ProcessPool& operator=(ProcessPool&&) noexcept = default;
  ProcessPool(const ProcessPool&) = delete;
  ProcessPool& operator=(const ProcessPool&) = delete;
  /// @brief Ends every child and the zygote, and reaps them.
  ~ProcessPool() {
    if (s_) s_->shutdown();
  }

  /// @brief A handler for Worker::handle<T> that runs each attempt in a child.
  template <Job T>
  std::function<nlohmann::json(const T&, JobContext&)> handler() {
    auto s = s_;
    return [s](const T&, JobContext& ctx) { return s->run(ctx); };
  }

  /// @brief The same for Worker::handle("name", ...) (untyped).
  std::function<nlohmann::json(const nlohmann::json&, JobContext&)> handler() {
    auto s = s_;
    return [s](const nlohmann::json&, JobContext& ctx) { return s->run(ctx); };
  }

  /// @brief Children alive now (idle and busy).
  [[nodiscard]] std::size_t children() const {
    std::lock_guard lock(s_->m);
    return s_->alive;
  }
  /// @brief Children started so far (replacements included).
  [[nodiscard]] std::size_t started() const {
    std::lock_guard lock(s_->m);
    return s_->spawned;
  }

 private:
  friend class Isolated;

  struct Child {
    pid_t pid = -1;
    int fd = -1;
    int jobs = 0;
  };

  struct State {
    IsolationLimits lim;
    pid_t zygote = -1;
    int ctl = -1;
    mutable std::mutex m;    // idle, alive, spawned
    std::mutex ctl_mutex;    // one request to the zygote at a time
    std::vector<Child> idle;
    std::size_t alive = 0;
    std::size_t spawned = 0;

    Child acquire() {
      {
        std::lock_guard lock(m);
        if (!idle.empty()) {
          auto c = idle.back();
          idle.pop_back();
          return c;
        }
      }
      std::lock_guard lock(ctl_mutex);
      if (!detail::iso::send_frame(ctl, {{"op", "spawn"}})) throw Error(ErrorCategory::backend, "isolation: the zygote is gone");
      auto [pid, fd] = detail::iso::recv_child(ctl);
      if (pid <= 0 || fd < 0) {
        if (fd >= 0) ::close(fd);
        throw Error(ErrorCategory::backend, "isolation: could not start a child process");
      }
      std::lock_guard l2(m);
      ++alive;
      ++spawned;
      return {pid, fd, 0};
    }

    int reap(pid_t pid) {
      std::lock_guard lock(ctl_mutex);
      int status = 0;
      if (detail::iso::send_frame(ctl, {{"op", "reap"}, {"pid", pid}})) {
        if (auto r = detail::iso::read_frame(ctl)) status = r->value("status", 0);
      }
      std::lock_guard l2(m);
      --alive;
      return status;
    }

    void retire(Child c) {
      ::close(c.fd);  // it reads end-of-file and exits
      reap(c.pid);
    }

    void give_back(Child c) {
      if (++c.jobs >= lim.max_jobs_per_child) return retire(c);
      std::lock_guard lock(m);
      idle.push_back(c);
    }

    nlohmann::json run(JobContext& ctx) {
      const auto& job = ctx.job();
      nlohmann::json deps = nlohmann::json::array();
      for (const auto& d : ctx.dependencies()) {
        deps.push_back({{"id", d.id}, {"name", d.name}, {"queue", d.queue}, {"state", to_string(d.state)},
                        {"result", d.result}, {"error", d.error}});
      }
      auto c = acquire();
      if (!detail::iso::send_frame(c.fd, {{"id", job.id}, {"queue", job.queue}, {"name", job.name},
                                          {"attempt", job.attempts}, {"payload", job.payload}, {"deps", deps}})) {
        ::close(c.fd);
        throw std::runtime_error(detail::iso::death_text(reap(c.pid), lim));
      }
      struct EventFd {
        int fd = ::eventfd(0, EFD_CLOEXEC);
        ~EventFd() { ::close(fd); }
      } stop_event;
      const int efd = stop_event.fd;
      std::stop_callback on_stop(ctx.stop_token(), [efd] {
        const std::uint64_t one = 1;
        [[maybe_unused]] const auto n = ::write(efd, &one, sizeof one);
      });
      bool stopping = false;
      bool killed = false;
      auto deadline = std::chrono::steady_clock::now();
      for (;;) {
        pollfd fds[2] = {{c.fd, POLLIN, 0}, {efd, static_cast<short>(stopping ? 0 : POLLIN), 0}};
        int timeout = -1;
        if (stopping && !killed) {
          const auto left = std::chrono::duration_cast<Millis>(deadline - std::chrono::steady_clock::now()).count();
          timeout = static_cast<int>(std::max<std::int64_t>(0, left));
        }
        const int n = ::poll(fds, 2, timeout);
        if (n < 0 && errno == EINTR) continue;
        if (n == 0) {  // the grace period is over
          ::kill(c.pid, SIGKILL);
          killed = true;
          continue;
        }
        if (fds[1].revents & POLLIN) {
          stopping = true;  // a timeout, a lost lease or a shutdown: ask politely first
          deadline = std::chrono::steady_clock::now() + lim.grace;
          ::kill(c.pid, SIGTERM);
          continue;
        }
        auto frame = detail::iso::read_frame(c.fd);
        if (!frame) {
          ::close(c.fd);
          const int status = reap(c.pid);
          if (killed) {
            throw std::runtime_error("handler did not stop within " + std::to_string(lim.grace.count()) +
                                     " ms of being asked and was killed");
          }
          throw std::runtime_error(detail::iso::death_text(status, lim));
        }
        if (frame->contains("progress")) {
          ctx.progress(frame->value("progress", 0), frame->value("message", std::string{}));
          continue;
        }
        if (killed) {  // it answered as the kill landed: replace it anyway
          retire(c);
        } else {
          give_back(c);
        }
        if (frame->contains("snooze_ms")) ctx.snooze(Millis{frame->at("snooze_ms").get<Millis::rep>()});
        if (frame->contains("result")) return std::move(frame->at("result"));
        const auto error = frame->value("error", std::string("handler failed"));
        if (frame->value("permanent", false)) throw Permanent(error);
        throw std::runtime_error(error);
      }
    }

    void shutdown() {
      std::vector<Child> all;
      {
        std::lock_guard lock(m);
        all.swap(idle);
      }
      for (auto& c : all) retire(c);
      if (ctl >= 0) ::close(ctl);
      ctl = -1;
      if (zygote > 0) {
        while (::waitpid(zygote, nullptr, 0) < 0 && errno == EINTR) {
        }
      }
      zygote = -1;
    }
  };

  explicit ProcessPool(std::shared_ptr<State> s) : s_(std::move(s)) {}
  std::shared_ptr<State> s_;
};

/// @brief The handlers that run in child processes. Register them all, then start() the pool
/// while the program is still single-threaded (first thing in main, before any Worker or
/// backend starts a thread).
class Isolated {
 public:
  /// @brief Registers the child-side handler of T: fn(const T&, JobContext&) or fn(const T&),
  /// returning void or a JSON-able result. In the child, JobContext has the job's id, name,
  /// payload, attempt and dependencies, progress() (forwarded to the backend by the parent)
  /// and a stop token (requested on a timeout, a lost lease or a shutdown).
  template <Job T, class F>
  void handle(F fn) {
    handlers_[std::string(T::job_name)] = detail::typed_handler<T>(std::move(fn));
  }

  /// @brief Registers the child-side handler of an untyped job: fn(const nlohmann::json&, JobContext&).
  template <class F>
  void handle(const std::string& name, F fn) {
    validate_job_name(name);
    handlers_[name] = detail::untyped_handler(std::move(fn));
  }

  /// @brief Forks the zygote that starts the children. Throws InvalidArgument when the process
  /// already runs other threads (fork would copy them half-way) or a limit is invalid.
  ProcessPool start(IsolationLimits limits = {}) const {
    if (limits.max_jobs_per_child < 1) throw InvalidArgument("isolation: max_jobs_per_child must be at least 1");
    check_duration(limits.grace, "isolation: grace");
#if defined(__SANITIZE_ADDRESS__)
    if (limits.memory_bytes > 0) {
      throw InvalidArgument("isolation: a memory limit (RLIMIT_AS) cannot work under AddressSanitizer");
    }
#endif
    if (detail::iso::threads_of_this_process() > 1) {
      throw InvalidArgument("isolation: start the process pool before the program starts any thread "
                            "(first thing in main): forking a multi-threaded process is not safe");
    }
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      throw Error(ErrorCategory::backend, std::string("isolation: socketpair: ") + std::strerror(errno));
    }
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
      ::close(sv[0]);
      ::close(sv[1]);
      throw Error(ErrorCategory::backend, std::string("isolation: fork: ") + std::strerror(errno));
    }
    if (pid == 0) {
      ::close(sv[0]);
      detail::iso::zygote_main(sv[1], parent, handlers_, limits);
    }
    ::close(sv[1]);
    auto s = std::make_shared<ProcessPool::State>();
    s->lim = limits;
    s->zygote = pid;
    s->ctl = sv[0];
    return ProcessPool(std::move(s));
  }

 private:
  detail::iso::ChildHandlers handlers_;
};

}  // namespace jobq
