#include "worker/worker.hpp"

#include <cxxabi.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <cstdio>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <typeinfo>

#include "ipc/mailbox.hpp"
#include "ipc/packet.hpp"
#include "schema/codec.hpp"
#include "schema/control.capnp.h"
#include "worker/actor.hpp"
#include "worker/node.hpp"

namespace bulkhead::worker {

// ---------------------------------------------------------------------------
// ActorRegistry

void ActorRegistry::add(std::string type, Factory factory) {
  if (type.empty()) throw std::invalid_argument("actor type name must not be empty");
  if (!factory) throw std::invalid_argument("actor type '" + type + "' has no factory");
  if (!factories_.emplace(type, std::move(factory)).second) {
    throw std::invalid_argument("actor type '" + type + "' registered twice");
  }
}

std::unique_ptr<Actor> ActorRegistry::create(std::string_view type) const {
  auto it = factories_.find(type);
  return it == factories_.end() ? nullptr : it->second();
}

bool ActorRegistry::contains(std::string_view type) const {
  return factories_.count(type) != 0;
}

std::vector<std::string> ActorRegistry::types() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : factories_) out.push_back(k);
  return out;
}

// ---------------------------------------------------------------------------
// Signals: set a bit and ring our own doorbell (both async-signal-safe).

namespace {

constexpr std::uint32_t kSigTerm = 1, kSigUsr1 = 2, kSigUsr2 = 4;
std::atomic<std::uint32_t> g_pending{0};
ipc::DoorbellWord* g_doorbell = nullptr;  // set once before handlers are installed
int g_control_fd = -1;                    // for the terminate handler's report

void on_signal(int sig) {
  int saved = errno;
  std::uint32_t bit = sig == SIGUSR1 ? kSigUsr1 : sig == SIGUSR2 ? kSigUsr2 : kSigTerm;
  g_pending.fetch_or(bit, std::memory_order_release);
  if (g_doorbell != nullptr) {
    g_doorbell->seq.fetch_add(1, std::memory_order_release);
    ipc::futex_wake(&g_doorbell->seq, 1);
  }
  errno = saved;
}

void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int s : {SIGTERM, SIGINT, SIGUSR1, SIGUSR2}) ::sigaction(s, &sa, nullptr);
}

void block_worker_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGUSR1, SIGUSR2}) sigaddset(&set, s);
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
}

std::string demangle(const char* name) {
  int status = 0;
  char* d = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string out = (status == 0 && d != nullptr) ? d : name;
  std::free(d);
  return out;
}

struct Described {
  std::string type, what, traceback;
};

// Type, message (and a foreign traceback) of the exception being handled
// (call inside a catch).
Described describe_current_exception() {
  std::string type = "unknown";
  if (auto* t = abi::__cxa_current_exception_type()) type = demangle(t->name());
  std::string what;
  try {
    throw;
  } catch (const ActorError& e) {
    return {e.type(), e.what(), e.traceback()};
  } catch (const std::exception& e) {
    what = e.what();
  } catch (const kj::Exception& e) {
    what = e.getDescription().cStr();
  } catch (...) {
    what = "(not a std::exception)";
  }
  return {type, what, {}};
}

void send_report(int fd, capnp::MessageBuilder& mb) {
  auto words = capnp::messageToFlatArray(mb);
  auto bytes = words.asBytes();
  (void)ipc::send_packet(fd, {reinterpret_cast<const std::byte*>(bytes.begin()), bytes.size()});
}

void report_ready(int fd) {
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::ToSupervisor>().setReady();
  send_report(fd, mb);
}

void report_start_failed(int fd, const std::string& why) {
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::ToSupervisor>().setStartFailed(why);
  send_report(fd, mb);
}

void report_exception(int fd, const std::string& actor, const std::string& type,
                      const std::string& what, const std::string& traceback = {}) {
  capnp::MallocMessageBuilder mb;
  auto ex = mb.initRoot<schema::ToSupervisor>().initExiting().initException();
  ex.setType(type);
  ex.setMessage(what);
  ex.setActor(actor);
  ex.setTraceback(traceback);
  send_report(fd, mb);
}

void report_shutdown(int fd) {
  capnp::MallocMessageBuilder mb;
  mb.initRoot<schema::ToSupervisor>().initExiting().setShutdown();
  send_report(fd, mb);
}

