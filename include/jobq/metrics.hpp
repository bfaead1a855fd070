#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "jobq/backend.hpp"
#include "jobq/error.hpp"
#include "jobq/queue.hpp"
#include "jobq/version.hpp"
#include "jobq/worker.hpp"


namespace jobq {

/// @brief Jobs per state as a JSON object keyed by state name, every state (jobq::all_job_states)
/// in enum order, then "delayed" (of the queued, those not due yet; not a state): what the CLI,
/// the metrics snapshot and the dashboard API print.
inline nlohmann::json counts_to_json(Counts c) {
  auto j = nlohmann::json::object();
  for (const auto s : all_job_states) j[std::string(to_string(s))] = count_of(c, s);
  j["delayed"] = c.delayed;
  return j;
}

/// @brief Options of a Metrics registry.
struct MetricsOptions {
  ClockFn clock = system_clock();  ///< time for the per-minute throughput ring
  /// Upper bounds (seconds) of the processing-time histogram buckets (+Inf is implied).
  std::vector<double> buckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300};
  /// Upper bounds (seconds) of the queue-wait histogram (due to started) buckets.
  std::vector<double> wait_buckets = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600};
  /// Job names labelled per queue; the events of further names are counted under job="other",
  /// so a producer that sends many distinct (or unknown) names cannot blow up the series.
  std::size_t max_job_names = 50;
};

/// @brief What one queue looked like when the backend was last sampled.
struct QueueSample {
  Counts counts{};                      ///< jobs per state
  bool paused = false;                  ///< whether workers skip it
  std::optional<Millis> oldest_waiting{};///< wait of the oldest due queued job (none: empty)
};

namespace detail {

/// @brief The newest (highest-id) `sample` jobs of a queue in one state, `count` being how many
/// it holds (from counts()): the ones that finished or failed most recently, as ids grow.
template <Backend B>
std::vector<JobRecord> newest_jobs(B& backend, const std::string& queue, JobState state, std::int64_t count,
                                   std::size_t sample) {
  const auto total = static_cast<std::size_t>(std::max<std::int64_t>(count, 0));
  if (total == 0) return {};
  const auto offset = total > sample ? total - sample : 0;
  return backend.list(queue, state, {offset, sample});
}

/// @brief Counts `at` into a 60-minute series whose last bucket is the minute `this_minute`
/// (epoch minutes); older or future times are left out.
inline void count_in_hour(std::array<std::uint64_t, 60>& series, std::int64_t this_minute, TimePoint at) {
  const auto age = this_minute - to_epoch_ms(at) / 60'000;
  if (age >= 0 && age < 60) ++series[static_cast<std::size_t>(59 - age)];
}

}  // namespace detail

/// @brief Per-minute completions of one queue over the last hour, oldest first (60 buckets,
/// the last one is the current minute), computed from the backend's completed jobs.
///
/// Cost: one counts() and one list() of at most `sample` completed jobs (the newest ids, which
/// finished most recently), so it reflects every worker of the store, not only this process.
/// With more than `sample` completions in the hour the oldest minutes are under-counted.
template <Backend B>
std::array<std::uint64_t, 60> completions_per_minute(B& backend, const std::string& queue,
                                                     std::size_t sample = 1000) {
  std::array<std::uint64_t, 60> out{};
  const auto this_minute = to_epoch_ms(backend.now()) / 60'000;
  for (const auto& j : detail::newest_jobs(backend, queue, JobState::completed, backend.counts(queue).completed, sample)) {
    if (j.finished_at) detail::count_in_hour(out, this_minute, *j.finished_at);
  }
  return out;
}

/// @brief Completions and failed attempts of one queue per minute over the last hour (see
/// throughput_per_minute()).
struct Throughput {
  std::array<std::uint64_t, 60> completed{};  ///< jobs completed per minute, oldest first
  std::array<std::uint64_t, 60> failed{};     ///< failed attempts per minute, oldest first
};

