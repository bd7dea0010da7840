// supervisor/control_server.cpp: sockets, the io thread and the queues of the
// control plane.  The operations themselves are in control_ops.cpp.
#include "supervisor/control_server.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <capnp/message.h>
#include <capnp/rpc-twoparty.h>
#include <capnp/serialize.h>
#include <kj/async-io.h>
#include <kj/async-unix.h>
#include <kj/debug.h>
#include <kj/vector.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "ipc/sys.hpp"
#include "schema/control_rpc.capnp.h"
#include "supervisor/control_internal.hpp"
#include "supervisor/runtime.hpp"

namespace bulkhead::supervisor {

void ring_eventfd(int fd) {
  std::uint64_t one = 1;
  while (::write(fd, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

void log_from_io(ControlPlane::Shared& shared, spdlog::level::level_enum level, std::string line) {
  {
    std::lock_guard lock(shared.mu);
    if (shared.logs.size() < 256) shared.logs.emplace_back(level, std::move(line));
  }
  ring_eventfd(shared.job_fd);
}

void drain_eventfd(int fd) {
  std::uint64_t v = 0;
  while (::read(fd, &v, sizeof v) == sizeof v) {
  }
}

namespace {

struct SocketInUse : ControlError {
  using ControlError::ControlError;
};

constexpr int kMaxConnections = 64;      // RPC connections at once
constexpr int kMaxHttpConnections = 16;  // metrics scrapes at once
constexpr std::size_t kMaxSubscriberBacklog = 1024;
constexpr std::size_t kMaxSubscriptions = 64;          // event subscriptions at once (all clients)
constexpr int kMaxSubscriptionsPerConnection = 16;     // ... and on one connection
constexpr auto kAcceptRetry = 100 * kj::MILLISECONDS;  // after a failed accept (EMFILE, ...)

// The socket's directory: created 0700 if missing; refused unless it is a
// directory of ours that nobody else can enter.
void check_or_make_dir(const std::filesystem::path& dir) {
  if (dir.empty()) return;
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) {
    if (errno != ENOENT) ipc::throw_sys("stat " + dir.string());
    std::error_code ec;
    std::filesystem::create_directories(dir.parent_path(), ec);
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      throw ControlError(fmt::format("cannot create {}: {}", dir.string(), std::strerror(errno)));
    }
    if (::lstat(dir.c_str(), &st) != 0) ipc::throw_sys("stat " + dir.string());
  }
  if (!S_ISDIR(st.st_mode)) throw ControlError(dir.string() + " is not a directory");
  if (st.st_uid != ::geteuid()) {
    throw ControlError(fmt::format("refusing {}: owned by uid {}, not by us (uid {})", dir.string(),
                                   st.st_uid, ::geteuid()));
  }
  if ((st.st_mode & 077) != 0) {
    throw ControlError(fmt::format("refusing {}: mode {:04o} lets others in (must be 0700)",
                                   dir.string(), st.st_mode & 07777));
  }
}

int open_unix_listener(const std::string& path) {
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path)) {
    throw ControlError("control socket path too long: " + path);
  }
  check_or_make_dir(std::filesystem::path(path).parent_path());
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  {
    // A live supervisor keeps its socket; a stale file from a dead one goes.
    ipc::UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      throw SocketInUse("control socket " + path +
                        " is in use by another supervisor: bulkheadctl cannot reach this one "
                        "(choose another with --control-socket)");
    }
    ::unlink(path.c_str());
  }
  ipc::UniqueFd fd(
      ipc::check_sys(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), "socket"));
  mode_t old = ::umask(0177);  // the socket is born 0600: no window with a wider mode
  int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  int err = errno;
  ::umask(old);
  if (rc != 0 && err == EADDRINUSE) {
    // Another supervisor bound it between our probe and our bind.
    throw SocketInUse("control socket " + path +
                      " was just taken by another supervisor: bulkheadctl cannot reach this one "
                      "(choose another with --control-socket)");
  }
  errno = err;
  ipc::check_sys(rc, "bind " + path);
  ipc::check_sys(::listen(fd.get(), 64), "listen " + path);
  return fd.release();
}

