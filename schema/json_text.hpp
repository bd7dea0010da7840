// schema/json_text.hpp: escaping text for the JSON that Bulkhead prints.
//
// What it is for: the supervisor's event stream (--events, `bulkheadctl
// events`) and bulkheadctl's --json output are JSON, and both embed text that
// comes from elsewhere (child ids, exception messages, a worker's output).
// One escaper, so the two never disagree.  Header-only, standard library only.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

namespace bulkhead::schema {

// `s` escaped for the inside of a JSON string (no quotes added): quote,
// backslash and control characters; other bytes (UTF-8 included) as they are.
inline std::string json_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  return out;
}

// `s` as a quoted JSON string.
inline std::string json_string(std::string_view s) {
  return "\"" + json_escape(s) + "\"";
}

}  // namespace bulkhead::schema
