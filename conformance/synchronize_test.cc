// Conformance: mp/synchronize.h.
// CPython docs: multiprocessing — "Synchronization primitives"
// (multiprocessing.Lock, RLock, Semaphore, BoundedSemaphore, Event,
// Condition, Barrier), and threading — "Lock Objects", "RLock Objects",
// "Condition Objects", "Semaphore Objects", "Event Objects", "Barrier
// Objects", whose semantics the multiprocessing versions copy. Plus mp's own
// promise: a process killed holding a Lock/RLock does not deadlock the rest.
//
// Where one interface serves threads and processes, a typed test runs the
// same scenario with std::thread workers and with child processes. Every
// child runs a target that travels (a function taking mp objects by value),
// so the suite runs under each start method (conformance/defs.bzl): the
// objects reach a spawn or forkserver child as handles to the same state.
#include "mp/synchronize.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <thread>
#include <tuple>
#include <vector>

#include "conformance/test_util.h"
#include "mp/os.h"
#include "mp/process.h"
#include "mp/shared.h"

namespace {

using namespace std::chrono_literals;
using mp_test::joined_exitcode;
using mp_test::require;
using mp_test::run_worker;
using mp_test::start_child;
using mp_test::Stopwatch;

// Threads and Processes start a worker running body(args...) and join it:
// join() is 0 when the body returned. A Processes worker is a child process
// of the run's start method.
struct Threads {
  class Worker {
   public:
    template <class F, class... Args>
    explicit Worker(F body, Args... args)
        : thread_([this, body, task = std::make_tuple(args...)] {
            rc_ = run_worker([&] {
              std::apply(body, task);
              return 0;
            });
          }) {}
    int join() {
      thread_.join();
      return rc_;
    }

   private:
    int rc_ = -1;
    std::thread thread_;
  };
};

struct Processes {
  class Worker {
   public:
    template <class F, class... Args>
    explicit Worker(F body, Args... args) : process_(start_child(body, args...)) {}
    int join() { return joined_exitcode(process_); }

