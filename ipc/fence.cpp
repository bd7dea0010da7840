#include "ipc/fence.hpp"

#include <linux/membarrier.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>

namespace bulkhead::ipc {

namespace detail {
bool g_light_fences = false;
}  // namespace detail

namespace {

bool g_kernel_has_global_expedited = false;

long membarrier(int cmd) noexcept {
  return ::syscall(SYS_membarrier, cmd, 0, 0);
}

bool g_disabled = false;  // BULKHEAD_FULL_FENCES=1: always full fences (A/B runs, seccomp)

void register_process() noexcept {
  detail::g_light_fences = !g_disabled && g_kernel_has_global_expedited &&
                           membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0;
}

// Runs at start-up in every program that links this file (ring.cpp and
// doorbell users call heavy_fence, so it always is).  Single-threaded then.
const bool g_initialised = [] {
  const char* off = std::getenv("BULKHEAD_FULL_FENCES");
  g_disabled = off != nullptr && *off != '\0' && *off != '0';
  long cmds = membarrier(MEMBARRIER_CMD_QUERY);
  g_kernel_has_global_expedited = cmds > 0 && (cmds & MEMBARRIER_CMD_GLOBAL_EXPEDITED) != 0 &&
                                  (cmds & MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) != 0;
  register_process();
  // fork() gives the child a new mm without the registration: register it
  // again before it can publish anything.
  ::pthread_atfork(nullptr, nullptr, register_process);
  return true;
}();

}  // namespace

void heavy_fence() noexcept {
  if (g_kernel_has_global_expedited) (void)membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED);
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

bool light_fences_enabled() noexcept {
  (void)g_initialised;
  return detail::g_light_fences;
}

}  // namespace bulkhead::ipc
