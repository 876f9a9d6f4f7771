#include "mp/queue.h"

#include <fmt/format.h>

namespace mp::queue_detail {
namespace {

// Scratch buffers above this capacity are released after use, so a thread
// that once moved a 64 MiB item does not keep 64 MiB forever.
constexpr std::size_t kKeepBytes = std::size_t{4} << 20;

}  // namespace

std::string& encode_buffer() {
  thread_local std::string buf;
  return buf;
}

std::string& decode_buffer() {
  thread_local std::string buf;
  return buf;
}

void trim_buffer(std::string& b) noexcept {
  if (b.capacity() > kKeepBytes) std::string().swap(b);
}

void throw_closed() { throw ValueError("Queue is closed"); }
void throw_empty() { throw Empty("queue is empty"); }
void throw_full() { throw Full("queue is full"); }
void throw_eof() {
  throw EOFError("queue is empty and every process that put to it has exited or closed it");
}

void throw_no_consumers() {
  throw BrokenPipeError(
      "queue is full and every process that got from it has exited or closed it: "
      "nothing was put");
}
void throw_join_no_consumers(std::uint32_t unfinished) {
  throw BrokenPipeError(
      fmt::format("JoinableQueue.join(): {} task(s) unfinished and every process that got from the "
                  "queue has exited or closed it",
                  unfinished));
}

void throw_bad_length(std::uint64_t encoded, std::size_t received) {
  throw CodecError(fmt::format(
      "mp codec: corrupt input: string length {} but {} bytes received (decoding std::string)",
      encoded, received));
}

}  // namespace mp::queue_detail
