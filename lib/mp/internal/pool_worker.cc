#include "mp/internal/pool_worker.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <exception>
#include <memory>
#include <tuple>
#include <typeinfo>

#include "mp/codec.h"
#include "mp/errors.h"
#include "mp/internal/demangle.h"
#include "mp/internal/futex.h"
#include "mp/internal/modules.h"
#include "mp/process.h"

namespace mp::internal::pool {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

[[noreturn]] void parent_gone() { ::_exit(1); }

// pool_alive: the pool's process still runs. A forked worker's parent is the
// pool (getppid() tells); a forkserver worker's kernel parent is the server,
// so it watches the pool through parent_process()'s pidfd instead.
bool pool_alive_from(pid_t pool) {
  if (::getppid() == pool) return true;
  const ParentProcess* parent = parent_process();
  return parent && parent->pid() == pool && parent->is_alive();
}

class Worker {
 public:
  explicit Worker(const WorkerConfig& cfg)
      : cfg_(cfg),
        ch_(cfg.channels),
        c_(ch_.control()),
        owner_(cfg.slot + 1),
        rc_(ch_.result_control(cfg.slot)),
        rdata_(ch_.result_data(cfg.slot)),
        rcap_(ch_.layout.result_capacity) {}

  void run() {
    if (!run_initializer()) return;
    rc_->ready.store(1, std::memory_order_release);
    std::string out;
    out.reserve(256);
    std::uint64_t done = 0;
    for (;;) {
      TaskHeader* h = wait_task();
      if (!h) return;
      const auto tramp = relocate(reinterpret_cast<Trampoline>(h->trampoline));
      const std::string_view payload(reinterpret_cast<const char*>(h) + kTaskHeader,
                                     h->payload_len);
      const std::uint64_t seq = h->seq;
      out.clear();
      std::uint32_t status = kOk;
      try {
        tramp(payload, out);
      } catch (...) {
        out.clear();
        status = kTaskError;
        describe_current_exception(out);
      }
      write_frame(seq, status, out);
      if (cfg_.max_tasks && ++done >= cfg_.max_tasks) {
        rc_->exiting.store(1, std::memory_order_seq_cst);
        notify_parent(true);
        return;
      }
    }
  }

 private:
  bool run_initializer() {
    if (!cfg_.initializer || !*cfg_.initializer) return true;
    try {
      (*cfg_.initializer)();
      return true;
    } catch (...) {
      std::string out;
      describe_current_exception(out);
      write_frame(0, kInitError, out);
      rc_->exiting.store(1, std::memory_order_seq_cst);
      notify_parent(true);
      return false;
    }
  }

  // ---- task side -----------------------------------------------------

  TaskHeader* try_claim() {
    for (;;) {
      std::uint64_t p = c_->next.load(std::memory_order_acquire);
      const std::uint64_t t = c_->tail.load(std::memory_order_acquire);
      if (p >= t) return nullptr;
      TaskHeader* h = ch_.task_at(p);
      std::uint64_t s = h->state.load(std::memory_order_acquire);
      if ((s & ~kOwnerMask) != state_tag(p)) continue;  // stale cursor: reload
      const std::uint32_t size = __atomic_load_n(&h->size, __ATOMIC_RELAXED);
      if (s & kOwnerMask) {
        c_->next.compare_exchange_strong(p, p + size, std::memory_order_acq_rel);
        continue;
      }
      if (h->state.compare_exchange_strong(s, s | owner_, std::memory_order_acq_rel)) {
        c_->next.compare_exchange_strong(p, p + size, std::memory_order_acq_rel);
        return h;
      }
    }
  }

  // chain_wake wakes a sleeping sibling when tasks remain and nobody spins.
  void chain_wake() {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (c_->sleepers.load(std::memory_order_relaxed) == 0) return;
    if (c_->spinners.load(std::memory_order_relaxed) != 0) return;
    if (c_->next.load(std::memory_order_relaxed) >= c_->tail.load(std::memory_order_relaxed))
      return;
    if (c_->wake_pending.exchange(1)) return;
    c_->task_seq.fetch_add(1);
    futex_wake(&c_->task_seq, 1);
  }

  TaskHeader* claimed(TaskHeader* h) {
    chain_wake();
    return h;
  }

  TaskHeader* wait_task() {
    if (TaskHeader* h = try_claim()) return claimed(h);
    // One spinner at a time: on two CPUs, more spinners starve the pool.
    if (c_->spinners.fetch_add(1) == 0) {
      const auto until = Clock::now() + 50us;
      for (int i = 0;; ++i) {
        if (c_->next.load(std::memory_order_relaxed) < c_->tail.load(std::memory_order_relaxed)) {
          if (TaskHeader* h = try_claim()) {
            c_->spinners.fetch_sub(1);
            return claimed(h);
          }
        }
        if (c_->closing.load(std::memory_order_relaxed)) break;
        cpu_relax();
        if ((i & 63) == 63) {
          if (Clock::now() >= until) break;
          spin_yield();
        }
      }
    }
    c_->spinners.fetch_sub(1);
    for (;;) {
      const std::uint32_t seen = c_->task_seq.load(std::memory_order_seq_cst);
      c_->sleepers.fetch_add(1);
      // A wake issued while nobody actually slept must not suppress the
      // next one: whoever is about to sleep re-arms it.
      c_->wake_pending.store(0);
      if (TaskHeader* h = try_claim()) {
        c_->sleepers.fetch_sub(1);
        return claimed(h);
      }
      if (c_->closing.load()) {
        c_->sleepers.fetch_sub(1);
        return nullptr;
      }
      futex_wait(&c_->task_seq, seen, std::chrono::nanoseconds(100ms));
      c_->sleepers.fetch_sub(1);
      c_->wake_pending.store(0);
      if (!pool_alive()) parent_gone();
    }
  }

