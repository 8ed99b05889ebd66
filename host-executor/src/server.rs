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
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("cannot start the accept thread: {0}")]
    Thread(std::io::Error),
}

/// Binds a unix socket at `path` that only its owner may connect to (mode 0600: a client gets
/// a session, so the socket is a capability). A stale socket (nobody listening) is replaced; a
/// live one, or anything that is not a socket, is an error and is left alone.
pub fn bind_socket(path: &Path) -> Result<UnixListener, ServerError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let bind_err = |source| ServerError::Bind {
        path: path.to_path_buf(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(ServerError::NotASocket {
                path: path.to_path_buf(),
            });
        }
        if UnixStream::connect(path).is_ok() {
            return Err(ServerError::InUse {
                path: path.to_path_buf(),
            });
        }
        std::fs::remove_file(path).map_err(bind_err)?;
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}

/// A bound listening socket and the executor behind it.
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
    executor: Arc<Executor>,
}

impl Server {
    /// Binds `path` ([`bind_socket`]).
    pub fn bind(path: &Path, executor: Arc<Executor>) -> Result<Self, ServerError> {
        let listener = bind_socket(path)?;
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn binds_owner_only_and_never_replaces_what_is_not_a_stale_socket() {
        let dir = std::env::temp_dir().join(format!("vcuda-bind-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A regular file at the path is left alone.
        let file = dir.join("not-a-socket");
        std::fs::write(&file, b"precious").unwrap();
        assert!(matches!(
            bind_socket(&file),
            Err(ServerError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read(&file).unwrap(), b"precious");
        // A fresh socket is the owner's only.
        let sock = dir.join("s.sock");
        let live = bind_socket(&sock).unwrap();
        let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A live one is refused; a stale one (its listener gone) is replaced.
        assert!(matches!(bind_socket(&sock), Err(ServerError::InUse { .. })));
        drop(live);
        let again = bind_socket(&sock);
        assert!(again.is_ok(), "{:?}", again.err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
