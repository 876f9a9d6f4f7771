// mp/internal/manager_server.h — the server loop of a manager (the process
// mp::Manager starts, or mp::serve_forever's caller).
//
// Internal. One thread, one epoll set: every connection is non-blocking,
// so a peer that never speaks costs one fd and a few hundred bytes, and a
// call that must wait (a Queue get, a Lock acquire, an Event wait...) is
// parked with its deadline and answered when the object changes or the
// deadline passes. Every request therefore runs alone: each call is atomic.
// The wire format and handshake are internal/manager_wire.h's.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

namespace mp::internal::mgr {

struct ServerOptions {
  int listen_fd = -1;  // a listening socket; the server closes it
  std::string authkey;
  // A pidfd (or any fd) whose readability means "stop": the creating
  // process died. -1: none.
  int watch_fd = -1;
  // A connection that has not authenticated within this time is closed.
  std::chrono::milliseconds auth_timeout{10'000};
  // Connections beyond this many are accepted and closed at once.
  std::size_t max_connections = 16'384;
};

// serve runs the loop until a client asks for shutdown or watch_fd fires.
void serve(ServerOptions options);

}  // namespace mp::internal::mgr
