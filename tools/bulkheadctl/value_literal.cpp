#include "tools/bulkheadctl/value_literal.hpp"

#include "schema/json_text.hpp"

#include <fmt/format.h>

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

namespace bulkhead::ctl {

namespace {

constexpr int kMaxDepth = 64;

// The parsed literal, before it is built (Cap'n Proto lists need their size).
struct Node {
  enum class Kind { null, boolean, integer, real, text, bytes, atom, list, tuple, map };
  Kind kind = Kind::null;
  bool b = false;
  std::int64_t i = 0;
  double f = 0;
  std::string s;
  std::vector<Node> items;  // list, tuple; map: key, value, key, value, ...
};

Node make(Node::Kind k) {
  Node n;
  n.kind = k;
  return n;
}
Node make_bool(bool b) {
  Node n = make(Node::Kind::boolean);
  n.b = b;
  return n;
}
Node make_real(double f) {
  Node n = make(Node::Kind::real);
  n.f = f;
  return n;
}
Node make_int(std::int64_t i) {
  Node n = make(Node::Kind::integer);
  n.i = i;
  return n;
}
Node make_str(Node::Kind k, std::string s) {
  Node n = make(k);
  n.s = std::move(s);
  return n;
}

class Parser {
 public:
  explicit Parser(const std::string& t) : t_(t) {}

  Node parse() {
    skip();
    Node n = value(0);
    skip();
    if (p_ != t_.size()) fail("unexpected text after the value");
    return n;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { throw LiteralError(what, p_ + 1); }
  [[noreturn]] void fail_at(const std::string& what, std::size_t at) const {
    throw LiteralError(what, at + 1);
  }
  bool at_end() const { return p_ >= t_.size(); }
  char peek() const { return at_end() ? '\0' : t_[p_]; }
  void skip() {
    while (!at_end() && (t_[p_] == ' ' || t_[p_] == '\t' || t_[p_] == '\n' || t_[p_] == '\r')) {
      ++p_;
    }
  }
  static bool word_start(char c) { return (c >= 'a' && c <= 'z') || c == '_'; }
  static bool word_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '@' || c == '.';
  }

  Node value(int depth) {
    if (depth > kMaxDepth) fail(fmt::format("nested deeper than {} levels", kMaxDepth));
    if (at_end()) fail("expected a value, found the end of the input");
    char c = peek();
    if (c == '[') return seq(depth, ']', Node::Kind::list);
    if (c == '{') return seq(depth, '}', Node::Kind::tuple);
    if (c == '#') {
      if (p_ + 1 < t_.size() && t_[p_ + 1] == '{') return map(depth);
      fail("expected '#{' (a map)");
    }
    if (c == '"') return make_str(Node::Kind::text, quoted('"'));
    if (c == '\'') return make_str(Node::Kind::atom, quoted('\''));
    if (c == 'b' && p_ + 1 < t_.size() && t_[p_ + 1] == '"') {
      ++p_;
      return make_str(Node::Kind::bytes, quoted('"'));
    }
    if (c == '-' || (c >= '0' && c <= '9')) return number();
    if (word_start(c)) {
      std::size_t start = p_;
      while (!at_end() && word_char(peek())) ++p_;
      std::string w = t_.substr(start, p_ - start);
      if (w == "null" || w == "nil" || w == "none") return make(Node::Kind::null);
      if (w == "true") return make_bool(true);
      if (w == "false") return make_bool(false);
      if (w == "inf") return make_real(HUGE_VAL);
      if (w == "nan") return make_real(NAN);
      return make_str(Node::Kind::atom, w);
    }
    if (c >= 'A' && c <= 'Z') {
      fail(
          "an atom starts with a lower-case letter or '_' (quote it: 'Name'), or a string with \"");
    }
    fail(fmt::format("unexpected '{}': expected a value", c));
  }

  Node seq(int depth, char close, Node::Kind kind) {
    std::size_t open_at = p_;
    ++p_;  // the opening bracket
    Node n = make(kind);
    skip();
    while (peek() != close) {
      if (at_end()) {
        fail_at(fmt::format("'{}' is never closed (expected '{}')", t_[open_at], close), open_at);
      }
      n.items.push_back(value(depth + 1));
      skip();
      if (peek() == ',') {
        ++p_;
        skip();
      } else if (peek() != close) {
        if (at_end()) {
          fail_at(fmt::format("'{}' is never closed (expected '{}')", t_[open_at], close), open_at);
        }
        fail(fmt::format("expected ',' or '{}'", close));
      }
    }
    ++p_;
    return n;
  }

  Node map(int depth) {
    std::size_t open_at = p_;
    p_ += 2;  // "#{"
    Node n = make(Node::Kind::map);
    skip();
    while (peek() != '}') {
      if (at_end()) fail_at("'#{' is never closed (expected '}')", open_at);
      n.items.push_back(value(depth + 1));
      skip();
      if (t_.compare(p_, 2, "=>") == 0) {
        p_ += 2;
      } else if (peek() == ':') {
        ++p_;
      } else {
        fail("expected '=>' (or ':') after a map key");
      }
      skip();
      n.items.push_back(value(depth + 1));
      skip();
      if (peek() == ',') {
        ++p_;
        skip();
      } else if (peek() != '}') {
        if (at_end()) fail_at("'#{' is never closed (expected '}')", open_at);
        fail("expected ',' or '}'");
      }
    }
    ++p_;
    return n;
  }

