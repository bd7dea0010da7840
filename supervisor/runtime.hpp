// supervisor/runtime.hpp: the supervisor process: one event loop, one tree.
//
// What it is for: `Runtime` owns every worker process and every segment.  It
// starts the tree in order, watches every child through one epoll loop
// (pidfd per child for exits, the control socket for ready/exit reports, a
// pipe for its output, a signalfd for SIGTERM/SIGINT, timers), and applies
// OTP's rules when a child exits.
//
// Model: each supervisor (root or nested; nested ones are logical nodes in
// this process) is a `Node` that runs a queue of steps, one at a time:
// start child X, stop child X, wait N ms.  A restart strategy is just which
// steps it queues:
//   one_for_one / simple_one_for_one: start X
//   one_for_all:  stop every other running child in reverse start order,
//                 then start every child in start order
//   rest_for_one: stop the children after X in reverse order, then start X
//                 and those children in order
// An exit that arrives while a node is busy with a sequence is deferred until
// the sequence ends, as OTP's EXIT messages wait in the supervisor's mailbox;
// an exit of an incarnation that has since been replaced is ignored.
// Each child is a small state machine: idle -> starting -> running ->
// stopping -> idle, plus `waiting` (restart backoff); "spawned" and "ready"
// are kept apart: a child counts as started only once its worker said ready.
//
// Exit codes of run(): 0 stopped on request (SIGTERM/SIGINT) or by
// auto_shutdown; 1 the root gave up (restart intensity reached); 3 the tree
// failed to start.
#pragma once

#include <array>
#include <chrono>
#include <cstdio>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ipc/mailbox.hpp"
#include "ipc/ring.hpp"
#include "ipc/segment.hpp"
#include "ipc/sys.hpp"
#include "schema/control.capnp.h"
#include "supervisor/config.hpp"
#include "supervisor/output_capture.hpp"
#include "supervisor/spawn.hpp"

namespace bulkhead::supervisor {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;

// Why a child ended: the supervisor's view (see schema/exit_reason.capnp).
struct ExitInfo {
  enum class Kind {
    normal,
    shutdown,
    exception,
    signal,
    exit_code,
    start_failure,
    ready_timeout,
    protocol_violation,
    max_intensity,  // a nested supervisor gave up
  } kind = Kind::normal;
  int number = 0;  // signal number or exit code
  bool core_dumped = false;
  std::string type;       // exception type
  std::string message;    // exception message / start failure text / detail
  std::string actor;      // which actor raised
  std::string traceback;  // a Python exception's formatted traceback (empty for C++)

  [[nodiscard]] bool abnormal() const { return kind != Kind::normal && kind != Kind::shutdown; }
  [[nodiscard]] std::string describe() const;
  [[nodiscard]] std::string kind_name() const;
};

// Slots on the bell board: workers plus attached clients, over the tree's life.
inline constexpr std::uint32_t kBoardSlots = 1024;
inline constexpr std::uint32_t kNoSlot = ~std::uint32_t{0};  // a removed child's

struct RuntimeOptions {
  std::string events_path;  // JSON lines event log ("" = none)
  std::string socket_path;  // attach socket for clients ("" = none)
};

class ControlPlane;

class Runtime {
 public:
  Runtime(TreeSpec tree, RuntimeOptions options);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Starts the tree and runs until it has stopped.  Returns the exit code.
  int run();

 private:
  // The control plane (supervisor/control_server.hpp) reads the tree and
  // queues steps on this thread only; it hooks in through `hooks_` and
  // `event_listener_`.
  friend class ControlPlane;

  struct Node;
  enum class State { idle, starting, running, stopping, waiting };
  using TimerKey = std::pair<TimePoint, std::uint64_t>;

  // Something with a slot: a worker child or an attached client.  It has a
  // mailbox segment (control ring from us), a control socket, a doorbell on
  // the bell board, and shows up in every peer's table.
  struct Endpoint {
    std::uint32_t slot = 0;
    std::string path;  // "root/pipeline/ingest", "client/3"
    std::uint32_t incarnation = 0;
    std::optional<ipc::Segment> segment;
    ipc::Doorbell doorbell;
    ipc::RingProducer control_ring;
    ipc::UniqueFd control;
    bool live = false;     // a process reads its control ring
    bool running = false;  // ready
    bool is_client = false;
    std::vector<std::string> actor_names;
    bool mailbox_keep = true;
    std::size_t mailbox_bytes = 1 << 18;
    ChildSpec::Overflow overflow = ChildSpec::Overflow::block;
    Ms block_timeout{1000};
  };

