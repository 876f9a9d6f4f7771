// mp/managers.h — Manager: a server process holding shared objects that
// other processes use through typed proxies, locally or over a network
// (CPython's multiprocessing.managers: SyncManager, BaseManager).
//
//   mp::Manager manager;                          // starts the server process
//   auto hits = manager.dict<std::string, int>();
//   mp::Process p(worker, hits);                  // a proxy is plain data:
//   p.start();                                    // it travels to any child
//   hits.update("home", add_one);                 // atomic, runs in the server
//   std::optional<int> n = hits.get("home");
//
// Build: its own target, //lib/mp:managers (CMake: mp::managers, pkg-config:
// mp-managers), because it links OpenSSL's libcrypto; the rest of mp does
// not, so only programs that use managers link it.
//
// Contract:
//   * Manager() binds a socket (by default a Unix socket in the abstract
//     namespace, so nothing is left on disk), starts the server with the
//     current start method (ManagerOptions::start_method to choose), and
//     returns once clients can connect. The server is a daemonic mp::Process
//     that serves until shutdown(), the Manager's destruction, or the death
//     of the process that made it (it watches that process's pidfd: no
//     orphan keeps running). shutdown() is idempotent; a Manager used after
//     it raises mp::ProcessError ("the manager has shut down").
//   * Proxies: dict<K, V>(), list<T>(), Namespace<T>(init), Value<T>(init),
//     Queue<T>(maxsize), JoinableQueue<T>(maxsize), Lock(), RLock(),
//     Semaphore(n), BoundedSemaphore(n), Event(), Condition(), Barrier(n),
//     and create<T>() for a registered user type (register_type below).
//     K, V and T are anything mp/codec.h encodes. A proxy is a small value
//     (the server's address, its authkey, an object id): copy it, pass it
//     to a Process or a Pool task of any start method, put it in a Queue.
//     A proxy arriving in another process connects on first use.
//   * Atomicity: the server runs one request at a time, so each proxy call
//     is atomic (a dict set, a list append, a queue get). What is NOT atomic
//     is a read-modify-write spelt as two calls: `d.set(k, *d.get(k) + 1)`
//     loses updates under contention. Use update(key, fn) (dict), update(i,
//     fn) (list) or update(fn) (Value, Namespace): `fn` runs inside the
//     server, under the same one-at-a-time rule. `fn` is a function
//     registered with MP_MANAGER_FUNCTION(fn) at namespace scope, so the
//     server (the same program, or a remote one that registered the same
//     name) can find it by name; an unregistered one raises mp::ValueError
//     before anything is sent. Or hold a manager Lock around the two calls.
//   * Blocking calls (Queue get/put, Lock acquire, Event/Condition/Barrier
//     wait) wait in the server without holding up other clients: each
//     thread's call uses its own connection (a process keeps a small pool),
//     and the server parks the call until the object changes or the timeout
//     passes.
//   * Lifetimes: the server keeps an object while any process holds a proxy
//     to it (references are counted per process: a proxy's copies and a
//     process's decoded proxies add up, and a process's references go when
//     its last proxy goes or when it dies: its connections close and the
//     server drops what it held). A forked child's inherited proxy works
//     while the parent keeps the object alive; a proxy that arrives by
//     decoding (spawn, forkserver, a Queue) takes its own reference.
//   * Locks and dead owners: a process that dies holding a manager Lock,
//     RLock or Condition releases it; the next acquire() gets it and raises
//     mp::OwnerDeadError (as mp::Lock), so the state it guards can be
//     checked. (A thread that ends holding one does not release it: as
//     threading.Lock, the lock belongs to the process's session.) Semaphores
//     have no owner and are not released. A process that dies waiting at
//     a Barrier breaks it (the others get mp::BrokenBarrierError).
//   * Server death: every call on a proxy whose server is gone raises
//     mp::ConnectionError — at once on this machine (the kernel closes the
//     socket), within ~11 s over TCP to a host that vanished (keepalive:
//     5 s idle, 3 probes 2 s apart), never a hang.
//
// Remote managers: Manager({.address = Address::tcp("0.0.0.0", 50000),
// .authkey = "secret"}) listens on TCP; in another program on any machine,
// Manager::connect(Address::tcp("host", 50000), "secret") returns a client
// that makes proxies the same way. serve_forever(address, authkey) runs a
// server in the calling process instead of a child (CPython's
// get_server().serve_forever()). Both ends must register the same
// functions and types by name.
//
// Security (the first part of mp that listens on a network):
//   * Authentication is CPython's HMAC challenge-response, both ways, over
//     HMAC-SHA256 (OpenSSL), digests compared in constant time
//     (CRYPTO_memcmp). Before a peer has answered, the server only compares
//     bytes: it decodes nothing, runs nothing, and reads frames of at most
//     256 bytes; a wrong digest gets "#FAILURE#" and the connection closes
//     (mp::AuthenticationError in the client). After authentication a peer
//     is trusted as CPython's is, except that it can only call registered
//     functions and methods; its frames are buffered as their bytes arrive
//     (a claimed length allocates nothing) up to 4 GiB each, and malformed
//     requests get an error reply (mp::CodecError), not a crash.
//   * Limits: a connection that has not authenticated within 10 s is
//     closed; the server raises its fd limit to the hard limit and serves up
//     to 16,384 connections (beyond, a new connection is closed at once);
//     idle connections cost one fd each and never hold up the others (one
//     epoll loop, nothing blocks).
//   * The authkey is not sent over the wire, but it is inside every proxy's
//     encoding (so that a proxy can connect from a spawned child, as
//     CPython's proxies carry it when pickled for a child): do not write
//     proxies where others can read them. Traffic is not encrypted.
//
// Where mp differs from CPython, and why:
//   * Typed: a proxy is dict<K, V>, not a dict of anything; decoding a proxy
//     as another type raises mp::CodecError (the server checks the type).
//   * dict keys compare by their encoding (equal values of the types mp
//     encodes encode equally, except +0.0/-0.0 and NaNs as float keys);
//     items()/keys()/values() come in an unspecified order, not insertion
//     order.
//   * get(k) returns std::optional (no KeyError for a missing key); at(k)
//     raises mp::KeyError.
//   * Namespace<T> is a typed record: a struct T read and written whole
//     (get(), set(), update(fn)), not attributes added at run time.
//   * update(fn) runs a function registered by name (CPython would accept
//     any callable a client pickles): a client cannot make the server run
//     code it did not register.
//   * A proxy's references are counted per process, not per proxy object.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "mp/codec.h"
#include "mp/errors.h"
#include "mp/internal/manager_wire.h"
#include "mp/process.h"

