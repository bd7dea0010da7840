// worker/client.hpp: a plain C++ program talking to the actors of a running tree.
//
// What it is for: tests, examples and tools that are not part of the tree
// attach to a running supervisor through its attach socket and call, cast or
// send to actors by name.  A client gets a slot like a worker (a mailbox,
// a doorbell, channels) but hosts no actors and is not supervised; when it
// goes away (even by kill -9) the supervisor notices the closed socket and
// tells the workers (peerDown).
//
// Usage:
//   auto client = bulkhead::worker::Client::connect("/tmp/bulkhead-0/shop.sock");
//   auto r = client->call("counter", value_payload([](auto v) { v.setSymbol("get"); }), 1s);
//   if (r.ok()) std::cout << r.value().getInt();
//
// Threading: one thread at a time per Client.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "worker/actor.hpp"

namespace bulkhead::worker {

class Node;

class Client {
 public:
  // Connects and waits (up to `timeout`) for the supervisor's handover.
  // Throws std::runtime_error naming the socket on failure.
  static std::unique_ptr<Client> connect(
      const std::string& socket_path, std::chrono::milliseconds timeout = std::chrono::seconds(5));
  ~Client();

  CallResult call(const Target& to, const PayloadFn& request, std::chrono::milliseconds timeout);
  SendStatus cast(const Target& to, const PayloadFn& request);
  SendStatus send(const Target& to, const PayloadFn& msg);
  std::optional<ActorRef> whereis(std::string_view name);
  // Starts a dynamic child under the simple_one_for_one supervisor at
  // `supervisor_path` (e.g. "root/jobs"); returns its path once it is ready.
  // Throws std::runtime_error with the reason (not such a supervisor, the
  // child failed to start, ...).
  std::string start_child(const std::string& supervisor_path,
                          std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Stops and removes a dynamic child (never restarted); throws likewise.
  void terminate_child(const std::string& child_path,
                       std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Processes pending updates from the supervisor (peers up/down) without blocking.
  void poll();
  [[nodiscard]] std::uint32_t slot() const;

 private:
  explicit Client(std::unique_ptr<Node> node, int fd);
  std::unique_ptr<Node> node_;
  int fd_;
};

}  // namespace bulkhead::worker
