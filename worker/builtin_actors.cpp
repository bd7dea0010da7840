#include "worker/builtin_actors.hpp"

#include <capnp/any.h>
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "ipc/channel.hpp"
#include "ipc/mailbox.hpp"
#include "ipc/ring.hpp"
#include "ipc/segment.hpp"
#include "ipc/sys.hpp"
#include "schema/codec.hpp"
#include "schema/value_util.hpp"

namespace bulkhead::worker {
namespace {

using schema::is_symbol;
using schema::map_get_int;
using schema::map_get_text;
using schema::Value;

std::string text_of(Value::Reader v) {
  switch (v.which()) {
    case Value::SYMBOL:
      return v.getSymbol();
    case Value::TEXT:
      return v.getText();
    case Value::INT:
      return std::to_string(v.getInt());
    default:
      return "(value)";
  }
}

// The i-th element of a tuple request, or throws.
Value::Reader arg(Value::Reader v, unsigned i) {
  if (v.which() != Value::TUPLE || v.getTuple().size() <= i) {
    throw std::invalid_argument("expected a tuple with at least " + std::to_string(i + 1) +
                                " elements");
  }
  return v.getTuple()[i];
}

bool is_op(Value::Reader v, const char* op) {
  return is_symbol(v, op) ||
         (v.which() == Value::TUPLE && v.getTuple().size() > 0 && is_symbol(v.getTuple()[0], op));
}

class Echo : public Actor {
 public:
  void handle_call(const Message& req, const From&, Reply& reply) override {
    // Any payload comes back as it came: a Value or the caller's own struct.
    auto in = req.envelope().getPayload();
    auto out = reply.payload();
    switch (in.which()) {
      case schema::Envelope::Payload::VALUE:
        out.setValue(in.getValue());
        break;
      case schema::Envelope::Payload::TYPED:
        out.setTyped(in.getTyped());
        break;
      default:
        out.setNone();
        break;
    }
  }
  void handle_cast(const Message& msg) override { log("cast", msg); }
  void handle_info(const Message& msg) override { log("info", msg); }

 private:
  void log(const char* what, const Message& msg) {
    std::printf("[%s] %s %s\n", name().c_str(), what,
                msg.envelope().getPayload().isValue() ? text_of(msg.value()).c_str() : "(?)");
    std::fflush(stdout);
  }
};

class Counter : public Actor {
 public:
  void handle_cast(const Message& msg) override {
    auto v = msg.value();
    if (is_symbol(v, "inc")) {
      ++count_;
    } else if (is_op(v, "add")) {
      count_ += arg(v, 1).getInt();
    }
  }
  void handle_info(const Message&) override { ++infos_; }
  void handle_call(const Message& req, const From&, Reply& reply) override {
    if (is_symbol(req.value(), "infos")) {
      reply.value().setInt(infos_);
    } else {
      reply.value().setInt(count_);
    }
  }
  void terminate(std::string_view reason) override {
    std::printf("[%s] terminate (%.*s) after %lld infos\n", name().c_str(),
                static_cast<int>(reason.size()), reason.data(), infos_);
    std::fflush(stdout);
  }

 private:
  long long count_ = 0;
  long long infos_ = 0;
};

class Crasher : public Actor {
 public:
  void init(Value::Reader args) override {
    mode_ = std::string(map_get_text(args, "mode").value_or("segv"));
    code_ = static_cast<int>(map_get_int(args, "code").value_or(3));
    // Memory to tear down when it dies, as a big worker has: ballast_mb MiB,
    // touched so that it is really mapped.
    const auto ballast = static_cast<std::size_t>(map_get_int(args, "ballast_mb").value_or(0));
    if (ballast > 0 && ballast <= 4096) ballast_.assign(ballast << 20, std::byte{1});
    if (map_get_text(args, "on").value_or("usr1") == "init") crash();
  }
  void handle_info(const Message& msg) override {
    if (msg.envelope().getPayload().isValue() && is_symbol(msg.value(), "usr1")) crash();
  }
  void handle_call(const Message& req, const From&, Reply& reply) override {
    if (is_symbol(req.value(), "crash")) crash();
    reply.value().setSymbol("ok");
  }

