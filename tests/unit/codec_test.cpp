// The codec: Envelopes built in place in a ring frame and read in place, the
// heap fallback for big messages, and hostile bytes turned into DecodeErrors
// (never a crash, never an unbounded walk).
#include "schema/codec.hpp"

#include <capnp/any.h>
#include <capnp/schema.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "tests/ring_fixture.hpp"

namespace bulkhead {
namespace {

using ipc::PopStatus;
using ipc::PushStatus;
using schema::DecodeError;
using schema::Envelope;
using schema::ReadLimits;
using schema::Value;
using testing::RingFixture;

// 8-byte aligned storage for a flat message we want to corrupt.
struct Words {
  std::vector<std::uint64_t> w;
  explicit Words(kj::ArrayPtr<const capnp::word> src) : w(src.size()) {
    std::memcpy(w.data(), src.begin(), src.size() * sizeof(capnp::word));
  }
  std::span<const std::byte> bytes() const {
    return {reinterpret_cast<const std::byte*>(w.data()), w.size() * 8};
  }
  std::span<const std::byte> first_bytes(std::size_t n) const { return bytes().first(n); }
  std::byte* raw() { return reinterpret_cast<std::byte*>(w.data()); }
};

template <class Fill>
Words flat_envelope(Fill&& fill) {
  capnp::MallocMessageBuilder b;
  fill(b.initRoot<Envelope>());
  auto flat = capnp::messageToFlatArray(b);
  return Words(flat);
}

void fill_ref(schema::ActorRef::Builder r, std::uint32_t base) {
  r.setNode(base);
  r.setWorker(base + 1);
  r.setIncarnation(base + 2);
  r.setActor(base + 3);
}

template <class Address>  // Envelope::Destination or Envelope::Source
void fill_address(Address r, std::uint32_t base) {
  r.setWorker(base + 1);
  r.setIncarnation(base + 2);
  r.setActor(base + 3);
}

template <class Address>
void expect_address(Address r, std::uint32_t base) {
  EXPECT_EQ(r.getWorker(), base + 1);
  EXPECT_EQ(r.getIncarnation(), base + 2);
  EXPECT_EQ(r.getActor(), base + 3);
}

std::vector<kj::byte> pattern(std::size_t n, unsigned salt) {
  std::vector<kj::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<kj::byte>(i * 7 + salt);
  return v;
}

// A sample call: every scalar field set, a map Value with text, data and a
// nested list.
void fill_sample(Envelope::Builder e, const std::string& dest_name, std::size_t data_bytes) {
  fill_address(e.initDestination(), 10);
  fill_address(e.initSource(), 20);
  e.setKind(schema::Kind::CALL);
  e.setCorrelationId(0x1234567890abcdefULL);
  e.setDeadlineNs(-42);
  e.setDestName(dest_name);
  e.setSequence(99);
  auto map = e.initPayload().initValue().initMap(3);
  map[0].initKey().setSymbol("text");
  map[0].initValue().setText("hello, ring");
  map[1].initKey().setSymbol("data");
  auto data = pattern(data_bytes, 3);
  map[1].initValue().setData(kj::arrayPtr(data.data(), data.size()));
  map[2].initKey().setInt(-7);
  auto list = map[2].initValue().initList(3);
  list[0].setBool(true);
  list[1].setFloat(2.5);
  list[2].initTuple(1)[0].setNull();
}

// Checks every field written by fill_sample; returns the address of the data
// blob (to tell where the reader reads from).
const kj::byte* expect_sample(Envelope::Reader e, const std::string& dest_name,
                              std::size_t data_bytes) {
  expect_address(e.getDestination(), 10);
  expect_address(e.getSource(), 20);
  EXPECT_EQ(e.getKind(), schema::Kind::CALL);
  EXPECT_EQ(e.getCorrelationId(), 0x1234567890abcdefULL);
  EXPECT_EQ(e.getDeadlineNs(), -42);
  EXPECT_EQ(std::string(e.getDestName().cStr()), dest_name);
  EXPECT_EQ(e.getSequence(), 99u);
  EXPECT_TRUE(e.getPayload().isValue());
  auto map = e.getPayload().getValue().getMap();
  EXPECT_EQ(map.size(), 3u);
  if (map.size() != 3) return nullptr;
  EXPECT_EQ(std::string(map[0].getKey().getSymbol().cStr()), "text");
  EXPECT_EQ(std::string(map[0].getValue().getText().cStr()), "hello, ring");
  auto data = map[1].getValue().getData();
  auto want = pattern(data_bytes, 3);
  EXPECT_EQ(data.size(), data_bytes);
  EXPECT_TRUE(data.size() == data_bytes && std::memcmp(data.begin(), want.data(), data_bytes) == 0);
  EXPECT_EQ(map[2].getKey().getInt(), -7);
  auto list = map[2].getValue().getList();
  EXPECT_EQ(list.size(), 3u);
  if (list.size() == 3) {
    EXPECT_TRUE(list[0].getBool());
    EXPECT_EQ(list[1].getFloat(), 2.5);
    EXPECT_TRUE(list[2].getTuple()[0].isNull());
  }
  return data.begin();
}

// Raw views of a struct (its data section is where it lives in memory).
template <class B>
capnp::AnyStruct::Builder any_builder(B b) {
  return capnp::AnyStruct::Builder(kj::mv(b));
}
template <class R>
capnp::AnyStruct::Reader any_reader(R r) {
  return capnp::AnyStruct::Reader(kj::mv(r));
}

bool inside(const void* p, const std::byte* begin, std::size_t len) {
  auto* b = static_cast<const std::byte*>(p);
  return b >= begin && b < begin + len;
}

std::optional<DecodeError> read_sample(std::span<const std::byte> bytes,
                                       const ReadLimits& limits = {}) {
  return schema::read_message(bytes, limits, [](capnp::MessageReader& r) {
    (void)expect_sample(r.getRoot<Envelope>(), "registry", 100);
  });
}

void expect_error_containing(const std::optional<DecodeError>& err, const std::string& what) {
  ASSERT_TRUE(err.has_value()) << "expected a DecodeError containing '" << what << "'";
  EXPECT_NE(err->what.find(what), std::string::npos) << err->what;
}

// Reads a Value tree recursively through the generated readers (which apply
// the nesting and traversal limits); returns the number of nodes.
std::uint64_t walk_value(Value::Reader v) {
  std::uint64_t n = 1;
  switch (v.which()) {
    case Value::LIST:
      for (auto e : v.getList()) n += walk_value(e);
      break;
    case Value::TUPLE:
      for (auto e : v.getTuple()) n += walk_value(e);
      break;
    case Value::MAP:
      for (auto e : v.getMap()) n += walk_value(e.getKey()) + walk_value(e.getValue());
      break;
    case Value::TEXT:
      n += v.getText().size();
      break;
    case Value::DATA:
      n += v.getData().size();
      break;
    default:
      break;
  }
  return n;
}

// --- in place, through a ring ----------------------------------------------------

TEST(Codec, EnvelopeIsBuiltInPlaceInARingFrameAndReadInPlace) {
  constexpr std::size_t kCap = 1 << 16;
  RingFixture f(kCap);
  ipc::RingProducer p(f.ring_mem(), "codec");
  ipc::RingConsumer c(f.ring_mem(), "codec");
  const std::byte* built_at = nullptr;
  auto st = schema::send_message(p, schema::kEnvelopeFrame, 2048, [&](schema::FlatBuilder& b) {
    auto e = b.init_root<Envelope>();
    fill_sample(e, "registry", 100);
    built_at = reinterpret_cast<const std::byte*>(any_builder(e).getDataSection().begin());
  });
  ASSERT_EQ(st, PushStatus::ok);
  EXPECT_TRUE(inside(built_at, f.data(), kCap)) << "the builder wrote into ring memory";
  ipc::Frame fr;
  ASSERT_EQ(c.try_peek(fr), PopStatus::ok);
  EXPECT_EQ(fr.kind, schema::kEnvelopeFrame);
  EXPECT_TRUE(inside(built_at, fr.payload.data(), fr.payload.size()))
      << "the message was built inside its own frame, not copied there";
  EXPECT_LT(fr.payload.size(), 2048u) << "only the used part is published";
  EXPECT_FALSE(schema::validate_envelope(fr.payload).has_value());
  const kj::byte* data_at = nullptr;
  const void* root_at = nullptr;
  auto err = schema::read_message(fr.payload, {}, [&](capnp::MessageReader& r) {
    auto e = r.getRoot<Envelope>();
    root_at = any_reader(e).getDataSection().begin();
    data_at = expect_sample(e, "registry", 100);
  });
  ASSERT_FALSE(err.has_value()) << err->what;
  EXPECT_EQ(root_at, static_cast<const void*>(built_at)) << "read where it was built";
  EXPECT_TRUE(inside(data_at, fr.payload.data(), fr.payload.size()))
      << "the payload is read from ring memory, not from a copy";
  c.release();
  EXPECT_EQ(c.try_peek(fr), PopStatus::empty);
}

TEST(Codec, FlatBuilderLeavesTheFinishedMessageIntactWhenDestroyed) {
  alignas(8) std::byte area[1024];
  std::size_t n = 0;
  {
    schema::FlatBuilder b(area);
    fill_sample(b.init_root<Envelope>(), "registry", 100);
    n = b.finish();
    ASSERT_GT(n, 8u);
    EXPECT_FALSE(read_sample(std::span(area).first(n)).has_value()) << "intact before";
  }
  auto err = read_sample(std::span(area).first(n));
  EXPECT_FALSE(err.has_value()) << err->what;
  std::uint64_t root = 0;
  std::memcpy(&root, area + 8, 8);
  EXPECT_NE(root, 0u) << "the root pointer of the published message was zeroed";
}

TEST(Codec, FlatBuilderFinishWritesAOneSegmentTable) {
  alignas(8) std::byte area[512];
  schema::FlatBuilder b(area);
  b.init_root<Envelope>().setCorrelationId(5);
  const std::size_t n = b.finish();
  ASSERT_GT(n, 8u);
  EXPECT_EQ(n % 8, 0u);
  std::uint32_t table[2];
  std::memcpy(table, area, sizeof table);
  EXPECT_EQ(table[0], 0u) << "segment count - 1";
  EXPECT_EQ(table[1] * 8u + 8u, n);
  auto err = schema::read_message(std::span(area).first(n), {}, [](capnp::MessageReader& r) {
    EXPECT_EQ(r.getRoot<Envelope>().getCorrelationId(), 5u);
  });
  EXPECT_FALSE(err.has_value());
}

TEST(Codec, MessageBiggerThanTheFirstSegmentGoesThroughTheHeapAndArrives) {
  RingFixture f(1 << 16);
  ipc::RingProducer p(f.ring_mem(), "codec");
  ipc::RingConsumer c(f.ring_mem(), "codec");
  const std::string big_name(3000, 'n');
  auto st = schema::send_message(p, schema::kEnvelopeFrame, 128, [&](schema::FlatBuilder& b) {
    fill_sample(b.init_root<Envelope>(), big_name, 5000);
    EXPECT_EQ(b.finish(), 0u) << "does not fit in 128 bytes";
  });
  ASSERT_EQ(st, PushStatus::ok);
  ipc::Frame fr;
  ASSERT_EQ(c.try_peek(fr), PopStatus::ok);
  EXPECT_GT(fr.payload.size(), 8000u);
  std::uint32_t segments_minus_one = 0;
  std::memcpy(&segments_minus_one, fr.payload.data(), 4);
  EXPECT_GE(segments_minus_one, 1u) << "the heap form keeps its several segments";
  EXPECT_FALSE(schema::validate_envelope(fr.payload).has_value());
  auto err = schema::read_message(fr.payload, {}, [&](capnp::MessageReader& r) {
    (void)expect_sample(r.getRoot<Envelope>(), big_name, 5000);
  });
  EXPECT_FALSE(err.has_value()) << err->what;
  c.release();
  EXPECT_EQ(c.try_peek(fr), PopStatus::empty) << "exactly one frame was published";
}

TEST(Codec, SendMessageReportsFullAndTooBigWithoutPublishing) {
  RingFixture f(1024);
  ipc::RingProducer p(f.ring_mem(), "codec");
  ipc::RingConsumer c(f.ring_mem(), "codec");
  int fills = 0;
  auto fill = [&](schema::FlatBuilder& b) {
    ++fills;
    b.init_root<Envelope>().setSequence(1);
  };
  EXPECT_EQ(schema::send_message(p, 1, p.max_payload() + 8, fill), PushStatus::too_big);
  EXPECT_EQ(fills, 0);
  std::vector<std::byte> filler(400);
  ASSERT_EQ(p.try_push(9, filler), PushStatus::ok);
  ASSERT_EQ(p.try_push(9, filler), PushStatus::ok);
  EXPECT_EQ(schema::send_message(p, 1, 300, fill), PushStatus::full);
  EXPECT_EQ(fills, 0) << "nothing is built when there is no room";
  ipc::Frame fr;
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(c.try_peek(fr), PopStatus::ok);
    EXPECT_EQ(fr.kind, 9u);
    c.release();
  }
  EXPECT_EQ(c.try_peek(fr), PopStatus::empty);
}

// --- hostile bytes ---------------------------------------------------------------

TEST(CodecDecode, MisalignedOrOddLengthBytesAreRefusedUpFront) {
  auto msg = flat_envelope([](Envelope::Builder e) { e.setSequence(1); });
  std::vector<std::uint64_t> shifted(msg.w.size() + 1);
  auto* raw = reinterpret_cast<std::byte*>(shifted.data()) + 4;
  std::memcpy(raw, msg.w.data(), msg.w.size() * 8);
  expect_error_containing(schema::validate_envelope({raw, msg.w.size() * 8}), "not 8-byte aligned");
  expect_error_containing(schema::validate_envelope(msg.first_bytes(12)), "length 12");
  expect_error_containing(schema::validate_envelope(msg.first_bytes(0)), "length 0");
}

TEST(CodecDecode, GarbageBytesAreADecodeErrorNeverACrash) {
  std::vector<std::uint64_t> ones(16, ~0ULL);
  std::span<const std::byte> bytes{reinterpret_cast<const std::byte*>(ones.data()), 128};
  auto err = schema::validate_envelope(bytes);
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->what.rfind("invalid Cap'n Proto message: ", 0), 0u) << err->what;

