#include "mp/internal/demangle.h"

#include <cxxabi.h>

#include <cstdlib>
#include <exception>
#include <memory>
#include <typeinfo>

namespace mp::internal {

std::string demangle(const char* mangled) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> out(
      abi::__cxa_demangle(mangled, nullptr, nullptr, &status), std::free);
  return status == 0 && out ? std::string(out.get()) : std::string(mangled);
}

CaughtException describe_caught_exception() {
  CaughtException caught;
  const std::type_info* type = abi::__cxa_current_exception_type();
  // No C++ type: a forced unwind, which must not be caught and dropped here.
  if (type == nullptr) return caught;
  caught.type = demangle(type->name());
  try {
    throw;
  } catch (const std::exception& e) {
    caught.what = e.what();
    caught.standard = true;
  } catch (...) {
  }
  return caught;
}

}  // namespace mp::internal
