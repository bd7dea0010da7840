// supervisor/control_ops.cpp: what each control request does to the tree.
//
// Runs on the runtime thread only (see control_server.hpp).  Each operation
// answers through its Responder exactly once: at once, or from a waiter when
// the tree reached the state asked for (or the request's time ran out).
#include <fmt/format.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <algorithm>
#include <limits>

#include "ipc/channel.hpp"
#include "schema/control_rpc.capnp.h"
#include "supervisor/control_internal.hpp"
#include "supervisor/control_server.hpp"
#include "supervisor/runtime.hpp"

namespace bulkhead::supervisor {

using schema::Code;

namespace {

// A child nobody answers over the attach socket: start_child asked through
// the control plane sets it as the requester, so a failed start removes the
// child (as OTP's start_child) and the control plane watches the state.
constexpr std::uint32_t kNoEndpoint = std::numeric_limits<std::uint32_t>::max();

constexpr std::uint32_t kDefaultTimeoutMs = 30000;
// A client chooses how long a request may wait, up to this (10 minutes).
constexpr std::uint32_t kMaxTimeoutMs = 600000;
// Requests waiting for the tree (stop, start, ...) at once, all clients;
// beyond, a new one is answered `busy` before it does anything.
constexpr std::size_t kMaxWaiters = 256;

template <typename Results, typename Fill>
ControlPlane::Answer make_answer(Fill&& fill) {
  capnp::MallocMessageBuilder mb;
  fill(mb.initRoot<Results>());
  ControlPlane::Answer a;
  a.data = capnp::messageToFlatArray(mb);
  return a;
}

// The answer of childOp: its results are just the outcome.
ControlPlane::Answer outcome(Code code, const std::string& message) {
  return make_answer<schema::Control::ChildOpResults>([&](auto r) {
    auto o = r.initOutcome();
    o.setCode(code);
    o.setMessage(message);
  });
}

// The full path of a child: "api" and "root/api" name the same child.
std::string full_path(const std::string& p) {
  if (p == "root" || p.rfind("root/", 0) == 0) return p;
  return "root/" + p;
}

}  // namespace

// --- waiters --------------------------------------------------------------------

void ControlPlane::add_waiter(std::uint32_t timeout_ms, std::function<bool(Responder&)> check,
                              Responder r, std::function<void(Responder&)> on_timeout) {
  if (check(r)) return;  // already there
  auto w = std::make_unique<Waiter>();
  w->check = std::move(check);
  w->on_timeout = std::move(on_timeout);
  w->respond = std::move(r);
  Waiter* wp = w.get();
  if (timeout_ms == 0) timeout_ms = kDefaultTimeoutMs;
  w->timer = rt_.add_timer(Ms(std::min(timeout_ms, kMaxTimeoutMs)), [this, wp] {
    wp->timer.reset();
    if (wp->done) return;
    wp->done = true;
    wp->on_timeout(wp->respond);
    ring_eventfd(wake_fd_);  // collect it
  });
  waiters_.push_back(std::move(w));
}

void ControlPlane::check_waiters() {
  for (auto& w : waiters_) {
    if (w->done) continue;
    try {
      if (w->check(w->respond)) w->done = true;
    } catch (...) {
      // Not on the runtime loop's back: this request fails, the tree goes on.
      spdlog::error("control request failed while waiting");
      w->done = true;
      Answer a;
      a.error = kj::str("control request failed in the supervisor");
      w->respond(std::move(a));
    }
  }
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    if ((*it)->done) {
      rt_.cancel_timer((*it)->timer);
      it = waiters_.erase(it);
    } else {
      ++it;
    }
  }
}

// --- status -----------------------------------------------------------------------

namespace {

const char* state_name(int s) {
  static const char* names[] = {"idle", "starting", "running", "stopping", "waiting"};
  return s >= 0 && s < 5 ? names[s] : "?";
}

const char* phase_name(int p) {
  static const char* names[] = {"idle", "starting", "running", "shutting_down", "stopped"};
  return p >= 0 && p < 5 ? names[p] : "?";
}

}  // namespace

