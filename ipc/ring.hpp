// ipc/ring.hpp: the single-producer single-consumer frame ring.
//
// What it is for: carrying variable-size frames (a Cap'n Proto message, or raw
// bytes) between exactly one producer and one consumer, usually in two
// different processes mapping the same segment.  It knows nothing of actors,
// addresses or policy.
//
// Layout (all in shared memory, plain bytes, offsets not pointers):
//   RingControl (256 bytes: passport line, producer line, consumer line, spare)
//   data[capacity]           capacity is a power of two, >= 256
// A frame is FrameHeader{stamp, length, kind} (16 bytes) + payload, padded
// together to a whole cache line (64 bytes): every frame starts on a line of
// its own and every payload is 8-byte aligned (Cap'n Proto reads it in place).
// Whole lines because the consumer polls a frame's first line while the
// producer writes the next frame: sharing a line between two frames made the
// line bounce between the CPUs mid-frame (casts: 3.8-4.4 M/s with 16-byte
// frames against 5.5-6.9 M/s with whole lines), and a frame of 128 bytes
// always takes 2 lines, never 3.  A frame never wraps: if it does not fit
// before the end of the buffer, the producer writes a pad frame (kind 0) to
// the end and starts at offset 0.
//
// Indices are 64-bit monotonic byte counters (they never wrap in practice):
//   tail  written by the producer only, after each frame is published: for
//         statistics, and for a restarted producer to know where to resume.
//         The consumer never reads it.
//   head  written by the consumer only, released after it is done reading a
//         frame: the producer may reuse the space only then.
//
// Publication is the frame's own stamp, not `tail`: the consumer polls the
// header at `head` (one cache line, which it then reads anyway) instead of
// the producer's index (a second line that bounced between the CPUs on every
// frame).  The stamp of a frame at position p is p + 1; 0 means "nothing
// here yet".  Stale bytes from an earlier lap are never read as a header:
// before publishing a frame that ends at position e, the producer zeroes the
// stamp at e (the "guard"; the producer always keeps that slot free), so
// the consumer, arriving at e, finds either that 0 or the stamp e + 1 of the
// next frame, never an older lap's bytes.  Order of a publication: payload,
// guard at the frame's end, length and kind, then the stamp (a release
// store), then `tail`.  A producer killed mid-write therefore leaves nothing
// visible (the stamp at its tail is still the previous frame's guard); one
// killed after a stamp but before `tail` is handled by the next producer,
// which skips the stamped frames it finds at `tail` when it attaches.
// A wrap publishes the frame at offset 0 first, the pad at the old tail last.
//
// Each side keeps a private cached copy of what it needs from the other: the
// producer its last `head`, read again only when its copy says full.
//
// Trust: the peer is hostile.  Each side reads the other's index and (the
// consumer) the frame headers from shared memory, and bounds-checks every one
// at the point of use, against its *private* copy of the capacity taken when
// it attached.  A stamp that is neither 0 nor the expected one (a scribbled
// header, a header from another position or lap) is a violation too.  A
// violation marks the ring broken (sticky), records which field was wrong,
// and every later call returns `broken`: no read out of bounds, no crash, no
// hang.  The supervisor then kills the offender.
//
// Threading: one producer object and one consumer object, each used by one
// thread at a time.  All hot-path calls are noexcept and allocation-free.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

#include "ipc/doorbell.hpp"
#include "ipc/sys.hpp"

