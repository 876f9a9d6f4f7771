// mp/queue.h — Queue<T>, SimpleQueue<T>, JoinableQueue<T>: FIFO queues
// between processes, on shared memory.
//
// Mirrors CPython's multiprocessing.Queue, SimpleQueue and JoinableQueue
// (Lib/multiprocessing/queues.py) and the queue.Empty / queue.Full errors:
//
//   mp::Queue<std::string> q;               // before the fork
//   mp::Process p([&] { q.put("hello"); });
//   p.start();
//   std::string s = q.get();                // "hello"
//   p.join();
//
// A queue is created by one process and used by every process forked after
// its construction (a Process started later, a pool worker): they share one
// ring in an anonymous MAP_SHARED mapping (mp/internal/shm_channel.h).
// Values are copied by encoding them with mp/codec.h; T must be
// mp::Transportable (encodable, no pointer, reference or view inside: see
// mp/codec.h), or the queue does not compile, naming the type at fault.
//
// Contract (CPython's, unless said otherwise):
//   * put(v) appends v; get() removes and returns the oldest item. Several
//     producers and consumers may use one queue: every item is delivered
//     exactly once, and each producer's items arrive in the order it put
//     them.
//   * get() blocks until an item is there; get(timeout) throws mp::Empty
//     after about `timeout`; get_nowait() throws mp::Empty at once.
//     try_get() / try_get(timeout) return std::nullopt instead of throwing.
//     get_into(out) / get_into(out, timeout) (mp only) store the item in
//     the caller's object: a loop that reuses one std::string allocates
//     nothing per item.
//   * A bounded queue (maxsize > 0) holds at most maxsize items: put() blocks
//     while it is full, put(v, timeout) throws mp::Full after about
//     `timeout`, put_nowait() throws mp::Full at once, try_put() returns
//     false. A negative timeout counts as zero (CPython: nonblocking).
//   * qsize() is exact: right after put() returns it counts the item (no
//     feeder thread, no delay as in CPython). empty() is qsize() == 0 and
//     full() is qsize() >= maxsize for a bounded queue.
//   * Errors happen in the caller: a value whose encoding throws throws from
//     put() and nothing is sent; the queue stays usable.
//   * close() (idempotent) says this process is done with the queue: every
//     later put/get through this object throws mp::ValueError "Queue is
//     closed", and calls blocked in it in other threads wake and throw the
//     same. As in CPython it affects only the calling process's handle.
//   * Messages of any size: one larger than the ring is streamed through it
//     in chunks and reassembled, never truncated, no 2 GiB limit.
//   * Damage: a process that writes over the queue's shared memory (a wild
//     write, not a crash) and leaves an impossible record header makes
//     get() raise mp::CodecError saying so, at every call, since the items
//     after it cannot be found; close the queue and make a new one. No
//     checksum is kept: damage inside an item's bytes reaches the consumer
//     as those bytes (or as the codec's CodecError). The ring's size is
//     kept in each handle, checked once when the handle is made, so damage
//     to the queue's header cannot make a put or get touch memory outside
//     the ring (a handle that travels there afterwards, under forkserver or
//     spawn, is refused with mp::CodecError).
//
// Where mp differs from CPython, and why:
//   * No feeder thread: put() copies the item into shared memory before it
//     returns. So qsize() is exact and there is no "join a process that still
//     has buffered items" deadlock — but the ring has a fixed size
//     (`ring_bytes`, 1 MiB by default): when an unbounded queue's ring is
//     full, put() blocks until a consumer makes room, put_nowait() throws
//     mp::Full. Size the ring for the bytes you want in flight.
//   * Nothing lost, nothing hung when a peer is killed (SIGKILL included, at
//     any instruction): no lock stays held, no item is torn or half-visible,
//     no other item is lost or duplicated. The one item a consumer was
//     taking when it died is lost if it had started taking the chunks of a
//     streamed (larger than half the ring) item — as an item is lost when a
//     consumer dies right after get() returned it — and a streamed item whose
//     producer died before its last chunk is discarded whole.
//   * End of input: get() without a timeout, on an empty queue, throws
//     mp::EOFError once every process that has put to the queue has died,
//     closed its handle or destroyed it (and at least one has put). mp
//     notices a close at once and a death within about 100 ms (a liveness
//     check of the registered producers, by pid and start time, while get()
//     sleeps). CPython's get() hangs forever there. A process counts as a
//     producer from its first put: processes that never put are not counted
//     (a queue nobody has put to yet just blocks), a process that both puts
//     and gets keeps its own gets from seeing EOF, and a consumer that has
//     outlived one generation of producers sees EOF even if the next is
//     about to start — give get() a timeout where producers come and go.
//     get(timeout), get_nowait and try_get never throw EOFError: they throw
//     Empty (return nullopt) as CPython.
//   * No consumer left: put() without a timeout, blocked because the queue
//     (or its ring) is full, throws mp::BrokenPipeError and delivers nothing
//     once every process that has got from the queue (get, get_into,
//     try_get, any form) has died, closed its handle or destroyed it (and
//     at least one has got): nobody is left to make room. Noticed as EOF
//     is: a close at once, a death within about 100 ms. Likewise
//     JoinableQueue::join() without a timeout, while tasks are unfinished.
//     CPython hangs forever in both. The same caveats as for EOF: a
//     process that never got is not counted (a queue nobody has got from
//     yet just blocks), a process that both gets and puts never sees its
//     own puts fail, and a producer that outlived one generation of
//     consumers sees the error even if the next is about to start — give
//     put() a timeout where consumers come and go (put(v, timeout),
//     put_nowait and try_put never throw BrokenPipeError).
//   * Once a consumer has started reassembling a streamed item it finishes
//     it even past its timeout (the producer is streaming, so this is a
//     matter of copying), so get(timeout) may return late rather than drop
//     bytes already taken out of the ring.
//   * There is no join_thread() / cancel_join_thread(): there is no thread.
//   * Queue<std::string> moves its bytes without the codec's intermediate
//     buffers (same wire format as mp::encode: a u64 length, then the
//     bytes), and so is an arithmetic T put (its native bytes, as
//     mp::encode); every other T is encoded into a per-thread buffer first.
//
// Thread safety: all members but the move operations may be called from any
// thread of any process sharing the queue.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "mp/codec.h"
#include "mp/errors.h"
#include "mp/internal/futex.h"
#include "mp/internal/shm_channel.h"
#include "mp/internal/travel.h"

