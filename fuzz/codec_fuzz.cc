// fuzz/codec_fuzz.cc — libFuzzer target for mp/codec.h decoding.
//
// Input: one byte choosing a type from kCases (modulo their number), then
// the bytes handed to mp::decode<T>. The promises checked (codec.h,
// "Decoding contract"):
//   * decode<T> returns a T or raises mp::CodecError; any other exception,
//     a crash or a sanitizer report is a finding;
//   * what decoded re-encodes, and the re-encoding decodes again to the same
//     value; for types whose encoding is canonical the re-encoding is the
//     input itself, so a decoder that accepts a non-canonical byte (a bool
//     2, an optional tag 7) is a finding. Not canonical: maps and sets (the
//     input's order may differ from their iteration order), and types that
//     hold an empty type such as std::monostate, which travels as one byte
//     copied from the sender's object and accepted as any byte (like a
//     struct's padding; no such struct here);
//   * allocation is bounded by the input. Every count is checked against
//     the bytes left before anything is allocated (at most
//     bytes_left / min_size(element) elements), so a container reserves at
//     most what a valid input of the same length could need:
//     input length x sizeof(element) / min_size(element). The largest such
//     ratio among the types below is 40 (std::optional<std::string>: 40
//     bytes, encoded in 1), so an input of max_len 16 KiB justifies at
//     most 640 KiB in one allocation; tools/fuzz.sh runs this target with
//     -max_len=16384 -malloc_limit_mb=1 (libFuzzer stops on any single
//     allocation of 1 MiB or more).
//
// Seeds: MP_FUZZ_WRITE_SEEDS=DIR ./codec_fuzz writes the encodings of the
// sample values below (tools/fuzz.sh --write-seeds), committed in
// fuzz/corpus/codec/.
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <list>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "mp/codec.h"
#include "mp/errors.h"

namespace {

enum class Color : std::uint8_t { kRed = 1, kGreen = 2, kBlue = 200 };

// A plain struct (memcpy'd), no padding, so its encoding is canonical.
struct Sample {
  std::int32_t id;
  float x;
  float y;
  std::array<std::uint16_t, 2> flags;
  std::array<std::int8_t, 4> tag;
  bool operator==(const Sample&) const = default;
};
static_assert(sizeof(Sample) == 20);

// Trivially copyable without a default constructor: decoded by bit_cast,
// and a vector of them element by element.
struct NoDefault {
  explicit NoDefault(std::int32_t v) : v(v) {}
  std::int32_t v;
  bool operator==(const NoDefault&) const = default;
};

// A user type with codec_traits that validates a field.
struct Point3 {
  std::string name;
  std::array<double, 3> xyz;
  std::uint8_t version;  // 1 or 2
  bool operator==(const Point3&) const = default;
};

}  // namespace

template <>
struct mp::codec_traits<Point3> {
  static constexpr std::size_t min_size = 8 + 24 + 1;
  static void encode(mp::Encoder& e, const Point3& p) {
    e.write(p.name);
    e.write(p.xyz);
    e.write(p.version);
  }
  static Point3 decode(mp::Decoder& d) {
    Point3 p;
    p.name = d.read<std::string>();
    p.xyz = d.read<std::array<double, 3>>();
    p.version = d.read<std::uint8_t>();
    if (p.version != 1 && p.version != 2) throw mp::CodecError("Point3: unknown version");
    return p;
  }
};

