// mp/internal/travel.h — how an object that owns OS resources (a shared
// region, a socket) travels to a child of the spawn or forkserver start
// method: its bytes go through mp/codec.h as usual, and its file
// descriptors ride beside them (SCM_RIGHTS over the child's start channel).
//
// Internal. The start machinery (internal/start.cc) opens a TravelScope
// around encoding a child's task and another around decoding it in the
// child. Inside, write_fd() appends an fd to the scope's table and encodes
// its index; read_fd() gives the decoding side its own duplicate of that
// fd. Outside a scope (a Lock put into a Queue, sent through a Pipe, or
// returned from a Pool task) write_fd() raises mp::ValueError: such objects
// travel only as arguments of a child's start (CPython: "Lock objects
// should only be shared between processes through inheritance").
#pragma once

#include <cstddef>
#include <memory>
#include <string_view>
#include <vector>

#include "mp/codec.h"
#include "mp/internal/shm.h"

namespace mp::internal {

// TravelScope makes `fds` the table of the calling thread's encodes (the
// fds are borrowed: the objects must outlive the send) or decodes (the fds
// are owned by the caller, who closes them afterwards) until it ends.
class TravelScope {
 public:
  explicit TravelScope(std::vector<int>& fds) noexcept;
  ~TravelScope();
  TravelScope(const TravelScope&) = delete;
  TravelScope& operator=(const TravelScope&) = delete;

 private:
  std::vector<int>* previous_;
};

// write_fd encodes `fd` (see the top). `what` names the object for the
// error raised outside a TravelScope ("mp::Lock").
void write_fd(Encoder& e, int fd, std::string_view what);

// read_fd decodes an fd written by write_fd and returns a new fd (a dup,
// close-on-exec) that the caller owns. Raises mp::CodecError on an index
// outside the table, or outside a TravelScope.
int read_fd(Decoder& d);

// write_region / read_region: a SharedRegion as its memfd. read_region
// checks that the region is at least `min_size` bytes.
void write_region(Encoder& e, const SharedRegion& r, std::string_view what);
SharedRegion read_region(Decoder& d, std::size_t min_size);
std::shared_ptr<SharedRegion> read_shared_region(Decoder& d, std::size_t min_size);

}  // namespace mp::internal
