// Conformance: mp/process.h.
// CPython docs: multiprocessing — "Process and exceptions" (Process, run,
// start, join, name, is_alive, daemon, pid, exitcode, sentinel, terminate,
// kill, close), "Miscellaneous" (active_children, current_process,
// parent_process), and the tutorials' Process programs.
#include "mp/process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>

#include "conformance/test_util.h"
#include "mp/errors.h"
#include "mp/os.h"

namespace {

using namespace std::chrono_literals;
using mp_test::Signal;
using mp_test::Stopwatch;

// Channel carries short strings from a child to the parent over a pipe.
class Channel {
 public:
  Channel() {
    if (pipe(fds_) != 0) throw std::runtime_error("pipe");
  }
  ~Channel() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  void send(const std::string& s) {
    uint32_t n = s.size();
    if (write(fds_[1], &n, sizeof n) != sizeof n) std::abort();
    if (n && write(fds_[1], s.data(), n) != (ssize_t)n) std::abort();
  }
  std::string recv() {
    uint32_t n = 0;
    if (read(fds_[0], &n, sizeof n) != sizeof n) return "<eof>";
    std::string s(n, '\0');
    size_t got = 0;
    while (got < n) {
      ssize_t r = read(fds_[0], s.data() + got, n - got);
      if (r <= 0) return "<eof>";
      got += r;
    }
    return s;
  }

 private:
  int fds_[2];
};

Channel* g_channel = nullptr;

void download(const std::string& file) { g_channel->send("downloading " + file); }

bool pid_exists(pid_t pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }

// Waits (bounded) until a pid that is not our child has gone away.
bool wait_gone(pid_t pid, std::chrono::milliseconds limit) {
  int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return !pid_exists(pid);
  struct pollfd pfd {fd, POLLIN, 0};
  bool gone = ::poll(&pfd, 1, static_cast<int>(limit.count())) == 1;
  ::close(fd);
  return gone;
}

// ------------------------------------------------------------------ target

TEST(ProcessTarget, RunsAFunctionWithArguments) {
  Channel ch;
  g_channel = &ch;
  mp::Process p(download, std::string("a.pdf"));
  p.start();
  EXPECT_EQ(ch.recv(), "downloading a.pdf");
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(ProcessTarget, RunsALambdaWithCaptures) {
  Channel ch;
  std::string greeting = "hello";
  mp::Process p([&ch, greeting](int n) { ch.send(greeting + std::to_string(n)); }, 42);
  p.start();
  EXPECT_EQ(ch.recv(), "hello42");
  p.join();
}

class Worker : public mp::Process {
 public:
  explicit Worker(Channel& ch) : ch_(ch) {}
  void run() override { ch_.send("worker ran in " + std::to_string(mp::getpid())); }

 private:
  Channel& ch_;
};

TEST(ProcessTarget, SubclassOverridingRunRunsInTheChild) {
  Channel ch;
  Worker w(ch);
  w.start();
  EXPECT_EQ(ch.recv(), "worker ran in " + std::to_string(*w.pid()));
  w.join();
  EXPECT_EQ(w.exitcode(), 0);
}

TEST(ProcessTarget, RunCalledDirectlyRunsInTheCallingProcess) {
  pid_t ran_in = 0;
  mp::Process p([&ran_in] { ran_in = mp::getpid(); });
  p.run();
  EXPECT_EQ(ran_in, mp::getpid());
  EXPECT_FALSE(p.pid().has_value());
}

// ------------------------------------------------------------------ name

int number_of(const std::string& name) { return std::stoi(name.substr(name.rfind('-') + 1)); }

TEST(ProcessName, DefaultIsProcessDashNAdvancedAtEveryConstruction) {
  mp::Process a;
  mp::Process named(mp::ProcessOptions{.name = "dongGe"});
  mp::Process c;
  ASSERT_EQ(a.name().rfind("Process-", 0), 0u);
  EXPECT_EQ(number_of(c.name()), number_of(a.name()) + 2);
}

}  // namespace

namespace app {
// A Process subclass in a namespace, as a user would write one; its child
// reports current_process().name().
class Reporter : public mp::Process {
 public:
  explicit Reporter(Channel* ch = nullptr) : ch_(ch) {}
  void run() override {
    if (ch_) ch_->send(mp::current_process().name());
  }

