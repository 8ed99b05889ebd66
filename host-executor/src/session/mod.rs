//! One client session: client handles → backend objects, validation, quota and latched errors.
//!
//! Every request of a session is handled here, in order, on the session's connection thread,
//! by one generic step ([`Core::finish`] and the dispatch generated in [`calls`] from the
//! protocol table):
//!
//! 1. every field with a [`Role`] is resolved against the session's object tables
//!    ([`objects`]): a context must be live and not poisoned, a stream must belong to the call's
//!    context, a new handle must be unused and granted, a charge must fit the quota;
//! 2. the call's handler runs with the resolved objects ([`calls`]; it only does the work);
//! 3. objects it created are inserted, objects the call destroys are destroyed (with what was
//!    created in them);
//! 4. a sticky error (illegal address, launch timeout, …) poisons the call's context for every
//!    later call, as in CUDA;
//! 5. calls marked `latched` report the first error of earlier fire-and-forget calls (for
//!    those the transport latches a failing status, [`Session::latch`]).

mod calls;
pub mod objects;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tracing::{debug, warn};
use virtio_cuda::protocol::{Handles, Request, Role, Status, Wire, Writer};

use virtio_cuda::protocol::DeviceInfoReply;

use crate::backend::{BResult, BackendSession, OutputSink};
use crate::data::DataAccess;
use objects::{Created, Creates, Fresh, Objects};

pub use objects::{HANDLE_BASE, HANDLE_COUNT, MAX_OBJECTS};

/// Cap on buffered device output per session (CUDA's default printf FIFO is 1 MiB).
pub const MAX_PENDING_OUTPUT: usize = 8 << 20;

/// Result of handling one request: the status and reply body for the client.
#[derive(Debug)]
pub struct Outcome {
    pub status: Status,
    pub body: Vec<u8>,
}

fn encode<T: Wire>(v: &T) -> Vec<u8> {
    let mut w = Writer::new();
    v.put(&mut w);
    w.into_vec()
}

/// What a handler returns: the reply, or a status with an optional reply body (a module load's
/// log travels with its error).
pub type Handled<T> = Result<T, Failed<T>>;

/// A failed call.
#[derive(Debug)]
pub struct Failed<T> {
    pub status: Status,
    pub body: Option<T>,
}

impl<T> From<Status> for Failed<T> {
    fn from(status: Status) -> Self {
        Failed { status, body: None }
    }
}

/// Device output collected until the next reply.
#[derive(Default)]
pub struct OutputBuf {
    bytes: Vec<u8>,
    dropped: bool,
}

impl OutputSink for OutputBuf {
    fn write_output(&mut self, bytes: &[u8]) {
        let room = MAX_PENDING_OUTPUT.saturating_sub(self.bytes.len());
        let n = bytes.len().min(room);
        self.bytes.extend_from_slice(&bytes[..n]);
        self.dropped |= n < bytes.len();
    }
}

/// Counts a session as live from creation until it is dropped (however the connection ends).
#[derive(Debug)]
pub struct LiveToken(Arc<AtomicUsize>);

impl LiveToken {
    pub fn new(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for LiveToken {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the executor gives a backend to open a session with.
#[derive(Debug)]
pub struct SessionInit {
    pub id: u64,
    pub backend_name: &'static str,
    /// Device-memory quota in bytes.
    pub quota: u64,
    pub live: LiveToken,
    /// Set when the session's client is gone (the backend ends running work at its next check).
    pub cancel: Arc<std::sync::atomic::AtomicBool>,
}

/// Facts about the session a handler may need.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    pub id: u64,
    pub backend_name: &'static str,
    pub quota: u64,
}

/// What a handler works with: the backend, the devices, the transport's data, the session's
/// output and facts. Objects it creates go through [`Cx::create`].
pub struct Cx<'a, B: BackendSession> {
    pub be: &'a mut B,
    pub devices: &'a dyn Backend,
    pub data: &'a dyn DataAccess,
    pub output: &'a mut OutputBuf,
    pub facts: Facts,
    created: Option<Created<B>>,
}

impl<B: BackendSession> Cx<'_, B> {
    /// Binds a new handle to the object the backend created; the session inserts it once the
    /// handler has returned successfully.
    pub fn create<K: Creates<B>>(&mut self, fresh: Fresh<K>, obj: K::Obj) {
        self.created = Some(K::created(fresh, obj));
    }
}

