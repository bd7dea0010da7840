// bulkhead-pyworker: a Bulkhead worker that hosts Python actors.
//
// Command line (the supervisor builds it from the tree file):
//   bulkhead-pyworker --bulkhead-worker|--bulkhead-zygote
//       --python-path=DIR[:DIR...] --python-actors=module:Class[,module:Class...]
// It embeds one CPython 3.11 interpreter (Debian's libpython3.11; sys.executable
// is /usr/bin/python3), puts the path dirs first on sys.path, imports the
// `bulkhead` package (found in ../python next to this binary) and every
// actor module, registers each class as an actor type named "module:Class",
// then runs as a worker (worker::run).
//
// Zygote mode: the same, then it forks workers on request (one kept forked
// ahead of time: RunHooks::spare); the modules are
// imported once, in the zygote, before any worker exists, so a restarted
// worker starts from the freshly imported modules, never from an earlier
// incarnation's state.  The fork hooks keep CPython consistent across fork
// (PyOS_BeforeFork / PyOS_AfterFork_*: import lock, GIL, at-fork handlers
// such as `random` reseeding).  A module that fails to import here is
// imported again by the worker's init, whose traceback makes the start
// failure's reason.
//
// The GIL: held by the dispatch thread except while the worker waits for
// messages (RunHooks before_wait/after_wait) or a handler waits in a call.
// Signals are the worker library's (the interpreter installs no handlers);
// stdout/stderr are unbuffered.  The process ends with _exit after the
// worker stops: no interpreter finalisation, so atexit handlers do not run
// (use GenServer.terminate).
#include <Python.h>
#include <pybind11/embed.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "python/native/bindings.hpp"
#include "python/native/py_actor.hpp"
#include "worker/actor.hpp"
#include "worker/worker.hpp"

PYBIND11_EMBEDDED_MODULE(_bulkhead_native, m) {
  bulkhead::python::define_native(m);
}

namespace {

namespace py = pybind11;

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss{std::string(s)};
  std::string part;
  while (std::getline(ss, part, sep)) {
    if (!part.empty()) out.push_back(part);
  }
  return out;
}

bool start_interpreter() {
  PyConfig config;
  PyConfig_InitPythonConfig(&config);
  config.install_signal_handlers = 0;  // the worker library owns the signals
  config.buffered_stdio = 0;           // lines reach the supervisor's log at once
  config.parse_argv = 0;
  PyStatus st = PyConfig_SetBytesString(&config, &config.program_name, "/usr/bin/python3");
  if (!PyStatus_Exception(st)) st = Py_InitializeFromConfig(&config);
  PyConfig_Clear(&config);
  if (PyStatus_Exception(st)) {
    std::fprintf(stderr, "bulkhead-pyworker: cannot start Python: %s\n",
                 st.err_msg != nullptr ? st.err_msg : "?");
    return false;
  }
  return true;
}

std::string package_dir() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : (exe.parent_path().parent_path() / "python").string();
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> path, classes;
  std::vector<char*> rest{argv[0]};
  bool zygote = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a.rfind("--python-path=", 0) == 0) {
      path = split(a.substr(std::strlen("--python-path=")), ':');
    } else if (a.rfind("--python-actors=", 0) == 0) {
      classes = split(a.substr(std::strlen("--python-actors=")), ',');
    } else {
      zygote = zygote || a == bulkhead::worker::kZygoteFlag;
      rest.push_back(argv[i]);
    }
  }
  rest.push_back(nullptr);

  bulkhead::worker::ActorRegistry registry;
  for (const auto& c : classes) {
    registry.add(c, [c] { return bulkhead::python::make_py_actor(c); });
  }
  if (!start_interpreter()) return bulkhead::worker::kExitStartFailure;
  {
    py::module_ sys = py::module_::import("sys");
    py::list sys_path = sys.attr("path");
    sys_path.insert(0, package_dir());
    for (auto it = path.rbegin(); it != path.rend(); ++it) sys_path.insert(0, *it);
    try {
      py::module_::import("bulkhead");
    } catch (py::error_already_set& e) {
      std::fprintf(stderr, "bulkhead-pyworker: cannot import the bulkhead package: %s\n", e.what());
      return bulkhead::worker::kExitStartFailure;
    }
    if (zygote) {
      (void)py::module_::import("asyncio");  // for async handlers; free in a zygote
    }
    for (const auto& c : classes) {
      try {
        (void)py::module_::import(c.substr(0, c.find(':')).c_str());
      } catch (py::error_already_set&) {
        // The worker's init imports it again and reports the traceback.
      }
    }
  }
  if (zygote) {
    // Every object imported so far is shared copy-on-write with the workers:
    // keep the cycle collector's hands (and refcount-free scans) off them.
    (void)py::module_::import("gc").attr("collect")();
    (void)py::module_::import("gc").attr("freeze")();
  }
  // The dispatch thread holds the GIL while it handles messages and lets go
  // of it while the worker waits for more (and while a handler waits in a
  // call), so other Python threads run then.
  PyThreadState* waiting = nullptr;
  bulkhead::worker::RunHooks hooks;
  hooks.before_fork = [] { PyOS_BeforeFork(); };
  hooks.after_fork_parent = [] { PyOS_AfterFork_Parent(); };
  hooks.after_fork_child = [] { PyOS_AfterFork_Child(); };
  hooks.spare = true;  // a fork of the interpreter + its after-fork work: done ahead of time
  hooks.before_wait = [&] { waiting = PyEval_SaveThread(); };
  hooks.after_wait = [&] { PyEval_RestoreThread(waiting); };
  int code = bulkhead::worker::run(static_cast<int>(rest.size()) - 1, rest.data(), registry, hooks);
  std::fflush(nullptr);
  ::_exit(code);
}
