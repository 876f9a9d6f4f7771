#include "mp/internal/pool_core.h"

#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstdio>
#include <system_error>
#include <thread>

#include "mp/codec.h"
#include "mp/errors.h"
#include "mp/internal/modules.h"
#include "mp/internal/pool_worker.h"
#include "mp/internal/travel.h"
#include "mp/pool.h"

namespace mp::internal::pool {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr auto kSlice = 10ms;  // longest sleep before checking workers' pidfds

std::size_t pow2_at_least(std::size_t n, std::size_t floor) {
  return std::bit_ceil(std::max(n, floor));
}

// Workers in a row that may end before their initializer returns before the
// pool is declared broken.
constexpr int kMaxFailedStarts = 3;

std::string describe_exit(int code) {
  if (code < 0) {
    const char* abbrev = sigabbrev_np(-code);
    return abbrev ? fmt::format("was killed by signal {} (SIG{})", -code, abbrev)
                  : fmt::format("was killed by signal {}", -code);
  }
  return fmt::format("exited with code {}", code);
}

// WorkerStart is what a worker that is not a fork of the pool gets (the
// forkserver and spawn start methods): the channels' region, which travels as
// its memfd, and plain numbers.
struct WorkerStart {
  std::shared_ptr<SharedRegion> region;
  Layout layout{};
  std::uint64_t slot = 0;
  std::uint64_t max_tasks = 0;
  std::uint64_t initializer = 0;  // the pool's address of a void() function, or 0
  std::int32_t parent = 0;
};

}  // namespace
}  // namespace mp::internal::pool

template <>
struct mp::codec_traits<mp::internal::pool::WorkerStart> {
  using W = mp::internal::pool::WorkerStart;
  static void encode(Encoder& e, const W& w) {
    mp::internal::write_region(e, *w.region, "a Pool's channels");
    e.write_raw(&w.layout, sizeof w.layout);
    e.write(w.slot);
    e.write(w.max_tasks);
    e.write(w.initializer);
    e.write(w.parent);
  }
  static W decode(Decoder& d) {
    W w;
    w.region = mp::internal::read_shared_region(d, 1);
    d.read_raw(&w.layout, sizeof w.layout);
    w.slot = d.read<std::uint64_t>();
    w.max_tasks = d.read<std::uint64_t>();
    w.initializer = d.read<std::uint64_t>();
    w.parent = d.read<std::int32_t>();
    if (w.layout.total() > w.region->size() || w.slot >= w.layout.slots) {
      throw CodecError("mp codec: a Pool worker's channels do not fit their region");
    }
    return w;
  }
};

