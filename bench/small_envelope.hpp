// bench/small_envelope.hpp: the small Envelope the ring figures exchange.
//
// The small envelope: kind, correlation id and a Value payload
// holding one int (104 bytes flat with the segment table, the size of the
// runtime's own call: the addresses are inline and take that room whether
// set or not; no name, no deadline).  It is built by the real
// codec in private memory and pushed with one copy (schema::send_message_copy:
// the consumer polls the frame header, so building in the frame would have
// its polls pull the lines away while they are written), and read as the
// runtime reads a frame: copied out of the ring (a producer is not trusted
// not to change it), then schema::read_envelope (the whole Envelope checked,
// the plain fast path for a one-segment message), reading kind, correlation
// id and the int.
//
// How much memory to zero for a message that is not built yet is the
// sender's call; FlatBuilder zeroes all of it, and the copy is what the
// message took.  The sender reserves what its previous message took, rounded
// up to a cache line (FirstSegmentHint), as a runtime would; a message that
// outgrows the reservation still arrives, through the codec's heap path.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>

#include "ipc/ring.hpp"
#include "schema/codec.hpp"

namespace bulkhead::bench {

// Ring bytes to reserve (and zero) for the next message's first segment:
// the previous message's flat size rounded up to a cache line.
class FirstSegmentHint {
 public:
  static constexpr std::size_t kInitial = 256;  // before the first message
  [[nodiscard]] std::size_t bytes() const noexcept { return bytes_; }
  void saw(std::size_t flat_bytes) noexcept {
    bytes_ = (flat_bytes + ipc::kCacheLine - 1) & ~(ipc::kCacheLine - 1);
  }

 private:
  std::size_t bytes_ = kInitial;
};

struct SmallMessage {
  schema::Kind kind = schema::Kind::CALL;
  std::uint64_t correlation_id = 0;
  std::int64_t value = 0;
};

// Builds `m` in private memory and publishes a copy of it on `producer`
// (schema::send_message_copy: with the consumer polling the frame header,
// building in place would bounce the frame's lines while it is written).
inline ipc::PushStatus send_small(ipc::RingProducer& producer, FirstSegmentHint& hint,
                                  const SmallMessage& m) {
  alignas(8) std::byte scratch[1024];
  return schema::send_message_copy(
      producer, schema::kEnvelopeFrame,
      std::span(scratch).first(std::min(hint.bytes(), sizeof scratch)),
      [&](schema::FlatBuilder& b) {
        auto e = b.init_root<schema::Envelope>();
        e.setKind(m.kind);
        e.setCorrelationId(m.correlation_id);
        e.getPayload().initValue().setInt(m.value);
        // + the 8-byte segment table
        hint.saw((b.message().sizeInWords() + 1) * sizeof(capnp::word));
      });
}

// Reads kind, correlation id and the int payload of a frame in place.
// Throws if the frame does not decode or carries no int.
inline SmallMessage read_small(std::span<const std::byte> frame) {
  static const schema::ReadLimits limits{};
  SmallMessage m;
  bool has_int = false;
  alignas(8) std::byte copy[1024];
  if (frame.size() > sizeof copy) throw std::runtime_error("envelope bigger than expected");
  std::memcpy(copy, frame.data(), frame.size());
  const std::span<const std::byte> own(copy, frame.size());
  auto err = schema::read_envelope(own, limits, [&](const schema::EnvelopeParts& parts) {
    m.kind = parts.envelope.getKind();
    m.correlation_id = parts.envelope.getCorrelationId();
    if (parts.has_value && parts.value.isInt()) {
      m.value = parts.value.getInt();
      has_int = true;
    }
  });
  if (err) throw std::runtime_error("envelope does not decode: " + err->what);
  if (!has_int) {
    throw std::runtime_error("envelope (kind " + std::to_string(static_cast<int>(m.kind)) +
                             ", correlationId " + std::to_string(m.correlation_id) +
                             ") carries no int Value payload");
  }
  return m;
}

}  // namespace bulkhead::bench
