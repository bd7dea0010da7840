// schema/codec.hpp: Cap'n Proto messages built in place and read in place.
//
// What it is for: putting an Envelope (or any Cap'n Proto root) straight into
// memory the caller provides (normally a frame reserved in a ring) and reading
// one back without copying.  schema/ depends on nothing else in Bulkhead: the
// ring is reached through a duck-typed producer (try_reserve / commit /
// try_push / status), see `send_message`.
//
// Wire form: the standard flat form (segment table, then segments).  A
// message built by FlatBuilder that fits in the caller's area has exactly one
// segment, so the table is 8 bytes and the root follows at offset 8.
//
// Trust: `read_message` treats its bytes as hostile.  It checks alignment and
// size, applies traversal and nesting limits, and turns every Cap'n Proto
// failure (also those thrown lazily while `use` walks the message) into a
// DecodeError with Cap'n Proto's description.  It never reads outside `bytes`.
// The sender may still be writing into shared memory while we read: Cap'n
// Proto re-checks every pointer against the fixed segment bounds, so that can
// produce wrong values but no out-of-bounds read.
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>
#include <kj/vector.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <type_traits>

#include "schema/envelope.capnp.h"
#include "schema/value.capnp.h"

namespace bulkhead::schema {

// Frame kind of a ring frame holding one flat Cap'n Proto Envelope.
inline constexpr std::uint32_t kEnvelopeFrame = 1;

struct ReadLimits {
  std::uint64_t traversal_words = 8u << 20;  // 64 MiB of traversal
  unsigned nesting = 64;                     // pointer depth
};

struct DecodeError {
  std::string what;
};

// A MessageBuilder whose first segment is caller memory and that never
// touches that memory again after building (MallocMessageBuilder zeroes its
// first segment in its destructor, which would erase a frame that was
// already published).  Further segments come from the heap.
class AreaMessageBuilder final : public capnp::MessageBuilder {
 public:
  explicit AreaMessageBuilder(kj::ArrayPtr<capnp::word> first) : first_(first) {}
  kj::ArrayPtr<capnp::word> allocateSegment(unsigned int minimum_words) override;

 private:
  kj::ArrayPtr<capnp::word> first_;
  bool first_used_ = false;
  std::size_t next_words_ = 1024;
  kj::Vector<kj::Array<capnp::word>> more_;
};

// Builds one message whose first segment is `area` (8-aligned, zeroed here).
class FlatBuilder {
 public:
  explicit FlatBuilder(std::span<std::byte> area);
  FlatBuilder(const FlatBuilder&) = delete;
  FlatBuilder& operator=(const FlatBuilder&) = delete;

  template <class T>
  typename T::Builder init_root() {
    return builder_.initRoot<T>();
  }
  capnp::MessageBuilder& message() noexcept { return builder_; }

  // If the whole message lives in `area`: writes its segment table at the
  // start of `area` and returns the flat size in bytes.  Otherwise returns 0:
  // the message spilled into heap segments; use flatten() to copy it out.
  std::size_t finish() noexcept;
  // The flat form, on the heap (the slow path for big messages).
  kj::Array<capnp::word> flatten();