namespace mp::internal::pool {
namespace {

// Takes `start` by value: the worker's entry owns what it was sent.
void worker_entry(WorkerStart start) {  // NOLINT(performance-unnecessary-value-param)
  static std::function<void()>* init = new std::function<void()>;  // lives with the worker
  if (start.initializer) {
    *init = relocate(reinterpret_cast<void (*)()>(static_cast<std::uintptr_t>(start.initializer)));
  }
  WorkerConfig cfg;
  cfg.channels.base = start.region->as<char>();
  cfg.channels.layout = start.layout;
  cfg.slot = start.slot;
  cfg.max_tasks = start.max_tasks;
  cfg.initializer = init;
  cfg.parent = start.parent;
  worker_main(cfg);
}

}  // namespace

PoolCore::PoolCore(CoreOptions options) : options_(std::move(options)), owner_pid_(::getpid()) {
  ch_.layout.task_capacity = pow2_at_least(options_.task_buffer, 4096);
  ch_.layout.result_capacity = pow2_at_least(options_.result_buffer, 4096);
  ch_.layout.slots = static_cast<std::size_t>(options_.processes);
  region_ = std::make_shared<SharedRegion>(ch_.layout.total());
  ch_.base = region_->as<char>();
  new (ch_.control()) PoolControl();
  for (std::size_t i = 0; i < ch_.layout.slots; ++i) new (ch_.result_control(i)) ResultControl();
  slots_.resize(ch_.layout.slots);
  std::lock_guard lock(mu_);
  last_death_check_ = Clock::now();
  try {
    for (std::size_t i = 0; i < slots_.size(); ++i) spawn_locked(i);
  } catch (...) {
    stop_workers_locked();
    throw;
  }
}

PoolCore::~PoolCore() {
  if (::getpid() != owner_pid_) return;  // a forked copy never owns workers
  try {
    terminate();
    join();
  } catch (...) {
  }
}

bool PoolCore::running() const {
  std::lock_guard lock(mu_);
  return state_ == State::kRun;
}

namespace {
std::atomic<int> g_injected_spawn_failures{0};
}  // namespace

void inject_spawn_failures(int n) { g_injected_spawn_failures.store(n); }

void PoolCore::spawn_locked(std::size_t slot) {
  if (g_injected_spawn_failures.load() > 0 && g_injected_spawn_failures.fetch_sub(1) > 0) {
    throw std::system_error(EAGAIN, std::generic_category(), "fork (failure injected by a test)");
  }
  ResultControl* rc = ch_.result_control(slot);
  rc->tail.store(0);
  rc->head.store(0);
  rc->writer_waiting.store(0);
  rc->exiting.store(0);
  rc->ready.store(0);
  Slot& s = slots_[slot];
  s.partial = Partial{};
  s.exited = false;
  WorkerConfig cfg;
  cfg.channels = ch_;
  cfg.slot = slot;
  cfg.max_tasks = options_.max_tasks;
  cfg.initializer = &options_.initializer;
  cfg.parent = ::getpid();
  s.name = fmt::format("PoolWorker-{}", ++worker_counter_);
  std::optional<Process> made;
  if (options_.start_method == StartMethod::kFork) {
    made.emplace(ProcessOptions{s.name, true, "fork"}, [cfg] { worker_main(cfg); });
  } else {
    // The worker is not a fork of this process: it gets the channels' region
    // and the initializer's address as data (internal/travel.h, modules.h).
    WorkerStart start;
    start.region = region_;
    start.layout = ch_.layout;
    start.slot = slot;
    start.max_tasks = options_.max_tasks;
    if (options_.initializer) {
      start.initializer =
          reinterpret_cast<std::uintptr_t>(*options_.initializer.target<void (*)()>());
    }
    start.parent = ::getpid();
    made.emplace(
        ProcessOptions{s.name, true, std::string(start_method_name(options_.start_method))},
        worker_entry, start);
  }
  Process& p = *made;
  p.start();
  s.pid = p.pid().value_or(0);
  try {
    s.sentinel = p.sentinel();
  } catch (const Error&) {
    s.sentinel = -1;  // no pidfd (no fd free at start): watched by is_alive()
  }
  s.retry_at.reset();
  s.backoff = std::chrono::milliseconds(10);
  s.process.emplace(std::move(p));
}

void PoolCore::check_submit_locked() const {
  if (broken_) throw BrokenPoolError(*broken_);
  if (state_ != State::kRun) throw ValueError("Pool not running");
}

bool PoolCore::try_write_locked(const std::shared_ptr<JobBase>& job, std::uint32_t chunk,
                                Trampoline t, std::string_view payload) {
  const std::size_t cap = ch_.layout.task_capacity;
  const std::size_t size = round_up(kTaskHeader + payload.size(), 16);
  std::uint64_t pos = tail_;
  const std::size_t to_end = cap - (pos & (cap - 1));
  const std::size_t need = size + (to_end < size ? to_end : 0);
  if (cap - (pos - head_) < need) return false;
  PoolControl* c = ch_.control();
  if (to_end < size) {
    TaskHeader* pad = ch_.task_at(pos);
    pad->size = static_cast<std::uint32_t>(to_end);
    pad->payload_len = 0;
    pad->state.store(state_tag(pos) | kOwnerPad, std::memory_order_release);
    records_.push_back(Record{pos, static_cast<std::uint32_t>(to_end), true, 0, nullptr});
    pos += to_end;
  }
  TaskHeader* h = ch_.task_at(pos);
  h->size = static_cast<std::uint32_t>(size);
  h->payload_len = static_cast<std::uint32_t>(payload.size());
  h->seq = base_seq_ + records_.size();
  h->trampoline = reinterpret_cast<std::uint64_t>(t);
  if (!payload.empty())
    std::memcpy(reinterpret_cast<char*>(h) + kTaskHeader, payload.data(), payload.size());
  h->state.store(state_tag(pos), std::memory_order_release);
  records_.push_back(Record{pos, static_cast<std::uint32_t>(size), false, chunk, job});
  tail_ = pos + size;
  c->tail.store(tail_, std::memory_order_release);
  return true;
}

void PoolCore::enqueue_locked(const std::shared_ptr<JobBase>& job, std::uint32_t chunk,
                              Trampoline t, std::string_view payload) {
  const std::size_t size = round_up(kTaskHeader + payload.size(), 16);
  if (size > ch_.layout.task_capacity / 2) {
    throw ValueError(
        fmt::format("task arguments of {} bytes do not fit the pool's task buffer of {} bytes "
                    "(raise PoolOptions::task_buffer_bytes)",
                    payload.size(), ch_.layout.task_capacity));
  }
  ++outstanding_;
  if (pending_.empty() && try_write_locked(job, chunk, t, payload)) return;
  if (pending_.empty()) {
    pending_bytes_.clear();
    pending_consumed_ = 0;
  }
  pending_.push_back(Pending{job, chunk, t, pending_bytes_.size(), payload.size()});
  pending_bytes_.append(payload);
}

void PoolCore::wake_workers() {
  PoolControl* c = ch_.control();
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (c->sleepers.load(std::memory_order_relaxed) == 0) return;
  if (c->spinners.load(std::memory_order_relaxed) != 0) return;
  if (c->wake_pending.exchange(1)) return;
  c->task_seq.fetch_add(1);
  futex_wake(&c->task_seq, 1);
}

void PoolCore::submit(const std::shared_ptr<JobBase>& job, Trampoline t,
                      const ChunkEncoder& encode) {
  Finished finished;
  {
    std::lock_guard lock(mu_);
    check_submit_locked();
    if (!pending_.empty()) pump_locked(finished, false);
    std::string payload;
    for (std::uint32_t i = 0; i < job->chunks_total; ++i) {
      payload.clear();
      encode(i, payload);
      enqueue_locked(job, i, t, payload);
      if ((i & 255) == 255) wake_workers();
    }
  }
  wake_workers();
  finish(finished);
}

void PoolCore::submit_one(const std::shared_ptr<JobBase>& job, Trampoline t,
                          std::string_view payload) {
  Finished finished;
  {
    std::lock_guard lock(mu_);
    check_submit_locked();
    if (!pending_.empty()) pump_locked(finished, false);
    enqueue_locked(job, 0, t, payload);
  }
  wake_workers();
  finish(finished);
}

std::size_t PoolCore::feed(const std::shared_ptr<JobBase>& job, Trampoline t, std::uint32_t first,
                           const std::vector<std::string_view>& payloads,
                           std::exception_ptr& error) {
  Finished finished;
  std::size_t done = 0;
  {
    std::lock_guard lock(mu_);
    try {
      if (broken_) throw BrokenPoolError(*broken_);
      if (state_ == State::kTerminate || stopping_ || joined_) throw ValueError("Pool not running");
      if (!pending_.empty()) pump_locked(finished, false);
      for (; done < payloads.size(); ++done) {
        enqueue_locked(job, static_cast<std::uint32_t>(first + done), t, payloads[done]);
        if ((done & 255) == 255) wake_workers();
      }
    } catch (...) {
      error = std::current_exception();
    }
    // After close(), a worker that ended while nothing was outstanding
    // (maxtasksperchild) was not replaced; the tasks just fed need one.
    if (done && state_ == State::kClose) {
      for (std::size_t i = 0; i < slots_.size(); ++i) {
        if (!slots_[i].process && !slots_[i].retry_at) replace_locked(i, finished);
      }
    }
  }
  if (done) wake_workers();
  finish(finished);
  return done;
}

// ---- collection ---------------------------------------------------------

bool PoolCore::drain_slot_locked(std::size_t slot, Finished& finished) {
  ResultControl* rc = ch_.result_control(slot);
  const char* data = ch_.result_data(slot);
  const std::size_t cap = ch_.layout.result_capacity;
  std::uint64_t head = rc->head.load(std::memory_order_relaxed);
  const std::uint64_t start = head;
  Partial& part = slots_[slot].partial;
  for (;;) {
    const std::uint64_t tail = rc->tail.load(std::memory_order_acquire);
    if (tail == head) break;
    const std::size_t off = head & (cap - 1);
    const std::size_t to_end = cap - off;
    std::size_t avail = tail - head;
    if (part.active) {
      const std::size_t n = std::min<std::size_t>({avail, to_end, part.remaining});
      const std::size_t want = part.header.len - part.bytes.size();
      part.bytes.append(data + off, std::min(n, want));
      part.remaining -= n;
      head += n;
      if (part.remaining == 0) {
        part.active = false;
        handle_frame_locked(slot, part.header, part.bytes, finished);
        std::string().swap(part.bytes);
      }
      continue;
    }
    if (to_end < kResultHeader) {
      if (avail < to_end) break;
      head += to_end;
      continue;
    }
    if (avail < kResultHeader) break;
    ResultHeader h;
    std::memcpy(&h, data + off, sizeof h);
    const std::size_t total = kResultHeader + round_up(h.len, 8);
    if (h.status == kPad) {
      if (avail < kResultHeader + h.len) break;
      head += kResultHeader + h.len;
      continue;
    }
    if (total <= cap / 2) {
      if (avail < total) break;
      handle_frame_locked(slot, h, std::string_view(data + off + kResultHeader, h.len), finished);
      head += total;
      continue;
    }
    part.active = true;
    part.header = h;
    part.remaining = round_up(h.len, 8);
    part.bytes.clear();
    part.bytes.reserve(h.len);
    head += kResultHeader;
  }
  if (head != start) {
    rc->head.store(head, std::memory_order_release);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (rc->writer_waiting.load(std::memory_order_relaxed) && rc->writer_waiting.exchange(0)) {
      rc->space_seq.fetch_add(1);
      futex_wake(&rc->space_seq, 1);
    }
    return true;
  }
  return false;
}

void PoolCore::handle_frame_locked(std::size_t slot, const ResultHeader& h,
                                   std::string_view payload, Finished& finished) {
  if (h.status == kInitError) {
    std::string type = "unknown";
    std::string message;
    try {
      std::tie(type, message) = decode<std::tuple<std::string, std::string>>(payload);
    } catch (...) {
    }
    break_pool_locked(fmt::format("Pool is broken: the initializer raised {} in {}: {}", type,
                                  slots_[slot].name, message),
                      finished);
    return;
  }
  if (h.seq < base_seq_ || h.seq - base_seq_ >= records_.size())
    return;  // not ours (cannot happen)
  Record& r = records_[h.seq - base_seq_];
  if (r.done || !r.job) return;
  r.done = true;
  std::shared_ptr<JobBase> job = std::move(r.job);
  if (h.status == kOk) {
    try {
      job->deliver(r.chunk, payload);
    } catch (...) {
      job->fail(r.chunk, std::current_exception());
    }
  } else {
    job->fail(r.chunk, rebuild_exception(payload));
  }
  --outstanding_;
  if (++job->chunks_done == job->chunks_total) finished.push_back(std::move(job));
}

void PoolCore::reclaim_locked() {
  PoolControl* c = ch_.control();
  while (!records_.empty() && records_.front().done) {
    Record& r = records_.front();
    std::uint64_t next = c->next.load(std::memory_order_acquire);
    if (next <= r.pos) {
      // A worker claimed this record and died before moving the cursor (or
      // it is padding nobody skipped yet): move the cursor past it.
      if (next < r.pos) break;  // cannot happen: records before it are done
      c->next.compare_exchange_strong(next, r.pos + r.size, std::memory_order_acq_rel);
      continue;
    }
    head_ = r.pos + r.size;
    records_.pop_front();
    ++base_seq_;
  }
  if (records_.empty()) head_ = tail_;
}

void PoolCore::flush_pending_locked() {
  bool wrote = false;
  while (!pending_.empty()) {
    Pending& p = pending_.front();
    if (!try_write_locked(p.job, p.chunk, p.tramp,
                          std::string_view(pending_bytes_).substr(p.offset, p.len)))
      break;
    pending_consumed_ = p.offset + p.len;
    pending_.pop_front();
    wrote = true;
  }
  if (pending_.empty()) {
    pending_bytes_.clear();
    pending_consumed_ = 0;
  }
  if (wrote) wake_workers();
}

void PoolCore::pump_locked(Finished& finished, bool check_deaths) {
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    if (!slots_[i].process || slots_[i].exited) continue;
    drain_slot_locked(i, finished);
    if (ch_.result_control(i)->exiting.load(std::memory_order_acquire))
      handle_exit_locked(i, finished);
  }
  const auto now = Clock::now();
  if (check_deaths || now - last_death_check_ >= kSlice) {
    last_death_check_ = now;
    std::vector<pollfd> fds;
    std::vector<std::size_t> which;
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      if (!slots_[i].process || slots_[i].exited) continue;
      if (slots_[i].sentinel < 0) {
        if (!slots_[i].process->is_alive()) handle_exit_locked(i, finished);
        continue;
      }
      fds.push_back(pollfd{slots_[i].sentinel, POLLIN, 0});
      which.push_back(i);
    }
    if (!fds.empty() && ::poll(fds.data(), fds.size(), 0) > 0) {
      for (std::size_t k = 0; k < fds.size(); ++k) {
        if (fds[k].revents) handle_exit_locked(which[k], finished);
      }
    }
    retry_spawns_locked(finished);
  }
  reclaim_locked();
  if (!pending_.empty()) flush_pending_locked();
}

