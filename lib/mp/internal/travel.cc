#include "mp/internal/travel.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <system_error>

#include "mp/errors.h"

namespace mp::internal {

namespace {
thread_local std::vector<int>* t_fds = nullptr;
}  // namespace

TravelScope::TravelScope(std::vector<int>& fds) noexcept : previous_(t_fds) { t_fds = &fds; }
TravelScope::~TravelScope() { t_fds = previous_; }

void write_fd(Encoder& e, int fd, std::string_view what) {
  if (!t_fds) {
    throw ValueError(fmt::format(
        "{} can travel to another process only as an argument of a Process (or a Pool's "
        "initializer) being started, not through a Queue, a Pipe or a Pool task: it owns "
        "shared memory or a socket that only a start hands over",
        what));
  }
  if (fd < 0) throw ValueError(fmt::format("{} is closed or moved from: it cannot travel", what));
  t_fds->push_back(fd);
  e.write(static_cast<std::uint32_t>(t_fds->size() - 1));
}

int read_fd(Decoder& d) {
  auto index = d.read<std::uint32_t>();
  if (!t_fds)
    throw CodecError("mp codec: a file descriptor can only be decoded at a child's start");
  if (index >= t_fds->size()) {
    throw CodecError(
        fmt::format("mp codec: fd index {} outside the {} fds received", index, t_fds->size()));
  }
  int fd = ::fcntl((*t_fds)[index], F_DUPFD_CLOEXEC, 0);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "dup a received fd");
  return fd;
}

void write_region(Encoder& e, const SharedRegion& r, std::string_view what) {
  write_fd(e, r.fd(), what);
}

SharedRegion read_region(Decoder& d, std::size_t min_size) {
  SharedRegion r = SharedRegion::attach(read_fd(d));
  if (r.size() < min_size) {
    throw CodecError(fmt::format("mp codec: a shared region of {} bytes where {} are needed",
                                 r.size(), min_size));
  }
  return r;
}

std::shared_ptr<SharedRegion> read_shared_region(Decoder& d, std::size_t min_size) {
  return std::make_shared<SharedRegion>(read_region(d, min_size));
}

}  // namespace mp::internal
