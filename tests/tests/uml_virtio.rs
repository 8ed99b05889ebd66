//! virtio-cuda end to end in a real Linux kernel, without KVM: User-Mode Linux (Debian's
//! `user-mode-linux` 6.1) boots with a hostfs root and the device attached through
//! `vcuda vhost-user`; inside it, `guest/module/vcuda.ko` binds the device and this very test
//! binary runs [`guest_side`] over `/dev/vcuda0` (the shim's virtio transport).
//!
//! Needs: `scripts/uml.sh setup` (run here; downloads and caches under ~/.cache/vcuda/uml, uses
//! apt-get) and the `vcuda` binary of this build (`cargo build -p vcuda`; `cargo test
//! --workspace` builds it). Without them the test says why and passes as skipped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vcuda_tests::shim::{profile_dir, shim_dir};
use vcuda_tests::skip;
use virtio_cuda::client::virtio::VirtioTransport;
use virtio_cuda::client::{Client, KernelArg, Transport};
use virtio_cuda::protocol::{self as p, Sink, Source, Status};

/// Set by the guest's init script: this process runs inside UML.
const IN_GUEST: &str = "VCUDA_IN_UML";
/// Printed by the guest side when everything passed.
const OK_MARKER: &str = "vcuda-uml: all checks passed";

const DEMO_PTX: &str = include_str!("../../cli/src/demo/demo.ptx");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Installs/verifies UML and builds the module once per test process; returns its path.
fn prepare_uml() -> Result<PathBuf, String> {
    static ONCE: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(prepare_uml_uncached).clone()
}

fn prepare_uml_uncached() -> Result<PathBuf, String> {
    if std::env::var_os("VCUDA_SKIP_UML").is_some() {
        return Err("VCUDA_SKIP_UML is set".into());
    }
    let script = repo().join("scripts/uml.sh");
    let setup = Command::new(&script)
        .arg("setup")
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stderr = String::from_utf8_lossy(&setup.stderr);
    match setup.status.code() {
        Some(0) => {}
        // Exit 2: UML cannot be installed on this host (no apt-get, no root): a missing capability.
        Some(2) => return Err(format!("User-Mode Linux unavailable: {}", stderr.trim())),
        // Installed but broken here (it does not boot, or setup itself failed): never a skip.
        _ => panic!(
            "scripts/uml.sh setup failed ({}): UML is installed but not usable on this host:\n{stderr}",
            setup.status
        ),
    }
    let out_dir = profile_dir().join("uml-module");
    let build = Command::new(&script)
        .arg("module")
        .arg(&out_dir)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !build.status.success() {
        // The module is ours: a build failure is a test failure, not a skip.
        panic!(
            "building guest/module for UML failed:\n{}",
            String::from_utf8_lossy(&build.stderr)
        );
    }
    Ok(out_dir.join("vcuda.ko"))
}

/// The `vhost-user` backend process (and, for `remote`, a `vcuda executor` it forwards to);
/// killed on drop.
struct Backend {
    children: Vec<Child>,
    socket: PathBuf,
    dir: PathBuf,
}