 private:
  // UBSan would catch the null store and exit before the signal: the point
  // here is the real SIGSEGV (sanitizer builds run with handle_segv=0).
  __attribute__((no_sanitize("undefined"))) void crash() {
    if (mode_ == "segv") {
      volatile int* volatile p = nullptr;
      *p = 42;  // a real null dereference: SIGSEGV
    } else if (mode_ == "throw") {
      throw std::runtime_error("crasher: failure requested");
    } else if (mode_ == "abort") {
      std::abort();
    } else if (mode_ == "exit") {
      std::fflush(nullptr);
      ::_exit(code_);
    }
    throw std::invalid_argument("crasher: unknown mode '" + mode_ + "'");
  }
  std::string mode_;
  int code_ = 3;
  std::vector<std::byte> ballast_;
};

class Stubborn : public Actor {
 public:
  void init(Value::Reader args) override {
    terminate_ms_ = map_get_int(args, "terminate_ms").value_or(-1);
    ::signal(SIGTERM, SIG_IGN);
  }
  void terminate(std::string_view) override {
    if (terminate_ms_ < 0) {
      for (;;) ::pause();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(terminate_ms_));
  }

 private:
  long long terminate_ms_ = -1;
};

class Slow : public Actor {
 public:
  void init(Value::Reader args) override {
    std::this_thread::sleep_for(
        std::chrono::milliseconds(map_get_int(args, "init_ms").value_or(0)));
  }
};

class Chatty : public Actor {
 public:
  void init(Value::Reader args) override {
    auto n = map_get_int(args, "lines").value_or(10);
    for (long long i = 0; i < n; ++i) std::printf("chatty line %lld\n", i);
    std::fflush(stdout);
  }
};

// Writes to stdout and stderr on init, with write(2) (no stdio buffer): for
// the output capture tests.  args: out, err (a line each), partial (stdout,
// no newline), long (a stdout line of that many 'x'), lines (that many
// numbered stdout lines).
class Printer : public Actor {
 public:
  void init(Value::Reader args) override {
    if (auto n = map_get_int(args, "lines")) {
      for (long long i = 0; i < *n; ++i) put(1, "printer line " + std::to_string(i) + "\n");
    }
    if (auto t = map_get_text(args, "out")) put(1, std::string(*t) + "\n");
    if (auto t = map_get_text(args, "err")) put(2, std::string(*t) + "\n");
    if (auto n = map_get_int(args, "long")) {
      put(1, std::string(static_cast<std::size_t>(*n), 'x') + "\nafter the long line\n");
    }
    if (auto t = map_get_text(args, "partial")) put(1, std::string(*t));
  }

 private:
  static void put(int fd, const std::string& s) {
    std::size_t done = 0;
    while (done < s.size()) {
      ssize_t n = ::write(fd, s.data() + done, s.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      done += static_cast<std::size_t>(n);
    }
  }
};

// Writes numbered lines to stdout as fast as it can, from a thread started
// by init, for as long as the worker lives.  args: stream ("out"/"err").
class Flooder : public Actor {
 public:
  void init(Value::Reader args) override {
    int fd = map_get_text(args, "stream").value_or("out") == "err" ? 2 : 1;
    std::thread([fd] {
      std::string batch;
      for (unsigned long long i = 0;; ++i) {
        batch += "flood " + std::to_string(i) + " .................................\n";
        if (batch.size() < 8192) continue;
        if (::write(fd, batch.data(), batch.size()) < 0 && errno != EINTR) return;
        batch.clear();
      }
    }).detach();
  }
};

class Relay : public Actor {
 public:
  void handle_call(const Message& req, const From&, Reply& reply) override {
    std::string to = text_of(arg(req.value(), 0));
    auto inner = arg(req.value(), 1);
    auto r = ctx().call(
        to, [&](schema::Envelope::Payload::Builder p) { p.setValue(inner); },
        std::chrono::milliseconds(2000));
    if (r.ok()) {
      reply.payload().setValue(r.value());
    } else {
      auto e = reply.payload().initError();
      e.setCode(schema::ErrorCode::HANDLER_ERROR);
      e.setMessage(std::string("relay: ") + to_string(r.error()) + ": " + r.error_text());
    }
  }
};

class Deferred : public Actor {
 public:
  void handle_call(const Message& req, const From& from, Reply& reply) override {
    // `hold`, or {hold, Tag}: no answer now; `release` answers `released`
    // (or {released, Tag}).
    auto v = req.value();
    const bool tagged = v.isTuple() && v.getTuple().size() == 2 && is_symbol(arg(v, 0), "hold");
    if (is_symbol(v, "hold") || tagged) {
      held_.push_back(
          Held{from, tagged ? std::optional<std::string>(text_of(arg(v, 1))) : std::nullopt});
      ++total_;
      return;
    }
    reply.value().setInt(total_);
  }
  void handle_cast(const Message& msg) override {
    if (!is_symbol(msg.value(), "release")) return;
    for (const auto& h : held_) {
      ctx().reply(h.from, value_payload([&](Value::Builder b) {
                    if (!h.tag) {
                      b.setSymbol("released");
                      return;
                    }
                    auto t = b.initTuple(2);
                    t[0].setSymbol("released");
                    t[1].setSymbol(*h.tag);
                  }));
    }
    held_.clear();
  }

