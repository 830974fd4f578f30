// SPDX-License-Identifier: GPL-2.0

//! Peers: granting another file access to this file's registrations.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use crate::sys;

/// A peer handle, what [`crate::Device::attach_peer`] returns: nonzero and
/// never reused by the file that attached it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer(pub u32);

/// Sends the descriptor `fd` (a memreg file, to grant access to it) with
/// one byte over the unix socket `sock` (`SCM_RIGHTS`).
pub fn send_fd(sock: &UnixStream, fd: BorrowedFd<'_>) -> io::Result<()> {
    sys::send_fd(sock, fd)
}

/// Receives a descriptor [`send_fd`] sent over `sock`; it is close-on-exec.
/// `UnexpectedEof` when the other end closed, `EPROTO` when a byte came
/// without a descriptor.
pub fn recv_fd(sock: &UnixStream) -> io::Result<OwnedFd> {
    sys::recv_fd(sock)
}
