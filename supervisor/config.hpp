// supervisor/config.hpp: the supervision tree as data, loaded from TOML.
//
// What it is for: `load_tree()` reads and validates a whole tree file before
// anything is started.  Every problem found is reported (not only the first),
// each as "FILE:LINE:COL: key 'K': what is wrong".  Restart policy lives here
// as plain data; supervisor/tree.hpp interprets it.
//
// File format (see examples/tree.toml and README.md for a full example):
//   [tree]           name, worker (default worker binary), zygote (true),
//                    python_path (dirs of Python actor modules, relative to
//                    the tree file; a string or an array; default: its dir)
//   [root]           a supervisor: strategy, intensity, period_ms,
//                    auto_shutdown, children = [[root.children]] ...
//   a worker child:  id, type = "worker", binary, actors = [{type, name, args}]
//                    or Python actors [{python = "module:Class", name, args}]
//                    (then the binary defaults to bulkhead-pyworker), python_path,
//                    restart, shutdown, significant, start_timeout_ms, backoff,
//                    mailbox ("keep"/"drop"), mailbox_bytes, overflow
//                    ("block"/"fail"/"drop"), block_timeout_ms,
//                    log_file, log_max_bytes, log_max_files, log_rate (below)
// Actor names are unique in the whole tree (they are the registry).
//   a supervisor child: id, type = "supervisor", the [root] keys, restart,
//                    shutdown, significant; children or (simple_one_for_one)
//                    template = {worker keys} and instances = N
// Worker output (supervisor/output_capture.hpp): stdout and stderr lines go
// to the supervisor's log, or with log_file = "PATH" (relative to the tree
// file's directory, which must exist; "{id}" is replaced by the child id,
// and is required in a template) to that file alone, rotated when a line
// would make it exceed log_max_bytes (default 10 MiB, at least 16 KiB),
// keeping log_max_files old files (default 5; w.log -> w.1.log -> w.2.log).
// log_rate: lines per second a child may log, with bursts of 5 s worth
// (default 2000; 0 = no limit); the rest is dropped and counted.  Two
// children cannot share a log file.
#pragma once

#include <toml++/toml.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace bulkhead::supervisor {

using Ms = std::chrono::milliseconds;

enum class Strategy { one_for_one, one_for_all, rest_for_one, simple_one_for_one };
enum class RestartType { permanent, transient, temporary };
enum class AutoShutdown { never, any_significant, all_significant };
enum class ChildKind { worker, supervisor };

const char* to_string(Strategy s);
const char* to_string(RestartType r);
const char* to_string(AutoShutdown a);

struct Shutdown {
  enum class Kind { brutal_kill, timeout, infinity } kind = Kind::timeout;
  Ms timeout{5000};
};

// Restart backoff (beyond OTP): delay = initial * multiplier^(n-1), capped at
// max, +- jitter (a fraction), reset to initial once the child stayed up for
// reset_after.
struct Backoff {
  Ms initial{10};
  Ms max{5000};
  double multiplier = 2.0;
  double jitter = 0.1;
  Ms reset_after{10000};
};

struct ActorConfig {
  std::string type;  // a registered C++ type, or "module:Class" for a Python actor
  bool python = false;
  std::string name;
  toml::table args;  // converted to a Value map when sent to the worker
};

struct SupervisorSpec;

struct ChildSpec {
  std::string id;
  ChildKind kind = ChildKind::worker;
  RestartType restart = RestartType::permanent;
  Shutdown shutdown;
  bool significant = false;
  // worker
  std::string binary;  // absolute path
  // Arguments after --bulkhead-worker / --bulkhead-zygote.  For a Python
  // worker: --python-path=DIR[:DIR] and --python-actors=mod:Class,... (every
  // Python class of the tree under that path: its zygote imports them all).
  std::vector<std::string> binary_args;
  std::vector<std::string> python_path;  // absolute dirs (Python workers)
  std::vector<ActorConfig> actors;
  Ms start_timeout{5000};
  std::optional<Backoff> backoff;
  // messaging: this child's mailbox (its inbound channels)
  bool mailbox_keep = true;             // mailbox = "keep" | "drop"
  std::size_t mailbox_bytes = 1 << 18;  // ring capacity of each inbound channel
  enum class Overflow { block, fail, drop } overflow = Overflow::block;
  Ms block_timeout{1000};  // overflow = "block": how long a sender waits
  // output capture
  std::string log_file;  // absolute, may contain "{id}"; "" = the supervisor's log
  std::uint64_t log_max_bytes = 10u << 20;
  int log_max_files = 5;
  std::uint32_t log_rate = 2000;  // lines per second; 0 = unlimited
  // supervisor
  std::shared_ptr<SupervisorSpec> supervisor;
};

struct SupervisorSpec {
  Strategy strategy = Strategy::one_for_one;
  int intensity = 1;  // OTP default
  Ms period{5000};    // OTP default: 5 s
  AutoShutdown auto_shutdown = AutoShutdown::never;
  std::vector<ChildSpec> children;
  std::optional<ChildSpec> child_template;  // simple_one_for_one only
  int instances = 0;                        // dynamic children started at boot
};

struct TreeSpec {
  std::string name = "bulkhead";
  bool zygote = true;  // fork workers from a zygote per binary (fast restart)
  std::filesystem::path file;
  SupervisorSpec root;
};

class ConfigError : public std::runtime_error {
 public:
  explicit ConfigError(std::vector<std::string> problems);
  [[nodiscard]] const std::vector<std::string>& problems() const noexcept { return problems_; }

 private:
  std::vector<std::string> problems_;
};

// Finds the actor types a worker binary hosts (runs `BINARY --list-actors`).
// Returns nullopt if the binary cannot be run or fails.
using ActorTypeProbe =
    std::function<std::optional<std::vector<std::string>>(const std::string& binary)>;
std::optional<std::vector<std::string>> probe_actor_types(const std::string& binary);

struct LoadOptions {
  std::filesystem::path default_worker;  // used when the tree names none
  ActorTypeProbe probe = probe_actor_types;
};

// Reads, parses and validates `file`.  Throws ConfigError listing every problem.
TreeSpec load_tree(const std::filesystem::path& file, const LoadOptions& options);

}  // namespace bulkhead::supervisor
