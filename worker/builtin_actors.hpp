// worker/builtin_actors.hpp: the actor types of the stock bulkhead-worker.
//
// Small, real actors for examples and fault tests:
//   echo      logs every info it gets
//   counter   counts infos; logs the count on terminate
//   crasher   on info `usr1` (SIGUSR1) fails as args.mode says:
//             "segv" (null dereference), "throw" (std::runtime_error),
//             "abort", "exit" (args.code); args.on = "init" fails in init
//   stubborn  ignores SIGTERM and its terminate() blocks for args.terminate_ms
//             (default: forever): for shutdown-timeout tests
//   slow      init sleeps args.init_ms: for ready-timeout tests
//   chatty    prints args.lines lines to stdout in init: for log tests
#pragma once

#include "worker/actor.hpp"

namespace bulkhead::worker {

void register_builtin_actors(ActorRegistry& registry);

}  // namespace bulkhead::worker
