// The frame ring between real processes: producers and consumers killed with
// SIGKILL at random moments and replaced, a hostile producer scribbling on
// the shared memory, and a million messages across futex sleeps.
//
// Every child is forked from the test, gets PR_SET_PDEATHSIG, reports through
// its exit code and shared memory (never through gtest), and is reaped by the
// parent.  Random choices come from one seed printed with each failure; set
// BULKHEAD_TEST_SEED to replay it.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "ipc/doorbell.hpp"
#include "ipc/ring.hpp"
#include "tests/ring_fixture.hpp"

namespace bulkhead {
namespace {

using namespace std::chrono_literals;
using ipc::Clock;
using ipc::PopStatus;
using ipc::PushStatus;
using testing::check_frame;
using testing::ChildProcess;
using testing::describe_status;
using testing::fill_checked_frame;
using testing::GuardedRingFixture;

std::uint64_t test_seed() {
  if (const char* s = std::getenv("BULKHEAD_TEST_SEED")) return std::strtoull(s, nullptr, 0);
  return (std::uint64_t{std::random_device{}()} << 32) ^ std::random_device{}();
}

std::string seed_note(std::uint64_t seed) {
  return "replay with BULKHEAD_TEST_SEED=" + std::to_string(seed);
}

// Pops every frame that is there now; checks each is a whole checked frame
// with the next sequence number.  Returns false (after recording a failure)
// on the first bad one.
bool drain_checked(ipc::RingConsumer& c, std::uint64_t& expected, std::size_t max_frames = ~0ul) {
  ipc::Frame fr;
  for (std::size_t n = 0; n < max_frames; ++n) {
    PopStatus s = c.try_peek(fr);
    if (s == PopStatus::empty) return true;
    if (s != PopStatus::ok) {
      ADD_FAILURE() << "consumer broke at frame " << expected << ": " << c.fault().describe();
      return false;
    }
    std::uint64_t seq = 0;
    if (!check_frame(fr.payload, seq)) {
      ADD_FAILURE() << "frame after " << expected << " (" << fr.payload.size()
                    << " bytes) is torn or stale";
      return false;
    }
    if (seq != expected) {
      ADD_FAILURE() << "got sequence " << seq << ", expected " << expected;
      return false;
    }
    ++expected;
    c.release();
  }
  return true;
}

// --- 1 ----------------------------------------------------------------------------

TEST(RingProcess, ProducerKilledMidStreamLeavesOnlyWholeFrames) {
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(seed_note(seed));
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 40; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    GuardedRingFixture f(1 << 15, "killprod");
    const std::uint64_t child_seed = rng();
    auto producer = ChildProcess::spawn([&] {
      ipc::RingProducer p(f.ring_mem(), "killprod");
      std::mt19937_64 r(child_seed);
      for (std::uint64_t seq = 0;; ++seq) {
        const std::size_t len = testing::kCheckedFrameMin + r() % 3000;
        auto area = p.reserve(len, Clock::now() + 30s);
        if (area.data() == nullptr) return 2;
        fill_checked_frame(area.first(len), seq);
        p.commit(1, len);
      }
    });
    ipc::RingConsumer c(f.ring_mem(), "killprod");
    std::uint64_t expected = 0;
    const std::uint64_t kill_after = 100 + rng() % 4000;
    const auto deadline = Clock::now() + 20s;
    while (expected < kill_after && Clock::now() < deadline) {
      if (!drain_checked(c, expected, 1 + rng() % 64)) return;
      std::this_thread::yield();
    }
    ASSERT_GE(expected, kill_after) << "the producer made no progress";
    // Let it run on a little, without us: it writes while we are not looking.
    // Wait until it has published at least one more frame (on a loaded machine
    // a bare sleep may pass with the producer never scheduled), then a while.
    const auto more_deadline = Clock::now() + 20s;
    while (!c.readable() && Clock::now() < more_deadline) std::this_thread::yield();
    ASSERT_TRUE(c.readable()) << "the producer wrote nothing after frame " << expected;
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 3000));
    producer.kill(SIGKILL);
    const int status = producer.wait();
    ASSERT_TRUE(testing::killed_by(status, SIGKILL))
        << "the producer must die mid-stream, not " << describe_status(status);
    ASSERT_TRUE(drain_checked(c, expected));
    ipc::Frame fr;
    EXPECT_EQ(c.try_peek(fr), PopStatus::empty) << "nothing partial is ever visible";
    EXPECT_FALSE(c.broken());
    // It may have died between a frame's stamp and its store of tail; a new
    // producer counts that frame and resumes right after what we consumed.
    ipc::RingProducer next(f.ring_mem(), "killprod");
    EXPECT_FALSE(next.broken());
    EXPECT_EQ(f.control()->head.load(), f.control()->tail.load());
    EXPECT_GT(expected, kill_after);
  }
}

