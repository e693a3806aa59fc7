// Whole-file problems: unreadable, empty or malformed files, and input meant to break the parser.

#include <random>

#include "spec/tree.h"
#include "spec/values.h"
#include "tests/spec/spec_test_support.h"

using namespace amlnode::spec;
using namespace amlnode::spec::testing;
namespace fs = std::filesystem;

namespace {

const fs::path kFixture = fs::path(AMLNODE_SOURCE_DIR) / "tests" / "spec" / "fixtures" /
                          "sklearn-project" / ".azureml" / "train.runconfig";

// The only whole-file diagnostic of a failed load.
std::string only_error(const LoadResult& result) {
  INFO(listing(result.errors));
  REQUIRE(result.errors.size() == 1);
  CHECK(result.errors[0].path.empty());
  CHECK_FALSE(result.job);
  return result.errors[0].message;
}

}  // namespace

TEST_CASE("malformed YAML is reported with its line and column", "[spec][syntax]") {
  Project project;
  struct Case {
    std::string yaml;
    std::string where;
  };
  auto c = GENERATE(values<Case>({
      {"entry_script: train.py\nnode_count: [1,\n", "line 3, column 1"},
      {"entry_script: train.py\nscript_params: {a: 1\n", "line 3, column 1"},
      {"entry_script: train.py\n  node_count: 1\n", "line 2, column 13"},
      {"entry_script: train.py\nnode_count: 1: 2\n", "line 2, column 14"},
      {"entry_script: train.py\nconda_packages:\n  - numpy\n  pip: x\n", "line 4, column 3"},
      // yaml-cpp's parser would report empty documents here forever.
      {",\n", "line 1, column 1"},
      {"entry_script: train.py\n---\n, x\n", "line 3, column 1"},
      {"entry_script: &a [*a]\n", "line 1, column 19"},
  }));
  std::string message = only_error(project.load("job.yml", c.yaml));
  CHECK_THAT(message, Catch::Contains("malformed YAML at " + c.where + ": "));
}

TEST_CASE("malformed JSON is reported with its line and column", "[spec][syntax]") {
  Project project;
  struct Case {
    std::string json;
    std::string message;
  };
  auto c = GENERATE(values<Case>({
      {"{\"entry_script\": \"train.py\",\n  \"node_count\": }",
       "malformed JSON at line 2, column 17: syntax error while parsing value - unexpected '}'; "
       "expected '[', '{', or a literal"},
      {"{\"entry_script\": \"train.py\"\n\n   \"node_count\": 2}",
       "malformed JSON at line 3, column 15: syntax error while parsing object - unexpected "
       "string literal; expected '}'"},
      {"{\"entry_script\": \"train.py\", \"script_params\": {\"--x\": tru}}",
       "malformed JSON at line 1, column 58: syntax error while parsing value - invalid literal"},
      {"{\"entry_script\": \"tr\xc3\xa4in.py\",\n\"x\": ]}",
       "malformed JSON at line 2, column 6: "},
      {"{\"entry_script\": \"train.py\"} trailing", "malformed JSON at line 1, column 32: "},
  }));
  std::string message = only_error(project.load("job.json", c.json));
  CHECK_THAT(message, Catch::StartsWith(c.message));
}

TEST_CASE("duplicate keys are errors", "[spec][syntax]") {
  Project project;
  auto yaml = project.load("job.yml", "entry_script: train.py\nnode_count: 1\nnode_count: 2\n");
  CHECK(find(yaml.errors, "node_count", "given twice (lines 2 and 3)"));
  auto nested = project.load("job.yml", "entry_script: train.py\ninputs:\n  a: x\n  a: y\n");
  CHECK(find(nested.errors, "inputs.a", "given twice"));
  auto json =
      project.load("job.json", R"({"entry_script": "train.py", "inputs": {"a": "x", "a": "y"}})");
  CHECK(find(json.errors, "inputs.a", "given twice"));
}

