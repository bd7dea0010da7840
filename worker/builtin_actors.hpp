// worker/builtin_actors.hpp: the actor types of the stock bulkhead-worker.
//
// Small, real actors for examples, fault tests and benchmarks.  Requests are
// Values; "op" below is a symbol, "(op, x)" a tuple.
//   echo      call X -> X (any Value, or a typed payload); cast/info: logs it
//   counter   cast inc | (add, n); call get -> count; terminate logs the count
//   crasher   on info `usr1` (SIGUSR1) or call `crash` fails as args.mode says:
//             "segv" (null dereference), "throw" (std::runtime_error),
//             "abort", "exit" (args.code); args.on = "init" fails in init;
//             args.ballast_mb holds that much touched memory (a big worker)
//   stubborn  ignores SIGTERM and its terminate() blocks for args.terminate_ms
//             (default: forever): for shutdown-timeout tests
//   slow      init sleeps args.init_ms: for ready-timeout tests
//   chatty    prints args.lines lines to stdout in init: for log tests
//   relay     call (to, X) -> calls actor `to` with X and answers its reply
//             (a call made from inside a handler)
//   deferred  call hold -> no answer yet; cast release -> answers every held
//             call with `released`; call get -> number of calls held so far
//   pinger    call (ping, to, n, gap_us) -> n calls to `to` (each after a
//             busy gap of gap_us), answers (median_ns, p99_ns);
//             call (flood, to, n) -> n casts to `to` then one call, answers
//             elapsed ns; (monitor, to) -> monitors `to`, answers ok;
//             call downs -> the DOWN reasons received, as a list of text
//   linker    call (link, name) -> links to that actor (answers the send
//             status); call (trap, 0|1) -> trap_exit; call exits -> the exit
//             reasons it received while trapping, as text
//   sleeper   cast (sleep, ms) -> its handler blocks that long (its mailbox
//             fills up); any other cast counts; call -> casts handled
// Test actors (tests/integration/messaging_test.cpp):
//   recorder  cast or info int -> appends it; a DOWN -> appends -1;
//             cast (monitor, name) -> monitors `name`;
//             cast (nest, to, ms) -> calls `to` with
//             (sleep, ms) from inside the handler (stays busy meanwhile);
//             call (sleep, ms) -> sleeps, answers ok; any other call -> the
//             list of ints received so far, in arrival order
//   feeder    call (feed, to, from, n) -> casts the ints from..from+n-1 to
//             `to`, answers n; (info, to, from, n) -> the same as infos
//   garbler   call (garble, to, mode) -> casts `inc` to `to` (opening the
//             channel), then writes raw frames into that channel by mapping
//             it a second time: mode "junk" = frames that fail message
//             validation (bad segment table, out-of-bounds root pointer,
//             0xff bytes, empty, unknown frame kind 7) followed by one valid
//             cast `inc`, answers the frame count; mode "break" = a frame
//             header longer than the ring (a ring protocol violation), answers
//             ok; mode "amplify" = one valid but amplified cast (a 12 KiB
//             value whose aliased pointers read as 6M words: it passes the
//             receiver's check, a second reading exceeds the traversal
//             limit) and one valid cast `inc`, answers 2.  Afterwards this
//             incarnation must not send to `to` again.
#pragma once

#include "worker/actor.hpp"

namespace bulkhead::worker {

void register_builtin_actors(ActorRegistry& registry);

}  // namespace bulkhead::worker
