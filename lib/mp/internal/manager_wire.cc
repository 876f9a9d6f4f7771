#include "mp/internal/manager_wire.h"

#include <errno.h>
#include <fmt/core.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <mutex>
#include <shared_mutex>
#include <system_error>

#include "mp/errors.h"

namespace mp::internal::mgr {

namespace {

void write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN) {
        throw ConnectionError("mp::Manager: the manager's server closed the connection");
      }
      throw std::system_error(errno, std::generic_category(), "mp::Manager: send");
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

void read_all(int fd, char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t r = ::recv(fd, p, n, 0);
    if (r == 0) {
      throw ConnectionError(
          "mp::Manager: the manager's server closed the connection "
          "(it was shut down or died)");
    }
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == ECONNRESET || errno == ETIMEDOUT || errno == EPIPE) {
        throw ConnectionError(fmt::format(
            "mp::Manager: connection to the manager's server lost: {}", std::strerror(errno)));
      }
      throw std::system_error(errno, std::generic_category(), "mp::Manager: recv");
    }
    p += r;
    n -= static_cast<std::size_t>(r);
  }
}

}  // namespace

void send_frame(int fd, std::string_view payload) {
  // One write for small frames: header and payload in one segment.
  if (payload.size() <= 4096) {
    char buf[8 + 4096];
    const std::uint64_t n = payload.size();
    std::memcpy(buf, &n, 8);
    std::memcpy(buf + 8, payload.data(), payload.size());
    write_all(fd, buf, 8 + payload.size());
    return;
  }
  const std::uint64_t n = payload.size();
  write_all(fd, reinterpret_cast<const char*>(&n), 8);
  write_all(fd, payload.data(), payload.size());
}

std::string recv_frame(int fd, std::size_t max) {
  std::uint64_t n = 0;
  read_all(fd, reinterpret_cast<char*>(&n), 8);
  if (n > max) {
    throw ConnectionError(fmt::format(
        "mp::Manager: the peer announced a {}-byte frame, over the {}-byte limit", n, max));
  }
  // Grow with what arrives, not with what the peer claimed.
  std::string out;
  constexpr std::size_t kChunk = std::size_t{1} << 20;
  while (out.size() < n) {
    const std::size_t at = out.size();
    const std::size_t take = std::min<std::size_t>(n - at, std::max(kChunk, at));
    out.resize(at + take);
    read_all(fd, out.data() + at, take);
  }
  return out;
}

std::string hmac_sha256(std::string_view key, std::string_view message) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(message.data()), message.size(), out,
           &len) == nullptr) {
    throw RuntimeError("mp::Manager: HMAC-SHA256 failed (OpenSSL)");
  }
  return std::string(reinterpret_cast<const char*>(out), len);
}

std::string random_bytes(std::size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    throw RuntimeError("mp::Manager: RAND_bytes failed (OpenSSL)");
  }
  return out;
}

bool digest_matches(std::string_view expected, std::string_view got) {
  return expected.size() == got.size() &&
         CRYPTO_memcmp(expected.data(), got.data(), expected.size()) == 0;
}

std::string challenge_message() {
  std::string m(kChallenge);
  m += kDigestPrefix;
  m += random_bytes(kChallengeBytes);
  return m;
}

std::string answer_for(std::string_view authkey, std::string_view challenge) {
  if (challenge.size() != kChallenge.size() + kDigestPrefix.size() + kChallengeBytes ||
      challenge.substr(0, kChallenge.size()) != kChallenge ||
      challenge.substr(kChallenge.size(), kDigestPrefix.size()) != kDigestPrefix) {
    return {};
  }
  std::string a(kDigestPrefix);
  a += hmac_sha256(authkey, challenge.substr(kChallenge.size()));
  return a;
}

void client_handshake(int fd, std::string_view authkey) {
  // Answer the server's challenge.
  const std::string challenge = recv_frame(fd, kMaxAuthFrame);
  const std::string answer = answer_for(authkey, challenge);
  if (answer.empty()) {
    throw AuthenticationError("mp::Manager: the server sent no valid challenge");
  }
  send_frame(fd, answer);
  const std::string verdict = recv_frame(fd, kMaxAuthFrame);
  if (verdict != kWelcome) {
    throw AuthenticationError("mp::Manager: digest sent was rejected (wrong authkey?)");
  }
  // Challenge the server: it must know the key too.
  const std::string mine = challenge_message();
  send_frame(fd, mine);
  const std::string reply = recv_frame(fd, kMaxAuthFrame);
  if (!digest_matches(answer_for(authkey, mine), reply)) {
    send_frame(fd, kFailure);
    throw AuthenticationError(
        "mp::Manager: digest received was wrong (the server's authkey "
        "differs)");
  }
  send_frame(fd, kWelcome);
}

namespace {

struct Registry {
  std::shared_mutex mu;
  std::map<std::string, FunctionEntry, std::less<>> functions;
  std::map<const void*, std::string> names;
  std::map<std::string, TypeEntry, std::less<>> types;
};

Registry& registry() {
  static Registry* r = new Registry;  // never destroyed: used by exit paths
  return *r;
}

}  // namespace

void register_function(std::string name, FunctionEntry entry) {
  Registry& r = registry();
  std::unique_lock lock(r.mu);
  r.names[entry.fn] = name;
  r.functions[std::move(name)] = entry;
}

const FunctionEntry* find_function(std::string_view name) {
  Registry& r = registry();
  std::shared_lock lock(r.mu);
  const auto it = r.functions.find(name);
  return it == r.functions.end() ? nullptr : &it->second;
}

std::string function_name(const void* fn) {
  Registry& r = registry();
  std::shared_lock lock(r.mu);
  const auto it = r.names.find(fn);
  return it == r.names.end() ? std::string() : it->second;
}

TypeEntry& type_entry(const std::string& name) {
  Registry& r = registry();
  std::unique_lock lock(r.mu);
  return r.types[name];
}

const TypeEntry* find_type(std::string_view name) {
  Registry& r = registry();
  std::shared_lock lock(r.mu);
  const auto it = r.types.find(name);
  return it == r.types.end() ? nullptr : &it->second;
}

}  // namespace mp::internal::mgr
