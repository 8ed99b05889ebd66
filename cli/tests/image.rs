//! `vcuda image build` end to end: downloads Debian packages (kernel, headers, busybox-static;
//! ~90 MB the first time, cached under $VCUDA_CACHE or ~/.cache/vcuda), so it is opt-in:
//! `cargo test -p vcuda --test image -- --ignored`.

use std::process::Command;

#[test]
#[ignore = "downloads Debian packages; run with --ignored"]
fn builds_a_bootable_image_from_debian_packages() {
    let o = Command::new(env!("CARGO_BIN_EXE_vcuda"))
        .args(["image", "build", "--name", "test-image"])
        .output()
        .expect("run vcuda");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("[6/6]"), "{out}");
    let img = vmm::image::find("test-image").unwrap();
    let initrd = std::fs::read(&img.initrd).unwrap();
    let text = String::from_utf8_lossy(&initrd);
    for member in [
        "init\0",
        "bin/busybox\0",
        "dev/console\0",
        "virtio_mmio.ko\0",
    ] {
        assert!(text.contains(member), "initramfs lacks {member:?}");
    }
    let kernel = std::fs::read(&img.kernel).unwrap();
    assert!(kernel.starts_with(b"\x7fELF") || &kernel[0x202..0x206] == b"HdrS");
}
