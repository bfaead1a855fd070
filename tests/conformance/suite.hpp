#pragma once
// The one conformance suite. Every behaviour is written once and runs against every backend
// fixture listed in `Backends`, which the including file defines:
//
//   struct XFixture {
//     static constexpr const char* name = "x";
//     static constexpr bool completed_notice_has_progress = true;  // see two_objects.hpp
//     jobq::ManualClock clock;       // the backend reads time from clock.fn()
//     XBackend& backend();           // a fresh, isolated, empty store (RAII cleanup)
//     XBackend& second_backend();    // another object on the same store: what a second
//                                    // process would see (opened on first use)
//     std::unique_ptr<XBackend> open_with_payload_limit(std::size_t max_payload_bytes);
//   };
//   using Backends = std::tuple<XFixture>;
//   #include "conformance/suite.hpp"
//
// A fixture may also offer hooks that look inside its store (two_objects.hpp names them); a
// case runs those checks only where the fixture has them.
//
// Time is moved by hand (clock.advance); nothing sleeps for delays, backoff, leases or
// retention. Waits only let worker threads catch up.

#include "conformance/common.hpp"

#include "conformance/enqueue_claim.hpp"
#include "conformance/outcomes.hpp"
#include "conformance/leases.hpp"
#include "conformance/admin.hpp"
#include "conformance/volume.hpp"
#include "conformance/worker.hpp"
// Limits, groups, throttle/debounce, schedules, notices, wait_for, payload size, injection.
#include "conformance/features.hpp"
// Deeply nested values, invalid UTF-8, the ends of int and duration ranges.
#include "conformance/bad_input.hpp"
// Two backend objects on one store: racing schedulers, limits, notices, payload limits.
#include "conformance/two_objects.hpp"
// Chains, groups, chords, DAGs: waiting, release, failure policies, cancel, redrive, retention.
#include "conformance/flows.hpp"
// The worker registry: register, replace, expiry, unregister, ids, two objects.
#include "conformance/workers.hpp"
// The job page's actions and search: run_now, remove, find_unique.
#include "conformance/job_admin.hpp"
// Deadlines of queued jobs: expires_at / expire_in, at claim and in the maintenance pass.
#include "conformance/deadlines.hpp"
