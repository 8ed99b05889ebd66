//! The device the `cpu` backend reports: compute capability 8.0 with honest limits.
//!
//! Limits that the interpreter enforces (threads per block, shared memory) are the real ones;
//! the multiprocessor count is the host's parallelism, since that is how many blocks run at
//! once. Attribute numbers are `CUdevice_attribute` values from `cuda.h`.

use virtio_cuda::protocol::{DeviceAttr, DeviceInfoReply, List};

/// `cuDriverGetVersion` value: CUDA 13.0 (cudart 13 refuses older drivers).
pub const DRIVER_VERSION: i32 = 13000;

/// Threads per block the interpreter accepts.
pub const MAX_THREADS_PER_BLOCK: i32 = 1024;
/// Static shared memory per block.
pub const SHARED_PER_BLOCK: i32 = 48 * 1024;
/// Shared memory per block with the opt-in attribute.
pub const SHARED_PER_BLOCK_OPTIN: i32 = 99 * 1024;

/// Builds the device description for a device with `total_mem` bytes of memory.
pub fn device_info(total_mem: u64) -> DeviceInfoReply {
    let sms = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(1024) as i32;
    let attrs: &[(u32, i32)] = &[
        (1, MAX_THREADS_PER_BLOCK),   // MAX_THREADS_PER_BLOCK
        (2, 1024),                    // MAX_BLOCK_DIM_X
        (3, 1024),                    // MAX_BLOCK_DIM_Y
        (4, 64),                      // MAX_BLOCK_DIM_Z
        (5, i32::MAX),                // MAX_GRID_DIM_X
        (6, 65535),                   // MAX_GRID_DIM_Y
        (7, 65535),                   // MAX_GRID_DIM_Z
        (8, SHARED_PER_BLOCK),        // MAX_SHARED_MEMORY_PER_BLOCK
        (9, 64 * 1024),               // TOTAL_CONSTANT_MEMORY
        (10, 32),                     // WARP_SIZE
        (11, i32::MAX),               // MAX_PITCH
        (12, 65536),                  // MAX_REGISTERS_PER_BLOCK
        (13, 1_000_000),              // CLOCK_RATE (kHz)
        (14, 512),                    // TEXTURE_ALIGNMENT
        (15, 1),                      // GPU_OVERLAP
        (16, sms),                    // MULTIPROCESSOR_COUNT
        (17, 0),                      // KERNEL_EXEC_TIMEOUT
        (18, 0),                      // INTEGRATED
        (19, 1),                      // CAN_MAP_HOST_MEMORY
        (20, 0),                      // COMPUTE_MODE (default)
        (30, 512),                    // SURFACE_ALIGNMENT
        (31, 1),                      // CONCURRENT_KERNELS
        (32, 0),                      // ECC_ENABLED
        (33, 0),                      // PCI_BUS_ID
        (34, 0),                      // PCI_DEVICE_ID
        (35, 0),                      // TCC_DRIVER
        (36, 1_000_000),              // MEMORY_CLOCK_RATE (kHz)
        (37, 64),                     // GLOBAL_MEMORY_BUS_WIDTH
        (38, 4 << 20),                // L2_CACHE_SIZE
        (39, 2048),                   // MAX_THREADS_PER_MULTIPROCESSOR
        (40, 1),                      // ASYNC_ENGINE_COUNT
        (41, 1),                      // UNIFIED_ADDRESSING
        (50, 0),                      // PCI_DOMAIN_ID
        (51, 32),                     // TEXTURE_PITCH_ALIGNMENT
        (75, 8),                      // COMPUTE_CAPABILITY_MAJOR
        (76, 0),                      // COMPUTE_CAPABILITY_MINOR
        (78, 1),                      // STREAM_PRIORITIES_SUPPORTED
        (79, 1),                      // GLOBAL_L1_CACHE_SUPPORTED
        (80, 1),                      // LOCAL_L1_CACHE_SUPPORTED
        (81, 164 * 1024),             // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
        (82, 65536),                  // MAX_REGISTERS_PER_MULTIPROCESSOR
        (83, 1),                      // MANAGED_MEMORY (emulated by the shim)
        (84, 0),                      // MULTI_GPU_BOARD
        (85, 0),                      // MULTI_GPU_BOARD_GROUP_ID
        (86, 0),                      // HOST_NATIVE_ATOMIC_SUPPORTED
        (87, 2),                      // SINGLE_TO_DOUBLE_PRECISION_PERF_RATIO
        (88, 0),                      // PAGEABLE_MEMORY_ACCESS
        (89, 0),                      // CONCURRENT_MANAGED_ACCESS
        (90, 0),                      // COMPUTE_PREEMPTION_SUPPORTED
        (91, 0),                      // CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM
        (95, 1),                      // COOPERATIVE_LAUNCH
        (96, 0),                      // COOPERATIVE_MULTI_DEVICE_LAUNCH
        (97, SHARED_PER_BLOCK_OPTIN), // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
        (98, 0),                      // CAN_FLUSH_REMOTE_WRITES
        (99, 1),                      // HOST_REGISTER_SUPPORTED (emulated)
        (102, 0),                     // VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED
        (106, 32),                    // MAX_BLOCKS_PER_MULTIPROCESSOR
        (111, 0),                     // RESERVED_SHARED_MEMORY_PER_BLOCK
        (115, 0),                     // MEMORY_POOLS_SUPPORTED
    ];
    let mut uuid = *b"vcuda-cpu-dev-00";
    uuid[15] = b'0';
    DeviceInfoReply {
        name: "vcuda CPU (PTX interpreter)".to_string(),
        uuid,
        total_mem,
        attributes: List(
            attrs
                .iter()
                .map(|&(attr, value)| DeviceAttr { attr, value })
                .collect(),
        ),
    }
}
