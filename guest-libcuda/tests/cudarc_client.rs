//! A cudarc program (`examples/cudarc_client.rs`, dynamic loading) runs its kernels through
//! this crate's `libcuda.so` on an in-process cpu executor. Needs no CUDA toolchain.

use std::path::{Path, PathBuf};
use std::process::Command;

use host_executor::client::InProcess;

fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("profile dir")
}

#[test]
fn cudarc_program_runs_through_the_shim() {
    let dir = profile_dir();
    let example = dir.join("examples").join("cudarc_client");
    let lib = dir.join("libcuda.so");
    if !example.is_file() || !lib.is_file() {
        vcuda_testkit::skip(format!(
            "{} or {} not built",
            example.display(),
            lib.display()
        ));
        return;
    }
    let shim = dir.join("vcuda-shim-cudarc");
    std::fs::create_dir_all(&shim).expect("shim dir");
    for name in ["libcuda.so.1", "libcuda.so"] {
        let link = shim.join(name);
        if !link.exists() {
            let _ = std::os::unix::fs::symlink(&lib, &link);
        }
    }
    let exec = InProcess::start_cpu(Default::default()).expect("executor");
    let out = Command::new(&example)
        .env("LD_LIBRARY_PATH", &shim)
        .env("VCUDA_EXECUTOR", exec.socket())
        .output()
        .expect("run example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("PASS"),
        "cudarc_client failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
