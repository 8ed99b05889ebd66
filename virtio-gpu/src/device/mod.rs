//! The virtio-gpu device model (virtio 1.2 §5.7, device id [`DEVICE_ID`]) on rutabaga_gfx 2D.
//!
//! Transport-agnostic: it consumes descriptor chains of the control queue (0) and the cursor
//! queue (1) from guest memory. Each chain is `command (readable) | response (writable)`; the
//! command is copied out of guest memory and decoded by the never-panicking decoder in
//! [`crate::protocol`], and every malformed command earns the spec's error response:
//!
//! | problem                                                   | response                      |
//! |-----------------------------------------------------------|-------------------------------|
//! | short/garbage header or body, unknown command             | `ERR_UNSPEC`                  |
//! | unknown, zero or duplicate resource id                    | `ERR_INVALID_RESOURCE_ID`     |
//! | scanout id ≥ num_scanouts                                 | `ERR_INVALID_SCANOUT_ID`      |
//! | rectangle outside the resource, bad format, zero size,    | `ERR_INVALID_PARAMETER`       |
//! | backing outside guest RAM or too short for a transfer     |                               |
//! | resource larger than the per-resource or total budget     | `ERR_OUT_OF_MEMORY`           |
//!
//! Pixels live in rutabaga_gfx resources. A resource's guest backing is kept as the guest's
//! scatter list (checked against guest memory when attached); each TRANSFER_TO_HOST_2D resolves it
//! through vm-memory's checked `get_slices` into host iovecs that are handed to rutabaga only for
//! the duration of that transfer, so no host pointer into guest memory outlives the call that
//! borrows the memory.

pub mod chain;

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use rutabaga_gfx::{
    ResourceCreate3D, Rutabaga, RutabagaBuilder, RutabagaComponentType, RutabagaFence,
    RutabagaHandler, RutabagaIovec, Transfer3D, RUTABAGA_PIPE_BIND_RENDER_TARGET,
    RUTABAGA_PIPE_TEXTURE_2D,
};
use tracing::{debug, trace, warn};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{GuestAddress, GuestMemory, Permissions};

use crate::display::{Display, Frame};
use crate::edid;
use crate::protocol::{
    self as p, cmd, features, format, Command, CommandError, CtrlHdr, DisplayOne, MemEntry, Rect,
    BYTES_PER_PIXEL, FLAG_FENCE,
};
use chain::GpuChain;

pub use crate::protocol::DEVICE_ID;

/// Queue indices.
pub const CONTROLQ: usize = 0;
pub const CURSORQ: usize = 1;
/// Number of virtqueues: control and cursor.
pub const NUM_QUEUES: usize = 2;
/// Largest queue size the device accepts.
pub const QUEUE_SIZE_MAX: u16 = 256;

/// Feature bits the device offers: VIRTIO_F_VERSION_1, VIRTIO_RING_F_INDIRECT_DESC,
/// VIRTIO_RING_F_EVENT_IDX, VIRTIO_GPU_F_EDID.
pub const FEATURES: u64 = (1 << 32) | (1 << 28) | (1 << 29) | (1 << features::VIRTIO_GPU_F_EDID);

/// Size of the device configuration space.
pub const CONFIG_SPACE_LEN: usize = 16;

/// Device configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuConfig {
    /// Size of each scanout (1 to 16 of them), reported by GET_DISPLAY_INFO and GET_EDID.
    pub scanouts: Vec<(u32, u32)>,
    /// Largest host memory one resource may take.
    pub max_resource_bytes: u64,
    /// Host memory all resources together may take.
    pub max_total_bytes: u64,
}

impl Default for GpuConfig {
    fn default() -> Self {
        Self {
            scanouts: vec![(1280, 800)],
            max_resource_bytes: 256 << 20,
            max_total_bytes: 512 << 20,
        }
    }
}

