#include "mp/process.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <string_view>
#include <system_error>
#include <typeinfo>

#include "mp/errors.h"
#include "mp/internal/demangle.h"
#include "mp/internal/futex.h"
#include "mp/internal/lifecycle.h"
#include "mp/internal/modules.h"
#include "mp/internal/start.h"
#include "mp/internal/travel.h"
#include "mp/os.h"

namespace mp {
namespace internal {

// ChildState is the shared state of one Process: what its handles
// (Process, ChildProcess, the registry of children) agree on.
//
// Fork cost note: after fork every page the parent or the child writes is
// copied on first write (about 25 us a page here), so the registry links
// states intrusively instead of keeping vectors on other pages, and the
// child writes nothing here at all.
struct ChildState {
  ChildState();
  ~ChildState();

  const pid_t creator_pid;  // the process that made the object
  bool is_main = false;     // the MainProcess object
  int number = 0;           // N of Process-...:N (CPython's _identity)

  // Registry links, guarded by Globals::mu.
  ChildState* all_prev = nullptr;  // every live state of this process image
  ChildState* all_next = nullptr;
  ChildState* child_prev = nullptr;  // started children not yet swept
  ChildState* child_next = nullptr;
  std::shared_ptr<ChildState> self_ref;  // keeps a registered child alive

  // Written by start() before the fork, for the child to point at.
  std::string child_prefix;  // the child's name prefix, "Process-3:"
  std::string parent_name;   // the name the child reports for its parent

