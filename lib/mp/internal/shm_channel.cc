#include "mp/internal/shm_channel.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <system_error>
#include <utility>

#include "mp/errors.h"
#include "mp/internal/liveness.h"

namespace mp::internal {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::uint32_t kBegin = 1;
constexpr std::uint32_t kEnd = 2;
constexpr std::uint32_t kWaiters = 0x8000'0000u;  // a futex sleeper exists
constexpr std::size_t kRecordHeader = 8;
constexpr std::size_t kHeaderBytes = 4096;
constexpr std::size_t kMinCapacity = 4096;
constexpr std::size_t kMaxCapacity = std::size_t{1} << 30;
// A nonblocking call still waits this long for the lock of its side, which
// is held only for the length of a copy unless its holder streams.
constexpr std::chrono::milliseconds kLockGrace{5};

struct RecordHeader {
  std::uint32_t len;   // payload bytes that follow (unpadded)
  std::uint32_t kind;  // kBegin | kEnd bits
};
static_assert(sizeof(RecordHeader) == kRecordHeader);

// A commit word: a message count in the high half and a ring position in
// the low half. Positions count 8-byte units modulo 2^32 (records are
// 8-aligned), which covers any ring up to 32 GiB: a byte offset is
// (units * 8) & mask, and a distance is the unsigned 32-bit difference.
// Producer: {messages published, tail}; consumer: {messages consumed, head}.
constexpr std::uint64_t kUnit = 8;
constexpr std::uint32_t msgs_of(std::uint64_t w) { return static_cast<std::uint32_t>(w >> 32); }
constexpr std::uint32_t pos_of(std::uint64_t w) { return static_cast<std::uint32_t>(w); }
constexpr std::uint64_t byte_pos(std::uint32_t units) { return std::uint64_t{units} * kUnit; }
// advance is `w` after one record of `units` units and kind `kind`.
constexpr std::uint64_t advance(std::uint64_t w, std::uint32_t units, std::uint32_t kind) {
  const std::uint32_t msgs = msgs_of(w) + ((kind & kEnd) ? 1u : 0u);
  return (std::uint64_t{msgs} << 32) | static_cast<std::uint32_t>(pos_of(w) + units);
}

constexpr std::uint64_t record_size(std::uint64_t payload) {
  return kRecordHeader + ((payload + 7) & ~std::uint64_t{7});
}
constexpr std::uint32_t record_units(std::uint64_t payload) {
  return static_cast<std::uint32_t>(record_size(payload) / kUnit);
}

// A registry entry: start time (low 32 bits) << 32 | pid; 0 is free.
std::uint64_t member_key(pid_t pid, std::uint64_t start) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(start)) << 32) |
         static_cast<std::uint32_t>(pid);
}

// wake_seq clears the waiters bit of `seq` (advancing it) and wakes all.
void wake_seq(std::atomic<std::uint32_t>& seq, std::uint32_t v) noexcept {
  while ((v & kWaiters) && !seq.compare_exchange_weak(v, (v + 1) & ~kWaiters)) {
  }
  futex_wake_all(&seq);
}

// wake_announced wakes the sleepers of `seq` if any announced themselves
// (the caller's fence, full or light, orders this after its progress).
void wake_announced(std::atomic<std::uint32_t>& seq) noexcept {
  const std::uint32_t v = seq.load(std::memory_order_relaxed);
  if (v & kWaiters) wake_seq(seq, v);
}

// wake_unconditionally wakes every sleeper on `seq` (rare paths).
void wake_unconditionally(std::atomic<std::uint32_t>& seq) noexcept {
  std::uint32_t v = seq.load(std::memory_order_relaxed);
  while (!seq.compare_exchange_weak(v, (v + 1) & ~kWaiters)) {
  }
  futex_wake_all(&seq);
}

Deadline earlier(const Deadline& a, Clock::time_point b) {
  if (!a || b < *a) return b;
  return a;
}

// ---- asymmetric fences ----------------------------------------------------------
// A producer publishes a message, then checks for sleeping receivers (and
// frees its lock, then checks for sleeping lockers): a store, then a load,
// which need a full fence between them (Dekker) so that a receiver going to
// sleep at that moment is not missed. That fence was a third of the cost of
// a put. With membarrier(2) the producer orders the two with a compiler
// barrier only, and a receiver (or locker) about to sleep, after announcing
// itself, forces a barrier on every CPU running a registered process
// (MEMBARRIER_CMD_GLOBAL_EXPEDITED: 1-20 us here), so that it pays, and
// only when it sleeps. A producer registers its process before its first
// send. Without the syscall (old kernel, seccomp) producers use full fences;
// a sleeper whose heavy fence fails caps its sleep at kFenceless.
constexpr auto kFenceless = std::chrono::milliseconds(1);

long membarrier(int cmd) noexcept { return syscall(__NR_membarrier, cmd, 0u, 0); }

// kernel_has_heavy_fence: membarrier(GLOBAL_EXPEDITED) is available.
bool kernel_has_heavy_fence() noexcept {
  static const bool ok = [] {
    const long q = membarrier(MEMBARRIER_CMD_QUERY);
    const long need = MEMBARRIER_CMD_GLOBAL_EXPEDITED | MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED;
    return q >= 0 && (q & need) == need;
  }();
  return ok;
}

// heavy_fence: a full barrier on every CPU that runs a registered process.
bool heavy_fence() noexcept { return membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) == 0; }

// The process whose registration succeeded (this pid) or failed (-pid).
std::atomic<pid_t> light_fence_pid{0};

[[gnu::noinline]] bool register_light_fences(pid_t me) noexcept {
  const bool ok = membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0;
  light_fence_pid.store(ok ? me : -me, std::memory_order_relaxed);
  return ok;
}

// light_fences_for: this process (pid `me`) may publish with a compiler
// barrier in place of a full fence.
inline bool light_fences_for(pid_t me) noexcept {
  const pid_t v = light_fence_pid.load(std::memory_order_relaxed);
  if (v == me) return true;
  if (v == -me) return false;
  return register_light_fences(me);
}

