#include "mp/internal/manager_server.h"

#include <errno.h>
#include <fcntl.h>
#include <fmt/core.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "mp/codec.h"
#include "mp/errors.h"
#include "mp/internal/demangle.h"
#include "mp/internal/manager_wire.h"

namespace mp::internal::mgr {

namespace {

using Clock = std::chrono::steady_clock;

enum class Auth { kSentChallenge, kAwaitChallenge, kAwaitWelcome, kReady };

struct Conn {
  int fd = -1;
  Auth auth = Auth::kSentChallenge;
  std::string challenge;
  std::string in;
  std::string out;
  std::size_t out_off = 0;
  bool want_out = false;
  bool closing = false;  // close once `out` is flushed (or at once if it cannot be)
  std::uint64_t session = 0;
  bool anchor = false;
  Clock::time_point auth_deadline;
};

struct Session {
  std::map<std::uint64_t, std::int64_t> refs;  // object id -> references
  int anchors = 0;
};

enum class Kind {
  kDict,
  kList,
  kValue,
  kQueue,
  kLock,
  kRLock,
  kSemaphore,
  kBoundedSemaphore,
  kEvent,
  kCondition,
  kBarrier,
  kUser
};

struct Object {
  Kind kind;
  std::string signature;
  std::int64_t refs = 0;
  std::unordered_map<std::string, std::string> dict;
  std::vector<std::string> list;
  std::string value;
  std::deque<std::string> queue;
  std::int64_t maxsize = 0;     // queue (0: unbounded); semaphore bound
  std::int64_t unfinished = 0;  // queue: put and not task_done
  // lock / rlock / condition's lock / semaphore value
  std::int64_t count = 0;
  std::uint64_t owner_session = 0, owner_thread = 0;
  bool owner_died = false;
  bool event = false;
  std::int64_t parties = 0, waiting = 0, generation = 0;
  bool broken = false;
  std::shared_ptr<void> user;
  const TypeEntry* type = nullptr;
};

struct Parked {
  std::uint64_t conn;
  std::uint64_t obj;
  Op op;
  std::uint64_t session = 0, thread = 0;
  std::string item;  // a queue put's item
  std::optional<Clock::time_point> deadline;
  int phase = 0;          // condition: 0 notify, 1 lock
  std::int64_t aux = 0;   // barrier index; condition saved count
  std::int64_t aux2 = 0;  // barrier generation; condition notified
};

struct Failure {
  std::string type;
  std::string what;
};

[[noreturn]] void fail(std::string type, std::string what) {
  throw Failure{std::move(type), std::move(what)};
}

std::string ok(std::string_view payload = {}) {
  std::string r(1, '\0');
  r.append(payload);
  return r;
}

template <class T>
std::string ok_value(const T& v) {
  std::string r(1, '\0');
  encode_into(r, v);
  return r;
}

std::string error_reply(const std::string& type, const std::string& what) {
  std::string r(1, '\1');
  encode_into(r, type);
  encode_into(r, what);
  return r;
}

std::optional<Clock::time_point> deadline_of(std::int64_t timeout_ns) {
  if (timeout_ns < 0) return std::nullopt;
  return Clock::now() + std::chrono::nanoseconds(timeout_ns);
}

class Server {
 public:
  explicit Server(ServerOptions o) : o_(std::move(o)) {}
  void run();

 private:
  void accept_all();
  void on_readable(std::uint64_t id);
  void on_writable(std::uint64_t id);
  void handle_frame(std::uint64_t id, std::string_view frame);
  std::optional<std::string> request(std::uint64_t cid, Conn& c, std::string_view frame);
  void send(std::uint64_t id, std::string_view reply);
  void flush(std::uint64_t id);
  void close_conn(std::uint64_t id);
  void session_died(std::uint64_t s);
  void drop_ref(std::uint64_t s, std::uint64_t obj, std::int64_t n);
  void free_object(std::uint64_t obj);
  void pump(std::uint64_t obj);
  bool attempt(Parked& p, Object& o, std::string& reply, bool timed_out);
  void expire();
  void break_barrier(std::uint64_t obj, Object& o);
  Object& object(std::uint64_t id);
  int next_timeout_ms() const;

