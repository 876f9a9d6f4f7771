// mp/internal/pool_channel.h — the shared-memory channels between a Pool and
// its workers. Internal: users include mp/pool.h.
//
// One anonymous MAP_SHARED region, created by the pool before it forks any
// worker, holds:
//
//   * PoolControl: cursors and futex words shared by everyone;
//   * the task ring: a byte ring written by the pool process only and read
//     by every worker. Each record is claimed by exactly one worker with a
//     compare-and-swap on the record's `state` word, which carries both a tag
//     (the record's position, so that a stale cursor can never claim a
//     record that replaced it) and the claiming worker's id. The record stays
//     in place (the worker reads its arguments from the ring) until the pool
//     has received the result and reclaims the space. A worker killed at any
//     instruction leaves either an unclaimed record (another worker takes
//     it) or a record claimed by its id (the pool fails that task with
//     WorkerLostError): nothing is lost and nothing is run twice.
//   * one result ring per worker slot: a single-producer single-consumer
//     byte stream (worker -> pool) of framed results. Frames up to half the
//     ring are written whole and contiguously; larger frames are streamed in
//     pieces while the pool drains them, so no result is ever truncated.
//
// Waiting: the hot path uses no syscall while both sides are busy. A worker
// that finds no task spins briefly (one spinner at a time) and then sleeps on
// `task_seq`; the pool wakes one sleeper when it publishes work and nobody
// spins. The pool waits for results by spinning briefly (request/response)
// and then sleeping on `result_seq`, which the first worker to publish a
// result after the pool went to sleep bumps (one wake per sleep, however
// many results arrive). Sleeps are bounded slices, so a dead peer is always
// noticed.
#pragma once

#include <sched.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "mp/internal/futex.h"

namespace mp::internal::pool {

inline constexpr std::size_t kCacheLine = 64;

// Owner ids in a task record's state: 0 = unclaimed, 1..0xFFFD = worker slot
// + 1, kOwnerPad = padding record (never claimed).
inline constexpr std::uint64_t kOwnerMask = 0xFFFF;
inline constexpr std::uint64_t kOwnerPad = 0xFFFF;

inline std::uint64_t state_tag(std::uint64_t pos) { return (pos >> 4) << 16; }

struct PoolControl {
  alignas(kCacheLine) std::atomic<std::uint64_t> tail{0};  // task ring: published end (pool writes)
  alignas(kCacheLine) std::atomic<std::uint64_t> next{
      0};  // task ring: first record maybe unclaimed
  alignas(kCacheLine) std::atomic<std::uint32_t> task_seq{0};  // futex: bumped to wake workers
  std::atomic<std::uint32_t> sleepers{0};                      // workers asleep on task_seq
  std::atomic<std::uint32_t> spinners{0};      // workers spinning for a task (0 or 1)
  std::atomic<std::uint32_t> wake_pending{0};  // a wake was issued and not yet consumed
  std::atomic<std::uint32_t> closing{0};       // workers exit once no task is left
  alignas(kCacheLine) std::atomic<std::uint32_t> result_seq{0};  // futex: bumped to wake the pool
  std::atomic<std::uint32_t> parent_waiting{0};  // the pool sleeps (or is about to) on result_seq
};

// Task record header; records start at 16-byte aligned positions and their
// size is a multiple of 16. A padding record only uses state and size.
struct TaskHeader {
  std::atomic<std::uint64_t> state;  // state_tag(pos) | owner
  std::uint32_t size;                // whole record, header included
  std::uint32_t payload_len;
  std::uint64_t seq;         // the pool's record number
  std::uint64_t trampoline;  // address of a Trampoline in the (shared) image
};
static_assert(sizeof(TaskHeader) == 32);
inline constexpr std::size_t kTaskHeader = sizeof(TaskHeader);

// Result frame header; frames start at 8-byte aligned positions.
struct ResultHeader {
  std::uint64_t seq;
  std::uint64_t len;
  std::uint32_t status;
  std::uint32_t reserved;
};
static_assert(sizeof(ResultHeader) == 24);
inline constexpr std::size_t kResultHeader = sizeof(ResultHeader);

enum Status : std::uint32_t {
  kOk = 0,         // payload: the encoded result
  kTaskError = 1,  // payload: encode(tuple<string type, string message>)
  kPad = 2,        // skip: filler up to the end of the ring
  kInitError = 3,  // the initializer threw; payload as kTaskError
};

struct ResultControl {
  alignas(kCacheLine) std::atomic<std::uint64_t> tail{0};       // worker writes
  alignas(kCacheLine) std::atomic<std::uint64_t> head{0};       // pool writes
  alignas(kCacheLine) std::atomic<std::uint32_t> space_seq{0};  // futex: bumped when head moves
  std::atomic<std::uint32_t> writer_waiting{0};
  std::atomic<std::uint32_t> exiting{0};  // the worker stopped claiming and is about to exit
  std::atomic<std::uint32_t> ready{0};    // the worker's initializer returned
};

inline constexpr std::size_t round_up(std::size_t n, std::size_t a) { return (n + a - 1) / a * a; }

// Layout of the region: control, task ring, then per-slot result rings.
struct Layout {
  std::size_t task_capacity;    // power of two
  std::size_t result_capacity;  // power of two
  std::size_t slots;

  std::size_t task_offset() const { return round_up(sizeof(PoolControl), 4096); }
  std::size_t slot_offset(std::size_t i) const {
    return task_offset() + task_capacity +
           i * (round_up(sizeof(ResultControl), 4096) + result_capacity);
  }
  std::size_t total() const { return slot_offset(slots); }
};

// Views of one region, valid in the pool and in every worker.
struct Channels {
  char* base = nullptr;
  Layout layout{};

  PoolControl* control() const { return reinterpret_cast<PoolControl*>(base); }
  char* task_data() const { return base + layout.task_offset(); }
  std::uint64_t task_mask() const { return layout.task_capacity - 1; }
  TaskHeader* task_at(std::uint64_t pos) const {
    return reinterpret_cast<TaskHeader*>(task_data() + (pos & task_mask()));
  }
  ResultControl* result_control(std::size_t slot) const {
    return reinterpret_cast<ResultControl*>(base + layout.slot_offset(slot));
  }
  char* result_data(std::size_t slot) const {
    return base + layout.slot_offset(slot) + round_up(sizeof(ResultControl), 4096);
  }
};

// spin_yield lets another runnable process have the CPU during a spin: on
// an oversubscribed machine the peer being waited for may need this CPU.
inline void spin_yield() { sched_yield(); }

// Trampoline: runs one task in a worker. Reads the task's encoded payload
// and appends the encoded result to `out`; throws what the task throws.
using Trampoline = void (*)(std::string_view payload, std::string& out);

}  // namespace mp::internal::pool