int open_metrics_listener(int port, int& bound_port) {
  if (port < 0 || port > 65535) throw ControlError(fmt::format("bad metrics port {}", port));
  ipc::UniqueFd fd(
      ipc::check_sys(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), "socket"));
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    throw ControlError(
        fmt::format("cannot listen on 127.0.0.1:{} for metrics: {}", port, std::strerror(errno)));
  }
  ipc::check_sys(::listen(fd.get(), 16), "listen metrics");
  socklen_t len = sizeof a;
  ipc::check_sys(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len), "getsockname");
  bound_port = ntohs(a.sin_port);
  return fd.release();
}

// --- io thread ------------------------------------------------------------------

using Answer = ControlPlane::Answer;
using Responder = ControlPlane::Responder;
using Shared = ControlPlane::Shared;

struct Subscriber {
  explicit Subscriber(schema::EventSink::Client s, kj::TaskSet::ErrorHandler& eh)
      : sink(kj::mv(s)), tasks(eh) {}
  schema::EventSink::Client sink;
  std::deque<Shared::EventItem> queue;
  bool sending = false;
  bool dead = false;
  std::uint64_t dropped = 0;
  kj::TaskSet tasks;  // the send in flight; destroyed (cancelled) with the subscriber
};

// Everything the io thread owns.  Lives on the io thread's stack.
class Io final : public kj::TaskSet::ErrorHandler {
 public:
  Io(Shared& shared, int job_fd, kj::AsyncIoContext& ctx)
      : shared_(shared), job_fd_(job_fd), ctx_(ctx), tasks_(*this) {}

  void taskFailed(kj::Exception&& e) override {
    log_from_io(shared_, spdlog::level::debug,
                fmt::format("control: {}", e.getDescription().cStr()));
  }

  kj::Promise<Answer> ask(std::function<void(ControlPlane&, Responder)> fn) {
    std::uint64_t id = next_id_++;
    {
      std::lock_guard lock(shared_.mu);
      if (shared_.jobs.size() >= Shared::kMaxJobs) {
        return KJ_EXCEPTION(OVERLOADED, "supervisor busy: too many control requests queued");
      }
      shared_.jobs.push_back({id, std::move(fn)});
    }
    ring_eventfd(job_fd_);
    auto paf = kj::newPromiseAndFulfiller<Answer>();
    pending_.emplace(id, kj::mv(paf.fulfiller));
    // A caller that went away (its call cancelled) leaves no entry behind;
    // its answer, when it comes, finds none and is dropped.
    return kj::mv(paf.promise).attach(kj::defer([this, id] { pending_.erase(id); }));
  }

