// mp/pool.h — Pool, AsyncResult<T>, IMapIterator<T>: CPython's
// multiprocessing.Pool on fork(), with results that never hang.
//
//   int square(int x) { return x * x; }
//
//   mp::Pool pool(4);                                  // 4 worker processes
//   int nine = pool.apply(square, 3);                  // blocks
//   mp::AsyncResult<int> r = pool.apply_async(square, 4);
//   std::vector<int> sq = pool.map(square, std::vector{1, 2, 3});
//   for (int v : pool.imap_unordered(square, std::vector{1, 2, 3})) ...
//   pool.close();
//   pool.join();
//
// Tasks are data, so that they cross a process boundary. A task is a
// function pointer or a stateless callable type (a lambda without captures),
// plus arguments that mp/codec.h can encode. A function's address travels
// as such to forked workers and, relocated through the loaded object that
// holds it, to forkserver and spawn workers (mp/process.h); the arguments
// travel as bytes through shared memory and the result (or the exception)
// comes back the same way. A lambda with captures does not compile (its
// state lives in the caller's memory); neither do arguments or results the
// codec cannot encode. mp::PoolTask<F> is that rule as a concept.
// Arguments are converted to the function's parameter types in the caller
// (a string literal becomes std::string for a `const std::string&`).
// A Pool's initializer, on the other hand, may be any std::function with the
// fork start method (it is copied into each worker by fork()); with
// forkserver and spawn it must be a plain void() function, else the Pool's
// constructor raises mp::ValueError.
//
// Contract (CPython's, unless said otherwise):
//   * Pool() starts cpu_count() workers (affinity-aware), Pool(n) exactly n;
//     n < 1 raises mp::ValueError. Workers are named PoolWorker-N (in the
//     worker, current_process().name()), are daemonic, run one task at a
//     time, and are reused: a process runs many tasks.
//   * maxtasksperchild: a worker exits after that many tasks and is replaced
//     by a fresh one; values < 1 raise mp::ValueError.
//   * apply() blocks; apply_async() returns an AsyncResult at once. get()
//     rethrows a task's exception every time it is called: std exception
//     types (runtime_error, logic_error, invalid_argument, out_of_range...)
//     and every mp error (all of mp/errors.h's MP_ERROR_TYPES, with the
//     same what(); see there for the fields that do not travel) as its own
//     type, types registered with
//     mp::register_exception<E>() as E, anything else as mp::RemoteError
//     carrying the remote type's name and message. The thrown object's
//     dynamic type is matched exactly (a subclass of std::runtime_error that
//     is not registered arrives as RemoteError).
//   * Callbacks (mp::Callbacks{.callback = ..., .error_callback = ...}:
//     callback(const T&), or callback() for void; error_callback(
//     std::exception_ptr)) run exactly once, in whichever caller thread drives the pool, before
//     get() returns and before ready() turns true. A callback that throws is reported on stderr;
//     the result and the pool are unaffected.
//   * map/starmap return results in input order. The default chunksize is
//     CPython's: ceil(len / (4 * processes)); chunksize < 1 raises. If a
//     chunk fails, map raises the first error once every chunk finished.
//     imap (in order) and imap_unordered (completion order) yield each
//     result exactly once; a failed chunk raises its error at its place,
//     once, and iteration continues after it. next(timeout) raises
//     mp::TimeoutError. Empty input, empty result.
//   * imap's input is read lazily, as CPython's is. If reading it throws
//     (its iterator, or the conversion of an item to the task's parameter),
//     the error is raised as itself at its place: imap yields every earlier
//     result, then raises it; imap_unordered raises it after the results
//     that completed before it; either raises it once, and the iteration
//     ends after it (and after any results still in flight, for
//     imap_unordered). An item that cannot be encoded fails the same way.
//   * close() stops submissions; join() (after close() or terminate()) waits
//     until every submitted task has completed and the workers have exited.
//     join() before close()/terminate() raises mp::ValueError "Pool is still
//     running"; submitting after close()/terminate() raises mp::ValueError
//     "Pool not running". terminate() kills the workers at once and resolves
//     every pending result with mp::ProcessError. The destructor terminates
//     and joins: a Pool never leaks a process. A moved-from Pool may only be
//     destroyed.
//
// Where mp differs from CPython, and why:
//   * A worker that dies mid-task (SIGKILL, crash, _exit): the task's result
//     raises mp::WorkerLostError naming the worker, its pid and the signal or
//     exit code; the worker is replaced; other tasks complete. CPython hangs
//     forever (bpo-22393).
//   * An initializer that throws breaks the pool: every pending and later
//     call raises mp::BrokenPoolError carrying the initializer's exception
//     type and message. CPython respawns failing workers forever (gh-87472).
//   * Ctrl-C: workers die of SIGINT silently (C++ prints no traceback); if
//     the program survives the signal (it handles SIGINT), the interrupted
//     tasks fail with WorkerLostError and the pool replaces its workers. If
//     the program dies of it, its workers die with it. A program that ignores
//     SIGINT keeps its workers ignoring it too.
//   * A result whose encoding fails at run time (a codec_traits that throws)
//     fails that task only.
//   * terminate() sends SIGKILL (CPython: SIGTERM), so a task that blocks or
//     handles SIGTERM cannot delay it.
//   * If the pool's process dies without cleaning up (SIGKILL), idle workers
//     notice within about 100 ms and exit; a busy worker finishes its task
//     first.
//   * No helper threads: the caller that waits (get, wait, map, imap's next,
//     join) drives collection, so callbacks run in a caller's thread, and the
//     pool adds no thread that could hold a lock while a replacement worker
//     is forked (workers only touch their shared-memory channels). Tasks run
//     whether or not anybody waits, as long as they fit the task buffer
//     (PoolOptions::task_buffer_bytes, 1 MiB); tasks beyond it are handed to
//     the workers at the next call into the pool.
//   * One task's arguments must fit in half the task buffer (an error at
//     submit time says so; for imap, at the item's place); results of any
//     size are streamed.
//   * imap / imap_unordered keep at most max_in_flight chunks (default
//     4 * processes(), enough to keep every worker busy while the caller
//     takes results; for a container, whose items are in memory already,
//     the default is all of it, as fast as before) submitted and not yet
//     yielded, and pull more of the
//     input in the thread that calls next(), as results are taken. So an
//     unbounded input (std::views::iota(0)) works in bounded memory, and
//     dropping the iterator early leaves at most that many chunks to run
//     (their results are discarded; close() and join() return). CPython
//     reads the whole input in a helper thread, at once. Consequences:
//     only max_in_flight chunks run while nobody calls next(); the input is
//     read by one thread at a time, whichever calls next(); an input error
//     inside a chunk (chunksize > 1) comes after the items read before it
//     in that chunk (CPython drops them and raises after the earlier full
//     chunks). The iterator keeps its input: a view is copied, a container
//     passed as an rvalue is moved in, and one passed as an lvalue is read
//     in place, so it must outlive the iterator. After close() an
//     iterator keeps submitting its input (as CPython's does) and join()
//     waits for what it submitted; once join() or terminate() ran, the rest
//     of the input fails at its place with ValueError "Pool not running".
//
// Thread safety: a Pool and its results may be used from several threads.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "mp/codec.h"
#include "mp/errors.h"
#include "mp/internal/pool_core.h"

