// The example service's HTTP API: POST /register stores a user in the application's users table
// AND enqueues a welcome email and a CRM sync in the same database transaction, then answers at
// once (202) while a separate worker process runs the jobs. A user never exists without their
// jobs, and no job exists for a user that was not stored.
//
//   service_api [--url URL] [--port 8080]     URL: $JOBQ_URL, default sqlite:///tmp/jobq-service.db;
//                                             sqlite:// or postgresql://; port 0: any free port (printed)
//   curl -X POST localhost:8080/register -d '{"email":"ada@example.com","name":"Ada"}'
//   curl localhost:8080/users/1
#include <csignal>
#include <cstdlib>
#include <iostream>

#include <httplib.h>

#include <jobq/jobq.hpp>
#include <jobq/open.hpp>

#include "jobs.hpp"
#include "options.hpp"
#include "users.hpp"
#if JOBQ_OPEN_WITH_SQLITE
#include "users_sqlite.hpp"
#endif
#if JOBQ_OPEN_WITH_POSTGRES
#include "users_postgres.hpp"
#endif

using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {
httplib::Server* g_server = nullptr;
void on_signal(int) {
  if (g_server != nullptr) g_server->stop();
}

void reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

/// @brief The users table next to the jobs of `store` (the backend opened from `url`), on a
/// connection of the application's own. Only SQL backends can share a transaction with it.
std::unique_ptr<service::Users> open_users(jobq::AnyBackend& store, const std::string& url) {
#if JOBQ_OPEN_WITH_SQLITE
  if (auto* sqlite = store.target<jobq::SqliteBackend>()) return std::make_unique<service::SqliteUsers>(*sqlite);
#endif
#if JOBQ_OPEN_WITH_POSTGRES
  if (auto* pg = store.target<jobq::PostgresBackend>()) return std::make_unique<service::PostgresUsers>(*pg, url);
#endif
  (void)url;
  throw jobq::InvalidArgument("the API stores a user and enqueues their jobs in one SQL transaction: use a "
                              "sqlite:// or postgresql:// URL (this one opens " + store.kind() + ")");
}

/// @brief Answers for the exception being handled: 409 email taken, 503 database unreachable
/// or busy (the client may retry), 500 anything else (e.g. a job the backend refused).
void reply_failure(httplib::Response& res) {
  try {
    throw;
  } catch (const service::EmailTaken& e) {
    reply(res, 409, {{"error", e.what()}});
  } catch (const service::DatabaseUnavailable& e) {
    res.set_header("Retry-After", "5");
    reply(res, 503, {{"error", e.what()}});
  } catch (const jobq::Error& e) {
    if (e.is_transient()) res.set_header("Retry-After", "5");
    reply(res, e.is_transient() ? 503 : 500, {{"error", e.what()}});
  } catch (const std::exception& e) {
    reply(res, 500, {{"error", e.what()}});
  }
}

/// @brief The registration in the request body, or the reason it is unusable (400).
std::string parse_registration(const std::string& body_text, std::string& email, std::string& name) {
  json body;
  try {
    body = json::parse(body_text);
  } catch (const json::parse_error& e) {
    return std::string("the body is not valid JSON: ") + e.what();
  }
  if (!body.is_object()) return R"(the body must be a JSON object: {"email": "...", "name": "..."})";
  if (!body.contains("email") || !body["email"].is_string()) return R"("email" is missing or not a string)";
  if (!body.contains("name") || !body["name"].is_string()) return R"("name" is missing or not a string)";
  email = body["email"].get<std::string>();
  name = body["name"].get<std::string>();
  if (email.find('@') == std::string::npos) return "\"email\" is not an email address: " + email;
  if (name.empty()) return R"("name" is empty)";
  return {};
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"The example service's HTTP API: POST /register, GET /users/ID", "service_api"};
  std::string url;
  int port = 8080;
  service::add_url_option(app, url);
  service::add_port_option(app, "--port", port, "HTTP port");
  if (const auto rc = service::parse_command_line(app, argc, argv)) return *rc;

  try {
    auto store = jobq::open_backend(url);
    // The users table lives in the jobs' own database, on a connection of the application's.
    const auto users = open_users(store, url);
    jobq::Queue emails{store, "emails"};
    jobq::Queue crm{store, "crm"};
    // Test only: make the backend refuse the second job, after the user row and the first job
    // were written, to show that the whole transaction rolls back (tests/tools/service_smoke.sh).
    const char* fault = std::getenv("SERVICE_API_TEST_REFUSE_CRM_JOB");
    const bool refuse_crm_job = fault != nullptr && std::string_view(fault) == "1";

    // A new user's jobs. No unique keys: the users table's unique email already makes a
    // repeated request harmless (409, nothing enqueued).
    const service::JobsFor jobs_for = [&](const service::User& u) {
      std::vector<jobq::NewJob> jobs{
          emails.make(service::SendWelcomeEmail{u.id, u.email, u.name},
                      {.max_attempts = 5, .backoff = jobq::Backoff::exponential(500ms)}),
          crm.make(service::SyncCrm{u.id, u.email},
                   {.max_attempts = 8, .backoff = jobq::Backoff::exponential(1s, 5min), .timeout = 30s})};
      if (refuse_crm_job) jobs[1].queue = "not a queue!";
      return jobs;
    };

    httplib::Server server;
    server.Post("/register", [&](const httplib::Request& req, httplib::Response& res) {
      std::string email, name;
      if (auto problem = parse_registration(req.body, email, name); !problem.empty()) {
        return reply(res, 400, {{"error", problem}});
      }
      try {
        const auto user = users->create(email, name, jobs_for);  // one transaction
        res.set_header("Location", "/users/" + std::to_string(user.id));
        reply(res, 202, {{"user_id", user.id}, {"jobs", user.jobs}});
      } catch (...) {  // rolled back: neither the user nor a job was stored
        reply_failure(res);
      }
    });
    server.Get(R"(/users/(\d{1,18}))", [&](const httplib::Request& req, httplib::Response& res) {
      try {
        const auto user = users->find(std::stoll(req.matches[1].str()));
        if (!user) return reply(res, 404, {{"error", "no user " + req.matches[1].str()}});
        json jobs = json::array();
        for (const auto id : user->jobs) {
          const auto job = store.get(id);  // nullopt once pruned after finishing
          jobs.push_back({{"id", id}, {"state", job ? std::string(jobq::to_string(job->state)) : "pruned"}});
        }
        reply(res, 200, {{"id", user->id}, {"email", user->email}, {"name", user->name}, {"jobs", jobs}});
      } catch (...) {
        reply_failure(res);
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
  } catch (const std::exception& e) {  // jobq::Error, or the users table could not be opened
    std::cerr << "api: " << e.what() << "\n";
    return 2;
  }
}
