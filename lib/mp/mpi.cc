#include "mp/mpi.h"

#include <fmt/format.h>
#include <mpi.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "mp/codec.h"
#include "mp/errors.h"
#include "mp/internal/futex.h"
#include "mp/internal/modules.h"
#include "mp/internal/pool_core.h"
#include "mp/internal/pool_worker.h"

namespace mp::mpi {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using internal::pool::JobBase;
using internal::pool::Trampoline;

// ---- wire format ------------------------------------------------------------
//
// Every message starts with a Header. Rank 0 sends on kTagToWorker; a worker
// answers a Pool on that Pool's own tag (each Pool has one, so several Pools
// can share the ranks). A message longer than kPiece travels as pieces: the
// first on the message's tag, the rest on tag + 1, which no probe for a new
// message matches. A sender has one message at a time in flight per peer,
// so the pieces of one message never interleave with another's.

constexpr int kTagToWorker = 1;  // pieces: 2
constexpr int kTagBase = 16;     // Pool tags: kTagBase + 2 * k
constexpr std::size_t kPiece = 16 << 20;

enum Kind : std::uint32_t {
  kOpen = 1,   // rank 0 -> worker: u64 initializer, then rank 0's module map
  kTasks,      // rank 0 -> worker: count records {u64 seq, u64 trampoline, u64 len, bytes}
  kCancel,     // rank 0 -> worker: drop this Pool's queued tasks, answer kCancelled
  kShutdown,   // rank 0 -> worker: leave the serve loop
  kOpened,     // worker -> rank 0: u32 code, u32 pid, then encode(tuple<host, text>)
  kResults,    // worker -> rank 0: count records {u64 seq, u32 status, u64 len, bytes}
  kCancelled,  // worker -> rank 0
};

enum OpenCode : std::uint32_t { kOpenOk = 0, kOpenRefused = 1, kOpenInitFailed = 2 };
enum ResultStatus : std::uint32_t { kOk = 0, kTaskError = 1 };

struct Header {
  std::uint32_t kind;
  std::uint32_t tag;      // the Pool's tag
  std::uint64_t total;    // bytes of the whole message, this header included
  std::uint64_t count;    // records
  std::uint64_t busy_ns;  // kResults: time the worker spent in these tasks
};
static_assert(sizeof(Header) == 32);

void put_u64(std::string& out, std::uint64_t v) {
  out.append(reinterpret_cast<const char*>(&v), 8);
}
void put_u32(std::string& out, std::uint32_t v) {
  out.append(reinterpret_cast<const char*>(&v), 4);
}

std::string begin_message(Kind kind, int tag) {
  std::string m(sizeof(Header), '\0');
  Header h{kind, static_cast<std::uint32_t>(tag), 0, 0, 0};
  std::memcpy(m.data(), &h, sizeof h);
  return m;
}

void end_message(std::string& m, std::uint64_t count = 0, std::uint64_t busy_ns = 0) {
  Header h;
  std::memcpy(&h, m.data(), sizeof h);
  h.total = m.size();
  h.count = count;
  h.busy_ns = busy_ns;
  std::memcpy(m.data(), &h, sizeof h);
}

// Reader walks a received message's body; every read is bounds-checked.
class Reader {
 public:
  explicit Reader(std::string_view bytes) : p_(bytes.data()), end_(bytes.data() + bytes.size()) {
    header_ = take<Header>();
  }
  const Header& header() const { return header_; }
  template <class T>
  T take() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, p_, sizeof(T));
    p_ += sizeof(T);
    return v;
  }
  std::string_view bytes(std::uint64_t n) {
    need(n);
    std::string_view v(p_, n);
    p_ += n;
    return v;
  }
  std::string_view rest() { return bytes(static_cast<std::size_t>(end_ - p_)); }
  std::size_t offset(const char* base) const { return static_cast<std::size_t>(p_ - base); }

 private:
  void need(std::uint64_t n) const {
    if (n > static_cast<std::uint64_t>(end_ - p_)) {
      throw ProcessError("mp::mpi: a malformed message arrived (truncated record)");
    }
  }
  const char* p_;
  const char* end_;
  Header header_{};
};

// ---- MPI calls ----------------------------------------------------------------

// Every MPI call mp makes, and every engine's state, is under this mutex
// (MPI runs at MPI_THREAD_SERIALIZED).
std::mutex& mpi_mutex() {
  static std::mutex* mu = new std::mutex;
  return *mu;
}

std::string mpi_error_text(int rc) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) return fmt::format("MPI error {}", rc);
  return std::string(text, static_cast<std::size_t>(len));
}

void check(int rc, const char* what) {
  if (rc != MPI_SUCCESS)
    throw ProcessError(fmt::format("mp::mpi: {} failed: {}", what, mpi_error_text(rc)));
}

struct Globals {
  bool active = false;             // a Runtime runs on rank 0
  MPI_Comm world = MPI_COMM_NULL;  // a duplicate of MPI_COMM_WORLD
  int rank = 0;
  int size = 1;
  int tag_ub = 32767;
  std::uint64_t pools = 0;        // Pools opened so far
  std::vector<std::string> args;  // argv[1..], for spawned workers
};

Globals& globals() {
  static Globals* g = new Globals;
  return *g;
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "?";
  return buf;
}

// ---- waiting without spinning ---------------------------------------------------