namespace mp {

// WorkerLostError and BrokenPoolError, raised here, are declared in
// mp/errors.h with every other mp error.

namespace pool_detail {
using ExceptionFactory = std::exception_ptr (*)(const std::string& message);
void register_exception_factory(std::string type_name, ExceptionFactory factory);
std::string demangled_name(const std::type_info& t);
void report_callback_error(const std::exception_ptr& error) noexcept;
}  // namespace pool_detail

// register_exception<E>() makes results rethrow E (constructed from the
// remote message) when a task throws an E, instead of mp::RemoteError.
// E must be constructible from std::string. Register in the caller process
// (before or after the pool starts).
template <class E>
requires std::constructible_from<E, std::string>
void register_exception() {
  pool_detail::register_exception_factory(
      pool_detail::demangled_name(typeid(E)),
      [](const std::string& message) { return std::make_exception_ptr(E(message)); });
}

// PoolOptions are Pool's keyword arguments.
struct PoolOptions {
  // processes: number of workers (default cpu_count()); must be >= 1.
  std::optional<int> processes;
  // initializer: run once in each worker before its first task (CPython's
  // initializer(*initargs): capture the arguments in the callable).
  std::function<void()> initializer;
  // maxtasksperchild: tasks a worker runs before it is replaced; >= 1.
  std::optional<long> maxtasksperchild;
  // task_buffer_bytes: shared ring for queued tasks (rounded up to a power
  // of two). Bounds one task's arguments (half of it).
  std::size_t task_buffer_bytes = 1 << 20;
  // result_buffer_bytes: per-worker result ring; larger results stream.
  std::size_t result_buffer_bytes = 256 << 10;
  // start_method: how workers start, "fork", "forkserver" or "spawn"
  // (default: mp::get_start_method(); mp/context.h).
  std::optional<std::string> start_method;
};

// Callbacks for the *_async calls: `callback(value)` on success (no
// argument for void), `error_callback(std::exception_ptr)` on failure.
// Either may be left out: mp::Callbacks{.callback = on_done}.
template <class Ok = std::nullptr_t, class Err = std::nullptr_t>
struct Callbacks {
  Ok callback{};
  Err error_callback{};
};

namespace pool_detail {

using Unit = std::monostate;
template <class T>
using stored_t = std::conditional_t<std::is_void_v<T>, Unit, T>;

template <class T>
inline constexpr bool is_callbacks = false;
template <class A, class B>
inline constexpr bool is_callbacks<Callbacks<A, B>> = true;

// arg_t: how a call-site argument travels when the parameter type is not
// known (generic lambdas): decayed, C strings as std::string.
template <class A>
using arg_t = std::conditional_t<std::is_same_v<std::decay_t<A>, const char*> ||
                                     std::is_same_v<std::decay_t<A>, char*>,
                                 std::string, std::decay_t<A>>;

template <class F>
struct sig {
  static constexpr bool known = false;
};
template <class R, class... P>
struct sig<R (*)(P...)> {
  static constexpr bool known = true;
  static constexpr std::size_t arity = sizeof...(P);
  using params = std::tuple<std::decay_t<P>...>;
};
template <class R, class... P>
struct sig<R (*)(P...) noexcept> : sig<R (*)(P...)> {};
template <class C, class R, class... P>
struct sig<R (C::*)(P...) const> : sig<R (*)(P...)> {};
template <class C, class R, class... P>
struct sig<R (C::*)(P...) const noexcept> : sig<R (*)(P...)> {};
template <class C, class R, class... P>
struct sig<R (C::*)(P...)> : sig<R (*)(P...)> {};
template <class C, class R, class... P>
struct sig<R (C::*)(P...) noexcept> : sig<R (*)(P...)> {};

template <class F>
constexpr bool is_fnptr = std::is_pointer_v<F>&& std::is_function_v<std::remove_pointer_t<F>>;

template <class F>
struct fn_sig : sig<F> {};
template <class F>
requires(std::is_class_v<F>&& requires { &F::operator(); }) struct fn_sig<F>
    : sig<decltype(&F::operator())> {
};

}  // namespace pool_detail

// PoolTask<F>: F can be sent to a pool worker: a function pointer (or
// function) or a stateless, default-constructible callable type such as a
// lambda without captures. Everything else is rejected at compile time.
template <class F>
concept PoolTask = pool_detail::is_fnptr<std::decay_t<F>> ||
    (std::is_class_v<std::decay_t<F>>&& std::is_empty_v<std::decay_t<F>>&&
         std::is_default_constructible_v<std::decay_t<F>>);

namespace pool_detail {

template <class F>
constexpr void check_task() {
  static_assert(PoolTask<F>,
                "mp::Pool: a task must be a function pointer or a stateless callable (a lambda "
                "without captures). Workers are separate processes that receive the task as data, "
                "so captured state cannot go with it: pass it as an argument instead.");
}

// call_args<Fn, A...>::type: the tuple a call's arguments travel as.
template <class Fn, bool Known, class... A>
struct call_args_impl {
  using type = std::tuple<arg_t<A>...>;
};
template <class Fn, class... A>
struct call_args_impl<Fn, true, A...> {
  static_assert(fn_sig<Fn>::arity == sizeof...(A),
                "mp::Pool: wrong number of arguments for the task");
  using type = typename fn_sig<Fn>::params;
};
template <class Fn, class... A>
using call_args_t = typename call_args_impl<Fn, fn_sig<Fn>::known, A...>::type;

// map_item<Fn, V>::type: the type one map item travels as.
template <class Fn, bool Known, class V>
struct map_item_impl {
  using type = arg_t<V>;
};
template <class Fn, class V>
struct map_item_impl<Fn, true, V> {
  static_assert(fn_sig<Fn>::arity == 1, "mp::Pool::map: the task must take exactly one argument");
  using type = std::tuple_element_t<0, typename fn_sig<Fn>::params>;
};
template <class Fn, class V>
using map_item_t = typename map_item_impl<Fn, fn_sig<Fn>::known, V>::type;

template <class Fn, bool Known, class V>
struct star_item_impl {
  using type = std::decay_t<V>;
};
template <class Fn, class V>
struct star_item_impl<Fn, true, V> {
  using type = typename fn_sig<Fn>::params;
};
template <class Fn, class V>
using star_item_t = typename star_item_impl<Fn, fn_sig<Fn>::known, V>::type;

template <class Fn, class Tuple>
using apply_result_t =
    std::remove_cvref_t<decltype(std::apply(std::declval<Fn&>(), std::declval<Tuple&&>()))>;

template <class Fn, class Item, bool Star>
struct item_result {
  using type = std::remove_cvref_t<std::invoke_result_t<Fn&, Item&&>>;
};
template <class Fn, class Item>
struct item_result<Fn, Item, true> {
  using type = apply_result_t<Fn, Item>;
};

template <class R>
constexpr void check_result() {
  if constexpr (!std::is_void_v<R>) codec_detail::require_transportable<R>();
  static_assert(std::is_void_v<R> || Transportable<R>,
                "mp::Pool: the task's result type must be encodable (see mp/codec.h)");
}

template <class Fn>
void write_fn(std::string& out, Fn fn) {
  if constexpr (is_fnptr<Fn>) out.append(reinterpret_cast<const char*>(&fn), sizeof fn);
}
template <class Fn>
Fn read_fn(Decoder& d) {
  if constexpr (is_fnptr<Fn>) {
    Fn fn;
    d.read_raw(&fn, sizeof fn);
    return internal::relocate(fn);  // identity unless the worker was spawned
  } else {
    return Fn{};
  }
}

// Trampolines: run in the worker.
template <class Fn, class Args>
void run_call(std::string_view payload, std::string& out) {
  Decoder d(payload);
  Fn fn = read_fn<Fn>(d);
  Args args = d.read<Args>();
  d.expect_end();
  using R = apply_result_t<Fn, Args>;
  if constexpr (std::is_void_v<R>) {
    std::apply(fn, std::move(args));
  } else {
    encode_into(out, std::apply(fn, std::move(args)));
  }
}

template <class Fn, class Item, bool Star>
void run_chunk(std::string_view payload, std::string& out) {
  Decoder d(payload);
  Fn fn = read_fn<Fn>(d);
  std::vector<Item> items = d.read<std::vector<Item>>();
  d.expect_end();
  using R = typename item_result<Fn, Item, Star>::type;
  std::vector<stored_t<R>> results;
  results.reserve(items.size());
  for (Item& item : items) {
    if constexpr (std::is_void_v<R>) {
      if constexpr (Star)
        std::apply(fn, std::move(item));
      else
        fn(std::move(item));
      results.emplace_back();
    } else if constexpr (Star) {
      results.push_back(std::apply(fn, std::move(item)));
    } else {
      results.push_back(fn(std::move(item)));
    }
  }
  encode_into(out, results);
}

// TypedJob<T>: a job whose outcome is a T (or an error), with callbacks.
template <class T>
struct on_value {
  using type = std::function<void(const T&)>;
};
template <>
struct on_value<void> {
  using type = std::function<void()>;
};

template <class T>
class TypedJob : public internal::pool::JobBase {
 public:
  using Value = stored_t<T>;
  using OnValue = typename on_value<T>::type;

