// mp/errors.h — one error taxonomy for all of mp.
//
// CPython's multiprocessing and threading signal failures with exceptions
// whose *type* carries meaning (queue.Empty, TimeoutError, EOFError,
// BrokenBarrierError, ...). mp keeps those meanings and spells them as C++
// exception types, all derived from mp::Error (itself a std::runtime_error),
// so `catch (const mp::Error&)` catches everything mp raises on purpose.
//
// Where mp deliberately differs from CPython:
//   * Misuse of an object's state (start twice, join before start, join
//     yourself, set daemon after start) raises mp::RuntimeError. CPython's
//     Process raises AssertionError here (an accident of `assert`), its
//     threading module raises RuntimeError; mp uses the latter everywhere.
//   * Bad arguments and use after close() raise mp::ValueError, as CPython.
//   * OS failures that are not part of a documented behaviour are reported as
//     std::system_error carrying the errno, as the C++ standard library does.
//
// Every message says what was wrong, in CPython's words where it has them
// ("can only join a started process").
//
// Every mp error type is declared here and nowhere else, and each is listed
// once in MP_ERROR_TYPES below. That list is what crosses process
// boundaries: an mp error raised in a Pool task is re-raised in the caller
// as the same type with the same what() (mp/pool.h); one that escapes a
// Process target makes the child print "<type>: <what>" and exit with code 1
// (mp/process.h). What travels is the type and what(); the extra fields of
// BufferTooShort (message()) and WorkerLostError (pid(), exitcode()) arrive
// empty / 0, since only the caller's own pool can fill them truthfully.
#pragma once

// mp's headers are C++20 (concepts, designated initialisers). Without it a
// compiler would print pages of errors; say what to do instead.
#if __cplusplus < 202002L
#error \
    "mp needs C++20: compile with -std=c++20 (Bazel: copts = [\"-std=c++20\"] on the target that includes mp, or build --cxxopt=-std=c++20 in .bazelrc; CMake and pkg-config add it for you)"
#include "mp: stopped here, see the error above"  // a missing file ends the compile
#endif

#include <sys/types.h>

#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

namespace mp {

// Error is the base of every exception mp raises on purpose.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// ValueError: an argument is out of range or invalid, or an object was used
// after close(). Mirrors CPython's ValueError.
class ValueError : public Error {
 public:
  using Error::Error;
};

// RuntimeError: an operation is not allowed in the object's current state
// (start twice, join before start, join of the current process or thread).
class RuntimeError : public Error {
 public:
  using Error::Error;
};

// TimeoutError: a blocking call with a timeout ran out of time where CPython
// raises multiprocessing.TimeoutError (AsyncResult::get, Barrier::wait).
class TimeoutError : public Error {
 public:
  using Error::Error;
};

// Empty: get_nowait() on an empty queue, or get(timeout) that timed out.
// Mirrors queue.Empty.
class Empty : public Error {
 public:
  using Error::Error;
};

// Full: put_nowait() on a full queue, or put(timeout) that timed out.
// Mirrors queue.Full.
class Full : public Error {
 public:
  using Error::Error;
};

// EOFError: the peer end of a connection is closed and nothing is left to
// receive, or a queue's producers are all gone. Mirrors EOFError.
class EOFError : public Error {
 public:
  using Error::Error;
};

// BrokenPipeError: a send to a peer that closed its end. mp never lets
// SIGPIPE kill the program; the write fails with this error instead. Also
// a Queue put() or JoinableQueue join() without a timeout, blocked with
// every consumer of the queue gone (mp/queue.h).
class BrokenPipeError : public Error {
 public:
  using Error::Error;
};

// BufferTooShort: recv_bytes_into() was given a buffer smaller than the
// message. As CPython's, it carries the whole message so nothing is lost.
class BufferTooShort : public Error {
 public:
  BufferTooShort(const std::string& what, std::string message)
      : Error(what), message_(std::move(message)) {}
  // message() is the complete message that did not fit.
  const std::string& message() const noexcept { return message_; }

 private:
  std::string message_;
};

// BrokenBarrierError: a Barrier was aborted, reset, or a wait timed out.
// Mirrors threading.BrokenBarrierError (a RuntimeError in CPython too).
class BrokenBarrierError : public RuntimeError {
 public:
  using RuntimeError::RuntimeError;
};

// CodecError: bytes could not be decoded into the requested type (truncated,
// corrupt, or of another type). Never undefined behaviour.
class CodecError : public ValueError {
 public:
  using ValueError::ValueError;
};

// ProcessError: a child process failed in a way that is not the caller's
// misuse (a pool worker died, a pool's initializer failed). Mirrors
// multiprocessing.ProcessError.
class ProcessError : public Error {
 public:
  using Error::Error;
};

// RemoteError: an exception raised in another process whose C++ type is not
// registered or standard. Carries the remote type's name and its message.
class RemoteError : public Error {
 public:
  RemoteError(std::string type_name, std::string message)
      : Error(type_name + ": " + message),
        type_name_(std::move(type_name)),
        message_(std::move(message)) {}
  // type_name() is the remote exception's type, as the remote side named it.
  const std::string& type_name() const noexcept { return type_name_; }
  // message() is the remote exception's what().
  const std::string& message() const noexcept { return message_; }