namespace bulkhead::ipc {

// Hard-coded, not std::hardware_destructive_interference_size: two builds
// (two compilers, two flag sets) must agree on this layout.
inline constexpr std::size_t kCacheLine = 64;
inline constexpr std::uint64_t kRingMagic = 0x474e4952'4b4c5542ULL;  // "BULKRING" LE
// 2: producer_waiting on line 3.  3: stamped 16-byte frame headers, the
// consumer polls the stamp instead of `tail`.  4: frames are whole cache
// lines (and envelopes carry their addresses inline, schema/envelope.capnp).
inline constexpr std::uint32_t kRingLayoutVersion = 4;
inline constexpr std::uint32_t kPadKind = 0;    // filler up to the end of the buffer
inline constexpr std::size_t kFrameAlign = 64;  // frame start and size granularity
inline constexpr std::size_t kMinRingCapacity = 256;
inline constexpr std::uint64_t kNoStamp = 0;  // the stamp slot of a frame not yet published

struct FrameHeader {
  std::uint64_t stamp;   // position of this frame + 1 once published; kNoStamp before
  std::uint32_t length;  // payload bytes, not counting this header or padding
  std::uint32_t kind;    // kPadKind, or a user kind >= 1
};
static_assert(sizeof(FrameHeader) == 16);
static_assert(offsetof(FrameHeader, stamp) == 0);

// The stamp of a published frame at monotonic position `pos` (never kNoStamp:
// positions are multiples of kFrameAlign).
constexpr std::uint64_t stamp_of(std::uint64_t pos) {
  return pos + 1;
}
// Free bytes the producer keeps after its tail: the next frame's stamp slot,
// zeroed before a frame is published (see the top of this file).
inline constexpr std::size_t kGuardBytes = kFrameAlign;

struct alignas(kCacheLine) RingControl {
  // Line 0: passport, written once by the creator (the supervisor).
  std::uint64_t magic;        // kRingMagic
  std::uint32_t version;      // kRingLayoutVersion
  std::uint32_t reserved0;    // zero
  std::uint64_t capacity;     // data bytes, power of two
  std::uint64_t max_payload;  // largest payload accepted: capacity/2 - 16
  std::uint8_t reserved1[32];
  // Line 1: producer-owned.  Never read by the consumer (see the top).
  alignas(kCacheLine) std::atomic<std::uint64_t> tail;  // bytes published
  std::uint8_t reserved2[kCacheLine - 8];
  // Line 2: consumer-owned.
  alignas(kCacheLine) std::atomic<std::uint64_t> head;  // bytes consumed
  std::uint8_t reserved3[kCacheLine - 8];
  // Line 3: the producer's sleep flag, alone on its line: the consumer reads
  // it after every release, and it is written only when the producer sleeps
  // for space, so the read hits in the consumer's cache.
  // Nonzero while the producer sleeps on this word (futex) waiting for space;
  // the consumer clears it, then wakes it.
  alignas(kCacheLine) std::atomic<std::uint32_t> producer_waiting;
  std::uint8_t reserved4[kCacheLine - 4];
};
static_assert(sizeof(RingControl) == 4 * kCacheLine);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

// Bytes needed for a ring with `capacity` data bytes.
constexpr std::size_t ring_footprint(std::size_t capacity) {
  return sizeof(RingControl) + capacity;
}
constexpr std::size_t frame_bytes(std::size_t payload) {
  return (sizeof(FrameHeader) + payload + kFrameAlign - 1) & ~(kFrameAlign - 1);
}

// Formats a ring in `mem` (zeroes it, writes the passport).  Creator only.
// Throws std::invalid_argument if capacity is not a power of two >= 256, or
// `mem` is not 64-byte aligned, or the region is too small.
void init_ring(std::span<std::byte> mem, std::size_t capacity);

// Why a ring is broken; `field` names the shared-memory field that was wrong.
struct RingFault {
  std::string segment;         // segment or ring name given at attach
  const char* field = "";      // "tail", "head", "frame.length", "frame.kind", ...
  std::uint64_t value = 0;     // the offending value
  std::uint64_t position = 0;  // local index at the time
  [[nodiscard]] std::string describe() const;
};

// Validates the passport of a ring at `mem` and returns its capacity; throws
// RingError naming the field otherwise.
class RingError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
std::size_t check_ring_passport(std::span<std::byte> mem, const std::string& name);

enum class PushStatus { ok, full, too_big, broken, timeout };
enum class PopStatus { ok, empty, broken, timeout };

class RingProducer {
 public:
  RingProducer() = default;
  // Attaches to a formatted ring.  Resumes at the tail found in shared memory
  // (a restarted producer continues after its predecessor's last whole frame).
  // `doorbell` (optional) is the consumer's, rung after each publish.
  RingProducer(std::span<std::byte> mem, std::string name, Doorbell* doorbell = nullptr);

  // Reserves room for a payload of `len` bytes; returns the 8-aligned payload
  // area (its size may exceed `len` by padding), or a span whose data() is
  // nullptr if full / too big / broken (see status()).  Nothing is visible to
  // the consumer until commit().
  [[nodiscard]] std::span<std::byte> try_reserve(std::size_t len) noexcept;
  // Publishes the reserved frame with `len` <= reserved bytes.  `head`, if
  // given, is copied to the start of the payload first (see copy_and_commit).
  void commit(std::uint32_t kind, std::size_t len, std::span<const std::byte> head = {}) noexcept;
  // Reserve + copy + commit.
  [[nodiscard]] PushStatus try_push(std::uint32_t kind, std::span<const std::byte> data) noexcept;
  // Like try_push, but waits (spin, then futex on producer_waiting) for space until
  // `deadline`.
  [[nodiscard]] PushStatus push(std::uint32_t kind, std::span<const std::byte> data,
                                Deadline deadline) noexcept;
  // Waits for room for `len` payload bytes until `deadline`, then reserves it.
  [[nodiscard]] std::span<std::byte> reserve(std::size_t len, Deadline deadline) noexcept;

