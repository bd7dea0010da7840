// tools/bulkheadctl/value_literal.hpp: Value literals on the command line.
//
// What it is for: `bulkheadctl call|cast ACTOR LITERAL` turns LITERAL into a
// schema::Value, and prints replies back in the same syntax.  The grammar
// (README "Value literals") is JSON with Erlang's atoms and tuples:
//
//   value  := null | true | false | INT | FLOAT | STRING | BYTES | ATOM
//           | '[' [value (',' value)*] [','] ']'          list
//           | '{' [value (',' value)*] [','] '}'          tuple
//           | '#{' [value ('=>'|':') value (',' ...)*] [','] '}'   map
//   INT    := -?[0-9]+ | -?0x[0-9a-fA-F]+     (signed 64-bit)
//   FLOAT  := -?[0-9]+ '.' [0-9]+ ([eE][+-]?[0-9]+)? | -?[0-9]+[eE][+-]?[0-9]+ | inf | -inf | nan
//   STRING := "..." with \" \\ \n \t \r \0 \xHH \u{HEX}
//   BYTES  := b"..." (same escapes; raw bytes)
//   ATOM   := [a-z_][A-Za-z0-9_@.]* (not null/true/false/inf/nan) | '...' (quoted)
//
// Errors: LiteralError carries the 1-based column where the parser stopped,
// so the caller can point at it with a caret.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>

#include "schema/value.capnp.h"

namespace bulkhead::ctl {

class LiteralError : public std::runtime_error {
 public:
  LiteralError(const std::string& what, std::size_t column)
      : std::runtime_error(what), column_(column) {}
  // 1-based column of the offending character (input length + 1 at the end).
  [[nodiscard]] std::size_t column() const { return column_; }

 private:
  std::size_t column_;
};

// Parses `text` (the whole of it) into `out`.  Throws LiteralError.
void parse_value(const std::string& text, schema::Value::Builder out);

// Checks `text` without building anything.  Throws LiteralError.
void check_value(const std::string& text);

// The literal for a Value (parse_value(format_value(v)) == v).  Depth-limited.
std::string format_value(schema::Value::Reader v);

// A JSON rendering for scripts: null/bool/numbers/strings as JSON; atoms
// {"atom": "x"}, tuples {"tuple": [...]}, bytes {"bytes": "hex"}, maps
// {"map": [[k, v], ...]}, lists as arrays; non-finite floats as strings.
std::string value_to_json(schema::Value::Reader v);

// JSON string escaping (with the quotes).
std::string json_string(const std::string& s);

}  // namespace bulkhead::ctl
