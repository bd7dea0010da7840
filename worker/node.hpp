// worker/node.hpp: one process's endpoint in the actor system.
//
// What it is for: everything a worker (or a client attached from outside the
// tree) needs to exchange messages: its control ring from the supervisor,
// its doorbell on the bell board, its peer table (the registry: names ->
// slot, actor; slot -> current incarnation), its channels (one SPSC ring per
// direction and peer, handed over by the supervisor), pending calls,
// monitors, and the dispatch of inbound messages to actors.
//
// Routing: a message to a peer travels on our outbound channel to it; the
// first send to a peer asks the supervisor for that channel (once per peer
// and incarnation of ours).  Replies travel on the callee's channel back.
// The supervisor is never on the data path.
//
// Failure: the supervisor broadcasts peerDown when a worker dies; pending
// calls to that incarnation fail at once with callee_died (carrying the
// reason), monitors fire DOWN.  A call carries the incarnation it was meant
// for: a later incarnation drops it (its caller was already told), while
// casts and infos are kept (mailbox = keep) for the next incarnation.
//
// Trust: every frame is validated (schema::validate_envelope) before any
// handler sees it; a garbage message is dropped with an error (a call gets a
// bad_message reply); a broken ring is reported to the supervisor, which
// kills the producer (protocol_violation).  The sender of a message is the
// channel it came on, never its `source` field.
//
// Threading: one thread.  Handlers may call(): the node then keeps
// dispatching to other actors while it waits; messages for busy actors are
// copied aside and delivered in order once they are free.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "ipc/channel.hpp"
#include "ipc/doorbell.hpp"
#include "ipc/mailbox.hpp"
#include "ipc/ring.hpp"
#include "ipc/segment.hpp"
#include "schema/codec.hpp"
#include "schema/control.capnp.h"
#include "worker/actor.hpp"

namespace bulkhead::worker {

inline constexpr std::uint32_t kNoActor = 0xffffffffu;  // a client's own calls

class Node {
 public:
  // Takes the handed-over mailbox segment, bell board and control socket.
  // `pending_signals`: bits set by signal handlers (worker) or null (client).
  Node(ipc::Segment mailbox, ipc::Segment board, int control_fd,
       const std::atomic<std::uint32_t>* pending_signals);
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // Blocks until the supervisor's Start arrives (deadline: nullopt = none);
  // returns it (valid until the next call), or nullopt at the deadline.
  std::optional<schema::ToWorker::Start::Reader> wait_for_start(std::optional<ipc::Deadline> d);

  // The actors this node dispatches to (a client has none).
  void set_actors(std::vector<std::unique_ptr<Actor>>* actors);

  // Waits until there is work, a signal, or the deadline.  False at the deadline.
  bool wait(std::optional<ipc::Deadline> deadline);
  // Handles everything available now.  Returns the number of items handled.
  std::size_t dispatch_available();
  [[nodiscard]] bool stop_requested() const noexcept { return stop_requested_; }

  // Messaging (from_actor: the calling actor's index, kNoActor for a client).
  CallResult call(std::uint32_t from_actor, const Target& to, const PayloadFn& request,
                  std::chrono::milliseconds timeout);
  SendStatus send(std::uint32_t from_actor, const Target& to, schema::Kind kind,
                  const PayloadFn& payload);
  SendStatus reply(std::uint32_t from_actor, const From& from, const PayloadFn& answer);
  std::optional<ActorRef> whereis(std::string_view name) const;
  MonitorRef monitor(std::uint32_t watcher, const Target& target);
  void demonitor(MonitorRef ref);
  // Links (set = true) or unlinks `local` and `target` (see Context::link).
  SendStatus link(std::uint32_t local, const Target& target, bool set);
  void trap_exit(std::uint32_t local, bool on);
  struct LinkedDeath {
    std::string actor;  // the local actor that dies
    std::string why;    // which linked actor died, and how
  };
  // Set when a linked peer died and the local actor does not trap exits.
  [[nodiscard]] const std::optional<LinkedDeath>& linked_death() const { return linked_death_; }
  // The actor whose handler raised the exception now propagating, if any.
  [[nodiscard]] std::optional<std::uint32_t> failed_actor() const { return failed_actor_; }