fn wait_for(path: &Path) {
    let t0 = Instant::now();
    while !path.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{} did not appear",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Backend {
    fn start(remote: bool) -> Result<Self, String> {
        let bin = profile_dir().join("vcuda");
        if !bin.is_file() {
            return Err(format!(
                "{} not built (run `cargo build -p vcuda`)",
                bin.display()
            ));
        }
        let dir = std::env::temp_dir().join(format!(
            "vcuda-uml-test-{}-{}",
            std::process::id(),
            if remote { "remote" } else { "local" }
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let socket = dir.join("vcuda.sock");
        let mut b = Backend {
            children: Vec::new(),
            socket,
            dir,
        };
        let spawn = |args: &[&std::ffi::OsStr]| {
            Command::new(&bin)
                .args(args)
                .stdout(Stdio::null())
                .spawn()
                .expect("start vcuda")
        };
        let os = std::ffi::OsStr::new;
        let exec_sock = b.dir.join("executor.sock");
        let mut vhost_args = vec![os("vhost-user"), os("--socket"), b.socket.as_os_str()];
        if remote {
            b.children.push(spawn(&[
                os("executor"),
                os("--backend"),
                os("cpu"),
                os("--listen"),
                exec_sock.as_os_str(),
            ]));
            wait_for(&exec_sock);
            vhost_args.extend([os("--executor"), exec_sock.as_os_str()]);
        } else {
            vhost_args.extend([os("--backend"), os("cpu")]);
        }
        b.children.push(spawn(&vhost_args));
        wait_for(&b.socket);
        Ok(b)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// UML guests boot one test at a time: several UML kernels plus their backends at once overload
/// a 2-core CI host (boot and probe timeouts), which says nothing about the code under test.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serialize() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Boots UML with the device and module and runs `args` in it; returns (exit status, console).
fn boot(socket: &Path, module: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(repo().join("scripts/uml.sh"))
        .arg("run")
        .arg("--socket")
        .arg(socket)
        .arg("--module")
        .arg(module)
        .args(["--timeout", "300", "--"])
        .args(args)
        .output()
        .expect("scripts/uml.sh run");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Boots UML against a fresh backend and runs [`guest_side`] in it.
fn run_in_uml(remote: bool) {
    if std::env::var_os(IN_GUEST).is_some() {
        return; // inside the guest only `guest_side` runs
    }
    let module = match prepare_uml() {
        Ok(m) => m,
        Err(reason) => return skip(&reason),
    };
    let _one = serialize();
    let backend = match Backend::start(remote) {
        Ok(b) => b,
        Err(reason) => return skip(&reason),
    };
    let exe = std::env::current_exe().expect("test binary");
    let t0 = Instant::now();
    let (status, console) = boot(
        &backend.socket,
        &module,
        &[
            exe.to_str().expect("utf-8 path"),
            "guest_side",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ],
    );
    let elapsed = t0.elapsed();
    eprintln!("--- UML console ({elapsed:.1?}) ---\n{console}\n--- end ---");
    assert_eq!(status, 0, "guest program failed (status {status})");
    assert!(
        console.contains(OK_MARKER),
        "guest did not finish its checks"
    );
    assert!(
        console.contains("hello from block 1 of 2"),
        "device printf output did not reach the guest"
    );
}

#[test]
fn cuda_calls_through_the_guest_driver_in_user_mode_linux() {
    run_in_uml(false);
}

#[test]
fn cuda_calls_through_the_guest_driver_to_an_out_of_process_executor() {
    run_in_uml(true);
}

/// A directory with `libcuda.so.1`/`libcuda.so` links to the shim built beside this test.
/// Unmodified CUDA programs (nvcc 13, static and shared cudart, and a driver-API program linked
/// with `-lcuda`) run inside UML on the shim, which finds `/dev/vcuda0` and talks virtio.
#[test]
fn cuda_programs_through_the_shim_in_user_mode_linux() {
    use vcuda_tests::require_toolchain;
    use vcuda_tests::toolchain::{self, Cudart};
    if std::env::var_os(IN_GUEST).is_some() {
        return;
    }
    let shim = match shim_dir() {
        Ok(d) => d,
        Err(reason) => return skip(&reason),
    };
    let src = |name: &str| repo().join("tests/programs").join(name);
    let rt_static = require_toolchain!(toolchain::compile_program(
        &src("runtime_api.cu"),
        Cudart::Static
    ));
    let rt_shared = require_toolchain!(toolchain::compile_program(
        &src("runtime_api.cu"),
        Cudart::Shared
    ));
    let ptx = require_toolchain!(toolchain::compile_ptx(
        &src("driver_kernels.cu"),
        toolchain::DEFAULT_ARCH
    ));
    let ptx_path = profile_dir().join("vcuda-uml-driver_kernels.ptx");
    std::fs::write(&ptx_path, ptx).expect("write ptx");
    let tc = require_toolchain!(toolchain::toolchain());
    let driver_api = profile_dir().join("vcuda-uml-driver_api");
    let nvcc = Command::new(&tc.nvcc)
        .arg(src("driver_api.cu"))
        .arg("-o")
        .arg(&driver_api)
        .arg(format!("-L{}", tc.cuda_root.join("lib").display()))
        .arg(format!("-L{}", shim.display()))
        .arg("-lcuda")
        .output()
        .expect("nvcc");
    assert!(
        nvcc.status.success(),
        "nvcc driver_api: {}",
        String::from_utf8_lossy(&nvcc.stderr)
    );
    let module = match prepare_uml() {
        Ok(m) => m,
        Err(reason) => return skip(&reason),
    };
    let _one = serialize();
    let backend = match Backend::start(false) {
        Ok(b) => b,
        Err(reason) => return skip(&reason),
    };
    let script = format!(
        "export LD_LIBRARY_PATH={shim}; set -e; {a}; {b}; {c} {ptx}",
        shim = shim.display(),
        a = rt_static.display(),
        b = rt_shared.display(),
        c = driver_api.display(),
        ptx = ptx_path.display()
    );
    let t0 = Instant::now();
    let (status, console) = boot(&backend.socket, &module, &["/bin/sh", "-c", &script]);
    eprintln!(
        "--- UML console ({:.1?}) ---\n{console}\n--- end ---",
        t0.elapsed()
    );
    assert_eq!(
        status, 0,
        "a CUDA program failed inside UML (status {status})"
    );
    assert!(
        console.matches("PASS").count() >= 3,
        "expected three programs to print PASS"
    );
}

/// Two VMs on one backend socket at once: each gets its own device and sessions.
#[test]
fn two_guests_share_one_backend() {
    if std::env::var_os(IN_GUEST).is_some() {
        return;
    }
    let module = match prepare_uml() {
        Ok(m) => m,
        Err(reason) => return skip(&reason),
    };
    let _one = serialize();
    let backend = match Backend::start(false) {
        Ok(b) => b,
        Err(reason) => return skip(&reason),
    };
    let exe = std::env::current_exe().expect("test binary");
    let script = format!(
        "{WORKER_ROLE}=work {} guest_worker --exact --quiet && echo guest-ok",
        exe.display()
    );
    let guests: Vec<_> = (0..2)
        .map(|_| {
            let (socket, module, script) = (backend.socket.clone(), module.clone(), script.clone());
            std::thread::spawn(move || boot(&socket, &module, &["/bin/sh", "-c", &script]))
        })
        .collect();
    for g in guests {
        let (status, console) = g.join().expect("UML thread");
        assert!(
            status == 0 && console.contains("guest-ok"),
            "a guest failed (status {status}):\n{console}"
        );
    }
}

/// The driver under churn: the device is unbound while a process is in the middle of calls (it
/// gets errors, the kernel stays sane), bound again and used, then the module is unloaded and
/// reloaded and used again.
#[test]
fn device_unbind_and_module_reload_in_user_mode_linux() {
    if std::env::var_os(IN_GUEST).is_some() {
        return;
    }
    let module = match prepare_uml() {
        Ok(m) => m,
        Err(reason) => return skip(&reason),
    };
    let _one = serialize();
    let backend = match Backend::start(false) {
        Ok(b) => b,
        Err(reason) => return skip(&reason),
    };
    let cache = std::env::var_os("VCUDA_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/vcuda")))
        .expect("HOME");
    let bb = cache.join("uml/root/bin/busybox");
    let exe = std::env::current_exe().expect("test binary");
    let spin_out = backend.dir.join("spinner.out");
    let worker = format!("{} guest_worker --exact --quiet", exe.display());
    let script = format!(
        "export {WORKER_ROLE}=work; \
         ({WORKER_ROLE}=spin {worker} > {so} 2>&1; echo spinner-exit=$? >> {so}) & \
         sleep 0.3; echo virtio0 > /sys/bus/virtio/drivers/vcuda/unbind && echo unbind-ok; \
         wait; cat {so} | grep spinner-exit; \
         echo virtio0 > /sys/bus/virtio/drivers/vcuda/bind && echo bind-ok; \
         {worker} && echo worker-after-bind-ok; \
         {bb} rmmod vcuda && echo rmmod-ok; {bb} insmod {ko} && echo insmod-ok; \
         {worker} && echo worker-after-reload-ok; \
         {bb} dmesg | {bb} grep -c -E 'BUG|Oops|WARNING' | {bb} sed 's/^/kernel-warnings=/'",
        so = spin_out.display(),
        bb = bb.display(),
        ko = module.display(),
    );
    let (status, console) = boot(&backend.socket, &module, &["/bin/sh", "-c", &script]);
    eprintln!("--- UML console ---\n{console}\n--- end ---");
    assert_eq!(status, 0, "guest script failed");
    for marker in [
        "unbind-ok",
        "bind-ok",
        "worker-after-bind-ok",
        "rmmod-ok",
        "insmod-ok",
        "worker-after-reload-ok",
        "kernel-warnings=0",
    ] {
        assert!(console.contains(marker), "missing {marker}");
    }
    assert!(
        !console.contains("spinner-exit=0"),
        "the process using the unbound device did not see an error"
    );
}

/// The guest half: runs only inside UML (the init script sets `VCUDA_IN_UML`).
#[test]
fn guest_side() {
    if std::env::var_os(IN_GUEST).is_none() {
        return;
    }
    let t = VirtioTransport::open_default().expect("open /dev/vcuda0");
    let client = Client::new(Box::new(t.clone()), "uml_virtio").expect("Hello");
    let init = client.call(&p::Init { flags: 0 }).expect("Init");
    println!(
        "vcuda-uml: session {} backend {} driver {} devices {}",
        client.hello().session_id,
        client.hello().backend,
        init.driver_version,
        init.device_count
    );
    assert!(init.device_count >= 1);
    let ctx = client.create_context(0).expect("CtxCreate");
    let c = ctx.handle();

    // H2D through a data window (the guest's own pages), D2H through a window and inline.
    let len = VirtioTransport::MAX_WINDOW;
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
    let dptr = ctx.alloc(len as u64).expect("MemAlloc");
    let mut frame = Vec::new();
    p::encode_call(
        0x8000_0001,
        &p::MemcpyHtoD {
            ctx: c,
            stream: 0,
            dst: dptr,
            src: Source::Shm {
                offset: 0,
                len: len as u64,
            },
        },
        &mut frame,
    );
    t.send_with_data(&frame, &data).expect("H2D window");
    let mut back = vec![0u8; len];
    frame.clear();
    p::encode_call(
        0x8000_0002,
        &p::MemcpyDtoH {
            ctx: c,
            stream: 0,
            src: dptr,
            len: len as u64,
            dst: Sink::Shm {
                offset: 0,
                len: len as u64,
            },
        },
        &mut frame,
    );
    let reply = t
        .call_with_data(&frame, 0x8000_0002, &[], &mut back)
        .expect("D2H window");
    assert_eq!(reply.status, Status::SUCCESS);
    assert!(back == data, "D2H window differs from what was written");
    assert_eq!(
        ctx.read(dptr + 4096, 8192).expect("D2H inline"),
        data[4096..12288]
    );
    println!("vcuda-uml: {len}-byte H2D/D2H through data windows ok");

    // Plain inline copies larger than a window: the transport moves them through windows.
    let big: Vec<u8> = (0..10 * len + 12345).map(|i| (i % 251) as u8).collect();
    let dbig = ctx.alloc(big.len() as u64).expect("MemAlloc");
    ctx.write(dbig, big.clone()).expect("large inline H2D");
    assert!(
        ctx.read(dbig, big.len() as u64).expect("large D2H") == big,
        "large inline copy differs"
    );
    ctx.free(dbig).expect("MemFree");
    println!("vcuda-uml: {}-byte inline H2D/D2H ok", big.len());

    // A kernel launch on the executor's backend.
    let module = ctx.load_module(DEMO_PTX.as_bytes()).expect("ModuleLoad");
    let vadd = module.function("vadd").expect("vadd");
    let n = 1000usize;
    let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..n).map(|i| 2.0 * i as f32).collect();
    let (da, db) = (ctx.upload(&a).unwrap(), ctx.upload(&b).unwrap());
    let dc = ctx.alloc((n * 4) as u64).unwrap();
    vadd.launch(
        [(n as u32).div_ceil(128), 1, 1],
        [128, 1, 1],
        0,
        &[
            KernelArg::Ptr(da),
            KernelArg::Ptr(db),
            KernelArg::Ptr(dc),
            KernelArg::I32(n as i32),
        ],
    )
    .expect("launch");
    let cv: Vec<f32> = ctx.download(dc, n).expect("download");
    for (i, c) in cv.iter().enumerate() {
        assert_eq!(*c, 3.0 * i as f32, "c[{i}]");
    }
    println!("vcuda-uml: vadd of {n} elements ok");
    let hello = module.function("hello").expect("hello");
    hello
        .launch([2, 1, 1], [1, 1, 1], 0, &[KernelArg::I32(2)])
        .expect("hello");
    ctx.synchronize().expect("synchronize");

    // Sync null-call round trips through the ring, against the bare device round trip: a chain
    // the device rejects before any executor work (bad frame magic; the driver reports EIO).
    let percentiles = |mut times: Vec<Duration>| {
        times.sort();
        (times[times.len() / 2], times[times.len() * 99 / 100])
    };
    let mut times = Vec::new();
    for _ in 0..500 {
        let t0 = Instant::now();
        client.call(&p::MemGetInfo { ctx: c }).expect("MemGetInfo");
        times.push(t0.elapsed());
    }
    let (call50, call99) = percentiles(times);
    let mut bare = Vec::new();
    let junk = [0u8; p::HEADER_LEN];
    for _ in 0..500 {
        let t0 = Instant::now();
        let r = t.call(&junk, 0);
        bare.push(t0.elapsed());
        assert!(r.is_err(), "the device accepted a junk frame");
    }
    let (bare50, bare99) = percentiles(bare);
    println!(
        "vcuda-uml: sync call round trip p50 {call50:?} p99 {call99:?} (500 MemGetInfo); \
         bare device round trip p50 {bare50:?} p99 {bare99:?}; ratio {:.2}",
        call50.as_secs_f64() / bare50.as_secs_f64()
    );
    ctx.free(dptr).expect("MemFree");

    launch_cost(&client);
    bandwidth(&t, &ctx);
    concurrency_checks(&client, c);
    println!("{OK_MARKER}");
}

/// Client-side cost of fire-and-forget launches: one ioctl each, and batched (frames buffered
/// by `BatchTransport`, queued many per ioctl by the driver).
fn launch_cost(plain: &Client) {
    use virtio_cuda::client::batch::{BatchConfig, BatchTransport};
    let t = VirtioTransport::open_default().expect("open /dev/vcuda0");
    let bt = BatchTransport::new(t, BatchConfig::default()).expect("batch transport");
    let batched = Client::new(Box::new(bt), "uml_batched").expect("Hello");
    for (name, client) in [("one ioctl each", plain), ("batched", &batched)] {
        let ctx = client.create_context(0).expect("CtxCreate");
        let module = ctx.load_module(DEMO_PTX.as_bytes()).expect("ModuleLoad");
        let vadd = module.function("vadd").expect("vadd");
        let d = ctx.alloc(3 * 4 * 32).expect("MemAlloc");
        let args = [
            KernelArg::Ptr(d),
            KernelArg::Ptr(d + 128),
            KernelArg::Ptr(d + 256),
            KernelArg::I32(32),
        ];
        const N: u32 = 2000;
        let t0 = Instant::now();
        for _ in 0..N {
            vadd.launch([1, 1, 1], [32, 1, 1], 0, &args)
                .expect("launch");
        }
        let issue = t0.elapsed();
        ctx.synchronize().expect("synchronize");
        let total = t0.elapsed();
        println!(
            "vcuda-uml: {N} async launches, {name}: client {:.2} us/launch, with execution {:.1} us/launch",
            issue.as_secs_f64() * 1e6 / f64::from(N),
            total.as_secs_f64() * 1e6 / f64::from(N)
        );
    }
}

/// H2D and D2H bandwidth through data windows of several sizes (32 MiB each way).
fn bandwidth(t: &VirtioTransport, ctx: &virtio_cuda::client::Context<'_>) {
    const TOTAL: usize = 32 << 20;
    let dptr = ctx.alloc(TOTAL as u64).expect("MemAlloc");
    let c = ctx.handle();
    let mut seq = 0x9000_0000u32;
    let mut window = 64 << 10;
    while window <= VirtioTransport::MAX_WINDOW {
        let host = vec![0x5au8; window];
        let mut back = vec![0u8; window];
        let t0 = Instant::now();
        for off in (0..TOTAL).step_by(window) {
            let mut frame = Vec::new();
            seq += 1;
            let src = Source::Shm {
                offset: 0,
                len: window as u64,
            };
            let copy = p::MemcpyHtoD {
                ctx: c,
                stream: 0,
                dst: dptr + off as u64,
                src,
            };
            p::encode_call(seq, &copy, &mut frame);
            t.send_with_data(&frame, &host).expect("H2D");
        }
        let h2d = t0.elapsed();
        let t0 = Instant::now();
        for off in (0..TOTAL).step_by(window) {
            let mut frame = Vec::new();
            seq += 1;
            let dst = Sink::Shm {
                offset: 0,
                len: window as u64,
            };
            let copy = p::MemcpyDtoH {
                ctx: c,
                stream: 0,
                src: dptr + off as u64,
                len: window as u64,
                dst,
            };
            p::encode_call(seq, &copy, &mut frame);
            let r = t.call_with_data(&frame, seq, &[], &mut back).expect("D2H");
            assert_eq!(r.status, Status::SUCCESS);
        }
        let d2h = t0.elapsed();
        assert!(back.iter().all(|b| *b == 0x5a));
        let mbps = |d: Duration| TOTAL as f64 / d.as_secs_f64() / 1e6;
        println!(
            "vcuda-uml: {} KiB windows: H2D {:.0} MB/s, D2H {:.0} MB/s",
            window >> 10,
            mbps(h2d),
            mbps(d2h)
        );
        window *= 4;
    }
    ctx.free(dptr).expect("MemFree");
}

/// Selects what a [`guest_worker`] process does.
const WORKER_ROLE: &str = "VCUDA_UML_WORKER";

fn spawn_worker(role: &str) -> std::process::Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["guest_worker", "--exact", "--test-threads=1", "--quiet"])
        .env(WORKER_ROLE, role)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn guest worker")
}