// --- 2 ----------------------------------------------------------------------------

// What a consumer process reports through shared memory.
struct ConsumerReport {
  std::atomic<std::uint64_t> first_seq{~0ull};
  std::atomic<std::uint64_t> last_seq{~0ull};
  std::atomic<std::uint64_t> released{0};
  std::atomic<std::uint64_t> last_peeked{~0ull};
  std::atomic<std::uint64_t> error_at{~0ull};
};

// Consumes fixed-size checked frames until sequence `last`; returns 0 if
// every frame was whole and they were contiguous.
int consume_fixed(const GuardedRingFixture& f, ConsumerReport& rep, std::size_t payload,
                  std::uint64_t last) {
  ipc::RingConsumer c(f.ring_mem(), "replace");
  ipc::Waiter w(f.doorbell_word);
  std::uint64_t next = ~0ull;
  for (;;) {
    if (!w.wait([&] { return c.readable(); }, Clock::now() + 20s)) return 3;
    ipc::Frame fr;
    while (c.try_peek(fr) == PopStatus::ok) {
      std::uint64_t seq = 0;
      if (fr.payload.size() != payload || !check_frame(fr.payload, seq)) return 4;
      if (next == ~0ull) {
        rep.first_seq.store(seq);
      } else if (seq != next) {
        rep.error_at.store(seq);
        return 5;
      }
      rep.last_peeked.store(seq);
      c.release();
      rep.released.fetch_add(1);
      rep.last_seq.store(seq);
      next = seq + 1;
      if (seq == last) return 0;
    }
    if (c.broken()) return 6;
  }
}

TEST(RingProcess, ConsumerKilledAndReplacedContinuesExactlyWhereItStopped) {
  constexpr std::size_t kPayload = 48;
  constexpr std::size_t kFrame = ipc::frame_bytes(kPayload);
  constexpr std::size_t kCap = 1 << 14;
  static_assert(kFrame == 64 && kCap % kFrame == 0, "no pad frames: released = head / kFrame");
  constexpr std::uint64_t kTotal = 150'000;
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(seed_note(seed));
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 12; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    GuardedRingFixture f(kCap, "replace");
    auto* old_rep = new (f.extra()) ConsumerReport{};
    auto* new_rep = new (f.extra() + 512) ConsumerReport{};
    auto producer = ChildProcess::spawn([&] {
      ipc::Doorbell db(f.doorbell_word);
      ipc::RingProducer p(f.ring_mem(), "replace", &db);
      std::byte buf[kPayload];
      for (std::uint64_t seq = 0; seq < kTotal; ++seq) {
        fill_checked_frame(buf, seq);
        if (p.push(1, buf, Clock::now() + 30s) != PushStatus::ok) return 2;
      }
      return 0;
    });
    auto old_consumer =
        ChildProcess::spawn([&] { return consume_fixed(f, *old_rep, kPayload, kTotal - 1); });
    const std::uint64_t kill_after = 5'000 + rng() % 40'000;
    const auto deadline = Clock::now() + 20s;
    while (old_rep->released.load() < kill_after && Clock::now() < deadline) {
      std::this_thread::sleep_for(50us);
    }
    ASSERT_GE(old_rep->released.load(), kill_after) << "the first consumer made no progress";
    old_consumer.kill(SIGKILL);
    const int old_status = old_consumer.wait();
    ASSERT_TRUE(testing::killed_by(old_status, SIGKILL))
        << "the first consumer must die mid-stream, not " << describe_status(old_status);

    const std::uint64_t head = f.control()->head.load();
    ASSERT_EQ(head % kFrame, 0u);
    const std::uint64_t released = head / kFrame;
    ASSERT_LT(released, kTotal) << "killed too late: raise kTotal";
    // `released` counts what the old consumer handed back, whatever it told us.
    EXPECT_GE(released, old_rep->released.load());
    EXPECT_LE(released, old_rep->released.load() + 1);

    auto new_consumer =
        ChildProcess::spawn([&] { return consume_fixed(f, *new_rep, kPayload, kTotal - 1); });
    auto new_status = new_consumer.wait_until(Clock::now() + 30s);
    ASSERT_TRUE(new_status.has_value()) << "the new consumer hangs";
    EXPECT_TRUE(testing::exited_ok(*new_status))
        << "new consumer " << describe_status(*new_status) << ", error at sequence "
        << new_rep->error_at.load();
    auto prod_status = producer.wait_until(Clock::now() + 10s);
    ASSERT_TRUE(prod_status.has_value()) << "the producer hangs";
    EXPECT_TRUE(testing::exited_ok(*prod_status)) << "producer " << describe_status(*prod_status);

    // The rule: a released frame is never redelivered, a frame peeked but not
    // released is (it is the first one the new consumer sees).
    EXPECT_EQ(new_rep->first_seq.load(), released)
        << "old consumer last peeked " << old_rep->last_peeked.load();
    EXPECT_EQ(new_rep->last_seq.load(), kTotal - 1);
    EXPECT_EQ(new_rep->released.load(), kTotal - released) << "nothing lost, nothing twice";
    EXPECT_EQ(f.control()->head.load(), kTotal * kFrame);
  }
}

