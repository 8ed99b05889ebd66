//! `vcuda run` with a real Linux guest, on every machine: nested KVM under QEMU's software
//! emulation (`scripts/qemu-linux.sh`). QEMU (TCG, `-cpu max`, which has SVM and nested paging)
//! boots Debian's kernel as L1 with kvm-amd loaded. Inside it, the `vcuda` binary of this build
//! boots the guest image (`vcuda image build`, Debian's kernel again, as L2) with its own VMM,
//! and unmodified nvcc-built programs reach the executor through `vcuda.ko` and virtio-cuda.
//!
//! One L1 boot runs every case of [`CASES`] from a generated `run.sh`. Each case's stdout,
//! stderr, exit status and wall time come back through the 9p work share. Each `#[test]` then
//! checks its own case, so a failure names the case and shows its output and the L1 console.
//!
//! Needs `scripts/qemu-linux.sh setup` (run here: QEMU from bookworm-backports, the kernel and
//! busybox, shared with the virtio-gpu harness, cached under ~/.cache/vcuda), the CUDA toolchain
//! (`scripts/setup.sh`), and the `vcuda` binary and the shim of this build. Where QEMU cannot be
//! installed (no apt-get or root), the tests say so and skip; `VCUDA_SKIP_QEMU=1` skips them on
//! purpose. On a machine where it can be installed, every failure is a test failure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use vcuda_tests::drm_pattern;
use vcuda_tests::shim::{self, profile_dir, program};
use vcuda_tests::toolchain::{self, Cudart};

/// The guest image the cases boot (built into `$VCUDA_CACHE/images/`).
const IMAGE: &str = "vcuda-nested-test";
/// Command line of the bare-kernel boots: no root file system, so the kernel panics and resets.
const BARE_CMDLINE: &str =
    "console=ttyS0 reboot=k panic=1 pci=off nomodules i8042.noaux i8042.nomux i8042.dumbkbd";

/// One case: a name and the shell command L1 runs for it (`$V` is the `vcuda` binary, `$IMG`
/// the image's name, `$IMGDIR` its directory, `$ARGS` the usual `vcuda run --image` flags).
struct Case {
    name: &'static str,
    script: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "uname",
        script: "$V run $ARGS --boot-timer -- /bin/uname -a",
    },
    Case {
        name: "bare_bzimage",
        script: "$V run --kernel $IMGDIR/vmlinuz --mem 512M --vcpus 2 --timeout 120 \
                 --device echo --cmdline \"$BARE\"",
    },
    Case {
        name: "bare_vmlinux",
        script: "$V run --kernel $IMGDIR/vmlinux --mem 512M --timeout 120 --cmdline \"$BARE\"",
    },
    // One boot on two vCPUs runs every program (an L2 boot takes ~15 s under emulation).
    Case {
        name: "cuda",
        script: "$V run $ARGS --vcpus 2 -- /bin/sh -c \
                 'echo cpus=$(grep -c ^processor /proc/cpuinfo); \
                 /bin/runtime_api && echo ok:static; /bin/runtime_api_shared && echo ok:shared; \
                 /bin/driver_api /bin/driver_kernels.ptx && echo ok:driver; \
                 /bin/runtime_more && echo ok:threads'",
    },
    Case {
        name: "gpu",
        script: "mkdir -p /work/out/frames; \
                 $V run $ARGS --display png-last:/work/out/frames -- /bin/drm_draw /dev/dri/card0",
    },
    Case {
        name: "executor",
        script: "$V executor --listen /tmp/ex.sock --backend cpu 2>/tmp/ex.log & pid=$!; \
                 i=0; while [ ! -S /tmp/ex.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; \
                 $V run $ARGS --executor /tmp/ex.sock -- /bin/runtime_api; rc=$?; \
                 kill $pid; wait $pid; exit $rc",
    },
    Case {
        name: "exit_status",
        script: "$V run $ARGS -- /bin/sh -c 'exit 7'",
    },
    Case {
        name: "crash",
        script: "$V run $ARGS -- /bin/sh -c 'kill -SEGV $$'",
    },
    Case {
        name: "panic",
        script: "$V run --image $IMG --timeout 60 --cmdline \"$BARE rdinit=/nonexistent\" -- /bin/true",
    },
    Case {
        name: "hang",
        script: "$V run --image $IMG --timeout 10 -- /bin/sleep 1000",
    },
    Case {
        name: "truncated_vmlinux",
        script: "head -c 1048576 $IMGDIR/vmlinux >/tmp/t.vmlinux; \
                 $V run --kernel /tmp/t.vmlinux --timeout 60",
    },
    Case {
        name: "truncated_bzimage",
        script: "head -c 1048576 $IMGDIR/vmlinuz >/tmp/t.bzimage; \
                 $V run --kernel /tmp/t.bzimage --timeout 60",
    },
    Case {
        name: "wrong_initrd",
        script: "$V run --kernel $IMGDIR/vmlinux --initrd $IMGDIR/manifest.json --timeout 60",
    },
    Case {
        name: "too_little_memory",
        script: "$V run --image $IMG --mem 32M --timeout 60 -- /bin/true",
    },
    Case {
        name: "mem_1g",
        script: "$V run --image $IMG --mem 1G --timeout 120 --boot-timer -- /bin/runtime_api",
    },
    Case {
        name: "mem_16g",
        script: "$V run --image $IMG --mem 16G --timeout 120 --boot-timer -- /bin/runtime_api",
    },
    Case {
        name: "mem_64g",
        script: "$V run --image $IMG --mem 64G --timeout 120 --boot-timer -- /bin/runtime_api",
    },
];