  // Asks the supervisor to start a dynamic child under the simple_one_for_one
  // supervisor `path` (start = true) or to terminate the child `path`;
  // waits for the answer.  Returns the child's path, or throws
  // std::runtime_error with the supervisor's reason.
  std::string request_child(bool start, const std::string& path, std::chrono::milliseconds timeout);

  [[nodiscard]] std::uint32_t slot() const noexcept { return slot_; }
  [[nodiscard]] std::uint32_t incarnation() const noexcept { return incarnation_; }
  [[nodiscard]] int control_fd() const noexcept { return control_fd_; }
  ipc::Waiter& waiter() noexcept { return waiter_; }

 private:
  struct Peer {
    std::uint32_t slot = 0;
    std::uint32_t incarnation = 0;
    bool running = false;
    std::string child;
    std::vector<std::string> names;
    schema::Overflow overflow = schema::Overflow::BLOCK;
    std::chrono::milliseconds block_timeout{1000};
    // our outbound channel to this peer
    std::optional<ipc::Segment> out_seg;
    ipc::RingProducer out;
    ipc::Doorbell bell;
    ipc::ChannelStats* stats = nullptr;
    std::uint64_t sequence = 0;
    std::size_t reserve_bytes = 256;  // first-segment reservation, adapts to message size
    bool refused = false;             // the supervisor has no channel to it (gone for good)
  };
  struct Inbound {
    std::uint32_t peer = 0;
    ipc::Segment seg;
    ipc::RingConsumer ring;
    // Broken or replaced: skipped from now on, freed only at dispatch depth 0
    // (a handler's nested call may be running inside drain_inbound of it).
    bool dead = false;
  };
  struct Pending {
    std::uint32_t slot = 0;
    std::uint32_t stamp = 0;  // the incarnation the call was meant for (0: the next)
    bool done = false;
    CallResult* result = nullptr;  // the waiting call()'s own result: filled in place
  };
  struct Monitor {
    std::uint32_t watcher = 0;
    ActorRef target;
  };
  // A message copied aside (a busy actor's, or a locally made DOWN).
  struct Held {
    std::uint32_t actor = 0;
    std::uint32_t sender_slot = 0;
    kj::Array<capnp::word> words;
  };

  struct Resolved {
    std::uint32_t slot = 0;
    std::uint32_t actor = 0;
    std::uint32_t stamp = 0;
  };
  std::optional<Resolved> resolve(const Target& t) const;
  bool ready() const;
  void handle_control();
  void on_control(schema::ToWorker::Reader msg);
  void update_peer(schema::PeerInfo::Reader info);
  void on_peer_down(schema::PeerDown::Reader down);
  void forget_peer(std::uint32_t slot);
  void on_channel(schema::ChannelInfo::Reader info);
  bool ensure_channel(Peer& p);
  void report_broken(std::uint32_t peer, const std::string& detail);
  template <class Fill>
  SendStatus publish(Peer& p, Fill&& fill);
  // One send's wait for room: a single deadline and a single `blocked` count,
  // however many times it finds the ring full.
  struct BlockState {
    bool counted = false;
    std::optional<ipc::Deadline> deadline;
  };
  SendStatus publish_bytes(Peer& p, std::span<const std::byte> bytes, BlockState* block = nullptr);
  SendStatus on_full(Peer& p, BlockState& block, std::size_t need);
  void drain_replies_from(std::uint32_t slot);
  void reply_bad_message(std::uint32_t sender_slot, std::span<const std::byte> bytes,
                         const std::string& why);
  SendStatus published(Peer& p);
  SendStatus failed(Peer& p, ipc::PushStatus st);
  void loopback(kj::Array<capnp::word> words);
  static std::size_t next_reserve(std::size_t used);
  std::size_t drain_inbound(Inbound& in);
  void deliver(const schema::EnvelopeParts& m, std::uint32_t sender_slot,
               std::span<const std::byte> bytes);
  void invoke(std::uint32_t actor, const Message& msg);
  void run_handler(std::uint32_t actor, const Message& msg);
  void deliver_held();
  void send_error_reply(std::uint32_t sender_slot, schema::Envelope::Reader call,
                        schema::ErrorCode code, const std::string& text);

