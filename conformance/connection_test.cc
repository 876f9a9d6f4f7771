// Conformance: mp/connection.h.
// CPython docs: multiprocessing — "Pipes and Queues" (Pipe([duplex])),
// "Connection Objects" (send, recv, fileno, close, poll, send_bytes,
// recv_bytes, recv_bytes_into, BufferTooShort), "Listeners and Clients"
// (multiprocessing.connection.wait), and "Programming guidelines" (joining
// processes that use pipes; inherited handles).
#include "mp/connection.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <tuple>
#include <variant>
#include <vector>

#include "conformance/test_util.h"
#include "mp/errors.h"
#include "mp/os.h"
#include "mp/process.h"
#include "mp/synchronize.h"

namespace {

using namespace std::chrono_literals;
using mp_test::Stopwatch;

bool fd_is_open(int fd) { return fcntl(fd, F_GETFD) != -1; }

// huge_string(n): n zero bytes, backed by transparent huge pages where the
// kernel allows, so that touching 256 MiB costs milliseconds, not seconds.
std::string huge_string(std::size_t n) {
  std::string s;
  s.reserve(n);
  const auto begin = reinterpret_cast<std::uintptr_t>(s.data());
  constexpr std::uintptr_t kHuge = 2u << 20;
  const std::uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
  const std::uintptr_t last = (begin + n) & ~(kHuge - 1);
  if (last > first) (void)madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
  s.resize(n);
  return s;
}

// Fork a child running f() then _exit(0) (or 1 on an exception); returns
// its pid. The parent must reap it with reap(). Only for the tests whose
// subject is a fork (MP_FORK_ONLY); the others start an mp::Process.
template <class F>
pid_t fork_child(F f) {
  pid_t pid = mp::fork();
  if (pid == 0) {
    int code = 0;
    try {
      f();
    } catch (...) {
      code = 1;
    }
    _exit(code);
  }
  return pid;
}

int reap(pid_t pid) {
  int status = 0;
  EXPECT_EQ(waitpid(pid, &status, 0), pid);
  return status;
}

struct Unencodable {
  int v;
};

// ---- children -------------------------------------------------------------------
// The suite also runs with forkserver and spawn as the default start method
// (conformance/defs.bzl), so children run targets that travel: functions
// taking the ends they use as mp::Connection& (passed as std::ref(end)) and
// mp::Event for hand-shakes. A forked child holds a copy of every end; one
// given both ends of a pipe closes the end it does not use, as CPython's
// guidelines ask. A spawn or forkserver child holds only the ends passed.

// start_child(target, args...) starts a child with the run's start method.
template <class F, class... Args>
mp::Process start_child(F target, Args&&... args) {
  mp::Process p(target, std::forward<Args>(args)...);
  p.start();
  return p;
}

// exitcode_after_join(p) waits for p to end and returns its exit code.
std::optional<int> exitcode_after_join(mp::Process& p) {
  p.join();
  return p.exitcode();
}

void wait_event(mp::Event e) { e.wait(); }

using Record =
    std::tuple<int, std::string, std::vector<double>, std::optional<std::map<std::string, int>>>;

// echo_transformed echoes a Record with its first field plus one, then the
// string of a variant with "!", so both directions cross processes.
void echo_transformed(mp::Connection& child) {
  auto r = child.recv<Record>();
  std::get<0>(r) += 1;
  child.send(r);
  auto v = child.recv<std::variant<int, std::string>>();
  child.send(std::get<std::string>(v) + "!");
}

// sized_message(i): message i of a stream whose sizes grow past the
// read-ahead, i * 997 copies of one letter.
std::string sized_message(int i) {
  return std::string(static_cast<std::size_t>(i) * 997, static_cast<char>('a' + i % 26));
}

void send_sized_messages(mp::Connection& unused, mp::Connection& w, int count) {
  unused.close();
  for (int i = 0; i < count; ++i) w.send(sized_message(i));
}

// mixed_size(i) / mixed_fill(i, k): message i of a stream whose sizes jump
// across the read-ahead and large-message thresholds both ways, and its
// byte k. The stride 3 is prime to the 14 sizes, so every 14 messages visit
// them all.
std::size_t mixed_size(int i) {
  static const std::size_t kSizes[] = {0,     1,     7,     8,     9,      4095, 32767,
                                       32768, 65535, 65536, 65537, 300000, 3,    100000};
  return kSizes[(i * 3) % 14] + static_cast<std::size_t>(i % 3);
}
char mixed_fill(int i, std::size_t k) {
  return static_cast<char>((i * 31 + static_cast<int>(k % 251)) & 0xff);
}

// patterned(n, i): n bytes, byte k being mixed_fill(i, k).
std::string patterned(std::size_t n, int i) {
  std::string m(n, '\0');
  for (std::size_t k = 0; k < m.size(); ++k) m[k] = mixed_fill(i, k);
  return m;
}

void send_mixed_messages(mp::Connection& unused, mp::Connection& w, int count) {
  unused.close();
  for (int i = 0; i < count; ++i) w.send_bytes(patterned(mixed_size(i), i));
}

void echo_bytes_once(mp::Connection& unused, mp::Connection& c) {
  unused.close();
  std::string m = c.recv_bytes();
  c.send_bytes(m);
}

void send_late_on_cue(mp::Event go, mp::Connection& a) {
  go.wait();
  a.send(std::string("late"));
}

// send_late_then_linger sends "late" after 100 ms and ends 100 ms later,
// when its copy of w closes.
void send_late_then_linger(mp::Connection& unused, mp::Connection& w) {
  unused.close();
  std::this_thread::sleep_for(100ms);
  w.send(std::string("late"));
  std::this_thread::sleep_for(100ms);
}

// send_64mib_on_cue sends one 64 MiB message, which blocks until the reader
// drains it, after saying it is about to start.
void send_64mib_on_cue(mp::Connection& unused, mp::Connection& w, mp::Event started) {
  unused.close();
  std::string big(64u << 20, 'k');
  started.set();
  w.send_bytes(big);
}

// close_peer_copy_on_cue closes its copy of w when told, then says so.
void close_peer_copy_on_cue(mp::Connection& r, mp::Connection& w, mp::Event close_now,
                            mp::Event closed) {
  close_now.wait();
  w.close();
  closed.set();
  r.close();
}

// exit_zero_at_eof exits 0 when its end reports end-of-file, 3 on a message.
void exit_zero_at_eof(mp::Connection& c) {
  try {
    (void)c.recv<int>();
    mp::exit(3);
  } catch (const mp::EOFError&) {
    mp::exit(0);
  }
}

void send_ten_pairs(int c, mp::Connection& w) {
  for (int i = 0; i < 10; ++i) w.send(std::pair<int, int>(c, i));
  w.close();
}

// mp_send_raises_broken_pipe() sends into a new simplex pipe whose reader is
// closed: true when that raised mp::BrokenPipeError (and did not kill us).
bool mp_send_raises_broken_pipe() {
  auto [r, w] = mp::Pipe(false);
  r.close();
  try {
    w.send(1);
  } catch (const mp::BrokenPipeError&) {
    return true;
  }
  return false;
}

// raw_write_to_closed_pipe() write(2)s, outside mp, into a pipe whose reader
// is closed: SIGPIPE's classic cause. False if no pipe could be made.
bool raw_write_to_closed_pipe() {
  int fds[2];
  if (pipe(fds) != 0) return false;
  ::close(fds[0]);
  (void)!::write(fds[1], "x", 1);
  ::close(fds[1]);
  return true;
}

// The SIGPIPE children exit with: 2 (the disposition changed), 3 (no pipe
// for the raw write), 4 (the raw write did not kill), 5 (mp's send did not
// raise BrokenPipeError), 6 (the program's handler was not called once).
void raw_write_dies_of_sigpipe_after_default_restored() {
  // mp's handler is installed (in a forked child, inherited from the
  // parent's Pipe(false)); SIG_DFL replaces it, and the next simplex Pipe()
  // inside mp_send_raises_broken_pipe re-installs it over SIG_DFL.
  (void)mp::Pipe(false);
  signal(SIGPIPE, SIG_DFL);
  if (!mp_send_raises_broken_pipe()) _exit(5);
  if (!raw_write_to_closed_pipe()) _exit(3);
  _exit(4);  // the raw write must have killed us
}

volatile sig_atomic_t g_sigpipe_calls = 0;

void programs_own_sigpipe_handler_sees_only_raw_writes() {
  signal(SIGPIPE, [](int) { g_sigpipe_calls = g_sigpipe_calls + 1; });
  if (!mp_send_raises_broken_pipe()) _exit(5);
  if (g_sigpipe_calls != 0) _exit(6);  // mp's own SIGPIPE must not reach it
  if (!raw_write_to_closed_pipe()) _exit(3);
  _exit(g_sigpipe_calls == 1 ? 0 : 6);
}

void ignored_sigpipe_stays_ignored() {
  signal(SIGPIPE, SIG_IGN);
  if (!mp_send_raises_broken_pipe()) _exit(5);
  struct sigaction now;
  sigaction(SIGPIPE, nullptr, &now);
  _exit(now.sa_handler == SIG_IGN ? 0 : 2);
}

}  // namespace