 private:
  struct Held {
    From from;
    std::optional<std::string> tag;
  };
  std::vector<Held> held_;
  long long total_ = 0;
};

class Pinger : public Actor {
 public:
  void handle_call(const Message& req, const From&, Reply& reply) override {
    auto v = req.value();
    if (is_op(v, "ping")) {
      std::string to = text_of(arg(v, 1));
      auto n = static_cast<std::size_t>(arg(v, 2).getInt());
      auto gap = std::chrono::microseconds(arg(v, 3).getInt());
      std::vector<long long> ns;
      ns.reserve(n);
      auto ping = value_payload([](Value::Builder b) { b.setInt(42); });
      for (std::size_t i = 0; i < n; ++i) {
        if (gap.count() > 0) {
          auto until = ipc::Clock::now() + gap;
          while (ipc::Clock::now() < until) ipc::cpu_relax();
        }
        auto t0 = ipc::Clock::now();
        auto r = ctx().call(to, ping, std::chrono::milliseconds(5000));
        auto t1 = ipc::Clock::now();
        if (!r.ok()) throw std::runtime_error(std::string("ping failed: ") + r.error_text());
        ns.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
      }
      std::sort(ns.begin(), ns.end());
      auto t = reply.value().initTuple(2);
      t[0].setInt(ns[ns.size() / 2]);
      t[1].setInt(ns[std::min(ns.size() - 1, ns.size() * 99 / 100)]);
    } else if (is_op(v, "flood")) {
      std::string to = text_of(arg(v, 1));
      auto n = arg(v, 2).getInt();
      auto inc = value_payload([](Value::Builder b) { b.setSymbol("inc"); });
      auto t0 = ipc::Clock::now();
      for (long long i = 0; i < n; ++i) {
        auto st = ctx().cast(to, inc);
        if (st != SendStatus::ok) throw std::runtime_error(std::string("cast: ") + to_string(st));
      }
      auto r = ctx().call(to, value_payload([](Value::Builder b) { b.setSymbol("get"); }),
                          std::chrono::milliseconds(30000));
      auto t1 = ipc::Clock::now();
      if (!r.ok()) throw std::runtime_error(std::string("flood sync: ") + r.error_text());
      reply.value().setInt(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
    } else if (is_op(v, "monitor")) {
      ctx().monitor(text_of(arg(v, 1)));
      reply.value().setSymbol("ok");
    } else if (is_symbol(v, "downs")) {
      auto l = reply.value().initList(static_cast<unsigned>(downs_.size()));
      for (unsigned i = 0; i < downs_.size(); ++i) l[i].setText(downs_[i]);
    } else {
      throw std::invalid_argument("pinger: unknown request");
    }
  }
  void handle_info(const Message& msg) override {
    if (msg.kind() != schema::Kind::DOWN) return;
    auto r = msg.envelope().getPayload().getExitReason();
    std::string what;
    switch (r.which()) {
      case schema::ExitReason::SIGNAL:
        what = "signal " + std::to_string(r.getSignal().getNumber());
        break;
      case schema::ExitReason::EXCEPTION:
        what = std::string("exception ") + r.getException().getType().cStr();
        break;
      case schema::ExitReason::SHUTDOWN:
        what = "shutdown";
        break;
      case schema::ExitReason::NORMAL:
        what = "normal";
        break;
      case schema::ExitReason::EXIT_CODE:
        what = "exit " + std::to_string(r.getExitCode());
        break;
      default:
        what = "other";
        break;
    }
    downs_.push_back(what);
  }

 private:
  std::vector<std::string> downs_;
};

// Busy on purpose: cast (sleep, ms) blocks its handler, so its mailbox fills.
class Sleeper : public Actor {
 public:
  void handle_cast(const Message& msg) override {
    auto v = msg.value();
    if (is_op(v, "sleep")) {
      std::this_thread::sleep_for(std::chrono::milliseconds(arg(v, 1).getInt()));
    }
    ++handled_;
  }
  void handle_call(const Message&, const From&, Reply& reply) override {
    reply.value().setInt(handled_);
  }

