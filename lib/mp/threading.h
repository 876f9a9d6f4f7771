// mp/threading.h — Thread, Timer, per-thread values and the helpers of
// CPython's `threading` module.
//
// A Thread runs a callable in a new thread of this process:
//
//   void download(std::string file) { ... }
//   mp::Thread t(download, "a.pdf");        // named "Thread-1 (download)"
//   t.start();
//   t.join();
//
// or a subclass's run():
//
//   class DownloadTask : public mp::Thread {
//    public:
//     explicit DownloadTask(std::string f) : file_(std::move(f)) {}
//     ~DownloadTask() override { join_if_started(); }   // see "Lifetime"
//     void run() override { ... file_ ... }
//    private:
//     std::string file_;
//   };
//
// Mirrors CPython's threading.Thread, Timer, local, excepthook,
// current_thread(), main_thread(), enumerate(), active_count(), get_ident()
// and get_native_id(): the same names, states, default names and error
// messages. Where mp differs, and why:
//
//   * Options. CPython's keyword arguments `name=` and `daemon=` are passed
//     as mp::ThreadOptions{.name = "w", .daemon = true} before the target;
//     set_name() / set_daemon() work too.
//   * Target names. A C++ callable has no __name__. mp finds one (see
//     mp/internal/thread_names.h): a function's symbol ("Thread-1 (work)"),
//     "<lambda>" for lambdas as CPython, a functor's class name; no name for
//     std::function and std::bind results. mp::named("fetch", f) names any
//     callable explicitly.
//   * Subclasses vs targets. The new thread calls the target when one was
//     given, and the object's run() only when none was (a subclass built with
//     the protected constructors). So a target-based Thread never touches its
//     Thread object from the new thread, and may be destroyed while it runs.
//     run() stays public: calling it directly runs the target in the calling
//     thread, as in CPython.
//   * Lifetime. CPython threads outlive their objects. In C++ the object's
//     destructor decides, like std::jthread: destroying a started,
//     still-running non-daemon Thread joins it; a daemon one is abandoned
//     (detached) and keeps running, its target and arguments kept alive by
//     shared state. A subclass's run() uses the object itself, so the object
//     must outlive the thread: ~Thread runs after the subclass's members are
//     gone, hence the join_if_started() call in the subclass's destructor
//     above (required when the object may die while its thread runs).
//     Handles (mp::ThreadHandle: current_thread(), enumerate(), handle())
//     share the thread's state and stay valid after the Thread is gone.
//     Underneath is a joinable pthread, reaped by join() or the destructor
//     (so start+join costs what std::thread's does); a Thread object that is
//     leaked without a join keeps its thread's stack, as a leaked pthread.
//   * Exceptions. An exception escaping the thread goes to mp::excepthook
//     (default: "Exception in thread <name>:" and "<type>: <what>" on
//     stderr); join() does not rethrow it, as in CPython.
//   * Locks, events, conditions, semaphores, barriers: use mp/synchronize.h,
//     whose primitives serve threads and processes alike. mp adds no
//     thread-only copies here.
//
// Program exit: at normal exit (return from main, std::exit, mp::exit, the
// end of an mp child process) the main thread is marked stopped (threads
// joining it proceed) and the non-daemon threads are joined, as CPython's
// threading._shutdown does; a non-daemon thread that never ends therefore
// keeps the process alive, as in CPython. This runs from a static destructor
// of mp (mp/internal/lifecycle.h), so static objects constructed after mp's
// (function-local statics first used in main) are already destroyed by then:
// join threads that use them before main returns. Daemon threads are
// abandoned: they keep running while static destructors run and die when the
// process ends. mp's own state that they use (the thread registry, the
// excepthook, their target) is never destroyed, so a daemon thread cannot
// crash the exit through mp; but a daemon thread must not use objects with
// static storage duration that are destroyed at exit, and must not call
// std::exit itself.
//
// fork: a child forked while threads run has one thread. In the child,
// main_thread() and current_thread() are the forking thread (keeping its
// name), enumerate() holds only it, every other Thread reads as stopped
// (is_alive() false, join() returns at once), and mp's internal locks are
// re-initialised so threading keeps working. mp::fork() warns once on stderr
// when forking with several threads (mp::set_fork_warning(false) silences it).
//
// Thread-safety: every member of Thread and ThreadHandle may be called from
// any thread, concurrently.
#pragma once

#include <fmt/format.h>
#include <sys/types.h>

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "mp/errors.h"
#include "mp/internal/thread_names.h"

