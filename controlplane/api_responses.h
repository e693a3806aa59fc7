#pragma once

// The answers every endpoint file of the Api builds (api.cc defines them).

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/result.h"
#include "controlplane/http_types.h"

namespace amlnode::controlplane {

Response json_response(int status, const nlohmann::json& body);
int http_status_for(const std::string& code);
Response error_response(int status, const std::string& code, const std::string& message);
// An expected failure as its status; the server's own storage failing is a 503 (try again).
Response error_response(const Error& error);
Response method_not_allowed(const std::string& allowed);
// The token of an Authorization: Bearer header; "" when there is none.
std::string bearer_token(std::string_view authorization);
std::chrono::milliseconds to_millis(double seconds);

}  // namespace amlnode::controlplane
