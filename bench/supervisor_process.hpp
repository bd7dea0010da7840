// bench/supervisor_process.hpp: a real bulkhead-supervisor under a benchmark.
//
// Runs BIN_DIR/bulkhead-supervisor (BULKHEAD_BIN_DIR, else <build>/bin) on a
// tree written to a fresh temporary directory, with `--events FILE`, and
// reads that event log as it grows (wait_for).  The destructor stops it with
// SIGTERM and removes the directory.  Used by supervisor_figures.cpp and
// python_figures.cpp.
#pragma once

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bench/timing.hpp"

namespace bulkhead::bench {

namespace fs = std::filesystem;

inline fs::path bin_dir() {
  if (const char* d = std::getenv("BULKHEAD_BIN_DIR")) return d;
  return fs::read_symlink("/proc/self/exe").parent_path().parent_path() / "bin";
}

// One JSON line of the supervisor's event log, the fields we need.
struct Event {
  std::string name, child;
  long long pid = 0;
  long long mono_ns = 0;
};

inline std::string field(const std::string& line, const std::string& key) {
  auto k = line.find("\"" + key + "\":");
  if (k == std::string::npos) return {};
  auto v = k + key.size() + 3;
  if (line[v] == '"') return line.substr(v + 1, line.find('"', v + 1) - v - 1);
  auto end = line.find_first_of(",}", v);
  return line.substr(v, end - v);
}

// A running bulkhead-supervisor and the tail of its event log.
class SupervisorProcess {
 public:
  // `death_notice = false` runs the supervisor with BULKHEAD_DEATH_NOTICE=0:
  // it learns of deaths from the pidfd only (the baseline for the restarts).
  explicit SupervisorProcess(const std::string& tree_toml, bool with_socket = false,
                             bool death_notice = true) {
    char tmpl[] = "/tmp/bulkhead-bench-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    std::ofstream(dir_ / "tree.toml") << tree_toml;
    std::string sup = (bin_dir() / "bulkhead-supervisor").string();
    std::string tree = (dir_ / "tree.toml").string();
    std::string events = (dir_ / "events.jsonl").string();
    std::string log = (dir_ / "supervisor.log").string();
    std::vector<std::string> env_text;
    for (char** e = environ; *e != nullptr; ++e) {
      if (std::strncmp(*e, "BULKHEAD_DEATH_NOTICE=", 22) != 0) env_text.emplace_back(*e);
    }
    if (!death_notice) env_text.emplace_back("BULKHEAD_DEATH_NOTICE=0");
    std::vector<char*> envp;
    for (auto& e : env_text) envp.push_back(e.data());
    envp.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      // The bench pins itself to one CPU for its two-process figures; a
      // supervisor runs its tree unpinned, as deployed (left pinned, the
      // supervisor, its zygotes and every worker shared one CPU).
      cpu_set_t all;
      CPU_ZERO(&all);
      for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) CPU_SET(cpu, &all);
      ::sched_setaffinity(0, sizeof all, &all);
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      ::dup2(fd, 2);
      ::dup2(fd, 1);
      std::string sock = with_socket ? (dir_ / "s.sock").string() : std::string("none");
      const char* argv[] = {sup.c_str(),        tree.c_str(), "--events", events.c_str(),
                            "--log-level",      "warn",       "--socket", sock.c_str(),
                            "--control-socket", "none",       nullptr};
      ::execve(sup.c_str(), const_cast<char* const*>(argv), envp.data());
      ::_exit(127);
    }
    events_path_ = events;
  }
  ~SupervisorProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int st = 0;
      ::waitpid(pid_, &st, 0);
    }
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] std::string socket() const { return (dir_ / "s.sock").string(); }

  // Next event matching `pred`, reading the log as it grows.
  template <class Pred>
  Event wait_for(Pred pred, std::chrono::seconds timeout = std::chrono::seconds(20)) {
    auto deadline = Clock::now() + timeout;
    for (;;) {
      while (next_ < lines_.size()) {
        Event e = parse(lines_[next_++]);
        if (pred(e)) return e;
      }
      read_more();
      if (next_ >= lines_.size()) {
        if (Clock::now() > deadline) throw std::runtime_error("supervisor event timed out");
        int st = 0;
        if (::waitpid(pid_, &st, WNOHANG) == pid_) {
          pid_ = 0;
          throw std::runtime_error("supervisor exited early; see its log in " + dir_.string());
        }
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
  }

  // Current pid of each child (from spawned events seen so far).
  std::map<std::string, long long> pids;

 private:
  static Event parse(const std::string& line) {
    Event e;
    e.name = field(line, "event");
    e.child = field(line, "child");
    auto p = field(line, "pid");
    if (!p.empty()) e.pid = std::stoll(p);
    auto m = field(line, "mono_ns");
    if (!m.empty()) e.mono_ns = std::stoll(m);
    return e;
  }
  void read_more() {
    if (!in_.is_open()) {
      in_.open(events_path_);
      if (!in_.is_open()) return;
    }
    std::string line;
    while (true) {
      auto pos = in_.tellg();
      if (!std::getline(in_, line)) {
        in_.clear();
        if (pos >= 0) in_.seekg(pos);
        break;
      }
      if (in_.eof()) {  // a partial last line: read it again later
        in_.clear();
        in_.seekg(pos);
        break;
      }
      lines_.push_back(line);
      Event e = parse(line);
      if (e.name == "spawned" && !e.child.empty()) pids[e.child] = e.pid;
    }
  }

  fs::path dir_;
  pid_t pid_ = 0;
  std::string events_path_;
  std::ifstream in_;
  std::vector<std::string> lines_;
  std::size_t next_ = 0;
};

// Where a restart's time goes, from the supervisor's own event stamps:
// kill -> `exited` (the kernel tears the process down, the supervisor reaps
// it), `exited` -> `spawned` (decision, fork from the zygote), `spawned` ->
// `ready` (the new worker attaches and runs init).  Medians go to stderr
// beside the figure.
class RestartPhases {
 public:
  // Waits for the events of `child`'s restart after `old_pid` was killed at
  // `t0_ns` (CLOCK_MONOTONIC); returns the `ready` stamp.
  long long wait(SupervisorProcess& sup, const std::string& child, long long old_pid,
                 long long t0_ns, bool record) {
    auto exited = sup.wait_for(
        [&](const Event& e) { return e.name == "exited" && e.child == child && e.pid == old_pid; });
    auto spawned = sup.wait_for([&](const Event& e) {
      return e.name == "spawned" && e.child == child && e.pid != old_pid;
    });
    auto ready = sup.wait_for([&](const Event& e) {
      return e.name == "ready" && e.child == child && e.pid == spawned.pid;
    });
    if (record) {
      exit_.push_back(static_cast<double>(exited.mono_ns - t0_ns));
      spawn_.push_back(static_cast<double>(spawned.mono_ns - exited.mono_ns));
      ready_.push_back(static_cast<double>(ready.mono_ns - spawned.mono_ns));
    }
    return ready.mono_ns;
  }
  void print(const char* figure) {
    std::fprintf(stderr,
                 "bulkhead-bench: %s phases (medians): kill->exited %.0f us, exited->spawned "
                 "%.0f us, spawned->ready %.0f us\n",
                 figure, median(exit_) / 1e3, median(spawn_) / 1e3, median(ready_) / 1e3);
  }

 private:
  static double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::nth_element(v.begin(), v.begin() + static_cast<long>(v.size() / 2), v.end());
    return v[v.size() / 2];
  }
  std::vector<double> exit_, spawn_, ready_;
};

}  // namespace bulkhead::bench