// A producer asleep waiting for room must be woken when the consumer makes
// room, even if the consumer then stops reading for a while: it may be busy,
// or blocked pushing into the ring that goes the other way, and if that ring's
// consumer is this producer, waking it only when this ring is next found
// empty deadlocks the pair.
TEST(RingProcess, ProducerWaitingForRoomWakesWhenTheConsumerReleasesAndThenPauses) {
  constexpr std::size_t kPayload = 48;
  constexpr std::size_t kCap = 4096;  // 63 frames of 64 bytes (and the 64-byte guard)
  constexpr std::size_t kFull = kCap - 64;
  GuardedRingFixture f(kCap, "wake");
  auto producer = ChildProcess::spawn([&] {
    ipc::RingProducer p(f.ring_mem(), "wake");
    std::byte buf[kPayload];
    for (std::uint64_t seq = 0;; ++seq) {
      fill_checked_frame(buf, seq);
      if (p.push(1, buf, Clock::now() + 30s) != PushStatus::ok) return 2;
    }
  });
  auto* ctl = f.control();
  const auto deadline = Clock::now() + 10s;
  while ((ctl->tail.load() - ctl->head.load() != kFull || ctl->producer_waiting.load() == 0) &&
         Clock::now() < deadline) {
    std::this_thread::sleep_for(100us);
  }
  ASSERT_EQ(ctl->tail.load() - ctl->head.load(), kFull) << "the ring never filled";
  ASSERT_NE(ctl->producer_waiting.load(), 0u) << "the producer never went to sleep for room";
  std::this_thread::sleep_for(20ms);  // let it really be inside futex_wait
  ipc::RingConsumer c(f.ring_mem(), "wake");
  ipc::Frame fr;
  ASSERT_EQ(c.try_peek(fr), PopStatus::ok);
  // Read before the release: the woken producer may push at once (under
  // load it did, and the old order then waited for a second push).
  const std::uint64_t tail = ctl->tail.load();
  c.release();  // room for exactly one frame; then we stop reading
  const auto until = Clock::now() + 2s;
  while (ctl->tail.load() == tail && Clock::now() < until) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(ctl->tail.load(), tail + 64) << "the producer slept on with room for its frame";
}

// --- 3 ----------------------------------------------------------------------------

// How the hostile producer scribbles.
enum class Scribble {
  producer_line,      // random bytes over tail, producer_waiting and the rest of its line
  data_area,          // random bytes all over the data area
  after_good_frames,  // real frames first, then random bytes near the head
  forged_headers      // real frames first, then headers with plausible but wrong stamps
                      // (other positions, earlier laps) or right stamps and wrong lengths
};

