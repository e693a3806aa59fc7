// A run whose resource use is known, for checking what the samplers report against it:
//
//   metrics_workload --ready FILE [--alloc-mib N] [--cpu-ms M] [--holders H] [--holder-mib N]
//                    [--burners B] [--burner-cpu-ms M] [--write-mib W]
//
// It forks H holders (each allocates and touches --holder-mib MiB, then waits) and B burners (each
// burns --burner-cpu-ms of CPU and exits, and is reaped), then allocates and touches --alloc-mib
// MiB itself, burns --cpu-ms of CPU, writes --write-mib MiB to a file beside FILE (fsynced), and
// once every holder is ready and every burner reaped writes FILE and waits for a signal. FILE
// holds the CPU seconds it and the burners used (getrusage), what the samplers must report. CPU
// time is measured with CLOCK_PROCESS_CPUTIME_ID, so what it burns does not depend on the machine's
// load.

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Options {
  std::string ready;
  long alloc_mib = 0, cpu_ms = 0, holders = 0, holder_mib = 0, burners = 0, burner_cpu_ms = 0,
       write_mib = 0;
};

double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// User + system CPU of this process and of the children it reaped (the burners).
double used_cpu_seconds() {
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  rusage self{}, children{};
  ::getrusage(RUSAGE_SELF, &self);
  ::getrusage(RUSAGE_CHILDREN, &children);
  return seconds(self.ru_utime) + seconds(self.ru_stime) + seconds(children.ru_utime) +
         seconds(children.ru_stime);
}

void burn(long ms) {
  double until = cpu_seconds() + static_cast<double>(ms) / 1000.0;
  volatile unsigned long x = 0;
  while (cpu_seconds() < until) {
    for (int i = 0; i < 10000; ++i) x = x + static_cast<unsigned long>(i);
  }
}

// Allocates and writes every page, so the memory is resident (not just reserved). The writes go
// through a volatile pointer and the block is kept, so the compiler cannot drop them.
char* volatile kept = nullptr;

void allocate(long mib) {
  if (mib <= 0) return;
  std::size_t bytes = static_cast<std::size_t>(mib) << 20;
  volatile char* block = static_cast<char*>(std::malloc(bytes));
  for (std::size_t at = 0; at < bytes; at += 4096) block[at] = static_cast<char>(at / 4096 + 1);
  kept = const_cast<char*>(block);
}

void write_file(const std::string& path, long mib) {
  if (mib <= 0) return;
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  std::vector<char> block(1 << 20, 'x');
  for (long i = 0; i < mib; ++i) {
    if (::write(fd, block.data(), block.size()) < 0) std::exit(3);
  }
  ::fsync(fd);
  ::close(fd);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    const char* value = argv[i + 1];
    if (flag == "--ready") o.ready = value;
    if (flag == "--alloc-mib") o.alloc_mib = std::atol(value);
    if (flag == "--cpu-ms") o.cpu_ms = std::atol(value);
    if (flag == "--holders") o.holders = std::atol(value);
    if (flag == "--holder-mib") o.holder_mib = std::atol(value);
    if (flag == "--burners") o.burners = std::atol(value);
    if (flag == "--burner-cpu-ms") o.burner_cpu_ms = std::atol(value);
    if (flag == "--write-mib") o.write_mib = std::atol(value);
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  if (o.ready.empty()) return 2;
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) return 3;
  for (long i = 0; i < o.holders; ++i) {
    if (::fork() == 0) {
      allocate(o.holder_mib);
      if (::write(pipe_fds[1], "h", 1) != 1) _exit(3);
      for (;;) ::pause();
    }
  }
  std::vector<pid_t> burners;
  for (long i = 0; i < o.burners; ++i) {
    pid_t pid = ::fork();
    if (pid == 0) {
      burn(o.burner_cpu_ms);
      _exit(0);
    }
    burners.push_back(pid);
  }
  allocate(o.alloc_mib);
  burn(o.cpu_ms);
  write_file(o.ready + ".data", o.write_mib);
  for (pid_t pid : burners) ::waitpid(pid, nullptr, 0);
  char byte;
  for (long i = 0; i < o.holders; ++i) {
    if (::read(pipe_fds[0], &byte, 1) != 1) return 3;
  }
  // What it used, as the kernel tells the process itself: the reference the samplers are checked
  // against. Written to a temporary name and renamed, so a reader never sees half of it.
  std::string text = std::to_string(used_cpu_seconds()) + "\n";
  std::string temporary = o.ready + ".tmp";
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0 || ::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size()))
    return 3;
  ::close(fd);
  if (::rename(temporary.c_str(), o.ready.c_str()) != 0) return 3;
  for (;;) ::pause();
}
