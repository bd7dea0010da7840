// worker/actor.hpp: what a C++ actor is, and how it talks to other actors.
//
// What it is for: users write actors by deriving from `Actor`, register the
// type under a name in an `ActorRegistry`, and either use the stock
// `bulkhead-worker` binary or call `bulkhead::worker::run()` from their own
// main().  The supervisor's tree file refers to actors by that type name.
//
// Lifecycle (gen_server shape): init(args) once, before the worker reports
// ready; handle_call / handle_cast / handle_info on the worker's single
// dispatch thread; terminate(reason) on a graceful stop, in reverse order of
// init.  An exception escaping any of these ends the *worker* with an
// `exception` exit reason naming the actor, the exception type and what();
// the supervisor then applies the tree's restart strategy.  Let it crash.
//
// Messaging: `ctx()` gives call / cast / send / reply / whereis / monitor.
// Payloads are built in place by a callback that fills the envelope's
// payload (a dynamic Value, or your own Cap'n Proto struct via
// `set_typed<T>()`); received ones are read in place (`Message::value()`,
// `Message::as<T>()`).  An actor may call another actor from inside a
// handler: while it waits, the worker keeps dispatching messages to its
// other actors (messages for the waiting actor are queued until it returns).
//
// Threading: everything happens on the dispatch thread; an actor needs no
// locks unless it starts threads of its own (which must not use ctx()).
//
// Lifetimes: a Message (and every Reader from it) is valid only during the
// handler call: copy what you keep.  A `From` may be kept to reply later.
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "schema/envelope.capnp.h"
#include "schema/value.capnp.h"

namespace bulkhead::worker {

class Context;

// One actor in one incarnation of one worker.
struct ActorRef {
  std::uint32_t worker = 0;       // the supervisor's slot number
  std::uint32_t incarnation = 0;  // 0: whatever incarnation is current
  std::uint32_t actor = 0;        // index within the worker
  friend bool operator==(const ActorRef&, const ActorRef&) = default;
};

// Whom to send to: a registered name or a reference.
using Target = std::variant<std::string, ActorRef>;

// Fills the payload union of an outgoing envelope.
using PayloadFn = std::function<void(schema::Envelope::Payload::Builder)>;

// A payload that is one Value, built by `fill`.
inline PayloadFn value_payload(std::function<void(schema::Value::Builder)> fill) {
  return [fill = std::move(fill)](schema::Envelope::Payload::Builder p) { fill(p.initValue()); };
}

// A payload that is the user's own Cap'n Proto struct T, built by `fill`.
template <class T>
PayloadFn typed_payload(std::function<void(typename T::Builder)> fill) {
  return [fill = std::move(fill)](schema::Envelope::Payload::Builder p) {
    auto t = p.initTyped();
    t.setSchemaId(capnp::typeId<T>());
    fill(t.getContent().template initAs<T>());
  };
}

// A received message, read in place.
class Message {
 public:
  explicit Message(schema::Envelope::Reader env) : env_(env) {}
  [[nodiscard]] schema::Envelope::Reader envelope() const { return env_; }
  [[nodiscard]] schema::Kind kind() const { return env_.getKind(); }
  // The payload as a Value; throws std::invalid_argument if it is not one.
  [[nodiscard]] schema::Value::Reader value() const;
  // The payload as the user's struct T; throws std::invalid_argument if the
  // payload is not a T.
  template <class T>
  [[nodiscard]] typename T::Reader as() const {
    auto p = env_.getPayload();
    if (!p.isTyped() || p.getTyped().getSchemaId() != capnp::typeId<T>()) {
      throw std::invalid_argument("message payload is not the expected Cap'n Proto type");
    }
    return p.getTyped().getContent().template getAs<T>();
  }
  // Who sent it (the worker is the ring it came on, never a field it wrote).
  [[nodiscard]] ActorRef sender() const { return sender_; }

