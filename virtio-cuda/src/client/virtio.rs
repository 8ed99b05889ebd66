//! The virtio transport: frames through the guest driver's `/dev/vcuda0` (docs/PROTOCOL.md §7).
//!
//! Each call is one `VCUDA_IOC_CALL` ioctl; the driver turns it into one descriptor chain. An
//! open file is one session on the device, so every [`VirtioTransport`] opened is a new session;
//! clones share theirs.
//!
//! Bulk data travels in **data windows**: caller buffers whose pages the driver pins and passes
//! as descriptors, so the host reads and writes them in place. A request names bytes in its
//! windows with `Source::Shm { offset, len }` (H2D window) and `Sink::Shm { offset, len }` (D2H
//! window), offsets relative to the window's start:
//!
//! ```no_run
//! # use virtio_cuda::client::virtio::VirtioTransport;
//! # use virtio_cuda::protocol::{self as p, Source};
//! # fn demo(t: &VirtioTransport, ctx: u64, dptr: u64, data: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
//! let mut frame = Vec::new();
//! let copy = p::MemcpyHtoD { ctx, stream: 0, dst: dptr, src: Source::Shm { offset: 0, len: data.len() as u64 } };
//! p::encode_call(7, &copy, &mut frame);
//! t.send_with_data(&frame, data)?; // returns once the device has read `data`
//! # Ok(()) }
//! ```
//!
//! A window may be at most [`VirtioTransport::MAX_WINDOW`] bytes; larger transfers are split by
//! the caller. (A window of n pages takes up to n descriptors; chains longer than the ring go
//! through an indirect table the driver allocates atomically: 4 MiB windows need 16 KiB.)

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::unix::OutputSink;
use super::{Reply, Transport, TransportError};
use crate::protocol::{
    self as p, Reader, RequestHeader, ResponseHeader, ResponseKind, Sink, FLAG_ASYNC, HEADER_LEN,
};

/// The device node of the first virtio-cuda device.
pub const DEFAULT_DEVICE: &str = "/dev/vcuda0";

/// `VCUDA_CALL_ASYNC`: return once queued.
const CALL_ASYNC: u32 = 1;

/// `struct vcuda_call` (guest/module/vcuda_uapi.h).
#[repr(C)]
#[derive(Debug, Default)]
struct VcudaCall {
    frame: u64,
    frame_len: u32,
    flags: u32,
    data_in: u64,
    data_in_len: u64,
    data_out: u64,
    data_out_len: u64,
    resp: u64,
    resp_cap: u32,
    resp_len: u32,
}

/// `_IOWR('V', 1, struct vcuda_call)`.
const VCUDA_IOC_CALL: u64 =
    (3 << 30) | ((std::mem::size_of::<VcudaCall>() as u64) << 16) | ((b'V' as u64) << 8) | 1;

/// Response buffer for calls whose reply carries no bulk data (device output included).
const RESP_SMALL: usize = 64 << 10;
/// The driver's largest response buffer (one physically contiguous kmalloc).
const RESP_MAX: usize = 4 << 20;

struct Inner {
    file: File,
    path: PathBuf,
    output: OutputSink,
}

