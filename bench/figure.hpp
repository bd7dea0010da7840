// bench/figure.hpp: what a benchmark figure is, and the catalog of them.
//
// A figure is a named function that measures one thing and returns one
// Result: a latency distribution (median and p99 of per-sample times), a
// throughput (messages per second, median of repetitions) or a plain value
// (e.g. a fraction of one core).  Figures are grouped by area in separate
// .cpp files; each file has one `add_*_figures(Catalog&)` function that
// appends its figures, the ratios worth printing (figure / baseline), the
// targets the issue tracker set for them and notes on reading the results.  catalog.cpp calls every
// one of those functions, in table order: a new area is one new .cpp file plus one line there.
//
// Figures throw (std::exception) when something goes wrong: a child process
// died, a reply was wrong, a deadline passed.  The driver reports the error,
// goes on with the next figure and exits nonzero at the end.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace bulkhead::bench {

// Settings common to every figure.
struct RunConfig {
  bool quick = false;  // a short run: fewer samples, shorter timed runs
  int parent_cpu = 0;  // CPU the benchmark process is pinned to (-1: not pinned)
  int child_cpu = 1;   // CPU its child processes pin themselves to (-1: not pinned)

  // Picks the default or the quick value of a size.
  template <class T>
  [[nodiscard]] T pick(T normal, T short_run) const {
    return quick ? short_run : normal;
  }
};

// Per-sample times; `median_ns` is the headline number.
struct Latency {
  double median_ns = 0;
  double p99_ns = 0;
  std::uint64_t samples = 0;
};

// One-way rate; the median of `repetitions` timed runs.
struct Throughput {
  double msgs_per_s = 0;
  int repetitions = 0;
};

// A single number, e.g. a fraction of one core.
struct Value {
  double value = 0;
};

using Result = std::variant<Latency, Throughput, Value>;

// The number compared in ratios and targets: median_ns, msgs_per_s or value.
double headline(const Result& r);

struct Figure {
  std::string name;  // the JSON key; [a-z0-9_]
  std::string what;  // one line for --help and the table
  std::function<Result(const RunConfig&)> run;
};

// A ratio printed under the table: headline(figure) / headline(baseline).
struct Ratio {
  std::string figure;
  std::string baseline;
};

// A target from the issue tracker: headline(figure) [/ headline(baseline)]
// compared with `bound`.
struct Target {
  enum class Op { at_most, below, at_least };
  std::string figure;
  std::string baseline;  // empty: an absolute bound
  Op op = Op::at_most;
  double bound = 0;
  std::string label;  // how the bound reads to a human, e.g. "<= 1.5x raw_spin_rtt"

  // nullopt if a figure it needs was not measured.
  [[nodiscard]] std::optional<bool> met(const std::map<std::string, Result>& results) const;
  // The compared number (ratio or absolute), nullopt if not measurable.
  [[nodiscard]] std::optional<double> measured(const std::map<std::string, Result>& results) const;
};

// A hint printed under the table when it applies to the results (e.g. what
// an unusual baseline says about the machine); nullopt when it does not.
using Note = std::function<std::optional<std::string>(const std::map<std::string, Result>&)>;

struct Catalog {
  std::vector<Figure> figures;  // in the order they run and print
  std::vector<Ratio> ratios;
  std::vector<Target> targets;
  std::vector<Note> notes;

  [[nodiscard]] const Figure* find(const std::string& name) const;
};

// Every figure of the program, in table order (catalog.cpp).
Catalog make_catalog();

// One function per area (one .cpp file each).
void add_os_baselines(Catalog& c);        // os_baselines.cpp
void add_ring_figures(Catalog& c);        // ring_figures.cpp
void add_supervisor_figures(Catalog& c);  // supervisor_figures.cpp
void add_python_figures(Catalog& c);      // python_figures.cpp

}  // namespace bulkhead::bench
