# control.capnp: the supervisor <-> worker control protocol.
#
# Transport: the supervisor sends ToWorker messages on the worker's control
# ring (in the worker's segment, inherited as fd 3; the ring is re-formatted
# for every incarnation, so a stale Stop never reaches a new incarnation).
# The worker sends ToSupervisor messages on its control socket (a
# SOCK_SEQPACKET socketpair end inherited as fd 4), one flat Cap'n Proto
# message per packet, so the supervisor can watch every worker from one epoll
# loop and sees EOF when a worker dies.
#
# Sequence: spawn -> (ring) start -> (socket) ready | startFailed
#           ... -> (ring) stop -> worker runs terminate, reports exiting, exits 0
#           an actor throws -> (socket) exiting{exception} -> exit code 70
# The supervisor never trusts a report over what it sees: a signal seen by
# waitid wins over anything the worker said.
#
# Protocol rules: never renumber; add fields and variants at the end.

@0xc714bddbc3c45637;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("bulkhead::schema");

using import "value.capnp".Value;
using import "exit_reason.capnp".ExitReason;

struct ActorSpec {
  type @0 :Text;    # registered actor type, e.g. "counter"
  name @1 :Text;    # registered name, empty for anonymous
  args @2 :Value;   # init arguments (a map from the tree file)
}

struct ToWorker {
  union {
    start @0 :Start;   # first message of every incarnation
    stop @1 :Void;     # graceful stop: terminate every actor, exit 0
  }

  struct Start {
    childId @0 :Text;          # the child's id in the tree (path, e.g. "root/db")
    incarnation @1 :UInt32;    # 1 for the first start, +1 per restart
    actors @2 :List(ActorSpec);
    workerSlot @3 :UInt32;     # the supervisor's number for this child
  }
}

struct ToSupervisor {
  union {
    ready @0 :Void;             # every actor's init succeeded
    startFailed @1 :Text;       # an init failed: why (worker exits 71 next)
    exiting @2 :ExitReason;     # about to exit, and why (exception details)
  }
}
