// mp/internal/pool_core.h — the untyped engine under mp::Pool: workers,
// dispatch, result collection, worker death and replacement.
// Internal: users include mp/pool.h.
//
// No helper thread: whichever caller waits (AsyncResult::get, map, imap's
// next, join...) drives the pool — drains result rings, completes jobs (and
// runs their callbacks), moves queued tasks into the ring, notices dead
// workers and forks replacements. So a replacement is always forked by a
// caller's thread, from a state where no thread of the pool holds a lock
// the child would need. Tasks submitted while nobody waits still run: they
// sit in the shared ring and workers claim them on their own; only tasks
// beyond the ring's capacity wait for the next call into the pool.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mp/internal/futex.h"
#include "mp/internal/pool_channel.h"
#include "mp/internal/shm.h"
#include "mp/internal/start.h"
#include "mp/process.h"

namespace mp::internal::pool {

// JobBase is one submitted call (apply_async) or one map/imap: `chunks_total`
// records whose results come back through deliver()/fail().
class JobBase {
 public:
  virtual ~JobBase() = default;
  // deliver(chunk, payload) decodes chunk's result; fail(chunk, error)
  // records its error. Called under the core's mutex, once per chunk;
  // deliver may throw (a result that does not decode), then fail is called.
  virtual void deliver(std::uint32_t chunk, std::string_view payload) = 0;
  virtual void fail(std::uint32_t chunk, std::exception_ptr error) = 0;
  // complete() runs once every chunk arrived, outside the core's mutex:
  // callbacks, then ready. Default: ready.
  virtual void complete() { ready.store(true, std::memory_order_release); }

  std::uint32_t chunks_total = 0;  // set before submit
  std::uint32_t chunks_done = 0;   // under the core's mutex
  std::atomic<bool> ready{false};
};

struct CoreOptions {
  int processes = 1;
  StartMethod start_method = StartMethod::kFork;
  std::function<void()> initializer;
  std::uint64_t max_tasks = 0;  // 0: unlimited
  std::size_t task_buffer = 1 << 20;
  std::size_t result_buffer = 256 << 10;
};

// inject_spawn_failures makes the next n worker starts fail as fork() does
// under RLIMIT_NPROC (EAGAIN): a fault-injection seam for the tests.
void inject_spawn_failures(int n);

// ChunkEncoder appends the payload of chunk i to `out`.
using ChunkEncoder = std::function<void(std::uint32_t i, std::string& out)>;

// Engine is what mp::Pool's typed layer (pool.h: AsyncResult, IMapIterator,
// the map and imap feeders) drives: somewhere to submit encoded tasks, and a
// wait that collects their results. PoolCore is the engine of processes on
// this machine; mp/mpi.h has one on MPI ranks. The contracts below are
// PoolCore's; another engine documents where it differs.
class Engine {
 public:
  virtual ~Engine() = default;

  // submit queues job->chunks_total tasks running `t`; chunk i's payload
  // comes from encode(i). Raises "Pool not running" after close/terminate,
  // BrokenPoolError on a broken pool, ValueError for a payload larger than
  // the task buffer can ever hold.
  virtual void submit(const std::shared_ptr<JobBase>& job, Trampoline t,
                      const ChunkEncoder& encode) = 0;
  // submit_one: the single-chunk fast path (payload already encoded).
  virtual void submit_one(const std::shared_ptr<JobBase>& job, Trampoline t,
                          std::string_view payload) = 0;
  // feed is submit for an imap iterator that pulls its input as it goes:
  // it queues payloads[k] as chunk `first + k` (mod 2^32), as many as it
  // can, and returns how many. Why it stopped short goes to `error`:
  // BrokenPoolError on a broken pool, ValueError "Pool not running" once
  // terminate() or join() began, ValueError for a payload the task buffer
  // can never hold. Unlike submit, it works after close(): CPython's imap
  // keeps feeding its input after close() too; join() waits for what was
  // fed before it, and later feeds fail.
  virtual std::size_t feed(const std::shared_ptr<JobBase>& job, Trampoline t, std::uint32_t first,
                           const std::vector<std::string_view>& payloads,
                           std::exception_ptr& error) = 0;

  // wait_until drives the pool until pred() holds (true) or the deadline
  // passes (false). pred is evaluated without the engine's mutex.
  template <class Pred>
  bool wait_until(Pred&& pred, const Deadline& deadline) {
    return wait_until_impl(
        [](void* p) { return (*static_cast<std::remove_reference_t<Pred>*>(p))(); }, &pred,
        deadline);
  }

  virtual void close() = 0;
  virtual void terminate() = 0;
  virtual void join() = 0;

  virtual int processes() const noexcept = 0;
  // running(): neither closed nor terminated.
  virtual bool running() const = 0;

