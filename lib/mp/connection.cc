// mp/connection.cc — Pipe(), Connection and wait(); see connection.h.
#include "mp/connection.h"

#include <errno.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <system_error>

#include "mp/internal/futex.h"
#include "mp/os.h"

namespace mp {

namespace {

[[noreturn]] void throw_errno(int err, const char* what) {
  throw std::system_error(err, std::generic_category(), what);
}

// ---- SIGPIPE interposer (see "SIGPIPE" in connection.h) -------------------

// Set while the calling thread is inside an mp pipe write. A plain
// thread_local of trivial type: no TLS wrapper, safe to read in a handler.
thread_local volatile sig_atomic_t t_in_mp_write = 0;

struct sigaction g_previous_sigpipe;  // the disposition mp's handler stands in for
std::mutex g_sigpipe_mutex;

void on_sigpipe(int sig, siginfo_t* info, void* context) {
  if (t_in_mp_write) return;  // mp's own write: it fails with EPIPE instead
  const struct sigaction& prev = g_previous_sigpipe;
  if (prev.sa_handler == SIG_IGN) return;
  if (prev.sa_handler == SIG_DFL) {
    // Default action: terminate by SIGPIPE. Restore it and re-raise; the
    // signal is delivered as soon as this handler returns.
    signal(SIGPIPE, SIG_DFL);
    raise(SIGPIPE);
    return;
  }
  if (prev.sa_flags & SA_SIGINFO) {
    prev.sa_sigaction(sig, info, context);
  } else {
    prev.sa_handler(sig);
  }
}

// ensure_sigpipe_interposer installs on_sigpipe unless SIGPIPE is ignored or
// already handled by mp.
void ensure_sigpipe_interposer() {
  std::lock_guard<std::mutex> lock(g_sigpipe_mutex);
  struct sigaction current;
  if (sigaction(SIGPIPE, nullptr, &current) != 0) return;
  const bool ours = (current.sa_flags & SA_SIGINFO) && current.sa_sigaction == &on_sigpipe;
  if (ours) return;
  if (current.sa_handler == SIG_IGN) return;
  struct sigaction mine {};
  mine.sa_sigaction = &on_sigpipe;
  sigemptyset(&mine.sa_mask);
  mine.sa_flags = SA_SIGINFO | SA_RESTART;
  g_previous_sigpipe = current;
  sigaction(SIGPIPE, &mine, nullptr);
}

struct InMpWrite {
  InMpWrite() { t_in_mp_write = 1; }
  ~InMpWrite() { t_in_mp_write = 0; }
};

// ---- close_on_fork registry -----------------------------------------------

// Connections marked close_on_fork, by address. The atfork prepare handler
// takes the mutex so that no other thread holds it across fork().
std::mutex g_cof_mutex;
std::vector<Connection*>* g_cof_list = nullptr;  // under g_cof_mutex
std::once_flag g_atfork_once;

void atfork_prepare() { g_cof_mutex.lock(); }
void atfork_parent() { g_cof_mutex.unlock(); }

}  // namespace

void connection_close_in_child() noexcept {
  if (g_cof_list) {
    for (Connection* c : *g_cof_list) {
      if (c->fd_ >= 0) ::close(c->fd_);
      c->fd_ = -1;
      c->readable_ = c->writable_ = false;
      c->close_on_fork_ = false;
      c->rbuf_begin_ = c->rbuf_end_ = 0;
    }
    g_cof_list->clear();
  }
  // The child's only thread is the one whose atfork_prepare locked it.
  g_cof_mutex.unlock();
}

namespace {
void atfork_child() { connection_close_in_child(); }
}  // namespace

// ---- Connection -------------------------------------------------------------

Connection::Connection(int fd, bool readable, bool writable)
    : fd_(fd), readable_(readable), writable_(writable), owner_pid_(mp::getpid()) {
  if (fd < 0) throw ValueError(fmt::format("invalid file descriptor {}", fd));
  if (!readable && !writable)
    throw ValueError("at least one of readable and writable must be true");
  struct stat st;
  is_socket_ = fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
  if (writable && !is_socket_) ensure_sigpipe_interposer();
}

Connection::~Connection() { close(); }

Connection::Connection(Connection&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      readable_(std::exchange(other.readable_, false)),
      writable_(std::exchange(other.writable_, false)),
      is_socket_(other.is_socket_),
      close_on_fork_(false),
      owner_pid_(other.owner_pid_),
      rbuf_(std::move(other.rbuf_)),
      rbuf_begin_(std::exchange(other.rbuf_begin_, 0)),
      rbuf_end_(std::exchange(other.rbuf_end_, 0)),
      ahead_(other.ahead_),
      scratch_(std::move(other.scratch_)),
      pipe_grown_(other.pipe_grown_) {
  if (other.close_on_fork_) {
    other.unregister_close_on_fork();
    register_close_on_fork();
  }
}

Connection& Connection::operator=(Connection&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = std::exchange(other.fd_, -1);
    readable_ = std::exchange(other.readable_, false);
    writable_ = std::exchange(other.writable_, false);
    is_socket_ = other.is_socket_;
    owner_pid_ = other.owner_pid_;
    rbuf_ = std::move(other.rbuf_);
    rbuf_begin_ = std::exchange(other.rbuf_begin_, 0);
    rbuf_end_ = std::exchange(other.rbuf_end_, 0);
    ahead_ = other.ahead_;
    scratch_ = std::move(other.scratch_);
    pipe_grown_ = other.pipe_grown_;
    if (other.close_on_fork_) {
      other.unregister_close_on_fork();
      register_close_on_fork();
    }
  }
  return *this;
}

void Connection::close() noexcept {
  if (close_on_fork_) unregister_close_on_fork();
  if (fd_ >= 0) {
    ::close(fd_);  // Linux releases the descriptor even when close fails
    fd_ = -1;
  }
  readable_ = writable_ = false;
  rbuf_begin_ = rbuf_end_ = 0;
}

void Connection::register_close_on_fork() {
  std::call_once(g_atfork_once,
                 [] { pthread_atfork(&atfork_prepare, &atfork_parent, &atfork_child); });
  std::lock_guard<std::mutex> lock(g_cof_mutex);
  if (!g_cof_list) g_cof_list = new std::vector<Connection*>();  // lives for the process
  g_cof_list->push_back(this);
  close_on_fork_ = true;
}

void Connection::unregister_close_on_fork() noexcept {
  std::lock_guard<std::mutex> lock(g_cof_mutex);
  if (g_cof_list) std::erase(*g_cof_list, this);
  close_on_fork_ = false;
}

Connection& Connection::close_on_fork(bool on) {
  check_open();
  if (on && !close_on_fork_) register_close_on_fork();
  if (!on && close_on_fork_) unregister_close_on_fork();
  return *this;
}

bool Connection::inherited() const noexcept {
  return owner_pid_ != 0 && owner_pid_ != mp::getpid();
}

int Connection::fileno() const {
  check_open();
  return fd_;
}

void Connection::check_open() const {
  if (fd_ < 0) throw ValueError("handle is closed");
}

void Connection::check_readable() const {
  check_open();
  if (!readable_) throw ValueError("connection is write-only");
}

void Connection::check_writable() const {
  check_open();
  if (!writable_) throw ValueError("connection is read-only");
}

// ---- sending ------------------------------------------------------------------

void Connection::grow_pipe() noexcept {
  pipe_grown_ = true;
  if (is_socket_) return;
  const int now = ::fcntl(fd_, F_GETPIPE_SZ);
  if (now > 0 && now < kGrownPipe) (void)::fcntl(fd_, F_SETPIPE_SZ, kGrownPipe);
}

void Connection::write_all(const void* head, std::size_t head_n, const void* tail,
                           std::size_t tail_n) {
  // Every message comes through here whole, its header included.
  if (!pipe_grown_ && head_n + tail_n >= kHeaderSize + kGrowPipeAt) grow_pipe();
  iovec iov[2] = {{const_cast<void*>(head), head_n}, {const_cast<void*>(tail), tail_n}};
  iovec* v = iov;
  int count = tail_n ? 2 : 1;
  while (count > 0) {
    ssize_t w;
    if (is_socket_) {
      if (count == 1) {
        w = ::send(fd_, v->iov_base, v->iov_len, MSG_NOSIGNAL);
      } else {
        msghdr msg{};
        msg.msg_iov = v;
        msg.msg_iovlen = count;
        w = ::sendmsg(fd_, &msg, MSG_NOSIGNAL);
      }
    } else {
      InMpWrite guard;
      w = count == 1 ? ::write(fd_, v->iov_base, v->iov_len) : ::writev(fd_, v, count);
    }
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EPIPE || errno == ECONNRESET)
        throw BrokenPipeError("[Errno 32] Broken pipe: the peer end is closed");
      throw_errno(errno, "mp::Connection send");
    }
    auto done = static_cast<std::size_t>(w);
    while (count > 0 && done >= v->iov_len) {
      done -= v->iov_len;
      ++v;
      --count;
    }
    if (count > 0) {
      v->iov_base = static_cast<char*>(v->iov_base) + done;
      v->iov_len -= done;
    }
  }
}