void ControlPlane::do_status(const Responder& r) {
  using Child = Runtime::Child;
  auto sums = counters();
  auto all = children();
  auto now = Clock::now();
  r(make_answer<schema::Control::StatusResults>([&](auto res) {
    res.initOutcome().setCode(Code::OK);
    auto t = res.initTree();
    t.setName(rt_.tree_.name);
    t.setPid(::getpid());
    t.setUptimeMs(rt_.uptime_ms());
    t.setPhase(phase_name(static_cast<int>(rt_.root_.phase)));
    t.setStrategy(to_string(rt_.tree_.root.strategy));
    t.setAttachSocket(rt_.options_.socket_path);
    auto list = t.initChildren(static_cast<unsigned>(all.size()));
    for (unsigned i = 0; i < all.size(); ++i) {
      const Child& c = *all[i].first;
      auto b = list[i];
      b.setPath(c.path);
      b.setId(c.spec.id);
      b.setDepth(all[i].second);
      b.setKind(c.node ? "supervisor" : "worker");
      b.setStrategy(c.node ? to_string(c.node->spec->strategy) : "");
      b.setRestartType(to_string(c.spec.restart));
      b.setPid(c.pid);
      b.setState(c.deleted ? "deleted" : state_name(static_cast<int>(c.state)));
      if (c.state == Runtime::State::running && c.ready_at != TimePoint{}) {
        b.setUptimeMs(std::chrono::duration<double, std::milli>(now - c.ready_at).count());
      }
      b.setRestarts(static_cast<std::uint32_t>(c.restarts));
      b.setIncarnation(c.incarnation);
      if (c.last_exit) {
        b.setLastExit(c.last_exit->describe());
        b.setLastExitKind(c.last_exit->kind_name());
      }
      if (!c.node) b.setMailboxBytes(sums[c.slot].bytes);
      auto names = b.initActors(static_cast<unsigned>(c.actor_names.size()));
      for (unsigned k = 0; k < c.actor_names.size(); ++k) names.set(k, c.actor_names[k]);
    }
  }));
}

// --- stats and metrics ------------------------------------------------------------

std::map<std::uint32_t, ControlPlane::Counters> ControlPlane::counters() {
  std::map<std::uint32_t, Counters> sums;
  for (auto& [slot, v] : rt_.retired_) {
    Counters& s = sums[slot];
    s.in += v[0];
    s.blocked += v[1];
    s.failed += v[2];
    s.dropped += v[3];
  }
  for (auto& [key, ch] : rt_.channels_) {
    auto view = ipc::channel_view(ch.segment, ch.capacity, key.first, key.second);
    auto sent = view.stats->sent.load(std::memory_order_relaxed);
    Counters& s = sums[key.second];
    s.in += sent;
    s.blocked += view.stats->blocked.load(std::memory_order_relaxed);
    s.failed += view.stats->failed.load(std::memory_order_relaxed);
    s.dropped += view.stats->dropped.load(std::memory_order_relaxed);
    // Written by workers: clamp whatever they wrote to what can be true.
    auto* rc = reinterpret_cast<const ipc::RingControl*>(view.ring.data());
    auto tail = rc->tail.load(std::memory_order_relaxed);
    auto head = rc->head.load(std::memory_order_relaxed);
    s.bytes += tail >= head ? std::min<std::uint64_t>(tail - head, ch.capacity) : 0;
    s.capacity += ch.capacity;
    sums[key.first].out += sent;
  }
  return sums;
}

std::vector<std::pair<Runtime::Child*, std::uint32_t>> ControlPlane::children() {
  std::vector<std::pair<Runtime::Child*, std::uint32_t>> out;
  std::function<void(Runtime::Node&, std::uint32_t)> walk = [&](Runtime::Node& n,
                                                                std::uint32_t depth) {
    for (auto& c : n.children) {
      out.emplace_back(c.get(), depth);
      if (c->node) walk(*c->node, depth + 1);
    }
  };
  walk(rt_.root_, 1);
  return out;
}

namespace {

std::string label(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (ch == '\\' || ch == '"') out += '\\';
    if (ch == '\n') {
      out += "\\n";
      continue;
    }
    out += ch;
  }
  return out;
}

}  // namespace