/// Processes with their own sessions (one killed mid-call) and threads sharing this session.
fn concurrency_checks(client: &Client, ctx: u64) {
    let mut spinner = spawn_worker("spin");
    let workers: Vec<_> = (0..4).map(|_| spawn_worker("work")).collect();
    std::thread::sleep(Duration::from_millis(200));
    spinner.kill().expect("kill spinner");
    let _ = spinner.wait();
    for mut w in workers {
        assert!(w.wait().expect("worker").success(), "a guest worker failed");
    }
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..100 {
                    client.call(&p::MemGetInfo { ctx }).expect("MemGetInfo");
                }
            });
        }
    });
    client
        .call(&p::MemGetInfo { ctx })
        .expect("session alive after the others");
    println!("vcuda-uml: 4 processes, a killed one, 4 threads on one session ok");
}

/// A second guest process (spawned by [`guest_side`]): its own session on the device.
#[test]
fn guest_worker() {
    let Some(role) = std::env::var_os(WORKER_ROLE) else {
        return;
    };
    let t = VirtioTransport::open_default().expect("open /dev/vcuda0");
    let client = Client::new(Box::new(t.clone()), "uml_worker").expect("Hello");
    let ctx = client.create_context(0).expect("CtxCreate");
    let c = ctx.handle();
    let len = 64 << 10;
    let dptr = ctx.alloc(len as u64).expect("MemAlloc");
    let seed = std::process::id() as usize;
    let data: Vec<u8> = (0..len).map(|i| (i + seed) as u8).collect();
    let rounds = if role == "spin" { usize::MAX } else { 20 };
    for round in 0..rounds {
        let mut frame = Vec::new();
        p::encode_call(
            round as u32 * 2 + 0x100,
            &p::MemcpyHtoD {
                ctx: c,
                stream: 0,
                dst: dptr,
                src: Source::Shm {
                    offset: 0,
                    len: len as u64,
                },
            },
            &mut frame,
        );
        t.send_with_data(&frame, &data).expect("H2D window");
        let mut back = vec![0u8; len];
        frame.clear();
        let seq = round as u32 * 2 + 0x101;
        p::encode_call(
            seq,
            &p::MemcpyDtoH {
                ctx: c,
                stream: 0,
                src: dptr,
                len: len as u64,
                dst: Sink::Shm {
                    offset: 0,
                    len: len as u64,
                },
            },
            &mut frame,
        );
        let r = t.call_with_data(&frame, seq, &[], &mut back).expect("D2H");
        assert_eq!(r.status, Status::SUCCESS);
        assert!(back == data, "worker {seed}: data differs");
    }
}
