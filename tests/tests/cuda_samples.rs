//! NVIDIA's cuda-samples through the shim on the cpu backend (opt-in: it builds ~100 samples
//! and runs them on the interpreter, about 15 minutes on 2 cores).
//!
//! ```sh
//! VCUDA_CUDA_SAMPLES=~/src/cuda-samples cargo test --release -p vcuda-tests \
//!     --test cuda_samples -- --ignored --nocapture
//! ```
//!
//! `scripts/cuda-samples.py` builds the headless single-GPU samples with the pip toolchain
//! (cached under `$VCUDA_CACHE/cuda-samples/build`), and `vcuda conform` runs each one, judged by
//! its own exit status. The test prints the table and fails if fewer samples pass than
//! `VCUDA_SAMPLES_MIN_PASS` (default: the count docs/CONFORMANCE.md records), so that a
//! regression shows.

use std::process::Command;

use vcuda_tests::shim;
use vcuda_tests::toolchain;

/// Samples passing at the last recorded run (docs/CONFORMANCE.md).
const RECORDED_PASSES: u64 = 60;

#[test]
#[ignore = "opt-in: builds and runs NVIDIA's cuda-samples (set VCUDA_CUDA_SAMPLES to a checkout)"]
fn cuda_samples_on_the_cpu_backend() {
    let Some(src) = std::env::var_os("VCUDA_CUDA_SAMPLES") else {
        vcuda_tests::skip("VCUDA_CUDA_SAMPLES is not set (a cuda-samples checkout)");
        return;
    };
    let vcuda = shim::vcuda_bin().expect("the vcuda binary of this build");
    let tc = toolchain::toolchain().expect("the CUDA toolchain (scripts/setup.sh)");
    let cache = std::env::var_os("VCUDA_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/vcuda")
        });
    let out = cache.join("cuda-samples/build");
    let build = Command::new("python3")
        .arg(toolchain::workspace_root().join("scripts/cuda-samples.py"))
        .args(["build", "--src"])
        .arg(&src)
        .arg("--out")
        .arg(&out)
        .env("VCUDA_NVCC", &tc.nvcc)
        .env("VCUDA_CUDA_ROOT", &tc.cuda_root)
        .env("VCUDA_SHIM_DIR", shim::profile_dir())
        .status()
        .expect("run scripts/cuda-samples.py");
    assert!(build.success(), "building the samples failed ({build})");
    let report = out.join("conform.json");
    let run = Command::new(&vcuda)
        .args(["conform", "--backend", "cpu", "--timeout", "120", "--json"])
        .arg(&report)
        .arg(&out)
        .status()
        .expect("run vcuda conform");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("conform.json")).expect("JSON");
    let passed = json["passed"].as_u64().unwrap_or(0);
    let min = std::env::var("VCUDA_SAMPLES_MIN_PASS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RECORDED_PASSES);
    eprintln!(
        "cuda-samples: {passed} passed, {} failed, {} waived (vcuda conform: {run})",
        json["failed"], json["waived"]
    );
    assert!(
        passed >= min,
        "{passed} samples passed, fewer than the {min} recorded"
    );
}
