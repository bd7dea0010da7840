// bench/ring_figures.cpp: Bulkhead's own message path between two processes.
//
// Every figure here forks a child (pinned to the other CPU) after creating
// the shared-memory segment, and talks to it through real SPSC rings:
//
//   ring_rtt_hot       round trip of a small Envelope (bench/small_envelope.hpp)
//                      built by the codec and copied into a frame, published on a ring with
//                      the consumer's doorbell, read in place by the codec; the
//                      child echoes it as a reply.  Each consumer waits with an
//                      ipc::Waiter (poll, then futex sleep).  Back to back.
//   ring_rtt_cold      the same, but the sender busy-waits 50 us before each
//                      round trip, so the child is past its poll window and
//                      asleep on its futex: the figure includes a wake-up (and
//                      fails if the child did not sleep before nearly every
//                      call).
//   ring_throughput    one way, small Envelopes through codec + ring (64 KiB)
//                      as fast as they go; the consumer waits with a Waiter
//                      when the ring is empty; the producer waits in
//                      RingProducer::reserve (poll, then futex) when it is full.
//   raw_spin_rtt       baseline: both sides busy-poll, 64-byte frames through
//                      try_push / try_pop, no codec, no doorbell.
//   idle_consumer_cpu  a consumer waiting with a Waiter on an empty ring for
//                      1 s after its poll window: its CPU time over its wall
//                      time, measured in the child (CLOCK_PROCESS_CPUTIME_ID).
//
// Round-trip times are taken per sample with steady_clock around send + wait
// + read of the reply, after a warm-up; every reply is checked (correlation
// id and value) outside the timed part.  The Waiters' statistics (sleeps,
// probes) go to stderr, to tell a hot figure that was not hot.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <thread>
#include <vector>

#include "bench/figure.hpp"
#include "bench/process.hpp"
#include "bench/rate_marks.hpp"
#include "bench/shm_arena.hpp"
#include "bench/small_envelope.hpp"
#include "bench/stats.hpp"
#include "bench/timing.hpp"

namespace bulkhead::bench {
namespace {

using namespace std::chrono_literals;
using ipc::PopStatus;
using ipc::PushStatus;

// Frame kinds the benchmark uses besides schema::kEnvelopeFrame.
constexpr std::uint32_t kRawFrame = 1;   // raw_spin_rtt payload
constexpr std::uint32_t kStopFrame = 2;  // the child leaves its loop
constexpr std::uint32_t kMarkFrame = 3;  // a throughput repetition boundary

constexpr std::size_t kRttRingBytes = 4096;
constexpr std::size_t kThroughputRingBytes = 64 * 1024;
constexpr std::size_t kRawFrameBytes = 64;
// A reply slower than this means the peer is gone (or the machine stalled).
constexpr auto kPeerTimeout = 2s;

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what);
}

// The frame a readable consumer has at its head.
ipc::Frame take(ipc::RingConsumer& c) {
  ipc::Frame f;
  switch (c.try_peek(f)) {
    case PopStatus::ok:
      return f;
    case PopStatus::broken:
      fail(c.fault().describe());
    default:
      fail("ring said readable but had no frame");
  }
}

void push_control(ipc::RingProducer& p, std::uint32_t kind) {
  if (p.push(kind, {}, Clock::now() + kPeerTimeout) != PushStatus::ok) {
    fail("cannot push a control frame");
  }
}

// Two rings, one each way, and one doorbell per consuming side.
struct Duplex {
  static constexpr std::size_t kArenaBytes =
      8 * ipc::kCacheLine + 2 * ipc::ring_footprint(kRttRingBytes);

  explicit Duplex(ShmArena& a)
      : parent_bell(a.doorbell()),
        child_bell(a.doorbell()),
        to_child(a.ring(kRttRingBytes)),
        to_parent(a.ring(kRttRingBytes)) {}

  ipc::DoorbellWord* parent_bell;
  ipc::DoorbellWord* child_bell;
  std::span<std::byte> to_child;
  std::span<std::byte> to_parent;
};

