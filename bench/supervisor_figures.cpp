// bench/supervisor_figures.cpp: how fast the supervisor heals, what it costs.
//
//   restart_ready_cpp   SIGKILL of a one_for_one C++ child -> its new worker
//                       reported ready (the supervisor's `ready` event's
//                       CLOCK_MONOTONIC stamp minus the time just before kill)
//   restart_ready_cpp_pidfd  the same with early death notices off
//                       (BULKHEAD_DEATH_NOTICE=0): the death is seen from the pidfd
//   spawn_ready_cpp     baseline: a fresh fork+exec of the same (static) stock
//                       worker by the supervisor's own spawn code, to its
//                       ready message, with no supervisor in between
//   spawn_ready_cpp_dynamic  the same for a dynamically linked worker
//                       (examples/custom_worker): the dynamic linker's cost
//   supervisor_rss_200_kib   the supervisor's resident set with 200 children
//   supervisor_cpu_per_restart_us  supervisor CPU time per restart (200
//                       children, one killed at a time)
//   actor_call_rtt_hot  a C++ actor (pinger) calls a C++ actor (echo) in
//                       another worker process, back to back; timed inside
//                       the caller, reported as median and p99
//   actor_call_rtt_cold the same with the callee idle first (200 us between
//                       calls: past its poll window, asleep on its futex)
//   actor_cast_throughput  casts from one worker to a counter in another,
//                       ended by one call (all handled): msgs/s
//   idle_cpu_100_workers   CPU used by 100 idle workers over 2 s, as a
//                       fraction of one core
// The supervisor runs as a real child process of the benchmark with
// `--events FILE`; figures read that file as it grows.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>

#include "bench/figure.hpp"
#include "bench/stats.hpp"
#include "bench/supervisor_process.hpp"
#include "bench/timing.hpp"
#include "ipc/mailbox.hpp"
#include "ipc/packet.hpp"
#include "ipc/segment.hpp"
#include "schema/codec.hpp"
#include "schema/control.capnp.h"
#include "supervisor/spawn.hpp"
#include "worker/client.hpp"

extern char** environ;

