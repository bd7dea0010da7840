// bench/os_baselines.cpp: what the kernel offers, measured the same way.
//
// The yardsticks the ring figures are compared with, each between the
// benchmark and a forked child pinned to the other CPU:
//
//   futex_rtt        ping-pong on two shared words; both sides FUTEX_WAIT
//                    every time (no spinning), the writer FUTEX_WAKEs.
//   pipe_rtt         64 B through one pipe each way (blocking read/write).
//   unix_rtt         64 B each way through an AF_UNIX SOCK_STREAM socketpair.
//   pipe_throughput  64 B write()s one way as fast as they go; the child reads
//                    in bulk (up to 64 KiB per read) and counts records.
//
// Round-trip times are per sample (steady_clock), after a warm-up; the echo
// is checked.  Throughput uses the marks of bench/rate_marks.hpp, in-band:
// each 64 B record starts with its type (data, mark, stop).
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstring>
#include <optional>
#include <vector>

#include "bench/figure.hpp"
#include "bench/process.hpp"
#include "bench/rate_marks.hpp"
#include "bench/shm_arena.hpp"
#include "bench/stats.hpp"
#include "bench/timing.hpp"
#include "ipc/sys.hpp"

namespace bulkhead::bench {
namespace {

using namespace std::chrono_literals;

constexpr std::size_t kMsgBytes = 64;
constexpr auto kPeerTimeout = 2s;

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what);
}

// Each round trip here involves kernel wake-ups (~10 to ~90 us depending on
// the machine): a fixed sample count, capped by a time budget.
SamplePlan plan_for(const RunConfig& cfg) {
  return {cfg.pick<std::size_t>(2'000, 500), cfg.pick<std::size_t>(100'000, 20'000),
          cfg.pick(3000ms, 500ms)};
}

// ---------------------------------------------------------------------------
// futex_rtt

struct PingPong {
  static constexpr std::uint32_t kStop = 0xffffffff;
  alignas(64) std::atomic<std::uint32_t> ping;  // written by the parent
  alignas(64) std::atomic<std::uint32_t> pong;  // written by the child
};

void futex_echo(PingPong* pp) {
  std::uint32_t last = 0;
  for (;;) {
    const std::uint32_t v = pp->ping.load(std::memory_order_acquire);
    if (v == last) {
      ipc::futex_wait(&pp->ping, last, std::nullopt);
      continue;
    }
    if (v == PingPong::kStop) return;
    last = v;
    pp->pong.store(v, std::memory_order_release);
    ipc::futex_wake(&pp->pong, 1);
  }
}

Result futex_rtt(const RunConfig& cfg) {
  ShmArena arena(sizeof(PingPong) + ipc::kCacheLine);
  auto* pp = arena.make<PingPong>();
  Child child = Child::spawn("futex echo", cfg.child_cpu, [&] { futex_echo(pp); });

  const Latency l = measure_latency(plan_for(cfg), [&](std::size_t n) {
    const auto i = static_cast<std::uint32_t>(n + 1);  // never 0 (start) or kStop
    const auto t0 = Clock::now();
    pp->ping.store(i, std::memory_order_release);
    ipc::futex_wake(&pp->ping, 1);
    for (;;) {
      const std::uint32_t seen = pp->pong.load(std::memory_order_acquire);
      if (seen == i) break;
      ipc::futex_wait(&pp->pong, seen, t0 + kPeerTimeout);
      if (Clock::now() - t0 >= kPeerTimeout) {
        child.check_running();
        fail("no futex echo within 2 s");
      }
    }
    return ns_between(t0, Clock::now());
  });
  pp->ping.store(PingPong::kStop, std::memory_order_release);
  ipc::futex_wake(&pp->ping, 1);
  child.join();
  return l;
}

// ---------------------------------------------------------------------------
// byte streams

// Reads exactly buf.size() bytes; false on end of file at a record boundary.
bool read_full(int fd, std::span<std::byte> buf) {
  std::size_t got = 0;
  while (got < buf.size()) {
    const ssize_t r =
        ipc::retry_eintr([&] { return ::read(fd, buf.data() + got, buf.size() - got); });
    if (r < 0) ipc::throw_sys("read");
    if (r == 0) {
      if (got == 0) return false;
      fail("end of file inside a record");
    }
    got += static_cast<std::size_t>(r);
  }
  return true;
}

void write_full(int fd, std::span<const std::byte> buf) {
  std::size_t put = 0;
  while (put < buf.size()) {
    const ssize_t r =
        ipc::retry_eintr([&] { return ::write(fd, buf.data() + put, buf.size() - put); });
    if (r < 0) ipc::throw_sys("write");
    put += static_cast<std::size_t>(r);
  }
}

// One end of a bidirectional byte stream, as two descriptors (the same one
// twice for a socket).
struct StreamEnd {
  ipc::UniqueFd rd;
  ipc::UniqueFd wr;  // invalid: write to rd (a socket)
  [[nodiscard]] int wfd() const { return wr ? wr.get() : rd.get(); }
  void close() {
    rd.reset();
    wr.reset();
  }
};

// Round trips of 64 B records between `parent` and a child echoing on `child`.
Latency stream_rtt(const RunConfig& cfg, const char* name, StreamEnd parent, StreamEnd child_end) {
  Child child = Child::spawn(name, cfg.child_cpu, [&] {
    parent.close();  // or our own copy would keep the stream open
    std::array<std::byte, kMsgBytes> buf{};
    while (read_full(child_end.rd.get(), buf)) write_full(child_end.wfd(), buf);
  });
  child_end.close();  // the child's end lives in the child only: its exit is our EOF

  std::array<std::byte, kMsgBytes> out{};
  std::array<std::byte, kMsgBytes> in{};
  const Latency l = measure_latency(plan_for(cfg), [&](std::uint64_t i) {
    std::memcpy(out.data(), &i, sizeof i);
    const auto t0 = Clock::now();
    write_full(parent.wfd(), out);
    if (!read_full(parent.rd.get(), in)) {
      child.check_running();
      fail(std::string(name) + ": end of file");
    }
    const auto t1 = Clock::now();
    if (in != out) fail(std::string(name) + ": wrong echo");
    return ns_between(t0, t1);
  });
  parent.close();  // EOF: the child leaves its loop
  child.join();
  return l;
}

std::pair<ipc::UniqueFd, ipc::UniqueFd> make_pipe() {
  int fds[2];
  ipc::check_sys(::pipe2(fds, O_CLOEXEC), "pipe2");
  return {ipc::UniqueFd(fds[0]), ipc::UniqueFd(fds[1])};
}

Result pipe_rtt(const RunConfig& cfg) {
  auto [p2c_r, p2c_w] = make_pipe();
  auto [c2p_r, c2p_w] = make_pipe();
  return stream_rtt(cfg, "pipe echo", StreamEnd{std::move(c2p_r), std::move(p2c_w)},
                    StreamEnd{std::move(p2c_r), std::move(c2p_w)});
}

Result unix_rtt(const RunConfig& cfg) {
  int sv[2];
  ipc::check_sys(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), "socketpair");
  return stream_rtt(cfg, "unix socket echo", StreamEnd{ipc::UniqueFd(sv[0]), {}},
                    StreamEnd{ipc::UniqueFd(sv[1]), {}});
}

