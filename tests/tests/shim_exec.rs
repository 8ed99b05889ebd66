//! `vcuda exec`: the CLI starts an executor, runs an unmodified program with the shim and
//! passes its exit status through. Needs `vcuda` and the shim built in this test's target
//! directory (`cargo build -p vcuda -p guest-libcuda`) and the CUDA toolchain; skips otherwise.

use std::path::PathBuf;
use std::process::Command;

use vcuda_tests::require_toolchain;
use vcuda_tests::shim;
use vcuda_tests::toolchain::{self, Cudart};

/// The built `vcuda` (with the shim beside it), or `None` after saying what is missing.
fn vcuda() -> Option<PathBuf> {
    match shim::vcuda_bin().and_then(|bin| shim::shim_dir().map(|_| bin)) {
        Ok(bin) => Some(bin),
        Err(why) => {
            vcuda_tests::skip(why);
            None
        }
    }
}

#[test]
fn exec_runs_a_cudart_program_on_the_cpu_backend() {
    let Some(vcuda) = vcuda() else { return };
    let prog = require_toolchain!(toolchain::compile_program(
        &toolchain::workspace_root().join("tests/programs/runtime_api.cu"),
        Cudart::Static
    ));
    let out = Command::new(&vcuda)
        .args(["exec", "--backend", "cpu", "--"])
        .arg(&prog)
        .env_remove("VCUDA_EXECUTOR")
        .output()
        .expect("run vcuda exec");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("PASS runtime_api"),
        "vcuda exec failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn exec_passes_the_exit_status_through() {
    let Some(vcuda) = vcuda() else { return };
    let status = Command::new(&vcuda)
        .args(["exec", "--backend", "cpu", "--", "sh", "-c", "exit 7"])
        .status()
        .expect("run vcuda exec");
    assert_eq!(status.code(), Some(7));
    let status = Command::new(&vcuda)
        .args(["exec", "--backend", "cpu", "--", "sh", "-c", "kill -9 $$"])
        .status()
        .expect("run vcuda exec");
    assert_eq!(status.code(), Some(128 + 9));
}
