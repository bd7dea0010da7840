// bench/shm_arena.cpp: see shm_arena.hpp.
#include "bench/shm_arena.hpp"

#include <atomic>
#include <stdexcept>

namespace bulkhead::bench {
namespace {

std::string next_label() {
  static std::atomic<int> n{0};
  return "bench." + std::to_string(n++);
}

}  // namespace

ShmArena::ShmArena(std::size_t bytes)
    : seg_(ipc::Segment::create(ipc::segment_name(ipc::Instance::self(), next_label()), bytes)) {
  seg_.unlink();  // the mapping stays; /dev/shm is clean from here on
}

void* ShmArena::take(std::size_t bytes) {
  auto area = seg_.payload();
  const auto base = reinterpret_cast<std::uintptr_t>(area.data());
  std::size_t at = used_;
  at = ((base + at + ipc::kCacheLine - 1) & ~(ipc::kCacheLine - 1)) - base;
  if (at + bytes > area.size()) throw std::length_error("bench shared-memory arena is too small");
  used_ = at + bytes;
  return area.data() + at;
}

std::span<std::byte> ShmArena::ring(std::size_t capacity) {
  const std::size_t bytes = ipc::ring_footprint(capacity);
  std::span<std::byte> mem{static_cast<std::byte*>(take(bytes)), bytes};
  ipc::init_ring(mem, capacity);
  return mem;
}

}  // namespace bulkhead::bench
