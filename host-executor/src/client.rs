//! Starting an executor in-process and connecting clients to it.
//!
//! ```no_run
//! use host_executor::client::InProcess;
//! let exec = InProcess::start_cpu(Default::default()).unwrap();
//! let client = exec.connect("example").unwrap();
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use virtio_cuda::client::{Client, ClientError};

use crate::cpu::{CpuBackend, CpuConfig};
use crate::executor::{Executor, ExecutorConfig, ExecutorStats};
use crate::server::{Server, ServerError, ServerHandle};

/// Settings for an in-process executor.
#[derive(Debug, Clone, Default)]
pub struct InProcessConfig {
    pub executor: ExecutorConfig,
    pub cpu: CpuConfig,
}

/// An executor serving a private unix socket from background threads; stopped on drop.
pub struct InProcess {
    server: ServerHandle,
    _dir: TempDir,
}

impl InProcess {
    /// Starts an executor with the cpu backend on a fresh socket in a private directory.
    pub fn start_cpu(config: InProcessConfig) -> Result<Self, ServerError> {
        let backend = Arc::new(CpuBackend::new(config.cpu));
        let executor = Executor::new(backend, config.executor);
        Self::start(executor)
    }

    /// Starts serving `executor` on a fresh socket.
    pub fn start(executor: Arc<Executor>) -> Result<Self, ServerError> {
        let dir = TempDir::new().map_err(|source| ServerError::Bind {
            path: std::env::temp_dir(),
            source,
        })?;
        let path = dir.path().join("executor.sock");
        let server = Server::bind(&path, executor)?.spawn()?;
        Ok(Self { server, _dir: dir })
    }

    /// The socket clients connect to (`VCUDA_EXECUTOR`).
    pub fn socket(&self) -> &Path {
        self.server.path()
    }

    /// Opens a new client session.
    pub fn connect(&self, name: &str) -> Result<Client, ClientError> {
        Client::connect_unix(self.socket(), name)
    }

    pub fn stats(&self) -> ExecutorStats {
        self.server.executor().stats()
    }
}

/// A private temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<Self> {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "vcuda-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
