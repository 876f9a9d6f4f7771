// mp/internal/manager_wire.h — what a manager's server and its clients
// share: the frame format, the authentication handshake, the request codes,
// and the registry of functions and types a server runs for its clients.
//
// Internal (mp/managers.h is the contract). Every message is a frame: a
// 64-bit native-endian length, then that many bytes. Before a peer has
// authenticated, a frame may be at most kMaxAuthFrame bytes and its bytes
// are only compared, never decoded; after, at most kMaxFrame, and a frame is
// buffered only as its bytes arrive (never allocated from the claimed
// length).
//
// Handshake (CPython's multiprocessing.connection deliver_challenge /
// answer_challenge, both ways, with HMAC-SHA256 from OpenSSL):
//   server -> "#CHALLENGE#{sha256}" + 32 random bytes
//   client -> "{sha256}" + HMAC(authkey, the bytes after "#CHALLENGE#")
//   server -> "#WELCOME#" (or "#FAILURE#" and the connection is closed)
//   client -> "#CHALLENGE#{sha256}" + 32 random bytes
//   server -> "{sha256}" + HMAC(authkey, ...)
//   client -> "#WELCOME#" (or "#FAILURE#")
// Digests are compared with CRYPTO_memcmp (constant time).
//
// After the handshake a request is [u8 op][u64 object id][op's fields, as
// mp/codec.h writes them]; a reply is [u8 status][payload]: status 0, the
// payload is the op's result; status 1, an error: (type name, what()) as
// two encoded strings.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

namespace mp::internal::mgr {

inline constexpr std::size_t kMaxAuthFrame = 256;
inline constexpr std::size_t kMaxFrame = std::size_t{1} << 32;  // 4 GiB
inline constexpr std::size_t kChallengeBytes = 32;
inline constexpr std::string_view kChallenge = "#CHALLENGE#";
inline constexpr std::string_view kDigestPrefix = "{sha256}";
inline constexpr std::string_view kWelcome = "#WELCOME#";
inline constexpr std::string_view kFailure = "#FAILURE#";

enum class Op : std::uint8_t {
  kHello = 1,  // session u64, anchor bool -> ()
  kCreate,     // kind string, signature string, init bytes -> id
  kIncRef,     // signature string -> ()
  kDecRef,     // -> no reply
  kShutdown,   // -> (), then the server exits
  kPing,       // -> ()

  kDictGet = 10,    // key -> optional<bytes>
  kDictSet,         // key, value -> ()
  kDictDel,         // key -> bool
  kDictLen,         // -> u64
  kDictItems,       // -> count, then raw key, value bytes
  kDictKeys,        // -> count, then raw keys
  kDictValues,      // -> count, then raw values
  kDictClear,       // -> ()
  kDictPop,         // key -> optional<bytes>
  kDictUpdate,      // key, function name, default bytes -> new value bytes
  kDictContains,    // key -> bool
  kDictSetDefault,  // key, default -> value bytes
  kDictSetMany,     // count, then raw key, value bytes -> ()

  kListAppend = 40,  // value -> ()
  kListGet,          // i64 index -> bytes
  kListSet,          // i64 index, value -> ()
  kListLen,          // -> u64
  kListAll,          // -> count, then raw values
  kListPop,          // i64 index -> bytes
  kListInsert,       // i64 index, value -> ()
  kListExtend,       // count, then raw values -> ()
  kListClear,        // -> ()
  kListUpdate,       // i64 index, function name -> new bytes

  kValueGet = 60,  // -> bytes
  kValueSet,       // bytes -> ()
  kValueUpdate,    // function name -> new bytes

  kQueuePut = 70,  // item bytes, i64 timeout ns (-1: none, 0: no wait) -> bool
  kQueueGet,       // i64 timeout -> optional<bytes>
  kQueueSize,      // -> u64
  kQueueTaskDone,  // -> ()
  kQueueJoin,      // i64 timeout -> bool

  kAcquire = 80,  // u64 thread, i64 timeout -> u8 (0 timed out, 1 ok, 2 ok, owner died)
  kRelease,       // u64 thread -> ()
  kSemValue,      // -> i64

  kEventSet = 90,  // -> ()
  kEventClear,     // -> ()
  kEventIsSet,     // -> bool
  kEventWait,      // i64 timeout -> bool

  kCondWait = 100,  // u64 thread, i64 timeout -> u8 (0 timed out, 1 notified; +2: owner died)
  kCondNotify,      // i64 n (-1: all) -> ()

  kBarrierWait = 110,  // i64 timeout -> i64 index
  kBarrierAbort,       // -> ()
  kBarrierReset,       // -> ()
  kBarrierInfo,        // -> (i64 parties, i64 waiting, bool broken)

  kCall = 120,  // method name, args bytes -> result bytes
};

// ---- frames (blocking I/O, for clients) ------------------------------------

// send_frame writes one frame (MSG_NOSIGNAL). recv_frame reads one,
// refusing one longer than `max`. Both raise mp::ConnectionError when the
// peer is gone and std::system_error for other failures.
void send_frame(int fd, std::string_view payload);
std::string recv_frame(int fd, std::size_t max);

// ---- authentication ------------------------------------------------------------

// hmac_sha256(key, message) is the 32-byte digest.
std::string hmac_sha256(std::string_view key, std::string_view message);
// random_bytes(n) is n bytes from OpenSSL's RAND_bytes.
std::string random_bytes(std::size_t n);
// digest_matches(expected, got): constant-time comparison (CRYPTO_memcmp).
bool digest_matches(std::string_view expected, std::string_view got);
// challenge_message() is a fresh "#CHALLENGE#{sha256}<32 random bytes>".
std::string challenge_message();
// answer_for(authkey, challenge): the digest frame that answers
// `challenge`, or "" when it is not a well-formed challenge.
std::string answer_for(std::string_view authkey, std::string_view challenge);

// client_handshake runs the client's half over a connected fd. Raises
// mp::AuthenticationError when either side's digest is wrong.
void client_handshake(int fd, std::string_view authkey);

// ---- the registry -------------------------------------------------------

// A function a client may ask the server to run on a stored value (dict
// update, list update, Value update): bytes of the old value -> bytes of the
// new one.
struct FunctionEntry {
  std::string (*thunk)(const void* fn, std::string_view value);
  const void* fn;
};

// A user type served by a manager: make(init bytes) builds one (empty
// bytes: default-constructed), methods by name run one on it.
struct TypeEntry {
  std::function<std::shared_ptr<void>(std::string_view init)> make;
  // shared: one instance per server, made at the first create and kept for
  // the server's life; every create returns it (CPython's register() with a
  // callable returning one object, the remote-manager idiom).
  bool shared = false;
  std::map<std::string, std::function<std::string(void* self, std::string_view args)>, std::less<>>
      methods;
};

// register_function / find_function: by name; function_name: by address
// ("" when not registered).
void register_function(std::string name, FunctionEntry entry);
const FunctionEntry* find_function(std::string_view name);
std::string function_name(const void* fn);

// type_entry(name) is the entry of the user type `name`, made on first use
// (registration); find_type looks one up (nullptr when none).
TypeEntry& type_entry(const std::string& name);
const TypeEntry* find_type(std::string_view name);

}  // namespace mp::internal::mgr
