//! The virtio-cuda device served over vhost-user: the same [`CudaDevice`] that the VMM drives
//! over virtio-mmio, behind the generic backend of [`virtio_common::vhost_user`].

use virtio_common::vhost_user::{copy_config, VhostUserBackend, VhostUserDevice};
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

use crate::device::{self as cuda, CudaDevice};
use crate::service::FrameService;

impl<S: FrameService + 'static> VhostUserDevice for CudaDevice<S> {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn features(&self) -> u64 {
        cuda::FEATURES
    }

    fn num_queues(&self) -> usize {
        cuda::NUM_QUEUES
    }

    fn max_queue_size(&self) -> u16 {
        cuda::QUEUE_SIZE_MAX
    }

    fn read_config(&self, offset: u32, data: &mut [u8]) {
        copy_config(&cuda::config_space(), offset, data);
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

/// The virtio-cuda device over `service`, one device (and so one set of sessions) per frontend
/// connection.
pub fn backend<S: FrameService + Clone + 'static>(service: S) -> VhostUserBackend<CudaDevice<S>> {
    VhostUserBackend::with_factory(move || Ok(CudaDevice::new(service.clone())))
}

#[cfg(test)]
#[path = "vhost_user_tests.rs"]
mod tests;