/// @brief completions_per_minute() and, from the same reads, failed attempts per minute: every
/// attempt error the store keeps (AttemptError::at), so an attempt that was retried counts in
/// the minute it failed, a dead job in the minute of its last failure, and the failures of every
/// worker process are there (an expired lease, recorded by whoever recovered it, too).
///
/// Cost: one counts(), then per state holding jobs (waiting excepted: those never ran) one list()
/// of its newest `sample` jobs by id. Left out, so under-counted: errors of jobs older than the
/// newest `sample` of their state (a busy hour; a job retrying behind `sample` newer queued
/// ones), and of jobs pruned or deleted since.
template <Backend B>
Throughput throughput_per_minute(B& backend, const std::string& queue, std::size_t sample = 1000) {
  Throughput out;
  const auto this_minute = to_epoch_ms(backend.now()) / 60'000;
  auto counts = backend.counts(queue);
  for (const auto state : all_job_states) {
    if (state == JobState::waiting) continue;
    for (const auto& j : detail::newest_jobs(backend, queue, state, count_of(counts, state), sample)) {
      if (state == JobState::completed && j.finished_at) detail::count_in_hour(out.completed, this_minute, *j.finished_at);
      for (const auto& e : j.errors) detail::count_in_hour(out.failed, this_minute, e.at);
    }
  }
  return out;
}

/// @brief Jobs completed per minute averaged over the last five full minutes of a series
/// (the current, partial minute is left out so the rate does not dip at each minute's start).
inline double jobs_per_minute(const std::array<std::uint64_t, 60>& completed) {
  std::uint64_t sum = 0;
  for (std::size_t i = 54; i < 59; ++i) sum += completed[i];
  return static_cast<double>(sum) / 5.0;
}

/// @brief Age of the oldest queued job that is due (run_at <= now), measured from its run_at;
/// 0 if every queued job is delayed into the future; nullopt if none is queued.
///
/// Cost: list(queue, queued) pages of 500 by id until the queue ends or `max_scan` jobs were
/// read. Ids do not order run_at (a delay or a retry moves it), so every page is read; past
/// `max_scan` the age is that of the oldest due job seen, which errs towards "not stuck".
template <Backend B>
std::optional<Millis> oldest_waiting(B& backend, const std::string& queue, std::size_t max_scan = 10'000) {
  constexpr std::size_t page_size = 500;
  const auto now = backend.now();
  std::optional<TimePoint> oldest_due;
  bool any = false;
  for (std::size_t offset = 0; offset < max_scan; offset += page_size) {
    const auto page = backend.list(queue, JobState::queued, {offset, std::min(page_size, max_scan - offset)});
    for (const auto& j : page) {
      any = true;
      if (j.run_at <= now && (!oldest_due || j.run_at < *oldest_due)) oldest_due = j.run_at;
    }
    if (page.size() < std::min(page_size, max_scan - offset)) break;
  }
  if (!any) return std::nullopt;
  return oldest_due ? std::chrono::duration_cast<Millis>(now - *oldest_due) : Millis{0};
}

/// @brief A thread-safe metrics registry for one process: job event totals and a processing
/// time histogram (fed by Worker events), enqueue totals (fed by the producer), and per-queue
/// state counts sampled from the backend. Renders the Prometheus text format.
///
/// ```cpp
/// jobq::Metrics metrics;
/// jobq::Worker w{store, {.queues = {"emails"}, .on_error = metrics.error_observer(),
///                         .on_event = metrics.observer()}};
/// metrics.enqueued("emails");            // after each enqueue (or use CountingQueue)
/// metrics.sample(store, {"emails"});     // before rendering: counts, paused, oldest age
/// std::string text = metrics.prometheus();
/// ```
class Metrics {
 public:
  /// @brief An empty registry.
  explicit Metrics(MetricsOptions options = {}) : opt_(std::move(options)) {
    std::sort(opt_.buckets.begin(), opt_.buckets.end());
    std::sort(opt_.wait_buckets.begin(), opt_.wait_buckets.end());
  }

  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  /// @brief Records one worker event (thread-safe).
  void observe(const JobEvent& e) {
    if (e.kind == JobEvent::Kind::progress) return;  // progress is the job's state, not a counter
    std::lock_guard lock(mutex_);
    auto& q = queue_locked(e.queue);
    auto& j = job_locked(q, e.name);
    using K = JobEvent::Kind;
    switch (e.kind) {
      case K::started:
        ++j.started;
        j.wait.observe(opt_.wait_buckets, seconds(e.waited));
        break;
      case K::completed:
        ++j.completed;
        ++minute_locked(q).completed;
        j.duration.observe(opt_.buckets, seconds(e.duration));
        break;
      case K::failed:
        ++j.failed;
        ++minute_locked(q).failed;
        j.duration.observe(opt_.buckets, seconds(e.duration));
        break;
      case K::retried: ++j.retried; break;
      case K::dead: ++j.dead; break;
      case K::lost_lease: ++j.lost_leases; break;
      case K::snoozed: ++j.snoozed; break;
      case K::progress: break;
    }
  }

