// Start methods: fork, forkserver and spawn (CPython's
// multiprocessing.context: get_context, set_start_method, get_start_method,
// get_all_start_methods; the Process contract under each method; objects
// that travel to a child that is not a fork of their creator).
#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "mp/context.h"
#include "mp/internal/modules.h"
#include "mp/internal/start.h"
#include "mp/os.h"
#include "test_util.h"

namespace {

using namespace std::chrono_literals;
using mp_test::Stopwatch;

// ------------------------------------------------------------ targets

void do_nothing() {}
void exit_with(int code) { mp::exit(code); }
void throw_runtime_error() { throw std::runtime_error("boom"); }
void sleep_forever() {
  for (;;) ::pause();
}
void wait_event(mp::Event e) { e.wait(); }

void report_identity(mp::Queue<std::string>& q) {
  q.put(mp::current_process().name());
  const mp::ParentProcess* parent = mp::parent_process();
  q.put(parent ? parent->name() : "none");
  q.put(parent ? std::to_string(parent->pid()) : "none");
  q.put(std::to_string(mp::getpid()));
}

void put_range(mp::Queue<int>& q, int n) {
  for (int i = 0; i < n; ++i) q.put(i);
}

void echo_twice(mp::Queue<int>& in, mp::Queue<int>& out) {
  for (;;) {
    int v = in.get();
    if (v < 0) return;
    out.put(v * 2);
  }
}

void add_under_lock(mp::Value<long> counter, int n) {
  for (int i = 0; i < n; ++i) counter.update([](long& x) { ++x; });
}

void fill_array(mp::Array<int> a) {
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = static_cast<int>(i * i);
}

void hold_lock_then_set(mp::Lock lock, mp::Event acquired, mp::Event release) {
  lock.acquire();
  acquired.set();
  release.wait();
  lock.release();
}

void rlock_twice(mp::RLock lock, mp::Value<int> out) {
  lock.acquire();
  lock.acquire();
  out.store(lock.is_owned() ? 2 : -1);
  lock.release();
  lock.release();
}

void take_units_safe(mp::Semaphore s, mp::BoundedSemaphore b, mp::Value<int> out) {
  int got = 0;
  while (s.acquire(false)) ++got;
  try {
    b.release();
    out.store(-1);
  } catch (const mp::ValueError&) {
    out.store(got);
  }
}

void notify_after_flag(mp::Condition c, mp::Value<int, mp::NoLock> flag) {
  std::lock_guard g(c);
  flag.get_obj() = 1;
  c.notify_all();
}

void barrier_party(mp::Barrier b, mp::Value<int> idx) { idx.store(b.wait(10s)); }

void write_shm(mp::SharedMemory& m) { std::memcpy(m.data(), "travelled", 10); }

void pipe_echo(mp::Connection& c) {
  auto s = c.recv<std::string>();
  c.send(s + "!");
}

// ------------------------------------------------------------ fixture

class StartMethod : public ::testing::TestWithParam<std::string> {
 protected:
  mp::Context ctx() const { return mp::get_context(GetParam()); }
};

INSTANTIATE_TEST_SUITE_P(Methods, StartMethod, ::testing::Values("fork", "forkserver", "spawn"),
                         [](const auto& info) { return info.param; });

TEST_P(StartMethod, TargetReturnsExitcodeZero) {
  mp::Process p = ctx().Process(do_nothing);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(StartMethod, ExitCodeOfMpExit) {
  mp::Process p = ctx().Process(exit_with, 7);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 7);
}

TEST_P(StartMethod, ThrowingTargetExitsWithOne) {
  mp::Process p = ctx().Process(throw_runtime_error);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 1);
}

TEST_P(StartMethod, KillGivesMinusNine) {
  mp::Process p = ctx().Process(sleep_forever);
  p.start();
  EXPECT_TRUE(p.is_alive());
  p.kill();
  p.join(10s);
  EXPECT_EQ(p.exitcode(), -SIGKILL);
}

TEST_P(StartMethod, TerminateGivesMinusFifteen) {
  mp::Process p = ctx().Process(sleep_forever);
  p.start();
  p.terminate();
  p.join(10s);
  EXPECT_EQ(p.exitcode(), -SIGTERM);
}

