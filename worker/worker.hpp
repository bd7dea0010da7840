// worker/worker.hpp: the worker's side of the supervisor <-> worker contract.
//
// Command line: a worker is started by the supervisor as
//   BINARY --bulkhead-worker
// with fd 3 = its mailbox segment (ipc/mailbox.hpp layout), fd 4 = its control
// socket (SOCK_SEQPACKET, ToSupervisor messages and channel fds) and fd 5 =
// the bell board.  Every other fd is closed.
//
// Exit codes (documented, stable):
//   0   graceful stop (or normal end)
//   64  usage: not started by a supervisor / bad command line
//   70  an actor raised (the report on the control socket has the details)
//   71  start failure: an actor type is unknown or its init raised
//   72  the segment or control socket handed over was unusable
#pragma once

namespace bulkhead::worker {

inline constexpr int kSegmentFd = 3;  // the worker's mailbox segment (ipc/mailbox.hpp)
inline constexpr int kControlFd = 4;  // the control socket (SOCK_SEQPACKET)
inline constexpr int kBoardFd = 5;    // the bell board (doorbells of every slot)

inline constexpr int kExitOk = 0;
inline constexpr int kExitUsage = 64;
inline constexpr int kExitException = 70;
inline constexpr int kExitStartFailure = 71;
inline constexpr int kExitBadHandover = 72;

inline constexpr const char* kWorkerFlag = "--bulkhead-worker";
// Zygote mode (see worker.cpp zygote_loop): fd 3 = socket to the supervisor,
// fd 5 = bell board; forks pre-initialised workers on request.
inline constexpr const char* kZygoteFlag = "--bulkhead-zygote";

}  // namespace bulkhead::worker