  // Many random buffers, some with a plausible one-segment table in front.
  std::mt19937_64 rng(12345);
  int errors = 0;
  for (int i = 0; i < 3000; ++i) {
    std::vector<std::uint64_t> junk(1 + rng() % 64);
    for (auto& w : junk) w = rng();
    if (i % 2 == 0) junk[0] = (static_cast<std::uint64_t>(junk.size() - 1) << 32);
    if (i % 4 == 0 && junk.size() > 1) junk[1] &= 0x0000ffff'fffffffcULL;  // struct root
    std::span<const std::byte> b{reinterpret_cast<const std::byte*>(junk.data()), junk.size() * 8};
    auto e = schema::read_message(b, {}, [](capnp::MessageReader& r) {
      auto env = r.getRoot<Envelope>();
      (void)env.getDestName();
      if (env.getPayload().isValue()) (void)walk_value(env.getPayload().getValue());
    });
    if (e) {
      ++errors;
      EXPECT_EQ(e->what.rfind("invalid Cap'n Proto message: ", 0), 0u) << e->what;
    }
    (void)schema::validate_envelope(b);
  }
  EXPECT_GT(errors, 1000) << "random bytes are mostly refused";
}

TEST(CodecDecode, TruncatedMessageIsADecodeError) {
  auto msg = flat_envelope([](Envelope::Builder e) { fill_sample(e, "registry", 100); });
  ASSERT_FALSE(read_sample(msg.bytes()).has_value());
  for (std::size_t keep = 8; keep < msg.w.size() * 8; keep += 8) {
    auto err = schema::validate_envelope(msg.first_bytes(keep));
    ASSERT_TRUE(err.has_value()) << "accepted a message cut to " << keep << " bytes";
    EXPECT_NE(err->what.find("ends prematurely"), std::string::npos) << err->what;
    expect_error_containing(read_sample(msg.first_bytes(keep)), "ends prematurely");
  }
}