// A user type whose encoding fails at run time (e.g. a value it refuses).
template <>
struct mp::codec_traits<Unencodable> {
  static void encode(mp::Encoder& e, const Unencodable& u) {
    if (u.v < 0) throw mp::ValueError("negative values are not encodable");
    e.write(u.v);
  }
  static Unencodable decode(mp::Decoder& d) { return Unencodable{d.read<int>()}; }
};

namespace {

// ---- Pipe() -----------------------------------------------------------------

TEST(Pipe, DuplexEndsBothSendAndReceive) {
  auto [a, b] = mp::Pipe();
  EXPECT_TRUE(a.readable() && a.writable() && b.readable() && b.writable());
  a.send(std::string("to b"));
  b.send(42);
  EXPECT_EQ(b.recv<std::string>(), "to b");
  EXPECT_EQ(a.recv<int>(), 42);
}

TEST(Pipe, SimplexFirstEndReadsSecondEndWrites) {
  auto [r, w] = mp::Pipe(false);
  EXPECT_TRUE(r.readable());
  EXPECT_FALSE(r.writable());
  EXPECT_FALSE(w.readable());
  EXPECT_TRUE(w.writable());
  w.send(std::string("one way"));
  EXPECT_EQ(r.recv<std::string>(), "one way");
}

TEST(Pipe, SimplexWrongDirectionRaises) {
  auto [r, w] = mp::Pipe(false);
  try {
    r.send(1);
    FAIL() << "send on the reading end did not raise";
  } catch (const mp::ValueError& e) {
    EXPECT_STREQ(e.what(), "connection is read-only");
  }
  try {
    (void)w.recv<int>();
    FAIL() << "recv on the writing end did not raise";
  } catch (const mp::ValueError& e) {
    EXPECT_STREQ(e.what(), "connection is write-only");
  }
  EXPECT_THROW(r.send_bytes(std::string_view("x")), mp::ValueError);
  EXPECT_THROW(w.recv_bytes(), mp::ValueError);
  EXPECT_THROW(w.poll(), mp::ValueError);
}

TEST(Pipe, DescriptorsAreCloseOnExec) {
  for (bool duplex : {true, false}) {
    auto [a, b] = mp::Pipe(duplex);
    EXPECT_TRUE(fcntl(a.fileno(), F_GETFD) & FD_CLOEXEC);
    EXPECT_TRUE(fcntl(b.fileno(), F_GETFD) & FD_CLOEXEC);
  }
}

TEST(Pipe, AdoptedDescriptorSpeaksTheSameFraming) {
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
  mp::Connection r(fds[0], true, false), w(fds[1], false, true);
  w.send(std::string("adopted"));
  EXPECT_EQ(r.recv<std::string>(), "adopted");
  EXPECT_THROW(mp::Connection(-1, true, true), mp::ValueError);
  int fd = dup(fds[0]);
  EXPECT_THROW(mp::Connection(fd, false, false), mp::ValueError);
  ::close(fd);
}

// ---- send / recv of values ----------------------------------------------------

TEST(Connection, SendRecvValuesThroughAChildProcess) {
  auto [parent, child] = mp::Pipe();
  mp::Process p = start_child(echo_transformed, std::ref(child));
  child.close();
  Record r{1, "rec", {1.5, 2.5}, std::map<std::string, int>{{"k", 7}}};
  parent.send(r);
  auto back = parent.recv<Record>();
  std::get<0>(r) = 2;
  EXPECT_EQ(back, r);
  parent.send(std::variant<int, std::string>(std::string("hi")));
  EXPECT_EQ(parent.recv<std::string>(), "hi!");
  EXPECT_EQ(exitcode_after_join(p), 0);
}

TEST(Connection, RecvOfTheWrongTypeRaisesCodecError) {
  auto [a, b] = mp::Pipe();
  a.send(std::string("not an int"));
  EXPECT_THROW((void)b.recv<std::int32_t>(), mp::CodecError);
  // The bad message was consumed; the stream stays in step.
  a.send(7);
  EXPECT_EQ(b.recv<int>(), 7);
}

TEST(Connection, ValueThatFailsToEncodeRaisesInSendAndWritesNothing) {
  auto [a, b] = mp::Pipe();
  EXPECT_THROW(a.send(Unencodable{-1}), mp::ValueError);
  EXPECT_FALSE(b.poll());
  a.send(Unencodable{5});
  EXPECT_EQ(b.recv<Unencodable>().v, 5);
  EXPECT_FALSE(b.poll());
}

// ---- bytes --------------------------------------------------------------------

TEST(Connection, SendBytesHonoursOffsetAndSize) {
  auto [a, b] = mp::Pipe();
  std::string_view buf = "0123456789";
  a.send_bytes(buf);
  a.send_bytes(buf, 3);
  a.send_bytes(buf, 3, 4);
  a.send_bytes(buf, 10, 0);
  EXPECT_EQ(b.recv_bytes(), "0123456789");
  EXPECT_EQ(b.recv_bytes(), "3456789");
  EXPECT_EQ(b.recv_bytes(), "3456");
  EXPECT_EQ(b.recv_bytes(), "");
}

TEST(Connection, SendBytesOutOfRangeRaisesAndWritesNothing) {
  auto [a, b] = mp::Pipe();
  std::string_view buf = "abc";
  try {
    a.send_bytes(buf, 4);
    FAIL();
  } catch (const mp::ValueError& e) {
    EXPECT_STREQ(e.what(), "buffer length < offset");
  }
  try {
    a.send_bytes(buf, 1, 3);
    FAIL();
  } catch (const mp::ValueError& e) {
    EXPECT_STREQ(e.what(), "buffer length < offset + size");
  }
  EXPECT_FALSE(b.poll());
}

TEST(Connection, RecvBytesLongerThanMaxlengthRaisesAndLeavesMessage) {
  auto [a, b] = mp::Pipe();
  a.send_bytes(std::string_view("0123456789"));
  try {
    (void)b.recv_bytes(4);
    FAIL() << "no error";
  } catch (const mp::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("bad message length"), std::string::npos);
  }
  EXPECT_TRUE(b.poll());
  EXPECT_EQ(b.recv_bytes(10), "0123456789");
}

