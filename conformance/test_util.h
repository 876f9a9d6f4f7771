// Helpers shared by the conformance suites: timing and cross-process
// hand-shakes that never rely on a sleep to order two processes.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <stdexcept>
#include <utility>

#include "mp/context.h"
#include "mp/os.h"

// MP_FORK_ONLY(why) skips the rest of a test unless the run's default start
// method is fork (suites that run once per method: conformance/defs.bzl).
// For what holds only in a fork of the caller: a closure target or
// initializer, an fd number or memory inherited as of start.
#define MP_FORK_ONLY(why)                                                         \
  do {                                                                            \
    if (mp::get_start_method() != "fork") GTEST_SKIP() << "fork only: " << (why); \
  } while (0)

namespace mp_test {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Stopwatch measures the wall time since construction.
class Stopwatch {
 public:
  Stopwatch() : start_(Clock::now()) {}
  std::chrono::milliseconds elapsed() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start_);
  }

 private:
  Clock::time_point start_;
};

// Signal is a one-shot, one-byte hand-shake between a parent and a forked
// child over a pipe: one side notify()s, the other wait()s. Fork after
// constructing it.
class Signal {
 public:
  Signal() {
    if (pipe(fds_) != 0) throw std::runtime_error("pipe failed");
  }
  ~Signal() {
    close(fds_[0]);
    close(fds_[1]);
  }
  Signal(const Signal&) = delete;
  Signal& operator=(const Signal&) = delete;
  void notify() {
    char c = 1;
    if (write(fds_[1], &c, 1) != 1) std::abort();
  }
  // wait blocks until notify() was called (in any process); false on EOF.
  bool wait() {
    char c;
    return read(fds_[0], &c, 1) == 1;
  }

 private:
  int fds_[2];
};

// run_worker runs a worker body, turning an escaped exception into code 99.
inline int run_worker(const std::function<int()>& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "worker failed: %s\n", e.what());
    return 99;
  }
}

// start_child(target, args...) starts a child of the run's default start
// method running target(args...): a target that travels (mp/context.h) runs
// under every method, so the suites that run per method start their children
// this way.
template <class F, class... Args>
mp::Process start_child(F target, Args&&... args) {
  mp::Process p(target, std::forward<Args>(args)...);
  p.start();
  return p;
}

// joined_exitcode(p) waits for p and returns its exit code (-N: signal N).
inline int joined_exitcode(mp::Process& p) {
  p.join();
  return p.exitcode().value_or(-1000);
}

// require(ok, what) fails a child's or a worker's body: a child process then
// exits with code 1 after printing `what`, run_worker() returns 99.
inline void require(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(what);
}

// fork_child forks a child that runs `body` and exits with its result.
inline pid_t fork_child(const std::function<int()>& body) {
  pid_t pid = mp::fork();
  if (pid == 0) _exit(run_worker(body));
  return pid;
}

// wait_exit_code reaps `pid`: its exit code, or 128 + N after signal N.
inline int wait_exit_code(pid_t pid) {
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace mp_test