  ServerOptions o_;
  int ep_ = -1;
  bool stop_ = false;
  std::uint64_t next_conn_ = 1;
  std::uint64_t next_obj_ = 1;
  std::unordered_map<std::uint64_t, Conn> conns_;
  std::unordered_map<int, std::uint64_t> by_fd_;
  std::unordered_map<std::uint64_t, Session> sessions_;
  std::unordered_map<std::uint64_t, std::unique_ptr<Object>> objects_;
  std::map<std::string, std::uint64_t, std::less<>> shared_;  // type name -> object id
  std::list<Parked> parked_;
};

Object& Server::object(std::uint64_t id) {
  const auto it = objects_.find(id);
  if (it == objects_.end()) {
    fail("mp::RuntimeError",
         fmt::format("mp::Manager: no shared object {} (it was freed: no proxy refers to it)", id));
  }
  return *it->second;
}

void Server::send(std::uint64_t id, std::string_view reply) {
  const auto it = conns_.find(id);
  if (it == conns_.end()) return;
  Conn& c = it->second;
  const std::uint64_t n = reply.size();
  c.out.append(reinterpret_cast<const char*>(&n), 8);
  c.out.append(reply);
  flush(id);
}

void Server::flush(std::uint64_t id) {
  Conn& c = conns_.at(id);
  while (c.out_off < c.out.size()) {
    const ssize_t w = ::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      c.closing = true;  // the peer is gone: drop what it would have read
      c.out.clear();
      c.out_off = 0;
      return;
    }
    c.out_off += static_cast<std::size_t>(w);
  }
  if (c.out_off == c.out.size()) {
    c.out.clear();
    c.out_off = 0;
  }
  const bool want = !c.out.empty();
  if (want != c.want_out) {
    epoll_event ev{};
    ev.events = want ? (EPOLLIN | EPOLLOUT) : EPOLLIN;
    ev.data.u64 = id;
    epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
    c.want_out = want;
  }
}

void Server::close_conn(std::uint64_t id) {
  const auto it = conns_.find(id);
  if (it == conns_.end()) return;
  Conn& c = it->second;
  epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
  ::close(c.fd);
  by_fd_.erase(c.fd);
  const std::uint64_t session = c.session;
  const bool anchor = c.anchor;
  conns_.erase(it);
  // Its parked calls go (a barrier waiter leaving breaks the barrier, as a
  // timeout does: the others are not left waiting for it forever).
  std::vector<std::uint64_t> touched;
  for (auto p = parked_.begin(); p != parked_.end();) {
    if (p->conn == id) {
      touched.push_back(p->obj);
      const bool barrier = p->op == Op::kBarrierWait;
      const std::uint64_t obj = p->obj;
      p = parked_.erase(p);
      if (barrier && objects_.count(obj)) break_barrier(obj, *objects_[obj]);
    } else {
      ++p;
    }
  }
  if (anchor) {
    auto s = sessions_.find(session);
    if (s != sessions_.end() && --s->second.anchors <= 0) session_died(session);
  }
  for (auto obj : touched) pump(obj);
}

void Server::session_died(std::uint64_t s) {
  // Locks it held are released and marked: the next owner is told.
  std::vector<std::uint64_t> released;
  for (auto& [id, o] : objects_) {
    if ((o->kind == Kind::kLock || o->kind == Kind::kRLock || o->kind == Kind::kCondition) &&
        o->count > 0 && o->owner_session == s) {
      o->count = 0;
      o->owner_session = o->owner_thread = 0;
      o->owner_died = true;
      released.push_back(id);
    }
  }
  const auto it = sessions_.find(s);
  if (it != sessions_.end()) {
    auto refs = std::move(it->second.refs);
    sessions_.erase(it);
    for (auto& [obj, n] : refs) {
      auto o = objects_.find(obj);
      if (o == objects_.end()) continue;
      if ((o->second->refs -= n) <= 0) free_object(obj);
    }
  }
  for (auto id : released) pump(id);
}

void Server::drop_ref(std::uint64_t s, std::uint64_t obj, std::int64_t n) {
  auto it = sessions_.find(s);
  if (it == sessions_.end()) return;
  auto r = it->second.refs.find(obj);
  if (r == it->second.refs.end()) return;  // not this session's reference
  n = std::min(n, r->second);
  if ((r->second -= n) == 0) it->second.refs.erase(r);
  auto o = objects_.find(obj);
  if (o != objects_.end() && (o->second->refs -= n) <= 0) free_object(obj);
}

void Server::free_object(std::uint64_t obj) {
  for (auto p = parked_.begin(); p != parked_.end();) {
    if (p->obj == obj) {
      send(p->conn, error_reply("mp::RuntimeError",
                                "mp::Manager: the shared object was freed while a call waited"));
      p = parked_.erase(p);
    } else {
      ++p;
    }
  }
  objects_.erase(obj);
}

void Server::break_barrier(std::uint64_t obj, Object& o) {
  o.broken = true;
  o.waiting = 0;
  for (auto p = parked_.begin(); p != parked_.end();) {
    if (p->obj == obj && p->op == Op::kBarrierWait) {
      send(p->conn, error_reply("mp::BrokenBarrierError", "mp::Barrier: the barrier is broken"));
      p = parked_.erase(p);
    } else {
      ++p;
    }
  }
}

// attempt tries a parked call once: true when it is answered (`reply`).
bool Server::attempt(Parked& p, Object& o, std::string& reply, bool timed_out) {
  switch (p.op) {
    case Op::kQueuePut:
      if (o.maxsize <= 0 || static_cast<std::int64_t>(o.queue.size()) < o.maxsize) {
        o.queue.push_back(std::move(p.item));
        ++o.unfinished;
        reply = ok_value(true);
        return true;
      }
      if (timed_out) reply = ok_value(false);
      return timed_out;
    case Op::kQueueGet:
      if (!o.queue.empty()) {
        reply = ok_value(std::optional<std::string>(std::move(o.queue.front())));
        o.queue.pop_front();
        return true;
      }
      if (timed_out) reply = ok_value(std::optional<std::string>());
      return timed_out;
    case Op::kQueueJoin:
      if (o.unfinished == 0 || timed_out) {
        reply = ok_value(o.unfinished == 0);
        return true;
      }
      return false;
    case Op::kEventWait:
      if (o.event || timed_out) {
        reply = ok_value(o.event);
        return true;
      }
      return false;
    case Op::kAcquire:
    case Op::kCondWait: {
      if (p.op == Op::kCondWait && p.phase == 0) return false;  // waits for a notify
      std::uint8_t got = 0;
      if (o.kind == Kind::kSemaphore || o.kind == Kind::kBoundedSemaphore) {
        if (o.count > 0) {
          --o.count;
          got = 1;
        }
      } else if (o.count == 0) {
        o.owner_session = p.session;
        o.owner_thread = p.thread;
        o.count = p.op == Op::kCondWait ? p.aux : 1;
        got = o.owner_died ? 2 : 1;
        o.owner_died = false;
      } else if (o.kind != Kind::kLock && p.op == Op::kAcquire && o.owner_session == p.session &&
                 o.owner_thread == p.thread) {
        ++o.count;
        got = 1;
      }
      if (p.op == Op::kCondWait) {
        if (got == 0) return false;  // the lock is taken back before wait() returns
        reply = ok_value(static_cast<std::uint8_t>((p.aux2 ? 1 : 0) + (got == 2 ? 2 : 0)));
        return true;
      }
      if (got == 0 && !timed_out) return false;
      reply = ok_value(got);
      return true;
    }
    default:
      reply = error_reply("mp::RuntimeError", "mp::Manager: internal: not a waiting call");
      return true;
  }
}

void Server::pump(std::uint64_t obj) {
  const auto oit = objects_.find(obj);
  if (oit == objects_.end()) return;
  Object& o = *oit->second;
  for (bool progress = true; progress;) {
    progress = false;
    for (auto p = parked_.begin(); p != parked_.end();) {
      std::string reply;
      if (p->obj == obj && p->op != Op::kBarrierWait && attempt(*p, o, reply, false)) {
        const auto conn = p->conn;
        p = parked_.erase(p);
        send(conn, reply);
        progress = true;
      } else {
        ++p;
      }
    }
  }
}

void Server::expire() {
  if (parked_.empty()) return;
  const auto now = Clock::now();
  std::vector<std::uint64_t> touched;
  for (auto p = parked_.begin(); p != parked_.end();) {
    if (!p->deadline || *p->deadline > now) {
      ++p;
      continue;
    }
    Object& o = *objects_.at(p->obj);
    if (p->op == Op::kBarrierWait) {
      const auto obj = p->obj;
      break_barrier(obj, o);  // erases every waiter of obj, p among them
      p = parked_.begin();
      continue;
    }
    if (p->op == Op::kCondWait && p->phase == 0) {
      p->phase = 1;  // timed out: take the lock back, then return false
      p->deadline.reset();
      touched.push_back(p->obj);
      ++p;
      continue;
    }
    std::string reply;
    attempt(*p, o, reply, true);
    const auto conn = p->conn;
    p = parked_.erase(p);
    send(conn, reply);
  }
  for (auto obj : touched) pump(obj);
}

int Server::next_timeout_ms() const {
  std::optional<Clock::time_point> next;
  for (const auto& p : parked_) {
    if (p.deadline && (!next || *p.deadline < *next)) next = p.deadline;
  }
  int ms = 1000;  // also the cadence of the authentication timeout check
  if (next) {
    const auto d = std::chrono::ceil<std::chrono::milliseconds>(*next - Clock::now()).count();
    ms = static_cast<int>(std::clamp<long long>(d, 0, ms));
  }
  return ms;
}

std::optional<std::string> Server::request(std::uint64_t cid, Conn& c, std::string_view frame) {
  Decoder d(frame);
  const auto op = static_cast<Op>(d.read<std::uint8_t>());
  const auto id = d.read<std::uint64_t>();
  if (c.session == 0 && op != Op::kHello) {
    fail("mp::ValueError", "mp::Manager: a request before the session's hello");
  }
  auto park = [&](Parked p, Object& o, std::int64_t timeout_ns) -> std::optional<std::string> {
    std::string reply;
    if (attempt(p, o, reply, false)) return reply;
    if (timeout_ns == 0) {
      attempt(p, o, reply, true);
      return reply;
    }
    p.deadline = deadline_of(timeout_ns);
    parked_.push_back(std::move(p));
    return std::nullopt;
  };
  auto expect = [&](Object& o, std::initializer_list<Kind> kinds) {
    if (std::find(kinds.begin(), kinds.end(), o.kind) == kinds.end()) {
      fail("mp::ValueError", fmt::format("mp::Manager: request {} does not apply to a {}",
                                         static_cast<int>(op), o.signature));
    }
  };
  auto index = [](std::int64_t i, std::size_t size, bool insert = false) -> std::size_t {
    const auto n = static_cast<std::int64_t>(size);
    if (i < 0) i += n;
    if (insert) return static_cast<std::size_t>(std::clamp<std::int64_t>(i, 0, n));
    if (i < 0 || i >= n) fail("mp::IndexError", "mp::Manager: list index out of range");
    return static_cast<std::size_t>(i);
  };
  auto apply_fn = [&](std::string_view name, std::string_view value) {
    const FunctionEntry* f = find_function(name);
    if (f == nullptr) {
      fail("mp::ValueError",
           fmt::format("mp::Manager: no function '{}' is registered in the server", name));
    }
    return f->thunk(f->fn, value);
  };

  switch (op) {
    case Op::kHello: {
      c.session = d.read<std::uint64_t>();
      c.anchor = d.read<bool>();
      if (c.session == 0) fail("mp::ValueError", "mp::Manager: session 0");
      if (c.anchor) ++sessions_[c.session].anchors;
      return ok();
    }
    case Op::kPing:
      return ok();
    case Op::kShutdown:
      stop_ = true;
      return ok();
    case Op::kCreate: {
      const auto kind = d.read<std::string>();
      auto o = std::make_unique<Object>();
      o->signature = d.read<std::string>();
      const auto init = d.read<std::string>();
      static const std::map<std::string, Kind, std::less<>> kinds = {
          {"dict", Kind::kDict},           {"list", Kind::kList},
          {"value", Kind::kValue},         {"queue", Kind::kQueue},
          {"lock", Kind::kLock},           {"rlock", Kind::kRLock},
          {"semaphore", Kind::kSemaphore}, {"boundedsemaphore", Kind::kBoundedSemaphore},
          {"event", Kind::kEvent},         {"condition", Kind::kCondition},
          {"barrier", Kind::kBarrier}};
      if (kind.rfind("user:", 0) == 0) {
        o->kind = Kind::kUser;
        o->type = find_type(std::string_view(kind).substr(5));
        if (o->type == nullptr) {
          fail("mp::ValueError",
               fmt::format("mp::Manager: type '{}' is not registered in the server",
                           kind.substr(5)));
        }
        if (o->type->shared) {
          const auto s = shared_.find(kind);
          if (s != shared_.end() && objects_.count(s->second)) {
            Object& existing = *objects_[s->second];
            if (existing.signature != o->signature) {
              fail("mp::CodecError",
                   "mp::Manager: " + existing.signature + " requested as " + o->signature);
            }
            ++existing.refs;
            sessions_[c.session].refs[s->second] += 1;
            return ok_value(s->second);
          }
        }
        o->user = o->type->make(init);
      } else {
        const auto k = kinds.find(kind);
        if (k == kinds.end()) fail("mp::ValueError", "mp::Manager: unknown kind " + kind);
        o->kind = k->second;
        switch (o->kind) {
          case Kind::kValue:
            o->value = init;
            break;
          case Kind::kQueue:
            o->maxsize = decode<std::int64_t>(init);
            break;
          case Kind::kSemaphore:
          case Kind::kBoundedSemaphore:
            o->count = o->maxsize = decode<std::int64_t>(init);
            if (o->count < 0) fail("mp::ValueError", "semaphore initial value must be >= 0");
            break;
          case Kind::kBarrier:
            o->parties = decode<std::int64_t>(init);
            if (o->parties < 1) fail("mp::ValueError", "mp::Barrier: parties must be >= 1");
            break;
          default:
            break;
        }
      }
      const std::uint64_t oid = next_obj_++;
      o->refs = 1;
      if (o->kind == Kind::kUser && o->type->shared) {
        o->refs = 2;  // the server's own reference: kept for its life
        shared_[kind] = oid;
      }
      objects_[oid] = std::move(o);
      sessions_[c.session].refs[oid] += 1;
      return ok_value(oid);
    }
    case Op::kIncRef: {
      Object& o = object(id);
      const auto sig = d.read<std::string>();
      if (sig != o.signature) {
        fail("mp::CodecError",
             fmt::format("mp::Manager: object {} is a {}, not a {}", id, o.signature, sig));
      }
      ++o.refs;
      sessions_[c.session].refs[id] += 1;
      return ok();
    }
    case Op::kDecRef:
      drop_ref(c.session, id, 1);
      return std::nullopt;

    // ---- dict ----
    case Op::kDictGet: {
      Object& o = object(id);
      expect(o, {Kind::kDict});
      const auto it = o.dict.find(d.read<std::string>());
      return ok_value(it == o.dict.end() ? std::optional<std::string>()
                                         : std::optional<std::string>(it->second));
    }
    case Op::kDictSet: {
      Object& o = object(id);
      expect(o, {Kind::kDict});
      auto k = d.read<std::string>();
      auto v = d.read<std::string>();
      o.dict.insert_or_assign(std::move(k), std::move(v));
      return ok();
    }
    case Op::kDictSetMany: {
      Object& o = object(id);
      expect(o, {Kind::kDict});
      const std::size_t n = d.read_size(16);
      for (std::size_t i = 0; i < n; ++i) {
        auto k = d.read<std::string>();
        auto v = d.read<std::string>();
        o.dict.insert_or_assign(std::move(k), std::move(v));
      }
      return ok();
    }
    case Op::kDictDel: {
      Object& o = object(id);
      expect(o, {Kind::kDict});
      return ok_value(o.dict.erase(d.read<std::string>()) > 0);
    }
    case Op::kDictContains: {
      Object& o = object(id);
      expect(o, {Kind::kDict});
      return ok_value(o.dict.count(d.read<std::string>()) > 0);
    }
    case Op::kDictLen: {
      Object& o = object(id);
      expect(o, {Kind::kDict, Kind::kList});
      return ok_value(
          static_cast<std::uint64_t>(o.kind == Kind::kDict ? o.dict.size() : o.list.size()));
    }
    case Op::kDictItems:
    case Op::kDictKeys:
    case Op::kDictValues: {
      Object& o = object(id);
      expect(o, {Kind::kDict});
      std::size_t bytes = 8;
      for (const auto& [k, v] : o.dict) bytes += k.size() + v.size();
      std::string r(1, '\0');
      r.reserve(1 + bytes);
      Encoder e(r);
      e.write_size(o.dict.size());
      for (const auto& [k, v] : o.dict) {
        if (op != Op::kDictValues) r += k;
        if (op != Op::kDictKeys) r += v;
      }
      return r;
    }
    case Op::kDictClear: {
      Object& o = object(id);
      expect(o, {Kind::kDict, Kind::kList});
      o.dict.clear();
      o.list.clear();
      return ok();
    }
    case Op::kDictPop: {
      Object& o = object(id);
      expect(o, {Kind::kDict});
      auto node = o.dict.extract(d.read<std::string>());
      return ok_value(node ? std::optional<std::string>(std::move(node.mapped()))
                           : std::optional<std::string>());
    }
    case Op::kDictUpdate: {
      Object& o = object(id);
      expect(o, {Kind::kDict});
      auto k = d.read<std::string>();
      const auto fn = d.read<std::string>();
      const auto dflt = d.read<std::string>();
      const auto it = o.dict.find(k);
      std::string next = apply_fn(fn, it == o.dict.end() ? std::string_view(dflt) : it->second);
      std::string r = ok(next);
      if (it == o.dict.end()) {
        o.dict.emplace(std::move(k), std::move(next));
      } else {
        it->second = std::move(next);
      }
      return r;
    }
    case Op::kDictSetDefault: {
      Object& o = object(id);
      expect(o, {Kind::kDict});
      auto k = d.read<std::string>();
      auto v = d.read<std::string>();
      return ok(o.dict.try_emplace(std::move(k), std::move(v)).first->second);
    }

    // ---- list ----
    case Op::kListAppend: {
      Object& o = object(id);
      expect(o, {Kind::kList});
      o.list.push_back(d.read<std::string>());
      return ok();
    }
    case Op::kListExtend: {
      Object& o = object(id);
      expect(o, {Kind::kList});
      const std::size_t n = d.read_size(8);
      for (std::size_t i = 0; i < n; ++i) o.list.push_back(d.read<std::string>());
      return ok();
    }
    case Op::kListGet: {
      Object& o = object(id);
      expect(o, {Kind::kList});
      return ok(o.list[index(d.read<std::int64_t>(), o.list.size())]);
    }
    case Op::kListSet: {
      Object& o = object(id);
      expect(o, {Kind::kList});
      const auto i = index(d.read<std::int64_t>(), o.list.size());
      o.list[i] = d.read<std::string>();
      return ok();
    }
    case Op::kListLen: {
      Object& o = object(id);
      expect(o, {Kind::kList});
      return ok_value(static_cast<std::uint64_t>(o.list.size()));
    }
    case Op::kListAll: {
      Object& o = object(id);
      expect(o, {Kind::kList});
      std::string r(1, '\0');
      Encoder e(r);
      e.write_size(o.list.size());
      for (const auto& v : o.list) r += v;
      return r;
    }
    case Op::kListPop: {
      Object& o = object(id);
      expect(o, {Kind::kList});
      if (o.list.empty()) fail("mp::IndexError", "mp::Manager: pop from empty list");
      const auto i = index(d.read<std::int64_t>(), o.list.size());
      std::string r = ok(o.list[i]);
      o.list.erase(o.list.begin() + static_cast<std::ptrdiff_t>(i));
      return r;
    }
    case Op::kListInsert: {
      Object& o = object(id);
      expect(o, {Kind::kList});
      const auto i = index(d.read<std::int64_t>(), o.list.size(), true);
      o.list.insert(o.list.begin() + static_cast<std::ptrdiff_t>(i), d.read<std::string>());
      return ok();
    }
    case Op::kListClear: {
      Object& o = object(id);
      expect(o, {Kind::kList});
      o.list.clear();
      return ok();
    }
    case Op::kListUpdate: {
      Object& o = object(id);
      expect(o, {Kind::kList});
      const auto i = index(d.read<std::int64_t>(), o.list.size());
      o.list[i] = apply_fn(d.read<std::string>(), o.list[i]);
      return ok(o.list[i]);
    }

    // ---- value ----
    case Op::kValueGet: {
      Object& o = object(id);
      expect(o, {Kind::kValue});
      return ok(o.value);
    }
    case Op::kValueSet: {
      Object& o = object(id);
      expect(o, {Kind::kValue});
      o.value = d.read<std::string>();
      return ok();
    }
    case Op::kValueUpdate: {
      Object& o = object(id);
      expect(o, {Kind::kValue});
      o.value = apply_fn(d.read<std::string>(), o.value);
      return ok(o.value);
    }

    // ---- queue ----
    case Op::kQueuePut: {
      Object& o = object(id);
      expect(o, {Kind::kQueue});
      Parked p{cid, id, op};
      p.item = d.read<std::string>();
      const auto t = d.read<std::int64_t>();
      auto r = park(std::move(p), o, t);
      pump(id);
      return r;
    }
    case Op::kQueueGet: {
      Object& o = object(id);
      expect(o, {Kind::kQueue});
      auto r = park(Parked{cid, id, op}, o, d.read<std::int64_t>());
      pump(id);
      return r;
    }
    case Op::kQueueSize: {
      Object& o = object(id);
      expect(o, {Kind::kQueue});
      return ok_value(static_cast<std::uint64_t>(o.queue.size()));
    }
    case Op::kQueueTaskDone: {
      Object& o = object(id);
      expect(o, {Kind::kQueue});
      if (o.unfinished <= 0) fail("mp::ValueError", "task_done() called too many times");
      --o.unfinished;
      pump(id);
      return ok();
    }
    case Op::kQueueJoin: {
      Object& o = object(id);
      expect(o, {Kind::kQueue});
      return park(Parked{cid, id, op}, o, d.read<std::int64_t>());
    }

    // ---- locks, semaphores ----
    case Op::kAcquire: {
      Object& o = object(id);
      expect(o, {Kind::kLock, Kind::kRLock, Kind::kSemaphore, Kind::kBoundedSemaphore,
                 Kind::kCondition});
      Parked p{cid, id, op, c.session, d.read<std::uint64_t>()};
      return park(std::move(p), o, d.read<std::int64_t>());
    }
    case Op::kRelease: {
      Object& o = object(id);
      const auto thread = d.read<std::uint64_t>();
      switch (o.kind) {
        case Kind::kLock:
          if (o.count == 0) fail("mp::RuntimeError", "release unlocked lock");
          o.count = 0;
          o.owner_session = o.owner_thread = 0;
          break;
        case Kind::kRLock:
        case Kind::kCondition:
          if (o.count == 0 || o.owner_session != c.session || o.owner_thread != thread) {
            fail("mp::RuntimeError", "cannot release un-acquired lock");
          }
          if (--o.count == 0) o.owner_session = o.owner_thread = 0;
          break;
        case Kind::kBoundedSemaphore:
          if (o.count >= o.maxsize) fail("mp::ValueError", "Semaphore released too many times");
          ++o.count;
          break;
        case Kind::kSemaphore:
          ++o.count;
          break;
        default:
          expect(o, {Kind::kLock});
      }
      pump(id);
      return ok();
    }
    case Op::kSemValue: {
      Object& o = object(id);
      expect(o, {Kind::kSemaphore, Kind::kBoundedSemaphore});
      return ok_value(o.count);
    }

    // ---- event ----
    case Op::kEventSet:
    case Op::kEventClear: {
      Object& o = object(id);
      expect(o, {Kind::kEvent});
      o.event = op == Op::kEventSet;
      pump(id);
      return ok();
    }
    case Op::kEventIsSet: {
      Object& o = object(id);
      expect(o, {Kind::kEvent});
      return ok_value(o.event);
    }
    case Op::kEventWait: {
      Object& o = object(id);
      expect(o, {Kind::kEvent});
      return park(Parked{cid, id, op}, o, d.read<std::int64_t>());
    }

    // ---- condition ----
    case Op::kCondWait: {
      Object& o = object(id);
      expect(o, {Kind::kCondition});
      Parked p{cid, id, op, c.session, d.read<std::uint64_t>()};
      const auto t = d.read<std::int64_t>();
      if (o.count == 0 || o.owner_session != p.session || o.owner_thread != p.thread) {
        fail("mp::RuntimeError", "cannot wait on un-acquired lock");
      }
      p.aux = o.count;  // restored when wait() takes the lock back
      o.count = 0;
      o.owner_session = o.owner_thread = 0;
      p.deadline = deadline_of(t);
      if (t == 0) p.phase = 1;
      parked_.push_back(std::move(p));
      pump(id);
      return std::nullopt;
    }
    case Op::kCondNotify: {
      Object& o = object(id);
      expect(o, {Kind::kCondition});
      const auto thread = d.read<std::uint64_t>();
      auto n = d.read<std::int64_t>();
      if (o.count == 0 || o.owner_session != c.session || o.owner_thread != thread) {
        fail("mp::RuntimeError", "cannot notify on un-acquired lock");
      }
      for (auto& p : parked_) {
        if (n == 0) break;
        if (p.obj == id && p.op == Op::kCondWait && p.phase == 0) {
          p.phase = 1;
          p.aux2 = 1;
          p.deadline.reset();
          if (n > 0) --n;
        }
      }
      return ok();
    }

    // ---- barrier ----
    case Op::kBarrierWait: {
      Object& o = object(id);
      expect(o, {Kind::kBarrier});
      const auto t = d.read<std::int64_t>();
      if (o.broken) fail("mp::BrokenBarrierError", "mp::Barrier: the barrier is broken");
      const std::int64_t my = o.waiting++;
      if (o.waiting == o.parties) {
        for (auto p = parked_.begin(); p != parked_.end();) {
          if (p->obj == id && p->op == Op::kBarrierWait) {
            send(p->conn, ok_value(p->aux));
            p = parked_.erase(p);
          } else {
            ++p;
          }
        }
        o.waiting = 0;
        ++o.generation;
        return ok_value(my);
      }
      if (t == 0) {
        break_barrier(id, o);
        fail("mp::BrokenBarrierError", "mp::Barrier: the barrier is broken");
      }
      Parked p{cid, id, op};
      p.aux = my;
      p.aux2 = o.generation;
      p.deadline = deadline_of(t);
      parked_.push_back(std::move(p));
      return std::nullopt;
    }
    case Op::kBarrierAbort:
    case Op::kBarrierReset: {
      Object& o = object(id);
      expect(o, {Kind::kBarrier});
      break_barrier(id, o);
      if (op == Op::kBarrierReset) {
        o.broken = false;
        ++o.generation;
      }
      return ok();
    }
    case Op::kBarrierInfo: {
      Object& o = object(id);
      expect(o, {Kind::kBarrier});
      return ok_value(std::tuple<std::int64_t, std::int64_t, bool>(o.parties, o.waiting, o.broken));
    }

    // ---- user types ----
    case Op::kCall: {
      Object& o = object(id);
      expect(o, {Kind::kUser});
      const auto name = d.read<std::string>();
      const auto args = d.read<std::string>();
      const auto m = o.type->methods.find(name);
      if (m == o.type->methods.end()) {
        fail("mp::ValueError",
             fmt::format("mp::Manager: {} has no registered method '{}'", o.signature, name));
      }
      return ok(m->second(o.user.get(), args));
    }
  }
  fail("mp::ValueError", fmt::format("mp::Manager: unknown request {}", static_cast<int>(op)));
}

void Server::handle_frame(std::uint64_t id, std::string_view frame) {
  Conn& c = conns_.at(id);
  switch (c.auth) {
    case Auth::kSentChallenge: {
      const std::string want = answer_for(o_.authkey, c.challenge);
      if (!digest_matches(want, frame)) {
        send(id, kFailure);
        c.closing = true;
        return;
      }
      c.auth = Auth::kAwaitChallenge;
      send(id, kWelcome);
      return;
    }
    case Auth::kAwaitChallenge: {
      const std::string answer = answer_for(o_.authkey, frame);
      if (answer.empty()) {
        c.closing = true;
        return;
      }
      c.auth = Auth::kAwaitWelcome;
      send(id, answer);
      return;
    }
    case Auth::kAwaitWelcome:
      if (frame != kWelcome) {
        c.closing = true;
        return;
      }
      c.auth = Auth::kReady;
      return;
    case Auth::kReady:
      break;
  }
  std::optional<std::string> reply;
  try {
    reply = request(id, c, frame);
  } catch (const Failure& f) {
    reply = error_reply(f.type, f.what);
  } catch (const std::exception& e) {
    // A codec error on a malformed request, or a user method's exception.
    const auto caught = describe_caught_exception();
    reply = error_reply(caught.type, caught.what);
  }
  if (reply) send(id, *reply);
}

void Server::on_readable(std::uint64_t id) {
  bool eof = false;
  {
    Conn& c = conns_.at(id);
    char buf[65536];
    for (int rounds = 0; rounds < 64; ++rounds) {  // then let others have a turn
      const ssize_t r = ::recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
      if (r > 0) {
        c.in.append(buf, static_cast<std::size_t>(r));
        if (c.auth != Auth::kReady && c.in.size() > kMaxAuthFrame + 8) break;
        continue;
      }
      if (r < 0 && errno == EINTR) continue;
      // End of file, or an error other than "nothing more for now".
      if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) eof = true;
      break;
    }
  }
  std::size_t off = 0;
  for (;;) {
    auto it = conns_.find(id);
    if (it == conns_.end()) return;
    Conn& c = it->second;
    if (c.closing || stop_) break;
    if (c.in.size() - off < 8) break;
    std::uint64_t n;
    std::memcpy(&n, c.in.data() + off, 8);
    const std::size_t cap = c.auth == Auth::kReady ? kMaxFrame : kMaxAuthFrame;
    if (n > cap) {
      c.closing = true;  // a claim over the limit: nothing is allocated for it
      break;
    }
    if (c.in.size() - off - 8 < n) break;
    const std::string frame = c.in.substr(off + 8, n);
    off += 8 + n;
    handle_frame(id, frame);
  }
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  it->second.in.erase(0, off);
  if (eof || it->second.closing) close_conn(id);
}

