// bench/rate_marks.hpp: one-way throughput, measured where messages arrive.
//
// The producer sends as fast as it can for a fixed time per repetition and
// puts a mark in the stream between repetitions (after a warm-up).  The
// consumer, on each mark, records into shared memory the time and how many
// messages it has taken so far.  The rate of repetition r is the messages
// between marks r and r+1 over the time between them, both taken by the
// consumer: it counts only messages really received and processed, and
// includes the time the consumer spent asleep waiting for them.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "bench/timing.hpp"

namespace bulkhead::bench {

// Lives in shared memory (ShmArena::make); written by the consumer only.
struct RateMarks {
  static constexpr std::uint32_t kMax = 64;
  struct Mark {
    std::int64_t t_ns;
    std::uint64_t msgs;
  };

  void record(std::uint64_t msgs_so_far) noexcept {
    const std::uint32_t i = n.load(std::memory_order_relaxed);
    if (i >= kMax) return;
    marks[i] = {Clock::now().time_since_epoch().count(), msgs_so_far};
    n.store(i + 1, std::memory_order_release);  // the mark before the count
  }

  // Messages per second of each repetition.  Read after the consumer exited.
  [[nodiscard]] std::vector<double> rates() const {
    static_assert(std::is_same_v<Clock::duration, std::chrono::nanoseconds>);
    const std::uint32_t count = n.load(std::memory_order_acquire);
    if (count < 2) throw std::runtime_error("the consumer recorded no complete repetition");
    std::vector<double> out;
    for (std::uint32_t i = 0; i + 1 < count; ++i) {
      const double dt = static_cast<double>(marks[i + 1].t_ns - marks[i].t_ns) * 1e-9;
      out.push_back(static_cast<double>(marks[i + 1].msgs - marks[i].msgs) / dt);
    }
    return out;
  }

  std::atomic<std::uint32_t> n;
  Mark marks[kMax];
};

// How long a throughput figure runs.
struct RatePlan {
  std::uint64_t warmup_msgs;
  int repetitions;
  std::chrono::milliseconds each;
};

// Producer side: warm-up, then `repetitions` timed bursts separated by marks
// (repetitions + 1 marks in all).  `send_one()` sends one message, `mark()`
// one mark.
template <class SendOne, class Mark>
void drive_rate(const RatePlan& plan, SendOne&& send_one, Mark&& mark) {
  for (std::uint64_t i = 0; i < plan.warmup_msgs; ++i) send_one();
  for (int r = 0;; ++r) {
    mark();
    if (r == plan.repetitions) break;
    const auto end = Clock::now() + plan.each;
    do {
      for (int k = 0; k < 64; ++k) send_one();
    } while (Clock::now() < end);
  }
}

}  // namespace bulkhead::bench
