//! Unmodified CUDA programs (written in `tests/programs/`, built with the pip CUDA 13 nvcc)
//! run through the vcuda shim (`libcuda.so.1` from guest-libcuda) on an in-process cpu
//! executor; each program checks its own results and prints PASS/FAIL.
//!
//! Needs the shim built in the same target directory as this test
//! (`cargo build -p guest-libcuda`); without it, or without the CUDA toolchain
//! (`scripts/setup.sh`), each test prints `SKIPPED` and returns.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use host_executor::client::InProcess;
use vcuda_tests::require_toolchain;
use vcuda_tests::shim::{self, compile_linked as compile_with, profile_dir, program};
use vcuda_tests::toolchain::{self, Cudart};

/// The shim directory, or `None` after saying what is missing.
fn shim_dir() -> Option<PathBuf> {
    match shim::shim_dir() {
        Ok(dir) => Some(dir),
        Err(why) => {
            vcuda_tests::skip(why);
            None
        }
    }
}

/// Runs `prog` against `socket` with the shim first in its library path.
fn run_with(shim: &Path, socket: &Path, prog: &Path, args: &[&str]) -> Output {
    Command::new(prog)
        .args(args)
        .env("LD_LIBRARY_PATH", shim)
        .env("VCUDA_EXECUTOR", socket)
        .output()
        .expect("run program")
}

/// Runs `prog` on a fresh in-process cpu executor and asserts it printed PASS and exited 0.
fn run_passes(shim: &Path, prog: &Path, args: &[&str]) -> String {
    let exec = InProcess::start_cpu(Default::default()).expect("executor");
    let out = run_with(shim, exec.socket(), prog, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("PASS"),
        "{} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        prog.display(),
        out.status
    );
    eprintln!("{stdout}{stderr}");
    // The program's session is gone once it has exited.
    for _ in 0..100 {
        if exec.stats().live_sessions == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(
        exec.stats().live_sessions,
        0,
        "session outlived the program"
    );
    assert_eq!(exec.stats().allocated_bytes, 0, "device memory leaked");
    stdout
}

#[test]
fn runtime_api_static_cudart() {
    let Some(shim) = shim_dir() else { return };
    let prog = require_toolchain!(toolchain::compile_program(
        &program("runtime_api.cu"),
        Cudart::Static
    ));
    run_passes(&shim, &prog, &[]);
}

#[test]
fn runtime_api_shared_cudart() {
    let Some(shim) = shim_dir() else { return };
    let prog = require_toolchain!(toolchain::compile_program(
        &program("runtime_api.cu"),
        Cudart::Shared
    ));
    run_passes(&shim, &prog, &[]);
}

/// Compiles a driver-API program linked with `-lcuda` against the shim itself.
fn compile_driver_program(shim: &Path, name: &str) -> Result<PathBuf, toolchain::ToolchainError> {
    compile_with(shim, name, name, &[])
}

#[test]
fn driver_api_program() {
    let Some(shim) = shim_dir() else { return };
    let ptx = require_toolchain!(toolchain::compile_ptx(
        &program("driver_kernels.cu"),
        toolchain::DEFAULT_ARCH
    ));
    let ptx_path = profile_dir().join("vcuda-driver_kernels.ptx");
    std::fs::write(&ptx_path, ptx).expect("write ptx");
    let prog = require_toolchain!(compile_driver_program(&shim, "driver_api"));
    run_passes(&shim, &prog, &[ptx_path.to_str().expect("utf-8 path")]);
}

/// One client is killed in the middle of its calls while another runs: the other completes,
/// and the dead client's session and device memory are freed.
#[test]
fn killed_client_does_not_disturb_another() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let Some(shim) = shim_dir() else { return };
    let hog = require_toolchain!(toolchain::compile_program(
        &program("hog.cu"),
        Cudart::Static
    ));
    let other = require_toolchain!(toolchain::compile_program(
        &program("runtime_api.cu"),
        Cudart::Static
    ));
    let exec = InProcess::start_cpu(Default::default()).expect("executor");
    let mut child = Command::new(&hog)
        .env("LD_LIBRARY_PATH", &shim)
        .env("VCUDA_EXECUTOR", exec.socket())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start hog");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("hog stdout");
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("hog output");
    assert_eq!(line.trim(), "READY", "hog did not start");
    assert!(exec.stats().allocated_bytes >= 64 << 20);
    assert_eq!(exec.stats().live_sessions, 1);

    let (socket, shim2) = (exec.socket().to_path_buf(), shim.clone());
    let runner = std::thread::spawn(move || run_with(&shim2, &socket, &other, &[]));
    std::thread::sleep(std::time::Duration::from_millis(50));
    child.kill().expect("kill hog");
    child.wait().expect("reap hog");
    let out = runner.join().expect("runner thread");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("PASS"),
        "the surviving client failed:\n{text}"
    );
    for _ in 0..200 {
        let s = exec.stats();
        if s.live_sessions == 0 && s.allocated_bytes == 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("killed client's session not freed: {:?}", exec.stats());
}