// Messages up to this size are copied behind their header and written with
// one plain write(); larger ones go out with writev/sendmsg, uncopied.
constexpr std::size_t kSmallSend = 4096 - 8;

void Connection::send_bytes(std::span<const std::byte> buffer, std::size_t offset,
                            std::optional<std::size_t> size) {
  check_writable();
  if (offset > buffer.size()) throw ValueError("buffer length < offset");
  const std::size_t n = size ? *size : buffer.size() - offset;
  if (n > buffer.size() - offset) throw ValueError("buffer length < offset + size");
  const std::uint64_t header = n;
  if (n <= kSmallSend) {
    // Small: one contiguous write, no iovec juggling.
    char msg[kHeaderSize + kSmallSend];
    std::memcpy(msg, &header, kHeaderSize);
    if (n) std::memcpy(msg + kHeaderSize, buffer.data() + offset, n);
    write_all(msg, kHeaderSize + n, nullptr, 0);
  } else {
    write_all(&header, kHeaderSize, buffer.data() + offset, n);
  }
}

// ---- receiving ----------------------------------------------------------------

namespace {

// A length header is a claim, not a promise: a peer (or a corrupt stream) can
// claim 1 GiB and send 100 bytes, or claim 2^62. So a payload buffer is never
// sized by the claim alone. Up to kTrustedLength it is allocated at once (a
// claim can cost at most that much); beyond, it starts at kTrustedLength and
// doubles each time it is full, never past the claim, so it holds at most
// twice the bytes that actually arrived. Doubling keeps the copying linear:
// a 64 MiB message is copied about once more in all (timings in
// connection.h).
constexpr std::uint64_t kTrustedLength = 4u << 20;

// message_buffer(n, keep) is a string of n bytes whose first keep bytes are
// copied from `keep`. Large ones are advised to use transparent huge pages
// before they are first touched: a fresh 256 MiB buffer costs ~65k page
// faults (about 2 s here) with 4 KiB pages and ~130 with 2 MiB pages.
std::string message_buffer(std::size_t n, std::string_view keep = {}) {
  std::string s;
  constexpr std::uint64_t kHuge = 2u << 20;
  if (n >= 2 * kHuge) {
    s.reserve(n);
    const auto begin = reinterpret_cast<std::uintptr_t>(s.data());
    const std::uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
    const std::uintptr_t last = (begin + n) & ~(kHuge - 1);
    if (last > first) (void)::madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
  }
  s.assign(keep);
  s.resize(n);
  return s;
}

}  // namespace

