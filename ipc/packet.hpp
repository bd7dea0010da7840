// ipc/packet.hpp: one message per packet over a SOCK_SEQPACKET socket.
//
// What it is for: the worker -> supervisor control channel.  A seqpacket
// socketpair keeps message boundaries, shows EOF when the peer dies, and can
// be watched by the supervisor's epoll loop.  Bytes only; the codec is the
// caller's.
#pragma once

#include <cstddef>
#include <span>
#include <utility>

#include "ipc/sys.hpp"

namespace bulkhead::ipc {

inline constexpr std::size_t kMaxPacket = 64 * 1024;

// A CLOEXEC socketpair(AF_UNIX, SOCK_SEQPACKET).
std::pair<UniqueFd, UniqueFd> seqpacket_pair();

// Sends one packet; false if the peer is gone (EPIPE/ECONNRESET), throws
// SysError on other failures.  Never raises SIGPIPE.
bool send_packet(int fd, std::span<const std::byte> bytes);

// Sends one packet carrying `pass_fd` (SCM_RIGHTS); same results as send_packet.
bool send_packet_with_fd(int fd, std::span<const std::byte> bytes, int pass_fd);

enum class RecvStatus { ok, would_block, eof, truncated };
// Receives one packet into `buf` (non-blocking if the fd is).  `truncated`
// means the packet was longer than `buf` (the rest is discarded).
RecvStatus recv_packet(int fd, std::span<std::byte> buf, std::size_t& len);
// Like recv_packet, and takes ownership of one passed fd (if any) in `passed`.
// Extra fds beyond the first are closed.
RecvStatus recv_packet_with_fd(int fd, std::span<std::byte> buf, std::size_t& len,
                               UniqueFd& passed);

}  // namespace bulkhead::ipc
