// mp/synchronize.h — Lock, RLock, Semaphore, BoundedSemaphore, Event,
// Condition and Barrier, shared by processes and by threads.
//
// Mirrors CPython's multiprocessing.synchronize (and threading's objects of
// the same names). Every object keeps its state in an anonymous MAP_SHARED
// region created by its constructor, so it works between the threads of one
// process and between the processes forked after it was created (children
// started with mp::fork or mp::Process inherit it, as with CPython's fork
// start method). Objects are *handles*: copying one gives another name for
// the same lock, as assigning a Python name does; the shared state lives
// until the last handle in the last process that has it is gone.
//
// A lock held at fork() time stays held by its owner in the parent: it is
// shared, not copied, so the child waits for the parent's release.
//
// Timeouts are std::chrono durations, relative to the call, or an optional
// duration (std::nullopt blocks, as timeout=None); a negative timeout is
// treated as zero (CPython does the same), an enormous one as none.
//
// Where mp differs from CPython, and why:
//   * Owner death. A process that dies (even by SIGKILL) holding a Lock or an
//     RLock does not deadlock the others, as it does in CPython. The next
//     acquirer takes the lock over and acquire() throws mp::OwnerDeadError
//     *with the lock held by the caller*: the state the lock protects may be
//     half-updated; repair it, then release() as usual. Non-throwing forms
//     (try_acquire, acquire(false), acquire(timeout)) throw it too, since
//     they also hand over a held lock. Detection is by polling: a waiter
//     checks the owner's process every 20 ms (in /proc, comparing start
//     times so a reused pid is not mistaken for the owner), so a takeover
//     happens within about 20 ms of the death. A *thread* that exits holding a
//     lock while its process lives on is not detected (as in CPython), nor is
//     a process that exec()s holding one (it keeps its pid and start time).
//     With a guard, take the lock first and adopt it:
//
//       try {
//         lock.acquire();
//       } catch (const mp::OwnerDeadError&) {
//         repair_shared_state();  // we hold the lock here
//       }
//       std::lock_guard<mp::Lock> guard(lock, std::adopt_lock);
//
//     (std::lock_guard<mp::Lock> guard(lock) also works, but if its
//     constructor throws OwnerDeadError no guard exists to release the lock.)
//   * Semaphores have no owner: a unit acquired by a process that dies is
//     not given back (as in CPython). Use a Lock where recovery matters.
//   * Misuse (release of an unlocked Lock, release of an RLock by another
//     thread, wait/notify without the lock) raises mp::RuntimeError, as
//     CPython's threading does (multiprocessing.Lock raises ValueError and
//     RLock AssertionError for the same mistakes; mp uses one taxonomy).
//   * Over-release of a BoundedSemaphore and a negative initial count raise
//     mp::ValueError, as CPython.
//   * A process killed while waiting on a Condition leaves its place in the
//     wait count: a later notify() may be spent on it, and at most one later
//     wait() per such death may return early as if notified.
//
// All members are thread-safe. Lock, RLock and Condition meet the C++
// Lockable and TimedLockable requirements, so std::lock_guard,
// std::unique_lock and std::scoped_lock work with them.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

#include "mp/errors.h"
#include "mp/internal/futex.h"
#include "mp/internal/modules.h"
#include "mp/internal/shm.h"
#include "mp/internal/sync_mutex.h"
#include "mp/internal/travel.h"

