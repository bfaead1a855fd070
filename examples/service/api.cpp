// The example service's HTTP API: POST /register stores a user and enqueues a welcome email
// and a CRM sync, then answers at once (202) while a separate worker process runs the jobs.
//
//   service_api [--url URL] [--port 8080]     URL: $JOBQ_URL, default sqlite:///tmp/jobq-service.db;
//                                             port 0: any free port (printed)
//   curl -X POST localhost:8080/register -d '{"email":"ada@example.com","name":"Ada"}'
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <map>
#include <mutex>

#include <httplib.h>

#include <jobq/jobq.hpp>
#include <jobq/open.hpp>

#include "jobs.hpp"

using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {
httplib::Server* g_server = nullptr;
void on_signal(int) {
  if (g_server != nullptr) g_server->stop();
}
}  // namespace

int main(int argc, char** argv) {
  try {
    const auto url = service::backend_url(argc, argv);
    const int port = service::int_option(argc, argv, "--port", 8080);
    auto store = jobq::open_backend(url);
    jobq::Queue emails{store, "emails"};
    jobq::Queue crm{store, "crm"};

    // Stand-in for the application's users table. With PostgreSQL, insert the user and enqueue
    // the jobs in one transaction instead (PostgresBackend::enqueue_many(tx, jobs)).
    std::mutex users_mutex;
    std::map<long long, json> users;
    std::atomic<long long> next_user{1};

    httplib::Server server;
    server.Post("/register", [&](const httplib::Request& req, httplib::Response& res) {
      const auto body = json::parse(req.body, nullptr, false);
      if (body.is_discarded() || !body.is_object() || !body.contains("email") || !body["email"].is_string() ||
          body["email"].get<std::string>().find('@') == std::string::npos) {
        res.status = 400;
        res.set_content(R"({"error":"expected {\"email\": \"...\", \"name\": \"...\"}"})", "application/json");
        return;
      }
      const auto email = body["email"].get<std::string>();
      const auto name = body.value("name", std::string());
      const auto user_id = next_user++;
      {
        std::lock_guard lock(users_mutex);
        users[user_id] = {{"id", user_id}, {"email", email}, {"name", name}};
      }
      try {
        // Both jobs in one atomic call; the unique keys make a retried request harmless.
        const std::vector<jobq::NewJob> jobs{
            emails.make(service::SendWelcomeEmail{user_id, email, name},
                        {.max_attempts = 5, .backoff = jobq::Backoff::exponential(500ms),
                         .unique_key = "welcome:" + email}),
            crm.make(service::SyncCrm{user_id, email},
                     {.max_attempts = 8, .backoff = jobq::Backoff::exponential(1s, 5min), .timeout = 30s,
                      .unique_key = "crm:" + std::to_string(user_id)})};
        const auto ids = store.enqueue_many(jobs);
        res.status = 202;
        res.set_content(json{{"user_id", user_id}, {"jobs", {ids[0].id, ids[1].id}}}.dump(), "application/json");
      } catch (const jobq::Error& e) {
        res.status = e.is_transient() ? 503 : 500;
        res.set_content(json{{"error", e.what()}}.dump(), "application/json");
      }
    });
    server.Get("/healthz", [](const httplib::Request&, httplib::Response& res) { res.set_content("ok", "text/plain"); });

    g_server = &server;
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    const int bound = port == 0 ? server.bind_to_any_port("127.0.0.1") : (server.bind_to_port("127.0.0.1", port) ? port : -1);
    if (bound <= 0) {
      std::cerr << "api: cannot listen on port " << port << "\n";
      return 1;
    }
    std::cout << "api: backend " << jobq::mask_url(url) << ", listening on http://127.0.0.1:" << bound << std::endl;
    return server.listen_after_bind() ? 0 : 1;
  } catch (const jobq::Error& e) {
    std::cerr << "api: " << e.what() << "\n";
    return 2;
  }
}