  void fail(std::uint32_t, std::exception_ptr error) override {
    if (!error_) error_ = std::move(error);
  }
  void complete() override {
    finalize();
    try {
      if (error_) {
        if (on_error_) on_error_(error_);
      } else if (on_value_) {
        if constexpr (std::is_void_v<T>)
          on_value_();
        else
          on_value_(value_);
      }
    } catch (...) {
      report_callback_error(std::current_exception());
    }
    ready.store(true, std::memory_order_release);
  }

  // After ready: the error, or the value.
  const std::exception_ptr& error() const { return error_; }
  const Value& value() const { return value_; }
  Value& mutable_value() { return value_; }

  OnValue on_value_;
  std::function<void(std::exception_ptr)> on_error_;

 protected:
  virtual void finalize() {}
  std::exception_ptr error_;
  Value value_{};
};

template <class R>
class CallJob final : public TypedJob<R> {
 public:
  void deliver(std::uint32_t, std::string_view payload) override {
    if constexpr (std::is_void_v<R>) {
      if (!payload.empty()) throw CodecError("mp::Pool: unexpected result bytes for a void task");
    } else {
      this->value_ = decode<R>(payload);
    }
  }
};

template <class R>
using map_result_t = std::conditional_t<std::is_void_v<R>, void, std::vector<R>>;

template <class R>
class MapJob final : public TypedJob<map_result_t<R>> {
 public:
  MapJob(std::size_t n, std::size_t chunksize)
      : n_(n), chunksize_(chunksize), chunks_((n + chunksize - 1) / chunksize) {}
  void deliver(std::uint32_t chunk, std::string_view payload) override {
    auto v = decode<std::vector<stored_t<R>>>(payload);
    if (v.size() != chunk_len(chunk))
      throw CodecError("mp::Pool: a chunk's result has the wrong length");
    chunks_[chunk] = std::move(v);
  }