namespace mp {

class Condition;
class BoundedSemaphore;
class Barrier;

namespace internal {

using Nanos = std::chrono::nanoseconds;

// deadline_in turns a relative timeout into an absolute steady deadline.
// Timeouts beyond ~100 years (duration::max(), say) mean "no timeout" rather
// than overflowing the clock.
template <class Rep, class Period>
Deadline deadline_in(std::chrono::duration<Rep, Period> timeout) {
  return deadline_after(std::optional<std::chrono::duration<Rep, Period>>(timeout));
}

// OptionalTimeout is how code that passes a timeout along spells one:
// std::nullopt blocks, as CPython's timeout=None.
using OptionalTimeout = std::optional<std::chrono::duration<double>>;

// deadline_opt is deadline_in for an optional timeout.
inline Deadline deadline_opt(const OptionalTimeout& timeout) {
  return timeout ? deadline_in(*timeout) : std::nullopt;
}

// deadline_at turns a time point of any clock into a steady deadline.
template <class Clock, class Duration>
Deadline deadline_at(std::chrono::time_point<Clock, Duration> tp) {
  if constexpr (std::is_same_v<Clock, std::chrono::steady_clock>) {
    return std::chrono::time_point_cast<std::chrono::steady_clock::duration>(tp);
  } else {
    return deadline_in(tp - Clock::now());
  }
}

// lock_result turns an AcquireResult into acquire()'s bool, throwing
// OwnerDeadError for a takeover.
bool lock_result(AcquireResult r);

// LockOps gives Lock, RLock and Condition one set of CPython's acquire /
// release and the standard Lockable / TimedLockable names, over the
// MutexHandle each keeps in its `mutex_` (Derived befriends LockOps).
//   * acquire() blocks until the lock is taken and returns true;
//     acquire(false) takes it only if it is free now and says whether it
//     did; acquire(timeout) waits at most about `timeout` (std::nullopt: no
//     timeout) and returns false when it ran out. Throws OwnerDeadError (the
//     lock is then held by the caller) when taken over from a dead process.
//   * try_acquire() is acquire(false); lock/unlock/try_lock/try_lock_for/
//     try_lock_until are the same operations under the standard's names.
template <class Derived>
class LockOps {
 public:
  bool acquire(bool block = true) { return lock_result(m().acquire(block, std::nullopt)); }
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) {
    return lock_result(m().acquire(true, deadline_in(timeout)));
  }
  bool acquire(OptionalTimeout timeout) {
    return lock_result(m().acquire(true, deadline_opt(timeout)));
  }
  bool try_acquire() { return acquire(false); }
  void release() { m().release(); }

  void lock() { acquire(); }
  void unlock() { release(); }
  bool try_lock() { return acquire(false); }
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> d) {
    return acquire(d);
  }
  template <class Clock, class Duration>
  bool try_lock_until(std::chrono::time_point<Clock, Duration> tp) {
    return lock_result(m().acquire(true, deadline_at(tp)));
  }

 private:
  MutexHandle& m() { return static_cast<Derived*>(this)->mutex_; }
};

}  // namespace internal

// Lock is a non-recursive mutual-exclusion lock (multiprocessing.Lock,
// threading.Lock). Any thread of any process may release it, not just the
// one that acquired it; the holder acquiring it again blocks (or fails,
// without blocking).
class Lock : public internal::LockOps<Lock> {
 public:
  // Lock() creates an unlocked lock.
  Lock() : mutex_(false) {}
  // A Lock is a handle: copies (and the copies a child of any start method
  // gets, mp/context.h) lock the same lock.

  // acquire(), acquire(false), acquire(timeout), try_acquire() and the
  // Lockable / TimedLockable names: see internal::LockOps above. The holder
  // acquiring again blocks (acquire(false) returns false).
  //
  // release() frees the lock, whoever took it. Throws mp::RuntimeError
  // ("release unlocked lock") when it is not held.

  // locked() reports whether some thread holds the lock (a snapshot).
  bool locked() const noexcept { return mutex_.locked(); }

 private:
  friend class Condition;
  friend class internal::LockOps<Lock>;
  friend struct codec_traits<Lock>;
  explicit Lock(internal::MutexHandle m) : mutex_(std::move(m)) {}
  internal::MutexHandle mutex_;
};

// RLock is a recursive lock (multiprocessing.RLock, threading.RLock): the
// owning thread may acquire it again and must release it as many times.
// Only the owner may release it.
class RLock : public internal::LockOps<RLock> {
 public:
  // RLock() creates an unlocked recursive lock.
  RLock() : mutex_(true) {}

  // acquire() / acquire(false) / acquire(timeout) and the Lockable names as
  // Lock's (internal::LockOps); re-entry by the owner always succeeds at
  // once and adds one level.
  //
  // release() drops one level; the lock is free after the last. Throws
  // mp::RuntimeError ("cannot release un-acquired lock") when the caller is
  // not the owner.

