// Conformance: mp/synchronize.h.
// CPython docs: multiprocessing — "Synchronization primitives"
// (multiprocessing.Lock, RLock, Semaphore, BoundedSemaphore, Event,
// Condition, Barrier), and threading — "Lock Objects", "RLock Objects",
// "Condition Objects", "Semaphore Objects", "Event Objects", "Barrier
// Objects", whose semantics the multiprocessing versions copy. Plus mp's own
// promise: a process killed holding a Lock/RLock does not deadlock the rest.
//
// Where one interface serves threads and processes, a typed test runs the
// same scenario with std::thread workers and with forked workers.
#include "mp/synchronize.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <functional>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "conformance/test_util.h"
#include "mp/os.h"
#include "mp/shared.h"

namespace {

using namespace std::chrono_literals;
using mp_test::Signal;
using mp_test::Stopwatch;
using mp_test::fork_child;
using mp_test::run_worker;
using mp_test::wait_exit_code;

// Threads and Processes start a worker running `body` (its int result is the
// worker's exit code) and join it. A Processes worker is a forked child.
struct Threads {
  class Worker {
   public:
    explicit Worker(std::function<int()> body)
        : thread_([this, body] { rc_ = run_worker(body); }) {}
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
    explicit Worker(std::function<int()> body) {
      pid_ = mp::fork();
      if (pid_ == 0) _exit(run_worker(body));
    }
    int join() {
      int status = 0;
      if (waitpid(pid_, &status, 0) != pid_) return -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }

