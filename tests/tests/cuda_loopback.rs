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
use vcuda_tests::shim::{shim_dir, vcuda_bin};
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
                eprintln!("SKIPPED: {why}");
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

const DEMO_PTX: &str = include_str!("../../vmm/src/bin/vcuda/demo/demo.ptx");

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

fn run(prog: &Path, shim: &Path, socket: &Path) -> Output {
    Command::new(prog)
        .env("LD_LIBRARY_PATH", shim)
        .env("VCUDA_EXECUTOR", socket)
        .output()
        .expect("run program")
}

#[test]
fn unmodified_programs_give_the_same_output_through_the_cuda_backend() {
    let shim = need!(shim_dir());
    let vcuda = need!(vcuda_bin());
    let prog = require_toolchain!(toolchain::compile_program(
        &toolchain::workspace_root().join("tests/programs/runtime_api.cu"),
        Cudart::Static
    ));
    let lb = Loopback::start(&shim, &vcuda, "loopback-programs");
    let direct = InProcess::start_cpu(Default::default()).unwrap();
    let via_cpu = run(&prog, &shim, direct.socket());
    let via_cuda = run(&prog, &shim, &lb.socket);
    let (a, b) = (
        String::from_utf8_lossy(&via_cuda.stdout),
        String::from_utf8_lossy(&via_cpu.stdout),
    );
    assert!(
        via_cpu.status.success() && b.contains("PASS"),
        "direct run failed ({}):\n{b}\n{}",
        via_cpu.status,
        String::from_utf8_lossy(&via_cpu.stderr)
    );
    assert!(
        via_cuda.status.success() && a.contains("PASS"),
        "through the cuda backend:\n{a}\n{}",
        String::from_utf8_lossy(&via_cuda.stderr)
    );
    // Device printf goes to the executor's stdout with a real driver too; compare the rest.
    let keep = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.contains("ms") && !l.starts_with("printf"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(keep(&a), keep(&b));
}