  // Takes what the runtime thread produced; true once it asked us to stop.
  bool take() {
    std::deque<Answer> answers;
    std::deque<Shared::EventItem> events;
    std::uint64_t lost = 0;
    bool stop = false;
    {
      std::lock_guard lock(shared_.mu);
      answers.swap(shared_.answers);
      events.swap(shared_.events);
      lost = shared_.events_dropped;
      shared_.events_dropped = 0;
      stop = shared_.stop;
    }
    for (auto& a : answers) {
      auto it = pending_.find(a.id);
      if (it == pending_.end()) continue;
      auto f = kj::mv(it->second);
      pending_.erase(it);
      if (a.error.size() > 0) {
        // The job failed on the runtime thread: so does the call.
        f->reject(kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__, kj::mv(a.error)));
      } else {
        f->fulfill(kj::mv(a));
      }
    }
    for (auto& [id, s] : subscribers_) {
      s->dropped += lost;
      for (const auto& e : events) {
        if (s->queue.size() >= kMaxSubscriberBacklog) {
          ++s->dropped;
        } else {
          s->queue.push_back(e);
        }
      }
      pump(*s);
    }
    return stop;
  }

  // 0 when there are too many subscriptions already.
  std::uint64_t subscribe(schema::EventSink::Client sink) {
    if (subscribers_.size() >= kMaxSubscriptions) return 0;
    std::uint64_t id = next_id_++;
    subscribers_.emplace(id, std::make_unique<Subscriber>(kj::mv(sink), *this));
    std::lock_guard lock(shared_.mu);
    ++shared_.subscribers;
    return id;
  }

  void unsubscribe(std::uint64_t id) {
    if (subscribers_.erase(id) == 0) return;
    std::lock_guard lock(shared_.mu);
    --shared_.subscribers;
  }

  bool subscribers_idle() const {
    for (const auto& [id, s] : subscribers_) {
      if (!s->dead && (s->sending || !s->queue.empty())) return false;
    }
    return true;
  }

  // Resolves when every live subscriber has taken every event sent so far
  // (calls on one object are delivered in order).
  kj::Promise<void> sync_all() {
    kj::Vector<kj::Promise<void>> syncs;
    for (auto& [id, s] : subscribers_) {
      if (s->dead) continue;
      syncs.add(s->sink.syncRequest().send().ignoreResult().catch_([](kj::Exception&&) {}));
    }
    return kj::joinPromises(syncs.releaseAsArray());
  }

  void log(spdlog::level::level_enum level, std::string line) {
    log_from_io(shared_, level, std::move(line));
  }

  kj::Timer& timer() { return ctx_.provider->getTimer(); }
  kj::TaskSet& tasks() { return tasks_; }
  int connections = 0, http_connections = 0;
  int rpc_accept_failures = 0, http_accept_failures = 0;  // failed accepts in a row

 private:
  void pump(Subscriber& s) {
    if (s.sending || s.dead) return;
    Shared::EventItem item;
    if (s.dropped > 0) {
      item.name = "dropped";
      item.json = fmt::format(R"({{"event":"dropped","count":{}}})", s.dropped);
      s.dropped = 0;
    } else if (!s.queue.empty()) {
      item = std::move(s.queue.front());
      s.queue.pop_front();
    } else {
      return;
    }
    auto req = s.sink.eventRequest();
    auto e = req.initEvent();
    e.setName(item.name);
    e.setChild(item.child);
    e.setTMs(item.t_ms);
    e.setJson(item.json);
    s.sending = true;
    Subscriber* sp = &s;
    s.tasks.add(req.send().then(
        [this, sp]() {
          sp->sending = false;
          pump(*sp);
        },
        [sp](kj::Exception&&) { sp->dead = true; }));
  }

  Shared& shared_;
  int job_fd_;
  kj::AsyncIoContext& ctx_;
  std::uint64_t next_id_ = 1;
  std::map<std::uint64_t, kj::Own<kj::PromiseFulfiller<Answer>>> pending_;
  std::map<std::uint64_t, std::unique_ptr<Subscriber>> subscribers_;
  kj::TaskSet tasks_;
};

class SubscriptionImpl final : public schema::Subscription::Server {
 public:
  // `per_connection`: the count of its connection's subscriptions (shared
  // with that connection's ControlImpl).
  SubscriptionImpl(Io& io, std::uint64_t id, std::shared_ptr<int> per_connection)
      : io_(io), id_(id), per_connection_(std::move(per_connection)) {
    ++*per_connection_;
  }
  ~SubscriptionImpl() {
    --*per_connection_;
    io_.unsubscribe(id_);
  }

 private:
  Io& io_;
  std::uint64_t id_;
  std::shared_ptr<int> per_connection_;
};

// Copies an answer into the call's results, or fails the call with its error.
template <typename Context>
void deliver(Context& ctx, const Answer& a) {
  using Results = typename std::remove_reference_t<decltype(ctx.getResults())>::Builds;
  capnp::FlatArrayMessageReader m(a.data);
  ctx.setResults(m.getRoot<Results>());
}

// One per connection (its bootstrap capability).
class ControlImpl final : public schema::Control::Server {
 public:
  explicit ControlImpl(Io& io) : io_(io) {}

