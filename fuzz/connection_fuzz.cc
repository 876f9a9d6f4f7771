// fuzz/connection_fuzz.cc — libFuzzer target for the Connection frame
// decoder (mp/connection.h): arbitrary bytes as what a peer wrote.
//
// Input: a 5-byte script, then the stream.
//   byte 0     bit 0: 0 = duplex Pipe() (a socketpair), 1 = simplex (a pipe)
//   bytes 1-4  the receive calls to make, used in turn (each byte modulo
//              11 picks one of step()'s: recv_bytes with and without a
//              maxlength, recv_bytes_into at an offset, recv<T> of four
//              types, poll)
//   the rest   written raw into the peer end, which is then closed
// The receiving end makes the calls until end-of-file (at most a few per
// stream byte). A stream of up to kSyncWrite bytes is written before the
// first call; a longer one by a thread while the calls run, which also
// sends large payloads through the direct readv path.
//
// Each call's outcome is checked against a reference parser of the same
// bytes (u64 native-endian length, then the payload), from connection.h's
// contract:
//   * a whole message arrives whole: recv_bytes gives its bytes,
//     recv_bytes_into copies them at the offset (touching nothing else),
//     recv<T> gives what decode<T> makes of them or raises CodecError;
//   * recv_bytes(maxlength) on a longer message raises ValueError and leaves
//     it unread; recv_bytes_into a short buffer raises BufferTooShort
//     carrying the whole message;
//   * a message cut short by the end of the stream raises EOFError (and so
//     does every call after it); a length that no std::string can hold
//     raises ValueError (and the calls stop: the stream is not framed any
//     more);
//   * poll() is true while anything (a message or end-of-file) is pending.
// Any other outcome, exception, crash or sanitizer report is a finding.
//
// Allocation bound (connection.h: "A length header is a claim, not a
// promise"): a payload buffer is allocated at once only up to 4 MiB, and
// beyond that grows with the bytes that arrive, so a stream of max_len
// (128 KiB) bytes never justifies a single allocation larger than
// 4 MiB + 1 (the claim's buffer and its terminating NUL); decoding a
// message of at most 128 KiB as the recv<T> types below needs at most 16x
// its size (std::optional<std::int64_t>, 16 bytes, encoded in 1), 2 MiB.
// tools/fuzz.sh runs this target with -max_len=131072 -malloc_limit_mb=5.
//
// Seeds: MP_FUZZ_WRITE_SEEDS=DIR ./connection_fuzz writes streams made by
// a real Connection's send() and send_bytes() (tools/fuzz.sh
// --write-seeds), committed in fuzz/corpus/connection/.
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <variant>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "mp/codec.h"
#include "mp/connection.h"
#include "mp/errors.h"

namespace {

using mp_fuzz::finding;

constexpr std::size_t kScript = 5;
// Streams up to this size fit in a pipe or a socket's buffer whole and are
// written before the first receive; longer ones by a thread.
constexpr std::size_t kSyncWrite = 32 * 1024;

using RecvMap = std::map<std::string, std::vector<std::optional<std::int64_t>>>;
using RecvTuple =
    std::tuple<std::int32_t, std::string, std::variant<std::monostate, std::int64_t, std::string>>;

// The reference parser: where the next message starts in the stream.
struct Model {
  std::string_view stream;
  std::size_t pos = 0;
  bool eof = false;  // an EOFError was raised: every later receive raises it too

