//! The virtio-gpu device model ([`crate::device::GpuDevice`]) served over vhost-user, for
//! QEMU's `vhost-user-gpu-pci` frontend (and any other vhost-user frontend).
//!
//! * [`VhostUserGpu`] adapts the model to [`VhostUserDevice`]. rutabaga_gfx is not `Send`, so
//!   the model lives on a thread of its own; the backend's queue workers hand it a queue to
//!   process and get the queue back.
//! * QEMU's frontend passes a second socket with `VHOST_USER_GPU_SET_SOCKET` (request 33) over
//!   which the backend tells QEMU what to show (the vhost-user-gpu display protocol, QEMU's
//!   docs/interop/vhost-user-gpu.rst). [`QemuDisplay`] shows every flushed frame on our own
//!   display (`none`, `png:<dir>`, …) and, once QEMU has passed that socket, sends it as
//!   `SCANOUT` (on a size change) and `UPDATE` (the pixels, x8r8g8b8), and cursor moves as
//!   `CURSOR_POS`/`CURSOR_POS_HIDE`, so QEMU's own display shows the guest too.
//!
//! Display-protocol failures (QEMU gone, a short write) drop that socket and are logged; the
//! guest's device keeps working.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::device::{
    ConfigSpace, GpuConfig, GpuDevice, CONFIG_SPACE_LEN, CURSORQ, FEATURES, NUM_QUEUES,
    QUEUE_SIZE_MAX,
};
use crate::display::{Display, DisplayError, DisplaySpec, Frame};
use tracing::{debug, info, warn};
use virtio_common::vhost_user::{VhostUserDevice, VhostUserError};
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

/// `VHOST_USER_GPU_SET_SOCKET`: the vhost-user request carrying the display socket.
pub const REQ_GPU_SET_SOCKET: u32 = 33;

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

/// The display socket slot shared by the device adapter (which receives it) and the display
/// (which uses it on the device thread).
type SocketSlot = Arc<Mutex<Option<GpuSocket>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Our display (`png:<dir>`, …) plus QEMU's, through the display socket when there is one.
pub struct QemuDisplay {
    inner: Box<dyn Display>,
    socket: SocketSlot,
}

impl QemuDisplay {
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

/// One display kept across device resets (a reset makes a new [`GpuDevice`]; captures go on
/// numbering frames where they were).
struct SharedDisplay(Rc<RefCell<QemuDisplay>>);

impl Display for SharedDisplay {
    fn wants_frames(&self) -> bool {
        self.0.borrow().wants_frames()
    }

    fn present(&mut self, scanout: u32, frame: &Frame<'_>) -> Result<(), DisplayError> {
        self.0.borrow_mut().present(scanout, frame)
    }

    fn cursor(&mut self, scanout: u32, x: u32, y: u32, visible: bool) {
        self.0.borrow_mut().cursor(scanout, x, y, visible);
    }

    fn finish(&mut self) -> Result<(), DisplayError> {
        self.0.borrow_mut().finish()
    }
}

type Processed = (Queue, Result<bool, String>);

enum Msg {
    Process {
        index: usize,
        mem: GuestMemoryMmap,
        queue: Queue,
        done: Sender<Processed>,
    },
    Reset,
}

/// The virtio-gpu device as a [`VhostUserDevice`]: one per frontend connection.
pub struct VhostUserGpu {
    tx: Option<Sender<Msg>>,
    thread: Option<JoinHandle<()>>,
    config_space: ConfigSpace,
    socket: SocketSlot,
}

impl VhostUserGpu {
    /// Starts the device thread: the model with `config`'s scanouts, showing frames on
    /// `display` (and on QEMU's display once it passes its socket).
    pub fn new(config: GpuConfig, display: DisplaySpec) -> Result<Self, String> {
        let scanouts = config
            .scanouts
            .len()
            .clamp(1, crate::protocol::MAX_SCANOUTS);
        let config_space = ConfigSpace::new(scanouts as u32, 0);
        let socket: SocketSlot = Arc::new(Mutex::new(None));
        let (tx, rx) = channel();
        let (ready_tx, ready_rx) = channel();
        let (cs, slot) = (config_space.clone(), Arc::clone(&socket));
        let thread = std::thread::Builder::new()
            .name("vhost-user-gpu".into())
            .spawn(move || {
                let opened = display.open().map_err(|e| e.to_string()).and_then(|inner| {
                    let shared = Rc::new(RefCell::new(QemuDisplay {
                        inner,
                        socket: slot,
                    }));
                    let dev = GpuDevice::with_config_space(
                        config.clone(),
                        Box::new(SharedDisplay(Rc::clone(&shared))),
                        cs.clone(),
                    )
                    .map_err(|e| e.to_string())?;
                    Ok((dev, shared))
                });
                match opened {
                    Ok((dev, shared)) => {
                        let _ = ready_tx.send(Ok(()));
                        run_device(dev, shared, config, cs, rx);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| format!("cannot start the device thread: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                tx: Some(tx),
                thread: Some(thread),
                config_space,
                socket,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(format!("virtio-gpu: {e}"))
            }
            Err(_) => {
                let _ = thread.join();
                Err("virtio-gpu: the device thread died while starting".into())
            }
        }
    }

    /// Whether QEMU has passed its display socket (and it is still usable).
    pub fn has_display_socket(&self) -> bool {
        lock(&self.socket).is_some()
    }
}

fn run_device(
    mut dev: GpuDevice,
    display: Rc<RefCell<QemuDisplay>>,
    config: GpuConfig,
    cs: ConfigSpace,
    rx: Receiver<Msg>,
) {
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Process {
                index,
                mem,
                mut queue,
                done,
            } => {
                let r = if index == CURSORQ {
                    dev.process_cursorq(&mem, &mut queue)
                } else {
                    dev.process_controlq(&mem, &mut queue)
                };
                let _ = done.send((queue, r.map_err(|e| e.to_string())));
            }
            Msg::Reset => {
                debug!("virtio-gpu: reset");
                match GpuDevice::with_config_space(
                    config.clone(),
                    Box::new(SharedDisplay(Rc::clone(&display))),
                    cs.clone(),
                ) {
                    Ok(d) => dev = d,
                    Err(e) => warn!("virtio-gpu: cannot recreate the device on reset: {e}"),
                }
            }
        }
    }
    dev.finish();
}

impl VhostUserDevice for VhostUserGpu {
    fn name(&self) -> &'static str {
        "gpu"
    }