  kj::Promise<void> status(StatusContext ctx) override {
    return io_.ask([](ControlPlane& p, Responder r) { p.do_status(r); })
        .then([ctx](Answer a) mutable { deliver(ctx, a); });
  }
  kj::Promise<void> stats(StatsContext ctx) override {
    return io_.ask([](ControlPlane& p, Responder r) { p.do_stats(r); })
        .then([ctx](Answer a) mutable { deliver(ctx, a); });
  }
  kj::Promise<void> metrics(MetricsContext ctx) override {
    return io_.ask([](ControlPlane& p, Responder r) { p.do_metrics(r); })
        .then([ctx](Answer a) mutable { deliver(ctx, a); });
  }
  kj::Promise<void> childOp(ChildOpContext ctx) override {
    auto p = ctx.getParams();
    int op = static_cast<int>(p.getOp());
    std::string child = p.getChild().cStr();
    std::uint32_t timeout = p.getTimeoutMs();
    return io_
        .ask([op, child, timeout](ControlPlane& cp, Responder r) {
          cp.do_child_op(op, child, timeout, std::move(r));
        })
        .then([ctx](Answer a) mutable { deliver(ctx, a); });
  }
  kj::Promise<void> startChild(StartChildContext ctx) override {
    std::string sup = ctx.getParams().getSupervisor().cStr();
    std::uint32_t timeout = ctx.getParams().getTimeoutMs();
    return io_
        .ask([sup, timeout](ControlPlane& cp, Responder r) {
          cp.do_start_child(sup, timeout, std::move(r));
        })
        .then([ctx](Answer a) mutable { deliver(ctx, a); });
  }
  kj::Promise<void> kill(KillContext ctx) override {
    std::string child = ctx.getParams().getChild().cStr();
    int sig = ctx.getParams().getSignal();
    return io_.ask([child, sig](ControlPlane& cp, Responder r) { cp.do_kill(child, sig, r); })
        .then([ctx](Answer a) mutable { deliver(ctx, a); });
  }
  kj::Promise<void> subscribe(SubscribeContext ctx) override {
    if (*subscriptions_ >= kMaxSubscriptionsPerConnection) {
      return KJ_EXCEPTION(
          OVERLOADED, fmt::format("supervisor busy: {} subscriptions already on this connection",
                                  kMaxSubscriptionsPerConnection));
    }
    auto id = io_.subscribe(ctx.getParams().getSink());
    if (id == 0) {
      return KJ_EXCEPTION(OVERLOADED, fmt::format("supervisor busy: {} subscriptions already open",
                                                  kMaxSubscriptions));
    }
    ctx.getResults().setSubscription(kj::heap<SubscriptionImpl>(io_, id, subscriptions_));
    return kj::READY_NOW;
  }
  kj::Promise<void> shutdown(ShutdownContext ctx) override {
    return io_.ask([](ControlPlane& p, Responder r) { p.do_shutdown(r); })
        .then([ctx](Answer a) mutable { deliver(ctx, a); });
  }

 private:
  Io& io_;
  std::shared_ptr<int> subscriptions_ = std::make_shared<int>(0);  // open on this connection
};

// One RPC connection: as capnp::TwoPartyServer's, but with a bootstrap
// capability of its own (per-connection limits).
struct RpcConnection {
  RpcConnection(Io& io, kj::Own<kj::AsyncIoStream> s)
      : stream(kj::mv(s)),
        network(*stream, capnp::rpc::twoparty::Side::SERVER),
        rpc(capnp::makeRpcServer(network, capnp::Capability::Client(kj::heap<ControlImpl>(io)))) {}
  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
};

// kj's accept() throws when the process is out of descriptors or memory
// (EMFILE, ENFILE, ENOMEM, ...).  The listener must survive that: log once
// per run of failures, wait a little (the connection stays queued, so an
// immediate retry would spin) and accept again.
kj::Promise<void> accept_failed(Io& io, const char* what, int& failures, kj::Exception&& e) {
  if (failures++ == 0) {
    io.log(spdlog::level::warn,
           fmt::format("{}: accept failed, retrying every {} ms: {}", what,
                       kAcceptRetry / kj::MILLISECONDS, e.getDescription().cStr()));
  }
  return io.timer().afterDelay(kAcceptRetry);
}

void accept_ok(Io& io, const char* what, int& failures) {
  if (failures == 0) return;
  io.log(spdlog::level::info,
         fmt::format("{}: accepting connections again (after {} failed attempts)", what, failures));
  failures = 0;
}

kj::Promise<void> accept_rpc(Io& io, kj::ConnectionReceiver& listener) {
  // accept() may throw at once (it tries accept4 first): evalNow makes that a
  // rejection the error branch sees.
  return kj::evalNow([&listener] { return listener.accept(); })
      .then(
          [&io](kj::Own<kj::AsyncIoStream> conn) -> kj::Promise<void> {
            accept_ok(io, "control", io.rpc_accept_failures);
            if (io.connections >= kMaxConnections) {
              io.log(spdlog::level::warn,
                     fmt::format("control: {} connections already open: refusing another",
                                 kMaxConnections));
              return kj::READY_NOW;
            }
            ++io.connections;
            auto c = kj::heap<RpcConnection>(io, kj::mv(conn));
            auto done = c->network.onDisconnect();
            io.tasks().add(kj::mv(done).attach(kj::mv(c), kj::defer([&io] { --io.connections; })));
            return kj::READY_NOW;
          },
          [&io](kj::Exception&& e) {
            return accept_failed(io, "control", io.rpc_accept_failures, kj::mv(e));
          })
      .then([&io, &listener] { return accept_rpc(io, listener); });
}

