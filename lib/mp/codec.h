// mp/codec.h — how a value becomes bytes and back (the `reduction.py` of mp).
//
// Everything that crosses a process boundary in mp (Queue items, Connection
// messages, Pool tasks and results) is turned into bytes by this codec and
// rebuilt from them on the other side:
//
//   std::string bytes = mp::encode(std::map<std::string, int>{{"a", 1}});
//   auto m = mp::decode<std::map<std::string, int>>(bytes);
//
// CPython pickles arbitrary objects; mp encodes a *type-checked* subset of
// C++ values, and a type outside that subset does not compile:
//
//   * bool, arithmetic types and enums;
//   * trivially copyable types (user structs of plain fields, std::chrono
//     durations...), copied with one memcpy — for an aggregate struct, only
//     if no field at any depth refers to memory (see "Types that never
//     travel" below);
//   * std::basic_string, std::string_view (encoded as a string; decoding a
//     top-level string_view with mp::decode returns a view into the input
//     bytes), std::vector, std::deque, std::list, std::array, std::pair,
//     std::tuple, std::optional, std::variant (and std::monostate),
//     std::map, std::multimap, std::unordered_map, std::set, std::multiset,
//     std::unordered_set — nested in any combination;
//   * any other type through the one extension point, mp::codec_traits<T>
//     (see below and examples/codec_custom_type.cc).
//
// Types that never travel. Never encodable, even though some are
// trivially copyable: raw and member pointers, C arrays at top level (use
// std::array), std::span and std::reference_wrapper (they refer to memory
// of the sending process). The same goes for a trivially copyable
// aggregate struct (any depth: nested structs, bases, std::array, C-array
// and std::optional/pair/tuple/variant fields) holding
//   - a pointer or member pointer, a reference (T&, const T&, T&&), a
//     std::string_view, std::span or std::reference_wrapper: the memcpy
//     would carry an address into the sender's memory;
//   - a field whose type has its own codec_traits: the memcpy would bypass
//     them (a user's traits always win).
// What to do instead: give the struct a codec_traits specialisation that
// writes what the pointer or view refers to (as a std::string, a
// std::vector...), or send owning types in the first place. The fields are visited by aggregate
// initialisation (no reflection), which cannot see the fields of
//   - a class that is not an aggregate (private fields, constructors) or a
//     union: it stays memcpy'd as it is, its author vouches for its fields
//     (std::chrono::duration is one); give it codec_traits if it holds a
//     pointer;
//   - a struct beyond its first 4096 leaf fields (each C-array element is
//     one), or one that cannot be aggregate-initialised from 64 fields or
//     fewer: the rest, or all, is not checked.
// A view cannot travel through a transport either: Queue, Pool (task
// arguments, map items and results), Connection and Process (travelling
// arguments) take `mp::Transportable<T>` types, i.e. Encodable and no
// std::string_view anywhere in std containers, since a decoded view would
// point into a buffer the transport reuses (the second Queue::get() would
// overwrite the first's view). Send std::string.
// `mp::Encodable<T>` tells whether T is encodable; mp::encode, mp::decode
// and everything in mp that sends values fail to compile on a type that is
// not, all through one check: a static_assert inside
// `mp::codec_detail::NotEncodable<X>` where X is the innermost type at fault
// (`NotEncodable<Foo>` for a std::vector<Foo>), or
// `NotEncodable<S, F>` where S is a memcpy'd struct (the outermost one) and
// F the type of its first field at fault (`NotEncodable<Job, const char*>`
// for a std::vector<Job>).
//
// Decoding contract: the decoder bounds-checks every read. Truncated input,
// trailing bytes, an out-of-range variant index or optional tag, a bool that
// is neither 0 nor 1, an element count larger than the remaining input could
// hold, or duplicate keys in a unique-key map or set raise mp::CodecError —
// never undefined behaviour, never a huge allocation on a corrupt length.
// One limit: a user struct copied by memcpy gets its bytes back verbatim, so
// if such a struct holds a bool or an enum without fixed underlying type,
// corrupt bytes can give it an out-of-range value; specialise codec_traits
// for such a struct if its input may be corrupt.
//
// Wire format (not a persistence format): values are written in the host's
// native byte order and layout, for processes of the same program on the
// same machine (mp's fork model: same image, same ABI). Sizes and counts are
// 64-bit, so no value has a 2 GiB limit. Trivially copyable T: sizeof(T)
// raw bytes. bool: one byte. Strings and contiguous vectors of trivially
// copyable elements without user codec_traits: u64 count, then the
// elements in one memcpy. Other
// sequences and maps: u64 count, then each element (a map's as key, value).
// optional: one tag byte (0 or 1), then the value. variant: the index (one
// byte if it has at most 255 alternatives, else four), then the alternative.
// pair / tuple / array of non-trivial elements: the elements in order.
//
// Why a codec of mp's own, not cereal or msgpack-cxx (both in Debian; we
// read both before writing this one and benchmarked neither):
//   * msgpack-cxx writes a self-describing format: a type tag on every
//     value, and unpacking builds a msgpack::object tree that is then
//     converted, a second pass and a copy. mp's two ends are the same
//     binary, so tags and that pass buy nothing and cost time.
//   * cereal's binary archive goes through std::ostream/istream. It has no
//     memcpy path for user structs: each needs a serialize() function. A
//     corrupt element count makes it resize before reading, so bad bytes
//     can mean a huge allocation.
//   * In neither does the compile error for a type that cannot be encoded
//     name the innermost type at fault. Their static_asserts are fixed
//     strings, so the type has to be dug out of the instantiation trace.
// The format mp needs is simple: native layout, 64-bit counts, one memcpy
// for trivially copyable data. Writing it was less code than wrapping either
// library to get those guarantees.
//
// Extension point. To make a type encodable, specialise mp::codec_traits for
// it (in namespace mp, before the first use that checks Encodable<T>):
//
//   template <> struct mp::codec_traits<Point3> {
//     static void encode(mp::Encoder& e, const Point3& p) {
//       e.write(p.name); e.write(p.xyz);
//     }
//     static Point3 decode(mp::Decoder& d) {
//       auto name = d.read<std::string>();
//       auto xyz = d.read<std::array<double, 3>>();
//       return Point3{std::move(name), xyz};
//     }
//   };
//
// encode() may call Encoder::write(value) for any encodable value and
// Encoder::write_raw(p, n) for bytes; decode() reads the same things back in
// the same order with Decoder::read<T>() / read_raw() / read_view(); it must
// consume exactly what encode() wrote. An optional
// `static constexpr std::size_t min_size` states the fewest bytes encode()
// ever writes; it lets the decoder reject impossible element counts sooner
// (the default assumes at least one byte). A specialisation also overrides
// the built-in handling of a type (e.g. to validate a trivially copyable
// struct's fields) everywhere: std::vector<T> and std::array<T, N> call it
// for each element (the one-memcpy block path is only for types without a
// specialisation), and so do Queue items and Pool.map items.
//
// Thread safety: Encoder and Decoder are plain single-threaded cursors;
// encode()/decode() are reentrant.
#pragma once

