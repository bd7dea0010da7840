// ipc/doorbell.hpp: one futex word per consumer, shared by all its input rings.
//
// What it is for: letting a consumer with many input rings sleep when all of
// them are empty, and letting any producer wake it cheaply, with no lost
// wake-up and no syscall while the consumer is awake.
//
// Protocol (an eventcount):
//   consumer:  key = seq; sleeping = 1 (seq_cst); re-check every ring;
//              if still nothing: futex_wait(seq, key); sleeping = 0.
//   producer:  publish (release store of the ring tail); fence(seq_cst);
//              if sleeping: sleeping = 0; ++seq; futex_wake(seq).
// Store-buffer argument: the consumer's store to `sleeping` and the
// producer's store to `tail` are each followed (seq_cst) by a load of the
// other; at least one side sees the other's store.  Either the consumer's
// re-check finds the frame, or the producer sees `sleeping` and bumps `seq`,
// in which case futex_wait either returns at once (seq != key) or is woken.
//
// Before sleeping the consumer polls for a bounded, adaptive time (a wake-up
// costs microseconds; most replies arrive sooner).  The budget grows when a
// sleep turned out to be short and shrinks when polling found nothing.
//
// Trust: any producer may scribble on the word.  The worst it can do is cause
// spurious wake-ups of its consumer, or make it miss a wake-up until its
// next deadline; the consumer never blocks past its deadline.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>

#include "ipc/sys.hpp"

namespace bulkhead::ipc {

struct alignas(64) DoorbellWord {
  std::atomic<std::uint32_t> seq;       // bumped by a producer that wakes the consumer
  std::atomic<std::uint32_t> sleeping;  // 1 while the consumer is (about to be) asleep
  std::uint8_t reserved[56];
};
static_assert(sizeof(DoorbellWord) == 64);

// Producer-side handle on a consumer's doorbell.
class Doorbell {
 public:
  Doorbell() = default;
  explicit Doorbell(DoorbellWord* word) noexcept : word_(word) {}

  // Called after publishing a frame.  Costs a fence and a load while the
  // consumer is awake; one futex_wake when it sleeps.
  void ring() noexcept {
    // Orders the caller's release store of the ring tail before the load of
    // `sleeping` (pairs with the consumer's seq_cst store in Waiter::wait).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (word_->sleeping.load(std::memory_order_relaxed) != 0) wake();
  }
  [[nodiscard]] DoorbellWord* word() const noexcept { return word_; }

 private:
  void wake() noexcept;
  DoorbellWord* word_ = nullptr;
};

struct WaitStats {
  std::uint64_t sleeps = 0;     // futex waits entered
  std::uint64_t spin_hits = 0;  // work found while polling
};

// Consumer-side waiting: poll, then sleep on the doorbell.
class Waiter {
 public:
  struct Options {
    std::chrono::nanoseconds min_spin{std::chrono::microseconds(2)};
    std::chrono::nanoseconds max_spin{std::chrono::microseconds(20)};
    std::chrono::nanoseconds initial_spin{std::chrono::microseconds(10)};
  };
  Waiter() = default;
  explicit Waiter(DoorbellWord* word) noexcept : Waiter(word, Options{}) {}
  Waiter(DoorbellWord* word, Options o) noexcept : word_(word), opts_(o), spin_(o.initial_spin) {}

  // Returns true as soon as `ready()` is true, false at `deadline` (nullopt:
  // no deadline).  `ready` is called often: make it a few loads.
  template <class Ready>
  bool wait(Ready&& ready, std::optional<Deadline> deadline = std::nullopt) noexcept {
    if (ready()) return true;
    // Phase 1: poll with a pause between reads of the remote index.
    const auto spin_start = Clock::now();
    auto spin_end = spin_start + spin_;
    if (deadline && *deadline < spin_end) spin_end = *deadline;
    for (unsigned i = 1;; ++i) {
      cpu_relax();
      if (ready()) {
        ++stats_.spin_hits;
        return true;
      }
      if ((i & 63) == 0 && Clock::now() >= spin_end) break;
    }
    // Phase 2: announce sleep, re-check, sleep.
    for (;;) {
      if (deadline && Clock::now() >= *deadline) return ready();
      const std::uint32_t key = word_->seq.load(std::memory_order_acquire);
      // seq_cst store: pairs with the producer's fence in Doorbell::ring().
      word_->sleeping.store(1, std::memory_order_seq_cst);
      if (ready()) {
        word_->sleeping.store(0, std::memory_order_relaxed);
        return true;
      }
      const auto slept_at = Clock::now();
      ++stats_.sleeps;
      futex_wait(&word_->seq, key, deadline);
      word_->sleeping.store(0, std::memory_order_relaxed);
      if (ready()) {
        adapt(Clock::now() - slept_at);
        return true;
      }
    }
  }

  [[nodiscard]] const WaitStats& stats() const noexcept { return stats_; }
  [[nodiscard]] std::chrono::nanoseconds spin_budget() const noexcept { return spin_; }
  [[nodiscard]] DoorbellWord* word() const noexcept { return word_; }

 private:
  // A sleep shorter than twice the budget would have been caught by polling
  // a little longer: grow.  A long sleep means the peer is idle: shrink.
  void adapt(std::chrono::nanoseconds slept) noexcept {
    if (slept < 2 * spin_) {
      spin_ = std::min(spin_ * 2, opts_.max_spin);
    } else {
      spin_ = std::max(spin_ / 2, opts_.min_spin);
    }
  }

  DoorbellWord* word_ = nullptr;
  Options opts_;
  std::chrono::nanoseconds spin_{};
  WaitStats stats_;
};

}  // namespace bulkhead::ipc