 private:
  long long handled_ = 0;
};

}  // namespace

// --- test actors (tests/integration/messaging_test.cpp) -----------------------

namespace {

// Records the ints cast to it, in arrival order (FIFO and exactly-once checks).
class Recorder : public Actor {
 public:
  void handle_cast(const Message& msg) override {
    auto v = msg.value();
    if (v.which() == Value::INT) {
      seen_.push_back(v.getInt());
    } else if (is_op(v, "nest")) {
      // (nest, to, ms): a nested call that keeps this actor busy ~ms while
      // its mailbox keeps filling (messages are then held aside by the node).
      std::string to = text_of(arg(v, 1));
      auto ms = arg(v, 2).getInt();
      auto r = ctx().call(to, value_payload([ms](Value::Builder b) {
                            auto t = b.initTuple(2);
                            t[0].setSymbol("sleep");
                            t[1].setInt(ms);
                          }),
                          std::chrono::milliseconds(5000));
      if (!r.ok()) throw std::runtime_error("recorder: nested call failed: " + r.error_text());
    } else if (is_op(v, "monitor")) {
      ctx().monitor(text_of(arg(v, 1)));
    }
  }
  // Ints sent as infos are recorded like casts; a DOWN is recorded as -1.
  void handle_info(const Message& msg) override {
    if (msg.kind() == schema::Kind::DOWN) {
      seen_.push_back(-1);
    } else if (msg.envelope().getPayload().isValue() && msg.value().which() == Value::INT) {
      seen_.push_back(msg.value().getInt());
    }
  }
  void handle_call(const Message& req, const From&, Reply& reply) override {
    auto v = req.value();
    if (is_op(v, "sleep")) {
      std::this_thread::sleep_for(std::chrono::milliseconds(arg(v, 1).getInt()));
      reply.value().setSymbol("ok");
      return;
    }
    auto l = reply.value().initList(static_cast<unsigned>(seen_.size()));
    for (unsigned i = 0; i < seen_.size(); ++i) l[i].setInt(seen_[i]);
  }