TEST_P(StartMethod, JoinWithTimeoutReturnsWhileAliveAndSentinelPolls) {
  mp::Event e;
  mp::Process p = ctx().Process(wait_event, e);
  p.start();
  Stopwatch sw;
  p.join(200ms);
  EXPECT_GE(sw.elapsed(), 150ms);
  EXPECT_TRUE(p.is_alive());
  EXPECT_EQ(p.exitcode(), std::nullopt);
  pollfd pfd{p.sentinel(), POLLIN, 0};
  EXPECT_EQ(::poll(&pfd, 1, 0), 0);
  e.set();
  EXPECT_EQ(::poll(&pfd, 1, 10'000), 1);
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(StartMethod, NamesPidAndParentAsForked) {
  mp::Queue<std::string> q;
  mp::Process p =
      ctx().Process(mp::ProcessOptions{.name = "worker-7"}, report_identity, std::ref(q));
  p.start();
  EXPECT_EQ(q.get(), "worker-7");
  EXPECT_EQ(q.get(), "MainProcess");
  EXPECT_EQ(q.get(), std::to_string(mp::getpid()));
  EXPECT_EQ(q.get(), std::to_string(*p.pid()));
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(StartMethod, ActiveChildrenListsTheChild) {
  mp::Event e;
  mp::Process p = ctx().Process(wait_event, e);
  p.start();
  bool found = false;
  for (auto& c : mp::active_children()) found = found || c.pid() == *p.pid();
  EXPECT_TRUE(found);
  e.set();
  p.join();
  for (auto& c : mp::active_children()) EXPECT_NE(c.pid(), *p.pid());
}

TEST_P(StartMethod, QueueTravelsExactlyOnceInOrder) {
  mp::Queue<int> q;
  mp::Process p = ctx().Process(put_range, std::ref(q), 20000);
  p.start();
  for (int i = 0; i < 20000; ++i) ASSERT_EQ(q.get(), i);
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_THROW(q.get(), mp::EOFError);  // its only producer is gone
}

TEST_P(StartMethod, TwoQueuesBothWays) {
  mp::Queue<int> in, out;
  mp::Process p = ctx().Process(echo_twice, std::ref(in), std::ref(out));
  p.start();
  for (int i = 0; i < 100; ++i) {
    in.put(i);
    ASSERT_EQ(out.get(), 2 * i);
  }
  in.put(-1);
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(StartMethod, ValueTravelsWithItsLock) {
  mp::Value<long> counter(0);
  std::vector<mp::Process> ps;
  for (int i = 0; i < 3; ++i) ps.push_back(ctx().Process(add_under_lock, counter, 2000));
  for (auto& p : ps) p.start();
  add_under_lock(counter, 2000);
  for (auto& p : ps) p.join();
  EXPECT_EQ(counter.load(), 8000);
}

TEST_P(StartMethod, ArrayTravels) {
  mp::Array<int> a(100);
  mp::Process p = ctx().Process(fill_array, a);
  p.start();
  p.join();
  for (int i = 0; i < 100; ++i) ASSERT_EQ(a[i], i * i);
}

TEST_P(StartMethod, LockAndEventTravel) {
  mp::Lock lock;
  mp::Event acquired, release;
  mp::Process p = ctx().Process(hold_lock_then_set, lock, acquired, release);
  p.start();
  ASSERT_TRUE(acquired.wait(10s));
  EXPECT_FALSE(lock.acquire(false));
  release.set();
  EXPECT_TRUE(lock.acquire(10s));
  lock.release();
  p.join();
}

TEST_P(StartMethod, RLockTravels) {
  mp::RLock lock;
  mp::Value<int> out(0);
  mp::Process p = ctx().Process(rlock_twice, lock, out);
  p.start();
  p.join();
  EXPECT_EQ(out.load(), 2);
  EXPECT_TRUE(lock.acquire(false));
  lock.release();
}

TEST_P(StartMethod, SemaphoresTravel) {
  mp::Semaphore s(3);
  mp::BoundedSemaphore b(1);
  mp::Value<int> out(0);
  mp::Process p = ctx().Process(take_units_safe, s, b, out);
  p.start();
  p.join();
  EXPECT_EQ(out.load(), 3);
  EXPECT_EQ(s.get_value(), 0);
}

TEST_P(StartMethod, ConditionTravels) {
  mp::Condition c;
  mp::Value<int, mp::NoLock> flag(0);
  std::unique_lock g(c);
  mp::Process p = ctx().Process(notify_after_flag, c, flag);
  p.start();
  EXPECT_TRUE(c.wait_for([&] { return flag.get_obj() == 1; }, 10s));
  g.unlock();
  p.join();
}

TEST_P(StartMethod, BarrierTravels) {
  mp::Barrier b(2);
  mp::Value<int> idx(-1);
  mp::Process p = ctx().Process(barrier_party, b, idx);
  p.start();
  int mine = b.wait(10s);
  p.join();
  EXPECT_EQ(mine + idx.load(), 1);  // indices 0 and 1
}

TEST_P(StartMethod, SharedMemoryTravels) {
  auto m = mp::SharedMemory::create(64);
  mp::Process p = ctx().Process(write_shm, std::ref(m));
  p.start();
  p.join();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(m.data())), "travelled");
}

TEST_P(StartMethod, ConnectionTravels) {
  auto [a, b] = mp::Pipe();
  mp::Process p = ctx().Process(pipe_echo, std::ref(b));
  p.start();
  a.send(std::string("hello"));
  EXPECT_EQ(a.recv<std::string>(), "hello!");
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

// ------------------------------------------------------------ context API

TEST(Context, UnknownMethodRaisesValueErrorNamingTheValidOnes) {
  try {
    mp::get_context("vfork");
    FAIL() << "no error";
  } catch (const mp::ValueError& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("vfork"), std::string::npos) << what;
    EXPECT_NE(what.find("'fork'"), std::string::npos) << what;
    EXPECT_NE(what.find("'forkserver'"), std::string::npos) << what;
    EXPECT_NE(what.find("'spawn'"), std::string::npos) << what;
  }
  EXPECT_THROW(mp::set_start_method("threads", true), mp::ValueError);
  EXPECT_THROW(mp::Process(mp::ProcessOptions{.start_method = "posix_spawn"}, do_nothing),
               mp::ValueError);
}

TEST(Context, AllStartMethodsDefaultFirst) {
  auto all = mp::get_all_start_methods();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all.front(), mp::get_start_method());
  EXPECT_NE(std::find(all.begin(), all.end(), "forkserver"), all.end());
  EXPECT_NE(std::find(all.begin(), all.end(), "spawn"), all.end());
}

TEST(Context, ContextReportsItsMethod) {
  EXPECT_EQ(mp::get_context("spawn").get_start_method(), "spawn");
  EXPECT_EQ(mp::get_context("forkserver").get_start_method(), "forkserver");
  EXPECT_EQ(mp::get_context("fork").get_start_method(), "fork");
}

TEST(Context, SetStartMethodTwiceRaisesUnlessForced) {
  // The suite's children fixed the default already (as CPython's
  // get_start_method() does): a plain call raises.
  mp::get_start_method();
  EXPECT_THROW(mp::set_start_method("spawn"), mp::RuntimeError);
  mp::set_start_method("spawn", true);
  EXPECT_EQ(mp::get_start_method(), "spawn");
  EXPECT_EQ(mp::get_context().get_start_method(), "spawn");
  // The default method is used by a plain mp::Process.
  mp::Process p(exit_with, 3);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 3);
  mp::set_start_method("fork", true);
  EXPECT_EQ(mp::get_start_method(), "fork");
}

// ----------------------------------------------- what cannot travel, and why

TEST(StartMethods, ClosureWithSpawnRaisesValueErrorAtStart) {
  int local = 3;
  for (const char* m : {"spawn", "forkserver"}) {
    mp::Process p(mp::ProcessOptions{.start_method = m}, [local] { (void)local; });
    try {
      p.start();
      FAIL() << "no error";
    } catch (const mp::ValueError& e) {
      EXPECT_NE(std::string(e.what()).find("closure"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(p.pid().has_value());
  }
}

class Counter : public mp::Process {
 public:
  using mp::Process::Process;
  void run() override {}
};

TEST(StartMethods, SubclassWithSpawnRaisesValueErrorAndForks) {
  Counter c(mp::ProcessOptions{.start_method = "spawn"});
  EXPECT_THROW(c.start(), mp::ValueError);
  Counter f(mp::ProcessOptions{.start_method = "fork"});
  f.start();
  f.join();
  EXPECT_EQ(f.exitcode(), 0);
}

class Reporter : public mp::SpawnableProcess<Reporter> {
 public:
  Reporter() = default;
  Reporter(mp::ProcessOptions o, int n, std::string label)
      : SpawnableProcess(std::move(o)), n_(n), label_(std::move(label)) {}
  // What a forkserver or spawn child gets: these three (not skipped_).
  auto travel() { return std::tie(n_, label_, out_); }
  void run() override { out_.put(fmt::format("{} {} {} {}", label_, n_, name(), skipped_)); }
  mp::Queue<std::string>& out() { return out_; }
  int skipped_ = 0;

 private:
  int n_ = 0;
  std::string label_;
  mp::Queue<std::string> out_{0, 4096};
};

TEST_P(StartMethod, SpawnableSubclassRunsWithWhatTravelNames) {
  Reporter r(mp::ProcessOptions{.name = "rep", .start_method = GetParam()}, 7, "seven");
  r.skipped_ = 99;  // not named by travel(): a new image sees 0, a fork 99
  r.start();
  EXPECT_EQ(r.out().get(), GetParam() == "fork" ? "seven 7 rep 99" : "seven 7 rep 0");
  r.join(30s);
  EXPECT_EQ(r.exitcode(), 0);
}

TEST(StartMethods, LockThroughAQueueRaisesValueError) {
  mp::Queue<mp::Lock> q;
  mp::Lock lock;
  try {
    q.put(lock);
    FAIL() << "no error";
  } catch (const mp::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("mp::Lock"), std::string::npos) << e.what();
  }
  EXPECT_EQ(q.qsize(), 0u);
}

TEST(StartMethods, ChildThatCannotFindItsTaskFailsStartWithTheReason) {
  for (auto m : {mp::internal::StartMethod::kSpawn, mp::internal::StartMethod::kForkserver}) {
    mp::internal::StartRequest r;
    r.name = "lost";
    r.parent_pid = mp::getpid();
    r.module_map = mp::internal::module_map();
    r.launcher = 0x10;  // in no loaded object
    try {
      mp::internal::start_child(m, r, {});
      FAIL() << "no error";
    } catch (const mp::ProcessError& e) {
      EXPECT_NE(std::string(e.what()).find("lies in no loaded object"), std::string::npos)
          << e.what();
    }
  }
}

TEST(StartMethods, ChildOfAnotherBuildFailsStartNamingTheBuildIds) {
  auto modules = mp::internal::loaded_modules();
  ASSERT_FALSE(modules.empty());
  modules.front().build_id = std::string(20, '\x42');  // "the executable was rebuilt"
  mp::internal::StartRequest r;
  r.name = "rebuilt";
  r.parent_pid = mp::getpid();
  r.module_map = mp::encode(modules);
  r.launcher = 0x10;
  for (auto m : {mp::internal::StartMethod::kSpawn, mp::internal::StartMethod::kForkserver}) {
    try {
      mp::internal::start_child(m, r, {});
      FAIL() << "no error";
    } catch (const mp::ProcessError& e) {
      std::string what = e.what();
      EXPECT_NE(what.find("different executable"), std::string::npos) << what;
      std::string hex;
      for (int i = 0; i < 20; ++i) hex += "42";
      EXPECT_NE(what.find(hex), std::string::npos) << what;
    }
  }
}

// ------------------------------------------------------------ forkserver

TEST(Forkserver, ObjectsCreatedAfterTheServerStartedTravel) {
  mp::forkserver::ensure_running();
  ASSERT_GT(mp::internal::forkserver_pid(), 0);
  mp::Queue<int> q;  // made after the server started: not in its memory
  mp::Value<long> v(5);
  mp::Process p = mp::get_context("forkserver").Process(put_range, std::ref(q), 3);
  mp::Process a = mp::get_context("forkserver").Process(add_under_lock, v, 10);
  p.start();
  a.start();
  EXPECT_EQ(q.get(), 0);
  EXPECT_EQ(q.get(), 1);
  EXPECT_EQ(q.get(), 2);
  p.join();
  a.join();
  EXPECT_EQ(v.load(), 15);
}

int g_setting = 1;
void report_setting(mp::Value<int> out) { out.store(g_setting); }

// A forkserver child is a fork of the server, not of the caller: what the
// caller changed after the server started is not seen; a fork child sees it.
TEST(Forkserver, ChildSeesTheServersGlobalsNotTheCallers) {
  mp::forkserver::ensure_running();
  g_setting = 2;
  mp::Value<int> seen(0);
  mp::Process p = mp::get_context("forkserver").Process(report_setting, seen);
  p.start();
  p.join(10s);
  EXPECT_EQ(seen.load(), 1);
  mp::Process f = mp::get_context("fork").Process(report_setting, seen);
  f.start();
  f.join(10s);
  EXPECT_EQ(seen.load(), 2);
  g_setting = 1;
}

TEST(Forkserver, KilledServerLeavesChildrenJoinableAndIsReplaced) {
  auto ctx = mp::get_context("forkserver");
  mp::Event e;
  mp::Process p = ctx.Process(wait_event, e);
  p.start();
  pid_t server = mp::internal::forkserver_pid();
  ASSERT_GT(server, 0);
  ASSERT_EQ(::kill(server, SIGKILL), 0);
  Stopwatch sw;
  while (mp::internal::forkserver_pid() == server && sw.elapsed() < 10s)
    std::this_thread::sleep_for(1ms);
  EXPECT_TRUE(p.is_alive());
  e.set();
  p.join(10s);
  EXPECT_FALSE(p.is_alive());
  EXPECT_TRUE(p.exitcode().has_value());  // 255: the server that would report it is gone
  mp::Process q = ctx.Process(exit_with, 4);
  q.start();
  q.join();
  EXPECT_EQ(q.exitcode(), 4);
  EXPECT_NE(mp::internal::forkserver_pid(), server);
  EXPECT_GT(mp::internal::forkserver_pid(), 0);
}

std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> out;
  FILE* f = std::fopen(fmt::format("/proc/{}/task/{}/children", pid, pid).c_str(), "r");
  if (!f) return out;
  long c;
  while (std::fscanf(f, "%ld", &c) == 1) out.push_back(static_cast<pid_t>(c));
  std::fclose(f);
  return out;
}

// The server keeps a child forked ahead for the next start (a spare); one
// that was killed is replaced, and the start goes on.
TEST(Forkserver, KilledSpareChildIsReplaced) {
  mp::forkserver::ensure_running();
  pid_t server = mp::internal::forkserver_pid();
  ASSERT_GT(server, 0);
  Stopwatch sw;
  std::vector<pid_t> spares;
  while ((spares = children_of(server)).empty() && sw.elapsed() < 5s)
    std::this_thread::sleep_for(1ms);
  ASSERT_FALSE(spares.empty()) << "no spare child under the forkserver";
  for (pid_t p : spares) {
    int fd = static_cast<int>(syscall(SYS_pidfd_open, p, 0));
    ::kill(p, SIGKILL);
    if (fd >= 0) {
      // Gone before the next start. (A start racing with the kill may hand
      // its task to the dying spare; it then raises ProcessError, "ended
      // before running its task", rather than hang.)
      pollfd pfd{fd, POLLIN, 0};
      EXPECT_EQ(::poll(&pfd, 1, 5000), 1);
      ::close(fd);
    }
  }
  for (int i = 0; i < 3; ++i) {
    mp::Process p = mp::get_context("forkserver").Process(exit_with, 5 + i);
    p.start();
    p.join(10s);
    EXPECT_EQ(p.exitcode(), 5 + i);
  }
  EXPECT_EQ(mp::internal::forkserver_pid(), server);
}

bool readable_within(int fd, std::chrono::milliseconds t) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(t.count())) == 1;
}

