#pragma once
// What every conformance header shares: the includes, the typed job of the worker cases and the
// small helpers below. The fixture contract is in suite.hpp.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <pthread.h>

#include <catch2/catch.hpp>

#include <jobq/jobq.hpp>

#include "support.hpp"

namespace conformance {

using namespace std::chrono_literals;
using jobq::JobState;

/// A typed job used by the worker cases.
struct Greet {
  static constexpr std::string_view job_name = "greet";
  std::string who;
  int fail_times = 0;
  NLOHMANN_DEFINE_TYPE_INTRUSIVE(Greet, who, fail_times)
};

inline jobq::NewJob make_job(std::string queue = "q", nlohmann::json payload = {{"n", 1}},
                             std::string name = "noop") {
  jobq::NewJob j;
  j.queue = std::move(queue);
  j.name = std::move(name);
  j.payload = std::move(payload);
  j.backoff = jobq::Backoff::fixed(0ms);
  return j;
}

/// `j` (by default make_job()) with at most `n` attempts.
inline jobq::NewJob with_attempts(int n, jobq::NewJob j = make_job()) {
  j.max_attempts = n;
  return j;
}

inline jobq::ClaimRequest claim_from(std::vector<std::string> queues, std::size_t limit = 1,
                                     jobq::Millis lease = 30s) {
  return jobq::ClaimRequest{std::move(queues), limit, lease};
}

using jobq_test::eventually;  // for worker threads to catch up

inline std::vector<jobq::JobId> ids_of(const std::vector<jobq::JobRecord>& jobs) {
  std::vector<jobq::JobId> out;
  for (const auto& j : jobs) out.push_back(j.id);
  return out;
}

template <class B>
jobq::JobRecord claim_one(B& b, const std::string& queue = "q", jobq::Millis lease = 30s) {
  auto got = b.claim(claim_from({queue}, 1, lease));
  REQUIRE(got.size() == 1);
  return got.front();
}

template <class B>
JobState state_of(B& b, jobq::JobId id) {
  auto j = b.get(id);
  REQUIRE(j.has_value());
  return j->state;
}

inline jobq::WorkerOptions fast_worker(int concurrency = 2) {
  jobq::WorkerOptions o;
  o.queues = {"q"};
  o.concurrency = concurrency;
  o.poll_interval = 10ms;
  o.maintenance_interval = 0ms;
  o.shutdown_grace = 5s;
  o.on_error = [](const std::exception&) {};
  o.log = {jobq::LogLevel::off, {}};
  return o;
}

}  // namespace conformance

using namespace conformance;