TEST(Connection, RecvBytesIntoWritesAtOffsetAndReturnsSize) {
  auto [a, b] = mp::Pipe();
  a.send_bytes(std::string_view("hello"));
  std::array<char, 8> buf;
  buf.fill('.');
  EXPECT_EQ(b.recv_bytes_into(std::span<char>(buf), 2), 5u);
  EXPECT_EQ(std::string(buf.data(), buf.size()), "..hello.");
  a.send_bytes(std::string_view("exact"));
  std::array<char, 5> exact;
  EXPECT_EQ(b.recv_bytes_into(std::span<char>(exact)), 5u);
  EXPECT_EQ(std::string(exact.data(), 5), "exact");
}

TEST(Connection, RecvBytesIntoTooShortRaisesBufferTooShortWithWholeMessage) {
  auto [a, b] = mp::Pipe();
  a.send_bytes(std::string_view("a long message"));
  a.send_bytes(std::string_view("next"));
  std::array<char, 8> buf;
  try {
    b.recv_bytes_into(std::span<char>(buf), 2);
    FAIL() << "no error";
  } catch (const mp::BufferTooShort& e) {
    EXPECT_EQ(e.message(), "a long message");
  }
  EXPECT_EQ(b.recv_bytes(), "next");
}

TEST(Connection, RecvBytesIntoOffsetBeyondBufferRaises) {
  auto [a, b] = mp::Pipe();
  a.send_bytes(std::string_view("x"));
  std::array<char, 4> buf;
  try {
    b.recv_bytes_into(std::span<char>(buf), 5);
    FAIL() << "no error";
  } catch (const mp::ValueError& e) {
    EXPECT_STREQ(e.what(), "offset too large");
  }
  EXPECT_EQ(b.recv_bytes(), "x");  // nothing consumed
}