  /// @brief A WorkerOptions::on_event hook feeding this registry (which must outlive it).
  [[nodiscard]] std::function<void(const JobEvent&)> observer() {
    return [this](const JobEvent& e) { observe(e); };
  }

  /// @brief Counts one error a worker survived (thread-safe), by its category: a jobq::Error's
  /// category name ("connection", "backend", ...) or "other" for any other exception.
  void observe_error(const std::exception& e) {
    const auto* err = dynamic_cast<const Error*>(&e);
    const std::string category = err ? std::string(to_string(err->category())) : "other";
    std::lock_guard lock(mutex_);
    ++errors_[category];
    last_error_ = opt_.clock();
  }

  /// @brief A WorkerOptions::on_error hook counting into this registry (which must outlive it),
  /// then passing the error on to `next` (default: print it to stderr, as the Worker does
  /// without a hook; pass a no-op to silence it).
  [[nodiscard]] std::function<void(const std::exception&)> error_observer(
      std::function<void(const std::exception&)> next = {}) {
    if (!next) next = [](const std::exception& e) { std::fprintf(stderr, "jobq worker: %s\n", e.what()); };
    return [this, next = std::move(next)](const std::exception& e) {
      observe_error(e);
      next(e);
    };
  }

  /// @brief Errors observed so far, per category (see observe_error()).
  [[nodiscard]] std::map<std::string, std::uint64_t> errors() const {
    std::lock_guard lock(mutex_);
    return errors_;
  }

  /// @brief Counts `n` jobs enqueued into `queue` (call after each successful enqueue).
  void enqueued(const std::string& queue, std::uint64_t n = 1) {
    std::lock_guard lock(mutex_);
    queue_locked(queue).enqueued += n;
  }

  /// @brief Makes `queue` appear in the output even before anything happened to it.
  void track(const std::string& queue) {
    std::lock_guard lock(mutex_);
    queue_locked(queue);
  }

  /// @brief Stores a backend sample of one queue (see sample()).
  void set_sample(const std::string& queue, const QueueSample& s) {
    std::lock_guard lock(mutex_);
    queue_locked(queue).sample = s;
  }

  /// @brief Samples counts, paused flag and oldest-waiting age of each queue from the backend:
  /// per queue one counts(), one is_paused() and the list() pages oldest_waiting() reads.
  /// Also reads the worker registry once (workers()) for the jobq_workers gauges.
  template <Backend B>
  void sample(B& backend, std::span<const std::string> queues) {
    for (const auto& q : queues) {
      QueueSample s;
      s.counts = backend.counts(q);
      s.paused = backend.is_paused(q);
      s.oldest_waiting = oldest_waiting(backend, q);
      set_sample(q, s);
    }
    WorkersSample w;
    for (const auto& e : backend.workers()) {
      ++w.workers;
      w.running += e.running.size();
      w.leased += e.leased.size();
    }
    std::lock_guard lock(mutex_);
    workers_ = w;
  }

  /// @brief Every queue the registry has seen, sorted.
  [[nodiscard]] std::vector<std::string> queues() const {
    std::lock_guard lock(mutex_);
    std::vector<std::string> out;
    for (const auto& [name, q] : queues_) out.push_back(name);
    return out;
  }

  /// @brief The registry as JSON: per queue its totals, last sample, histogram, and the
  /// per-minute completions/failures observed by this process over the last hour.
  [[nodiscard]] nlohmann::json snapshot() const {
    std::lock_guard lock(mutex_);
    const auto minute = current_minute();
    auto out = nlohmann::json::object();
    const auto totals = [](const JobMetrics& m) {
      return nlohmann::json{{"started", m.started},         {"completed", m.completed},
                            {"failed", m.failed},           {"retried", m.retried},
                            {"dead", m.dead},               {"lost_leases", m.lost_leases},
                            {"snoozed", m.snoozed},
                            {"duration_count", m.duration.count}, {"duration_sum_seconds", m.duration.sum},
                            {"wait_count", m.wait.count},   {"wait_sum_seconds", m.wait.sum}};
    };
    for (const auto& [name, q] : queues_) {
      JobMetrics all;
      auto by_job = nlohmann::json::object();
      for (const auto& [job, m] : q.jobs) {
        all.add(m);
        by_job[job] = totals(m);
      }
      nlohmann::json j = totals(all);
      j["enqueued"] = q.enqueued;
      j["jobs"] = std::move(by_job);
      if (q.sample) {
        j["counts"] = counts_to_json(q.sample->counts);
        j["paused"] = q.sample->paused;
        j["oldest_waiting_seconds"] =
            q.sample->oldest_waiting ? nlohmann::json(seconds(*q.sample->oldest_waiting)) : nullptr;
      }
      auto completed = nlohmann::json::array();
      auto failed = nlohmann::json::array();
      for (std::int64_t m = minute - 59; m <= minute; ++m) {
        const auto& slot = q.minutes[static_cast<std::size_t>(m % 60)];
        completed.push_back(slot.minute == m ? slot.completed : 0);
        failed.push_back(slot.minute == m ? slot.failed : 0);
      }
      j["completed_per_minute"] = std::move(completed);
      j["failed_per_minute"] = std::move(failed);
      out[name] = std::move(j);
    }
    return out;
  }

