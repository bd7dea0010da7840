// bench/timing.hpp: the clocks every figure uses.
//
// Wall time is std::chrono::steady_clock (CLOCK_MONOTONIC, one clock for all
// processes of the machine, so a child's timestamps compare with ours); CPU
// time is CLOCK_PROCESS_CPUTIME_ID.  `busy_wait` spins on the clock, for
// gaps that must not put the calling CPU to sleep.
#pragma once

#include <time.h>

#include <chrono>
#include <cstdint>

#include "ipc/sys.hpp"

namespace bulkhead::bench {

using Clock = std::chrono::steady_clock;
using std::chrono::nanoseconds;

inline std::int64_t ns_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration_cast<nanoseconds>(b - a).count();
}

// Spins (with a pause per iteration) until `d` has passed.
inline void busy_wait(nanoseconds d) {
  const auto end = Clock::now() + d;
  while (Clock::now() < end) ipc::cpu_relax();
}

// CPU time this process has used, user + system, in nanoseconds.
inline std::int64_t process_cpu_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace bulkhead::bench
