// mp/internal/sync_mutex.h — the owner-tracking futex mutex under mp::Lock,
// mp::RLock and mp::Condition.
//
// Internal. Why not a robust process-shared pthread mutex: CPython's
// multiprocessing.Lock may be released by any process or thread, and a
// pthread mutex may only be unlocked by its owner. So the lock is a futex
// word that *is* the owner's identity:
//
//   word == 0                      free
//   word == pid                    held by a thread of process `pid`
//   word == pid | kWaiters         held, and someone may sleep on the word
//
// The owner's thread id and its process start time ("stamp", from
// /proc/<pid>/stat, which defeats pid reuse) are written next to the word
// right after the compare-and-swap that takes it. Waiters sleep on the word in
// slices of kDeathCheckSlice; after each slice they look the owner up in
// /proc: if the process is gone, a zombie, or a different process with the
// same pid, the waiter takes the lock over from the dead owner with one CAS
// and is told so (AcquireResult::kOwnerDead). A non-blocking attempt on a held
// lock does the same check, so try-loops recover too. Nothing is kept in the
// kernel's robust-futex list (that list is per thread and cannot follow a
// lock released by another process).
//
// The death of a *thread* that holds the lock while its process lives on is
// not detected, as in CPython.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>

#include "mp/internal/futex.h"
#include "mp/internal/liveness.h"
#include "mp/internal/shm.h"

namespace mp::internal {

// self_stamp identifies this process among all processes that ever had its
// pid: (pid << 40) | (start time in clock ticks since boot).
uint64_t self_stamp() noexcept;

// stamp_alive reports whether `pid` names a live (not zombie) process whose
// stamp is `stamp` (stamp 0 or one of another pid: pid liveness only); an
// unknown owner (pid <= 0) counts as alive, so it is never robbed.
bool stamp_alive(pid_t pid, uint64_t stamp) noexcept;

// MutexState lives in MAP_SHARED memory. All fields but count_ are atomics
// because waiters and the death checker read them without owning the lock.
struct MutexState {
  static constexpr uint32_t kWaiters = 0x8000'0000u;
  static constexpr uint32_t kPidMask = 0x7fff'ffffu;

  std::atomic<uint32_t> word{0};         // owner pid | kWaiters, 0 when free
  std::atomic<uint32_t> owner_tid{0};    // written by the owner after taking it
  std::atomic<uint64_t> owner_stamp{0};  // written by the owner after taking it
  uint32_t count = 0;                    // RLock depth; touched only by the owner
};

enum class AcquireResult {
  kAcquired,   // the caller holds the lock
  kOwnerDead,  // the caller holds the lock, taken over from a dead process
  kBusy,       // non-blocking attempt on a held lock
  kTimedOut,   // the deadline passed
};

// MutexHandle is a shared reference to one MutexState in its own region:
// copies (and forked children) refer to the same lock. `recursive` selects
// RLock semantics.
class MutexHandle {
 public:
  explicit MutexHandle(bool recursive);
  // MutexHandle(region, recursive) is a handle to the lock that lives in
  // `region` (one that travelled to this process: internal/travel.h).
  MutexHandle(std::shared_ptr<SharedRegion> region, bool recursive);

  // acquire takes the lock: non-blocking (block=false), until `deadline`, or
  // forever. Recursive handles count re-entry by the owner.
  AcquireResult acquire(bool block, const Deadline& deadline);

  // release gives the lock back. Non-recursive: anyone may release a held
  // lock; recursive: only the owner. Throws mp::RuntimeError on misuse.
  void release();

  // is_mine reports whether the calling thread (of this process) holds it.
  bool is_mine() const noexcept;

  // locked reports whether anyone holds it (a snapshot).
  bool locked() const noexcept { return state_->word.load(std::memory_order_relaxed) != 0; }

  // release_all / restore let Condition::wait drop every level of an RLock
  // and take the same depth back. Caller must own the lock.
  uint32_t release_all();
  AcquireResult restore(uint32_t depth);

  bool recursive() const noexcept { return recursive_; }
  const SharedRegion& region() const noexcept { return *region_; }
  MutexState* state() const noexcept { return state_; }

 private:
  AcquireResult lock_slow(bool block, const Deadline& deadline);
  void record_owner() noexcept;

  std::shared_ptr<SharedRegion> region_;
  MutexState* state_ = nullptr;
  bool recursive_ = false;
};

}  // namespace mp::internal
