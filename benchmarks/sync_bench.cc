// //benchmarks:sync — the cost of mp's process-shared synchronisation, each
// figure beside a peer in the same binary:
//
//   BM_Lock/<impl>/uncontended   acquire+release by one thread, nobody else
//   BM_Lock/<impl>/contended/P   P processes hammer one lock, P = 1, 2, 4, ...
//                                up to the usable CPUs (items = all pairs)
//   BM_Semaphore/<impl>/uncontended  acquire+release of a count-1 semaphore
//   BM_Event/<impl>/pingpong     set -> wait -> set back round trips between
//                                two processes
//
// impl: mp (mp::Lock, mp::Semaphore, mp::Event); raw_pshared_mutex (a
// PTHREAD_PROCESS_SHARED + PTHREAD_MUTEX_ROBUST pthread mutex, what a careful
// C programmer would use); posix_sem (sem_init with pshared=1); raw_futex
// (one futex word, sleep at once) and raw_futex_spin (spin then sleep, the
// floor for a wake-up round trip). CPython's multiprocessing.Lock, Semaphore
// and Event do the same in benchmarks/peers/sync_peer.py (BM_Lock/cpython/...,
// BM_Semaphore/cpython/..., BM_Event/cpython/...).
#include <benchmark/benchmark.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

#include "mp/internal/futex.h"
#include "mp/internal/shm.h"
#include "mp/os.h"
#include "mp/synchronize.h"

namespace {

// ------------------------------------------------------------- the peers

// RawMutex is a robust, process-shared pthread mutex in shared memory.
class RawMutex {
 public:
  RawMutex() : region_(sizeof(pthread_mutex_t)) {
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    mutex_ = new (region_.data()) pthread_mutex_t;
    pthread_mutex_init(mutex_, &attr);
    pthread_mutexattr_destroy(&attr);
  }
  void lock() {
    if (pthread_mutex_lock(mutex_) == EOWNERDEAD) pthread_mutex_consistent(mutex_);
  }
  void unlock() { pthread_mutex_unlock(mutex_); }

 private:
  mp::internal::SharedRegion region_;
  pthread_mutex_t* mutex_;
};

// Shared is the state a benchmark shares with its forked helper process.
struct Shared {
  std::atomic<uint32_t> stop{0};
  std::atomic<uint32_t> ready{0};
  std::atomic<uint32_t> word{0};  // raw futex ping-pong: 1 = ping, 2 = pong
};

class Helper {
 public:
  Helper() : region_(sizeof(Shared)), shared_(new (region_.data()) Shared()) {}
  Shared* shared() const { return shared_; }

  template <class F>
  void start(F body) {
    pid_ = mp::fork();
    if (pid_ == 0) {
      body(*shared_);
      _exit(0);
    }
    // Wait until the helper runs, so the measurement sees it.
    while (shared_->ready.load(std::memory_order_acquire) == 0) sched_yield();
  }
  void stop() {
    shared_->stop.store(1, std::memory_order_release);
    int status = 0;
    waitpid(pid_, &status, 0);
  }

