#include "python/native/py_actor.hpp"

#include <kj/exception.h>
#include <pybind11/pybind11.h>

#include <cstdio>
#include <thread>

#include "python/native/values.hpp"

namespace bulkhead::python {
namespace {

worker::Context* g_current = nullptr;  // the running handler's actor (dispatch thread only)
std::thread::id g_dispatch_thread;     // the thread that runs handlers

// Sets the current actor for a handler's duration; restores the outer one.
class CurrentGuard {
 public:
  explicit CurrentGuard(worker::Context* c) : saved_(g_current) { g_current = c; }
  ~CurrentGuard() { g_current = saved_; }
  CurrentGuard(const CurrentGuard&) = delete;
  CurrentGuard& operator=(const CurrentGuard&) = delete;

 private:
  worker::Context* saved_;
};

// The pending Python exception as an ActorError (GIL held).
[[noreturn]] void rethrow_as_actor_error(py::error_already_set& e) {
  std::string type = "Exception", message, tb;
  try {
    auto d = types().describe_exception(e.value(), e.trace()).cast<py::tuple>();
    type = d[0].cast<std::string>();
    message = d[1].cast<std::string>();
    tb = d[2].cast<std::string>();
  } catch (...) {
    message = e.what();
  }
  throw worker::ActorError(type, message, tb);
}

class PyActor final : public worker::Actor {
 public:
  explicit PyActor(std::string spec) : spec_(std::move(spec)) {}
  ~PyActor() override {
    py::gil_scoped_acquire gil;
    self_ = state_ = m_call_ = m_cast_ = m_info_ = py::object();
  }
  PyActor(const PyActor&) = delete;
  PyActor& operator=(const PyActor&) = delete;

  void init(schema::Value::Reader args) override {
    py::gil_scoped_acquire gil;
    CurrentGuard cur(&ctx());
    g_dispatch_thread = std::this_thread::get_id();
    try {
      auto colon = spec_.find(':');
      py::object cls = py::module_::import(spec_.substr(0, colon).c_str());
      std::string rest = spec_.substr(colon + 1);
      for (std::size_t pos = 0; pos <= rest.size();) {
        auto dot = rest.find('.', pos);
        if (dot == std::string::npos) dot = rest.size();
        cls = cls.attr(rest.substr(pos, dot - pos).c_str());
        pos = dot + 1;
      }
      self_ = cls();
      m_call_ = self_.attr("handle_call");
      m_cast_ = self_.attr("handle_cast");
      m_info_ = self_.attr("handle_info");
      py::dict kwargs;
      if (args.which() == schema::Value::MAP) {
        for (auto e : args.getMap()) {
          auto k = from_value(e.getKey());
          if (!PyUnicode_Check(k.ptr())) continue;  // the tree's keys are text
          kwargs[k] = from_value(e.getValue());
        }
      }
      state_ = settle(self_.attr("init")(**kwargs));
    } catch (py::error_already_set& e) {
      rethrow_as_actor_error(e);
    }
  }

  void handle_call(const worker::Message& request, const worker::From& from,
                   worker::Reply& reply) override {
    py::gil_scoped_acquire gil;
    CurrentGuard cur(&ctx());
    py::object req;
    if (!incoming(request, req)) {
      std::fprintf(stderr, "bulkhead: %s refused a call it cannot read: %s\n", spec_.c_str(),
                   dropped_why_.c_str());
      auto err = reply.payload().initError();
      err.setCode(schema::ErrorCode::HANDLER_ERROR);
      err.setMessage("the request could not be converted to Python: " + dropped_why_);
      return;
    }
    try {
      py::object r = settle(m_call_(req, py::cast(PyFrom{from}), state_));
      if (py::isinstance(r, types().noreply)) {
        state_ = r.attr("state");
        return;  // answered later with bulkhead.reply(from_, value)
      }
      if (!PyTuple_Check(r.ptr()) || PyTuple_GET_SIZE(r.ptr()) != 2) {
        PyErr_SetString(PyExc_TypeError,
                        ("handle_call of " + spec_ +
                         " must return (reply, new_state) or bulkhead.noreply(new_state), not " +
                         py::repr(r).cast<std::string>().substr(0, 200))
                            .c_str());
        throw py::error_already_set();
      }
      to_value(PyTuple_GET_ITEM(r.ptr(), 0), reply.value(), "reply");
      state_ = py::reinterpret_borrow<py::object>(PyTuple_GET_ITEM(r.ptr(), 1));
    } catch (py::error_already_set& e) {
      rethrow_as_actor_error(e);
    }
  }

  void handle_cast(const worker::Message& request) override { one_way(request, m_cast_); }
  void handle_info(const worker::Message& msg) override { one_way(msg, m_info_); }

  void terminate(std::string_view reason) override {
    py::gil_scoped_acquire gil;
    CurrentGuard cur(&ctx());
    if (!self_) return;
    try {
      settle(self_.attr("terminate")(py::str(reason.data(), reason.size()), state_));
    } catch (py::error_already_set& e) {
      rethrow_as_actor_error(e);
    }
  }

 private:
  void one_way(const worker::Message& m, const py::object& method) {
    py::gil_scoped_acquire gil;
    CurrentGuard cur(&ctx());
    py::object msg;
    if (!incoming(m, msg)) {
      std::fprintf(stderr, "bulkhead: %s dropped a message it cannot read: %s\n", spec_.c_str(),
                   dropped_why_.c_str());
      return;
    }
    try {
      state_ = settle(method(msg, state_));
    } catch (py::error_already_set& e) {
      rethrow_as_actor_error(e);
    }
  }

  // The message as Python; false (with dropped_why_) if a peer sent what
  // Python cannot hold (e.g. a map key that is a map): the sender's fault,
  // not this actor's, so it must not crash it.
  bool incoming(const worker::Message& m, py::object& out) {
    try {
      out = from_message(m);
      return true;
    } catch (py::error_already_set& e) {
      dropped_why_ = e.what();
      return false;
    } catch (const kj::Exception& e) {
      // Cap'n Proto refused to read it (e.g. its traversal limit: a message
      // whose pointers share their targets reads as far larger than it is).
      dropped_why_ = std::string("invalid message: ") + e.getDescription().cStr();
      return false;
    } catch (const std::exception& e) {
      dropped_why_ = e.what();
      return false;
    }
  }

  // An async handler's coroutine runs to completion here.
  py::object settle(py::object r) {
    if (PyCoro_CheckExact(r.ptr())) return types().run_coroutine(self_, r);
    return r;
  }

  std::string spec_;
  py::object self_, state_, m_call_, m_cast_, m_info_;
  std::string dropped_why_;
};

}  // namespace

worker::Context* current_context() {
  return g_current;
}

bool on_dispatch_thread() {
  return std::this_thread::get_id() == g_dispatch_thread;
}

std::unique_ptr<worker::Actor> make_py_actor(const std::string& spec) {
  return std::make_unique<PyActor>(spec);
}

}  // namespace bulkhead::python
