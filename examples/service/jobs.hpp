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

}  // namespace service