/// What one case printed and how it ended.
#[derive(Debug, Clone)]
struct Outcome {
    stdout: String,
    stderr: String,
    status: Option<i32>,
    seconds: f64,
}

/// The one L1 run: every case's outcome, and the L1 console.
struct Run {
    outcomes: HashMap<String, Outcome>,
    console: String,
}

enum Prepared {
    Ran(Run),
    /// A capability is absent (QEMU cannot be installed here): the reason.
    Absent(String),
}

fn repo() -> PathBuf {
    toolchain::workspace_root().to_path_buf()
}

/// The one L1 run, shared by every test (a failure is kept, not retried by each test).
fn run_once() -> &'static Prepared {
    static RUN: OnceLock<Result<Prepared, String>> = OnceLock::new();
    match RUN.get_or_init(prepare_and_run) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// The outcome of case `name`, or `None` after reporting a skip.
fn case(name: &str) -> Option<(Outcome, &'static str)> {
    match run_once() {
        Prepared::Absent(why) => {
            vcuda_tests::skip(format!("real Linux guests (nested KVM under QEMU): {why}"));
            None
        }
        Prepared::Ran(run) => {
            let o = run.outcomes.get(name).cloned().unwrap_or_else(|| {
                panic!(
                    "case {name} did not report back (L1 console below)\n{}",
                    run.console
                )
            });
            Some((o, run.console.as_str()))
        }
    }
}

