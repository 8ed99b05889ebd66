//! The virtio-cuda device model (virtio 1.x, device id [`DEVICE_ID`]).
//!
//! Transport-agnostic: it consumes descriptor chains of its request queue from guest memory and
//! is driven by our VMM's virtio-mmio transport and by the vhost-user backend alike. See
//! `docs/PROTOCOL.md` §7 for the chain layout; in short:
//!
//! ```text
//! readable:  envelope (16 B) | request frame (16 B header + body) | H2D data window …
//! writable:  response buffer (first writable descriptor)          | D2H data window …
//! ```
//!
//! Each chain is validated where it is read: every descriptor must lie in guest memory
//! (vm-memory's checked accessors), chains are bounded by the queue size (virtio-queue stops
//! loops), frames are decoded by the never-panicking protocol decoder, and a bad chain only earns
//! an error reply (or a zero-length completion) for that chain.

pub mod chain;
pub mod envelope;

use std::collections::HashMap;

use tracing::{debug, warn};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{GuestMemory, GuestMemoryMmap};

use crate::protocol::{self as p, ResponseKind, Status, PROTOCOL_VERSION};
use crate::service::FrameService;
use chain::{ChainData, ChainError};
use envelope::{Envelope, EnvelopeOp};

/// Our virtio device id. Not assigned by OASIS; chosen from the high range no standard device
/// will use. Guests match it in their driver's id table.
pub const DEVICE_ID: u32 = 0xC0DA;

/// Number of virtqueues: one request queue.
pub const NUM_QUEUES: usize = 1;

/// Largest queue size the device accepts.
pub const QUEUE_SIZE_MAX: u16 = 256;

/// Sessions one guest may hold open at once.
pub const MAX_SESSIONS: u32 = 4096;

/// Largest total data window of one chain (either direction).
pub const MAX_DATA_WINDOW: u64 = 64 << 20;

/// Feature bits the device offers: VIRTIO_F_VERSION_1, VIRTIO_RING_F_INDIRECT_DESC,
/// VIRTIO_RING_F_EVENT_IDX.
pub const FEATURES: u64 = (1 << 32) | (1 << 28) | (1 << 29);

/// The device's read-only configuration space (little-endian):
/// `protocol_version u32 | max_sessions u32 | max_data_window u64`.
pub fn config_space() -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0..4].copy_from_slice(&u32::from(PROTOCOL_VERSION).to_le_bytes());
    c[4..8].copy_from_slice(&MAX_SESSIONS.to_le_bytes());
    c[8..16].copy_from_slice(&MAX_DATA_WINDOW.to_le_bytes());
    c
}

/// Why processing a queue failed as a whole (individual bad chains never fail the queue).
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("queue is not ready or its rings are outside guest memory: {0}")]
    Queue(virtio_queue::Error),
}

/// Counters, for tests and monitoring.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeviceStats {
    pub chains: u64,
    pub bad_chains: u64,
    pub sessions_opened: u64,
    pub sessions_closed: u64,
}

/// The device: guest sessions (one per guest file handle) over a [`FrameService`].
pub struct CudaDevice<S: FrameService> {
    service: S,
    sessions: HashMap<u64, S::Conn>,
    stats: DeviceStats,
    out: Vec<u8>,
}

impl<S: FrameService> CudaDevice<S> {
    pub fn new(service: S) -> Self {
        Self {
            service,
            sessions: HashMap::new(),
            stats: DeviceStats::default(),
            out: Vec::with_capacity(4096),
        }
    }

    pub fn stats(&self) -> DeviceStats {
        self.stats
    }

    /// Number of open guest sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Device reset: every guest session is closed and its resources freed.
    pub fn reset(&mut self) {
        self.stats.sessions_closed += self.sessions.len() as u64;
        self.sessions.clear();
    }

    /// Consumes every available chain of `queue`. Returns whether the driver must be
    /// interrupted (a used buffer was added and the driver has not suppressed notifications).
    pub fn process_queue<M: GuestMemory>(
        &mut self,
        mem: &M,
        queue: &mut Queue,
    ) -> Result<bool, DeviceError> {
        let mut used_any = false;
        while let Some(chain) = queue.iter(mem).map_err(DeviceError::Queue)?.next() {
            let head = chain.head_index();
            let len = self.handle_chain(mem, chain.collect());
            if let Err(e) = queue.add_used(mem, head, len) {
                warn!("cannot complete descriptor {head}: {e}");
            }
            used_any = true;
        }
        if !used_any {
            return Ok(false);
        }
        queue.needs_notification(mem).map_err(DeviceError::Queue)
    }

