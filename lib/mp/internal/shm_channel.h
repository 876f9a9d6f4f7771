// mp/internal/shm_channel.h — the byte transport under mp::Queue (and the
// pool's task and result channels): a multi-producer, multi-consumer message
// ring in anonymous MAP_SHARED memory that survives SIGKILL of any peer.
//
// Internal. Users include mp/queue.h.
//
// What it is
//   ShmChannel carries whole messages (byte strings of any length, 0 to many
//   GiB) between every process forked after its construction. Messages are
//   delivered exactly once, FIFO per producer; a message is seen by a
//   consumer only when it is complete (never torn, never half-visible).
//
// How it is built (the invariants recovery relies on)
//   * One anonymous MAP_SHARED region: a header page, then a power-of-two
//     byte ring (at most 1 GiB). Nothing is named, so nothing can leak in
//     /dev/shm, and no fd is held.
//   * Records: an 8-byte header {len, kind} then the payload, padded to 8.
//     kind has a BEGIN and an END bit. A message that fits in half the ring
//     is one BEGIN|END record (a "whole" message). A larger one is streamed
//     as a BEGIN chunk (whose first 8 payload bytes hold the total length),
//     middle chunks and an END chunk; the producer holds the producer lock
//     for the whole stream and one consumer holds the consumer lock while
//     it reassembles, so the chunks of two messages never interleave.
//   * Each side's whole state is ONE atomic 64-bit commit word: a message
//     count in the high half, a ring position in the low half (8-byte units
//     modulo 2^32). Producer: {published, tail}; consumer: {consumed, head}.
//     Moving a side is one atomic operation, so a process killed anywhere
//     leaves either nothing visible or the finished step: nothing to repair.
//     The commit words (what the other side polls) have cache lines of
//     their own, away from the locks and hints.
//   * Producers serialise on the producer lock: write the record past the
//     tail, store the producer word (the commit point), release.
//   * Consumers take a whole message WITHOUT a lock: copy it out, then claim
//     it by compare-and-swap of the consumer word. A claim that fails (another
//     consumer moved the head) discards the copy and tries the next record;
//     a consumer killed before its claim leaves the message for the next.
//     Bytes read at a head that has moved meanwhile may be overwritten: they
//     count only if the claim succeeds, and a header or length is checked
//     against the consumer word before it is used.
//   * Chunks are claimed the same way, but only by the holder of the
//     consumer lock, so one receiver reassembles each streamed message. A
//     consumer killed while reassembling has consumed its first chunks: that
//     message is lost (exactly as one whose receiver dies right after
//     receiving it); the next lock holder finds a chunk without BEGIN at the
//     head and discards the rest of that message; no other is touched.
//   * A producer killed (or timed out) mid-stream leaves an unfinished
//     message: its chunks are discarded by the consumer, which notices either
//     the next message's BEGIN or that the producer lock is free (the
//     streaming producer holds it until END) while no chunk is left.
//   * The side locks: a lock word holds its owner's pid and a generation; a
//     waiter that sleeps a liveness slice without getting it checks that
//     pid and takes a dead owner's lock over with one CAS (a robust mutex's
//     EOWNERDEAD, at a third of the cost of glibc's robust mutexes, whose
//     robust-list work was half of an uncontended put+get). Limits: a dead
//     owner's pid reused by a live process delays the take-over until that
//     process ends; a thread cancelled inside send/recv (pthread_cancel) is
//     not detected.
//   * Blocking is a futex on a sequence word per direction, with a
//     "waiters" bit so a producer pays a wake syscall only when a consumer
//     sleeps. A producer waiting for ring space is woken once a quarter of
//     the ring is free, not per record. Every sleeper re-checks at least
//     every kLivenessSlice, so a peer killed between its progress and its
//     wake-up call delays the others by at most that. A receiver that finds
//     the channel empty first polls it for up to 50 us (every ~2.4 us,
//     yielding the CPU every other poll, one receiver at a time): a consumer
//     that keeps up with its producer would otherwise sleep after nearly
//     every message and cost the producer a futex wake each time (measured
//     at 8 B: 6-8 M messages/s without the poll, 13-14 M with it).
//   * Asymmetric fences: a producer checks for sleepers after publishing
//     with a compiler barrier only, not a full fence; a receiver (or a
//     producer waiting for the producer lock) about to sleep pays instead,
//     with membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) after announcing
//     itself. Producers register for it before their first send. Without
//     the syscall producers use full fences (and a sleeper whose membarrier
//     fails re-checks every millisecond).
//   Per message, uncontended: a put is one lock CAS and plain stores, a get
//   one CAS; the single-producer raw ring in benchmarks/queue_bench.cc pays
//   one full fence per side.
//
// Using it (what Queue does, and what a pool's channels would do)
//   Create the ShmChannel before forking; every process then calls
//   send_bytes()/send_parts() and recv_bytes() with a Deadline (nullopt:
//   block; a past time point: try once; else an absolute steady_clock
//   time). Results are ChannelStatus values, never exceptions (but
//   std::bad_alloc from growing the caller's string). A cancel flag lets a
//   handle's close() end its own blocked calls. size() counts complete
//   messages; task_done()/join() give JoinableQueue's accounting.
//
// End of input (what a consumer blocked on an empty channel is told)
//   Every process that sends registers itself (pid and start time) in a small
//   table in the header. A receive WITHOUT a deadline on an empty channel
//   returns kEof once at least one process has registered and every
//   registered process has since retired (retire_producer(), called by
//   Queue::close() and ~Queue()) or died, checked when a waiter is woken by
//   a retirement and at least every kLivenessSlice. A receive with a
//   deadline just times out (the caller chose its bound). A process counts
//   from its first send, so a consumer that outlives every producer it has
//   seen gets kEof even if another is about to start: use a deadline there.
//   More than kMaxProducers live senders turns detection off.
//
// Broken pipe (what a producer blocked on a full channel is told)
//   The mirror image: every process that receives registers in a second
//   table, from its first receive (timed or not). A send WITHOUT a deadline
//   blocked on a full channel (ring or max_messages) returns kBrokenPipe
//   once at least one process has received and every such process has
//   retired (retire_consumer(), also called by Queue::close() and ~Queue())
//   or died, checked when the sender is woken by a retirement and at least
//   every kLivenessSlice; join() without a deadline likewise, while tasks
//   are unfinished. Nothing is delivered then: a streamed message whose
//   sender gives up is abandoned as on a timeout. A sender with a deadline
//   just times out. More than kMaxConsumers live receivers turns it off.
//
// Thread safety: every member is safe to call from any thread of any process
// sharing the region. Construction must happen before the fork.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "mp/internal/futex.h"
#include "mp/internal/shm.h"

