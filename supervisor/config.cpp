#include "supervisor/config.hpp"

#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <functional>
#include <set>
#include <sstream>

namespace bulkhead::supervisor {

const char* to_string(Strategy s) {
  switch (s) {
    case Strategy::one_for_one:
      return "one_for_one";
    case Strategy::one_for_all:
      return "one_for_all";
    case Strategy::rest_for_one:
      return "rest_for_one";
    case Strategy::simple_one_for_one:
      return "simple_one_for_one";
  }
  return "?";
}
const char* to_string(RestartType r) {
  switch (r) {
    case RestartType::permanent:
      return "permanent";
    case RestartType::transient:
      return "transient";
    case RestartType::temporary:
      return "temporary";
  }
  return "?";
}
const char* to_string(AutoShutdown a) {
  switch (a) {
    case AutoShutdown::never:
      return "never";
    case AutoShutdown::any_significant:
      return "any_significant";
    case AutoShutdown::all_significant:
      return "all_significant";
  }
  return "?";
}

namespace {

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : "\n") + s;
  return out;
}

}  // namespace

ConfigError::ConfigError(std::vector<std::string> problems)
    : std::runtime_error(join(problems)), problems_(std::move(problems)) {}

std::optional<std::vector<std::string>> probe_actor_types(const std::string& binary) {
  if (::access(binary.c_str(), X_OK) != 0) return std::nullopt;
  std::string cmd = "'" + binary + "' --list-actors 2>/dev/null";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return std::nullopt;
  std::vector<std::string> types;
  std::array<char, 256> line{};
  while (std::fgets(line.data(), line.size(), p) != nullptr) {
    std::string s(line.data());
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    if (!s.empty()) types.push_back(s);
  }
  int status = ::pclose(p);
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return std::nullopt;
  return types;
}

namespace {

// Walks the TOML document, collecting every problem with its location.
class Loader {
 public:
  Loader(std::filesystem::path file, const LoadOptions& opts)
      : file_(std::move(file)), opts_(opts) {}

  TreeSpec load() {
    toml::table doc;
    try {
      doc = toml::parse_file(file_.string());
    } catch (const toml::parse_error& e) {
      throw ConfigError(
          {fmt::format("{}:{}:{}: TOML syntax error: {}", file_.string(), e.source().begin.line,
                       e.source().begin.column, e.description())});
    }
    TreeSpec tree;
    tree.file = file_;
    python_path_ = {file_.parent_path().lexically_normal().string()};
    known_keys(doc, "", {"tree", "root"});
    std::filesystem::path worker = opts_.default_worker;
    if (auto* t = table_at(doc, "tree", "tree", false)) {
      known_keys(*t, "tree", {"name", "worker", "zygote", "python_path"});
      python_path_ = read_python_path(*t, "tree").value_or(python_path_);
      tree.name = get_string(*t, "tree", "name").value_or(tree.name);
      tree.zygote = get_bool(*t, "tree", "zygote").value_or(true);
      if (tree.name.empty() || tree.name.find_first_of("/ \t") != std::string::npos) {
        problem(t->get("name"), "tree.name", "must be non-empty, without '/' or spaces");
      }
      if (auto w = get_string(*t, "tree", "worker")) {
        worker = resolve_binary(*w, t->get("worker"), "tree.worker").value_or(worker);
      }
    }
    default_worker_ = worker.string();
    if (auto* root = table_at(doc, "root", "root", true)) {
      read_supervisor(*root, "root", tree.root);
    }
    if (!problems_.empty()) throw ConfigError(problems_);
    python_args(tree.root);
    return tree;
  }

 private:
  std::string where(const toml::node* n) const {
    if (n == nullptr) return file_.string();
    auto s = n->source().begin;
    return fmt::format("{}:{}:{}", file_.string(), s.line, s.column);
  }
  void problem(const toml::node* n, const std::string& key, const std::string& what) {
    problems_.push_back(fmt::format("{}: key '{}': {}", where(n), key, what));
  }

