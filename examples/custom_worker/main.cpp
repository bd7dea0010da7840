// examples/custom_worker: your own C++ program as a Bulkhead worker.
//
// Link libbulkhead-worker, register your actor types, call run().  The tree
// file names this binary (`binary = "bulkhead-example-worker"`) and the actor
// types it registers.  `bulkhead-example-worker --list-actors` prints them;
// the supervisor uses that to validate a tree before starting anything.
#include <cstdio>
#include <string>

#include "schema/value_util.hpp"
#include "worker/actor.hpp"

namespace {

// Greets on every info; its greeting comes from the tree file's args.
class Greeter : public bulkhead::worker::Actor {
 public:
  void init(bulkhead::schema::Value::Reader args) override {
    greeting_ = std::string(bulkhead::schema::map_get_text(args, "greeting").value_or("hello"));
    std::printf("[%s] ready to say '%s'\n", name().c_str(), greeting_.c_str());
    std::fflush(stdout);
  }
  void handle_info(const bulkhead::worker::Message&) override {
    std::printf("[%s] %s #%d\n", name().c_str(), greeting_.c_str(), ++count_);
    std::fflush(stdout);
  }
  void terminate(std::string_view reason) override {
    std::printf("[%s] goodbye after %d greetings (%.*s)\n", name().c_str(), count_,
                static_cast<int>(reason.size()), reason.data());
    std::fflush(stdout);
  }

 private:
  std::string greeting_;
  int count_ = 0;
};

// Refuses to start unless configured: shows start failures with a reason.
class Picky : public bulkhead::worker::Actor {
 public:
  void init(bulkhead::schema::Value::Reader args) override {
    if (!bulkhead::schema::map_get_int(args, "port")) {
      throw std::invalid_argument("picky: args.port is required");
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  bulkhead::worker::ActorRegistry registry;
  registry.add<Greeter>("greeter");
  registry.add<Picky>("picky");
  return bulkhead::worker::run(argc, argv, registry);
}