TEST(CodecDecode, BadSegmentTableIsADecodeError) {
  auto msg = flat_envelope([](Envelope::Builder e) { fill_sample(e, "registry", 100); });
  const std::uint32_t words = static_cast<std::uint32_t>(msg.w.size() - 1);
  auto with_table = [&](std::uint32_t count_minus_one, std::uint32_t size0) {
    Words m = msg;
    std::uint32_t t[2] = {count_minus_one, size0};
    std::memcpy(m.raw(), t, sizeof t);
    return m;
  };
  // First segment larger than the bytes we have.
  expect_error_containing(schema::validate_envelope(with_table(0, words + 1).bytes()),
                          "ends prematurely");
  expect_error_containing(schema::validate_envelope(with_table(0, 0xffffffffu).bytes()),
                          "ends prematurely");
  // A table claiming more segments than there are bytes for.
  expect_error_containing(schema::validate_envelope(with_table(1000, 1).bytes()),
                          "ends prematurely");
  // A count far beyond anything the bytes can hold (the table alone would
  // need 16 GiB).
  expect_error_containing(schema::validate_envelope(with_table(0xfffffffeu, 1).bytes()),
                          "in segment table");
  // A zero-sized first segment has no root pointer.
  expect_error_containing(schema::validate_envelope(with_table(0, 0).first_bytes(8)),
                          "root pointer");
}