namespace {

// How a decoded value is compared with its re-encoding (see the top).
enum class Order {
  kCanonical,  // encode(decode(in)) == in
  kOrdered,    // encode(decode(encode(v))) == encode(v) (maps, sets: sorted)
  kEqual,      // decode(encode(v)) == v (hash containers, whose order may
               // change; empty types, whose byte is not the value)
};

template <class T, Order kOrder>
void fuzz_one(std::string_view in) {
  std::optional<T> v;
  try {
    v.emplace(mp::decode<T>(in));
  } catch (const mp::CodecError&) {
    return;  // the one error the contract allows
  }
  if constexpr (std::is_same_v<T, std::string_view>) {
    if (v->data() < in.data() || v->data() + v->size() > in.data() + in.size()) {
      mp_fuzz::finding("a decoded string_view points outside the input");
    }
  }
  const std::string again = mp::encode(*v);
  if constexpr (kOrder == Order::kCanonical) {
    if (again != in) mp_fuzz::finding("the decoder accepted a non-canonical encoding");
  }
  std::optional<T> decoded_again;
  try {
    decoded_again.emplace(mp::decode<T>(again));
  } catch (const mp::CodecError& e) {
    mp_fuzz::finding("the encoding of a decoded value does not decode: " + mp_fuzz::describe(e));
  }
  const T& w = *decoded_again;
  if constexpr (kOrder == Order::kEqual) {
    if (!(w == *v)) mp_fuzz::finding("a value changed through encode and decode");
  } else {
    if (mp::encode(w) != again) mp_fuzz::finding("a value changed through encode and decode");
  }
}

template <class T>
std::vector<std::string> encode_all(const std::vector<T>& values) {
  std::vector<std::string> out;
  for (const T& v : values) out.push_back(mp::encode(v));
  return out;
}

struct Case {
  void (*fuzz)(std::string_view);
  std::vector<std::string> (*samples)();
};

using Str = std::string;
using Bytes = std::vector<std::uint8_t>;
using Alt = std::variant<std::int32_t, Str, std::vector<double>>;
using Nullable = std::variant<std::monostate, std::int32_t, Str, std::vector<std::int64_t>>;
using Leaf = std::optional<std::variant<std::int32_t, std::vector<Str>>>;
using Nested = std::vector<std::map<Str, Leaf>>;

#define MP_CASE(order, T, ...)                                              \
  Case {                                                                    \
    &fuzz_one<T, Order::order>, [] { return encode_all<T>({__VA_ARGS__}); } \
  }

// Type aliases keep each T free of commas for the macro.
using U16Pair = std::pair<std::int16_t, Str>;
using Tup = std::tuple<std::uint8_t, double, Str>;
using StrIntMap = std::map<Str, std::int32_t>;
using IntStrMultimap = std::multimap<std::int32_t, Str>;
using HashMap = std::unordered_map<std::int64_t, Str>;
using PairVec = std::vector<std::pair<Str, Bytes>>;
using Str3 = std::array<Str, 3>;
using NoDefault2 = std::array<NoDefault, 2>;

const Case kCases[] = {
    MP_CASE(kCanonical, bool, false, true),
    MP_CASE(kCanonical, std::int32_t, 0, -1, 123456789),
    MP_CASE(kCanonical, double, 0.0, -1.5, 1e300),
    MP_CASE(kCanonical, Color, Color::kRed, Color::kBlue),
    MP_CASE(kCanonical, Str, "", "hello", Str(300, 'x')),
    MP_CASE(kCanonical, std::u32string, U"", U"h\u00e9llo"),
    MP_CASE(kCanonical, std::string_view, "", "a view"),
    MP_CASE(kCanonical, std::vector<std::int32_t>, {}, {1, 2, 3}, std::vector<std::int32_t>(99, 7)),
    MP_CASE(kCanonical, std::vector<Str>, {}, {"a", "", "ccc"}),
    MP_CASE(kCanonical, std::vector<bool>, {}, {true, false, true}),
    MP_CASE(kCanonical, std::deque<std::int64_t>, {}, {1, -2, 3}),
    MP_CASE(kCanonical, std::list<Str>, {}, {"x", "yy"}),
    MP_CASE(kCanonical, Str3, {"a", "b", "c"}, {"", "", ""}),
    MP_CASE(kCanonical, U16Pair, {1, "one"}, {-7, ""}),
    MP_CASE(kCanonical, Tup, {1, 2.5, "t"}, {0, 0.0, ""}),
    MP_CASE(kCanonical, std::optional<Str>, std::nullopt, "some"),
    MP_CASE(kCanonical, Alt, 42, Str("s"), std::vector<double>{1.0, 2.0}),
    MP_CASE(kEqual, Nullable, std::monostate{}, 42, Str("s"), std::vector<std::int64_t>{1, 2}),
    MP_CASE(kOrdered, StrIntMap, {}, {{"a", 1}, {"b", 2}}),
    MP_CASE(kOrdered, IntStrMultimap, {{1, "x"}, {1, "y"}, {2, "z"}}),
    MP_CASE(kEqual, HashMap, {}, {{1, "one"}, {2, "two"}}),
    MP_CASE(kOrdered, std::set<Str>, {}, {"a", "b"}),
    MP_CASE(kOrdered, std::multiset<std::int32_t>, {1, 1, 2}),
    MP_CASE(kEqual, std::unordered_set<Str>, {}, {"p", "q"}),
    MP_CASE(kOrdered, Nested, {},
            {{{"k", std::nullopt}, {"l", 5}}, {{"m", std::vector<Str>{"v"}}}}),
    MP_CASE(kCanonical, std::vector<Sample>, {}, {Sample{1, 0.5f, -2.f, {3, 4}, {5, 6, 7, 8}}}),
    MP_CASE(kCanonical, std::vector<Point3>, {}, {Point3{"p", {1, 2, 3}, 1}, Point3{"", {}, 2}}),
    MP_CASE(kCanonical, std::chrono::milliseconds, std::chrono::milliseconds(1500)),
    MP_CASE(kCanonical, std::vector<std::optional<std::int32_t>>, {}, {1, std::nullopt, 3}),
    MP_CASE(kCanonical, std::vector<std::optional<Str>>, {std::nullopt, "o", std::nullopt}),
    MP_CASE(kCanonical, PairVec, {}, {{"bytes", {0, 255, 7}}}),
    MP_CASE(kCanonical, std::u16string, u"", u"h\u00e9llo"),
    MP_CASE(kCanonical, std::vector<NoDefault>, {}, {NoDefault(1), NoDefault(-2)}),
    MP_CASE(kCanonical, NoDefault2, {NoDefault(3), NoDefault(4)}),
};
#undef MP_CASE

constexpr std::size_t kCaseCount = sizeof kCases / sizeof kCases[0];

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  std::vector<std::string> seeds;
  for (std::size_t i = 0; i < kCaseCount; ++i) {
    for (const std::string& encoding : kCases[i].samples()) {
      seeds.push_back(std::string(1, static_cast<char>(i)) + encoding);
    }
  }
  mp_fuzz::write_seeds_if_asked("codec", seeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const Case& c = kCases[data[0] % kCaseCount];
  try {
    c.fuzz(std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1));
  } catch (const std::exception& e) {
    mp_fuzz::finding("decode raised " + mp_fuzz::describe(e));
  } catch (...) {
    mp_fuzz::finding("decode raised an exception that is not a std::exception");
  }
  return 0;
}