 private:
  Channel* ch_;
};
}  // namespace app

namespace {

TEST(ProcessName, SubclassDefaultIsClassNameDashNOnTheSharedCounter) {
  // CPython: class Reporter(Process) -> "Reporter-N", one counter for all.
  mp::Process a;
  app::Reporter r;
  mp::Process c;
  EXPECT_EQ(r.name(), fmt::format("Reporter-{}", number_of(a.name()) + 1));
  EXPECT_EQ(number_of(c.name()), number_of(a.name()) + 2);
  EXPECT_EQ(fmt::format("{}", r), fmt::format("<Reporter name='{}' parent={} initial>", r.name(), mp::getpid()));
}

TEST(ProcessName, SubclassNameIsTheChildsNameAndAnExplicitNameWins) {
  Channel ch;
  app::Reporter r(&ch);
  r.start();  // name() not asked before start(): start() puts the class name in
  EXPECT_EQ(ch.recv(), fmt::format("Reporter-{}", number_of(r.name())));
  r.join();
  EXPECT_EQ(r.name().rfind("Reporter-", 0), 0u) << r.name();
  app::Reporter renamed;
  renamed.set_name("mine");
  EXPECT_EQ(renamed.name(), "mine");
}

TEST(ProcessName, ExplicitNameIsKept) {
  mp::Process p(mp::ProcessOptions{.name = "dongGe"}, [] {});
  EXPECT_EQ(p.name(), "dongGe");
  p.set_name("renamed");
  EXPECT_EQ(p.name(), "renamed");
}

TEST(ProcessName, CurrentProcessNameInTheChildEqualsIt) {
  Channel ch;
  mp::Process p(mp::ProcessOptions{.name = "worker_1"}, [&ch] { ch.send(mp::current_process().name()); });
  p.start();
  EXPECT_EQ(ch.recv(), "worker_1");
  p.join();
}

TEST(ProcessName, ChildrenOfAChildAreNamedProcessNColonM) {
  Channel ch;
  mp::Process p([&ch] {
    mp::Process first;
    mp::Process second;
    ch.send(first.name());
    ch.send(second.name());
  });
  int n = number_of(p.name());
  p.start();
  EXPECT_EQ(ch.recv(), fmt::format("Process-{}:1", n));
  EXPECT_EQ(ch.recv(), fmt::format("Process-{}:2", n));
  p.join();
}

TEST(ProcessName, MainProgramIsMainProcess) {
  EXPECT_EQ(mp::current_process().name(), "MainProcess");
  EXPECT_EQ(mp::current_process().pid(), mp::getpid());
}

// ------------------------------------------------------------------ pid

TEST(ProcessPid, EmptyBeforeStartThenTheChildsGetpid) {
  Channel ch;
  mp::Process p([&ch] { ch.send(std::to_string(mp::getpid())); });
  EXPECT_FALSE(p.pid().has_value());
  p.start();
  ASSERT_TRUE(p.pid().has_value());
  EXPECT_EQ(ch.recv(), std::to_string(*p.pid()));
  p.join();
}

// ------------------------------------------------------------------ exitcode

TEST(ProcessExitcode, EmptyBeforeStartAndWhileRunning) {
  Signal go;
  mp::Process p([&go] { go.wait(); });
  EXPECT_FALSE(p.exitcode().has_value());
  p.start();
  EXPECT_FALSE(p.exitcode().has_value());
  go.notify();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(ProcessExitcode, OneWhenTheTargetThrowsAndTheMessageGoesToStderr) {
  char path[] = "/tmp/mp_stderr_XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  mp::Process p(mp::ProcessOptions{.name = "thrower"}, [fd] {
    dup2(fd, STDERR_FILENO);
    throw std::runtime_error("disk on fire");
  });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 1);
  std::string text(4096, '\0');
  ssize_t n = pread(fd, text.data(), text.size(), 0);
  text.resize(n > 0 ? n : 0);
  ::close(fd);
  unlink(path);
  EXPECT_NE(text.find("Process thrower:"), std::string::npos) << text;
  EXPECT_NE(text.find("disk on fire"), std::string::npos) << text;
  EXPECT_NE(text.find("std::runtime_error"), std::string::npos) << text;
}

