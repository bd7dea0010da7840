// Death notices between real processes (ipc/liveness.hpp): a child links a
// cell in shared memory into its robust list, the parent's DeathWatch hears
// the kernel release it when the child dies, and exiting_status() reads how
// it died.  glibc's robust mutexes must keep working around the cell.
#include "ipc/liveness.hpp"

#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <new>
#include <optional>
#include <thread>
#include <vector>

#include "tests/ring_fixture.hpp"

namespace bulkhead {
namespace {

using namespace std::chrono_literals;
using ipc::DeathWatch;
using ipc::LivenessCell;
using testing::ChildProcess;

// Cells in one shared anonymous mapping, inherited by the children.
class Cells {
 public:
  explicit Cells(std::size_t n) : n_(n) {
    void* p = ::mmap(nullptr, n * sizeof(LivenessCell), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) ipc::throw_sys("mmap");
    cells_ = static_cast<LivenessCell*>(p);
    for (std::size_t i = 0; i < n; ++i) new (&cells_[i]) LivenessCell{};
  }
  ~Cells() { ::munmap(cells_, n_ * sizeof(LivenessCell)); }
  LivenessCell* operator[](std::size_t i) const { return &cells_[i]; }

 private:
  std::size_t n_;
  LivenessCell* cells_;
};

// A child that arms `cell`, then runs `then` (default: sleeps until killed).
template <class Then>
ChildProcess armed_child(LivenessCell* cell, Then&& then) {
  return ChildProcess::spawn([&]() -> int {
    if (ipc::arm_death_notice(cell) != 0) return 101;
    return then();
  });
}
ChildProcess armed_child(LivenessCell* cell) {
  return armed_child(cell, []() -> int {
    for (;;) ::pause();
  });
}

// Waits until the child's sentinel has armed the cell.
bool wait_armed(const LivenessCell* cell) {
  for (auto until = std::chrono::steady_clock::now() + 5s;
       std::chrono::steady_clock::now() < until;) {
    if (cell->word.load() != 0) return true;
    std::this_thread::sleep_for(1ms);
  }
  return false;
}

// Waits for notices on `watch` for up to `limit`.
std::vector<DeathWatch::Notice> wait_notices(DeathWatch& watch, std::chrono::milliseconds limit) {
  pollfd p{watch.fd(), POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(limit.count())) <= 0) return {};
  return watch.drain();
}

std::optional<ipc::ExitStatus> status_soon(pid_t pid) {
  for (auto until = std::chrono::steady_clock::now() + 2s;
       std::chrono::steady_clock::now() < until;) {
    if (auto st = ipc::exiting_status(pid)) return st;
    std::this_thread::sleep_for(100us);
  }
  return std::nullopt;
}

TEST(Liveness, ArmingWritesTheCallingThreadsId) {
  Cells cells(1);
  ChildProcess child = armed_child(cells[0]);
  ASSERT_TRUE(wait_armed(cells[0]));
  const std::uint32_t word = cells[0]->word.load();
  EXPECT_EQ(word & FUTEX_WAITERS, FUTEX_WAITERS);
  EXPECT_EQ(word & FUTEX_OWNER_DIED, 0u);
  EXPECT_EQ(static_cast<pid_t>(word & FUTEX_TID_MASK), child.pid()) << "its main thread";
  EXPECT_FALSE(ipc::exiting_status(child.pid())) << "a live process is not exiting";
}

// A robust, process-shared mutex in shared memory.
struct SharedMutex {
  pthread_mutex_t m;
  void init() {
    pthread_mutexattr_t a;
    ::pthread_mutexattr_init(&a);
    ::pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    ::pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    ::pthread_mutex_init(&m, &a);
    ::pthread_mutexattr_destroy(&a);
  }
};

SharedMutex* shared_mutexes() {
  void* mem = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) ipc::throw_sys("mmap");
  auto* mx = static_cast<SharedMutex*>(mem);
  for (int i = 0; i < 4; ++i) mx[i].init();
  return mx;
}

