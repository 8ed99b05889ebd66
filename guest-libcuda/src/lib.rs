//! guest-libcuda: `libcuda.so.1` for programs that run on a vcuda executor.
//!
//! Unmodified CUDA programs (driver API, cudart static or shared, cudarc, …) load this library
//! in place of NVIDIA's driver; every call is forwarded to a host executor over the vcuda
//! protocol (`virtio_cuda::protocol`). See `docs/SHIM.md`.
//!
//! * [`driver`]: the session, client-side handles and the thread's context stack,
//! * [`api`]: the exported C functions (exact `cuda.h` signatures),
//! * [`procaddr`]: `cuGetProcAddress` and the single table of entry points and ABI versions,
//! * [`unsupported`]: stubs for the rest of the driver API (log once, NOT_SUPPORTED),
//! * [`export_table`]: `cuGetExportTable`, the private tables cudart needs,
//! * [`ffi`], [`types`]: the C boundary (panic guard, pointer checks) and C types.
//!
//! The executor is found through `VCUDA_EXECUTOR` (a unix socket; `vcuda exec` sets it), or,
//! inside a VM, through the virtio-cuda device node (`/dev/vcuda0`, or `VCUDA_DEVICE`).

#![allow(non_snake_case)]
// The exported functions are unsafe because C callers pass raw pointers; their contract is
// the one `cuda.h` documents, and every pointer is null-checked before use.
#![allow(clippy::missing_safety_doc)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod api;
pub mod driver;
pub mod export_table;
pub mod ffi;
pub mod procaddr;
pub mod types;
pub mod unsupported;
