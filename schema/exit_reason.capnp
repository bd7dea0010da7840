# exit_reason.capnp: why a worker (or an actor) stopped.  A closed union.
#
# The supervisor builds an ExitReason from what it observed (waitid status,
# the worker's own structured report, its timers) and shows it in logs, in
# DOWN messages and in the control CLI.  A worker reports exception details
# itself before exiting; everything else the supervisor sees from outside, so
# a worker cannot lie about being killed by a signal.
#
# Protocol rules: never renumber; add variants at the end.

@0xdeb62932b46e75cb;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("bulkhead::schema");

struct ExitReason {
  union {
    normal @0 :Void;              # stopped by itself, cleanly (exit code 0)
    shutdown @1 :Void;            # stopped because its supervisor asked it to
    exception @2 :Exception;      # an uncaught exception (C++ or Python)
    signal @3 :Signal;            # killed by a signal
    exitCode @4 :Int32;           # exited with a non-zero code and no report
    killedByLimit @5 :Limit;      # a resource limit ended it
    startFailure @6 :Text;        # could not start: exec failed, init threw, ...
    readyTimeout @7 :UInt32;      # did not report ready within this many ms
    protocolViolation @8 :Text;   # broke the shared-memory protocol (what, where)
  }

  struct Exception {
    type @0 :Text;       # C++ type name or Python qualified class name
    message @1 :Text;    # what() / str(exc)
    traceback @2 :Text;  # formatted traceback; empty for C++
    actor @3 :Text;      # the actor whose handler threw, if known
  }

  struct Signal {
    number @0 :Int32;       # signal number (SIGKILL = 9, SIGSEGV = 11, ...)
    coreDumped @1 :Bool;    # the kernel reported a core dump
  }

  enum LimitKind {
    memory @0;   # out of memory (cgroup or RLIMIT_AS), usually seen as SIGKILL by the OOM killer
    cpu @1;      # RLIMIT_CPU exceeded
  }

  struct Limit {
    kind @0 :LimitKind;  # which limit
    detail @1 :Text;     # human readable detail
  }
}