  /// @brief Everything in the Prometheus text exposition format (version 0.0.4).
  [[nodiscard]] std::string prometheus() const {
    std::lock_guard lock(mutex_);
    std::string out;
    const auto family = [&](const char* name, const char* type, const char* help) {
      out += "# HELP ";
      out += name;
      out += ' ';
      out += help;
      out += "\n# TYPE ";
      out += name;
      out += ' ';
      out += type;
      out += '\n';
    };
    const auto line = [&](const std::string& name, const std::string& labels, double v) {
      out += name;
      if (!labels.empty()) out += '{' + labels + '}';
      out += ' ';
      out += number(v);
      out += '\n';
    };
    const auto ql = [](const std::string& q) { return "queue=\"" + q + "\""; };  // names are [A-Za-z0-9_.-]

    family("jobq_build_info", "gauge", "Always 1; the jobq version in its label.");
    line("jobq_build_info", "version=\"" JOBQ_VERSION_STRING "\"", 1);
    family("jobq_jobs", "gauge", "Jobs per queue and state when last sampled from the backend.");
    for (const auto& [name, q] : queues_) {
      if (!q.sample) continue;
      auto c = q.sample->counts;
      for (const auto state : all_job_states) {
        line("jobq_jobs", ql(name) + ",state=\"" + std::string(to_string(state)) + "\"",
             static_cast<double>(count_of(c, state)));
      }
    }
    // Its own family: delayed jobs are part of state="queued", and a sum over the states of
    // jobq_jobs stays the number of jobs.
    family("jobq_jobs_delayed", "gauge", "Queued jobs whose run_at is still ahead (part of state=\"queued\").");
    for (const auto& [name, q] : queues_) {
      if (q.sample) line("jobq_jobs_delayed", ql(name), static_cast<double>(q.sample->counts.delayed));
    }
    if (workers_) {
      family("jobq_workers", "gauge", "Live workers in the store's registry when last sampled (every process).");
      line("jobq_workers", "", static_cast<double>(workers_->workers));
      family("jobq_worker_jobs", "gauge", "Active jobs of the live workers: running a handler, or leased ahead.");
      line("jobq_worker_jobs", "state=\"running\"", static_cast<double>(workers_->running));
      line("jobq_worker_jobs", "state=\"leased\"", static_cast<double>(workers_->leased));
    }
    family("jobq_queue_paused", "gauge", "1 if the queue is paused.");
    for (const auto& [name, q] : queues_) {
      if (q.sample) line("jobq_queue_paused", ql(name), q.sample->paused ? 1 : 0);
    }
    family("jobq_oldest_waiting_age_seconds", "gauge",
           "Wait of the oldest due queued job since its run_at (0 when none is due).");
    for (const auto& [name, q] : queues_) {
      if (q.sample) {
        line("jobq_oldest_waiting_age_seconds", ql(name),
             q.sample->oldest_waiting ? seconds(*q.sample->oldest_waiting) : 0.0);
      }
    }
    // The worker series are per queue and job name; a queue no job of which has been seen yet
    // has its series at 0 with the queue label only (an absent label and "" are the same).
    const auto per_job = [&](const QueueMetrics& q, auto&& each) {
      if (q.jobs.empty()) each(JobMetrics{}, std::string{});
      for (const auto& [job, m] : q.jobs) each(m, ",job=\"" + escape_label(job) + "\"");
    };
    family("jobq_jobs_enqueued_total", "counter", "Jobs enqueued by this process.");
    for (const auto& [qname, q] : queues_) line("jobq_jobs_enqueued_total", ql(qname), static_cast<double>(q.enqueued));
    const auto counter = [&](const char* name, const char* help, std::uint64_t JobMetrics::*field) {
      family(name, "counter", help);
      for (const auto& [qname_, q] : queues_) {
        const auto& qname = qname_;  // clang 14 lambdas cannot capture a structured binding
        per_job(q, [&](const JobMetrics& m, const std::string& jl) { line(name, ql(qname) + jl, static_cast<double>(m.*field)); });
      }
    };
    counter("jobq_jobs_started_total", "Attempts started by this process's workers.", &JobMetrics::started);
    counter("jobq_jobs_completed_total", "Attempts completed successfully by this process's workers.",
            &JobMetrics::completed);
    counter("jobq_jobs_failed_total", "Attempts that failed in this process's workers.", &JobMetrics::failed);
    counter("jobq_jobs_retried_total", "Failed attempts scheduled for a retry.", &JobMetrics::retried);
    counter("jobq_jobs_dead_total", "Jobs moved to dead by this process's workers.", &JobMetrics::dead);
    counter("jobq_leases_lost_total", "Outcomes refused because the lease was no longer held.",
            &JobMetrics::lost_leases);
    counter("jobq_jobs_snoozed_total", "Attempts that asked to run again later (no attempt used).",
            &JobMetrics::snoozed);

    family("jobq_worker_errors_total", "counter",
           "Errors the workers of this process survived (backend unreachable, ...), by category.");
    // Every category from the start, at 0: rate() and alerts need the series before the first error.
    auto errors = errors_;
    for (const auto c : {ErrorCategory::connection, ErrorCategory::invalid_argument, ErrorCategory::not_found,
                         ErrorCategory::conflict, ErrorCategory::backend}) {
      errors.try_emplace(std::string(to_string(c)), 0);
    }
    errors.try_emplace("other", 0);
    for (const auto& [category, n] : errors) {
      line("jobq_worker_errors_total", "category=\"" + category + "\"", static_cast<double>(n));
    }
    family("jobq_worker_last_error_timestamp_seconds", "gauge",
           "When the last worker error was observed (Unix time; 0: none yet).");
    if (last_error_) {  // written out: number()'s %g would round a Unix time to 6 digits
      const auto ms = to_epoch_ms(*last_error_);
      char buf[40];
      std::snprintf(buf, sizeof buf, "%lld.%03lld", static_cast<long long>(ms / 1000),
                    static_cast<long long>(ms % 1000));
      out += "jobq_worker_last_error_timestamp_seconds ";
      out += buf;
      out += '\n';
    } else {
      line("jobq_worker_last_error_timestamp_seconds", "", 0);
    }

    const auto histogram = [&](const std::string& name, const char* help, Histogram JobMetrics::*field,
                               const std::vector<double>& bounds) {
      family(name.c_str(), "histogram", help);
      for (const auto& [qname_, q] : queues_) {
        const auto& qname = qname_;  // as above
        per_job(q, [&](const JobMetrics& m, const std::string& jl) {
          const auto& h = m.*field;
          const auto labels = ql(qname) + jl;
          std::uint64_t cumulative = 0;
          for (std::size_t i = 0; i < bounds.size(); ++i) {
            cumulative += i < h.buckets.size() ? h.buckets[i] : 0;
            line(name + "_bucket", labels + ",le=\"" + number(bounds[i]) + "\"", static_cast<double>(cumulative));
          }
          line(name + "_bucket", labels + ",le=\"+Inf\"", static_cast<double>(h.count));
          line(name + "_sum", labels, h.sum);
          line(name + "_count", labels, static_cast<double>(h.count));
        });
      }
    };
    histogram("jobq_job_duration_seconds", "Handler run time of completed and failed attempts.",
              &JobMetrics::duration, opt_.buckets);
    histogram("jobq_job_queue_wait_seconds",
              "How long a job was due (since its enqueue, delay or retry time) before an attempt started.",
              &JobMetrics::wait, opt_.wait_buckets);
    return out;
  }

