//! `vcuda image build`: a bootable guest from Debian packages — the distribution kernel, a
//! busybox-static initramfs whose /init runs the guest program given after `--`, the virtio
//! modules, and (for kernels without CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, like Debian's) our
//! `vcuda_mmio` module that turns `virtio_mmio.device=` entries into platform devices. Built
//! against the kernel's own headers package. Everything is cached under
//! `$VCUDA_CACHE` (default `~/.cache/vcuda`); a rebuild reuses downloaded packages.
//!
//! Layout: `images/NAME/{vmlinux,vmlinuz,initrd.cpio,cmdline,manifest.json}`, `debs/`, `root/` (unpacked
//! packages), `build/` (module build).

mod cpio;
mod debian;

use std::path::{Path, PathBuf};
use std::process::Command;

use cpio::Entry;

/// The `/init` script.
const INIT_SH: &str = include_str!("init.sh");
/// Source of the platform-device module (GPL-2.0 kernel code).
const VCUDA_MMIO_C: &str = include_str!("../../guest/vcuda_mmio/vcuda_mmio.c");
/// The guest driver of the virtio-cuda device (`/dev/vcuda0`) and its ioctl header.
const VCUDA_C: &str = include_str!("../../../guest/module/vcuda.c");
const VCUDA_UAPI_H: &str = include_str!("../../../guest/module/vcuda_uapi.h");
/// Where the image keeps the CUDA shim (`libcuda.so.1`); /init puts it on `LD_LIBRARY_PATH`.
const SHIM_DIR: &str = "/usr/lib/vcuda";
/// The guest's `LD_LIBRARY_PATH`, read by /init.
const LIBRARY_PATH_FILE: &str = "/etc/vcuda/library-path";
/// Kernel command line of the image (no `nomodules`: /init loads modules).
pub const IMAGE_CMDLINE: &str =
    "console=ttyS0 reboot=k panic=1 pci=off quiet i8042.noaux i8042.nomux i8042.dumbkbd";

/// Why an image could not be built or found.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot run {cmd}: {source} (is it installed? the image builder needs apt-get, \
             apt-cache, dpkg-deb, make and gcc)"
    )]
    Spawn { cmd: String, source: std::io::Error },
    #[error("{cmd} failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("Debian package {0} not found (run `apt-get update` first)")]
    NoPackage(String),
    #[error("{0} has no kernel image (boot/vmlinuz-*)")]
    NoKernel(String),
    #[error("the kernel has no {0}; it cannot run as a vcuda guest")]
    KernelConfig(&'static str),
    #[error("module {0} not found in the kernel package")]
    NoModule(String),
    #[error("image `{name}` is not built (no {path}): run `vcuda image build --name {name}`")]
    NotBuilt { name: String, path: PathBuf },
    #[error("--add {0}: expected HOST_PATH:GUEST_PATH")]
    BadAdd(String),
}

impl ImageError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        ImageError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Where images and downloads are cached.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VCUDA_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("vcuda")
}

/// A built image's files.
#[derive(Debug, Clone)]
pub struct Image {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
}