TEST(CodecDecode, NestingDeeperThanTheLimitIsADecodeError) {
  constexpr int kDepth = 20;  // each level costs two: the list and its element
  auto msg = flat_envelope([&](Envelope::Builder e) {
    auto v = e.initPayload().initValue();
    for (int i = 0; i < kDepth; ++i) v = v.initList(1)[0];
    v.setInt(7);
  });
  auto walk = [](capnp::MessageReader& r) {
    EXPECT_EQ(walk_value(r.getRoot<Envelope>().getPayload().getValue()), kDepth + 1u);
  };
  auto deep_ok = schema::read_message(msg.bytes(), ReadLimits{}, walk);
  EXPECT_FALSE(deep_ok.has_value()) << deep_ok->what;
  EXPECT_FALSE(schema::validate_envelope(msg.bytes()).has_value());
  const ReadLimits shallow{ReadLimits{}.traversal_words, 16};
  expect_error_containing(schema::read_message(msg.bytes(), shallow, walk), "nested");
  expect_error_containing(schema::validate_envelope(msg.bytes(), shallow), "nested");
}

TEST(CodecDecode, TraversalLimitOverflowIsADecodeError) {
  auto msg = flat_envelope([](Envelope::Builder e) {
    auto data = pattern(64 * 1024, 1);
    e.initPayload().initValue().setData(kj::arrayPtr(data.data(), data.size()));
  });
  auto touch = [](capnp::MessageReader& r) {
    EXPECT_EQ(r.getRoot<Envelope>().getPayload().getValue().getData().size(), 64u * 1024);
  };
  EXPECT_FALSE(schema::read_message(msg.bytes(), ReadLimits{}, touch).has_value());
  const ReadLimits tight{1000, 64};
  expect_error_containing(schema::read_message(msg.bytes(), tight, touch), "traversal limit");
  expect_error_containing(schema::validate_envelope(msg.bytes(), tight), "traversal limit");
}

