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
#pragma once

// mp's headers are C++20 (concepts, designated initialisers). Without it a
// compiler would print pages of errors; say what to do instead.
#if __cplusplus < 202002L
#error "mp needs C++20: compile with -std=c++20 (Bazel: copts = [\"-std=c++20\"] on the target that includes mp, or build --cxxopt=-std=c++20 in .bazelrc; CMake and pkg-config add it for you)"
#include "mp: stopped here, see the error above"  // a missing file ends the compile
#endif

#include <stdexcept>
#include <string>
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

}  // namespace mp
