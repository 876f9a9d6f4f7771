// Conformance: mp/codec.h — values to bytes and back.
// CPython docs: pickle ("What can be pickled and unpickled?") and
// multiprocessing "Programming guidelines" — values that cross a process
// boundary are copied by serialisation; unpickling bad data raises
// (pickle.UnpicklingError), here mp::CodecError. mp differs on purpose: what
// cannot be encoded is a compile error (Encodable<T>), not a runtime one.
#include "mp/codec.h"

#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <limits>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <variant>
#include <vector>

namespace {

enum class Color : std::uint8_t { kRed = 1, kGreen = 2, kBlue = 200 };
enum Plain { kZero, kOne, kTwo };

struct Pod {
  int a;
  double b;
  char tag[4];
  Color c;
  bool operator==(const Pod& o) const {
    return a == o.a && b == o.b && std::equal(tag, tag + 4, o.tag) && c == o.c;
  }
};

struct NoDefault {
  explicit NoDefault(int v) : v(v) {}
  int v;
  bool operator==(const NoDefault&) const = default;
};
static_assert(std::is_trivially_copyable_v<NoDefault>);
static_assert(!std::is_default_constructible_v<NoDefault>);

// A user type with owning members, made encodable through codec_traits.
struct Person {
  std::string name;
  std::vector<std::string> emails;
  std::optional<int> age;
  bool operator==(const Person&) const = default;
};

// A user type whose codec validates its field.
struct Percent {
  int value;
  bool operator==(const Percent&) const = default;
};

struct NotEncodableThing {
  std::unique_ptr<int> p;
};

}  // namespace

template <>
struct mp::codec_traits<Person> {
  static void encode(mp::Encoder& e, const Person& p) {
    e.write(p.name);
    e.write(p.emails);
    e.write(p.age);
  }
  static Person decode(mp::Decoder& d) {
    Person p;
    p.name = d.read<std::string>();
    p.emails = d.read<std::vector<std::string>>();
    p.age = d.read<std::optional<int>>();
    return p;
  }
};

template <>
struct mp::codec_traits<Percent> {
  static constexpr std::size_t min_size = 1;
  static void encode(mp::Encoder& e, const Percent& p) {
    const auto b = static_cast<std::uint8_t>(p.value);
    e.write_raw(&b, 1);
  }
  static Percent decode(mp::Decoder& d) {
    std::uint8_t b;
    d.read_raw(&b, 1);
    if (b > 100) throw mp::CodecError("percent out of range");
    return Percent{b};
  }
};

namespace {

template <class T>
T round_trip(const T& v) {
  return mp::decode<T>(mp::encode(v));
}

// ---- what is and is not encodable (checked at compile time) ----------------

static_assert(mp::Encodable<int>);
static_assert(mp::Encodable<bool>);
static_assert(mp::Encodable<Color>);
static_assert(mp::Encodable<Pod>);
static_assert(mp::Encodable<std::string>);
static_assert(mp::Encodable<std::vector<std::map<std::string, std::optional<Pod>>>>);
static_assert(mp::Encodable<Person>);
static_assert(mp::Encodable<std::vector<Person>>);
static_assert(mp::Encodable<const int>);
static_assert(!mp::Encodable<int*>);
static_assert(!mp::Encodable<const char*>);
static_assert(!mp::Encodable<int[4]>);
static_assert(!mp::Encodable<std::span<int>>);
static_assert(!mp::Encodable<std::reference_wrapper<int>>);
static_assert(!mp::Encodable<NotEncodableThing>);
static_assert(!mp::Encodable<std::unique_ptr<int>>);
static_assert(!mp::Encodable<std::vector<NotEncodableThing>>);
static_assert(!mp::Encodable<std::map<int, int*>>);
static_assert(!mp::Encodable<std::variant<int, std::unique_ptr<int>>>);
static_assert(!mp::Encodable<std::tuple<int, std::string, int*>>);
// The static_assert of a rejected type names its innermost culprit.
static_assert(
    std::is_same_v<mp::codec_detail::culprit<std::vector<std::pair<int, NotEncodableThing>>>::type,
                   NotEncodableThing>);
static_assert(std::is_same_v<mp::codec_detail::culprit<int*>::type, int*>);

static_assert(mp::BitwiseEncodable<int>);
static_assert(mp::BitwiseEncodable<Pod>);
static_assert(!mp::BitwiseEncodable<bool>);  // decoding validates the byte
static_assert(!mp::BitwiseEncodable<std::string>);
static_assert(!mp::BitwiseEncodable<std::optional<int>>);

// A trivially copyable type with its own codec is not bitwise any more.
struct Celsius {
  float degrees;
};

// Issue 15 item 10: trivially copyable, but a field refers to the sender's
// memory, so the struct is not encodable (compile_fail_test checks the
// error names the field).
struct WithPointer {
  int id;
  int* data;
};
struct WithView {
  int id;
  std::string_view name;
};
struct InnerSpan {
  std::span<const int> items;
};
struct OuterOfSpan {
  double weight;
  InnerSpan inner;
};
struct WithConstRef {
  const int& value;
};
struct WithOptionalPointer {
  std::optional<int*> maybe;
};
struct WithPointerArray {
  int n;
  int* slots[3];
};
struct PointerBase {
  int* p;
};
struct DerivedFromPointer : PointerBase {
  int y;
};
// Plain fields, C arrays, nested structs, bases, bitfields and non-aggregate
// members stay memcpy'd.
struct PlainBase {
  int a;
};
struct PlainFields : PlainBase {
  char name[16];
  std::array<double, 2> xy;
  std::chrono::milliseconds ttl;
  Pod pod;
  unsigned flag : 1;
  const int fixed;
};
// Not an aggregate: its fields cannot be visited, so it stays memcpy'd.
class Opaque {
 public:
  Opaque() = default;