 private:
  struct Minute {
    std::int64_t minute = -1;  // epoch minute this slot holds
    std::uint64_t completed = 0;
    std::uint64_t failed = 0;
  };
  struct Histogram {
    std::vector<std::uint64_t> buckets;  // non-cumulative, one per finite bound
    std::uint64_t count = 0;
    double sum = 0;
    void observe(const std::vector<double>& bounds, double v) {
      if (buckets.size() != bounds.size()) buckets.assign(bounds.size(), 0);
      ++count;
      sum += v;
      const auto it = std::lower_bound(bounds.begin(), bounds.end(), v);
      if (it != bounds.end()) ++buckets[static_cast<std::size_t>(it - bounds.begin())];
    }
    void add(const Histogram& h) {
      if (buckets.size() < h.buckets.size()) buckets.resize(h.buckets.size(), 0);
      for (std::size_t i = 0; i < h.buckets.size(); ++i) buckets[i] += h.buckets[i];
      count += h.count;
      sum += h.sum;
    }
  };
  struct JobMetrics {  // one job name of one queue
    std::uint64_t started = 0, completed = 0, failed = 0, retried = 0, dead = 0, lost_leases = 0, snoozed = 0;
    Histogram duration, wait;
    void add(const JobMetrics& m) {
      started += m.started, completed += m.completed, failed += m.failed;
      retried += m.retried, dead += m.dead, lost_leases += m.lost_leases, snoozed += m.snoozed;
      duration.add(m.duration);
      wait.add(m.wait);
    }
  };
  struct QueueMetrics {
    std::uint64_t enqueued = 0;
    std::map<std::string, JobMetrics> jobs;  // by job name, at most max_job_names + "other"
    std::array<Minute, 60> minutes{};  // ring indexed by epoch minute % 60
    std::optional<QueueSample> sample;
  };

