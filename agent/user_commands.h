#pragma once

// The user's commands against a control plane (docs/agent.md, "User commands"):
//   amlnode submit JOB --compute NAME [--experiment NAME] [--source-dir DIR]
//   amlnode status RUN_ID      amlnode logs RUN_ID [--stream S] [--follow]
//   amlnode cancel RUN_ID      amlnode nodes      amlnode compute status NAME
//   amlnode runs [--live] [--compute NAME]      amlnode metrics RUN_ID
//   amlnode compute token create NAME
// Each takes --control-plane URL (else $AMLNODE_CONTROL_PLANE) and --user-token (else
// $AMLNODE_USER_TOKEN, else the file --user-token-file names).

#include <memory>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace amlnode::agent {

// Adds the commands to `app`; after parsing, run_user_command() runs whichever was chosen.
class UserCommands {
 public:
  UserCommands();
  ~UserCommands();
  void add_to(CLI::App& app);
  // The words of `submit` that are not its options: the job file (unless -c named it), then a
  // script and its arguments (agent/cli.cc splits them off before parsing).
  void set_submit_words(std::vector<std::string> words);
  // -1 when none of these commands was chosen; else the exit code (0 ok, 1 refused or
  // unreachable, 2 usage or an invalid job).
  int run();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace amlnode::agent
