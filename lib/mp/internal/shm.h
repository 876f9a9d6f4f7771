// mp/internal/shm.h — RAII owners of shared memory mappings.
//
// Internal. SharedRegion is a MAP_SHARED mapping of a memfd (memfd_create):
// it has no name in any file system, so it can never leak a /dev/shm entry,
// and the pages live exactly as long as some process maps them or holds the
// fd. Processes forked after its creation share it through the inherited
// mapping; a child of another start method (spawn, forkserver) gets the fd
// over its start channel (SCM_RIGHTS) and maps it again (attach()). This is
// what Queue, Lock, Value, ... live in. Named segments, attachable from
// unrelated processes, are mp::SharedMemory (mp/shared.h).
//
// Each region holds one close-on-exec fd for its lifetime in each process
// that maps it.
#pragma once

#include <cstddef>
#include <string>

namespace mp::internal {

// SharedRegion owns an anonymous MAP_SHARED mapping of `size` bytes, zero
// filled and pre-faulted (first-touch faults cost ~11 us each here).
// Move-only; the mapping is unmapped by the destructor of the last owner in
// each process (each forked process holds its own mapping of the same pages).
class SharedRegion {
 public:
  SharedRegion() = default;
  explicit SharedRegion(std::size_t size, bool prefault = true);

  // attach(fd) maps the whole memfd `fd` (its size from fstat) and takes
  // ownership of the fd. Throws std::system_error on failure (closing fd).
  static SharedRegion attach(int fd);
  ~SharedRegion();
  SharedRegion(SharedRegion&& other) noexcept;
  SharedRegion& operator=(SharedRegion&& other) noexcept;
  SharedRegion(const SharedRegion&) = delete;
  SharedRegion& operator=(const SharedRegion&) = delete;

  void* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  explicit operator bool() const noexcept { return data_ != nullptr; }
  // fd() is the memfd behind the mapping (what travels to a spawned child).
  int fd() const noexcept { return fd_; }

  // as<T>() views the start of the region as a T (placement-constructed by
  // the owner).
  template <class T>
  T* as() const noexcept {
    return static_cast<T*>(data_);
  }

 private:
  void release() noexcept;

  void* data_ = nullptr;
  std::size_t size_ = 0;
  int fd_ = -1;
};

// page_size is the system page size, cached.
std::size_t page_size() noexcept;

// round_up_to_pages rounds n up to a multiple of the page size.
std::size_t round_up_to_pages(std::size_t n) noexcept;

}  // namespace mp::internal
