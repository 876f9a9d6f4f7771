// mp/internal/futex.h — process-shared futex wait/wake on a 32-bit word.
//
// Internal: the blocking primitive under queues, pool channels and the
// synchronisation objects. The word must live in MAP_SHARED memory (see
// mp/internal/shm.h) for waits to work across processes, so the futex calls
// are the shared (non-PRIVATE) kind.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>

namespace mp::internal {

// futex_wait blocks while *word == expected, until woken, until `timeout`
// elapses (relative; nullopt blocks forever) or a signal interrupts.
// Returns false only when the timeout elapsed; spurious wake-ups return true,
// so callers re-check their condition in a loop.
bool futex_wait(std::atomic<uint32_t>* word, uint32_t expected,
                std::optional<std::chrono::nanoseconds> timeout = std::nullopt);

// futex_wait_until is futex_wait with an absolute CLOCK_MONOTONIC deadline,
// for loops that must not stretch a timeout across spurious wake-ups.
bool futex_wait_until(std::atomic<uint32_t>* word, uint32_t expected,
                      std::optional<std::chrono::steady_clock::time_point> deadline);

// futex_wake wakes up to `count` waiters on `word`; returns how many woke.
int futex_wake(std::atomic<uint32_t>* word, int count);

// futex_wake_all wakes every waiter on `word`.
int futex_wake_all(std::atomic<uint32_t>* word);

// Deadline helpers shared by every timed wait in mp: a timeout becomes an
// absolute steady_clock deadline once, at the start of the call.
using Deadline = std::optional<std::chrono::steady_clock::time_point>;

// A timeout of about 95 years or more (duration::max() among them) is
// forever; a negative one is zero ("try once"). The check comes before any
// conversion, which would overflow for such durations (hours::max() in
// nanoseconds wraps, and a wrapped deadline has already passed).
template <class Rep, class Period>
Deadline deadline_after(std::optional<std::chrono::duration<Rep, Period>> timeout) {
  if (!timeout) return std::nullopt;
  const auto t = *timeout;
  const auto now = std::chrono::steady_clock::now();
  if (t <= t.zero()) return now;
  if (std::chrono::duration<double>(t).count() >= 3.0e9) return std::nullopt;
  return now + std::chrono::ceil<std::chrono::steady_clock::duration>(t);
}

// cpu_relax is the spin-loop hint for the bounded spins that precede a
// futex sleep (pause on x86, yield on ARM).
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// expired reports whether a deadline has passed (never, for no deadline).
inline bool expired(const Deadline& d) { return d && std::chrono::steady_clock::now() >= *d; }

}  // namespace mp::internal
