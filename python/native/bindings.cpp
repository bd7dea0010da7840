#include "python/native/bindings.hpp"

#include <capnp/message.h>

#include <chrono>
#include <cmath>
#include <memory>
#include <mutex>
#include <string>

#include "python/native/py_actor.hpp"
#include "python/native/values.hpp"
#include "worker/client.hpp"

namespace bulkhead::python {
namespace {

// A request converted before sending (first segment on the stack).
class Outgoing {
 public:
  Outgoing(py::handle obj, const char* root) : mb_(kj::arrayPtr(scratch_, kScratch)) {
    auto v = mb_.initRoot<schema::Value>();
    to_value(obj, v, root);
    value_ = v.asReader();
  }
  Outgoing(const Outgoing&) = delete;
  Outgoing& operator=(const Outgoing&) = delete;
  [[nodiscard]] worker::PayloadFn payload() const {
    return [this](schema::Envelope::Payload::Builder p) { p.setValue(value_); };
  }

 private:
  static constexpr std::size_t kScratch = 64;
  capnp::word scratch_[kScratch] = {};
  capnp::MallocMessageBuilder mb_;
  schema::Value::Reader value_;
};

[[noreturn]] void raise(const py::object& type, const py::tuple& args) {
  PyErr_SetObject(type.ptr(), args.ptr());
  throw py::error_already_set();
}

py::object call_result(worker::CallResult& r) {
  if (r.ok()) return from_message(r.reply());
  auto& t = types();
  switch (r.error()) {
    case worker::CallError::noproc:
      raise(t.noproc, py::make_tuple(r.error_text()));
    case worker::CallError::timeout:
      raise(t.timeout, py::make_tuple(r.error_text()));
    case worker::CallError::callee_died:
      raise(t.actor_died, py::make_tuple(r.error_text()));
    default:
      raise(t.call_failed, py::make_tuple(worker::to_string(r.error()), r.error_text()));
  }
}

py::object send_result(worker::SendStatus st, py::handle target) {
  switch (st) {
    case worker::SendStatus::ok:
    case worker::SendStatus::dropped:  // the receiver's policy: drop silently
      return py::none();
    case worker::SendStatus::noproc:
      raise(types().noproc, py::make_tuple("no actor " + py::repr(target).cast<std::string>()));
    default:
      raise(types().call_failed,
            py::make_tuple(worker::to_string(st),
                           "sending to " + py::repr(target).cast<std::string>()));
  }
}

std::chrono::milliseconds to_ms(double seconds) {
  if (!(seconds >= 0) || seconds > 1e7) {
    throw py::value_error("timeout must be a number of seconds >= 0");
  }
  return std::chrono::milliseconds(static_cast<long long>(std::ceil(seconds * 1000.0)));
}

// A plain Python process attached to a supervisor.
class Connection {
 public:
  Connection(const std::string& socket, double timeout) {
    auto ms = to_ms(timeout);
    py::gil_scoped_release nogil;
    client_ = worker::Client::connect(socket, ms);
  }
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  worker::Client& client() {
    if (!client_) throw std::runtime_error("bulkhead connection is closed");
    return *client_;
  }
  std::mutex& mutex() { return mu_; }
  void close();

 private:
  std::unique_ptr<worker::Client> client_;
  std::mutex mu_;  // a Client is used by one thread at a time
};

// The default connection (the last connect()), owned: a thread using it
// with the GIL released holds a reference of its own (default_connection),
// so dropping every other reference cannot free it under that thread.
// Never destroyed (no Python object may be released after the interpreter
// is gone): cleared by close() and at exit.
py::object& g_default() {
  static auto* o = new py::object();
  return *o;
}

Connection::~Connection() {
  std::lock_guard<std::mutex> lock(mu_);  // no one may be in client_ (see close)
  client_.reset();
}

void Connection::close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    client_.reset();
  }
  py::object& d = g_default();
  if (d && d.cast<Connection*>() == this) {
    py::object last = std::move(d);  // released after d is empty (its destructor may run here)
  }
}

worker::Context* actor_context() {
  worker::Context* c = current_context();
  return c != nullptr && on_dispatch_thread() ? c : nullptr;
}

// A reference of the caller's own to the default connection (GIL held).
py::object default_connection(const char* what) {
  py::object d = g_default();
  if (!d) {
    throw std::runtime_error(std::string("bulkhead.") + what +
                             ": not inside an actor's handler and not connected "
                             "(bulkhead.connect(socket) first)");
  }
  return d;
}

