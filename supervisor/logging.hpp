// supervisor/logging.hpp: the supervisor's loggers (spdlog), set up once in main().
//
// What it is for: `setup_supervisor_log()` makes the default logger every
// part of the supervisor logs through (`spdlog::info(...)`): stderr, with
// colours on a terminal, plus an optional file (`--log-file`).  Captured
// worker output goes through it too (see output_capture.hpp), unless a child
// has its own log file: `open_child_log()` makes that child's logger, a
// size-rotated file.
//
// Traps: both loggers are single-threaded by contract (the supervisor is one
// event loop); spdlog opens files with fopen, and the supervisor's fds are
// close-on-exec'd for workers by spawn.cpp's child-side setup, so a worker
// never inherits a log file.  Nothing here is registered in spdlog's global
// registry except the default logger.
#pragma once

#include <spdlog/logger.h>

#include <cstdint>
#include <memory>
#include <string>

namespace bulkhead::supervisor {

struct ChildSpec;
class OutputCapture;

// Installs the default logger.  `level` is one of trace, debug, info, warn,
// error; `file` ("" = none) is appended to as well as stderr.  Throws
// spdlog::spdlog_ex if the file cannot be opened.
void setup_supervisor_log(const std::string& level, const std::string& file);

// A logger writing to `path` alone, rotated by size: when a line would make
// the file exceed `max_bytes`, PATH becomes PATH.1 (FILE.log -> FILE.1.log:
// spdlog's naming puts the index before the extension), older ones shift up
// and at most `max_files` old files are kept (0: the file is truncated).
// Lines carry a date and time.  Throws spdlog::spdlog_ex if the file cannot
// be opened.
std::shared_ptr<spdlog::logger> open_child_log(const std::string& name, const std::string& path,
                                               std::uint64_t max_bytes, int max_files);

// The capture of worker child `path`'s output: into the supervisor's log, or
// its own log file if the spec names one ("{id}" replaced by its id).  A file
// that cannot be opened is logged as an error and the supervisor's log used.
std::unique_ptr<OutputCapture> make_output_capture(const std::string& path, const ChildSpec& spec);

}  // namespace bulkhead::supervisor