[[noreturn]] void on_terminate() {
  // An exception escaped somewhere the dispatcher could not catch it (another
  // thread, a noexcept function).  Report it like any other, then exit.
  if (auto e = std::current_exception(); e && g_control_fd >= 0) {
    try {
      std::rethrow_exception(e);
    } catch (...) {
      auto d = describe_current_exception();
      report_exception(g_control_fd, "", d.type, d.what, d.traceback);
    }
  }
  ::_exit(kExitException);
}

void usage(const ActorRegistry& registry) {
  std::fprintf(stderr,
               "This program is a Bulkhead worker. It is started by bulkhead-supervisor,\n"
               "which passes its shared memory and control socket.\n\n"
               "  --list-actors   print the actor types it hosts, one per line\n"
               "  --help          this text\n\nActor types:");
  for (const auto& t : registry.types()) std::fprintf(stderr, " %s", t.c_str());
  std::fprintf(stderr, "\n");
}

}  // namespace

// ---------------------------------------------------------------------------
// Dispatcher: the worker's one loop, on top of the messaging Node.

namespace {

// What an actor sees as ctx(): the node, on behalf of this actor.
class ActorContext final : public Context {
 public:
  ActorContext(Node& node, std::uint32_t index) : node_(node), index_(index) {}
  CallResult call(const Target& to, const PayloadFn& request,
                  std::chrono::milliseconds timeout) override {
    return node_.call(index_, to, request, timeout);
  }
  SendStatus cast(const Target& to, const PayloadFn& request) override {
    return node_.send(index_, to, schema::Kind::CAST, request);
  }
  SendStatus send(const Target& to, const PayloadFn& msg) override {
    return node_.send(index_, to, schema::Kind::INFO, msg);
  }
  SendStatus reply(const From& from, const PayloadFn& answer) override {
    return node_.reply(index_, from, answer);
  }
  std::optional<ActorRef> whereis(std::string_view name) override { return node_.whereis(name); }
  MonitorRef monitor(const Target& target) override { return node_.monitor(index_, target); }
  void demonitor(MonitorRef ref) override { node_.demonitor(ref); }
  SendStatus link(const Target& target) override { return node_.link(index_, target, true); }
  void unlink(const Target& target) override { (void)node_.link(index_, target, false); }
  void trap_exit(bool on) override { node_.trap_exit(index_, on); }
  [[nodiscard]] ActorRef self() const override {
    return ActorRef{node_.slot(), node_.incarnation(), index_};
  }

 private:
  Node& node_;
  std::uint32_t index_;
};

}  // namespace

// Workers with less resident memory than this are not armed for early death
// notices (see Dispatcher::run).
constexpr long kDeathNoticeMinKib = 8 * 1024;

// This process's largest resident set so far, in KiB: for a worker just
// forked by a zygote, the zygote's (the pages it maps), then its own.  One
// system call (reading /proc/self/statm cost 30-50 us on the restart path).
static long resident_kib() {
  struct rusage ru {};
  if (::getrusage(RUSAGE_SELF, &ru) != 0) return 0;
  return ru.ru_maxrss;
}

class Dispatcher {
 public:
  Dispatcher(const ActorRegistry& registry, const RunHooks& hooks, int control_fd)
      : registry_(registry), hooks_(hooks), control_fd_(control_fd) {}

  int run(ipc::Segment mailbox, ipc::Segment board) {
    std::optional<Node> node;
    try {
      liveness_ = ipc::attach_mailbox(mailbox).liveness;  // stays mapped: the node keeps it
      node.emplace(std::move(mailbox), std::move(board), control_fd_, &g_pending);
    } catch (const std::exception& e) {
      report_start_failed(control_fd_, std::string("unusable handover: ") + e.what());
      return kExitBadHandover;
    }
    g_doorbell = node->waiter().word();
    install_signal_handlers();
    struct Disarm {  // before the node unmaps the cell, however serve() ends
      ipc::LivenessCell* cell;
      ~Disarm() { ipc::disarm_death_notice(cell); }
    } disarm{liveness_};
    int code = serve(*node);
    // The handlers ring the doorbell on the bell board, which the node
    // unmaps when it goes: no signal handler may run from here on.
    block_worker_signals();
    g_doorbell = nullptr;
    return code;
  }

