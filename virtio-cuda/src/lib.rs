//! virtio-cuda: the vcuda wire protocol and (behind the `device` feature) the virtio device model.
//!
//! [`protocol`] has no VMM dependencies; the guest shim and the executor link only that.

pub mod client;
pub mod protocol;
