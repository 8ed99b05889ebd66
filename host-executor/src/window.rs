//! The unix transport's shared-memory data window.
//!
//! A client creates a memfd, maps it, and hands the fd to the executor with `AttachWindow`
//! (SCM_RIGHTS on the same `sendmsg` as the frame). Bulk transfers then name ranges of it
//! (`Source::Shm` / `Sink::Shm`) instead of carrying their bytes through the socket: one copy on
//! each side instead of an encode, two kernel copies and a decode. The client may write the
//! mapping at any time, so the executor only ever copies in and out of it with raw copies and
//! never forms a reference to its bytes.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use virtio_cuda::protocol::{DataAccess, Sink, Source, Status};

/// Largest window a client may attach.
pub const MAX_WINDOW: u64 = 1 << 30;

/// A client's window, mapped shared.
pub struct ShmWindow {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; all accesses are raw copies
// made while a `&ShmWindow` is held, and the connection that owns it serves one request at a time.
unsafe impl Send for ShmWindow {}
// SAFETY: as above; concurrent raw copies from shared memory are what the memory is for.
unsafe impl Sync for ShmWindow {}

impl ShmWindow {
    /// Maps `len` bytes of `fd` (the client's memfd).
    pub fn map(fd: &OwnedFd, len: u64) -> io::Result<Self> {
        if len == 0 || len > MAX_WINDOW {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "window size"));
        }
        // The file must really be that large, or touching the mapping would fault.
        // SAFETY: fstat fills the zeroed struct for a valid fd.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and out-pointer.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if (st.st_size as u64) < len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "window larger than its file",
            ));
        }
        let len = len as usize;
        // SAFETY: a fresh shared mapping of a file we hold; checked for MAP_FAILED below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }

    fn range(&self, offset: u64, len: u64) -> Result<(usize, usize), Status> {
        let end = offset.checked_add(len).ok_or(Status::ERROR_INVALID_VALUE)?;
        if end > self.len as u64 {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        Ok((offset as usize, len as usize))
    }
}

impl Drop for ShmWindow {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `map`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

impl DataAccess for ShmWindow {
    fn read_source(&self, src: &Source, out: &mut Vec<u8>) -> Result<(), Status> {
        let Source::Shm { offset, len } = src else {
            return Err(Status::ERROR_INVALID_VALUE);
        };
        let (o, n) = self.range(*offset, *len)?;
        let start = out.len();
        out.resize(start + n, 0);
        // SAFETY: [o, o+n) is inside the mapping (checked); `out` has room for n bytes; the
        // regions cannot overlap (the mapping is not Rust-owned memory).
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(o), out.as_mut_ptr().add(start), n) };
        Ok(())
    }

    fn write_sink(&self, sink: &Sink, data: &[u8]) -> Result<(), Status> {
        let Sink::Shm { offset, len } = sink else {
            return Err(Status::ERROR_INVALID_VALUE);
        };
        if data.len() as u64 > *len {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        let (o, n) = self.range(*offset, data.len() as u64)?;
        // SAFETY: [o, o+n) is inside the mapping (checked) and `data` holds n bytes.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(o), n) };
        Ok(())
    }
}

/// Reads exactly `buf.len()` bytes, collecting file descriptors passed with them (SCM_RIGHTS).
pub fn recv_exact_with_fds(
    stream: &UnixStream,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<()> {
    use std::os::fd::FromRawFd;
    let mut done = 0;
    while done < buf.len() {
        let mut iov = libc::iovec {
            iov_base: buf[done..].as_mut_ptr().cast(),
            iov_len: buf.len() - done,
        };
        // Room for 4 descriptors.
        let mut cmsg = [0u64; 8];
        // SAFETY: a zeroed msghdr is valid; its pointers are set to live buffers below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cmsg) as _;
        // SAFETY: recvmsg writes into the iovec and control buffers described by `msg`.
        let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        // SAFETY: walking the control messages recvmsg returned, with the libc macros.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c).cast::<RawFd>();
                    let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                        / std::mem::size_of::<RawFd>();
                    for i in 0..count {
                        fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        done += n as usize;
    }
    Ok(())
}
