//! `vcuda vhost-user`: the virtio-cuda device (default) or the virtio-gpu device
//! (`--device gpu`) as a vhost-user backend, for frontends other than our VMM (User-Mode
//! Linux's `virtio_uml`, QEMU, crosvm, Cloud Hypervisor).

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use host_executor::select::{open_backend, BackendChoice};
use host_executor::{Executor, ExecutorConfig};
use virtio_common::vhost_user::VhostUserBackend;
use virtio_cuda::service::RemoteExecutor;
use virtio_gpu::device::GpuConfig;
use virtio_gpu::display::DisplaySpec;
use virtio_gpu::VirtioGpu;

use crate::executor_cmd::BackendKind;
use crate::size::parse_size;

/// Arguments of `vcuda vhost-user`.
///
/// Example with User-Mode Linux:
///   vcuda vhost-user --socket /tmp/vcuda.sock &
///   linux.uml … virtio_uml.device=/tmp/vcuda.sock:49370
/// (49370 = 0xC0DA, the virtio-cuda device id). Each frontend (VM) that connects gets its own
/// device; its disconnect closes that guest's sessions.
///
/// The GPU with QEMU (docs/GPU.md):
///   vcuda vhost-user --device gpu --socket /tmp/gpu.sock --display png:/tmp/frames &
///   qemu-system-x86_64 … -object memory-backend-memfd,id=mem,size=256M,share=on
///     -machine memory-backend=mem -chardev socket,id=gpu,path=/tmp/gpu.sock
///     -device vhost-user-gpu-pci,chardev=gpu
#[derive(Debug, clap::Args)]
pub struct VhostUserArgs {
    /// Unix socket to listen on for the vhost-user frontend (removed first if it exists).
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// The device to serve: cuda (virtio-cuda, id 0xC0DA) or gpu (virtio-gpu, id 16).
    #[arg(long, value_enum, default_value_t = VhostDevice::Cuda)]
    pub device: VhostDevice,
    /// GPU only: where flushed frames go besides the frontend's own display: none,
    /// png:<dir> (every frame), png-last:<dir> (the last frame at exit), window.
    #[arg(long, default_value = "none", value_parser = parse_display)]
    pub display: DisplaySpec,
    /// GPU only: the scanout size reported to the guest (GET_DISPLAY_INFO and EDID).
    #[arg(long, default_value = "1280x800", value_parser = parse_wxh)]
    pub gpu_size: (u32, u32),
    /// Forward sessions to a running `vcuda executor --listen SOCK` instead of executing them
    /// in this process (a GPU driver crash then cannot take the device down).
    #[arg(long, value_name = "SOCK")]
    pub executor: Option<PathBuf>,
    /// Backend of the in-process executor.
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    pub backend: BackendKind,
    /// Microseconds the queue worker keeps polling an idle ring before it sleeps and waits for
    /// the guest's kick (0: never poll).
    #[arg(long, default_value_t = virtio_common::vhost_user::POLL_WINDOW.as_micros() as u64)]
    pub poll_us: u64,
    /// Device-memory quota of each guest session (e.g. 512M, 4G).
    #[arg(long, default_value = "4G", value_parser = parse_size)]
    pub quota: u64,
    #[command(flatten)]
    pub limits: crate::executor_cmd::CpuLimits,
}

/// `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VhostDevice {
    Cuda,
    Gpu,
}

fn parse_display(s: &str) -> Result<DisplaySpec, String> {
    s.parse()
        .map_err(|e: virtio_gpu::display::DisplayError| e.to_string())
}

fn parse_wxh(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("expected WIDTHxHEIGHT (e.g. 1280x800), got {s:?}");
    let (w, h) = s.split_once('x').ok_or_else(bad)?;
    let (w, h) = (
        w.parse::<u32>().map_err(|_| bad())?,
        h.parse::<u32>().map_err(|_| bad())?,
    );
    if !(16..=8192).contains(&w) || !(16..=8192).contains(&h) {
        return Err(format!("scanout size {w}x{h} outside 16..=8192"));
    }
    Ok((w, h))
}

pub fn run(args: VhostUserArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if args.device == VhostDevice::Gpu {
        return run_gpu(args);
    }
    if args.display != DisplaySpec::None {
        return Err("--display needs --device gpu".into());
    }
    if let Some(exec) = &args.executor {
        let listener = listen(&args.socket)?;
        eprintln!(
            "vcuda vhost-user: serving {} (device id 0xC0DA, executor {})",
            args.socket.display(),
            exec.display()
        );
        virtio_cuda::vhost_user::backend(RemoteExecutor::new(exec))
            .with_poll_window(Duration::from_micros(args.poll_us))
            .serve(&listener)?;
        return Ok(ExitCode::SUCCESS);
    }
    let selected = open_backend(BackendChoice::from(args.backend), args.limits.config())?;
    if let Some(note) = &selected.note {
        eprintln!("vcuda vhost-user: {note}");
    }
    let name = selected.backend.name();
    let executor = Executor::new(
        selected.backend,
        ExecutorConfig {
            session_quota: args.quota,
            ..Default::default()
        },
    );
    let listener = listen(&args.socket)?;
    eprintln!(
        "vcuda vhost-user: serving {} (device id 0xC0DA, backend {name})",
        args.socket.display()
    );
    virtio_cuda::vhost_user::backend(executor)
        .with_poll_window(Duration::from_micros(args.poll_us))
        .serve(&listener)?;
    Ok(ExitCode::SUCCESS)
}

fn run_gpu(args: VhostUserArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if args.executor.is_some() {
        return Err("--executor is for --device cuda".into());
    }
    let (w, h) = args.gpu_size;
    let (config, display) = (GpuConfig::with_size(w, h), args.display.clone());
    // Fail now, not at the first connection, if the display cannot be created.
    drop(VirtioGpu::new(config.clone(), display.clone())?);
    let listener = listen(&args.socket)?;
    eprintln!(
        "vcuda vhost-user: serving {} (virtio-gpu, device id 16, {w}x{h}, display {:?})",
        args.socket.display(),
        args.display
    );
    VhostUserBackend::with_factory(move || VirtioGpu::new(config.clone(), display.clone()))
        .with_poll_window(Duration::from_micros(args.poll_us))
        .serve(&listener)?;
    Ok(ExitCode::SUCCESS)
}

fn listen(path: &std::path::Path) -> Result<UnixListener, String> {
    host_executor::server::bind_socket(path).map_err(|e| e.to_string())
}
