#include "tests/docker/docker_test_support.h"

#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <random>

namespace amlnode::test {
namespace {

std::filesystem::path services_env_path() {
  const char* dir = std::getenv("AMLNODE_TEST_RUN_DIR");
  return std::filesystem::path(dir && *dir ? dir : "/run/amlnode-test") / "services.env";
}

std::map<std::string, std::string> read_env_file(const std::filesystem::path& path) {
  std::map<std::string, std::string> values;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    auto equals = line.find('=');
    if (equals != std::string::npos) values[line.substr(0, equals)] = line.substr(equals + 1);
  }
  return values;
}

Services load_services() {
  auto path = services_env_path();
  INFO("services file " << path << " (run scripts/test-services start)");
  REQUIRE(std::filesystem::exists(path));
  auto values = read_env_file(path);
  Services services;
  services.docker_host = values["AMLNODE_TEST_DOCKER_HOST"];
  services.base_image = values["AMLNODE_TEST_BASE_IMAGE"];
  services.registry = values["AMLNODE_TEST_REGISTRY"];
  services.private_image = values["AMLNODE_TEST_PRIVATE_IMAGE"];
  services.private_image_unpulled = values["AMLNODE_TEST_PRIVATE_IMAGE_UNPULLED"];
  services.registry_user = values["AMLNODE_TEST_REGISTRY_USER"];
  services.registry_password = values["AMLNODE_TEST_REGISTRY_PASSWORD"];
  services.wheels = values["AMLNODE_TEST_WHEELS"];
  REQUIRE(!services.docker_host.empty());
  REQUIRE(!services.base_image.empty());
  return services;
}

}  // namespace

const Services& services() {
  static const Services loaded = load_services();
  return loaded;
}

std::string nonce() {
  static std::atomic<int> counter{0};
  static const auto seed = std::random_device{}();
  auto now = std::chrono::system_clock::now().time_since_epoch().count();
  return std::to_string(::getpid()) + "-" + std::to_string(seed % 100000) + "-" +
         std::to_string(now % 1000000000) + "-" + std::to_string(counter++);
}

docker::DockerRuntimeConfig runtime_config(const std::filesystem::path& state_dir) {
  docker::DockerRuntimeConfig config;
  config.engine.docker_host = services().docker_host;
  config.builder.default_cpu_image = services().base_image;
  config.builder.default_gpu_image = services().base_image + "-gpu-not-here";
  config.builder.pip_install_options = {"--no-index", "--find-links", docker::kWheelDirInImage};
  config.builder.local_wheel_dir = services().wheels;
  config.builder.state_dir = state_dir;
  return config;
}

std::unique_ptr<docker::ContainerRuntime> make_runtime(const docker::DockerRuntimeConfig& config) {
  auto runtime = docker::make_docker_runtime(config);
  REQUIRE(runtime.ok());
  return std::move(runtime.value());
}

std::unique_ptr<docker::ContainerRuntime> make_runtime(const std::filesystem::path& state_dir) {
  return make_runtime(runtime_config(state_dir));
}

spec::Environment fresh_environment(const std::string& tag_hint) {
  spec::Environment environment;
  environment.docker.enabled = true;
  environment.docker.base_image = services().base_image;
  environment.environment_variables = {{"AMLNODE_TEST_ENV_NONCE", tag_hint + nonce()}};
  return environment;
}

executors::Plan make_plan(const std::filesystem::path& root, const std::vector<std::string>& argv) {
  executors::Plan plan;
  plan.run_id = "test-" + nonce();
  plan.experiment_name = "docker-tests";
  plan.run_dir = root / "runs" / plan.run_id;
  plan.working_dir = plan.run_dir / "wd";
  plan.std_log = plan.run_dir / "user_logs" / "std_log.txt";
  plan.system_logs = plan.run_dir / "system_logs";
  std::filesystem::create_directories(plan.working_dir / "outputs");
  std::filesystem::create_directories(plan.working_dir / "logs");
  std::filesystem::create_directories(plan.std_log.parent_path());
  plan.argv = argv;
  plan.env = {{"AZUREML_RUN_ID", plan.run_id}, {"PYTHONUNBUFFERED", "1"}};
  plan.environment_kind = executors::EnvironmentKind::Docker;
  plan.shm_size = "2g";
  plan.shm_size_bytes = 2ull << 30;
  plan.kill_grace_seconds = 1;
  return plan;
}

spec::Job docker_job(const spec::Environment& environment) {
  spec::Job job;
  job.environment = environment;
  job.environment.docker.enabled = true;
  return job;
}

void remove_image(const std::string& reference) {
  docker::EngineClient client(*docker::resolve_docker_socket(services().docker_host, nullptr), {});
  auto response =
      client.call(docker::Request::del("/images/" + docker::path_escape(reference) + "?force=1"));
  REQUIRE(response.ok());
  INFO(response->body);
  REQUIRE((response->success() || response->status == 404));
}

std::string all_file_contents(const std::filesystem::path& dir) {
  std::string all;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    all.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    all += '\n';
  }
  return all;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace amlnode::test
