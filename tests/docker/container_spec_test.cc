// Container specs and docker argument mapping: no daemon needed.

#include "docker/container_spec.h"

#include <catch2/catch.hpp>
#include <cstdlib>

#include "docker/engine_client.h"
#include "executors/plan.h"

namespace amlnode::docker {
namespace {

executors::Plan plan() {
  executors::Plan plan;
  plan.run_id = "run_1:x";
  plan.run_dir = "/state/runs/run_1";
  plan.working_dir = "/state/runs/run_1/wd";
  plan.std_log = "/state/runs/run_1/user_logs/std_log.txt";
  plan.argv = {"python", "train.py", "--lr", "0.1"};
  plan.env = {{"AZUREML_RUN_ID", "run_1"}, {"A", "1"}};
  plan.shm_size_bytes = 1ull << 30;
  plan.inputs = {
      {"data", "/datasets/mnist", "/state/runs/run_1/inputs/data", spec::InputMode::Mount},
      {"copy", "/datasets/copy", "/state/runs/run_1/inputs/copy", spec::InputMode::Download},
      {"out", "/results/out", "/results/out", spec::InputMode::Upload},
      {"inner", "/state/runs/run_1/wd/x", "/state/runs/run_1/inputs/inner",
       spec::InputMode::Mount}};
  return plan;
}

spec::Job job(std::vector<std::string> arguments = {}) {
  spec::Job job;
  job.environment.docker.enabled = true;
  job.environment.docker.arguments = std::move(arguments);
  return job;
}

Result<ContainerSpec> spec_for(const spec::Job& job, int gpus = 0, std::string image = "img:1") {
  ContainerOptions options;
  options.node.gpu_count = gpus;
  return container_spec_for(plan(), job, image, options);
}

TEST_CASE("container spec: the plan's command, environment, folders and labels", "[unit]") {
  auto spec = spec_for(job());
  REQUIRE(spec.ok());
  CHECK(spec->name == "amlnode-run_1-x");
  CHECK(spec->argv == plan().argv);
  CHECK(spec->env == plan().env);
  CHECK(spec->working_dir == "/state/runs/run_1/wd");
  CHECK(spec->labels.at("amlnode.run_id") == "run_1:x");
  CHECK(spec->labels.at("amlnode.managed") == "true");
  auto& host = spec->host_config;
  CHECK(host["Binds"] ==
        nlohmann::json({"/state/runs/run_1:/state/runs/run_1", "/datasets/mnist:/datasets/mnist:ro",
                        "/results/out:/results/out"}));
  CHECK(host["ShmSize"] == (1ull << 30));
  CHECK(host["Init"] == true);
  CHECK_FALSE(host.contains("NetworkMode"));
  CHECK_FALSE(host.contains("DeviceRequests"));

  auto body = create_request_body(*spec);
  CHECK(body["Image"] == "img:1");
  CHECK(body["Cmd"] == nlohmann::json(plan().argv));
  CHECK(body["Env"] == nlohmann::json({"AZUREML_RUN_ID=run_1", "A=1"}));
  CHECK(body["Entrypoint"] ==
        nlohmann::json({"/bin/sh", "-c",
                        "exec \"$0\" \"$@\" >>'/state/runs/run_1/user_logs/std_log.txt' 2>&1"}));
  CHECK_FALSE(body.contains("User"));
}

TEST_CASE("container spec: the log path is quoted for the shell", "[unit]") {
  auto entrypoint = logging_entrypoint("/runs/it's here/std_log.txt");
  CHECK(entrypoint[2] == "exec \"$0\" \"$@\" >>'/runs/it'\\''s here/std_log.txt' 2>&1");
}

TEST_CASE("container spec: the amlnode_run module is mounted and appended to PYTHONPATH",
          "[unit]") {
  auto with_module = plan();
  with_module.python_module_dir = "/opt/amlnode/share/amlnode/python";
  auto spec = container_spec_for(with_module, job(), "img:1", ContainerOptions{});
  REQUIRE(spec.ok());
  CHECK(spec->host_config["Binds"].back() ==
        "/opt/amlnode/share/amlnode/python:/opt/amlnode/share/amlnode/python:ro");
  // The shell sees the image's PYTHONPATH (or the job's, from Env) and appends to it.
  CHECK(create_request_body(*spec)["Entrypoint"][2] ==
        "PYTHONPATH=\"${PYTHONPATH:+$PYTHONPATH:}\"'/opt/amlnode/share/amlnode/python'; "
        "export PYTHONPATH; exec \"$0\" \"$@\" >>'/state/runs/run_1/user_logs/std_log.txt' 2>&1");
  // Without the module (a build that has no share/ folder), nothing is added.
  CHECK(spec_for(job())->host_config["Binds"].size() == 3);
  CHECK_FALSE(spec_for(job())->python_module_dir);
}

TEST_CASE("container spec: distributed runs use the host network", "[unit]") {
  auto nodes = job();
  nodes.node_count = 2;
  CHECK(spec_for(nodes)->host_config["NetworkMode"] == "host");
  auto processes = job();
  processes.distributed.process_count_per_node = 4;
  CHECK(spec_for(processes)->host_config["NetworkMode"] == "host");
}

TEST_CASE("container spec: GPUs are requested when wanted and the node has them", "[unit]") {
  auto gpu_job = job();
  gpu_job.use_gpu = true;
  auto spec = spec_for(gpu_job, 2);
  REQUIRE(spec.ok());
  CHECK(spec->host_config["DeviceRequests"] ==
        nlohmann::json::parse(R"([{"Driver":"nvidia","Count":-1,"Capabilities":[["gpu"]]}])"));

  auto missing = spec_for(gpu_job, 0);
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().code == "GpuNotAvailable");
  CHECK(missing.error().message.find("has none") != std::string::npos);

