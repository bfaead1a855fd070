// Conan test_package: one job through Queue + Worker on the memory backend.
#include <jobq/jobq.hpp>
#include <jobq/memory.hpp>

#include <chrono>
#include <cstdio>

int main() {
  jobq::MemoryBackend backend;
  jobq::Queue<jobq::MemoryBackend> queue{backend, "test_package"};
  queue.enqueue("add_one", {{"n", 41}});
  int result = 0;
  jobq::Worker<jobq::MemoryBackend> worker{backend, {.queues = {"test_package"}, .concurrency = 1}};
  worker.handle("add_one", [&](const nlohmann::json& payload, jobq::JobContext&) {
    result = payload.at("n").get<int>() + 1;
  });
  const bool idle = worker.run_until_idle(std::chrono::seconds(30));
  std::printf("jobq test_package: result=%d\n", result);
  return idle && result == 42 ? 0 : 1;
}