// sleep_on sleeps on `seq` until woken or `until`, unless ready() holds
// once this sleeper is announced. `heavy`: the waker publishes with light
// fences, so the announcement is followed by a heavy one. Returns false on
// timeout.
template <class Ready>
bool sleep_on(std::atomic<std::uint32_t>& seq, Ready ready, Deadline until, bool heavy = false) {
  std::uint32_t v = seq.fetch_or(kWaiters) | kWaiters;  // seq_cst RMW
  if (heavy && !heavy_fence()) until = earlier(until, Clock::now() + kFenceless);
  if (ready()) return true;
  return futex_wait_until(&seq, v, until);
}

}  // namespace

// ---- shared layout ----------------------------------------------------------

namespace {

// Each side's whole state is its commit word, so that one atomic operation
// moves it and nothing needs repair after a process dies mid-operation. The
// producer's is stored under the producer lock; the consumer's is claimed
// by compare-and-swap (a consumer takes a whole message without a lock).
// Each side is two cache lines: the commit word, which the other side
// polls, alone on the first; the lock and the hints on the second, so that
// polling does not pull the lock's line from its holder mid-operation.
struct alignas(64) ProducerSide {
  std::atomic<std::uint64_t> commit{0};            // {messages published, tail}
  alignas(64) std::atomic<std::uint32_t> lock{0};  // owner pid and generation, see lock_side
  std::atomic<std::uint32_t> lock_seq{0};          // lockers sleep here, see SideLock
  // Hint, written under the producer lock: the consumer commit word last
  // seen. It trails the real one by less than the ring (it is refreshed
  // whenever it shows too little room), so 32-bit distances stay exact.
  std::atomic<std::uint64_t> seen_consumer{0};
};

struct alignas(64) ConsumerSide {
  std::atomic<std::uint64_t> commit{0};  // {messages consumed, head}
  // Held by a consumer reassembling a streamed message (and by whoever
  // skips the chunks of a message whose receiver died).
  alignas(64) std::atomic<std::uint32_t> lock{0};
  std::atomic<std::uint32_t> lock_seq{0};
  // Hint, written by any consumer: the producer commit word last seen, so
  // that a consumer that is behind does not pull the producer's line away
  // on every message. Consumers refresh it whenever their head reaches it,
  // so it never trails the head by more than what is in flight.
  std::atomic<std::uint64_t> seen_producer{0};
};

// Registry is the table of the processes that have used one side of the
// channel (pid and start time): a producer from its first send, a consumer
// from its first receive. It tells a blocked receiver that every producer
// is gone (end of input) and a blocked sender that every consumer is
// (broken pipe). A process leaves it when it retires or is found dead.
struct Registry {
  alignas(64) std::atomic<std::uint32_t> registered_ever{0};
  std::atomic<std::uint32_t> overflow{0};  // more live members than slots: no detection
  std::atomic<std::uint32_t> gen{0};       // bumped on retire
  std::atomic<std::uint64_t> slots[ShmChannel::kMaxProducers] = {};
};
static_assert(ShmChannel::kMaxProducers == ShmChannel::kMaxConsumers);

}  // namespace

struct ShmChannel::Header {
  std::uint64_t capacity;      // immutable
  std::uint64_t mask;          // immutable
  std::uint32_t max_messages;  // immutable
  // Immutable: producers may publish with light fences, so sleepers on
  // data_seq and on the producer lock make heavy ones (asymmetric fences).
  bool asymmetric;
  ProducerSide p;
  ConsumerSide c;
  alignas(64) std::atomic<std::uint32_t> data_seq{0};   // receivers sleep here
  alignas(64) std::atomic<std::uint32_t> space_seq{0};  // senders sleep here
  // The consumer head at which a sender sleeping for ring space wants to be
  // woken: it waits for a quarter of the ring, not for one record, so that
  // a full ring does not cost a wake-up per record consumed.
  std::atomic<std::uint32_t> space_wake_at{0};  // a head position
  // A receiver spinning for records holds this until its steady-clock
  // deadline (ns); 0 or a past time: nobody spins.
  alignas(64) std::atomic<std::uint64_t> spinner_until{0};
  alignas(64) std::atomic<std::uint32_t> tasks_done{0};
  Registry producers;
  Registry consumers;
};
static_assert(sizeof(ShmChannel::Header) <= kHeaderBytes);

