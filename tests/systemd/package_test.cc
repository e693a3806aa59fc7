// The .deb that `cpack -G DEB` makes from the build tree, read back with dpkg-deb.

#include <catch2/catch.hpp>
#include <iostream>

#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

using namespace amlnode;

namespace {

bool have_program(const std::string& name) {
  return test::run_command({"sh", "-c", "command -v " + name}).exit_code == 0;
}

}  // namespace

TEST_CASE("cpack -G DEB packages the binaries, the unit and the config as a conffile",
          "[systemd][package]") {
  if (!have_program("dpkg-deb") || !have_program("dpkg-shlibdeps")) {
    std::cout << "SKIPPED: dpkg-deb and dpkg-shlibdeps are needed (packages dpkg, dpkg-dev)\n";
    return;
  }
  test::TempDir dir;
  std::filesystem::path build(AMLNODE_BINARY_DIR);
  auto packed =
      test::run_command({"cpack", "-G", "DEB", "--config", (build / "CPackConfig.cmake").string(),
                         "-B", dir.path().string()},
                        {}, std::chrono::seconds(300));
  INFO(packed.out << packed.err);
  REQUIRE(packed.exit_code == 0);
  std::filesystem::path deb;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    if (entry.path().extension() == ".deb") deb = entry.path();
  }
  REQUIRE_FALSE(deb.empty());
  CHECK(deb.filename().string().rfind("amlnode_", 0) == 0);

  auto contents = test::run_command({"dpkg-deb", "-c", deb.string()});
  REQUIRE(contents.exit_code == 0);
  INFO(contents.out);
  for (const char* path : {"./usr/bin/amlnode", "./usr/bin/amlnode-shim",
                           "./usr/bin/amlnode-parallel-node", "./usr/bin/amlnode-controlplane",
                           "./lib/systemd/system/amlnode.service", "./etc/amlnode/config.yml"}) {
    CHECK(contents.out.find(std::string(path) + "\n") != std::string::npos);
  }
  // Stripped: the debug information stays in the build tree.
  CHECK(contents.out.find("/usr/lib/debug") == std::string::npos);

  auto fields = test::run_command({"dpkg-deb", "-f", deb.string(), "Package", "Depends"});
  INFO(fields.out);
  CHECK(fields.out.find("Package: amlnode\n") != std::string::npos);
  CHECK(fields.out.find("libc6") != std::string::npos);  // from dpkg-shlibdeps
  CHECK(fields.out.find("adduser") != std::string::npos);

  auto control = dir / "control";
  REQUIRE(test::run_command({"dpkg-deb", "-e", deb.string(), control.string()}).exit_code == 0);
  CHECK(test::slurp(control / "conffiles") == "/etc/amlnode/config.yml\n");
  CHECK(test::slurp(control / "postinst").find("adduser --system") != std::string::npos);
  CHECK(std::filesystem::exists(control / "prerm"));
  CHECK(std::filesystem::exists(control / "postrm"));

  // The unit inside is the one in the source tree.
  auto extracted = dir / "root";
  REQUIRE(test::run_command({"dpkg-deb", "-x", deb.string(), extracted.string()}).exit_code == 0);
  CHECK(test::slurp(extracted / "lib/systemd/system/amlnode.service") ==
        test::slurp(std::filesystem::path(AMLNODE_SOURCE_DIR) / "systemd/amlnode.service"));
  auto version = test::run_command({(extracted / "usr/bin/amlnode").string(), "--version"});
  CHECK(version.exit_code == 0);
}
