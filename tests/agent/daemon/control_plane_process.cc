#include "tests/agent/daemon/control_plane_process.h"

#include <signal.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <regex>

#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace amlnode::test {

std::filesystem::path controlplane_binary() {
  return std::filesystem::path(AMLNODE_BINARY_DIR) / "bin" / "amlnode-controlplane";
}

ControlPlaneProcess::ControlPlaneProcess(std::filesystem::path data_dir, std::vector<std::string> extra_args)
    : data_dir_(std::move(data_dir)), extra_args_(std::move(extra_args)) {}

ControlPlaneProcess::~ControlPlaneProcess() {
  if (pid_ > 0) kill();
}

void ControlPlaneProcess::start() {
  REQUIRE(pid_ <= 0);
  std::filesystem::create_directories(data_dir_);
  auto out = data_dir_ / ("stdout." + std::to_string(starts_));
  auto err = data_dir_ / ("stderr." + std::to_string(++starts_));
  std::vector<std::string> argv{controlplane_binary().string(), "--listen",
                                "127.0.0.1:" + std::to_string(port_), "--data-dir", data_dir_.string(),
                                "--user-token", user_token_};
  argv.insert(argv.end(), extra_args_.begin(), extra_args_.end());
  pid_ = start_command(argv, out, err);
  static const std::regex listening("listening on http://127\\.0\\.0\\.1:([0-9]+)");
  std::smatch match;
  bool up = eventually(
      [&] {
        std::error_code ec;
        if (!std::filesystem::exists(out, ec)) return false;
        std::string text = slurp(out);
        return std::regex_search(text, match, listening);
      },
      std::chrono::seconds(20));
  INFO(slurp(err));
  REQUIRE(up);
  port_ = static_cast<std::uint16_t>(std::stoi(match[1].str()));
  http_ = agent::make_http_client(*agent::parse_http_url(url()));
}

void ControlPlaneProcess::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  wait_command(pid_, std::chrono::seconds(20));
  pid_ = -1;
}

void ControlPlaneProcess::kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  wait_command(pid_, std::chrono::seconds(20));
  pid_ = -1;
}

std::pair<int, nlohmann::json> ControlPlaneProcess::user_call(const std::string& method, const std::string& target,
                                                              const nlohmann::json& body) {
  agent::HttpRequest request;
  request.method = method;
  request.target = target;
  request.bearer_token = user_token_;
  if (!body.is_null()) {
    request.content_type = "application/json";
    request.body = body.dump();
  }
  auto response = http_->send(request);
  INFO(method << " " << target);
  REQUIRE(response.ok());
  return {response->status, nlohmann::json::parse(response->body, nullptr, false)};
}

std::string ControlPlaneProcess::registration_token(const std::string& compute_name) {
  auto [status, body] = user_call("POST", "/v1/registration-tokens", {{"compute_name", compute_name}});
  REQUIRE(status == 201);
  return body["token"].get<std::string>();
}

}  // namespace amlnode::test