namespace {

using Header = ShmChannel::Header;

// notify_*_after_fence wake the sleepers of one direction, if any; the
// caller made a full fence after publishing its progress (Dekker with
// sleep_on's RMW). Receivers wake on any message; a sender waiting for ring
// space only once its wake-up point (space_wake_at) is reached.
void notify_data_after_fence(Header* h) noexcept { wake_announced(h->data_seq); }

void notify_space_after_fence(Header* h) noexcept {
  const std::uint32_t v = h->space_seq.load(std::memory_order_relaxed);
  if (!(v & kWaiters)) return;
  const std::uint32_t head = pos_of(h->c.commit.load(std::memory_order_relaxed));
  const std::uint32_t wake_at = h->space_wake_at.load(std::memory_order_relaxed);
  if (static_cast<std::int32_t>(head - wake_at) >= 0) wake_seq(h->space_seq, v);
}

// The side locks. A lock word holds the owner's pid in its low 22 bits (0:
// free) and a generation in the high 10, advanced at every acquisition so
// that a sleeper never mistakes a re-acquisition by the same process for the
// hold it went to sleep on. It is held only inside send/recv, by a thread
// that cannot exit there, so "the owner died" is "the owner process died":
// a waiter that slept a liveness slice checks the owner's pid (a zombie is
// dead) and, if it is gone, takes the lock over with one CAS (the
// EOWNERDEAD of a robust pthread mutex, without its robust-list cost: that
// cost was half of an uncontended put+get). Nothing needs repair: a side's
// state is its commit word, moved by one atomic operation. A pid reused by
// a live process delays the take-over until that process exits; it cannot
// let two owners in. Release is one full barrier
// (an exchange on x86), which the caller's wake-up check needs anyway.
constexpr std::uint32_t kOwnerMask = (1u << 22) - 1;  // pid_max <= 2^22
constexpr std::uint32_t kGenerationOne = 1u << 22;
constexpr int kLockSpins = 64;

std::uint32_t owned_by_me(std::uint32_t v) noexcept {
  return ((v + kGenerationOne) & ~kOwnerMask) | static_cast<std::uint32_t>(self_pid());
}

bool owner_dead(std::uint32_t word) noexcept {
  const auto owner = static_cast<pid_t>(word & kOwnerMask);
  return owner != 0 && owner != self_pid() && !process_alive(owner, 0);
}

// A side's lock: its word, and the sequence word its waiters sleep on
// (announced with kWaiters and advanced by a release that sees it, so that
// no waiter's announcement is lost). `heavy`: the lock is released with a
// light fence (the producer lock, see "asymmetric fences").
struct SideLock {
  std::atomic<std::uint32_t>& word;
  std::atomic<std::uint32_t>& seq;
  bool heavy = false;
};

bool try_acquire(std::atomic<std::uint32_t>& word) noexcept {
  std::uint32_t v = word.load(std::memory_order_relaxed);
  return (v & kOwnerMask) == 0 &&
         word.compare_exchange_strong(v, owned_by_me(v), std::memory_order_acquire);
}

// try_take takes the lock if it is free or its owner died; false otherwise.
bool try_take(SideLock l) {
  if (try_acquire(l.word)) return true;
  std::uint32_t v = l.word.load(std::memory_order_relaxed);
  return (v & kOwnerMask) != 0 && owner_dead(v) &&
         l.word.compare_exchange_strong(v, owned_by_me(v), std::memory_order_acquire);
}

// lock_side takes a side's lock, taking it over if its owner died.
// Returns false if `deadline` passed first. A deadline already passed
// still allows kLockGrace for a holder in the middle of a copy.
[[gnu::noinline]] bool lock_side_slow(SideLock l, const Deadline& deadline) {
  for (int i = 0; i < kLockSpins; ++i) {
    cpu_relax();
    if (try_acquire(l.word)) return true;
  }
  Deadline lock_deadline = deadline;
  if (deadline) lock_deadline = std::max(*deadline, Clock::now() + kLockGrace);
  for (;;) {
    std::uint32_t v = l.word.load(std::memory_order_relaxed);
    if ((v & kOwnerMask) == 0) {
      if (l.word.compare_exchange_strong(v, owned_by_me(v), std::memory_order_acquire)) return true;
      continue;
    }
    if (sleep_on(
            l.seq, [&] { return l.word.load(std::memory_order_relaxed) != v; },
            earlier(lock_deadline, Clock::now() + ShmChannel::kLivenessSlice), l.heavy)) {
      continue;
    }
    if (l.word.load(std::memory_order_relaxed) == v && owner_dead(v) &&
        l.word.compare_exchange_strong(v, owned_by_me(v), std::memory_order_acquire)) {
      return true;
    }
    if (expired(lock_deadline)) return false;
  }
}

inline bool lock_side(SideLock l, const Deadline& deadline) {
  return try_acquire(l.word) || lock_side_slow(l, deadline);
}

// release_side frees the lock and wakes its waiters. `light`: with a
// compiler barrier (the waiters make heavy fences), else with one full
// barrier. After it the caller may check for sleepers of its own
// (notify_*_after_fence), under the same kind of fence.
void release_side(SideLock l, bool light = false) noexcept {
  const std::uint32_t freed = l.word.load(std::memory_order_relaxed) & ~kOwnerMask;
  if (light) {
    l.word.store(freed, std::memory_order_release);
    std::atomic_signal_fence(std::memory_order_seq_cst);
  } else {
#if defined(__x86_64__) || defined(__i386__)
    // A locked exchange is a full barrier on x86 and costs less than the
    // store + mfence that the portable form compiles to.
    l.word.exchange(freed, std::memory_order_seq_cst);
#else
    l.word.store(freed, std::memory_order_release);
    std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
  }
  wake_announced(l.seq);
}

// Unlock releases a side's lock at scope exit, then wakes the other side's
// sleepers if this call published or consumed something.
struct Unlock {
  enum Notify { kNone, kData, kSpace };
  SideLock lock;
  Header* h;
  bool light = false;  // see release_side
  bool active = true;
  Notify notify = kNone;
  ~Unlock() {
    if (!active) return;
    release_side(lock, light);
    if (notify == kData) notify_data_after_fence(h);
    if (notify == kSpace) notify_space_after_fence(h);
  }
};

}  // namespace

// ---- construction -------------------------------------------------------------

ShmChannel::ShmChannel(std::size_t capacity, std::uint32_t max_messages) {
  std::size_t cap = kMinCapacity;
  capacity = std::min(capacity, kMaxCapacity);
  while (cap < capacity) cap <<= 1;
  region_ = SharedRegion(kHeaderBytes + cap);
  Header* hh = new (region_.data()) Header;
  geometry_ = Geometry{cap, cap - 1, max_messages, kernel_has_heavy_fence()};
  hh->capacity = geometry_.capacity;
  hh->mask = geometry_.mask;
  hh->max_messages = geometry_.max_messages;
  hh->asymmetric = geometry_.asymmetric;
}

ShmChannel::~ShmChannel() = default;

ShmChannel::ShmChannel(AttachTag, SharedRegion region, Geometry geometry) noexcept
    : region_(std::move(region)), geometry_(geometry) {}

ShmChannel ShmChannel::attach(SharedRegion region) {
  if (region.size() < kHeaderBytes) {
    throw CodecError("mp codec: a queue's shared region is smaller than its header");
  }
  const Header* hh = region.as<Header>();
  const std::size_t cap = hh->capacity;
  if (cap < kMinCapacity || cap > kMaxCapacity || (cap & (cap - 1)) != 0 || hh->mask != cap - 1 ||
      region.size() < kHeaderBytes + cap) {
    throw CodecError(
        fmt::format("mp codec: a queue's shared region of {} bytes does not hold a "
                    "channel (capacity {})",
                    region.size(), cap));
  }
  const Geometry g{cap, cap - 1, hh->max_messages, hh->asymmetric};
  return ShmChannel(AttachTag{}, std::move(region), g);
}

