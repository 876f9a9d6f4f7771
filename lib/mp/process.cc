#include "mp/process.h"

#include <cxxabi.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <system_error>
#include <typeinfo>

#include "mp/errors.h"
#include "mp/internal/lifecycle.h"
#include "mp/os.h"

namespace mp {
namespace internal {

// ChildState is the shared state of one Process: what its handles
// (Process, ChildProcess, the registry of children) agree on.
struct ChildState {
  ~ChildState();

  const pid_t creator_pid = ::getpid();  // the process that made the object
  bool is_main = false;                  // the MainProcess object
  int number = 0;                        // N of Process-...:N (CPython's _identity)

  std::mutex mu;  // guards everything below
  std::string name;
  bool daemon = false;
  bool started = false;
  bool closed = false;
  pid_t pid = 0;
  int pidfd = -1;
  std::optional<int> exitcode;
};

}  // namespace internal

namespace {

using internal::ChildState;
using Clock = std::chrono::steady_clock;

int sys_pidfd_open(pid_t pid) {
  return static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
}

int sys_pidfd_send_signal(int pidfd, int sig) {
  return static_cast<int>(syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

// Globals is the per-process state of the process module. After fork the
// child re-arms it (see the atfork handlers below).
struct Globals {
  std::mutex mu;                                   // guards the fields below
  std::vector<int> identity;                       // empty in the main program
  int counter = 1;                                 // next Process-N number
  Process* current = nullptr;                      // null: the MainProcess object
  bool daemonic = false;                           // this process is a daemon child
  std::vector<std::shared_ptr<ChildState>> children;  // started, maybe unreaped
  std::vector<ChildState*> all_states;             // every live ChildState
  int self_pidfd = -1;                             // inherited by children
  bool forking_child = false;                      // Process::start is forking
  ParentProcess* parent = nullptr;                 // set in mp children
};

void finalize_children();

Globals& globals() {
  // Leaked on purpose: used by finalizers at exit and by atfork handlers.
  static Globals* g = [] {
    auto* p = new Globals;
    pthread_atfork(
        [] { globals().mu.lock(); },
        [] { globals().mu.unlock(); },
        [] {
          // The child has one thread and none of the parent's children.
          Globals& self = globals();
          new (&self.mu) std::mutex;
          for (ChildState* s : self.all_states) {
            new (&s->mu) std::mutex;
            if (s->pidfd >= 0) ::close(s->pidfd);
            s->pidfd = -1;
          }
          self.children.clear();
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

std::string demangle(const char* mangled) {
  int status = 0;
  char* out = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string name = (status == 0 && out) ? out : mangled;
  std::free(out);
  return name;
}

// Waits until the child's pidfd is readable or the deadline passes.
// Returns true when the child has ended.
bool wait_readable(int fd, std::optional<Clock::time_point> deadline) {
  for (;;) {
    struct pollfd pfd {fd, POLLIN, 0};
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
  int fd;
  {
    std::lock_guard lock(s.mu);
    if (s.exitcode || !s.started || s.pid <= 0) return s.exitcode;
    fd = s.pidfd;
  }
  if (fd >= 0) {
    bool ended = wait_readable(fd, block ? deadline : std::optional<Clock::time_point>(Clock::now()));
    if (!ended) return std::nullopt;
  }
  std::lock_guard lock(s.mu);
  if (s.exitcode) return s.exitcode;
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

// Removes reaped children from the registry; returns the live ones. This is
// CPython's _cleanup(), run by start() and active_children().
std::vector<std::shared_ptr<ChildState>> sweep_children() {
  Globals& g = globals();
  std::vector<std::shared_ptr<ChildState>> snapshot;
  {
    std::lock_guard lock(g.mu);
    snapshot = g.children;
  }
  std::vector<std::shared_ptr<ChildState>> alive;
  for (auto& c : snapshot) {
    if (!reap(*c, false)) alive.push_back(c);
  }
  std::lock_guard lock(g.mu);
  std::erase_if(g.children, [](const std::shared_ptr<ChildState>& c) {
    std::lock_guard l(c->mu);
    return c->exitcode.has_value() || c->closed;
  });
  return alive;
}

// CPython's _exit_function: terminate daemonic children, join the rest.
void finalize_children() {
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
  if (!timeout) return std::nullopt;
  double secs = std::max(0.0, timeout->count());
  if (secs > 1e9) return std::nullopt;  // effectively forever
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(secs));
}

[[noreturn]] void throw_closed() { throw ValueError("process object is closed"); }

// Checks shared by every operation on a started child (CPython's asserts).
void check_child(const ChildState& s, const char* action) {
  if (s.closed) throw_closed();
  if (s.creator_pid != ::getpid()) {
    throw RuntimeError(fmt::format("can only {} a child process", action));
  }
}

std::string signal_name(int sig) {
  switch (sig) {
    case SIGHUP: return "SIGHUP";
    case SIGINT: return "SIGINT";
    case SIGQUIT: return "SIGQUIT";
    case SIGILL: return "SIGILL";
    case SIGABRT: return "SIGABRT";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGKILL: return "SIGKILL";
    case SIGUSR1: return "SIGUSR1";
    case SIGSEGV: return "SIGSEGV";
    case SIGUSR2: return "SIGUSR2";
    case SIGPIPE: return "SIGPIPE";
    case SIGALRM: return "SIGALRM";
    case SIGTERM: return "SIGTERM";
    default: return fmt::format("-{}", sig);
  }
}

}  // namespace

namespace internal {
ChildState::~ChildState() {
  if (pidfd >= 0) ::close(pidfd);
  Globals& g = globals();
  std::lock_guard lock(g.mu);
  std::erase(g.all_states, this);
}
}  // namespace internal

// ---------------------------------------------------------------- Process

namespace {
std::shared_ptr<ChildState> new_state() {
  auto s = std::make_shared<ChildState>();
  Globals& g = globals();
  std::lock_guard lock(g.mu);
  g.all_states.push_back(s.get());
  return s;
}
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
    std::string name = "Process-";
    for (int id : g.identity) name += fmt::format("{}:", id);
    name += fmt::format("{}", n);
    state_->name = std::move(name);
  }
  state_->daemon = options.daemon.value_or(g.daemonic);
}

Process::Process(MainTag) : state_(new_state()) {
  state_->is_main = true;
  state_->name = "MainProcess";
  state_->started = true;
  state_->pid = ::getpid();
}

Process::~Process() {
  // A started child outlives its object: the registry of children still
  // holds its state, so it is reaped (or joined at exit) all the same.
}

Process::Process(Process&& other) noexcept
    : target_(std::move(other.target_)), state_(std::move(other.state_)) {}

Process& Process::operator=(Process&& other) noexcept {
  target_ = std::move(other.target_);
  state_ = std::move(other.state_);
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
  if (s.is_main || this == g.current) throw RuntimeError("cannot start a process twice");
  {
    std::lock_guard lock(s.mu);
    if (s.started) throw RuntimeError("cannot start a process twice");
    if (s.creator_pid != ::getpid()) {
      throw RuntimeError("can only start a process object created by current process");
    }
  }
  if (g.daemonic) throw RuntimeError("daemonic processes are not allowed to have children");

  sweep_children();
  internal::add_finalizer(finalize_children);

  int parent_pidfd;
  {
    std::lock_guard lock(g.mu);
    if (g.self_pidfd < 0) g.self_pidfd = sys_pidfd_open(::getpid());
    parent_pidfd = g.self_pidfd;
    g.forking_child = true;
  }

  pid_t pid;
  try {
    pid = mp::fork();
  } catch (...) {
    std::lock_guard lock(g.mu);
    g.forking_child = false;
    throw;
  }
  if (pid == 0) bootstrap_child(parent_pidfd, s.number);
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
  g.children.push_back(state_);
}

void Process::bootstrap_child(int parent_pidfd, int identity_number) {
  Globals& g = globals();
  static ParentProcess parent;  // one per process image; set once here
  std::string parent_name = current_process().name();
  {
    std::lock_guard lock(g.mu);
    parent.name_ = parent_name;
    parent.pid_ = ::getppid();
    parent.pidfd_ = parent_pidfd;
    g.parent = &parent;
    g.identity.push_back(identity_number);
    g.counter = 1;
    g.current = this;
    g.daemonic = state_->daemon;
  }
  {
    std::lock_guard lock(state_->mu);
    state_->started = true;
    state_->pid = ::getpid();
  }

  int code = 0;
  try {
    run();
  } catch (const std::exception& e) {
    code = 1;
    internal::flush_stdio();
    auto* type = abi::__cxa_current_exception_type();
    std::string text = fmt::format("Process {}:\n{}: {}\n", name(),
                                   type ? demangle(type->name()) : "exception", e.what());
    std::fputs(text.c_str(), stderr);
  } catch (...) {
    code = 1;
    internal::flush_stdio();
    auto* type = abi::__cxa_current_exception_type();
    std::string text = fmt::format("Process {}:\nuncaught exception of type {}\n", name(),
                                   type ? demangle(type->name()) : "unknown");
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
  if (s.is_main || this == globals().current) throw RuntimeError("cannot join current process");
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
  if (s.is_main || this == globals().current) return true;
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
  if (s.started && !s.is_main && this != globals().current && s.creator_pid == ::getpid()) {
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
  std::lock_guard lock(g.mu);
  std::erase(g.children, state_);
}

const std::string& Process::name() const {
  if (!state_) throw ValueError("process object was moved from");
  return state_->name;
}

void Process::set_name(std::string name) {
  check_not_closed();
  std::lock_guard lock(state_->mu);
  state_->name = std::move(name);
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
  if (state_->is_main) return ::getpid();
  std::lock_guard lock(state_->mu);
  if (!state_->started) return std::nullopt;
  return state_->pid;
}

std::optional<int> Process::exitcode() {
  check_not_closed();
  ChildState& s = *state_;
  if (s.is_main || this == globals().current || s.creator_pid != ::getpid()) return std::nullopt;
  return reap(s, false);
}

int Process::sentinel() const {
  check_not_closed();
  std::lock_guard lock(state_->mu);
  if (!state_->started || state_->is_main) throw RuntimeError("process not started");
  if (state_->pidfd < 0) throw RuntimeError("process sentinel is not available");
  return state_->pidfd;
}

std::string Process::format() const {
  if (!state_) return "<Process moved-from>";
  ChildState& s = *state_;
  std::string type = demangle(typeid(*this).name());
  if (auto pos = type.rfind("::"); pos != std::string::npos) type = type.substr(pos + 2);
  if (s.is_main) return fmt::format("<_MainProcess name='{}' parent=None started>", s.name);

  std::optional<int> code;
  std::string status;
  if (this == globals().current) {
    status = "started";
  } else if (s.closed) {
    status = "closed";
  } else if (s.creator_pid != ::getpid()) {
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
  if (code) out += fmt::format(" exitcode={}", *code < 0 ? signal_name(-*code) : std::to_string(*code));
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
  struct pollfd pfd {pidfd_, POLLIN, 0};
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

const ParentProcess* parent_process() { return globals().parent; }

std::vector<ChildProcess> active_children() {
  std::vector<ChildProcess> out;
  for (auto& s : sweep_children()) out.push_back(ChildProcess(s));
  return out;
}

}  // namespace mp
