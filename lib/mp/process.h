// mp/process.h — Process, current_process(), parent_process(),
// active_children(): CPython's multiprocessing.Process, with its three start
// methods (mp/context.h says when to pick which).
//
// A Process runs a target with arguments in a child. With the fork start
// method (the default) the target is any callable, lambdas with captures
// included, and the child sees the parent's memory as of start(); from then
// on the two are separate. With forkserver and spawn the child is not a
// fork of the caller, so the target must be data (see "Start methods").
//
//   void download(const std::string& file);
//   mp::Process p(download, "a.pdf");
//   p.start();
//   p.join();                        // waits for p only
//   assert(p.exitcode() == 0);
//
// Or subclass and override run(), as in CPython:
//
//   class Worker : public mp::Process {
//     void run() override { ... }
//   };
//
// Contract (CPython's, unless said otherwise):
//   * name(): "Process-N" by default, N a 1-based counter of the creating
//     process advanced at every construction; children of a child are
//     "Process-N:M". An object of a subclass is "<ClassName>-N" (the
//     dynamic type's name without namespaces, as type(self).__name__; the
//     counter is shared). C++ gives the dynamic type only after Process's
//     constructor, so the class name is put in at the first name(),
//     format() or start(), and start() fixes it. An explicit name is kept.
//     Inside the child, current_process().name() is the same name.
//   * pid(): empty before start(); then the child's getpid().
//   * exitcode(): empty before start and while running; 0 when the target
//     returns; 1 when it throws (the child writes "Process <name>:" and the
//     exception's type and message to stderr); n&0xff after mp::exit(n) or
//     _exit(n); -N after death by signal N.
//   * join(timeout) returns after about the timeout with the child still
//     alive and may be called again; join(0s) polls. Joining the current
//     process raises "can only join a child process" (CPython's words). It waits on the
//     child's pidfd (sentinel()), never in a sleep loop.
//   * terminate() sends SIGTERM (exitcode -15), kill() SIGKILL (-9); both do
//     nothing once the child has ended. Signals go through the pidfd, so a
//     recycled pid is never hit.
//   * daemon: set before start() only. At normal exit of the creating
//     process (return from main, std::exit, mp::exit, end of an mp child),
//     daemonic children are terminated and the others joined; it exits
//     once all of them have ended (CPython's _exit_function joins the
//     terminated ones too). A daemonic process may not start children.
//   * close() releases the pidfd; it raises while the child runs; every later
//     use (but name()) raises mp::ValueError "process object is closed".
//   * No zombies: every started child is reaped — by join(), is_alive(),
//     exitcode(), active_children(), the next start() (as CPython's
//     _cleanup), or at the end of the creating process — even when its
//     Process object was destroyed while the child still ran (the child is
//     then owned by mp's registry of children).
//
// Start methods (ProcessOptions::start_method, or mp::Context::Process, or
// the default from mp::set_start_method; mp/context.h):
//   * fork: as above. Nothing is encoded.
//   * forkserver, spawn: the target must be a function or a stateless
//     callable (a lambda without captures), and every argument encodable by
//     mp/codec.h or one of mp's shareable objects (Queue, Lock, Event, Value,
//     Connection, ...). Pass a move-only object (Queue, Connection,
//     SharedMemory) as std::ref(obj): the child gets its own handle to the
//     same object and the target takes it by reference. Arguments are
//     encoded at start(), not at construction. A target that cannot travel
//     (a closure) compiles for fork only: start() with another method raises
//     mp::ValueError saying so; mp::Context::Process rejects it at compile
//     time.
//   * start() under forkserver and spawn returns once the child has rebuilt
//     its target and is about to run it; if it cannot (a function in a
//     library the child did not load, a program whose main() does not call
//     mp::freeze_support(), a different build of the executable),
//     start() raises mp::ProcessError with the child's reason and nothing
//     keeps running.
//   * A Process subclass (an override of run()) starts with fork as it is.
//     For forkserver and spawn it derives from mp::SpawnableProcess<Self>
//     instead, is default-constructible, and names what is copied to the
//     child in a member `auto travel() { return std::tie(field, ...); }`
//     (each field encodable or an mp object). The child default-constructs a
//     Self, assigns those fields, gives it the parent's name() and daemon(),
//     and calls its run(). Nothing else of the object is copied. Inside the
//     child, current_process() is a Process with the same name and pid, not
//     the Self object itself. Any other subclass raises mp::ValueError at
//     start() with those methods.
//   * Everything else in this contract (names, pid, exitcode, join, sentinel,
//     terminate/kill, daemon, parent_process, active_children, no zombies)
//     holds under every method. A forkserver child is the server's child in
//     the kernel's eyes; the server reaps it and reports its wait status to
//     the parent, which gives the exact exitcode (-9 after SIGKILL), and the
//     sentinel is a pidfd of the child itself. If the server was killed, a
//     child ending after that reports exitcode 255 (its status is lost).
//
// Where mp differs from CPython, and why:
//   * exitcode() reads 255 where the child's exit status is lost: someone
//     else reaped it (waitpid(-1) elsewhere in the program, or SIGCHLD set
//     to SIG_IGN, with which the kernel reaps children itself and no wait
//     can see their status), or a forkserver child whose server was killed.
//     255 is a placeholder, not the child's code: the child has ended
//     (join() returns, is_alive() is false) and its real code is unknowable.
//     CPython in the same case reports exitcode None and is_alive() True
//     forever; mp prefers an ended process with a code that says "failed".
//   * Misuse raises mp::RuntimeError (CPython raises AssertionError from
//     `assert`): start twice, join before start, join of the current
//     process, join of a process this process did not start, daemon after
//     start.
//   * Process is move-only: it owns a child. Moving a started Process keeps
//     the child; the moved-from object is empty and unusable.
//   * active_children() returns ChildProcess handles (a started child's
//     shared state), not the Process objects, which may have been moved or
//     destroyed in C++.
//   * An uncaught exception in the child prints its type and what(), not a
//     traceback.
#pragma once

