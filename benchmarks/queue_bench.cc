// Benchmarks: mp::Queue throughput, one producer process -> one consumer
// (the benchmark's own process), beside its peers in the same binary:
//
//   BM_Queue/mp/<size>        mp::Queue<std::string> (1 MiB ring)
//   BM_Queue/pipe/<size>      length-prefixed messages over a pipe(2): one
//                             write per message, two reads (length, payload)
//   BM_Queue/raw_ring/<size>  a minimal single-producer single-consumer byte
//                             ring in shared memory (1 MiB, same as mp's),
//                             futex wake on empty/full: the practical limit
//   BM_Queue/raw_ring_alloc/<size>  raw_ring received into a new string per
//                             message, as mp's get() must return one: what
//                             that contract costs the practical limit
//   BM_Queue/mp_into/<size>   BM_Queue/mp received with get_into() into one
//                             reused string, as raw_ring's consumer does
//   BM_Queue/mp_2p2c/<size>   mp::Queue with 2 producer and 2 consumer
//                             processes (the benchmark process is one of the
//                             consumers; items counts both)
//   BM_QueuePutGet/{mp,raw_ring}/<size>  put then get in one thread: the
//                             bare cost of the code path, no peer, no waits
//   BM_QueueSides/{mp,mp_into,raw_ring,raw_ring_alloc}/<size>  one thread puts a batch, then gets
//                             it: counters put_ns and get_ns are each side's
//                             own cost per message, which bounds a stream
//                             when cross-core transfers are cheap (the VM's
//                             fast regime, reports/README.md)
//
// CPython's multiprocessing.Queue on the same sizes: peers/queue_peer.py
// (BM_Queue/cpython/<size>).
//
// Placement: in the 1:1 benchmarks (mp, pipe, raw_ring) the producer and the
// consumer are pinned to two different CPUs (benchmarks/bench_util.h). The
// 2p2c benchmark and the CPython peer are left to the scheduler: CPython's
// producer has a feeder thread, which pinning would squeeze onto one CPU.
//
// Producers are forked before the timed loop, put forever, and are killed
// with SIGKILL after it (mp's queue is built to survive exactly that).
// Sizes are payload bytes; mp and pipe add an 8-byte length, as the ring.
#include <benchmark/benchmark.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "benchmarks/bench_util.h"
#include "mp/internal/futex.h"
#include "mp/internal/shm.h"
#include "mp/os.h"
#include "mp/queue.h"

