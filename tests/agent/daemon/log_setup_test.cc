// The daemon's own log lines: journald priority prefixes, JSON lines, secrets redacted, options
// and their errors.

#include "agent/daemon/log_setup.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <sstream>

#include "tests/support/temp_dir.h"

using namespace amlnode;

namespace {

// A logger whose sink writes into a file, and the lines it wrote.
class CapturedLog {
 public:
  CapturedLog(bool journal, agent::LogFormat format) {
    fd_ = ::open((dir_ / "log").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    sink_ = std::make_shared<agent::DaemonLogSink>(fd_, journal, format);
    logger_ = std::make_shared<spdlog::logger>("test", sink_);
    logger_->set_level(spdlog::level::debug);
  }
  ~CapturedLog() { ::close(fd_); }

  spdlog::logger& logger() { return *logger_; }
  agent::DaemonLogSink& sink() { return *sink_; }
  std::vector<std::string> lines() const {
    std::istringstream in(test::slurp(dir_ / "log"));
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
  }

 private:
  test::TempDir dir_;
  int fd_ = -1;
  std::shared_ptr<agent::DaemonLogSink> sink_;
  std::shared_ptr<spdlog::logger> logger_;
};

}  // namespace

TEST_CASE("under the journal each line carries its syslog priority and no timestamp", "[log]") {
  CapturedLog log(true, agent::LogFormat::Text);
  log.logger().debug("looking");
  log.logger().info("registered as node n-1");
  log.logger().warn("control plane unreachable");
  log.logger().error("registration failed");
  log.logger().critical("out of memory");
  CHECK(log.lines() == std::vector<std::string>{"<7>looking", "<6>registered as node n-1",
                                                "<4>control plane unreachable",
                                                "<3>registration failed", "<2>out of memory"});
}

TEST_CASE("outside the journal a line has a UTC timestamp and its level", "[log]") {
  CapturedLog log(false, agent::LogFormat::Text);
  log.logger().warn("control plane unreachable");
  auto lines = log.lines();
  REQUIRE(lines.size() == 1);
  // 2026-11-22T08:43:00.123Z warn control plane unreachable
  CHECK(lines[0].size() == 24 + std::string(" warn control plane unreachable").size());
  CHECK(lines[0][10] == 'T');
  CHECK(lines[0][23] == 'Z');
  CHECK(lines[0].substr(24) == " warn control plane unreachable");
}

TEST_CASE("json format gives one parseable object per line, even for awkward messages", "[log]") {
  bool journal = GENERATE(false, true);
  CapturedLog log(journal, agent::LogFormat::Json);
  log.logger().error("quote \" newline \n and bad utf-8 \xff end");
  log.logger().info("second");
  auto lines = log.lines();
  REQUIRE(lines.size() == 2);
  std::string first = lines[0];
  if (journal) {
    CHECK(first.rfind("<3>{", 0) == 0);
    first = first.substr(3);
  }
  auto record = nlohmann::json::parse(first);
  CHECK(record["level"] == "error");
  CHECK(record["message"] == "quote \" newline \n and bad utf-8 \xEF\xBF\xBD end");
  CHECK(record["time"].get<std::string>().back() == 'Z');
}

TEST_CASE("secrets are replaced wherever they appear in a line", "[log]") {
  CapturedLog log(false, agent::LogFormat::Json);
  const std::string token = "nt-0123456789abcdef";
  log.sink().add_secret(token);
  log.sink().add_secret("short");  // too short to be a secret; ordinary words stay intact
  log.logger().error("refused {} and again {}{} in a short line", token, token, token);
  auto lines = log.lines();
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].find("nt-0123456789") == std::string::npos);
  CHECK(nlohmann::json::parse(lines[0])["message"] ==
        "refused [redacted] and again [redacted][redacted] in a short line");
}

TEST_CASE("a huge message is cut at the bound", "[log]") {
  CapturedLog log(true, agent::LogFormat::Text);
  log.logger().info("{}", std::string(1 << 20, 'x'));
  auto lines = log.lines();
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].size() == 3 + agent::kMaxLogMessage);
}

TEST_CASE("log options come from the config, and the command line wins", "[log]") {
  nlohmann::json section{{"level", "warn"}, {"format", "json"}};
  auto options = agent::resolve_log_options(section, "c.yml: log.", {});
  REQUIRE(options.ok());
  CHECK(options->level == spdlog::level::warn);
  CHECK(options->format == agent::LogFormat::Json);

  options = agent::resolve_log_options(section, "c.yml: log.", {"debug", "text"});
  REQUIRE(options.ok());
  CHECK(options->level == spdlog::level::debug);
  CHECK(options->format == agent::LogFormat::Text);

  options = agent::resolve_log_options(nlohmann::json::object(), "c.yml: log.", {});
  REQUIRE(options.ok());
  CHECK(options->level == spdlog::level::info);
  CHECK(options->format == agent::LogFormat::Text);
}

TEST_CASE("a bad log option names its field and what is accepted", "[log]") {
  auto bad_level = agent::resolve_log_options({{"level", "loud"}}, "c.yml: log.", {});
  REQUIRE_FALSE(bad_level.ok());
  CHECK(bad_level.error().message ==
        "c.yml: log.level: expected one of debug, info, warn, error (found \"loud\")");
  auto bad_format = agent::resolve_log_options({{"format", 3}}, "c.yml: log.", {});
  REQUIRE_FALSE(bad_format.ok());
  CHECK(bad_format.error().message == "c.yml: log.format: expected a string");
  auto bad_flag = agent::resolve_log_options({}, "c.yml: log.", {std::nullopt, "xml"});
  REQUIRE_FALSE(bad_flag.ok());
  CHECK(bad_flag.error().message == "--log-format: expected text or json (found \"xml\")");
}

TEST_CASE("JOURNAL_STREAM counts only when it names stdout's file", "[log]") {
  struct stat info {};
  REQUIRE(::fstat(STDOUT_FILENO, &info) == 0);
  std::string mine = std::to_string(info.st_dev) + ":" + std::to_string(info.st_ino);
  ::setenv("JOURNAL_STREAM", mine.c_str(), 1);
  CHECK(agent::stdout_is_journal_stream());
  // A variable inherited from a parent whose stdout was the journal, while ours is redirected.
  std::string other = std::to_string(info.st_dev) + ":" + std::to_string(info.st_ino + 1);
  ::setenv("JOURNAL_STREAM", other.c_str(), 1);
  CHECK_FALSE(agent::stdout_is_journal_stream());
  ::setenv("JOURNAL_STREAM", "garbage", 1);
  CHECK_FALSE(agent::stdout_is_journal_stream());
  ::unsetenv("JOURNAL_STREAM");
  CHECK_FALSE(agent::stdout_is_journal_stream());
}
