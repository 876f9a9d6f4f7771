// benchmarks/bench_util.h — helpers shared by the benchmark binaries.
#pragma once

#include <sched.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <numeric>
#include <vector>

namespace bench {

// Pool tasks shared by the Pool and MPI Pool suites: one that does nothing,
// one that keeps its core busy for 1 ms, and their inputs 0..n-1.
inline int noop(int x) { return x; }

inline int busy_1ms(int x) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1);
  while (std::chrono::steady_clock::now() < until) {
  }
  return x;
}

inline std::vector<int> iota(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

// write_full writes all n bytes at p; false if a write fails (peer gone).
inline bool write_full(int fd, const void* p, std::size_t n) {
  auto* c = static_cast<const char*>(p);
  while (n) {
    const ssize_t w = ::write(fd, c, n);
    if (w <= 0) return false;
    c += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

// read_full reads exactly n bytes into p; false at end of file or on error.
inline bool read_full(int fd, void* p, std::size_t n) {
  auto* c = static_cast<char*>(p);
  while (n) {
    const ssize_t r = ::read(fd, c, n);
    if (r <= 0) return false;
    c += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

// PinnedPair puts this process (until destruction) and a forked peer (call
// in_child() in it) on two different CPUs, when two are allowed, so that the
// scheduler's placement does not change the figure from one run to the next:
// unpinned, it sometimes runs both on one CPU and a stream then costs a
// context switch per message (run-to-run spread up to 1.5x). Peers in one
// suite are pinned alike, the CPython peer scripts included
// (benchmarks/peers/gbench_json.py: PinnedPair).
class PinnedPair {
 public:
  PinnedPair() {
    if (sched_getaffinity(0, sizeof saved_, &saved_) != 0 || CPU_COUNT(&saved_) < 2) return;
    int found = 0;
    for (int c = 0; c < CPU_SETSIZE && found < 2; ++c) {
      if (CPU_ISSET(c, &saved_)) cpus_[found++] = c;
    }
    pin(cpus_[0]);
    active_ = true;
  }
  ~PinnedPair() {
    if (active_) sched_setaffinity(0, sizeof saved_, &saved_);
  }
  void in_child() const {
    if (active_) pin(cpus_[1]);
  }

 private:
  static void pin(int cpu) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    sched_setaffinity(0, sizeof one, &one);
  }
  cpu_set_t saved_;
  int cpus_[2] = {0, 0};
  bool active_ = false;
};

}  // namespace bench