 private:
  friend class Node;
  schema::Envelope::Reader env_;
  ActorRef sender_{};
  schema::Value::Reader value_;  // the checked payload Value, if has_value_ (saves a traversal)
  bool has_value_ = false;
};

// Whom to answer, for a call; may be kept to reply later (deferred reply).
struct From {
  ActorRef caller;
  std::uint64_t correlation = 0;
};

// The answer to a handle_call, built in place.
class Reply {
 public:
  // Marks the call answered and returns the payload to fill.
  schema::Envelope::Payload::Builder payload();
  // Answer with a Value.
  schema::Value::Builder value() { return payload().initValue(); }
  [[nodiscard]] bool answered() const { return answered_; }

 private:
  friend class Node;
  explicit Reply(schema::Envelope::Builder env) : env_(env) {}
  schema::Envelope::Builder env_;  // the reply envelope, its header already filled
  bool answered_ = false;
};

enum class CallError {
  none,
  noproc,        // no such name or actor
  timeout,       // no reply before the deadline
  callee_died,   // the callee's worker died; `reason` says how
  bad_message,   // the reply (or our request) failed validation
  overflow,      // the callee's mailbox was full
  handler_error  // the callee does not handle calls, or refused the payload
};
const char* to_string(CallError e);

// The outcome of a call: the reply message (copied out of the ring), or an error.
// Small replies live inside the object (no allocation on the hot path).
class CallResult {
 public:
  CallResult() = default;
  CallResult(CallResult&& o) noexcept { *this = std::move(o); }
  CallResult& operator=(CallResult&& o) noexcept;
  CallResult(const CallResult&) = delete;
  CallResult& operator=(const CallResult&) = delete;
  ~CallResult() = default;

  [[nodiscard]] bool ok() const { return error_ == CallError::none; }
  [[nodiscard]] CallError error() const { return error_; }
  [[nodiscard]] const std::string& error_text() const { return text_; }
  // The reply; only when ok().
  [[nodiscard]] Message reply() const;
  [[nodiscard]] schema::Value::Reader value() const { return reply().value(); }

 private:
  friend class Node;
  static constexpr std::size_t kInlineWords = 32;  // replies up to 256 bytes
  // `plain`: the bytes passed schema::plain_root on arrival (read unchecked).
  void set_words(std::span<const std::byte> bytes, bool plain);
  [[nodiscard]] kj::ArrayPtr<const capnp::word> words() const;

  CallError error_ = CallError::none;
  std::string text_;
  std::size_t n_words_ = 0;
  bool plain_ = false;  // the words passed schema::plain_root (see reply())
  std::array<capnp::word, kInlineWords> inline_;                 // the reply, if it fits
  kj::Array<capnp::word> heap_;                                  // the reply, if it does not
  mutable std::optional<capnp::FlatArrayMessageReader> reader_;  // made by reply()
};

enum class SendStatus { ok, noproc, overflow, dropped, timeout, broken };
const char* to_string(SendStatus s);

// Monitor handle: cancel with Context::demonitor.
struct MonitorRef {
  std::uint64_t id = 0;
};

class Context {
 public:
  virtual ~Context() = default;
  // gen_server:call.  Blocks this actor (not the worker) until the reply,
  // the deadline, or the callee's death, whichever comes first.
  virtual CallResult call(const Target& to, const PayloadFn& request,
                          std::chrono::milliseconds timeout) = 0;
  // gen_server:cast and plain send (handle_info at the receiver).
  virtual SendStatus cast(const Target& to, const PayloadFn& request) = 0;
  virtual SendStatus send(const Target& to, const PayloadFn& msg) = 0;
  // Answers a call whose handle_call did not answer at once.
  virtual SendStatus reply(const From& from, const PayloadFn& answer) = 0;
  // The current incarnation of a registered name (a local read).
  virtual std::optional<ActorRef> whereis(std::string_view name) = 0;
  // DOWN (kind down, payload exitReason) arrives at handle_info when the
  // target's worker dies.  A target that is already gone gets DOWN at once.
  virtual MonitorRef monitor(const Target& target) = 0;
  virtual void demonitor(MonitorRef ref) = 0;
  // Links this actor and `target`, both ways: when the worker of either
  // dies, the other gets an exit signal.  An actor that traps exits gets it
  // as a message at handle_info (kind exit, payload exitReason); one that
  // does not dies with it (its worker ends with reason exception
  // "bulkhead::linked_exit", naming the linked actor), unless the reason was
  // normal or shutdown.  A target that is not running is noproc.
  virtual SendStatus link(const Target& target) = 0;
  virtual void unlink(const Target& target) = 0;
  virtual void trap_exit(bool on) = 0;
  // This actor.
  [[nodiscard]] virtual ActorRef self() const = 0;
};

class Actor {
 public:
  virtual ~Actor() = default;

