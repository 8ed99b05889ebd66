//! End-to-end: the freestanding test guests under real KVM through `vcuda run`.
//! Skipped (with the reason printed) where /dev/kvm or gcc is missing.

mod common;

use std::time::{Duration, Instant};

use common::{assert_exit, guest, pvh_guest, stderr, stdout, vcuda_run};

fn kernel() -> &'static str {
    guest().to_str().unwrap()
}

#[test]
fn hello_prints_on_serial_and_exits_zero() {
    require_kvm!();
    let o = vcuda_run(&[
        "--kernel",
        kernel(),
        "--mem",
        "64M",
        "--timeout",
        "20",
        "--",
        "hello",
    ]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("hello from the vcuda test guest"));
}

#[test]
fn debug_exit_port_sets_the_exit_status() {
    require_kvm!();
    let o = vcuda_run(&["--kernel", kernel(), "--timeout", "20", "--", "exit", "7"]);
    assert_exit(&o, 7);
}

#[test]
fn i8042_reset_is_a_clean_exit() {
    require_kvm!();
    let o = vcuda_run(&["--kernel", kernel(), "--timeout", "20", "--", "reset"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("resetting through the i8042"));
}

#[test]
fn triple_fault_is_reported() {
    require_kvm!();
    let o = vcuda_run(&[
        "--kernel",
        kernel(),
        "--timeout",
        "20",
        "--",
        "triple-fault",
    ]);
    assert_exit(&o, 125);
    assert!(stderr(&o).contains("triple-faulted"), "{}", stderr(&o));
}

#[test]
fn spinning_guest_hits_the_timeout() {
    require_kvm!();
    let start = Instant::now();
    let o = vcuda_run(&[
        "--kernel",
        kernel(),
        "--vcpus",
        "2",
        "--timeout",
        "1",
        "--",
        "spin",
    ]);
    assert_exit(&o, 124);
    assert!(stderr(&o).contains("timed out"));
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn virtio_mmio_negotiation_queue_round_trip_and_interrupt() {
    require_kvm!();
    let o = vcuda_run(&[
        "--kernel",
        kernel(),
        "--device",
        "echo",
        "--timeout",
        "30",
        "--",
        "virtio",
    ]);
    let out = stdout(&o);
    assert!(!out.contains("FAIL"), "{out}");
    assert!(out.contains("ok used-ring interrupt"), "{out}");
    assert!(out.contains("echo: ping from the guest"), "{out}");
    assert!(out.contains("virtio: all checks passed"), "{out}");
    assert_exit(&o, 0);
}

/// The virtio-cuda device under real KVM: the guest speaks the protocol over the MMIO
/// transport (ioeventfd notify, irqfd interrupt) to an in-process executor.
#[test]
fn virtio_cuda_protocol_from_a_guest_under_kvm() {
    require_kvm!();
    let o = vcuda_run(&[
        "--kernel",
        kernel(),
        "--device",
        "cuda",
        "--timeout",
        "60",
        "--",
        "cuda",
    ]);
    let out = stdout(&o);
    assert!(!out.contains("FAIL"), "{out}");
    assert!(
        out.contains("ok data round trip through guest pages"),
        "{out}"
    );
    assert!(out.contains("cuda: all checks passed"), "{out}");
    assert_exit(&o, 0);
}

/// The virtio-gpu device under real KVM: the guest runs Linux's KMS command sequence over the
/// MMIO transport and draws a pattern; the PNG display's capture is compared pixel by pixel.
#[test]
fn virtio_gpu_frame_from_a_guest_under_kvm() {
    require_kvm!();
    let dir = std::env::temp_dir().join(format!("vcuda-gpu-guest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let display = format!("png:{}", dir.display());
    let o = vcuda_run(&[
        "--kernel",
        kernel(),
        "--display",
        &display,
        "--timeout",
        "60",
        "--",
        "gpu",
    ]);
    let out = stdout(&o);
    assert!(!out.contains("FAIL"), "{out}");
    assert!(out.contains("gpu: all checks passed"), "{out}");
    assert_exit(&o, 0);
    let png = virtio_gpu::display::PngDisplay::frame_path(&dir, 0, 1);
    let (w, h, px) = virtio_gpu::display::read_png(&png).expect("the flushed frame");
    assert_eq!((w, h), (64, 64));
    for y in 0..64u32 {
        for x in 0..64u32 {
            let i = ((y * 64 + x) * 4) as usize;
            let want = [(4 * x) as u8, (4 * y) as u8, (x ^ y) as u8, 0xff];
            assert_eq!(&px[i..i + 4], &want, "pixel ({x}, {y})");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_virtio_devices_get_their_own_window_and_irq() {
    require_kvm!();
    let o = vcuda_run(&[
        "--kernel",
        kernel(),
        "--device",
        "echo",
        "--device",
        "echo",
        "--timeout",
        "30",
        "--",
        "virtio",
    ]);
    let out = stdout(&o);
    assert!(
        out.contains("virtio-mmio device at 0xc0001000 irq 5"),
        "{out}"
    );
    assert!(
        out.contains("virtio-mmio device at 0xc0002000 irq 6"),
        "{out}"
    );
    assert_exit(&o, 0);
}

#[test]
fn e820_and_mp_table_describe_ram_and_vcpus() {
    require_kvm!();
    // 5 GiB crosses the MMIO gap: RAM is split below 3 GiB and above 4 GiB.
    let o = vcuda_run(&[
        "--kernel",
        kernel(),
        "--mem",
        "5G",
        "--vcpus",
        "3",
        "--timeout",
        "20",
        "--",
        "info",
    ]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("ram_mib=5120"), "{}", stdout(&o));
    assert!(stdout(&o).contains("cpus=3"), "{}", stdout(&o));
}

#[test]
fn stdin_reaches_the_guest_serial_port() {
    require_kvm!();
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_vcuda"))
        .args([
            "run",
            "--kernel",
            kernel(),
            "--timeout",
            "20",
            "--",
            "readline",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello serial\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(stdout(&o).contains("got: hello serial"), "{}", stdout(&o));
    assert_exit(&o, 0);
}

#[test]
fn second_vcpu_starts_on_init_sipi() {
    require_kvm!();
    let o = vcuda_run(&[
        "--kernel",
        kernel(),
        "--vcpus",
        "2",
        "--timeout",
        "20",
        "--",
        "smp",
    ]);
    assert!(
        stdout(&o).contains("ok application processor ran"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).lines().any(|l| l == "A"), "{}", stdout(&o));
    assert_exit(&o, 0);
}

#[test]
fn ram_above_the_mmio_gap_works_from_the_first_instruction() {
    require_kvm!();
    let o = vcuda_run(&[
        "--kernel",
        kernel(),
        "--mem",
        "64G",
        "--timeout",
        "20",
        "--",
        "memtest",
    ]);
    assert!(!stdout(&o).contains("FAIL"), "{}", stdout(&o));
    assert_eq!(
        stdout(&o).matches("ok RAM reads back").count(),
        3,
        "{}",
        stdout(&o)
    );
    assert_exit(&o, 0);
}

#[test]
fn page_tables_above_4gib_work_from_the_first_instruction() {
    require_kvm!();
    // Regression: registering memory slots lazily made this guest triple-fault (page walks
    // through memory without a slot).
    let o = vcuda_run(&[
        "--kernel",
        kernel(),
        "--mem",
        "64G",
        "--timeout",
        "20",
        "--",
        "pthigh",
    ]);
    assert!(
        stdout(&o).contains("running on page tables above 4 GiB"),
        "{}",
        stdout(&o)
    );
    assert_exit(&o, 0);
}

#[test]
fn pvh_entry_gets_start_info_and_cmdline() {
    require_kvm!();
    let o = vcuda_run(&[
        "--kernel",
        pvh_guest().to_str().unwrap(),
        "--timeout",
        "20",
        "--",
        "pvh-args",
    ]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("pvh: start_info ok"), "{}", stdout(&o));
    assert!(stdout(&o).contains("-- pvh-args"), "{}", stdout(&o));
}

#[test]
fn boot_timer_reports_guest_entry_and_write() {
    require_kvm!();
    let o = vcuda_run(&[
        "--kernel",
        kernel(),
        "--boot-timer",
        "--timeout",
        "20",
        "--",
        "hello",
    ]);
    assert_exit(&o, 0);
    let err = stderr(&o);
    assert!(err.contains("boot-timer: guest entry"), "{err}");
    assert!(err.contains("boot-timer: guest boot-timer write"), "{err}");
}

#[test]
fn serial_output_to_a_file() {
    require_kvm!();
    let path = std::env::temp_dir().join(format!("vcuda-serial-{}.log", std::process::id()));
    let o = vcuda_run(&[
        "--kernel",
        kernel(),
        "--serial-out",
        path.to_str().unwrap(),
        "--timeout",
        "20",
        "--",
        "hello",
    ]);
    assert_exit(&o, 0);
    assert!(!stdout(&o).contains("hello"));
    let log = std::fs::read_to_string(&path).unwrap();
    assert!(log.contains("hello from the vcuda test guest"), "{log}");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn json_config_file() {
    require_kvm!();
    let path = std::env::temp_dir().join(format!("vcuda-vm-{}.json", std::process::id()));
    let json = serde_json::json!({
        "kernel": kernel(),
        "mem": "256M",
        "vcpus": 2,
        "timeout_secs": 30,
        "devices": ["echo"],
        "guest_args": ["virtio"],
    });
    std::fs::write(&path, json.to_string()).unwrap();
    let o = vcuda_run(&["--config", path.to_str().unwrap()]);
    std::fs::remove_file(path).unwrap();
    assert!(
        stdout(&o).contains("virtio: all checks passed"),
        "{}",
        stdout(&o)
    );
    assert_exit(&o, 0);
}

#[test]
fn large_guest_ram_is_mapped_lazily() {
    require_kvm!();
    let o = vcuda_run(&[
        "--kernel",
        kernel(),
        "--mem",
        "64G",
        "--timeout",
        "20",
        "--",
        "hello",
    ]);
    assert_exit(&o, 0);
}

#[test]
fn bad_inputs_fail_with_a_clear_message() {
    let bogus = std::env::temp_dir().join(format!("vcuda-bogus-{}", std::process::id()));
    std::fs::write(&bogus, b"this is no kernel").unwrap();
    let bogus = bogus.to_str().unwrap().to_owned();
    let cases: &[(&[&str], &str)] = &[
        (&["--kernel", "/nonexistent/kernel"], "--kernel"),
        (&["--kernel", &bogus], "neither an ELF"),
        (&["--kernel", &bogus, "--mem", "0"], "at least"),
        (&["--kernel", &bogus, "--mem", "4T"], "too big"),
        (&["--kernel", &bogus, "--vcpus", "0"], "--vcpus"),
        (&["--kernel", &bogus, "--timeout", "0"], "--timeout"),
        (&["--mem", "1G"], "no kernel given"),
        (&["--config", "/nonexistent/vm.json"], "cannot read config"),
    ];
    let kvm = common::kvm_unavailable().is_none();
    for (args, expect) in cases {
        let o = vcuda_run(args);
        let err = stderr(&o);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        // Without KVM, VM creation fails first for kernel-file errors.
        if kvm || !expect.contains("ELF") && !expect.contains("--kernel") {
            assert!(
                err.contains(expect),
                "{args:?}: expected `{expect}` in: {err}"
            );
        }
    }
    std::fs::remove_file(bogus).unwrap();
}
