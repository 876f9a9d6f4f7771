#include "mp/shared.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <random>
#include <system_error>
#include <utility>

#include "mp/internal/sync_mutex.h"

namespace mp {
namespace {

// os_name is the name shm_open wants: one leading '/'.
std::string os_name(const std::string& name) { return "/" + name; }

std::string strip_slash(const std::string& name) {
  return name.starts_with('/') ? name.substr(1) : name;
}

// unique_name is "mp_<pid>_<counter>_<random>" (CPython uses "psm_<random>").
std::string unique_name() {
  static std::atomic<unsigned> counter{0};
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("mp_{}_{}_{:08x}", internal::self_pid(),
                     counter.fetch_add(1, std::memory_order_relaxed), static_cast<uint32_t>(rng()));
}

[[noreturn]] void throw_errno(int err, const std::string& name, const char* what) {
  if (err == ENOENT) {
    throw FileNotFoundError(fmt::format("[Errno 2] No such file or directory: '/{}'", name));
  }
  if (err == EEXIST) {
    throw FileExistsError(fmt::format("[Errno 17] File exists: '/{}'", name));
  }
  throw std::system_error(err, std::generic_category(), fmt::format("{} '/{}'", what, name));
}

}  // namespace

SharedMemory::SharedMemory(std::optional<std::string> name, bool create, std::ptrdiff_t size) {
  if (create && size <= 0) {
    throw ValueError("'size' must be a positive number different from zero");
  }
  if (!create && !name) throw ValueError("'name' can only be None if create=True");
  if (name) {
    name_ = strip_slash(*name);
    // One ValueError for every name /dev/shm cannot hold as one file.
    const char* why = nullptr;
    if (name_.empty())
      why = "it is empty";
    else if (name_.find('/') != std::string::npos)
      why = "it contains '/'";
    else if (name_.find('\0') != std::string::npos)
      why = "it contains a NUL character";
    else if (name_ == "." || name_ == "..")
      why = "'.' and '..' name directories";
    else if (name_.size() > 255)
      why = "it is longer than 255 bytes";
    if (why) {
      std::string shown = name_;
      for (char& c : shown) {
        if (c == '\0') c = '?';
      }
      if (shown.size() > 64) shown = shown.substr(0, 61) + "...";
      throw ValueError(fmt::format("invalid shared memory name '{}': {}", shown, why));
    }
  }

  int fd = -1;
  if (create) {
    for (;;) {
      if (!name) name_ = unique_name();
      fd = shm_open(os_name(name_).c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      if (fd >= 0) break;
      if (errno == EEXIST && !name) continue;  // generated name taken: retry
      throw_errno(errno, name_, "shm_open");
    }
    if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
      int err = errno;
      ::close(fd);
      shm_unlink(os_name(name_).c_str());
      throw_errno(err, name_, "ftruncate");
    }
    // Reserve the pages: on a /dev/shm without room, create() fails with
    // ENOSPC here instead of the first write dying of SIGBUS.
    if (int err = posix_fallocate(fd, 0, static_cast<off_t>(size)); err != 0) {
      ::close(fd);
      shm_unlink(os_name(name_).c_str());
      throw_errno(err, name_, "reserve space for shared memory (posix_fallocate)");
    }
    size_ = static_cast<std::size_t>(size);
  } else {
    fd = shm_open(os_name(name_).c_str(), O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) throw_errno(errno, name_, "shm_open");
    struct stat st {};
    if (fstat(fd, &st) != 0) {
      int err = errno;
      ::close(fd);
      throw_errno(err, name_, "fstat");
    }
    if (st.st_size <= 0) {
      ::close(fd);
      throw ValueError(fmt::format("cannot attach to empty shared memory '{}'", name_));
    }
    size_ = static_cast<std::size_t>(st.st_size);
  }

  void* p = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int err = errno;
  ::close(fd);  // the mapping keeps the segment; no fd is held
  if (p == MAP_FAILED) {
    if (create) shm_unlink(os_name(name_).c_str());
    throw_errno(err, name_, "mmap");
  }
  data_ = static_cast<std::byte*>(p);
  owner_pid_ = internal::self_pid();
  unlink_on_destroy_ = create;
}

SharedMemory::~SharedMemory() { destroy(); }

void SharedMemory::destroy() noexcept {
  close();
  if (unlink_on_destroy_ && !unlinked_ && !name_.empty() && owner_pid_ == internal::self_pid()) {
    shm_unlink(os_name(name_).c_str());
    unlinked_ = true;
  }
}

SharedMemory::SharedMemory(SharedMemory&& other) noexcept
    : name_(std::move(other.name_)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      owner_pid_(other.owner_pid_),
      unlink_on_destroy_(std::exchange(other.unlink_on_destroy_, false)),
      unlinked_(other.unlinked_) {
  other.name_.clear();
}

SharedMemory& SharedMemory::operator=(SharedMemory&& other) noexcept {
  if (this != &other) {
    destroy();
    name_ = std::move(other.name_);
    other.name_.clear();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    owner_pid_ = other.owner_pid_;
    unlink_on_destroy_ = std::exchange(other.unlink_on_destroy_, false);
    unlinked_ = other.unlinked_;
  }
  return *this;
}

std::span<std::byte> SharedMemory::buf() const {
  if (!data_) throw ValueError("operation on a closed SharedMemory");
  return {data_, size_};
}

void SharedMemory::close() noexcept {
  if (data_) {
    munmap(data_, size_);
    data_ = nullptr;
  }
}

void SharedMemory::unlink() {
  if (name_.empty()) throw ValueError("operation on a moved-from SharedMemory");
  if (shm_unlink(os_name(name_).c_str()) != 0) throw_errno(errno, name_, "shm_unlink");
  unlinked_ = true;
}

}  // namespace mp
