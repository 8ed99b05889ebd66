//! The `cpu` backend: runs kernels with the PTX interpreter of `vcuda-ptx`.
//!
//! Work runs eagerly, in the order the session submits it, which is a valid schedule for every
//! stream: a launch or copy is complete when its request has been handled. Blocks of one launch
//! run in parallel (rayon). Each session owns one [`vcuda_ptx::memory::Arena`], so a pointer of
//! one session can never reach another session's memory.

mod device;
mod session;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use virtio_cuda::protocol::{DeviceInfoReply, Status};

use crate::backend::BResult;
use crate::session::Backend;
use crate::session::{Session, SessionInit};

pub use device::DRIVER_VERSION;

/// Settings of the cpu backend.
#[derive(Debug, Clone)]
pub struct CpuConfig {
    /// Memory reported as the device's total (sessions are further limited by their quota).
    pub device_memory: u64,
    /// Warp-instructions one launch may execute before it fails with
    /// `CUDA_ERROR_LAUNCH_TIMEOUT` (catches runaway kernels).
    pub instruction_budget: u64,
    /// Run the blocks of a launch on several threads.
    pub parallel: bool,
    /// Wall-clock time one launch may run before it fails with `CUDA_ERROR_LAUNCH_TIMEOUT`
    /// (a watchdog, like a display GPU's; `None`: only the instruction budget).
    pub launch_time_limit: Option<std::time::Duration>,
}

impl Default for CpuConfig {
    fn default() -> Self {
        Self {
            device_memory: 16 << 30,
            instruction_budget: 20_000_000_000,
            parallel: true,
            launch_time_limit: Some(std::time::Duration::from_secs(10)),
        }
    }
}

impl CpuConfig {
    /// The settings for an executor that serves one tenant in its own process or VM
    /// (`vcuda exec`, `vcuda run`): no watchdog, since a long kernel there delays no one else,
    /// and a compute GPU has none either. The instruction budget still ends a runaway kernel.
    pub fn single_tenant() -> Self {
        Self {
            launch_time_limit: None,
            ..Self::default()
        }
    }
}

/// First device address handed out; each session gets its own 64 GiB window above it.
const VA_BASE: u64 = 0x2000_0000_0000;
/// Size of each session's device-pointer window.
const VA_WINDOW: u64 = 64 << 30;
/// Number of distinct windows before addresses are reused (by then old sessions are gone).
const VA_WINDOWS: u64 = 1024;

/// The PTX-interpreting backend.
#[derive(Debug)]
pub struct CpuBackend {
    config: CpuConfig,
    allocated: Arc<AtomicU64>,
}

impl CpuBackend {
    pub fn new(config: CpuConfig) -> Self {
        Self {
            config,
            allocated: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn driver_version(&self) -> i32 {
        DRIVER_VERSION
    }

    fn device_count(&self) -> u32 {
        1
    }

    fn device_info(&self, ordinal: u32) -> BResult<DeviceInfoReply> {
        if ordinal != 0 {
            return Err(Status::ERROR_INVALID_DEVICE);
        }
        Ok(device::device_info(self.config.device_memory))
    }

    fn allocated_bytes(&self) -> u64 {
        self.allocated.load(Ordering::SeqCst)
    }

    fn open_session(&self, init: SessionInit) -> BResult<Session> {
        let base = VA_BASE + (init.id % VA_WINDOWS) * VA_WINDOW;
        let be = session::CpuSession::new(
            base,
            VA_WINDOW,
            self.config.clone(),
            Arc::clone(&self.allocated),
            Arc::clone(&init.cancel),
        );
        Ok(Session::new(init, be))
    }
}
