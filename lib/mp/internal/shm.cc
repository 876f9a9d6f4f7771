#include "mp/internal/shm.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>
#include <utility>

namespace mp::internal {

std::size_t page_size() noexcept {
  static const std::size_t size = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  return size;
}

std::size_t round_up_to_pages(std::size_t n) noexcept {
  const std::size_t p = page_size();
  return (n + p - 1) / p * p;
}

SharedRegion::SharedRegion(std::size_t size, bool prefault) {
  size_ = round_up_to_pages(size == 0 ? 1 : size);
  int flags = MAP_SHARED | MAP_ANONYMOUS;
  if (prefault) flags |= MAP_POPULATE;
  void* p = mmap(nullptr, size_, PROT_READ | PROT_WRITE, flags, -1, 0);
  if (p == MAP_FAILED) {
    size_ = 0;
    throw std::system_error(errno, std::generic_category(), "mmap shared region");
  }
  data_ = p;
}

SharedRegion::~SharedRegion() {
  if (data_) munmap(data_, size_);
}

SharedRegion::SharedRegion(SharedRegion&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

SharedRegion& SharedRegion::operator=(SharedRegion&& other) noexcept {
  if (this != &other) {
    if (data_) munmap(data_, size_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

}  // namespace mp::internal