TEST(Forkserver, ParentDeathTakesTheServerAndItsChildren) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t mid = mp::fork();
  if (mid == 0) {
    ::close(fds[0]);
    mp::set_fork_warning(false);
    mp::Process p = mp::get_context("forkserver").Process(sleep_forever);
    p.start();
    pid_t pids[2] = {*p.pid(), mp::internal::forkserver_pid()};
    (void)!::write(fds[1], pids, sizeof pids);
    sleep_forever();
  }
  ::close(fds[1]);
  pid_t pids[2] = {0, 0};
  ASSERT_EQ(::read(fds[0], pids, sizeof pids), static_cast<ssize_t>(sizeof pids));
  ::close(fds[0]);
  int child = static_cast<int>(syscall(SYS_pidfd_open, pids[0], 0));
  int server = static_cast<int>(syscall(SYS_pidfd_open, pids[1], 0));
  ASSERT_GE(child, 0);
  ASSERT_GE(server, 0);
  ::kill(mid, SIGKILL);
  int status;
  ASSERT_EQ(::waitpid(mid, &status, 0), mid);
  EXPECT_TRUE(readable_within(child, 15s)) << "the forkserver's child outlived its parent";
  EXPECT_TRUE(readable_within(server, 15s)) << "the forkserver outlived its parent";
  ::close(child);
  ::close(server);
}

