// The same protocol over HTTPS when the server has a certificate and key.

#include <catch2/catch.hpp>

#include "tests/controlplane/cp_test_support.h"
#include "tests/support/process.h"

using namespace amlnode::controlplane;
using namespace amlnode::controlplane::test;

TEST_CASE("the control plane speaks HTTPS with a certificate and key", "[tls]") {
  amlnode::test::TempDir certs;
  auto made = amlnode::test::run_command({"openssl", "req", "-x509", "-newkey", "rsa:2048",
                                          "-nodes", "-days", "1", "-subj", "/CN=localhost",
                                          "-keyout", (certs / "key.pem").string(), "-out",
                                          (certs / "cert.pem").string()});
  INFO(made.err);
  REQUIRE(made.exit_code == 0);

  TestServer server([&](ServerOptions& options) {
    options.tls = TlsFiles{certs / "cert.pem", certs / "key.pem"};
  });
  auto token = server.make_registration_token("cpu");
  auto registered = server.user().post("/v1/nodes/register", token, {{"hostname", "tls-node"}});
  REQUIRE(registered.status == 200);
  NodeClient node(server.port(), {registered.json()["node_id"], registered.json()["node_token"]},
                  /*tls=*/true);
  CHECK(node.heartbeat().status == 200);
  auto run_id = server.queue_run("cpu");
  REQUIRE(node.lease().json()["runs"].size() == 1);
  CHECK(node.append(run_id, "user_logs/std_log.txt", 0, 1, "over tls").json()["length"] == 8);
  // A chunk of several MiB, read straight into its buffer through the TLS layer, arrives whole.
  std::string big(5 << 20, 'x');
  for (std::size_t i = 0; i < big.size(); i += 4096)
    big[i] = static_cast<char>('a' + i / 4096 % 26);
  CHECK(node.append(run_id, "user_logs/std_log.txt", 8, 1, big).json()["length"] == 8 + big.size());
  auto tail = server.user().get(
      "/v1/runs/" + run_id + "/logs/user_logs/std_log.txt?offset=" + std::to_string(1 << 20),
      server.user_token());
  CHECK(tail.body == big.substr((1 << 20) - 8, 4 << 20));

  // Plain HTTP to the TLS port gets no answer, only a closed connection.
  auto plain = raw_exchange(server.port(), "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(plain.closed);
  CHECK(plain.received.find("HTTP/1.1 200") == std::string::npos);
}

TEST_CASE("a missing certificate fails start-up with a message", "[tls]") {
  amlnode::test::TempDir dir;
  ServerOptions options;
  options.data_dir = dir / "data";
  options.tls = TlsFiles{dir / "missing.pem", dir / "missing-key.pem"};
  ControlPlaneServer server(options);
  auto started = server.start();
  REQUIRE_FALSE(started.ok());
  CHECK(started.error().message.find("missing.pem") != std::string::npos);
}