  static double seconds(Millis d) { return static_cast<double>(d.count()) / 1000.0; }

  static std::string number(double v) {
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    if (v == std::floor(v) && std::fabs(v) < 1e15) return std::to_string(static_cast<std::int64_t>(v));
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    return buf;
  }

  std::int64_t current_minute() const { return to_epoch_ms(opt_.clock()) / 60'000; }

  QueueMetrics& queue_locked(const std::string& name) { return queues_[name]; }

  JobMetrics& job_locked(QueueMetrics& q, const std::string& name) {
    if (auto it = q.jobs.find(name); it != q.jobs.end()) return it->second;
    const auto named = q.jobs.size() - q.jobs.count("other");
    return q.jobs[named < opt_.max_job_names ? name : std::string("other")];
  }

  // A Prometheus label value: backslash, double quote and newline escaped.
  static std::string escape_label(const std::string& v) {
    std::string out;
    for (const char c : v) {
      if (c == '\\' || c == '"') out += '\\';
      if (c == '\n') {
        out += "\\n";
        continue;
      }
      out += c;
    }
    return out;
  }

  Minute& minute_locked(QueueMetrics& q) {
    const auto m = current_minute();
    auto& slot = q.minutes[static_cast<std::size_t>(m % 60)];
    if (slot.minute != m) slot = Minute{m, 0, 0};
    return slot;
  }

  struct WorkersSample {
    std::size_t workers = 0, running = 0, leased = 0;
  };

  MetricsOptions opt_;
  mutable std::mutex mutex_;
  std::optional<WorkersSample> workers_;  // from the last sample()
  std::map<std::string, QueueMetrics> queues_;
  std::map<std::string, std::uint64_t> errors_;  // by error category
  std::optional<TimePoint> last_error_;
};

/// @brief A Queue whose enqueue() also counts created jobs into a Metrics registry
/// (enqueue_many and submit are not counted: call Metrics::enqueued for those).
template <Backend B>
class CountingQueue : public Queue<B> {
 public:
  /// @brief A queue named `name` over `backend`, counting into `metrics` (which must outlive it).
  CountingQueue(B& backend, std::string name, Metrics& metrics)
      : Queue<B>(backend, std::move(name)), metrics_(&metrics) {
    metrics_->track(this->name());
  }

  /// @brief Queue::enqueue of a typed job; counted only when a job was created (not deduplicated).
  template <Job T>
  JobId enqueue(const T& job, const EnqueueOptions& o = {}) {
    return count(this->submit(this->make(job, o)), o);
  }
  /// @brief Queue::enqueue of an untyped job, counted.
  JobId enqueue(std::string_view job_name, nlohmann::json payload, const EnqueueOptions& o = {}) {
    return count(this->submit(this->make(job_name, std::move(payload), o)), o);
  }

 private:
  JobId count(const EnqueueResult& r, const EnqueueOptions& o) {
    if (r.created) metrics_->enqueued(o.queue.empty() ? this->name() : o.queue);
    return r.id;
  }

  Metrics* metrics_;
};

}  // namespace jobq
