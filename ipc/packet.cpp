#include "ipc/packet.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

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

bool send_packet_with_fd(int fd, std::span<const std::byte> bytes, int pass_fd) {
  msghdr msg{};
  iovec iov{const_cast<std::byte*>(bytes.data()), bytes.size()};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
  ssize_t r = retry_eintr([&] { return ::sendmsg(fd, &msg, MSG_NOSIGNAL); });
  if (r < 0) {
    if (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN) return false;
    throw_sys("sendmsg with fd on control socket");
  }
  return true;
}

RecvStatus recv_packet(int fd, std::span<std::byte> buf, std::size_t& len) {
  UniqueFd ignored;
  return recv_packet_with_fd(fd, buf, len, ignored);
}

RecvStatus recv_packet_with_fd(int fd, std::span<std::byte> buf, std::size_t& len,
                               UniqueFd& passed) {
  msghdr msg{};
  iovec iov{buf.data(), buf.size()};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(4 * sizeof(int))] = {};
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t r = retry_eintr([&] { return ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC); });
  if (r >= 0) {
    // Take the first passed fd; close any others (a peer may send junk).
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      std::size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < n; ++i) {
        int got;
        std::memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        if (!passed) {
          passed = UniqueFd(got);
        } else {
          ::close(got);
        }
      }
    }
  }
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
