// ipc/channel.hpp: the layout of a channel segment (one SPSC ring).
//
// What it is for: messages from one worker (or attached client) to another
// travel on a direct channel, one segment per (producer, consumer) pair.  The
// supervisor creates it when the producer first asks (and keeps it for the
// life of the tree), and hands its fd to both ends, to every incarnation of
// either: a ring outlives both its ends, so messages queued to a worker that
// crashed are still there for its next incarnation.  The supervisor is not on
// the data path.
//
// Layout of the segment payload:
//   0    ChannelHeader (64 bytes): passport, ends, ring capacity
//   64   ChannelStats (64 bytes): the producer's send counters
//   128  the ring (RingControl + data)
// The stats are written by the producer only; the supervisor reads them for
// per-child statistics and never trusts them for anything else.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "ipc/ring.hpp"
#include "ipc/segment.hpp"

namespace bulkhead::ipc {

inline constexpr std::uint64_t kChannelMagic = 0x4e414843'4b4c5542ULL;  // "BULKCHAN" LE
inline constexpr std::uint32_t kChannelLayoutVersion = 1;
inline constexpr std::size_t kChannelRingOffset = 128;

struct ChannelHeader {
  std::uint64_t magic;          // kChannelMagic
  std::uint32_t version;        // kChannelLayoutVersion
  std::uint32_t producer_slot;  // who writes
  std::uint32_t consumer_slot;  // who reads
  std::uint32_t reserved0;
  std::uint64_t capacity;  // ring data bytes
  std::uint8_t reserved1[32];
};
static_assert(sizeof(ChannelHeader) == 64);

struct alignas(64) ChannelStats {
  std::atomic<std::uint64_t> sent;     // frames published
  std::atomic<std::uint64_t> blocked;  // sends that waited for room
  std::atomic<std::uint64_t> failed;   // sends that failed (full with fail policy, timeout)
  std::atomic<std::uint64_t> dropped;  // sends dropped by the drop policy
  std::uint8_t reserved[32];
};
static_assert(sizeof(ChannelStats) == 64);

constexpr std::size_t channel_payload_bytes(std::size_t capacity) {
  return kChannelRingOffset + ring_footprint(capacity);
}

struct ChannelView {
  std::uint32_t producer_slot = 0;
  std::uint32_t consumer_slot = 0;
  ChannelStats* stats = nullptr;
  std::span<std::byte> ring;
};

// Supervisor side: writes the header, zeroes the stats, formats the ring.
void format_channel(const Segment& seg, std::size_t capacity, std::uint32_t producer,
                    std::uint32_t consumer);
// Supervisor side: the view from its own trusted numbers.
ChannelView channel_view(const Segment& seg, std::size_t capacity, std::uint32_t producer,
                         std::uint32_t consumer);
// Either end: validates the header against the segment; throws SegmentError
// naming the field.
ChannelView attach_channel(const Segment& seg);

}  // namespace bulkhead::ipc
