// ipc/segment.hpp: named POSIX shared-memory segments with a passport header.
//
// What it is for: the supervisor creates every segment (it alone sizes and
// reclaims shared memory); workers attach to one it hands them, by name or by
// an inherited fd.
//
// Contract:
//   - A segment starts with a 128-byte SegmentHeader: magic, layout version,
//     size, creator pid and creator start time, and its own name.  The usable
//     area (`payload()`) follows it, 64-byte aligned.
//   - Names are `bulkhead-<pid>-<starttime>-<label>`: the creator's pid and
//     start time form the supervisor *instance*, so a sweep can tell a stale
//     segment (creator dead, or pid recycled) from a live one by the name
//     alone, even if the header was scribbled over.
//   - Mode 0600.  Creation is exclusive (O_EXCL): an existing name is an error.
//   - Unlink as early as the design allows: once every process that needs
//     the segment holds an fd or a mapping, call `unlink()`; the memory lives
//     until the last mapping goes.  `Segment` never unlinks in its destructor
//     unless it was told to (`unlink_on_destroy`).
//
// Errors: SegmentError (a caller's or a peer's fault: wrong magic, version,
// size, bad name) or SysError (the operating system's).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "ipc/sys.hpp"

namespace bulkhead::ipc {

inline constexpr std::uint64_t kSegmentMagic = 0x44414548'4b4c5542ULL;  // "BULKHEAD" LE
inline constexpr std::uint32_t kSegmentLayoutVersion = 1;
inline constexpr std::string_view kSegmentPrefix = "bulkhead-";
inline constexpr std::size_t kMaxSegmentName = 63;

// The passport at offset 0 of every segment.  Plain bytes, fixed width.
struct SegmentHeader {
  std::uint64_t magic;               // kSegmentMagic
  std::uint32_t layout_version;      // kSegmentLayoutVersion
  std::uint32_t header_bytes;        // sizeof(SegmentHeader); payload starts here
  std::uint64_t size;                // total bytes of the segment, header included
  std::uint64_t creator_start_time;  // creator's start time, clock ticks since boot
  std::uint32_t creator_pid;         // creator's pid
  std::uint32_t reserved0;           // zero
  char name[64];                     // NUL-terminated segment name (for error messages)
  std::uint8_t reserved1[24];        // zero; room to grow without moving payload
};
static_assert(sizeof(SegmentHeader) == 128);
static_assert(alignof(SegmentHeader) == 8);

class SegmentError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The supervisor instance: creator pid + start time.
struct Instance {
  pid_t pid = 0;
  std::uint64_t start_time = 0;

  static Instance self();                 // this process
  [[nodiscard]] std::string str() const;  // "<pid>-<starttime>"
  [[nodiscard]] bool alive() const;       // same pid, same start time, still running
};

// `bulkhead-<pid>-<starttime>-<label>`; label is [A-Za-z0-9_.] and short.
std::string segment_name(const Instance& instance, std::string_view label);

// Parses a segment name back into its creator instance; nullopt if the name
// is not one of ours.
std::optional<Instance> parse_segment_name(std::string_view name);

class Segment {
 public:
  // Creates `name` exclusively with mode 0600, sized `payload_bytes` plus the
  // header (rounded up to a page), writes the header.
  static Segment create(const std::string& name, std::size_t payload_bytes);
  // Opens an existing segment by name and validates its header.
  static Segment open(const std::string& name);
  // Maps an inherited fd (e.g. passed to a worker) and validates the header.
  // Takes ownership of the fd.
  static Segment adopt_fd(UniqueFd fd, const std::string& name_for_errors);

  Segment(Segment&&) noexcept;
  Segment& operator=(Segment&&) noexcept;
  ~Segment();

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] std::byte* base() const noexcept { return base_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] std::span<std::byte> payload() const noexcept {
    return {base_ + sizeof(SegmentHeader), size_ - sizeof(SegmentHeader)};
  }
  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  [[nodiscard]] const SegmentHeader& header() const noexcept {
    return *reinterpret_cast<const SegmentHeader*>(base_);
  }

  // Removes the name; the mapping (and any fd) stays valid.  Idempotent.
  void unlink() noexcept;
  void unlink_on_destroy(bool on) noexcept { unlink_on_destroy_ = on; }

 private:
  Segment(std::string name, UniqueFd fd, std::byte* base, std::size_t size);
  static Segment map_and_validate(UniqueFd fd, const std::string& name);

  std::string name_;
  UniqueFd fd_;
  std::byte* base_ = nullptr;
  std::size_t size_ = 0;
  bool unlinked_ = false;
  bool unlink_on_destroy_ = false;
};

// Removes every bulkhead segment in `dir` (normally /dev/shm) whose creator
// instance is no longer alive.  Returns the names removed.  Segments of live
// instances and names that are not ours are left alone.
std::vector<std::string> sweep_stale_segments(const std::string& dir = "/dev/shm");

}  // namespace bulkhead::ipc