ShmChannel::ShmChannel(ShmChannel&& o) noexcept
    : region_(std::move(o.region_)),
      geometry_(o.geometry_),
      producer_pid_(o.producer_pid_.exchange(0)),
      consumer_pid_(o.consumer_pid_.exchange(0)) {}

ShmChannel& ShmChannel::operator=(ShmChannel&& o) noexcept {
  region_ = std::move(o.region_);
  geometry_ = o.geometry_;
  producer_pid_ = o.producer_pid_.exchange(0);
  consumer_pid_ = o.consumer_pid_.exchange(0);
  return *this;
}

std::byte* ShmChannel::ring() const noexcept {
  return static_cast<std::byte*>(region_.data()) + kHeaderBytes;
}

std::size_t ShmChannel::capacity() const noexcept { return geometry_.capacity; }
std::uint32_t ShmChannel::max_messages() const noexcept { return geometry_.max_messages; }

std::size_t ShmChannel::bytes_used() const noexcept {
  // Head first: the tail read after it is not behind it.
  const std::uint32_t head = pos_of(h()->c.commit.load(std::memory_order_acquire));
  const std::uint32_t tail = pos_of(h()->p.commit.load(std::memory_order_acquire));
  return static_cast<std::size_t>(byte_pos(tail - head));
}

std::size_t ShmChannel::size() const noexcept {
  // Consumer first: the producer count read after it can only be larger.
  std::uint32_t got = msgs_of(h()->c.commit.load(std::memory_order_acquire));
  std::uint32_t put = msgs_of(h()->p.commit.load(std::memory_order_acquire));
  auto n = static_cast<std::int32_t>(put - got);
  return n > 0 ? static_cast<std::size_t>(n) : 0;
}

// ---- identity and the registries ----------------------------------------------

namespace {

void enrol(Registry& reg, pid_t pid) noexcept {
  const std::uint64_t key = member_key(pid, self_start_time());
  reg.registered_ever.store(1);
  for (auto& slot : reg.slots) {
    if (slot.load() == key) return;
  }
  for (int pass = 0; pass < 2; ++pass) {
    for (auto& slot : reg.slots) {
      std::uint64_t cur = slot.load();
      if (cur != 0 && pass == 1 &&
          !process_alive(static_cast<pid_t>(static_cast<std::uint32_t>(cur)), cur >> 32)) {
        if (slot.compare_exchange_strong(cur, key)) return;  // reclaimed a dead entry
        continue;
      }
      if (cur == 0 && slot.compare_exchange_strong(cur, key)) return;
    }
  }
  reg.overflow.store(1);  // too many live members: no detection
}

// all_gone: at least one process enrolled and none is alive.
bool all_gone(Registry& reg) noexcept {
  if (!reg.registered_ever.load() || reg.overflow.load()) return false;
  for (auto& slot : reg.slots) {
    std::uint64_t cur = slot.load();
    if (cur == 0) continue;
    if (process_alive(static_cast<pid_t>(static_cast<std::uint32_t>(cur)), cur >> 32)) return false;
    slot.compare_exchange_strong(cur, 0);  // forget the dead
  }
  return true;
}

// leave: the calling process leaves `reg` if `enrolled` says it is in it.
// True if it was.
bool leave(Registry& reg, std::atomic<pid_t>& enrolled) noexcept {
  const pid_t me = self_pid();
  if (enrolled != me) return false;  // this process never used this side through this handle
  const std::uint64_t key = member_key(me, self_start_time());
  for (auto& slot : reg.slots) {
    std::uint64_t cur = key;
    slot.compare_exchange_strong(cur, 0);
  }
  enrolled = 0;
  reg.gen.fetch_add(1);
  return true;
}

// side_gone: a wait without a deadline, which slept a whole liveness slice
// (`woken` false) or saw a retirement in `reg` (its generation moved from
// `gen`), finds every member of `reg` gone while `ready()` still fails. The
// condition is checked after the members, so that progress made just
// before the last one left still counts.
template <class Ready>
bool side_gone(Registry& reg, std::uint32_t gen, bool woken, const Deadline& deadline,
               Ready ready) {
  return !deadline && (!woken || gen != reg.gen.load()) && all_gone(reg) && !ready();
}

}  // namespace

void ShmChannel::retire_producer() noexcept {
  if (leave(h()->producers, producer_pid_)) wake_receivers();
}

void ShmChannel::retire() noexcept {
  retire_producer();
  retire_consumer();
}

void ShmChannel::retire_consumer() noexcept {
  Header* hh = h();
  if (!leave(hh->consumers, consumer_pid_)) return;
  wake_unconditionally(hh->space_seq);
  futex_wake_all(&hh->tasks_done);
}

void ShmChannel::wake_receivers() noexcept { wake_unconditionally(h()->data_seq); }

void ShmChannel::wake_all() noexcept {
  wake_unconditionally(h()->data_seq);
  wake_unconditionally(h()->space_seq);
}

// ---- ring access ---------------------------------------------------------------

namespace {

struct Ring {
  Header* h;
  std::byte* base;
  const ShmChannel::Geometry& g;  // the handle's copy, never the header's

  // Positions here are bytes (byte_pos of a commit word's units). Records
  // are 8-aligned and the ring a power of two, so an 8-byte field at an
  // 8-aligned position never wraps: copied inline (headers, lengths).
  void write8(std::uint64_t pos, const void* src) const noexcept {
    std::memcpy(base + (pos & g.mask), src, 8);
  }
  void read8(std::uint64_t pos, void* dst) const noexcept {
    std::memcpy(dst, base + (pos & g.mask), 8);
  }
  void write(std::uint64_t pos, const void* src, std::size_t n) const noexcept {
    std::size_t off = pos & g.mask;
    std::size_t first = std::min<std::size_t>(n, g.capacity - off);
    std::memcpy(base + off, src, first);
    if (n > first) std::memcpy(base, static_cast<const std::byte*>(src) + first, n - first);
  }
  void read(std::uint64_t pos, void* dst, std::size_t n) const noexcept {
    std::size_t off = pos & g.mask;
    std::size_t first = std::min<std::size_t>(n, g.capacity - off);
    std::memcpy(dst, base + off, first);
    if (n > first) std::memcpy(static_cast<std::byte*>(dst) + first, base, n - first);
  }
  void append_to(std::string& out, std::uint64_t pos, std::size_t n) const {
    std::size_t off = pos & g.mask;
    std::size_t first = std::min<std::size_t>(n, g.capacity - off);
    out.append(reinterpret_cast<const char*>(base + off), first);
    if (n > first) out.append(reinterpret_cast<const char*>(base), n - first);
  }

