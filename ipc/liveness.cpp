#include "ipc/liveness.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <string>

namespace bulkhead::ipc {

namespace {

constexpr std::uint32_t kPfExiting = 0x00000004;  // PF_EXITING in a task's flags
constexpr std::size_t kSentinelStack = 128 * 1024;

// The kernel finds the futex word at (list entry + futex_offset): the entry
// is the cell's link field, the word sits before it in the same cell.
constexpr long kFutexOffset = static_cast<long>(offsetof(LivenessCell, word)) -
                              static_cast<long>(offsetof(LivenessCell, link));

long futex_wake_shared(std::atomic<std::uint32_t>* word) {
  return ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE, INT_MAX, nullptr,
                   nullptr, 0);
}

void* sentinel_main(void* arg) {
  auto* cell = static_cast<LivenessCell*>(arg);
  // The list head lives on this stack, which lives as long as the process:
  // this function never returns once the list is registered.
  robust_list_head head{};
  head.list.next = reinterpret_cast<robust_list*>(&cell->link);
  head.futex_offset = kFutexOffset;
  head.list_op_pending = nullptr;
  // One entry, whose next is the head again: the list is circular.
  std::atomic_ref<std::uint64_t>(cell->link)
      .store(reinterpret_cast<std::uint64_t>(&head.list), std::memory_order_relaxed);
  if (::syscall(SYS_set_robust_list, &head, sizeof head) != 0) return nullptr;
  const auto tid = static_cast<std::uint32_t>(::gettid());
  cell->word.store((tid & FUTEX_TID_MASK) | FUTEX_WAITERS, std::memory_order_release);
  futex_wake_shared(&cell->word);  // the parent's watcher waits for the word to leave 0
  for (;;) ::pause();              // every signal blocked: only the process's death ends this
}

}  // namespace

int arm_death_notice(LivenessCell* cell) noexcept {
  if (cell == nullptr) return EINVAL;
  pthread_attr_t attr;
  if (int e = ::pthread_attr_init(&attr); e != 0) return e;
  (void)::pthread_attr_setstacksize(&attr, kSentinelStack);
  (void)::pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  // The sentinel must never take a signal meant for the worker: it is born
  // with every signal blocked.
  sigset_t all, old;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_t t;
  int e = ::pthread_create(&t, &attr, sentinel_main, cell);
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ::pthread_attr_destroy(&attr);
  if (e == 0) (void)::pthread_setname_np(t, "bh-liveness");
  return e;
}

std::optional<ExitStatus> exiting_status(pid_t pid) {
  if (pid <= 0) return std::nullopt;
  const std::string path = "/proc/" + std::to_string(pid) + "/stat";
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return std::nullopt;
  std::array<char, 2048> buf{};
  ssize_t n = 0;
  do {
    n = ::read(fd.get(), buf.data(), buf.size() - 1);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return std::nullopt;
  std::string_view text(buf.data(), static_cast<std::size_t>(n));
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so
  // the fields start after the last ')'.  Field 3 is the first one there.
  const auto close = text.rfind(')');
  if (close == std::string_view::npos) return std::nullopt;
  text.remove_prefix(close + 1);
  std::array<std::string_view, 53> field{};  // field[k] = the k-th field (1-based)
  std::size_t k = 3;
  while (!text.empty() && k < field.size()) {
    while (!text.empty() && (text.front() == ' ' || text.front() == '\n')) text.remove_prefix(1);
    const auto end = std::min(text.find_first_of(" \n"), text.size());
    if (end == 0) break;
    field[k++] = text.substr(0, end);
    text.remove_prefix(end);
  }
  if (k < field.size()) return std::nullopt;  // exit_code (field 52) missing: kernel < 3.5
  auto number = [](std::string_view s, unsigned long long& out) {
    out = 0;
    if (s.empty()) return false;
    for (char ch : s) {
      if (ch < '0' || ch > '9') return false;
      out = out * 10 + static_cast<unsigned>(ch - '0');
    }
    return true;
  };
  unsigned long long flags = 0, code = 0;
  if (!number(field[9], flags) || !number(field[52], code)) {
    return std::nullopt;
  }
  if ((flags & kPfExiting) == 0) return std::nullopt;
  ExitStatus st;
  if ((code & 0x7f) != 0) {
    st.signaled = true;
    st.number = static_cast<int>(code & 0x7f);
    st.core_dumped = (code & 0x80) != 0;
  } else {
    st.number = static_cast<int>((code >> 8) & 0xff);
  }
  return st;
}

// --- DeathWatch -----------------------------------------------------------------

namespace {

// Debian 12's kernel headers (6.1) call kFutexSize32 FUTEX_32.
constexpr std::uint32_t kFutexSize32 = FUTEX_32;

long wait_any(struct futex_waitv* waiters, unsigned n) {
  return ::syscall(SYS_futex_waitv, waiters, n, 0, nullptr, CLOCK_MONOTONIC);
}

}  // namespace

DeathWatch::DeathWatch()
    : event_(check_sys(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), "eventfd for DeathWatch")) {
  // An empty vector is EINVAL where futex_waitv exists, ENOSYS where not.
  errno = 0;
  available_ = !(wait_any(nullptr, 0) != 0 && errno == ENOSYS);
}