impl GpuConfig {
    /// One scanout of `width`×`height`.
    pub fn with_size(width: u32, height: u32) -> Self {
        Self {
            scanouts: vec![(width, height)],
            ..Self::default()
        }
    }
}

/// The device configuration space (virtio 1.2 §5.7.4), shareable with the transport's thread:
/// `events_read u32 | events_clear u32 | num_scanouts u32 | num_capsets u32`.
#[derive(Debug, Clone)]
pub struct ConfigSpace {
    events_read: Arc<AtomicU32>,
    num_scanouts: u32,
    num_capsets: u32,
}

impl ConfigSpace {
    pub fn new(num_scanouts: u32, num_capsets: u32) -> Self {
        Self {
            events_read: Arc::new(AtomicU32::new(0)),
            num_scanouts,
            num_capsets,
        }
    }

    /// Reads `data.len()` bytes at `offset`; bytes outside the space are left untouched.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        let mut c = [0u8; CONFIG_SPACE_LEN];
        c[0..4].copy_from_slice(&self.events_read.load(Ordering::Acquire).to_le_bytes());
        c[8..12].copy_from_slice(&self.num_scanouts.to_le_bytes());
        c[12..16].copy_from_slice(&self.num_capsets.to_le_bytes());
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        if let Some(src) = start.checked_add(data.len()).and_then(|e| c.get(start..e)) {
            data.copy_from_slice(src);
        }
    }

    /// Writes config space: only `events_clear` is writable; it clears bits of `events_read`.
    pub fn write(&self, offset: u64, data: &[u8]) {
        if offset == 4 && data.len() == 4 {
            let mut b = [0u8; 4];
            b.copy_from_slice(data);
            self.events_read
                .fetch_and(!u32::from_le_bytes(b), Ordering::AcqRel);
        } else {
            debug!("virtio-gpu: ignoring config write at {offset:#x}");
        }
    }

    /// Raises `events` in `events_read` (the transport must then signal a config change).
    pub fn raise(&self, events: u32) {
        self.events_read.fetch_or(events, Ordering::AcqRel);
    }

    pub fn events_read(&self) -> u32 {
        self.events_read.load(Ordering::Acquire)
    }
}

/// Why processing a queue failed as a whole (individual bad chains never fail the queue).
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("queue is not ready or its rings are outside guest memory: {0}")]
    Queue(virtio_queue::Error),
    #[error("rutabaga_gfx: {0}")]
    Rutabaga(#[from] rutabaga_gfx::RutabagaError),
}

/// Counters, for tests, benchmarks and monitoring.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeviceStats {
    pub commands: u64,
    pub errors: u64,
    pub bad_chains: u64,
    pub transfers: u64,
    pub flushes: u64,
    pub frames_presented: u64,
    pub display_errors: u64,
}

/// A resource as the guest created it.
#[derive(Debug)]
struct Resource {
    format: u32,
    width: u32,
    height: u32,
    bytes: u64,
    backing: Vec<MemEntry>,
    backing_len: u64,
    /// Host copy of the pixels for the display (allocated on first flush).
    shadow: Vec<u8>,
}

