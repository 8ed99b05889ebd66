//! The `cuda` backend: forwards sessions to a real GPU through the CUDA driver API (cudarc,
//! loaded at run time, so the executor builds and runs where no libcuda exists; then
//! [`CudaBackend::probe`] reports the backend unavailable).
//!
//! * One CUDA context per session (fault isolation: a sticky error poisons only its session).
//! * Device pointers: where the GPU supports virtual memory management, each session reserves a
//!   VA window (`cuMemAddressReserve`) and maps physical allocations into it (`cuMemCreate`,
//!   `cuMemMap`, `cuMemSetAccess`), so the pointers a client sees stay stable for
//!   snapshot/restore. Elsewhere it falls back to `cuMemAlloc`.
//! * Copies go through a small pool of pinned staging buffers per session, chunked and
//!   pipelined, so client memory is never pinned ([`staging`]).
//! * Streams and events map to real ones; launches and async copies are enqueued without
//!   waiting; errors surface at the next synchronising call, as CUDA reports them.

mod ffi;
mod memory;
mod session;
mod staging;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cudarc::driver::sys;
use virtio_cuda::protocol::{DeviceAttr, DeviceInfoReply, List, Status};

use crate::backend::BResult;
use crate::session::Backend;
use crate::session::{Session, SessionInit};

/// Why the cuda backend cannot be used here.
#[derive(Debug, thiserror::Error)]
pub enum CudaUnavailable {
    #[error("no CUDA driver library (libcuda.so) could be loaded")]
    NoDriver,
    #[error("cuInit failed: {0}")]
    Init(Status),
    #[error("the CUDA driver reports no devices")]
    NoDevice,
}

/// The real-GPU backend.
#[derive(Debug)]
pub struct CudaBackend {
    devices: Vec<sys::CUdevice>,
    driver_version: i32,
    allocated: Arc<AtomicU64>,
}

impl CudaBackend {
    /// Loads the driver and initialises it.
    pub fn probe() -> Result<Self, CudaUnavailable> {
        // SAFETY: only tries to dlopen the driver library by its usual names.
        if !unsafe { sys::is_culib_present() } {
            return Err(CudaUnavailable::NoDriver);
        }
        // SAFETY: cuInit takes flags by value.
        ffi::call(|| unsafe { sys::cuInit(0) }).map_err(CudaUnavailable::Init)?;
        // SAFETY: the out-pointer is valid for the duration of the call.
        let count: i32 =
            ffi::out(|p| unsafe { sys::cuDeviceGetCount(p) }).map_err(CudaUnavailable::Init)?;
        if count <= 0 {
            return Err(CudaUnavailable::NoDevice);
        }
        let mut devices = Vec::new();
        for i in 0..count {
            // SAFETY: valid out-pointer; ordinal in range.
            let d: sys::CUdevice =
                ffi::out(|p| unsafe { sys::cuDeviceGet(p, i) }).map_err(CudaUnavailable::Init)?;
            devices.push(d);
        }
        // SAFETY: valid out-pointer.
        let driver_version =
            ffi::out(|p| unsafe { sys::cuDriverGetVersion(p) }).map_err(CudaUnavailable::Init)?;
        Ok(Self {
            devices,
            driver_version,
            allocated: Arc::new(AtomicU64::new(0)),
        })
    }

    fn device(&self, ordinal: u32) -> BResult<sys::CUdevice> {
        self.devices
            .get(ordinal as usize)
            .copied()
            .ok_or(Status::ERROR_INVALID_DEVICE)
    }
}

/// Reads one device attribute.
pub(crate) fn attribute(dev: sys::CUdevice, attr: sys::CUdevice_attribute) -> BResult<i32> {
    // SAFETY: valid out-pointer; `attr` is a valid enum value.
    ffi::out(|p| unsafe { sys::cuDeviceGetAttribute(p, attr, dev) })
}

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn driver_version(&self) -> i32 {
        self.driver_version
    }

    fn device_count(&self) -> u32 {
        self.devices.len() as u32
    }

    fn device_info(&self, ordinal: u32) -> BResult<DeviceInfoReply> {
        let dev = self.device(ordinal)?;
        let mut name = [0 as std::ffi::c_char; 256];
        // SAFETY: the buffer is 256 bytes and the driver writes a NUL-terminated name into it.
        ffi::call(|| unsafe { sys::cuDeviceGetName(name.as_mut_ptr(), 256, dev) })?;
        name[255] = 0;
        // SAFETY: the buffer is NUL-terminated (by the driver, and at its last byte regardless).
        let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: valid out-pointer.
        let total: usize = ffi::out(|p| unsafe { sys::cuDeviceTotalMem_v2(p, dev) })?;
        let mut uuid = sys::CUuuid { bytes: [0; 16] };
        // SAFETY: valid out-pointer to a CUuuid.
        ffi::call(|| unsafe { sys::cuDeviceGetUuid_v2(&mut uuid, dev) })?;
        let mut attributes = Vec::new();
        for &(num, attr) in ATTRIBUTES {
            if let Ok(value) = attribute(dev, attr) {
                attributes.push(DeviceAttr { attr: num, value });
            }
        }
        Ok(DeviceInfoReply {
            name,
            uuid: uuid.bytes.map(|b| b as u8),
            total_mem: total as u64,
            attributes: List(attributes),
        })
    }

    fn allocated_bytes(&self) -> u64 {
        self.allocated.load(Ordering::SeqCst)
    }

    fn open_session(&self, init: SessionInit) -> BResult<Session> {
        let dev = self.device(0)?;
        let be = session::CudaSession::new(init.id, dev, init.quota, Arc::clone(&self.allocated))?;
        Ok(Session::new(init, be))
    }
}

use sys::CUdevice_attribute as A;

/// The attributes forwarded to clients (number as in `cuda.h`, and the enum value).
const ATTRIBUTES: &[(u32, sys::CUdevice_attribute)] = &[
    (1, A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK),
    (2, A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X),
    (3, A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y),
    (4, A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z),
    (5, A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X),
    (6, A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y),
    (7, A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z),
    (8, A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK),
    (9, A::CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY),
    (10, A::CU_DEVICE_ATTRIBUTE_WARP_SIZE),
    (11, A::CU_DEVICE_ATTRIBUTE_MAX_PITCH),
    (12, A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK),
    (13, A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE),
    (14, A::CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT),
    (16, A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
    (17, A::CU_DEVICE_ATTRIBUTE_KERNEL_EXEC_TIMEOUT),
    (18, A::CU_DEVICE_ATTRIBUTE_INTEGRATED),
    (19, A::CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY),
    (20, A::CU_DEVICE_ATTRIBUTE_COMPUTE_MODE),
    (31, A::CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS),
    (32, A::CU_DEVICE_ATTRIBUTE_ECC_ENABLED),
    (33, A::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID),
    (34, A::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID),
    (36, A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE),
    (37, A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH),
    (38, A::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE),
    (39, A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR),
    (40, A::CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT),
    (41, A::CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING),
    (50, A::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID),
    (75, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
    (76, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
    (78, A::CU_DEVICE_ATTRIBUTE_STREAM_PRIORITIES_SUPPORTED),
    (
        81,
        A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR,
    ),
    (82, A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR),
    (83, A::CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY),
    (95, A::CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH),
    (97, A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN),
    (106, A::CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR),
];