namespace mp {

// Address is where a manager listens: TCP (host, port) or a Unix socket
// path ("@name": Linux's abstract namespace, nothing on disk).
struct Address {
  std::string host;        // TCP: a host name or IP; empty for a Unix socket
  std::uint16_t port = 0;  // TCP: 0 when listening picks a free port
  std::string path;        // Unix socket path

  static Address tcp(std::string host, std::uint16_t port) {
    return Address{std::move(host), port, {}};
  }
  static Address unix_socket(std::string path) { return Address{{}, 0, std::move(path)}; }
  bool is_tcp() const noexcept { return path.empty(); }
  // str() is "host:port" or the path.
  std::string str() const;
  bool operator==(const Address&) const = default;
};

template <>
struct codec_traits<Address> {
  static void encode(Encoder& e, const Address& a) {
    e.write(a.host);
    e.write(a.port);
    e.write(a.path);
  }
  static Address decode(Decoder& d) {
    Address a;
    a.host = d.read<std::string>();
    a.port = d.read<std::uint16_t>();
    a.path = d.read<std::string>();
    return a;
  }
};

// ManagerOptions are BaseManager's arguments.
struct ManagerOptions {
  // address: where to listen; default a fresh abstract Unix socket.
  std::optional<Address> address;
  // authkey: default 32 random bytes.
  std::optional<std::string> authkey;
  // start_method of the server process; default the process-wide default.
  std::optional<std::string> start_method;
};

namespace manager_detail {

using internal::mgr::Op;

// Endpoint is this process's link to one server: its session, the anchor
// connection whose closing tells the server the process is gone, and a
// pool of authenticated connections (one per concurrent call).
class Endpoint;

std::shared_ptr<Endpoint> endpoint(const Address& address, const std::string& authkey);

// request sends one request and returns the reply's payload, or raises the
// server's error (mp errors as themselves, others as mp::RemoteError).
std::string request(Endpoint& ep, std::string_view req);

const Address& endpoint_address(const Endpoint& ep);
const std::string& endpoint_authkey(const Endpoint& ep);

// Ref is one process-local reference to a server object; its last copy
// going drops the server's reference (in the process that took it).
struct Ref {
  std::shared_ptr<Endpoint> ep;
  std::uint64_t id = 0;
  std::string signature;
  pid_t pid = 0;
  Ref(std::shared_ptr<Endpoint> e, std::uint64_t i, std::string sig);
  ~Ref();
  Ref(const Ref&) = delete;
  Ref& operator=(const Ref&) = delete;
};

// create makes an object of `kind` in the server; attach takes a new
// reference to an existing one (a decoded proxy), checking its signature.
std::shared_ptr<Ref> create(const std::shared_ptr<Endpoint>& ep, std::string_view kind,
                            std::string signature, std::string_view init);
std::shared_ptr<Ref> attach(const Address& address, const std::string& authkey, std::uint64_t id,
                            std::string signature);

// thread_token identifies the calling thread to the server (lock owners).
std::uint64_t thread_token();

std::int64_t timeout_ns(std::optional<std::chrono::duration<double>> timeout);

template <class... Ts>
std::string signature(std::string_view kind) {
  std::string s(kind);
  if constexpr (sizeof...(Ts) > 0) {
    s += '<';
    bool first = true;
    ((s += (first ? "" : ","), s += codec_detail::type_name<Ts>(), first = false), ...);
    s += '>';
  }
  return s;
}

// The decoding side of a raw "count, then values" reply.
template <class T>
std::vector<T> read_values(std::string_view payload) {
  Decoder d(payload);
  const std::size_t n = d.read_size(1);
  std::vector<T> out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) out.push_back(d.read<T>());
  d.expect_end();
  return out;
}

template <class V>
struct function_traits;
template <class V>
struct function_traits<V (*)(V)> {
  using value = V;
  static V apply(const void* f, V v) { return reinterpret_cast<V (*)(V)>(f)(std::move(v)); }
};
template <class V>
struct function_traits<V (*)(const V&)> {
  using value = V;
  static V apply(const void* f, V v) { return reinterpret_cast<V (*)(const V&)>(f)(v); }
};
template <class V>
struct function_traits<void (*)(V&)> {
  using value = V;
  static V apply(const void* f, V v) {
    reinterpret_cast<void (*)(V&)>(f)(v);
    return v;
  }
};

template <class Fn>
std::string function_thunk(const void* f, std::string_view bytes) {
  using V = typename function_traits<Fn>::value;
  return mp::encode(function_traits<Fn>::apply(f, mp::decode<V>(bytes)));
}

// function_for(fn) is fn's registered name; mp::ValueError when none.
std::string function_for(const void* fn);

// The names register_type gave (function-local statics: set during static
// initialisation of other translation units, in any order).
template <class T>
std::string& registered_type_name() {
  static std::string name;
  return name;
}
template <auto M>
std::string& registered_method_name() {
  static std::string name;
  return name;
}

template <class M>
struct method_traits;
template <class R, class C, class... A>
struct method_traits<R (C::*)(A...)> {
  using result = R;
  using args = std::tuple<std::decay_t<A>...>;
};
template <class R, class C, class... A>
struct method_traits<R (C::*)(A...) const> : method_traits<R (C::*)(A...)> {};

}  // namespace manager_detail

