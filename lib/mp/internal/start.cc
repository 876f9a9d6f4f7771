#include "mp/internal/start.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <system_error>

#include "mp/context.h"
#include "mp/errors.h"
#include "mp/internal/lifecycle.h"
#include "mp/internal/modules.h"
#include "mp/os.h"

extern char** environ;

namespace mp::internal {

namespace {

using Clock = std::chrono::steady_clock;

// How long a parent waits for a new child's answer. A spawned child pays
// exec, the dynamic loader and the program's static constructors first.
constexpr std::chrono::seconds kAnswerTimeout{60};

int sys_pidfd_open(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

[[noreturn]] void throw_errno(const char* what) {
  throw std::system_error(errno, std::generic_category(), what);
}

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  int get() const noexcept { return fd_; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// ---------------------------------------------------------------- framing
//
// A frame: u64 length, u32 fd count (the fds ride with these 12 bytes as
// SCM_RIGHTS), then `length` bytes.

constexpr std::size_t kMaxFds = 250;  // below the kernel's SCM_MAX_FD (253)

bool write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

// send_frame: false when the peer is gone (EPIPE, ECONNRESET).
bool send_frame(int sock, std::string_view bytes, const std::vector<int>& fds) {
  if (fds.size() > kMaxFds) {
    throw ValueError(
        fmt::format("a child's task carries {} objects that own file descriptors; at "
                    "most {} can travel in one start",
                    fds.size(), kMaxFds));
  }
  char head[12];
  std::uint64_t len = bytes.size();
  std::uint32_t nfds = static_cast<std::uint32_t>(fds.size());
  std::memcpy(head, &len, 8);
  std::memcpy(head + 8, &nfds, 4);
  iovec iov{head, sizeof head};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control;
  if (!fds.empty()) {
    control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t w;
  do {
    w = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
  } while (w < 0 && errno == EINTR);
  if (w < 0) return false;
  if (static_cast<std::size_t>(w) < sizeof head &&
      !write_all(sock, head + w, sizeof head - static_cast<std::size_t>(w))) {
    return false;
  }
  return write_all(sock, bytes.data(), bytes.size());
}

// wait_readable: poll `fd` until readable, or the deadline; false on timeout.
bool wait_readable(int fd, std::optional<Clock::time_point> deadline) {
  for (;;) {
    int ms = -1;
    if (deadline) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - Clock::now());
      ms = left.count() < 0 ? 0 : static_cast<int>(std::min<long long>(left.count(), 1 << 30));
    }
    pollfd p{fd, POLLIN, 0};
    int rc = ::poll(&p, 1, ms);
    if (rc > 0) return true;
    if (rc == 0) return false;
    if (errno != EINTR) throw_errno("poll a start channel");
  }
}

enum class RecvStatus { kOk, kEof, kTimedOut };

bool read_all(int fd, char* p, std::size_t n, std::optional<Clock::time_point> deadline,
              RecvStatus& st) {
  while (n > 0) {
    if (!wait_readable(fd, deadline)) {
      st = RecvStatus::kTimedOut;
      return false;
    }
    ssize_t r = ::read(fd, p, n);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      st = RecvStatus::kEof;  // ECONNRESET: the peer died
      return false;
    }
    if (r == 0) {
      st = RecvStatus::kEof;
      return false;
    }
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

// recv_frame reads one frame; received fds are appended to `fds` (owned by
// the caller, close-on-exec).
RecvStatus recv_frame(int sock, std::string& bytes, std::vector<int>& fds,
                      std::optional<Clock::time_point> deadline = std::nullopt) {
  char head[12];
  std::size_t got = 0;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * kMaxFds));
  while (got < sizeof head) {
    if (!wait_readable(sock, deadline)) return RecvStatus::kTimedOut;
    iovec iov{head + got, sizeof head - got};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    ssize_t r = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return RecvStatus::kEof;
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        std::size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const auto* data = reinterpret_cast<const int*>(CMSG_DATA(c));
        for (std::size_t i = 0; i < n; ++i) fds.push_back(data[i]);
      }
    }
    if (r == 0) return RecvStatus::kEof;
    got += static_cast<std::size_t>(r);
  }
  std::uint64_t len;
  std::uint32_t nfds;
  std::memcpy(&len, head, 8);
  std::memcpy(&nfds, head + 8, 4);
  if (nfds != fds.size() && fds.size() < nfds) {
    throw ProcessError(
        fmt::format("mp: a start frame announced {} fds and carried {}", nfds, fds.size()));
  }
  if (len > (std::uint64_t{1} << 40)) {
    throw ProcessError(fmt::format("mp: a start frame of {} bytes is corrupt", len));
  }
  bytes.resize(static_cast<std::size_t>(len));
  RecvStatus st = RecvStatus::kOk;
  if (!read_all(sock, bytes.data(), bytes.size(), deadline, st)) return st;
  return RecvStatus::kOk;
}

