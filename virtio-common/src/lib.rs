//! What vcuda's virtio devices share, so that each device folder holds only its own model:
//!
//! * [`chain`]: one descriptor chain split into its readable and writable guest regions, each
//!   checked against guest memory, and byte-range access across them (the virtio-cuda and
//!   virtio-gpu devices build their requests on it);
//! * [`device`]: [`device::QueueDevice`], a device as every transport serves it;
//! * [`queue`]: draining a virtqueue with adaptive polling, for every device and frontend;
//! * [`vhost_user`]: a vhost-user backend for any [`device::QueueDevice`], served to
//!   any frontend (User-Mode Linux, QEMU, crosvm, Cloud Hypervisor);
//! * [`fdpass`]: file descriptors over unix sockets (SCM_RIGHTS), also used by the unix
//!   transport of the guest shim, hence outside the `device` feature.

#[cfg(feature = "device")]
pub mod chain;
#[cfg(feature = "device")]
pub mod device;
pub mod fdpass;
#[cfg(feature = "device")]
pub mod queue;
#[cfg(feature = "device")]
pub mod vhost_user;
