#include "mp/internal/liveness.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace mp::internal {
namespace {

std::atomic<pid_t> g_pid{0};
std::atomic<std::uint64_t> g_start_time{0};
thread_local pid_t t_tid = 0;

void after_fork_in_child() {
  g_pid.store(static_cast<pid_t>(syscall(SYS_getpid)), std::memory_order_relaxed);
  g_start_time.store(0, std::memory_order_relaxed);
  t_tid = 0;  // the forking thread's copy: the child's one thread has a new tid
}

}  // namespace

pid_t self_pid() noexcept {
  pid_t p = g_pid.load(std::memory_order_relaxed);
  if (p != 0) return p;
  static std::once_flag once;
  std::call_once(once, [] { pthread_atfork(nullptr, nullptr, after_fork_in_child); });
  p = static_cast<pid_t>(syscall(SYS_getpid));
  g_pid.store(p, std::memory_order_relaxed);
  return p;
}

pid_t self_tid() noexcept {
  if (t_tid == 0) {
    self_pid();  // registers the fork handler
    t_tid = static_cast<pid_t>(syscall(SYS_gettid));
  }
  return t_tid;
}

std::uint64_t self_start_time() noexcept {
  std::uint64_t s = g_start_time.load(std::memory_order_relaxed);
  if (s != 0) return s;
  char state = 0;
  if (!read_proc_stat(self_pid(), &state, &s)) return 0;
  g_start_time.store(s, std::memory_order_relaxed);
  return s;
}

bool read_proc_stat(pid_t pid, char* state, std::uint64_t* start_time) noexcept {
  char path[48];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  char buf[512];
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  int saved = errno;
  ::close(fd);
  errno = saved;
  if (n <= 0) return false;
  buf[n] = '\0';
  // Field 2 (comm) may hold spaces and parentheses: parse from the last ')'.
  const char* p = std::strrchr(buf, ')');
  if (!p || p[1] == '\0') return false;
  p += 2;
  *state = *p;
  for (int field = 3; field < 22 && *p; ++field) {
    p = std::strchr(p, ' ');
    if (!p) return false;
    ++p;
  }
  *start_time = std::strtoull(p, nullptr, 10);
  return true;
}

bool process_alive(pid_t pid, std::uint64_t start_time) noexcept {
  if (pid <= 0) return false;
  if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
  char state = 0;
  std::uint64_t start = 0;
  if (!read_proc_stat(pid, &state, &start)) return errno != ENOENT && errno != ESRCH;
  if (state == 'Z' || state == 'X' || state == 'x') return false;
  if (start_time != 0 &&
      static_cast<std::uint32_t>(start) != static_cast<std::uint32_t>(start_time)) {
    return false;  // the pid now names another process
  }
  return true;
}

}  // namespace mp::internal