/// Finds the built image `name`; its kernel is the extracted ELF (PVH boot, no decompression)
/// when the build could extract it, else the bzImage.
pub fn find(name: &str) -> Result<Image, ImageError> {
    let dir = cache_dir().join("images").join(name);
    let elf = dir.join("vmlinux");
    let kernel = if elf.exists() {
        elf
    } else {
        dir.join("vmlinuz")
    };
    let initrd = dir.join("initrd.cpio");
    for path in [&kernel, &initrd] {
        if !path.exists() {
            return Err(ImageError::NotBuilt {
                name: name.to_owned(),
                path: path.clone(),
            });
        }
    }
    let cmdline = std::fs::read_to_string(dir.join("cmdline"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| IMAGE_CMDLINE.to_owned());
    Ok(Image {
        kernel,
        initrd,
        cmdline,
    })
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub name: String,
    /// The kernel package (a metapackage such as `linux-image-amd64` is resolved).
    pub kernel_package: String,
    /// Extra files: (host path, guest path).
    pub add: Vec<(PathBuf, String)>,
}

/// Parses `HOST:GUEST` for `--add`.
pub fn parse_add(s: &str) -> Result<(PathBuf, String), ImageError> {
    match s.split_once(':') {
        Some((host, guest)) if !host.is_empty() && guest.starts_with('/') => {
            Ok((PathBuf::from(host), guest.to_owned()))
        }
        _ => Err(ImageError::BadAdd(s.to_owned())),
    }
}

fn step(n: u32, what: &str) {
    println!("[{n}/6] {what}");
}

fn read(path: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::read(path).map_err(|e| ImageError::io(path, e))
}

fn write(path: &Path, data: &[u8]) -> Result<(), ImageError> {
    std::fs::write(path, data).map_err(|e| ImageError::io(path, e))
}

fn mkdir(path: &Path) -> Result<(), ImageError> {
    std::fs::create_dir_all(path).map_err(|e| ImageError::io(path, e))
}

/// The value of `key` in a kernel .config (`y`, `m`, ...), if set.
fn config_value<'a>(config: &'a str, key: &str) -> Option<&'a str> {
    config
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// `depends=` of a kernel module (its .modinfo section, read as bytes).
fn module_depends(ko: &[u8]) -> Vec<String> {
    let key = b"depends=";
    ko.windows(key.len())
        .position(|w| w == key)
        .map(|at| {
            let rest = &ko[at + key.len()..];
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end])
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Finds module `name`'s `.ko` under `dir`. Module names treat `-` and `_` alike
/// (`virtio_gpu` is `virtio-gpu.ko`), as modprobe does.
fn find_module(dir: &Path, name: &str) -> Option<PathBuf> {
    let want = format!("{}.ko", name.replace('-', "_"));
    let entries = std::fs::read_dir(dir).ok()?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_module(&path, name) {
                return Some(found);
            }
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.replace('-', "_") == want)
        {
            return Some(path);
        }
    }
    None
}

/// Modules to load for `wanted`, dependencies first.
fn module_load_order(
    modules_dir: &Path,
    wanted: &[&str],
) -> Result<Vec<(String, PathBuf)>, ImageError> {
    fn visit(
        dir: &Path,
        name: &str,
        out: &mut Vec<(String, PathBuf)>,
        depth: u32,
    ) -> Result<(), ImageError> {
        if out.iter().any(|(n, _)| n == name) || depth > 16 {
            return Ok(());
        }
        let path = find_module(dir, name).ok_or_else(|| ImageError::NoModule(name.to_owned()))?;
        for dep in module_depends(&read(&path)?) {
            visit(dir, &dep, out, depth + 1)?;
        }
        out.push((name.to_owned(), path));
        Ok(())
    }
    let mut out = Vec::new();
    for name in wanted {
        visit(modules_dir, name, &mut out, 0)?;
    }
    Ok(out)
}

/// Decompresses the kernel ELF (vmlinux) out of a bzImage, using the header's payload offset
/// and length and the system's `xz`/`zstd`/`gzip`/`lz4`. The VMM boots it through its PVH entry,
/// which skips the in-guest decompressor. `None` when the format or the tool is unavailable.
fn extract_vmlinux(bzimage: &[u8]) -> Option<Vec<u8>> {
    let u32_at = |off: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            bzimage.get(off..off + 4)?.try_into().ok()?,
        ))
    };
    let setup_sects = match *bzimage.get(0x1f1)? {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + u32_at(0x248)? as usize;
    let payload = bzimage.get(start..start + u32_at(0x24c)? as usize)?;
    let tool = if payload.starts_with(b"\xfd7zXZ\0") {
        "xz"
    } else if payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "zstd"
    } else if payload.starts_with(&[0x1f, 0x8b]) {
        "gzip"
    } else if payload.starts_with(&[0x02, 0x21, 0x4c, 0x18]) {
        "lz4"
    } else {
        return None;
    };
    let mut child = Command::new(tool)
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let data = payload.to_vec();
    let feeder = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &data));
    let out = child.wait_with_output().ok()?;
    let _ = feeder.join();
    // Some payloads end with the decompressed size; tools may warn about it, so check the output.
    out.stdout.starts_with(b"\x7fELF").then_some(out.stdout)
}