impl Resource {
    fn stride(&self) -> u32 {
        self.width * BYTES_PER_PIXEL
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Scanout {
    width: u32,
    height: u32,
    resource_id: u32,
    rect: Rect,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cursor {
    scanout: u32,
    x: u32,
    y: u32,
    resource_id: u32,
}

/// A command's outcome: the response type and, for the commands that have one, its body.
type Outcome = Result<Response, u32>;

enum Response {
    NoData,
    DisplayInfo(Vec<DisplayOne>),
    Edid(Vec<u8>),
    CapsetInfo { id: u32, version: u32, size: u32 },
}

/// The device.
pub struct GpuDevice {
    rutabaga: Rutabaga,
    config: GpuConfig,
    config_space: ConfigSpace,
    resources: HashMap<u32, Resource>,
    total_bytes: u64,
    scanouts: Vec<Scanout>,
    cursor: Cursor,
    display: Box<dyn Display>,
    /// Highest fence id rutabaga has signalled on the global timeline.
    fence_done: Arc<AtomicU64>,
    /// Control-queue chains held back until their fence signals: (fence_id, head, used len).
    fenced: Vec<(u64, u16, u32)>,
    stats: DeviceStats,
    out: Vec<u8>,
}

impl GpuDevice {
    /// Creates the device. `Rutabaga` is not `Send`: create the device on the thread that runs it.
    pub fn new(config: GpuConfig, display: Box<dyn Display>) -> Result<Self, DeviceError> {
        let n = config.scanouts.len().clamp(1, p::MAX_SCANOUTS) as u32;
        Self::with_config_space(config, display, ConfigSpace::new(n, 0))
    }

    /// Like [`Self::new`], with a config space the transport already shares (its
    /// `num_scanouts` must match `config`).
    pub fn with_config_space(
        mut config: GpuConfig,
        display: Box<dyn Display>,
        config_space: ConfigSpace,
    ) -> Result<Self, DeviceError> {
        config.scanouts.truncate(p::MAX_SCANOUTS);
        if config.scanouts.is_empty() {
            config.scanouts.push(GpuConfig::default().scanouts[0]);
        }
        let fence_done = Arc::new(AtomicU64::new(0));
        let done = Arc::clone(&fence_done);
        let handler = RutabagaHandler::new(move |f: RutabagaFence| {
            done.fetch_max(f.fence_id, Ordering::AcqRel);
        });
        let (w, h) = config.scanouts[0];
        let rutabaga = RutabagaBuilder::new(0, handler)
            .set_default_component(RutabagaComponentType::Rutabaga2D)
            .set_display_width(w)
            .set_display_height(h)
            .build()?;
        let scanouts = config
            .scanouts
            .iter()
            .map(|&(width, height)| Scanout {
                width,
                height,
                ..Scanout::default()
            })
            .collect::<Vec<_>>();
        let config_space = ConfigSpace {
            num_scanouts: scanouts.len() as u32,
            num_capsets: rutabaga.get_num_capsets(),
            ..config_space
        };
        Ok(Self {
            rutabaga,
            config,
            config_space,
            resources: HashMap::new(),
            total_bytes: 0,
            scanouts,
            cursor: Cursor::default(),
            display,
            fence_done,
            fenced: Vec::new(),
            stats: DeviceStats::default(),
            out: Vec::with_capacity(1024),
        })
    }

    /// The configuration space (clone it for the transport's thread).
    pub fn config_space(&self) -> &ConfigSpace {
        &self.config_space
    }

    pub fn stats(&self) -> DeviceStats {
        self.stats
    }

    /// Whether completed commands wait for a fence (poll the control queue again soon).
    pub fn has_pending_fences(&self) -> bool {
        !self.fenced.is_empty()
    }

    /// Number of live resources.
    pub fn resource_count(&self) -> usize {
        self.resources.len()
    }

    /// Host memory held by resources.
    pub fn resource_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Changes the size a scanout reports (a host window was resized) and raises
    /// `VIRTIO_GPU_EVENT_DISPLAY`; the caller must signal a config change to the driver.
    pub fn set_scanout_size(&mut self, scanout: u32, width: u32, height: u32) -> bool {
        let Some(s) = self.scanouts.get_mut(scanout as usize) else {
            return false;
        };
        s.width = width;
        s.height = height;
        if let Some(c) = self.config.scanouts.get_mut(scanout as usize) {
            *c = (width, height);
        }
        self.config_space.raise(p::EVENT_DISPLAY);
        true
    }

    /// The VM stops: lets the display write out buffered frames.
    pub fn finish(&mut self) {
        if let Err(e) = self.display.finish() {
            warn!("virtio-gpu display: {e}");
        }
    }

    /// Consumes every available chain of the control queue. Returns whether the driver must be
    /// interrupted.
    pub fn process_controlq<M: GuestMemory>(
        &mut self,
        mem: &M,
        queue: &mut Queue,
    ) -> Result<bool, DeviceError> {
        self.process(mem, queue, CONTROLQ)
    }

    /// Consumes every available chain of the cursor queue.
    pub fn process_cursorq<M: GuestMemory>(
        &mut self,
        mem: &M,
        queue: &mut Queue,
    ) -> Result<bool, DeviceError> {
        self.process(mem, queue, CURSORQ)
    }

    fn process<M: GuestMemory>(
        &mut self,
        mem: &M,
        queue: &mut Queue,
        which: usize,
    ) -> Result<bool, DeviceError> {
        let mut used_any = self.retire_fences(mem, queue);
        while let Some(chain) = queue.iter(mem).map_err(DeviceError::Queue)?.next() {
            let head = chain.head_index();
            let descs: Vec<Descriptor> = chain.collect();
            let (len, fence) = self.handle_chain(mem, &descs, which);
            match fence {
                Some(id) if id > self.fence_done.load(Ordering::Acquire) => {
                    self.fenced.push((id, head, len));
                }
                _ => {
                    if let Err(e) = queue.add_used(mem, head, len) {
                        warn!("virtio-gpu: cannot complete descriptor {head}: {e}");
                    }
                    used_any = true;
                }
            }
        }
        used_any |= self.retire_fences(mem, queue);
        if !used_any {
            return Ok(false);
        }
        queue.needs_notification(mem).map_err(DeviceError::Queue)
    }

    /// Completes held-back chains whose fence has signalled.
    fn retire_fences<M: GuestMemory>(&mut self, mem: &M, queue: &mut Queue) -> bool {
        if self.fenced.is_empty() {
            return false;
        }
        self.rutabaga.event_poll();
        let done = self.fence_done.load(Ordering::Acquire);
        let mut any = false;
        self.fenced.retain(|&(id, head, len)| {
            if id > done {
                return true;
            }
            if let Err(e) = queue.add_used(mem, head, len) {
                warn!("virtio-gpu: cannot complete descriptor {head}: {e}");
            }
            any = true;
            false
        });
        any
    }

    /// Handles one chain; returns the used length and the fence the completion waits for.
    pub fn handle_chain<M: GuestMemory>(
        &mut self,
        mem: &M,
        descs: &[Descriptor],
        which: usize,
    ) -> (u32, Option<u64>) {
        let chain = match GpuChain::new(mem, descs) {
            Ok(c) => c,
            Err(e) => {
                self.stats.bad_chains += 1;
                debug!("virtio-gpu: rejected chain: {e}");
                return (0, None);
            }
        };
        self.stats.commands += 1;
        let hdr = match CtrlHdr::decode(&mut p::Reader::new(&chain.command)) {
            Ok(h) => h,
            Err(e) => {
                debug!("virtio-gpu: bad header: {e}");
                self.stats.errors += 1;
                return (
                    self.respond(mem, &chain, &CtrlHdr::default(), Err(cmd::RESP_ERR_UNSPEC)),
                    None,
                );
            }
        };
        let outcome = match Command::decode(&hdr, &chain.command) {
            Ok(c) => {
                if tracing::enabled!(tracing::Level::TRACE) {
                    let mut text = format!("{c:?}");
                    if let Some((cut, _)) = text.char_indices().nth(160) {
                        text.truncate(cut);
                        text.push('…');
                    }
                    trace!(queue = which, flags = hdr.flags, "virtio-gpu: {text}");
                }
                self.execute(mem, which, c)
            }
            Err(e @ CommandError::TooManyEntries(_)) => {
                debug!("virtio-gpu: {e}");
                Err(cmd::RESP_ERR_INVALID_PARAMETER)
            }
            Err(e) => {
                debug!("virtio-gpu: command {:#x}: {e}", hdr.type_);
                Err(cmd::RESP_ERR_UNSPEC)
            }
        };
        if let Err(code) = outcome {
            self.stats.errors += 1;
            debug!("virtio-gpu: command {:#x} failed: {code:#x}", hdr.type_);
        }
        let fence = self.fence(&hdr, outcome.is_ok());
        (self.respond(mem, &chain, &hdr, outcome), fence)
    }

    /// Creates the fence a command asked for (only after it succeeded).
    fn fence(&mut self, hdr: &CtrlHdr, ok: bool) -> Option<u64> {
        if hdr.flags & FLAG_FENCE == 0 || !ok {
            return None;
        }
        // 2D has one global timeline: context and ring are ignored (no contexts exist).
        let f = RutabagaFence {
            flags: rutabaga_gfx::RUTABAGA_FLAG_FENCE,
            fence_id: hdr.fence_id,
            ctx_id: 0,
            ring_idx: 0,
        };
        match self.rutabaga.create_fence(f) {
            Ok(()) => Some(hdr.fence_id),
            Err(e) => {
                warn!("virtio-gpu: fence {}: {e}", hdr.fence_id);
                None
            }
        }
    }

    fn respond<M: GuestMemory>(
        &mut self,
        mem: &M,
        chain: &GpuChain,
        hdr: &CtrlHdr,
        outcome: Outcome,
    ) -> u32 {
        self.out.clear();
        match outcome {
            Ok(Response::NoData) => hdr.response(cmd::RESP_OK_NODATA).encode(&mut self.out),
            Ok(Response::DisplayInfo(modes)) => p::encode_display_info(
                &hdr.response(cmd::RESP_OK_DISPLAY_INFO),
                &modes,
                &mut self.out,
            ),
            Ok(Response::Edid(e)) => {
                p::encode_edid(&hdr.response(cmd::RESP_OK_EDID), &e, &mut self.out)
            }
            Ok(Response::CapsetInfo { id, version, size }) => p::encode_capset_info(
                &hdr.response(cmd::RESP_OK_CAPSET_INFO),
                id,
                version,
                size,
                &mut self.out,
            ),
            Err(code) => hdr.response(code).encode(&mut self.out),
        }
        let cap = chain.response_capacity();
        if (self.out.len() as u64) > cap {
            // Too small for the answer: say so if even that fits, else complete silently.
            self.out.clear();
            if cap < CtrlHdr::LEN as u64 {
                return 0;
            }
            hdr.response(cmd::RESP_ERR_UNSPEC).encode(&mut self.out);
        }
        match chain.write_response(mem, &self.out) {
            Ok(n) => n,
            Err(e) => {
                debug!("virtio-gpu: cannot write response: {e}");
                0
            }
        }
    }

    fn execute<M: GuestMemory>(&mut self, mem: &M, which: usize, c: Command) -> Outcome {
        if which == CURSORQ {
            return match c {
                Command::UpdateCursor(c) => self.update_cursor(c, true),
                Command::MoveCursor(c) => self.update_cursor(c, false),
                _ => Err(cmd::RESP_ERR_UNSPEC),
            };
        }
        match c {
            Command::GetDisplayInfo => Ok(Response::DisplayInfo(
                self.scanouts
                    .iter()
                    .map(|s| DisplayOne {
                        rect: Rect {
                            x: 0,
                            y: 0,
                            width: s.width,
                            height: s.height,
                        },
                        enabled: true,
                    })
                    .collect(),
            )),
            Command::GetEdid { scanout } => {
                let s = self
                    .scanouts
                    .get(scanout as usize)
                    .ok_or(cmd::RESP_ERR_INVALID_SCANOUT_ID)?;
                Ok(Response::Edid(edid::edid(s.width, s.height).to_vec()))
            }
            Command::GetCapsetInfo { index } => {
                let (id, version, size) = self
                    .rutabaga
                    .get_capset_info(index)
                    .map_err(|_| cmd::RESP_ERR_INVALID_PARAMETER)?;
                Ok(Response::CapsetInfo { id, version, size })
            }
            Command::ResourceCreate2d {
                resource_id,
                format,
                width,
                height,
            } => self.create_2d(resource_id, format, width, height),
            Command::ResourceUnref { resource_id } => self.unref(resource_id),
            Command::ResourceAttachBacking {
                resource_id,
                entries,
            } => self.attach_backing(mem, resource_id, entries),
            Command::ResourceDetachBacking { resource_id } => {
                let r = self
                    .resources
                    .get_mut(&resource_id)
                    .ok_or(cmd::RESP_ERR_INVALID_RESOURCE_ID)?;
                r.backing.clear();
                r.backing_len = 0;
                Ok(Response::NoData)
            }
            Command::TransferToHost2d {
                rect,
                offset,
                resource_id,
            } => self.transfer_to_host_2d(mem, rect, offset, resource_id),
            Command::SetScanout {
                rect,
                scanout_id,
                resource_id,
            } => self.set_scanout(rect, scanout_id, resource_id),
            Command::ResourceFlush { rect, resource_id } => self.flush(rect, resource_id),
            Command::GetCapset { .. }
            | Command::UpdateCursor(_)
            | Command::MoveCursor(_)
            | Command::Unsupported(_) => Err(cmd::RESP_ERR_UNSPEC),
        }
    }

    fn create_2d(&mut self, id: u32, fmt: u32, width: u32, height: u32) -> Outcome {
        if id == 0 || self.resources.contains_key(&id) {
            return Err(cmd::RESP_ERR_INVALID_RESOURCE_ID);
        }
        if format::rgba_offsets(fmt).is_none() || width == 0 || height == 0 {
            return Err(cmd::RESP_ERR_INVALID_PARAMETER);
        }
        let bytes =
            (u64::from(width) * u64::from(height)).saturating_mul(u64::from(BYTES_PER_PIXEL));
        if width.checked_mul(BYTES_PER_PIXEL).is_none()
            || bytes > self.config.max_resource_bytes
            || self.total_bytes + bytes > self.config.max_total_bytes
        {
            return Err(cmd::RESP_ERR_OUT_OF_MEMORY);
        }
        let create = ResourceCreate3D {
            target: RUTABAGA_PIPE_TEXTURE_2D,
            format: fmt,
            bind: RUTABAGA_PIPE_BIND_RENDER_TARGET,
            width,
            height,
            depth: 1,
            array_size: 1,
            last_level: 0,
            nr_samples: 0,
            flags: 0,
        };
        self.rutabaga
            .resource_create_3d(id, create)
            .map_err(|e| rutabaga_error(&e))?;
        self.total_bytes += bytes;
        self.resources.insert(
            id,
            Resource {
                format: fmt,
                width,
                height,
                bytes,
                backing: Vec::new(),
                backing_len: 0,
                shadow: Vec::new(),
            },
        );
        Ok(Response::NoData)
    }

    fn unref(&mut self, id: u32) -> Outcome {
        let r = self
            .resources
            .remove(&id)
            .ok_or(cmd::RESP_ERR_INVALID_RESOURCE_ID)?;
        self.total_bytes -= r.bytes;
        for s in &mut self.scanouts {
            if s.resource_id == id {
                s.resource_id = 0;
            }
        }
        if self.cursor.resource_id == id {
            self.cursor.resource_id = 0;
        }
        self.rutabaga
            .unref_resource(id)
            .map_err(|e| rutabaga_error(&e))?;
        Ok(Response::NoData)
    }

    fn attach_backing<M: GuestMemory>(
        &mut self,
        mem: &M,
        id: u32,
        entries: Vec<MemEntry>,
    ) -> Outcome {
        let r = self
            .resources
            .get_mut(&id)
            .ok_or(cmd::RESP_ERR_INVALID_RESOURCE_ID)?;
        let mut total = 0u64;
        for e in &entries {
            if !mem.check_range(GuestAddress(e.addr), e.length as usize, Permissions::Read) {
                debug!(
                    "virtio-gpu: backing [{:#x}, +{}) is outside guest memory",
                    e.addr, e.length
                );
                return Err(cmd::RESP_ERR_INVALID_PARAMETER);
            }
            total += u64::from(e.length);
        }
        r.backing = entries;
        r.backing_len = total;
        Ok(Response::NoData)
    }

    fn transfer_to_host_2d<M: GuestMemory>(
        &mut self,
        mem: &M,
        rect: Rect,
        offset: u64,
        id: u32,
    ) -> Outcome {
        let r = self
            .resources
            .get(&id)
            .ok_or(cmd::RESP_ERR_INVALID_RESOURCE_ID)?;
        if !rect.fits_in(r.width, r.height) {
            return Err(cmd::RESP_ERR_INVALID_PARAMETER);
        }
        if rect.is_empty() {
            return Ok(Response::NoData);
        }
        if r.backing.is_empty() {
            return Err(cmd::RESP_ERR_UNSPEC);
        }
        // The spec's `offset` is where the rectangle starts in the backing, whose rows are
        // `stride` apart; rutabaga wants the offset of pixel (0, 0).
        let stride = u64::from(r.stride());
        let rect_start = u64::from(rect.y) * stride + u64::from(rect.x) * 4;
        let base = offset
            .checked_sub(rect_start)
            .ok_or(cmd::RESP_ERR_INVALID_PARAMETER)?;
        let end = offset
            .checked_add((u64::from(rect.height) - 1) * stride + u64::from(rect.width) * 4)
            .ok_or(cmd::RESP_ERR_INVALID_PARAMETER)?;
        if end > r.backing_len {
            return Err(cmd::RESP_ERR_INVALID_PARAMETER);
        }
        let iovecs = resolve_backing(mem, &r.backing).ok_or(cmd::RESP_ERR_INVALID_PARAMETER)?;
        // rutabaga reads the iovecs only inside transfer_write; they point into `mem`, which this
        // call borrows, and are detached before it returns.
        self.rutabaga
            .attach_backing(id, iovecs)
            .map_err(|e| rutabaga_error(&e))?;
        let t = Transfer3D::new_2d(rect.x, rect.y, rect.width, rect.height, base);
        let res = self.rutabaga.transfer_write(0, id, t, None);
        if let Err(e) = self.rutabaga.detach_backing(id) {
            warn!("virtio-gpu: detach after transfer: {e}");
        }
        res.map_err(|e| rutabaga_error(&e))?;
        self.stats.transfers += 1;
        Ok(Response::NoData)
    }

    fn set_scanout(&mut self, rect: Rect, scanout_id: u32, id: u32) -> Outcome {
        let s = *self
            .scanouts
            .get(scanout_id as usize)
            .ok_or(cmd::RESP_ERR_INVALID_SCANOUT_ID)?;
        if id == 0 {
            self.scanouts[scanout_id as usize] = Scanout {
                resource_id: 0,
                rect: Rect::default(),
                ..s
            };
            return Ok(Response::NoData);
        }
        let r = self
            .resources
            .get(&id)
            .ok_or(cmd::RESP_ERR_INVALID_RESOURCE_ID)?;
        if rect.is_empty() || !rect.fits_in(r.width, r.height) {
            return Err(cmd::RESP_ERR_INVALID_PARAMETER);
        }
        self.scanouts[scanout_id as usize] = Scanout {
            resource_id: id,
            rect,
            ..s
        };
        Ok(Response::NoData)
    }

    fn flush(&mut self, rect: Rect, id: u32) -> Outcome {
        let r = self
            .resources
            .get_mut(&id)
            .ok_or(cmd::RESP_ERR_INVALID_RESOURCE_ID)?;
        if !rect.fits_in(r.width, r.height) {
            return Err(cmd::RESP_ERR_INVALID_PARAMETER);
        }
        self.stats.flushes += 1;
        if !self.display.wants_frames() {
            return Ok(Response::NoData);
        }
        for (idx, s) in self.scanouts.iter().enumerate() {
            if s.resource_id != id || rect.intersect(&s.rect).is_empty() {
                continue;
            }
            // Bring the flushed part of the scanout into the shadow copy, then show the scanout.
            let dirty = rect.intersect(&s.rect);
            let stride = r.stride();
            if r.shadow.is_empty() {
                r.shadow = vec![0; r.bytes as usize];
            }
            let mut t = Transfer3D::new_2d(dirty.x, dirty.y, dirty.width, dirty.height, 0);
            t.stride = stride;
            self.rutabaga
                .transfer_read(0, id, t, Some(IoSliceMut::new(&mut r.shadow)))
                .map_err(|e| rutabaga_error(&e))?;
            let start = s.rect.y as usize * stride as usize + s.rect.x as usize * 4;
            let frame = Frame {
                width: s.rect.width,
                height: s.rect.height,
                stride,
                format: r.format,
                data: r.shadow.get(start..).unwrap_or_default(),
            };
            match self.display.present(idx as u32, &frame) {
                Ok(()) => self.stats.frames_presented += 1,
                Err(e) => {
                    self.stats.display_errors += 1;
                    warn!("virtio-gpu display: {e}");
                }
            }
        }
        Ok(Response::NoData)
    }

    fn update_cursor(&mut self, c: p::CursorCmd, update: bool) -> Outcome {
        if c.scanout_id as usize >= self.scanouts.len() {
            return Err(cmd::RESP_ERR_INVALID_SCANOUT_ID);
        }
        if update && c.resource_id != 0 && !self.resources.contains_key(&c.resource_id) {
            return Err(cmd::RESP_ERR_INVALID_RESOURCE_ID);
        }
        self.cursor.scanout = c.scanout_id;
        self.cursor.x = c.x;
        self.cursor.y = c.y;
        if update {
            self.cursor.resource_id = c.resource_id;
        }
        self.display.cursor(
            self.cursor.scanout,
            self.cursor.x,
            self.cursor.y,
            self.cursor.resource_id != 0,
        );
        Ok(Response::NoData)
    }
}

/// The guest scatter list as host iovecs, through vm-memory's checked slice lookup (an entry that
/// spans two guest memory regions becomes two iovecs). `None` if any part is not guest RAM.
fn resolve_backing<M: GuestMemory>(mem: &M, backing: &[MemEntry]) -> Option<Vec<RutabagaIovec>> {
    let mut iovecs = Vec::with_capacity(backing.len());
    for e in backing {
        let slices = mem
            .get_slices(GuestAddress(e.addr), e.length as usize, Permissions::Read)
            .ok()?;
        let mut covered = 0usize;
        for s in slices {
            let s = s.ok()?;
            covered += s.len();
            iovecs.push(RutabagaIovec {
                base: s.ptr_guard().as_ptr() as *mut std::ffi::c_void,
                len: s.len(),
            });
        }
        if covered != e.length as usize {
            return None;
        }
    }
    Some(iovecs)
}

/// Maps a rutabaga error to a response code.
fn rutabaga_error(e: &rutabaga_gfx::RutabagaError) -> u32 {
    use rutabaga_gfx::RutabagaError as E;
    debug!("virtio-gpu: rutabaga: {e}");
    match e {
        E::InvalidResourceId => cmd::RESP_ERR_INVALID_RESOURCE_ID,
        E::InvalidContextId => cmd::RESP_ERR_INVALID_CONTEXT_ID,
        E::CheckedArithmetic { .. } | E::CheckedRange { .. } | E::InvalidIovec => {
            cmd::RESP_ERR_INVALID_PARAMETER
        }
        _ => cmd::RESP_ERR_UNSPEC,
    }
}

#[cfg(test)]
mod tests;
