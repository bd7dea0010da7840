#include "schema/codec.hpp"

#include <capnp/any.h>

#include <algorithm>

namespace bulkhead::schema {
namespace {

kj::ArrayPtr<capnp::word> first_segment(std::span<std::byte> area) {
  // The first 8 bytes hold the one-segment table; the segment follows.
  std::size_t words = area.size() / sizeof(capnp::word);
  if (words < 2) return {};                                  // no room: everything goes to the heap
  std::memset(area.data(), 0, words * sizeof(capnp::word));  // builders want zeroed memory
  return {reinterpret_cast<capnp::word*>(area.data()) + 1, words - 1};
}

// Reading a field through its generated reader applies every check Cap'n
// Proto has for it (bounds, pointer kind, NUL terminator, limits).
void walk_text(capnp::Text::Reader t) {
  (void)t.size();
}

void walk(const Value::Reader& v) {
  switch (v.which()) {
    case Value::TEXT:
      walk_text(v.getText());
      break;
    case Value::SYMBOL:
      walk_text(v.getSymbol());
      break;
    case Value::DATA:
      (void)v.getData().size();
      break;
    case Value::LIST:
      for (auto x : v.getList()) walk(x);
      break;
    case Value::TUPLE:
      for (auto x : v.getTuple()) walk(x);
      break;
    case Value::MAP:
      for (auto e : v.getMap()) {
        walk(e.getKey());
        walk(e.getValue());
      }
      break;
    default:
      break;
  }
}

// A payload of unknown schema: follow every pointer the way a reader of any
// schema would (struct pointer sections, pointer lists, struct lists).
void walk_any(capnp::AnyPointer::Reader p);

void walk_any_struct(capnp::AnyStruct::Reader s) {
  (void)s.getDataSection().size();
  auto ptrs = s.getPointerSection();
  for (unsigned i = 0; i < ptrs.size(); ++i) walk_any(ptrs[i]);
}

void walk_any(capnp::AnyPointer::Reader p) {
  switch (p.getPointerType()) {
    case capnp::PointerType::NULL_:
    case capnp::PointerType::CAPABILITY:
      return;
    case capnp::PointerType::STRUCT:
      walk_any_struct(p.getAs<capnp::AnyStruct>());
      return;
    case capnp::PointerType::LIST: {
      auto l = p.getAs<capnp::AnyList>();
      switch (l.getElementSize()) {
        case capnp::ElementSize::POINTER: {
          auto ps = l.as<capnp::List<capnp::AnyPointer>>();
          for (unsigned i = 0; i < ps.size(); ++i) walk_any(ps[i]);
          return;
        }
        case capnp::ElementSize::INLINE_COMPOSITE: {
          auto ss = l.as<capnp::List<capnp::AnyStruct>>();
          for (unsigned i = 0; i < ss.size(); ++i) walk_any_struct(ss[i]);
          return;
        }
        default:
          (void)l.getRawBytes().size();
          return;
      }
    }
  }
}

void walk(ExitReason::Reader r) {
  switch (r.which()) {
    case ExitReason::EXCEPTION: {
      auto x = r.getException();
      walk_text(x.getType());
      walk_text(x.getMessage());
      walk_text(x.getTraceback());
      walk_text(x.getActor());
      break;
    }
    case ExitReason::SIGNAL:
      (void)r.getSignal().getNumber();  // a struct pointer, not a group
      break;
    case ExitReason::KILLED_BY_LIMIT:
      walk_text(r.getKilledByLimit().getDetail());
      break;
    case ExitReason::START_FAILURE:
      walk_text(r.getStartFailure());
      break;
    case ExitReason::PROTOCOL_VIOLATION:
      walk_text(r.getProtocolViolation());
      break;
    default:
      break;
  }
}

// The structural check behind plain_root() (see codec.hpp), over the words
// of one segment.  Offsets are in words; nothing outside the segment is read.
class PlainCheck {
 public:
  PlainCheck(const std::byte* segment, std::size_t words) : seg_(segment), words_(words) {}

  // The pointer in word `at` (inside the segment) and all it leads to.
  bool pointer(std::size_t at, unsigned depth) {
    const std::uint64_t p = word_at(at);
    if (p == 0) return true;  // null
    if (depth == 0 || budget_ == 0) return false;
    --budget_;
    const auto lo = static_cast<std::uint32_t>(p);
    const auto hi = static_cast<std::uint32_t>(p >> 32);
    // Signed offset from the end of the pointer, in the upper 30 bits of `lo`.
    const std::int64_t target =
        static_cast<std::int64_t>(at) + 1 + (static_cast<std::int32_t>(lo) >> 2);
    switch (lo & 3u) {
      case 0:  // struct: data words, then pointers
        return structure(target, hi & 0xffffu, hi >> 16, depth);
      case 1:
        return list(target, hi & 7u, hi >> 3, depth);
      default:  // far pointer (another segment) or capability: not plain
        return false;
    }
  }