TEST(CodecValidate, RefusesANestingThatAReaderWithTheSameLimitsRefuses) {
  // totalSize() does not count a struct list's elements as a level; the
  // generated readers do.  The same limits must give the same verdict.
  constexpr int kDepth = 20;
  auto msg = flat_envelope([&](Envelope::Builder e) {
    auto v = e.initPayload().initValue();
    for (int i = 0; i < kDepth; ++i) v = v.initList(1)[0];
  });
  const ReadLimits limits{ReadLimits{}.traversal_words, 30};
  auto handler = schema::read_message(msg.bytes(), limits, [](capnp::MessageReader& r) {
    (void)walk_value(r.getRoot<Envelope>().getPayload().getValue());
  });
  expect_error_containing(handler, "nested");
  expect_error_containing(schema::validate_envelope(msg.bytes(), limits), "nested");
}

// A tiny message whose pointers all alias the same lists: 2^kDepth paths.  A
// walk that does not charge every visit to the traversal limit would take
// ages (2^60 steps for kDepth = 60); Cap'n Proto's limit stops it early.
TEST(CodecDecode, AliasedPointersAreChargedToTheTraversalLimit) {
  constexpr int kDepth = 24;
  capnp::MallocMessageBuilder b;
  auto v = b.initRoot<Envelope>().initPayload().initValue();
  std::vector<Value::Builder> levels;
  for (int i = 0; i < kDepth; ++i) {
    auto list = v.initList(2);
    levels.push_back(v);
    v = list[0];
  }
  // Make element 1 of every list a copy of element 0 (same target list).
  for (auto& lv : levels) {
    auto list = lv.getList();
    auto d0 = any_builder(list[0]).getDataSection();
    auto d1 = any_builder(list[1]).getDataSection();
    std::memcpy(d1.begin(), d0.begin(), d0.size());
    std::uint64_t p0;
    std::memcpy(&p0, d0.end(), 8);
    const auto delta = (d1.end() - d0.end()) / 8;
    const auto lo = static_cast<std::uint32_t>(p0);
    const std::int32_t off = static_cast<std::int32_t>(lo) >> 2;
    const std::uint32_t lo1 = (static_cast<std::uint32_t>(off - delta) << 2) | (lo & 3);
    const std::uint64_t p1 = (p0 & 0xffffffff00000000ULL) | lo1;
    std::memcpy(d1.end(), &p1, 8);
  }
  ASSERT_EQ(b.getSegmentsForOutput().size(), 1u);
  Words msg(capnp::messageToFlatArray(b));
  EXPECT_LT(msg.w.size(), 300u) << "the message itself is small";
  const auto t0 = std::chrono::steady_clock::now();
  expect_error_containing(schema::validate_envelope(msg.bytes()), "traversal limit");
  // Too many paths for the unchecked fast path: read_envelope checks it.
  EXPECT_EQ(schema::plain_root(msg.bytes()), nullptr);
  expect_error_containing(schema::read_envelope(msg.bytes(), {}, [](Envelope::Reader) {}),
                          "traversal limit");
  expect_error_containing(
      schema::read_message(msg.bytes(), {},
                           [](capnp::MessageReader& r) {
                             (void)walk_value(r.getRoot<Envelope>().getPayload().getValue());
                           }),
      "traversal limit");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
}

