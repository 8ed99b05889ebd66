//! The unix-socket transport: frames written and read on one stream socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Mutex;

use super::{Reply, Transport, TransportError};
use crate::protocol::{Reader, ResponseHeader, ResponseKind, HEADER_LEN};

/// Where device `printf` output goes.
pub type OutputSink = Box<dyn Fn(&[u8]) + Send + Sync>;

/// Frames over a connected unix stream socket. Calls from several threads are serialised; a
/// synchronous call holds the socket until its reply arrives, which keeps replies in order.
pub struct UnixTransport {
    stream: Mutex<UnixStream>,
    output: OutputSink,
    /// The shared-memory data window, once attached (`VCUDA_WINDOW=0` disables it).
    window: std::sync::OnceLock<Window>,
}

/// Default data-window size: big enough to stream copies in few calls, and small enough that
/// the executor's per-call staging buffer stays below glibc's mmap threshold (32 MiB), so it is
/// reused instead of page-faulted in anew on every call.
pub const DEFAULT_WINDOW: usize = 16 << 20;

/// The client's side of the data window: a memfd mapped shared.
struct Window {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by the transport and only accessed with raw copies while the
// transport's stream lock is held, so one call uses it at a time.
unsafe impl Send for Window {}
// SAFETY: as above.
unsafe impl Sync for Window {}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `create_window`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Creates and maps a memfd of `len` bytes; returns it with its fd.
fn create_window(len: usize) -> std::io::Result<(Window, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create with a NUL-terminated name; checked below.
    let fd = unsafe { libc::memfd_create(c"vcuda-window".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own from here on.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    use std::os::fd::AsRawFd;
    // SAFETY: valid fd; sets the file size.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh shared mapping of our memfd; checked for MAP_FAILED.
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
        return Err(std::io::Error::last_os_error());
    }
    Ok((
        Window {
            ptr: ptr.cast(),
            len,
        },
        fd,
    ))
}

/// Writes `frame` with `fd` attached (SCM_RIGHTS).
fn send_with_fd(stream: &UnixStream, frame: &[u8], fd: std::os::fd::RawFd) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut iov = libc::iovec {
        iov_base: frame.as_ptr() as *mut libc::c_void,
        iov_len: frame.len(),
    };
    let mut cmsg = [0u64; 4];
    // SAFETY: a zeroed msghdr is valid; its pointers are set to live buffers below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure size computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) } as _;
    // SAFETY: the control buffer has room for one descriptor (CMSG_SPACE above, 32 bytes given).
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), fd);
    }
    let mut sent = 0usize;
    while sent < frame.len() {
        // SAFETY: sendmsg reads the iovec and control buffers described by `msg`.
        let n = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        sent += n as usize;
        // The descriptor went with the first bytes; send the rest plainly.
        if sent < frame.len() {
            let mut s = stream;
            return s.write_all(&frame[sent..]);
        }
    }
    Ok(())
}

impl UnixTransport {
    /// Connects to `path`; device output goes to this process's stdout.
    pub fn connect(path: &Path) -> Result<Self, TransportError> {
        let stream = UnixStream::connect(path)?;
        Ok(Self::from_stream(stream))
    }

    /// Wraps a connected stream.
    pub fn from_stream(stream: UnixStream) -> Self {
        Self {
            stream: Mutex::new(stream),
            window: std::sync::OnceLock::new(),
            output: Box::new(|bytes| {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(bytes);
                let _ = out.flush();
            }),
        }
    }

    /// Sends device output somewhere else (tests capture it).
    pub fn with_output(mut self, sink: OutputSink) -> Self {
        self.output = sink;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, UnixStream> {
        // A panic while holding the lock leaves the stream usable: frames are written whole.
        self.stream.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Transport for UnixTransport {
    fn send(&self, frame: &[u8]) -> Result<(), TransportError> {
        self.lock().write_all(frame)?;
        Ok(())
    }

    fn call(&self, frame: &[u8], seq: u32) -> Result<Reply, TransportError> {
        let mut s = self.lock();
        s.write_all(frame)?;
        self.read_reply(&mut s, seq)
    }

    fn window_size(&self) -> usize {
        self.window.get().map_or(0, |w| w.len)
    }

    fn call_with_data(
        &self,
        frame: &[u8],
        seq: u32,
        h2d: &[u8],
        d2h: &mut [u8],
    ) -> Result<Option<Reply>, TransportError> {
        let Some(w) = self.window.get() else {
            return Ok(None);
        };
        if h2d.len() > w.len || d2h.len() > w.len {
            return Ok(None);
        }
        // The stream lock also guards the window: one call uses it at a time.
        let mut s = self.lock();
        // SAFETY: `h2d` fits the mapping (checked) and the mapping is not Rust-owned memory.
        unsafe { std::ptr::copy_nonoverlapping(h2d.as_ptr(), w.ptr, h2d.len()) };
        s.write_all(frame)?;
        let reply = self.read_reply(&mut s, seq)?;
        // SAFETY: `d2h` fits the mapping (checked); the executor finished writing it before
        // it replied.
        unsafe { std::ptr::copy_nonoverlapping(w.ptr, d2h.as_mut_ptr(), d2h.len()) };
        Ok(Some(reply))
    }

    fn attach_window(&self, seq: u32) -> Result<bool, TransportError> {
        if self.window.get().is_some() {
            return Ok(true);
        }
        let len = match std::env::var("VCUDA_WINDOW") {
            Ok(v) => v.trim().parse::<usize>().unwrap_or(DEFAULT_WINDOW),
            Err(_) => DEFAULT_WINDOW,
        };
        if len == 0 {
            return Ok(false);
        }
        let (window, fd) = create_window(len)?;
        let mut frame = Vec::new();
        crate::protocol::encode_call(
            seq,
            &crate::protocol::AttachWindow { size: len as u64 },
            &mut frame,
        );
        let mut s = self.lock();
        use std::os::fd::AsRawFd;
        send_with_fd(&s, &frame, fd.as_raw_fd())?;
        let reply = self.read_reply(&mut s, seq)?;
        drop(s);
        if !reply.status.is_ok() {
            return Ok(false);
        }
        let _ = self.window.set(window);
        Ok(true)
    }
}

impl UnixTransport {
    /// Reads response frames until the reply to `seq`, passing device output on.
    fn read_reply(&self, s: &mut UnixStream, seq: u32) -> Result<Reply, TransportError> {
        loop {
            let mut hdr = [0u8; HEADER_LEN];
            read_exact_or_closed(s, &mut hdr)?;
            let h = ResponseHeader::get(&mut Reader::new(&hdr))?;
            let mut body = vec![0u8; h.body_len as usize];
            read_exact_or_closed(s, &mut body)?;
            match h.kind {
                ResponseKind::Stdout => (self.output)(&body),
                ResponseKind::Reply if h.seq == seq => {
                    return Ok(Reply {
                        status: h.status,
                        body,
                    })
                }
                ResponseKind::Reply => {
                    return Err(TransportError::OutOfOrder {
                        expected: seq,
                        got: h.seq,
                    })
                }
            }
        }
    }
}

fn read_exact_or_closed(s: &mut UnixStream, buf: &mut [u8]) -> Result<(), TransportError> {
    match s.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(TransportError::Closed),
        Err(e) => Err(e.into()),
    }
}
