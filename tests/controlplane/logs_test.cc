// Log appends at an offset: exactly once across retries, and stream names that stay inside the run.

#include <catch2/catch.hpp>
#include <future>
#include <thread>

#include "controlplane/log_streams.h"
#include "tests/controlplane/cp_test_support.h"

using namespace amlnode::controlplane;
using namespace amlnode::controlplane::test;

namespace {

struct LeasedRun {
  TestServer server;
  NodeClient node = server.node("cpu");
  std::string run_id = server.queue_run("cpu");
  LeasedRun() { REQUIRE(node.lease().json()["runs"].size() == 1); }

  HttpResponse read(const std::string& stream, std::uint64_t offset = 0) {
    return server.user().get(
        "/v1/runs/" + run_id + "/logs/" + stream + "?offset=" + std::to_string(offset),
        server.user_token());
  }
};

constexpr const char* kStd = "user_logs/std_log.txt";

}  // namespace

TEST_CASE("log chunks are appended exactly once", "[logs]") {
  LeasedRun run;
  auto& node = run.node;
  auto length = [](const HttpResponse& r) { return r.json()["length"].get<std::uint64_t>(); };

  REQUIRE(length(node.append(run.run_id, kStd, 0, 1, "hello ")) == 6);
  SECTION("a duplicate chunk is skipped") {
    auto again = node.append(run.run_id, kStd, 0, 1, "hello ");
    CHECK(again.status == 200);
    CHECK(length(again) == 6);
    CHECK(run.read(kStd).body == "hello ");
  }
  SECTION("an overlapping chunk adds only its new bytes") {
    CHECK(length(node.append(run.run_id, kStd, 3, 1, "lo world")) == 11);
    CHECK(run.read(kStd).body == "hello world");
  }
  SECTION("a chunk past the end is refused with the length to resend from") {
    auto gap = node.append(run.run_id, kStd, 10, 1, "lost?");
    CHECK(gap.status == 409);
    CHECK(length(gap) == 6);
    CHECK(run.read(kStd).body == "hello ");
  }
  SECTION("an empty chunk at 0 asks for the length") {
    CHECK(length(node.append(run.run_id, kStd, 0, 1, "")) == 6);
  }
  SECTION("the stream is the concatenation of the chunks, whatever the retries") {
    std::string expected = "hello ";
    std::uint64_t offset = 6;
    for (int i = 0; i < 50; ++i) {
      std::string chunk = "line " + std::to_string(i) + "\n";
      expected += chunk;
      // Every chunk is sent twice, and every fifth once more overlapping the previous one.
      CHECK(length(node.append(run.run_id, kStd, offset, 1, chunk)) == offset + chunk.size());
      CHECK(length(node.append(run.run_id, kStd, offset, 1, chunk)) == offset + chunk.size());
      if (i % 5 == 0) {
        auto overlap = expected.substr(offset - 3);
        CHECK(length(node.append(run.run_id, kStd, offset - 3, 1, overlap)) == expected.size());
      }
      offset += chunk.size();
    }
    CHECK(run.read(kStd).body == expected);
    auto listed =
        run.server.user().get("/v1/runs/" + run.run_id + "/logs", run.server.user_token());
    CHECK(listed.json()["streams"] == nlohmann::json{{kStd, expected.size()}});
  }
}

TEST_CASE("reads start at an offset and say where the stream ends", "[logs]") {
  LeasedRun run;
  REQUIRE(run.node.append(run.run_id, kStd, 0, 1, "0123456789").status == 200);
  auto tail = run.read(kStd, 4);
  CHECK(tail.body == "456789");
  CHECK(tail.header("x-amlnode-length") == "10");
  CHECK(tail.header("x-amlnode-next-offset") == "10");
  CHECK(run.read(kStd, 10).body.empty());
  CHECK(run.read(kStd, 99).body.empty());
  CHECK(run.read("system_logs/none.txt").body.empty());
}