TEST(ProcessExitcode, NWhenTheChildCallsMpExitModulo256) {
  mp::Process a([] { mp::exit(7); });
  mp::Process b([] { mp::exit(300); });
  mp::Process c([] { _exit(3); });
  a.start();
  b.start();
  c.start();
  a.join();
  b.join();
  c.join();
  EXPECT_EQ(a.exitcode(), 7);
  EXPECT_EQ(b.exitcode(), 300 % 256);
  EXPECT_EQ(c.exitcode(), 3);
}

TEST(ProcessExitcode, MinusNWhenKilledBySignalN) {
  mp::Process p([] { raise(SIGUSR1); });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), -SIGUSR1);
}

// ------------------------------------------------------------------ join

TEST(ProcessJoin, WaitsOnlyForThatProcess) {
  Signal release_p2;
  mp::Process p1([] {});
  mp::Process p2([&release_p2] { release_p2.wait(); });
  p1.start();
  p2.start();
  p1.join();
  EXPECT_EQ(p1.exitcode(), 0);
  EXPECT_TRUE(p2.is_alive());
  release_p2.notify();
  p2.join();
  EXPECT_EQ(p2.exitcode(), 0);
}

TEST(ProcessJoin, TimeoutReturnsWhileTheChildStillRuns) {
  Signal go;
  mp::Process p([&go] { go.wait(); });
  p.start();
  Stopwatch sw;
  p.join(300ms);
  auto elapsed = sw.elapsed();
  EXPECT_GE(elapsed, 250ms);
  EXPECT_LT(elapsed, 1300ms);
  EXPECT_TRUE(p.is_alive());
  EXPECT_FALSE(p.exitcode().has_value());
  // join may be called again.
  go.notify();
  p.join(10s);
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(ProcessJoin, ZeroTimeoutReturnsAtOnce) {
  Signal go;
  mp::Process p([&go] { go.wait(); });
  p.start();
  Stopwatch sw;
  p.join(0s);
  EXPECT_LT(sw.elapsed(), 200ms);
  EXPECT_TRUE(p.is_alive());
  go.notify();
  p.join();
}

TEST(ProcessJoin, BeforeStartRaises) {
  mp::Process p([] {});
  try {
    p.join();
    FAIL() << "join before start did not raise";
  } catch (const mp::RuntimeError& e) {
    EXPECT_STREQ(e.what(), "can only join a started process");
  }
}

TEST(ProcessJoin, OfTheCurrentProcessRaises) {
  // CPython 3.11: AssertionError("can only join a child process").
  try {
    mp::current_process().join();
    ADD_FAILURE() << "joined itself";
  } catch (const mp::RuntimeError& e) {
    EXPECT_STREQ(e.what(), "can only join a child process");
  }
  mp::Process p([] {
    try {
      mp::current_process().join();
    } catch (const mp::RuntimeError& e) {
      if (std::string(e.what()) == "can only join a child process") mp::exit(42);
    }
  });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 42);
}

TEST(ProcessJoin, OfAProcessStartedByAnotherProcessRaises) {
  Signal go;
  mp::Process sibling([&go] { go.wait(); });
  sibling.start();
  mp::Process p([&sibling] {
    try {
      sibling.join();
    } catch (const mp::RuntimeError&) {
      mp::exit(42);
    }
  });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 42);
  go.notify();
  sibling.join();
}

