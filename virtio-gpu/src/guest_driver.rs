//! A scripted guest driver for tests and benchmarks: split virtqueues laid out in guest memory
//! the way a driver lays them out, and virtio-gpu commands encoded the way Linux's virtio-gpu DRM
//! driver (`drivers/gpu/drm/virtio/virtgpu_vq.c`) encodes them: the command struct in one
//! readable buffer, ATTACH_BACKING's entries in a second one, the response in a writable buffer.

use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory};

use crate::protocol::{cmd, CtrlHdr, MemEntry, Rect, FLAG_FENCE};

/// Why the scripted driver failed (a bug in the test, or a device that broke the ring).
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
    #[error("virtqueue setup: {0}")]
    Queue(#[from] virtio_queue::Error),
    #[error("the ring is full")]
    Full,
}

const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;

/// The driver side of one split virtqueue (virtio 1.2 §2.7).
#[derive(Debug)]
pub struct SplitRing {
    size: u16,
    desc: GuestAddress,
    avail: GuestAddress,
    used: GuestAddress,
    next_desc: u16,
    avail_idx: u16,
    used_idx: u16,
    in_flight: u16,
}

impl SplitRing {
    /// Bytes of guest memory a ring of `size` entries needs at its base (16-byte aligned).
    pub fn footprint(size: u16) -> u64 {
        let n = u64::from(size);
        let desc = 16 * n;
        let avail = (6 + 2 * n + 15) & !15;
        let used = 6 + 8 * n;
        desc + avail + used
    }

    /// Lays out a ring of `size` (a power of two) entries at `base` and zeroes it.
    pub fn new<M: GuestMemory>(
        mem: &M,
        base: GuestAddress,
        size: u16,
    ) -> Result<Self, DriverError> {
        let n = u64::from(size);
        let desc = base;
        let avail = desc.unchecked_add(16 * n);
        let used = avail.unchecked_add((6 + 2 * n + 15) & !15);
        mem.write_slice(&vec![0u8; Self::footprint(size) as usize], base)?;
        Ok(Self {
            size,
            desc,
            avail,
            used,
            next_desc: 0,
            avail_idx: 0,
            used_idx: 0,
            in_flight: 0,
        })
    }

    /// The device's view: what a transport hands the device after the driver set it up.
    pub fn device_queue(&self) -> Result<Queue, DriverError> {
        let mut q = Queue::new(self.size)?;
        q.set_size(self.size);
        q.set_desc_table_address(Some(self.desc.0 as u32), Some((self.desc.0 >> 32) as u32));
        q.set_avail_ring_address(Some(self.avail.0 as u32), Some((self.avail.0 >> 32) as u32));
        q.set_used_ring_address(Some(self.used.0 as u32), Some((self.used.0 >> 32) as u32));
        q.set_ready(true);
        Ok(q)
    }

    /// Guest addresses of the descriptor table, available ring and used ring.
    pub fn addresses(&self) -> (GuestAddress, GuestAddress, GuestAddress) {
        (self.desc, self.avail, self.used)
    }

    /// Makes a chain of `(addr, len, device_writable)` buffers available; returns its head.
    pub fn push<M: GuestMemory>(
        &mut self,
        mem: &M,
        bufs: &[(GuestAddress, u32, bool)],
    ) -> Result<u16, DriverError> {
        let n = bufs.len() as u16;
        if n == 0 || self.in_flight + n > self.size {
            return Err(DriverError::Full);
        }
        let head = self.next_desc;
        for (i, &(addr, len, write)) in bufs.iter().enumerate() {
            let idx = (head + i as u16) % self.size;
            let next = (idx + 1) % self.size;
            let mut flags = if write { DESC_F_WRITE } else { 0 };
            if i + 1 < bufs.len() {
                flags |= DESC_F_NEXT;
            }
            let d = self.desc.unchecked_add(16 * u64::from(idx));
            mem.write_obj(addr.0.to_le(), d)?;
            mem.write_obj(len.to_le(), d.unchecked_add(8))?;
            mem.write_obj(flags.to_le(), d.unchecked_add(12))?;
            mem.write_obj(next.to_le(), d.unchecked_add(14))?;
        }
        self.next_desc = (head + n) % self.size;
        self.in_flight += n;
        let slot = self
            .avail
            .unchecked_add(4 + 2 * u64::from(self.avail_idx % self.size));
        mem.write_obj(head.to_le(), slot)?;
        self.avail_idx = self.avail_idx.wrapping_add(1);
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        mem.write_obj(self.avail_idx.to_le(), self.avail.unchecked_add(2))?;
        Ok(head)
    }

    /// Takes the next used element, if the device produced one: `(head, len)`. `chain_len` is
    /// the number of descriptors of that chain (all chains of one test use a known count).
    pub fn pop_used<M: GuestMemory>(&mut self, mem: &M) -> Result<Option<(u16, u32)>, DriverError> {
        let idx: u16 = mem.read_obj(self.used.unchecked_add(2))?;
        if idx == self.used_idx {
            return Ok(None);
        }
        let e = self
            .used
            .unchecked_add(4 + 8 * u64::from(self.used_idx % self.size));
        let id: u32 = mem.read_obj(e)?;
        let len: u32 = mem.read_obj(e.unchecked_add(4))?;
        self.used_idx = self.used_idx.wrapping_add(1);
        Ok(Some((id as u16, len)))
    }

