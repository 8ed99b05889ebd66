//! Finding what the build produced for end-to-end tests: the profile directory, the shim
//! (`libcuda.so.1` from guest-libcuda) and the `vcuda` binary.
//!
//! `cargo test --workspace` builds every workspace member's libraries and binaries before it
//! runs tests, so both exist in the test binary's profile directory; when a test is run alone
//! (`cargo test -p vcuda-tests`) they may not, and the helpers say how to build them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::toolchain::{self, ToolchainError};

/// `target/<profile>` of the running test binary (`target/<profile>/deps/<test>`).
pub fn profile_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().and_then(Path::parent).map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target/debug"))
}

/// A directory holding `libcuda.so.1` and `libcuda.so` links to the built shim, or the reason
/// it is unavailable.
pub fn shim_dir() -> Result<PathBuf, String> {
    let lib = profile_dir().join("libcuda.so");
    if !lib.is_file() {
        return Err(format!(
            "{} not built (run `cargo build -p guest-libcuda` first)",
            lib.display()
        ));
    }
    let dir = profile_dir().join("vcuda-shim");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for name in ["libcuda.so.1", "libcuda.so"] {
        let link = dir.join(name);
        if !link.exists() {
            // Tests may race to create it; either link is fine.
            let _ = std::os::unix::fs::symlink(&lib, &link);
        }
    }
    Ok(dir)
}

/// The `vcuda` binary of this build, or the reason it is unavailable.
pub fn vcuda_bin() -> Result<PathBuf, String> {
    let bin = profile_dir().join("vcuda");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} not built (run `cargo build -p vcuda` first)",
            bin.display()
        ))
    }
}

/// `tests/programs/<name>`.
pub fn program(name: &str) -> PathBuf {
    toolchain::workspace_root()
        .join("tests/programs")
        .join(name)
}

/// Compiles `tests/programs/<name>.cu` with extra nvcc `args` into `<profile>/vcuda-<out_name>`,
/// linked with `-lcuda` against the shim in `shim` (the pip toolkit ships no libcuda stub).
pub fn compile_linked(
    shim: &Path,
    name: &str,
    out_name: &str,
    args: &[&str],
) -> Result<PathBuf, ToolchainError> {
    let tc = toolchain::toolchain()?;
    let out = profile_dir().join(format!("vcuda-{out_name}"));
    let result = Command::new(&tc.nvcc)
        .args(args)
        .arg(program(&format!("{name}.cu")))
        .arg("-o")
        .arg(&out)
        .arg(format!("-L{}", tc.cuda_root.join("lib").display()))
        .arg(format!("-L{}", shim.display()))
        .arg("-lcuda")
        .output()
        .map_err(|source| ToolchainError::Io {
            path: tc.nvcc.clone(),
            source,
        })?;
    assert!(
        result.status.success(),
        "nvcc {name}: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    Ok(out)
}