  void known_keys(const toml::table& t, const std::string& path,
                  std::initializer_list<const char*> keys) {
    for (auto&& [k, v] : t) {
      bool ok = false;
      for (const char* key : keys) ok = ok || k.str() == key;
      if (!ok) {
        std::string allowed;
        for (const char* key : keys) allowed += (allowed.empty() ? "" : ", ") + std::string(key);
        problem(&v, path.empty() ? std::string(k.str()) : path + "." + std::string(k.str()),
                "unknown key (allowed here: " + allowed + ")");
      }
    }
  }

  const toml::table* table_at(const toml::table& t, const char* key, const std::string& path,
                              bool required) {
    const toml::node* n = t.get(key);
    if (n == nullptr) {
      if (required) problem(&t, path, "missing (a table is required)");
      return nullptr;
    }
    if (!n->is_table()) {
      problem(n, path, fmt::format("must be a table, not a {}", type_name(*n)));
      return nullptr;
    }
    return n->as_table();
  }

  static const char* type_name(const toml::node& n) {
    switch (n.type()) {
      case toml::node_type::table:
        return "table";
      case toml::node_type::array:
        return "array";
      case toml::node_type::string:
        return "string";
      case toml::node_type::integer:
        return "integer";
      case toml::node_type::floating_point:
        return "float";
      case toml::node_type::boolean:
        return "boolean";
      default:
        return "date/time";
    }
  }

  std::optional<std::string> get_string(const toml::table& t, const std::string& path,
                                        const char* key) {
    const toml::node* n = t.get(key);
    if (n == nullptr) return std::nullopt;
    if (!n->is_string()) {
      problem(n, path + "." + key, fmt::format("must be a string, not a {}", type_name(*n)));
      return std::nullopt;
    }
    return n->as_string()->get();
  }

  std::optional<std::int64_t> get_int(const toml::table& t, const std::string& path,
                                      const char* key, std::int64_t min, std::int64_t max) {
    const toml::node* n = t.get(key);
    if (n == nullptr) return std::nullopt;
    if (!n->is_integer()) {
      problem(n, path + "." + key, fmt::format("must be an integer, not a {}", type_name(*n)));
      return std::nullopt;
    }
    std::int64_t v = n->as_integer()->get();
    if (v < min || v > max) {
      problem(n, path + "." + key, fmt::format("{} is out of range [{}, {}]", v, min, max));
      return std::nullopt;
    }
    return v;
  }

  std::optional<double> get_float(const toml::table& t, const std::string& path, const char* key,
                                  double min, double max) {
    const toml::node* n = t.get(key);
    if (n == nullptr) return std::nullopt;
    if (!n->is_number()) {
      problem(n, path + "." + key, fmt::format("must be a number, not a {}", type_name(*n)));
      return std::nullopt;
    }
    double v = n->is_integer() ? static_cast<double>(n->as_integer()->get())
                               : n->as_floating_point()->get();
    if (v < min || v > max) {
      problem(n, path + "." + key, fmt::format("{} is out of range [{}, {}]", v, min, max));
      return std::nullopt;
    }
    return v;
  }

  std::optional<bool> get_bool(const toml::table& t, const std::string& path, const char* key) {
    const toml::node* n = t.get(key);
    if (n == nullptr) return std::nullopt;
    if (!n->is_boolean()) {
      problem(n, path + "." + key, fmt::format("must be true or false, not a {}", type_name(*n)));
      return std::nullopt;
    }
    return n->as_boolean()->get();
  }

  template <class E>
  std::optional<E> get_enum(const toml::table& t, const std::string& path, const char* key,
                            std::initializer_list<std::pair<const char*, E>> choices) {
    auto s = get_string(t, path, key);
    if (!s) return std::nullopt;
    for (auto& [name, value] : choices) {
      if (*s == name) return value;
    }
    std::string allowed;
    for (auto& [name, value] : choices)
      allowed += (allowed.empty() ? "" : ", ") + std::string(name);
    problem(t.get(key), path + "." + key,
            fmt::format("unknown value '{}' (one of: {})", *s, allowed));
    return std::nullopt;
  }

