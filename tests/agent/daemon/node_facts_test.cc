// The node's facts as registration sends them, and the address its peers reach it on.

#include "agent/daemon/node_facts.h"

#include <catch2/catch.hpp>

using namespace amlnode::agent;

TEST_CASE("a node's default address is the one it reaches the control plane from",
          "[node_facts]") {
  auto facts = collect_node_facts({}, 22);
  // The route to one of this machine's own addresses leaves from that address.
  for (const auto& ip : facts.ips) {
    if (ip.find(':') != std::string::npos) continue;
    CHECK(route_address_to(ip, "8631") == ip);
  }
  // A control plane on loopback says nothing about where peers reach the node.
  CHECK(route_address_to("127.0.0.1", "8631").empty());
}

TEST_CASE("the node's address goes first among those it registers", "[node_facts]") {
  NodeFacts facts;
  facts.ips = {"10.0.0.4", "10.1.0.4"};
  put_address_first(facts, "10.1.0.4");
  CHECK(facts.ips == std::vector<std::string>{"10.1.0.4", "10.0.0.4"});
  put_address_first(facts, "192.168.1.9");
  CHECK(facts.ips == std::vector<std::string>{"192.168.1.9", "10.1.0.4", "10.0.0.4"});
  put_address_first(facts, "");
  CHECK(facts.ips.size() == 3);
}