namespace mp {

namespace queue_detail {

using internal::ChannelStatus;
using internal::Deadline;

// Per-thread scratch buffers, reused so that a put or get allocates nothing
// in steady state (big ones are released after use).
std::string& encode_buffer();
std::string& decode_buffer();
void trim_buffer(std::string& b) noexcept;

[[noreturn]] void throw_closed();
[[noreturn]] void throw_empty();
[[noreturn]] void throw_full();
[[noreturn]] void throw_eof();
[[noreturn]] void throw_no_consumers();
[[noreturn]] void throw_join_no_consumers(std::uint32_t unfinished);
[[noreturn]] void throw_bad_length(std::uint64_t encoded, std::size_t received);

template <class Rep, class Period>
Deadline deadline_in(std::chrono::duration<Rep, Period> timeout) {
  return internal::deadline_after(std::optional<std::chrono::duration<Rep, Period>>(timeout));
}

// A deadline already passed: try once.
inline Deadline now_deadline() { return std::chrono::steady_clock::now(); }

}  // namespace queue_detail

// Queue<T> — see the top of this file.
template <class T>
class Queue {
  static_assert((codec_detail::require_transportable<T>(), Transportable<T>),
                "mp::Queue<T>: T must be mp::Transportable (see mp/codec.h)");

 public:
  // Queue(maxsize, ring_bytes): maxsize <= 0 means no limit on the number
  // of items (then only the ring's `ring_bytes` bound the data in flight).
  explicit Queue(long long maxsize = 0,
                 std::size_t ring_bytes = internal::ShmChannel::kDefaultCapacity)
      : channel_(ring_bytes, maxsize > 0 ? clamp_max(maxsize) : 0),
        maxsize_(maxsize > 0 ? maxsize : 0) {}

  Queue(Queue&& o) noexcept
      : channel_(std::move(o.channel_)), maxsize_(o.maxsize_), closed_(o.closed_.load()) {}
  Queue& operator=(Queue&& o) noexcept {
    channel_ = std::move(o.channel_);
    maxsize_ = o.maxsize_;
    closed_ = o.closed_.load();
    return *this;
  }
  Queue(const Queue&) = delete;
  Queue& operator=(const Queue&) = delete;
  // The destructor retires this process as a producer and as a consumer
  // (see close()); the shared ring lives on while any process still maps it.
  virtual ~Queue() {
    if (channel_.valid() && !closed_.load()) channel_.retire();
  }

