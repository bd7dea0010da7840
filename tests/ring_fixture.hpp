// tests/ring_fixture.hpp: a ring in real shared memory for tests.
//
// Creates a real POSIX shared-memory segment (unlinked at once: the mapping
// and fd stay), formats a doorbell and one ring in it.  Used by unit tests
// (one process) and multi-process tests (fork: the child inherits the map).
#pragma once

#include <unistd.h>

#include <atomic>
#include <string>

#include "ipc/doorbell.hpp"
#include "ipc/ring.hpp"
#include "ipc/segment.hpp"

namespace bulkhead::testing {

inline std::string unique_label(const char* what) {
  static std::atomic<int> n{0};
  return std::string(what) + "." + std::to_string(::getpid()) + "." + std::to_string(n++);
}

struct RingFixture {
  // Layout inside the segment payload: [DoorbellWord pad to 64][RingControl + data]
  static constexpr std::size_t kDoorbellBytes = 64;

  explicit RingFixture(std::size_t capacity, const char* label = "test",
                       std::size_t extra_bytes = 0)
      : seg(ipc::Segment::create(ipc::segment_name(ipc::Instance::self(), unique_label(label)),
                                 kDoorbellBytes + ipc::ring_footprint(capacity) + extra_bytes)) {
    seg.unlink();  // mapping stays; nothing left in /dev/shm if the test dies
    doorbell_word = new (seg.payload().data()) ipc::DoorbellWord{};
    ipc::init_ring(ring_mem(), capacity);
  }

  std::span<std::byte> ring_mem() const {
    return seg.payload().subspan(kDoorbellBytes, seg.payload().size() - kDoorbellBytes);
  }
  ipc::RingControl* control() const {
    return reinterpret_cast<ipc::RingControl*>(ring_mem().data());
  }
  std::byte* data() const { return ring_mem().data() + sizeof(ipc::RingControl); }
  // Bytes after the ring, free for test bookkeeping shared across fork().
  std::byte* extra(std::size_t capacity) const {
    return ring_mem().data() + ipc::ring_footprint(capacity);
  }

  ipc::Segment seg;
  ipc::DoorbellWord* doorbell_word = nullptr;
};

}  // namespace bulkhead::testing