  CHECK(spec_for(job(), 0, "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.3-cudnn8-ubuntu20.04")
            .error()
            .code == "GpuNotAvailable");
  auto nccl = job();
  nccl.distributed.communication_backend = "NCCL";
  CHECK_FALSE(spec_for(nccl, 0).ok());
  CHECK(spec_for(job({"--gpus", "all"}), 0).error().code == "GpuNotAvailable");
  CHECK(spec_for(job(), 4)->host_config.contains("DeviceRequests") == false);
}

TEST_CASE("container spec: docker arguments map onto HostConfig", "[unit]") {
  ::setenv("AMLNODE_SPEC_TEST_FORWARDED", "from-host", 1);
  auto spec = spec_for(job({"--shm-size=8g",
                            "--ipc",
                            "host",
                            "--net=host",
                            "--cap-add",
                            "SYS_PTRACE",
                            "--cap-drop=NET_RAW",
                            "--privileged",
                            "--ulimit",
                            "memlock=-1",
                            "--ulimit",
                            "nofile=1024:2048",
                            "-e",
                            "X=1",
                            "--env=Y=2",
                            "-eAMLNODE_SPEC_TEST_FORWARDED",
                            "-v",
                            "/data:/data:ro",
                            "--device=/dev/fuse",
                            "-m",
                            "4g",
                            "--cpus=1.5",
                            "--user",
                            "1000:1000",
                            "--security-opt",
                            "seccomp=unconfined",
                            "--init=false",
                            "--gpus",
                            "device=0,1"}),
                       2);
  REQUIRE(spec.ok());
  auto& host = spec->host_config;
  CHECK(host["ShmSize"] == 8ull << 30);
  CHECK(host["IpcMode"] == "host");
  CHECK(host["NetworkMode"] == "host");
  CHECK(host["CapAdd"] == nlohmann::json({"SYS_PTRACE"}));
  CHECK(host["CapDrop"] == nlohmann::json({"NET_RAW"}));
  CHECK(host["Privileged"] == true);
  CHECK(host["Ulimits"] == nlohmann::json::parse(R"([{"Name":"memlock","Soft":-1,"Hard":-1},
                                                     {"Name":"nofile","Soft":1024,"Hard":2048}])"));
  CHECK(host["Binds"].back() == "/data:/data:ro");
  CHECK(host["Devices"] == nlohmann::json::parse(
                               R"([{"PathOnHost":"/dev/fuse","PathInContainer":"/dev/fuse",
                                    "CgroupPermissions":"rwm"}])"));
  CHECK(host["Memory"] == 4ull << 30);
  CHECK(host["NanoCpus"] == 1500000000);
  CHECK(host["SecurityOpt"] == nlohmann::json({"seccomp=unconfined"}));
  CHECK(host["Init"] == false);
  CHECK(host["DeviceRequests"][0]["DeviceIDs"] == nlohmann::json({"0", "1"}));
  CHECK(spec->user == "1000:1000");
  auto has = [&](const std::string& name, const std::string& value) {
    for (const auto& [n, v] : spec->env) {
      if (n == name) return v == value;
    }
    return false;
  };
  CHECK(has("X", "1"));
  CHECK(has("Y", "2"));
  CHECK(has("AMLNODE_SPEC_TEST_FORWARDED", "from-host"));
}

