// supervisor/control_server.hpp: the operator's control endpoint of a running tree.
//
// What it is for: `bulkheadctl` (tools/bulkheadctl) talks to the supervisor
// through Cap'n Proto's two-party RPC (schema/control_rpc.capnp) on a Unix
// socket, and Prometheus scrapes an optional HTTP/1.0 `GET /metrics` on
// 127.0.0.1.  main() makes one ControlPlane after the Runtime and destroys it
// before.
//
// Threads: the Runtime is a single-threaded epoll loop and owns every child;
// nothing else may touch it.  The RPC system needs a kj event loop, and kj's
// UnixEventPort keeps its epoll fd to itself, so the two loops cannot be
// merged without giving up one of them.  Instead the kj loop runs in a thread
// of its own ("io thread") and owns every socket, connection, capability and
// byte of RPC framing.  It turns each request into a Job (plain data and a
// function) on a bounded queue and rings an eventfd the runtime loop watches;
// the runtime thread runs the job against the tree and hands back an Answer
// (a flat Cap'n Proto message: the method's results) on a second queue with
// a second eventfd, which the io thread watches through kj.  Requests that
// take time (stop waits for the exit) are "waiters" the runtime thread checks
// after each supervisor event, with a deadline.
//
// The io thread never logs itself: the supervisor's loggers are
// single-threaded (logging.hpp), so it queues lines for the runtime thread.
//
// Hostile or slow clients: they only ever cost the io thread.  The runtime
// thread never blocks on a client: the queues are bounded (a full queue
// answers `busy`), events to a slow subscriber are dropped and counted, and
// connections, subscriptions and requests waiting for the tree (and how
// long they wait) are capped.  Answers to a client that went away are
// dropped.  A failed accept (no descriptors left) is retried, not fatal.
//
// Traps: the socket directory must be ours and mode 0700 (checked, else
// ControlError); a live supervisor already listening on the socket path keeps
// it (ControlError too: choose another with --control-socket).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "supervisor/runtime.hpp"

namespace bulkhead::supervisor {

// A problem with the control endpoint's configuration (socket dir, port).
class ControlError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ControlOptions {
  std::string socket_path;          // "" = no RPC endpoint
  std::optional<int> metrics_port;  // 127.0.0.1:PORT (0 = any free port); none = off
};

class ControlPlane {
 public:
  // Opens the socket (and the metrics port), hooks into `runtime`'s loop and
  // starts the io thread.  Throws ControlError on a bad directory or socket.
  ControlPlane(Runtime& runtime, ControlOptions options);
  ~ControlPlane();
  ControlPlane(const ControlPlane&) = delete;
  ControlPlane& operator=(const ControlPlane&) = delete;

  [[nodiscard]] const std::string& socket_path() const { return options_.socket_path; }
  [[nodiscard]] int metrics_port() const { return metrics_port_; }

  // Shared with the io thread (control_server.cpp).
  struct Shared;
  struct Answer;
  using Responder = std::function<void(Answer)>;

  // --- runtime thread: the operations (control_ops.cpp) ---
  void do_status(const Responder& r);
  void do_stats(const Responder& r);
  void do_metrics(const Responder& r);
  void do_child_op(int op, const std::string& child, std::uint32_t timeout_ms, Responder r);
  void do_start_child(const std::string& sup, std::uint32_t timeout_ms, Responder r);
  void do_kill(const std::string& child, int sig, const Responder& r);
  void do_shutdown(const Responder& r);

 private:
  struct Waiter {
    std::function<bool(Responder&)> check;  // true: answered, done
    std::function<void(Responder&)> on_timeout;
    Responder respond;
    std::optional<Runtime::TimerKey> timer;
    bool done = false;
  };
  void on_jobs();  // runtime thread: the job eventfd is readable
  void on_wake();  // runtime thread: re-check the waiters
  void on_event(const std::string& name, const std::string& child, const std::string& json);
  // Message counters per slot, from the channels' shared statistics.
  struct Counters {
    std::uint64_t in = 0, out = 0, blocked = 0, failed = 0, dropped = 0, bytes = 0, capacity = 0;
  };
  std::map<std::uint32_t, Counters> counters();
  // Every child, depth first in start order (depth 1: the root's children).
  std::vector<std::pair<Runtime::Child*, std::uint32_t>> children();
  void check_waiters();
  // Answers `r` when `check` returns true (it may respond itself), or calls
  // `on_timeout` when `timeout_ms` have passed.
  void add_waiter(std::uint32_t timeout_ms, std::function<bool(Responder&)> check, Responder r,
                  std::function<void(Responder&)> on_timeout);
  void io_main();  // the io thread

  Runtime& rt_;
  ControlOptions options_;
  int listen_fd_ = -1, metrics_fd_ = -1;  // owned by the io thread once it runs
  int metrics_port_ = 0;
  std::uint64_t socket_ino_ = 0,
                socket_dev_ = 0;  // our socket file (unlinked at exit if still ours)
  int job_fd_ = -1;               // io thread -> runtime thread: jobs queued
  int wake_fd_ = -1;              // runtime thread -> itself: check the waiters after this turn
  std::unique_ptr<Shared> shared_;
  std::vector<std::unique_ptr<Waiter>> waiters_;
  // Exits by reason kind, per child path, over the tree's life (metrics).
  // Entries of children gone from the tree are pruned (prune_exits).
  std::map<std::string, std::map<std::string, std::uint64_t>> exits_;
  static constexpr std::size_t kExitsPruneAt = 1024;
  std::size_t exits_prune_at_ = kExitsPruneAt;  // prune when a new path would pass this
  void prune_exits();
  std::thread io_;
};

}  // namespace bulkhead::supervisor
