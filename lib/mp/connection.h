// mp/connection.h — Pipe(), Connection and wait(): CPython's
// multiprocessing.connection on Linux file descriptors.
//
//   auto [parent_end, child_end] = mp::Pipe();
//   mp::Process p([&] { child_end.send(std::vector<int>{1, 2, 3}); });
//   p.start();
//   child_end.close();                        // see "Inherited ends" below
//   auto v = parent_end.recv<std::vector<int>>();
//
// Contract (CPython's, unless said otherwise):
//   * Pipe(duplex = true) returns two connected Connections. Duplex: a Unix
//     stream socketpair, both ends read and write. Simplex (duplex = false):
//     a pipe, the first end only reads, the second only writes; the wrong
//     direction raises mp::ValueError ("connection is write-only" /
//     "connection is read-only").
//   * send(v) / recv<T>() move any mp::Encodable value (mp/codec.h) as one
//     message. A value that fails to encode raises in send() and nothing is
//     written. recv<T>() raises mp::CodecError when the message does not
//     decode as a T (the message is consumed).
//   * send_bytes(buffer, offset, size) / recv_bytes(maxlength) /
//     recv_bytes_into(buffer, offset) move raw bytes. Message boundaries are
//     kept: n sends are n receives, and an empty message is a message.
//   * Messages have a 64-bit length header: any size, no 2 GiB cap.
//   * A length header is a claim, not a promise (a hostile or broken peer
//     can claim 1 GiB and send 100 bytes, or claim 2^64 - 1). Receiving
//     memory grows with the bytes that actually arrive, never with the
//     claim: a payload of up to 4 MiB is allocated at once; a longer one
//     starts at 4 MiB and doubles each time it is full, never past the
//     claim, so it holds at most twice the bytes received (plus 4 MiB).
//     Doubling keeps the copying linear (a 256 MiB message round trip:
//     ~200 ms before, ~250 ms after, here). Every failure on such a stream
//     is an mp error: mp::EOFError when the peer closes before the claimed
//     bytes arrive, mp::ValueError ("bad message length") for a claim no
//     std::string can hold; never std::bad_alloc for a claim. The same
//     holds for recv<T>() and for recv_bytes_into() into a small buffer
//     (whose BufferTooShort needs the whole message). There is no maximum
//     message size: a peer that really sends N bytes costs up to 2N.
//   * poll() returns at once; poll(timeout) waits at most about `timeout`;
//     poll(std::nullopt) waits forever. True when a message or end-of-file
//     is pending.
//   * Peer closed: messages it sent before closing are still received; then
//     recv raises mp::EOFError (also when the peer died in mid-message).
//     send to a closed peer raises mp::BrokenPipeError; SIGPIPE never kills
//     the program (see "SIGPIPE" below).
//   * close() is idempotent and the destructor closes; using a closed
//     Connection raises mp::ValueError "handle is closed".
//   * File descriptors are O_CLOEXEC: a program exec'd by a child never
//     inherits them.
//   * A Connection is not safe for concurrent use by several threads (nor is
//     CPython's); use one per thread or lock around it.
//
// Where mp differs from CPython, and why:
//   * recv_bytes(maxlength) on a longer message raises mp::ValueError "bad
//     message length" but leaves the message unread, so a later recv with a
//     larger limit gets it; CPython makes the connection unusable. Nothing
//     is lost and nothing of the long message is allocated.
//   * recv_bytes_into() into a buffer too small raises mp::BufferTooShort
//     carrying the whole message (as CPython), which is consumed.
//   * The receiving end reads ahead about one message (as large as the last
//     one, into a buffer of at most 64 KiB), so a small message costs one
//     read(2), not two; after a message of 48 KiB or more it reads ahead
//     only the next header, and large payloads go straight from the kernel
//     into their destination. Read-ahead bytes belong to the process
//     that read them. A child given an end (by fork, or passed to a child
//     of any start method: see "Travelling" below) starts with a copy of
//     them, so its stream resumes where the end stood. If the parent and
//     the child then both receive on copies of the same end, the messages
//     read ahead reach both and the rest is shared unpredictably (CPython
//     has the same race without read-ahead). Let one process own each
//     receiving end.
//   * A receive on a duplex Connection (a socket) with nothing to read
//     retries without blocking for up to 10 us, yielding the CPU between
//     tries, before it sleeps. A request/response peer usually answers in
//     that time, so neither side pays for a wake-up: a 1-byte round trip
//     took 12.5 us instead of ~25 us here. The cost is at most 10 us of CPU
//     per receive that has to wait.
//   * The first message of 16 KiB or more sent into a pipe (simplex) grows
//     the pipe from Linux's default 64 KiB to 128 KiB (F_SETPIPE_SZ, once,
//     silently skipped if the system refuses). 64 KiB is 16 page slots. A
//     32 KiB message with its 8-byte header takes 9, so two such messages
//     never fit and the writer waits for the reader on each one: measured
//     0.5x of raw 32 KiB writes on the default pipe, 0.9-1.1x on the grown
//     one. Each grown pipe counts 32 pages, not 16, against the user's
//     /proc/sys/fs/pipe-user-pages-soft. Pipes that carry only small
//     messages are never grown.
//
// Inherited ends (CPython's users hang here). After fork() a child holds a
// copy of every open end, and end-of-file reaches a reader only when *every*
// copy of the peer end, in every process, is closed. mp gives two tools:
//   * close(): close each end in the process that does not use it, as in
//     CPython (e.g. the parent closes child_end after start()).
//   * close_on_fork(): mark an end so that every process forked from this
//     one afterwards (mp::Process, mp::fork, raw fork) starts with that end
//     already closed (a pthread_atfork handler closes it in the child and
//     marks the child's Connection object closed). Mark the end that
//     children must never hold: the parent's own end.
//   owner_pid() tells which process created (or adopted) the Connection, and
//   inherited() whether the calling process only holds a forked copy.
//
// SIGPIPE. Socket writes use send(MSG_NOSIGNAL). A write(2) to a pipe whose
// readers are gone raises SIGPIPE, and blocking it around every write costs
// two extra system calls per message (measured 4x slower for small
// messages). So the first simplex Pipe() (or adopted writable pipe end)
// installs, once per process, a
// SIGPIPE handler that is transparent for everything but mp's own pipe
// writes: a SIGPIPE raised while the calling thread is inside an mp write is
// dropped (the write then fails with EPIPE -> mp::BrokenPipeError); any
// other SIGPIPE gets the disposition the process had before — default
// (terminate: the handler restores SIG_DFL and re-raises), ignore, or the
// program's own handler, which is called. If SIGPIPE was already ignored,
// nothing is installed. (A SIGPIPE sent by kill() that lands in a thread
// while it is inside an mp pipe write is taken for that write's and
// dropped.) exec() resets the handler, as for any handler. A
// program that later sets its own SIGPIPE disposition replaces mp's handler:
// ignoring is fine; SIG_DFL would again let a pipe send die of SIGPIPE, so
// such a program should set it before creating simplex pipes (each simplex
// Pipe() re-installs the handler if it was reset to SIG_DFL).
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mp/codec.h"
#include "mp/errors.h"
#include "mp/internal/travel.h"