 private:
  int serve(Node& node) {
    auto start = node.wait_for_start(std::nullopt);
    if (!start) return kExitBadHandover;
    if (int code = start_actors(node, *start); code >= 0) return code;
    node.set_actors(&actors_);
    // From now on the supervisor hears of this process's death when it
    // starts, not after the kernel has freed its memory (ipc/liveness.hpp).
    // That pays off only when the freeing takes longer than the notice's own
    // path (two thread wake-ups, ~0.2 ms): a small worker (the stock C++
    // worker has ~2 MiB resident) is torn down sooner, and its restart would
    // only overlap with that teardown.  So the actors start first (their
    // memory counts).  Declined or not armed: the supervisor hears of the
    // death from the pidfd, as before.
    if (resident_kib() >= kDeathNoticeMinKib) (void)ipc::arm_death_notice(liveness_);
    report_ready(control_fd_);
    for (;;) {
      if (hooks_.before_wait) hooks_.before_wait();
      node.wait(std::nullopt);
      if (hooks_.after_wait) hooks_.after_wait();
      if (int code = guarded_dispatch(node); code >= 0) return code;
      if (node.stop_requested()) return stop();
      if (auto death = node.linked_death()) {
        // A linked actor died and this one does not trap exits: it dies too,
        // and with it this worker (actors of a worker share its fate).
        report_exception(control_fd_, death->actor, "bulkhead::linked_exit", death->why);
        std::fflush(nullptr);
        ::_exit(kExitException);
      }
      if (int code = drain_signals(); code >= 0) return code;
    }
  }

 private:
  int start_actors(Node& node, schema::ToWorker::Start::Reader s) {
    std::uint32_t index = 0;
    for (auto spec : s.getActors()) {
      std::string type = spec.getType();
      auto actor = registry_.create(type);
      if (!actor) {
        std::string known;
        for (const auto& t : registry_.types()) known += (known.empty() ? "" : ", ") + t;
        report_start_failed(control_fd_,
                            "unknown actor type '" + type + "' (this worker hosts: " + known + ")");
        return kExitStartFailure;
      }
      actor->name_ = spec.getName();
      actor->type_ = type;
      contexts_.push_back(std::make_unique<ActorContext>(node, index++));
      actor->ctx_ = contexts_.back().get();
      try {
        actor->init(spec.getArgs());
      } catch (...) {
        auto d = describe_current_exception();
        report_start_failed(control_fd_, "init of actor '" + actor->name_ + "' (" + type +
                                             ") raised " + d.type + ": " + d.what +
                                             (d.traceback.empty() ? "" : "\n" + d.traceback));
        return kExitStartFailure;
      }
      actors_.push_back(std::move(actor));
    }
    return -1;
  }

  // Runs the node's dispatch; an exception escaping a handler ends the worker,
  // with a report naming the actor whose handler raised it.
  int guarded_dispatch(Node& node) {
    try {
      node.dispatch_available();
      return -1;
    } catch (...) {
      auto d = describe_current_exception();
      std::string actor;
      if (auto idx = node.failed_actor(); idx && *idx < actors_.size()) {
        const Actor& a = *actors_[*idx];
        actor = a.name().empty() ? a.type() : a.name();
      }
      report_exception(control_fd_, actor, d.type, d.what, d.traceback);
      std::fflush(nullptr);
      ::_exit(kExitException);
    }
  }

  int stop() {
    for (auto it = actors_.rbegin(); it != actors_.rend(); ++it) {
      if (int code = guarded(**it, [&](Actor& a) { a.terminate("shutdown"); }); code >= 0) {
        return code;
      }
    }
    report_shutdown(control_fd_);
    return kExitOk;
  }

  int drain_signals() {
    std::uint32_t bits = g_pending.exchange(0, std::memory_order_acquire);
    if (bits & kSigTerm) return stop();
    for (auto [bit, sym] : {std::pair{kSigUsr1, "usr1"}, std::pair{kSigUsr2, "usr2"}}) {
      if (!(bits & bit)) continue;
      capnp::MallocMessageBuilder mb(64);
      auto env = mb.initRoot<schema::Envelope>();
      env.setKind(schema::Kind::INFO);
      env.getPayload().initValue().setSymbol(sym);
      Message msg(env.asReader());
      for (auto& a : actors_) {
        if (int code = guarded(*a, [&](Actor& x) { x.handle_info(msg); }); code >= 0) return code;
      }
    }
    return -1;
  }

