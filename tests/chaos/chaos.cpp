// jobq-chaos: enqueue N jobs, drain them with worker processes that are SIGKILLed and replaced
// at random, restart the server mid-run (PostgreSQL, Redis), then check from a ledger kept
// outside the queue that nothing was lost, nothing is stuck, no stale completion was accepted,
// every repeated run is explained by an expired lease, and every expired lease by a worker that
// held it: one that was killed, or one whose handler ran. A job may end dead only that way
// (--max-attempts 1 or 2: each kill kills the jobs its worker held); a job whose attempt was used
// by a claim that no worker received ("runs at least once" broken) fails the run. Prints one JSON
// line; exit 1 when an invariant fails, 2 on a usage or set-up error.
// With --flows, a producer enqueues chords and chains across three queues during the drain
// instead, and the check adds: every flow whole in the store, and every run of a member with
// dependencies saw them all completed (D lines), after they had finished (the store's word).
// With --cancels N, a canceller cancels about N jobs during the drain, most of them while they
// run (active), from its own store connection; the check adds: every job cancel() said it
// cancelled ends cancelled with no completion accepted (no C line), and a job ends cancelled
// only if a cancel reached it.
//
//   jobq-chaos driver --backend sqlite|postgres|redis|memory [--jobs N] [--workers P] ...
//   jobq-chaos worker ...   (started by the driver; not meant to be run by hand)
//
// The ledger: one append-only file per worker process (ledger-<pid>.log), one line per fact,
// each written with a single write(2) so a SIGKILL leaves whole lines only:
//   R <id> <attempt> <token> <pid>   a handler ran to its end (written just before it returns)
//   C <id> <attempt> <pid>           the Worker reported the completion accepted (on_event)
//   L <id> <attempt> <pid>           a result was refused: the lease was no longer ours
//   F <id> <attempt> <pid>           an attempt failed (never expected here)
//   D <id> <attempt> <pid> <ms> <deps> <completed> <results>   what a flow member saw of its
//                                    dependencies when its handler started at <ms>
//   E <pid> <message>                an error the worker survived (on_error)
//   P <pid> <seq> <limit> <ms>       a claim for up to <limit> jobs is sent at wall-clock <ms>
//   K <id> <attempt> <token> <pid>   a job that claim returned (before the Worker has it)
//   Q <pid> <seq> <n>                the claim returned n jobs; -1: it threw, the worker has none
// A killed worker's last claim may have P without Q: it may have leased up to <limit> jobs that
// no K line names, with a lease deadline between <ms> + lease and the kill + lease. Any other
// attempt whose lease expired must have a K line.
// The memory backend lives in one process, so there the "processes" are Worker objects over
// FaultBackend views of one MemoryBackend, and a kill cuts the view's link for good.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <jobq/jobq.hpp>
#include <jobq/memory.hpp>
#include <jobq/open.hpp>

#if JOBQ_OPEN_WITH_SQLITE
#include <sqlite3.h>
#endif

#include "chaos/fault_backend.hpp"

extern char** environ;

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* job_name = "chaos";

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Wall-clock milliseconds, the time base of the backends' clocks (and so of error times).
std::int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Appends whole lines to one file with one write(2) each (O_APPEND: atomic between threads).
class Ledger {
 public:
  explicit Ledger(const std::string& path) : fd_(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) {
    if (fd_ < 0) throw std::runtime_error("cannot open ledger " + path + ": " + std::strerror(errno));
  }
  Ledger(const Ledger&) = delete;
  Ledger& operator=(const Ledger&) = delete;
  ~Ledger() { ::close(fd_); }

  void line(std::string s) {
    s += '\n';
    const char* p = s.data();
    std::size_t left = s.size();
    while (left > 0) {
      const auto n = ::write(fd_, p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        std::perror("ledger write");
        std::_Exit(3);  // a ledger we cannot trust makes the whole run meaningless
      }
      p += n;
      left -= static_cast<std::size_t>(n);
    }
  }

 private:
  int fd_;
};

struct WorkerConfig {
  std::string queue = "chaos";
  int concurrency = 4;
  int lease_ms = 2000;
  int work_max_us = 2000;
  bool flows = false;  // flow mode: three queues, and dependents record what they saw (D lines)
};

// Flow mode spreads each flow over three queues (a chain of 3 visits each).
std::vector<std::string> queues_of(const WorkerConfig& c) {
  if (!c.flows) return {c.queue};
  return {c.queue, c.queue + "-b", c.queue + "-c"};
}

jobq::WorkerOptions worker_options(const WorkerConfig& c, Ledger& ledger, long pid) {
  jobq::WorkerOptions o;
  o.queues = queues_of(c);
  o.concurrency = c.concurrency;
  o.lease = jobq::Millis{c.lease_ms};
  o.poll_interval = 200ms;
  o.maintenance_interval = 250ms;
  o.shutdown_grace = 2s;
  o.on_error = [&ledger, pid](const std::exception& e) {
    std::string msg = e.what();
    std::replace(msg.begin(), msg.end(), '\n', ' ');
    ledger.line("E " + std::to_string(pid) + " " + msg);
  };
  o.on_event = [&ledger, pid](const jobq::JobEvent& e) {
    const char* tag = nullptr;
    switch (e.kind) {
      case jobq::JobEvent::Kind::completed: tag = "C"; break;
      case jobq::JobEvent::Kind::lost_lease: tag = "L"; break;
      case jobq::JobEvent::Kind::failed: tag = "F"; break;
      default: return;
    }
    ledger.line(std::string(tag) + " " + std::to_string(e.id) + " " + std::to_string(e.attempt) + " " +
                std::to_string(pid));
  };
  return o;
}

// Records each claim in the ledger: P before it is sent, K per job it returned, Q after it.
template <class B>
void observe_claims(jobq_chaos::FaultBackend<B>& view, Ledger& ledger, long pid) {
  auto seq = std::make_shared<std::uint64_t>(0);  // one claim at a time per Worker (fetching_)
  const auto p = std::to_string(pid);
  view.observe_claims({[&ledger, seq, p](const jobq::ClaimRequest& r) {
                         ledger.line("P " + p + " " + std::to_string(++*seq) + " " + std::to_string(r.limit) + " " +
                                     std::to_string(wall_ms()));
                       },
                       [&ledger, seq, p](const std::vector<jobq::JobRecord>* jobs) {
                         if (jobs) {
                           for (const auto& j : *jobs) {
                             ledger.line("K " + std::to_string(j.id) + " " + std::to_string(j.attempts) + " " +
                                         j.lease_token + " " + p);
                           }
                         }
                         ledger.line("Q " + p + " " + std::to_string(*seq) + " " +
                                     (jobs ? std::to_string(jobs->size()) : std::string("-1")));
                       }});
}

