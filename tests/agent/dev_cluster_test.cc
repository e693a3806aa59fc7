// `amlnode dev`: a real control plane and real agents started by one command, a job run on them,
// and Ctrl-C leaving no process and no listening port behind. Also the README's first command,
// run exactly as written.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace amlnode;
namespace fs = std::filesystem;

namespace {

// The port of "control plane listening on http://127.0.0.1:PORT" in `dev`'s output, 0 if absent.
int control_plane_port(const std::string& out) {
  std::smatch match;
  static const std::regex kListening("listening on http://127\\.0\\.0\\.1:([0-9]+)");
  return std::regex_search(out, match, kListening) ? std::stoi(match[1]) : 0;
}

// Whether something accepts TCP connections on 127.0.0.1:port.
bool listening(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool connected = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  ::close(fd);
  return connected;
}

bool alive(pid_t pid) {
  return ::kill(pid, 0) == 0;
}

std::string read_text(const fs::path& file) {
  std::ifstream in(file);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// "export NAME=value" lines of `dev`'s env file as NAME=value entries for a command's environment.
std::vector<std::string> exported(const fs::path& env_file) {
  std::vector<std::string> env;
  std::ifstream in(env_file);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("export ", 0) == 0) env.push_back(line.substr(7));
  return env;
}

}  // namespace

TEST_CASE("amlnode dev --submit runs a job on a local cluster and leaves nothing running",
          "[dev]") {
  test::TempDir dir;
  fs::path data = dir / "dev";
  auto result = test::run_command(
      {test::amlnode_binary().string(), "dev", "--nodes", "2", "--data-dir", data.string(),
       "--submit", std::string(AMLNODE_SOURCE_DIR) + "/examples/hello/job.yml"},
      {}, std::chrono::seconds(120));
  INFO(result.out << result.err);
  REQUIRE(result.exit_code == 0);
  CHECK(result.out.find("not for production") != std::string::npos);
  CHECK(result.out.find("registered (2/2)") != std::string::npos);
  CHECK(result.out.find("export AMLNODE_CONTROL_PLANE=http://127.0.0.1:") != std::string::npos);
  CHECK(result.out.find("export AMLNODE_USER_TOKEN=") != std::string::npos);
  CHECK(result.out.find("amlnode submit --compute dev examples/hello/job.yml") !=
        std::string::npos);
  CHECK(result.out.find("hello from run hello_") != std::string::npos);
  CHECK(result.out.find(": Completed") != std::string::npos);

  // The run's outputs are in its folder on the node that ran it.
  std::smatch folder;
  REQUIRE(std::regex_search(result.out, folder, std::regex("its folder: (\\S+)")));
  CHECK(read_text(fs::path(folder[1].str()) / "wd" / "outputs" / "greeting.txt") ==
        "hello, hello\n");

  int port = control_plane_port(result.out);
  REQUIRE(port > 0);
  CHECK_FALSE(listening(port));
  CHECK(test::processes_with_marker(data.string()).empty());
}

TEST_CASE("Ctrl-C stops amlnode dev with a run in it and leaves no process or port", "[dev]") {
  test::TempDir dir;
  fs::path data = dir / "dev";
  auto amlnode = test::amlnode_binary().string();
  pid_t dev = test::start_command({amlnode, "dev", "--nodes", "2", "--data-dir", data.string()},
                                  dir / "out", dir / "err");
  bool ready = test::eventually(
      [&] { return read_text(dir / "out").find("ready on compute") != std::string::npos; },
      std::chrono::seconds(60));
  INFO(read_text(dir / "out") << read_text(dir / "err"));
  REQUIRE(ready);

  // A run whose process stays until it is stopped, and says where it is.
  dir.write("src/job.yml",
            "entry_script: wait.sh\nuser_managed: true\nuse_docker: false\n"
            "environment_variables: {PID_FILE: " +
                (dir / "job.pid").string() + "}\n");
  dir.write("src/wait.sh",
            "echo $$ > \"$PID_FILE.tmp\" && mv \"$PID_FILE.tmp\" \"$PID_FILE\"\n"
            "exec sleep 300\n");
  auto env = exported(data / "env");
  REQUIRE(env.size() == 2);
  auto submitted = test::run_command(
      {amlnode, "submit", (dir / "src" / "job.yml").string(), "--compute", "dev"}, env);
  INFO(submitted.err);
  REQUIRE(submitted.exit_code == 0);
  std::string run_id = submitted.out.substr(0, submitted.out.find('\n'));
  REQUIRE(test::eventually([&] { return fs::exists(dir / "job.pid"); }, std::chrono::seconds(60)));
  pid_t job = std::stoi(read_text(dir / "job.pid"));
  REQUIRE(alive(job));
  int port = control_plane_port(read_text(dir / "out"));
  REQUIRE(listening(port));

  ::kill(dev, SIGINT);
  CHECK(test::wait_command(dev, std::chrono::seconds(90)) == 0);
  std::string out = read_text(dir / "out");
  INFO(out);
  CHECK(out.find("canceling 1 run") != std::string::npos);
  CHECK(out.find("left behind") == std::string::npos);
  CHECK_FALSE(alive(job));
  CHECK_FALSE(listening(port));
  CHECK(test::processes_with_marker(data.string()).empty());
  // The run was canceled through the product's own path, not just killed.
  std::string status;
  for (const auto& node : fs::directory_iterator(data / "nodes")) {
    fs::path record = node.path() / "runs" / run_id / "run.json";
    if (fs::exists(record)) status = nlohmann::json::parse(read_text(record)).value("status", "");
  }
  CHECK(status == "Canceled");
}

TEST_CASE("amlnode controlplane --help lists the server's own flags", "[dev]") {
  auto help = test::run_command({test::amlnode_binary().string(), "controlplane", "--help"});
  CHECK(help.exit_code == 0);
  for (const char* flag : {"--listen", "--data-dir", "--heartbeat-timeout", "--requeue-delay"})
    CHECK(help.out.find(flag) != std::string::npos);
}

// The README's first set-up command is "scripts/setup && <the example>"; the example half runs here
// exactly as written, from the checkout, when the build under test is the checkout's build/.
TEST_CASE("the README's example command runs as written", "[dev]") {
  fs::path source = AMLNODE_SOURCE_DIR;
  if (fs::weakly_canonical(source / "build") != fs::weakly_canonical(AMLNODE_BINARY_DIR)) {
    WARN("skipped: the build under test is not " << (source / "build"));
    return;
  }
  std::string readme = read_text(source / "README.md");
  std::smatch line;
  REQUIRE(std::regex_search(readme, line, std::regex("\\nscripts/setup && ([^\\n]+)\\n")));
  std::string example = line[1];
  INFO(example);
  auto result = test::run_command({"bash", "-c", "cd " + source.string() + " && " + example}, {},
                                  std::chrono::seconds(180));
  INFO(result.out << result.err);
  CHECK(result.exit_code == 0);
  CHECK(result.out.find("hello from run") != std::string::npos);
  std::smatch state;
  if (std::regex_search(result.out, state, std::regex("state kept in (/\\S+amlnode-dev-\\S+)")))
    fs::remove_all(state[1].str());
}