  std::optional<std::filesystem::path> resolve_binary(const std::string& name, const toml::node* n,
                                                      const std::string& key) {
    std::filesystem::path p(name);
    std::vector<std::filesystem::path> candidates;
    if (p.is_absolute()) {
      candidates.push_back(p);
    } else if (name.find('/') != std::string::npos) {
      candidates.push_back(file_.parent_path() / p);
    } else {
      candidates.push_back(file_.parent_path() / p);
      if (!opts_.default_worker.empty())
        candidates.push_back(opts_.default_worker.parent_path() / p);
      if (const char* path = std::getenv("PATH")) {
        std::stringstream ss(path);
        std::string dir;
        while (std::getline(ss, dir, ':')) {
          if (!dir.empty()) candidates.push_back(std::filesystem::path(dir) / p);
        }
      }
    }
    for (const auto& c : candidates) {
      std::error_code ec;
      if (std::filesystem::is_regular_file(c, ec) && ::access(c.c_str(), X_OK) == 0) {
        return std::filesystem::absolute(c).lexically_normal();
      }
    }
    problem(n, key, fmt::format("worker binary '{}' not found or not executable", name));
    return std::nullopt;
  }

  void read_supervisor(const toml::table& t, const std::string& path, SupervisorSpec& s) {
    s.strategy = get_enum<Strategy>(t, path, "strategy",
                                    {{"one_for_one", Strategy::one_for_one},
                                     {"one_for_all", Strategy::one_for_all},
                                     {"rest_for_one", Strategy::rest_for_one},
                                     {"simple_one_for_one", Strategy::simple_one_for_one}})
                     .value_or(s.strategy);
    s.intensity =
        static_cast<int>(get_int(t, path, "intensity", 0, 1'000'000).value_or(s.intensity));
    s.period = Ms(get_int(t, path, "period_ms", 1, 86'400'000).value_or(s.period.count()));
    s.auto_shutdown = get_enum<AutoShutdown>(t, path, "auto_shutdown",
                                             {{"never", AutoShutdown::never},
                                              {"any_significant", AutoShutdown::any_significant},
                                              {"all_significant", AutoShutdown::all_significant}})
                          .value_or(s.auto_shutdown);
    if (s.strategy == Strategy::simple_one_for_one) {
      if (t.get("children") != nullptr) {
        problem(t.get("children"), path + ".children",
                "a simple_one_for_one supervisor has no static children; use template and "
                "instances");
      }
      if (auto* tmpl = table_at(t, "template", path + ".template", true)) {
        ChildSpec c;
        c.id = "template";
        read_worker(*tmpl, path + ".template", c);
        s.child_template = std::move(c);
      }
      s.instances = static_cast<int>(get_int(t, path, "instances", 0, 10'000).value_or(0));
    } else {
      if (t.get("template") != nullptr || t.get("instances") != nullptr) {
        problem(t.get("template") ? t.get("template") : t.get("instances"), path,
                "template and instances belong to simple_one_for_one supervisors");
      }
      read_children(t, path, s);
    }
  }

  void read_children(const toml::table& t, const std::string& path, SupervisorSpec& s) {
    const toml::node* n = t.get("children");
    if (n == nullptr) return;  // an empty supervisor is legal
    if (!n->is_array_of_tables()) {
      problem(n, path + ".children", "must be an array of tables ([[" + path + ".children]])");
      return;
    }
    std::set<std::string> ids;
    int i = 0;
    for (const auto& el : *n->as_array()) {
      std::string cpath = fmt::format("{}.children[{}]", path, i++);
      const toml::table& ct = *el.as_table();
      ChildSpec c;
      auto id = get_string(ct, cpath, "id");
      if (!id) {
        if (ct.get("id") == nullptr)
          problem(&ct, cpath + ".id", "missing (every child needs an id)");
      } else if (id->empty() || id->find_first_of("/ \t") != std::string::npos) {
        problem(ct.get("id"), cpath + ".id", "must be non-empty, without '/' or spaces");
      } else if (!ids.insert(*id).second) {
        problem(ct.get("id"), cpath + ".id", fmt::format("duplicate id '{}' under {}", *id, path));
      } else {
        c.id = *id;
      }
      c.kind = get_enum<ChildKind>(
                   ct, cpath, "type",
                   {{"worker", ChildKind::worker}, {"supervisor", ChildKind::supervisor}})
                   .value_or(ChildKind::worker);
      if (c.kind == ChildKind::supervisor) {
        known_keys(ct, cpath,
                   {"id", "type", "strategy", "intensity", "period_ms", "auto_shutdown", "children",
                    "template", "instances", "restart", "shutdown", "significant"});
        read_common(ct, cpath, c, /*supervisor=*/true);
        c.supervisor = std::make_shared<SupervisorSpec>();
        read_supervisor(ct, cpath, *c.supervisor);
      } else {
        read_worker(ct, cpath, c);
      }
      check_significant(ct, cpath, c);
      s.children.push_back(std::move(c));
    }
  }

  void check_significant(const toml::table& t, const std::string& path, const ChildSpec& c) {
    if (c.significant && c.restart == RestartType::permanent) {
      problem(t.get("significant"), path + ".significant",
              "a significant child must be transient or temporary (as in OTP)");
    }
  }

  void read_common(const toml::table& t, const std::string& path, ChildSpec& c, bool supervisor) {
    c.restart = get_enum<RestartType>(t, path, "restart",
                                      {{"permanent", RestartType::permanent},
                                       {"transient", RestartType::transient},
                                       {"temporary", RestartType::temporary}})
                    .value_or(RestartType::permanent);
    c.significant = get_bool(t, path, "significant").value_or(false);
    c.shutdown = supervisor ? Shutdown{Shutdown::Kind::infinity, Ms(0)} : Shutdown{};
    if (const toml::node* n = t.get("shutdown")) {
      if (n->is_integer()) {
        if (auto v = get_int(t, path, "shutdown", 1, 3'600'000)) {
          c.shutdown = Shutdown{Shutdown::Kind::timeout, Ms(*v)};
        }
      } else if (n->is_string() && n->as_string()->get() == "brutal_kill") {
        c.shutdown = Shutdown{Shutdown::Kind::brutal_kill, Ms(0)};
      } else if (n->is_string() && n->as_string()->get() == "infinity") {
        c.shutdown = Shutdown{Shutdown::Kind::infinity, Ms(0)};
      } else {
        problem(n, path + ".shutdown",
                "must be a timeout in ms (integer), \"brutal_kill\" or \"infinity\"");
      }
    }
  }

  // python_path: a string or an array of strings, relative to the tree file.
  std::optional<std::vector<std::string>> read_python_path(const toml::table& t,
                                                           const std::string& path) {
    const toml::node* n = t.get("python_path");
    if (n == nullptr) return std::nullopt;
    std::vector<std::string> out;
    auto add = [&](const toml::node& e) {
      if (!e.is_string() || e.as_string()->get().empty() ||
          e.as_string()->get().find(':') != std::string::npos) {
        problem(&e, path + ".python_path", "must be a directory (a non-empty string without ':')");
        return;
      }
      std::filesystem::path d(e.as_string()->get());
      if (d.is_relative()) d = file_.parent_path() / d;
      d = d.lexically_normal();
      std::error_code ec;
      if (!std::filesystem::is_directory(d, ec)) {
        problem(&e, path + ".python_path", fmt::format("'{}' is not a directory", d.string()));
        return;
      }
      out.push_back(d.string());
    };
    if (const auto* a = n->as_array()) {
      for (const auto& e : *a) add(e);
    } else {
      add(*n);
    }
    return out;
  }

  // Gives every Python worker child its arguments: the path and every Python
  // class of the tree under the same path (one zygote imports them all).
  void python_args(SupervisorSpec& s) {
    std::map<std::string, std::set<std::string>> classes;  // joined path -> classes
    std::vector<ChildSpec*> children;
    std::function<void(SupervisorSpec&)> walk = [&](SupervisorSpec& sup) {
      auto visit = [&](ChildSpec& c) {
        if (c.kind == ChildKind::supervisor) {
          if (c.supervisor) walk(*c.supervisor);
          return;
        }
        if (c.python_path.empty()) return;
        std::string joined;
        for (const auto& d : c.python_path) joined += (joined.empty() ? "" : ":") + d;
        for (const auto& a : c.actors) classes[joined].insert(a.type);
        children.push_back(&c);
      };
      for (auto& c : sup.children) visit(c);
      if (sup.child_template) visit(*sup.child_template);
    };
    walk(s);
    for (ChildSpec* c : children) {
      std::string joined;
      for (const auto& d : c->python_path) joined += (joined.empty() ? "" : ":") + d;
      std::string list;
      for (const auto& k : classes[joined]) list += (list.empty() ? "" : ",") + k;
      c->binary_args = {"--python-path=" + joined, "--python-actors=" + list};
    }
  }

  static bool python_class_spec(const std::string& s) {
    // module[.module...]:Class[.Nested...], each part a Python identifier
    auto colon = s.find(':');
    if (colon == std::string::npos || s.find(':', colon + 1) != std::string::npos) return false;
    auto dotted = [](std::string_view part) {
      if (part.empty()) return false;
      bool start = true;
      for (char ch : part) {
        bool alpha = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
        bool digit = ch >= '0' && ch <= '9';
        if (ch == '.') {
          if (start) return false;
          start = true;
        } else if (alpha || (digit && !start)) {
          start = false;
        } else {
          return false;
        }
      }
      return !start;
    };
    return dotted(std::string_view(s).substr(0, colon)) &&
           dotted(std::string_view(s).substr(colon + 1));
  }

  static bool has_python_actors(const toml::table& t) {
    const toml::node* n = t.get("actors");
    if (n == nullptr || !n->is_array()) return false;
    for (const auto& el : *n->as_array()) {
      if (el.is_table() && el.as_table()->get("python") != nullptr) return true;
    }
    return false;
  }

  void read_worker(const toml::table& t, const std::string& path, ChildSpec& c) {
    known_keys(
        t, path,
        {"id", "type", "binary", "actors", "restart", "shutdown", "significant", "start_timeout_ms",
         "backoff", "mailbox", "mailbox_bytes", "overflow", "block_timeout_ms", "log_file",
         "log_max_bytes", "log_max_files", "log_rate", "python_path"});
    const bool python = has_python_actors(t);
    if (python) {
      c.python_path = read_python_path(t, path).value_or(python_path_);
    } else if (t.get("python_path") != nullptr) {
      problem(t.get("python_path"), path + ".python_path",
              "only for a worker with Python actors ({python = \"module:Class\"})");
    }
    read_common(t, path, c, /*supervisor=*/false);
    read_log_keys(t, path, c);
    c.kind = ChildKind::worker;
    c.start_timeout = Ms(get_int(t, path, "start_timeout_ms", 1, 3'600'000).value_or(5000));
    c.mailbox_keep =
        get_enum<bool>(t, path, "mailbox", {{"keep", true}, {"drop", false}}).value_or(true);
    if (auto b = get_int(t, path, "mailbox_bytes", 4096, std::int64_t{1} << 30)) {
      if ((*b & (*b - 1)) != 0) {
        problem(t.get("mailbox_bytes"), path + ".mailbox_bytes",
                fmt::format("{} is not a power of two", *b));
      } else {
        c.mailbox_bytes = static_cast<std::size_t>(*b);
      }
    }
    c.overflow = get_enum<ChildSpec::Overflow>(t, path, "overflow",
                                               {{"block", ChildSpec::Overflow::block},
                                                {"fail", ChildSpec::Overflow::fail},
                                                {"drop", ChildSpec::Overflow::drop}})
                     .value_or(ChildSpec::Overflow::block);
    c.block_timeout = Ms(get_int(t, path, "block_timeout_ms", 0, 3'600'000).value_or(1000));
    if (auto b = get_string(t, path, "binary")) {
      if (auto p = resolve_binary(*b, t.get("binary"), path + ".binary")) c.binary = p->string();
    } else if (t.get("binary") == nullptr && python) {
      auto py = opts_.default_worker.parent_path() / "bulkhead-pyworker";
      if (::access(py.c_str(), X_OK) != 0) {
        problem(&t, path + ".actors",
                fmt::format("Python actors need the Python worker, but '{}' is not there "
                            "(built with pybind11-dev and libpython3.11-dev)",
                            py.string()));
      } else {
        c.binary = py.string();
      }
    } else if (t.get("binary") == nullptr) {
      c.binary = default_worker_;
      if (c.binary.empty()) problem(&t, path + ".binary", "missing, and [tree] names no worker");
    }
    if (const toml::table* bt = table_at(t, "backoff", path + ".backoff", false)) {
      std::string bp = path + ".backoff";
      known_keys(*bt, bp, {"initial_ms", "max_ms", "multiplier", "jitter", "reset_after_ms"});
      Backoff b;
      b.initial = Ms(get_int(*bt, bp, "initial_ms", 0, 3'600'000).value_or(b.initial.count()));
      b.max = Ms(get_int(*bt, bp, "max_ms", 0, 3'600'000).value_or(b.max.count()));
      b.multiplier = get_float(*bt, bp, "multiplier", 1.0, 100.0).value_or(b.multiplier);
      b.jitter = get_float(*bt, bp, "jitter", 0.0, 1.0).value_or(b.jitter);
      b.reset_after =
          Ms(get_int(*bt, bp, "reset_after_ms", 0, 86'400'000).value_or(b.reset_after.count()));
      if (b.max < b.initial) problem(bt->get("max_ms"), bp + ".max_ms", "must be >= initial_ms");
      c.backoff = b;
    }
    read_actors(t, path, c);
  }

  // log_file, log_max_bytes, log_max_files, log_rate (see config.hpp).
  void read_log_keys(const toml::table& t, const std::string& path, ChildSpec& c) {
    c.log_rate = static_cast<std::uint32_t>(
        get_int(t, path, "log_rate", 0, 10'000'000).value_or(c.log_rate));
    auto file = get_string(t, path, "log_file");
    if (!file) {
      if (t.get("log_file") != nullptr) return;  // already a problem
      for (const char* k : {"log_max_bytes", "log_max_files"}) {
        if (t.get(k) != nullptr) problem(t.get(k), path + "." + k, "needs log_file");
      }
      return;
    }
    c.log_max_bytes = static_cast<std::uint64_t>(
        get_int(t, path, "log_max_bytes", 16384, std::int64_t{1} << 40).value_or(10 << 20));
    c.log_max_files = static_cast<int>(get_int(t, path, "log_max_files", 0, 1000).value_or(5));
    const toml::node* n = t.get("log_file");
    std::string key = path + ".log_file";
    if (file->empty()) {
      problem(n, key, "must be a file path");
      return;
    }
    if (c.id == "template" && file->find("{id}") == std::string::npos) {
      problem(n, key, "a template's log_file must contain {id}: every instance would share it");
      return;
    }
    auto p = std::filesystem::absolute(file_.parent_path() / *file).lexically_normal();
    if (!p.has_filename()) {
      problem(n, key, fmt::format("'{}' names a directory, not a file", *file));
      return;
    }
    auto dir = p.parent_path();
    std::error_code ec;
    if (dir.string().find("{id}") == std::string::npos) {
      if (!std::filesystem::is_directory(dir, ec)) {
        problem(n, key, fmt::format("directory '{}' does not exist", dir.string()));
        return;
      }
      if (::access(dir.c_str(), W_OK | X_OK) != 0) {
        problem(n, key, fmt::format("directory '{}' is not writable", dir.string()));
        return;
      }
    }
    if (std::filesystem::is_directory(p, ec)) {
      problem(n, key, fmt::format("'{}' is a directory", p.string()));
      return;
    }
    if (auto [it, fresh] = log_files_.emplace(p.string(), key); !fresh) {
      problem(n, key, fmt::format("'{}' is already the log file of {}", p.string(), it->second));
      return;
    }
    c.log_file = p.string();
  }

  void read_actors(const toml::table& t, const std::string& path, ChildSpec& c) {
    const toml::node* n = t.get("actors");
    if (n == nullptr) {
      problem(&t, path + ".actors", "missing (a worker hosts at least one actor)");
      return;
    }
    if (!n->is_array_of_tables() || n->as_array()->empty()) {
      problem(n, path + ".actors", "must be a non-empty array of tables like {type = \"echo\"}");
      return;
    }
    std::optional<std::vector<std::string>> hosted;
    const bool python = !c.python_path.empty();
    if (!c.binary.empty() && !python) {
      auto it = probed_.find(c.binary);
      if (it == probed_.end()) it = probed_.emplace(c.binary, opts_.probe(c.binary)).first;
      hosted = it->second;
      if (!hosted) {
        problem(
            t.get("binary") ? t.get("binary") : n, path + ".binary",
            fmt::format("'{}' did not answer --list-actors: is it a Bulkhead worker?", c.binary));
      }
    }
    int i = 0;
    for (const auto& el : *n->as_array()) {
      std::string apath = fmt::format("{}.actors[{}]", path, i++);
      const toml::table& at = *el.as_table();
      known_keys(at, apath, {"type", "python", "name", "args"});
      ActorConfig a;
      auto type = get_string(at, apath, python ? "python" : "type");
      if (python && at.get("type") != nullptr) {
        problem(at.get("type"), apath + ".type",
                "a worker hosts either C++ actors (type) or Python actors (python), not both");
      } else if (python && !type) {
        if (at.get("python") == nullptr) {
          problem(&at, apath + ".python",
                  "missing (this worker hosts Python actors: python = \"module:Class\")");
        }
      } else if (python) {
        a.type = *type;
        a.python = true;
        if (!python_class_spec(a.type)) {
          problem(at.get("python"), apath + ".python",
                  fmt::format("'{}' is not \"module:Class\" (dotted Python identifiers)", a.type));
        }
      } else if (!type) {
        if (at.get("type") == nullptr) problem(&at, apath + ".type", "missing");
      } else {
        a.type = *type;
        if (hosted && std::find(hosted->begin(), hosted->end(), a.type) == hosted->end()) {
          std::string list;
          for (const auto& h : *hosted) list += (list.empty() ? "" : ", ") + h;
          problem(at.get("type"), apath + ".type",
                  fmt::format("unknown actor type '{}': {} hosts {}", a.type, c.binary, list));
        }
      }
      a.name = get_string(at, apath, "name").value_or("");
      if (!a.name.empty()) {
        if (c.id == "template") {
          problem(at.get("name"), apath + ".name",
                  "a template's actors cannot have names: every instance would share them");
        } else if (auto [it, fresh] = actor_names_.emplace(a.name, apath); !fresh) {
          problem(at.get("name"), apath + ".name",
                  fmt::format("actor name '{}' is already used by {}", a.name, it->second));
        }
      }
      if (const toml::table* args = table_at(at, "args", apath + ".args", false)) a.args = *args;
      c.actors.push_back(std::move(a));
    }
  }

  std::filesystem::path file_;
  const LoadOptions& opts_;
  std::string default_worker_;
  std::vector<std::string> python_path_;  // [tree] python_path (default: the file's dir)
  std::vector<std::string> problems_;
  std::map<std::string, std::optional<std::vector<std::string>>> probed_;
  std::map<std::string, std::string> actor_names_;  // name -> where first defined
  std::map<std::string, std::string> log_files_;    // path -> the key that named it
};

}  // namespace

TreeSpec load_tree(const std::filesystem::path& file, const LoadOptions& options) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(file, ec)) {
    throw ConfigError(
        {fmt::format("{}: cannot read tree file (missing or not a file)", file.string())});
  }
  return Loader(std::filesystem::absolute(file), options).load();
}

}  // namespace bulkhead::supervisor
