// The example service's worker: runs the welcome-email and CRM-sync jobs with retries and
// dead-lettering, and serves /metrics and the dashboard. Stop it with Ctrl-C (graceful).
//
//   service_worker [--url URL] [--metrics-port 9464] [--concurrency 4]
//
// The "external services" are simulated: the mailer fails now and then (retried with backoff),
// an address containing "bounce" is refused for good (dead at once), and the CRM fails the
// first two attempts of every user (retried).
#include <iostream>
#include <random>
#include <thread>

#include <jobq/http.hpp>
#include <jobq/jobq.hpp>
#include <jobq/metrics.hpp>
#include <jobq/open.hpp>

#include "jobs.hpp"
#include "options.hpp"

using namespace std::chrono_literals;

int main(int argc, char** argv) {
  CLI::App app{"The example service's worker: runs the jobs, serves /metrics and the dashboard", "service_worker"};
  std::string url;
  int metrics_port = 9464, concurrency = 4;
  service::add_url_option(app, url);
  service::add_port_option(app, "--metrics-port", metrics_port, "port of /metrics and the dashboard");
  app.add_option("--concurrency", concurrency, "jobs run at once")->check(CLI::Range(1, 1024))->capture_default_str();
  if (const auto rc = service::parse_command_line(app, argc, argv)) return *rc;

  try {
    auto store = jobq::open_backend(url);

    jobq::Metrics metrics;
    jobq::HttpServer http{store, metrics,
                          {.port = metrics_port, .queues = {"emails", "crm"}}};
    http.start();

    jobq::Worker worker{store,
                        {.queues = {"emails", "crm"},
                         .concurrency = concurrency,
                         .poll_interval = 500ms,
                         .on_event = [&](const jobq::JobEvent& e) {
                           metrics.observe(e);
                           if (e.kind == jobq::JobEvent::Kind::dead) {
                             std::cout << "worker: job " << e.id << " (" << e.name << ") is dead: " << e.error << std::endl;
                           }
                         }}};

    worker.handle<service::SendWelcomeEmail>([](const service::SendWelcomeEmail& m, jobq::JobContext& ctx) {
      if (m.email.find("bounce") != std::string::npos) throw jobq::Permanent("mailbox " + m.email + " does not exist");
      thread_local std::mt19937 rng{std::random_device{}()};
      if (std::uniform_int_distribution<int>(1, 4)(rng) == 1) throw std::runtime_error("mailer: 421 try again later");
      std::this_thread::sleep_for(50ms);  // talking to the mail server
      std::cout << "worker: [job " << ctx.id() << "] welcome email sent to " << m.email << std::endl;
      return nlohmann::json{{"message_id", "<" + std::to_string(ctx.id()) + "@mail.example.com>"}};
    });
    worker.handle<service::SyncCrm>([](const service::SyncCrm& s, jobq::JobContext& ctx) {
      if (ctx.attempt() <= 2) throw std::runtime_error("crm: 503 service unavailable");
      ctx.progress(100, "synced");
      std::cout << "worker: [job " << ctx.id() << "] user " << s.user_id << " synced to the CRM (attempt "
                << ctx.attempt() << ")" << std::endl;
      return nlohmann::json{{"crm_id", "C-" + std::to_string(s.user_id)}};
    });

    std::cout << "worker: backend " << jobq::mask_url(url) << ", metrics and dashboard on http://127.0.0.1:"
              << http.port() << "/" << std::endl;
    worker.run_until_signal();
    http.stop();
    const auto s = worker.stats();
    std::cout << "worker: stopped; " << s.processed << " completed, " << s.retried << " retried, " << s.dead
              << " dead" << std::endl;
    return 0;
  } catch (const std::exception& e) {  // jobq::Error, or whatever else start-up throws: a message, not an abort
    std::cerr << "worker: " << e.what() << "\n";
    return 2;
  }
}