namespace {

constexpr std::size_t kRingBytes = std::size_t{1} << 20;

void kill_and_reap(const std::vector<pid_t>& pids) {
  for (pid_t p : pids) ::kill(p, SIGKILL);
  for (pid_t p : pids) {
    int status;
    waitpid(p, &status, 0);
  }
}

template <class F>
pid_t spawn(F body, const bench::PinnedPair* pinned = nullptr) {
  pid_t pid = mp::fork();
  if (pid == 0) {
    if (pinned) pinned->in_child();
    body();
    _exit(0);
  }
  return pid;
}

void set_counters(benchmark::State& state, std::int64_t items) {
  state.SetItemsProcessed(items);
  state.SetBytesProcessed(items * state.range(0));
}

// ---- mp ------------------------------------------------------------------------------

// mp_stream: one pinned producer process puts forever; the benchmark's
// process takes each item with `receive(q)`, which returns its size.
template <class Receive>
void mp_stream(benchmark::State& state, Receive receive) {
  const std::size_t size = static_cast<std::size_t>(state.range(0));
  mp::Queue<std::string> q(0, kRingBytes);
  const std::string msg(size, 'm');
  bench::PinnedPair pinned;
  pid_t producer = spawn(
      [&] {
        for (;;) q.put(msg);
      },
      &pinned);
  std::size_t bytes = 0;
  for (auto _ : state) {
    bytes += receive(q);
  }
  kill_and_reap({producer});
  if (bytes != size * state.iterations()) state.SkipWithError("wrong sizes received");
  set_counters(state, state.iterations());
}

void BM_Queue_mp(benchmark::State& state) {
  mp_stream(state, [](mp::Queue<std::string>& q) { return q.get().size(); });
}

// mp_into: the same, received with get_into() into one reused string, as
// raw_ring's consumer does (no allocation per item).
void BM_Queue_mp_into(benchmark::State& state) {
  std::string out;
  mp_stream(state, [&out](mp::Queue<std::string>& q) {
    q.get_into(out);
    return out.size();
  });
}

void BM_Queue_mp_2p2c(benchmark::State& state) {
  const std::size_t size = static_cast<std::size_t>(state.range(0));
  mp::Queue<std::string> q(0, kRingBytes);
  mp::internal::SharedRegion shared(sizeof(std::atomic<std::int64_t>));
  auto* other_consumer_items = new (shared.data()) std::atomic<std::int64_t>(0);
  const std::string msg(size, 'm');
  std::vector<pid_t> pids;
  for (int i = 0; i < 2; ++i)
    pids.push_back(spawn([&] {
      for (;;) q.put(msg);
    }));
  pids.push_back(spawn([&] {
    for (;;) {
      q.get();
      other_consumer_items->fetch_add(1, std::memory_order_relaxed);
    }
  }));
  std::int64_t before = 0;
  bool first = true;
  for (auto _ : state) {
    if (first) {
      before = other_consumer_items->load();
      first = false;
    }
    q.get();
  }
  const std::int64_t other = other_consumer_items->load() - before;
  kill_and_reap(pids);
  set_counters(state, state.iterations() + other);
}

// ---- pipe ----------------------------------------------------------------------------

void BM_Queue_pipe(benchmark::State& state) {
  const std::size_t size = static_cast<std::size_t>(state.range(0));
  int fds[2];
  if (pipe(fds) != 0) {
    state.SkipWithError("pipe failed");
    return;
  }
  bench::PinnedPair pinned;
  pid_t producer = spawn(
      [&] {
        ::close(fds[0]);
        std::string frame(8 + size, 'p');
        const std::uint64_t len = size;
        std::memcpy(frame.data(), &len, 8);
        while (bench::write_full(fds[1], frame.data(), frame.size())) {
        }
      },
      &pinned);
  ::close(fds[1]);
  std::string buf;
  std::size_t bytes = 0;
  for (auto _ : state) {
    std::uint64_t len = 0;
    if (!bench::read_full(fds[0], &len, 8)) break;
    buf.resize(len);
    if (!bench::read_full(fds[0], buf.data(), len)) break;
    bytes += len;
  }
  kill_and_reap({producer});
  ::close(fds[0]);
  if (bytes != size * state.iterations()) state.SkipWithError("wrong sizes received");
  set_counters(state, state.iterations());
}

// ---- raw ring ------------------------------------------------------------------------

// RawRing: the minimal SPSC byte ring. Messages are an 8-byte length and the
// payload; one whole message is published with one index store when it
// fits, larger ones are streamed through as space allows. The consumer
// sleeps on a futex when the ring is empty (woken by the next publish), the
// producer when it is full (woken once a quarter of the ring is free, so a
// full ring does not cost a wake-up per message).
struct RawRing {
  alignas(64) std::atomic<std::uint64_t> head{0};
  alignas(64) std::atomic<std::uint64_t> tail{0};
  alignas(64) std::atomic<std::uint32_t> consumer_waits{0};
  alignas(64) std::atomic<std::uint32_t> producer_waits{0};
  alignas(64) std::byte data[kRingBytes];

  static constexpr std::uint64_t kMask = kRingBytes - 1;
  static constexpr std::uint64_t kWakeProducerFree = kRingBytes / 4;

  template <class Ready>
  static void sleep(std::atomic<std::uint32_t>& flag, Ready ready) {
    flag.store(1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!ready()) mp::internal::futex_wait(&flag, 1);
    flag.store(0, std::memory_order_relaxed);
  }
  static void wake(std::atomic<std::uint32_t>& flag) {
    if (flag.load(std::memory_order_relaxed)) {
      flag.store(0, std::memory_order_relaxed);
      mp::internal::futex_wake(&flag, 1);
    }
  }

  // ---- producer
  std::uint64_t cached_head = 0;
  std::uint64_t free_space(std::uint64_t t) const { return kRingBytes - (t - cached_head); }
  void publish(std::uint64_t t) {
    tail.store(t, std::memory_order_release);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    wake(consumer_waits);
  }
  // wait_free waits until at least n bytes are free.
  void wait_free(std::uint64_t t, std::uint64_t n) {
    while (free_space(t) < n) {
      cached_head = head.load(std::memory_order_acquire);
      if (free_space(t) >= n) return;
      sleep(producer_waits, [&] { return kRingBytes - (t - head.load()) >= n; });
    }
  }
  void put(const void* p, std::size_t n) {
    const std::uint64_t len = n;
    std::uint64_t t = tail.load(std::memory_order_relaxed);
    if (8 + n <= kRingBytes / 2) {  // whole: one publish
      wait_free(t, 8 + n);
      copy_in(t, &len, 8);
      copy_in(t + 8, p, n);
      publish(t + 8 + n);
      return;
    }
    wait_free(t, 8);
    copy_in(t, &len, 8);
    publish(t += 8);
    auto* c = static_cast<const std::byte*>(p);
    while (n) {
      wait_free(t, std::min<std::uint64_t>(n, kRingBytes / 4));
      const std::size_t k = std::min<std::uint64_t>(n, free_space(t));
      copy_in(t, c, k);
      publish(t += k);
      c += k;
      n -= k;
    }
  }
  void copy_in(std::uint64_t pos, const void* p, std::size_t n) {
    const std::size_t off = pos & kMask, first = std::min<std::size_t>(n, kRingBytes - off);
    std::memcpy(data + off, p, first);
    std::memcpy(data, static_cast<const std::byte*>(p) + first, n - first);
  }

