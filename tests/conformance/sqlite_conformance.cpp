#include <jobq/sqlite.hpp>

#include <algorithm>
#include <memory>
#include <optional>
#include <string>

#include <catch2/catch.hpp>

#include "sqlite/helpers.hpp"

/// The SQLite backend: a fresh database file in a fresh temp directory per test case.
struct SqliteFixture {
  static constexpr const char* name = "sqlite";
  static constexpr bool completed_notice_has_progress = false;
  jobq::ManualClock clock;
  sqlite_test::TempDir dir;  // declared before the stores: removed after they are closed
  jobq::SqliteBackend store{dir.file(), {.clock = clock.fn()}};
  std::optional<jobq::SqliteBackend> other;

  jobq::SqliteBackend& backend() { return store; }
  /// A second object on the same file, with its own writer connection (as a second process has).
  jobq::SqliteBackend& second_backend() {
    if (!other) other.emplace(dir.file(), jobq::SqliteOptions{.clock = clock.fn()});
    return *other;
  }
  std::unique_ptr<jobq::SqliteBackend> open_with_payload_limit(std::size_t max_payload_bytes) {
    return std::make_unique<jobq::SqliteBackend>(
        dir.file(), jobq::SqliteOptions{.clock = clock.fn(), .max_payload_bytes = max_payload_bytes});
  }

  /// The most active jobs of one group in `queue`, read from the file on a connection of the
  /// probe's own (so a monitor thread can call it while claimers run).
  auto active_per_group_probe() const {
    return [raw = std::make_shared<sqlite_test::RawDb>(dir.file())](const std::string& queue) {
      const auto v = raw->scalar(
          "SELECT coalesce(max(c), 0) FROM (SELECT count(*) AS c FROM jobq_jobs WHERE state = 'active'"
          " AND group_key IS NOT NULL AND queue = '" + queue + "' GROUP BY group_key)");
      return v.empty() ? 0 : std::stoi(v);
    };
  }
  /// After a rate-limit race: the ledger is pruned by the claims themselves, and removing the
  /// limit forgets it (no claim would prune it any more).
  void check_rate_bookkeeping(const std::string& queue) {
    sqlite_test::RawDb raw(dir.file());
    CHECK(std::stoi(raw.scalar("SELECT count(*) FROM jobq_rate_ledger")) <= 4);
    store.set_queue_limits(queue, {});
    CHECK(raw.scalar("SELECT count(*) FROM jobq_rate_ledger") == "0");
  }
};

using Backends = std::tuple<SqliteFixture>;
#include "conformance/suite.hpp"