  // is_owned() reports whether the calling thread holds the lock.
  bool is_owned() const noexcept { return mutex_.is_mine(); }
  // locked() reports whether any thread holds it (a snapshot).
  bool locked() const noexcept { return mutex_.locked(); }

 private:
  friend class Condition;
  friend class internal::LockOps<RLock>;
  friend struct codec_traits<RLock>;
  explicit RLock(internal::MutexHandle m) : mutex_(std::move(m)) {}
  internal::MutexHandle mutex_;
};

namespace internal {
struct SemaphoreState {
  std::atomic<uint32_t> value{0};    // the count; the futex word
  std::atomic<uint32_t> waiters{0};  // threads that may sleep on value
  uint32_t max_value = 0;            // BoundedSemaphore's bound
  bool bounded = false;
};
}  // namespace internal

// Semaphore is a counting semaphore (multiprocessing.Semaphore). release()
// may raise the count above its initial value. See the note on dead
// processes above.
class Semaphore {
 public:
  // Semaphore(value) starts with `value` units; a negative value raises
  // mp::ValueError ("semaphore initial value must be >= 0").
  explicit Semaphore(int value = 1) : Semaphore(value, false) {}

  // acquire() takes one unit, blocking while there are none; acquire(false)
  // takes one only if available now; acquire(timeout) waits at most about
  // `timeout`. Each returns whether a unit was taken.
  bool acquire(bool block = true) { return acquire_until(block, std::nullopt); }
  template <class Rep, class Period>
  bool acquire(std::chrono::duration<Rep, Period> timeout) {
    return acquire_until(true, internal::deadline_in(timeout));
  }
  bool acquire(internal::OptionalTimeout timeout) {
    return acquire_until(true, internal::deadline_opt(timeout));
  }
  bool try_acquire() { return acquire(false); }

  // release(n) gives back n units (waking up to n waiters).
  void release(unsigned n = 1);

  // get_value() is the current count (a snapshot).
  int get_value() const noexcept {
    return static_cast<int>(state_->value.load(std::memory_order_relaxed));
  }

  // Lockable-style names, so std::lock_guard can hold a unit.
  void lock() { acquire(); }
  void unlock() { release(); }
  bool try_lock() { return acquire(false); }
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> d) {
    return acquire(d);
  }

 protected:
  Semaphore(int value, bool bounded);
  explicit Semaphore(std::shared_ptr<internal::SharedRegion> region)
      : region_(std::move(region)),
        state_(static_cast<internal::SemaphoreState*>(region_->data())) {}
  friend struct codec_traits<Semaphore>;
  friend struct codec_traits<BoundedSemaphore>;

 private:
  bool acquire_until(bool block, const internal::Deadline& deadline);

  std::shared_ptr<internal::SharedRegion> region_;
  internal::SemaphoreState* state_ = nullptr;
};

// BoundedSemaphore is a Semaphore whose count may never exceed its initial
// value: a release() that would raises mp::ValueError ("Semaphore released
// too many times"), as CPython.
class BoundedSemaphore : public Semaphore {
 public:
  explicit BoundedSemaphore(int value = 1) : Semaphore(value, true) {}

 private:
  friend struct codec_traits<BoundedSemaphore>;
  explicit BoundedSemaphore(std::shared_ptr<internal::SharedRegion> region)
      : Semaphore(std::move(region)) {}
};

namespace internal {
struct EventState {
  std::atomic<uint32_t> flag{0};     // 1 when set; the futex word
  std::atomic<uint32_t> waiters{0};  // threads that may sleep on flag
};
}  // namespace internal

// Event is a flag that threads and processes wait on (multiprocessing.Event).
class Event {
 public:
  // Event() creates a cleared event.
  Event();

  // set() sets the flag and wakes every waiter.
  void set();
  // clear() resets the flag.
  void clear() noexcept { state_->flag.store(0, std::memory_order_seq_cst); }
  // is_set() reports the flag.
  bool is_set() const noexcept { return state_->flag.load(std::memory_order_acquire) != 0; }

