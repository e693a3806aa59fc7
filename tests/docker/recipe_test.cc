// Image recipes, registry helpers, progress parsing and eviction choice: no daemon needed.

#include <archive.h>
#include <archive_entry.h>

#include <catch2/catch.hpp>
#include <map>

#include "docker/image_builder.h"
#include "docker/image_recipe.h"
#include "docker/progress.h"
#include "docker/registry.h"
#include "tests/support/temp_dir.h"

namespace amlnode::docker {
namespace {

using test::TempDir;

ImageRequest pip_request() {
  ImageRequest request;
  request.base_image = "example.com/team/base:1";
  request.environment.docker.enabled = true;
  request.environment.python.pip_packages = {"numpy>=1.2", "amlnode-testpkg"};
  request.environment.environment_variables = {{"GREETING", "say \"hi\" to $HOME\\x"}};
  return request;
}

std::map<std::string, std::string> untar(const std::string& data) {
  std::map<std::string, std::string> files;
  std::unique_ptr<archive, decltype(&archive_read_free)> tar(archive_read_new(), archive_read_free);
  archive_read_support_format_tar(tar.get());
  REQUIRE(archive_read_open_memory(tar.get(), data.data(), data.size()) == ARCHIVE_OK);
  archive_entry* entry = nullptr;
  while (archive_read_next_header(tar.get(), &entry) == ARCHIVE_OK) {
    std::string content(static_cast<std::size_t>(archive_entry_size(entry)), '\0');
    archive_read_data(tar.get(), content.data(), content.size());
    files[archive_entry_pathname(entry)] = content;
  }
  return files;
}

TEST_CASE("recipe: FROM the base image, then pip with installer options, then ENV", "[unit]") {
  TempDir wheels;
  wheels.write("pkg-1.0-py3-none-any.whl", "wheel bytes");
  BuilderConfig config;
  config.pip_install_options = {"--no-index", "--find-links", kWheelDirInImage};
  config.local_wheel_dir = wheels.path();
  auto recipe = make_recipe(pip_request(), config);
  REQUIRE(recipe.ok());
  const std::string& dockerfile = recipe->dockerfile;
  INFO(dockerfile);
  CHECK(dockerfile.starts_with("FROM example.com/team/base:1\n"));
  CHECK(dockerfile.find("USER root\n") != std::string::npos);
  CHECK(dockerfile.find("COPY amlnode/wheels /amlnode/wheels\n") != std::string::npos);
  CHECK(dockerfile.find(R"(RUN ["python","-m","pip","install","--no-cache-dir",)"
                        R"("--disable-pip-version-check","--no-index","--find-links",)"
                        R"("/amlnode/wheels","numpy>=1.2","amlnode-testpkg"])") !=
        std::string::npos);
  CHECK(dockerfile.find(R"(ENV GREETING="say \"hi\" to \$HOME\\x")") != std::string::npos);
  CHECK(dockerfile.find("FROM") < dockerfile.find("pip"));
  CHECK(dockerfile.find("pip") < dockerfile.find("ENV GREETING"));
  CHECK(recipe->tag.starts_with("amlnode/env:"));
  CHECK(recipe->tag.size() == std::string("amlnode/env:").size() + 32);
  CHECK(recipe->base_image == "example.com/team/base:1");
  CHECK_FALSE(recipe->base_only);

  auto tar = make_context_tar(*recipe, 1 << 20);
  REQUIRE(tar.ok());
  auto files = untar(*tar);
  CHECK(files["Dockerfile"] == dockerfile);
  CHECK(files["amlnode/wheels/pkg-1.0-py3-none-any.whl"] == "wheel bytes");
}

TEST_CASE("recipe: the tag follows everything that goes into the image", "[unit]") {
  TempDir wheels;
  wheels.write("pkg-1.0-py3-none-any.whl", "one");
  BuilderConfig config;
  config.local_wheel_dir = wheels.path();
  auto first = make_recipe(pip_request(), config);
  auto same = make_recipe(pip_request(), config);
  REQUIRE(first.ok());
  REQUIRE(same.ok());
  CHECK(first->tag == same->tag);

  auto other_packages = pip_request();
  other_packages.environment.python.pip_packages.push_back("scipy");
  CHECK(make_recipe(other_packages, config)->tag != first->tag);

  auto other_options = config;
  other_options.pip_install_options = {"--index-url", "http://mirror/simple"};
  CHECK(make_recipe(pip_request(), other_options)->tag != first->tag);

  wheels.write("pkg-1.0-py3-none-any.whl", "two");
  CHECK(make_recipe(pip_request(), config)->tag != first->tag);

  auto other_repository = config;
  other_repository.image_repository = "site/envs";
  CHECK(make_recipe(pip_request(), other_repository)->tag.starts_with("site/envs:"));
}

TEST_CASE("recipe: the default CPU or GPU image is used when the job names none", "[unit]") {
  BuilderConfig config;
  config.default_cpu_image = "mirror/cpu:1";
  config.default_gpu_image = "mirror/gpu:1";
  ImageRequest request;
  request.environment.python.pip_packages = {"x"};
  CHECK(make_recipe(request, config)->dockerfile.starts_with("FROM mirror/cpu:1\n"));
  request.use_gpu = true;
  CHECK(make_recipe(request, config)->dockerfile.starts_with("FROM mirror/gpu:1\n"));
}

TEST_CASE("recipe: an environment with nothing to add uses its base image as is", "[unit]") {
  ImageRequest request;
  request.base_image = "example.com/base:2";
  request.environment.python.user_managed_dependencies = true;
  request.environment.python.pip_packages = {"ignored-when-user-managed"};
  auto recipe = make_recipe(request, BuilderConfig{});
  REQUIRE(recipe.ok());
  CHECK(recipe->base_only);
  CHECK(recipe->tag == "example.com/base:2");
}

TEST_CASE("recipe: a base_dockerfile is the base and the layers follow it", "[unit]") {
  ImageRequest request;
  request.environment.docker.base_dockerfile = "FROM ubuntu:22.04\nUSER nobody";
  request.environment.python.pip_packages = {"requests"};
  auto recipe = make_recipe(request, BuilderConfig{});
  REQUIRE(recipe.ok());
  CHECK(
      recipe->dockerfile.starts_with("FROM ubuntu:22.04\nUSER nobody\n# amlnode layers\n"
                                     "USER root\n"));
  CHECK(recipe->base_image.empty());
  CHECK_FALSE(recipe->base_only);
}

TEST_CASE("recipe: conda packages become an environment on PATH before pip", "[unit]") {
  ImageRequest request;
  request.base_image = "base";
  request.environment.python.channels = {"conda-forge"};
  request.environment.python.conda_packages = {"python=3.10", "numpy"};
  request.environment.python.pip_packages = {"requests"};
  BuilderConfig config;
  config.conda_tool = "micromamba";
  auto recipe = make_recipe(request, config);
  REQUIRE(recipe.ok());
  const auto& dockerfile = recipe->dockerfile;
  INFO(dockerfile);
  CHECK(dockerfile.find(R"(RUN ["micromamba","create","-y","-p","/azureml-envs/amlnode","-c",)"
                        R"("conda-forge","python=3.10","numpy"])") != std::string::npos);
  CHECK(dockerfile.find("ENV PATH=/azureml-envs/amlnode/bin:$PATH\n") != std::string::npos);
  CHECK(dockerfile.find(R"(RUN ["/azureml-envs/amlnode/bin/python","-m","pip")") !=
        std::string::npos);
}

TEST_CASE("recipe: requirement and conda files travel in the build context", "[unit]") {
  TempDir dir;
  ImageRequest request;
  request.base_image = "base";
  request.environment.python.conda_dependencies_file = dir.write("env.yml", "name: x\n");
  request.environment.python.pip_requirements_file = dir.write("req.txt", "requests\n");
  auto recipe = make_recipe(request, BuilderConfig{});
  REQUIRE(recipe.ok());
  INFO(recipe->dockerfile);
  CHECK(recipe->dockerfile.find(R"(RUN ["conda","env","create","-p","/azureml-envs/amlnode",)"
                                R"("-f","/amlnode/conda_dependencies.yml"])") != std::string::npos);
  CHECK(recipe->dockerfile.find(R"("-r","/amlnode/requirements.txt"])") != std::string::npos);
  auto files = untar(*make_context_tar(*recipe, 1 << 20));
  CHECK(files["amlnode/conda_dependencies.yml"] == "name: x\n");
  CHECK(files["amlnode/requirements.txt"] == "requests\n");
}

TEST_CASE("recipe: variables a Dockerfile cannot hold stay out of the image", "[unit]") {
  ImageRequest request;
  request.base_image = "base";
  request.environment.environment_variables = {{"MULTI", "a\nb"}, {"OK", "1"}};
  auto recipe = make_recipe(request, BuilderConfig{});
  REQUIRE(recipe.ok());
  CHECK(recipe->dockerfile.find("MULTI") == std::string::npos);
  CHECK(recipe->dockerfile.find("ENV OK=\"1\"") != std::string::npos);
}

TEST_CASE("recipe: a build context over the limit is an error", "[unit]") {
  TempDir wheels;
  wheels.write("big.whl", std::string(4096, 'x'));
  BuilderConfig config;
  config.local_wheel_dir = wheels.path();
  auto recipe = make_recipe(pip_request(), config);
  REQUIRE(recipe.ok());
  auto tar = make_context_tar(*recipe, 2048);
  REQUIRE_FALSE(tar.ok());
  CHECK(tar.error().code == "ImageBuildFailed");
  CHECK(tar.error().message.find("2048") != std::string::npos);
}

TEST_CASE("registry: image references are taken apart as Docker does", "[unit]") {
  auto plain = parse_image_reference("ubuntu");
  CHECK(plain.domain == "docker.io");
  CHECK(plain.name == "ubuntu");
  CHECK(plain.version() == "latest");
  auto full = parse_image_reference("127.0.0.1:5000/team/img:3.11");
  CHECK(full.domain == "127.0.0.1:5000");
  CHECK(full.name == "127.0.0.1:5000/team/img");
  CHECK(full.tag == "3.11");
  auto port_no_tag = parse_image_reference("registry:5000/img");
  CHECK(port_no_tag.name == "registry:5000/img");
  CHECK(port_no_tag.tag.empty());
  auto digest = parse_image_reference("mcr.microsoft.com/azureml/base@sha256:abc");
  CHECK(digest.domain == "mcr.microsoft.com");
  CHECK(digest.version() == "sha256:abc");
  CHECK(digest.canonical() == "mcr.microsoft.com/azureml/base@sha256:abc");
}

TEST_CASE("registry: auth headers are base64url JSON and passwords are redacted", "[unit]") {
  CHECK(base64url("") == "");
  CHECK(base64url("f") == "Zg==");
  CHECK(base64url("fo") == "Zm8=");
  CHECK(base64url("foo") == "Zm9v");
  CHECK(base64url("\xfb\xff") == "-_8=");
  spec::RegistryDetails credentials{"myregistry.azurecr.io", "user", "s3cret"};
  auto header = registry_auth_header(credentials, parse_image_reference("x/y"));
  CHECK(header.find("s3cret") == std::string::npos);
  CHECK(redact("denied for s3cret and s3cret", credentials) == "denied for ******** and ********");
  CHECK(redact("nothing", std::nullopt) == "nothing");
}

TEST_CASE("progress: JSON lines split across pieces are reassembled", "[unit]") {
  std::vector<nlohmann::json> messages;
  JsonLineReader reader([&](const nlohmann::json& m) { messages.push_back(m); }, 64);
  reader.feed("{\"stream\":\"Step 1/2\\n\"}\r\n{\"str");
  reader.feed("eam\":\"done\"}\n");
  reader.feed("{\"stream\":\"" + std::string(100, 'x') + "\"}\n");  // over the line limit
  reader.feed("not json\n{\"status\":\"tail\"}");
  reader.finish();
  REQUIRE(messages.size() == 3);
  CHECK(messages[0]["stream"] == "Step 1/2\n");
  CHECK(messages[1]["stream"] == "done");
  CHECK(messages[2]["status"] == "tail");
}

TEST_CASE("progress: status lines without redraws reach the sink and errors are kept", "[unit]") {
  std::string shown;
  ProgressRelay relay([&](std::string_view text) { shown += text; },
                      [](std::string text) { return text; });
  relay.handle({{"status", "Pulling from team/img"}, {"id", "3.11"}});
  relay.handle({{"status", "Downloading"}, {"progressDetail", {{"current", 1}}}, {"id", "ab"}});
  relay.handle({{"stream", "Step 1/1 : FROM x\n"}});
  relay.handle({{"aux", {{"ID", "sha256:123"}}}});
  relay.handle({{"error", "boom"}, {"errorDetail", {{"message", "boom in detail"}}}});
  relay.handle({{"error", "second"}});
  CHECK(shown ==
        "3.11: Pulling from team/img\nStep 1/1 : FROM x\nerror: boom in detail\n"
        "error: second\n");
  CHECK(relay.error() == "boom in detail");
  CHECK(relay.image_id() == "sha256:123");
}

ManagedImage image(const std::string& id, std::uint64_t size, int age, bool in_use = false) {
  ManagedImage entry;
  entry.id = id;
  entry.tags = {"amlnode/env:" + id};
  entry.size_bytes = size;
  entry.last_used = SystemTime{} + std::chrono::hours(1000 - age);
  entry.in_use = in_use;
  return entry;
}

TEST_CASE("eviction: least recently used first, in-use images never", "[unit]") {
  std::vector<ManagedImage> images = {image("new", 100, 1), image("oldest", 100, 30, true),
                                      image("old", 100, 20), image("middle", 100, 10)};
  auto victims = choose_evictions(images, 250);
  REQUIRE(victims.size() == 2);
  CHECK(victims[0].id == "old");
  CHECK(victims[1].id == "middle");
  CHECK(choose_evictions(images, 400).empty());
  CHECK(choose_evictions(images, 0).size() == 3);
}

}  // namespace
}  // namespace amlnode::docker
