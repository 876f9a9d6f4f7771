// mp/shared.h — Value<T>, Array<T> and SharedMemory: state shared between
// processes.
//
// Mirrors CPython's multiprocessing.Value / Array / RawValue / RawArray
// (multiprocessing.sharedctypes) and multiprocessing.shared_memory.
// SharedMemory.
//
// Value and Array live in an anonymous MAP_SHARED region created by their
// constructor: they are shared with the processes forked after that (and
// with every thread), never with unrelated processes; they cannot leak a
// /dev/shm entry. Like the objects in mp/synchronize.h they are handles:
// copies refer to the same memory. Elements must be trivially copyable
// (CPython's ctypes types are the same idea): no pointers into one process's
// heap can be meaningfully shared, so none are allowed to look shared.
//
// Locks: Value<T> and Array<T> carry an RLock by default (CPython's
// lock=True); pass a Lock or RLock handle to share one lock among several
// objects (lock=<lock>), or use RawValue<T> / RawArray<T> (lock=False), which
// have no get_lock(). Class template argument deduction picks the type from
// the arguments: `mp::Value v(0, my_lock)` is a Value<int, mp::Lock>.
// load()/store()/update() take the lock; raw access (get_obj(), operator[],
// data(), span) does not, exactly as ctypes access to .get_obj() does not:
// take get_lock() around compound updates. On a RawValue/RawArray nothing is
// locked: load()/store() of a T wider than a machine word may tear, and
// update() is not atomic, as in CPython.
//
// SharedMemory is a *named* POSIX segment (shm_open), attachable by name from
// any process. mp differs from CPython in who removes the name: CPython's
// resource tracker unlinks a segment when the process that registered it
// exits, even while others still use it (bpo-39959); mp unlinks only when the
// creating handle is destroyed in the process that created it, or when
// someone calls unlink(). Handles that attached never unlink by default.
#pragma once

#include <fmt/format.h>
#include <sys/types.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <iterator>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <ranges>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "mp/errors.h"
#include "mp/internal/shm.h"
#include "mp/synchronize.h"

namespace mp {

// FileNotFoundError, FileExistsError and IndexError, raised here, are
// declared in mp/errors.h with every other mp error.

// NoLock selects a Value or Array without a lock (CPython's lock=False,
// RawValue, RawArray).
struct NoLock {};

namespace internal {
template <class L>
inline constexpr bool kHasLock = !std::is_same_v<L, NoLock>;

// hold(lock) holds `lock` until the returned guard goes out of scope; for
// NoLock it holds nothing. When the previous holder died, the takeover hands
// the lock to this caller with OwnerDeadError: hold() releases it again and
// lets the error through, so the death is reported once and the lock is
// free afterwards (a guard that threw would otherwise leave it held forever).
template <class L>
auto hold(L& lock) {
  if constexpr (kHasLock<L>) {
    try {
      lock.lock();
    } catch (const OwnerDeadError&) {
      lock.unlock();
      throw;
    }
    return std::unique_lock<L>(lock, std::adopt_lock);
  } else {
    return 0;
  }
}
}  // namespace internal

// Value<T, L> is one T in shared memory, guarded by a lock of type L
// (RLock by default; Lock; or NoLock).
//
// A process that dies holding the lock (inside update(), or holding
// get_lock()): the next load(), store() or update() in any process raises
// mp::OwnerDeadError once, with the lock released again, and does nothing
// else; the calls after it work. The T may be half-written (a store is a
// plain copy of its bytes): a reader that sees OwnerDeadError should assume
// the value is whatever the dead writer left, and store a good one. The
// same holds for Array (its elements, to_vector(), and the other guarded calls).
template <class T, class L = RLock>
class Value {
  static_assert(std::is_trivially_copyable_v<T>,
                "mp::Value<T> needs a trivially copyable T: its bytes are shared");

 public:
  // Value(initial, lock) puts `initial` in new shared memory. `lock` is the
  // lock to use (a handle: pass an existing one to share it).
  explicit Value(const T& initial = T{}, L lock = L())
      : region_(std::make_shared<internal::SharedRegion>(sizeof(T))),
        value_(new (region_->data()) T(initial)),
        lock_(std::move(lock)) {}

  // load() reads the value under the lock.
  T load() const {
    [[maybe_unused]] auto guard = locked();
    return *value_;
  }
  // store(v) writes the value under the lock.
  void store(const T& v) {
    [[maybe_unused]] auto guard = locked();
    *value_ = v;
  }
  // update(f) calls f(T&) under the lock, in place, and returns the new value:
  // v.update([](int& x) { ++x; }).
  template <class F>
  T update(F&& f) {
    [[maybe_unused]] auto guard = locked();
    std::forward<F>(f)(*value_);
    return *value_;
  }

  // get_obj() is the shared T itself, unguarded (CPython's get_obj()).
  T& get_obj() const noexcept { return *value_; }