void PoolCore::handle_exit_locked(std::size_t slot, Finished& finished) {
  Slot& s = slots_[slot];
  if (!s.process || s.exited) return;
  s.process->join();
  s.exited = true;
  // Results the worker published before it ended are still good.
  drain_slot_locked(slot, finished);
  s.partial = Partial{};
  const int code = s.process->exitcode().value_or(0);
  const std::uint64_t owner = slot + 1;
  for (Record& r : records_) {
    if (r.done || !r.job) continue;
    const std::uint64_t st = ch_.task_at(r.pos)->state.load(std::memory_order_acquire);
    if ((st & kOwnerMask) != owner) continue;
    r.done = true;
    std::shared_ptr<JobBase> job = std::move(r.job);
    job->fail(r.chunk, std::make_exception_ptr(
                           WorkerLostError(fmt::format("worker {} (pid {}) {} while running a task",
                                                       s.name, s.pid, describe_exit(code)),
                                           s.pid, code)));
    --outstanding_;
    if (++job->chunks_done == job->chunks_total) finished.push_back(std::move(job));
  }
  const bool initialized = ch_.result_control(slot)->ready.load(std::memory_order_acquire) != 0;
  s.process.reset();
  s.sentinel = -1;
  if (broken_ || state_ == State::kTerminate) return;
  // A worker that ends (exits, crashes, is killed) before its initializer
  // returns, several times in a row, breaks the pool as a throwing
  // initializer does, instead of being replaced forever.
  if (!initialized) {
    if (++failed_starts_ >= kMaxFailedStarts) {
      break_pool_locked(
          fmt::format("Pool is broken: {} workers in a row ended before their initializer "
                      "returned (the last, {}, {})",
                      failed_starts_, s.name, describe_exit(code)),
          finished);
      return;
    }
  } else {
    failed_starts_ = 0;
  }
  replace_locked(slot, finished);
}