  // header() is the next length, or nullopt when fewer than 8 bytes remain.
  std::optional<std::uint64_t> header() const {
    if (stream.size() - pos < 8) return std::nullopt;
    std::uint64_t n;
    std::memcpy(&n, stream.data() + pos, 8);
    return n;
  }
  // whole(n): the payload of n bytes after the header, if all of it came.
  std::optional<std::string_view> whole(std::uint64_t n) const {
    if (stream.size() - pos - 8 < n) return std::nullopt;
    return stream.substr(pos + 8, static_cast<std::size_t>(n));
  }
};

// Outcome of one receive, as the harness saw it or the model predicts it.
enum class Kind { kValue, kEOF, kValueError, kBufferTooShort, kCodecError };

const char* name(Kind k) {
  switch (k) {
    case Kind::kValue:
      return "a value";
    case Kind::kEOF:
      return "EOFError";
    case Kind::kValueError:
      return "ValueError";
    case Kind::kBufferTooShort:
      return "BufferTooShort";
    case Kind::kCodecError:
      return "CodecError";
  }
  return "?";
}

// run(f) calls f and classifies what it raised; other exceptions are
// findings.
template <class F>
Kind run(F&& f) {
  try {
    f();
    return Kind::kValue;
  } catch (const mp::EOFError&) {
    return Kind::kEOF;
  } catch (const mp::BufferTooShort&) {
    return Kind::kBufferTooShort;
  } catch (const mp::CodecError&) {
    return Kind::kCodecError;
  } catch (const mp::ValueError&) {
    return Kind::kValueError;
  } catch (const std::exception& e) {
    finding("a receive raised " + mp_fuzz::describe(e));
  }
}

void expect(Kind got, Kind want, const char* op) {
  if (got != want) finding(fmt::format("{}: got {}, expected {}", op, name(got), name(want)));
}

// A message cut short: EOFError, or ValueError for a claim no string holds.
Kind cut_short(std::uint64_t n) {
  return n > std::string().max_size() ? Kind::kValueError : Kind::kEOF;
}

// end(m, got, want, op): a receive that found no whole message. Returns
// whether the calls go on: once after the first EOFError (the next must
// raise it again), never after a ValueError (the stream is not framed any
// more: where the next header would be is unknown).
bool end(Model& m, Kind got, Kind want, const char* op) {
  expect(got, want, op);
  if (want != Kind::kEOF) return false;
  const bool first = !m.eof;
  m.eof = true;
  return first;
}

// One receive call each, checked against the model. Each returns whether
// the calls go on.
bool recv_bytes(mp::Connection& c, Model& m, std::optional<std::size_t> maxlength) {
  const char* op = maxlength ? "recv_bytes(maxlength)" : "recv_bytes()";
  std::string got;
  const Kind k = run([&] { got = c.recv_bytes(maxlength); });
  const auto n = m.header();
  if (m.eof || !n) return end(m, k, Kind::kEOF, op);
  if (maxlength && *n > *maxlength) {
    expect(k, Kind::kValueError, op);  // and the message stays unread
    return true;
  }
  const auto payload = m.whole(*n);
  if (!payload) return end(m, k, cut_short(*n), op);
  expect(k, Kind::kValue, op);
  if (got != *payload) finding(fmt::format("{}: the bytes differ from what was sent", op));
  m.pos += 8 + payload->size();
  return true;
}

bool recv_bytes_into(mp::Connection& c, Model& m, std::size_t size, std::size_t offset) {
  const char* op = "recv_bytes_into";
  constexpr std::byte kGuard{0xA5};
  std::vector<std::byte> buffer(size, kGuard);
  std::size_t got = 0;
  std::string too_short;
  const Kind k = run([&] {
    try {
      got = c.recv_bytes_into(std::span<std::byte>(buffer), offset);
    } catch (const mp::BufferTooShort& e) {
      too_short = e.message();
      throw;
    }
  });
  const auto n = m.header();
  if (m.eof || !n) return end(m, k, Kind::kEOF, op);
  const auto payload = m.whole(*n);
  if (!payload) return end(m, k, *n <= size - offset ? Kind::kEOF : cut_short(*n), op);
  m.pos += 8 + payload->size();
  if (payload->size() > size - offset) {
    expect(k, Kind::kBufferTooShort, op);
    if (too_short != *payload) finding("BufferTooShort does not carry the whole message");
    return true;
  }
  expect(k, Kind::kValue, op);
  if (got != payload->size()) finding("recv_bytes_into returned the wrong size");
  const auto* bytes = reinterpret_cast<const char*>(buffer.data());
  if (std::string_view(bytes + offset, got) != *payload) finding("recv_bytes_into: bytes differ");
  for (std::size_t i = 0; i < size; ++i) {
    if ((i < offset || i >= offset + got) && buffer[i] != kGuard) {
      finding("recv_bytes_into wrote outside the message's place");
    }
  }
  return true;
}

template <class T>
bool recv_value(mp::Connection& c, Model& m) {
  const char* op = "recv<T>";
  std::optional<T> got;
  const Kind k = run([&] { got.emplace(c.recv<T>()); });
  const auto n = m.header();
  if (m.eof || !n) return end(m, k, Kind::kEOF, op);
  const auto payload = m.whole(*n);
  if (!payload) return end(m, k, cut_short(*n), op);
  m.pos += 8 + payload->size();
  std::optional<T> want;
  const Kind predicted = run([&] { want.emplace(mp::decode<T>(*payload)); });
  expect(k, predicted, op);
  if (got && !(*got == *want)) finding("recv<T> gave another value");
  return true;
}

// The receive calls a script byte chooses from.
bool step(std::uint8_t op, mp::Connection& c, Model& m, bool all_written) {
  switch (op % 11) {
    case 0:
      return recv_bytes(c, m, std::nullopt);
    case 1:
      return recv_bytes(c, m, 64);
    case 2:
      return recv_bytes_into(c, m, 64, 0);
    case 3:
      return recv_bytes_into(c, m, 4096, 16);
    case 4:
      return recv_value<std::string>(c, m);
    case 5:
      return recv_value<std::vector<std::int32_t>>(c, m);
    case 6:
      return recv_value<RecvMap>(c, m);
    case 7:
      return recv_value<RecvTuple>(c, m);
    case 8:
      return recv_bytes(c, m, 0);  // refuses all but empty messages
    case 9:
      return recv_bytes_into(c, m, 16, 16);  // room for empty messages only
    default: {
      bool ready = false;
      const Kind k = run([&] { ready = c.poll(); });
      expect(k, Kind::kValue, "poll()");
      // With the whole stream written and its end closed, something (a
      // message or end-of-file) is always pending.
      if (all_written && !ready) finding("poll() is false with data or end-of-file pending");
      return true;
    }
  }
}

// write_all writes the stream into fd (raw, as a peer would).
void write_all(int fd, std::string_view bytes, bool socket) {
  while (!bytes.empty()) {
    const ssize_t w = socket ? ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL)
                             : ::write(fd, bytes.data(), bytes.size());
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;  // the reader stopped early and closed its end
    bytes.remove_prefix(static_cast<std::size_t>(w));
  }
}

