//! The executor: a backend shared by many sessions, and the loop that serves one connection.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tracing::{debug, info, warn};
use virtio_cuda::protocol::{
    self as p, DecodeError, Reader, Request, RequestHeader, ResponseKind, Status, HEADER_LEN,
};

use virtio_cuda::service::FrameService;

use crate::data::{DataAccess, InlineOnly};
use crate::session::Backend;
use crate::session::{LiveToken, Session, SessionInit};
use crate::window::ShmData;
use virtio_cuda::shm::channel::{spin_from_env, MAX_DATA, MAX_RING};
use virtio_cuda::shm::fdpass::recv_exact_with_fds;
use virtio_cuda::shm::{Endpoint, Layout, Mapping, ShmError, Side};

/// Executor-wide settings.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Device-memory quota per session, bytes.
    pub session_quota: u64,
    /// Sessions open at once; a `Hello` past it is refused (`CUDA_ERROR_OUT_OF_MEMORY`).
    pub max_sessions: usize,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            session_quota: 4 << 30,
            max_sessions: 256,
        }
    }
}

/// Counters for monitoring and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecutorStats {
    /// Sessions currently open.
    pub live_sessions: usize,
    /// Sessions opened since start.
    pub total_sessions: u64,
    /// Device memory allocated across all live sessions.
    pub allocated_bytes: u64,
}

/// Serves sessions on one backend.
pub struct Executor {
    backend: Arc<dyn Backend>,
    config: ExecutorConfig,
    next_session: AtomicU64,
    live: Arc<AtomicUsize>,
    /// How long a connection's thread polls an idle shared-memory channel before it sleeps
    /// until the client rings (`VCUDA_SPIN_US`, else 50 µs; 0 on one CPU).
    spin: std::time::Duration,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("backend", &self.backend.name())
            .field("config", &self.config)
            .finish()
    }
}

