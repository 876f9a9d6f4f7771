#include "mp/synchronize.h"

#include <algorithm>
#include <climits>
#include <mutex>
#include <new>

namespace mp {
namespace internal {

bool lock_result(AcquireResult r) {
  switch (r) {
    case AcquireResult::kAcquired:
      return true;
    case AcquireResult::kOwnerDead:
      throw OwnerDeadError(
          "the previous owner of the lock died holding it; the caller now holds "
          "the lock and the state it protects may be inconsistent");
    case AcquireResult::kBusy:
    case AcquireResult::kTimedOut:
      return false;
  }
  return false;
}

namespace {
// Bounded spin before an Event waiter sleeps: a cross-process futex round
// trip costs ~20 us here, a spin-then-sleep one ~0.5 us (PERFORMANCE.md).
constexpr int kEventSpin = 250;  // ~10 us of PAUSE on this machine
}  // namespace

}  // namespace internal

// ---------------------------------------------------------------- Semaphore

Semaphore::Semaphore(int value, bool bounded) {
  if (value < 0) throw ValueError("semaphore initial value must be >= 0");
  region_ = std::make_shared<internal::SharedRegion>(sizeof(internal::SemaphoreState));
  state_ = new (region_->data()) internal::SemaphoreState();
  state_->value.store(static_cast<uint32_t>(value), std::memory_order_relaxed);
  state_->max_value = static_cast<uint32_t>(value);
  state_->bounded = bounded;
}

bool Semaphore::acquire_until(bool block, const internal::Deadline& deadline) {
  auto& value = state_->value;
  for (;;) {
    uint32_t v = value.load(std::memory_order_relaxed);
    while (v > 0) {
      if (value.compare_exchange_weak(v, v - 1, std::memory_order_acquire,
                                      std::memory_order_relaxed)) {
        return true;
      }
    }
    if (!block || internal::expired(deadline)) return false;
    state_->waiters.fetch_add(1, std::memory_order_seq_cst);
    internal::futex_wait_until(&value, 0, deadline);
    state_->waiters.fetch_sub(1, std::memory_order_relaxed);
  }
}

void Semaphore::release(unsigned n) {
  if (n == 0) return;
  auto& value = state_->value;
  if (state_->bounded) {
    uint32_t v = value.load(std::memory_order_relaxed);
    do {
      if (static_cast<uint64_t>(v) + n > state_->max_value) {
        throw ValueError("Semaphore released too many times");
      }
    } while (!value.compare_exchange_weak(v, v + n, std::memory_order_seq_cst,
                                          std::memory_order_relaxed));
  } else {
    uint32_t v = value.load(std::memory_order_relaxed);
    do {
      if (static_cast<uint64_t>(v) + n > INT_MAX) {
        throw ValueError("semaphore value would overflow");
      }
    } while (!value.compare_exchange_weak(v, v + n, std::memory_order_seq_cst,
                                          std::memory_order_relaxed));
  }
  if (state_->waiters.load(std::memory_order_seq_cst) > 0) {
    internal::futex_wake(&value, n > INT_MAX ? INT_MAX : static_cast<int>(n));
  }
}

// -------------------------------------------------------------------- Event

Event::Event() {
  region_ = std::make_shared<internal::SharedRegion>(sizeof(internal::EventState));
  state_ = new (region_->data()) internal::EventState();
}

void Event::set() {
  state_->flag.store(1, std::memory_order_seq_cst);
  if (state_->waiters.load(std::memory_order_seq_cst) > 0) {
    internal::futex_wake_all(&state_->flag);
  }
}

bool Event::wait_until(const internal::Deadline& deadline) {
  auto& flag = state_->flag;
  if (flag.load(std::memory_order_acquire)) return true;
  for (int i = 0; i < internal::kEventSpin; ++i) {
    internal::cpu_relax();
    if (flag.load(std::memory_order_acquire)) return true;
  }
  for (;;) {
    if (internal::expired(deadline)) return flag.load(std::memory_order_acquire) != 0;
    state_->waiters.fetch_add(1, std::memory_order_seq_cst);
    bool in_time = true;
    if (flag.load(std::memory_order_seq_cst) == 0) {
      in_time = internal::futex_wait_until(&flag, 0, deadline);
    }
    state_->waiters.fetch_sub(1, std::memory_order_relaxed);
    if (flag.load(std::memory_order_acquire)) return true;
    if (!in_time) return false;
  }
}

// ---------------------------------------------------------------- Condition

Condition::Condition(internal::MutexHandle mutex, int) : mutex_(std::move(mutex)) {
  region_ = std::make_shared<internal::SharedRegion>(sizeof(internal::ConditionState));
  state_ = new (region_->data()) internal::ConditionState();
}

bool Condition::wait_until(const internal::Deadline& deadline) {
  if (!mutex_.is_mine()) throw RuntimeError("cannot wait on un-acquired lock");
  auto& st = *state_;
  st.waiting.fetch_add(1, std::memory_order_relaxed);
  bool owner_died = false;
  bool notified = false;
  for (;;) {
    // Read the sequence number before letting go of the lock: a notify made
    // after that changes it, so the futex wait below cannot miss it.
    uint32_t seq = st.seq.load(std::memory_order_relaxed);
    uint32_t depth = mutex_.release_all();
    bool in_time = internal::futex_wait_until(&st.seq, seq, deadline);
    if (mutex_.restore(depth) == internal::AcquireResult::kOwnerDead) owner_died = true;
    // Under the lock again: take a notification if one is pending.
    uint32_t tokens = st.tokens.load(std::memory_order_relaxed);
    if (tokens > 0) {
      st.tokens.store(tokens - 1, std::memory_order_relaxed);
      st.waiting.fetch_sub(1, std::memory_order_relaxed);
      notified = true;
      break;
    }
    if (!in_time || internal::expired(deadline)) {
      st.waiting.fetch_sub(1, std::memory_order_relaxed);
      break;
    }
    // Spurious wake-up, or another waiter took the notification: sleep again.
  }
  if (owner_died) internal::lock_result(internal::AcquireResult::kOwnerDead);
  return notified;
}

void Condition::notify(unsigned n) {
  if (!mutex_.is_mine()) throw RuntimeError("cannot notify on un-acquired lock");
  auto& st = *state_;
  uint32_t waiting = st.waiting.load(std::memory_order_relaxed);
  uint32_t tokens = st.tokens.load(std::memory_order_relaxed);
  uint32_t k = std::min<uint32_t>(n, waiting - tokens);
  if (k == 0) return;
  st.tokens.store(tokens + k, std::memory_order_relaxed);
  st.seq.fetch_add(1, std::memory_order_release);
  internal::futex_wake(&st.seq, static_cast<int>(std::min<uint32_t>(k, INT_MAX)));
}

void Condition::notify_all() { notify(UINT_MAX); }

// ------------------------------------------------------------------ Barrier
//
// The algorithm is CPython's threading.Barrier (which multiprocessing.Barrier
// reuses over a process-shared Condition), with its state in shared memory.

Barrier::Barrier(int parties, std::function<void()> action,
                 std::optional<std::chrono::nanoseconds> timeout)
    : action_(std::move(action)), timeout_(timeout), cond_(Lock()) {
  if (parties < 1) throw ValueError("parties must be >= 1");
  region_ = std::make_shared<internal::SharedRegion>(sizeof(internal::BarrierState));
  state_ = new (region_->data()) internal::BarrierState();
  state_->parties = parties;
}

namespace {
// Waits in the barrier re-check at least this often: a party that died
// holding the lock is noticed at the next re-acquire.
constexpr std::chrono::milliseconds kBarrierSlice{100};
}  // namespace

// lock_state takes the barrier's lock. A holder that died (inside the action,
// or mid-update) left the state unknown: the barrier is broken.
void Barrier::lock_state() {
  try {
    cond_.acquire();
  } catch (const OwnerDeadError&) {
    break_barrier();  // the takeover left the lock with us
  }
}

// wait_slice sleeps on the condition until notified, the deadline or one
// slice, whichever is first; it returns with the lock held.
void Barrier::wait_slice(const internal::Deadline& deadline) {
  auto until = std::chrono::steady_clock::now() + kBarrierSlice;
  if (deadline && *deadline < until) until = *deadline;
  try {
    cond_.wait_until(until);
  } catch (const OwnerDeadError&) {
    break_barrier();
  }
}

int Barrier::wait_until(const internal::Deadline& deadline) {
  lock_state();
  std::unique_lock<Condition> guard(cond_, std::adopt_lock);
  // Wait while the previous generation drains.
  while (state_->state == 1) {
    if (internal::expired(deadline)) {
      break_barrier();
      throw BrokenBarrierError(
          "barrier wait timed out while the previous generation was leaving (a party may have "
          "died inside wait()); the barrier is broken");
    }
    wait_slice(deadline);
  }
  if (state_->state < 0) throw BrokenBarrierError("the barrier is broken");
  const uint32_t generation = state_->generation;
  const int index = state_->count++;
  // A reset() zeroes the count and starts a new generation: the waiters of
  // the old one leave without touching it.
  auto leave = [&] {
    if (state_->generation != generation) return;
    --state_->count;
    leave_generation();
  };
  try {
    if (index + 1 == state_->parties) {
      release_generation();
    } else {
      while (state_->generation == generation && state_->state == 0) {
        if (internal::expired(deadline)) {
          break_barrier();
          throw BrokenBarrierError("barrier wait timed out; the barrier is broken");
        }
        wait_slice(deadline);
      }
      if (state_->released != generation + 1) throw BrokenBarrierError("the barrier is broken");
    }
  } catch (...) {
    leave();
    throw;
  }
  leave();
  return index;
}

void Barrier::release_generation() {
  try {
    if (action_) action_();
    state_->state = 1;
    state_->released = state_->generation + 1;
    cond_.notify_all();
  } catch (...) {
    break_barrier();
    throw;
  }
}

void Barrier::leave_generation() {
  if (state_->count == 0 && state_->state == 1) {
    state_->state = 0;
    cond_.notify_all();
  }
}

void Barrier::break_barrier() {
  state_->state = -2;
  cond_.notify_all();
}

void Barrier::reset() {
  lock_state();
  std::unique_lock<Condition> guard(cond_, std::adopt_lock);
  // Whatever the state, the barrier starts over: the current waiters get
  // BrokenBarrierError, and parties that died inside wait() are forgotten.
  ++state_->generation;
  state_->count = 0;
  state_->state = 0;
  cond_.notify_all();
}

void Barrier::abort() {
  lock_state();
  std::unique_lock<Condition> guard(cond_, std::adopt_lock);
  break_barrier();
}

int Barrier::n_waiting() {
  lock_state();
  std::unique_lock<Condition> guard(cond_, std::adopt_lock);
  return state_->state == 0 ? state_->count : 0;
}

bool Barrier::broken() {
  lock_state();
  std::unique_lock<Condition> guard(cond_, std::adopt_lock);
  return state_->state == -2;
}

}  // namespace mp