// MP_MANAGER_FUNCTION(fn), at namespace scope: registers fn (V fn(V),
// V fn(const V&) or void fn(V&)) under the name "fn" for update().
#define MP_MANAGER_CONCAT_(a, b) a##b
#define MP_MANAGER_CONCAT(a, b) MP_MANAGER_CONCAT_(a, b)
#define MP_MANAGER_FUNCTION(fn)                                                          \
  [[maybe_unused]] static const bool MP_MANAGER_CONCAT(mp_manager_function_, __LINE__) = \
      ::mp::register_function(#fn, &(fn))

// register_function(name, fn) registers fn under `name` (what
// MP_MANAGER_FUNCTION does); returns true.
template <class Fn>
bool register_function(const std::string& name, Fn fn) {
  using Traits = manager_detail::function_traits<Fn>;
  static_assert(Transportable<typename Traits::value>, "the value type must be encodable");
  internal::mgr::register_function(
      name, {&manager_detail::function_thunk<Fn>, reinterpret_cast<const void*>(fn)});
  return true;
}

// TypeRegistration<T> (from register_type<T>(name)) names the methods a
// manager serves on a T:
//
//   struct Counter { int n = 0; int add(int k) { return n += k; } };
//   static const bool reg =
//       mp::register_type<Counter>("Counter").method<&Counter::add>("add");
//
// At namespace scope, in both the server's and the clients' program. A T is
// made default-constructed, or decoded from create<T>(value) (then T must
// be encodable); methods take and return encodable values.
template <class T>
class TypeRegistration {
 public:
  explicit TypeRegistration(std::string name) : name_(std::move(name)) {
    manager_detail::registered_type_name<T>() = name_;
    internal::mgr::type_entry(name_).make = [](std::string_view init) -> std::shared_ptr<void> {
      if (init.empty() || init[0] == '\0') return std::make_shared<T>();
      if constexpr (Encodable<T>) {
        return std::make_shared<T>(mp::decode<T>(init.substr(1)));
      } else {
        throw ValueError("mp::Manager: this type cannot be made from a value");
      }
    };
  }
  template <auto M>
  TypeRegistration& method(std::string name) {
    using Traits = manager_detail::method_traits<decltype(M)>;
    manager_detail::registered_method_name<M>() = name;
    internal::mgr::type_entry(name_).methods[std::move(name)] =
        [](void* self, std::string_view args) -> std::string {
      auto a = mp::decode<typename Traits::args>(args);
      auto* obj = static_cast<T*>(self);
      if constexpr (std::is_void_v<typename Traits::result>) {
        std::apply([&](auto&... x) { (obj->*M)(x...); }, a);
        return {};
      } else {
        return mp::encode(std::apply([&](auto&... x) { return (obj->*M)(x...); }, a));
      }
    };
    return *this;
  }
  // shared(): the server holds one T for its whole life, made at the first
  // create<T>(); every create<T>() by any client returns a proxy to it.
  TypeRegistration& shared() {
    internal::mgr::type_entry(name_).shared = true;
    return *this;
  }
  operator bool() const { return true; }  // NOLINT: `static const bool reg = ...`

 private:
  std::string name_;
};

template <class T>
TypeRegistration<T> register_type(std::string name) {
  return TypeRegistration<T>(std::move(name));
}

// BaseProxy: what every proxy is. Copies share one process-local reference.
class BaseProxy {
 public:
  // id() is the object's id in its server; address() the server's address.
  std::uint64_t id() const { return ref_->id; }
  const Address& address() const { return manager_detail::endpoint_address(*ref_->ep); }

 protected:
  explicit BaseProxy(std::shared_ptr<manager_detail::Ref> ref) : ref_(std::move(ref)) {}

  template <class... A>
  std::string call(manager_detail::Op op, const A&... a) const {
    std::string req;
    Encoder e(req);
    e.write(static_cast<std::uint8_t>(op));
    e.write(ref_->id);
    (e.write(a), ...);
    return manager_detail::request(*ref_->ep, req);
  }
  template <class R, class... A>
  R call_as(manager_detail::Op op, const A&... a) const {
    return mp::decode<R>(call(op, a...));
  }

  std::shared_ptr<manager_detail::Ref> ref_;

  template <class P>
  friend struct proxy_codec;
};

// proxy_codec: how every proxy travels (address, authkey, id, signature).
template <class P>
struct proxy_codec {
  static void encode(Encoder& e, const P& p) {
    e.write(p.address());
    e.write(manager_detail::endpoint_authkey(*p.ref_->ep));
    e.write(p.ref_->id);
    e.write(p.ref_->signature);
  }
  static P decode(Decoder& d) {
    auto address = d.read<Address>();
    auto authkey = d.read<std::string>();
    const auto id = d.read<std::uint64_t>();
    auto sig = d.read<std::string>();
    if (sig != P::kSignature()) {
      throw CodecError("mp::Manager: a proxy to a " + sig + " decoded as a " + P::kSignature());
    }
    return P(manager_detail::attach(address, authkey, id, std::move(sig)));
  }
};

using OptionalTimeoutSeconds = std::optional<std::chrono::duration<double>>;

// DictProxy<K, V>: a dict in the server (Manager::dict).
template <class K, class V>
class DictProxy : public BaseProxy {
 public:
  static std::string kSignature() { return manager_detail::signature<K, V>("dict"); }
  explicit DictProxy(std::shared_ptr<manager_detail::Ref> r) : BaseProxy(std::move(r)) {}
  using Op = manager_detail::Op;

  // get(k) is the value at k, or empty.
  std::optional<V> get(const K& k) const {
    auto r = call_as<std::optional<std::string>>(Op::kDictGet, mp::encode(k));
    if (!r) return std::nullopt;
    return mp::decode<V>(*r);
  }
  // at(k) is the value at k; mp::KeyError when there is none.
  V at(const K& k) const {
    auto v = get(k);
    if (!v) throw KeyError("mp::DictProxy::at: no such key");
    return std::move(*v);
  }
  // set(k, v): d[k] = v.
  void set(const K& k, const V& v) const { call(Op::kDictSet, mp::encode(k), mp::encode(v)); }
  // update(items): d.update(items), in one atomic call.
  void update(const std::map<K, V>& items) const { update_range(items); }
  void update(const std::vector<std::pair<K, V>>& items) const { update_range(items); }
  // update(k, fn, dflt): d[k] = fn(d.get(k, dflt)) inside the server, atomic;
  // returns the new value. fn: registered with MP_MANAGER_FUNCTION.
  template <class Fn>
  requires std::is_pointer_v<Fn> V update(const K& k, Fn fn, const V& dflt = V{})
  const {
    static_assert(std::is_same_v<typename manager_detail::function_traits<Fn>::value, V>,
                  "mp::DictProxy::update: fn must take and return the dict's value type");
    const auto name = manager_detail::function_for(reinterpret_cast<const void*>(fn));
    return mp::decode<V>(call(Op::kDictUpdate, mp::encode(k), name, mp::encode(dflt)));
  }
  // erase(k): del d[k]; false when k was not there.
  bool erase(const K& k) const { return call_as<bool>(Op::kDictDel, mp::encode(k)); }
  // pop(k): removes and returns the value at k, or empty.
  std::optional<V> pop(const K& k) const {
    auto r = call_as<std::optional<std::string>>(Op::kDictPop, mp::encode(k));
    if (!r) return std::nullopt;
    return mp::decode<V>(*r);
  }
  // setdefault(k, v): d[k] if present, else sets it to v; returns d[k].
  V setdefault(const K& k, const V& v) const {
    return mp::decode<V>(call(Op::kDictSetDefault, mp::encode(k), mp::encode(v)));
  }
  bool contains(const K& k) const { return call_as<bool>(Op::kDictContains, mp::encode(k)); }
  std::size_t size() const { return call_as<std::uint64_t>(Op::kDictLen); }
  void clear() const { call(Op::kDictClear); }
  // items() / keys() / values(): a snapshot, in one call.
  std::vector<std::pair<K, V>> items() const {
    const std::string r = call(Op::kDictItems);
    Decoder d(r);
    const std::size_t n = d.read_size(2);
    std::vector<std::pair<K, V>> out;
    out.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      K k = d.read<K>();
      V v = d.read<V>();
      out.emplace_back(std::move(k), std::move(v));
    }
    d.expect_end();
    return out;
  }
  std::vector<K> keys() const { return manager_detail::read_values<K>(call(Op::kDictKeys)); }
  std::vector<V> values() const { return manager_detail::read_values<V>(call(Op::kDictValues)); }
  std::map<K, V> copy() const {
    auto it = items();
    return std::map<K, V>(std::make_move_iterator(it.begin()), std::make_move_iterator(it.end()));
  }

 private:
  template <class R>
  void update_range(const R& items) const {
    std::string req;
    Encoder e(req);
    e.write(static_cast<std::uint8_t>(Op::kDictSetMany));
    e.write(ref_->id);
    e.write_size(std::size(items));
    for (const auto& [k, v] : items) {
      e.write(mp::encode(k));
      e.write(mp::encode(v));
    }
    manager_detail::request(*ref_->ep, req);
  }
};