 private:
  const void* p_ = nullptr;
};

// Issue 15 item 11: a trivially copyable type whose traits validate.
struct Checked {
  int v;
};
inline int checked_encodes = 0;
inline int checked_decodes = 0;
// A struct holding a type with its own traits: a memcpy would bypass them.
struct HoldsChecked {
  Checked c;
};

}  // namespace

template <>
struct mp::codec_traits<Checked> {
  static void encode(mp::Encoder& e, const Checked& c) {
    ++checked_encodes;
    if (c.v < 0) throw mp::CodecError("Checked: negative");
    e.write(c.v + 1000);  // transformed on the wire
  }
  static Checked decode(mp::Decoder& d) {
    ++checked_decodes;
    const int w = d.read<int>();
    if (w < 1000) throw mp::CodecError("Checked: corrupt");
    return Checked{w - 1000};
  }
};

template <>
struct mp::codec_traits<Celsius> {
  static void encode(mp::Encoder& e, const Celsius& c) { e.write(static_cast<double>(c.degrees)); }
  static Celsius decode(mp::Decoder& d) { return Celsius{static_cast<float>(d.read<double>())}; }
};

namespace {

static_assert(!mp::BitwiseEncodable<Celsius>);

static_assert(!mp::Encodable<WithPointer>);
static_assert(!mp::Encodable<WithView>);
static_assert(!mp::Encodable<InnerSpan>);
static_assert(!mp::Encodable<OuterOfSpan>);
static_assert(!mp::Encodable<WithConstRef>);
static_assert(!mp::Encodable<WithOptionalPointer>);
static_assert(!mp::Encodable<WithPointerArray>);
static_assert(!mp::Encodable<DerivedFromPointer>);
static_assert(!mp::Encodable<HoldsChecked>);
static_assert(!mp::Encodable<std::vector<WithPointer>>);
static_assert(!mp::Encodable<std::array<WithView, 2>>);
static_assert(mp::Encodable<PlainFields>);
static_assert(mp::BitwiseEncodable<PlainFields>);
static_assert(mp::Encodable<Opaque>);
// A view encodes, and decodes at top level as a view into the input, but
// does not travel: a transport reuses the buffer the view would point into.
static_assert(mp::Encodable<std::string_view>);
static_assert(!mp::Transportable<std::string_view>);
static_assert(!mp::Transportable<std::vector<std::optional<std::string_view>>>);
static_assert(mp::Transportable<std::vector<std::string>>);

TEST(CodecTypes, StructWithPlainFieldsBasesAndArraysRoundTripsAsItsBytes) {
  PlainFields p{
      {7}, "name", {1.5, 2.5}, std::chrono::milliseconds(30), Pod{1, 2.0, {'c'}, Color::kRed},
      1,   42};
  const std::string bytes = mp::encode(p);
  EXPECT_EQ(bytes.size(), sizeof(PlainFields));
  const PlainFields q = mp::decode<PlainFields>(bytes);
  EXPECT_EQ(q.a, 7);
  EXPECT_STREQ(q.name, "name");
  EXPECT_EQ(q.xy[1], 2.5);
  EXPECT_EQ(q.ttl, std::chrono::milliseconds(30));
  EXPECT_EQ(q.fixed, 42);
}

TEST(CodecExtension, VectorElementsGoThroughTheUsersTraits) {
  checked_encodes = checked_decodes = 0;
  const std::vector<Checked> v{{1}, {2}, {3}};
  const std::string bytes = mp::encode(v);
  EXPECT_EQ(checked_encodes, 3);
  const auto back = mp::decode<std::vector<Checked>>(bytes);
  EXPECT_EQ(checked_decodes, 3);
  ASSERT_EQ(back.size(), 3u);
  EXPECT_EQ(back[2].v, 3);
  EXPECT_THROW(mp::encode(std::vector<Checked>{{1}, {-1}}), mp::CodecError);
  // Raw bytes that the traits would never write are refused on decode.
  std::string raw;
  mp::Encoder e(raw);
  e.write_size(1);
  e.write(5);
  EXPECT_THROW(mp::decode<std::vector<Checked>>(raw), mp::CodecError);
}

TEST(CodecExtension, ArrayElementsGoThroughTheUsersTraits) {
  checked_encodes = checked_decodes = 0;
  const std::array<Checked, 2> a{{{4}, {5}}};
  const std::string bytes = mp::encode(a);
  EXPECT_EQ(checked_encodes, 2);
  const auto back = mp::decode<std::array<Checked, 2>>(bytes);
  EXPECT_EQ(checked_decodes, 2);
  EXPECT_EQ(back[0].v, 4);
  EXPECT_EQ(back[1].v, 5);
  EXPECT_THROW(mp::encode(std::array<Checked, 2>{{{1}, {-1}}}), mp::CodecError);
  const std::string raw = mp::encode(std::array<int, 1>{{5}});
  EXPECT_THROW((mp::decode<std::array<Checked, 1>>(raw)), mp::CodecError);
}

TEST(CodecExtension, VectorOfTypeWithTraitsIsNotCopiedInBulk) {
  static_assert(!mp::BitwiseEncodable<Checked>);
  // Each element is the traits' int (1000 + v), not the struct's bytes.
  std::string expected;
  mp::Encoder e(expected);
  e.write_size(2);
  e.write(1001);
  e.write(1002);
  EXPECT_EQ(mp::encode(std::vector<Checked>{{1}, {2}}), expected);
}

TEST(CodecExtension, SpecialisationOverridesTheBuiltInMemcpy) {
  EXPECT_EQ(mp::encode(Celsius{21.5f}).size(), sizeof(double));
  EXPECT_EQ(mp::decode<Celsius>(mp::encode(Celsius{21.5f})).degrees, 21.5f);
}

TEST(CodecTypes, ArithmeticValuesRoundTrip) {
  EXPECT_EQ(round_trip(0), 0);
  EXPECT_EQ(round_trip(std::numeric_limits<std::int64_t>::min()),
            std::numeric_limits<std::int64_t>::min());
  EXPECT_EQ(round_trip(std::numeric_limits<std::uint64_t>::max()),
            std::numeric_limits<std::uint64_t>::max());
  EXPECT_EQ(round_trip(3.25), 3.25);
  EXPECT_EQ(round_trip(-1.5f), -1.5f);
  EXPECT_EQ(round_trip('x'), 'x');
  EXPECT_EQ(round_trip(true), true);
  EXPECT_EQ(round_trip(false), false);
  EXPECT_EQ(mp::encode(std::int32_t{7}).size(), 4u);
}

TEST(CodecTypes, EnumsRoundTrip) {
  EXPECT_EQ(round_trip(Color::kBlue), Color::kBlue);
  EXPECT_EQ(round_trip(kTwo), kTwo);
  EXPECT_EQ(mp::encode(Color::kGreen).size(), 1u);
}

TEST(CodecTypes, TriviallyCopyableStructIsCopiedAsItsBytes) {
  Pod p{42, 2.5, {'a', 'b', 'c', 'd'}, Color::kRed};
  std::string bytes = mp::encode(p);
  EXPECT_EQ(bytes.size(), sizeof(Pod));
  EXPECT_EQ(mp::decode<Pod>(bytes), p);
}

TEST(CodecTypes, TriviallyCopyableWithoutDefaultConstructorRoundTrips) {
  EXPECT_EQ(round_trip(NoDefault(9)), NoDefault(9));
  std::vector<NoDefault> v{NoDefault(1), NoDefault(2)};
  EXPECT_EQ(round_trip(v), v);
  std::optional<NoDefault> o(NoDefault(3));
  EXPECT_EQ(round_trip(o), o);
}

TEST(CodecTypes, ChronoDurationsRoundTrip) {
  EXPECT_EQ(round_trip(std::chrono::milliseconds(1234)), std::chrono::milliseconds(1234));
}

TEST(CodecTypes, StringsRoundTripIncludingEmptyAndEmbeddedNul) {
  EXPECT_EQ(round_trip(std::string()), "");
  EXPECT_EQ(round_trip(std::string("hello")), "hello");
  std::string with_nul("a\0b\0", 4);
  EXPECT_EQ(round_trip(with_nul), with_nul);
  std::string big(1 << 20, 'z');
  EXPECT_EQ(round_trip(big), big);
  EXPECT_EQ(round_trip(std::u32string(U"ünï")), U"ünï");
}

TEST(CodecTypes, StringViewEncodesAsStringAndDecodesAsViewIntoInput) {
  std::string bytes = mp::encode(std::string_view("abc"));
  EXPECT_EQ(bytes, mp::encode(std::string("abc")));
  auto view = mp::decode<std::string_view>(bytes);
  EXPECT_EQ(view, "abc");
  EXPECT_GE(view.data(), bytes.data());
  EXPECT_LT(view.data(), bytes.data() + bytes.size());
}

TEST(CodecTypes, VectorOfTriviallyCopyableIsOneBlock) {
  std::vector<double> v{1.0, 2.0, 3.0};
  std::string bytes = mp::encode(v);
  EXPECT_EQ(bytes.size(), 8 + 3 * sizeof(double));
  EXPECT_EQ(mp::decode<std::vector<double>>(bytes), v);
  EXPECT_EQ(round_trip(std::vector<int>{}), std::vector<int>{});
  std::vector<std::byte> raw{std::byte{1}, std::byte{255}};
  EXPECT_EQ(round_trip(raw), raw);
}

TEST(CodecTypes, VectorOfBoolAndOfStringsRoundTrip) {
  std::vector<bool> bits{true, false, true, true};
  EXPECT_EQ(round_trip(bits), bits);
  std::vector<std::string> words{"a", "", "ccc"};
  EXPECT_EQ(round_trip(words), words);
}

TEST(CodecTypes, DequeAndListRoundTrip) {
  std::deque<int> d{1, 2, 3};
  EXPECT_EQ(round_trip(d), d);
  std::list<std::string> l{"x", "y"};
  EXPECT_EQ(round_trip(l), l);
}

TEST(CodecTypes, ArraysRoundTrip) {
  std::array<int, 3> a{1, 2, 3};
  EXPECT_EQ(mp::encode(a).size(), 12u);
  EXPECT_EQ(round_trip(a), a);
  std::array<std::string, 2> s{"p", "q"};
  EXPECT_EQ(round_trip(s), s);
  std::array<NoDefault, 2> nd{NoDefault(4), NoDefault(5)};
  EXPECT_EQ(round_trip(nd), nd);
}

TEST(CodecTypes, PairAndTupleRoundTrip) {
  std::pair<int, std::string> p{1, "one"};
  EXPECT_EQ(round_trip(p), p);
  std::tuple<int, std::string, double, bool> t{7, "seven", 7.5, true};
  EXPECT_EQ(round_trip(t), t);
  EXPECT_EQ(round_trip(std::tuple<>{}), std::tuple<>{});
}

TEST(CodecTypes, OptionalRoundTripsEngagedAndEmpty) {
  EXPECT_EQ(round_trip(std::optional<std::string>("x")), std::optional<std::string>("x"));
  EXPECT_EQ(round_trip(std::optional<std::string>()), std::nullopt);
  EXPECT_EQ(mp::encode(std::optional<int>()).size(), 1u);
}

TEST(CodecTypes, VariantKeepsItsAlternative) {
  using V = std::variant<std::monostate, int, std::string, std::vector<int>>;
  EXPECT_EQ(round_trip(V{}), V{});
  EXPECT_EQ(round_trip(V{5}), V{5});
  EXPECT_EQ(round_trip(V{std::string("s")}), V{std::string("s")});
  EXPECT_EQ(round_trip(V{std::vector<int>{1, 2}}), V{std::vector<int>({1, 2})});
  // Two alternatives of the same type stay distinct.
  using Same = std::variant<int, int>;
  Same second(std::in_place_index<1>, 3);
  EXPECT_EQ(round_trip(second).index(), 1u);
}

TEST(CodecTypes, MapsAndSetsRoundTrip) {
  std::map<std::string, int> m{{"a", 1}, {"b", 2}};
  EXPECT_EQ(round_trip(m), m);
  std::unordered_map<int, std::string> u{{1, "x"}, {2, "y"}, {3, ""}};
  EXPECT_EQ(round_trip(u), u);
  std::multimap<int, int> mm{{1, 1}, {1, 2}};
  EXPECT_EQ(round_trip(mm), mm);
  std::set<std::string> s{"q", "r"};
  EXPECT_EQ(round_trip(s), s);
  std::unordered_set<int> us{4, 5, 6};
  EXPECT_EQ(round_trip(us), us);
  std::multiset<int> ms{1, 1, 2};
  EXPECT_EQ(round_trip(ms), ms);
}

TEST(CodecTypes, NestedCombinationsRoundTrip) {
  using Deep = std::map<std::string,
                        std::vector<std::variant<int, std::pair<std::string, std::optional<Pod>>,
                                                 std::tuple<bool, std::array<short, 2>>>>>;
  Deep d;
  d["one"].push_back(1);
  d["one"].push_back(std::pair<std::string, std::optional<Pod>>{
      "p", Pod{1, 2.0, {'w', 'x', 'y', 'z'}, Color::kBlue}});
  d["two"].push_back(std::tuple<bool, std::array<short, 2>>{true, {3, 4}});
  d["empty"];
  EXPECT_EQ(round_trip(d), d);
}

TEST(CodecExtension, UserTypeThroughCodecTraitsRoundTrips) {
  Person p{"Ada", {"ada@example.org", "a@b"}, 36};
  EXPECT_EQ(round_trip(p), p);
  std::vector<Person> people{p, Person{"Bob", {}, std::nullopt}};
  EXPECT_EQ(round_trip(people), people);
  std::map<int, Person> by_id{{1, p}};
  EXPECT_EQ(round_trip(by_id), by_id);
}

TEST(CodecExtension, UserDecodeMayRejectBadBytes) {
  EXPECT_EQ(round_trip(Percent{99}), Percent{99});
  EXPECT_THROW(mp::decode<Percent>(std::string(1, char(101))), mp::CodecError);
}

TEST(CodecApi, EncodeIntoAppends) {
  std::string out = "head";
  mp::encode_into(out, std::int16_t{1});
  mp::encode_into(out, std::string("xy"));
  ASSERT_EQ(out.size(), 4u + 2u + 8u + 2u);
  EXPECT_EQ(out.substr(0, 4), "head");
  mp::Decoder d(std::string_view(out).substr(4));
  EXPECT_EQ(d.read<std::int16_t>(), 1);
  EXPECT_EQ(d.read<std::string>(), "xy");
  d.expect_end();
}

TEST(CodecApi, DecodeAcceptsByteSpans) {
  std::string bytes = mp::encode(std::vector<int>{1, 2});
  std::span<const std::byte> span(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size());
  EXPECT_EQ(mp::decode<std::vector<int>>(span), (std::vector<int>{1, 2}));
}

// ---- bad bytes raise CodecError -------------------------------------------

TEST(CodecErrors, TruncatedInputRaisesCodecError) {
  std::string bytes = mp::encode(std::string("hello"));
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_THROW(mp::decode<std::string>(bytes.substr(0, n)), mp::CodecError) << n;
  }
  EXPECT_THROW(mp::decode<int>(std::string(3, '\0')), mp::CodecError);
}

