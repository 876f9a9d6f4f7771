// mp/internal/demangle.h — readable type names, and what an exception being
// handled says about itself, for mp's error messages and reports.
//
// Internal: the one place that calls the C++ ABI's demangler.
#pragma once

#include <string>

namespace mp::internal {

// demangle is a mangled name (std::type_info::name(), a symbol name) as it
// is spelt in source ("std::runtime_error"); the input itself when the
// demangler cannot read it.
std::string demangle(const char* mangled);

// CaughtException is what the exception being handled says about itself.
struct CaughtException {
  // type: its demangled dynamic type; empty when it has no C++ type (the
  // forced unwind of pthread_exit or pthread_cancel).
  std::string type;
  // what: its what() when it is a std::exception; empty otherwise.
  std::string what;
  // standard: it derives from std::exception.
  bool standard = false;
};

// describe_caught_exception describes the exception being handled. Call it
// only inside a catch block. It rethrows nothing and throws only
// std::bad_alloc.
CaughtException describe_caught_exception();

}  // namespace mp::internal
