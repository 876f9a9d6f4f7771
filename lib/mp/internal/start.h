// mp/internal/start.h — the spawn and forkserver start methods: how a child
// that is not a fork of its parent is started, gets its task and reports
// that it runs it (CPython's popen_spawn_posix.py and popen_forkserver.py).
//
// Internal: users pick a method through mp/context.h.
//
// The start channel. Each such child gets one end of an AF_UNIX stream
// socket pair. The parent sends one frame: the StartRequest (encoded by
// mp/codec.h) with the file descriptors the task's arguments carry
// (internal/travel.h) as SCM_RIGHTS. The child answers one frame: "ok"
// once it has rebuilt its task (before running it), or the reason it could
// not. So Process::start() raises, with the child's reason, when a child
// cannot find its task, and returns only once the child runs it.
//
// spawn: posix_spawn of /proc/self/exe (the running image itself, even if
// the file was replaced since) with the parent's argv, its environment plus
// MP_START=spawn:<fd>, and only stdio and the channel open. A constructor in
// this library reads MP_START and removes it (so the child's own children
// do not see it); main() then runs until it calls mp::freeze_support(),
// which runs the task and exits. A child that reaches an mp start
// (Process::start, a Pool) or the end of main() first reports that
// freeze_support() is missing and exits: never a second generation.
//
// forkserver: a server started the same way (MP_START=forkserver:<fd>),
// whose freeze_support() serves requests until its parent ends. It keeps one
// child forked ahead (a "spare", blocked on a socket of its own; the server
// is single-threaded, so its forks are safe), hands each request with its
// fds (the channel end among them) to the spare, forks the next spare once
// the request is answered and its fds closed, and sends the parent the
// child's pid, a pidfd of it and the read end of a pipe on which it writes
// the child's wait status when it reaps it. A spare that died is replaced
// before it is used; one killed as it is handed a task makes that start
// raise ProcessError ("ended before running its task"). The server ignores
// SIGINT (a terminal's Ctrl-C reaches its children directly). When its
// parent ends (watched through a pidfd), it SIGKILLs its daemonic children
// and SIGTERMs the others, SIGKILLs what is left 5 s later, and exits.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "mp/codec.h"

namespace mp::internal {

enum class StartMethod : std::uint8_t { kFork, kForkserver, kSpawn };

// parse_start_method raises mp::ValueError naming the valid methods.
StartMethod parse_start_method(std::string_view name);
std::string_view start_method_name(StartMethod m) noexcept;

// The process-wide default (mp::set_start_method / get_start_method).
StartMethod default_start_method() noexcept;
void set_default_start_method(StartMethod m, bool force);
// default_start_method_fixed: set_start_method() was called (or a child was
// started, which fixes the default as CPython's get_start_method() does).
void fix_default_start_method() noexcept;

// Launcher: decodes a task (in the child) and returns it ready to run.
using Launcher = std::function<void()> (*)(Decoder&);

// StartRequest is what a spawn or forkserver child gets from its parent.
struct StartRequest {
  std::string name;          // the child's Process name
  std::string child_prefix;  // "Process-3:" for its own children's names
  std::string parent_name;   // what parent_process()->name() reports
  pid_t parent_pid = 0;
  bool daemon = false;
  int number = 0;  // N of Process-N
  // The parent's default start method, the child's own default (CPython's
  // spawn.prepare sets it from get_start_method()).
  StartMethod default_method = StartMethod::kFork;
  std::string module_map;      // internal/modules.h
  std::uint64_t launcher = 0;  // the parent's address of the Launcher
  std::string task;            // what the Launcher decodes
};

// StartedChild: a running child, as the parent holds it.
struct StartedChild {
  pid_t pid = 0;
  int pidfd = -1;      // owned by the caller
  int status_fd = -1;  // forkserver: the server writes the wait status here
};

// start_child starts a child with `method` (forkserver or spawn) and waits
// until it runs its task. `fds` are the task's (borrowed). Raises
// mp::ProcessError with the child's reason when it cannot start or run it.
StartedChild start_child(StartMethod method, const StartRequest& request,
                         const std::vector<int>& fds);

// start_pending: this process was started by spawn or forkserver and has
// not reached mp::freeze_support() yet.
bool start_pending() noexcept;
// refuse_start_while_pending: what Process::start and Pool do in such a
// process: report "freeze_support() missing" to the parent and _exit(1).
void refuse_start_while_pending(std::string_view what);

// run_started_child (process.cc) makes this process the child `request`
// describes, answers the parent on `channel` and runs the task; never
// returns.
[[noreturn]] void run_started_child(const StartRequest& request, std::vector<int>& fds,
                                    int channel);

// send_reply: the child's answer on its channel (ok, or the reason).
void send_reply(int channel, bool ok, std::string_view message) noexcept;

// forkserver_ensure_running / forkserver_pid: mp::forkserver::ensure_running.
void forkserver_ensure_running();
pid_t forkserver_pid() noexcept;
// forkserver_fds: the running forkserver's control socket and pidfd, held by
// the process that started it until it ends (none otherwise).
std::vector<int> forkserver_fds();

// kept_fds (process.cc): every fd mp holds for the rest of this process's
// life once made: forkserver_fds() and this process's own pidfd (opened at
// its first fork start; its forked children watch it). Anything else mp
// opens is closed when the object that opened it goes. (Tests use it to
// tell a leak from these.)
std::vector<int> kept_fds();

}  // namespace mp::internal

template <>
struct mp::codec_traits<mp::internal::StartRequest> {
  static void encode(mp::Encoder& e, const mp::internal::StartRequest& r) {
    e.write(r.name);
    e.write(r.child_prefix);
    e.write(r.parent_name);
    e.write(static_cast<std::int32_t>(r.parent_pid));
    e.write(r.daemon);
    e.write(static_cast<std::int32_t>(r.number));
    e.write(static_cast<std::uint8_t>(r.default_method));
    e.write(r.module_map);
    e.write(r.launcher);
    e.write(r.task);
  }
  static mp::internal::StartRequest decode(mp::Decoder& d) {
    mp::internal::StartRequest r;
    r.name = d.read<std::string>();
    r.child_prefix = d.read<std::string>();
    r.parent_name = d.read<std::string>();
    r.parent_pid = d.read<std::int32_t>();
    r.daemon = d.read<bool>();
    r.number = d.read<std::int32_t>();
    const auto method = d.read<std::uint8_t>();
    if (method > static_cast<std::uint8_t>(mp::internal::StartMethod::kSpawn)) {
      throw mp::CodecError("mp: a start request names an unknown start method");
    }
    r.default_method = static_cast<mp::internal::StartMethod>(method);
    r.module_map = d.read<std::string>();
    r.launcher = d.read<std::uint64_t>();
    r.task = d.read<std::string>();
    return r;
  }
};