namespace mp {

// Timeout is how long a call may wait: any std::chrono duration (as
// Process::join), or std::nullopt for "wait forever".
using Timeout = std::optional<std::chrono::duration<double>>;

// Connection is one end of a Pipe(): a file descriptor with message
// framing. Move-only; owns its descriptor.
class Connection {
 public:
  // Connection() is closed.
  Connection() = default;
  // Connection(fd, readable, writable) adopts an open stream descriptor (a
  // socket or a pipe end) that the peer uses with mp framing. Throws
  // mp::ValueError for a negative fd or when neither direction is given.
  Connection(int fd, bool readable, bool writable);
  ~Connection();
  Connection(Connection&& other) noexcept;
  Connection& operator=(Connection&& other) noexcept;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // send(v) sends v, encoded by mp/codec.h, as one message.
  template <class T>
  void send(const T& value) {
    codec_detail::require_transportable<T>();
    check_writable();
    // Header placeholder, then the value; a throwing encode writes nothing.
    scratch_.assign(kHeaderSize, '\0');
    encode_into(scratch_, value);
    const std::uint64_t n = scratch_.size() - kHeaderSize;
    std::memcpy(scratch_.data(), &n, kHeaderSize);
    write_all(scratch_.data(), scratch_.size(), nullptr, 0);
    if (scratch_.capacity() > kMaxKeptScratch) std::string().swap(scratch_);
  }

  // recv<T>() receives one message and decodes it as a T. Blocks until a
  // message arrives; raises mp::EOFError when the peer closed and nothing
  // is left, mp::CodecError when the message is not a T.
  template <class T>
  T recv() {
    codec_detail::require_transportable<T>();
    T value = recv_message([](std::string_view bytes) { return decode<T>(bytes); });
    return value;
  }

  // send_bytes(buffer, offset, size) sends buffer[offset, offset + size) as
  // one message (to the end of buffer when size is not given). Raises
  // mp::ValueError if offset or offset + size is beyond the buffer.
  void send_bytes(std::span<const std::byte> buffer, std::size_t offset = 0,
                  std::optional<std::size_t> size = std::nullopt);
  void send_bytes(std::string_view buffer, std::size_t offset = 0,
                  std::optional<std::size_t> size = std::nullopt) {
    send_bytes(std::as_bytes(std::span(buffer.data(), buffer.size())), offset, size);
  }

