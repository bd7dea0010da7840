#include "supervisor/runtime.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string_view>

#include "ipc/channel.hpp"
#include "ipc/packet.hpp"
#include "schema/codec.hpp"
#include "schema/control.capnp.h"
#include "schema/json_text.hpp"
#include "supervisor/logging.hpp"
#include "supervisor/spawn.hpp"
#include "supervisor/value_from_toml.hpp"

namespace bulkhead::supervisor {

namespace {

using schema::json_escape;

std::string signal_name(int sig) {
  const char* abbrev = ::sigabbrev_np(sig);
  return abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

ExitInfo from_schema(schema::ExitReason::Reader r) {
  ExitInfo e;
  switch (r.which()) {
    case schema::ExitReason::NORMAL:
      e.kind = ExitInfo::Kind::normal;
      break;
    case schema::ExitReason::SHUTDOWN:
      e.kind = ExitInfo::Kind::shutdown;
      break;
    case schema::ExitReason::EXCEPTION: {
      auto x = r.getException();
      e.kind = ExitInfo::Kind::exception;
      e.type = x.getType();
      e.message = x.getMessage();
      e.actor = x.getActor();
      e.traceback = x.getTraceback();
      break;
    }
    default:
      e.kind = ExitInfo::Kind::protocol_violation;
      e.message = "worker reported an exit reason only the supervisor may observe";
  }
  return e;
}

}  // namespace

std::string ExitInfo::kind_name() const {
  switch (kind) {
    case Kind::normal:
      return "normal";
    case Kind::shutdown:
      return "shutdown";
    case Kind::exception:
      return "exception";
    case Kind::signal:
      return "signal";
    case Kind::exit_code:
      return "exit_code";
    case Kind::start_failure:
      return "start_failure";
    case Kind::ready_timeout:
      return "ready_timeout";
    case Kind::protocol_violation:
      return "protocol_violation";
    case Kind::max_intensity:
      return "max_intensity";
  }
  return "?";
}

std::string ExitInfo::describe() const {
  switch (kind) {
    case Kind::normal:
      return "normal";
    case Kind::shutdown:
      return message.empty() ? "shutdown" : "shutdown (" + message + ")";
    case Kind::exception:
      return fmt::format("exception {}: {}{}{}", type, message,
                         actor.empty() ? "" : " (in actor " + actor + ")",
                         traceback.empty() ? "" : "\n" + traceback);
    case Kind::signal:
      return fmt::format("killed by {} ({}){}{}", signal_name(number), number,
                         core_dumped ? ", core dumped" : "",
                         message.empty() ? "" : " [" + message + "]");
    case Kind::exit_code:
      return fmt::format("exit code {}", number);
    case Kind::start_failure:
      return "start failure: " + message;
    case Kind::ready_timeout:
      return fmt::format("ready timeout after {} ms", number);
    case Kind::protocol_violation:
      return "protocol violation: " + message;
    case Kind::max_intensity:
      return "reached max restart intensity: " + message;
  }
  return "?";
}

// ---------------------------------------------------------------------------

Runtime::Runtime(TreeSpec tree, RuntimeOptions options)
    : tree_(std::move(tree)), options_(std::move(options)), instance_(ipc::Instance::self()) {
  if (!options_.events_path.empty()) {
    events_ = std::fopen(options_.events_path.c_str(), "we");
    if (events_ == nullptr) ipc::throw_sys("open events file " + options_.events_path);
    std::setvbuf(events_, nullptr, _IOLBF, 0);
  }
  epoll_ = ipc::UniqueFd(ipc::check_sys(::epoll_create1(EPOLL_CLOEXEC), "epoll_create1"));
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGUSR2);  // dump per-child send statistics as events
  sigaddset(&set, SIGCHLD);  // orphaned descendants reparented to us (see reap_strays)
  ipc::check_sys(::sigprocmask(SIG_BLOCK, &set, nullptr), "sigprocmask");
  signal_fd_ =
      ipc::UniqueFd(ipc::check_sys(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK), "signalfd"));
  ::signal(SIGPIPE, SIG_IGN);
  // Orphans in our workers' subtrees (a zygote's workers, a worker's daemon
  // whose parent died) are reparented to us, not to init: we reap them.
  ipc::check_sys(::prctl(PR_SET_CHILD_SUBREAPER, 1), "prctl(PR_SET_CHILD_SUBREAPER)");
  watch(signal_fd_.get(), Watch::Type::signal, nullptr);
  board_ = ipc::Segment::create(ipc::segment_name(instance_, "bells"),
                                ipc::bell_board_bytes(kBoardSlots));
  board_->unlink();
  build_node(root_, tree_.root, "root", nullptr, nullptr);
  // BULKHEAD_DEATH_NOTICE=0 turns early death notices off (to compare).
  const char* notice = std::getenv("BULKHEAD_DEATH_NOTICE");
  if (notice == nullptr || std::string_view(notice) != "0") {
    death_watch_.emplace();
    if (death_watch_->available()) {
      watch(death_watch_->fd(), Watch::Type::death, nullptr);
    } else {
      spdlog::info("no futex_waitv on this kernel: deaths are seen when the kernel reports them");
      death_watch_.reset();
    }
  }
}

Runtime::~Runtime() {
  // run() stops everything; this is the last line of defence (an exception).
  std::function<void(Node&)> kill_all = [&](Node& n) {
    for (auto& c : n.children) {
      if (c->pid > 0) {
        ::kill(-c->pid, SIGKILL);
        ::kill(c->pid, SIGKILL);
        ::waitpid(c->pid, nullptr, 0);
      }
      if (c->node) kill_all(*c->node);
    }
  };
  kill_all(root_);
  reap_corpses();
  if (attach_fd_ && !options_.socket_path.empty()) ::unlink(options_.socket_path.c_str());
  if (events_ != nullptr) std::fclose(events_);
}

double Runtime::uptime_ms() const {
  return std::chrono::duration<double, std::milli>(Clock::now() - started_).count();
}

void Runtime::event(const std::string& name, const Child* c, const std::string& extra_json) {
  auto mono = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch());
  std::string line =
      fmt::format(R"({{"t_ms":{:.3f},"mono_ns":{},"event":"{}")", uptime_ms(), mono.count(), name);
  if (c != nullptr) {
    line += fmt::format(R"(,"child":"{}","incarnation":{})", json_escape(c->path), c->incarnation);
    if (c->pid > 0) line += fmt::format(R"(,"pid":{})", c->pid);
  }
  if (!extra_json.empty()) line += "," + extra_json;
  line += "}\n";
  if (events_ != nullptr) std::fputs(line.c_str(), events_);
  if (event_listener_) {
    line.pop_back();  // the newline
    event_listener_(name, c, line);
  }
}

// How a reaped child ended, from waitid's answer.
static ipc::ExitStatus exit_status_of(const siginfo_t& si) {
  ipc::ExitStatus st;
  st.signaled = si.si_code == CLD_KILLED || si.si_code == CLD_DUMPED;
  st.core_dumped = si.si_code == CLD_DUMPED;
  st.number = si.si_status;
  return st;
}

// A worker incarnation's key in the DeathWatch.
static std::uint64_t death_key(std::uint32_t slot, std::uint32_t incarnation) {
  return (static_cast<std::uint64_t>(slot) << 32) | incarnation;
}

static std::string reason_json(const ExitInfo& r) {
  return fmt::format(
      R"("reason":"{}","reason_text":"{}","signal":{},"exit_code":{},"core_dumped":{},"exception_type":"{}")",
      r.kind_name(), json_escape(r.describe()), r.kind == ExitInfo::Kind::signal ? r.number : 0,
      r.kind == ExitInfo::Kind::exit_code ? r.number : 0, r.core_dumped ? "true" : "false",
      json_escape(r.type));
}

// --- loop -------------------------------------------------------------------

void Runtime::watch(int fd, Watch::Type type, Child* c, Endpoint* ep) {
  watches_[fd] = Watch{type, c, ep};
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  ipc::check_sys(::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev), "epoll_ctl add");
}

void Runtime::unwatch(int fd) {
  if (fd < 0 || watches_.erase(fd) == 0) return;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
}

Runtime::TimerKey Runtime::add_timer(Ms after, std::function<void()> fn) {
  TimerKey key{Clock::now() + after, next_timer_id_++};
  timers_.emplace(key, std::move(fn));
  return key;
}

void Runtime::cancel_timer(std::optional<TimerKey>& key) {
  if (key) timers_.erase(*key);
  key.reset();
}

void Runtime::run_due_timers() {
  while (!timers_.empty() && timers_.begin()->first.first <= Clock::now()) {
    auto fn = std::move(timers_.begin()->second);
    timers_.erase(timers_.begin());
    fn();
  }
}

