// Single-process behaviour of the frame ring: order, wrap, full, empty,
// largest and oversize frames, and detection of a scribbled ring.
#include "ipc/ring.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "tests/ring_fixture.hpp"

namespace bulkhead {
namespace {

using ipc::PopStatus;
using ipc::PushStatus;
using testing::RingFixture;

std::vector<std::byte> bytes_of(std::uint64_t seq, std::size_t len) {
  std::vector<std::byte> v(len);
  for (std::size_t i = 0; i < len; ++i) v[i] = static_cast<std::byte>((seq * 31 + i) & 0xff);
  return v;
}

TEST(Ring, EmptyRingPopsNothing) {
  RingFixture f(256);
  ipc::RingConsumer c(f.ring_mem(), "t");
  ipc::Frame fr;
  EXPECT_EQ(c.try_peek(fr), PopStatus::empty);
  EXPECT_FALSE(c.readable());
}

TEST(Ring, FramesComeOutInOrderWithTheirKindAndBytes) {
  RingFixture f(4096);
  ipc::RingProducer p(f.ring_mem(), "t");
  ipc::RingConsumer c(f.ring_mem(), "t");
  for (std::uint32_t i = 0; i < 20; ++i) {
    auto data = bytes_of(i, i * 3);
    ASSERT_EQ(p.try_push(i + 1, data), PushStatus::ok);
  }
  for (std::uint32_t i = 0; i < 20; ++i) {
    ipc::Frame fr;
    ASSERT_EQ(c.try_peek(fr), PopStatus::ok);
    EXPECT_EQ(fr.kind, i + 1);
    auto want = bytes_of(i, i * 3);
    ASSERT_EQ(fr.payload.size(), want.size());
    EXPECT_TRUE(std::equal(want.begin(), want.end(), fr.payload.begin()));
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(fr.payload.data()) % 8, 0u);
    c.release();
  }
  ipc::Frame fr;
  EXPECT_EQ(c.try_peek(fr), PopStatus::empty);
}

TEST(Ring, WrapsAroundManyTimesWithOddSizes) {
  RingFixture f(512);
  ipc::RingProducer p(f.ring_mem(), "t");
  ipc::RingConsumer c(f.ring_mem(), "t");
  std::vector<std::byte> out(p.max_payload());
  std::uint64_t sent = 0, got = 0;
  for (int round = 0; round < 5000; ++round) {
    std::size_t len = (round * 37) % 100;
    auto data = bytes_of(sent, len);
    if (p.try_push(7, data) == PushStatus::ok) ++sent;
    if (round % 3 == 0) continue;  // let it fill up sometimes
    std::uint32_t kind;
    std::size_t n;
    while (c.try_pop(kind, out, n) == PopStatus::ok) {
      auto want = bytes_of(got, n);
      ASSERT_TRUE(std::equal(want.begin(), want.end(), out.begin())) << "frame " << got;
      ++got;
    }
  }
  EXPECT_EQ(got, sent);
  EXPECT_GT(c.position(), 512u * 100) << "the test must wrap many times";
}

TEST(Ring, FullRingRefusesUntilConsumerReleases) {
  RingFixture f(256);
  ipc::RingProducer p(f.ring_mem(), "t");
  ipc::RingConsumer c(f.ring_mem(), "t");
  auto data = bytes_of(1, 16);  // 64-byte frames: 3 fit in 256 bytes less the 64-byte guard
  int pushed = 0;
  while (p.try_push(1, data) == PushStatus::ok) ++pushed;
  EXPECT_EQ(pushed, 3);
  EXPECT_EQ(p.status(), PushStatus::full);
  ipc::Frame fr;
  ASSERT_EQ(c.try_peek(fr), PopStatus::ok);
  EXPECT_EQ(p.try_push(1, data), PushStatus::full) << "peeked but not released: still full";
  c.release();
  EXPECT_EQ(p.try_push(1, data), PushStatus::ok);
}

TEST(Ring, LargestFrameFitsAndOneMoreByteIsRejected) {
  RingFixture f(1024);
  ipc::RingProducer p(f.ring_mem(), "t");
  ipc::RingConsumer c(f.ring_mem(), "t");
  EXPECT_EQ(p.max_payload(), 1024u / 2 - 16);
  // Put the tail near the end so the largest frame must wrap behind a pad.
  auto small = bytes_of(0, 600);
  std::vector<std::byte> out(c.max_payload());
  std::uint32_t kind;
  std::size_t n;
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(p.try_push(1, std::span(small).first(300)), PushStatus::ok);
    ASSERT_EQ(c.try_pop(kind, out, n), PopStatus::ok);
  }
  auto big = bytes_of(9, p.max_payload());
  ASSERT_EQ(p.try_push(2, big), PushStatus::ok);
  ASSERT_EQ(c.try_pop(kind, out, n), PopStatus::ok);
  EXPECT_EQ(n, big.size());
  EXPECT_EQ(std::memcmp(out.data(), big.data(), n), 0);
  auto too_big = bytes_of(9, p.max_payload() + 1);
  EXPECT_EQ(p.try_push(2, too_big), PushStatus::too_big);
  EXPECT_EQ(p.try_push(2, small), PushStatus::too_big);
  EXPECT_EQ(p.try_push(3, std::span(small).first(8)), PushStatus::ok) << "too_big is not sticky";
}

