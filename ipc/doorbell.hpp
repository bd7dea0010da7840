// ipc/doorbell.hpp: one futex word per consumer, shared by all its input rings.
//
// What it is for: letting a consumer with many input rings sleep when all of
// them are empty, and letting any producer wake it cheaply, with no lost
// wake-up and no syscall while the consumer is awake.
//
// Protocol (an eventcount):
//   consumer:  key = seq; sleeping = 1 (seq_cst); re-check every ring;
//              if still nothing: futex_wait(seq, key); sleeping = 0.
//   producer:  publish (release store of the frame's stamp); fence(seq_cst);
//              if sleeping: sleeping = 0; ++seq; futex_wake(seq).
// Store-buffer argument: the consumer's store to `sleeping` and the
// producer's store of the stamp are each followed (seq_cst) by a load of the
// other; at least one side sees the other's store.  Either the consumer's
// re-check finds the frame, or the producer sees `sleeping` and bumps `seq`,
// in which case futex_wait either returns at once (seq != key) or is woken.
//
// Before sleeping the consumer polls for a bounded, adaptive time (a wake-up
// costs microseconds; most replies arrive sooner).  The budget shrinks when a
// sleep turned out long (the peer was idle), and grows only on evidence that
// polling pays: in a streak of sleeps, a waiter now and then probes (one wait
// polls for max_spin); if the data comes within the probe, the budget becomes
// twice that arrival time.  A probe that finds nothing doubles the number of
// sleeps before the next one (kProbeEvery .. kProbeEveryMax), so a peer that
// is idle, slow or on our own CPU costs next to nothing.
//
// Why not "a short sleep means poll longer": a short sleep is also what a
// peer sharing our CPU produces (it runs only once we sleep), and there
// polling is pure loss.  And the sleep's length includes our own wake-up,
// which on a VM whose idle vCPUs halt (no guest halt polling) is ~40 us: two
// peers that poll for less than that fall into a stable cold state (each
// sleeps because the other was asleep, every sleep looks long) that only a
// probe longer than one wake-up gets them out of.  Hence max_spin covers a
// typical wake-up on such a machine.
//
// Trust: any producer may scribble on the word.  The worst it can do is cause
// spurious wake-ups of its consumer, or make it miss a wake-up until its
// next deadline; the consumer never blocks past its deadline.
#pragma once

#include <algorithm>
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
    // Orders the caller's release store of the frame stamp before the load of
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
  std::uint64_t sleeps = 0;      // futex waits entered
  std::uint64_t spin_hits = 0;   // work found while polling
  std::uint64_t probes = 0;      // waits that polled for max_spin (see above)
  std::uint64_t probe_hits = 0;  // probes that found work while polling
};

// Consumer-side waiting: poll, then sleep on the doorbell.
class Waiter {
 public:
  struct Options {
    std::chrono::nanoseconds min_spin{std::chrono::microseconds(2)};
    // About one wake-up on a VM without halt polling, and under the 50 us
    // after which a peer counts as idle (bench's ring_rtt_cold).
    std::chrono::nanoseconds max_spin{std::chrono::microseconds(45)};
    std::chrono::nanoseconds initial_spin{std::chrono::microseconds(10)};
  };
  // In a streak of waits that ended asleep, the kProbeEvery-th polls for
  // max_spin (a probe); each probe that finds nothing doubles that count, up
  // to kProbeEveryMax; a probe that finds work resets it.
  static constexpr unsigned kProbeEvery = 2;
  static constexpr unsigned kProbeEveryMax = 1024;
  Waiter() = default;
  explicit Waiter(DoorbellWord* word) noexcept : Waiter(word, Options{}) {}
  Waiter(DoorbellWord* word, Options o) noexcept : word_(word), opts_(o), spin_(o.initial_spin) {}

  // Returns true as soon as `ready()` is true, false at `deadline` (nullopt:
  // no deadline).  `ready` is called often: make it a few loads.
  template <class Ready>
  bool wait(Ready&& ready, std::optional<Deadline> deadline = std::nullopt) noexcept {
    if (ready()) return true;
    // Phase 1: poll with a pause between reads of the remote index.
    const bool probe = sleep_streak_ >= probe_every_;
    if (probe) {
      sleep_streak_ = 0;
      ++stats_.probes;
    }
    // The clock is read only every 64 polls, and a wait that is not a probe
    // starts its window at the first of those reads: most hot waits end
    // before it, without a clock read (the window is at most 64 polls longer).
    Clock::time_point spin_start{};
    Clock::time_point spin_end{};
    auto start_window = [&](Clock::time_point now) {
      spin_start = now;
      spin_end = now + (probe ? opts_.max_spin : spin_);
      if (deadline && *deadline < spin_end) spin_end = *deadline;
    };
    if (probe) start_window(Clock::now());
    for (unsigned i = 1;; ++i) {
      cpu_relax();
      if (ready()) {
        ++stats_.spin_hits;
        sleep_streak_ = 0;
        if (probe) probe_hit(Clock::now() - spin_start);
        return true;
      }
      if ((i & 63) == 0) {
        const auto now = Clock::now();
        if (i == 64 && !probe) start_window(now);
        if (now >= spin_end) break;
      }
    }
    if (probe) probe_every_ = std::min(probe_every_ * 2, kProbeEveryMax);
    // Phase 2: announce sleep, re-check, sleep.
    for (;;) {
      if (deadline && Clock::now() >= *deadline) return ready();
      const std::uint32_t key = word_->seq.load(std::memory_order_acquire);
      // seq_cst store: pairs with the producer's fence in Doorbell::ring().
      word_->sleeping.store(1, std::memory_order_seq_cst);
      // The model (not only x86) needs a fence between that store and the
      // re-check's loads for the store-buffer argument above.
      std::atomic_thread_fence(std::memory_order_seq_cst);
      if (ready()) {
        word_->sleeping.store(0, std::memory_order_relaxed);
        return true;
      }
      const auto slept_at = Clock::now();
      ++stats_.sleeps;
      futex_wait(&word_->seq, key, deadline);
      word_->sleeping.store(0, std::memory_order_relaxed);
      if (ready()) {
        ++sleep_streak_;
        adapt(Clock::now() - slept_at);
        return true;
      }
    }
  }

  [[nodiscard]] const WaitStats& stats() const noexcept { return stats_; }
  [[nodiscard]] std::chrono::nanoseconds spin_budget() const noexcept { return spin_; }
  [[nodiscard]] DoorbellWord* word() const noexcept { return word_; }

 private:
  // A sleep of twice the budget or more means the peer was idle: shrink.  A
  // shorter one proves nothing (see the top of this file): keep the budget.
  void adapt(std::chrono::nanoseconds slept) noexcept {
    if (slept >= 2 * spin_) spin_ = std::max(spin_ / 2, opts_.min_spin);
  }
  // A probe found work `after` into its poll: the peer answers within a
  // wake-up's cost, so poll about twice that long from now on.
  void probe_hit(std::chrono::nanoseconds after) noexcept {
    ++stats_.probe_hits;
    probe_every_ = kProbeEvery;
    spin_ = std::clamp<std::chrono::nanoseconds>(2 * after, opts_.min_spin, opts_.max_spin);
  }

  DoorbellWord* word_ = nullptr;
  Options opts_;
  std::chrono::nanoseconds spin_{};
  unsigned sleep_streak_ = 0;           // waits in a row that ended asleep
  unsigned probe_every_ = kProbeEvery;  // sleeps in a row before the next probe
  WaitStats stats_;
};

}  // namespace bulkhead::ipc
