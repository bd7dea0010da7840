#include "worker/builtin_actors.hpp"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>

#include "schema/value_util.hpp"

namespace bulkhead::worker {
namespace {

using schema::map_get_int;
using schema::map_get_text;

class Echo : public Actor {
 public:
  void handle_info(schema::Value::Reader msg) override {
    std::printf("[%s] info %s\n", name().c_str(),
                msg.which() == schema::Value::SYMBOL ? msg.getSymbol().cStr() : "(value)");
    std::fflush(stdout);
  }
};

class Counter : public Actor {
 public:
  void handle_info(schema::Value::Reader) override { ++count_; }
  void terminate(std::string_view reason) override {
    std::printf("[%s] terminate (%.*s) after %lld infos\n", name().c_str(),
                static_cast<int>(reason.size()), reason.data(), count_);
    std::fflush(stdout);
  }

 private:
  long long count_ = 0;
};

class Crasher : public Actor {
 public:
  void init(schema::Value::Reader args) override {
    mode_ = std::string(map_get_text(args, "mode").value_or("segv"));
    code_ = static_cast<int>(map_get_int(args, "code").value_or(3));
    if (map_get_text(args, "on").value_or("usr1") == "init") crash();
  }
  void handle_info(schema::Value::Reader msg) override {
    if (schema::is_symbol(msg, "usr1")) crash();
  }

 private:
  void crash() {
    if (mode_ == "segv") {
      volatile int* volatile p = nullptr;
      *p = 42;  // a real null dereference: SIGSEGV
    } else if (mode_ == "throw") {
      throw std::runtime_error("crasher: failure requested");
    } else if (mode_ == "abort") {
      std::abort();
    } else if (mode_ == "exit") {
      std::fflush(nullptr);
      ::_exit(code_);
    }
    throw std::invalid_argument("crasher: unknown mode '" + mode_ + "'");
  }
  std::string mode_;
  int code_ = 3;
};

class Stubborn : public Actor {
 public:
  void init(schema::Value::Reader args) override {
    terminate_ms_ = map_get_int(args, "terminate_ms").value_or(-1);
    ::signal(SIGTERM, SIG_IGN);
  }
  void terminate(std::string_view) override {
    if (terminate_ms_ < 0) {
      for (;;) ::pause();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(terminate_ms_));
  }

 private:
  long long terminate_ms_ = -1;
};

class Slow : public Actor {
 public:
  void init(schema::Value::Reader args) override {
    std::this_thread::sleep_for(
        std::chrono::milliseconds(map_get_int(args, "init_ms").value_or(0)));
  }
};

class Chatty : public Actor {
 public:
  void init(schema::Value::Reader args) override {
    auto n = map_get_int(args, "lines").value_or(10);
    for (long long i = 0; i < n; ++i) std::printf("chatty line %lld\n", i);
    std::fflush(stdout);
  }
};

}  // namespace

void register_builtin_actors(ActorRegistry& registry) {
  registry.add<Echo>("echo");
  registry.add<Counter>("counter");
  registry.add<Crasher>("crasher");
  registry.add<Stubborn>("stubborn");
  registry.add<Slow>("slow");
  registry.add<Chatty>("chatty");
}

}  // namespace bulkhead::worker
