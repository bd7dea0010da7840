#include "worker/node.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "ipc/packet.hpp"

namespace bulkhead::worker {
namespace {

using Clock = ipc::Clock;

constexpr std::size_t kFirstSegmentBytes = 512;  // reserved in the ring per message

std::string describe(schema::ExitReason::Reader r) {
  switch (r.which()) {
    case schema::ExitReason::NORMAL:
      return "normal";
    case schema::ExitReason::SHUTDOWN:
      return "shutdown";
    case schema::ExitReason::EXCEPTION: {
      auto x = r.getException();
      return fmt::format("exception {}: {}", x.getType().cStr(), x.getMessage().cStr());
    }
    case schema::ExitReason::SIGNAL:
      return fmt::format("killed by signal {}{}", r.getSignal().getNumber(),
                         r.getSignal().getCoreDumped() ? " (core dumped)" : "");
    case schema::ExitReason::EXIT_CODE:
      return fmt::format("exit code {}", r.getExitCode());
    case schema::ExitReason::KILLED_BY_LIMIT:
      return "killed by a resource limit";
    case schema::ExitReason::START_FAILURE:
      return std::string("start failure: ") + r.getStartFailure().cStr();
    case schema::ExitReason::READY_TIMEOUT:
      return "ready timeout";
    case schema::ExitReason::PROTOCOL_VIOLATION:
      return std::string("protocol violation: ") + r.getProtocolViolation().cStr();
  }
  return "unknown";
}

CallError from_code(schema::ErrorCode c) {
  switch (c) {
    case schema::ErrorCode::NONE:
      return CallError::none;
    case schema::ErrorCode::NOPROC:
      return CallError::noproc;
    case schema::ErrorCode::TIMEOUT:
      return CallError::timeout;
    case schema::ErrorCode::CALLEE_DIED:
      return CallError::callee_died;
    case schema::ErrorCode::BAD_MESSAGE:
      return CallError::bad_message;
    case schema::ErrorCode::OVERFLOW:
      return CallError::overflow;
    case schema::ErrorCode::HANDLER_ERROR:
      return CallError::handler_error;
  }
  return CallError::bad_message;
}

kj::Array<capnp::word> copy_words(std::span<const std::byte> bytes) {
  auto words = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), bytes.data(), words.size() * sizeof(capnp::word));
  return words;
}

std::span<const std::byte> as_bytes(const kj::Array<capnp::word>& w) {
  return {reinterpret_cast<const std::byte*>(w.begin()), w.size() * sizeof(capnp::word)};
}

template <class AddressBuilder>  // Envelope::Destination or Envelope::Source
void set_ref(AddressBuilder b, const ActorRef& r) {
  b.setWorker(r.worker);
  b.setIncarnation(r.incarnation);
  b.setActor(r.actor);
}

// For replies read elsewhere (their Value is read from the envelope).
schema::EnvelopeParts parts_of(schema::Envelope::Reader env) {
  return {env, {}, false, false};
}

