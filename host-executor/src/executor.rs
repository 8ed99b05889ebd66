//! The executor: a backend shared by many sessions, and the loop that serves one connection.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tracing::{debug, info, warn};
use virtio_cuda::protocol::{
    self as p, DecodeError, Reader, Request, RequestHeader, ResponseKind, Status,
    HEADER_LEN,
};

use crate::backend::Backend;
use crate::data::InlineOnly;
use crate::session::Session;

/// Executor-wide settings.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Device-memory quota per session, bytes.
    pub session_quota: u64,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            session_quota: 4 << 30,
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
}

impl Executor {
    pub fn new(backend: Arc<dyn Backend>, config: ExecutorConfig) -> Arc<Self> {
        Arc::new(Self {
            backend,
            config,
            next_session: AtomicU64::new(1),
            live: Arc::new(AtomicUsize::new(0)),
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

    /// Opens a new session (what a `Hello` does).
    pub fn open_session(&self) -> Result<Session, Status> {
        let id = self.next_session.fetch_add(1, Ordering::SeqCst);
        let be = self.backend.open_session(id, self.config.session_quota)?;
        info!(session = id, backend = self.backend.name(), "session opened");
        Ok(Session::new(
            id,
            self.backend.name(),
            self.config.session_quota,
            be,
            LiveToken::new(Arc::clone(&self.live)),
        ))
    }

    /// Serves one client on a connected stream until it says Goodbye or disconnects. Errors
    /// end only this connection; the session's resources are freed either way.
    pub fn serve_stream(self: &Arc<Self>, mut stream: UnixStream) -> Result<(), ConnectionError> {
        let mut guard: Option<Session> = None;
        let mut out = Vec::with_capacity(4096);
        let mut body = Vec::new();
        loop {
            let mut hdr = [0u8; HEADER_LEN];
            match stream.read_exact(&mut hdr) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    if guard.is_some() {
                        debug!("client disconnected without Goodbye");
                    }
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
            let header = RequestHeader::get(&mut Reader::new(&hdr))?;
            body.resize(header.body_len as usize, 0);
            stream.read_exact(&mut body)?;

            let decoded = Request::decode(header.opcode, &body);
            let Some(session) = guard.as_mut() else {
                // Only Hello may open a session.
                match decoded {
                    Ok(Request::Hello(_)) => {
                        let g = self.open_session().map_err(ConnectionError::Open)?;
                        guard = Some(g);
                    }
                    Ok(other) => return Err(ConnectionError::NoHello(other.name())),
                    Err(e) => return Err(e.into()),
                }
                let Some(session) = guard.as_mut() else {
                    return Err(ConnectionError::Open(Status::ERROR_UNKNOWN));
                };
                let o = session.handle(
                    Request::Hello(p::Hello {
                        version: 1,
                        pid: 0,
                        client: String::new(),
                    }),
                    self.backend.as_ref(),
                    &InlineOnly,
                );
                out.clear();
                write_reply(&mut out, header.seq, o.status, &o.body);
                stream.write_all(&out)?;
                continue;
            };
            let (status, reply_body, bye) = match decoded {
                Ok(req) => {
                    let bye = matches!(req, Request::Goodbye(_));
                    let o = session.handle(req, self.backend.as_ref(), &InlineOnly);
                    (o.status, o.body, bye)
                }
                Err(DecodeError::UnknownOpcode(op)) => {
                    warn!(session = session.id(), "unknown opcode {op:#06x}");
                    (Status::ERROR_NOT_SUPPORTED, Vec::new(), false)
                }
                Err(e) => {
                    warn!(session = session.id(), "malformed {} request: {e}", p::opcode_name(header.opcode).unwrap_or("?"));
                    (Status::ERROR_INVALID_VALUE, Vec::new(), false)
                }
            };
            if header.is_async() {
                session.latch(status);
                continue;
            }
            out.clear();
            let output = session.take_output();
            for chunk in output.chunks(1 << 20) {
                p::encode_response(
                    ResponseKind::Stdout,
                    header.seq,
                    Status::SUCCESS,
                    &RawBody(chunk),
                    &mut out,
                );
            }
            write_reply(&mut out, header.seq, status, &reply_body);
            stream.write_all(&out)?;
            if bye {
                return Ok(());
            }
        }
    }
}

/// Pre-encoded bytes written as a body verbatim.
struct RawBody<'a>(&'a [u8]);

impl p::Wire for RawBody<'_> {
    const MIN_SIZE: usize = 0;
    fn put(&self, w: &mut p::Writer) {
        w.raw(self.0);
    }
    fn get(_r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Err(DecodeError::BadUtf8)
    }
}

fn write_reply(out: &mut Vec<u8>, seq: u32, status: Status, body: &[u8]) {
    p::encode_response(ResponseKind::Reply, seq, status, &RawBody(body), out);
}


/// Counts a session as live from creation until it is dropped (however the connection ends).
#[derive(Debug)]
pub struct LiveToken(Arc<AtomicUsize>);

impl LiveToken {
    fn new(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for LiveToken {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