// ---------------------------------------------------------------------------
// pipe_throughput

enum RecordType : std::uint8_t { kData = 0, kMark = 1, kStop = 2 };

void count_records(int fd, RateMarks* marks) {
  std::vector<std::byte> buf(64 * 1024);
  std::size_t have = 0;  // bytes in buf, a partial record at the end
  std::uint64_t count = 0;
  for (;;) {
    const ssize_t r =
        ipc::retry_eintr([&] { return ::read(fd, buf.data() + have, buf.size() - have); });
    if (r < 0) ipc::throw_sys("read");
    if (r == 0) fail("end of file before the stop record");
    have += static_cast<std::size_t>(r);
    std::size_t at = 0;
    for (; at + kMsgBytes <= have; at += kMsgBytes) {
      switch (static_cast<RecordType>(buf[at])) {
        case kData:
          ++count;
          break;
        case kMark:
          marks->record(count);
          break;
        case kStop:
          return;
      }
    }
    std::memmove(buf.data(), buf.data() + at, have - at);
    have -= at;
  }
}

Result pipe_throughput(const RunConfig& cfg) {
  const RatePlan plan{cfg.pick<std::uint64_t>(50'000, 20'000), cfg.pick(7, 3),
                      cfg.pick(400ms, 150ms)};
  ShmArena arena(sizeof(RateMarks) + ipc::kCacheLine);
  auto* marks = arena.make<RateMarks>();
  auto [rd, wr] = make_pipe();
  Child child = Child::spawn("pipe reader", cfg.child_cpu, [&] {
    wr.reset();
    count_records(rd.get(), marks);
  });
  rd.reset();

  std::array<std::byte, kMsgBytes> rec{};
  auto send = [&](RecordType t) {
    rec[0] = static_cast<std::byte>(t);
    write_full(wr.get(), rec);
  };
  drive_rate(
      plan, [&] { send(kData); }, [&] { send(kMark); });
  send(kStop);
  wr.reset();
  child.join();
  return summarize_rates(marks->rates());
}

}  // namespace

void add_os_baselines(Catalog& c) {
  c.figures.push_back({"futex_rtt", "futex ping-pong, both sides FUTEX_WAIT each time", futex_rtt});
  c.figures.push_back({"pipe_rtt", "64 B round trip over two pipes", pipe_rtt});
  c.figures.push_back({"unix_rtt", "64 B round trip over an AF_UNIX stream socketpair", unix_rtt});
  c.figures.push_back({"pipe_throughput", "64 B writes one way through a pipe", pipe_throughput});
  c.ratios.push_back({"pipe_rtt", "futex_rtt"});
  c.ratios.push_back({"unix_rtt", "futex_rtt"});
}

}  // namespace bulkhead::bench
