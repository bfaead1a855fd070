// The jobs the example service's API enqueues and its worker runs.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace service {

/// @brief Send the welcome email of a new user.
struct SendWelcomeEmail {
  static constexpr std::string_view job_name = "send-welcome-email";
  long long user_id = 0;
  std::string email, name;
  NLOHMANN_DEFINE_TYPE_INTRUSIVE(SendWelcomeEmail, user_id, email, name)
};

/// @brief Create or update the user in the CRM.
struct SyncCrm {
  static constexpr std::string_view job_name = "crm-sync";
  long long user_id = 0;
  std::string email;
  NLOHMANN_DEFINE_TYPE_INTRUSIVE(SyncCrm, user_id, email)
};

/// @brief The backend URL: --url, else $JOBQ_URL, else a SQLite file (no server needed).
inline std::string backend_url(int argc, char** argv) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string_view(argv[i]) == "--url") return argv[i + 1];
  }
  if (const char* env = std::getenv("JOBQ_URL"); env != nullptr && *env != '\0') return env;
  return "sqlite:///tmp/jobq-service.db";
}

/// @brief The value of `--name VALUE`, or `def`.
inline int int_option(int argc, char** argv, std::string_view name, int def) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (name == argv[i]) return std::stoi(argv[i + 1]);
  }
  return def;
}

}  // namespace service