  // Runs a handler; an escaping exception ends the worker with a report.
  template <class F>
  int guarded(Actor& a, F&& f) {
    try {
      f(a);
      return -1;
    } catch (...) {
      auto d = describe_current_exception();
      report_exception(control_fd_, a.name().empty() ? a.type() : a.name(), d.type, d.what,
                       d.traceback);
      // Let it crash: no destructor of a half-broken actor runs.
      std::fflush(nullptr);
      ::_exit(kExitException);
    }
  }

  const ActorRegistry& registry_;
  const RunHooks& hooks_;
  int control_fd_;
  ipc::LivenessCell* liveness_ = nullptr;  // in the mailbox segment
  std::vector<std::unique_ptr<Actor>> actors_;
  std::vector<std::unique_ptr<ActorContext>> contexts_;
};

namespace {

// The worker proper: fds 3 (mailbox), 4 (control socket), 5 (bell board).
int serve_worker(const ActorRegistry& registry, const RunHooks& hooks) {
  for (int fd : {kSegmentFd, kControlFd, kBoardFd}) {
    if (::fcntl(fd, F_GETFD) < 0) {
      usage(registry);
      return kExitUsage;
    }
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
  g_control_fd = kControlFd;
  std::set_terminate(on_terminate);
  try {
    ipc::Segment seg = ipc::Segment::adopt_fd(ipc::UniqueFd(kSegmentFd), "worker-mailbox");
    ipc::Segment board = ipc::Segment::adopt_fd(ipc::UniqueFd(kBoardFd), "bell-board");
    Dispatcher d(registry, hooks, kControlFd);
    return d.run(std::move(seg), std::move(board));
  } catch (const std::exception& e) {
    report_start_failed(kControlFd, std::string("worker handover failed: ") + e.what());
    return kExitBadHandover;
  }
}

// In the new worker, between the zygote's fork and serve_worker().
[[noreturn]] void zygote_child_exit(int code) {
  std::fflush(nullptr);
  ::_exit(code);
}

// Waits until we are the supervisor's child (an intermediate that forked us
// exits at once, and the supervisor is a child subreaper), then ties our
// life to it.
bool wait_reparented(pid_t supervisor, pid_t intermediate) {
  // Our parent is the intermediate until it exits (at once); then we are the
  // supervisor's (a child subreaper), or init's if the supervisor is gone:
  // wait only for the intermediate, never for a supervisor that will not come.
  for (int i = 0; ::getppid() == intermediate; ++i) {
    if (i > 100000) return false;
    ::sched_yield();
  }
  ::setpgid(0, 0);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  return ::getppid() == supervisor;  // else it died meanwhile
}

// Moves the handed-over fds into place (3, 4, 1, 2), closes everything else,
// resets the signal mask and dispositions.
bool adopt_fds(int mailbox, int control, int out, int err) {
  int m = ::fcntl(mailbox, F_DUPFD, 10), c = ::fcntl(control, F_DUPFD, 10),
      o = ::fcntl(out, F_DUPFD, 10), e = ::fcntl(err, F_DUPFD, 10);
  if (m < 0 || c < 0 || o < 0 || e < 0) return false;
  if (::dup2(m, kSegmentFd) < 0 || ::dup2(c, kControlFd) < 0 || ::dup2(o, 1) < 0 ||
      ::dup2(e, 2) < 0) {
    return false;
  }
  int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull >= 0) ::dup2(devnull, 0);
  ::syscall(SYS_close_range, 6u, ~0u, 0u);  // the zygote's socket copies, the originals
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) ::signal(sig, SIG_DFL);
  }
  return true;
}

bool become_worker(pid_t supervisor, pid_t intermediate, int mailbox, int control, int out,
                   int err) {
  return wait_reparented(supervisor, intermediate) && adopt_fds(mailbox, control, out, err);
}

constexpr int kRequestFds = 4;

