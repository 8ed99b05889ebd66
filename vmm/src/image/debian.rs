//! Debian package helpers: resolve names with apt-cache, fetch with apt-get download, unpack
//! with dpkg-deb. Only the ordinary clients, by package name.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::ImageError;

/// Runs `cmd`, returning stdout; a failure carries the command line and stderr.
pub fn run(cmd: &mut Command) -> Result<String, ImageError> {
    let line = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| ImageError::Spawn {
        cmd: line.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(ImageError::Command {
            cmd: line,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The packages `package` depends on (`apt-cache depends`), in order.
pub fn depends(package: &str) -> Result<Vec<String>, ImageError> {
    let out = run(Command::new("apt-cache").args(["depends", package]))?;
    Ok(out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(|d| d.trim_matches(|c| c == '<' || c == '>').to_owned())
        .collect())
}

/// The candidate version of `package` (`apt-cache policy`).
pub fn candidate_version(package: &str) -> Result<String, ImageError> {
    let out = run(Command::new("apt-cache").args(["policy", package]))?;
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Candidate: "))
        .filter(|v| *v != "(none)")
        .map(str::to_owned)
        .ok_or_else(|| ImageError::NoPackage(package.to_owned()))
}

/// Downloads `package` into `dir` unless a .deb of it is already there; returns the .deb.
pub fn download(package: &str, dir: &Path) -> Result<PathBuf, ImageError> {
    let find = || -> Result<Option<PathBuf>, ImageError> {
        let prefix = format!("{package}_");
        for entry in std::fs::read_dir(dir).map_err(|e| ImageError::io(dir, e))? {
            let path = entry.map_err(|e| ImageError::io(dir, e))?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.starts_with(&prefix) && name.ends_with(".deb") {
                return Ok(Some(path));
            }
        }
        Ok(None)
    };
    if let Some(deb) = find()? {
        return Ok(deb);
    }
    run(Command::new("apt-get")
        .args(["download", "-q", package])
        .current_dir(dir))?;
    find()?.ok_or_else(|| ImageError::NoPackage(package.to_owned()))
}

/// Unpacks `deb` into `root`, once (a marker under `root/.unpacked/` remembers it).
pub fn extract(deb: &Path, root: &Path) -> Result<(), ImageError> {
    let markers = root.join(".unpacked");
    let marker = markers.join(deb.file_name().unwrap_or_default());
    if marker.exists() {
        return Ok(());
    }
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root))?;
    std::fs::create_dir_all(&markers).map_err(|e| ImageError::io(&markers, e))?;
    std::fs::write(&marker, b"").map_err(|e| ImageError::io(&marker, e))
}
