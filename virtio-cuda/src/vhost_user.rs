//! The virtio-cuda device served over vhost-user: the same [`CudaDevice`] (a
//! [`virtio_common::device::QueueDevice`]) that the VMM drives over virtio-mmio, behind the
//! generic backend of [`virtio_common::vhost_user`].

use virtio_common::vhost_user::{VhostUserBackend, VhostUserDevice};

use crate::device::CudaDevice;
use crate::service::FrameService;

/// The device needs no vhost-user request of its own.
impl<S: FrameService + 'static> VhostUserDevice for CudaDevice<S> {}

/// The virtio-cuda device over `service`, one device (and so one set of sessions) per frontend
/// connection.
pub fn backend<S: FrameService + Clone + 'static>(service: S) -> VhostUserBackend<CudaDevice<S>> {
    VhostUserBackend::with_factory(move || Ok(CudaDevice::new(service.clone())))
}

#[cfg(test)]
#[path = "vhost_user_tests.rs"]
mod tests;