  // ---- consumer
  std::uint64_t cached_tail = 0;
  void release(std::uint64_t h) {
    head.store(h, std::memory_order_release);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (producer_waits.load(std::memory_order_relaxed) &&
        kRingBytes - (tail.load(std::memory_order_relaxed) - h) >= kWakeProducerFree) {
      wake(producer_waits);
    }
  }
  // wait_avail waits until at least one byte is readable; returns how many.
  std::uint64_t wait_avail(std::uint64_t h) {
    while (cached_tail == h) {
      cached_tail = tail.load(std::memory_order_acquire);
      if (cached_tail != h) break;
      sleep(consumer_waits, [&] { return tail.load() != h; });
    }
    return cached_tail - h;
  }
  void get(std::string& out) {
    std::uint64_t h = head.load(std::memory_order_relaxed);
    while (wait_avail(h) < 8) {
      cached_tail = h;  // the length is published whole: wait for it
    }
    std::uint64_t len;
    copy_out(h, &len, 8);
    out.resize(len);
    if (cached_tail - h >= 8 + len) {  // whole message there: one release
      copy_out(h + 8, out.data(), len);
      release(h + 8 + len);
      return;
    }
    release(h += 8);
    std::size_t done = 0;
    while (done < len) {
      const std::size_t k = std::min<std::uint64_t>(len - done, wait_avail(h));
      copy_out(h, out.data() + done, k);
      release(h += k);
      done += k;
    }
  }
  // take is get() into a new string, as mp::Queue::get() returns one (its
  // resize() zero-fills the bytes before they are copied: ~1 ns at 64 B).
  std::string take() {
    std::string out;
    get(out);
    return out;
  }
  void copy_out(std::uint64_t pos, void* p, std::size_t n) const {
    const std::size_t off = pos & kMask, first = std::min<std::size_t>(n, kRingBytes - off);
    std::memcpy(p, data + off, first);
    std::memcpy(static_cast<std::byte*>(p) + first, data, n - first);
  }
};

// raw_stream: one pinned producer process puts forever; the benchmark's
// process takes each message with `receive(ring)`, which returns its size.
template <class Receive>
void raw_stream(benchmark::State& state, Receive receive) {
  const std::size_t size = static_cast<std::size_t>(state.range(0));
  mp::internal::SharedRegion region(sizeof(RawRing));
  auto* ring = new (region.data()) RawRing;
  bench::PinnedPair pinned;
  pid_t producer = spawn(
      [&] {
        const std::string msg(size, 'r');
        for (;;) ring->put(msg.data(), msg.size());
      },
      &pinned);
  std::size_t bytes = 0;
  for (auto _ : state) {
    bytes += receive(*ring);
  }
  kill_and_reap({producer});
  if (bytes != size * state.iterations()) state.SkipWithError("wrong sizes received");
  set_counters(state, state.iterations());
}

void BM_Queue_raw_ring(benchmark::State& state) {
  std::string out;
  raw_stream(state, [&out](RawRing& ring) {
    ring.get(out);
    return out.size();
  });
}

void BM_Queue_raw_ring_alloc(benchmark::State& state) {
  raw_stream(state, [](RawRing& ring) { return ring.take().size(); });
}

// ---- one thread: the cost of a put+get pair without a peer --------------------------
// (what callgrind counts: `valgrind --tool=callgrind --toggle-collect='*PutGet*'`)

void BM_QueuePutGet_mp(benchmark::State& state) {
  const std::size_t size = static_cast<std::size_t>(state.range(0));
  mp::Queue<std::string> q(0, kRingBytes);
  const std::string msg(size, 'm');
  std::size_t bytes = 0;
  for (auto _ : state) {
    q.put(msg);
    bytes += q.get().size();
  }
  if (bytes != size * state.iterations()) state.SkipWithError("wrong sizes received");
  set_counters(state, state.iterations());
}

void BM_QueuePutGet_raw_ring(benchmark::State& state) {
  const std::size_t size = static_cast<std::size_t>(state.range(0));
  mp::internal::SharedRegion region(sizeof(RawRing));
  auto* ring = new (region.data()) RawRing;
  const std::string msg(size, 'r');
  std::string out;
  std::size_t bytes = 0;
  for (auto _ : state) {
    ring->put(msg.data(), msg.size());
    ring->get(out);
    bytes += out.size();
  }
  if (bytes != size * state.iterations()) state.SkipWithError("wrong sizes received");
  set_counters(state, state.iterations());
}

// ---- one thread, one side at a time: put a batch, then get it ----------------------
// Each side's own cost per message, without the other side's cache traffic
// (what bounds a stream when cross-core transfers are cheap).

template <class Put, class Get>
void sides(benchmark::State& state, Put put, Get get) {
  // A batch fills at most half the ring, so that put never waits.
  const int kBatch = static_cast<int>(
      std::min<std::size_t>(512, kRingBytes / 2 / (static_cast<std::size_t>(state.range(0)) + 24)));
  double put_s = 0, get_s = 0;
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kBatch; ++i) put();
    auto t1 = std::chrono::steady_clock::now();
    for (int i = 0; i < kBatch; ++i) get();
    auto t2 = std::chrono::steady_clock::now();
    put_s += std::chrono::duration<double>(t1 - t0).count();
    get_s += std::chrono::duration<double>(t2 - t1).count();
  }
  const double n = static_cast<double>(state.iterations()) * kBatch;
  state.counters["put_ns"] = put_s / n * 1e9;
  state.counters["get_ns"] = get_s / n * 1e9;
  set_counters(state, static_cast<std::int64_t>(n));
}