#include <fmt/core.h>

#include <algorithm>
#include <array>
#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "mp/errors.h"

namespace mp {

class Encoder;
class Decoder;

// codec_traits<T> is the extension point: specialise it with
//   static void encode(mp::Encoder&, const T&);
//   static T decode(mp::Decoder&);
// (and optionally `static constexpr std::size_t min_size`). The primary
// template implements the built-in types listed at the top of this file and
// is unusable for anything else.
template <class T>
struct codec_traits;

// Encodable<T> holds when values of type T (cv-qualifiers ignored) can be
// encoded and decoded: a built-in type or one with a codec_traits
// specialisation.
template <class T>
concept Encodable = std::is_object_v<T> && !std::is_array_v<T> &&
                    requires(Encoder & e, Decoder& d, const std::remove_cv_t<T>& v) {
  codec_traits<std::remove_cv_t<T>>::encode(e, v);
  { codec_traits<std::remove_cv_t<T>>::decode(d) } -> std::same_as<std::remove_cv_t<T>>;
};

namespace codec_detail {

template <class T>
inline constexpr bool always_false = false;

template <class T>
inline constexpr bool is_view_like = false;
template <class T, std::size_t N>
inline constexpr bool is_view_like<std::span<T, N>> = true;
template <class C, class Tr>
inline constexpr bool is_view_like<std::basic_string_view<C, Tr>> = true;
template <class T>
inline constexpr bool is_view_like<std::reference_wrapper<T>> = true;

// Standard templates with an invariant of their own (an engaged flag, an
// index) go through their structural codec even where the library makes
// them trivially copyable, so corrupt bytes are detected.
template <class T>
inline constexpr bool is_structured_std = false;
template <class T>
inline constexpr bool is_structured_std<std::optional<T>> = true;
template <class... Ts>
inline constexpr bool is_structured_std<std::variant<Ts...>> = true;
template <class A, class B>
inline constexpr bool is_structured_std<std::pair<A, B>> = true;
template <class... Ts>
inline constexpr bool is_structured_std<std::tuple<Ts...>> = true;
template <class T, std::size_t N>
inline constexpr bool is_structured_std<std::array<T, N>> = true;

// has_user_traits<T>: T has a codec_traits specialisation of the user's,
// which then always decides how a T is written, inside containers too.
template <class T>
inline constexpr bool has_user_traits = !requires {
  typename codec_traits<T>::builtin_tag;
};

// ---- the fields of a memcpy'd struct ---------------------------------------
//
// A trivially copyable aggregate is memcpy'd only if none of its fields, at
// any depth, is a pointer, a reference, a view (std::string_view, std::span,
// std::reference_wrapper) or a type with a user codec_traits (which a memcpy
// of the owner would bypass). The fields are visited without reflection, by
// aggregate initialisation from probe objects that convert to any type a
// constraint allows: `T{probe, probe, ...}` is well-formed only if every
// field accepts a probe. Probes never convert to a non-empty aggregate, so
// brace elision carries them into nested structs, std::array and C arrays,
// down to the leaves, and every leaf is checked wherever it sits (bases of
// an aggregate included). Boost.PFR was considered: it reflects through
// structured bindings, which are a hard error (not a testable condition) on
// an aggregate with a base that has fields, and its field count is wrong
// for C array fields, so it would turn structs mp encodes today into build
// errors. What this check cannot see is documented at the top of the file.

inline constexpr std::size_t kMaxCheckedFields = 4096;  // leaves, each C-array element counts
inline constexpr std::size_t kNoFieldCount = static_cast<std::size_t>(-1);

template <class U>
concept probe_leaf = !std::is_aggregate_v<U> || std::is_union_v<U> || std::is_empty_v<U> ||
                     (std::is_class_v<U> && has_user_traits<std::remove_cv_t<U>>);

template <class U>
constexpr bool field_ok();
template <class U>
concept ok_field = field_ok<std::remove_cv_t<U>>();

// any_field: any leaf (counts the leaves).
struct any_field {
  template <class U>
  requires probe_leaf<U>
  operator U&() const;
};
// An aggregate with user codec_traits is a leaf that the probes below must
// refuse without brace elision into its fields (which would accept it):
// GCC elides past a volatile-returning conversion, Clang past a deleted
// one; offered both, neither compiler elides.
template <class U>
concept refused_aggregate =
    std::is_class_v<U> && std::is_aggregate_v<U> && has_user_traits<std::remove_cv_t<U>>;
#define MP_CODEC_REFUSE_AGGREGATE_WITH_TRAITS \
  template <class U>                          \
  requires refused_aggregate<U>               \
  operator volatile U&() const;               \
  template <class U>                          \
  requires refused_aggregate<U>               \
  operator U&() const = delete;
// lvalue_field: an acceptable leaf by lvalue (refuses T&& fields).
struct lvalue_field {
  MP_CODEC_REFUSE_AGGREGATE_WITH_TRAITS
  template <class U>
  requires(probe_leaf<U>&& ok_field<U>) operator U&() const;
};
// prvalue_field: an acceptable leaf by prvalue (refuses T& fields).
struct prvalue_field {
  MP_CODEC_REFUSE_AGGREGATE_WITH_TRAITS
  template <class U>
  requires(probe_leaf<U>&& ok_field<U>) operator U() const;
};
#undef MP_CODEC_REFUSE_AGGREGATE_WITH_TRAITS
// const_ref_field: binds only to a const T& field.
struct const_ref_field {
  template <class U>
  requires std::is_const_v<U>
  operator U&() const;
};

template <class T, class Probe, std::size_t... I, std::size_t... J>
constexpr bool init_probes(std::index_sequence<I...>, std::index_sequence<J...>) {
  return requires { T{((void)I, any_field{})..., Probe{}, ((void)J, any_field{})...}; };
}
// init_with<T, N, Probe, K>: T{any_field x K, Probe, any_field x (N-K-1)}.
template <class T, std::size_t N, class Probe = any_field, std::size_t K = 0>
constexpr bool init_with() {
  if constexpr (N == 0) {
    return requires { T{}; };
  } else {
    return init_probes<T, Probe>(std::make_index_sequence<K>{},
                                 std::make_index_sequence<N - K - 1>{});
  }
}
template <class T, class Probe, std::size_t... I>
constexpr bool init_all(std::index_sequence<I...>) {
  return requires { T{((void)I, Probe{})...}; };
}

template <class T, std::size_t Lo, std::size_t Hi>  // Lo leaves initialise T, Hi do not
constexpr std::size_t bisect_fields() {
  if constexpr (Hi - Lo <= 1) {
    return Lo;
  } else {
    constexpr std::size_t mid = Lo + (Hi - Lo) / 2;
    if constexpr (init_with<T, mid>())
      return bisect_fields<T, mid, Hi>();
    else
      return bisect_fields<T, Lo, mid>();
  }
}
template <class T, std::size_t Lo, std::size_t Step>  // Lo leaves initialise T
constexpr std::size_t grow_fields() {
  constexpr std::size_t hi = Lo + Step;
  if constexpr (hi > kMaxCheckedFields) {
    if constexpr (init_with<T, kMaxCheckedFields>())
      return kMaxCheckedFields;
    else
      return bisect_fields<T, Lo, kMaxCheckedFields>();
  } else if constexpr (init_with<T, hi>()) {
    return grow_fields<T, hi, Step * 2>();
  } else {
    return bisect_fields<T, Lo, hi>();
  }
}
// A field without a default (a reference) makes short lists ill-formed: the
// leaf counts that initialise T are an interval; find its start first.
template <class T, std::size_t N>
constexpr std::size_t first_fitting_count() {
  if constexpr (N > 64)
    return kNoFieldCount;
  else if constexpr (init_with<T, N>())
    return N;
  else
    return first_fitting_count<T, N + 1>();
}
template <class T>
constexpr std::size_t count_fields() {
  constexpr std::size_t first = first_fitting_count<T, 0>();
  if constexpr (first == kNoFieldCount)
    return kNoFieldCount;
  else
    return grow_fields<T, first, 1>();
}

// visited_struct<T>: a memcpy candidate whose fields this check can see.
template <class T>
concept visited_struct = std::is_class_v<T> && std::is_aggregate_v<T> && !std::is_union_v<T> &&
                         std::is_trivially_copyable_v<T> && !std::is_empty_v<T>;

template <class T>
inline constexpr std::size_t field_count = count_fields<T>();

// first_const_ref<T, N>: the first leaf that is a const T& (N if none).
template <class T, std::size_t N, std::size_t K = 0>
constexpr std::size_t first_const_ref() {
  if constexpr (K >= N)
    return N;
  else if constexpr (init_with<T, N, const_ref_field, K>())
    return K;
  else
    return first_const_ref<T, N, K + 1>();
}

template <class T>
constexpr bool fields_ok() {
  constexpr std::size_t n = field_count<T>;
  if constexpr (n == kNoFieldCount) {
    return true;  // not visited (see the top of the file)
  } else {
    const bool leaves = init_all<T, lvalue_field>(std::make_index_sequence<n>{}) &&
                        init_all<T, prvalue_field>(std::make_index_sequence<n>{});
    if constexpr (std::is_copy_assignable_v<T>) {
      return leaves;  // a reference field would delete the assignment
    } else {
      return leaves && first_const_ref<T, n>() == n;
    }
  }
}

template <class T>
inline constexpr bool fields_ok_v = fields_ok<T>();

template <class T>
struct std_parts_ok : std::true_type {};
template <class T>
struct std_parts_ok<std::optional<T>> : std::bool_constant<field_ok<T>()> {};
template <class A, class B>
struct std_parts_ok<std::pair<A, B>> : std::bool_constant<field_ok<A>() && field_ok<B>()> {};
template <class... Ts>
struct std_parts_ok<std::tuple<Ts...>> : std::bool_constant<(field_ok<Ts>() && ...)> {};
template <class... Ts>
struct std_parts_ok<std::variant<Ts...>> : std::bool_constant<(field_ok<Ts>() && ...)> {};
template <class T, std::size_t N>
struct std_parts_ok<std::array<T, N>> : std::bool_constant<field_ok<T>()> {};

// field_ok<U>: a field of type U may be memcpy'd with its owner. (A
// decision list, in order: several branches say no.)
// NOLINTBEGIN(bugprone-branch-clone)
template <class U>
constexpr bool field_ok() {
  using V = std::remove_cv_t<U>;
  if constexpr (std::is_reference_v<V> || std::is_pointer_v<V> || std::is_member_pointer_v<V> ||
                std::is_null_pointer_v<V> || is_view_like<V>) {
    return false;
  } else if constexpr (std::is_array_v<V>) {
    return field_ok<std::remove_extent_t<V>>();
  } else if constexpr (has_user_traits<V>) {
    return false;
  } else if constexpr (std::is_class_v<V> && std_parts_ok<V>::value == false) {
    return false;
  } else if constexpr (visited_struct<V>) {
    return fields_ok_v<V>;
  } else {
    return true;
  }
}
// NOLINTEND(bugprone-branch-clone)

// deep_ok<T>: T holds no pointer, reference or view at any depth that this
// check can see.
template <class T>
constexpr bool deep_ok() {
  if constexpr (visited_struct<T>)
    return fields_ok_v<T>;
  else
    return true;
}

template <class T>
constexpr bool memcpyable_v() {
  if constexpr (!(std::is_trivially_copyable_v<T> && !std::is_const_v<T> &&
                  !std::is_volatile_v<T> && !std::is_same_v<T, bool> && !std::is_pointer_v<T> &&
                  !std::is_member_pointer_v<T> && !std::is_array_v<T> &&
                  !std::is_null_pointer_v<T> && !is_view_like<T> && !is_structured_std<T> &&
                  (std::is_arithmetic_v<T> || std::is_enum_v<T> || std::is_class_v<T> ||
                   std::is_union_v<T>))) {
    return false;
  } else {
    return deep_ok<T>();
  }
}

// memcpyable<T>: encoded as its sizeof(T) raw bytes (unless a user's
// codec_traits<T> says otherwise: see plain_memcpy).
template <class T>
inline constexpr bool memcpyable = memcpyable_v<T>();

// plain_memcpy<T>: a T may be copied in bulk (a vector's or array's block,
// a ring slot): built-in memcpy type and no user codec_traits.
template <class T>
inline constexpr bool plain_memcpy = memcpyable<T> && !has_user_traits<T>;

// Element types whose storage may be filled by plain char-range assignment.
template <class T>
inline constexpr bool byte_like =
    std::is_same_v<T, char> || std::is_same_v<T, signed char> || std::is_same_v<T, unsigned char> ||
    std::is_same_v<T, std::byte> || std::is_same_v<T, char8_t>;

// builtin<T> carries the codec of each built-in type. `supported` says
// whether T is built-in *and* all its parts are encodable.
template <class T>
struct builtin {
  static constexpr bool supported = memcpyable<T> || std::is_same_v<T, bool>;
};

[[noreturn, gnu::cold, gnu::noinline]] inline void fail(std::string what) {
  throw CodecError("mp codec: " + std::move(what));
}

// type_name<T>() is the compiler's spelling of T, for error messages.
template <class T>
constexpr std::string_view type_name() {
  std::string_view f = __PRETTY_FUNCTION__;
  auto start = f.find("T = ");
  if (start == std::string_view::npos) return "?";
  start += 4;
  auto end = f.find_first_of(";]", start);
  return f.substr(start, end - start);
}

template <class T>
constexpr std::size_t min_size();

}  // namespace codec_detail

// Encoder appends encoded values to a caller-owned std::string.
// Not copyable; it only refers to the buffer, which must outlive it.
class Encoder {
 public:
  // Encoder(out) appends to `out`, keeping what `out` already holds.
  explicit Encoder(std::string& out) noexcept : out_(&out) {}
  Encoder(const Encoder&) = delete;
  Encoder& operator=(const Encoder&) = delete;

