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
// A frame is FrameHeader{length, kind} (8 bytes) + payload padded to 8, so
// every payload is 8-byte aligned and Cap'n Proto can read it in place.  A
// frame never wraps: if it does not fit before the end of the buffer, the
// producer writes a pad frame (kind 0) to the end and starts at offset 0.
//
// Indices are 64-bit monotonic byte counters (they never wrap in practice):
//   tail  written by the producer only, published with a release store after
//         the frame bytes are written: a producer killed mid-write leaves
//         nothing visible.
//   head  written by the consumer only, released after it is done reading a
//         frame: the producer may reuse the space only then.
// Each side keeps a private cached copy of the other's index and refreshes it
// only when the cached one says full (producer) or empty (consumer).
//
// Trust: the peer is hostile.  Each side reads the other's index and (the
// consumer) the frame headers from shared memory, and bounds-checks every one
// at the point of use, against its *private* copy of the capacity taken when
// it attached.  A violation marks the ring broken (sticky), records which
// field was wrong, and every later call returns `broken`: no read out of
// bounds, no crash, no hang.  The supervisor then kills the offender.
//
// Threading: one producer object and one consumer object, each used by one
// thread at a time.  All hot-path calls are noexcept and allocation-free.
#pragma once

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
inline constexpr std::uint32_t kRingLayoutVersion = 2;  // 2: producer_waiting on line 3
inline constexpr std::uint32_t kPadKind = 0;            // filler up to the end of the buffer
inline constexpr std::size_t kFrameAlign = 8;           // payload alignment
inline constexpr std::size_t kMinRingCapacity = 256;

struct FrameHeader {
  std::uint32_t length;  // payload bytes, not counting this header or padding
  std::uint32_t kind;    // kPadKind, or a user kind >= 1
};
static_assert(sizeof(FrameHeader) == 8);

struct alignas(kCacheLine) RingControl {
  // Line 0: passport, written once by the creator (the supervisor).
  std::uint64_t magic;        // kRingMagic
  std::uint32_t version;      // kRingLayoutVersion
  std::uint32_t reserved0;    // zero
  std::uint64_t capacity;     // data bytes, power of two
  std::uint64_t max_payload;  // largest payload accepted: capacity/2 - 8
  std::uint8_t reserved1[32];
  // Line 1: producer-owned.
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
  return sizeof(FrameHeader) + ((payload + kFrameAlign - 1) & ~(kFrameAlign - 1));
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
  // Publishes the reserved frame with `len` <= reserved bytes.
  void commit(std::uint32_t kind, std::size_t len) noexcept;
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
  // Consumes the frame returned by the last successful try_peek.
  void release() noexcept;
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

  RingControl* ctl_ = nullptr;
  const std::byte* data_ = nullptr;
  std::size_t capacity_ = 0;
  std::size_t mask_ = 0;
  std::size_t max_payload_ = 0;
  std::uint64_t head_ = 0;          // private: next byte to read
  std::uint64_t tail_cache_ = 0;    // private: last validated tail
  std::uint64_t peeked_bytes_ = 0;  // bytes of the peeked frame, 0 if none (head_
                                    // may be anywhere, even near 2^64: no sentinel)
  bool broken_ = false;
  RingFault fault_;
};

// ---------------------------------------------------------------------------
// Hot path, inline.

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
  if (tail_ + pad + need - head_cache_ > capacity_) {
    if (!refresh_head()) return {};
    if (tail_ + pad + need - head_cache_ > capacity_) {
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

inline void RingProducer::commit(std::uint32_t kind, std::size_t len) noexcept {
  if (len > reserved_len_) len = reserved_len_;  // caller bug; never overrun
  std::size_t pos = tail_ & mask_;
  if (reserved_pad_ != 0) {
    FrameHeader pad{static_cast<std::uint32_t>(reserved_pad_ - sizeof(FrameHeader)), kPadKind};
    std::memcpy(data_ + pos, &pad, sizeof pad);
    pos = 0;
  }
  FrameHeader h{static_cast<std::uint32_t>(len), kind};
  std::memcpy(data_ + pos, &h, sizeof h);
  tail_ += reserved_pad_ + frame_bytes(len);
  reserved_pad_ = 0;
  reserved_len_ = 0;
  // Release: pairs with the consumer's acquire load of `tail` in try_peek();
  // every byte of the frame (header, payload, pad) happens-before it.
  ctl_->tail.store(tail_, std::memory_order_release);
  if (doorbell_ != nullptr) doorbell_->ring();
}

inline PushStatus RingProducer::try_push(std::uint32_t kind,
                                         std::span<const std::byte> data) noexcept {
  auto area = try_reserve(data.size());
  if (area.data() == nullptr) return status_;
  if (!data.empty()) std::memcpy(area.data(), data.data(), data.size());
  commit(kind, data.size());
  return PushStatus::ok;
}

inline bool RingConsumer::readable() const noexcept {
  if (broken_) return true;
  if (tail_cache_ != head_) return true;
  // Relaxed is enough for a hint; try_peek() does the acquire.
  return ctl_->tail.load(std::memory_order_relaxed) != head_;
}

inline PopStatus RingConsumer::try_peek(Frame& out) noexcept {
  for (;;) {
    if (broken_) return PopStatus::broken;
    if (tail_cache_ == head_) {
      // Acquire: pairs with the producer's release store in commit(); the
      // frame bytes up to `tail` are visible after this load.
      std::uint64_t t = ctl_->tail.load(std::memory_order_acquire);
      if (t == head_) return PopStatus::empty;
      if (t - head_ > capacity_ || (t & (kFrameAlign - 1)) != 0) {
        mark_broken("tail", t);
        return PopStatus::broken;
      }
      tail_cache_ = t;
    }
    const std::uint64_t avail = tail_cache_ - head_;
    const std::size_t pos = head_ & mask_;
    FrameHeader h;
    std::memcpy(&h, data_ + pos, sizeof h);  // one read; checks use this copy only
    if (h.kind == kPadKind) {
      const std::size_t to_end = capacity_ - pos;
      if (h.length != to_end - sizeof(FrameHeader) || avail < to_end) {
        mark_broken("frame.length", h.length);
        return PopStatus::broken;
      }
      head_ += to_end;  // skip the pad and give its bytes back at once
      if (peeked_bytes_ == 0) publish_head();
      continue;
    }
    const std::size_t fb = frame_bytes(h.length);
    if (h.length > max_payload_ || fb > avail || pos + fb > capacity_) {
      mark_broken("frame.length", h.length);
      return PopStatus::broken;
    }
    out.kind = h.kind;
    out.payload = {data_ + pos + sizeof(FrameHeader), h.length};
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
  // A producer sleeping for space announced itself in producer_waiting before
  // re-checking head (seq_cst); the fence orders our head store before this
  // load (store-buffer pattern), so one of us sees the other: either its
  // re-check saw this head, or we see its flag and wake it.  Checked after
  // every publication (a producer must never sleep while there is room): the
  // flag has a cache line of its own, so the load is a cache hit unless the
  // producer really went to sleep.  Clear, then wake: the producer sleeps on
  // the flag itself, so a wake-up that comes before it is asleep is not lost
  // (see reserve()).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (ctl_->producer_waiting.load(std::memory_order_relaxed) != 0) {
    ctl_->producer_waiting.store(0, std::memory_order_relaxed);
    futex_wake(&ctl_->producer_waiting, 1);
  }
}

}  // namespace bulkhead::ipc
