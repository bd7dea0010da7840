# control_rpc.capnp: the operator's control protocol (bulkheadctl <-> supervisor).
#
# The supervisor serves `Control` as the bootstrap capability of Cap'n Proto's
# two-party RPC on a Unix socket (mode 0600, in a 0700 directory): by default
# $XDG_RUNTIME_DIR/bulkhead/NAME.ctl, else /tmp/bulkhead-UID/NAME.ctl.
# Every client is an operator of the same uid; still, the server bounds what a
# client can cost it (connections, queued requests, event backlog) and never
# lets one block the supervisor's event loop.
#
# Children are named by path: "root/api", "root/payments/ledger",
# "root/jobs/2"; a path without "root/" is taken relative to the root.
#
# Protocol rules: fields are never renumbered or removed; new fields,
# variants and methods get new ordinals at the end.

@0x99db4d017cc581c8;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("bulkhead::schema");

# How a request ended.  bulkheadctl maps these onto its exit codes.
enum Code {
  ok @0;
  unknownChild @1;    # no child (or supervisor) by that path
  notApplicable @2;   # the request makes no sense for it (delete a running child, ...)
  failed @3;          # tried and failed (the child did not start, ...); see message
  timeout @4;         # still in progress when the request's time ran out
  shuttingDown @5;    # the tree is stopping: no more changes
  busy @6;            # too many requests queued; retry
}

struct Outcome {
  code @0 :Code;
  message @1 :Text;   # human-readable, empty when ok
}

struct ChildStatus {
  path @0 :Text;            # "root/payments/ledger"
  id @1 :Text;              # "ledger"
  depth @2 :UInt32;         # 1 for the root's children
  kind @3 :Text;            # "worker" | "supervisor"
  strategy @4 :Text;        # supervisors: one_for_one | ...; workers: ""
  restartType @5 :Text;     # permanent | transient | temporary
  pid @6 :Int32;            # 0 when no process runs
  state @7 :Text;           # idle | starting | running | stopping | waiting | deleted
  uptimeMs @8 :Float64;     # since it became ready; 0 unless running
  restarts @9 :UInt32;      # restarts its supervisor made of it
  incarnation @10 :UInt32;  # 1 for the first start
  lastExit @11 :Text;       # the last exit reason, readable ("killed by SIGKILL (9)"); "" if none
  lastExitKind @12 :Text;   # normal | shutdown | exception | signal | exit_code | ...
  mailboxBytes @13 :UInt64; # bytes queued in the rings into it (its mailbox depth)
  actors @14 :List(Text);   # registered actor names
}

struct TreeStatus {
  name @0 :Text;            # the tree's name
  pid @1 :Int32;            # the supervisor's pid
  uptimeMs @2 :Float64;
  phase @3 :Text;           # starting | running | shutting_down | stopped
  strategy @4 :Text;        # the root's strategy
  attachSocket @5 :Text;    # where clients attach for call/cast ("" = none)
  children @6 :List(ChildStatus);   # depth-first, in start order
}

struct ChildStats {
  path @0 :Text;
  messagesIn @1 :UInt64;    # messages senders pushed into its rings
  messagesOut @2 :UInt64;   # messages it pushed to others (live channels)
  blocked @3 :UInt64;       # sends to it that had to wait (overflow = block)
  failed @4 :UInt64;        # sends to it refused because it was full (overflow = fail)
  dropped @5 :UInt64;       # sends to it dropped because it was full (overflow = drop)
  ringBytes @6 :UInt64;     # bytes queued now in its inbound rings
  ringCapacity @7 :UInt64;  # total capacity of its inbound rings
  restarts @8 :UInt32;
  exits @9 :List(ExitCount);  # exits by reason kind, over the tree's life
}

struct ExitCount {
  reason @0 :Text;
  count @1 :UInt64;
}

# One supervisor event, as written with --events (the same JSON object in `json`).
struct Event {
  name @0 :Text;        # spawned | ready | exited | restart_scheduled | escalate | stopping | ...
  child @1 :Text;       # the child's path, "" for tree-wide events
  tMs @2 :Float64;      # supervisor uptime
  json @3 :Text;        # the whole event: reason, delay_ms, pid, ...
}

# Implemented by the client; the supervisor streams events into it.  When a
# subscriber does not keep up, events are dropped (not queued without bound)
# and a `dropped` event with the count follows.
interface EventSink {
  event @0 (event :Event) -> stream;
  sync @1 () -> ();   # answered after every event before it: the supervisor's
                      # last call before it closes the connection at exit
}

# Dropping it (or the connection) ends the subscription.
interface Subscription {}

enum ChildOp {
  start @0;       # start a stopped child (OTP restart_child)
  stop @1;        # stop it and keep it stopped (not restarted) until `start`
  restart @2;     # stop it if running, then start it (not counted as a crash)
  terminate @3;   # OTP terminate_child: stop; a dynamic child is removed for good
  delete @4;      # OTP delete_child: remove the spec of a stopped child
}

interface Control {
  status @0 () -> (outcome :Outcome, tree :TreeStatus);
  stats @1 () -> (outcome :Outcome, children :List(ChildStats));
  metrics @2 () -> (text :Text);   # Prometheus text exposition format 0.0.4
  childOp @3 (op :ChildOp, child :Text, timeoutMs :UInt32) -> (outcome :Outcome);
  startChild @4 (supervisor :Text, timeoutMs :UInt32) -> (outcome :Outcome, child :Text);
  kill @5 (child :Text, signal :Int32) -> (outcome :Outcome, pid :Int32);
  subscribe @6 (sink :EventSink) -> (subscription :Subscription);
  shutdown @7 () -> (outcome :Outcome);   # answers at once; the tree then stops
}