// A flow member with dependencies records what ctx.dependencies() showed it: D <id> <attempt>
// <pid> <ms> <deps> <completed> <results>, where <results> counts completed dependencies whose
// result is their own id (what every handler returns in flow mode). A server restart may fail the
// read; it is retried, as a handler that must have its inputs would.
void record_dependencies(jobq::JobContext& ctx, Ledger& ledger, long pid) {
  const auto started_ms = wall_ms();
  for (;;) {
    try {
      const auto& deps = ctx.dependencies();
      std::size_t completed = 0, results = 0;
      for (const auto& d : deps) {
        if (d.state != jobq::JobState::completed) continue;
        ++completed;
        if (d.result.is_number_integer() && d.result.get<jobq::JobId>() == d.id) ++results;
      }
      ledger.line("D " + std::to_string(ctx.id()) + " " + std::to_string(ctx.attempt()) + " " + std::to_string(pid) +
                  " " + std::to_string(started_ms) + " " + std::to_string(deps.size()) + " " +
                  std::to_string(completed) + " " + std::to_string(results));
      return;
    } catch (const jobq::Error& e) {
      if (!e.is_transient() || ctx.stop_requested()) throw;
      std::this_thread::sleep_for(100ms);
    }
  }
}

template <class B>
void register_handler(jobq::Worker<B>& w, const WorkerConfig& c, Ledger& ledger, long pid) {
  w.handle(job_name, [&ledger, pid, max_us = c.work_max_us, flows = c.flows](const nlohmann::json&,
                                                                              jobq::JobContext& ctx) {
    if (flows && !ctx.job().depends_on.empty()) record_dependencies(ctx, ledger, pid);
    thread_local std::mt19937 rng{std::random_device{}()};
    if (max_us > 0) {
      std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(0, max_us)(rng)));
    }
    ledger.line("R " + std::to_string(ctx.id()) + " " + std::to_string(ctx.attempt()) + " " +
                ctx.job().lease_token + " " + std::to_string(pid));
    return flows ? nlohmann::json(ctx.id()) : nlohmann::json();
  });
}

jobq::OpenOptions open_options(const std::string& schema, const std::string& prefix) {
  jobq::OpenOptions o;
  o.postgres_schema = schema;
  o.redis_prefix = prefix;
  return o;
}

// Opens the store, retrying while the server is down (a worker may start during a restart).
jobq::AnyBackend open_retrying(const std::string& url, const jobq::OpenOptions& o) {
  const auto deadline = Clock::now() + 60s;
  for (;;) {
    try {
      return jobq::open_backend(url, o);
    } catch (const jobq::Error& e) {
      if (!e.is_transient() || Clock::now() > deadline) throw;
      std::this_thread::sleep_for(100ms);
    }
  }
}

int worker_main(const std::string& url, const std::string& schema, const std::string& prefix,
                const std::string& ledger_path, const WorkerConfig& c) {
  // Blocked already by the driver's spawn; again here for a worker started by other means. A
  // SIGTERM that arrives while the store is being opened waits for run_until_signal().
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  const long pid = static_cast<long>(::getpid());
  Ledger ledger(ledger_path);
  auto store = open_retrying(url, open_options(schema, prefix));
  jobq_chaos::FaultBackend<jobq::AnyBackend> view(store, "store");  // never cut: records claims
  observe_claims(view, ledger, pid);
  jobq::Worker<jobq_chaos::FaultBackend<jobq::AnyBackend>> w(view, worker_options(c, ledger, pid));
  register_handler(w, c, ledger, pid);
  w.run_until_signal();
  return 0;
}

// ---------------------------------------------------------------------------------------------
// The driver.

struct Options {
  std::string backend;
  std::string url;
  int jobs = 3000;
  int workers = 3;
  int kill_min_ms = 200;
  int kill_max_ms = 800;
  int restarts = -1;  // -1: 2 for postgres/redis, else 0
  int timeout_s = 0;  // 0: 120 s + 20 ms per job
  int min_faults = 1;  // a run that injected fewer faults proves nothing
  int max_attempts = 1000;  // per job; 1 or 2 make every attempt used without a run visible
  unsigned seed = 0;
  std::string dir;
  bool keep = false;
  int chord_size = 50;   // flow mode: members of each chord
  int flow_gap_ms = 10;  // flow mode: the producer's pause between two flows
  int cancels = 0;       // cancel mode: jobs to cancel during the drain
  WorkerConfig worker;
};

// Flow mode: what the producer enqueues while workers are killed, until about opt.jobs members:
// alternately a chord (chord_size members in the first queue, the callback in the second) and
// a chain of 3 through all three queues. Each payload says what its flow should look like in the
// store: its number of members and of dependencies.
std::vector<jobq::Flow> plan_flows(const Options& opt, std::size_t& members) {
  const auto queues = queues_of(opt.worker);
  const auto job = [&](std::size_t queue, int flow, int i, int size, std::size_t deps) {
    jobq::NewJob j;
    j.queue = queues[queue];
    j.name = job_name;
    j.payload = {{"flow", flow}, {"i", i}, {"size", size}, {"deps", deps}};
    j.max_attempts = opt.max_attempts;
    j.backoff = jobq::Backoff::fixed(10ms);
    return j;
  };
  std::vector<jobq::Flow> flows;
  members = 0;
  for (int k = 0; members < static_cast<std::size_t>(opt.jobs); ++k) {
    jobq::Flow f;
    if (k % 2 == 0) {
      const int n = opt.chord_size;
      std::vector<jobq::NewJob> group;
      for (int i = 0; i < n; ++i) group.push_back(job(0, k, i, n + 1, 0));
      f.chord(std::move(group), job(1, k, n, n + 1, static_cast<std::size_t>(n)));
    } else {
      f.chain({job(0, k, 0, 3, 0), job(1, k, 1, 3, 1), job(2, k, 2, 3, 1)});
    }
    members += f.size();
    flows.push_back(std::move(f));
  }
  return flows;
}

// Flow mode: enqueues the planned flows one by one on its own store, retrying through server
// restarts. A retried enqueue_flow may have been stored the first time too: the final check
// reads every flow from the store, so such a twin is checked like any other.
struct Producer {
  std::mutex mutex;
  std::vector<jobq::JobId> ids;  // every member id enqueue_flow returned
  std::size_t stored = 0;        // flows whose enqueue_flow returned
  std::size_t retries = 0;       // enqueue_flow calls that threw a transient error
  std::string error;
  std::atomic<bool> done{false};
  double seconds = 0;

  template <class B>
  void run(B& store, const std::vector<jobq::Flow>& flows, int gap_ms) {
    const auto t0 = Clock::now();
    for (const auto& f : flows) {
      for (const auto give_up = Clock::now() + 60s;;) {
        try {
          auto got = store.enqueue_flow(f.spec());
          std::lock_guard lock(mutex);
          ids.insert(ids.end(), got.begin(), got.end());
          ++stored;
          break;
        } catch (const jobq::Error& e) {
          if (!e.is_transient() || Clock::now() > give_up) {
            std::lock_guard lock(mutex);
            error = e.what();
            done = true;
            return;
          }
          ++retries;
          std::this_thread::sleep_for(100ms);
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(gap_ms));
    }
    seconds = seconds_since(t0);
    done = true;
  }
};

// Cancel mode: cancels jobs during the drain from its own store connection, through server
// restarts. Three in four picks are active jobs (running, or leased ahead), the rest queued.
// What cancel() said of each: cancelled (true), refused (false: it finished first), or unknown
// (the call threw, so it may have committed).
struct Canceller {
  std::mutex mutex;
  std::set<jobq::JobId> cancelled, unknown;
  std::size_t refused = 0, picked_active = 0, errors = 0;
  std::string error;  // it could not open the store
  std::atomic<bool> stop{false};

