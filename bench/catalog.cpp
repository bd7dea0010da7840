// bench/catalog.cpp: the list of every figure, in the order they run.
//
// Baselines come first so that a figure and the baseline it is compared
// with run close together in time (the machine is noisy).  To add an area:
// write its .cpp with an `add_*_figures(Catalog&)` function, declare it in
// figure.hpp, call it here and add the file to bench/CMakeLists.txt.
#include <algorithm>

#include "bench/figure.hpp"

namespace bulkhead::bench {

double headline(const Result& r) {
  struct {
    double operator()(const Latency& l) const { return l.median_ns; }
    double operator()(const Throughput& t) const { return t.msgs_per_s; }
    double operator()(const Value& v) const { return v.value; }
  } pick;
  return std::visit(pick, r);
}

std::optional<double> Target::measured(const std::map<std::string, Result>& results) const {
  auto f = results.find(figure);
  if (f == results.end()) return std::nullopt;
  double x = headline(f->second);
  if (baseline.empty()) return x;
  auto b = results.find(baseline);
  if (b == results.end() || headline(b->second) == 0) return std::nullopt;
  return x / headline(b->second);
}

std::optional<bool> Target::met(const std::map<std::string, Result>& results) const {
  auto x = measured(results);
  if (!x) return std::nullopt;
  switch (op) {
    case Op::at_most:
      return *x <= bound;
    case Op::below:
      return *x < bound;
    case Op::at_least:
      return *x >= bound;
  }
  return std::nullopt;
}

const Figure* Catalog::find(const std::string& name) const {
  auto it =
      std::find_if(figures.begin(), figures.end(), [&](const Figure& f) { return f.name == name; });
  return it == figures.end() ? nullptr : &*it;
}

Catalog make_catalog() {
  Catalog c;
  add_os_baselines(c);
  add_ring_figures(c);
  add_supervisor_figures(c);
  add_python_figures(c);
  return c;
}

}  // namespace bulkhead::bench
