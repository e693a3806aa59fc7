#include "tests/metrics/metrics_test_support.h"

#include <sys/wait.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <catch2/catch.hpp>
#include <cctype>
#include <cstdlib>
#include <sstream>

#include "common/fs.h"
#include "executors/shim/protocol.h"

namespace amlnode::test {

namespace fs = std::filesystem;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

ShimmedWorkload::ShimmedWorkload(const TempDir& dir, const std::vector<std::string>& args)
    : dir_(dir.path()) {
  executors::LaunchSpec spec;
  spec.argv = {AMLNODE_METRICS_WORKLOAD, "--ready", (dir_ / "ready").string()};
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  spec.env = {"PATH=/usr/bin:/bin"};
  spec.cwd = dir_;
  spec.log_path = dir_ / "std_log.txt";
  spec.state_path = dir_ / "shim.json";
  spec.exit_path = dir_ / "exit.json";
  spec.kill_grace_seconds = 1;
  auto launcher = executors::make_shim_launcher(fs::path(AMLNODE_BINARY_DIR) / "bin/amlnode-shim");
  auto launched = launcher->launch(spec, dir_ / "launch.json", dir_ / "shim.log");
  REQUIRE(launched.ok());
  shim_ = *launched;
  ready_ = eventually([&] { return fs::exists(dir_ / "ready") && fs::exists(dir_ / "shim.json"); },
                      std::chrono::seconds(30));
}

ShimmedWorkload::~ShimmedWorkload() {
  (void)executors::request_cancel(shim_);
  int status = 0;
  ::waitpid(shim_.pid, &status, 0);
}

pid_t ShimmedWorkload::child() const {
  auto text = read_file(dir_ / "shim.json");
  if (!text.ok()) return -1;
  auto state = executors::shim_state_from_json(*text);
  return state.ok() ? state->child_pid : -1;
}

double ShimmedWorkload::reported_cpu_seconds() const {
  auto text = read_file(dir_ / "ready");
  return text.ok() ? std::strtod(text->c_str(), nullptr) : -1;
}

CommandResult promtool_check(const std::string& text, const TempDir& dir) {
  auto file = dir.write("exposition.txt", text);
  return run_command({"sh", "-c", "promtool check metrics < " + file.string()});
}

HttpAnswer http_request(std::uint16_t port, const std::string& method, const std::string& target,
                        const std::string& host) {
  HttpAnswer answer;
  try {
    asio::io_context io;
    beast::tcp_stream stream(io);
    stream.expires_after(std::chrono::seconds(10));
    stream.connect(asio::ip::tcp::endpoint(asio::ip::make_address(host), port));
    http::request<http::empty_body> request(http::string_to_verb(method), target, 11);
    request.set(http::field::host, host);
    request.keep_alive(false);
    http::write(stream, request);
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.skip(method == "HEAD");
    parser.body_limit(64 << 20);
    http::read(stream, buffer, parser);
    const auto& response = parser.get();
    answer.status = static_cast<int>(response.result_int());
    for (const auto& field : response) {
      std::string name(field.name_string());
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      answer.headers[name] = std::string(field.value());
    }
    answer.body = response.body();
  } catch (const std::exception&) {
    answer.status = 0;
  }
  return answer;
}

double sample_value(const std::string& exposition, const std::string& series) {
  std::istringstream lines(exposition);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ')
      return std::strtod(line.c_str() + series.size() + 1, nullptr);
  }
  return -1;
}

}  // namespace amlnode::test