// ListProxy<T>: a list in the server (Manager::list). Indexes are Python's:
// negative counts from the end; out of range raises mp::IndexError.
template <class T>
class ListProxy : public BaseProxy {
 public:
  static std::string kSignature() { return manager_detail::signature<T>("list"); }
  explicit ListProxy(std::shared_ptr<manager_detail::Ref> r) : BaseProxy(std::move(r)) {}
  using Op = manager_detail::Op;

  void append(const T& v) const { call(Op::kListAppend, mp::encode(v)); }
  void extend(const std::vector<T>& vs) const {
    std::string req;
    Encoder e(req);
    e.write(static_cast<std::uint8_t>(Op::kListExtend));
    e.write(ref_->id);
    e.write_size(vs.size());
    for (const auto& v : vs) e.write(mp::encode(v));
    manager_detail::request(*ref_->ep, req);
  }
  T at(std::int64_t i) const { return mp::decode<T>(call(Op::kListGet, i)); }
  T operator[](std::int64_t i) const { return at(i); }
  void set(std::int64_t i, const T& v) const { call(Op::kListSet, i, mp::encode(v)); }
  void insert(std::int64_t i, const T& v) const { call(Op::kListInsert, i, mp::encode(v)); }
  T pop(std::int64_t i = -1) const { return mp::decode<T>(call(Op::kListPop, i)); }
  std::size_t size() const { return call_as<std::uint64_t>(Op::kListLen); }
  void clear() const { call(Op::kListClear); }
  // to_vector(): a snapshot, in one call.
  std::vector<T> to_vector() const { return manager_detail::read_values<T>(call(Op::kListAll)); }
  // update(i, fn): l[i] = fn(l[i]) inside the server, atomic; the new value.
  template <class Fn>
  requires std::is_pointer_v<Fn> T update(std::int64_t i, Fn fn)
  const {
    static_assert(std::is_same_v<typename manager_detail::function_traits<Fn>::value, T>);
    return mp::decode<T>(
        call(Op::kListUpdate, i, manager_detail::function_for(reinterpret_cast<const void*>(fn))));
  }
};

