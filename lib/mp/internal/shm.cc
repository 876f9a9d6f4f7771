#include "mp/internal/shm.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
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

namespace {
[[noreturn]] void fail(int fd, const char* what) {
  int err = errno;
  if (fd >= 0) ::close(fd);
  throw std::system_error(err, std::generic_category(), what);
}
}  // namespace

SharedRegion::SharedRegion(std::size_t size, bool prefault) {
  const std::size_t bytes = round_up_to_pages(size == 0 ? 1 : size);
  int fd = ::memfd_create("mp", MFD_CLOEXEC);
  if (fd < 0) fail(-1, "memfd_create for a shared region");
  // fallocate reserves the pages now: a region that cannot be backed fails
  // here with ENOSPC or ENOMEM, not later with a SIGBUS at its first write
  // (ftruncate alone reserves nothing).
  int rc;
  do {
    rc = ::fallocate(fd, 0, 0, static_cast<off_t>(bytes));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) fail(fd, "reserve memory for a shared region (fallocate)");
  int flags = MAP_SHARED;
  if (prefault) flags |= MAP_POPULATE;
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, flags, fd, 0);
  if (p == MAP_FAILED) fail(fd, "mmap shared region");
  data_ = p;
  size_ = bytes;
  fd_ = fd;
}

SharedRegion SharedRegion::attach(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail(fd, "fstat a shared region passed to this process");
  if (st.st_size <= 0 || !S_ISREG(st.st_mode)) {
    errno = EINVAL;
    fail(fd, "attach a shared region: the fd passed is not a memfd with contents");
  }
  const auto bytes = static_cast<std::size_t>(st.st_size);
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (p == MAP_FAILED) fail(fd, "mmap a shared region passed to this process");
  SharedRegion r;
  r.data_ = p;
  r.size_ = bytes;
  r.fd_ = fd;
  return r;
}

void SharedRegion::release() noexcept {
  if (data_) munmap(data_, size_);
  if (fd_ >= 0) ::close(fd_);
  data_ = nullptr;
  size_ = 0;
  fd_ = -1;
}

SharedRegion::~SharedRegion() { release(); }

SharedRegion::SharedRegion(SharedRegion&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      fd_(std::exchange(other.fd_, -1)) {}

SharedRegion& SharedRegion::operator=(SharedRegion&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

}  // namespace mp::internal
