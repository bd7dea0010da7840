// bench/process.cpp: fork, pin, parent-death signal, reaping.  See process.hpp.
#include "bench/process.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <thread>
#include <utility>

#include "ipc/sys.hpp"

namespace bulkhead::bench {
namespace {

// The lifeline pipe (see process.hpp): created once, before the first fork;
// the write end stays open in the benchmark process only.
struct Lifeline {
  int read_end = -1;
  int write_end = -1;
};

const Lifeline& lifeline() {
  static const Lifeline l = [] {
    int fds[2];
    ipc::check_sys(::pipe2(fds, O_CLOEXEC), "pipe2 (child lifeline)");
    return Lifeline{fds[0], fds[1]};
  }();
  return l;
}

// In the child: exit as soon as the benchmark process is gone.
void watch_lifeline(const Lifeline& l) {
  ::close(l.write_end);  // ours would keep the pipe open forever
  std::thread([fd = l.read_end] {
    char c;
    while (::read(fd, &c, 1) != 0) {
      // Only EINTR (nobody writes): keep waiting for end of file.
    }
    ::_exit(4);
  }).detach();
}

}  // namespace

bool pin_to_cpu(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return ::sched_setaffinity(0, sizeof set, &set) == 0;
}

int allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) != 0) return 1;
  return CPU_COUNT(&set);
}

Child Child::spawn(std::string name, int cpu, std::function<void()> body) {
  const pid_t parent = ::getpid();
  const Lifeline& line = lifeline();
  std::fflush(nullptr);  // nothing buffered gets written twice
  const pid_t pid = ::fork();
  if (pid < 0) ipc::throw_sys("fork for " + name);
  if (pid > 0) return Child(std::move(name), pid);

  // Child.  Die with the parent; if it is already gone, go now.
  int rc = 0;
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) ::_exit(3);
  watch_lifeline(line);
  if (cpu >= 0 && !pin_to_cpu(cpu)) {
    std::fprintf(stderr, "bulkhead-bench: %s: cannot pin to CPU %d\n", name.c_str(), cpu);
  }
  try {
    body();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bulkhead-bench: child %s: %s\n", name.c_str(), e.what());
    rc = 1;
  } catch (...) {
    std::fprintf(stderr, "bulkhead-bench: child %s: unknown exception\n", name.c_str());
    rc = 1;
  }
  std::fflush(stderr);
  ::_exit(rc);
}

Child::Child(Child&& o) noexcept
    : name_(std::move(o.name_)),
      pid_(std::exchange(o.pid_, -1)),
      reaped_(o.reaped_),
      status_(o.status_) {}

Child::~Child() {
  if (pid_ <= 0 || reaped_) return;
  ::kill(pid_, SIGKILL);
  reap(true);
}

bool Child::reap(bool block) {
  if (reaped_) return true;
  int st = 0;
  pid_t r = ipc::retry_eintr([&] { return ::waitpid(pid_, &st, block ? 0 : WNOHANG); });
  if (r == pid_) {
    reaped_ = true;
    status_ = st;
    return true;
  }
  return false;
}

std::string Child::describe_status() const {
  if (WIFEXITED(status_)) return "exited with status " + std::to_string(WEXITSTATUS(status_));
  if (WIFSIGNALED(status_)) return "killed by signal " + std::to_string(WTERMSIG(status_));
  return "ended with wait status " + std::to_string(status_);
}

void Child::check_running() {
  if (reap(false)) throw std::runtime_error("child " + name_ + " " + describe_status());
}

void Child::join(std::chrono::milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (!reap(false)) {
    if (std::chrono::steady_clock::now() >= end) {
      ::kill(pid_, SIGKILL);
      reap(true);
      throw std::runtime_error("child " + name_ + " did not exit in time (killed)");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  if (!(WIFEXITED(status_) && WEXITSTATUS(status_) == 0)) {
    throw std::runtime_error("child " + name_ + " " + describe_status());
  }
}

}  // namespace bulkhead::bench