  // Producer side, under the producer lock.
  std::uint64_t free_bytes(std::uint64_t consumer) const noexcept {
    const std::uint32_t tail = pos_of(h->p.commit.load(std::memory_order_relaxed));
    return g.capacity - byte_pos(tail - pos_of(consumer));
  }
  // seen_consumer returns the hint; refresh re-reads the consumer's word.
  std::uint64_t seen_consumer() const noexcept {
    return h->p.seen_consumer.load(std::memory_order_relaxed);
  }
  std::uint64_t refresh() const noexcept {
    const std::uint64_t c = h->c.commit.load(std::memory_order_acquire);
    h->p.seen_consumer.store(c, std::memory_order_relaxed);
    return c;
  }
  bool has_space(std::uint64_t need) const noexcept {
    return free_bytes(seen_consumer()) >= need || free_bytes(refresh()) >= need;
  }
  bool has_slot() const noexcept {
    const std::uint32_t max = g.max_messages;
    if (max == 0) return true;
    const std::uint32_t put = msgs_of(h->p.commit.load(std::memory_order_relaxed));
    return put - msgs_of(seen_consumer()) < max || put - msgs_of(refresh()) < max;
  }
  // wait_space waits under the producer lock until cond() holds. need == 0
  // waits for a message slot (woken by every consumption); otherwise for
  // `need` ring bytes (woken once a quarter of the ring, or `need`, is free).
  template <class Cond>
  ChannelStatus wait_space(Cond cond, std::uint64_t need, const Deadline& deadline,
                           const std::atomic<bool>* cancel) const {
    while (!cond()) {
      if (expired(deadline)) return ChannelStatus::kTimedOut;
      if (cancel && cancel->load()) return ChannelStatus::kCancelled;
      // The head position at which the wait is over: tail + target - capacity.
      std::uint32_t wake_at = pos_of(h->c.commit.load(std::memory_order_relaxed));
      if (need != 0) {
        const std::uint64_t target =
            std::min<std::uint64_t>(g.capacity, std::max<std::uint64_t>(need, g.capacity / 4));
        wake_at = pos_of(h->p.commit.load(std::memory_order_relaxed)) -
                  static_cast<std::uint32_t>((g.capacity - target) / kUnit);
      }
      h->space_wake_at.store(wake_at, std::memory_order_relaxed);
      // In slices: a consumer killed between freeing space and waking
      // sleepers leaves nobody to wake this one, and a sender without a
      // deadline checks that someone is left to make room at all.
      const std::uint32_t gen = h->consumers.gen.load();
      const bool woken = sleep_on(h->space_seq, cond,
                                  earlier(deadline, Clock::now() + ShmChannel::kLivenessSlice));
      if (side_gone(h->consumers, gen, woken, deadline, cond)) return ChannelStatus::kBrokenPipe;
    }
    return ChannelStatus::kOk;
  }
  // tail is where the next record goes (bytes).
  std::uint64_t tail() const noexcept {
    return byte_pos(pos_of(h->p.commit.load(std::memory_order_relaxed)));
  }
  // publish makes the record just written visible: the commit point.
  void publish(std::uint64_t rec_bytes, std::uint32_t kind) const noexcept {
    const std::uint64_t w = h->p.commit.load(std::memory_order_relaxed);
    h->p.commit.store(advance(w, static_cast<std::uint32_t>(rec_bytes / kUnit), kind),
                      std::memory_order_release);
  }
};

// records_available: the producer has published past the consumers' head.
// The consumer word is read first: the producer word read after it is not
// behind it, so "different" means "ahead".
bool records_available(Header* hh) noexcept {
  const std::uint64_t got = hh->c.commit.load(std::memory_order_acquire);
  return pos_of(hh->p.commit.load(std::memory_order_acquire)) != pos_of(got);
}

}  // namespace

// ---- send ----------------------------------------------------------------------

namespace {

// copy_bytes is memcpy that allows a null source when n is 0, and inlines
// the 8-byte case (a length prefix).
inline void copy_bytes(void* dst, const void* src, std::size_t n) noexcept {
  if (n == 8) {
    std::memcpy(dst, src, 8);
  } else if (n != 0) {
    std::memcpy(dst, src, n);
  }
}

// Parts is a message given as two byte ranges, sent as their concatenation.
struct Parts {
  const std::byte* a;
  std::size_t na;
  const std::byte* b;
  std::size_t nb;

  std::size_t size() const noexcept { return na + nb; }
  // write copies bytes [off, off + n) of the message to ring position pos.
  void write(const Ring& r, std::uint64_t pos, std::size_t off, std::size_t n) const noexcept {
    if (off < na) {
      const std::size_t k = std::min(n, na - off);
      if (k == 8 && (pos & 7) == 0) {
        r.write8(pos, a + off);
      } else {
        r.write(pos, a + off, k);
      }
      pos += k;
      off += k;
      n -= k;
    }
    if (n) r.write(pos, b + (off - na), n);
  }
};

}  // namespace

ChannelStatus ShmChannel::send_bytes(const void* data, std::size_t size, const Deadline& deadline,
                                     const std::atomic<bool>* cancel) {
  return send_parts(data, size, nullptr, 0, deadline, cancel);
}

