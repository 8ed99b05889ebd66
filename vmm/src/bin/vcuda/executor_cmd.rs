//! `vcuda executor`: the out-of-process executor daemon.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `vcuda executor`.
#[derive(Debug, clap::Args)]
pub struct ExecutorArgs {
    /// Unix socket path to listen on.
    #[arg(long)]
    pub listen: PathBuf,
}

pub fn run(args: ExecutorArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    Err(format!(
        "executor not built yet (would listen on {})",
        args.listen.display()
    )
    .into())
}