 private:
  std::size_t chunk_len(std::size_t i) const { return std::min(chunksize_, n_ - i * chunksize_); }
  void finalize() override {
    if constexpr (!std::is_void_v<R>) {
      if (this->error_) return;
      if (chunks_.size() == 1) {
        this->value_ = std::move(chunks_[0]);
      } else {
        this->value_.reserve(n_);
        for (auto& c : chunks_) {
          for (auto& x : c) this->value_.push_back(std::move(x));
        }
      }
    }
    chunks_.clear();
  }
  std::size_t n_;
  std::size_t chunksize_;
  std::vector<std::vector<stored_t<R>>> chunks_;
};

// IMapJob<R>: the results of one imap / imap_unordered, handed to the
// iterator as chunks arrive. Chunks are numbered in input order as the input
// is pulled (ImapInput below); at most max_in_flight of them are submitted
// and not yet taken by the iterator. A failure to produce the next chunk
// (the input's own error, an argument that does not encode, a pool that no
// longer runs) takes that chunk's place and ends the input.
template <class R>
class IMapJob final : public internal::pool::JobBase {
 public:
  // Item: one chunk's results, or its error.
  struct Item {
    std::vector<stored_t<R>> values;
    std::exception_ptr error;
  };
  IMapJob(std::size_t chunksize, std::size_t max_in_flight, bool ordered)
      : chunksize_(chunksize), max_in_flight_(max_in_flight), ordered_(ordered) {
    // Never "all done" for the core: the iterator tracks the end itself.
    chunks_total = UINT32_MAX;
  }

  void deliver(std::uint32_t chunk, std::string_view payload) override {
    if (abandoned_.load(std::memory_order_relaxed)) return;
    auto v = decode<std::vector<stored_t<R>>>(payload);
    std::lock_guard lock(mu_);
    const std::size_t len = short_chunk_ && *short_chunk_ == chunk ? short_len_ : chunksize_;
    if (v.size() != len) throw CodecError("mp::Pool: a chunk's result has the wrong length");
    put_locked(chunk, Item{std::move(v), nullptr});
  }
  void fail(std::uint32_t chunk, std::exception_ptr error) override {
    if (abandoned_.load(std::memory_order_relaxed)) return;
    std::lock_guard lock(mu_);
    put_locked(chunk, Item{{}, std::move(error)});
  }