// ------------------------------------------------- a multithreaded parent

class Hammer {
 public:
  Hammer() {
    for (int i = 0; i < 8; ++i) {
      threads_.emplace_back([this, i] {
        FILE* sink = std::fopen("/dev/null", "w");
        unsigned n = static_cast<unsigned>(i) * 7919u;
        while (!stop_.load(std::memory_order_relaxed)) {
          n = n * 1103515245u + 12345u;
          void* p = std::malloc(16 + n % 4096);
          std::fprintf(sink, "%u %p\n", n, p);
          std::free(p);
        }
        std::fclose(sink);
      });
    }
  }
  ~Hammer() {
    stop_ = true;
    for (auto& t : threads_) t.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

class Threaded : public ::testing::TestWithParam<std::string> {};
INSTANTIATE_TEST_SUITE_P(Methods, Threaded, ::testing::Values("forkserver", "spawn"),
                         [](const auto& info) { return info.param; });

TEST_P(Threaded, FiveHundredChildrenFromAParentHammeringMallocAndStdio) {
  auto ctx = mp::get_context(GetParam());
  Hammer hammer;
  for (int i = 0; i < 500; ++i) {
    mp::Process p = ctx.Process(exit_with, i % 100);
    p.start();
    p.join(60s);
    ASSERT_EQ(p.exitcode(), i % 100) << "child " << i;
  }
}

// ------------------------------------------------------ nothing leaks

int count_fds() {
  int n = 0;
  for (int fd = 0; fd < 4096; ++fd) n += ::fcntl(fd, F_GETFD) >= 0;
  return n;
}

int count_zombie_children() {
  int zombies = 0;
  DIR* d = ::opendir("/proc");
  if (!d) return -1;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::string path = std::string("/proc/") + e->d_name + "/stat";
    FILE* f = std::fopen(path.c_str(), "r");
    if (!f) continue;
    char buf[512] = {};
    size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    std::string stat(buf, n);
    auto close = stat.rfind(')');
    if (close == std::string::npos || close + 4 >= stat.size()) continue;
    char state = stat[close + 2];
    auto ppid = std::strtol(stat.c_str() + close + 4, nullptr, 10);
    if (ppid == ::getpid() && state == 'Z') ++zombies;
  }
  ::closedir(d);
  return zombies;
}

TEST_P(StartMethod, NoFdOrZombieLeftBehind) {
  // One start first: a process keeps a few fds for its life once it has
  // started a child (a pidfd of itself for fork children, the forkserver's
  // channel and pidfd), which are not per-child leaks.
  {
    mp::Process warm = ctx().Process(do_nothing);
    warm.start();
    warm.join();
  }
  int before = count_fds();
  for (int i = 0; i < 5; ++i) {
    mp::Queue<int> q;
    mp::Lock l;
    auto [a, b] = mp::Pipe();
    mp::Process p = ctx().Process(put_range, std::ref(q), 1);
    p.start();
    EXPECT_EQ(q.get(), 0);
    p.join();
    (void)l;
  }
  EXPECT_EQ(count_fds(), before);
  EXPECT_EQ(count_zombie_children(), 0);
}

// ------------------------------------ a program without freeze_support()

std::string helper_path() {
  const char* dir = std::getenv("TEST_SRCDIR");
  std::string base =
      dir ? std::string(dir) + "/" +
                (std::getenv("TEST_WORKSPACE") ? std::getenv("TEST_WORKSPACE") : "mp")
          : std::string("bazel-bin");
  return base + "/conformance/no_freeze_support";
}

// Runs the helper; returns its exit code and stdout+stderr.
int run_helper(const std::string& args, std::string& out) {
  std::string cmd = helper_path() + " " + args + " 2>&1";
  FILE* f = ::popen(cmd.c_str(), "r");
  if (!f) return -1;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  int status = ::pclose(f);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

class NoFreezeSupport : public ::testing::TestWithParam<std::string> {};
INSTANTIATE_TEST_SUITE_P(Methods, NoFreezeSupport, ::testing::Values("forkserver", "spawn"),
                         [](const auto& info) { return info.param; });

TEST_P(NoFreezeSupport, ChildReachingAStartIsRefusedAndStartRaises) {
  std::string out;
  int code = run_helper("start " + GetParam(), out);
  EXPECT_EQ(code, 3) << out;
  EXPECT_NE(out.find("ProcessError"), std::string::npos) << out;
  EXPECT_NE(out.find("freeze_support()"), std::string::npos) << out;
  EXPECT_EQ(out.find("started:"), std::string::npos) << out;  // no second generation ran
}

TEST_P(NoFreezeSupport, ChildWhoseMainReturnsIsReportedAndStartRaises) {
  std::string out;
  int code = run_helper("return " + GetParam(), out);
  EXPECT_EQ(code, 3) << out;
  EXPECT_NE(out.find("the end of main()"), std::string::npos) << out;
}

// ------------------------------------------------------------ Pool

int square(int x) { return x * x; }
int g_initialized = 0;
void init_worker() { g_initialized = 41; }
int initialized_plus(int x) { return g_initialized + x; }
int fail_on_three(int x) {
  if (x == 3) throw std::invalid_argument("three");
  return x;
}
int die_on_seven(int x) {
  if (x == 7) ::raise(SIGKILL);
  return x;
}
std::string worker_name(int) { return mp::current_process().name(); }

TEST_P(StartMethod, PoolMapApplyAndErrors) {
  mp::Pool pool = ctx().Pool(2);
  std::vector<int> in{1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT_EQ(pool.map(square, in), (std::vector<int>{1, 4, 9, 16, 25, 36, 49, 64}));
  EXPECT_EQ(pool.apply(square, 9), 81);
  auto r = pool.apply_async([](int a, int b) { return a + b; }, 2, 3);
  EXPECT_EQ(r.get(), 5);
  EXPECT_THROW(pool.apply(fail_on_three, 3), std::invalid_argument);
  EXPECT_EQ(pool.apply(worker_name, 0).rfind("PoolWorker-", 0), 0u);
  pool.close();
  pool.join();
}

TEST_P(StartMethod, PoolInitializerFunctionRunsInEachWorker) {
  mp::PoolOptions o;
  o.processes = 2;
  o.initializer = init_worker;
  mp::Pool pool = ctx().Pool(o);
  EXPECT_EQ(pool.map(initialized_plus, std::vector<int>{1, 1, 1}), (std::vector<int>{42, 42, 42}));
}

TEST_P(StartMethod, PoolLostWorkerFailsItsTaskAndIsReplaced) {
  mp::PoolOptions o;
  o.processes = 2;
  o.maxtasksperchild = 3;
  mp::Pool pool = ctx().Pool(o);
  EXPECT_THROW(pool.apply(die_on_seven, 7), mp::WorkerLostError);
  std::vector<int> in(20);
  for (int i = 0; i < 20; ++i) in[i] = i == 7 ? 8 : i;
  auto out = pool.map(die_on_seven, in, 1);
  EXPECT_EQ(out, in);
}

int worker_pid(int) { return mp::getpid(); }

// An idle worker checks that its pool still runs (every 100 ms): a
// forkserver worker's kernel parent is the server, not the pool.
TEST_P(StartMethod, PoolWorkersSurviveWhileIdle) {
  mp::Pool pool = ctx().Pool(1);
  int first = pool.apply(worker_pid, 0);
  std::this_thread::sleep_for(400ms);
  EXPECT_EQ(pool.apply(worker_pid, 0), first);
  EXPECT_EQ(pool.apply(worker_name, 0), "PoolWorker-1");
}

TEST(StartMethods, PoolClosureInitializerWithSpawnRaisesValueError) {
  int n = 3;
  mp::PoolOptions o;
  o.processes = 1;
  o.initializer = [n] { (void)n; };
  EXPECT_THROW(mp::get_context("spawn").Pool(o), mp::ValueError);
  EXPECT_THROW(mp::get_context("forkserver").Pool(o), mp::ValueError);
}

// ------------------------- the other promises, for children of every method

void take_lock_and_die(mp::Lock lock, mp::Event taken) {
  lock.acquire();
  taken.set();
  ::raise(SIGKILL);
}

TEST_P(StartMethod, LockOwnerDeathIsReportedToTheNextAcquirer) {
  mp::Lock lock;
  mp::Event taken;
  mp::Process p = ctx().Process(take_lock_and_die, lock, taken);
  p.start();
  ASSERT_TRUE(taken.wait(10s));
  p.join(10s);
  EXPECT_EQ(p.exitcode(), -SIGKILL);
  EXPECT_THROW(lock.acquire(10s), mp::OwnerDeadError);
  lock.release();  // the takeover left it held by us
  EXPECT_TRUE(lock.acquire(false));
  lock.release();
}

void get_once(mp::Queue<int>& q) { (void)q.get(); }

TEST_P(StartMethod, PutOnAFullQueueWhoseConsumerDiedRaisesBrokenPipe) {
  mp::Queue<int> q(1);
  q.put(1);
  mp::Process p = ctx().Process(get_once, std::ref(q));
  p.start();
  p.join(10s);
  EXPECT_EQ(p.exitcode(), 0);
  q.put(2);  // room for one again
  Stopwatch sw;
  EXPECT_THROW(q.put(3), mp::BrokenPipeError);
  EXPECT_LT(sw.elapsed(), 5s);
}

void start_a_child(mp::Value<int> outcome) {
  try {
    mp::Process p = mp::get_context("spawn").Process(do_nothing);
    p.start();
    p.join();
    outcome.store(1);
  } catch (const mp::RuntimeError&) {
    outcome.store(2);
  }
}

TEST_P(StartMethod, DaemonicChildMayNotStartChildren) {
  mp::Value<int> outcome(0);
  mp::Process p = ctx().Process(mp::ProcessOptions{.daemon = true}, start_a_child, outcome);
  p.start();
  p.join(30s);
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(outcome.load(), 2);
}

TEST_P(StartMethod, DaemonicChildIsTerminatedAtNormalExitOthersAreJoined) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t mid = mp::fork();
  if (mid == 0) {
    ::close(fds[0]);
    mp::Event e;
    mp::Process daemon = ctx().Process(mp::ProcessOptions{.daemon = true}, sleep_forever);
    mp::Process other = ctx().Process(wait_event, e);
    daemon.start();
    other.start();
    pid_t pids[2] = {*daemon.pid(), *other.pid()};
    (void)!::write(fds[1], pids, sizeof pids);
    e.set();
    mp::exit(0);  // terminates the daemon, joins the other
  }
  ::close(fds[1]);
  pid_t pids[2] = {0, 0};
  ASSERT_EQ(::read(fds[0], pids, sizeof pids), static_cast<ssize_t>(sizeof pids));
  ::close(fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(mid, &status, 0), mid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  for (pid_t pid : pids) {
    // Reaped by `mid` (fork, spawn) or by its forkserver: gone, not running.
    int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    if (fd >= 0) {
      EXPECT_TRUE(readable_within(fd, 10s)) << "child " << pid << " outlived its parent's exit";
      ::close(fd);
    }
  }
}

int count_dev_shm() {
  int n = 0;
  DIR* d = ::opendir("/dev/shm");
  if (!d) return -1;
  while (dirent* e = ::readdir(d)) n += e->d_name[0] != '.';
  ::closedir(d);
  return n;
}

TEST_P(StartMethod, NoDevShmEntryIsMade) {
  int before = count_dev_shm();
  {
    mp::Queue<int> q;
    mp::Value<int> v(1);
    mp::Barrier b(1);
    mp::Process p = ctx().Process(put_range, std::ref(q), 2);
    p.start();
    EXPECT_EQ(q.get(), 0);
    EXPECT_EQ(q.get(), 1);
    p.join();
  }
  EXPECT_EQ(count_dev_shm(), before);
}

TEST(StartMethods, ForkWarningNamesForkserver) {
  int err[2];
  ASSERT_EQ(::pipe(err), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(err[1], 2);
    std::atomic<bool> stop{false};
    std::thread t([&] {
      while (!stop) std::this_thread::sleep_for(1ms);
    });
    pid_t c = mp::fork();  // this binary forks with threads nowhere else
    if (c == 0) ::_exit(0);
    ::waitpid(c, nullptr, 0);
    stop = true;
    t.join();
    ::_exit(0);
  }
  ::close(err[1]);
  std::string text;
  char buf[512];
  for (ssize_t n; (n = ::read(err[0], buf, sizeof buf)) > 0;) text.append(buf, n);
  ::close(err[0]);
  ::waitpid(pid, nullptr, 0);
  EXPECT_NE(text.find("multi-threaded"), std::string::npos) << text;
  EXPECT_NE(text.find("forkserver"), std::string::npos) << text;
}

// ------------------------------ an executable replaced while it runs

std::string runfile(const char* name) {
  const char* dir = std::getenv("TEST_SRCDIR");
  std::string base =
      dir ? std::string(dir) + "/" +
                (std::getenv("TEST_WORKSPACE") ? std::getenv("TEST_WORKSPACE") : "mp")
          : std::string("bazel-bin");
  return base + "/conformance/" + name;
}

// The program's file is replaced (a rebuild, an upgrade) between its start
// and its child's: mp re-executes the running image (/proc/self/exe), so the
// child runs the same code as its parent, not whatever the path holds now.
TEST_P(NoFreezeSupport, ChildOfAnExecutableReplacedOnDiskRunsTheParentsImage) {
  char dir_template[] = "/tmp/mp_replaced_XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  const std::string app = dir + "/app";
  ASSERT_EQ(std::system(("cp " + runfile("replaced_executable") + " " + app).c_str()), 0);
  FILE* out = ::popen((app + " " + dir + " " + GetParam() + " 2>&1").c_str(), "r");
  ASSERT_NE(out, nullptr);
  std::this_thread::sleep_for(200ms);  // it runs, waiting for DIR/go
  // Replace the file: a new inode at the same path, holding something else.
  {
    FILE* other = std::fopen((dir + "/new").c_str(), "w");
    ASSERT_NE(other, nullptr);
    std::fputs("#!/bin/sh\necho replaced; exit 7\n", other);
    std::fclose(other);
    ::chmod((dir + "/new").c_str(), 0755);
    ASSERT_EQ(::rename((dir + "/new").c_str(), app.c_str()), 0);
  }
  FILE* go = std::fopen((dir + "/go").c_str(), "w");
  ASSERT_NE(go, nullptr);
  std::fclose(go);
  std::string text;
  char buf[512];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, out)) > 0) text.append(buf, n);
  int status = ::pclose(out);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << text;
  EXPECT_NE(text.find("child exit code 42"), std::string::npos) << text;
  std::system(("rm -rf " + dir).c_str());
}

}  // namespace