  // get_lock() is the lock that guards the value (not for RawValue).
  L& get_lock() noexcept requires internal::kHasLock<L> { return lock_; }

 private:
  friend struct codec_traits<Value>;
  Value(std::shared_ptr<internal::SharedRegion> region, L lock)
      : region_(std::move(region)),
        value_(static_cast<T*>(region_->data())),
        lock_(std::move(lock)) {}
  auto locked() const { return internal::hold(lock_); }

  std::shared_ptr<internal::SharedRegion> region_;
  T* value_;
  mutable L lock_;
};

// RawValue<T> is a Value without a lock (multiprocessing.RawValue).
template <class T>
using RawValue = Value<T, NoLock>;

// Array<T, L> is a fixed-size array of T in shared memory, guarded by a lock
// of type L (RLock by default; Lock; or NoLock). Elements are zero-filled
// (all bytes zero) or copied from a range.
template <class T, class L = RLock>
class Array {
  static_assert(std::is_trivially_copyable_v<T>,
                "mp::Array<T> needs a trivially copyable T: its bytes are shared");

 public:
  using value_type = T;
  using iterator = T*;
  using const_iterator = const T*;

  // Array(n, lock) is n zero-filled elements.
  explicit Array(std::size_t n, L lock = L()) : lock_(std::move(lock)) { allocate(n); }

  // Array(range, lock) copies the elements of `range` into a new array.
  // (Copying an Array itself copies the handle: both refer to the same
  // shared elements, whatever its constness.)
  template <std::ranges::input_range R>
  requires std::convertible_to<std::ranges::range_reference_t<R>, T> &&
      (!std::is_base_of_v<Array, std::remove_cvref_t<R>>)
      // (The requires-clause keeps Array's own copy and move constructors; clang-tidy 14
      // does not read it.)
      // NOLINTNEXTLINE(bugprone-forwarding-reference-overload)
      explicit Array(R&& range, L lock = L())
      : lock_(std::move(lock)) {
    if constexpr (std::ranges::sized_range<R> && std::ranges::forward_range<R>) {
      allocate(static_cast<std::size_t>(std::ranges::size(range)));
      std::ranges::copy(range, data_);
    } else {
      std::vector<T> items;
      for (auto&& x : range) items.push_back(static_cast<T>(x));
      allocate(items.size());
      std::ranges::copy(items, data_);
    }
  }
  Array(std::initializer_list<T> items, L lock = L()) : lock_(std::move(lock)) {
    allocate(items.size());
    std::ranges::copy(items, data_);
  }

  // size() is the number of elements.
  std::size_t size() const noexcept { return size_; }

  // at(i) is element i, bounds-checked (mp::IndexError). Unguarded.
  T& at(std::size_t i) const {
    if (i >= size_) {
      throw IndexError(fmt::format("array index {} out of range (size {})", i, size_));
    }
    return data_[i];
  }
  // operator[](i) is element i, unchecked and unguarded.
  T& operator[](std::size_t i) const noexcept { return data_[i]; }

  // data() / begin() / end() / span(): the elements, unguarded.
  T* data() const noexcept { return data_; }
  T* begin() const noexcept { return data_; }
  T* end() const noexcept { return data_ + size_; }
  std::span<T> span() const noexcept { return {data_, size_}; }
  operator std::span<T>() const noexcept { return span(); }

  // to_vector() copies the elements out under the lock.
  std::vector<T> to_vector() const {
    [[maybe_unused]] auto guard = locked();
    return std::vector<T>(data_, data_ + size_);
  }

  // get_lock() is the lock that guards the array (not for RawArray).
  L& get_lock() noexcept requires internal::kHasLock<L> { return lock_; }

 private:
  void allocate(std::size_t n) {
    if (n > (SIZE_MAX / 2) / sizeof(T)) throw ValueError("array size too large");
    region_ = std::make_shared<internal::SharedRegion>(std::max<std::size_t>(n, 1) * sizeof(T));
    data_ = static_cast<T*>(region_->data());  // zero bytes from mmap
    size_ = n;
  }
  auto locked() const { return internal::hold(lock_); }
  friend struct codec_traits<Array>;
  Array(std::shared_ptr<internal::SharedRegion> region, std::size_t n, L lock)
      : region_(std::move(region)),
        data_(static_cast<T*>(region_->data())),
        size_(n),
        lock_(std::move(lock)) {}

