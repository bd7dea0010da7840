// frame-fuzz driver: runs LLVMFuzzerTestOneInput without libFuzzer, on
// generated seeds and random mutations of them, so that every build (g++,
// ASan) exercises the target.  With libFuzzer it only writes the seed corpus.
//
// Usage:
//   frame-fuzz [--seed N] [--iterations N] [--max-seconds S]
//   frame-fuzz --write-seeds DIR [--seed N] [--count N]
//   frame-fuzz --replay FILE
//   frame-fuzz --help
// When a property is violated the input being run is saved first, to
// ./frame-fuzz-crash-<seed> (replay it with --replay; libFuzzer reads it too).
// Exit codes: 0 done (all properties held), 1 the seeds did not reach deep
// paths (the generator is broken), 2 bad usage or I/O error.  A violated
// property aborts the process (SIGILL/SIGABRT, or a sanitizer report).
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/fuzz/frame_fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

// The input being run, for the crash handler.
const std::uint8_t* g_current = nullptr;
std::size_t g_current_size = 0;
char g_crash_path[64] = "frame-fuzz-crash";

extern "C" void save_current_input(int sig) {
  if (g_current != nullptr) {
    int fd = ::open(g_crash_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
      (void)!::write(fd, g_current, g_current_size);
      ::close(fd);
      static const char msg[] = "frame-fuzz: crashing input saved to ";
      (void)!::write(2, msg, sizeof msg - 1);
      (void)!::write(2, g_crash_path, std::strlen(g_crash_path));
      (void)!::write(2, "\n", 1);
    }
  }
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

void install_crash_handler(std::uint64_t seed) {
  std::snprintf(g_crash_path, sizeof g_crash_path, "frame-fuzz-crash-%llu",
                static_cast<unsigned long long>(seed));
  for (int sig : {SIGILL, SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGTRAP})
    ::signal(sig, save_current_input);
}

int replay(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    std::fprintf(stderr, "frame-fuzz: cannot read %s\n", path.c_str());
    return 2;
  }
  std::vector<std::uint8_t> in((std::istreambuf_iterator<char>(f)),
                               std::istreambuf_iterator<char>());
  LLVMFuzzerTestOneInput(in.data(), in.size());
  std::printf("frame-fuzz: %s ran clean\n", path.c_str());
  return 0;
}

void usage(std::FILE* to) {
  std::fputs(
      "usage: frame-fuzz [--seed N] [--iterations N] [--max-seconds S]\n"
      "       frame-fuzz --write-seeds DIR [--seed N] [--count N]\n"
      "       frame-fuzz --replay FILE\n"
      "Runs the frame fuzz target on generated seed rings and mutations of them.\n"
      "exit: 0 ok, 1 seeds reached no deep path, 2 usage or I/O error;\n"
      "a violated property aborts.\n",
      to);
}

bool parse_u64(const char* s, std::uint64_t& out) {
  char* end = nullptr;
  errno = 0;
  out = std::strtoull(s, &end, 0);
  return errno == 0 && end != s && *end == '\0';
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t seed = 1, iterations = 20000, count = 200, max_seconds = 0;
  std::string seeds_dir;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto need = [&](std::uint64_t& v) {
      if (i + 1 >= argc || !parse_u64(argv[++i], v)) {
        usage(stderr);
        std::exit(2);
      }
    };
    if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    } else if (a == "--seed") {
      need(seed);
    } else if (a == "--iterations") {
      need(iterations);
    } else if (a == "--max-seconds") {
      need(max_seconds);
    } else if (a == "--count") {
      need(count);
    } else if (a == "--write-seeds" && i + 1 < argc) {
      seeds_dir = argv[++i];
    } else if (a == "--replay" && i + 1 < argc) {
      return replay(argv[++i]);
    } else {
      usage(stderr);
      return 2;
    }
  }

  bulkhead::fuzz::Rng rng(seed);
  if (!seeds_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(seeds_dir, ec);
    if (ec) {
      std::fprintf(stderr, "frame-fuzz: cannot create %s: %s\n", seeds_dir.c_str(),
                   ec.message().c_str());
      return 2;
    }
    for (std::uint64_t n = 0; n < count; ++n) {
      auto in = bulkhead::fuzz::make_seed(rng);
      const std::string path = seeds_dir + "/seed-" + std::to_string(n);
      std::ofstream out(path, std::ios::binary);
      out.write(reinterpret_cast<const char*>(in.data()), static_cast<std::streamsize>(in.size()));
      if (!out) {
        std::fprintf(stderr, "frame-fuzz: cannot write %s\n", path.c_str());
        return 2;
      }
    }
    std::printf("frame-fuzz: wrote %llu seeds to %s\n", static_cast<unsigned long long>(count),
                seeds_dir.c_str());
    return 0;
  }

  install_crash_handler(seed);
  // A pool of seeds; mutants that came out the same size as their parent are
  // not kept (no coverage feedback here), the pool is refreshed instead.
  std::vector<bulkhead::fuzz::Input> pool;
  for (int i = 0; i < 64; ++i) pool.push_back(bulkhead::fuzz::make_seed(rng));
  const auto t0 = std::chrono::steady_clock::now();
  std::uint64_t done = 0;
  for (; done < iterations; ++done) {
    if (max_seconds != 0 && (done & 63) == 0 &&
        std::chrono::steady_clock::now() - t0 > std::chrono::seconds(max_seconds)) {
      break;
    }
    if (done % 8 == 0) pool[rng() % pool.size()] = bulkhead::fuzz::make_seed(rng);
    bulkhead::fuzz::Input in = pool[rng() % pool.size()];
    // One in eight runs unmutated: the deep, valid path.
    if (done % 8 != 0) {
      bulkhead::fuzz::mutate(in, rng, pool[rng() % pool.size()]);
      // Mutations stack: sometimes mutate a mutant again.
      if (rng() % 4 == 0) bulkhead::fuzz::mutate(in, rng, pool[rng() % pool.size()]);
    }
    g_current = in.data();
    g_current_size = in.size();
    LLVMFuzzerTestOneInput(in.data(), in.size());
    g_current = nullptr;
  }
  const auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto& s = bulkhead::fuzz::stats();
  std::printf(
      "frame-fuzz: seed %llu, %llu inputs in %.2f s: %llu frames, %llu envelopes valid, %llu "
      "rejected, %llu read unchecked (plain), %llu broken rings, %llu pushes after attach\n",
      static_cast<unsigned long long>(seed), static_cast<unsigned long long>(done), secs,
      static_cast<unsigned long long>(s.frames), static_cast<unsigned long long>(s.envelopes_valid),
      static_cast<unsigned long long>(s.envelopes_rejected),
      static_cast<unsigned long long>(s.envelopes_plain), static_cast<unsigned long long>(s.broken),
      static_cast<unsigned long long>(s.pushed));
  // Self-check: the run must have gone deep, not only bounced off garbage.
  if (done >= 1000 && (s.envelopes_valid == 0 || s.envelopes_rejected == 0 ||
                       s.envelopes_plain == 0 || s.broken == 0 || s.pushed == 0)) {
    std::fprintf(stderr, "frame-fuzz: the seeds reached no deep path\n");
    return 1;
  }
  return 0;
}