// Receives one request (four fds: mailbox, control, stdout, stderr) on `sock`.  Returns recvmsg's
// result; the fds are -1 where none came.
ssize_t recv_fds(int sock, int (&fds)[kRequestFds]) {
  std::byte buf[16];
  msghdr msg{};
  iovec iov{buf, sizeof buf};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(kRequestFds * sizeof(int))] = {};
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t r = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  for (int& fd : fds) fd = -1;
  cmsghdr* cm = CMSG_FIRSTHDR(&msg);
  if (r > 0 && cm != nullptr && cm->cmsg_type == SCM_RIGHTS &&
      cm->cmsg_len == CMSG_LEN(kRequestFds * sizeof(int))) {
    std::memcpy(fds, CMSG_DATA(cm), sizeof fds);
  }
  return r;
}

bool send_fds(int sock, const int (&fds)[kRequestFds]) {
  std::int32_t tag = 0;
  msghdr msg{};
  iovec iov{&tag, sizeof tag};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(kRequestFds * sizeof(int))] = {};
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(kRequestFds * sizeof(int));
  std::memcpy(CMSG_DATA(c), fds, sizeof fds);
  return ::sendmsg(sock, &msg, MSG_NOSIGNAL) == static_cast<ssize_t>(sizeof tag);
}

// A spare (RunHooks::spare): a worker forked ahead of time, already the
// supervisor's child and past after_fork_child, waiting on `sock` for the
// fds of the child it will be.  The zygote's end closing (the zygote died)
// ends it.
struct Spare {
  pid_t pid = -1;
  int sock = -1;
};
constexpr int kSpareDelayMs = 2;

[[noreturn]] void spare_main(pid_t supervisor, pid_t intermediate, int sock,
                             const ActorRegistry& registry, const RunHooks& hooks) {
  ::close(kSegmentFd);  // the zygote's socket to the supervisor is not ours
  if (!wait_reparented(supervisor, intermediate)) zygote_child_exit(kExitBadHandover);
  if (hooks.after_fork_child) hooks.after_fork_child();
  int fds[kRequestFds];
  ssize_t r;
  do {
    r = recv_fds(sock, fds);
  } while (r < 0 && errno == EINTR);
  if (r <= 0 || fds[0] < 0) zygote_child_exit(kExitOk);  // not needed after all
  if (!adopt_fds(fds[0], fds[1], fds[2], fds[3])) zygote_child_exit(kExitBadHandover);
  zygote_child_exit(serve_worker(registry, hooks));
}

