// Actor messaging between real processes: a real bulkhead-supervisor runs a
// tree of stock bulkhead-worker processes; the test attaches a
// bulkhead::worker::Client to the supervisor's attach socket and drives the
// built-in actors (echo, counter, crasher, relay, deferred, pinger, sleeper,
// and the test actors recorder, feeder, garbler: worker/builtin_actors.hpp).
//
// Each test: writes tree.toml into a fresh temp dir, fork/execs
//   bulkhead-supervisor tree.toml --events events.jsonl --socket DIR/s.sock
// (found in $BULKHEAD_BIN_DIR, default the build's bin/), waits for the
// `tree_started` event, connects a client; on teardown SIGTERMs the
// supervisor, reaps it and checks nothing is left: no process carrying the
// test's token in its environment (workers, zygotes, grandchildren), no
// /dev/shm/bulkhead-<supervisor pid>-* segment.  Every wait is bounded, and a
// watchdog ends the process if a test runs away.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "schema/value.capnp.h"
#include "worker/client.hpp"

#ifndef BULKHEAD_TEST_BIN_DIR
#error "BULKHEAD_TEST_BIN_DIR (the build's bin directory) must be defined"
#endif

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using bulkhead::schema::Value;
using bulkhead::worker::ActorRef;
using bulkhead::worker::CallError;
using bulkhead::worker::CallResult;
using bulkhead::worker::Client;
using bulkhead::worker::PayloadFn;
using bulkhead::worker::SendStatus;
using bulkhead::worker::Target;
using Clock = std::chrono::steady_clock;
using Ms = std::chrono::milliseconds;

constexpr const char* kTokenVar = "BULKHEAD_MSGTEST_TOKEN";
constexpr auto kWait = 10s;  // default bound of every wait (a shared, noisy 2-core VM)

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

fs::path bin_dir() {
  const char* e = std::getenv("BULKHEAD_BIN_DIR");
  return (e != nullptr && *e != '\0') ? fs::path(e) : fs::path(BULKHEAD_TEST_BIN_DIR);
}

// --- Values ---------------------------------------------------------------

// A Value description the test builds requests from.
struct V {
  enum class K { integer, symbol, text, tuple, list } k = K::integer;
  std::int64_t i = 0;
  std::string s;
  std::vector<V> items;
};
V I(std::int64_t x) {
  return V{V::K::integer, x, {}, {}};
}
V S(std::string s) {
  return V{V::K::symbol, 0, std::move(s), {}};
}
V T(std::string s) {
  return V{V::K::text, 0, std::move(s), {}};
}
V Tup(std::vector<V> items) {
  return V{V::K::tuple, 0, {}, std::move(items)};
}

void fill(Value::Builder b, const V& v) {
  switch (v.k) {
    case V::K::integer:
      b.setInt(v.i);
      break;
    case V::K::symbol:
      b.setSymbol(v.s);
      break;
    case V::K::text:
      b.setText(v.s);
      break;
    case V::K::tuple:
    case V::K::list: {
      auto l = v.k == V::K::tuple ? b.initTuple(static_cast<unsigned>(v.items.size()))
                                  : b.initList(static_cast<unsigned>(v.items.size()));
      for (unsigned n = 0; n < v.items.size(); ++n) fill(l[n], v.items[n]);
      break;
    }
  }
}

PayloadFn P(V v) {
  return bulkhead::worker::value_payload([v = std::move(v)](Value::Builder b) { fill(b, v); });
}

std::string show(Value::Reader v) {
  switch (v.which()) {
    case Value::INT:
      return std::to_string(v.getInt());
    case Value::SYMBOL:
      return std::string(v.getSymbol().cStr());
    case Value::TEXT:
      return "\"" + std::string(v.getText().cStr()) + "\"";
    case Value::TUPLE:
    case Value::LIST: {
      auto l = v.which() == Value::TUPLE ? v.getTuple() : v.getList();
      std::string out = v.which() == Value::TUPLE ? "(" : "[";
      for (unsigned n = 0; n < l.size(); ++n) out += (n ? ", " : "") + show(l[n]);
      return out + (v.which() == Value::TUPLE ? ")" : "]");
    }
    case Value::NULL_:
      return "null";
    default:
      return "(value)";
  }
}

std::string show(const CallResult& r) {
  if (!r.ok()) return std::string("error ") + to_string(r.error()) + ": " + r.error_text();
  try {
    return "ok " + show(r.value());
  } catch (const std::exception& e) {
    return std::string("ok (unreadable: ") + e.what() + ")";
  }
}

std::optional<std::int64_t> int_of(const CallResult& r) {
  if (!r.ok() || r.value().which() != Value::INT) return std::nullopt;
  return r.value().getInt();
}

std::vector<std::int64_t> ints_of(const CallResult& r) {
  std::vector<std::int64_t> out;
  if (!r.ok() || r.value().which() != Value::LIST) return out;
  for (auto x : r.value().getList()) out.push_back(x.getInt());
  return out;
}

std::vector<std::string> texts_of(const CallResult& r) {
  std::vector<std::string> out;
  if (!r.ok() || r.value().which() != Value::LIST) return out;
  for (auto x : r.value().getList()) out.emplace_back(x.getText().cStr());
  return out;
}

bool is_sym(const CallResult& r, const std::string& s) {
  return r.ok() && r.value().which() == Value::SYMBOL &&
         std::string(r.value().getSymbol().cStr()) == s;
}

// --- events ---------------------------------------------------------------

// One line of the supervisor's event log: a flat JSON object.  Values are
// kept as text (strings unescaped, numbers and booleans as written).
struct Event {
  std::map<std::string, std::string> f;
  [[nodiscard]] std::string get(const std::string& k) const {
    auto it = f.find(k);
    return it == f.end() ? "" : it->second;
  }
  [[nodiscard]] long long num(const std::string& k) const {
    auto s = get(k);
    return s.empty() ? -1 : std::atoll(s.c_str());
  }
  [[nodiscard]] std::string str() const {
    std::string out = "{";
    for (const auto& [k, v] : f) out += k + "=" + v + " ";
    return out + "}";
  }
};

std::optional<Event> parse_event(const std::string& line) {
  Event e;
  std::size_t i = 0;
  auto skip_ws = [&] {
    while (i < line.size() && std::isspace(static_cast<unsigned char>(line[i]))) ++i;
  };
  auto read_string = [&]() -> std::optional<std::string> {
    if (i >= line.size() || line[i] != '"') return std::nullopt;
    ++i;
    std::string out;
    while (i < line.size() && line[i] != '"') {
      if (line[i] == '\\' && i + 1 < line.size()) {
        ++i;
        switch (line[i]) {
          case 'n':
            out += '\n';
            break;
          case 't':
            out += '\t';
            break;
          case 'r':
            out += '\r';
            break;
          case 'u':
            out += '?';
            i += 4;
            break;
          default:
            out += line[i];
        }
        ++i;
        continue;
      }
      out += line[i++];
    }
    if (i >= line.size()) return std::nullopt;
    ++i;
    return out;
  };
  skip_ws();
  if (i >= line.size() || line[i] != '{') return std::nullopt;
  ++i;
  for (;;) {
    skip_ws();
    if (i < line.size() && line[i] == '}') return e;
    auto k = read_string();
    if (!k) return std::nullopt;
    skip_ws();
    if (i >= line.size() || line[i] != ':') return std::nullopt;
    ++i;
    skip_ws();
    std::string v;
    if (i < line.size() && line[i] == '"') {
      auto s = read_string();
      if (!s) return std::nullopt;
      v = *s;
    } else {
      while (i < line.size() && line[i] != ',' && line[i] != '}') v += line[i++];
      while (!v.empty() && std::isspace(static_cast<unsigned char>(v.back()))) v.pop_back();
    }
    e.f[*k] = v;
    skip_ws();
    if (i < line.size() && line[i] == ',') {
      ++i;
      continue;
    }
    if (i < line.size() && line[i] == '}') return e;
    return std::nullopt;
  }
}

using Pred = std::function<bool(const Event&)>;
Pred ev(const std::string& name, const std::string& child = "", long long incarnation = -1) {
  return [=](const Event& e) {
    return e.get("event") == name && (child.empty() || e.get("child") == child) &&
           (incarnation < 0 || e.num("incarnation") == incarnation);
  };
}

// --- processes --------------------------------------------------------------

bool process_alive(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string data;
  if (!std::getline(f, data)) return false;
  auto rp = data.rfind(')');
  if (rp == std::string::npos || rp + 2 >= data.size()) return false;
  char state = data[rp + 2];
  return state != 'Z' && state != 'X';
}

