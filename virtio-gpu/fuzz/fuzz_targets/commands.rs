//! Any byte string, cut into control and cursor commands and fed through real virtqueues to a
//! device that already holds a backed resource on a scanout, must never panic the device, and
//! every control command must get a response header of a known type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio_gpu::device::{GpuConfig, GpuDevice};
use virtio_gpu::display::NoDisplay;
use virtio_gpu::guest_driver::{self as drv, Harness};
use virtio_gpu::protocol::{format, MemEntry, Rect};

fuzz_target!(|data: &[u8]| {
    let mut dev = GpuDevice::new(GpuConfig::with_size(64, 64), Box::new(NoDisplay)).unwrap();
    let mut h = Harness::new(2 << 20).unwrap();
    let fb = h.alloc(64 * 64 * 4);
    let full = Rect { x: 0, y: 0, width: 64, height: 64 };
    h.ctrl(&mut dev, &drv::resource_create_2d(1, format::B8G8R8X8_UNORM, 64, 64), None, 24).unwrap();
    let (c, e) = drv::resource_attach_backing(1, &[MemEntry { addr: fb.0, length: 64 * 64 * 4 }]);
    h.ctrl(&mut dev, &c, Some(&e), 24).unwrap();
    h.ctrl(&mut dev, &drv::set_scanout(0, 1, full), None, 24).unwrap();
    // Records: [selector, len, bytes…]; selector bit 0 picks the cursor queue, bit 1 splits the
    // command after 32 bytes into a second readable buffer (as ATTACH_BACKING's entries are).
    let mut rest = data;
    while let [sel, len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (cmd, next) = tail.split_at(n);
        rest = next;
        if sel & 1 != 0 {
            h.cursor_cmd(&mut dev, cmd).unwrap();
            continue;
        }
        let r = if sel & 2 != 0 && cmd.len() > 32 {
            h.ctrl(&mut dev, &cmd[..32], Some(&cmd[32..]), 1056).unwrap()
        } else {
            h.ctrl(&mut dev, cmd, None, 1056).unwrap()
        };
        let t = r.type_();
        assert!((0x1100..0x1106).contains(&t) || (0x1200..0x1206).contains(&t), "{t:#x}");
    }
});