void close_all(std::vector<int>& fds) noexcept {
  for (int fd : fds) ::close(fd);
  fds.clear();
}

// -------------------------------------------------------- the default method

std::atomic<StartMethod> g_default{StartMethod::kFork};
std::atomic<bool> g_default_set{false};

// ------------------------------------------------ this image's start (MP_START)

enum class Pending : int { kNone, kSpawn, kForkserver };
Pending g_pending = Pending::kNone;
int g_pending_fd = -1;

void report_missing_entry_at_exit() {
  if (g_pending == Pending::kNone) return;
  refuse_start_while_pending("the end of main()");
}

// Runs when this library is loaded, before main(): a process started by
// spawn or forkserver learns it here, and takes MP_START out of its
// environment so that nothing it starts inherits it.
__attribute__((constructor)) void read_start_environment() {
  const char* v = std::getenv("MP_START");
  if (!v) return;
  std::string value = v;
  ::unsetenv("MP_START");
  auto colon = value.find(':');
  if (colon == std::string::npos) return;
  std::string mode = value.substr(0, colon);
  int fd = std::atoi(value.c_str() + colon + 1);
  struct stat st {};
  // Only mp's start channel: a socket at the fd named.
  if (fd < 0 || ::fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) return;
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  if (mode == "spawn")
    g_pending = Pending::kSpawn;
  else if (mode == "forkserver")
    g_pending = Pending::kForkserver;
  else
    return;
  g_pending_fd = fd;
  std::atexit(report_missing_entry_at_exit);
}

// The parent's argv, for a spawned image (its main() runs until
// freeze_support()).
const std::vector<std::string>& own_argv() {
  static const std::vector<std::string>* args = [] {
    auto* out = new std::vector<std::string>;
    std::ifstream in("/proc/self/cmdline", std::ios::binary);
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::size_t pos = 0;
    while (pos < all.size()) {
      auto end = all.find('\0', pos);
      if (end == std::string::npos) end = all.size();
      out->push_back(all.substr(pos, end - pos));
      pos = end + 1;
    }
    if (out->empty()) out->push_back("mp-child");
    return out;
  }();
  return *args;
}

// spawn_image starts /proc/self/exe with MP_START=<mode>:<fd>, the child's
// end of a new socket pair at <fd>. Returns the pid; `parent_end` gets the
// parent's end.
pid_t spawn_image(const char* mode, Fd& parent_end) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) throw_errno("socketpair");
  Fd mine(sv[0]), theirs(sv[1]);
  constexpr int kChildFd = 3;

  std::vector<std::string> env_store;
  std::vector<char*> envp;
  for (char** e = environ; e && *e; ++e) {
    if (std::strncmp(*e, "MP_START=", 9) == 0) continue;
    envp.push_back(*e);
  }
  env_store.push_back(fmt::format("MP_START={}:{}", mode, kChildFd));
  envp.push_back(env_store.back().data());
  envp.push_back(nullptr);
  const auto& args = own_argv();
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  int src = theirs.get();
  Fd moved;
  if (src == kChildFd) {  // dup2 onto itself would keep close-on-exec
    moved = Fd(::fcntl(src, F_DUPFD_CLOEXEC, 10));
    src = moved.get();
  }
  posix_spawn_file_actions_adddup2(&fa, src, kChildFd);
  posix_spawn_file_actions_addclosefrom_np(&fa, kChildFd + 1);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // The child starts with default signal dispositions for what the parent
  // caught, and an empty signal mask.
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  flush_stdio();
  pid_t pid = 0;
  int rc = ::posix_spawn(&pid, "/proc/self/exe", &fa, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    errno = rc;
    throw_errno("posix_spawn /proc/self/exe");
  }
  parent_end = std::move(mine);
  return pid;
}

int decode_status(const std::string& bytes, std::string& message) {
  Decoder d(bytes);
  bool ok = d.read<bool>();
  message = d.read<std::string>();
  return ok ? 1 : 0;
}