/// Why a connection ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("unframeable input, closing: {0}")]
    Frame(#[from] DecodeError),
    #[error("first request was {0}, not Hello")]
    NoHello(&'static str),
    #[error("session could not be opened: {0}")]
    Open(Status),
    #[error("shared-memory channel: {0}")]
    Channel(#[from] ShmError),
}

impl Executor {
    pub fn new(backend: Arc<dyn Backend>, config: ExecutorConfig) -> Arc<Self> {
        Arc::new(Self {
            backend,
            config,
            next_session: AtomicU64::new(1),
            live: Arc::new(AtomicUsize::new(0)),
            spin: spin_from_env(),
        })
    }

    /// The backend's name.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    pub fn stats(&self) -> ExecutorStats {
        ExecutorStats {
            live_sessions: self.live.load(Ordering::SeqCst),
            total_sessions: self.next_session.load(Ordering::SeqCst) - 1,
            allocated_bytes: self.backend.allocated_bytes(),
        }
    }

    /// Opens a new session (what a `Hello` does); `cancel`, once set, ends the session's
    /// running work (its connection watches for the client hanging up).
    pub fn open_session(&self, cancel: Arc<AtomicBool>) -> Result<Session, Status> {
        if self.live.load(Ordering::SeqCst) >= self.config.max_sessions {
            warn!(
                max = self.config.max_sessions,
                "session refused: the executor's session limit is reached"
            );
            return Err(Status::ERROR_OUT_OF_MEMORY);
        }
        let id = self.next_session.fetch_add(1, Ordering::SeqCst);
        let session = self.backend.open_session(SessionInit {
            id,
            backend_name: self.backend.name(),
            quota: self.config.session_quota,
            live: LiveToken::new(Arc::clone(&self.live)),
            cancel,
        })?;
        info!(
            session = id,
            backend = self.backend.name(),
            "session opened"
        );
        Ok(session)
    }

    /// Handles one request frame of a connection, transport-independently: the unix server and
    /// the virtio device both call this. Response frames (device output, then the reply) are
    /// appended to `out`; fire-and-forget requests append nothing. `Err` means the connection
    /// must be closed (no `Hello` first); malformed bodies and unknown opcodes are answered with
    /// an error status and the session lives on.
    pub fn handle_frame(
        &self,
        conn: &mut Connection,
        header: &RequestHeader,
        body: &[u8],
        data: &dyn DataAccess,
        out: &mut Vec<u8>,
    ) -> Result<FrameOutcome, ConnectionError> {
        let decoded = Request::decode(header.opcode, body);
        let session = match conn.session.as_mut() {
            Some(s) => s,
            None => {
                // Only Hello may open a session.
                match &decoded {
                    Ok(Request::Hello(_)) => {}
                    Ok(other) => return Err(ConnectionError::NoHello(other.name())),
                    Err(_) => return Err(ConnectionError::NoHello("a malformed request")),
                }
                let cancel = Arc::clone(&conn.cancel);
                conn.session
                    .insert(self.open_session(cancel).map_err(ConnectionError::Open)?)
            }
        };
        let (status, reply_body, bye) = match decoded {
            Ok(req) => {
                let bye = matches!(req, Request::Goodbye(_));
                let o = session.handle(req, self.backend.as_ref(), data);
                (o.status, o.body, bye)
            }
            Err(DecodeError::UnknownOpcode(op)) => {
                let id = session.id();
                client_error(&mut conn.client_errors, || {
                    warn!(session = id, "unknown opcode {op:#06x}")
                });
                (Status::ERROR_NOT_SUPPORTED, Vec::new(), false)
            }
            Err(e) => {
                let (id, name) = (session.id(), p::opcode_name(header.opcode).unwrap_or("?"));
                client_error(&mut conn.client_errors, || {
                    warn!(session = id, "malformed {name} request: {e}")
                });
                (Status::ERROR_INVALID_VALUE, Vec::new(), false)
            }
        };
        if header.is_async() {
            session.latch(status);
            return Ok(FrameOutcome::Continue);
        }
        let output = session.take_output();
        for chunk in output.chunks(1 << 20) {
            p::encode_response(
                ResponseKind::Stdout,
                header.seq,
                Status::SUCCESS,
                &p::RawBody(chunk),
                out,
            );
        }
        p::encode_response(
            ResponseKind::Reply,
            header.seq,
            status,
            &p::RawBody(&reply_body),
            out,
        );
        Ok(if bye {
            conn.session = None;
            FrameOutcome::Close
        } else {
            FrameOutcome::Continue
        })
    }

    /// Serves one client on a connected stream until it says Goodbye or disconnects. Errors
    /// end only this connection; the session's resources are freed either way. Once the client
    /// attaches a shared-memory channel, frames move to it ([`Executor::serve_channel`]).
    pub fn serve_stream(&self, mut stream: UnixStream) -> Result<(), ConnectionError> {
        let mut conn = Connection::default();
        // A kernel running for a client that has gone away is cancelled, not finished.
        let _watch = HangupWatch::start(&stream, Arc::clone(&conn.cancel))?;
        // Until `Hello` a connection is nobody's: it gets a bounded time and tiny frames.
        stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        let mut out = Vec::with_capacity(4096);
        let mut body = Vec::new();
        let mut fds = Vec::new();
        loop {
            let mut hdr = [0u8; HEADER_LEN];
            match recv_exact_with_fds(&stream, &mut hdr, &mut fds) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    if conn.session.is_some() {
                        debug!("client disconnected without Goodbye");
                    }
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
            let header = RequestHeader::get(&mut Reader::new(&hdr))?;
            if !conn.is_open() && header.body_len as usize > MAX_HELLO_BODY {
                return Err(ConnectionError::NoHello("an oversized first frame"));
            }
            body.resize(header.body_len as usize, 0);
            recv_exact_with_fds(&stream, &mut body, &mut fds)?;
            out.clear();
            if header.opcode == <p::AttachChannel as p::Call>::OPCODE && conn.is_open() {
                // Transport-level: map the memfd that came with this frame.
                let attached = match (p::decode_body::<p::AttachChannel>(&body), fds.pop()) {
                    (Ok(req), Some(fd)) => self.attach_channel(&stream, &req, &fd),
                    _ => Err("AttachChannel without a well-formed body and one memfd".into()),
                };
                fds.clear();
                let status = match &attached {
                    Ok(_) => Status::SUCCESS,
                    Err(e) => {
                        warn!("cannot attach the client's shared-memory channel: {e}");
                        Status::ERROR_INVALID_VALUE
                    }
                };
                p::encode_response(
                    ResponseKind::Reply,
                    header.seq,
                    status,
                    &p::RawBody(&[]),
                    &mut out,
                );
                stream.write_all(&out)?;
                if let Ok(ep) = attached {
                    return self.serve_channel(conn, &ep);
                }
                continue;
            }
            // Descriptors are only meaningful with AttachChannel.
            fds.clear();
            let was_open = conn.is_open();
            let outcome = self.handle_frame(&mut conn, &header, &body, &InlineOnly, &mut out)?;
            if !was_open && conn.is_open() {
                stream.set_read_timeout(None)?;
            }
            if !out.is_empty() {
                stream.write_all(&out)?;
            }
            if outcome == FrameOutcome::Close {
                return Ok(());
            }
        }
    }

    fn attach_channel(
        &self,
        stream: &UnixStream,
        req: &p::AttachChannel,
        fd: &std::os::fd::OwnedFd,
    ) -> Result<Endpoint, String> {
        let layout = Layout::new(req.ring_bytes, req.data_bytes).map_err(|e| e.to_string())?;
        let max = (2 * MAX_RING + MAX_DATA) + 4096;
        let map = Mapping::map(fd, layout.total() as u64, max).map_err(|e| e.to_string())?;
        let bell = stream.try_clone().map_err(|e| e.to_string())?;
        Endpoint::new(map, layout, Side::Executor, bell, self.spin).map_err(|e| e.to_string())
    }

    /// Serves a connection's frames over its shared-memory channel: requests from the request
    /// ring, responses into the response ring, `done` published after each request so the
    /// client can reuse data slots. Ends when the client says Goodbye or its socket closes.
    pub fn serve_channel(
        &self,
        mut conn: Connection,
        ep: &Endpoint,
    ) -> Result<(), ConnectionError> {
        let data = ShmData::new(ep.data());
        let mut out = Vec::with_capacity(4096);
        let mut body = Vec::new();
        loop {
            let mut hdr = [0u8; HEADER_LEN];
            match ep.read_exact(&mut hdr) {
                Ok(()) => {}
                Err(ShmError::Closed) => {
                    debug!("client disconnected without Goodbye");
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
            let header = RequestHeader::get(&mut Reader::new(&hdr))?;
            body.resize(header.body_len as usize, 0);
            match ep.read_exact(&mut body) {
                Ok(()) => {}
                Err(ShmError::Closed) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            out.clear();
            let outcome = self.handle_frame(&mut conn, &header, &body, &data, &mut out)?;
            if !out.is_empty() {
                ep.write(&out)?;
            }
            ep.mark_done();
            ep.notify_peer()?;
            if outcome == FrameOutcome::Close {
                return Ok(());
            }
        }
    }
}

/// How long a new connection may take to send its `Hello`.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The largest first frame (a `Hello` is a few dozen bytes): an unauthenticated connection
/// cannot make the executor buffer more.
pub const MAX_HELLO_BODY: usize = 4096;

/// Watches a client socket for the peer hanging up while its connection thread is busy (a long
/// launch): sets `cancel`, which the backend checks while it runs the work. It polls only for
/// hang-up (`POLLRDHUP`), never for data, so it does not wake for the client's next request.
struct HangupWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HangupWatch {
    fn start(stream: &UnixStream, cancel: Arc<AtomicBool>) -> std::io::Result<Self> {
        use std::os::fd::{AsRawFd, OwnedFd};
        let fd: OwnedFd = stream.try_clone()?.into();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("vcuda-hangup".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    let mut p = libc::pollfd {
                        fd: fd.as_raw_fd(),
                        events: libc::POLLRDHUP,
                        revents: 0,
                    };
                    // SAFETY: one live pollfd for a descriptor this thread owns.
                    let n = unsafe { libc::poll(&mut p, 1, 100) };
                    if n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
                        cancel.store(true, Ordering::Relaxed);
                        return;
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for HangupWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Client errors (malformed or unknown requests) logged per connection; past this many they are
/// only counted, and the count is logged when the connection ends: a client cannot turn its
/// own bad frames into a flood of log lines.
const LOGGED_CLIENT_ERRORS: u32 = 8;

/// The state of one client connection: its session once `Hello` has opened it.
#[derive(Default)]
pub struct Connection {
    session: Option<Session>,
    client_errors: u32,
    /// Set when the client has hung up ([`HangupWatch`]): the session's running work ends.
    cancel: Arc<AtomicBool>,
}

impl Connection {
    /// True once `Hello` has opened a session.
    pub fn is_open(&self) -> bool {
        self.session.is_some()
    }
}

/// Counts a client error in `count` and logs it with `log`, unless the connection has already
/// had its share.
fn client_error(count: &mut u32, log: impl FnOnce()) {
    *count = count.saturating_add(1);
    if *count <= LOGGED_CLIENT_ERRORS {
        log();
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.client_errors > LOGGED_CLIENT_ERRORS {
            warn!(
                "a client connection ended after {} malformed or unknown requests ({} not logged)",
                self.client_errors,
                self.client_errors - LOGGED_CLIENT_ERRORS
            );
        }
    }
}

/// What the transport does after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameOutcome {
    Continue,
    /// The client said Goodbye: close the connection.
    Close,
}

impl FrameService for Executor {
    type Conn = Connection;

    fn connect(&self) -> Connection {
        Connection::default()
    }

    fn frame(
        &self,
        conn: &mut Connection,
        frame: &[u8],
        data: &dyn DataAccess,
        out: &mut Vec<u8>,
    ) -> Result<bool, String> {
        let mut r = Reader::new(frame);
        let header = RequestHeader::get(&mut r).map_err(|e| e.to_string())?;
        let body = r
            .take(header.body_len as usize)
            .map_err(|e| e.to_string())?;
        match self.handle_frame(conn, &header, body, data, out) {
            Ok(FrameOutcome::Continue) => Ok(false),
            Ok(FrameOutcome::Close) => Ok(true),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod log_limit_tests {
    use super::*;

    #[test]
    fn client_errors_are_logged_up_to_a_share_and_counted_after() {
        let (mut count, mut logged) = (0u32, 0u32);
        for _ in 0..100 {
            client_error(&mut count, || logged += 1);
        }
        assert_eq!((count, logged), (100, LOGGED_CLIENT_ERRORS));
    }
}