#include <fmt/format.h>
#include <sys/types.h>

#include <chrono>
#include <concepts>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "mp/codec.h"
#include "mp/internal/start.h"
#include "mp/internal/task.h"

namespace mp {

namespace internal {
struct ChildState;
}  // namespace internal

// ProcessOptions are the keyword arguments of CPython's Process(): an
// explicit name (default "Process-N..."), and the daemon flag (default: the
// creating process's own flag).
struct ProcessOptions {
  std::optional<std::string> name;
  std::optional<bool> daemon;
  // start_method: "fork", "forkserver" or "spawn"; default: the process-wide
  // default (mp::set_start_method). An unknown name raises mp::ValueError.
  std::optional<std::string> start_method;
};

// ChildProcess is a handle to a started child: what active_children()
// returns. Copies refer to the same child.
class ChildProcess {
 public:
  // name() is the child's name.
  const std::string& name() const;
  // pid() is the child's pid.
  pid_t pid() const;
  // daemon() is the child's daemon flag.
  bool daemon() const;
  // is_alive() is true until the child has ended (then it is reaped).
  bool is_alive() const;
  // exitcode() is empty while running; then as Process::exitcode().
  std::optional<int> exitcode() const;
  // join() waits for the child to end (at most `timeout` when given).
  void join(std::optional<std::chrono::duration<double>> timeout = std::nullopt) const;
  // terminate() sends SIGTERM; kill() SIGKILL. No-ops once ended.
  void terminate() const;
  void kill() const;
  // sentinel() is the child's pidfd: readable once it has ended.
  int sentinel() const;

 private:
  friend class Process;
  friend std::vector<ChildProcess> active_children();
  explicit ChildProcess(std::shared_ptr<internal::ChildState> state) : state_(std::move(state)) {}
  std::shared_ptr<internal::ChildState> state_;
};

// Process is a child process running a target; see the file comment.
class Process {
 public:
  // Process() has no target: run() does nothing unless overridden.
  Process();
  explicit Process(ProcessOptions options);

