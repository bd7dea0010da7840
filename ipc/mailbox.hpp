// ipc/mailbox.hpp: the layout of a worker's segment.
//
// What it is for: the supervisor creates one segment per child (not per
// incarnation: it outlives crashes) and hands its fd to every incarnation.
// Both sides must agree on where things are; this header is that agreement.
// It is transport only: no actors, no policy.
//
// Layout of the segment payload (offsets from payload start):
//   0      MailboxHeader (64 bytes): passport + where the rings are
//   64     LivenessCell (64 bytes): the death-notice cell (ipc/liveness.hpp)
//   128    control ring (supervisor -> worker), RingControl + data
//
// The bell board is a second segment, one per supervisor: DoorbellWord
// number `slot` is the doorbell of the worker (or client) in that slot, for
// all its input rings (control ring and channels).  Every worker maps the
// board, because every producer must be able to ring its consumer; a worker
// never maps another worker's mailbox, so it cannot forge control messages.
// The control ring is re-formatted by the supervisor before each incarnation
// starts (the only producer is the supervisor, the old consumer is dead), so
// a Stop meant for a dead incarnation never reaches the next one.
//
// Trust: the worker may scribble on all of it.  The supervisor keeps its own
// copy of every offset and never reads them back from shared memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "ipc/doorbell.hpp"
#include "ipc/liveness.hpp"
#include "ipc/ring.hpp"
#include "ipc/segment.hpp"

namespace bulkhead::ipc {

inline constexpr std::uint64_t kMailboxMagic = 0x584f424d'4b4c5542ULL;  // "BULKMBOX" LE
inline constexpr std::uint32_t kMailboxLayoutVersion = 2;               // 2: a liveness cell at 64
inline constexpr std::uint32_t kControlFrame = 2;  // frame kind of a ToWorker message

struct MailboxHeader {
  std::uint64_t magic;                  // kMailboxMagic
  std::uint32_t version;                // kMailboxLayoutVersion
  std::uint32_t slot;                   // the owner's slot (its doorbell on the bell board)
  std::uint64_t liveness_offset;        // from payload start
  std::uint64_t control_ring_offset;    // from payload start
  std::uint64_t control_ring_capacity;  // data bytes of the control ring
  std::uint8_t reserved1[24];
};
static_assert(sizeof(MailboxHeader) == 64);

struct MailboxLayout {
  std::size_t liveness_offset = 64;
  std::size_t control_ring_offset = 128;
  std::size_t control_ring_capacity = 64 * 1024;

  [[nodiscard]] std::size_t payload_bytes() const {
    return control_ring_offset + ring_footprint(control_ring_capacity);
  }
};

// Supervisor side: writes header, liveness cell and control ring.
void format_mailbox(const Segment& seg, const MailboxLayout& layout, std::uint32_t slot);
// Supervisor side: re-formats the control ring and clears the liveness cell
// (before a new incarnation).
void reset_control_ring(const Segment& seg, const MailboxLayout& layout);

struct MailboxView {
  LivenessCell* liveness = nullptr;
  std::span<std::byte> control_ring;
  std::uint32_t slot = 0;
};
// Supervisor side: the view from its own trusted layout.
MailboxView mailbox_view(const Segment& seg, const MailboxLayout& layout);
// Worker side: validates the header against the segment and returns the view;
// throws RingError / SegmentError naming the bad field.
MailboxView attach_mailbox(const Segment& seg);

// The bell board: `slots` doorbell words.
inline constexpr std::size_t kMaxSlots = 4096;
inline std::size_t bell_board_bytes(std::size_t slots) {
  return slots * sizeof(DoorbellWord);
}
// The doorbell of `slot`, or nullptr if the board is too small.
inline DoorbellWord* bell_of(const Segment& board, std::uint32_t slot) {
  auto p = board.payload();
  if ((static_cast<std::size_t>(slot) + 1) * sizeof(DoorbellWord) > p.size()) return nullptr;
  return reinterpret_cast<DoorbellWord*>(p.data() + slot * sizeof(DoorbellWord));
}

}  // namespace bulkhead::ipc
