#include "schema/codec.hpp"

namespace bulkhead::schema {
namespace {

kj::ArrayPtr<capnp::word> first_segment(std::span<std::byte> area) {
  // The first 8 bytes hold the one-segment table; the segment follows.
  std::memset(area.data(), 0, area.size());  // MallocMessageBuilder wants it zeroed
  return {reinterpret_cast<capnp::word*>(area.data()) + 1, area.size() / sizeof(capnp::word) - 1};
}

}  // namespace

FlatBuilder::FlatBuilder(std::span<std::byte> area) : area_(area), builder_(first_segment(area)) {}

std::size_t FlatBuilder::finish() noexcept {
  auto segs = builder_.getSegmentsForOutput();
  if (segs.size() != 1) return 0;
  auto* seg0 = reinterpret_cast<const std::byte*>(segs[0].begin());
  if (seg0 != area_.data() + sizeof(capnp::word)) return 0;
  std::uint32_t table[2] = {0, static_cast<std::uint32_t>(segs[0].size())};
  std::memcpy(area_.data(), table, sizeof table);
  return sizeof(capnp::word) * (1 + segs[0].size());
}

kj::Array<capnp::word> FlatBuilder::flatten() {
  return capnp::messageToFlatArray(builder_);
}

std::optional<DecodeError> validate_envelope(std::span<const std::byte> bytes,
                                             const ReadLimits& limits) {
  return read_message(bytes, limits, [](capnp::MessageReader& r) {
    // totalSize() walks every pointer, checking bounds and limits.
    (void)r.getRoot<Envelope>().totalSize();
  });
}

}  // namespace bulkhead::schema