   private:
    mp::Process process_;
  };
};

template <class W>
class AcrossWorkers : public ::testing::Test {};
using WorkerKinds = ::testing::Types<Threads, Processes>;
class WorkerKindNames {
 public:
  template <class T>
  static std::string GetName(int) {
    return std::is_same_v<T, Threads> ? "Threads" : "Processes";
  }
};
TYPED_TEST_SUITE(AcrossWorkers, WorkerKinds, WorkerKindNames);

void expect_elapsed_about(std::chrono::milliseconds elapsed, std::chrono::milliseconds timeout) {
  EXPECT_GE(elapsed, timeout - 50ms);
  EXPECT_LT(elapsed, timeout + 1s);
}

// ------------------------------------------------------------- targets
// Workers' bodies, shared by threads and children of every start method.

// hold_until takes `lock`, says so on `held`, and releases it once `done`
// is set.
template <class L>
void hold_until(L lock, mp::Event held, mp::Event done) {
  lock.acquire();
  held.set();
  done.wait();
  lock.release();
}

// hold_forever takes `lock` `depth` times, says so on `held`, and blocks
// until killed.
template <class L>
void hold_forever(L lock, int depth, mp::Event held) {
  for (int i = 0; i < depth; ++i) lock.acquire();
  held.set();
  for (;;) pause();
}

// wait_then_release gives back one unit of `lock` (a Lock, a Semaphore)
// once `go` is set.
template <class L>
void wait_then_release(L lock, mp::Event go) {
  go.wait();
  lock.release();
}

// expect_try_acquire checks that a non-blocking acquire of `lock` gives
// `expected` (and gives back what it took).
template <class L>
void expect_try_acquire(L lock, bool expected) {
  bool got = lock.acquire(false);
  if (got) lock.release();
  require(got == expected, expected ? "the lock is held elsewhere" : "acquired a held lock");
}

void release_lock(mp::Lock lock) { lock.release(); }

void increment_under_lock(mp::Lock lock, mp::RawValue<int> counter) {
  for (int i = 0; i < 5000; ++i) {
    std::lock_guard<mp::Lock> guard(lock);
    int v = counter.get_obj();
    if (i % 64 == 0) sched_yield();  // widen the window a lost update needs
    counter.get_obj() = v + 1;
  }
}

void acquire_then_mark(mp::Lock lock, mp::Event started, mp::RawValue<int> got) {
  started.set();
  require(lock.acquire(10s), "acquire timed out");
  got.get_obj() = 1;
  lock.release();
}

// take_over_from_the_dead waits for `lock`, whose holder is about to be
// killed, and expects to learn of the death holding the lock.
void take_over_from_the_dead(mp::Lock lock, mp::Event waiting) {
  waiting.set();
  try {
    lock.acquire(20s);
  } catch (const mp::OwnerDeadError&) {
    require(!lock.acquire(false), "took over, yet a non-blocking acquire succeeded");
    lock.release();
    return;
  }
  throw std::runtime_error("acquired without learning of the death");
}

// count_under_lock adds 1 to `counter` under `lock`, n times, taking the
// lock over from a dead holder.
void count_under_lock(mp::Lock lock, mp::RawValue<long> counter, int n) {
  for (int i = 0; i < n; ++i) {
    try {
      require(lock.acquire(20s), "acquire timed out");
    } catch (const mp::OwnerDeadError&) {
      // Held now; the counter is a single store, so nothing to repair.
    }
    ++counter.get_obj();
    lock.release();
  }
}

void count_until_killed(mp::Lock lock, mp::RawValue<long> counter, mp::Event started) {
  started.set();
  count_under_lock(lock, counter, 1 << 30);
}

void expect_not_owner(mp::RLock lock) {
  require(!lock.is_owned(), "the child owns the parent's RLock");
  require(!lock.acquire(false), "the child acquired the parent's RLock");
  try {
    lock.release();
  } catch (const mp::RuntimeError&) {
    return;
  }
  throw std::runtime_error("the child released the parent's RLock");
}

void pass_semaphore(mp::Semaphore sem, mp::Value<int> inside, mp::Value<int> most) {
  for (int i = 0; i < 300; ++i) {
    sem.acquire();
    int now = inside.update([](int& x) { ++x; });
    most.update([now](int& m) { m = std::max(m, now); });
    sched_yield();
    inside.update([](int& x) { --x; });
    sem.release();
  }
}

void wait_then_set(mp::Event go, mp::Event ev) {
  go.wait();
  ev.set();
}

void await_event(mp::Semaphore ready, mp::Event ev) {
  ready.release();
  require(ev.wait(20s), "the event was not set");
}

void notify_when(mp::Condition cond, mp::Event go) {
  go.wait();
  std::lock_guard<mp::Condition> g(cond);  // possible only once the waiter let go
  cond.notify();
}

void count_to_three(mp::Condition cond, mp::Value<int> state) {
  for (int i = 1; i <= 3; ++i) {
    std::lock_guard<mp::Condition> g(cond);
    state.store(i);
    cond.notify_all();
  }
}

// notified_waiter posts `ready` while holding the lock, just before wait(),
// and counts itself in `woken` after a notified return.
void notified_waiter(mp::Condition cond, mp::Semaphore ready, mp::RawValue<int> woken) {
  std::lock_guard<mp::Condition> g(cond);
  ready.release();
  require(cond.wait(30s), "not notified");
  ++woken.get_obj();
}

void expect_wait_times_out(mp::Condition cond) {
  std::lock_guard<mp::Condition> g(cond);
  require(!cond.wait(100ms), "notified, but nobody notifies");
}

// mark_barrier_index counts the index its wait() returned in `seen`.
void mark_barrier_index(mp::Barrier barrier, mp::Array<int> seen) {
  int idx = barrier.wait(10s);
  std::lock_guard<mp::RLock> g(seen.get_lock());
  ++seen.at(idx);
}

// A Barrier's action travels only as a plain function (mp/synchronize.h),
// so what an action touches is a global of the process that runs it, which
// each party points at the shared object it was given before it waits.
std::optional<mp::RawValue<int>> g_action_runs;
std::optional<mp::Event> g_action_entered;

// A test that points the globals at its objects in this process lets go of
// them when it ends (they hold shared memory; the suite checks that nothing
// is left open at its end).
struct ActionGlobalsReleased {
  ~ActionGlobalsReleased() {
    g_action_runs.reset();
    g_action_entered.reset();
  }
};

void count_action_run() { ++g_action_runs->get_obj(); }

// enter_and_linger says it runs, then keeps the barrier's lock for 3 s.
void enter_and_linger() {
  g_action_entered->set();
  std::this_thread::sleep_for(3s);
}

void pass_rounds(mp::Barrier barrier, mp::RawValue<int> runs, mp::RawArray<int> hits, int rounds) {
  g_action_runs = runs;
  const int parties = barrier.parties();
  for (int round = 0; round < rounds; ++round) {
    int idx = barrier.wait(30s);
    // Distinct per generation: each slot is hit once, no locking needed.
    ++hits[round * parties + idx];
  }
}

void expect_action_ran_first(mp::Barrier barrier, mp::RawValue<int> runs) {
  g_action_runs = runs;
  for (int g = 1; g <= 3; ++g) {
    barrier.wait(10s);
    require(runs.get_obj() >= g, "left before the generation's action ran");
  }
}

void expect_broken_wait(mp::Barrier barrier) {
  try {
    barrier.wait(20s);
  } catch (const mp::BrokenBarrierError&) {
    return;
  }
  throw std::runtime_error("passed a barrier that should have broken");
}

void wait_through_reset(mp::Barrier barrier) {
  expect_broken_wait(barrier);
  barrier.wait(20s);  // after the reset the barrier works again
}

void wait_at(mp::Barrier barrier) { barrier.wait(); }

void wait_last(mp::Barrier barrier, mp::Event entered) {
  g_action_entered = entered;
  barrier.wait();
}

// record_wait_outcome stores 1 when its 2 s wait passed, 2 when it broke,
// 3 on any other error.
void record_wait_outcome(mp::Barrier barrier, mp::Value<int> outcome) {
  try {
    barrier.wait(2s);
    outcome.store(1);
  } catch (const mp::BrokenBarrierError&) {
    outcome.store(2);
  } catch (...) {
    outcome.store(3);
  }
}

// wait_for_waiters returns once `n` callers wait on `barrier` (or after 10 s).
void wait_for_waiters(mp::Barrier& barrier, int n) {
  for (Stopwatch sw; barrier.n_waiting() < n && sw.elapsed() < 10s;) {
    std::this_thread::sleep_for(1ms);
  }
}

// ===================================================================== Lock

TYPED_TEST(AcrossWorkers, LockExcludesConcurrentIncrements) {
  using Worker = typename TypeParam::Worker;
  mp::Lock lock;
  mp::RawValue<int> counter(0);
  Worker a(increment_under_lock, lock, counter), b(increment_under_lock, lock, counter);
  EXPECT_EQ(a.join(), 0);
  EXPECT_EQ(b.join(), 0);
  EXPECT_EQ(counter.get_obj(), 10000);
}

TYPED_TEST(AcrossWorkers, LockMayBeReleasedByAnotherWorker) {
  using Worker = typename TypeParam::Worker;
  mp::Lock lock;
  ASSERT_TRUE(lock.acquire());
  Worker w(release_lock, lock);
  EXPECT_EQ(w.join(), 0);
  EXPECT_FALSE(lock.locked());
  EXPECT_TRUE(lock.acquire(false));
  lock.release();
}

TYPED_TEST(AcrossWorkers, LockAcquireWithTimeoutReturnsFalseWhileWorkerHoldsIt) {
  using Worker = typename TypeParam::Worker;
  mp::Lock lock;
  mp::Event held, done;
  Worker w(hold_until<mp::Lock>, lock, held, done);
  ASSERT_TRUE(held.wait(10s));
  EXPECT_FALSE(lock.acquire(false));
  Stopwatch sw;
  EXPECT_FALSE(lock.acquire(300ms));
  expect_elapsed_about(sw.elapsed(), 300ms);
  done.set();
  EXPECT_EQ(w.join(), 0);
  EXPECT_TRUE(lock.acquire(5s));
  lock.release();
}

TYPED_TEST(AcrossWorkers, LockBlockedAcquireProceedsWhenReleased) {
  using Worker = typename TypeParam::Worker;
  mp::Lock lock;
  mp::RawValue<int> got(0);
  lock.acquire();
  mp::Event started;
  Worker w(acquire_then_mark, lock, started, got);
  ASSERT_TRUE(started.wait(10s));
  EXPECT_EQ(got.get_obj(), 0);
  lock.release();
  EXPECT_EQ(w.join(), 0);
  EXPECT_EQ(got.get_obj(), 1);
}

TEST(Lock, HolderNonBlockingAcquireReturnsFalse) {
  mp::Lock lock;
  ASSERT_TRUE(lock.acquire());
  EXPECT_FALSE(lock.acquire(false));
  EXPECT_FALSE(lock.try_acquire());
  EXPECT_FALSE(lock.acquire(50ms));
  lock.release();
}

TEST(Lock, ReleaseOfUnlockedLockRaises) {
  mp::Lock lock;
  EXPECT_THROW(lock.release(), mp::RuntimeError);
  lock.acquire();
  lock.release();
  try {
    lock.release();
    FAIL() << "no exception";
  } catch (const mp::RuntimeError& e) {
    EXPECT_STREQ(e.what(), "release unlocked lock");
  }
}

TEST(Lock, MeetsLockableAndTimedLockable) {
  mp::Lock lock;
  {
    std::lock_guard<mp::Lock> guard(lock);
    EXPECT_TRUE(lock.locked());
  }
  EXPECT_FALSE(lock.locked());
  {
    std::unique_lock<mp::Lock> ul(lock, std::defer_lock);
    EXPECT_TRUE(ul.try_lock_for(10ms));
    EXPECT_FALSE(lock.try_lock());
    ul.unlock();
    EXPECT_TRUE(ul.try_lock_until(std::chrono::steady_clock::now() + 10ms));
    EXPECT_TRUE(ul.owns_lock());
  }
  EXPECT_FALSE(lock.locked());
  std::timed_mutex other;
  std::scoped_lock both(lock, other);
  EXPECT_TRUE(lock.locked());
}

TEST(Lock, HugeTimeoutMeansNoTimeoutNotAnOverflow) {
  mp::Lock lock;
  EXPECT_TRUE(lock.acquire(std::chrono::hours::max()));
  EXPECT_FALSE(lock.acquire(false));
  mp::Event go;
  mp::Process child = start_child(wait_then_release<mp::Lock>, lock, go);
  go.set();
  EXPECT_TRUE(lock.acquire(std::chrono::nanoseconds::max()));  // waits for the child
  EXPECT_EQ(joined_exitcode(child), 0);
  lock.release();
}

TEST(Timeouts, OptionalTimeoutsAreAcceptedAndNulloptBlocks) {
  mp::Lock lock;
  EXPECT_TRUE(lock.acquire(std::optional<std::chrono::duration<double>>()));
  EXPECT_FALSE(lock.acquire(std::optional<std::chrono::duration<double>>(0.05)));
  lock.release();
  mp::Event ev;
  Stopwatch sw;
  EXPECT_FALSE(ev.wait(std::optional<std::chrono::duration<double>>(0.1)));
  expect_elapsed_about(sw.elapsed(), 100ms);
  ev.set();
  EXPECT_TRUE(ev.wait(std::nullopt));
  mp::Semaphore sem(0);
  EXPECT_FALSE(sem.acquire(std::optional<std::chrono::duration<double>>(0.01)));
  mp::Condition cond;
  std::lock_guard<mp::Condition> g(cond);
  EXPECT_FALSE(cond.wait(std::optional<std::chrono::duration<double>>(0.01)));
  EXPECT_TRUE(cond.wait_for([] { return true; }, std::nullopt));
  mp::Barrier one(1);
  EXPECT_EQ(one.wait(std::nullopt), 0);
}

TEST(Lock, CopiesShareOneLock) {
  mp::Lock a;
  mp::Lock b = a;
  a.acquire();
  EXPECT_FALSE(b.acquire(false));
  b.release();
  EXPECT_FALSE(a.locked());
}

// ------------------------------------------------------------- owner death

// child_holding starts a child that takes `lock` `depth` times and then
// blocks until killed; it returns once the child holds the lock.
template <class L>
mp::Process child_holding(L lock, int depth = 1) {
  mp::Event held;
  mp::Process p = start_child(hold_forever<L>, lock, depth, held);
  if (!held.wait(10s)) ADD_FAILURE() << "child did not take the lock";
  return p;
}

TEST(LockOwnerDeath, ParentRecoversLockOfChildKilledHoldingIt) {
  mp::Lock lock;
  mp::Process holder = child_holding(lock);
  holder.kill();
  // Not reaped yet (fork, spawn: the child is ours and nobody waited for it):
  // the dead owner is a zombie, which must count as dead.
  Stopwatch sw;
  EXPECT_THROW(lock.acquire(10s), mp::OwnerDeadError);
  EXPECT_LT(sw.elapsed(), 2s);
  // The parent now holds the lock.
  EXPECT_TRUE(lock.locked());
  EXPECT_FALSE(lock.acquire(false));
  lock.release();
  EXPECT_TRUE(lock.acquire(false));  // an ordinary lock again
  lock.release();
  EXPECT_EQ(joined_exitcode(holder), -SIGKILL);
}

TEST(LockOwnerDeath, BlockedWaiterInAnotherProcessTakesOverWithOwnerDeadError) {
  mp::Lock lock;
  mp::Process holder = child_holding(lock);
  mp::Event waiting;
  mp::Process waiter = start_child(take_over_from_the_dead, lock, waiting);
  ASSERT_TRUE(waiting.wait(10s));
  holder.kill();
  EXPECT_EQ(joined_exitcode(holder), -SIGKILL);
  EXPECT_EQ(joined_exitcode(waiter), 0);
  EXPECT_FALSE(lock.locked());
}

TEST(LockOwnerDeath, TryAcquireOfReapedDeadOwnersLockTakesItOver) {
  mp::Lock lock;
  mp::Process holder = child_holding(lock);
  holder.kill();
  EXPECT_EQ(joined_exitcode(holder), -SIGKILL);
  EXPECT_THROW(lock.try_acquire(), mp::OwnerDeadError);
  EXPECT_TRUE(lock.locked());
  lock.release();
}

TEST(LockOwnerDeath, TimedAcquireOnLiveOwnerStillTimesOut) {
  mp::Lock lock;
  mp::Process holder = child_holding(lock);
  Stopwatch sw;
  EXPECT_FALSE(lock.acquire(200ms));  // alive: no takeover
  expect_elapsed_about(sw.elapsed(), 200ms);
  holder.kill();
  holder.join();
  EXPECT_THROW(lock.acquire(5s), mp::OwnerDeadError);
  lock.release();
}

TEST(LockOwnerDeath, SurvivorsFinishWhenAPeerIsKilledMidLoop) {
  mp::Lock lock;
  mp::RawValue<long> counter(0);
  mp::Event started;
  mp::Process victim = start_child(count_until_killed, lock, counter, started);
  ASSERT_TRUE(started.wait(10s));
  std::vector<mp::Process> survivors;
  for (int i = 0; i < 2; ++i) {
    survivors.push_back(start_child(count_under_lock, lock, counter, 20000));
  }
  while (counter.get_obj() < 5000) sched_yield();
  victim.kill();
  EXPECT_EQ(joined_exitcode(victim), -SIGKILL);
  for (auto& p : survivors) EXPECT_EQ(joined_exitcode(p), 0);
  // Whoever holds it now (maybe the dead victim) must let us in.
  try {
    EXPECT_TRUE(lock.acquire(10s));
  } catch (const mp::OwnerDeadError&) {
  }
  EXPECT_GE(counter.get_obj(), 40000);
  lock.release();
}

TEST(LockOwnerDeath, ReusedPidIsNotMistakenForTheOwner) {
  // The owner is identified by pid *and* process start time: a live process
  // that merely has the dead owner's pid does not count as the owner.
  const pid_t me = mp::getpid();
  const uint64_t stamp = mp::internal::self_stamp();
  EXPECT_EQ(static_cast<pid_t>(stamp >> 40), me);
  EXPECT_TRUE(mp::internal::stamp_alive(me, stamp));
  EXPECT_FALSE(mp::internal::stamp_alive(me, stamp + 1));
  EXPECT_TRUE(mp::internal::stamp_alive(me, 0));  // no stamp: pid only
}

TEST(RLockOwnerDeath, ParentRecoversRLockOfChildKilledHoldingItTwice) {
  mp::RLock lock;
  mp::Process holder = child_holding(lock, 2);
  holder.kill();
  EXPECT_THROW(lock.acquire(10s), mp::OwnerDeadError);
  EXPECT_TRUE(lock.is_owned());
  lock.release();  // one level: the dead owner's depth is gone
  EXPECT_FALSE(lock.locked());
  EXPECT_EQ(joined_exitcode(holder), -SIGKILL);
}

// ==================================================================== RLock

TEST(RLock, OwnerMayAcquireAgainAndNeedsAsManyReleases) {
  mp::RLock lock;
  ASSERT_TRUE(lock.acquire());
  ASSERT_TRUE(lock.acquire(false));
  ASSERT_TRUE(lock.acquire(10ms));
  lock.release();
  lock.release();
  EXPECT_TRUE(lock.locked());
  mp::Process child = start_child(expect_try_acquire<mp::RLock>, lock, false);
  EXPECT_EQ(joined_exitcode(child), 0);  // still held after 2 of 3 releases
  lock.release();
  EXPECT_FALSE(lock.locked());
  mp::Process after = start_child(expect_try_acquire<mp::RLock>, lock, true);
  EXPECT_EQ(joined_exitcode(after), 0);
}

TEST(RLock, ReleaseOfUnownedRLockRaises) {
  mp::RLock lock;
  try {
    lock.release();
    FAIL() << "no exception";
  } catch (const mp::RuntimeError& e) {
    EXPECT_STREQ(e.what(), "cannot release un-acquired lock");
  }
}

TYPED_TEST(AcrossWorkers, RLockReleaseByNonOwnerRaises) {
  using Worker = typename TypeParam::Worker;
  mp::RLock lock;
  mp::Event held, done;
  Worker w(hold_until<mp::RLock>, lock, held, done);
  ASSERT_TRUE(held.wait(10s));
  EXPECT_FALSE(lock.is_owned());
  EXPECT_THROW(lock.release(), mp::RuntimeError);
  EXPECT_FALSE(lock.acquire(false));
  done.set();
  EXPECT_EQ(w.join(), 0);
  EXPECT_TRUE(lock.acquire(false));
  lock.release();
}

TEST(RLock, ChildDoesNotInheritOwnership) {
  mp::RLock lock;
  lock.acquire();
  mp::Process child = start_child(expect_not_owner, lock);
  EXPECT_EQ(joined_exitcode(child), 0);
  lock.release();
}

TEST(RLock, MeetsLockable) {
  mp::RLock lock;
  std::lock_guard<mp::RLock> outer(lock);
  std::unique_lock<mp::RLock> inner(lock, std::defer_lock);
  EXPECT_TRUE(inner.try_lock_for(1ms));
  EXPECT_TRUE(lock.is_owned());
}

// ================================================================ Semaphore

TEST(Semaphore, NegativeInitialValueRaises) {
  EXPECT_THROW(mp::Semaphore(-1), mp::ValueError);
  EXPECT_THROW(mp::BoundedSemaphore(-1), mp::ValueError);
}

TEST(Semaphore, DefaultsToOneAndReleaseMayExceedInitialValue) {
  mp::Semaphore sem;
  EXPECT_EQ(sem.get_value(), 1);
  sem.release();
  sem.release(3);
  EXPECT_EQ(sem.get_value(), 5);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(sem.acquire(false));
  EXPECT_FALSE(sem.acquire(false));
  EXPECT_EQ(sem.get_value(), 0);
}

TEST(BoundedSemaphore, OverReleaseRaises) {
  mp::BoundedSemaphore sem(2);
  EXPECT_THROW(sem.release(), mp::ValueError);
  sem.acquire();
  sem.release();
  EXPECT_EQ(sem.get_value(), 2);
  sem.acquire();
  EXPECT_THROW(sem.release(2), mp::ValueError);
  EXPECT_EQ(sem.get_value(), 1);
}

TEST(Semaphore, AcquireWithTimeoutReturnsFalseAfterTimeout) {
  mp::Semaphore sem(0);
  Stopwatch sw;
  EXPECT_FALSE(sem.acquire(200ms));
  expect_elapsed_about(sw.elapsed(), 200ms);
}

TYPED_TEST(AcrossWorkers, SemaphoreBlocksAtZeroUntilAWorkerReleases) {
  using Worker = typename TypeParam::Worker;
  mp::Semaphore sem(0);
  mp::Event go;
  Worker w(wait_then_release<mp::Semaphore>, sem, go);
  EXPECT_FALSE(sem.acquire(false));
  go.set();
  EXPECT_TRUE(sem.acquire(10s));
  EXPECT_EQ(w.join(), 0);
  EXPECT_EQ(sem.get_value(), 0);
}

TEST(Semaphore, NeverAdmitsMoreHoldersThanItsValueAcrossProcesses) {
  mp::Semaphore sem(2);
  mp::Value<int> inside(0), most(0);
  std::vector<mp::Process> children;
  for (int p = 0; p < 4; ++p) children.push_back(start_child(pass_semaphore, sem, inside, most));
  for (auto& p : children) EXPECT_EQ(joined_exitcode(p), 0);
  // Never more than two inside; whether two ever overlapped depends on the
  // scheduler (2 shared cores), so that is not asserted here.
  EXPECT_LE(most.load(), 2);
  EXPECT_GE(most.load(), 1);
  EXPECT_EQ(sem.get_value(), 2);
}

// ==================================================================== Event

TEST(Event, StartsClearAndSetClearChangeIsSet) {
  mp::Event ev;
  EXPECT_FALSE(ev.is_set());
  ev.set();
  EXPECT_TRUE(ev.is_set());
  EXPECT_TRUE(ev.wait());
  EXPECT_TRUE(ev.wait(0ms));
  ev.clear();
  EXPECT_FALSE(ev.is_set());
}

TEST(Event, WaitWithTimeoutReturnsFalseAfterTimeout) {
  mp::Event ev;
  Stopwatch sw;
  EXPECT_FALSE(ev.wait(200ms));
  expect_elapsed_about(sw.elapsed(), 200ms);
}

TYPED_TEST(AcrossWorkers, EventWaitReturnsTrueOnceAWorkerSetsIt) {
  using Worker = typename TypeParam::Worker;
  mp::Event ev, go;
  Worker w(wait_then_set, go, ev);
  go.set();
  EXPECT_TRUE(ev.wait(10s));
  EXPECT_TRUE(ev.is_set());
  EXPECT_EQ(w.join(), 0);
}

TEST(Event, SetWakesEveryWaitingProcess) {
  mp::Event ev;
  mp::Semaphore ready(0);
  std::vector<mp::Process> children;
  for (int i = 0; i < 3; ++i) children.push_back(start_child(await_event, ready, ev));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(ready.acquire(10s));
  ev.set();
  for (auto& p : children) EXPECT_EQ(joined_exitcode(p), 0);
}

// ================================================================ Condition

TEST(Condition, WaitOrNotifyWithoutTheLockRaises) {
  mp::Condition cond;
  EXPECT_THROW(cond.wait(1ms), mp::RuntimeError);
  EXPECT_THROW(cond.notify(), mp::RuntimeError);
  EXPECT_THROW(cond.notify_all(), mp::RuntimeError);
  // Held by another process is not held by us.
  mp::Lock lock;
  mp::Condition on_lock(lock);
  mp::Event held, done;
  mp::Process holder = start_child(hold_until<mp::Lock>, lock, held, done);
  ASSERT_TRUE(held.wait(10s));
  EXPECT_THROW(on_lock.notify(), mp::RuntimeError);
  done.set();
  EXPECT_EQ(joined_exitcode(holder), 0);
}

TEST(Condition, WaitWithTimeoutReturnsFalseAndHoldsTheLockAgain) {
  mp::Condition cond;
  std::unique_lock<mp::Condition> guard(cond);
  Stopwatch sw;
  EXPECT_FALSE(cond.wait(200ms));
  expect_elapsed_about(sw.elapsed(), 200ms);
  cond.notify();  // would raise if the lock were not held again
}

TEST(Condition, WaitReleasesEveryLevelOfAnRLockAndRestoresThem) {
  mp::RLock lock;
  mp::Condition cond(lock);
  lock.acquire();
  lock.acquire();
  mp::Event go;
  mp::Process notifier = start_child(notify_when, cond, go);
  go.set();
  EXPECT_TRUE(cond.wait(10s));
  EXPECT_EQ(joined_exitcode(notifier), 0);
  EXPECT_TRUE(lock.is_owned());
  lock.release();
  EXPECT_TRUE(lock.is_owned());  // second level restored
  lock.release();
  EXPECT_FALSE(lock.locked());
}

TEST(Condition, WaitForReturnsOncePredicateHoldsOrFalseAfterTimeout) {
  mp::Lock lock;
  mp::Condition cond(lock);
  mp::Value<int> state(0);
  mp::Process counter = start_child(count_to_three, cond, state);
  {
    std::lock_guard<mp::Condition> g(cond);
    EXPECT_TRUE(cond.wait_for([&] { return state.load() == 3; }, 10s));
    Stopwatch sw;
    EXPECT_FALSE(cond.wait_for([&] { return state.load() == 4; }, 200ms));
    expect_elapsed_about(sw.elapsed(), 200ms);
  }
  EXPECT_EQ(joined_exitcode(counter), 0);
}

// ConditionNotify starts 3 waiting processes and 3 waiting threads on one
// condition; each counts itself in `woken` after a notified return.
class ConditionNotify : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 3; ++i) {
      children_.push_back(start_child(notified_waiter, cond_, ready_, woken_));
    }
    for (int i = 0; i < 3; ++i) {
      threads_.emplace_back([this] {
        thread_rc_ += run_worker([this] {
          notified_waiter(cond_, ready_, woken_);
          return 0;
        });
      });
    }
    // Each waiter posts `ready_` while holding the lock, just before wait():
    // once all six posted, the next notify (made under the lock) finds them
    // all inside wait().
    for (int i = 0; i < 6; ++i) ASSERT_TRUE(ready_.acquire(20s));
  }
  void TearDown() override {
    {
      std::lock_guard<mp::Condition> g(cond_);
      cond_.notify_all();
    }
    for (auto& p : children_) EXPECT_EQ(joined_exitcode(p), 0);
    for (auto& t : threads_) t.join();
    EXPECT_EQ(thread_rc_.load(), 0);
  }
  // woken_after lets the notified waiters run, then reads the count.
  int woken_after_settling(int expect) {
    for (Stopwatch sw; sw.elapsed() < 10s;) {
      {
        std::lock_guard<mp::Condition> g(cond_);
        if (woken_.get_obj() >= expect) break;
      }
      std::this_thread::sleep_for(1ms);
    }
    // Give any extra (wrong) wake-ups time to show before we count.
    std::this_thread::sleep_for(200ms);
    std::lock_guard<mp::Condition> g(cond_);
    return woken_.get_obj();
  }

  mp::Condition cond_;
  mp::Semaphore ready_{0};
  mp::RawValue<int> woken_{0};
  std::vector<mp::Process> children_;
  std::vector<std::thread> threads_;
  std::atomic<int> thread_rc_{0};
};