  // What the last failed reserve/push meant.
  [[nodiscard]] PushStatus status() const noexcept { return status_; }
  [[nodiscard]] bool broken() const noexcept { return status_ == PushStatus::broken; }
  [[nodiscard]] const RingFault& fault() const noexcept { return fault_; }
  [[nodiscard]] std::size_t max_payload() const noexcept { return max_payload_; }
  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }
  // Racy count of bytes in flight (for statistics only).
  [[nodiscard]] std::size_t size_approx() const noexcept;
  [[nodiscard]] bool attached() const noexcept { return ctl_ != nullptr; }

 private:
  bool refresh_head() noexcept;
  void copy_and_commit(std::uint32_t kind, std::byte* area,
                       std::span<const std::byte> data) noexcept;
  void mark_broken(const char* field, std::uint64_t value) noexcept;

  RingControl* ctl_ = nullptr;
  std::byte* data_ = nullptr;
  Doorbell* doorbell_ = nullptr;
  std::size_t capacity_ = 0;
  std::size_t mask_ = 0;
  std::size_t max_payload_ = 0;
  std::uint64_t tail_ = 0;          // private: next byte to write
  std::uint64_t head_cache_ = 0;    // private: last head read from the consumer
  std::uint64_t reserved_pad_ = 0;  // pad bytes before the reserved frame
  std::size_t reserved_len_ = 0;    // payload bytes reserved
  PushStatus status_ = PushStatus::ok;
  RingFault fault_;
};

struct Frame {
  std::uint32_t kind = 0;
  std::span<const std::byte> payload;  // 8-byte aligned; valid until release()
};

class RingConsumer {
 public:
  RingConsumer() = default;
  // Attaches to a formatted ring.  Resumes at the head found in shared memory
  // (a restarted consumer continues after the last frame its predecessor
  // released: nothing lost, nothing handed out twice once released).
  RingConsumer(std::span<std::byte> mem, std::string name);

  // Looks at the next frame without consuming it.  Pad frames are skipped.
  [[nodiscard]] PopStatus try_peek(Frame& out) noexcept;
  // Consumes the frame returned by the last successful try_peek.  Cheap: no
  // fence (see publish_head()); a producer waiting for room is woken.
  void release() noexcept;
  // Makes sure a producer that went to sleep for room while we released is
  // woken (a fence and a load; try_peek does it when it finds the ring
  // empty).  Call before blocking for long with frames released since.
  void settle() noexcept;
  // Peek + copy out + release.  `dst` must hold max_payload() bytes; sets len.
  [[nodiscard]] PopStatus try_pop(std::uint32_t& kind, std::span<std::byte> dst,
                                  std::size_t& len) noexcept;
  // True if a frame (or a fault) is waiting: cheap, for wait predicates.
  [[nodiscard]] bool readable() const noexcept;

  [[nodiscard]] bool broken() const noexcept { return broken_; }
  [[nodiscard]] const RingFault& fault() const noexcept { return fault_; }
  [[nodiscard]] std::size_t max_payload() const noexcept { return max_payload_; }
  [[nodiscard]] std::uint64_t position() const noexcept { return head_; }
  [[nodiscard]] bool attached() const noexcept { return ctl_ != nullptr; }

 private:
  void mark_broken(const char* field, std::uint64_t value) noexcept;
  void publish_head() noexcept;
  void wake_producer() noexcept;

  RingControl* ctl_ = nullptr;
  const std::byte* data_ = nullptr;
  std::size_t capacity_ = 0;
  std::size_t mask_ = 0;
  std::size_t max_payload_ = 0;
  std::uint64_t head_ = 0;          // private: next byte to read
  std::uint64_t peeked_bytes_ = 0;  // bytes of the peeked frame, 0 if none (head_
                                    // may be anywhere, even near 2^64: no sentinel)
  bool broken_ = false;
  bool unsettled_ = false;  // released since the last fenced look at producer_waiting
  RingFault fault_;
};

// ---------------------------------------------------------------------------
// Hot path, inline.

