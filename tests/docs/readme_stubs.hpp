// What the README's snippets call but leave to the reader: "your code".
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace my_app {

/// Signing up enqueues one welcome email (the README's unit-test snippet checks for it).
template <class Queue>
void sign_up(Queue& emails, const std::string& to) {
  emails.submit(emails.make("send-email", nlohmann::json{{"to", to}, {"subject", "Welcome"}}));
}

}  // namespace my_app
