#pragma once

// The daemon's own log: spdlog to stdout (where the agent always logged; errors before the
// logger exists go to stderr), one line per message.
//
// - Under systemd, stdout is a stream into the journal ($JOURNAL_STREAM names its device and
//   inode). Each line then starts with its syslog priority ("<6>" info, "<4>" warning, "<3>"
//   error, ...), which journald turns into the entry's PRIORITY=, and carries no timestamp of its
//   own (the journal stamps every entry).
// - Elsewhere a line is "2026-11-22T08:43:00.123Z info message".
// - `format: json` gives one JSON object per line, {"time", "level", "message"}, for log
//   shippers; under the journal it keeps the priority prefix.
// - Secrets (the registration token, the node token) are registered with redact_in_logs() and
//   replaced by "[redacted]" in every line, whoever logs them.
//
// Configured by the config's `log:` section (`level: debug|info|warn|error`, `format:
// text|json`); `--log-level` and `--log-format` on the command line win over it, also when a
// SIGHUP reload re-reads the config.

#include <spdlog/common.h>
#include <spdlog/sinks/base_sink.h>

#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "agent/config.h"
#include "common/result.h"

namespace amlnode::agent {

enum class LogFormat { Text, Json };

struct LogOptions {
  spdlog::level::level_enum level = spdlog::level::info;
  LogFormat format = LogFormat::Text;
};

// Values given on the command line; each one set wins over the config.
struct LogOverrides {
  std::optional<std::string> level;
  std::optional<std::string> format;
};

// A log line's message is cut at this many bytes, so one careless message cannot make a line of
// unbounded size.
constexpr std::size_t kMaxLogMessage = 16 * 1024;

// The options from the config's `log` section (`where` prefixes error messages, e.g.
// "/etc/amlnode/config.yml: log.") with the overrides applied. Errors ("InvalidConfig") name the
// field and list the accepted values.
Result<LogOptions> resolve_log_options(const nlohmann::json& section, const std::string& where,
                                       const LogOverrides& overrides);

// `amlnode agent`'s logging from its config and command line: resolves and applies the options,
// and keeps the overrides for resolve_daemon_log_options(). Errors name the field.
Result<void> configure_daemon_logging(const NodeConfig& config, const LogOverrides& overrides);

// The options a reloaded config gives, with the command line's overrides still winning.
Result<LogOptions> resolve_daemon_log_options(const NodeConfig& config);

// Makes the daemon's logger spdlog's default, writing to stdout; a later call (a reload) changes
// its level and format in place.
void apply_log_options(const LogOptions& options);

// True when $JOURNAL_STREAM ("<device>:<inode>") names the file stdout is open on.
bool stdout_is_journal_stream();

// Every later line has each occurrence of `secret` replaced by "[redacted]". Strings shorter
// than 8 bytes are not secrets worth the name and are ignored (they would mangle ordinary words).
void redact_in_logs(const std::string& secret);

// The sink behind the daemon's logger, writing whole lines to `fd` with one write() each (lines
// from several threads never interleave). `journal` adds the priority prefixes. Tests point it at
// a file.
class DaemonLogSink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  DaemonLogSink(int fd, bool journal, LogFormat format);
  void set_log_format(LogFormat format);
  void add_secret(const std::string& secret);

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override;
  void flush_() override {}

 private:
  std::string render(const spdlog::details::log_msg& msg) const;

  int fd_;
  bool journal_;
  LogFormat format_;
  std::vector<std::string> secrets_;
};

}  // namespace amlnode::agent