// +1 on a counter only we write (see ipc::ChannelStats).
void bump(std::atomic<std::uint64_t>& c) {
  c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

std::int64_t deadline_ns(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// Scratch memory for one message being handled, per dispatch depth.
struct Scratch {
  std::vector<capnp::word> words;
  std::span<const std::byte> hold(std::span<const std::byte> bytes) {
    words.resize(bytes.size() / sizeof(capnp::word) + 1);
    std::memcpy(words.data(), bytes.data(), bytes.size());
    return {reinterpret_cast<const std::byte*>(words.data()), bytes.size()};
  }
};
thread_local std::vector<Scratch> t_scratch;

}  // namespace

// ---------------------------------------------------------------------------

Node::Node(ipc::Segment mailbox, ipc::Segment board, int control_fd,
           const std::atomic<std::uint32_t>* pending_signals)
    : mailbox_(std::move(mailbox)),
      board_(std::move(board)),
      control_fd_(control_fd),
      pending_signals_(pending_signals) {
  auto view = ipc::attach_mailbox(mailbox_);
  control_ = ipc::RingConsumer(view.control_ring, mailbox_.name() + "/control");
  slot_ = view.slot;
  ipc::DoorbellWord* bell = ipc::bell_of(board_, slot_);
  if (bell == nullptr) {
    throw std::runtime_error(fmt::format("slot {} is beyond the bell board", slot_));
  }
  waiter_ = ipc::Waiter(bell);
}

Node::~Node() = default;

Node::Peer& Node::PeerTable::operator[](std::uint32_t slot) {
  // Slots come from the supervisor, and it hands out fewer than kMaxSlots.
  if (slot >= ipc::kMaxSlots) {
    throw std::out_of_range(fmt::format("slot {} is beyond the slot table", slot));
  }
  if (slot >= by_slot_.size()) by_slot_.resize(slot + 1);
  if (!by_slot_[slot]) by_slot_[slot] = std::make_unique<Peer>();
  return *by_slot_[slot];
}

void Node::set_actors(std::vector<std::unique_ptr<Actor>>* actors) {
  actors_ = actors;
  busy_.assign(actors ? actors->size() : 0, 0);
}

std::optional<schema::ToWorker::Start::Reader> Node::wait_for_start(
    std::optional<ipc::Deadline> d) {
  for (;;) {
    handle_control();
    if (started_) return start_reader_->getRoot<schema::ToWorker>().getStart();
    if (!waiter_.wait([&] { return control_.readable(); }, d)) return std::nullopt;
  }
}

bool Node::ready() const {
  if (control_.readable()) return true;
  for (const auto& in : inbound_) {
    if (!in->dead && in->ring.readable()) return true;
  }
  for (const auto& h : held_) {
    if (h.actor >= busy_.size() || busy_[h.actor] == 0) return true;
  }
  return depth_ == 0 && pending_signals_ != nullptr && pending_signals_->load() != 0;
}

bool Node::wait(std::optional<ipc::Deadline> deadline) {
  return waiter_.wait([&] { return ready(); }, deadline);
}

std::size_t Node::dispatch_available() {
  std::size_t n = 0;
  handle_control();
  deliver_held();
  for (std::size_t i = 0; i < inbound_.size(); ++i) n += drain_inbound(*inbound_[i]);
  deliver_held();
  if (depth_ == 0) std::erase_if(inbound_, [](const auto& in) { return in->dead; });
  return n;
}

// --- control ----------------------------------------------------------------

void Node::handle_control() {
  ipc::Frame f;
  for (;;) {
    auto st = control_.try_peek(f);
    if (st == ipc::PopStatus::empty) return;
    if (st == ipc::PopStatus::broken) {
      throw std::runtime_error("control ring broken: " + control_.fault().describe());
    }
    auto err = schema::read_message(f.payload, {}, [&](capnp::MessageReader& r) {
      auto msg = r.getRoot<schema::ToWorker>();
      if (msg.isStart() && !started_) {
        start_copy_ = copy_words(f.payload);
        start_reader_.emplace(
            kj::ArrayPtr<const capnp::word>(start_copy_.begin(), start_copy_.size()));
      }
      on_control(msg);
    });
    control_.release();
    if (err) throw std::runtime_error("bad control message: " + err->what);
  }
}

void Node::on_control(schema::ToWorker::Reader msg) {
  switch (msg.which()) {
    case schema::ToWorker::START: {
      if (started_) return;
      auto s = msg.getStart();
      incarnation_ = s.getIncarnation();
      drop_mailbox_ = s.getMailbox() == schema::MailboxPolicy::DROP;
      started_ = true;
      break;
    }
    case schema::ToWorker::STOP:
      stop_requested_ = true;
      break;
    case schema::ToWorker::PEERS:
      for (auto p : msg.getPeers()) update_peer(p);
      break;
    case schema::ToWorker::PEER_UP:
      update_peer(msg.getPeerUp());
      break;
    case schema::ToWorker::PEER_DOWN:
      on_peer_down(msg.getPeerDown());
      break;
    case schema::ToWorker::CHANNEL:
      on_channel(msg.getChannel());
      break;
    case schema::ToWorker::CHANNEL_REFUSED:
      peers_[msg.getChannelRefused()].refused = true;
      break;
    case schema::ToWorker::PEER_GONE:
      forget_peer(msg.getPeerGone());
      break;
    case schema::ToWorker::CHILD_RESULT: {
      auto r = msg.getChildResult();
      child_answer_ = ChildAnswer{r.getOk(), r.getChildId(), r.getError()};
      break;
    }
  }
}

void Node::update_peer(schema::PeerInfo::Reader info) {
  Peer& p = peers_[info.getSlot()];
  p.slot = info.getSlot();
  p.incarnation = info.getIncarnation();
  p.running = info.getRunning();
  p.child = info.getChildId();
  p.overflow = info.getOverflow();
  p.block_timeout = std::chrono::milliseconds(info.getBlockTimeoutMs());
  if (p.running) p.refused = false;  // a new occupant of a freed slot
  if (!p.bell.word()) p.bell = ipc::Doorbell(ipc::bell_of(board_, p.slot));
  for (const auto& n : p.names) {
    auto it = names_.find(n);
    if (it != names_.end() && it->second.first == p.slot) names_.erase(it);
  }
  ++names_version_;
  p.names.clear();
  auto names = info.getActorNames();
  for (unsigned i = 0; i < names.size(); ++i) {
    p.names.emplace_back(names[i].cStr());
    if (!p.names.back().empty()) names_[p.names.back()] = {p.slot, i};
  }
}

void Node::forget_peer(std::uint32_t slot) {
  // The slot is free (its peerDown came first): replies it sent have been
  // taken; its rings are not ours any more.  The Peer entry stays (a handler
  // up the stack may hold a reference to it) but is reset, so a new
  // occupant gets fresh channels, made on first use.
  for (auto& in : inbound_) {
    if (in->peer == slot) in->dead = true;
  }
  Peer* pit = peers_.find(slot);
  if (pit == nullptr) return;
  Peer& p = *pit;
  for (const auto& n : p.names) {
    auto it = names_.find(n);
    if (it != names_.end() && it->second.first == slot) names_.erase(it);
  }
  ++names_version_;
  p.names.clear();
  p.running = false;
  p.refused = false;
  p.sequence = 0;
  p.out = ipc::RingProducer{};
  p.stats = nullptr;
  p.out_seg.reset();
}

void Node::drain_replies_from(std::uint32_t slot) {
  // Everything the dead peer published is visible now (its last publication
  // happened before its exit, which happened before this peerDown).  Replies
  // complete their calls; anything else is kept, in order, for its actor.
  for (auto& in : inbound_) {
    if (in->peer != slot || in->dead) continue;
    ipc::Frame f;
    while (in->ring.try_peek(f) == ipc::PopStatus::ok) {
      auto words = copy_words(f.payload);
      std::uint32_t kind = f.kind;
      in->ring.release();
      if (kind != schema::kEnvelopeFrame) continue;
      auto bytes = as_bytes(words);
      std::optional<std::uint32_t> hold_for;
      (void)schema::read_envelope(bytes, {}, [&](schema::Envelope::Reader env) {
        if (env.getKind() == schema::Kind::REPLY) {
          deliver(parts_of(env), slot, bytes);
        } else {
          hold_for = env.getDestination().getActor();
        }
      });
      if (hold_for) held_.push_back(Held{*hold_for, slot, kj::mv(words)});
    }
  }
}

void Node::on_peer_down(schema::PeerDown::Reader down) {
  const std::uint32_t slot = down.getSlot(), inc = down.getIncarnation();
  drain_replies_from(slot);
  Peer* pit = peers_.find(slot);
  if (pit != nullptr && pit->incarnation == inc) pit->running = false;
  std::string why = describe(down.getReason());
  for (auto& [corr, p] : pending_) {
    if (p.done || p.slot != slot || (p.stamp != inc && p.stamp != 0)) continue;
    p.done = true;
    p.result->error_ = CallError::callee_died;
    p.result->text_ = fmt::format("callee {} (slot {}, incarnation {}) died: {}",
                                  pit != nullptr ? pit->child : "?", slot, inc, why);
  }
  // Links: an exit signal for each local actor linked to the dead incarnation.
  const bool quiet = down.getReason().isNormal() || down.getReason().isShutdown();
  for (auto it = links_.begin(); it != links_.end();) {
    if (it->remote.worker != slot || it->remote.incarnation != inc) {
      ++it;
      continue;
    }
    const std::uint32_t local = it->local;
    if (local < trapping_.size() && trapping_[local]) {
      capnp::MallocMessageBuilder mb;
      auto e = mb.initRoot<schema::Envelope>();
      e.setKind(schema::Kind::EXIT);
      set_ref(e.initSource(), it->remote);
      set_ref(e.initDestination(), ActorRef{slot_, incarnation_, local});
      e.getPayload().setExitReason(down.getReason());
      held_.push_back(Held{local, slot, capnp::messageToFlatArray(mb)});
    } else if (!quiet && !linked_death_) {
      std::string name = actors_ && local < actors_->size() ? (*actors_)[local]->name() : "";
      std::string remote = pit != nullptr && it->remote.actor < pit->names.size()
                               ? pit->names[it->remote.actor]
                               : "";
      linked_death_ = LinkedDeath{
          name, fmt::format("linked actor {} in {} exited: {}", remote.empty() ? "?" : remote,
                            pit != nullptr ? pit->child : "?", why)};
    }
    it = links_.erase(it);
  }
  for (auto it = monitors_.begin(); it != monitors_.end();) {
    const Monitor& m = it->second;
    if (m.target.worker != slot || (m.target.incarnation != inc && m.target.incarnation != 0)) {
      ++it;
      continue;
    }
    capnp::MallocMessageBuilder mb;
    auto e = mb.initRoot<schema::Envelope>();
    e.setKind(schema::Kind::DOWN);
    set_ref(e.initSource(), ActorRef{slot, inc, m.target.actor});
    set_ref(e.initDestination(), ActorRef{slot_, incarnation_, m.watcher});
    e.setCorrelationId(it->first);  // the monitor reference
    e.getPayload().setExitReason(down.getReason());
    held_.push_back(Held{m.watcher, slot, capnp::messageToFlatArray(mb)});
    it = monitors_.erase(it);
  }
}

void Node::on_channel(schema::ChannelInfo::Reader info) {
  // The fd was sent on the control socket just before this message.
  alignas(8) std::byte buf[256];
  std::size_t len = 0;
  ipc::UniqueFd fd;
  auto st = ipc::recv_packet_with_fd(control_fd_, buf, len, fd);
  if (st != ipc::RecvStatus::ok || !fd) {
    throw std::runtime_error("channel announced but no fd on the control socket");
  }
  const std::uint32_t peer = info.getPeer();
  std::string name = info.getOutbound() ? fmt::format("channel {}->{}", slot_, peer)
                                        : fmt::format("channel {}->{}", peer, slot_);
  ipc::Segment seg = ipc::Segment::adopt_fd(std::move(fd), name);
  ipc::ChannelView view = ipc::attach_channel(seg);
  if (info.getOutbound()) {
    if (view.producer_slot != slot_ || view.consumer_slot != peer) {
      throw std::runtime_error(name + ": the segment names other ends");
    }
    Peer& p = peers_[peer];
    p.slot = peer;
    if (!p.bell.word()) p.bell = ipc::Doorbell(ipc::bell_of(board_, peer));
    p.out = ipc::RingProducer(view.ring, name, &p.bell);
    p.stats = view.stats;
    p.out_seg = std::move(seg);
  } else {
    if (view.producer_slot != peer || view.consumer_slot != slot_) {
      throw std::runtime_error(name + ": the segment names other ends");
    }
    for (auto& old : inbound_) {
      if (old->peer == peer) old->dead = true;
    }
    auto in = std::make_unique<Inbound>(Inbound{peer, std::move(seg), {}});
    in->ring = ipc::RingConsumer(view.ring, name);
    if (drop_mailbox_ && actors_ == nullptr) {
      // mailbox = "drop": what was queued before this incarnation is discarded.
      ipc::Frame f;
      while (in->ring.try_peek(f) == ipc::PopStatus::ok) in->ring.release();
    }
    inbound_.push_back(std::move(in));
  }
}

bool Node::ensure_channel(Peer& p) {
  if (p.out.attached() && !p.out.broken()) return true;
  if (p.refused) return false;
  capnp::MallocMessageBuilder mb(16);
  mb.initRoot<schema::ToSupervisor>().setOpenChannel(p.slot);
  auto words = capnp::messageToFlatArray(mb);
  if (!ipc::send_packet(control_fd_, as_bytes(words))) return false;
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  while (!p.out.attached()) {
    if (p.refused) return false;
    if (!waiter_.wait([&] { return control_.readable(); }, deadline)) return false;
    handle_control();
  }
  return true;
}

void Node::report_broken(std::uint32_t peer, const std::string& detail) {
  std::fprintf(stderr, "bulkhead: channel from slot %u broken: %s\n", peer, detail.c_str());
  capnp::MallocMessageBuilder mb;
  auto b = mb.initRoot<schema::ToSupervisor>().initBrokenChannel();
  b.setPeer(peer);
  b.setDetail(detail);
  if (Peer* pit = peers_.find(peer); pit != nullptr) {
    b.setProducerIncarnation(pit->incarnation);
  }
  auto words = capnp::messageToFlatArray(mb);
  (void)ipc::send_packet(control_fd_, as_bytes(words));
}

// --- sending ----------------------------------------------------------------

std::optional<Node::Resolved> Node::resolve(const Target& t) const {
  if (const auto* name = std::get_if<std::string>(&t)) {
    if (last_name_version_ != names_version_ || *name != last_name_) {
      auto it = names_.find(*name);
      if (it == names_.end()) return std::nullopt;
      last_name_ = *name;
      last_entry_ = it->second;
      last_name_version_ = names_version_;
    }
    const Peer* p = peers_.find(last_entry_.first);
    std::uint32_t stamp = (p != nullptr && p->running) ? p->incarnation : 0;
    return Resolved{last_entry_.first, last_entry_.second, stamp};
  }
  const auto& ref = std::get<ActorRef>(t);
  const Peer* p = peers_.find(ref.worker);
  if (p == nullptr) return std::nullopt;
  // A reference to an incarnation that is gone names nobody (noproc).
  if (ref.incarnation != 0 && (ref.incarnation != p->incarnation || !p->running)) {
    return std::nullopt;
  }
  std::uint32_t stamp = ref.incarnation;
  if (stamp == 0 && p->running) stamp = p->incarnation;
  return Resolved{ref.worker, ref.actor, stamp};
}

std::size_t Node::next_reserve(std::size_t used) {
  // Room for what the last message needed plus a little: the builder zeroes
  // all of it, so reserving much more than needed costs time on every send.
  return std::clamp<std::size_t>((used + 64 + 63) & ~std::size_t{63}, 128, 8192);
}

SendStatus Node::on_full(Peer& p, BlockState& block, std::size_t need) {
  if (p.overflow == schema::Overflow::FAIL) {
    if (p.stats) bump(p.stats->failed);
    return SendStatus::overflow;
  }
  if (p.overflow == schema::Overflow::DROP) {
    if (p.stats) bump(p.stats->dropped);
    return SendStatus::dropped;
  }
  if (!block.counted) {
    block.counted = true;
    block.deadline = Clock::now() + p.block_timeout;
    if (p.stats) bump(p.stats->blocked);
  }
  auto area = p.out.reserve(need, *block.deadline);
  if (area.data() == nullptr) {
    if (p.stats) bump(p.stats->failed);
    return p.out.status() == ipc::PushStatus::timeout ? SendStatus::timeout : SendStatus::broken;
  }
  return SendStatus::ok;  // room now: try again
}

SendStatus Node::published(Peer& p) {
  ++p.sequence;
  // We are the only writer of our channel's counters (the supervisor only
  // reads them): a load and a store, not a locked read-modify-write.
  if (p.stats) bump(p.stats->sent);
  return SendStatus::ok;
}

SendStatus Node::failed(Peer& p, ipc::PushStatus st) {
  if (p.stats) bump(p.stats->failed);
  return st == ipc::PushStatus::too_big ? SendStatus::overflow : SendStatus::broken;
}

void Node::loopback(kj::Array<capnp::word> words) {
  schema::Kind kind = schema::Kind::INFO;
  std::uint32_t actor = 0;
  schema::read_message(as_bytes(words), {}, [&](capnp::MessageReader& r) {
    auto env = r.getRoot<schema::Envelope>();
    kind = env.getKind();
    actor = env.getDestination().getActor();
    if (kind == schema::Kind::REPLY) deliver(parts_of(env), slot_, as_bytes(words));
  });
  if (kind != schema::Kind::REPLY) held_.push_back(Held{actor, slot_, kj::mv(words)});
}

template <class Fill>
SendStatus Node::publish(Peer& p, Fill&& fill) {
  // Built in private memory (hot in our cache), then pushed with one copy:
  // the consumer polls the frame header (ipc/ring.hpp), so building in the
  // frame itself would have its polls pull the lines away field by field.
  alignas(8) std::byte area[kFirstSegmentBytes];
  schema::FlatBuilder b(std::span<std::byte>(area).first(std::min(p.reserve_bytes, sizeof area)));
  auto e = b.init_root<schema::Envelope>();
  fill(e);
  e.setSequence(static_cast<std::uint32_t>(p.sequence + 1));
  if (std::size_t n = b.finish()) {
    p.reserve_bytes = next_reserve(n);
    return publish_bytes(p, {area, n});  // (or the local queue, for our own actors)
  }
  // Bigger than the reservation: flatten on the heap and push a copy.
  auto words = b.flatten();
  p.reserve_bytes = next_reserve(words.size() * sizeof(capnp::word));
  return publish_bytes(p, as_bytes(words));
}

SendStatus Node::publish_bytes(Peer& p, std::span<const std::byte> bytes, BlockState* block) {
  if (p.slot == slot_) {
    loopback(copy_words(bytes));
    ++p.sequence;
    return SendStatus::ok;
  }
  if (!ensure_channel(p)) return p.refused ? SendStatus::noproc : SendStatus::broken;
  BlockState own;
  if (block == nullptr) block = &own;
  for (;;) {
    auto st = p.out.try_push(schema::kEnvelopeFrame, bytes);
    if (st == ipc::PushStatus::ok) return published(p);
    if (st != ipc::PushStatus::full) return failed(p, st);
    if (auto s2 = on_full(p, *block, bytes.size()); s2 != SendStatus::ok) return s2;
  }
}

SendStatus Node::send(std::uint32_t from_actor, const Target& to, schema::Kind kind,
                      const PayloadFn& payload) {
  auto r = resolve(to);
  if (!r) return SendStatus::noproc;
  Peer& p = peers_[r->slot];
  return publish(p, [&](schema::Envelope::Builder e) {
    e.setKind(kind);
    set_ref(e.initDestination(),
            ActorRef{r->slot, kind == schema::Kind::CALL ? r->stamp : 0, r->actor});
    set_ref(e.initSource(), ActorRef{slot_, incarnation_, from_actor});
    payload(e.getPayload());
  });
}

CallResult Node::call(std::uint32_t from_actor, const Target& to, const PayloadFn& request,
                      std::chrono::milliseconds timeout) {
  CallResult out;
  auto r = resolve(to);
  if (!r) {
    out.error_ = CallError::noproc;
    out.text_ = std::holds_alternative<std::string>(to)
                    ? fmt::format("no actor is registered as '{}'", std::get<std::string>(to))
                    : fmt::format("no worker in slot {}", std::get<ActorRef>(to).worker);
    return out;
  }
  const auto deadline = Clock::now() + timeout;
  const std::uint64_t corr = next_correlation_++;
  pending_.emplace_back(corr, Pending{r->slot, r->stamp, false, &out});
  Peer& p = peers_[r->slot];
  SendStatus st = publish(p, [&](schema::Envelope::Builder e) {
    e.setKind(schema::Kind::CALL);
    set_ref(e.initDestination(), ActorRef{r->slot, r->stamp, r->actor});
    set_ref(e.initSource(), ActorRef{slot_, incarnation_, from_actor});
    e.setCorrelationId(corr);
    e.setDeadlineNs(deadline_ns(deadline));
    request(e.getPayload());
  });
  if (st != SendStatus::ok) {
    pending_.erase(find_pending(corr));
    out.error_ = st == SendStatus::noproc ? CallError::noproc : CallError::overflow;
    out.text_ = fmt::format("call not sent: {}", to_string(st));
    return out;
  }
  // The pending entry points at `out`: it goes when this call ends, however
  // it ends (a late reply then finds no pending call and is dropped).
  struct Forget {
    Node& node;
    std::uint64_t corr;
    ~Forget() {
      if (auto it = node.find_pending(corr); it != node.pending_.end()) node.pending_.erase(it);
    }
  } forget{*this, corr};
  ++depth_;
  for (bool first = true;; first = false) {
    if (find_pending(corr)->second.done) break;
    if (!first && Clock::now() >= deadline) {  // `deadline` was read just now on the first pass
      out.error_ = CallError::timeout;
      out.text_ = fmt::format("no reply within {} ms", timeout.count());
      break;
    }
    if (wait(deadline)) dispatch_available();
  }
  --depth_;
  return out;
}

SendStatus Node::reply(std::uint32_t from_actor, const From& from, const PayloadFn& answer) {
  Peer* pit = peers_.find(from.caller.worker);
  if (pit == nullptr) return SendStatus::noproc;
  return publish(*pit, [&](schema::Envelope::Builder e) {
    e.setKind(schema::Kind::REPLY);
    set_ref(e.initDestination(), from.caller);
    set_ref(e.initSource(), ActorRef{slot_, incarnation_, from_actor});
    e.setCorrelationId(from.correlation);
    answer(e.getPayload());
  });
}

void Node::send_error_reply(std::uint32_t sender_slot, schema::Envelope::Reader call,
                            schema::ErrorCode code, const std::string& text) {
  Peer* pit = peers_.find(sender_slot);
  if (pit == nullptr) return;
  ActorRef caller{sender_slot, call.getSource().getIncarnation(), call.getSource().getActor()};
  std::uint64_t corr = call.getCorrelationId();
  (void)publish(*pit, [&](schema::Envelope::Builder e) {
    e.setKind(schema::Kind::REPLY);
    set_ref(e.initDestination(), caller);
    set_ref(e.initSource(), ActorRef{slot_, incarnation_, call.getDestination().getActor()});
    e.setCorrelationId(corr);
    auto err = e.getPayload().initError();
    err.setCode(code);
    err.setMessage(text);
  });
}

void Node::reply_bad_message(std::uint32_t sender_slot, std::span<const std::byte> bytes,
                             const std::string& why) {
  // If the header can still be read and it is a call, its caller is told at
  // once (bad_message) instead of waiting for its deadline.
  std::uint64_t corr = 0;
  std::uint32_t caller_inc = 0, caller_actor = 0, dest_actor = 0;
  bool is_call = false;
  (void)schema::read_message(bytes, {}, [&](capnp::MessageReader& r) {
    auto e = r.getRoot<schema::Envelope>();
    if (e.getKind() != schema::Kind::CALL) return;
    corr = e.getCorrelationId();
    caller_inc = e.getSource().getIncarnation();
    caller_actor = e.getSource().getActor();
    dest_actor = e.getDestination().getActor();
    is_call = true;
  });
  Peer* pit = peers_.find(sender_slot);
  if (!is_call || pit == nullptr) return;
  (void)publish(*pit, [&](schema::Envelope::Builder e) {
    e.setKind(schema::Kind::REPLY);
    set_ref(e.initDestination(), ActorRef{sender_slot, caller_inc, caller_actor});
    set_ref(e.initSource(), ActorRef{slot_, incarnation_, dest_actor});
    e.setCorrelationId(corr);
    auto err = e.getPayload().initError();
    err.setCode(schema::ErrorCode::BAD_MESSAGE);
    err.setMessage("the call was rejected: " + why);
  });
}

std::string Node::request_child(bool start, const std::string& path,
                                std::chrono::milliseconds timeout) {
  capnp::MallocMessageBuilder mb;
  auto m = mb.initRoot<schema::ToSupervisor>();
  if (start) {
    m.setStartChild(path);
  } else {
    m.setTerminateChild(path);
  }
  auto words = capnp::messageToFlatArray(mb);
  child_answer_.reset();
  if (!ipc::send_packet(control_fd_, as_bytes(words))) {
    throw std::runtime_error("the supervisor is gone");
  }
  const auto deadline = Clock::now() + timeout;
  while (!child_answer_) {
    if (!waiter_.wait([&] { return control_.readable(); }, deadline)) {
      throw std::runtime_error("no answer from the supervisor within the timeout");
    }
    handle_control();
  }
  ChildAnswer a = std::move(*child_answer_);
  child_answer_.reset();
  if (!a.ok) throw std::runtime_error(a.error);
  return a.id;
}

std::optional<ActorRef> Node::whereis(std::string_view name) const {
  auto it = names_.find(std::string(name));
  if (it == names_.end()) return std::nullopt;
  const Peer* p = peers_.find(it->second.first);
  std::uint32_t inc = (p != nullptr && p->running) ? p->incarnation : 0;
  return ActorRef{it->second.first, inc, it->second.second};
}

MonitorRef Node::monitor(std::uint32_t watcher, const Target& target) {
  MonitorRef ref{next_monitor_++};
  auto r = resolve(target);
  Peer* p = r ? peers_.find(r->slot) : nullptr;
  if (p == nullptr || !p->running) {
    // Already gone (or never was): DOWN at once, reason noproc.
    capnp::MallocMessageBuilder mb;
    auto e = mb.initRoot<schema::Envelope>();
    e.setKind(schema::Kind::DOWN);
    if (r) set_ref(e.initSource(), ActorRef{r->slot, 0, r->actor});
    e.setCorrelationId(ref.id);
    e.getPayload().initExitReason().setStartFailure("noproc: no such actor is running");
    held_.push_back(Held{watcher, slot_, capnp::messageToFlatArray(mb)});
    return ref;
  }
  monitors_[ref.id] = Monitor{watcher, ActorRef{r->slot, p->incarnation, r->actor}};
  return ref;
}

void Node::demonitor(MonitorRef ref) {
  monitors_.erase(ref.id);
}

void Node::trap_exit(std::uint32_t local, bool on) {
  if (trapping_.size() <= local) trapping_.resize(local + 1, false);
  trapping_[local] = on;
}

SendStatus Node::link(std::uint32_t local, const Target& target, bool set) {
  auto r = resolve(target);
  if (!r) return SendStatus::noproc;
  Peer* p = peers_.find(r->slot);
  if (p == nullptr || !p->running) return SendStatus::noproc;
  ActorRef remote{r->slot, p->incarnation, r->actor};
  std::erase_if(links_, [&](const Link& l) { return l.local == local && l.remote == remote; });
  if (set) links_.push_back(Link{local, remote});
  // The other end records (or forgets) the link too: a control envelope.
  return publish(*p, [&](schema::Envelope::Builder e) {
    e.setKind(schema::Kind::CONTROL);
    set_ref(e.initDestination(), remote);
    set_ref(e.initSource(), ActorRef{slot_, incarnation_, local});
    e.getPayload().initValue().setSymbol(set ? "link" : "unlink");
  });
}

// --- receiving --------------------------------------------------------------

std::size_t Node::drain_inbound(Inbound& in) {
  // At most kDrainBatch frames per ring per pass: one busy sender must not
  // starve the other rings or the control ring (peerDown, stop).  What is
  // left keeps the ring readable, so the next wait returns at once.
  constexpr std::size_t kDrainBatch = 64;
  std::size_t n = 0;
  ipc::Frame f;
  while (n < kDrainBatch && !in.dead) {
    auto st = in.ring.try_peek(f);
    if (st == ipc::PopStatus::empty) return n;
    if (st == ipc::PopStatus::broken) {
      in.dead = true;  // freed at depth 0: an outer drain may be inside it
      report_broken(in.peer, in.ring.fault().describe());
      return n;
    }
    // Copy the frame out and release it before any handler runs: a handler
    // may call() and need later frames of this very ring (the reply), and
    // the producer cannot change what we validate.
    if (t_scratch.size() <= static_cast<std::size_t>(depth_)) t_scratch.resize(depth_ + 1);
    const std::uint32_t kind = f.kind;
    auto bytes = t_scratch[depth_].hold(f.payload);
    in.ring.release();
    ++n;
    if (kind != schema::kEnvelopeFrame) {
      std::fprintf(stderr, "bulkhead: dropped a frame of unknown kind %u from slot %u\n", kind,
                   in.peer);
      continue;
    }
    const std::uint32_t peer = in.peer;
    ++depth_;  // the scratch of this depth is in use until deliver returns
    struct Depth {
      int& d;
      ~Depth() { --d; }
    } restore{depth_};
    auto err = schema::read_envelope(
        bytes, {}, [&](const schema::EnvelopeParts& m) { deliver(m, peer, bytes); });
    if (err) {
      std::fprintf(stderr, "bulkhead: dropped a garbage message from slot %u: %s\n", peer,
                   err->what.c_str());
      reply_bad_message(peer, bytes, err->what);
    }
  }
  return n;
}

void Node::deliver(const schema::EnvelopeParts& m, std::uint32_t sender_slot,
                   std::span<const std::byte> bytes) {
  const schema::Envelope::Reader env = m.envelope;
  const schema::Kind kind = env.getKind();
  switch (kind) {
    case schema::Kind::REPLY: {
      // A reply to an earlier incarnation of this worker (its caller died,
      // the mailbox was kept) must not complete a call of this one: the
      // correlation ids start again at 1 in every incarnation.
      const std::uint32_t to_incarnation = env.getDestination().getIncarnation();
      if (to_incarnation != 0 && to_incarnation != incarnation_) return;
      auto it = find_pending(env.getCorrelationId());
      if (it == pending_.end() || it->second.done || it->second.slot != sender_slot) return;
      Pending& p = it->second;
      p.done = true;
      auto payload = env.getPayload();
      if (payload.isError()) {
        p.result->error_ = from_code(payload.getError().getCode());
        p.result->text_ = payload.getError().getMessage();
      } else {
        p.result->set_words(bytes, m.plain);
      }
      return;
    }
    case schema::Kind::CALL:
    case schema::Kind::CAST:
    case schema::Kind::INFO: {
      const auto dest = env.getDestination();
      const std::uint32_t idx = dest.getActor();
      if (actors_ == nullptr || idx >= actors_->size()) {
        if (kind == schema::Kind::CALL) {
          send_error_reply(sender_slot, env, schema::ErrorCode::NOPROC,
                           fmt::format("slot {} has no actor {}", slot_, idx));
        }
        return;
      }
      const std::uint32_t stamp = dest.getIncarnation();
      if (kind == schema::Kind::CALL && stamp != 0 && stamp != incarnation_) {
        // Meant for an incarnation that died: say so (its caller may not
        // have heard of the death yet).
        send_error_reply(
            sender_slot, env, schema::ErrorCode::NOPROC,
            fmt::format("incarnation {} of slot {} is gone (now {})", stamp, slot_, incarnation_));
        return;
      }
      if (busy_[idx] > 0 ||
          (!held_.empty() && std::any_of(held_.begin(), held_.end(),
                                         [&](const Held& h) { return h.actor == idx; }))) {
        held_.push_back(Held{idx, sender_slot, copy_words(bytes)});
        return;
      }
      Message msg(env);
      const auto src = env.getSource();
      msg.sender_ = ActorRef{sender_slot, src.getIncarnation(), src.getActor()};
      msg.value_ = m.value;
      msg.has_value_ = m.has_value;
      invoke(idx, msg);
      return;
    }
    case schema::Kind::CONTROL: {
      // link / unlink from a peer actor: bookkeeping only, no handler runs.
      auto p = env.getPayload();
      if (!p.isValue() || p.getValue().which() != schema::Value::SYMBOL) return;
      std::string_view op(p.getValue().getSymbol().cStr(), p.getValue().getSymbol().size());
      const std::uint32_t local = env.getDestination().getActor();
      ActorRef remote{sender_slot, env.getSource().getIncarnation(), env.getSource().getActor()};
      std::erase_if(links_, [&](const Link& l) { return l.local == local && l.remote == remote; });
      if (op == "link" && actors_ != nullptr && local < actors_->size()) {
        links_.push_back(Link{local, remote});
      }
      return;
    }
    default:
      return;  // down/exit travel only as locally made messages
  }
}

void Node::invoke(std::uint32_t idx, const Message& msg) {
  try {
    run_handler(idx, msg);
  } catch (...) {
    // The innermost failing handler is the one to name (nested calls unwind
    // through their callers' handlers too).
    if (!failed_actor_) failed_actor_ = idx;
    throw;
  }
}

void Node::run_handler(std::uint32_t idx, const Message& msg) {
  Actor& a = *(*actors_)[idx];
  struct Busy {
    int& n;
    explicit Busy(int& x) : n(x) { ++n; }
    ~Busy() { --n; }
  } busy(busy_[idx]);
  switch (msg.kind()) {
    case schema::Kind::CALL: {
      From from{msg.sender(), msg.envelope().getCorrelationId()};
      Peer* pit = peers_.find(from.caller.worker);
      if (pit == nullptr) return;
      Peer& caller = *pit;
      // The reply envelope is built once, header first, in scratch memory
      // (the handler may call(), which uses the channels), then pushed with
      // one copy.
      if (reply_scratch_.size() <= static_cast<std::size_t>(depth_)) {
        reply_scratch_.resize(depth_ + 1);
      }
      auto& scratch = reply_scratch_[depth_];
      scratch.resize(reply_reserve_ / sizeof(capnp::word));
      std::span<std::byte> area{reinterpret_cast<std::byte*>(scratch.data()),
                                scratch.size() * sizeof(capnp::word)};
      schema::FlatBuilder b(area);
      auto e = b.init_root<schema::Envelope>();
      e.setKind(schema::Kind::REPLY);
      set_ref(e.initDestination(), from.caller);
      set_ref(e.initSource(), ActorRef{slot_, incarnation_, idx});
      e.setCorrelationId(from.correlation);
      Reply reply(e);
      a.handle_call(msg, from, reply);
      if (!reply.answered()) return;  // deferred: ctx().reply(from, ...) later
      e.setSequence(static_cast<std::uint32_t>(caller.sequence + 1));
      if (std::size_t n = b.finish()) {
        reply_reserve_ = next_reserve(n);
        (void)publish_bytes(caller, {area.data(), n});
      } else {
        auto words = b.flatten();
        reply_reserve_ = next_reserve(words.size() * sizeof(capnp::word));
        (void)publish_bytes(caller, as_bytes(words));
      }
      return;
    }
    case schema::Kind::CAST:
      a.handle_cast(msg);
      return;
    default:
      a.handle_info(msg);
      return;
  }
}

void Node::deliver_held() {
  bool progress = true;
  while (progress && !held_.empty()) {
    progress = false;
    std::vector<std::uint32_t> blocked;
    for (auto it = held_.begin(); it != held_.end(); ++it) {
      std::uint32_t idx = it->actor;
      if (std::find(blocked.begin(), blocked.end(), idx) != blocked.end()) continue;
      if (actors_ == nullptr || idx >= actors_->size()) {
        held_.erase(it);
        progress = true;
        break;
      }
      if (busy_[idx] > 0) {
        blocked.push_back(idx);
        continue;
      }
      Held h = std::move(*it);
      held_.erase(it);
      auto bytes = as_bytes(h.words);
      schema::read_message(bytes, {}, [&](capnp::MessageReader& r) {
        auto env = r.getRoot<schema::Envelope>();
        if (env.getKind() == schema::Kind::CALL && env.getDestination().getIncarnation() != 0 &&
            env.getDestination().getIncarnation() != incarnation_) {
          return;
        }
        Message msg(env);
        msg.sender_ =
            ActorRef{h.sender_slot, env.getSource().getIncarnation(), env.getSource().getActor()};
        invoke(idx, msg);
      });
      progress = true;
      break;  // held_ may have changed: start over
    }
  }
}

// --- small API pieces -------------------------------------------------------

std::vector<std::pair<std::uint64_t, Node::Pending>>::iterator Node::find_pending(
    std::uint64_t corr) {
  return std::find_if(pending_.begin(), pending_.end(),
                      [corr](const auto& e) { return e.first == corr; });
}

schema::Value::Reader Message::value() const {
  if (has_value_) return value_;
  auto p = env_.getPayload();
  if (!p.isValue()) throw std::invalid_argument("message payload is not a Value");
  return p.getValue();
}

CallResult& CallResult::operator=(CallResult&& o) noexcept {
  if (this == &o) return *this;
  reader_.reset();
  o.reader_.reset();
  error_ = o.error_;
  text_ = std::move(o.text_);
  n_words_ = o.n_words_;
  plain_ = o.plain_;
  heap_ = kj::mv(o.heap_);
  if (n_words_ <= kInlineWords && n_words_ != 0) {
    std::memcpy(inline_.data(), o.inline_.data(), n_words_ * sizeof(capnp::word));
  }
  o.n_words_ = 0;
  return *this;
}

void CallResult::set_words(std::span<const std::byte> bytes, bool plain) {
  reader_.reset();
  plain_ = plain;
  n_words_ = (bytes.size() + sizeof(capnp::word) - 1) / sizeof(capnp::word);
  capnp::word* dst = inline_.data();
  if (n_words_ > kInlineWords) {
    heap_ = kj::heapArray<capnp::word>(n_words_);
    dst = heap_.begin();
  }
  if (n_words_ != 0) {
    dst[n_words_ - 1] = capnp::word{};  // zero the padding of a partial last word
    std::memcpy(dst, bytes.data(), bytes.size());
  }
}

kj::ArrayPtr<const capnp::word> CallResult::words() const {
  return {n_words_ > kInlineWords ? heap_.begin() : inline_.data(), n_words_};
}

Message CallResult::reply() const {
  if (!ok()) throw std::logic_error("CallResult::reply() on a failed call");
  // The words were validated on arrival.  A plain message (schema/codec.hpp)
  // is read unchecked, as it was on arrival (its root follows the one-word
  // segment table); another through a checked reader.
  auto w = words();
  if (plain_) return Message(capnp::readMessageUnchecked<schema::Envelope>(w.begin() + 1));
  if (!reader_) reader_.emplace(w);
  return Message(reader_->getRoot<schema::Envelope>());
}

schema::Envelope::Payload::Builder Reply::payload() {
  answered_ = true;
  return env_.getPayload();
}

void Actor::handle_call(const Message&, const From&, Reply& reply) {
  auto err = reply.payload().initError();
  err.setCode(schema::ErrorCode::HANDLER_ERROR);
  err.setMessage("actor '" + name() + "' (" + type() + ") does not handle calls");
}

const char* to_string(CallError e) {
  switch (e) {
    case CallError::none:
      return "ok";
    case CallError::noproc:
      return "noproc";
    case CallError::timeout:
      return "timeout";
    case CallError::callee_died:
      return "callee_died";
    case CallError::bad_message:
      return "bad_message";
    case CallError::overflow:
      return "overflow";
    case CallError::handler_error:
      return "handler_error";
  }
  return "?";
}

const char* to_string(SendStatus s) {
  switch (s) {
    case SendStatus::ok:
      return "ok";
    case SendStatus::noproc:
      return "noproc";
    case SendStatus::overflow:
      return "overflow";
    case SendStatus::dropped:
      return "dropped";
    case SendStatus::timeout:
      return "timeout";
    case SendStatus::broken:
      return "broken";
  }
  return "?";
}

}  // namespace bulkhead::worker