TEST_F(ConditionNotify, NotifyWakesExactlyOneOfThreeProcessesAndThreeThreads) {
  {
    std::lock_guard<mp::Condition> g(cond_);
    cond_.notify();
  }
  EXPECT_EQ(woken_after_settling(1), 1);
}

TEST_F(ConditionNotify, NotifyTwoWakesExactlyTwo) {
  {
    std::lock_guard<mp::Condition> g(cond_);
    cond_.notify(2);
  }
  EXPECT_EQ(woken_after_settling(2), 2);
  {
    std::lock_guard<mp::Condition> g(cond_);
    cond_.notify(2);
  }
  EXPECT_EQ(woken_after_settling(4), 4);
}

TEST_F(ConditionNotify, NotifyAllWakesAllSix) {
  {
    std::lock_guard<mp::Condition> g(cond_);
    cond_.notify_all();
  }
  EXPECT_EQ(woken_after_settling(6), 6);
}

TEST(Condition, TimedOutWaiterConsumesNoNotification) {
  mp::Condition cond;
  mp::Semaphore long_waiting(0);
  mp::RawValue<int> woken(0);
  // A waits with a short timeout and gives up; B waits long. A later
  // notify() must go to B, not be spent on A's stale place in the queue.
  mp::Process a = start_child(expect_wait_times_out, cond);
  EXPECT_EQ(joined_exitcode(a), 0);
  // B posts while holding the lock: the test's notify comes after its wait.
  mp::Process b = start_child(notified_waiter, cond, long_waiting, woken);
  ASSERT_TRUE(long_waiting.acquire(10s));
  {
    std::lock_guard<mp::Condition> g(cond);
    cond.notify();
  }
  Stopwatch sw;
  EXPECT_EQ(joined_exitcode(b), 0);
  EXPECT_LT(sw.elapsed(), 5s);
  EXPECT_EQ(woken.get_obj(), 1);
}

