#include "mp/internal/thread_names.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string_view>
#include <unordered_map>

#include "mp/internal/demangle.h"

namespace mp::internal {
namespace {

struct Cache {
  std::mutex mu;
  std::unordered_map<const void*, std::optional<std::string>> functions;        // guarded by mu
  std::unordered_map<const std::type_info*, std::optional<std::string>> types;  // guarded by mu
};

Cache& cache() {
  // Leaked on purpose: used by daemon threads during static destruction.
  static Cache* c = [] {
    auto* p = new Cache;
    // Another thread may hold the mutex when the process forks; the child
    // gets a fresh one (the maps are only touched under it, so at worst an
    // entry being inserted is lost).
    pthread_atfork(nullptr, nullptr, [] { new (&cache().mu) std::mutex; });
    return p;
  }();
  return *c;
}

// Removes a trailing balanced group that closes with `close` ("...(int)" or
// "...<int>"), returning the text before it.
std::string_view drop_trailing_group(std::string_view s, char open, char close) {
  if (s.empty() || s.back() != close) return s;
  int depth = 0;
  for (size_t i = s.size(); i-- > 0;) {
    if (s[i] == close) ++depth;
    if (s[i] == open && --depth == 0) return s.substr(0, i);
  }
  return s;
}

// Reduces a demangled function or class name to its unqualified base name:
// "void ns::work<int>(int) const" -> "work".
std::string short_name(std::string_view s) {
  // Drop cv/ref qualifiers after the parameter list, then the list itself.
  for (std::string_view q : {" const", " volatile", " &&", " &"}) {
    while (s.size() > q.size() && s.substr(s.size() - q.size()) == q) s.remove_suffix(q.size());
  }
  s = drop_trailing_group(s, '(', ')');
  s = drop_trailing_group(s, '<', '>');
  // The last component at nesting depth 0 (after "::" or a return type).
  int depth = 0;
  size_t start = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '(' || c == '<' || c == '{') ++depth;
    if (c == ')' || c == '>' || c == '}') --depth;
    if (depth != 0) continue;
    if (c == ':' && i + 1 < s.size() && s[i + 1] == ':') start = i + 2;
    if (c == ' ') start = i + 1;
  }
  return std::string(s.substr(start));
}

std::optional<std::string> name_from_demangled(const std::string& d) {
  if (d.find("{lambda(") != std::string::npos) return "<lambda>";
  std::string s = short_name(d);
  if (s.empty()) return std::nullopt;
  return s;
}

// Looks `offset` up among the STT_FUNC symbols of the ELF file `path`
// (symbol values are file-relative for shared objects and PIEs, absolute for
// fixed-address executables; the caller passes the matching offset).
std::optional<std::string> elf_symtab_lookup(const char* path, uintptr_t value) {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(sizeof(ElfW(Ehdr)))) {
    ::close(fd);
    return std::nullopt;
  }
  size_t size = static_cast<size_t>(st.st_size);
  void* map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return std::nullopt;
  std::optional<std::string> result;
  const auto* base = static_cast<const unsigned char*>(map);
  const auto* eh = reinterpret_cast<const ElfW(Ehdr)*>(base);
  bool ok = std::memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 && eh->e_shoff != 0 &&
            eh->e_shentsize == sizeof(ElfW(Shdr)) &&
            eh->e_shoff + static_cast<size_t>(eh->e_shnum) * sizeof(ElfW(Shdr)) <= size;
  if (ok) {
    const auto* sh = reinterpret_cast<const ElfW(Shdr)*>(base + eh->e_shoff);
    for (unsigned i = 0; i < eh->e_shnum && !result; ++i) {
      if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh->e_shnum) continue;
      const ElfW(Shdr)& strs = sh[sh[i].sh_link];
      if (sh[i].sh_offset + sh[i].sh_size > size || strs.sh_offset + strs.sh_size > size) continue;
      const auto* syms = reinterpret_cast<const ElfW(Sym)*>(base + sh[i].sh_offset);
      size_t n = sh[i].sh_size / sizeof(ElfW(Sym));
      const char* names = reinterpret_cast<const char*>(base + strs.sh_offset);
      for (size_t k = 0; k < n; ++k) {
        if (ELF64_ST_TYPE(syms[k].st_info) != STT_FUNC || syms[k].st_value != value) continue;
        if (syms[k].st_name >= strs.sh_size) continue;
        const char* name = names + syms[k].st_name;
        if (std::memchr(name, '\0', strs.sh_size - syms[k].st_name) == nullptr) continue;
        result = name_from_demangled(demangle(name));
        break;
      }
    }
  }
  munmap(map, size);
  return result;
}

struct ObjectOf {
  uintptr_t address = 0;
  bool found = false;
  bool is_main = false;
  std::string path;
  uintptr_t bias = 0;
};

// Finds the loaded object (the program or a shared library) whose PT_LOAD
// segments hold `address`, with its load bias.
int find_object(dl_phdr_info* info, size_t, void* data) {
  auto* q = static_cast<ObjectOf*>(data);
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_LOAD) continue;
    uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
    if (q->address >= lo && q->address < lo + ph.p_memsz) {
      q->found = true;
      q->bias = info->dlpi_addr;
      q->is_main = info->dlpi_name == nullptr || info->dlpi_name[0] == '\0';
      q->path = q->is_main ? "/proc/self/exe" : info->dlpi_name;
      return 1;
    }
  }
  return 0;
}

std::optional<std::string> lookup_function(const void* address) {
  Dl_info info{};
  if (dladdr(address, &info) != 0 && info.dli_sname && info.dli_saddr == address) {
    return name_from_demangled(demangle(info.dli_sname));
  }
  // Not in the dynamic symbol table (the program was not linked with
  // -rdynamic, or the function has internal linkage): read the .symtab of the
  // file that holds it. Symbol values there are relative to the load bias.
  ObjectOf q;
  q.address = reinterpret_cast<uintptr_t>(address);
  dl_iterate_phdr(find_object, &q);
  if (!q.found) return std::nullopt;
  return elf_symtab_lookup(q.path.c_str(), q.address - q.bias);
}

}  // namespace

std::optional<std::string> function_target_name(const void* address) {
  Cache& c = cache();
  {
    std::lock_guard lock(c.mu);
    auto it = c.functions.find(address);
    if (it != c.functions.end()) return it->second;
  }
  std::optional<std::string> name = lookup_function(address);
  std::lock_guard lock(c.mu);
  c.functions.emplace(address, name);
  return name;
}

std::optional<std::string> type_target_name(const std::type_info& type) {
  Cache& c = cache();
  {
    std::lock_guard lock(c.mu);
    auto it = c.types.find(&type);
    if (it != c.types.end()) return it->second;
  }
  std::string d = demangle(type.name());
  std::optional<std::string> name;
  if (d.rfind("std::", 0) != 0) name = name_from_demangled(d);
  std::lock_guard lock(c.mu);
  c.types.emplace(&type, name);
  return name;
}

std::string class_display_name(const std::type_info& type) {
  return short_name(demangle(type.name()));
}

}  // namespace mp::internal