void Runtime::on_signal() {
  signalfd_siginfo si{};
  while (::read(signal_fd_.get(), &si, sizeof si) == sizeof si) {
    if (si.ssi_signo == SIGUSR2) {
      dump_stats();
      continue;
    }
    if (si.ssi_signo == SIGCHLD) {
      reap_strays();
      continue;
    }
    spdlog::info("received {}: stopping the tree in reverse start order",
                 signal_name(si.ssi_signo));
    event("signal", nullptr, fmt::format(R"("signal":{})", si.ssi_signo));
    if (root_.phase == Node::Phase::shutting_down || root_.phase == Node::Phase::stopped) {
      spdlog::info("already stopping");
      continue;
    }
    ExitInfo r;
    r.kind = ExitInfo::Kind::shutdown;
    r.message = "requested by " + signal_name(si.ssi_signo);
    shutdown_node(root_, r);
  }
}

int Runtime::run() {
  auto swept = ipc::sweep_stale_segments();
  for (const auto& s : swept) spdlog::info("removed stale segment /dev/shm/{}", s);
  spdlog::info("bulkhead-supervisor {} (instance {}) starting tree '{}' from {}", ::getpid(),
               instance_.str(), tree_.name, tree_.file.string());
  if (!options_.socket_path.empty()) open_attach_socket();
  event("supervisor_started", nullptr,
        fmt::format(R"("pid":{},"socket":"{}")", ::getpid(), json_escape(options_.socket_path)));
  start_node(root_);
  std::array<epoll_event, 64> evs;
  while (!done_) {
    int timeout = -1;
    if (!timers_.empty()) {
      auto d = timers_.begin()->first.first - Clock::now();
      timeout = static_cast<int>(
          std::max<long long>(0, std::chrono::ceil<std::chrono::milliseconds>(d).count()));
    }
    int n = ::epoll_wait(epoll_.get(), evs.data(), static_cast<int>(evs.size()), timeout);
    if (n < 0 && errno != EINTR) ipc::throw_sys("epoll_wait");
    for (int i = 0; i < n && !done_; ++i) {
      auto it = watches_.find(evs[i].data.fd);
      if (it == watches_.end()) continue;  // unwatched by an earlier event
      Watch w = it->second;
      switch (w.type) {
        case Watch::Type::signal:
          on_signal();
          break;
        case Watch::Type::control:
          on_control_readable(*w.child);
          break;
        case Watch::Type::output:
          on_output_readable(*w.child, evs[i].data.fd);
          break;
        case Watch::Type::pidfd:
          reap_worker(*w.child);
          break;
        case Watch::Type::death:
          on_death_notices();
          break;
        case Watch::Type::corpse:
          reap_corpse(evs[i].data.fd);
          break;
        case Watch::Type::attach:
          on_attach();
          break;
        case Watch::Type::client:
          on_client_readable(*w.endpoint);
          break;
        case Watch::Type::hook:
          if (auto h = hooks_.find(evs[i].data.fd); h != hooks_.end()) h->second();
          break;
        case Watch::Type::zygote:
          for (auto& [binary, z] : zygotes_) {
            if (z->pidfd() == evs[i].data.fd) {
              on_zygote_exit(binary);
              break;
            }
          }
          break;
      }
    }
    run_due_timers();
  }
  for (auto& [binary, z] : zygotes_) unwatch(z->pidfd());
  zygotes_.clear();  // each is killed and reaped
  reap_corpses();
  event("supervisor_exit", nullptr, fmt::format(R"("exit_code":{})", exit_code_));
  return exit_code_;
}

// --- tree -------------------------------------------------------------------

void Runtime::build_node(Node& n, const SupervisorSpec& spec, const std::string& path, Node* parent,
                         Child* self) {
  n.spec = &spec;
  n.path = path;
  n.parent = parent;
  n.self = self;
  for (const auto& cs : spec.children) add_child(n, cs);
  if (spec.strategy == Strategy::simple_one_for_one && spec.child_template) {
    for (int i = 0; i < spec.instances; ++i) {
      ChildSpec cs = *spec.child_template;
      cs.id = fmt::format("{}", n.next_dynamic++);
      add_child(n, cs);
    }
  }
}

Runtime::Child& Runtime::add_child(Node& n, const ChildSpec& spec) {
  auto c = std::make_unique<Child>();
  c->spec = spec;
  c->path = n.path + "/" + spec.id;
  c->owner = &n;
  c->slot = alloc_slot();
  if (auto it = slot_incarnation_.find(c->slot); it != slot_incarnation_.end()) {
    c->incarnation = it->second;  // a reused slot: numbering goes on
  }
  if (spec.kind == ChildKind::supervisor) {
    c->node = std::make_unique<Node>();
    build_node(*c->node, *spec.supervisor, c->path, &n, c.get());
  } else {
    for (const auto& a : spec.actors) c->actor_names.push_back(a.name);
    c->mailbox_keep = spec.mailbox_keep;
    c->mailbox_bytes = spec.mailbox_bytes;
    c->overflow = spec.overflow;
    c->block_timeout = spec.block_timeout;
    endpoints_[c->slot] = c.get();
  }
  n.children.push_back(std::move(c));
  return *n.children.back();
}

bool Runtime::node_busy(const Node& n) const {
  return n.current != nullptr || n.waiting_step || !n.steps.empty() ||
         n.phase != Node::Phase::running;
}

void Runtime::start_node(Node& n) {
  // A (re)started supervisor begins from its specs, as a fresh OTP
  // supervisor process would: no restart history, temporary children back.
  n.phase = Node::Phase::starting;
  n.restart_times.clear();
  n.deferred.clear();
  // A removed dynamic child (its slot given back) stays removed, as OTP
  // restarts a simple_one_for_one supervisor without its dynamic children.
  for (auto& c : n.children) {
    if (c->slot != kNoSlot) c->deleted = false;
  }
  spdlog::info("{}: starting {} children ({})", n.path, n.children.size(),
               to_string(n.spec->strategy));
  for (auto& c : n.children) {
    if (!c->deleted) n.steps.push_back({Step::Kind::start, c.get()});
  }
  pump(n);
}

void Runtime::shutdown_node(Node& n, ExitInfo reason) {
  if (n.phase == Node::Phase::shutting_down || n.phase == Node::Phase::stopped) return;
  n.phase = Node::Phase::shutting_down;
  n.end_reason = std::move(reason);
  n.deferred.clear();
  n.steps.clear();
  // A backoff wait is abandoned; a start or stop in progress finishes first
  // (its child is stopped below anyway).
  if (n.waiting_step) {
    cancel_timer(n.wait_timer);
    n.waiting_step = false;
  }
  for (auto it = n.children.rbegin(); it != n.children.rend(); ++it) {
    n.steps.push_back({Step::Kind::stop, it->get()});
  }
  spdlog::info("{}: stopping children in reverse start order ({})", n.path,
               n.end_reason.describe());
  if (n.current == nullptr && !n.waiting_step) pump(n);
}

void Runtime::pump(Node& n) {
  // Steps can complete synchronously (a failed spawn, a nested supervisor
  // with no children) and call back into pump(); the outer call re-checks
  // its loop condition, so the nested one has nothing to do.
  if (n.pumping) return;
  n.pumping = true;
  while (n.current == nullptr && !n.waiting_step && !n.steps.empty()) {
    Step s = n.steps.front();
    n.steps.pop_front();
    Child& c = *s.child;
    switch (s.kind) {
      case Step::Kind::wait:
        n.waiting_step = true;
        n.wait_timer = add_timer(s.delay, [this, &n] {
          n.wait_timer.reset();
          n.waiting_step = false;
          pump(n);
        });
        break;
      case Step::Kind::stop:
        if (c.state == State::waiting) {
          cancel_timer(c.restart_timer);
          c.state = State::idle;
        }
        if (c.state == State::idle) break;
        n.current = &c;
        if (c.state == State::stopping) break;  // already on its way down
        c.state = State::stopping;
        if (c.node) {
          // A supervisor child stops its own children in order; its
          // `shutdown` bounds how long that may take (OTP): brutal_kill kills
          // the subtree at once, a timeout kills it when it passes.
          event("stopping", &c);
          const Shutdown& sd = c.spec.shutdown;
          Node* sub = c.node.get();
          if (sd.kind == Shutdown::Kind::brutal_kill) {
            kill_subtree(*sub, "brutal_kill of supervisor " + c.path);
          } else if (sd.kind == Shutdown::Kind::timeout) {
            c.kill_timer = add_timer(sd.timeout, [this, &c, sub] {
              c.kill_timer.reset();
              spdlog::warn("{}: subtree still stopping after {} ms: SIGKILL to all its workers",
                           c.path, c.spec.shutdown.timeout.count());
              kill_subtree(*sub, "supervisor shutdown timeout of " + c.path);
            });
          }
          ExitInfo r;
          r.kind = ExitInfo::Kind::shutdown;
          shutdown_node(*c.node, r);
        } else {
          stop_worker(c);
        }
        break;
      case Step::Kind::start:
        if (c.deleted || c.state != State::idle) break;
        n.current = &c;
        c.state = State::starting;
        if (c.node) {
          ++c.incarnation;
          start_node(*c.node);
        } else {
          try {
            start_worker(c);
          } catch (const std::exception& e) {
            ExitInfo r;
            r.kind = ExitInfo::Kind::start_failure;
            r.message = e.what();
            close_worker_fds(c);
            c.state = State::idle;
            n.current = nullptr;
            c.last_exit = r;
            event("exited", &c, reason_json(r));
            spdlog::error("{}: {}", c.path, r.describe());
            if (!fail_requested_start(c, r)) on_start_failure(n, c, r);
          }
        }
        break;
    }
  }
  n.pumping = false;
  if (n.current == nullptr && !n.waiting_step && n.steps.empty()) sequence_done(n);
}

