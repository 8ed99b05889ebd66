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
//!
//! Plain [`Transport`] users get windows too: a `MemcpyHtoD` with a large inline payload and a
//! large `MemcpyDtoH` into the reply are turned into window-sized copies through data windows
//! (the driver pins the buffers instead of copying them through the kernel), so a client that
//! knows nothing of windows still avoids multi-megabyte frames. Several frames handed to `send`
//! at once (a batching wrapper) become one chain each.

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

    /// One `VCUDA_IOC_CALL`.
    fn try_ioctl(&self, c: &mut VcudaCall) -> Result<(), std::io::Error> {
        // SAFETY: VCUDA_IOC_CALL reads and writes one `struct vcuda_call` at the pointer, which is
        // a live, properly laid out `VcudaCall`; the user pointers inside it refer to buffers
        // borrowed by the caller for the duration of the (blocking) ioctl.
        let r = unsafe {
            libc::ioctl(
                self.inner.file.as_raw_fd(),
                VCUDA_IOC_CALL as _,
                c as *mut VcudaCall,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// A call with data windows or a reply, retried while the driver queued nothing.
    fn ioctl(&self, c: &mut VcudaCall) -> Result<(), TransportError> {
        let mut retries = 0;
        loop {
            match self.try_ioctl(c) {
                Ok(()) => return Ok(()),
                Err(e) if retryable(&e, &mut retries) => {}
                Err(e) => return Err(TransportError::Io(e)),
            }
        }
    }

    /// Fire-and-forget frames without windows, back to back: the driver queues them all with
    /// one system call and reports how far it got, so a failure resumes where it stopped.
    fn send_frames(&self, mut frames: &[u8]) -> Result<(), TransportError> {
        let mut retries = 0;
        while !frames.is_empty() {
            let mut c = call_for(frames, CALL_ASYNC);
            let r = self.try_ioctl(&mut c);
            let queued = (c.resp_len as usize).min(frames.len());
            match r {
                Ok(()) => return Ok(()),
                Err(e) if retryable(&e, &mut retries) => frames = &frames[queued..],
                Err(e) => return Err(TransportError::Io(e)),
            }
        }
        Ok(())
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
    /// Sends fire-and-forget frames: several back to back (as a batching wrapper hands them
    /// over) become one chain each.
    fn send(&self, frames: &[u8]) -> Result<(), TransportError> {
        // Runs of plain frames go down in one ioctl; large inline copies through windows.
        let mut plain = 0;
        let mut at = 0;
        while at < frames.len() {
            let rest = &frames[at..];
            let len = RequestHeader::get(&mut Reader::new(rest))
                .map(|h| HEADER_LEN.saturating_add(h.body_len as usize))
                .unwrap_or(rest.len())
                .min(rest.len());
            let frame = &rest[..len];
            if len > BULK_THRESHOLD && inline_htod(frame).is_some() {
                self.send_frames(&frames[plain..at])?;
                self.copy_in_windows(frame, None)?;
                plain = at + len;
            }
            at += len;
        }
        self.send_frames(&frames[plain..])
    }

    fn window_size(&self) -> usize {
        Self::MAX_WINDOW
    }

    fn call_with_data(
        &self,
        frame: &[u8],
        seq: u32,
        h2d: &[u8],
        d2h: &mut [u8],
    ) -> Result<Option<Reply>, TransportError> {
        VirtioTransport::call_with_data(self, frame, seq, h2d, d2h).map(Some)
    }

    fn call(&self, frame: &[u8], seq: u32) -> Result<Reply, TransportError> {
        if let Some(reply) = self.copy_in_windows(frame, Some(seq))? {
            return Ok(reply);
        }
        if let Some(reply) = self.copy_out_windows(frame, seq)? {
            return Ok(reply);
        }
        self.call_with_data(frame, seq, &[], &mut [])
    }
}

/// Inline payloads above this size travel in data windows instead (the driver pins the
/// caller's pages rather than copying the bytes into a kernel buffer).
const BULK_THRESHOLD: usize = 64 << 10;

impl VirtioTransport {
    /// A `MemcpyHtoD` with a large inline payload, sent as window-sized copies whose bytes
    /// travel in data windows. `sync`: the caller waits for a reply with this sequence number
    /// (each piece is then synchronous, and the first failure is the reply). `None`: the frame
    /// is not such a copy.
    fn copy_in_windows(
        &self,
        frame: &[u8],
        sync: Option<u32>,
    ) -> Result<Option<Reply>, TransportError> {
        if frame.len() <= BULK_THRESHOLD
            || opcode(frame) != Some(<p::MemcpyHtoD as p::Call>::OPCODE)
        {
            return Ok(None);
        }
        let Some((h, c, bytes)) = inline_htod(frame) else {
            return Ok(None);
        };
        let mut last = None;
        for (i, chunk) in bytes.chunks(Self::MAX_WINDOW).enumerate() {
            let piece = p::MemcpyHtoD {
                ctx: c.ctx,
                stream: c.stream,
                dst: c.dst.wrapping_add((i * Self::MAX_WINDOW) as u64),
                src: p::Source::Shm {
                    offset: 0,
                    len: chunk.len() as u64,
                },
            };
            let mut f = Vec::with_capacity(64);
            p::encode_call(h.seq, &piece, &mut f);
            match sync {
                None => self.send_with_data(&f, chunk)?,
                Some(seq) => {
                    clear_async(&mut f);
                    let reply = self.call_with_data(&f, seq, chunk, &mut [])?;
                    if !reply.status.is_ok() {
                        return Ok(Some(reply));
                    }
                    last = Some(reply);
                }
            }
        }
        Ok(match sync {
            None => Some(Reply {
                status: p::Status::SUCCESS,
                body: Vec::new(),
            }),
            Some(_) => last.or(Some(Reply {
                status: p::Status::SUCCESS,
                body: Vec::new(),
            })),
        })
    }

    /// A large `MemcpyDtoH` into the reply, done as window-sized copies into data windows and
    /// answered with the reply the executor would have sent. `None`: not such a copy.
    fn copy_out_windows(&self, frame: &[u8], seq: u32) -> Result<Option<Reply>, TransportError> {
        if opcode(frame) != Some(<p::MemcpyDtoH as p::Call>::OPCODE) {
            return Ok(None);
        }
        let Ok((_, p::Request::MemcpyDtoH(c))) = p::decode_request(frame) else {
            return Ok(None);
        };
        if c.dst != Sink::Reply || c.len <= BULK_THRESHOLD as u64 || c.len > p::MAX_INLINE as u64 {
            return Ok(None);
        }
        // The reply body is a DataReply: u32 length, then the bytes (written in place).
        let len = c.len as usize;
        let mut body = vec![0u8; 4 + len];
        body[..4].copy_from_slice(&(len as u32).to_le_bytes());
        for (i, chunk) in body[4..].chunks_mut(Self::MAX_WINDOW).enumerate() {
            let piece = p::MemcpyDtoH {
                ctx: c.ctx,
                stream: c.stream,
                src: c.src.wrapping_add((i * Self::MAX_WINDOW) as u64),
                len: chunk.len() as u64,
                dst: Sink::Shm {
                    offset: 0,
                    len: chunk.len() as u64,
                },
            };
            let mut f = Vec::with_capacity(64);
            p::encode_call(seq, &piece, &mut f);
            let reply = self.call_with_data(&f, seq, &[], chunk)?;
            if !reply.status.is_ok() {
                return Ok(Some(reply));
            }
        }
        Ok(Some(Reply {
            status: p::Status::SUCCESS,
            body,
        }))
    }
}

/// The fields of a `MemcpyHtoD` frame with an inline source, the payload borrowed from the
/// frame (no copy: fresh multi-megabyte buffers cost a page fault per page).
fn inline_htod(frame: &[u8]) -> Option<(RequestHeader, p::MemcpyHtoD, &[u8])> {
    let mut r = Reader::new(frame);
    let h = RequestHeader::get(&mut r).ok()?;
    let mut body = Reader::new(r.take(h.body_len as usize).ok()?);
    r.finish().ok()?;
    let (ctx, stream, dst) = (body.u64().ok()?, body.u64().ok()?, body.u64().ok()?);
    if body.u8().ok()? != 0 {
        return None; // not Source::Inline
    }
    let bytes = body.bytes().ok()?;
    body.finish().ok()?;
    let c = p::MemcpyHtoD {
        ctx,
        stream,
        dst,
        src: p::Source::Inline(Vec::new()),
    };
    Some((h, c, bytes))
}

/// Whether a failed ioctl queued nothing it was not told about and may be repeated: `EINTR`
/// (queue waits are killable only) and, a few times, `ENOMEM` (large windows need an indirect
/// descriptor table that the driver allocates atomically, which can fail transiently).
fn retryable(e: &std::io::Error, retries: &mut u32) -> bool {
    match e.raw_os_error() {
        Some(libc::EINTR) => true,
        Some(libc::ENOMEM) if *retries < 5 => {
            *retries += 1;
            std::thread::sleep(std::time::Duration::from_millis(1 << *retries));
            true
        }
        _ => false,
    }
}

fn opcode(frame: &[u8]) -> Option<u16> {
    RequestHeader::get(&mut Reader::new(frame))
        .ok()
        .map(|h| h.opcode)
}

fn clear_async(frame: &mut [u8]) {
    if let Some(flags) = frame.get_mut(6..8) {
        let v = u16::from_le_bytes([flags[0], flags[1]]) & !FLAG_ASYNC;
        flags.copy_from_slice(&v.to_le_bytes());
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
    fn inline_host_to_device_payloads_are_borrowed_from_the_frame() {
        let copy = p::MemcpyHtoD {
            ctx: 3,
            stream: 4,
            dst: 5,
            src: p::Source::Inline(vec![7; 100]),
        };
        let mut f = Vec::new();
        p::encode_call(9, &copy, &mut f);
        let (h, c, bytes) = inline_htod(&f).unwrap();
        assert_eq!((h.seq, c.ctx, c.stream, c.dst), (9, 3, 4, 5));
        assert_eq!(bytes, &[7; 100][..]);
        f.push(0);
        assert!(inline_htod(&f).is_none());
        let mut g = Vec::new();
        let shm = p::MemcpyHtoD {
            src: p::Source::Shm { offset: 0, len: 1 },
            ..copy
        };
        p::encode_call(9, &shm, &mut g);
        assert!(inline_htod(&g).is_none());
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
