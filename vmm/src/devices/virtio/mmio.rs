//! virtio-mmio transport, version 2 (virtio 1.2 §4.2.2; "modern" only: VIRTIO_F_VERSION_1 must
//! be negotiated). The only code in the VMM that knows register offsets.
//!
//! Guest misuse is ignored and logged, never fatal: control registers accept only aligned 32-bit
//! accesses; writes to read-only registers, reads of write-only registers (they read 0), queue
//! registers outside the FEATURES_OK..DRIVER_OK window or for a queue that does not exist, bad
//! queue sizes (0, above QueueNumMax, not a power of two), out-of-order status transitions and
//! notifications of unknown queues are all dropped. FEATURES_OK is refused when the driver
//! accepted features the device did not offer or did not accept VIRTIO_F_VERSION_1; DRIVER_OK
//! with an invalid ready queue (rings outside guest memory or misaligned) sets
//! DEVICE_NEEDS_RESET instead of activating the device.

use tracing::{debug, warn};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{features, status, Activation, Interrupt, VirtioDevice};
use crate::devices::BusDevice;

/// "virt" in little-endian.
pub const MAGIC_VALUE: u32 = 0x7472_6976;
/// Transport version 2 (modern).
pub const MMIO_VERSION: u32 = 2;
/// Our vendor id ("VCDA").
pub const VENDOR_ID: u32 = 0x4144_4356;

/// Register offsets (virtio 1.2 §4.2.2, table 4.1).
pub mod reg {
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const SHM_SEL: u64 = 0x0ac;
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    pub const QUEUE_RESET: u64 = 0x0c0;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// Why the transport could not be created.
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    #[error("cannot create a queue notification eventfd: {0}")]
    EventFd(std::io::Error),
    #[error("device offers an invalid queue (max size {0})")]
    Queue(u16),
    #[error("device type {0:#x} does not offer VIRTIO_F_VERSION_1")]
    NotModern(u32),
}

/// One virtio-mmio window (4 KiB) in front of one device.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    interrupt: Interrupt,
    queues: Vec<Queue>,
    queue_evts: Vec<EventFd>,
    device_status: u32,
    activated: bool,
    features_select: u32,
    acked_features_select: u32,
    acked_features: u64,
    queue_select: u32,
}