TEST_CASE("missing, empty and non-mapping files are clear errors", "[spec][syntax]") {
  Project project;
  SECTION("missing") {
    std::string message = only_error(load_job_file(project.root() / "nope.yml"));
    CHECK_THAT(message, Catch::Contains("cannot read the job file") &&
                            Catch::Contains("nope.yml") &&
                            Catch::Contains("No such file or directory"));
  }
  SECTION("a directory") {
    std::string message = only_error(load_job_file(project.root()));
    CHECK_THAT(message, Catch::Contains("cannot read the job file"));
  }
  SECTION("too large") {
    std::string huge = "entry_script: train.py\n# " + std::string(5 << 20, 'x') + "\n";
    CHECK_THAT(only_error(project.load("job.yml", huge)),
               Catch::Contains("cannot read the job file") && Catch::Contains("larger than"));
  }
  SECTION("empty, blank or only comments") {
    auto content = GENERATE(as<std::string>{}, "", "  \n\n", "# nothing here\n", "---\n", "~\n");
    std::string message = only_error(project.load("job.yml", content));
    CHECK_THAT(message, Catch::Contains("is empty"));
  }
  SECTION("empty JSON") {
    CHECK_THAT(only_error(project.load("job.json", " \n")), Catch::Contains("is empty"));
  }
  SECTION("a list or a scalar at the top level") {
    CHECK(only_error(project.load("job.yml", "- entry_script: train.py\n")) ==
          "expected a mapping of job fields at the top level of " +
              (project.root() / "job.yml").string() + ", got a list");
    CHECK_THAT(only_error(project.load("job.json", "42")), Catch::EndsWith("got a single value"));
  }
  SECTION("several YAML documents") {
    CHECK(only_error(project.load("job.yml", "entry_script: a.py\n---\nentry_script: b.py\n")) ==
          "the file holds more than one YAML document; a job file is one document");
  }
  SECTION("empty documents after the job are fine") {
    CHECK(project.load("job.yml", "---\nentry_script: train.py\n---\n...\n---\n").ok());
  }
}

TEST_CASE("aliases that expand without bound are refused", "[spec][syntax]") {
  Project project;
  SECTION("an alias inside its own anchor") {
    std::string message = only_error(project.load("job.yml", "entry_script: &a [*a]\n"));
    CHECK_THAT(message, Catch::Contains("an alias refers to an anchor that is not finished yet"));
  }
  SECTION("aliases of finished anchors are copies") {
    Job job =
        require_job(project.load("job.yml",
                                 "entry_script: train.py\nenvironment_variables: &vars {A: 1}\n"
                                 "environment_definition: {environment_variables: *vars}\n"));
    CHECK(job.environment_variables == EnvVars{{"A", "1"}});
    CHECK(job.environment.environment_variables == EnvVars{{"A", "1"}});
  }
  SECTION("a billion laughs") {
    std::string yaml = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
    for (int i = 1; i < 9; ++i) {
      std::string previous = "*a" + std::to_string(i - 1);
      yaml += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [" + previous;
      for (int j = 1; j < 10; ++j) yaml += ", " + previous;
      yaml += "]\n";
    }
    std::string message = only_error(project.load("job.yml", yaml));
    CHECK_THAT(message, Catch::Contains("values"));
  }
  SECTION("deep nesting") {
    std::string deep =
        "entry_script: train.py\nx: " + std::string(5000, '[') + std::string(5000, ']');
    CHECK_FALSE(project.load("job.yml", deep).ok());
    std::string json = "{\"x\": " + std::string(5000, '[') + std::string(5000, ']') + "}";
    CHECK_THAT(only_error(project.load("job.json", json)), Catch::Contains("nests deeper than"));
  }
}

TEST_CASE("truncated and corrupted files never crash or throw", "[spec][syntax]") {
  const std::string runconfig = amlnode::test::slurp(kFixture);
  const std::string native = R"(entry_script: train.py
script_params: {--lr: 0.01, --fast: true}
environment_definition:
  python: {conda_dependencies: {dependencies: [python=3.8, {pip: [numpy]}]}}
  docker: {enabled: true, base_image_registry: {address: r.io, username: u, password: p}}
inputs: {train: {path: data, mode: download}}
)";
  const std::string json = R"({"entry_script": "train.py", "node_count": 2, )"
                           R"("distributed_training": {"type": "pytorch", "process_count": 4}, )"
                           R"("inputs": {"d": "data"}})";
  Project project;
  project.write("data/x.csv", "1\n");

  auto check_loads = [&](const std::string& name, const std::string& content) {
    LoadResult result;
    REQUIRE_NOTHROW(result = load_job_text(content, project.root() / name));
    // A result is either a job or a reason, and the reason is about the file, not the loader.
    CHECK(result.ok() != !result.errors.empty());
    for (const Diagnostic& error : result.errors) {
      INFO(error.to_string());
      CHECK(error.message.find("internal error") == std::string::npos);
    }
  };
  for (const auto& [name, text] : {std::pair{"job.runconfig", runconfig},
                                   std::pair{"job.yml", native}, std::pair{"job.json", json}}) {
    for (std::size_t length = 0; length <= text.size(); length += 7) {
      check_loads(name, text.substr(0, length));
    }
    std::mt19937 random(1234);
    for (int round = 0; round < 300; ++round) {
      std::string corrupted = text;
      for (int flips = 0; flips < 4; ++flips) {
        corrupted[random() % corrupted.size()] = static_cast<char>(random() % 256);
      }
      check_loads(name, corrupted);
    }
  }
  std::mt19937 random(99);
  for (int round = 0; round < 300; ++round) {
    std::string garbage(random() % 200, '\0');
    for (char& c : garbage) c = static_cast<char>(random() % 256);
    check_loads(round % 2 ? "garbage.json" : "garbage.yml", garbage);
  }
}