// ValueProxy<T>: one value in the server (Manager::Value); NamespaceProxy<T>
// the same for a record struct (Manager::Namespace).
template <class T>
class ValueProxy : public BaseProxy {
 public:
  static std::string kSignature() { return manager_detail::signature<T>("value"); }
  explicit ValueProxy(std::shared_ptr<manager_detail::Ref> r) : BaseProxy(std::move(r)) {}
  using Op = manager_detail::Op;

  T get() const { return mp::decode<T>(call(Op::kValueGet)); }
  void set(const T& v) const { call(Op::kValueSet, mp::encode(v)); }
  // update(fn): value = fn(value) inside the server, atomic; the new value.
  template <class Fn>
  requires std::is_pointer_v<Fn> T update(Fn fn)
  const {
    static_assert(std::is_same_v<typename manager_detail::function_traits<Fn>::value, T>);
    return mp::decode<T>(
        call(Op::kValueUpdate, manager_detail::function_for(reinterpret_cast<const void*>(fn))));
  }
};

template <class T>
class NamespaceProxy : public ValueProxy<T> {
 public:
  static std::string kSignature() { return manager_detail::signature<T>("namespace"); }
  explicit NamespaceProxy(std::shared_ptr<manager_detail::Ref> r) : ValueProxy<T>(std::move(r)) {}
};

// QueueProxy<T>: a queue in the server (Manager::Queue). Timeouts and
// errors as mp::Queue: get raises mp::Empty, put mp::Full.
template <class T>
class QueueProxy : public BaseProxy {
 public:
  static std::string kSignature() { return manager_detail::signature<T>("queue"); }
  explicit QueueProxy(std::shared_ptr<manager_detail::Ref> r) : BaseProxy(std::move(r)) {}
  using Op = manager_detail::Op;

