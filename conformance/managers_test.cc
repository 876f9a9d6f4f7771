// Conformance: mp/managers.h.
// CPython docs: multiprocessing — "Managers" (SyncManager's dict, list,
// Namespace, Value, Queue, JoinableQueue, Lock, RLock, Semaphore, Event,
// Condition, Barrier), "Customized managers" (BaseManager.register),
// "Using a remote manager", "Proxy Objects" (proxies passed to other
// processes, referents kept alive while a proxy lives) and "Authentication
// keys" (HMAC challenge-response). Plus issue 20's promises: nobody gets in
// without the key, bad bytes before or after authentication get nothing, a
// crowd of idle peers does not stop service, a dead lock owner is reported,
// a dead server makes calls fail instead of hanging.
//
// Children run targets that travel (functions taking proxies by value), so
// the same targets serve fork, forkserver and spawn children.
#include "mp/managers.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "conformance/test_util.h"
#include "mp/context.h"
#include "mp/internal/manager_wire.h"
#include "mp/queue.h"

namespace {

using namespace std::chrono_literals;
using mp_test::Stopwatch;
namespace wire = mp::internal::mgr;

int add_one(int v) { return v + 1; }
MP_MANAGER_FUNCTION(add_one);

std::string shout(const std::string& s) { return s + "!"; }
MP_MANAGER_FUNCTION(shout);

struct Point {
  int x = 0;
  int y = 0;
};
void move_right(Point& p) { ++p.x; }
MP_MANAGER_FUNCTION(move_right);

struct Counter {
  long long n = 0;
  long long add(long long k) { return n += k; }
  long long get() const { return n; }
  void fail() { throw mp::ValueError("counter says no"); }
};
[[maybe_unused]] const bool kCounterRegistered = mp::register_type<Counter>("Counter")
                                                     .method<&Counter::add>("add")
                                                     .method<&Counter::get>("get")
                                                     .method<&Counter::fail>("fail");

// raw_connect opens a plain socket to a manager (no handshake).
int raw_connect(const mp::Address& a) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  std::memcpy(un.sun_path, a.path.data(), a.path.size());
  un.sun_path[0] = '\0';
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + a.path.size());
  if (connect(fd, reinterpret_cast<sockaddr*>(&un), len) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// closed_by_peer: the server closed fd (reads reach EOF or a reset) within 5 s.
bool closed_by_peer(int fd) {
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[512];
  for (;;) {
    const ssize_t r = recv(fd, buf, sizeof buf, 0);
    if (r == 0) return true;
    if (r < 0) return errno == ECONNRESET;
  }
}

void write_raw(int fd, const void* p, std::size_t n) {
  ASSERT_EQ(send(fd, p, n, MSG_NOSIGNAL), static_cast<ssize_t>(n));
}

// ---- children (they travel: functions taking proxies by value) ----

void increment_many(mp::DictProxy<std::string, int> d, int times) {
  for (int i = 0; i < times; ++i) d.update("hits", add_one);
}

void child_uses_proxies(mp::DictProxy<std::string, int> d, mp::ListProxy<std::string> l,
                        mp::LockProxy lock, mp::QueueProxy<int> q) {
  std::lock_guard guard(lock);
  d.set(mp::current_process().name(), 1);
  l.append("child");
  q.put(7);
}

void hold_lock_forever(mp::LockProxy lock, mp::EventProxy held) {
  lock.acquire();
  held.set();
  pause();
}

void wait_then_set(mp::EventProxy go, mp::ValueProxy<int> v) {
  go.wait();
  v.set(42);
}

void condition_waiter(mp::ConditionProxy c, mp::ValueProxy<int> v, mp::EventProxy ready) {
  std::lock_guard guard(c);
  ready.set();
  mp_test::require(c.wait_for([&] { return v.get() == 1; }, 10s), "condition not notified");
  v.set(2);
}

void barrier_party(mp::BarrierProxy b, mp::ListProxy<long long> out) { out.append(b.wait(10s)); }

void consume(mp::JoinableQueueProxy<int> q, mp::ValueProxy<int> sum) {
  for (;;) {
    const int v = q.get();
    if (v < 0) {
      q.task_done();
      return;
    }
    sum.update(add_one);
    q.task_done();
  }
}

// ---- dict, list, Value, Namespace --------------------------------------------

TEST(ManagerDict, BehavesLikeADict) {
  mp::Manager m;
  auto d = m.dict<std::string, int>();
  EXPECT_EQ(d.get("a"), std::nullopt);
  d.set("a", 1);
  d.set("b", 2);
  EXPECT_EQ(d.get("a"), 1);
  EXPECT_EQ(d.at("b"), 2);
  EXPECT_THROW(d.at("zz"), mp::KeyError);
  EXPECT_TRUE(d.contains("a"));
  EXPECT_EQ(d.size(), 2u);
  EXPECT_EQ(d.setdefault("a", 9), 1);
  EXPECT_EQ(d.setdefault("c", 3), 3);
  EXPECT_EQ(d.pop("c"), 3);
  EXPECT_TRUE(d.erase("b"));
  EXPECT_FALSE(d.erase("b"));
  d.update(std::map<std::string, int>{{"x", 10}, {"y", 20}});
  EXPECT_EQ(d.copy(), (std::map<std::string, int>{{"a", 1}, {"x", 10}, {"y", 20}}));
  EXPECT_EQ(d.keys().size(), 3u);
  d.clear();
  EXPECT_EQ(d.size(), 0u);
}

TEST(ManagerDict, UpdateRunsTheRegisteredFunctionInTheServer) {
  mp::Manager m;
  auto d = m.dict<std::string, int>();
  EXPECT_EQ(d.update("n", add_one), 1);  // missing: applied to the default
  EXPECT_EQ(d.update("n", add_one), 2);
  auto s = m.dict<int, std::string>();
  s.set(1, "hey");
  EXPECT_EQ(s.update(1, shout), "hey!");
}

int not_registered(int v) { return v; }

TEST(ManagerDict, UpdateWithAnUnregisteredFunctionRaisesValueError) {
  mp::Manager m;
  auto d = m.dict<std::string, int>();
  EXPECT_THROW(d.update("n", not_registered), mp::ValueError);
}

TEST(ManagerDict, EightProcessesUpdatingOneKeyTenThousandTimesEachAddUpExactly) {
  mp::Manager m;
  auto d = m.dict<std::string, int>();
  std::vector<mp::Process> ps;
  for (int i = 0; i < 8; ++i) ps.push_back(mp_test::start_child(increment_many, d, 10'000));
  for (auto& p : ps) EXPECT_EQ(mp_test::joined_exitcode(p), 0);
  EXPECT_EQ(d.get("hits"), 80'000);
}

TEST(ManagerDict, AHundredThousandEntriesReadBackEntirely) {
  mp::Manager m;
  auto d = m.dict<int, std::string>();
  std::map<int, std::string> want;
  for (int i = 0; i < 100'000; ++i) want[i] = "value-" + std::to_string(i);
  d.update(want);
  EXPECT_EQ(d.size(), 100'000u);
  EXPECT_EQ(d.copy(), want);
}

TEST(ManagerList, BehavesLikeAListWithPythonIndexes) {
  mp::Manager m;
  auto l = m.list<int>();
  l.append(1);
  l.extend({2, 3, 4});
  EXPECT_EQ(l.size(), 4u);
  EXPECT_EQ(l[-1], 4);
  l.set(0, 10);
  l.insert(1, 5);
  EXPECT_EQ(l.to_vector(), (std::vector<int>{10, 5, 2, 3, 4}));
  EXPECT_EQ(l.pop(), 4);
  EXPECT_EQ(l.pop(0), 10);
  EXPECT_EQ(l.update(0, add_one), 6);
  EXPECT_THROW(l.at(10), mp::IndexError);
  l.clear();
  EXPECT_THROW(l.pop(), mp::IndexError);
}

TEST(ManagerValue, GetSetAndAtomicUpdate) {
  mp::Manager m;
  auto v = m.Value<int>(5);
  EXPECT_EQ(v.get(), 5);
  v.set(6);
  EXPECT_EQ(v.update(add_one), 7);
  auto ns = m.Namespace<Point>(Point{1, 2});
  ns.update(move_right);
  EXPECT_EQ(ns.get().x, 2);
  EXPECT_EQ(ns.get().y, 2);
}

TEST(ManagerType, RegisteredTypeServesItsMethods) {
  mp::Manager m;
  auto c = m.create<Counter>(Counter{10});
  EXPECT_EQ(c.call<&Counter::add>(5), 15);
  EXPECT_EQ(c.call<&Counter::get>(), 15);
  EXPECT_THROW(c.call<&Counter::fail>(), mp::ValueError);
  EXPECT_EQ(m.create<Counter>().call<&Counter::get>(), 0);
}

// ---- queues and synchronisation ---------------------------------------------

TEST(ManagerQueue, GetTimesOutWithEmptyAndPutWithFull) {
  mp::Manager m;
  auto q = m.Queue<int>(1);
  EXPECT_THROW(q.get_nowait(), mp::Empty);
  Stopwatch sw;
  EXPECT_THROW(q.get(true, 0.2s), mp::Empty);
  EXPECT_GE(sw.elapsed(), 150ms);
  EXPECT_LT(sw.elapsed(), 2s);
  q.put(1);
  EXPECT_THROW(q.put(2, true, 0.1s), mp::Full);
  EXPECT_EQ(q.qsize(), 1u);
  EXPECT_EQ(q.get(), 1);
}

TEST(ManagerQueue, JoinableQueueJoinWaitsForTaskDone) {
  mp::Manager m;
  auto q = m.JoinableQueue<int>();
  auto sum = m.Value<int>(0);
  auto p = mp_test::start_child(consume, q, sum);
  for (int i = 0; i < 100; ++i) q.put(i);
  q.put(-1);
  EXPECT_TRUE(q.join(10s));
  EXPECT_EQ(sum.get(), 100);
  EXPECT_EQ(mp_test::joined_exitcode(p), 0);
  EXPECT_THROW(q.task_done(), mp::ValueError);
}

TEST(ManagerSync, EventWakesAWaiterInAnotherProcess) {
  mp::Manager m;
  auto go = m.Event();
  auto v = m.Value<int>(0);
  EXPECT_FALSE(go.wait(0.05s));
  auto p = mp_test::start_child(wait_then_set, go, v);
  go.set();
  EXPECT_EQ(mp_test::joined_exitcode(p), 0);
  EXPECT_EQ(v.get(), 42);
  EXPECT_TRUE(go.is_set());
}

TEST(ManagerSync, ConditionNotifiesAWaiter) {
  mp::Manager m;
  auto c = m.Condition();
  auto v = m.Value<int>(0);
  auto ready = m.Event();
  auto p = mp_test::start_child(condition_waiter, c, v, ready);
  ASSERT_TRUE(ready.wait(10s));
  {
    std::lock_guard guard(c);
    v.set(1);
    c.notify_all();
  }
  EXPECT_EQ(mp_test::joined_exitcode(p), 0);
  EXPECT_EQ(v.get(), 2);
  EXPECT_THROW(c.notify(), mp::RuntimeError);  // not held
}

TEST(ManagerSync, BarrierReleasesAllPartiesWithDistinctIndexes) {
  mp::Manager m;
  auto b = m.Barrier(3);
  auto out = m.list<long long>();
  std::vector<mp::Process> ps;
  for (int i = 0; i < 2; ++i) ps.push_back(mp_test::start_child(barrier_party, b, out));
  out.append(b.wait(10s));
  for (auto& p : ps) EXPECT_EQ(mp_test::joined_exitcode(p), 0);
  auto got = out.to_vector();
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<long long>{0, 1, 2}));
  EXPECT_THROW(b.wait(0.05s), mp::BrokenBarrierError);  // alone: times out, breaks
  EXPECT_TRUE(b.broken());
}

TEST(ManagerSync, SemaphoreAndRLock) {
  mp::Manager m;
  auto s = m.BoundedSemaphore(1);
  EXPECT_TRUE(s.acquire());
  EXPECT_FALSE(s.acquire(false));
  s.release();
  EXPECT_THROW(s.release(), mp::ValueError);
  auto r = m.RLock();
  EXPECT_TRUE(r.acquire());
  EXPECT_TRUE(r.acquire());
  r.release();
  r.release();
  EXPECT_THROW(r.release(), mp::RuntimeError);
}

TEST(ManagerLock, AClientKilledHoldingALockIsReportedNotADeadlock) {
  mp::Manager m;
  auto lock = m.Lock();
  auto held = m.Event();
  auto p = mp_test::start_child(hold_lock_forever, lock, held);
  ASSERT_TRUE(held.wait(10s));
  EXPECT_FALSE(lock.acquire(true, 0.05s));
  p.kill();
  p.join();
  Stopwatch sw;
  EXPECT_THROW(lock.acquire(true, 10s), mp::OwnerDeadError);
  EXPECT_LT(sw.elapsed(), 5s);
  lock.release();  // the caller held it
  EXPECT_TRUE(lock.acquire(false));
  lock.release();
}

// ---- travel -------------------------------------------------------------------

TEST(ManagerTravel, AProxyWorksInAChildOfEveryStartMethod) {
  for (const char* method : {"fork", "forkserver", "spawn"}) {
    SCOPED_TRACE(method);
    mp::Manager m(mp::ManagerOptions{.start_method = method});
    auto d = m.dict<std::string, int>();
    auto l = m.list<std::string>();
    auto lock = m.Lock();
    auto q = m.Queue<int>();
    auto p = mp::get_context(method).Process(child_uses_proxies, d, l, lock, q);
    p.start();
    EXPECT_EQ(q.get(true, 20s), 7);
    EXPECT_EQ(mp_test::joined_exitcode(p), 0);
    EXPECT_EQ(d.size(), 1u);
    EXPECT_EQ(l.to_vector(), std::vector<std::string>{"child"});
  }
}

TEST(ManagerTravel, AProxyThroughAQueueArrivesAsTheSameObject) {
  mp::Manager m;
  auto d = m.dict<int, int>();
  d.set(1, 2);
  const std::string bytes = mp::encode(d);
  auto back = mp::decode<mp::DictProxy<int, int>>(bytes);
  EXPECT_EQ(back.get(1), 2);
  EXPECT_THROW((mp::decode<mp::DictProxy<int, std::string>>(bytes)), mp::CodecError);
}

// ---- lifetimes ----------------------------------------------------------------

TEST(ManagerLifetime, ObjectIsFreedWhenItsLastProxyGoes) {
  mp::Manager m;
  std::string bytes;
  {
    auto d = m.dict<int, int>();
    bytes = mp::encode(d);
  }
  // The release travels ahead of the next call on another connection: poll.
  bool freed = false;
  for (int i = 0; i < 100 && !freed; ++i) {
    try {
      (void)mp::decode<mp::DictProxy<int, int>>(bytes);
      std::this_thread::sleep_for(20ms);
    } catch (const mp::RuntimeError&) {
      freed = true;
    }
  }
  EXPECT_TRUE(freed);
}

void make_and_die(mp::Address address, std::string authkey, mp::Queue<std::string>& out) {
  auto client = mp::Manager::connect(address, authkey);
  auto d = client.dict<int, int>();
  out.put(mp::encode(d));
  raise(SIGKILL);
}

TEST(ManagerLifetime, ADeadClientsReferencesAreDropped) {
  mp::Manager m;
  mp::Queue<std::string> out;
  auto p = mp_test::start_child(make_and_die, m.address(), m.authkey(), std::ref(out));
  const std::string bytes = out.get(20s);
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGKILL);
  bool freed = false;
  for (int i = 0; i < 100 && !freed; ++i) {
    try {
      (void)mp::decode<mp::DictProxy<int, int>>(bytes);
      std::this_thread::sleep_for(20ms);
    } catch (const mp::RuntimeError&) {
      freed = true;
    }
  }
  EXPECT_TRUE(freed);
}

TEST(ManagerLifetime, ServerKilledMidCallRaisesConnectionError) {
  mp::Manager m;
  auto q = m.Queue<int>();
  const pid_t server = *m.server_pid();
  std::thread killer([server] {
    std::this_thread::sleep_for(200ms);  // the get below is parked by then, or about to be
    kill(server, SIGKILL);
  });
  Stopwatch sw;
  EXPECT_THROW(q.get(true, 30s), mp::ConnectionError);
  EXPECT_LT(sw.elapsed(), 5s);
  killer.join();
  EXPECT_THROW(q.qsize(), mp::ConnectionError);
}

TEST(ManagerLifetime, UseAfterShutdownRaisesAClearError) {
  mp::Manager m;
  auto d = m.dict<int, int>();
  m.shutdown();
  m.shutdown();  // idempotent
  EXPECT_THROW((m.dict<int, int>()), mp::ProcessError);
  EXPECT_THROW(d.get(1), mp::ConnectionError);
}

// ---- authentication and bad peers ------------------------------------------

TEST(ManagerAuth, AWrongAuthkeyIsRejected) {
  mp::Manager m(mp::ManagerOptions{.authkey = "right key"});
  EXPECT_THROW(mp::Manager::connect(m.address(), "wrong key"), mp::AuthenticationError);
  auto c = mp::Manager::connect(m.address(), "right key");
  auto d = c.dict<int, int>();
  d.set(1, 1);
  EXPECT_EQ(d.get(1), 1);
}

TEST(ManagerAuth, AWrongDigestGetsFailureAndTheConnectionClosed) {
  mp::Manager m;
  const int fd = raw_connect(m.address());
  ASSERT_GE(fd, 0);
  const std::string challenge = wire::recv_frame(fd, wire::kMaxAuthFrame);
  EXPECT_EQ(challenge.rfind("#CHALLENGE#", 0), 0u);
  wire::send_frame(fd, std::string("{sha256}") + std::string(32, 'x'));
  EXPECT_EQ(wire::recv_frame(fd, wire::kMaxAuthFrame), "#FAILURE#");
  EXPECT_TRUE(closed_by_peer(fd));
  close(fd);
}

TEST(ManagerAuth, GarbageAndHugeClaimsBeforeAuthenticationCloseTheConnection) {
  mp::Manager m;
  auto d = m.dict<int, int>();
  {  // a frame claiming 2^60 bytes: closed, nothing allocated for it
    const int fd = raw_connect(m.address());
    (void)wire::recv_frame(fd, wire::kMaxAuthFrame);
    const std::uint64_t huge = std::uint64_t{1} << 60;
    write_raw(fd, &huge, 8);
    EXPECT_TRUE(closed_by_peer(fd));
    close(fd);
  }
  {  // plain garbage
    const int fd = raw_connect(m.address());
    const std::string junk(1000, '\x7f');
    write_raw(fd, junk.data(), junk.size());
    EXPECT_TRUE(closed_by_peer(fd));
    close(fd);
  }
  {  // a truncated frame, then the peer goes away
    const int fd = raw_connect(m.address());
    const std::uint64_t n = 40;
    write_raw(fd, &n, 8);
    write_raw(fd, "abc", 3);
    close(fd);
  }
  d.set(1, 1);  // the server still serves
  EXPECT_EQ(d.get(1), 1);
}

TEST(ManagerAuth, GarbageAfterAuthenticationGetsAnErrorNotACrash) {
  mp::Manager m;
  auto d = m.dict<int, int>();
  const int fd = raw_connect(m.address());
  wire::client_handshake(fd, m.authkey());
  std::string hello;
  mp::Encoder e(hello);
  e.write(static_cast<std::uint8_t>(wire::Op::kHello));
  e.write(std::uint64_t{0});
  e.write(std::uint64_t{12345});
  e.write(false);
  wire::send_frame(fd, hello);
  EXPECT_EQ(wire::recv_frame(fd, wire::kMaxFrame), std::string(1, '\0'));
  // A request naming the dict with a key length far past the frame's end.
  std::string bad;
  mp::Encoder b(bad);
  b.write(static_cast<std::uint8_t>(wire::Op::kDictGet));
  b.write(d.id());
  b.write(std::uint64_t{1} << 40);
  wire::send_frame(fd, bad);
  const std::string reply = wire::recv_frame(fd, wire::kMaxFrame);
  ASSERT_FALSE(reply.empty());
  EXPECT_EQ(reply[0], '\1');
  EXPECT_NE(reply.find("CodecError"), std::string::npos);
  wire::send_frame(fd, "\xff garbage");  // an unknown request
  EXPECT_EQ(wire::recv_frame(fd, wire::kMaxFrame)[0], '\1');
  const std::uint64_t huge = std::uint64_t{1} << 40;  // over the frame limit: closed
  write_raw(fd, &huge, 8);
  EXPECT_TRUE(closed_by_peer(fd));
  close(fd);
  const int other = raw_connect(m.address());
  wire::client_handshake(other, m.authkey());
  const std::uint64_t n = 100;  // truncated, then gone
  write_raw(other, &n, 8);
  write_raw(other, "abc", 3);
  close(other);
  d.set(2, 2);
  EXPECT_EQ(d.get(2), 2);
}

TEST(ManagerLimits, AThousandIdleConnectionsDoNotStopService) {
  mp::Manager m;
  auto d = m.dict<int, int>();
  std::vector<int> idle;
  for (int i = 0; i < 1000; ++i) {
    const int fd = raw_connect(m.address());
    ASSERT_GE(fd, 0) << "connection " << i;
    idle.push_back(fd);
  }
  Stopwatch sw;
  for (int i = 0; i < 100; ++i) d.set(i, i);
  EXPECT_EQ(d.size(), 100u);
  EXPECT_LT(sw.elapsed(), 5s);
  for (int fd : idle) close(fd);
}

// ---- remote ---------------------------------------------------------------------

TEST(ManagerRemote, TcpManagerServesAClientThatConnectsWithTheKey) {
  mp::Manager m(
      mp::ManagerOptions{.address = mp::Address::tcp("127.0.0.1", 0), .authkey = "tcp key"});
  ASSERT_NE(m.address().port, 0);
  auto client = mp::Manager::connect(m.address(), "tcp key");
  auto d = client.dict<std::string, int>();
  d.update("k", add_one);
  EXPECT_EQ(d.get("k"), 1);
  EXPECT_THROW(mp::Manager::connect(m.address(), "nope"), mp::AuthenticationError);
  m.shutdown();
  EXPECT_THROW(d.get("k"), mp::ConnectionError);
}

}  // namespace
