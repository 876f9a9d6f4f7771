// Helpers shared by the conformance suites: timing and cross-process
// hand-shakes that never rely on a sleep to order two processes.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <stdexcept>

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

}  // namespace mp_test
