//! The GPU behind our virtio-mmio transport (the generic [`Queued`] adapter), driven through
//! its registers by the scripted driver: Linux's probe and first-frame sequence, with the PNG
//! capture checked.

use std::time::Instant;

use virtio_gpu::guest_driver::{self as drv, SplitRing};
use virtio_gpu::protocol::{cmd, format, MemEntry, Rect};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use std::time::Duration;

use virtio_gpu::device::QUEUE_SIZE_MAX;
use virtio_gpu::display::DisplaySpec;
use virtio_gpu::{GpuConfig, VirtioGpu};
use vm_memory::GuestMemoryMmap;

use super::*;
use crate::devices::bus::BusDevice;
use crate::devices::virtio::mmio::{reg, MmioTransport};
use crate::devices::virtio::status::*;

const QSIZE: u16 = 64;

struct Guest {
    t: MmioTransport,
    mem: GuestMemoryMmap,
    rings: Vec<SplitRing>,
}

impl Guest {
    fn r(&mut self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn w(&mut self, off: u64, v: u32) {
        self.t.write(off, &v.to_le_bytes());
    }

    /// Sends a chain on `queue`, notifies, and waits for the used element.
    fn send(&mut self, queue: usize, bufs: &[(GuestAddress, u32, bool)]) -> u32 {
        self.rings[queue].push(&self.mem, bufs).unwrap();
        self.t.notify(queue as u32);
        let start = Instant::now();
        loop {
            if let Some((_, len)) = self.rings[queue].pop_used(&self.mem).unwrap() {
                self.rings[queue].release(bufs.len() as u16);
                return len;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "device did not answer"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A control command with optional data; returns the response type.
    fn ctrl(&mut self, c: &[u8], data: Option<&[u8]>, resp: u32) -> u32 {
        let (ca, da, ra) = (
            GuestAddress(0x20000),
            GuestAddress(0x30000),
            GuestAddress(0x70000),
        );
        self.mem.write_slice(c, ca).unwrap();
        let mut bufs = vec![(ca, c.len() as u32, false)];
        if let Some(d) = data {
            self.mem.write_slice(d, da).unwrap();
            bufs.push((da, d.len() as u32, false));
        }
        bufs.push((ra, resp, true));
        assert!(self.send(0, &bufs) >= 24);
        self.mem.read_obj::<u32>(ra).unwrap()
    }
}

#[test]
fn linux_probe_and_first_frame_through_mmio() {
    let dir = std::env::temp_dir().join(format!("vmm-virtio-gpu-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (w, h) = (64u32, 48u32);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let dev = Queued::new(
        VirtioGpu::new(GpuConfig::with_size(w, h), DisplaySpec::Png(dir.clone())).unwrap(),
    );
    let t = MmioTransport::new(
        Box::new(dev),
        mem.clone(),
        Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()),
    )
    .unwrap();
    let mut g = Guest {
        t,
        mem,
        rings: Vec::new(),
    };
    assert_eq!(g.r(reg::DEVICE_ID), 16);
    assert_eq!(g.r(reg::CONFIG + 8), 1, "num_scanouts");
    g.w(reg::STATUS, 0);
    g.w(reg::STATUS, ACKNOWLEDGE);
    g.w(reg::STATUS, ACKNOWLEDGE | DRIVER);
    g.w(reg::DEVICE_FEATURES_SEL, 0);
    let lo = g.r(reg::DEVICE_FEATURES);
    assert_ne!(lo & 2, 0, "VIRTIO_GPU_F_EDID offered");
    g.w(reg::DRIVER_FEATURES_SEL, 0);
    g.w(reg::DRIVER_FEATURES, 2);
    g.w(reg::DRIVER_FEATURES_SEL, 1);
    g.w(reg::DRIVER_FEATURES, 1);
    g.w(reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    for (i, base) in [0x1000u64, 0x8000].into_iter().enumerate() {
        let ring = SplitRing::new(&g.mem, GuestAddress(base), QSIZE).unwrap();
        let (d, a, u) = ring.addresses();
        g.w(reg::QUEUE_SEL, i as u32);
        assert_eq!(g.r(reg::QUEUE_NUM_MAX), u32::from(QUEUE_SIZE_MAX));
        g.w(reg::QUEUE_NUM, u32::from(QSIZE));
        g.w(reg::QUEUE_DESC_LOW, d.0 as u32);
        g.w(reg::QUEUE_DRIVER_LOW, a.0 as u32);
        g.w(reg::QUEUE_DEVICE_LOW, u.0 as u32);
        g.w(reg::QUEUE_READY, 1);
        g.rings.push(ring);
    }
    g.w(reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    assert!(g.t.is_activated());

    assert_eq!(
        g.ctrl(&drv::get_display_info(), None, 408),
        cmd::RESP_OK_DISPLAY_INFO
    );
    assert_eq!(g.ctrl(&drv::get_edid(0), None, 1056), cmd::RESP_OK_EDID);
    let ok = cmd::RESP_OK_NODATA;
    let c = drv::resource_create_2d(1, format::X8R8G8B8_UNORM, w, h);
    assert_eq!(g.ctrl(&c, None, 24), ok);
    let fb = GuestAddress(0x10_0000);
    let pixels: Vec<u8> = (0..w * h)
        .flat_map(|i| [0xff, (i % 256) as u8, (i / 256) as u8, 0x40])
        .collect();
    g.mem.write_slice(&pixels, fb).unwrap();
    let entries = [MemEntry {
        addr: fb.0,
        length: w * h * 4,
    }];
    let (c, e) = drv::resource_attach_backing(1, &entries);
    assert_eq!(g.ctrl(&c, Some(&e), 24), ok);
    let full = Rect {
        x: 0,
        y: 0,
        width: w,
        height: h,
    };
    assert_eq!(g.ctrl(&drv::set_scanout(0, 1, full), None, 24), ok);
    assert_eq!(
        g.ctrl(&drv::transfer_to_host_2d(1, full, w, Some(1)), None, 24),
        ok
    );
    assert_eq!(g.ctrl(&drv::resource_flush(1, full, Some(2)), None, 24), ok);
    let len = g.send(1, &[(GuestAddress(0x20000), 56, false)]);
    assert_eq!(len, 0);
    assert_ne!(
        g.t.interrupt().status() & 1,
        0,
        "used-ring interrupt raised"
    );

    // Reset stops the worker; the frame was written when it was flushed.
    g.w(reg::STATUS, 0);
    let png = virtio_gpu::display::PngDisplay::frame_path(&dir, 0, 1);
    let (pw, ph, buf) = virtio_gpu::display::read_png(&png).unwrap();
    assert_eq!((pw, ph), (w, h));
    for i in 0..(w * h) as usize {
        // X8R8G8B8: bytes in memory are X, R, G, B.
        let px = &pixels[i * 4..i * 4 + 4];
        assert_eq!(
            &buf[i * 4..i * 4 + 4],
            &[px[1], px[2], px[3], 0xff],
            "pixel {i}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
