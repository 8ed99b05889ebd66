//! The virtio-gpu device on our MMIO transport: an adapter from [`VirtioDevice`] to the device
//! model in `virtio_gpu::device`.
//!
//! rutabaga_gfx and the display backends are not `Send`, so the model lives on its own worker
//! thread, created at activation and dropped at reset: the transport's thread only forwards queue
//! notifications to it and reads config space through a shared [`ConfigSpace`].

use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::warn;
use virtio_gpu::device::{
    ConfigSpace, GpuConfig, GpuDevice, CONTROLQ, CURSORQ, DEVICE_ID, FEATURES, NUM_QUEUES,
    QUEUE_SIZE_MAX,
};
use virtio_gpu::display::DisplaySpec;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::{ActivateError, Activation, Interrupt, VirtioDevice};

/// How often the worker polls rutabaga for fences while chains wait on them (3D renderers).
const FENCE_POLL: Duration = Duration::from_millis(2);

enum Msg {
    Kick(usize),
    Stop,
}

struct Worker {
    tx: Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

/// The virtio-gpu device.
pub struct VirtioGpu {
    config: GpuConfig,
    display: DisplaySpec,
    config_space: ConfigSpace,
    worker: Option<Worker>,
}

impl VirtioGpu {
    /// A GPU with `config`'s scanouts, showing flushed frames on `display`.
    pub fn new(config: GpuConfig, display: DisplaySpec) -> Self {
        let scanouts = config
            .scanouts
            .len()
            .clamp(1, virtio_gpu::protocol::MAX_SCANOUTS);
        Self {
            config,
            display,
            config_space: ConfigSpace::new(scanouts as u32, 0),
            worker: None,
        }
    }

    fn stop_worker(&mut self) {
        if let Some(mut w) = self.worker.take() {
            let _ = w.tx.send(Msg::Stop);
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

struct Queues {
    mem: GuestMemoryMmap,
    ctrl: Queue,
    cursor: Queue,
    interrupt: Interrupt,
}

impl Queues {
    fn process(&mut self, dev: &mut GpuDevice, which: usize) {
        let r = if which == CURSORQ {
            dev.process_cursorq(&self.mem, &mut self.cursor)
        } else {
            dev.process_controlq(&self.mem, &mut self.ctrl)
        };
        match r {
            Ok(true) => {
                if let Err(e) = self.interrupt.signal_used_queue() {
                    warn!("virtio-gpu: interrupt failed: {e}");
                }
            }
            Ok(false) => {}
            Err(e) => warn!("virtio-gpu: queue {which}: {e}"),
        }
    }
}

fn run_worker(mut dev: GpuDevice, mut q: Queues, rx: Receiver<Msg>) {
    loop {
        let wait = if dev.has_pending_fences() {
            FENCE_POLL
        } else {
            Duration::from_secs(1)
        };
        match rx.recv_timeout(wait) {
            Ok(Msg::Kick(which)) => q.process(&mut dev, which),
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                if dev.has_pending_fences() {
                    q.process(&mut dev, CONTROLQ);
                }
            }
        }
    }
    dev.finish();
}

impl VirtioDevice for VirtioGpu {
    fn device_type(&self) -> u32 {
        DEVICE_ID
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE_MAX; NUM_QUEUES]
    }

    fn device_features(&self) -> u64 {
        FEATURES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        self.config_space.read(offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.config_space.write(offset, data);
    }

    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        if a.queues.len() != NUM_QUEUES {
            return Err(ActivateError::QueueCount {
                expected: NUM_QUEUES,
                got: a.queues.len(),
            });
        }
        let mut queues = a.queues.into_iter();
        let (Some(ctrl), Some(cursor)) = (queues.next(), queues.next()) else {
            return Err(ActivateError::QueueCount {
                expected: NUM_QUEUES,
                got: 0,
            });
        };
        for (i, q) in [&ctrl, &cursor].into_iter().enumerate() {
            if !q.ready() {
                return Err(ActivateError::QueueNotReady(i));
            }
        }
        self.stop_worker();
        let (tx, rx) = channel();
        let (ready_tx, ready_rx) = channel();
        let (config, display, cs) = (
            self.config.clone(),
            self.display.clone(),
            self.config_space.clone(),
        );
        let q = Queues {
            mem: a.mem,
            ctrl,
            cursor,
            interrupt: a.interrupt,
        };
        let thread = std::thread::Builder::new()
            .name("virtio-gpu".into())
            .spawn(move || {
                let dev = display.open().map_err(|e| e.to_string()).and_then(|d| {
                    GpuDevice::with_config_space(config, d, cs).map_err(|e| e.to_string())
                });
                match dev {
                    Ok(dev) => {
                        let _ = ready_tx.send(Ok(()));
                        run_worker(dev, q, rx);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| ActivateError::Device(format!("cannot start the worker: {e}")))?;
        let ready = ready_rx
            .recv()
            .unwrap_or_else(|_| Err("the worker died while starting".into()));
        if let Err(e) = ready {
            let _ = thread.join();
            return Err(ActivateError::Device(format!("virtio-gpu: {e}")));
        }
        self.worker = Some(Worker {
            tx,
            thread: Some(thread),
        });
        Ok(())
    }

    fn queue_notify(&mut self, index: usize) {
        if index >= NUM_QUEUES {
            return;
        }
        if let Some(w) = &self.worker {
            let _ = w.tx.send(Msg::Kick(index));
        }
    }

    fn reset(&mut self) {
        self.stop_worker();
        self.config_space.write(4, &u32::MAX.to_le_bytes());
    }
}

impl Drop for VirtioGpu {
    fn drop(&mut self) {
        self.stop_worker();
    }
}

#[cfg(test)]
mod tests {
    //! The GPU behind our virtio-mmio transport, driven through its registers by the scripted
    //! driver: Linux's probe and first-frame sequence, with the PNG capture checked.

    use std::time::Instant;

    use virtio_gpu::guest_driver::{self as drv, SplitRing};
    use virtio_gpu::protocol::{cmd, format, MemEntry, Rect};
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

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
        let dev = VirtioGpu::new(GpuConfig::with_size(w, h), DisplaySpec::Png(dir.clone()));
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
}