TEST(Condition, TimedOutWaiterAmongSleepersTakesNoNotification) {
  // Two waiters in one wait: the short one times out while the long one is
  // still asleep; notify(1) then wakes the long one (threads variant).
  mp::Condition cond;
  std::atomic<int> short_result{-1}, long_result{-1};
  mp::Semaphore ready(0);
  std::thread long_waiter([&] {
    std::lock_guard<mp::Condition> g(cond);
    ready.release();
    long_result = cond.wait(20s);
  });
  ASSERT_TRUE(ready.acquire(10s));
  std::thread short_waiter([&] {
    std::lock_guard<mp::Condition> g(cond);
    short_result = cond.wait(100ms);
  });
  short_waiter.join();
  EXPECT_EQ(short_result.load(), 0);
  {
    std::lock_guard<mp::Condition> g(cond);
    cond.notify_all();  // one waiter left: one notification, none banked
  }
  long_waiter.join();
  EXPECT_EQ(long_result.load(), 1);
  std::lock_guard<mp::Condition> g(cond);
  Stopwatch sw;
  EXPECT_FALSE(cond.wait(200ms)) << "a notification was left for the timed-out waiter";
  expect_elapsed_about(sw.elapsed(), 200ms);
}

// ================================================================== Barrier

TEST(Barrier, ZeroPartiesRaises) { EXPECT_THROW(mp::Barrier(0), mp::ValueError); }

