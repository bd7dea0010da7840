// bench/shm_arena.hpp: one shared-memory segment per figure, carved up.
//
// The benchmark creates a real Bulkhead segment (ipc::Segment, mode 0600,
// named after this process instance) before forking, and unlinks it at once:
// the mapping survives fork() and stays valid in both processes, and nothing
// is left in /dev/shm even if the benchmark is killed.  Pieces are handed out
// in creation order, each 64-byte aligned (its own cache lines): doorbell
// words, formatted rings, and plain shared structs for bookkeeping (start
// flags, results reported by the child).
#pragma once

#include <cstddef>
#include <new>
#include <span>
#include <string>
#include <type_traits>

#include "ipc/doorbell.hpp"
#include "ipc/ring.hpp"
#include "ipc/segment.hpp"

namespace bulkhead::bench {

class ShmArena {
 public:
  // A segment with `bytes` usable bytes (add 64 per piece for alignment).
  explicit ShmArena(std::size_t bytes);

  // A value-initialized T in shared memory (T must be trivially destructible:
  // nobody runs destructors on shared memory).
  template <class T>
  T* make() {
    static_assert(std::is_trivially_destructible_v<T>);
    static_assert(alignof(T) <= ipc::kCacheLine);
    return new (take(sizeof(T))) T{};
  }
  // A formatted ring of `capacity` data bytes.
  std::span<std::byte> ring(std::size_t capacity);
  // A zeroed doorbell word.
  ipc::DoorbellWord* doorbell() { return make<ipc::DoorbellWord>(); }

 private:
  void* take(std::size_t bytes);

  ipc::Segment seg_;
  std::size_t used_ = 0;
};

}  // namespace bulkhead::bench
