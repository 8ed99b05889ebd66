//! Virtio devices and the virtio-mmio v2 transport.
//!
//! A device implements [`VirtioDevice`]; [`mmio::MmioTransport`] is the only code that knows the
//! register layout. The transport negotiates features and collects queue configuration; at
//! DRIVER_OK it hands the device an [`Activation`]: guest memory, the configured
//! `virtio_queue::Queue`s and an [`Interrupt`]. Afterwards the device sees one call per driver
//! notification ([`VirtioDevice::queue_notify`], delivered by the event loop when the queue's
//! ioeventfd fires) and completes buffers on its queues, then calls
//! [`Interrupt::signal_used_queue`].

pub mod echo;
pub mod mmio;
pub mod queued;

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// Device status bits (virtio 1.2 §2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    pub const FAILED: u32 = 0x80;
}

/// Feature bits every device may offer (virtio 1.2 §6).
pub mod features {
    pub const VIRTIO_RING_F_INDIRECT_DESC: u32 = 28;
    pub const VIRTIO_RING_F_EVENT_IDX: u32 = 29;
    pub const VIRTIO_F_VERSION_1: u32 = 32;
}

/// InterruptStatus bits (virtio 1.2 §4.2.2).
pub const INT_USED_RING: u32 = 1;
pub const INT_CONFIG_CHANGE: u32 = 2;

/// Why a device refused to activate. The transport then sets DEVICE_NEEDS_RESET.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("expected {expected} queues, got {got}")]
    QueueCount { expected: usize, got: usize },
    #[error("queue {0} is not ready")]
    QueueNotReady(usize),
    #[error("device-specific activation failed: {0}")]
    Device(String),
}

/// What a device gets at DRIVER_OK.
pub struct Activation {
    /// Guest memory; access it only through vm-memory's checked accessors.
    pub mem: GuestMemoryMmap,
    /// One queue per entry of [`VirtioDevice::queue_max_sizes`], configured by the driver
    /// (size, ring addresses, ready, event-idx); a queue the driver left disabled has
    /// `ready() == false`.
    pub queues: Vec<Queue>,
    /// Features the driver accepted (a subset of the device's, always with VIRTIO_F_VERSION_1).
    pub acked_features: u64,
    /// How the device interrupts the driver.
    pub interrupt: Interrupt,
}

/// A virtio device, independent of the transport.
///
/// Rules for implementors: the guest is untrusted (validate every descriptor where it is read,
/// never panic on guest data); config-space accesses outside the device's config leave `data`
/// zeroed / are ignored; `reset` must return the device to its freshly created state (it is
/// called on driver reset and may be called before `activate`).
pub trait VirtioDevice: Send {
    /// The virtio device id (virtio 1.2 §5; ours: `echo::ECHO_DEVICE_ID`, virtio-cuda 0xC0DA).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; the slice's length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits offered to the driver; must include VIRTIO_F_VERSION_1.
    fn device_features(&self) -> u64;
    /// Reads device config space at `offset` (the transport zero-fills `data` first).
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes device config space at `offset`.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// The driver set DRIVER_OK. On error the transport reports DEVICE_NEEDS_RESET.
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError>;
    /// The driver notified queue `index` (only called after a successful `activate`).
    fn queue_notify(&mut self, index: usize);
    /// The driver reset the device (wrote 0 to Status): drop queues and per-driver state.
    fn reset(&mut self);
}

/// The device → driver interrupt: InterruptStatus bits plus an irqfd (or any eventfd in tests).
#[derive(Clone)]
pub struct Interrupt {
    status: Arc<AtomicU32>,
    config_generation: Arc<AtomicU32>,
    irq: Arc<EventFd>,
}

impl Interrupt {
    pub fn new(irq: EventFd) -> Self {
        Self {
            status: Arc::new(AtomicU32::new(0)),
            config_generation: Arc::new(AtomicU32::new(0)),
            irq: Arc::new(irq),
        }
    }

    /// Used buffers were added to a queue.
    pub fn signal_used_queue(&self) -> io::Result<()> {
        self.raise(INT_USED_RING)
    }

    /// The device changed its config space (bumps ConfigGeneration first).
    pub fn signal_config_change(&self) -> io::Result<()> {
        self.config_generation.fetch_add(1, Ordering::AcqRel);
        self.raise(INT_CONFIG_CHANGE)
    }

    fn raise(&self, bit: u32) -> io::Result<()> {
        self.status.fetch_or(bit, Ordering::AcqRel);
        self.irq.write(1)
    }

    /// Current InterruptStatus.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::Acquire)
    }

    /// InterruptACK: clears `bits`.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::AcqRel);
    }

    /// Current ConfigGeneration.
    pub fn config_generation(&self) -> u32 {
        self.config_generation.load(Ordering::Acquire)
    }

    /// The eventfd the interrupt is raised on (registered as irqfd with KVM).
    pub fn eventfd(&self) -> &EventFd {
        &self.irq
    }

    fn clear(&self) {
        self.status.store(0, Ordering::Release);
    }
}