// A tiny HTTP/1.0 responder: GET /metrics, everything else 404.
struct HttpConn {
  kj::Own<kj::AsyncIoStream> stream;
  std::string request;
  std::string response;
  char buf[2048];
};

kj::Promise<void> read_request(HttpConn& c) {
  return c.stream->tryRead(c.buf, 1, sizeof c.buf).then([&c](size_t n) -> kj::Promise<void> {
    c.request.append(c.buf, n);
    if (n == 0 || c.request.find("\r\n\r\n") != std::string::npos ||
        c.request.find("\n\n") != std::string::npos || c.request.size() > 8192) {
      return kj::READY_NOW;
    }
    return read_request(c);
  });
}

kj::Promise<void> serve_http(Io& io, kj::Own<HttpConn> c) {
  auto& conn = *c;
  auto work = read_request(conn).then([&io, &conn]() -> kj::Promise<void> {
    bool metrics = conn.request.rfind("GET /metrics ", 0) == 0 ||
                   conn.request.rfind("GET /metrics\r", 0) == 0 ||
                   conn.request.rfind("GET /metrics\n", 0) == 0;
    if (!metrics) {
      std::string body = "not found: try GET /metrics\n";
      conn.response = fmt::format(
          "HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: "
          "{}\r\nConnection: close\r\n\r\n{}",
          body.size(), body);
      return conn.stream->write(conn.response.data(), conn.response.size());
    }
    return io.ask([](ControlPlane& p, Responder r) { p.do_metrics(r); }).then([&conn](Answer a) {
      capnp::FlatArrayMessageReader m(a.data);
      std::string body = m.getRoot<schema::Control::MetricsResults>().getText().cStr();
      conn.response = fmt::format(
          "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: "
          "{}\r\nConnection: close\r\n\r\n{}",
          body.size(), body);
      return conn.stream->write(conn.response.data(), conn.response.size());
    });
  });
  return io.timer().timeoutAfter(10 * kj::SECONDS, kj::mv(work)).attach(kj::mv(c));
}

kj::Promise<void> accept_http(Io& io, kj::ConnectionReceiver& listener) {
  // accept() may throw at once (it tries accept4 first): evalNow makes that a
  // rejection the error branch sees.
  return kj::evalNow([&listener] { return listener.accept(); })
      .then(
          [&io](kj::Own<kj::AsyncIoStream> stream) -> kj::Promise<void> {
            accept_ok(io, "metrics", io.http_accept_failures);
            if (io.http_connections < kMaxHttpConnections) {
              ++io.http_connections;
              auto c = kj::heap<HttpConn>();
              c->stream = kj::mv(stream);
              io.tasks().add(
                  serve_http(io, kj::mv(c)).attach(kj::defer([&io] { --io.http_connections; })));
            }
            return kj::READY_NOW;
          },
          [&io](kj::Exception&& e) {
            return accept_failed(io, "metrics", io.http_accept_failures, kj::mv(e));
          })
      .then([&io, &listener] { return accept_http(io, listener); });
}

kj::Promise<void> watch_answers(Io& io, kj::UnixEventPort::FdObserver& obs, int fd,
                                kj::PromiseFulfiller<void>& stop) {
  drain_eventfd(fd);  // first drain, then take: an answer queued after this rings again
  if (io.take()) {
    stop.fulfill();
    return kj::NEVER_DONE;
  }
  return obs.whenBecomesReadable().then(
      [&io, &obs, fd, &stop]() { return watch_answers(io, obs, fd, stop); });
}

}  // namespace

// --- ControlPlane -------------------------------------------------------------

