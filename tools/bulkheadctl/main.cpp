// bulkheadctl: see, break and heal a running Bulkhead tree.
//
// Speaks the control protocol (schema/control_rpc.capnp) to a supervisor's
// control socket; `call` and `cast` go to the actors themselves through the
// tree's attach socket (worker/client.hpp): the supervisor is not on the data
// path.  `bulkheadctl --help` and `bulkheadctl SUBCOMMAND --help` say the rest.
//
// Finding the supervisor: --socket PATH, else $BULKHEAD_SOCKET, else the
// default directory ($XDG_RUNTIME_DIR/bulkhead or /tmp/bulkhead-UID): NAME.ctl
// with --tree NAME, or the only *.ctl there.  The directory and the socket
// must be ours and closed to others (0700 / 0600), else we refuse.
//
// Exit codes (stable, documented in README.md):
//   0 ok
//   1 the request failed (did not start, timed out, call error, ...)
//   2 usage error (bad command line, bad Value literal)
//   3 unknown child, supervisor or actor
//   4 not applicable in the current state (delete a running child, kill a supervisor, ...)
//   5 supervisor unreachable (no socket, nobody listening, connection lost)
//   6 unsafe socket: owned by another user, or its directory/socket lets others in
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <capnp/rpc-twoparty.h>
#include <fmt/format.h>
#include <kj/async-io.h>
#include <kj/debug.h>
#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "schema/control_rpc.capnp.h"
#include "tools/bulkheadctl/value_literal.hpp"
#include "worker/client.hpp"

namespace {

using namespace bulkhead;
namespace fs = std::filesystem;

enum Exit : int {
  kOk = 0,
  kFailed = 1,
  kUsage = 2,
  kUnknown = 3,
  kNotApplicable = 4,
  kUnreachable = 5,
  kUnsafe = 6,
};

struct CtlError {
  int code;
  std::string message;
};

struct Globals {
  std::string socket, tree;
  bool json = false;
  unsigned timeout_ms = 30000;
};

std::string default_dir() {
  if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x != nullptr && *x != '\0') {
    return std::string(x) + "/bulkhead";
  }
  return "/tmp/bulkhead-" + std::to_string(::getuid());
}

// Refuses a path whose owner is not us or whose mode lets others in.
void check_private(const std::string& path, bool is_dir) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    throw CtlError{kUnreachable,
                   fmt::format("cannot reach the supervisor: {}: {}", path, std::strerror(errno))};
  }
  const char* what = is_dir ? "directory" : "socket";
  if (st.st_uid != ::geteuid()) {
    throw CtlError{kUnsafe, fmt::format("refusing {} {}: owned by uid {}, not by us (uid {})", what,
                                        path, st.st_uid, ::geteuid())};
  }
  if ((st.st_mode & 077) != 0) {
    throw CtlError{kUnsafe, fmt::format("refusing {} {}: mode {:04o} lets others in (must be {})",
                                        what, path, st.st_mode & 07777, is_dir ? "0700" : "0600")};
  }
}

// True if someone accepts connections on the Unix socket `path`.
bool listening(const std::string& path) {
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path)) return false;
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

std::string find_socket(const Globals& g) {
  std::string path = g.socket;
  if (path.empty()) {
    if (const char* e = std::getenv("BULKHEAD_SOCKET"); e != nullptr && *e != '\0') path = e;
  }
  if (path.empty()) {
    std::string dir = default_dir();
    if (!g.tree.empty()) {
      path = dir + "/" + g.tree + ".ctl";
    } else {
      std::vector<std::string> found;
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(dir, ec)) {
        // A supervisor killed with SIGKILL leaves its socket file: skip the dead.
        if (e.path().extension() == ".ctl" && listening(e.path().string())) {
          found.push_back(e.path().string());
        }
      }
      if (found.empty()) {
        throw CtlError{kUnreachable,
                       fmt::format("no supervisor listens on a control socket in {} (is a tree "
                                   "running? else use --socket PATH or BULKHEAD_SOCKET)",
                                   dir)};
      }
      if (found.size() > 1) {
        std::string names;
        for (const auto& f : found) names += " " + fs::path(f).stem().string();
        throw CtlError{
            kUsage,
            fmt::format("several trees run in {}:{}; choose one with --tree NAME", dir, names)};
      }
      path = found[0];
    }
  }
  check_private(fs::path(path).parent_path().empty() ? "." : fs::path(path).parent_path().string(),
                true);
  check_private(path, false);
  return path;
}