worker::Context& actor_only(const char* what) {
  worker::Context* c = actor_context();
  if (c == nullptr) {
    throw std::runtime_error(std::string("bulkhead.") + what +
                             " works only inside an actor's handler, on its worker's thread");
  }
  return *c;
}

py::object do_call(Connection* conn, py::handle target, py::handle request, double timeout) {
  worker::Target to = to_target(target);
  auto ms = to_ms(timeout);
  Outgoing out(request, "request");
  worker::CallResult r;
  py::object hold;  // keeps the default connection alive while we use it
  if (conn == nullptr) {
    if (worker::Context* c = actor_context()) {
      {
        py::gil_scoped_release nogil;  // other actors' handlers take it meanwhile
        r = c->call(to, out.payload(), ms);
      }
      return call_result(r);
    }
    hold = default_connection("call");
    conn = hold.cast<Connection*>();
  }
  {
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(conn->mutex());
    r = conn->client().call(to, out.payload(), ms);
  }
  return call_result(r);
}

py::object do_send(Connection* conn, py::handle target, py::handle msg, bool cast) {
  worker::Target to = to_target(target);
  Outgoing out(msg, cast ? "request" : "message");
  py::object hold;
  if (conn == nullptr) {
    if (worker::Context* c = actor_context()) {
      return send_result(cast ? c->cast(to, out.payload()) : c->send(to, out.payload()), target);
    }
    hold = default_connection(cast ? "cast" : "send");
    conn = hold.cast<Connection*>();
  }
  std::lock_guard<std::mutex> lock(conn->mutex());
  auto& cl = conn->client();
  return send_result(cast ? cl.cast(to, out.payload()) : cl.send(to, out.payload()), target);
}

py::object do_whereis(Connection* conn, const std::string& name) {
  std::optional<worker::ActorRef> r;
  py::object hold;
  if (conn == nullptr) {
    if (worker::Context* c = actor_context()) {
      r = c->whereis(name);
    } else {
      hold = default_connection("whereis");
      conn = hold.cast<Connection*>();
    }
  }
  if (conn != nullptr) {
    std::lock_guard<std::mutex> lock(conn->mutex());
    conn->client().poll();  // peer updates from the supervisor
    r = conn->client().whereis(name);
  }
  if (!r) return py::none();
  return py::cast(PyRef{*r});
}

}  // namespace

