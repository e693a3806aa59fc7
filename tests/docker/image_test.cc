// Environment images against the real daemon and registry: reuse, one build per environment,
// pulls with credentials, build failures, eviction.

#include <catch2/catch.hpp>
#include <chrono>
#include <iostream>
#include <mutex>
#include <thread>

#include "docker/image_recipe.h"
#include "docker/image_usage.h"
#include "docker/runtime.h"
#include "tests/docker/docker_test_support.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace amlnode::docker {
namespace {

using test::contains;
using test::services;
using test::TempDir;
using Clock = std::chrono::steady_clock;

ImageRequest request_for(const spec::Environment& environment) {
  ImageRequest request;
  request.environment = environment;
  return request;
}

spec::RegistryDetails credentials(const std::string& password) {
  return {services().registry, services().registry_user, password};
}

// Collects progress text from any thread.
struct Progress {
  std::mutex mutex;
  std::string text;
  ProgressSink sink() {
    return [this](std::string_view piece) {
      std::lock_guard lock(mutex);
      text += piece;
    };
  }
};

TEST_CASE("images: a second ensure of the same environment builds nothing", "[docker]") {
  TempDir state;
  auto runtime = test::make_runtime(state.path());
  auto request = request_for(test::fresh_environment("cache-"));
  Progress first_progress;
  auto first = runtime->ensure_image(request, first_progress.sink());
  REQUIRE(first.ok());
  CHECK(first->source == ImageSource::Built);
  CHECK(first->image.starts_with("amlnode/env:"));
  CHECK(contains(first_progress.text, "Successfully built"));

  Progress second_progress;
  auto start = Clock::now();
  auto second = runtime->ensure_image(request, second_progress.sink());
  auto elapsed = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  REQUIRE(second.ok());
  CHECK(second->source == ImageSource::CacheHit);
  CHECK(second->image == first->image);
  CHECK(second_progress.text.empty());
  CHECK(elapsed < 1000);
  std::cout << "cache-hit ensure: " << elapsed << " ms\n";
  test::remove_image(first->image);
}

TEST_CASE("images: two ensures of a new environment started together build it once", "[docker]") {
  TempDir state;
  auto runtime = test::make_runtime(state.path());
  auto request = request_for(test::fresh_environment("race-"));
  Progress progress;
  Result<EnsuredImage> results[2] = {Error{}, Error{}};
  std::thread threads[2];
  for (int i = 0; i < 2; ++i) {
    threads[i] =
        std::thread([&, i] { results[i] = runtime->ensure_image(request, progress.sink()); });
  }
  for (auto& thread : threads) thread.join();
  REQUIRE(results[0].ok());
  REQUIRE(results[1].ok());
  CHECK(results[0]->image == results[1]->image);
  int built =
      (results[0]->source == ImageSource::Built) + (results[1]->source == ImageSource::Built);
  CHECK(built == 1);
  auto count = [&](const std::string& needle) {
    int n = 0;
    for (auto at = progress.text.find(needle); at != std::string::npos;
         at = progress.text.find(needle, at + 1)) {
      ++n;
    }
    return n;
  };
  CHECK(count("Building amlnode/env:") == 1);

  // A second runtime sharing the state directory (another amlnode process) reuses it too.
  auto other = test::make_runtime(state.path());
  CHECK(other->ensure_image(request, {})->source == ImageSource::CacheHit);
  test::remove_image(results[0]->image);
}

TEST_CASE("images: a private base image is pulled with the job's credentials", "[docker]") {
  test::remove_image(services().private_image);
  TempDir state;
  auto runtime = test::make_runtime(state.path());
  spec::Environment environment;
  environment.docker.enabled = true;
  environment.docker.base_image = services().private_image;
  environment.docker.base_image_registry = credentials(services().registry_password);
  Progress progress;
  auto pulled = runtime->ensure_image(request_for(environment), progress.sink());
  INFO(progress.text);
  REQUIRE(pulled.ok());
  CHECK(pulled->source == ImageSource::Pulled);
  CHECK(pulled->image == services().private_image);
  CHECK(contains(progress.text, "Pulling " + services().private_image));
  CHECK_FALSE(contains(progress.text, services().registry_password));

  // Present now: not pulled again, and a build on top of it needs no pull either.
  CHECK(runtime->ensure_image(request_for(environment), {})->source == ImageSource::Present);
  environment.environment_variables = {{"AMLNODE_TEST_ENV_NONCE", test::nonce()}};
  Progress build_progress;
  auto built = runtime->ensure_image(request_for(environment), build_progress.sink());
  REQUIRE(built.ok());
  CHECK(built->source == ImageSource::Built);
  CHECK_FALSE(contains(build_progress.text, "Pulling"));
  test::remove_image(built->image);
  CHECK_FALSE(contains(test::all_file_contents(state.path()), services().registry_password));
}

TEST_CASE("images: wrong registry credentials fail clearly and never show the password",
          "[docker]") {
  TempDir state;
  auto runtime = test::make_runtime(state.path());
  std::string wrong_password = "wrong-password-" + test::nonce();
  spec::Environment environment;
  environment.docker.enabled = true;
  environment.docker.base_image = services().private_image_unpulled;
  environment.docker.base_image_registry = credentials(wrong_password);
  environment.python.pip_packages = {"amlnode-testpkg"};
  Progress progress;
  auto start = Clock::now();
  auto result = runtime->ensure_image(request_for(environment), progress.sink());
  REQUIRE_FALSE(result.ok());
  CHECK(std::chrono::duration<double>(Clock::now() - start).count() < 30);
  INFO(result.error().message);
  CHECK(result.error().code == "ImagePullFailed");
  CHECK(contains(result.error().message, "pulling " + services().private_image_unpulled));
  CHECK((contains(result.error().message, "unauthorized") ||
         contains(result.error().message, "authentication")));
  for (const auto& secret : {wrong_password, services().registry_password}) {
    CHECK_FALSE(contains(result.error().message, secret));
    CHECK_FALSE(contains(progress.text, secret));
    CHECK_FALSE(contains(test::all_file_contents(state.path()), secret));
  }

  environment.docker.base_image_registry.reset();
  auto anonymous = runtime->ensure_image(request_for(environment), {});
  REQUIRE_FALSE(anonymous.ok());
  CHECK(anonymous.error().code == "ImagePullFailed");
}

TEST_CASE("images: a failing build ends with the daemon's message", "[docker]") {
  TempDir state;
  auto runtime = test::make_runtime(state.path());
  spec::Environment environment;
  environment.docker.enabled = true;
  // No fresh value here: a failing RUN leaves nothing behind, while a fresh layer before it
  // would leave a dangling image per test run.
  environment.docker.base_dockerfile =
      "FROM " + services().base_image + "\nRUN [\"python\", \"-c\", \"import sys; sys.exit(3)\"]\n";
  Progress progress;
  auto result = runtime->ensure_image(request_for(environment), progress.sink());
  REQUIRE_FALSE(result.ok());
  INFO(result.error().message);
  CHECK(result.error().code == "ImageBuildFailed");
  CHECK(contains(result.error().message, "returned a non-zero code: 3"));
  CHECK(contains(progress.text, "error: "));

  environment.docker.base_dockerfile = "FROM " + services().base_image + "\nBOGUS instruction\n";
  auto unparsable = runtime->ensure_image(request_for(environment), {});
  REQUIRE_FALSE(unparsable.ok());
  CHECK(unparsable.error().code == "ImageBuildFailed");
  CHECK(contains(unparsable.error().message, "unknown instruction"));
}

TEST_CASE("images: a canceled build is abandoned by the daemon and tags nothing", "[docker]") {
  TempDir state;
  auto config = test::runtime_config(state.path());
  auto runtime = test::make_runtime(config);
  spec::Environment environment;
  environment.docker.enabled = true;
  const std::string marker = "amlnode-canceled-build-" + test::nonce();
  // The RUN step says when it runs, then would take 299 s.
  environment.docker.base_dockerfile =
      "FROM " + services().base_image +
      "\nRUN [\"sh\", \"-c\", \"echo ready-$((6*7)); sleep 299; echo " + marker + "\"]\n";
  auto request = request_for(environment);
  bool step_running = false;
  request.canceled = [&] { return step_running; };
  auto started = Clock::now();
  auto result = runtime->ensure_image(request, [&](std::string_view text) {
    if (contains(std::string(text), "ready-42")) step_running = true;
  });
  REQUIRE_FALSE(result.ok());
  INFO(result.error().message);
  CHECK(step_running);
  CHECK(result.error().code == "Canceled");
  CHECK(Clock::now() - started < std::chrono::seconds(60));
  // The daemon stops the step's container once the client has gone.
  CHECK(test::eventually([&] { return test::processes_with_marker(marker).empty(); },
                         std::chrono::seconds(30)));
  auto recipe = make_recipe(request, config.builder);
  REQUIRE(recipe.ok());
  auto images = runtime->list_managed_images();
  REQUIRE(images.ok());
  for (const auto& image : *images) {
    for (const auto& tag : image.tags) CHECK(tag != recipe->tag);
  }
}

// Builds a managed image in its own repository and records its last use `age` hours ago.
std::string managed_image(const DockerRuntimeConfig& config, int age) {
  auto runtime = test::make_runtime(config);
  auto image = runtime->ensure_image(request_for(test::fresh_environment("prune-")), {});
  REQUIRE(image.ok());
  ImageUsage(config.builder.state_dir / "images")
      .record(image->image, std::chrono::system_clock::now() - std::chrono::hours(age));
  return image->image;
}

bool has_tag(const std::vector<ManagedImage>& images, const std::string& tag) {
  for (const auto& image : images) {
    for (const auto& t : image.tags) {
      if (t == tag) return true;
    }
  }
  return false;
}

TEST_CASE("images: prune evicts least-recently-used managed images, never one in use", "[docker]") {
  TempDir state;
  // A repository of this test's own, so images of other tests and runs are out of its reach.
  auto config = test::runtime_config(state.path());
  config.builder.image_repository = "amlnode-prune-" + test::nonce() + "/env";
  auto runtime = test::make_runtime(config);
  auto in_use = managed_image(config, 30);  // the oldest, but a container uses it
  auto old = managed_image(config, 20);
  auto recent = managed_image(config, 1);

  auto plan = test::make_plan(state.path(), {"python", "-c", "pass"});
  auto spec = container_spec_for(plan, test::docker_job({}), in_use, {});
  REQUIRE(spec.ok());
  auto container = runtime->create_container(*spec);
  REQUIRE(container.ok());

  auto listed = runtime->list_managed_images();
  REQUIRE(listed.ok());
  REQUIRE(listed->size() == 3);
  CHECK((*listed)[0].tags[0] == in_use);
  CHECK((*listed)[0].in_use);
  CHECK((*listed)[1].tags[0] == old);
  CHECK((*listed)[2].tags[0] == recent);
  std::uint64_t keep_two = (*listed)[0].size_bytes + (*listed)[2].size_bytes;

  auto report = runtime->prune_images(keep_two);
  REQUIRE(report.ok());
  REQUIRE(report->removed.size() == 1);
  CHECK(report->removed[0].tags[0] == old);
  CHECK(report->bytes_after <= keep_two);
  auto after = runtime->list_managed_images();
  REQUIRE(after.ok());
  CHECK(has_tag(*after, in_use));
  CHECK(has_tag(*after, recent));
  CHECK_FALSE(has_tag(*after, old));

  // A budget of nothing removes all but the image in use; the base image is not managed.
  auto everything = runtime->prune_images(0);
  REQUIRE(everything.ok());
  CHECK(everything->removed.size() == 1);
  CHECK(runtime->list_managed_images()->size() == 1);
  REQUIRE(runtime->remove_container(*container).ok());
  CHECK(runtime->prune_images(0)->removed.size() == 1);
  CHECK(runtime->list_managed_images()->empty());
  auto base = runtime->ensure_image(
      [] {
        ImageRequest request;
        request.base_image = services().base_image;
        return request;
      }(),
      {});
  REQUIRE(base.ok());
  CHECK(base->source == ImageSource::Present);
}

}  // namespace
}  // namespace amlnode::docker
