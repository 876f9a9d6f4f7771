// Conformance: mp/process.h.
// CPython docs: multiprocessing — "Process and exceptions" (Process, run,
// start, join, name, is_alive, daemon, pid, exitcode, sentinel, terminate,
// kill, close), "Miscellaneous" (active_children, current_process,
// parent_process), and the tutorials' Process programs.
#include "mp/process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pthread.h>
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
#include "mp/queue.h"
#include "mp/synchronize.h"

namespace {

using namespace std::chrono_literals;
using mp_test::Stopwatch;
using Strings = mp::Queue<std::string>;

bool pid_exists(pid_t pid) { return ::kill(pid, 0) == 0 || errno != ESRCH; }

// Waits (bounded) until a pid that is not our child has gone away.
bool wait_gone(pid_t pid, std::chrono::milliseconds limit) {
  int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return !pid_exists(pid);
  struct pollfd pfd {
    fd, POLLIN, 0
  };
  bool gone = ::poll(&pfd, 1, static_cast<int>(limit.count())) == 1;
  ::close(fd);
  return gone;
}

// ------------------------------------------------------------------ targets
//
// The suite runs under every start method (conformance/defs.bzl): its
// children's targets are functions whose arguments travel (mp objects,
// values), and they report through an mp::Queue or an mp::Event, never
// through memory or an fd that only a fork of the test inherits. Tests whose
// subject is a closure or a fork start with MP_FORK_ONLY.

void download(Strings& out, const std::string& file) { out.put("downloading " + file); }

void put_name(Strings& out) { out.put(mp::current_process().name()); }

void put_pid(Strings& out) { out.put(std::to_string(mp::getpid())); }

// The names of two Processes made (not started) in the child.
void put_names_of_two_new_processes(Strings& out) {
  mp::Process first;
  mp::Process second;
  out.put(first.name());
  out.put(second.name());
}

void wait_for(mp::Event go) { go.wait(); }

void wait_then_put(mp::Event go, Strings& out, const std::string& what) {
  go.wait();
  out.put(what);
}

void sleep_forever() {
  for (;;) pause();
}

// The child's stderr goes to `path` (a spawned child inherits no fd of the
// test but stdio), then the target throws.
void throw_with_stderr_in(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY);
  if (fd < 0) mp::exit(2);
  dup2(fd, STDERR_FILENO);
  ::close(fd);
  throw std::runtime_error("disk on fire");
}

// Puts "parent-name parent-pid parent-alive", or "none" without a parent.
void put_parent(Strings& out) {
  const mp::ParentProcess* parent = mp::parent_process();
  out.put(parent ? fmt::format("{} {} {}", parent->name(), parent->pid(), parent->is_alive())
                 : "none");
}

// The grandchild reports its parent and its own name, then the name of a
// Process it makes.
void put_parent_and_names(Strings& out) {
  const mp::ParentProcess* parent = mp::parent_process();
  out.put(fmt::format("{} {} {}", parent ? parent->name() : "none", parent ? parent->pid() : 0,
                      mp::current_process().name()));
  mp::Process great;  // named after the grandchild
  out.put(great.name());
}

void start_and_join_grandchild(Strings& out) {
  mp::Process grandchild(put_parent_and_names, std::ref(out));
  grandchild.start();
  grandchild.join();
  mp::exit(*grandchild.exitcode());
}

// ------------------------------------------------------------------ target