  // chunks_wanted(): how many chunks the input should add now: none while
  // more than half the bound is in flight, else up to the bound.
  std::size_t chunks_wanted() {
    std::lock_guard lock(mu_);
    return wants_input_locked() ? max_in_flight_ - (submitted_ - taken_) : 0;
  }
  // available(): take() has a value or the end for the caller, or the input
  // should be pulled.
  bool available() {
    std::lock_guard lock(mu_);
    if (!current_.empty() || finished_locked() || wants_input_locked()) return true;
    if (ordered_) return !window_.empty() && window_.front().has_value();
    return !arrived_.empty();
  }
  // reserve(count, last_len) numbers the next `count` chunks before they are
  // submitted and returns the first one; last_len, when given, is the length
  // of the last of them (the input ended inside it).
  std::uint64_t reserve(std::size_t count, std::optional<std::size_t> last_len) {
    std::lock_guard lock(mu_);
    const std::uint64_t first = submitted_;
    submitted_ += count;
    if (ordered_) window_.resize(window_.size() + count);
    if (last_len) {
      short_chunk_ = static_cast<std::uint32_t>(first + count - 1);
      short_len_ = *last_len;
    }
    return first;
  }
  // settle(reserved, submitted, error, input_end): of the chunks reserve()
  // numbered last, `submitted` were submitted; `error`, if any, takes the
  // next place and ends the input.
  void settle(std::size_t reserved, std::size_t submitted, std::exception_ptr error,
              bool input_end) {
    std::lock_guard lock(mu_);
    const std::size_t dropped = reserved - submitted;
    submitted_ -= dropped;
    if (ordered_) window_.resize(window_.size() - dropped);
    if (error || input_end) input_done_ = true;
    if (error) {
      ++submitted_;
      if (ordered_) {
        window_.emplace_back(Item{{}, std::move(error)});
      } else {
        arrived_.push_back(Item{{}, std::move(error)});
      }
    }
  }
  // abandon(): nobody will take what is left: results still to arrive are
  // dropped, and the input is not pulled again.
  void abandon() {
    std::lock_guard lock(mu_);
    abandoned_.store(true, std::memory_order_relaxed);
    input_done_ = true;
    window_.clear();
    arrived_.clear();
    current_.clear();
  }
  // try_take(out): false if nothing is ready (another thread took it, or the
  // input should be pulled); else true with the next value in `out`, or
  // nullopt at the end. Rethrows a chunk's error.
  bool try_take(std::optional<stored_t<R>>& out) {
    std::lock_guard lock(mu_);
    for (;;) {
      if (!current_.empty()) {
        out.emplace(std::move(current_.front()));
        current_.pop_front();
        return true;
      }
      if (finished_locked()) {
        out.reset();
        return true;
      }
      Item item;
      if (ordered_) {
        if (window_.empty() || !window_.front().has_value()) return false;
        item = std::move(*window_.front());
        window_.pop_front();
      } else {
        if (arrived_.empty()) return false;
        item = std::move(arrived_.front());
        arrived_.pop_front();
      }
      ++taken_;
      if (item.error) std::rethrow_exception(item.error);
      current_.assign(std::make_move_iterator(item.values.begin()),
                      std::make_move_iterator(item.values.end()));
    }
  }

 private:
  bool finished_locked() const { return input_done_ && taken_ == submitted_; }
  bool wants_input_locked() const {
    return !input_done_ && submitted_ - taken_ <= max_in_flight_ / 2;
  }
  void put_locked(std::uint32_t chunk, Item item) {
    if (ordered_) {
      // In flight (ordered): chunks taken_ .. taken_ + window_.size() - 1.
      const std::uint32_t k = chunk - static_cast<std::uint32_t>(taken_);
      if (k < window_.size()) window_[k] = std::move(item);
    } else {
      arrived_.push_back(std::move(item));
    }
  }
  const std::size_t chunksize_;
  const std::size_t max_in_flight_;
  const bool ordered_;
  std::atomic<bool> abandoned_{false};
  std::mutex mu_;
  // Everything below is written under mu_.
  std::uint64_t submitted_ = 0;               // chunks numbered (an input error counts as one)
  std::uint64_t taken_ = 0;                   // chunks the iterator took
  bool input_done_ = false;                   // no chunk will be added
  std::optional<std::uint32_t> short_chunk_;  // the last chunk, if shorter than chunksize_
  std::size_t short_len_ = 0;
  std::deque<std::optional<Item>> window_;  // ordered: chunk taken_ + i, once arrived
  std::deque<Item> arrived_;                // unordered: by arrival
  std::deque<stored_t<R>> current_;         // the chunk being yielded
};

// encode_chunk appends the task payload for items[begin, end) to `out`.
template <class Fn, class Item>
void encode_chunk(std::string& out, Fn f, const std::vector<Item>& items, std::size_t begin,
                  std::size_t end) {
  write_fn(out, f);
  const std::uint64_t n = end - begin;
  out.append(reinterpret_cast<const char*>(&n), sizeof n);
  if constexpr (codec_detail::plain_memcpy<Item>) {
    // Same bytes as element-wise writes (the codec's contiguous fast path;
    // never for a type with codec_traits of the user's).
    out.append(reinterpret_cast<const char*>(items.data() + begin), n * sizeof(Item));
    return;
  }
  Encoder e(out);
  for (std::size_t i = begin; i < end; ++i) e.write(items[i]);
}

// ImapFeed pulls an imap's input; owned by its IMapIterator (and copies).
class ImapFeed {
 public:
  virtual ~ImapFeed() = default;
  // feed() pulls and submits as many chunks as the job wants (maybe none).
  virtual void feed() = 0;
};

// ImapInput<Fn, Item, V, R> is the input of one imap: a view over the
// caller's range, pulled by whichever thread calls next() (one at a time),
// never further than the job's bound ahead of what the iterator took.
template <class Fn, class Item, class V, class R>
class ImapInput final : public ImapFeed {
 public:
  ImapInput(Fn f, V input, std::size_t chunksize, std::shared_ptr<IMapJob<R>> job,
            std::shared_ptr<internal::pool::Engine> core)
      : f_(f),
        input_(std::move(input)),
        chunksize_(chunksize),
        job_(std::move(job)),
        core_(std::move(core)) {}
  ~ImapInput() override { job_->abandon(); }