  // recv_bytes(maxlength) receives one message. If maxlength is given and
  // the message is longer, raises mp::ValueError ("bad message length") and
  // leaves the message unread.
  std::string recv_bytes(std::optional<std::size_t> maxlength = std::nullopt);

  // recv_bytes_into(buffer, offset) receives one message into
  // buffer[offset, ...) and returns its size. Raises mp::ValueError "offset
  // too large" if offset is beyond the buffer (before receiving anything;
  // CPython consumes the message first), and mp::BufferTooShort (carrying the whole
  // message, which is consumed) if the message does not fit.
  std::size_t recv_bytes_into(std::span<std::byte> buffer, std::size_t offset = 0);
  std::size_t recv_bytes_into(std::span<char> buffer, std::size_t offset = 0) {
    return recv_bytes_into(std::as_writable_bytes(buffer), offset);
  }

  // poll(timeout) tells whether a message or end-of-file is pending, waiting
  // at most about `timeout` (none: at once; std::nullopt: forever).
  bool poll(Timeout timeout = std::chrono::duration<double>::zero());

  // close() closes this process's copy of the end. Idempotent.
  void close() noexcept;

  // close_on_fork(on) marks this end to be closed in every process forked
  // from this one after the call (see "Inherited ends"). Returns *this.
  Connection& close_on_fork(bool on = true);

  // closed(), readable(), writable() mirror CPython's properties.
  bool closed() const noexcept { return fd_ < 0; }
  bool readable() const noexcept { return readable_; }
  bool writable() const noexcept { return writable_; }

  // fileno() is the descriptor; raises mp::ValueError when closed.
  int fileno() const;

  // owner_pid() is the pid of the process that created or adopted this
  // Connection; inherited() is true in a forked copy (getpid() differs).
  pid_t owner_pid() const noexcept { return owner_pid_; }
  bool inherited() const noexcept;

  // has_buffered_data() is true when read-ahead bytes are waiting, i.e.
  // recv needs no system call to start (what poll() and wait() check
  // before asking the kernel).
  bool has_buffered_data() const noexcept { return rbuf_end_ > rbuf_begin_; }

 private:
  static constexpr std::size_t kHeaderSize = sizeof(std::uint64_t);
  static constexpr std::size_t kReadBuffer = std::size_t{64} * 1024;
  static constexpr std::size_t kMaxKeptScratch = 1 << 20;
  // Messages from this size on are read into their destination directly.
  // Smaller ones (32 KiB included) are read ahead whole with their header in
  // one read and copied: measured 0.4-0.65x of a raw pipe at 32 KiB with the
  // direct path (a header read, then a payload readv, per message) and
  // 0.76-0.89x with read-ahead.
  static constexpr std::size_t kLargeMessage = std::size_t{48} * 1024;

  void check_open() const;
  void check_readable() const;
  void check_writable() const;

  // write_all writes one whole message, head[0, head_n) then tail[0,
  // tail_n), completely (growing a pipe first for a large one).
  void write_all(const void* head, std::size_t head_n, const void* tail, std::size_t tail_n);
  // Messages of kGrowPipeAt payload bytes or more grow a pipe to kGrownPipe
  // bytes (see the file comment); grow_pipe() does it once per end.
  static constexpr std::size_t kGrowPipeAt = std::size_t{16} * 1024;
  static constexpr int kGrownPipe = 128 * 1024;
  void grow_pipe() noexcept;

  // fill() reads what is available into the read-ahead buffer (blocking
  // until at least one byte or EOF); returns false at EOF.
  bool fill();
  // spin_for_data (sockets) tries non-blocking reads of up to `want` bytes
  // into the read-ahead buffer for a short while.
  enum class SpinResult { kData, kEof, kNothing };
  SpinResult spin_for_data(std::size_t want);
  // peek_header() blocks until a whole header is buffered and returns the
  // message length, raising mp::EOFError at end-of-file.
  std::uint64_t peek_header();
  // read_payload copies the next n bytes of the stream to dst.
  void read_payload(char* dst, std::size_t n);

  // recv_message receives one message and hands it to f as a string_view:
  // a view into the read-ahead buffer when the message is there whole, else
  // into a temporary.
  template <class F>
  auto recv_message(F&& f) {
    check_readable();
    const std::uint64_t n = peek_header();
    if (rbuf_end_ - rbuf_begin_ - kHeaderSize >= n) {
      std::string_view view(rbuf_.get() + rbuf_begin_ + kHeaderSize, n);
      rbuf_begin_ += kHeaderSize + n;
      return f(view);
    }
    rbuf_begin_ += kHeaderSize;
    std::string tmp = read_large_payload(n);
    return f(std::string_view(tmp));
  }
  // read_large_payload reads the next n stream bytes into a new string
  // (huge-page backed when large, to spare 4 KiB page faults).
  std::string read_large_payload(std::uint64_t n);

