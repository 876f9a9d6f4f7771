#include "mp/internal/modules.h"

#include <elf.h>
#include <fmt/format.h>
#include <link.h>

#include <mutex>
#include <utility>

#include "mp/codec.h"
#include "mp/errors.h"

namespace mp::internal {

namespace {

std::string read_build_id(const dl_phdr_info* info) {
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_NOTE) continue;
    auto p = reinterpret_cast<const char*>(info->dlpi_addr + ph.p_vaddr);
    const char* end = p + ph.p_memsz;
    while (p + sizeof(ElfW(Nhdr)) <= end) {
      auto* n = reinterpret_cast<const ElfW(Nhdr)*>(p);
      const char* name = p + sizeof(ElfW(Nhdr));
      const char* desc = name + ((n->n_namesz + 3) & ~3u);
      const char* next = desc + ((n->n_descsz + 3) & ~3u);
      if (next > end) break;
      if (n->n_type == NT_GNU_BUILD_ID && n->n_namesz == 4 && std::string_view(name, 3) == "GNU") {
        return std::string(desc, n->n_descsz);
      }
      p = next;
    }
  }
  return {};
}

int collect(dl_phdr_info* info, size_t, void* data) {
  auto* out = static_cast<std::vector<Module>*>(data);
  Module m;
  m.path = info->dlpi_name ? info->dlpi_name : "";
  m.base = info->dlpi_addr;
  m.lo = ~std::uintptr_t{0};
  m.hi = 0;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_LOAD) continue;
    std::uintptr_t a = info->dlpi_addr + ph.p_vaddr;
    m.lo = std::min(m.lo, a);
    m.hi = std::max(m.hi, a + ph.p_memsz);
  }
  if (m.hi == 0) return 0;
  // The first entry is the main executable (its name is ""); the vDSO has
  // a name of its own and no functions a task could name.
  if (!out->empty() && m.path.empty()) return 0;
  m.build_id = read_build_id(info);
  out->push_back(std::move(m));
  return 0;
}

std::string describe(const Module& m) { return m.path.empty() ? "the executable" : m.path; }

const Module* find_by_addr(const std::vector<Module>& ms, std::uintptr_t a) {
  for (const Module& m : ms) {
    if (a >= m.lo && a < m.hi) return &m;
  }
  return nullptr;
}

const Module* find_by_path(const std::vector<Module>& ms, const std::string& path) {
  for (const Module& m : ms) {
    if (m.path == path) return &m;
  }
  return nullptr;
}

Relocator& relocator_slot() {
  static Relocator* r = new Relocator();  // leaked: read by tasks until _exit
  return *r;
}

}  // namespace

std::vector<Module> loaded_modules() {
  std::vector<Module> out;
  dl_iterate_phdr(collect, &out);
  return out;
}

const std::string& module_map() {
  static std::mutex mu;
  static std::string* cached = new std::string;
  static unsigned long long adds = 0, subs = 0;
  struct Counts {
    unsigned long long adds = 0, subs = 0;
  } now;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t size, void* data) {
        auto* c = static_cast<Counts*>(data);
        if (size >= offsetof(dl_phdr_info, dlpi_subs) + sizeof(info->dlpi_subs)) {
          c->adds = info->dlpi_adds;
          c->subs = info->dlpi_subs;
        }
        return 1;
      },
      &now);
  std::lock_guard lock(mu);
  if (cached->empty() || now.adds != adds || now.subs != subs) {
    cached->clear();
    encode_into(*cached, loaded_modules());
    adds = now.adds;
    subs = now.subs;
  }
  return *cached;
}

Relocator::Relocator(std::string_view parent_map)
    : identity_(false), parent_(decode<std::vector<Module>>(parent_map)), self_(loaded_modules()) {
  if (parent_.empty() || self_.empty())
    throw ProcessError("mp: empty module map at a child's start");
  const Module& pe = parent_.front();
  const Module& se = self_.front();
  if (pe.build_id != se.build_id) {
    throw ProcessError(fmt::format(
        "mp: this child runs a different executable than its parent (build id {} here, {} in the "
        "parent): was the program rebuilt or replaced while it ran?",
        hex(se.build_id), hex(pe.build_id)));
  }
  if (pe.base == se.base) {
    // Same layout (ASLR off): still checked per object in translate().
  }
}

std::uintptr_t Relocator::translate(std::uintptr_t addr) const {
  if (identity_) return addr;
  const Module* p = find_by_addr(parent_, addr);
  if (!p) {
    throw ProcessError(fmt::format(
        "mp: the task's function (address {:#x} in the parent) lies in no loaded object of the "
        "parent: only functions of the executable or of its shared libraries can be named "
        "across a spawn or forkserver start",
        addr));
  }
  const Module* s = p == &parent_.front() ? &self_.front() : find_by_path(self_, p->path);
  if (!s) {
    throw ProcessError(fmt::format(
        "mp: the task's function lies in {}, which the parent loaded (dlopen) but this child "
        "has not: load it before mp::freeze_support() runs, or start the child with fork",
        describe(*p)));
  }
  if (s->build_id != p->build_id) {
    throw ProcessError(fmt::format(
        "mp: the task's function lies in {}, whose build id differs between the parent ({}) and "
        "this child ({}): the file was replaced on disk after the parent loaded it",
        describe(*p), hex(p->build_id), hex(s->build_id)));
  }
  return addr - p->base + s->base;
}

const Relocator& current_relocator() noexcept { return relocator_slot(); }

void use_parent_map(std::string_view parent_map) {
  static std::string* current = new std::string;
  if (!relocator_slot().identity() && *current == parent_map) return;
  relocator_slot() = Relocator(parent_map);
  current->assign(parent_map);
}

std::string hex(std::string_view bytes) {
  if (bytes.empty()) return "(none)";
  std::string out;
  for (unsigned char c : bytes) out += fmt::format("{:02x}", c);
  return out;
}

}  // namespace mp::internal
