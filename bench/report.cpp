// bench/report.cpp: see report.hpp.
#include "bench/report.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace bulkhead::bench {
namespace {

std::string us(double ns) {
  return fmt::format("{:.2f} us", ns / 1000.0);
}
std::string rate(double per_s) {
  return fmt::format("{:.2f} M/s", per_s / 1e6);
}

struct Columns {
  std::string median, p99, msgs, value;
};

Columns columns(const Result& r) {
  struct {
    Columns operator()(const Latency& l) const { return {us(l.median_ns), us(l.p99_ns), "", ""}; }
    Columns operator()(const Throughput& t) const { return {"", "", rate(t.msgs_per_s), ""}; }
    Columns operator()(const Value& v) const {
      return {"", "", "", fmt::format("{:.6f}", v.value)};
    }
  } pick;
  return std::visit(pick, r);
}

std::string json_value(const Result& r) {
  struct {
    std::string operator()(const Latency& l) const {
      return fmt::format(R"({{"median_ns": {:.1f}, "p99_ns": {:.1f}}})", l.median_ns, l.p99_ns);
    }
    std::string operator()(const Throughput& t) const {
      return fmt::format(R"({{"msgs_per_s": {:.0f}}})", t.msgs_per_s);
    }
    std::string operator()(const Value& v) const {
      return fmt::format(R"({{"value": {:.6f}}})", v.value);
    }
  } pick;
  return std::visit(pick, r);
}

}  // namespace

std::string progress_line(const Measured& m) {
  const Columns c = columns(m.result);
  if (!c.median.empty())
    return fmt::format("{}: median {}, p99 {}", m.figure->name, c.median, c.p99);
  if (!c.msgs.empty()) return fmt::format("{}: {}", m.figure->name, c.msgs);
  return fmt::format("{}: {}", m.figure->name, c.value);
}

void print_table(std::FILE* out, const Catalog& catalog, const std::vector<Measured>& results,
                 const std::vector<std::string>& failed, const RunConfig& cfg) {
  std::map<std::string, Result> by_name;
  for (const auto& m : results) by_name.emplace(m.figure->name, m.result);

  auto cpu = [](int c) { return c < 0 ? std::string("unpinned") : fmt::format("CPU {}", c); };
  fmt::print(out, "bulkhead-bench ({} run): benchmark on {}, its child on {}\n\n",
             cfg.quick ? "quick" : "default", cpu(cfg.parent_cpu), cpu(cfg.child_cpu));
  fmt::print(out, "{:<18} {:>10} {:>10} {:>11} {:>9}  {}\n", "figure", "median", "p99", "msgs/s",
             "value", "what");
  for (const auto& f : catalog.figures) {
    if (std::find(failed.begin(), failed.end(), f.name) != failed.end()) {
      fmt::print(out, "{:<18} {:>10} {:>10} {:>11} {:>9}  {}\n", f.name, "FAILED", "", "", "",
                 "(see stderr) " + f.what);
      continue;
    }
    auto r = by_name.find(f.name);
    if (r == by_name.end()) continue;  // not selected
    const Columns c = columns(r->second);
    fmt::print(out, "{:<18} {:>10} {:>10} {:>11} {:>9}  {}\n", f.name, c.median, c.p99, c.msgs,
               c.value, f.what);
  }

  bool header = false;
  for (const auto& r : catalog.ratios) {
    auto f = by_name.find(r.figure);
    auto b = by_name.find(r.baseline);
    if (f == by_name.end() || b == by_name.end()) continue;
    if (!header) fmt::print(out, "\nratios (median / median, or rate / rate)\n");
    header = true;
    std::string line = fmt::format("  {:<36} {:6.2f}x", r.figure + " / " + r.baseline,
                                   headline(f->second) / headline(b->second));
    const auto* fl = std::get_if<Latency>(&f->second);
    const auto* bl = std::get_if<Latency>(&b->second);
    if (fl != nullptr && bl != nullptr)
      line += fmt::format("   (p99 {:.2f}x)", fl->p99_ns / bl->p99_ns);
    fmt::print(out, "{}\n", line);
  }

  header = false;
  for (const auto& t : catalog.targets) {
    auto met = t.met(by_name);
    if (!met) continue;
    if (!header) fmt::print(out, "\ntargets\n");
    header = true;
    const double x = *t.measured(by_name);
    std::string got = fmt::format("{:.2f}x", x);
    if (t.baseline.empty()) {
      const Result& r = by_name.at(t.figure);
      got = std::holds_alternative<Throughput>(r) ? rate(x)
            : std::holds_alternative<Latency>(r)  ? us(x)
                                                  : fmt::format("{:.6f}", x);
    }
    fmt::print(out, "  {:<8} {:<45} measured {}\n", *met ? "met" : "NOT MET",
               t.figure + " " + t.label, got);
  }
}

void print_notes(std::FILE* out, const Catalog& catalog, const std::vector<Measured>& results) {
  std::map<std::string, Result> by_name;
  for (const auto& m : results) by_name.emplace(m.figure->name, m.result);
  bool header = false;
  for (const auto& note : catalog.notes) {
    auto text = note(by_name);
    if (!text) continue;
    if (!header) fmt::print(out, "\nnotes\n");
    header = true;
    fmt::print(out, "  {}\n", *text);
  }
}

void print_json(std::FILE* out, const std::vector<Measured>& results) {
  std::string s = "{";
  for (std::size_t i = 0; i < results.size(); ++i) {
    s += fmt::format("{}\"{}\": {}", i == 0 ? "" : ", ", results[i].figure->name,
                     json_value(results[i].result));
  }
  s += "}\n";
  std::fputs(s.c_str(), out);
}

}  // namespace bulkhead::bench
