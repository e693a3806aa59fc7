// Listing and eviction: what `amlnode env list` and `amlnode env prune` show and do.

#include <catch2/catch.hpp>

#include "executors/environments/cache.h"
#include "tests/executors/environments/environments_test_support.h"

namespace amlnode::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr std::uint64_t kPayload = 1 << 20;

struct Fixture {
  TempDir dir;
  std::shared_ptr<ManualClock> clock =
      std::make_shared<ManualClock>(std::chrono::system_clock::time_point(1'800'000'000s));
  envs::EnvironmentConfig config = [this] {
    auto c = test_config(dir);
    c.installer_env.emplace_back("FAKE_CONDA_PAYLOAD_BYTES", std::to_string(kPayload));
    return c;
  }();

  envs::EnvironmentCache cache() const { return envs::EnvironmentCache(config, clock); }

  // Builds (or reuses) the environment with one conda package, at the clock's current time.
  envs::PreparedEnvironment prepare(const std::string& package) {
    auto env = cache().prepare(spec_of(conda_job({}, {package})), envs::BuildOutput{});
    if (!env) FAIL(env.error().message);
    clock->advance(60s);
    return std::move(env.value());
  }

  std::vector<std::string> listed_hashes() const {
    std::vector<std::string> out;
    auto listed = cache().list();
    for (const auto& entry : listed.value()) out.push_back(entry.hash);
    return out;
  }
};

TEST_CASE("env list (conda stand-in): hash, kind, path, size, last used, whether a run uses it") {
  Fixture f;
  auto start = f.clock->now();
  auto a = f.prepare("a=1");
  auto b = f.prepare("b=1");
  b.lease.release();
  auto listed = f.cache().list();
  REQUIRE(listed);
  REQUIRE(listed->size() == 2);
  const auto& newest = (*listed)[0];
  CHECK(newest.hash == b.hash);
  CHECK(newest.kind == "conda");
  CHECK(newest.path == b.prefix);
  CHECK(newest.size_bytes >= kPayload);
  CHECK(newest.last_used == start + 60s);
  CHECK(newest.created == start + 60s);
  CHECK(newest.state == envs::CacheEntryState::Ready);
  CHECK_FALSE(newest.in_use);
  CHECK(fs::path(newest.tool).filename() == "micromamba");
  CHECK((*listed)[1].hash == a.hash);
  CHECK((*listed)[1].in_use);  // `a` still holds its lease

  auto json = envs::to_json(newest);
  CHECK(json["hash"] == b.hash);
  CHECK(json["in_use"] == false);
  CHECK(json["last_used"] == format_utc(start + 60s));

  // Reuse updates the last-used time.
  a.lease.release();
  auto again = f.prepare("a=1");
  CHECK_FALSE(again.built);
  CHECK(f.listed_hashes() == std::vector<std::string>{a.hash, b.hash});
  CHECK(f.cache().list()->front().last_used == start + 120s);
}

TEST_CASE("eviction (conda stand-in) is least recently used first and skips environments in use") {
  Fixture f;
  auto oldest = f.prepare("oldest=1");  // kept in use below
  auto older = f.prepare("older=1");
  older.lease.release();
  auto recent = f.prepare("recent=1");
  recent.lease.release();
  auto size = f.cache().list()->front().size_bytes;

  auto report = f.cache().prune(envs::PruneOptions{2 * size + size / 2, false});
  REQUIRE(report);
  REQUIRE(report->evicted.size() == 1);
  CHECK(report->evicted[0].hash == older.hash);
  REQUIRE(report->kept_in_use.size() == 1);
  CHECK(report->kept_in_use[0].hash == oldest.hash);
  CHECK(report->freed_bytes == size);
  CHECK(report->remaining_bytes == 2 * size);
  CHECK_FALSE(fs::exists(older.prefix));
  CHECK_FALSE(fs::exists(older.prefix.string() + ".lock"));
  CHECK(f.listed_hashes() == std::vector<std::string>{recent.hash, oldest.hash});
  CHECK(fs::exists(oldest.prefix / "bin" / "python"));

  // Budget 0: everything not in use goes.
  auto all = f.cache().prune(envs::PruneOptions{0, false});
  REQUIRE(all);
  CHECK(all->evicted.size() == 1);
  CHECK(f.listed_hashes() == std::vector<std::string>{oldest.hash});

  // Once its run ends, the last one can go too; preparing it again rebuilds it.
  oldest.lease.release();
  CHECK(f.cache().prune(envs::PruneOptions{0, false})->evicted.size() == 1);
  CHECK(f.listed_hashes().empty());
  auto creates = fake_conda_creates(f.dir);
  CHECK(f.prepare("oldest=1").built);
  CHECK(fake_conda_creates(f.dir) == creates + 1);
}

TEST_CASE("a build (conda stand-in) beyond the disk budget evicts the least recently used") {
  Fixture f;
  auto first = f.prepare("first=1");
  first.lease.release();
  auto second = f.prepare("second=1");
  second.lease.release();
  auto size = f.cache().list()->front().size_bytes;
  f.config.disk_budget_bytes = 2 * size + size / 2;
  auto third = f.prepare("third=1");  // still in use, so never a candidate
  CHECK(f.listed_hashes() == std::vector<std::string>{third.hash, second.hash});
}

TEST_CASE("a dry run reports without evicting, and prune clears leftovers of interrupted builds") {
  Fixture f;
  auto env = f.prepare("a=1");
  env.lease.release();
  auto dry = f.cache().prune(envs::PruneOptions{0, true});
  REQUIRE(dry);
  CHECK(dry->evicted.size() == 1);
  CHECK(fs::exists(env.prefix / "amlnode-env.json"));

  auto incomplete = f.config.envs_dir / std::string(32, 'e');
  fs::create_directories(incomplete / "bin");
  fs::create_directories(f.config.envs_dir / ".trash-0000-1-2" / "lib");
  auto report = f.cache().prune(envs::PruneOptions{});
  REQUIRE(report);
  CHECK(report->evicted.empty());         // no budget configured
  CHECK(report->leftovers_removed == 2);  // the incomplete prefix and the trash
  CHECK_FALSE(fs::exists(incomplete));
  CHECK_FALSE(fs::exists(f.config.envs_dir / ".trash-0000-1-2"));
  CHECK(fs::exists(env.prefix / "amlnode-env.json"));
}

}  // namespace
}  // namespace amlnode::test