ControlPlane::ControlPlane(Runtime& runtime, ControlOptions options)
    : rt_(runtime), options_(std::move(options)), shared_(std::make_unique<Shared>()) {
  try {
    if (!options_.socket_path.empty()) {
      try {
        listen_fd_ = open_unix_listener(options_.socket_path);
        struct stat st {};
        if (::stat(options_.socket_path.c_str(), &st) == 0) {
          socket_ino_ = st.st_ino;
          socket_dev_ = st.st_dev;
        }
      } catch (const SocketInUse& e) {
        // As with the attach socket: the tree runs; only the endpoint is missing.
        spdlog::warn("{}", e.what());
        options_.socket_path.clear();
      }
    }
    if (options_.metrics_port)
      metrics_fd_ = open_metrics_listener(*options_.metrics_port, metrics_port_);
  } catch (...) {
    if (listen_fd_ >= 0) {
      ::close(listen_fd_);
      ::unlink(options_.socket_path.c_str());
    }
    throw;
  }
  job_fd_ = ipc::check_sys(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), "eventfd");
  shared_->job_fd = job_fd_;
  wake_fd_ = ipc::check_sys(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), "eventfd");
  shared_->answer_fd = ipc::check_sys(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), "eventfd");
  rt_.hooks_[job_fd_] = [this] { on_jobs(); };
  rt_.hooks_[wake_fd_] = [this] { on_wake(); };
  rt_.watch(job_fd_, Runtime::Watch::Type::hook, nullptr);
  rt_.watch(wake_fd_, Runtime::Watch::Type::hook, nullptr);
  rt_.event_listener_ = [this](const std::string& name, const Runtime::Child* c,
                               const std::string& json) {
    on_event(name, c != nullptr ? c->path : std::string(), json);
  };
  if (listen_fd_ >= 0) spdlog::info("control socket (bulkheadctl): {}", options_.socket_path);
  if (metrics_fd_ >= 0) {
    spdlog::info("metrics at http://127.0.0.1:{}/metrics", metrics_port_);
  }
  io_ = std::thread([this] { io_main(); });
}

ControlPlane::~ControlPlane() {
  {
    std::lock_guard lock(shared_->mu);
    shared_->stop = true;
  }
  ring_eventfd(shared_->answer_fd);
  if (io_.joinable()) io_.join();
  rt_.event_listener_ = nullptr;
  for (int fd : {job_fd_, wake_fd_}) {
    rt_.unwatch(fd);
    rt_.hooks_.erase(fd);
    ::close(fd);
  }
  ::close(shared_->answer_fd);
  // Only our own socket file: another supervisor may have replaced it.
  struct stat st {};
  if (listen_fd_ >= 0 && ::stat(options_.socket_path.c_str(), &st) == 0 &&
      st.st_ino == socket_ino_ && st.st_dev == socket_dev_) {
    ::unlink(options_.socket_path.c_str());
  }
}

void ControlPlane::io_main() {
  try {
    auto ctx = kj::setupAsyncIo();
    Io io(*shared_, job_fd_, ctx);
    kj::Own<kj::ConnectionReceiver> rpc_listener, http_listener;
    kj::TaskSet listeners(io);
    if (listen_fd_ >= 0) {
      rpc_listener = ctx.lowLevelProvider->wrapListenSocketFd(
          listen_fd_, kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP |
                          kj::LowLevelAsyncIoProvider::ALREADY_CLOEXEC |
                          kj::LowLevelAsyncIoProvider::ALREADY_NONBLOCK);
      listeners.add(accept_rpc(io, *rpc_listener));
    }
    if (metrics_fd_ >= 0) {
      http_listener = ctx.lowLevelProvider->wrapListenSocketFd(
          metrics_fd_, kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP |
                           kj::LowLevelAsyncIoProvider::ALREADY_CLOEXEC |
                           kj::LowLevelAsyncIoProvider::ALREADY_NONBLOCK);
      listeners.add(accept_http(io, *http_listener));
    }
    kj::UnixEventPort::FdObserver obs(ctx.unixEventPort, shared_->answer_fd,
                                      kj::UnixEventPort::FdObserver::OBSERVE_READ);
    auto paf = kj::newPromiseAndFulfiller<void>();
    auto watching = watch_answers(io, obs, shared_->answer_fd, *paf.fulfiller);
    paf.promise.wait(ctx.waitScope);
    // Answers fulfilled just now (shutdown's) are written on the next turns.
    for (int i = 0; i < 4; ++i) ctx.waitScope.poll();
    // The last events (the tree's shutdown) still reach the subscribers: up
    // to 200 ms for them to flush, then everything closes.
    for (int i = 0; i < 20 && !io.subscribers_idle(); ++i) {
      io.timer().afterDelay(10 * kj::MILLISECONDS).wait(ctx.waitScope);
      ctx.waitScope.poll();
    }
    // A streaming send resolves when queued, not when taken: a round trip
    // makes sure the subscribers have it all before we close (at most 500 ms).
    io.timer()
        .timeoutAfter(500 * kj::MILLISECONDS, io.sync_all())
        .catch_([](kj::Exception&&) {})
        .wait(ctx.waitScope);
  } catch (const kj::Exception& e) {
    log_from_io(*shared_, spdlog::level::err,
                fmt::format("control endpoint failed: {}", e.getDescription().cStr()));
  } catch (const std::exception& e) {
    log_from_io(*shared_, spdlog::level::err, fmt::format("control endpoint failed: {}", e.what()));
  }
}

