// tests/ring_fixture.hpp: a ring in real shared memory for tests.
//
// Creates a real POSIX shared-memory segment (unlinked at once: the mapping
// and fd stay), formats a doorbell and one ring in it.  Used by unit tests
// (one process) and multi-process tests (fork: the child inherits the map).
//
// Also: GuardedRingFixture (a ring whose data area ends at an inaccessible
// page, so a read past the end faults instead of passing unnoticed),
// ChildProcess (fork + reap discipline for multi-process tests) and
// self-checking test frames (sequence number + checksum).
#pragma once

#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

#include "ipc/doorbell.hpp"
#include "ipc/ring.hpp"
#include "ipc/segment.hpp"

namespace bulkhead::testing {

inline std::string unique_label(const char* what) {
  static std::atomic<int> n{0};
  return std::string(what) + "." + std::to_string(::getpid()) + "." + std::to_string(n++);
}

struct RingFixture {
  // Layout inside the segment payload: [DoorbellWord pad to 64][RingControl + data]
  static constexpr std::size_t kDoorbellBytes = 64;

  explicit RingFixture(std::size_t capacity, const char* label = "test",
                       std::size_t extra_bytes = 0)
      : seg(ipc::Segment::create(ipc::segment_name(ipc::Instance::self(), unique_label(label)),
                                 kDoorbellBytes + ipc::ring_footprint(capacity) + extra_bytes)) {
    seg.unlink();  // mapping stays; nothing left in /dev/shm if the test dies
    doorbell_word = new (seg.payload().data()) ipc::DoorbellWord{};
    ipc::init_ring(ring_mem(), capacity);
  }

  std::span<std::byte> ring_mem() const {
    return seg.payload().subspan(kDoorbellBytes, seg.payload().size() - kDoorbellBytes);
  }
  ipc::RingControl* control() const {
    return reinterpret_cast<ipc::RingControl*>(ring_mem().data());
  }
  std::byte* data() const { return ring_mem().data() + sizeof(ipc::RingControl); }
  // Bytes after the ring, free for test bookkeeping shared across fork().
  std::byte* extra(std::size_t capacity) const {
    return ring_mem().data() + ipc::ring_footprint(capacity);
  }

  ipc::Segment seg;
  ipc::DoorbellWord* doorbell_word = nullptr;
};

// A ring whose data area ends exactly at a PROT_NONE page of this process's
// mapping: any read or write past the end of the ring faults at once (ASan
// does not track shared mappings, so this is our bounds check for the
// consumer).  The doorbell sits in front of the ring; `extra()` is free
// bookkeeping memory in front of the doorbell, shared across fork().  The
// guard page is only applied in the process that built the fixture (a child
// forked afterwards inherits it too: fork copies protections).
struct GuardedRingFixture {
  static constexpr std::size_t kExtraBytes = 4096;

  explicit GuardedRingFixture(std::size_t capacity, const char* label = "guarded")
      : page(static_cast<std::size_t>(::sysconf(_SC_PAGESIZE))),
        seg(ipc::Segment::create(ipc::segment_name(ipc::Instance::self(), unique_label(label)),
                                 kExtraBytes + 64 + ipc::ring_footprint(capacity) + 2 * page)) {
    seg.unlink();
    // Ring end = first page boundary (in the whole mapping) that leaves room
    // for the extra area, the doorbell and the ring in front of it.
    const auto base = reinterpret_cast<std::uintptr_t>(seg.base());
    const std::uintptr_t lowest = reinterpret_cast<std::uintptr_t>(seg.payload().data()) +
                                  kExtraBytes + 64 + ipc::ring_footprint(capacity);
    const std::uintptr_t end = (lowest + page - 1) / page * page;
    guard = reinterpret_cast<std::byte*>(end);
    if (end + page > base + seg.size()) throw std::logic_error("guarded ring does not fit");
    ring = {reinterpret_cast<std::byte*>(end - ipc::ring_footprint(capacity)),
            ipc::ring_footprint(capacity)};
    doorbell_word = new (ring.data() - 64) ipc::DoorbellWord{};
    extra_area = ring.data() - 64 - kExtraBytes;
    ipc::init_ring(ring, capacity);
    if (::mprotect(guard, page, PROT_NONE) != 0) ipc::throw_sys("mprotect guard page");
  }

  std::span<std::byte> ring_mem() const { return ring; }
  ipc::RingControl* control() const { return reinterpret_cast<ipc::RingControl*>(ring.data()); }
  std::byte* data() const { return ring.data() + sizeof(ipc::RingControl); }
  std::byte* extra() const { return extra_area; }