TEST_CASE("container spec: an unsupported docker argument is named", "[unit]") {
  auto spec = spec_for(job({"--ipc=host", "--rm", "-it"}));
  REQUIRE_FALSE(spec.ok());
  CHECK(spec.error().code == "UnsupportedDockerArgument");
  CHECK(spec.error().message.find("'--rm'") != std::string::npos);
  CHECK(spec.error().message.find("--shm-size") != std::string::npos);

  auto missing_value = spec_for(job({"--ipc"}));
  REQUIRE_FALSE(missing_value.ok());
  CHECK(missing_value.error().message.find("'--ipc' needs a value") != std::string::npos);

  auto bad_size = spec_for(job({"--shm-size", "lots"}));
  REQUIRE_FALSE(bad_size.ok());
  CHECK(bad_size.error().message.find("--shm-size 'lots'") != std::string::npos);
}

TEST_CASE("container spec: sizes are read as Docker reads them", "[unit]") {
  CHECK(parse_byte_size("2g") == 2ull << 30);
  CHECK(parse_byte_size("512M") == 512ull << 20);
  CHECK(parse_byte_size("1.5GB") == 3ull << 29);
  CHECK(parse_byte_size("1024") == 1024);
  CHECK(parse_byte_size("10kb") == 10240);
  CHECK_FALSE(parse_byte_size("g").has_value());
  CHECK_FALSE(parse_byte_size("12x").has_value());
}

TEST_CASE("engine: the socket comes from config, then DOCKER_HOST, then the default", "[unit]") {
  CHECK(*resolve_docker_socket("unix:///a.sock", "unix:///b.sock") == "/a.sock");
  CHECK(*resolve_docker_socket("/c.sock", nullptr) == "/c.sock");
  CHECK(*resolve_docker_socket("", "unix:///b.sock") == "/b.sock");
  CHECK(*resolve_docker_socket("", nullptr) == "/var/run/docker.sock");
  CHECK(*resolve_docker_socket("", "") == "/var/run/docker.sock");
  auto tcp = resolve_docker_socket("", "tcp://10.0.0.1:2375");
  REQUIRE_FALSE(tcp.ok());
  CHECK(tcp.error().message.find("DOCKER_HOST is 'tcp://10.0.0.1:2375'") != std::string::npos);
  CHECK_FALSE(resolve_docker_socket("unix://relative", nullptr).ok());
}

TEST_CASE("engine: query values are percent-encoded", "[unit]") {
  CHECK(query_escape(R"({"label":["a=b"]})") == "%7B%22label%22%3A%5B%22a%3Db%22%5D%7D");
  CHECK(path_escape("127.0.0.1:5000/team/img:1") == "127.0.0.1:5000/team/img:1");
  CHECK(path_escape("a b") == "a%20b");
}

}  // namespace
}  // namespace amlnode::docker