  // wait() blocks until the flag is set and returns true; wait(timeout)
  // waits at most about `timeout` and returns whether the flag is set.
  bool wait() { return wait_until(std::nullopt); }
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) {
    return wait_until(internal::deadline_in(timeout));
  }
  bool wait(internal::OptionalTimeout timeout) {
    return wait_until(internal::deadline_opt(timeout));
  }

 private:
  friend struct codec_traits<Event>;
  explicit Event(std::shared_ptr<internal::SharedRegion> region)
      : region_(std::move(region)), state_(static_cast<internal::EventState*>(region_->data())) {}
  bool wait_until(const internal::Deadline& deadline);

  std::shared_ptr<internal::SharedRegion> region_;
  internal::EventState* state_ = nullptr;
};

namespace internal {
// ConditionState is written only under the condition's lock, except seq
// (bumped under the lock, read by sleepers as their futex word).
struct ConditionState {
  std::atomic<uint32_t> seq{0};      // bumped by every effective notify
  std::atomic<uint32_t> waiting{0};  // waiters not yet notified or timed out
  std::atomic<uint32_t> tokens{0};   // notifications not yet taken; <= waiting
};
}  // namespace internal

// Condition is a condition variable over a Lock or an RLock
// (multiprocessing.Condition). Its lock is a fresh RLock unless one is given.
//
// notify(n) wakes exactly min(n, waiting) waiters, across processes: each
// notification is taken by exactly one waiter, whose wait() returns true. A
// waiter whose timeout ran out before a notification was made for it returns
// false and takes none (CPython's sleeping/woken count design gives the same
// guarantee; mp keeps the counts and a wake-up sequence number in shared
// memory, under the condition's own lock).
class Condition : public internal::LockOps<Condition> {
 public:
  // Condition() uses a new RLock; Condition(lock) uses the given lock (a
  // handle: other copies of it lock the same thing).
  Condition() : Condition(RLock()) {}
  explicit Condition(Lock lock) : Condition(std::move(lock.mutex_), 0) {}
  explicit Condition(RLock lock) : Condition(std::move(lock.mutex_), 0) {}

  // acquire / release / Lockable: the underlying lock's (internal::LockOps).

  // wait() releases the lock (every level of an RLock), sleeps until
  // notified, re-acquires the lock to the same depth and returns true.
  // wait(timeout) returns false if no notification came in about `timeout`
  // (the lock is re-acquired either way). Throws mp::RuntimeError ("cannot
  // wait on un-acquired lock") when the caller does not hold the lock.
  bool wait() { return wait_until(std::nullopt); }
  template <class Rep, class Period>
  bool wait(std::chrono::duration<Rep, Period> timeout) {
    return wait_until(internal::deadline_in(timeout));
  }
  bool wait(internal::OptionalTimeout timeout) {
    return wait_until(internal::deadline_opt(timeout));
  }

  // wait_for(pred) waits until pred() is true; wait_for(pred, timeout) gives
  // up after about `timeout` in total. Returns the last value of pred().
  template <class Pred>
  bool wait_for(Pred pred) {
    return wait_for_until(pred, std::nullopt);
  }
  template <class Pred, class Rep, class Period>
  bool wait_for(Pred pred, std::chrono::duration<Rep, Period> timeout) {
    return wait_for_until(pred, internal::deadline_in(timeout));
  }
  template <class Pred>
  bool wait_for(Pred pred, internal::OptionalTimeout timeout) {
    return wait_for_until(pred, internal::deadline_opt(timeout));
  }

  // notify(n) wakes up to n waiters; notify_all() wakes all of them. Both
  // raise mp::RuntimeError ("cannot notify on un-acquired lock") when the
  // caller does not hold the lock.
  void notify(unsigned n = 1);
  void notify_all();

 private:
  friend class Barrier;
  friend class internal::LockOps<Condition>;
  Condition(internal::MutexHandle mutex, int);
  bool wait_until(const internal::Deadline& deadline);
  template <class Pred>
  bool wait_for_until(Pred& pred, const internal::Deadline& deadline) {
    bool result = pred();
    while (!result) {
      if (internal::expired(deadline)) break;
      wait_until(deadline);
      result = pred();
    }
    return result;
  }