void Runtime::step_done(Node& n) {
  n.current = nullptr;
  pump(n);
}

void Runtime::sequence_done(Node& n) {
  switch (n.phase) {
    case Node::Phase::starting:
      n.phase = Node::Phase::running;
      if (n.self != nullptr) {
        on_child_started(*n.parent, *n.self);
      } else {
        spdlog::info("{}: tree started ({:.1f} ms)", n.path, uptime_ms());
        event("tree_started", nullptr);
      }
      drain_deferred(n);
      break;
    case Node::Phase::running:
      drain_deferred(n);
      break;
    case Node::Phase::shutting_down: {
      n.phase = Node::Phase::stopped;
      event("supervisor_stopped", n.self,
            fmt::format(R"("node":"{}",{})", json_escape(n.path), reason_json(n.end_reason)));
      if (n.self != nullptr) {
        on_child_exit(*n.parent, *n.self, n.end_reason);
      } else {
        done_ = true;
        switch (n.end_reason.kind) {
          case ExitInfo::Kind::max_intensity:
            exit_code_ = 1;
            spdlog::critical("root supervisor gave up: {}", n.end_reason.describe());
            break;
          case ExitInfo::Kind::start_failure:
            exit_code_ = 3;
            spdlog::critical("the tree failed to start: {}", n.end_reason.message);
            break;
          default:
            exit_code_ = 0;
            spdlog::info("tree stopped ({})", n.end_reason.describe());
        }
      }
      break;
    }
    case Node::Phase::idle:
    case Node::Phase::stopped:
      break;
  }
}

void Runtime::drain_deferred(Node& n) {
  while (!node_busy(n) && !n.deferred.empty()) {
    Deferred d = n.deferred.front();
    n.deferred.pop_front();
    // Ignore exits of incarnations replaced since (e.g. by a one_for_all restart).
    if (d.child->incarnation != d.incarnation || d.child->state != State::idle ||
        d.child->deleted) {
      continue;
    }
    handle_crash(n, *d.child, d.reason);
  }
}

void Runtime::on_child_started(Node& n, Child& c) {
  c.state = State::running;
  c.ready_at = Clock::now();
  if (c.notify_started) {
    child_result(*c.notify_started, true, c.path, "");
    c.notify_started.reset();
  }
  if (c.node) event("supervisor_started", &c);
  if (n.current == &c) step_done(n);
}

void Runtime::on_child_exit(Node& n, Child& c, ExitInfo reason) {
  cancel_timer(c.kill_timer);  // a supervisor child's shutdown timer
  State was = c.state;
  c.state = State::idle;
  c.last_exit = reason;
  if (was == State::stopping) {
    if (c.notify_terminated) {
      child_result(*c.notify_terminated, true, c.path, "");
      c.notify_terminated.reset();
    }
    if (c.deleted && n.spec->strategy == Strategy::simple_one_for_one) retire_dynamic(c);
    if (n.current == &c) step_done(n);
    return;
  }
  if (was == State::starting) {
    if (n.current == &c) n.current = nullptr;
    if (fail_requested_start(c, reason)) {
      pump(n);
      return;
    }
    on_start_failure(n, c, reason);
    return;
  }
  // An unexpected exit of a running child.
  if (n.phase == Node::Phase::shutting_down || n.phase == Node::Phase::stopped) return;
  if (node_busy(n)) {
    spdlog::info("{}: exit of {} deferred until the current restart sequence ends", n.path, c.path);
    n.deferred.push_back({&c, c.incarnation, std::move(reason)});
    return;
  }
  handle_crash(n, c, reason);
}

void Runtime::on_start_failure(Node& n, Child& c, const ExitInfo& reason) {
  if (n.phase == Node::Phase::starting) {
    // OTP: a child that fails to start makes its supervisor fail to start:
    // stop what was started (reverse order) and report upwards.
    ExitInfo r;
    r.kind = ExitInfo::Kind::start_failure;
    r.message = fmt::format("child {} failed to start: {}", c.path, reason.describe());
    spdlog::error("{}: {}", n.path, r.message);
    n.phase = Node::Phase::running;  // so shutdown_node() proceeds
    shutdown_node(n, r);
    return;
  }
  if (n.phase == Node::Phase::shutting_down) {
    pump(n);
    return;
  }
  // A failed restart counts like another exit (as OTP's try_again_restart).
  n.deferred.push_back({&c, c.incarnation, reason});
  pump(n);
}

Ms Runtime::next_backoff(Child& c) {
  if (!c.spec.backoff) return Ms(0);
  const Backoff& b = *c.spec.backoff;
  bool stable = c.ready_at != TimePoint{} && Clock::now() - c.ready_at >= b.reset_after;
  if (c.backoff_next == Ms(0) || stable) c.backoff_next = b.initial;
  Ms base = c.backoff_next;
  c.backoff_next =
      std::min(b.max, Ms(static_cast<long long>(static_cast<double>(base.count()) * b.multiplier)));
  if (b.jitter <= 0.0 || base.count() == 0) return base;
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_real_distribution<double> dist(1.0 - b.jitter, 1.0 + b.jitter);
  return Ms(static_cast<long long>(static_cast<double>(base.count()) * dist(rng)));
}

void Runtime::check_auto_shutdown(Node& n, Child& c) {
  if (!c.spec.significant || n.spec->auto_shutdown == AutoShutdown::never) return;
  bool all_done = true;
  for (auto& x : n.children) {
    if (x->spec.significant && x->state != State::idle) all_done = false;
  }
  if (n.spec->auto_shutdown == AutoShutdown::any_significant || all_done) {
    ExitInfo r;
    r.kind = ExitInfo::Kind::shutdown;
    r.message = fmt::format("auto_shutdown {}: significant child {} ended",
                            to_string(n.spec->auto_shutdown), c.path);
    spdlog::info("{}: {}", n.path, r.message);
    event("auto_shutdown", n.self, fmt::format(R"("node":"{}")", json_escape(n.path)));
    shutdown_node(n, r);
  }
}

