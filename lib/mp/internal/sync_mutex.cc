#include "mp/internal/sync_mutex.h"

#include <fcntl.h>
#include <fmt/format.h>
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

#include "mp/errors.h"
#include "mp/internal/liveness.h"

namespace mp::internal {
namespace {

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

uint64_t self_stamp() noexcept { return make_stamp(self_pid(), self_start_time()); }

bool stamp_alive(pid_t pid, uint64_t stamp) noexcept {
  if (pid <= 0) return true;  // unknown owner: never steal
  // A stamp of another pid says nothing about this one: pid liveness only.
  const uint64_t start = static_cast<pid_t>(stamp >> 40) == pid ? (stamp & kStampTimeMask) : 0;
  return process_alive(pid, start);
}

MutexHandle::MutexHandle(bool recursive) : recursive_(recursive) {
  region_ = std::make_shared<SharedRegion>(sizeof(MutexState));
  state_ = new (region_->data()) MutexState();
}

MutexHandle::MutexHandle(std::shared_ptr<SharedRegion> region, bool recursive)
    : region_(std::move(region)),
      state_(static_cast<MutexState*>(region_->data())),
      recursive_(recursive) {}

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
        state_->owner_tid.load(std::memory_order_relaxed) == static_cast<uint32_t>(self_tid())) {
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
    if (stamp_alive(owner, state_->owner_stamp.load(std::memory_order_relaxed))) {
      return false;
    }
    if (!word.compare_exchange_strong(w, me | MutexState::kWaiters, std::memory_order_acquire,
                                      std::memory_order_relaxed)) {
      return false;
    }
    record_owner();
    return true;
  };

  if (!block) {
    uint32_t w = word.load(std::memory_order_relaxed);
    if (w == 0 &&
        word.compare_exchange_strong(w, me, std::memory_order_acquire, std::memory_order_relaxed)) {
      record_owner();
      return AcquireResult::kAcquired;
    }
    if (w != 0 && take_if_owner_dead(w)) return AcquireResult::kOwnerDead;
    return AcquireResult::kBusy;
  }

  for (int i = 0; i < kSpinIterations; ++i) {
    uint32_t w = word.load(std::memory_order_relaxed);
    if (w == 0 &&
        word.compare_exchange_weak(w, me, std::memory_order_acquire, std::memory_order_relaxed)) {
      record_owner();
      return AcquireResult::kAcquired;
    }
    if (w & MutexState::kWaiters) break;  // others already sleep: join them
    cpu_relax();
  }

  for (;;) {
    uint32_t w = word.load(std::memory_order_relaxed);
    if (w == 0) {
      // We were contended: keep the waiters bit so our release wakes the rest.
      if (word.compare_exchange_strong(w, me | MutexState::kWaiters, std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
        record_owner();
        return AcquireResult::kAcquired;
      }
      continue;
    }
    if (!(w & MutexState::kWaiters)) {
      if (!word.compare_exchange_strong(w, w | MutexState::kWaiters, std::memory_order_relaxed)) {
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
         state_->owner_tid.load(std::memory_order_relaxed) == static_cast<uint32_t>(self_tid());
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
