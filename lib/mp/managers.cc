#include "mp/managers.h"

#include <errno.h>
#include <fmt/core.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <new>
#include <system_error>

#include "mp/internal/manager_server.h"
#include "mp/internal/travel.h"

namespace mp {

std::string Address::str() const { return is_tcp() ? fmt::format("{}:{}", host, port) : path; }

namespace manager_detail {

namespace mgr = internal::mgr;

namespace {

struct SockAddr {
  sockaddr_storage storage{};
  socklen_t len = 0;
  int family = AF_UNIX;
};

SockAddr resolve(const Address& a) {
  SockAddr out;
  if (!a.is_tcp()) {
    auto* un = reinterpret_cast<sockaddr_un*>(&out.storage);
    un->sun_family = AF_UNIX;
    if (a.path.size() + 1 > sizeof un->sun_path) {
      throw ValueError(fmt::format("mp::Manager: Unix socket path too long: {}", a.path));
    }
    std::memcpy(un->sun_path, a.path.data(), a.path.size());
    if (!a.path.empty() && a.path[0] == '@') un->sun_path[0] = '\0';  // abstract
    out.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + a.path.size() +
                                     (a.path[0] == '@' ? 0 : 1));
    return out;
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const auto port = std::to_string(a.port);
  const int rc = getaddrinfo(a.host.empty() ? nullptr : a.host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0 || res == nullptr) {
    throw ConnectionError(
        fmt::format("mp::Manager: cannot resolve {}: {}", a.str(), gai_strerror(rc)));
  }
  std::memcpy(&out.storage, res->ai_addr, res->ai_addrlen);
  out.len = res->ai_addrlen;
  out.family = res->ai_family;
  freeaddrinfo(res);
  return out;
}

int connect_to(const Address& a) {
  const SockAddr sa = resolve(a);
  const int fd = ::socket(sa.family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "mp::Manager: socket");
  int rc;
  do {
    rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&sa.storage), sa.len);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    const int e = errno;
    ::close(fd);
    throw ConnectionError(fmt::format("mp::Manager: cannot connect to the manager at {}: {}",
                                      a.str(), std::strerror(e)));
  }
  if (a.is_tcp()) {
    const int one = 1, idle = 5, interval = 2, count = 3;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
  }
  return fd;
}

// listen_on binds and listens; `bound` gets the address with the port the
// kernel chose.
int listen_on(const Address& a, Address& bound) {
  const SockAddr sa = resolve(a);
  const int fd = ::socket(sa.family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "mp::Manager: socket");
  if (a.is_tcp()) {
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  }
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&sa.storage), sa.len) != 0 ||
      ::listen(fd, SOMAXCONN) != 0) {
    const int e = errno;
    ::close(fd);
    throw std::system_error(e, std::generic_category(),
                            fmt::format("mp::Manager: cannot listen on {}", a.str()));
  }
  bound = a;
  if (a.is_tcp()) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    bound.port = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                                : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  }
  return fd;
}

std::uint64_t new_session() {
  std::uint64_t s = 0;
  while (s == 0) {
    const std::string r = mgr::random_bytes(8);
    std::memcpy(&s, r.data(), 8);
  }
  return s;
}

void close_fd(int fd) {
  if (fd >= 0) ::close(fd);
}

}  // namespace

void endpoints_after_fork();

class Endpoint {
 public:
  Endpoint(Address a, std::string key) : address(std::move(a)), authkey(std::move(key)) {}
  ~Endpoint() {
    if (pid != getpid()) return;  // a fork's copy: the fds were closed at the fork
    close_fd(anchor);
    for (int fd : idle) close_fd(fd);
  }