std::string Connection::read_large_payload(std::uint64_t n) {
  if (n > std::string().max_size()) {
    throw ValueError(fmt::format(
        "bad message length: the header claims {} bytes, more than a message can hold", n));
  }
  const auto size = static_cast<std::size_t>(n);
  std::string s = message_buffer(std::min<std::size_t>(size, kTrustedLength));
  std::size_t got = 0;
  for (;;) {
    read_payload(s.data() + got, s.size() - got);
    got = s.size();
    if (got == size) return s;
    // Everything allocated so far has arrived: double, up to the claim.
    const std::size_t next = got > size / 2 ? size : 2 * got;
    s = message_buffer(next, std::string_view(s.data(), got));
  }
}

bool Connection::fill() {
  if (!rbuf_) rbuf_.reset(new char[kReadBuffer]);
  if (rbuf_begin_ == rbuf_end_) {
    rbuf_begin_ = rbuf_end_ = 0;
  } else if (rbuf_begin_ > 0 && kReadBuffer - rbuf_end_ < kHeaderSize) {
    std::memmove(rbuf_.get(), rbuf_.get() + rbuf_begin_, rbuf_end_ - rbuf_begin_);
    rbuf_end_ -= rbuf_begin_;
    rbuf_begin_ = 0;
  }
  // Read about one message: as much as the last message took (header
  // included), or just the next header after a large one, whose payload then
  // goes straight into its destination. Reading more would drain the pipe
  // faster than a writer fills it, and a reader that keeps running dry
  // sleeps and is woken once per message: measured 0.4 context switches per
  // message and ~25% more CPU per message than one read per message.
  const std::size_t have = rbuf_end_ - rbuf_begin_;
  const std::size_t want =
      std::min(kReadBuffer - rbuf_end_, ahead_ > have ? ahead_ - have : kHeaderSize);
  if (is_socket_) {
    const SpinResult got = spin_for_data(want);
    if (got != SpinResult::kNothing) return got == SpinResult::kData;
  }
  for (;;) {
    ssize_t r = ::read(fd_, rbuf_.get() + rbuf_end_, want);
    if (r > 0) {
      rbuf_end_ += static_cast<std::size_t>(r);
      return true;
    }
    if (r == 0) return false;
    if (errno == EINTR) continue;
    if (errno == ECONNRESET) return false;
    throw_errno(errno, "mp::Connection recv");
  }
}

