// supervisor/spawn.hpp: starting one worker process.
//
// Boost.Process forks and execs; its on_exec_setup hook does the child-side
// setup between fork and exec:
//   - setpgid(0, 0): the worker leads its own process group, so stopping it
//     can signal the whole group, grandchildren included;
//   - PR_SET_PDEATHSIG(SIGKILL), then the getppid() check (the supervisor may
//     have died between fork and prctl);
//   - the segment fd -> 3, the control socket -> 4, the bell board -> 5,
//     stdout and stderr -> the
//     capture pipe; every other fd is marked close-on-exec (close_range);
//   - the signal mask and dispositions are reset to defaults.
// Reaping is NOT Boost's: the child is detached at once and the supervisor's
// event loop owns its exit through a pidfd (one owner of child exits).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "ipc/sys.hpp"

namespace bulkhead::supervisor {

struct Spawned {
  pid_t pid = 0;
  ipc::UniqueFd pidfd;   // readable when the child exits; waitid(P_PIDFD) reaps it
  ipc::UniqueFd output;  // read end of the child's stdout+stderr (non-blocking)
};

// Starts `binary --bulkhead-worker` with `segment_fd` as fd 3, `board_fd` as fd 5 and
// `control_fd` as fd 4.  Throws SysError / std::runtime_error if the process
// cannot be started (e.g. exec failed): that is a start failure.
Spawned spawn_worker(const std::string& binary, int segment_fd, int control_fd, int board_fd);

}  // namespace bulkhead::supervisor