int hostile_producer(const GuardedRingFixture& f, Scribble how, std::uint64_t seed,
                     std::size_t cap) {
  std::mt19937_64 r(seed);
  ipc::RingControl* ctl = f.control();
  std::byte* data = f.data();
  auto random_bytes = [&](std::byte* at, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) at[i] = static_cast<std::byte>(r());
  };
  if (how == Scribble::after_good_frames || how == Scribble::forged_headers) {
    ipc::RingProducer p(f.ring_mem(), "hostile");
    std::vector<std::byte> buf(200);
    for (std::uint64_t seq = 0; seq < 20; ++seq) {
      fill_checked_frame(std::span(buf).first(16 + seq * 8), seq);
      if (p.try_push(1, std::span(buf).first(16 + seq * 8)) != PushStatus::ok) return 2;
    }
  }
  for (std::uint64_t i = 0;; ++i) {
    const std::uint64_t head = ctl->head.load(std::memory_order_relaxed);
    switch (how) {
      case Scribble::producer_line:
        random_bytes(reinterpret_cast<std::byte*>(&ctl->tail), ipc::kCacheLine);
        break;
      case Scribble::data_area: {
        const std::size_t at = r() % cap;
        random_bytes(data + at, std::min<std::size_t>(cap - at, 1 + r() % 256));
        break;
      }
      case Scribble::after_good_frames: {
        const std::size_t at = (head + 8 * (r() % 64)) % cap;
        random_bytes(data + at, std::min<std::size_t>(cap - at, 1 + r() % 64));
        break;
      }
      case Scribble::forged_headers: {
        const std::uint64_t at = head + 16 * (r() % 4);
        const std::uint64_t stamps[] = {ipc::stamp_of(at), ipc::stamp_of(at - cap),
                                        ipc::stamp_of(at + 16 * (1 + r() % 8)), r()};
        const std::uint32_t lengths[] = {static_cast<std::uint32_t>(r() % 64),
                                         static_cast<std::uint32_t>(r()),
                                         static_cast<std::uint32_t>(cap - (at % cap))};
        ipc::FrameHeader h{stamps[r() % 4], lengths[r() % 3], static_cast<std::uint32_t>(r() % 3)};
        std::memcpy(data + at % cap, &h, sizeof h);
        break;
      }
    }
    if (i % 64 == 0) std::this_thread::yield();
  }
}

TEST(RingProcess, HostileProducerScribblingIsDetectedAndSurvived) {
  constexpr std::size_t kCap = 4096;
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(seed_note(seed));
  std::mt19937_64 rng(seed);
  const Scribble modes[] = {Scribble::producer_line, Scribble::data_area,
                            Scribble::after_good_frames, Scribble::forged_headers};
  for (int round = 0; round < 60; ++round) {
    const Scribble how = modes[round % 4];
    SCOPED_TRACE("round " + std::to_string(round) + ", mode " +
                 std::to_string(static_cast<int>(how)));
    GuardedRingFixture f(kCap, "hostile");
    const std::uint64_t child_seed = rng();
    auto hostile = ChildProcess::spawn([&] { return hostile_producer(f, how, child_seed, kCap); });
    ipc::RingConsumer c(f.ring_mem(), "hostile");
    const auto t0 = Clock::now();
    // The producer's own line is never read by the consumer: scribbling
    // there must change nothing at all (watched for a while).
    const bool harmless = how == Scribble::producer_line;
    const auto deadline = t0 + (harmless ? 300ms : 5s);
    std::uint64_t frames = 0, sum = 0;
    PopStatus s = PopStatus::empty;
    while (Clock::now() < deadline) {
      ipc::Frame fr;
      s = c.try_peek(fr);
      if (s == PopStatus::broken) break;
      if (s == PopStatus::empty) {
        std::this_thread::yield();
        continue;
      }
      // Whatever the peer wrote, what we are handed lies inside the ring.
      ASSERT_GE(fr.payload.data(), f.data());
      ASSERT_LE(fr.payload.data() + fr.payload.size(), f.data() + kCap);
      ASSERT_LE(fr.payload.size(), c.max_payload());
      ASSERT_EQ(reinterpret_cast<std::uintptr_t>(fr.payload.data()) % 8, 0u);
      for (std::byte b : fr.payload) sum += static_cast<std::uint8_t>(b);
      ++frames;
      c.release();
    }
    const auto took = Clock::now() - t0;
    hostile.kill(SIGKILL);
    const int status = hostile.wait();
    EXPECT_TRUE(testing::killed_by(status, SIGKILL))
        << "the hostile child stopped early: " << describe_status(status);
    if (harmless) {
      EXPECT_EQ(s, PopStatus::empty);
      EXPECT_EQ(frames, 0u);
      EXPECT_FALSE(c.broken());
      continue;
    }
    ASSERT_EQ(s, PopStatus::broken)
        << "5 s of scribbling went unnoticed (" << frames << " frames popped)";
    EXPECT_LT(took, 5s);
    const std::string field = c.fault().field;
    EXPECT_TRUE(field == "frame.stamp" || field == "frame.length") << field;
    const std::string why = c.fault().describe();
    EXPECT_NE(why.find("hostile"), std::string::npos) << why;
    EXPECT_NE(why.find(field), std::string::npos) << why;
    // Broken is sticky, readable (so a waiter wakes up to see it) and cheap.
    ipc::Frame fr;
    EXPECT_EQ(c.try_peek(fr), PopStatus::broken);
    EXPECT_TRUE(c.readable());
    std::vector<std::byte> out(c.max_payload());
    std::uint32_t kind = 0;
    std::size_t len = 0;
    EXPECT_EQ(c.try_pop(kind, out, len), PopStatus::broken);
    (void)sum;
  }
}