  // take(): an authenticated connection of this process's session.
  int take() {
    std::uint64_t s;
    {
      std::lock_guard lock(mu);
      ensure_anchor();
      if (!idle.empty()) {
        const int fd = idle.back();
        idle.pop_back();
        return fd;
      }
      s = session;
    }
    return open(s, false);
  }
  void give(int fd) {
    std::lock_guard lock(mu);
    if (pid == getpid() && idle.size() < 64) {
      idle.push_back(fd);
    } else {
      ::close(fd);
    }
  }
  void decref(std::uint64_t id) {
    std::lock_guard lock(mu);
    if (anchor < 0 || pid != getpid()) return;
    std::string req;
    Encoder e(req);
    e.write(static_cast<std::uint8_t>(Op::kDecRef));
    e.write(id);
    try {
      mgr::send_frame(anchor, req);
    } catch (const std::exception&) {
      // The server is gone: it holds nothing any more.
    }
  }
  void close_idle() {
    std::lock_guard lock(mu);
    for (int fd : idle) close_fd(fd);
    idle.clear();
  }
  // after_fork (in the child): the parent's connections are not ours.
  void after_fork() {
    new (&mu) std::mutex;
    close_fd(anchor);
    anchor = -1;
    for (int fd : idle) close_fd(fd);
    idle.clear();
    session = 0;
    pid = getpid();
  }

  const Address address;
  const std::string authkey;

 private:
  void ensure_anchor() {
    if (pid != getpid()) after_fork();
    if (anchor >= 0) return;
    session = new_session();
    anchor = open(session, true);
  }
  int open(std::uint64_t s, bool is_anchor) {
    const int fd = connect_to(address);
    try {
      mgr::client_handshake(fd, authkey);
      std::string req;
      Encoder e(req);
      e.write(static_cast<std::uint8_t>(Op::kHello));
      e.write(std::uint64_t{0});
      e.write(s);
      e.write(is_anchor);
      mgr::send_frame(fd, req);
      const std::string reply = mgr::recv_frame(fd, mgr::kMaxAuthFrame);
      if (reply.empty() || reply[0] != '\0') {
        throw ConnectionError("mp::Manager: the server refused the session");
      }
    } catch (...) {
      ::close(fd);
      throw;
    }
    return fd;
  }

  std::mutex mu;
  pid_t pid = getpid();
  std::uint64_t session = 0;  // under mu_
  int anchor = -1;            // under mu_: open while this process holds the endpoint
  std::vector<int> idle;      // under mu_

  friend void endpoints_after_fork();
};

namespace {

struct Endpoints {
  std::mutex mu;
  std::map<std::pair<std::string, std::string>, std::weak_ptr<Endpoint>> all;
};

Endpoints& endpoints() {
  static Endpoints* e = [] {
    auto* r = new Endpoints;  // never destroyed: proxies may outlive statics
    pthread_atfork(nullptr, nullptr, [] { endpoints_after_fork(); });
    return r;
  }();
  return *e;
}

}  // namespace

void endpoints_after_fork() {
  Endpoints& e = endpoints();
  new (&e.mu) std::mutex;
  for (auto& [key, weak] : e.all) {
    if (auto ep = weak.lock()) ep->after_fork();
  }
}

std::shared_ptr<Endpoint> endpoint(const Address& address, const std::string& authkey) {
  Endpoints& e = endpoints();
  std::lock_guard lock(e.mu);
  auto& slot = e.all[{address.str() + (address.is_tcp() ? "/tcp" : "/unix"), authkey}];
  if (auto ep = slot.lock()) return ep;
  auto ep = std::make_shared<Endpoint>(address, authkey);
  slot = ep;
  // Drop expired entries now and then.
  for (auto it = e.all.begin(); it != e.all.end();) {
    it = it->second.expired() ? e.all.erase(it) : std::next(it);
  }
  return ep;
}

const Address& endpoint_address(const Endpoint& ep) { return ep.address; }
const std::string& endpoint_authkey(const Endpoint& ep) { return ep.authkey; }