void ControlPlane::do_stats(const Responder& r) {
  auto sums = counters();
  auto all = children();
  r(make_answer<schema::Control::StatsResults>([&](auto res) {
    res.initOutcome().setCode(Code::OK);
    auto list = res.initChildren(static_cast<unsigned>(all.size()));
    for (unsigned i = 0; i < all.size(); ++i) {
      const auto& c = *all[i].first;
      auto b = list[i];
      b.setPath(c.path);
      b.setRestarts(static_cast<std::uint32_t>(c.restarts));
      if (!c.node) {
        const Counters& s = sums[c.slot];
        b.setMessagesIn(s.in);
        b.setMessagesOut(s.out);
        b.setBlocked(s.blocked);
        b.setFailed(s.failed);
        b.setDropped(s.dropped);
        b.setRingBytes(s.bytes);
        b.setRingCapacity(s.capacity);
      }
      auto it = exits_.find(c.path);
      if (it != exits_.end()) {
        auto ex = b.initExits(static_cast<unsigned>(it->second.size()));
        unsigned k = 0;
        for (auto& [reason, n] : it->second) {
          ex[k].setReason(reason);
          ex[k].setCount(n);
          ++k;
        }
      }
    }
  }));
}

void ControlPlane::do_metrics(const Responder& r) {
  auto sums = counters();
  std::vector<Runtime::Child*> all;
  for (auto& [c, depth] : children()) all.push_back(c);
  std::string out;
  auto family = [&](const char* name, const char* type, const char* help) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  };
  std::string tree = label(rt_.tree_.name);
  family("bulkhead_supervisor_uptime_seconds", "gauge", "Seconds since the supervisor started.");
  out += fmt::format("bulkhead_supervisor_uptime_seconds{{tree=\"{}\"}} {:.3f}\n", tree,
                     rt_.uptime_ms() / 1000.0);
  auto per_child = [&](const char* name, const char* type, const char* help, auto value,
                       bool workers_only) {
    family(name, type, help);
    for (auto* c : all) {
      if (workers_only && c->node) continue;
      out +=
          fmt::format("{}{{tree=\"{}\",child=\"{}\"}} {}\n", name, tree, label(c->path), value(*c));
    }
  };
  per_child(
      "bulkhead_child_up", "gauge", "1 if the child is running (ready), else 0.",
      [](const Runtime::Child& c) { return c.state == Runtime::State::running ? 1 : 0; }, false);
  per_child(
      "bulkhead_child_restarts_total", "counter", "Restarts its supervisor made of the child.",
      [](const Runtime::Child& c) { return c.restarts; }, false);
  family("bulkhead_child_exits_total", "counter", "Exits of the child's processes by reason.");
  for (auto* c : all) {
    auto it = exits_.find(c->path);
    if (it == exits_.end()) continue;
    for (auto& [reason, n] : it->second) {
      out +=
          fmt::format("bulkhead_child_exits_total{{tree=\"{}\",child=\"{}\",reason=\"{}\"}} {}\n",
                      tree, label(c->path), label(reason), n);
    }
  }
  auto counter = [&](const char* name, const char* type, const char* help,
                     std::uint64_t Counters::*field) {
    per_child(
        name, type, help, [&](const Runtime::Child& c) { return sums[c.slot].*field; }, true);
  };
  counter("bulkhead_child_messages_in_total", "counter", "Messages pushed into the child's rings.",
          &Counters::in);
  counter("bulkhead_child_messages_out_total", "counter",
          "Messages the child pushed to others (live channels).", &Counters::out);
  counter("bulkhead_child_sends_blocked_total", "counter",
          "Sends to the child that waited for room.", &Counters::blocked);
  counter("bulkhead_child_sends_failed_total", "counter",
          "Sends to the child refused because its mailbox was full.", &Counters::failed);
  counter("bulkhead_child_sends_dropped_total", "counter",
          "Sends to the child dropped because its mailbox was full.", &Counters::dropped);
  counter("bulkhead_child_mailbox_bytes", "gauge", "Bytes queued in the child's inbound rings.",
          &Counters::bytes);
  counter("bulkhead_child_mailbox_capacity_bytes", "gauge",
          "Capacity of the child's inbound rings.", &Counters::capacity);
  r(make_answer<schema::Control::MetricsResults>([&](auto res) { res.setText(out); }));
}

