// tests/fuzz/frame_fuzz.hpp: the frame-fuzz input format, its seed generator
// and mutator.
//
// An input is a whole ring as a hostile producer could leave it, plus a
// script of later scribbles:
//
//   offset 0   u8   capacity selector: capacity = 256 << (b % 8)  (256..32 KiB)
//   offset 1   u64  head (little endian), as the consumer finds it at attach
//   offset 9   u64  tail
//   offset 17  u8   flags: bit 0 = afterwards attach a producer and push
//   offset 18  capacity bytes of ring data (missing bytes are zero)
//   then       up to kMaxOps records of 9 bytes {u8 op, u64 arg}:
//                op%4 == 0  tail = arg
//                op%4 == 1  tail += arg % (capacity + 16)      (may misalign)
//                op%4 == 2  write arg (8 bytes) at data offset (arg>>40) % capacity
//                op%4 == 3  pop everything now
//
// The target (frame_fuzz.cpp) formats a ring of exactly that size on the heap
// (so ASan sees any read past it), applies the input, and pops everything; a
// frame of kind 1 goes through validate_envelope and a read_message that
// walks every field.  The seed generator builds real rings with a real
// producer: Envelopes of every payload kind (some multi-segment, with far
// pointers), raw frames, pad frames at the wrap, partly consumed.
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ipc/ring.hpp"
#include "schema/codec.hpp"