  // Called once before the worker reports ready.  Throw to fail the start.
  virtual void init(schema::Value::Reader args) { (void)args; }
  // A call: answer now through `reply` (and return), or keep `from` and answer
  // later with ctx().reply(from, ...).  The default refuses calls.
  virtual void handle_call(const Message& request, const From& from, Reply& reply);
  // A cast.
  virtual void handle_cast(const Message& request) { (void)request; }
  // Anything else: sends, DOWN messages, and signals the worker was sent
  // (SIGUSR1 -> the symbol `usr1`, SIGUSR2 -> `usr2`).
  virtual void handle_info(const Message& msg) { (void)msg; }
  // Called on a graceful stop, with reason "shutdown".
  virtual void terminate(std::string_view reason) { (void)reason; }

  // The actor's registered name ("" if anonymous) and type, set by the worker.
  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] const std::string& type() const noexcept { return type_; }
  Context& ctx() { return *ctx_; }

 private:
  friend class Node;
  friend class Dispatcher;
  std::string name_;
  std::string type_;
  Context* ctx_ = nullptr;
};

// An exception from a foreign runtime hosted in the worker (the Python
// embedding): its own type name ("ValueError", "mymod.MyError"), message and
// formatted traceback.  The worker reports these fields verbatim in the
// `exception` exit reason instead of the C++ type.
class ActorError : public std::runtime_error {
 public:
  ActorError(std::string type, const std::string& message, std::string traceback)
      : std::runtime_error(message), type_(std::move(type)), traceback_(std::move(traceback)) {}
  [[nodiscard]] const std::string& type() const noexcept { return type_; }
  [[nodiscard]] const std::string& traceback() const noexcept { return traceback_; }

 private:
  std::string type_;
  std::string traceback_;
};

// Type name -> factory.  Built in main(), passed down; no global registry.
class ActorRegistry {
 public:
  using Factory = std::function<std::unique_ptr<Actor>()>;

  // Registers `type`; throws std::invalid_argument on a duplicate or an empty name.
  void add(std::string type, Factory factory);
  template <class T>
  void add(std::string type) {
    add(std::move(type), [] { return std::make_unique<T>(); });
  }

  [[nodiscard]] std::unique_ptr<Actor> create(std::string_view type) const;  // null if unknown
  [[nodiscard]] bool contains(std::string_view type) const;
  [[nodiscard]] std::vector<std::string> types() const;

 private:
  std::map<std::string, Factory, std::less<>> factories_;
};

// Runs this process as a Bulkhead worker: attaches to the segment and control
// socket the supervisor passed (see worker.hpp for the command line), starts
// the actors named in the Start message, reports ready, dispatches until
// stopped.  Returns the process exit code (0 after a graceful stop).  Also
// answers `--list-actors` (one type per line) and `--help` for tooling.
int run(int argc, char** argv, const ActorRegistry& registry);

// For programs embedding a runtime that must know about fork and blocking
// (CPython: PyOS_BeforeFork / AfterFork_*, the GIL).  In zygote mode,
// `before_fork` runs in the zygote before it forks a worker,
// `after_fork_parent` in the zygote after, `after_fork_child` in the new
// worker before it attaches.  `before_wait` / `after_wait` bracket every
// time the worker's loop blocks waiting for messages (not waits inside a
// handler's call).  Empty = nothing.
struct RunHooks {
  std::function<void()> before_fork;
  std::function<void()> after_fork_parent;
  std::function<void()> after_fork_child;
  std::function<void()> before_wait;
  std::function<void()> after_wait;
  // Zygote mode: keep one worker forked ahead of time (past fork and
  // after_fork_child, reparented to the supervisor), so that a start only
  // hands it its fds.  For programs whose fork is expensive (a big
  // interpreter); costs one idle process per zygote.
  bool spare = false;
};
int run(int argc, char** argv, const ActorRegistry& registry, const RunHooks& hooks);

}  // namespace bulkhead::worker
