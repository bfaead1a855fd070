// A consumer built with nothing but the compiler and `pkg-config --cflags --libs jobq` against an
// installed jobq: one job on the memory backend opened through the installed <jobq/open.hpp>.
#include <jobq/jobq.hpp>
#include <jobq/memory.hpp>
#include <jobq/open.hpp>

#include <chrono>
#include <cstdio>
#include <string>

int main() {
  auto backend = jobq::open_backend("memory://");
  jobq::Queue<jobq::AnyBackend> queue{backend, "pkg"};
  queue.enqueue("add_one", {{"n", 41}});
  int result = 0;
  jobq::Worker<jobq::AnyBackend> worker{backend, {.queues = {"pkg"}, .concurrency = 1}};
  worker.handle("add_one", [&](const nlohmann::json& payload, jobq::JobContext&) {
    result = payload.at("n").get<int>() + 1;
  });
  const bool idle = worker.run_until_idle(std::chrono::seconds(30));
  const bool masked = jobq::mask_url("postgres://u:secret@h/db").find("secret") == std::string::npos;
  std::printf("pkg-config consumer: idle=%d result=%d masked=%d\n", idle ? 1 : 0, result, masked ? 1 : 0);
  return idle && result == 42 && masked ? 0 : 1;
}