TYPED_TEST(AcrossWorkers, BarrierGivesEachWaiterADistinctIndex) {
  using Worker = typename TypeParam::Worker;
  mp::Barrier barrier(4);
  mp::Array<int> seen(4);
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < 3; ++i) {
    workers.push_back(std::make_unique<Worker>(mark_barrier_index, barrier, seen));
  }
  mark_barrier_index(barrier, seen);
  for (auto& w : workers) EXPECT_EQ(w->join(), 0);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(seen[i], 1) << "index " << i;
}

TEST(Barrier, FiveProcessesPassItOneThousandTimes) {
  constexpr int kParties = 5, kRounds = 1000;
  mp::RawValue<int> actions(0);
  mp::Barrier barrier(kParties, count_action_run);
  mp::RawArray<int> hits(kParties * kRounds);
  std::vector<mp::Process> children;
  for (int p = 0; p < kParties; ++p) {
    children.push_back(start_child(pass_rounds, barrier, actions, hits, kRounds));
  }
  for (auto& p : children) EXPECT_EQ(joined_exitcode(p), 0);
  EXPECT_EQ(actions.get_obj(), kRounds);
  int ones = 0;
  for (int h : hits) ones += (h == 1);
  EXPECT_EQ(ones, kParties * kRounds);
  EXPECT_FALSE(barrier.broken());
}

