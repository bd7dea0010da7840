#include "supervisor/output_capture.hpp"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

namespace bulkhead::supervisor {
namespace {

constexpr std::size_t kReadChunk = 16384;
constexpr int kReadsPerTurn = 4;  // 64 KiB per readable event
constexpr int kReadsAtExit = 64;  // 1 MiB per stream after the worker died
constexpr double kBurstSeconds = 5.0;
constexpr auto kReportEvery = std::chrono::seconds(1);

// The line as it will be shown: control characters (escape sequences
// included) become '?', a trailing '\r' goes.
std::string_view sanitize(std::string_view line, std::string& scratch) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  auto bad = [](char ch) {
    auto u = static_cast<unsigned char>(ch);
    return (u < 0x20 && u != '\t') || u == 0x7f;
  };
  if (std::none_of(line.begin(), line.end(), bad)) return line;
  scratch.assign(line);
  std::replace_if(scratch.begin(), scratch.end(), bad, '?');
  return scratch;
}

}  // namespace

OutputCapture::OutputCapture(std::string child, std::shared_ptr<spdlog::logger> sink,
                             std::shared_ptr<spdlog::logger> supervisor_log,
                             std::uint32_t lines_per_sec)
    : child_(std::move(child)),
      sink_(std::move(sink)),
      supervisor_log_(std::move(supervisor_log)),
      rate_(lines_per_sec),
      burst_(std::max(1.0, lines_per_sec * kBurstSeconds)),
      tokens_(burst_),
      refilled_(Clock::now()) {
  streams_[0].tag = "out";
  streams_[0].level = spdlog::level::info;
  streams_[1].tag = "err";
  streams_[1].level = spdlog::level::warn;
}

void OutputCapture::attach(pid_t pid, ipc::UniqueFd out, ipc::UniqueFd err) {
  close_all();
  pid_ = pid;
  streams_[0].fd = std::move(out);
  streams_[1].fd = std::move(err);
  dropped_ = unreported_ = 0;
}

OutputCapture::Read OutputCapture::read_some(int fd) {
  for (auto& s : streams_) {
    if (s.fd && s.fd.get() == fd) {
      std::uint64_t before = dropped_;
      bool eof = read_stream(s, kReadsPerTurn);
      report_drops(false);
      sink_->flush();
      if (eof) return Read::eof;
      return dropped_ > before ? Read::throttled : Read::more;
    }
  }
  return Read::more;
}

void OutputCapture::close(int fd) {
  for (auto& s : streams_) {
    if (!s.fd || s.fd.get() != fd) continue;
    if (!s.partial.empty()) emit(s, s.partial, false);
    s.partial.clear();
    s.skipping = false;
    s.fd.reset();
  }
}

void OutputCapture::finish() {
  for (auto& s : streams_) {
    if (s.fd) (void)read_stream(s, kReadsAtExit);
    if (!s.partial.empty()) emit(s, s.partial, false);
    s.partial.clear();
    s.skipping = false;
  }
  report_drops(true);
  sink_->flush();
}

void OutputCapture::close_all() {
  for (auto& s : streams_) {
    s.fd.reset();
    s.partial.clear();
    s.skipping = false;
  }
}

// Returns true at end of stream.
bool OutputCapture::read_stream(Stream& s, int max_reads) {
  static std::array<char, kReadChunk> buf;  // one event loop: one buffer
  for (int i = 0; i < max_reads; ++i) {
    ssize_t n = ::read(s.fd.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) {
      --i;
      continue;
    }
    if (n == 0) return true;
    if (n < 0) return errno != EAGAIN && errno != EWOULDBLOCK;  // an error ends it too
    consume(s, buf.data(), static_cast<std::size_t>(n));
    if (static_cast<std::size_t>(n) < buf.size()) break;  // drained for now
  }
  return false;
}

void OutputCapture::consume(Stream& s, const char* data, std::size_t len) {
  while (len > 0) {
    const char* nl = static_cast<const char*>(std::memchr(data, '\n', len));
    std::size_t take = nl != nullptr ? static_cast<std::size_t>(nl - data) : len;
    if (s.skipping) {
      // The rest of a line that was cut: discard up to its newline.
      if (nl != nullptr) s.skipping = false;
    } else if (s.partial.size() + take > kMaxLine) {
      // Too long: log the first kMaxLine bytes, skip the rest of the line.
      std::size_t room = kMaxLine - s.partial.size();
      s.partial.append(data, room);
      emit(s, s.partial, true);
      s.partial.clear();
      s.skipping = nl == nullptr;
    } else if (nl != nullptr) {
      if (s.partial.empty()) {
        emit(s, std::string_view(data, take), false);
      } else {
        s.partial.append(data, take);
        emit(s, s.partial, false);
        s.partial.clear();
      }
    } else {
      s.partial.append(data, take);
    }
    if (nl == nullptr) break;
    data += take + 1;
    len -= take + 1;
  }
}

void OutputCapture::emit(Stream& s, std::string_view line, bool cut) {
  if (!sink_->should_log(s.level) || !take_token()) return;  // filtered lines cost no token
  std::string scratch;
  auto text = sanitize(line, scratch);
  if (cut) {
    sink_->log(s.level, "[{} {} {}] {} [line cut at {} bytes]", child_, pid_, s.tag, text,
               kMaxLine);
  } else {
    sink_->log(s.level, "[{} {} {}] {}", child_, pid_, s.tag, text);
  }
}

bool OutputCapture::take_token() {
  if (rate_ <= 0) return true;
  auto now = Clock::now();
  double elapsed = std::chrono::duration<double>(now - refilled_).count();
  refilled_ = now;
  tokens_ = std::min(burst_, tokens_ + elapsed * rate_);
  if (tokens_ >= 1.0) {
    tokens_ -= 1.0;
    return true;
  }
  ++dropped_;
  ++unreported_;
  return false;
}

void OutputCapture::report_drops(bool force) {
  if (unreported_ == 0) return;
  auto now = Clock::now();
  if (!force && now - reported_ < kReportEvery) return;
  reported_ = now;
  auto say = [&](spdlog::logger& l) {
    l.warn("[{} {}] {} lines of output dropped (over {} lines/s); {} since it started", child_,
           pid_, unreported_, static_cast<std::uint64_t>(rate_), dropped_);
  };
  say(*supervisor_log_);
  if (sink_ != supervisor_log_) say(*sink_);
  unreported_ = 0;
}

}  // namespace bulkhead::supervisor
