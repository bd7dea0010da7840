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

// Fields of /proc/PID/stat (of its main thread), or nullopt if the process
// does not exist (or /proc cannot be read).
struct ProcStat {
  char state = '?';              // field 3: R, S, D, Z, ...
  std::uint64_t flags = 0;       // field 9: the kernel's PF_* flags
  std::uint64_t start_time = 0;  // field 22: clock ticks since boot
  std::uint64_t exit_code = 0;   // field 52 (Linux 3.5+; 0 if absent or not ours to see): a
                                 // wait status, as waitpid would give it
};
std::optional<ProcStat> read_proc_stat(pid_t pid);

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

// One CPU relaxation hint for spin loops.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

}  // namespace bulkhead::ipc