// await_answer waits for a new child's answer. `ended` tells whether the
// child has ended (for the message). Raises ProcessError on a refusal,
// an early end, or no answer in time.
void await_answer(int channel, const std::function<std::string()>& ended_how) {
  std::string bytes;
  std::vector<int> fds;
  RecvStatus st = recv_frame(channel, bytes, fds, Clock::now() + kAnswerTimeout);
  close_all(fds);
  if (st == RecvStatus::kOk) {
    std::string message;
    if (decode_status(bytes, message)) return;
    throw ProcessError(message);
  }
  if (st == RecvStatus::kTimedOut) {
    throw ProcessError(fmt::format(
        "mp: a new child did not answer within {} s (it never reached mp::freeze_support(): "
        "call it at the top of main())",
        kAnswerTimeout.count()));
  }
  throw ProcessError(
      fmt::format("mp: a new child ended before running its task ({})", ended_how()));
}

// ---------------------------------------------------------------- forkserver

struct Server {
  std::mutex mu;  // one request at a time
  pid_t pid = 0;
  int pidfd = -1;
  int control = -1;
  pid_t owner = 0;  // the process that started it
};

Server& server() {
  static Server* s = new Server;  // leaked: used by finalizers
  return *s;
}

void forget_server_locked(Server& s, bool reap) {
  if (s.control >= 0) ::close(s.control);
  if (reap && s.pid > 0) {
    int status;
    while (::waitpid(s.pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  if (s.pidfd >= 0) ::close(s.pidfd);
  s.control = s.pidfd = -1;
  s.pid = 0;
}

bool server_alive_locked(Server& s) {
  if (s.pid <= 0 || s.owner != ::getpid()) return false;
  pollfd p{s.pidfd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 0;
}

void stop_forkserver() {
  Server& s = server();
  std::lock_guard lock(s.mu);
  if (s.pid <= 0 || s.owner != ::getpid()) return;
  // Closing the control socket ends the server's loop; it exits once its
  // remaining children are dealt with.
  ::shutdown(s.control, SHUT_RDWR);
  pollfd p{s.pidfd, POLLIN, 0};
  if (::poll(&p, 1, 10'000) == 0) ::syscall(SYS_pidfd_send_signal, s.pidfd, SIGKILL, nullptr, 0);
  forget_server_locked(s, true);
}

void start_server_locked(Server& s) {
  if (s.owner != ::getpid()) {
    // Inherited through a fork: the server is our parent's, not ours.
    s.pid = 0;
    s.pidfd = s.control = -1;
  } else if (s.pid > 0) {
    forget_server_locked(s, true);  // it died: reap it, start another
  }
  Fd control;
  pid_t pid = spawn_image("forkserver", control);
  Fd pidfd(sys_pidfd_open(pid));
  // The server says it is ready once it has reached freeze_support().
  try {
    await_answer(control.get(), [] { return std::string("the forkserver died"); });
  } catch (...) {
    ::kill(pid, SIGKILL);
    int status;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    throw;
  }
  s.pid = pid;
  s.pidfd = pidfd.release();
  s.control = control.release();
  s.owner = ::getpid();
  add_finalizer(stop_forkserver, FinalizerPhase::kServers);
}

StartedChild start_forkserver_child(const std::string& request, const std::vector<int>& fds) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) throw_errno("socketpair");
  Fd mine(sv[0]), theirs(sv[1]);
  std::vector<int> all{theirs.get()};
  all.insert(all.end(), fds.begin(), fds.end());

  Server& s = server();
  std::string reply;
  std::vector<int> got;
  {
    std::lock_guard lock(s.mu);
    for (int attempt = 0;; ++attempt) {
      if (!server_alive_locked(s)) start_server_locked(s);
      if (send_frame(s.control, request, all)) {
        RecvStatus st = recv_frame(s.control, reply, got, Clock::now() + kAnswerTimeout);
        if (st == RecvStatus::kOk) break;
        close_all(got);
        if (st == RecvStatus::kTimedOut) {
          // A server that neither answers nor dies (stopped, say): replace it.
          ::syscall(SYS_pidfd_send_signal, s.pidfd, SIGKILL, nullptr, 0);
          forget_server_locked(s, true);
        }
      }
      // The server died under us (SIGKILL): start a new one, once.
      if (attempt > 0) throw ProcessError("mp: the forkserver died twice while starting a child");
    }
  }
  theirs.reset();
  Decoder d(reply);
  auto pid = static_cast<pid_t>(d.read<std::int32_t>());
  std::string error = d.read<std::string>();
  if (pid <= 0) {
    close_all(got);
    throw ProcessError(fmt::format("mp: the forkserver could not fork: {}", error));
  }
  if (got.size() != 2) {
    close_all(got);
    throw ProcessError("mp: the forkserver's reply carried no pidfd and status pipe");
  }
  StartedChild child{pid, got[0], got[1]};
  try {
    await_answer(mine.get(), [&] {
      int status = 0;
      ssize_t r = ::read(child.status_fd, &status, sizeof status);
      return r == sizeof status ? fmt::format("exit code {}", exitcode_from_wait_status(status))
                                : std::string("exit code unknown");
    });
  } catch (...) {
    // Nothing keeps running: a child that did not answer in time is killed
    // (the server reaps it).
    ::syscall(SYS_pidfd_send_signal, child.pidfd, SIGKILL, nullptr, 0);
    ::close(child.pidfd);
    ::close(child.status_fd);
    throw;
  }
  return child;
}

StartedChild start_spawned_child(const std::string& request, const std::vector<int>& fds) {
  Fd channel;
  pid_t pid = spawn_image("spawn", channel);
  Fd pidfd(sys_pidfd_open(pid));
  send_frame(channel.get(), request, fds);  // a child that died is seen below
  try {
    await_answer(channel.get(), [&] {
      int status = 0;
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      pid = 0;
      return fmt::format("exit code {}", exitcode_from_wait_status(status));
    });
  } catch (...) {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      int status;
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
    }
    throw;
  }
  return StartedChild{pid, pidfd.release(), -1};
}

// ------------------------------------------------------ the server's loop

struct ServedChild {
  int status_w = -1;
  bool daemon = false;
};

// The server keeps one child forked ahead, waiting for a task (a "spare"),
// so that a start does not wait for a fork: the request goes to the spare,
// and the next spare is forked after the reply, while the parent goes on.
struct Spare {
  pid_t pid = 0;
  int sock = -1;   // the server's end; the spare reads its request here
  int pidfd = -1;  // opened before any reap, so the pid cannot be reused
};

class ServerLoop {
 public:
  explicit ServerLoop(int control) : control_(control) {}
  [[noreturn]] void run();

 private:
  void reap();
  void make_spare();
  void drop_spare(bool kill);
  [[noreturn]] void become_spare(int sock);
  void serve(std::string& bytes, std::vector<int>& fds);
  [[noreturn]] void shut_down();

  int control_;
  int sfd_ = -1;        // SIGCHLD, as a signalfd
  int parent_fd_ = -1;  // a pidfd of the parent
  sigset_t chld_{};
  std::map<pid_t, ServedChild> children_;
  Spare spare_;
};

void ServerLoop::reap() {
  for (;;) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    if (pid == spare_.pid) {  // killed while waiting for a task
      drop_spare(false);
      continue;
    }
    auto it = children_.find(pid);
    if (it == children_.end()) continue;
    ssize_t w;
    do {
      w = ::write(it->second.status_w, &status, sizeof status);
    } while (w < 0 && errno == EINTR);
    ::close(it->second.status_w);
    children_.erase(it);
  }
}

void ServerLoop::drop_spare(bool kill) {
  // A killed spare is reaped later by reap(), as an unknown child.
  if (kill && spare_.pid > 0) ::kill(spare_.pid, SIGKILL);
  if (spare_.sock >= 0) ::close(spare_.sock);
  if (spare_.pidfd >= 0) ::close(spare_.pidfd);
  spare_ = Spare{};
}

void ServerLoop::make_spare() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return;
  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(sv[0]);
    ::close(sv[1]);
    return;
  }
  if (pid == 0) {
    ::close(sv[0]);
    become_spare(sv[1]);
  }
  ::close(sv[1]);
  spare_ = Spare{pid, sv[0], sys_pidfd_open(pid)};
}

