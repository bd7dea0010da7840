// OutputCapture over real pipes: line splitting across reads, cut lines,
// defused control characters, the rate limit and its drop count, partial
// lines at the end.
#include "supervisor/output_capture.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <unistd.h>

#include <sstream>
#include <string>
#include <vector>

namespace bulkhead::supervisor {
namespace {

struct Pipe {
  ipc::UniqueFd r, w;
  Pipe() {
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    r = ipc::UniqueFd(fds[0]);
    w = ipc::UniqueFd(fds[1]);
  }
  void put(const std::string& s) const {
    ASSERT_EQ(::write(w.get(), s.data(), s.size()), static_cast<ssize_t>(s.size()));
  }
};

class OutputCaptureTest : public ::testing::Test {
 protected:
  void make(std::uint32_t rate) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_st>(text_);
    sink->set_pattern("%l %v");
    log_ = std::make_shared<spdlog::logger>("test", sink);
    log_->set_level(spdlog::level::trace);
    cap_ = std::make_unique<OutputCapture>("root/w", log_, log_, rate);
    out_fd_ = out_.r.get();
    err_fd_ = err_.r.get();
    cap_->attach(42, std::move(out_.r), std::move(err_.r));
  }
  std::vector<std::string> lines() const {
    std::vector<std::string> v;
    std::istringstream in(text_.str());
    for (std::string l; std::getline(in, l);) v.push_back(l);
    return v;
  }
  std::ostringstream text_;
  std::shared_ptr<spdlog::logger> log_;
  std::unique_ptr<OutputCapture> cap_;
  Pipe out_, err_;
  int out_fd_ = -1, err_fd_ = -1;
};

TEST_F(OutputCaptureTest, LinesSplitAcrossReadsAreJoinedAndPrefixed) {
  make(0);
  out_.put("hel");
  EXPECT_EQ(cap_->read_some(out_fd_), OutputCapture::Read::more);
  EXPECT_TRUE(lines().empty());
  out_.put("lo\nwor");
  EXPECT_EQ(cap_->read_some(out_fd_), OutputCapture::Read::more);
  out_.put("ld\n\n");
  EXPECT_EQ(cap_->read_some(out_fd_), OutputCapture::Read::more);
  err_.put("bad\n");
  EXPECT_EQ(cap_->read_some(err_fd_), OutputCapture::Read::more);
  EXPECT_EQ(lines(),
            (std::vector<std::string>{"info [root/w 42 out] hello", "info [root/w 42 out] world",
                                      "info [root/w 42 out] ", "warning [root/w 42 err] bad"}));
}

TEST_F(OutputCaptureTest, OverlongLineIsCutOnceAndItsRestSkipped) {
  make(0);
  out_.put(std::string(3000, 'a'));
  (void)cap_->read_some(out_fd_);
  out_.put(std::string(3000, 'a'));
  (void)cap_->read_some(out_fd_);
  out_.put(std::string(3000, 'a') + "\nnext\n");
  (void)cap_->read_some(out_fd_);
  auto v = lines();
  ASSERT_EQ(v.size(), 2u);
  EXPECT_EQ(v[0], "info [root/w 42 out] " + std::string(OutputCapture::kMaxLine, 'a') +
                      " [line cut at 4096 bytes]");
  EXPECT_EQ(v[1], "info [root/w 42 out] next");
}

TEST_F(OutputCaptureTest, ControlCharactersAreDefused) {
  make(0);
  out_.put("a\x1b[31mb\tc\x7f\r\n");
  (void)cap_->read_some(out_fd_);
  EXPECT_EQ(lines(), std::vector<std::string>{"info [root/w 42 out] a?[31mb\tc?"});
}

TEST_F(OutputCaptureTest, LinesOverTheRateAreDroppedCountedAndReported) {
  make(1);  // a burst of 5 lines
  std::string many;
  for (int i = 0; i < 20; ++i) many += "line " + std::to_string(i) + "\n";
  out_.put(many);
  EXPECT_EQ(cap_->read_some(out_fd_), OutputCapture::Read::throttled);
  EXPECT_EQ(cap_->dropped(), 15u);
  auto v = lines();
  ASSERT_EQ(v.size(), 6u);
  EXPECT_EQ(v[4], "info [root/w 42 out] line 4");
  EXPECT_EQ(v[5],
            "warning [root/w 42] 15 lines of output dropped (over 1 lines/s); 15 since it "
            "started");
  // A new incarnation starts counting again.
  Pipe o2, e2;
  cap_->attach(43, std::move(o2.r), std::move(e2.r));
  EXPECT_EQ(cap_->dropped(), 0u);
}

TEST_F(OutputCaptureTest, PartialLinesAreLoggedAtEndOfStreamAndAtFinish) {
  make(0);
  out_.put("no newline");
  err_.put("half");
  (void)cap_->read_some(out_fd_);
  out_.w.reset();
  EXPECT_EQ(cap_->read_some(out_fd_), OutputCapture::Read::eof);
  cap_->close(out_fd_);
  EXPECT_EQ(cap_->out_fd(), -1);
  cap_->finish();  // reads the rest of stderr
  cap_->close_all();
  EXPECT_EQ(lines(), (std::vector<std::string>{"info [root/w 42 out] no newline",
                                               "warning [root/w 42 err] half"}));
}

TEST_F(OutputCaptureTest, LinesBelowTheLevelCostNoToken) {
  make(1);
  log_->set_level(spdlog::level::warn);
  std::string many;
  for (int i = 0; i < 20; ++i) many += "quiet\n";
  out_.put(many);
  EXPECT_EQ(cap_->read_some(out_fd_), OutputCapture::Read::more);
  err_.put("loud\n");
  (void)cap_->read_some(err_fd_);
  EXPECT_EQ(cap_->dropped(), 0u);
  EXPECT_EQ(lines(), std::vector<std::string>{"warning [root/w 42 err] loud"});
}

}  // namespace
}  // namespace bulkhead::supervisor
