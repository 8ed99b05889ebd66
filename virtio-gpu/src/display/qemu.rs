//! QEMU's display as one of ours: the vhost-user-gpu display protocol (QEMU's
//! docs/interop/vhost-user-gpu.rst) over the socket QEMU passes with
//! `VHOST_USER_GPU_SET_SOCKET`. [`QemuDisplay`] shows every flushed frame on our own display
//! (`none`, `png:<dir>`, …) and, once QEMU has passed that socket, sends it as `SCANOUT` (on a
//! size change) and `UPDATE` (the pixels, x8r8g8b8), and cursor moves as
//! `CURSOR_POS`/`CURSOR_POS_HIDE`, so QEMU's own display shows the guest too.
//!
//! Display-protocol failures (QEMU gone, a short write) drop that socket and are logged; the
//! guest's device keeps working.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tracing::{debug, info, warn};

use super::{Display, DisplayError, Frame};

/// Requests of the vhost-user-gpu display protocol (backend → QEMU).
pub mod proto {
    pub const GET_PROTOCOL_FEATURES: u32 = 1;
    pub const SET_PROTOCOL_FEATURES: u32 = 2;
    pub const GET_DISPLAY_INFO: u32 = 3;
    pub const CURSOR_POS: u32 = 4;
    pub const CURSOR_POS_HIDE: u32 = 5;
    pub const CURSOR_UPDATE: u32 = 6;
    pub const SCANOUT: u32 = 7;
    pub const UPDATE: u32 = 8;
    /// Header flag of a reply.
    pub const FLAG_REPLY: u32 = 0x4;
    /// Header: request u32 | flags u32 | size u32.
    pub const HEADER_LEN: usize = 12;
    /// Largest reply payload we accept (a display-info reply is 408 bytes).
    pub const MAX_REPLY: u32 = 4096;
}

/// How long we wait for QEMU to answer a display-protocol request.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a display-protocol exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum GpuSocketError {
    #[error("display socket i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("unexpected reply {got} to request {want}")]
    Reply { want: u32, got: u32 },
    #[error("reply payload of {0} bytes")]
    ReplySize(u32),
}

/// The display socket QEMU passed (`VHOST_USER_GPU_SET_SOCKET`).
#[derive(Debug)]
pub struct GpuSocket {
    stream: UnixStream,
    /// Whether the protocol-feature handshake was done.
    ready: bool,
    /// The size each scanout was last announced with (`SCANOUT`).
    scanouts: Vec<Option<(u32, u32)>>,
}

impl GpuSocket {
    pub fn new(stream: UnixStream) -> Self {
        Self {
            stream,
            ready: false,
            scanouts: Vec::new(),
        }
    }

    fn send(&mut self, request: u32, payload: &[&[u8]]) -> Result<(), GpuSocketError> {
        let size: usize = payload.iter().map(|p| p.len()).sum();
        let size = u32::try_from(size)
            .map_err(|_| GpuSocketError::Io(std::io::Error::other("display message over 4 GiB")))?;
        let mut hdr = [0u8; proto::HEADER_LEN];
        hdr[0..4].copy_from_slice(&request.to_le_bytes());
        hdr[8..12].copy_from_slice(&size.to_le_bytes());
        self.stream.write_all(&hdr)?;
        for p in payload {
            self.stream.write_all(p)?;
        }
        Ok(())
    }

