#include "mp/threading.h"

#include <cxxabi.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>

#include "mp/internal/demangle.h"
#include "mp/internal/lifecycle.h"
#include "mp/internal/liveness.h"

namespace mp {

namespace internal {

// ThreadState is what a Thread, its handles and its running thread share.
// Every field is guarded by the registry mutex (Registry::mu).
struct ThreadState : std::enable_shared_from_this<ThreadState> {
  std::string name;
  bool daemon = false;
  bool started = false;
  bool stopped = false;
  bool is_main = false;
  bool is_dummy = false;
  std::optional<unsigned long> ident;
  std::optional<pid_t> native_id;
  // The class shown by repr(); null means "Thread".
  const std::type_info* cls = nullptr;
  const char* fixed_cls = nullptr;  // "_MainThread", "_DummyThread"
  // Target mode: what the new thread calls; taken by the thread (or run()).
  std::unique_ptr<ThreadTarget> target;
  bool has_target = false;
  // Subclass mode: the object whose run() the new thread calls. Cleared when
  // the object is destroyed.
  Thread* owner = nullptr;
  // The pthread of an mp Thread, while nobody has joined or detached it.
  // Threads are created joinable, like std::thread, so that the thread's
  // stack returns to glibc's cache before join() returns and the next thread
  // reuses it (a detached thread's joiner would race ahead of its exit and
  // the next start would map and fault in a fresh stack).
  pthread_t pthread{};
  bool joinable = false;
  std::uint64_t fork_generation = 0;  // of the process that created pthread
};

}  // namespace internal

struct ThreadAccess {
  static ThreadHandle handle(std::shared_ptr<internal::ThreadState> s) {
    return ThreadHandle(std::move(s));
  }
  static const std::shared_ptr<internal::ThreadState>& state(const ThreadHandle& h) {
    return h.state_;
  }
};

namespace {

using internal::ThreadState;
using StatePtr = std::shared_ptr<ThreadState>;

// gettid() without the per-thread cache, for the fork handler (which may run
// before mp/internal/liveness refreshes its cache in the child).
pid_t raw_tid() noexcept { return static_cast<pid_t>(::syscall(SYS_gettid)); }

pid_t current_tid() noexcept { return internal::self_tid(); }

// t_current is the calling thread's state, once known: set for the main
// thread at start-up, for an mp Thread while it runs, for a dummy thread
// from its first current_thread(), and for the forking thread in a child.
// "Is this the calling thread?" is t_current == state, no gettid() syscall
// (about 1 us here). Kept trivial (no destructor to register).
thread_local ThreadState* t_current = nullptr;

struct LocalKeys {
  std::vector<std::uint64_t> generations;  // per index, bumped on delete
  std::vector<std::size_t> free;           // indices ready for reuse
};

// Registry is threading's one piece of global state. One mutex and one
// condition variable serve every state change (start, end, rename, timer
// cancel), so that a forked child re-initialises exactly these two.
struct Registry {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<StatePtr> active;  // started, not stopped: main, dummies, Threads
  StatePtr main;
  std::uint64_t counter = 0;  // last N used in "Thread-N" / "Dummy-N"
  ExceptHook hook;            // empty: default_excepthook
  LocalKeys keys;
  bool forking_from_main = false;  // set by the prepare-fork handler
  // Advanced in every forked child: a pthread created before the fork is not
  // this process's to join or detach.
  std::uint64_t fork_generation = 0;
};

void shutdown() noexcept;
void before_fork() noexcept;
void after_fork_parent() noexcept;
void after_fork_child() noexcept;

Registry& registry() {
  // Leaked on purpose: daemon threads use it during static destruction.
  static Registry* r = [] {
    auto* p = new Registry;
    p->main = std::make_shared<ThreadState>();
    p->main->name = "MainThread";
    p->main->started = true;
    p->main->is_main = true;
    p->main->fixed_cls = "_MainThread";
    p->main->native_id = ::getpid();
    if (raw_tid() == ::getpid()) {
      p->main->ident = static_cast<unsigned long>(pthread_self());
      t_current = p->main.get();
    }
    p->active.push_back(p->main);
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
    internal::add_finalizer(shutdown, internal::FinalizerPhase::kThreads);
    return p;
  }();
  return *r;
}

// claim_pthread takes over the joinable pthread of `s` (lock held): true
// when the caller must now pthread_join or pthread_detach it.
bool claim_pthread(ThreadState& s, pthread_t* out) {
  if (!s.joinable) return false;
  s.joinable = false;
  if (s.fork_generation != registry().fork_generation) return false;
  *out = s.pthread;
  return true;
}

// Built during static initialisation, in the main thread, so that the main
// thread's identity is known before any other thread exists.
[[maybe_unused]] Registry& g_registry_init = registry();

// DummyGuard owns a dummy thread's state and ends it when the thread exits.
struct DummyGuard {
  StatePtr state;
  ~DummyGuard();
};
thread_local DummyGuard t_dummy;

void remove_active(Registry& r, ThreadState* s) {
  auto it = std::find_if(r.active.begin(), r.active.end(),
                         [s](const StatePtr& p) { return p.get() == s; });
  if (it != r.active.end()) r.active.erase(it);  // keeps start order, main first
}

// mark_stopped ends `s`: not alive, out of enumerate(), joiners woken.
void mark_stopped(ThreadState* s) {
  Registry& r = registry();
  {
    std::lock_guard lock(r.mu);
    s->stopped = true;
    remove_active(r, s);
  }
  r.cv.notify_all();
}

DummyGuard::~DummyGuard() {
  if (state && state->is_dummy) {
    mark_stopped(state.get());
    if (t_current == state.get()) t_current = nullptr;
  }
}

std::string next_name(Registry& r, const char* prefix) {
  std::uint64_t n;
  {
    std::lock_guard lock(r.mu);
    n = ++r.counter;
  }
  return fmt::format("{}-{}", prefix, n);
}

// current_state is the calling thread's state, made on first use for the
// main thread and for threads mp did not start.
StatePtr current_state() {
  if (t_current) return t_current->shared_from_this();
  Registry& r = registry();
  if (current_tid() == ::getpid()) {
    std::lock_guard lock(r.mu);
    if (!r.main->ident) r.main->ident = static_cast<unsigned long>(pthread_self());
    t_current = r.main.get();
    return r.main;
  }
  auto s = std::make_shared<ThreadState>();
  s->name = next_name(r, "Dummy");
  s->daemon = true;
  s->started = true;
  s->is_dummy = true;
  s->fixed_cls = "_DummyThread";
  s->ident = static_cast<unsigned long>(pthread_self());
  s->native_id = current_tid();
  {
    std::lock_guard lock(r.mu);
    r.active.push_back(s);
  }
  t_current = s.get();
  t_dummy.state = s;
  return s;
}

void report_exception(const StatePtr& s, std::exception_ptr e) noexcept {
  Registry& r = registry();
  ExceptHook hook;
  {
    std::lock_guard lock(r.mu);
    hook = r.hook;
  }
  try {
    ExceptHookArgs args{std::move(e), ThreadAccess::handle(s)};
    if (hook) {
      hook(args);
    } else {
      default_excepthook(args);
    }
  } catch (...) {
    std::fputs("mp: exception raised by mp::excepthook; ignored\n", stderr);
  }
}

void* thread_main(void* arg) {
  StatePtr s = std::move(*static_cast<StatePtr*>(arg));
  delete static_cast<StatePtr*>(arg);
  Registry& r = registry();
  t_current = s.get();
  std::unique_ptr<internal::ThreadTarget> target;
  Thread* owner = nullptr;
  {
    std::lock_guard lock(r.mu);
    s->ident = static_cast<unsigned long>(pthread_self());
    s->native_id = current_tid();
    target = std::move(s->target);
    owner = s->owner;
  }
  r.cv.notify_all();  // native_id() may be waiting for it
  // The thread ends here however run() leaves, pthread_exit() included.
  struct Finish {
    ThreadState* s;
    std::unique_ptr<internal::ThreadTarget>& target;
    ~Finish() {
      // CPython drops the target and its arguments when run() ends; so does
      // mp, in this thread, and the thread's mp::local values go with them,
      // so that both are gone when join() returns.
      try {
        target.reset();
      } catch (...) {
      }
      internal::clear_thread_locals();
      mark_stopped(s);
      t_current = nullptr;
    }
  } finish{s.get(), target};
  try {
    if (target) {
      target->call();
    } else if (owner) {
      owner->run();
    }
  } catch (...) {
    // pthread_exit() / pthread_cancel() unwind with a foreign (non-C++)
    // exception, which has no C++ type: let it go on, so the thread ends.
    // (catch (abi::__forced_unwind&) would do too, but binds a reference to
    // no object, which UBSan rejects.)
    if (abi::__cxa_current_exception_type() == nullptr) throw;
    report_exception(s, std::current_exception());
  }
  return nullptr;
}

// At process end: mark the main thread stopped (so that threads joining it
// proceed), then join every non-daemon thread — CPython's threading._shutdown.
void shutdown() noexcept {
  Registry& r = registry();
  std::unique_lock lock(r.mu);
  if (r.main.get() == t_current && !r.main->stopped) {
    r.main->stopped = true;
    remove_active(r, r.main.get());
    r.cv.notify_all();
  }
  for (;;) {
    auto it = std::find_if(r.active.begin(), r.active.end(), [&](const StatePtr& p) {
      return !p->daemon && !p->is_main && !p->is_dummy && p.get() != t_current;
    });
    if (it == r.active.end()) break;
    StatePtr s = *it;
    r.cv.wait(lock, [&] { return s->stopped; });
  }
}

void before_fork() noexcept {
  Registry& r = registry();
  r.mu.lock();
  bool from_main = t_current ? t_current == r.main.get() : raw_tid() == ::getpid();
  if (r.forking_from_main != from_main) r.forking_from_main = from_main;
}

void after_fork_parent() noexcept { registry().mu.unlock(); }

// The child has one thread: the forking one. It becomes the main thread;
// every other thread is marked stopped. The mutex and condition variable may
// carry the parent's other threads as owners or waiters: rebuild them.
void after_fork_child() noexcept {
  // Runs in every forked child: it writes only what changes, since each page
  // written here costs the child a copy-on-write fault.
  Registry& r = registry();
  new (&r.mu) std::mutex;
  new (&r.cv) std::condition_variable;
  ++r.fork_generation;
  ThreadState* current = t_current;
  if (!current && r.forking_from_main) current = r.main.get();
  StatePtr made;
  if (!current) {
    made = std::make_shared<ThreadState>();
    made->name = fmt::format("Dummy-{}", ++r.counter);
    made->daemon = true;
    made->started = true;
    made->fixed_cls = "_DummyThread";
    r.active.push_back(made);
    current = made.get();
  }
  if (t_current != current) t_current = current;
  if (r.active.size() != 1 || r.active[0].get() != current) {
    StatePtr keep = current->shared_from_this();
    for (auto& s : r.active) {
      if (s.get() != current) s->stopped = true;
    }
    r.active.clear();
    r.active.push_back(std::move(keep));
  }
  if (r.main.get() != current) {
    r.main->stopped = true;
    r.main->is_main = false;
    // A dummy that becomes the main thread stays a _DummyThread (as in
    // CPython) but is no longer ended by its thread-exit guard.
    current->is_dummy = false;
    current->is_main = true;
    r.main = current->shared_from_this();
  }
  if (current->stopped) current->stopped = false;
  auto ident = static_cast<unsigned long>(pthread_self());
  if (current->ident != ident) current->ident = ident;
  current->native_id = raw_tid();
}

}  // namespace

namespace internal {

std::chrono::nanoseconds clamp_timeout(std::chrono::nanoseconds t) noexcept {
  return t < t.zero() ? t.zero() : t;
}

// ---- mp::local storage -------------------------------------------------

namespace {

struct Slot {
  std::uint64_t generation = 0;
  void* value = nullptr;
  void (*destroy)(void*) = nullptr;
};

struct LocalTable {
  std::vector<Slot> slots;
  void clear() noexcept {
    // A value's destructor may use other locals: repeat until empty.
    while (!slots.empty()) {
      std::vector<Slot> old;
      old.swap(slots);
      for (Slot& s : old) {
        if (s.value) {
          try {
            s.destroy(s.value);
          } catch (...) {
          }
        }
      }
    }
  }
};

// The calling thread's table, made on its first mp::local value (so that
// threads which use none register no thread-exit destructor).
thread_local LocalTable* t_locals = nullptr;

struct LocalTableOwner {
  LocalTable table;
  ~LocalTableOwner() {
    table.clear();
    t_locals = nullptr;
  }
};

LocalTable& own_locals() {
  if (!t_locals) {
    thread_local LocalTableOwner owner;
    t_locals = &owner.table;
  }
  return *t_locals;
}

}  // namespace

void clear_thread_locals() noexcept {
  if (t_locals) t_locals->clear();
}

LocalKey local_key_create() {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  LocalKeys& k = r.keys;
  std::size_t index;
  if (!k.free.empty()) {
    index = k.free.back();
    k.free.pop_back();
  } else {
    index = k.generations.size();
    k.generations.push_back(0);
  }
  return LocalKey{index, ++k.generations[index]};
}

void local_key_delete(LocalKey key) noexcept {
  if (t_locals) {
    std::vector<Slot>& slots = t_locals->slots;
    if (key.index < slots.size() && slots[key.index].generation == key.generation) {
      Slot s = slots[key.index];
      slots[key.index] = Slot{};
      if (s.value) {
        try {
          s.destroy(s.value);
        } catch (...) {
        }
      }
    }
  }
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  ++r.keys.generations[key.index];
  r.keys.free.push_back(key.index);
}

void* local_get(LocalKey key) noexcept {
  if (!t_locals) return nullptr;
  const std::vector<Slot>& slots = t_locals->slots;
  if (key.index < slots.size() && slots[key.index].generation == key.generation) {
    return slots[key.index].value;
  }
  return nullptr;
}

void local_set(LocalKey key, void* value, void (*destroy)(void*)) {
  std::vector<Slot>& slots = own_locals().slots;
  if (key.index >= slots.size()) {
    try {
      slots.resize(key.index + 1);
    } catch (...) {
      destroy(value);
      throw;
    }
  }
  Slot old = slots[key.index];
  slots[key.index] = Slot{key.generation, value, destroy};
  // A stale value of a deleted local that used this index: gone now.
  if (old.value) old.destroy(old.value);
}

}  // namespace internal

// ---- ThreadHandle ---------------------------------------------------------

std::string ThreadHandle::name() const {
  std::lock_guard lock(registry().mu);
  return state_->name;
}

void ThreadHandle::set_name(std::string name) const {
  std::lock_guard lock(registry().mu);
  state_->name = std::move(name);
}

std::optional<unsigned long> ThreadHandle::ident() const {
  std::lock_guard lock(registry().mu);
  return state_->ident;
}

std::optional<pid_t> ThreadHandle::native_id() const {
  Registry& r = registry();
  std::unique_lock lock(r.mu);
  if (!state_->started) return std::nullopt;
  // Known as soon as the new thread runs its first instructions.
  r.cv.wait(lock, [&] { return state_->native_id.has_value() || state_->stopped; });
  return state_->native_id;
}

bool ThreadHandle::daemon() const {
  std::lock_guard lock(registry().mu);
  return state_->daemon;
}

void ThreadHandle::set_daemon(bool daemon) const {
  std::lock_guard lock(registry().mu);
  if (state_->started) throw RuntimeError("cannot set daemon status of active thread");
  state_->daemon = daemon;
}

bool ThreadHandle::is_alive() const {
  std::lock_guard lock(registry().mu);
  return state_->started && !state_->stopped;
}

void ThreadHandle::join() const { join_for(std::chrono::nanoseconds::max()); }

bool ThreadHandle::join_for(std::chrono::nanoseconds timeout) const {
  Registry& r = registry();
  std::unique_lock lock(r.mu);
  if (!state_->started) throw RuntimeError("cannot join thread before it is started");
  if (!state_->stopped && state_.get() == t_current) {
    throw RuntimeError("cannot join current thread");
  }
  pthread_t thread;
  if (timeout == std::chrono::nanoseconds::max()) {
    if (claim_pthread(*state_, &thread)) {
      lock.unlock();
      pthread_join(thread, nullptr);
      return true;
    }
    r.cv.wait(lock, [&] { return state_->stopped; });
    return true;
  }
  if (!r.cv.wait_for(lock, internal::clamp_timeout(timeout), [&] { return state_->stopped; })) {
    return false;
  }
  // Ended: reap it now (its exit is a few instructions away).
  if (claim_pthread(*state_, &thread)) {
    lock.unlock();
    pthread_join(thread, nullptr);
  }
  return true;
}

std::string ThreadHandle::repr_as(const std::type_info* object_cls) const {
  std::string cls;
  std::string status;
  std::string name;
  {
    std::lock_guard lock(registry().mu);
    const ThreadState& s = *state_;
    if (s.fixed_cls) {
      cls = s.fixed_cls;
    } else if (s.cls || (object_cls && *object_cls != typeid(Thread))) {
      cls = internal::class_display_name(s.cls ? *s.cls : *object_cls);
    } else {
      cls = "Thread";
    }
    status = s.stopped ? "stopped" : s.started ? "started" : "initial";
    if (s.daemon) status += " daemon";
    if (s.ident) status += fmt::format(" {}", *s.ident);
    name = s.name;
  }
  return fmt::format("<{}({}, {})>", cls, name, status);
}

// ---- Thread ---------------------------------------------------------------

std::shared_ptr<internal::ThreadState> Thread::new_state() {
  return std::make_shared<internal::ThreadState>();
}

Thread::Thread() : Thread(ThreadOptions{}) {}

Thread::Thread(ThreadOptions options) : ThreadHandle(new_state()) {
  init(std::move(options), nullptr, std::nullopt);
}

Thread::Thread(ThreadOptions options, std::unique_ptr<internal::ThreadTarget> target)
    : ThreadHandle(new_state()) {
  init(std::move(options), std::move(target), std::nullopt);
}

void Thread::init(ThreadOptions options, std::unique_ptr<internal::ThreadTarget> target,
                  std::optional<std::string> target_name) {
  Registry& r = registry();
  bool daemon = options.daemon ? *options.daemon : current_state()->daemon;
  std::string name;
  if (options.name && !options.name->empty()) {
    name = std::move(*options.name);
  } else {
    name = next_name(r, "Thread");
    if (target_name) {
      name += " (";
      name += *target_name;
      name += ')';
    }
  }
  std::lock_guard lock(r.mu);
  state_->name = std::move(name);
  state_->daemon = daemon;
  state_->has_target = target != nullptr;
  state_->target = std::move(target);
}

Thread::~Thread() {
  Registry& r = registry();
  std::unique_lock lock(r.mu);
  state_->owner = nullptr;
  if (!state_->started) return;
  bool self = !state_->stopped && state_.get() == t_current;
  bool abandon = self || (state_->daemon && !state_->stopped);
  pthread_t thread;
  if (claim_pthread(*state_, &thread)) {
    lock.unlock();
    if (abandon) {
      pthread_detach(thread);
    } else {
      pthread_join(thread, nullptr);
    }
    return;
  }
  // Another joiner owns the pthread: still wait for the end, as promised.
  if (!abandon) r.cv.wait(lock, [&] { return state_->stopped; });
}

void Thread::join_if_started() noexcept {
  Registry& r = registry();
  std::unique_lock lock(r.mu);
  if (!state_->started || (!state_->stopped && state_.get() == t_current)) return;
  lock.unlock();
  try {
    join();
  } catch (...) {
  }
}

void Thread::start() {
  Registry& r = registry();
  {
    std::lock_guard lock(r.mu);
    if (state_->started) throw RuntimeError("threads can only be started once");
    state_->started = true;
    state_->cls = &typeid(*this);
    if (*state_->cls == typeid(Thread)) state_->cls = nullptr;
    state_->owner = state_->has_target ? nullptr : this;
    r.active.push_back(state_);
  }
  auto* arg = new StatePtr(state_);
  pthread_t tid;
  int rc = pthread_create(&tid, nullptr, thread_main, arg);
  std::lock_guard lock(r.mu);
  if (rc != 0) {
    delete arg;
    state_->started = false;
    state_->owner = nullptr;
    remove_active(r, state_.get());
    throw RuntimeError(fmt::format("can't start new thread: {}", std::strerror(rc)));
  }
  if (!state_->ident) state_->ident = static_cast<unsigned long>(tid);
  state_->pthread = tid;
  state_->joinable = true;
  state_->fork_generation = r.fork_generation;
}

void Thread::run() {
  std::unique_ptr<internal::ThreadTarget> target;
  {
    std::lock_guard lock(registry().mu);
    target = std::move(state_->target);
  }
  if (target) target->call();
}

// ---- Timer ------------------------------------------------------------------

struct Timer::State {
  std::chrono::nanoseconds interval;
  std::unique_ptr<internal::ThreadTarget> function;
  bool cancelled = false;  // guarded by the registry mutex

