// supervisor/control_internal.hpp: what the io thread and the runtime thread
// of the control plane share (see control_server.hpp).  Private to
// control_server.cpp and control_ops.cpp.
#pragma once

#include <capnp/common.h>
#include <kj/array.h>
#include <kj/string.h>
#include <spdlog/common.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>

#include "supervisor/control_server.hpp"

namespace bulkhead::supervisor {

// A finished request: a flat message whose root is the method's Results struct.
struct ControlPlane::Answer {
  std::uint64_t id = 0;
  kj::Array<capnp::word> data;
  kj::String error;  // non-empty: the request failed (its call fails with this), no data
};

struct ControlPlane::Shared {
  struct Job {
    std::uint64_t id;
    std::function<void(ControlPlane&, Responder)> run;
  };
  struct EventItem {
    std::string name, child, json;
    double t_ms = 0;
  };
  static constexpr std::size_t kMaxJobs = 256;     // queued requests (all clients)
  static constexpr std::size_t kMaxEvents = 4096;  // events not yet taken by the io thread

  std::mutex mu;
  std::deque<Job> jobs;              // io -> runtime
  std::deque<Answer> answers;        // runtime -> io
  std::deque<EventItem> events;      // runtime -> io
  std::uint64_t events_dropped = 0;  // the io thread fell behind by this many
  // io -> runtime: lines to log.  The supervisor's loggers are single-threaded
  // (supervisor/logging.hpp): the io thread never calls spdlog itself.
  std::deque<std::pair<spdlog::level::level_enum, std::string>> logs;
  int job_fd = -1;      // eventfd the runtime thread watches
  bool stop = false;    // runtime -> io: finish
  int subscribers = 0;  // io thread's count: events are copied only when > 0
  int answer_fd = -1;   // eventfd the io thread watches
};

// io thread: queues a line for the supervisor's log (written by the runtime thread).
void log_from_io(ControlPlane::Shared& shared, spdlog::level::level_enum level, std::string line);

// Writes 1 to an eventfd (never blocks: the counter cannot overflow in practice).
void ring_eventfd(int fd);
// Reads an eventfd until it is empty.
void drain_eventfd(int fd);

}  // namespace bulkhead::supervisor