  // put(v) appends v, blocking while the queue (or its ring) is full.
  // Throws mp::BrokenPipeError, delivering nothing, if it is blocked and
  // every process that has got from the queue is gone (see the top).
  void put(const T& v) { put_until(v, std::nullopt); }

  // put(v, timeout) throws mp::Full if there was no room within `timeout`.
  template <class Rep, class Period>
  void put(const T& v, std::chrono::duration<Rep, Period> timeout) {
    put_until(v, queue_detail::deadline_in(timeout));
  }

  // put_nowait(v) throws mp::Full at once if there is no room.
  void put_nowait(const T& v) { put_until(v, queue_detail::now_deadline()); }

  // try_put(v) is put_nowait that returns false instead of throwing Full.
  bool try_put(const T& v) { return send(v, queue_detail::now_deadline()); }

  // get() removes and returns the oldest item, blocking until there is one.
  // Throws mp::EOFError when the queue is empty and all producers are gone.
  T get() { return get_until(std::nullopt); }

  // get(timeout) throws mp::Empty if no item came within `timeout` (never
  // EOFError: the timeout is the caller's bound).
  template <class Rep, class Period>
  T get(std::chrono::duration<Rep, Period> timeout) {
    return get_until(queue_detail::deadline_in(timeout));
  }

  // get_nowait() throws mp::Empty at once if the queue is empty.
  T get_nowait() { return get_until(queue_detail::now_deadline()); }

  // get_into(out) is get() that stores the item in `out` instead of
  // returning a new T. For T = std::string the bytes land in out's own
  // buffer when it is large enough, so a loop that reuses one string
  // allocates nothing per item (get() allocates a new string for each item
  // longer than the small-string buffer: about a third of a 64-byte get
  // here). Other types are decoded and move-assigned. If it throws (the
  // same errors as get()), `out` holds no item: a std::string is left
  // empty, any other T unchanged.
  void get_into(T& out) { get_into_until(out, std::nullopt); }

  // get_into(out, timeout) is get(timeout) into `out`: throws mp::Empty if
  // no item came within `timeout`.
  template <class Rep, class Period>
  void get_into(T& out, std::chrono::duration<Rep, Period> timeout) {
    get_into_until(out, queue_detail::deadline_in(timeout));
  }

  // try_get() is get_nowait that returns nullopt instead of throwing Empty.
  std::optional<T> try_get() { return receive(queue_detail::now_deadline(), false); }

  // try_get(timeout) is get(timeout) that returns nullopt instead of
  // throwing Empty.
  template <class Rep, class Period>
  std::optional<T> try_get(std::chrono::duration<Rep, Period> timeout) {
    return receive(queue_detail::deadline_in(timeout), true);
  }

  // qsize() is the exact number of items in the queue.
  std::size_t qsize() const noexcept { return channel_.size(); }
  // empty() is qsize() == 0.
  bool empty() const noexcept { return qsize() == 0; }
  // full() is qsize() >= maxsize() for a bounded queue, false otherwise.
  bool full() const noexcept {
    return maxsize_ > 0 && qsize() >= static_cast<std::size_t>(maxsize_);
  }
  // maxsize() is the bound given at construction (0: none).
  long long maxsize() const noexcept { return maxsize_; }

  // close() ends this process's use of the queue (see the top of the file).
  // Idempotent.
  void close() noexcept {
    if (closed_.exchange(true)) return;
    channel_.retire();
    channel_.wake_all();
  }
  // closed() tells whether close() was called through this object.
  bool closed() const noexcept { return closed_.load(); }

  // channel() is the transport underneath (for mp's own modules and tests;
  // see mp/internal/shm_channel.h).
  internal::ShmChannel& channel() noexcept { return channel_; }
  const internal::ShmChannel& channel() const noexcept { return channel_; }

 private:
  static std::uint32_t clamp_max(long long m) {
    return m > 0x7fff'ffff ? 0x7fff'ffffu : static_cast<std::uint32_t>(m);
  }

  void put_until(const T& v, const queue_detail::Deadline& deadline) {
    if (!send(v, deadline)) queue_detail::throw_full();
  }

  // Byte strings skip the codec's intermediate buffer: their encoding is
  // documented (mp/codec.h) as a u64 length and then the bytes, so they are
  // sent as those two parts and received straight into the result.
  static constexpr bool kBytes = std::is_same_v<T, std::string>;
  // Arithmetic values (not bool) skip it too: mp/codec.h encodes them as
  // their sizeof(T) native bytes, so the value itself is the message
  // (conformance/queue_test.cc checks the bytes equal mp::encode(v)).
  static constexpr bool kRawScalar = std::is_arithmetic_v<T> && !std::is_same_v<T, bool>;