 private:
  [[nodiscard]] std::uint64_t word_at(std::size_t at) const {
    std::uint64_t w;
    std::memcpy(&w, seg_ + at * sizeof(capnp::word), sizeof w);
    return w;
  }
  [[nodiscard]] bool inside(std::int64_t start, std::uint64_t size) const {
    return start >= 0 && static_cast<std::uint64_t>(start) <= words_ &&
           size <= words_ - static_cast<std::uint64_t>(start);
  }
  bool structure(std::int64_t at, std::uint64_t data, std::uint64_t ptrs, unsigned depth) {
    if (!inside(at, data + ptrs)) return false;
    for (std::uint64_t i = 0; i < ptrs; ++i) {
      if (!pointer(static_cast<std::size_t>(at) + data + i, depth - 1)) return false;
    }
    return true;
  }
  bool list(std::int64_t at, unsigned element_size, std::uint64_t count, unsigned depth) {
    switch (element_size) {
      case 0:  // void: no bytes, but a reader may still iterate `count` times
        return count <= kPlainMaxEmpty;
      case 1:  // bits
        return inside(at, (count + 63) / 64);
      case 2:
        return inside(at, (count + 7) / 8);
      case 3:
        return inside(at, (count + 3) / 4);
      case 4:
        return inside(at, (count + 1) / 2);
      case 5:
        return inside(at, count);
      case 6:  // pointers
        if (!inside(at, count)) return false;
        for (std::uint64_t i = 0; i < count; ++i) {
          if (!pointer(static_cast<std::size_t>(at) + i, depth - 1)) return false;
        }
        return true;
      default: {  // inline composite: a struct-shaped tag word, then `count` words
        if (!inside(at, count + 1)) return false;
        const std::uint64_t tag = word_at(static_cast<std::size_t>(at));
        if ((tag & 3u) != 0) return false;  // the tag must describe structs
        const std::uint64_t n = static_cast<std::uint32_t>(tag) >> 2;  // element count
        const std::uint64_t data = (tag >> 32) & 0xffffu, ptrs = tag >> 48;
        const std::uint64_t per = data + ptrs;
        if (per == 0 ? n > kPlainMaxEmpty : n > count / per) return false;
        for (std::uint64_t e = 0; e < n; ++e) {
          const std::size_t base = static_cast<std::size_t>(at) + 1 + e * per + data;
          for (std::uint64_t j = 0; j < ptrs; ++j) {
            if (!pointer(base + j, depth - 1)) return false;
          }
        }
        return true;
      }
    }
  }

  const std::byte* seg_;
  std::uint64_t words_;
  unsigned budget_ = kPlainMaxPointers;
};

}  // namespace

const capnp::word* plain_root(std::span<const std::byte> bytes) noexcept {
  if (bytes.size() > kPlainMaxBytes || bytes.size() < 2 * sizeof(capnp::word) ||
      bytes.size() % sizeof(capnp::word) != 0 ||
      reinterpret_cast<std::uintptr_t>(bytes.data()) % sizeof(capnp::word) != 0) {
    return nullptr;
  }
  std::uint32_t table[2];  // segment count - 1, then the first segment's words
  std::memcpy(table, bytes.data(), sizeof table);
  const std::size_t words = bytes.size() / sizeof(capnp::word) - 1;
  if (table[0] != 0 || table[1] != words) return nullptr;
  const std::byte* segment = bytes.data() + sizeof(capnp::word);
  if (!PlainCheck(segment, words).pointer(0, kPlainMaxDepth)) return nullptr;
  return reinterpret_cast<const capnp::word*>(segment);
}

kj::ArrayPtr<capnp::word> AreaMessageBuilder::allocateSegment(unsigned int minimum_words) {
  if (!first_used_) {
    first_used_ = true;
    if (first_.size() > 0 && minimum_words <= first_.size()) return first_;
  }
  std::size_t n = std::max<std::size_t>(minimum_words, next_words_);
  next_words_ = std::min<std::size_t>(2 * n, std::size_t{1} << 22);
  auto seg = kj::heapArray<capnp::word>(n);
  std::memset(seg.begin(), 0, n * sizeof(capnp::word));
  auto ptr = seg.asPtr();
  more_.add(kj::mv(seg));
  return ptr;
}

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

void walk_envelope_rest(const Envelope::Reader& e, EnvelopeParts& parts) {
  if (e.hasDestName()) walk_text(e.getDestName());  // null: nothing to check
  auto p = e.getPayload();
  switch (p.which()) {
    case Envelope::Payload::VALUE:
      walk(parts.value);  // (set by walk_envelope)
      break;
    case Envelope::Payload::EXIT_REASON:
      walk(p.getExitReason());
      break;
    case Envelope::Payload::ERROR: {
      auto err = p.getError();
      walk_text(err.getMessage());
      walk(err.getReason());
      break;
    }
    case Envelope::Payload::TYPED:
      // Without the content's schema: every pointer, generically.  A struct
      // where the user's schema expects text is caught only by their reader.
      walk_any(p.getTyped().getContent());
      break;
    case Envelope::Payload::NONE:
      break;
  }
}

std::optional<DecodeError> validate_envelope(std::span<const std::byte> bytes,
                                             const ReadLimits& limits) {
  return read_message(bytes, limits, [](capnp::MessageReader& r) {
    EnvelopeParts parts;
    walk_envelope(r.getRoot<Envelope>(), parts);
  });
}

}  // namespace bulkhead::schema
