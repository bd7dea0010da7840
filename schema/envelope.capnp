# envelope.capnp: the one message format on every ring.
#
# Every frame of kind kEnvelopeFrame on a ring is a single Cap'n Proto message
# whose root is an Envelope, laid out flat (segment table + segments) at an
# 8-byte aligned address, so the receiver reads it in place.
#
# Addressing: a destination or source names one actor in one incarnation of
# one worker (the fields of ActorRef, inline).  The *sender* of a message is
# the ring it arrived on, never the `source` field: `source` is where replies
# go, and a receiver checks it against the ring's owner before trusting it.
#
# Kinds follow gen_server: a `call` expects exactly one `reply` (or an error
# reply) carrying the same correlationId; `cast` and `info` expect nothing.
# `exit` and `down` carry an ExitReason (links and monitors).
#
# Protocol rules: fields are never renumbered or removed; new fields get new
# ordinals at the end.  (The one exception so far, before any release: the
# addresses became inline groups, and the ring layout version went to 4 with
# it, so that a worker of the old build cannot attach to a new tree.)

@0x94b75720c467dd89;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("bulkhead::schema");

using import "value.capnp".Value;
using import "exit_reason.capnp".ExitReason;

# An actor reference as a struct of its own, for payloads that carry one.
struct ActorRef {
  node @0 :UInt32;         # host number; 0 is this machine (multi-host later)
  worker @1 :UInt32;       # the worker slot the supervisor assigned
  incarnation @2 :UInt32;  # which start of that worker (1, 2, ...)
  actor @3 :UInt32;        # actor index within the worker
}

enum Kind {
  call @0;     # request that expects one reply
  cast @1;     # request that expects nothing
  info @2;     # a plain message (Erlang's `!`), handled by handle_info
  reply @3;    # the answer to a call, same correlationId
  exit @4;     # a linked actor exited (reason in payload)
  down @5;     # a monitored actor exited (reason in payload)
  control @6;  # supervisor <-> worker control (ready, stop, ...)
}

enum ErrorCode {
  none @0;          # not an error
  noproc @1;        # no such actor or name
  timeout @2;       # the deadline passed
  calleeDied @3;    # the callee's worker died; exitReason says how
  badMessage @4;    # the payload failed validation
  overflow @5;      # the callee's mailbox was full
  handlerError @6;  # the handler raised; message says what
}

struct Envelope {
  # The two addresses are groups, laid out inline in the envelope's data
  # section: no pointer to follow, no struct to allocate.  A small call then
  # fits in two cache lines with its frame header (see ipc/ring.hpp).
  destination :group {        # who should handle it
    worker @0 :UInt32;        # the worker slot the supervisor assigned
    incarnation @1 :UInt32;   # which start of that worker (1, 2, ...); 0 = current
    actor @2 :UInt32;         # actor index within the worker
  }
  source :group {             # where replies go (checked against the ring)
    worker @3 :UInt32;
    incarnation @4 :UInt32;
    actor @5 :UInt32;
  }
  kind @6 :Kind;              # what it is
  correlationId @7 :UInt64;   # call/reply pairing; 0 for cast and info
  deadlineNs @8 :Int64;       # CLOCK_MONOTONIC ns after which nobody waits; 0 = none
  destName @9 :Text;          # registered name, when addressed by name
  payload :union {
    none @10 :Void;               # no payload
    value @11 :Value;             # a dynamic Value
    typed @12 :TypedPayload;      # a user's own Cap'n Proto struct
    exitReason @13 :ExitReason;   # for exit and down
    error @14 :CallError;         # a failed call's reply
  }
  sequence @15 :UInt32;       # per-sender sequence number mod 2^32 (FIFO checks,
                              # diagnostics); 32 bits so that the data section
                              # is 6 words: a call with a small Value is 104
                              # bytes, a frame of 2 cache lines
}

struct TypedPayload {
  schemaId @0 :UInt64;        # the Cap'n Proto type id of `content`'s struct
  content @1 :AnyPointer;     # the struct itself
}

struct CallError {
  code @0 :ErrorCode;         # what kind of failure
  message @1 :Text;           # human readable detail
  reason @2 :ExitReason;      # for calleeDied: how the callee's worker ended
}
