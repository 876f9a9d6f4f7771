// mp/internal/task.h — a Process target as data, for the spawn and
// forkserver start methods: a function (or a stateless callable type) and
// its arguments, encoded by mp/codec.h, rebuilt in a child that is a new
// image of the same program.
//
// Internal. Process's constructor records, beside the closure it runs under
// fork, a writer for this form when the target can take it (Travels). The
// writer appends the function's address (translated in the child by
// internal/modules.h) and the arguments, and returns the address of the
// matching launch<> instantiation, which the child calls to decode them.
//
// Arguments given as std::ref(x) travel as x itself: the child decodes its
// own x and passes it by reference. That is how a move-only object (Queue,
// Connection, SharedMemory) reaches a target taking it by reference.
#pragma once

#include <concepts>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include "mp/codec.h"
#include "mp/internal/modules.h"

namespace mp::internal {

template <class T>
struct unwrap_ref {
  using type = T;
};
template <class T>
struct unwrap_ref<std::reference_wrapper<T>> {
  using type = std::remove_const_t<T>;
};
// A C string travels as a std::string (as a Pool task's argument does).
template <>
struct unwrap_ref<const char*> {
  using type = std::string;
};
template <>
struct unwrap_ref<char*> {
  using type = std::string;
};
// stored_arg_t<A>: what the child decodes and holds for an argument A.
template <class A>
using stored_arg_t = typename unwrap_ref<A>::type;

template <class F>
inline constexpr bool is_function_pointer =
    std::is_pointer_v<F>&& std::is_function_v<std::remove_pointer_t<F>>;

// stateless_callable: a class the child can make anew (a lambda without
// captures, a function object without state).
template <class F>
inline constexpr bool stateless_callable =
    std::is_class_v<F>&& std::is_empty_v<F>&& std::is_default_constructible_v<F>;

template <class F>
inline constexpr bool travelling_function = is_function_pointer<F> || stateless_callable<F>;

// Travels<F, Args...>: Process(F, Args...) can start with every method.
template <class F, class... Args>
concept Travels = travelling_function<F> &&(Transportable<stored_arg_t<Args>>&&...) &&
                  std::invocable<F&, stored_arg_t<Args>&...>;

template <class T>
const T& unwrap(const T& v) noexcept {
  return v;
}
template <class T>
const T& unwrap(const std::reference_wrapper<T>& r) noexcept {
  return r.get();
}
inline std::string_view unwrap(const char* s) noexcept { return s; }

template <class Fn, class... Args>
std::function<void()> launch(Decoder& d) {
  Fn fn{};
  if constexpr (is_function_pointer<Fn>) {
    fn = relocate(reinterpret_cast<Fn>(static_cast<std::uintptr_t>(d.read<std::uint64_t>())));
  }
  using Stored = std::tuple<stored_arg_t<Args>...>;
  // Braced initialisation decodes the arguments in order.
  auto args = std::make_shared<Stored>(Stored{d.read<stored_arg_t<Args>>()...});
  return [fn, args]() mutable { std::apply(fn, *args); };
}

// write_task appends the target's travelling form and returns its launcher.
template <class Fn, class... Args>
std::uintptr_t write_task(Encoder& e, const Fn& fn, const std::tuple<Args...>& args) {
  if constexpr (is_function_pointer<Fn>) {
    e.write(static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(fn)));
  }
  std::apply([&](const auto&... a) { (e.write(unwrap(a)), ...); }, args);
  return reinterpret_cast<std::uintptr_t>(&launch<Fn, Args...>);
}

}  // namespace mp::internal