void Server::on_writable(std::uint64_t id) {
  flush(id);
  auto it = conns_.find(id);
  if (it != conns_.end() && it->second.closing && it->second.out.empty()) close_conn(id);
}

void Server::accept_all() {
  for (;;) {
    const int fd = ::accept4(o_.listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;  // EAGAIN, or out of fds: try again at the next wakeup
    if (conns_.size() >= o_.max_connections) {
      ::close(fd);
      continue;
    }
    const std::uint64_t id = next_conn_++;
    Conn c;
    c.fd = fd;
    c.challenge = challenge_message();
    c.auth_deadline = Clock::now() + o_.auth_timeout;
    conns_.emplace(id, std::move(c));
    by_fd_[fd] = id;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = id;
    epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
    send(id, conns_.at(id).challenge);
  }
}

void Server::run() {
  // Idle peers each hold an fd: take every fd the hard limit allows.
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
  // accept4 in a loop until EAGAIN: the listening socket must not block.
  fcntl(o_.listen_fd, F_SETFL, fcntl(o_.listen_fd, F_GETFL) | O_NONBLOCK);
  ep_ = epoll_create1(EPOLL_CLOEXEC);
  if (ep_ < 0) throw std::system_error(errno, std::generic_category(), "epoll_create1");
  constexpr std::uint64_t kListen = 0, kWatch = ~std::uint64_t{0};
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListen;
  epoll_ctl(ep_, EPOLL_CTL_ADD, o_.listen_fd, &ev);
  if (o_.watch_fd >= 0) {
    ev.data.u64 = kWatch;
    epoll_ctl(ep_, EPOLL_CTL_ADD, o_.watch_fd, &ev);
  }
  std::vector<epoll_event> events(256);
  auto last_auth_check = Clock::now();
  while (!stop_) {
    const int n =
        epoll_wait(ep_, events.data(), static_cast<int>(events.size()), next_timeout_ms());
    if (n < 0 && errno != EINTR) break;
    for (int i = 0; i < n && !stop_; ++i) {
      const std::uint64_t id = events[i].data.u64;
      if (id == kListen) {
        accept_all();
      } else if (id == kWatch) {
        stop_ = true;
      } else if (conns_.count(id)) {
        if (events[i].events & EPOLLOUT) on_writable(id);
        if (conns_.count(id) && (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
          on_readable(id);
        }
      }
    }
    expire();
    const auto now = Clock::now();
    if (now - last_auth_check >= std::chrono::milliseconds(500)) {
      last_auth_check = now;
      std::vector<std::uint64_t> late;
      for (const auto& [id, c] : conns_) {
        if (c.auth != Auth::kReady && c.auth_deadline <= now) late.push_back(id);
      }
      for (auto id : late) close_conn(id);
    }
  }
  // Shutdown: the last replies go out before the connections close.
  for (auto& [id, c] : conns_) {
    if (!c.out.empty()) {
      ::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    ::close(c.fd);
  }
  conns_.clear();
  ::close(o_.listen_fd);
  if (o_.watch_fd >= 0) ::close(o_.watch_fd);
  ::close(ep_);
}

}  // namespace

void serve(ServerOptions options) { Server(std::move(options)).run(); }

}  // namespace mp::internal::mgr
