// jobq quickstart: enqueue jobs of two types, one of which fails twice before it succeeds,
// run a worker until the queue is idle, and print what happened. Exits by itself.
//
//   quickstart [path.db]      (SQLite file; default: a fresh file in the temp directory)
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>

#include <jobq/jobq.hpp>
#ifdef JOBQ_QUICKSTART_MEMORY
#include <jobq/memory.hpp>
using Store = jobq::MemoryBackend;
#else
#include <jobq/sqlite.hpp>
using Store = jobq::SqliteBackend;  // swap for PostgresBackend or RedisBackend: one word
#endif

using namespace std::chrono_literals;

struct SendEmail {
  static constexpr std::string_view job_name = "send-email";
  std::string to, subject;
  NLOHMANN_DEFINE_TYPE_INTRUSIVE(SendEmail, to, subject)
};

struct ResizeImage {
  static constexpr std::string_view job_name = "resize-image";
  std::string path;
  int width = 0;
  NLOHMANN_DEFINE_TYPE_INTRUSIVE(ResizeImage, path, width)
};

int run(Store& store) {
  jobq::Queue emails{store, "emails"};
  jobq::Queue images{store, "images"};

  emails.enqueue(SendEmail{"ada@example.com", "Welcome!"}, {.priority = 10});
  emails.enqueue(SendEmail{"grace@example.com", "Your report"});
  const auto flaky = images.enqueue(ResizeImage{"cat.png", 640},
                                    {.max_attempts = 5, .backoff = jobq::Backoff::exponential(100ms)});

  jobq::Worker worker{store, {.queues = {"emails", "images"}, .concurrency = 4, .poll_interval = 50ms}};
  worker.handle<SendEmail>([](const SendEmail& e, jobq::JobContext& ctx) {
    std::cout << "  [job " << ctx.id() << "] email to " << e.to << ": " << e.subject << "\n";
  });
  std::atomic<int> resize_calls{0};
  worker.handle<ResizeImage>([&](const ResizeImage& img, jobq::JobContext& ctx) {
    ++resize_calls;
    if (ctx.attempt() <= 2) {
      std::cout << "  [job " << ctx.id() << "] resize " << img.path << ": attempt " << ctx.attempt()
                << " fails (simulated flaky storage)\n";
      throw std::runtime_error("storage unavailable");
    }
    ctx.progress(100, "done");
    std::cout << "  [job " << ctx.id() << "] resize " << img.path << " to " << img.width
              << "px: attempt " << ctx.attempt() << " succeeds\n";
    return nlohmann::json{{"thumbnail", "cat-" + std::to_string(img.width) + ".png"}};
  });

  std::cout << "running worker...\n";
  if (!worker.run_until_idle(30s)) {
    std::cerr << "queues did not drain in time\n";
    return 1;
  }
  const auto job = images.get(flaky);
  const auto s = worker.stats();
  std::cout << "done: " << s.processed << " jobs completed, " << s.retried << " retries, " << s.dead
            << " dead\n"
            << "resize job: state=" << jobq::to_string(job->state) << " attempts=" << job->attempts
            << " result=" << job->result.dump() << "\n";
  for (const auto& e : job->errors) std::cout << "  attempt " << e.attempt << " error: " << e.message << "\n";
  return job->state == jobq::JobState::completed ? 0 : 1;
}

int main(int argc, char** argv) {
  try {
#ifdef JOBQ_QUICKSTART_MEMORY
    (void)argc;
    (void)argv;
    Store store;
    std::cout << "backend: memory\n";
#else
    const std::string path = argc > 1 ? argv[1]
                                      : (std::filesystem::temp_directory_path() / "jobq-quickstart.db").string();
    if (argc <= 1) std::filesystem::remove(path);
    Store store{path};
    std::cout << "backend: sqlite (" << path << ")\n";
#endif
    return run(store);
  } catch (const jobq::Error& e) {
    std::cerr << "jobq error (" << jobq::to_string(e.category()) << "): " << e.what() << "\n";
    return 2;
  }
}
