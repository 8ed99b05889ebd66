//! Shared by the integration tests: building the freestanding test guests with gcc (cached under
//! target/), running `vcuda run`, and skipping where KVM or gcc is missing.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Why these tests cannot run on this machine, if they cannot.
pub fn kvm_unavailable() -> Option<String> {
    if !Path::new("/dev/kvm").exists() {
        return Some("/dev/kvm is absent (no KVM on this host)".into());
    }
    if let Err(e) = vmm::vstate::vm::open_kvm() {
        return Some(format!("cannot open /dev/kvm: {e}"));
    }
    if Command::new("gcc").arg("--version").output().is_err() {
        return Some("gcc is not installed (needed to build the test guests)".into());
    }
    None
}

/// Returns early from a test, with the reason on stderr, when KVM or gcc is unavailable.
#[macro_export]
macro_rules! require_kvm {
    () => {
        if let Some(reason) = common::kvm_unavailable() {
            vcuda_testkit::skip(reason);
            return;
        }
    };
}

const CFLAGS: &[&str] = &[
    "-O2",
    "-ffreestanding",
    "-nostdlib",
    "-mno-sse",
    "-mno-mmx",
    "-mno-red-zone",
    "-mgeneral-regs-only",
    "-fno-pic",
    "-no-pie",
    "-static",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-fno-builtin",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wl,--build-id=none",
    "-Wl,--no-warn-rwx-segments",
    "-z",
    "max-page-size=0x1000",
];

fn sources_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../vmm/test-guests")
}

fn newest_mtime(paths: &[PathBuf]) -> std::time::SystemTime {
    paths
        .iter()
        .filter_map(|p| p.metadata().and_then(|m| m.modified()).ok())
        .max()
        .unwrap_or(std::time::UNIX_EPOCH)
}

/// Builds `name` from `sources` (in vmm/test-guests) unless the cached ELF is newer.
fn build(name: &str, sources: &[&str]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vmm-test-guests");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(name);
    let mut inputs: Vec<PathBuf> = sources.iter().map(|s| sources_dir().join(s)).collect();
    inputs.push(sources_dir().join("guest.ld"));
    let fresh = out
        .metadata()
        .and_then(|m| m.modified())
        .is_ok_and(|t| t >= newest_mtime(&inputs));
    if fresh {
        return out;
    }
    // Unique temporary name, then rename: test binaries may build concurrently.
    let tmp = dir.join(format!("{name}.{}.tmp", std::process::id()));
    let status = Command::new("gcc")
        .args(CFLAGS)
        .arg(format!(
            "-Wl,-T,{}",
            sources_dir().join("guest.ld").display()
        ))
        .arg("-o")
        .arg(&tmp)
        .args(&inputs[..inputs.len() - 1])
        .status()
        .expect("run gcc");
    assert!(status.success(), "gcc failed to build test guest {name}");
    std::fs::rename(&tmp, &out).unwrap();
    out
}

/// The C test guest (64-bit entry, Linux boot protocol); its mode comes after `--`.
pub fn guest() -> &'static Path {
    static GUEST: OnceLock<PathBuf> = OnceLock::new();
    GUEST.get_or_init(|| build("guest.elf", &["entry.S", "guest.c"]))
}

/// The PVH test guest (32-bit entry through the Xen ELF note).
pub fn pvh_guest() -> &'static Path {
    static GUEST: OnceLock<PathBuf> = OnceLock::new();
    GUEST.get_or_init(|| build("pvh.elf", &["pvh.S"]))
}

/// Runs `vcuda run ARGS`.
pub fn vcuda_run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vcuda"))
        .arg("run")
        .args(args)
        .env("VCUDA_LOG", "warn")
        .output()
        .expect("run vcuda")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the run ended with `code` and did not panic, printing both streams otherwise.
pub fn assert_exit(o: &Output, code: i32) {
    assert!(
        o.status.code() == Some(code) && !stderr(o).contains("panicked"),
        "expected exit {code}, got {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
}