ChannelStatus ShmChannel::send_parts(const void* head, std::size_t head_size, const void* body,
                                     std::size_t body_size, const Deadline& deadline,
                                     const std::atomic<bool>* cancel) {
  const Parts msg{static_cast<const std::byte*>(head), head_size,
                  static_cast<const std::byte*>(body), body_size};
  const std::size_t size = msg.size();
  Header* hh = h();
  const pid_t me = self_pid();
  if (producer_pid_ != me) {
    enrol(hh->producers, me);
    producer_pid_ = me;
  }
  const SideLock lock{hh->p.lock, hh->p.lock_seq, geometry_.asymmetric};
  if (!lock_side(lock, deadline)) return ChannelStatus::kTimedOut;
  // Released early when a stream is abandoned.
  Unlock unlock{lock, hh, geometry_.asymmetric && light_fences_for(me)};
  const Ring r{hh, ring(), geometry_};

  ChannelStatus st = r.wait_space([&] { return r.has_slot(); }, 0, deadline, cancel);
  if (st != ChannelStatus::kOk) return st;

  const std::uint64_t whole = record_size(size);
  if (whole <= r.g.capacity / 2) {
    st = r.wait_space([&] { return r.has_space(whole); }, whole, deadline, cancel);
    if (st != ChannelStatus::kOk) return st;
    const std::uint64_t tail = r.tail();
    const RecordHeader rh{static_cast<std::uint32_t>(size), kBegin | kEnd};
    const std::size_t off = tail & r.g.mask;
    if (off + whole <= r.g.capacity) {
      // The record does not wrap (nearly always): plain copies.
      std::byte* dst = ring() + off;
      std::memcpy(dst, &rh, kRecordHeader);
      copy_bytes(dst + kRecordHeader, msg.a, msg.na);
      copy_bytes(dst + kRecordHeader + msg.na, msg.b, msg.nb);
    } else {
      r.write8(tail, &rh);
      msg.write(r, tail + kRecordHeader, 0, size);
    }
    r.publish(whole, kBegin | kEnd);
    unlock.notify = Unlock::kData;
    return ChannelStatus::kOk;
  }

  // Stream: BEGIN chunk (total length first), middle chunks, END chunk.
  const std::size_t chunk_max = r.g.capacity / 4 - 16;
  std::size_t off = 0;
  bool first = true;
  while (off < size) {
    const std::size_t n = std::min(size - off, chunk_max);
    const bool last = off + n == size;
    const std::uint32_t kind = (first ? kBegin : 0) | (last ? kEnd : 0);
    const std::size_t payload = n + (first ? 8 : 0);
    const std::uint64_t rec = record_size(payload);
    st = r.wait_space([&] { return r.has_space(rec); }, rec, deadline, cancel);
    if (st != ChannelStatus::kOk) {
      // Abandon: the consumer discards the chunks already sent once it sees
      // this lock free with no END to come.
      if (!first) {
        unlock.active = false;
        release_side(lock);
        wake_receivers();
      }
      return st;
    }
    std::uint64_t pos = r.tail();
    const RecordHeader rh{static_cast<std::uint32_t>(payload), kind};
    r.write8(pos, &rh);
    pos += kRecordHeader;
    if (first) {
      const std::uint64_t total = size;
      r.write8(pos, &total);
      pos += sizeof total;
    }
    msg.write(r, pos, off, n);
    r.publish(rec, kind);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    notify_data_after_fence(hh);
    off += n;
    first = false;
  }
  return ChannelStatus::kOk;
}

// ---- receive -----------------------------------------------------------------------

namespace {

// kNeedLock: the record at the head is a chunk of a streamed message (or
// of one whose receiver died), taken under the consumer lock.
enum class Take { kOk, kEmpty, kLockTimedOut, kNeedLock };

// wait_next_chunk waits, holding the consumer lock, for the next chunk of a
// message being streamed. False when the stream was abandoned (its producer
// died or gave up: the producer lock is free and no chunk is left).
bool wait_next_chunk(const Ring& r) {
  Header* hh = r.h;
  for (;;) {
    // No heavy fence: a streaming producer publishes each chunk with a full
    // one (a heavy fence per chunk wait cost ~20% at 1 MiB here). A whole
    // message published lightly by another producer after this stream was
    // abandoned is seen within the slice.
    sleep_on(
        hh->data_seq, [&] { return records_available(hh); },
        Clock::now() + ShmChannel::kLivenessSlice);
    if (records_available(hh)) return true;
    const SideLock producer{hh->p.lock, hh->p.lock_seq, r.g.asymmetric};
    if (!try_take(producer)) continue;  // a live producer is at work
    const bool ready = records_available(hh);
    release_side(producer);
    return ready;
  }
}

// Sink receives a message's bytes: the first prefix_size go to `prefix`,
// the rest are appended to `out`.
struct Sink {
  std::string& out;
  std::byte* prefix;
  std::size_t prefix_size;
  std::size_t prefix_got = 0;