  template <class B>
  void run(B& store, const std::string& queue, int target, unsigned seed) {
    std::mt19937 rng(seed);
    for (int sent = 0; sent < target && !stop;) {
      std::this_thread::sleep_for(5ms);
      const bool active = std::uniform_int_distribution<int>(0, 3)(rng) != 0;
      std::vector<jobq::JobRecord> page;
      try {
        page = store.list(queue, active ? jobq::JobState::active : jobq::JobState::queued, {0, 100});
      } catch (const std::exception&) {
        ++errors;  // the server is restarting
        continue;
      }
      if (page.empty()) continue;
      const auto id = page[std::uniform_int_distribution<std::size_t>(0, page.size() - 1)(rng)].id;
      ++sent;
      try {
        const bool ok = store.cancel(id);
        std::lock_guard lock(mutex);
        if (ok) {
          cancelled.insert(id);
          picked_active += active ? 1 : 0;
        } else {
          ++refused;
        }
      } catch (const std::exception&) {
        std::lock_guard lock(mutex);
        unknown.insert(id);
        ++errors;
      }
    }
  }
};

// Counts summed over queues.
template <class B>
jobq::Counts counts_of(B& store, const std::vector<std::string>& queues) {
  jobq::Counts sum{};
  for (const auto& q : queues) {
    const auto c = store.counts(q);
    sum.queued += c.queued;
    sum.active += c.active;
    sum.completed += c.completed;
    sum.dead += c.dead;
    sum.cancelled += c.cancelled;
    sum.waiting += c.waiting;
  }
  return sum;
}

// One worker, a process or (memory) an in-process Worker.
struct Slot {
  long id = 0;  // pid, or incarnation number for memory
  pid_t pid = 0;
  std::unique_ptr<jobq_chaos::FaultBackend<jobq::MemoryBackend>> view;
  std::unique_ptr<jobq::Worker<jobq_chaos::FaultBackend<jobq::MemoryBackend>>> worker;
  std::unique_ptr<Ledger> ledger;
};

struct Run {
  Options opt;
  std::string self;     // this program
  std::string url;      // the store
  std::string schema;   // PostgreSQL schema of this run
  std::string prefix;   // Redis key prefix of this run
  std::string restart;  // restart script (postgres/redis)
  jobq::MemoryBackend* memory = nullptr;
  long next_incarnation = 1;
  std::vector<Slot> slots;
  std::set<long> killed;
  std::map<long, std::int64_t> kill_ms;  // when each was killed (wall clock)
  std::vector<std::thread> reapers;  // memory: crashed Workers being torn down
  int worker_failures = 0;           // processes that exited on their own or badly
  std::vector<std::string> notes;

  std::string ledger_path(long id) const { return opt.dir + "/ledger-" + std::to_string(id) + ".log"; }

  Slot spawn() {
    Slot s;
    if (memory) {
      s.id = next_incarnation++;
      s.ledger = std::make_unique<Ledger>(ledger_path(s.id));
      s.view = std::make_unique<jobq_chaos::FaultBackend<jobq::MemoryBackend>>(*memory, "memory");
      observe_claims(*s.view, *s.ledger, s.id);
      s.worker = std::make_unique<jobq::Worker<jobq_chaos::FaultBackend<jobq::MemoryBackend>>>(
          *s.view, worker_options(opt.worker, *s.ledger, s.id));
      register_handler(*s.worker, opt.worker, *s.ledger, s.id);
      s.worker->start();
      return s;
    }
    // The ledger path needs the child's pid, which only the child knows: it takes "{pid}".
    std::vector<std::string> args = {self,
                                     "worker",
                                     "--url",
                                     url,
                                     "--schema",
                                     schema,
                                     "--prefix",
                                     prefix,
                                     "--queue",
                                     opt.worker.queue,
                                     "--ledger",
                                     opt.dir + "/ledger-{pid}.log",
                                     "--lease-ms",
                                     std::to_string(opt.worker.lease_ms),
                                     "--concurrency",
                                     std::to_string(opt.worker.concurrency),
                                     "--work-max-us",
                                     std::to_string(opt.worker.work_max_us)};
    if (opt.worker.flows) args.emplace_back("--flows");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    // The child starts with SIGINT/SIGTERM blocked (the mask survives exec), so the final
    // SIGTERM always ends it through run_until_signal(), however early in its start-up it
    // arrives; a default-action death would be indistinguishable from a crash.
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    posix_spawnattr_setsigmask(&attr, &mask);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
    pid_t pid = 0;
    const int rc = ::posix_spawn(&pid, self.c_str(), nullptr, &attr, argv.data(), environ);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) throw std::runtime_error("posix_spawn failed: " + std::string(std::strerror(rc)));
    s.id = pid;
    s.pid = pid;
    return s;
  }

  void kill(Slot& s) {
    killed.insert(s.id);
    kill_ms[s.id] = wall_ms();
    if (memory) {
      s.view->crash();
      // Tearing the Worker down takes a while (its outcome retries fail until they give up);
      // a dead process would not wait, so neither does the run.
      reapers.emplace_back([v = std::move(s.view), w = std::move(s.worker), l = std::move(s.ledger)]() mutable {
        w.reset();
        v.reset();
        l.reset();
      });
      return;
    }
    ::kill(s.pid, SIGKILL);
    int status = 0;
    ::waitpid(s.pid, &status, 0);
  }

  // Worker processes that exited although nobody killed them: a bug (or a crash).
  void reap_unexpected() {
    if (memory) return;
    for (auto& s : slots) {
      int status = 0;
      if (::waitpid(s.pid, &status, WNOHANG) == s.pid) {
        ++worker_failures;
        notes.push_back("worker " + std::to_string(s.pid) + " exited on its own (status " + std::to_string(status) + ")");
        s = spawn();
      }
    }
  }

  void stop_all() {
    if (memory) {
      for (auto& s : slots) {
        s.worker->stop();
        s.worker.reset();
      }
      for (auto& t : reapers) t.join();
      reapers.clear();
      return;
    }
    for (auto& s : slots) ::kill(s.pid, SIGTERM);
    const auto deadline = Clock::now() + 30s;
    for (auto& s : slots) {
      int status = 0;
      for (;;) {
        const auto r = ::waitpid(s.pid, &status, WNOHANG);
        if (r == s.pid) {
          if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            ++worker_failures;
            notes.push_back("worker " + std::to_string(s.pid) + " ended badly on SIGTERM (status " +
                            std::to_string(status) + ")");
          }
          break;
        }
        if (Clock::now() > deadline) {
          ++worker_failures;
          notes.push_back("worker " + std::to_string(s.pid) + " did not stop within 30 s of SIGTERM");
          ::kill(s.pid, SIGKILL);
          ::waitpid(s.pid, &status, 0);
          break;
        }
        std::this_thread::sleep_for(20ms);
      }
    }
  }
};

struct RunRecord {
  jobq::JobId id = 0;
  int attempt = 0;
  long pid = 0;
  std::string token;
};

// A claim a worker sent: how many jobs it asked for, and whether it returned (Q line).
struct ClaimRecord {
  std::size_t limit = 0;
  std::int64_t sent_ms = 0;
  bool returned = false;
  bool threw = false;
};

// What a flow member with dependencies saw of them (D line).
struct SeenRecord {
  jobq::JobId id = 0;
  int attempt = 0;
  long pid = 0;
  std::int64_t started_ms = 0;
  std::size_t deps = 0, completed = 0, results = 0;
};