  // write(v) appends the encoding of v.
  template <class T>
  void write(const T& v);

  // write_raw(p, n) appends n bytes from p verbatim.
  void write_raw(const void* p, std::size_t n) { out_->append(static_cast<const char*>(p), n); }

  // write_size(n) appends a 64-bit count or length.
  void write_size(std::size_t n) {
    const std::uint64_t v = n;
    write_raw(&v, sizeof v);
  }

  // buffer() is the string being appended to.
  std::string& buffer() noexcept { return *out_; }

 private:
  std::string* out_;
};

// Decoder reads encoded values from a byte range it does not own, checking
// every read against the end of the range: reading past it, or reading
// bytes that are not a valid encoding, throws mp::CodecError.
class Decoder {
 public:
  explicit Decoder(std::string_view bytes) noexcept
      : p_(bytes.data()), end_(bytes.data() + bytes.size()) {}
  explicit Decoder(std::span<const std::byte> bytes) noexcept
      : p_(reinterpret_cast<const char*>(bytes.data())), end_(p_ + bytes.size()) {}
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;

  // read<T>() decodes the next value as a T.
  template <class T>
  T read();

  // read_raw(p, n) copies the next n bytes to p.
  void read_raw(void* p, std::size_t n) {
    need(n);
    if (n) std::memcpy(p, p_, n);
    p_ += n;
  }