TEST_CASE("a NUL byte in a variable is refused, and a message never ends at one", "[spec]") {
  Project project;
  project.write("train.py", "print(1)\n");
  std::string value_with_nul =
      std::string(R"({"entry_script": "train.py", "environment_variables": {"A": "x)") + "\\u0000" +
      R"(y"}})";
  auto refused = load_job_text(value_with_nul, project.root() / "job.json");
  REQUIRE(refused.errors.size() == 1);
  CHECK(refused.errors[0].path == "environment_variables.A");
  CHECK_THAT(refused.errors[0].message, Catch::Contains("contains a NUL byte (at byte 1)"));

  std::string name_with_nul =
      std::string(R"({"entry_script": "train.py", "environment_variables": {"A)") + "\\u0000" +
      R"(B": "1"}})";
  auto named = load_job_text(name_with_nul, project.root() / "job.json");
  REQUIRE(named.errors.size() == 1);
  std::string text = named.errors[0].to_string();
  CHECK(text.find('\0') == std::string::npos);
  CHECK_THAT(text, Catch::Contains("environment_variables[\"A\\x00B\"]"));
  CHECK_THAT(text, Catch::Contains("expected a variable name"));
}

TEST_CASE("long values are checked in one pass without recursing per character", "[spec][syntax]") {
  // A job file may hold 4 MiB. Number, size and name rules once went through std::regex, whose
  // libstdc++ engine recursed per character: a run of 100,000 digits overflowed the stack.
  Project project;
  const std::string digits(1'000'000, '7');
  const std::string letters(1'000'000, 'a');

  auto size = project.load("job.yml", "entry_script: train.py\nshm_size: " + digits + "\n");
  CHECK(find(size.errors, "shm_size", "expected a size"));

  auto parallel =
      project.load("job.yml", "entry_script: train.py\nparallel_run: {error_threshold: " + digits +
                                  ", allowed_failed_percent: 0." + digits + ", name: " + letters +
                                  ", output_action: append_row}\n");
  CHECK(find(parallel.errors, "parallel_run.error_threshold", "expected an integer >= -1"));
  CHECK(find(parallel.errors, "parallel_run.name", "expected a step name"));
  CHECK(parallel.errors.size() == 2);  // the long fraction is a percentage under 1

  // YAML allows plain keys of at most 1024 characters, JSON any length.
  Job job = require_job(project.load("job.json", R"({"entry_script": "train.py", )"
                                                 R"("environment_variables": {")" +
                                                     letters + R"(": "x"}})"));
  REQUIRE(job.environment_variables.size() == 1);
  CHECK(job.environment_variables[0].first == letters);
  auto input = project.load(
      "job.json", R"({"entry_script": "train.py", "inputs": {")" + letters + R"(-": "data"}})");
  CHECK_FALSE(input.ok());
}

TEST_CASE("the number and size rules match what they did as regular expressions", "[spec]") {
  using namespace amlnode::spec::detail;
  for (const char* text : {"0", "-1", "+42", "007"}) CHECK(looks_like_integer(text));
  for (const char* text : {"", "-", "+", "1-", "1.0", " 1", "0x1", "1e3"})
    CHECK_FALSE(looks_like_integer(text));
  for (const char* text : {"1", "1.", ".5", "-.5", "+1.25", "1e3", "1.5E-7", ".5e+2", "3."})
    CHECK(looks_like_float(text));
  for (const char* text : {"", ".", "-.", "e3", "1e", "1e+", "1.2.3", "..5", "1 ", "inf", "NaN"})
    CHECK_FALSE(looks_like_float(text));
  CHECK(parse_size("2g") == 2ull << 30);
  CHECK(parse_size("512MB") == 512ull << 20);
  CHECK(parse_size("3Kb") == 3ull << 10);
  CHECK(parse_size("100b") == 100u);
  CHECK(parse_size("1073741824") == 1073741824u);
  for (const char* text : {"", "g", "0", "0g", "2gib", "2 g", "-2g", "2bb", "17179869184g"})
    CHECK_FALSE(parse_size(text));
  CHECK(is_variable_name("_A1"));
  CHECK_FALSE(is_variable_name("1A"));
  CHECK_FALSE(is_variable_name("MY-VAR"));
  CHECK(is_input_name("1_a"));
  CHECK_FALSE(is_input_name("a.b"));
  CHECK(is_step_name("step-1"));
  CHECK_FALSE(is_step_name("st"));
  CHECK_FALSE(is_step_name("Step"));
  CHECK_FALSE(is_step_name(std::string(33, 'a')));
}
