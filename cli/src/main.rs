//! `vcuda`: the user's entry point.
//!
//! Each subcommand lives in its own module so that its flags, help text and wiring are in one place.

mod conform_cmd;
mod demo_cmd;
mod exec_cmd;
mod executor_cmd;
mod image_cmd;
mod run_cmd;
mod size;
mod vhost_user_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// vcuda: CUDA for microVMs and containers, without GPU passthrough.
#[derive(Debug, Parser)]
#[command(name = "vcuda", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run CUDA programs through the shim, each judged by its own exit status (a conformance
    /// table, JSON and JUnit XML): `vcuda conform DIR`.
    Conform(conform_cmd::ConformArgs),
    /// Run CUDA kernels (nvcc-compiled, embedded) on the cpu backend and check the results.
    Demo(demo_cmd::DemoArgs),
    /// Run an unmodified CUDA program on a vcuda executor (no VM): `vcuda exec -- ./prog args`.
    Exec(exec_cmd::ExecArgs),
    /// Serve CUDA driver-API sessions over a unix socket (the out-of-process executor).
    Executor(executor_cmd::ExecutorArgs),
    /// Boot a microVM and run it until the guest exits.
    Run(run_cmd::RunArgs),
    /// Build and inspect guest images.
    Image(image_cmd::ImageArgs),
    /// Serve the virtio-cuda device to a vhost-user frontend (User-Mode Linux, QEMU, crosvm).
    VhostUser(vhost_user_cmd::VhostUserArgs),
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Conform(args) => conform_cmd::run(args),
        Command::Demo(args) => demo_cmd::run(args),
        Command::Exec(args) => exec_cmd::run(args),
        Command::Executor(args) => executor_cmd::run(args),
        Command::Run(args) => run_cmd::run(args),
        Command::Image(args) => image_cmd::run(args),
        Command::VhostUser(args) => vhost_user_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("vcuda: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr; `VCUDA_LOG` takes a `tracing_subscriber` filter (e.g. `VCUDA_LOG=debug`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VCUDA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