  // read_view(n) returns the next n bytes as a view into the input.
  std::string_view read_view(std::size_t n) {
    need(n);
    std::string_view v(p_, n);
    p_ += n;
    return v;
  }

  // read_size(min_element_size) reads a 64-bit count and checks that the
  // rest of the input could hold that many elements of at least
  // `min_element_size` bytes each (a zero size is taken as one byte).
  std::size_t read_size(std::size_t min_element_size) {
    std::uint64_t n;
    read_raw(&n, sizeof n);
    const std::size_t per = min_element_size ? min_element_size : 1;
    if (n > remaining() / per) {
      codec_detail::fail(
          fmt::format("corrupt input: count {} of {}-byte elements exceeds the {} bytes left", n,
                      per, remaining()));
    }
    return static_cast<std::size_t>(n);
  }

  // remaining() is the number of bytes not read yet.
  std::size_t remaining() const noexcept { return static_cast<std::size_t>(end_ - p_); }

  // expect_end() throws CodecError unless every byte was read.
  void expect_end() const {
    if (p_ != end_)
      codec_detail::fail(fmt::format("{} bytes left over after the value", remaining()));
  }

 private:
  void need(std::size_t n) const {
    if (n > remaining()) [[unlikely]] {
      codec_detail::fail(
          fmt::format("truncated input: needed {} more bytes, {} left", n, remaining()));
    }
  }

