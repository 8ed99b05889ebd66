//! vcuda's virtual machine monitor: a Firecracker-style microVM on KVM (x86_64) with our own
//! virtio-mmio v2 transport. See docs/VMM.md.
//!
//! - [`builder::run`] boots a [`config::VmConfig`] and runs it until the guest exits.
//! - [`devices::virtio::VirtioDevice`] is the trait new virtio devices implement.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod arch;
pub mod boot;
pub mod builder;
pub mod config;
pub mod devices;
pub mod exit;
pub mod image;
pub mod vstate;

pub use builder::{run, BuildError, RunReport};
pub use config::VmConfig;
pub use exit::VmExit;