void Runtime::handle_crash(Node& n, Child& c, const ExitInfo& reason) {
  bool restart = c.spec.restart == RestartType::permanent ||
                 (c.spec.restart == RestartType::transient && reason.abnormal());
  if (!restart) {
    // OTP deletes a temporary child's spec, and removes any dynamic child
    // that is not restarted: its slot is free for the next one.
    const bool dynamic = n.spec->strategy == Strategy::simple_one_for_one;
    if (c.spec.restart == RestartType::temporary || dynamic) c.deleted = true;
    spdlog::info("{}: decision: not restarted ({} child, reason {})", c.path,
                 to_string(c.spec.restart), reason.kind_name());
    event("not_restarted", &c, fmt::format(R"("restart_type":"{}")", to_string(c.spec.restart)));
    if (dynamic) retire_dynamic(c);
    check_auto_shutdown(n, c);
    return;
  }
  // Restart intensity: more than `intensity` restarts within `period` -> give up.
  auto now = Clock::now();
  n.restart_times.push_back(now);
  while (!n.restart_times.empty() && now - n.restart_times.front() > n.spec->period) {
    n.restart_times.pop_front();
  }
  if (static_cast<int>(n.restart_times.size()) > n.spec->intensity) {
    ExitInfo r;
    r.kind = ExitInfo::Kind::max_intensity;
    r.message =
        fmt::format("{} restarts within {} ms (intensity {}), last: {} {}", n.restart_times.size(),
                    n.spec->period.count(), n.spec->intensity, c.path, reason.describe());
    spdlog::error("{}: decision: give up and escalate: {}", n.path, r.message);
    event("escalate", n.self,
          fmt::format(R"("node":"{}","cause":"{}")", json_escape(n.path), json_escape(c.path)));
    shutdown_node(n, r);
    return;
  }
  ++c.restarts;
  Ms delay = next_backoff(c);
  std::string when =
      delay.count() > 0 ? fmt::format("restart in {} ms", delay.count()) : "restart now";
  spdlog::info("{}: decision: {} ({}, {} of {} allowed in {} ms)", c.path, when,
               to_string(n.spec->strategy), n.restart_times.size(), n.spec->intensity,
               n.spec->period.count());
  event(
      "restart_scheduled", &c,
      fmt::format(R"("delay_ms":{},"strategy":"{}")", delay.count(), to_string(n.spec->strategy)));

  switch (n.spec->strategy) {
    case Strategy::one_for_one:
    case Strategy::simple_one_for_one:
      if (delay.count() > 0) {
        c.state = State::waiting;
        spdlog::info("{}: waiting {} ms before restart (last exit: {})", c.path, delay.count(),
                     reason.describe());
        c.restart_timer = add_timer(delay, [this, &n, &c] {
          c.restart_timer.reset();
          if (c.state != State::waiting) return;
          c.state = State::idle;
          n.steps.push_back({Step::Kind::start, &c});
          pump(n);
        });
      } else {
        n.steps.push_back({Step::Kind::start, &c});
        pump(n);
      }
      break;
    case Strategy::one_for_all:
    case Strategy::rest_for_one: {
      // Index of the crashed child: one_for_all affects all, rest_for_one
      // the crashed child and those started after it.
      std::size_t first = 0;
      if (n.spec->strategy == Strategy::rest_for_one) {
        for (std::size_t i = 0; i < n.children.size(); ++i) {
          if (n.children[i].get() == &c) first = i;
        }
      }
      for (std::size_t i = n.children.size(); i-- > first;) {
        Child* x = n.children[i].get();
        if (x == &c) continue;
        n.steps.push_back({Step::Kind::stop, x});
        if (x->spec.restart == RestartType::temporary) x->deleted = true;
      }
      if (delay.count() > 0) n.steps.push_back({Step::Kind::wait, nullptr, delay});
      for (std::size_t i = first; i < n.children.size(); ++i) {
        n.steps.push_back({Step::Kind::start, n.children[i].get()});
      }
      pump(n);
      break;
    }
  }
}

// --- workers ----------------------------------------------------------------

void Runtime::send_start(Child& c) {
  capnp::MallocMessageBuilder mb;
  auto start = mb.initRoot<schema::ToWorker>().initStart();
  start.setChildId(c.path);
  start.setIncarnation(c.incarnation);
  start.setWorkerSlot(c.slot);
  start.setMailbox(c.mailbox_keep ? schema::MailboxPolicy::KEEP : schema::MailboxPolicy::DROP);
  auto actors = start.initActors(static_cast<unsigned>(c.spec.actors.size()));
  for (unsigned i = 0; i < c.spec.actors.size(); ++i) {
    const ActorConfig& a = c.spec.actors[i];
    actors[i].setType(a.type);
    actors[i].setName(a.name);
    value_from_toml(a.args, actors[i].initArgs());
  }
  auto words = capnp::messageToFlatArray(mb);
  auto bytes = words.asBytes();
  auto st = c.control_ring.try_push(
      ipc::kControlFrame, {reinterpret_cast<const std::byte*>(bytes.begin()), bytes.size()});
  if (st != ipc::PushStatus::ok) {
    throw std::runtime_error(
        fmt::format("start message of {} bytes does not fit the control ring", bytes.size()));
  }
}

void Runtime::start_worker(Child& c) {
  if (c.slot == kNoSlot) {
    throw std::logic_error(c.path + " was removed: it has no slot to start in");
  }
  if (!c.segment) {
    std::string name = ipc::segment_name(instance_, fmt::format("w{}", c.slot));
    c.segment = ipc::Segment::create(name, mailbox_layout_.payload_bytes());
    c.segment->unlink();  // the fd is all the workers need: nothing left in /dev/shm, ever
    ipc::format_mailbox(*c.segment, mailbox_layout_, c.slot);
  } else {
    ipc::reset_control_ring(*c.segment, mailbox_layout_);
  }
  auto view = ipc::mailbox_view(*c.segment, mailbox_layout_);
  c.doorbell = ipc::Doorbell(ipc::bell_of(*board_, c.slot));
  c.control_ring =
      ipc::RingProducer(view.control_ring, c.segment->name() + "/control", &c.doorbell);
  ++c.incarnation;
  c.report.reset();
  c.stop_requested = c.ready_timed_out = c.violated = false;
  c.stop_note.clear();
  c.ready_at = TimePoint{};

  // Everything the new incarnation needs is queued before it exists: its
  // Start, the peer table, and its inbound channels (fds on the socket).
  auto [ours, theirs] = ipc::seqpacket_pair();
  c.control = std::move(ours);
  send_start(c);
  send_peer_table(c);
  deliver_inbound_channels(c);

  Spawned s = spawn(c, theirs.get());
  c.pid = s.pid;
  c.live = true;
  c.pidfd = std::move(s.pidfd);
  if (!c.capture) c.capture = make_output_capture(c.path, c.spec);
  c.capture->attach(c.pid, std::move(s.out), std::move(s.err));
  ipc::check_sys(::fcntl(c.control.get(), F_SETFL, O_NONBLOCK), "fcntl control socket");
  c.spawned_at = Clock::now();
  watch(c.pidfd.get(), Watch::Type::pidfd, &c);
  watch(c.control.get(), Watch::Type::control, &c);
  if (c.capture->out_fd() >= 0) watch(c.capture->out_fd(), Watch::Type::output, &c);
  if (c.capture->err_fd() >= 0) watch(c.capture->err_fd(), Watch::Type::output, &c);
  spdlog::info("{}: spawned pid {} (incarnation {})", c.path, c.pid, c.incarnation);
  event("spawned", &c);
  c.ready_timer = add_timer(c.spec.start_timeout, [this, &c] {
    c.ready_timer.reset();
    if (c.state != State::starting || c.pid <= 0) return;
    spdlog::error("{}: pid {} not ready within {} ms: killing it", c.path, c.pid,
                  c.spec.start_timeout.count());
    c.ready_timed_out = true;
    kill_group(c, SIGKILL);
  });
}

// --- messaging plumbing -----------------------------------------------------

void Runtime::push_control(Endpoint& ep,
                           const std::function<void(schema::ToWorker::Builder)>& fill) {
  if (!ep.control_ring.attached()) return;
  capnp::MallocMessageBuilder mb;
  fill(mb.initRoot<schema::ToWorker>());
  auto words = capnp::messageToFlatArray(mb);
  push_control_bytes(ep, words.asBytes());
}

void Runtime::push_control_bytes(Endpoint& ep, kj::ArrayPtr<const kj::byte> bytes) {
  if (!ep.control_ring.attached()) return;
  auto st = ep.control_ring.try_push(
      ipc::kControlFrame, {reinterpret_cast<const std::byte*>(bytes.begin()), bytes.size()});
  if (st != ipc::PushStatus::ok) {
    spdlog::warn("{}: control ring full or broken: a control message was not delivered", ep.path);
  }
}

void Runtime::push_control_to_all_but(const Endpoint& ep,
                                      const std::function<void(schema::ToWorker::Builder)>& fill) {
  // Built once, copied into each ring: a restart in a tree of N workers
  // costs N ring pushes, not N message builds.
  capnp::MallocMessageBuilder mb;
  fill(mb.initRoot<schema::ToWorker>());
  auto words = capnp::messageToFlatArray(mb);
  for (auto& [slot, other] : endpoints_) {
    if (other == &ep || !other->live) continue;
    push_control_bytes(*other, words.asBytes());
  }
}

static schema::Overflow to_schema(ChildSpec::Overflow o) {
  switch (o) {
    case ChildSpec::Overflow::block:
      return schema::Overflow::BLOCK;
    case ChildSpec::Overflow::fail:
      return schema::Overflow::FAIL;
    case ChildSpec::Overflow::drop:
      return schema::Overflow::DROP;
  }
  return schema::Overflow::BLOCK;
}

static void to_schema(const ExitInfo& e, schema::ExitReason::Builder b) {
  switch (e.kind) {
    case ExitInfo::Kind::normal:
      b.setNormal();
      break;
    case ExitInfo::Kind::shutdown:
      b.setShutdown();
      break;
    case ExitInfo::Kind::exception: {
      auto x = b.initException();
      x.setType(e.type);
      x.setMessage(e.message);
      x.setActor(e.actor);
      x.setTraceback(e.traceback);
      break;
    }
    case ExitInfo::Kind::signal: {
      auto x = b.initSignal();
      x.setNumber(e.number);
      x.setCoreDumped(e.core_dumped);
      break;
    }
    case ExitInfo::Kind::exit_code:
      b.setExitCode(e.number);
      break;
    case ExitInfo::Kind::start_failure:
      b.setStartFailure(e.message);
      break;
    case ExitInfo::Kind::ready_timeout:
      b.setReadyTimeout(static_cast<std::uint32_t>(e.number));
      break;
    case ExitInfo::Kind::protocol_violation:
      b.setProtocolViolation(e.message);
      break;
    case ExitInfo::Kind::max_intensity:
      b.setShutdown();
      break;
  }
}