  struct Child : Endpoint {
    ChildSpec spec;
    Node* owner = nullptr;
    State state = State::idle;
    bool deleted = false;  // a temporary child that ended (OTP deletes its spec)
    int restarts = 0;
    std::optional<ExitInfo> last_exit;
    // worker
    pid_t pid = 0;  // emptied the moment the child is reaped
    ipc::UniqueFd pidfd;
    std::unique_ptr<OutputCapture> capture;  // stdout + stderr, made at the first start
    std::optional<TimerKey> output_pause;    // throttled: its pipes are not read until then
    TimePoint spawned_at{}, ready_at{};
    std::optional<TimerKey> ready_timer, kill_timer, restart_timer;
    // A client's start_child / terminate_child waiting for this child: its slot.
    std::optional<std::uint32_t> notify_started, notify_terminated;
    std::optional<ExitInfo> report;  // what the worker said before exiting
    bool stop_requested = false, ready_timed_out = false, violated = false;
    std::string stop_note;
    Ms backoff_next{0};
    // supervisor
    std::unique_ptr<Node> node;
  };

  struct Step {
    enum class Kind { start, stop, wait } kind;
    Child* child = nullptr;
    Ms delay{0};
  };

  struct Deferred {
    Child* child;
    std::uint32_t incarnation;
    ExitInfo reason;
  };

  struct Node {
    const SupervisorSpec* spec = nullptr;
    std::string path;
    Node* parent = nullptr;
    Child* self = nullptr;  // our entry in the parent; null for the root
    std::vector<std::unique_ptr<Child>> children;
    std::deque<TimePoint> restart_times;
    std::deque<Step> steps;
    Child* current = nullptr;   // the child the step in progress waits for
    bool waiting_step = false;  // a wait step is in progress
    std::optional<TimerKey> wait_timer;
    std::deque<Deferred> deferred;
    enum class Phase { idle, starting, running, shutting_down, stopped } phase = Phase::idle;
    ExitInfo end_reason;
    bool pumping = false;  // pump() is on the stack: a nested call returns at once
    int next_dynamic = 1;
  };

  // epoll registration: what an fd is.
  struct Watch {
    enum class Type {
      signal,
      pidfd,
      control,
      output,
      attach,
      client,
      zygote,
      hook,
      death,   // DeathWatch notices
      corpse,  // a worker declared dead early, not reaped yet
    } type;
    Child* child = nullptr;
    Endpoint* endpoint = nullptr;  // for client
  };

  // One channel segment: messages from a producer slot to a consumer slot.
  struct Channel {
    ipc::Segment segment;
    std::size_t capacity = 0;
  };

  // --- tree ---
  void build_node(Node& n, const SupervisorSpec& spec, const std::string& path, Node* parent,
                  Child* self);
  Child& add_child(Node& n, const ChildSpec& spec);
  void start_node(Node& n);
  void shutdown_node(Node& n, ExitInfo reason);
  void pump(Node& n);
  void step_done(Node& n);
  void sequence_done(Node& n);
  void on_child_started(Node& n, Child& c);
  void on_child_exit(Node& n, Child& c, ExitInfo reason);
  void on_start_failure(Node& n, Child& c, const ExitInfo& reason);
  void handle_crash(Node& n, Child& c, const ExitInfo& reason);
  void drain_deferred(Node& n);
  bool node_busy(const Node& n) const;
  Ms next_backoff(Child& c);
  void check_auto_shutdown(Node& n, Child& c);

  // --- workers ---
  void start_worker(Child& c);
  void stop_worker(Child& c);
  void reap_worker(Child& c);
  // Everything that follows a worker's death, once it is certain: its last
  // report and output are read, DOWN goes out, the tree reacts.  `pid` is the
  // process that died, `st` how.
  void finish_worker(Child& c, pid_t pid, const ipc::ExitStatus& st);
  // DeathWatch says a worker started to exit: it is finished now, while the
  // kernel still tears it down; its pidfd becomes a corpse, reaped later.
  void on_death_notices();
  void reap_corpse(int fd);
  // Supervisor exit: every corpse is reaped (they were SIGKILLed; bounded wait).
  void reap_corpses();
  void on_control_readable(Child& c);
  void on_output_readable(Child& c, int fd);
  void kill_group(Child& c, int sig);
  void kill_subtree(Node& n, const std::string& note);
  void close_worker_fds(Child& c);
  void send_start(Child& c);