  // ---- result side ---------------------------------------------------

  bool pool_alive() const { return pool_alive_from(cfg_.parent); }

  void notify_parent(bool always = false) {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!always && c_->parent_waiting.load(std::memory_order_relaxed) == 0) return;
    if (c_->parent_waiting.exchange(0) || always) {
      c_->result_seq.fetch_add(1);
      futex_wake_all(&c_->result_seq);
    }
  }

  std::size_t free_space() const { return rcap_ - static_cast<std::size_t>(tail_ - head_cache_); }

  void wait_space(std::size_t n) {
    if (free_space() >= n) return;
    head_cache_ = rc_->head.load(std::memory_order_acquire);
    if (free_space() >= n) return;
    // The pool drains when it runs: make sure it knows there is something.
    rc_->tail.store(tail_, std::memory_order_release);
    notify_parent();
    const auto until = Clock::now() + 20us;
    for (int i = 0;; ++i) {
      head_cache_ = rc_->head.load(std::memory_order_acquire);
      if (free_space() >= n) return;
      cpu_relax();
      if ((i & 63) == 63) {
        if (Clock::now() >= until) break;
        spin_yield();
      }
    }
    for (;;) {
      const std::uint32_t seen = rc_->space_seq.load(std::memory_order_seq_cst);
      rc_->writer_waiting.store(1, std::memory_order_seq_cst);
      head_cache_ = rc_->head.load(std::memory_order_seq_cst);
      if (free_space() >= n) {
        rc_->writer_waiting.store(0);
        return;
      }
      notify_parent(true);
      futex_wait(&rc_->space_seq, seen, std::chrono::nanoseconds(100ms));
      if (!pool_alive()) parent_gone();
    }
  }

  void put_bytes(const char* p, std::size_t n) {
    const std::size_t off = tail_ & (rcap_ - 1);
    std::memcpy(rdata_ + off, p, n);
    tail_ += n;
  }

  void write_frame(std::uint64_t seq, std::uint32_t status, std::string_view payload) {
    const std::size_t total = kResultHeader + round_up(payload.size(), 8);
    ResultHeader hdr{seq, payload.size(), status, 0};
    std::size_t to_end = rcap_ - (tail_ & (rcap_ - 1));
    if (total <= rcap_ / 2) {
      if (to_end < total) {
        wait_space(to_end);
        if (to_end >= kResultHeader) {
          ResultHeader pad{0, to_end - kResultHeader, kPad, 0};
          std::memcpy(rdata_ + (tail_ & (rcap_ - 1)), &pad, sizeof pad);
        }
        tail_ += to_end;
      }
      wait_space(total);
      char* dst = rdata_ + (tail_ & (rcap_ - 1));
      std::memcpy(dst, &hdr, sizeof hdr);
      if (!payload.empty()) std::memcpy(dst + kResultHeader, payload.data(), payload.size());
      tail_ += total;
      rc_->tail.store(tail_, std::memory_order_release);
      notify_parent();
      return;
    }
    // Streamed frame: header contiguous, payload in pieces as space frees.
    if (to_end < kResultHeader) {
      wait_space(to_end);
      tail_ += to_end;
    }
    wait_space(kResultHeader);
    put_bytes(reinterpret_cast<const char*>(&hdr), sizeof hdr);
    rc_->tail.store(tail_, std::memory_order_release);
    std::size_t done = 0;
    while (done < payload.size()) {
      wait_space(1);
      to_end = rcap_ - (tail_ & (rcap_ - 1));
      const std::size_t n = std::min({free_space(), to_end, payload.size() - done});
      put_bytes(payload.data() + done, n);
      done += n;
      rc_->tail.store(tail_, std::memory_order_release);
      notify_parent();
    }
    const std::size_t pad = round_up(payload.size(), 8) - payload.size();
    if (pad) {
      wait_space(pad);
      tail_ += pad;
    }
    rc_->tail.store(tail_, std::memory_order_release);
    notify_parent();
  }

  const WorkerConfig& cfg_;
  Channels ch_;
  PoolControl* c_;
  std::uint64_t owner_;
  ResultControl* rc_;
  char* rdata_;
  std::size_t rcap_;
  std::uint64_t tail_ = 0;
  std::uint64_t head_cache_ = 0;
};

}  // namespace

void describe_current_exception(std::string& out) {
  std::string type;
  std::string message;
  try {
    throw;
  } catch (const mp::RemoteError& e) {
    type = e.type_name();
    message = e.message();
  } catch (...) {
    const CaughtException caught = describe_caught_exception();
    type = caught.type.empty() ? "unknown exception" : caught.type;
    message = caught.what;
  }
  try {
    mp::encode_into(out, std::tuple<std::string, std::string>(type, message));
  } catch (...) {
    out.clear();
  }
}

void worker_main(const WorkerConfig& config) {
  // Ctrl-C reaches the whole process group: a worker dies of it silently
  // (no traceback) unless the program ignores SIGINT; the pool then reports
  // the lost task. A handler inherited from the parent is not run here.
  struct sigaction old {};
  if (sigaction(SIGINT, nullptr, &old) == 0 && old.sa_handler != SIG_IGN) {
    signal(SIGINT, SIG_DFL);
  }
  Worker(config).run();
}

}  // namespace mp::internal::pool
