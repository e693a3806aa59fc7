// A registry password never appears in a diagnostic, whatever else is wrong with the file.

#include "tests/spec/spec_test_support.h"

using namespace amlnode::spec;
using namespace amlnode::spec::testing;

namespace {

constexpr const char* kPassword = "hunter2-Sup3rS3cret";

void check_no_secret(const LoadResult& result) {
  for (const auto* diagnostics : {&result.errors, &result.warnings}) {
    for (const Diagnostic& diagnostic : *diagnostics) {
      INFO(diagnostic.to_string());
      CHECK(diagnostic.to_string().find("hunter2") == std::string::npos);
    }
  }
}

std::string with_password(std::string text) {
  for (auto at = text.find("PASSWORD"); at != std::string::npos; at = text.find("PASSWORD")) {
    text.replace(at, 8, kPassword);
  }
  return text;
}

}  // namespace

TEST_CASE("registry passwords never reach a diagnostic", "[spec][secrets]") {
  struct Case {
    std::string file;
    std::string content;
  };
  auto c = GENERATE(values<Case>({
      {"job.yml",
       "entry_script: train.py\nimage_registry_details: {username: me, password: PASSWORD}\n"},
      {"job.yml",
       "entry_script: train.py\nimage_registry_details: {address: r.io, password: PASSWORD}\n"},
      {"job.yml",
       "entry_script: train.py\nimage_registry_details: {address: r.io, username: u, "
       "password: [PASSWORD]}\n"},
      {"job.yml",
       "entry_script: train.py\nimage_registry_details: {address: r.io, username: u, "
       "password: {PASSWORD: 1}}\n"},
      {"job.yml",
       "entry_script: train.py\nuser_managed: true\nimage_registry_details: {address: "
       "r.io, username: u, password: PASSWORD}\nenvironment_definition: {name: x}\n"},
      {"job.yml",
       "entry_script: train.py\nenvironment_definition:\n  docker:\n"
       "    base_image_registry: {address: r.io, username: u, password: PASSWORD, "
       "pasword: PASSWORD}\n"},
      {"job.yml",
       "entry_script: train.py\nimage_registry_details: {address: r.io, username: u, "
       "password: \"PASSWORD\n"},
      {"job.yml",
       "entry_script: train.py\nimage_registry_details: {address: r.io, username: u, "
       "password: PASSWORD}}\n"},
      {"job.json",
       R"({"entry_script": "train.py", "image_registry_details": {"password": "PASSWORD)"},
      {"job.yml",
       "entry_script: train.py\nimage_registry_details: {address: r.io, username: u, "
       "password: \"PASSWORD\\qPASSWORD\\uZZZZ\"}\n"},
      {"job.json", R"({"image_registry_details": {"password": PASSWORD}})"},
      {"job.json", R"({"image_registry_details": {"password": "PASSWORD"} "x": 1})"},
      {"job.runconfig",
       "script: train.py\nenvironment:\n  docker:\n    baseImageRegistry:\n"
       "      password: PASSWORD\n      passwrd: x\n"},
      {"job.runconfig",
       "script: train.py\nenvironment:\n  docker:\n    baseImageRegistry:\n"
       "      address: r.io\n      username: u\n      password: [PASSWORD]\n"},
  }));
  Project project;
  auto result = project.load(c.file, with_password(c.content));
  INFO(listing(result.errors));
  CHECK_FALSE(result.errors.empty());
  check_no_secret(result);
}

TEST_CASE("a valid password is loaded as given", "[spec][secrets]") {
  Project project;
  auto result =
      project.load("job.yml", with_password("entry_script: train.py\nimage_registry_details:"
                                            " {address: r.io, username: u, password: PASSWORD}\n"));
  Job job = require_job(result);
  REQUIRE(job.environment.docker.base_image_registry);
  CHECK(job.environment.docker.base_image_registry->password == kPassword);
}