/// One call's handler: implemented for the call's resolved arguments (`calls::args::*`).
pub trait Run<B: BackendSession> {
    type Reply: Wire;
    fn run(self, cx: &mut Cx<'_, B>) -> Handled<Self::Reply>;
}

/// The session state for one backend.
pub(crate) struct Core<B: BackendSession> {
    facts: Facts,
    /// Declared before `be`: the objects are dropped before the backend half that owns them.
    objs: Objects<B>,
    be: B,
    pending: Option<Status>,
    output: OutputBuf,
}

impl<B: BackendSession> Core<B> {
    /// Steps 3–5 of the generic step, after the handler (or resolution) has produced `res`.
    fn finish(
        &mut self,
        name: &'static str,
        handles: Handles,
        reports_latched: bool,
        res: Result<Vec<u8>, (Status, Vec<u8>)>,
        created: Option<Created<B>>,
    ) -> Outcome {
        let mut res = res;
        if res.is_ok() {
            if let Some(c) = created {
                self.objs.insert(c);
            }
            for (role, id) in handles.iter() {
                if matches!(
                    role,
                    Role::DropCtx | Role::DropStream | Role::DropEvent | Role::DropModule
                ) {
                    if let Err(s) = self.objs.destroy(&mut self.be, role, id) {
                        res = Err((s, Vec::new()));
                    }
                }
            }
        }
        if let (Err((s, _)), Some(ctx)) = (&res, handles.ctx()) {
            if s.is_sticky() {
                self.objs.poison(ctx, *s);
            }
        }
        if reports_latched {
            // Taken whether or not this call failed too; the call's own error wins.
            if let (Some(earlier), Ok(_)) = (self.pending.take(), &res) {
                res = Err((earlier, Vec::new()));
            }
        }
        match res {
            Ok(body) => Outcome {
                status: Status::SUCCESS,
                body,
            },
            Err((status, body)) => {
                debug!(session = self.facts.id, call = name, status = %status, "call failed");
                Outcome { status, body }
            }
        }
    }
}

/// A provider of devices: opens a [`Session`] over one [`BackendSession`] per client session.
/// Defined here, beside the [`Session`] it returns, so that `backend` depends on nothing above it.
pub trait Backend: Send + Sync {
    /// Short name (`cpu`, `cuda`).
    fn name(&self) -> &'static str;
    /// Version reported by `cuDriverGetVersion`.
    fn driver_version(&self) -> i32;
    /// Number of devices.
    fn device_count(&self) -> u32;
    /// Name, memory and attributes of a device.
    fn device_info(&self, ordinal: u32) -> BResult<DeviceInfoReply>;
    /// Device memory allocated across all open sessions, bytes.
    fn allocated_bytes(&self) -> u64;
    /// Opens a session: its backend half (device-pointer range, memory) inside a
    /// [`Session`] built with [`Session::new`].
    fn open_session(&self, init: SessionInit) -> BResult<Session>;
}

/// The session as the executor sees it, whatever the backend.
trait SessionOps: Send {
    fn mem_used(&self) -> u64;
    fn take_output(&mut self) -> Vec<u8>;
    fn latch(&mut self, status: Status);
    fn handle(&mut self, req: Request, devices: &dyn Backend, data: &dyn DataAccess) -> Outcome;
}

impl<B: BackendSession> SessionOps for Core<B> {
    fn mem_used(&self) -> u64 {
        self.be.mem_used()
    }

    fn take_output(&mut self) -> Vec<u8> {
        if std::mem::take(&mut self.output.dropped) {
            warn!(
                session = self.facts.id,
                "device output exceeded {MAX_PENDING_OUTPUT} bytes; truncated"
            );
        }
        std::mem::take(&mut self.output.bytes)
    }

    fn latch(&mut self, status: Status) {
        // A sticky error has already poisoned the context it came from (`finish`), and every
        // later call naming that context reports it; latched session-wide as well, it would
        // fail the next synchronising call of the session's other contexts too.
        if !status.is_ok() && !status.is_sticky() && self.pending.is_none() {
            self.pending = Some(status);
        }
    }

    fn handle(&mut self, req: Request, devices: &dyn Backend, data: &dyn DataAccess) -> Outcome {
        self.dispatch(req, devices, data)
    }
}

/// A client session.
pub struct Session {
    id: u64,
    core: Box<dyn SessionOps>,
    /// Declared last: dropped after the backend half has freed everything.
    _live: LiveToken,
}

impl Session {
    /// A session over a backend's half (what [`Backend::open_session`] returns).
    pub fn new<B: BackendSession>(init: SessionInit, be: B) -> Self {
        let facts = Facts {
            id: init.id,
            backend_name: init.backend_name,
            quota: init.quota,
        };
        Self {
            id: init.id,
            core: Box::new(Core {
                facts,
                objs: Objects::default(),
                be,
                pending: None,
                output: OutputBuf::default(),
            }),
            _live: init.live,
        }
    }

    /// The session id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Device memory in use by this session.
    pub fn mem_used(&self) -> u64 {
        self.core.mem_used()
    }

    /// Takes the device output produced since the last call.
    pub fn take_output(&mut self) -> Vec<u8> {
        self.core.take_output()
    }

    /// Latches the error of a fire-and-forget request (the first one wins).
    pub fn latch(&mut self, status: Status) {
        self.core.latch(status)
    }

    /// Handles one request. For fire-and-forget requests the caller latches a failing status.
    pub fn handle(
        &mut self,
        req: Request,
        devices: &dyn Backend,
        data: &dyn DataAccess,
    ) -> Outcome {
        self.core.handle(req, devices, data)
    }
}