  void wait_and_fire() {
    Registry& r = registry();
    {
      std::unique_lock lock(r.mu);
      auto deadline = std::chrono::steady_clock::now() + interval;
      r.cv.wait_until(lock, deadline, [&] { return cancelled; });
      if (cancelled) return;
      cancelled = true;  // fired: a later cancel() has nothing to stop
    }
    function->call();
  }
};

Timer::Timer(std::chrono::nanoseconds interval, std::unique_ptr<internal::ThreadTarget> function)
    : Timer(std::make_shared<State>(State{interval, std::move(function)})) {}

Timer::Timer(std::shared_ptr<State> state)
    : Thread(ThreadOptions{}, internal::make_target([state] { state->wait_and_fire(); })),
      timer_(std::move(state)) {}

void Timer::cancel() {
  Registry& r = registry();
  {
    std::lock_guard lock(r.mu);
    timer_->cancelled = true;
  }
  r.cv.notify_all();
}

// ---- module functions -----------------------------------------------------

ThreadHandle current_thread() { return ThreadAccess::handle(current_state()); }

ThreadHandle main_thread() {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  return ThreadAccess::handle(r.main);
}

std::vector<ThreadHandle> enumerate() {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  std::vector<ThreadHandle> out;
  out.reserve(r.active.size());
  for (const StatePtr& s : r.active) out.push_back(ThreadAccess::handle(s));
  return out;
}

std::size_t active_count() {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  return r.active.size();
}

unsigned long get_ident() noexcept { return static_cast<unsigned long>(pthread_self()); }

pid_t get_native_id() noexcept { return current_tid(); }

void set_excepthook(ExceptHook hook) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  r.hook = std::move(hook);
}

ExceptHook excepthook() {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  if (r.hook) return r.hook;
  return default_excepthook;
}

void default_excepthook(const ExceptHookArgs& args) {
  std::string type = "unknown exception";
  std::string what;
  try {
    std::rethrow_exception(args.exception);
  } catch (...) {
    const internal::CaughtException caught = internal::describe_caught_exception();
    if (caught.standard) {
      type = caught.type;
      what = caught.what;
    } else if (!caught.type.empty()) {
      type = fmt::format("exception of type {}", caught.type);
    }
  }
  std::string text =
      what.empty()
          ? fmt::format("Exception in thread {}:\n{}\n", args.thread.name(), type)
          : fmt::format("Exception in thread {}:\n{}: {}\n", args.thread.name(), type, what);
  std::fwrite(text.data(), 1, text.size(), stderr);
  std::fflush(stderr);
}

}  // namespace mp
