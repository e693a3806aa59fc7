#pragma once

// The user's side of the control plane protocol (docs/protocol.md, "Runs, as people use them"):
// one client with the user token, and the acts more than one command performs (submitting a job
// with its snapshot, following a log). `amlnode submit/status/logs/...` (user_commands.cc) and
// `amlnode dev` (dev_cluster.cc) both use it.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/daemon/http_client.h"
#include "common/result.h"

namespace amlnode::agent {

// Where the control plane is and who the user is. Empty fields fall back to the environment
// variables the user commands read: $AMLNODE_CONTROL_PLANE, $AMLNODE_USER_TOKEN, $AMLNODE_CA_FILE.
struct UserAccess {
  std::string control_plane;
  std::string user_token;
  std::string user_token_file;
  std::string ca_file;
};

// One call with the user token; a body in, the answer out.
class UserClient {
 public:
  UserClient(std::shared_ptr<HttpClient> http, std::string token)
      : http_(std::move(http)), token_(std::move(token)) {}

  Result<HttpResponse> call(const std::string& method, const std::string& target,
                            const std::string& body = "",
                            const std::string& content_type = "application/json",
                            std::chrono::seconds timeout = std::chrono::seconds(30));

  // Ends a call in flight (a long poll) and fails every later one: see HttpClient::cancel_all.
  void cancel_all() { http_->cancel_all(); }

 private:
  std::shared_ptr<HttpClient> http_;
  std::string token_;
};

// The client `access` (with its fallbacks) describes; a "Usage" error names what is missing.
Result<UserClient> make_user_client(const UserAccess& access);

// Prints a refused or failed answer's error as "amlnode: WHAT: ..." on stderr; true when the
// answer is 2xx.
bool answered(const Result<HttpResponse>& response, const std::string& what);

struct SubmitRequest {
  std::string job_file;
  std::string compute;
  std::string experiment;  // "" : the job's own experiment name
  std::string source_dir;  // "" : the job's own source directory
  // A script and its arguments from the command line, over what the job file says to run (the
  // job text sent is the file's with them written in).
  std::optional<std::string> script;
  std::vector<std::string> arguments;
};

// Loads and checks the job file (each problem printed on stderr), submits it and uploads the
// snapshot of its source directory. Returns the run id, or nullopt after saying why on stderr;
// `invalid` is set when the job itself was refused before anything was sent.
std::optional<std::string> submit_job(UserClient& client, const SubmitRequest& request,
                                      bool* invalid = nullptr);

struct LogRequest {
  std::string run_id;
  // Empty: the run's main log (std_log.txt, or rank 0's std_log_process_00.txt for a run of
  // several processes).
  std::string stream;
  unsigned attempt = 0;  // 0: the current attempt
  bool follow = false;   // keep printing until the run is over
};

// Prints a run's log stream to stdout. Returns 0, or 1 after an error on stderr.
int print_log(UserClient& client, const LogRequest& request);

// The run's status as the control plane reports it, or the error.
Result<std::string> run_status(UserClient& client, const std::string& run_id);

}  // namespace amlnode::agent
