// bench/main.cpp: bulkhead-bench, every benchmark figure in one run.
//
// Pins itself to CPU 0 (children pin themselves to CPU 1), runs the selected
// figures of the catalog (bench/catalog.cpp) in order, prints progress to
// stderr and the results to stdout: a table, or with --json one JSON object.
// Exit status: 0 all figures ran, 1 a figure failed, 2 bad arguments.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "bench/figure.hpp"
#include "bench/process.hpp"
#include "bench/report.hpp"

namespace bulkhead::bench {
namespace {

int run(int argc, char** argv) {
  const Catalog catalog = make_catalog();
  std::vector<std::string> names;
  std::string list;
  for (const auto& f : catalog.figures) {
    names.push_back(f.name);
    list += "  " + f.name + std::string(f.name.size() < 18 ? 18 - f.name.size() : 1, ' ') + f.what +
            "\n";
  }

  CLI::App app{
      "bulkhead-bench: Bulkhead's message path (codec + shared-memory rings + doorbells)\n"
      "between two processes pinned to two CPUs, with the kernel's IPC as baselines."};
  app.footer("Figures:\n" + list +
             "\nA figure that fails is reported on stderr and left out of the results; the\n"
             "exit status is then 1 (2 for bad arguments).");
  bool json = false;
  bool quick = false;
  std::vector<std::string> only;
  app.add_flag("--json", json, "print one JSON object on stdout, nothing else");
  app.add_flag("--quick", quick, "a short run (under ~10 s; the default run takes under a minute)");
  app.add_option("--only", only, "run only these figures (comma-separated)")
      ->delimiter(',')
      ->type_name("NAME[,NAME]")
      ->check(CLI::Validator(
          [&](std::string& name) {
            if (std::find(names.begin(), names.end(), name) != names.end()) return std::string();
            return "unknown figure '" + name + "' (the list is in --help)";
          },
          ""));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }

  RunConfig cfg;
  cfg.quick = quick;
  if (allowed_cpus() < 2 || !pin_to_cpu(cfg.parent_cpu)) {
    std::fprintf(stderr, "bulkhead-bench: warning: cannot use CPUs 0 and 1; running unpinned\n");
    cfg.parent_cpu = cfg.child_cpu = -1;
  }
  std::signal(SIGPIPE, SIG_IGN);  // a dead reader is an EPIPE error, not our death

  std::vector<Measured> results;
  std::vector<std::string> failed;
  for (const auto& f : catalog.figures) {
    if (!only.empty() && std::find(only.begin(), only.end(), f.name) == only.end()) continue;
    std::fprintf(stderr, "bulkhead-bench: %s ...\n", f.name.c_str());
    try {
      results.push_back({&f, f.run(cfg)});
      std::fprintf(stderr, "bulkhead-bench: %s\n", progress_line(results.back()).c_str());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bulkhead-bench: %s FAILED: %s\n", f.name.c_str(), e.what());
      failed.push_back(f.name);
    }
  }

  if (json) {
    print_json(stdout, results);
  } else {
    print_table(stdout, catalog, results, failed, cfg);
    print_notes(stdout, catalog, results);
  }
  std::fflush(stdout);
  return failed.empty() ? 0 : 1;
}

}  // namespace
}  // namespace bulkhead::bench

int main(int argc, char** argv) {
  try {
    return bulkhead::bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bulkhead-bench: %s\n", e.what());
    return 1;
  }
}
