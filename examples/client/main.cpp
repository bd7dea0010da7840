// examples/client: a plain program outside the tree calling actors by name.
//
//   bulkhead-example-client SOCKET NAME [N]
//       calls actor NAME with the int N (default 42) and prints the reply
//   bulkhead-example-client SOCKET --start-child SUPERVISOR
//       starts a dynamic child under a simple_one_for_one supervisor
//       (e.g. root/jobs) and prints its path once it is ready
//   bulkhead-example-client SOCKET --terminate-child CHILD
//       stops and removes a dynamic child (e.g. root/jobs/2)
//   bulkhead-example-client SOCKET --relay RELAY TARGET [N]
//       asks the `relay` actor RELAY to call TARGET with N: a call from one
//       worker to another, answered back through the relay
// SOCKET is the supervisor's attach socket (logged at its start-up).
// Exit codes: 0 ok, 1 the request failed (the reason is printed), 2 usage.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "worker/client.hpp"

using namespace bulkhead;
using namespace std::chrono_literals;

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s SOCKET NAME [N]\n", argv[0]);
    return 2;
  }
  std::string name = argv[2];
  long long n = argc > 3 ? std::atoll(argv[3]) : 42;
  try {
    auto client = worker::Client::connect(argv[1]);
    if (name == "--relay") {
      if (argc < 5) {
        std::fprintf(stderr, "usage: %s SOCKET --relay RELAY TARGET [N]\n", argv[0]);
        return 2;
      }
      std::string relay = argv[3], target = argv[4];
      long long x = argc > 5 ? std::atoll(argv[5]) : 42;
      auto r = client->call(relay, worker::value_payload([&](schema::Value::Builder v) {
                              auto t = v.initTuple(2);
                              t[0].setText(target);
                              t[1].setInt(x);
                            }),
                            5s);
      if (!r.ok()) {
        std::fprintf(stderr, "call %s: %s: %s\n", relay.c_str(), worker::to_string(r.error()),
                     r.error_text().c_str());
        return 1;
      }
      std::printf("%s replied %lld through %s\n", target.c_str(),
                  static_cast<long long>(r.value().getInt()), relay.c_str());
      return 0;
    }
    if (name == "--start-child" || name == "--terminate-child") {
      if (argc != 4) {
        std::fprintf(stderr, "usage: %s SOCKET %s PATH\n", argv[0], name.c_str());
        return 2;
      }
      if (name == "--start-child") {
        std::printf("%s\n", client->start_child(argv[3]).c_str());
      } else {
        client->terminate_child(argv[3]);
        std::printf("terminated %s\n", argv[3]);
      }
      return 0;
    }
    auto r = client->call(
        name, worker::value_payload([&](schema::Value::Builder v) { v.setInt(n); }), 2s);
    if (!r.ok()) {
      std::fprintf(stderr, "call %s: %s: %s\n", name.c_str(), worker::to_string(r.error()),
                   r.error_text().c_str());
      return 1;
    }
    auto v = r.value();
    if (v.which() == schema::Value::INT) {
      std::printf("%s replied %lld\n", name.c_str(), static_cast<long long>(v.getInt()));
    } else {
      std::printf("%s replied (a non-int value)\n", name.c_str());
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
