#pragma once

/// @file
/// jobq::HttpServer: Prometheus metrics, a JSON API and the dashboard page, served by a worker
/// (or any) process over cpp-httplib. Target jobq::http.

#include <algorithm>
#include <charconv>
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
#include "jobq/metrics.hpp"

namespace jobq {

/// @brief Options of HttpServer.
struct HttpOptions {
  std::string host = "127.0.0.1";  ///< address to bind (loopback by default: no auth is built in)
  int port = 9464;                 ///< TCP port; 0 = any free port (see HttpServer::port())
  std::vector<std::string> queues{};  ///< queues to show; the backend's own list is added when it has one
  bool actions = true;             ///< allow the POST actions (re-drive, cancel, pause, resume)
  std::size_t jobs_per_list = 50;  ///< failed/dead jobs the dashboard lists per queue
};

/// @brief Serves, on its own threads:
/// - `GET /metrics`: Metrics::prometheus() after sampling the backend (counts, paused, oldest);
/// - `GET /`: the dashboard page (queues with counts, throughput over the last hour, failed and
///   dead jobs with their errors, re-drive / cancel buttons);
/// - `GET /api/queues`, `GET /api/jobs?queue=&state=&offset=&limit=`, `GET /api/jobs/{id}`;
/// - `POST /api/jobs/{id}/redrive|cancel`, `POST /api/queues/{name}/pause|resume` (need the
///   header `X-Jobq-Action: 1`, which a cross-site form cannot send; off with actions=false).
///
/// It has no authentication: bind it to loopback or put it behind a proxy that has.
template <Backend B>
class HttpServer {
 public:
  /// @brief A stopped server over `backend` and `metrics` (both must outlive it).
  HttpServer(B& backend, Metrics& metrics, HttpOptions options = {})
      : backend_(&backend), metrics_(&metrics), opt_(std::move(options)) {
    for (const auto& q : opt_.queues) validate_queue_name(q);
    routes();
  }

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  /// @brief Stops serving.
  ~HttpServer() { stop(); }

  /// @brief Binds and starts serving on a background thread; throws Error if it cannot bind.
  void start() {
    if (thread_.joinable()) return;
    if (opt_.port == 0) {
      port_ = server_.bind_to_any_port(opt_.host);
    } else {
      port_ = server_.bind_to_port(opt_.host, opt_.port) ? opt_.port : -1;
    }
    if (port_ <= 0) {
      throw Error(ErrorCategory::connection,
                  "http: cannot listen on " + opt_.host + ":" + std::to_string(opt_.port));
    }
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }

  /// @brief Stops serving and joins the thread (idempotent).
  void stop() {
    if (!thread_.joinable()) return;
    server_.stop();
    thread_.join();
  }

  /// @brief The bound port (after start()).
  [[nodiscard]] int port() const noexcept { return port_; }

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

  json queue_json(const std::string& q, const json& snapshot) {
    const auto c = backend_->counts(q);
    const auto oldest = oldest_waiting(*backend_, q);
    const auto per_minute = completions_per_minute(*backend_, q);
    json j = {{"queue", q},
              {"paused", backend_->is_paused(q)},
              {"counts",
               {{"queued", c.queued}, {"active", c.active}, {"completed", c.completed}, {"dead", c.dead},
                {"cancelled", c.cancelled}}},
              {"oldest_waiting_seconds", oldest ? json(static_cast<double>(oldest->count()) / 1000.0) : json(nullptr)},
              {"completed_per_minute", per_minute}};
    if (snapshot.contains(q)) {
      const auto& s = snapshot.at(q);
      j["process"] = {{"enqueued", s.at("enqueued")}, {"completed", s.at("completed")},
                      {"failed", s.at("failed")},     {"retried", s.at("retried")},
                      {"dead", s.at("dead")}};
    }
    return j;
  }

  void routes() {
    server_.Get("/", [](const httplib::Request&, httplib::Response& res) {
      res.set_header("Cache-Control", "no-store");
      res.set_content(std::string(detail::dashboard_html), "text/html; charset=utf-8");
    });
    server_.Get("/metrics", guarded([this](const httplib::Request&, httplib::Response& res) {
      metrics_->sample(*backend_, queues());
      res.set_content(metrics_->prometheus(), "text/plain; version=0.0.4; charset=utf-8");
    }));
    server_.Get("/api/queues", guarded([this](const httplib::Request&, httplib::Response& res) {
      const auto snapshot = metrics_->snapshot();
      json out = json::array();
      for (const auto& q : queues()) out.push_back(queue_json(q, snapshot));
      send_json(res, {{"now", to_epoch_ms(backend_->now())}, {"actions", opt_.actions}, {"queues", out}});
    }));
    server_.Get("/api/jobs", guarded([this](const httplib::Request& req, httplib::Response& res) {
      const auto queue = req.get_param_value("queue");
      validate_queue_name(queue);
      const auto state = job_state_from_string(req.has_param("state") ? req.get_param_value("state") : "queued");
      const auto offset = number_param(req, "offset", 0);
      const auto limit = std::min<std::size_t>(number_param(req, "limit", opt_.jobs_per_list), 1000);
      const bool only_failed = req.get_param_value("failed") == "1";  // queued jobs with errors: retrying
      json jobs = json::array();
      for (const auto& j : backend_->list(queue, state, {offset, limit})) {
        if (!only_failed || !j.errors.empty()) jobs.push_back(to_json(j));
      }
      send_json(res, {{"queue", queue}, {"state", to_string(state)}, {"jobs", jobs}});
    }));
    server_.Get(R"(/api/jobs/(\d+))", guarded([this](const httplib::Request& req, httplib::Response& res) {
      const auto id = id_of(req.matches[1]);
      const auto j = backend_->get(id);
      if (!j) throw NotFound("job " + std::to_string(id) + " not found");
      send_json(res, to_json(*j));
    }));
    server_.Post(R"(/api/jobs/(\d+)/(redrive|cancel))",
                 guarded([this](const httplib::Request& req, httplib::Response& res) {
                   if (!action_allowed(req, res)) return;
                   const auto id = id_of(req.matches[1]);
                   const bool redrive = req.matches[2] == "redrive";
                   const bool ok = redrive ? backend_->redrive(id) : backend_->cancel(id);
                   if (ok) return send_json(res, {{"ok", true}, {"id", id}});
                   const auto j = backend_->get(id);
                   if (!j) throw NotFound("job " + std::to_string(id) + " not found");
                   send_json(res,
                             {{"ok", false},
                              {"id", id},
                              {"error", "job " + std::to_string(id) + " is " + std::string(to_string(j->state)) +
                                            ", not " + (redrive ? "dead" : "queued")}},
                             409);
                 }));
    server_.Post(R"(/api/queues/([A-Za-z0-9_.\-]+)/(pause|resume))",
                 guarded([this](const httplib::Request& req, httplib::Response& res) {
                   if (!action_allowed(req, res)) return;
                   const std::string q = req.matches[1];
                   validate_queue_name(q);
                   req.matches[2] == "pause" ? backend_->pause(q) : backend_->resume(q);
                   send_json(res, {{"ok", true}, {"queue", q}, {"paused", backend_->is_paused(q)}});
                 }));
  }

  B* backend_;
  Metrics* metrics_;
  HttpOptions opt_;
  httplib::Server server_;
  std::thread thread_;
  int port_ = -1;
};

}  // namespace jobq