// A consumer resumes at the head it finds in shared memory, which the peer
// can write.  Near the end of the 64-bit counter a frame's end is 0, the value
// RingConsumer uses for "nothing peeked": release() then does nothing and the
// same frame comes back forever.
TEST(RingProcess, HostileHeadNearTheEndOfTheCounterCannotMakeTheConsumerSpin) {
  constexpr std::size_t kCap = 256;
  GuardedRingFixture f(kCap, "wrap");
  auto hostile = ChildProcess::spawn([&] {
    const std::uint64_t head = ~std::uint64_t{0} - 63;  // 2^64 - 64: the last frame slot
    ipc::FrameHeader h{ipc::stamp_of(head), 0, 1};
    std::memcpy(f.data() + (head & (kCap - 1)), &h, sizeof h);
    f.control()->head.store(head);
    f.control()->tail.store(head + 64);  // wraps to 0: one 64-byte frame published
    return 0;
  });
  ASSERT_TRUE(testing::exited_ok(hostile.wait()));
  ipc::RingConsumer c(f.ring_mem(), "wrap");  // e.g. a restarted consumer
  int popped = 0;
  ipc::Frame fr;
  PopStatus s;
  while ((s = c.try_peek(fr)) == PopStatus::ok && popped < 1000) {
    ++popped;
    c.release();
  }
  EXPECT_LE(popped, 1) << "one frame was published, the consumer returned it " << popped
                       << " times";
  EXPECT_NE(s, PopStatus::ok);
}

// --- 4 ----------------------------------------------------------------------------

struct BurstReport {
  std::atomic<std::uint64_t> bursts{0};
  std::atomic<std::uint64_t> long_pauses{0};
  std::atomic<std::uint64_t> undrained{0};  // drain waits that timed out: a lost wake-up
};

