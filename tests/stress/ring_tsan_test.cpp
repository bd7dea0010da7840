// Two threads, one ring, about a million frames of varying size; built for
// ThreadSanitizer (it also runs in the other builds).
//
// TSan cannot see races between processes, so the producer and the consumer
// are threads of one process.  To keep the multi-process shape, they attach
// through two different mappings of the same segment (the creator's, and one
// made from a dup of its fd as a worker would), so each side reads the other's
// writes through a different virtual address and the futexes must be the
// shared (not FUTEX_PRIVATE) kind for the wake-ups to arrive.  A second test
// uses one mapping for both threads, which lets TSan check the
// happens-before edges (the tail and head release/acquire pairs) on the frame
// bytes themselves.
#include <fcntl.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "ipc/doorbell.hpp"
#include "ipc/ring.hpp"
#include "ipc/segment.hpp"
#include "tests/ring_fixture.hpp"

namespace bulkhead {
namespace {

using namespace std::chrono_literals;
using ipc::Clock;
using ipc::PopStatus;
using ipc::PushStatus;

constexpr std::uint64_t kFrames = 1'000'000;

// Payload of frame `seq`: its length is a function of seq (0..300 bytes); the
// first 8 bytes (if there is room) hold seq, the rest a pattern.
std::size_t length_of(std::uint64_t seq) {
  return static_cast<std::size_t>(testing::mix64(seq) % 301);
}
void fill(std::span<std::byte> out, std::uint64_t seq) {
  std::size_t i = 0;
  if (out.size() >= 8) {
    std::memcpy(out.data(), &seq, 8);
    i = 8;
  }
  for (; i < out.size(); ++i) out[i] = static_cast<std::byte>(seq * 13 + i);
}
bool valid(std::span<const std::byte> in, std::uint64_t seq) {
  if (in.size() != length_of(seq)) return false;
  std::size_t i = 0;
  if (in.size() >= 8) {
    std::uint64_t got = 0;
    std::memcpy(&got, in.data(), 8);
    if (got != seq) return false;
    i = 8;
  }
  for (; i < in.size(); ++i) {
    if (in[i] != static_cast<std::byte>(seq * 13 + i)) return false;
  }
  return true;
}

struct Result {
  std::uint64_t received = 0;
  std::uint64_t first_bad = ~0ull;
  ipc::WaitStats waits;
  PushStatus producer_status = PushStatus::ok;
  std::string fault;
};

// Runs the producer thread on `prod_mem` and the consumer on `cons_mem`,
// with doorbell words `prod_bell` / `cons_bell` (the same word seen through
// each side's mapping).
Result run(std::span<std::byte> prod_mem, ipc::DoorbellWord* prod_bell,
           std::span<std::byte> cons_mem, ipc::DoorbellWord* cons_bell) {
  Result res;
  std::thread producer([&] {
    ipc::Doorbell db(prod_bell);
    ipc::RingProducer p(prod_mem, "tsan", &db);
    std::vector<std::byte> scratch(512);
    for (std::uint64_t seq = 0; seq < kFrames; ++seq) {
      const std::size_t len = length_of(seq);
      if (seq % 3 == 0) {
        // In place: reserve, write into the ring, commit.
        auto area = p.reserve(len, Clock::now() + 60s);
        if (area.data() == nullptr) {
          res.producer_status = p.status();
          return;
        }
        fill(area.first(len), seq);
        p.commit(1, len);
      } else {
        fill(std::span(scratch).first(len), seq);
        PushStatus s = p.push(1, std::span(scratch).first(len), Clock::now() + 60s);
        if (s != PushStatus::ok) {
          res.producer_status = s;
          return;
        }
      }
      // Now and then go quiet long enough for the consumer to fall asleep.
      if (seq % 50'000 == 49'999) std::this_thread::sleep_for(2ms);
    }
  });
  {
    ipc::RingConsumer c(cons_mem, "tsan");
    ipc::Waiter w(cons_bell);
    while (res.received < kFrames) {
      if (!w.wait([&] { return c.readable(); }, Clock::now() + 30s)) {
        res.fault = "no frame for 30 s (lost wake-up?)";
        break;
      }
      ipc::Frame fr;
      PopStatus s;
      while ((s = c.try_peek(fr)) == PopStatus::ok) {
        if (fr.kind != 1 || !valid(fr.payload, res.received)) {
          if (res.first_bad == ~0ull) res.first_bad = res.received;
        }
        ++res.received;
        c.release();
      }
      if (s == PopStatus::broken) {
        res.fault = c.fault().describe();
        break;
      }
    }
    res.waits = w.stats();
  }
  producer.join();
  return res;
}

void expect_all_arrived(const Result& r) {
  EXPECT_EQ(r.received, kFrames) << r.fault;
  EXPECT_EQ(r.first_bad, ~0ull) << "frame " << r.first_bad << " was wrong or out of order";
  EXPECT_EQ(r.producer_status, PushStatus::ok);
  EXPECT_TRUE(r.fault.empty()) << r.fault;
  EXPECT_GT(r.waits.sleeps, 0u) << "the consumer never slept: the futex path went untested";
}

TEST(RingTsan, ProducerAndConsumerOnTwoMappingsOfOneSegment) {
  constexpr std::size_t kCap = 1 << 13;  // small: the producer often waits for room
  auto seg =
      ipc::Segment::create(ipc::segment_name(ipc::Instance::self(), testing::unique_label("tsan2")),
                           64 + ipc::ring_footprint(kCap));
  seg.unlink();
  auto* bell = new (seg.payload().data()) ipc::DoorbellWord{};
  auto cons_mem = seg.payload().subspan(64, ipc::ring_footprint(kCap));
  ipc::init_ring(cons_mem, kCap);
  // The producer's view: a second mapping through a dup of the fd.
  int dup = ::fcntl(seg.fd(), F_DUPFD_CLOEXEC, 0);
  ASSERT_GE(dup, 0);
  auto worker_view = ipc::Segment::adopt_fd(ipc::UniqueFd(dup), seg.name());
  ASSERT_NE(worker_view.base(), seg.base());
  auto* prod_bell = reinterpret_cast<ipc::DoorbellWord*>(worker_view.payload().data());
  auto prod_mem = worker_view.payload().subspan(64, ipc::ring_footprint(kCap));

  const auto t0 = Clock::now();
  Result r = run(prod_mem, prod_bell, cons_mem, bell);
  expect_all_arrived(r);
  EXPECT_LT(Clock::now() - t0, 90s);
  RecordProperty("sleeps", std::to_string(r.waits.sleeps));
}

TEST(RingTsan, ProducerAndConsumerOnOneMappingHaveNoDataRace) {
  constexpr std::size_t kCap = 1 << 13;
  testing::RingFixture f(kCap, "tsan1");
  const auto t0 = Clock::now();
  Result r = run(f.ring_mem(), f.doorbell_word, f.ring_mem(), f.doorbell_word);
  expect_all_arrived(r);
  EXPECT_LT(Clock::now() - t0, 90s);
}

}  // namespace
}  // namespace bulkhead
