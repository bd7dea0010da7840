#include "supervisor/spawn.hpp"

#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/process/args.hpp>
#include <boost/process/child.hpp>
#include <boost/process/exe.hpp>
#include <boost/process/extend.hpp>
#include <cstring>
#include <stdexcept>

namespace bp = boost::process;

namespace bulkhead::supervisor {
namespace {

// Runs in the child between fork and exec: async-signal-safe calls only.
// fd 3, 4, 5, 1 and 2 get segment_fd, control_fd, board_fd, out_fd and
// err_fd; a negative source leaves /dev/null (3, 4) or the inherited fd (1, 2).
struct ChildSetup : bp::extend::handler {
  pid_t parent;
  int segment_fd;
  int control_fd;
  int board_fd;
  int out_fd;
  int err_fd;

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
    int devnull = ::open("/dev/null", O_RDWR);
    if (devnull < 0) ::_exit(126);
    auto lift = [&](int fd) { return ::fcntl(fd >= 0 ? fd : devnull, F_DUPFD, 10); };
    int seg = lift(segment_fd);
    int ctl = lift(control_fd);
    int brd = lift(board_fd);
    int out = out_fd >= 0 ? ::fcntl(out_fd, F_DUPFD, 10) : -2;
    int err = err_fd >= 0 ? ::fcntl(err_fd, F_DUPFD, 10) : -2;
    if (seg < 0 || ctl < 0 || brd < 0 || out == -1 || err == -1) ::_exit(126);
    if (::dup2(seg, 3) < 0 || ::dup2(ctl, 4) < 0 || ::dup2(brd, 5) < 0) ::_exit(126);
    if (out >= 0 && ::dup2(out, 1) < 0) ::_exit(126);
    if (err >= 0 && ::dup2(err, 2) < 0) ::_exit(126);
    ::dup2(devnull, 0);
    // Everything above 4 closes at exec (Boost's own error pipe included,
    // which is close-on-exec anyway).
    ::syscall(SYS_close_range, 6u, ~0u, CLOSE_RANGE_CLOEXEC);
  }
};

}  // namespace

namespace {

ipc::UniqueFd open_pidfd(pid_t pid) {
  int pfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pfd < 0) {
    int err = errno;
    ::kill(-pid, SIGKILL);
    ::kill(pid, SIGKILL);
    throw ipc::SysError(err, "pidfd_open for " + std::to_string(pid));
  }
  ipc::check_sys(::fcntl(pfd, F_SETFD, FD_CLOEXEC), "fcntl pidfd");
  return ipc::UniqueFd(pfd);
}

std::pair<ipc::UniqueFd, ipc::UniqueFd> output_pipe() {
  int pipefd[2];
  ipc::check_sys(::pipe2(pipefd, O_CLOEXEC), "pipe2 for worker output");
  ipc::UniqueFd out_r(pipefd[0]), out_w(pipefd[1]);
  ipc::check_sys(::fcntl(out_r.get(), F_SETFL, O_NONBLOCK), "fcntl O_NONBLOCK");
  return {std::move(out_r), std::move(out_w)};
}

pid_t spawn_process(const std::string& binary, const char* flag, int fd3, int fd4, int fd5,
                    int out_fd, int err_fd, const std::vector<std::string>& extra) {
  ChildSetup setup;
  setup.parent = ::getpid();
  setup.segment_fd = fd3;
  setup.control_fd = fd4;
  setup.board_fd = fd5;
  setup.out_fd = out_fd;
  setup.err_fd = err_fd;
  std::error_code ec;
  std::vector<std::string> args{flag};
  args.insert(args.end(), extra.begin(), extra.end());
  bp::child child(bp::exe = binary, bp::args = args, setup, ec);
  if (ec) throw ipc::SysError(ec.value(), "start " + binary + ": " + ec.message());
  pid_t pid = child.id();
  child.detach();  // the event loop reaps it, not Boost
  return pid;
}

}  // namespace

Spawned spawn_worker(const std::string& binary, int segment_fd, int control_fd, int board_fd,
                     const std::vector<std::string>& args) {
  auto [out_r, out_w] = output_pipe();
  auto [err_r, err_w] = output_pipe();
  pid_t pid = spawn_process(binary, "--bulkhead-worker", segment_fd, control_fd, board_fd,
                            out_w.get(), err_w.get(), args);
  Spawned s;
  s.pid = pid;
  s.pidfd = open_pidfd(pid);
  s.out = std::move(out_r);
  s.err = std::move(err_r);
  return s;
}

std::unique_ptr<Zygote> Zygote::start(const std::string& binary, int board_fd,
                                      const std::vector<std::string>& args) {
  int sv[2];
  ipc::check_sys(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), "socketpair");
  ipc::UniqueFd ours(sv[0]), theirs(sv[1]);
  std::unique_ptr<Zygote> z(new Zygote);
  z->pid_ = spawn_process(binary, "--bulkhead-zygote", theirs.get(), -1, board_fd, -1, -1, args);
  z->pidfd_ = open_pidfd(z->pid_);
  z->sock_ = std::move(ours);
  return z;
}

Zygote::~Zygote() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    siginfo_t si{};
    ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_.get()), &si, WEXITED);
  }
}

bool Zygote::reap() {
  siginfo_t si{};
  if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_.get()), &si,
               WEXITED | WNOHANG) != 0 ||
      si.si_pid == 0) {
    return false;
  }
  pid_ = 0;
  return true;
}

Spawned Zygote::spawn(int segment_fd, int control_fd) {
  auto [out_r, out_w] = output_pipe();
  auto [err_r, err_w] = output_pipe();
  std::int32_t tag = 0;
  msghdr msg{};
  iovec iov{&tag, sizeof tag};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(4 * sizeof(int))] = {};
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(4 * sizeof(int));
  int fds[4] = {segment_fd, control_fd, out_w.get(), err_w.get()};
  std::memcpy(CMSG_DATA(c), fds, sizeof fds);
  if (ipc::retry_eintr([&] { return ::sendmsg(sock_.get(), &msg, MSG_NOSIGNAL); }) < 0) {
    ipc::throw_sys("request to zygote " + std::to_string(pid_));
  }
  out_w.reset();
  err_w.reset();
  pollfd p{sock_.get(), POLLIN, 0};
  const int wait_ms = answered_ ? 1000 : 10000;
  if (ipc::retry_eintr([&] { return ::poll(&p, 1, wait_ms); }) != 1) {
    throw std::runtime_error("zygote " + std::to_string(pid_) + " did not answer");
  }
  std::int32_t reply = 0;
  if (::recv(sock_.get(), &reply, sizeof reply, 0) != static_cast<ssize_t>(sizeof reply)) {
    throw std::runtime_error("zygote " + std::to_string(pid_) + " hung up");
  }
  answered_ = true;
  if (reply <= 0) throw ipc::SysError(-reply, "zygote " + std::to_string(pid_) + " fork");
  Spawned s;
  s.pid = reply;
  s.pidfd = open_pidfd(s.pid);
  s.out = std::move(out_r);
  s.err = std::move(err_r);
  return s;
}

}  // namespace bulkhead::supervisor
