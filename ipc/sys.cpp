#include "ipc/sys.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace bulkhead::ipc {

void throw_sys(const std::string& context) {
  throw SysError(errno, context);
}
void throw_sys(int err, const std::string& context) {
  throw SysError(err, context);
}

void UniqueFd::reset(int fd) noexcept {
  if (fd_ >= 0) ::close(fd_);  // close() is never retried on Linux: the fd is gone either way
  fd_ = fd;
}

namespace {

struct ProcStat {
  char state = '?';
  std::uint64_t start_time = 0;
};

std::optional<ProcStat> read_proc_stat(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  if (!in) return std::nullopt;
  std::string line;
  std::getline(in, line);
  // comm (field 2) may contain spaces and parentheses: parse after the last ')'.
  auto close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(line.substr(close + 1));
  ProcStat st;
  if (!(rest >> st.state)) return std::nullopt;  // field 3
  std::string field;
  for (int i = 4; i <= 21; ++i) {  // fields 4..21 precede starttime (22)
    if (!(rest >> field)) return std::nullopt;
  }
  if (!(rest >> st.start_time)) return std::nullopt;
  return st;
}

}  // namespace

std::optional<std::uint64_t> process_start_time(pid_t pid) {
  auto st = read_proc_stat(pid);
  if (!st) return std::nullopt;
  return st->start_time;
}

bool process_alive(pid_t pid, std::uint64_t start_time) {
  auto st = read_proc_stat(pid);
  return st && st->start_time == start_time && st->state != 'Z' && st->state != 'X';
}

void futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                std::optional<Deadline> deadline) noexcept {
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
  timespec ts{};
  timespec* tsp = nullptr;
  if (deadline) {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline->time_since_epoch());
    if (ns.count() < 0) ns = std::chrono::nanoseconds(0);
    ts.tv_sec = static_cast<time_t>(ns.count() / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(ns.count() % 1'000'000'000);
    tsp = &ts;
  }
  // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC timeout (steady_clock).
  // Shared futex: no FUTEX_PRIVATE_FLAG, the word lives in a shared mapping.
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAIT_BITSET, expected, tsp,
            nullptr, FUTEX_BITSET_MATCH_ANY);
}

int futex_wake(std::atomic<std::uint32_t>* word, int n) noexcept {
  long r = ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE, n, nullptr,
                     nullptr, 0);
  return r < 0 ? 0 : static_cast<int>(r);
}

int request_slice(std::chrono::nanoseconds slice) noexcept {
  // Opt-in (BULKHEAD_SHORT_SLICE=1), see sys.hpp: measured, it did not pay.
  if (const char* v = std::getenv("BULKHEAD_SHORT_SLICE"); v == nullptr || v[0] != '1') return 0;
  struct {  // struct sched_attr, SCHED_ATTR_SIZE_VER0
    std::uint32_t size;
    std::uint32_t sched_policy;
    std::uint64_t sched_flags;
    std::int32_t sched_nice;
    std::uint32_t sched_priority;
    std::uint64_t sched_runtime;
    std::uint64_t sched_deadline;
    std::uint64_t sched_period;
  } attr{};
  attr.size = sizeof attr;
  attr.sched_policy = SCHED_OTHER;
  attr.sched_nice = ::getpriority(PRIO_PROCESS, 0);  // keep the thread's nice value
  attr.sched_runtime = static_cast<std::uint64_t>(slice.count());
  if (::syscall(SYS_sched_setattr, 0, &attr, 0) != 0) return errno;
  return 0;
}

}  // namespace bulkhead::ipc