    fn features(&self) -> u64 {
        FEATURES
    }

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> u16 {
        QUEUE_SIZE_MAX
    }

    fn read_config(&self, offset: u32, data: &mut [u8]) {
        let mut space = [0u8; CONFIG_SPACE_LEN];
        self.config_space.read(0, &mut space);
        virtio_common::vhost_user::copy_config(&space, offset, data);
    }

    fn write_config(&mut self, offset: u32, data: &[u8]) -> Result<(), VhostUserError> {
        // QEMU writes the whole config space back (events_clear is the only writable field).
        let at = offset as usize;
        if at <= 4 && at + data.len() >= 8 {
            self.config_space.write(4, &data[4 - at..8 - at]);
        }
        Ok(())
    }

    fn process_queue(
        &mut self,
        index: usize,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
    ) -> Result<bool, String> {
        let tx = self.tx.as_ref().ok_or("the device thread is gone")?;
        let (done, result) = channel();
        tx.send(Msg::Process {
            index,
            mem: mem.clone(),
            queue: std::mem::take(queue),
            done,
        })
        .map_err(|_| "the device thread is gone".to_string())?;
        let (q, r) = result
            .recv()
            .map_err(|_| "the device thread died".to_string())?;
        *queue = q;
        r
    }

    fn reset(&mut self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Reset);
        }
    }

    fn device_request(
        &mut self,
        code: u32,
        payload: &[u8],
        mut fds: Vec<OwnedFd>,
    ) -> Result<(), VhostUserError> {
        if code != REQ_GPU_SET_SOCKET {
            return Err(VhostUserError::Unsupported(code));
        }
        if !payload.is_empty() {
            return Err(VhostUserError::PayloadSize(payload.len()));
        }
        if fds.len() != 1 {
            return Err(VhostUserError::FdCount {
                expected: 1,
                got: fds.len(),
            });
        }
        let Some(fd) = fds.pop() else {
            return Err(VhostUserError::FdCount {
                expected: 1,
                got: 0,
            });
        };
        info!("vhost-user-gpu: display socket received");
        *lock(&self.socket) = Some(GpuSocket::new(UnixStream::from(fd)));
        Ok(())
    }
}

impl Drop for VhostUserGpu {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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

    #[test]
    fn set_socket_needs_exactly_one_descriptor_and_no_payload() {
        let mut dev = VhostUserGpu::new(GpuConfig::with_size(64, 48), DisplaySpec::None).unwrap();
        assert!(matches!(
            dev.device_request(REQ_GPU_SET_SOCKET, &[], Vec::new()),
            Err(VhostUserError::FdCount { .. })
        ));
        let (a, _b) = UnixStream::pair().unwrap();
        assert!(matches!(
            dev.device_request(REQ_GPU_SET_SOCKET, &[0], vec![OwnedFd::from(a)]),
            Err(VhostUserError::PayloadSize(1))
        ));
        assert!(matches!(
            dev.device_request(99, &[], Vec::new()),
            Err(VhostUserError::Unsupported(99))
        ));
        assert!(!dev.has_display_socket());
        let (a, _b) = UnixStream::pair().unwrap();
        dev.device_request(REQ_GPU_SET_SOCKET, &[], vec![OwnedFd::from(a)])
            .unwrap();
        assert!(dev.has_display_socket());
        // Config space: one scanout; SET_CONFIG's events_clear is accepted.
        let mut c = [0u8; 16];
        dev.read_config(0, &mut c);
        assert_eq!(u32::from_le_bytes(c[8..12].try_into().unwrap()), 1);
        dev.write_config(0, &c).unwrap();
    }
}