    /// The driver got back a chain of `n` descriptors.
    pub fn release(&mut self, n: u16) {
        self.in_flight = self.in_flight.saturating_sub(n);
    }
}

fn hdr(type_: u32, fence: Option<u64>) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    CtrlHdr {
        type_,
        flags: if fence.is_some() { FLAG_FENCE } else { 0 },
        fence_id: fence.unwrap_or(0),
        ..CtrlHdr::default()
    }
    .encode(&mut v);
    v
}

fn push_u32s(v: &mut Vec<u8>, vals: &[u32]) {
    for x in vals {
        v.extend_from_slice(&x.to_le_bytes());
    }
}

/// `VIRTIO_GPU_CMD_GET_DISPLAY_INFO`.
pub fn get_display_info() -> Vec<u8> {
    hdr(cmd::GET_DISPLAY_INFO, None)
}

/// `VIRTIO_GPU_CMD_GET_EDID` for `scanout`.
pub fn get_edid(scanout: u32) -> Vec<u8> {
    let mut v = hdr(cmd::GET_EDID, None);
    push_u32s(&mut v, &[scanout, 0]);
    v
}

/// `VIRTIO_GPU_CMD_RESOURCE_CREATE_2D`.
pub fn resource_create_2d(id: u32, format: u32, width: u32, height: u32) -> Vec<u8> {
    let mut v = hdr(cmd::RESOURCE_CREATE_2D, None);
    push_u32s(&mut v, &[id, format, width, height]);
    v
}

/// `VIRTIO_GPU_CMD_RESOURCE_UNREF`.
pub fn resource_unref(id: u32) -> Vec<u8> {
    let mut v = hdr(cmd::RESOURCE_UNREF, None);
    push_u32s(&mut v, &[id, 0]);
    v
}

/// `VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING`: the command and, separately, its entries.
pub fn resource_attach_backing(id: u32, entries: &[MemEntry]) -> (Vec<u8>, Vec<u8>) {
    let mut v = hdr(cmd::RESOURCE_ATTACH_BACKING, None);
    push_u32s(&mut v, &[id, entries.len() as u32]);
    let mut e = Vec::with_capacity(entries.len() * MemEntry::LEN);
    for m in entries {
        e.extend_from_slice(&m.addr.to_le_bytes());
        push_u32s(&mut e, &[m.length, 0]);
    }
    (v, e)
}

/// `VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING`.
pub fn resource_detach_backing(id: u32) -> Vec<u8> {
    let mut v = hdr(cmd::RESOURCE_DETACH_BACKING, None);
    push_u32s(&mut v, &[id, 0]);
    v
}

/// `VIRTIO_GPU_CMD_SET_SCANOUT`.
pub fn set_scanout(scanout: u32, id: u32, r: Rect) -> Vec<u8> {
    let mut v = hdr(cmd::SET_SCANOUT, None);
    r.encode(&mut v);
    push_u32s(&mut v, &[scanout, id]);
    v
}

/// `VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D`, with Linux's offset (`y * pitch + x * cpp`) and an
/// optional fence.
pub fn transfer_to_host_2d(id: u32, r: Rect, width: u32, fence: Option<u64>) -> Vec<u8> {
    let mut v = hdr(cmd::TRANSFER_TO_HOST_2D, fence);
    r.encode(&mut v);
    let offset = u64::from(r.y) * u64::from(width) * 4 + u64::from(r.x) * 4;
    v.extend_from_slice(&offset.to_le_bytes());
    push_u32s(&mut v, &[id, 0]);
    v
}

/// `VIRTIO_GPU_CMD_RESOURCE_FLUSH`.
pub fn resource_flush(id: u32, r: Rect, fence: Option<u64>) -> Vec<u8> {
    let mut v = hdr(cmd::RESOURCE_FLUSH, fence);
    r.encode(&mut v);
    push_u32s(&mut v, &[id, 0]);
    v
}

/// `VIRTIO_GPU_CMD_UPDATE_CURSOR` (or MOVE_CURSOR when `id` is `None`).
pub fn cursor(scanout: u32, x: u32, y: u32, id: Option<u32>) -> Vec<u8> {
    let t = if id.is_some() {
        cmd::UPDATE_CURSOR
    } else {
        cmd::MOVE_CURSOR
    };
    let mut v = hdr(t, None);
    push_u32s(&mut v, &[scanout, x, y, 0, id.unwrap_or(0), 0, 0, 0]);
    v
}

/// Guest layout used by [`Harness`].
const CTRL_RING: u64 = 0x1000;
const CURSOR_RING: u64 = 0x8000;
const CMD_BUF: u64 = 0x10000;
const DATA_BUF: u64 = 0x20000;
const RESP_BUF: u64 = 0x70000;
/// First guest address [`Harness::alloc`] hands out.
pub const HEAP_START: u64 = 0x10_0000;