  void register_close_on_fork();
  void unregister_close_on_fork() noexcept;
  friend void connection_close_in_child() noexcept;
  // Travelling carries the read-ahead (see codec_traits<Connection>).
  friend struct codec_traits<Connection>;

  int fd_ = -1;
  bool readable_ = false;
  bool writable_ = false;
  bool is_socket_ = false;
  bool close_on_fork_ = false;
  pid_t owner_pid_ = 0;
  // Read-ahead buffer: bytes [rbuf_begin_, rbuf_end_) are unread stream
  // bytes; allocated on first receive.
  std::unique_ptr<char[]> rbuf_;
  std::size_t rbuf_begin_ = 0;
  std::size_t rbuf_end_ = 0;
  // How far to read ahead: the size of the last message (header included),
  // or just a header after a large one; at most kReadBuffer.
  std::size_t ahead_ = kReadBuffer;
  std::string scratch_;      // send(v)'s encode buffer, reused
  bool pipe_grown_ = false;  // grow_pipe() was tried on this end
};

// Pipe(duplex) returns a pair of connected Connections; see the file
// comment. Throws std::system_error if the descriptors cannot be created.
std::pair<Connection, Connection> Pipe(bool duplex = true);

// HasSentinel: objects mp::wait accepts through their `int sentinel()`
// (mp::Process, mp::ChildProcess, mp::ParentProcess: a pidfd readable once
// the process ended).
template <class T>
concept HasSentinel = requires(const T& t) {
  { t.sentinel() } -> std::convertible_to<int>;
};

// WaitObject is one thing mp::wait watches: a Connection (ready when a
// message or end-of-file is pending), an object with a sentinel() (ready
// when its descriptor is readable: a process has ended), or a raw file
// descriptor (ready when readable or hung up). It refers to the object; the
// object must outlive the wait.
class WaitObject {
 public:
  WaitObject(const Connection& c) : fd_(-1), object_(&c), connection_(&c) {}  // NOLINT: implicit
  WaitObject(int fd) : fd_(fd), object_(nullptr) {}                           // NOLINT: implicit
  template <HasSentinel T>
  requires(!std::same_as<T, Connection>) WaitObject(const T& obj)
      : fd_(static_cast<int>(obj.sentinel())), object_(&obj) {}  // NOLINT

  // fd() is the descriptor watched (a Connection's current fileno()).
  int fd() const;
  // connection() is the Connection waited on, or nullptr.
  const Connection* connection() const noexcept { return connection_; }
  // is(x) tells whether this refers to the object x.
  template <class T>
  bool is(const T& x) const noexcept {
    return object_ == static_cast<const void*>(&x);
  }
  // is_fd(fd) tells whether this is the raw descriptor fd.
  bool is_fd(int fd) const noexcept { return object_ == nullptr && fd_ == fd; }

 private:
  int fd_;
  const void* object_;
  const Connection* connection_ = nullptr;
};

// wait(objects, timeout) blocks until at least one object is ready or the
// timeout (std::nullopt: none) passes, and returns the ready ones, in the
// order given (empty after the timeout). End-of-file counts as ready, as a
// process's end does. Mirrors multiprocessing.connection.wait. Raises
// mp::ValueError if a Connection is closed.
std::vector<WaitObject> wait(std::span<const WaitObject> objects, Timeout timeout = std::nullopt);
inline std::vector<WaitObject> wait(std::initializer_list<WaitObject> objects,
                                    Timeout timeout = std::nullopt) {
  return wait(std::span<const WaitObject>(objects.begin(), objects.size()), timeout);
}

// wait(connections, timeout) is wait() for a list of Connections, returning
// the ready ones.
std::vector<Connection*> wait(std::span<Connection* const> connections,
                              Timeout timeout = std::nullopt);

// Travelling (mp/context.h): a Connection passed to a child of any start
// method (as std::ref(conn): it is move-only) arrives as a duplicate of the
// same socket or pipe end, with the same directions, and with a copy of the
// bytes this end had read ahead and not yet received (as a forked child has
// them in its copy of memory): the child's stream resumes where this end's
// stands, even mid-message. Its encoding carries the fd, so it travels only
// as a start argument.
template <>
struct codec_traits<Connection> {
  static void encode(Encoder& e, const Connection& c);
  static Connection decode(Decoder& d);
};

}  // namespace mp
