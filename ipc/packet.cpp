#include "ipc/packet.hpp"

#include <sys/socket.h>

namespace bulkhead::ipc {

std::pair<UniqueFd, UniqueFd> seqpacket_pair() {
  int sv[2];
  check_sys(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), "socketpair");
  return {UniqueFd(sv[0]), UniqueFd(sv[1])};
}

bool send_packet(int fd, std::span<const std::byte> bytes) {
  ssize_t r = retry_eintr([&] { return ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL); });
  if (r < 0) {
    if (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN) return false;
    throw_sys("send on control socket");
  }
  return true;
}

RecvStatus recv_packet(int fd, std::span<std::byte> buf, std::size_t& len) {
  msghdr msg{};
  iovec iov{buf.data(), buf.size()};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  ssize_t r = retry_eintr([&] { return ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC); });
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return RecvStatus::would_block;
    if (errno == ECONNRESET) return RecvStatus::eof;
    throw_sys("recv on control socket");
  }
  if (r == 0) return RecvStatus::eof;
  len = static_cast<std::size_t>(r);
  return (msg.msg_flags & MSG_TRUNC) ? RecvStatus::truncated : RecvStatus::ok;
}

}  // namespace bulkhead::ipc
