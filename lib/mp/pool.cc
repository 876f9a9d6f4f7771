#include "mp/pool.h"

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <shared_mutex>
#include <stdexcept>
#include <tuple>
#include <typeinfo>

#include "mp/internal/demangle.h"
#include "mp/os.h"

namespace mp {
namespace pool_detail {
namespace {

struct Registry {
  std::shared_mutex mu;
  std::map<std::string, ExceptionFactory, std::less<>> factories;
};

template <class E>
std::exception_ptr make(const std::string& message) {
  return std::make_exception_ptr(E(message));
}

template <class E>
std::exception_ptr make_mp(const std::string& what) {
  return std::make_exception_ptr(internal::error_from_what<E>(what));
}

Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry;
    auto add = [&](const char* name, ExceptionFactory f) { reg->factories.emplace(name, f); };
    add("std::runtime_error", make<std::runtime_error>);
    add("std::logic_error", make<std::logic_error>);
    add("std::invalid_argument", make<std::invalid_argument>);
    add("std::out_of_range", make<std::out_of_range>);
    add("std::domain_error", make<std::domain_error>);
    add("std::length_error", make<std::length_error>);
    add("std::range_error", make<std::range_error>);
    add("std::overflow_error", make<std::overflow_error>);
    add("std::underflow_error", make<std::underflow_error>);
    // Every mp error, from the one list in mp/errors.h.
#define MP_ADD_ERROR(Name) add("mp::" #Name, make_mp<Name>);
    MP_ERROR_TYPES(MP_ADD_ERROR)
#undef MP_ADD_ERROR
    return reg;
  }();
  return *r;
}

}  // namespace

void register_exception_factory(std::string type_name, ExceptionFactory factory) {
  Registry& r = registry();
  std::unique_lock lock(r.mu);
  r.factories[std::move(type_name)] = factory;
}

std::string demangled_name(const std::type_info& t) { return internal::demangle(t.name()); }

void report_callback_error(const std::exception_ptr& error) noexcept {
  try {
    std::rethrow_exception(error);
  } catch (...) {
    try {
      const internal::CaughtException caught = internal::describe_caught_exception();
      if (caught.standard) {
        std::fputs(
            fmt::format("mp::Pool: a result callback raised {}: {}\n", caught.type, caught.what)
                .c_str(),
            stderr);
        return;
      }
    } catch (...) {  // no memory for the message: the short one below
    }
    std::fputs("mp::Pool: a result callback raised an exception\n", stderr);
  }
}

}  // namespace pool_detail

namespace internal::pool {

std::exception_ptr rebuild_exception(std::string_view payload) {
  std::string type;
  std::string message;
  try {
    std::tie(type, message) = decode<std::tuple<std::string, std::string>>(payload);
  } catch (...) {
    return std::make_exception_ptr(
        RemoteError("unknown", "the task failed and its error could not be decoded"));
  }
  pool_detail::ExceptionFactory factory = nullptr;
  {
    auto& r = pool_detail::registry();
    std::shared_lock lock(r.mu);
    auto it = r.factories.find(type);
    if (it != r.factories.end()) factory = it->second;
  }
  if (factory) return factory(message);
  return std::make_exception_ptr(RemoteError(std::move(type), std::move(message)));
}

}  // namespace internal::pool

namespace {

internal::pool::CoreOptions core_options(const PoolOptions& o) {
  internal::pool::CoreOptions c;
  c.processes = o.processes ? *o.processes : cpu_count();
  if (c.processes < 1) throw ValueError("Number of processes must be at least 1");
  if (o.maxtasksperchild) {
    if (*o.maxtasksperchild < 1)
      throw ValueError("maxtasksperchild must be a positive int or None");
    c.max_tasks = static_cast<std::uint64_t>(*o.maxtasksperchild);
  }
  c.initializer = o.initializer;
  c.start_method = o.start_method ? internal::parse_start_method(*o.start_method)
                                  : internal::default_start_method();
  if (c.start_method != internal::StartMethod::kFork && c.initializer &&
      !c.initializer.target<void (*)()>()) {
    throw ValueError(fmt::format(
        "Pool: with the {} start method the initializer must be a plain function (void(*)()): "
        "a closure cannot reach a worker that is not a fork of this process",
        internal::start_method_name(c.start_method)));
  }
  c.task_buffer = o.task_buffer_bytes;
  c.result_buffer = o.result_buffer_bytes;
  return c;
}

}  // namespace

Pool::Pool() : Pool(PoolOptions{}) {}

Pool::Pool(int processes) : Pool(PoolOptions{.processes = processes}) {}

Pool::Pool(const PoolOptions& options)
    : core_(std::make_shared<internal::pool::PoolCore>(core_options(options))) {}

Pool::Pool(std::shared_ptr<internal::pool::Engine> engine) : core_(std::move(engine)) {}

Pool::~Pool() {
  if (!core_) return;
  try {
    core_->terminate();
    core_->join();
  } catch (...) {
  }
}

void Pool::close() { core_->close(); }
void Pool::terminate() { core_->terminate(); }
void Pool::join() { core_->join(); }
int Pool::processes() const { return core_->processes(); }

void Pool::ensure_running() const {
  if (!core_->running()) throw ValueError("Pool not running");
}

std::string& Pool::scratch() {
  thread_local std::string s;
  return s;
}

void Pool::check_chunksize(int chunksize) {
  if (chunksize < 1) throw ValueError(fmt::format("Chunksize must be 1+, not {}", chunksize));
}

void Pool::check_max_in_flight(std::optional<int> max_in_flight) {
  if (max_in_flight && *max_in_flight < 1) {
    throw ValueError(fmt::format("max_in_flight must be 1+, not {}", *max_in_flight));
  }
}

}  // namespace mp