// --- child operations -------------------------------------------------------------

void ControlPlane::do_child_op(int op_num, const std::string& child, std::uint32_t timeout_ms,
                               Responder r) {
  using Child = Runtime::Child;
  using State = Runtime::State;
  auto op = static_cast<schema::ChildOp>(op_num);
  std::string path = full_path(child);
  Child* c = rt_.find_child(rt_.root_, path);
  if (c == nullptr) {
    r(outcome(Code::UNKNOWN_CHILD,
              fmt::format("no child '{}' in tree '{}'", child, rt_.tree_.name)));
    return;
  }
  if (rt_.root_.phase == Runtime::Node::Phase::shutting_down ||
      rt_.root_.phase == Runtime::Node::Phase::stopped) {
    r(outcome(Code::SHUTTING_DOWN, "the tree is shutting down"));
    return;
  }
  if (waiters_.size() >= kMaxWaiters) {
    r(outcome(Code::BUSY,
              fmt::format("supervisor busy: {} requests already waiting; retry", kMaxWaiters)));
    return;
  }
  Runtime::Node& owner = *c->owner;
  bool owner_up =
      owner.phase == Runtime::Node::Phase::running || owner.phase == Runtime::Node::Phase::starting;
  bool dynamic = owner.spec->strategy == Strategy::simple_one_for_one;

  // Waits until the child is stopped.
  auto wait_stopped = [this, path, timeout_ms](Responder resp, std::string done_msg) {
    add_waiter(
        timeout_ms,
        [this, path, done_msg](Responder& rr) {
          Child* x = rt_.find_child(rt_.root_, path);
          if (x == nullptr || x->state == State::idle) {
            rr(outcome(Code::OK, done_msg));
            return true;
          }
          return false;
        },
        std::move(resp),
        [path](Responder& rr) {
          rr(outcome(Code::TIMEOUT, fmt::format("{} is still stopping", path)));
        });
  };
  // Waits until the child runs an incarnation after `before`.
  auto wait_started = [this, path, timeout_ms](Responder resp, std::uint32_t before) {
    add_waiter(
        timeout_ms,
        [this, path, before](Responder& rr) {
          Child* x = rt_.find_child(rt_.root_, path);
          if (x == nullptr) {
            rr(outcome(Code::FAILED, path + " was removed"));
            return true;
          }
          if (x->incarnation <= before) return false;
          if (x->state == State::running) {
            rr(outcome(Code::OK, x->pid > 0 ? fmt::format("{} running (pid {})", path, x->pid)
                                            : fmt::format("{} running", path)));
            return true;
          }
          if (x->state == State::idle || x->deleted) {
            rr(outcome(Code::FAILED,
                       fmt::format("{} did not start: {}", path,
                                   x->last_exit ? x->last_exit->describe() : "unknown")));
            return true;
          }
          return false;
        },
        std::move(resp),
        [path](Responder& rr) {
          rr(outcome(Code::TIMEOUT, fmt::format("{} has not started yet", path)));
        });
  };
  auto stop_now = [&](Child& x) {
    if (x.state == State::waiting) {  // in restart backoff: just do not restart it
      rt_.cancel_timer(x.restart_timer);
      x.state = State::idle;
    }
    if (x.state == State::idle) return false;
    owner.steps.push_back({Runtime::Step::Kind::stop, &x});
    rt_.pump(owner);
    return true;
  };

  switch (op) {
    case schema::ChildOp::START: {
      if (c->deleted) {
        r(outcome(Code::NOT_APPLICABLE, path + " was deleted"));
        return;
      }
      if (c->state != State::idle) {
        r(outcome(Code::NOT_APPLICABLE, fmt::format("{} is {}, not stopped", path,
                                                    state_name(static_cast<int>(c->state)))));
        return;
      }
      if (!owner_up) {
        r(outcome(Code::NOT_APPLICABLE, owner.path + " is not running"));
        return;
      }
      spdlog::info("{}: start requested by bulkheadctl", path);
      std::uint32_t before = c->incarnation;
      owner.steps.push_back({Runtime::Step::Kind::start, c});
      rt_.pump(owner);
      wait_started(std::move(r), before);
      return;
    }
    case schema::ChildOp::STOP:
    case schema::ChildOp::TERMINATE: {
      if (c->deleted) {
        r(outcome(Code::OK, path + " is already terminated"));
        return;
      }
      spdlog::info("{}: {} requested by bulkheadctl", path,
                   op == schema::ChildOp::STOP ? "stop" : "terminate");
      // OTP terminate_child of a simple_one_for_one child removes it.
      if (op == schema::ChildOp::TERMINATE && dynamic) c->deleted = true;
      bool stopping = stop_now(*c);
      std::string msg = c->deleted ? path + " terminated (removed)" : path + " stopped";
      if (!stopping) {
        if (dynamic && c->deleted) rt_.retire_dynamic(*c);  // not running: its slot is free now
        r(outcome(Code::OK, msg));
        return;
      }
      wait_stopped(std::move(r), msg);
      return;
    }
    case schema::ChildOp::RESTART: {
      if (c->deleted) {
        r(outcome(Code::NOT_APPLICABLE, path + " was deleted"));
        return;
      }
      if (!owner_up) {
        r(outcome(Code::NOT_APPLICABLE, owner.path + " is not running"));
        return;
      }
      spdlog::info("{}: restart requested by bulkheadctl", path);
      std::uint32_t before = c->incarnation;
      stop_now(*c);
      owner.steps.push_back({Runtime::Step::Kind::start, c});
      rt_.pump(owner);
      wait_started(std::move(r), before);
      return;
    }
    case schema::ChildOp::DELETE: {
      if (c->state != State::idle && !c->deleted) {
        r(outcome(Code::NOT_APPLICABLE, fmt::format("{} is {}: stop or terminate it first", path,
                                                    state_name(static_cast<int>(c->state)))));
        return;
      }
      if (owner.current == c || rt_.node_busy(owner)) {
        r(outcome(Code::NOT_APPLICABLE, owner.path + " is busy; try again"));
        return;
      }
      // Remove the child and its whole subtree: slots, channels, spec.
      std::function<void(Child&)> forget = [&](Child& x) {
        if (x.node) {
          for (auto& y : x.node->children) forget(*y);
          rt_.free_slots_.push_back(x.slot);  // a supervisor's slot names no endpoint
          x.slot = kNoSlot;
        } else {
          rt_.release_slot(x.slot, x.incarnation);  // peers forget it; the slot is reused
          x.slot = kNoSlot;
        }
        exits_.erase(x.path);
      };
      forget(*c);
      std::erase_if(owner.deferred, [c](const Runtime::Deferred& d) { return d.child == c; });
      std::erase_if(owner.steps, [c](const Runtime::Step& s) { return s.child == c; });
      spdlog::info("{}: deleted by bulkheadctl", path);
      rt_.event("child_deleted", c);
      std::erase_if(owner.children, [c](const std::unique_ptr<Child>& p) { return p.get() == c; });
      r(outcome(Code::OK, path + " deleted"));
      return;
    }
  }
  r(outcome(Code::NOT_APPLICABLE, "unknown operation"));
}