namespace mp {

namespace internal {

struct ThreadState;

// ThreadTarget is a type-erased callable with its bound arguments, invoked
// once.
class ThreadTarget {
 public:
  virtual ~ThreadTarget() = default;
  virtual void call() = 0;
};

template <class F, class... Args>
class BoundTarget final : public ThreadTarget {
 public:
  template <class G, class... A>
  explicit BoundTarget(G&& f, A&&... args)
      : f_(std::forward<G>(f)), args_(std::forward<A>(args)...) {}
  void call() override {
    std::apply([this](auto&... a) { std::invoke(std::move(f_), std::move(a)...); }, args_);
  }

 private:
  F f_;
  std::tuple<Args...> args_;
};

template <class F, class... Args>
std::unique_ptr<ThreadTarget> make_target(F&& f, Args&&... args) {
  return std::make_unique<BoundTarget<std::decay_t<F>, std::decay_t<Args>...>>(
      std::forward<F>(f), std::forward<Args>(args)...);
}

template <class F>
struct IsNamed : std::false_type {};

std::chrono::nanoseconds clamp_timeout(std::chrono::nanoseconds t) noexcept;

template <class Rep, class Period>
std::chrono::nanoseconds to_nanoseconds(std::chrono::duration<Rep, Period> d) noexcept {
  using namespace std::chrono;
  if (d <= d.zero()) return nanoseconds::zero();
  // Saturate instead of overflowing for huge timeouts (hours::max()).
  if (duration<double>(d) > duration<double>(nanoseconds::max() / 2)) return nanoseconds::max() / 2;
  return ceil<nanoseconds>(d);
}

}  // namespace internal

// Named is a callable with an explicit target name, made by mp::named().
template <class F>
class Named {
 public:
  Named(std::string name, F f) : name_(std::move(name)), f_(std::move(f)) {}
  template <class... Args>
  decltype(auto) operator()(Args&&... args) {
    return std::invoke(f_, std::forward<Args>(args)...);
  }
  const std::string& name() const noexcept { return name_; }

 private:
  std::string name_;
  F f_;
};

// named() gives a callable the target name a Thread uses in its default name:
// Thread(mp::named("fetch", [] { ... })) is "Thread-N (fetch)".
template <class F>
Named<std::decay_t<F>> named(std::string name, F&& f) {
  return Named<std::decay_t<F>>(std::move(name), std::forward<F>(f));
}

namespace internal {
template <class F>
struct IsNamed<Named<F>> : std::true_type {};

// target_name is the name a Thread's default name shows for target `f`.
template <class F>
std::optional<std::string> target_name(const F& f) {
  if constexpr (IsNamed<F>::value) {
    return f.name();
  } else if constexpr (std::is_pointer_v<F> && std::is_function_v<std::remove_pointer_t<F>>) {
    return function_target_name(reinterpret_cast<const void*>(f));
  } else if constexpr (std::is_class_v<F>) {
    return type_target_name(typeid(F));
  } else {
    return std::nullopt;  // member pointers and the like
  }
}
}  // namespace internal

// ThreadOptions are CPython's Thread(name=..., daemon=...) keywords.
// No name, or an empty one (CPython's `name or _newname()`), gives the
// default "Thread-N" / "Thread-N (target)" and advances N; an empty daemon
// inherits the creating thread's daemon flag.
struct ThreadOptions {
  std::optional<std::string> name = std::nullopt;
  std::optional<bool> daemon = std::nullopt;
};

class Thread;

// ThreadHandle refers to a thread: an mp::Thread, the main thread, or a
// thread mp did not start (a "dummy" thread, CPython's _DummyThread, made when
// such a thread calls current_thread(); it is a daemon and lives until the
// thread ends). Handles are cheap to copy, compare equal when they refer to
// the same thread, and stay valid after the thread and its Thread object are
// gone. Every Thread is a ThreadHandle.
class ThreadHandle {
 public:
  ThreadHandle(const ThreadHandle&) = default;
  ThreadHandle& operator=(const ThreadHandle&) = default;
  ThreadHandle(ThreadHandle&&) noexcept = default;
  ThreadHandle& operator=(ThreadHandle&&) noexcept = default;

  // name() is the thread's name: as given, or "Thread-N" / "Thread-N
  // (target)" where N counts the Threads created without a name, from 1
  // ("MainThread" for the main thread, "Dummy-N" for foreign threads).
  std::string name() const;

  // set_name() renames the thread; allowed at any time.
  void set_name(std::string name) const;

  // ident() is the thread's identifier (pthread_t, as CPython's get_ident()):
  // empty before start(), set once start() returns, kept after the thread
  // ends. Identifiers may be reused by later threads.
  std::optional<unsigned long> ident() const;

  // native_id() is the kernel's thread id (gettid()): empty before start(),
  // set after, kept after the thread ends.
  std::optional<pid_t> native_id() const;

  // daemon() is the daemon flag: the creating thread's unless set.
  bool daemon() const;

