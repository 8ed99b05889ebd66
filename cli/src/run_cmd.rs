//! `vcuda run`: boot a microVM and run it until the guest exits.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use vmm::config::{DeviceKind, VmConfig};
use vmm::VmExit;

use crate::size::parse_size;

/// Boot a microVM (x86_64 KVM) from a kernel image and run it until the guest exits.
///
/// The exit status is the guest's: the value it wrote to the debug-exit port (0xf4), 0 for a
/// reboot/reset (i8042) or power-off, 124 for --timeout, 125 for a triple fault, 126 when a vCPU
/// failed (e.g. KVM could not emulate an instruction), 1 when the VM could not start; with
/// --image, 123 when the guest reset before its /init reported a status (a kernel panic).
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kernel: a bzImage, a vmlinux ELF, or an ELF with a PVH entry note.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Boot a built guest image (`vcuda image build`): its kernel, initramfs and command line.
    /// The guest program and its arguments go after `--`.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["kernel", "initrd"])]
    image: Option<String>,
    /// Initial ramdisk loaded for the kernel.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Guest RAM (e.g. 512M, 1G, 64G); mapped lazily, so large sizes cost nothing up front.
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    mem: Option<u64>,
    /// Number of vCPUs (1-32).
    #[arg(long)]
    vcpus: Option<u8>,
    /// Kernel command line (replaces the default `console=ttyS0 reboot=k panic=1 ...`);
    /// virtio-mmio device announcements are appended.
    #[arg(long)]
    cmdline: Option<String>,
    /// Stop the guest after this many seconds (exit status 124).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Print the time from VMM start to guest entry and to the guest's boot-timer write.
    #[arg(long)]
    boot_timer: bool,
    /// Write the guest's serial console to this file instead of stdout.
    #[arg(long, value_name = "PATH")]
    serial_out: Option<PathBuf>,
    /// Attach a virtio-mmio device (repeatable).
    #[arg(long = "device", value_enum, value_name = "KIND")]
    devices: Vec<DeviceKind>,
    /// virtio-cuda: use a running executor (`vcuda executor --listen PATH`) instead of an
    /// in-process one. Implies `--device cuda`.
    #[arg(long, value_name = "PATH")]
    executor: Option<PathBuf>,
    /// Attach a virtio-gpu and show its scanout: none, png:<dir> (every frame), png-last:<dir>
    /// (last frame at exit), window (needs the `window` feature). Implies `--device gpu`.
    #[arg(long, value_name = "SPEC")]
    display: Option<String>,
    /// JSON VM configuration (see docs/VMM.md); flags given here override its values.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Arguments for the guest, after `--` on the kernel command line.
    #[arg(last = true)]
    guest_args: Vec<String>,
}

impl RunArgs {
    fn into_config(self) -> Result<VmConfig, Box<dyn Error>> {
        let mut c = match &self.config {
            Some(path) => VmConfig::from_file(path)?,
            None => VmConfig::default(),
        };
        if let Some(name) = &self.image {
            let img = vmm::image::find(name)?;
            c.kernel = img.kernel;
            c.initrd = Some(img.initrd);
            c.cmdline = Some(img.cmdline);
        }
        if let Some(k) = self.kernel {
            c.kernel = k;
        }
        if self.initrd.is_some() {
            c.initrd = self.initrd;
        }
        if let Some(m) = self.mem {
            c.mem = m;
        }
        if let Some(v) = self.vcpus {
            c.vcpus = v;
        }
        if self.cmdline.is_some() {
            c.cmdline = self.cmdline;
        }
        if self.timeout.is_some() {
            c.timeout_secs = self.timeout;
        }
        c.boot_timer |= self.boot_timer;
        if self.serial_out.is_some() {
            c.serial_out = self.serial_out;
        }
        c.devices.extend(self.devices);
        if self.executor.is_some() {
            c.executor = self.executor;
        }
        if self.display.is_some() {
            c.display = self.display;
        }
        // A guest image carries the CUDA shim and driver: give it the device. So does naming an
        // executor; a display needs the GPU.
        let wants_cuda = self.image.is_some() || c.executor.is_some();
        if wants_cuda && !c.devices.contains(&DeviceKind::Cuda) {
            c.devices.push(DeviceKind::Cuda);
        }
        if c.display.is_some() && !c.devices.contains(&DeviceKind::Gpu) {
            c.devices.push(DeviceKind::Gpu);
        }
        c.guest_args.extend(self.guest_args);
        Ok(c)
    }
}

/// Exit status of `vcuda run --image` when the guest ended without reporting its program's.
const NO_STATUS: u8 = 123;

pub fn run(args: RunArgs) -> Result<ExitCode, Box<dyn Error>> {
    let start = Instant::now();
    let image = args.image.clone();
    let config = args.into_config()?;
    let report = vmm::run(&config, start)?;
    if config.boot_timer {
        let ms = |d: std::time::Duration| format!("{:.3} ms", d.as_secs_f64() * 1e3);
        if let Some(d) = report.guest_entry {
            eprintln!(
                "vcuda: boot-timer: guest entry {} after VMM start ({} in KVM memory-slot setup)",
                ms(d),
                ms(report.memory_slots)
            );
        }
        // The write itself was reported by the boot-timer device when it happened.
        if report.boot_timer.is_none() {
            eprintln!("vcuda: boot-timer: the guest never wrote the boot timer");
        }
    }
    match &report.exit {
        // An image's /init always reports its program's status before it resets; a reset
        // without one means the guest never got that far.
        VmExit::Reset | VmExit::PowerOff if image.is_some() => {
            eprintln!(
                "vcuda: error: the guest {} before its /init reported a status: the kernel \
                 panicked or /init could not run (see the console above)",
                if report.exit == VmExit::Reset {
                    "reset"
                } else {
                    "powered off"
                }
            );
            return Ok(ExitCode::from(NO_STATUS));
        }
        VmExit::GuestStatus(_) | VmExit::Reset | VmExit::PowerOff => {
            tracing::info!("{}", report.exit)
        }
        other => eprintln!("vcuda: {other}"),
    }
    Ok(ExitCode::from(report.exit.exit_code()))
}
