#include "ipc/mailbox.hpp"

#include <fmt/format.h>

#include <cstring>
#include <new>

namespace bulkhead::ipc {

void format_mailbox(const Segment& seg, const MailboxLayout& layout, std::uint32_t slot) {
  auto payload = seg.payload();
  if (payload.size() < layout.payload_bytes()) {
    throw SegmentError(fmt::format("segment {}: {} payload bytes, mailbox needs {}", seg.name(),
                                   payload.size(), layout.payload_bytes()));
  }
  std::memset(payload.data(), 0, layout.control_ring_offset);
  auto* h = new (payload.data()) MailboxHeader{};
  h->version = kMailboxLayoutVersion;
  h->slot = slot;
  h->liveness_offset = layout.liveness_offset;
  h->control_ring_offset = layout.control_ring_offset;
  h->control_ring_capacity = layout.control_ring_capacity;
  new (payload.data() + layout.liveness_offset) LivenessCell{};
  init_ring(
      payload.subspan(layout.control_ring_offset, ring_footprint(layout.control_ring_capacity)),
      layout.control_ring_capacity);
  std::atomic_ref<std::uint64_t>(h->magic).store(kMailboxMagic, std::memory_order_release);
}

void reset_control_ring(const Segment& seg, const MailboxLayout& layout) {
  new (seg.payload().data() + layout.liveness_offset) LivenessCell{};
  init_ring(seg.payload().subspan(layout.control_ring_offset,
                                  ring_footprint(layout.control_ring_capacity)),
            layout.control_ring_capacity);
}

MailboxView mailbox_view(const Segment& seg, const MailboxLayout& layout) {
  auto payload = seg.payload();
  return MailboxView{
      reinterpret_cast<LivenessCell*>(payload.data() + layout.liveness_offset),
      payload.subspan(layout.control_ring_offset, ring_footprint(layout.control_ring_capacity))};
}

MailboxView attach_mailbox(const Segment& seg) {
  auto payload = seg.payload();
  if (payload.size() < sizeof(MailboxHeader)) {
    throw SegmentError(fmt::format("segment {}: too small for a mailbox header", seg.name()));
  }
  MailboxHeader h;
  std::memcpy(&h, payload.data(), sizeof h);  // one copy; checks use it only
  if (h.magic != kMailboxMagic) {
    throw SegmentError(fmt::format("segment {}: field mailbox.magic is {:#018x}, expected {:#018x}",
                                   seg.name(), h.magic, kMailboxMagic));
  }
  if (h.version != kMailboxLayoutVersion) {
    throw SegmentError(fmt::format("segment {}: field mailbox.version is {}, this build reads {}",
                                   seg.name(), h.version, kMailboxLayoutVersion));
  }
  auto in_bounds = [&](std::uint64_t off, std::uint64_t len) {
    return off % 64 == 0 && off <= payload.size() && len <= payload.size() - off;
  };
  if (!in_bounds(h.liveness_offset, sizeof(LivenessCell))) {
    throw SegmentError(fmt::format("segment {}: field mailbox.liveness_offset {} out of bounds",
                                   seg.name(), h.liveness_offset));
  }
  if (h.control_ring_capacity > payload.size() ||
      !in_bounds(h.control_ring_offset, ring_footprint(h.control_ring_capacity))) {
    throw SegmentError(fmt::format("segment {}: field mailbox.control_ring_offset {} out of bounds",
                                   seg.name(), h.control_ring_offset));
  }
  return MailboxView{
      reinterpret_cast<LivenessCell*>(payload.data() + h.liveness_offset),
      payload.subspan(h.control_ring_offset, ring_footprint(h.control_ring_capacity)), h.slot};
}

}  // namespace bulkhead::ipc
