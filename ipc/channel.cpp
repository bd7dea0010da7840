#include "ipc/channel.hpp"

#include <fmt/format.h>

#include <cstring>
#include <new>

namespace bulkhead::ipc {

void format_channel(const Segment& seg, std::size_t capacity, std::uint32_t producer,
                    std::uint32_t consumer) {
  auto payload = seg.payload();
  if (payload.size() < channel_payload_bytes(capacity)) {
    throw SegmentError(fmt::format("segment {}: {} payload bytes, a channel of {} needs {}",
                                   seg.name(), payload.size(), capacity,
                                   channel_payload_bytes(capacity)));
  }
  std::memset(payload.data(), 0, kChannelRingOffset);
  auto* h = new (payload.data()) ChannelHeader{};
  h->version = kChannelLayoutVersion;
  h->producer_slot = producer;
  h->consumer_slot = consumer;
  h->capacity = capacity;
  new (payload.data() + sizeof(ChannelHeader)) ChannelStats{};
  init_ring(payload.subspan(kChannelRingOffset, ring_footprint(capacity)), capacity);
  std::atomic_ref<std::uint64_t>(h->magic).store(kChannelMagic, std::memory_order_release);
}

ChannelView channel_view(const Segment& seg, std::size_t capacity, std::uint32_t producer,
                         std::uint32_t consumer) {
  auto payload = seg.payload();
  return ChannelView{producer, consumer,
                     reinterpret_cast<ChannelStats*>(payload.data() + sizeof(ChannelHeader)),
                     payload.subspan(kChannelRingOffset, ring_footprint(capacity))};
}

ChannelView attach_channel(const Segment& seg) {
  auto payload = seg.payload();
  if (payload.size() < kChannelRingOffset) {
    throw SegmentError(fmt::format("segment {}: too small for a channel header", seg.name()));
  }
  ChannelHeader h;
  std::memcpy(&h, payload.data(), sizeof h);
  if (h.magic != kChannelMagic) {
    throw SegmentError(fmt::format("segment {}: field channel.magic is {:#018x}, expected {:#018x}",
                                   seg.name(), h.magic, kChannelMagic));
  }
  if (h.version != kChannelLayoutVersion) {
    throw SegmentError(fmt::format("segment {}: field channel.version is {}, this build reads {}",
                                   seg.name(), h.version, kChannelLayoutVersion));
  }
  if (h.capacity > payload.size() || channel_payload_bytes(h.capacity) > payload.size()) {
    throw SegmentError(fmt::format("segment {}: field channel.capacity {} does not fit {} bytes",
                                   seg.name(), h.capacity, payload.size()));
  }
  return channel_view(seg, h.capacity, h.producer_slot, h.consumer_slot);
}

}  // namespace bulkhead::ipc
