//! Process-wide state of the shim: the executor session and the client-side objects.
//!
//! One [`Driver`] per process, created by `cuInit`. Handles (contexts, streams, events, modules,
//! functions, libraries, kernels) are ids from the range the executor granted, carried in the
//! application's opaque pointers; creating them is a fire-and-forget request. The driver keeps
//! what it must answer locally: which context owns a stream, each function's parameter layout
//! (to pack `kernelParams`), the device description, the host allocations it emulates.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tracing::{debug, warn};
use virtio_cuda::client::batch::{BatchConfig, BatchTransport};
use virtio_cuda::client::virtio::VirtioTransport;
use virtio_cuda::client::{Client, ClientError, Transport, UnixTransport};
use virtio_cuda::protocol::{self as p, Call, DeviceInfoReply, FuncInfo, InitReply, Status};

/// Results inside the shim: a CUDA status on failure.
pub type R<T> = Result<T, Status>;

/// Environment variable naming the executor's unix socket.
pub const EXECUTOR_ENV: &str = "VCUDA_EXECUTOR";

/// `cuDriverGetVersion` before the executor has answered (CUDA 13.0; cudart 13 requires it).
pub const DEFAULT_DRIVER_VERSION: i32 = 13000;

/// Stream handle values with a meaning of their own (`CU_STREAM_LEGACY`, `CU_STREAM_PER_THREAD`).
pub const STREAM_LEGACY: u64 = 1;
pub const STREAM_PER_THREAD: u64 = 2;

/// A context the application can make current.
#[derive(Debug, Clone)]
pub struct CtxInfo {
    pub device: i32,
    pub flags: u32,
    pub primary: bool,
    pub limits: [u64; 7],
}

/// A loaded module.
#[derive(Debug, Default)]
pub struct ModuleInfo {
    pub ctx: u64,
    /// Functions already bound, by name (repeated lookups return the same handle).
    pub functions: HashMap<String, u64>,
}

/// A function handle's owner and parameter layout.
#[derive(Debug, Clone)]
pub struct FuncEntry {
    pub ctx: u64,
    pub module: u64,
    pub name: String,
    pub info: FuncInfo,
    /// Attributes set with `cuFuncSetAttribute`, reported back by `cuFuncGetAttribute`.
    pub attrs: Vec<(u32, i32)>,
}

/// A context-independent library (`cuLibraryLoadData`): the image, loaded into each context
/// on first use.
#[derive(Debug)]
pub struct LibraryInfo {
    pub image: Vec<u8>,
    /// Module handle per context.
    pub modules: HashMap<u64, u64>,
    /// Kernel handles by name.
    pub kernels: HashMap<String, u64>,
}

/// A `CUkernel`: a library and a function name.
#[derive(Debug, Clone)]
pub struct KernelEntry {
    pub library: u64,
    pub name: String,
}

/// Host memory the shim allocated or registered (pinned memory is emulated: it is ordinary
/// host memory, copied like any other).
#[derive(Debug, Clone, Copy)]
pub struct HostRange {
    pub len: usize,
    pub flags: u32,
    /// True when the shim allocated it (cuMemHostAlloc) rather than registered it.
    pub owned: bool,
}

/// Client-side object tables.
#[derive(Debug, Default)]
pub struct Objects {
    pub contexts: HashMap<u64, CtxInfo>,
    /// Primary context per device: handle and retain count.
    pub primary: HashMap<i32, (u64, u32)>,
    /// Flags set with cuDevicePrimaryCtxSetFlags before the context exists.
    pub primary_flags: HashMap<i32, u32>,
    /// Stream → (context, flags, priority).
    pub streams: HashMap<u64, (u64, u32, i32)>,
    /// Event → (context, flags).
    pub events: HashMap<u64, (u64, u32)>,
    pub modules: HashMap<u64, ModuleInfo>,
    pub functions: HashMap<u64, FuncEntry>,
    pub libraries: HashMap<u64, LibraryInfo>,
    pub kernels: HashMap<u64, KernelEntry>,
    /// Host ranges by start address.
    pub host: BTreeMap<usize, HostRange>,
}

/// The process's connection to the executor and everything cached about it.
pub struct Driver {
    pub client: Client,
    pub init: InitReply,
    pub devices: Vec<DeviceInfoReply>,
    objects: RwLock<Objects>,
    /// Serialises primary-context retain/release (create-once semantics).
    pub primary_lock: Mutex<()>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("init", &self.init).finish()
    }
}

static DRIVER: OnceLock<R<Driver>> = OnceLock::new();

thread_local! {
    /// The calling thread's context stack; the top is the current context.
    static CTX_STACK: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Why the executor could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{EXECUTOR_ENV} is not set and there is no virtio-cuda device (run the program with `vcuda exec -- prog`)")]
    NoExecutor,
    #[error("cannot open a session on {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: ClientError,
    },
    #[error("executor rejected {call}: {source}")]
    Call {
        call: &'static str,
        #[source]
        source: ClientError,
    },
}

