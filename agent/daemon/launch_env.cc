#include "agent/daemon/launch_env.h"

#include <charconv>
#include <cstdlib>

namespace amlnode::agent {
namespace {

std::string env_or_empty(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

}  // namespace

Result<std::optional<ShareLaunchEnv>> read_share_launch_env() {
  ShareLaunchEnv env{env_or_empty("AMLNODE_LAUNCH_URL"), env_or_empty("AMLNODE_LAUNCH_TOKEN"),
                     env_or_empty("AMLNODE_LAUNCH_CA_FILE"), env_or_empty("AZUREML_RUN_ID"), -1};
  std::string rank = env_or_empty("AMLNODE_NODE_RANK");
  std::from_chars(rank.data(), rank.data() + rank.size(), env.node_rank);
  if (env.url.empty() && env.token.empty()) return std::optional<ShareLaunchEnv>();
  // Half a share's settings must not pass for a share, nor for no share at all.
  if (env.url.empty() || env.token.empty() || env.run_id.empty() || env.node_rank < 0)
    return Error{"InvalidShare",
                 "a share across nodes needs AMLNODE_LAUNCH_URL, AMLNODE_LAUNCH_TOKEN, "
                 "AMLNODE_NODE_RANK and AZUREML_RUN_ID together; some are missing"};
  return std::optional<ShareLaunchEnv>(std::move(env));
}

}  // namespace amlnode::agent