  // Process(target, args...) runs target(args...) in the child. Arguments
  // are copied (decayed) at construction, as std::thread does.
  template <class F, class... Args>
  requires std::invocable < std::decay_t<F>
  &, std::decay_t<Args>&... >
         &&(!std::same_as<std::decay_t<F>, ProcessOptions>)&&(
             !std::derived_from<std::decay_t<F>, Process>)explicit Process(F&& target,
                                                                           Args&&... args)
      : Process(ProcessOptions{}, std::forward<F>(target), std::forward<Args>(args)...) {}

  // Process(options, target, args...) also names the process and/or sets
  // its daemon flag.
  template <class F, class... Args>
  requires std::invocable < std::decay_t<F>
  &, std::decay_t<Args>&... > Process(ProcessOptions options, F&& target, Args&&... args)
      : Process(std::move(options)) {
    using Fn = std::decay_t<F>;
    using Tuple = std::tuple<std::decay_t<Args>...>;
    auto task = std::make_shared<std::pair<Fn, Tuple>>(std::forward<F>(target),
                                                       Tuple(std::forward<Args>(args)...));
    target_ = [task] { std::apply(task->first, task->second); };
    if constexpr (internal::Travels<Fn, std::decay_t<Args>...>) {
      write_task_ = [task](Encoder& e) {
        return internal::write_task(e, task->first, task->second);
      };
    }
  }

  virtual ~Process();
  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  // run() is what the child executes: by default the target with its
  // arguments. Override it in a subclass. Called directly, it runs in the
  // calling process.
  virtual void run();

  // start() forks the child, which calls run(). At most once per object:
  // a second call raises "cannot start a process twice".
  void start();

  // join() blocks until the child ends; join(timeout) at most about
  // `timeout`, after which the child may still run (check exitcode()).
  void join(std::optional<std::chrono::duration<double>> timeout = std::nullopt);

  // is_alive() is true from start() until the child ends. In the child,
  // current_process().is_alive() is true.
  bool is_alive();

  // terminate() sends SIGTERM, kill() SIGKILL; no-ops once the child ended.
  void terminate();
  void kill();

  // close() releases the process's resources; raises mp::ValueError while
  // the child runs. Idempotent.
  void close();

  // name() / set_name(): the process's name (settable at any time).
  const std::string& name() const;
  void set_name(std::string name);

  // daemon() / set_daemon(): the daemon flag, settable before start() only.
  bool daemon() const;
  void set_daemon(bool daemon);

  // pid() is empty before start().
  std::optional<pid_t> pid() const;

  // exitcode() is empty before start and while the child runs.
  std::optional<int> exitcode();

  // sentinel() is a pidfd that becomes readable when the child ends (for
  // poll() or mp::wait). Owned by the Process: do not close it.
  int sentinel() const;

  // format() is CPython's repr:
  // "<Process name='Process-1' pid=123 parent=100 started>", with the
  // subclass's name in place of Process, and "stopped exitcode=0" or, after
  // death by a signal, "stopped exitcode=-SIGTERM" (-N for an unnamed one).
  std::string format() const;

 private:
  friend Process& current_process();
  struct MainTag {};
  explicit Process(MainTag);

  void check_not_closed() const;
  [[noreturn]] void bootstrap_child(int parent_pidfd);
  [[noreturn]] void run_and_exit();
  void start_elsewhere(int method);
  template <class>
  friend class SpawnableProcess;
  bool is_current() const;
  friend void internal::run_started_child(const internal::StartRequest&, std::vector<int>&, int);

