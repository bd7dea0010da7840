// python/native/bindings.hpp: the `_native` module behind the bulkhead package.
//
// Built twice from the same code: into bulkhead-pyworker as the built-in
// module `_bulkhead_native`, and as the extension bulkhead/_native.so that
// plain Python programs import (bulkhead.connect).
//
// Messaging functions act for the actor whose handler is running on the
// dispatch thread, else for the default connection (the last connect()).
// A call releases the GIL while it waits; cast, send and reply keep it
// (they do not wait unless the receiver's mailbox is full and its policy is
// `block`).  Requests are converted before anything is sent, so a bad value
// raises TypeError in the sender and nothing leaves.
#pragma once

#include <pybind11/pybind11.h>

namespace bulkhead::python {

void define_native(pybind11::module_& m);

}  // namespace bulkhead::python