namespace mp::internal {

// ChannelStatus is the outcome of a channel operation.
enum class ChannelStatus {
  kOk,          // done
  kTimedOut,    // the deadline passed first (for a past deadline: would block)
  kEof,         // receive only: empty and every registered producer is gone
  kCancelled,   // the caller's cancel flag was set (checked when woken)
  kBrokenPipe,  // send and join only: full (or unfinished) and every
                // registered consumer is gone
};

class ShmChannel {
 public:
  // kDefaultCapacity is the ring size in bytes when none is given.
  static constexpr std::size_t kDefaultCapacity = std::size_t{1} << 20;
  // kMaxProducers is the size of the producer table used for EOF detection.
  static constexpr int kMaxProducers = 64;
  // kMaxConsumers is the size of the consumer table (broken-pipe detection).
  static constexpr int kMaxConsumers = 64;
  // kLivenessSlice bounds how long a blocked call goes without re-checking
  // its condition: producer liveness (EOF), a dead lock owner or streaming
  // producer, or progress whose wake-up its maker died before sending.
  static constexpr std::chrono::milliseconds kLivenessSlice{100};

  // Creates a channel whose ring holds `capacity` bytes (rounded up to a
  // power of two, at least 4 KiB) and at most `max_messages` complete
  // messages (0: no limit but the ring's bytes).
  explicit ShmChannel(std::size_t capacity = kDefaultCapacity, std::uint32_t max_messages = 0);
  ~ShmChannel();
  // attach(region) is a handle to the channel that lives in `region` (one
  // that travelled to this process, internal/travel.h). Raises
  // mp::CodecError when the region does not hold a channel of its size.
  static ShmChannel attach(SharedRegion region);
  ShmChannel(ShmChannel&&) noexcept;
  ShmChannel& operator=(ShmChannel&&) noexcept;
  ShmChannel(const ShmChannel&) = delete;
  ShmChannel& operator=(const ShmChannel&) = delete;