  std::function<void()> target_;
  // The target as data (see "Start methods"); empty for a closure.
  std::function<std::uintptr_t(Encoder&)> write_task_;
  int start_method_ = -1;  // internal::StartMethod; -1: the default
  // Set by SpawnableProcess<Self>: writes *this as data for the child.
  std::uintptr_t (*write_self_)(Encoder&, Process&) = nullptr;
  std::shared_ptr<internal::ChildState> state_;  // null only when moved from
};

namespace internal {
template <class P>
std::function<void()> launch_self(Decoder& d) {
  auto self = std::make_shared<P>();
  self->set_name(d.read<std::string>());
  self->set_daemon(d.read<bool>());
  // The fields in order (a fold over the comma operator runs left to right).
  std::apply([&](auto&... f) { ((f = d.read<std::decay_t<decltype(f)>>()), ...); }, self->travel());
  return [self] { self->run(); };
}

template <class P>
std::uintptr_t write_self(Encoder& e, Process& p) {
  static_assert(std::default_initializable<P>,
                "mp::SpawnableProcess<Self>: Self must be default-constructible (the child makes "
                "one, then assigns what travel() names)");
  P& self = static_cast<P&>(p);
  e.write(self.name());
  e.write(self.daemon());
  std::apply(
      [&](auto&... f) {
        (codec_detail::require_transportable<std::decay_t<decltype(f)>>(), ...);
        static_assert((Transportable<std::decay_t<decltype(f)>> && ...),
                      "mp::SpawnableProcess<Self>: every field Self::travel() names must be "
                      "encodable by mp/codec.h or be an mp object");
        (e.write(f), ...);
      },
      self.travel());
  return reinterpret_cast<std::uintptr_t>(&launch_self<P>);
}
}  // namespace internal

// SpawnableProcess<Self> is a Process subclass that can start with every
// method (see "Start methods" above):
//
//   class Worker : public mp::SpawnableProcess<Worker> {
//    public:
//     Worker() = default;
//     Worker(int n, std::string label) : n_(n), label_(std::move(label)) {}
//     auto travel() { return std::tie(n_, label_); }   // what the child gets
//     void run() override { ... n_, label_ ... }
//    private:
//     int n_ = 0;
//     std::string label_;
//   };
//   Worker w(3, "x");
//   w.set_start_method ... or mp::ProcessOptions{.start_method = "spawn"}
template <class Self>
class SpawnableProcess : public Process {
 public:
  explicit SpawnableProcess(ProcessOptions options = {}) : Process(std::move(options)) {
    write_self_ = &internal::write_self<Self>;
  }
};

// ParentProcess is what parent_process() returns in a child: the parent's
// name and pid, and whether it is still alive (watched through a pidfd).
class ParentProcess {
 public:
  const std::string& name() const noexcept { return *name_; }
  pid_t pid() const noexcept { return pid_; }
  // is_alive() turns false when the parent ends.
  bool is_alive() const;
  // sentinel() is a pidfd that becomes readable when the parent ends.
  int sentinel() const noexcept { return pidfd_; }

 private:
  friend class Process;
  friend struct ParentAccess;
  friend void internal::run_started_child(const internal::StartRequest&, std::vector<int>&, int);
  // Points into the ChildState the parent prepared before the fork (see
  // Process::start), so the child copies no string.
  const std::string* name_ = nullptr;
  pid_t pid_ = 0;
  int pidfd_ = -1;
};

// current_process() is the Process object of the calling process: in an
// mp child, the object whose start() created it; in the main program an
// object named "MainProcess".
Process& current_process();

// parent_process() is the parent of an mp child, or nullptr in the main
// program (CPython returns None there).
const ParentProcess* parent_process();

// active_children() lists the live children started by this process and
// reaps those that have ended.
std::vector<ChildProcess> active_children();

}  // namespace mp

template <std::derived_from<mp::Process> P>
struct fmt::formatter<P> : fmt::formatter<std::string_view> {
  template <class Ctx>
  auto format(const P& p, Ctx& ctx) const {
    return fmt::formatter<std::string_view>::format(p.format(), ctx);
  }
};