 private:
  std::span<std::byte> area_;
  AreaMessageBuilder builder_;
};

// Builds a message with `fill(FlatBuilder&)` straight into a frame reserved
// on `producer` (first segment `first_segment_bytes` of ring memory) and
// publishes it with frame kind `kind`.  A message larger than that is
// flattened on the heap and pushed with a copy.  Returns the producer's
// status type (ok, full, too_big, broken).
template <class Producer, class Fill>
auto send_message(Producer& producer, std::uint32_t kind, std::size_t first_segment_bytes,
                  Fill&& fill) -> decltype(producer.status()) {
  auto area = producer.try_reserve(first_segment_bytes);
  if (area.data() == nullptr) return producer.status();
  FlatBuilder b(area);
  fill(b);
  if (std::size_t n = b.finish()) {
    producer.commit(kind, n);
    return decltype(producer.status()){};  // ok
  }
  auto words = b.flatten();
  auto bytes = words.asBytes();
  return producer.try_push(kind, {reinterpret_cast<const std::byte*>(bytes.begin()), bytes.size()});
}

// Builds a message with `fill(FlatBuilder&)` in `scratch` (private memory,
// 8-aligned: its first segment) and pushes one copy of it with frame kind
// `kind`.  Against a ring whose consumer polls the frame header (ipc/ring.hpp)
// this beats building in place: the builder writes a frame one field at a
// time, and every poll of a waiting consumer takes the cache line away from
// it in between; one memcpy and a commit move the line across once.  A
// message larger than `scratch` is flattened on the heap.  Returns the
// producer's status type (ok, full, too_big, broken); nothing is published
// unless ok.
template <class Producer, class Fill>
auto send_message_copy(Producer& producer, std::uint32_t kind, std::span<std::byte> scratch,
                       Fill&& fill) -> decltype(producer.status()) {
  FlatBuilder b(scratch);
  fill(b);
  if (std::size_t n = b.finish()) return producer.try_push(kind, scratch.first(n));
  auto words = b.flatten();
  auto bytes = words.asBytes();
  return producer.try_push(kind, {reinterpret_cast<const std::byte*>(bytes.begin()), bytes.size()});
}

// Opens `bytes` as a flat message and calls use(capnp::MessageReader&).  Any
// Cap'n Proto failure inside (bad segment table, pointer out of bounds,
// traversal or nesting limit) comes back as a DecodeError.
template <class Use>
std::optional<DecodeError> read_message(std::span<const std::byte> bytes, const ReadLimits& limits,
                                        Use&& use) {
  if (reinterpret_cast<std::uintptr_t>(bytes.data()) % sizeof(capnp::word) != 0) {
    return DecodeError{"message is not 8-byte aligned"};
  }
  if (bytes.size() % sizeof(capnp::word) != 0 || bytes.size() < sizeof(capnp::word)) {
    return DecodeError{"message length " + std::to_string(bytes.size()) +
                       " is not a positive multiple of 8"};
  }
  capnp::ReaderOptions opts;
  opts.traversalLimitInWords = limits.traversal_words;
  opts.nestingLimit = static_cast<int>(limits.nesting);
  try {
    capnp::FlatArrayMessageReader reader(
        kj::ArrayPtr<const capnp::word>(reinterpret_cast<const capnp::word*>(bytes.data()),
                                        bytes.size() / sizeof(capnp::word)),
        opts);
    use(static_cast<capnp::MessageReader&>(reader));
    return std::nullopt;
  } catch (const kj::Exception& e) {
    auto d = e.getDescription();  // may quote NUL bytes: keep its full length
    return DecodeError{std::string("invalid Cap'n Proto message: ") +
                       std::string(d.begin(), d.size())};
  }
}

// Reads the whole Envelope once through the generated readers (every field
// of the header, a Value payload recursively, an ExitReason, a CallError),
// so that a bad message is rejected here rather than in a handler.  A typed
// payload (the user's own struct) is walked generically, pointer by pointer:
// without its schema, a struct where text belongs cannot be told apart.
// Cheap for small messages.
std::optional<DecodeError> validate_envelope(std::span<const std::byte> bytes,
                                             const ReadLimits& limits = {});

// The envelope and the payload Value its check reads anyway, handed on so
// that a receiver does not traverse the same pointer again (every struct get
// is a traversal).  The addresses are inline groups: free to read again.
struct EnvelopeParts {
  Envelope::Reader envelope;
  Value::Reader value;  // the payload, if it is a Value (has_value)
  bool has_value = false;
  bool plain = false;  // read through the unchecked fast path (plain_root)
};

// The parts of walk_envelope that are rare on the hot path: a destination
// name, a payload that is not a scalar Value.
void walk_envelope_rest(const Envelope::Reader& e, EnvelopeParts& parts);

// Throws kj::Exception if any field of `e` is bad (what validate_envelope
// checks); fills `parts` with what it read.  The common case is inline: a
// scalar Value is read here, the rest out of line.
inline void walk_envelope(const Envelope::Reader& e, EnvelopeParts& parts) {
  parts.envelope = e;
  auto p = e.getPayload();
  const bool value = p.isValue();
  if (value) {
    parts.value = p.getValue();
    parts.has_value = true;
  }
  // Scalars (null, bool, int, float) have nothing to follow; anything after
  // them in the union is text, data or a list.
  if (e.hasDestName() || !value || parts.value.which() >= Value::TEXT) {
    walk_envelope_rest(e, parts);
  }
}

// The fast path of read_envelope.  Cap'n Proto's checked reader costs more
// to set up (its arena, its read limiter, a checked root) than a small
// envelope costs to read, on every message.  Instead, a message that is
//   - one segment, its table exactly matching `bytes`, at most kPlainMaxBytes,
//   - made of struct pointers and lists only (no far pointers, no
//     capabilities), every one of them, followed by its own wire kind,
//     inside the segment,
//   - at most kPlainMaxDepth deep, with at most kPlainMaxPointers non-null
//     pointers on all paths from the root (so no cycles, and a bounded
//     amount of reading however it is traversed), and no list of more than
//     kPlainMaxEmpty zero-sized elements (free to send, slow to iterate)
// is read through capnp::readMessageUnchecked: every pointer any schema
// reader may follow has been checked, and what the unchecked reader still
// checks (pointer kinds, list element sizes, text terminators) it checks as
// the checked one does.  Anything else takes the checked path.  The fuzz
// stage compares the two on arbitrary bytes (tests/fuzz).
inline constexpr std::size_t kPlainMaxBytes = 16 * 1024;
inline constexpr unsigned kPlainMaxDepth = 32;
inline constexpr unsigned kPlainMaxPointers = 512;
inline constexpr std::uint64_t kPlainMaxEmpty = 4096;

// The root pointer of `bytes` (an aligned flat message) if it passes the
// check above, else nullptr.
const capnp::word* plain_root(std::span<const std::byte> bytes) noexcept;

// validate_envelope + read in place with one reader: walks the whole
// Envelope (a failure there is a DecodeError and `use` is not called), then
// calls use(Envelope::Reader), or use(const EnvelopeParts&) if `use` takes
// that.  Exceptions thrown by `use` propagate: they are the caller's (an
// actor's), not the message's.
template <class Use>
std::optional<DecodeError> read_envelope(std::span<const std::byte> bytes, const ReadLimits& limits,
                                         Use&& use) {
  if (reinterpret_cast<std::uintptr_t>(bytes.data()) % sizeof(capnp::word) != 0 ||
      bytes.size() % sizeof(capnp::word) != 0 || bytes.size() < sizeof(capnp::word)) {
    return DecodeError{"message is not a positive number of aligned 8-byte words"};
  }
  capnp::ReaderOptions opts;
  opts.traversalLimitInWords = limits.traversal_words;
  opts.nestingLimit = static_cast<int>(limits.nesting);
  std::optional<capnp::FlatArrayMessageReader> reader;
  EnvelopeParts parts;
  // The fast path only where the caller's limits are not tighter than its own.
  const bool may_be_plain = limits.nesting >= kPlainMaxDepth &&
                            limits.traversal_words >= kPlainMaxPointers * (kPlainMaxBytes / 8);
  try {
    if (const capnp::word* root = may_be_plain ? plain_root(bytes) : nullptr) {
      walk_envelope(capnp::readMessageUnchecked<Envelope>(root), parts);
      parts.plain = true;
    } else {
      reader.emplace(
          kj::ArrayPtr<const capnp::word>(reinterpret_cast<const capnp::word*>(bytes.data()),
                                          bytes.size() / sizeof(capnp::word)),
          opts);
      walk_envelope(reader->getRoot<Envelope>(), parts);
    }
  } catch (const kj::Exception& e) {
    auto d = e.getDescription();
    return DecodeError{std::string("invalid Cap'n Proto message: ") +
                       std::string(d.begin(), d.size())};
  }
  if constexpr (std::is_invocable_v<Use&, const EnvelopeParts&>) {
    use(static_cast<const EnvelopeParts&>(parts));
  } else {
    use(parts.envelope);
  }
  return std::nullopt;
}

}  // namespace bulkhead::schema
