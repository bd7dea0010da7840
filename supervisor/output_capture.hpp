// supervisor/output_capture.hpp: a worker's stdout and stderr, line by line, into a log.
//
// What it is for: every worker child has one `OutputCapture`, kept across
// its incarnations.  spawn.cpp gives each incarnation two pipes (stdout,
// stderr); the capture owns their non-blocking read ends, the event loop
// calls `read_some(fd)` when one is readable, and each complete line is
// logged as
//     [root/payments/ledger 1234 out] text      (info)
//     [root/payments/ledger 1234 err] text      (warn)
// through the child's logger (the supervisor's log, or the child's own
// rotating file, logging.hpp).  stdout and stderr are separate pipes, so
// their relative order is not kept.
//
// Flood-proof: the worker's bytes are hostile and may come without end.
//   - Each `read_some` reads at most 4 x 16 KiB: a flooding worker gets a
//     bounded share of each loop turn, never the whole turn.
//   - A line longer than kMaxLine is cut there with a marker; the rest of it
//     up to the next newline is discarded.  Per stream, at most kMaxLine
//     bytes are buffered.  Control characters are shown as '?'.
//   - A token bucket (`lines_per_sec`, bursts of 5 s worth) limits how many
//     lines reach the logger; the others are dropped and counted.  Drops are
//     reported (warn, in the supervisor's log and the child's file) at most
//     once per second while they happen, and the count is in the exit line.
//     With lines_per_sec = 0 every line is logged.
//   - Over its rate, a child is throttled: read_some() says so, and the
//     event loop stops reading its pipes for kThrottlePause.  They fill and
//     the worker waits in write(); what it wrote meanwhile is read after the
//     pause and mostly dropped.  So a worker writing as fast as it can costs
//     the supervisor a few reads per pause, not a core (and gets about one
//     pipe, 64 KiB, through per pause).  A worker that
//     writes faster than we read blocks in write(), which slows only it.
// Partial lines are logged when the stream ends and by `finish()`, which the
// runtime calls once the worker is reaped (bounded too: at most 1 MiB more).
//
// Fds: the caller (the event loop) watches out_fd()/err_fd(); on EOF it
// unwatches the fd and calls close(fd); after finish() it unwatches both and
// calls close_all().  Grandchildren holding a write end cannot keep a pipe
// alive past close_all(): the supervisor's read end is gone, their writes
// fail with EPIPE.
#pragma once

#include <spdlog/logger.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "ipc/sys.hpp"

namespace bulkhead::supervisor {

class OutputCapture {
 public:
  static constexpr std::size_t kMaxLine = 4096;
  static constexpr std::chrono::milliseconds kThrottlePause{100};
  enum class Read {
    more,       // keep watching the fd
    eof,        // the stream ended: unwatch fd, then close(fd)
    throttled,  // lines were dropped: stop reading both fds for kThrottlePause
  };

  // `sink` gets the lines; `supervisor_log` (may be the same) the drop reports.
  OutputCapture(std::string child, std::shared_ptr<spdlog::logger> sink,
                std::shared_ptr<spdlog::logger> supervisor_log, std::uint32_t lines_per_sec);
  OutputCapture(const OutputCapture&) = delete;
  OutputCapture& operator=(const OutputCapture&) = delete;

  // A new incarnation: its pid and the read ends of its pipes (either may be
  // empty).  The drop count starts again at 0; the token bucket does not.
  void attach(pid_t pid, ipc::UniqueFd out, ipc::UniqueFd err);
  [[nodiscard]] int out_fd() const noexcept { return streams_[0].fd.get(); }
  [[nodiscard]] int err_fd() const noexcept { return streams_[1].fd.get(); }

  // Reads a bounded amount from `fd` (out_fd() or err_fd()) and logs the
  // complete lines.
  [[nodiscard]] Read read_some(int fd);
  void close(int fd);
  // The worker was reaped: reads what is left (bounded) and logs partial lines.
  void finish();
  void close_all();

  // Lines dropped from the current incarnation.
  [[nodiscard]] std::uint64_t dropped() const noexcept { return dropped_; }
  [[nodiscard]] const std::shared_ptr<spdlog::logger>& sink() const noexcept { return sink_; }

 private:
  using Clock = std::chrono::steady_clock;
  struct Stream {
    ipc::UniqueFd fd;
    std::string partial;
    bool skipping = false;  // discarding the rest of a cut line
    const char* tag;
    spdlog::level::level_enum level;
  };

  bool read_stream(Stream& s, int max_reads);
  void consume(Stream& s, const char* data, std::size_t len);
  void emit(Stream& s, std::string_view line, bool cut);
  bool take_token();
  void report_drops(bool force);

  std::string child_;
  std::shared_ptr<spdlog::logger> sink_, supervisor_log_;
  pid_t pid_ = 0;
  Stream streams_[2];
  // token bucket
  double rate_, burst_, tokens_;
  Clock::time_point refilled_;
  // drops
  std::uint64_t dropped_ = 0, unreported_ = 0;
  Clock::time_point reported_{};
};

}  // namespace bulkhead::supervisor