   private:
    pid_t pid_ = -1;
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

// ===================================================================== Lock

TYPED_TEST(AcrossWorkers, LockExcludesConcurrentIncrements) {
  using Worker = typename TypeParam::Worker;
  mp::Lock lock;
  mp::RawValue<int> counter(0);
  auto body = [&] {
    for (int i = 0; i < 5000; ++i) {
      std::lock_guard<mp::Lock> guard(lock);
      int v = counter.get_obj();
      if (i % 64 == 0) sched_yield();  // widen the window a lost update needs
      counter.get_obj() = v + 1;
    }
    return 0;
  };
  Worker a(body), b(body);
  EXPECT_EQ(a.join(), 0);
  EXPECT_EQ(b.join(), 0);
  EXPECT_EQ(counter.get_obj(), 10000);
}

TYPED_TEST(AcrossWorkers, LockMayBeReleasedByAnotherWorker) {
  using Worker = typename TypeParam::Worker;
  mp::Lock lock;
  ASSERT_TRUE(lock.acquire());
  Worker w([&] {
    lock.release();
    return 0;
  });
  EXPECT_EQ(w.join(), 0);
  EXPECT_FALSE(lock.locked());
  EXPECT_TRUE(lock.acquire(false));
  lock.release();
}

TYPED_TEST(AcrossWorkers, LockAcquireWithTimeoutReturnsFalseWhileWorkerHoldsIt) {
  using Worker = typename TypeParam::Worker;
  mp::Lock lock;
  Signal held, done;
  Worker w([&] {
    lock.acquire();
    held.notify();
    done.wait();
    lock.release();
    return 0;
  });
  ASSERT_TRUE(held.wait());
  EXPECT_FALSE(lock.acquire(false));
  Stopwatch sw;
  EXPECT_FALSE(lock.acquire(300ms));
  expect_elapsed_about(sw.elapsed(), 300ms);
  done.notify();
  EXPECT_EQ(w.join(), 0);
  EXPECT_TRUE(lock.acquire(5s));
  lock.release();
}

TYPED_TEST(AcrossWorkers, LockBlockedAcquireProceedsWhenReleased) {
  using Worker = typename TypeParam::Worker;
  mp::Lock lock;
  mp::RawValue<int> got(0);
  lock.acquire();
  Signal started;
  Worker w([&] {
    started.notify();
    if (!lock.acquire(10s)) return 1;
    got.get_obj() = 1;
    lock.release();
    return 0;
  });
  ASSERT_TRUE(started.wait());
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
  Signal go;
  pid_t pid = fork_child([&] {
    go.wait();
    lock.release();
    return 0;
  });
  go.notify();
  EXPECT_TRUE(lock.acquire(std::chrono::nanoseconds::max()));  // waits for the child
  EXPECT_EQ(wait_exit_code(pid), 0);
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

// hold_and_die forks a child that takes `acquire` and then blocks forever; it
// returns once the child holds the lock.
template <class L>
pid_t child_holding(L& lock) {
  Signal held;
  pid_t pid = fork_child([&] {
    lock.acquire();
    held.notify();
    for (;;) pause();
    return 0;
  });
  if (!held.wait()) ADD_FAILURE() << "child did not take the lock";
  return pid;
}

TEST(LockOwnerDeath, ParentRecoversLockOfChildKilledHoldingIt) {
  mp::Lock lock;
  pid_t pid = child_holding(lock);
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  // Not reaped yet: the dead owner is a zombie, which must count as dead.
  Stopwatch sw;
  EXPECT_THROW(lock.acquire(10s), mp::OwnerDeadError);
  EXPECT_LT(sw.elapsed(), 2s);
  // The parent now holds the lock.
  EXPECT_TRUE(lock.locked());
  EXPECT_FALSE(lock.acquire(false));
  lock.release();
  EXPECT_TRUE(lock.acquire(false));  // an ordinary lock again
  lock.release();
  EXPECT_EQ(wait_exit_code(pid), 128 + SIGKILL);
}

TEST(LockOwnerDeath, BlockedWaiterInAnotherProcessTakesOverWithOwnerDeadError) {
  mp::Lock lock;
  pid_t holder = child_holding(lock);
  Signal waiting;
  pid_t waiter = fork_child([&] {
    waiting.notify();
    try {
      lock.acquire(20s);
      return 1;  // acquired without learning of the death
    } catch (const mp::OwnerDeadError&) {
      // We hold it now: a non-blocking acquire must fail.
      if (lock.acquire(false)) return 2;
      lock.release();
      return 0;
    }
  });
  ASSERT_TRUE(waiting.wait());
  ASSERT_EQ(kill(holder, SIGKILL), 0);
  EXPECT_EQ(wait_exit_code(holder), 128 + SIGKILL);
  EXPECT_EQ(wait_exit_code(waiter), 0);
  EXPECT_FALSE(lock.locked());
}

TEST(LockOwnerDeath, TryAcquireOfReapedDeadOwnersLockTakesItOver) {
  mp::Lock lock;
  pid_t pid = child_holding(lock);
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  EXPECT_EQ(wait_exit_code(pid), 128 + SIGKILL);
  EXPECT_THROW(lock.try_acquire(), mp::OwnerDeadError);
  EXPECT_TRUE(lock.locked());
  lock.release();
}

TEST(LockOwnerDeath, TimedAcquireOnLiveOwnerStillTimesOut) {
  mp::Lock lock;
  pid_t pid = child_holding(lock);
  Stopwatch sw;
  EXPECT_FALSE(lock.acquire(200ms));  // alive: no takeover
  expect_elapsed_about(sw.elapsed(), 200ms);
  kill(pid, SIGKILL);
  wait_exit_code(pid);
  EXPECT_THROW(lock.acquire(5s), mp::OwnerDeadError);
  lock.release();
}

TEST(LockOwnerDeath, SurvivorsFinishWhenAPeerIsKilledMidLoop) {
  mp::Lock lock;
  mp::RawValue<long> counter(0);
  auto loop = [&](int n) {
    for (int i = 0; i < n; ++i) {
      try {
        if (!lock.acquire(20s)) return 1;
      } catch (const mp::OwnerDeadError&) {
        // Held now; the counter is a single store, so nothing to repair.
      }
      ++counter.get_obj();
      lock.release();
    }
    return 0;
  };
  Signal started;
  pid_t victim = fork_child([&] {
    started.notify();
    return loop(1 << 30);  // runs until killed
  });
  ASSERT_TRUE(started.wait());
  std::vector<pid_t> survivors;
  for (int i = 0; i < 2; ++i) survivors.push_back(fork_child([&] { return loop(20000); }));
  while (counter.get_obj() < 5000) sched_yield();
  ASSERT_EQ(kill(victim, SIGKILL), 0);
  EXPECT_EQ(wait_exit_code(victim), 128 + SIGKILL);
  for (pid_t pid : survivors) EXPECT_EQ(wait_exit_code(pid), 0);
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
  Signal held;
  pid_t pid = fork_child([&] {
    lock.acquire();
    lock.acquire();
    held.notify();
    for (;;) pause();
    return 0;
  });
  ASSERT_TRUE(held.wait());
  kill(pid, SIGKILL);
  EXPECT_THROW(lock.acquire(10s), mp::OwnerDeadError);
  EXPECT_TRUE(lock.is_owned());
  lock.release();  // one level: the dead owner's depth is gone
  EXPECT_FALSE(lock.locked());
  EXPECT_EQ(wait_exit_code(pid), 128 + SIGKILL);
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
  pid_t pid = fork_child([&] { return lock.acquire(false) ? 1 : 0; });
  EXPECT_EQ(wait_exit_code(pid), 0);  // still held after 2 of 3 releases
  lock.release();
  EXPECT_FALSE(lock.locked());
  pid = fork_child([&] {
    if (!lock.acquire(false)) return 1;
    lock.release();
    return 0;
  });
  EXPECT_EQ(wait_exit_code(pid), 0);
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
  Signal held, done;
  Worker w([&] {
    lock.acquire();
    held.notify();
    done.wait();
    lock.release();
    return 0;
  });
  ASSERT_TRUE(held.wait());
  EXPECT_FALSE(lock.is_owned());
  EXPECT_THROW(lock.release(), mp::RuntimeError);
  EXPECT_FALSE(lock.acquire(false));
  done.notify();
  EXPECT_EQ(w.join(), 0);
  EXPECT_TRUE(lock.acquire(false));
  lock.release();
}

TEST(RLock, ChildDoesNotInheritOwnership) {
  mp::RLock lock;
  lock.acquire();
  pid_t pid = fork_child([&] {
    if (lock.is_owned()) return 1;
    if (lock.acquire(false)) return 2;
    try {
      lock.release();
      return 3;
    } catch (const mp::RuntimeError&) {
      return 0;
    }
  });
  EXPECT_EQ(wait_exit_code(pid), 0);
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
  Signal go;
  Worker w([&] {
    go.wait();
    sem.release();
    return 0;
  });
  EXPECT_FALSE(sem.acquire(false));
  go.notify();
  EXPECT_TRUE(sem.acquire(10s));
  EXPECT_EQ(w.join(), 0);
  EXPECT_EQ(sem.get_value(), 0);
}

TEST(Semaphore, NeverAdmitsMoreHoldersThanItsValueAcrossProcesses) {
  mp::Semaphore sem(2);
  mp::Value<int> inside(0), most(0);
  std::vector<pid_t> pids;
  for (int p = 0; p < 4; ++p) {
    pids.push_back(fork_child([&] {
      for (int i = 0; i < 300; ++i) {
        sem.acquire();
        int now = inside.update([](int& x) { ++x; });
        most.update([now](int& m) { m = std::max(m, now); });
        sched_yield();
        inside.update([](int& x) { --x; });
        sem.release();
      }
      return 0;
    }));
  }
  for (pid_t pid : pids) EXPECT_EQ(wait_exit_code(pid), 0);
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
  mp::Event ev;
  Signal go;
  Worker w([&] {
    go.wait();
    ev.set();
    return 0;
  });
  go.notify();
  EXPECT_TRUE(ev.wait(10s));
  EXPECT_TRUE(ev.is_set());
  EXPECT_EQ(w.join(), 0);
}

TEST(Event, SetWakesEveryWaitingProcess) {
  mp::Event ev;
  mp::Semaphore ready(0);
  std::vector<pid_t> pids;
  for (int i = 0; i < 3; ++i) {
    pids.push_back(fork_child([&] {
      ready.release();
      return ev.wait(20s) ? 0 : 1;
    }));
  }
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(ready.acquire(10s));
  ev.set();
  for (pid_t pid : pids) EXPECT_EQ(wait_exit_code(pid), 0);
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
  Signal held, done;
  pid_t pid = fork_child([&] {
    lock.acquire();
    held.notify();
    done.wait();
    return 0;
  });
  ASSERT_TRUE(held.wait());
  EXPECT_THROW(on_lock.notify(), mp::RuntimeError);
  done.notify();
  EXPECT_EQ(wait_exit_code(pid), 0);
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
  Signal go;
  pid_t pid = fork_child([&] {
    go.wait();
    std::lock_guard<mp::Condition> g(cond);  // possible only if wait let go
    cond.notify();
    return 0;
  });
  go.notify();
  EXPECT_TRUE(cond.wait(10s));
  EXPECT_EQ(wait_exit_code(pid), 0);
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
  pid_t pid = fork_child([&] {
    for (int i = 1; i <= 3; ++i) {
      std::lock_guard<mp::Condition> g(cond);
      state.store(i);
      cond.notify_all();
    }
    return 0;
  });
  {
    std::lock_guard<mp::Condition> g(cond);
    EXPECT_TRUE(cond.wait_for([&] { return state.load() == 3; }, 10s));
    Stopwatch sw;
    EXPECT_FALSE(cond.wait_for([&] { return state.load() == 4; }, 200ms));
    expect_elapsed_about(sw.elapsed(), 200ms);
  }
  EXPECT_EQ(wait_exit_code(pid), 0);
}

// ConditionNotify starts 3 waiting processes and 3 waiting threads on one
// condition; each counts itself in `woken` after a notified return.
class ConditionNotify : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 3; ++i) pids_.push_back(fork_child([this] { return waiter(); }));
    for (int i = 0; i < 3; ++i) {
      threads_.emplace_back([this] { thread_rc_ += waiter(); });
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
    for (pid_t pid : pids_) EXPECT_EQ(wait_exit_code(pid), 0);
    for (auto& t : threads_) t.join();
    EXPECT_EQ(thread_rc_.load(), 0);
  }
  int waiter() {
    std::lock_guard<mp::Condition> g(cond_);
    ready_.release();
    bool notified = cond_.wait(30s);
    if (!notified) return 1;
    ++woken_.get_obj();
    return 0;
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
  std::vector<pid_t> pids_;
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
  mp::Event long_waiting;
  // A waits with a short timeout and gives up; B waits long. A later
  // notify() must go to B, not be spent on A's stale place in the queue.
  pid_t a = fork_child([&] {
    std::lock_guard<mp::Condition> g(cond);
    return cond.wait(100ms) ? 1 : 0;
  });
  EXPECT_EQ(wait_exit_code(a), 0);
  pid_t b = fork_child([&] {
    std::lock_guard<mp::Condition> g(cond);
    long_waiting.set();  // we hold the lock: the test's notify comes after wait
    return cond.wait(20s) ? 0 : 1;
  });
  ASSERT_TRUE(long_waiting.wait(10s));
  {
    std::lock_guard<mp::Condition> g(cond);
    cond.notify();
  }
  Stopwatch sw;
  EXPECT_EQ(wait_exit_code(b), 0);
  EXPECT_LT(sw.elapsed(), 5s);
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
    workers.push_back(std::make_unique<Worker>([&] {
      int idx = barrier.wait(10s);
      seen.get_lock().acquire();
      ++seen.at(idx);
      seen.get_lock().release();
      return 0;
    }));
  }
  int idx = barrier.wait(10s);
  {
    std::lock_guard<mp::RLock> g(seen.get_lock());
    ++seen.at(idx);
  }
  for (auto& w : workers) EXPECT_EQ(w->join(), 0);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(seen[i], 1) << "index " << i;
}

TEST(Barrier, FiveProcessesPassItOneThousandTimes) {
  constexpr int kParties = 5, kRounds = 1000;
  mp::RawValue<int> actions(0);
  mp::Barrier barrier(kParties, [&] { ++actions.get_obj(); });
  mp::RawArray<int> hits(kParties * kRounds);
  std::vector<pid_t> pids;
  for (int p = 0; p < kParties; ++p) {
    pids.push_back(fork_child([&] {
      for (int round = 0; round < kRounds; ++round) {
        int idx = barrier.wait(30s);
        // Distinct per generation: each slot is hit once, no locking needed.
        ++hits[round * kParties + idx];
      }
      return 0;
    }));
  }
  for (pid_t pid : pids) EXPECT_EQ(wait_exit_code(pid), 0);
  EXPECT_EQ(actions.get_obj(), kRounds);
  int ones = 0;
  for (int h : hits) ones += (h == 1);
  EXPECT_EQ(ones, kParties * kRounds);
  EXPECT_FALSE(barrier.broken());
}

TEST(Barrier, ActionRunsOncePerGenerationBeforeAnyoneLeaves) {
  mp::RawValue<int> actions(0);
  mp::Barrier barrier(3, [&] { ++actions.get_obj(); });
  std::vector<pid_t> pids;
  for (int p = 0; p < 2; ++p) {
    pids.push_back(fork_child([&] {
      for (int g = 1; g <= 3; ++g) {
        barrier.wait(10s);
        if (actions.get_obj() < g) return 1;
      }
      return 0;
    }));
  }
  for (int g = 1; g <= 3; ++g) {
    barrier.wait(10s);
    EXPECT_GE(actions.get_obj(), g);
  }
  for (pid_t pid : pids) EXPECT_EQ(wait_exit_code(pid), 0);
  EXPECT_EQ(actions.get_obj(), 3);
}

TEST(Barrier, TimeoutBreaksTheBarrierForEveryWaiter) {
  mp::Barrier barrier(3);
  Signal in;
  pid_t pid = fork_child([&] {
    in.notify();
    try {
      barrier.wait(20s);
      return 1;
    } catch (const mp::BrokenBarrierError&) {
      return 0;
    }
  });
  ASSERT_TRUE(in.wait());
  Stopwatch sw;
  EXPECT_THROW(barrier.wait(200ms), mp::BrokenBarrierError);
  expect_elapsed_about(sw.elapsed(), 200ms);
  EXPECT_EQ(wait_exit_code(pid), 0);
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
  std::vector<pid_t> pids;
  for (int i = 0; i < 2; ++i) {
    pids.push_back(fork_child([&] {
      try {
        barrier.wait(20s);
        return 1;
      } catch (const mp::BrokenBarrierError&) {
        return 0;
      }
    }));
  }
  for (Stopwatch sw; barrier.n_waiting() < 2 && sw.elapsed() < 10s;) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_EQ(barrier.n_waiting(), 2);
  barrier.abort();
  for (pid_t pid : pids) EXPECT_EQ(wait_exit_code(pid), 0);
  EXPECT_TRUE(barrier.broken());
  EXPECT_EQ(barrier.n_waiting(), 0);
}

TEST(Barrier, ResetBreaksCurrentWaitersAndMakesItUsableAgain) {
  mp::Barrier barrier(2);
  pid_t pid = fork_child([&] {
    try {
      barrier.wait(20s);
      return 1;
    } catch (const mp::BrokenBarrierError&) {
    }
    // After the reset the barrier works again.
    return barrier.wait(20s) >= 0 ? 0 : 2;
  });
  for (Stopwatch sw; barrier.n_waiting() < 1 && sw.elapsed() < 10s;) {
    std::this_thread::sleep_for(1ms);
  }
  barrier.reset();
  EXPECT_FALSE(barrier.broken());
  barrier.wait(20s);
  EXPECT_EQ(wait_exit_code(pid), 0);
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
  mp::Barrier b(2, [&in_action] {
    in_action.set();
    std::this_thread::sleep_for(std::chrono::seconds(3));
  });
  mp::Value<int> outcome(0);
  mp::Process waiter([&] {
    try {
      b.wait(std::chrono::seconds(2));
      outcome.store(1);
    } catch (const mp::BrokenBarrierError&) {
      outcome.store(2);
    } catch (...) {
      outcome.store(3);
    }
  });
  waiter.start();
  while (b.n_waiting() < 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  mp::Process last([&] { b.wait(); });
  last.start();
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
  mp::Process doomed([&] { b.wait(); });
  doomed.start();
  while (b.n_waiting() < 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
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