/// A guest (memory, the two rings, a bump allocator) wired straight to a [`GpuDevice`]'s
/// queue-processing entry points, as the transport would after DRIVER_OK.
pub struct Harness {
    pub mem: vm_memory::GuestMemoryMmap,
    pub ctrl: SplitRing,
    pub cursor: SplitRing,
    ctrl_q: Queue,
    cursor_q: Queue,
    heap: u64,
}

/// What the device answered to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Bytes the device reported in the used ring.
    pub used_len: u32,
    /// The response buffer (as large as the driver provided).
    pub bytes: Vec<u8>,
}

impl Reply {
    /// The response header's type (0 if the device wrote nothing).
    pub fn type_(&self) -> u32 {
        CtrlHdr::decode(&mut crate::protocol::Reader::new(&self.bytes))
            .map(|h| if self.used_len == 0 { 0 } else { h.type_ })
            .unwrap_or(0)
    }

    pub fn header(&self) -> CtrlHdr {
        CtrlHdr::decode(&mut crate::protocol::Reader::new(&self.bytes)).unwrap_or_default()
    }
}

impl Harness {
    /// A guest with `mem_size` bytes of RAM at guest address 0.
    pub fn new(mem_size: usize) -> Result<Self, DriverError> {
        let mem = vm_memory::GuestMemoryMmap::from_ranges(&[(GuestAddress(0), mem_size)])
            .map_err(|_| DriverError::Full)?;
        let ctrl = SplitRing::new(&mem, GuestAddress(CTRL_RING), 64)?;
        let cursor = SplitRing::new(&mem, GuestAddress(CURSOR_RING), 16)?;
        let ctrl_q = ctrl.device_queue()?;
        let cursor_q = cursor.device_queue()?;
        Ok(Self {
            mem,
            ctrl,
            cursor,
            ctrl_q,
            cursor_q,
            heap: HEAP_START,
        })
    }

    /// Allocates `len` bytes of guest memory (page aligned).
    pub fn alloc(&mut self, len: u64) -> GuestAddress {
        let a = self.heap;
        self.heap = (self.heap + len + 0xfff) & !0xfff;
        GuestAddress(a)
    }

    /// Sends one control command (`data`: a second readable buffer, as ATTACH_BACKING's entries)
    /// with a `resp_len`-byte response buffer; returns the device's reply.
    pub fn ctrl(
        &mut self,
        dev: &mut crate::GpuDevice,
        command: &[u8],
        data: Option<&[u8]>,
        resp_len: u32,
    ) -> Result<Reply, DriverError> {
        self.submit(dev, false, command, data, resp_len)
    }

    /// Sends one cursor command (no response buffer, as Linux does).
    pub fn cursor_cmd(
        &mut self,
        dev: &mut crate::GpuDevice,
        command: &[u8],
    ) -> Result<Reply, DriverError> {
        self.submit(dev, true, command, None, 0)
    }

    /// Sends a raw chain of `(addr, len, writable)` buffers on the control queue.
    pub fn raw_chain(
        &mut self,
        dev: &mut crate::GpuDevice,
        bufs: &[(GuestAddress, u32, bool)],
    ) -> Result<u32, DriverError> {
        self.ctrl.push(&self.mem, bufs)?;
        let _ = dev.process_controlq(&self.mem, &mut self.ctrl_q);
        let (_, len) = self.ctrl.pop_used(&self.mem)?.ok_or(DriverError::Full)?;
        self.ctrl.release(bufs.len() as u16);
        Ok(len)
    }

    fn submit(
        &mut self,
        dev: &mut crate::GpuDevice,
        cursor: bool,
        command: &[u8],
        data: Option<&[u8]>,
        resp_len: u32,
    ) -> Result<Reply, DriverError> {
        let mut bufs = Vec::with_capacity(3);
        self.mem.write_slice(command, GuestAddress(CMD_BUF))?;
        bufs.push((GuestAddress(CMD_BUF), command.len() as u32, false));
        if let Some(d) = data {
            self.mem.write_slice(d, GuestAddress(DATA_BUF))?;
            bufs.push((GuestAddress(DATA_BUF), d.len() as u32, false));
        }
        if resp_len > 0 {
            self.mem
                .write_slice(&vec![0u8; resp_len as usize], GuestAddress(RESP_BUF))?;
            bufs.push((GuestAddress(RESP_BUF), resp_len, true));
        }
        let n = bufs.len() as u16;
        let (ring, q) = if cursor {
            (&mut self.cursor, &mut self.cursor_q)
        } else {
            (&mut self.ctrl, &mut self.ctrl_q)
        };
        ring.push(&self.mem, &bufs)?;
        let _ = if cursor {
            dev.process_cursorq(&self.mem, q)
        } else {
            dev.process_controlq(&self.mem, q)
        };
        let (_, used_len) = ring.pop_used(&self.mem)?.ok_or(DriverError::Full)?;
        ring.release(n);
        let mut bytes = vec![0u8; resp_len as usize];
        self.mem.read_slice(&mut bytes, GuestAddress(RESP_BUF))?;
        Ok(Reply { used_len, bytes })
    }
}