// A socket reader that finds nothing to read retries without blocking for up
// to kRecvSpin, yielding the CPU between tries, before it sleeps in read().
// A request/response peer usually answers within that time, and a reader
// that never sleeps costs neither side a wake-up: measured on this 2-vCPU
// VM, a 1-byte round trip took 12.5 us instead of ~25 us. The yield keeps
// it from delaying a peer that shares its CPU (there, 20 us with or without
// the spin). Pipes are not polled so: they cannot be read without blocking
// unless the descriptor, which forked processes share, is made O_NONBLOCK.
constexpr std::chrono::microseconds kRecvSpin{10};

Connection::SpinResult Connection::spin_for_data(std::size_t want) {
  const auto until = std::chrono::steady_clock::now() + kRecvSpin;
  for (;;) {
    const ssize_t r = ::recv(fd_, rbuf_.get() + rbuf_end_, want, MSG_DONTWAIT);
    if (r > 0) {
      rbuf_end_ += static_cast<std::size_t>(r);
      return SpinResult::kData;
    }
    if (r == 0) return SpinResult::kEof;
    // Errors other than "nothing yet" are left to the blocking read to report.
    if (errno != EAGAIN && errno != EINTR) return SpinResult::kNothing;
    if (std::chrono::steady_clock::now() >= until) return SpinResult::kNothing;
    sched_yield();
  }
}

std::uint64_t Connection::peek_header() {
  while (rbuf_end_ - rbuf_begin_ < kHeaderSize) {
    const bool partial = rbuf_end_ > rbuf_begin_;
    if (!fill()) {
      if (partial) throw EOFError("got end of file during message");
      throw EOFError("end of file: the peer end is closed");
    }
  }
  std::uint64_t n;
  std::memcpy(&n, rbuf_.get() + rbuf_begin_, kHeaderSize);
  ahead_ = n >= kLargeMessage ? kHeaderSize : static_cast<std::size_t>(n) + kHeaderSize;
  return n;
}

void Connection::read_payload(char* dst, std::size_t n) {
  const std::size_t buffered = std::min(n, rbuf_end_ - rbuf_begin_);
  if (buffered) std::memcpy(dst, rbuf_.get() + rbuf_begin_, buffered);
  rbuf_begin_ += buffered;
  std::size_t got = buffered;
  while (got < n) {
    // The read-ahead buffer is empty here. One readv takes the rest of the
    // payload straight into dst and what follows it (about one more message,
    // or the next header after a large one) into the read-ahead buffer.
    rbuf_begin_ = rbuf_end_ = 0;
    const std::size_t rest = n - got;
    iovec iov[2] = {{dst + got, rest}, {rbuf_.get(), ahead_}};
    ssize_t r = ::readv(fd_, iov, 2);
    if (r > 0) {
      const auto got_now = static_cast<std::size_t>(r);
      if (got_now > rest) {
        rbuf_end_ = got_now - rest;
        got = n;
      } else {
        got += got_now;
      }
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r == 0 || errno == ECONNRESET) throw EOFError("got end of file during message");
    throw_errno(errno, "mp::Connection recv");
  }
}

std::string Connection::recv_bytes(std::optional<std::size_t> maxlength) {
  check_readable();
  const std::uint64_t n = peek_header();
  if (maxlength && n > *maxlength) {
    throw ValueError(
        fmt::format("bad message length: message of {} bytes exceeds maxlength {} (left unread)", n,
                    *maxlength));
  }
  const std::size_t buffered = rbuf_end_ - rbuf_begin_ - kHeaderSize;
  rbuf_begin_ += kHeaderSize;
  if (buffered >= n) {
    std::string s(rbuf_.get() + rbuf_begin_, n);
    rbuf_begin_ += n;
    return s;
  }
  return read_large_payload(n);
}

std::size_t Connection::recv_bytes_into(std::span<std::byte> buffer, std::size_t offset) {
  check_readable();
  if (offset > buffer.size()) throw ValueError("offset too large");
  const std::uint64_t n = peek_header();
  const std::size_t room = buffer.size() - offset;
  rbuf_begin_ += kHeaderSize;
  if (n > room) {
    std::string whole = read_large_payload(n);
    throw BufferTooShort(fmt::format("buffer too short: message of {} bytes, room for {}", n, room),
                         std::move(whole));
  }
  read_payload(reinterpret_cast<char*>(buffer.data() + offset), n);
  return n;
}

