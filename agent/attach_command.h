#pragma once

// `amlnode attach HOST --compute NAME --username U (--password-file F | --private-key-file K
// [--passphrase-file P]) [--port 22] [--kind remote|hdinsight] [--known-hosts FILE]
// [--host-key SHA256:... | --accept-new-host-key] [--timeout S] [--json]` against a control plane
// (--control-plane, --user-token as the other user commands): installs this agent on HOST over
// SSH and waits until it has registered as a node of NAME (remote/attach.h, docs/attach.md).
// Secrets are read from files, never taken on the command line.

#include <memory>

namespace CLI {
class App;
}

namespace amlnode::agent {

class AttachCommand {
 public:
  AttachCommand();
  ~AttachCommand();
  void add_to(CLI::App& app);
  // -1 when attach was not chosen; else the exit code (0 attached, 1 failed, 2 usage).
  int run();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace amlnode::agent