// Backoff paces a polling loop: after activity (reset) it spins for kSpin,
// yielding the CPU between polls (a request/response round trip is shorter
// than that), then sleeps 16 us, 32 us, ... up to `cap`. reset(false)
// skips the spin: the caller expects nothing soon (long tasks run).
class Backoff {
 public:
  static constexpr auto kSpin = 200us;
  explicit Backoff(std::chrono::microseconds cap) : cap_(cap) {}
  void reset(bool spin = true) {
    spin_until_ = spin ? Clock::now() + kSpin : Clock::time_point{};
    sleep_ = 16us;
  }
  void set_cap(std::chrono::microseconds cap) { cap_ = cap; }
  void pause(const internal::Deadline& deadline = std::nullopt) {
    const auto now = Clock::now();
    if (now < spin_until_) {
      sched_yield();
      return;
    }
    auto d = std::min<std::chrono::microseconds>(sleep_, cap_);
    if (deadline) {
      if (*deadline <= now) return;
      d = std::min(d, std::chrono::duration_cast<std::chrono::microseconds>(*deadline - now) + 1us);
    }
    std::this_thread::sleep_for(d);
    sleep_ = std::min<std::chrono::microseconds>(sleep_ * 2, cap_);
  }

 private:
  std::chrono::microseconds cap_;
  Clock::time_point spin_until_ = Clock::now() + kSpin;
  std::chrono::microseconds sleep_ = 16us;
};

// ---- transport ----------------------------------------------------------------

// Outbox sends messages to one peer without blocking: one at a time per
// tag, so that the pieces of two messages never interleave; messages of
// different tags (different Pools) do not wait for each other, so a large
// result nobody receives yet cannot hold back another Pool's messages.
class Outbox {
 public:
  Outbox(MPI_Comm comm, int dest) : comm_(comm), dest_(dest) {}
  Outbox(Outbox&&) = default;

  void post(int tag, std::string message) {
    Lane& lane = lanes_[tag];
    lane.queue.push_back(std::move(message));
    if (lane.reqs.empty()) start_next(tag, lane);
  }
  // progress() moves the sends on; true when one completed.
  bool progress() {
    bool any = false;
    for (auto it = lanes_.begin(); it != lanes_.end();) {
      Lane& lane = it->second;
      while (!lane.reqs.empty()) {
        int done = 0;
        check(MPI_Testall(static_cast<int>(lane.reqs.size()), lane.reqs.data(), &done,
                          MPI_STATUSES_IGNORE),
              "MPI_Testall (send)");
        if (!done) break;
        lane.reqs.clear();
        lane.queue.pop_front();
        any = true;
        start_next(it->first, lane);
      }
      it = lane.queue.empty() ? lanes_.erase(it) : std::next(it);
    }
    return any;
  }
  bool idle() const { return lanes_.empty(); }

 private:
  struct Lane {
    std::deque<std::string> queue;  // front: in flight (a deque: its address is stable)
    std::vector<MPI_Request> reqs;
  };
  void start_next(int tag, Lane& lane) {
    if (lane.queue.empty()) return;
    std::string& m = lane.queue.front();
    for (std::size_t off = 0; off < m.size(); off += kPiece) {
      const int n = static_cast<int>(std::min(kPiece, m.size() - off));
      MPI_Request r;
      check(MPI_Isend(m.data() + off, n, MPI_BYTE, dest_, off ? tag + 1 : tag, comm_, &r),
            "MPI_Isend");
      lane.reqs.push_back(r);
    }
  }
  MPI_Comm comm_;
  int dest_;
  std::map<int, Lane> lanes_;  // by tag; a lane with nothing to send is removed
};

// Inbox receives whole messages on one tag, without blocking.
class Inbox {
 public:
  // poll(comm, source, tag, on_message) hands each message that has arrived
  // whole to on_message(source, std::string). True if anything moved.
  template <class F>
  bool poll(MPI_Comm comm, int source, int tag, F&& on_message) {
    // Messages of one source are handed over in the order they were sent;
    // `held` are the sources with an earlier message still arriving.
    bool any = false;
    held_.clear();
    for (auto it = in_.begin(); it != in_.end();) {
      any |= advance(comm, tag, *it);
      if (!it->reqs.empty() || is_held(it->source)) {
        held_.push_back(it->source);
        ++it;
        continue;
      }
      Incoming whole = std::move(*it);
      it = in_.erase(it);
      on_message(whole.source, std::move(whole.buf));
    }
    for (;;) {
      int flag = 0;
      MPI_Message msg;
      MPI_Status st;
      check(MPI_Improbe(source, tag, comm, &flag, &msg, &st), "MPI_Improbe");
      if (!flag) break;
      any = true;
      int n = 0;
      check(MPI_Get_count(&st, MPI_BYTE, &n), "MPI_Get_count");
      in_.emplace_back();
      Incoming& x = in_.back();
      x.source = st.MPI_SOURCE;
      x.buf.resize(static_cast<std::size_t>(n));
      MPI_Request r;
      check(MPI_Imrecv(x.buf.data(), n, MPI_BYTE, &msg, &r), "MPI_Imrecv");
      x.reqs.push_back(r);
      advance(comm, tag, x);
      if (!x.reqs.empty() || is_held(x.source)) {
        held_.push_back(x.source);
        continue;
      }
      Incoming whole = std::move(x);
      in_.pop_back();
      on_message(whole.source, std::move(whole.buf));
    }
    return any;
  }