  // set_daemon() sets the daemon flag. Throws mp::RuntimeError ("cannot set
  // daemon status of active thread") once the thread was started.
  void set_daemon(bool daemon) const;

  // is_alive() is true from start() until the thread's run ends.
  bool is_alive() const;

  // join() blocks until the thread ends (at once if it has). It does not
  // rethrow the thread's exception. Throws mp::RuntimeError for a thread not
  // started ("cannot join thread before it is started") or the calling thread
  // itself ("cannot join current thread").
  void join() const;

  // join(timeout) blocks at most `timeout` (negative counts as zero) and
  // returns whether the thread has ended. CPython's join(timeout) returns
  // None; check is_alive() there, or this result here.
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) const {
    return join_for(internal::to_nanoseconds(timeout));
  }

  // repr() is CPython's repr: "<Thread(Thread-1 (work), started 1403...)>",
  // states "initial", "started", "stopped", with " daemon" and the ident.
  std::string repr() const { return repr_as(nullptr); }

  friend bool operator==(const ThreadHandle& a, const ThreadHandle& b) noexcept {
    return a.state_ == b.state_;
  }

 protected:
  explicit ThreadHandle(std::shared_ptr<internal::ThreadState> state) noexcept
      : state_(std::move(state)) {}

  // never null
  std::shared_ptr<internal::ThreadState> state_;

  // repr_as is repr() showing class `cls` when the thread has not recorded
  // its own yet (it does at start()).
  std::string repr_as(const std::type_info* cls) const;

 private:
  bool join_for(std::chrono::nanoseconds timeout) const;
  friend struct ThreadAccess;
};

// Thread is a thread of this process that runs a target, or a subclass's
// run(). Not copyable or movable (run() is called on the object itself).
class Thread : public ThreadHandle {
 public:
  // Thread(target, args...) runs std::invoke(target, args...) in the new
  // thread, with target and args decay-copied now (as std::thread; pass
  // std::ref to share). The target and arguments are destroyed in the new
  // thread once it returns.
  template <class F, class... Args>
  requires std::invocable<std::decay_t<F>, std::decay_t<Args>...>
  explicit Thread(F&& target, Args&&... args)
      : Thread(ThreadOptions{}, std::forward<F>(target), std::forward<Args>(args)...) {}

  // Thread(options, target, args...) also sets the name and daemon flag.
  template <class F, class... Args>
  requires std::invocable<std::decay_t<F>, std::decay_t<Args>...> Thread(ThreadOptions options,
                                                                         F&& target, Args&&... args)
      : ThreadHandle(new_state()) {
    std::optional<std::string> tname;
    if (!options.name || options.name->empty())
      tname = internal::target_name(static_cast<const std::decay_t<F>&>(target));
    init(std::move(options),
         internal::make_target(std::forward<F>(target), std::forward<Args>(args)...),
         std::move(tname));
  }

  Thread(const Thread&) = delete;
  Thread& operator=(const Thread&) = delete;

  // ~Thread joins a started, still-running non-daemon thread (unless called
  // from that thread) and abandons a daemon one; see "Lifetime" above.
  virtual ~Thread();

  // start() starts the thread. Throws mp::RuntimeError when called twice
  // ("threads can only be started once") or when no thread can be created
  // ("can't start new thread").
  void start();

  // run() is what the new thread does: by default, call the target once
  // (later calls do nothing). Subclasses built without a target override it.
  virtual void run();

  // handle() is a handle to this thread, valid after this object is gone.
  ThreadHandle handle() const noexcept { return *this; }

  // repr() is ThreadHandle::repr() with this object's class ("Timer",
  // "DownloadTask") also before start().
  std::string repr() const { return repr_as(&typeid(*this)); }

 protected:
  // For subclasses that override run(): "Thread-N", daemon inherited.
  Thread();
  explicit Thread(ThreadOptions options);

  // For wrappers (Timer): runs `target`, whose name the default name omits.
  Thread(ThreadOptions options, std::unique_ptr<internal::ThreadTarget> target);

  // join_if_started() joins the thread if it was started and is not the
  // calling thread. Subclass destructors call it (see "Lifetime").
  void join_if_started() noexcept;

 private:
  static std::shared_ptr<internal::ThreadState> new_state();
  void init(ThreadOptions options, std::unique_ptr<internal::ThreadTarget> target,
            std::optional<std::string> target_name);
};

// Timer is a Thread that calls `function(args...)` after `interval`, unless
// cancel() is called first. Mirrors threading.Timer (named "Thread-N").
// Destroying a started Timer that has not fired waits for it, as ~Thread
// does; cancel() first to drop it.
class Timer : public Thread {
 public:
  template <class Rep, class Period, class F, class... Args>
  requires std::invocable<std::decay_t<F>, std::decay_t<Args>...> Timer(
      std::chrono::duration<Rep, Period> interval, F&& function, Args&&... args)
      : Timer(internal::to_nanoseconds(interval),
              internal::make_target(std::forward<F>(function), std::forward<Args>(args)...)) {}

