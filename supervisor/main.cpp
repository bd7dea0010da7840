// bulkhead-supervisor: runs one supervision tree.
//
// Usage: bulkhead-supervisor TREE.toml [--events FILE] [--check] [--log-level L]
//          [--log-file FILE] [--socket PATH] [--control-socket PATH]
//          [--metrics-port PORT]
// Exit codes (stable, documented in README.md):
//   0  stopped on request (SIGTERM/SIGINT) or by auto_shutdown
//   1  the root supervisor gave up (restart intensity reached)
//   2  bad command line or bad tree file (nothing was started)
//   3  the tree failed to start (a child failed to start)
//   4  internal error (a bug: please report)
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>

#include "supervisor/config.hpp"
#include "supervisor/control_server.hpp"
#include "supervisor/logging.hpp"
#include "supervisor/runtime.hpp"

namespace {

std::filesystem::path self_dir() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::path{} : p.parent_path();
}

std::string default_socket_path(const std::string& tree_name, const char* suffix = ".sock") {
  std::string dir;
  if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x != nullptr && *x != '\0') {
    dir = std::string(x) + "/bulkhead";
  } else {
    dir = "/tmp/bulkhead-" + std::to_string(::getuid());
  }
  return dir + "/" + tree_name + suffix;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace bulkhead::supervisor;
  CLI::App app{"bulkhead-supervisor: runs an OTP-style supervision tree of worker processes"};
  std::string tree_file, events, level = "info", log_file;
  bool check_only = false;
  app.add_option("tree", tree_file, "the tree file (TOML)")->required();
  app.add_option("--events", events, "append machine-readable events (JSON lines) to FILE");
  std::string socket_path;
  app.add_option("--socket", socket_path,
                 "attach socket for clients (default: $XDG_RUNTIME_DIR/bulkhead/NAME.sock or "
                 "/tmp/bulkhead-UID/NAME.sock; 'none' to disable)");
  std::string control_socket;
  app.add_option("--control-socket", control_socket,
                 "control socket for bulkheadctl (default: NAME.ctl next to the default attach "
                 "socket; 'none' to disable)");
  std::optional<int> metrics_port;
  app.add_option("--metrics-port", metrics_port,
                 "serve Prometheus metrics at http://127.0.0.1:PORT/metrics (0: any free port)")
      ->check(CLI::Range(0, 65535));
  app.add_flag("--check", check_only, "validate the tree file and exit (0 valid, 2 invalid)");
  app.add_option("--log-level", level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  app.add_option("--log-file", log_file, "append the log to FILE as well as stderr");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  try {
    setup_supervisor_log(level, check_only ? "" : log_file);
  } catch (const spdlog::spdlog_ex& e) {
    std::fprintf(stderr, "bulkhead-supervisor: cannot write log file %s: %s\n", log_file.c_str(),
                 e.what());
    return 2;
  }

  TreeSpec tree;
  try {
    LoadOptions opts;
    opts.default_worker = self_dir() / "bulkhead-worker";
    tree = load_tree(tree_file, opts);
  } catch (const ConfigError& e) {
    for (const auto& p : e.problems()) std::fprintf(stderr, "error: %s\n", p.c_str());
    std::fprintf(stderr, "bulkhead-supervisor: %zu problem(s) in %s; nothing started\n",
                 e.problems().size(), tree_file.c_str());
    return 2;
  }
  if (check_only) {
    std::printf("%s: valid\n", tree_file.c_str());
    return 0;
  }
  if (!events.empty()) {
    // A bad --events path is a usage error (2), found before anything starts.
    FILE* f = std::fopen(events.c_str(), "a");
    if (f == nullptr) {
      std::fprintf(stderr, "bulkhead-supervisor: cannot write events file %s: %s\n", events.c_str(),
                   std::strerror(errno));
      return 2;
    }
    std::fclose(f);
  }
  try {
    if (socket_path.empty()) socket_path = default_socket_path(tree.name);
    if (socket_path == "none") socket_path.clear();
    if (control_socket.empty()) control_socket = default_socket_path(tree.name, ".ctl");
    if (control_socket == "none") control_socket.clear();
    Runtime runtime(std::move(tree), RuntimeOptions{events, socket_path});
    std::unique_ptr<ControlPlane> control;  // none at all (no thread) when both are off
    try {
      if (!control_socket.empty() || metrics_port) {
        control =
            std::make_unique<ControlPlane>(runtime, ControlOptions{control_socket, metrics_port});
      }
    } catch (const ControlError& e) {
      spdlog::critical("{}; nothing started", e.what());
      return 2;
    }
    return runtime.run();
  } catch (const std::exception& e) {
    spdlog::critical("internal error: {}", e.what());
    return 4;
  }
}
