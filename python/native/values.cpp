#include "python/native/values.hpp"

#include <capnp/message.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

namespace bulkhead::python {

Types& types() {
  // The interpreter's, like sys.modules: never destroyed (no Python object
  // may be released after the interpreter is gone).
  static Types* t = new Types();
  return *t;
}

namespace {

// A conversion problem on its way up: each level prepends its index.
struct BadValue {
  PyObject* kind;  // PyExc_TypeError, PyExc_OverflowError, PyExc_ValueError
  std::string what;
  std::string path;
};

std::string key_repr(py::handle key) {
  try {
    auto r = py::repr(key).cast<std::string>();
    if (r.size() > 40) r = r.substr(0, 37) + "...";
    return r;
  } catch (...) {
    return "?";
  }
}

std::string type_name(py::handle obj) {
  auto* t = Py_TYPE(obj.ptr());
  std::string mod;
  if (PyObject* m = PyObject_GetAttrString(reinterpret_cast<PyObject*>(t), "__module__")) {
    if (PyUnicode_Check(m)) {
      // NULL for a str UTF-8 cannot hold (lone surrogates): leave the module out.
      if (const char* s = PyUnicode_AsUTF8(m)) {
        mod = s;
      } else {
        PyErr_Clear();
      }
    }
    Py_DECREF(m);
  } else {
    PyErr_Clear();
  }
  std::string name = t->tp_name;
  if (!mod.empty() && mod != "builtins" && name.find('.') == std::string::npos) {
    name = mod + "." + name;
  }
  return name;
}

void convert(PyObject* o, schema::Value::Builder out, int depth) {
  if (depth > kMaxDepth) {
    throw BadValue{PyExc_ValueError,
                   "nested deeper than " + std::to_string(kMaxDepth) + " levels (a cycle?)",
                   {}};
  }
  if (o == Py_None) {
    out.setNull();
  } else if (PyBool_Check(o)) {
    out.setBool(o == Py_True);
  } else if (PyLong_Check(o)) {
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow != 0) {
      throw BadValue{PyExc_OverflowError, "int does not fit in a signed 64-bit integer", {}};
    }
    if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
    out.setInt(v);
  } else if (PyFloat_Check(o)) {
    out.setFloat(PyFloat_AS_DOUBLE(o));
  } else if (PyUnicode_Check(o)) {
    Py_ssize_t n = 0;
    const char* s = PyUnicode_AsUTF8AndSize(o, &n);
    if (s == nullptr) {
      PyErr_Clear();
      throw BadValue{PyExc_ValueError, "str is not encodable as UTF-8 (lone surrogates?)", {}};
    }
    out.setText(capnp::Text::Reader(s, static_cast<std::size_t>(n)));
  } else if (PyBytes_Check(o)) {
    out.setData(capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(PyBytes_AS_STRING(o)),
                                    static_cast<std::size_t>(PyBytes_GET_SIZE(o))));
  } else if (PyList_Check(o) || PyTuple_Check(o)) {
    const bool list = PyList_Check(o);
    Py_ssize_t n = list ? PyList_GET_SIZE(o) : PyTuple_GET_SIZE(o);
    auto items =
        list ? out.initList(static_cast<unsigned>(n)) : out.initTuple(static_cast<unsigned>(n));
    for (Py_ssize_t i = 0; i < n; ++i) {
      // A list may shrink under us only through a __del__ run by our own
      // conversion; re-check the size each time.
      if (list && i >= PyList_GET_SIZE(o)) {
        throw BadValue{PyExc_ValueError, "list changed size during conversion", {}};
      }
      PyObject* item = list ? PyList_GET_ITEM(o, i) : PyTuple_GET_ITEM(o, i);
      try {
        convert(item, items[static_cast<unsigned>(i)], depth + 1);
      } catch (BadValue& e) {
        e.path = "[" + std::to_string(i) + "]" + e.path;
        throw;
      }
    }
  } else if (PyDict_Check(o)) {
    auto entries = out.initMap(static_cast<unsigned>(PyDict_GET_SIZE(o)));
    Py_ssize_t pos = 0;
    PyObject *k = nullptr, *v = nullptr;
    unsigned i = 0;
    while (PyDict_Next(o, &pos, &k, &v)) {
      if (i >= entries.size()) {
        throw BadValue{PyExc_ValueError, "dict changed size during conversion", {}};
      }
      py::handle key(k);
      try {
        convert(k, entries[i].initKey(), depth + 1);
      } catch (BadValue& e) {
        e.path = "<key " + key_repr(key) + ">" + e.path;
        throw;
      }
      try {
        convert(v, entries[i].initValue(), depth + 1);
      } catch (BadValue& e) {
        e.path = "[" + key_repr(key) + "]" + e.path;
        throw;
      }
      ++i;
    }
  } else if (types().ready && Py_TYPE(o) == reinterpret_cast<PyTypeObject*>(types().atom.ptr())) {
    py::str name = py::handle(o).attr("name");
    Py_ssize_t n = 0;
    const char* s = PyUnicode_AsUTF8AndSize(name.ptr(), &n);
    if (s == nullptr) throw py::error_already_set();
    out.setSymbol(capnp::Text::Reader(s, static_cast<std::size_t>(n)));
  } else {
    throw BadValue{PyExc_TypeError,
                   "cannot send a " + type_name(o) +
                       " (bulkhead values are None, bool, int, float, str, bytes, list, tuple, "
                       "dict and bulkhead.Atom)",
                   {}};
  }
}

