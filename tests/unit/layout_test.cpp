// Pins the shared-memory layouts.  If this test fails you changed a layout
// that another build (a worker, a client) reads: bump the layout version
// (kSegmentLayoutVersion / kRingLayoutVersion) and then update the numbers.
#include <gtest/gtest.h>

#include <cstddef>

#include "ipc/doorbell.hpp"
#include "ipc/ring.hpp"
#include "ipc/segment.hpp"
#include "schema/codec.hpp"

namespace bulkhead {
namespace {

TEST(Layout, SegmentHeaderIsPinned) {
  using H = ipc::SegmentHeader;
  EXPECT_EQ(ipc::kSegmentLayoutVersion, 1u);
  EXPECT_EQ(sizeof(H), 128u);
  EXPECT_EQ(offsetof(H, magic), 0u);
  EXPECT_EQ(offsetof(H, layout_version), 8u);
  EXPECT_EQ(offsetof(H, header_bytes), 12u);
  EXPECT_EQ(offsetof(H, size), 16u);
  EXPECT_EQ(offsetof(H, creator_start_time), 24u);
  EXPECT_EQ(offsetof(H, creator_pid), 32u);
  EXPECT_EQ(offsetof(H, name), 40u);
  EXPECT_TRUE(std::is_standard_layout_v<H>);
  EXPECT_TRUE(std::is_trivially_copyable_v<H>);
}

TEST(Layout, RingControlIsPinned) {
  using R = ipc::RingControl;
  EXPECT_EQ(ipc::kRingLayoutVersion, 4u);
  EXPECT_EQ(sizeof(R), 256u);
  EXPECT_EQ(alignof(R), 64u);
  EXPECT_EQ(offsetof(R, magic), 0u);
  EXPECT_EQ(offsetof(R, version), 8u);
  EXPECT_EQ(offsetof(R, capacity), 16u);
  EXPECT_EQ(offsetof(R, max_payload), 24u);
  EXPECT_EQ(offsetof(R, tail), 64u);
  EXPECT_EQ(offsetof(R, producer_waiting), 192u);
  EXPECT_EQ(offsetof(R, head), 128u);
  EXPECT_TRUE(std::is_standard_layout_v<R>);
}

TEST(Layout, FrameHeaderAndDoorbellArePinned) {
  EXPECT_EQ(sizeof(ipc::FrameHeader), 16u);
  EXPECT_EQ(offsetof(ipc::FrameHeader, stamp), 0u);
  EXPECT_EQ(offsetof(ipc::FrameHeader, length), 8u);
  EXPECT_EQ(offsetof(ipc::FrameHeader, kind), 12u);
  EXPECT_EQ(ipc::stamp_of(0), 1u);
  EXPECT_EQ(ipc::stamp_of(4096), 4097u);
  EXPECT_EQ(ipc::kNoStamp, 0u);
  EXPECT_EQ(sizeof(ipc::DoorbellWord), 64u);
  EXPECT_EQ(offsetof(ipc::DoorbellWord, seq), 0u);
  EXPECT_EQ(offsetof(ipc::DoorbellWord, sleeping), 4u);
  EXPECT_EQ(ipc::kFrameAlign, 64u);
  EXPECT_EQ(ipc::frame_bytes(0), 64u);
  EXPECT_EQ(ipc::frame_bytes(1), 64u);
  EXPECT_EQ(ipc::frame_bytes(48), 64u);
  EXPECT_EQ(ipc::frame_bytes(49), 128u);
}

// The hot path is sized in cache lines: a call or reply with a small Value,
// as the runtime builds it (addresses inline, the header fields set), is 104
// bytes, and with its frame header exactly two lines.  An Envelope field
// added before the payload, or a wider sequence number, shows here first.
TEST(Layout, ASmallCallIsAFrameOfTwoCacheLines) {
  alignas(8) std::byte area[256];
  schema::FlatBuilder b(area);
  auto e = b.init_root<schema::Envelope>();
  e.setKind(schema::Kind::CALL);
  auto d = e.initDestination();
  d.setWorker(3);
  d.setIncarnation(2);
  d.setActor(1);
  auto s = e.initSource();
  s.setWorker(4);
  s.setIncarnation(1);
  s.setActor(0);
  e.setCorrelationId(~std::uint64_t{0});
  e.setDeadlineNs(-1);
  e.getPayload().initValue().setInt(-1);
  e.setSequence(~std::uint32_t{0});
  const std::size_t n = b.finish();
  EXPECT_EQ(n, 104u);
  EXPECT_EQ(ipc::frame_bytes(n), 2 * ipc::kCacheLine);
}

}  // namespace
}  // namespace bulkhead