  std::string quoted(char q) {
    std::size_t open_at = p_;
    ++p_;
    std::string out;
    for (;;) {
      if (at_end())
        fail_at(fmt::format("{} is never closed", q == '"' ? "string" : "atom"), open_at);
      char c = t_[p_++];
      if (c == q) break;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (at_end()) fail("unfinished escape");
      char e = t_[p_++];
      switch (e) {
        case '"':
        case '\\':
        case '\'':
          out += e;
          break;
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case '0':
          out += '\0';
          break;
        case 'x': {
          if (p_ + 2 > t_.size() || !std::isxdigit(static_cast<unsigned char>(t_[p_])) ||
              !std::isxdigit(static_cast<unsigned char>(t_[p_ + 1]))) {
            fail("\\x needs two hex digits");
          }
          out += static_cast<char>(std::stoi(t_.substr(p_, 2), nullptr, 16));
          p_ += 2;
          break;
        }
        case 'u': {
          if (peek() != '{') fail("\\u needs {HEX}");
          auto close = t_.find('}', p_);
          if (close == std::string::npos || close == p_ + 1 || close - p_ > 7) {
            fail("\\u needs {HEX} with 1 to 6 hex digits");
          }
          std::string hex = t_.substr(p_ + 1, close - p_ - 1);
          for (char h : hex) {
            if (!std::isxdigit(static_cast<unsigned char>(h))) fail("\\u needs hex digits");
          }
          auto cp = static_cast<std::uint32_t>(std::stoul(hex, nullptr, 16));
          if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) fail("not a Unicode code point");
          if (cp < 0x80) {
            out += static_cast<char>(cp);
          } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          } else if (cp < 0x10000) {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          } else {
            out += static_cast<char>(0xF0 | (cp >> 18));
            out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          }
          p_ = close + 1;
          break;
        }
        default:
          p_ -= 2;  // at the backslash
          fail(fmt::format("unknown escape '\\{}'", e));
      }
    }
    return out;
  }

  Node number() {
    std::size_t start = p_;
    if (peek() == '-') ++p_;
    if (t_.compare(p_, 3, "inf") == 0) {
      p_ += 3;
      return make_real(-HUGE_VAL);
    }
    if (!(peek() >= '0' && peek() <= '9')) fail("expected a digit after '-'");
    bool hex = t_.compare(p_, 2, "0x") == 0;
    if (hex) p_ += 2;
    bool real = false;
    while (!at_end()) {
      char c = peek();
      if ((c >= '0' && c <= '9') || (hex && std::isxdigit(static_cast<unsigned char>(c)))) {
        ++p_;
      } else if (!hex && (c == '.' || c == 'e' || c == 'E')) {
        real = true;
        ++p_;
        if ((c == 'e' || c == 'E') && (peek() == '+' || peek() == '-')) ++p_;
      } else {
        break;
      }
    }
    if (!at_end() && word_char(peek())) fail("unexpected character in a number");
    std::string s = t_.substr(start, p_ - start);
    errno = 0;
    char* end = nullptr;
    if (real) {
      double d = std::strtod(s.c_str(), &end);
      if (end != s.c_str() + s.size() || s.back() == '.' || s.find(".e") != std::string::npos ||
          s.find(".E") != std::string::npos) {
        fail_at("malformed number '" + s + "'", start);
      }
      return make_real(d);
    }
    long long v = std::strtoll(s.c_str(), &end, hex ? 16 : 10);
    if (end != s.c_str() + s.size() || s == "-" || (hex && s.size() <= (s[0] == '-' ? 3u : 2u))) {
      fail_at("malformed number '" + s + "'", start);
    }
    if (errno == ERANGE) fail_at("integer '" + s + "' does not fit in 64 bits", start);
    return make_int(static_cast<std::int64_t>(v));
  }

  const std::string& t_;
  std::size_t p_ = 0;
};

void build(const Node& n, schema::Value::Builder b) {
  switch (n.kind) {
    case Node::Kind::null:
      b.setNull();
      break;
    case Node::Kind::boolean:
      b.setBool(n.b);
      break;
    case Node::Kind::integer:
      b.setInt(n.i);
      break;
    case Node::Kind::real:
      b.setFloat(n.f);
      break;
    case Node::Kind::text:
      b.setText(n.s);
      break;
    case Node::Kind::bytes:
      b.setData(kj::arrayPtr(reinterpret_cast<const capnp::byte*>(n.s.data()), n.s.size()));
      break;
    case Node::Kind::atom:
      b.setSymbol(n.s);
      break;
    case Node::Kind::list: {
      auto l = b.initList(static_cast<unsigned>(n.items.size()));
      for (unsigned k = 0; k < n.items.size(); ++k) build(n.items[k], l[k]);
      break;
    }
    case Node::Kind::tuple: {
      auto l = b.initTuple(static_cast<unsigned>(n.items.size()));
      for (unsigned k = 0; k < n.items.size(); ++k) build(n.items[k], l[k]);
      break;
    }
    case Node::Kind::map: {
      auto m = b.initMap(static_cast<unsigned>(n.items.size() / 2));
      for (unsigned k = 0; k < m.size(); ++k) {
        build(n.items[2 * k], m[k].initKey());
        build(n.items[2 * k + 1], m[k].initValue());
      }
      break;
    }
  }
}