/// Prepares the unpacked headers of kernel `abi` for out-of-tree module builds.
fn prepare_headers(root: &Path, abi: &str) -> Result<PathBuf, ImageError> {
    let headers = root.join(format!("usr/src/linux-headers-{abi}"));
    // Debian's arch headers include the common ones by absolute path; point them at our copy.
    let makefile = headers.join("Makefile");
    let text = String::from_utf8_lossy(&read(&makefile)?).into_owned();
    let patched = text.replace(
        "include /usr/src/",
        &format!("include {}/usr/src/", root.display()),
    );
    if patched != text {
        write(&makefile, patched.as_bytes())?;
    }
    Ok(headers)
}

/// Builds module `name` from `sources` (file name, contents) against `headers`.
fn build_module(
    cache: &Path,
    headers: &Path,
    name: &str,
    sources: &[(&str, &str)],
) -> Result<PathBuf, ImageError> {
    let dir = cache.join("build").join(name);
    mkdir(&dir)?;
    for (file, text) in sources {
        write(&dir.join(file), text.as_bytes())?;
    }
    write(
        &dir.join("Kbuild"),
        format!("obj-m := {name}.o\n").as_bytes(),
    )?;
    debian::run(
        Command::new("make")
            .arg("-C")
            .arg(headers)
            .arg(format!("M={}", dir.display()))
            .arg("modules"),
    )?;
    Ok(dir.join(format!("{name}.ko")))
}

/// The CUDA shim to put in the image: `$VCUDA_SHIM`, else the `libcuda.so` cargo built next to
/// this `vcuda` binary.
fn find_shim() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VCUDA_SHIM") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let lib = exe.parent()?.join("libcuda.so");
    lib.is_file().then_some(lib)
}

/// The host shared libraries `elf` needs at run time (from `ldd`, so the builder's
/// `LD_LIBRARY_PATH` counts), with the dynamic loader; and the names `ldd` could not find.
/// The guest kernel is Debian's, so Debian's glibc runs there unchanged.
fn runtime_libraries(elf: &Path) -> (Vec<PathBuf>, Vec<String>) {
    let Ok(out) = Command::new("ldd").arg(elf).output() else {
        return (Vec::new(), Vec::new());
    };
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)", "/lib64/ld-linux… (0x…)" or
        // "libcudart.so.13 => not found"
        match l.split_once("=>") {
            Some((name, rest)) if rest.trim() == "not found" => missing.push(name.trim().into()),
            Some((_, rest)) => found.extend(rest.split_whitespace().next().map(PathBuf::from)),
            None => found.extend(l.split_whitespace().next().map(PathBuf::from)),
        }
    }
    found.retain(|p| p.is_absolute());
    (found, missing)
}

/// Directories the guest's loader searches without being told (Debian's multiarch layout).
const SYSTEM_LIB_DIRS: &[&str] = &[
    "/lib",
    "/lib64",
    "/usr/lib",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
];

/// The guest's `LD_LIBRARY_PATH`: the shim's directory, then every other directory a library
/// was placed in (a program's own libraries, e.g. a shared cudart found on the host through
/// `LD_LIBRARY_PATH` rather than the program's rpath).
fn guest_library_path(libs: &[PathBuf]) -> String {
    let mut dirs = vec![SHIM_DIR.to_string()];
    for lib in libs {
        if let Some(d) = lib.parent().and_then(|d| d.to_str()) {
            if !SYSTEM_LIB_DIRS.contains(&d) && !dirs.iter().any(|x| x == d) {
                dirs.push(d.to_string());
            }
        }
    }
    dirs.join(":")
}