impl ConnectError {
    fn status(&self) -> Status {
        match self {
            ConnectError::NoExecutor => Status::ERROR_NO_DEVICE,
            ConnectError::Connect { .. } => Status::ERROR_DEVICE_UNAVAILABLE,
            ConnectError::Call { source, .. } => source.status(),
        }
    }
}

/// Installs the tracing subscriber once (`VCUDA_LOG=debug` traces every call).
pub fn init_logging() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let filter = tracing_subscriber::EnvFilter::try_from_env("VCUDA_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        // SAFETY: registers a handler that only stores to an atomic.
        unsafe { libc::atexit(mark_exiting) };
        // Another subscriber may already be installed (a Rust host program); keep it.
        let _ = tracing_subscriber::registry()
            .with(UntilExit)
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    // Colours only on a terminal: a log file or a pipe gets plain text.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .try_init();
    });
}

/// Set once the process has begun to exit.
static EXITING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn mark_exiting() {
    EXITING.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Ends logging when the process exits. The runtime's exit handlers still call the driver (it
/// tears down its contexts), but by then the main thread's thread-locals, among them the
/// formatting buffer of `tracing_subscriber`'s fmt layer, are destroyed, and an event would
/// panic. `atexit` handlers run last-registered first, so ours (registered at the first driver
/// call) runs before the runtime's.
struct UntilExit;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for UntilExit {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }

    fn enabled(
        &self,
        _: &tracing::Metadata<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        !EXITING.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The transport to the executor: the unix socket `VCUDA_EXECUTOR` names (host-only mode,
/// fire-and-forget frames batched), else the virtio-cuda device node inside a VM.
fn transport() -> Result<(Box<dyn Transport>, String), ConnectError> {
    if let Ok(path) = std::env::var(EXECUTOR_ENV) {
        let err = |e: virtio_cuda::client::TransportError| ConnectError::Connect {
            path: path.clone(),
            source: e.into(),
        };
        let unix = UnixTransport::connect(std::path::Path::new(&path)).map_err(err)?;
        // VCUDA_BATCH=0 sends every fire-and-forget frame at once (for measurements).
        if std::env::var("VCUDA_BATCH").is_ok_and(|v| v == "0") {
            return Ok((Box::new(unix), path));
        }
        let t = BatchTransport::new(unix, BatchConfig::default()).map_err(err)?;
        return Ok((Box::new(t), path));
    }
    if VirtioTransport::available() {
        let path = VirtioTransport::device_path().display().to_string();
        let t = VirtioTransport::open_default().map_err(|e| ConnectError::Connect {
            path: path.clone(),
            source: e.into(),
        })?;
        return Ok((Box::new(t), path));
    }
    Err(ConnectError::NoExecutor)
}

fn connect() -> Result<Driver, ConnectError> {
    let (transport, path) = transport()?;
    let name = std::env::args()
        .next()
        .unwrap_or_else(|| "libcuda".to_string());
    let client =
        Client::new(transport, &name).map_err(|source| ConnectError::Connect { path, source })?;
    let init = client
        .call(&p::Init { flags: 0 })
        .map_err(|source| ConnectError::Call {
            call: "Init",
            source,
        })?;
    let mut devices = Vec::new();
    for ordinal in 0..init.device_count {
        let info =
            client
                .call(&p::DeviceInfo { ordinal })
                .map_err(|source| ConnectError::Call {
                    call: "DeviceInfo",
                    source,
                })?;
        devices.push(info);
    }
    debug!(backend = %client.hello().backend, devices = devices.len(), "vcuda session open");
    Ok(Driver {
        client,
        init,
        devices,
        objects: RwLock::new(Objects::default()),
        primary_lock: Mutex::new(()),
    })
}

/// Opens the session (`cuInit`); later calls return the first outcome.
pub fn init() -> R<&'static Driver> {
    init_logging();
    DRIVER
        .get_or_init(|| {
            connect().map_err(|e| {
                warn!("vcuda: cuInit failed: {e}");
                e.status()
            })
        })
        .as_ref()
        .map_err(|s| *s)
}

/// The driver, once `cuInit` has succeeded.
pub fn driver() -> R<&'static Driver> {
    match DRIVER.get() {
        Some(Ok(d)) => Ok(d),
        Some(Err(_)) | None => Err(Status::ERROR_NOT_INITIALIZED),
    }
}

/// The driver if it is already connected, without connecting.
pub fn driver_if_open() -> Option<&'static Driver> {
    DRIVER.get().and_then(|r| r.as_ref().ok())
}

/// The calling thread's current context (0 when none).
pub fn current_ctx_raw() -> u64 {
    // During thread teardown the stack is gone: no context is current.
    CTX_STACK
        .try_with(|s| s.borrow().last().copied().unwrap_or(0))
        .unwrap_or(0)
}