 private:
  struct Incoming {
    int source = 0;
    bool sized = false;  // the header arrived and the other pieces are posted
    std::string buf;
    std::vector<MPI_Request> reqs;
  };
  // advance: true when every posted receive of x completed (then x.reqs is
  // empty unless more pieces were just posted).
  static bool advance(MPI_Comm comm, int tag, Incoming& x) {
    if (x.reqs.empty()) return false;  // whole already, waiting for its turn
    int done = 0;
    check(MPI_Testall(static_cast<int>(x.reqs.size()), x.reqs.data(), &done, MPI_STATUSES_IGNORE),
          "MPI_Testall (receive)");
    if (!done) return false;
    x.reqs.clear();
    if (x.sized) return true;
    x.sized = true;
    if (x.buf.size() < sizeof(Header))
      throw ProcessError("mp::mpi: a malformed message arrived (short)");
    Header h;
    std::memcpy(&h, x.buf.data(), sizeof h);
    if (h.total < x.buf.size()) throw ProcessError("mp::mpi: a malformed message arrived (length)");
    if (h.total == x.buf.size()) return true;
    if (x.buf.size() != kPiece) throw ProcessError("mp::mpi: a malformed message arrived (pieces)");
    std::size_t have = x.buf.size();
    x.buf.resize(h.total);
    for (; have < h.total; have += kPiece) {
      const int n = static_cast<int>(std::min<std::uint64_t>(kPiece, h.total - have));
      MPI_Request r;
      check(MPI_Irecv(x.buf.data() + have, n, MPI_BYTE, x.source, tag + 1, comm, &r), "MPI_Irecv");
      x.reqs.push_back(r);
    }
    return true;
  }
  bool is_held(int source) const {
    return std::find(held_.begin(), held_.end(), source) != held_.end();
  }
  std::list<Incoming> in_;  // a list: pending receives write into these buffers
  std::vector<int> held_;
};

// ---- the worker side ------------------------------------------------------------

class WorkerLoop {
 public:
  WorkerLoop(MPI_Comm comm, int master) : comm_(comm), master_(master), out_(comm, master) {}

  void run() {
    Backoff backoff(1ms);
    Clock::time_point last_probe{};
    while (!shutdown_) {
      bool any = out_.progress();
      const auto now = Clock::now();
      if (tasks_.empty() || now - last_probe >= 100us) {
        any |= inbox_.poll(comm_, master_, kTagToWorker,
                           [this](int, std::string m) { handle(std::move(m)); });
        last_probe = now;
        if (shutdown_) break;
      }
      if (!tasks_.empty()) {
        run_one();
        backoff.reset();
        continue;
      }
      if (batch_count_) {
        flush();
        any = true;
      }
      if (any)
        backoff.reset();
      else
        backoff.pause();
    }
    flush();
    while (!out_.idle()) {
      if (out_.progress())
        backoff.reset();
      else
        backoff.pause();
    }
  }

 private:
  struct TaskRef {
    std::shared_ptr<const std::string> buf;
    int tag;
    std::uint64_t seq;
    std::uint64_t tramp;
    std::size_t off;
    std::size_t len;
  };

  void handle(std::string message) {
    auto buf = std::make_shared<const std::string>(std::move(message));
    Reader r(*buf);
    const Header& h = r.header();
    const int tag = static_cast<int>(h.tag);
    switch (h.kind) {
      case kTasks:
        for (std::uint64_t i = 0; i < h.count; ++i) {
          const auto seq = r.take<std::uint64_t>();
          const auto tramp = r.take<std::uint64_t>();
          const auto len = r.take<std::uint64_t>();
          const std::size_t off = r.offset(buf->data());
          r.bytes(len);
          tasks_.push_back(TaskRef{buf, tag, seq, tramp, off, static_cast<std::size_t>(len)});
        }
        break;
      case kOpen:
        open(tag, r);
        break;
      case kCancel: {
        std::erase_if(tasks_, [tag](const TaskRef& t) { return t.tag == tag; });
        if (batch_count_ && batch_tag_ == tag) {
          batch_.clear();
          batch_count_ = 0;
          batch_busy_ = 0;
        }
        std::string m = begin_message(kCancelled, tag);
        end_message(m);
        out_.post(tag, std::move(m));
        break;
      }
      case kShutdown:
        shutdown_ = true;
        break;
      default:
        throw ProcessError(
            fmt::format("mp::mpi: a worker got a message of unknown kind {}", h.kind));
    }
  }

  void open(int tag, Reader& r) {
    const auto initializer = r.take<std::uint64_t>();
    const std::string_view map = r.rest();
    std::uint32_t code = kOpenOk;
    std::string text;
    try {
      const auto theirs = decode<std::vector<internal::Module>>(map);
      const auto ours = internal::loaded_modules();
      if (theirs.empty() || ours.empty()) throw ProcessError("empty module map");
      if (theirs.front().build_id != ours.front().build_id) {
        char exe[4096] = {};
        const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
        text = fmt::format(
            "runs a different executable than rank 0: build id {} here ({}), {} on rank 0. "
            "Every rank must run the same build of the program",
            internal::hex(ours.front().build_id), n > 0 ? exe : "?",
            internal::hex(theirs.front().build_id));
        code = kOpenRefused;
      } else {
        internal::use_parent_map(map);
      }
    } catch (const std::exception& e) {
      code = kOpenRefused;
      text = e.what();
    }
    if (code == kOpenOk && initializer) {
      try {
        auto init = internal::relocate(
            reinterpret_cast<void (*)()>(static_cast<std::uintptr_t>(initializer)));
        init();
      } catch (...) {
        code = kOpenInitFailed;
        internal::pool::describe_current_exception(text);
      }
    }
    std::string m = begin_message(kOpened, tag);
    put_u32(m, code);
    put_u32(m, static_cast<std::uint32_t>(::getpid()));
    encode_into(m, std::tuple<std::string, std::string>(host_name(), text));
    end_message(m);
    out_.post(tag, std::move(m));
  }

