// codec_custom_type: making your own type encodable with mp::codec_traits.
//
// A type of plain fields (trivially copyable) is encodable as it is. A type
// that owns memory (strings, vectors...) needs one specialisation of
// mp::codec_traits that writes its parts and reads them back in the same
// order. After that it can go anywhere a value goes in mp: nested in
// containers, through Connection::send, Queue::put, Pool arguments.
//
//   bazel run //examples:codec_custom_type
#include <fmt/core.h>

#include <map>
#include <string>
#include <vector>

#include "mp/codec.h"

// Plain fields only: encodable without any code (copied as raw bytes).
struct Point {
  double x, y;
};

// Owns a string and a vector: needs a codec_traits specialisation.
struct Track {
  std::string name;
  std::vector<Point> points;
  int version = 1;  // must be 1 or 2; the decoder checks it
};

template <>
struct mp::codec_traits<Track> {
  static void encode(mp::Encoder& e, const Track& t) {
    e.write(t.name);
    e.write(t.points);  // one memcpy for the whole vector of Points
    e.write(t.version);
  }
  static Track decode(mp::Decoder& d) {
    Track t;
    t.name = d.read<std::string>();
    t.points = d.read<std::vector<Point>>();
    t.version = d.read<int>();
    if (t.version != 1 && t.version != 2) {
      throw mp::CodecError(fmt::format("Track: unknown version {}", t.version));
    }
    return t;
  }
};

static_assert(mp::Encodable<Point>);
static_assert(mp::Encodable<Track>);
static_assert(mp::Encodable<std::map<std::string, std::vector<Track>>>);

int main() {
  std::map<std::string, std::vector<Track>> runs;
  runs["monday"].push_back(Track{"loop", {{0, 0}, {1, 2}, {3, 5}}, 2});
  runs["tuesday"].push_back(Track{"hill", {{4, 4}}, 1});

  std::string bytes = mp::encode(runs);
  fmt::print("encoded {} days of tracks in {} bytes\n", runs.size(), bytes.size());

  auto back = mp::decode<std::map<std::string, std::vector<Track>>>(bytes);
  for (const auto& [day, tracks] : back) {
    for (const auto& t : tracks) {
      fmt::print("{}: {} (v{}), {} points, last ({}, {})\n", day, t.name, t.version,
                 t.points.size(), t.points.back().x, t.points.back().y);
    }
  }

  // Corrupt or truncated bytes raise mp::CodecError, never undefined behaviour.
  try {
    mp::decode<std::map<std::string, std::vector<Track>>>(bytes.substr(0, bytes.size() - 3));
  } catch (const mp::CodecError& e) {
    fmt::print("truncated input rejected: {}\n", e.what());
  }
  return 0;
}
