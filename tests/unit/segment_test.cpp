// Named shared-memory segments: creation (mode, name, exclusivity), the
// passport check on open/adopt, unlink, the stale-segment sweep and the
// segment name grammar.
#include "ipc/segment.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "tests/ring_fixture.hpp"

namespace bulkhead {
namespace {

using ipc::Instance;
using ipc::Segment;
using ipc::SegmentError;
using ipc::SegmentHeader;
using testing::ChildProcess;
using testing::unique_label;

std::string dev_shm(const std::string& name) {
  return "/dev/shm/" + name;
}
bool in_dev_shm(const std::string& name) {
  struct stat st {};
  return ::stat(dev_shm(name).c_str(), &st) == 0;
}
std::string fresh_name(const char* what) {
  return ipc::segment_name(Instance::self(), unique_label(what));
}
bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// Removes names a test created behind Segment's back (or left on purpose).
struct ShmCleanup {
  std::vector<std::string> names;
  ~ShmCleanup() {
    for (auto& n : names) ::shm_unlink(("/" + n).c_str());
  }
};

// Creates a raw shared-memory object of `size` bytes without a header.
void create_raw(const std::string& name, std::size_t size) {
  int fd = ::shm_open(("/" + name).c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0) << name << ": " << std::strerror(errno);
  ipc::UniqueFd owned(fd);
  ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(size)), 0);
}

SegmentHeader& writable_header(const Segment& s) {
  return *reinterpret_cast<SegmentHeader*>(s.base());
}