TEST(Barrier, ActionRunsOncePerGenerationBeforeAnyoneLeaves) {
  mp::RawValue<int> actions(0);
  const ActionGlobalsReleased released;
  g_action_runs = actions;
  mp::Barrier barrier(3, count_action_run);
  std::vector<mp::Process> children;
  for (int p = 0; p < 2; ++p) {
    children.push_back(start_child(expect_action_ran_first, barrier, actions));
  }
  for (int g = 1; g <= 3; ++g) {
    barrier.wait(10s);
    EXPECT_GE(actions.get_obj(), g);
  }
  for (auto& p : children) EXPECT_EQ(joined_exitcode(p), 0);
  EXPECT_EQ(actions.get_obj(), 3);
}

TEST(Barrier, TimeoutBreaksTheBarrierForEveryWaiter) {
  mp::Barrier barrier(3);
  mp::Process waiter = start_child(expect_broken_wait, barrier);
  wait_for_waiters(barrier, 1);
  ASSERT_EQ(barrier.n_waiting(), 1);
  Stopwatch sw;
  EXPECT_THROW(barrier.wait(200ms), mp::BrokenBarrierError);
  expect_elapsed_about(sw.elapsed(), 200ms);
  EXPECT_EQ(joined_exitcode(waiter), 0);
  EXPECT_TRUE(barrier.broken());
  EXPECT_THROW(barrier.wait(1s), mp::BrokenBarrierError);
}

