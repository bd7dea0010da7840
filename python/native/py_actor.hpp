// python/native/py_actor.hpp: a Python GenServer hosted as a worker Actor.
//
// One PyActor per actor spec "module:Class": init imports the module (the
// zygote usually has already), makes one instance, calls init(**args) and
// keeps the state it returns; each handler passes the state in and keeps the
// new one.  Exceptions escaping a handler become worker::ActorError (type,
// message, traceback), which ends the worker with an `exception` reason.
//
// GIL: the dispatch thread holds it while it dispatches and releases it
// while the worker waits on its rings (bulkhead-pyworker's RunHooks) and
// while a handler waits in bulkhead.call; each handler makes sure it has it
// (cheap when it already does: a handler nested in another's call).
//
// Current actor: while a handler runs, bulkhead.call/cast/... act for it
// (current_context()).  A handler that calls another actor lets the worker
// dispatch other actors' handlers meanwhile; the guard restores the caller's.
#pragma once

#include <memory>
#include <string>

#include "worker/actor.hpp"

namespace bulkhead::python {

// The actor whose handler is running on the dispatch thread, or null.
worker::Context* current_context();
[[nodiscard]] bool on_dispatch_thread();

// A factory for "module:Class" (registered by bulkhead-pyworker's main).
std::unique_ptr<worker::Actor> make_py_actor(const std::string& spec);

}  // namespace bulkhead::python