  std::size_t page;
  ipc::Segment seg;
  std::span<std::byte> ring;
  std::byte* guard = nullptr;
  std::byte* extra_area = nullptr;
  ipc::DoorbellWord* doorbell_word = nullptr;
};

// A forked child running `body()`; the child _exit()s with its return value
// (or 120 if it threw) and never returns into the caller (gtest).  It gets
// SIGKILL if the test process dies (PR_SET_PDEATHSIG).  The parent is the one
// owner of reaping: wait*() or the destructor (SIGKILL first); the pid is
// cleared the moment the child is reaped, so nobody signals a recycled pid.
class ChildProcess {
 public:
  ChildProcess() = default;
  template <class Body>
  static ChildProcess spawn(Body&& body) {
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) ipc::throw_sys("fork");
    if (pid == 0) {
      int code = 120;
      if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) ::_exit(121);
      try {
        code = body();
      } catch (...) {
        code = 120;
      }
      ::_exit(code);
    }
    ChildProcess c;
    c.pid_ = pid;
    return c;
  }
  ChildProcess(ChildProcess&& o) noexcept : pid_(std::exchange(o.pid_, 0)) {}
  ChildProcess& operator=(ChildProcess&& o) noexcept {
    if (this != &o) {
      reap_now();
      pid_ = std::exchange(o.pid_, 0);
    }
    return *this;
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() { reap_now(); }

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  [[nodiscard]] bool running() const noexcept { return pid_ > 0; }
  void kill(int sig = SIGKILL) const noexcept {
    if (pid_ > 0) ::kill(pid_, sig);
  }
  // Waits for the child; returns its wait status.
  int wait() {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0) {
      if (errno != EINTR) ipc::throw_sys("waitpid");
    }
    pid_ = 0;
    return status;
  }
  // Waits until `deadline`; nullopt if the child is still running then.
  std::optional<int> wait_until(ipc::Deadline deadline) {
    for (;;) {
      int status = 0;
      pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = 0;
        return status;
      }
      if (r < 0 && errno != EINTR) ipc::throw_sys("waitpid");
      if (ipc::Clock::now() >= deadline) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
  }

 private:
  void reap_now() noexcept {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = 0;
  }
  pid_t pid_ = 0;
};

// "exited with code 3", "killed by signal 9": for assertion messages.
inline std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}
inline bool exited_ok(int status) {
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}
inline bool killed_by(int status, int sig) {
  return WIFSIGNALED(status) && WTERMSIG(status) == sig;
}

// --- self-checking test frames ---------------------------------------------
// Layout: [seq u64][checksum u64][body...]; the body is a pattern derived
// from seq, the checksum covers seq, the frame length and the body.  A torn
// or stale frame fails check_frame().
inline constexpr std::size_t kCheckedFrameMin = 16;

inline std::uint64_t mix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
inline std::uint64_t fnv1a(std::uint64_t h, const std::byte* p, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    h ^= static_cast<std::uint8_t>(p[i]);
    h *= 0x100000001b3ULL;
  }
  return h;
}
inline std::uint64_t frame_checksum(std::uint64_t seq, std::span<const std::byte> body,
                                    std::size_t frame_len) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  h = fnv1a(h, reinterpret_cast<const std::byte*>(&seq), sizeof seq);
  const std::uint64_t len = frame_len;
  h = fnv1a(h, reinterpret_cast<const std::byte*>(&len), sizeof len);
  return fnv1a(h, body.data(), body.size());
}
// Writes a checked frame for `seq` filling all of `out` (>= 16 bytes).
inline void fill_checked_frame(std::span<std::byte> out, std::uint64_t seq) {
  const std::uint64_t salt = mix64(seq);
  auto body = out.subspan(kCheckedFrameMin);
  for (std::size_t i = 0; i < body.size(); ++i) {
    body[i] = static_cast<std::byte>((salt >> ((i % 8) * 8)) + i);
  }
  const std::uint64_t sum = frame_checksum(seq, body, out.size());
  std::memcpy(out.data(), &seq, sizeof seq);
  std::memcpy(out.data() + 8, &sum, sizeof sum);
}
// True if `frame` is a whole checked frame; sets `seq`.
inline bool check_frame(std::span<const std::byte> frame, std::uint64_t& seq) {
  if (frame.size() < kCheckedFrameMin) return false;
  std::uint64_t sum = 0;
  std::memcpy(&seq, frame.data(), sizeof seq);
  std::memcpy(&sum, frame.data() + 8, sizeof sum);
  auto body = frame.subspan(kCheckedFrameMin);
  if (frame_checksum(seq, body, frame.size()) != sum) return false;
  const std::uint64_t salt = mix64(seq);
  for (std::size_t i = 0; i < body.size(); ++i) {
    if (body[i] != static_cast<std::byte>((salt >> ((i % 8) * 8)) + i)) return false;
  }
  return true;
}

}  // namespace bulkhead::testing