void ServerLoop::become_spare(int sock) {
  ::close(control_);
  ::close(sfd_);
  ::close(parent_fd_);
  for (auto& [_, c] : children_) ::close(c.status_w);
  ::sigprocmask(SIG_UNBLOCK, &chld_, nullptr);
  ::signal(SIGINT, SIG_DFL);
  ::signal(SIGPIPE, SIG_DFL);
  std::string bytes;
  std::vector<int> fds;
  RecvStatus st = RecvStatus::kEof;
  try {
    st = recv_frame(sock, bytes, fds);
  } catch (...) {
  }
  if (st != RecvStatus::kOk || fds.empty()) ::_exit(0);  // the server is gone
  ::close(sock);
  int channel = fds.front();
  fds.erase(fds.begin());
  StartRequest request;
  try {
    Decoder d(bytes);
    request = d.read<StartRequest>();
  } catch (const std::exception& e) {
    send_reply(channel, false,
               fmt::format("mp: a forkserver child could not read its start: {}", e.what()));
    ::_exit(1);
  }
  run_started_child(request, fds, channel);
}

void ServerLoop::serve(std::string& bytes, std::vector<int>& fds) {
  StartRequest request;
  std::string error;
  try {
    Decoder d(bytes);
    request = d.read<StartRequest>();
    // Built once per parent layout, here: the spares forked from now on
    // inherit it. A failure is left for the child to report.
    try {
      use_parent_map(request.module_map);
    } catch (...) {
    }
  } catch (const std::exception& e) {
    error = e.what();
  }
  int status_pipe[2] = {-1, -1};
  pid_t pid = -1;
  std::vector<int> out;
  // A spare forked from here on holds this request's fds too; it is the one
  // that takes them (or dies), so no other process keeps them.
  if (error.empty() && ::pipe2(status_pipe, O_CLOEXEC) != 0) error = std::strerror(errno);
  for (int attempt = 0; error.empty() && attempt < 2; ++attempt) {
    if (spare_.pid > 0) {
      pollfd ended{spare_.pidfd, POLLIN, 0};
      if (::poll(&ended, 1, 0) == 1) drop_spare(false);  // died, not reaped yet
    }
    if (spare_.pid <= 0) make_spare();
    if (spare_.pid <= 0) {
      error = fmt::format("fork failed: {}", std::strerror(errno));
      break;
    }
    if (send_frame(spare_.sock, bytes, fds)) {
      pid = spare_.pid;
      children_[pid] = ServedChild{status_pipe[1], request.daemon};
      out = {spare_.pidfd, status_pipe[0]};
      ::close(spare_.sock);
      spare_ = Spare{};
      break;
    }
    drop_spare(true);  // it died before taking the task: fork another
  }
  if (pid <= 0) {
    if (status_pipe[0] >= 0) ::close(status_pipe[0]);
    if (status_pipe[1] >= 0) ::close(status_pipe[1]);
    if (error.empty()) error = "the forkserver's spare child died twice";
  }
  std::string reply;
  encode_into(reply, static_cast<std::int32_t>(pid));
  encode_into(reply, error);
  bool sent = send_frame(control_, reply, out);
  close_all(out);
  if (!sent) shut_down();
}