  void feed() override {
    std::lock_guard lock(mu_);
    const std::size_t want = job_->chunks_wanted();
    if (want == 0) return;
    // Pull up to `want` chunks' items; the input's error comes after them.
    items_.clear();
    std::exception_ptr error;
    bool end = false;
    try {
      if (!it_) it_.emplace(std::ranges::begin(input_));
      while (items_.size() < want * chunksize_) {
        if (*it_ == std::ranges::end(input_)) {
          end = true;
          break;
        }
        items_.emplace_back(**it_);
        ++*it_;
      }
    } catch (...) {
      error = std::current_exception();
    }
    const std::size_t n = items_.size();
    std::size_t chunks = (n + chunksize_ - 1) / chunksize_;
    bytes_.clear();
    offsets_.clear();
    for (std::size_t i = 0; i < chunks; ++i) {
      try {
        encode_chunk(bytes_, f_, items_, i * chunksize_, std::min(n, (i + 1) * chunksize_));
      } catch (...) {
        // An argument that cannot be encoded fails its chunk's place.
        error = std::current_exception();
        chunks = i;
        break;
      }
      offsets_.push_back(bytes_.size());
    }
    std::optional<std::size_t> last_len;
    if (chunks && chunks * chunksize_ > n) last_len = n - (chunks - 1) * chunksize_;
    std::vector<std::string_view> payloads;
    payloads.reserve(chunks);
    for (std::size_t i = 0; i < chunks; ++i) {
      const std::size_t from = i ? offsets_[i - 1] : 0;
      payloads.emplace_back(bytes_.data() + from, offsets_[i] - from);
    }
    const std::uint64_t first = job_->reserve(chunks, last_len);
    std::exception_ptr submit_error;
    const std::size_t done =
        chunks ? core_->feed(job_, &run_chunk<Fn, Item, false>, static_cast<std::uint32_t>(first),
                             payloads, submit_error)
               : 0;
    if (submit_error) error = submit_error;  // the earlier place wins
    job_->settle(chunks, done, error, end);
    items_.clear();
  }

 private:
  Fn f_;
  std::mutex mu_;
  // Everything below is used under mu_.
  V input_;
  std::optional<std::ranges::iterator_t<V>> it_;
  const std::size_t chunksize_;
  std::shared_ptr<IMapJob<R>> job_;
  std::shared_ptr<internal::pool::Engine> core_;
  std::vector<Item> items_;
  std::string bytes_;
  std::vector<std::size_t> offsets_;
};

using Timeout = std::optional<std::chrono::duration<double>>;

// default_chunksize is CPython's map chunksize: ceil(n / (4 * workers)),
// at least 1.
constexpr std::size_t default_chunksize(std::size_t n, std::size_t workers) {
  std::size_t c = n / (4 * workers);
  if (n % (4 * workers)) ++c;
  return c ? c : 1;
}

}  // namespace pool_detail

class Pool;

// AsyncResult<T> is the pending outcome of apply_async (T = the task's
// result), map_async / starmap_async (T = std::vector<R>, or void). Copies
// refer to the same result. It keeps the pool's engine alive, not its
// workers: once the Pool is destroyed, pending results hold an error.
template <class T>
class AsyncResult {
 public:
  // get() waits for the outcome and returns the value or rethrows the
  // task's error (every time it is called). get(timeout) raises
  // mp::TimeoutError after about `timeout`; the task keeps running and a
  // later get() returns it.
  T get(pool_detail::Timeout timeout = std::nullopt) const {
    wait(timeout);
    if (!ready()) throw TimeoutError("AsyncResult.get() timed out");
    if (job_->error()) std::rethrow_exception(job_->error());
    if constexpr (!std::is_void_v<T>) return job_->value();
  }
  // wait() waits for the outcome, at most about `timeout` when given.
  void wait(pool_detail::Timeout timeout = std::nullopt) const {
    auto* job = job_.get();
    core_->wait_until([job] { return job->ready.load(std::memory_order_acquire); },
                      internal::deadline_after(timeout));
  }
  // ready() is true once the outcome is known (and callbacks have run).
  bool ready() const { return job_->ready.load(std::memory_order_acquire); }
  // successful() is true if the task returned; raises mp::ValueError if the
  // result is not ready.
  bool successful() const {
    if (!ready()) throw ValueError("AsyncResult is not ready");
    return !job_->error();
  }

 private:
  friend class Pool;
  // take() is get() for the sole owner of the result: the value is moved
  // out (apply and map, whose AsyncResult nobody else sees).
  T take() {
    wait();
    if (job_->error()) std::rethrow_exception(job_->error());
    if constexpr (!std::is_void_v<T>) return std::move(job_->mutable_value());
  }
  AsyncResult(std::shared_ptr<pool_detail::TypedJob<T>> job,
              std::shared_ptr<internal::pool::Engine> core)
      : job_(std::move(job)), core_(std::move(core)) {}
  std::shared_ptr<pool_detail::TypedJob<T>> job_;
  std::shared_ptr<internal::pool::Engine> core_;
};

// IMapIterator<T> yields imap / imap_unordered results. next() returns the
// next value, or std::nullopt once all were yielded; a failed chunk's error
// is raised once, at its place. Also a single-pass input range. Copies share
// the iteration; once the last copy is gone the input is not pulled again
// and results still to come are discarded (the tasks in flight still run,
// so close() and join() return).
template <class T>
class IMapIterator {
 public:
  // next(timeout) waits for the next value, pulling and submitting more of
  // the input as results are taken; raises mp::TimeoutError after about
  // `timeout` (the time spent pulling the input itself is not bounded).
  std::optional<T> next(pool_detail::Timeout timeout = std::nullopt) {
    const internal::Deadline deadline = internal::deadline_after(timeout);
    auto* job = job_.get();
    for (;;) {
      feed_->feed();
      std::optional<T> v;
      if (job->try_take(v)) return v;
      if (!core_->wait_until([job] { return job->available(); }, deadline)) {
        throw TimeoutError("IMapIterator.next() timed out");
      }
    }
  }

  class iterator {
   public:
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    explicit iterator(IMapIterator* it) : it_(it) { ++*this; }
    const T& operator*() const { return *value_; }
    iterator& operator++() {
      value_ = it_->next();
      return *this;
    }
    void operator++(int) { ++*this; }
    bool operator==(std::default_sentinel_t) const { return !value_.has_value(); }