 private:
  std::vector<long long> seen_;
};

// A second sender from inside the tree: casts or sends a run of ints.
class Feeder : public Actor {
 public:
  void handle_call(const Message& req, const From&, Reply& reply) override {
    auto v = req.value();
    const bool info = is_op(v, "info");
    if (!info && !is_op(v, "feed")) throw std::invalid_argument("feeder: unknown request");
    std::string to = text_of(arg(v, 1));
    auto from = arg(v, 2).getInt();
    auto n = arg(v, 3).getInt();
    for (long long i = 0; i < n; ++i) {
      auto p = value_payload([x = from + i](Value::Builder b) { b.setInt(x); });
      auto st = info ? ctx().send(to, p) : ctx().cast(to, p);
      if (st != SendStatus::ok) throw std::runtime_error(std::string("feeder: ") + to_string(st));
    }
    reply.value().setInt(n);
  }
};

// Writes frames the Node API cannot produce into its channel to a peer, by
// mapping that channel a second time (found through /proc/self/fd).  After a
// garble the node's own producer on that channel is stale: this worker must
// not send to that peer through ctx() again (its next incarnation may).
class Garbler : public Actor {
 public:
  void handle_call(const Message& req, const From&, Reply& reply) override {
    auto v = req.value();
    if (!is_op(v, "garble")) throw std::invalid_argument("garbler: unknown request");
    std::string to = text_of(arg(v, 1));
    std::string mode = text_of(arg(v, 2));
    auto target = ctx().whereis(to);
    if (!target) throw std::runtime_error("garbler: no actor " + to);
    const std::uint32_t self = ctx().self().worker;
    if (target->worker == self) throw std::runtime_error("garbler: target is in this worker");
    // A valid cast first: the node opens the channel (and the peer gets it).
    auto inc = value_payload([](Value::Builder b) { b.setSymbol("inc"); });
    if (auto st = ctx().cast(to, inc); st != SendStatus::ok) {
      throw std::runtime_error(std::string("garbler: cast: ") + to_string(st));
    }
    ipc::Segment chan = map_fd(fmt_label("-c", self, target->worker));
    ipc::Segment board = map_fd("-bells");
    ipc::ChannelView view = ipc::attach_channel(chan);
    if (view.producer_slot != self || view.consumer_slot != target->worker) {
      throw std::runtime_error("garbler: the channel segment names other ends");
    }
    ipc::Doorbell bell(ipc::bell_of(board, target->worker));
    if (mode == "junk") {
      reply.value().setInt(junk(view, bell, *target));
    } else if (mode == "amplify") {
      reply.value().setInt(amplify(view, bell, *target));
    } else if (mode == "break") {
      // A frame header whose length is beyond the ring: a ring protocol
      // violation (the receiver reports it; the supervisor kills us).
      auto* ctl = reinterpret_cast<ipc::RingControl*>(view.ring.data());
      std::byte* data = view.ring.data() + sizeof(ipc::RingControl);
      std::uint64_t tail = ctl->tail.load(std::memory_order_relaxed);
      std::size_t pos = tail & (ctl->capacity - 1);
      if (pos + ipc::kFrameAlign > ctl->capacity) {
        throw std::runtime_error("garbler: no room at the ring end");
      }
      // Properly stamped (published), but the length is out of bounds.
      ipc::FrameHeader h{0, 0x7ffffff0u, schema::kEnvelopeFrame};
      std::memcpy(data + pos, &h, sizeof h);
      ipc::stamp_at(data + pos).store(ipc::stamp_of(tail), std::memory_order_release);
      ctl->tail.store(tail + ipc::kFrameAlign, std::memory_order_release);
      bell.ring();
      reply.value().setSymbol("ok");
    } else {
      throw std::invalid_argument("garbler: unknown mode " + mode);
    }
  }

 private:
  static std::string fmt_label(const char* pre, std::uint32_t a, std::uint32_t b) {
    return std::string(pre) + std::to_string(a) + "." + std::to_string(b);
  }

  // Maps (again) the segment whose /proc/self/fd link ends in `suffix`.
  static ipc::Segment map_fd(const std::string& suffix) {
    DIR* d = ::opendir("/proc/self/fd");
    if (d == nullptr) throw std::runtime_error("garbler: cannot list /proc/self/fd");
    std::string found_name;
    int found = -1;
    while (dirent* e = ::readdir(d)) {
      char link[512];
      std::string path = std::string("/proc/self/fd/") + e->d_name;
      ssize_t n = ::readlink(path.c_str(), link, sizeof link - 1);
      if (n <= 0) continue;
      std::string target(link, static_cast<std::size_t>(n));
      const std::string deleted = " (deleted)";
      if (target.size() > deleted.size() &&
          target.compare(target.size() - deleted.size(), deleted.size(), deleted) == 0) {
        target.resize(target.size() - deleted.size());
      }
      if (target.find("/bulkhead-") == std::string::npos || target.size() < suffix.size() ||
          target.compare(target.size() - suffix.size(), suffix.size(), suffix) != 0) {
        continue;
      }
      found = std::atoi(e->d_name);
      found_name = target;
      break;
    }
    ::closedir(d);
    if (found < 0) throw std::runtime_error("garbler: no open segment ending in " + suffix);
    int fd = ::fcntl(found, F_DUPFD_CLOEXEC, 10);
    if (fd < 0) throw std::runtime_error("garbler: dup failed");
    return ipc::Segment::adopt_fd(ipc::UniqueFd(fd), found_name);
  }