 protected:
  virtual bool wait_until_impl(bool (*pred)(void*), void* ctx, const Deadline& deadline) = 0;
};

class PoolCore final : public Engine {
 public:
  explicit PoolCore(CoreOptions options);
  ~PoolCore() override;
  PoolCore(const PoolCore&) = delete;
  PoolCore& operator=(const PoolCore&) = delete;

  // Engine's contract.
  void submit(const std::shared_ptr<JobBase>& job, Trampoline t,
              const ChunkEncoder& encode) override;
  void submit_one(const std::shared_ptr<JobBase>& job, Trampoline t,
                  std::string_view payload) override;
  std::size_t feed(const std::shared_ptr<JobBase>& job, Trampoline t, std::uint32_t first,
                   const std::vector<std::string_view>& payloads,
                   std::exception_ptr& error) override;
  void close() override;
  void terminate() override;
  void join() override;
  int processes() const noexcept override { return options_.processes; }
  bool running() const override;

 private:
  enum class State { kRun, kClose, kTerminate };

  struct Record {
    std::uint64_t pos;
    std::uint32_t size;
    bool done;
    std::uint32_t chunk;
    std::shared_ptr<JobBase> job;
  };
  struct Pending {
    std::shared_ptr<JobBase> job;
    std::uint32_t chunk;
    Trampoline tramp;
    std::size_t offset;  // into pending_bytes_
    std::size_t len;
  };
  struct Partial {  // a streamed result frame being assembled
    bool active = false;
    ResultHeader header{};
    std::uint64_t remaining = 0;  // bytes (payload + padding) still to read
    std::string bytes;
  };
  struct Slot {
    std::optional<Process> process;
    int sentinel = -1;  // the worker's pidfd; -1 when none could be opened
    pid_t pid = 0;
    // A replacement that could not be started (fork failed): when to retry,
    // and the next back-off.
    std::optional<std::chrono::steady_clock::time_point> retry_at;
    std::chrono::milliseconds backoff{10};
    std::string name;
    Partial partial;
    bool exited = false;
  };
  using Finished = std::vector<std::shared_ptr<JobBase>>;

  bool wait_until_impl(bool (*pred)(void*), void* ctx, const Deadline& deadline) override;
  void check_submit_locked() const;
  bool try_write_locked(const std::shared_ptr<JobBase>& job, std::uint32_t chunk, Trampoline t,
                        std::string_view payload);
  void enqueue_locked(const std::shared_ptr<JobBase>& job, std::uint32_t chunk, Trampoline t,
                      std::string_view payload);
  void wake_workers();
  void pump_locked(Finished& finished, bool check_deaths);
  bool drain_slot_locked(std::size_t slot, Finished& finished);
  void handle_frame_locked(std::size_t slot, const ResultHeader& h, std::string_view payload,
                           Finished& finished);
  void reclaim_locked();
  void flush_pending_locked();
  void handle_exit_locked(std::size_t slot, Finished& finished);
  void spawn_locked(std::size_t slot);
  void replace_locked(std::size_t slot, Finished& finished);
  void retry_spawns_locked(Finished& finished);
  void fail_all_locked(const std::exception_ptr& error, Finished& finished);
  void break_pool_locked(std::string message, Finished& finished);
  void stop_workers_locked();
  bool results_available() const;
  void wait_for_results(const Deadline& deadline, bool spin);
  void finish(Finished& finished);
  std::size_t outstanding_locked() const { return outstanding_; }

  CoreOptions options_;
  std::shared_ptr<SharedRegion> region_;
  Channels ch_;
  const pid_t owner_pid_;

  mutable std::mutex mu_;
  // Everything below is written under mu_.
  State state_ = State::kRun;
  bool joined_ = false;
  bool stopping_ = false;              // join() saw every task done and is stopping the workers
  std::optional<std::string> broken_;  // the initializer's failure
  int failed_starts_ = 0;    // workers in a row that ended before their initializer returned
  std::string spawn_error_;  // why the last replacement could not be started
  std::vector<Slot> slots_;
  int worker_counter_ = 0;
  std::uint64_t tail_ = 0;  // task ring: end of written records
  std::uint64_t head_ = 0;  // task ring: start of records not yet reclaimed
  std::deque<Record> records_;
  std::uint64_t base_seq_ = 0;  // seq of records_.front()
  std::deque<Pending> pending_;
  std::string pending_bytes_;
  std::size_t pending_consumed_ = 0;
  std::size_t outstanding_ = 0;  // tasks submitted and not yet resolved
  std::chrono::steady_clock::time_point last_death_check_{};
  std::atomic<int> waiters_{0};  // threads asleep on result_seq
};

// rebuild_exception turns a kTaskError payload (type name, message) into the
// exception to rethrow in the caller (see mp::register_exception).
std::exception_ptr rebuild_exception(std::string_view payload);

}  // namespace mp::internal::pool