// Received symbols -> their (interned) Atoms, skipping a Python call for the
// common ones.  Bounded: a peer sending endless new names fills Atom's own
// table, not this one (see README: atoms, like Erlang's, are not collected).
constexpr std::size_t kAtomCache = 4096;
std::unordered_map<std::string, py::object>& atom_cache() {
  static auto* cache = new std::unordered_map<std::string, py::object>();  // never destroyed
  return *cache;
}

}  // namespace

void to_value(py::handle obj, schema::Value::Builder out, const char* root) {
  try {
    convert(obj.ptr(), out, 0);
  } catch (BadValue& e) {
    std::string where = e.path.empty() ? std::string(root) : std::string(root) + e.path;
    PyErr_SetString(e.kind, (e.what + " at " + where).c_str());
    throw py::error_already_set();
  }
}

py::object from_value(schema::Value::Reader v) {
  switch (v.which()) {
    case schema::Value::NULL_:
      return py::none();
    case schema::Value::BOOL:
      return py::bool_(v.getBool());
    case schema::Value::INT:
      return py::reinterpret_steal<py::object>(PyLong_FromLongLong(v.getInt()));
    case schema::Value::FLOAT:
      return py::float_(v.getFloat());
    case schema::Value::TEXT: {
      auto t = v.getText();
      PyObject* s = PyUnicode_DecodeUTF8(t.cStr(), static_cast<Py_ssize_t>(t.size()), "replace");
      if (s == nullptr) throw py::error_already_set();
      return py::reinterpret_steal<py::object>(s);
    }
    case schema::Value::DATA: {
      auto d = v.getData();
      return py::bytes(reinterpret_cast<const char*>(d.begin()), d.size());
    }
    case schema::Value::LIST: {
      auto l = v.getList();
      py::list out(l.size());
      for (unsigned i = 0; i < l.size(); ++i) {
        PyList_SET_ITEM(out.ptr(), i, from_value(l[i]).release().ptr());
      }
      return out;
    }
    case schema::Value::TUPLE: {
      auto l = v.getTuple();
      py::tuple out(l.size());
      for (unsigned i = 0; i < l.size(); ++i) {
        PyTuple_SET_ITEM(out.ptr(), i, from_value(l[i]).release().ptr());
      }
      return out;
    }
    case schema::Value::MAP: {
      py::dict out;
      for (auto e : v.getMap()) {
        py::object k = from_value(e.getKey());
        // A key Python cannot hash (a list from a C++ peer) becomes a tuple.
        if (PyList_Check(k.ptr())) k = py::tuple(k);
        if (PyDict_SetItem(out.ptr(), k.ptr(), from_value(e.getValue()).ptr()) != 0) {
          throw py::error_already_set();
        }
      }
      return out;
    }
    case schema::Value::SYMBOL: {
      auto t = v.getSymbol();
      std::string name(t.cStr(), t.size());
      auto& cache = atom_cache();
      if (auto it = cache.find(name); it != cache.end()) return it->second;
      PyObject* s = PyUnicode_DecodeUTF8(t.cStr(), static_cast<Py_ssize_t>(t.size()), "replace");
      if (s == nullptr) throw py::error_already_set();
      py::object atom = types().atom(py::reinterpret_steal<py::object>(s));
      if (cache.size() < kAtomCache) cache.emplace(std::move(name), atom);
      return atom;
    }
  }
  return py::none();
}

