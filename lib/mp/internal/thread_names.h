// mp/internal/thread_names.h — readable names for thread targets.
//
// Internal: CPython names a thread "Thread-N (work)" after its target's
// __name__. C++ callables carry no such name, so mp recovers one:
//   * a function pointer: its symbol, found with dladdr(3) (exported symbols,
//     or every symbol of an executable linked with -rdynamic) or, failing
//     that, in the ELF .symtab of the file that holds it (present unless the
//     binary was stripped). Functions with internal linkage are found in the
//     .symtab too. The name is demangled and reduced to its unqualified form
//     ("ns::work(int)" -> "work").
//   * a lambda (or a function pointer made from one): "<lambda>", as CPython.
//   * any other class type: its unqualified class name ("Worker"), except
//     standard-library wrappers (std::function, std::bind results), which
//     carry no useful name and give none.
// Lookups are cached; they are thread-safe and fork-safe.
#pragma once

#include <optional>
#include <string>
#include <typeinfo>

namespace mp::internal {

// function_target_name is the short name of the function at `address`, or
// nullopt when no symbol covers it exactly.
std::optional<std::string> function_target_name(const void* address);

// type_target_name is the short name of a callable class type (see above).
std::optional<std::string> type_target_name(const std::type_info& type);

// class_display_name is the unqualified, demangled name of a class, for
// repr-style output ("DownloadTask").
std::string class_display_name(const std::type_info& type);

}  // namespace mp::internal