  const char* p_;
  const char* end_;
};

namespace codec_detail {

// ---- culprit<T>: the innermost type that makes T not encodable ----------

template <class T>
struct culprit {
  using type = T;
};
template <class... Ts>
struct first_bad;
template <>
struct first_bad<> {
  using type = void;
};
template <class T, class... Ts>
struct first_bad<T, Ts...> {
  using type =
      std::conditional_t<Encodable<T>, typename first_bad<Ts...>::type, typename culprit<T>::type>;
};
template <class Outer, class... Parts>
struct culprit_of_parts {
  using bad = typename first_bad<Parts...>::type;
  using type = std::conditional_t<std::is_void_v<bad>, Outer, bad>;
};
template <class T, class A>
struct culprit<std::vector<T, A>> : culprit_of_parts<std::vector<T, A>, T> {};
template <class T, class A>
struct culprit<std::deque<T, A>> : culprit_of_parts<std::deque<T, A>, T> {};
template <class T, class A>
struct culprit<std::list<T, A>> : culprit_of_parts<std::list<T, A>, T> {};
template <class T, std::size_t N>
struct culprit<std::array<T, N>> : culprit_of_parts<std::array<T, N>, T> {};
template <class T>
struct culprit<std::optional<T>> : culprit_of_parts<std::optional<T>, T> {};
template <class A, class B>
struct culprit<std::pair<A, B>> : culprit_of_parts<std::pair<A, B>, A, B> {};
template <class... Ts>
struct culprit<std::tuple<Ts...>> : culprit_of_parts<std::tuple<Ts...>, Ts...> {};
template <class... Ts>
struct culprit<std::variant<Ts...>> : culprit_of_parts<std::variant<Ts...>, Ts...> {};
template <class K, class V, class C, class A>
struct culprit<std::map<K, V, C, A>> : culprit_of_parts<std::map<K, V, C, A>, K, V> {};
template <class K, class V, class C, class A>
struct culprit<std::multimap<K, V, C, A>> : culprit_of_parts<std::multimap<K, V, C, A>, K, V> {};
template <class K, class V, class H, class E, class A>
struct culprit<std::unordered_map<K, V, H, E, A>>
    : culprit_of_parts<std::unordered_map<K, V, H, E, A>, K, V> {};
template <class K, class C, class A>
struct culprit<std::set<K, C, A>> : culprit_of_parts<std::set<K, C, A>, K> {};
template <class K, class C, class A>
struct culprit<std::multiset<K, C, A>> : culprit_of_parts<std::multiset<K, C, A>, K> {};
template <class K, class H, class E, class A>
struct culprit<std::unordered_set<K, H, E, A>>
    : culprit_of_parts<std::unordered_set<K, H, E, A>, K> {};

// NotEncodable<X> is where a use of a type that cannot travel stops the
// build; X (in the compiler's "In instantiation of NotEncodable<X>") names
// it. NotEncodable<S, F>: the memcpy'd struct S holds a field of type F (a
// pointer, reference, view, or a type with its own codec_traits).
template <class X, class Field = void>
struct NotEncodable {
  static_assert(
      !std::is_void_v<Field> || always_false<X>,
      "mp codec: this type cannot travel (see NotEncodable<...> above for which). "
      "Encodable are arithmetic types, enums, trivially copyable structs without "
      "pointer, reference or view fields, std strings, containers, "
      "pair/tuple/optional/variant of encodable types, and any type with an "
      "mp::codec_traits<T> specialisation (see mp/codec.h). Pointers, C arrays, std::span "
      "and std::reference_wrapper are never encodable, and a view (std::string_view) "
      "cannot travel through a Queue, Pool, Connection or Process: use std::string.");
  static_assert(std::is_void_v<Field> || always_false<X>,
                "mp codec: this struct is memcpy'd and holds a field that cannot travel (see "
                "NotEncodable<Struct, Field> above: a pointer, reference, view or span refers to "
                "the sender's memory; a field type with its own mp::codec_traits would be "
                "bypassed). Use owning types (std::string, std::vector) or give the struct an "
                "mp::codec_traits<T> specialisation (see mp/codec.h).");
  static constexpr bool value = false;
};

// ---- naming the field at fault in a memcpy'd struct -----------------------

enum class FieldFault { kType, kLvalueRef, kRvalueRef, kConstRef };

struct field_is_fine {};
template <class Owner, class U, FieldFault F>
struct field_fault {
  using bad =
      std::conditional_t<F == FieldFault::kType, U,
                         std::conditional_t<F == FieldFault::kLvalueRef, U&,
                                            std::conditional_t<F == FieldFault::kRvalueRef, U&&,
                                                               const std::remove_const_t<U>&>>>;
  using type = std::conditional_t<F != FieldFault::kType || !ok_field<U>, NotEncodable<Owner, bad>,
                                  field_is_fine>;
};
// field_reporter: at the leaf at fault, its conversion instantiates
// NotEncodable<Owner, field type>, whose static_assert stops the build.
template <class Owner, FieldFault F>
struct field_reporter {
  template <class U, std::size_t = sizeof(typename field_fault<Owner, U, F>::type)>
  requires probe_leaf<U>
  operator U&() const;
};

template <class T, std::size_t N, class Probe, std::size_t K = 0>
constexpr std::size_t first_refusal() {
  if constexpr (K >= N)
    return N;
  else if constexpr (!init_with<T, N, Probe, K>())
    return K;
  else
    return first_refusal<T, N, Probe, K + 1>();
}

template <class T, class Probe, std::size_t... I, std::size_t... J>
void instantiate_at(std::index_sequence<I...>, std::index_sequence<J...>) {
  (void)sizeof(T{((void)I, any_field{})..., Probe{}, ((void)J, any_field{})...});
}

// report_fields<T>(): stops the build naming T and its first bad field.
template <class T>
void report_fields() {
  constexpr std::size_t n = field_count<T>;
  constexpr std::size_t k_lv = first_refusal<T, n, lvalue_field>();
  constexpr std::size_t k_pr = first_refusal<T, n, prvalue_field>();
  constexpr std::size_t k_cr = std::is_copy_assignable_v<T> ? n : first_const_ref<T, n>();
  constexpr std::size_t k = std::min({k_lv, k_pr, k_cr});
  if constexpr (k < n) {
    constexpr FieldFault fault =
        k == k_lv
            ? (init_with<T, n, prvalue_field, k>() ? FieldFault::kRvalueRef : FieldFault::kType)
        : k == k_pr ? FieldFault::kLvalueRef
                    : FieldFault::kConstRef;
    instantiate_at<T, field_reporter<T, fault>>(std::make_index_sequence<k>{},
                                                std::make_index_sequence<n - k - 1>{});
  } else {
    (void)sizeof(NotEncodable<T>);
  }
}

template <class X>
constexpr void report_not_encodable() {
  if constexpr (visited_struct<X> && !fields_ok_v<X> && !has_user_traits<X>) {
    report_fields<X>();
  } else {
    (void)sizeof(NotEncodable<X>);
  }
}

template <class T>
constexpr void require_encodable() {
  if constexpr (!Encodable<T>) {
    report_not_encodable<typename culprit<T>::type>();  // fails, naming the type
  }
}

// ---- what may travel between processes ---------------------------------------

// view_inside<T>::type: a view that T holds through std containers (void if
// none). Decoding it would point into the receiver's transport buffer.
template <class T>
struct view_inside {
  using type = void;
};
template <class... Ts>
struct first_view {
  using type = void;
};
template <class T, class... Ts>
struct first_view<T, Ts...> {
  using type = std::conditional_t<std::is_void_v<typename view_inside<T>::type>,
                                  typename first_view<Ts...>::type, typename view_inside<T>::type>;
};
template <class C, class Tr>
struct view_inside<std::basic_string_view<C, Tr>> {
  using type = std::basic_string_view<C, Tr>;
};
template <class T, class A>
struct view_inside<std::vector<T, A>> : first_view<T> {};
template <class T, class A>
struct view_inside<std::deque<T, A>> : first_view<T> {};
template <class T, class A>
struct view_inside<std::list<T, A>> : first_view<T> {};
template <class T, std::size_t N>
struct view_inside<std::array<T, N>> : first_view<T> {};
template <class T>
struct view_inside<std::optional<T>> : first_view<T> {};
template <class A, class B>
struct view_inside<std::pair<A, B>> : first_view<A, B> {};
template <class... Ts>
struct view_inside<std::tuple<Ts...>> : first_view<Ts...> {};
template <class... Ts>
struct view_inside<std::variant<Ts...>> : first_view<Ts...> {};
template <class K, class V, class C, class A>
struct view_inside<std::map<K, V, C, A>> : first_view<K, V> {};
template <class K, class V, class C, class A>
struct view_inside<std::multimap<K, V, C, A>> : first_view<K, V> {};
template <class K, class V, class H, class E, class A>
struct view_inside<std::unordered_map<K, V, H, E, A>> : first_view<K, V> {};
template <class K, class C, class A>
struct view_inside<std::set<K, C, A>> : first_view<K> {};
template <class K, class C, class A>
struct view_inside<std::multiset<K, C, A>> : first_view<K> {};
template <class K, class H, class E, class A>
struct view_inside<std::unordered_set<K, H, E, A>> : first_view<K> {};

// require_transportable<T>(): the one check behind Queue, Pool, Connection
// and Process: T is encodable and holds no view that decoding would point
// into a buffer the transport reuses.
template <class T>
constexpr void require_transportable() {
  using U = std::remove_cv_t<T>;
  if constexpr (!Encodable<U>) {
    report_not_encodable<typename culprit<U>::type>();
  } else if constexpr (!std::is_void_v<typename view_inside<U>::type>) {
    (void)sizeof(NotEncodable<typename view_inside<U>::type>);
  }
}

}  // namespace codec_detail

// Transportable<T>: T may go through a Queue, Pool, Connection or Process:
// Encodable, and no std::string_view inside (see the top of the file).
template <class T>
concept Transportable =
    Encodable<T> && std::is_void_v<typename codec_detail::view_inside<std::remove_cv_t<T>>::type>;

namespace codec_detail {

// ---- minimum encoded sizes ---------------------------------------------

template <class T>
concept has_min_size = requires {
  { codec_traits<T>::min_size } -> std::convertible_to<std::size_t>;
};

template <class T>
constexpr std::size_t min_size() {
  if constexpr (has_min_size<T>) {
    return codec_traits<T>::min_size;
  } else if constexpr (requires { builtin<T>::min_size; }) {
    return builtin<T>::min_size;
  } else if constexpr (builtin<T>::supported) {
    return std::is_same_v<T, bool> ? 1 : sizeof(T);
  } else {
    return 1;
  }
}

// ---- sequences ------------------------------------------------------------

template <class Seq>
void encode_elements(Encoder& e, const Seq& s) {
  e.write_size(s.size());
  for (const auto& x : s) e.write(x);
}

template <class C, class Tr, class A>
struct builtin<std::basic_string<C, Tr, A>> {
  static constexpr bool supported = memcpyable<C>;
  static constexpr std::size_t min_size = 8;
  using S = std::basic_string<C, Tr, A>;
  static void encode(Encoder& e, const S& s) {
    e.write_size(s.size());
    e.write_raw(s.data(), s.size() * sizeof(C));
  }
  static S decode(Decoder& d) {
    const std::size_t n = d.read_size(sizeof(C));
    std::string_view bytes = d.read_view(n * sizeof(C));
    if constexpr (sizeof(C) == 1) {
      return S(reinterpret_cast<const C*>(bytes.data()), n);
    } else {
      S s(n, C{});
      if (n) std::memcpy(s.data(), bytes.data(), bytes.size());
      return s;
    }
  }
};

// string_view: written as a string; read back as a view into the input.
template <class Tr>
struct builtin<std::basic_string_view<char, Tr>> {
  static constexpr bool supported = true;
  static constexpr std::size_t min_size = 8;
  using S = std::basic_string_view<char, Tr>;
  static void encode(Encoder& e, S s) {
    e.write_size(s.size());
    e.write_raw(s.data(), s.size());
  }
  static S decode(Decoder& d) {
    std::string_view v = d.read_view(d.read_size(1));
    return S(v.data(), v.size());
  }
};

template <class T, class A>
struct builtin<std::vector<T, A>> {
  static constexpr bool supported = Encodable<T>;
  static constexpr std::size_t min_size = 8;
  using V = std::vector<T, A>;
  static void encode(Encoder& e, const V& v) {
    if constexpr (plain_memcpy<T>) {
      e.write_size(v.size());
      e.write_raw(v.data(), v.size() * sizeof(T));
    } else {
      encode_elements(e, v);
    }
  }
  static V decode(Decoder& d) {
    const std::size_t n = d.read_size(codec_detail::min_size<T>());
    V v;
    if constexpr (plain_memcpy<T> && byte_like<T>) {
      std::string_view bytes = d.read_view(n);
      auto* p = reinterpret_cast<const T*>(bytes.data());
      v.assign(p, p + n);
    } else if constexpr (plain_memcpy<T> && std::is_default_constructible_v<T>) {
      v.resize(n);
      d.read_raw(v.data(), n * sizeof(T));
    } else {
      v.reserve(n);
      for (std::size_t i = 0; i < n; ++i) v.push_back(d.read<T>());
    }
    return v;
  }
};

template <class Seq, class T>
struct builtin_node_sequence {
  static constexpr bool supported = Encodable<T>;
  static constexpr std::size_t min_size = 8;
  static void encode(Encoder& e, const Seq& s) { encode_elements(e, s); }
  static Seq decode(Decoder& d) {
    const std::size_t n = d.read_size(codec_detail::min_size<T>());
    Seq s;
    for (std::size_t i = 0; i < n; ++i) s.push_back(d.read<T>());
    return s;
  }
};
template <class T, class A>
struct builtin<std::deque<T, A>> : builtin_node_sequence<std::deque<T, A>, T> {};
template <class T, class A>
struct builtin<std::list<T, A>> : builtin_node_sequence<std::list<T, A>, T> {};

template <class T, std::size_t N>
struct builtin<std::array<T, N>> {
  static constexpr bool supported = Encodable<T>;
  static constexpr std::size_t min_size = N * codec_detail::min_size<T>();
  using Arr = std::array<T, N>;
  static void encode(Encoder& e, const Arr& a) {
    if constexpr (plain_memcpy<T>) {
      e.write_raw(a.data(), N * sizeof(T));
    } else {
      for (const auto& x : a) e.write(x);
    }
  }
  static Arr decode(Decoder& d) {
    if constexpr (plain_memcpy<T> && std::is_default_constructible_v<T>) {
      Arr a;
      d.read_raw(a.data(), N * sizeof(T));
      return a;
    } else if constexpr (std::is_default_constructible_v<T> && std::is_move_assignable_v<T>) {
      Arr a{};
      for (auto& x : a) x = d.read<T>();
      return a;
    } else {
      return [&]<std::size_t... I>(std::index_sequence<I...>) {
        return Arr{((void)I, d.read<T>())...};  // braced: read in order
      }
      (std::make_index_sequence<N>{});
    }
  }
};

// ---- pair, tuple, optional, variant ----------------------------------------

template <class A, class B>
struct builtin<std::pair<A, B>> {
  static constexpr bool supported = Encodable<A> && Encodable<B>;
  static constexpr std::size_t min_size = codec_detail::min_size<A>() + codec_detail::min_size<B>();
  static void encode(Encoder& e, const std::pair<A, B>& p) {
    e.write(p.first);
    e.write(p.second);
  }
  static std::pair<A, B> decode(Decoder& d) {
    return std::pair<A, B>{d.read<A>(), d.read<B>()};  // braced: read in order
  }
};

template <class... Ts>
struct builtin<std::tuple<Ts...>> {
  static constexpr bool supported = (Encodable<Ts> && ...);
  static constexpr std::size_t min_size = (std::size_t{0} + ... + codec_detail::min_size<Ts>());
  static void encode(Encoder& e, const std::tuple<Ts...>& t) {
    std::apply([&](const auto&... x) { (e.write(x), ...); }, t);
  }
  static std::tuple<Ts...> decode([[maybe_unused]] Decoder& d) {
    return std::tuple<Ts...>{d.read<Ts>()...};  // braced: read in order
  }
};

template <class T>
struct builtin<std::optional<T>> {
  static constexpr bool supported = Encodable<T>;
  static constexpr std::size_t min_size = 1;
  static void encode(Encoder& e, const std::optional<T>& o) {
    const std::uint8_t tag = o.has_value();
    e.write_raw(&tag, 1);
    if (o) e.write(*o);
  }
  static std::optional<T> decode(Decoder& d) {
    std::uint8_t tag;
    d.read_raw(&tag, 1);
    if (tag == 0) return std::nullopt;
    if (tag != 1) fail(fmt::format("corrupt input: optional tag {} (expected 0 or 1)", tag));
    return std::optional<T>(std::in_place, d.read<T>());
  }
};

template <class... Ts>
struct builtin<std::variant<Ts...>> {
  static constexpr bool supported = (Encodable<Ts> && ...);
  using Index = std::conditional_t<(sizeof...(Ts) <= 255), std::uint8_t, std::uint32_t>;
  static constexpr std::size_t min_size =
      sizeof(Index) + std::min({codec_detail::min_size<Ts>()...});
  using V = std::variant<Ts...>;
  static void encode(Encoder& e, const V& v) {
    if (v.valueless_by_exception()) fail("cannot encode a variant that is valueless by exception");
    const Index i = static_cast<Index>(v.index());
    e.write_raw(&i, sizeof i);
    std::visit([&](const auto& x) { e.write(x); }, v);
  }
  template <std::size_t I>
  static V decode_alternative(Decoder& d) {
    return V(std::in_place_index<I>, d.read<std::variant_alternative_t<I, V>>());
  }
  static V decode(Decoder& d) {
    Index i;
    d.read_raw(&i, sizeof i);
    if (i >= sizeof...(Ts)) {
      fail(fmt::format("corrupt input: variant index {} of a variant with {} alternatives", i,
                       sizeof...(Ts)));
    }
    static constexpr auto table = []<std::size_t... I>(std::index_sequence<I...>) {
      return std::array<V (*)(Decoder&), sizeof...(Ts)>{&decode_alternative<I>...};
    }
    (std::index_sequence_for<Ts...>{});
    return table[i](d);
  }
};

// ---- maps and sets ------------------------------------------------------------

template <class M, class K, class V, bool kUnique>
struct builtin_map {
  static constexpr bool supported = Encodable<K> && Encodable<V>;
  static constexpr std::size_t min_size = 8;
  static void encode(Encoder& e, const M& m) {
    e.write_size(m.size());
    for (const auto& [k, v] : m) {
      e.write(k);
      e.write(v);
    }
  }
  static M decode(Decoder& d) {
    const std::size_t n = d.read_size(codec_detail::min_size<K>() + codec_detail::min_size<V>());
    M m;
    if constexpr (requires { m.reserve(n); }) m.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      K k = d.read<K>();
      V v = d.read<V>();
      if constexpr (kUnique) {
        if (!m.emplace(std::move(k), std::move(v)).second)
          fail("corrupt input: duplicate key in a map");
      } else {
        m.emplace(std::move(k), std::move(v));
      }
    }
    return m;
  }
};
template <class S, class K, bool kUnique>
struct builtin_set {
  static constexpr bool supported = Encodable<K>;
  static constexpr std::size_t min_size = 8;
  static void encode(Encoder& e, const S& s) { encode_elements(e, s); }
  static S decode(Decoder& d) {
    const std::size_t n = d.read_size(codec_detail::min_size<K>());
    S s;
    if constexpr (requires { s.reserve(n); }) s.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      if constexpr (kUnique) {
        if (!s.insert(d.read<K>()).second) fail("corrupt input: duplicate element in a set");
      } else {
        s.insert(d.read<K>());
      }
    }
    return s;
  }
};
template <class K, class V, class C, class A>
struct builtin<std::map<K, V, C, A>> : builtin_map<std::map<K, V, C, A>, K, V, true> {};
template <class K, class V, class C, class A>
struct builtin<std::multimap<K, V, C, A>> : builtin_map<std::multimap<K, V, C, A>, K, V, false> {};
template <class K, class V, class H, class E, class A>
struct builtin<std::unordered_map<K, V, H, E, A>>
    : builtin_map<std::unordered_map<K, V, H, E, A>, K, V, true> {};