impl MmioTransport {
    /// Wraps `device`; `interrupt` carries the device's irqfd.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        interrupt: Interrupt,
    ) -> Result<Self, MmioError> {
        if device.device_features() & (1 << features::VIRTIO_F_VERSION_1) == 0 {
            return Err(MmioError::NotModern(device.device_type()));
        }
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&max| Queue::new(max).map_err(|_| MmioError::Queue(max)))
            .collect::<Result<Vec<_>, _>>()?;
        let queue_evts = (0..queues.len())
            .map(|_| EventFd::new(EFD_NONBLOCK).map_err(MmioError::EventFd))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            device,
            mem,
            interrupt,
            queues,
            queue_evts,
            device_status: 0,
            activated: false,
            features_select: 0,
            acked_features_select: 0,
            acked_features: 0,
            queue_select: 0,
        })
    }

    /// One eventfd per queue; register each as ioeventfd on `base + QUEUE_NOTIFY` with the queue
    /// index as datamatch, and poll it in the event loop (then call [`Self::notify`]).
    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    pub fn interrupt(&self) -> &Interrupt {
        &self.interrupt
    }

    pub fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    /// Current device status (for tests and logs).
    pub fn device_status(&self) -> u32 {
        self.device_status
    }

    pub fn is_activated(&self) -> bool {
        self.activated
    }

    /// The driver notified `queue`: forward to the device if it is live.
    pub fn notify(&mut self, queue: u32) {
        let idx = queue as usize;
        if !self.activated || idx >= self.queues.len() {
            warn!(
                "virtio-mmio: notify of queue {queue} ignored (device type {:#x}, {})",
                self.device.device_type(),
                if self.activated {
                    "no such queue"
                } else {
                    "device not live"
                }
            );
            return;
        }
        self.device.queue_notify(idx);
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_select as usize)
    }

    fn has_status(&self, set: u32, clear: u32) -> bool {
        self.device_status & set == set && self.device_status & clear == 0
    }

    fn reset(&mut self) {
        if self.activated {
            self.device.reset();
        }
        self.activated = false;
        for q in &mut self.queues {
            q.reset();
        }
        self.device_status = 0;
        self.features_select = 0;
        self.acked_features_select = 0;
        self.acked_features = 0;
        self.queue_select = 0;
        self.interrupt.clear();
    }

    fn features_acceptable(&self) -> bool {
        let offered = self.device.device_features();
        self.acked_features & !offered == 0
            && self.acked_features & (1 << features::VIRTIO_F_VERSION_1) != 0
    }

    fn activate(&mut self) -> bool {
        for (i, q) in self.queues.iter().enumerate() {
            if q.ready() && !q.is_valid(&self.mem) {
                warn!("virtio-mmio: queue {i} is ready but invalid (size or ring addresses)");
                return false;
            }
        }
        let event_idx = self.acked_features & (1 << features::VIRTIO_RING_F_EVENT_IDX) != 0;
        let queues = self
            .queues
            .iter()
            .map(|q| copy_queue(q, event_idx))
            .collect::<Result<Vec<_>, _>>();
        let queues = match queues {
            Ok(q) => q,
            Err(e) => {
                warn!("virtio-mmio: cannot hand queues to the device: {e}");
                return false;
            }
        };
        let activation = Activation {
            mem: self.mem.clone(),
            queues,
            acked_features: self.acked_features,
            interrupt: self.interrupt.clone(),
        };
        match self.device.activate(activation) {
            Ok(()) => true,
            Err(e) => {
                warn!("virtio-mmio: device activation failed: {e}");
                false
            }
        }
    }

    fn set_status(&mut self, new: u32) {
        use status::*;
        if new == 0 {
            self.reset();
            return;
        }
        if new & FAILED != 0 {
            self.device_status |= FAILED;
            return;
        }
        let old = self.device_status;
        let expected = match old {
            0 => ACKNOWLEDGE,
            s if s == ACKNOWLEDGE => ACKNOWLEDGE | DRIVER,
            s if s == ACKNOWLEDGE | DRIVER => ACKNOWLEDGE | DRIVER | FEATURES_OK,
            s if s == ACKNOWLEDGE | DRIVER | FEATURES_OK => s | DRIVER_OK,
            _ => 0,
        };
        if new != expected {
            warn!("virtio-mmio: status transition {old:#x} -> {new:#x} ignored");
            return;
        }
        if new & FEATURES_OK != 0 && old & FEATURES_OK == 0 && !self.features_acceptable() {
            warn!(
                "virtio-mmio: FEATURES_OK refused (driver features {:#x}, offered {:#x}; \
                 VIRTIO_F_VERSION_1 is required)",
                self.acked_features,
                self.device.device_features()
            );
            return;
        }
        if new & DRIVER_OK != 0 && old & DRIVER_OK == 0 {
            if self.activate() {
                self.activated = true;
            } else {
                self.device_status = new | DEVICE_NEEDS_RESET;
                if let Err(e) = self.interrupt.signal_config_change() {
                    warn!("virtio-mmio: cannot raise interrupt: {e}");
                }
                return;
            }
        }
        self.device_status = new;
    }

    fn read_reg(&mut self, offset: u64) -> u32 {
        match offset {
            reg::MAGIC_VALUE => MAGIC_VALUE,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.features_select {
                0 => self.device.device_features() as u32,
                1 => (self.device.device_features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| u32::from(q.max_size())),
            reg::QUEUE_READY => self.selected_queue().map_or(0, |q| u32::from(q.ready())),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => self.device_status,
            // No shared memory regions: a non-existent region has length (and base) -1.
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH | reg::SHM_BASE_LOW | reg::SHM_BASE_HIGH => {
                u32::MAX
            }
            reg::QUEUE_RESET => 0,
            reg::CONFIG_GENERATION => self.interrupt.config_generation(),
            _ => {
                debug!("virtio-mmio: read of write-only or unknown register {offset:#x}");
                0
            }
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        use status::*;
        let queue_setup = self.has_status(FEATURES_OK, DRIVER_OK | FAILED);
        match offset {
            reg::DEVICE_FEATURES_SEL => self.features_select = v,
            reg::DRIVER_FEATURES_SEL => self.acked_features_select = v,
            reg::DRIVER_FEATURES if self.has_status(DRIVER, FEATURES_OK | FAILED) => {
                match self.acked_features_select {
                    0 => self.acked_features = (self.acked_features & !0xffff_ffff) | u64::from(v),
                    1 => {
                        self.acked_features =
                            (self.acked_features & 0xffff_ffff) | (u64::from(v) << 32)
                    }
                    sel => warn!("virtio-mmio: DriverFeatures write to word {sel} ignored"),
                }
            }
            reg::QUEUE_SEL => self.queue_select = v,
            reg::QUEUE_NUM if queue_setup => match self.selected_queue() {
                Some(q) if v > 0 && v <= u32::from(q.max_size()) && v.is_power_of_two() => {
                    q.set_size(v as u16)
                }
                _ => warn!("virtio-mmio: bad queue size {v} ignored"),
            },
            reg::QUEUE_READY if queue_setup => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(v == 1)
                }
            }
            reg::QUEUE_DESC_LOW if queue_setup => self.set_queue_addr(|q| {
                q.set_desc_table_address(Some(v), None);
            }),
            reg::QUEUE_DESC_HIGH if queue_setup => self.set_queue_addr(|q| {
                q.set_desc_table_address(None, Some(v));
            }),
            reg::QUEUE_DRIVER_LOW if queue_setup => self.set_queue_addr(|q| {
                q.set_avail_ring_address(Some(v), None);
            }),
            reg::QUEUE_DRIVER_HIGH if queue_setup => self.set_queue_addr(|q| {
                q.set_avail_ring_address(None, Some(v));
            }),
            reg::QUEUE_DEVICE_LOW if queue_setup => self.set_queue_addr(|q| {
                q.set_used_ring_address(Some(v), None);
            }),
            reg::QUEUE_DEVICE_HIGH if queue_setup => self.set_queue_addr(|q| {
                q.set_used_ring_address(None, Some(v));
            }),
            reg::QUEUE_NOTIFY => self.notify(v),
            reg::INTERRUPT_ACK => self.interrupt.ack(v),
            reg::STATUS => self.set_status(v),
            reg::SHM_SEL => {}
            _ => warn!(
                "virtio-mmio: write {v:#x} to register {offset:#x} ignored (read-only, unknown, \
                 or not allowed in status {:#x})",
                self.device_status
            ),
        }
    }

    fn set_queue_addr(&mut self, f: impl FnOnce(&mut Queue)) {
        match self.selected_queue() {
            Some(q) => f(q),
            None => warn!("virtio-mmio: queue address write for a non-existent queue ignored"),
        }
    }
}

