//! Test-suite plumbing shared by every crate of the workspace.
//!
//! A test that cannot run here because a capability is truly absent (no GPU, no Vulkan device, a
//! KVM that cannot boot Linux, a toolchain not installed) calls [`skip`] and returns. libtest
//! has no "skipped" outcome, so such a test is counted as passed by `cargo test`; [`skip`] makes
//! it visible twice:
//!
//! * `SKIPPED <test>: <reason>` on stderr (shown with `--nocapture`, or when the test fails
//!   later), and
//! * one line appended to the file named by `$VCUDA_SKIP_LOG` (set by `scripts/test.sh`), which
//!   the suite's closing summary reads to list every skip with its reason per test binary.
//!
//! A skip is only for a missing capability. A capability that is present but broken (UML that
//! is installed and does not boot, a toolchain that fails to compile) is a failure: panic with
//! the reason instead.

use std::io::Write;

/// The environment variable naming the skip log (tab-separated: binary, test, reason).
pub const SKIP_LOG_ENV: &str = "VCUDA_SKIP_LOG";

/// Records that the current test is skipped because of `reason` (which should name the missing
/// capability and how to get it). The caller returns right after.
pub fn skip(reason: impl std::fmt::Display) {
    let test = current_test();
    let reason = one_line(&reason.to_string());
    eprintln!("SKIPPED {test}: {reason}");
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV) {
        let binary = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "?".into());
        let line = format!("{binary}\t{test}\t{reason}\n");
        // One write call per line with O_APPEND: lines from concurrent tests do not interleave.
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            eprintln!(
                "vcuda-testkit: cannot append to {}: {e}",
                std::path::Path::new(&path).display()
            );
        }
    }
}

/// The running test's name: libtest names each test's thread after the test (with one test
/// thread it runs tests on the main thread, which has no useful name).
fn current_test() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_string(),
        _ => "(test)".to_string(),
    }
}

/// Reasons go into a tab-separated, line-oriented log: no tabs or newlines inside.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_flattened_to_one_line() {
        assert_eq!(one_line("a\tb\n  c "), "a b c");
    }

    #[test]
    fn the_test_name_comes_from_the_thread() {
        let name = std::thread::Builder::new()
            .name("mod::some_test".into())
            .spawn(current_test)
            .expect("spawn")
            .join()
            .expect("join");
        assert_eq!(name, "mod::some_test");
    }
}
