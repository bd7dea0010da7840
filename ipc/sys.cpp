#include "ipc/sys.hpp"

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <climits>
#include <string_view>

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

std::optional<ProcStat> read_proc_stat(pid_t pid) {
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
  // "pid (comm) state ppid ...": comm (field 2) may hold spaces and
  // parentheses, so the fields start after the last ')', at field 3.
  const auto close = text.rfind(')');
  if (close == std::string_view::npos) return std::nullopt;
  text.remove_prefix(close + 1);
  std::array<std::string_view, 53> field{};  // field[k] = the k-th field (1-based)
  std::size_t k = 3;
  while (k < field.size()) {
    while (!text.empty() && (text.front() == ' ' || text.front() == '\n')) text.remove_prefix(1);
    const auto end = std::min(text.find_first_of(" \n"), text.size());
    if (end == 0) break;
    field[k++] = text.substr(0, end);
    text.remove_prefix(end);
  }
  auto number = [](std::string_view f, std::uint64_t& out) {
    auto [ptr, ec] = std::from_chars(f.data(), f.data() + f.size(), out);
    return ec == std::errc{} && ptr == f.data() + f.size();
  };
  ProcStat st;
  if (field[3].size() != 1 || !number(field[9], st.flags) || !number(field[22], st.start_time)) {
    return std::nullopt;
  }
  st.state = field[3][0];
  if (!field[52].empty() && !number(field[52], st.exit_code)) return std::nullopt;
  return st;
}

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

}  // namespace bulkhead::ipc