void ServerLoop::run() {
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGPIPE, SIG_IGN);
  sigemptyset(&chld_);
  sigaddset(&chld_, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &chld_, nullptr);
  sfd_ = ::signalfd(-1, &chld_, SFD_CLOEXEC | SFD_NONBLOCK);
  parent_fd_ = sys_pidfd_open(::getppid());
  make_spare();
  send_reply(control_, true, "forkserver ready");

  for (;;) {
    pollfd p[3] = {{control_, POLLIN, 0}, {sfd_, POLLIN, 0}, {parent_fd_, POLLIN, 0}};
    int rc = ::poll(p, 3, -1);
    if (rc < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (p[1].revents) {
      signalfd_siginfo info;
      while (::read(sfd_, &info, sizeof info) > 0) {
      }
      reap();
    }
    if (p[2].revents) break;  // the parent ended
    if (!p[0].revents) continue;
    std::string bytes;
    std::vector<int> fds;
    RecvStatus st;
    try {
      st = recv_frame(control_, bytes, fds);
    } catch (...) {
      st = RecvStatus::kEof;
    }
    if (st != RecvStatus::kOk || fds.empty()) {
      close_all(fds);
      break;  // the parent closed the channel (shutdown or exit)
    }
    serve(bytes, fds);
    close_all(fds);
    // The next start's child, forked while the parent goes on, and only
    // now: a spare forked while this request's fds were open would hold
    // them (the new child's channel among them) for as long as it waits.
    if (spare_.pid <= 0) make_spare();
  }
  shut_down();
}