  // cancel() stops the timer if it is still waiting; the function will not
  // run. Harmless after it ran, or before start().
  void cancel();

 private:
  struct State;
  Timer(std::chrono::nanoseconds interval, std::unique_ptr<internal::ThreadTarget> function);
  Timer(std::shared_ptr<State> state);
  std::shared_ptr<State> timer_;
};

// current_thread() is the calling thread (a dummy daemon thread named
// "Dummy-N" for threads mp did not start).
ThreadHandle current_thread();

// main_thread() is the main thread: the thread that started the program, or
// in a forked child the thread that forked.
ThreadHandle main_thread();

// enumerate() lists the live threads: started mp Threads not yet ended, the
// main thread, and the dummy threads.
std::vector<ThreadHandle> enumerate();

// active_count() is enumerate().size().
std::size_t active_count();

// get_ident() is the calling thread's identifier (see ThreadHandle::ident).
unsigned long get_ident() noexcept;

// get_native_id() is the calling thread's kernel thread id.
pid_t get_native_id() noexcept;

// ExceptHookArgs describe an exception that escaped a thread's run: the
// exception and the thread (CPython's exc_type/exc_value/thread).
struct ExceptHookArgs {
  std::exception_ptr exception;
  ThreadHandle thread;
};

using ExceptHook = std::function<void(const ExceptHookArgs&)>;

// set_excepthook() replaces the hook called, in the failing thread, with each
// exception that escapes a thread; an empty hook restores the default. An
// exception thrown by the hook itself is reported on stderr and dropped.
void set_excepthook(ExceptHook hook);

// excepthook() is the hook in use.
ExceptHook excepthook();

// default_excepthook() writes "Exception in thread <name>:\n<type>: <what>\n"
// to stderr in one write (CPython's threading.__excepthook__, without the
// traceback C++ cannot give).
void default_excepthook(const ExceptHookArgs& args);

namespace internal {
// Per-thread storage behind mp::local: a key per local object, values in a
// per-thread table destroyed when the thread ends (for mp Threads, before
// join() returns; for other threads, at their exit).
struct LocalKey {
  std::size_t index;
  std::uint64_t generation;
};
LocalKey local_key_create();
void local_key_delete(LocalKey key) noexcept;
void* local_get(LocalKey key) noexcept;
void local_set(LocalKey key, void* value, void (*destroy)(void*));
// clear_thread_locals destroys the calling thread's values.
void clear_thread_locals() noexcept;
}  // namespace internal

// local<T> is a value with one instance per thread (threading.local): each
// thread that uses it gets its own T, constructed on its first use in that
// thread from copies of the constructor's arguments, and destroyed when that
// thread ends (an mp Thread's values before its join() returns). Destroying
// the local destroys the calling thread's value; other threads' values are
// destroyed when those threads end.
template <class T>
class local {
 public:
  template <class... Args>
  requires std::constructible_from < T, const std::decay_t<Args>
  &... > explicit local(Args&&... args)
      : key_(internal::local_key_create()),
  make_(std::make_unique<Factory<std::decay_t<Args>...>>(std::forward<Args>(args)...)) {}
  ~local() { internal::local_key_delete(key_); }
  local(const local&) = delete;
  local& operator=(const local&) = delete;

  // get() is the calling thread's value, constructed here on first use.
  T& get() {
    if (void* p = internal::local_get(key_)) return *static_cast<T*>(p);
    T* value = make_->make();
    internal::local_set(key_, value, [](void* p) { delete static_cast<T*>(p); });
    return *value;
  }
  T& operator*() { return get(); }
  T* operator->() { return &get(); }

 private:
  struct FactoryBase {
    virtual ~FactoryBase() = default;
    virtual T* make() const = 0;
  };
  template <class... Args>
  struct Factory final : FactoryBase {
    template <class... A>
    explicit Factory(A&&... a) : args(std::forward<A>(a)...) {}
    T* make() const override {
      return std::apply([](const auto&... a) { return new T(a...); }, args);
    }
    std::tuple<Args...> args;
  };

  internal::LocalKey key_;
  std::unique_ptr<const FactoryBase> make_;
};

}  // namespace mp

// fmt::format("{}", thread) gives ThreadHandle::repr(), for Thread, its
// subclasses and handles.
template <class T>
requires std::derived_from<T, mp::ThreadHandle>
struct fmt::formatter<T> : fmt::formatter<std::string_view> {
  template <class FormatContext>
  auto format(const T& t, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(t.repr(), ctx);
  }
};
