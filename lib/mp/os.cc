#include "mp/os.h"

#include <dirent.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <iostream>
#include <system_error>

#include <fmt/format.h>

#include "mp/internal/lifecycle.h"

namespace mp {
namespace {

std::atomic<bool> g_fork_warning{true};
std::atomic<bool> g_fork_warned{false};

int thread_count() noexcept {
  DIR* dir = opendir("/proc/self/task");
  if (!dir) return 1;
  int n = 0;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(dir);
  return n;
}

}  // namespace

void internal::flush_stdio() noexcept {
  try {
    std::cout.flush();
    std::cerr.flush();
    std::clog.flush();
  } catch (...) {
  }
  std::fflush(nullptr);
}

pid_t fork() {
  internal::flush_stdio();
  if (g_fork_warning.load(std::memory_order_relaxed) &&
      !g_fork_warned.load(std::memory_order_relaxed)) {
    int threads = thread_count();
    if (threads > 1 && !g_fork_warned.exchange(true)) {
      std::fputs(fmt::format("mp: warning: process {} is multi-threaded ({} threads); "
                             "fork() may lead to deadlocks in the child "
                             "(mp::set_fork_warning(false) silences this)\n",
                             ::getpid(), threads)
                     .c_str(),
                 stderr);
      std::fflush(stderr);
    }
  }
  pid_t pid = ::fork();
  if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork");
  return pid;
}

pid_t getpid() noexcept { return ::getpid(); }

pid_t getppid() noexcept { return ::getppid(); }

int cpu_count() noexcept {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<int>(n) : 1;
}

int exitcode_from_wait_status(int status) noexcept {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return 0;
}

void exit(int code) {
  internal::flush_stdio();
  internal::finalize_process();
  internal::flush_stdio();
  ::_exit(code & 0xff);
}

void set_fork_warning(bool enabled) noexcept { g_fork_warning.store(enabled); }

}  // namespace mp
