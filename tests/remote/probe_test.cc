// The probe's output read back, and the rules a host must meet to take the agent.

#include "remote/probe.h"

#include <catch2/catch.hpp>

using namespace amlnode;

namespace {

const char* kUbuntu =
    "os_id=ubuntu\nos_version=22.04\nos_name=Ubuntu 22.04.3 LTS\narch=x86_64\nuid=1000\n"
    "sudo=yes\nfree_kib=20971520\ndocker=/usr/bin/docker\nconda=\nsystemd=yes\n"
    "agent_version=\nprobe=done\n";

}  // namespace

TEST_CASE("a probe's output becomes the host's facts", "[remote][probe]") {
  auto facts = remote::parse_probe(kUbuntu);
  REQUIRE(facts.ok());
  CHECK(facts->os_id == "ubuntu");
  CHECK(facts->os_name == "Ubuntu 22.04.3 LTS");
  CHECK(facts->passwordless_sudo);
  CHECK_FALSE(facts->root);
  CHECK(facts->free_bytes == 20971520LL * 1024);
  CHECK(facts->docker == "/usr/bin/docker");
  CHECK(facts->conda.empty());
  CHECK(facts->systemd);
  CHECK(remote::check_host(*facts, "x86_64").ok());
  // A probe cut short is no probe.
  auto cut = remote::parse_probe("os_id=ubuntu\narch=x86_64\n");
  REQUIRE_FALSE(cut.ok());
  CHECK_THAT(cut.error().message, Catch::StartsWith("the probe did not run to its end"));
}

TEST_CASE("a host is refused for what it lacks, named", "[remote][probe]") {
  auto facts = *remote::parse_probe(kUbuntu);
  auto refused = [&](remote::HostFacts changed, const std::string& arch = "x86_64") {
    auto checked = remote::check_host(changed, arch);
    REQUIRE_FALSE(checked.ok());
    CHECK(checked.error().code == remote::kProbeRefused);
    return checked.error().message;
  };
  auto other = facts;
  other.os_id = "rhel";
  other.os_name = "Red Hat Enterprise Linux 9";
  CHECK_THAT(refused(other), Catch::StartsWith("not Ubuntu or Debian"));
  CHECK_THAT(refused(facts, "aarch64"), Catch::Contains("built for aarch64"));
  auto no_sudo = facts;
  no_sudo.passwordless_sudo = false;
  CHECK_THAT(refused(no_sudo), Catch::StartsWith("no sudo"));
  auto root = no_sudo;
  root.root = true;
  CHECK(remote::check_host(root, "x86_64").ok());
  auto full = facts;
  full.free_bytes = 100 << 20;
  CHECK_THAT(refused(full), Catch::StartsWith("disk full: 100 MiB free"));
}