void ServerLoop::shut_down() {
  // The parent is gone (or closed the channel): no child it started may
  // outlive it unattended.
  drop_spare(true);
  for (auto& [pid, c] : children_) ::kill(pid, c.daemon ? SIGKILL : SIGTERM);
  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (!children_.empty() && Clock::now() < deadline) {
    reap();
    if (!children_.empty()) ::usleep(10'000);
  }
  for (auto& [pid, c] : children_) ::kill(pid, SIGKILL);
  while (!children_.empty()) {
    reap();
    if (!children_.empty()) ::usleep(10'000);
  }
  ::_exit(0);
}

[[noreturn]] void serve_forever(int control) { ServerLoop(control).run(); }

}  // namespace

// ------------------------------------------------------------- public-ish

StartMethod parse_start_method(std::string_view name) {
  if (name == "fork") return StartMethod::kFork;
  if (name == "forkserver") return StartMethod::kForkserver;
  if (name == "spawn") return StartMethod::kSpawn;
  throw ValueError(
      fmt::format("cannot find context for '{}': the start methods are 'fork', "
                  "'forkserver' and 'spawn'",
                  name));
}

std::string_view start_method_name(StartMethod m) noexcept {
  switch (m) {
    case StartMethod::kFork:
      return "fork";
    case StartMethod::kForkserver:
      return "forkserver";
    case StartMethod::kSpawn:
      return "spawn";
  }
  return "fork";
}

StartMethod default_start_method() noexcept { return g_default.load(std::memory_order_relaxed); }

void set_default_start_method(StartMethod m, bool force) {
  if (g_default_set.exchange(true) && !force) {
    throw RuntimeError("context has already been set");
  }
  g_default.store(m);
}

void fix_default_start_method() noexcept { g_default_set.store(true); }

bool start_pending() noexcept { return g_pending != Pending::kNone; }

void refuse_start_while_pending(std::string_view what) {
  std::string message = fmt::format(
      "mp: this process was started by the {} start method, and its main() reached {} before "
      "calling mp::freeze_support(): call mp::freeze_support() at the top of main() so that a "
      "child runs its task instead of the program (mp/context.h)",
      g_pending == Pending::kForkserver ? "forkserver" : "spawn", what);
  std::fputs((message + "\n").c_str(), stderr);
  std::fflush(stderr);
  send_reply(g_pending_fd, false, message);
  ::_exit(1);
}

void send_reply(int channel, bool ok, std::string_view message) noexcept {
  try {
    std::string bytes;
    encode_into(bytes, ok);
    encode_into(bytes, std::string(message));
    send_frame(channel, bytes, {});
  } catch (...) {
  }
}

StartedChild start_child(StartMethod method, const StartRequest& request,
                         const std::vector<int>& fds) {
  std::string bytes;
  encode_into(bytes, request);
  if (method == StartMethod::kForkserver) return start_forkserver_child(bytes, fds);
  return start_spawned_child(bytes, fds);
}

void forkserver_ensure_running() {
  if (start_pending()) refuse_start_while_pending("mp::forkserver::ensure_running()");
  Server& s = server();
  std::lock_guard lock(s.mu);
  if (!server_alive_locked(s)) start_server_locked(s);
}

pid_t forkserver_pid() noexcept {
  Server& s = server();
  std::lock_guard lock(s.mu);
  return server_alive_locked(s) ? s.pid : 0;
}

std::vector<int> forkserver_fds() {
  Server& s = server();
  std::lock_guard lock(s.mu);
  if (s.pid <= 0 || s.owner != ::getpid()) return {};
  return {s.control, s.pidfd};
}

}  // namespace mp::internal

namespace mp {

void freeze_support() {
  using namespace internal;
  if (g_pending == Pending::kNone) return;
  int fd = g_pending_fd;
  Pending mode = g_pending;
  g_pending = Pending::kNone;
  if (mode == Pending::kForkserver) serve_forever(fd);
  std::string bytes;
  std::vector<int> fds;
  RecvStatus st = RecvStatus::kEof;
  std::string error;
  try {
    st = recv_frame(fd, bytes, fds);
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (st != RecvStatus::kOk) ::_exit(1);  // the parent is gone
  StartRequest request;
  try {
    Decoder d(bytes);
    request = d.read<StartRequest>();
  } catch (const std::exception& e) {
    send_reply(fd, false,
               fmt::format("mp: a spawned child could not read its start: {}", e.what()));
    ::_exit(1);
  }
  run_started_child(request, fds, fd);
}

}  // namespace mp