TEST(Connection, MessageBoundariesAreKept) {
  for (bool duplex : {true, false}) {
    auto [r, w] = mp::Pipe(duplex);
    w.send_bytes(std::string_view("ab"));
    w.send_bytes(std::string_view("c"));
    w.send(std::string("de"));
    w.send(std::string("f"));
    EXPECT_EQ(r.recv_bytes(), "ab");
    EXPECT_EQ(r.recv_bytes(), "c");
    EXPECT_EQ(r.recv<std::string>(), "de");
    EXPECT_EQ(r.recv<std::string>(), "f");
    EXPECT_FALSE(r.poll());
  }
}

TEST(Connection, EmptyMessageIsAMessage) {
  auto [a, b] = mp::Pipe();
  a.send_bytes(std::string_view());
  EXPECT_TRUE(b.poll());
  EXPECT_EQ(b.recv_bytes(), "");
  EXPECT_FALSE(b.poll());
}

TEST(Connection, ManyMessagesLargerThanTheReadAheadKeepTheirOrder) {
  auto [r, w] = mp::Pipe(false);
  mp::Process p = start_child(send_sized_messages, std::ref(r), std::ref(w), 200);
  w.close();
  for (int i = 0; i < 200; ++i) {
    auto s = r.recv<std::string>();
    ASSERT_EQ(s.size(), static_cast<std::size_t>(i) * 997);
    ASSERT_TRUE(s == sized_message(i)) << "message " << i;
  }
  EXPECT_THROW(r.recv_bytes(), mp::EOFError);
  EXPECT_EQ(exitcode_after_join(p), 0);
}

TEST(Connection, MixedSmallAndLargeMessagesKeepContentAndOrder) {
  // Sizes jump across the read-ahead and large-message thresholds both ways
  // (mixed_size).
  for (bool duplex : {true, false}) {
    auto [r, w] = mp::Pipe(duplex);
    mp::Process p = start_child(send_mixed_messages, std::ref(r), std::ref(w), 150);
    w.close();
    std::vector<char> into(400000);
    for (int i = 0; i < 150; ++i) {
      std::string m;
      if (i % 2 == 0) {
        m = r.recv_bytes();
      } else {
        std::size_t n = r.recv_bytes_into(std::span<char>(into));
        m.assign(into.data(), n);
      }
      ASSERT_EQ(m.size(), mixed_size(i)) << "message " << i;
      for (std::size_t k = 0; k < m.size(); ++k) {
        ASSERT_EQ(m[k], mixed_fill(i, k)) << "message " << i << " byte " << k;
      }
    }
    EXPECT_THROW(r.recv_bytes(), mp::EOFError);
    EXPECT_EQ(exitcode_after_join(p), 0);
  }
}

TEST(Connection, RoundTrip256MiBThroughAChild) {
  constexpr std::size_t kSize = 256u << 20;
  auto [parent, child] = mp::Pipe();
  mp::Process p = start_child(echo_bytes_once, std::ref(parent), std::ref(child));
  child.close();
  std::string big = huge_string(kSize);
  for (std::size_t i = 0; i < kSize; i += 4096) {
    const std::uint64_t stamp = i * 0x9E3779B97F4A7C15ull;
    std::memcpy(big.data() + i, &stamp, sizeof stamp);
  }
  parent.send_bytes(big);
  std::string back = parent.recv_bytes();
  ASSERT_EQ(back.size(), kSize);
  EXPECT_TRUE(back == big);
  EXPECT_EQ(exitcode_after_join(p), 0);
}

