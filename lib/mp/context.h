// mp/context.h — start methods: fork, forkserver and spawn (CPython's
// multiprocessing.context), and the entry point the last two need.
//
//   int main(int argc, char** argv) {
//     mp::freeze_support();                  // a spawned child runs its task here
//     mp::forkserver::ensure_running();      // optional: start the server while
//                                            // the program has one thread
//     auto ctx = mp::get_context("forkserver");
//     mp::Queue<int> q;
//     mp::Process p = ctx.Process(worker, std::ref(q), 42);   // worker: a function
//     p.start();
//     ...
//   }
//
// Which method, and what it costs (figures: benchmarks/spawn_bench.cc,
// BM_Spawn/*, and the README):
//   * fork (the default): the child is a fork() of the caller at start(): any
//     callable, closures included, and the caller's memory as of start().
//     Cheapest from a small parent; its cost grows with the parent's size
//     (page tables, copy-on-write faults). Unsafe when the caller has other
//     threads: one of them may hold a lock (malloc's, stdio's, a logger's)
//     that the child then waits for forever. mp warns once on stderr when it
//     forks a multi-threaded process.
//   * forkserver: a server process, started on first use (or by
//     forkserver::ensure_running()), forks each child. The server is a new
//     image of the program that ran its static constructors and main() up
//     to freeze_support(), single-threaded, so its forks are safe whatever
//     threads the caller runs, and cost what forking a small process costs
//     whatever the caller's size. It keeps one child forked ahead, so a
//     start waits for no fork: two processes besides the caller's children
//     (the server and that spare). The child sees the server's state, not
//     the caller's: globals the caller set after the server started are not
//     seen. The target must be data (below). CPython's default since 3.14.
//     Measured (BM_Spawn, start+join of an empty child): 0.52-0.56x a raw
//     fork+waitpid from a small parent and over 100x a raw fork from a
//     parent holding 1 GiB on this project's 2-vCPU VM; 0.61-0.65x and
//     60-71x on a 16-core machine.
//   * spawn: each child is a new image of the program (/proc/self/exe, the
//     running executable even if its file was replaced), started with
//     posix_spawn, with nothing inherited but stdio and what is passed. The
//     target must be data. Costs an exec, the dynamic loader and the
//     program's static constructors per child: about 1 ms here, the same as
//     a raw posix_spawn of the program, and 32x (2 vCPU) to 50x (16 cores)
//     CPython's spawn.
//
// The target as data (forkserver, spawn): a function or a lambda without
// captures, and arguments that mp/codec.h encodes, or mp's shareable objects
// (Queue, SimpleQueue, JoinableQueue, Lock, RLock, Semaphore,
// BoundedSemaphore, Event, Condition, Barrier, Value, Array, SharedMemory,
// a Connection from Pipe()), which arrive as handles to the same object.
// Move-only objects travel as std::ref(obj). A Process subclass travels when
// it derives from mp::SpawnableProcess<Self> and names its fields in
// travel() (mp/process.h). A function's address does not
// survive exec; mp sends it as the loaded object that holds it and the
// offset within it, checked against the object's build id, so no
// registration is needed (internal/modules.h).
//
// The entry point. A spawned child (and the forkserver) runs the program's
// main() from the start, as CPython's spawn re-imports the main module.
// mp::freeze_support() is the `if __name__ == "__main__"` guard: called at
// the top of main(), it returns at once in an ordinary run, and in a child
// started by spawn or forkserver it runs the task (or the server) and never
// returns. A program that forgot it does not start a second generation: the
// child's first mp start (Process::start, a Pool, ensure_running) or the
// end of its main() reports the missing call, the child exits with code 1,
// and the parent's start() raises mp::ProcessError with that message.
// Code before freeze_support() runs in every such child: keep it to what
// the task may rely on (parsing flags, say), and nothing that must happen
// once.
//
// Contexts. get_context(name) returns a Context whose members make the same
// objects as the top-level API; ctx.Process(...) starts its child with the
// context's method and rejects, at compile time, a target that cannot travel
// (so a program switches method by changing one string). Objects (Queue,
// Lock, ...) are the same whichever context made them: all of them can be
// passed to a child of any method. Closures: use mp::Process directly (fork
// only).
//
// Default method. set_start_method(name) sets it once (a second call raises
// mp::RuntimeError "context has already been set", unless force); starting
// any child also fixes it, as CPython's get_start_method() does. The
// default stays fork, whose semantics the tutorials use. A child has its
// parent's default, already fixed, whatever method started it (a fork
// inherits it; spawn and forkserver pass it, as CPython's spawn does), so
// its own children start as the parent's would.
//
// The forkserver's life: started on first use by this process (a forked
// child starts its own), stopped at normal exit after the children were
// joined. If it dies (SIGKILL), children it forked keep running and stay
// joinable (their exit codes read 255 if they end after it), and the next
// start transparently starts a new server. If this process dies, the server
// kills the children it forked for it (daemonic ones with SIGKILL, others
// SIGTERM then SIGKILL after 5 s) and exits: no orphan keeps running.
#pragma once

#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "mp/connection.h"
#include "mp/internal/start.h"
#include "mp/internal/task.h"
#include "mp/os.h"
#include "mp/pool.h"
#include "mp/process.h"
#include "mp/queue.h"
#include "mp/shared.h"
#include "mp/synchronize.h"