void ControlPlane::do_start_child(const std::string& sup, std::uint32_t timeout_ms, Responder r) {
  using State = Runtime::State;
  std::string path = full_path(sup);
  Runtime::Node* n = rt_.find_node(rt_.root_, path);
  auto answer = [](Code code, const std::string& msg, const std::string& child) {
    return make_answer<schema::Control::StartChildResults>([&](auto res) {
      auto o = res.initOutcome();
      o.setCode(code);
      o.setMessage(msg);
      res.setChild(child);
    });
  };
  if (n == nullptr) {
    r(answer(Code::UNKNOWN_CHILD, fmt::format("no supervisor '{}'", sup), ""));
    return;
  }
  if (n->spec->strategy != Strategy::simple_one_for_one || !n->spec->child_template) {
    r(answer(Code::NOT_APPLICABLE,
             fmt::format("{} is {}, not simple_one_for_one", path, to_string(n->spec->strategy)),
             ""));
    return;
  }
  if (n->phase != Runtime::Node::Phase::running) {
    r(answer(Code::NOT_APPLICABLE, path + " is not running", ""));
    return;
  }
  if (waiters_.size() >= kMaxWaiters) {
    r(answer(Code::BUSY,
             fmt::format("supervisor busy: {} requests already waiting; retry", kMaxWaiters), ""));
    return;
  }
  rt_.collect_removed(*n);
  ChildSpec cs = *n->spec->child_template;
  cs.id = fmt::format("{}", n->next_dynamic++);
  Runtime::Child* c = nullptr;
  try {
    c = &rt_.add_child(*n, cs);
  } catch (const std::exception& e) {
    r(answer(Code::FAILED, e.what(), ""));
    return;
  }
  c->notify_started = kNoEndpoint;  // a failed start removes it (see kNoEndpoint)
  std::string child = c->path;
  spdlog::info("{}: starting dynamic child {} (asked by bulkheadctl)", n->path, child);
  rt_.event("child_added", c);
  n->steps.push_back({Runtime::Step::Kind::start, c});
  rt_.pump(*n);
  add_waiter(
      timeout_ms,
      [this, child, answer](Responder& rr) {
        Runtime::Child* x = rt_.find_child(rt_.root_, child);
        if (x == nullptr) {
          rr(answer(Code::FAILED, child + " was removed", child));
          return true;
        }
        if (x->state == State::running) {
          rr(answer(Code::OK, "", child));
          return true;
        }
        if (x->deleted || x->state == State::idle) {
          rr(answer(Code::FAILED,
                    fmt::format("{} failed to start: {}", child,
                                x->last_exit ? x->last_exit->describe() : "unknown"),
                    child));
          return true;
        }
        return false;
      },
      std::move(r),
      [child, answer](Responder& rr) {
        rr(answer(Code::TIMEOUT, child + " has not started yet", child));
      });
}