  std::mutex mu;  // guards everything below
  std::string name;
  // The name is the default one, made in Process's constructor before the
  // dynamic type was known; adopt_class_name() puts the class name in.
  // Atomic so that a name() after start() (e.g. in the child, whose copy of
  // `mu` may have been held by another thread at fork) takes no lock.
  std::atomic<bool> default_name{false};
  bool daemon = false;
  bool started = false;
  bool closed = false;
  pid_t pid = 0;
  int pidfd = -1;
  // A forkserver child: the server writes its wait status here when it
  // reaps it (the child is not ours to waitpid).
  int status_fd = -1;
  bool status_lost = false;  // the forkserver died before reporting it
  std::optional<int> exitcode;
};

}  // namespace internal

namespace {

using internal::ChildState;
using Clock = std::chrono::steady_clock;

int sys_pidfd_open(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

int sys_pidfd_send_signal(int pidfd, int sig) {
  return static_cast<int>(syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

// top_name_prefix is the name prefix of a process that is not an mp child.
const std::string& top_name_prefix() {
  static const std::string* prefix = new std::string("Process-");  // leaked: used at exit
  return *prefix;
}

// Globals is the per-process state of the process module (and the
// lifecycle registry). After fork the child re-arms it (see the atfork
// handlers below). It is page-aligned and smaller than a page, so a child
// that writes it takes one copy-on-write fault for all of it.
struct alignas(4096) Globals {
  internal::LifecycleState lifecycle;
  std::mutex mu;           // guards the fields below
  pid_t pid = ::getpid();  // this process (getpid() is a syscall)
  // "Process-", or in a child its ChildState's child_prefix ("Process-3:1:").
  const std::string* name_prefix = &top_name_prefix();
  int counter = 1;                 // next Process-N number
  Process* current = nullptr;      // null: the MainProcess object
  bool daemonic = false;           // this process is a daemon child
  ChildState* children = nullptr;  // started children, maybe unreaped
  // Set once this process has started a child: until then its end has no
  // children to sweep, and a forked child takes no lock (each lock's code
  // and page cost a child one more fault).
  std::atomic<bool> started_any{false};
  ChildState* all = nullptr;   // every live ChildState
  int self_pidfd = -1;         // a pidfd of this process, for children
  bool forking_child = false;  // Process::start is forking
  bool has_parent = false;     // this is an mp child
  ParentProcess parent;        // valid when has_parent
};

void finalize_children();

Globals& globals() {
  // Leaked on purpose: used by finalizers at exit and by atfork handlers.
  static_assert(sizeof(Globals) <= 4096);
  static Globals* g = [] {
    auto* p = new Globals;  // aligned: operator new(size, align_val_t)
    pthread_atfork([] { globals().mu.lock(); }, [] { globals().mu.unlock(); },
                   [] {
                     // The child has one thread and none of the parent's children.
                     // States made by the parent stay readable but foreign (their
                     // creator_pid is not ours): every operation on them raises, so
                     // only their pidfds are closed here, without writing to them.
                     Globals& self = globals();
                     new (&self.mu) std::mutex;
                     new (&self.lifecycle.mu) internal::SpinLock;
                     self.lifecycle.done = false;
                     pid_t parent = self.pid;
                     self.pid = ::getpid();
                     for (ChildState* s = self.all; s; s = s->all_next) {
                       if (s->creator_pid == parent && s->pidfd >= 0) ::close(s->pidfd);
                       if (s->creator_pid == parent && s->status_fd >= 0) ::close(s->status_fd);
                     }
                     self.children = nullptr;
                     self.started_any.store(false, std::memory_order_relaxed);
                     // The inherited self-pidfd watches the parent: mp children keep it
                     // as parent_process()'s sentinel; other forks close it.
                     if (self.self_pidfd >= 0 && !self.forking_child) ::close(self.self_pidfd);
                     self.self_pidfd = -1;
                     self.forking_child = false;
                   });
    return p;
  }();
  return *g;
}

pid_t current_pid() { return globals().pid; }

}  // namespace

internal::LifecycleState& internal::lifecycle_state() noexcept { return globals().lifecycle; }

std::vector<int> internal::kept_fds() {
  std::vector<int> fds = forkserver_fds();
  Globals& g = globals();
  std::lock_guard lock(g.mu);
  if (g.self_pidfd >= 0) fds.push_back(g.self_pidfd);
  return fds;
}

namespace {

// Waits until the child's pidfd is readable or the deadline passes.
// Returns true when the child has ended.
bool wait_readable(int fd, std::optional<Clock::time_point> deadline) {
  for (;;) {
    struct pollfd pfd {
      fd, POLLIN, 0
    };
    struct timespec ts {};
    struct timespec* tsp = nullptr;
    if (deadline) {
      auto left = *deadline - Clock::now();
      if (left < Clock::duration::zero()) left = Clock::duration::zero();
      auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
      ts.tv_sec = ns / 1'000'000'000;
      ts.tv_nsec = ns % 1'000'000'000;
      tsp = &ts;
    }
    int rc = ppoll(&pfd, 1, tsp, nullptr);
    if (rc > 0) return true;
    if (rc == 0) return false;
    if (errno != EINTR) throw std::system_error(errno, std::generic_category(), "poll pidfd");
  }
}

// Reaps the child if it has ended; with `block`, waits for it (until the
// deadline). Returns the exit code once known.
std::optional<int> reap(ChildState& s, bool block,
                        std::optional<Clock::time_point> deadline = std::nullopt) {
  int fd, status_fd;
  {
    std::lock_guard lock(s.mu);
    if (s.exitcode || !s.started || s.pid <= 0) return s.exitcode;
    fd = s.pidfd;
    status_fd = s.status_fd;
  }
  const auto until = block ? deadline : std::optional<Clock::time_point>(Clock::now());
  if (status_fd >= 0) {
    // A forkserver child: the server reaps it and writes its wait status
    // on this pipe, so one wake-up gives both its end and its status. An
    // end of file there means the server died: the status is lost, and the
    // child's own pidfd tells when it ends.
    if (!wait_readable(status_fd, until)) return std::nullopt;
    std::lock_guard lock(s.mu);
    if (s.exitcode) return s.exitcode;
    if (s.status_fd >= 0) {
      int status = 0;
      ssize_t r;
      do {
        r = ::read(s.status_fd, &status, sizeof status);
      } while (r < 0 && errno == EINTR);
      ::close(s.status_fd);
      s.status_fd = -1;
      if (r == sizeof status) {
        s.exitcode = exitcode_from_wait_status(status);
        return s.exitcode;
      }
      s.status_lost = true;
    }
  }
  if (fd >= 0) {
    bool ended = wait_readable(fd, until);
    if (!ended) return std::nullopt;
  }
  std::lock_guard lock(s.mu);
  if (s.exitcode) return s.exitcode;
  if (s.status_lost) {
    s.exitcode = 255;
    return s.exitcode;
  }
  int status = 0;
  pid_t rc;
  do {
    rc = ::waitpid(s.pid, &status, block && fd < 0 ? 0 : WNOHANG);
  } while (rc < 0 && errno == EINTR);
  if (rc == s.pid) {
    s.exitcode = exitcode_from_wait_status(status);
  } else if (rc < 0 && errno == ECHILD) {
    // Someone else reaped it (waitpid(-1) or SIGCHLD set to SIG_IGN): the
    // child is gone and its status lost. Report it as a failure.
    s.exitcode = 255;
  }
  return s.exitcode;
}

void send_signal(ChildState& s, int sig) {
  std::lock_guard lock(s.mu);
  if (s.exitcode || !s.started) return;
  int rc = s.pidfd >= 0 ? sys_pidfd_send_signal(s.pidfd, sig) : ::kill(s.pid, sig);
  if (rc != 0 && errno != ESRCH) {
    throw std::system_error(errno, std::generic_category(), "send signal to child");
  }
}

// Links a started child into the registry (g.mu held).
void register_child(Globals& g, const std::shared_ptr<ChildState>& s) {
  g.started_any.store(true, std::memory_order_release);
  s->self_ref = s;
  s->child_prev = nullptr;
  s->child_next = g.children;
  if (g.children) g.children->child_prev = s.get();
  g.children = s.get();
}

// Unlinks a child from the registry (g.mu held); returns the reference the
// registry held, to be dropped after g.mu is released.
std::shared_ptr<ChildState> unregister_child(Globals& g, ChildState* s) {
  if (!s->self_ref) return nullptr;
  if (s->child_prev)
    s->child_prev->child_next = s->child_next;
  else
    g.children = s->child_next;
  if (s->child_next) s->child_next->child_prev = s->child_prev;
  s->child_prev = s->child_next = nullptr;
  return std::move(s->self_ref);
}

// Reaps what has ended and unlinks it from the registry; returns the live
// children. This is CPython's _cleanup(), run by start() and
// active_children().
std::vector<std::shared_ptr<ChildState>> sweep_children() {
  Globals& g = globals();
  std::vector<std::shared_ptr<ChildState>> registered;
  {
    std::lock_guard lock(g.mu);
    if (!g.children) return {};
    for (ChildState* s = g.children; s; s = s->child_next) registered.push_back(s->self_ref);
  }
  std::vector<std::shared_ptr<ChildState>> alive, done;
  for (auto& c : registered) {
    bool closed;
    {
      std::lock_guard l(c->mu);
      closed = c->closed;
    }
    if (!closed && !reap(*c, false))
      alive.push_back(c);
    else
      done.push_back(c);
  }
  std::vector<std::shared_ptr<ChildState>> dropped;
  {
    std::lock_guard lock(g.mu);
    for (auto& c : done) dropped.push_back(unregister_child(g, c.get()));
  }
  return alive;
}

// CPython's _exit_function: terminate daemonic children, join the rest.
void finalize_children() {
  if (!globals().started_any.load(std::memory_order_acquire)) return;
  auto alive = sweep_children();
  for (auto& c : alive) {
    bool daemon;
    {
      std::lock_guard lock(c->mu);
      daemon = c->daemon;
    }
    if (daemon) send_signal(*c, SIGTERM);
  }
  for (auto& c : alive) reap(*c, true);
  sweep_children();
}

std::optional<Clock::time_point> deadline_from(
    std::optional<std::chrono::duration<double>> timeout) {
  return internal::deadline_after(timeout);  // the one conversion (internal/futex.h)
}

[[noreturn]] void throw_closed() { throw ValueError("process object is closed"); }

// Checks shared by every operation on a started child (CPython's asserts).
void check_child(const ChildState& s, const char* action) {
  if (s.closed) throw_closed();
  if (s.creator_pid != current_pid()) {
    throw RuntimeError(fmt::format("can only {} a child process", action));
  }
}

std::string signal_name(int sig) {
  switch (sig) {
    case SIGHUP:
      return "SIGHUP";
    case SIGINT:
      return "SIGINT";
    case SIGQUIT:
      return "SIGQUIT";
    case SIGILL:
      return "SIGILL";
    case SIGABRT:
      return "SIGABRT";
    case SIGBUS:
      return "SIGBUS";
    case SIGFPE:
      return "SIGFPE";
    case SIGKILL:
      return "SIGKILL";
    case SIGUSR1:
      return "SIGUSR1";
    case SIGSEGV:
      return "SIGSEGV";
    case SIGUSR2:
      return "SIGUSR2";
    case SIGPIPE:
      return "SIGPIPE";
    case SIGALRM:
      return "SIGALRM";
    case SIGTERM:
      return "SIGTERM";
    default:
      return std::to_string(sig);
  }
}

// class_name is a type's demangled name without its namespaces, as CPython's
// type(self).__name__: "app::(anonymous namespace)::Worker" -> "Worker".
std::string class_name(const std::type_info& t) {
  std::string type = internal::demangle(t.name());
  const auto pos = type.rfind("::", type.find('<'));
  return pos == std::string::npos ? type : type.substr(pos + 2);
}

// adopt_class_name gives a default-named process of a subclass CPython's
// "<ClassName>-N" instead of "Process-N". The name is made in Process's
// constructor, where the dynamic type is still mp::Process, so it is
// corrected on first use (name(), format(), start()); start() freezes it.
void adopt_class_name(ChildState& s, const std::type_info& t, bool freeze) {
  if (!s.default_name.load()) return;
  std::lock_guard lock(s.mu);
  if (!s.default_name.load()) return;
  if (freeze) s.default_name.store(false);
  if (t == typeid(Process)) return;
  // Every default name is "Process-<identity>" (top_name_prefix and each
  // child_prefix start so).
  constexpr std::string_view kDefault = "Process";
  if (s.name.starts_with("Process-")) s.name.replace(0, kDefault.size(), class_name(t));
}

}  // namespace

namespace internal {
ChildState::ChildState() : creator_pid(current_pid()) {
  Globals& g = globals();
  std::lock_guard lock(g.mu);
  all_next = g.all;
  if (g.all) g.all->all_prev = this;
  g.all = this;
}

ChildState::~ChildState() {
  Globals& g = globals();
  if (creator_pid == g.pid && pidfd >= 0) ::close(pidfd);
  if (creator_pid == g.pid && status_fd >= 0) ::close(status_fd);
  std::lock_guard lock(g.mu);
  if (all_prev)
    all_prev->all_next = all_next;
  else
    g.all = all_next;
  if (all_next) all_next->all_prev = all_prev;
}
}  // namespace internal

// ---------------------------------------------------------------- Process

namespace {
std::shared_ptr<ChildState> new_state() { return std::make_shared<ChildState>(); }
}  // namespace

Process::Process() : Process(ProcessOptions{}) {}

Process::Process(ProcessOptions options) : state_(new_state()) {
  Globals& g = globals();
  std::lock_guard lock(g.mu);
  int n = g.counter++;
  state_->number = n;
  if (options.name) {
    state_->name = std::move(*options.name);
  } else {
    state_->name = fmt::format("{}{}", *g.name_prefix, n);
    state_->default_name = true;
  }
  state_->daemon = options.daemon.value_or(g.daemonic);
  if (options.start_method) {
    start_method_ = static_cast<int>(internal::parse_start_method(*options.start_method));
  }
}

Process::Process(MainTag) : state_(new_state()) {
  state_->is_main = true;
  state_->name = "MainProcess";
  state_->started = true;
  state_->pid = current_pid();
}

Process::~Process() {
  // A started child outlives its object: the registry of children still
  // holds its state, so it is reaped (or joined at exit) all the same. A
  // child already reaped leaves the registry now, closing its pidfd.
  if (!state_ || state_->creator_pid != current_pid() || is_current()) return;
  bool reaped;
  {
    std::lock_guard lock(state_->mu);
    reaped = state_->exitcode.has_value();
  }
  if (!reaped) return;
  Globals& g = globals();
  std::shared_ptr<ChildState> dropped;
  std::lock_guard lock(g.mu);
  dropped = unregister_child(g, state_.get());
}

Process::Process(Process&& other) noexcept
    : target_(std::move(other.target_)),
      write_task_(std::move(other.write_task_)),
      start_method_(other.start_method_),
      write_self_(other.write_self_),
      state_(std::move(other.state_)) {}

Process& Process::operator=(Process&& other) noexcept {
  target_ = std::move(other.target_);
  state_ = std::move(other.state_);
  write_task_ = std::move(other.write_task_);
  start_method_ = other.start_method_;
  write_self_ = other.write_self_;
  return *this;
}

void Process::run() {
  if (target_) target_();
}

void Process::check_not_closed() const {
  if (!state_) throw ValueError("process object was moved from");
  if (state_->closed) throw_closed();
}

void Process::start() {
  check_not_closed();
  Globals& g = globals();
  ChildState& s = *state_;
  adopt_class_name(s, typeid(*this), /*freeze=*/true);
  if (s.is_main || this == g.current) throw RuntimeError("cannot start a process twice");
  {
    std::lock_guard lock(s.mu);
    if (s.started) throw RuntimeError("cannot start a process twice");
    if (s.creator_pid != current_pid()) {
      throw RuntimeError("can only start a process object created by current process");
    }
  }
  if (g.daemonic) throw RuntimeError("daemonic processes are not allowed to have children");
  if (internal::start_pending()) internal::refuse_start_while_pending("Process::start()");

  internal::fix_default_start_method();
  auto method = start_method_ >= 0 ? static_cast<internal::StartMethod>(start_method_)
                                   : internal::default_start_method();
  if (method != internal::StartMethod::kFork) {
    start_elsewhere(static_cast<int>(method));
    return;
  }

  sweep_children();
  internal::add_finalizer(finalize_children);

  int parent_pidfd;
  {
    std::lock_guard lock(g.mu);
    if (g.self_pidfd < 0) g.self_pidfd = sys_pidfd_open(g.pid);
    parent_pidfd = g.self_pidfd;
    g.forking_child = true;
  }

  // Everything the child needs is prepared here, so that the child writes
  // as few pages as possible (each costs a copy-on-write fault).
  // The strings the child needs are made here, in its ChildState, for it to
  // point at: a child that copied them would run memcpy, one more page of
  // libc to fault in.
  s.child_prefix = *g.name_prefix;
  s.child_prefix += std::to_string(s.number);
  s.child_prefix += ':';
  s.parent_name = current_process().name();  // also creates MainProcess here, not in each child
  pid_t pid;
  try {
    pid = mp::fork();
  } catch (...) {
    std::lock_guard lock(g.mu);
    g.forking_child = false;
    throw;
  }
  if (pid == 0) bootstrap_child(parent_pidfd);
  {
    std::lock_guard lock(g.mu);
    g.forking_child = false;
  }

  int fd = sys_pidfd_open(pid);
  {
    std::lock_guard lock(s.mu);
    s.started = true;
    s.pid = pid;
    s.pidfd = fd;  // -1 only if the kernel lacks pidfds: waitpid is used then
  }
  std::lock_guard lock(g.mu);
  register_child(g, state_);
}

void Process::start_elsewhere(int method_number) {
  auto method = static_cast<internal::StartMethod>(method_number);
  std::string_view method_name = internal::start_method_name(method);
  if (typeid(*this) != typeid(Process) && !write_self_) {
    const std::string type = internal::demangle(typeid(*this).name());
    throw ValueError(fmt::format(
        "a Process subclass ({}) starts with the {} start method only if it derives from "
        "mp::SpawnableProcess<{}> and names what its child gets in travel() (mp/process.h): the "
        "child is a new image that cannot rebuild an arbitrary object",
        type, method_name, type));
  }
  if (!write_self_ && !write_task_) {
    throw ValueError(fmt::format(
        "this Process's target cannot start with the {} start method: it must be a function or "
        "a lambda without captures, with arguments that mp/codec.h can encode (or mp's shared "
        "objects); a closure runs only in a fork of its creator",
        method_name));
  }
  Globals& g = globals();
  ChildState& s = *state_;
  sweep_children();
  internal::add_finalizer(finalize_children);

  internal::StartRequest request;
  std::vector<int> fds;
  {
    internal::TravelScope scope(fds);
    Encoder e(request.task);
    request.launcher = write_self_ ? write_self_(e, *this) : write_task_(e);
  }
  {
    std::lock_guard lock(g.mu);
    request.child_prefix = *g.name_prefix;
  }
  request.child_prefix += std::to_string(s.number);
  request.child_prefix += ':';
  request.name = s.name;
  request.parent_name = current_process().name();
  request.parent_pid = current_pid();
  request.daemon = s.daemon;
  request.number = s.number;
  request.default_method = internal::default_start_method();
  request.module_map = internal::module_map();

  internal::StartedChild child = internal::start_child(method, request, fds);
  {
    std::lock_guard lock(s.mu);
    s.started = true;
    s.pid = child.pid;
    s.pidfd = child.pidfd;
    s.status_fd = child.status_fd;
  }
  std::lock_guard lock(g.mu);
  register_child(g, state_);
}

void Process::bootstrap_child(int parent_pidfd) {
  Globals& g = globals();
  // The child has one thread until run() starts more, and g.mu was re-armed
  // at fork: no lock is taken (a lock would touch one more page).
  g.parent.name_ = &state_->parent_name;
  g.parent.pid_ = ::getppid();
  g.parent.pidfd_ = parent_pidfd;
  g.has_parent = true;
  g.name_prefix = &state_->child_prefix;
  g.counter = 1;
  g.current = this;
  g.daemonic = state_->daemon;
  run_and_exit();
}

void Process::run_and_exit() {
  int code = 0;
  try {
    run();
  } catch (...) {
    code = 1;
    internal::flush_stdio();
    const internal::CaughtException caught = internal::describe_caught_exception();
    const std::string type = caught.type.empty() ? "unknown" : caught.type;
    std::string text =
        caught.standard ? fmt::format("Process {}:\n{}: {}\n", name(), type, caught.what)
                        : fmt::format("Process {}:\nuncaught exception of type {}\n", name(), type);
    std::fputs(text.c_str(), stderr);
  }
  internal::flush_stdio();
  internal::finalize_process();
  internal::flush_stdio();
  ::_exit(code);
}

void Process::join(std::optional<std::chrono::duration<double>> timeout) {
  check_not_closed();
  ChildState& s = *state_;
  if (is_current()) throw RuntimeError("can only join a child process");
  check_child(s, "join");
  {
    std::lock_guard lock(s.mu);
    if (!s.started) throw RuntimeError("can only join a started process");
  }
  reap(s, true, deadline_from(timeout));
}

bool Process::is_alive() {
  check_not_closed();
  ChildState& s = *state_;
  if (is_current()) return true;
  check_child(s, "test");
  {
    std::lock_guard lock(s.mu);
    if (!s.started) return false;
  }
  return !reap(s, false).has_value();
}

void Process::terminate() {
  check_not_closed();
  check_child(*state_, "terminate");
  send_signal(*state_, SIGTERM);
}

void Process::kill() {
  check_not_closed();
  check_child(*state_, "kill");
  send_signal(*state_, SIGKILL);
}

void Process::close() {
  if (!state_) throw ValueError("process object was moved from");
  ChildState& s = *state_;
  if (s.closed) return;
  if (s.started && !is_current() && s.creator_pid == current_pid()) {
    if (!reap(s, false)) {
      throw ValueError(
          "Cannot close a process while it is still running. "
          "You should first call join() or terminate().");
    }
  }
  {
    std::lock_guard lock(s.mu);
    if (s.pidfd >= 0) ::close(s.pidfd);
    s.pidfd = -1;
    s.closed = true;
  }
  Globals& g = globals();
  std::shared_ptr<ChildState> dropped;
  std::lock_guard lock(g.mu);
  dropped = unregister_child(g, state_.get());
}

const std::string& Process::name() const {
  if (!state_) throw ValueError("process object was moved from");
  adopt_class_name(*state_, typeid(*this), /*freeze=*/false);
  return state_->name;
}

void Process::set_name(std::string name) {
  check_not_closed();
  std::lock_guard lock(state_->mu);
  state_->name = std::move(name);
  state_->default_name = false;
}

bool Process::daemon() const {
  check_not_closed();
  return state_->daemon;
}

void Process::set_daemon(bool daemon) {
  check_not_closed();
  std::lock_guard lock(state_->mu);
  if (state_->started) throw RuntimeError("process has already started");
  state_->daemon = daemon;
}

std::optional<pid_t> Process::pid() const {
  check_not_closed();
  if (is_current()) return current_pid();
  std::lock_guard lock(state_->mu);
  if (!state_->started) return std::nullopt;
  return state_->pid;
}

std::optional<int> Process::exitcode() {
  check_not_closed();
  ChildState& s = *state_;
  if (is_current() || s.creator_pid != current_pid()) return std::nullopt;
  return reap(s, false);
}

bool Process::is_current() const { return state_->is_main || this == globals().current; }

int Process::sentinel() const {
  check_not_closed();
  check_child(*state_, "wait for");
  std::lock_guard lock(state_->mu);
  if (!state_->started || state_->is_main) throw RuntimeError("process not started");
  if (state_->pidfd < 0) throw RuntimeError("process sentinel is not available");
  return state_->pidfd;
}

std::string Process::format() const {
  if (!state_) return "<Process moved-from>";
  ChildState& s = *state_;
  adopt_class_name(s, typeid(*this), /*freeze=*/false);
  const std::string type = class_name(typeid(*this));
  if (s.is_main) return fmt::format("<_MainProcess name='{}' parent=None started>", s.name);

  std::optional<int> code;
  std::string status;
  if (this == globals().current) {
    status = "started";
  } else if (s.closed) {
    status = "closed";
  } else if (s.creator_pid != current_pid()) {
    status = "unknown";
  } else if (!s.started) {
    status = "initial";
  } else {
    code = reap(s, false);
    status = code ? "stopped" : "started";
  }
  std::string out = fmt::format("<{} name='{}'", type, s.name);
  if (s.started) out += fmt::format(" pid={}", s.pid);
  out += fmt::format(" parent={} {}", s.creator_pid, status);
  // CPython: "exitcode=-SIGTERM" for a known signal, "exitcode=-N" else.
  if (code)
    out +=
        fmt::format(" exitcode={}", *code < 0 ? "-" + signal_name(-*code) : std::to_string(*code));
  if (s.daemon) out += " daemon";
  return out + ">";
}

// ------------------------------------------------------------ ChildProcess

const std::string& ChildProcess::name() const { return state_->name; }
pid_t ChildProcess::pid() const { return state_->pid; }
bool ChildProcess::daemon() const { return state_->daemon; }

bool ChildProcess::is_alive() const {
  check_child(*state_, "test");
  return !reap(*state_, false).has_value();
}

std::optional<int> ChildProcess::exitcode() const {
  check_child(*state_, "test");
  return reap(*state_, false);
}

void ChildProcess::join(std::optional<std::chrono::duration<double>> timeout) const {
  check_child(*state_, "join");
  reap(*state_, true, deadline_from(timeout));
}

void ChildProcess::terminate() const {
  check_child(*state_, "terminate");
  send_signal(*state_, SIGTERM);
}

void ChildProcess::kill() const {
  check_child(*state_, "kill");
  send_signal(*state_, SIGKILL);
}

int ChildProcess::sentinel() const {
  check_child(*state_, "wait for");
  std::lock_guard lock(state_->mu);
  return state_->pidfd;
}

// ------------------------------------------------------------ free functions

bool ParentProcess::is_alive() const {
  if (pidfd_ < 0) return ::kill(pid_, 0) == 0 && ::getppid() == pid_;
  struct pollfd pfd {
    pidfd_, POLLIN, 0
  };
  int rc;
  do {
    rc = ::poll(&pfd, 1, 0);
  } while (rc < 0 && errno == EINTR);
  return rc == 0;
}

Process& current_process() {
  Globals& g = globals();
  if (g.current) return *g.current;
  static Process* main_process = new Process(Process::MainTag{});
  return *main_process;
}

const ParentProcess* parent_process() {
  Globals& g = globals();
  return g.has_parent ? &g.parent : nullptr;
}

std::vector<ChildProcess> active_children() {
  std::vector<ChildProcess> out;
  for (auto& s : sweep_children()) out.push_back(ChildProcess(s));
  return out;
}

// --------------------------------------------- a spawn or forkserver child

void internal::run_started_child(const StartRequest& request, std::vector<int>& fds, int channel) {
  std::function<void()> task;
  try {
    use_parent_map(request.module_map);
    auto launcher =
        relocate(reinterpret_cast<Launcher>(static_cast<std::uintptr_t>(request.launcher)));
    TravelScope scope(fds);
    Decoder d(request.task);
    task = launcher(d);
    d.expect_end();
  } catch (const std::exception& e) {
    send_reply(
        channel, false,
        fmt::format("mp: the child '{}' could not rebuild its task: {}", request.name, e.what()));
    ::_exit(1);
  }
  for (int fd : fds) ::close(fd);
  fds.clear();

  Globals& g = globals();
  auto* self = new Process(ProcessOptions{request.name, request.daemon, std::nullopt});
  self->state_->number = request.number;
  self->state_->started = true;
  self->state_->pid = current_pid();
  self->target_ = std::move(task);
  auto* parent_name = new std::string(request.parent_name);
  auto* prefix = new std::string(request.child_prefix);
  {
    std::lock_guard lock(g.mu);
    g.parent.name_ = parent_name;
    g.parent.pid_ = request.parent_pid;
    g.parent.pidfd_ = sys_pidfd_open(request.parent_pid);
    g.has_parent = true;
    g.name_prefix = prefix;
    g.counter = 1;
    g.daemonic = request.daemon;
  }
  g.current = self;
  internal::set_default_start_method(request.default_method, true);
  send_reply(channel, true, "running");
  ::close(channel);
  self->run_and_exit();
}

}  // namespace mp
