#include "mp/internal/sync_mutex.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>

#include <fmt/format.h>

#include "mp/errors.h"

namespace mp::internal {
namespace {

std::atomic<pid_t> g_pid{0};
std::atomic<uint64_t> g_stamp{0};
thread_local pid_t t_tid = 0;

void after_fork_in_child() {
  g_pid.store(static_cast<pid_t>(syscall(SYS_getpid)), std::memory_order_relaxed);
  g_stamp.store(0, std::memory_order_relaxed);
  t_tid = 0;  // the forking thread is the child's only thread
}

// read_stat reads /proc/<pid>/stat's state letter and start time.
// Returns false when the process does not exist (or cannot be read).
bool read_stat(pid_t pid, char* state, uint64_t* start_time) noexcept {
  char path[64];
  char buf[1024];
  auto end = fmt::format_to_n(path, sizeof path - 1, "/proc/{}/stat", pid).out;
  *end = '\0';
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  const char* p = std::strrchr(buf, ')');
  if (!p || p[1] == '\0') return false;
  p += 2;  // field 3: state
  *state = *p;
  // starttime is field 22: skip 19 more space-separated fields.
  for (int field = 3; field < 22 && *p; ++field) {
    p = std::strchr(p, ' ');
    if (!p) return false;
    ++p;
  }
  *start_time = std::strtoull(p, nullptr, 10);
  return true;
}

constexpr uint64_t kStampTimeMask = (uint64_t{1} << 40) - 1;

uint64_t make_stamp(pid_t pid, uint64_t start_time) {
  return (static_cast<uint64_t>(pid) << 40) | (start_time & kStampTimeMask);
}

// How long a waiter sleeps before it checks whether the owner is alive.
constexpr auto kDeathCheckSlice = std::chrono::milliseconds(20);
// Bounded spin before the first sleep: a lock held for a few hundred
// nanoseconds is cheaper to wait for than a futex round trip (~20 us here).
constexpr int kSpinIterations = 100;  // ~4 us of PAUSE here

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
    self_pid();  // make sure the fork handler is registered
    t_tid = static_cast<pid_t>(syscall(SYS_gettid));
  }
  return t_tid;
}

uint64_t self_stamp() noexcept {
  uint64_t s = g_stamp.load(std::memory_order_relaxed);
  if (s != 0) return s;
  pid_t pid = self_pid();
  char state = 0;
  uint64_t start = 0;
  if (!read_stat(pid, &state, &start)) start = 0;
  s = make_stamp(pid, start);
  g_stamp.store(s, std::memory_order_relaxed);
  return s;
}

bool process_alive(pid_t pid, uint64_t stamp) noexcept {
  if (pid <= 0) return true;  // unknown owner: never steal
  if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
  char state = 0;
  uint64_t start = 0;
  if (!read_stat(pid, &state, &start)) {
    // kill() found it a moment ago. If /proc works for us, the entry just
    // vanished: dead. Without /proc (a chroot, say) trust kill(): alive.
    return ::access("/proc/self/stat", R_OK) != 0;
  }
  if (state == 'Z' || state == 'X' || state == 'x') return false;
  if (stamp != 0 && static_cast<pid_t>(stamp >> 40) == pid &&
      (stamp & kStampTimeMask) != (start & kStampTimeMask)) {
    return false;  // the pid was reused by another process
  }
  return true;
}

MutexHandle::MutexHandle(bool recursive) : recursive_(recursive) {
  region_ = std::make_shared<SharedRegion>(sizeof(MutexState));
  state_ = new (region_->data()) MutexState();
}

void MutexHandle::record_owner() noexcept {
  state_->owner_tid.store(static_cast<uint32_t>(self_tid()), std::memory_order_relaxed);
  state_->owner_stamp.store(self_stamp(), std::memory_order_relaxed);
  state_->count = 1;
}

AcquireResult MutexHandle::acquire(bool block, const Deadline& deadline) {
  const uint32_t me = static_cast<uint32_t>(self_pid());
  if (recursive_) {
    uint32_t w = state_->word.load(std::memory_order_relaxed);
    if ((w & MutexState::kPidMask) == me &&
        state_->owner_tid.load(std::memory_order_relaxed) ==
            static_cast<uint32_t>(self_tid())) {
      if (state_->count == UINT32_MAX) throw RuntimeError("RLock recursion depth exceeded");
      ++state_->count;
      return AcquireResult::kAcquired;
    }
  }
  uint32_t expected = 0;
  if (state_->word.compare_exchange_strong(expected, me, std::memory_order_acquire,
                                           std::memory_order_relaxed)) {
    record_owner();
    return AcquireResult::kAcquired;
  }
  return lock_slow(block, deadline);
}