template <class K, class C, class A>
struct builtin<std::set<K, C, A>> : builtin_set<std::set<K, C, A>, K, true> {};
template <class K, class C, class A>
struct builtin<std::multiset<K, C, A>> : builtin_set<std::multiset<K, C, A>, K, false> {};
template <class K, class H, class E, class A>
struct builtin<std::unordered_set<K, H, E, A>>
    : builtin_set<std::unordered_set<K, H, E, A>, K, true> {};

// ---- scalars ------------------------------------------------------------------

template <class T>
void encode_scalar(Encoder& e, const T& v) {
  if constexpr (std::is_same_v<T, bool>) {
    const std::uint8_t b = v ? 1 : 0;
    e.write_raw(&b, 1);
  } else {
    e.write_raw(std::addressof(v), sizeof(T));
  }
}

template <class T>
T decode_scalar(Decoder& d) {
  if constexpr (std::is_same_v<T, bool>) {
    std::uint8_t b;
    d.read_raw(&b, 1);
    if (b > 1) fail(fmt::format("corrupt input: bool byte {} (expected 0 or 1)", b));
    return b == 1;
  } else if constexpr (std::is_default_constructible_v<T>) {
    T v;
    d.read_raw(std::addressof(v), sizeof(T));
    return v;
  } else {
    std::array<std::byte, sizeof(T)> raw;
    d.read_raw(raw.data(), sizeof(T));
    return std::bit_cast<T>(raw);
  }
}

}  // namespace codec_detail