// Opening a segment whose header was changed by `scribble` must fail with a
// SegmentError naming `field` (and the segment).
void expect_open_names_field(const std::function<void(SegmentHeader&)>& scribble,
                             const std::string& field) {
  auto name = fresh_name("bad");
  auto seg = Segment::create(name, 4096);
  seg.unlink_on_destroy(true);
  scribble(writable_header(seg));
  try {
    auto opened = Segment::open(name);
    ADD_FAILURE() << "open accepted a segment with a bad " << field;
  } catch (const SegmentError& e) {
    EXPECT_NE(std::string(e.what()).find("field " + field + " "), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
  }
  // The same check guards an inherited fd.
  int dup = ::fcntl(seg.fd(), F_DUPFD_CLOEXEC, 0);
  ASSERT_GE(dup, 0);
  try {
    auto adopted = Segment::adopt_fd(ipc::UniqueFd(dup), "inherited");
    ADD_FAILURE() << "adopt_fd accepted a segment with a bad " << field;
  } catch (const SegmentError& e) {
    EXPECT_NE(std::string(e.what()).find("field " + field + " "), std::string::npos) << e.what();
  }
}

// --- create ----------------------------------------------------------------

TEST(Segment, CreateGivesMode0600EvenUnderAPermissiveUmask) {
  const mode_t old = ::umask(0);
  auto name = fresh_name("mode");
  auto seg = Segment::create(name, 1000);
  ::umask(old);
  seg.unlink_on_destroy(true);
  struct stat st {};
  ASSERT_EQ(::fstat(seg.fd(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  ASSERT_EQ(::stat(dev_shm(name).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, ::geteuid());
}

TEST(Segment, CreateNamesItWithPrefixAndCreatorInstanceAndWritesThePassport) {
  const Instance self = Instance::self();
  auto name = ipc::segment_name(self, "ring.0");
  ShmCleanup cleanup{{name}};
  EXPECT_EQ(name, "bulkhead-" + std::to_string(self.pid) + "-" + std::to_string(self.start_time) +
                      "-ring.0");
  auto seg = Segment::create(name, 1000);
  EXPECT_EQ(seg.name(), name);
  EXPECT_TRUE(in_dev_shm(name));
  const SegmentHeader& h = seg.header();
  EXPECT_EQ(h.magic, ipc::kSegmentMagic);
  EXPECT_EQ(h.layout_version, ipc::kSegmentLayoutVersion);
  EXPECT_EQ(h.header_bytes, sizeof(SegmentHeader));
  EXPECT_EQ(h.size, seg.size());
  EXPECT_EQ(h.creator_pid, static_cast<std::uint32_t>(self.pid));
  EXPECT_EQ(h.creator_start_time, self.start_time);
  EXPECT_STREQ(h.name, name.c_str());
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  EXPECT_EQ(seg.size() % page, 0u);
  EXPECT_GE(seg.payload().size(), 1000u);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(seg.payload().data()) % 64, 0u);
  auto p = seg.payload();
  EXPECT_TRUE(std::all_of(p.begin(), p.end(), [](std::byte b) { return b == std::byte{0}; }));
}

TEST(Segment, CreateIsExclusive) {
  auto name = fresh_name("excl");
  auto first = Segment::create(name, 64);
  first.unlink_on_destroy(true);
  try {
    auto second = Segment::create(name, 64);
    FAIL() << "a second create of the same name must fail";
  } catch (const ipc::SysError& e) {
    EXPECT_EQ(e.code().value(), EEXIST) << e.what();
  }
  EXPECT_EQ(first.header().magic, ipc::kSegmentMagic) << "the first segment is untouched";
}

TEST(Segment, CreateRefusesANameThatIsNotOurs) {
  for (std::string bad : {"notours-1-2-x", "bulkhead-x-1-lbl", "bulkhead-1-2-bad-label"}) {
    EXPECT_THROW(Segment::create(bad, 64), SegmentError) << bad;
    EXPECT_FALSE(in_dev_shm(bad)) << bad;
  }
}

// --- open / adopt ----------------------------------------------------------

TEST(Segment, OpenValidatesTheHeaderAndMapsTheSameMemory) {
  auto name = fresh_name("open");
  auto creator = Segment::create(name, 8192);
  creator.unlink_on_destroy(true);
  auto opener = Segment::open(name);
  EXPECT_NE(opener.base(), creator.base()) << "a second, independent mapping";
  EXPECT_EQ(opener.size(), creator.size());
  EXPECT_EQ(opener.name(), name);
  EXPECT_EQ(std::memcmp(&opener.header(), &creator.header(), sizeof(SegmentHeader)), 0);
  std::memcpy(creator.payload().data() + 100, "hello", 5);
  EXPECT_EQ(std::memcmp(opener.payload().data() + 100, "hello", 5), 0);
  opener.unlink();  // an opener never removes the creator's name
  EXPECT_TRUE(in_dev_shm(name));
}

TEST(Segment, OpenOfAMissingNameIsASysErrorWithENOENT) {
  auto name = fresh_name("missing");
  try {
    auto s = Segment::open(name);
    FAIL() << "opened a segment that does not exist";
  } catch (const ipc::SysError& e) {
    EXPECT_EQ(e.code().value(), ENOENT) << e.what();
    EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
  }
}

TEST(Segment, WrongMagicIsRefusedNamingTheField) {
  expect_open_names_field([](SegmentHeader& h) { h.magic = 0x1122334455667788ULL; }, "magic");
}

TEST(Segment, WrongLayoutVersionIsRefusedNamingTheField) {
  expect_open_names_field(
      [](SegmentHeader& h) { h.layout_version = ipc::kSegmentLayoutVersion + 1; },
      "layout_version");
}

TEST(Segment, WrongSizeFieldIsRefusedNamingTheField) {
  expect_open_names_field([](SegmentHeader& h) { h.size += 4096; }, "size");
  expect_open_names_field([](SegmentHeader& h) { h.size = 128; }, "size");
}

TEST(Segment, WrongHeaderBytesIsRefusedNamingTheField) {
  expect_open_names_field([](SegmentHeader& h) { h.header_bytes = 64; }, "header_bytes");
}

TEST(Segment, ASegmentSmallerThanItsHeaderIsRefused) {
  for (std::size_t size : {std::size_t{0}, std::size_t{64}, sizeof(SegmentHeader) - 8}) {
    auto name = fresh_name("tiny");
    ShmCleanup cleanup{{name}};
    create_raw(name, size);
    try {
      auto s = Segment::open(name);
      ADD_FAILURE() << "opened a " << size << "-byte segment";
    } catch (const SegmentError& e) {
      EXPECT_NE(std::string(e.what()).find("smaller than its"), std::string::npos) << e.what();
    }
  }
}

TEST(Segment, AdoptFdMapsTheSameMemoryAndOwnsTheFd) {
  auto name = fresh_name("adopt");
  auto creator = Segment::create(name, 4096);
  creator.unlink();  // adoption does not need the name
  int dup = ::fcntl(creator.fd(), F_DUPFD_CLOEXEC, 0);
  ASSERT_GE(dup, 0);
  {
    auto adopted = Segment::adopt_fd(ipc::UniqueFd(dup), "worker-view");
    EXPECT_EQ(adopted.fd(), dup);
    EXPECT_EQ(adopted.size(), creator.size());
    EXPECT_NE(adopted.base(), creator.base());
    EXPECT_EQ(adopted.header().creator_pid, static_cast<std::uint32_t>(::getpid()));
    std::memcpy(adopted.payload().data(), "from worker", 11);
    EXPECT_EQ(std::memcmp(creator.payload().data(), "from worker", 11), 0);
  }
  errno = 0;
  EXPECT_EQ(::fcntl(dup, F_GETFD), -1) << "the adopted fd is closed with its Segment";
  EXPECT_EQ(errno, EBADF);
}

TEST(Segment, AdoptFdOfMemoryWithoutAPassportIsRefused) {
  int fd = ::memfd_create("not-a-segment", MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  ipc::UniqueFd owned(fd);
  ASSERT_EQ(::ftruncate(fd, 8192), 0);
  try {
    auto s = Segment::adopt_fd(std::move(owned), "inherited-fd-3");
    FAIL() << "adopted memory without a passport";
  } catch (const SegmentError& e) {
    EXPECT_NE(std::string(e.what()).find("field magic"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("inherited-fd-3"), std::string::npos) << e.what();
  }
}

// --- unlink ------------------------------------------------------------------

TEST(Segment, UnlinkRemovesTheNameAndLeavesTheMappingUsable) {
  auto name = fresh_name("unlink");
  auto seg = Segment::create(name, 4096);
  ASSERT_TRUE(in_dev_shm(name));
  seg.unlink();
  EXPECT_FALSE(in_dev_shm(name));
  EXPECT_THROW(Segment::open(name), ipc::SysError);
  std::memset(seg.payload().data(), 0xab, seg.payload().size());
  EXPECT_EQ(seg.payload()[seg.payload().size() - 1], std::byte{0xab});
  EXPECT_EQ(seg.header().magic, ipc::kSegmentMagic);
  struct stat st {};
  ASSERT_EQ(::fstat(seg.fd(), &st), 0) << "the fd stays valid";
  EXPECT_EQ(static_cast<std::size_t>(st.st_size), seg.size());
  // A second mapping through the fd still sees the same memory.
  int dup = ::fcntl(seg.fd(), F_DUPFD_CLOEXEC, 0);
  ASSERT_GE(dup, 0);
  auto again = Segment::adopt_fd(ipc::UniqueFd(dup), name);
  EXPECT_EQ(again.payload()[10], std::byte{0xab});
  seg.unlink();  // idempotent
  // The name is free again.
  auto reuse = Segment::create(name, 64);
  reuse.unlink_on_destroy(true);
  EXPECT_TRUE(in_dev_shm(name));
}

TEST(Segment, DestructorUnlinksOnlyWhenAskedTo) {
  auto kept = fresh_name("kept");
  auto removed = fresh_name("removed");
  ShmCleanup cleanup{{kept}};
  {
    auto a = Segment::create(kept, 64);
    auto b = Segment::create(removed, 64);
    b.unlink_on_destroy(true);
  }
  EXPECT_TRUE(in_dev_shm(kept));
  EXPECT_FALSE(in_dev_shm(removed));
}

TEST(Segment, MoveTransfersTheMappingAndTheUnlinkDuty) {
  auto name = fresh_name("move");
  std::byte* base = nullptr;
  {
    auto a = Segment::create(name, 64);
    a.unlink_on_destroy(true);
    base = a.base();
    Segment b(std::move(a));
    EXPECT_EQ(a.base(), nullptr);
    EXPECT_EQ(b.base(), base);
    auto c = Segment::create(fresh_name("move2"), 64);
    c.unlink_on_destroy(true);
    c = std::move(b);  // c's old segment is unmapped and unlinked
    EXPECT_EQ(c.base(), base);
    EXPECT_EQ(c.header().magic, ipc::kSegmentMagic);
    EXPECT_TRUE(in_dev_shm(name));
  }
  EXPECT_FALSE(in_dev_shm(name)) << "the duty to unlink moved with the segment";
}

// --- sweep -------------------------------------------------------------------

TEST(SegmentSweep, RemovesSegmentsOfDeadCreatorsKeepsLiveOnesAndIgnoresForeignNames) {
  ShmCleanup cleanup;
  // A child creates a segment under its own instance name, then exits without
  // unlinking it: a stale segment.
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  ipc::UniqueFd rd(fds[0]), wr(fds[1]);
  auto child = ChildProcess::spawn([&] {
    auto seg = Segment::create(ipc::segment_name(Instance::self(), "sweep.dead"), 64);
    const std::string& n = seg.name();
    return ::write(wr.get(), n.data(), n.size()) == static_cast<ssize_t>(n.size()) ? 0 : 1;
  });
  wr.reset();
  char buf[128] = {};
  ssize_t got = ::read(rd.get(), buf, sizeof buf - 1);
  const int status = child.wait();
  ASSERT_TRUE(testing::exited_ok(status)) << testing::describe_status(status);
  ASSERT_GT(got, 0);
  const std::string dead(buf, static_cast<std::size_t>(got));
  cleanup.names.push_back(dead);
  ASSERT_TRUE(in_dev_shm(dead));
  auto dead_instance = ipc::parse_segment_name(dead);
  ASSERT_TRUE(dead_instance.has_value());
  EXPECT_FALSE(dead_instance->alive());

  // Our pid but another start time: the pid was recycled, the creator is gone.
  const Instance self = Instance::self();
  const std::string recycled =
      ipc::segment_name(Instance{self.pid, self.start_time + 1}, unique_label("sweep.recycled"));
  cleanup.names.push_back(recycled);
  { auto s = Segment::create(recycled, 64); }

  const std::string live = fresh_name("sweep.live");
  auto live_seg = Segment::create(live, 64);
  live_seg.unlink_on_destroy(true);

  const std::vector<std::string> foreign = {
      "notours-" + std::to_string(dead_instance->pid) + "-1-x",
      "bulkheadx-1-2-lbl",
      "bulkhead-x-2-lbl",
      "bulkhead-123-456-bad-label",
      "bulkhead-" + std::to_string(dead_instance->pid) + "-" +
          std::to_string(dead_instance->start_time),  // no label
  };
  for (auto& n : foreign) {
    cleanup.names.push_back(n);
    create_raw(n, 64);
  }

  const auto removed = ipc::sweep_stale_segments();
  EXPECT_TRUE(contains(removed, dead));
  EXPECT_TRUE(contains(removed, recycled));
  EXPECT_FALSE(in_dev_shm(dead));
  EXPECT_FALSE(in_dev_shm(recycled));
  EXPECT_FALSE(contains(removed, live));
  EXPECT_TRUE(in_dev_shm(live));
  EXPECT_EQ(live_seg.header().magic, ipc::kSegmentMagic);
  for (auto& n : foreign) {
    EXPECT_FALSE(contains(removed, n)) << n;
    EXPECT_TRUE(in_dev_shm(n)) << n;
  }
  for (auto& n : removed) {
    auto inst = ipc::parse_segment_name(n);
    ASSERT_TRUE(inst.has_value()) << n;
    EXPECT_FALSE(inst->alive()) << "swept a live instance's segment " << n;
  }
}

// --- names and instances -------------------------------------------------------

TEST(SegmentName, RoundTripsThroughParse) {
  const std::vector<Instance> instances = {Instance::self(), Instance{1, 0},
                                           Instance{4194304, 18446744073709551615ULL}};
  for (const auto& inst : instances) {
    for (const char* label : {"a", "ring.0", "Mailbox_7", "x.y.z"}) {
      const std::string name = ipc::segment_name(inst, label);
      auto parsed = ipc::parse_segment_name(name);
      ASSERT_TRUE(parsed.has_value()) << name;
      EXPECT_EQ(parsed->pid, inst.pid) << name;
      EXPECT_EQ(parsed->start_time, inst.start_time) << name;
      EXPECT_EQ(parsed->str(), inst.str());
    }
  }
}

TEST(SegmentName, ParseRejectsJunk) {
  for (const char* junk : {"",
                           "bulkhead",
                           "bulkhead-",
                           "bulkhead-1",
                           "bulkhead-1-2",
                           "bulkhead-1-2-",
                           "bulkhead--2-x",
                           "bulkhead-1--x",
                           "bulkhead-0-2-x",
                           "bulkhead-x-2-lbl",
                           "bulkhead-1-y-lbl",
                           "bulkhead-+1-2-lbl",
                           "bulkhead-1-+2-lbl",
                           "bulkhead-1-2-a-b",
                           "bulkhead-1-2-a/b",
                           "bulkhead-1-2-a b",
                           "bulkhead-1.5-2-lbl",
                           "bulkhead-99999999999999999999-2-lbl",
                           "bulkhead-1-99999999999999999999999-lbl",
                           " bulkhead-1-2-lbl",
                           "Bulkhead-1-2-lbl",
                           "bulkheads-1-2-lbl",
                           "other-1-2-lbl"}) {
    EXPECT_FALSE(ipc::parse_segment_name(junk).has_value()) << "'" << junk << "'";
  }
}

TEST(SegmentName, RejectsBadLabelsAndOverlongNames) {
  const Instance self = Instance::self();
  for (const char* bad : {"", "a-b", "a/b", "a b", "ä"}) {
    EXPECT_THROW(ipc::segment_name(self, bad), SegmentError) << "'" << bad << "'";
  }
  EXPECT_THROW(ipc::segment_name(self, std::string(ipc::kMaxSegmentName, 'x')), SegmentError);
  const std::string prefix = ipc::segment_name(self, "x");
  const std::string longest(ipc::kMaxSegmentName - prefix.size() + 1, 'y');
  EXPECT_EQ(ipc::segment_name(self, longest).size(), ipc::kMaxSegmentName);
}

TEST(Instance, SelfIsAliveAndADeadOrRecycledOneIsNot) {
  const Instance self = Instance::self();
  EXPECT_TRUE(self.alive());
  EXPECT_FALSE((Instance{self.pid, self.start_time + 1}.alive()));
  auto child = ChildProcess::spawn([] { return 0; });
  const pid_t pid = child.pid();
  auto st = ipc::process_start_time(pid);
  ASSERT_TRUE(st.has_value()) << "a zombie still has /proc/PID/stat";
  child.wait();
  EXPECT_FALSE((Instance{pid, *st}.alive()));
}

}  // namespace
}  // namespace bulkhead