TEST(RingProcess, MillionMessagesAcrossSleepsArriveInOrderWithoutLostWakeups) {
  constexpr std::uint64_t kTotal = 1'000'000;
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(seed_note(seed));
  GuardedRingFixture f(1 << 16, "million");
  auto* rep = new (f.extra()) BurstReport{};
  auto producer = ChildProcess::spawn([&] {
    ipc::Doorbell db(f.doorbell_word);
    ipc::RingProducer p(f.ring_mem(), "million", &db);
    std::mt19937_64 r(seed);
    std::byte buf[64];
    std::uint64_t seq = 0;
    while (seq < kTotal) {
      const std::uint64_t burst = 1 + r() % 2000;
      for (std::uint64_t i = 0; i < burst && seq < kTotal; ++i, ++seq) {
        const std::size_t len = 8 + r() % 57;
        std::memcpy(buf, &seq, 8);
        for (std::size_t j = 8; j < len; ++j) buf[j] = static_cast<std::byte>(seq + j);
        if (p.push(1, std::span(buf, len), Clock::now() + 20s) != PushStatus::ok) return 2;
      }
      rep->bursts.fetch_add(1);
      const unsigned dice = r() % 100;
      if (dice < 50) continue;
      // Before pausing, wait until the consumer has taken everything: if it
      // missed its wake-up it sleeps on, and we notice.
      const auto give_up = Clock::now() + 2s;
      while (f.control()->head.load(std::memory_order_acquire) !=
             f.control()->tail.load(std::memory_order_relaxed)) {
        if (Clock::now() > give_up) {
          rep->undrained.fetch_add(1);
          break;
        }
        std::this_thread::sleep_for(20us);
      }
      if (dice < 85) {
        std::this_thread::sleep_for(std::chrono::microseconds(30 + r() % 150));
      } else {
        rep->long_pauses.fetch_add(1);
        std::this_thread::sleep_for(std::chrono::microseconds(500 + r() % 1500));
      }
    }
    return 0;
  });

  ipc::RingConsumer c(f.ring_mem(), "million");
  ipc::Waiter w(f.doorbell_word);
  std::uint64_t expected = 0;
  Clock::duration longest_wait{};
  const auto t0 = Clock::now();
  bool ok = true;
  while (ok && expected < kTotal) {
    const auto w0 = Clock::now();
    if (!w.wait([&] { return c.readable(); }, w0 + 5s)) {
      ADD_FAILURE() << "no frame for 5 s after " << expected << ": lost wake-up or dead producer";
      break;
    }
    longest_wait = std::max(longest_wait, Clock::now() - w0);
    if (longest_wait > 2s) {
      ADD_FAILURE() << "a wait outlived every producer pause by far: lost wake-up at frame "
                    << expected;
      break;
    }
    ipc::Frame fr;
    while (ok && c.try_peek(fr) == PopStatus::ok) {
      std::uint64_t seq = ~0ull;
      if (fr.payload.size() >= 8) std::memcpy(&seq, fr.payload.data(), 8);
      ok = fr.payload.size() >= 8 && fr.payload.size() <= 64 && seq == expected;
      for (std::size_t j = 8; ok && j < fr.payload.size(); ++j) {
        ok = fr.payload[j] == static_cast<std::byte>(seq + j);
      }
      if (!ok) ADD_FAILURE() << "frame " << expected << " is wrong (seq " << seq << ")";
      ++expected;
      c.release();
    }
    if (c.broken()) {
      ADD_FAILURE() << c.fault().describe();
      break;
    }
  }
  const auto took = Clock::now() - t0;
  auto status = producer.wait_until(Clock::now() + 10s);
  ASSERT_TRUE(status.has_value()) << "producer hangs";
  EXPECT_TRUE(testing::exited_ok(*status)) << "producer " << describe_status(*status);
  EXPECT_EQ(expected, kTotal);
  EXPECT_EQ(rep->undrained.load(), 0u) << "the consumer slept through a doorbell";
  EXPECT_GE(rep->long_pauses.load(), 20u) << "the schedule must include long pauses";
  EXPECT_GE(w.stats().sleeps, 20u) << "the consumer must really sleep in futex_wait";
  EXPECT_LT(took, 60s);
  RecordProperty("sleeps", std::to_string(w.stats().sleeps));
  RecordProperty("spin_hits", std::to_string(w.stats().spin_hits));
  RecordProperty("bursts", std::to_string(rep->bursts.load()));
}

// --- 5 ----------------------------------------------------------------------------

// The producer's note, written before each frame: (tail before the frame / 8)
// in the high half, the frame's sequence in the low half, in one store so a
// SIGKILL cannot split it.
struct ProducerNote {
  std::atomic<std::uint64_t> intent{0};
  std::atomic<std::uint64_t> restart_seq{~0ull};
  std::atomic<std::uint64_t> attached_at{~0ull};  // the tail the new producer found
};