  void put(const T& v, bool block = true, OptionalTimeoutSeconds timeout = std::nullopt) const {
    const auto t = block ? manager_detail::timeout_ns(timeout) : 0;
    if (!call_as<bool>(Op::kQueuePut, mp::encode(v), t)) throw Full("mp::QueueProxy: full");
  }
  void put_nowait(const T& v) const { put(v, false); }
  T get(bool block = true, OptionalTimeoutSeconds timeout = std::nullopt) const {
    const auto t = block ? manager_detail::timeout_ns(timeout) : 0;
    auto r = call_as<std::optional<std::string>>(Op::kQueueGet, t);
    if (!r) throw Empty("mp::QueueProxy: empty");
    return mp::decode<T>(*r);
  }
  T get_nowait() const { return get(false); }
  std::size_t qsize() const { return call_as<std::uint64_t>(Op::kQueueSize); }
  bool empty() const { return qsize() == 0; }
};

template <class T>
class JoinableQueueProxy : public QueueProxy<T> {
 public:
  static std::string kSignature() { return manager_detail::signature<T>("joinablequeue"); }
  explicit JoinableQueueProxy(std::shared_ptr<manager_detail::Ref> r)
      : QueueProxy<T>(std::move(r)) {}
  // task_done(): one item taken is processed; mp::ValueError if too many.
  void task_done() const { this->call(manager_detail::Op::kQueueTaskDone); }
  // join(timeout): waits until every item put is task_done(); false on timeout.
  bool join(OptionalTimeoutSeconds timeout = std::nullopt) const {
    return this->template call_as<bool>(manager_detail::Op::kQueueJoin,
                                        manager_detail::timeout_ns(timeout));
  }
};

// LockProxy / RLockProxy / SemaphoreProxy: acquire(block, timeout) -> bool,
// release(). A Lock or RLock whose owner died: acquire() takes it and raises
// mp::OwnerDeadError. Lock::release from another thread or process is
// allowed (as threading.Lock); RLock's only from its owner thread.
class AcquirableProxy : public BaseProxy {
 public:
  using Op = manager_detail::Op;
  bool acquire(bool block = true, OptionalTimeoutSeconds timeout = std::nullopt) const {
    const auto t = block ? manager_detail::timeout_ns(timeout) : 0;
    const auto r = call_as<std::uint8_t>(Op::kAcquire, manager_detail::thread_token(), t);
    if (r == 2) {
      throw OwnerDeadError(
          "mp::Manager: the previous owner of the lock died holding it; "
          "the caller holds it now");
    }
    return r == 1;
  }
  void release() const { call(Op::kRelease, manager_detail::thread_token()); }
  void lock() const { acquire(); }
  void unlock() const { release(); }
  bool try_lock() const { return acquire(false); }

 protected:
  using BaseProxy::BaseProxy;
};

class LockProxy : public AcquirableProxy {
 public:
  static std::string kSignature() { return "lock"; }
  explicit LockProxy(std::shared_ptr<manager_detail::Ref> r) : AcquirableProxy(std::move(r)) {}
};
class RLockProxy : public AcquirableProxy {
 public:
  static std::string kSignature() { return "rlock"; }
  explicit RLockProxy(std::shared_ptr<manager_detail::Ref> r) : AcquirableProxy(std::move(r)) {}
};
class SemaphoreProxy : public AcquirableProxy {
 public:
  static std::string kSignature() { return "semaphore"; }
  explicit SemaphoreProxy(std::shared_ptr<manager_detail::Ref> r) : AcquirableProxy(std::move(r)) {}
  // get_value(): the counter.
  long long get_value() const { return call_as<std::int64_t>(Op::kSemValue); }
};
class BoundedSemaphoreProxy : public SemaphoreProxy {
 public:
  static std::string kSignature() { return "boundedsemaphore"; }
  explicit BoundedSemaphoreProxy(std::shared_ptr<manager_detail::Ref> r)
      : SemaphoreProxy(std::move(r)) {}
};

// EventProxy: set(), clear(), is_set(), wait(timeout) -> is_set().
class EventProxy : public BaseProxy {
 public:
  static std::string kSignature() { return "event"; }
  explicit EventProxy(std::shared_ptr<manager_detail::Ref> r) : BaseProxy(std::move(r)) {}
  using Op = manager_detail::Op;
  void set() const { call(Op::kEventSet); }
  void clear() const { call(Op::kEventClear); }
  bool is_set() const { return call_as<bool>(Op::kEventIsSet); }
  bool wait(OptionalTimeoutSeconds timeout = std::nullopt) const {
    return call_as<bool>(Op::kEventWait, manager_detail::timeout_ns(timeout));
  }
};

