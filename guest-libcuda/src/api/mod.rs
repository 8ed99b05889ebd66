//! The exported driver-API functions, grouped as in `cuda.h`.

pub mod context;
pub mod device;
pub mod launch;
pub mod link;
pub mod managed;
pub mod memory;
pub mod module;
pub mod stream;