AcquireResult MutexHandle::lock_slow(bool block, const Deadline& deadline) {
  const uint32_t me = static_cast<uint32_t>(self_pid());
  auto& word = state_->word;

  // take_if_owner_dead takes the lock over from the owner recorded in `w`
  // when that process is gone.
  auto take_if_owner_dead = [&](uint32_t w) {
    pid_t owner = static_cast<pid_t>(w & MutexState::kPidMask);
    if (owner == static_cast<pid_t>(me)) return false;  // we are alive
    if (process_alive(owner, state_->owner_stamp.load(std::memory_order_relaxed))) {
      return false;
    }
    if (!word.compare_exchange_strong(w, me | MutexState::kWaiters,
                                      std::memory_order_acquire,
                                      std::memory_order_relaxed)) {
      return false;
    }
    record_owner();
    return true;
  };

  if (!block) {
    uint32_t w = word.load(std::memory_order_relaxed);
    if (w == 0 && word.compare_exchange_strong(w, me, std::memory_order_acquire,
                                               std::memory_order_relaxed)) {
      record_owner();
      return AcquireResult::kAcquired;
    }
    if (w != 0 && take_if_owner_dead(w)) return AcquireResult::kOwnerDead;
    return AcquireResult::kBusy;
  }

  for (int i = 0; i < kSpinIterations; ++i) {
    uint32_t w = word.load(std::memory_order_relaxed);
    if (w == 0 && word.compare_exchange_weak(w, me, std::memory_order_acquire,
                                             std::memory_order_relaxed)) {
      record_owner();
      return AcquireResult::kAcquired;
    }
    if (w & MutexState::kWaiters) break;  // others already sleep: join them
    spin_pause();
  }

  for (;;) {
    uint32_t w = word.load(std::memory_order_relaxed);
    if (w == 0) {
      // We were contended: keep the waiters bit so our release wakes the rest.
      if (word.compare_exchange_strong(w, me | MutexState::kWaiters,
                                       std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
        record_owner();
        return AcquireResult::kAcquired;
      }
      continue;
    }
    if (!(w & MutexState::kWaiters)) {
      if (!word.compare_exchange_strong(w, w | MutexState::kWaiters,
                                        std::memory_order_relaxed)) {
        continue;
      }
      w |= MutexState::kWaiters;
    }
    if (expired(deadline)) return AcquireResult::kTimedOut;
    auto slice = std::chrono::steady_clock::now() + kDeathCheckSlice;
    if (deadline && *deadline < slice) slice = *deadline;
    if (!futex_wait_until(&word, w, slice)) {
      // A slice passed with the word unchanged: is the owner still there?
      if (take_if_owner_dead(w)) return AcquireResult::kOwnerDead;
    }
  }
}

void MutexHandle::release() {
  auto& word = state_->word;
  if (recursive_) {
    if (!is_mine()) throw RuntimeError("cannot release un-acquired lock");
    if (--state_->count > 0) return;
  } else if (word.load(std::memory_order_relaxed) == 0) {
    throw RuntimeError("release unlocked lock");
  }
  state_->owner_tid.store(0, std::memory_order_relaxed);
  uint32_t old = word.exchange(0, std::memory_order_release);
  if (old == 0) throw RuntimeError("release unlocked lock");
  if (old & MutexState::kWaiters) futex_wake(&word, 1);
}

bool MutexHandle::is_mine() const noexcept {
  uint32_t w = state_->word.load(std::memory_order_relaxed);
  return w != 0 && (w & MutexState::kPidMask) == static_cast<uint32_t>(self_pid()) &&
         state_->owner_tid.load(std::memory_order_relaxed) ==
             static_cast<uint32_t>(self_tid());
}

uint32_t MutexHandle::release_all() {
  uint32_t depth = recursive_ ? state_->count : 1;
  state_->count = 1;
  release();
  return depth;
}

AcquireResult MutexHandle::restore(uint32_t depth) {
  AcquireResult r = acquire(true, std::nullopt);
  state_->count = depth;
  return r;
}

}  // namespace mp::internal