    /// Handles one chain (its descriptors in order); returns the bytes written for the used ring.
    pub fn handle_chain<M: GuestMemory>(
        &mut self,
        mem: &M,
        descs: Vec<virtio_queue::desc::split::Descriptor>,
    ) -> u32 {
        self.stats.chains += 1;
        match self.try_handle_chain(mem, &descs) {
            Ok(len) => len,
            Err(e) => {
                self.stats.bad_chains += 1;
                debug!("rejected chain: {e}");
                0
            }
        }
    }

    fn try_handle_chain<M: GuestMemory>(
        &mut self,
        mem: &M,
        descs: &[virtio_queue::desc::split::Descriptor],
    ) -> Result<u32, ChainError> {
        let chain = ChainData::new(mem, descs)?;
        let env = Envelope::decode(&chain.read_prefix(envelope::LEN)?)?;
        match env.op {
            EnvelopeOp::Close => {
                if self.sessions.remove(&env.session).is_some() {
                    self.stats.sessions_closed += 1;
                }
                Ok(0)
            }
            EnvelopeOp::Frame => self.frame(&chain, env.session),
        }
    }

    fn frame<M: GuestMemory>(
        &mut self,
        chain: &ChainData<'_, M>,
        session: u64,
    ) -> Result<u32, ChainError> {
        let frame = chain.read_frame(envelope::LEN)?;
        let header = p::RequestHeader::get(&mut p::Reader::new(&frame))?;
        if !self.sessions.contains_key(&session) {
            if self.sessions.len() >= MAX_SESSIONS as usize {
                return self.reply_error(chain, &header, Status::ERROR_OUT_OF_MEMORY);
            }
            self.sessions.insert(session, self.service.connect());
            self.stats.sessions_opened += 1;
        }
        let Some(conn) = self.sessions.get_mut(&session) else {
            return Err(ChainError::Internal);
        };
        self.out.clear();
        let data = chain.data_access(envelope::LEN + frame.len() as u64);
        match self.service.frame(conn, &frame, &data, &mut self.out) {
            Ok(bye) => {
                if bye {
                    self.sessions.remove(&session);
                    self.stats.sessions_closed += 1;
                }
            }
            Err(reason) => {
                warn!(session, "closing guest session: {reason}");
                self.sessions.remove(&session);
                self.stats.sessions_closed += 1;
                if header.is_async() {
                    return Ok(0);
                }
                return self.reply_error(chain, &header, Status::ERROR_NOT_INITIALIZED);
            }
        }
        if self.out.is_empty() {
            return Ok(data.bytes_written());
        }
        let cap = chain.response_capacity();
        if self.out.len() as u64 > cap {
            // Keep the reply (the last frame); drop device output that does not fit.
            warn!(
                session,
                "response of {} bytes does not fit the {cap}-byte buffer",
                self.out.len()
            );
            let reply = last_frame(&self.out).to_vec();
            if reply.len() as u64 > cap {
                return self.reply_error(chain, &header, Status::ERROR_INVALID_VALUE);
            }
            self.out = reply;
        }
        chain.write_response(&self.out)?;
        Ok((self.out.len() as u64 + data.bytes_written() as u64).min(u64::from(u32::MAX)) as u32)
    }

    fn reply_error<M: GuestMemory>(
        &self,
        chain: &ChainData<'_, M>,
        header: &p::RequestHeader,
        status: Status,
    ) -> Result<u32, ChainError> {
        if header.is_async() {
            return Ok(0);
        }
        let mut out = Vec::new();
        p::encode_response(
            ResponseKind::Reply,
            header.seq,
            status,
            &p::Empty {},
            &mut out,
        );
        chain.write_response(&out)?;
        Ok(out.len() as u32)
    }
}

/// The last complete frame of a response buffer (the reply comes after any output frames).
fn last_frame(out: &[u8]) -> &[u8] {
    let mut start = 0usize;
    let mut last = out;
    while start + p::HEADER_LEN <= out.len() {
        let Ok(h) = p::ResponseHeader::get(&mut p::Reader::new(&out[start..])) else {
            break;
        };
        let end = start + p::HEADER_LEN + h.body_len as usize;
        if end > out.len() {
            break;
        }
        last = &out[start..end];
        start = end;
    }
    last
}

#[cfg(test)]
mod tests;

/// The device as every transport serves it (the VMM's virtio-mmio transport, vhost-user).
impl<S: FrameService + 'static> virtio_common::device::QueueDevice for CudaDevice<S> {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn device_id(&self) -> u32 {
        DEVICE_ID
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
        virtio_common::device::copy_config(&config_space(), offset, data);
    }

    fn process_queue(
        &mut self,
        _index: usize,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
    ) -> Result<bool, String> {
        CudaDevice::process_queue(self, mem, queue).map_err(|e| e.to_string())
    }

    fn reset(&mut self) {
        CudaDevice::reset(self);
    }
}