  friend struct codec_traits<Condition>;
  Condition(internal::MutexHandle mutex, std::shared_ptr<internal::SharedRegion> region)
      : mutex_(std::move(mutex)),
        region_(std::move(region)),
        state_(static_cast<internal::ConditionState*>(region_->data())) {}

  internal::MutexHandle mutex_;
  std::shared_ptr<internal::SharedRegion> region_;
  internal::ConditionState* state_ = nullptr;
};

namespace internal {
struct BarrierState {
  int32_t parties = 0;
  int32_t count = 0;        // threads inside wait() of the current generation
  int32_t state = 0;        // 0 filling, 1 draining, -2 broken
  uint32_t generation = 0;  // bumped by reset(): older waiters leave broken
  uint32_t released = 0;    // generation + 1 of the last one released
};
}  // namespace internal

// Barrier is a reusable rendezvous point for a fixed number of threads or
// processes (multiprocessing.Barrier, threading.Barrier).
//
// Each wait() blocks until `parties` callers are waiting, then all of them
// return, each with a distinct index in 0..parties-1; the barrier is then
// ready for the next generation. `action`, if given, runs once per
// generation in the last caller to arrive (in whichever process that is),
// before any caller leaves; if it throws, the barrier breaks and the
// exception propagates from that caller's wait().
//
// A barrier breaks when a wait() times out, when abort() is called or when the
// action throws; every current and later wait() then raises
// mp::BrokenBarrierError until reset(). reset() returns a barrier to its
// initial state; callers waiting at that moment get BrokenBarrierError.
//
// A party that dies holding the barrier's lock (inside the action, which
// runs under it) breaks the barrier: every waiter gets BrokenBarrierError
// within about 150 ms (waits re-check every 100 ms), whatever its timeout,
// and later calls (broken(), n_waiting(), wait()) see a broken barrier
// instead of OwnerDeadError. A party that dies inside wait() stays counted:
// its generation may be released one party short and never finish draining,
// so give wait() a timeout where that can happen: every wait() honours its
// timeout in every state (raising BrokenBarrierError and breaking the
// barrier). reset() always brings the barrier back, dead parties forgotten.
class Barrier {
 public:
  // Barrier(parties, action, timeout) — parties must be >= 1 (else
  // mp::ValueError); `timeout` is the default for wait().
  explicit Barrier(int parties, std::function<void()> action = nullptr,
                   std::optional<std::chrono::nanoseconds> timeout = std::nullopt);

  // wait() waits for the others (for at most the default timeout, if any)
  // and returns this caller's index; wait(timeout) uses `timeout` instead.
  int wait() { return wait_until(internal::deadline_after(timeout_)); }
  template <class Rep, class Period>
  int wait(std::chrono::duration<Rep, Period> timeout) {
    return wait_until(internal::deadline_in(timeout));
  }
  int wait(internal::OptionalTimeout timeout) {
    return wait_until(internal::deadline_opt(timeout));
  }

  // reset() returns the barrier to the empty, unbroken state.
  void reset();
  // abort() breaks the barrier.
  void abort();

  // parties() is the number of callers needed to pass.
  int parties() const noexcept { return state_->parties; }
  // n_waiting() is the number of callers waiting now.
  int n_waiting();
  // broken() reports whether the barrier is broken.
  bool broken();

 private:
  int wait_until(const internal::Deadline& deadline);
  void lock_state();
  void wait_slice(const internal::Deadline& deadline);
  void release_generation();
  void leave_generation();
  void break_barrier();

  friend struct codec_traits<Barrier>;
  Barrier(std::function<void()> action, std::optional<std::chrono::nanoseconds> timeout,
          Condition cond, std::shared_ptr<internal::SharedRegion> region)
      : action_(std::move(action)),
        timeout_(timeout),
        cond_(std::move(cond)),
        region_(std::move(region)),
        state_(static_cast<internal::BarrierState*>(region_->data())) {}

  std::function<void()> action_;
  std::optional<std::chrono::nanoseconds> timeout_;
  Condition cond_;
  std::shared_ptr<internal::SharedRegion> region_;
  internal::BarrierState* state_ = nullptr;
};