  void run_one() {
    TaskRef t = std::move(tasks_.front());
    tasks_.pop_front();
    if (batch_count_ && batch_tag_ != t.tag) flush();
    if (!batch_count_) {
      batch_ = begin_message(kResults, t.tag);
      batch_tag_ = t.tag;
      batch_start_ = Clock::now();
    }
    const std::size_t rec = batch_.size();
    put_u64(batch_, t.seq);
    put_u32(batch_, kOk);
    put_u64(batch_, 0);
    const std::size_t start = batch_.size();
    std::uint32_t status = kOk;
    const auto t0 = Clock::now();
    try {
      const auto tramp =
          internal::relocate(reinterpret_cast<Trampoline>(static_cast<std::uintptr_t>(t.tramp)));
      tramp(std::string_view(*t.buf).substr(t.off, t.len), batch_);
    } catch (...) {
      batch_.resize(start);
      status = kTaskError;
      std::string error;
      internal::pool::describe_current_exception(error);
      batch_ += error;
    }
    const auto t1 = Clock::now();
    batch_busy_ += static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
    const std::uint64_t len = batch_.size() - start;
    std::memcpy(batch_.data() + rec + 8, &status, 4);
    std::memcpy(batch_.data() + rec + 12, &len, 8);
    ++batch_count_;
    if (tasks_.empty() || tasks_.front().tag != batch_tag_ || batch_.size() >= (256u << 10) ||
        t1 - batch_start_ >= 200us) {
      flush();
    }
  }

  void flush() {
    if (!batch_count_) return;
    end_message(batch_, batch_count_, batch_busy_);
    out_.post(batch_tag_, std::move(batch_));
    batch_ = std::string();
    batch_count_ = 0;
    batch_busy_ = 0;
  }

  MPI_Comm comm_;
  int master_;
  Inbox inbox_;
  Outbox out_;
  std::deque<TaskRef> tasks_;
  std::string batch_;  // the kResults message being filled
  int batch_tag_ = -1;
  std::uint64_t batch_count_ = 0;
  std::uint64_t batch_busy_ = 0;
  Clock::time_point batch_start_{};
  bool shutdown_ = false;
};

// serve runs this process as a worker of `master` on `comm` until told to
// stop. An error here cannot be reported to anyone but the job: it aborts.
void serve(MPI_Comm comm, int master) {
  ::prctl(PR_SET_TIMERSLACK, 10000UL);  // 10 us: the backoff's short sleeps stay short
  try {
    WorkerLoop(comm, master).run();
  } catch (const std::exception& e) {
    std::fputs(
        fmt::format("mp::mpi: worker rank {} failed: {}\n", globals().rank, e.what()).c_str(),
        stderr);
    MPI_Abort(MPI_COMM_WORLD, 70);
  }
}

// ---- the engine on rank 0 ---------------------------------------------------------

constexpr std::uint32_t kMinWindow = 2;
constexpr std::uint32_t kMaxWindow = 1024;
constexpr double kQueuedWorkNs = 2e6;  // each worker keeps about 2 ms of tasks
constexpr std::size_t kBatchBytes = 256 << 10;

class MpiEngine final : public internal::pool::Engine {
 public:
  explicit MpiEngine(PoolOptions options);
  ~MpiEngine() override;

  void submit(const std::shared_ptr<JobBase>& job, Trampoline t,
              const internal::pool::ChunkEncoder& encode) override;
  void submit_one(const std::shared_ptr<JobBase>& job, Trampoline t,
                  std::string_view payload) override;
  std::size_t feed(const std::shared_ptr<JobBase>& job, Trampoline t, std::uint32_t first,
                   const std::vector<std::string_view>& payloads,
                   std::exception_ptr& error) override;
  void close() override;
  void terminate() override;
  void join() override;
  int processes() const noexcept override { return static_cast<int>(workers_.size()); }
  bool running() const override {
    std::lock_guard lock(mpi_mutex());
    return state_ == State::kRun;
  }

 protected:
  bool wait_until_impl(bool (*pred)(void*), void* ctx, const internal::Deadline& deadline) override;

 private:
  enum class State { kRun, kClose, kTerminate };
  struct Task {
    std::shared_ptr<JobBase> job;
    std::uint32_t chunk;
    std::uint64_t tramp;
    std::size_t off;  // into arena_
    std::size_t len;
  };
  struct Flight {
    std::shared_ptr<JobBase> job;
    std::uint32_t chunk;
    std::uint32_t worker;
  };
  struct Worker {
    int rank;
    Outbox out;
    std::uint32_t inflight = 0;
    std::uint32_t window = kMinWindow;
    double task_ns = 0;           // recent task time, as the worker reports it
    std::uint64_t last_seen = 0;  // activity stamp of its last results
    bool opened = false;
    bool cancelling = false;  // a kCancel is not answered yet
    std::uint32_t pid = 0;
    std::string host;
  };
  using Finished = std::vector<std::shared_ptr<JobBase>>;

