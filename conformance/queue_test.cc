// Conformance: mp/queue.h (and its transport, mp/internal/shm_channel.h).
// CPython docs: multiprocessing — "Pipes and Queues": Queue(maxsize),
// qsize(), empty(), full(), put(obj, block, timeout), put_nowait(), get(block,
// timeout), get_nowait(), close(); SimpleQueue (put, get, empty, close);
// JoinableQueue (task_done, join); queue.Empty and queue.Full. Plus what mp
// promises beyond CPython (see mp/queue.h): exact qsize, survival of SIGKILL
// at any point, EOFError once every producer is gone, BrokenPipeError for a
// blocked put once every consumer is, messages of any size.
#include "mp/queue.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <variant>
#include <vector>

#include "conformance/test_util.h"
#include "mp/internal/liveness.h"
#include "mp/internal/shm.h"
#include "mp/os.h"
#include "mp/process.h"
#include "mp/shared.h"
#include "mp/synchronize.h"

// A type whose encoding fails, to check that put() fails in the caller.
struct Unsendable {
  bool ok = true;
};
template <>
struct mp::codec_traits<Unsendable> {
  static void encode(mp::Encoder& e, const Unsendable& u) {
    if (!u.ok) throw mp::ValueError("this value refuses to be encoded");
    e.write(u.ok);
  }
  static Unsendable decode(mp::Decoder& d) { return Unsendable{d.read<bool>()}; }
};

