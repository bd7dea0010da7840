// schema/value_util.hpp: small, allocation-free lookups on Value readers.
//
// For actors reading their init args (a `map` Value built from the tree
// file).  Every accessor checks the variant and returns nullopt on a type
// mismatch instead of throwing; readers are still subject to Cap'n Proto's
// bounds checks.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "schema/value.capnp.h"

namespace bulkhead::schema {

// The value under text or symbol key `key` in a map Value, if any.
inline std::optional<Value::Reader> map_get(Value::Reader map, std::string_view key) {
  if (map.which() != Value::MAP) return std::nullopt;
  for (auto e : map.getMap()) {
    auto k = e.getKey();
    std::string_view name;
    if (k.which() == Value::TEXT) {
      name = std::string_view(k.getText().cStr(), k.getText().size());
    } else if (k.which() == Value::SYMBOL) {
      name = std::string_view(k.getSymbol().cStr(), k.getSymbol().size());
    } else {
      continue;
    }
    if (name == key) return e.getValue();
  }
  return std::nullopt;
}

inline std::optional<std::int64_t> map_get_int(Value::Reader map, std::string_view key) {
  auto v = map_get(map, key);
  if (!v || v->which() != Value::INT) return std::nullopt;
  return v->getInt();
}

inline std::optional<std::string_view> map_get_text(Value::Reader map, std::string_view key) {
  auto v = map_get(map, key);
  if (!v) return std::nullopt;
  if (v->which() == Value::TEXT) return std::string_view(v->getText().cStr(), v->getText().size());
  if (v->which() == Value::SYMBOL) {
    return std::string_view(v->getSymbol().cStr(), v->getSymbol().size());
  }
  return std::nullopt;
}

inline bool is_symbol(Value::Reader v, std::string_view sym) {
  return v.which() == Value::SYMBOL &&
         std::string_view(v.getSymbol().cStr(), v.getSymbol().size()) == sym;
}

}  // namespace bulkhead::schema
