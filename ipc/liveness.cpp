#include "ipc/liveness.hpp"

#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstddef>

namespace bulkhead::ipc {

namespace {

constexpr std::uint32_t kPfExiting = 0x00000004;  // PF_EXITING in a task's flags

#if defined(__GLIBC__) && defined(__PTHREAD_MUTEX_HAVE_PREV) && __PTHREAD_MUTEX_HAVE_PREV
// glibc's robust mutex node: &mutex.__data.__list.__next, with the
// predecessor's node at &mutex.__data.__list.__prev; the lock word is
// futex_offset bytes from the node.  The cell mirrors a mutex's layout.
using Mutex = __pthread_mutex_s;
using List = __pthread_list_t;
constexpr std::size_t kNodeAt = offsetof(Mutex, __list) + offsetof(List, __next);
constexpr long kFutexOffset =
    static_cast<long>(offsetof(Mutex, __lock)) - static_cast<long>(kNodeAt);
static_assert(offsetof(Mutex, __lock) == offsetof(LivenessCell, word));
static_assert(offsetof(Mutex, __list) + sizeof(List) <= sizeof(LivenessCell));
constexpr std::size_t kQueueAdjust = offsetof(List, __next);  // node -> its List

std::byte* node_of(LivenessCell* cell) {
  return reinterpret_cast<std::byte*>(cell) + kNodeAt;
}
void*& next_of(std::byte* node) {
  return *reinterpret_cast<void**>(node);
}
void*& prev_of(std::byte* node) {  // a node's prev field, glibc's __prev
  return *reinterpret_cast<void**>(node - kQueueAdjust + offsetof(List, __prev));
}
std::byte* untag(void* p) {  // glibc marks PI mutexes with bit 0 of the link
  return reinterpret_cast<std::byte*>(reinterpret_cast<std::uintptr_t>(p) & ~std::uintptr_t{1});
}

robust_list_head* registered_head() {
  robust_list_head* head = nullptr;
  std::size_t len = 0;
  if (::syscall(SYS_get_robust_list, 0, &head, &len) != 0) return nullptr;
  if (head == nullptr || len != sizeof(robust_list_head)) return nullptr;
  return head;
}
#endif

}  // namespace

int arm_death_notice(LivenessCell* cell) noexcept {
  if (cell == nullptr) return EINVAL;
#if defined(__GLIBC__) && defined(__PTHREAD_MUTEX_HAVE_PREV) && __PTHREAD_MUTEX_HAVE_PREV
  robust_list_head* head = registered_head();
  if (head == nullptr || head->futex_offset != kFutexOffset) return ENOTSUP;
  std::byte* const node = node_of(cell);
  auto* const head_node = reinterpret_cast<std::byte*>(&head->list);
  // Insert at the front, as glibc's ENQUEUE_MUTEX does: the old first node
  // (or the head itself: glibc keeps a prev slot before its head too) gets
  // us as its predecessor.
  void* const first = head->list.next;
  const auto tid = static_cast<std::uint32_t>(::gettid()) & FUTEX_TID_MASK;
  cell->word.store(tid | FUTEX_WAITERS, std::memory_order_release);
  prev_of(untag(first)) = node;
  prev_of(node) = head_node;
  next_of(node) = first;
  std::atomic_signal_fence(std::memory_order_seq_cst);  // linked before it is reachable
  head->list.next = reinterpret_cast<robust_list*>(node);
  // The parent's watcher waits for the word to leave 0.
  (void)futex_wake(&cell->word, INT_MAX);
  return 0;
#else
  return ENOTSUP;
#endif
}

void disarm_death_notice(LivenessCell* cell) noexcept {
  if (cell == nullptr) return;
#if defined(__GLIBC__) && defined(__PTHREAD_MUTEX_HAVE_PREV) && __PTHREAD_MUTEX_HAVE_PREV
  if ((cell->word.load(std::memory_order_relaxed) & FUTEX_TID_MASK) !=
      (static_cast<std::uint32_t>(::gettid()) & FUTEX_TID_MASK)) {
    return;  // not armed by this thread
  }
  std::byte* const node = node_of(cell);
  // glibc's DEQUEUE_MUTEX: the neighbours point past us.
  void* const next = next_of(node);
  void* const prev = prev_of(node);
  prev_of(untag(next)) = prev;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  next_of(untag(prev)) = next;
  // The word keeps its armed value: no longer linked, the kernel leaves it
  // alone, and the parent's watcher sees no change (the pidfd tells it).
#endif
}

std::optional<ExitStatus> exiting_status(pid_t pid) {
  auto stat = read_proc_stat(pid);
  if (!stat || (stat->flags & kPfExiting) == 0) return std::nullopt;
  const std::uint64_t code = stat->exit_code;
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