// Seeds: script prefixes with streams a real Connection wrote.
std::vector<std::string> make_seeds() {
  std::vector<std::string> streams;
  auto record = [&](auto&& send_all) {
    auto [reader, writer] = mp::Pipe(false);
    std::string wire;
    std::thread t([&, &reader = reader] {
      char buf[65536];
      ssize_t r;
      while ((r = ::read(reader.fileno(), buf, sizeof buf)) > 0) {
        wire.append(buf, static_cast<std::size_t>(r));
      }
    });
    send_all(writer);
    writer.close();
    t.join();
    streams.push_back(wire);
  };
  record([](mp::Connection& w) {
    w.send(std::string("hello"));
    w.send_bytes(std::string_view(""));
    w.send(std::vector<std::int32_t>{1, 2, 3});
  });
  record([](mp::Connection& w) {
    w.send(RecvMap{{"a", {1, std::nullopt, 3}}, {"b", {}}});
    w.send(RecvTuple{7, "seven", std::int64_t{-7}});
    w.send(RecvTuple{8, "", std::string("eight")});
  });
  record([](mp::Connection& w) {
    w.send_bytes(std::string(100, 'b'));
    w.send_bytes(std::string(10, 's'));
    w.send_bytes(std::string(5000, 'm'));
  });
  record([](mp::Connection& w) {
    w.send_bytes(std::string(60000, 'L'));  // past the read-ahead's 48 KiB
    w.send(std::string("after"));
  });
  const std::string scripts[] = {
      {'\0', 4, 0, 5, 1},
      {'\1', 6, 7, 10, 6},
      {'\0', 0, 2, 3, 8},
      {'\1', 9, 4, 0, 4},
  };
  std::vector<std::string> seeds;
  for (std::size_t i = 0; i < streams.size(); ++i) {
    seeds.push_back(scripts[i] + streams[i]);
    seeds.push_back(scripts[(i + 1) % 4] + streams[i]);
  }
  return seeds;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // The harness's own writes into a pipe whose reader stopped fail with
  // EPIPE instead of killing it.
  ::signal(SIGPIPE, SIG_IGN);
  mp_fuzz::write_seeds_if_asked("connection", make_seeds());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < kScript) return 0;
  const bool simplex = data[0] & 1;
  const std::uint8_t* script = data + 1;
  const std::string_view stream(reinterpret_cast<const char*>(data) + kScript, size - kScript);

  auto [reader, writer] = mp::Pipe(!simplex);
  const bool threaded = stream.size() > kSyncWrite;
  std::thread writer_thread;
  auto write_and_close = [&, &writer = writer] {
    write_all(writer.fileno(), stream, !simplex);
    writer.close();
  };
  if (threaded) {
    writer_thread = std::thread(write_and_close);
  } else {
    write_and_close();
  }

  Model model{stream};
  // Each call consumes a message, raises EOFError, or is one of the few that
  // consume nothing (poll, a maxlength refusal): a bound on the calls.
  const std::size_t max_calls = 4 * (stream.size() / 8 + 2);
  for (std::size_t i = 0; i < max_calls; ++i) {
    if (!step(script[i % 4], reader, model, !threaded)) break;
  }
  reader.close();  // a writer still blocked gets EPIPE and ends
  if (writer_thread.joinable()) writer_thread.join();
  return 0;
}
