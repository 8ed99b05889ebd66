//! The echo test device (device id [`ECHO_DEVICE_ID`]): one queue; each descriptor chain's
//! device-readable bytes are copied, in order, into its device-writable descriptors, and the
//! chain completes with the number of bytes written. Used by the test guests and the transport
//! tests; attach it with `vcuda run --device echo`.
//!
//! Config space (little-endian): `chains: u32` (read-only, chains completed since reset) at 0,
//! `scratch: u32` (read-write) at 4. Writing `scratch` raises a configuration-change interrupt
//! and bumps ConfigGeneration, so drivers can test that path.

use tracing::warn;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestMemoryMmap};

use super::{features, ActivateError, Activation, Interrupt, VirtioDevice};

/// Not an OASIS-assigned id; from the high range no standard device uses ("EC40" ~ "echo").
pub const ECHO_DEVICE_ID: u32 = 0xEC40;
/// Queue size the device offers.
pub const ECHO_QUEUE_SIZE: u16 = 256;
/// Bytes of one chain the device echoes at most; the rest is dropped.
pub const ECHO_MAX_CHAIN_BYTES: usize = 1 << 20;

struct Live {
    mem: GuestMemoryMmap,
    queue: Queue,
    interrupt: Interrupt,
}

#[derive(Default)]
pub struct EchoDevice {
    chains: u32,
    scratch: u32,
    live: Option<Live>,
}

impl EchoDevice {
    pub fn new() -> Self {
        Self::default()
    }

    fn config(&self) -> [u8; 8] {
        let mut c = [0u8; 8];
        c[..4].copy_from_slice(&self.chains.to_le_bytes());
        c[4..].copy_from_slice(&self.scratch.to_le_bytes());
        c
    }

    fn process(&mut self) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let mut completed = false;
        loop {
            let chain = match live.queue.iter(&live.mem) {
                Ok(mut it) => it.next(),
                Err(e) => {
                    warn!("echo: queue unusable: {e}");
                    return;
                }
            };
            let Some(chain) = chain else { break };
            let head = chain.head_index();
            let mut buf = Vec::new();
            let mut written = 0u32;
            for desc in chain {
                let len = desc.len() as usize;
                if !desc.is_write_only() {
                    let take = len.min(ECHO_MAX_CHAIN_BYTES - buf.len());
                    let start = buf.len();
                    buf.resize(start + take, 0);
                    if let Err(e) = live.mem.read_slice(&mut buf[start..], desc.addr()) {
                        warn!("echo: bad readable descriptor: {e}");
                        buf.truncate(start);
                    }
                } else {
                    let from = written as usize;
                    let n = len.min(buf.len().saturating_sub(from));
                    if n == 0 {
                        continue;
                    }
                    match live.mem.write_slice(&buf[from..from + n], desc.addr()) {
                        Ok(()) => written += n as u32,
                        Err(e) => warn!("echo: bad writable descriptor: {e}"),
                    }
                }
            }
            if let Err(e) = live.queue.add_used(&live.mem, head, written) {
                warn!("echo: cannot complete chain {head}: {e}");
            }
            self.chains = self.chains.wrapping_add(1);
            completed = true;
        }
        if completed {
            match live.queue.needs_notification(&live.mem) {
                Ok(true) => {
                    if let Err(e) = live.interrupt.signal_used_queue() {
                        warn!("echo: cannot interrupt the driver: {e}");
                    }
                }
                Ok(false) => {}
                Err(e) => warn!("echo: {e}"),
            }
        }
    }
}

impl VirtioDevice for EchoDevice {
    fn device_type(&self) -> u32 {
        ECHO_DEVICE_ID
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[ECHO_QUEUE_SIZE]
    }

    fn device_features(&self) -> u64 {
        (1 << features::VIRTIO_F_VERSION_1) | (1 << features::VIRTIO_RING_F_EVENT_IDX)
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.config();
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        if let Some(src) = start
            .checked_add(data.len())
            .and_then(|end| config.get(start..end))
        {
            data.copy_from_slice(src);
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        if offset != 4 || data.len() != 4 {
            warn!(
                "echo: config write at {offset:#x} ({} bytes) ignored",
                data.len()
            );
            return;
        }
        let mut b = [0u8; 4];
        b.copy_from_slice(data);
        self.scratch = u32::from_le_bytes(b);
        if let Some(live) = &self.live {
            if let Err(e) = live.interrupt.signal_config_change() {
                warn!("echo: cannot interrupt the driver: {e}");
            }
        }
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        let got = activation.queues.len();
        let Some(queue) = activation.queues.into_iter().next().filter(|_| got == 1) else {
            return Err(ActivateError::QueueCount { expected: 1, got });
        };
        if !queue.ready() {
            return Err(ActivateError::QueueNotReady(0));
        }
        self.live = Some(Live {
            mem: activation.mem,
            queue,
            interrupt: activation.interrupt,
        });
        Ok(())
    }

    fn queue_notify(&mut self, index: usize) {
        if index == 0 {
            self.process();
        }
    }

    fn reset(&mut self) {
        *self = Self::default();
    }
}