// ConditionProxy: a condition variable with its own RLock. wait() and
// notify() need the lock held by the calling thread (mp::RuntimeError).
class ConditionProxy : public AcquirableProxy {
 public:
  static std::string kSignature() { return "condition"; }
  explicit ConditionProxy(std::shared_ptr<manager_detail::Ref> r) : AcquirableProxy(std::move(r)) {}
  // wait(timeout): releases the lock, waits for a notify, takes the lock
  // back; false when the timeout passed first.
  bool wait(OptionalTimeoutSeconds timeout = std::nullopt) const {
    const auto r = call_as<std::uint8_t>(Op::kCondWait, manager_detail::thread_token(),
                                         manager_detail::timeout_ns(timeout));
    if (r & 2) throw OwnerDeadError("mp::Manager: the condition's lock owner died holding it");
    return r & 1;
  }
  // wait_for(pred, timeout): waits until pred() holds; pred()'s last value.
  template <class Pred>
  bool wait_for(Pred pred, OptionalTimeoutSeconds timeout = std::nullopt) const {
    const auto end =
        timeout ? std::optional(std::chrono::steady_clock::now() +
                                std::chrono::duration_cast<std::chrono::nanoseconds>(*timeout))
                : std::nullopt;
    bool r = pred();
    while (!r) {
      OptionalTimeoutSeconds left;
      if (end) {
        left = *end - std::chrono::steady_clock::now();
        if (left->count() <= 0) break;
      }
      wait(left);
      r = pred();
    }
    return r;
  }
  void notify(int n = 1) const {
    call(Op::kCondNotify, manager_detail::thread_token(), static_cast<std::int64_t>(n));
  }
  void notify_all() const {
    call(Op::kCondNotify, manager_detail::thread_token(), std::int64_t{-1});
  }
};

// BarrierProxy: wait(timeout) -> this caller's arrival index (0 ..
// parties-1); mp::BrokenBarrierError when broken, aborted, reset, or timed
// out (which breaks it, as threading.Barrier).
class BarrierProxy : public BaseProxy {
 public:
  static std::string kSignature() { return "barrier"; }
  explicit BarrierProxy(std::shared_ptr<manager_detail::Ref> r) : BaseProxy(std::move(r)) {}
  using Op = manager_detail::Op;
  long long wait(OptionalTimeoutSeconds timeout = std::nullopt) const {
    return call_as<std::int64_t>(Op::kBarrierWait, manager_detail::timeout_ns(timeout));
  }
  void abort() const { call(Op::kBarrierAbort); }
  void reset() const { call(Op::kBarrierReset); }
  long long parties() const { return std::get<0>(info()); }
  long long n_waiting() const { return std::get<1>(info()); }
  bool broken() const { return std::get<2>(info()); }

 private:
  std::tuple<std::int64_t, std::int64_t, bool> info() const {
    return call_as<std::tuple<std::int64_t, std::int64_t, bool>>(Op::kBarrierInfo);
  }
};

// Proxy<T>: a registered user type in the server (Manager::create<T>).
template <class T>
class Proxy : public BaseProxy {
 public:
  static std::string kSignature() { return "user:" + manager_detail::registered_type_name<T>(); }
  explicit Proxy(std::shared_ptr<manager_detail::Ref> r) : BaseProxy(std::move(r)) {}
  // call<&T::method>(args...): runs the registered method in the server,
  // atomically; its result, or its exception (mp errors as themselves,
  // others as mp::RemoteError).
  template <auto M, class... A>
  auto call(A&&... a) const {
    using Traits = manager_detail::method_traits<decltype(M)>;
    const std::string& name = manager_detail::registered_method_name<M>();
    if (name.empty()) {
      throw ValueError("mp::Proxy::call: the method is not registered (register_type().method)");
    }
    typename Traits::args args(std::forward<A>(a)...);
    const std::string r = BaseProxy::call(manager_detail::Op::kCall, name, mp::encode(args));
    if constexpr (!std::is_void_v<typename Traits::result>) {
      return mp::decode<std::decay_t<typename Traits::result>>(r);
    }
  }
};

// Manager: starts and owns a server (Manager(options)), or is a client of
// one that runs elsewhere (Manager::connect). Move-only.
class Manager {
 public:
  Manager() : Manager(ManagerOptions{}) {}
  explicit Manager(ManagerOptions options);
  // connect(address, authkey): a client of a running server (CPython's
  // BaseManager(address, authkey).connect()). mp::ConnectionError when
  // nothing listens there, mp::AuthenticationError on a wrong authkey.
  static Manager connect(const Address& address, std::string authkey);
  ~Manager();
  Manager(Manager&&) noexcept;
  Manager& operator=(Manager&&) = delete;
  Manager(const Manager&) = delete;
  Manager& operator=(const Manager&) = delete;

  // shutdown(): stops the server this Manager started (a connected client
  // only lets go of it). Idempotent. Proxies to its objects raise
  // mp::ConnectionError from then on.
  void shutdown();
  // address(): where the server listens (for TCP port 0, the port chosen).
  const Address& address() const;
  // authkey(): the key clients need.
  const std::string& authkey() const { return authkey_; }
  // server_pid(): the server process's pid (empty for connect()).
  std::optional<pid_t> server_pid() const;

