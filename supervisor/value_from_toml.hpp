// supervisor/value_from_toml.hpp: actor init args from the tree file.
//
// TOML maps onto the schema's Value: table -> map (text keys, file order),
// array -> list, string -> text, integer -> int, float -> float,
// boolean -> bool, date/time -> text (ISO 8601).
#pragma once

#include <toml++/toml.h>

#include <sstream>

#include "schema/value.capnp.h"

namespace bulkhead::supervisor {

void value_from_toml(const toml::node& node, schema::Value::Builder out);

inline void value_from_toml(const toml::table& table, schema::Value::Builder out) {
  value_from_toml(static_cast<const toml::node&>(table), out);
}

inline void value_from_toml(const toml::node& node, schema::Value::Builder out) {
  if (const auto* t = node.as_table()) {
    auto entries = out.initMap(static_cast<unsigned>(t->size()));
    unsigned i = 0;
    for (auto&& [k, v] : *t) {
      entries[i].initKey().setText(std::string(k.str()));
      value_from_toml(v, entries[i].initValue());
      ++i;
    }
  } else if (const auto* a = node.as_array()) {
    auto list = out.initList(static_cast<unsigned>(a->size()));
    for (unsigned i = 0; i < a->size(); ++i) value_from_toml(*a->get(i), list[i]);
  } else if (const auto* s = node.as_string()) {
    out.setText(s->get());
  } else if (const auto* n = node.as_integer()) {
    out.setInt(n->get());
  } else if (const auto* f = node.as_floating_point()) {
    out.setFloat(f->get());
  } else if (const auto* b = node.as_boolean()) {
    out.setBool(b->get());
  } else {
    std::ostringstream ss;
    node.visit([&](const auto& v) { ss << v; });
    out.setText(ss.str());
  }
}

}  // namespace bulkhead::supervisor