// One connection to the supervisor.
struct Conn {
  kj::AsyncIoContext& io;
  std::string path;
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyClient> client;
  schema::Control::Client ctl{nullptr};
  unsigned timeout_ms;

  Conn(kj::AsyncIoContext& io_, const Globals& g) : io(io_), timeout_ms(g.timeout_ms) {
    path = find_socket(g);
    try {
      auto addr =
          io.provider->getNetwork().parseAddress(kj::str("unix:", path.c_str())).wait(io.waitScope);
      stream = addr->connect().wait(io.waitScope);
    } catch (const kj::Exception& e) {
      throw CtlError{kUnreachable,
                     fmt::format("cannot reach the supervisor at {}: {}", path, describe(e))};
    }
    client = kj::heap<capnp::TwoPartyClient>(*stream);
    ctl = client->bootstrap().castAs<schema::Control>();
  }

  static std::string describe(const kj::Exception& e) {
    std::string d = e.getDescription().cStr();
    // kj prefixes OS errors with the call: keep the readable tail.
    if (auto at = d.rfind(": ");
        at != std::string::npos && d.find("connect(") != std::string::npos) {
      d = d.substr(at + 2);
    }
    return d;
  }

  // Sends a request and waits for its answer, within the timeout.
  template <typename Request>
  auto call(Request& req) {
    auto promise =
        io.provider->getTimer().timeoutAfter((timeout_ms + 2000) * kj::MILLISECONDS,
                                             req.send().then([](auto&& r) { return kj::mv(r); }));
    try {
      return promise.wait(io.waitScope);
    } catch (const kj::Exception& e) {
      if (e.getType() == kj::Exception::Type::DISCONNECTED) {
        throw CtlError{kUnreachable, "lost the connection to the supervisor: " + describe(e)};
      }
      if (e.getType() == kj::Exception::Type::OVERLOADED) {
        throw CtlError{kFailed, "the supervisor is busy: " + describe(e)};
      }
      throw CtlError{kFailed, "request failed: " + describe(e)};
    }
  }
};

// --- output helpers --------------------------------------------------------------

const char* code_name(schema::Code c) {
  switch (c) {
    case schema::Code::OK:
      return "ok";
    case schema::Code::UNKNOWN_CHILD:
      return "unknown_child";
    case schema::Code::NOT_APPLICABLE:
      return "not_applicable";
    case schema::Code::FAILED:
      return "failed";
    case schema::Code::TIMEOUT:
      return "timeout";
    case schema::Code::SHUTTING_DOWN:
      return "shutting_down";
    case schema::Code::BUSY:
      return "busy";
  }
  return "?";
}

int exit_of(schema::Code c) {
  switch (c) {
    case schema::Code::OK:
      return kOk;
    case schema::Code::UNKNOWN_CHILD:
      return kUnknown;
    case schema::Code::NOT_APPLICABLE:
    case schema::Code::SHUTTING_DOWN:
      return kNotApplicable;
    default:
      return kFailed;
  }
}

// Prints an outcome (and `extra` JSON fields) and returns the exit code.
int report(const Globals& g, schema::Outcome::Reader o, const std::string& ok_text,
           const std::string& extra_json = "") {
  int code = exit_of(o.getCode());
  std::string msg = o.getMessage().cStr();
  if (g.json) {
    std::printf("{\"ok\":%s,\"code\":%s,\"message\":%s%s%s}\n", code == 0 ? "true" : "false",
                ctl::json_string(code_name(o.getCode())).c_str(),
                ctl::json_string(code == 0 && msg.empty() ? ok_text : msg).c_str(),
                extra_json.empty() ? "" : ",", extra_json.c_str());
  } else if (code == 0) {
    std::printf("%s\n", msg.empty() ? ok_text.c_str() : msg.c_str());
  }
  if (code != 0) std::fprintf(stderr, "bulkheadctl: %s\n", msg.c_str());
  return code;
}