std::string request(Endpoint& ep, std::string_view req) {
  const int fd = ep.take();
  std::string reply;
  try {
    mgr::send_frame(fd, req);
    reply = mgr::recv_frame(fd, mgr::kMaxFrame);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ep.give(fd);
  if (reply.empty()) throw CodecError("mp::Manager: empty reply from the server");
  if (reply[0] == '\0') return reply.substr(1);
  Decoder d(std::string_view(reply).substr(1));
  const auto type = d.read<std::string>();
  const auto what = d.read<std::string>();
#define MP_MANAGER_RAISE(Name) \
  if (type == "mp::" #Name) throw internal::error_from_what<Name>(what);
  MP_ERROR_TYPES(MP_MANAGER_RAISE)
#undef MP_MANAGER_RAISE
  throw RemoteError(type.empty() ? "unknown" : type, what);
}

Ref::Ref(std::shared_ptr<Endpoint> e, std::uint64_t i, std::string sig)
    : ep(std::move(e)), id(i), signature(std::move(sig)), pid(getpid()) {}

Ref::~Ref() {
  if (pid == getpid()) ep->decref(id);
}

std::shared_ptr<Ref> create(const std::shared_ptr<Endpoint>& ep, std::string_view kind,
                            std::string signature, std::string_view init) {
  std::string req;
  Encoder e(req);
  e.write(static_cast<std::uint8_t>(Op::kCreate));
  e.write(std::uint64_t{0});
  e.write(kind);
  e.write(signature);
  e.write(init);
  const auto id = mp::decode<std::uint64_t>(request(*ep, req));
  return std::make_shared<Ref>(ep, id, std::move(signature));
}

std::shared_ptr<Ref> attach(const Address& address, const std::string& authkey, std::uint64_t id,
                            std::string signature) {
  auto ep = endpoint(address, authkey);
  std::string req;
  Encoder e(req);
  e.write(static_cast<std::uint8_t>(Op::kIncRef));
  e.write(id);
  e.write(signature);
  request(*ep, req);
  return std::make_shared<Ref>(std::move(ep), id, std::move(signature));
}

std::uint64_t thread_token() {
  static std::atomic<std::uint64_t> next{1};
  thread_local const std::uint64_t token = next.fetch_add(1);
  return token;
}

std::int64_t timeout_ns(std::optional<std::chrono::duration<double>> timeout) {
  if (!timeout) return -1;
  if (timeout->count() <= 0) return 0;
  return std::chrono::duration_cast<std::chrono::nanoseconds>(*timeout).count();
}

std::string function_for(const void* fn) {
  auto name = mgr::function_name(fn);
  if (name.empty()) {
    throw ValueError(
        "mp::Manager: the function is not registered with the manager "
        "(MP_MANAGER_FUNCTION(fn) at namespace scope)");
  }
  return name;
}

// What the server process is started with.
struct ServerStart {
  int listen_fd = -1;
  std::string authkey;
  pid_t creator = 0;
};

}  // namespace manager_detail

template <>
struct codec_traits<manager_detail::ServerStart> {
  static void encode(Encoder& e, const manager_detail::ServerStart& s) {
    internal::write_fd(e, s.listen_fd, "mp::Manager's socket");
    e.write(s.authkey);
    e.write(s.creator);
  }
  static manager_detail::ServerStart decode(Decoder& d) {
    manager_detail::ServerStart s;
    s.listen_fd = internal::read_fd(d);
    s.authkey = d.read<std::string>();
    s.creator = d.read<pid_t>();
    return s;
  }
};

namespace manager_detail {
namespace {

void server_main(ServerStart s) {
  mgr::ServerOptions o;
  o.listen_fd = s.listen_fd;
  o.authkey = std::move(s.authkey);
  // Stop when the process that made the manager dies: no orphan server.
  o.watch_fd = static_cast<int>(::syscall(SYS_pidfd_open, s.creator, 0));
  mgr::serve(std::move(o));
}

std::atomic<int> manager_counter{0};

}  // namespace
}  // namespace manager_detail

Manager::Manager(ManagerOptions options) {
  authkey_ = options.authkey ? *options.authkey : internal::mgr::random_bytes(32);
  if (authkey_.empty()) throw ValueError("mp::Manager: the authkey must not be empty");
  const int n = ++manager_detail::manager_counter;
  const Address want = options.address
                           ? *options.address
                           : Address::unix_socket(fmt::format("@mp-manager-{}-{}-{:016x}", getpid(),
                                                              n, manager_detail::new_session()));
  const int fd = manager_detail::listen_on(want, address_);
  try {
    ProcessOptions po;
    po.name = fmt::format("SyncManager-{}", n);
    po.daemon = true;
    po.start_method = options.start_method;
    server_ = std::make_unique<Process>(std::move(po), &manager_detail::server_main,
                                        manager_detail::ServerStart{fd, authkey_, getpid()});
    server_->start();
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);  // the server has its own
  try {
    ep_ = manager_detail::endpoint(address_, authkey_);
    std::string req;
    Encoder e(req);
    e.write(static_cast<std::uint8_t>(internal::mgr::Op::kPing));
    e.write(std::uint64_t{0});
    manager_detail::request(*ep_, req);
  } catch (...) {
    shutdown();
    throw;
  }
}

Manager::Manager(ConnectTag, const Address& address, std::string authkey)
    : address_(address), authkey_(std::move(authkey)) {
  ep_ = manager_detail::endpoint(address_, authkey_);
  std::string req;
  Encoder e(req);
  e.write(static_cast<std::uint8_t>(internal::mgr::Op::kPing));
  e.write(std::uint64_t{0});
  manager_detail::request(*ep_, req);
}

Manager Manager::connect(const Address& address, std::string authkey) {
  return Manager(ConnectTag{}, address, std::move(authkey));
}

Manager::Manager(Manager&& o) noexcept
    : address_(std::move(o.address_)),
      authkey_(std::move(o.authkey_)),
      ep_(std::move(o.ep_)),
      server_(std::move(o.server_)),
      shut_(o.shut_) {
  o.shut_ = true;
}

Manager::~Manager() {
  try {
    shutdown();
  } catch (...) {
    // A destructor does not throw; the server is killed below at worst.
  }
}

void Manager::shutdown() {
  if (shut_) return;
  shut_ = true;
  if (server_) {
    if (ep_) {
      try {
        std::string req;
        Encoder e(req);
        e.write(static_cast<std::uint8_t>(internal::mgr::Op::kShutdown));
        e.write(std::uint64_t{0});
        manager_detail::request(*ep_, req);
      } catch (const std::exception&) {
        // Already gone: join below reaps it.
      }
    }
    server_->join(std::chrono::seconds(5));
    if (server_->is_alive()) {
      server_->kill();
      server_->join();
    }
  }
  if (ep_) ep_->close_idle();
  ep_.reset();
}

const Address& Manager::address() const { return address_; }

std::optional<pid_t> Manager::server_pid() const {
  if (!server_) return std::nullopt;
  return server_->pid();
}

std::shared_ptr<manager_detail::Ref> Manager::make(std::string_view kind, std::string signature,
                                                   std::string_view init) {
  if (shut_ || !ep_) throw ProcessError("mp::Manager: the manager has shut down");
  return manager_detail::create(ep_, kind, std::move(signature), init);
}

void serve_forever(const Address& address, const std::string& authkey,
                   const std::function<void(const Address&)>& ready) {
  if (authkey.empty()) throw ValueError("mp::serve_forever: the authkey must not be empty");
  Address bound;
  const int fd = manager_detail::listen_on(address, bound);
  if (ready) ready(bound);
  internal::mgr::ServerOptions o;
  o.listen_fd = fd;
  o.authkey = authkey;
  internal::mgr::serve(std::move(o));
}

}  // namespace mp