  // send_bytes appends one message of `size` bytes. Blocks while the channel
  // holds max_messages messages or the ring has no room, until `deadline`
  // (nullopt: forever; a deadline already passed: try once). kTimedOut
  // means nothing was delivered: a message streamed in chunks whose deadline
  // passed mid-stream is abandoned and discarded by the consumer.
  // A blocked send also ends, with kCancelled, when `*cancel` is true once it
  // is woken (set the flag, then call wake_all()), and without a deadline
  // with kBrokenPipe when every registered consumer is gone (see the top).
  ChannelStatus send_bytes(const void* data, std::size_t size, const Deadline& deadline,
                           const std::atomic<bool>* cancel = nullptr);

  // send_parts is send_bytes of the concatenation of two byte ranges (a
  // header and a body, without first copying them together).
  ChannelStatus send_parts(const void* head, std::size_t head_size, const void* body,
                           std::size_t body_size, const Deadline& deadline,
                           const std::atomic<bool>* cancel = nullptr);

  // recv_bytes removes the oldest complete message into `out` (its previous
  // contents are replaced; its capacity is reused). Blocks until a message
  // is available or `deadline`. Once the first chunk of a streamed message
  // has been taken the receive completes it regardless of the deadline
  // (the producer is streaming), unless the producer dies or abandons it,
  // in which case it is discarded and the wait goes on.
  // A blocked receive ends with kCancelled when `*cancel` is true once it is
  // woken (set the flag, then call wake_all()).
  // With `prefix`, the message's first `prefix_size` bytes are stored there
  // instead of in `out` (a header split off without a copy; a message
  // shorter than that leaves the rest of `prefix` untouched).
  ChannelStatus recv_bytes(std::string& out, const Deadline& deadline,
                           const std::atomic<bool>* cancel = nullptr, void* prefix = nullptr,
                           std::size_t prefix_size = 0);

  // size is the number of complete messages sent and not yet received: exact
  // right after a send in the sending process. Messages still being streamed
  // are not counted.
  std::size_t size() const noexcept;
  std::uint32_t max_messages() const noexcept;
  // bytes_used is how many ring bytes hold records not yet consumed
  // (diagnostics and tests: a snapshot, racy by nature).
  std::size_t bytes_used() const noexcept;
  std::size_t capacity() const noexcept;

  // valid() is false for a moved-from channel.
  bool valid() const noexcept { return static_cast<bool>(region_); }
  // region() is the shared memory the channel lives in.
  const SharedRegion& region() const noexcept { return region_; }

  // retire_producer says this process will send no more through this
  // handle (nothing happens if it never sent through it). Wakes blocked
  // receivers so that they can see end of input.
  void retire_producer() noexcept;
  // retire_consumer says this process will receive no more through this
  // handle (nothing happens if it never received through it). Wakes
  // blocked senders and joiners so that they can see a broken pipe.
  void retire_consumer() noexcept;
  // retire is both: this process is done with this handle.
  void retire() noexcept;

  // wake_receivers wakes every blocked receiver (they re-check their state);
  // wake_all wakes blocked senders too.
  void wake_receivers() noexcept;
  void wake_all() noexcept;

  // Task accounting for JoinableQueue: unfinished = messages ever sent -
  // tasks done. task_done() returns false (and changes nothing) when nothing
  // is unfinished. join() waits until nothing is unfinished (kOk), or the
  // deadline passed first (kTimedOut), or, without a deadline, every
  // registered consumer is gone with tasks unfinished (kBrokenPipe).
  bool task_done() noexcept;
  ChannelStatus join(const Deadline& deadline);
  std::uint32_t unfinished_tasks() const noexcept;

  struct Header;  // the shared layout, defined in shm_channel.cc

  // Geometry is the channel's fixed shape. Every handle keeps its own copy,
  // checked when it is made (construction or attach()), and never re-reads
  // it from shared memory: another process scribbling over the header can
  // garble messages but cannot make this one read or write outside the ring.
  struct Geometry {
    std::uint64_t capacity = 0;  // ring bytes, a power of two
    std::uint64_t mask = 0;      // capacity - 1
    std::uint32_t max_messages = 0;
    bool asymmetric = false;  // producers publish with light fences
  };

 private:
  struct AttachTag {};
  ShmChannel(AttachTag, SharedRegion region, Geometry geometry) noexcept;
  Header* h() const noexcept { return region_.as<Header>(); }
  std::byte* ring() const noexcept;

  SharedRegion region_;
  Geometry geometry_;
  // The processes that registered as a producer / consumer through this
  // handle (a forked child's copy still names the parent, so the child
  // registers itself).
  std::atomic<pid_t> producer_pid_{0};
  std::atomic<pid_t> consumer_pid_{0};
};

}  // namespace mp::internal