TEST_CASE("a log read long-polls until bytes arrive", "[logs]") {
  LeasedRun run;
  auto started = std::chrono::steady_clock::now();
  HttpClient reader(run.server.port());
  auto waiting = std::async(std::launch::async, [&] {
    return reader.get("/v1/runs/" + run.run_id + "/logs/" + kStd + "?offset=0&wait_seconds=20",
                      run.server.user_token());
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  REQUIRE(run.node.append(run.run_id, kStd, 0, 1, "first bytes").status == 200);
  REQUIRE(waiting.wait_for(std::chrono::seconds(5)) == std::future_status::ready);
  CHECK(waiting.get().body == "first bytes");
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(5));
}

TEST_CASE("a log read long poll ends when the run finishes", "[logs]") {
  LeasedRun run;
  HttpClient reader(run.server.port());
  auto waiting = std::async(std::launch::async, [&] {
    return reader.get("/v1/runs/" + run.run_id + "/logs/" + kStd + "?offset=0&wait_seconds=20",
                      run.server.user_token());
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  REQUIRE(run.node.status(run.run_id, 1, "Completed").status == 200);
  REQUIRE(waiting.wait_for(std::chrono::seconds(5)) == std::future_status::ready);
  auto answer = waiting.get();
  CHECK(answer.status == 200);
  CHECK(answer.header("x-amlnode-run-status") == "Completed");
}

TEST_CASE("logs keep coming after the node reports the end of the run", "[logs]") {
  LeasedRun run;
  REQUIRE(run.node.status(run.run_id, 1, "Completed").status == 200);
  CHECK(run.node.append(run.run_id, kStd, 0, 1, "final flush").status == 200);
}

TEST_CASE("stream names are checked before any byte is written", "[logs]") {
  LeasedRun run;
  for (std::string stream :
       {"user_logs/std_log_process_3.txt", "system_logs/lifecycler/execution-wrapper.log",
        "logs/azureml/rank_0.txt", "logs/a b.txt"}) {
    INFO(stream);
    CHECK(run.node.append(run.run_id, url_encode(stream), 0, 1, "ok").status == 200);
  }
  for (std::string stream :
       {"../../../etc/passwd", "logs/../../x", "logs/%2e%2e/x", "logs/..%2Fx", "logs/a//b",
        "logs/./a", "logs/", "user_logs/other.txt", "user_logs/std_log_process_x.txt",
        "system_logs/a\\b", "stdout", "logs/a%00b", "/etc/passwd"}) {
    INFO(stream);
    auto response = run.node.append(run.run_id, stream, 0, 1, "no");
    CHECK((response.status == 400 || response.status == 404));
  }
  auto listed = run.server.user().get("/v1/runs/" + run.run_id + "/logs", run.server.user_token());
  CHECK(listed.json()["streams"].size() == 4);
  // Nothing was written outside the run's log folder.
  std::size_t files = 0;
  for (const auto& entry :
       std::filesystem::recursive_directory_iterator(run.server.data_dir() / "data" / "runs")) {
    if (entry.is_regular_file()) ++files;
  }
  CHECK(files == 5);  // four streams and the snapshot
}

TEST_CASE("stream name rules", "[logs]") {
  CHECK(is_valid_stream_name("user_logs/std_log.txt"));
  CHECK(is_valid_stream_name("user_logs/std_log_process_12.txt"));
  CHECK(is_valid_stream_name("system_logs/job_prep.txt"));
  CHECK(is_valid_stream_name("logs/deep/er/file.log"));
  CHECK_FALSE(is_valid_stream_name("logs/.."));
  CHECK_FALSE(is_valid_stream_name("logs/a/../b"));
  CHECK_FALSE(is_valid_stream_name("logs//a"));
  CHECK_FALSE(is_valid_stream_name("logs/a/"));
  CHECK_FALSE(is_valid_stream_name("system_logs/"));
  CHECK_FALSE(is_valid_stream_name("user_logs/std_log_process_.txt"));
  CHECK_FALSE(is_valid_stream_name("outputs/model.pt"));
  CHECK_FALSE(is_valid_stream_name(std::string("logs/a\0b", 8)));
  CHECK_FALSE(is_valid_stream_name("logs/" + std::string(300, 'a')));
}

TEST_CASE("a log append needs the epoch and an offset", "[logs]") {
  LeasedRun run;
  auto no_epoch = run.node.http().request(
      "PUT", "/v1/runs/" + run.run_id + "/logs/" + kStd + "?offset=0", run.node.token(), "x");
  CHECK(no_epoch.status == 400);
  CHECK(no_epoch.json()["error"]["message"].get<std::string>().rfind("X-Amlnode-Epoch", 0) == 0);
  auto no_offset = run.node.http().request("PUT", "/v1/runs/" + run.run_id + "/logs/" + kStd,
                                           run.node.token(), "x", {{"X-Amlnode-Epoch", "1"}});
  CHECK(no_offset.status == 400);
  auto bad_offset =
      run.node.http().request("PUT", "/v1/runs/" + run.run_id + "/logs/" + kStd + "?offset=-1",
                              run.node.token(), "x", {{"X-Amlnode-Epoch", "1"}});
  CHECK(bad_offset.status == 400);
}

namespace {

std::string append_request(const LeasedRun& run, std::uint64_t offset, const std::string& body,
                           bool close = false) {
  return "PUT /v1/runs/" + run.run_id + "/logs/" + kStd + "?offset=" + std::to_string(offset) +
         " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + run.node.token() +
         "\r\nX-Amlnode-Epoch: 1\r\nContent-Length: " + std::to_string(body.size()) +
         (close ? "\r\nConnection: close" : "") + "\r\n\r\n" + body;
}

// Bytes no two positions of which are alike for long: a misplaced piece shows.
std::string numbered_bytes(std::size_t size) {
  std::string out;
  for (std::size_t i = 0; out.size() < size; ++i) out += std::to_string(i) + ",";
  out.resize(size);
  return out;
}

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("a multi-megabyte chunk arrives whole, and a request pipelined after it is answered",
          "[logs]") {
  LeasedRun run;
  // The server's read-ahead holds the header and the body's first bytes; the rest of the 6 MiB
  // comes straight from the socket, and the next request follows the body in the same stream.
  std::string first = numbered_bytes(6 << 20);
  std::string second = "and the tail\n";
  auto exchange = raw_exchange(
      run.server.port(),
      append_request(run, 0, first) + append_request(run, first.size(), second, /*close=*/true),
      std::chrono::seconds(20));
  CHECK(exchange.closed);
  CHECK(count(exchange.received, "HTTP/1.1 200") == 2);
  CHECK(exchange.received.find("{\"length\":" + std::to_string(first.size() + second.size()) +
                               "}") != std::string::npos);
  std::string stored;
  while (stored.size() < first.size() + second.size()) {
    auto piece = run.read(kStd, stored.size());
    REQUIRE(!piece.body.empty());
    stored += piece.body;
  }
  CHECK(stored == first + second);
}

TEST_CASE("a chunk cut off before its last byte appends nothing", "[logs]") {
  LeasedRun run;
  std::string request = append_request(run, 0, numbered_bytes(300000));
  request.resize(request.size() - 1);
  // raw_exchange keeps its side open; the server waits for the missing byte until the client
  // goes away. Closing the connection then must leave the stream as it was.
  {
    auto exchange = raw_exchange(run.server.port(), request, std::chrono::milliseconds(300));
    CHECK(exchange.received.empty());
  }
  // The same bytes sent whole on a fresh connection start at 0: nothing of the cut one is there.
  auto whole = run.node.append(run.run_id, kStd, 0, 1, "complete");
  CHECK(whole.json()["length"] == 8);
  CHECK(run.read(kStd).body == "complete");
}