namespace {

using namespace std::chrono_literals;

// Children are daemonic: if a test fails before it ends them, they are
// terminated at exit instead of joined forever.
const mp::ProcessOptions kDaemon{.name = std::nullopt, .daemon = true};
using mp_test::Stopwatch;

// wait_until polls `cond` (a state of another process that has no event to
// wait on, e.g. "its put is blocked on a full ring") for up to 10 s.
template <class F>
bool wait_until(F cond) {
  for (int i = 0; i < 10000; ++i) {
    if (cond()) return true;
    std::this_thread::sleep_for(1ms);
  }
  return false;
}

std::string pattern(std::size_t n, unsigned seed) {
  std::string s(n, '\0');
  std::uint32_t x = seed * 2654435761u + 1;
  for (std::size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    s[i] = static_cast<char>(x >> 24);
  }
  return s;
}

int count_entries(const char* dir) {
  DIR* d = opendir(dir);
  if (!d) return -1;
  int n = 0;
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

// ---- what the children run ------------------------------------------------------
// Functions, so that every start method can start them (a spawn or
// forkserver child rebuilds its target from data: mp/process.h). Queues
// travel as std::ref(q), events and semaphores by value; under fork the
// child uses the very objects the test made, as a closure would.

// kHandshake bounds a wait for another process's hand-shake, so that a child
// that died early fails the test instead of hanging it.
constexpr auto kHandshake = 10s;

// put_all puts `items` in order.
template <class T, class Q = mp::Queue<T>>
void put_all(Q& q, const std::vector<T>& items) {
  for (const T& v : items) q.put(v);
}

// put_patterns puts pattern(sizes[i], i) for each i, in order.
void put_patterns(mp::Queue<std::string>& q, const std::vector<std::size_t>& sizes) {
  for (std::size_t i = 0; i < sizes.size(); ++i) q.put(pattern(sizes[i], i));
}

// put_pattern puts pattern(n, seed): streamed when n exceeds half the ring,
// so that a test can catch (stop, kill) the producer mid-stream.
void put_pattern(mp::Queue<std::string>& q, std::size_t n, unsigned seed) {
  q.put(pattern(n, seed));
}

// put_then_close puts v, then closes this process's handle.
void put_then_close(mp::Queue<int>& q, int v) {
  q.put(v);
  q.close();
}

// put_and_hold is a producer that stays: it puts `items`, closes its handle
// if `close`, says so through `put_done`, then lives until `release` is set
// (never, where the test kills it).
void put_and_hold(mp::Queue<int>& q, const std::vector<int>& items, bool close, mp::Event put_done,
                  mp::Event release) {
  put_all(q, items);
  if (close) q.close();
  put_done.set();
  release.wait();
}

// sleep_then_put puts v after `delay_ms`: how long the test's get() waits.
void sleep_then_put(mp::Queue<int>& q, int delay_ms, int v) {
  std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
  q.put(v);
}

// put_when_set is sleep_then_put once `go` is set (the test's stopwatch
// starts when it sets it).
void put_when_set(mp::Event go, mp::Queue<int>& q, int delay_ms, int v) {
  go.wait();
  sleep_then_put(q, delay_ms, v);
}

// set_after sets `e` after `delay_ms`.
void set_after(mp::Event e, int delay_ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
  e.set();
}

// get_expecting gets one item and exits with code 3 unless it is `expected`.
void get_expecting(mp::Queue<int>& q, int expected) {
  if (q.get() != expected) mp::exit(3);
}

// get_when_set is get_expecting `delay_ms` after `go` is set: how long the
// test's put() stays blocked.
void get_when_set(mp::Event go, mp::Queue<int>& q, int delay_ms, int expected) {
  go.wait();
  std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
  get_expecting(q, expected);
}

// consume_one is a consumer that stays: it gets one item, says so through
// `got`, then lives until `release` is set (never, where the test kills it),
// counting as a consumer until it ends.
template <class T>
void consume_one(mp::Queue<T>& q, mp::Semaphore got, mp::Event release) {
  q.get();
  got.release();
  release.wait();
}

// consume_one_then_close is consume_one that closes its handle once `go` is
// set and then lives until `done` is.
void consume_one_then_close(mp::Queue<int>& q, mp::Semaphore got, mp::Event go, mp::Event done) {
  consume_one(q, got, go);
  q.close();
  done.wait();
}

// get_and_exit says it started, gets one item and exits with code 3: a
// consumer for the test to kill inside get().
template <class T>
void get_and_exit(mp::Event started, mp::Queue<T>& q) {
  started.set();
  q.get();
  mp::exit(3);
}

// put_expecting_broken_pipe exits with code 7 if put(v) raises
// BrokenPipeError, 1 if it returns.
void put_expecting_broken_pipe(mp::Queue<int>& q, int v) {
  try {
    q.put(v);
  } catch (const mp::BrokenPipeError&) {
    mp::exit(7);
  }
  mp::exit(1);
}

// A (producer, index) item, and a consumer's haul of them.
using Tagged = std::pair<int, int>;
using Haul = std::vector<Tagged>;

// put_sequence puts (producer, 0), ..., (producer, n - 1).
void put_sequence(mp::Queue<Tagged>& q, int producer, int n) {
  for (int i = 0; i < n; ++i) q.put({producer, i});
}

// collect_until_negative gets items until one with a negative producer,
// then puts what it got, in order, to `results`.
void collect_until_negative(mp::Queue<Tagged>& q, mp::Queue<Haul>& results) {
  Haul got;
  for (auto item = q.get(); item.first >= 0; item = q.get()) got.push_back(item);
  results.put(got);
}

// echo_plus_one gets one item from `in` and puts it plus one to `out`.
void echo_plus_one(mp::Queue<int>& in, mp::Queue<int>& out) { out.put(in.get() + 1); }

// put_numbered_forever puts "round:i:" + pattern(...) for i = 0, 1, ...
// until killed.
void put_numbered_forever(mp::Queue<std::string>& q, int round) {
  for (int i = 0;; ++i) q.put(fmt::format("{}:{}:", round, i) + pattern(5000 + i % 50000, i));
}

// take_tasks gets `done` items, calling task_done() for each, then `held`
// more without (and exits with them unfinished).
void take_tasks(mp::JoinableQueue<int>& q, int done, int held) {
  for (int i = 0; i < done; ++i) {
    q.get();
    q.task_done();
  }
  for (int i = 0; i < held; ++i) q.get();
}

// count_until_done is the tutorial's endless reader: it counts the items
// before each "DONE" and puts that count to `count`.
void count_until_done(mp::Queue<std::string>& q, mp::Queue<int>& count) {
  int n = 0;
  for (;;) {
    std::string s = q.get();
    if (s == "DONE")
      count.put(n);
    else
      ++n;
  }
}

// put_one_to_each puts a 3 MiB string to q, 1 to jq and 2 to sq.
void put_one_to_each(mp::Queue<std::string>& q, mp::JoinableQueue<int>& jq,
                     mp::SimpleQueue<int>& sq) {
  q.put(std::string(3u << 20, 'z'));
  jq.put(1);
  sq.put(2);
}

void do_nothing() {}

// wait_mid_stream waits until a streamed put has filled the 64 KiB ring of
// `q` (its producer is then blocked mid-message).
bool wait_mid_stream(const mp::Queue<std::string>& q) {
  return wait_until([&] { return q.channel().bytes_used() > (1u << 16) - 20000; });
}

// wait_ring_drained waits until a consumer has taken every byte of the ring.
bool wait_ring_drained(const mp::Queue<std::string>& q) {
  return wait_until([&] { return q.channel().bytes_used() == 0; });
}

// ---- FIFO, blocking and timeouts ----------------------------------------------

TEST(Queue, GetReturnsItemsInFifoOrder) {
  mp::Queue<int> q;
  for (int i = 0; i < 100; ++i) q.put(i);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(q.get(), i);
}

TEST(Queue, ItemsPutByAChildAreReceivedByTheParent) {
  mp::Queue<std::string> q;
  std::vector<std::string> items;
  for (int i = 0; i < 10; ++i) items.push_back(fmt::format("item {}", i));
  mp::Process p(kDaemon, put_all<std::string>, std::ref(q), items);
  p.start();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(q.get(), fmt::format("item {}", i));
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(Queue, AChildForkedAfterConstructionUsesTheQueueItsClosureCaptured) {
  MP_FORK_ONLY("the subject is a closure capturing the queue by reference (queue.h's example)");
  mp::Queue<std::string> q;
  mp::Process p(kDaemon, [&] { q.put("hello"); });
  p.start();
  EXPECT_EQ(q.get(), "hello");
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(Queue, GetBlocksUntilAnotherProcessPuts) {
  mp::Queue<int> q;
  mp::Event go;
  // The behaviour: get waits the 300 ms the child sleeps before it puts.
  mp::Process p(kDaemon, put_when_set, go, std::ref(q), 300, 42);
  p.start();
  go.set();
  Stopwatch sw;
  EXPECT_EQ(q.get(), 42);
  EXPECT_GE(sw.elapsed(), 250ms);
  p.join();
}

TEST(Queue, GetWithTimeoutRaisesEmptyAfterTimeout) {
  mp::Queue<int> q;
  Stopwatch sw;
  EXPECT_THROW(q.get(200ms), mp::Empty);
  EXPECT_GE(sw.elapsed(), 150ms);
  EXPECT_LT(sw.elapsed(), 1200ms);
}

TEST(Queue, GetWithTimeoutReturnsAnItemPutBeforeTheTimeout) {
  mp::Queue<int> q;
  q.put(7);
  EXPECT_EQ(q.get(1s), 7);
}

TEST(Queue, GetIntoReusesTheCallersStringAndRaisesAsGet) {
  mp::Queue<std::string> q;
  mp::Process child(kDaemon, put_patterns, std::ref(q), std::vector<std::size_t>{100, 101, 102});
  child.start();
  std::string out;
  out.reserve(1000);
  const char* buffer = out.data();
  for (int i = 0; i < 3; ++i) {
    q.get_into(out, 5s);
    EXPECT_EQ(out, pattern(100 + i, i));
    EXPECT_EQ(out.data(), buffer) << "get_into allocated a new buffer";
  }
  child.join();
  Stopwatch sw;
  EXPECT_THROW(q.get_into(out, 100ms), mp::Empty);
  EXPECT_GE(sw.elapsed(), 90ms);
  EXPECT_TRUE(out.empty());
  mp::Queue<std::vector<int>> v;
  v.put({1, 2, 3});
  std::vector<int> got{9};
  v.get_into(got);
  EXPECT_EQ(got, (std::vector<int>{1, 2, 3}));
  EXPECT_THROW(v.get_into(got, 0ms), mp::Empty);
  EXPECT_EQ(got, (std::vector<int>{1, 2, 3})) << "a failed get_into changed a non-string out";
  q.close();
  EXPECT_THROW(q.get_into(out), mp::ValueError);
}

TEST(Queue, GetNowaitRaisesEmptyAtOnce) {
  mp::Queue<int> q;
  Stopwatch sw;
  EXPECT_THROW(q.get_nowait(), mp::Empty);
  EXPECT_LT(sw.elapsed(), 100ms);
}

TEST(Queue, NegativeTimeoutMeansDoNotBlock) {
  mp::Queue<int> q(1);
  EXPECT_THROW(q.get(-1s), mp::Empty);
  q.put(1, -1s);
  EXPECT_THROW(q.put(2, -1s), mp::Full);
}

TEST(Queue, TryGetReturnsNulloptWhenEmptyAndTheItemOtherwise) {
  mp::Queue<int> q;
  EXPECT_EQ(q.try_get(), std::nullopt);
  EXPECT_EQ(q.try_get(50ms), std::nullopt);
  q.put(3);
  EXPECT_EQ(q.try_get(), std::optional<int>(3));
}

TEST(Queue, PutNowaitOnAFullBoundedQueueRaisesFull) {
  mp::Queue<int> q(2);
  q.put_nowait(1);
  q.put_nowait(2);
  Stopwatch sw;
  EXPECT_THROW(q.put_nowait(3), mp::Full);
  EXPECT_LT(sw.elapsed(), 100ms);
  EXPECT_EQ(q.qsize(), 2u);
}

TEST(Queue, TryPutReturnsFalseWhenFull) {
  mp::Queue<int> q(1);
  EXPECT_TRUE(q.try_put(1));
  EXPECT_FALSE(q.try_put(2));
  EXPECT_EQ(q.get(), 1);
}

TEST(Queue, PutWithTimeoutOnAFullQueueRaisesFullAfterTimeout) {
  mp::Queue<int> q(1);
  q.put(1);
  Stopwatch sw;
  EXPECT_THROW(q.put(2, 200ms), mp::Full);
  EXPECT_GE(sw.elapsed(), 150ms);
  EXPECT_LT(sw.elapsed(), 1200ms);
  EXPECT_EQ(q.get(), 1);
  EXPECT_TRUE(q.empty());
}

TEST(Queue, PutBlocksWhileFullUntilAConsumerGets) {
  mp::Queue<int> q(1);
  q.put(1);
  mp::Event go;
  // The behaviour: put waits the 300 ms the child sleeps before it gets.
  mp::Process consumer(kDaemon, get_when_set, go, std::ref(q), 300, 1);
  consumer.start();
  go.set();
  Stopwatch sw;
  q.put(2);
  EXPECT_GE(sw.elapsed(), 250ms);
  consumer.join();
  EXPECT_EQ(consumer.exitcode(), 0);
  EXPECT_EQ(q.get(), 2);
}

TEST(Queue, UnboundedPutNowaitRaisesFullWhenTheRingHasNoRoom) {
  mp::Queue<std::string> q(0, 4096);
  std::size_t n = 0;
  while (q.try_put(std::string(100, 'x'))) ++n;
  EXPECT_GT(n, 10u);
  EXPECT_THROW(q.put_nowait("y"), mp::Full);
  EXPECT_EQ(q.qsize(), n);
  EXPECT_EQ(q.get(), std::string(100, 'x'));
  q.put_nowait("y");  // room again
}

// ---- qsize / empty / full -------------------------------------------------------------

TEST(Queue, QsizeIsExactRightAfterPut) {
  mp::Queue<int> q;
  for (int i = 1; i <= 50; ++i) {
    q.put(i);
    EXPECT_EQ(q.qsize(), static_cast<std::size_t>(i));
  }
  for (int i = 49; i >= 0; --i) {
    q.get();
    EXPECT_EQ(q.qsize(), static_cast<std::size_t>(i));
  }
}

TEST(Queue, QsizeSeesAChildsPutAsSoonAsItReturns) {
  mp::Queue<int> q;
  mp::Event put_done, release;
  mp::Process p(kDaemon, put_and_hold, std::ref(q), std::vector<int>{1, 2}, false, put_done,
                release);
  p.start();
  ASSERT_TRUE(put_done.wait(kHandshake));
  EXPECT_EQ(q.qsize(), 2u);
  EXPECT_FALSE(q.empty());
  release.set();
  p.join();
}

TEST(Queue, EmptyAndFullAgreeWithQsize) {
  mp::Queue<int> q(2);
  EXPECT_TRUE(q.empty());
  EXPECT_FALSE(q.full());
  q.put(1);
  EXPECT_FALSE(q.empty());
  EXPECT_FALSE(q.full());
  q.put(2);
  EXPECT_TRUE(q.full());
  EXPECT_EQ(q.maxsize(), 2);
  q.get();
  EXPECT_FALSE(q.full());
  mp::Queue<int> unbounded;
  unbounded.put(1);
  EXPECT_FALSE(unbounded.full());
}

// ---- errors in the caller, close() -----------------------------------------------------

TEST(Queue, AValueThatFailsToEncodeThrowsInPutAndTheQueueStaysUsable) {
  mp::Queue<Unsendable> q;
  EXPECT_THROW(q.put(Unsendable{false}), mp::ValueError);
  EXPECT_EQ(q.qsize(), 0u);
  q.put(Unsendable{true});
  EXPECT_EQ(q.qsize(), 1u);
  EXPECT_TRUE(q.get().ok);
}

TEST(Queue, PutAfterCloseRaisesValueError) {
  mp::Queue<int> q;
  q.close();
  try {
    q.put(1);
    FAIL() << "put on a closed queue did not throw";
  } catch (const mp::ValueError& e) {
    EXPECT_STREQ(e.what(), "Queue is closed");
  }
}

TEST(Queue, GetAfterCloseRaisesValueError) {
  mp::Queue<int> q;
  q.put(1);
  q.close();
  EXPECT_THROW(q.get(), mp::ValueError);
  EXPECT_THROW(q.get_nowait(), mp::ValueError);
  EXPECT_THROW(q.try_get(), mp::ValueError);
}

TEST(Queue, CloseIsIdempotent) {
  mp::Queue<int> q;
  q.close();
  q.close();
  EXPECT_TRUE(q.closed());
  EXPECT_THROW(q.put(1), mp::ValueError);
}

TEST(Queue, CloseWakesAGetBlockedInAnotherThread) {
  mp::Queue<int> q;
  std::atomic<int> outcome{0};
  std::thread t([&] {
    try {
      q.get();
      outcome = 1;
    } catch (const mp::ValueError&) {
      outcome = 2;
    } catch (...) {
      outcome = 3;
    }
  });
  std::this_thread::sleep_for(100ms);  // let it block; either way it must end
  q.close();
  t.join();
  EXPECT_EQ(outcome, 2);
}

TEST(Queue, CloseInOneProcessLeavesOtherProcessesUsingTheQueue) {
  mp::Queue<int> q;
  mp::Process p(kDaemon, put_then_close, std::ref(q), 5);
  p.start();
  p.join();
  EXPECT_FALSE(q.closed());
  EXPECT_EQ(q.get(), 5);
  q.put(6);
  EXPECT_EQ(q.get(), 6);
}

// ---- several producers and consumers --------------------------------------------------

TEST(Queue, SeveralProducersAndConsumersDeliverEveryItemExactlyOnceInProducerOrder) {
  constexpr int kProducers = 3, kConsumers = 3, kPerProducer = 20000;
  mp::Queue<Tagged> q(0, 1 << 14);  // small ring: lots of wrap and blocking
  mp::Queue<Haul> results;
  std::vector<mp::Process> procs;
  for (int c = 0; c < kConsumers; ++c) {
    procs.emplace_back(kDaemon, collect_until_negative, std::ref(q), std::ref(results));
  }
  for (int p = 0; p < kProducers; ++p) {
    procs.emplace_back(kDaemon, put_sequence, std::ref(q), p, kPerProducer);
  }
  for (auto& p : procs) p.start();
  for (int i = kConsumers; i < kConsumers + kProducers; ++i) procs[i].join();
  for (int c = 0; c < kConsumers; ++c) q.put({-1, 0});
  std::vector<std::vector<int>> seen(kProducers);
  for (int c = 0; c < kConsumers; ++c) {
    auto got = results.get();
    std::vector<int> last(kProducers, -1);
    for (auto [p, i] : got) {
      EXPECT_GT(i, last[p]) << "producer " << p << "'s items out of order";
      last[p] = i;
      seen[p].push_back(i);
    }
  }
  for (int p = 0; p < kProducers; ++p) {
    std::sort(seen[p].begin(), seen[p].end());
    ASSERT_EQ(seen[p].size(), static_cast<std::size_t>(kPerProducer));
    for (int i = 0; i < kPerProducer; ++i) ASSERT_EQ(seen[p][i], i);
  }
  for (auto& p : procs) {
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
  }
  EXPECT_TRUE(q.empty());
}

// The same behaviour against threads and processes: a Runner starts
// `target(args...)` in a thread or a child process (of the run's start
// method) and joins it.
struct ThreadRunner {
  template <class F, class... A>
  explicit ThreadRunner(F target, A&&... args) : t_(target, std::forward<A>(args)...) {}
  void join() { t_.join(); }
  std::thread t_;
};
struct ProcessRunner {
  template <class F, class... A>
  explicit ProcessRunner(F target, A&&... args) : p_(kDaemon, target, std::forward<A>(args)...) {
    p_.start();
  }
  void join() {
    p_.join();
    EXPECT_EQ(p_.exitcode(), 0);
  }
  mp::Process p_;
};

template <class Runner>
class QueueAcross : public ::testing::Test {};
using Runners = ::testing::Types<ThreadRunner, ProcessRunner>;
TYPED_TEST_SUITE(QueueAcross, Runners);

TYPED_TEST(QueueAcross, TwoProducersTwoConsumersDeliverEachItemOnceInProducerOrder) {
  constexpr int kPerProducer = 5000;
  mp::Queue<Tagged> q(0, 1 << 13);
  mp::Queue<Haul> results;
  std::vector<std::unique_ptr<TypeParam>> consumers, producers;
  for (int c = 0; c < 2; ++c) {
    consumers.push_back(
        std::make_unique<TypeParam>(collect_until_negative, std::ref(q), std::ref(results)));
  }
  for (int p = 0; p < 2; ++p) {
    producers.push_back(std::make_unique<TypeParam>(put_sequence, std::ref(q), p, kPerProducer));
  }
  for (auto& p : producers) p->join();
  q.put({-1, 0});
  q.put({-1, 0});
  std::vector<int> count(2, 0);
  for (int c = 0; c < 2; ++c) {
    std::vector<int> last(2, -1);
    for (auto [p, i] : results.get()) {
      EXPECT_GT(i, last[p]);
      last[p] = i;
      ++count[p];
    }
  }
  for (auto& c : consumers) c->join();
  EXPECT_EQ(count[0], kPerProducer);
  EXPECT_EQ(count[1], kPerProducer);
}

TYPED_TEST(QueueAcross, GetBlocksUntilTheOtherSidePutsAndQsizeIsExact) {
  mp::Queue<int> q, back;
  TypeParam other(echo_plus_one, std::ref(q), std::ref(back));
  q.put(41);
  EXPECT_EQ(back.get(5s), 42);
  other.join();
  EXPECT_EQ(q.qsize(), 0u);
  EXPECT_EQ(back.qsize(), 0u);
}

TEST(Queue, ThreadsOfOneProcessShareAQueueToo) {
  mp::Queue<int> q(0, 4096);
  constexpr int kItems = 20000;
  std::thread producer([&] {
    for (int i = 0; i < kItems; ++i) q.put(i);
  });
  long long sum = 0;
  for (int i = 0; i < kItems; ++i) {
    int v = q.get();
    EXPECT_EQ(v, i);
    sum += v;
  }
  producer.join();
  EXPECT_EQ(sum, static_cast<long long>(kItems) * (kItems - 1) / 2);
}

// ---- messages of any size -------------------------------------------------------------

TEST(Queue, A64MiBMessageCrossesProcessesWhole) {
  const std::string big = pattern(64u << 20, 1);
  mp::Queue<std::string> q;  // 1 MiB ring: the message is streamed
  mp::Process p(kDaemon, put_pattern, std::ref(q), big.size(), 1u);
  p.start();
  std::string got = q.get();
  EXPECT_EQ(got.size(), big.size());
  EXPECT_TRUE(got == big);
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(Queue, MessagesOfMixedSizesThroughATinyRingArriveIntact) {
  mp::Queue<std::string> q(0, 4096);
  std::mt19937 rng(7);
  std::vector<std::size_t> sizes;
  for (int i = 0; i < 300; ++i) sizes.push_back(rng() % 3 == 0 ? rng() % 20000 : rng() % 300);
  mp::Process p(kDaemon, put_patterns, std::ref(q), sizes);
  p.start();
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    std::string got = q.get();
    ASSERT_EQ(got.size(), sizes[i]) << "message " << i;
    ASSERT_TRUE(got == pattern(sizes[i], i)) << "message " << i;
  }
  p.join();
}

TEST(Queue, LargeMessagesFromTwoProducersNeverInterleave) {
  mp::Queue<std::string> q(0, 1 << 16);
  auto five = [](char c) { return std::vector<std::string>(5, std::string(300000, c)); };
  mp::Process a(kDaemon, put_all<std::string>, std::ref(q), five('a'));
  mp::Process b(kDaemon, put_all<std::string>, std::ref(q), five('b'));
  a.start();
  b.start();
  for (int i = 0; i < 10; ++i) {
    std::string s = q.get();
    ASSERT_EQ(s.size(), 300000u);
    EXPECT_TRUE(s == std::string(300000, s[0]));
  }
  a.join();
  b.join();
}

// ---- values of many types -------------------------------------------------------------

TEST(Queue, CarriesNestedStandardTypes) {
  using V = std::tuple<std::map<std::string, std::vector<int>>, std::optional<double>,
                       std::variant<int, std::string>, std::set<long>>;
  mp::Queue<V> q;
  V v{{{"a", {1, 2}}, {"b", {}}}, 2.5, std::string("hi"), {3, 1, 2}};
  mp::Process p(kDaemon, put_all<V>, std::ref(q), std::vector<V>{v});
  p.start();
  EXPECT_EQ(q.get(), v);
  p.join();
}

// ---- nothing lost, nothing hung: SIGKILL ------------------------------------------------

TEST(Queue, ProducerKilledMidStreamLeavesNoTornMessageAndTheQueueUsable) {
  mp::Queue<std::string> q(0, 1 << 16);
  q.put("before");
  mp::Process producer(kDaemon, put_pattern, std::ref(q), 4u << 20, 9u);  // blocks mid-stream
  producer.start();
  ASSERT_TRUE(wait_mid_stream(q));
  producer.kill();
  producer.join();
  EXPECT_EQ(q.qsize(), 1u);
  mp::Process after(kDaemon, put_all<std::string>, std::ref(q), std::vector<std::string>{"after"});
  after.start();
  EXPECT_EQ(q.get(), "before");
  EXPECT_EQ(q.get(5s), "after");  // the partial stream was discarded
  after.join();
  EXPECT_TRUE(q.empty());
  q.put("still works");
  EXPECT_EQ(q.get(), "still works");
}

TEST(Queue, ConsumerReceivingWhenItsStreamingProducerDiesIsNotHung) {
  mp::Queue<std::string> q(0, 1 << 16);
  mp::Process producer(kDaemon, put_pattern, std::ref(q), 4u << 20, 3u);
  producer.start();
  ASSERT_TRUE(wait_mid_stream(q));
  ASSERT_EQ(kill(*producer.pid(), SIGSTOP), 0);  // freeze it mid-stream
  std::atomic<int> state{0};
  std::string got;
  std::thread consumer([&] {
    got = q.get();  // takes the chunks there are, then waits for more
    state = 1;
  });
  ASSERT_TRUE(wait_ring_drained(q));
  producer.kill();
  producer.join();
  mp::Process after(kDaemon, put_all<std::string>, std::ref(q), std::vector<std::string>{"after"});
  after.start();
  consumer.join();
  EXPECT_EQ(got, "after");
  after.join();
}

TEST(Queue, ConsumerMidStreamWhenItsOnlyProducerDiesDropsThePartialAndSeesEOF) {
  mp::Queue<std::string> q(0, 1 << 16);
  mp::Process producer(kDaemon, put_pattern, std::ref(q), 4u << 20, 3u);
  producer.start();
  ASSERT_TRUE(wait_mid_stream(q));
  ASSERT_EQ(kill(*producer.pid(), SIGSTOP), 0);
  std::atomic<int> outcome{0};
  std::thread consumer([&] {
    try {
      q.get();  // takes the chunks there are, then waits mid-message
      outcome = 1;
    } catch (const mp::EOFError&) {
      outcome = 2;
    } catch (const mp::Empty&) {
      outcome = 3;
    }
  });
  ASSERT_TRUE(wait_ring_drained(q));
  Stopwatch sw;
  producer.kill();
  producer.join();
  consumer.join();
  EXPECT_EQ(outcome, 2);  // no torn message, no hang: end of input
  EXPECT_LT(sw.elapsed(), 2s);
  EXPECT_TRUE(q.empty());
}

TEST(Queue, ConsumerKilledWhileBlockedInGetLosesNothing) {
  mp::Queue<int> q;
  mp::Event started;
  mp::Process consumer(kDaemon, get_and_exit<int>, started, std::ref(q));
  consumer.start();
  ASSERT_TRUE(started.wait(kHandshake));
  std::this_thread::sleep_for(50ms);  // most likely inside get(); anywhere is fine
  consumer.kill();
  consumer.join();
  EXPECT_EQ(consumer.exitcode(), -SIGKILL);
  q.put(1);
  q.put(2);
  EXPECT_EQ(q.get(1s), 1);
  EXPECT_EQ(q.get(1s), 2);
}

TEST(Queue, ConsumerKilledMidReceiveOfAStreamedMessageLosesOnlyThatMessage) {
  mp::Queue<std::string> q(0, 1 << 16);
  q.put("first");
  mp::Process producer(kDaemon, put_all<std::string>, std::ref(q),
                       std::vector<std::string>{pattern(1u << 20, 5), "next"});
  producer.start();
  ASSERT_TRUE(wait_mid_stream(q));
  ASSERT_EQ(kill(*producer.pid(), SIGSTOP), 0);
  EXPECT_EQ(q.get(), "first");
  // The consumer takes the streamed chunks there are, then waits mid-message.
  mp::Event started;
  mp::Process consumer(kDaemon, get_and_exit<std::string>, started, std::ref(q));
  consumer.start();
  ASSERT_TRUE(wait_ring_drained(q));
  consumer.kill();
  consumer.join();
  EXPECT_EQ(consumer.exitcode(), -SIGKILL);
  ASSERT_EQ(kill(*producer.pid(), SIGCONT), 0);
  EXPECT_EQ(q.get(10s), "next");  // the rest of the big one was skipped
  producer.join();
  EXPECT_EQ(producer.exitcode(), 0);
  EXPECT_TRUE(q.empty());
}

TEST(Queue, ManyKilledProducersNeverLeaveATornOrDuplicatedItem) {
  mp::Queue<std::string> q(0, 1 << 15);
  std::set<std::string> seen;
  for (int round = 0; round < 8; ++round) {
    mp::Process producer(kDaemon, put_numbered_forever, std::ref(q), round);
    producer.start();
    for (int k = 0; k < 20; ++k) {
      // A timeout: between two producers a plain get() would see EOF.
      std::string s = q.get(30s);
      int r = -1, i = -1;
      ASSERT_EQ(std::sscanf(s.c_str(), "%d:%d:", &r, &i), 2);
      std::string head = fmt::format("{}:{}:", r, i);
      ASSERT_TRUE(s.substr(head.size()) == pattern(5000 + i % 50000, i)) << "torn item " << head;
      ASSERT_TRUE(seen.insert(head).second) << "duplicate " << head;
    }
    producer.kill();
    producer.join();
    while (auto s = q.try_get()) {
      ASSERT_TRUE(seen.insert(s->substr(0, s->find(':', s->find(':') + 1) + 1)).second);
    }
  }
  q.put("end");
  EXPECT_EQ(q.get(), "end");
}

// Tally is what the producer and consumers of the next test record, in a
// shared memory segment that the test reads.
struct Tally {
  static constexpr int kMaxItems = 1 << 20;
  std::atomic<bool> stop{false};
  std::atomic<int> produced{0};
  std::atomic<int> torn{0};
  std::atomic<int> seen[kMaxItems];
};

Tally& tally_in(mp::SharedMemory& mem) {
  return *std::launder(reinterpret_cast<Tally*>(mem.data()));
}

// tally_item is item i: its number, then bytes that depend on it; every
// 500th is larger than half a 64 KiB ring (streamed).
std::string tally_item(int i) {
  return fmt::format("{}:", i) + pattern(i % 500 == 0 ? 40000 : i % 3000, i);
}

// produce_tallied puts items 0, 1, ... until told to stop, counting each.
void produce_tallied(mp::Queue<std::string>& q, mp::SharedMemory& mem) {
  Tally& tally = tally_in(mem);
  for (int i = 0; i < Tally::kMaxItems && !tally.stop.load(); ++i) {
    q.put(tally_item(i));
    tally.produced.store(i + 1);
  }
}

// consume_tallied gets items until killed, recording each right after
// get() returned it (as seen, or as torn if it is not an item).
void consume_tallied(mp::Queue<std::string>& q, mp::SharedMemory& mem) {
  Tally& tally = tally_in(mem);
  for (;;) {
    std::optional<std::string> s = q.try_get(50ms);
    if (!s) continue;
    const int i = std::atoi(s->c_str());
    if (i < 0 || i >= Tally::kMaxItems || *s != tally_item(i)) {
      tally.torn.fetch_add(1);
    } else {
      tally.seen[i].fetch_add(1);
    }
  }
}

TEST(Queue, ConsumersKilledAtRandomMomentsNeverTearOrDuplicateAndLoseOnlyWhatTheyHeld) {
  // Three consumers race for the items of one producer, mostly whole
  // messages (taken without a lock, claimed after the copy) and every 500th
  // streamed through the ring (reassembled under the consumer lock), while
  // the test kills a random consumer at a random moment and starts another,
  // at least 60 times and until 2000 items went through. Each consumer
  // records an item in shared memory right after get() returns it, so a
  // killed consumer may take with it at most the one item it was
  // receiving; the producer must never be left waiting.
  constexpr int kMinKills = 60, kMinItems = 2000;
  mp::Queue<std::string> q(0, 1 << 16);
  mp::SharedMemory mem = mp::SharedMemory::create(sizeof(Tally));
  Tally* shared = new (mem.data()) Tally();
  mp::Process producer(kDaemon, produce_tallied, std::ref(q), std::ref(mem));
  auto start_consumer = [&] {
    auto c = std::make_unique<mp::Process>(kDaemon, consume_tallied, std::ref(q), std::ref(mem));
    c->start();
    return c;
  };
  std::vector<std::unique_ptr<mp::Process>> consumers;
  for (int c = 0; c < 3; ++c) consumers.push_back(start_consumer());
  producer.start();
  std::mt19937 rng(12345);
  int kills = 0;
  for (; kills < kMinKills || shared->produced.load() < kMinItems; ++kills) {
    ASSERT_LT(kills, 20 * kMinKills) << "only " << shared->produced.load() << " items went through";
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
    auto& victim = consumers[rng() % consumers.size()];
    victim->kill();
    victim->join();
    ASSERT_EQ(victim->exitcode(), -SIGKILL);
    victim = start_consumer();
  }
  shared->stop.store(true);
  producer.join(30s);
  ASSERT_FALSE(producer.is_alive()) << "the producer was left blocked";
  EXPECT_EQ(producer.exitcode(), 0);
  ASSERT_TRUE(wait_until([&] { return q.empty(); })) << q.qsize() << " items never taken";
  std::this_thread::sleep_for(200ms);  // the last get()s record their items
  for (auto& c : consumers) {
    c->kill();
    c->join();
  }
  const int produced = shared->produced.load();
  EXPECT_EQ(shared->torn.load(), 0) << "torn or foreign items received";
  int duplicated = 0, missing = 0;
  for (int i = 0; i < produced; ++i) {
    duplicated += shared->seen[i].load() > 1;
    missing += shared->seen[i].load() == 0;
  }
  EXPECT_EQ(duplicated, 0);
  EXPECT_LE(missing, kills) << "items lost beyond one per killed consumer, of " << produced;
  q.put("after");
  EXPECT_EQ(q.get(1s), "after");
}

// ---- end of input ---------------------------------------------------------------------

TEST(Queue, GetRaisesEOFErrorOnceEveryProducerHasDied) {
  mp::Queue<int> q;
  mp::Event put_done, never;
  mp::Process p(kDaemon, put_and_hold, std::ref(q), std::vector<int>{1}, false, put_done, never);
  p.start();
  ASSERT_TRUE(put_done.wait(kHandshake));
  p.kill();
  p.join();
  EXPECT_EQ(q.get(), 1);
  Stopwatch sw;
  EXPECT_THROW(q.get(), mp::EOFError);
  EXPECT_LT(sw.elapsed(), 1500ms);
}

TEST(Queue, GetBlockedWhenTheLastProducerDiesIsWokenWithEOFError) {
  mp::Queue<int> q;
  mp::Event put_done, never;
  mp::Process p(kDaemon, put_and_hold, std::ref(q), std::vector<int>{1}, false, put_done, never);
  p.start();
  ASSERT_TRUE(put_done.wait(kHandshake));
  EXPECT_EQ(q.get(), 1);
  std::atomic<bool> eof{false};
  std::thread t([&] {
    try {
      q.get();
    } catch (const mp::EOFError&) {
      eof = true;
    }
  });
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(eof);
  Stopwatch sw;
  p.kill();
  p.join();
  t.join();
  EXPECT_TRUE(eof);
  EXPECT_LT(sw.elapsed(), 1500ms);
}

TEST(Queue, GetRaisesEOFErrorWhenEveryProducerClosedItsQueue) {
  mp::Queue<int> q;
  mp::Event closed, done;
  mp::Process p(kDaemon, put_and_hold, std::ref(q), std::vector<int>{1}, true, closed, done);
  p.start();
  ASSERT_TRUE(closed.wait(kHandshake));
  EXPECT_EQ(q.get(), 1);
  EXPECT_THROW(q.get(), mp::EOFError);
  done.set();
  p.join();
}

TEST(Queue, GetDoesNotRaiseEOFErrorWhileAProducerLives) {
  mp::Queue<int> q;
  mp::Event put_done, done;
  mp::Process p(kDaemon, put_and_hold, std::ref(q), std::vector<int>{1}, false, put_done, done);
  p.start();
  ASSERT_TRUE(put_done.wait(kHandshake));
  EXPECT_EQ(q.get(), 1);
  EXPECT_THROW(q.get(400ms), mp::Empty);
  done.set();
  p.join();
}

TEST(Queue, NonblockingAndTimedGetsRaiseEmptyNotEOFError) {
  mp::Queue<int> q;
  mp::Process p(kDaemon, put_all<int>, std::ref(q), std::vector<int>{1});
  p.start();
  p.join();
  EXPECT_EQ(q.get(), 1);
  EXPECT_THROW(q.get_nowait(), mp::Empty);
  EXPECT_EQ(q.try_get(), std::nullopt);
  Stopwatch sw;
  EXPECT_THROW(q.get(300ms), mp::Empty);
  EXPECT_GE(sw.elapsed(), 250ms);
  EXPECT_EQ(q.try_get(10ms), std::nullopt);
  EXPECT_THROW(q.get(), mp::EOFError);
}

// ---- no consumer left: BrokenPipeError ----------------------------------------------------

// BlockedPut runs put(v) (no timeout) in a thread of this process and
// records how it ended; finish() makes sure the thread ends (by taking
// items, which makes room) before joining it.
template <class T>
class BlockedPut {
 public:
  enum Outcome { kBlocked, kBrokenPipe, kReturned, kOther };
  BlockedPut(mp::Queue<T>& q, T v)
      : q_(q), t_([this, v] {
          try {
            q_.put(v);
            outcome_ = kReturned;
          } catch (const mp::BrokenPipeError& e) {
            what_ = e.what();
            outcome_ = kBrokenPipe;
          } catch (...) {
            outcome_ = kOther;
          }
        }) {}
  ~BlockedPut() { finish(); }
  Outcome outcome() const { return outcome_.load(); }
  // wait_ended waits up to 10 s for put() to end.
  bool wait_ended() {
    return wait_until([&] { return outcome() != kBlocked; });
  }
  const std::string& what() {
    finish();
    return what_;
  }
  void finish() {
    if (!t_.joinable()) return;
    while (outcome() == kBlocked) q_.try_get(10ms);
    t_.join();
  }

 private:
  mp::Queue<T>& q_;
  std::atomic<Outcome> outcome_{kBlocked};
  std::string what_;
  std::thread t_;
};

// FullWithOneConsumer: a queue of one item that a child process has got from
// (so it counts as a consumer until it is killed), full again.
struct FullWithOneConsumer {
  mp::Queue<int> q{1};
  mp::Semaphore got{0};
  mp::Event never;
  mp::Process consumer{kDaemon, consume_one<int>, std::ref(q), got, never};
  FullWithOneConsumer() {
    consumer.start();
    q.put(1);
    EXPECT_TRUE(got.acquire(kHandshake));
    q.put(2);  // full
  }
};

TEST(Queue, PutBlockedOnAFullQueueWhoseConsumersAllDiedRaisesBrokenPipeError) {
  FullWithOneConsumer full;
  auto& q = full.q;
  auto& consumer = full.consumer;
  BlockedPut<int> put(q, 3);
  std::this_thread::sleep_for(350ms);  // past a few liveness checks
  EXPECT_EQ(put.outcome(), BlockedPut<int>::kBlocked) << "put() ended while its consumer lived";
  Stopwatch sw;
  consumer.kill();
  consumer.join();
  ASSERT_TRUE(put.wait_ended());
  EXPECT_LT(sw.elapsed(), 1500ms);
  ASSERT_EQ(put.outcome(), BlockedPut<int>::kBrokenPipe);
  EXPECT_EQ(put.what(),
            "queue is full and every process that got from it has exited or closed it: "
            "nothing was put");
  // Nothing was put and nothing lost: a new consumer finds the queue as it was.
  EXPECT_EQ(q.qsize(), 1u);
  EXPECT_EQ(q.get(1s), 2);
  q.put(3);
  EXPECT_EQ(q.get(1s), 3);
}

TEST(Queue, PutBlockedWhenTheOnlyConsumerClosesItsQueueRaisesBrokenPipeErrorAtOnce) {
  mp::Queue<int> q(1);
  mp::Semaphore got(0);
  mp::Event go, done;
  mp::Process consumer(kDaemon, consume_one_then_close, std::ref(q), got, go, done);
  consumer.start();
  q.put(1);
  ASSERT_TRUE(got.acquire(kHandshake));
  q.put(2);
  BlockedPut<int> put(q, 3);
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(put.outcome(), BlockedPut<int>::kBlocked);
  Stopwatch sw;
  go.set();
  ASSERT_TRUE(put.wait_ended());
  EXPECT_LT(sw.elapsed(), 1000ms);
  EXPECT_EQ(put.outcome(), BlockedPut<int>::kBrokenPipe);
  done.set();
  consumer.join();
}

TEST(Queue, EveryPutBlockedWhenTheConsumersDieRaisesBrokenPipeError) {
  // Three blocked puts: two threads here and another process. One waits in
  // the ring, the others for the producer lock behind it; all are told.
  FullWithOneConsumer full;
  auto& q = full.q;
  auto& consumer = full.consumer;
  mp::Process other(kDaemon, put_expecting_broken_pipe, std::ref(q), 30);
  other.start();
  BlockedPut<int> first(q, 3);
  BlockedPut<int> second(q, 4);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(first.outcome(), BlockedPut<int>::kBlocked);
  EXPECT_EQ(second.outcome(), BlockedPut<int>::kBlocked);
  consumer.kill();
  consumer.join();
  ASSERT_TRUE(first.wait_ended());
  ASSERT_TRUE(second.wait_ended());
  EXPECT_EQ(first.outcome(), BlockedPut<int>::kBrokenPipe);
  EXPECT_EQ(second.outcome(), BlockedPut<int>::kBrokenPipe);
  other.join(10s);
  ASSERT_FALSE(other.is_alive()) << "a put in another process was left blocked";
  EXPECT_EQ(other.exitcode(), 7);
  EXPECT_EQ(q.qsize(), 1u);
  EXPECT_EQ(q.get(1s), 2);
}

TEST(Queue, StreamedPutWhoseConsumersAllDiedRaisesBrokenPipeErrorAndIsDiscardedWhole) {
  mp::Queue<std::string> q(0, 1 << 16);
  mp::Semaphore got(0);
  mp::Event never;
  mp::Process consumer(kDaemon, consume_one<std::string>, std::ref(q), got, never);
  consumer.start();
  q.put("first");
  ASSERT_TRUE(got.acquire(kHandshake));
  q.put("second");
  BlockedPut<std::string> put(q, pattern(1u << 20, 7));  // fills the ring mid-stream
  ASSERT_TRUE(wait_mid_stream(q));
  consumer.kill();
  consumer.join();
  ASSERT_TRUE(put.wait_ended());
  ASSERT_EQ(put.outcome(), BlockedPut<std::string>::kBrokenPipe);
  EXPECT_EQ(q.get(1s), "second");
  EXPECT_EQ(q.try_get(300ms), std::nullopt);  // the chunks already sent are dropped
  EXPECT_EQ(q.channel().bytes_used(), 0u);
  q.put("after");
  EXPECT_EQ(q.get(1s), "after");
}

TEST(Queue, PutBlockedOnAQueueNobodyHasGotFromWaitsForAConsumer) {
  mp::Queue<int> q(1);
  q.put(1);
  BlockedPut<int> put(q, 2);
  std::this_thread::sleep_for(350ms);  // past a few liveness checks
  EXPECT_EQ(put.outcome(), BlockedPut<int>::kBlocked);
  mp::Process consumer(kDaemon, get_expecting, std::ref(q), 1);
  consumer.start();
  consumer.join();
  EXPECT_EQ(consumer.exitcode(), 0);
  ASSERT_TRUE(put.wait_ended());
  EXPECT_EQ(put.outcome(), BlockedPut<int>::kReturned);  // room was made before it left
  EXPECT_EQ(q.get(1s), 2);
}

TEST(Queue, PutWhileAnotherConsumerLivesDoesNotRaiseBrokenPipeError) {
  mp::Queue<int> q(1);
  mp::Semaphore got(0);
  mp::Event done, never;
  mp::Process survivor(kDaemon, consume_one<int>, std::ref(q), got, done);
  mp::Process victim(kDaemon, consume_one<int>, std::ref(q), got, never);
  survivor.start();
  victim.start();
  q.put(1);
  q.put(2);
  ASSERT_TRUE(got.acquire(kHandshake));
  ASSERT_TRUE(got.acquire(kHandshake));
  q.put(3);
  victim.kill();
  victim.join();
  EXPECT_THROW(q.put(4, 400ms), mp::Full);  // past a few liveness checks
  BlockedPut<int> put(q, 4);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(put.outcome(), BlockedPut<int>::kBlocked);
  done.set();
  survivor.join();
  ASSERT_TRUE(put.wait_ended());
  EXPECT_EQ(put.outcome(), BlockedPut<int>::kBrokenPipe);
}

TEST(Queue, TimedAndNonblockingPutsRaiseFullNotBrokenPipeError) {
  mp::Queue<int> q(1);
  mp::Process consumer(kDaemon, get_expecting, std::ref(q), 1);
  q.put(1);
  consumer.start();
  consumer.join();
  q.put(2);
  EXPECT_THROW(q.put_nowait(3), mp::Full);
  EXPECT_FALSE(q.try_put(3));
  Stopwatch sw;
  EXPECT_THROW(q.put(3, 300ms), mp::Full);
  EXPECT_GE(sw.elapsed(), 250ms);
  BlockedPut<int> put(q, 3);  // without a timeout: the error
  ASSERT_TRUE(put.wait_ended());
  EXPECT_EQ(put.outcome(), BlockedPut<int>::kBrokenPipe);
  EXPECT_EQ(q.get(1s), 2);
}

// ---- nothing leaks ----------------------------------------------------------------------

// maps_mention reports whether this process maps a file whose path
// contains `what`.
bool maps_mention(const std::string& what) {
  std::FILE* f = std::fopen("/proc/self/maps", "r");
  char line[4096];
  bool found = false;
  while (f && std::fgets(line, sizeof line, f)) found |= std::strstr(line, what.c_str()) != nullptr;
  if (f) std::fclose(f);
  return found;
}

TEST(Queue, LeavesNoFdOrDevShmEntryBehind) {
  // One start first: a process keeps a few fds for its life once it has
  // started a child (the forkserver's channel, say), which are not the queues'.
  {
    mp::Process warm(kDaemon, do_nothing);
    warm.start();
    warm.join();
  }
  const int fds = count_entries("/proc/self/fd");
  const int shm = count_entries("/dev/shm");
  {
    mp::Queue<int> probe;
    EXPECT_FALSE(maps_mention("/dev/shm/"));  // the ring is an anonymous mapping
  }
  {
    mp::Queue<std::string> q;
    mp::JoinableQueue<int> jq;
    mp::SimpleQueue<int> sq;
    mp::Process p(kDaemon, put_one_to_each, std::ref(q), std::ref(jq), std::ref(sq));
    p.start();
    EXPECT_EQ(q.get().size(), 3u << 20);
    EXPECT_EQ(jq.get(), 1);
    EXPECT_EQ(sq.get(), 2);
    p.join();
  }
  EXPECT_EQ(count_entries("/proc/self/fd"), fds);
  // /dev/shm is shared with every other process of the machine: give
  // somebody else's short-lived entry time to go before comparing.
  wait_until([&] { return count_entries("/dev/shm") == shm; });
  EXPECT_EQ(count_entries("/dev/shm"), shm);
  EXPECT_FALSE(maps_mention("/dev/shm/"));
}

// ---- SimpleQueue ---------------------------------------------------------------------------

TEST(SimpleQueue, PutGetAndEmptyWorkAcrossProcesses) {
  mp::SimpleQueue<std::string> q;
  EXPECT_TRUE(q.empty());
  mp::Process p(kDaemon, put_all<std::string, mp::SimpleQueue<std::string>>, std::ref(q),
                std::vector<std::string>{"a", "b"});
  p.start();
  EXPECT_EQ(q.get(), "a");
  EXPECT_EQ(q.get(), "b");
  p.join();
  EXPECT_TRUE(q.empty());
}

TEST(SimpleQueue, UseAfterCloseRaisesValueError) {
  mp::SimpleQueue<int> q;
  q.close();
  q.close();
  EXPECT_THROW(q.put(1), mp::ValueError);
  EXPECT_THROW(q.get(), mp::ValueError);
}

// ---- JoinableQueue ---------------------------------------------------------------------------

TEST(JoinableQueue, JoinReturnsOnceEveryItemIsTaskDone) {
  mp::JoinableQueue<int> q;
  for (int i = 0; i < 10; ++i) q.put(i);
  EXPECT_EQ(q.unfinished_tasks(), 10u);
  mp::Process worker(kDaemon, take_tasks, std::ref(q), 10, 0);
  worker.start();
  q.join();
  EXPECT_EQ(q.unfinished_tasks(), 0u);
  EXPECT_TRUE(q.empty());
  worker.join();
}

TEST(JoinableQueue, JoinBlocksWhileTasksAreUnfinished) {
  mp::JoinableQueue<int> q;
  q.put(1);
  q.get();
  Stopwatch sw;
  EXPECT_FALSE(q.join(200ms));
  EXPECT_GE(sw.elapsed(), 150ms);
  q.task_done();
  EXPECT_TRUE(q.join(0ms));
}

TEST(JoinableQueue, TaskDoneCalledTooManyTimesRaisesValueError) {
  mp::JoinableQueue<int> q;
  q.put(1);
  q.task_done();
  try {
    q.task_done();
    FAIL() << "no error";
  } catch (const mp::ValueError& e) {
    EXPECT_STREQ(e.what(), "task_done() called too many times");
  }
  EXPECT_EQ(q.unfinished_tasks(), 0u);
  q.join();
}

TEST(JoinableQueue, AProducerKilledMidPutLeavesNoPhantomTask) {
  mp::JoinableQueue<std::string> q(0, 1 << 16);
  mp::Process producer(kDaemon, put_pattern, std::ref(q), 2u << 20, 1u);  // blocks mid-stream
  producer.start();
  ASSERT_TRUE(wait_mid_stream(q));
  producer.kill();
  producer.join();
  EXPECT_EQ(q.unfinished_tasks(), 0u);
  EXPECT_TRUE(q.join(1s));
}

TEST(JoinableQueue, JoinRaisesBrokenPipeErrorWhenEveryConsumerIsGoneWithTasksUnfinished) {
  mp::JoinableQueue<int> q;
  for (int i = 0; i < 3; ++i) q.put(i);
  // The worker finishes one task and exits holding another, not done.
  mp::Process worker(kDaemon, take_tasks, std::ref(q), 1, 1);
  worker.start();
  worker.join();
  EXPECT_EQ(q.unfinished_tasks(), 2u);
  Stopwatch sw;
  std::atomic<bool> ended{false};
  std::string what;
  std::thread joiner([&] {
    try {
      q.join();
    } catch (const mp::BrokenPipeError& e) {
      what = e.what();
    }
    ended = true;
  });
  if (!wait_until([&] { return ended.load(); })) {
    while (q.unfinished_tasks() > 0) q.task_done();  // let the joiner go
  }
  joiner.join();
  EXPECT_LT(sw.elapsed(), 1500ms);
  EXPECT_EQ(what,
            "JoinableQueue.join(): 2 task(s) unfinished and every process that got from "
            "the queue has exited or closed it");
  EXPECT_FALSE(q.join(100ms));  // a timed join just times out
  EXPECT_EQ(q.get(1s), 2);      // nothing lost: this process finishes the work
  q.task_done();
  q.task_done();
  q.join();
}

// ---- the tutorials' programs ----------------------------------------------------------------

TEST(Tutorial, WriterAndAnEndlessReaderThatIsTerminated) {
  mp::Queue<std::string> q;
  mp::Queue<int> count;
  mp::Process reader(kDaemon, count_until_done, std::ref(q), std::ref(count));
  reader.start();
  for (int i = 0; i < 1000; ++i) q.put(fmt::format("message {}", i));
  q.put("DONE");
  EXPECT_EQ(count.get(), 1000);
  reader.terminate();
  reader.join();
  EXPECT_EQ(reader.exitcode(), -SIGTERM);
}

TEST(Tutorial, PingAndPongCountToExactlyFiftyThroughAQueue) {
  mp::Queue<int> to_ping, to_pong;
  auto player = [](mp::Queue<int>& in, mp::Queue<int>& out) {
    for (;;) {
      int n = in.get();
      if (n >= 50) {
        out.put(n);
        return;
      }
      out.put(n + 1);
    }
  };
  mp::Process ping(kDaemon, player, std::ref(to_ping), std::ref(to_pong));
  mp::Process pong(kDaemon, player, std::ref(to_pong), std::ref(to_ping));
  ping.start();
  pong.start();
  to_ping.put(0);
  ping.join();
  pong.join();
  EXPECT_EQ(ping.exitcode(), 0);
  EXPECT_EQ(pong.exitcode(), 0);
  // The last player forwarded 50 to the other, which returned it back: one
  // 50 is left in a queue.
  std::optional<int> a = to_ping.try_get(), b = to_pong.try_get();
  EXPECT_EQ(a.value_or(0) + b.value_or(0), 50);
}

// ---- the transport directly -------------------------------------------------------------------

TEST(ShmChannel, RoundTripsEmptyAndHugeMessages) {
  mp::internal::ShmChannel ch(4096);
  std::string out = "junk";
  ASSERT_EQ(ch.send_bytes("", 0, std::nullopt), mp::internal::ChannelStatus::kOk);
  ASSERT_EQ(ch.recv_bytes(out, std::nullopt), mp::internal::ChannelStatus::kOk);
  EXPECT_EQ(out, "");
  EXPECT_EQ(ch.capacity(), 4096u);
  const std::string big = pattern(100000, 4);
  std::thread t([&] { ch.send_bytes(big.data(), big.size(), std::nullopt); });
  ASSERT_EQ(ch.recv_bytes(out, std::nullopt), mp::internal::ChannelStatus::kOk);
  t.join();
  EXPECT_TRUE(out == big);
}

TEST(ShmChannel, AQueuedStringIsSentInTheCodecsWireFormat) {
  // Queue<std::string> bypasses the codec's buffer; the bytes must still be
  // exactly mp::encode's, both ways.
  mp::Queue<std::string> q;
  const std::string s = pattern(5000, 2);
  q.put(s);
  std::string wire;
  ASSERT_EQ(q.channel().recv_bytes(wire, std::nullopt), mp::internal::ChannelStatus::kOk);
  EXPECT_TRUE(wire == mp::encode(s));
  const std::string enc = mp::encode(std::string("abc"));
  ASSERT_EQ(q.channel().send_bytes(enc.data(), enc.size(), std::nullopt),
            mp::internal::ChannelStatus::kOk);
  EXPECT_EQ(q.get(), "abc");
  const std::string bad = enc.substr(0, enc.size() - 1);  // length says 3, 2 bytes follow
  ASSERT_EQ(q.channel().send_bytes(bad.data(), bad.size(), std::nullopt),
            mp::internal::ChannelStatus::kOk);
  EXPECT_THROW(q.get(), mp::CodecError);
}

TEST(ShmChannel, AQueuedNumberIsSentInTheCodecsWireFormat) {
  // Queue<arithmetic> sends the value's bytes without the codec's buffer;
  // they must be exactly mp::encode's, and mp::encode's bytes must decode.
  auto check = [](auto v) {
    using T = decltype(v);
    mp::Queue<T> q;
    q.put(v);
    std::string wire;
    ASSERT_EQ(q.channel().recv_bytes(wire, std::nullopt), mp::internal::ChannelStatus::kOk);
    EXPECT_TRUE(wire == mp::encode(v));
    const std::string enc = mp::encode(v);
    ASSERT_EQ(q.channel().send_bytes(enc.data(), enc.size(), std::nullopt),
              mp::internal::ChannelStatus::kOk);
    EXPECT_EQ(q.get(), v);
  };
  check(-1234567);
  check(std::uint64_t{0x0123'4567'89ab'cdef});
  check(2.5);
  check(-0.75f);
  check('x');
  check(std::int16_t{-7});
  mp::Queue<int> q;
  const std::string bad = "\x01\x02";  // two bytes are not an int
  ASSERT_EQ(q.channel().send_bytes(bad.data(), bad.size(), std::nullopt),
            mp::internal::ChannelStatus::kOk);
  EXPECT_THROW(q.get(), mp::CodecError);
}

TEST(ShmChannel, MessagesWrappingAroundTheRingEndArriveIntact) {
  // Every record offset modulo the ring, so that whole records are seen
  // both contiguous and split at the ring's end, with and without a prefix.
  mp::Queue<std::string> q(0, 4096);
  for (std::size_t i = 0; i < 3000; ++i) {
    const std::string s = pattern(1 + i % 61, static_cast<unsigned>(i));
    q.put(s);
    ASSERT_TRUE(q.get() == s) << i;
    ASSERT_EQ(q.qsize(), 0u);
  }
  mp::internal::ShmChannel ch(4096);
  std::string out;
  for (std::size_t i = 0; i < 3000; ++i) {
    const std::string s = pattern(1 + i % 59, static_cast<unsigned>(i));
    ASSERT_EQ(ch.send_bytes(s.data(), s.size(), std::nullopt), mp::internal::ChannelStatus::kOk);
    ASSERT_EQ(ch.recv_bytes(out, std::nullopt), mp::internal::ChannelStatus::kOk);
    ASSERT_TRUE(out == s) << i;
  }
}

TEST(Queue, BadBytesOnTheWireRaiseCodecErrorNotUndefinedBehaviour) {
  mp::Queue<std::vector<int>> q;
  const std::string junk = "\xff\xff\xff\xff\xff\xff\xff\x7f";  // a huge element count
  ASSERT_EQ(q.channel().send_bytes(junk.data(), junk.size(), std::nullopt),
            mp::internal::ChannelStatus::kOk);
  EXPECT_THROW(q.get(), mp::CodecError);
  q.put({1, 2});
  EXPECT_EQ(q.get(), (std::vector<int>{1, 2}));
}

TEST(ShmChannel, ProcessAliveSeesZombiesAndReusedPidsAsDead) {
  EXPECT_TRUE(mp::internal::process_alive(getpid(), mp::internal::self_start_time()));
  EXPECT_FALSE(mp::internal::process_alive(getpid(), mp::internal::self_start_time() + 1));
  pid_t child = fork();
  if (child == 0) _exit(0);
  ASSERT_TRUE(wait_until([&] { return !mp::internal::process_alive(child, 0); }));  // a zombie
  int status;
  waitpid(child, &status, 0);
  EXPECT_FALSE(mp::internal::process_alive(child, 0));
}

}  // namespace

// duration::max() is forever, not an overflowed deadline that has already
// passed (issue 15, item 13); a negative timeout tries once.
TEST(QueueTimeouts, MaxDurationWaitsForeverAndNegativeTriesOnce) {
  mp::Queue<int> q;
  mp::Process late(sleep_then_put, std::ref(q), 300, 7);
  late.start();
  EXPECT_EQ(q.get(std::chrono::hours::max()), 7);
  late.join();
  mp::Queue<int> empty;
  mp_test::Stopwatch sw;
  EXPECT_THROW(empty.get(std::chrono::seconds(-5)), mp::Empty);
  EXPECT_THROW(empty.get(std::chrono::nanoseconds::min()), mp::Empty);
  EXPECT_LT(sw.elapsed(), std::chrono::milliseconds(500));
  mp::Lock lock;
  EXPECT_TRUE(lock.acquire(std::chrono::hours::max()));
  lock.release();
  mp::Event e;
  mp::Process setter(set_after, e, 200);
  setter.start();
  EXPECT_TRUE(e.wait(std::chrono::nanoseconds::max()));
  setter.join();
}

// A wild write over the ring (issue 15, item 8): an impossible record header
// makes get() raise an mp error (CodecError) that says what happened, not a
// std::runtime_error, and it does so again at the next call.
TEST(QueueDamage, ImpossibleRecordHeaderRaisesCodecError) {
  mp::Queue<std::string> q;
  q.put("hello");
  const auto& region = q.channel().region();
  // The ring follows the channel's 4 KiB header; its first record header
  // (length, kind) is overwritten with an impossible length.
  auto* ring = static_cast<unsigned char*>(region.data()) + 4096;
  std::memset(ring, 0xff, 8);
  for (int i = 0; i < 2; ++i) {
    try {
      (void)q.get(std::chrono::seconds(1));
      FAIL() << "no error";
    } catch (const mp::CodecError& e) {
      EXPECT_NE(std::string(e.what()).find("corrupt"), std::string::npos) << e.what();
    }
  }
}

// The ring's capacity, mask and message limit head the channel's header
// page. Scribbled over, they must not steer a handle outside the ring: the
// handle keeps the geometry it checked when it was made. 200 puts and gets
// of 1000 bytes wrap a 4 KiB ring many times over.
TEST(QueueDamage, ScribbledGeometryInTheHeaderLeavesTheHandleInsideTheRing) {
  mp::Queue<std::string> q(0, 4096);
  q.put("before");
  auto* header = static_cast<unsigned char*>(q.channel().region().data());
  std::memset(header, 0xff, 24);
  EXPECT_EQ(q.get(1s), "before");
  for (int i = 0; i < 200; ++i) {
    const std::string item(1000, static_cast<char>('a' + i % 26));
    q.put(item);
    ASSERT_EQ(q.get(1s), item) << "round " << i;
  }
  EXPECT_EQ(q.channel().capacity(), 4096u);
  // A handle made from the damaged region afterwards is refused.
  const int fd = fcntl(q.channel().region().fd(), F_DUPFD_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  EXPECT_THROW((void)mp::internal::ShmChannel::attach(mp::internal::SharedRegion::attach(fd)),
               mp::CodecError);
}