// --- validate_envelope -----------------------------------------------------------

TEST(CodecValidate, AcceptsValidEnvelopesOfEveryPayloadKind) {
  std::vector<Words> good;
  good.push_back(flat_envelope([](Envelope::Builder) {}));
  good.push_back(flat_envelope([](Envelope::Builder e) { fill_sample(e, "registry", 100); }));
  good.push_back(flat_envelope([](Envelope::Builder e) {
    e.setKind(schema::Kind::REPLY);
    auto err = e.initPayload().initError();
    err.setCode(schema::ErrorCode::CALLEE_DIED);
    err.setMessage("worker 3 died");
    auto sig = err.initReason().initSignal();
    sig.setNumber(9);
  }));
  good.push_back(flat_envelope([](Envelope::Builder e) {
    e.setKind(schema::Kind::DOWN);
    auto ex = e.initPayload().initExitReason().initException();
    ex.setType("std::runtime_error");
    ex.setMessage("boom");
    ex.setActor("counter");
  }));
  good.push_back(flat_envelope([](Envelope::Builder e) {
    auto t = e.initPayload().initTyped();
    t.setSchemaId(capnp::typeId<schema::ActorRef>());
    fill_ref(t.getContent().initAs<schema::ActorRef>(), 1);
  }));
  for (std::size_t i = 0; i < good.size(); ++i) {
    auto err = schema::validate_envelope(good[i].bytes());
    EXPECT_FALSE(err.has_value()) << "envelope " << i << ": " << err->what;
  }
}

std::uint64_t word_at(const Words& m, std::size_t i) {
  return m.w.at(i);
}

// Index (in words, table included) of pointer field `field` of the root
// Envelope of a one-segment flat message.
std::size_t root_pointer_index(const Words& m, const char* field) {
  const std::uint64_t root = word_at(m, 1);
  const std::int32_t off = static_cast<std::int32_t>(static_cast<std::uint32_t>(root)) >> 2;
  const std::size_t data_words = (root >> 32) & 0xffff;
  auto slot = capnp::Schema::from<Envelope>().getFieldByName(field).getProto().getSlot();
  return 2 + static_cast<std::size_t>(off) + data_words + slot.getOffset();
}

// An envelope with destName "DESTNAME" (pointer tests rewrite its pointer).
Words with_dest_name() {
  return flat_envelope([](Envelope::Builder e) { e.setDestName("DESTNAME"); });
}

// The same with the text's NUL terminator overwritten: every pointer in
// bounds, but not a valid Text.
Words dest_name_without_nul() {
  Words msg = with_dest_name();
  auto bytes = msg.bytes();
  const std::string needle = "DESTNAME";
  const std::size_t at =
      std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()).find(needle);
  if (at == std::string::npos) {
    ADD_FAILURE() << "DESTNAME not found in the flat message";
    return msg;
  }
  msg.raw()[at + needle.size()] = std::byte{'!'};  // overwrite the NUL
  return msg;
}