/// Replaces the top of the calling thread's stack (`cuCtxSetCurrent`).
pub fn set_current(ctx: u64) {
    let _ = CTX_STACK.try_with(|s| {
        let mut s = s.borrow_mut();
        s.pop();
        if ctx != 0 {
            s.push(ctx);
        }
    });
}

pub fn push_current(ctx: u64) {
    let _ = CTX_STACK.try_with(|s| s.borrow_mut().push(ctx));
}

pub fn pop_current() -> Option<u64> {
    CTX_STACK.try_with(|s| s.borrow_mut().pop()).ok().flatten()
}

impl Driver {
    pub fn objects(&self) -> RwLockReadGuard<'_, Objects> {
        self.objects.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn objects_mut(&self) -> RwLockWriteGuard<'_, Objects> {
        self.objects.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn lock_primary(&self) -> MutexGuard<'_, ()> {
        self.primary_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A synchronous call; CUDA errors and transport failures become statuses.
    pub fn call<C: Call>(&self, req: &C) -> R<C::Reply> {
        self.client.call(req).map_err(|e| log_failure(C::NAME, e))
    }

    /// A synchronous call whose bulk bytes travel in the transport's data window (`h2d` for
    /// `Source::Shm` ranges, `d2h` for `Sink::Shm` ranges): the unix transport's shared memory,
    /// or the application's own pages, pinned by the guest driver, with virtio.
    pub fn call_with_data<C: Call>(&self, req: &C, h2d: &[u8], d2h: &mut [u8]) -> R<C::Reply> {
        self.client
            .call_with_data(req, h2d, d2h)
            .map_err(|e| log_failure(C::NAME, e))
    }

    /// A bulk copy pipelined through the transport's data window (`Ok(false)`: the transport
    /// cannot; nothing was sent).
    pub fn pipelined<C: Call>(
        &self,
        bulk: virtio_cuda::client::Bulk<'_>,
        request: impl Fn(virtio_cuda::client::Chunk) -> C,
    ) -> R<bool> {
        self.client
            .copy_pipelined(bulk, request)
            .map_err(|e| log_failure(C::NAME, e))
    }

    /// A fire-and-forget call (its error, if any, surfaces at the next synchronising call).
    pub fn send<C: Call>(&self, req: &C) -> R<()> {
        self.client.send(req).map_err(|e| log_failure(C::NAME, e))
    }

    pub fn alloc_handle(&self) -> R<u64> {
        self.client
            .alloc_handle()
            .map_err(|e| log_failure("alloc_handle", e))
    }

    /// The device description of `ordinal`.
    pub fn device(&self, ordinal: i32) -> R<&DeviceInfoReply> {
        usize::try_from(ordinal)
            .ok()
            .and_then(|i| self.devices.get(i))
            .ok_or(Status::ERROR_INVALID_DEVICE)
    }

    /// The current context, which must exist.
    pub fn current_ctx(&self) -> R<u64> {
        match current_ctx_raw() {
            0 => Err(Status::ERROR_INVALID_CONTEXT),
            c if self.objects().contexts.contains_key(&c) => Ok(c),
            _ => Err(Status::ERROR_CONTEXT_IS_DESTROYED),
        }
    }

    /// The context a stream belongs to, and the stream id to send. The NULL stream and the
    /// special streams belong to the current context; `per_thread` maps the NULL stream to
    /// `CU_STREAM_PER_THREAD` (the `_ptsz`/`_ptds` entry points).
    pub fn stream_ctx(&self, stream: u64, per_thread: bool) -> R<(u64, u64)> {
        match stream {
            0 => Ok((
                self.current_ctx()?,
                if per_thread { STREAM_PER_THREAD } else { 0 },
            )),
            STREAM_LEGACY | STREAM_PER_THREAD => Ok((self.current_ctx()?, stream)),
            s => self
                .objects()
                .streams
                .get(&s)
                .map(|(ctx, _, _)| (*ctx, s))
                .ok_or(Status::ERROR_INVALID_HANDLE),
        }
    }

    /// True when `addr` is a device pointer of this session.
    pub fn is_device_ptr(&self, addr: u64) -> bool {
        let h = self.client.hello();
        addr >= h.va_base && addr - h.va_base < h.va_size
    }

    /// The attribute `attr` of device `dev`, as the executor described it (0 if it did not).
    pub fn attribute(&self, dev: i32, attr: u32) -> R<i32> {
        let d = self.device(dev)?;
        Ok(d.attributes
            .0
            .iter()
            .find(|a| a.attr == attr)
            .map(|a| a.value)
            .unwrap_or(0))
    }
}

fn log_failure(call: &'static str, e: ClientError) -> Status {
    match &e {
        ClientError::Status(s) => debug!(call, status = %s, "executor returned an error"),
        other => warn!(call, "vcuda: {other}"),
    }
    e.status()
}