// mp_sides / raw_sides: sides() on a new mp queue / raw ring, each message
// taken with `receive`, which returns its size (as mp_stream / raw_stream).
template <class Receive>
void mp_sides(benchmark::State& state, Receive receive) {
  mp::Queue<std::string> q(0, kRingBytes);
  const std::string msg(static_cast<std::size_t>(state.range(0)), 'm');
  std::size_t bytes = 0;
  sides(
      state, [&] { q.put(msg); }, [&] { bytes += receive(q); });
  benchmark::DoNotOptimize(bytes);
}

template <class Receive>
void raw_sides(benchmark::State& state, Receive receive) {
  mp::internal::SharedRegion region(sizeof(RawRing));
  auto* ring = new (region.data()) RawRing;
  const std::string msg(static_cast<std::size_t>(state.range(0)), 'r');
  std::size_t bytes = 0;
  sides(
      state, [&] { ring->put(msg.data(), msg.size()); }, [&] { bytes += receive(*ring); });
  benchmark::DoNotOptimize(bytes);
}

void BM_QueueSides_mp(benchmark::State& state) {
  mp_sides(state, [](mp::Queue<std::string>& q) { return q.get().size(); });
}

void BM_QueueSides_mp_into(benchmark::State& state) {
  std::string out;
  mp_sides(state, [&out](mp::Queue<std::string>& q) {
    q.get_into(out);
    return out.size();
  });
}

void BM_QueueSides_raw_ring(benchmark::State& state) {
  std::string out;
  raw_sides(state, [&out](RawRing& ring) {
    ring.get(out);
    return out.size();
  });
}

void BM_QueueSides_raw_ring_alloc(benchmark::State& state) {
  raw_sides(state, [](RawRing& ring) { return ring.take().size(); });
}

void sizes(benchmark::internal::Benchmark* b) {
  for (int s : {8, 64, 4096, 65536, 1 << 20}) b->Arg(s);
  b->UseRealTime();
}

}  // namespace

BENCHMARK(BM_Queue_mp)->Name("BM_Queue/mp")->Apply(sizes);
BENCHMARK(BM_Queue_pipe)->Name("BM_Queue/pipe")->Apply(sizes);
BENCHMARK(BM_Queue_raw_ring)->Name("BM_Queue/raw_ring")->Apply(sizes);
BENCHMARK(BM_Queue_raw_ring_alloc)->Name("BM_Queue/raw_ring_alloc")->Apply(sizes);
BENCHMARK(BM_Queue_mp_2p2c)->Name("BM_Queue/mp_2p2c")->Apply(sizes);
BENCHMARK(BM_Queue_mp_into)->Name("BM_Queue/mp_into")->Apply(sizes);

BENCHMARK(BM_QueuePutGet_mp)->Name("BM_QueuePutGet/mp")->Arg(8)->Arg(64)->Arg(4096);
BENCHMARK(BM_QueuePutGet_raw_ring)->Name("BM_QueuePutGet/raw_ring")->Arg(8)->Arg(64)->Arg(4096);

BENCHMARK(BM_QueueSides_mp)->Name("BM_QueueSides/mp")->Arg(8)->Arg(64)->Arg(4096);
BENCHMARK(BM_QueueSides_mp_into)->Name("BM_QueueSides/mp_into")->Arg(8)->Arg(64)->Arg(4096);
BENCHMARK(BM_QueueSides_raw_ring)->Name("BM_QueueSides/raw_ring")->Arg(8)->Arg(64)->Arg(4096);
BENCHMARK(BM_QueueSides_raw_ring_alloc)
    ->Name("BM_QueueSides/raw_ring_alloc")
    ->Arg(8)
    ->Arg(64)
    ->Arg(4096);

BENCHMARK_MAIN();