/// The shim's micro-benchmarks (docs/BENCHMARKS.md, "Shim"); run with
/// `cargo test --release -p vcuda-tests --test shim_programs shim_bench -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark"]
fn shim_bench() {
    let Some(shim) = shim_dir() else { return };
    let ptx = require_toolchain!(toolchain::compile_ptx(
        &program("driver_kernels.cu"),
        toolchain::DEFAULT_ARCH
    ));
    let ptx_path = profile_dir().join("vcuda-bench_kernels.ptx");
    std::fs::write(&ptx_path, ptx).expect("write ptx");
    let prog = require_toolchain!(compile_driver_program(&shim, "shim_bench"));
    let out = run_passes(&shim, &prog, &[ptx_path.to_str().expect("utf-8 path")]);
    println!("{out}");
}

#[test]
fn runtime_more_legacy_default_stream() {
    let Some(shim) = shim_dir() else { return };
    let prog = require_toolchain!(compile_with(&shim, "runtime_more", "runtime_more", &[]));
    let out = run_passes(&shim, &prog, &[]);
    assert!(
        out.contains("hello from block 1 tag 7"),
        "device printf missing:\n{out}"
    );
}

/// `--default-stream per-thread`: cudart resolves the `_ptsz`/`_ptds` entry points.
#[test]
fn runtime_more_per_thread_default_stream() {
    let Some(shim) = shim_dir() else { return };
    let prog = require_toolchain!(compile_with(
        &shim,
        "runtime_more",
        "runtime_more_ptds",
        &["--default-stream", "per-thread"]
    ));
    run_passes(&shim, &prog, &[]);
}

/// `nvcc -rdc=true` with two translation units: cudart registers the device-linked image (SASS
/// only) together with each unit's prelinked fatbin; the shim forwards them as one linked
/// image and the cpu backend joins the units' PTX (a kernel calling a device function and
/// updating a `__device__` variable of the other unit).
#[test]
fn relocatable_device_code_across_translation_units() {
    let Some(shim) = shim_dir() else { return };
    let tc = require_toolchain!(toolchain::toolchain());
    let out = profile_dir().join("vcuda-rdc");
    let dir = toolchain::workspace_root().join("tests/programs/rdc");
    let built = Command::new(&tc.nvcc)
        .args([
            "-rdc=true",
            "-gencode",
            "arch=compute_75,code=[sm_75,compute_75]",
        ])
        .arg(format!("-L{}", tc.cuda_root.join("lib").display()))
        .arg(dir.join("main.cu"))
        .arg(dir.join("lib.cu"))
        .arg("-o")
        .arg(&out)
        .output()
        .expect("run nvcc");
    assert!(
        built.status.success(),
        "nvcc -rdc=true: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let stdout = run_passes(&shim, &out, &[]);
    assert!(stdout.contains("PASS rdc"), "{stdout}");
}