template <class T>
struct codec_traits {
  using builtin_tag = void;  // marks the primary template (no user specialisation)
  static void encode(Encoder& e, const T& v) requires codec_detail::builtin<T>::supported {
    if constexpr (requires { codec_detail::builtin<T>::encode(e, v); }) {
      codec_detail::builtin<T>::encode(e, v);
    } else {
      codec_detail::encode_scalar(e, v);
    }
  }
  static T decode(Decoder& d) requires codec_detail::builtin<T>::supported {
    if constexpr (requires { codec_detail::builtin<T>::decode(d); }) {
      return codec_detail::builtin<T>::decode(d);
    } else {
      return codec_detail::decode_scalar<T>(d);
    }
  }
};

template <class T>
void Encoder::write(const T& v) {
  codec_detail::require_encodable<T>();
  if constexpr (Encodable<T>) codec_traits<std::remove_cv_t<T>>::encode(*this, v);
}

template <class T>
T Decoder::read() {
  codec_detail::require_encodable<T>();
  if constexpr (Encodable<T>) return codec_traits<std::remove_cv_t<T>>::decode(*this);
}

// BitwiseEncodable<T>: the encoding of a T is exactly its sizeof(T) bytes
// (a built-in memcpy type with no codec_traits specialisation), so a
// transport may copy it in place, e.g. straight into a ring buffer, and
// decode it with a memcpy back, skipping Encoder and Decoder.
template <class T>
concept BitwiseEncodable = codec_detail::memcpyable<std::remove_cv_t<T>> && requires {
  typename codec_traits<std::remove_cv_t<T>>::builtin_tag;
};