// --- runtime thread -------------------------------------------------------------

void ControlPlane::on_jobs() {
  drain_eventfd(job_fd_);
  std::deque<Shared::Job> jobs;
  std::deque<std::pair<spdlog::level::level_enum, std::string>> logs;
  {
    std::lock_guard lock(shared_->mu);
    jobs.swap(shared_->jobs);
    logs.swap(shared_->logs);
  }
  for (auto& [level, line] : logs) spdlog::log(level, "{}", line);
  Shared* shared = shared_.get();
  for (auto& job : jobs) {
    Responder respond = [shared, id = job.id](Answer a) {
      a.id = id;
      {
        std::lock_guard lock(shared->mu);
        shared->answers.push_back(std::move(a));
      }
      ring_eventfd(shared->answer_fd);
    };
    // A job that throws (std::exception, or kj::Exception from capnp) must
    // neither end the supervisor nor leave its caller waiting: its caller
    // gets the error (ignored if the job answered before it threw).
    std::string error;
    try {
      job.run(*this, respond);
    } catch (const kj::Exception& e) {
      error = e.getDescription().cStr();
    } catch (const std::exception& e) {
      error = e.what();
    } catch (...) {
      error = "unknown exception";
    }
    if (!error.empty()) {
      spdlog::error("control request failed: {}", error);
      Answer a;
      a.error = kj::str("control request failed in the supervisor: ", error.c_str());
      respond(std::move(a));
    }
  }
}

void ControlPlane::on_event(const std::string& name, const std::string& child,
                            const std::string& json) {
  if (name == "exited" && !child.empty()) {
    static constexpr std::string_view kKey = R"("reason":")";
    auto at = json.find(kKey);
    if (at != std::string::npos) {
      auto from = at + kKey.size();
      auto to = json.find('"', from);
      if (!exits_.contains(child) && exits_.size() >= exits_prune_at_) prune_exits();
      ++exits_[child][json.substr(from, to - from)];
    }
  } else if (name == "child_deleted" && !child.empty()) {
    exits_.erase(child);
  }
  bool queued = false;
  {
    std::lock_guard lock(shared_->mu);
    if (shared_->subscribers > 0) {
      queued = true;
      if (shared_->events.size() >= Shared::kMaxEvents) {
        ++shared_->events_dropped;
      } else {
        shared_->events.push_back({name, child, json, rt_.uptime_ms()});
      }
    }
  }
  if (queued) ring_eventfd(shared_->answer_fd);
  // Waiters are checked after this turn of the loop, when the state settled.
  if (!waiters_.empty()) ring_eventfd(wake_fd_);
}

// Dynamic children get new paths and the runtime removes them without an
// event: forget the exits of children no longer in the tree, at sizes that
// double with what is left (amortised O(1) per exit).
void ControlPlane::prune_exits() {
  std::erase_if(exits_, [this](const auto& entry) {
    const Runtime::Child* c = rt_.find_child(rt_.root_, entry.first);
    return c == nullptr || (c->deleted && c->state == Runtime::State::idle);
  });
  exits_prune_at_ = std::max(kExitsPruneAt, 2 * exits_.size());
}

void ControlPlane::on_wake() {
  drain_eventfd(wake_fd_);
  check_waiters();
}

}  // namespace bulkhead::supervisor
