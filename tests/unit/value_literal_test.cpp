// The Value literal grammar of bulkheadctl (tools/bulkheadctl/value_literal.hpp).
#include "tools/bulkheadctl/value_literal.hpp"

#include <gtest/gtest.h>

#include <capnp/message.h>
#include <cmath>

namespace bulkhead::ctl {
namespace {

std::string round_trip(const std::string& text) {
  capnp::MallocMessageBuilder mb;
  auto v = mb.initRoot<schema::Value>();
  parse_value(text, v);
  return format_value(v.asReader());
}

std::size_t error_column(const std::string& text) {
  try {
    check_value(text);
  } catch (const LiteralError& e) {
    return e.column();
  }
  return 0;
}

TEST(ValueLiteral, ScalarsParseToTheirVariants) {
  capnp::MallocMessageBuilder mb;
  auto v = mb.initRoot<schema::Value>();
  parse_value("42", v);
  EXPECT_EQ(v.getInt(), 42);
  parse_value("-0x10", v);
  EXPECT_EQ(v.getInt(), -16);
  parse_value("1.5e3", v);
  EXPECT_EQ(v.getFloat(), 1500.0);
  parse_value("\"a\\u{e9}\"", v);
  EXPECT_EQ(std::string(v.getText().cStr()), "a\xc3\xa9");
  parse_value("ok", v);
  EXPECT_EQ(std::string(v.getSymbol().cStr()), "ok");
  parse_value("'Hello world'", v);
  EXPECT_EQ(std::string(v.getSymbol().cStr()), "Hello world");
  parse_value("null", v);
  EXPECT_EQ(v.which(), schema::Value::NULL_);
  parse_value("b\"\\x00\\xff\"", v);
  ASSERT_EQ(v.getData().size(), 2u);
  EXPECT_EQ(v.getData()[1], 0xff);
  parse_value("-inf", v);
  EXPECT_TRUE(std::isinf(v.getFloat()) && v.getFloat() < 0);
}

TEST(ValueLiteral, CompositesRoundTrip) {
  EXPECT_EQ(round_trip("{count, 3}"), "{count, 3}");
  EXPECT_EQ(round_trip("[1, \"x\", #{a => 1.5, \"k\": [true, false]}]"),
            "[1, \"x\", #{a => 1.5, \"k\" => [true, false]}]");
  EXPECT_EQ(round_trip(" [ 1 , 2 , ] "), "[1, 2]");
  EXPECT_EQ(round_trip("{}"), "{}");
  EXPECT_EQ(round_trip("#{}"), "#{}");
  EXPECT_EQ(round_trip("2.0"), "2.0");
  EXPECT_EQ(round_trip("'true'"), "'true'");  // the atom, not the boolean
}

TEST(ValueLiteral, ErrorsPointAtTheColumn) {
  EXPECT_EQ(error_column("[1, 2 3]"), 7u);
  EXPECT_EQ(error_column("[1, 2"), 1u);  // the bracket that is never closed
  EXPECT_EQ(error_column("{a, Bad}"), 5u);
  EXPECT_EQ(error_column("#{a 1}"), 5u);
  EXPECT_EQ(error_column("\"abc"), 1u);
  EXPECT_EQ(error_column("99999999999999999999"), 1u);
  EXPECT_EQ(error_column("1 2"), 3u);
  EXPECT_EQ(error_column(""), 1u);
  EXPECT_EQ(error_column("\"\\q\""), 2u);
  EXPECT_EQ(error_column(std::string(100, '[') + std::string(100, ']')), 66u);
}

TEST(ValueLiteral, JsonRenderingIsLossless) {
  capnp::MallocMessageBuilder mb;
  auto v = mb.initRoot<schema::Value>();
  parse_value("{ok, [1, \"a\"], #{k => b\"\\x01\"}, nan}", v);
  EXPECT_EQ(value_to_json(v.asReader()),
            R"({"tuple":[{"atom":"ok"},[1,"a"],{"map":[[{"atom":"k"},{"bytes":"01"}]]},"nan"]})");
}

}  // namespace
}  // namespace bulkhead::ctl
