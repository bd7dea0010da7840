#include "supervisor/spawn.hpp"

#include <fcntl.h>
#include <linux/close_range.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <boost/process/args.hpp>
#include <boost/process/child.hpp>
#include <boost/process/exe.hpp>
#include <boost/process/extend.hpp>
#include <stdexcept>

namespace bp = boost::process;

namespace bulkhead::supervisor {
namespace {

// Runs in the child between fork and exec: async-signal-safe calls only.
struct ChildSetup : bp::extend::handler {
  pid_t parent;
  int segment_fd;
  int control_fd;
  int board_fd;
  int output_fd;

  template <class Executor>
  void on_exec_setup(Executor&) const {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // the supervisor is already gone
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int s = 1; s < NSIG; ++s) {
      if (s != SIGKILL && s != SIGSTOP) ::signal(s, SIG_DFL);
    }
    // Move the fds out of the way first: the targets 3 and 4 may be taken.
    int seg = ::fcntl(segment_fd, F_DUPFD, 10);
    int ctl = ::fcntl(control_fd, F_DUPFD, 10);
    int brd = ::fcntl(board_fd, F_DUPFD, 10);
    int out = ::fcntl(output_fd, F_DUPFD, 10);
    if (seg < 0 || ctl < 0 || brd < 0 || out < 0) ::_exit(126);
    if (::dup2(brd, 5) < 0) ::_exit(126);
    if (::dup2(seg, 3) < 0 || ::dup2(ctl, 4) < 0 || ::dup2(out, 1) < 0 || ::dup2(out, 2) < 0) {
      ::_exit(126);
    }
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    // Everything above 4 closes at exec (Boost's own error pipe included,
    // which is close-on-exec anyway).
    ::syscall(SYS_close_range, 6u, ~0u, CLOSE_RANGE_CLOEXEC);
  }
};

}  // namespace

Spawned spawn_worker(const std::string& binary, int segment_fd, int control_fd, int board_fd) {
  int pipefd[2];
  ipc::check_sys(::pipe2(pipefd, O_CLOEXEC), "pipe2 for worker output");
  ipc::UniqueFd out_r(pipefd[0]), out_w(pipefd[1]);
  ipc::check_sys(::fcntl(out_r.get(), F_SETFL, O_NONBLOCK), "fcntl O_NONBLOCK");

  ChildSetup setup;
  setup.parent = ::getpid();
  setup.segment_fd = segment_fd;
  setup.control_fd = control_fd;
  setup.board_fd = board_fd;
  setup.output_fd = out_w.get();
  std::error_code ec;
  bp::child child(bp::exe = binary, bp::args = {"--bulkhead-worker"}, setup, ec);
  if (ec) throw ipc::SysError(ec.value(), "start worker " + binary + ": " + ec.message());
  pid_t pid = child.id();
  child.detach();  // the event loop reaps it, not Boost

  Spawned s;
  s.pid = pid;
  int pfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pfd < 0) {
    int err = errno;
    ::kill(-pid, SIGKILL);
    ::kill(pid, SIGKILL);
    throw ipc::SysError(err, "pidfd_open for worker " + std::to_string(pid));
  }
  s.pidfd = ipc::UniqueFd(pfd);
  ipc::check_sys(::fcntl(pfd, F_SETFD, FD_CLOEXEC), "fcntl pidfd");
  s.output = std::move(out_r);
  return s;
}

}  // namespace bulkhead::supervisor