void Runtime::fill_peer(schema::PeerInfo::Builder b, const Endpoint& ep) const {
  b.setSlot(ep.slot);
  b.setIncarnation(ep.incarnation);
  b.setChildId(ep.path);
  b.setRunning(ep.running);
  b.setOverflow(to_schema(ep.overflow));
  b.setBlockTimeoutMs(static_cast<std::uint32_t>(ep.block_timeout.count()));
  auto names = b.initActorNames(static_cast<unsigned>(ep.actor_names.size()));
  for (unsigned i = 0; i < ep.actor_names.size(); ++i) names.set(i, ep.actor_names[i]);
}

void Runtime::send_peer_table(Endpoint& ep) {
  push_control(ep, [&](schema::ToWorker::Builder m) {
    auto list = m.initPeers(static_cast<unsigned>(endpoints_.size()));
    unsigned i = 0;
    for (const auto& [slot, other] : endpoints_) fill_peer(list[i++], *other);
  });
}

void Runtime::broadcast_up(const Endpoint& ep) {
  push_control_to_all_but(ep, [&](schema::ToWorker::Builder m) { fill_peer(m.initPeerUp(), ep); });
}

void Runtime::broadcast_down(const Endpoint& ep, const ExitInfo& why) {
  push_control_to_all_but(ep, [&](schema::ToWorker::Builder m) {
    auto d = m.initPeerDown();
    d.setSlot(ep.slot);
    d.setIncarnation(ep.incarnation);
    to_schema(why, d.initReason());
  });
}

Runtime::Channel& Runtime::channel(std::uint32_t producer, std::uint32_t consumer) {
  auto key = std::make_pair(producer, consumer);
  auto it = channels_.find(key);
  if (it != channels_.end()) return it->second;
  std::size_t cap = endpoints_.at(consumer)->mailbox_bytes;
  std::string name = ipc::segment_name(instance_, fmt::format("c{}.{}", producer, consumer));
  auto seg = ipc::Segment::create(name, ipc::channel_payload_bytes(cap));
  seg.unlink();
  ipc::format_channel(seg, cap, producer, consumer);
  return channels_.emplace(key, Channel{std::move(seg), cap}).first->second;
}

void Runtime::deliver_channel(Endpoint& ep, Channel& ch, bool outbound, std::uint32_t peer) {
  if (!ep.control) return;
  std::byte tag[8] = {};
  if (!ipc::send_packet_with_fd(ep.control.get(), tag, ch.segment.fd())) return;
  push_control(ep, [&](schema::ToWorker::Builder m) {
    auto c = m.initChannel();
    c.setPeer(peer);
    c.setOutbound(outbound);
  });
}

void Runtime::deliver_inbound_channels(Endpoint& ep) {
  for (auto& [key, ch] : channels_) {
    if (key.second == ep.slot) deliver_channel(ep, ch, /*outbound=*/false, key.first);
  }
}

void Runtime::on_open_channel(Endpoint& ep, std::uint32_t to) {
  auto target = endpoints_.find(to);
  if (target == endpoints_.end() || to == ep.slot) {
    spdlog::info("{}: no channel to slot {}: it is gone", ep.path, to);
    push_control(ep, [&](schema::ToWorker::Builder m) { m.setChannelRefused(to); });
    return;
  }
  bool fresh = channels_.find({ep.slot, to}) == channels_.end();
  Channel& ch = channel(ep.slot, to);
  deliver_channel(ep, ch, /*outbound=*/true, to);
  // The consumer learns of a new channel now; an existing one it got at start.
  if (fresh && target->second->live) deliver_channel(*target->second, ch, false, ep.slot);
}

void Runtime::on_broken_channel(Endpoint& consumer, std::uint32_t producer,
                                std::uint32_t incarnation, const std::string& detail) {
  auto it = endpoints_.find(producer);
  if (it == endpoints_.end()) return;
  spdlog::error("{}: channel from {} broken: {}", consumer.path, it->second->path, detail);
  if (auto ch = channels_.find({producer, consumer.slot}); ch != channels_.end()) {
    retire_stats(ch->first, ch->second);
    channels_.erase(ch);  // a fresh one is made on the next request
  }
  if (it->second->is_client) return;
  auto& c = static_cast<Child&>(*it->second);
  if (incarnation != 0 && incarnation != c.incarnation) {
    spdlog::warn("{}: the report is about incarnation {}, not the running {}: not killed", c.path,
                 incarnation, c.incarnation);
    return;
  }
  if (c.pid > 0) {
    c.violated = true;
    ExitInfo r;
    r.kind = ExitInfo::Kind::protocol_violation;
    r.message = "broke the ring protocol on its channel to " + consumer.path + ": " + detail;
    c.report = r;
    kill_group(c, SIGKILL);
  }
}

void Runtime::on_endpoint_message(Endpoint& ep, schema::ToSupervisor::Reader msg) {
  switch (msg.which()) {
    case schema::ToSupervisor::OPEN_CHANNEL:
      on_open_channel(ep, msg.getOpenChannel());
      break;
    case schema::ToSupervisor::BROKEN_CHANNEL:
      on_broken_channel(ep, msg.getBrokenChannel().getPeer(),
                        msg.getBrokenChannel().getProducerIncarnation(),
                        msg.getBrokenChannel().getDetail());
      break;
    case schema::ToSupervisor::START_CHILD:
      start_dynamic(ep, msg.getStartChild());
      break;
    case schema::ToSupervisor::TERMINATE_CHILD:
      terminate_dynamic(ep, msg.getTerminateChild());
      break;
    default:
      break;
  }
}

void Runtime::kill_group(Child& c, int sig) {
  if (c.pid <= 0) return;  // reaped: the pid may belong to someone else now
  ::kill(-c.pid, sig);     // the worker's process group, grandchildren included
  ::kill(c.pid, sig);      // in case it left its group
}

void Runtime::kill_subtree(Node& n, const std::string& note) {
  for (auto& c : n.children) {
    if (c->node) {
      kill_subtree(*c->node, note);
    } else if (c->pid > 0) {
      c->stop_note = note;
      kill_group(*c, SIGKILL);
    }
  }
}

void Runtime::stop_worker(Child& c) {
  c.stop_requested = true;
  cancel_timer(c.ready_timer);
  const Shutdown& sd = c.spec.shutdown;
  event("stopping", &c);
  if (sd.kind == Shutdown::Kind::brutal_kill) {
    c.stop_note = "brutal_kill";
    spdlog::info("{}: stopping pid {} (brutal_kill)", c.path, c.pid);
    kill_group(c, SIGKILL);
    return;
  }
  // Graceful request on the control ring, then SIGTERM to the group.
  capnp::MallocMessageBuilder mb(64);
  mb.initRoot<schema::ToWorker>().setStop();
  auto words = capnp::messageToFlatArray(mb);
  auto bytes = words.asBytes();
  (void)c.control_ring.try_push(ipc::kControlFrame,
                                {reinterpret_cast<const std::byte*>(bytes.begin()), bytes.size()});
  kill_group(c, SIGTERM);
  if (sd.kind == Shutdown::Kind::timeout) {
    spdlog::info("{}: stopping pid {} (timeout {} ms)", c.path, c.pid, sd.timeout.count());
    c.kill_timer = add_timer(sd.timeout, [this, &c] {
      c.kill_timer.reset();
      if (c.pid <= 0) return;
      spdlog::warn("{}: pid {} still running {} ms after stop request: SIGKILL", c.path, c.pid,
                   c.spec.shutdown.timeout.count());
      c.stop_note = "shutdown timeout";
      event("shutdown_timeout", &c);
      kill_group(c, SIGKILL);
    });
  } else {
    spdlog::info("{}: stopping pid {} (infinity: waiting as long as it takes)", c.path, c.pid);
  }
}

void Runtime::close_worker_fds(Child& c) {
  unwatch(c.pidfd.get());
  unwatch(c.control.get());
  c.pidfd.reset();
  c.control.reset();
  if (c.capture) {
    unwatch(c.capture->out_fd());
    unwatch(c.capture->err_fd());
    c.capture->close_all();
  }
  cancel_timer(c.output_pause);
}