TEST(ProcessTarget, RunsAFunctionWithArguments) {
  Strings out;
  mp::Process p(download, std::ref(out), std::string("a.pdf"));
  p.start();
  EXPECT_EQ(out.get(), "downloading a.pdf");
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(ProcessTarget, RunsALambdaWithCaptures) {
  MP_FORK_ONLY("the target is a lambda with captures, which only a fork of the caller can run");
  Strings out;
  std::string greeting = "hello";
  mp::Process p([&out, greeting](int n) { out.put(greeting + std::to_string(n)); }, 42);
  p.start();
  EXPECT_EQ(out.get(), "hello42");
  p.join();
}

std::string ran_in_message(pid_t pid) { return "worker ran in " + std::to_string(pid); }

// Worker is a plain Process subclass: it starts by fork only (mp/process.h).
class Worker : public mp::Process {
 public:
  explicit Worker(Strings& out) : out_(out) {}
  void run() override { out_.put(ran_in_message(mp::getpid())); }

 private:
  Strings& out_;
};

// SpawnableWorker is Worker for every start method: the child gets out_.
class SpawnableWorker : public mp::SpawnableProcess<SpawnableWorker> {
 public:
  auto travel() { return std::tie(out_); }
  void run() override { out_.put(ran_in_message(mp::getpid())); }
  Strings& out() { return out_; }

 private:
  Strings out_{0, 4096};
};

template <class W>
void expect_run_runs_in_the_child(W& w, Strings& out) {
  w.start();
  EXPECT_EQ(out.get(), ran_in_message(*w.pid()));
  w.join();
  EXPECT_EQ(w.exitcode(), 0);
}

TEST(ProcessTarget, SubclassOverridingRunRunsInTheChild) {
  MP_FORK_ONLY("a plain mp::Process subclass starts by fork only; SpawnableProcess below");
  Strings out;
  Worker w(out);
  expect_run_runs_in_the_child(w, out);
}

TEST(ProcessTarget, SpawnableSubclassOverridingRunRunsInTheChild) {
  SpawnableWorker w;
  expect_run_runs_in_the_child(w, w.out());
}

TEST(ProcessTarget, RunCalledDirectlyRunsInTheCallingProcess) {
  pid_t ran_in = 0;
  mp::Process p([&ran_in] { ran_in = mp::getpid(); });  // never started: any method
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
// Process subclasses in a namespace, as a user would write them; their
// children report current_process().name(). Reporter is plain (fork only),
// SpawnableReporter starts with every method.
class Reporter : public mp::Process {
 public:
  explicit Reporter(Strings* out = nullptr) : out_(out) {}
  void run() override {
    if (out_) put_name(*out_);
  }

 private:
  Strings* out_;
};

class SpawnableReporter : public mp::SpawnableProcess<SpawnableReporter> {
 public:
  auto travel() { return std::tie(out_); }
  void run() override { put_name(out_); }
  Strings& out() { return out_; }

 private:
  Strings out_{0, 4096};
};
}  // namespace app

namespace {

TEST(ProcessName, SubclassDefaultIsClassNameDashNOnTheSharedCounter) {
  // CPython: class Reporter(Process) -> "Reporter-N", one counter for all.
  mp::Process a;
  app::Reporter r;
  mp::Process c;
  app::SpawnableReporter s;
  EXPECT_EQ(r.name(), fmt::format("Reporter-{}", number_of(a.name()) + 1));
  EXPECT_EQ(number_of(c.name()), number_of(a.name()) + 2);
  EXPECT_EQ(s.name(), fmt::format("SpawnableReporter-{}", number_of(a.name()) + 3));
  EXPECT_EQ(fmt::format("{}", r),
            fmt::format("<Reporter name='{}' parent={} initial>", r.name(), mp::getpid()));
}

// start() (name() not asked before it) puts the class name in; the child
// reports the same name.
template <class R>
void expect_child_has_the_class_name(R& r, Strings& out, const std::string& class_name) {
  r.start();
  EXPECT_EQ(out.get(), fmt::format("{}-{}", class_name, number_of(r.name())));
  r.join();
  EXPECT_EQ(r.exitcode(), 0);
  EXPECT_EQ(r.name().rfind(class_name + "-", 0), 0u) << r.name();
  R renamed;
  renamed.set_name("mine");
  EXPECT_EQ(renamed.name(), "mine");
}

TEST(ProcessName, SubclassNameIsTheChildsNameAndAnExplicitNameWins) {
  MP_FORK_ONLY("a plain mp::Process subclass starts by fork only; SpawnableProcess below");
  Strings out;
  app::Reporter r(&out);
  expect_child_has_the_class_name(r, out, "Reporter");
}

TEST(ProcessName, SpawnableSubclassNameIsTheChildsNameAndAnExplicitNameWins) {
  app::SpawnableReporter r;
  expect_child_has_the_class_name(r, r.out(), "SpawnableReporter");
}

TEST(ProcessName, ExplicitNameIsKept) {
  mp::Process p(mp::ProcessOptions{.name = "dongGe"}, [] {});
  EXPECT_EQ(p.name(), "dongGe");
  p.set_name("renamed");
  EXPECT_EQ(p.name(), "renamed");
}

TEST(ProcessName, CurrentProcessNameInTheChildEqualsIt) {
  Strings out;
  mp::Process p(mp::ProcessOptions{.name = "worker_1"}, put_name, std::ref(out));
  p.start();
  EXPECT_EQ(out.get(), "worker_1");
  p.join();
}

TEST(ProcessName, ChildrenOfAChildAreNamedProcessNColonM) {
  Strings out;
  mp::Process p(put_names_of_two_new_processes, std::ref(out));
  int n = number_of(p.name());
  p.start();
  EXPECT_EQ(out.get(), fmt::format("Process-{}:1", n));
  EXPECT_EQ(out.get(), fmt::format("Process-{}:2", n));
  p.join();
}

TEST(ProcessName, MainProgramIsMainProcess) {
  EXPECT_EQ(mp::current_process().name(), "MainProcess");
  EXPECT_EQ(mp::current_process().pid(), mp::getpid());
}

// ------------------------------------------------------------------ pid

TEST(ProcessPid, EmptyBeforeStartThenTheChildsGetpid) {
  Strings out;
  mp::Process p(put_pid, std::ref(out));
  EXPECT_FALSE(p.pid().has_value());
  p.start();
  ASSERT_TRUE(p.pid().has_value());
  EXPECT_EQ(out.get(), std::to_string(*p.pid()));
  p.join();
}

// ------------------------------------------------------------------ exitcode

TEST(ProcessExitcode, EmptyBeforeStartAndWhileRunning) {
  mp::Event go;
  mp::Process p(wait_for, go);
  EXPECT_FALSE(p.exitcode().has_value());
  p.start();
  EXPECT_FALSE(p.exitcode().has_value());
  go.set();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(ProcessExitcode, OneWhenTheTargetThrowsAndTheMessageGoesToStderr) {
  char path[] = "/tmp/mp_stderr_XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  mp::Process p(mp::ProcessOptions{.name = "thrower"}, throw_with_stderr_in, std::string(path));
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
  mp::Event release_p2;
  mp::Process p1([] {});
  mp::Process p2(wait_for, release_p2);
  p1.start();
  p2.start();
  p1.join();
  EXPECT_EQ(p1.exitcode(), 0);
  EXPECT_TRUE(p2.is_alive());
  release_p2.set();
  p2.join();
  EXPECT_EQ(p2.exitcode(), 0);
}

TEST(ProcessJoin, TimeoutReturnsWhileTheChildStillRuns) {
  mp::Event go;
  mp::Process p(wait_for, go);
  p.start();
  Stopwatch sw;
  p.join(300ms);
  auto elapsed = sw.elapsed();
  EXPECT_GE(elapsed, 250ms);
  EXPECT_LT(elapsed, 1300ms);
  EXPECT_TRUE(p.is_alive());
  EXPECT_FALSE(p.exitcode().has_value());
  // join may be called again.
  go.set();
  p.join(10s);
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(ProcessJoin, ZeroTimeoutReturnsAtOnce) {
  mp::Event go;
  mp::Process p(wait_for, go);
  p.start();
  Stopwatch sw;
  p.join(0s);
  EXPECT_LT(sw.elapsed(), 200ms);
  EXPECT_TRUE(p.is_alive());
  go.set();
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
  MP_FORK_ONLY("the child joins the parent's Process object, which only a fork of it holds");
  mp::Event go;
  mp::Process sibling(wait_for, go);
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
  go.set();
  sibling.join();
}

// ------------------------------------------------------------------ is_alive

TEST(ProcessIsAlive, FalseBeforeStartTrueWhileRunningFalseAfter) {
  mp::Event go;
  mp::Process p(wait_for, go);
  EXPECT_FALSE(p.is_alive());
  p.start();
  EXPECT_TRUE(p.is_alive());
  go.set();
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

void set_then_loop(mp::Event looping) {
  looping.set();
  for (;;) std::this_thread::sleep_for(10ms);
}

TEST(ProcessTerminate, StopsAChildMidLoopWithExitcodeMinus15) {
  mp::Event looping;
  mp::Process p(set_then_loop, looping);
  p.start();
  ASSERT_TRUE(looping.wait(10s));
  p.terminate();
  p.join(10s);
  EXPECT_EQ(p.exitcode(), -SIGTERM);
}

TEST(ProcessKill, GivesExitcodeMinus9) {
  mp::Process p(sleep_forever);
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

// The two tests below fork the test into a "program" that starts a child
// (with the run's default method) and then exits normally.

TEST(ProcessDaemon, DaemonChildrenAreTerminatedWhenTheProgramExits) {
  mp::Queue<int> daemon_pids;
  pid_t program = mp::fork();
  if (program == 0) {
    mp::Process d(mp::ProcessOptions{.daemon = true}, sleep_forever);
    d.start();
    daemon_pids.put(*d.pid());
    std::exit(0);  // normal program exit
  }
  pid_t daemon_pid = daemon_pids.get();
  int status = 0;
  ASSERT_EQ(waitpid(program, &status, 0), program);
  EXPECT_EQ(mp::exitcode_from_wait_status(status), 0);
  // Gone by the time the program has exited: as CPython's _exit_function,
  // the program terminates its daemonic children and then joins them. (So
  // not ended by a forkserver's clean-up after its parent's exit.)
  EXPECT_TRUE(wait_gone(daemon_pid, 0ms));
}

TEST(ProcessDaemon, NonDaemonChildrenAreJoinedAtNormalProgramExit) {
  mp::Event release;
  Strings out;
  pid_t program = mp::fork();
  if (program == 0) {
    mp::Process child(wait_then_put, release, std::ref(out), std::string("child done"));
    child.start();
    std::exit(0);  // must wait for child
  }
  int status = 0;
  // The program has not exited within 300 ms: it waits for its child.
  EXPECT_FALSE(wait_gone(program, 300ms));
  EXPECT_EQ(waitpid(program, &status, WNOHANG), 0);
  release.set();
  EXPECT_EQ(out.get(), "child done");
  ASSERT_EQ(waitpid(program, &status, 0), program);
  EXPECT_EQ(mp::exitcode_from_wait_status(status), 0);
}

TEST(ProcessDaemon, ADaemonicProcessCannotStartChildren) {
  mp::Process p(mp::ProcessOptions{.daemon = true}, [] {
    mp::Process grandchild([] {});
    try {
      grandchild.start();
    } catch (const mp::RuntimeError& e) {
      std::string why = e.what();
      mp::exit(why == "daemonic processes are not allowed to have children" ? 42 : 1);
    }
  });
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 42);
}

// ------------------------------------------------------------------ sentinel

TEST(ProcessSentinel, BecomesReadableWhenTheChildEnds) {
  mp::Event go;
  mp::Process p(wait_for, go);
  EXPECT_THROW(p.sentinel(), mp::RuntimeError);
  p.start();
  struct pollfd pfd {
    p.sentinel(), POLLIN, 0
  };
  EXPECT_EQ(poll(&pfd, 1, 0), 0);
  go.set();
  EXPECT_EQ(poll(&pfd, 1, 10000), 1);
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

// ------------------------------------------------------------------ close

TEST(ProcessClose, RaisesWhileTheChildRuns) {
  mp::Event go;
  mp::Process p(wait_for, go);
  p.start();
  EXPECT_THROW(p.close(), mp::ValueError);
  go.set();
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
  Strings out;
  mp::Process p(put_parent, std::ref(out));
  p.start();
  EXPECT_EQ(out.get(), fmt::format("MainProcess {} true", mp::getpid()));
  p.join();
}

TEST(ParentProcess, InAGrandchildIsTheChildAndNamesNest) {
  Strings out;
  mp::Process p(start_and_join_grandchild, std::ref(out));
  int n = number_of(p.name());
  p.start();
  EXPECT_EQ(out.get(), fmt::format("Process-{} {} Process-{}:1", n, *p.pid(), n));
  EXPECT_EQ(out.get(), fmt::format("Process-{}:1:1", n));
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

// The child reports whether its parent lives, then again once the parent's
// sentinel says it has ended. It blocks SIGTERM first: a forkserver sends it
// to the children of a parent that died (mp/context.h), and the child must
// outlive its parent long enough to look.
void put_parent_alive_before_and_after_its_end(Strings& out) {
  sigset_t term;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &term, nullptr);
  const mp::ParentProcess* parent = mp::parent_process();
  out.put(parent->is_alive() ? "alive" : "dead");
  struct pollfd pfd {
    parent->sentinel(), POLLIN, 0
  };
  poll(&pfd, 1, 10000);
  out.put(parent->is_alive() ? "alive" : "dead");
}

TEST(ParentProcess, IsAliveTurnsFalseWhenTheParentDies) {
  Strings out;
  pid_t middle = mp::fork();
  if (middle == 0) {
    mp::Process child(put_parent_alive_before_and_after_its_end, std::ref(out));
    child.start();
    sleep_forever();  // killed by the test
  }
  EXPECT_EQ(out.get(), "alive");
  ::kill(middle, SIGKILL);
  waitpid(middle, nullptr, 0);
  EXPECT_EQ(out.get(), "dead");
}

TEST(ActiveChildren, ListsLiveChildrenAndReapsFinishedOnes) {
  mp::Event go;
  mp::Process a(wait_for, go);
  mp::Process b([] {});
  a.start();
  b.start();
  b.join();
  auto live = mp::active_children();
  ASSERT_EQ(live.size(), 1u);
  EXPECT_EQ(live[0].name(), a.name());
  EXPECT_EQ(live[0].pid(), *a.pid());
  go.set();
  a.join();
  EXPECT_TRUE(mp::active_children().empty());
}

TEST(NoZombies, AChildWhoseObjectWasDestroyedIsStillReaped) {
  mp::Event go;
  pid_t pid;
  {
    mp::Process p(wait_for, go);
    p.start();
    pid = *p.pid();
  }  // destroyed while the child runs
  auto live = mp::active_children();
  ASSERT_EQ(live.size(), 1u);
  EXPECT_EQ(live[0].pid(), pid);
  go.set();
  live[0].join(10s);
  EXPECT_EQ(live[0].exitcode(), 0);
  EXPECT_TRUE(mp::active_children().empty());
  // Reaped: the pid is no longer our child.
  EXPECT_EQ(waitpid(pid, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
}

// ------------------------------------------------------------------ start method

void put_start_method(Strings& out) { out.put(mp::get_start_method()); }

// CPython's spawn passes get_start_method() to the child (spawn.prepare), so
// a child's own children start as the parent's would.
TEST(ProcessStartMethod, AChildsDefaultIsItsParents) {
  Strings out;
  mp::Process p(put_start_method, std::ref(out));
  p.start();
  EXPECT_EQ(out.get(), mp::get_start_method());
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

// ------------------------------------------------------------------ repr

TEST(ProcessFormat, LooksLikeCPythonsRepr) {
  mp::Event go;
  mp::Process p(mp::ProcessOptions{.name = "Process-1"}, wait_for, go);
  EXPECT_EQ(fmt::format("{}", p),
            fmt::format("<Process name='Process-1' parent={} initial>", mp::getpid()));
  p.start();
  EXPECT_EQ(fmt::format("{}", p), fmt::format("<Process name='Process-1' pid={} parent={} started>",
                                              *p.pid(), mp::getpid()));
  p.terminate();
  p.join();
  EXPECT_EQ(fmt::format("{}", p),
            fmt::format("<Process name='Process-1' pid={} parent={} stopped exitcode=-SIGTERM>",
                        *p.pid(), mp::getpid()));
}

// ------------------------------------------------------------------ tutorials

int g_counter = 0;

void count_to_50(Strings& out, const std::string& who) {
  for (int i = 0; i < 50; ++i) ++g_counter;
  out.put(fmt::format("{} {}", who, g_counter));
}

TEST(Tutorial, AGlobalChangedInAChildIsUnchangedInTheParent) {
  Strings out;
  mp::Process ping(count_to_50, std::ref(out), std::string("Ping"));
  mp::Process pong(count_to_50, std::ref(out), std::string("Pong"));
  ping.start();
  ping.join();
  pong.start();
  pong.join();
  EXPECT_EQ(out.get(), "Ping 50");
  EXPECT_EQ(out.get(), "Pong 50");  // its own copy, not 100
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
