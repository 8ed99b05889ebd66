//! The device driven through real split virtqueues in guest memory by the scripted driver in
//! [`crate::guest_driver`]: Linux's command sequence, hostile commands and chains, fences, the
//! cursor queue and config space.

use std::path::PathBuf;

use proptest::prelude::*;
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::display::{DisplaySpec, NoDisplay, PngDisplay};
use crate::guest_driver::{self as drv, Harness};

const W: u32 = 320;
const H: u32 = 200;
const PAGE: u64 = 4096;

fn device(display: Box<dyn Display>) -> GpuDevice {
    GpuDevice::new(GpuConfig::with_size(W, H), display).unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("virtio-gpu-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn full() -> Rect {
    Rect {
        x: 0,
        y: 0,
        width: W,
        height: H,
    }
}

/// The test pattern: BGRX pixel (x, y) of frame `n`.
fn pixel(x: u32, y: u32, n: u32) -> [u8; 4] {
    let b = (x * 255 / W) as u8;
    let g = (y * 255 / H) as u8;
    let r = if (x / 16 + y / 16 + n) % 2 == 0 {
        0xff
    } else {
        0x20
    };
    [b, g, r, 0]
}

/// Guest framebuffer pages, allocated in reverse order so the backing is a real scatter list.
fn alloc_pages(h: &mut Harness, bytes: u64) -> Vec<MemEntry> {
    let n = bytes.div_ceil(PAGE);
    let mut pages: Vec<u64> = (0..n).map(|_| h.alloc(PAGE).0).collect();
    pages.reverse();
    pages
        .iter()
        .enumerate()
        .map(|(i, &addr)| MemEntry {
            addr,
            length: (bytes - i as u64 * PAGE).min(PAGE) as u32,
        })
        .collect()
}

/// Writes the pattern for `rect` of frame `n` into the guest backing, through the scatter list.
fn draw(h: &Harness, backing: &[MemEntry], rect: Rect, n: u32) {
    for y in rect.y..rect.y + rect.height {
        for x in rect.x..rect.x + rect.width {
            let off = u64::from(y * W + x) * 4;
            let e = backing[(off / PAGE) as usize];
            h.mem
                .write_slice(&pixel(x, y, n), GuestAddress(e.addr + off % PAGE))
                .unwrap();
        }
    }
}

fn ok(r: &drv::Reply) {
    assert_eq!(r.type_(), cmd::RESP_OK_NODATA, "reply {r:?}");
}

fn read_png(path: &std::path::Path) -> (u32, u32, Vec<u8>) {
    crate::display::read_png(path).unwrap()
}

/// The command sequence of Linux's virtio-gpu driver at probe and fbdev/KMS setup, then a
/// partial update, checked pixel by pixel against the PNG captures.
#[test]
fn linux_sequence_draws_the_pattern_into_png_captures() {
    let dir = temp_dir("linux-seq");
    let mut dev = device(Box::new(PngDisplay::every_frame(&dir).unwrap()));
    let mut h = Harness::new(16 << 20).unwrap();

    let r = h
        .ctrl(&mut dev, &drv::get_display_info(), None, 408)
        .unwrap();
    assert_eq!(r.type_(), cmd::RESP_OK_DISPLAY_INFO);
    assert_eq!(r.used_len, 408);
    let mode = &r.bytes[24..48];
    assert_eq!(&mode[8..12], &W.to_le_bytes());
    assert_eq!(&mode[12..16], &H.to_le_bytes());
    assert_eq!(&mode[16..20], &1u32.to_le_bytes(), "scanout 0 enabled");
    assert_eq!(&r.bytes[48..72], &[0; 24], "scanout 1 absent");

    let r = h.ctrl(&mut dev, &drv::get_edid(0), None, 1056).unwrap();
    assert_eq!(r.type_(), cmd::RESP_OK_EDID);
    assert_eq!(&r.bytes[24..28], &128u32.to_le_bytes());
    assert_eq!(&r.bytes[32..40], &[0, 255, 255, 255, 255, 255, 255, 0]);

    let fb = u64::from(W * H * 4);
    ok(&h
        .ctrl(
            &mut dev,
            &drv::resource_create_2d(1, format::B8G8R8X8_UNORM, W, H),
            None,
            24,
        )
        .unwrap());
    let backing = alloc_pages(&mut h, fb);
    draw(&h, &backing, full(), 0);
    let (c, e) = drv::resource_attach_backing(1, &backing);
    ok(&h.ctrl(&mut dev, &c, Some(&e), 24).unwrap());
    ok(&h
        .ctrl(&mut dev, &drv::set_scanout(0, 1, full()), None, 24)
        .unwrap());
    let r = h
        .ctrl(
            &mut dev,
            &drv::transfer_to_host_2d(1, full(), W, Some(7)),
            None,
            24,
        )
        .unwrap();
    ok(&r);
    assert_eq!((r.header().flags, r.header().fence_id), (FLAG_FENCE, 7));
    ok(&h
        .ctrl(&mut dev, &drv::resource_flush(1, full(), None), None, 24)
        .unwrap());

    // A partial update, as the DRM dirty-rect path sends it.
    let dirty = Rect {
        x: 33,
        y: 17,
        width: 100,
        height: 50,
    };
    draw(&h, &backing, dirty, 1);
    ok(&h
        .ctrl(
            &mut dev,
            &drv::transfer_to_host_2d(1, dirty, W, Some(8)),
            None,
            24,
        )
        .unwrap());
    ok(&h
        .ctrl(&mut dev, &drv::resource_flush(1, dirty, None), None, 24)
        .unwrap());
    assert_eq!(dev.stats().frames_presented, 2);
    assert_eq!(dev.stats().errors, 0);

    for (seq, changed) in [(1, None), (2, Some(dirty))] {
        let (w, hgt, rgba) = read_png(&PngDisplay::frame_path(&dir, 0, seq));
        assert_eq!((w, hgt), (W, H));
        for y in 0..H {
            for x in 0..W {
                let inside = changed.is_some_and(|d| {
                    x >= d.x && x < d.x + d.width && y >= d.y && y < d.y + d.height
                });
                let [b, g, r, _] = pixel(x, y, u32::from(inside));
                let i = ((y * W + x) * 4) as usize;
                assert_eq!(
                    &rgba[i..i + 4],
                    &[r, g, b, 255],
                    "frame {seq} pixel ({x},{y})"
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn png_last_writes_the_last_frame_on_finish() {
    let dir = temp_dir("png-last");
    let spec: DisplaySpec = format!("png-last:{}", dir.display()).parse().unwrap();
    let mut dev = device(spec.open().unwrap());
    let mut h = Harness::new(8 << 20).unwrap();
    ok(&h
        .ctrl(
            &mut dev,
            &drv::resource_create_2d(5, format::R8G8B8A8_UNORM, 4, 2),
            None,
            24,
        )
        .unwrap());
    let buf = h.alloc(32);
    let px: Vec<u8> = (0..32).collect();
    h.mem.write_slice(&px, buf).unwrap();
    let entries = [MemEntry {
        addr: buf.0,
        length: 32,
    }];
    let (c, e) = drv::resource_attach_backing(5, &entries);
    ok(&h.ctrl(&mut dev, &c, Some(&e), 24).unwrap());
    let r = Rect {
        x: 0,
        y: 0,
        width: 4,
        height: 2,
    };
    ok(&h
        .ctrl(&mut dev, &drv::set_scanout(0, 5, r), None, 24)
        .unwrap());
    ok(&h
        .ctrl(&mut dev, &drv::transfer_to_host_2d(5, r, 4, None), None, 24)
        .unwrap());
    ok(&h
        .ctrl(&mut dev, &drv::resource_flush(5, r, None), None, 24)
        .unwrap());
    assert!(!PngDisplay::last_path(&dir, 0).exists());
    dev.finish();
    let (w, hh, rgba) = read_png(&PngDisplay::last_path(&dir, 0));
    assert_eq!((w, hh), (4, 2));
    assert_eq!(rgba, px);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A device with resource 1 (W×H, backed) ready for hostile commands.
fn ready() -> (GpuDevice, Harness) {
    let mut dev = device(Box::new(NoDisplay));
    let mut h = Harness::new(16 << 20).unwrap();
    ok(&h
        .ctrl(
            &mut dev,
            &drv::resource_create_2d(1, format::B8G8R8A8_UNORM, W, H),
            None,
            24,
        )
        .unwrap());
    let fb = h.alloc(u64::from(W * H * 4));
    let (c, e) = drv::resource_attach_backing(
        1,
        &[MemEntry {
            addr: fb.0,
            length: W * H * 4,
        }],
    );
    ok(&h.ctrl(&mut dev, &c, Some(&e), 24).unwrap());
    (dev, h)
}

fn expect(h: &mut Harness, dev: &mut GpuDevice, command: &[u8], data: Option<&[u8]>, code: u32) {
    let r = h.ctrl(dev, command, data, 24).unwrap();
    assert_eq!(
        r.type_(),
        code,
        "command {:x?}",
        &command[..4.min(command.len())]
    );
    assert_eq!(r.used_len, 24);
}

#[test]
fn bad_resource_ids_are_rejected() {
    let (mut dev, mut h) = ready();
    let bad = cmd::RESP_ERR_INVALID_RESOURCE_ID;
    let f = format::B8G8R8A8_UNORM;
    expect(
        &mut h,
        &mut dev,
        &drv::resource_create_2d(0, f, 8, 8),
        None,
        bad,
    );
    expect(
        &mut h,
        &mut dev,
        &drv::resource_create_2d(1, f, 8, 8),
        None,
        bad,
    );
    expect(&mut h, &mut dev, &drv::resource_unref(9), None, bad);
    expect(
        &mut h,
        &mut dev,
        &drv::resource_detach_backing(9),
        None,
        bad,
    );
    expect(
        &mut h,
        &mut dev,
        &drv::transfer_to_host_2d(9, full(), W, None),
        None,
        bad,
    );
    expect(
        &mut h,
        &mut dev,
        &drv::resource_flush(9, full(), None),
        None,
        bad,
    );
    expect(&mut h, &mut dev, &drv::set_scanout(0, 9, full()), None, bad);
    let (c, e) = drv::resource_attach_backing(9, &[]);
    expect(&mut h, &mut dev, &c, Some(&e), bad);
    assert_eq!(dev.resource_count(), 1);
}

#[test]
fn backing_outside_guest_ram_is_rejected() {
    let (mut dev, mut h) = ready();
    let inval = cmd::RESP_ERR_INVALID_PARAMETER;
    for (addr, length) in [
        (16 << 20, 4096),        // just past RAM
        ((16 << 20) - 100, 200), // straddles the end
        (u64::MAX - 10, 4096),   // wraps
    ] {
        let (c, e) = drv::resource_attach_backing(1, &[MemEntry { addr, length }]);
        expect(&mut h, &mut dev, &c, Some(&e), inval);
    }
    // The entry count says more than the command carries.
    let (mut c, e) = drv::resource_attach_backing(1, &[MemEntry { addr: 0, length: 1 }]);
    c[28..32].copy_from_slice(&5u32.to_le_bytes());
    expect(&mut h, &mut dev, &c, Some(&e), cmd::RESP_ERR_UNSPEC);
    c[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
    expect(&mut h, &mut dev, &c, Some(&e), inval);
    // The old backing still works.
    expect(
        &mut h,
        &mut dev,
        &drv::transfer_to_host_2d(1, full(), W, None),
        None,
        cmd::RESP_OK_NODATA,
    );
}

#[test]
fn short_backing_and_detached_backing_fail_transfers() {
    let (mut dev, mut h) = ready();
    let buf = h.alloc(4096);
    let (c, e) = drv::resource_attach_backing(
        1,
        &[MemEntry {
            addr: buf.0,
            length: 4096,
        }],
    );
    ok(&h.ctrl(&mut dev, &c, Some(&e), 24).unwrap());
    expect(
        &mut h,
        &mut dev,
        &drv::transfer_to_host_2d(1, full(), W, None),
        None,
        cmd::RESP_ERR_INVALID_PARAMETER,
    );
    ok(&h
        .ctrl(&mut dev, &drv::resource_detach_backing(1), None, 24)
        .unwrap());
    expect(
        &mut h,
        &mut dev,
        &drv::transfer_to_host_2d(1, full(), W, None),
        None,
        cmd::RESP_ERR_UNSPEC,
    );
}

#[test]
fn overflowing_rectangles_are_rejected() {
    let (mut dev, mut h) = ready();
    let inval = cmd::RESP_ERR_INVALID_PARAMETER;
    let rects = [
        Rect {
            x: u32::MAX,
            y: 0,
            width: 2,
            height: 1,
        },
        Rect {
            x: 0,
            y: 1,
            width: W,
            height: H,
        },
        Rect {
            x: 0,
            y: 0,
            width: u32::MAX,
            height: u32::MAX,
        },
    ];
    for r in rects {
        expect(
            &mut h,
            &mut dev,
            &drv::transfer_to_host_2d(1, r, W, None),
            None,
            inval,
        );
        expect(
            &mut h,
            &mut dev,
            &drv::resource_flush(1, r, None),
            None,
            inval,
        );
        expect(&mut h, &mut dev, &drv::set_scanout(0, 1, r), None, inval);
    }
    // An offset that does not match the rectangle (before its first pixel) or runs off the end.
    let mut t = drv::transfer_to_host_2d(
        1,
        Rect {
            x: 1,
            y: 1,
            width: 1,
            height: 1,
        },
        W,
        None,
    );
    t[40..48].copy_from_slice(&0u64.to_le_bytes());
    expect(&mut h, &mut dev, &t, None, inval);
    t[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
    expect(&mut h, &mut dev, &t, None, inval);
    assert_eq!(dev.stats().transfers, 0);
}

#[test]
fn oversized_resources_and_bad_formats_are_rejected() {
    let (mut dev, mut h) = ready();
    let f = format::B8G8R8X8_UNORM;
    let oom = cmd::RESP_ERR_OUT_OF_MEMORY;
    expect(
        &mut h,
        &mut dev,
        &drv::resource_create_2d(2, f, u32::MAX, u32::MAX),
        None,
        oom,
    );
    expect(
        &mut h,
        &mut dev,
        &drv::resource_create_2d(2, f, 16384, 16384),
        None,
        oom,
    );
    let inval = cmd::RESP_ERR_INVALID_PARAMETER;
    expect(
        &mut h,
        &mut dev,
        &drv::resource_create_2d(2, 999, 8, 8),
        None,
        inval,
    );
    expect(
        &mut h,
        &mut dev,
        &drv::resource_create_2d(2, f, 0, 8),
        None,
        inval,
    );
    // The total budget: 512 MiB default, 256 MiB per resource.
    for id in 10..12 {
        ok(&h
            .ctrl(
                &mut dev,
                &drv::resource_create_2d(id, f, 8192, 7000),
                None,
                24,
            )
            .unwrap());
    }
    expect(
        &mut h,
        &mut dev,
        &drv::resource_create_2d(12, f, 8192, 7000),
        None,
        oom,
    );
    ok(&h
        .ctrl(&mut dev, &drv::resource_unref(10), None, 24)
        .unwrap());
    ok(&h
        .ctrl(
            &mut dev,
            &drv::resource_create_2d(12, f, 8192, 7000),
            None,
            24,
        )
        .unwrap());
}

#[test]
fn short_and_garbage_commands_get_err_unspec() {
    let (mut dev, mut h) = ready();
    let unspec = cmd::RESP_ERR_UNSPEC;
    let create = drv::resource_create_2d(3, format::B8G8R8X8_UNORM, 8, 8);
    for n in [0usize, 1, 10, 23] {
        let r = h.ctrl(&mut dev, &create[..n], None, 24).unwrap();
        if n == 0 {
            // A zero-length command has no readable descriptor at all.
            assert!(r.type_() == unspec || r.used_len == 0);
        } else {
            assert_eq!(r.type_(), unspec);
        }
    }
    expect(&mut h, &mut dev, &create[..30], None, unspec);
    let mut unknown = create.clone();
    unknown[0..4].copy_from_slice(&0xdead_u32.to_le_bytes());
    expect(&mut h, &mut dev, &unknown, None, unspec);
    // A cursor command on the control queue, a 3D command without 3D.
    let mut c = drv::cursor(0, 1, 1, Some(1));
    expect(&mut h, &mut dev, &c, None, unspec);
    c[0..4].copy_from_slice(&cmd::SUBMIT_3D.to_le_bytes());
    expect(&mut h, &mut dev, &c, None, unspec);
    assert_eq!(dev.resource_count(), 1);
}

#[test]
fn scanout_and_edid_ids_are_checked() {
    let (mut dev, mut h) = ready();
    let bad = cmd::RESP_ERR_INVALID_SCANOUT_ID;
    expect(&mut h, &mut dev, &drv::set_scanout(1, 1, full()), None, bad);
    expect(
        &mut h,
        &mut dev,
        &drv::set_scanout(u32::MAX, 1, full()),
        None,
        bad,
    );
    let r = h.ctrl(&mut dev, &drv::get_edid(3), None, 1056).unwrap();
    assert_eq!(r.type_(), bad);
    // Disabling a scanout needs no resource.
    ok(&h
        .ctrl(&mut dev, &drv::set_scanout(0, 0, Rect::default()), None, 24)
        .unwrap());
}

#[test]
fn hostile_chains_never_break_the_queue() {
    let (mut dev, mut h) = ready();
    let cmd_buf = h.alloc(4096);
    let resp = h.alloc(4096);
    let cmd = drv::get_display_info();
    h.mem.write_slice(&cmd, cmd_buf).unwrap();
    // A response buffer too small for DISPLAY_INFO gets ERR_UNSPEC; one too small for a header
    // gets nothing.
    let len = h
        .raw_chain(&mut dev, &[(cmd_buf, 24, false), (resp, 100, true)])
        .unwrap();
    assert_eq!(len, 24);
    let mut t = [0u8; 4];
    h.mem.read_slice(&mut t, resp).unwrap();
    assert_eq!(u32::from_le_bytes(t), cmd::RESP_ERR_UNSPEC);
    let len = h
        .raw_chain(&mut dev, &[(cmd_buf, 24, false), (resp, 10, true)])
        .unwrap();
    assert_eq!(len, 0);
    // No response buffer at all.
    assert_eq!(h.raw_chain(&mut dev, &[(cmd_buf, 24, false)]).unwrap(), 0);
    // Readable after writable; descriptors outside guest memory.
    let len = h
        .raw_chain(
            &mut dev,
            &[(resp, 24, true), (cmd_buf, 24, false), (resp, 408, true)],
        )
        .unwrap();
    assert_eq!(len, 0);
    let len = h
        .raw_chain(
            &mut dev,
            &[(GuestAddress(1 << 40), 24, false), (resp, 408, true)],
        )
        .unwrap();
    assert_eq!(len, 0);
    let len = h
        .raw_chain(
            &mut dev,
            &[
                (cmd_buf, 24, false),
                (GuestAddress(u64::MAX - 8), 408, true),
            ],
        )
        .unwrap();
    assert_eq!(len, 0);
    assert_eq!(dev.stats().bad_chains, 3);
    // The response spread over two writable descriptors, as a scatter list.
    let len = h
        .raw_chain(
            &mut dev,
            &[
                (cmd_buf, 24, false),
                (resp, 200, true),
                (GuestAddress(resp.0 + 1024), 208, true),
            ],
        )
        .unwrap();
    assert_eq!(len, 408);
    // The queue still works.
    let r = h
        .ctrl(&mut dev, &drv::get_display_info(), None, 408)
        .unwrap();
    assert_eq!(r.type_(), cmd::RESP_OK_DISPLAY_INFO);
}

#[test]
fn unref_frees_memory_and_blanks_scanouts() {
    let (mut dev, mut h) = ready();
    ok(&h
        .ctrl(&mut dev, &drv::set_scanout(0, 1, full()), None, 24)
        .unwrap());
    assert_eq!(dev.resource_bytes(), u64::from(W * H * 4));
    ok(&h.ctrl(&mut dev, &drv::resource_unref(1), None, 24).unwrap());
    assert_eq!((dev.resource_count(), dev.resource_bytes()), (0, 0));
    assert_eq!(dev.scanouts[0].resource_id, 0);
}

#[test]
fn cursor_queue_updates_and_moves_the_cursor() {
    let (mut dev, mut h) = ready();
    let r = h
        .cursor_cmd(&mut dev, &drv::cursor(0, 10, 20, Some(1)))
        .unwrap();
    assert_eq!(
        r.used_len, 0,
        "Linux gives cursor commands no response buffer"
    );
    assert_eq!(dev.cursor.resource_id, 1);
    h.cursor_cmd(&mut dev, &drv::cursor(0, 30, 40, None))
        .unwrap();
    assert_eq!(
        (dev.cursor.x, dev.cursor.y, dev.cursor.resource_id),
        (30, 40, 1)
    );
    h.cursor_cmd(&mut dev, &drv::cursor(0, 1, 1, Some(77)))
        .unwrap();
    h.cursor_cmd(&mut dev, &drv::cursor(5, 1, 1, None)).unwrap();
    assert_eq!((dev.cursor.x, dev.cursor.resource_id), (30, 1));
    assert_eq!(dev.stats().errors, 2);
}

#[test]
fn fences_complete_with_their_command() {
    let (mut dev, mut h) = ready();
    for id in [1u64, 2, 10] {
        let r = h
            .ctrl(
                &mut dev,
                &drv::resource_flush(1, full(), Some(id)),
                None,
                24,
            )
            .unwrap();
        ok(&r);
        assert_eq!(r.header().fence_id, id);
    }
    // A failed command carries the fence id back too but creates no fence.
    let r = h
        .ctrl(
            &mut dev,
            &drv::resource_flush(9, full(), Some(11)),
            None,
            24,
        )
        .unwrap();
    assert_eq!(r.type_(), cmd::RESP_ERR_INVALID_RESOURCE_ID);
    assert_eq!(r.header().fence_id, 11);
    assert!(dev.fenced.is_empty());
}

#[test]
fn config_space_reports_scanouts_and_clears_events() {
    let mut dev = GpuDevice::new(
        GpuConfig {
            scanouts: vec![(640, 480), (800, 600)],
            ..GpuConfig::default()
        },
        Box::new(NoDisplay),
    )
    .unwrap();
    let cs = dev.config_space().clone();
    let mut b = [0u8; 16];
    cs.read(0, &mut b);
    assert_eq!(&b[8..12], &2u32.to_le_bytes());
    assert_eq!(&b[12..16], &0u32.to_le_bytes());
    assert!(dev.set_scanout_size(1, 1024, 768));
    assert_eq!(cs.events_read(), p::EVENT_DISPLAY);
    cs.write(4, &p::EVENT_DISPLAY.to_le_bytes());
    assert_eq!(cs.events_read(), 0);
    let mut tail = [0xaau8; 8];
    cs.read(12, &mut tail);
    assert_eq!(tail, [0xaa; 8], "reads past the end leave the buffer alone");
    let mut h = Harness::new(1 << 20).unwrap();
    let r = h
        .ctrl(&mut dev, &drv::get_display_info(), None, 408)
        .unwrap();
    assert_eq!(&r.bytes[48 + 8..48 + 16], &[0, 4, 0, 0, 0, 3, 0, 0]);
}

/// Command types worth aiming random bodies at.
const TYPES: [u32; 16] = [
    cmd::GET_DISPLAY_INFO,
    cmd::RESOURCE_CREATE_2D,
    cmd::RESOURCE_UNREF,
    cmd::SET_SCANOUT,
    cmd::RESOURCE_FLUSH,
    cmd::TRANSFER_TO_HOST_2D,
    cmd::RESOURCE_ATTACH_BACKING,
    cmd::RESOURCE_DETACH_BACKING,
    cmd::GET_CAPSET_INFO,
    cmd::GET_CAPSET,
    cmd::GET_EDID,
    cmd::RESOURCE_CREATE_BLOB,
    cmd::SUBMIT_3D,
    cmd::UPDATE_CURSOR,
    cmd::MOVE_CURSOR,
    0xffff_ffff,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Random command sequences (typed headers, random bodies with small ids and sizes so they
    /// reach deep into the handlers) never panic and always get a well-formed answer.
    #[test]
    fn random_commands_never_panic(
        cmds in prop::collection::vec(
            (0usize..TYPES.len(), prop::collection::vec(any::<u8>(), 0..96), any::<bool>(), any::<bool>()),
            1..24,
        )
    ) {
        let mut dev = device(Box::new(NoDisplay));
        let mut h = Harness::new(4 << 20).unwrap();
        let fb = h.alloc(64 * 64 * 4);
        for (t, mut body, small, cursor) in cmds {
            if small {
                // Small ids, sizes and in-RAM addresses.
                for (i, b) in body.iter_mut().enumerate() {
                    *b = if i % 4 == 0 { *b % 70 } else { 0 };
                }
                if body.len() >= 24 {
                    body[16..24].copy_from_slice(&fb.0.to_le_bytes());
                }
            }
            let mut c = Vec::new();
            CtrlHdr { type_: TYPES[t], flags: u32::from(small), fence_id: 1, ..CtrlHdr::default() }
                .encode(&mut c);
            c.extend_from_slice(&body);
            let r = if cursor {
                h.cursor_cmd(&mut dev, &c).unwrap()
            } else {
                // Like Linux: the fixed part, then the rest (ATTACH_BACKING's entries) apart.
                let (head, rest) = c.split_at(c.len().min(32));
                let rest = (!rest.is_empty()).then_some(rest);
                h.ctrl(&mut dev, head, rest, 1056).unwrap()
            };
            if !cursor {
                let ty = r.type_();
                prop_assert!((0x1100..0x1106).contains(&ty) || (0x1200..0x1206).contains(&ty), "type {ty:#x}");
            }
        }
        prop_assert!(dev.resource_bytes() <= GpuConfig::default().max_total_bytes);
    }

    /// Completely random bytes as a command never panic.
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let mut dev = device(Box::new(NoDisplay));
        let mut h = Harness::new(1 << 20).unwrap();
        let _ = h.ctrl(&mut dev, &bytes, None, 64).unwrap();
        let _ = h.cursor_cmd(&mut dev, &bytes).unwrap();
    }
}
