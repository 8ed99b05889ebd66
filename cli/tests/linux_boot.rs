//! Full Linux boot. Needs a KVM that can run Linux: skipped (with the reason) on a PVM-based KVM
//! (`/sys/module/kvm_pvm`) or when a calibration guest shows instruction emulation speed, and
//! when no kernel is available. The kernel: VCUDA_TEST_KERNEL (a bzImage or vmlinux; optionally
//! VCUDA_TEST_INITRD; no rootfs, so it panics and resets), else the guest image built by
//! `vcuda image build` (its /init runs `uname -a` and exits with its status).

mod common;

use std::path::PathBuf;

use common::{assert_exit, guest, stdout, vcuda_run};

/// Why Linux cannot boot on this host's KVM, if it cannot.
fn linux_blocker() -> Option<String> {
    if let Some(reason) = common::kvm_unavailable() {
        return Some(reason);
    }
    if let Some(reason) = vmm::vstate::vm::linux_boot_blocker() {
        return Some(reason);
    }
    // 50 M iterations (~150 M instructions) take well under a second on hardware KVM and
    // over a minute on an emulating KVM.
    let o = vcuda_run(&[
        "--kernel",
        guest().to_str()?,
        "--timeout",
        "5",
        "--",
        "calibrate",
        "50",
    ]);
    (o.status.code() != Some(0)).then(|| {
        "KVM is far too slow (calibration guest timed out): instructions are emulated".into()
    })
}

fn kernel() -> Option<PathBuf> {
    std::env::var_os("VCUDA_TEST_KERNEL").map(PathBuf::from)
}

#[test]
fn guest_image_runs_a_program_and_returns_its_status() {
    if let Some(reason) = linux_blocker() {
        vcuda_testkit::skip(format!("Linux boot: {reason}"));
        return;
    }
    if vmm::image::find("default").is_err() {
        vcuda_testkit::skip("no guest image (run `vcuda image build`)");
        return;
    }
    let o = vcuda_run(&[
        "--image",
        "default",
        "--mem",
        "512M",
        "--vcpus",
        "2",
        "--device",
        "echo",
        "--timeout",
        "60",
        "--boot-timer",
        "--",
        "/bin/uname",
        "-a",
    ]);
    assert!(stdout(&o).contains("Linux"), "{}", stdout(&o));
    assert!(
        common::stderr(&o).contains("boot-timer write"),
        "{}",
        common::stderr(&o)
    );
    assert_exit(&o, 0);
}

#[test]
fn linux_boots_to_the_kernel_banner_and_reboots() {
    if let Some(reason) = linux_blocker() {
        vcuda_testkit::skip(format!("Linux boot: {reason}"));
        return;
    }
    let Some(kernel) = kernel() else {
        vcuda_testkit::skip("Linux boot: set VCUDA_TEST_KERNEL to a bzImage or vmlinux");
        return;
    };
    let mut args = vec![
        "--kernel".to_owned(),
        kernel.display().to_string(),
        "--mem".into(),
        "512M".into(),
        "--vcpus".into(),
        "2".into(),
        "--timeout".into(),
        "60".into(),
        "--device".into(),
        "echo".into(),
        "--cmdline".into(),
        "console=ttyS0 reboot=k panic=1 pci=off nomodules i8042.noaux i8042.nomux i8042.dumbkbd"
            .into(),
    ];
    if let Some(initrd) = std::env::var_os("VCUDA_TEST_INITRD") {
        args.push("--initrd".into());
        args.push(PathBuf::from(initrd).display().to_string());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = vcuda_run(&refs);
    // Without a root filesystem the kernel panics and, with panic=1 reboot=k, resets.
    assert!(stdout(&o).contains("Linux version"), "{}", stdout(&o));
    assert_exit(&o, 0);
}
