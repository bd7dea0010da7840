// bench/python_figures.cpp: Python actors (issue 5), with their baselines.
//
//   mp_pipe_rtt          baseline: multiprocessing.Pipe round trip of a small
//                        tuple between two /usr/bin/python3 processes pinned
//                        like ours (bench/python/mp_pipe_rtt.py), same run
//   py_call_rtt_hot      a Python actor calls a Python actor in another worker
//                        back to back (the same small tuple), timed in the
//                        caller with time.perf_counter_ns: median and p99
//   py_cast_throughput   casts from a Python actor to a Python counter in
//                        another worker, ended by one call: msgs/s
//   py_restart_ready     SIGKILL of a one_for_one Python child to its new
//                        worker ready (the Python zygote's spare, forked
//                        ahead of time with the modules imported, takes
//                        over), from the supervisor's events; 20 ms between
//                        restarts
//   py_restart_ready_pidfd  the same with the supervisor's early death
//                        notices off (BULKHEAD_DEATH_NOTICE=0): it learns of
//                        the death from the pidfd, after the kernel has torn
//                        the old worker down
//   py_cold_start_ready  the same with `zygote = false`: exec, a fresh
//                        interpreter, the imports
// The actors are bench/python/bench_actors.py.
#include <sched.h>
#include <signal.h>

#include <array>
#include <cstdio>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/figure.hpp"
#include "bench/stats.hpp"
#include "bench/supervisor_process.hpp"
#include "bench/timing.hpp"
#include "worker/client.hpp"

namespace bulkhead::bench {
namespace {

const char* const kPyDir = BULKHEAD_BENCH_PY_DIR;  // bench/python in the source tree

std::string py_tree(bool zygote) {
  return std::string("[tree]\nname = \"pybench\"\nzygote = ") + (zygote ? "true" : "false") +
         "\npython_path = \"" + kPyDir +
         "\"\n[root]\nstrategy = \"one_for_one\"\nintensity = 1000000\nperiod_ms = 1000\n"
         "[[root.children]]\nid = \"caller\"\n"
         "actors = [{ python = \"bench_actors:Pinger\", name = \"pypinger\" }]\n"
         "[[root.children]]\nid = \"callee\"\nmailbox_bytes = 1048576\n"
         "actors = [{ python = \"bench_actors:Echo\", name = \"pyecho\" }, "
         "{ python = \"bench_actors:Counter\", name = \"pycounter\" }]\n";
}

void pin(long long pid, int cpu) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  ::sched_setaffinity(static_cast<pid_t>(pid), sizeof set, &set);
}

// A Python tree with a client attached; caller and callee on the two CPUs.
struct PyRig {
  SupervisorProcess sup;
  std::unique_ptr<worker::Client> client;
  explicit PyRig(const RunConfig& cfg) : sup(py_tree(true), true) {
    sup.wait_for([](const Event& e) { return e.name == "tree_started"; });
    client = worker::Client::connect(sup.socket());
    pin(sup.pids.at("root/caller"), cfg.child_cpu);
    pin(sup.pids.at("root/callee"), cfg.parent_cpu);
  }
  schema::Value::Reader ask(const char* op, const char* to, long long n, worker::CallResult& keep) {
    keep = client->call("pypinger", worker::value_payload([&](schema::Value::Builder v) {
                          auto t = v.initTuple(3);
                          t[0].setSymbol(op);
                          t[1].setText(to);
                          t[2].setInt(n);
                        }),
                        std::chrono::seconds(300));
    if (!keep.ok()) throw std::runtime_error(std::string(op) + ": " + keep.error_text());
    return keep.value();
  }
};

Result py_call_rtt_hot(const RunConfig& cfg) {
  PyRig rig(cfg);
  const long long n = cfg.pick(20000LL, 4000LL);
  worker::CallResult r;
  (void)rig.ask("ping", "pyecho", n / 10, r);  // warm up
  auto t = rig.ask("ping", "pyecho", n, r).getTuple();
  Latency l;
  l.median_ns = static_cast<double>(t[0].getInt());
  l.p99_ns = static_cast<double>(t[1].getInt());
  l.samples = static_cast<std::uint64_t>(n);
  return l;
}

Result py_cast_throughput(const RunConfig& cfg) {
  PyRig rig(cfg);
  const long long n = cfg.pick(1'000'000LL, 200'000LL);
  std::vector<double> rates;
  worker::CallResult r;
  (void)rig.ask("flood", "pycounter", n / 10, r);  // warm up
  for (int rep = 0; rep < cfg.pick(3, 2); ++rep) {
    auto ns = rig.ask("flood", "pycounter", n, r).getInt();
    rates.push_back(static_cast<double>(n) * 1e9 / static_cast<double>(ns));
  }
  return summarize_rates(rates);
}

Result py_restart(const RunConfig& cfg, bool zygote, bool death_notice = true) {
  SupervisorProcess sup(py_tree(zygote), false, death_notice);
  sup.wait_for([](const Event& e) { return e.name == "tree_started"; });
  const int n = zygote ? cfg.pick(200, 40) : cfg.pick(30, 8);
  const int warm = zygote ? 10 : 2;
  LatencySamples s(static_cast<std::size_t>(n));
  RestartPhases phases;
  for (int i = 0; i < n + warm; ++i) {
    long long pid = sup.pids.at("root/callee");
    // Let it settle: the zygote forks its next spare once idle for 2 ms
    // (worker.cpp); a worker killed sooner is forked on demand.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    auto t0 = Clock::now();
    ::kill(static_cast<pid_t>(pid), SIGKILL);
    auto t0_ns = std::chrono::duration_cast<nanoseconds>(t0.time_since_epoch()).count();
    long long ready = phases.wait(sup, "root/callee", pid, t0_ns, i >= warm);
    if (i >= warm) s.add(ready - t0_ns);
  }
  phases.print(!zygote        ? "py_cold_start_ready"
               : death_notice ? "py_restart_ready"
                              : "py_restart_ready_pidfd");
  return s.summarize();
}

Result mp_pipe_rtt(const RunConfig& cfg) {
  const long long n = cfg.pick(20000LL, 4000LL);
  std::string cmd = "/usr/bin/python3 '" + std::string(kPyDir) + "/mp_pipe_rtt.py' " +
                    std::to_string(n) + " " + std::to_string(cfg.parent_cpu) + " " +
                    std::to_string(cfg.child_cpu);
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) throw std::runtime_error("cannot run " + cmd);
  std::array<char, 256> line{};
  std::string out;
  while (std::fgets(line.data(), line.size(), p) != nullptr) out += line.data();
  if (::pclose(p) != 0) throw std::runtime_error(cmd + " failed");
  std::istringstream in(out);
  Latency l;
  if (!(in >> l.median_ns >> l.p99_ns)) throw std::runtime_error("bad output: " + out);
  l.samples = static_cast<std::uint64_t>(n);
  return l;
}

}  // namespace