    fn recv_reply(&mut self, want: u32) -> Result<Vec<u8>, GpuSocketError> {
        let mut hdr = [0u8; proto::HEADER_LEN];
        self.stream.read_exact(&mut hdr)?;
        let word = |i: usize| u32::from_le_bytes([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
        let (request, flags, size) = (word(0), word(4), word(8));
        if request != want || flags & proto::FLAG_REPLY == 0 {
            return Err(GpuSocketError::Reply { want, got: request });
        }
        if size > proto::MAX_REPLY {
            return Err(GpuSocketError::ReplySize(size));
        }
        let mut payload = vec![0u8; size as usize];
        self.stream.read_exact(&mut payload)?;
        Ok(payload)
    }

    /// GET_PROTOCOL_FEATURES / SET_PROTOCOL_FEATURES. We use no optional feature (our device
    /// answers GET_EDID itself, and we send no dma-bufs), so we acknowledge none.
    fn handshake(&mut self) -> Result<(), GpuSocketError> {
        self.stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        // A QEMU that stops reading must not stall the guest's device: a write that cannot
        // finish in this time fails, and the display socket is dropped.
        self.stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
        self.send(proto::GET_PROTOCOL_FEATURES, &[])?;
        let reply = self.recv_reply(proto::GET_PROTOCOL_FEATURES)?;
        let offered = reply
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .ok_or(GpuSocketError::ReplySize(reply.len() as u32))?;
        self.send(proto::SET_PROTOCOL_FEATURES, &[&0u64.to_le_bytes()])?;
        info!(
            offered = format_args!("{offered:#x}"),
            "vhost-user-gpu display socket ready"
        );
        self.ready = true;
        Ok(())
    }

    /// Shows `frame` on scanout `id` of QEMU's display: SCANOUT when its size changed, then
    /// one UPDATE of the whole frame in x8r8g8b8.
    pub fn present(&mut self, id: u32, frame: &Frame<'_>) -> Result<(), GpuSocketError> {
        if !self.ready {
            self.handshake()?;
        }
        let rgba = frame
            .to_rgba8()
            .map_err(|e| GpuSocketError::Io(std::io::Error::other(e.to_string())))?;
        let slot = id as usize;
        if self.scanouts.len() <= slot {
            self.scanouts.resize(slot + 1, None);
        }
        let size = (frame.width, frame.height);
        if self.scanouts[slot] != Some(size) {
            let mut m = [0u8; 12];
            m[0..4].copy_from_slice(&id.to_le_bytes());
            m[4..8].copy_from_slice(&frame.width.to_le_bytes());
            m[8..12].copy_from_slice(&frame.height.to_le_bytes());
            self.send(proto::SCANOUT, &[&m])?;
            debug!(
                scanout = id,
                width = size.0,
                height = size.1,
                "vhost-user-gpu: SCANOUT sent"
            );
            self.scanouts[slot] = Some(size);
        }
        // x8r8g8b8 in memory order on a little-endian host: B, G, R, X.
        let mut bgrx = Vec::with_capacity(rgba.len());
        for px in rgba.chunks_exact(4) {
            bgrx.extend_from_slice(&[px[2], px[1], px[0], 0xff]);
        }
        let mut m = [0u8; 20];
        m[0..4].copy_from_slice(&id.to_le_bytes());
        // x, y = 0
        m[12..16].copy_from_slice(&frame.width.to_le_bytes());
        m[16..20].copy_from_slice(&frame.height.to_le_bytes());
        self.send(proto::UPDATE, &[&m, &bgrx])
    }

    /// Moves (or hides) the cursor on QEMU's display.
    pub fn cursor(&mut self, id: u32, x: u32, y: u32, visible: bool) -> Result<(), GpuSocketError> {
        if !self.ready {
            self.handshake()?;
        }
        let mut m = [0u8; 12];
        m[0..4].copy_from_slice(&id.to_le_bytes());
        m[4..8].copy_from_slice(&x.to_le_bytes());
        m[8..12].copy_from_slice(&y.to_le_bytes());
        let req = if visible {
            proto::CURSOR_POS
        } else {
            proto::CURSOR_POS_HIDE
        };
        self.send(req, &[&m])
    }
}

/// The display socket slot shared by the device (which receives it) and the display (which uses
/// it on the device thread).
pub type SocketSlot = Arc<Mutex<Option<GpuSocket>>>;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Our display (`png:<dir>`, …) plus QEMU's, through the display socket when there is one.
pub struct QemuDisplay {
    inner: Box<dyn Display>,
    socket: SocketSlot,
}

impl QemuDisplay {
    /// `inner`, and QEMU's display once `socket` holds one.
    pub fn new(inner: Box<dyn Display>, socket: SocketSlot) -> Self {
        Self { inner, socket }
    }

    fn with_socket(
        &self,
        what: &str,
        f: impl FnOnce(&mut GpuSocket) -> Result<(), GpuSocketError>,
    ) {
        let mut slot = lock(&self.socket);
        if let Some(s) = slot.as_mut() {
            if let Err(e) = f(s) {
                warn!("vhost-user-gpu: {what} on QEMU's display failed, dropping the display socket: {e}");
                *slot = None;
            }
        }
    }
}

impl Display for QemuDisplay {
    fn wants_frames(&self) -> bool {
        self.inner.wants_frames() || lock(&self.socket).is_some()
    }

    fn present(&mut self, scanout: u32, frame: &Frame<'_>) -> Result<(), DisplayError> {
        self.with_socket("present", |s| s.present(scanout, frame));
        if self.inner.wants_frames() {
            self.inner.present(scanout, frame)
        } else {
            Ok(())
        }
    }

    fn cursor(&mut self, scanout: u32, x: u32, y: u32, visible: bool) {
        self.with_socket("cursor", |s| s.cursor(scanout, x, y, visible));
        self.inner.cursor(scanout, x, y, visible);
    }

    fn finish(&mut self) -> Result<(), DisplayError> {
        self.inner.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::format;

    /// Reads one display-protocol message as QEMU would: (request, flags, payload).
    fn read_msg(s: &mut UnixStream) -> (u32, u32, Vec<u8>) {
        let mut h = [0u8; proto::HEADER_LEN];
        s.read_exact(&mut h).unwrap();
        let w = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().unwrap());
        let mut p = vec![0u8; w(8) as usize];
        s.read_exact(&mut p).unwrap();
        (w(0), w(4), p)
    }

    fn reply(s: &mut UnixStream, request: u32, payload: &[u8]) {
        let mut m = Vec::new();
        m.extend_from_slice(&request.to_le_bytes());
        m.extend_from_slice(&proto::FLAG_REPLY.to_le_bytes());
        m.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        m.extend_from_slice(payload);
        s.write_all(&m).unwrap();
    }

    #[test]
    fn frames_reach_qemus_display_as_scanout_and_update() {
        let (ours, mut qemu) = UnixStream::pair().unwrap();
        let qemu_side = std::thread::spawn(move || {
            let (r, _, p) = read_msg(&mut qemu);
            assert_eq!((r, p.len()), (proto::GET_PROTOCOL_FEATURES, 0));
            reply(&mut qemu, r, &3u64.to_le_bytes());
            let (r, _, p) = read_msg(&mut qemu);
            assert_eq!(
                (r, p),
                (proto::SET_PROTOCOL_FEATURES, 0u64.to_le_bytes().to_vec())
            );
            let mut got = Vec::new();
            for _ in 0..4 {
                got.push(read_msg(&mut qemu));
            }
            got
        });
        let mut sock = GpuSocket::new(ours);
        // 2×1 BGRX pixels with a padded row.
        let data = [1, 2, 3, 0, 4, 5, 6, 0, 9, 9];
        let frame = Frame {
            width: 2,
            height: 1,
            stride: 10,
            format: format::B8G8R8X8_UNORM,
            data: &data,
        };
        sock.present(0, &frame).unwrap();
        // Same size: no second SCANOUT.
        sock.present(0, &frame).unwrap();
        sock.cursor(0, 7, 8, false).unwrap();
        let got = qemu_side.join().unwrap();
        let scanout: Vec<u8> = [0u32, 2, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!((got[0].0, &got[0].2), (proto::SCANOUT, &scanout));
        let mut update: Vec<u8> = [0u32, 0, 0, 2, 1]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        update.extend_from_slice(&[1, 2, 3, 0xff, 4, 5, 6, 0xff]);
        assert_eq!((got[1].0, &got[1].2), (proto::UPDATE, &update));
        assert_eq!(got[2].0, proto::UPDATE);
        let hide: Vec<u8> = [0u32, 7, 8].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!((got[3].0, &got[3].2), (proto::CURSOR_POS_HIDE, &hide));
    }

    #[test]
    fn a_bad_handshake_reply_is_an_error_not_a_panic() {
        let (ours, mut qemu) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let (r, _, _) = read_msg(&mut qemu);
            // Wrong request in the reply, then a huge size.
            reply(&mut qemu, r + 1, &[]);
            let (r, _, _) = read_msg(&mut qemu);
            let mut m = Vec::new();
            for v in [r, proto::FLAG_REPLY, u32::MAX] {
                m.extend_from_slice(&v.to_le_bytes());
            }
            qemu.write_all(&m).unwrap();
        });
        let mut sock = GpuSocket::new(ours);
        let frame = Frame {
            width: 1,
            height: 1,
            stride: 4,
            format: format::B8G8R8X8_UNORM,
            data: &[0; 4],
        };
        assert!(matches!(
            sock.present(0, &frame),
            Err(GpuSocketError::Reply { .. })
        ));
        assert!(matches!(
            sock.present(0, &frame),
            Err(GpuSocketError::ReplySize(_))
        ));
        t.join().unwrap();
    }
}