TEST(CodecErrors, LeftoverBytesRaiseCodecError) {
  EXPECT_THROW(mp::decode<int>(mp::encode(std::int64_t{1})), mp::CodecError);
  EXPECT_THROW(mp::decode<std::string>(mp::encode(std::string("a")) + "x"), mp::CodecError);
}

TEST(CodecErrors, ErrorMessageNamesTheRequestedType) {
  try {
    mp::decode<std::vector<int>>(std::string(2, '\0'));
    FAIL() << "no error";
  } catch (const mp::CodecError& e) {
    EXPECT_NE(std::string(e.what()).find("std::vector<int"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
}

TEST(CodecErrors, HugeCountRaisesInsteadOfAllocating) {
  std::string bytes;
  mp::Encoder e(bytes);
  e.write_size(std::numeric_limits<std::uint64_t>::max() / 2);
  bytes += "abc";
  EXPECT_THROW(mp::decode<std::string>(bytes), mp::CodecError);
  EXPECT_THROW(mp::decode<std::vector<std::int64_t>>(bytes), mp::CodecError);
  EXPECT_THROW(mp::decode<std::vector<std::string>>(bytes), mp::CodecError);
  EXPECT_THROW((mp::decode<std::map<int, int>>(bytes)), mp::CodecError);
  EXPECT_THROW(mp::decode<std::vector<std::tuple<>>>(bytes), mp::CodecError);
}

TEST(CodecErrors, BadVariantIndexRaises) {
  using V = std::variant<int, std::string>;
  std::string bytes = mp::encode(V{1});
  bytes[0] = 2;
  EXPECT_THROW(mp::decode<V>(bytes), mp::CodecError);
  bytes[0] = char(255);
  EXPECT_THROW(mp::decode<V>(bytes), mp::CodecError);
}

TEST(CodecErrors, BadOptionalTagAndBoolByteRaise) {
  std::string o = mp::encode(std::optional<int>(1));
  o[0] = 2;
  EXPECT_THROW(mp::decode<std::optional<int>>(o), mp::CodecError);
  EXPECT_THROW(mp::decode<bool>(std::string(1, char(7))), mp::CodecError);
  std::string bits = mp::encode(std::vector<bool>{true});
  bits.back() = 3;
  EXPECT_THROW(mp::decode<std::vector<bool>>(bits), mp::CodecError);
}

TEST(CodecErrors, DuplicateKeysInUniqueMapRaise) {
  std::string bytes;
  mp::Encoder e(bytes);
  e.write_size(2);
  e.write(1);
  e.write(10);
  e.write(1);
  e.write(20);
  EXPECT_THROW((mp::decode<std::map<int, int>>(bytes)), mp::CodecError);
  EXPECT_THROW((mp::decode<std::unordered_map<int, int>>(bytes)), mp::CodecError);
  EXPECT_EQ((mp::decode<std::multimap<int, int>>(bytes)).size(), 2u);
}

TEST(CodecErrors, CorruptedBytesNeverCrash) {
  // Every truncation and many single-byte corruptions of a nested value
  // either decode to some value or raise CodecError; the sanitizer build
  // checks that no read goes out of bounds.
  using V =
      std::map<std::string,
               std::vector<std::variant<int, std::optional<std::string>, std::vector<double>>>>;
  V v;
  v["k"] = {1, std::optional<std::string>("text"), std::vector<double>{1, 2}};
  v["l"] = {std::optional<std::string>()};
  const std::string good = mp::encode(v);
  for (std::size_t n = 0; n < good.size(); ++n) {
    EXPECT_THROW(mp::decode<V>(good.substr(0, n)), mp::CodecError);
  }
  std::mt19937 rng(12345);
  int decoded = 0, rejected = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string bad = good;
    bad[rng() % bad.size()] = static_cast<char>(rng());
    try {
      (void)mp::decode<V>(bad);
      ++decoded;
    } catch (const mp::CodecError&) {
      ++rejected;
    }
  }
  EXPECT_EQ(decoded + rejected, 3000);
  EXPECT_GT(rejected, 0);
}

}  // namespace