// ------------------------------------------------------------------------
// Travelling (mp/context.h): each object above can be an argument of a
// Process (or a Pool's start) of any start method, and arrives as a handle
// to the same shared object. Their encodings carry file descriptors, so they
// travel only that way (internal/travel.h), not through a Queue or a Pipe.

namespace internal {
inline void write_mutex(Encoder& e, const MutexHandle& m, std::string_view what) {
  write_region(e, m.region(), what);
  e.write(m.recursive());
}
inline MutexHandle read_mutex(Decoder& d) {
  auto region = read_shared_region(d, sizeof(MutexState));
  bool recursive = d.read<bool>();
  return MutexHandle(std::move(region), recursive);
}
}  // namespace internal

template <>
struct codec_traits<Lock> {
  static void encode(Encoder& e, const Lock& l) { internal::write_mutex(e, l.mutex_, "mp::Lock"); }
  static Lock decode(Decoder& d) { return Lock(internal::read_mutex(d)); }
};

template <>
struct codec_traits<RLock> {
  static void encode(Encoder& e, const RLock& l) {
    internal::write_mutex(e, l.mutex_, "mp::RLock");
  }
  static RLock decode(Decoder& d) { return RLock(internal::read_mutex(d)); }
};

template <>
struct codec_traits<Semaphore> {
  static void encode(Encoder& e, const Semaphore& s) {
    internal::write_region(e, *s.region_, "mp::Semaphore");
  }
  static Semaphore decode(Decoder& d) {
    return Semaphore(internal::read_shared_region(d, sizeof(internal::SemaphoreState)));
  }
};

template <>
struct codec_traits<BoundedSemaphore> {
  static void encode(Encoder& e, const BoundedSemaphore& s) {
    internal::write_region(e, *s.region_, "mp::BoundedSemaphore");
  }
  static BoundedSemaphore decode(Decoder& d) {
    return BoundedSemaphore(internal::read_shared_region(d, sizeof(internal::SemaphoreState)));
  }
};

template <>
struct codec_traits<Event> {
  static void encode(Encoder& e, const Event& ev) {
    internal::write_region(e, *ev.region_, "mp::Event");
  }
  static Event decode(Decoder& d) {
    return Event(internal::read_shared_region(d, sizeof(internal::EventState)));
  }
};

template <>
struct codec_traits<Condition> {
  static void encode(Encoder& e, const Condition& c) {
    internal::write_mutex(e, c.mutex_, "mp::Condition");
    internal::write_region(e, *c.region_, "mp::Condition");
  }
  static Condition decode(Decoder& d) {
    auto mutex = internal::read_mutex(d);
    auto region = internal::read_shared_region(d, sizeof(internal::ConditionState));
    return Condition(std::move(mutex), std::move(region));
  }
};

// A Barrier's action travels when it is a plain function (or none).
template <>
struct codec_traits<Barrier> {
  static void encode(Encoder& e, const Barrier& b) {
    std::uint64_t action = 0;
    if (b.action_) {
      auto* fn = b.action_.target<void (*)()>();
      if (!fn) {
        throw ValueError(
            "mp::Barrier: an action that is not a plain function (a closure) cannot travel to "
            "a child of the spawn or forkserver start method");
      }
      action = reinterpret_cast<std::uintptr_t>(*fn);
    }
    e.write(action);
    e.write(b.timeout_);
    codec_traits<Condition>::encode(e, b.cond_);
    internal::write_region(e, *b.region_, "mp::Barrier");
  }
  static Barrier decode(Decoder& d) {
    auto action = d.read<std::uint64_t>();
    auto timeout = d.read<std::optional<std::chrono::nanoseconds>>();
    Condition cond = codec_traits<Condition>::decode(d);
    auto region = internal::read_shared_region(d, sizeof(internal::BarrierState));
    std::function<void()> fn;
    if (action)
      fn = internal::relocate(reinterpret_cast<void (*)()>(static_cast<std::uintptr_t>(action)));
    return Barrier(std::move(fn), timeout, std::move(cond), std::move(region));
  }
};

}  // namespace mp
