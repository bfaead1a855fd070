// jobq: the admin CLI. Inspects and operates a jobq store given by URL:
//   jobq --url sqlite:///var/lib/app/jobs.db queues --queue emails
//   jobq --url postgresql://app@db/app jobs emails --state dead
//   jobq --url redis://cache:6379/0 flow 42
// Tables for people by default, --json for scripts. Exit codes: 0 ok, 1 backend or connection
// error, 2 usage error or invalid argument, 3 job (or flow) not found, 4 refused (job in the wrong
// state).
// Under --json, errors too are JSON: one line {"error": ..., "code": <exit code>} on stderr.
#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <jobq/any_backend.hpp>
#include <jobq/metrics.hpp>
#include <jobq/open.hpp>
#include <jobq/queue.hpp>
#include <jobq/schedule.hpp>

#include "flow_tree.hpp"

#if JOBQ_CLI_WITH_HTTP
#include <csignal>
#include <pthread.h>

#include <jobq/http.hpp>
#endif

namespace {

using json = nlohmann::json;

enum Exit { ok = 0, failure = 1, usage = 2, not_found = 3, refused = 4 };

// An error on stderr: "jobq: <what>" for people; under --json one line {"error": what, "code": N},
// N being the exit code, so that scripts never have to parse prose.
int report(bool json_out, const std::string& what, int code) {
  if (json_out) {
    std::cerr << json{{"error", what}, {"code", code}}.dump(-1, ' ', false, json::error_handler_t::replace) << '\n';
  } else {
    std::cerr << "jobq: " << what << '\n';
  }
  return code;
}

// --- formatting -------------------------------------------------------------------------------

std::string format_time(jobq::TimePoint t) {
  const std::time_t secs = static_cast<std::time_t>(jobq::to_epoch_ms(t) / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%SZ", &tm);
  return buf;
}

std::string format_time(const std::optional<jobq::TimePoint>& t) { return t ? format_time(*t) : "-"; }

std::string format_age(std::optional<jobq::Millis> d) {
  if (!d) return "-";
  const auto s = d->count() / 1000;
  if (s < 120) return std::to_string(s) + "s";
  if (s < 7200) return std::to_string(s / 60) + "m";
  if (s < 172800) return std::to_string(s / 3600) + "h";
  return std::to_string(s / 86400) + "d";
}

using jobq::cli::one_line;

// Left-aligned columns, two spaces apart.
void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width(header.size());
  for (std::size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const auto& r : rows) {
    for (std::size_t i = 0; i < r.size() && i < width.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  const auto print_row = [&](const std::vector<std::string>& r) {
    std::string line;
    for (std::size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
    }
    std::cout << line << '\n';
  };
  print_row(header);
  for (const auto& r : rows) print_row(r);
}

// "30s", "5m", "24h", "7d", "250ms"; "never" -> nullopt (keep forever).
std::optional<jobq::Millis> parse_duration(const std::string& s) {
  if (s == "never") return std::nullopt;
  std::size_t pos = 0;
  long long n = 0;
  try {
    n = std::stoll(s, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  const auto unit = s.substr(pos);
  long long ms_per = 0;
  if (unit == "ms") ms_per = 1;
  else if (unit == "s") ms_per = 1000;
  else if (unit == "m") ms_per = 60'000;
  else if (unit == "h") ms_per = 3'600'000;
  else if (unit == "d") ms_per = 86'400'000;
  if (pos == 0 || ms_per == 0 || n < 0) {
    throw jobq::InvalidArgument("invalid duration '" + s + "': use a number and ms, s, m, h or d (e.g. 30s, 24h)");
  }
  if (n > jobq::max_duration.count() / ms_per) {  // before the product, which could overflow
    throw jobq::InvalidArgument("duration '" + s + "' is longer than the maximum of 100 years");
  }
  return jobq::Millis{n * ms_per};
}

jobq::Millis parse_required_duration(const std::string& s) {
  auto d = parse_duration(s);
  if (!d) throw jobq::InvalidArgument("'never' is not allowed here");
  return *d;
}

// --- the commands -----------------------------------------------------------------------------

struct Cli {
  bool json_out = false;

  std::vector<std::string> queue_names(jobq::AnyBackend& b, const std::vector<std::string>& given) {
    if (!given.empty()) {
      for (const auto& q : given) jobq::validate_queue_name(q);
      return given;
    }
    if (!b.can_list_queues()) {
      throw jobq::InvalidArgument("listing queues is not supported by the " + b.kind() +
                                  " backend yet; name them with --queue NAME");
    }
    return b.queues();
  }

  int queues(jobq::AnyBackend& b, const std::vector<std::string>& given) {
    const auto names = queue_names(b, given);
    json out = json::array();
    std::vector<std::vector<std::string>> rows;
    for (const auto& q : names) {
      auto c = b.counts(q);
      const bool paused = b.is_paused(q);
      const auto per_minute = jobq::completions_per_minute(b, q);
      std::uint64_t hour = 0;
      for (auto v : per_minute) hour += v;
      const auto oldest = jobq::oldest_waiting(b, q);
      out.push_back({{"queue", q},
                     {"paused", paused},
                     {"counts", jobq::counts_to_json(c)},
                     {"completed_last_minute", per_minute.back()},
                     {"completed_last_hour", hour},
                     {"oldest_waiting_seconds", oldest ? json(oldest->count() / 1000.0) : json(nullptr)}});
      std::vector<std::string> row{q, paused ? "yes" : "no"};
      for (const auto s : jobq::all_job_states) {
        row.push_back(std::to_string(jobq::count_of(c, s)));
        if (s == jobq::JobState::queued) row.push_back(std::to_string(c.delayed));  // of those, not due yet
      }
      row.insert(row.end(), {std::to_string(per_minute.back()), std::to_string(hour), format_age(oldest)});
      rows.push_back(std::move(row));
    }
    if (json_out) {
      std::cout << out.dump(2) << '\n';
    } else if (rows.empty()) {
      std::cout << "no queues\n";
    } else {
      std::vector<std::string> header{"QUEUE", "PAUSED"};
      for (const auto s : jobq::all_job_states) {
        std::string name(jobq::to_string(s));
        std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::toupper(c); });
        header.push_back(std::move(name));
        if (s == jobq::JobState::queued) header.emplace_back("DELAYED");
      }
      header.insert(header.end(), {"DONE/1M", "DONE/1H", "OLDEST-WAIT"});
      print_table(header, rows);
    }
    return ok;
  }

  int jobs(jobq::AnyBackend& b, const std::string& queue, const std::string& state_name, std::size_t offset,
           std::size_t limit) {
    jobq::validate_queue_name(queue);
    const auto state = jobq::job_state_from_string(state_name);
    if (limit == 0 || limit > 10'000) throw jobq::InvalidArgument("--limit must be 1..10000");
    const auto jobs = b.list(queue, state, {offset, limit});
    if (json_out) {
      json arr = json::array();
      for (const auto& j : jobs) arr.push_back(jobq::to_json(j));
      std::cout << json{{"queue", queue}, {"state", state_name}, {"offset", offset}, {"limit", limit},
                        {"jobs", arr}}
                       .dump(2)
                << '\n';
      return ok;
    }
    if (jobs.empty()) {
      std::cout << "no " << state_name << " jobs in queue " << queue
                << (offset > 0 ? " at offset " + std::to_string(offset) : std::string()) << '\n';
      return ok;
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& j : jobs) {
      const bool finished = j.finished_at.has_value();
      rows.push_back({std::to_string(j.id), j.name, std::string(jobq::to_string(j.state)),
                      std::to_string(j.attempts) + "/" + std::to_string(j.max_attempts),
                      finished ? format_time(j.finished_at) : format_time(j.run_at),
                      j.errors.empty() ? "" : one_line(j.errors.back().message, 60)});
    }
    print_table({"ID", "NAME", "STATE", "ATTEMPTS", "RUN-AT/FINISHED", "LAST-ERROR"}, rows);
    if (jobs.size() == limit) {
      std::cout << "(more may follow: --offset " << offset + limit << ")\n";
    }
    return ok;
  }

  int show(jobq::AnyBackend& b, jobq::JobId id) {
    const auto j = b.get(id);
    if (!j) {
      return report(json_out, "job " + std::to_string(id) + " not found", not_found);
    }
    // an active job is running, or leased ahead of a free slot: the worker registry tells which
    const auto holder = j->state == jobq::JobState::active ? jobq::holder_of(b.workers(), id) : std::nullopt;
    if (json_out) {
      auto out = jobq::to_json(*j);
      if (j->state == jobq::JobState::active) {
        out["holder"] = holder ? jobq::to_json(*holder) : json(nullptr);
      }
      std::cout << out.dump(2) << '\n';
      return ok;
    }
    std::cout << "job " << j->id << "\n"
              << "  queue:      " << j->queue << "\n"
              << "  name:       " << j->name << "\n"
              << "  state:      " << jobq::to_string(j->state) << "\n"
              << "  priority:   " << j->priority << "\n"
              << "  attempts:   " << j->attempts << " of " << j->max_attempts << "\n"
              << "  created:    " << format_time(j->created_at) << "\n"
              << "  run at:     " << format_time(j->run_at) << "\n"
              << "  finished:   " << format_time(j->finished_at) << "\n";
    if (j->lease_until) std::cout << "  lease until: " << format_time(j->lease_until) << "\n";
    if (j->expires_at) std::cout << "  expires:    " << format_time(j->expires_at) << " (not started by then: cancelled)\n";
    if (j->state == jobq::JobState::active) {
      std::cout << "  held by:    ";
      if (!holder) {
        std::cout << "no live worker (a lost one: the lease runs out, then the job is retried)\n";
      } else {
        std::cout << "worker " << holder->worker.id << " (" << holder->worker.host << ", pid " << holder->worker.pid
                  << "), " << (holder->running_since ? "running since " + format_time(*holder->running_since)
                                                     : std::string("leased ahead, not started yet"))
                  << "\n";
      }
    }
    if (!j->unique_key.empty()) std::cout << "  unique key: " << j->unique_key << "\n";
    if (j->timeout.count() > 0) std::cout << "  timeout:    " << j->timeout.count() << " ms\n";
    if (j->flow_id != 0) {
      std::cout << "  flow:       " << j->flow_id << " (jobq flow " << j->id << ")\n";
      if (!j->depends_on.empty()) {
        std::cout << "  after:     ";
        for (auto d : j->depends_on) std::cout << " " << d;
        std::cout << (j->continue_on_failure ? " (continues on failure)" : "") << "\n";
      }
    }
    std::cout << "  progress:   " << j->progress << "%"
              << (j->progress_message.empty() ? "" : " (" + j->progress_message + ")") << "\n"
              << "  payload:    " << j->payload.dump() << "\n"
              << "  result:     " << j->result.dump() << "\n";
    if (j->errors.empty()) {
      std::cout << "  errors:     none\n";
    } else {
      std::cout << "  errors:\n";
      for (const auto& e : j->errors) {
        std::cout << "    attempt " << e.attempt << " at " << format_time(e.at) << ": " << e.message << "\n";
      }
    }
    return ok;
  }

  // Why job `id` has no flow: it does not exist, or it is in none (both: not found).
  static jobq::NotFound no_flow(jobq::JobId id, bool exists) {
    return jobq::NotFound("job " + std::to_string(id) + (exists ? " is in no flow" : " not found"));
  }

  int flow(jobq::AnyBackend& b, jobq::JobId id) {
    const auto f = b.flow(id);
    if (!f) throw no_flow(id, b.get(id).has_value());
    std::cout << (json_out ? jobq::cli::flow_to_json(*f).dump(2) + "\n" : jobq::cli::flow_tree(*f));
    return ok;
  }

  int cancel_flow(jobq::AnyBackend& b, jobq::JobId id) {
    const auto n = b.cancel_flow(id);
    const auto j = b.get(id);  // after: it explains a 0, and names the flow
    if (!j || j->flow_id == 0) throw no_flow(id, j.has_value());
    if (json_out) {
      std::cout << json{{"flow", j->flow_id}, {"cancelled", n}}.dump(2) << '\n';
    } else {
      std::cout << "cancelled " << n << " job" << (n == 1 ? "" : "s") << " of flow " << j->flow_id
                << (n == 0 ? " (none was queued or waiting)" : "") << "\n";
    }
    return ok;
  }

  // Ids per redrive_many / cancel_many call (the backends take up to jobq::max_bulk_ids).
  static constexpr std::size_t bulk_chunk = 500;

  // "\r<verb> N of M" on stderr after each chunk of a bulk command, for people at a terminal.
  struct Progress {
    bool on;
    const char* verb;
    std::size_t total;
    bool shown = false;
    void update(std::size_t n) {
      if (!on) return;
      std::cout.flush();  // stdout first when both are the terminal
      std::cerr << '\r' << verb << ' ' << n << " of " << std::max(total, n) << std::flush;
      shown = true;
    }
    // Before more lines are printed: the progress line is erased, then drawn again below them.
    void clear() {
      if (shown) std::cerr << "\r\033[K";
    }
    void finish() {
      if (shown) std::cerr << '\n';
      shown = false;
    }
  };
  bool show_progress() const { return !json_out && isatty(STDERR_FILENO) == 1; }

  // Applies op (redrive_many or cancel_many) to the ids in chunks; explains every refusal.
  template <class Op>
  int each_job(jobq::AnyBackend& b, const std::vector<jobq::JobId>& ids, Op op, const char* verb,
               const char* required_state) {
    int rc = ok;
    json done = json::array();
    json failed = json::array();
    Progress progress{show_progress(), verb, ids.size()};
    for (std::size_t at = 0; at < ids.size(); at += bulk_chunk) {
      const std::span<const jobq::JobId> chunk(ids.data() + at, std::min(bulk_chunk, ids.size() - at));
      const auto oks = op(chunk);
      std::vector<jobq::JobId> not_done;
      for (std::size_t i = 0; i < chunk.size(); ++i) {
        if (!oks[i]) not_done.push_back(chunk[i]);
      }
      // what the refused ones are now, read in one call, explains each refusal
      const auto now = not_done.empty() ? std::vector<std::optional<jobq::JobRecord>>{} : b.get_many(not_done);
      progress.clear();
      for (std::size_t i = 0, r = 0; i < chunk.size(); ++i) {
        const auto id = chunk[i];
        if (oks[i]) {
          done.push_back(id);
          if (!json_out) std::cout << verb << " job " << id << "\n";
          continue;
        }
        const auto& j = now[r++];
        std::string why;
        if (!j) {
          why = "not found";
          rc = std::max(rc, static_cast<int>(not_found));
        } else {
          why = "it is " + std::string(jobq::to_string(j->state)) + ", not " + required_state;
          rc = rc == not_found ? rc : static_cast<int>(refused);
        }
        failed.push_back({{"id", id}, {"error", why}});
        if (!json_out) std::cerr << "jobq: job " << id << ": " << why << "\n";  // else in "refused"
      }
      progress.update(at + chunk.size());
    }
    progress.finish();
    if (json_out) std::cout << json{{"ok", done}, {"refused", failed}}.dump(2) << '\n';
    return rc;
  }

  int workers(jobq::AnyBackend& b) {
    const auto all = b.workers();
    if (json_out) {
      auto out = json::array();
      for (const auto& w : all) out.push_back(jobq::to_json(w));
      std::cout << out.dump(2) << '\n';
      return ok;
    }
    const auto now = b.now();
    std::vector<std::vector<std::string>> rows;
    for (const auto& w : all) {
      std::string queues;
      for (const auto& q : w.queues) queues += (queues.empty() ? "" : ",") + q;
      std::string running;
      for (const auto& r : w.running) running += (running.empty() ? "" : " ") + std::to_string(r.id);
      rows.push_back({w.id, w.host, std::to_string(w.pid), queues, std::to_string(w.concurrency),
                      running.empty() ? "-" : running, std::to_string(w.leased.size()), format_time(w.started_at),
                      format_age(std::chrono::duration_cast<jobq::Millis>(now - w.heartbeat_at)) + " ago"});
    }
    print_table({"ID", "HOST", "PID", "QUEUES", "CONCURRENCY", "RUNNING", "LEASED", "STARTED", "LAST-BEAT"}, rows);
    return ok;
  }

#if JOBQ_CLI_WITH_HTTP
  // Serves the dashboard until SIGINT or SIGTERM. The token comes from a file or the
  // environment only: other users can read a command line.
  int dashboard(jobq::AnyBackend& b, const std::string& url, jobq::HttpOptions o, const std::string& token_file) {
    if (!token_file.empty()) {
      std::ifstream in(token_file);
      if (!in) throw jobq::InvalidArgument("dashboard: cannot read the token file '" + token_file + "'");
      std::getline(in, o.token);
      if (o.token.empty()) throw jobq::InvalidArgument("dashboard: the token file '" + token_file + "' is empty");
    } else if (const char* env = std::getenv("JOBQ_DASHBOARD_TOKEN"); env != nullptr && *env != '\0') {
      o.token = env;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);  // before the server's threads: they inherit it
    jobq::Metrics metrics;
    jobq::HttpServer server{b, metrics, std::move(o)};
    server.start();
    const auto& opt = server.options();
    const auto shown = opt.host.find(':') != std::string::npos ? "[" + opt.host + "]" : opt.host;
    std::cout << "jobq dashboard on http://" << shown << ":" << server.port() << "/ for " << jobq::mask_url(url)
              << (opt.actions ? "" : " (read-only)") << (opt.token.empty() ? "" : ", token required")
              << "; Ctrl-C stops it" << std::endl;
    int sig = 0;
    sigwait(&set, &sig);
    server.stop();
    std::cout << "jobq dashboard stopped" << std::endl;
    return ok;
  }
#endif

  int redrive_all(jobq::AnyBackend& b, const std::vector<std::string>& queues) {
    json out = json::object();
    for (const auto& q : queues) {
      jobq::validate_queue_name(q);
      const bool shown = show_progress();
      Progress progress{shown, "re-drove", shown ? static_cast<std::size_t>(b.counts(q).dead) : 0};
      std::size_t n = 0, kept = 0;
      for (;;) {  // re-driven jobs leave the dead list: each page starts after the refused ones
        const auto page = b.list(q, jobq::JobState::dead, {kept, bulk_chunk});
        std::vector<jobq::JobId> ids;
        ids.reserve(page.size());
        for (const auto& j : page) ids.push_back(j.id);
        const auto oks = b.redrive_many(ids);
        const auto moved = static_cast<std::size_t>(std::count(oks.begin(), oks.end(), true));
        n += moved;
        kept += ids.size() - moved;
        if (!page.empty()) progress.update(n);
        if (page.size() < bulk_chunk) break;
      }
      progress.finish();
      out[q] = n;
      if (!json_out) std::cout << "re-drove " << n << " dead job" << (n == 1 ? "" : "s") << " of queue " << q << "\n";
    }
    if (json_out) std::cout << json{{"redriven", out}}.dump(2) << '\n';
    return ok;
  }

  // Pausing a queue the store does not know would make one (listed from then on): refused
  // unless asked for, e.g. to pause a queue before its first job.
  int pause(jobq::AnyBackend& b, const std::vector<std::string>& queues, bool paused, bool create) {
    for (const auto& q : queues) jobq::validate_queue_name(q);
    if (paused && !create && b.can_list_queues()) {
      const auto known = b.queues();
      for (const auto& q : queues) {
        if (std::find(known.begin(), known.end(), q) == known.end()) {
          throw jobq::NotFound("no queue '" + q + "' in this store (it has no jobs); to pause it before its first job, "
                               "pass --create");
        }
      }
    }
    json out = json::array();
    for (const auto& q : queues) {
      paused ? b.pause(q) : b.resume(q);
      out.push_back(q);
      if (!json_out) std::cout << "queue " << q << (paused ? " paused" : " resumed") << "\n";
    }
    if (json_out) std::cout << json{{paused ? "paused" : "resumed", out}}.dump(2) << '\n';
    return ok;
  }

  int prune(jobq::AnyBackend& b, const std::vector<std::string>& queues, const jobq::Retention& r) {
    json out = json::object();
    for (const auto& q : queues) {
      jobq::validate_queue_name(q);
      const auto n = b.prune(q, r);
      out[q] = n;
      if (!json_out) std::cout << "pruned " << n << " finished job" << (n == 1 ? "" : "s") << " from queue " << q << "\n";
    }
    if (json_out) std::cout << json{{"pruned", out}}.dump(2) << '\n';
    return ok;
  }

  int enqueue(jobq::AnyBackend& b, const std::string& queue, const std::string& name, json payload,
              const jobq::EnqueueOptions& o) {
    jobq::Queue<jobq::AnyBackend> q{b, queue};
    const auto r = q.submit(q.make(name, std::move(payload), o));
    if (json_out) {
      std::cout << json{{"id", r.id}, {"created", r.created}}.dump(2) << '\n';
    } else if (r.created) {
      std::cout << "enqueued job " << r.id << " (" << name << ") into queue " << queue << "\n";
    } else {
      std::cout << "not enqueued: job " << r.id << " holds unique key '" << o.unique_key << "'\n";
    }
    return ok;
  }

  int schedules(jobq::AnyBackend& b) {
    const auto all = jobq::load_schedules(b);
    if (json_out) {
      json out = json::array();
      for (const auto& s : all) {
        auto j = jobq::to_json(s.schedule);
        j["name"] = s.schedule.name;
        j["next_run"] = jobq::to_epoch_ms(s.next_run);
        out.push_back(j);
      }
      std::cout << out.dump(2) << '\n';
      return ok;
    }
    if (all.empty()) {
      std::cout << "no schedules\n";
      return ok;
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& s : all) {
      const auto& o = s.schedule.options;
      rows.push_back({s.schedule.name, s.schedule.queue, s.schedule.job_name, s.schedule.cron, o.tz,
                      format_time(s.next_run), o.missed == jobq::MissedTicks::skip ? "skip" : "run once"});
    }
    print_table({"SCHEDULE", "QUEUE", "JOB", "CRON", "TZ", "NEXT RUN", "MISSED"}, rows);
    return ok;
  }

  int unschedule(jobq::AnyBackend& b, const std::string& name) {
    if (!b.remove_schedule(name)) throw jobq::NotFound("schedule '" + name + "' not found");
    if (json_out) {
      std::cout << json{{"removed", name}}.dump(2) << '\n';
    } else {
      std::cout << "removed schedule " << name << "\n";
    }
    return ok;
  }

  // "100/1m": at most 100 starts per minute; "none" clears the rate limit.
  static std::optional<jobq::RateLimit> parse_rate(const std::string& s) {
    if (s == "none") return std::nullopt;
    const auto slash = s.find('/');
    long long n = 0;
    std::size_t pos = 0;
    try {
      n = std::stoll(s.substr(0, slash), &pos);
    } catch (const std::exception&) {
      pos = 0;
    }
    if (slash == std::string::npos || pos != slash || n < 1) {
      throw jobq::InvalidArgument("invalid rate '" + s + "': use MAX/WINDOW, e.g. 100/1m, or 'none'");
    }
    return jobq::RateLimit{n, parse_required_duration(s.substr(slash + 1))};
  }

  int limits(jobq::AnyBackend& b, const std::string& queue, const std::string& rate, int group_concurrency,
             int concurrency) {
    jobq::validate_queue_name(queue);
    auto l = b.queue_limits(queue);
    if (!rate.empty()) l.rate = parse_rate(rate);
    if (group_concurrency >= 0) l.group_concurrency = group_concurrency;
    if (concurrency >= 0) l.concurrency = concurrency;
    if (!rate.empty() || group_concurrency >= 0 || concurrency >= 0) b.set_queue_limits(queue, l);
    if (json_out) {
      std::cout << json{{"queue", queue}, {"limits", jobq::to_json(l)}}.dump(2) << '\n';
    } else {
      std::cout << queue << ": rate "
                << (l.rate ? std::to_string(l.rate->max) + " per " + format_age(l.rate->window) : "unlimited")
                << ", group concurrency "
                << (l.group_concurrency > 0 ? std::to_string(l.group_concurrency) : "unlimited")
                << ", concurrency " << (l.concurrency > 0 ? std::to_string(l.concurrency) : "unlimited") << "\n";
    }
    return ok;
  }
};

json read_payload(const std::string& arg, const std::string& file) {
  std::string text = arg;
  if (!file.empty()) {
    if (file == "-") {
      text.assign(std::istreambuf_iterator<char>(std::cin), {});
    } else {
      std::ifstream in(file);
      if (!in) throw jobq::InvalidArgument("cannot read payload file '" + file + "'");
      text.assign(std::istreambuf_iterator<char>(in), {});
    }
  }
  if (text.empty()) return json::object();
  auto j = json::parse(text, nullptr, false);
  if (j.is_discarded()) throw jobq::InvalidArgument("payload is not valid JSON: " + one_line(text, 80));
  jobq::check_json(j, "payload");  // parsing is iterative; copies and dumps are not
  return j;
}

int exit_code_of(const jobq::Error& e) {
  switch (e.category()) {
    case jobq::ErrorCategory::invalid_argument: return usage;
    case jobq::ErrorCategory::not_found: return not_found;
    default: return failure;
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"jobq: inspect and operate a jobq store (queues, jobs, dead letters)", "jobq"};
  app.require_subcommand(1);
  app.fallthrough();  // global options (--json, --url) may also follow the command
  app.set_version_flag("--version", std::string("jobq ") + JOBQ_VERSION_STRING);
  app.footer(
      "Backend URLs: sqlite:///abs/path.db, sqlite://relative.db, postgresql://user@host/db,\n"
      "redis://host:6379/0, memory:// (empty, for trying the CLI). Default: $JOBQ_URL.\n"
      "Exit codes: 0 ok, 1 backend/connection error, 2 usage or invalid argument, 3 not found\n"
      "(a job, or the flow of a job in none), 4 refused (the job is not in a state that allows it).");

  std::string url;
  jobq::OpenOptions open_options;
  Cli cli;
  app.add_option("-u,--url", url, "backend URL (default: $JOBQ_URL)")->envname("JOBQ_URL");
  app.add_flag("--json", cli.json_out, "print JSON instead of tables");
  app.add_option("--pg-schema", open_options.postgres_schema, "PostgreSQL schema (default jobq)");
  app.add_option("--redis-prefix", open_options.redis_prefix, "Redis key prefix (default jobq)");

  std::vector<std::string> queues_opt;
  auto* queues_cmd = app.add_subcommand("queues", "queues with jobs per state, throughput and oldest wait");
  queues_cmd->add_option("-q,--queue", queues_opt, "only these queues (needed when the backend cannot list queues)");

  std::string jobs_queue, jobs_state = "queued";
  std::size_t offset = 0, limit = 50;
  auto* jobs_cmd = app.add_subcommand("jobs", "list the jobs of a queue in one state, paged");
  jobs_cmd->add_option("queue", jobs_queue, "queue name")->required();
  std::vector<std::string> state_names;
  for (const auto s : jobq::all_job_states) state_names.emplace_back(jobq::to_string(s));
  jobs_cmd->add_option("-s,--state", jobs_state, "queued, active, completed, dead, cancelled or waiting")
      ->check(CLI::IsMember(state_names));
  jobs_cmd->add_option("--offset", offset, "jobs to skip")->check(CLI::NonNegativeNumber);
  jobs_cmd->add_option("--limit", limit, "jobs per page (1..10000)");

  jobq::JobId show_id = 0;
  auto* show_cmd = app.add_subcommand("show", "one job: payload, attempts, errors, progress, result");
  show_cmd->add_option("id", show_id, "job id")->required();

  std::vector<jobq::JobId> redrive_ids;
  std::vector<std::string> redrive_queues;
  bool redrive_all = false;
  auto* redrive_cmd = app.add_subcommand("redrive", "re-drive dead jobs: by id, or --all of --queue");
  redrive_cmd->add_option("ids", redrive_ids, "dead job ids");
  redrive_cmd->add_option("-q,--queue", redrive_queues, "queue(s) for --all");
  redrive_cmd->add_flag("--all", redrive_all, "every dead job of the --queue(s)");

  std::vector<jobq::JobId> cancel_ids;
  auto* cancel_cmd = app.add_subcommand("cancel", "cancel queued, waiting or active jobs");
  cancel_cmd->add_option("ids", cancel_ids, "queued, waiting or active job ids")->required();

  jobq::JobId flow_id = 0;
  auto* flow_cmd = app.add_subcommand("flow", "the flow of a job, as a tree of its members and what they wait for");
  flow_cmd->add_option("id", flow_id, "id of any member of the flow")->required();
  jobq::JobId cancel_flow_id = 0;
  auto* cancel_flow_cmd = app.add_subcommand("cancel-flow", "cancel every queued or waiting member of a job's flow");
  cancel_flow_cmd->add_option("id", cancel_flow_id, "id of any member of the flow")->required();

  std::vector<std::string> pause_queues, resume_queues;
  auto* pause_cmd = app.add_subcommand("pause", "stop workers claiming from queues");
  pause_cmd->add_option("queues", pause_queues, "queue names")->required();
  bool pause_create = false;
  pause_cmd->add_flag("--create", pause_create, "pause a queue that has no jobs yet");
  auto* resume_cmd = app.add_subcommand("resume", "let workers claim from queues again");
  resume_cmd->add_option("queues", resume_queues, "queue names")->required();

  std::vector<std::string> prune_queues;
  std::string keep_completed = "24h", keep_dead = "7d", keep_cancelled = "24h";
  auto* prune_cmd = app.add_subcommand("prune", "delete finished jobs older than their retention");
  prune_cmd->add_option("queues", prune_queues, "queue names")->required();
  prune_cmd->add_option("--completed", keep_completed, "keep completed jobs this long, or 'never' (24h)");
  prune_cmd->add_option("--dead", keep_dead, "keep dead jobs this long, or 'never' (7d)");
  prune_cmd->add_option("--cancelled", keep_cancelled, "keep cancelled jobs this long, or 'never' (24h)");
  std::size_t keep_max = 0;
  prune_cmd->add_option("--max-jobs", keep_max, "keep at most this many per finished state, newest first (0: no cap)")
      ->check(CLI::NonNegativeNumber);

  std::string enq_queue, enq_name, enq_payload, enq_file, enq_delay, enq_timeout, enq_unique_for, enq_expire_in;
  jobq::EnqueueOptions enq;
  auto* enqueue_cmd = app.add_subcommand("enqueue", "enqueue one job from JSON");
  enqueue_cmd->add_option("queue", enq_queue, "queue name")->required();
  enqueue_cmd->add_option("name", enq_name, "job name (selects the handler)")->required();
  enqueue_cmd->add_option("payload", enq_payload, "payload JSON (default {})");
  enqueue_cmd->add_option("-f,--payload-file", enq_file, "read the payload from a file ('-': stdin)");
  enqueue_cmd->add_option("--priority", enq.priority, "higher runs first (0)");
  enqueue_cmd->add_option("--delay", enq_delay, "not before now + this (e.g. 30s)");
  enqueue_cmd->add_option("--max-attempts", enq.max_attempts, "attempts before dead (3)");
  enqueue_cmd->add_option("--timeout", enq_timeout, "per-attempt limit (e.g. 5m)");
  enqueue_cmd->add_option("--unique-key", enq.unique_key, "dedup key within the queue");
  enqueue_cmd->add_option("--unique-for", enq_unique_for, "hold the key this long after completion");
  enqueue_cmd->add_option("--expire-in", enq_expire_in, "not started within this (e.g. 10m): cancelled, never run");

#if JOBQ_CLI_WITH_HTTP
  jobq::HttpOptions http_opt;
  std::string token_file, throughput_refresh;
  bool read_only_dashboard = false;
  auto* dashboard_cmd = app.add_subcommand("dashboard", "serve the web dashboard and /metrics until Ctrl-C");
  dashboard_cmd->add_option("--host", http_opt.host, "address to listen on (127.0.0.1)");
  dashboard_cmd->add_option("--port", http_opt.port, "TCP port (9464; 0: any free one)")->check(CLI::Range(0, 65535));
  dashboard_cmd->add_flag("--read-only", read_only_dashboard, "no actions (re-drive, cancel, pause)");
  dashboard_cmd->add_option("--token-file", token_file,
                            "file whose first line is the access token (else $JOBQ_DASHBOARD_TOKEN)");
  dashboard_cmd->add_flag("--no-auth", http_opt.no_auth, "serve a non-loopback address without a token");
  dashboard_cmd->add_option("--allowed-host", http_opt.allowed_hosts,
                            "host name the dashboard is reached by (repeat; default localhost, 127.0.0.1, [::1])");
  dashboard_cmd->add_option("--throughput-refresh", throughput_refresh,
                            "read the per-minute charts from the store at most this often (10s)");
#endif
  auto* workers_cmd = app.add_subcommand("workers", "live workers: host, pid, queues, the jobs each runs and holds");

  auto* schedules_cmd = app.add_subcommand("schedules", "list recurring (cron) schedules and their next run");
  std::string unschedule_name;
  auto* unschedule_cmd = app.add_subcommand("unschedule", "remove a recurring schedule");
  unschedule_cmd->add_option("name", unschedule_name, "schedule name")->required();

  std::string limits_queue, limits_rate;
  int limits_groups = -1;
  int limits_concurrency = -1;
  auto* limits_cmd =
      app.add_subcommand("limits", "show or set a queue's rate limit, group concurrency and concurrency");
  limits_cmd->add_option("queue", limits_queue, "queue name")->required();
  limits_cmd->add_option("--rate", limits_rate, "at most MAX starts per WINDOW across all workers (100/1m), or none");
  limits_cmd->add_option("--group-concurrency", limits_groups, "active jobs per group key at most (0: unlimited)")
      ->check(CLI::NonNegativeNumber);
  limits_cmd->add_option("--concurrency", limits_concurrency,
                         "active jobs of the queue at most, across all workers and processes (0: unlimited)")
      ->check(CLI::NonNegativeNumber);

  // --json is known before parsing, so that a usage error is reported as JSON too.
  for (int i = 1; i < argc && std::string_view(argv[i]) != "--"; ++i) {
    if (std::string_view(argv[i]) == "--json") cli.json_out = true;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0 || !cli.json_out) {  // --help, --version; or a usage error for people
      const int rc = app.exit(e);
      return rc == 0 ? ok : usage;
    }
    return report(true, e.what(), usage);
  }

  try {
    if (url.empty()) {
      return report(cli.json_out, "no backend URL: pass --url or set JOBQ_URL (e.g. sqlite:///var/lib/app/jobs.db)",
                    usage);
    }
#if JOBQ_CLI_WITH_HTTP
    if (dashboard_cmd->parsed() && !throughput_refresh.empty()) {  // before the store is opened: a usage error
      const auto every = parse_duration(throughput_refresh);  // throws on a malformed one
      if (!every || *every <= jobq::Millis{0}) {
        throw jobq::InvalidArgument("dashboard: --throughput-refresh must be a positive duration (e.g. 10s, 1m), not '" +
                                    throughput_refresh + "'");
      }
      http_opt.throughput_refresh = *every;
    }
#endif
    // A mistyped URL, schema or prefix must not leave a new store behind: only the commands
    // that add to a store may create one.
    open_options.create = enqueue_cmd->parsed() || (pause_cmd->parsed() && pause_create) ||
                          (limits_cmd->parsed() && (!limits_rate.empty() || limits_groups >= 0 || limits_concurrency >= 0));
    auto backend = jobq::open_backend(url, open_options);
    if (queues_cmd->parsed()) return cli.queues(backend, queues_opt);
    if (schedules_cmd->parsed()) return cli.schedules(backend);
    if (workers_cmd->parsed()) return cli.workers(backend);
#if JOBQ_CLI_WITH_HTTP
    if (dashboard_cmd->parsed()) {
      http_opt.actions = !read_only_dashboard;
      return cli.dashboard(backend, url, std::move(http_opt), token_file);
    }
#endif
    if (unschedule_cmd->parsed()) return cli.unschedule(backend, unschedule_name);
    if (limits_cmd->parsed()) return cli.limits(backend, limits_queue, limits_rate, limits_groups, limits_concurrency);
    if (jobs_cmd->parsed()) return cli.jobs(backend, jobs_queue, jobs_state, offset, limit);
    if (show_cmd->parsed()) return cli.show(backend, show_id);
    if (flow_cmd->parsed()) return cli.flow(backend, flow_id);
    if (cancel_flow_cmd->parsed()) return cli.cancel_flow(backend, cancel_flow_id);
    if (redrive_cmd->parsed()) {
      if (redrive_all) {
        if (!redrive_ids.empty()) throw jobq::InvalidArgument("redrive: give job ids or --all, not both");
        if (redrive_queues.empty()) throw jobq::InvalidArgument("redrive --all needs --queue NAME");
        return cli.redrive_all(backend, redrive_queues);
      }
      if (redrive_ids.empty()) throw jobq::InvalidArgument("redrive: give job ids, or --all --queue NAME");
      return cli.each_job(backend, redrive_ids, [&](std::span<const jobq::JobId> ids) { return backend.redrive_many(ids); },
                          "re-drove", "dead");
    }
    if (cancel_cmd->parsed()) {
      return cli.each_job(backend, cancel_ids, [&](std::span<const jobq::JobId> ids) { return backend.cancel_many(ids); },
                          "cancelled", "queued, waiting or active");
    }
    if (pause_cmd->parsed()) return cli.pause(backend, pause_queues, true, pause_create);
    if (resume_cmd->parsed()) return cli.pause(backend, resume_queues, false, false);
    if (prune_cmd->parsed()) {
      jobq::Retention r;
      r.completed = parse_duration(keep_completed);
      r.dead = parse_duration(keep_dead);
      r.cancelled = parse_duration(keep_cancelled);
      r.max_jobs = keep_max;
      return cli.prune(backend, prune_queues, r);
    }
    if (enqueue_cmd->parsed()) {
      if (!enq_payload.empty() && !enq_file.empty()) {
        throw jobq::InvalidArgument("enqueue: give the payload as an argument or with --payload-file, not both");
      }
      if (!enq_delay.empty()) enq.delay = parse_required_duration(enq_delay);
      if (!enq_timeout.empty()) enq.timeout = parse_required_duration(enq_timeout);
      if (!enq_unique_for.empty()) enq.unique_for = parse_required_duration(enq_unique_for);
      if (!enq_expire_in.empty()) enq.expire_in = parse_required_duration(enq_expire_in);
      return cli.enqueue(backend, enq_queue, enq_name, read_payload(enq_payload, enq_file), enq);
    }
    return usage;
  } catch (const jobq::Error& e) {
    return report(cli.json_out, e.what(), exit_code_of(e));
  } catch (const std::exception& e) {
    return report(cli.json_out, e.what(), failure);
  }
}