TEST(Ring, PushWithDeadlineTimesOutOnAFullRing) {
  RingFixture f(256);
  ipc::RingProducer p(f.ring_mem(), "t");
  auto data = bytes_of(1, 56);
  while (p.try_push(1, data) == PushStatus::ok) {
  }
  ASSERT_EQ(p.status(), PushStatus::full);
  auto t0 = ipc::Clock::now();
  EXPECT_EQ(p.push(1, data, t0 + std::chrono::milliseconds(20)), PushStatus::timeout);
  EXPECT_GE(ipc::Clock::now() - t0, std::chrono::milliseconds(20));
}

TEST(Ring, ReserveAndCommitPublishesOnlyTheCommittedLength) {
  RingFixture f(1024);
  ipc::RingProducer p(f.ring_mem(), "t");
  ipc::RingConsumer c(f.ring_mem(), "t");
  auto area = p.try_reserve(200);
  ASSERT_GE(area.size(), 200u);
  ipc::Frame fr;
  EXPECT_EQ(c.try_peek(fr), PopStatus::empty) << "nothing visible before commit";
  std::memset(area.data(), 0x5a, 10);
  p.commit(4, 10);
  ASSERT_EQ(c.try_peek(fr), PopStatus::ok);
  EXPECT_EQ(fr.kind, 4u);
  EXPECT_EQ(fr.payload.size(), 10u);
}

// --- corruption: the producer scribbles, the consumer notices and survives ---

// Writes a frame header at ring offset `at` as a (hostile) producer would.
void put_header(const RingFixture& f, std::size_t at, std::uint64_t stamp, std::uint32_t length,
                std::uint32_t kind) {
  ipc::FrameHeader h{stamp, length, kind};
  std::memcpy(f.data() + at, &h, sizeof h);
}

