#pragma once

/// @file
/// jobq's core: jobs, the Backend concept, Queue and Worker. Include a backend header
/// (jobq/memory.hpp, jobq/sqlite.hpp, jobq/postgres.hpp, jobq/redis.hpp) next to it.

#include "jobq/backend.hpp"
#include "jobq/backoff.hpp"
#include "jobq/cron.hpp"
#include "jobq/error.hpp"
#include "jobq/events.hpp"
#include "jobq/flow.hpp"
#include "jobq/forwarding_backend.hpp"
#include "jobq/job.hpp"
#include "jobq/json.hpp"
#include "jobq/log.hpp"
#include "jobq/queue.hpp"
#include "jobq/schedule.hpp"
#include "jobq/time.hpp"
#include "jobq/url.hpp"
#include "jobq/version.hpp"
#include "jobq/worker.hpp"