TEST(Barrier, DefaultTimeoutFromConstructorApplies) {
  mp::Barrier barrier(2, nullptr, std::chrono::milliseconds(150));
  Stopwatch sw;
  EXPECT_THROW(barrier.wait(), mp::BrokenBarrierError);
  expect_elapsed_about(sw.elapsed(), 150ms);
}

TEST(Barrier, AbortGivesWaitersBrokenBarrierError) {
  mp::Barrier barrier(3);
  std::vector<mp::Process> children;
  for (int i = 0; i < 2; ++i) children.push_back(start_child(expect_broken_wait, barrier));
  wait_for_waiters(barrier, 2);
  EXPECT_EQ(barrier.n_waiting(), 2);
  barrier.abort();
  for (auto& p : children) EXPECT_EQ(joined_exitcode(p), 0);
  EXPECT_TRUE(barrier.broken());
  EXPECT_EQ(barrier.n_waiting(), 0);
}

TEST(Barrier, ResetBreaksCurrentWaitersAndMakesItUsableAgain) {
  mp::Barrier barrier(2);
  mp::Process child = start_child(wait_through_reset, barrier);
  wait_for_waiters(barrier, 1);
  barrier.reset();
  EXPECT_FALSE(barrier.broken());
  barrier.wait(20s);
  EXPECT_EQ(joined_exitcode(child), 0);
}