namespace bulkhead::bench {
namespace {

namespace fs = std::filesystem;

std::string one_child_tree() {
  return "[root]\nstrategy = \"one_for_one\"\nintensity = 1000000\nperiod_ms = 1000\n"
         "[[root.children]]\nid = \"w\"\nactors = [{ type = \"echo\" }]\n";
}

Result restart_ready_cpp(const RunConfig& cfg, bool death_notice) {
  SupervisorProcess sup(one_child_tree(), false, death_notice);
  sup.wait_for([](const Event& e) { return e.name == "tree_started"; });
  const int n = cfg.pick(300, 60);
  LatencySamples s(static_cast<std::size_t>(n));
  RestartPhases phases;
  for (int i = 0; i < n + 10; ++i) {
    long long pid = sup.pids.at("root/w");
    std::this_thread::sleep_for(std::chrono::milliseconds(2));  // let it settle
    auto t0 = Clock::now();
    ::kill(static_cast<pid_t>(pid), SIGKILL);
    auto t0_ns = std::chrono::duration_cast<nanoseconds>(t0.time_since_epoch()).count();
    // The first few warm caches up.
    long long ready = phases.wait(sup, "root/w", pid, t0_ns, i >= 10);
    if (i >= 10) s.add(ready - t0_ns);
  }
  phases.print(death_notice ? "restart_ready_cpp" : "restart_ready_cpp_pidfd");
  return s.summarize();
}

// The supervisor's own spawn code, no supervisor around it.
Result spawn_ready(const RunConfig& cfg, const std::string& binary, const char* actor_type) {
  ipc::MailboxLayout layout;
  const int n = cfg.pick(300, 60);
  LatencySamples s(static_cast<std::size_t>(n));
  auto seg = ipc::Segment::create(ipc::segment_name(ipc::Instance::self(), "benchspawn"),
                                  layout.payload_bytes());
  seg.unlink();
  ipc::format_mailbox(seg, layout, 0);
  auto board = ipc::Segment::create(ipc::segment_name(ipc::Instance::self(), "benchbells"),
                                    ipc::bell_board_bytes(1));
  board.unlink();
  capnp::MallocMessageBuilder mb;
  auto start = mb.initRoot<schema::ToWorker>().initStart();
  start.setChildId("bench");
  start.setIncarnation(1);
  start.initActors(1)[0].setType(actor_type);
  auto words = capnp::messageToFlatArray(mb);
  auto bytes = words.asBytes();
  for (int i = 0; i < n + 10; ++i) {
    ipc::reset_control_ring(seg, layout);
    auto view = ipc::mailbox_view(seg, layout);
    ipc::RingProducer p(view.control_ring, "bench/control");
    if (p.try_push(ipc::kControlFrame, {reinterpret_cast<const std::byte*>(bytes.begin()),
                                        bytes.size()}) != ipc::PushStatus::ok) {
      throw std::runtime_error("start message does not fit");
    }
    auto [ours, theirs] = ipc::seqpacket_pair();
    auto t0 = Clock::now();
    auto child = supervisor::spawn_worker(binary, seg.fd(), theirs.get(), board.fd());
    theirs.reset();
    alignas(8) std::byte buf[4096];
    std::size_t len = 0;
    auto st = ipc::recv_packet(ours.get(), buf, len);  // blocking: the ready report
    auto t1 = Clock::now();
    bool ready = false;
    if (st == ipc::RecvStatus::ok) {
      schema::read_message(std::span<const std::byte>(buf, len), {}, [&](capnp::MessageReader& r) {
        ready = r.getRoot<schema::ToSupervisor>().isReady();
      });
    }
    ::kill(child.pid, SIGKILL);
    siginfo_t si{};
    ::waitid(P_PID, static_cast<id_t>(child.pid), &si, WEXITED);
    if (!ready) throw std::runtime_error(binary + " did not report ready");
    if (i >= 10) s.add(ns_between(t0, t1));
  }
  return s.summarize();
}

std::string tree_of(int children) {
  std::string t = "[root]\nstrategy = \"one_for_one\"\nintensity = 1000000\nperiod_ms = 1000\n";
  for (int i = 0; i < children; ++i) {
    t += "[[root.children]]\nid = \"w" + std::to_string(i) + "\"\nactors = [{ type = \"echo\" }]\n";
  }
  return t;
}

long long proc_status_kib(pid_t pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::stoll(line.substr(key.size() + 1));
  }
  throw std::runtime_error("no " + key + " in /proc/PID/status");
}

long long proc_cpu_ticks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  std::istringstream rest(line.substr(line.rfind(')') + 2));
  std::string f;
  long long utime = 0, stime = 0;
  for (int i = 3; i <= 15; ++i) {
    rest >> f;
    if (i == 14) utime = std::stoll(f);
    if (i == 15) stime = std::stoll(f);
  }
  return utime + stime;
}

struct TwoHundred {
  double rss_kib = 0;
  double cpu_us_per_restart = 0;
};

TwoHundred measure_200(const RunConfig& cfg) {
  SupervisorProcess sup(tree_of(200));
  sup.wait_for([](const Event& e) { return e.name == "tree_started"; }, std::chrono::seconds(120));
  TwoHundred r;
  r.rss_kib = static_cast<double>(proc_status_kib(sup.pid(), "VmRSS"));
  const int kills = cfg.pick(200, 40);
  long long cpu0 = proc_cpu_ticks(sup.pid());
  for (int i = 0; i < kills; ++i) {
    std::string child = "root/w" + std::to_string(i % 200);
    long long pid = sup.pids.at(child);
    ::kill(static_cast<pid_t>(pid), SIGKILL);
    sup.wait_for([&](const Event& e) { return e.name == "ready" && e.child == child; });
  }
  long long cpu1 = proc_cpu_ticks(sup.pid());
  double tick_us = 1e6 / static_cast<double>(::sysconf(_SC_CLK_TCK));
  r.cpu_us_per_restart = static_cast<double>(cpu1 - cpu0) * tick_us / kills;
  return r;
}