DeathWatch::~DeathWatch() {
  for (auto& s : shards_) {
    {
      std::lock_guard lock(mu_);
      s->stop = true;
    }
    poke(*s);
    if (s->thread.joinable()) s->thread.join();
  }
}

void DeathWatch::poke(Shard& s) {
  s.generation.fetch_add(1, std::memory_order_release);
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&s.generation), FUTEX_WAKE_PRIVATE, INT_MAX,
            nullptr, nullptr, 0);
}

void DeathWatch::add(std::uint64_t key, LivenessCell* cell) {
  if (!available_ || cell == nullptr) return;
  remove(key);
  Shard* target = nullptr;
  {
    std::lock_guard lock(mu_);
    for (auto& s : shards_) {
      if (s->entries.size() < kPerThread) {
        target = s.get();
        break;
      }
    }
    if (target == nullptr) {
      shards_.push_back(std::make_unique<Shard>());
      target = shards_.back().get();
      target->thread = std::thread([this, target] { run(*target); });
    }
    target->entries.push_back(Entry{key, cell, 0, false});
  }
  poke(*target);
}

void DeathWatch::remove(std::uint64_t key) {
  Shard* touched = nullptr;
  {
    std::lock_guard lock(mu_);
    for (auto& s : shards_) {
      auto it = std::find_if(s->entries.begin(), s->entries.end(),
                             [&](const Entry& e) { return e.key == key; });
      if (it != s->entries.end()) {
        s->entries.erase(it);
        touched = s.get();
        break;
      }
    }
    std::erase_if(notices_, [&](const Notice& n) { return n.key == key; });
  }
  // The shard's thread may still be in futex_waitv on the old address: the
  // kernel only reads it (a fault there is an error return, not a crash), and
  // the poke makes the thread rebuild its list without it.
  if (touched != nullptr) poke(*touched);
}

std::vector<DeathWatch::Notice> DeathWatch::drain() {
  std::uint64_t count = 0;
  (void)::read(event_.get(), &count, sizeof count);  // clear first: a later notice re-arms it
  std::vector<Notice> out;
  std::lock_guard lock(mu_);
  out.swap(notices_);
  return out;
}

void DeathWatch::run(Shard& s) {
  sigset_t all;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, nullptr);
  (void)::pthread_setname_np(::pthread_self(), "bh-deathwatch");
  std::vector<struct futex_waitv> waiters;
  waiters.reserve(kPerThread + 1);
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (s.stop) return;
      waiters.clear();
      struct futex_waitv g {};
      g.val = s.generation.load(std::memory_order_acquire);
      g.uaddr = reinterpret_cast<std::uintptr_t>(&s.generation);
      g.flags = kFutexSize32 | FUTEX_PRIVATE_FLAG;
      waiters.push_back(g);
      for (const Entry& e : s.entries) {
        if (e.reported) continue;
        struct futex_waitv w {};
        w.val = e.expected;
        w.uaddr = reinterpret_cast<std::uintptr_t>(&e.cell->word);
        w.flags = kFutexSize32;  // shared: the child wakes it from its own mapping
        waiters.push_back(w);
      }
    }
    const long r = wait_any(waiters.data(), static_cast<unsigned>(waiters.size()));
    const int err = r < 0 ? errno : 0;
    bool any = false, changed = false;
    {
      std::lock_guard lock(mu_);
      if (s.stop) return;
      for (Entry& e : s.entries) {
        if (e.reported) continue;
        const std::uint32_t v = e.cell->word.load(std::memory_order_acquire);
        if (v == e.expected) continue;
        changed = true;
        if (e.expected == 0 && (v & FUTEX_OWNER_DIED) == 0) {
          e.expected = v;  // armed
          continue;
        }
        e.reported = true;
        notices_.push_back(Notice{e.key, v, e.expected});
        any = true;
      }
    }
    if (any) {
      const std::uint64_t one = 1;
      (void)::write(event_.get(), &one, sizeof one);
    }
    // An error that changed nothing (a fault on a cell being removed, say)
    // must not turn into a busy loop while the poke is on its way.
    if (r < 0 && !changed && err != EAGAIN && err != EINTR) ::usleep(1000);
  }
}

}  // namespace bulkhead::ipc