py::object from_exit_reason(schema::ExitReason::Reader r) {
  auto& t = types();
  using py::arg;
  switch (r.which()) {
    case schema::ExitReason::NORMAL:
      return t.exit_reason("normal");
    case schema::ExitReason::SHUTDOWN:
      return t.exit_reason("shutdown");
    case schema::ExitReason::EXCEPTION: {
      auto x = r.getException();
      return t.exit_reason("exception", arg("type") = std::string(x.getType()),
                           arg("message") = std::string(x.getMessage()),
                           arg("traceback") = std::string(x.getTraceback()),
                           arg("actor") = std::string(x.getActor()));
    }
    case schema::ExitReason::SIGNAL:
      return t.exit_reason("signal", arg("signal") = r.getSignal().getNumber(),
                           arg("core_dumped") = r.getSignal().getCoreDumped());
    case schema::ExitReason::EXIT_CODE:
      return t.exit_reason("exit_code", arg("exit_code") = r.getExitCode());
    case schema::ExitReason::KILLED_BY_LIMIT:
      return t.exit_reason("killed_by_limit",
                           arg("text") = std::string(r.getKilledByLimit().getDetail()));
    case schema::ExitReason::START_FAILURE:
      return t.exit_reason("start_failure", arg("text") = std::string(r.getStartFailure()));
    case schema::ExitReason::READY_TIMEOUT:
      return t.exit_reason("ready_timeout",
                           arg("text") = std::to_string(r.getReadyTimeout()) + " ms");
    case schema::ExitReason::PROTOCOL_VIOLATION:
      return t.exit_reason("protocol_violation",
                           arg("text") = std::string(r.getProtocolViolation()));
  }
  return t.exit_reason("unknown");
}

py::object from_message(const worker::Message& m) {
  auto p = m.envelope().getPayload();
  switch (p.which()) {
    case schema::Envelope::Payload::VALUE:
      return from_value(p.getValue());
    case schema::Envelope::Payload::EXIT_REASON: {
      auto src = m.envelope().getSource();
      py::object ref =
          py::cast(PyRef{worker::ActorRef{src.getWorker(), src.getIncarnation(), src.getActor()}});
      py::object reason = from_exit_reason(p.getExitReason());
      return m.kind() == schema::Kind::EXIT ? types().exit(ref, reason) : types().down(ref, reason);
    }
    case schema::Envelope::Payload::TYPED:
      // A C++ actor's own struct: Python sees its schema id only.
      return py::make_tuple(types().atom("typed"), p.getTyped().getSchemaId());
    default:
      return py::none();
  }
}

worker::Target to_target(py::handle obj) {
  if (PyUnicode_Check(obj.ptr())) return obj.cast<std::string>();
  if (py::isinstance<PyRef>(obj)) return obj.cast<const PyRef&>().ref;
  PyErr_SetString(
      PyExc_TypeError,
      ("a target is an actor name (str) or a bulkhead.Ref, not " + type_name(obj)).c_str());
  throw py::error_already_set();
}

}  // namespace bulkhead::python
