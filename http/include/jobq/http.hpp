#pragma once

/// @file
/// jobq::HttpServer: Prometheus metrics, a JSON API and the dashboard page, served by a worker
/// (or any) process over cpp-httplib. Target jobq::http.

#include <algorithm>
#include <cctype>
#include <array>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "jobq/any_backend.hpp"
#include "jobq/backend.hpp"
#include "jobq/dashboard_html.hpp"
#include "jobq/http_connection.hpp"
#include "jobq/metrics.hpp"

namespace jobq {

namespace detail {

inline std::string lowercase(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

/// @brief The host name of a Host header value or an Origin's authority ("name", "name:port",
/// "[v6]", "[v6]:port"), lower-cased; nullopt if it is anything else.
inline std::optional<std::string> host_name_of(std::string_view authority) {
  std::string_view name = authority, port;
  if (authority.starts_with("[")) {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    name = authority.substr(0, close + 1);
    port = authority.substr(close + 1);
    const auto inside = name.substr(1, name.size() - 2);
    if (inside.empty() || !std::all_of(inside.begin(), inside.end(), [](char c) {
          return std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.';
        })) {
      return std::nullopt;
    }
  } else {
    const auto colon = authority.find(':');
    if (colon != std::string_view::npos) {
      name = authority.substr(0, colon);
      port = authority.substr(colon);
    }
    if (name.empty() || !std::all_of(name.begin(), name.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_';
        })) {
      return std::nullopt;
    }
  }
  if (!port.empty()) {
    port.remove_prefix(1);  // ':'
    if (port.empty() || port.size() > 5 ||
        !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return std::nullopt;
    }
  }
  return lowercase(name);
}

inline std::string http_error_text(int status) {
  switch (status) {
    case 400: return "bad request";
    case 404: return "not found";
    case 405: return "method not allowed";
    case 413: return "request body too large";
    case 414: return "request target too long";
    case 416: return "bad range";
    default: return "HTTP error " + std::to_string(status);
  }
}

}  // namespace detail

namespace detail {

/// @brief Whether a bind address is loopback only (127.0.0.0/8, ::1, localhost).
inline bool is_loopback_host(const std::string& host) {
  return host == "localhost" || host == "::1" || host == "[::1]" || host.starts_with("127.");
}

/// @brief The cookie the login form sets.
inline constexpr std::string_view token_cookie = "jobq_token";

/// @brief The value of cookie `name` in a Cookie header, if present.
inline std::optional<std::string_view> cookie_value(std::string_view header, std::string_view name) {
  while (!header.empty()) {
    const auto end = header.find(';');
    auto part = header.substr(0, end);
    while (part.starts_with(' ')) part.remove_prefix(1);
    if (part.size() > name.size() && part.substr(0, name.size()) == name && part[name.size()] == '=') {
      return part.substr(name.size() + 1);
    }
    if (end == std::string_view::npos) break;
    header.remove_prefix(end + 1);
  }
  return std::nullopt;
}

}  // namespace detail

namespace detail {

/// @brief Queued jobs (due and delayed) per queue, one point per minute over the last hour: a
/// ring of 60 slots per queue keyed by epoch minute, the last sample of a minute winning.
/// In memory only, so the history starts when the server does. Thread-safe.
class DepthHistory {
 public:
  /// @brief Records `queued` as the depth of `queue` in epoch minute `minute`.
  void record(const std::string& queue, std::int64_t minute, std::int64_t queued) {
    std::lock_guard lock(mutex_);
    rings_[queue][static_cast<std::size_t>(minute % 60)] = {minute, queued};
  }

  /// @brief The 60 minutes up to `minute`, oldest first: the depth, or null where none was sampled.
  [[nodiscard]] nlohmann::json series(const std::string& queue, std::int64_t minute) const {
    std::lock_guard lock(mutex_);
    auto out = nlohmann::json::array();
    const auto it = rings_.find(queue);
    for (auto m = minute - 59; m <= minute; ++m) {
      const Slot* slot = it == rings_.end() ? nullptr : &it->second[static_cast<std::size_t>(m % 60)];
      out.push_back(slot && slot->minute == m ? nlohmann::json(slot->queued) : nlohmann::json(nullptr));
    }
    return out;
  }