TEST(CodecValidate, RejectsAnOutOfBoundsPointer) {
  auto msg = with_dest_name();
  const std::size_t i = root_pointer_index(msg, "destName");
  // A list pointer to 16 bytes far beyond the end of the segment.
  msg.w.at(i) = (std::uint64_t{16} << 35) | (std::uint64_t{2} << 32) | (1000u << 2) | 1u;
  expect_error_containing(schema::validate_envelope(msg.bytes()), "out-of-bounds");
}

TEST(CodecValidate, RejectsTextWithoutItsNulTerminator) {
  Words msg = dest_name_without_nul();
  auto handler = schema::read_message(
      msg.bytes(), {}, [](capnp::MessageReader& r) { (void)r.getRoot<Envelope>().getDestName(); });
  ASSERT_TRUE(handler.has_value()) << "a handler cannot read this Envelope";
  EXPECT_TRUE(schema::validate_envelope(msg.bytes()).has_value())
      << "validate_envelope accepted what a handler then fails to read (" << handler->what << ")";
}

TEST(CodecDecode, ErrorTextIsKeptWholeWhenTheBadBytesContainNul) {
  // Cap'n Proto quotes the offending byte (here the text's last byte) in its
  // description; DecodeError must not stop at a quoted NUL.
  Words msg = dest_name_without_nul();
  auto err = schema::read_message(
      msg.bytes(), {}, [](capnp::MessageReader& r) { (void)r.getRoot<Envelope>().getDestName(); });
  expect_error_containing(err, "NUL-terminated");
}

TEST(CodecValidate, RejectsAStructWhereTextBelongs) {
  auto msg = with_dest_name();
  const std::size_t i = root_pointer_index(msg, "destName");
  // A struct pointer (offset 0, one data word: the text bytes) instead of a list.
  msg.w.at(i) = (std::uint64_t{1} << 32) | 0u;
  auto handler = schema::read_message(
      msg.bytes(), {}, [](capnp::MessageReader& r) { (void)r.getRoot<Envelope>().getDestName(); });
  ASSERT_TRUE(handler.has_value()) << "a handler cannot read this Envelope";
  EXPECT_TRUE(schema::validate_envelope(msg.bytes()).has_value())
      << "validate_envelope accepted what a handler then fails to read (" << handler->what << ")";
}

// --- the unchecked fast path (plain_root) ------------------------------------------

TEST(CodecPlain, ACallEnvelopeAsTheRuntimeBuildsItIsReadUncheckedWithTheSameFields) {
  alignas(8) std::byte area[512];
  schema::FlatBuilder b(area);
  auto e = b.init_root<Envelope>();
  e.setKind(schema::Kind::CALL);
  fill_address(e.initDestination(), 10);
  fill_address(e.initSource(), 20);
  e.setCorrelationId(77);
  e.getPayload().initValue().setSymbol("ping");
  const std::size_t n = b.finish();
  ASSERT_GT(n, 0u);
  const auto bytes = std::span<const std::byte>(area).first(n);
  ASSERT_NE(schema::plain_root(bytes), nullptr) << "the common message takes the fast path";
  bool seen = false;
  auto err = schema::read_envelope(bytes, {}, [&](const schema::EnvelopeParts& m) {
    seen = true;
    expect_address(m.envelope.getDestination(), 10);
    expect_address(m.envelope.getSource(), 20);
    EXPECT_EQ(m.envelope.getCorrelationId(), 77u);
    ASSERT_TRUE(m.has_value);
    EXPECT_EQ(std::string(m.value.getSymbol().cStr()), "ping");
  });
  EXPECT_FALSE(err.has_value()) << err->what;
  EXPECT_TRUE(seen);
}

TEST(CodecPlain, WhatTheUncheckedReaderStillChecksIsStillRejected) {
  // Structurally sound (every pointer in bounds), wrong for the schema: the
  // fast path takes it, and read_envelope's walk still refuses it.
  Words no_nul = dest_name_without_nul();
  ASSERT_NE(schema::plain_root(no_nul.bytes()), nullptr);
  expect_error_containing(schema::read_envelope(no_nul.bytes(), {}, [](Envelope::Reader) {}),
                          "NUL-terminated");

  auto struct_for_text = with_dest_name();
  struct_for_text.w.at(root_pointer_index(struct_for_text, "destName")) = std::uint64_t{1} << 32;
  ASSERT_NE(schema::plain_root(struct_for_text.bytes()), nullptr);
  EXPECT_TRUE(
      schema::read_envelope(struct_for_text.bytes(), {}, [](Envelope::Reader) {}).has_value());
}

