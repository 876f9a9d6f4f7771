// Timeouts of every blocking call (issue 15, item 13): duration::max() (and
// any timeout of ~95 years or more) waits forever, zero tries once, a
// negative timeout counts as zero. CPython: timeout=None blocks, a
// non-positive timeout does not block. One conversion serves every call
// (internal::deadline_after in mp/internal/futex.h).
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <thread>

#include "conformance/test_util.h"
#include "mp/connection.h"
#include "mp/context.h"
#include "mp/threading.h"

namespace {

using namespace std::chrono_literals;
using mp_test::Stopwatch;

constexpr auto kLate = 200ms;  // when the awaited thing happens, in the forever case

// Checks one blocking call three ways: `forever(max)` must wait for `cause`
// (run kLate from now in a thread) and succeed; `once(zero)` and
// `once(negative)` must return (or throw, as the call documents) at once.
void expect_timeout_semantics(const std::function<void()>& cause,
                              const std::function<bool()>& forever,
                              const std::function<bool(std::chrono::nanoseconds)>& once) {
  Stopwatch sw;
  EXPECT_FALSE(once(0ns)) << "zero timeout: the thing has not happened";
  EXPECT_FALSE(once(-5s)) << "negative timeout counts as zero";
  EXPECT_FALSE(once(std::chrono::nanoseconds::min()));
  EXPECT_LT(sw.elapsed(), 150ms) << "zero and negative timeouts must not block";
  std::thread t([&] {
    std::this_thread::sleep_for(kLate);
    cause();
  });
  sw = Stopwatch();
  EXPECT_TRUE(forever()) << "duration::max() must wait until it happens";
  EXPECT_GE(sw.elapsed(), kLate - 20ms);
  t.join();
}

TEST(Timeouts, QueueGet) {
  mp::Queue<int> q;
  expect_timeout_semantics([&] { q.put(1); }, [&] { return q.get(std::chrono::hours::max()) == 1; },
                           [&](auto t) {
                             try {
                               q.get(t);
                               return true;
                             } catch (const mp::Empty&) {
                               return false;
                             }
                           });
}

TEST(Timeouts, QueuePutOnAFullQueue) {
  mp::Queue<int> q(1);
  q.put(0);
  expect_timeout_semantics([&] { (void)q.get(); },
                           [&] {
                             q.put(2, std::chrono::nanoseconds::max());
                             return true;
                           },
                           [&](auto t) {
                             try {
                               q.put(1, t);
                               return true;
                             } catch (const mp::Full&) {
                               return false;
                             }
                           });
}

TEST(Timeouts, JoinableQueueJoin) {
  mp::JoinableQueue<int> q;
  q.put(1);
  (void)q.get();
  expect_timeout_semantics([&] { q.task_done(); },
                           [&] { return q.join(std::chrono::hours::max()); },
                           [&](auto t) { return q.join(t); });
}

TEST(Timeouts, LockAcquire) {
  mp::Lock lock;
  lock.acquire();
  expect_timeout_semantics([&] { lock.release(); },
                           [&] { return lock.acquire(std::chrono::hours::max()); },
                           [&](auto t) { return lock.acquire(t); });
  lock.release();
}

TEST(Timeouts, SemaphoreAcquire) {
  mp::Semaphore s(0);
  expect_timeout_semantics([&] { s.release(); },
                           [&] { return s.acquire(std::chrono::hours::max()); },
                           [&](auto t) { return s.acquire(t); });
}

TEST(Timeouts, EventWait) {
  mp::Event e;
  expect_timeout_semantics([&] { e.set(); }, [&] { return e.wait(std::chrono::hours::max()); },
                           [&](auto t) { return e.wait(t); });
}

TEST(Timeouts, ConditionWaitFor) {
  mp::Condition c;
  bool flag = false;
  expect_timeout_semantics(
      [&] {
        std::lock_guard g(c);
        flag = true;
        c.notify_all();
      },
      [&] {
        std::lock_guard g(c);
        return c.wait_for([&] { return flag; }, std::chrono::hours::max());
      },
      [&](auto t) {
        std::lock_guard g(c);
        return c.wait_for([&] { return flag; }, t);
      });
}

TEST(Timeouts, BarrierWait) {
  mp::Barrier b(2);
  Stopwatch sw;
  EXPECT_THROW(b.wait(0ns), mp::BrokenBarrierError);
  EXPECT_THROW((b.reset(), b.wait(-1s)), mp::BrokenBarrierError);
  EXPECT_LT(sw.elapsed(), 150ms);
  b.reset();
  std::thread t([&] {
    std::this_thread::sleep_for(kLate);
    b.wait(10s);
  });
  EXPECT_NO_THROW(b.wait(std::chrono::hours::max()));
  t.join();
}

TEST(Timeouts, ProcessJoin) {
  mp::Event go;
  mp::Process p([&] { go.wait(); });
  p.start();
  expect_timeout_semantics([&] { go.set(); },
                           [&] {
                             p.join(std::chrono::duration<double>::max());
                             return !p.is_alive();
                           },
                           [&](auto t) {
                             p.join(std::chrono::duration<double>(t));
                             return !p.is_alive();
                           });
}

TEST(Timeouts, ConnectionPoll) {
  auto [a, b] = mp::Pipe();
  expect_timeout_semantics([&] { a.send(1); },
                           [&] { return b.poll(std::chrono::duration<double>::max()); },
                           [&](auto t) { return b.poll(std::chrono::duration<double>(t)); });
}

TEST(Timeouts, ThreadJoin) {
  mp::Event go;
  mp::Thread th([&] { go.wait(); });
  th.start();
  expect_timeout_semantics([&] { go.set(); }, [&] { return th.join(std::chrono::hours::max()); },
                           [&](auto t) { return th.join(t); });
}

int slow_square(int x) {
  std::this_thread::sleep_for(kLate);
  return x * x;
}

TEST(Timeouts, AsyncResultGet) {
  mp::Pool pool(1);
  auto r = pool.apply_async(slow_square, 3);
  Stopwatch sw;
  EXPECT_THROW(r.get(0s), mp::TimeoutError);
  EXPECT_THROW(r.get(-1s), mp::TimeoutError);
  EXPECT_LT(sw.elapsed(), 150ms);
  EXPECT_EQ(r.get(std::chrono::hours::max()), 9);
}

}  // namespace
