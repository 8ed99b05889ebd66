//! `vcuda vhost-user`: the virtio-cuda device as a vhost-user backend, for frontends other than
//! our VMM (User-Mode Linux's `virtio_uml`, QEMU, crosvm, Cloud Hypervisor).

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use host_executor::cpu::CpuConfig;
use host_executor::select::{open_backend, BackendChoice};
use host_executor::{Executor, ExecutorConfig};
use virtio_cuda::vhost_user::{RemoteExecutor, VhostUserBackend};

use crate::executor_cmd::BackendKind;
use crate::size::parse_size;

/// Arguments of `vcuda vhost-user`.
///
/// Example with User-Mode Linux:
///   vcuda vhost-user --socket /tmp/vcuda.sock &
///   linux.uml … virtio_uml.device=/tmp/vcuda.sock:49370
/// (49370 = 0xC0DA, the virtio-cuda device id). Each frontend (VM) that connects gets its own
/// device; its disconnect closes that guest's sessions.
#[derive(Debug, clap::Args)]
pub struct VhostUserArgs {
    /// Unix socket to listen on for the vhost-user frontend (removed first if it exists).
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// Forward sessions to a running `vcuda executor --listen SOCK` instead of executing them
    /// in this process (a GPU driver crash then cannot take the device down).
    #[arg(long, value_name = "SOCK")]
    pub executor: Option<PathBuf>,
    /// Backend of the in-process executor.
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    pub backend: BackendKind,
    /// Microseconds the queue worker keeps polling an idle ring before it sleeps and waits for
    /// the guest's kick (0: never poll).
    #[arg(long, default_value_t = virtio_cuda::vhost_user::POLL_WINDOW.as_micros() as u64)]
    pub poll_us: u64,
    /// Device-memory quota of each guest session (e.g. 512M, 4G).
    #[arg(long, default_value = "4G", value_parser = parse_size)]
    pub quota: u64,
}

pub fn run(args: VhostUserArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if let Some(exec) = &args.executor {
        let listener = listen(&args.socket)?;
        eprintln!(
            "vcuda vhost-user: serving {} (device id 0xC0DA, executor {})",
            args.socket.display(),
            exec.display()
        );
        VhostUserBackend::new(RemoteExecutor::new(exec))
            .with_poll_window(Duration::from_micros(args.poll_us))
            .serve(&listener)?;
        return Ok(ExitCode::SUCCESS);
    }
    let selected = open_backend(BackendChoice::from(args.backend), CpuConfig::default())?;
    if let Some(note) = &selected.note {
        eprintln!("vcuda vhost-user: {note}");
    }
    let name = selected.backend.name();
    let executor = Executor::new(
        selected.backend,
        ExecutorConfig {
            session_quota: args.quota,
        },
    );
    let listener = listen(&args.socket)?;
    eprintln!(
        "vcuda vhost-user: serving {} (device id 0xC0DA, backend {name})",
        args.socket.display()
    );
    VhostUserBackend::new(executor)
        .with_poll_window(Duration::from_micros(args.poll_us))
        .serve(&listener)?;
    Ok(ExitCode::SUCCESS)
}

fn listen(path: &std::path::Path) -> Result<UnixListener, String> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path).map_err(|e| format!("cannot listen on {}: {e}", path.display()))
}