// ---------------------------------------------------------------------------
// ring_rtt_hot, ring_rtt_cold

// What the echo's Waiter did, reported at its exit.
struct EchoReport {
  std::uint64_t rounds;
  ipc::WaitStats waits;
};

// Child: answers every call with a reply carrying value + 1.
void echo_envelopes(const Duplex& d, EchoReport* report) {
  ipc::RingConsumer in(d.to_child, "to_child");
  ipc::Doorbell parent_bell(d.parent_bell);
  ipc::RingProducer out(d.to_parent, "to_parent", &parent_bell);
  ipc::Waiter waiter(d.child_bell);
  FirstSegmentHint hint;
  for (;;) {
    waiter.wait([&] { return in.readable(); });
    const ipc::Frame f = take(in);
    if (f.kind == kStopFrame) {
      report->waits = waiter.stats();
      return;
    }
    ++report->rounds;
    SmallMessage m = read_small(f.payload);
    in.release();
    m.kind = schema::Kind::REPLY;
    m.value += 1;
    if (send_small(out, hint, m) != PushStatus::ok) fail("echo: cannot send the reply");
  }
}

// `gap` > 0: the figure is about a sleeping receiver, so it fails if the
// echo did not sleep before (nearly) every call.
Latency ring_rtt(const RunConfig& cfg, const char* name, nanoseconds gap, const SamplePlan& plan) {
  ShmArena arena(Duplex::kArenaBytes + sizeof(EchoReport));
  const Duplex d(arena);
  auto* report = arena.make<EchoReport>();
  Child child = Child::spawn("envelope echo", cfg.child_cpu, [&] { echo_envelopes(d, report); });

  ipc::Doorbell child_bell(d.child_bell);
  ipc::RingProducer out(d.to_child, "to_child", &child_bell);
  ipc::RingConsumer in(d.to_parent, "to_parent");
  ipc::Waiter waiter(d.parent_bell);
  FirstSegmentHint hint;
  const Latency l = measure_latency(plan, [&](std::size_t i) {
    if (gap.count() != 0) busy_wait(gap);
    const SmallMessage call{schema::Kind::CALL, i + 1, static_cast<std::int64_t>(i)};
    const auto t0 = Clock::now();
    if (send_small(out, hint, call) != PushStatus::ok) fail("cannot send the call");
    if (!waiter.wait([&] { return in.readable(); }, t0 + kPeerTimeout)) {
      child.check_running();
      fail("no reply within 2 s");
    }
    const SmallMessage reply = read_small(take(in).payload);
    in.release();
    const auto t1 = Clock::now();
    if (reply.kind != schema::Kind::REPLY || reply.correlation_id != call.correlation_id ||
        reply.value != call.value + 1) {
      fail("wrong reply: correlationId " + std::to_string(reply.correlation_id) + " value " +
           std::to_string(reply.value) + ", expected " + std::to_string(call.correlation_id) +
           " and " + std::to_string(call.value + 1));
    }
    return ns_between(t0, t1);
  });
  push_control(out, kStopFrame);
  child.join();
  const ipc::WaitStats& w = report->waits;
  std::fprintf(stderr,
               "bulkhead-bench: %s: %llu calls; receiver slept %llu times, probed %llu (%llu "
               "hits); caller slept %llu times\n",
               name, static_cast<unsigned long long>(report->rounds),
               static_cast<unsigned long long>(w.sleeps), static_cast<unsigned long long>(w.probes),
               static_cast<unsigned long long>(w.probe_hits),
               static_cast<unsigned long long>(waiter.stats().sleeps));
  if (gap.count() != 0 && w.sleeps < report->rounds * 9 / 10) {
    fail("the receiver slept before only " + std::to_string(w.sleeps) + " of " +
         std::to_string(report->rounds) + " calls: not a cold round trip");
  }
  return l;
}