namespace {

// poll_fds polls until something is ready or the deadline passes; EINTR
// restarts with the remaining time. Returns the poll(2) result.
int poll_fds(pollfd* fds, nfds_t n, Timeout timeout) {
  using Clock = std::chrono::steady_clock;
  const internal::Deadline deadline = internal::deadline_after(timeout);  // the one conversion
  for (;;) {
    timespec ts{};
    timespec* tsp = nullptr;
    if (deadline) {
      auto left = std::max(Clock::duration::zero(), *deadline - Clock::now());
      auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
      ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
      ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
      tsp = &ts;
    }
    int r = ::ppoll(fds, n, tsp, nullptr);
    if (r >= 0) return r;
    if (errno != EINTR) throw_errno(errno, "mp poll");
  }
}

constexpr short kReadyEvents = POLLIN | POLLHUP | POLLERR | POLLNVAL;

}  // namespace

bool Connection::poll(Timeout timeout) {
  check_readable();
  if (has_buffered_data()) return true;
  pollfd p{fd_, POLLIN, 0};
  return poll_fds(&p, 1, timeout) > 0 && (p.revents & kReadyEvents);
}

// ---- Pipe -------------------------------------------------------------------------

std::pair<Connection, Connection> Pipe(bool duplex) {
  int fds[2];
  if (duplex) {
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
      throw_errno(errno, "socketpair");
    return {Connection(fds[0], true, true), Connection(fds[1], true, true)};
  }
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno(errno, "pipe2");
  return {Connection(fds[0], true, false), Connection(fds[1], false, true)};
}

// ---- wait -------------------------------------------------------------------------

int WaitObject::fd() const { return connection_ ? connection_->fileno() : fd_; }

std::vector<WaitObject> wait(std::span<const WaitObject> objects, Timeout timeout) {
  std::vector<pollfd> fds(objects.size());
  bool any_buffered = false;
  for (std::size_t i = 0; i < objects.size(); ++i) {
    const Connection* c = objects[i].connection();
    if (c && !c->readable()) {
      throw ValueError(c->closed() ? "handle is closed" : "connection is write-only");
    }
    fds[i] = pollfd{objects[i].fd(), POLLIN, 0};
    if (c && c->has_buffered_data()) any_buffered = true;
  }
  // Read-ahead data is ready without the kernel's word: then only look.
  poll_fds(fds.data(), fds.size(), any_buffered ? Timeout(0.0) : timeout);
  std::vector<WaitObject> ready;
  for (std::size_t i = 0; i < objects.size(); ++i) {
    const Connection* c = objects[i].connection();
    if ((fds[i].revents & kReadyEvents) || (c && c->has_buffered_data()))
      ready.push_back(objects[i]);
  }
  return ready;
}

std::vector<Connection*> wait(std::span<Connection* const> connections, Timeout timeout) {
  std::vector<WaitObject> objects;
  objects.reserve(connections.size());
  for (Connection* c : connections) objects.emplace_back(*c);
  std::vector<WaitObject> ready = wait(std::span<const WaitObject>(objects), timeout);
  std::vector<Connection*> out;
  out.reserve(ready.size());
  for (const WaitObject& w : ready) out.push_back(const_cast<Connection*>(w.connection()));
  return out;
}

// ---- travelling -----------------------------------------------------------------

void codec_traits<Connection>::encode(Encoder& e, const Connection& c) {
  internal::write_fd(e, c.fileno(), "mp::Connection");
  e.write(c.readable());
  e.write(c.writable());
  // Without the bytes already read ahead, the child would lose messages and
  // could take the middle of one for a header.
  const std::size_t n = c.rbuf_end_ - c.rbuf_begin_;
  e.write_size(n);
  if (n > 0) e.write_raw(c.rbuf_.get() + c.rbuf_begin_, n);
}

Connection codec_traits<Connection>::decode(Decoder& d) {
  const int fd = internal::read_fd(d);
  Connection c;
  try {
    const bool readable = d.read<bool>();
    const bool writable = d.read<bool>();
    c = Connection(fd, readable, writable);
  } catch (...) {
    ::close(fd);
    throw;
  }
  const std::size_t n = d.read_size(1);
  if (n > Connection::kReadBuffer) {
    codec_detail::fail(
        fmt::format("corrupt input: {} read-ahead bytes, at most {}", n, Connection::kReadBuffer));
  }
  if (n > 0) {
    c.rbuf_.reset(new char[Connection::kReadBuffer]);
    d.read_raw(c.rbuf_.get(), n);
    c.rbuf_end_ = n;
  }
  return c;
}

}  // namespace mp