TEST(Liveness, GlibcRobustMutexesKeepWorkingAroundTheCell) {
  // The cell is one more node in glibc's robust list: mutexes locked before
  // and after it, unlocked in any order, and one held at death must all
  // still behave, and the cell must still fire.
  Cells cells(1);
  SharedMutex* mx = shared_mutexes();
  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  ChildProcess child = ChildProcess::spawn([&]() -> int {
    if (::pthread_mutex_lock(&mx[0].m) != 0) return 102;  // before the cell
    if (ipc::arm_death_notice(cells[0]) != 0) return 101;
    if (::pthread_mutex_lock(&mx[1].m) != 0) return 103;  // after it
    if (::pthread_mutex_lock(&mx[2].m) != 0) return 104;
    if (::pthread_mutex_unlock(&mx[1].m) != 0) return 105;  // a neighbour leaves
    if (::pthread_mutex_unlock(&mx[0].m) != 0) return 106;  // the one behind the cell
    if (::pthread_mutex_lock(&mx[3].m) != 0) return 107;
    if (::pthread_mutex_unlock(&mx[2].m) != 0) return 108;
    char c = 0;
    (void)::read(go[0], &c, 1);  // holding mx[3] only
    for (;;) ::pause();
  });
  ASSERT_TRUE(wait_armed(cells[0]));
  DeathWatch watch;
  watch.add(3, cells[0]);
  ASSERT_EQ(::write(go[1], "x", 1), 1);
  std::this_thread::sleep_for(20ms);
  ASSERT_EQ(::kill(child.pid(), 0), 0) << "the child failed a mutex step";
  child.kill(SIGKILL);
  auto notices = wait_notices(watch, 5000ms);
  ASSERT_EQ(notices.size(), 1u) << "the cell still fired";
  const int ws = child.wait();
  ASSERT_TRUE(WIFSIGNALED(ws)) << testing::describe_status(ws);
  EXPECT_EQ(::pthread_mutex_lock(&mx[3].m), EOWNERDEAD) << "glibc's own node fired too";
  ::pthread_mutex_consistent(&mx[3].m);
  ::pthread_mutex_unlock(&mx[3].m);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(::pthread_mutex_trylock(&mx[i].m), 0) << "mutex " << i << " was released";
    ::pthread_mutex_unlock(&mx[i].m);
  }
  ::munmap(mx, 4096);
  ::close(go[0]);
  ::close(go[1]);
}

TEST(Liveness, ADisarmedCellStaysQuietAndItsMemoryMayGo) {
  Cells cells(1);
  SharedMutex* mx = shared_mutexes();
  ChildProcess child = ChildProcess::spawn([&]() -> int {
    if (ipc::arm_death_notice(cells[0]) != 0) return 101;
    ipc::disarm_death_notice(cells[0]);
    // The cell's memory may go now: glibc must not touch it again.
    ::munmap(cells[0], sizeof(LivenessCell));
    if (::pthread_mutex_lock(&mx[0].m) != 0) return 102;
    if (::pthread_mutex_unlock(&mx[0].m) != 0) return 103;
    if (::pthread_mutex_lock(&mx[0].m) != 0) return 104;  // held at death
    for (;;) ::pause();
  });
  ASSERT_TRUE(wait_armed(cells[0]));
  DeathWatch watch;
  watch.add(4, cells[0]);
  std::this_thread::sleep_for(20ms);
  ASSERT_EQ(::kill(child.pid(), 0), 0) << "the child failed a step";
  child.kill(SIGKILL);
  const int ws = child.wait();
  EXPECT_TRUE(WIFSIGNALED(ws)) << testing::describe_status(ws);
  EXPECT_TRUE(wait_notices(watch, 100ms).empty()) << "a disarmed cell gives no notice";
  EXPECT_EQ(::pthread_mutex_lock(&mx[0].m), EOWNERDEAD) << "glibc's list survived the disarm";
  ::munmap(mx, 4096);
}

TEST(Liveness, ASigkilledChildIsNoticedWithItsSignal) {
  Cells cells(1);
  ChildProcess child = armed_child(cells[0], []() -> int {
    // Some memory to tear down, as a real worker has.
    constexpr std::size_t kBytes = 32 << 20;
    auto* p = static_cast<char*>(std::malloc(kBytes));
    std::memset(p, 1, kBytes);
    for (;;) ::pause();
  });
  ASSERT_TRUE(wait_armed(cells[0]));
  const std::uint32_t armed = cells[0]->word.load();
  DeathWatch watch;
  ASSERT_TRUE(watch.available());
  watch.add(42, cells[0]);
  std::this_thread::sleep_for(20ms);
  EXPECT_TRUE(wait_notices(watch, 50ms).empty()) << "no notice while the child lives";

  child.kill(SIGKILL);
  auto notices = wait_notices(watch, 5000ms);
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_EQ(notices[0].key, 42u);
  EXPECT_EQ(notices[0].armed, armed);
  EXPECT_NE(notices[0].word & FUTEX_OWNER_DIED, 0u) << "the kernel marked the owner dead";
  auto st = status_soon(child.pid());
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->signaled);
  EXPECT_EQ(st->number, SIGKILL);
  const int ws = child.wait();
  EXPECT_TRUE(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL) << "waitid agrees";
}

