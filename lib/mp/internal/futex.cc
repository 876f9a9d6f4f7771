#include "mp/internal/futex.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <system_error>

namespace mp::internal {
namespace {

long sys_futex(std::atomic<uint32_t>* word, int op, uint32_t val, const struct timespec* ts,
               uint32_t val3) {
  static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), op, val, ts, nullptr, val3);
}

}  // namespace

bool futex_wait_until(std::atomic<uint32_t>* word, uint32_t expected,
                      std::optional<std::chrono::steady_clock::time_point> deadline) {
  struct timespec ts {};
  const struct timespec* tsp = nullptr;
  if (deadline) {
    // steady_clock is CLOCK_MONOTONIC on Linux/libstdc++.
    auto ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(deadline->time_since_epoch()).count();
    if (ns < 0) ns = 0;
    ts.tv_sec = ns / 1'000'000'000;
    ts.tv_nsec = ns % 1'000'000'000;
    tsp = &ts;
  }
  // FUTEX_WAIT_BITSET takes an absolute timeout (CLOCK_MONOTONIC by default).
  long rc = sys_futex(word, FUTEX_WAIT_BITSET, expected, tsp, FUTEX_BITSET_MATCH_ANY);
  if (rc == 0) return true;
  switch (errno) {
    case EAGAIN:  // value changed before we slept
    case EINTR:
      return true;
    case ETIMEDOUT:
      return false;
    default:
      throw std::system_error(errno, std::generic_category(), "futex wait");
  }
}

bool futex_wait(std::atomic<uint32_t>* word, uint32_t expected,
                std::optional<std::chrono::nanoseconds> timeout) {
  std::optional<std::chrono::steady_clock::time_point> deadline;
  if (timeout)
    deadline =
        std::chrono::steady_clock::now() + std::max(*timeout, std::chrono::nanoseconds::zero());
  return futex_wait_until(word, expected, deadline);
}

int futex_wake(std::atomic<uint32_t>* word, int count) {
  long rc = sys_futex(word, FUTEX_WAKE, static_cast<uint32_t>(count), nullptr, 0);
  if (rc < 0) throw std::system_error(errno, std::generic_category(), "futex wake");
  return static_cast<int>(rc);
}

int futex_wake_all(std::atomic<uint32_t>* word) { return futex_wake(word, INT_MAX); }

}  // namespace mp::internal