struct Ledgers {
  std::unordered_map<jobq::JobId, std::vector<RunRecord>> runs;
  std::vector<SeenRecord> seen;
  std::map<std::pair<jobq::JobId, int>, std::vector<long>> received;  // (id, attempt) -> pids (K lines)
  std::map<std::pair<long, std::uint64_t>, ClaimRecord> claims;      // (pid, seq) -> the claim
  std::unordered_map<jobq::JobId, std::vector<std::pair<int, long>>> completions;
  std::set<jobq::JobId> refused;  // jobs with a result refused (L lines)
  std::size_t run_lines = 0, lost_lease_lines = 0, failed_lines = 0, error_lines = 0, partial_lines = 0;
  std::map<std::string, std::size_t> error_samples;  // a few distinct messages
};

Ledgers read_ledgers(const std::string& dir) {
  Ledgers l;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const auto name = entry.path().filename().string();
    if (name.rfind("ledger-", 0) != 0) continue;
    std::ifstream in(entry.path());
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::size_t start = 0;
    while (start < text.size()) {
      const auto nl = text.find('\n', start);
      if (nl == std::string::npos) {  // a line cut short (cannot happen with one write(2), but)
        ++l.partial_lines;
        break;
      }
      std::istringstream line(text.substr(start, nl - start));
      start = nl + 1;
      std::string tag;
      line >> tag;
      if (tag == "R") {
        RunRecord r;
        line >> r.id >> r.attempt >> r.token >> r.pid;
        l.runs[r.id].push_back(r);
        ++l.run_lines;
      } else if (tag == "D") {
        SeenRecord d;
        line >> d.id >> d.attempt >> d.pid >> d.started_ms >> d.deps >> d.completed >> d.results;
        l.seen.push_back(d);
      } else if (tag == "C") {
        jobq::JobId id = 0;
        int attempt = 0;
        long pid = 0;
        line >> id >> attempt >> pid;
        l.completions[id].emplace_back(attempt, pid);
      } else if (tag == "K") {
        jobq::JobId id = 0;
        int attempt = 0;
        std::string token;
        long pid = 0;
        line >> id >> attempt >> token >> pid;
        l.received[{id, attempt}].push_back(pid);
      } else if (tag == "P") {
        long pid = 0;
        std::uint64_t seq = 0;
        std::size_t limit = 0;
        std::int64_t sent_ms = 0;
        line >> pid >> seq >> limit >> sent_ms;
        auto& c = l.claims[{pid, seq}];
        c.limit = limit;
        c.sent_ms = sent_ms;
      } else if (tag == "Q") {
        long pid = 0;
        std::uint64_t seq = 0;
        long n = 0;
        line >> pid >> seq >> n;
        auto& c = l.claims[{pid, seq}];
        c.returned = true;
        c.threw = n < 0;
      } else if (tag == "L") {
        jobq::JobId id = 0;
        line >> id;
        l.refused.insert(id);
        ++l.lost_lease_lines;
      } else if (tag == "F") {
        ++l.failed_lines;
      } else if (tag == "E") {
        ++l.error_lines;
        std::string pid, msg;
        line >> pid;
        std::getline(line, msg);
        if (l.error_samples.size() < 8 || l.error_samples.contains(msg.substr(0, 120))) ++l.error_samples[msg.substr(0, 120)];
      }
    }
  }
  return l;
}

template <class B>
std::vector<jobq::JobRecord> list_all(B& store, const std::string& queue, jobq::JobState state) {
  std::vector<jobq::JobRecord> out;
  for (std::size_t offset = 0;; offset += 1000) {
    auto page = store.list(queue, state, {offset, 1000});
    const auto n = page.size();
    for (auto& j : page) out.push_back(std::move(j));
    if (n < 1000) return out;
  }
}

std::string getenv_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

