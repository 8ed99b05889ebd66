//! virtio-gpu end to end with the stock Linux driver: QEMU (software emulation, no KVM) boots
//! Debian's x86-64 kernel; its virtio-gpu DRM driver binds our device model, served by
//! `vcuda vhost-user --device gpu` through QEMU's `vhost-user-gpu-pci` frontend. The guest's
//! init runs `guest/drm-draw/drm_draw.c`, which modesets a DRM dumb buffer with pattern A
//! (SETCRTC), redraws the centre rectangle with pattern B and flushes it (DIRTYFB), then the
//! guest powers off. The backend's `png:<dir>` display captured every flushed frame; the first
//! must be pattern A and the last A with B in the rectangle, pixel for pixel.
//!
//! Needs `scripts/qemu-gpu.sh setup` (run here: QEMU via apt-get install, the kernel and busybox
//! via apt-get download, cached under ~/.cache/vcuda/qemu-gpu) and the `vcuda` binary of this
//! build (`cargo build -p vcuda`). Without them the test says why and passes as
//! skipped; `VCUDA_SKIP_QEMU=1` skips it on purpose.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vcuda_tests::drm_pattern;
use vcuda_tests::shim::vcuda_bin;
use vcuda_tests::skip;

/// The scanout size the device reports (the guest's preferred mode, via EDID).
const WIDTH: u32 = 640;
const HEIGHT: u32 = 480;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn setup() -> Result<(), String> {
    if std::env::var_os("VCUDA_SKIP_QEMU").is_some() {
        return Err("VCUDA_SKIP_QEMU is set".into());
    }
    let script = repo().join("scripts/qemu-gpu.sh");
    let out = Command::new(&script)
        .arg("setup")
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "scripts/qemu-gpu.sh setup failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn mismatches(rgba: &[u8], pattern: fn(u32, u32, u32, u32) -> u32) -> (usize, Option<String>) {
    drm_pattern::mismatches(rgba, WIDTH, HEIGHT, pattern)
}

/// The backend process; killed on drop.
struct Backend(Child);

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn stock_linux_virtio_gpu_driver_draws_through_qemu_into_png() {
    if let Err(e) = setup() {
        return skip(&e);
    }
    let vcuda = match vcuda_bin() {
        Ok(b) => b,
        Err(e) => return skip(&e),
    };
    let dir = std::env::temp_dir().join(format!("vcuda-qemu-gpu-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).expect("temp dir");
    let socket = dir.join("gpu.sock");
    let backend_log = dir.join("backend.log");
    let console_log = dir.join("console.log");

    let backend = Backend(
        Command::new(&vcuda)
            .args(["vhost-user", "--device", "gpu", "--socket"])
            .arg(&socket)
            .arg("--display")
            .arg(format!("png:{}", frames.display()))
            .args(["--gpu-size", &format!("{WIDTH}x{HEIGHT}")])
            .env("VCUDA_LOG", "info,virtio_gpu=trace")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&backend_log).expect("backend log"))
            .spawn()
            .expect("start vcuda vhost-user"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "the backend never listened");
        std::thread::sleep(Duration::from_millis(20));
    }

    let started = Instant::now();
    let status = Command::new(repo().join("scripts/qemu-gpu.sh"))
        .args(["run", "--timeout", "120", "--socket"])
        .arg(&socket)
        .arg("--log")
        .arg(&console_log)
        .status()
        .expect("run scripts/qemu-gpu.sh");
    let elapsed = started.elapsed();
    // Let the backend see the disconnect and finish its frames.
    std::thread::sleep(Duration::from_millis(300));
    drop(backend);

    let console = std::fs::read_to_string(&console_log).unwrap_or_default();
    let trace = std::fs::read_to_string(&backend_log).unwrap_or_default();
    let show = || {
        eprintln!("--- guest console ---\n{console}\n--- backend log (tail) ---");
        let lines: Vec<&str> = trace.lines().collect();
        for l in &lines[lines.len().saturating_sub(60)..] {
            eprintln!("{l}");
        }
        eprintln!("--- end ---");
    };
    if !status.success() || !console.contains(&format!("drm_draw: ok {WIDTH}x{HEIGHT}")) {
        show();
        panic!("the guest did not draw ({status})");
    }
    for key in [
        "virtio_gpu",
        "drm_draw: SETCRTC done",
        "drm_draw: DIRTYFB done",
    ] {
        assert!(console.contains(key), "no {key:?} in the console");
    }

    let mut captured: Vec<PathBuf> = std::fs::read_dir(&frames)
        .expect("frames dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("scanout0-") && n.ends_with(".png"))
        })
        .collect();
    captured.sort();
    if captured.len() < 2 {
        show();
        panic!("expected at least 2 frames (SETCRTC, DIRTYFB), got {captured:?}");
    }
    let read = |p: &Path| {
        let (w, h, rgba) = virtio_gpu::display::read_png(p).expect("read capture");
        assert_eq!((w, h), (WIDTH, HEIGHT), "{} size", p.display());
        rgba
    };
    let first = read(&captured[0]);
    let (bad, at) = mismatches(&first, drm_pattern::pattern_a);
    assert_eq!(
        bad,
        0,
        "first frame {}: {bad} wrong pixels, first {at:?}",
        captured[0].display()
    );
    let last_path = &captured[captured.len() - 1];
    let last = read(last_path);
    let (bad, at) = mismatches(&last, drm_pattern::pattern_final);
    assert_eq!(
        bad,
        0,
        "last frame {}: {bad} wrong pixels, first {at:?}",
        last_path.display()
    );

    // What the stock driver sent, from the device's trace.
    let seen: Vec<&str> = [
        "GetDisplayInfo",
        "GetEdid",
        "ResourceCreate2d",
        "ResourceAttachBacking",
        "SetScanout",
        "TransferToHost2d",
        "ResourceFlush",
    ]
    .into_iter()
    .filter(|c| !trace.contains(c))
    .collect();
    assert!(seen.is_empty(), "the driver never sent {seen:?}");
    eprintln!(
        "qemu_gpu: boot + draw + power-off in {:.1} s, {} frames captured, all {} pixels of the first and last match",
        elapsed.as_secs_f64(),
        captured.len(),
        WIDTH * HEIGHT
    );
    let _ = std::fs::remove_dir_all(&dir);
}