void add_python_figures(Catalog& c) {
  c.figures.push_back(
      {"mp_pipe_rtt", "multiprocessing.Pipe round trip of a small tuple (baseline)", mp_pipe_rtt});
  c.figures.push_back(
      {"py_call_rtt_hot", "Python actor calls a Python actor in another worker", py_call_rtt_hot});
  c.figures.push_back(
      {"py_cast_throughput", "casts between two Python actors in two workers", py_cast_throughput});
  c.figures.push_back({"py_restart_ready", "SIGKILL of a Python child to ready (zygote fork)",
                       [](const RunConfig& cfg) -> Result { return py_restart(cfg, true); }});
  c.figures.push_back(
      {"py_restart_ready_pidfd", "the same, death notices off: the supervisor waits for the pidfd",
       [](const RunConfig& cfg) -> Result { return py_restart(cfg, true, false); }});
  c.figures.push_back({"py_cold_start_ready", "the same without zygote: exec, fresh interpreter",
                       [](const RunConfig& cfg) -> Result { return py_restart(cfg, false); }});
  c.ratios.push_back({"py_call_rtt_hot", "mp_pipe_rtt"});
  c.ratios.push_back({"py_restart_ready", "py_cold_start_ready"});
  c.ratios.push_back({"py_restart_ready", "py_restart_ready_pidfd"});
  c.targets.push_back({"py_call_rtt_hot", "", Target::Op::at_most, 5000, "<= 5 us"});
  c.targets.push_back(
      {"py_call_rtt_hot", "mp_pipe_rtt", Target::Op::at_most, 1.0 / 7.0, "<= 1/7 mp_pipe_rtt"});
  c.targets.push_back({"py_cast_throughput", "", Target::Op::at_least, 5e5, ">= 500k msgs/s"});
  c.targets.push_back({"py_restart_ready", "", Target::Op::at_most, 2e6, "<= 2 ms"});
}

}  // namespace bulkhead::bench