int driver_main(Options opt, const std::string& self) {
  Run run;
  run.self = self;
  const auto& b = opt.backend;
  if (opt.restarts < 0) opt.restarts = (b == "postgres" || b == "redis") ? 2 : 0;
  if (opt.seed == 0) opt.seed = std::random_device{}();
  if (opt.timeout_s == 0) opt.timeout_s = 120 + opt.jobs / 50;
  std::mt19937 rng(opt.seed);

  // Where the store is, and how to restart its server.
  std::string url = opt.url;
  if (b == "postgres" || b == "redis") {
    const std::string var = b == "postgres" ? "JOBQ_TEST_POSTGRES_URL" : "JOBQ_TEST_REDIS_URL";
    const std::string rvar = b == "postgres" ? "JOBQ_TEST_POSTGRES_RESTART" : "JOBQ_TEST_REDIS_RESTART";
    if (url.empty()) url = getenv_or_empty(var.c_str());
    if (url.empty()) {
      std::cerr << "jobq-chaos: " << var << " is not set (run through scripts/test.sh or tests/chaos/run.sh, or pass --url)\n";
      return 2;
    }
    run.restart = getenv_or_empty(rvar.c_str());
    if (opt.restarts > 0 && run.restart.empty()) {
      std::cerr << "jobq-chaos: " << rvar << " is not set: it is needed to restart the server mid-run "
                << "(or pass --restarts 0)\n";
      return 2;
    }
  } else if (b != "sqlite" && b != "memory") {
    std::cerr << "jobq-chaos: unknown backend '" << b << "'\n";
    return 2;
  } else if (opt.restarts > 0) {
    std::cerr << "jobq-chaos: --restarts needs a server backend (postgres or redis)\n";
    return 2;
  }

  bool made_dir = false;
  if (opt.dir.empty()) {
    std::string tmpl = (std::filesystem::temp_directory_path() / "jobq-chaos.XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) {
      std::perror("mkdtemp");
      return 2;
    }
    opt.dir = tmpl;
    made_dir = true;
  } else {
    std::filesystem::create_directories(opt.dir);
  }
  const auto tag = std::to_string(::getpid()) + "_" +
                   std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                      std::chrono::system_clock::now().time_since_epoch())
                                      .count());
  run.schema = b == "postgres" ? "chaos_" + tag : "";
  run.prefix = b == "redis" ? "chaos" + tag : "";
  if (b == "sqlite") url = "sqlite://" + std::filesystem::absolute(opt.dir).string() + "/chaos.db";
  if (b == "memory") url = "memory://";
  run.url = url;
  run.opt = opt;

  std::optional<jobq::MemoryBackend> memory;
  std::optional<jobq::AnyBackend> any;
  if (b == "memory") {
    memory.emplace();
    run.memory = &*memory;
  } else {
    try {
      any.emplace(jobq::open_backend(url, open_options(run.schema, run.prefix)));
    } catch (const std::exception& e) {
      std::cerr << "jobq-chaos: cannot open " << b << ": " << e.what() << '\n';
      return 2;
    }
  }
  // The driver's own calls (enqueue, counts, the final read) go to the store directly.
  const auto with_store = [&](auto&& fn) -> decltype(auto) {
    if (memory) return fn(*memory);
    return fn(*any);
  };

  // Enqueue everything first: the run measures draining under faults. Flow mode enqueues its
  // flows during the drain instead, from a producer thread.
  const auto queues = queues_of(opt.worker);
  std::vector<jobq::JobId> ids;
  ids.reserve(static_cast<std::size_t>(opt.jobs));
  std::size_t planned_members = 0;
  const auto flows = opt.worker.flows ? plan_flows(opt, planned_members) : std::vector<jobq::Flow>{};
  Producer producer;
  const auto t_enqueue = Clock::now();
  for (int i = 0; !opt.worker.flows && i < opt.jobs;) {
    std::vector<jobq::NewJob> batch;
    for (; i < opt.jobs && batch.size() < 1000; ++i) {
      jobq::NewJob j;
      j.queue = opt.worker.queue;
      j.name = job_name;
      j.payload = {{"i", i}};
      j.max_attempts = opt.max_attempts;  // kills expire leases, and each expiry counts an attempt
      j.backoff = jobq::Backoff::fixed(10ms);
      batch.push_back(std::move(j));
    }
    for (const auto& r : with_store([&](auto& s) { return s.enqueue_many(batch); })) ids.push_back(r.id);
  }
  double enqueue_s = seconds_since(t_enqueue);
  const auto total = opt.worker.flows ? static_cast<std::int64_t>(planned_members) : opt.jobs;

  // Drain under faults.
  const auto t_start = Clock::now();
  for (int i = 0; i < opt.workers; ++i) run.slots.push_back(run.spawn());
  std::thread producing;
  if (opt.worker.flows) {
    producing = std::thread([&] {
      if (memory) return producer.run(*memory, flows, opt.flow_gap_ms);
      try {
        auto store = open_retrying(url, open_options(run.schema, run.prefix));
        producer.run(store, flows, opt.flow_gap_ms);
      } catch (const std::exception& e) {
        std::lock_guard lock(producer.mutex);
        producer.error = e.what();
        producer.done = true;
      }
    });
  }
  Canceller canceller;
  std::thread cancelling;
  if (opt.cancels > 0) {
    cancelling = std::thread([&] {
      if (memory) return canceller.run(*memory, opt.worker.queue, opt.cancels, opt.seed);
      try {
        auto store = open_retrying(url, open_options(run.schema, run.prefix));
        canceller.run(store, opt.worker.queue, opt.cancels, opt.seed);
      } catch (const std::exception& e) {
        std::lock_guard lock(canceller.mutex);
        canceller.error = e.what();
      }
    });
  }
  std::uniform_int_distribution<int> kill_gap(opt.kill_min_ms, std::max(opt.kill_min_ms, opt.kill_max_ms));
  auto next_kill = Clock::now() + std::chrono::milliseconds(kill_gap(rng));
  int kills = 0, restarts = 0, restart_failures = 0, count_errors = 0;
  std::vector<double> restart_seconds;
  jobq::Counts last{};
  bool done = false;
  const auto deadline = t_start + std::chrono::seconds(opt.timeout_s);
  while (!done && Clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
    run.reap_unexpected();
    try {
      last = with_store([&](auto& s) { return counts_of(s, queues); });
      done = opt.worker.flows ? producer.done && last.queued == 0 && last.active == 0 && last.waiting == 0
                              : last.completed + last.dead + last.cancelled == opt.jobs && last.queued == 0 &&
                                    last.active == 0;
    } catch (const std::exception&) {
      ++count_errors;  // the server is restarting: ask again
    }
    if (done) break;
    // Server restarts at evenly spaced points of progress.
    if (restarts < opt.restarts &&
        last.completed + last.dead + last.cancelled >= total * (restarts + 1) / (opt.restarts + 1)) {
      const auto t = Clock::now();
      const int rc = std::system(run.restart.c_str());
      restart_seconds.push_back(seconds_since(t));
      ++restarts;
      if (rc != 0) {
        ++restart_failures;
        run.notes.push_back("restart script failed with status " + std::to_string(rc));
      }
    }
    if (Clock::now() >= next_kill && !run.slots.empty()) {
      auto& victim = run.slots[std::uniform_int_distribution<std::size_t>(0, run.slots.size() - 1)(rng)];
      run.kill(victim);
      ++kills;
      victim = run.spawn();
      next_kill = Clock::now() + std::chrono::milliseconds(kill_gap(rng));
    }
  }
  const double drain_s = seconds_since(t_start);
  canceller.stop = true;
  if (cancelling.joinable()) cancelling.join();
  run.stop_all();
  if (producing.joinable()) {
    producing.join();  // done, or its 60 s of retries are up
    enqueue_s = producer.seconds;
  }

  // Read back: the store's final word, and the ledger.
  std::unordered_map<jobq::JobId, jobq::JobRecord> final_jobs;
  jobq::Counts final_counts{};
  std::string read_error;
  for (int tries = 0; tries < 50; ++tries) {
    try {
      final_counts = with_store([&](auto& s) { return counts_of(s, queues); });
      for (const auto& q : queues) {
        for (auto st : {jobq::JobState::completed, jobq::JobState::queued, jobq::JobState::active,
                        jobq::JobState::dead, jobq::JobState::cancelled, jobq::JobState::waiting}) {
          for (auto& j : with_store([&](auto& s) { return list_all(s, q, st); })) {
            const auto id = j.id;
            final_jobs[id] = std::move(j);
          }
        }
      }
      read_error.clear();
      break;
    } catch (const std::exception& e) {
      read_error = e.what();
      std::this_thread::sleep_for(200ms);
    }
  }
  const auto ledgers = read_ledgers(opt.dir);
  if (opt.worker.flows) {
    // Every member the producer was told about, and any other the store holds (a twin stored
    // by an enqueue_flow that was retried after it had in fact committed).
    ids = producer.ids;
    for (const auto& [id, j] : final_jobs) ids.push_back(id);
    std::sort(ids.begin(), ids.end());  // dependencies before their dependents
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  }

  std::size_t lost = 0, stuck = 0, dead = 0, completed_without_run = 0, stale = 0, double_accept = 0;
  std::size_t duplicates = 0, explained = 0, explained_killed = 0, explained_live = 0, unexplained = 0;
  std::size_t same_attempt_twice = 0, lease_expirations = 0, unlogged_completions = 0;
  std::size_t expired_after_run = 0, expired_held_by_killed = 0, expired_unreceived = 0, expired_unexplained = 0;
  std::size_t dead_without_run = 0, dead_unexplained = 0, dead_of_dependency = 0;
  std::size_t cancelled_jobs = 0, cancelled_results_refused = 0, accepted_after_cancel = 0;
  std::set<jobq::JobId> dead_explained;  // flow mode: what a dependent may die of
  std::vector<std::string> examples;
  const auto example = [&](const std::string& s) {
    if (examples.size() < 10) examples.push_back(s);
  };
  // Jobs that claims cut short by a kill (sent, never returned) may have leased without a K line:
  // up to `limit` each, with a deadline in [sent + lease, kill + lease], recovered (the error's
  // time) at most recovery_lag_ms later.
  constexpr std::int64_t recovery_lag_ms = 2'000;  // maintenance every 250 ms, a restart, a respawn
  struct CutClaim {
    std::int64_t from_ms, to_ms;
    std::size_t room;
  };
  std::vector<CutClaim> cut;
  std::size_t unreceived_allowance = 0, claims_failed = 0;
  for (const auto& [key, c] : ledgers.claims) {
    if (!c.returned && run.killed.contains(key.first)) {
      cut.push_back({c.sent_ms + opt.worker.lease_ms, run.kill_ms[key.first] + opt.worker.lease_ms + recovery_lag_ms,
                     c.limit});
      unreceived_allowance += c.limit;
    }
    if (c.threw) ++claims_failed;  // the worker got no jobs; the store may have leased some
  }
  struct Unreceived {
    std::int64_t at_ms;
    std::string what;
  };
  std::vector<Unreceived> unreceived;
  for (const auto id : ids) {
    const auto it = final_jobs.find(id);
    if (it == final_jobs.end()) {
      ++lost;
      example("job " + std::to_string(id) + " is gone from the store");
      continue;
    }
    const auto& job = it->second;
    const auto runs_it = ledgers.runs.find(id);
    const std::vector<RunRecord> none;
    const auto& runs = runs_it == ledgers.runs.end() ? none : runs_it->second;
    // Each expired lease was held by a worker that ran the attempt (too slow, or its outcome was
    // lost), by a killed worker, or by nobody: a claim whose reply never arrived. Only a killed
    // worker's unanswered claim may leave that last kind.
    bool job_explained = true;
    // A flow member that never ran because a dependency died (attempt 0): explained below.
    const bool of_dependency = job.state == jobq::JobState::dead && job.attempts == 0 && job.errors.size() == 1 &&
                               job.errors.front().attempt == 0 && job.errors.front().message.rfind("dependency ", 0) == 0;
    for (const auto& e : job.errors) {
      if (of_dependency) break;
      if (e.message.find("lease expired") == std::string::npos) {
        job_explained = false;  // a handler failure (never expected here; F lines fail the run)
        continue;
      }
      ++lease_expirations;
      const bool ran = std::any_of(runs.begin(), runs.end(), [&](const RunRecord& r) { return r.attempt == e.attempt; });
      const auto got = ledgers.received.find({id, e.attempt});
      if (ran) {
        ++expired_after_run;
      } else if (got != ledgers.received.end() &&
                 std::any_of(got->second.begin(), got->second.end(), [&](long pid) { return run.killed.contains(pid); })) {
        ++expired_held_by_killed;
      } else if (got != ledgers.received.end()) {
        ++expired_unexplained;
        job_explained = false;
        example("job " + std::to_string(id) + ": attempt " + std::to_string(e.attempt) + " was received by live pid " +
                std::to_string(got->second.front()) + ", never ran, and its lease expired");
      } else {
        ++expired_unreceived;
        unreceived.push_back({jobq::to_epoch_ms(e.at), "job " + std::to_string(id) + ": attempt " +
                                                           std::to_string(e.attempt) + " expired, and no worker received it (" +
                                                           std::string(jobq::to_string(job.state)) + ", " +
                                                           std::to_string(runs.size()) + " handler runs)"});
      }
    }
    if (job.state == jobq::JobState::queued || job.state == jobq::JobState::active ||
        job.state == jobq::JobState::waiting) {
      ++stuck;
      example("job " + std::to_string(id) + " is left " + std::string(jobq::to_string(job.state)));
      continue;
    }
    // Cancel mode: a job cancel() said it cancelled ends cancelled, with no completion accepted;
    // one it may have cancelled (the call threw) ends cancelled or as if never cancelled.
    if (job.state == jobq::JobState::cancelled && (canceller.cancelled.contains(id) || canceller.unknown.contains(id))) {
      ++cancelled_jobs;
      if (ledgers.refused.contains(id)) ++cancelled_results_refused;
      if (ledgers.completions.contains(id)) {
        ++accepted_after_cancel;
        example("job " + std::to_string(id) + " is cancelled, yet a completion of it was accepted");
      }
      continue;
    }
    if (canceller.cancelled.contains(id)) {
      ++accepted_after_cancel;
      example("job " + std::to_string(id) + " was cancelled, yet it ended " + std::string(jobq::to_string(job.state)));
      continue;
    }
    if (job.state == jobq::JobState::dead) {
      // Out of attempts, every one used by an expired lease: allowed when each is explained.
      ++dead;
      if (of_dependency) {
        ++dead_of_dependency;
        if (std::any_of(job.depends_on.begin(), job.depends_on.end(), [&](jobq::JobId d) { return dead_explained.contains(d); })) {
          dead_explained.insert(id);
        } else {
          ++dead_unexplained;
          example("job " + std::to_string(id) + " died of a dependency (" + job.errors.front().message +
                  ") but none of its dependencies died an explained death");
        }
        continue;
      }
      if (runs.empty()) ++dead_without_run;
      if (!job_explained || job.attempts < opt.max_attempts ||
          static_cast<int>(job.errors.size()) < job.attempts) {
        ++dead_unexplained;
        example("job " + std::to_string(id) + " is dead after " + std::to_string(job.attempts) + " attempts and " +
                std::to_string(job.errors.size()) + " errors, not all explained by expired leases of its holders");
      } else {
        dead_explained.insert(id);
      }
      continue;
    }
    if (job.state != jobq::JobState::completed) {
      ++lost;
      example("job " + std::to_string(id) + " ended " + std::string(jobq::to_string(job.state)));
      continue;
    }
    // The accepted completion must be the final attempt's, and only one may be accepted.
    const auto comp_it = ledgers.completions.find(id);
    if (comp_it != ledgers.completions.end()) {
      if (comp_it->second.size() > 1) {
        ++double_accept;
        ++stale;
        example("job " + std::to_string(id) + " had " + std::to_string(comp_it->second.size()) + " completions accepted");
      }
      for (const auto& [attempt, pid] : comp_it->second) {
        if (attempt != job.attempts) {
          ++stale;
          example("job " + std::to_string(id) + ": a completion of attempt " + std::to_string(attempt) +
                  " was accepted, but the job's final attempt is " + std::to_string(job.attempts));
        }
      }
    } else {
      ++unlogged_completions;  // its worker was killed between the commit and the event
    }
    std::size_t finals = 0;
    for (const auto& r : runs) {
      if (r.attempt == job.attempts) {
        if (++finals > 1) {
          ++same_attempt_twice;
          example("job " + std::to_string(id) + " attempt " + std::to_string(r.attempt) + " ran twice");
        }
        continue;
      }
      // A run that did not produce the job's completion: the lease of that attempt must have
      // expired (the error list says so), whether its process was killed or merely too slow.
      ++duplicates;
      const bool expired = std::any_of(job.errors.begin(), job.errors.end(), [&](const jobq::AttemptError& e) {
        return e.attempt == r.attempt && e.message.find("lease expired") != std::string::npos;
      });
      if (expired) {
        ++explained;
        ++(run.killed.contains(r.pid) ? explained_killed : explained_live);
      } else {
        ++unexplained;
        example("job " + std::to_string(id) + ": attempt " + std::to_string(r.attempt) + " ran (pid " +
                std::to_string(r.pid) + (run.killed.contains(r.pid) ? ", killed" : ", alive") +
                ") and its lease never expired, yet attempt " + std::to_string(job.attempts) + " completed");
      }
    }
    if (finals == 0) {
      ++completed_without_run;
      example("job " + std::to_string(id) + " is completed but no run of its final attempt " +
              std::to_string(job.attempts) + " is in the ledger");
    }
  }

  // Flow mode: each flow is whole in the store, shaped as planned, and every run of a member
  // with dependencies saw them all completed, with their results, after they had finished.
  std::size_t flows_in_store = 0, flows_partial = 0, flow_shape_errors = 0;
  std::size_t dependent_runs = 0, ran_early = 0, bad_results = 0, ran_before_finished = 0, unchecked = 0;
  if (opt.worker.flows) {
    std::map<jobq::JobId, std::vector<const jobq::JobRecord*>> by_flow;
    for (const auto& [id, j] : final_jobs) {
      if (j.flow_id == 0) {
        ++flow_shape_errors;
        example("job " + std::to_string(id) + " is in no flow");
        continue;
      }
      by_flow[j.flow_id].push_back(&j);
    }
    flows_in_store = by_flow.size();
    for (const auto& [flow_id, members] : by_flow) {
      const auto size = members.front()->payload.value("size", std::size_t{0});
      if (members.size() != size) {
        ++flows_partial;
        example("flow " + std::to_string(flow_id) + " has " + std::to_string(members.size()) + " of its " +
                std::to_string(size) + " members in the store");
      }
      for (const auto* m : members) {
        const bool same_flow = std::all_of(m->depends_on.begin(), m->depends_on.end(), [&](jobq::JobId d) {
          const auto it = final_jobs.find(d);
          return it != final_jobs.end() && it->second.flow_id == flow_id;
        });
        if (m->depends_on.size() != m->payload.value("deps", std::size_t{0}) || !same_flow) {
          ++flow_shape_errors;
          example("job " + std::to_string(m->id) + " of flow " + std::to_string(flow_id) + " depends on " +
                  std::to_string(m->depends_on.size()) + " jobs, not the " + m->payload.value("deps", nlohmann::json()).dump() +
                  " members planned");
        }
      }
    }
    std::set<std::pair<jobq::JobId, int>> checked;
    for (const auto& d : ledgers.seen) {
      ++dependent_runs;
      checked.insert({d.id, d.attempt});
      const auto it = final_jobs.find(d.id);
      if (it == final_jobs.end()) continue;  // counted as lost
      const auto& job = it->second;
      if (d.deps != job.depends_on.size() || d.completed != d.deps) {
        ++ran_early;
        example("job " + std::to_string(d.id) + " attempt " + std::to_string(d.attempt) + " ran seeing " +
                std::to_string(d.completed) + " of " + std::to_string(d.deps) + " dependencies completed (it has " +
                std::to_string(job.depends_on.size()) + ")");
      } else if (d.results != d.deps) {
        ++bad_results;
        example("job " + std::to_string(d.id) + " attempt " + std::to_string(d.attempt) + " saw " +
                std::to_string(d.results) + " right results of " + std::to_string(d.deps));
      }
      // The store's word: no dependency finished after the dependent started (1 ms: rounding).
      for (const auto dep : job.depends_on) {
        const auto di = final_jobs.find(dep);
        if (di == final_jobs.end() || !di->second.finished_at) continue;  // lost or stuck: counted
        if (jobq::to_epoch_ms(*di->second.finished_at) > d.started_ms + 1) {
          ++ran_before_finished;
          example("job " + std::to_string(d.id) + " attempt " + std::to_string(d.attempt) + " started at " +
                  std::to_string(d.started_ms) + " ms, before its dependency " + std::to_string(dep) + " finished at " +
                  std::to_string(jobq::to_epoch_ms(*di->second.finished_at)) + " ms");
        }
      }
    }
    for (const auto& [id, j] : final_jobs) {
      if (j.state == jobq::JobState::completed && !j.depends_on.empty() && !checked.contains({id, j.attempts})) {
        ++unchecked;
        example("job " + std::to_string(id) + " completed, but its final attempt recorded no dependencies");
      }
    }
  }
  const bool flows_ok = !opt.worker.flows ||
                        (producer.error.empty() && producer.stored == flows.size() && flows_partial == 0 &&
                         flow_shape_errors == 0 && ran_early == 0 && bad_results == 0 && ran_before_finished == 0 &&
                         unchecked == 0);

  // A cancel run proves something only if some cancels reached running or leased jobs.
  const bool cancels_ok = opt.cancels == 0 || (accepted_after_cancel == 0 && canceller.error.empty() && canceller.picked_active > 0);
  if (opt.cancels > 0 && canceller.picked_active == 0) run.notes.push_back("no cancel reached an active job");
  if (!canceller.error.empty()) run.notes.push_back("the canceller could not open the store: " + canceller.error);

  std::string integrity = "n/a";
