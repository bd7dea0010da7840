// frame-fuzz: a RingConsumer over a ring written by a hostile producer.
//
// The input (see frame_fuzz.hpp) is the ring's indices, its data bytes and a
// script of later scribbles.  Properties checked on every input:
//   - the consumer never crashes or reads outside the ring (the ring is a heap
//     block of exactly its size: ASan flags the first byte past it);
//   - it never loops forever: one pass pops at most capacity/8 frames;
//   - every frame it hands out lies inside the ring, is 8-aligned and no
//     longer than max_payload;
//   - a frame of kind 1 is validated and read field by field (Envelope,
//     Value, ExitReason, CallError, typed AnyPointer content) without a crash:
//     any fault comes back as a DecodeError;
//   - a producer attached afterwards (to the same hostile indices) pushes
//     without writing outside the ring.
// A violated property aborts (__builtin_trap), which both libFuzzer and the
// seeded driver report as a crash.
#include <capnp/any.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "tests/fuzz/frame_fuzz.hpp"

namespace bulkhead::fuzz {

Stats& stats() {
  static Stats s;
  return s;
}

namespace {

#define FUZZ_CHECK(cond)                                                                       \
  do {                                                                                         \
    if (!(cond)) {                                                                             \
      std::fprintf(stderr, "frame-fuzz: property violated at %s:%d: %s\n", __FILE__, __LINE__, \
                   #cond);                                                                     \
      __builtin_trap();                                                                        \
    }                                                                                          \
  } while (0)

// Read limits for fuzzing: the production nesting limit, a smaller traversal
// budget so that amplified messages are cheap to reject.
constexpr schema::ReadLimits kLimits{1u << 16, 64};

struct Walk {
  std::uint64_t sum = 0;
  void bytes(const kj::byte* p, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) sum = sum * 31 + p[i];
  }
  void text(capnp::Text::Reader t) {
    bytes(reinterpret_cast<const kj::byte*>(t.begin()), t.size());
  }
  void data(capnp::Data::Reader d) { bytes(d.begin(), d.size()); }

  template <class Address>  // Envelope::Destination or Envelope::Source
  void address(Address a) {
    sum += a.getWorker() + a.getIncarnation() + a.getActor();
  }

  void value(schema::Value::Reader v) {
    switch (v.which()) {
      case schema::Value::NULL_:
        break;
      case schema::Value::BOOL:
        sum += v.getBool();
        break;
      case schema::Value::INT:
        sum += static_cast<std::uint64_t>(v.getInt());
        break;
      case schema::Value::FLOAT: {
        const double d = v.getFloat();
        std::uint64_t u;
        std::memcpy(&u, &d, 8);
        sum += u;
        break;
      }
      case schema::Value::TEXT:
        text(v.getText());
        break;
      case schema::Value::DATA:
        data(v.getData());
        break;
      case schema::Value::LIST:
        for (auto e : v.getList()) value(e);
        break;
      case schema::Value::TUPLE:
        for (auto e : v.getTuple()) value(e);
        break;
      case schema::Value::MAP:
        for (auto e : v.getMap()) {
          value(e.getKey());
          value(e.getValue());
        }
        break;
      case schema::Value::SYMBOL:
        text(v.getSymbol());
        break;
      default:
        sum += 0xdead;
        break;  // a discriminant from the future
    }
  }

  void exit_reason(schema::ExitReason::Reader x) {
    switch (x.which()) {
      case schema::ExitReason::NORMAL:
      case schema::ExitReason::SHUTDOWN:
        break;
      case schema::ExitReason::EXCEPTION: {
        auto e = x.getException();
        text(e.getType());
        text(e.getMessage());
        text(e.getTraceback());
        text(e.getActor());
        break;
      }
      case schema::ExitReason::SIGNAL:
        sum +=
            static_cast<std::uint64_t>(x.getSignal().getNumber()) + x.getSignal().getCoreDumped();
        break;
      case schema::ExitReason::EXIT_CODE:
        sum += static_cast<std::uint64_t>(x.getExitCode());
        break;
      case schema::ExitReason::KILLED_BY_LIMIT:
        sum += static_cast<std::uint64_t>(x.getKilledByLimit().getKind());
        text(x.getKilledByLimit().getDetail());
        break;
      case schema::ExitReason::START_FAILURE:
        text(x.getStartFailure());
        break;
      case schema::ExitReason::READY_TIMEOUT:
        sum += x.getReadyTimeout();
        break;
      case schema::ExitReason::PROTOCOL_VIOLATION:
        text(x.getProtocolViolation());
        break;
      default:
        break;
    }
  }

  // Any pointer, generically: structs, lists of every element size.
  void any(capnp::AnyPointer::Reader p) {
    switch (p.getPointerType()) {
      case capnp::PointerType::NULL_:
      case capnp::PointerType::CAPABILITY:
        return;
      case capnp::PointerType::STRUCT:
        any_struct(p.getAs<capnp::AnyStruct>());
        return;
      case capnp::PointerType::LIST: {
        auto l = p.getAs<capnp::AnyList>();
        switch (l.getElementSize()) {
          case capnp::ElementSize::POINTER: {
            auto ps = l.as<capnp::List<capnp::AnyPointer>>();
            for (unsigned i = 0; i < ps.size(); ++i) any(ps[i]);
            return;
          }
          case capnp::ElementSize::INLINE_COMPOSITE: {
            auto ss = l.as<capnp::List<capnp::AnyStruct>>();
            for (unsigned i = 0; i < ss.size(); ++i) any_struct(ss[i]);
            return;
          }
          default: {
            auto raw = l.getRawBytes();
            bytes(raw.begin(), raw.size());
            return;
          }
        }
      }
    }
  }
  void any_struct(capnp::AnyStruct::Reader s) {
    auto d = s.getDataSection();
    bytes(d.begin(), d.size());
    auto ptrs = s.getPointerSection();
    for (unsigned i = 0; i < ptrs.size(); ++i) any(ptrs[i]);
  }

  void envelope(schema::Envelope::Reader e) {
    address(e.getDestination());
    address(e.getSource());
    sum += static_cast<std::uint64_t>(e.getKind()) + e.getCorrelationId() +
           static_cast<std::uint64_t>(e.getDeadlineNs()) + e.getSequence();
    text(e.getDestName());
    auto p = e.getPayload();
    switch (p.which()) {
      case schema::Envelope::Payload::NONE:
        break;
      case schema::Envelope::Payload::VALUE:
        value(p.getValue());
        break;
      case schema::Envelope::Payload::TYPED:
        sum += p.getTyped().getSchemaId();
        any(p.getTyped().getContent());
        break;
      case schema::Envelope::Payload::EXIT_REASON:
        exit_reason(p.getExitReason());
        break;
      case schema::Envelope::Payload::ERROR: {
        auto err = p.getError();
        sum += static_cast<std::uint64_t>(err.getCode());
        text(err.getMessage());
        exit_reason(err.getReason());
        break;
      }
      default:
        break;
    }
  }
};

// Reads `payload` through the generated readers and, generically, every
// pointer: through the checked reader (production limits) or, if
// plain_root() accepts it, through capnp::readMessageUnchecked.  Returns
// whether that read completed; `w` accumulates what it saw.
bool read_all(std::span<const std::byte> payload, const capnp::word* plain, Walk& w) {
  try {
    if (plain != nullptr) {
      w.envelope(capnp::readMessageUnchecked<schema::Envelope>(plain));
      w.any(capnp::readMessageUnchecked<capnp::AnyPointer>(plain));
      return true;
    }
    capnp::FlatArrayMessageReader r(kj::ArrayPtr<const capnp::word>(
        reinterpret_cast<const capnp::word*>(payload.data()), payload.size() / 8));
    w.envelope(r.getRoot<schema::Envelope>());
    w.any(r.getRoot<capnp::AnyPointer>());
    return true;
  } catch (const kj::Exception&) {
    return false;
  }
}

// The fast path's promise (schema/codec.hpp): a message plain_root() accepts
// reads unchecked exactly as the checked reader reads it, and never outside
// its bytes.  The message is copied into a heap block of exactly its size,
// so that ASan sees a read past its end.
void check_plain(std::span<const std::byte> payload) {
  if (payload.size() % 8 != 0 || payload.empty()) return;
  auto copy = std::make_unique<capnp::word[]>(payload.size() / 8);
  std::memcpy(copy.get(), payload.data(), payload.size());
  std::span<const std::byte> own{reinterpret_cast<const std::byte*>(copy.get()), payload.size()};
  const capnp::word* plain = schema::plain_root(own);
  if (plain == nullptr) return;
  ++stats().envelopes_plain;
  Walk fast, checked;
  const bool fast_ok = read_all(own, plain, fast);
  const bool checked_ok = read_all(own, nullptr, checked);
  FUZZ_CHECK(fast_ok == checked_ok);
  FUZZ_CHECK(fast.sum == checked.sum);
  // read_envelope (which takes the fast path here) agrees with the checked
  // validation at the same limits.
  const bool read_ok = !schema::read_envelope(own, {}, [](schema::Envelope::Reader) {});
  const bool valid = !schema::validate_envelope(own, {});
  FUZZ_CHECK(read_ok == valid);
}

void check_envelope(std::span<const std::byte> payload) {
  check_plain(payload);
  auto verdict = schema::validate_envelope(payload, kLimits);
  Walk w;
  // A handler's view: every field through the generated readers.
  auto typed = schema::read_message(payload, kLimits, [&](capnp::MessageReader& r) {
    w.envelope(r.getRoot<schema::Envelope>());
  });
  // Every pointer, whatever the schema says (unused union slots too).
  auto generic = schema::read_message(
      payload, kLimits, [&](capnp::MessageReader& r) { w.any(r.getRoot<capnp::AnyPointer>()); });
  if (verdict) {
    FUZZ_CHECK(!verdict->what.empty());
    ++stats().envelopes_rejected;
  } else {
    ++stats().envelopes_valid;
    // validate_envelope's promise: what it accepts, a handler can read.
    FUZZ_CHECK(!typed.has_value());
  }
  if (typed) FUZZ_CHECK(!typed->what.empty());
  if (generic) FUZZ_CHECK(!generic->what.empty());
  volatile std::uint64_t sink = w.sum;
  (void)sink;
}

// Pops everything the ring holds now.  Returns frames popped.
std::size_t drain(ipc::RingConsumer& c, const std::byte* data, std::size_t cap) {
  std::size_t popped = 0;
  for (;;) {
    ipc::Frame fr;
    const ipc::PopStatus s = c.try_peek(fr);
    if (s == ipc::PopStatus::empty) return popped;
    if (s == ipc::PopStatus::broken) {
      FUZZ_CHECK(c.broken() && c.fault().field != nullptr && c.fault().field[0] != '\0');
      FUZZ_CHECK(c.try_peek(fr) == ipc::PopStatus::broken);  // sticky
      ++stats().broken;
      return popped;
    }
    FUZZ_CHECK(s == ipc::PopStatus::ok);
    // Every pass ends: a frame takes at least kFrameAlign bytes of at most `cap`.
    FUZZ_CHECK(++popped <= cap / ipc::kFrameAlign);
    FUZZ_CHECK(fr.payload.data() >= data + sizeof(ipc::FrameHeader));
    FUZZ_CHECK(fr.payload.data() + fr.payload.size() <= data + cap);
    FUZZ_CHECK(fr.payload.size() <= c.max_payload());
    // The frame starts on a line of its own; its payload is 8-aligned (capnp).
    const std::byte* frame = fr.payload.data() - sizeof(ipc::FrameHeader);
    FUZZ_CHECK(static_cast<std::size_t>(frame - data) % ipc::kFrameAlign == 0);
    FUZZ_CHECK(reinterpret_cast<std::uintptr_t>(fr.payload.data()) % 8 == 0);
    FUZZ_CHECK(fr.kind != ipc::kPadKind);
    ++stats().frames;
    if (fr.kind == schema::kEnvelopeFrame) {
      check_envelope(fr.payload);
    } else {
      std::uint64_t sum = 0;
      for (std::byte b : fr.payload) sum += static_cast<std::uint8_t>(b);
      volatile std::uint64_t sink = sum;
      (void)sink;
    }
    c.release();
  }
}

// One exactly-sized ring block per capacity, reused across inputs.
std::byte* ring_block(std::size_t cap) {
  static std::unique_ptr<AlignedBuffer> blocks[8];
  const unsigned i = static_cast<unsigned>(__builtin_ctzll(cap) - 8);
  if (!blocks[i]) blocks[i] = std::make_unique<AlignedBuffer>(ipc::ring_footprint(cap));
  return blocks[i]->p;
}

}  // namespace
}  // namespace bulkhead::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* in, std::size_t size) {
  using namespace bulkhead;
  using namespace bulkhead::fuzz;
  if (size < kHeaderBytes) return 0;
  ++stats().inputs;
  const std::size_t cap = capacity_of(in[0]);
  std::uint64_t head = 0, tail = 0;
  std::memcpy(&head, in + 1, 8);
  std::memcpy(&tail, in + 9, 8);
  const std::uint8_t flags = in[17];
  // The head may be anywhere, even just below 2^64 (a hostile peer's choice).

  std::byte* block = ring_block(cap);
  std::span<std::byte> mem{block, ipc::ring_footprint(cap)};
  ipc::init_ring(mem, cap);
  auto* ctl = reinterpret_cast<ipc::RingControl*>(block);
  std::byte* data = block + sizeof(ipc::RingControl);
  const std::size_t data_bytes = std::min(cap, size - kHeaderBytes);
  std::memcpy(data, in + kHeaderBytes, data_bytes);
  ctl->head.store(head);
  ctl->tail.store(tail);

  ipc::RingConsumer c(mem, "fuzz");
  drain(c, data, cap);

  // The script: the producer keeps scribbling while we keep popping.
  const std::uint8_t* op = in + kHeaderBytes + data_bytes;
  const std::uint8_t* end = in + size;
  for (std::size_t n = 0; n < kMaxOps && end - op >= static_cast<std::ptrdiff_t>(kOpBytes);
       ++n, op += kOpBytes) {
    std::uint64_t arg = 0;
    std::memcpy(&arg, op + 1, 8);
    switch (op[0] % 4) {
      case 0:
        ctl->tail.store(arg);
        break;
      case 1: {
        // A stamp near the consumer's head: right for its position, or for
        // a neighbour, an earlier lap or a later one.
        const std::uint64_t h = ctl->head.load() & ~std::uint64_t{ipc::kFrameAlign - 1};
        const std::uint64_t at = h + ipc::kFrameAlign * (arg % 8);
        const std::uint64_t stamps[] = {ipc::stamp_of(at), ipc::stamp_of(at - cap),
                                        ipc::stamp_of(at + cap), ipc::stamp_of(at + 16), arg};
        const std::uint64_t stamp = stamps[(arg >> 8) % 5];
        std::memcpy(data + (at & (cap - 1)), &stamp, 8);
        break;
      }
      case 2: {
        const std::size_t at = static_cast<std::size_t>((arg >> 40) % (cap - 7));
        std::memcpy(data + at, &arg, 8);
        break;
      }
      default:
        drain(c, data, cap);
        break;
    }
  }
  drain(c, data, cap);

  if (flags & 1) {
    // A producer attaching to whatever indices are there now: it must refuse
    // or write inside the ring, and what it writes must read back.
    ipc::RingProducer p(mem, "fuzz");
    std::byte payload[300];
    for (std::size_t i = 0; i < sizeof payload; ++i) payload[i] = static_cast<std::byte>(i);
    for (std::size_t k = 0; k < 8; ++k) {
      const std::size_t len = (head >> (k * 8)) % sizeof payload;
      if (p.try_push(7, std::span(payload, len)) == ipc::PushStatus::ok) ++stats().pushed;
    }
    ipc::RingConsumer again(mem, "fuzz2");
    drain(again, data, cap);
  }
  return 0;
}
