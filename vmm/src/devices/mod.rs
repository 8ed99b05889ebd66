//! Emulated devices. Legacy port-IO devices sit on the IO bus, the boot timer and the
//! virtio-mmio transports on the MMIO bus; a vCPU exit is dispatched to one of them.

pub mod boot_timer;
pub mod bus;
pub mod debug_exit;
pub mod i8042;
pub mod serial;
pub mod virtio;

pub use bus::{Bus, BusDevice};
