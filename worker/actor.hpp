// worker/actor.hpp: what a C++ actor is, and how a worker program names them.
//
// What it is for: users write actors by deriving from `Actor`, register the
// type under a name in an `ActorRegistry`, and either use the stock
// `bulkhead-worker` binary or call `bulkhead::worker::run()` from their own
// main().  The supervisor's tree file refers to actors by that type name.
//
// Lifecycle (gen_server shape): init(args) once, before the worker reports
// ready; handlers on the worker's single dispatch thread; terminate(reason)
// on a graceful stop, in reverse order of init.  An exception escaping any of
// these ends the *worker* with an `exception` exit reason naming the actor,
// the exception type and what(); the supervisor then applies the tree's
// restart strategy.  There is no other error channel: let it crash.
//
// Threading: every call happens on the dispatch thread; an actor needs no
// locks unless it starts threads of its own.  Do not fork from an actor.
//
// Lifetimes: a Value::Reader passed to a handler points into ring memory and
// is valid only during the call: copy what you keep.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "schema/value.capnp.h"

namespace bulkhead::worker {

class Actor {
 public:
  virtual ~Actor() = default;

  // Called once before the worker reports ready.  Throw to fail the start.
  virtual void init(schema::Value::Reader args) { (void)args; }
  // A plain message.  At this stage the worker delivers signals it was sent
  // as infos: SIGUSR1 -> symbol `usr1`, SIGUSR2 -> symbol `usr2`.
  virtual void handle_info(schema::Value::Reader msg) { (void)msg; }
  // Called on a graceful stop, with reason "shutdown".
  virtual void terminate(std::string_view reason) { (void)reason; }

  // The actor's registered name ("" if anonymous) and type, set by the worker.
  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] const std::string& type() const noexcept { return type_; }

 private:
  friend class Dispatcher;
  std::string name_;
  std::string type_;
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

}  // namespace bulkhead::worker