// --- actors -----------------------------------------------------------------

std::string actor_tree() {
  return "[tree]\nname = \"bench\"\n[root]\nstrategy = \"one_for_one\"\n"
         "[[root.children]]\nid = \"caller\"\nactors = [{ type = \"pinger\", name = "
         "\"pinger\" }]\n"
         "[[root.children]]\nid = \"callee\"\nactors = [{ type = \"echo\", name = \"echo\" "
         "}, { type = \"counter\", name = \"counter\" }]\nmailbox_bytes = 1048576\n";
}

// A supervisor running actor_tree(), with a client attached.
struct ActorRig {
  SupervisorProcess sup;
  std::unique_ptr<worker::Client> client;
  ActorRig() : sup(actor_tree(), true) {
    sup.wait_for([](const Event& e) { return e.name == "tree_started"; });
    client = worker::Client::connect(sup.socket());
    // Like the ring figures: the two ends on different CPUs.
    pin(sup.pids.at("root/caller"), 1);
    pin(sup.pids.at("root/callee"), 0);
  }
  static void pin(long long pid, int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    ::sched_setaffinity(static_cast<pid_t>(pid), sizeof set, &set);
  }
  worker::CallResult call(const worker::PayloadFn& f) {
    return client->call("pinger", f, std::chrono::seconds(120));
  }
};

Latency ping(const RunConfig& cfg, long long gap_us) {
  ActorRig rig;
  const long long n = cfg.pick(gap_us ? 3000LL : 20000LL, gap_us ? 600LL : 4000LL);
  auto req = [&](long long count) {
    return worker::value_payload([count, gap_us](schema::Value::Builder v) {
      auto t = v.initTuple(4);
      t[0].setSymbol("ping");
      t[1].setText("echo");
      t[2].setInt(count);
      t[3].setInt(gap_us);
    });
  };
  (void)rig.call(req(n / 10));  // warm up: channels open, caches and predictors warm
  auto r = rig.call(req(n));
  if (!r.ok()) throw std::runtime_error(std::string("ping: ") + r.error_text());
  auto t = r.value().getTuple();
  Latency l;
  l.median_ns = static_cast<double>(t[0].getInt());
  l.p99_ns = static_cast<double>(t[1].getInt());
  l.samples = static_cast<std::uint64_t>(n);
  return l;
}

Result cast_throughput(const RunConfig& cfg) {
  ActorRig rig;
  const long long n = cfg.pick(2'000'000LL, 300'000LL);
  std::vector<double> rates;
  for (int rep = 0; rep < cfg.pick(3, 2); ++rep) {
    auto r = rig.call(worker::value_payload([n](schema::Value::Builder v) {
      auto t = v.initTuple(3);
      t[0].setSymbol("flood");
      t[1].setText("counter");
      t[2].setInt(n);
    }));
    if (!r.ok()) throw std::runtime_error(std::string("flood: ") + r.error_text());
    rates.push_back(static_cast<double>(n) * 1e9 / static_cast<double>(r.value().getInt()));
  }
  return summarize_rates(rates);
}

Result idle_cpu_100(const RunConfig& cfg) {
  std::string t = "[tree]\nname = \"idle\"\n[root]\nstrategy = \"one_for_one\"\n";
  for (int i = 0; i < 100; ++i) {
    t += "[[root.children]]\nid = \"w" + std::to_string(i) + "\"\nactors = [{ type = \"echo\" }]\n";
  }
  SupervisorProcess sup(t);
  sup.wait_for([](const Event& e) { return e.name == "tree_started"; }, std::chrono::seconds(60));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // let poll windows pass
  auto total = [&] {
    long long ticks = 0;
    for (auto& [child, pid] : sup.pids) ticks += proc_cpu_ticks(static_cast<pid_t>(pid));
    return ticks;
  };
  const auto window = std::chrono::milliseconds(cfg.pick(3000, 1000));
  long long t0 = total();
  auto w0 = Clock::now();
  std::this_thread::sleep_for(window);
  long long t1 = total();
  double secs = std::chrono::duration<double>(Clock::now() - w0).count();
  double tick_s = 1.0 / static_cast<double>(::sysconf(_SC_CLK_TCK));
  return Value{static_cast<double>(t1 - t0) * tick_s / secs};
}

}  // namespace