// ------------------------------------------------------------------ is_alive

TEST(ProcessIsAlive, FalseBeforeStartTrueWhileRunningFalseAfter) {
  Signal go;
  mp::Process p([&go] { go.wait(); });
  EXPECT_FALSE(p.is_alive());
  p.start();
  EXPECT_TRUE(p.is_alive());
  go.notify();
  p.join();
  EXPECT_FALSE(p.is_alive());
}

TEST(ProcessIsAlive, TrueForTheCurrentProcessInTheChild) {
  mp::Process p([] { mp::exit(mp::current_process().is_alive() ? 0 : 1); });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

// ------------------------------------------------------------------ terminate / kill

TEST(ProcessTerminate, StopsAChildMidLoopWithExitcodeMinus15) {
  Signal looping;
  mp::Process p([&looping] {
    looping.notify();
    for (;;) std::this_thread::sleep_for(10ms);
  });
  p.start();
  ASSERT_TRUE(looping.wait());
  p.terminate();
  p.join(10s);
  EXPECT_EQ(p.exitcode(), -SIGTERM);
}

TEST(ProcessKill, GivesExitcodeMinus9) {
  mp::Process p([] {
    for (;;) pause();
  });
  p.start();
  p.kill();
  p.join(10s);
  EXPECT_EQ(p.exitcode(), -SIGKILL);
}

TEST(ProcessTerminate, AndKillAreFineOnAChildThatAlreadyEnded) {
  mp::Process p([] {});
  p.start();
  p.join();
  EXPECT_NO_THROW(p.terminate());
  EXPECT_NO_THROW(p.kill());
  EXPECT_EQ(p.exitcode(), 0);
}

// ------------------------------------------------------------------ daemon

TEST(ProcessDaemon, SetAfterStartRaises) {
  mp::Process p([] {});
  p.set_daemon(true);
  EXPECT_TRUE(p.daemon());
  p.start();
  EXPECT_THROW(p.set_daemon(false), mp::RuntimeError);
  p.join();
}

TEST(ProcessDaemon, DaemonChildrenAreTerminatedWhenTheProgramExits) {
  Channel ch;
  pid_t program = mp::fork();
  if (program == 0) {
    mp::Process d(mp::ProcessOptions{.daemon = true}, [] {
      for (;;) pause();
    });
    d.start();
    ch.send(std::to_string(*d.pid()));
    std::exit(0);  // normal program exit
  }
  pid_t daemon_pid = std::stoi(ch.recv());
  int status = 0;
  ASSERT_EQ(waitpid(program, &status, 0), program);
  EXPECT_EQ(mp::exitcode_from_wait_status(status), 0);
  EXPECT_TRUE(wait_gone(daemon_pid, 5s));
}

TEST(ProcessDaemon, NonDaemonChildrenAreJoinedAtNormalProgramExit) {
  Signal release;
  Channel ch;
  pid_t program = mp::fork();
  if (program == 0) {
    mp::Process child([&release, &ch] {
      release.wait();
      ch.send("child done");
    });
    child.start();
    std::exit(0);  // must wait for child
  }
  int status = 0;
  // The program has not exited within 300 ms: it waits for its child.
  EXPECT_FALSE(wait_gone(program, 300ms));
  EXPECT_EQ(waitpid(program, &status, WNOHANG), 0);
  release.notify();
  EXPECT_EQ(ch.recv(), "child done");
  ASSERT_EQ(waitpid(program, &status, 0), program);
  EXPECT_EQ(mp::exitcode_from_wait_status(status), 0);
}

TEST(ProcessDaemon, ADaemonicProcessCannotStartChildren) {
  mp::Process p(mp::ProcessOptions{.daemon = true}, [] {
    mp::Process grandchild([] {});
    try {
      grandchild.start();
    } catch (const mp::RuntimeError& e) {
      mp::exit(std::string(e.what()) == "daemonic processes are not allowed to have children" ? 42 : 1);
    }
  });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 42);
}