void define_native(py::module_& m) {
  m.doc() = "Bulkhead's native half: values, messaging, connections (see the bulkhead package)";
  // The default connection goes while the interpreter still runs.
  py::module_::import("atexit").attr("register")(
      py::cpp_function([] { py::object last = std::move(g_default()); }));

  m.def("_register",
        [](py::object atom, py::object timeout, py::object noproc, py::object actor_died,
           py::object call_failed, py::object noreply, py::object down, py::object exit,
           py::object exit_reason, py::object run_coroutine, py::object describe_exception) {
          auto& t = types();
          t.atom = std::move(atom);
          t.timeout = std::move(timeout);
          t.noproc = std::move(noproc);
          t.actor_died = std::move(actor_died);
          t.call_failed = std::move(call_failed);
          t.noreply = std::move(noreply);
          t.down = std::move(down);
          t.exit = std::move(exit);
          t.exit_reason = std::move(exit_reason);
          t.run_coroutine = std::move(run_coroutine);
          t.describe_exception = std::move(describe_exception);
          t.ready = true;
        });

  py::class_<PyRef>(m, "Ref", "One actor in one incarnation of one worker.")
      .def(py::init([](std::uint32_t w, std::uint32_t inc, std::uint32_t a) {
             return PyRef{worker::ActorRef{w, inc, a}};
           }),
           py::arg("worker"), py::arg("incarnation"), py::arg("actor"))
      .def_property_readonly("worker", [](const PyRef& r) { return r.ref.worker; })
      .def_property_readonly("incarnation", [](const PyRef& r) { return r.ref.incarnation; })
      .def_property_readonly("actor", [](const PyRef& r) { return r.ref.actor; })
      .def("__eq__",
           [](const PyRef& a, py::handle b) {
             return py::isinstance<PyRef>(b) && a.ref == b.cast<const PyRef&>().ref;
           })
      .def("__hash__",
           [](const PyRef& r) {
             return py::hash(py::make_tuple(r.ref.worker, r.ref.incarnation, r.ref.actor));
           })
      .def("__repr__", [](const PyRef& r) {
        return "Ref(worker=" + std::to_string(r.ref.worker) +
               ", incarnation=" + std::to_string(r.ref.incarnation) +
               ", actor=" + std::to_string(r.ref.actor) + ")";
      });

  py::class_<PyFrom>(m, "From", "Whom to answer: keep it to reply later with bulkhead.reply.")
      .def_property_readonly("caller", [](const PyFrom& f) { return PyRef{f.from.caller}; })
      .def("__repr__", [](const PyFrom& f) {
        return "From(worker=" + std::to_string(f.from.caller.worker) +
               ", correlation=" + std::to_string(f.from.correlation) + ")";
      });

  py::class_<Connection>(m, "Connection",
                         "A plain Python process attached to a running supervisor.")
      .def(
          "call",
          [](Connection& c, py::handle to, py::handle req, double timeout) {
            return do_call(&c, to, req, timeout);
          },
          py::arg("target"), py::arg("request"), py::arg("timeout") = 5.0)
      .def(
          "cast",
          [](Connection& c, py::handle to, py::handle req) { return do_send(&c, to, req, true); },
          py::arg("target"), py::arg("request"))
      .def(
          "send",
          [](Connection& c, py::handle to, py::handle msg) { return do_send(&c, to, msg, false); },
          py::arg("target"), py::arg("message"))
      .def("whereis", [](Connection& c, const std::string& name) { return do_whereis(&c, name); })
      .def(
          "start_child",
          [](Connection& c, const std::string& sup, double timeout) {
            auto ms = to_ms(timeout);
            py::gil_scoped_release nogil;
            std::lock_guard<std::mutex> lock(c.mutex());
            return c.client().start_child(sup, ms);
          },
          py::arg("supervisor"), py::arg("timeout") = 10.0)
      .def(
          "terminate_child",
          [](Connection& c, const std::string& child, double timeout) {
            auto ms = to_ms(timeout);
            py::gil_scoped_release nogil;
            std::lock_guard<std::mutex> lock(c.mutex());
            c.client().terminate_child(child, ms);
          },
          py::arg("child"), py::arg("timeout") = 30.0)
      .def("close", &Connection::close)
      .def("__enter__", [](Connection& c) -> Connection& { return c; })
      .def("__exit__", [](Connection& c, py::args) { c.close(); });

  m.def(
      "connect",
      [](const std::string& socket, double timeout) {
        py::object c = py::cast(std::make_unique<Connection>(socket, timeout));
        g_default() = c;
        return c;
      },
      py::arg("socket"), py::arg("timeout") = 5.0);

  m.def(
      "call",
      [](py::handle to, py::handle req, double timeout) {
        return do_call(nullptr, to, req, timeout);
      },
      py::arg("target"), py::arg("request"), py::arg("timeout") = 5.0,
      "gen_server:call: the reply, or Timeout / NoProc / ActorDied / CallFailed.");
  m.def(
      "cast", [](py::handle to, py::handle req) { return do_send(nullptr, to, req, true); },
      py::arg("target"), py::arg("request"), "gen_server:cast (handle_cast at the receiver).");
  m.def(
      "send", [](py::handle to, py::handle msg) { return do_send(nullptr, to, msg, false); },
      py::arg("target"), py::arg("message"), "A plain message (handle_info at the receiver).");
  m.def(
      "reply",
      [](const PyFrom& from, py::handle value) {
        Outgoing out(value, "reply");
        auto st = actor_only("reply").reply(from.from, out.payload());
        if (st != worker::SendStatus::ok && st != worker::SendStatus::noproc) {
          raise(types().call_failed, py::make_tuple(worker::to_string(st), "reply"));
        }
      },
      py::arg("from_"), py::arg("value"), "Answers a call whose handle_call returned noreply.");
  m.def(
      "whereis", [](const std::string& name) { return do_whereis(nullptr, name); }, py::arg("name"),
      "The current Ref of a registered name, or None.");
  m.def(
      "monitor",
      [](py::handle target) { return actor_only("monitor").monitor(to_target(target)).id; },
      py::arg("target"), "Down(target, reason) arrives at handle_info when it dies.");
  m.def(
      "demonitor",
      [](std::uint64_t id) { actor_only("demonitor").demonitor(worker::MonitorRef{id}); },
      py::arg("monitor"));
  m.def(
      "link",
      [](py::handle target) {
        return send_result(actor_only("link").link(to_target(target)), target);
      },
      py::arg("target"));
  m.def(
      "unlink", [](py::handle target) { actor_only("unlink").unlink(to_target(target)); },
      py::arg("target"));
  m.def(
      "trap_exit", [](bool on) { actor_only("trap_exit").trap_exit(on); }, py::arg("on"));
  m.def(
      "self_ref", [] { return PyRef{actor_only("self").self()}; }, "This actor's Ref.");
}

}  // namespace bulkhead::python
