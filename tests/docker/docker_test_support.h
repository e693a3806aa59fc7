#pragma once

// Shared pieces of the docker tests: where scripts/test-services put the services, runtimes
// pointed at them, and run folders with plans to run in containers.

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "docker/runtime.h"
#include "executors/plan.h"
#include "spec/job.h"

namespace amlnode::test {

// What scripts/test-services wrote to services.env.
struct Services {
  std::string docker_host;
  std::string base_image;
  std::string registry;
  std::string private_image;           // pushed under auth, pulled by the credentials test
  std::string private_image_unpulled;  // pushed under auth, never present locally
  std::string registry_user;
  std::string registry_password;
  std::filesystem::path wheels;
};

// Reads services.env once (fails the test when the services are not started).
const Services& services();

// A string no other test run uses (for fresh environments and tags).
std::string nonce();

// A builder config for the test services: base image, local wheels, state under `state_dir`.
docker::DockerRuntimeConfig runtime_config(const std::filesystem::path& state_dir);
std::unique_ptr<docker::ContainerRuntime> make_runtime(const docker::DockerRuntimeConfig& config);
std::unique_ptr<docker::ContainerRuntime> make_runtime(const std::filesystem::path& state_dir);

// An environment on the test base image whose image is new: a variable with a fresh value.
spec::Environment fresh_environment(const std::string& tag_hint = "");

// A run folder under `root` (wd/, user_logs/) and a plan running `argv` there.
executors::Plan make_plan(const std::filesystem::path& root, const std::vector<std::string>& argv);

// A docker-enabled job on `image` with the plan's shm size.
spec::Job docker_job(const spec::Environment& environment);

// Removes an image by reference (force), ignoring one that is not there.
void remove_image(const std::string& reference);

// Every file's content under `dir`, concatenated (to look for secrets).
std::string all_file_contents(const std::filesystem::path& dir);

// Whether `haystack` contains `needle` (for readable REQUIREs on binary-safe strings).
bool contains(const std::string& haystack, const std::string& needle);

}  // namespace amlnode::test