void ControlPlane::do_kill(const std::string& child, int sig, const Responder& r) {
  auto answer = [](Code code, const std::string& msg, int pid) {
    return make_answer<schema::Control::KillResults>([&](auto res) {
      auto o = res.initOutcome();
      o.setCode(code);
      o.setMessage(msg);
      res.setPid(pid);
    });
  };
  std::string path = full_path(child);
  Runtime::Child* c = rt_.find_child(rt_.root_, path);
  if (c == nullptr) {
    r(answer(Code::UNKNOWN_CHILD, fmt::format("no child '{}' in tree '{}'", child, rt_.tree_.name),
             0));
    return;
  }
  if (sig <= 0 || sig >= NSIG) {
    r(answer(Code::NOT_APPLICABLE, fmt::format("bad signal number {}", sig), 0));
    return;
  }
  if (c->node) {
    r(answer(Code::NOT_APPLICABLE,
             path + " is a supervisor (in the supervisor's process): kill "
                    "one of its workers",
             0));
    return;
  }
  if (c->pid <= 0) {
    r(answer(Code::NOT_APPLICABLE,
             fmt::format("{} has no process ({})", path, state_name(static_cast<int>(c->state))),
             0));
    return;
  }
  pid_t pid = c->pid;  // not reaped yet (that happens on this thread): cannot be a stranger's
  spdlog::info("{}: bulkheadctl sends signal {} to pid {}", path, sig, pid);
  rt_.event("kill_requested", c, fmt::format(R"("signal":{})", sig));
  ::kill(pid, sig);
  r(answer(Code::OK, "", pid));
}

void ControlPlane::do_shutdown(const Responder& r) {
  auto phase = rt_.root_.phase;
  if (phase == Runtime::Node::Phase::shutting_down || phase == Runtime::Node::Phase::stopped) {
    r(make_answer<schema::Control::ShutdownResults>(
        [](auto res) { res.initOutcome().setCode(Code::OK); }));
    return;
  }
  spdlog::info("shutdown requested by bulkheadctl: stopping the tree in reverse start order");
  rt_.event("shutdown_requested", nullptr);
  ExitInfo why;
  why.kind = ExitInfo::Kind::shutdown;
  why.message = "requested by bulkheadctl";
  rt_.shutdown_node(rt_.root_, why);
  r(make_answer<schema::Control::ShutdownResults>(
      [](auto res) { res.initOutcome().setCode(Code::OK); }));
}

}  // namespace bulkhead::supervisor