Spare make_spare(pid_t supervisor, const ActorRegistry& registry, const RunHooks& hooks) {
  int sv[2], pp[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return {};
  if (::pipe2(pp, O_CLOEXEC) != 0) {
    ::close(sv[0]);
    ::close(sv[1]);
    return {};
  }
  std::fflush(nullptr);
  if (hooks.before_fork) hooks.before_fork();
  pid_t mid = ::fork();
  if (mid == 0) {
    const pid_t self = ::getpid();
    pid_t w = ::fork();
    if (w == 0) {
      ::close(sv[0]);
      spare_main(supervisor, self, sv[1], registry, hooks);
    }
    std::int32_t pid = w;
    (void)!::write(pp[1], &pid, sizeof pid);
    ::_exit(0);
  }
  if (hooks.after_fork_parent) hooks.after_fork_parent();
  ::close(sv[1]);
  ::close(pp[1]);
  Spare s;
  if (mid > 0) {
    while (::waitpid(mid, nullptr, 0) < 0 && errno == EINTR) {
    }
    std::int32_t pid = -1;
    if (::read(pp[0], &pid, sizeof pid) == static_cast<ssize_t>(sizeof pid) && pid > 0) {
      s.pid = pid;
      s.sock = sv[0];
    }
  }
  ::close(pp[0]);
  if (s.pid <= 0) ::close(sv[0]);
  return s;
}

// Zygote mode: a pre-initialised, single-threaded copy of this worker
// program that forks new workers on request (DESIGN: fast restart).  fd 3 is
// its socket to the supervisor, fd 5 the bell board (inherited by workers).
// A request carries four fds (mailbox, control socket, stdout and stderr pipes); the
// zygote forks an intermediate that forks the worker and reports its pid on
// the socket, then exits, so the worker is reparented to the supervisor (a
// child subreaper) and the supervisor alone reaps it.  With RunHooks::spare,
// that worker is forked ahead of time (a spare, see spare_main) and the
// request only hands it the fds; the next spare is forked after the answer.
int zygote_loop(const ActorRegistry& registry, const RunHooks& hooks) {
  const pid_t supervisor = ::getppid();
  const int sock = kSegmentFd;
  ::signal(SIGCHLD, SIG_DFL);
  Spare spare;
  for (;;) {
    if (hooks.spare && spare.pid <= 0) {
      // Make the next spare once no request came for a moment: the worker
      // just handed over (or forked) gets the CPU first.
      pollfd p{sock, POLLIN, 0};
      if (::poll(&p, 1, kSpareDelayMs) == 0) spare = make_spare(supervisor, registry, hooks);
    }
    int fds[kRequestFds];
    ssize_t r = recv_fds(sock, fds);
    const bool complete = fds[0] >= 0 && fds[1] >= 0 && fds[2] >= 0 && fds[3] >= 0;
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return kExitOk;  // the supervisor is gone (a spare sees our end close)
    if (spare.pid > 0 && complete) {
      // Hand the request to the spare, if it is still there (its end of the
      // socket open); else fork as usual.  The answer goes first: once woken,
      // the spare would otherwise take the CPU before the supervisor hears
      // its pid.  Should the spare die in between, the supervisor sees its
      // pid exit (it is the supervisor's unreaped child: the pid cannot be
      // reused meanwhile) and handles that like any failed start.
      pollfd alive{spare.sock, POLLOUT, 0};
      bool there = ::poll(&alive, 1, 0) == 1 && (alive.revents & (POLLHUP | POLLERR)) == 0;
      std::int32_t reply = spare.pid;
      if (there) {
        (void)::send(sock, &reply, sizeof reply, MSG_NOSIGNAL);
        (void)send_fds(spare.sock, fds);
      }
      ::close(spare.sock);
      spare = {};
      if (there) {
        for (int fd : fds) ::close(fd);
        continue;
      }
    }
    if (complete) {
      std::fflush(nullptr);
      if (hooks.before_fork) hooks.before_fork();
      pid_t mid = ::fork();
      if (mid == 0) {
        const pid_t self = ::getpid();
        pid_t w = ::fork();
        if (w == 0) {
          if (!become_worker(supervisor, self, fds[0], fds[1], fds[2], fds[3]))
            zygote_child_exit(kExitBadHandover);
          if (hooks.after_fork_child) hooks.after_fork_child();
          zygote_child_exit(serve_worker(registry, hooks));
        }
        std::int32_t reply = w > 0 ? w : -errno;
        (void)::send(sock, &reply, sizeof reply, MSG_NOSIGNAL);
        ::_exit(0);
      }
      if (hooks.after_fork_parent) hooks.after_fork_parent();
      if (mid > 0) {
        while (::waitpid(mid, nullptr, 0) < 0 && errno == EINTR) {
        }
      } else {
        std::int32_t reply = -errno;
        (void)::send(sock, &reply, sizeof reply, MSG_NOSIGNAL);
      }
    } else {
      std::int32_t reply = -EINVAL;
      (void)::send(sock, &reply, sizeof reply, MSG_NOSIGNAL);
    }
    for (int fd : fds) {
      if (fd >= 0) ::close(fd);
    }
  }
}

}  // namespace

int run(int argc, char** argv, const ActorRegistry& registry) {
  return run(argc, argv, registry, RunHooks{});
}

int run(int argc, char** argv, const ActorRegistry& registry, const RunHooks& hooks) {
  bool as_worker = false;
  bool as_zygote = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--list-actors") {
      for (const auto& t : registry.types()) std::printf("%s\n", t.c_str());
      return kExitOk;
    }
    if (a == "--help" || a == "-h") {
      usage(registry);
      return kExitOk;
    }
    if (a == kWorkerFlag) {
      as_worker = true;
    } else if (a == kZygoteFlag) {
      as_zygote = true;
    } else {
      std::fprintf(stderr, "bulkhead-worker: unknown argument '%s'\n", argv[i]);
      usage(registry);
      return kExitUsage;
    }
  }
  if (as_zygote) return zygote_loop(registry, hooks);
  if (!as_worker) {
    usage(registry);
    return kExitUsage;
  }
  return serve_worker(registry, hooks);
}

}  // namespace bulkhead::worker