  ipc::Segment mailbox_;
  ipc::Segment board_;
  int control_fd_;
  const std::atomic<std::uint32_t>* pending_signals_;
  ipc::RingConsumer control_;
  ipc::Waiter waiter_;
  std::uint32_t slot_ = 0;
  std::uint32_t incarnation_ = 0;
  bool drop_mailbox_ = false;
  bool started_ = false;
  bool stop_requested_ = false;
  kj::Array<capnp::word> start_copy_;
  std::optional<capnp::FlatArrayMessageReader> start_reader_;

  // Peers by slot (the supervisor's slots are small dense numbers, below
  // ipc::kMaxSlots): an index, not a hash lookup, on every send and reply.
  // A Peer never moves once made (references to it are kept across calls).
  class PeerTable {
   public:
    [[nodiscard]] Peer* find(std::uint32_t slot) noexcept {
      return slot < by_slot_.size() ? by_slot_[slot].get() : nullptr;
    }
    [[nodiscard]] const Peer* find(std::uint32_t slot) const noexcept {
      return slot < by_slot_.size() ? by_slot_[slot].get() : nullptr;
    }
    // The peer in `slot`, made (empty) if there is none yet.
    Peer& operator[](std::uint32_t slot);

   private:
    std::vector<std::unique_ptr<Peer>> by_slot_;
  };
  PeerTable peers_;
  std::unordered_map<std::string, std::pair<std::uint32_t, std::uint32_t>> names_;
  // The last name resolve() looked up and its entry, valid while names_ has
  // not changed since (names_version_): a hot loop calls one name over and
  // over, and a string compare is cheaper than hashing it again.
  std::uint64_t names_version_ = 0;
  mutable std::uint64_t last_name_version_ = ~std::uint64_t{0};
  mutable std::string last_name_;
  mutable std::pair<std::uint32_t, std::uint32_t> last_entry_{};
  std::vector<std::unique_ptr<Inbound>> inbound_;
  std::vector<std::unique_ptr<Actor>>* actors_ = nullptr;
  std::vector<int> busy_;  // per actor: handler frames on the stack
  std::deque<Held> held_;  // messages waiting for a free actor, in order
  // Calls in flight (one per nesting level, so a few): a flat vector.
  std::vector<std::pair<std::uint64_t, Pending>> pending_;
  std::vector<std::pair<std::uint64_t, Pending>>::iterator find_pending(std::uint64_t corr);
  std::uint64_t next_correlation_ = 1;
  std::map<std::uint64_t, Monitor> monitors_;
  struct Link {
    std::uint32_t local = 0;
    ActorRef remote;
  };
  std::vector<Link> links_;
  std::vector<bool> trapping_;  // per local actor
  std::optional<LinkedDeath> linked_death_;
  std::optional<std::uint32_t> failed_actor_;
  std::uint64_t next_monitor_ = 1;
  struct ChildAnswer {
    bool ok = false;
    std::string id, error;
  };
  std::optional<ChildAnswer> child_answer_;
  int depth_ = 0;                                        // nested dispatch (calls from handlers)
  std::vector<std::vector<capnp::word>> reply_scratch_;  // per depth
  std::size_t reply_reserve_ = 256;
};

}  // namespace bulkhead::worker
