//! `vcuda executor`: the out-of-process executor daemon.

use host_executor::cpu::CpuConfig;
use host_executor::select::{open_backend, BackendChoice};
use host_executor::{Executor, ExecutorConfig, Server};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::size::parse_size;

/// Arguments of `vcuda executor`.
#[derive(Debug, clap::Args)]
pub struct ExecutorArgs {
    /// Unix socket path to listen on (clients use it via `VCUDA_EXECUTOR` or `--executor`).
    #[arg(long, value_name = "PATH")]
    pub listen: PathBuf,
    /// Backend that runs the calls.
    #[arg(long, value_enum, default_value_t = BackendKind::Auto)]
    pub backend: BackendKind,
    /// Device-memory quota of each session (e.g. 512M, 4G).
    #[arg(long, default_value = "4G", value_parser = parse_size)]
    pub quota: u64,
    /// Sessions served at once; a client past it is refused at `cuInit`.
    #[arg(long, default_value_t = ExecutorConfig::default().max_sessions)]
    pub max_sessions: usize,
    #[command(flatten)]
    pub limits: CpuLimits,
}

/// Which backend executes the calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// The PTX interpreter: runs everywhere, no GPU needed.
    Cpu,
    /// A real NVIDIA GPU through the CUDA driver (libcuda.so).
    Cuda,
    /// cuda when a GPU driver is usable, otherwise cpu.
    Auto,
}

impl From<BackendKind> for BackendChoice {
    fn from(k: BackendKind) -> Self {
        match k {
            BackendKind::Cpu => BackendChoice::Cpu,
            BackendKind::Cuda => BackendChoice::Cuda,
            BackendKind::Auto => BackendChoice::Auto,
        }
    }
}

/// The cpu backend's limits on one launch (`vcuda executor`, `vcuda vhost-user`).
#[derive(Debug, clap::Args)]
pub struct CpuLimits {
    /// cpu backend: warp-instructions one launch may run before it fails with
    /// CUDA_ERROR_LAUNCH_TIMEOUT.
    #[arg(long, default_value_t = CpuConfig::default().instruction_budget)]
    pub instruction_budget: u64,
    /// cpu backend: wall-clock seconds one launch may run before it fails with
    /// CUDA_ERROR_LAUNCH_TIMEOUT (a watchdog, like a display GPU's); 0 turns it off.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds,
          default_value_t = CpuConfig::default().launch_time_limit.map_or(0.0, |d| d.as_secs_f64()))]
    pub launch_timeout: f64,
}

impl CpuLimits {
    /// The cpu backend's configuration with these limits.
    pub fn config(&self) -> CpuConfig {
        CpuConfig {
            instruction_budget: self.instruction_budget,
            launch_time_limit: (self.launch_timeout > 0.0)
                .then(|| std::time::Duration::from_secs_f64(self.launch_timeout)),
            ..CpuConfig::default()
        }
    }
}

/// Seconds as a non-negative, finite number that a `Duration` can hold.
fn parse_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    std::time::Duration::try_from_secs_f64(v).map_err(|e| format!("{s}: {e}"))?;
    Ok(v)
}

pub fn run(args: ExecutorArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let selected = open_backend(args.backend.into(), args.limits.config())?;
    if let Some(note) = &selected.note {
        eprintln!("vcuda executor: {note}");
    }
    let name = selected.backend.name();
    let executor = Executor::new(
        selected.backend,
        ExecutorConfig {
            session_quota: args.quota,
            max_sessions: args.max_sessions,
        },
    );
    let server = Server::bind(&args.listen, executor)?;
    eprintln!(
        "vcuda executor: serving {} (backend {name})",
        args.listen.display()
    );
    server.run()?;
    Ok(ExitCode::SUCCESS)
}
