// ipc/liveness.hpp: death notices, delivered before the kernel has torn a
// dying process down.
//
// What it is for: a parent learns that a child process died from SIGCHLD or
// its pidfd, and the kernel sends those only at the very end of the child's
// exit, after it has freed the child's whole address space.  For a process
// with a few tens of MiB mapped that takes milliseconds (a Python worker:
// ~1.5 ms here, 40 MiB: 1.6 ms, 100 MiB: 3.2 ms), and a restart has to wait
// for it.  But a dying process runs no user code any more from the start of
// its exit, long before that: this file tells the parent at that point.
//
// How: robust futexes.  The kernel walks a thread's robust list when the
// thread exits, *before* it releases the address space, and for each entry
// whose futex word holds the thread's TID it sets FUTEX_OWNER_DIED and wakes
// one waiter (a shared futex wake, so a waiter in another process mapping
// the same memory).  So:
//   worker  arm_death_notice(cell): starts a sentinel thread that registers a
//           robust list with one entry, the cell in shared memory, writes
//           its TID | FUTEX_WAITERS into the cell's word, and sleeps with
//           every signal blocked until the process dies.  The sentinel never
//           exits on its own: when its entry fires, the whole process is
//           exiting (a fatal signal, exit_group, or an exec).
//   parent  DeathWatch waits on many cells at once (futex_waitv, in its own
//           threads) and reports each cell whose word changed; then
//           exiting_status() confirms from /proc that the thread is exiting
//           and reads its exit status (the one waitid will give).
// Why a thread of its own and not the main thread: a thread has one robust
// list, and glibc already registers one per thread for robust pthread
// mutexes; taking over the main thread's would silently break those for the
// program that embeds the worker.  The sentinel locks no mutexes, so its
// list is free.
//
// Cell states (the word): 0 not armed (the parent writes 0 before each
// incarnation) -> TID | FUTEX_WAITERS armed -> FUTEX_OWNER_DIED set: dying.
// Trust: the child may scribble on its cell.  The worst it gets is a notice
// that exiting_status() rejects (the thread is not exiting), or none (then
// the parent learns of the death from the pidfd as before).  The parent
// never reads the cell's link field, which holds the child's own pointers.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "ipc/sys.hpp"

namespace bulkhead::ipc {

struct alignas(64) LivenessCell {
  std::atomic<std::uint32_t> word;  // 0, TID|FUTEX_WAITERS, or |FUTEX_OWNER_DIED
  std::uint32_t reserved0;
  std::uint64_t link;  // the child's robust-list link: its pointers, never read by the parent
  std::uint8_t reserved1[48];
};
static_assert(sizeof(LivenessCell) == 64);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

// Child side: starts the sentinel thread for `cell` (mapped shared) in this
// process.  Call after the last fork (threads do not survive fork), at most
// once per process.  Returns 0, or an errno value if it could not (then the
// parent just gets no early notice).
int arm_death_notice(LivenessCell* cell) noexcept;

// How a process ended, in waitid's terms.
struct ExitStatus {
  bool signaled = false;  // killed by signal `number` (CLD_KILLED / CLD_DUMPED)
  int number = 0;         // the signal, or the exit code
  bool core_dumped = false;
  friend bool operator==(const ExitStatus&, const ExitStatus&) = default;
};
// If process `pid` (its main thread) is exiting, the status it exits with,
// from /proc/PID/stat (the flags and exit_code fields, as its parent may read
// them); else nullopt (not exiting yet, or reaped).  After a notice the main
// thread may lag the sentinel by a few microseconds: ask again briefly.
std::optional<ExitStatus> exiting_status(pid_t pid);

// Parent side: waits for many cells' words to change and says which.
// Threads: add/remove/drain are for one thread (the event loop); the waiting
// happens in helper threads, one per kPerThread cells.
class DeathWatch {
 public:
  static constexpr std::size_t kPerThread = 127;  // FUTEX_WAITV_MAX, less one for the wake word

  struct Notice {
    std::uint64_t key;
    std::uint32_t word;   // the value the cell changed to (the kernel clears the TID)
    std::uint32_t armed;  // the value it had, TID | FUTEX_WAITERS (0 if never armed)
  };

  DeathWatch();
  ~DeathWatch();
  DeathWatch(const DeathWatch&) = delete;
  DeathWatch& operator=(const DeathWatch&) = delete;

  // False if this kernel has no futex_waitv (before 5.16): add() does nothing.
  [[nodiscard]] bool available() const noexcept { return available_; }
  // Watches `cell` (its word reset to 0 by the caller before the child may
  // arm it) under `key`.  A key already watched is replaced.
  void add(std::uint64_t key, LivenessCell* cell);
  // Stops watching `key`; no notice for it is reported after this returns,
  // and no helper thread touches its cell any more (it may be unmapped).
  void remove(std::uint64_t key);
  // Readable (EPOLLIN) while notices are waiting.
  [[nodiscard]] int fd() const noexcept { return event_.get(); }
  // The notices since the last drain; each cell is reported once until it
  // is added again.
  std::vector<Notice> drain();

 private:
  struct Entry {
    std::uint64_t key;
    LivenessCell* cell;
    std::uint32_t expected;  // 0 until armed, then the armed value
    bool reported;
  };
  struct Shard {
    std::vector<Entry> entries;
    std::atomic<std::uint32_t> generation{0};  // bumped (and woken) on every change
    bool stop = false;
    std::thread thread;
  };

  void run(Shard& s);
  void poke(Shard& s);

  bool available_ = false;
  UniqueFd event_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::vector<Notice> notices_;
};

}  // namespace bulkhead::ipc
