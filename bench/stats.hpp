// bench/stats.hpp: from raw measurements to the numbers a figure reports.
//
// Latency figures keep every per-sample time (nanoseconds, preallocated so
// recording is a store) and report the median and the 99th percentile
// (nearest rank).  Throughput figures run a few timed repetitions and report
// the median rate, so one descheduled repetition does not move the result.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "bench/figure.hpp"
#include "bench/timing.hpp"

namespace bulkhead::bench {

// Nearest-rank percentile (0 < p <= 100) of `v`; reorders `v`.
inline double percentile(std::vector<double>& v, double p) {
  if (v.empty()) throw std::logic_error("percentile of no samples");
  auto rank = static_cast<std::size_t>(p / 100.0 * static_cast<double>(v.size()) + 0.5);
  rank = std::clamp<std::size_t>(rank, 1, v.size()) - 1;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(rank), v.end());
  return v[rank];
}

inline double median(std::vector<double> v) {
  return percentile(v, 50);
}

// Per-sample round-trip times.
class LatencySamples {
 public:
  explicit LatencySamples(std::size_t n) { ns_.reserve(n); }
  void add(std::int64_t ns) { ns_.push_back(static_cast<double>(ns)); }
  [[nodiscard]] Latency summarize() {
    Latency l;
    l.samples = ns_.size();
    l.p99_ns = percentile(ns_, 99);
    l.median_ns = percentile(ns_, 50);
    return l;
  }

 private:
  std::vector<double> ns_;
};

// How many round trips a latency figure times: `samples` after `warmup`, or
// fewer if `budget` runs out first (wake-up costs differ a lot between
// machines; the run time should not).
struct SamplePlan {
  std::size_t warmup;
  std::size_t samples;
  std::chrono::milliseconds budget;
};

// Runs `one(i)` (i = 0, 1, ...; returns the sample in nanoseconds) for the
// warm-up, then records it for up to plan.samples samples or plan.budget.
template <class OneSample>
Latency measure_latency(const SamplePlan& plan, OneSample&& one) {
  std::size_t i = 0;
  for (; i < plan.warmup; ++i) (void)one(i);
  LatencySamples s(plan.samples);
  const auto end = Clock::now() + plan.budget;
  for (std::size_t n = 0; n < plan.samples; ++n, ++i) {
    s.add(one(i));
    if ((n & 127) == 127 && Clock::now() > end) break;
  }
  return s.summarize();
}

// Median of per-repetition rates.
inline Throughput summarize_rates(const std::vector<double>& msgs_per_s) {
  return Throughput{median(msgs_per_s), static_cast<int>(msgs_per_s.size())};
}

}  // namespace bulkhead::bench
