#pragma once

/// @file
/// The worker registry's record: what a running Worker says about itself in the store, so that
/// any process (the CLI, the dashboard, metrics) sees which workers are alive and which jobs
/// each is running or holding leased ahead.

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "jobq/error.hpp"
#include "jobq/job.hpp"
#include "jobq/time.hpp"

namespace jobq {

/// @brief A job whose handler a worker is running, and since when (backend clock).
struct RunningJob {
  JobId id = 0;            ///< the job
  TimePoint started_at{};  ///< when its handler began this attempt

  friend bool operator==(const RunningJob&, const RunningJob&) = default;
};

/// @brief One live Worker, as it registered itself (see Backend: register_worker).
struct WorkerInfo {
  std::string id{};                 ///< unique per Worker object ("host:pid:n-random")
  std::string host{};               ///< gethostname()
  int pid = 0;                      ///< its process
  std::vector<std::string> queues{}; ///< the queues it serves
  int concurrency = 0;              ///< handlers it runs at once
  TimePoint started_at{};           ///< when it started (backend clock)
  TimePoint heartbeat_at{};         ///< its last registration (backend clock)
  TimePoint expires_at{};           ///< the entry is gone after this unless renewed
  std::vector<RunningJob> running{}; ///< jobs whose handler is running, by id
  std::vector<JobId> leased{};      ///< jobs leased ahead of a free slot, not started yet

  friend bool operator==(const WorkerInfo&, const WorkerInfo&) = default;
};

/// @brief The longest worker id the backends store.
inline constexpr std::size_t max_worker_id_length = 200;

/// @brief Throws InvalidArgument for an id the registry cannot key by (empty, too long, or with
/// a space or control character).
inline void validate_worker_id(const std::string& id) {
  if (id.empty() || id.size() > max_worker_id_length ||
      std::any_of(id.begin(), id.end(), [](char c) { return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f; })) {
    throw InvalidArgument("worker id '" + id + "' is invalid: 1.." + std::to_string(max_worker_id_length) +
                          " characters, no spaces or control characters");
  }
}

/// @brief The stored form of a WorkerInfo (times in epoch ms), which the CLI's --json prints too.
inline nlohmann::json to_json(const WorkerInfo& w) {
  auto running = nlohmann::json::array();
  for (const auto& r : w.running) running.push_back({{"id", r.id}, {"started_at", to_epoch_ms(r.started_at)}});
  return {{"id", w.id},
          {"host", w.host},
          {"pid", w.pid},
          {"queues", w.queues},
          {"concurrency", w.concurrency},
          {"started_at", to_epoch_ms(w.started_at)},
          {"heartbeat_at", to_epoch_ms(w.heartbeat_at)},
          {"expires_at", to_epoch_ms(w.expires_at)},
          {"running", running},
          {"leased", w.leased}};
}

/// @brief Inverse of to_json(WorkerInfo); throws InvalidArgument on a malformed value.
inline WorkerInfo worker_info_from_json(const nlohmann::json& j) {
  try {
    WorkerInfo w;
    w.id = j.at("id").get<std::string>();
    w.host = j.at("host").get<std::string>();
    w.pid = j.at("pid").get<int>();
    w.queues = j.at("queues").get<std::vector<std::string>>();
    w.concurrency = j.at("concurrency").get<int>();
    w.started_at = from_epoch_ms(j.at("started_at").get<std::int64_t>());
    w.heartbeat_at = from_epoch_ms(j.at("heartbeat_at").get<std::int64_t>());
    w.expires_at = from_epoch_ms(j.at("expires_at").get<std::int64_t>());
    for (const auto& r : j.at("running")) {
      w.running.push_back({r.at("id").get<JobId>(), from_epoch_ms(r.at("started_at").get<std::int64_t>())});
    }
    w.leased = j.at("leased").get<std::vector<JobId>>();
    return w;
  } catch (const nlohmann::json::exception& e) {
    throw InvalidArgument(std::string("malformed worker record: ") + e.what());
  }
}

/// @brief Who holds an active job: the worker, and since when its handler runs (nullopt: leased
/// ahead of a free slot, its attempt counted but not started).
struct JobHolder {
  WorkerInfo worker;                          ///< the live worker that leased it
  std::optional<TimePoint> running_since{};  ///< when its handler began; nullopt: not started
};

/// @brief The holder of job `id` among `workers` (Backend::workers()), if one of them has it.
inline std::optional<JobHolder> holder_of(const std::vector<WorkerInfo>& workers, JobId id) {
  for (const auto& w : workers) {
    for (const auto& r : w.running) {
      if (r.id == id) return JobHolder{w, r.started_at};
    }
    if (std::find(w.leased.begin(), w.leased.end(), id) != w.leased.end()) return JobHolder{w, std::nullopt};
  }
  return std::nullopt;
}

/// @brief {worker, host, pid, running, started_at (when running)}: `jobq show --json`'s and the
/// dashboard's "holder".
inline nlohmann::json to_json(const JobHolder& h) {
  nlohmann::json j = {{"worker", h.worker.id}, {"host", h.worker.host}, {"pid", h.worker.pid},
                      {"running", h.running_since.has_value()}};
  if (h.running_since) j["started_at"] = to_epoch_ms(*h.running_since);
  return j;
}

}  // namespace jobq