/// The driver's configuration of `q` in a fresh `Queue` for the device (`Queue` is not `Clone`;
/// the transport keeps its own copy to answer register reads).
fn copy_queue(q: &Queue, event_idx: bool) -> Result<Queue, virtio_queue::Error> {
    let mut copy = Queue::new(q.max_size())?;
    copy.set_size(q.size());
    let split = |a: u64| (Some(a as u32), Some((a >> 32) as u32));
    let (lo, hi) = split(q.desc_table());
    copy.set_desc_table_address(lo, hi);
    let (lo, hi) = split(q.avail_ring());
    copy.set_avail_ring_address(lo, hi);
    let (lo, hi) = split(q.used_ring());
    copy.set_used_ring_address(lo, hi);
    copy.set_event_idx(event_idx);
    copy.set_ready(q.ready());
    Ok(copy)
}

fn config_access_ok(offset: u64, len: usize) -> bool {
    matches!(len, 1 | 2 | 4 | 8) && offset % (len.min(4) as u64) == 0
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset >= reg::CONFIG {
            if config_access_ok(offset, data.len()) {
                self.device.read_config(offset - reg::CONFIG, data);
            } else {
                warn!(
                    "virtio-mmio: config read of {} bytes at {offset:#x} ignored",
                    data.len()
                );
            }
            return;
        }
        if data.len() != 4 || offset % 4 != 0 {
            warn!(
                "virtio-mmio: {}-byte read at {offset:#x} ignored (registers are 32-bit)",
                data.len()
            );
            return;
        }
        let v = self.read_reg(offset);
        data.copy_from_slice(&v.to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            if config_access_ok(offset, data.len()) {
                self.device.write_config(offset - reg::CONFIG, data);
            } else {
                warn!(
                    "virtio-mmio: config write of {} bytes at {offset:#x} ignored",
                    data.len()
                );
            }
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            warn!(
                "virtio-mmio: {}-byte write at {offset:#x} ignored (registers are 32-bit)",
                data.len()
            );
            return;
        };
        if offset % 4 != 0 {
            warn!("virtio-mmio: unaligned write at {offset:#x} ignored");
            return;
        }
        self.write_reg(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
mod tests;
