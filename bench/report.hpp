// bench/report.hpp: printing results, for people (a table) or for scripts
// (one JSON object).
//
// Table: one line per figure (median and p99 of round trips, or msgs/s, or
// the value), then the catalog's ratios (figure / baseline, on medians or
// rates), then each target with met / NOT MET and the number compared, then
// notes (hints the figure areas give on how to read these results).
// JSON: {"<figure>": {"median_ns": .., "p99_ns": ..} | {"msgs_per_s": ..} |
// {"value": ..}, ...} in run order, nothing else.
#pragma once

#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "bench/figure.hpp"

namespace bulkhead::bench {

struct Measured {
  const Figure* figure;
  Result result;
};

// The one line printed to stderr as each figure finishes.
std::string progress_line(const Measured& m);

void print_table(std::FILE* out, const Catalog& catalog, const std::vector<Measured>& results,
                 const std::vector<std::string>& failed, const RunConfig& cfg);
// The catalog's notes that apply to these results (part of the table).
void print_notes(std::FILE* out, const Catalog& catalog, const std::vector<Measured>& results);
void print_json(std::FILE* out, const std::vector<Measured>& results);

}  // namespace bulkhead::bench
