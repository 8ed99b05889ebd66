//! virtio-gpu: a virtio 1.x GPU device (device id 16) for vcuda guests.
//!
//! - [`device`]: the device model on rutabaga_gfx 2D: control and cursor queues over guest
//!   memory, transport-agnostic (our VMM's virtio-mmio transport drives it through an adapter).
//! - [`protocol`]: the virtio-gpu wire format, decoded without panics.
//! - [`display`]: where flushed scanouts go: `none`, `png:<dir>`, `png-last:<dir>`, `window`
//!   (Vulkan through vulkano, cargo feature `window`).
//! - [`edid`]: the EDID block returned by GET_EDID.
//! - [`served`]: [`VirtioGpu`], the model on its own thread as every transport serves it (our
//!   VMM's virtio-mmio, vhost-user); [`vhost_user`]: the request only vhost-user has (QEMU's
//!   display socket for `vhost-user-gpu-pci`).
//!
//! See `docs/GPU.md`.

pub mod device;
pub mod display;
pub mod edid;
#[cfg(any(test, feature = "test-driver"))]
pub mod guest_driver;
pub mod protocol;
pub mod served;
pub mod vhost_user;

pub use device::{GpuConfig, GpuDevice};
pub use display::{Display, DisplaySpec, Frame};
pub use served::VirtioGpu;