 private:
  struct Slot {
    std::int64_t minute = -1;
    std::int64_t queued = 0;
  };
  mutable std::mutex mutex_;
  std::map<std::string, std::array<Slot, 60>> rings_;
};

}  // namespace detail

/// @brief Options of HttpServer.
struct HttpOptions {
  std::string host = "127.0.0.1";  ///< address to bind (loopback by default: no auth is built in)
  int port = 9464;                 ///< TCP port; 0 = any free port (see HttpServer::port())
  std::vector<std::string> queues{};  ///< queues to show; the backend's own list is added when it has one
  bool actions = true;             ///< allow the POST actions (re-drive, cancel, pause, resume)
  std::size_t jobs_per_list = 50;  ///< failed/dead jobs the dashboard lists per queue
  /// Queued jobs `GET /api/jobs?failed=1` reads at most, looking for retrying ones among delayed.
  std::size_t max_failed_scan = 10'000;
  /// Host names served (the Host header, any port) and accepted in the Origin of an action; the
  /// bound address is accepted too. Others get 421, so a DNS-rebinding page cannot read or act.
  std::vector<std::string> allowed_hosts{"localhost", "127.0.0.1", "[::1]"};
  /// How often a thread of the server samples each queue's depth (queued jobs) for the charts;
  /// `GET /api/queues` samples too, at most once per 10 s. Kept for an hour, in memory.
  Millis depth_interval{60'000};
  /// How long `GET /api/queues` reuses a queue's completed/failed per-minute figures (each
  /// computation reads up to 1000 jobs per state) before reading them again, by the store's
  /// clock; a new minute always reads again. 0 = on every request.
  Millis throughput_refresh{10'000};
  std::size_t max_connections = 32;  ///< connections served at once; more are answered 503 and closed
  Millis request_timeout{5'000};     ///< time from a request's first byte to its last; then 408 and closed
  Millis read_timeout{1'000};        ///< longest silence inside a request; then 408 and closed
  std::size_t max_header_bytes = 32 * 1024;  ///< request line + headers; larger: 431 and closed
  std::size_t max_body_bytes = 1024;  ///< larger or chunked bodies: 413 and closed, before being read
  /// Access token (at least 16 characters); empty = none. With one, every request must carry
  /// it: `Authorization: Bearer <token>` (the JSON API, /metrics) or the HttpOnly SameSite
  /// cookie that the login form at /login sets (the dashboard). Read it from a file or the
  /// environment, never from a command line (other users see argv in ps).
  std::string token{};
  /// Serve an address other than loopback without a token (behind a proxy that authenticates).
  /// Without it, such a host and no token is refused when the server is made.
  bool no_auth = false;
};

/// @brief Serves, on its own threads:
/// - `GET /metrics`: Metrics::prometheus() after sampling the backend (counts, paused, oldest);
/// - `GET /`: the dashboard page (queues with counts, jobs/min and per-queue charts of the last
///   hour, failed and dead jobs with their errors, re-drive / cancel buttons, the flow of a job);
/// - `GET /api/queues` (per queue also completed and failed per minute from the store, read at
///   most once per HttpOptions::throughput_refresh, and the
///   queue depth per minute that a thread of this server samples: docs/operating.md), `GET /api/jobs?queue=&state=&offset=&limit=[&failed=1]` (with `more`:
///   whether the list goes on past `limit`), `GET /api/jobs/{id}`, `GET /api/jobs/{id}/flow[?limit=]`
///   (the flow of a member: `{id, size, counts, members[], more}`, the first `limit` (1000)
///   members by id, each with its depends_on; 404 if the job is in no flow);
/// - `POST /api/jobs/{id}/redrive|cancel`, `POST /api/queues/{name}/pause|resume` (need the
///   header `X-Jobq-Action: 1`, which a cross-site form cannot send; off with actions=false);
///   `POST /api/queues/pause|resume?queue={name}` too (a path cannot carry the names `.` / `..`).
///
/// It has no authentication: bind it to loopback or put it behind a proxy that has. Requests
/// for other host names, actions from other origins, large heads or bodies and slow clients are
/// refused (see HttpOptions); every response forbids framing and MIME sniffing.
template <Backend B>
class HttpServer {
 public:
  /// @brief A stopped server over `backend` and `metrics` (both must outlive it).
  HttpServer(B& backend, Metrics& metrics, HttpOptions options = {})
      : backend_(&backend), metrics_(&metrics), opt_(checked(std::move(options))), server_(limits(opt_)) {
    for (const auto& q : opt_.queues) validate_queue_name(q);
    for (const auto& h : opt_.allowed_hosts) {
      const auto name = detail::host_name_of(h);
      if (!name) throw InvalidArgument("http: allowed host '" + h + "' is not a host name");
      allowed_hosts_.insert(*name);
    }
    if (opt_.host != "0.0.0.0" && opt_.host != "::" && !opt_.host.empty()) {
      allowed_hosts_.insert(detail::lowercase(opt_.host.find(':') != std::string::npos ? "[" + opt_.host + "]"
                                                                                       : opt_.host));
    }
    guards();
    routes();
  }

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  /// @brief Stops serving.
  ~HttpServer() { stop(); }

  /// @brief Binds and starts serving on a background thread; throws Error if it cannot bind.
  void start() {
    if (thread_.joinable()) return;
    server_.open_connections();
    if (opt_.port == 0) {
      port_ = server_.bind_to_any_port(opt_.host);
    } else {
      port_ = server_.bind_to_port(opt_.host, opt_.port) ? opt_.port : -1;
    }
    if (port_ <= 0) {
      throw Error(ErrorCategory::connection,
                  "http: cannot listen on " + opt_.host + ":" + std::to_string(opt_.port));
    }
    server_.widen_backlog();
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    start_sampler();
  }

  /// @brief Stops serving and joins the thread (idempotent).
  void stop() {
    if (!thread_.joinable()) return;
    stop_sampler();
    server_.stop();
    server_.close_connections();  // a slow client must not hold stop() up
    thread_.join();
  }

  /// @brief The bound port (after start()).
  [[nodiscard]] int port() const noexcept { return port_; }

  /// @brief The options in force.
  [[nodiscard]] const HttpOptions& options() const noexcept { return opt_; }

  /// @brief The queues shown: the configured ones, the backend's own list when it has one,
  /// and every queue the metrics registry has seen.
  std::vector<std::string> queues() {
    std::set<std::string> all(opt_.queues.begin(), opt_.queues.end());
    if constexpr (std::is_same_v<B, AnyBackend>) {
      if (backend_->can_list_queues()) {
        for (auto& q : backend_->queues()) all.insert(std::move(q));
      }
    } else if constexpr (requires(B& b) { b.queues(); }) {
      for (auto& q : backend_->queues()) all.insert(std::move(q));
    }
    for (auto& q : metrics_->queues()) all.insert(std::move(q));
    return {all.begin(), all.end()};
  }

 private:
  using json = nlohmann::json;

  static HttpOptions checked(HttpOptions o) {
    if (o.max_connections == 0 || o.request_timeout <= Millis(0) || o.read_timeout <= Millis(0) ||
        o.depth_interval <= Millis(0) || o.throughput_refresh < Millis(0) || o.max_header_bytes < 1024) {
      throw InvalidArgument(
          "http: max_connections, the timeouts and depth_interval must be positive, throughput_refresh not "
          "negative, max_header_bytes at least 1024");
    }
    if (!o.token.empty() && (o.token.size() < 16 || o.token.size() > 256 ||
                             std::any_of(o.token.begin(), o.token.end(), [](char c) {
                               return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f || c == ';' || c == ',';
                             }))) {
      throw InvalidArgument("http: the access token must be 16 to 256 printable characters, without spaces, ';' or ','");
    }
    if (o.token.empty() && !o.no_auth && !detail::is_loopback_host(o.host)) {
      throw InvalidArgument("http: serving " + o.host +
                            " (not loopback) needs an access token (HttpOptions::token; jobq dashboard: "
                            "--token-file or JOBQ_DASHBOARD_TOKEN), or no_auth (--no-auth) behind a proxy that "
                            "authenticates");
    }
    return o;
  }

  // Constant time in the length of `given`: how much of a guess was right must not show.
  bool token_matches(std::string_view given) const {
    const std::string_view want = opt_.token;
    unsigned diff = given.size() == want.size() ? 0U : 1U;
    for (std::size_t i = 0; i < given.size(); ++i) {
      diff |= static_cast<unsigned char>(given[i]) ^ static_cast<unsigned char>(want[i % want.size()]);
    }
    return diff == 0;
  }

  bool authenticated(const httplib::Request& req) const {
    if (opt_.token.empty()) return true;
    const auto auth = req.get_header_value("Authorization");
    if (auth.starts_with("Bearer ") && token_matches(std::string_view(auth).substr(7))) return true;
    const std::string cookies = req.get_header_value("Cookie");  // the value cookie_value points into
    const auto cookie = detail::cookie_value(cookies, detail::token_cookie);
    return cookie && token_matches(*cookie);
  }

  static detail::HttpLimits limits(const HttpOptions& o) {
    return {o.max_connections, o.request_timeout, o.read_timeout, o.max_header_bytes, o.max_body_bytes};
  }

  struct Refusal {
    int status;
    std::string error;
  };

  bool allowed_host(std::string_view authority) const {
    const auto name = detail::host_name_of(authority);
    return name && allowed_hosts_.count(*name) > 0;
  }

  // Checks made on a request's head, before its body is read or any handler runs.
  std::optional<Refusal> refusal(const httplib::Request& req) const {
    const auto host = req.get_header_value("Host");
    if (host.empty()) return Refusal{400, "missing Host header"};
    if (!allowed_host(host)) {
      return Refusal{421, "'" + host + "' is not an allowed host of this server (HttpOptions::allowed_hosts)"};
    }
    // Refusing here leaves the body unread, which only jobq's own connection loop then closes on;
    // elsewhere httplib's payload limit answers 413 after discarding the body.
    if (detail::http_own_connections && req.has_header("Transfer-Encoding")) {
      return Refusal{413, "request bodies are not accepted (chunked)"};
    }
    if (detail::http_own_connections && req.has_header("Content-Length")) {
      const auto v = req.get_header_value("Content-Length");
      std::size_t n = 0;
      const auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
      if (ec == std::errc::result_out_of_range) n = SIZE_MAX;
      else if (ec != std::errc() || p != v.data() + v.size()) return Refusal{400, "bad Content-Length"};
      if (n > opt_.max_body_bytes) {
        return Refusal{413, "request body over " + std::to_string(opt_.max_body_bytes) + " bytes"};
      }
    }
    if (!authenticated(req) && req.path != "/login") {
      // people are sent to the login form; programs get 401
      if (req.method == "GET" && req.path == "/") return Refusal{303, "log in first"};
      return Refusal{401, "authentication required: send Authorization: Bearer <token>, or log in at /login"};
    }
    if (req.method != "GET" && req.method != "HEAD" && req.has_header("Origin")) {
      const auto origin = req.get_header_value("Origin");
      std::string_view rest = origin;
      const bool web = rest.starts_with("http://") || rest.starts_with("https://");
      if (web) rest.remove_prefix(rest.find("://") + 3);
      if (!web || !allowed_host(rest)) {
        return Refusal{403, "Origin '" + origin + "' is not an allowed host of this server"};
      }
    }
    return std::nullopt;
  }

  static void refuse(const Refusal& r, httplib::Response& res) {
    send_json(res, {{"error", r.error}}, r.status);
    if (r.status == 303) res.set_header("Location", "/login");
    if (r.status == 401) res.set_header("WWW-Authenticate", "Bearer");
    res.set_header("Connection", "close");
    if (auto* control = detail::http_current_request) control->close = true;  // its body stays unread
  }

  void guards() {
    server_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      const auto r = refusal(req);
      if (!r) return httplib::Server::HandlerResponse::Unhandled;
      refuse(*r, res);
      return httplib::Server::HandlerResponse::Handled;
    });
    // httplib answers "Expect: 100-continue" before routing: refuse there, so the body is not sent.
    server_.set_expect_100_continue_handler([this](const httplib::Request& req, httplib::Response& res) {
      const auto r = refusal(req);
      if (!r) return 100;
      refuse(*r, res);
      return r->status;
    });
    // httplib's own errors (unknown path, bad request line) in JSON too, and why reading stopped.
    server_.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request&,
                                                                      httplib::Response& res) {
      using Trip = detail::HttpRequestControl::Trip;
      const auto* control = detail::http_current_request;
      if (control && control->trip == Trip::head_too_large) {
        send_json(res, {{"error", "request line and headers too large"}}, 431);
      } else if (control && control->trip == Trip::too_slow) {
        send_json(res, {{"error", "request not received in time"}}, 408);
      } else if (res.body.empty()) {
        send_json(res, {{"error", detail::http_error_text(res.status)}}, res.status);
      } else {
        return httplib::Server::HandlerResponse::Unhandled;
      }
      return httplib::Server::HandlerResponse::Handled;
    }));
    server_.set_post_routing_handler(
        [](const httplib::Request&, httplib::Response& res) { detail::add_security_headers(res); });
  }