#if JOBQ_OPEN_WITH_SQLITE
  if (b == "sqlite") {
    any.reset();
    sqlite3* db = nullptr;
    integrity = "cannot open";
    if (sqlite3_open_v2((opt.dir + "/chaos.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
      sqlite3_stmt* st = nullptr;
      if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, nullptr) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        integrity = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
      }
      sqlite3_finalize(st);
    }
    sqlite3_close(db);
  }
#endif

  // Each expiry no worker received must be one of a cut claim's jobs: matched in time order to
  // the open cut claim whose window ends first (optimal for points into intervals).
  std::sort(unreceived.begin(), unreceived.end(), [](const auto& a, const auto& b) { return a.at_ms < b.at_ms; });
  std::size_t expired_unmatched = 0;
  for (const auto& u : unreceived) {
    CutClaim* best = nullptr;
    for (auto& c : cut) {
      if (c.room > 0 && c.from_ms <= u.at_ms && u.at_ms <= c.to_ms && (!best || c.to_ms < best->to_ms)) best = &c;
    }
    if (best) {
      --best->room;
      continue;
    }
    ++expired_unmatched;
    example(u.what + ": no claim cut short by a kill could have leased it");
  }
  const bool ok = lost == 0 && stuck == 0 && stale == 0 && unexplained == 0 && same_attempt_twice == 0 &&
                  dead_unexplained == 0 && expired_unexplained == 0 && expired_unmatched == 0 &&
                  completed_without_run == 0 && run.worker_failures == 0 && restart_failures == 0 &&
                  ledgers.failed_lines == 0 && read_error.empty() && (integrity == "n/a" || integrity == "ok") &&
                  (opt.worker.flows || static_cast<int>(ids.size()) == opt.jobs) && flows_ok &&
                  kills + restarts >= opt.min_faults && cancels_ok;
  if (kills + restarts < opt.min_faults) {
    run.notes.push_back("only " + std::to_string(kills + restarts) + " faults were injected (--min-faults " +
                        std::to_string(opt.min_faults) + "): make the run longer or the kills more frequent");
  }
  nlohmann::ordered_json out = {
      {"backend", b},
      {"ok", ok},
      {"jobs", opt.jobs},
      {"workers", opt.workers},
      {"concurrency", opt.worker.concurrency},
      {"lease_ms", opt.worker.lease_ms},
      {"max_attempts", opt.max_attempts},
      {"seed", opt.seed},
      {"kills", kills},
      {"server_restarts", restarts},
      {"restart_seconds", restart_seconds},
      {"enqueue_seconds", enqueue_s},
      {"drain_seconds", drain_s},
      {"throughput_jobs_per_s", drain_s > 0 ? static_cast<double>(last.completed) / drain_s : 0.0},
      {"handler_runs", ledgers.run_lines},
      {"jobs_lost", lost},
      {"jobs_stuck", stuck},
      {"jobs_dead", dead},
      {"dead_without_run", dead_without_run},
      {"dead_unexplained", dead_unexplained},
      {"stale_completions_accepted", stale},
      {"double_completions_accepted", double_accept},
      {"duplicate_runs", duplicates},
      {"duplicates_explained_by_expired_lease", explained},
      {"duplicates_of_killed_processes", explained_killed},
      {"duplicates_of_live_processes", explained_live},
      {"duplicates_unexplained", unexplained},
      {"same_attempt_ran_twice", same_attempt_twice},
      {"completed_without_run", completed_without_run},
      {"completions_unlogged_by_killed_workers", unlogged_completions},
      {"lease_expirations_recorded", lease_expirations},
      {"expired_after_a_run", expired_after_run},
      {"expired_held_by_killed", expired_held_by_killed},
      {"expired_never_received", expired_unreceived},
      {"never_received_allowance", unreceived_allowance},
      {"never_received_unexplained", expired_unmatched},
      {"expired_unexplained", expired_unexplained},
      {"claims_cut_by_kills", cut.size()},
      {"claims_failed", claims_failed},
      {"results_refused_lost_lease", ledgers.lost_lease_lines},
      {"worker_errors_survived", ledgers.error_lines},
      {"worker_failures", run.worker_failures},
      {"final_counts",
       {{"queued", final_counts.queued},
        {"active", final_counts.active},
        {"completed", final_counts.completed},
        {"dead", final_counts.dead}}},
      {"sqlite_integrity_check", integrity},
  };
  if (opt.worker.flows) {
    out["final_counts"]["waiting"] = final_counts.waiting;
    out["flows"] = {{"planned", flows.size()},
                    {"members_planned", planned_members},
                    {"chord_size", opt.chord_size},
                    {"stored", producer.stored},
                    {"enqueue_retries", producer.retries},
                    {"in_store", flows_in_store},
                    {"partial", flows_partial},
                    {"shape_errors", flow_shape_errors},
                    {"dependent_runs_checked", dependent_runs},
                    {"dependents_ran_early", ran_early},
                    {"dependents_wrong_results", bad_results},
                    {"dependents_started_before_a_dependency_finished", ran_before_finished},
                    {"completed_dependents_unchecked", unchecked},
                    {"dead_of_a_dependency", dead_of_dependency}};
    if (!producer.error.empty()) out["producer_error"] = producer.error;
  }
  if (opt.cancels > 0) {
    out["final_counts"]["cancelled"] = final_counts.cancelled;
    out["cancels"] = {{"planned", opt.cancels},
                      {"cancelled", canceller.cancelled.size()},
                      {"of_active_jobs", canceller.picked_active},
                      {"refused_already_finished", canceller.refused},
                      {"outcome_unknown", canceller.unknown.size()},
                      {"errors", canceller.errors},
                      {"jobs_ended_cancelled", cancelled_jobs},
                      {"late_results_refused", cancelled_results_refused},
                      {"results_accepted_after_cancel", accepted_after_cancel}};
  }
  if (count_errors > 0) out["driver_count_errors"] = count_errors;
  if (!read_error.empty()) out["read_error"] = read_error;
  if (!examples.empty()) out["examples"] = examples;
  if (!run.notes.empty()) out["notes"] = run.notes;
  if (!ledgers.error_samples.empty()) out["worker_error_samples"] = ledgers.error_samples;
  if (!ok || opt.keep) out["dir"] = opt.dir;
  std::cout << out.dump() << std::endl;
  if (ok && made_dir && !opt.keep) std::filesystem::remove_all(opt.dir);
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"jobq-chaos: drain jobs through killed workers and restarted servers; check nothing is lost"};
  app.require_subcommand(1);
  Options opt;
  auto* driver = app.add_subcommand("driver", "run a chaos test and print a JSON summary");
  driver->add_option("--backend", opt.backend, "sqlite, postgres, redis or memory")->required();
  driver->add_option("--url", opt.url, "store URL (default: $JOBQ_TEST_POSTGRES_URL / $JOBQ_TEST_REDIS_URL; a temp file for sqlite)");
  driver->add_option("--jobs", opt.jobs, "jobs to enqueue and drain")->check(CLI::Range(1, 100'000'000));
  driver->add_option("--workers", opt.workers, "worker processes at any time")->check(CLI::Range(1, 64));
  driver->add_option("--concurrency", opt.worker.concurrency, "handler threads per worker")->check(CLI::Range(1, 256));
  driver->add_option("--lease-ms", opt.worker.lease_ms, "worker lease")->check(CLI::Range(100, 600'000));
  driver->add_option("--work-max-us", opt.worker.work_max_us, "each handler sleeps 0..this many microseconds")
      ->check(CLI::Range(0, 10'000'000));
  driver->add_option("--kill-min-ms", opt.kill_min_ms, "shortest gap between two kills")->check(CLI::Range(1, 3'600'000));
  driver->add_option("--kill-max-ms", opt.kill_max_ms, "longest gap between two kills")->check(CLI::Range(1, 3'600'000));
  driver->add_option("--restarts", opt.restarts, "server restarts during the drain (default 2 for postgres/redis)")
      ->check(CLI::Range(0, 1000));
  driver->add_option("--timeout-s", opt.timeout_s, "give up draining after this long (default 120 + jobs/50)")
      ->check(CLI::Range(0, 86'400));
  driver->add_option("--min-faults", opt.min_faults, "fail unless at least this many kills + restarts happened")
      ->check(CLI::Range(0, 1'000'000));
  driver->add_option("--max-attempts", opt.max_attempts,
                     "attempts per job (1 or 2: every attempt a lost claim uses shows as a dead job)")
      ->check(CLI::Range(1, 1'000'000));
  driver->add_option("--seed", opt.seed, "random seed (0: random)");
  driver->add_option("--dir", opt.dir, "ledger directory (default: a fresh temp dir, removed after a good run)");
  driver->add_flag("--keep", opt.keep, "keep the ledger directory");
  driver->add_flag("--flows", opt.worker.flows,
                   "flow mode: a producer enqueues chords and 3-queue chains (about --jobs members) during the drain");
  driver->add_option("--chord-size", opt.chord_size, "flow mode: members per chord")->check(CLI::Range(1, 100'000));
  driver->add_option("--flow-gap-ms", opt.flow_gap_ms, "flow mode: pause between two flows")->check(CLI::Range(0, 60'000));
  driver->add_option("--cancels", opt.cancels, "cancel about this many jobs (most of them active) during the drain")
      ->check(CLI::Range(0, 1'000'000))
      ->excludes("--flows");

  std::string url, schema, prefix, ledger;
  auto* worker = app.add_subcommand("worker", "one worker process (started by the driver)");
  worker->add_option("--url", url)->required();
  worker->add_option("--schema", schema);
  worker->add_option("--prefix", prefix);
  worker->add_option("--queue", opt.worker.queue);
  worker->add_option("--ledger", ledger)->required();
  worker->add_option("--lease-ms", opt.worker.lease_ms);
  worker->add_option("--concurrency", opt.worker.concurrency);
  worker->add_option("--work-max-us", opt.worker.work_max_us);
  worker->add_flag("--flows", opt.worker.flows);
  CLI11_PARSE(app, argc, argv);

  try {
    if (*worker) {
      const auto at = ledger.find("{pid}");
      if (at != std::string::npos) ledger.replace(at, 5, std::to_string(::getpid()));
      return worker_main(url, schema, prefix, ledger, opt.worker);
    }
    std::error_code ec;
    auto self = std::filesystem::read_symlink("/proc/self/exe", ec).string();
    if (ec) self = argv[0];
    return driver_main(opt, self);
  } catch (const std::exception& e) {
    std::cerr << "jobq-chaos: " << e.what() << '\n';
    return 2;
  }
}
