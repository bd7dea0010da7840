// ipc/fence.hpp: asymmetric store-load fences for the wake-up handshakes.
//
// What it is for: the doorbell and the ring's wait-for-space flag are
// store-buffer (Dekker) handshakes.  A publisher stores its index, then
// loads the peer's "I am going to sleep" flag; a sleeper stores its flag,
// then re-loads the index.  Each side needs a store-load fence between its
// store and its load, or both may miss the other and the sleeper sleeps
// through a message.  On x86 that fence is an mfence (or a locked
// instruction), and after a store to a line the peer is polling it waits
// for the whole cross-core invalidation: measured here, a fence per message
// cut one-way ring throughput to about a third.
//
// The publisher runs once per message, the sleeper once per sleep (after
// tens of microseconds of polling).  So the cost goes where it is cheap:
// publishers issue `light_fence()` (a compiler barrier only), sleepers issue
// `heavy_fence()`, which is membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED): the
// kernel runs a full barrier on every CPU currently running a thread of a
// process registered for it (a thread not running passed through the
// scheduler, itself a full barrier).  Either the publisher's store is then
// visible to the sleeper's re-check, or the publisher's later load sees the
// flag.  Same argument as folly's asymmetricLightBarrier/HeavyBarrier and
// liburcu's.
//
// Availability: every process linking ipc/ registers at start-up (and again
// in the child after fork, which resets the registration).  If the kernel
// lacks the command or refuses (seccomp, old kernel), `light_fence()` falls
// back to a full fence in that process, and `heavy_fence()` adds a full
// fence in any case: a process that could not register is then correct as a
// publisher.  Mixed peers are correct too, as long as every sleeper's kernel
// call works whenever some publisher went light, which holds on one machine
// (one kernel) unless a sleeper is itself denied the syscall: documented in
// README "Shared memory", not worked around.  BULKHEAD_FULL_FENCES=1 in the
// environment turns light fences off (full fences everywhere), for A/B
// measurements and for processes that must not use membarrier.
#pragma once

#include <atomic>

namespace bulkhead::ipc {

namespace detail {
// True once this process is registered for global expedited membarriers.
extern bool g_light_fences;
}  // namespace detail

// The publisher's side: between the index store and the load of the
// peer's sleep flag.
inline void light_fence() noexcept {
  if (detail::g_light_fences) {
    std::atomic_signal_fence(std::memory_order_seq_cst);  // compiler barrier
  } else {
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
}

// The sleeper's side: between storing its sleep flag and re-checking.
void heavy_fence() noexcept;

// True if light fences are in use in this process (for tests and the bench).
bool light_fences_enabled() noexcept;

}  // namespace bulkhead::ipc
