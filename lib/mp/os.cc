#include "mp/os.h"

#include <fmt/format.h>
#include <sched.h>
#include <stdio_ext.h>
#include <sys/single_threaded.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <ext/stdio_sync_filebuf.h>
#include <iostream>
#include <system_error>

#include "mp/internal/lifecycle.h"

namespace mp {
namespace {

std::atomic<bool> g_fork_warning{true};
std::atomic<bool> g_fork_warned{false};

// The number of threads of this process: procfs gives /proc/self/task a
// link count of 2 + threads, so one stat() answers (no directory buffer to
// allocate: every page a parent writes before fork costs a fault later).
int thread_count() noexcept {
  // glibc clears __libc_single_threaded at the first pthread_create: while
  // it is set, no stat() of /proc (a few us on every fork) is needed.
  if (__libc_single_threaded) return 1;
  struct stat st;
  if (::stat("/proc/self/task", &st) != 0 || st.st_nlink < 3) return 1;
  return static_cast<int>(st.st_nlink - 2);
}

// Whether a C++ standard stream buffers on its own (sync_with_stdio(false))
// rather than writing straight through to C stdio.
bool buffers_on_its_own(std::ostream& os) {
  return dynamic_cast<__gnu_cxx::stdio_sync_filebuf<char>*>(os.rdbuf()) == nullptr;
}

}  // namespace

// Flushes what CPython flushes around fork and at a child's end (its
// sys.stdout and sys.stderr): C's stdout/stderr and the standard C++
// streams. Streams with nothing pending are not touched, so a fork that has
// nothing to flush writes no stdio page (each written page costs a
// copy-on-write fault after fork). Other FILE*s are the program's to flush.
void internal::flush_stdio() noexcept {
  // Decided once: sync_with_stdio(false) must come before any I/O anyway.
  static const bool cout_buffers = buffers_on_its_own(std::cout);
  static const bool clog_buffers = buffers_on_its_own(std::clog);
  try {
    if (cout_buffers) std::cout.flush();
    if (clog_buffers) std::clog.flush();
  } catch (...) {
  }
  // glibc's FILE: bytes are pending when the write pointer is past the base.
  if (stdout->_IO_write_ptr > stdout->_IO_write_base) std::fflush(stdout);
  if (stderr->_IO_write_ptr > stderr->_IO_write_base) std::fflush(stderr);
}

pid_t fork() {
  internal::flush_stdio();
  if (g_fork_warning.load(std::memory_order_relaxed) &&
      !g_fork_warned.load(std::memory_order_relaxed)) {
    int threads = thread_count();
    if (threads > 1 && !g_fork_warned.exchange(true)) {
      std::fputs(
          fmt::format("mp: warning: process {} is multi-threaded ({} threads); "
                      "fork() may lead to deadlocks in the child; use the "
                      "forkserver start method instead (mp::set_start_method(\"forkserver\"), "
                      "mp/context.h) or mp::set_fork_warning(false) to silence this\n",
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