 private:
  std::string type_name_;
  std::string message_;
};

// OwnerDeadError: a process died while holding a process-shared lock. The
// caller that receives it *does* hold the lock now; the state it protects
// may be inconsistent. See mp/synchronize.h.
class OwnerDeadError : public Error {
 public:
  using Error::Error;
};

// FileNotFoundError: SharedMemory::attach() (or unlink()) of a name that does
// not exist. Mirrors CPython's FileNotFoundError.
class FileNotFoundError : public Error {
 public:
  using Error::Error;
};

// FileExistsError: SharedMemory::create() with a name that already exists.
// Mirrors CPython's FileExistsError.
class FileExistsError : public Error {
 public:
  using Error::Error;
};

// IndexError: Array::at() out of range. Mirrors CPython's IndexError.
class IndexError : public Error {
 public:
  using Error::Error;
};

// WorkerLostError: a Pool worker running a task died before returning its
// result (killed by a signal, crashed, or exited). The message names the
// worker, its pid and the signal ("... was killed by signal 9 (SIGKILL)").
class WorkerLostError : public ProcessError {
 public:
  WorkerLostError(const std::string& what, pid_t pid, int exitcode)
      : ProcessError(what), pid_(pid), exitcode_(exitcode) {}
  // pid() is the lost worker's pid (0 when re-raised from another process).
  pid_t pid() const noexcept { return pid_; }
  // exitcode() is as Process::exitcode(): -N for death by signal N.
  int exitcode() const noexcept { return exitcode_; }
  // signal() is the signal that killed the worker, or 0.
  int signal() const noexcept { return exitcode_ < 0 ? -exitcode_ : 0; }

 private:
  pid_t pid_;
  int exitcode_;
};

// BrokenPoolError: a Pool's initializer raised in a worker; the pool runs
// no more tasks. The message carries the initializer's exception type and
// message.
class BrokenPoolError : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

// KeyError: a lookup of a key that is not there (DictProxy::at). Mirrors
// CPython's KeyError.
class KeyError : public Error {
 public:
  using Error::Error;
};

// AuthenticationError: a manager's peer failed the authkey handshake (its
// digest was wrong, or it sent something else). Mirrors
// multiprocessing.AuthenticationError (a ProcessError in CPython too).
class AuthenticationError : public ProcessError {
 public:
  using ProcessError::ProcessError;
};

// ConnectionError: a manager's server cannot be reached, or went away
// during a call (mp/managers.h): refused, reset, closed, or shut down.
// Mirrors CPython's ConnectionError family (ConnectionRefusedError,
// ConnectionResetError, EOFError from a dead manager).
class ConnectionError : public Error {
 public:
  using Error::Error;
};

// MP_ERROR_TYPES(X) expands X(Name) once for every mp error type above, by
// its unqualified name. It is the one list from which mp builds what must
// know every error (the Pool's table of errors re-raised as themselves); a
// new error type is added here and nowhere else.
// clang-format off
#define MP_ERROR_TYPES(X)                                                               \
  X(Error) X(ValueError) X(RuntimeError) X(TimeoutError) X(Empty) X(Full) X(EOFError)   \
  X(BrokenPipeError) X(BufferTooShort) X(BrokenBarrierError) X(CodecError)              \
  X(ProcessError) X(RemoteError) X(OwnerDeadError) X(FileNotFoundError)                 \
  X(FileExistsError) X(IndexError) X(WorkerLostError) X(BrokenPoolError)                \
  X(AuthenticationError) X(ConnectionError) X(KeyError)
// clang-format on

namespace internal {

// error_from_what<E>(what) re-creates an mp error E raised elsewhere from
// its what(), so that the copy's what() is the same string.
template <class E>
E error_from_what(const std::string& what) {
  if constexpr (std::is_same_v<E, BufferTooShort>) {
    return E(what, std::string());
  } else if constexpr (std::is_same_v<E, WorkerLostError>) {
    return E(what, 0, 0);
  } else if constexpr (std::is_same_v<E, RemoteError>) {
    // what() is "<type>: <message>".
    const auto colon = what.find(": ");
    if (colon == std::string::npos) return E("unknown", what);
    RemoteError e(what.substr(0, colon), what.substr(colon + 2));
    return e;
  } else {
    return E(what);
  }
}

}  // namespace internal

}  // namespace mp