bool environ_has(const fs::path& environ_file, const std::string& needle) {
  std::ifstream f(environ_file, std::ios::binary);
  if (!f) return false;
  std::string env((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::size_t pos = 0;
  while (pos < env.size()) {
    auto end = env.find('\0', pos);
    if (end == std::string::npos) end = env.size();
    if (env.compare(pos, end - pos, needle) == 0) return true;
    pos = end + 1;
  }
  return false;
}

// Live processes whose environment carries NAME=token.
std::vector<pid_t> pids_with_token(const std::string& token) {
  std::vector<pid_t> out;
  const std::string needle = std::string(kTokenVar) + "=" + token;
  for (const auto& d : fs::directory_iterator("/proc")) {
    const std::string name = d.path().filename();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    pid_t pid = std::atoi(name.c_str());
    if (pid == ::getpid()) continue;
    bool found = environ_has(d.path() / "environ", needle);
    if (found && process_alive(pid)) out.push_back(pid);
  }
  return out;
}

std::vector<std::string> shm_segments_of(pid_t creator) {
  std::vector<std::string> out;
  const std::string prefix = "bulkhead-" + std::to_string(creator) + "-";
  std::error_code ec;
  for (const auto& d : fs::directory_iterator("/dev/shm", ec)) {
    std::string n = d.path().filename();
    if (n.rfind(prefix, 0) == 0) out.push_back(n);
  }
  return out;
}

// Ends the process if one test runs for longer than `limit`: no test may
// hang the suite (the supervisor and its workers die with us: PDEATHSIG).
class Watchdog {
 public:
  Watchdog(std::string name, std::chrono::seconds limit) : name_(std::move(name)) {
    thread_ = std::thread([this, limit] {
      std::unique_lock lk(mu_);
      if (!cv_.wait_for(lk, limit, [this] { return done_; })) {
        std::fprintf(stderr, "\nWATCHDOG: test %s still running after %lld s: aborting\n",
                     name_.c_str(), static_cast<long long>(limit.count()));
        std::fflush(stderr);
        ::_exit(99);
      }
    });
  }
  ~Watchdog() {
    {
      std::lock_guard lk(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::string name_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

// --- the fixture --------------------------------------------------------------

class Messaging : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    watchdog_ = std::make_unique<Watchdog>(info->name(), 50s);
    std::string tmpl = (fs::temp_directory_path() / "bulkhead-msgtest-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << std::strerror(errno);
    dir_ = tmpl;
    std::random_device rd;
    token_ = std::to_string(rd()) + std::to_string(rd()) + std::to_string(::getpid());
  }

  void TearDown() override {
    client_.reset();
    if (sup_pid_ > 0) {
      stop_supervisor();
      check_nothing_left();
    }
    if (!HasFailure()) {
      std::error_code ec;
      fs::remove_all(dir_, ec);
    } else {
      std::fprintf(stderr, "kept %s for inspection\n--- supervisor log tail ---\n%s\n",
                   dir_.c_str(), log_tail(40).c_str());
    }
    watchdog_.reset();
  }

  // Starts the supervisor on `toml`, waits for tree_started, connects client().
  // On failure: records it and throws, which ends the test (then TearDown).
  void start(const std::string& toml) {
    {
      std::ofstream f(dir_ / "tree.toml");
      f << toml;
    }
    const fs::path sup = bin_dir() / "bulkhead-supervisor";
    require(::access(sup.c_str(), X_OK) == 0,
            sup.string() + " is not executable (set BULKHEAD_BIN_DIR)");
    socket_ = (dir_ / "s.sock").string();
    std::vector<std::string> args = {sup.string(), (dir_ / "tree.toml").string(),
                                     "--events",   (dir_ / "events.jsonl").string(),
                                     "--socket",   socket_};
    std::vector<std::string> envs;
    for (char** e = environ; *e != nullptr; ++e) {
      if (std::strncmp(*e, kTokenVar, std::strlen(kTokenVar)) != 0) envs.emplace_back(*e);
    }
    envs.push_back(std::string(kTokenVar) + "=" + token_);
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : envs) envp.push_back(e.data());
    envp.push_back(nullptr);
    const std::string log = (dir_ / "supervisor.log").string();
    const pid_t parent = ::getpid();
    pid_t pid = ::fork();
    require(pid >= 0, std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
      // Async-signal-safe calls only.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      rlimit none{0, 0};
      ::setrlimit(RLIMIT_CORE, &none);  // crash tests segfault on purpose
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      int devnull = ::open("/dev/null", O_RDONLY);
      if (devnull >= 0) ::dup2(devnull, 0);
      sigset_t all;
      sigemptyset(&all);
      ::sigprocmask(SIG_SETMASK, &all, nullptr);
      ::execve(argv[0], argv.data(), envp.data());
      ::_exit(127);
    }
    sup_pid_ = pid;
    require(wait_event(ev("tree_started")).has_value(), "the tree did not start");
    client_ = connect();
    require(client_ != nullptr, "no client");
  }

  // Records a fatal problem and ends the test.
  static void require(bool ok, const std::string& what) {
    if (ok) return;
    ADD_FAILURE() << what;
    throw std::runtime_error(what);
  }

  std::unique_ptr<Client> connect() {
    try {
      return Client::connect(socket_, 5s);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "cannot connect a client: " << e.what();
      return nullptr;
    }
  }

  Client& client() { return *client_; }

  // --- events ---

  std::vector<Event> events() {
    std::ifstream f(dir_ / "events.jsonl");
    std::string line;
    std::vector<Event> out;
    while (std::getline(f, line)) {
      if (line.empty()) continue;
      if (f.eof()) break;  // a partial last line: read it next time
      if (auto e = parse_event(line)) out.push_back(std::move(*e));
    }
    return out;
  }
  std::size_t mark() { return events().size(); }

  std::optional<Event> find_event(const Pred& p, std::size_t since = 0) {
    auto es = events();
    for (std::size_t n = since; n < es.size(); ++n) {
      if (p(es[n])) return es[n];
    }
    return std::nullopt;
  }

  std::optional<Event> wait_event(const Pred& p, std::size_t since = 0,
                                  Clock::duration timeout = kWait) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      if (auto e = find_event(p, since)) return e;
      if (sup_pid_ > 0 && !supervisor_running()) {
        if (auto e = find_event(p, since)) return e;
        ADD_FAILURE() << "the supervisor exited while the test waited for an event";
        return std::nullopt;
      }
      if (Clock::now() >= deadline) {
        auto es = events();
        std::string last;
        for (std::size_t n = es.size() > 12 ? es.size() - 12 : 0; n < es.size(); ++n) {
          last += "  " + es[n].str() + "\n";
        }
        ADD_FAILURE() << "timed out waiting for an event; last events:\n" << last;
        return std::nullopt;
      }
      std::this_thread::sleep_for(2ms);
    }
  }

  // The current pid of a worker child (from spawned/ready events).
  pid_t pid_of(const std::string& child) {
    pid_t pid = 0;
    for (const auto& e : events()) {
      if (e.get("child") != child) continue;
      auto name = e.get("event");
      if (name == "spawned" || name == "ready") pid = static_cast<pid_t>(e.num("pid"));
      if (name == "exited" && e.num("pid") == pid) pid = 0;
    }
    return pid;
  }

  void kill_child(const std::string& child, int sig) {
    pid_t pid = pid_of(child);
    require(pid > 0, "no live pid for " + child);
    require(::kill(pid, sig) == 0, std::string("kill: ") + std::strerror(errno));
  }

  // Waits until the client sees `name` at `incarnation` (the client learns of
  // restarts from the supervisor's peerUp, a moment after the ready event).
  std::optional<ActorRef> wait_whereis(Client& c, const std::string& name,
                                       std::uint32_t incarnation) {
    const auto deadline = Clock::now() + kWait;
    for (;;) {
      auto r = c.whereis(name);
      if (r && r->incarnation == incarnation) return r;
      if (Clock::now() >= deadline) {
        ADD_FAILURE() << "client never saw " << name << " at incarnation " << incarnation;
        return std::nullopt;
      }
      std::this_thread::sleep_for(2ms);
    }
  }

  std::string log() {
    std::ifstream f(dir_ / "supervisor.log");
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  }
  std::string log_tail(std::size_t n) {
    auto text = log();
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    std::string out;
    for (std::size_t k = lines.size() > n ? lines.size() - n : 0; k < lines.size(); ++k) {
      out += lines[k] + "\n";
    }
    return out;
  }

  // Sends SIGUSR2 and returns the next `stats` event of `child`.
  std::optional<Event> stats_of(const std::string& child) {
    std::size_t m = mark();
    EXPECT_EQ(::kill(sup_pid_, SIGUSR2), 0);
    return wait_event(
        [&](const Event& e) { return e.get("event") == "stats" && e.get("child") == child; }, m);
  }

  bool supervisor_running() {
    if (sup_pid_ <= 0 || sup_exited_) return false;
    int status = 0;
    pid_t r = ::waitpid(sup_pid_, &status, WNOHANG);
    if (r == sup_pid_) {
      sup_exited_ = true;
      sup_status_ = status;
      return false;
    }
    return true;
  }

 private:
  void stop_supervisor() {
    if (supervisor_running()) ::kill(sup_pid_, SIGTERM);
    const auto deadline = Clock::now() + kWait;
    while (supervisor_running() && Clock::now() < deadline) std::this_thread::sleep_for(5ms);
    if (supervisor_running()) {
      ADD_FAILURE() << "supervisor " << sup_pid_ << " still running 10 s after SIGTERM";
      ::kill(sup_pid_, SIGKILL);
      while (supervisor_running()) std::this_thread::sleep_for(5ms);
    }
    EXPECT_TRUE(WIFEXITED(sup_status_) && WEXITSTATUS(sup_status_) == 0)
        << "supervisor ended with status " << sup_status_;
  }

  void check_nothing_left() {
    // Every process of this test carries the token (workers, zygotes and
    // their children inherit the supervisor's environment); the pids the
    // events named are checked as well.
    std::vector<pid_t> seen;
    for (const auto& e : events()) {
      if (e.f.count("pid") && e.get("event") != "supervisor_started") {
        seen.push_back(static_cast<pid_t>(e.num("pid")));
      }
    }
    std::vector<pid_t> left;
    const auto deadline = Clock::now() + 3s;
    for (;;) {
      left = pids_with_token(token_);
      for (pid_t p : seen) {
        if (process_alive(p) && std::find(left.begin(), left.end(), p) == left.end()) {
          left.push_back(p);
        }
      }
      if (left.empty() || Clock::now() >= deadline) break;
      std::this_thread::sleep_for(10ms);
    }
    for (pid_t p : left) ::kill(p, SIGKILL);
    std::string pids;
    for (pid_t p : left) pids += std::to_string(p) + " ";
    EXPECT_TRUE(left.empty()) << "processes left behind: " << pids;
    auto segs = shm_segments_of(sup_pid_);
    std::string names;
    for (const auto& s : segs) {
      names += s + " ";
      ::unlink(("/dev/shm/" + s).c_str());
    }
    EXPECT_TRUE(segs.empty()) << "shared memory segments left behind: " << names;
  }

  std::unique_ptr<Watchdog> watchdog_;
  fs::path dir_;
  std::string token_;
  std::string socket_;
  pid_t sup_pid_ = 0;
  bool sup_exited_ = false;
  int sup_status_ = 0;
  std::unique_ptr<Client> client_;
};

// A tree file: [root] with high restart intensity, then the children.
std::string tree(const std::string& children) {
  return "[tree]\nname = \"msgtest\"\n\n[root]\nstrategy = \"one_for_one\"\n"
         "intensity = 100\nperiod_ms = 60000\n\n" +
         children;
}

// ============================================================================
// call, cast, info

TEST_F(Messaging, ClientCallsCastsAndSendsToActorsInAWorker) {
  start(tree(R"(
[[root.children]]
id = "w"
actors = [{ type = "echo", name = "echo" }, { type = "counter", name = "counter" }]
)"));
  auto r = client().call("echo", P(I(42)), 2s);
  ASSERT_EQ(int_of(r), 42) << show(r);
  r = client().call("echo", P(Tup({S("hello"), T("wörld"), I(-7)})), 2s);
  ASSERT_TRUE(r.ok()) << show(r);
  EXPECT_EQ(show(r.value()), "(hello, \"wörld\", -7)");

  for (int n = 0; n < 10; ++n) ASSERT_EQ(client().cast("counter", P(S("inc"))), SendStatus::ok);
  ASSERT_EQ(client().cast("counter", P(Tup({S("add"), I(5)}))), SendStatus::ok);
  r = client().call("counter", P(S("get")), 2s);
  EXPECT_EQ(int_of(r), 15) << show(r);

  for (int n = 0; n < 3; ++n) ASSERT_EQ(client().send("counter", P(I(n))), SendStatus::ok);
  r = client().call("counter", P(S("infos")), 2s);
  EXPECT_EQ(int_of(r), 3) << show(r);

  EXPECT_EQ(client().cast("nobody", P(S("inc"))), SendStatus::noproc);
  EXPECT_EQ(client().send("nobody", P(S("inc"))), SendStatus::noproc);
}

TEST_F(Messaging, CallToAnUnregisteredNameFailsAtOnceWithNoproc) {
  start(tree(R"(
[[root.children]]
id = "w"
actors = [{ type = "echo", name = "echo" }]
)"));
  auto t0 = Clock::now();
  auto r = client().call("nobody", P(I(1)), 5s);
  EXPECT_LT(ms_since(t0), 100.0);
  EXPECT_EQ(r.error(), CallError::noproc) << show(r);
  EXPECT_NE(r.error_text().find("nobody"), std::string::npos) << r.error_text();
  // A name is case-sensitive and exact.
  r = client().call("Echo", P(I(1)), 5s);
  EXPECT_EQ(r.error(), CallError::noproc) << show(r);
  // The client is still usable afterwards.
  EXPECT_EQ(int_of(client().call("echo", P(I(3)), 2s)), 3);
  // By reference: no such worker slot (at once), no such actor in a worker
  // (the worker answers noproc).
  auto echo = client().whereis("echo");
  ASSERT_TRUE(echo);
  t0 = Clock::now();
  r = client().call(ActorRef{9999, 0, 0}, P(I(1)), 5s);
  EXPECT_EQ(r.error(), CallError::noproc) << show(r);
  r = client().call(ActorRef{echo->worker, 0, 99}, P(I(1)), 5s);
  EXPECT_EQ(r.error(), CallError::noproc) << show(r);
  EXPECT_LT(ms_since(t0), 1000.0);
}

TEST_F(Messaging, CallToAnActorThatHandlesNoCallsFailsWithHandlerError) {
  start(tree(R"(
[[root.children]]
id = "w"
actors = [{ type = "chatty", name = "chatty", args = { lines = 1 } }, { type = "echo", name = "echo" }]
)"));
  auto t0 = Clock::now();
  auto r = client().call("chatty", P(I(1)), 5s);
  EXPECT_LT(ms_since(t0), 1000.0);
  EXPECT_EQ(r.error(), CallError::handler_error) << show(r);
  EXPECT_NE(r.error_text().find("does not handle calls"), std::string::npos) << r.error_text();
  EXPECT_EQ(int_of(client().call("echo", P(I(4)), 2s)), 4);
}

TEST_F(Messaging, LargeMessagesTravelWholeAndTooLargeOnesAreRefused) {
  start(tree(R"(
[[root.children]]
id = "w"
actors = [{ type = "echo", name = "echo" }, { type = "counter", name = "counter" }]
)"));
  // The default mailbox is 256 KiB: a message may take up to half of it.
  std::string big(100'000, 'x');
  for (std::size_t n = 0; n < big.size(); n += 97) big[n] = static_cast<char>('a' + n % 26);
  for (int round = 0; round < 5; ++round) {
    auto r = client().call("echo", P(T(big)), 5s);
    ASSERT_TRUE(r.ok()) << show(r).substr(0, 200);
    ASSERT_EQ(r.value().which(), Value::TEXT);
    EXPECT_TRUE(std::string(r.value().getText().cStr()) == big) << "round " << round;
  }
  std::string huge(200'000, 'y');
  auto t0 = Clock::now();
  auto r = client().call("echo", P(T(huge)), 5s);
  EXPECT_EQ(r.error(), CallError::overflow) << show(r).substr(0, 200);
  EXPECT_LT(ms_since(t0), 500.0);
  EXPECT_EQ(client().cast("counter", P(T(huge))), SendStatus::overflow);
  // Small messages still flow afterwards.
  EXPECT_EQ(int_of(client().call("echo", P(I(5)), 2s)), 5);
}

TEST_F(Messaging, WorkersCallCastAndSendToEachOther) {
  start(tree(R"(
[[root.children]]
id = "a"
actors = [{ type = "pinger", name = "pinger" }, { type = "feeder", name = "feeder" }]

[[root.children]]
id = "b"
actors = [{ type = "echo", name = "echo" }, { type = "counter", name = "counter" }]
)"));
  // call: 50 calls pinger -> echo (another process), each answered.
  auto r = client().call("pinger", P(Tup({S("ping"), S("echo"), I(50), I(0)})), 10s);
  ASSERT_TRUE(r.ok()) << show(r);
  ASSERT_EQ(r.value().which(), Value::TUPLE);
  EXPECT_GT(r.value().getTuple()[0].getInt(), 0);
  // cast: 500 `inc` from pinger to counter, then pinger's own sync call.
  r = client().call("pinger", P(Tup({S("flood"), S("counter"), I(500)})), 10s);
  ASSERT_TRUE(r.ok()) << show(r);
  r = client().call("counter", P(S("get")), 2s);
  EXPECT_EQ(int_of(r), 500) << show(r);
  // info: 40 plain sends from feeder to counter (handle_info).
  r = client().call("feeder", P(Tup({S("info"), S("counter"), I(0), I(40)})), 10s);
  ASSERT_EQ(int_of(r), 40) << show(r);
  // The feeder and this client are two senders: no order between them.
  std::optional<std::int64_t> infos;
  const auto deadline = Clock::now() + 3s;
  while (Clock::now() < deadline) {
    infos = int_of(client().call("counter", P(S("infos")), 2s));
    if (infos == 40) break;
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(infos, 40);
}

TEST_F(Messaging, DeferredReplyReachesEveryHeldCaller) {
  start(tree(R"(
[[root.children]]
id = "d"
actors = [{ type = "deferred", name = "deferred" }]

[[root.children]]
id = "r"
actors = [{ type = "relay", name = "relay" }]
)"));
  // Two clients and a relay (a worker) each call `hold`; nobody is answered
  // until `release`, then everyone gets `released`.
  std::vector<std::unique_ptr<Client>> holders;
  for (int n = 0; n < 2; ++n) {
    holders.push_back(connect());
    ASSERT_NE(holders.back(), nullptr);
  }
  auto via_relay = connect();
  ASSERT_NE(via_relay, nullptr);
  std::vector<std::string> results(3);
  std::vector<double> elapsed(3);
  std::vector<std::thread> threads;
  auto t0 = Clock::now();
  for (int n = 0; n < 2; ++n) {
    threads.emplace_back([&, n] {
      auto r = holders[n]->call("deferred", P(S("hold")), 8s);
      results[n] = is_sym(r, "released") ? "released" : show(r);
      elapsed[n] = ms_since(t0);
    });
  }
  threads.emplace_back([&] {
    // relay's own call has a 2 s timeout: release comes well before.
    auto r = via_relay->call("relay", P(Tup({S("deferred"), S("hold")})), 8s);
    results[2] = is_sym(r, "released") ? "released" : show(r);
    elapsed[2] = ms_since(t0);
  });
  // Wait until deferred holds all three (its `get` counts held calls).
  const auto deadline = Clock::now() + 5s;
  std::optional<std::int64_t> held;
  while (Clock::now() < deadline) {
    held = int_of(client().call("deferred", P(S("get")), 2s));
    if (held == 3) break;
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(held, 3);
  std::this_thread::sleep_for(100ms);
  double released_at = ms_since(t0);
  EXPECT_EQ(client().cast("deferred", P(S("release"))), SendStatus::ok);
  for (auto& t : threads) t.join();
  for (int n = 0; n < 3; ++n) {
    EXPECT_EQ(results[n], "released") << "caller " << n;
    EXPECT_GE(elapsed[n], released_at) << "caller " << n << " answered before the release";
    EXPECT_LT(elapsed[n], released_at + 1000) << "caller " << n;
  }
}

TEST_F(Messaging, NestedCallsAcrossWorkersDoNotDeadlock) {
  start(tree(R"(
[[root.children]]
id = "one"
actors = [{ type = "relay", name = "relay1" }, { type = "echo", name = "echo1" },
          { type = "relay", name = "relay1b" }]

[[root.children]]
id = "two"
actors = [{ type = "relay", name = "relay2" }, { type = "echo", name = "echo2" }]
)"));
  struct Case {
    const char* what;
    V request;
    std::int64_t want;
  };
  std::vector<Case> cases = {
      {"relay1 -> echo2", Tup({S("echo2"), I(5)}), 5},
      // relay2 calls back into relay1's worker while relay1 waits for it.
      {"relay1 -> relay2 -> echo1", Tup({S("relay2"), Tup({S("echo1"), I(6)})}), 6},
      // Three deep, alternating workers: relay1 -> relay2 -> relay1b -> echo2.
      {"relay1 -> relay2 -> relay1b -> echo2",
       Tup({S("relay2"), Tup({S("relay1b"), Tup({S("echo2"), I(7)})})}), 7},
      // Four deep, back and forth twice.
      {"relay1 -> relay2 -> relay1b -> echo1 (a local call while relay1 waits)",
       Tup({S("relay2"), Tup({S("relay1b"), Tup({S("echo1"), I(8)})})}), 8},
  };
  for (const auto& c : cases) {
    auto t0 = Clock::now();
    auto r = client().call("relay1", P(c.request), 5s);
    double ms = ms_since(t0);
    EXPECT_EQ(int_of(r), c.want) << c.what << ": " << show(r);
    // relay's inner calls time out after 2 s: a deadlock would show as >= 2 s.
    EXPECT_LT(ms, 1000.0) << c.what;
  }
  // Many in a row (dispatch state is left clean after each nested call).
  for (int n = 0; n < 50; ++n) {
    auto r = client().call("relay1", P(Tup({S("relay2"), Tup({S("echo1"), I(n)})})), 5s);
    ASSERT_EQ(int_of(r), n) << show(r);
  }
}

// ============================================================================
// FIFO

TEST_F(Messaging, CastsFromEachSenderArriveInOrderUnderLoad) {
  start(tree(R"(
[[root.children]]
id = "rec"
actors = [{ type = "recorder", name = "rec" }]

[[root.children]]
id = "feed"
actors = [{ type = "feeder", name = "feeder" }]

[[root.children]]
id = "other"
actors = [{ type = "recorder", name = "napper" }]
)"));
  constexpr int kN = 1500;
  constexpr std::int64_t kFeedBase = 1'000'000;
  auto feeder_client = connect();
  ASSERT_NE(feeder_client, nullptr);
  std::string feeder_result;
  // A second sender inside the tree, concurrently.
  std::thread feeder([&] {
    auto r = feeder_client->call("feeder", P(Tup({S("feed"), S("rec"), I(kFeedBase), I(kN)})), 20s);
    feeder_result = show(r);
  });
  int not_ok = 0;
  for (int n = 0; n < kN; ++n) {
    if (client().cast("rec", P(I(n))) != SendStatus::ok) ++not_ok;
    if (n == kN / 3) {
      // rec makes a 150 ms nested call: what arrives meanwhile is held aside
      // by its node and must still be handled in order.
      if (client().cast("rec", P(Tup({S("nest"), S("napper"), I(150)}))) != SendStatus::ok) {
        ++not_ok;
      }
    }
  }
  feeder.join();
  EXPECT_EQ(not_ok, 0);
  EXPECT_EQ(feeder_result, "ok " + std::to_string(kN));
  // Between two senders there is no order: the feeder's casts may still be
  // queued behind the client's (its ring is drained later).  Wait for all.
  std::vector<std::int64_t> seen;
  const auto deadline = Clock::now() + 5s;
  while (Clock::now() < deadline) {
    auto r = client().call("rec", P(S("list")), 5s);
    ASSERT_TRUE(r.ok()) << show(r);
    seen = ints_of(r);
    if (seen.size() >= 2u * kN) break;
    std::this_thread::sleep_for(10ms);
  }
  std::vector<std::int64_t> mine, fed;
  for (auto x : seen) (x >= kFeedBase ? fed : mine).push_back(x - (x >= kFeedBase ? kFeedBase : 0));
  std::vector<std::int64_t> want(kN);
  for (int n = 0; n < kN; ++n) want[n] = n;
  EXPECT_EQ(mine.size(), static_cast<std::size_t>(kN));
  EXPECT_EQ(fed.size(), static_cast<std::size_t>(kN));
  EXPECT_TRUE(mine == want) << "the client's casts arrived out of order or not exactly once";
  EXPECT_TRUE(fed == want) << "the feeder's casts arrived out of order or not exactly once";
}

// ============================================================================
// mailbox across restarts

TEST_F(Messaging, MailboxKeepDeliversCastsSentWhileTheWorkerWasDead) {
  // Two workers: `a` was talked to before it died, `b` is first contacted
  // while dead (its channel is created then and handed over at restart).
  start(tree(R"(
[[root.children]]
id = "a"
actors = [{ type = "counter", name = "count_a" }, { type = "recorder", name = "rec_a" }]
backoff = { initial_ms = 1200, max_ms = 1200, jitter = 0.0 }

[[root.children]]
id = "b"
actors = [{ type = "counter", name = "count_b" }]
backoff = { initial_ms = 1200, max_ms = 1200, jitter = 0.0 }
)"));
  ASSERT_EQ(int_of(client().call("count_a", P(S("get")), 2s)), 0);
  std::size_t m = mark();
  kill_child("root/a", SIGKILL);
  kill_child("root/b", SIGKILL);
  ASSERT_TRUE(wait_event(ev("exited", "root/a", 1), m));
  ASSERT_TRUE(wait_event(ev("exited", "root/b", 1), m));
  constexpr int kN = 300;
  for (int n = 0; n < kN; ++n) {
    ASSERT_EQ(client().cast("count_a", P(S("inc"))), SendStatus::ok) << n;
    ASSERT_EQ(client().cast("rec_a", P(I(n))), SendStatus::ok) << n;
    ASSERT_EQ(client().cast("count_b", P(S("inc"))), SendStatus::ok) << n;
  }
  // Everything above was sent while both were dead.
  ASSERT_FALSE(find_event(ev("spawned", "root/a", 2), m)) << "backoff too short for this test";
  ASSERT_FALSE(find_event(ev("spawned", "root/b", 2), m)) << "backoff too short for this test";
  ASSERT_TRUE(wait_event(ev("ready", "root/a", 2), m));
  ASSERT_TRUE(wait_event(ev("ready", "root/b", 2), m));
  ASSERT_TRUE(wait_whereis(client(), "count_a", 2));
  ASSERT_TRUE(wait_whereis(client(), "count_b", 2));
  auto r = client().call("count_a", P(S("get")), 3s);
  EXPECT_EQ(int_of(r), kN) << show(r);
  r = client().call("rec_a", P(S("list")), 3s);
  std::vector<std::int64_t> want(kN);
  for (int n = 0; n < kN; ++n) want[n] = n;
  EXPECT_TRUE(ints_of(r) == want) << "not each cast exactly once, in order: " << show(r);
  r = client().call("count_b", P(S("get")), 3s);
  EXPECT_EQ(int_of(r), kN) << "channel opened while dead: " << show(r);
  // Nothing arrives twice later on.
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(int_of(client().call("count_a", P(S("get")), 3s)), kN);
}

TEST_F(Messaging, MailboxDropDiscardsCastsSentWhileTheWorkerWasDead) {
  start(tree(R"(
[[root.children]]
id = "a"
mailbox = "drop"
actors = [{ type = "counter", name = "count_a" }, { type = "recorder", name = "rec_a" }]
backoff = { initial_ms = 1000, max_ms = 1000, jitter = 0.0 }
)"));
  ASSERT_EQ(int_of(client().call("count_a", P(S("get")), 2s)), 0);
  std::size_t m = mark();
  kill_child("root/a", SIGKILL);
  ASSERT_TRUE(wait_event(ev("exited", "root/a", 1), m));
  for (int n = 0; n < 100; ++n) {
    ASSERT_EQ(client().cast("count_a", P(S("inc"))), SendStatus::ok);
    ASSERT_EQ(client().cast("rec_a", P(I(n))), SendStatus::ok);
  }
  ASSERT_FALSE(find_event(ev("spawned", "root/a", 2), m)) << "backoff too short for this test";
  ASSERT_TRUE(wait_event(ev("ready", "root/a", 2), m));
  ASSERT_TRUE(wait_whereis(client(), "count_a", 2));
  auto r = client().call("count_a", P(S("get")), 3s);
  EXPECT_EQ(int_of(r), 0) << show(r);
  r = client().call("rec_a", P(S("list")), 3s);
  EXPECT_TRUE(r.ok() && ints_of(r).empty()) << show(r);
  // The new incarnation does get what is sent to it.
  ASSERT_EQ(client().cast("count_a", P(S("inc"))), SendStatus::ok);
  EXPECT_EQ(int_of(client().call("count_a", P(S("get")), 3s)), 1);
}

// ============================================================================
// callee death

TEST_F(Messaging, PendingCallFailsPromptlyWhenTheCalleeIsKilled) {
  start(tree(R"(
[[root.children]]
id = "d"
actors = [{ type = "deferred", name = "deferred" }]
)"));
  ASSERT_EQ(int_of(client().call("deferred", P(S("get")), 2s)), 0);
  pid_t pid = pid_of("root/d");
  ASSERT_GT(pid, 0);
  std::atomic<bool> killed{false};
  Clock::time_point killed_at;
  std::thread killer([&] {
    std::this_thread::sleep_for(300ms);
    killed_at = Clock::now();
    ::kill(pid, SIGKILL);
    killed = true;
  });
  auto r = client().call("deferred", P(S("hold")), 10s);
  auto done = Clock::now();
  killer.join();
  ASSERT_TRUE(killed);
  EXPECT_EQ(r.error(), CallError::callee_died) << show(r);
  const double after_kill = std::chrono::duration<double, std::milli>(done - killed_at).count();
  EXPECT_LT(after_kill, 2000.0);
  EXPECT_NE(r.error_text().find("signal 9"), std::string::npos) << r.error_text();
  EXPECT_NE(r.error_text().find("root/d"), std::string::npos) << r.error_text();
}

TEST_F(Messaging, PendingCallFailsPromptlyWhenTheCalleeSegfaults) {
  start(tree(R"(
[[root.children]]
id = "c"
actors = [{ type = "crasher", name = "crasher", args = { mode = "segv" } }]
)"));
  auto t0 = Clock::now();
  auto r = client().call("crasher", P(S("crash")), 10s);
  EXPECT_LT(ms_since(t0), 2000.0);
  EXPECT_EQ(r.error(), CallError::callee_died) << show(r);
  EXPECT_NE(r.error_text().find("signal 11"), std::string::npos) << r.error_text();
}

TEST_F(Messaging, PendingCallFailsPromptlyWhenTheCalleeThrows) {
  start(tree(R"(
[[root.children]]
id = "c"
actors = [{ type = "echo", name = "bystander" },
          { type = "crasher", name = "crasher", args = { mode = "throw" } }]
)"));
  std::size_t m = mark();
  auto t0 = Clock::now();
  auto r = client().call("crasher", P(S("crash")), 10s);
  EXPECT_LT(ms_since(t0), 2000.0);
  EXPECT_EQ(r.error(), CallError::callee_died) << show(r);
  EXPECT_NE(r.error_text().find("std::runtime_error"), std::string::npos) << r.error_text();
  EXPECT_NE(r.error_text().find("crasher: failure requested"), std::string::npos) << r.error_text();
  // The exit reason names the actor whose handler threw, not its neighbour.
  auto e = wait_event(ev("exited", "root/c", 1), m);
  ASSERT_TRUE(e);
  EXPECT_NE(e->get("reason_text").find("in actor crasher"), std::string::npos) << e->str();
}

TEST_F(Messaging, AWorkerCallerSeesItsCalleeDie) {
  start(tree(R"(
[[root.children]]
id = "r"
actors = [{ type = "relay", name = "relay" }]

[[root.children]]
id = "c"
actors = [{ type = "crasher", name = "crasher", args = { mode = "segv" } }]
)"));
  // relay's inner call (2 s timeout) fails with callee_died at once; relay
  // answers a handler_error carrying the text.
  auto t0 = Clock::now();
  auto r = client().call("relay", P(Tup({S("crasher"), S("crash")})), 10s);
  EXPECT_LT(ms_since(t0), 1500.0);
  EXPECT_EQ(r.error(), CallError::handler_error) << show(r);
  EXPECT_NE(r.error_text().find("callee_died"), std::string::npos) << r.error_text();
  EXPECT_NE(r.error_text().find("signal 11"), std::string::npos) << r.error_text();
}

TEST_F(Messaging, AReplyToACallerThatDetachedDoesNotStallTheReplier) {
  // A client calls `hold`, gives up and detaches before deferred ever
  // answered it.  The late reply has nowhere to go: it must be dropped
  // without holding up deferred's worker.
  start(tree(R"(
[[root.children]]
id = "d"
actors = [{ type = "deferred", name = "deferred" }]
)"));
  {
    auto gone = connect();
    ASSERT_NE(gone, nullptr);
    auto r = gone->call("deferred", P(S("hold")), 100ms);
    ASSERT_EQ(r.error(), CallError::timeout) << show(r);
    std::size_t m = mark();
    gone.reset();
    ASSERT_TRUE(wait_event(ev("client_detached"), m));
  }
  ASSERT_EQ(int_of(client().call("deferred", P(S("get")), 2s)), 1);
  ASSERT_EQ(client().cast("deferred", P(S("release"))), SendStatus::ok);
  auto t0 = Clock::now();
  auto r = client().call("deferred", P(S("get")), 8s);
  double ms = ms_since(t0);
  EXPECT_EQ(int_of(r), 1) << show(r);
  EXPECT_LT(ms, 1000.0);
}

TEST_F(Messaging, TimedOutCallsLateReplyIsDropped) {
  start(tree(R"(
[[root.children]]
id = "d"
actors = [{ type = "deferred", name = "deferred" }]
)"));
  auto t0 = Clock::now();
  auto r = client().call("deferred", P(S("hold")), 100ms);
  double ms = ms_since(t0);
  EXPECT_EQ(r.error(), CallError::timeout) << show(r);
  EXPECT_GE(ms, 95.0);
  EXPECT_LT(ms, 1000.0);
  // The held call is answered now, too late: that reply must not be taken
  // for the answer to the next call.
  ASSERT_EQ(client().cast("deferred", P(S("release"))), SendStatus::ok);
  std::this_thread::sleep_for(50ms);  // the late reply is in our mailbox now
  r = client().call("deferred", P(S("get")), 2s);
  EXPECT_EQ(int_of(r), 1) << "got " << show(r) << " instead of get's own reply";
  // And once more without the pause (the late reply racing the next call).
  r = client().call("deferred", P(S("hold")), 50ms);
  EXPECT_EQ(r.error(), CallError::timeout) << show(r);
  ASSERT_EQ(client().cast("deferred", P(S("release"))), SendStatus::ok);
  r = client().call("deferred", P(S("get")), 2s);
  EXPECT_EQ(int_of(r), 2) << "got " << show(r) << " instead of get's own reply";
}

TEST_F(Messaging, AReplySentBeforeTheCalleeDiedIsDelivered) {
  // relay (in `r`) waits for deferred (in `d`).  While `r` is stopped,
  // deferred answers and is then killed: when `r` runs again it finds the
  // answer in its mailbox and the news of the death on its control ring.
  // The answer was sent first, so the call succeeded (Erlang: a message sent
  // before a process died arrives before its DOWN).
  start(tree(R"(
[[root.children]]
id = "r"
actors = [{ type = "relay", name = "relay" }]

[[root.children]]
id = "d"
actors = [{ type = "deferred", name = "deferred" }]
backoff = { initial_ms = 2000, max_ms = 2000, jitter = 0.0 }
)"));
  auto holder = connect();
  ASSERT_NE(holder, nullptr);
  std::string result;
  std::thread caller([&] {
    auto r = holder->call("relay", P(Tup({S("deferred"), S("hold")})), 10s);
    result = is_sym(r, "released") ? "released" : show(r);
  });
  struct Joiner {
    std::thread& t;
    ~Joiner() {
      if (t.joinable()) t.join();
    }
  } joiner{caller};
  const auto deadline = Clock::now() + 3s;
  while (Clock::now() < deadline && int_of(client().call("deferred", P(S("get")), 2s)) != 1) {
    std::this_thread::sleep_for(2ms);
  }
  ASSERT_EQ(int_of(client().call("deferred", P(S("get")), 2s)), 1);
  pid_t relay_pid = pid_of("root/r");
  ASSERT_GT(relay_pid, 0);
  ASSERT_EQ(::kill(relay_pid, SIGSTOP), 0);
  struct Cont {
    pid_t pid;
    ~Cont() { ::kill(pid, SIGCONT); }
  } cont{relay_pid};
  ASSERT_EQ(client().cast("deferred", P(S("release"))), SendStatus::ok);
  // Calls are answered in order: once `get` is answered, so is relay's call.
  ASSERT_EQ(int_of(client().call("deferred", P(S("get")), 2s)), 1);
  std::size_t m = mark();
  kill_child("root/d", SIGKILL);
  ASSERT_TRUE(wait_event(ev("exited", "root/d", 1), m));
  std::this_thread::sleep_for(20ms);
  ASSERT_EQ(::kill(relay_pid, SIGCONT), 0);
  caller.join();
  EXPECT_EQ(result, "released");
}

// ============================================================================
// monitors

TEST_F(Messaging, MessagesSentBeforeADeathArriveBeforeItsDown) {
  // rec monitors feeder.  While rec's worker is stopped, feeder casts 200
  // ints to rec and is killed; when rec runs again, the casts (sent first)
  // must come before the DOWN (Erlang's guarantee between a pair).
  start(tree(R"(
[[root.children]]
id = "rec"
actors = [{ type = "recorder", name = "rec" }]

[[root.children]]
id = "feed"
actors = [{ type = "feeder", name = "feeder" }]
backoff = { initial_ms = 2000, max_ms = 2000, jitter = 0.0 }
)"));
  ASSERT_EQ(client().cast("rec", P(Tup({S("monitor"), S("feeder")}))), SendStatus::ok);
  ASSERT_TRUE(client().call("rec", P(S("list")), 2s).ok());  // the monitor is in place
  pid_t rec_pid = pid_of("root/rec");
  ASSERT_GT(rec_pid, 0);
  ASSERT_EQ(::kill(rec_pid, SIGSTOP), 0);
  struct Cont {
    pid_t pid;
    ~Cont() { ::kill(pid, SIGCONT); }
  } cont{rec_pid};
  auto r = client().call("feeder", P(Tup({S("feed"), S("rec"), I(0), I(200)})), 5s);
  ASSERT_EQ(int_of(r), 200) << show(r);
  std::size_t m = mark();
  kill_child("root/feed", SIGKILL);
  ASSERT_TRUE(wait_event(ev("exited", "root/feed", 1), m));
  std::this_thread::sleep_for(20ms);
  ASSERT_EQ(::kill(rec_pid, SIGCONT), 0);
  std::vector<std::int64_t> seen;
  const auto deadline = Clock::now() + 3s;
  while (Clock::now() < deadline) {
    seen = ints_of(client().call("rec", P(S("list")), 2s));
    if (seen.size() >= 201) break;
    std::this_thread::sleep_for(5ms);
  }
  std::vector<std::int64_t> want(200);
  for (int n = 0; n < 200; ++n) want[n] = n;
  want.push_back(-1);
  EXPECT_TRUE(seen == want) << "got " << seen.size() << " entries, first "
                            << (seen.empty() ? 0 : seen[0]);
}

TEST_F(Messaging, MonitorReportsTheDownReasonOfEveryExitKind) {
  start(tree(R"(
[[root.children]]
id = "watch"
actors = [{ type = "pinger", name = "pinger" }]

[[root.children]]
id = "k9"
actors = [{ type = "echo", name = "k9" }]

[[root.children]]
id = "segv"
actors = [{ type = "crasher", name = "segv", args = { mode = "segv" } }]

[[root.children]]
id = "abrt"
actors = [{ type = "crasher", name = "abrt", args = { mode = "abort" } }]

[[root.children]]
id = "thr"
actors = [{ type = "crasher", name = "thr", args = { mode = "throw" } }]

[[root.children]]
id = "ex3"
actors = [{ type = "crasher", name = "ex3", args = { mode = "exit", code = 3 } }]

[[root.children]]
id = "ex0"
actors = [{ type = "crasher", name = "ex0", args = { mode = "exit", code = 0 } }]

[[root.children]]
id = "grp"
type = "supervisor"
strategy = "one_for_all"
intensity = 100

  [[root.children.children]]
  id = "victim"
  actors = [{ type = "echo", name = "victim" }]

  [[root.children.children]]
  id = "trig"
  actors = [{ type = "crasher", name = "trig", args = { mode = "exit", code = 5 } }]
)"));
  for (const char* name : {"k9", "segv", "abrt", "thr", "ex3", "ex0", "victim", "nobody"}) {
    auto r = client().call("pinger", P(Tup({S("monitor"), S(name)})), 2s);
    ASSERT_TRUE(is_sym(r, "ok")) << name << ": " << show(r);
  }
  struct Step {
    const char* child;
    int sig;
  };
  // One at a time, in this order, so the DOWN list has a known order.
  std::vector<Step> steps = {{"root/k9", SIGKILL},      {"root/segv", SIGUSR1},
                             {"root/abrt", SIGUSR1},    {"root/thr", SIGUSR1},
                             {"root/ex3", SIGUSR1},     {"root/ex0", SIGUSR1},
                             {"root/grp/trig", SIGUSR1}};
  for (const auto& s : steps) {
    std::size_t m = mark();
    kill_child(s.child, s.sig);
    ASSERT_TRUE(wait_event(ev("exited", s.child, 1), m)) << s.child;
    if (std::string(s.child) == "root/grp/trig") {
      ASSERT_TRUE(wait_event(ev("exited", "root/grp/victim", 1), m));
    }
  }
  // The immediate DOWN for "nobody" comes first, then one per exit.
  std::vector<std::string> want = {
      "other",  "signal 9", "signal 11", "signal 6", "exception std::runtime_error",
      "exit 3", "normal",   "shutdown"};
  std::vector<std::string> downs;
  const auto deadline = Clock::now() + 5s;
  while (Clock::now() < deadline) {
    downs = texts_of(client().call("pinger", P(S("downs")), 2s));
    if (downs.size() >= want.size()) break;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(downs, want);
  // A monitor fires once: a second death of k9 adds nothing.
  ASSERT_TRUE(wait_whereis(client(), "k9", 2));
  std::size_t m = mark();
  kill_child("root/k9", SIGKILL);
  ASSERT_TRUE(wait_event(ev("exited", "root/k9", 2), m));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(texts_of(client().call("pinger", P(S("downs")), 2s)).size(), want.size());
}

TEST_F(Messaging, ALinkedActorThatTrapsExitsGetsTheExitReasonAsAMessage) {
  start(tree(R"(
[[root.children]]
id = "a"
actors = [{ type = "linker", name = "linker" }]

[[root.children]]
id = "b"
actors = [{ type = "crasher", name = "segv", args = { mode = "segv" } }]
)"));
  ASSERT_TRUE(is_sym(client().call("linker", P(Tup({S("trap"), I(1)})), 2s), "ok"));
  ASSERT_TRUE(is_sym(client().call("linker", P(Tup({S("link"), S("segv")})), 2s), "ok"));
  const pid_t a_pid = pid_of("root/a");
  std::size_t m = mark();
  kill_child("root/b", SIGUSR1);  // segfaults
  ASSERT_TRUE(wait_event(ev("exited", "root/b", 1), m));
  std::vector<std::string> exits;
  const auto deadline = Clock::now() + 5s;
  while (exits.empty() && Clock::now() < deadline) {
    exits = texts_of(client().call("linker", P(S("exits")), 2s));
    if (exits.empty()) std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(exits, std::vector<std::string>{"signal 11"});
  EXPECT_EQ(pid_of("root/a"), a_pid) << "a trapping actor survives its link's death";
}

TEST_F(Messaging, ALinkedActorThatDoesNotTrapDiesWithItsLink) {
  start(tree(R"(
[[root.children]]
id = "a"
actors = [{ type = "linker", name = "linker" }]

[[root.children]]
id = "b"
actors = [{ type = "crasher", name = "thr", args = { mode = "throw" } }]
)"));
  ASSERT_TRUE(is_sym(client().call("linker", P(Tup({S("link"), S("thr")})), 2s), "ok"));
  std::size_t m = mark();
  kill_child("root/b", SIGUSR1);  // throws
  auto e = wait_event(ev("exited", "root/a", 1), m);
  ASSERT_TRUE(e) << "the linked worker must die too";
  EXPECT_EQ(e->get("reason"), "exception");
  EXPECT_EQ(e->get("exception_type"), "bulkhead::linked_exit");
  EXPECT_NE(e->get("reason_text").find("thr"), std::string::npos) << e->str();
  // ... and is restarted by its supervisor like any crash.
  EXPECT_TRUE(wait_event(ev("ready", "root/a", 2), m));
}

TEST_F(Messaging, ALinkIsTwoWayAndANormalExitDoesNotPropagate) {
  start(tree(R"(
[[root.children]]
id = "a"
actors = [{ type = "linker", name = "first" }]

[[root.children]]
id = "b"
actors = [{ type = "linker", name = "second" }]

[[root.children]]
id = "c"
actors = [{ type = "crasher", name = "ex0", args = { mode = "exit", code = 0 } }]
restart = "transient"
)"));
  // second traps; first links to it, then first's worker is killed: second
  // hears of it although it never called link itself.
  ASSERT_TRUE(is_sym(client().call("second", P(Tup({S("trap"), I(1)})), 2s), "ok"));
  ASSERT_TRUE(is_sym(client().call("first", P(Tup({S("link"), S("second")})), 2s), "ok"));
  // A normal exit of a linked actor does not kill a non-trapping one.
  ASSERT_TRUE(is_sym(client().call("second", P(Tup({S("link"), S("ex0")})), 2s), "ok"));
  ASSERT_TRUE(is_sym(client().call("first", P(Tup({S("link"), S("ex0")})), 2s), "ok"));
  std::size_t m = mark();
  kill_child("root/c", SIGUSR1);  // exits 0: normal
  ASSERT_TRUE(wait_event(ev("exited", "root/c", 1), m));
  std::this_thread::sleep_for(200ms);
  EXPECT_FALSE(find_event(ev("exited", "root/a", 1), m)) << "normal exits do not propagate";
  m = mark();
  kill_child("root/a", SIGKILL);
  ASSERT_TRUE(wait_event(ev("exited", "root/a", 1), m));
  std::vector<std::string> exits;
  const auto deadline = Clock::now() + 5s;
  while (exits.size() < 2 && Clock::now() < deadline) {
    exits = texts_of(client().call("second", P(S("exits")), 2s));
    if (exits.size() < 2) std::this_thread::sleep_for(10ms);
  }
  // second trapped: it got ex0's normal exit and first's SIGKILL.
  EXPECT_EQ(exits, (std::vector<std::string>{"other", "signal 9"}));
}

TEST_F(Messaging, LinkingToANameThatIsNotRunningIsNoproc) {
  start(tree(R"(
[[root.children]]
id = "a"
actors = [{ type = "linker", name = "linker" }]
)"));
  EXPECT_TRUE(is_sym(client().call("linker", P(Tup({S("link"), S("nobody")})), 2s), "noproc"));
}

TEST_F(Messaging, TypedPayloadsOfTheUsersOwnStructTravelBothWays) {
  start(tree(R"(
[[root.children]]
id = "a"
actors = [{ type = "echo", name = "echo" }]
)"));
  // Any Cap'n Proto struct of the user's; here one of the schema's own.
  auto r = client().call("echo",
                         bulkhead::worker::typed_payload<bulkhead::schema::ActorRef>(
                             [](bulkhead::schema::ActorRef::Builder b) {
                               b.setWorker(7);
                               b.setActor(42);
                             }),
                         2s);
  ASSERT_TRUE(r.ok()) << show(r);
  auto back = r.reply().as<bulkhead::schema::ActorRef>();
  EXPECT_EQ(back.getWorker(), 7u);
  EXPECT_EQ(back.getActor(), 42u);
  // Reading it as another type is refused, not misread.
  EXPECT_THROW((void)r.reply().as<bulkhead::schema::TypedPayload>(), std::invalid_argument);
  EXPECT_THROW((void)r.reply().value(), std::invalid_argument);
}

// ============================================================================
// registry

TEST_F(Messaging, RegistryFollowsARestartToTheNewIncarnation) {
  start(tree(R"(
[[root.children]]
id = "w"
actors = [{ type = "counter", name = "counter" }, { type = "echo", name = "echo" }]
backoff = { initial_ms = 300, max_ms = 300, jitter = 0.0 }
)"));
  auto before = client().whereis("echo");
  ASSERT_TRUE(before);
  EXPECT_EQ(before->incarnation, 1u);
  EXPECT_EQ(before->actor, 1u);
  ASSERT_EQ(client().cast("counter", P(Tup({S("add"), I(10)}))), SendStatus::ok);
  ASSERT_EQ(int_of(client().call("counter", P(S("get")), 2s)), 10);
  std::size_t m = mark();
  kill_child("root/w", SIGKILL);
  ASSERT_TRUE(wait_event(ev("exited", "root/w", 1), m));
  // While it is dead the name still resolves, to no incarnation.
  auto dead = client().whereis("echo");
  ASSERT_TRUE(dead);
  EXPECT_EQ(dead->incarnation, 0u);
  ASSERT_TRUE(wait_event(ev("ready", "root/w", 2), m));
  auto after = wait_whereis(client(), "echo", 2);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->worker, before->worker);
  EXPECT_EQ(after->actor, before->actor);
  // By name and by the new reference: the new incarnation (a fresh counter).
  EXPECT_EQ(int_of(client().call("counter", P(S("get")), 2s)), 0);
  EXPECT_EQ(int_of(client().call(*after, P(I(77)), 2s)), 77);
  ActorRef any{after->worker, 0, after->actor};
  EXPECT_EQ(int_of(client().call(any, P(I(78)), 2s)), 78);
}

TEST_F(Messaging, CallToAStaleIncarnationFailsPromptly) {
  start(tree(R"(
[[root.children]]
id = "w"
actors = [{ type = "echo", name = "echo" }]
)"));
  auto old = client().whereis("echo");
  ASSERT_TRUE(old);
  ASSERT_EQ(int_of(client().call(*old, P(I(1)), 2s)), 1);
  std::size_t m = mark();
  kill_child("root/w", SIGKILL);
  ASSERT_TRUE(wait_event(ev("ready", "root/w", 2), m));
  ASSERT_TRUE(wait_whereis(client(), "echo", 2));
  // The old incarnation is gone: a call to it must fail now (noproc, like a
  // call to a dead pid), not sit until the timeout.
  auto t0 = Clock::now();
  auto r = client().call(*old, P(I(2)), 1500ms);
  double ms = ms_since(t0);
  EXPECT_TRUE(r.error() == CallError::noproc || r.error() == CallError::callee_died) << show(r);
  EXPECT_LT(ms, 1000.0) << show(r);
}

TEST_F(Messaging, CallToAnIncarnationThatDiedBeforeItsRestartFailsPromptly) {
  // The same, while the worker waits for its restart (backoff): the peer
  // table still names incarnation 1 (not running) and nothing newer exists.
  start(tree(R"(
[[root.children]]
id = "w"
actors = [{ type = "echo", name = "echo" }]
backoff = { initial_ms = 1500, max_ms = 1500, jitter = 0.0 }
)"));
  auto old = client().whereis("echo");
  ASSERT_TRUE(old);
  ASSERT_EQ(old->incarnation, 1u);
  ASSERT_EQ(int_of(client().call(*old, P(I(1)), 2s)), 1);
  std::size_t m = mark();
  kill_child("root/w", SIGKILL);
  ASSERT_TRUE(wait_event(ev("exited", "root/w", 1), m));
  ASSERT_TRUE(wait_whereis(client(), "echo", 0));  // the client knows it is dead
  auto t0 = Clock::now();
  auto r = client().call(*old, P(I(2)), 1000ms);
  double ms = ms_since(t0);
  ASSERT_FALSE(find_event(ev("spawned", "root/w", 2), m)) << "backoff too short for this test";
  EXPECT_TRUE(r.error() == CallError::noproc || r.error() == CallError::callee_died) << show(r);
  EXPECT_LT(ms, 500.0) << show(r);
}

// ============================================================================
// backpressure

// Floods `sleeper` (after a long sleep cast) until `stop` says so; returns
// the statuses in order.
std::vector<SendStatus> flood(Client& c, int max, const std::function<bool(SendStatus)>& stop,
                              std::vector<double>* ms = nullptr) {
  std::vector<SendStatus> out;
  for (int n = 0; n < max; ++n) {
    auto t0 = Clock::now();
    auto st = c.cast("sleeper", P(I(n)));
    if (ms) ms->push_back(ms_since(t0));
    out.push_back(st);
    if (stop(st)) break;
  }
  return out;
}

std::string sleeper_tree(const std::string& overflow, int block_ms) {
  return tree(R"(
[[root.children]]
id = "s"
actors = [{ type = "sleeper", name = "sleeper" }]
mailbox_bytes = 4096
overflow = ")" +
              overflow + R"("
block_timeout_ms = )" +
              std::to_string(block_ms) + "\n");
}

// Calls sleeper until it answers (its mailbox may still be full at first),
// counting the calls that could not be sent.
std::optional<std::int64_t> sleeper_count(Client& c, int& unsent) {
  const auto deadline = Clock::now() + 5s;
  while (Clock::now() < deadline) {
    auto r = c.call("sleeper", P(S("get")), 3s);
    if (r.ok()) return int_of(r);
    if (r.error() != CallError::overflow) {
      ADD_FAILURE() << "sleeper call: " << show(r);
      return std::nullopt;
    }
    ++unsent;
    std::this_thread::sleep_for(50ms);
  }
  return std::nullopt;
}

TEST_F(Messaging, OverflowFailRejectsASendToAFullMailboxAtOnce) {
  start(sleeper_tree("fail", 1000));
  ASSERT_EQ(client().cast("sleeper", P(Tup({S("sleep"), I(600)}))), SendStatus::ok);
  std::vector<double> ms;
  int overflows = 0;
  auto sts = flood(
      client(), 2000, [&](SendStatus s) { return s != SendStatus::ok && ++overflows == 10; }, &ms);
  ASSERT_EQ(overflows, 10) << "never overflowed";
  long ok = std::count(sts.begin(), sts.end(), SendStatus::ok);
  EXPECT_EQ(std::count(sts.begin(), sts.end(), SendStatus::overflow), 10);
  EXPECT_GT(ok, 0);
  EXPECT_LT(ok, 200) << "a 4 KiB mailbox took that many casts";
  for (std::size_t n = 0; n < sts.size(); ++n) {
    if (sts[n] == SendStatus::overflow) {
      EXPECT_LT(ms[n], 50.0) << "fail must not wait";
    }
  }
  int unsent = 0;
  auto count = sleeper_count(client(), unsent);
  EXPECT_EQ(count, ok + 1) << "handled: the sleep and every accepted cast";
  auto st = stats_of("root/s");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->num("failed"), 10 + unsent) << st->str();
  EXPECT_EQ(st->num("dropped"), 0) << st->str();
  EXPECT_EQ(st->num("blocked"), 0) << st->str();
  EXPECT_EQ(st->num("sent"), ok + 2) << st->str();  // + the sleep cast + the call
}

TEST_F(Messaging, OverflowDropDropsASendToAFullMailbox) {
  start(sleeper_tree("drop", 1000));
  ASSERT_EQ(client().cast("sleeper", P(Tup({S("sleep"), I(600)}))), SendStatus::ok);
  std::vector<double> ms;
  int dropped = 0;
  auto sts = flood(
      client(), 2000, [&](SendStatus s) { return s != SendStatus::ok && ++dropped == 10; }, &ms);
  ASSERT_EQ(dropped, 10) << "never dropped";
  long ok = std::count(sts.begin(), sts.end(), SendStatus::ok);
  EXPECT_EQ(std::count(sts.begin(), sts.end(), SendStatus::dropped), 10);
  for (std::size_t n = 0; n < sts.size(); ++n) {
    if (sts[n] == SendStatus::dropped) {
      EXPECT_LT(ms[n], 50.0) << "drop must not wait";
    }
  }
  int unsent = 0;
  auto count = sleeper_count(client(), unsent);
  EXPECT_EQ(count, ok + 1);
  auto st = stats_of("root/s");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->num("dropped"), 10 + unsent) << st->str();
  EXPECT_EQ(st->num("failed"), 0) << st->str();
  EXPECT_EQ(st->num("blocked"), 0) << st->str();
  EXPECT_EQ(st->num("sent"), ok + 2) << st->str();
}

TEST_F(Messaging, OverflowBlockTimesOutAfterTheBlockTimeout) {
  start(sleeper_tree("block", 100));
  ASSERT_EQ(client().cast("sleeper", P(Tup({S("sleep"), I(800)}))), SendStatus::ok);
  std::vector<double> ms;
  auto sts = flood(
      client(), 2000, [](SendStatus s) { return s != SendStatus::ok; }, &ms);
  ASSERT_FALSE(sts.empty());
  ASSERT_EQ(sts.back(), SendStatus::timeout) << to_string(sts.back());
  EXPECT_GE(ms.back(), 95.0);
  EXPECT_LT(ms.back(), 600.0);
  long ok = static_cast<long>(sts.size()) - 1;
  int unsent = 0;
  auto count = sleeper_count(client(), unsent);
  EXPECT_EQ(count, ok + 1);
  auto st = stats_of("root/s");
  ASSERT_TRUE(st);
  // Every send that timed out had blocked; later ones may have blocked and
  // then found room (sleeper_count's calls).
  EXPECT_EQ(st->num("failed"), 1 + unsent) << st->str();
  EXPECT_GE(st->num("blocked"), st->num("failed")) << st->str();
  EXPECT_EQ(st->num("dropped"), 0) << st->str();
  EXPECT_EQ(st->num("sent"), ok + 2) << st->str();
}

TEST_F(Messaging, OverflowBlockWaitsForRoomAndSucceeds) {
  start(sleeper_tree("block", 3000));
  ASSERT_EQ(client().cast("sleeper", P(Tup({S("sleep"), I(300)}))), SendStatus::ok);
  std::vector<double> ms;
  constexpr int kN = 400;
  auto sts = flood(
      client(), kN, [](SendStatus) { return false; }, &ms);
  EXPECT_EQ(std::count(sts.begin(), sts.end(), SendStatus::ok), kN);
  long waited = std::count_if(ms.begin(), ms.end(), [](double x) { return x > 50.0; });
  EXPECT_GE(waited, 1) << "no send had to wait for room";
  int unsent = 0;
  auto count = sleeper_count(client(), unsent);
  EXPECT_EQ(count, kN + 1);
  auto st = stats_of("root/s");
  ASSERT_TRUE(st);
  EXPECT_GE(st->num("blocked"), 1) << st->str();
  EXPECT_EQ(st->num("failed"), 0) << st->str();
  EXPECT_EQ(st->num("dropped"), 0) << st->str();
  EXPECT_EQ(st->num("sent"), kN + 2) << st->str();
}

TEST_F(Messaging, OverflowBlockGivesUpAfterTheBlockTimeoutForLargeMessagesToo) {
  // Messages larger than what a send first reserves take another path when
  // the mailbox is full (flattened, then pushed): block_timeout bounds that
  // wait too, and the sender does not spin.
  start(sleeper_tree("block", 100));
  ASSERT_EQ(client().cast("sleeper", P(Tup({S("sleep"), I(1500)}))), SendStatus::ok);
  const std::string text(1300, 'z');
  SendStatus last = SendStatus::ok;
  double last_ms = 0;
  int sent = 0;
  for (int n = 0; n < 20; ++n) {
    auto t0 = Clock::now();
    last = client().cast("sleeper", P(T(text)));
    last_ms = ms_since(t0);
    if (last != SendStatus::ok || last_ms > 400) break;
    ++sent;
  }
  EXPECT_GE(sent, 1);
  EXPECT_EQ(last, SendStatus::timeout) << to_string(last);
  EXPECT_LT(last_ms, 600.0);
}

TEST_F(Messaging, OverflowBlockWaitsAtMostTheBlockTimeoutOncePerSend) {
  // The sleeper frees one small frame every 250 ms.  A large send that first
  // waits for room for its (small, adaptive) first-segment reservation and
  // then finds no room for the whole message must still give up
  // block_timeout after it started, and count as one blocked send.
  start(tree(R"(
[[root.children]]
id = "s"
actors = [{ type = "sleeper", name = "sleeper" }]
mailbox_bytes = 4096
overflow = "block"
block_timeout_ms = 300
shutdown = "brutal_kill"
)"));
  // Fill the mailbox with small (sleep, 250) casts until one has to wait.
  // (On a loaded machine the sleeper may free its next frame later than the
  // 300 ms a waiting cast gives it: a timeout here also means "full".)
  bool waited = false;
  for (int n = 0; n < 80 && !waited; ++n) {
    auto t0 = Clock::now();
    auto fill = client().cast("sleeper", P(Tup({S("sleep"), I(250)})));
    ASSERT_TRUE(fill == SendStatus::ok || fill == SendStatus::timeout) << n << to_string(fill);
    waited = ms_since(t0) > 50.0 || fill == SendStatus::timeout;
  }
  ASSERT_TRUE(waited) << "the mailbox never filled";
  auto before = stats_of("root/s");
  ASSERT_TRUE(before);
  auto t0 = Clock::now();
  auto st = client().cast("sleeper", P(T(std::string(1300, 'w'))));
  double ms = ms_since(t0);
  auto after = stats_of("root/s");
  ASSERT_TRUE(after);
  EXPECT_EQ(st, SendStatus::timeout) << to_string(st);
  long long blocked = after->num("blocked") - before->num("blocked");
  EXPECT_EQ(blocked, 1) << "one send, one blocked count";
  EXPECT_LT(ms, 450.0);
}

TEST_F(Messaging, AMessageNearTheMailboxLimitDoesNotWedgeTheChannel) {
  // mailbox_bytes = 4096: a message may take up to 2040 bytes.  One that
  // fits is accepted; what comes after it must be accepted too.
  start(tree(R"(
[[root.children]]
id = "w"
actors = [{ type = "counter", name = "counter" }]
mailbox_bytes = 4096
)"));
  ASSERT_EQ(client().cast("counter", P(S("inc"))), SendStatus::ok);
  for (std::size_t len : {1000u, 1700u, 1800u, 1850u}) {
    auto st = client().cast("counter", P(T(std::string(len, 'q'))));
    ASSERT_EQ(st, SendStatus::ok) << "a " << len << "-byte text fits a 4 KiB mailbox";
    auto after = client().cast("counter", P(S("inc")));
    ASSERT_EQ(after, SendStatus::ok) << "after a " << len << "-byte text";
  }
  auto r = client().call("counter", P(S("get")), 2s);
  EXPECT_EQ(int_of(r), 5) << show(r);
}

// ============================================================================
// hostile peers

TEST_F(Messaging, GarbageFromAPeerIsDroppedAndTheReceiverSurvives) {
  start(tree(R"(
[[root.children]]
id = "target"
actors = [{ type = "counter", name = "counter" }]

[[root.children]]
id = "bad"
actors = [{ type = "garbler", name = "garbler" }]
)"));
  pid_t target_pid = pid_of("root/target");
  pid_t bad_pid = pid_of("root/bad");
  std::size_t m = mark();
  auto r = client().call("garbler", P(Tup({S("garble"), S("counter"), S("junk")})), 5s);
  ASSERT_EQ(int_of(r), 6) << show(r);
  // The node's cast and the raw valid cast count; the five bad frames do not.
  const auto deadline = Clock::now() + 3s;
  std::optional<std::int64_t> count;
  while (Clock::now() < deadline) {
    count = int_of(client().call("counter", P(S("get")), 2s));
    if (count == 2) break;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(count, 2);
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(find_event(ev("exited", "root/target"), m)) << "the receiver died";
  EXPECT_FALSE(find_event(ev("exited", "root/bad"), m)) << "a garbled message is no ring violation";
  EXPECT_EQ(pid_of("root/target"), target_pid);
  EXPECT_EQ(pid_of("root/bad"), bad_pid);
  auto text = log();
  std::size_t garbage = 0;
  for (std::size_t at = 0; (at = text.find("dropped a garbage message", at)) != std::string::npos;
       ++at) {
    ++garbage;
  }
  EXPECT_EQ(garbage, 4u) << "each message that fails validation is reported\n" << log_tail(30);
  EXPECT_NE(text.find("dropped a frame of unknown kind 7"), std::string::npos) << log_tail(30);
}

TEST_F(Messaging, BrokenRingFromAPeerKillsTheProducerNotTheReceiver) {
  start(tree(R"(
[[root.children]]
id = "target"
actors = [{ type = "counter", name = "counter" }]

[[root.children]]
id = "bad"
actors = [{ type = "garbler", name = "garbler" }]
)"));
  pid_t target_pid = pid_of("root/target");
  std::size_t m = mark();
  auto r = client().call("garbler", P(Tup({S("garble"), S("counter"), S("break")})), 5s);
  // The garbler answers before or dies after its victim reports it.
  EXPECT_TRUE(is_sym(r, "ok") || r.error() == CallError::callee_died) << show(r);
  auto ex = wait_event(ev("exited", "root/bad", 1), m);
  ASSERT_TRUE(ex);
  EXPECT_EQ(ex->get("reason"), "protocol_violation") << ex->str();
  EXPECT_FALSE(find_event(ev("exited", "root/target"), m)) << "the receiver died";
  EXPECT_EQ(pid_of("root/target"), target_pid);
  EXPECT_EQ(int_of(client().call("counter", P(S("get")), 2s)), 1);
  // The producer's next incarnation gets a fresh channel and is heard again.
  ASSERT_TRUE(wait_event(ev("ready", "root/bad", 2), m));
  ASSERT_TRUE(wait_whereis(client(), "garbler", 2));
  r = client().call("garbler", P(Tup({S("garble"), S("counter"), S("junk")})), 5s);
  ASSERT_EQ(int_of(r), 6) << show(r);
  const auto deadline = Clock::now() + 3s;
  std::optional<std::int64_t> count;
  while (Clock::now() < deadline) {
    count = int_of(client().call("counter", P(S("get")), 2s));
    if (count == 3) break;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(count, 3);
}

// A Value nested deeper than the receiver's read limit (64): the sender's
// builder makes it, the receiver must refuse it, and a call must be told so.
V nested(int depth) {
  V v = I(1);
  for (int n = 0; n < depth; ++n) v = V{V::K::list, 0, {}, {v}};
  return v;
}

TEST_F(Messaging, OverDeepMessageIsRejectedAndTheCallerIsTold) {
  start(tree(R"(
[[root.children]]
id = "w"
actors = [{ type = "echo", name = "echo" }, { type = "counter", name = "counter" }]
)"));
  pid_t pid = pid_of("root/w");
  std::size_t m = mark();
  // A cast: dropped with an error, the worker lives on.
  ASSERT_EQ(client().cast("counter", P(nested(200))), SendStatus::ok);
  EXPECT_EQ(int_of(client().call("counter", P(S("get")), 2s)), 0);
  EXPECT_NE(log().find("dropped a garbage message"), std::string::npos) << log_tail(20);
  // A call: node.hpp promises a bad_message reply.
  auto t0 = Clock::now();
  auto r = client().call("echo", P(nested(200)), 1500ms);
  double ms = ms_since(t0);
  EXPECT_FALSE(find_event(ev("exited", "root/w"), m)) << "the receiver died";
  EXPECT_EQ(pid_of("root/w"), pid);
  EXPECT_EQ(int_of(client().call("echo", P(I(9)), 2s)), 9);
  EXPECT_EQ(r.error(), CallError::bad_message) << show(r);
  EXPECT_LT(ms, 1000.0);
}

// ============================================================================
// statistics

TEST_F(Messaging, StatsStillCountWhatADetachedClientSent) {
  start(tree(R"(
[[root.children]]
id = "w"
actors = [{ type = "counter", name = "counter" }]
)"));
  auto other = connect();
  ASSERT_NE(other, nullptr);
  for (int n = 0; n < 10; ++n) ASSERT_EQ(other->cast("counter", P(S("inc"))), SendStatus::ok);
  ASSERT_EQ(int_of(other->call("counter", P(S("get")), 2s)), 10);
  auto st = stats_of("root/w");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->num("sent"), 11) << st->str();
  std::size_t m = mark();
  other.reset();
  ASSERT_TRUE(wait_event(ev("client_detached"), m));
  st = stats_of("root/w");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->num("sent"), 11) << "per-child counters must not go backwards: " << st->str();
}

// ============================================================================
// the client API

TEST_F(Messaging, TwoCallResultsCanBeReadSideBySide) {
  start(tree(R"(
[[root.children]]
id = "w"
actors = [{ type = "echo", name = "echo" }]
)"));
  auto a = client().call("echo", P(T("alpha")), 2s);
  auto b = client().call("echo", P(T("bravo")), 2s);
  ASSERT_TRUE(a.ok() && b.ok());
  std::string first, second;
  try {
    auto va = a.value();
    auto vb = b.value();
    first = va.getText().cStr();
    second = vb.getText().cStr();
  } catch (const std::exception& e) {
    first = std::string("(threw: ") + e.what() + ")";
  }
  EXPECT_EQ(first, "alpha");
  EXPECT_EQ(second, "bravo");
}

}  // namespace