  // Makes the pointer at `p` point where the pointer at `q` points (same
  // segment; list pointers): Cap'n Proto readers do not reject aliasing.
  static void alias(capnp::word* p, const capnp::word* q) {
    std::uint64_t w = 0;
    std::memcpy(&w, static_cast<const void*>(q), sizeof w);
    auto offset = static_cast<std::int32_t>(static_cast<std::uint32_t>(w)) >> 2;  // signed
    offset += static_cast<std::int32_t>(q - p);
    w = (w & ~std::uint64_t{0xffffffff}) | (static_cast<std::uint64_t>(offset) << 2 & 0xfffffffc) |
        (w & 3);
    std::memcpy(static_cast<void*>(p), &w, sizeof w);
  }

  // A cast envelope from this actor to `target` in `mb`; returns its value.
  schema::Value::Builder init_cast(capnp::MessageBuilder& mb, ActorRef target) {
    auto e = mb.initRoot<schema::Envelope>();
    e.setKind(schema::Kind::CAST);
    auto d = e.initDestination();
    d.setWorker(target.worker);
    d.setActor(target.actor);
    auto s = e.initSource();
    s.setWorker(ctx().self().worker);
    s.setIncarnation(ctx().self().incarnation);
    s.setActor(ctx().self().actor);
    return e.getPayload().initValue();
  }

  // The pointer section of a struct: right after its data section.
  template <class B>
  static capnp::word* pointers_of(B b) {
    return reinterpret_cast<capnp::word*>(
        capnp::AnyStruct::Builder(kj::mv(b)).getDataSection().end());
  }

  // One cast whose value is small in the ring (12 KiB) but reads as 6M
  // words: a list of 60 values that all point at one list of 100 values
  // that all point at one 8000-byte blob.  The receiver's check of the whole
  // envelope reads it once, within its traversal limit (8M words); a second
  // reading (a handler converting the value) goes past it.  Then one valid
  // cast `inc`.  Returns the number of frames written.
  long long amplify(const ipc::ChannelView& view, ipc::Doorbell& bell, ActorRef target) {
    auto cast = [&](capnp::MessageBuilder& mb) { return init_cast(mb, target); };
    capnp::MallocMessageBuilder mb(4096);  // one segment: offsets stay inside it
    auto outer = cast(mb).initList(60);
    auto inner = outer[0].initList(100);
    inner[0].initData(8000);
    for (unsigned j = 1; j < inner.size(); ++j) {
      inner[j].initData(0);
      alias(pointers_of(inner[j]), pointers_of(inner[0]));
    }
    for (unsigned i = 1; i < outer.size(); ++i) {
      outer[i].initList(0);
      alias(pointers_of(outer[i]), pointers_of(outer[0]));
    }
    if (mb.getSegmentsForOutput().size() != 1) {
      throw std::runtime_error("garbler: amplify needs a single segment");
    }
    auto words = capnp::messageToFlatArray(mb);
    auto bytes = words.asBytes();
    ipc::RingProducer prod(view.ring, "garbler", &bell);
    if (prod.try_push(schema::kEnvelopeFrame, {reinterpret_cast<const std::byte*>(bytes.begin()),
                                               bytes.size()}) != ipc::PushStatus::ok) {
      throw std::runtime_error("garbler: channel full");
    }
    capnp::MallocMessageBuilder mb2;
    cast(mb2).setSymbol("inc");
    auto valid = capnp::messageToFlatArray(mb2);
    auto vb = valid.asBytes();
    if (prod.try_push(schema::kEnvelopeFrame, {reinterpret_cast<const std::byte*>(vb.begin()),
                                               vb.size()}) != ipc::PushStatus::ok) {
      throw std::runtime_error("garbler: channel full");
    }
    return 2;
  }