/// Frames over `/dev/vcudaN`. Cheap to clone (clones share the open file, i.e. the session).
#[derive(Clone)]
pub struct VirtioTransport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for VirtioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioTransport")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl VirtioTransport {
    /// Largest data window of one call in either direction.
    pub const MAX_WINDOW: usize = 4 << 20;

    /// The device node to use: `$VCUDA_DEVICE`, else [`DEFAULT_DEVICE`].
    pub fn device_path() -> PathBuf {
        std::env::var_os("VCUDA_DEVICE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DEVICE))
    }

    /// True when a virtio-cuda device node exists (the shim then prefers this transport).
    pub fn available() -> bool {
        Self::device_path().exists()
    }

    /// Opens [`Self::device_path`]: a new session.
    pub fn open_default() -> Result<Self, TransportError> {
        Self::open(&Self::device_path())
    }

    /// Opens a device node: a new session. Device output goes to this process's stdout.
    pub fn open(path: &Path) -> Result<Self, TransportError> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Self {
            inner: Arc::new(Inner {
                file,
                path: path.to_path_buf(),
                output: Box::new(|bytes| {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(bytes);
                    let _ = out.flush();
                }),
            }),
        })
    }

    /// Sends device output somewhere else (before the transport is cloned).
    pub fn with_output(self, sink: OutputSink) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.output = sink;
                Self {
                    inner: Arc::new(inner),
                }
            }
            Err(inner) => Self { inner },
        }
    }

    /// Sends a fire-and-forget frame whose `Source::Shm` ranges refer to `h2d`. Returns once
    /// the device has consumed the request (the window's pages are pinned until then).
    pub fn send_with_data(&self, frame: &[u8], h2d: &[u8]) -> Result<(), TransportError> {
        check_window(h2d.len())?;
        let mut c = call_for(frame, CALL_ASYNC);
        c.data_in = h2d.as_ptr() as u64;
        c.data_in_len = h2d.len() as u64;
        self.ioctl(&mut c)?;
        Ok(())
    }

    /// Performs a synchronous call whose `Source::Shm` ranges refer to `h2d` and whose
    /// `Sink::Shm` ranges refer to `d2h` (either may be empty).
    pub fn call_with_data(
        &self,
        frame: &[u8],
        seq: u32,
        h2d: &[u8],
        d2h: &mut [u8],
    ) -> Result<Reply, TransportError> {
        check_window(h2d.len())?;
        check_window(d2h.len())?;
        let mut resp = vec![0u8; response_capacity(frame)];
        let mut c = call_for(frame, 0);
        if !h2d.is_empty() {
            c.data_in = h2d.as_ptr() as u64;
            c.data_in_len = h2d.len() as u64;
        }
        if !d2h.is_empty() {
            c.data_out = d2h.as_mut_ptr() as u64;
            c.data_out_len = d2h.len() as u64;
        }
        c.resp = resp.as_mut_ptr() as u64;
        c.resp_cap = resp.len() as u32;
        self.ioctl(&mut c)?;
        let n = (c.resp_len as usize).min(resp.len());
        self.parse_response(&resp[..n], seq)
    }

    fn ioctl(&self, c: &mut VcudaCall) -> Result<(), TransportError> {
        let mut nomem_retries = 0;
        loop {
            // SAFETY: VCUDA_IOC_CALL reads and writes one `struct vcuda_call` at the pointer, which
            // is a live, properly laid out `VcudaCall`; the user pointers inside it refer to
            // buffers borrowed by the caller for the duration of the (blocking) ioctl.
            let r = unsafe {
                libc::ioctl(
                    self.inner.file.as_raw_fd(),
                    VCUDA_IOC_CALL as _,
                    c as *mut VcudaCall,
                )
            };
            if r == 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                // Queue waits are killable only, so EINTR here means nothing was queued.
                Some(libc::EINTR) => {}
                // Nothing was queued either: large windows need an indirect descriptor table
                // that the driver allocates atomically, which can fail transiently.
                Some(libc::ENOMEM) if nomem_retries < 5 => {
                    nomem_retries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(1 << nomem_retries));
                }
                _ => return Err(TransportError::Io(e)),
            }
        }
    }

    fn parse_response(&self, mut resp: &[u8], seq: u32) -> Result<Reply, TransportError> {
        loop {
            if resp.len() < HEADER_LEN {
                return Err(TransportError::Closed);
            }
            let h = ResponseHeader::get(&mut Reader::new(resp))?;
            let end = HEADER_LEN + h.body_len as usize;
            let body = resp.get(HEADER_LEN..end).ok_or(TransportError::Closed)?;
            match h.kind {
                ResponseKind::Stdout => (self.inner.output)(body),
                ResponseKind::Reply if h.seq == seq => {
                    return Ok(Reply {
                        status: h.status,
                        body: body.to_vec(),
                    })
                }
                ResponseKind::Reply => {
                    return Err(TransportError::OutOfOrder {
                        expected: seq,
                        got: h.seq,
                    })
                }
            }
            resp = &resp[end..];
        }
    }
}

impl Transport for VirtioTransport {
    fn send(&self, frame: &[u8]) -> Result<(), TransportError> {
        let mut c = call_for(frame, CALL_ASYNC);
        self.ioctl(&mut c)
    }

    fn call(&self, frame: &[u8], seq: u32) -> Result<Reply, TransportError> {
        self.call_with_data(frame, seq, &[], &mut [])
    }
}

fn call_for(frame: &[u8], flags: u32) -> VcudaCall {
    VcudaCall {
        frame: frame.as_ptr() as u64,
        frame_len: frame.len().min(u32::MAX as usize) as u32,
        flags,
        ..VcudaCall::default()
    }
}

fn check_window(len: usize) -> Result<(), TransportError> {
    if len > VirtioTransport::MAX_WINDOW {
        return Err(TransportError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "data window of {len} bytes exceeds {} bytes",
                VirtioTransport::MAX_WINDOW
            ),
        )));
    }
    Ok(())
}

/// The response buffer a request needs: room for bulk data returned in the reply body
/// (`Sink::Reply` device→host copies), else a small buffer for status and device output.
fn response_capacity(frame: &[u8]) -> usize {
    let Ok(h) = RequestHeader::get(&mut Reader::new(frame)) else {
        return RESP_SMALL;
    };
    if h.flags & FLAG_ASYNC != 0 {
        return RESP_SMALL;
    }
    let inline = match h.opcode {
        <p::MemcpyDtoH as p::Call>::OPCODE | <p::MemcpyDtoHStrided as p::Call>::OPCODE => {
            match p::decode_request(frame) {
                Ok((_, p::Request::MemcpyDtoH(c))) if c.dst == Sink::Reply => c.len,
                Ok((_, p::Request::MemcpyDtoHStrided(c))) if c.dst == Sink::Reply => c
                    .width_bytes
                    .saturating_mul(c.height)
                    .saturating_mul(c.depth.max(1)),
                _ => 0,
            }
        }
        _ => 0,
    };
    (RESP_SMALL as u64)
        .saturating_add(inline)
        .min(RESP_MAX as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_number_matches_the_c_header() {
        // _IOWR('V', 1, struct vcuda_call) with a 64-byte struct.
        assert_eq!(std::mem::size_of::<VcudaCall>(), 64);
        assert_eq!(VCUDA_IOC_CALL, 0xC040_5601);
    }

    #[test]
    fn response_capacity_grows_for_inline_device_to_host_copies() {
        let mut f = Vec::new();
        p::encode_call(
            1,
            &p::MemcpyDtoH {
                ctx: 1,
                stream: 0,
                src: 0,
                len: 1 << 20,
                dst: Sink::Reply,
            },
            &mut f,
        );
        assert_eq!(response_capacity(&f), RESP_SMALL + (1 << 20));
        let mut g = Vec::new();
        p::encode_call(2, &p::CtxSynchronize { ctx: 1 }, &mut g);
        assert_eq!(response_capacity(&g), RESP_SMALL);
        assert_eq!(response_capacity(&[1, 2]), RESP_SMALL);
    }
}
