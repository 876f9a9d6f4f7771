// mp/internal/modules.h — code addresses that survive exec: a function
// pointer of the parent, translated into the same function of a child that
// is a new image of the same program (the spawn and forkserver start
// methods).
//
// Internal. The parent sends its module map (each loaded ELF object: its
// path, load base, address range and GNU build id) with every child start;
// the child builds a Relocator from it, which maps a parent address to
// child_base + (address - parent_base) of the same object, found by path and
// checked by build id. So no registration of functions is needed, and a
// task can be any function of the executable or of a shared library that
// both processes loaded.
//
// Errors are mp::ProcessError with a message that names the object and the
// address: an address in no loaded object (not a function), an object the
// child has not loaded (dlopen()ed by the parent after... or never), an
// object whose build id differs (replaced on disk between the two loads).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "mp/codec.h"

namespace mp::internal {

struct Module {
  std::string path;      // "" for the main executable
  std::uintptr_t base;   // load bias (dlpi_addr)
  std::uintptr_t lo;     // lowest loaded address
  std::uintptr_t hi;     // one past the highest
  std::string build_id;  // raw bytes of NT_GNU_BUILD_ID; empty if none
};

// loaded_modules() lists this process's loaded ELF objects (dl_iterate_phdr).
std::vector<Module> loaded_modules();

// module_map() is loaded_modules() encoded with mp/codec.h, cached until an
// object is loaded or unloaded.
const std::string& module_map();

// Relocator translates parent addresses into this process's.
class Relocator {
 public:
  // Identity (a fork: same image, same addresses).
  Relocator() = default;
  // From the parent's module_map(). Throws mp::ProcessError when the main
  // executables' build ids differ.
  explicit Relocator(std::string_view parent_map);

  // translate(addr) is the child's address of the parent's `addr`.
  std::uintptr_t translate(std::uintptr_t addr) const;

  bool identity() const noexcept { return identity_; }

 private:
  bool identity_ = true;
  std::vector<Module> parent_;
  std::vector<Module> self_;
};

// The relocator of this process: identity unless this process was started by
// spawn or forkserver (then set once by its bootstrap, before any task).
const Relocator& current_relocator() noexcept;
// use_parent_map makes current_relocator() translate from the parent whose
// module_map() is `parent_map`; a no-op when it already does (the forkserver
// builds it once, before forking, and its children inherit it).
void use_parent_map(std::string_view parent_map);

// relocate(fn) is fn translated by current_relocator().
template <class Fn>
Fn relocate(Fn fn) {
  const Relocator& r = current_relocator();
  if (r.identity()) return fn;
  return reinterpret_cast<Fn>(r.translate(reinterpret_cast<std::uintptr_t>(fn)));
}

// hex(bytes) spells a build id.
std::string hex(std::string_view bytes);

}  // namespace mp::internal

template <>
struct mp::codec_traits<mp::internal::Module> {
  static void encode(mp::Encoder& e, const mp::internal::Module& m) {
    e.write(m.path);
    e.write(std::uint64_t{m.base});
    e.write(std::uint64_t{m.lo});
    e.write(std::uint64_t{m.hi});
    e.write(m.build_id);
  }
  static mp::internal::Module decode(mp::Decoder& d) {
    mp::internal::Module m;
    m.path = d.read<std::string>();
    m.base = static_cast<std::uintptr_t>(d.read<std::uint64_t>());
    m.lo = static_cast<std::uintptr_t>(d.read<std::uint64_t>());
    m.hi = static_cast<std::uintptr_t>(d.read<std::uint64_t>());
    m.build_id = d.read<std::string>();
    return m;
  }
};