void Runtime::reap_worker(Child& c) {
  // First make sure the child is a zombie (WNOWAIT: not reaped yet): then
  // its pid (and process group id) cannot be reused, so killing the group
  // cannot hit a stranger.  This takes grandchildren down with it.
  siginfo_t si{};
  if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(c.pidfd.get()), &si,
               WEXITED | WNOHANG | WNOWAIT) != 0 ||
      si.si_pid == 0) {
    return;  // not yet (a spurious wake-up): nothing is signalled
  }
  ::kill(-c.pid, SIGKILL);
  si = {};
  if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(c.pidfd.get()), &si,
               WEXITED | WNOHANG) != 0 ||
      si.si_pid == 0) {
    return;
  }
  finish_worker(c, c.pid, exit_status_of(si));
}

void Runtime::on_death_notices() {
  if (!death_watch_) return;
  for (const auto& n : death_watch_->drain()) {
    auto it = endpoints_.find(static_cast<std::uint32_t>(n.key >> 32));
    if (it == endpoints_.end() || it->second->is_client) continue;
    auto& c = static_cast<Child&>(*it->second);
    if (death_key(c.slot, c.incarnation) != n.key || c.pid <= 0 || !c.pidfd) continue;  // stale
    // The thread that armed the cell is exiting.  If it is not the main
    // thread, the main thread follows within microseconds (the same fatal
    // signal or exit_group): ask /proc again briefly.
    auto st = ipc::exiting_status(c.pid);
    for (auto until = Clock::now() + std::chrono::milliseconds(2); !st && Clock::now() < until;) {
      timespec pause{0, 50'000};
      ::nanosleep(&pause, nullptr);
      st = ipc::exiting_status(c.pid);
    }
    if (!st) {
      // The kernel sets FUTEX_OWNER_DIED only for an exiting thread, and the
      // armed thread serves the worker until the process ends: a word that
      // changed while the process lives was written by the worker.
      spdlog::warn(
          "{}: pid {} changed its liveness word from {:#x} to {:#x} while alive; its death "
          "will be seen when the kernel reports it",
          c.path, c.pid, n.armed, n.word);
      continue;
    }
    // It runs no user code any more; the kernel is freeing its memory, which
    // takes milliseconds.  The pid is not reaped, so neither it nor its
    // process group can be someone else's: take the group down (as
    // reap_worker does) and keep the pidfd to reap the corpse later.
    ::kill(-c.pid, SIGKILL);
    const int fd = c.pidfd.get();
    unwatch(fd);
    Corpse corpse{c.pid, std::move(c.pidfd), c.path, *st};
    corpses_.emplace(fd, std::move(corpse));
    watch(fd, Watch::Type::corpse, nullptr);
    spdlog::debug("{}: pid {} is exiting: restarting it before the kernel reaps it", c.path, c.pid);
    finish_worker(c, c.pid, *st);
  }
}

void Runtime::reap_corpse(int fd) {
  auto it = corpses_.find(fd);
  if (it == corpses_.end()) return;
  siginfo_t si{};
  if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(fd), &si, WEXITED | WNOHANG) ==
          0 &&
      si.si_pid == 0) {
    return;  // still being torn down
  }
  // (An error is ECHILD: reaped already, by reap_strays say.)
  if (si.si_pid != 0) {
    const ipc::ExitStatus final_st = exit_status_of(si);
    if (final_st != it->second.early) {
      spdlog::debug("{}: pid {} reaped with status {}/{}, its death notice said {}/{}",
                    it->second.path, it->second.pid, final_st.signaled, final_st.number,
                    it->second.early.signaled, it->second.early.number);
    }
  }
  unwatch(fd);
  corpses_.erase(it);
}

void Runtime::reap_corpses() {
  for (auto& [fd, corpse] : corpses_) {
    // Each was SIGKILLed: it is only waiting for the kernel to finish.
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 5000) == 0) {
      spdlog::warn("{}: pid {} still not dead after 5 s; leaving it", corpse.path, corpse.pid);
      continue;
    }
    siginfo_t si{};
    (void)::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(fd), &si, WEXITED);
    unwatch(fd);
  }
  corpses_.clear();
}

void Runtime::finish_worker(Child& c, pid_t pid, const ipc::ExitStatus& st) {
  on_control_readable(c);              // a last report may still be queued
  if (c.capture) c.capture->finish();  // and the last lines of output
  c.pid = 0;                           // dead: nobody may signal this pid any more
  if (death_watch_) death_watch_->remove(death_key(c.slot, c.incarnation));
  close_worker_fds(c);
  cancel_timer(c.ready_timer);
  cancel_timer(c.kill_timer);

  ExitInfo r;
  if (c.violated) {
    r.kind = ExitInfo::Kind::protocol_violation;
    r.message = c.report ? c.report->message : "bad control message";
  } else if (c.ready_timed_out) {
    r.kind = ExitInfo::Kind::ready_timeout;
    r.number = static_cast<int>(c.spec.start_timeout.count());
  } else if (st.signaled) {
    r.kind = ExitInfo::Kind::signal;
    r.number = st.number;
    r.core_dumped = st.core_dumped;
    r.message = c.stop_note;
  } else if (st.number == 0) {
    r.kind = (c.stop_requested || (c.report && c.report->kind == ExitInfo::Kind::shutdown))
                 ? ExitInfo::Kind::shutdown
                 : ExitInfo::Kind::normal;
  } else if (c.report && (c.report->kind == ExitInfo::Kind::exception ||
                          c.report->kind == ExitInfo::Kind::start_failure)) {
    r = *c.report;
  } else {
    r.kind = ExitInfo::Kind::exit_code;
    r.number = st.number;
  }
  c.live = false;
  c.running = false;
  broadcast_down(c, r);  // pending calls to it fail now, monitors fire
  Child* pc = &c;
  std::uint64_t dropped = c.capture ? c.capture->dropped() : 0;
  std::string extra =
      reason_json(r) + fmt::format(R"(,"pid":{},"output_dropped":{})", pid, dropped);
  std::string drops = dropped > 0 ? fmt::format(" ({} output lines dropped)", dropped) : "";
  event("exited", pc, extra);
  auto up = c.ready_at != TimePoint{}
                ? std::chrono::duration<double>(Clock::now() - c.ready_at).count()
                : 0.0;
  if (r.abnormal()) {
    spdlog::warn("{}: pid {} incarnation {} exited after {:.3f} s: {}{}", c.path, pid,
                 c.incarnation, up, r.describe(), drops);
  } else {
    spdlog::info("{}: pid {} incarnation {} exited: {}{}", c.path, pid, c.incarnation, r.describe(),
                 drops);
  }
  on_child_exit(*c.owner, c, r);
}

void Runtime::on_control_readable(Child& c) {
  if (!c.control) return;
  alignas(8) static std::array<std::byte, ipc::kMaxPacket> buf;
  for (;;) {
    std::size_t len = 0;
    auto st = ipc::recv_packet(c.control.get(), buf, len);
    if (st == ipc::RecvStatus::would_block) return;
    if (st == ipc::RecvStatus::eof) {
      unwatch(c.control.get());
      c.control.reset();
      return;
    }
    std::optional<ExitInfo> violation;
    if (st == ipc::RecvStatus::truncated) {
      violation = ExitInfo{};
      violation->message = "control message larger than 64 KiB";
    } else {
      auto err = schema::read_message(std::span(buf.data(), len), {}, [&](capnp::MessageReader& m) {
        auto msg = m.getRoot<schema::ToSupervisor>();
        switch (msg.which()) {
          case schema::ToSupervisor::READY:
            if (c.state == State::starting && c.pid > 0) {
              cancel_timer(c.ready_timer);
              auto ms =
                  std::chrono::duration<double, std::milli>(Clock::now() - c.spawned_at).count();
              spdlog::info("{}: pid {} ready in {:.2f} ms", c.path, c.pid, ms);
              event("ready", &c, fmt::format(R"("ready_ms":{:.3f})", ms));
              c.running = true;
              // Watched from now on if it armed its liveness cell (before
              // its ready report: ipc/liveness.hpp; start_worker cleared the
              // cell).  One that did not (a small worker) costs the watcher
              // nothing, not even a wake-up.
              if (death_watch_ && c.segment) {
                auto* cell = ipc::mailbox_view(*c.segment, mailbox_layout_).liveness;
                if (cell->word.load(std::memory_order_acquire) != 0) {
                  death_watch_->add(death_key(c.slot, c.incarnation), cell);
                }
              }
              broadcast_up(c);
              on_child_started(*c.owner, c);
            }
            break;
          case schema::ToSupervisor::START_FAILED: {
            ExitInfo r;
            r.kind = ExitInfo::Kind::start_failure;
            r.message = msg.getStartFailed();
            c.report = r;
            break;
          }
          case schema::ToSupervisor::EXITING:
            c.report = from_schema(msg.getExiting());
            break;
          case schema::ToSupervisor::OPEN_CHANNEL:
          case schema::ToSupervisor::BROKEN_CHANNEL:
          case schema::ToSupervisor::START_CHILD:
          case schema::ToSupervisor::TERMINATE_CHILD:
            on_endpoint_message(c, msg);
            break;
        }
      });
      if (err) {
        violation = ExitInfo{};
        violation->message = err->what;
      }
    }
    if (violation) {
      spdlog::error("{}: pid {} broke the control protocol: {}: killing it", c.path, c.pid,
                    violation->message);
      c.violated = true;
      violation->kind = ExitInfo::Kind::protocol_violation;
      c.report = violation;
      kill_group(c, SIGKILL);
      unwatch(c.control.get());
      c.control.reset();
      return;
    }
  }
}