  void start(std::uint64_t total) {
    out.clear();
    prefix_got = 0;
    if (total > prefix_size) out.reserve(total - prefix_size);
  }
  // take_whole stores a whole message that lies contiguously at `p`.
  void take_whole(const std::byte* p, std::size_t len) {
    const std::size_t k = std::min(len, prefix_size);
    copy_bytes(prefix, p, k);
    prefix_got = k;
    const char* body = reinterpret_cast<const char*>(p + k);
    if (len - k > out.capacity()) {
      out = std::string(body, len - k);  // cheaper than growing through assign()
    } else {
      out.assign(body, len - k);
    }
  }
  void append(const Ring& r, std::uint64_t pos, std::size_t len) {
    if (prefix_got < prefix_size) {
      const std::size_t k = std::min(len, prefix_size - prefix_got);
      if (k == 8 && (pos & 7) == 0) {
        r.read8(pos, prefix + prefix_got);
      } else {
        r.read(pos, prefix + prefix_got, k);
      }
      prefix_got += k;
      pos += k;
      len -= k;
    }
    if (len) r.append_to(out, pos, len);
  }
};

// Receiving. Consumers claim records by compare-and-swap on the consumer
// commit word, after copying them out: a claim fails if another consumer
// moved the head first (the copy is then discarded and the next record
// tried), and a consumer killed before its claim leaves the record where it
// was. Bytes read at a head that has meanwhile moved may already be
// overwritten; they are never trusted unless the claim succeeds, and a
// header or length is checked against the commit word before it is used.
//
// A whole message (one BEGIN|END record) is taken without a lock
// (take_fast). Chunks of a streamed message are taken under the consumer
// lock (take_locked), whose holder alone claims chunks, so one receiver
// reassembles each message; a chunk found at the head by a new lock holder
// (no BEGIN) is the rest of a message whose receiver died: skipped.

// Head is the consumer word a receive started from, and the record there.
struct Head {
  std::uint64_t got;  // the consumer commit word
  RecordHeader rh;
};

enum class Peek { kRecord, kEmpty, kMoved };

// published_past: whether the producer has published records past `head`,
// from the consumers' hint when it says so, else from the producer's word.
// The hint is trusted only if it is ahead of `got` by no more than the ring
// holds, in position and in messages: a hint stored late by a consumer that
// was preempted for 2^32 units of traffic could otherwise look ahead.
bool published_past(const Ring& r, std::uint64_t got) noexcept {
  Header* hh = r.h;
  const std::uint64_t seen = hh->c.seen_producer.load(std::memory_order_acquire);
  const auto ahead = static_cast<std::int32_t>(pos_of(seen) - pos_of(got));
  const auto more = static_cast<std::int32_t>(msgs_of(seen) - msgs_of(got));
  const auto most = static_cast<std::int64_t>(r.g.capacity / kUnit);
  if (ahead > 0 && ahead <= most && more >= 0 && more <= most) return true;
  const std::uint64_t put = hh->p.commit.load(std::memory_order_acquire);
  if (pos_of(put) == pos_of(got)) return false;
  hh->c.seen_producer.store(put, std::memory_order_release);
  return true;
}

// peek reads the consumer word and the record header at its head.
Peek peek(const Ring& r, Head& at) {
  Header* hh = r.h;
  at.got = hh->c.commit.load(std::memory_order_acquire);
  if (!published_past(r, at.got)) return Peek::kEmpty;
  r.read8(byte_pos(pos_of(at.got)), &at.rh);
  const std::uint64_t len_max =
      at.rh.kind == (kBegin | kEnd) ? r.g.capacity / 2 - kRecordHeader : r.g.capacity / 4;
  const bool begins_stream = at.rh.kind == kBegin;  // its payload starts with the total length
  if (at.rh.len <= len_max && (at.rh.kind & ~(kBegin | kEnd)) == 0 &&
      !(begins_stream && at.rh.len < sizeof(std::uint64_t))) {
    return Peek::kRecord;
  }
  if (hh->c.commit.load(std::memory_order_acquire) != at.got) return Peek::kMoved;
  throw CodecError(fmt::format(
      "mp: queue ring corrupt at offset {} (record length {}, kind {}): another process wrote "
      "over the queue's shared memory; the items from here on cannot be read (close the queue "
      "and make a new one)",
      byte_pos(pos_of(at.got)) & r.g.mask, at.rh.len, at.rh.kind));
}

// claim moves the consumer word past the record at `at` if no one did
// first. A full barrier: the caller may check for sleepers right after.
bool claim(Header* hh, Head& at) noexcept {
  return hh->c.commit.compare_exchange_strong(
      at.got, advance(at.got, record_units(at.rh.len), at.rh.kind), std::memory_order_acq_rel);
}

// take_whole copies the whole message at `at` into `sink` and claims it.
bool take_whole(const Ring& r, Sink& sink, Head& at) {
  Header* hh = r.h;
  const std::uint64_t pos = byte_pos(pos_of(at.got)) + kRecordHeader;
  const std::size_t off = pos & r.g.mask;
  const std::size_t len = at.rh.len;
  if (off + len <= r.g.capacity) {
    sink.take_whole(r.base + off, len);  // does not wrap (nearly always)
  } else {
    sink.start(len);
    sink.append(r, pos, len);
  }
  return claim(hh, at);
}

// take_fast takes the message at the head if it is whole, without a lock.
Take take_fast(const Ring& r, Sink& sink) {
  Head at;
  for (;;) {
    switch (peek(r, at)) {
      case Peek::kEmpty:
        return Take::kEmpty;
      case Peek::kMoved:
        continue;
      case Peek::kRecord:
        break;
    }
    if (at.rh.kind != (kBegin | kEnd)) return Take::kNeedLock;
    if (take_whole(r, sink, at)) {
      notify_space_after_fence(r.h);  // the claim was a full barrier
      return Take::kOk;
    }
  }
}

Take take_locked(const Ring& r, Sink& sink, const Deadline& deadline) {
  Header* hh = r.h;
  ConsumerSide& c = hh->c;
  const SideLock lock{c.lock, c.lock_seq};
  if (!lock_side(lock, deadline)) return Take::kLockTimedOut;
  Unlock unlock{lock, hh};
  bool receiving = false;
  Head at;
  for (;;) {
    const Peek p = peek(r, at);
    if (p == Peek::kMoved) continue;
    if (p == Peek::kEmpty) {
      if (!receiving) return Take::kEmpty;
      if (wait_next_chunk(r)) continue;
      sink.out.clear();  // the stream was abandoned: drop what we have of it
      return Take::kEmpty;
    }
    if (at.rh.kind & kBegin) receiving = false;  // a partial message before it was abandoned
    if (at.rh.kind == (kBegin | kEnd)) {
      if (!take_whole(r, sink, at)) continue;
      unlock.notify = Unlock::kSpace;  // after the release's fence
      return Take::kOk;
    }
    // A chunk: only the holder of this lock claims chunks, so the claim
    // fails only if the head moved before the header was read (then the
    // header may be stale: checked before any length is trusted).
    std::uint64_t pos = byte_pos(pos_of(at.got)) + kRecordHeader;
    std::size_t len = at.rh.len;
    const std::size_t out_before = sink.out.size();
    const std::size_t prefix_before = sink.prefix_got;
    if (at.rh.kind & kBegin) {
      std::uint64_t total;
      r.read8(pos, &total);
      if (c.commit.load(std::memory_order_acquire) != at.got) continue;  // `total` may be stale
      sink.start(total);
      sink.append(r, pos + sizeof total, len - sizeof total);
    } else if (receiving) {
      sink.append(r, pos, len);
    }  // else: the rest of a message whose receiver died, or of an abandoned one
    if (!claim(hh, at)) {
      sink.out.resize(out_before);
      sink.prefix_got = prefix_before;
      continue;
    }
    if (at.rh.kind & kBegin) receiving = true;
    if ((at.rh.kind & kEnd) && receiving) {
      unlock.notify = Unlock::kSpace;  // after the release's fence
      return Take::kOk;
    }
    notify_space_after_fence(hh);  // the claim was a full barrier
    if (at.rh.kind & kEnd) receiving = false;
  }
}

// spin_for_records: a receiver that found the channel empty polls it for a
// short while before sleeping, one receiver at a time. Without it, a
// consumer that keeps up with its producer sleeps after nearly every
// message and the producer pays a futex wake (an IPI, ~1-3 us here) for
// each: measured 6-8 M msgs/s at 8 B instead of 13-14 M. Polling every
// ~2.4 us (128 pauses of ~19 ns here), not continuously, keeps the consumer
// from pulling the producer's commit line away on every put (every ~0.6 us
// measured 5-10% slower; a futex wake-up takes far longer than 2.4 us
// anyway). The spinner's claim is a steady-clock deadline, so a spinner
// killed mid-spin holds it no longer than kSpinBudget; sched_yield every
// other poll lets a runnable producer on this CPU go first (2 producers,
// 2 consumers on 2 cores).
constexpr auto kSpinBudget = std::chrono::microseconds(50);
constexpr int kPausesPerPoll = 128;
constexpr int kPollsPerYield = 2;

std::uint64_t ns_since_epoch(Clock::time_point t) noexcept {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count());
}

