//! Messages on a vhost-user unix stream socket, with file descriptors as SCM_RIGHTS.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use super::message::{Header, HEADER_LEN, MAX_FDS};
use super::VhostUserError;

/// A received message: header, payload and the descriptors that came with it (closed on drop).
#[derive(Debug)]
pub struct Message {
    pub header: Header,
    pub payload: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// One end of a vhost-user connection.
#[derive(Debug)]
pub struct Channel {
    stream: UnixStream,
}

/// Room for [`MAX_FDS`] descriptors in one control message (CMSG_SPACE of 8 ints, rounded up
/// generously to the alignment of `cmsghdr`).
const CMSG_BUF: usize = 128;

impl Channel {
    pub fn new(stream: UnixStream) -> Self {
        Self { stream }
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Receives one message; `Ok(None)` when the peer closed the connection between messages.
    pub fn recv(&mut self) -> Result<Option<Message>, VhostUserError> {
        let mut hdr = [0u8; HEADER_LEN];
        let (n, fds) = recv_with_fds(self.stream.as_raw_fd(), &mut hdr)?;
        if n == 0 {
            return Ok(None);
        }
        if n < HEADER_LEN {
            self.stream
                .read_exact(&mut hdr[n..])
                .map_err(VhostUserError::Io)?;
        }
        let header = Header::decode(&hdr)?;
        let mut payload = vec![0u8; header.size as usize];
        self.stream
            .read_exact(&mut payload)
            .map_err(VhostUserError::Io)?;
        Ok(Some(Message {
            header,
            payload,
            fds,
        }))
    }

    /// Sends a message (header + payload in one `sendmsg`, with `fds` attached).
    pub fn send(
        &mut self,
        header: Header,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), VhostUserError> {
        let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
        buf.extend_from_slice(&header.encode());
        buf.extend_from_slice(payload);
        if fds.is_empty() {
            return self.stream.write_all(&buf).map_err(VhostUserError::Io);
        }
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let sent = send_with_fds(self.stream.as_raw_fd(), &buf, &raw)?;
        if sent < buf.len() {
            self.stream
                .write_all(&buf[sent..])
                .map_err(VhostUserError::Io)?;
        }
        Ok(())
    }
}

/// `recvmsg` into `buf`, collecting SCM_RIGHTS descriptors.
fn recv_with_fds(fd: RawFd, buf: &mut [u8]) -> Result<(usize, Vec<OwnedFd>), VhostUserError> {
    let mut cmsg = [0u64; CMSG_BUF / 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid value (null name, no iovecs).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cmsg) as _;
    let n = loop {
        // SAFETY: `msg` points at `iov` (covering `buf`) and `cmsg`, all live for the call.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(VhostUserError::Io(e));
        }
    };
    let mut fds = Vec::new();
    crate::fdpass::take_fds(&msg, &mut fds);
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(VhostUserError::TooManyFds(MAX_FDS + 1));
    }
    if fds.len() > MAX_FDS {
        return Err(VhostUserError::TooManyFds(fds.len()));
    }
    Ok((n, fds))
}

/// `sendmsg` of `buf` with `fds` as SCM_RIGHTS; returns the bytes sent.
fn send_with_fds(fd: RawFd, buf: &[u8], fds: &[RawFd]) -> Result<usize, VhostUserError> {
    if fds.len() > MAX_FDS {
        return Err(VhostUserError::TooManyFds(fds.len()));
    }
    let mut cmsg = [0u64; CMSG_BUF / 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let fd_bytes = std::mem::size_of_val(fds) as u32;
    // SAFETY: an all-zero msghdr is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure size computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(fd_bytes) } as _;
    // SAFETY: the control buffer (128 bytes) holds CMSG_SPACE(8 * 4) = 48 bytes; the header and
    // data written below stay inside it.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(fd_bytes) as _;
        std::ptr::copy_nonoverlapping(
            fds.as_ptr().cast::<u8>(),
            libc::CMSG_DATA(c),
            fd_bytes as usize,
        );
    }
    loop {
        // SAFETY: `msg` points at `iov` (covering `buf`) and the control buffer, live for the call.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(VhostUserError::Io(e));
        }
    }
}