std::string human_duration(double ms) {
  if (ms <= 0) return "-";
  double s = ms / 1000.0;
  if (s < 60) return fmt::format("{:.1f}s", s);
  auto secs = static_cast<long long>(s);
  if (secs < 3600) return fmt::format("{}m{:02}s", secs / 60, secs % 60);
  if (secs < 86400) return fmt::format("{}h{:02}m", secs / 3600, (secs / 60) % 60);
  return fmt::format("{}d{:02}h", secs / 86400, (secs / 3600) % 24);
}

std::string human_bytes(std::uint64_t b) {
  if (b < 1024) return fmt::format("{} B", b);
  if (b < 1024 * 1024) return fmt::format("{:.1f} KiB", static_cast<double>(b) / 1024.0);
  return fmt::format("{:.1f} MiB", static_cast<double>(b) / (1024.0 * 1024.0));
}

// A table with left-aligned columns.
void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> w;
  for (const auto& r : rows) {
    if (w.size() < r.size()) w.resize(r.size(), 0);
    for (std::size_t i = 0; i < r.size(); ++i) w[i] = std::max(w[i], r[i].size());
  }
  for (const auto& r : rows) {
    std::string line;
    for (std::size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(w[i] - r[i].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::printf("%s\n", line.c_str());
  }
}

// A field of a flat JSON object we produced ourselves (events): a string or a number.
std::string json_field(const std::string& json, const std::string& key) {
  std::string needle = "\"" + key + "\":";
  auto at = json.find(needle);
  if (at == std::string::npos) return "";
  at += needle.size();
  if (at < json.size() && json[at] == '"') {
    std::string out;
    for (std::size_t i = at + 1; i < json.size() && json[i] != '"'; ++i) {
      if (json[i] == '\\' && i + 1 < json.size()) ++i;
      out += json[i];
    }
    return out;
  }
  auto end = json.find_first_of(",}", at);
  return json.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

int parse_signal(const std::string& s) {
  if (!s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    int n = std::stoi(s);
    if (n > 0 && n < NSIG) return n;
    throw CtlError{kUsage, fmt::format("bad signal number {} (1..{})", s, NSIG - 1)};
  }
  std::string name = s;
  for (auto& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (name.rfind("SIG", 0) == 0) name = name.substr(3);
  for (int i = 1; i < NSIG; ++i) {
    const char* abbrev = ::sigabbrev_np(i);
    if (abbrev != nullptr && name == abbrev) return i;
  }
  throw CtlError{kUsage,
                 fmt::format("unknown signal '{}' (try KILL, TERM, USR1, SEGV or a number)", s)};
}

std::string signal_name(int sig) {
  const char* a = ::sigabbrev_np(sig);
  return a != nullptr ? std::string("SIG") + a : std::to_string(sig);
}

// --- subcommands -------------------------------------------------------------------

int cmd_status(kj::AsyncIoContext& io, const Globals& g) {
  Conn c(io, g);
  auto req = c.ctl.statusRequest();
  auto res = c.call(req);
  auto t = res.getTree();
  if (g.json) {
    std::string out = fmt::format(
        R"({{"ok":true,"tree":{},"pid":{},"uptime_ms":{:.3f},"phase":{},"strategy":{},"attach_socket":{},"control_socket":{},"children":[)",
        ctl::json_string(t.getName()), t.getPid(), t.getUptimeMs(), ctl::json_string(t.getPhase()),
        ctl::json_string(t.getStrategy()), ctl::json_string(t.getAttachSocket()),
        ctl::json_string(c.path));
    bool first = true;
    for (auto ch : t.getChildren()) {
      std::string actors = "[";
      for (unsigned i = 0; i < ch.getActors().size(); ++i) {
        actors += (i ? "," : "") + ctl::json_string(ch.getActors()[i]);
      }
      actors += "]";
      out += fmt::format(
          R"({}{{"path":{},"id":{},"depth":{},"kind":{},"strategy":{},"restart":{},"pid":{},"state":{},"uptime_ms":{:.3f},"restarts":{},"incarnation":{},"last_exit":{},"last_exit_kind":{},"mailbox_bytes":{},"actors":{}}})",
          first ? "" : ",", ctl::json_string(ch.getPath()), ctl::json_string(ch.getId()),
          ch.getDepth(), ctl::json_string(ch.getKind()), ctl::json_string(ch.getStrategy()),
          ctl::json_string(ch.getRestartType()), ch.getPid(), ctl::json_string(ch.getState()),
          ch.getUptimeMs(), ch.getRestarts(), ch.getIncarnation(),
          ctl::json_string(ch.getLastExit()), ctl::json_string(ch.getLastExitKind()),
          ch.getMailboxBytes(), actors);
      first = false;
    }
    std::printf("%s]}\n", out.c_str());
    return kOk;
  }
  std::printf("tree %s  supervisor pid %d  up %s  %s  (root: %s)\n", t.getName().cStr(), t.getPid(),
              human_duration(t.getUptimeMs()).c_str(), t.getPhase().cStr(), t.getStrategy().cStr());
  std::vector<std::vector<std::string>> rows = {
      {"CHILD", "KIND", "STRATEGY", "PID", "STATE", "UPTIME", "RESTARTS", "MAILBOX", "LAST EXIT"}};
  for (auto ch : t.getChildren()) {
    std::string name = std::string(2 * (ch.getDepth() - 1), ' ') + ch.getId().cStr();
    bool sup = std::string(ch.getKind().cStr()) == "supervisor";
    rows.push_back({name, ch.getKind().cStr(), sup ? ch.getStrategy().cStr() : "-",
                    ch.getPid() > 0 ? std::to_string(ch.getPid()) : "-", ch.getState().cStr(),
                    human_duration(ch.getUptimeMs()), std::to_string(ch.getRestarts()),
                    sup ? "-" : human_bytes(ch.getMailboxBytes()),
                    ch.getLastExit().size() > 0 ? ch.getLastExit().cStr() : "-"});
  }
  print_table(rows);
  return kOk;
}

int cmd_stats(kj::AsyncIoContext& io, const Globals& g, bool prometheus) {
  Conn c(io, g);
  if (prometheus) {
    auto req = c.ctl.metricsRequest();
    auto res = c.call(req);
    if (g.json) {
      std::printf("{\"ok\":true,\"prometheus\":%s}\n", ctl::json_string(res.getText()).c_str());
    } else {
      std::fputs(res.getText().cStr(), stdout);
    }
    return kOk;
  }
  auto req = c.ctl.statsRequest();
  auto res = c.call(req);
  auto exits_text = [](auto list, bool json) {
    std::string out = json ? "{" : "";
    for (unsigned i = 0; i < list.size(); ++i) {
      if (json) {
        out += fmt::format("{}{}:{}", i ? "," : "", ctl::json_string(list[i].getReason()),
                           list[i].getCount());
      } else {
        out +=
            fmt::format("{}{} {}", i ? ", " : "", list[i].getReason().cStr(), list[i].getCount());
      }
    }
    return json ? out + "}" : (out.empty() ? "-" : out);
  };
  if (g.json) {
    std::string out = R"({"ok":true,"children":[)";
    bool first = true;
    for (auto s : res.getChildren()) {
      out += fmt::format(
          R"({}{{"path":{},"messages_in":{},"messages_out":{},"blocked":{},"failed":{},"dropped":{},"ring_bytes":{},"ring_capacity":{},"restarts":{},"exits":{}}})",
          first ? "" : ",", ctl::json_string(s.getPath()), s.getMessagesIn(), s.getMessagesOut(),
          s.getBlocked(), s.getFailed(), s.getDropped(), s.getRingBytes(), s.getRingCapacity(),
          s.getRestarts(), exits_text(s.getExits(), true));
      first = false;
    }
    std::printf("%s]}\n", out.c_str());
    return kOk;
  }
  std::vector<std::vector<std::string>> rows = {
      {"CHILD", "IN", "OUT", "BLOCKED", "FAILED", "DROPPED", "RING", "RESTARTS", "EXITS"}};
  for (auto s : res.getChildren()) {
    rows.push_back({s.getPath().cStr(), std::to_string(s.getMessagesIn()),
                    std::to_string(s.getMessagesOut()), std::to_string(s.getBlocked()),
                    std::to_string(s.getFailed()), std::to_string(s.getDropped()),
                    s.getRingCapacity() > 0
                        ? human_bytes(s.getRingBytes()) + " / " + human_bytes(s.getRingCapacity())
                        : "-",
                    std::to_string(s.getRestarts()), exits_text(s.getExits(), false)});
  }
  print_table(rows);
  return kOk;
}

int cmd_child_op(kj::AsyncIoContext& io, const Globals& g, schema::ChildOp op,
                 const std::string& child) {
  Conn c(io, g);
  auto req = c.ctl.childOpRequest();
  req.setOp(op);
  req.setChild(child);
  req.setTimeoutMs(g.timeout_ms);
  auto res = c.call(req);
  return report(g, res.getOutcome(), "ok");
}

int cmd_start_child(kj::AsyncIoContext& io, const Globals& g, const std::string& sup) {
  Conn c(io, g);
  auto req = c.ctl.startChildRequest();
  req.setSupervisor(sup);
  req.setTimeoutMs(g.timeout_ms);
  auto res = c.call(req);
  std::string child = res.getChild().cStr();
  return report(g, res.getOutcome(), child, "\"child\":" + ctl::json_string(child));
}

int cmd_kill(kj::AsyncIoContext& io, const Globals& g, const std::string& child,
             const std::string& sig_text) {
  int sig = parse_signal(sig_text);
  Conn c(io, g);
  auto req = c.ctl.killRequest();
  req.setChild(child);
  req.setSignal(sig);
  auto res = c.call(req);
  return report(g, res.getOutcome(),
                fmt::format("sent {} to {} (pid {})", signal_name(sig), child, res.getPid()),
                fmt::format(R"("pid":{},"signal":{})", res.getPid(), sig));
}

class EventPrinter final : public schema::EventSink::Server {
 public:
  EventPrinter(const Globals& g, std::string child, long count,
               kj::Own<kj::PromiseFulfiller<void>> done)
      : g_(g), child_(std::move(child)), left_(count), done_(kj::mv(done)) {}

 protected:
  kj::Promise<void> event(EventContext ctx) override {
    auto e = ctx.getParams().getEvent();
    std::string child = e.getChild().cStr();
    if (!child_.empty() && child != child_ && child.rfind(child_ + "/", 0) != 0) {
      return kj::READY_NOW;
    }
    std::string json = e.getJson().cStr();
    if (g_.json) {
      std::printf("%s\n", json.c_str());
    } else {
      std::string name = e.getName().cStr();
      std::string detail;
      auto add = [&](const char* label, const std::string& key) {
        std::string v = json_field(json, key);
        if (!v.empty()) detail += fmt::format("  {}{}", label, v);
      };
      add("", "client");
      add("pid ", "pid");
      add("incarnation ", "incarnation");
      add("", "reason_text");
      if (name == "restart_scheduled") add("delay_ms ", "delay_ms");
      if (name == "ready") add("ready_ms ", "ready_ms");
      if (name == "escalate" || name == "supervisor_stopped") add("node ", "node");
      if (name == "escalate") add("cause ", "cause");
      if (name == "dropped") add("events dropped: ", "count");
      if (name == "kill_requested") add("signal ", "signal");
      std::printf("%10.3f  %-18s %-24s%s\n", e.getTMs() / 1000.0, name.c_str(),
                  child.empty() ? "-" : child.c_str(), detail.c_str());
    }
    std::fflush(stdout);
    if (left_ > 0 && --left_ == 0) done_->fulfill();
    return kj::READY_NOW;
  }
  kj::Promise<void> sync(SyncContext) override { return kj::READY_NOW; }

 private:
  const Globals& g_;
  std::string child_;
  long left_;
  kj::Own<kj::PromiseFulfiller<void>> done_;
};

int cmd_events(kj::AsyncIoContext& io, const Globals& g, const std::string& child, long count,
               double seconds) {
  Conn c(io, g);
  auto paf = kj::newPromiseAndFulfiller<void>();
  auto req = c.ctl.subscribeRequest();
  req.setSink(kj::heap<EventPrinter>(
      g, child.empty() ? "" : (child.rfind("root", 0) == 0 ? child : "root/" + child), count,
      kj::mv(paf.fulfiller)));
  auto sub = c.call(req).getSubscription();
  // On stderr in both forms: a script may wait for this line before it acts.
  std::fprintf(stderr, "bulkheadctl: streaming events from %s (Ctrl-C to stop)\n", c.path.c_str());
  // Ends when `count` events were shown, the time is up, or the supervisor went away.
  enum class End { count, time, gone };
  // The printer (holding the fulfiller) is dropped when the connection goes.
  kj::Promise<End> end =
      paf.promise.then([] { return End::count; }, [](kj::Exception&&) { return End::gone; });
  end = end.exclusiveJoin(c.client->onDisconnect().then([] { return End::gone; },
                                                        [](kj::Exception&&) { return End::gone; }));
  if (seconds > 0) {
    end = end.exclusiveJoin(
        io.provider->getTimer()
            .afterDelay(static_cast<std::int64_t>(seconds * 1000) * kj::MILLISECONDS)
            .then([] { return End::time; }));
  }
  End why = end.wait(io.waitScope);
  // Calls read before the end of the connection may still be queued: show them.
  if (why == End::gone) {
    for (int i = 0; i < 8; ++i) io.waitScope.poll();
  }
  if (why == End::gone && !g.json) std::fprintf(stderr, "bulkheadctl: the supervisor went away\n");
  return kOk;
}

int cmd_shutdown(kj::AsyncIoContext& io, const Globals& g) {
  Conn c(io, g);
  auto req = c.ctl.shutdownRequest();
  bool stopped = false;
  try {
    auto res = c.call(req);
    if (res.getOutcome().getCode() != schema::Code::OK) return report(g, res.getOutcome(), "");
  } catch (const CtlError& e) {
    // The supervisor may stop (and close the socket) before we read its
    // answer: gone is what we asked for.  Still listening means it failed.
    if (e.code != kUnreachable) throw;
    try {
      Conn again(io, g);
    } catch (const CtlError& e2) {
      if (e2.code != kUnreachable) throw;
      stopped = true;
    }
    if (!stopped) throw;
  }
  // Answered at once; the tree stops in reverse start order, then the supervisor exits.
  if (!stopped) {
    auto gone = io.provider->getTimer().timeoutAfter(
        g.timeout_ms * kj::MILLISECONDS,
        c.client->onDisconnect().then([] { return true; }, [](kj::Exception&&) { return true; }));
    try {
      gone.wait(io.waitScope);
    } catch (const kj::Exception&) {
      throw CtlError{kFailed, fmt::format("the tree is still stopping after {} ms", g.timeout_ms)};
    }
  }
  if (g.json) {
    std::printf("{\"ok\":true,\"code\":\"ok\",\"message\":\"the tree stopped\"}\n");
  } else {
    std::printf("the tree stopped\n");
  }
  return kOk;
}

// call / cast: through the attach socket, as any client of the tree.
int cmd_message(kj::AsyncIoContext& io, const Globals& g, bool is_call, const std::string& actor,
                const std::string& literal, std::string attach) {
  try {
    ctl::check_value(literal);
  } catch (const ctl::LiteralError& e) {
    std::string caret = std::string(e.column() - 1, ' ') + "^";
    throw CtlError{kUsage, fmt::format("bad value literal at column {}: {}\n  {}\n  {}", e.column(),
                                       e.what(), literal, caret)};
  }
  if (attach.empty()) {
    Conn c(io, g);
    auto req = c.ctl.statusRequest();
    attach = c.call(req).getTree().getAttachSocket().cStr();
    if (attach.empty()) {
      throw CtlError{kNotApplicable, "the tree has no attach socket (started with --socket none)"};
    }
  }
  std::unique_ptr<worker::Client> client;
  try {
    client = worker::Client::connect(attach, std::chrono::milliseconds(g.timeout_ms));
  } catch (const std::exception& e) {
    throw CtlError{kUnreachable, fmt::format("cannot attach to the tree: {}", e.what())};
  }
  auto payload =
      worker::value_payload([&](schema::Value::Builder v) { ctl::parse_value(literal, v); });
  if (!is_call) {
    auto st = client->cast(actor, payload);
    if (st != worker::SendStatus::ok) {
      int code = st == worker::SendStatus::noproc ? kUnknown : kFailed;
      std::string msg = st == worker::SendStatus::noproc
                            ? fmt::format("no actor named '{}'", actor)
                            : fmt::format("cast to {} failed: {}", actor, worker::to_string(st));
      if (g.json) {
        std::printf("{\"ok\":false,\"code\":%s,\"message\":%s}\n",
                    ctl::json_string(worker::to_string(st)).c_str(), ctl::json_string(msg).c_str());
      }
      throw CtlError{code, msg};
    }
    if (g.json) {
      std::printf("{\"ok\":true,\"code\":\"ok\",\"message\":\"sent\"}\n");
    } else {
      std::printf("cast to %s: sent\n", actor.c_str());
    }
    return kOk;
  }
  auto r = client->call(actor, payload, std::chrono::milliseconds(g.timeout_ms));
  if (!r.ok()) {
    int code = r.error() == worker::CallError::noproc ? kUnknown : kFailed;
    std::string msg =
        r.error() == worker::CallError::noproc
            ? fmt::format("no actor named '{}'", actor)
            : fmt::format("call {} failed: {}{}{}", actor, worker::to_string(r.error()),
                          r.error_text().empty() ? "" : ": ", r.error_text());
    if (g.json) {
      std::printf("{\"ok\":false,\"code\":%s,\"message\":%s}\n",
                  ctl::json_string(worker::to_string(r.error())).c_str(),
                  ctl::json_string(msg).c_str());
    }
    throw CtlError{code, msg};
  }
  std::string text, json;
  try {
    auto v = r.value();
    text = ctl::format_value(v);
    json = ctl::value_to_json(v);
  } catch (const std::exception&) {
    text = "(a reply that is not a Value: a typed payload)";
    json = "null";
  }
  if (g.json) {
    std::printf("{\"ok\":true,\"reply\":%s,\"value\":%s}\n", ctl::json_string(text).c_str(),
                json.c_str());
  } else {
    std::printf("%s\n", text.c_str());
  }
  return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "bulkheadctl: inspect and control a running Bulkhead tree.\n"
      "Exit codes: 0 ok, 1 failed, 2 usage, 3 unknown child/actor, 4 not applicable now,\n"
      "5 supervisor unreachable, 6 unsafe socket (another user's, or open to others)."};
  app.fallthrough();
  app.require_subcommand(1);
  Globals g;
  app.add_option("--socket", g.socket,
                 "the supervisor's control socket (default: $BULKHEAD_SOCKET, else the only "
                 "*.ctl in $XDG_RUNTIME_DIR/bulkhead or /tmp/bulkhead-UID)");
  app.add_option("--tree", g.tree, "the tree NAME: NAME.ctl in the default directory");
  app.add_flag("--json", g.json, "machine-readable output (one JSON object per line)");
  app.add_option("--timeout", g.timeout_ms, "how long to wait, in ms (default 30000)")
      ->check(CLI::Range(1u, 3600000u));

  std::string child, sig = "KILL", actor, literal, attach, filter;
  bool prometheus = false;
  long count = 0;
  double seconds = 0;

  auto* status =
      app.add_subcommand("status", "the tree: children, pids, states, restarts, last exits");
  auto add_child_cmd = [&](const char* name, const char* help) {
    auto* s = app.add_subcommand(name, help);
    s->add_option("child", child, "the child's path (root/api, or just api)")->required();
    return s;
  };
  auto* start = add_child_cmd("start", "start a stopped child");
  auto* stop =
      add_child_cmd("stop", "stop a child; it stays stopped (not restarted) until `start`");
  auto* restart = add_child_cmd("restart", "stop a child if it runs, then start it (not a crash)");
  auto* terminate =
      add_child_cmd("terminate", "stop a child (OTP terminate_child); a dynamic child is removed");
  auto* del = add_child_cmd("delete", "remove a stopped child's spec (OTP delete_child)");
  auto* start_child = app.add_subcommand(
      "start-child", "start a new child under a simple_one_for_one supervisor; prints its path");
  start_child->add_option("supervisor", child, "the supervisor's path (root/jobs)")->required();
  auto* kill = add_child_cmd("kill", "send a signal to a worker child's process (fault injection)");
  kill->add_option("--signal,-s", sig, "KILL (default), TERM, USR1, SEGV, ... or a number");
  auto* events = app.add_subcommand(
      "events", "stream events live: spawned, ready, exited, restart_scheduled, escalate, ...");
  events->add_option("--child", filter, "only this child and its subtree");
  events->add_option("--count,-n", count, "exit after N events")->check(CLI::PositiveNumber);
  events->add_option("--for", seconds, "exit after this many seconds")->check(CLI::PositiveNumber);
  auto* stats = app.add_subcommand(
      "stats", "per child: messages in/out, blocked/failed/dropped sends, ring use, restarts");
  stats->add_flag("--prometheus", prometheus, "Prometheus text format (what /metrics serves)");
  auto add_msg_cmd = [&](const char* name, const char* help) {
    auto* s = app.add_subcommand(name, help);
    s->add_option("actor", actor, "the actor's registered name")->required();
    s->add_option("value", literal,
                  "a Value literal: 42, 1.5, \"text\", atom, {tuple, 1}, [list], #{key => value}, "
                  "b\"bytes\", null, true")
        ->required();
    s->add_option("--attach", attach,
                  "the tree's attach socket (default: asked from the supervisor)");
    return s;
  };
  auto* call = add_msg_cmd("call", "call an actor and print its reply");
  auto* cast = add_msg_cmd("cast", "cast to an actor (no reply)");
  auto* shutdown = app.add_subcommand("shutdown", "stop the whole tree and the supervisor");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? kOk : kUsage;
  }

  try {
    auto io = kj::setupAsyncIo();
    if (status->parsed()) return cmd_status(io, g);
    if (stats->parsed()) return cmd_stats(io, g, prometheus);
    if (start->parsed()) return cmd_child_op(io, g, schema::ChildOp::START, child);
    if (stop->parsed()) return cmd_child_op(io, g, schema::ChildOp::STOP, child);
    if (restart->parsed()) return cmd_child_op(io, g, schema::ChildOp::RESTART, child);
    if (terminate->parsed()) return cmd_child_op(io, g, schema::ChildOp::TERMINATE, child);
    if (del->parsed()) return cmd_child_op(io, g, schema::ChildOp::DELETE, child);
    if (start_child->parsed()) return cmd_start_child(io, g, child);
    if (kill->parsed()) return cmd_kill(io, g, child, sig);
    if (events->parsed()) return cmd_events(io, g, filter, count, seconds);
    if (call->parsed()) return cmd_message(io, g, true, actor, literal, attach);
    if (cast->parsed()) return cmd_message(io, g, false, actor, literal, attach);
    if (shutdown->parsed()) return cmd_shutdown(io, g);
    return kUsage;
  } catch (const CtlError& e) {
    std::fprintf(stderr, "bulkheadctl: %s\n", e.message.c_str());
    return e.code;
  } catch (const kj::Exception& e) {
    std::fprintf(stderr, "bulkheadctl: %s\n", e.getDescription().cStr());
    return kFailed;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bulkheadctl: %s\n", e.what());
    return kFailed;
  }
}
