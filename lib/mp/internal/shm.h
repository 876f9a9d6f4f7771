// mp/internal/shm.h — RAII owners of shared memory mappings.
//
// Internal. SharedRegion is an anonymous MAP_SHARED mapping. It has no name,
// so it can never leak a /dev/shm entry; processes forked after its creation
// share it. This is what Queue, Lock, Value, ... live in. Named segments,
// attachable from unrelated processes, are mp::SharedMemory (mp/shared.h).
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
  ~SharedRegion();
  SharedRegion(SharedRegion&& other) noexcept;
  SharedRegion& operator=(SharedRegion&& other) noexcept;
  SharedRegion(const SharedRegion&) = delete;
  SharedRegion& operator=(const SharedRegion&) = delete;

  void* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  explicit operator bool() const noexcept { return data_ != nullptr; }

  // as<T>() views the start of the region as a T (placement-constructed by
  // the owner).
  template <class T>
  T* as() const noexcept { return static_cast<T*>(data_); }

 private:
  void* data_ = nullptr;
  std::size_t size_ = 0;
};

// page_size is the system page size, cached.
std::size_t page_size() noexcept;

// round_up_to_pages rounds n up to a multiple of the page size.
std::size_t round_up_to_pages(std::size_t n) noexcept;

}  // namespace mp::internal