void Runtime::on_output_readable(Child& c, int fd) {
  if (!c.capture) return;
  switch (c.capture->read_some(fd)) {
    case OutputCapture::Read::more:
      break;
    case OutputCapture::Read::eof:  // the worker closed it
      unwatch(fd);
      c.capture->close(fd);
      break;
    case OutputCapture::Read::throttled:
      // Over its log_rate: its pipes fill meanwhile and it waits in write().
      unwatch(c.capture->out_fd());
      unwatch(c.capture->err_fd());
      cancel_timer(c.output_pause);
      c.output_pause = add_timer(OutputCapture::kThrottlePause, [this, &c] {
        c.output_pause.reset();
        for (int f : {c.capture->out_fd(), c.capture->err_fd()}) {
          if (f >= 0) watch(f, Watch::Type::output, &c);
        }
      });
      break;
  }
}

// --- clients ------------------------------------------------------------------

void Runtime::open_attach_socket() {
  const std::string& path = options_.socket_path;
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path)) {
    throw std::runtime_error("attach socket path too long: " + path);
  }
  auto dir = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!dir.empty() && !std::filesystem::exists(dir, ec)) {
    std::filesystem::create_directories(dir, ec);
    ::chmod(dir.c_str(), 0700);
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  {
    // A live supervisor listening there keeps it; a stale socket file goes.
    ipc::UniqueFd probe(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      spdlog::warn(
          "attach socket {} is in use by another supervisor: clients cannot attach to "
          "this one (choose another with --socket)",
          path);
      options_.socket_path.clear();
      return;
    }
    ::unlink(path.c_str());
  }
  ipc::UniqueFd fd(ipc::check_sys(
      ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), "socket"));
  ipc::check_sys(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), "bind " + path);
  ::chmod(path.c_str(), 0600);
  ipc::check_sys(::listen(fd.get(), 64), "listen " + path);
  attach_fd_ = std::move(fd);
  watch(attach_fd_.get(), Watch::Type::attach, nullptr);
  spdlog::info("clients attach at {}", path);
}

void Runtime::on_attach() {
  for (;;) {
    int cfd = ::accept4(attach_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (cfd < 0) return;
    ipc::UniqueFd conn(cfd);
    auto ep = std::make_unique<Endpoint>();
    try {
      ep->slot = alloc_slot();
    } catch (const std::runtime_error& e) {
      spdlog::error("a client tried to attach: {}", e.what());
      continue;
    }
    ep->path = fmt::format("client/{}", next_client_++);
    ep->is_client = true;
    ep->incarnation = 1;
    if (auto it = slot_incarnation_.find(ep->slot); it != slot_incarnation_.end()) {
      ep->incarnation = it->second + 1;
    }
    ep->segment = ipc::Segment::create(ipc::segment_name(instance_, fmt::format("w{}", ep->slot)),
                                       mailbox_layout_.payload_bytes());
    ep->segment->unlink();
    ipc::format_mailbox(*ep->segment, mailbox_layout_, ep->slot);
    auto view = ipc::mailbox_view(*ep->segment, mailbox_layout_);
    ep->doorbell = ipc::Doorbell(ipc::bell_of(*board_, ep->slot));
    ep->control_ring = ipc::RingProducer(view.control_ring, ep->path + "/control", &ep->doorbell);
    ep->control = std::move(conn);
    ep->live = ep->running = true;
    push_control(*ep, [&](schema::ToWorker::Builder m) {
      auto st = m.initStart();
      st.setChildId(ep->path);
      st.setIncarnation(ep->incarnation);
      st.setWorkerSlot(ep->slot);
    });
    Endpoint& e = *ep;
    endpoints_[e.slot] = &e;
    clients_[e.slot] = std::move(ep);
    send_peer_table(e);
    std::byte tag[8] = {};
    if (!ipc::send_packet_with_fd(e.control.get(), tag, e.segment->fd()) ||
        !ipc::send_packet_with_fd(e.control.get(), tag, board_->fd())) {
      drop_client(e);
      continue;
    }
    watch(e.control.get(), Watch::Type::client, nullptr, &e);
    broadcast_up(e);
    spdlog::info("{} attached (slot {})", e.path, e.slot);
    event("client_attached", nullptr,
          fmt::format(R"("client":"{}","slot":{})", json_escape(e.path), e.slot));
  }
}

void Runtime::on_client_readable(Endpoint& ep) {
  alignas(8) static std::array<std::byte, ipc::kMaxPacket> buf;
  for (;;) {
    std::size_t len = 0;
    auto st = ipc::recv_packet(ep.control.get(), buf, len);
    if (st == ipc::RecvStatus::would_block) return;
    if (st != ipc::RecvStatus::ok) {
      drop_client(ep);
      return;
    }
    auto err = schema::read_message(std::span(buf.data(), len), {}, [&](capnp::MessageReader& m) {
      on_endpoint_message(ep, m.getRoot<schema::ToSupervisor>());
    });
    if (err) {
      spdlog::error("{}: bad control message: {}: detaching it", ep.path, err->what);
      drop_client(ep);
      return;
    }
  }
}

void Runtime::drop_client(Endpoint& ep) {
  unwatch(ep.control.get());
  ep.live = ep.running = false;
  ExitInfo why;
  why.kind = ExitInfo::Kind::normal;
  broadcast_down(ep, why);
  forget_requester(root_, ep.slot);  // its slot may soon be another client's
  spdlog::info("{} detached", ep.path);
  event("client_detached", nullptr, fmt::format(R"("client":"{}")", json_escape(ep.path)));
  const std::uint32_t slot = ep.slot;
  release_slot(slot, ep.incarnation);
  clients_.erase(slot);  // `ep` is gone
}

void Runtime::forget_requester(Node& n, std::uint32_t slot) {
  for (auto& c : n.children) {
    if (c->notify_started == slot) c->notify_started.reset();
    if (c->notify_terminated == slot) c->notify_terminated.reset();
    if (c->node) forget_requester(*c->node, slot);
  }
}

std::uint32_t Runtime::alloc_slot() {
  if (!free_slots_.empty()) {
    std::uint32_t s = free_slots_.back();
    free_slots_.pop_back();
    return s;
  }
  if (next_slot_ >= kBoardSlots) {
    throw std::runtime_error(
        fmt::format("all {} slots (workers and attached clients) are in use", kBoardSlots - 1));
  }
  return next_slot_++;
}

void Runtime::release_slot(std::uint32_t slot, std::uint32_t last_incarnation) {
  if (slot == kNoSlot) return;
  for (auto it = channels_.begin(); it != channels_.end();) {
    if (it->first.first != slot && it->first.second != slot) {
      ++it;
      continue;
    }
    retire_stats(it->first, it->second);
    it = channels_.erase(it);
  }
  retired_.erase(slot);  // its own inbound counts: the next occupant starts at 0
  endpoints_.erase(slot);
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::ToWorker>().setPeerGone(slot);
  auto words = capnp::messageToFlatArray(mb);
  for (auto& [s, other] : endpoints_) {
    if (other->live) push_control_bytes(*other, words.asBytes());
  }
  slot_incarnation_[slot] = last_incarnation;
  free_slots_.push_back(slot);
}

void Runtime::collect_removed(Node& n) {
  // Frees removed dynamic children once nothing can refer to them any more:
  // no step, deferred exit, timer, watch or pending answer names them.
  if (n.spec->strategy != Strategy::simple_one_for_one || node_busy(n)) return;
  auto referenced = [&](const Child* c) {
    if (std::any_of(n.deferred.begin(), n.deferred.end(),
                    [c](const Deferred& d) { return d.child == c; })) {
      return true;
    }
    return std::any_of(watches_.begin(), watches_.end(),
                       [c](const auto& w) { return w.second.child == c; });
  };
  std::erase_if(n.children, [&](const std::unique_ptr<Child>& p) {
    const Child& c = *p;
    return c.deleted && c.state == State::idle && c.slot == kNoSlot && c.pid == 0 && !c.pidfd &&
           !c.output_pause && !c.ready_timer && !c.kill_timer && !c.restart_timer &&
           !c.notify_started && !c.notify_terminated && !referenced(&c);
  });
}

void Runtime::retire_dynamic(Child& c) {
  if (c.slot == kNoSlot || c.node) return;
  spdlog::debug("{}: removed: slot {} is free again", c.path, c.slot);
  release_slot(c.slot, c.incarnation);
  c.slot = kNoSlot;
}

void Runtime::retire_stats(std::pair<std::uint32_t, std::uint32_t> key, Channel& ch) {
  // A channel that goes away keeps counting for its receiver's statistics.
  auto view = ipc::channel_view(ch.segment, ch.capacity, key.first, key.second);
  auto& r = retired_[key.second];
  r[0] += view.stats->sent.load(std::memory_order_relaxed);
  r[1] += view.stats->blocked.load(std::memory_order_relaxed);
  r[2] += view.stats->failed.load(std::memory_order_relaxed);
  r[3] += view.stats->dropped.load(std::memory_order_relaxed);
}

void Runtime::dump_stats() {
  // Per receiving child: what its senders counted on its inbound channels.
  struct Sum {
    std::uint64_t sent = 0, blocked = 0, failed = 0, dropped = 0;
  };
  std::map<std::uint32_t, Sum> sums;
  for (auto& [slot, r] : retired_) {
    Sum& s = sums[slot];
    s.sent += r[0];
    s.blocked += r[1];
    s.failed += r[2];
    s.dropped += r[3];
  }
  for (auto& [key, ch] : channels_) {
    auto view = ipc::channel_view(ch.segment, ch.capacity, key.first, key.second);
    Sum& s = sums[key.second];
    s.sent += view.stats->sent.load(std::memory_order_relaxed);
    s.blocked += view.stats->blocked.load(std::memory_order_relaxed);
    s.failed += view.stats->failed.load(std::memory_order_relaxed);
    s.dropped += view.stats->dropped.load(std::memory_order_relaxed);
  }
  for (auto& [slot, ep] : endpoints_) {
    Sum s = sums[slot];
    spdlog::info("{}: messages in {}, sends blocked {}, failed {}, dropped {}", ep->path, s.sent,
                 s.blocked, s.failed, s.dropped);
    event("stats", nullptr,
          fmt::format(R"("child":"{}","sent":{},"blocked":{},"failed":{},"dropped":{})",
                      json_escape(ep->path), s.sent, s.blocked, s.failed, s.dropped));
  }
}

// --- zygotes and strays -------------------------------------------------------

Spawned Runtime::spawn(Child& c, int control_fd) {
  const auto& args = c.spec.binary_args;
  if (tree_.zygote) {
    // One zygote per program and arguments (a Python worker's arguments name
    // the modules its zygote pre-imports).
    std::string key = c.spec.binary;
    for (const auto& a : args) key += " " + a;
    auto it = zygotes_.find(key);
    if (it == zygotes_.end()) {
      try {
        auto z = Zygote::start(c.spec.binary, board_->fd(), args);
        spdlog::info("zygote for {} started (pid {})", key, z->pid());
        watch(z->pidfd(), Watch::Type::zygote, nullptr);
        it = zygotes_.emplace(key, std::move(z)).first;
      } catch (const std::exception& e) {
        spdlog::warn("no zygote for {}: {}; starting workers with exec", key, e.what());
      }
    }
    if (it != zygotes_.end()) {
      try {
        return it->second->spawn(c.segment->fd(), control_fd);
      } catch (const std::exception& e) {
        spdlog::warn("zygote for {} failed: {}; replacing it", key, e.what());
        unwatch(it->second->pidfd());
        zygotes_.erase(it);  // killed and reaped; the next start makes a new one
      }
    }
  }
  return spawn_worker(c.spec.binary, c.segment->fd(), control_fd, board_->fd(), args);
}

void Runtime::on_zygote_exit(const std::string& binary) {
  auto it = zygotes_.find(binary);
  if (it == zygotes_.end() || !it->second->reap()) return;
  spdlog::warn("zygote for {} exited; the next start makes a new one", binary);
  unwatch(it->second->pidfd());
  zygotes_.erase(it);
}

void Runtime::reap_strays() {
  // Our children that are neither workers nor zygotes: descendants of workers
  // reparented to us (we are a child subreaper).  Reap the ones that exited;
  // workers and zygotes are reaped through their pidfds, never here.
  std::ifstream in(fmt::format("/proc/self/task/{}/children", ::getpid()));
  pid_t pid = 0;
  std::vector<pid_t> known;
  std::function<void(Node&)> collect = [&](Node& n) {
    for (auto& c : n.children) {
      if (c->pid > 0) known.push_back(c->pid);
      if (c->node) collect(*c->node);
    }
  };
  collect(root_);
  for (auto& [b, z] : zygotes_) known.push_back(z->pid());
  for (auto& [fd, corpse] : corpses_) known.push_back(corpse.pid);
  while (in >> pid) {
    if (std::find(known.begin(), known.end(), pid) != known.end()) continue;
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      spdlog::debug("reaped pid {}, an orphaned descendant of a worker", pid);
    }
  }
}

