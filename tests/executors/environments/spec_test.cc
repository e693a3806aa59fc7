#include "executors/environments/spec.h"

#include <catch2/catch.hpp>

#include "tests/executors/environments/environments_test_support.h"

namespace amlnode::test {
namespace {

constexpr const char* kCondaYaml = R"(name: project_environment
channels:
  - conda-forge
  - defaults
dependencies:
  - python=3.8
  - numpy=1.21
  - pip
  - pip:
      - scikit-learn==1.0.2
      - --extra-index-url https://mirror.example/simple
      - azureml-defaults
)";

// The same environment: keys reordered, dependencies reordered, comments, odd whitespace, a
// different name, flow style for the pip list.
constexpr const char* kCondaYamlReformatted = R"(# the training environment
dependencies:   # what to install
- pip:   [azureml-defaults,   "scikit-learn==1.0.2",  "--extra-index-url   https://mirror.example/simple"]
-   numpy=1.21
- pip
-   python=3.8     # pinned on purpose


channels: [conda-forge, defaults]
name: another_name
)";

std::string hash_of_file(const TempDir& dir, const std::string& name, const std::string& text) {
  return spec_of(conda_file_job(dir.write(name, text))).hash;
}

TEST_CASE("conda YAML: key order, comments and whitespace do not change the hash") {
  TempDir dir;
  auto original = hash_of_file(dir, "a.yml", kCondaYaml);
  auto reformatted = hash_of_file(dir, "b.yml", kCondaYamlReformatted);
  CHECK(original == reformatted);
  CHECK(original.size() == 32);
  CHECK(original.find_first_not_of("0123456789abcdef") == std::string::npos);
}

TEST_CASE("conda YAML: a changed version pin changes the hash") {
  TempDir dir;
  auto original = hash_of_file(dir, "a.yml", kCondaYaml);
  std::string numpy = kCondaYaml;
  numpy.replace(numpy.find("numpy=1.21"), 10, "numpy=1.22");
  std::string sklearn = kCondaYaml;
  sklearn.replace(sklearn.find("scikit-learn==1.0.2"), 19, "scikit-learn==1.0.1");
  CHECK(hash_of_file(dir, "numpy.yml", numpy) != original);
  CHECK(hash_of_file(dir, "sklearn.yml", sklearn) != original);
}

TEST_CASE("conda YAML: channel order counts, since it is conda's priority order") {
  TempDir dir;
  std::string swapped = kCondaYaml;
  swapped.replace(swapped.find("  - conda-forge\n  - defaults"), 28,
                  "  - defaults\n  - conda-forge");
  CHECK(hash_of_file(dir, "swapped.yml", swapped) != hash_of_file(dir, "a.yml", kCondaYaml));
}

TEST_CASE("conda YAML: the canonical spec keeps channels, packages, pip and other keys") {
  TempDir dir;
  auto file = dir.write("env.yml", std::string(kCondaYaml) + "variables:\n  MY_FLAG: '1'\n");
  auto spec = spec_of(conda_file_job(file));
  REQUIRE(spec.kind == executors::EnvironmentKind::Conda);
  REQUIRE(spec.conda);
  CHECK(spec.conda->from_file);
  CHECK(spec.conda->channels == std::vector<std::string>{"conda-forge", "defaults"});
  CHECK(spec.conda->packages == std::vector<std::string>{"numpy=1.21", "pip", "python=3.8"});
  CHECK(spec.conda->extra == nlohmann::json{{"variables", {{"MY_FLAG", "1"}}}});
  CHECK(spec.pip.packages == std::vector<std::string>{"azureml-defaults", "scikit-learn==1.0.2"});
  CHECK(spec.pip.options ==
        std::vector<std::string>{"--extra-index-url https://mirror.example/simple"});
  CHECK(spec.identity["platform"] == envs::platform_tag());
}

TEST_CASE("an inline conda spec and the same spec in a file have the same identity") {
  TempDir dir;
  auto inline_job = conda_job({"conda-forge", "defaults"}, {"python=3.8", "numpy=1.21", "pip"},
                              {"scikit-learn==1.0.2", "azureml-defaults"});
  inline_job.environment.python.pip_options = {"--extra-index-url https://mirror.example/simple"};
  CHECK(spec_of(inline_job).hash == hash_of_file(dir, "a.yml", kCondaYaml));
}