  void spawn_locked(const PoolOptions& options);
  void open_locked(const PoolOptions& options);
  std::string describe_worker(std::size_t i) const;
  void check_submit_locked() const;
  void enqueue_locked(const std::shared_ptr<JobBase>& job, std::uint32_t chunk, Trampoline t,
                      std::string_view payload);
  bool pump_locked(Finished& finished);
  bool dispatch_locked();
  void handle_locked(int source, const std::string& message, Finished& finished);
  void resolve_locked(std::shared_ptr<JobBase> job, Finished& finished) {
    --outstanding_;
    if (++job->chunks_done == job->chunks_total) finished.push_back(std::move(job));
  }
  void fail_all_locked(const std::exception_ptr& error, Finished& finished);
  void drain_sends_locked();
  void release_locked();
  static void finish(Finished& finished);

  MPI_Comm comm_ = MPI_COMM_NULL;
  bool spawned_ = false;
  int first_rank_ = 1;  // the comm rank of worker 0
  int tag_ = 0;
  std::vector<Worker> workers_;
  Inbox inbox_;

  // Everything below is used under mpi_mutex().
  State state_ = State::kRun;
  bool joined_ = false;
  bool stopping_ = false;  // join() saw nothing outstanding: feed() fails from now on
  bool released_ = false;  // the workers were let go (spawned: shut down)
  std::optional<std::string> broken_;
  std::deque<Task> queue_;                             // submitted, not yet sent
  std::string arena_;                                  // the queued tasks' payloads
  std::unordered_map<std::uint64_t, Flight> flights_;  // sent, result not back yet
  std::uint64_t next_seq_ = 0;
  std::size_t outstanding_ = 0;  // tasks submitted and not yet resolved
  std::uint64_t stamp_ = 0;
};

MpiEngine::MpiEngine(PoolOptions options) {
  std::lock_guard lock(mpi_mutex());
  Globals& g = globals();
  if (!g.active) {
    throw ValueError(
        "mp::mpi::Pool needs an mp::mpi::Runtime: construct one at the start of main(), in every "
        "process (mp::mpi::Runtime rt(argc, argv);)");
  }
  if (g.rank != 0)
    throw ValueError("mp::mpi::Pool: only rank 0 makes Pools (the others are its workers)");
  const std::uint64_t id = g.pools++;
  tag_ =
      kTagBase + 2 * static_cast<int>(id % static_cast<std::uint64_t>((g.tag_ub - kTagBase) / 2));
  if (options.spawn) {
    if (*options.spawn < 1) throw ValueError("Number of processes must be at least 1");
    spawn_locked(options);
  } else {
    if (g.size < 2) {
      throw ValueError(fmt::format(
          "mp::mpi::Pool needs at least two ranks (rank 0 and one worker), and MPI_COMM_WORLD has "
          "{}: start the program with mpirun -n N, N >= 2 (mpirun -n 5 ./app: four workers), or "
          "ask for spawned workers (mp::mpi::PoolOptions{{.spawn = N}})",
          g.size));
    }
    comm_ = g.world;
    first_rank_ = 1;
    for (int r = 1; r < g.size; ++r) workers_.push_back(Worker{r, Outbox(comm_, r)});
  }
  open_locked(options);
}

void MpiEngine::spawn_locked(const PoolOptions& options) {
  Globals& g = globals();
  char exe[4096] = {};
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) throw ProcessError("mp::mpi::Pool: cannot read /proc/self/exe to spawn workers");
  std::vector<char*> argv;
  for (std::string& a : g.args) argv.push_back(a.data());
  argv.push_back(nullptr);
  MPI_Info info;
  check(MPI_Info_create(&info), "MPI_Info_create");
  bool map_by = false;
  for (const auto& [k, v] : options.spawn_info) {
    MPI_Info_set(info, k.c_str(), v.c_str());
    map_by |= k == "map_by";
  }
  if (!map_by) MPI_Info_set(info, "map_by", ":OVERSUBSCRIBE");
  std::vector<int> codes(static_cast<std::size_t>(*options.spawn));
  // Errors on MPI_COMM_SELF are fatal unless the program said otherwise:
  // returned here (a failed spawn is an exception), restored after.
  MPI_Errhandler saved;
  MPI_Comm_get_errhandler(MPI_COMM_SELF, &saved);
  MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
  const int rc = MPI_Comm_spawn(exe, argv.size() > 1 ? argv.data() : MPI_ARGV_NULL, *options.spawn,
                                info, 0, MPI_COMM_SELF, &comm_, codes.data());
  MPI_Comm_set_errhandler(MPI_COMM_SELF, saved);
  MPI_Errhandler_free(&saved);
  MPI_Info_free(&info);
  if (rc != MPI_SUCCESS) {
    throw ProcessError(fmt::format("mp::mpi::Pool could not spawn {} workers of {}: {}",
                                   *options.spawn, exe, mpi_error_text(rc)));
  }
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  spawned_ = true;
  first_rank_ = 0;
  for (int r = 0; r < *options.spawn; ++r) workers_.push_back(Worker{r, Outbox(comm_, r)});
}

std::string MpiEngine::describe_worker(std::size_t i) const {
  const Worker& w = workers_[i];
  return spawned_ ? fmt::format("spawned worker {} (pid {} on {})", w.rank, w.pid, w.host)
                  : fmt::format("rank {} (pid {} on {})", w.rank, w.pid, w.host);
}

