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
//     durations...), copied with one memcpy;
//   * std::basic_string, std::string_view (encoded as a string; decoding a
//     string_view returns a view into the input bytes), std::vector,
//     std::deque, std::list, std::array, std::pair, std::tuple,
//     std::optional, std::variant (and std::monostate), std::map,
//     std::multimap, std::unordered_map, std::set, std::multiset,
//     std::unordered_set — nested in any combination;
//   * any other type through the one extension point, mp::codec_traits<T>
//     (see below and examples/codec_custom_type.cc).
//
// Types that are never encodable, even though some are trivially copyable:
// raw and member pointers, C arrays (use std::array), std::span and
// std::reference_wrapper (they refer to memory of the sending process).
// `mp::Encodable<T>` tells whether T is encodable; mp::encode, mp::decode and
// everything in mp that sends values fail to compile on a type that is not,
// with a static_assert inside `mp::codec_detail::NotEncodable<X>` where X is
// the innermost type at fault (`NotEncodable<Foo>` for a std::vector<Foo>).
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
// copyable elements: u64 count, then the elements in one memcpy. Other
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
// struct's fields).
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
                    requires(Encoder& e, Decoder& d, const std::remove_cv_t<T>& v) {
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

// memcpyable<T>: encoded as its sizeof(T) raw bytes.
template <class T>
inline constexpr bool memcpyable =
    std::is_trivially_copyable_v<T> && !std::is_const_v<T> && !std::is_volatile_v<T> &&
    !std::is_same_v<T, bool> && !std::is_pointer_v<T> && !std::is_member_pointer_v<T> &&
    !std::is_array_v<T> && !std::is_null_pointer_v<T> && !is_view_like<T> &&
    !is_structured_std<T> && (std::is_arithmetic_v<T> || std::is_enum_v<T> || std::is_class_v<T> ||
                              std::is_union_v<T>);

// Element types whose storage may be filled by plain char-range assignment.
template <class T>
inline constexpr bool byte_like = std::is_same_v<T, char> || std::is_same_v<T, signed char> ||
                                  std::is_same_v<T, unsigned char> || std::is_same_v<T, std::byte> ||
                                  std::is_same_v<T, char8_t>;

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
      codec_detail::fail(fmt::format("corrupt input: count {} of {}-byte elements exceeds the {} bytes left",
                                     n, per, remaining()));
    }
    return static_cast<std::size_t>(n);
  }

  // remaining() is the number of bytes not read yet.
  std::size_t remaining() const noexcept { return static_cast<std::size_t>(end_ - p_); }

  // expect_end() throws CodecError unless every byte was read.
  void expect_end() const {
    if (p_ != end_) codec_detail::fail(fmt::format("{} bytes left over after the value", remaining()));
  }

 private:
  void need(std::size_t n) const {
    if (n > remaining()) [[unlikely]] {
      codec_detail::fail(fmt::format("truncated input: needed {} more bytes, {} left", n, remaining()));
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
  using type = std::conditional_t<Encodable<T>, typename first_bad<Ts...>::type, typename culprit<T>::type>;
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
struct culprit<std::unordered_map<K, V, H, E, A>> : culprit_of_parts<std::unordered_map<K, V, H, E, A>, K, V> {};
template <class K, class C, class A>
struct culprit<std::set<K, C, A>> : culprit_of_parts<std::set<K, C, A>, K> {};
template <class K, class C, class A>
struct culprit<std::multiset<K, C, A>> : culprit_of_parts<std::multiset<K, C, A>, K> {};
template <class K, class H, class E, class A>
struct culprit<std::unordered_set<K, H, E, A>> : culprit_of_parts<std::unordered_set<K, H, E, A>, K> {};

// NotEncodable<X> is where a use of a non-encodable type stops the build;
// X (in the compiler's "In instantiation of NotEncodable<X>") names it.
template <class X>
struct NotEncodable {
  static_assert(always_false<X>,
                "mp codec: this type is not encodable (see NotEncodable<...> above for which). "
                "Encodable are arithmetic types, enums, trivially copyable structs, std strings, "
                "containers, pair/tuple/optional/variant of encodable types, and any type with an "
                "mp::codec_traits<T> specialisation (see mp/codec.h). Pointers, C arrays, std::span "
                "and std::reference_wrapper are never encodable.");
  static constexpr bool value = false;
};

template <class T>
constexpr void require_encodable() {
  if constexpr (!Encodable<T>) {
    (void)sizeof(NotEncodable<typename culprit<T>::type>);  // fails, naming the type
  }
}

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
    if constexpr (memcpyable<T>) {
      e.write_size(v.size());
      e.write_raw(v.data(), v.size() * sizeof(T));
    } else {
      encode_elements(e, v);
    }
  }
  static V decode(Decoder& d) {
    const std::size_t n = d.read_size(codec_detail::min_size<T>());
    V v;
    if constexpr (memcpyable<T> && byte_like<T>) {
      std::string_view bytes = d.read_view(n);
      auto* p = reinterpret_cast<const T*>(bytes.data());
      v.assign(p, p + n);
    } else if constexpr (memcpyable<T> && std::is_default_constructible_v<T>) {
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
    if constexpr (memcpyable<T>) {
      e.write_raw(a.data(), N * sizeof(T));
    } else {
      for (const auto& x : a) e.write(x);
    }
  }
  static Arr decode(Decoder& d) {
    if constexpr (memcpyable<T> && std::is_default_constructible_v<T>) {
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
      }(std::make_index_sequence<N>{});
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
  static constexpr std::size_t min_size = sizeof(Index) + std::min({codec_detail::min_size<Ts>()...});
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
      fail(fmt::format("corrupt input: variant index {} of a variant with {} alternatives", i, sizeof...(Ts)));
    }
    static constexpr auto table = []<std::size_t... I>(std::index_sequence<I...>) {
      return std::array<V (*)(Decoder&), sizeof...(Ts)>{&decode_alternative<I>...};
    }(std::index_sequence_for<Ts...>{});
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
        if (!m.emplace(std::move(k), std::move(v)).second) fail("corrupt input: duplicate key in a map");
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
struct builtin<std::unordered_set<K, H, E, A>> : builtin_set<std::unordered_set<K, H, E, A>, K, true> {};

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
  static void encode(Encoder& e, const T& v)
    requires codec_detail::builtin<T>::supported
  {
    if constexpr (requires { codec_detail::builtin<T>::encode(e, v); }) {
      codec_detail::builtin<T>::encode(e, v);
    } else {
      codec_detail::encode_scalar(e, v);
    }
  }
  static T decode(Decoder& d)
    requires codec_detail::builtin<T>::supported
  {
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
concept BitwiseEncodable = codec_detail::memcpyable<std::remove_cv_t<T>> &&
                           requires { typename codec_traits<std::remove_cv_t<T>>::builtin_tag; };

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