  // Garbage at the message level (the ring itself stays sound), then one
  // valid cast `inc`.  Returns the number of frames written.
  long long junk(const ipc::ChannelView& view, ipc::Doorbell& bell, ActorRef target) {
    ipc::RingProducer prod(view.ring, "garbler", &bell);
    capnp::MallocMessageBuilder mb;
    init_cast(mb, target).setSymbol("inc");
    auto words = capnp::messageToFlatArray(mb);
    std::vector<std::byte> valid(words.size() * sizeof(capnp::word));
    std::memcpy(valid.data(), words.begin(), valid.size());

    std::vector<std::pair<std::uint32_t, std::vector<std::byte>>> frames;
    frames.emplace_back(schema::kEnvelopeFrame, std::vector<std::byte>(64, std::byte{0xff}));
    {  // the segment table claims more words than the frame holds
      auto b = valid;
      std::uint32_t size = 0;
      std::memcpy(&size, b.data() + 4, 4);
      size += 100;
      std::memcpy(b.data() + 4, &size, 4);
      frames.emplace_back(schema::kEnvelopeFrame, std::move(b));
    }
    {  // the root struct pointer points far outside the message
      auto b = valid;
      std::uint64_t ptr = 0;
      std::memcpy(&ptr, b.data() + 8, 8);
      ptr = (ptr & ~std::uint64_t{0xfffffffc}) | (std::uint64_t{0x0fffffff} << 2);
      std::memcpy(b.data() + 8, &ptr, 8);
      frames.emplace_back(schema::kEnvelopeFrame, std::move(b));
    }
    frames.emplace_back(7u, valid);                                         // unknown frame kind
    frames.emplace_back(schema::kEnvelopeFrame, std::vector<std::byte>{});  // empty payload
    frames.emplace_back(schema::kEnvelopeFrame, valid);                     // and a good one
    for (auto& [kind, bytes] : frames) {
      if (prod.try_push(kind, bytes) != ipc::PushStatus::ok) {
        throw std::runtime_error("garbler: channel full");
      }
    }
    return static_cast<long long>(frames.size());
  }
};

// Links and trap_exit: call (link, name) links to it; call (trap, 0|1)
// sets trap_exit; call exits -> the exit reasons received while trapping.
class Linker : public Actor {
 public:
  void handle_call(const Message& req, const From&, Reply& reply) override {
    auto v = req.value();
    if (is_op(v, "link")) {
      auto st = ctx().link(text_of(arg(v, 1)));
      reply.value().setSymbol(to_string(st));
    } else if (is_op(v, "trap")) {
      ctx().trap_exit(arg(v, 1).getInt() != 0);
      reply.value().setSymbol("ok");
    } else {
      auto l = reply.value().initList(static_cast<unsigned>(exits_.size()));
      for (unsigned i = 0; i < exits_.size(); ++i) l[i].setText(exits_[i]);
    }
  }
  void handle_info(const Message& msg) override {
    if (msg.kind() != schema::Kind::EXIT) return;
    auto r = msg.envelope().getPayload().getExitReason();
    exits_.push_back(r.isSignal() ? "signal " + std::to_string(r.getSignal().getNumber())
                     : r.isException()
                         ? std::string("exception ") + r.getException().getType().cStr()
                         : "other");
  }

 private:
  std::vector<std::string> exits_;
};

}  // namespace

void register_builtin_actors(ActorRegistry& registry) {
  registry.add<Echo>("echo");
  registry.add<Counter>("counter");
  registry.add<Crasher>("crasher");
  registry.add<Stubborn>("stubborn");
  registry.add<Slow>("slow");
  registry.add<Chatty>("chatty");
  registry.add<Printer>("printer");
  registry.add<Flooder>("flooder");
  registry.add<Relay>("relay");
  registry.add<Deferred>("deferred");
  registry.add<Pinger>("pinger");
  registry.add<Sleeper>("sleeper");
  registry.add<Linker>("linker");
  registry.add<Recorder>("recorder");
  registry.add<Feeder>("feeder");
  registry.add<Garbler>("garbler");
}

}  // namespace bulkhead::worker