bool plain_atom(const std::string& s) {
  if (s.empty() || !((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_')) return false;
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '@' || c == '.')) {
      return false;
    }
  }
  return s != "null" && s != "nil" && s != "none" && s != "true" && s != "false" && s != "inf" &&
         s != "nan";
}

std::string quote(const std::string& s, char q) {
  std::string out(1, q);
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (ch == q || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (ch == '\n') {
      out += "\\n";
    } else if (ch == '\t') {
      out += "\\t";
    } else if (ch == '\r') {
      out += "\\r";
    } else if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += ch;
    }
  }
  out += q;
  return out;
}

std::string format_double(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  std::string s = fmt::format("{}", d);
  if (s.find_first_of(".eE") == std::string::npos) s += ".0";
  return s;
}

std::string format(schema::Value::Reader v, int depth) {
  if (depth > kMaxDepth) return "...";
  auto seq = [&](capnp::List<schema::Value>::Reader l, const char* open, const char* close) {
    std::string out = open;
    for (unsigned k = 0; k < l.size(); ++k) {
      if (k > 0) out += ", ";
      out += format(l[k], depth + 1);
    }
    return out + close;
  };
  switch (v.which()) {
    case schema::Value::NULL_:
      return "null";
    case schema::Value::BOOL:
      return v.getBool() ? "true" : "false";
    case schema::Value::INT:
      return std::to_string(v.getInt());
    case schema::Value::FLOAT:
      return format_double(v.getFloat());
    case schema::Value::TEXT:
      return quote(v.getText().cStr(), '"');
    case schema::Value::DATA: {
      auto d = v.getData();
      return "b" + quote(std::string(reinterpret_cast<const char*>(d.begin()), d.size()), '"');
    }
    case schema::Value::LIST:
      return seq(v.getList(), "[", "]");
    case schema::Value::TUPLE:
      return seq(v.getTuple(), "{", "}");
    case schema::Value::MAP: {
      std::string out = "#{";
      auto m = v.getMap();
      for (unsigned k = 0; k < m.size(); ++k) {
        if (k > 0) out += ", ";
        out += format(m[k].getKey(), depth + 1) + " => " + format(m[k].getValue(), depth + 1);
      }
      return out + "}";
    }
    case schema::Value::SYMBOL: {
      std::string s = v.getSymbol().cStr();
      return plain_atom(s) ? s : quote(s, '\'');
    }
  }
  return "?";
}

std::string to_json(schema::Value::Reader v, int depth) {
  if (depth > kMaxDepth) return "null";
  auto arr = [&](capnp::List<schema::Value>::Reader l) {
    std::string out = "[";
    for (unsigned k = 0; k < l.size(); ++k) {
      if (k > 0) out += ",";
      out += to_json(l[k], depth + 1);
    }
    return out + "]";
  };
  switch (v.which()) {
    case schema::Value::NULL_:
      return "null";
    case schema::Value::BOOL:
      return v.getBool() ? "true" : "false";
    case schema::Value::INT:
      return std::to_string(v.getInt());
    case schema::Value::FLOAT: {
      double d = v.getFloat();
      return std::isfinite(d) ? format_double(d) : json_string(format_double(d));
    }
    case schema::Value::TEXT:
      return json_string(v.getText().cStr());
    case schema::Value::DATA: {
      std::string hex;
      for (auto b : v.getData()) hex += fmt::format("{:02x}", b);
      return R"({"bytes":")" + hex + "\"}";
    }
    case schema::Value::LIST:
      return arr(v.getList());
    case schema::Value::TUPLE:
      return R"({"tuple":)" + arr(v.getTuple()) + "}";
    case schema::Value::MAP: {
      std::string out = R"({"map":[)";
      auto m = v.getMap();
      for (unsigned k = 0; k < m.size(); ++k) {
        if (k > 0) out += ",";
        out += "[" + to_json(m[k].getKey(), depth + 1) + "," + to_json(m[k].getValue(), depth + 1) +
               "]";
      }
      return out + "]}";
    }
    case schema::Value::SYMBOL:
      return R"({"atom":)" + json_string(v.getSymbol().cStr()) + "}";
  }
  return "null";
}

}  // namespace

void parse_value(const std::string& text, schema::Value::Builder out) {
  Node n = Parser(text).parse();
  build(n, out);
}

void check_value(const std::string& text) {
  (void)Parser(text).parse();
}

std::string format_value(schema::Value::Reader v) {
  return format(v, 0);
}

std::string value_to_json(schema::Value::Reader v) {
  return to_json(v, 0);
}

std::string json_string(const std::string& s) {
  return schema::json_string(s);
}

}  // namespace bulkhead::ctl
