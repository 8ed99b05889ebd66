//! The unix-socket server: accepts clients and serves each on its own thread.
//!
//! Used in-process (tests, `vcuda exec`) through [`Server::spawn`] and as the daemon
//! `vcuda executor --listen <path>` through [`Server::run`].

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tracing::{debug, info, warn};

use crate::executor::Executor;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} exists and another executor is listening on it")]
    InUse { path: PathBuf },
    #[error("cannot start the accept thread: {0}")]
    Thread(std::io::Error),
}

/// A bound listening socket and the executor behind it.
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
    executor: Arc<Executor>,
}

impl Server {
    /// Binds `path`. A stale socket file (no listener) is replaced; a live one is an error.
    pub fn bind(path: &Path, executor: Arc<Executor>) -> Result<Self, ServerError> {
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(ServerError::InUse {
                    path: path.to_path_buf(),
                });
            }
            let _ = std::fs::remove_file(path);
        }
        let listener = UnixListener::bind(path).map_err(|source| ServerError::Bind {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
            executor,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts clients forever (the daemon).
    pub fn run(self) -> std::io::Result<()> {
        info!(path = %self.path.display(), backend = self.executor.backend_name(), "executor listening");
        let stop = AtomicBool::new(false);
        accept_loop(&self.listener, &self.executor, &stop);
        Ok(())
    }

    /// Accepts clients on a background thread until the handle is dropped.
    pub fn spawn(self) -> Result<ServerHandle, ServerError> {
        let stop = Arc::new(AtomicBool::new(false));
        let path = self.path.clone();
        let executor = Arc::clone(&self.executor);
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("vcuda-accept".into())
            .spawn(move || accept_loop(&self.listener, &self.executor, &thread_stop))
            .map_err(ServerError::Thread)?;
        Ok(ServerHandle {
            path,
            executor,
            stop,
            thread: Some(thread),
        })
    }
}

fn accept_loop(listener: &UnixListener, executor: &Arc<Executor>, stop: &AtomicBool) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match conn {
            Ok(stream) => {
                let exec = Arc::clone(executor);
                let spawned = std::thread::Builder::new()
                    .name("vcuda-session".into())
                    .spawn(move || {
                        if let Err(e) = exec.serve_stream(stream) {
                            warn!("connection ended: {e}");
                        }
                    });
                if let Err(e) = spawned {
                    warn!("cannot start a session thread: {e}");
                }
            }
            Err(e) => debug!("accept failed: {e}"),
        }
    }
}

/// A server running on a background thread; dropping it stops accepting and removes the socket.
pub struct ServerHandle {
    path: PathBuf,
    executor: Arc<Executor>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// The socket path clients connect to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The executor (for stats).
    pub fn executor(&self) -> &Arc<Executor> {
        &self.executor
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