   private:
    IMapIterator* it_ = nullptr;
    std::optional<T> value_;
  };
  iterator begin() { return iterator(this); }
  std::default_sentinel_t end() { return {}; }

 private:
  friend class Pool;
  IMapIterator(std::shared_ptr<pool_detail::IMapJob<T>> job,
               std::shared_ptr<internal::pool::Engine> core,
               std::shared_ptr<pool_detail::ImapFeed> feed)
      : job_(std::move(job)), core_(std::move(core)), feed_(std::move(feed)) {}
  std::shared_ptr<pool_detail::IMapJob<T>> job_;
  std::shared_ptr<internal::pool::Engine> core_;
  std::shared_ptr<pool_detail::ImapFeed> feed_;
};

// Pool is a set of worker processes that run tasks; see the file comment.
class Pool {
 public:
  // Pool() starts cpu_count() workers; Pool(n) starts n (n >= 1).
  Pool();
  explicit Pool(int processes);
  explicit Pool(const PoolOptions& options);
  // ~Pool() terminates and joins the workers.
  ~Pool();
  Pool(Pool&&) noexcept = default;
  Pool& operator=(Pool&&) = delete;
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  // apply(f, args...) runs f(args...) in a worker and returns its result.
  template <class F, class... A>
  requires(!pool_detail::is_callbacks<F>) auto apply(F f, A&&... args) {
    return apply_async(f, std::forward<A>(args)...).take();
  }

  // apply_async(f, args...) submits f(args...) and returns at once.
  template <class F, class... A>
  requires(!pool_detail::is_callbacks<F>) auto apply_async(F f, A&&... args) {
    return apply_async(Callbacks<>{}, f, std::forward<A>(args)...);
  }

  // apply_async(callbacks, f, args...) also calls callbacks.callback(result)
  // or callbacks.error_callback(error), exactly once, before get() returns.
  template <class Ok, class Err, class F, class... A>
  auto apply_async(Callbacks<Ok, Err> callbacks, F f, A&&... args) {
    pool_detail::check_task<F>();
    using Args = pool_detail::call_args_t<F, A...>;
    using R = pool_detail::apply_result_t<F, Args>;
    pool_detail::check_result<R>();
    codec_detail::require_transportable<Args>();
    auto job = std::make_shared<pool_detail::CallJob<R>>();
    job->chunks_total = 1;
    set_callbacks<R>(*job, std::move(callbacks));
    std::string& payload = scratch();
    payload.clear();
    pool_detail::write_fn(payload, f);
    encode_into(payload, Args(std::forward<A>(args)...));
    core_->submit_one(job, &pool_detail::run_call<F, Args>, payload);
    return AsyncResult<R>(std::move(job), core_);
  }

  // map(f, items, chunksize) is [f(x) for x in items], in order.
  template <class F, std::ranges::input_range Rg>
  auto map(F f, Rg&& items, std::optional<int> chunksize = std::nullopt) {
    return map_async(f, std::forward<Rg>(items), chunksize).take();
  }
  template <class F, std::ranges::input_range Rg>
  auto map_async(F f, Rg&& items, std::optional<int> chunksize = std::nullopt) {
    return map_async(Callbacks<>{}, f, std::forward<Rg>(items), chunksize);
  }
  template <class Ok, class Err, class F, std::ranges::input_range Rg>
  auto map_async(Callbacks<Ok, Err> callbacks, F f, Rg&& items,
                 std::optional<int> chunksize = std::nullopt) {
    using Item = pool_detail::map_item_t<F, std::ranges::range_reference_t<Rg>>;
    return submit_map<false, Item>(std::move(callbacks), f, std::forward<Rg>(items), chunksize);
  }

  // starmap(f, tuples, chunksize) is [f(*t) for t in tuples], in order.
  template <class F, std::ranges::input_range Rg>
  auto starmap(F f, Rg&& items, std::optional<int> chunksize = std::nullopt) {
    return starmap_async(f, std::forward<Rg>(items), chunksize).take();
  }
  template <class F, std::ranges::input_range Rg>
  auto starmap_async(F f, Rg&& items, std::optional<int> chunksize = std::nullopt) {
    return starmap_async(Callbacks<>{}, f, std::forward<Rg>(items), chunksize);
  }
  template <class Ok, class Err, class F, std::ranges::input_range Rg>
  auto starmap_async(Callbacks<Ok, Err> callbacks, F f, Rg&& items,
                     std::optional<int> chunksize = std::nullopt) {
    using Item = pool_detail::star_item_t<F, std::ranges::range_reference_t<Rg>>;
    return submit_map<true, Item>(std::move(callbacks), f, std::forward<Rg>(items), chunksize);
  }

  // imap(f, items, chunksize = 1, max_in_flight): results lazily, in input
  // order. The input is pulled as results are taken: at most max_in_flight
  // chunks (default 4 * processes(); >= 1) are submitted and not yet
  // yielded, so an unbounded range works in bounded memory. See the file
  // comment for the input's lifetime and errors.
  template <class F, std::ranges::input_range Rg>
  auto imap(F f, Rg&& items, int chunksize = 1, std::optional<int> max_in_flight = std::nullopt) {
    return submit_imap(f, std::forward<Rg>(items), chunksize, max_in_flight, true);
  }
  // imap_unordered(f, items, chunksize = 1, max_in_flight): results as they
  // complete; the input is pulled as for imap.
  template <class F, std::ranges::input_range Rg>
  auto imap_unordered(F f, Rg&& items, int chunksize = 1,
                      std::optional<int> max_in_flight = std::nullopt) {
    return submit_imap(f, std::forward<Rg>(items), chunksize, max_in_flight, false);
  }

