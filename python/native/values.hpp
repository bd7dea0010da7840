// python/native/values.hpp: Python objects <-> schema::Value, one to one.
//
//   None <-> null, bool <-> bool, int <-> int (signed 64-bit: a larger int
//   raises OverflowError in the sender), float <-> float, str <-> text,
//   bytes <-> data, list <-> list, tuple <-> tuple, dict <-> map (insertion
//   order), bulkhead.Atom <-> symbol.
// Anything else raises TypeError naming its type and where it was in the
// message ("request[2]['k']").  Nesting deeper than kMaxDepth (the readers'
// Cap'n Proto nesting limit leaves room for the envelope) raises ValueError,
// which also catches self-containing lists.
//
// The Python classes this needs (Atom, the exceptions, ...) live in the
// `bulkhead` package, which hands them over once at import (register_types);
// they are process-wide, like the interpreter.  Call everything here with the
// GIL held.
#pragma once

#include <pybind11/pybind11.h>

#include <string>

#include "schema/envelope.capnp.h"
#include "schema/exit_reason.capnp.h"
#include "schema/value.capnp.h"
#include "worker/actor.hpp"

namespace bulkhead::python {

namespace py = pybind11;

inline constexpr int kMaxDepth = 48;

struct Types {
  py::object atom, timeout, noproc, actor_died, call_failed, noreply, down, exit, exit_reason;
  py::object run_coroutine, describe_exception;
  bool ready = false;
};
Types& types();  // set by bulkhead/__init__.py through _native._register

// Fills `out` from `obj`; raises (py::error_already_set) TypeError,
// OverflowError or ValueError with `root` and the path in the message.
void to_value(py::handle obj, schema::Value::Builder out, const char* root);
py::object from_value(schema::Value::Reader v);
py::object from_exit_reason(schema::ExitReason::Reader r);
// A received payload as Python: a Value, Down/Exit for down/exit messages.
py::object from_message(const worker::Message& m);

// str -> registered name, bulkhead.Ref -> reference; TypeError otherwise.
worker::Target to_target(py::handle obj);

// A bulkhead.Ref (one actor in one incarnation of one worker).
struct PyRef {
  worker::ActorRef ref;
};
// A bulkhead.From (whom to answer; may be kept for a deferred reply).
struct PyFrom {
  worker::From from;
};

}  // namespace bulkhead::python
