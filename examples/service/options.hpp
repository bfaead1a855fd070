// The command line of the example service's two programs (CLI11, like the admin CLI): a bad
// value is a clear error and exit code 2, never an uncaught exception.
#pragma once

#include <optional>
#include <string>

#include <CLI/CLI.hpp>

namespace service {

/// @brief Adds --url: the backend URL, else $JOBQ_URL, else a SQLite file (no server needed).
inline void add_url_option(CLI::App& app, std::string& url) {
  url = "sqlite:///tmp/jobq-service.db";
  app.add_option("-u,--url", url, "backend URL, sqlite:// or postgresql:// (default: $JOBQ_URL, else " + url + ")")
      ->envname("JOBQ_URL");
}

/// @brief Adds a TCP port option; 0 picks any free port.
inline void add_port_option(CLI::App& app, const std::string& name, int& port, const std::string& what) {
  app.add_option(name, port, what + " (0: any free port)")->check(CLI::Range(0, 65535))->capture_default_str();
}

/// @brief Parses the command line: nullopt to go on, else the exit code (0 after --help, 2 after
/// a usage error, which CLI11 has explained on stderr).
inline std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
    return std::nullopt;
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
}

}  // namespace service