  template <class K, class V>
  DictProxy<K, V> dict() {
    return DictProxy<K, V>(make("dict", DictProxy<K, V>::kSignature(), {}));
  }
  template <class T>
  ListProxy<T> list() {
    return ListProxy<T>(make("list", ListProxy<T>::kSignature(), {}));
  }
  template <class T>
  ValueProxy<T> Value(const T& init = T{}) {
    return ValueProxy<T>(make("value", ValueProxy<T>::kSignature(), mp::encode(init)));
  }
  template <class T>
  NamespaceProxy<T> Namespace(const T& init = T{}) {
    return NamespaceProxy<T>(make("value", NamespaceProxy<T>::kSignature(), mp::encode(init)));
  }
  template <class T>
  QueueProxy<T> Queue(long long maxsize = 0) {
    return QueueProxy<T>(
        make("queue", QueueProxy<T>::kSignature(), mp::encode(static_cast<std::int64_t>(maxsize))));
  }
  template <class T>
  JoinableQueueProxy<T> JoinableQueue(long long maxsize = 0) {
    return JoinableQueueProxy<T>(make("queue", JoinableQueueProxy<T>::kSignature(),
                                      mp::encode(static_cast<std::int64_t>(maxsize))));
  }
  LockProxy Lock() { return LockProxy(make("lock", "lock", {})); }
  RLockProxy RLock() { return RLockProxy(make("rlock", "rlock", {})); }
  SemaphoreProxy Semaphore(long long value = 1) {
    return SemaphoreProxy(
        make("semaphore", "semaphore", mp::encode(static_cast<std::int64_t>(value))));
  }
  BoundedSemaphoreProxy BoundedSemaphore(long long value = 1) {
    return BoundedSemaphoreProxy(
        make("boundedsemaphore", "boundedsemaphore", mp::encode(static_cast<std::int64_t>(value))));
  }
  EventProxy Event() { return EventProxy(make("event", "event", {})); }
  ConditionProxy Condition() { return ConditionProxy(make("condition", "condition", {})); }
  BarrierProxy Barrier(long long parties) {
    return BarrierProxy(make("barrier", "barrier", mp::encode(static_cast<std::int64_t>(parties))));
  }
  // create<T>() / create<T>(init): a registered user type (register_type).
  template <class T>
  Proxy<T> create() {
    return Proxy<T>(make(kind_of<T>(), Proxy<T>::kSignature(), std::string(1, '\0')));
  }
  template <class T>
  Proxy<T> create(const T& init) {
    return Proxy<T>(
        make(kind_of<T>(), Proxy<T>::kSignature(), std::string(1, '\1') + mp::encode(init)));
  }

 private:
  struct ConnectTag {};
  Manager(ConnectTag, const Address& address, std::string authkey);
  std::shared_ptr<manager_detail::Ref> make(std::string_view kind, std::string signature,
                                            std::string_view init);
  template <class T>
  static std::string kind_of() {
    const auto& name = manager_detail::registered_type_name<T>();
    if (name.empty()) throw ValueError("mp::Manager::create: the type is not registered");
    return "user:" + name;
  }

  Address address_;
  std::string authkey_;
  std::shared_ptr<manager_detail::Endpoint> ep_;
  std::unique_ptr<Process> server_;  // empty for connect()
  bool shut_ = false;
};

// serve_forever(address, authkey): runs a manager's server in this process
// until a client's shutdown request (CPython's
// BaseManager(address, authkey).get_server().serve_forever()). `ready`, if
// given, is called with the bound address once clients can connect.
void serve_forever(const Address& address, const std::string& authkey,
                   const std::function<void(const Address&)>& ready = {});

template <class K, class V>
struct codec_traits<DictProxy<K, V>> : proxy_codec<DictProxy<K, V>> {};
template <class T>
struct codec_traits<ListProxy<T>> : proxy_codec<ListProxy<T>> {};
template <class T>
struct codec_traits<ValueProxy<T>> : proxy_codec<ValueProxy<T>> {};
template <class T>
struct codec_traits<NamespaceProxy<T>> : proxy_codec<NamespaceProxy<T>> {};
template <class T>
struct codec_traits<QueueProxy<T>> : proxy_codec<QueueProxy<T>> {};
template <class T>
struct codec_traits<JoinableQueueProxy<T>> : proxy_codec<JoinableQueueProxy<T>> {};
template <>
struct codec_traits<LockProxy> : proxy_codec<LockProxy> {};
template <>
struct codec_traits<RLockProxy> : proxy_codec<RLockProxy> {};
template <>
struct codec_traits<SemaphoreProxy> : proxy_codec<SemaphoreProxy> {};
template <>
struct codec_traits<BoundedSemaphoreProxy> : proxy_codec<BoundedSemaphoreProxy> {};
template <>
struct codec_traits<EventProxy> : proxy_codec<EventProxy> {};
template <>
struct codec_traits<ConditionProxy> : proxy_codec<ConditionProxy> {};
template <>
struct codec_traits<BarrierProxy> : proxy_codec<BarrierProxy> {};
template <class T>
struct codec_traits<Proxy<T>> : proxy_codec<Proxy<T>> {};

}  // namespace mp