// replace_locked starts a replacement in an empty slot if the pool needs
// one. A start that fails (fork: EAGAIN under RLIMIT_NPROC, say) is retried
// with a back-off from 10 ms to 1 s; while no worker runs at all, the tasks
// waiting fail with ProcessError saying why, so nothing waits forever.
void PoolCore::replace_locked(std::size_t slot, Finished& finished) {
  Slot& s = slots_[slot];
  const bool needed = state_ == State::kRun || outstanding_ > 0;
  if (broken_ || state_ == State::kTerminate || !needed) {
    s.retry_at.reset();
    return;
  }
  try {
    spawn_locked(slot);
    spawn_error_.clear();
    return;
  } catch (const std::exception& e) {
    spawn_error_ = e.what();
  }
  s.retry_at = Clock::now() + s.backoff;
  s.backoff = std::min(s.backoff * 2, std::chrono::milliseconds(1000));
  bool any_alive = false;
  for (const Slot& o : slots_) any_alive = any_alive || (o.process && !o.exited);
  if (!any_alive && outstanding_ > 0) {
    // No worker is alive to have claimed any of them: the workers started
    // later skip them, so a failed task never runs after all.
    ch_.control()->next.store(tail_, std::memory_order_release);
    fail_all_locked(std::make_exception_ptr(ProcessError(fmt::format(
                        "Pool could not start a worker ({}), and none is running: the task "
                        "failed; the pool keeps trying to start workers",
                        spawn_error_))),
                    finished);
    records_.clear();
    head_ = tail_;
  }
}

