//! virtio-cuda: the vcuda wire protocol and (behind the `device` feature) the virtio device model.
//!
//! [`protocol`], [`client`] and [`service`] have no VMM dependencies; the guest shim and the
//! executor link only those.

pub mod client;
#[cfg(feature = "device")]
pub mod device;
pub mod protocol;
pub mod service;
pub mod shm;
#[cfg(feature = "device")]
pub mod vhost_user;