  // close() stops submissions; running and queued tasks still complete.
  void close();
  // terminate() kills the workers now; pending results get an error.
  void terminate();
  // join() waits for the workers to exit; only after close()/terminate().
  void join();
  // processes() is the number of workers.
  int processes() const;

 protected:
  // Pool(engine): the same API on another engine than this machine's
  // processes (mp::mpi::Pool runs its tasks on MPI ranks; mp/mpi.h).
  explicit Pool(std::shared_ptr<internal::pool::Engine> engine);

 private:
  static std::string& scratch();
  static void check_chunksize(int chunksize);
  static void check_max_in_flight(std::optional<int> max_in_flight);

  template <class R, class T, class Ok, class Err>
  static void set_callbacks(pool_detail::TypedJob<T>& job, Callbacks<Ok, Err> cbs) {
    if constexpr (!std::is_same_v<Ok, std::nullptr_t>) job.on_value_ = std::move(cbs.callback);
    if constexpr (!std::is_same_v<Err, std::nullptr_t>)
      job.on_error_ = std::move(cbs.error_callback);
  }

  template <class Item, class Rg>
  static std::vector<Item> materialize(Rg&& items) {
    std::vector<Item> v;
    if constexpr (std::ranges::sized_range<Rg>) v.reserve(std::ranges::size(items));
    for (auto&& x : items) v.emplace_back(std::forward<decltype(x)>(x));
    return v;
  }

  std::size_t default_chunksize(std::size_t n) const {
    return pool_detail::default_chunksize(n, static_cast<std::size_t>(processes()));
  }

  template <bool Star, class Item, class Ok, class Err, class F, class Rg>
  auto submit_map(Callbacks<Ok, Err> callbacks, F f, Rg&& range, std::optional<int> chunksize) {
    pool_detail::check_task<F>();
    using R = typename pool_detail::item_result<F, Item, Star>::type;
    pool_detail::check_result<R>();
    codec_detail::require_transportable<Item>();
    static_assert(Transportable<Item>, "mp::Pool: map items must be encodable (see mp/codec.h)");
    if (chunksize) check_chunksize(*chunksize);
    std::vector<Item> items = materialize<Item>(std::forward<Rg>(range));
    const std::size_t n = items.size();
    const std::size_t cs = chunksize ? static_cast<std::size_t>(*chunksize) : default_chunksize(n);
    auto job = std::make_shared<pool_detail::MapJob<R>>(n, cs);
    job->chunks_total = static_cast<std::uint32_t>((n + cs - 1) / cs);
    set_callbacks<R>(*job, std::move(callbacks));
    using T = pool_detail::map_result_t<R>;
    std::shared_ptr<pool_detail::TypedJob<T>> typed = job;
    if (n == 0) {
      ensure_running();
      job->complete();
      return AsyncResult<T>(std::move(typed), core_);
    }
    core_->submit(job, &pool_detail::run_chunk<F, Item, Star>,
                  [&](std::uint32_t i, std::string& out) {
                    pool_detail::encode_chunk(out, f, items, i * cs, std::min(n, (i + 1) * cs));
                  });
    return AsyncResult<T>(std::move(typed), core_);
  }

  template <class F, class Rg>
  auto submit_imap(F f, Rg&& range, int chunksize, std::optional<int> max_in_flight, bool ordered) {
    pool_detail::check_task<F>();
    using Item = pool_detail::map_item_t<F, std::ranges::range_reference_t<Rg>>;
    using R = typename pool_detail::item_result<F, Item, false>::type;
    pool_detail::check_result<R>();
    codec_detail::require_transportable<Item>();
    using T = pool_detail::stored_t<R>;
    check_chunksize(chunksize);
    check_max_in_flight(max_in_flight);
    ensure_running();
    const std::size_t cs = static_cast<std::size_t>(chunksize);
    std::size_t bound = max_in_flight ? static_cast<std::size_t>(*max_in_flight)
                                      : 4 * static_cast<std::size_t>(processes());
    if constexpr (std::ranges::sized_range<Rg> && !std::ranges::view<std::remove_cvref_t<Rg>>) {
      // A container is submitted whole unless a bound was asked for: its
      // items are in memory already, and feeding a few chunks at a time
      // costs a wake-up per result (measured 18x slower on 20k no-op items
      // with chunksize 1). Views (generated, maybe unbounded) stay lazy.
      if (!max_in_flight) {
        const auto n = static_cast<std::size_t>(std::ranges::size(range));
        bound = std::max(bound, (n + cs - 1) / cs);
      }
    }
    auto job = std::make_shared<pool_detail::IMapJob<T>>(cs, bound, ordered);
    std::shared_ptr<pool_detail::ImapFeed> feed;
    if constexpr (std::ranges::viewable_range<Rg>) {
      // A view is copied, a container passed as an rvalue is moved in, one
      // passed as an lvalue is read in place.
      using V = std::views::all_t<Rg>;
      feed = std::make_shared<pool_detail::ImapInput<F, Item, V, T>>(
          f, std::views::all(std::forward<Rg>(range)), cs, job, core_);
    } else {
      // Not viewable (a const rvalue container): its items are copied now.
      using V = std::views::all_t<std::vector<Item>>;
      feed = std::make_shared<pool_detail::ImapInput<F, Item, V, T>>(
          f, std::views::all(materialize<Item>(std::forward<Rg>(range))), cs, job, core_);
    }
    feed->feed();  // the first chunks start at once
    return IMapIterator<T>(std::move(job), core_, std::move(feed));
  }

  void ensure_running() const;

  std::shared_ptr<internal::pool::Engine> core_;
};

}  // namespace mp
