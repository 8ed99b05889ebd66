//! vcuda-tests: shared utilities of the end-to-end and conformance suites.
//!
//! * [`toolchain`]: the CUDA 13 toolchain from `scripts/setup.sh` (nvcc, NVRTC through dlopen),
//!   with compiles cached by content hash; [`require_toolchain!`] turns a missing toolchain into
//!   a visible skip,
//! * [`kernels`]: the CUDA C test kernels of `tests/cuda/kernels/` (files and NVRTC sources),
//! * [`reference`]: what each kernel must compute, in plain Rust, and comparison helpers
//!   (ULP distances, tolerances).

pub use vcuda_testkit::skip;

pub mod drm_pattern;
pub mod kernels;
pub mod reference;
pub mod shim;
pub mod toolchain;