void MpiEngine::open_locked(const PoolOptions& options) {
  std::string m = begin_message(kOpen, tag_);
  put_u64(m, reinterpret_cast<std::uintptr_t>(options.initializer));
  m += internal::module_map();
  end_message(m);
  for (Worker& w : workers_) w.out.post(kTagToWorker, m);
  // Wait for every worker's answer. Finished stays empty: nothing was submitted.
  Finished finished;
  Backoff backoff(1ms);
  auto opened = [&] {
    return std::all_of(workers_.begin(), workers_.end(), [](const Worker& w) { return w.opened; });
  };
  std::string refused;
  while (!opened()) {
    bool any = false;
    for (Worker& w : workers_) any |= w.out.progress();
    any |= inbox_.poll(comm_, MPI_ANY_SOURCE, tag_, [&](int source, const std::string& message) {
      Reader r(message);
      if (r.header().kind != kOpened) return;
      const std::size_t i = static_cast<std::size_t>(source - first_rank_);
      if (i >= workers_.size()) return;
      Worker& w = workers_[i];
      const auto code = r.take<std::uint32_t>();
      w.pid = r.take<std::uint32_t>();
      auto [host, text] = decode<std::tuple<std::string, std::string>>(r.rest());
      w.host = std::move(host);
      w.opened = true;
      if (code == kOpenRefused && refused.empty()) {
        refused = fmt::format("mp::mpi::Pool: {} {}", describe_worker(i), text);
      } else if (code == kOpenInitFailed && !broken_) {
        std::string type = "unknown";
        std::string message;
        try {
          std::tie(type, message) = decode<std::tuple<std::string, std::string>>(text);
        } catch (...) {
        }
        broken_ = fmt::format("Pool is broken: the initializer raised {} in {}: {}", type,
                              describe_worker(i), message);
      }
    });
    if (any)
      backoff.reset();
    else
      backoff.pause();
  }
  if (!refused.empty()) {
    state_ = State::kTerminate;
    release_locked();
    joined_ = true;
    throw ProcessError(refused);
  }
}

MpiEngine::~MpiEngine() {
  std::lock_guard lock(mpi_mutex());
  if (joined_ || !globals().active) return;
  // mp::Pool's destructor terminates and joins; an engine gets here unjoined
  // only if that failed. Let the workers go without waiting.
  try {
    release_locked();
  } catch (...) {
  }
}

void MpiEngine::check_submit_locked() const {
  if (broken_) throw BrokenPoolError(*broken_);
  if (state_ != State::kRun) throw ValueError("Pool not running");
}

void MpiEngine::enqueue_locked(const std::shared_ptr<JobBase>& job, std::uint32_t chunk,
                               Trampoline t, std::string_view payload) {
  if (queue_.empty()) arena_.clear();
  const std::size_t off = arena_.size();
  arena_.append(payload);
  queue_.push_back(Task{job, chunk, reinterpret_cast<std::uintptr_t>(t), off, payload.size()});
  ++outstanding_;
}

void MpiEngine::submit(const std::shared_ptr<JobBase>& job, Trampoline t,
                       const internal::pool::ChunkEncoder& encode) {
  std::lock_guard lock(mpi_mutex());
  check_submit_locked();
  if (queue_.empty()) arena_.clear();
  for (std::uint32_t i = 0; i < job->chunks_total; ++i) {
    const std::size_t off = arena_.size();
    encode(i, arena_);
    queue_.push_back(Task{job, i, reinterpret_cast<std::uintptr_t>(t), off, arena_.size() - off});
    ++outstanding_;
  }
  dispatch_locked();
}

void MpiEngine::submit_one(const std::shared_ptr<JobBase>& job, Trampoline t,
                           std::string_view payload) {
  std::lock_guard lock(mpi_mutex());
  check_submit_locked();
  enqueue_locked(job, 0, t, payload);
  dispatch_locked();
}

std::size_t MpiEngine::feed(const std::shared_ptr<JobBase>& job, Trampoline t, std::uint32_t first,
                            const std::vector<std::string_view>& payloads,
                            std::exception_ptr& error) {
  std::lock_guard lock(mpi_mutex());
  std::size_t done = 0;
  try {
    if (broken_) throw BrokenPoolError(*broken_);
    if (state_ == State::kTerminate || stopping_ || joined_) throw ValueError("Pool not running");
    for (; done < payloads.size(); ++done) {
      enqueue_locked(job, static_cast<std::uint32_t>(first + done), t, payloads[done]);
    }
  } catch (...) {
    error = std::current_exception();
  }
  if (done) dispatch_locked();
  return done;
}