std::uint64_t now_ns() noexcept { return ns_since_epoch(Clock::now()); }

bool spin_for_records(Header* hh, const Deadline& deadline) noexcept {
  const std::uint64_t now = now_ns();
  std::uint64_t until = now + std::chrono::nanoseconds(kSpinBudget).count();
  if (deadline) until = std::min(until, ns_since_epoch(*deadline));
  std::uint64_t claim = hh->spinner_until.load(std::memory_order_relaxed);
  if (claim > now || !hh->spinner_until.compare_exchange_strong(claim, until)) return false;
  bool found = false;
  for (int poll = 1; !found; ++poll) {
    for (int i = 0; i < kPausesPerPoll; ++i) cpu_relax();
    found = records_available(hh);
    if (!found && poll % kPollsPerYield == 0) {
      if (now_ns() >= until) break;
      sched_yield();
    }
  }
  std::uint64_t mine = until;
  hh->spinner_until.compare_exchange_strong(mine, 0);
  return found;
}

}  // namespace

ChannelStatus ShmChannel::recv_bytes(std::string& out, const Deadline& deadline,
                                     const std::atomic<bool>* cancel, void* prefix,
                                     std::size_t prefix_size) {
  Header* hh = h();
  const Ring r{hh, ring(), geometry_};
  Sink sink{out, static_cast<std::byte*>(prefix), prefix ? prefix_size : 0};
  const pid_t me = self_pid();
  if (consumer_pid_ != me) {
    enrol(hh->consumers, me);
    consumer_pid_ = me;
  }
  for (;;) {
    Take t = take_fast(r, sink);
    if (t == Take::kNeedLock) t = take_locked(r, sink, deadline);
    if (t == Take::kOk) return ChannelStatus::kOk;
    if (t == Take::kLockTimedOut || expired(deadline)) return ChannelStatus::kTimedOut;
    if (spin_for_records(hh, deadline)) continue;
    const std::uint32_t gen = hh->producers.gen.load();
    const bool woken = sleep_on(
        hh->data_seq, [&] { return records_available(hh); },
        earlier(deadline, Clock::now() + kLivenessSlice), r.g.asymmetric);
    if (records_available(hh)) continue;
    if (cancel && cancel->load()) return ChannelStatus::kCancelled;
    if (side_gone(hh->producers, gen, woken, deadline, [&] { return records_available(hh); })) {
      return ChannelStatus::kEof;
    }
  }
}

// ---- task accounting ------------------------------------------------------------------

bool ShmChannel::task_done() noexcept {
  Header* hh = h();
  std::uint32_t done = hh->tasks_done.load();
  for (;;) {
    const std::uint32_t put = msgs_of(hh->p.commit.load(std::memory_order_acquire));
    if (put == done) return false;
    if (hh->tasks_done.compare_exchange_weak(done, done + 1)) {
      if (put == done + 1) futex_wake_all(&hh->tasks_done);
      return true;
    }
  }
}

std::uint32_t ShmChannel::unfinished_tasks() const noexcept {
  const std::uint32_t done = h()->tasks_done.load();
  return msgs_of(h()->p.commit.load(std::memory_order_acquire)) - done;
}

ChannelStatus ShmChannel::join(const Deadline& deadline) {
  Header* hh = h();
  auto finished = [hh] {
    return msgs_of(hh->p.commit.load(std::memory_order_acquire)) == hh->tasks_done.load();
  };
  for (;;) {
    const std::uint32_t done = hh->tasks_done.load();
    if (msgs_of(hh->p.commit.load(std::memory_order_acquire)) == done) return ChannelStatus::kOk;
    // In slices: a consumer killed between counting a task done and waking
    // joiners leaves nobody to wake this one, and a join without a deadline
    // checks that someone is left to finish the tasks at all.
    const std::uint32_t gen = hh->consumers.gen.load();
    const bool woken =
        futex_wait_until(&hh->tasks_done, done, earlier(deadline, Clock::now() + kLivenessSlice));
    if (finished()) return ChannelStatus::kOk;
    if (!woken && expired(deadline)) return ChannelStatus::kTimedOut;
    if (side_gone(hh->consumers, gen, woken, deadline, finished)) return ChannelStatus::kBrokenPipe;
  }
}

}  // namespace mp::internal