  bool send(const T& v, const queue_detail::Deadline& deadline) {
    if (closed_.load(std::memory_order_relaxed)) queue_detail::throw_closed();
    queue_detail::ChannelStatus st;
    if constexpr (kBytes) {
      const std::uint64_t len = v.size();
      st = channel_.send_parts(&len, sizeof len, v.data(), v.size(), deadline, &closed_);
    } else if constexpr (kRawScalar) {
      st = channel_.send_bytes(&v, sizeof v, deadline, &closed_);
    } else {
      std::string& buf = queue_detail::encode_buffer();
      buf.clear();
      encode_into(buf, v);  // may throw: nothing sent yet
      st = channel_.send_bytes(buf.data(), buf.size(), deadline, &closed_);
      queue_detail::trim_buffer(buf);
    }
    if (st == queue_detail::ChannelStatus::kCancelled) queue_detail::throw_closed();
    if (st == queue_detail::ChannelStatus::kBrokenPipe) queue_detail::throw_no_consumers();
    return st == queue_detail::ChannelStatus::kOk;
  }

  T get_until(const queue_detail::Deadline& deadline) {
    if constexpr (kBytes) {
      std::string bytes;  // returned without a move (NRVO)
      if (!receive_bytes(bytes, deadline, true)) queue_detail::throw_empty();
      return bytes;
    } else {
      std::optional<T> v = receive(deadline, true);
      if (!v) queue_detail::throw_empty();
      return std::move(*v);
    }
  }

  void get_into_until(T& out, const queue_detail::Deadline& deadline) {
    if constexpr (kBytes) {
      bool got = false;
      try {
        got = receive_bytes(out, deadline, true);
      } catch (...) {
        out.clear();
        throw;
      }
      if (!got) {
        out.clear();
        queue_detail::throw_empty();
      }
    } else {
      out = get_until(deadline);
    }
  }

  // receive_status turns a channel status into: true (a message is there),
  // false (none: timed out, or end of input when !eof_throws), or a throw.
  bool receive_status(queue_detail::ChannelStatus st, bool eof_throws) {
    switch (st) {
      case queue_detail::ChannelStatus::kOk:
        return true;
      case queue_detail::ChannelStatus::kCancelled:
        queue_detail::throw_closed();
      case queue_detail::ChannelStatus::kEof:
        if (eof_throws) queue_detail::throw_eof();
        return false;
      case queue_detail::ChannelStatus::kTimedOut:
      case queue_detail::ChannelStatus::kBrokenPipe:  // send and join only
        return false;
    }
    return false;
  }

  // receive_bytes (T = std::string) receives straight into `out`: the
  // encoding's u64 length is split off into `len` and checked.
  bool receive_bytes(std::string& out, const queue_detail::Deadline& deadline, bool eof_throws) {
    if (closed_.load(std::memory_order_relaxed)) queue_detail::throw_closed();
    std::uint64_t len = ~std::uint64_t{0};
    if (!receive_status(channel_.recv_bytes(out, deadline, &closed_, &len, sizeof len),
                        eof_throws)) {
      return false;
    }
    if (len != out.size()) queue_detail::throw_bad_length(len, out.size());
    return true;
  }

  std::optional<T> receive(const queue_detail::Deadline& deadline, bool eof_throws) {
    if constexpr (kBytes) {
      std::optional<T> v(std::in_place);
      if (!receive_bytes(*v, deadline, eof_throws)) v.reset();
      return v;
    } else {
      if (closed_.load(std::memory_order_relaxed)) queue_detail::throw_closed();
      std::string& buf = queue_detail::decode_buffer();
      if (!receive_status(channel_.recv_bytes(buf, deadline, &closed_), eof_throws)) {
        return std::nullopt;
      }
      struct Trim {
        std::string& b;
        ~Trim() { queue_detail::trim_buffer(b); }
      } trim{buf};
      return decode<T>(std::string_view(buf));
    }
  }

  template <class>
  friend struct codec_traits;
  Queue(internal::ShmChannel channel, long long maxsize)
      : channel_(std::move(channel)), maxsize_(maxsize) {}

