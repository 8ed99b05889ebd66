//! The VM configuration: what `vcuda run` flags and `--config vm.json` describe.
//!
//! ```json
//! { "kernel": "guest.elf", "initrd": null, "mem": "1G", "vcpus": 2,
//!   "cmdline": null, "timeout_secs": 30, "boot_timer": false, "serial_out": null,
//!   "devices": ["echo"], "guest_args": ["hello"] }
//! ```
//! Only `kernel` is required; `mem` takes a byte count or a size string (`512M`, `4G`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::arch::x86_64::layout::{MAX_MEM, MIN_MEM, VIRTIO_IRQ_FIRST, VIRTIO_IRQ_LAST};
use crate::arch::x86_64::mptable::MAX_CPUS;

/// Default guest RAM.
pub const DEFAULT_MEM: u64 = 512 << 20;
/// Kernel command line used when none is given.
pub const DEFAULT_CMDLINE: &str =
    "console=ttyS0 reboot=k panic=1 pci=off nomodules i8042.noaux i8042.nomux i8042.dumbkbd";

/// Why a configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("guest RAM must be at least {} MiB (got {} bytes)", MIN_MEM >> 20, .0)]
    MemTooSmall(u64),
    #[error("guest RAM of {} bytes is too big (at most {} GiB)", .0, MAX_MEM >> 30)]
    MemTooBig(u64),
    #[error("guest RAM must be a multiple of 4 KiB (got {0} bytes)")]
    MemUnaligned(u64),
    #[error("--vcpus must be between 1 and {MAX_CPUS} (got {0})")]
    Vcpus(u8),
    #[error("--timeout must be a positive number of seconds (got {0})")]
    Timeout(f64),
    #[error("too many virtio devices ({}; at most {})", .0, VIRTIO_IRQ_LAST - VIRTIO_IRQ_FIRST + 1)]
    TooManyDevices(usize),
    #[error("no kernel given: pass --kernel PATH or \"kernel\" in --config")]
    NoKernel,
    #[error("--display: {0}")]
    Display(String),
}

/// A virtio device to attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    /// The echo test device (`devices::virtio::echo`).
    Echo,
    /// virtio-cuda (device id 0xC0DA): CUDA for the guest, served by a host executor
    /// (in-process, or `executor` for an out-of-process one).
    Cuda,
    /// virtio-gpu (device id 16) with the `display` backend.
    Gpu,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    #[serde(default)]
    pub kernel: PathBuf,
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    #[serde(default = "default_mem", deserialize_with = "de_size")]
    pub mem: u64,
    #[serde(default = "default_vcpus")]
    pub vcpus: u8,
    /// Replaces [`DEFAULT_CMDLINE`]; device announcements are always appended.
    #[serde(default)]
    pub cmdline: Option<String>,
    #[serde(default)]
    pub timeout_secs: Option<f64>,
    #[serde(default)]
    pub boot_timer: bool,
    /// Serial output file; stdout when absent.
    #[serde(default)]
    pub serial_out: Option<PathBuf>,
    #[serde(default)]
    pub devices: Vec<DeviceKind>,
    /// Passed after `--` on the kernel command line (Linux hands them to init).
    #[serde(default)]
    pub guest_args: Vec<String>,
    /// virtio-cuda: the socket of an out-of-process executor (`vcuda executor --listen`); an
    /// in-process one (backend auto) when absent.
    #[serde(default)]
    pub executor: Option<PathBuf>,
    /// virtio-gpu display: `none`, `png:<dir>`, `png-last:<dir>`, `window`.
    #[serde(default)]
    pub display: Option<String>,
}

fn default_mem() -> u64 {
    DEFAULT_MEM
}

