#include "ipc/segment.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <boost/interprocess/shared_memory_object.hpp>
#include <charconv>
#include <cstring>

namespace bip = boost::interprocess;

namespace bulkhead::ipc {
namespace {

std::size_t round_up(std::size_t v, std::size_t to) {
  return (v + to - 1) / to * to;
}

bool valid_label(std::string_view label) {
  if (label.empty()) return false;
  for (char c : label) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

template <class T>
bool parse_num(std::string_view s, T& out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

// Takes a Boost handle's fd as our own CLOEXEC duplicate; Boost closes its copy.
UniqueFd dup_handle(const bip::shared_memory_object& shm, const std::string& name) {
  int fd = ::fcntl(shm.get_mapping_handle().handle, F_DUPFD_CLOEXEC, 0);
  check_sys(fd, "dup of shared memory fd for " + name);
  return UniqueFd(fd);
}

}  // namespace

Instance Instance::self() {
  auto st = process_start_time(::getpid());
  if (!st) throw SegmentError("cannot read own start time from /proc/self/stat");
  return Instance{::getpid(), *st};
}

std::string Instance::str() const {
  return fmt::format("{}-{}", pid, start_time);
}

bool Instance::alive() const {
  return process_alive(pid, start_time);
}

std::string segment_name(const Instance& instance, std::string_view label) {
  if (!valid_label(label)) {
    throw SegmentError(fmt::format("segment label '{}' must be non-empty [A-Za-z0-9_.]", label));
  }
  std::string name = fmt::format("{}{}-{}", kSegmentPrefix, instance.str(), label);
  if (name.size() > kMaxSegmentName) {
    throw SegmentError(
        fmt::format("segment name '{}' longer than {} bytes", name, kMaxSegmentName));
  }
  return name;
}

std::optional<Instance> parse_segment_name(std::string_view name) {
  if (!name.starts_with(kSegmentPrefix)) return std::nullopt;
  name.remove_prefix(kSegmentPrefix.size());
  auto d1 = name.find('-');
  if (d1 == std::string_view::npos) return std::nullopt;
  auto d2 = name.find('-', d1 + 1);
  if (d2 == std::string_view::npos) return std::nullopt;
  Instance inst;
  if (!parse_num(name.substr(0, d1), inst.pid) || inst.pid <= 0) return std::nullopt;
  if (!parse_num(name.substr(d1 + 1, d2 - d1 - 1), inst.start_time)) return std::nullopt;
  if (!valid_label(name.substr(d2 + 1))) return std::nullopt;
  return inst;
}

Segment::Segment(std::string name, UniqueFd fd, std::byte* base, std::size_t size)
    : name_(std::move(name)), fd_(std::move(fd)), base_(base), size_(size) {}

Segment::Segment(Segment&& o) noexcept
    : name_(std::move(o.name_)),
      fd_(std::move(o.fd_)),
      base_(std::exchange(o.base_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      unlinked_(std::exchange(o.unlinked_, true)),
      unlink_on_destroy_(std::exchange(o.unlink_on_destroy_, false)) {}

Segment& Segment::operator=(Segment&& o) noexcept {
  if (this != &o) {
    this->~Segment();
    new (this) Segment(std::move(o));
  }
  return *this;
}

Segment::~Segment() {
  if (unlink_on_destroy_) unlink();
  if (base_ != nullptr) ::munmap(base_, size_);
}

void Segment::unlink() noexcept {
  if (unlinked_ || name_.empty()) return;
  unlinked_ = true;
  bip::shared_memory_object::remove(name_.c_str());
}

Segment Segment::create(const std::string& name, std::size_t payload_bytes) {
  if (!parse_segment_name(name)) {
    throw SegmentError(fmt::format("'{}' is not a bulkhead segment name", name));
  }
  std::size_t size = round_up(sizeof(SegmentHeader) + payload_bytes,
                              static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)));
  UniqueFd fd;
  try {
    bip::permissions perm(0600);
    bip::shared_memory_object shm(bip::create_only, name.c_str(), bip::read_write, perm);
    fd = dup_handle(shm, name);
  } catch (const bip::interprocess_exception& e) {
    throw SysError(e.get_native_error(), "create shared memory " + name + ": " + e.what());
  }
  // From here on a failure must not leave the name behind.
  struct RemoveOnFail {
    const std::string& n;
    bool armed = true;
    ~RemoveOnFail() {
      if (armed) bip::shared_memory_object::remove(n.c_str());
    }
  } guard{name};
  check_sys(::fchmod(fd.get(), 0600), "fchmod " + name);
  check_sys(retry_eintr([&] { return ::ftruncate(fd.get(), static_cast<off_t>(size)); }),
            "ftruncate " + name);
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) throw_sys("mmap " + name);
  auto* h = static_cast<SegmentHeader*>(p);
  std::memset(h, 0, sizeof(SegmentHeader));
  Instance self = Instance::self();
  h->layout_version = kSegmentLayoutVersion;
  h->header_bytes = sizeof(SegmentHeader);
  h->size = size;
  h->creator_pid = static_cast<std::uint32_t>(self.pid);
  h->creator_start_time = self.start_time;
  std::memcpy(h->name, name.data(), std::min(name.size(), sizeof(h->name) - 1));
  // Magic last: a reader that sees the magic sees a complete header.
  std::atomic_ref<std::uint64_t>(h->magic).store(kSegmentMagic, std::memory_order_release);
  guard.armed = false;
  return Segment(name, std::move(fd), static_cast<std::byte*>(p), size);
}

Segment Segment::open(const std::string& name) {
  UniqueFd fd;
  try {
    bip::shared_memory_object shm(bip::open_only, name.c_str(), bip::read_write);
    fd = dup_handle(shm, name);
  } catch (const bip::interprocess_exception& e) {
    throw SysError(e.get_native_error(), "open shared memory " + name + ": " + e.what());
  }
  return map_and_validate(std::move(fd), name);
}

Segment Segment::adopt_fd(UniqueFd fd, const std::string& name_for_errors) {
  return map_and_validate(std::move(fd), name_for_errors);
}

Segment Segment::map_and_validate(UniqueFd fd, const std::string& name) {
  struct stat st {};
  check_sys(::fstat(fd.get(), &st), "fstat " + name);
  auto size = static_cast<std::size_t>(st.st_size);
  if (size < sizeof(SegmentHeader)) {
    throw SegmentError(fmt::format("segment {}: {} bytes is smaller than its {}-byte header", name,
                                   size, sizeof(SegmentHeader)));
  }
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) throw_sys("mmap " + name);
  Segment seg(name, std::move(fd), static_cast<std::byte*>(p), size);
  seg.unlinked_ = true;  // an opener never removes the creator's name
  const SegmentHeader& h = seg.header();
  std::uint64_t magic =
      std::atomic_ref<const std::uint64_t>(h.magic).load(std::memory_order_acquire);
  if (magic != kSegmentMagic) {
    throw SegmentError(fmt::format("segment {}: field magic is {:#018x}, expected {:#018x}", name,
                                   magic, kSegmentMagic));
  }
  if (h.layout_version != kSegmentLayoutVersion) {
    throw SegmentError(fmt::format("segment {}: field layout_version is {}, this build reads {}",
                                   name, h.layout_version, kSegmentLayoutVersion));
  }
  if (h.header_bytes != sizeof(SegmentHeader)) {
    throw SegmentError(fmt::format("segment {}: field header_bytes is {}, expected {}", name,
                                   h.header_bytes, sizeof(SegmentHeader)));
  }
  if (h.size != size) {
    throw SegmentError(fmt::format("segment {}: field size is {}, but the mapping is {} bytes",
                                   name, h.size, size));
  }
  return seg;
}

std::vector<std::string> sweep_stale_segments(const std::string& dir) {
  std::vector<std::string> removed;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return removed;
  while (dirent* e = ::readdir(d)) {
    std::string_view n(e->d_name);
    auto inst = parse_segment_name(n);
    if (!inst || inst->alive()) continue;
    std::string name(n);
    // Remove the file in `dir` itself (for /dev/shm this is what shm_unlink does).
    if (::unlink((dir + "/" + name).c_str()) == 0) removed.push_back(std::move(name));
  }
  ::closedir(d);
  return removed;
}

}  // namespace bulkhead::ipc