inline std::atomic_ref<std::uint64_t> stamp_at(std::byte* frame) noexcept {
  return std::atomic_ref<std::uint64_t>(*reinterpret_cast<std::uint64_t*>(frame));
}

inline std::span<std::byte> RingProducer::try_reserve(std::size_t len) noexcept {
  if (status_ == PushStatus::broken) return {};
  if (len > max_payload_) {
    status_ = PushStatus::too_big;
    return {};
  }
  const std::size_t need = frame_bytes(len);
  const std::size_t pos = tail_ & mask_;
  const std::size_t contiguous = capacity_ - pos;
  const std::uint64_t pad = need > contiguous ? contiguous : 0;
  // kGuardBytes: the next frame's stamp slot stays free (it is zeroed below).
  if (tail_ + pad + need + kGuardBytes - head_cache_ > capacity_) {
    if (!refresh_head()) return {};
    if (tail_ + pad + need + kGuardBytes - head_cache_ > capacity_) {
      status_ = PushStatus::full;
      return {};
    }
  }
  reserved_pad_ = pad;
  reserved_len_ = len;
  status_ = PushStatus::ok;
  const std::size_t at = pad ? 0 : pos;
  return {data_ + at + sizeof(FrameHeader), need - sizeof(FrameHeader)};
}

inline void RingProducer::commit(std::uint32_t kind, std::size_t len,
                                 std::span<const std::byte> head) noexcept {
  if (len > reserved_len_) len = reserved_len_;  // caller bug; never overrun
  const std::size_t pos = tail_ & mask_;
  const std::uint64_t start = tail_ + reserved_pad_;  // where the frame goes
  const std::uint64_t end = start + frame_bytes(len);
  std::byte* frame = data_ + (start & mask_);
  // The guard: the consumer, once past this frame, must find "nothing yet"
  // at `end`, not whatever an earlier lap left there.  Free space (see
  // try_reserve), so no reader looks at it now; relaxed, ordered before the
  // stamp below by its release.
  stamp_at(data_ + (end & mask_)).store(kNoStamp, std::memory_order_relaxed);
  if (!head.empty()) std::memcpy(frame + sizeof(FrameHeader), head.data(), head.size());
  const std::uint32_t lk[2] = {static_cast<std::uint32_t>(len), kind};
  std::memcpy(frame + offsetof(FrameHeader, length), lk, sizeof lk);
  // Release: pairs with the consumer's acquire load of the stamp in
  // try_peek(); the payload, length, kind and the guard happen-before it.
  stamp_at(frame).store(stamp_of(start), std::memory_order_release);
  if (reserved_pad_ != 0) {
    // The pad last: a consumer that sees it finds the frame at offset 0.
    const std::uint32_t pk[2] = {static_cast<std::uint32_t>(reserved_pad_ - sizeof(FrameHeader)),
                                 kPadKind};
    std::memcpy(data_ + pos + offsetof(FrameHeader, length), pk, sizeof pk);
    stamp_at(data_ + pos).store(stamp_of(tail_), std::memory_order_release);
  }
  tail_ = end;
  reserved_pad_ = 0;
  reserved_len_ = 0;
  // For statistics and a restarted producer only; the consumer never reads it.
  ctl_->tail.store(tail_, std::memory_order_release);
  if (doorbell_ != nullptr) doorbell_->ring();
}

inline void RingProducer::copy_and_commit(std::uint32_t kind, std::byte* area,
                                          std::span<const std::byte> data) noexcept {
  // The frame's first cache line holds its stamp, which a waiting consumer
  // polls: each store to that line while the consumer looks at it costs one
  // more transfer of the line between the CPUs.  So the payload past that
  // line goes first, and the first line's stores (the payload's first bytes,
  // length and kind, the stamp) come last, back to back: one transfer.
  const auto at = reinterpret_cast<std::uintptr_t>(area);
  const std::size_t to_line_end = ((at | (kCacheLine - 1)) + 1) - at;
  const std::size_t first = std::min(data.size(), to_line_end);
  if (data.size() > first) std::memcpy(area + first, data.data() + first, data.size() - first);
  commit(kind, data.size(), data.first(first));
}

inline PushStatus RingProducer::try_push(std::uint32_t kind,
                                         std::span<const std::byte> data) noexcept {
  auto area = try_reserve(data.size());
  if (area.data() == nullptr) return status_;
  copy_and_commit(kind, area.data(), data);
  return PushStatus::ok;
}