TEST(CodecPlain, AnythingThatIsNotPlainTakesTheCheckedPathAndGetsItsVerdict) {
  auto reads = [](const Words& m) {
    return schema::read_envelope(m.bytes(), {}, [](Envelope::Reader) {});
  };
  // A pointer out of bounds.
  auto oob = with_dest_name();
  oob.w.at(root_pointer_index(oob, "destName")) =
      (std::uint64_t{16} << 35) | (std::uint64_t{2} << 32) | (1000u << 2) | 1u;
  EXPECT_EQ(schema::plain_root(oob.bytes()), nullptr);
  expect_error_containing(reads(oob), "out-of-bounds");

  // A far pointer (to a segment that is not there).
  auto far = with_dest_name();
  far.w.at(root_pointer_index(far, "destName")) = (std::uint64_t{5} << 32) | 2u;
  EXPECT_EQ(schema::plain_root(far.bytes()), nullptr);
  EXPECT_TRUE(reads(far).has_value());

  // A pointer back to the root struct: a cycle, never ending for a reader.
  auto cycle = with_dest_name();
  {
    const std::size_t i = root_pointer_index(cycle, "destName");
    const std::uint64_t root = cycle.w.at(1);
    const std::int64_t root_at =
        2 + (static_cast<std::int32_t>(static_cast<std::uint32_t>(root)) >> 2);
    const std::int64_t off = root_at - static_cast<std::int64_t>(i) - 1;
    cycle.w.at(i) = (root & 0xffffffff00000000ULL) | (static_cast<std::uint32_t>(off) << 2);
  }
  EXPECT_EQ(schema::plain_root(cycle.bytes()), nullptr);
  EXPECT_TRUE(reads(cycle).has_value());

  // Two segments (a valid message, but not one flat segment).
  capnp::MallocMessageBuilder two(1, capnp::AllocationStrategy::FIXED_SIZE);
  fill_sample(two.initRoot<Envelope>(), "registry", 100);
  ASSERT_GT(two.getSegmentsForOutput().size(), 1u);
  Words multi(capnp::messageToFlatArray(two));
  EXPECT_EQ(schema::plain_root(multi.bytes()), nullptr);
  EXPECT_FALSE(reads(multi).has_value());

  // A list of more zero-sized elements than the fast path allows (free to
  // send, slow to iterate); the checked reader charges them to its limit.
  for (std::uint32_t n : {static_cast<std::uint32_t>(schema::kPlainMaxEmpty),
                          static_cast<std::uint32_t>(schema::kPlainMaxEmpty + 1)}) {
    auto voids = flat_envelope([&](Envelope::Builder e) {
      e.initPayload().initTyped().getContent().initAs<capnp::List<capnp::Void>>(n);
    });
    EXPECT_EQ(schema::plain_root(voids.bytes()) != nullptr, n <= schema::kPlainMaxEmpty) << n;
    EXPECT_FALSE(reads(voids).has_value()) << n;
  }
  // A segment table that does not match the bytes.
  auto table = flat_envelope([](Envelope::Builder e) { fill_sample(e, "registry", 100); });
  table.w.push_back(0);
  EXPECT_EQ(schema::plain_root(table.bytes()), nullptr);
  EXPECT_FALSE(reads(table).has_value()) << "trailing bytes are the checked reader's call";
}

TEST(CodecPlain, ADeepTreeWithinTheLimitsIsPlain) {
  constexpr int kDepth = 12;  // 24 levels: a tuple and its element each
  capnp::MallocMessageBuilder b;
  auto v = b.initRoot<Envelope>().initPayload().initValue();
  for (int i = 0; i < kDepth; ++i) v = v.initTuple(2)[0];
  v.setText("leaf");
  Words msg(capnp::messageToFlatArray(b));
  EXPECT_NE(schema::plain_root(msg.bytes()), nullptr);
  EXPECT_FALSE(schema::read_envelope(msg.bytes(), {}, [](Envelope::Reader) {}));
}

}  // namespace
}  // namespace bulkhead