// dispatch_locked sends queued tasks, in batches, to the workers with room
// in their window: the one with the fewest tasks first, and among equals
// the one that answered last (it is the likeliest to be awake). A batch is
// at most an equal share of the queue, so two long tasks go to two idle
// workers.
bool MpiEngine::dispatch_locked() {
  if (state_ == State::kTerminate) return false;
  bool any = false;
  while (!queue_.empty()) {
    Worker* best = nullptr;
    std::size_t with_room = 0;
    for (Worker& w : workers_) {
      if (w.cancelling || w.inflight >= w.window) continue;
      ++with_room;
      if (!best || w.inflight < best->inflight ||
          (w.inflight == best->inflight && w.last_seen > best->last_seen)) {
        best = &w;
      }
    }
    if (!best) break;
    const std::size_t share = (queue_.size() + with_room - 1) / with_room;
    const std::size_t take = std::min<std::size_t>(best->window - best->inflight, share);
    std::string m = begin_message(kTasks, tag_);
    std::uint64_t count = 0;
    const auto index = static_cast<std::uint32_t>(best - workers_.data());
    while (!queue_.empty() && count < take && (count == 0 || m.size() < kBatchBytes)) {
      Task& t = queue_.front();
      const std::uint64_t seq = next_seq_++;
      put_u64(m, seq);
      put_u64(m, t.tramp);
      put_u64(m, t.len);
      m.append(arena_, t.off, t.len);
      flights_.emplace(seq, Flight{std::move(t.job), t.chunk, index});
      queue_.pop_front();
      ++count;
    }
    end_message(m, count);
    best->inflight += static_cast<std::uint32_t>(count);
    best->out.post(kTagToWorker, std::move(m));
    any = true;
  }
  if (queue_.empty()) arena_.clear();
  return any;
}

void MpiEngine::handle_locked(int source, const std::string& message, Finished& finished) {
  Reader r(message);
  const Header& h = r.header();
  const std::size_t i = static_cast<std::size_t>(source - first_rank_);
  if (i >= workers_.size()) return;
  Worker& w = workers_[i];
  if (h.kind == kCancelled) {
    w.cancelling = false;
    return;
  }
  if (h.kind != kResults) return;
  w.last_seen = ++stamp_;
  if (h.count) {
    const double ns = static_cast<double>(h.busy_ns) / static_cast<double>(h.count);
    w.task_ns = w.task_ns == 0 ? ns : (w.task_ns + ns) / 2;
    const double want = kQueuedWorkNs / std::max(w.task_ns, 1.0);
    w.window = static_cast<std::uint32_t>(std::clamp(want, double{kMinWindow}, double{kMaxWindow}));
  }
  for (std::uint64_t k = 0; k < h.count; ++k) {
    const auto seq = r.take<std::uint64_t>();
    const auto status = r.take<std::uint32_t>();
    const auto len = r.take<std::uint64_t>();
    const std::string_view payload = r.bytes(len);
    auto it = flights_.find(seq);
    if (it == flights_.end()) continue;  // its Pool was terminated
    Flight f = std::move(it->second);
    flights_.erase(it);
    if (w.inflight) --w.inflight;
    if (status == kOk) {
      try {
        f.job->deliver(f.chunk, payload);
      } catch (...) {
        f.job->fail(f.chunk, std::current_exception());
      }
    } else {
      f.job->fail(f.chunk, internal::pool::rebuild_exception(payload));
    }
    resolve_locked(std::move(f.job), finished);
  }
}

bool MpiEngine::pump_locked(Finished& finished) {
  bool any = false;
  for (Worker& w : workers_) any |= w.out.progress();
  any |= inbox_.poll(comm_, MPI_ANY_SOURCE, tag_, [&](int source, const std::string& message) {
    handle_locked(source, message, finished);
  });
  any |= dispatch_locked();
  return any;
}

void MpiEngine::finish(Finished& finished) {
  for (auto& job : finished) job->complete();
  finished.clear();
}

// Rank 0 waits by polling: it spins briefly after activity only while the
// tasks in flight are short (their results come within a round trip);
// while tasks of 100 us or more run, it sleeps between polls from the
// start, leaving the cores to the workers.
bool MpiEngine::wait_until_impl(bool (*pred)(void*), void* ctx,
                                const internal::Deadline& deadline) {
  if (pred(ctx)) return true;
  Backoff backoff(200us);
  bool spin = true;
  for (bool first = true;; first = false) {
    Finished finished;
    bool any;
    {
      std::lock_guard lock(mpi_mutex());
      if (released_) return pred(ctx);
      any = pump_locked(finished);
      backoff.set_cap(outstanding_ ? 200us : 1000us);
      spin = std::none_of(workers_.begin(), workers_.end(),
                          [](const Worker& w) { return w.inflight && w.task_ns >= 100e3; });
    }
    finish(finished);
    if (pred(ctx)) return true;
    if (internal::expired(deadline)) return false;
    if (any || first)
      backoff.reset(spin);
    else
      backoff.pause(deadline);
  }
}

void MpiEngine::fail_all_locked(const std::exception_ptr& error, Finished& finished) {
  for (auto& [seq, f] : flights_) {
    f.job->fail(f.chunk, error);
    resolve_locked(std::move(f.job), finished);
  }
  flights_.clear();
  for (Task& t : queue_) {
    t.job->fail(t.chunk, error);
    resolve_locked(std::move(t.job), finished);
  }
  queue_.clear();
  arena_.clear();
}

void MpiEngine::close() {
  std::lock_guard lock(mpi_mutex());
  if (state_ == State::kRun) state_ = State::kClose;
}

void MpiEngine::terminate() {
  Finished finished;
  {
    std::lock_guard lock(mpi_mutex());
    if (state_ == State::kTerminate) return;
    state_ = State::kTerminate;
    if (released_) return;
    // Results that already arrived still count.
    pump_locked(finished);
    fail_all_locked(
        std::make_exception_ptr(ProcessError("Pool was terminated before the task completed")),
        finished);
    for (Worker& w : workers_) {
      if (!w.inflight) continue;
      std::string m = begin_message(kCancel, tag_);
      end_message(m);
      w.out.post(kTagToWorker, std::move(m));
      w.cancelling = true;
      w.inflight = 0;
    }
  }
  finish(finished);
}