 private:
  mp::internal::SharedRegion region_;
  Shared* shared_;
  pid_t pid_ = -1;
};

// ----------------------------------------------------------- BM_Lock

void BM_Lock_mp_uncontended(benchmark::State& state) {
  mp::Lock lock;
  for (auto _ : state) {
    lock.acquire();
    lock.release();
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Lock_raw_uncontended(benchmark::State& state) {
  RawMutex mutex;
  for (auto _ : state) {
    mutex.lock();
    mutex.unlock();
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_RLock_mp_uncontended(benchmark::State& state) {
  mp::RLock lock;
  for (auto _ : state) {
    lock.acquire();
    lock.release();
  }
  state.SetItemsProcessed(state.iterations());
}

// contended: P processes (this one and P-1 forked helpers, each on any CPU)
// acquire and release one lock as fast as they can. items = every
// process's pairs inside the timed loop, so reports can read the grid as
// efficiency: rate(P) / (P x rate(1)). Helpers count their pairs in a
// cache line of their own and start and stop on flags the timed loop sets.
struct alignas(64) Counter {
  std::atomic<std::uint64_t> pairs{0};
};

struct Contention {
  std::atomic<std::uint32_t> go{0};
  std::atomic<std::uint32_t> stop{0};
  std::atomic<std::uint32_t> ready{0};
  Counter counts[64];
};

template <class L>
void contended(benchmark::State& state, L& lock) {
  const int processes = static_cast<int>(state.range(0));
  mp::internal::SharedRegion region(sizeof(Contention));
  auto* c = new (region.data()) Contention();
  std::vector<pid_t> helpers;
  for (int h = 1; h < processes && h < 64; ++h) {
    const pid_t pid = mp::fork();
    if (pid == 0) {
      c->ready.fetch_add(1, std::memory_order_acq_rel);
      while (c->go.load(std::memory_order_acquire) == 0) mp::internal::cpu_relax();
      std::uint64_t n = 0;
      while (c->stop.load(std::memory_order_relaxed) == 0) {
        lock.lock();
        benchmark::ClobberMemory();
        lock.unlock();
        ++n;
      }
      c->counts[h].pairs.store(n, std::memory_order_release);
      _exit(0);
    }
    helpers.push_back(pid);
  }
  while (c->ready.load(std::memory_order_acquire) < helpers.size()) sched_yield();
  c->go.store(1, std::memory_order_release);
  for (auto _ : state) {
    lock.lock();
    benchmark::ClobberMemory();
    lock.unlock();
  }
  c->stop.store(1, std::memory_order_release);
  std::uint64_t total = state.iterations();
  for (std::size_t h = 0; h < helpers.size(); ++h) {
    int status = 0;
    waitpid(helpers[h], &status, 0);
    total += c->counts[h + 1].pairs.load(std::memory_order_acquire);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(total));
}

void BM_Lock_mp_contended(benchmark::State& state) {
  mp::Lock lock;
  contended(state, lock);
}

void BM_Lock_raw_contended(benchmark::State& state) {
  RawMutex mutex;
  contended(state, mutex);
}

// processes: 1, 2, 4, ... up to the CPUs this process may use.
void processes(benchmark::internal::Benchmark* b) {
  cpu_set_t set;
  const int cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? std::max(1, CPU_COUNT(&set)) : 1;
  for (int p = 1; p < cpus; p *= 2) b->Arg(p);
  b->Arg(cpus);
}

// ------------------------------------------------------ BM_Semaphore

void BM_Semaphore_mp_uncontended(benchmark::State& state) {
  mp::Semaphore sem(1);
  for (auto _ : state) {
    sem.acquire();
    sem.release();
  }
  state.SetItemsProcessed(state.iterations());
}

// The peer: an unnamed process-shared POSIX semaphore in shared memory.
void BM_Semaphore_posix_uncontended(benchmark::State& state) {
  mp::internal::SharedRegion region(sizeof(sem_t));
  sem_t* sem = new (region.data()) sem_t;
  sem_init(sem, /*pshared=*/1, 1);
  for (auto _ : state) {
    sem_wait(sem);
    sem_post(sem);
  }
  sem_destroy(sem);
  state.SetItemsProcessed(state.iterations());
}

// ---------------------------------------------------------- BM_Event

void BM_Event_mp_pingpong(benchmark::State& state) {
  mp::Event ping, pong;
  Helper helper;
  helper.start([&](Shared& s) {
    s.ready.store(1, std::memory_order_release);
    for (;;) {
      ping.wait();
      ping.clear();
      if (s.stop.load(std::memory_order_acquire)) return;
      pong.set();
    }
  });
  for (auto _ : state) {
    ping.set();
    pong.wait();
    pong.clear();
  }
  helper.shared()->stop.store(1);
  ping.set();
  helper.stop();
  state.SetItemsProcessed(state.iterations());
}

// futex_pingpong: the parent stores 1 and wakes, the child answers with 2.
// `spin` iterations of polling precede each sleep.
void futex_pingpong(benchmark::State& state, int spin) {
  Helper helper;
  auto await_value = [spin](std::atomic<uint32_t>& w, uint32_t want) {
    for (int i = 0; i < spin; ++i) {
      if (w.load(std::memory_order_acquire) == want) return;
      mp::internal::cpu_relax();
    }
    for (;;) {
      uint32_t v = w.load(std::memory_order_acquire);
      if (v == want) return;
      mp::internal::futex_wait(&w, v);
    }
  };
  helper.start([&](Shared& s) {
    s.ready.store(1, std::memory_order_release);
    for (;;) {
      await_value(s.word, 1);
      if (s.stop.load(std::memory_order_acquire)) return;
      s.word.store(2, std::memory_order_release);
      mp::internal::futex_wake(&s.word, 1);
    }
  });
  auto& word = helper.shared()->word;
  for (auto _ : state) {
    word.store(1, std::memory_order_release);
    mp::internal::futex_wake(&word, 1);
    await_value(word, 2);
  }
  helper.shared()->stop.store(1);
  word.store(1);
  mp::internal::futex_wake(&word, 1);
  helper.stop();
  state.SetItemsProcessed(state.iterations());
}

void BM_Event_raw_futex_pingpong(benchmark::State& state) { futex_pingpong(state, 0); }
void BM_Event_raw_futex_spin_pingpong(benchmark::State& state) { futex_pingpong(state, 250); }

}  // namespace

BENCHMARK(BM_Lock_mp_uncontended)->Name("BM_Lock/mp/uncontended");
BENCHMARK(BM_Lock_raw_uncontended)->Name("BM_Lock/raw_pshared_mutex/uncontended");
BENCHMARK(BM_RLock_mp_uncontended)->Name("BM_RLock/mp/uncontended");
BENCHMARK(BM_Lock_mp_contended)->Name("BM_Lock/mp/contended")->Apply(processes)->UseRealTime();
BENCHMARK(BM_Lock_raw_contended)
    ->Name("BM_Lock/raw_pshared_mutex/contended")
    ->Apply(processes)
    ->UseRealTime();
BENCHMARK(BM_Semaphore_mp_uncontended)->Name("BM_Semaphore/mp/uncontended");
BENCHMARK(BM_Semaphore_posix_uncontended)->Name("BM_Semaphore/posix_sem/uncontended");
BENCHMARK(BM_Event_mp_pingpong)->Name("BM_Event/mp/pingpong")->UseRealTime();
BENCHMARK(BM_Event_raw_futex_pingpong)->Name("BM_Event/raw_futex/pingpong")->UseRealTime();
BENCHMARK(BM_Event_raw_futex_spin_pingpong)
    ->Name("BM_Event/raw_futex_spin/pingpong")
    ->UseRealTime();

BENCHMARK_MAIN();
