#include "worker/client.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

#include "ipc/packet.hpp"
#include "worker/node.hpp"

namespace bulkhead::worker {

std::unique_ptr<Client> Client::connect(const std::string& socket_path,
                                        std::chrono::milliseconds timeout) {
  sockaddr_un addr{};
  if (socket_path.size() >= sizeof(addr.sun_path)) {
    throw std::runtime_error("socket path too long: " + socket_path);
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  ipc::UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd) throw std::runtime_error("socket(): " + std::string(std::strerror(errno)));
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    throw std::runtime_error("cannot attach to " + socket_path + ": " + std::strerror(errno) +
                             " (is the supervisor running?)");
  }
  timeval tv{static_cast<time_t>(timeout.count() / 1000),
             static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  // The handover: our mailbox segment, then the bell board.
  ipc::UniqueFd mailbox_fd, board_fd;
  std::byte buf[64];
  std::size_t len = 0;
  if (ipc::recv_packet_with_fd(fd.get(), buf, len, mailbox_fd) != ipc::RecvStatus::ok ||
      !mailbox_fd ||
      ipc::recv_packet_with_fd(fd.get(), buf, len, board_fd) != ipc::RecvStatus::ok || !board_fd) {
    throw std::runtime_error("no handover from the supervisor at " + socket_path);
  }
  timeval none{};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
  auto mailbox = ipc::Segment::adopt_fd(std::move(mailbox_fd), "client-mailbox");
  auto board = ipc::Segment::adopt_fd(std::move(board_fd), "bell-board");
  int raw = fd.get();
  auto node = std::make_unique<Node>(std::move(mailbox), std::move(board), raw, nullptr);
  if (!node->wait_for_start(ipc::Clock::now() + timeout)) {
    throw std::runtime_error("the supervisor at " + socket_path + " did not start this client");
  }
  fd.release();
  return std::unique_ptr<Client>(new Client(std::move(node), raw));
}

Client::Client(std::unique_ptr<Node> node, int fd) : node_(std::move(node)), fd_(fd) {}

Client::~Client() {
  node_.reset();
  ::close(fd_);
}

CallResult Client::call(const Target& to, const PayloadFn& request,
                        std::chrono::milliseconds timeout) {
  node_->dispatch_available();
  return node_->call(kNoActor, to, request, timeout);
}

SendStatus Client::cast(const Target& to, const PayloadFn& request) {
  node_->dispatch_available();
  return node_->send(kNoActor, to, schema::Kind::CAST, request);
}

SendStatus Client::send(const Target& to, const PayloadFn& msg) {
  node_->dispatch_available();
  return node_->send(kNoActor, to, schema::Kind::INFO, msg);
}

std::optional<ActorRef> Client::whereis(std::string_view name) {
  node_->dispatch_available();
  return node_->whereis(name);
}

void Client::poll() {
  node_->dispatch_available();
}

std::uint32_t Client::slot() const {
  return node_->slot();
}

std::string Client::start_child(const std::string& supervisor_path,
                                std::chrono::milliseconds timeout) {
  return node_->request_child(true, supervisor_path, timeout);
}

void Client::terminate_child(const std::string& child_path, std::chrono::milliseconds timeout) {
  (void)node_->request_child(false, child_path, timeout);
}

}  // namespace bulkhead::worker
