//! Full-screen 1920×1080 TRANSFER_TO_HOST_2D + RESOURCE_FLUSH through real virtqueues, against a
//! plain memcpy of the same bytes in the same run.
//!
//! `cargo bench -p virtio-gpu --bench transfer` (add `-- <frames>` to change the frame count).

use std::hint::black_box;
use std::time::{Duration, Instant};

use virtio_gpu::device::{GpuConfig, GpuDevice};
use virtio_gpu::display::{Display, DisplayError, Frame, NoDisplay};
use virtio_gpu::guest_driver::{self as drv, Harness};
use virtio_gpu::protocol::{cmd, format, MemEntry, Rect};
use vm_memory::{Bytes, GuestAddress};

const W: u32 = 1920;
const H: u32 = 1080;
const PAGE: u64 = 4096;

/// Takes every frame (so the device reads the scanout back) and only touches it.
struct Sink(u64);

impl Display for Sink {
    fn present(&mut self, _scanout: u32, f: &Frame<'_>) -> Result<(), DisplayError> {
        self.0 = self.0.wrapping_add(u64::from(f.data[f.data.len() / 2]));
        Ok(())
    }
}

fn setup(display: Box<dyn Display>) -> (GpuDevice, Harness) {
    let mut dev = GpuDevice::new(GpuConfig::with_size(W, H), display).expect("device");
    let mut h = Harness::new(64 << 20).expect("guest");
    let bytes = u64::from(W * H * 4);
    // A page-granular scatter list, pages in reverse order, as a fragmented guest would have.
    let n = bytes.div_ceil(PAGE);
    let mut pages: Vec<GuestAddress> = (0..n).map(|_| h.alloc(PAGE)).collect();
    pages.reverse();
    let entries: Vec<MemEntry> = pages
        .iter()
        .map(|a| MemEntry {
            addr: a.0,
            length: PAGE as u32,
        })
        .collect();
    for (i, p) in pages.iter().enumerate() {
        h.mem
            .write_slice(&[(i % 251) as u8; PAGE as usize], *p)
            .expect("fill");
    }
    let run = |h: &mut Harness, dev: &mut GpuDevice, c: &[u8], d: Option<&[u8]>| {
        let r = h.ctrl(dev, c, d, 24).expect("command");
        assert_eq!(r.type_(), cmd::RESP_OK_NODATA);
    };
    run(
        &mut h,
        &mut dev,
        &drv::resource_create_2d(1, format::B8G8R8X8_UNORM, W, H),
        None,
    );
    let (c, e) = drv::resource_attach_backing(1, &entries);
    run(&mut h, &mut dev, &c, Some(&e));
    run(&mut h, &mut dev, &drv::set_scanout(0, 1, full()), None);
    (dev, h)
}

fn full() -> Rect {
    Rect {
        x: 0,
        y: 0,
        width: W,
        height: H,
    }
}

/// Runs `frames` transfer+flush pairs; returns the time per frame.
fn frames(dev: &mut GpuDevice, h: &mut Harness, frames: u32) -> Duration {
    let t = drv::transfer_to_host_2d(1, full(), W, None);
    let f = drv::resource_flush(1, full(), None);
    let start = Instant::now();
    for _ in 0..frames {
        let a = h.ctrl(dev, &t, None, 24).expect("transfer");
        let b = h.ctrl(dev, &f, None, 24).expect("flush");
        assert_eq!(
            (a.type_(), b.type_()),
            (cmd::RESP_OK_NODATA, cmd::RESP_OK_NODATA)
        );
    }
    start.elapsed() / frames
}

fn memcpy(frames: u32) -> Duration {
    let src = vec![7u8; (W * H * 4) as usize];
    let mut dst = vec![0u8; src.len()];
    let start = Instant::now();
    for _ in 0..frames {
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
    }
    start.elapsed() / frames
}

fn main() {
    let n: u32 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let bytes = f64::from(W * H * 4);
    let report = |name: &str, d: Duration, base: Duration| {
        let s = d.as_secs_f64();
        println!(
            "{name:<44} {:>8.3} ms/frame {:>8.1} frames/s {:>6.2} GB/s {:>5.2}x memcpy",
            s * 1e3,
            1.0 / s,
            bytes / s / 1e9,
            s / base.as_secs_f64()
        );
    };
    // Warm up caches and page tables for everything first.
    let _ = memcpy(10);
    let (mut dev_none, mut h_none) = setup(Box::new(NoDisplay));
    let (mut dev_sink, mut h_sink) = setup(Box::new(Sink(0)));
    frames(&mut dev_none, &mut h_none, 5);
    frames(&mut dev_sink, &mut h_sink, 5);

    let base = memcpy(n);
    println!("1920x1080 BGRX (8.29 MB/frame), {n} frames, 4 KiB scatter list of 2025 entries");
    report("memcpy of the frame (baseline)", base, base);
    report(
        "transfer+flush, display none",
        frames(&mut dev_none, &mut h_none, n),
        base,
    );
    report(
        "transfer+flush, display reads the scanout",
        frames(&mut dev_sink, &mut h_sink, n),
        base,
    );
    black_box(dev_sink.stats());
}