// encode_into(out, v) appends the encoding of v to `out`.
template <class T>
void encode_into(std::string& out, const T& v) {
  codec_detail::require_encodable<T>();
  Encoder e(out);
  e.write(v);
}

// encode(v) is the encoding of v as a new string.
template <class T>
std::string encode(const T& v) {
  codec_detail::require_encodable<T>();
  std::string out;
  if constexpr (codec_detail::memcpyable<T>) out.reserve(sizeof(T));
  encode_into(out, v);
  return out;
}

// decode<T>(bytes) rebuilds the T that `bytes` encodes. Throws CodecError
// (naming T) when bytes are missing, left over, or not a valid encoding.
template <class T>
T decode(std::string_view bytes) {
  codec_detail::require_encodable<T>();
  if constexpr (Encodable<T>) {
    try {
      Decoder d(bytes);
      T v = d.read<T>();
      d.expect_end();
      return v;
    } catch (const CodecError& e) {
      throw CodecError(fmt::format("{} (decoding {} from {} bytes)", e.what(),
                                   codec_detail::type_name<T>(), bytes.size()));
    }
  }
}

// decode<T>(span of bytes): as above, for byte buffers.
template <class T>
T decode(std::span<const std::byte> bytes) {
  return decode<T>(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

}  // namespace mp
