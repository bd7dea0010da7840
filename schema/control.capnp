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

enum Overflow {
  block @0;  # the sender waits for room, up to the receiver's blockTimeoutMs, then fails
  fail @1;   # the send fails at once with `overflow`
  drop @2;   # the newest message is dropped silently (counted)
}

enum MailboxPolicy {
  keep @0;  # messages queued while the worker was dead go to its next incarnation
  drop @1;  # a new incarnation starts with empty mailboxes
}

# One worker (or attached client) as its peers see it.  Names are static per
# incarnation: the actors a worker hosts come from the tree.
struct PeerInfo {
  slot @0 :UInt32;              # the supervisor's number for this peer
  incarnation @1 :UInt32;       # current incarnation (0: never started)
  childId @2 :Text;             # tree path, e.g. "root/db"
  actorNames @3 :List(Text);    # index = actor index; "" for an anonymous actor
  running @4 :Bool;             # ready and not (yet) known dead
  overflow @5 :Overflow;        # what a sender does when this peer's mailbox is full
  blockTimeoutMs @6 :UInt32;    # for overflow = block
}

struct PeerDown {
  slot @0 :UInt32;          # who died
  incarnation @1 :UInt32;   # which incarnation
  reason @2 :ExitReason;    # how, as the supervisor observed it
}

# A channel (one SPSC ring in its own segment) between this worker and a peer.
# Its fd is sent on the control socket (SCM_RIGHTS) just before this message
# is put on the control ring, so the worker receives the fd with recvmsg.
struct ChannelInfo {
  peer @0 :UInt32;      # the other end's slot
  outbound @1 :Bool;    # true: we produce (peer consumes); false: we consume
}

struct ToWorker {
  union {
    start @0 :Start;          # first message of every incarnation
    stop @1 :Void;            # graceful stop: terminate every actor, exit 0
    peers @2 :List(PeerInfo); # the whole peer table (right after start)
    peerUp @3 :PeerInfo;      # a peer (re)started and is ready
    peerDown @4 :PeerDown;    # a peer died: fail pending calls, fire monitors
    channel @5 :ChannelInfo;  # a channel was opened (fd on the socket)
    channelRefused @6 :UInt32; # no channel to this slot: it is gone (a detached client)
    childResult @7 :ChildResult; # the answer to startChild / terminateChild
    peerGone @8 :UInt32;      # this slot's occupant is gone for good (a detached
                              # client, a removed dynamic child; its peerDown came
                              # first): drop every channel to and from it and its
                              # names; the slot may be given to a new peer next
  }

  struct Start {
    childId @0 :Text;          # the child's id in the tree (path, e.g. "root/db")
    incarnation @1 :UInt32;    # 1 for the first start, +1 per restart
    actors @2 :List(ActorSpec);
    workerSlot @3 :UInt32;     # the supervisor's number for this child
    mailbox @4 :MailboxPolicy; # keep or drop what was queued while dead
  }
}

struct ToSupervisor {
  union {
    ready @0 :Void;             # every actor's init succeeded
    startFailed @1 :Text;       # an init failed: why (worker exits 71 next)
    exiting @2 :ExitReason;     # about to exit, and why (exception details)
    openChannel @3 :UInt32;     # please open (or re-send) my outbound channel to this slot
    brokenChannel @4 :BrokenChannel;  # a peer broke the ring protocol on a channel to me
    startChild @5 :Text;        # (clients) start a dynamic child under this simple_one_for_one supervisor
    terminateChild @6 :Text;    # (clients) stop and remove this dynamic child (its tree path)
  }
}

struct ChildResult {
  ok @0 :Bool;        # done
  childId @1 :Text;   # the child's tree path (a started child's new path)
  error @2 :Text;     # why not, when not ok
}

struct BrokenChannel {
  peer @0 :UInt32;   # the producer's slot
  detail @1 :Text;   # which field had which value
  producerIncarnation @2 :UInt32;  # the producer's incarnation as the reporter knew it
                                   # (0: unknown); a report about an earlier
                                   # occupant of the slot must not punish the current one
}
