//! The `cuda` backend without a GPU: `vcuda executor --backend cuda` loads, as its libcuda, our
//! own shim (`libcuda.so.1`), which forwards to a second executor running the `cpu` backend.
//! Every cudarc call the cuda backend makes (contexts, VA window fallback, module loads,
//! parameter layouts, launches, streams, events, the pinned staging pipeline) thus runs against
//! our implementation of CUDA semantics, and results are compared with the direct cpu run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use host_executor::client::InProcess;
use vcuda_tests::require_toolchain;
use vcuda_tests::shim::{compile_linked, program, shim_dir, vcuda_bin};
use vcuda_tests::toolchain::{self, Cudart};
use virtio_cuda::client::{Client, KernelArg};

/// A `vcuda executor --backend cuda` process whose driver is the shim, served by `cpu`.
struct Loopback {
    child: Child,
    socket: PathBuf,
    _cpu: InProcess,
    _dir: tempdir::Dir,
}

mod tempdir {
    use std::path::{Path, PathBuf};
    pub struct Dir(PathBuf);
    impl Dir {
        pub fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!("vcuda-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).expect("temp dir");
            Dir(p)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Loopback {
    fn start(shim: &Path, vcuda: &Path, tag: &str) -> Self {
        let cpu = InProcess::start_cpu(Default::default()).expect("cpu executor");
        let dir = tempdir::Dir::new(tag);
        let socket = dir.path().join("cuda.sock");
        let child = Command::new(vcuda)
            .args(["executor", "--backend", "cuda", "--listen"])
            .arg(&socket)
            .env("LD_LIBRARY_PATH", shim)
            .env("VCUDA_EXECUTOR", cpu.socket())
            .spawn()
            .expect("start the cuda executor");
        let t = Instant::now();
        while !socket.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "cuda executor did not come up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Loopback {
            child,
            socket,
            _cpu: cpu,
            _dir: dir,
        }
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

macro_rules! need {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(why) => {
                vcuda_tests::skip(why);
                return;
            }
        }
    };
}

/// A workload through the typed client; returns every byte it read back.
fn workload(client: &Client, ptx: &str) -> Vec<u8> {
    let ctx = client.create_context(0).unwrap();
    let m = ctx.load_module(ptx.as_bytes()).unwrap();
    let n = 5000u32;
    let a: Vec<f32> = (0..n).map(|i| (i as f32).sin()).collect();
    let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.25).cos()).collect();
    let (da, db, dc) = (
        ctx.upload(&a).unwrap(),
        ctx.upload(&b).unwrap(),
        ctx.alloc(4 * u64::from(n)).unwrap(),
    );
    m.function("vadd")
        .unwrap()
        .launch(
            [n.div_ceil(128), 1, 1],
            [128, 1, 1],
            0,
            &[
                KernelArg::Ptr(da),
                KernelArg::Ptr(db),
                KernelArg::Ptr(dc),
                KernelArg::U32(n),
            ],
        )
        .unwrap();
    let parts = ctx.alloc(4 * 16).unwrap();
    m.function("block_sum")
        .unwrap()
        .launch(
            [16, 1, 1],
            [256, 1, 1],
            0,
            &[KernelArg::Ptr(dc), KernelArg::Ptr(parts), KernelArg::U32(n)],
        )
        .unwrap();
    let s = 48u32;
    let ma: Vec<f32> = (0..s * s).map(|i| (i % 7) as f32 - 3.0).collect();
    let (dma, dmc) = (
        ctx.upload(&ma).unwrap(),
        ctx.alloc(4 * u64::from(s * s)).unwrap(),
    );
    m.function("sgemm")
        .unwrap()
        .launch(
            [3, 3, 1],
            [16, 16, 1],
            0,
            &[
                KernelArg::Ptr(dma),
                KernelArg::Ptr(dma),
                KernelArg::Ptr(dmc),
                KernelArg::U32(s),
            ],
        )
        .unwrap();
    ctx.synchronize().unwrap();
    // A large copy goes through the backend's pinned staging pipeline (several chunks).
    let big: Vec<u32> = (0..3_000_000u32)
        .map(|i| i.wrapping_mul(2654435761))
        .collect();
    let dbig = ctx.upload(&big).unwrap();
    let mut out = ctx.read(dc, 4 * u64::from(n)).unwrap();
    out.extend(ctx.read(parts, 64).unwrap());
    out.extend(ctx.read(dmc, 4 * u64::from(s * s)).unwrap());
    let back: Vec<u32> = ctx.download(dbig, big.len()).unwrap();
    assert!(back == big, "large transfer corrupted");
    out
}

const DEMO_PTX: &str = include_str!("../../cli/src/demo/demo.ptx");

