#include <jobq/sqlite.hpp>

#include <filesystem>
#include <string>

#include <unistd.h>

/// The SQLite backend: a fresh database file in a fresh temp directory per test case.
struct SqliteFixture {
  static constexpr const char* name = "sqlite";
  jobq::ManualClock clock;
  std::filesystem::path dir = make_dir();
  jobq::SqliteBackend store{(dir / "jobs.db").string(), {.clock = clock.fn()}};

  SqliteFixture() = default;
  SqliteFixture(const SqliteFixture&) = delete;
  SqliteFixture& operator=(const SqliteFixture&) = delete;
  ~SqliteFixture() {
    std::error_code ec;  // the store (declared after dir) is closed before this runs
    std::filesystem::remove_all(dir, ec);
  }

  jobq::SqliteBackend& backend() { return store; }

  static std::filesystem::path make_dir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "jobq-sqlite-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + tmpl);
    return tmpl;
  }
};

using Backends = std::tuple<SqliteFixture>;
#include "conformance/suite.hpp"