  // --- messaging plumbing ---
  void push_control(Endpoint& ep, const std::function<void(schema::ToWorker::Builder)>& fill);
  void push_control_bytes(Endpoint& ep, kj::ArrayPtr<const kj::byte> bytes);
  void push_control_to_all_but(const Endpoint& ep,
                               const std::function<void(schema::ToWorker::Builder)>& fill);
  void fill_peer(schema::PeerInfo::Builder b, const Endpoint& ep) const;
  void send_peer_table(Endpoint& ep);
  void broadcast_up(const Endpoint& ep);
  void broadcast_down(const Endpoint& ep, const ExitInfo& why);
  Channel& channel(std::uint32_t producer, std::uint32_t consumer);
  void deliver_channel(Endpoint& ep, Channel& ch, bool outbound, std::uint32_t peer);
  void deliver_inbound_channels(Endpoint& ep);
  void on_open_channel(Endpoint& ep, std::uint32_t to);
  void on_broken_channel(Endpoint& consumer, std::uint32_t producer, std::uint32_t incarnation,
                         const std::string& detail);
  void open_attach_socket();
  void on_attach();
  void on_client_readable(Endpoint& ep);
  // A free slot (reused first), or a new one; throws std::runtime_error when
  // all kBoardSlots are in use.
  std::uint32_t alloc_slot();
  // The slot's occupant is gone for good: its channels are dropped (their
  // counts stay with their receivers), every live peer is told to forget it
  // (peerGone, after the peerDown it already had), and the slot is free.
  void release_slot(std::uint32_t slot, std::uint32_t last_incarnation);
  // A dynamic child that will never run again gives its slot back.
  void retire_dynamic(Child& c);
  // Frees the removed dynamic children of `n` that nothing refers to.
  void collect_removed(Node& n);
  // A detached client's pending start/terminate answers are dropped: its
  // slot may be given to another client before they are due.
  void forget_requester(Node& n, std::uint32_t slot);
  void drop_client(Endpoint& ep);
  // Handles the ToSupervisor messages common to workers and clients.
  void on_endpoint_message(Endpoint& ep, schema::ToSupervisor::Reader msg);
  // Dynamic children (simple_one_for_one) at run time.
  Node* find_node(Node& n, const std::string& path);
  Child* find_child(Node& n, const std::string& path);
  void start_dynamic(Endpoint& ep, const std::string& sup_path);
  void terminate_dynamic(Endpoint& ep, const std::string& child_path);
  void child_result(std::uint32_t slot, bool ok, const std::string& id, const std::string& error);
  // A dynamic start that was asked for and failed: answered, child removed.
  bool fail_requested_start(Child& c, const ExitInfo& why);

  // --- loop ---
  void watch(int fd, Watch::Type type, Child* c, Endpoint* ep = nullptr);
  void unwatch(int fd);
  TimerKey add_timer(Ms after, std::function<void()> fn);
  void cancel_timer(std::optional<TimerKey>& key);
  void run_due_timers();
  void on_signal();
  void reap_strays();
  Spawned spawn(Child& c, int control_fd);
  void on_zygote_exit(const std::string& binary);
  void dump_stats();
  void retire_stats(std::pair<std::uint32_t, std::uint32_t> key, Channel& ch);

  // --- reporting ---
  void event(const std::string& name, const Child* c, const std::string& extra_json = "");
  double uptime_ms() const;

  TreeSpec tree_;
  RuntimeOptions options_;
  ipc::Instance instance_;
  ipc::MailboxLayout mailbox_layout_;
  ipc::UniqueFd epoll_, signal_fd_, attach_fd_;
  std::optional<ipc::Segment> board_;  // the bell board: one doorbell per slot
  std::map<std::uint32_t, Endpoint*> endpoints_;
  std::map<std::uint32_t, std::unique_ptr<Endpoint>> clients_;
  std::map<std::pair<std::uint32_t, std::uint32_t>, Channel> channels_;
  std::uint32_t next_client_ = 1;
  std::map<std::uint32_t, std::array<std::uint64_t, 4>> retired_;  // stats of removed channels
  std::map<std::string, std::unique_ptr<Zygote>> zygotes_;         // by binary + its arguments
  std::map<int, Watch> watches_;
  std::map<TimerKey, std::function<void()>> timers_;
  std::uint64_t next_timer_id_ = 1;
  std::uint32_t next_slot_ = 1;
  // Slots given back (detached clients, removed dynamic children), reused
  // before new ones; and the last incarnation each freed slot had, so its
  // next occupant's references never match the previous one's.
  std::vector<std::uint32_t> free_slots_;
  std::map<std::uint32_t, std::uint32_t> slot_incarnation_;
  Node root_;
  // Early death notices (ipc/liveness.hpp); declared after the tree, so it is
  // destroyed (its threads joined) before the segments its cells live in.
  std::optional<ipc::DeathWatch> death_watch_;
  struct Corpse {
    pid_t pid = 0;
    ipc::UniqueFd pidfd;
    std::string path;
    ipc::ExitStatus early;  // what the notice said
  };
  std::map<int, Corpse> corpses_;  // by pidfd
  bool done_ = false;
  int exit_code_ = 0;
  TimePoint started_{Clock::now()};
  FILE* events_ = nullptr;
  // Control plane hooks: fds the loop watches for it, and a copy of every event.
  std::map<int, std::function<void()>> hooks_;
  std::function<void(const std::string& name, const Child* c, const std::string& json)>
      event_listener_;
};

}  // namespace bulkhead::supervisor
