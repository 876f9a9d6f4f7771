#include "mp/context.h"

#include "mp/errors.h"

namespace mp {

void set_start_method(std::string_view method, bool force) {
  internal::set_default_start_method(internal::parse_start_method(method), force);
}

std::string get_start_method() {
  internal::fix_default_start_method();
  return std::string(internal::start_method_name(internal::default_start_method()));
}

std::vector<std::string> get_all_start_methods() {
  std::vector<std::string> out{
      std::string(internal::start_method_name(internal::default_start_method()))};
  for (const char* m : {"fork", "forkserver", "spawn"}) {
    if (out.front() != m) out.emplace_back(m);
  }
  return out;
}

namespace forkserver {
void ensure_running() { internal::forkserver_ensure_running(); }
}  // namespace forkserver

Context get_context(std::optional<std::string_view> method) {
  if (!method) {
    return Context(internal::default_start_method());
  }
  return Context(internal::parse_start_method(*method));
}

}  // namespace mp
