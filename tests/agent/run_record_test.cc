#include "agent/run_record.h"

#include <catch2/catch.hpp>

#include "tests/support/temp_dir.h"

using namespace amlnode;
using spec::RunStatus;

namespace {
// A clock the test moves by hand.
class ManualClock final : public Clock {
 public:
  std::chrono::system_clock::time_point now() const override { return now_; }
  void advance(std::chrono::milliseconds by) { now_ += by; }

 private:
  std::chrono::system_clock::time_point now_{std::chrono::seconds(1'800'000'000)};
};
}  // namespace

TEST_CASE("statuses only move forward and a terminal status never changes", "[run_record]") {
  CHECK(spec::can_transition(RunStatus::Queued, RunStatus::Preparing));
  CHECK_FALSE(spec::can_transition(RunStatus::Running, RunStatus::Preparing));
  CHECK(spec::can_transition(RunStatus::Running, RunStatus::CancelRequested));
  CHECK_FALSE(spec::can_transition(RunStatus::CancelRequested, RunStatus::Running));
  CHECK(spec::can_transition(RunStatus::CancelRequested, RunStatus::Canceled));
  CHECK_FALSE(spec::can_transition(RunStatus::Completed, RunStatus::Failed));
  CHECK_FALSE(spec::can_transition(RunStatus::Canceled, RunStatus::Running));
  for (auto s : {"NotStarted", "Queued", "Preparing", "Running", "Finalizing", "CancelRequested",
                 "NotResponding", "Completed", "Failed", "Canceled"}) {
    REQUIRE(spec::run_status_from_string(s));
    CHECK(std::string(spec::to_string(*spec::run_status_from_string(s))) == s);
  }
}

TEST_CASE("run.json records status, error, exit code and phase timings", "[run_record]") {
  test::TempDir dir;
  auto clock = std::make_shared<ManualClock>();
  agent::RunRecord record(dir / "run.json", "exp_1_x", "exp", clock);
  REQUIRE(record.transition(RunStatus::Queued));
  REQUIRE(record.transition(RunStatus::Preparing));
  clock->advance(std::chrono::milliseconds(250));
  REQUIRE(record.transition(RunStatus::Running));
  clock->advance(std::chrono::milliseconds(2000));
  REQUIRE(record.transition(RunStatus::Finalizing));
  clock->advance(std::chrono::milliseconds(10));
  REQUIRE(record.transition(RunStatus::Failed));
  CHECK_FALSE(record.transition(RunStatus::Completed));
  record.set_exit_code(3);
  record.set_error(Error{"UserError", "User process 'python' exited with status code 3"});
  REQUIRE(record.save(true).ok());

  auto json = nlohmann::json::parse(test::slurp(dir / "run.json"));
  CHECK(json["status"] == "Failed");
  CHECK(json["exit_code"] == 3);
  CHECK(json["error"]["code"] == "UserError");
  CHECK(json["durations"]["preparing_ms"] == 250);
  CHECK(json["durations"]["running_ms"] == 2000);
  CHECK(json["durations"]["finalizing_ms"] == 10);
  CHECK(json["timings"]["running_at"] == "2027-01-15T08:00:00.250Z");
}
