//! `vcuda exec`: run an unmodified CUDA program on a vcuda executor, without a VM.
//!
//! Starts an executor in this process on a private socket (or uses `--executor`), puts a
//! directory holding `libcuda.so.1`/`libcuda.so` (links to the vcuda shim) first in the
//! program's `LD_LIBRARY_PATH`, sets `VCUDA_EXECUTOR`, runs the program and exits with its
//! exit status (128 + signal number when it was killed).

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use host_executor::cpu::CpuConfig;
use host_executor::select::open_backend;
use host_executor::{Executor, ExecutorConfig, Server};

use crate::executor_cmd::BackendKind;
use crate::size::parse_size;

/// Arguments of `vcuda exec`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example: vcuda exec --backend cpu -- ./saxpy 1024\n\
    VCUDA_LOG=debug traces every driver call of the program (stderr).")]
pub struct ExecArgs {
    /// Backend of the in-process executor (ignored with --executor).
    #[arg(long, value_enum, default_value_t = BackendKind::Auto)]
    pub backend: BackendKind,
    /// Use the executor listening on this unix socket instead of starting one.
    #[arg(long, value_name = "SOCKET")]
    pub executor: Option<PathBuf>,
    /// The shim (`libcuda.so` built from guest-libcuda); default: next to the vcuda binary.
    #[arg(long, env = "VCUDA_SHIM", value_name = "PATH")]
    pub shim: Option<PathBuf>,
    /// Device-memory quota of the program's session (in-process executor).
    #[arg(long, default_value = "4G", value_parser = parse_size)]
    pub quota: u64,
    /// The program and its arguments.
    #[arg(required = true, last = true, value_name = "PROG")]
    pub command: Vec<OsString>,
}

/// Why `vcuda exec` could not run the program.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot find the vcuda shim (libcuda.so) next to {0}; build it with `cargo build -p guest-libcuda` or pass --shim")]
    NoShim(PathBuf),
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {prog}: {source}")]
    Spawn {
        prog: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExecError + '_ {
    move |source| ExecError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The shim library: `--shim`, else `libcuda.so` beside this executable.
fn find_shim(explicit: Option<PathBuf>) -> Result<PathBuf, ExecError> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p)
        } else {
            Err(ExecError::NoShim(p))
        };
    }
    let exe = std::env::current_exe().map_err(io(Path::new("/proc/self/exe")))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    for cand in [dir.join("libcuda.so"), dir.join("../libcuda.so")] {
        if cand.is_file() {
            return Ok(cand);
        }
    }
    Err(ExecError::NoShim(exe))
}

/// A private directory removed on drop.
struct RunDir(PathBuf);

impl RunDir {
    fn new() -> Result<Self, ExecError> {
        let base = std::env::temp_dir();
        for i in 0..1000u32 {
            let p = base.join(format!("vcuda-exec-{}-{i}", std::process::id()));
            match std::fs::create_dir(&p) {
                Ok(()) => return Ok(Self(p)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io(&p)(e)),
            }
        }
        Err(io(&base)(std::io::ErrorKind::AlreadyExists.into()))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(args: ExecArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let shim = std::fs::canonicalize(find_shim(args.shim)?)?;
    let dir = RunDir::new()?;
    let lib_dir = dir.0.join("lib");
    std::fs::create_dir(&lib_dir).map_err(io(&lib_dir))?;
    for name in ["libcuda.so.1", "libcuda.so"] {
        let link = lib_dir.join(name);
        std::os::unix::fs::symlink(&shim, &link).map_err(io(&link))?;
    }

    // Keep the in-process server alive until the program has exited.
    let (_server, socket) = match args.executor {
        Some(sock) => (None, sock),
        None => {
            let selected = open_backend(args.backend.into(), CpuConfig::single_tenant())?;
            if let Some(note) = &selected.note {
                // `auto` says which backend it picked (and why, when it fell back to cpu).
                eprintln!("vcuda exec: {note}");
            }
            let executor: Arc<Executor> = Executor::new(
                selected.backend,
                ExecutorConfig {
                    session_quota: args.quota,
                    ..Default::default()
                },
            );
            let sock = dir.0.join("executor.sock");
            let handle = Server::bind(&sock, executor)?.spawn()?;
            (Some(handle), sock)
        }
    };

    let mut ld_path = OsString::from(&lib_dir);
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
        if !old.is_empty() {
            ld_path.push(":");
            ld_path.push(old);
        }
    }
    let prog = &args.command[0];
    let status = std::process::Command::new(prog)
        .args(&args.command[1..])
        .env("LD_LIBRARY_PATH", ld_path)
        .env("VCUDA_EXECUTOR", &socket)
        .status()
        .map_err(|source| ExecError::Spawn {
            prog: prog.to_string_lossy().into_owned(),
            source,
        })?;
    let code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    };
    Ok(ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1)))
}