/// Builds the image; prints progress; returns it.
pub fn build(opts: &BuildOptions) -> Result<Image, ImageError> {
    let cache = cache_dir();
    let debs = cache.join("debs");
    let root = cache.join("root");
    let out_dir = cache.join("images").join(&opts.name);
    for d in [&debs, &root, &out_dir] {
        mkdir(d)?;
    }

    step(1, &format!("resolving {}", opts.kernel_package));
    let kernel_pkg = debian::depends(&opts.kernel_package)?
        .into_iter()
        .find(|d| d.starts_with("linux-image-"))
        .unwrap_or_else(|| opts.kernel_package.clone());
    let abi = kernel_pkg
        .strip_prefix("linux-image-")
        .unwrap_or(&kernel_pkg)
        .to_owned();
    let headers_pkg = format!("linux-headers-{abi}");
    let mut packages = vec![kernel_pkg.clone(), "busybox-static".to_owned()];
    let mut versions = Vec::new();
    for p in &packages {
        versions.push((p.clone(), debian::candidate_version(p)?));
    }
    println!("      kernel {kernel_pkg} {}", versions[0].1);

    step(2, &format!("downloading packages into {}", debs.display()));
    for p in &packages {
        let deb = debian::download(p, &debs)?;
        println!(
            "      {}",
            deb.file_name().unwrap_or_default().to_string_lossy()
        );
        debian::extract(&deb, &root)?;
    }

    step(3, "checking the kernel configuration");
    let config_path = root.join(format!("boot/config-{abi}"));
    let config = String::from_utf8_lossy(&read(&config_path)?).into_owned();
    for (key, what) in [
        ("CONFIG_SERIAL_8250_CONSOLE", "serial console"),
        ("CONFIG_BLK_DEV_INITRD", "initramfs support"),
    ] {
        if config_value(&config, key) != Some("y") {
            return Err(ImageError::KernelConfig(what));
        }
    }
    let virtio_mmio = config_value(&config, "CONFIG_VIRTIO_MMIO");
    if virtio_mmio.is_none() {
        return Err(ImageError::KernelConfig(
            "virtio-mmio driver (CONFIG_VIRTIO_MMIO)",
        ));
    }
    let cmdline_devices = config_value(&config, "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES") == Some("y");
    println!(
        "      CONFIG_VIRTIO_MMIO={}, command-line devices: {}",
        virtio_mmio.unwrap_or("n"),
        if cmdline_devices {
            "yes"
        } else {
            "no (the vcuda_mmio module registers them)"
        }
    );

    step(4, "collecting modules");
    let modules_dir = root.join(format!("lib/modules/{abi}"));
    // virtio-mmio, and the virtio-gpu DRM driver for `--device gpu` (it binds only when the
    // VM has that device; without it the image stays as it was).
    let mut wanted = Vec::new();
    if virtio_mmio == Some("m") {
        wanted.push("virtio_mmio");
    }
    if config_value(&config, "CONFIG_DRM_VIRTIO_GPU") == Some("m") {
        wanted.push("virtio_gpu");
    }
    let mut load = module_load_order(&modules_dir, &wanted)?;
    for p in [headers_pkg.clone()]
        .into_iter()
        .chain(debian::depends(&headers_pkg)?)
        .filter(|p| p.starts_with("linux-headers-") || p.starts_with("linux-kbuild-"))
    {
        let deb = debian::download(&p, &debs)?;
        debian::extract(&deb, &root)?;
        packages.push(p);
    }
    let headers = prepare_headers(&root, &abi)?;
    let shim = if cmdline_devices {
        None
    } else {
        println!("      building vcuda_mmio against linux-headers-{abi}");
        Some(build_module(
            &cache,
            &headers,
            "vcuda_mmio",
            &[("vcuda_mmio.c", VCUDA_MMIO_C)],
        )?)
    };
    println!("      building vcuda (the /dev/vcuda0 driver) against linux-headers-{abi}");
    let vcuda_ko = build_module(
        &cache,
        &headers,
        "vcuda",
        &[("vcuda.c", VCUDA_C), ("vcuda_uapi.h", VCUDA_UAPI_H)],
    )?;
    for (name, _) in &load {
        println!("      {name}.ko");
    }

    step(5, "writing the initramfs");
    let mut entries = Vec::new();
    for dir in [
        "/bin",
        "/dev",
        "/proc",
        "/sys",
        "/tmp",
        "/lib",
        "/lib/modules",
        "/root",
        "/usr",
        "/usr/lib",
        "/etc",
        "/etc/vcuda",
    ] {
        entries.push(Entry::Dir {
            path: dir.into(),
            mode: 0o755,
        });
    }
    entries.push(Entry::CharDev {
        path: "/dev/console".into(),
        mode: 0o600,
        major: 5,
        minor: 1,
    });
    entries.push(Entry::File {
        path: "/bin/busybox".into(),
        mode: 0o755,
        data: read(&root.join("bin/busybox"))?,
    });
    entries.push(Entry::Symlink {
        path: "/bin/sh".into(),
        target: "busybox".into(),
    });
    entries.push(Entry::File {
        path: "/init".into(),
        mode: 0o755,
        data: INIT_SH.as_bytes().to_vec(),
    });
    // One module per line, with its parameters. No fbdev console on the GPU: the only frames
    // are the ones the guest's programs draw.
    let order: Vec<String> = load
        .iter()
        .map(|(n, _)| match n.as_str() {
            "drm_kms_helper" => format!("{n} fbdev_emulation=0"),
            _ => n.clone(),
        })
        .collect();
    entries.push(Entry::File {
        path: "/lib/modules/load-order".into(),
        mode: 0o644,
        data: format!("{}\n", order.join("\n")).into_bytes(),
    });
    if let Some(ko) = shim {
        load.push(("vcuda_mmio".into(), ko));
    }
    // Loaded by /init after the virtio-mmio devices are registered.
    load.push(("vcuda".into(), vcuda_ko));
    let mut elves: Vec<PathBuf> = opts.add.iter().map(|(h, _)| h.clone()).collect();
    match find_shim() {
        Some(lib) => {
            println!(
                "      CUDA shim {} -> {SHIM_DIR}/libcuda.so.1",
                lib.display()
            );
            entries.push(Entry::Dir {
                path: SHIM_DIR.into(),
                mode: 0o755,
            });
            entries.push(Entry::File {
                path: format!("{SHIM_DIR}/libcuda.so.1"),
                mode: 0o755,
                data: read(&lib)?,
            });
            entries.push(Entry::Symlink {
                path: format!("{SHIM_DIR}/libcuda.so"),
                target: "libcuda.so.1".into(),
            });
            elves.push(lib);
        }
        None => println!(
            "      no CUDA shim found (build guest-libcuda, or set VCUDA_SHIM): image without CUDA"
        ),
    }
    let mut libs: Vec<PathBuf> = Vec::new();
    for elf in &elves {
        let (found, missing) = runtime_libraries(elf);
        libs.extend(found);
        for name in missing {
            println!(
                "      warning: {} needs {name}, which is not found on this host (set \
                 LD_LIBRARY_PATH so that `ldd` finds it); the guest will lack it too",
                elf.display()
            );
        }
    }
    libs.sort();
    libs.dedup();
    entries.push(Entry::File {
        path: LIBRARY_PATH_FILE.into(),
        mode: 0o644,
        data: format!("{}\n", guest_library_path(&libs)).into_bytes(),
    });
    let mut dirs: Vec<String> = Vec::new();
    for lib in &libs {
        let guest = lib.to_string_lossy().into_owned();
        let mut d = String::new();
        for part in guest
            .trim_start_matches('/')
            .split('/')
            .rev()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            d.push('/');
            d.push_str(part);
            if !dirs.contains(&d) && !["/bin", "/lib", "/usr", "/usr/lib"].contains(&d.as_str()) {
                dirs.push(d.clone());
                entries.push(Entry::Dir {
                    path: d.clone(),
                    mode: 0o755,
                });
            }
        }
        // Copy the file the link resolves to, under the name the program asks for.
        let real = std::fs::canonicalize(lib).unwrap_or_else(|_| lib.clone());
        entries.push(Entry::File {
            path: guest,
            mode: 0o755,
            data: read(&real)?,
        });
    }
    if !libs.is_empty() {
        println!(
            "      {} runtime libraries for the shim and added programs",
            libs.len()
        );
    }
    for (name, path) in &load {
        entries.push(Entry::File {
            path: format!("/lib/modules/{name}.ko"),
            mode: 0o644,
            data: read(path)?,
        });
    }
    for (host, guest) in &opts.add {
        entries.push(Entry::File {
            path: guest.clone(),
            mode: 0o755,
            data: read(host)?,
        });
    }
    let mut initrd = Vec::new();
    cpio::write_archive(&mut initrd, &entries).map_err(|e| ImageError::io(&out_dir, e))?;

    step(6, &format!("writing {}", out_dir.display()));
    let kernel = out_dir.join("vmlinuz");
    let vmlinuz = root.join(format!("boot/vmlinuz-{abi}"));
    if !vmlinuz.exists() {
        return Err(ImageError::NoKernel(kernel_pkg));
    }
    let bzimage = read(&vmlinuz)?;
    write(&kernel, &bzimage)?;
    let elf = out_dir.join("vmlinux");
    match extract_vmlinux(&bzimage) {
        Some(data) => {
            write(&elf, &data)?;
            println!("      vmlinux (PVH entry, no in-guest decompression) and vmlinuz");
        }
        None => {
            let _ = std::fs::remove_file(&elf);
            println!("      vmlinuz only (cannot decompress the kernel payload here)");
        }
    }
    let initrd_path = out_dir.join("initrd.cpio");
    write(&initrd_path, &initrd)?;
    write(&out_dir.join("cmdline"), IMAGE_CMDLINE.as_bytes())?;
    let manifest = serde_json::json!({
        "kernel_abi": abi,
        "packages": versions.iter().map(|(p, v)| serde_json::json!({"name": p, "version": v})).collect::<Vec<_>>(),
        "build_packages": packages,
        "modules": load.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        "cmdline": IMAGE_CMDLINE,
        "initrd_bytes": initrd.len(),
    });
    write(
        &out_dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    Ok(Image {
        kernel: if out_dir.join("vmlinux").exists() {
            out_dir.join("vmlinux")
        } else {
            kernel
        },
        initrd: initrd_path,
        cmdline: IMAGE_CMDLINE.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_library_path_has_the_shim_and_every_non_system_directory() {
        let libs = [
            PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
            PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            PathBuf::from("/opt/cuda/lib/libcudart.so.13"),
            PathBuf::from("/opt/cuda/lib/libcublas.so.13"),
            PathBuf::from("/home/u/lib/libfoo.so"),
        ];
        assert_eq!(
            guest_library_path(&libs),
            "/usr/lib/vcuda:/opt/cuda/lib:/home/u/lib"
        );
    }

    #[test]
    fn reads_module_depends_and_config_values() {
        let ko = b"\x7fELF....license=GPL\0depends=virtio,virtio_ring\0vermagic=6.1\0";
        assert_eq!(module_depends(ko), vec!["virtio", "virtio_ring"]);
        assert!(module_depends(b"depends=\0").is_empty());
        let config = "CONFIG_VIRTIO_MMIO=m\n# CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is not set\n";
        assert_eq!(config_value(config, "CONFIG_VIRTIO_MMIO"), Some("m"));
        assert_eq!(
            config_value(config, "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES"),
            None
        );
    }

    #[test]
    fn parses_add_arguments() {
        assert_eq!(
            parse_add("./prog:/bin/prog").unwrap(),
            (PathBuf::from("./prog"), "/bin/prog".to_owned())
        );
        assert!(parse_add("prog").is_err());
        assert!(parse_add("prog:relative").is_err());
    }
}