TEST(RingProcess, RestartedProducerAppendsAfterTheLastWholeFrame) {
  constexpr std::size_t kCap = 1 << 14;
  constexpr std::uint64_t kSecondRun = 3000;
  const std::uint64_t seed = test_seed();
  SCOPED_TRACE(seed_note(seed));
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 30; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    GuardedRingFixture f(kCap, "restart");
    auto* note = new (f.extra()) ProducerNote{};
    const std::uint64_t seed_a = rng(), seed_b = rng();
    auto first = ChildProcess::spawn([&] {
      ipc::RingProducer p(f.ring_mem(), "restart");
      std::mt19937_64 r(seed_a);
      for (std::uint64_t seq = 0;; ++seq) {
        const std::uint64_t tail = f.control()->tail.load(std::memory_order_relaxed);
        note->intent.store((tail / 8) << 32 | seq, std::memory_order_release);
        const std::size_t len = testing::kCheckedFrameMin + r() % 1500;
        auto area = p.reserve(len, Clock::now() + 30s);
        if (area.data() == nullptr) return 2;
        fill_checked_frame(area.first(len), seq);
        p.commit(1, len);
      }
    });
    ipc::RingConsumer c(f.ring_mem(), "restart");
    std::uint64_t expected = 0;
    const std::uint64_t kill_after = 100 + rng() % 3000;
    auto deadline = Clock::now() + 20s;
    while (expected < kill_after && Clock::now() < deadline) {
      if (!drain_checked(c, expected, 1 + rng() % 32)) return;
      std::this_thread::yield();
    }
    ASSERT_GE(expected, kill_after);
    // Stop reading and let frames pile up (until a random target, or until
    // the producer stops: the ring is full), so that the new producer finds
    // unread frames of the old one in the ring.
    const std::uint64_t target = kCap / 4 + rng() % (kCap / 2);
    std::uint64_t last_tail = f.control()->tail.load();
    auto moved_at = Clock::now();
    while (f.control()->tail.load() - f.control()->head.load() < target &&
           Clock::now() - moved_at < 100ms) {
      std::this_thread::sleep_for(100us);
      if (f.control()->tail.load() != last_tail) {
        last_tail = f.control()->tail.load();
        moved_at = Clock::now();
      }
    }
    const std::uint64_t backlog = f.control()->tail.load() - f.control()->head.load();
    ASSERT_GT(backlog, 0u) << "no unread frames left for the restart";
    first.kill(SIGKILL);
    const int status = first.wait();
    ASSERT_TRUE(testing::killed_by(status, SIGKILL)) << describe_status(status);
    const std::uint64_t popped_before_restart = expected;
    // Frames of the dead producer may still be waiting in the ring: the new
    // one must append after them, not over them.
    auto second = ChildProcess::spawn([&] {
      const std::uint64_t n = note->intent.load(std::memory_order_acquire);
      // Attaching counts a frame the old one stamped but did not add to tail.
      ipc::RingProducer p(f.ring_mem(), "restart");
      if (p.broken()) return 3;
      const std::uint64_t tail = f.control()->tail.load(std::memory_order_acquire);
      const std::uint64_t start = (n & 0xffffffffu) + ((n >> 32) * 8 == tail ? 0 : 1);
      note->restart_seq.store(start);
      note->attached_at.store(tail);
      std::mt19937_64 r(seed_b);
      for (std::uint64_t seq = start; seq < start + kSecondRun; ++seq) {
        const std::size_t len = testing::kCheckedFrameMin + r() % 1500;
        auto area = p.reserve(len, Clock::now() + 30s);
        if (area.data() == nullptr) return 2;
        fill_checked_frame(area.first(len), seq);
        p.commit(1, len);
      }
      return 0;
    });
    // Read nothing until the new producer has attached: it must find the
    // old one's unread frames there.
    deadline = Clock::now() + 20s;
    while (note->attached_at.load() == ~0ull && Clock::now() < deadline) {
      std::this_thread::sleep_for(50us);
    }
    ASSERT_NE(note->attached_at.load(), ~0ull) << "the new producer did not start";
    EXPECT_GE(note->attached_at.load() - f.control()->head.load(), backlog);
    std::optional<int> second_status;
    while (Clock::now() < deadline) {
      if (!second_status) second_status = second.wait_until(Clock::now());
      if (!drain_checked(c, expected)) return;
      if (second_status) {
        ASSERT_TRUE(drain_checked(c, expected));
        break;
      }
      std::this_thread::yield();
    }
    ASSERT_TRUE(second_status.has_value()) << "the second producer hangs";
    ASSERT_TRUE(testing::exited_ok(*second_status)) << describe_status(*second_status);
    EXPECT_EQ(expected, note->restart_seq.load() + kSecondRun)
        << "one contiguous sequence across both producers";
    EXPECT_GT(note->restart_seq.load(), popped_before_restart)
        << "the new producer started with unread frames of the old one in the ring";
    RecordProperty("unread_at_restart",
                   std::to_string(note->restart_seq.load() - popped_before_restart));
    EXPECT_FALSE(c.broken());
    EXPECT_EQ(f.control()->head.load(), f.control()->tail.load());
  }
}

}  // namespace
}  // namespace bulkhead