TEST_CASE("pip requirement files count by content: comments do not, pins do") {
  TempDir dir;
  dir.write("common.txt", "requests==2.31.0  # http\n");
  auto job = pip_job({"numpy==1.26.0"});
  job.environment.python.pip_requirements_file =
      dir.write("requirements.txt", "# training\n-r common.txt\npandas==2.1.0\n\n");
  auto original = spec_of(job);
  CHECK(original.pip.requirement_files ==
        std::vector<std::filesystem::path>{dir / "requirements.txt"});
  CHECK(original.identity["pip"]["packages"] ==
        nlohmann::json{"numpy==1.26.0", "pandas==2.1.0", "requests==2.31.0"});

  dir.write("requirements.txt", "pandas==2.1.0   # data frames\n-r common.txt\n");
  CHECK(spec_of(job).hash == original.hash);

  dir.write("common.txt", "requests==2.32.0\n");
  CHECK(spec_of(job).hash != original.hash);
}

TEST_CASE("a pip-only spec is made from the system python, whose resolved path counts") {
  TempDir dir;
  auto spec = spec_of(pip_job({"b==1", "a==2"}));
  CHECK(spec.kind == executors::EnvironmentKind::Pip);
  CHECK_FALSE(spec.conda);
  CHECK(spec.pip.packages == std::vector<std::string>{"a==2", "b==1"});
  CHECK(spec.base_python == std::filesystem::canonical("/usr/bin/python3"));
  CHECK(spec.identity["base_python"] == spec.base_python.string());

  auto link = dir / "python3";
  std::filesystem::create_symlink("/usr/bin/python3", link);
  CHECK(spec_of(pip_job({"a==2", "b==1"}), envs::SpecOptions{link}).hash == spec.hash);
  CHECK(spec_of(pip_job({"a==2", "b==1"}), envs::SpecOptions{"/opt/other/python3"}).hash !=
        spec.hash);
}

TEST_CASE("a user-managed environment is not built") {
  auto job = pip_job({"numpy"});
  job.environment.python.user_managed_dependencies = true;
  auto spec = envs::environment_spec(job);
  REQUIRE_FALSE(spec);
  CHECK(spec.error().code == "EnvironmentNotManaged");
}

TEST_CASE("a conda file that is not valid says where") {
  TempDir dir;
  auto bad_yaml = envs::environment_spec(conda_file_job(dir.write("bad.yml", "channels: [a\n")));
  REQUIRE_FALSE(bad_yaml);
  CHECK(bad_yaml.error().code == "InvalidCondaDependencies");
  CHECK(bad_yaml.error().message.find("bad.yml:") != std::string::npos);

  auto bad_dependency = envs::environment_spec(
      conda_file_job(dir.write("dep.yml", "dependencies:\n  - numpy\n  - {conda: [x]}\n")));
  REQUIRE_FALSE(bad_dependency);
  CHECK(bad_dependency.error().message.find("dep.yml:3") != std::string::npos);

  auto missing = envs::environment_spec(conda_file_job(dir / "missing.yml"));
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code == "InvalidCondaDependencies");
}

TEST_CASE("requirement files that include each other in a cycle are reported") {
  TempDir dir;
  dir.write("a.txt", "-r b.txt\n");
  dir.write("b.txt", "-r a.txt\n");
  auto job = pip_job({});
  job.environment.python.pip_requirements_file = dir / "a.txt";
  auto spec = envs::environment_spec(job);
  REQUIRE_FALSE(spec);
  CHECK(spec.error().code == "InvalidPipRequirements");
}

TEST_CASE("entries are normalised: surrounding and repeated whitespace does not count") {
  CHECK(envs::normalise_entry("  numpy   >=1.2 \t") == "numpy >=1.2");
  CHECK(envs::normalise_entry("   ") == "");
}

}  // namespace
}  // namespace amlnode::test
