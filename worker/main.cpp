// bulkhead-worker: the stock worker binary, hosting the built-in actors.
#include "worker/actor.hpp"
#include "worker/builtin_actors.hpp"

int main(int argc, char** argv) {
  bulkhead::worker::ActorRegistry registry;
  bulkhead::worker::register_builtin_actors(registry);
  return bulkhead::worker::run(argc, argv, registry);
}