fn prepare_and_run() -> Result<Prepared, String> {
    if std::env::var_os("VCUDA_SKIP_QEMU").is_some() {
        return Ok(Prepared::Absent("VCUDA_SKIP_QEMU is set".into()));
    }
    let script = repo().join("scripts/qemu-linux.sh");
    let setup = Command::new(&script)
        .arg("setup")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let setup_err = String::from_utf8_lossy(&setup.stderr);
    match setup.status.code() {
        Some(0) => {}
        Some(2) => return Ok(Prepared::Absent(setup_err.trim().to_string())),
        _ => {
            return Err(format!(
                "scripts/qemu-linux.sh setup failed ({}):\n{setup_err}",
                setup.status
            ))
        }
    }
    let vcuda = shim::vcuda_bin()?;
    let shim_dir = shim::shim_dir()?;

    // The programs, built by the pinned toolkit.
    let tc_err = |e: toolchain::ToolchainError| format!("CUDA toolchain: {e}");
    let runtime_static =
        toolchain::compile_program(&program("runtime_api.cu"), Cudart::Static).map_err(tc_err)?;
    let runtime_shared =
        toolchain::compile_program(&program("runtime_api.cu"), Cudart::Shared).map_err(tc_err)?;
    let runtime_more =
        shim::compile_linked(&shim_dir, "runtime_more", "runtime_more", &[]).map_err(tc_err)?;
    let driver_api =
        shim::compile_linked(&shim_dir, "driver_api", "driver_api", &[]).map_err(tc_err)?;
    let ptx = toolchain::compile_ptx_file(&program("driver_kernels.cu"), toolchain::DEFAULT_ARCH)
        .map_err(tc_err)?;
    let drm_draw = profile_dir().join("vcuda-drm_draw");
    let gcc = Command::new("gcc")
        .args(["-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&drm_draw)
        .arg(repo().join("guest/drm-draw/drm_draw.c"))
        .output()
        .map_err(|e| format!("gcc: {e}"))?;
    if !gcc.status.success() {
        return Err(format!(
            "building drm_draw (gcc -static; needs libc6-dev): {}",
            String::from_utf8_lossy(&gcc.stderr)
        ));
    }

    // The guest image, with the programs; rebuilt every run (a few seconds once the packages
    // are cached), so it carries this build's shim.
    let adds = [
        (&runtime_static, "/bin/runtime_api"),
        (&runtime_shared, "/bin/runtime_api_shared"),
        (&runtime_more, "/bin/runtime_more"),
        (&driver_api, "/bin/driver_api"),
        (&ptx, "/bin/driver_kernels.ptx"),
        (&drm_draw, "/bin/drm_draw"),
    ];
    let mut build = Command::new(&vcuda);
    build.args(["image", "build", "--name", IMAGE]);
    for (host, guest) in adds {
        build
            .arg("--add")
            .arg(format!("{}:{guest}", host.display()));
    }
    let built = build
        .output()
        .map_err(|e| format!("cannot run vcuda image build: {e}"))?;
    if !built.status.success() {
        return Err(format!(
            "vcuda image build failed ({}):\n{}{}",
            built.status,
            String::from_utf8_lossy(&built.stdout),
            String::from_utf8_lossy(&built.stderr)
        ));
    }

    let work = profile_dir().join("nested-linux");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("out")).map_err(|e| format!("{}: {e}", work.display()))?;
    stage_vcuda(&vcuda, &work)?;
    std::fs::write(work.join("run.sh"), run_script()).map_err(|e| format!("write run.sh: {e}"))?;

    let t0 = Instant::now();
    let out = Command::new(&script)
        .args(["run", "--work"])
        .arg(&work)
        .args(["--timeout", "900"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let console = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "L1 run: {:.1} s, {}",
        t0.elapsed().as_secs_f64(),
        out.status
    );
    if !out.status.success() {
        return Err(format!(
            "the L1 guest did not complete run.sh ({}):\n{}\n--- L1 console\n{console}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut outcomes = HashMap::new();
    for c in CASES {
        let read = |ext: &str| std::fs::read_to_string(work.join(format!("out/{}.{ext}", c.name)));
        let (Ok(stdout), Ok(stderr), Ok(rc)) = (read("out"), read("err"), read("rc")) else {
            continue;
        };
        let mut rc = rc.split_whitespace();
        let status = rc.next().and_then(|s| s.parse().ok());
        let seconds = rc.next().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
        outcomes.insert(
            c.name.to_string(),
            Outcome {
                stdout,
                stderr,
                status,
                seconds,
            },
        );
    }
    Ok(Prepared::Ran(Run { outcomes, console }))
}

/// Puts a stripped copy of `vcuda` and the libraries it links (for L1's loader) into `work`.
fn stage_vcuda(vcuda: &Path, work: &Path) -> Result<(), String> {
    let dst = work.join("vcuda");
    let strip = Command::new("strip")
        .arg("-o")
        .arg(&dst)
        .arg(vcuda)
        .status();
    if !matches!(strip, Ok(s) if s.success()) {
        std::fs::copy(vcuda, &dst).map_err(|e| format!("copy vcuda: {e}"))?;
    }
    let sysroot = work.join("sysroot");
    std::fs::create_dir_all(&sysroot).map_err(|e| format!("{}: {e}", sysroot.display()))?;
    let ldd = Command::new("ldd")
        .arg(vcuda)
        .output()
        .map_err(|e| format!("ldd: {e}"))?;
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        let name = Path::new(path)
            .file_name()
            .ok_or("library without a name")?;
        std::fs::copy(path, sysroot.join(name)).map_err(|e| format!("copy {path}: {e}"))?;
    }
    Ok(())
}

/// The script L1 runs: every case, its output and status into `out/`.
fn run_script() -> String {
    let mut s = format!(
        "V=/work/vcuda\nIMG={IMAGE}\nIMGDIR=/cache/images/{IMAGE}\nBARE='{BARE_CMDLINE}'\n\
         ARGS=\"--image $IMG --timeout 120\"\n"
    );
    for c in CASES {
        let n = c.name;
        s.push_str(&format!(
            "echo \"== case {n}\"\nt0=$(cut -d' ' -f1 /proc/uptime)\n\
             ( {} ) >/work/out/{n}.out 2>/work/out/{n}.err </dev/null\nrc=$?\n\
             t1=$(cut -d' ' -f1 /proc/uptime)\n\
             echo \"$rc $(echo \"$t1 $t0\" | awk '{{printf \"%.3f\", $1 - $2}}')\" >/work/out/{n}.rc\n\
             echo \"== case {n}: exit $rc\"\n",
            c.script
        ));
    }
    s.push_str("exit 0\n");
    s
}

/// Asserts `cond`, showing the case's output and the L1 console when it fails.
fn check(name: &str, o: &Outcome, console: &str, cond: bool, what: &str) {
    assert!(
        cond,
        "case {name}: {what}\nexit status: {:?}\n--- stdout\n{}\n--- stderr\n{}\n--- L1 console\n{console}",
        o.status, o.stdout, o.stderr
    );
}

/// The case ran the guest program to a clean end with `status`, and its stdout has `marker`.
fn expect_program(name: &str, status: i32, marker: &str) -> Option<Outcome> {
    let (o, console) = case(name)?;
    check(
        name,
        &o,
        console,
        o.status == Some(status),
        &format!("expected exit status {status}"),
    );
    check(
        name,
        &o,
        console,
        o.stdout.contains(marker),
        &format!("expected {marker:?} on the guest's console"),
    );
    Some(o)
}

#[test]
fn the_image_boots_a_real_kernel_and_runs_a_program() {
    let Some(o) = expect_program("uname", 0, "Linux") else {
        return;
    };
    let (_, console) = case("uname").expect("ran");
    check(
        "uname",
        &o,
        console,
        o.stderr.contains("boot-timer write"),
        "expected the boot timer's report on stderr",
    );
}

#[test]
fn a_bare_kernel_boots_to_its_banner_and_resets_bzimage_and_vmlinux() {
    expect_program("bare_bzimage", 0, "Linux version");
    expect_program("bare_vmlinux", 0, "Linux version");
}

/// The case's stdout has each marker.
fn expect_markers(name: &str, markers: &[&str]) {
    let Some((o, console)) = case(name) else {
        return;
    };
    for m in markers {
        check(
            name,
            &o,
            console,
            o.stdout.contains(m),
            &format!("expected {m:?}"),
        );
    }
}

#[test]
fn cuda_programs_run_through_vcuda_ko() {
    expect_markers(
        "cuda",
        &[
            "ok:static", // runtime_api, static cudart
            "ok:shared", // the same, shared cudart (the image brings libcudart along)
            "PASS driver_api",
            "ok:driver",
        ],
    );
}

#[test]
fn a_multithreaded_program_on_two_vcpus() {
    expect_markers("cuda", &["cpus=2", "PASS runtime_more", "ok:threads"]);
}

/// The scanout size of `vcuda run`'s virtio-gpu (`GpuConfig::default`).
const GPU_SIZE: (u32, u32) = (1280, 800);

/// Linux's own virtio-gpu DRM driver binds the VMM's device over virtio-mmio; drm_draw's last
/// frame reaches `--display png-last:DIR` pixel for pixel.
#[test]
fn linux_draws_on_the_vmms_gpu_into_a_png() {
    let (w, h) = GPU_SIZE;
    let Some(o) = expect_program("gpu", 0, &format!("drm_draw: ok {w}x{h}")) else {
        return;
    };
    let (_, console) = case("gpu").expect("ran");
    let png = profile_dir().join("nested-linux/out/frames/scanout0.png");
    let read = virtio_gpu::display::read_png(&png);
    check(
        "gpu",
        &o,
        console,
        read.is_ok(),
        &format!("no readable {}: {:?}", png.display(), read.as_ref().err()),
    );
    let (pw, ph, rgba) = read.expect("checked");
    assert_eq!((pw, ph), (w, h), "{} size", png.display());
    let (bad, first) = drm_pattern::mismatches(&rgba, w, h, drm_pattern::pattern_final);
    assert_eq!(
        bad,
        0,
        "{}: {bad} wrong pixels, first {first:?}",
        png.display()
    );
}

#[test]
fn an_out_of_process_executor_serves_the_guest() {
    expect_program("executor", 0, "PASS runtime_api");
}

#[test]
fn the_guest_programs_exit_status_and_crashes_come_back() {
    expect_program("exit_status", 7, "");
    // A shell killed by SIGSEGV reports 128 + 11, as on any Linux.
    expect_program("crash", 139, "");
}

#[test]
fn an_image_whose_kernel_panics_is_an_error() {
    let Some((o, console)) = case("panic") else {
        return;
    };
    check(
        "panic",
        &o,
        console,
        o.status == Some(123),
        "expected exit status 123",
    );
    check(
        "panic",
        &o,
        console,
        o.stderr.contains("before its /init reported a status"),
        "expected the missing status to be named",
    );
}

#[test]
fn a_guest_that_never_exits_ends_at_the_timeout() {
    let Some((o, console)) = case("hang") else {
        return;
    };
    check(
        "hang",
        &o,
        console,
        o.status == Some(124),
        "expected exit status 124",
    );
    check(
        "hang",
        &o,
        console,
        o.stderr.contains("timeout") || o.stderr.contains("timed out"),
        "expected the timeout to be named on stderr",
    );
}

#[test]
fn bad_images_end_with_a_clear_error() {
    for name in [
        "truncated_vmlinux",
        "truncated_bzimage",
        "wrong_initrd",
        "too_little_memory",
    ] {
        let Some((o, console)) = case(name) else {
            return;
        };
        check(
            name,
            &o,
            console,
            o.status == Some(1),
            "expected exit status 1",
        );
        check(
            name,
            &o,
            console,
            o.stderr.contains("vcuda: error:"),
            "expected a `vcuda: error:` message",
        );
    }
}

/// Boot to the end of a CUDA program with 1, 16 and 64 GiB of guest RAM. The times are printed
/// (docs/BENCHMARKS.md records their ratios; absolute times under emulation mean nothing); the
/// test asserts only that large guests boot and that they are not far slower than 1 GiB.
#[test]
fn large_guests_boot_and_run_cuda() {
    let mut times = Vec::new();
    for name in ["mem_1g", "mem_16g", "mem_64g"] {
        let Some(o) = expect_program(name, 0, "PASS runtime_api") else {
            return;
        };
        // "guest entry 12.3 ms after VMM start (4.5 ms in KVM memory-slot setup)" and
        // "guest boot-timer write 6789.0 ms after VMM start" (the image's /init writes it).
        let ms_after = |key: &str| {
            o.stderr.lines().find_map(|l| {
                let rest = &l[l.find(key)? + key.len()..];
                rest.split_whitespace().next()?.parse::<f64>().ok()
            })
        };
        let entry = ms_after("guest entry ").unwrap_or(f64::NAN);
        let init = ms_after("boot-timer write ").unwrap_or(f64::NAN);
        times.push((name, o.seconds, entry, init));
    }
    let (_, base, _, base_init) = times[0];
    for (name, t, entry, init) in &times {
        eprintln!(
            "{name}: whole run {t:.2} s ({:.2}x of 1 GiB); guest entry {entry:.1} ms, \
             /init {:.2} s ({:.2}x) after VMM start",
            t / base,
            init / 1e3,
            init / base_init
        );
    }
    for (name, t, _, _) in &times[1..] {
        assert!(
            *t < base * 3.0 + 5.0,
            "{name} took {t:.1} s, 1 GiB took {base:.1} s"
        );
    }
}
