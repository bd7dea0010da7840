// ipc/sys.hpp: the one place where Bulkhead talks to the kernel directly.
//
// Contract:
//   - `check_sys()` turns a -1 return into a SysError that keeps errno and a
//     human context string ("shm_open /bulkhead-...").  EINTR is retried by
//     `retry_eintr()`, never silently swallowed elsewhere.
//   - `UniqueFd` owns exactly one descriptor; a raw int never owns.  Every fd
//     Bulkhead opens is O_CLOEXEC; an fd handed to a child on purpose is
//     dup2()'d into place by the child-side spawn code, never inherited by
//     accident.
//   - Futex helpers operate on *shared* (not FUTEX_PRIVATE) words, because
//     every futex we use lives in memory mapped by several processes.
//
// Traps: a pid can be recycled by the kernel.  `process_start_time()` returns
// the start time in clock ticks since boot (field 22 of /proc/PID/stat); the
// pair (pid, start time) names one process for the lifetime of the machine.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <system_error>
#include <utility>

namespace bulkhead::ipc {

using Clock = std::chrono::steady_clock;  // CLOCK_MONOTONIC on Linux
using Deadline = Clock::time_point;

// An operating-system error: errno plus what we were doing.
class SysError : public std::system_error {
 public:
  SysError(int err, const std::string& context)
      : std::system_error(err, std::generic_category(), context) {}
};

[[noreturn]] void throw_sys(const std::string& context);
[[noreturn]] void throw_sys(int err, const std::string& context);

// Retries `f` while it fails with EINTR.  Returns f()'s last result.
template <class F>
auto retry_eintr(F&& f) {
  for (;;) {
    auto r = f();
    if (!(r == -1 && errno == EINTR)) return r;
  }
}

// Throws SysError if r == -1, else returns r.
template <class T>
T check_sys(T r, const std::string& context) {
  if (r == -1) throw_sys(context);
  return r;
}

// Owns one file descriptor.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  [[nodiscard]] int get() const noexcept { return fd_; }
  [[nodiscard]] bool valid() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return valid(); }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

// Start time of `pid` in clock ticks since boot, or nullopt if the process
// does not exist (or /proc cannot be read).
std::optional<std::uint64_t> process_start_time(pid_t pid);

// True if `pid` runs with that start time and is not a zombie.
bool process_alive(pid_t pid, std::uint64_t start_time);

// Futex on a word in shared memory.  Wait returns when woken, when the word no
// longer equals `expected`, on a signal, or at `deadline` (absolute,
// CLOCK_MONOTONIC).  The caller always re-checks its condition.
void futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                std::optional<Deadline> deadline) noexcept;
// Wakes up to `n` waiters.  Returns the number woken.
int futex_wake(std::atomic<std::uint32_t>* word, int n) noexcept;

// Asks the scheduler for a short time slice (EEVDF's per-task slice, Linux
// 6.12+; unprivileged) for the calling thread: it then preempts a task with a
// long slice when it wakes instead of queueing behind it.  A thread on the
// restart path wants that: the killed worker's exit holds a CPU for up to
// milliseconds in the kernel (tearing its memory down), and a woken thread
// placed behind it otherwise waits that long.  0 restores the default.
// Returns 0 or an errno value (older kernels accept it and ignore it).
//
// Off unless BULKHEAD_SHORT_SLICE=1 is in the environment.  An ftrace showed
// the DeathWatch thread queued 0.8 ms behind a dying Python worker, and the
// short slice fixed that (it preempted the teardown at once), but end to end
// it lost: with the supervisor, its watcher, the zygotes and new workers all
// on short slices, py_restart_ready was 2.23-2.51 ms against 2.04-2.25 ms
// without (three interleaved pairs), the new worker preempting the
// supervisor before its ready report was read.
int request_slice(std::chrono::nanoseconds slice) noexcept;
inline constexpr std::chrono::nanoseconds kShortSlice{100'000};  // the kernel's minimum

// One CPU relaxation hint for spin loops.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

}  // namespace bulkhead::ipc