void MpiEngine::join() {
  {
    std::lock_guard lock(mpi_mutex());
    if (state_ == State::kRun) throw ValueError("Pool is still running");
    if (joined_) return;
  }
  // Every task completes first (after terminate: every rank finished what it
  // ran and answered the cancel); an imap iterator may still feed after
  // close(): stopping_ is set in the same hold that saw nothing outstanding.
  for (;;) {
    wait_until(
        [this] {
          std::lock_guard hold(mpi_mutex());
          return outstanding_ == 0 && std::none_of(workers_.begin(), workers_.end(),
                                                   [](const Worker& w) { return w.cancelling; });
        },
        std::nullopt);
    std::lock_guard lock(mpi_mutex());
    if (joined_) return;
    if (outstanding_ != 0) continue;
    stopping_ = true;
    release_locked();
    joined_ = true;
    return;
  }
}

void MpiEngine::drain_sends_locked() {
  Backoff backoff(1ms);
  for (;;) {
    bool idle = true;
    bool any = false;
    for (Worker& w : workers_) {
      any |= w.out.progress();
      idle &= w.out.idle();
    }
    if (idle) return;
    if (any)
      backoff.reset();
    else
      backoff.pause();
  }
}

// release_locked lets the workers go: spawned ones are shut down and
// disconnected; ranks of MPI_COMM_WORLD stay for the next Pool.
void MpiEngine::release_locked() {
  if (released_) return;
  released_ = true;
  if (spawned_) {
    for (Worker& w : workers_) {
      std::string m = begin_message(kShutdown, tag_);
      end_message(m);
      w.out.post(kTagToWorker, std::move(m));
    }
  }
  drain_sends_locked();
  if (spawned_) check(MPI_Comm_disconnect(&comm_), "MPI_Comm_disconnect");
}

}  // namespace

// ---- Runtime and Pool ---------------------------------------------------------------

Runtime::Runtime(int& argc, char**& argv) { start(&argc, &argv); }

Runtime::Runtime() { start(nullptr, nullptr); }

void Runtime::start(int* argc, char*** argv) {
  {
    std::lock_guard lock(mpi_mutex());
    Globals& g = globals();
    if (g.active) throw ValueError("mp::mpi::Runtime: a Runtime already runs in this process");
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      // Open MPI makes every progress call yield the CPU on an oversubscribed
      // node. mp never blocks in MPI (it sleeps between polls), so a yield
      // only hands a busy worker's core away after each task: measured, half
      // the rate of 1 ms tasks on a loaded 2-core machine. Off, unless the
      // environment (mpirun --mca mpi_yield_when_idle 1) says otherwise.
      ::setenv("OMPI_MCA_mpi_yield_when_idle", "0", 0);
      int provided = 0;
      check(MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided), "MPI_Init_thread");
      finalize_ = true;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    g.rank = rank_;
    g.size = size_;
    int* ub = nullptr;
    int flag = 0;
    MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &ub, &flag);
    if (flag && ub) g.tag_ub = *ub;
    g.args.clear();
    if (argc && argv) {
      for (int i = 1; i < *argc; ++i) g.args.emplace_back((*argv)[i]);
    }
    check(MPI_Comm_dup(MPI_COMM_WORLD, &g.world), "MPI_Comm_dup");
    MPI_Comm_set_errhandler(g.world, MPI_ERRORS_RETURN);
  }
  MPI_Comm parent = MPI_COMM_NULL;
  MPI_Comm_get_parent(&parent);
  if (parent != MPI_COMM_NULL || rank_ != 0) {
    // A worker: serve, then end the process here.
    if (parent != MPI_COMM_NULL) {
      MPI_Comm_set_errhandler(parent, MPI_ERRORS_RETURN);
      serve(parent, 0);
      MPI_Comm_disconnect(&parent);
    } else {
      serve(globals().world, 0);
    }
    MPI_Comm_free(&globals().world);
    if (finalize_) MPI_Finalize();
    std::fflush(nullptr);
    std::exit(0);
  }
  globals().active = true;
}

Runtime::~Runtime() {
  std::lock_guard lock(mpi_mutex());
  Globals& g = globals();
  if (!g.active) return;
  g.active = false;
  try {
    std::vector<Outbox> outs;
    for (int r = 1; r < size_; ++r) {
      outs.emplace_back(g.world, r);
      std::string m = begin_message(kShutdown, 0);
      end_message(m);
      outs.back().post(kTagToWorker, std::move(m));
    }
    Backoff backoff(1ms);
    for (;;) {
      bool idle = true;
      bool any = false;
      for (Outbox& o : outs) {
        any |= o.progress();
        idle &= o.idle();
      }
      if (idle) break;
      if (any)
        backoff.reset();
      else
        backoff.pause();
    }
  } catch (const std::exception& e) {
    std::fputs(
        fmt::format("mp::mpi::Runtime: stopping the worker ranks failed: {}\n", e.what()).c_str(),
        stderr);
  }
  MPI_Comm_free(&g.world);
  if (finalize_) MPI_Finalize();
}

Pool::Pool() : Pool(PoolOptions{}) {}

Pool::Pool(PoolOptions options) : mp::Pool(std::make_shared<MpiEngine>(std::move(options))) {}

}  // namespace mp::mpi