// --- dynamic children ---------------------------------------------------------

Runtime::Node* Runtime::find_node(Node& n, const std::string& path) {
  if (n.path == path) return &n;
  for (auto& c : n.children) {
    if (c->node) {
      if (Node* found = find_node(*c->node, path)) return found;
    }
  }
  return nullptr;
}

Runtime::Child* Runtime::find_child(Node& n, const std::string& path) {
  for (auto& c : n.children) {
    if (c->path == path) return c.get();
    if (c->node) {
      if (Child* found = find_child(*c->node, path)) return found;
    }
  }
  return nullptr;
}

void Runtime::child_result(std::uint32_t slot, bool ok, const std::string& id,
                           const std::string& error) {
  auto it = endpoints_.find(slot);
  if (it == endpoints_.end()) return;  // the requester is gone
  push_control(*it->second, [&](schema::ToWorker::Builder m) {
    auto r = m.initChildResult();
    r.setOk(ok);
    r.setChildId(id);
    r.setError(error);
  });
}

bool Runtime::fail_requested_start(Child& c, const ExitInfo& why) {
  if (!c.notify_started) return false;
  // As OTP's start_child: a child that fails to start is not kept.
  child_result(*c.notify_started, false, c.path, why.describe());
  c.notify_started.reset();
  c.deleted = true;
  retire_dynamic(c);
  return true;
}

void Runtime::start_dynamic(Endpoint& ep, const std::string& sup_path) {
  Node* n = find_node(root_, sup_path);
  if (n == nullptr || n->spec->strategy != Strategy::simple_one_for_one ||
      !n->spec->child_template) {
    child_result(ep.slot, false, "",
                 fmt::format("'{}' is not a simple_one_for_one supervisor", sup_path));
    return;
  }
  if (n->phase != Node::Phase::running) {
    child_result(ep.slot, false, "", fmt::format("supervisor '{}' is not running", sup_path));
    return;
  }
  collect_removed(*n);
  ChildSpec cs = *n->spec->child_template;
  cs.id = fmt::format("{}", n->next_dynamic++);
  Child* c = nullptr;
  try {
    c = &add_child(*n, cs);
  } catch (const std::exception& e) {
    child_result(ep.slot, false, "", e.what());
    return;
  }
  c->notify_started = ep.slot;
  spdlog::info("{}: starting dynamic child {} (asked by {})", n->path, c->path, ep.path);
  event("child_added", c);
  n->steps.push_back({Step::Kind::start, c});
  pump(*n);
}

void Runtime::terminate_dynamic(Endpoint& ep, const std::string& child_path) {
  Child* c = find_child(root_, child_path);
  if (c == nullptr || c->owner->spec->strategy != Strategy::simple_one_for_one) {
    child_result(ep.slot, false, "",
                 fmt::format("'{}' is not a child of a simple_one_for_one supervisor", child_path));
    return;
  }
  if (c->state == State::waiting) {  // in restart backoff: just do not restart it
    cancel_timer(c->restart_timer);
    c->state = State::idle;
  }
  if (c->deleted || c->state == State::idle) {
    c->deleted = true;
    retire_dynamic(*c);
    child_result(ep.slot, true, c->path, "");  // already gone: now it stays gone
    return;
  }
  c->deleted = true;  // terminated on request: never restarted
  c->notify_terminated = ep.slot;
  spdlog::info("{}: terminating dynamic child (asked by {})", c->path, ep.path);
  c->owner->steps.push_back({Step::Kind::stop, c});
  pump(*c->owner);
}

}  // namespace bulkhead::supervisor