  std::shared_ptr<internal::SharedRegion> region_;
  T* data_ = nullptr;
  std::size_t size_ = 0;
  mutable L lock_;
};

// Array(range) and Array(range, lock) deduce T from the range's elements.
template <std::ranges::input_range R>
Array(R&&) -> Array<std::ranges::range_value_t<R>>;
template <std::ranges::input_range R, class L>
Array(R&&, L) -> Array<std::ranges::range_value_t<R>, L>;

// RawArray<T> is an Array without a lock (multiprocessing.RawArray).
template <class T>
using RawArray = Array<T, NoLock>;

// SharedMemory is a named shared memory segment (CPython's
// multiprocessing.shared_memory.SharedMemory), attachable by name from any
// process, related or not.
//
// Names are given and reported without the leading '/' (CPython's `name`);
// a leading '/' is accepted. Move-only: one handle owns one mapping.
class SharedMemory {
 public:
  // SharedMemory(name, create, size) is CPython's constructor: with create,
  // makes a new segment of `size` bytes (a unique name is generated when
  // `name` is nullopt); without, attaches to `name` (size is ignored).
  // Raises mp::ValueError when creating with size <= 0 ("'size' must be a
  // positive number different from zero") or attaching without a name,
  // mp::FileExistsError when the name exists already, mp::FileNotFoundError
  // when attaching to a missing name. Creating reserves the segment's pages:
  // when /dev/shm has no room for them it raises std::system_error (ENOSPC)
  // and leaves no name behind, rather than a later write dying of SIGBUS.
  SharedMemory(std::optional<std::string> name, bool create, std::ptrdiff_t size = 0);

  // create(size) / create(name, size) make a new segment; attach(name) opens
  // an existing one.
  static SharedMemory create(std::ptrdiff_t size) { return {std::nullopt, true, size}; }
  static SharedMemory create(std::string name, std::ptrdiff_t size) {
    return {std::move(name), true, size};
  }
  static SharedMemory attach(std::string name) { return {std::move(name), false, 0}; }

  // The destructor close()s; in the creating process, the creating handle
  // also unlinks the name unless unlink() was called already or
  // set_unlink_on_destroy(false) handed the name over.
  ~SharedMemory();
  SharedMemory(SharedMemory&& other) noexcept;
  SharedMemory& operator=(SharedMemory&& other) noexcept;
  SharedMemory(const SharedMemory&) = delete;
  SharedMemory& operator=(const SharedMemory&) = delete;

  // name() is the segment's name, without the leading '/'.
  const std::string& name() const noexcept { return name_; }
  // size() is the segment's size in bytes.
  std::size_t size() const noexcept { return size_; }
  // buf() / data() are the mapped bytes; mp::ValueError after close().
  std::span<std::byte> buf() const;
  std::byte* data() const { return buf().data(); }

  // close() unmaps this handle's view; the segment lives on. Idempotent.
  void close() noexcept;
  // unlink() removes the name (mappings stay valid until closed); a second
  // unlink of the same name raises mp::FileNotFoundError.
  void unlink();

  // set_unlink_on_destroy(false) keeps the name alive after this handle's
  // destruction (someone else will unlink it); true makes any handle, even an
  // attached one, unlink it on destruction (in this process).
  void set_unlink_on_destroy(bool unlink) noexcept { unlink_on_destroy_ = unlink; }
  bool unlink_on_destroy() const noexcept { return unlink_on_destroy_; }

 private:
  void destroy() noexcept;

  std::string name_;
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  pid_t owner_pid_ = 0;  // the process whose destruction of this handle unlinks
  bool unlink_on_destroy_ = false;
  bool unlinked_ = false;
};

// Travelling (mp/context.h): a Value or an Array passed to a child of any
// start method arrives as a handle to the same shared memory and the same
// lock. A SharedMemory travels by name (anywhere: it is named), and the
// copy attaches to the segment without unlinking it.
template <class T, class L>
struct codec_traits<Value<T, L>> {
  static void encode(Encoder& e, const Value<T, L>& v) {
    internal::write_region(e, *v.region_, "mp::Value");
    e.write(v.lock_);
  }
  static Value<T, L> decode(Decoder& d) {
    auto region = internal::read_shared_region(d, sizeof(T));
    L lock = d.read<L>();
    return Value<T, L>(std::move(region), std::move(lock));
  }
};

template <class T, class L>
struct codec_traits<Array<T, L>> {
  static void encode(Encoder& e, const Array<T, L>& a) {
    internal::write_region(e, *a.region_, "mp::Array");
    e.write_size(a.size_);
    e.write(a.lock_);
  }
  static Array<T, L> decode(Decoder& d) {
    auto region = internal::read_shared_region(d, 1);
    std::uint64_t n;
    d.read_raw(&n, sizeof n);
    if (n > region->size() / sizeof(T)) {
      throw CodecError(
          fmt::format("mp codec: an Array of {} elements in a {}-byte region", n, region->size()));
    }
    L lock = d.read<L>();
    return Array<T, L>(std::move(region), static_cast<std::size_t>(n), std::move(lock));
  }
};

template <>
struct codec_traits<SharedMemory> {
  static void encode(Encoder& e, const SharedMemory& m) { e.write(m.name()); }
  static SharedMemory decode(Decoder& d) { return SharedMemory::attach(d.read<std::string>()); }
};

}  // namespace mp