TEST(Liveness, AnExitCodeIsNoticedAsSuch) {
  Cells cells(1);
  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  ChildProcess child = armed_child(cells[0], [&]() -> int {
    char c = 0;
    (void)::read(go[0], &c, 1);
    return 3;  // exit_group(3) from the main thread; the sentinel is zapped
  });
  ASSERT_TRUE(wait_armed(cells[0]));
  DeathWatch watch;
  watch.add(7, cells[0]);
  ASSERT_EQ(::write(go[1], "x", 1), 1);
  auto notices = wait_notices(watch, 5000ms);
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_EQ(notices[0].key, 7u);
  auto st = status_soon(child.pid());
  ASSERT_TRUE(st);
  EXPECT_FALSE(st->signaled);
  EXPECT_EQ(st->number, 3);
  const int ws = child.wait();
  EXPECT_TRUE(WIFEXITED(ws) && WEXITSTATUS(ws) == 3);
  ::close(go[0]);
  ::close(go[1]);
}

TEST(Liveness, AWordScribbledByALiveChildIsNoticedButItIsNotExiting) {
  Cells cells(1);
  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  LivenessCell* cell = cells[0];
  ChildProcess child = armed_child(cell, [&]() -> int {
    char c = 0;
    (void)::read(go[0], &c, 1);
    cell->word.store(FUTEX_WAITERS | FUTEX_OWNER_DIED);  // forged
    ::syscall(SYS_futex, &cell->word, FUTEX_WAKE, 1, nullptr, nullptr, 0);
    for (;;) ::pause();
  });
  ASSERT_TRUE(wait_armed(cell));
  DeathWatch watch;
  watch.add(9, cell);
  ASSERT_EQ(::write(go[1], "x", 1), 1);
  auto notices = wait_notices(watch, 5000ms);
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_FALSE(ipc::exiting_status(child.pid())) << "the forger is alive and says so in /proc";
  // Reported once: the forger cannot make the watcher spin or repeat itself.
  cell->word.store(0);
  EXPECT_TRUE(wait_notices(watch, 100ms).empty());
  ::close(go[0]);
  ::close(go[1]);
}

TEST(Liveness, ARemovedCellIsNotReported) {
  Cells cells(1);
  ChildProcess child = armed_child(cells[0]);
  ASSERT_TRUE(wait_armed(cells[0]));
  DeathWatch watch;
  watch.add(1, cells[0]);
  watch.remove(1);
  child.kill(SIGKILL);
  (void)child.wait();
  EXPECT_TRUE(wait_notices(watch, 200ms).empty());
}

TEST(Liveness, ACellArmedAfterItIsWatchedIsFollowed) {
  // The parent watches the cell before the child exists (as the supervisor
  // does): the watcher sees 0, then the armed value, then the death.
  Cells cells(1);
  DeathWatch watch;
  watch.add(5, cells[0]);
  std::this_thread::sleep_for(10ms);
  ChildProcess child = ChildProcess::spawn([&]() -> int {
    std::this_thread::sleep_for(20ms);
    if (ipc::arm_death_notice(cells[0]) != 0) return 101;
    for (;;) ::pause();
  });
  ASSERT_TRUE(wait_armed(cells[0]));
  std::this_thread::sleep_for(20ms);
  EXPECT_TRUE(wait_notices(watch, 20ms).empty()) << "arming is not a death";
  child.kill(SIGKILL);
  auto notices = wait_notices(watch, 5000ms);
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_EQ(notices[0].key, 5u);
  EXPECT_NE(notices[0].armed, 0u);
}

TEST(Liveness, MoreCellsThanOneWatcherThreadTakesAreAllWatched) {
  constexpr std::size_t kChildren = DeathWatch::kPerThread + 3;  // two watcher threads
  Cells cells(kChildren);
  std::vector<ChildProcess> children;
  children.reserve(kChildren);
  for (std::size_t i = 0; i < kChildren; ++i) children.push_back(armed_child(cells[i]));
  for (std::size_t i = 0; i < kChildren; ++i) ASSERT_TRUE(wait_armed(cells[i])) << i;
  DeathWatch watch;
  for (std::size_t i = 0; i < kChildren; ++i) watch.add(1000 + i, cells[i]);
  // One in the first watcher's set, one in the second's.
  for (std::size_t victim : {std::size_t{3}, kChildren - 1}) {
    children[victim].kill(SIGKILL);
    auto notices = wait_notices(watch, 5000ms);
    ASSERT_EQ(notices.size(), 1u) << victim;
    EXPECT_EQ(notices[0].key, 1000 + victim);
    (void)children[victim].wait();
  }
}

}  // namespace
}  // namespace bulkhead