void PoolCore::retry_spawns_locked(Finished& finished) {
  const auto now = Clock::now();
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    Slot& s = slots_[i];
    if (s.process || !s.retry_at || now < *s.retry_at) continue;
    replace_locked(i, finished);
  }
}

void PoolCore::fail_all_locked(const std::exception_ptr& error, Finished& finished) {
  auto resolve = [&](std::shared_ptr<JobBase> job, std::uint32_t chunk) {
    job->fail(chunk, error);
    --outstanding_;
    if (++job->chunks_done == job->chunks_total) finished.push_back(std::move(job));
  };
  for (Record& r : records_) {
    if (r.done || !r.job) continue;
    r.done = true;
    resolve(std::move(r.job), r.chunk);
  }
  for (Pending& p : pending_) resolve(std::move(p.job), p.chunk);
  pending_.clear();
  pending_bytes_.clear();
  pending_consumed_ = 0;
}

void PoolCore::stop_workers_locked() {
  for (Slot& s : slots_) {
    if (s.process && !s.exited) s.process->kill();
  }
  for (Slot& s : slots_) {
    if (s.process && !s.exited) {
      s.process->join();
      s.exited = true;
    }
    s.process.reset();
  }
}

void PoolCore::break_pool_locked(std::string message, Finished& finished) {
  if (broken_) return;
  broken_ = std::move(message);
  stop_workers_locked();
  fail_all_locked(std::make_exception_ptr(BrokenPoolError(*broken_)), finished);
  records_.clear();
  head_ = tail_;
}