  static void send_json(httplib::Response& res, const json& j, int status = 200) {
    res.status = status;
    res.set_header("Cache-Control", "no-store");
    res.set_content(j.dump(), "application/json");
  }

  static int status_of(const Error& e) {
    switch (e.category()) {
      case ErrorCategory::invalid_argument: return 400;
      case ErrorCategory::not_found: return 404;
      case ErrorCategory::conflict: return 409;
      case ErrorCategory::connection: return 503;
      case ErrorCategory::backend: return 500;
    }
    return 500;
  }

  // Every handler answers JSON errors instead of letting httplib print a bare 500.
  template <class F>
  httplib::Server::Handler guarded(F f) {
    return [f = std::move(f)](const httplib::Request& req, httplib::Response& res) {
      try {
        f(req, res);
      } catch (const Error& e) {
        send_json(res, {{"error", e.what()}, {"category", to_string(e.category())}}, status_of(e));
      } catch (const std::exception& e) {
        send_json(res, {{"error", e.what()}}, 500);
      }
    };
  }

  static std::size_t number_param(const httplib::Request& req, const char* name, std::size_t def) {
    if (!req.has_param(name)) return def;
    const auto v = req.get_param_value(name);
    std::size_t n = 0;
    const auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec != std::errc() || p != v.data() + v.size()) {
      throw InvalidArgument(std::string("parameter '") + name + "' is not a number");
    }
    return n;
  }

  static JobState state_param(const httplib::Request& req) {
    return job_state_from_string(req.has_param("state") ? req.get_param_value("state") : "queued");
  }

  // The list filters: job name (exact), text in the payload or an error, failed (has errors:
  // a queued one is waiting for a retry).
  struct JobFilter {
    std::string name, text;
    bool failed = false;
    [[nodiscard]] bool any() const { return !name.empty() || !text.empty() || failed; }
    [[nodiscard]] bool matches(const JobRecord& j) const {
      if (!name.empty() && j.name != name) return false;
      if (failed && j.errors.empty()) return false;
      if (text.empty()) return true;
      if (j.payload.dump(-1, ' ', false, json::error_handler_t::replace).find(text) != std::string::npos) return true;
      return std::any_of(j.errors.begin(), j.errors.end(),
                         [&](const AttemptError& e) { return e.message.find(text) != std::string::npos; });
    }
  };
  static JobFilter filter_of(const httplib::Request& req) {
    return {req.get_param_value("name"), req.get_param_value("text"), req.get_param_value("failed") == "1"};
  }

  std::size_t count_in(const std::string& queue, JobState state) {
    auto c = backend_->counts(queue);
    return static_cast<std::size_t>(std::max<std::int64_t>(0, count_of(c, state)));
  }

  struct JobPage {
    std::vector<JobRecord> jobs;
    bool more = false;  // the list goes on (or, past max_failed_scan, may go on)
  };

  // `limit` jobs of the queue in `state` after `skip` (oldest first, or newest when `desc`).
  // Filtered, pages of 500 are read until enough match, the list ends, or max_failed_scan jobs
  // were read: retrying jobs sit among delayed ones, a name among thousands.
  JobPage find_jobs(const std::string& queue, JobState state, const JobFilter& filter, std::size_t skip,
                    std::size_t limit, bool desc) {
    JobPage p;
    const auto total = [&] { return count_in(queue, state); };
    if (!filter.any() && !desc) {
      p.jobs = backend_->list(queue, state, {skip, limit + 1});  // one extra tells "more"
      p.more = p.jobs.size() > limit;
      if (p.more) p.jobs.pop_back();
      return p;
    }
    if (!filter.any()) {
      const auto n = total();
      if (skip >= n) return p;
      const std::size_t end = n - skip;
      const std::size_t start = end > limit ? end - limit : 0;
      p.jobs = backend_->list(queue, state, {start, end - start});
      std::reverse(p.jobs.begin(), p.jobs.end());
      p.more = start > 0;
      return p;
    }
    constexpr std::size_t page_size = 500;
    std::size_t scanned = 0, matched = 0, at = 0, end = desc ? total() : 0;
    while (scanned < opt_.max_failed_scan) {
      if (desc && end == 0) return p;
      const auto n = std::min({page_size, opt_.max_failed_scan - scanned, desc ? end : page_size});
      const auto from = desc ? end - n : at;
      auto page = backend_->list(queue, state, {from, n});
      if (desc) std::reverse(page.begin(), page.end());
      for (auto& j : page) {
        if (!filter.matches(j) || matched++ < skip) continue;
        if (p.jobs.size() == limit) {
          p.more = true;
          return p;
        }
        p.jobs.push_back(std::move(j));
      }
      scanned += page.size();
      if (desc) {
        end = from;
      } else {
        at += page.size();
      }
      if (page.size() < n) return p;
    }
    p.more = true;  // max_failed_scan read: there may be more
    return p;
  }

  static JobId id_of(const std::string& s) {
    JobId id = 0;
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), id);
    if (ec != std::errc() || p != s.data() + s.size()) throw InvalidArgument("bad job id '" + s + "'");
    return id;
  }

  bool action_allowed(const httplib::Request& req, httplib::Response& res) const {
    if (!opt_.actions) {
      send_json(res, {{"error", "actions are disabled on this server"}}, 403);
      return false;
    }
    if (req.get_header_value("X-Jobq-Action") != "1") {
      send_json(res, {{"error", "missing header X-Jobq-Action: 1"}}, 403);
      return false;
    }
    return true;
  }

  json queue_json(const std::string& q, const json& snapshot, bool sample_depth) {
    const auto c = backend_->counts(q);
    const auto oldest = oldest_waiting(*backend_, q);
    const auto minute = to_epoch_ms(backend_->now()) / 60'000;
    if (sample_depth) depth_.record(q, minute, c.queued);
    const auto per_minute = throughput(q);
    json j = {{"queue", q},
              {"paused", backend_->is_paused(q)},
              {"counts", counts_to_json(c)},
              {"oldest_waiting_seconds", oldest ? json(static_cast<double>(oldest->count()) / 1000.0) : json(nullptr)},
              {"completed_per_minute", per_minute.completed},
              {"failed_per_minute", per_minute.failed},
              {"jobs_per_minute", jobs_per_minute(per_minute.completed)},
              {"depth_per_minute", depth_.series(q, minute)},
              {"limits", to_json(backend_->queue_limits(q))}};
    if (snapshot.contains(q)) {
      const auto& s = snapshot.at(q);
      j["process"] = {{"enqueued", s.at("enqueued")}, {"completed", s.at("completed")},
                      {"failed", s.at("failed")},     {"retried", s.at("retried")},
                      {"dead", s.at("dead")}};
    }
    return j;
  }

  // Every open dashboard polls /api/queues every 5 s, and each computation reads up to 5 x 1000
  // jobs per queue: within throughput_refresh the last figures are served instead. The lock is
  // held while computing so that requests arriving together read the store once, not once each.
  // The series end at the current minute, so one computed in an earlier minute is never reused.
  Throughput throughput(const std::string& q) {
    const auto now = backend_->now();
    const auto minute = to_epoch_ms(now) / 60'000;
    std::lock_guard lock(throughput_mutex_);
    auto& cached = throughput_cache_[q];
    if (!cached.at || cached.minute != minute || now - *cached.at >= opt_.throughput_refresh) {
      cached.figures = throughput_per_minute(*backend_, q);
      cached.at = now;
      cached.minute = minute;
    }
    return cached.figures;
  }

  void routes() {
    server_.Get("/login", [](const httplib::Request&, httplib::Response& res) {
      res.set_header("Cache-Control", "no-store");
      res.set_header("Content-Security-Policy", std::string(detail::login_csp));
      res.set_content(std::string(detail::login_html), "text/html; charset=utf-8");
    });
    // The form posts the token; a right one is kept in a cookie scripts cannot read (HttpOnly)
    // and other sites' requests do not carry (SameSite=Strict).
    server_.Post("/login", [this](const httplib::Request& req, httplib::Response& res) {
      const auto given = req.has_param("token") ? req.get_param_value("token") : std::string{};
      res.set_header("Cache-Control", "no-store");
      if (opt_.token.empty()) {
        res.status = 303;
        res.set_header("Location", "/");
        return;
      }
      if (!token_matches(given)) {
        res.status = 401;
        res.set_header("Content-Security-Policy", std::string(detail::login_csp));
        res.set_content(std::string(detail::login_html), "text/html; charset=utf-8");
        return;
      }
      res.status = 303;
      res.set_header("Location", "/");
      res.set_header("Set-Cookie", std::string(detail::token_cookie) + "=" + opt_.token +
                                       "; HttpOnly; SameSite=Strict; Path=/; Max-Age=43200");
    });
    server_.Get("/", [](const httplib::Request&, httplib::Response& res) {
      res.set_header("Cache-Control", "no-store");
      res.set_header("Content-Security-Policy", std::string(detail::dashboard_csp));
      res.set_content(std::string(detail::dashboard_html), "text/html; charset=utf-8");
    });
    server_.Get("/metrics", guarded([this](const httplib::Request&, httplib::Response& res) {
      metrics_->sample(*backend_, queues());
      res.set_content(metrics_->prometheus(), "text/plain; version=0.0.4; charset=utf-8");
    }));
    server_.Get("/api/queues", guarded([this](const httplib::Request&, httplib::Response& res) {
      const auto snapshot = metrics_->snapshot();
      const bool sample_depth = depth_due(backend_->now());
      json out = json::array();
      for (const auto& q : queues()) out.push_back(queue_json(q, snapshot, sample_depth));
      send_json(res, {{"now", to_epoch_ms(backend_->now())}, {"actions", opt_.actions}, {"queues", out}});
    }));
    server_.Get("/api/workers", guarded([this](const httplib::Request&, httplib::Response& res) {
      json out = json::array();
      for (const auto& w : backend_->workers()) out.push_back(to_json(w));
      send_json(res, {{"now", to_epoch_ms(backend_->now())}, {"workers", out}});
    }));
    server_.Get("/api/jobs", guarded([this](const httplib::Request& req, httplib::Response& res) {
      const auto queue = req.get_param_value("queue");
      validate_queue_name(queue);
      const auto state = state_param(req);
      const auto offset = number_param(req, "offset", 0);
      const auto limit = std::min<std::size_t>(number_param(req, "limit", opt_.jobs_per_list), 1000);
      const auto page = find_jobs(queue, state, filter_of(req), offset, limit, req.get_param_value("order") == "desc");
      json jobs = json::array();
      for (const auto& j : page.jobs) jobs.push_back(to_json(j));
      send_json(res, {{"queue", queue}, {"state", to_string(state)}, {"jobs", jobs}, {"more", page.more}});
    }));
    // How many a bulk action would touch: exact without a filter (counts), else counted over at
    // most max_failed_scan jobs (exact: false beyond).
    server_.Get("/api/jobs/count", guarded([this](const httplib::Request& req, httplib::Response& res) {
      const auto queue = req.get_param_value("queue");
      validate_queue_name(queue);
      const auto state = state_param(req);
      const auto filter = filter_of(req);
      const auto total = count_in(queue, state);
      if (!filter.any()) return send_json(res, {{"count", total}, {"exact", true}});
      std::size_t n = 0, scanned = 0;
      for (std::size_t at = 0; scanned < opt_.max_failed_scan;) {
        const auto want = std::min<std::size_t>(500, opt_.max_failed_scan - scanned);
        const auto page = backend_->list(queue, state, {at, want});
        for (const auto& j : page) n += filter.matches(j) ? 1 : 0;
        scanned += page.size();
        at += page.size();
        if (page.size() < want) return send_json(res, {{"count", n}, {"exact", true}});
      }
      send_json(res, {{"count", n}, {"exact", scanned >= total}});
    }));
    // A job by id, or the holders of a unique key in every queue shown.
    server_.Get("/api/search", guarded([this](const httplib::Request& req, httplib::Response& res) {
      const auto q = req.get_param_value("q");
      if (q.empty()) throw InvalidArgument("search: give a job id or a unique key (q=...)");
      json jobs = json::array();
      if (std::all_of(q.begin(), q.end(), [](char c) { return c >= '0' && c <= '9'; }) && q.size() < 19) {
        if (const auto j = backend_->get(id_of(q))) jobs.push_back(to_json(*j));
      }
      for (const auto& name : queues()) {
        if (const auto id = backend_->find_unique(name, q)) {
          if (const auto j = backend_->get(*id)) jobs.push_back(to_json(*j));
        }
      }
      send_json(res, {{"q", q}, {"jobs", jobs}});
    }));
    server_.Get("/api/schedules", guarded([this](const httplib::Request&, httplib::Response& res) {
      json out = json::array();
      for (const auto& s : load_schedules(*backend_)) {
        auto j = to_json(s.schedule);
        j["name"] = s.schedule.name;
        j["next_run"] = to_epoch_ms(s.next_run);
        out.push_back(std::move(j));
      }
      send_json(res, {{"now", to_epoch_ms(backend_->now())}, {"schedules", out}});
    }));
    server_.Get(R"(/api/jobs/(\d+))", guarded([this](const httplib::Request& req, httplib::Response& res) {
      const auto id = id_of(req.matches[1]);
      const auto j = backend_->get(id);
      if (!j) throw NotFound("job " + std::to_string(id) + " not found");
      auto out = to_json(*j);
      if (j->state == JobState::active) {
        const auto holder = holder_of(backend_->workers(), id);
        out["holder"] = holder ? to_json(*holder) : json(nullptr);
      }
      send_json(res, out);
    }));
    server_.Get(R"(/api/jobs/(\d+)/flow)", guarded([this](const httplib::Request& req, httplib::Response& res) {
      const auto id = id_of(req.matches[1]);
      const auto flow = backend_->flow(id);
      if (!flow) {
        const bool exists = backend_->get(id).has_value();
        throw NotFound("job " + std::to_string(id) + (exists ? " is in no flow" : " not found"));
      }
      // The record is read whole (Backend::flow); the answer is cut, a flow may have 100,000 members.
      const auto limit = std::min<std::size_t>(number_param(req, "limit", 1000), 10'000);
      Counts counts;
      json members = json::array();
      const auto now = backend_->now();
      for (const auto& m : flow->members) {
        ++count_of(counts, m.state);
        if (m.state == JobState::queued && m.run_at > now) ++counts.delayed;
        if (members.size() < limit) members.push_back(to_json(m));
      }
      send_json(res, {{"id", flow->id},
                      {"size", flow->members.size()},
                      {"counts", counts_to_json(counts)},
                      {"members", members},
                      {"more", flow->members.size() > limit}});
    }));
    server_.Post(R"(/api/jobs/(\d+)/(redrive|cancel|run_now|remove))",
                 guarded([this](const httplib::Request& req, httplib::Response& res) {
                   if (!action_allowed(req, res)) return;
                   const auto id = id_of(req.matches[1]);
                   const std::string action = req.matches[2];
                   const bool ok = action == "redrive"  ? backend_->redrive(id)
                                   : action == "cancel" ? backend_->cancel(id)
                                   : action == "run_now" ? backend_->run_now(id)
                                                         : backend_->remove(id);
                   if (ok) return send_json(res, {{"ok", true}, {"id", id}});
                   const auto j = backend_->get(id);
                   if (!j) throw NotFound("job " + std::to_string(id) + " not found");
                   const char* wanted = action == "redrive"  ? "dead"
                                        : action == "cancel" ? "queued, waiting or active"
                                        : action == "run_now" ? "queued with a later run-at"
                                                              : "finished";
                   send_json(res,
                             {{"ok", false},
                              {"id", id},
                              {"error", "job " + std::to_string(id) + " is " + std::string(to_string(j->state)) +
                                            ", not " + wanted}},
                             409);
                 }));
    // Re-drive or cancel every job of a queue in a state that matches a filter, a page of 500
    // at a time: each page is one list and one redrive_many / cancel_many, so a million jobs are
    // a few thousand short calls and never one long lock.
    server_.Post("/api/queues/bulk", guarded([this](const httplib::Request& req, httplib::Response& res) {
      if (!action_allowed(req, res)) return;
      const auto queue = req.get_param_value("queue");
      validate_queue_name(queue);
      const auto action = req.get_param_value("action");
      const auto state = state_param(req);
      if (action == "redrive" ? state != JobState::dead
                              : action != "cancel" || is_finished(state)) {
        throw InvalidArgument("bulk: action=redrive takes state=dead; action=cancel takes queued, waiting or active");
      }
      const auto filter = filter_of(req);
      std::size_t done = 0, refused = 0;
      for (std::size_t at = 0;;) {
        const auto page = backend_->list(queue, state, {at, 500});
        std::vector<JobId> ids;
        for (const auto& j : page) {
          if (filter.matches(j)) ids.push_back(j.id);
        }
        std::size_t moved = 0;
        if (!ids.empty()) {
          for (const bool ok : action == "redrive" ? backend_->redrive_many(ids) : backend_->cancel_many(ids)) {
            ok ? ++moved : ++refused;
          }
        }
        done += moved;
        at += page.size() - moved;  // the jobs acted on left this state's list
        if (page.size() < 500) break;
      }
      send_json(res, {{"ok", true}, {"queue", queue}, {"action", action}, {"done", done}, {"refused", refused}});
    }));
    const auto pause_or_resume = [this](const std::string& q, bool pause, httplib::Response& res) {
      validate_queue_name(q);
      pause ? backend_->pause(q) : backend_->resume(q);
      send_json(res, {{"ok", true}, {"queue", q}, {"paused", backend_->is_paused(q)}});
    };
    server_.Post(R"(/api/queues/([A-Za-z0-9_.\-]+)/(pause|resume))",
                 guarded([this, pause_or_resume](const httplib::Request& req, httplib::Response& res) {
                   if (!action_allowed(req, res)) return;
                   pause_or_resume(req.matches[1], req.matches[2] == "pause", res);
                 }));
    server_.Post(R"(/api/queues/(pause|resume))",
                 guarded([this, pause_or_resume](const httplib::Request& req, httplib::Response& res) {
                   if (!action_allowed(req, res)) return;
                   pause_or_resume(req.get_param_value("queue"), req.matches[1] == "pause", res);
                 }));
  }

  // Whether to sample the depth now: at most once per 10 s of the store's clock, however many
  // pages poll /api/queues; `always` (the sampler thread) samples and restarts the 10 s.
  bool depth_due(TimePoint now, bool always = false) {
    std::lock_guard lock(sampler_mutex_);
    if (!always && last_depth_sample_ && now - *last_depth_sample_ < std::chrono::seconds(10)) return false;
    last_depth_sample_ = now;
    return true;
  }

  void sample_depth() {
    try {
      const auto now = backend_->now();
      depth_due(now, true);
      for (const auto& q : queues()) depth_.record(q, to_epoch_ms(now) / 60'000, backend_->counts(q).queued);
    } catch (const std::exception&) {
      // the store is unreachable: this minute gets no point, the next sample tries again
    }
  }

  // The depth history is wanted for the hour before someone looks (an operator opens the page
  // during an incident), so a thread samples every depth_interval instead of only on request; it
  // costs one counts() per queue a minute. The first sample is taken here, before start() returns.
  // stop() wakes and joins it.
  void start_sampler() {
    sample_depth();
    {
      std::lock_guard lock(sampler_mutex_);
      sampler_stop_ = false;
    }
    sampler_ = std::thread([this] {
      std::unique_lock lock(sampler_mutex_);
      while (!sampler_wake_.wait_for(lock, opt_.depth_interval, [this] { return sampler_stop_; })) {
        lock.unlock();
        sample_depth();
        lock.lock();
      }
    });
  }

  void stop_sampler() {
    {
      std::lock_guard lock(sampler_mutex_);
      sampler_stop_ = true;
    }
    sampler_wake_.notify_all();
    if (sampler_.joinable()) sampler_.join();
  }

  B* backend_;
  Metrics* metrics_;
  HttpOptions opt_;
  detail::HttpListener server_;
  std::set<std::string> allowed_hosts_;
  std::thread thread_;
  int port_ = -1;
  detail::DepthHistory depth_;
  std::mutex sampler_mutex_;  // guards sampler_stop_ and last_depth_sample_
  std::condition_variable sampler_wake_;
  bool sampler_stop_ = false;
  std::optional<TimePoint> last_depth_sample_;
  std::thread sampler_;
  struct CachedThroughput {
    std::optional<TimePoint> at;  // when computed, by the store's clock; none: never
    std::int64_t minute = 0;      // the epoch minute its series end at
    Throughput figures;
  };
  std::mutex throughput_mutex_;  // guards throughput_cache_, held while one is computed
  std::map<std::string, CachedThroughput> throughput_cache_;
};

}  // namespace jobq