void add_supervisor_figures(Catalog& c) {
  c.figures.push_back({"spawn_ready_cpp",
                       "fork+exec of the static stock worker to ready (baseline)",
                       [](const RunConfig& cfg) -> Result {
                         return spawn_ready(cfg, (bin_dir() / "bulkhead-worker").string(), "echo");
                       }});
  c.figures.push_back(
      {"spawn_ready_cpp_dynamic", "fork+exec of a dynamically linked worker to ready",
       [](const RunConfig& cfg) -> Result {
         return spawn_ready(cfg, (bin_dir() / "bulkhead-example-worker").string(), "greeter");
       }});
  c.figures.push_back({"restart_ready_cpp",
                       "SIGKILL of a one_for_one C++ child to its new worker ready",
                       [](const RunConfig& cfg) { return restart_ready_cpp(cfg, true); }});
  c.figures.push_back({"restart_ready_cpp_pidfd",
                       "the same, death notices off: the supervisor waits for the pidfd",
                       [](const RunConfig& cfg) { return restart_ready_cpp(cfg, false); }});
  // One run of the 200-children tree gives both numbers.
  auto shared = std::make_shared<std::optional<TwoHundred>>();
  c.figures.push_back({"supervisor_rss_200_kib", "supervisor resident set with 200 children (KiB)",
                       [shared](const RunConfig& cfg) -> Result {
                         *shared = measure_200(cfg);
                         return Value{(*shared)->rss_kib};
                       }});
  c.figures.push_back({"supervisor_cpu_per_restart_us",
                       "supervisor CPU time per restart, 200 children (us)",
                       [shared](const RunConfig& cfg) -> Result {
                         if (!*shared) *shared = measure_200(cfg);
                         return Value{(*shared)->cpu_us_per_restart};
                       }});
  c.ratios.push_back({"restart_ready_cpp", "spawn_ready_cpp"});
  c.ratios.push_back({"restart_ready_cpp", "restart_ready_cpp_pidfd"});
  c.ratios.push_back({"spawn_ready_cpp_dynamic", "spawn_ready_cpp"});
  c.targets.push_back({"restart_ready_cpp", "", Target::Op::at_most, 1e6, "<= 1 ms"});

  c.figures.push_back({"actor_call_rtt_hot", "C++ actor calls a C++ actor in another worker",
                       [](const RunConfig& cfg) -> Result { return ping(cfg, 0); }});
  c.figures.push_back({"actor_call_rtt_cold", "the same, callee idle 200 us first (asleep)",
                       [](const RunConfig& cfg) -> Result { return ping(cfg, 200); }});
  c.figures.push_back(
      {"actor_cast_throughput", "casts between two workers, one-way", cast_throughput});
  c.figures.push_back(
      {"idle_cpu_100_workers", "CPU of 100 idle workers (fraction of a core)", idle_cpu_100});
  c.ratios.push_back({"actor_call_rtt_hot", "raw_spin_rtt"});
  c.ratios.push_back({"actor_call_rtt_cold", "futex_rtt"});
  c.targets.push_back({"actor_call_rtt_hot", "", Target::Op::at_most, 1000, "<= 1 us"});
  c.targets.push_back(
      {"actor_call_rtt_hot", "raw_spin_rtt", Target::Op::at_most, 2.0, "<= 2x raw_spin_rtt"});
  c.targets.push_back(
      {"actor_call_rtt_cold", "futex_rtt", Target::Op::at_most, 1.3, "<= 1.3x futex_rtt"});
  c.targets.push_back({"actor_cast_throughput", "", Target::Op::at_least, 5e6, ">= 5M msgs/s"});
  c.targets.push_back({"idle_cpu_100_workers", "", Target::Op::below, 0.01, "< 1% of a core"});
}

}  // namespace bulkhead::bench