TEST(Barrier, ResetRepairsABrokenBarrier) {
  mp::Barrier barrier(2);
  barrier.abort();
  EXPECT_TRUE(barrier.broken());
  EXPECT_THROW(barrier.wait(1s), mp::BrokenBarrierError);
  barrier.reset();
  EXPECT_FALSE(barrier.broken());
  std::thread t([&] { barrier.wait(10s); });
  EXPECT_NO_THROW(barrier.wait(10s));
  t.join();
}

TEST(Barrier, ActionThatThrowsBreaksTheBarrier) {
  mp::Barrier barrier(2, [] { throw std::runtime_error("action failed"); });
  std::atomic<int> broken_seen{0};
  std::thread t([&] {
    try {
      barrier.wait(10s);
    } catch (const mp::BrokenBarrierError&) {
      ++broken_seen;
    } catch (const std::runtime_error&) {
      ++broken_seen;  // this thread arrived last and ran the action
    }
  });
  try {
    barrier.wait(10s);
  } catch (const mp::BrokenBarrierError&) {
    ++broken_seen;
  } catch (const std::runtime_error&) {
    ++broken_seen;
  }
  t.join();
  EXPECT_EQ(broken_seen.load(), 2);
  EXPECT_TRUE(barrier.broken());
}

TEST(Barrier, NWaitingAndPartiesReportState) {
  mp::Barrier barrier(2);
  EXPECT_EQ(barrier.parties(), 2);
  EXPECT_EQ(barrier.n_waiting(), 0);
  std::thread t([&] { barrier.wait(10s); });
  for (Stopwatch sw; barrier.n_waiting() < 1 && sw.elapsed() < 10s;) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(barrier.n_waiting(), 1);
  barrier.wait(10s);
  t.join();
  EXPECT_EQ(barrier.n_waiting(), 0);
}

}  // namespace

// Issue 15, item 2: a party SIGKILLed inside the action (which runs under
// the barrier's lock) breaks the barrier: the other waiter gets
// BrokenBarrierError well within its timeout, broken() reports it (no
// OwnerDeadError, no deadlock on a second call), and reset() recovers it.
TEST(BarrierDeath, PartyKilledInsideTheActionBreaksTheBarrier) {
  mp::Event in_action;
  const ActionGlobalsReleased released;
  g_action_entered = in_action;  // the action runs in this process after the reset
  mp::Barrier b(2, enter_and_linger);
  mp::Value<int> outcome(0);
  mp::Process waiter = start_child(record_wait_outcome, b, outcome);
  wait_for_waiters(b, 1);
  mp::Process last = start_child(wait_last, b, in_action);
  ASSERT_TRUE(in_action.wait(std::chrono::seconds(10)));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  mp_test::Stopwatch sw;
  last.kill();
  last.join();
  waiter.join(std::chrono::seconds(10));
  EXPECT_LT(sw.elapsed(), std::chrono::milliseconds(1900));  // before its 2 s timeout
  EXPECT_EQ(outcome.load(), 2);
  EXPECT_TRUE(b.broken());
  EXPECT_TRUE(b.broken());  // asked twice: no deadlock
  EXPECT_THROW(b.wait(std::chrono::seconds(1)), mp::BrokenBarrierError);
  b.reset();
  EXPECT_FALSE(b.broken());
  std::thread other([&] { b.wait(std::chrono::seconds(10)); });
  // The action runs again in whichever party is last (3 s); both pass.
  EXPECT_NO_THROW(b.wait(std::chrono::seconds(10)));
  other.join();
}

// Issue 15, item 14: a party killed inside wait() stays counted, but every
// later wait() honours its timeout, and reset() brings the barrier back
// for three live parties.
TEST(BarrierDeath, PartyKilledInsideWaitLeavesTimeoutsWorkingAndResetRecovers) {
  mp::Barrier b(3);
  mp::Process doomed = start_child(wait_at, b);
  wait_for_waiters(b, 1);
  doomed.kill();
  doomed.join();
  // Two live parties complete the generation with the dead one counted...
  std::thread t([&] { (void)b.wait(std::chrono::seconds(5)); });
  (void)b.wait(std::chrono::seconds(5));
  t.join();
  // ...which then never finishes draining: the next wait times out.
  mp_test::Stopwatch sw;
  EXPECT_THROW(b.wait(std::chrono::seconds(1)), mp::BrokenBarrierError);
  EXPECT_LT(sw.elapsed(), std::chrono::seconds(3));
  b.reset();
  std::vector<std::thread> parties;
  std::atomic<int> passed{0};
  for (int i = 0; i < 3; ++i) {
    parties.emplace_back([&] {
      try {
        b.wait(std::chrono::seconds(2));
        ++passed;
      } catch (...) {
      }
    });
  }
  for (auto& p : parties) p.join();
  EXPECT_EQ(passed.load(), 3);
}