  internal::ShmChannel channel_;
  long long maxsize_;
  std::atomic<bool> closed_{false};  // this process's handle was closed
};

// SimpleQueue<T> — CPython's SimpleQueue: an unbounded queue with put(),
// get(), empty() and close() only. Same transport and guarantees as Queue.
template <class T>
class SimpleQueue {
 public:
  explicit SimpleQueue(std::size_t ring_bytes = internal::ShmChannel::kDefaultCapacity)
      : q_(0, ring_bytes) {}

  // put(v) appends v (blocks only while the ring is full; throws
  // mp::BrokenPipeError as Queue::put() if every consumer is gone then).
  void put(const T& v) { q_.put(v); }
  // get() removes and returns the oldest item, blocking until there is one;
  // throws mp::EOFError as Queue::get().
  T get() { return q_.get(); }
  // empty() tells whether the queue holds no item.
  bool empty() const noexcept { return q_.empty(); }
  // close() ends this process's use of the queue; later put/get throw
  // mp::ValueError. Idempotent.
  void close() noexcept { q_.close(); }

 private:
  friend struct codec_traits<SimpleQueue>;
  explicit SimpleQueue(Queue<T> q) : q_(std::move(q)) {}
  Queue<T> q_;
};

// JoinableQueue<T> — CPython's JoinableQueue: a Queue that counts
// unfinished tasks. Every put() adds one; task_done() says a consumer
// finished one item; join() blocks until the count is zero.
//
// task_done() called more times than items were put throws mp::ValueError
// "task_done() called too many times" and changes nothing. The count lives
// in shared memory and is updated in the same atomic step that publishes an
// item, so a producer killed mid-put never leaves a phantom task. An item
// whose consumer died before task_done() stays unfinished (as in CPython):
// join(timeout) is there for that case.
template <class T>
class JoinableQueue : public Queue<T> {
 public:
  using Queue<T>::Queue;

  // task_done() marks one item as processed.
  void task_done() {
    if (!this->channel().task_done()) {
      throw ValueError("task_done() called too many times");
    }
  }

  // join() blocks until every item put has been marked task_done().
  // Throws mp::BrokenPipeError if tasks are unfinished and every process
  // that has got from the queue is gone (nobody is left to finish them;
  // CPython's join() hangs forever there).
  void join() {
    if (this->channel().join(std::nullopt) == queue_detail::ChannelStatus::kBrokenPipe) {
      queue_detail::throw_join_no_consumers(this->channel().unfinished_tasks());
    }
  }

  // join(timeout) is join() that gives up after `timeout`: false then. It
  // never throws BrokenPipeError (the caller chose its bound).
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) {
    return this->channel().join(queue_detail::deadline_in(timeout)) ==
           queue_detail::ChannelStatus::kOk;
  }

  // unfinished_tasks() is the number of items put and not yet task_done().
  std::size_t unfinished_tasks() noexcept { return this->channel().unfinished_tasks(); }

 private:
  friend struct codec_traits<JoinableQueue>;
  explicit JoinableQueue(Queue<T>&& q) : Queue<T>(std::move(q)) {}
};

// Travelling (mp/context.h): a queue passed to a child of any start method
// (as std::ref(q): queues are move-only) arrives as a handle to the same
// ring. The child registers as a producer or consumer at its first put or
// get, as a forked child does, so EOF and broken-pipe detection and every
// promise above hold for it. The encoding carries the ring's fd, so a queue
// travels only as a start argument, not through another queue or a pipe.
template <class T>
struct codec_traits<Queue<T>> {
  static void encode(Encoder& e, const Queue<T>& q) {
    if (q.closed_.load()) throw ValueError("mp::Queue: a closed queue cannot travel");
    internal::write_region(e, q.channel_.region(), "mp::Queue");
    e.write(q.maxsize_);
  }
  static Queue<T> decode(Decoder& d) {
    auto channel = internal::ShmChannel::attach(internal::read_region(d, 1));
    auto maxsize = d.read<long long>();
    return Queue<T>(std::move(channel), maxsize);
  }
};

template <class T>
struct codec_traits<SimpleQueue<T>> {
  static void encode(Encoder& e, const SimpleQueue<T>& q) { e.write(q.q_); }
  static SimpleQueue<T> decode(Decoder& d) { return SimpleQueue<T>(d.read<Queue<T>>()); }
};

template <class T>
struct codec_traits<JoinableQueue<T>> {
  static void encode(Encoder& e, const JoinableQueue<T>& q) {
    codec_traits<Queue<T>>::encode(e, q);
  }
  static JoinableQueue<T> decode(Decoder& d) {
    return JoinableQueue<T>(codec_traits<Queue<T>>::decode(d));
  }
};

}  // namespace mp
