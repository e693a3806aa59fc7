// The corpus replay: main() for the fuzz targets when they are not built for libFuzzer (the
// normal GCC build). It runs LLVMFuzzerTestOneInput once over every file of the folders (or files)
// named on the command line, so that every target keeps compiling with the rest of the project and
// ctest replays every committed input, crashes found and fixed included, in a few seconds.
//
// It exits non-zero when it finds no input at all: a corpus folder that went missing must fail
// the test, not pass it vacuously.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

namespace fs = std::filesystem;

// libFuzzer's own default for -max_len is 4 KiB and the bench runs use at most 64 KiB; anything
// much larger in a corpus folder is a mistake (a stray archive), not an input.
constexpr std::uintmax_t kMaxInputBytes = 1 << 20;

// Every regular file named or found below the arguments, sorted so runs are repeatable.
bool collect(const char* argument, std::vector<fs::path>& inputs) {
  std::error_code ec;
  fs::path path(argument);
  if (fs::is_regular_file(path, ec)) {
    inputs.push_back(path);
    return true;
  }
  if (!fs::is_directory(path, ec)) {
    std::fprintf(stderr, "replay: %s is neither a file nor a folder\n", argument);
    return false;
  }
  std::vector<fs::path> found;
  for (fs::recursive_directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_regular_file(ec)) found.push_back(it->path());
  }
  if (ec) {
    std::fprintf(stderr, "replay: cannot list %s: %s\n", argument, ec.message().c_str());
    return false;
  }
  std::sort(found.begin(), found.end());
  inputs.insert(inputs.end(), found.begin(), found.end());
  return true;
}

bool read_input(const fs::path& file, std::vector<std::uint8_t>& bytes) {
  std::error_code ec;
  auto size = fs::file_size(file, ec);
  if (ec || size > kMaxInputBytes) {
    std::fprintf(stderr, "replay: %s: %s\n", file.c_str(),
                 ec ? ec.message().c_str() : "larger than 1 MiB");
    return false;
  }
  std::ifstream in(file, std::ios::binary);
  bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) {
    std::fprintf(stderr, "replay: cannot read %s\n", file.c_str());
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<fs::path> inputs;
  for (int i = 1; i < argc; ++i) {
    if (!collect(argv[i], inputs)) return 2;
  }
  if (inputs.empty()) {
    std::fprintf(stderr, "replay: no inputs (usage: %s CORPUS_FOLDER_OR_FILE...)\n", argv[0]);
    return 2;
  }
  std::vector<std::uint8_t> bytes;
  for (const auto& file : inputs) {
    if (!read_input(file, bytes)) return 2;
    // The name goes out first, so the input that crashes is the last one printed.
    std::fprintf(stderr, "replay: %s\n", file.c_str());
    // A copy of exactly the input's size, so that reading past its end is a bug a sanitizer sees
    // (with -fsanitize=address) rather than a read of the vector's spare capacity.
    std::vector<std::uint8_t> exact(bytes.begin(), bytes.end());
    LLVMFuzzerTestOneInput(exact.data(), exact.size());
  }
  std::printf("%zu inputs replayed\n", inputs.size());
  return 0;
}