#[test]
fn cuda_backend_matches_the_cpu_backend_through_the_shim() {
    let shim = need!(shim_dir());
    let vcuda = need!(vcuda_bin());
    let lb = Loopback::start(&shim, &vcuda, "loopback-client");
    let via_cuda = Client::connect_unix(&lb.socket, "loopback").expect("connect");
    assert_eq!(via_cuda.hello().backend, "cuda");
    let direct = InProcess::start_cpu(Default::default()).unwrap();
    let via_cpu = direct.connect("direct").unwrap();
    let a = workload(&via_cuda, DEMO_PTX);
    let b = workload(&via_cpu, DEMO_PTX);
    assert_eq!(a.len(), b.len());
    assert!(a == b, "cuda-backend results differ from the cpu backend's");
}

/// Runs `prog` with `vcuda exec --backend <backend>`; for `cuda`, the `vcuda` process loads the
/// shim as its driver and that shim talks to the cpu executor at `cpu_socket`.
fn exec(
    vcuda: &Path,
    shim: &Path,
    backend: &str,
    cpu_socket: &Path,
    prog: &Path,
    args: &[&str],
) -> Output {
    Command::new(vcuda)
        .args(["exec", "--backend", backend, "--"])
        .arg(prog)
        .args(args)
        .env("LD_LIBRARY_PATH", shim)
        .env("VCUDA_EXECUTOR", cpu_socket)
        .output()
        .expect("run vcuda exec")
}

/// The output lines a program printed, sorted: device printf reaches stdout from the executor
/// with a real driver (and here from the shim inside `vcuda`), so its position may differ.
fn lines(o: &Output) -> Vec<String> {
    let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.contains(" ms") && !l.contains("µs"))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// The conformance programs, unmodified, through `vcuda exec --backend cuda` (cuda backend →
/// shim → cpu executor) and through `vcuda exec --backend cpu`: both pass, with the same output.
#[test]
fn conformance_programs_match_through_vcuda_exec_backend_cuda() {
    let shim = need!(shim_dir());
    let vcuda = need!(vcuda_bin());
    let root = toolchain::workspace_root();
    let mut progs: Vec<(String, PathBuf, Vec<String>)> = Vec::new();
    for (label, cudart) in [
        ("runtime_api static", Cudart::Static),
        ("runtime_api shared", Cudart::Shared),
    ] {
        let p = require_toolchain!(toolchain::compile_program(
            &root.join("tests/programs/runtime_api.cu"),
            cudart
        ));
        progs.push((label.into(), p, vec![]));
    }
    let more = require_toolchain!(compile_linked(&shim, "runtime_more", "runtime_more", &[]));
    progs.push(("runtime_more".into(), more, vec![]));
    let ptds = require_toolchain!(compile_linked(
        &shim,
        "runtime_more",
        "runtime_more_ptds",
        &["--default-stream", "per-thread"]
    ));
    progs.push(("runtime_more per-thread".into(), ptds, vec![]));
    let ptx = require_toolchain!(toolchain::compile_ptx(
        &program("driver_kernels.cu"),
        toolchain::DEFAULT_ARCH
    ));
    let ptx_path = vcuda_tests::shim::profile_dir().join("vcuda-loopback-driver_kernels.ptx");
    std::fs::write(&ptx_path, ptx).expect("write ptx");
    let driver = require_toolchain!(compile_linked(&shim, "driver_api", "driver_api", &[]));
    progs.push((
        "driver_api".into(),
        driver,
        vec![ptx_path.to_string_lossy().into_owned()],
    ));

    let cpu = InProcess::start_cpu(Default::default()).expect("cpu executor");
    for (label, prog, args) in &progs {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let direct = exec(&vcuda, &shim, "cpu", cpu.socket(), prog, &args);
        let looped = exec(&vcuda, &shim, "cuda", cpu.socket(), prog, &args);
        for (how, o) in [("--backend cpu", &direct), ("--backend cuda", &looped)] {
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(
                o.status.success() && out.contains("PASS"),
                "{label} via {how} failed ({}):\n{out}\n{}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            );
        }
        assert_eq!(lines(&direct), lines(&looped), "{label}: outputs differ");
    }
}

#[test]
fn backend_cuda_without_a_driver_is_a_clear_error_and_auto_falls_back() {
    need!(shim_dir());
    let vcuda = need!(vcuda_bin());
    // No LD_LIBRARY_PATH: no libcuda at all on this machine (skip where a real one exists).
    if std::path::Path::new("/dev/nvidia0").exists() {
        vcuda_tests::skip(
            "a real NVIDIA driver is present (/dev/nvidia0): this test needs a machine without one",
        );
        return;
    }
    let o = Command::new(&vcuda)
        .args(["exec", "--backend", "cuda", "--", "true"])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("run vcuda exec");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("cuda backend is unavailable"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let o = Command::new(&vcuda)
        .args(["exec", "--backend", "auto", "--", "true"])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("run vcuda exec");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("using cpu"), "{err}");
}