fn default_vcpus() -> u8 {
    1
}

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            kernel: PathBuf::new(),
            initrd: None,
            mem: DEFAULT_MEM,
            vcpus: 1,
            cmdline: None,
            timeout_secs: None,
            boot_timer: false,
            serial_out: None,
            devices: Vec::new(),
            guest_args: Vec::new(),
            executor: None,
            display: None,
        }
    }
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Bytes(n) => Ok(n),
        Size::Text(s) => parse_size(&s).map_err(serde::de::Error::custom),
    }
}

/// Parses a byte count with an optional binary suffix (K, M, G, T; `iB`/`B` optional).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 10),
        Some('M') => (&t[..t.len() - 1], 20),
        Some('G') => (&t[..t.len() - 1], 30),
        Some('T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a size (examples: 4096, 512M, 4G)"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{s}` is too large"))
}

impl VmConfig {
    /// Reads a JSON config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Checks every limit; call before building the VM.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.kernel.as_os_str().is_empty() {
            return Err(ConfigError::NoKernel);
        }
        if self.mem < MIN_MEM {
            return Err(ConfigError::MemTooSmall(self.mem));
        }
        if self.mem > MAX_MEM {
            return Err(ConfigError::MemTooBig(self.mem));
        }
        if self.mem % 4096 != 0 {
            return Err(ConfigError::MemUnaligned(self.mem));
        }
        if self.vcpus == 0 || self.vcpus > MAX_CPUS {
            return Err(ConfigError::Vcpus(self.vcpus));
        }
        if let Some(t) = self.timeout_secs {
            if !(t.is_finite() && t > 0.0) {
                return Err(ConfigError::Timeout(t));
            }
        }
        let max_devices = (VIRTIO_IRQ_LAST - VIRTIO_IRQ_FIRST + 1) as usize;
        if self.devices.len() > max_devices {
            return Err(ConfigError::TooManyDevices(self.devices.len()));
        }
        self.display_spec()?;
        Ok(())
    }

    /// The parsed virtio-gpu display (`none` when unset).
    pub fn display_spec(&self) -> Result<virtio_gpu::DisplaySpec, ConfigError> {
        match &self.display {
            None => Ok(virtio_gpu::DisplaySpec::None),
            Some(s) => s.parse().map_err(|e: virtio_gpu::display::DisplayError| {
                ConfigError::Display(e.to_string())
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_json_with_size_strings() {
        let c: VmConfig = serde_json::from_str(
            r#"{"kernel":"k","mem":"1G","vcpus":2,"devices":["echo"],"guest_args":["a"]}"#,
        )
        .unwrap();
        assert_eq!(c.mem, 1 << 30);
        assert_eq!(c.devices, vec![DeviceKind::Echo]);
        c.validate().unwrap();
        let c: VmConfig = serde_json::from_str(r#"{"kernel":"k","mem":67108864}"#).unwrap();
        assert_eq!(c.mem, 64 << 20);
        assert!(serde_json::from_str::<VmConfig>(r#"{"kernel":"k","bogus":1}"#).is_err());
    }

    #[test]
    fn rejects_absurd_values() {
        let ok = VmConfig {
            kernel: "k".into(),
            ..Default::default()
        };
        ok.validate().unwrap();
        let bad = |f: fn(&mut VmConfig)| {
            let mut c = ok.clone();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert!(matches!(bad(|c| c.mem = 0), ConfigError::MemTooSmall(0)));
        assert!(matches!(
            bad(|c| c.mem = 1 << 50),
            ConfigError::MemTooBig(_)
        ));
        assert!(matches!(
            bad(|c| c.mem = (64 << 20) + 1),
            ConfigError::MemUnaligned(_)
        ));
        assert!(matches!(bad(|c| c.vcpus = 0), ConfigError::Vcpus(0)));
        assert!(matches!(
            bad(|c| c.timeout_secs = Some(-1.0)),
            ConfigError::Timeout(_)
        ));
        assert!(matches!(
            bad(|c| c.kernel = PathBuf::new()),
            ConfigError::NoKernel
        ));
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