Result ring_rtt_hot(const RunConfig& cfg) {
  return ring_rtt(cfg, "ring_rtt_hot", 0ns,
                  {cfg.pick<std::size_t>(50'000, 20'000), cfg.pick<std::size_t>(1'000'000, 200'000),
                   cfg.pick(1500ms, 300ms)});
}

Result ring_rtt_cold(const RunConfig& cfg) {
  return ring_rtt(cfg, "ring_rtt_cold", 50us,
                  {cfg.pick<std::size_t>(500, 200), cfg.pick<std::size_t>(40'000, 10'000),
                   cfg.pick(3000ms, 600ms)});
}

// ---------------------------------------------------------------------------
// raw_spin_rtt

// Pops one frame, busy-polling; `on_idle()` runs every 4096 empty polls.
template <class OnIdle>
std::size_t spin_pop(ipc::RingConsumer& in, std::span<std::byte> buf, std::uint32_t& kind,
                     OnIdle&& on_idle) {
  std::size_t len = 0;
  for (unsigned i = 1;; ++i) {
    const PopStatus s = in.try_pop(kind, buf, len);
    if (s == PopStatus::ok) return len;
    if (s != PopStatus::empty) fail(in.fault().describe());
    ipc::cpu_relax();
    if ((i & 4095) == 0) on_idle();
  }
}

void echo_raw(const Duplex& d) {
  ipc::RingConsumer in(d.to_child, "to_child");
  ipc::RingProducer out(d.to_parent, "to_parent");
  std::vector<std::byte> buf(in.max_payload());
  for (;;) {
    std::uint32_t kind = 0;
    const std::size_t len = spin_pop(in, buf, kind, [] {});
    if (kind == kStopFrame) return;
    if (out.try_push(kind, {buf.data(), len}) != PushStatus::ok) fail("raw echo: push failed");
  }
}

Result raw_spin_rtt(const RunConfig& cfg) {
  ShmArena arena(Duplex::kArenaBytes);
  const Duplex d(arena);
  Child child = Child::spawn("raw echo", cfg.child_cpu, [&] { echo_raw(d); });

  ipc::RingProducer out(d.to_child, "to_child");
  ipc::RingConsumer in(d.to_parent, "to_parent");
  std::vector<std::byte> frame(kRawFrameBytes);
  std::vector<std::byte> back(in.max_payload());
  const SamplePlan plan{cfg.pick<std::size_t>(50'000, 20'000),
                        cfg.pick<std::size_t>(1'000'000, 200'000), cfg.pick(1500ms, 300ms)};
  const Latency l = measure_latency(plan, [&](std::uint64_t i) {
    std::memcpy(frame.data(), &i, sizeof i);
    const auto t0 = Clock::now();
    if (out.try_push(kRawFrame, frame) != PushStatus::ok) fail("raw push failed");
    std::uint32_t kind = 0;
    const std::size_t len = spin_pop(in, back, kind, [&] {
      if (Clock::now() - t0 > kPeerTimeout) {
        child.check_running();
        fail("no echo within 2 s");
      }
    });
    const auto t1 = Clock::now();
    std::uint64_t echoed = 0;
    std::memcpy(&echoed, back.data(), sizeof echoed);
    if (kind != kRawFrame || len != kRawFrameBytes || echoed != i) fail("wrong raw echo");
    return ns_between(t0, t1);
  });
  if (out.try_push(kStopFrame, {}) != PushStatus::ok) fail("cannot push stop");
  child.join();
  return l;
}

// ---------------------------------------------------------------------------
// ring_throughput

// What the consumer's Waiter did, reported at its exit.
struct ConsumerReport {
  ipc::WaitStats waits;
};

// Child: takes every Envelope (checking the sequence of correlation ids),
// sleeping on its doorbell when the ring is empty.

void consume_envelopes(std::span<std::byte> ring, ipc::DoorbellWord* bell, RateMarks* marks,
                       ConsumerReport* report) {
  ipc::RingConsumer in(ring, "bulk");
  ipc::Waiter waiter(bell);
  std::uint64_t count = 0;
  for (;;) {
    ipc::Frame f;
    const PopStatus s = in.try_peek(f);
    if (s == PopStatus::empty) {
      waiter.wait([&] { return in.readable(); });
      continue;
    }
    if (s != PopStatus::ok) fail(in.fault().describe());
    if (f.kind == schema::kEnvelopeFrame) {
      const SmallMessage m = read_small(f.payload);
      if (m.correlation_id != count + 1) {
        fail("message " + std::to_string(m.correlation_id) + " arrived as number " +
             std::to_string(count + 1));
      }
      ++count;
    } else if (f.kind == kMarkFrame) {
      marks->record(count);
    } else if (f.kind == kStopFrame) {
      report->waits = waiter.stats();
      return;
    }
    in.release();
  }
}

Result ring_throughput(const RunConfig& cfg) {
  const RatePlan plan{cfg.pick<std::uint64_t>(200'000, 50'000), cfg.pick(7, 3),
                      cfg.pick(400ms, 150ms)};
  ShmArena arena(ipc::ring_footprint(kThroughputRingBytes) + 8 * ipc::kCacheLine +
                 sizeof(RateMarks) + sizeof(ConsumerReport));
  ipc::DoorbellWord* bell = arena.doorbell();
  const auto ring = arena.ring(kThroughputRingBytes);
  auto* marks = arena.make<RateMarks>();
  auto* report = arena.make<ConsumerReport>();
  Child child = Child::spawn("envelope consumer", cfg.child_cpu,
                             [&] { consume_envelopes(ring, bell, marks, report); });

  ipc::Doorbell doorbell(bell);
  ipc::RingProducer out(ring, "bulk", &doorbell);
  FirstSegmentHint hint;
  std::uint64_t sent = 0;
  std::uint64_t full = 0;
  auto send_one = [&] {
    const SmallMessage m{schema::Kind::CAST, ++sent, static_cast<std::int64_t>(sent)};
    for (;;) {
      const PushStatus s = send_small(out, hint, m);
      if (s == PushStatus::ok) return;
      if (s != PushStatus::full) fail("send failed");
      ++full;
      // Full: wait for room for the next message (poll, then futex).
      if (out.reserve(hint.bytes(), Clock::now() + kPeerTimeout).data() == nullptr) {
        child.check_running();
        fail("the ring stayed full for 2 s");
      }
    }
  };
  drive_rate(plan, send_one, [&] { push_control(out, kMarkFrame); });
  push_control(out, kStopFrame);
  child.join();
  std::fprintf(stderr,
               "bulkhead-bench: ring_throughput: %llu messages; consumer slept %llu times; "
               "producer found the ring full %llu times\n",
               static_cast<unsigned long long>(sent),
               static_cast<unsigned long long>(report->waits.sleeps),
               static_cast<unsigned long long>(full));
  return summarize_rates(marks->rates());
}

// ---------------------------------------------------------------------------
// idle_consumer_cpu

struct IdleReport {
  std::atomic<std::uint32_t> waiting;  // set by the child just before it waits
  std::atomic<std::uint32_t> done;     // set by the child after the numbers below
  std::int64_t cpu_ns;
  std::int64_t wall_ns;
};

Result idle_consumer_cpu(const RunConfig& cfg) {
  ShmArena arena(ipc::ring_footprint(kRttRingBytes) + 8 * ipc::kCacheLine);
  ipc::DoorbellWord* bell = arena.doorbell();
  const auto ring = arena.ring(kRttRingBytes);
  auto* report = arena.make<IdleReport>();
  Child child = Child::spawn("idle consumer", cfg.child_cpu, [&] {
    ipc::RingConsumer in(ring, "idle");
    ipc::Waiter waiter(bell);
    report->waiting.store(1, std::memory_order_release);
    const auto t0 = Clock::now();
    const std::int64_t cpu0 = process_cpu_ns();
    waiter.wait([&] { return in.readable(); });
    const std::int64_t cpu1 = process_cpu_ns();
    const auto t1 = Clock::now();
    take(in);
    report->cpu_ns = cpu1 - cpu0;
    report->wall_ns = ns_between(t0, t1);
    report->done.store(1, std::memory_order_release);
  });

  const auto give_up = Clock::now() + kPeerTimeout;
  while (report->waiting.load(std::memory_order_acquire) == 0) {
    if (Clock::now() > give_up) {
      child.check_running();
      fail("the idle consumer did not start");
    }
    std::this_thread::sleep_for(100us);
  }
  // Its poll window, then one second of sleep; then one message wakes it.
  std::this_thread::sleep_for(ipc::Waiter::Options{}.max_spin + 1s);
  ipc::Doorbell doorbell(bell);
  ipc::RingProducer out(ring, "idle", &doorbell);
  push_control(out, kStopFrame);
  child.join();
  if (report->done.load(std::memory_order_acquire) == 0) fail("the idle consumer reported nothing");
  return Value{static_cast<double>(report->cpu_ns) / static_cast<double>(report->wall_ns)};
}

}  // namespace

void add_ring_figures(Catalog& c) {
  c.figures.push_back({"raw_spin_rtt",
                       "ring round trip, 64 B frames, both sides busy-poll, no codec/doorbell",
                       raw_spin_rtt});
  c.figures.push_back({"ring_rtt_hot",
                       "Envelope round trip via codec + rings + Waiter, back to back",
                       ring_rtt_hot});
  c.figures.push_back(
      {"ring_rtt_cold", "same, 50 us apart: the receiver is asleep on its futex", ring_rtt_cold});
  c.figures.push_back({"ring_throughput", "one-way Envelopes via codec + ring, consumer may sleep",
                       ring_throughput});
  c.figures.push_back({"idle_consumer_cpu",
                       "CPU of a consumer idle in its Waiter for 1 s (fraction of a core)",
                       idle_consumer_cpu});

  c.ratios.push_back({"ring_rtt_hot", "raw_spin_rtt"});
  c.ratios.push_back({"ring_rtt_cold", "futex_rtt"});
  c.ratios.push_back({"ring_throughput", "pipe_throughput"});

  using Op = Target::Op;
  c.targets.push_back({"ring_rtt_hot", "raw_spin_rtt", Op::at_most, 1.5, "<= 1.5x raw_spin_rtt"});
  c.targets.push_back({"ring_rtt_cold", "futex_rtt", Op::at_most, 1.2, "<= 1.2x futex_rtt"});
  c.targets.push_back({"ring_throughput", "", Op::at_least, 5e6, ">= 5M msgs/s"});
  c.targets.push_back(
      {"ring_throughput", "pipe_throughput", Op::at_least, 2.5, ">= 2.5x pipe_throughput"});
  c.targets.push_back({"idle_consumer_cpu", "", Op::below, 0.01, "< 1% of a core"});

  c.notes.push_back([](const std::map<std::string, Result>& r) -> std::optional<std::string> {
    auto raw = r.find("raw_spin_rtt");
    if (raw == r.end() || headline(raw->second) >= 300) return std::nullopt;
    return "raw_spin_rtt under 0.3 us: the two CPUs share a core's caches (SMT siblings, or a "
           "VM whose vCPUs the host packed onto one core); the codec's own CPU time then "
           "dominates ring_rtt_hot, so its ratio to raw_spin_rtt is not comparable";
  });
  c.notes.push_back([](const std::map<std::string, Result>& r) -> std::optional<std::string> {
    auto raw = r.find("raw_spin_rtt");
    auto hot = r.find("ring_rtt_hot");
    if (raw == r.end() || hot == r.end() || headline(hot->second) >= headline(raw->second)) {
      return std::nullopt;
    }
    return "ring_rtt_hot came out faster than raw_spin_rtt, which does less work: the host moved "
           "the vCPUs (e.g. onto SMT siblings) between the two figures; their ratio is "
           "meaningless, run again";
  });
  c.notes.push_back([](const std::map<std::string, Result>& r) -> std::optional<std::string> {
    auto futex = r.find("futex_rtt");
    if (futex == r.end() || headline(futex->second) < 30'000) return std::nullopt;
    return "futex_rtt over 30 us: waking a sleeping CPU is slow here (a VM whose idle vCPUs "
           "halt); ring_rtt_cold pays one such wake-up, futex_rtt two";
  });
}

}  // namespace bulkhead::bench