// ---- waiting --------------------------------------------------------------

bool PoolCore::results_available() const {
  for (std::size_t i = 0; i < ch_.layout.slots; ++i) {
    const ResultControl* rc = ch_.result_control(i);
    if (rc->tail.load(std::memory_order_acquire) != rc->head.load(std::memory_order_relaxed))
      return true;
    if (rc->exiting.load(std::memory_order_relaxed)) return true;
  }
  return false;
}

void PoolCore::wait_for_results(const Deadline& deadline, bool spin) {
  if (spin) {
    const auto until = Clock::now() + 50us;
    for (int i = 0;; ++i) {
      if (results_available()) return;
      cpu_relax();
      if ((i & 63) == 63) {
        if (Clock::now() >= until) break;
        spin_yield();
      }
    }
  }
  PoolControl* c = ch_.control();
  const std::uint32_t seen = c->result_seq.load(std::memory_order_seq_cst);
  waiters_.fetch_add(1);
  c->parent_waiting.store(1, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (!results_available()) {
    auto slice_end = Clock::now() + kSlice;
    if (deadline && *deadline < slice_end) slice_end = *deadline;
    if (!futex_wait_until(&c->result_seq, seen, slice_end)) {
      std::lock_guard lock(mu_);
      last_death_check_ = {};  // a slice passed quietly: look at the workers
    }
  }
  waiters_.fetch_sub(1);
}

void PoolCore::finish(Finished& finished) {
  if (finished.empty()) return;
  for (auto& job : finished) job->complete();
  finished.clear();
  if (waiters_.load() > 0) {
    PoolControl* c = ch_.control();
    c->result_seq.fetch_add(1);
    futex_wake_all(&c->result_seq);
  }
}

bool PoolCore::wait_until_impl(bool (*pred)(void*), void* ctx, const Deadline& deadline) {
  if (pred(ctx)) return true;
  for (;;) {
    Finished finished;
    bool spin;
    {
      std::lock_guard lock(mu_);
      pump_locked(finished, false);
      spin = outstanding_ <= slots_.size() * 2;
    }
    finish(finished);
    if (pred(ctx)) return true;
    if (expired(deadline)) return false;
    wait_for_results(deadline, spin);
  }
}

// ---- close / terminate / join -------------------------------------------

void PoolCore::close() {
  std::lock_guard lock(mu_);
  if (state_ == State::kRun) state_ = State::kClose;
}

void PoolCore::terminate() {
  Finished finished;
  {
    std::lock_guard lock(mu_);
    if (state_ == State::kTerminate && joined_) return;
    state_ = State::kTerminate;
    // Results published before the kill still count.
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      if (slots_[i].process && !slots_[i].exited) drain_slot_locked(i, finished);
    }
    stop_workers_locked();
    fail_all_locked(
        std::make_exception_ptr(ProcessError("Pool was terminated before the task completed")),
        finished);
    records_.clear();
    head_ = tail_;
  }
  finish(finished);
}

void PoolCore::join() {
  {
    std::lock_guard lock(mu_);
    if (state_ == State::kRun) throw ValueError("Pool is still running");
    if (joined_) return;
  }
  // Every submitted task completes first, and an imap iterator that still
  // feeds its input after close() (PoolCore::feed) may add more meanwhile:
  // stopping_ is set in the same hold that saw none outstanding.
  std::unique_lock lock(mu_, std::defer_lock);
  for (;;) {
    wait_until(
        [this] {
          std::lock_guard hold(mu_);
          return outstanding_ == 0;
        },
        std::nullopt);
    lock.lock();
    if (outstanding_ == 0) break;
    lock.unlock();
  }
  stopping_ = true;
  PoolControl* c = ch_.control();
  c->closing.store(1, std::memory_order_seq_cst);
  c->task_seq.fetch_add(1);
  futex_wake_all(&c->task_seq);
  for (Slot& s : slots_) {
    if (s.process && !s.exited) {
      s.process->join();
      s.exited = true;
    }
    s.process.reset();
  }
  joined_ = true;
}

}  // namespace mp::internal::pool
