//! A virtio device as every transport serves it: the VMM's virtio-mmio transport
//! (`vmm::devices::virtio::Queued`) and the vhost-user backend ([`crate::vhost_user`]) drive the
//! same [`QueueDevice`], so a device model is written once.

use std::time::Duration;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

/// The driver wrote to configuration space that the device does not let it write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the device's configuration space is read-only there")]
pub struct ConfigReadOnly;

/// A virtio device: its identity, configuration space and queue processing. One instance per
/// driver (per VM, per vhost-user frontend connection). Transports call it from their control
/// thread (configuration space, reset) and from one worker thread per started queue, always
/// under a lock.
pub trait QueueDevice: Send + 'static {
    /// A short name for logs and thread names ("cuda", "gpu").
    fn name(&self) -> &'static str;
    /// The virtio device id (virtio 1.2 §5: 16 for a GPU; 0xC0DA for virtio-cuda).
    fn device_id(&self) -> u32;
    /// Virtio feature bits offered (must include `VIRTIO_F_VERSION_1`).
    fn features(&self) -> u64;
    /// Number of virtqueues.
    fn num_queues(&self) -> usize;
    /// Largest queue size accepted.
    fn max_queue_size(&self) -> u16;
    /// Reads the device configuration space at `offset`; bytes past its end read as 0.
    fn read_config(&self, offset: u32, data: &mut [u8]);
    /// Writes the device configuration space. Refused unless the device has writable fields.
    fn write_config(&mut self, offset: u32, data: &[u8]) -> Result<(), ConfigReadOnly> {
        let _ = (offset, data);
        Err(ConfigReadOnly)
    }
    /// Consumes the available chains of queue `index`; returns whether the driver must be
    /// interrupted. An error means the queue itself is unusable (bad chains are the device's to
    /// complete).
    fn process_queue(
        &mut self,
        index: usize,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
    ) -> Result<bool, String>;
    /// How soon queue `index` must be processed again without a notification, while the
    /// device waits on work of its own (a GPU's fences); `None` when it waits on nothing.
    fn poll_interval(&self, index: usize) -> Option<Duration> {
        let _ = index;
        None
    }
    /// The driver reset the device, or went away: forget the guest's state.
    fn reset(&mut self);
}

/// Copies `space[offset..]` into `data`, zero past its end.
pub fn copy_config(space: &[u8], offset: u32, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = (offset as usize)
            .checked_add(i)
            .and_then(|at| space.get(at))
            .copied()
            .unwrap_or(0);
    }
}
