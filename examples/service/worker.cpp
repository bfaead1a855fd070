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

using namespace std::chrono_literals;

int main(int argc, char** argv) {
  try {
    const auto url = service::backend_url(argc, argv);
    auto store = jobq::open_backend(url);

    jobq::Metrics metrics;
    jobq::HttpServer http{store, metrics,
                          {.port = service::int_option(argc, argv, "--metrics-port", 9464), .queues = {"emails", "crm"}}};
    http.start();

    jobq::Worker worker{store,
                        {.queues = {"emails", "crm"},
                         .concurrency = service::int_option(argc, argv, "--concurrency", 4),
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
  } catch (const jobq::Error& e) {
    std::cerr << "worker: " << e.what() << "\n";
    return 2;
  }
}