inline bool RingConsumer::readable() const noexcept {
  if (broken_) return true;
  // While we poll the stamp line, keep asking for the next two lines too
  // (non-binding prefetches): when a frame is published they are fetched
  // together with its first line, not one transfer after it.
  __builtin_prefetch(data_ + ((head_ + kCacheLine) & mask_), 0, 3);
  __builtin_prefetch(data_ + ((head_ + 2 * kCacheLine) & mask_), 0, 3);
  // Relaxed is enough for a hint; try_peek() does the acquire.  Any nonzero
  // stamp counts: a wrong one is a fault, which try_peek() reports.
  return stamp_at(const_cast<std::byte*>(data_) + (head_ & mask_))
             .load(std::memory_order_relaxed) != kNoStamp;
}

inline PopStatus RingConsumer::try_peek(Frame& out) noexcept {
  for (;;) {
    if (broken_) return PopStatus::broken;
    const std::size_t pos = head_ & mask_;
    // Acquire: pairs with the producer's release store of the stamp in
    // commit(); the frame's header and payload are visible after it.
    const std::uint64_t stamp =
        stamp_at(const_cast<std::byte*>(data_) + pos).load(std::memory_order_acquire);
    if (stamp == kNoStamp) {
      settle();  // caught up: a producer that raced our last release is woken now
      return PopStatus::empty;
    }
    if (stamp != stamp_of(head_)) {
      mark_broken("frame.stamp", stamp);
      return PopStatus::broken;
    }
    std::uint32_t lk[2];  // one read; checks use this copy only
    std::memcpy(lk, data_ + pos + offsetof(FrameHeader, length), sizeof lk);
    const std::uint32_t length = lk[0], kind = lk[1];
    if (kind == kPadKind) {
      const std::size_t to_end = capacity_ - pos;
      if (length != to_end - sizeof(FrameHeader)) {
        mark_broken("frame.length", length);
        return PopStatus::broken;
      }
      head_ += to_end;  // skip the pad and give its bytes back at once
      if (peeked_bytes_ == 0) publish_head();
      continue;
    }
    const std::size_t fb = frame_bytes(length);
    if (length > max_payload_ || pos + fb > capacity_) {
      mark_broken("frame.length", length);
      return PopStatus::broken;
    }
    out.kind = kind;
    out.payload = {data_ + pos + sizeof(FrameHeader), length};
    peeked_bytes_ = fb;
    return PopStatus::ok;
  }
}

inline void RingConsumer::release() noexcept {
  if (peeked_bytes_ == 0) return;
  head_ += peeked_bytes_;
  peeked_bytes_ = 0;
  publish_head();
}

inline void RingConsumer::publish_head() noexcept {
  // Release: pairs with the producer's acquire load of `head` in
  // refresh_head(); our reads of the frame happen-before the producer reuses
  // its bytes.
  ctl_->head.store(head_, std::memory_order_release);
  // A producer sleeping for room announced itself in producer_waiting; the
  // flag has a cache line of its own, so this load is a cache hit unless the
  // producer really went to sleep.  Clear, then wake: the producer sleeps on
  // the flag itself, so a wake-up that comes before it is asleep is not lost
  // (see reserve()).
  //
  // No fence here, on purpose: a seq_cst fence per frame made the consumer
  // wait, frame after frame, for the head line that a producer polling for
  // room had just pulled away (cast throughput, see bench/).  Without it, a
  // producer announcing its sleep at this very moment may miss this head
  // while we miss its flag (the store-buffer race).  Two things bound that:
  // the next release (or empty try_peek, which fences: settle()) sees the
  // flag, and the producer never sleeps longer than a short slice before it
  // looks at `head` again (reserve()).  A producer that waits for room
  // therefore always gets it, at worst one slice late.
  unsettled_ = true;
  if (ctl_->producer_waiting.load(std::memory_order_relaxed) != 0) wake_producer();
}

inline void RingConsumer::settle() noexcept {
  if (!unsettled_) return;
  unsettled_ = false;
  // The store-buffer pattern with the producer's announcement in reserve():
  // our head store, fence, its flag; its flag store, fence, our head.  One
  // of us sees the other.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (ctl_->producer_waiting.load(std::memory_order_relaxed) != 0) wake_producer();
}

inline void RingConsumer::wake_producer() noexcept {
  ctl_->producer_waiting.store(0, std::memory_order_relaxed);
  futex_wake(&ctl_->producer_waiting, 1);
}

}  // namespace bulkhead::ipc
