// bench/process.hpp: the second process of a two-process figure.
//
// `Child::spawn` forks; the child pins itself to a CPU, asks the kernel to
// SIGKILL it when the benchmark dies (PR_SET_PDEATHSIG, with the getppid()
// race check), runs the body and leaves with _exit (no atexit handlers, no
// flush of stdio buffers inherited from the parent).  An exception escaping
// the body is printed to stderr and becomes exit status 1.
//
// PR_SET_PDEATHSIG is not honoured everywhere (some sandboxes accept it and
// never send the signal), so each child also starts a lifeline thread that
// blocks reading a pipe whose write end only the benchmark process holds:
// when the benchmark dies, however it dies, the read returns end of file and
// the thread _exits the child.  The thread sleeps in read() meanwhile, at no
// CPU cost.
//
// The parent owns the Child: `join` waits for a clean exit (and throws
// otherwise), `check_running` throws if it already exited, and the
// destructor SIGKILLs and reaps a child still running.  No child outlives
// the benchmark and none is left a zombie.
//
// Fork only from a single-threaded process: the benchmark never starts a
// thread (only its children do: the lifeline).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>

namespace bulkhead::bench {

// Pins the calling thread to `cpu`; false (errno kept) if it cannot be.
bool pin_to_cpu(int cpu);
// Number of CPUs in the calling thread's affinity mask.
int allowed_cpus();

class Child {
 public:
  // `cpu` < 0: do not pin.  `name` appears in error messages.
  static Child spawn(std::string name, int cpu, std::function<void()> body);

  Child(Child&& o) noexcept;
  Child& operator=(Child&&) = delete;
  Child(const Child&) = delete;
  ~Child();

  // Throws if the child has exited (for any reason): used while waiting on it.
  void check_running();
  // Waits up to `timeout` for the child to exit; throws unless it exited with
  // status 0 (a child still running at the timeout is killed first).
  void join(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  [[nodiscard]] pid_t pid() const noexcept { return pid_; }

 private:
  Child(std::string name, pid_t pid) : name_(std::move(name)), pid_(pid) {}
  bool reap(bool block);  // true once reaped; records status_
  [[nodiscard]] std::string describe_status() const;

  std::string name_;
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
};

}  // namespace bulkhead::bench