TEST(RingCorruption, ConsumerNeverReadsTheScribbledTail) {
  // Publication is the frame's stamp: a tail pointing anywhere shows nothing.
  RingFixture f(256);
  ipc::RingConsumer c(f.ring_mem(), "ringA");
  f.control()->tail.store(10'000);
  ipc::Frame fr;
  EXPECT_EQ(c.try_peek(fr), PopStatus::empty);
  EXPECT_FALSE(c.readable());
  f.control()->tail.store(13);
  EXPECT_EQ(c.try_peek(fr), PopStatus::empty);
  EXPECT_FALSE(c.broken());
}

TEST(RingCorruption, MisalignedTailBreaksARestartedProducerNamingTail) {
  RingFixture f(256);
  f.control()->tail.store(13);
  ipc::RingProducer p(f.ring_mem(), "ringA");
  EXPECT_EQ(p.try_push(1, bytes_of(1, 8)), PushStatus::broken);
  EXPECT_STREQ(p.fault().field, "tail");
  EXPECT_NE(p.fault().describe().find("ringA"), std::string::npos);
}

TEST(RingCorruption, StaleHeaderFromTheLastLapIsNeverReadAsNew) {
  // One lap of frames, all consumed; the bytes stay in the ring.  Whatever
  // the consumer finds at its head after that must be the guard, never the
  // old lap's header at the same offset.
  RingFixture f(256);
  ipc::RingProducer p(f.ring_mem(), "t");
  ipc::RingConsumer c(f.ring_mem(), "t");
  std::vector<std::byte> out(c.max_payload());
  std::uint32_t kind;
  std::size_t n;
  for (int i = 0; i < 40; ++i) {  // 64- and 128-byte frames: laps at shifting offsets
    ASSERT_EQ(p.try_push(1, bytes_of(i, i % 3 == 0 ? 80 : 32)), PushStatus::ok);
    ASSERT_EQ(c.try_pop(kind, out, n), PopStatus::ok);
    ipc::Frame fr;
    ASSERT_EQ(c.try_peek(fr), PopStatus::empty) << "after frame " << i;
    ASSERT_FALSE(c.readable());
  }
  EXPECT_GT(c.position(), 4 * 256u);
  // A header of an earlier lap at the head's offset, stamped for its own
  // position, is a violation, not a frame.
  const std::uint64_t head = c.position();
  put_header(f, head & 255, ipc::stamp_of(head - 256), 8, 1);
  ipc::Frame fr;
  EXPECT_EQ(c.try_peek(fr), PopStatus::broken);
  EXPECT_STREQ(c.fault().field, "frame.stamp");
  EXPECT_EQ(c.fault().value, ipc::stamp_of(head - 256));
}

TEST(RingCorruption, StampOfAnotherPositionBreaksRingNamingStamp) {
  RingFixture f(1024);
  ipc::RingConsumer c(f.ring_mem(), "ringA");
  put_header(f, 0, ipc::stamp_of(64), 8, 1);  // a header from the future
  ipc::Frame fr;
  EXPECT_TRUE(c.readable()) << "a waiter must wake up to see the fault";
  EXPECT_EQ(c.try_peek(fr), PopStatus::broken);
  EXPECT_STREQ(c.fault().field, "frame.stamp");
  EXPECT_NE(c.fault().describe().find("ringA"), std::string::npos);
  EXPECT_EQ(c.try_peek(fr), PopStatus::broken) << "broken is sticky";
}

TEST(RingCorruption, HugeFrameLengthBreaksRing) {
  RingFixture f(1024);
  ipc::RingConsumer c(f.ring_mem(), "t");
  put_header(f, 0, ipc::stamp_of(0), 0xffffffffu, 1);
  ipc::Frame fr;
  EXPECT_EQ(c.try_peek(fr), PopStatus::broken);
  EXPECT_STREQ(c.fault().field, "frame.length");
}

TEST(RingCorruption, FrameRunningPastTheBufferEndBreaksRing) {
  RingFixture f(1024);
  ipc::RingProducer p(f.ring_mem(), "t");
  ipc::RingConsumer c(f.ring_mem(), "t");
  std::vector<std::byte> out(c.max_payload());
  std::uint32_t kind;
  std::size_t n;
  ASSERT_EQ(p.try_push(1, bytes_of(1, 400)), PushStatus::ok);  // 448 bytes
  ASSERT_EQ(p.try_push(1, bytes_of(1, 400)), PushStatus::ok);  // to 896
  ASSERT_EQ(c.try_pop(kind, out, n), PopStatus::ok);
  ASSERT_EQ(c.try_pop(kind, out, n), PopStatus::ok);
  put_header(f, 896, ipc::stamp_of(896), 400, 1);  // within max_payload, past the end
  ipc::Frame fr;
  EXPECT_EQ(c.try_peek(fr), PopStatus::broken);
  EXPECT_STREQ(c.fault().field, "frame.length");
  EXPECT_EQ(c.fault().value, 400u);
}

TEST(RingCorruption, PadFrameOfWrongLengthBreaksRing) {
  RingFixture f(256);
  ipc::RingConsumer c(f.ring_mem(), "t");
  put_header(f, 0, ipc::stamp_of(0), 8, ipc::kPadKind);  // a pad must reach the buffer end
  ipc::Frame fr;
  EXPECT_EQ(c.try_peek(fr), PopStatus::broken);
  EXPECT_STREQ(c.fault().field, "frame.length");
}

TEST(RingRestart, ProducerKilledAfterTheStampResumesAfterThatFrame) {
  // The predecessor published a frame (stamp) but died before storing tail.
  RingFixture f(1024);
  {
    ipc::RingProducer p(f.ring_mem(), "t");
    ASSERT_EQ(p.try_push(1, bytes_of(1, 40)), PushStatus::ok);
    ASSERT_EQ(p.try_push(2, bytes_of(2, 40)), PushStatus::ok);
  }
  f.control()->tail.store(64);  // as if the second frame's tail store never happened
  ipc::RingProducer p(f.ring_mem(), "t");
  EXPECT_EQ(f.control()->tail.load(), 128u) << "the stamped frame counts";
  ASSERT_EQ(p.try_push(3, bytes_of(3, 40)), PushStatus::ok);
  ipc::RingConsumer c(f.ring_mem(), "t");
  std::vector<std::byte> out(c.max_payload());
  std::uint32_t kind;
  std::size_t n;
  for (std::uint32_t want = 1; want <= 3; ++want) {
    ASSERT_EQ(c.try_pop(kind, out, n), PopStatus::ok);
    EXPECT_EQ(kind, want);
    EXPECT_EQ(n, 40u);
  }
  ipc::Frame fr;
  EXPECT_EQ(c.try_peek(fr), PopStatus::empty);
}

TEST(RingRestart, ProducerKilledBeforeTheStampLeavesNothingVisible) {
  RingFixture f(1024);
  ipc::RingProducer p(f.ring_mem(), "t");
  ASSERT_EQ(p.try_push(1, bytes_of(1, 40)), PushStatus::ok);
  auto area = p.try_reserve(100);  // written, never committed: the writer "dies"
  ASSERT_NE(area.data(), nullptr);
  std::memset(area.data(), 0x77, area.size());
  ipc::RingConsumer c(f.ring_mem(), "t");
  std::vector<std::byte> out(c.max_payload());
  std::uint32_t kind;
  std::size_t n;
  ASSERT_EQ(c.try_pop(kind, out, n), PopStatus::ok);
  ipc::Frame fr;
  EXPECT_EQ(c.try_peek(fr), PopStatus::empty);
  ipc::RingProducer next(f.ring_mem(), "t");  // resumes after the last whole frame
  ASSERT_EQ(next.try_push(5, bytes_of(5, 24)), PushStatus::ok);
  ASSERT_EQ(c.try_pop(kind, out, n), PopStatus::ok);
  EXPECT_EQ(kind, 5u);
  EXPECT_EQ(n, 24u);
}

TEST(RingCorruption, ConsumerHeadScribbledBreaksProducerNamingHead) {
  RingFixture f(256);
  ipc::RingProducer p(f.ring_mem(), "t");
  auto data = bytes_of(1, 80);  // 128-byte frames: the second one needs a look at head
  ASSERT_EQ(p.try_push(1, data), PushStatus::ok);
  f.control()->head.store(1u << 30);  // the consumer claims to have read the future
  EXPECT_EQ(p.try_push(1, data), PushStatus::broken);
  EXPECT_STREQ(p.fault().field, "head");
}

TEST(RingCorruption, WrongMagicIsRefusedAtAttachNamingTheField) {
  RingFixture f(256);
  f.control()->magic = 0x1234;
  try {
    ipc::RingConsumer c(f.ring_mem(), "ringB");
    FAIL() << "attach must fail";
  } catch (const ipc::RingError& e) {
    EXPECT_NE(std::string(e.what()).find("magic"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("ringB"), std::string::npos) << e.what();
  }
}

TEST(RingCorruption, WrongVersionAndCapacityAreRefusedAtAttach) {
  RingFixture f(256);
  f.control()->version = 99;
  EXPECT_THROW(ipc::RingProducer(f.ring_mem(), "t"), ipc::RingError);
  f.control()->version = ipc::kRingLayoutVersion;
  f.control()->capacity = 300;
  EXPECT_THROW(ipc::RingProducer(f.ring_mem(), "t"), ipc::RingError);
  f.control()->capacity = 1u << 20;  // larger than the region
  EXPECT_THROW(ipc::RingConsumer(f.ring_mem(), "t"), ipc::RingError);
}

// The consumer does not fence every release, so in a race it can miss the
// flag of a producer going to sleep for room.  The producer must then still
// find the room by itself, one sleep slice later, not at its deadline.
TEST(RingWait, ProducerAsleepForRoomFindsItWithinASliceEvenIfNobodyWakesIt) {
  RingFixture f(256);
  ipc::RingProducer p(f.ring_mem(), "t");
  auto data = bytes_of(1, 16);  // 64-byte frames: 3 fit
  while (p.try_push(1, data) == PushStatus::ok) {
  }
  ASSERT_EQ(p.status(), PushStatus::full);
  std::atomic<bool> done{false};
  PushStatus got = PushStatus::full;
  std::thread producer([&] {
    got = p.push(1, data, ipc::Clock::now() + std::chrono::seconds(10));
    done = true;
  });
  auto* ctl = f.control();
  const auto give_up = ipc::Clock::now() + std::chrono::seconds(5);
  while (ctl->producer_waiting.load() == 0 && ipc::Clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  ASSERT_NE(ctl->producer_waiting.load(), 0u) << "the producer never went to sleep";
  std::this_thread::sleep_for(std::chrono::milliseconds(30));  // well asleep
  // A consumer whose release raced the announcement: head moves, no wake-up.
  ctl->head.store(64, std::memory_order_release);
  const auto t0 = ipc::Clock::now();
  while (!done && ipc::Clock::now() - t0 < std::chrono::seconds(5)) {
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  const auto took = ipc::Clock::now() - t0;
  producer.join();
  EXPECT_EQ(got, PushStatus::ok);
  EXPECT_LT(took, std::chrono::milliseconds(500)) << "slices are at most 5 ms";
}

TEST(RingInit, RejectsCapacityThatIsNotAPowerOfTwo) {
  RingFixture f(256, "init", 1024);
  EXPECT_THROW(ipc::init_ring(f.ring_mem(), 300), std::invalid_argument);
  EXPECT_THROW(ipc::init_ring(f.ring_mem(), 128), std::invalid_argument);
}

}  // namespace
}  // namespace bulkhead