// An end passed to a child carries what its read-ahead holds: the child
// resumes the stream where the end stands, mid-message included, under every
// start method (a forked child has it in its copy of memory; the others get
// it with the descriptor).
TEST(Connection, AnEndPassedToAChildCarriesItsReadAhead) {
  auto [a, b] = mp::Pipe();
  const std::string big = patterned(100'000, 1);
  a.send(1);
  a.send_bytes(big);
  EXPECT_EQ(b.recv<int>(), 1);
  ASSERT_TRUE(b.has_buffered_data());  // the start of the second message
  mp::Process p = start_child(echo_bytes_once, std::ref(a), std::ref(b));
  std::string back = a.poll(30s) ? a.recv_bytes() : std::string();
  a.close();  // a child still waiting for the rest of its message sees EOF
  EXPECT_TRUE(back == big) << back.size() << " bytes came back";
  EXPECT_EQ(exitcode_after_join(p), 0);
}

// ---- poll -----------------------------------------------------------------------

TEST(Connection, PollWithoutTimeoutReturnsAtOnce) {
  auto [a, b] = mp::Pipe();
  Stopwatch sw;
  EXPECT_FALSE(b.poll());
  EXPECT_LT(sw.elapsed(), 500ms);
  a.send(1);
  EXPECT_TRUE(b.poll());
}

TEST(Connection, PollTimeoutReturnsFalseAfterAboutTheTimeout) {
  auto [a, b] = mp::Pipe();
  Stopwatch sw;
  EXPECT_FALSE(b.poll(300ms));
  EXPECT_GE(sw.elapsed(), 250ms);
  EXPECT_LT(sw.elapsed(), 1300ms);
}

TEST(Connection, PollForeverReturnsWhenAChildSends) {
  auto [a, b] = mp::Pipe();
  mp::Event go;
  mp::Process p = start_child(send_late_on_cue, go, std::ref(a));
  a.close();
  go.set();
  EXPECT_TRUE(b.poll(std::nullopt));
  EXPECT_EQ(b.recv<std::string>(), "late");
  EXPECT_EQ(exitcode_after_join(p), 0);
}

// A receive that finds nothing polls briefly (sockets) and then must block:
// a message that comes long after that still arrives, and so does EOF.
TEST(Connection, RecvBlocksPastItsShortPollForALateMessageThenSeesEndOfFile) {
  for (bool duplex : {true, false}) {
    auto [r, w] = mp::Pipe(duplex);
    mp::Process p = start_child(send_late_then_linger, std::ref(r), std::ref(w));
    w.close();
    Stopwatch sw;
    EXPECT_EQ(r.recv<std::string>(), "late");
    EXPECT_GE(sw.elapsed(), 80ms);
    EXPECT_THROW(r.recv<std::string>(), mp::EOFError);
    EXPECT_GE(sw.elapsed(), 160ms);
    EXPECT_EQ(exitcode_after_join(p), 0);
  }
}

TEST(Connection, PollIsTrueAtEndOfFile) {
  auto [a, b] = mp::Pipe();
  a.close();
  EXPECT_TRUE(b.poll(5s));
  EXPECT_THROW(b.recv_bytes(), mp::EOFError);
}

// ---- end of file, broken pipe, closing ---------------------------------------------

TEST(Connection, MessagesSentBeforePeerClosedAreReceivedThenEOFError) {
  for (bool duplex : {true, false}) {
    auto [r, w] = mp::Pipe(duplex);
    w.send(1);
    w.send(2);
    w.close();
    EXPECT_EQ(r.recv<int>(), 1);
    EXPECT_EQ(r.recv<int>(), 2);
    EXPECT_THROW(r.recv<int>(), mp::EOFError);
    EXPECT_THROW(r.recv<int>(), mp::EOFError);
  }
}

TEST(Connection, PeerKilledMidMessageGivesEOFError) {
  auto [r, w] = mp::Pipe();
  mp::Event started;
  // The child's send blocks: the parent reads nothing until the kill.
  mp::Process p = start_child(send_64mib_on_cue, std::ref(r), std::ref(w), started);
  w.close();
  ASSERT_TRUE(started.wait(60s));
  ASSERT_TRUE(r.poll(10s));  // the header and part of the body are there
  p.kill();
  ASSERT_EQ(exitcode_after_join(p), -SIGKILL);
  try {
    (void)r.recv_bytes();
    FAIL() << "a torn message was received";
  } catch (const mp::EOFError& e) {
    EXPECT_NE(std::string(e.what()).find("during message"), std::string::npos) << e.what();
  }
}

TEST(Connection, SendToClosedPeerRaisesBrokenPipeErrorWithoutSigpipe) {
  for (bool duplex : {true, false}) {
    auto [r, w] = mp::Pipe(duplex);
    r.close();
    EXPECT_THROW(w.send(1), mp::BrokenPipeError);
    EXPECT_THROW(w.send_bytes(std::string(1 << 20, 'x')), mp::BrokenPipeError);
  }
}

TEST(Connection, SigpipeOutsideMpStillHasItsDefaultEffect) {
  // mp's SIGPIPE handling covers mp's own writes only: a raw write to a
  // closed pipe elsewhere in the program still dies of SIGPIPE.
  auto [r, w] = mp::Pipe(false);  // installs mp's handler if needed
  mp::Process p = start_child(raw_write_dies_of_sigpipe_after_default_restored);
  EXPECT_EQ(exitcode_after_join(p), -SIGPIPE);
}

TEST(Connection, SigpipeOfTheProgramsOwnHandlerIsStillCalled) {
  mp::Process p = start_child(programs_own_sigpipe_handler_sees_only_raw_writes);
  EXPECT_EQ(exitcode_after_join(p), 0);
}

TEST(Connection, IgnoredSigpipeStaysIgnored) {
  mp::Process p = start_child(ignored_sigpipe_stays_ignored);
  EXPECT_EQ(exitcode_after_join(p), 0);
}

TEST(Connection, UseOfOwnClosedEndRaisesValueError) {
  auto [a, b] = mp::Pipe();
  a.close();
  EXPECT_TRUE(a.closed());
  try {
    a.send(1);
    FAIL();
  } catch (const mp::ValueError& e) {
    EXPECT_STREQ(e.what(), "handle is closed");
  }
  EXPECT_THROW(a.recv<int>(), mp::ValueError);
  EXPECT_THROW(a.recv_bytes(), mp::ValueError);
  EXPECT_THROW(a.poll(), mp::ValueError);
  EXPECT_THROW(a.fileno(), mp::ValueError);
}

TEST(Connection, CloseIsIdempotentAndDestructorCloses) {
  int fd_a, fd_b;
  {
    auto [a, b] = mp::Pipe();
    fd_a = a.fileno();
    fd_b = b.fileno();
    a.close();
    a.close();
    EXPECT_FALSE(fd_is_open(fd_a));
    EXPECT_TRUE(fd_is_open(fd_b));
  }
  EXPECT_FALSE(fd_is_open(fd_b));
}

TEST(Connection, MovedConnectionKeepsItsDescriptorAndReadAhead) {
  auto [a, b] = mp::Pipe();
  a.send(1);
  a.send(2);
  EXPECT_EQ(b.recv<int>(), 1);  // 2 is now in b's read-ahead
  mp::Connection moved = std::move(b);
  EXPECT_TRUE(b.closed());
  EXPECT_TRUE(moved.poll());
  EXPECT_EQ(moved.recv<int>(), 2);
}

TEST(Connection, ALargeMessageGrowsASimplexPipeOnceAndSmallOnesDoNot) {
  auto [r, w] = mp::Pipe(false);
  const int initial = fcntl(w.fileno(), F_GETPIPE_SZ);
  ASSERT_GT(initial, 0);
  if (initial >= 128 * 1024) GTEST_SKIP() << "this system's pipes start at " << initial << " bytes";
  const std::string small(16 * 1024 - 1, 's');
  w.send_bytes(std::as_bytes(std::span(small)));
  EXPECT_EQ(fcntl(w.fileno(), F_GETPIPE_SZ), initial) << "a message under 16 KiB grew the pipe";
  EXPECT_EQ(r.recv_bytes(), small);
  const std::string large(16 * 1024, 'l');
  w.send_bytes(std::as_bytes(std::span(large)));
  EXPECT_EQ(fcntl(w.fileno(), F_GETPIPE_SZ), 128 * 1024);
  EXPECT_EQ(r.recv_bytes(), large);
  // send(v) of a large value grows it too (on a fresh pipe).
  auto [r2, w2] = mp::Pipe(false);
  w2.send(std::vector<char>(20 * 1024, 'v'));
  EXPECT_EQ(fcntl(w2.fileno(), F_GETPIPE_SZ), 128 * 1024);
  EXPECT_EQ(r2.recv<std::vector<char>>().size(), 20u * 1024);
}

// ---- hostile peers: a length header is a claim ---------------------------------------

// peak_rss_kib() is the process's peak resident size (VmHWM) in KiB;
// reset_peak_rss() brings the peak down to the current size (Linux 4.0+).
std::size_t status_kib(const char* field) {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  std::size_t kib = 0;
  const std::size_t len = std::strlen(field);
  while (std::fgets(line, sizeof line, f)) {
    if (std::strncmp(line, field, len) == 0) kib = std::strtoull(line + len, nullptr, 10);
  }
  std::fclose(f);
  return kib;
}
bool reset_peak_rss() {
  FILE* f = std::fopen("/proc/self/clear_refs", "w");
  if (!f) return false;
  const bool ok = std::fputs("5", f) >= 0;
  return std::fclose(f) == 0 && ok;
}

// forged(claim, sent): the reading end of a socket whose peer wrote a header
// claiming `claim` bytes, then `sent` bytes, then closed.
mp::Connection forged(std::uint64_t claim, std::size_t sent) {
  int fds[2];
  EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  std::string wire(sizeof claim + sent, 'x');
  std::memcpy(wire.data(), &claim, sizeof claim);
  EXPECT_EQ(::write(fds[1], wire.data(), wire.size()), static_cast<ssize_t>(wire.size()));
  ::close(fds[1]);
  return mp::Connection(fds[0], true, true);
}

// The three ways to receive a message, each on a forged stream.
const std::vector<std::pair<const char*, std::function<void(mp::Connection&)>>>& receivers() {
  static const std::vector<std::pair<const char*, std::function<void(mp::Connection&)>>> all = {
      {"recv_bytes()", [](mp::Connection& c) { (void)c.recv_bytes(); }},
      {"recv<std::string>()", [](mp::Connection& c) { (void)c.recv<std::string>(); }},
      {"recv_bytes_into(16 bytes)",
       [](mp::Connection& c) {
         std::array<char, 16> small{};
         (void)c.recv_bytes_into(std::span<char>(small));
       }},
  };
  return all;
}

TEST(HostilePeer, HeaderClaimingOneGiBGrowsMemoryOnlyWithTheBytesThatArrive) {
  constexpr std::size_t kBoundKib = 32 * 1024;  // 32 MiB: far below the claim
  for (const auto& [name, receive] : receivers()) {
    mp::Connection c = forged(1ull << 30, 100);
    if (!reset_peak_rss()) GTEST_SKIP() << "/proc/self/clear_refs is not writable here";
    const std::size_t before = status_kib("VmRSS:");
    EXPECT_THROW(receive(c), mp::EOFError) << name;
    const std::size_t peak = status_kib("VmHWM:");
    EXPECT_LT(peak - std::min(peak, before), kBoundKib)
        << name << " grew the resident size by " << (peak - before) / 1024 << " MiB for 100 bytes";
  }
}

TEST(HostilePeer, ClaimsUpToTwoToThe64RaiseMpErrorsNeverBadAlloc) {
  const std::uint64_t claims[] = {6ull << 30, 1ull << 40, (1ull << 62) - 1, 1ull << 62, ~0ull};
  for (std::uint64_t claim : claims) {
    for (const auto& [name, receive] : receivers()) {
      mp::Connection c = forged(claim, 100);
      try {
        receive(c);
        ADD_FAILURE() << name << " received a message of " << claim << " bytes from 100";
      } catch (const mp::Error&) {
        // EOFError (the peer closed mid-message) or ValueError (no message is that long).
      } catch (const std::bad_alloc&) {
        ADD_FAILURE() << name << " raised std::bad_alloc for a claim of " << claim << " bytes";
      }
    }
  }
}

TEST(HostilePeer, LargeMessagesOfOddSizesStillArriveWhole) {
  // Past the size allocated at once, the buffer grows as bytes arrive; each
  // receiving path must still return the whole message, byte for byte.
  for (std::size_t size : {(4u << 20) - 1, (4u << 20) + 1, (64u << 20) + 12345}) {
    std::string big(size, '\0');
    for (std::size_t i = 0; i + 8 <= size; i += 4096) {
      const std::uint64_t stamp = (i + size) * 0x9E3779B97F4A7C15ull;
      std::memcpy(big.data() + i, &stamp, sizeof stamp);
    }
    big.back() = 'z';
    auto [a, b] = mp::Pipe();
    std::thread sender([&, &a = a] {
      a.send_bytes(big);
      a.send(big);
      a.send_bytes(big);
    });
    EXPECT_TRUE(b.recv_bytes() == big) << size;
    EXPECT_TRUE(b.recv<std::string>() == big) << size;
    std::array<char, 16> small{};
    try {
      (void)b.recv_bytes_into(std::span<char>(small));
      ADD_FAILURE() << "a message of " << size << " bytes fit in 16";
    } catch (const mp::BufferTooShort& e) {
      EXPECT_TRUE(e.message() == big) << size;
    }
    sender.join();
  }
}

// ---- inherited ends ----------------------------------------------------------------

TEST(InheritedEnds, EOFArrivesOnlyAfterEveryCopyOfThePeerEndIsClosed) {
  auto [r, w] = mp::Pipe();
  mp::Event close_now, closed;
  // The child holds copies of both ends (forked: inherited; otherwise:
  // passed); it closes its copy of w on cue.
  mp::Process p = start_child(close_peer_copy_on_cue, std::ref(r), std::ref(w), close_now, closed);
  w.close();  // the parent's copy
  EXPECT_FALSE(r.poll(200ms)) << "EOF seen while the child still held a copy";
  close_now.set();
  ASSERT_TRUE(closed.wait(60s));
  EXPECT_TRUE(r.poll(5s));
  EXPECT_THROW(r.recv<int>(), mp::EOFError);
  EXPECT_EQ(exitcode_after_join(p), 0);
}

TEST(InheritedEnds, CloseOnForkEndIsClosedInForkedChildren) {
  MP_FORK_ONLY(
      "close_on_fork() acts on processes forked from this one; the child checks the "
      "parent's Connection object and fd number as inherited");
  auto [parent_end, child_end] = mp::Pipe();
  parent_end.close_on_fork();
  const int parent_fd = parent_end.fileno();
  mp::Process p([&] {
    // Already closed here: the fd is gone and the object says so.
    if (!parent_end.closed() || fd_is_open(parent_fd)) mp::exit(2);
    // So the child sees EOF as soon as the parent closes its end.
    exit_zero_at_eof(child_end);
  });
  p.start();
  child_end.close();
  EXPECT_FALSE(parent_end.closed());
  parent_end.close();
  p.join(10s);
  EXPECT_EQ(p.exitcode(), 0);
}

// What close_on_fork() gives a forked child, a spawn or forkserver child has
// by construction: it holds only the ends passed to it (run under every
// default method, as each of these children is started explicitly).
TEST(InheritedEnds, SpawnAndForkserverChildrenHoldOnlyTheEndsPassedToThem) {
  for (const char* method : {"forkserver", "spawn"}) {
    auto [parent_end, child_end] = mp::Pipe();
    // Daemonic: a child that never sees EOF is killed at the end of the run.
    mp::Process p(mp::ProcessOptions{.daemon = true, .start_method = method}, exit_zero_at_eof,
                  std::ref(child_end));
    p.start();
    child_end.close();
    parent_end.close();
    p.join(10s);
    EXPECT_EQ(p.exitcode(), 0) << method << ": the child held a copy of the parent's end";
  }
}

TEST(InheritedEnds, CloseOnForkCanBeTurnedOff) {
  MP_FORK_ONLY("the child checks the fd number and Connection object it inherited at the fork");
  auto [a, b] = mp::Pipe();
  a.close_on_fork();
  a.close_on_fork(false);
  const int fd = a.fileno();
  pid_t pid = fork_child([&] {
    if (!fd_is_open(fd) || a.closed()) _exit(2);
  });
  EXPECT_EQ(reap(pid), 0);
}

TEST(InheritedEnds, OwnerPidIsTheCreatingProcess) {
  MP_FORK_ONLY("inherited() and owner_pid() describe a forked copy of the parent's Connection");
  auto [a, b] = mp::Pipe();
  EXPECT_EQ(a.owner_pid(), mp::getpid());
  EXPECT_FALSE(a.inherited());
  pid_t pid = fork_child([&] {
    if (!a.inherited() || a.owner_pid() != mp::getppid()) _exit(2);
  });
  EXPECT_EQ(reap(pid), 0);
}

// ---- wait ----------------------------------------------------------------------------

TEST(Wait, ReturnsTheReadyConnectionsOnly) {
  auto [a1, b1] = mp::Pipe();
  auto [a2, b2] = mp::Pipe();
  auto [a3, b3] = mp::Pipe();
  a2.send(2);
  auto ready = mp::wait({b1, b2, b3}, 1s);
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_TRUE(ready[0].is(b2));
  EXPECT_EQ(ready[0].connection(), &b2);
}

TEST(Wait, ReturnsEmptyAfterAboutTheTimeout) {
  auto [a, b] = mp::Pipe();
  Stopwatch sw;
  EXPECT_TRUE(mp::wait({b}, 300ms).empty());
  EXPECT_GE(sw.elapsed(), 250ms);
  EXPECT_LT(sw.elapsed(), 1300ms);
}

TEST(Wait, EndOfFileCountsAsReady) {
  auto [a, b] = mp::Pipe(false);
  b.close();
  auto ready = mp::wait({a}, 5s);
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_TRUE(ready[0].is(a));
}

TEST(Wait, SeesMessagesAlreadyInTheReadAhead) {
  auto [a, b] = mp::Pipe();
  a.send(1);
  a.send(2);
  EXPECT_EQ(b.recv<int>(), 1);  // 2 now sits in b's read-ahead, not the kernel
  auto ready = mp::wait({b}, 0s);
  ASSERT_EQ(ready.size(), 1u);
}

TEST(Wait, ProcessSentinelIsReadyWhenTheProcessEnds) {
  auto [a, b] = mp::Pipe();
  mp::Event finish;
  mp::Process p = start_child(wait_event, finish);
  EXPECT_TRUE(mp::wait({p, b}, 100ms).empty());
  finish.set();
  auto ready = mp::wait({b, p}, 10s);
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_TRUE(ready[0].is(p));
  p.join();
}

TEST(Wait, RawDescriptorIsReadyWhenReadable) {
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
  auto [a, b] = mp::Pipe();
  EXPECT_TRUE(mp::wait({fds[0], b}, 50ms).empty());
  ASSERT_EQ(::write(fds[1], "x", 1), 1);
  auto ready = mp::wait({b, fds[0]}, 5s);
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_TRUE(ready[0].is_fd(fds[0]));
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST(Wait, OnAClosedConnectionRaises) {
  auto [a, b] = mp::Pipe();
  b.close();
  EXPECT_THROW(mp::wait({b}, 0s), mp::ValueError);
}

TEST(Wait, FourChildrenTenMessagesEachCollectedUntilEveryEndReportsEOF) {
  // CPython's documented example for connection.wait: readers from
  // several children, each child sends then closes.
  std::vector<mp::Connection> readers;
  std::vector<mp::Process> children;
  for (int c = 0; c < 4; ++c) {
    auto [r, w] = mp::Pipe(false);
    r.close_on_fork();  // no child holds another's reading end
    mp::Process p = start_child(send_ten_pairs, c, std::ref(w));
    w.close();  // only the child holds the writing end now: EOF when it ends
    readers.push_back(std::move(r));
    children.push_back(std::move(p));
  }
  std::vector<mp::Connection*> open;
  for (auto& r : readers) open.push_back(&r);
  std::map<int, std::vector<int>> got;
  int messages = 0;
  Stopwatch sw;
  while (!open.empty() && sw.elapsed() < 30s) {
    for (mp::Connection* r : mp::wait(std::span<mp::Connection* const>(open), 10s)) {
      try {
        auto [c, i] = r->recv<std::pair<int, int>>();
        got[c].push_back(i);
        ++messages;
      } catch (const mp::EOFError&) {
        std::erase(open, r);
      }
    }
  }
  EXPECT_TRUE(open.empty());
  EXPECT_EQ(messages, 40);
  for (int c = 0; c < 4; ++c) {
    std::vector<int> expected{0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    EXPECT_EQ(got[c], expected) << "child " << c;
  }
  for (auto& p : children) {
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
  }
}

}  // namespace
