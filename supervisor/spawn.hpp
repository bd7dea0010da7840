// supervisor/spawn.hpp: starting one worker process.
//
// Boost.Process forks and execs; its on_exec_setup hook does the child-side
// setup between fork and exec:
//   - setpgid(0, 0): the worker leads its own process group, so stopping it
//     can signal the whole group, grandchildren included;
//   - PR_SET_PDEATHSIG(SIGKILL), then the getppid() check (the supervisor may
//     have died between fork and prctl);
//   - the segment fd -> 3, the control socket -> 4, the bell board -> 5,
//     stdout and stderr -> one capture pipe each (output_capture.hpp);
//     every other fd is marked close-on-exec (close_range);
//   - the signal mask and dispositions are reset to defaults.
// Reaping is NOT Boost's: the child is detached at once and the supervisor's
// event loop owns its exit through a pidfd (one owner of child exits).
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "ipc/sys.hpp"

namespace bulkhead::supervisor {

struct Spawned {
  pid_t pid = 0;
  ipc::UniqueFd pidfd;     // readable when the child exits; waitid(P_PIDFD) reaps it
  ipc::UniqueFd out, err;  // read ends of the child's stdout and stderr (non-blocking)
};

// Starts `binary --bulkhead-worker` with `segment_fd` as fd 3, `board_fd` as fd 5 and
// `control_fd` as fd 4.  Throws SysError / std::runtime_error if the process
// cannot be started (e.g. exec failed): that is a start failure.
// `args` go after the flag (a Python worker's --python-path and actor list).
Spawned spawn_worker(const std::string& binary, int segment_fd, int control_fd, int board_fd,
                     const std::vector<std::string>& args = {});

// A zygote: `binary --bulkhead-zygote`, a pre-initialised single-threaded
// copy of a worker program that forks new workers on request (worker.cpp
// zygote_loop), so a restart costs a fork instead of exec + dynamic linking +
// static initialisation.  The new worker is reparented to the supervisor,
// which must be a child subreaper (PR_SET_CHILD_SUBREAPER): it is our child,
// reaped through its pidfd like any other.
class Zygote {
 public:
  // Starts the zygote (fd 3 = its socket, fd 5 = the bell board, output to
  // our stderr).  Throws like spawn_worker.
  static std::unique_ptr<Zygote> start(const std::string& binary, int board_fd,
                                       const std::vector<std::string>& args = {});
  ~Zygote();
  Zygote(const Zygote&) = delete;
  Zygote& operator=(const Zygote&) = delete;

  // Forks a worker with the same fds as spawn_worker gives it.  Throws if the
  // zygote does not answer within a second (ten for its first answer: it may
  // still be initialising, e.g. importing Python modules) or reports a failure.
  Spawned spawn(int segment_fd, int control_fd);

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  [[nodiscard]] int pidfd() const noexcept { return pidfd_.get(); }
  // Reaps the (dead) zygote; its pid is forgotten.  False if it still runs.
  bool reap();

 private:
  Zygote() = default;
  pid_t pid_ = 0;
  bool answered_ = false;
  ipc::UniqueFd pidfd_, sock_;
};

}  // namespace bulkhead::supervisor
