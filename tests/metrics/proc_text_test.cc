#include "metrics/proc_text.h"

#include <catch2/catch.hpp>

#include "tests/support/temp_dir.h"

using namespace amlnode::metrics;

TEST_CASE("Scanner reads numbers, decimals and words as /proc writes them", "[metrics]") {
  Scanner scan("cpu  10 20\t30\n0.52 1.5 12 2/345\n");
  CHECK(scan.word() == "cpu");
  CHECK(scan.number() == 10);
  CHECK(scan.number() == 20);
  CHECK(scan.number() == 30);
  scan.next_line();
  CHECK(scan.decimal() == Approx(0.52));
  CHECK(scan.decimal() == Approx(1.5));
  CHECK(scan.decimal() == Approx(12.0));
  CHECK(scan.number() == 2);
  CHECK(scan.consume("/"));
  CHECK(scan.number() == 345);
  scan.next_line();
  CHECK(scan.done());
  CHECK(scan.number() == 0);  // past the end: nothing, no overrun
}

TEST_CASE("value_after finds a key at the start of a line only", "[metrics]") {
  std::string_view meminfo = "MemTotal:  100 kB\nMemFree: 40 kB\nSwapFree: 7 kB\n";
  CHECK(value_after(meminfo, "MemTotal:") == 100);
  CHECK(value_after(meminfo, "MemFree:") == 40);
  CHECK(value_after(meminfo, "Free:", 99) == 99);  // inside a line does not count
  CHECK(value_after(meminfo, "Cached:", 5) == 5);
}

TEST_CASE("A kept ProcFile reads the file afresh each time, cut to the buffer", "[metrics]") {
  amlnode::test::TempDir dir;
  auto file = dir.write("f", "first");
  ProcFile kept(file.c_str());
  char buf[16];
  CHECK(kept.read(buf, sizeof buf) == "first");
  dir.write("f", "second, longer than the buffer");
  CHECK(kept.read(buf, sizeof buf) == "second, longer t");
  ProcFile missing((dir / "missing").c_str());
  CHECK_FALSE(missing.is_open());
  CHECK(missing.read(buf, sizeof buf).empty());
}
