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
//   worker  arm_death_notice(cell), on the thread that serves the worker,
//           writes its TID | FUTEX_WAITERS into the cell's word (in shared
//           memory) and links the cell into that thread's robust list;
//           disarm_death_notice(cell) unlinks it before the memory goes.
//   parent  DeathWatch waits on many cells at once (futex_waitv, in its own
//           threads) and reports each cell whose word changed; then
//           exiting_status() confirms from /proc that the process is
//           exiting and reads its exit status (the one waitid will give).
// The robust list is glibc's: the kernel keeps one list per thread, and
// glibc has registered it for robust pthread mutexes.  The cell joins it as
// one more node, laid out as glibc lays out a robust mutex (the word where a
// mutex has its lock word, the links where a mutex has __list), so glibc's
// own insertions and removals around it keep working and robust mutexes of
// the program that embeds the worker keep their owner-death semantics.  The
// layout comes from glibc's public pthread_mutex_t, and arm checks it
// against the futex_offset glibc registered; on any mismatch it declines.
// (A first version used a sentinel thread with a list of its own: every
// worker then had two threads to kill, which cost ~0.1-0.3 ms per restart.)
//
// Cell states (the word): 0 not armed (the parent writes 0 before each
// incarnation) -> TID | FUTEX_WAITERS armed -> FUTEX_WAITERS |
// FUTEX_OWNER_DIED (the kernel clears the TID): dying.
// Trust: the child may scribble on its cell.  The worst it gets is a notice
// that exiting_status() rejects (the process is not exiting), or none (then
// the parent learns of the death from the pidfd as before).  The parent
// never reads the cell's links, which hold the child's own pointers.
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
  std::atomic<std::uint32_t> word;  // 0, TID|FUTEX_WAITERS, or WAITERS|OWNER_DIED
  std::uint8_t links[60];           // the child's robust-list node: its pointers
};
static_assert(sizeof(LivenessCell) == 64);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

// Child side: links `cell` (mapped shared) into the calling thread's robust
// list; from then on that thread's exit (the process's, for the thread that
// serves the worker) is noticed.  Returns 0, or an errno value if it could
// not (ENOTSUP: not glibc's layout); then the parent gets no early notice.
int arm_death_notice(LivenessCell* cell) noexcept;
// Unlinks it again (same thread), before the cell's memory is unmapped; the
// word keeps its value, so the parent sees no notice for this.
void disarm_death_notice(LivenessCell* cell) noexcept;

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