// ------------------------------------------------------------------ sentinel

TEST(ProcessSentinel, BecomesReadableWhenTheChildEnds) {
  Signal go;
  mp::Process p([&go] { go.wait(); });
  EXPECT_THROW(p.sentinel(), mp::RuntimeError);
  p.start();
  struct pollfd pfd {p.sentinel(), POLLIN, 0};
  EXPECT_EQ(poll(&pfd, 1, 0), 0);
  go.notify();
  EXPECT_EQ(poll(&pfd, 1, 10000), 1);
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

// ------------------------------------------------------------------ close

TEST(ProcessClose, RaisesWhileTheChildRuns) {
  Signal go;
  mp::Process p([&go] { go.wait(); });
  p.start();
  EXPECT_THROW(p.close(), mp::ValueError);
  go.notify();
  p.join();
  EXPECT_NO_THROW(p.close());
}

TEST(ProcessClose, EveryLaterUseRaisesAndCloseIsIdempotent) {
  mp::Process p([] {});
  p.start();
  p.join();
  p.close();
  EXPECT_NO_THROW(p.close());
  EXPECT_THROW(p.start(), mp::ValueError);
  EXPECT_THROW(p.join(), mp::ValueError);
  EXPECT_THROW(p.is_alive(), mp::ValueError);
  EXPECT_THROW(p.exitcode(), mp::ValueError);
  EXPECT_THROW(p.pid(), mp::ValueError);
  EXPECT_THROW(p.sentinel(), mp::ValueError);
  EXPECT_THROW(p.terminate(), mp::ValueError);
  try {
    p.join();
  } catch (const mp::ValueError& e) {
    EXPECT_STREQ(e.what(), "process object is closed");
  }
  EXPECT_EQ(fmt::format("{}", p).find("closed") != std::string::npos, true);
}

// ------------------------------------------------------------------ misuse

TEST(ProcessStart, TwiceRaises) {
  mp::Process p([] {});
  p.start();
  try {
    p.start();
    FAIL() << "second start did not raise";
  } catch (const mp::RuntimeError& e) {
    EXPECT_STREQ(e.what(), "cannot start a process twice");
  }
  p.join();
}

// ------------------------------------------------------------------ parent / children

TEST(ParentProcess, IsNullInTheMainProgram) { EXPECT_EQ(mp::parent_process(), nullptr); }

TEST(ParentProcess, InTheChildHasTheParentsPidAndName) {
  Channel ch;
  mp::Process p([&ch] {
    const mp::ParentProcess* parent = mp::parent_process();
    ch.send(parent ? fmt::format("{} {} {}", parent->name(), parent->pid(), parent->is_alive())
                   : "none");
  });
  p.start();
  EXPECT_EQ(ch.recv(), fmt::format("MainProcess {} true", mp::getpid()));
  p.join();
}

TEST(ParentProcess, InAGrandchildIsTheChildAndNamesNest) {
  Channel ch;
  mp::Process p([&ch] {
    mp::Process grandchild([&ch] {
      const mp::ParentProcess* parent = mp::parent_process();
      ch.send(fmt::format("{} {} {}", parent ? parent->name() : "none",
                          parent ? parent->pid() : 0, mp::current_process().name()));
      mp::Process great;  // named after the grandchild
      ch.send(great.name());
    });
    grandchild.start();
    grandchild.join();
  });
  int n = number_of(p.name());
  p.start();
  EXPECT_EQ(ch.recv(), fmt::format("Process-{} {} Process-{}:1", n, *p.pid(), n));
  EXPECT_EQ(ch.recv(), fmt::format("Process-{}:1:1", n));
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(ParentProcess, IsAliveTurnsFalseWhenTheParentDies) {
  Channel ch;
  Signal child_ready;
  pid_t middle = mp::fork();
  if (middle == 0) {
    mp::Process child([&] {
      const mp::ParentProcess* parent = mp::parent_process();
      ch.send(parent->is_alive() ? "alive" : "dead");
      child_ready.notify();
      struct pollfd pfd {parent->sentinel(), POLLIN, 0};
      poll(&pfd, 1, 10000);
      ch.send(parent->is_alive() ? "alive" : "dead");
    });
    child.start();
    for (;;) pause();  // killed by the test
  }
  EXPECT_EQ(ch.recv(), "alive");
  ASSERT_TRUE(child_ready.wait());
  ::kill(middle, SIGKILL);
  waitpid(middle, nullptr, 0);
  EXPECT_EQ(ch.recv(), "dead");
}

TEST(ActiveChildren, ListsLiveChildrenAndReapsFinishedOnes) {
  Signal go;
  mp::Process a([&go] { go.wait(); });
  mp::Process b([] {});
  a.start();
  b.start();
  b.join();
  auto live = mp::active_children();
  ASSERT_EQ(live.size(), 1u);
  EXPECT_EQ(live[0].name(), a.name());
  EXPECT_EQ(live[0].pid(), *a.pid());
  go.notify();
  a.join();
  EXPECT_TRUE(mp::active_children().empty());
}

TEST(NoZombies, AChildWhoseObjectWasDestroyedIsStillReaped) {
  Signal go;
  pid_t pid;
  {
    mp::Process p([&go] { go.wait(); });
    p.start();
    pid = *p.pid();
  }  // destroyed while the child runs
  auto live = mp::active_children();
  ASSERT_EQ(live.size(), 1u);
  EXPECT_EQ(live[0].pid(), pid);
  go.notify();
  live[0].join(10s);
  EXPECT_EQ(live[0].exitcode(), 0);
  EXPECT_TRUE(mp::active_children().empty());
  // Reaped: the pid is no longer our child.
  EXPECT_EQ(waitpid(pid, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
}

// ------------------------------------------------------------------ repr

TEST(ProcessFormat, LooksLikeCPythonsRepr) {
  Signal go;
  mp::Process p(mp::ProcessOptions{.name = "Process-1"}, [&go] { go.wait(); });
  EXPECT_EQ(fmt::format("{}", p), fmt::format("<Process name='Process-1' parent={} initial>", mp::getpid()));
  p.start();
  EXPECT_EQ(fmt::format("{}", p),
            fmt::format("<Process name='Process-1' pid={} parent={} started>", *p.pid(), mp::getpid()));
  p.terminate();
  p.join();
  EXPECT_EQ(fmt::format("{}", p),
            fmt::format("<Process name='Process-1' pid={} parent={} stopped exitcode=-SIGTERM>", *p.pid(),
                        mp::getpid()));
}

// ------------------------------------------------------------------ tutorials

int g_counter = 0;

TEST(Tutorial, AGlobalChangedInAChildIsUnchangedInTheParent) {
  Channel ch;
  auto count = [&ch](const std::string& who) {
    for (int i = 0; i < 50; ++i) ++g_counter;
    ch.send(fmt::format("{} {}", who, g_counter));
  };
  mp::Process ping(count, std::string("Ping"));
  mp::Process pong(count, std::string("Pong"));
  ping.start();
  ping.join();
  pong.start();
  pong.join();
  EXPECT_EQ(ch.recv(), "Ping 50");
  EXPECT_EQ(ch.recv(), "Pong 50");  // its own copy, not 100
  EXPECT_EQ(g_counter, 0);
}

TEST(Tutorial, TwoOneSecondTasksInTwoProcessesTakeAboutOneSecond) {
  auto task = [] { std::this_thread::sleep_for(1s); };
  Stopwatch sw;
  mp::Process a(task), b(task);
  a.start();
  b.start();
  a.join();
  b.join();
  EXPECT_GE(sw.elapsed(), 950ms);
  EXPECT_LT(sw.elapsed(), 1800ms);
}

}  // namespace