namespace mp {

// freeze_support() is the entry point of spawn and forkserver children (see
// the top). Call it first thing in main().
void freeze_support();

// set_start_method(name, force) sets the default start method: "fork",
// "forkserver" or "spawn" (mp::ValueError otherwise, naming them). A second
// call, or a call after a child was started, raises mp::RuntimeError unless
// `force`.
void set_start_method(std::string_view method, bool force = false);

// get_start_method() is the default start method's name (and fixes it).
std::string get_start_method();

// get_all_start_methods() lists the methods, the default first.
std::vector<std::string> get_all_start_methods();

namespace forkserver {
// ensure_running() starts this process's forkserver now if it does not run.
// Call it early in main(), while the program has one thread, to take the
// server's start off the first child's start.
void ensure_running();
}  // namespace forkserver

// Context: one start method, and the objects of the top-level API.
class Context {
 public:
  // get_start_method() is this context's method.
  std::string get_start_method() const { return std::string(internal::start_method_name(method_)); }

  // Process(target, args...) / Process(options, target, args...): an
  // mp::Process that starts with this context's method. The target must be
  // a function or a stateless lambda, the arguments encodable or mp
  // objects (std::ref for move-only ones).
  template <class F, class... Args>
  requires(!std::same_as<std::decay_t<F>, ProcessOptions>) mp::Process
      Process(F&& target, Args&&... args)
  const { return Process(ProcessOptions{}, std::forward<F>(target), std::forward<Args>(args)...); }
  template <class F, class... Args>
  mp::Process Process(ProcessOptions options, F&& target, Args&&... args) const {
    static_assert(internal::travelling_function<std::decay_t<F>>,
                  "mp::Context::Process: the target must be a function or a lambda without "
                  "captures: a spawn or forkserver child is a new image of the program and "
                  "cannot rebuild captured state (pass that state as arguments, or use "
                  "mp::Process, which forks)");
    (codec_detail::require_transportable<internal::stored_arg_t<std::decay_t<Args>>>(), ...);
    static_assert((Transportable<internal::stored_arg_t<std::decay_t<Args>>> && ...),
                  "mp::Context::Process: every argument must be encodable by mp/codec.h or be "
                  "one of mp's shareable objects (move-only ones as std::ref(obj))");
    static_assert(std::invocable<std::decay_t<F>&, internal::stored_arg_t<std::decay_t<Args>>&...>,
                  "mp::Context::Process: the target cannot be called with the arguments as the "
                  "child rebuilds them (a C string arrives as a std::string, a std::ref(x) as "
                  "an x&)");
    options.start_method = get_start_method();
    return mp::Process(std::move(options), std::forward<F>(target), std::forward<Args>(args)...);
  }

  // Pool(processes) / Pool(options): an mp::Pool whose workers start with
  // this context's method.
  mp::Pool Pool(std::optional<int> processes = std::nullopt) const {
    PoolOptions o;
    o.processes = processes;
    return Pool(std::move(o));
  }
  mp::Pool Pool(PoolOptions options) const {
    options.start_method = get_start_method();
    return mp::Pool(options);
  }

  // The shareable objects: the same types as mp's, made with the same
  // arguments.
  template <class T, class... A>
  mp::Queue<T> Queue(A&&... a) const {
    return mp::Queue<T>(std::forward<A>(a)...);
  }
  template <class T, class... A>
  mp::SimpleQueue<T> SimpleQueue(A&&... a) const {
    return mp::SimpleQueue<T>(std::forward<A>(a)...);
  }
  template <class T, class... A>
  mp::JoinableQueue<T> JoinableQueue(A&&... a) const {
    return mp::JoinableQueue<T>(std::forward<A>(a)...);
  }
  mp::Lock Lock() const { return mp::Lock(); }
  mp::RLock RLock() const { return mp::RLock(); }
  mp::Semaphore Semaphore(int value = 1) const { return mp::Semaphore(value); }
  mp::BoundedSemaphore BoundedSemaphore(int value = 1) const { return mp::BoundedSemaphore(value); }
  mp::Event Event() const { return mp::Event(); }
  template <class... A>
  mp::Condition Condition(A&&... a) const {
    return mp::Condition(std::forward<A>(a)...);
  }
  template <class... A>
  mp::Barrier Barrier(A&&... a) const {
    return mp::Barrier(std::forward<A>(a)...);
  }
  template <class T, class L = mp::RLock, class... A>
  mp::Value<T, L> Value(A&&... a) const {
    return mp::Value<T, L>(std::forward<A>(a)...);
  }
  template <class T, class L = mp::RLock, class... A>
  mp::Array<T, L> Array(A&&... a) const {
    return mp::Array<T, L>(std::forward<A>(a)...);
  }
  std::pair<Connection, Connection> Pipe(bool duplex = true) const { return mp::Pipe(duplex); }

 private:
  friend Context get_context(std::optional<std::string_view> method);
  explicit Context(internal::StartMethod m) : method_(m) {}
  internal::StartMethod method_;
};

// get_context(name) is the context of method `name` (mp::ValueError for an
// unknown name, naming the valid ones); get_context() the default's.
Context get_context(std::optional<std::string_view> method = std::nullopt);

}  // namespace mp