namespace bulkhead::fuzz {

inline constexpr std::size_t kHeaderBytes = 18;
inline constexpr std::size_t kOpBytes = 9;
inline constexpr std::size_t kMaxOps = 64;

inline std::size_t capacity_of(std::uint8_t selector) {
  return std::size_t{256} << (selector % 8);
}

using Input = std::vector<std::uint8_t>;
using Rng = std::mt19937_64;

inline void put_u64(std::uint8_t* at, std::uint64_t v) {
  std::memcpy(at, &v, 8);
}

// --- random Envelopes -------------------------------------------------------

inline std::string random_text(Rng& r, std::size_t max) {
  std::string s(r() % (max + 1), 'a');
  for (auto& c : s) c = static_cast<char>('a' + r() % 26);
  return s;
}

inline void random_value(schema::Value::Builder v, Rng& r, int depth) {
  const unsigned pick = static_cast<unsigned>(r() % (depth > 0 ? 10 : 7));
  switch (pick) {
    case 0:
      v.setNull();
      break;
    case 1:
      v.setBool(r() & 1);
      break;
    case 2:
      v.setInt(static_cast<std::int64_t>(r()));
      break;
    case 3:
      v.setFloat(static_cast<double>(r() % 100000) / 7.0);
      break;
    case 4:
      v.setText(random_text(r, 40));
      break;
    case 5: {
      auto d = v.initData(static_cast<unsigned>(r() % 64));
      for (auto& b : d) b = static_cast<kj::byte>(r());
      break;
    }
    case 6:
      v.setSymbol(random_text(r, 12));
      break;
    case 7: {
      auto l = v.initList(static_cast<unsigned>(r() % 5));
      for (auto e : l) random_value(e, r, depth - 1);
      break;
    }
    case 8: {
      auto l = v.initTuple(static_cast<unsigned>(r() % 4));
      for (auto e : l) random_value(e, r, depth - 1);
      break;
    }
    default: {
      auto m = v.initMap(static_cast<unsigned>(r() % 4));
      for (auto e : m) {
        random_value(e.initKey(), r, 0);
        random_value(e.initValue(), r, depth - 1);
      }
      break;
    }
  }
}

inline void random_exit_reason(schema::ExitReason::Builder x, Rng& r) {
  switch (r() % 9) {
    case 0:
      x.setNormal();
      break;
    case 1:
      x.setShutdown();
      break;
    case 2: {
      auto e = x.initException();
      e.setType(random_text(r, 20));
      e.setMessage(random_text(r, 60));
      e.setTraceback(random_text(r, 100));
      e.setActor(random_text(r, 10));
      break;
    }
    case 3: {
      auto s = x.initSignal();
      s.setNumber(static_cast<std::int32_t>(r() % 64));
      s.setCoreDumped(r() & 1);
      break;
    }
    case 4:
      x.setExitCode(static_cast<std::int32_t>(r()));
      break;
    case 5: {
      auto l = x.initKilledByLimit();
      l.setKind(r() & 1 ? schema::ExitReason::LimitKind::CPU
                        : schema::ExitReason::LimitKind::MEMORY);
      l.setDetail(random_text(r, 30));
      break;
    }
    case 6:
      x.setStartFailure(random_text(r, 30));
      break;
    case 7:
      x.setReadyTimeout(static_cast<std::uint32_t>(r()));
      break;
    default:
      x.setProtocolViolation(random_text(r, 30));
      break;
  }
}

inline void random_ref(schema::ActorRef::Builder a, Rng& r) {
  a.setNode(static_cast<std::uint32_t>(r() % 4));
  a.setWorker(static_cast<std::uint32_t>(r() % 100));
  a.setIncarnation(static_cast<std::uint32_t>(r() % 10));
  a.setActor(static_cast<std::uint32_t>(r() % 1000));
}

template <class Address>  // Envelope::Destination or Envelope::Source
void random_address(Address a, Rng& r) {
  a.setWorker(static_cast<std::uint32_t>(r() % 100));
  a.setIncarnation(static_cast<std::uint32_t>(r() % 10));
  a.setActor(static_cast<std::uint32_t>(r() % 1000));
}

inline void random_envelope(schema::Envelope::Builder e, Rng& r) {
  random_address(e.initDestination(), r);
  if (r() % 4 != 0) random_address(e.initSource(), r);
  e.setKind(static_cast<schema::Kind>(r() % 7));
  e.setCorrelationId(r());
  e.setDeadlineNs(static_cast<std::int64_t>(r() >> 1));
  if (r() & 1) e.setDestName(random_text(r, 24));
  e.setSequence(r());
  auto p = e.initPayload();
  switch (r() % 5) {
    case 0:
      p.setNone();
      break;
    case 1:
      random_value(p.initValue(), r, 4);
      break;
    case 2: {
      auto t = p.initTyped();
      t.setSchemaId(r());
      auto c = t.getContent();
      switch (r() % 3) {
        case 0:
          random_ref(c.initAs<schema::ActorRef>(), r);
          break;
        case 1:
          random_value(c.initAs<schema::Value>(), r, 3);
          break;
        default: {
          auto l = c.initAs<capnp::List<capnp::Text>>(static_cast<unsigned>(r() % 4));
          for (unsigned i = 0; i < l.size(); ++i) l.set(i, random_text(r, 10));
        }
      }
      break;
    }
    case 3:
      random_exit_reason(p.initExitReason(), r);
      break;
    default: {
      auto err = p.initError();
      err.setCode(static_cast<schema::ErrorCode>(r() % 7));
      err.setMessage(random_text(r, 40));
      random_exit_reason(err.initReason(), r);
    }
  }
}

// A flat Envelope; a small first segment forces several segments and far
// pointers now and then.
inline kj::Array<capnp::word> random_flat_envelope(Rng& r) {
  const unsigned first_words = r() % 3 == 0 ? 4 + static_cast<unsigned>(r() % 16) : 1024;
  capnp::MallocMessageBuilder b(first_words, capnp::AllocationStrategy::FIXED_SIZE);
  random_envelope(b.initRoot<schema::Envelope>(), r);
  return capnp::messageToFlatArray(b);
}

// --- seeds ------------------------------------------------------------------

// Aligned heap memory of exactly `bytes` bytes.
struct AlignedBuffer {
  explicit AlignedBuffer(std::size_t bytes)
      : size(bytes), p(static_cast<std::byte*>(std::aligned_alloc(64, bytes))) {}
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer() { std::free(p); }
  std::span<std::byte> span() const { return {p, size}; }
  std::size_t size;
  std::byte* p;
};

// A ring filled by a real producer, partly drained by a real consumer.
inline Input make_seed(Rng& r) {
  const std::uint8_t selector = static_cast<std::uint8_t>(r() % 8);
  const std::size_t cap = capacity_of(selector);
  AlignedBuffer mem(ipc::ring_footprint(cap));
  ipc::init_ring(mem.span(), cap);
  auto* ctl = reinterpret_cast<ipc::RingControl*>(mem.p);
  // Start anywhere (so frames wrap behind pad frames), frame-aligned.
  const std::uint64_t start =
      (r() % 1000) * cap + ipc::kFrameAlign * (r() % (cap / ipc::kFrameAlign));
  ctl->head.store(start);
  ctl->tail.store(start);
  ipc::RingProducer p(mem.span(), "seed");
  ipc::RingConsumer c(mem.span(), "seed");
  const unsigned frames = 1 + static_cast<unsigned>(r() % 40);
  for (unsigned i = 0; i < frames; ++i) {
    if (r() % 4 != 0) {
      auto flat = random_flat_envelope(r);
      auto bytes = flat.asBytes();
      if (p.try_push(schema::kEnvelopeFrame, {reinterpret_cast<const std::byte*>(bytes.begin()),
                                              bytes.size()}) != ipc::PushStatus::ok) {
        break;
      }
    } else {
      std::vector<std::byte> raw(r() % 200);
      for (auto& b : raw) b = static_cast<std::byte>(r());
      if (p.try_push(2 + static_cast<std::uint32_t>(r() % 8), raw) != ipc::PushStatus::ok) break;
    }
    // Consume now and then so head moves and the producer wraps.
    if (r() % 3 == 0) {
      ipc::Frame fr;
      if (c.try_peek(fr) == ipc::PopStatus::ok) c.release();
    }
  }
  Input in(kHeaderBytes + cap);
  in[0] = selector;
  put_u64(&in[1], ctl->head.load());
  put_u64(&in[9], ctl->tail.load());
  in[17] = static_cast<std::uint8_t>(r() % 2);
  std::memcpy(&in[kHeaderBytes], mem.p + sizeof(ipc::RingControl), cap);
  // A short script: headers get stamped near the head, tail moves (the
  // consumer must not care) or bytes change.
  const unsigned ops = static_cast<unsigned>(r() % 4);
  for (unsigned i = 0; i < ops; ++i) {
    std::uint8_t rec[kOpBytes];
    rec[0] = static_cast<std::uint8_t>(r() % 4);
    put_u64(rec + 1, r() % 2 ? ctl->tail.load() + 8 * (r() % 16) : r());
    in.insert(in.end(), rec, rec + kOpBytes);
  }
  return in;
}

// --- mutations ----------------------------------------------------------------

inline std::uint64_t interesting(Rng& r) {
  static constexpr std::uint64_t kValues[] = {
      0,          1,          7,      8,         0x7f,       0x80,
      0xff,       0x100,      0x7fff, 0xffff,    0x7fffffff, 0x80000000,
      0xffffffff, 0xfffffff8, ~0ull,  ~0ull - 7, 1ull << 32, 1ull << 63};
  return kValues[r() % (sizeof kValues / sizeof kValues[0])];
}

// Applies a few random mutations to `in`, sometimes splicing from `other`.
inline void mutate(Input& in, Rng& r, const Input& other) {
  if (in.size() < kHeaderBytes) in.resize(kHeaderBytes);
  const unsigned n = 1 + static_cast<unsigned>(r() % 6);
  for (unsigned k = 0; k < n; ++k) {
    const std::size_t size = in.size();
    switch (r() % 15) {
      case 12:
      case 13:
      case 14: {  // flip bits in the live part of the ring (frames the consumer will read)
        std::uint64_t h, t;
        std::memcpy(&h, &in[1], 8);
        std::memcpy(&t, &in[9], 8);
        const std::uint64_t cap = capacity_of(in[0]);
        if (t <= h || t - h > cap || size < kHeaderBytes + cap) break;
        const unsigned flips = 1 + static_cast<unsigned>(r() % 3);
        for (unsigned f = 0; f < flips; ++f) {
          const std::size_t at = kHeaderBytes + static_cast<std::size_t>((h + r() % (t - h)) % cap);
          if (r() % 2) {
            in[at] ^= static_cast<std::uint8_t>(1u << (r() % 8));
          } else {
            in[at] = static_cast<std::uint8_t>(interesting(r));
          }
        }
        break;
      }
      case 0:  // flip a bit anywhere
        in[r() % size] ^= static_cast<std::uint8_t>(1u << (r() % 8));
        break;
      case 1:  // flip a bit in the ring data (where frames and messages are)
        if (size > kHeaderBytes) {
          in[kHeaderBytes + r() % (size - kHeaderBytes)] ^=
              static_cast<std::uint8_t>(1u << (r() % 8));
        }
        break;
      case 2:  // an interesting byte
        in[r() % size] = static_cast<std::uint8_t>(interesting(r));
        break;
      case 3:  // an interesting 32-bit word at an aligned data offset (frame headers, pointers)
        if (size >= kHeaderBytes + 8) {
          const std::size_t at = kHeaderBytes + 4 * (r() % ((size - kHeaderBytes) / 4));
          const auto v = static_cast<std::uint32_t>(r() % 2 ? interesting(r) : r());
          std::memcpy(&in[at], &v, std::min<std::size_t>(4, size - at));
        }
        break;
      case 4:  // a random 64-bit word at an aligned data offset (Cap'n Proto pointers)
        if (size >= kHeaderBytes + 8) {
          const std::size_t at = kHeaderBytes + 8 * (r() % ((size - kHeaderBytes) / 8));
          const std::uint64_t v = r() % 2 ? interesting(r) : r();
          std::memcpy(&in[at], &v, std::min<std::size_t>(8, size - at));
        }
        break;
      case 5: {  // head
        std::uint64_t h;
        std::memcpy(&h, &in[1], 8);
        const std::uint64_t cap = capacity_of(in[0]);
        const std::uint64_t choices[] = {h + 8, h - 8,          h + cap, h - cap,
                                         h + 1, interesting(r), r()};
        put_u64(&in[1], choices[r() % 7]);
        break;
      }
      case 6: {  // tail
        std::uint64_t t;
        std::memcpy(&t, &in[9], 8);
        const std::uint64_t cap = capacity_of(in[0]);
        const std::uint64_t choices[] = {t + 8, t - 8,          t + cap, t + cap + 8,
                                         t + 4, interesting(r), r()};
        put_u64(&in[9], choices[r() % 7]);
        break;
      }
      case 7:  // another capacity
        in[0] = static_cast<std::uint8_t>(r());
        break;
      case 8:  // truncate
        in.resize(r() % (size + 1));
        if (in.size() < kHeaderBytes) in.resize(kHeaderBytes);
        break;
      case 9: {  // extend with random bytes (often: script records)
        const std::size_t extra = 1 + r() % 64;
        for (std::size_t i = 0; i < extra; ++i) in.push_back(static_cast<std::uint8_t>(r()));
        break;
      }
      case 10:  // splice a chunk of another input in
        if (other.size() > kHeaderBytes && size > kHeaderBytes) {
          const std::size_t len = 1 + r() % 256;
          const std::size_t from = kHeaderBytes + r() % (other.size() - kHeaderBytes);
          const std::size_t to = kHeaderBytes + r() % (size - kHeaderBytes);
          const std::size_t n2 = std::min({len, other.size() - from, size - to});
          std::memcpy(&in[to], &other[from], n2);
        }
        break;
      default:  // a random run of bytes
        if (size > kHeaderBytes) {
          const std::size_t at = kHeaderBytes + r() % (size - kHeaderBytes);
          const std::size_t len = std::min<std::size_t>(size - at, 1 + r() % 32);
          for (std::size_t i = 0; i < len; ++i) in[at + i] = static_cast<std::uint8_t>(r());
        }
        break;
    }
  }
}

// What the target saw, for the driver's summary and self-check.
struct Stats {
  std::uint64_t inputs = 0;
  std::uint64_t frames = 0;
  std::uint64_t envelopes_valid = 0;
  std::uint64_t envelopes_rejected = 0;
  std::uint64_t envelopes_plain = 0;  // taken by the unchecked fast path (plain_root)
  std::uint64_t broken = 0;
  std::uint64_t pushed = 0;
};
Stats& stats();

}  // namespace bulkhead::fuzz
