#include "ipc/ring.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <stdexcept>

namespace bulkhead::ipc {

std::string RingFault::describe() const {
  return fmt::format("ring {} is broken: field {} has invalid value {} (at position {})", segment,
                     field, value, position);
}

void init_ring(std::span<std::byte> mem, std::size_t capacity) {
  if (capacity < kMinRingCapacity || !std::has_single_bit(capacity)) {
    throw std::invalid_argument(
        fmt::format("ring capacity {} must be a power of two >= {}", capacity, kMinRingCapacity));
  }
  if (reinterpret_cast<std::uintptr_t>(mem.data()) % kCacheLine != 0) {
    throw std::invalid_argument("ring memory must be 64-byte aligned");
  }
  if (mem.size() < ring_footprint(capacity)) {
    throw std::invalid_argument(fmt::format("ring of capacity {} needs {} bytes, got {}", capacity,
                                            ring_footprint(capacity), mem.size()));
  }
  std::memset(mem.data(), 0, ring_footprint(capacity));
  auto* ctl = new (mem.data()) RingControl;
  ctl->version = kRingLayoutVersion;
  ctl->capacity = capacity;
  ctl->max_payload = capacity / 2 - sizeof(FrameHeader);
  ctl->tail.store(0, std::memory_order_relaxed);
  ctl->head.store(0, std::memory_order_relaxed);
  ctl->producer_waiting.store(0, std::memory_order_relaxed);
  // Magic last, released: an attacher that sees it sees the whole passport.
  std::atomic_ref<std::uint64_t>(ctl->magic).store(kRingMagic, std::memory_order_release);
}

std::size_t check_ring_passport(std::span<std::byte> mem, const std::string& name) {
  if (mem.size() < sizeof(RingControl)) {
    throw RingError(fmt::format("ring {}: region of {} bytes is smaller than its control block",
                                name, mem.size()));
  }
  if (reinterpret_cast<std::uintptr_t>(mem.data()) % kCacheLine != 0) {
    throw RingError(fmt::format("ring {}: control block is not 64-byte aligned", name));
  }
  auto* ctl = reinterpret_cast<RingControl*>(mem.data());
  std::uint64_t magic = std::atomic_ref<std::uint64_t>(ctl->magic).load(std::memory_order_acquire);
  if (magic != kRingMagic) {
    throw RingError(fmt::format("ring {}: field magic is {:#018x}, expected {:#018x}", name, magic,
                                kRingMagic));
  }
  if (ctl->version != kRingLayoutVersion) {
    throw RingError(fmt::format("ring {}: field version is {}, this build reads {}", name,
                                ctl->version, kRingLayoutVersion));
  }
  std::uint64_t cap = ctl->capacity;
  if (cap < kMinRingCapacity || !std::has_single_bit(cap) || ring_footprint(cap) > mem.size()) {
    throw RingError(
        fmt::format("ring {}: field capacity is {}, not a power of two >= {} fitting in {} bytes",
                    name, cap, kMinRingCapacity, mem.size()));
  }
  if (ctl->max_payload != cap / 2 - sizeof(FrameHeader)) {
    throw RingError(fmt::format("ring {}: field max_payload is {}, expected {}", name,
                                ctl->max_payload, cap / 2 - sizeof(FrameHeader)));
  }
  return cap;
}

// ---------------------------------------------------------------------------

RingProducer::RingProducer(std::span<std::byte> mem, std::string name, Doorbell* doorbell)
    : doorbell_(doorbell) {
  capacity_ = check_ring_passport(mem, name);
  ctl_ = reinterpret_cast<RingControl*>(mem.data());
  data_ = mem.data() + sizeof(RingControl);
  mask_ = capacity_ - 1;
  max_payload_ = capacity_ / 2 - sizeof(FrameHeader);
  fault_.segment = std::move(name);
  // Our own index, left by a predecessor: trust it only as far as it is
  // consistent with the consumer's.
  tail_ = ctl_->tail.load(std::memory_order_relaxed);
  head_cache_ = ctl_->head.load(std::memory_order_acquire);
  if ((tail_ & (kFrameAlign - 1)) != 0) {
    mark_broken("tail", tail_);
    return;
  }
  // A predecessor killed between a frame's stamp and its store of `tail`
  // published frames that `tail` does not count: step over them (the frame
  // after the last one has its guard, kNoStamp).  At most one lap.
  for (std::size_t walked = 0; walked < capacity_;) {
    const std::size_t pos = tail_ & mask_;
    if (stamp_at(data_ + pos).load(std::memory_order_acquire) != stamp_of(tail_)) break;
    std::uint32_t lk[2];
    std::memcpy(lk, data_ + pos + offsetof(FrameHeader, length), sizeof lk);
    const std::size_t bytes =
        lk[1] == kPadKind ? capacity_ - pos : frame_bytes(std::min<std::size_t>(lk[0], capacity_));
    if ((lk[1] == kPadKind && lk[0] != capacity_ - pos - sizeof(FrameHeader)) ||
        pos + bytes > capacity_) {
      mark_broken("frame.length", lk[0]);
      return;
    }
    tail_ += bytes;
    walked += bytes;
  }
  ctl_->tail.store(tail_, std::memory_order_release);
  if (tail_ - head_cache_ > capacity_ || (head_cache_ & (kFrameAlign - 1)) != 0) {
    mark_broken("head", head_cache_);
  }
}

void RingProducer::mark_broken(const char* field, std::uint64_t value) noexcept {
  status_ = PushStatus::broken;
  fault_.field = field;
  fault_.value = value;
  fault_.position = tail_;
}

bool RingProducer::refresh_head() noexcept {
  // Acquire: pairs with the consumer's release store in publish_head(); the
  // consumer finished reading the bytes before `head` before we overwrite them.
  std::uint64_t h = ctl_->head.load(std::memory_order_acquire);
  if (tail_ - h > capacity_ || (h & (kFrameAlign - 1)) != 0) {
    mark_broken("head", h);
    return false;
  }
  head_cache_ = h;
  return true;
}

std::size_t RingProducer::size_approx() const noexcept {
  std::uint64_t h = ctl_->head.load(std::memory_order_relaxed);
  std::uint64_t d = tail_ - h;
  return d > capacity_ ? capacity_ : static_cast<std::size_t>(d);
}

std::span<std::byte> RingProducer::reserve(std::size_t len, Deadline deadline) noexcept {
  auto area = try_reserve(len);
  if (area.data() != nullptr || status_ != PushStatus::full) return area;
  // Phase 1: poll the consumer's head for a little while.
  const auto spin_end = std::min(deadline, Clock::now() + std::chrono::microseconds(20));
  for (unsigned i = 1;; ++i) {
    cpu_relax();
    area = try_reserve(len);
    if (area.data() != nullptr || status_ != PushStatus::full) return area;
    if ((i & 63) == 0 && Clock::now() >= spin_end) break;
  }
  // Phase 2: announce, re-check, sleep on producer_waiting itself (an
  // eventcount): the consumer that sees the flag clears it, then wakes it.
  // A consumer that misses the flag in a race (it does not fence every
  // release) is covered by the slices below.
  // If its clear comes before we are inside futex_wait, futex_wait finds 0
  // and returns at once; if after, the wake finds us asleep.  (Sleeping on
  // `head` instead loses a wake-up that comes before we are asleep when
  // `head` has not moved since we read it.)
  auto* flag = &ctl_->producer_waiting;
  // Each sleep is a slice: the consumer releases without a fence (see
  // RingConsumer::publish_head), so a wake-up can be missed in a race; we
  // look at `head` again after at most one slice (from 50 us, doubling up
  // to 5 ms: a producer blocked for long costs ~200 wake-ups a second).
  auto slice = std::chrono::microseconds(50);
  for (;;) {
    if (Clock::now() >= deadline) {
      flag->store(0, std::memory_order_relaxed);
      status_ = PushStatus::timeout;
      return {};
    }
    // seq_cst: pairs with the fence in RingConsumer::publish_head().
    flag->store(1, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);  // before the re-check's loads
    area = try_reserve(len);
    if (area.data() != nullptr || status_ != PushStatus::full) {
      flag->store(0, std::memory_order_relaxed);
      return area;
    }
    futex_wait(flag, 1, std::min(deadline, Clock::now() + slice));
    slice = std::min(slice * 2, std::chrono::microseconds(5000));
  }
}

PushStatus RingProducer::push(std::uint32_t kind, std::span<const std::byte> data,
                              Deadline deadline) noexcept {
  auto area = reserve(data.size(), deadline);
  if (area.data() == nullptr) return status_;
  copy_and_commit(kind, area.data(), data);
  return PushStatus::ok;
}

// ---------------------------------------------------------------------------

RingConsumer::RingConsumer(std::span<std::byte> mem, std::string name) {
  capacity_ = check_ring_passport(mem, name);
  ctl_ = reinterpret_cast<RingControl*>(mem.data());
  data_ = mem.data() + sizeof(RingControl);
  mask_ = capacity_ - 1;
  max_payload_ = capacity_ / 2 - sizeof(FrameHeader);
  fault_.segment = std::move(name);
  head_ = ctl_->head.load(std::memory_order_relaxed);
  if ((head_ & (kFrameAlign - 1)) != 0) mark_broken("head", head_);
}

void RingConsumer::mark_broken(const char* field, std::uint64_t value) noexcept {
  broken_ = true;
  peeked_bytes_ = 0;
  fault_.field = field;
  fault_.value = value;
  fault_.position = head_;
}

PopStatus RingConsumer::try_pop(std::uint32_t& kind, std::span<std::byte> dst,
                                std::size_t& len) noexcept {
  Frame f;
  PopStatus s = try_peek(f);
  if (s != PopStatus::ok) return s;
  if (f.payload.size() > dst.size()) {
    mark_broken("frame.length", f.payload.size());
    return PopStatus::broken;
  }
  kind = f.kind;
  len = f.payload.size();
  if (len != 0) std::memcpy(dst.data(), f.payload.data(), len);
  release();
  return PopStatus::ok;
}

}  // namespace bulkhead::ipc
