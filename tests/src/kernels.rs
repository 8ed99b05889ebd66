//! The CUDA C test kernels in `tests/cuda/kernels/`, as files (for nvcc) and as source strings
//! (for NVRTC: every kernel file is self-contained device code that NVRTC compiles as is).
//!
//! Kernels are `extern "C"`, so their PTX entry names are the C names below. What each kernel
//! computes, and how to launch it, is in the comment heading its file; the matching host
//! computation is in [`crate::reference`].

use std::path::PathBuf;

use crate::toolchain::{self, ToolchainError, DEFAULT_ARCH};

/// One `.cu` file of test kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelFile {
    /// File name under `tests/cuda/kernels/`.
    pub file: &'static str,
    /// Its contents (also what NVRTC compiles).
    pub source: &'static str,
    /// The `extern "C"` kernels it defines.
    pub entries: &'static [&'static str],
}

macro_rules! kernel_file {
    ($file:literal, [$($entry:literal),* $(,)?]) => {
        KernelFile {
            file: $file,
            source: include_str!(concat!("../cuda/kernels/", $file)),
            entries: &[$($entry),*],
        }
    };
}

pub const VADD: KernelFile = kernel_file!("vadd.cu", ["vadd_f32", "vadd_i32", "saxpy"]);
pub const REDUCE: KernelFile = kernel_file!("reduce.cu", ["reduce_sum_f32", "reduce_sum_i32"]);
pub const MATMUL: KernelFile = kernel_file!("matmul.cu", ["matmul_f32", "matmul_f64"]);
pub const ATOMICS: KernelFile = kernel_file!(
    "atomics.cu",
    [
        "atomic_add",
        "atomic_minmax",
        "atomic_exch",
        "atomic_inc",
        "atomic_cas_sum_sq",
        "histogram16",
    ]
);
pub const WARP: KernelFile = kernel_file!(
    "warp.cu",
    ["shfl_down_sum", "shfl_xor_max", "shfl_gather", "vote"]
);
pub const DIVERGENCE: KernelFile = kernel_file!("divergence.cu", ["collatz", "branchy"]);
pub const CONSTANT: KernelFile = kernel_file!("constant.cu", ["fir", "fir_fixed"]);
pub const DYNAMIC_SHARED: KernelFile =
    kernel_file!("dynamic_shared.cu", ["reverse_blocks", "block_prefix_sums"]);
pub const MATH: KernelFile = kernel_file!("math.cu", ["math_f32", "math_f64"]);
pub const PRINTF: KernelFile = kernel_file!("printf.cu", ["hello_printf"]);
pub const FAULTS: KernelFile = kernel_file!("faults.cu", ["write_oob", "spin_forever"]);
pub const NOINLINE: KernelFile = kernel_file!("noinline.cu", ["call_noinline"]);

/// Every kernel file.
pub const ALL: &[KernelFile] = &[
    VADD,
    REDUCE,
    MATMUL,
    ATOMICS,
    WARP,
    DIVERGENCE,
    CONSTANT,
    DYNAMIC_SHARED,
    MATH,
    PRINTF,
    FAULTS,
    NOINLINE,
];

/// `tests/cuda/kernels/`.
pub fn kernels_dir() -> PathBuf {
    toolchain::workspace_root().join("tests/cuda/kernels")
}

/// `tests/cuda/programs/` (complete host programs for `compile_program`).
pub fn programs_dir() -> PathBuf {
    toolchain::workspace_root().join("tests/cuda/programs")
}

impl KernelFile {
    /// The file's path.
    pub fn path(&self) -> PathBuf {
        kernels_dir().join(self.file)
    }

    /// PTX from nvcc for sm_75 (cached).
    pub fn nvcc_ptx(&self) -> Result<String, ToolchainError> {
        toolchain::compile_ptx(&self.path(), DEFAULT_ARCH)
    }

    /// PTX from NVRTC for compute_75 (cached).
    pub fn nvrtc_ptx(&self) -> Result<String, ToolchainError> {
        toolchain::nvrtc_compile(
            self.source,
            self.file,
            &[&format!("--gpu-architecture=compute_{DEFAULT_ARCH}")],
        )
    }
}
