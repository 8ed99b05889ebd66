//! The [`BackendSession`] trait: what runs the calls of a session.
//!
//! The session layer ([`crate::session`]) owns client handles, object tables, validation, quotas
//! and latched errors; a backend only sees its own objects, already checked. Two
//! implementations: [`crate::cpu`] (PTX interpreter) and [`crate::cuda`] (a real GPU through
//! cudarc); each also implements [`crate::session::Backend`], which opens sessions over it.

use virtio_cuda::protocol::{FuncInfo, Status};
use virtio_cuda::shm::SharedRegion;

/// Result of backend operations: CUDA status codes.
pub type BResult<T> = Result<T, Status>;

/// A device-pointer range reserved for one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VaRange {
    pub base: u64,
    pub size: u64,
}

/// A kernel launch, as validated by the session.
#[derive(Debug, Clone, Copy)]
pub struct LaunchParams<'a> {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
    pub cooperative: bool,
    /// Packed kernel parameters (layout from [`FuncInfo::params`]).
    pub params: &'a [u8],
}

/// A 2D/3D strided copy or memset shape.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub width_bytes: u64,
    pub height: u64,
    pub depth: u64,
}

/// A memset: `height` rows of `width` elements of `elem_size` bytes (1, 2 or 4, checked) set to
/// the low bytes of `value`, rows `pitch` bytes apart from `dst`.
#[derive(Debug, Clone, Copy)]
pub struct Fill {
    pub dst: u64,
    pub pitch: u64,
    pub elem_size: u8,
    pub value: u32,
    pub width: u64,
    pub height: u64,
}

/// A module that failed to load: the status and the loader's explanation.
#[derive(Debug, Clone)]
pub struct LoadError {
    pub status: Status,
    pub log: String,
}

/// Device output (`printf`) produced by work; collected by the session for the client.
pub trait OutputSink {
    fn write_output(&mut self, bytes: &[u8]);
}

/// The stream a piece of work runs on: `None` is the context's default (NULL / legacy /
/// per-thread) stream.
pub type StreamRef<'a, S> = Option<&'a <S as BackendSession>::Stream>;

/// One client's device work inside a backend. Dropping it frees everything the session owns.
///
/// The session layer ([`crate::session`]) keeps every object table: it resolves and checks the
/// client's handles, creates and destroys objects through the methods below, and hands a backend
/// only its own objects (the associated types), already checked. A backend implements the work
/// itself and nothing else: no id allocation, no handle checks, no sticky or latched errors.
///
/// Streams are in-order queues of work; a backend may run work eagerly (the cpu backend does)
/// as long as stream order and event semantics hold.
pub trait BackendSession: Send + 'static {
    /// A context (all of a session's contexts may share one device context).
    type Context: Send;
    /// A created stream (the default stream is `None` in a [`StreamRef`]).
    type Stream: Send;
    type Event: Send;
    type Module: Send;
    /// A kernel of a module; work on it is also given the module it came from.
    type Function: Send;

    /// The session's device-pointer range.
    fn va_range(&self) -> VaRange;

    fn create_context(&mut self, device: u32, flags: u32) -> BResult<Self::Context>;
    fn destroy_context(&mut self, ctx: Self::Context) -> BResult<()>;
    /// Waits for all work of a context.
    fn synchronize(&mut self, ctx: &Self::Context) -> BResult<()>;

    /// Allocates `size` bytes (non-zero, already charged against the session's quota).
    fn mem_alloc(&mut self, ctx: &Self::Context, size: u64) -> BResult<u64>;
    fn mem_free(&mut self, ctx: &Self::Context, dptr: u64) -> BResult<()>;
    /// Bytes currently allocated by this session.
    fn mem_used(&self) -> u64;
    /// `(base, size)` of the allocation containing `dptr`.
    fn address_range(&self, dptr: u64) -> BResult<(u64, u64)>;

    /// Host→device copy of `data` to `dst`, in stream order.
    fn write(
        &mut self,
        ctx: &Self::Context,
        stream: StreamRef<'_, Self>,
        dst: u64,
        data: &[u8],
    ) -> BResult<()>;
    /// Device→host copy into `out`; returns once the bytes are in `out`.
    fn read(
        &mut self,
        ctx: &Self::Context,
        stream: StreamRef<'_, Self>,
        src: u64,
        out: &mut [u8],
    ) -> BResult<()>;
    /// Host→device copy straight out of shared memory (the client's data window). The default
    /// stages through a buffer; backends that can copy from the region directly override it.
    fn write_region(
        &mut self,
        ctx: &Self::Context,
        stream: StreamRef<'_, Self>,
        dst: u64,
        src: SharedRegion<'_>,
    ) -> BResult<()> {
        let mut buf = vec![0u8; src.len()];
        src.read_at(0, &mut buf)
            .map_err(|_| Status::ERROR_INVALID_VALUE)?;
        self.write(ctx, stream, dst, &buf)
    }
    /// Device→host copy straight into shared memory; default and overrides as for
    /// [`BackendSession::write_region`].
    fn read_region(
        &mut self,
        ctx: &Self::Context,
        stream: StreamRef<'_, Self>,
        src: u64,
        dst: SharedRegion<'_>,
    ) -> BResult<()> {
        let mut buf = vec![0u8; dst.len()];
        self.read(ctx, stream, src, &mut buf)?;
        dst.write_at(0, &buf)
            .map_err(|_| Status::ERROR_INVALID_VALUE)
    }
    /// Device→device copy.
    fn copy(
        &mut self,
        ctx: &Self::Context,
        stream: StreamRef<'_, Self>,
        dst: u64,
        src: u64,
        len: u64,
    ) -> BResult<()>;
    /// Fills `height` rows of `width` elements (`elem_size` 1, 2 or 4 bytes), `pitch` apart.
    fn memset(
        &mut self,
        ctx: &Self::Context,
        stream: StreamRef<'_, Self>,
        fill: Fill,
    ) -> BResult<()>;

    fn load_module(
        &mut self,
        ctx: &Self::Context,
        image: &[u8],
    ) -> Result<(Self::Module, String), LoadError>;
    fn unload_module(&mut self, module: Self::Module) -> BResult<()>;
    fn get_function(
        &mut self,
        module: &Self::Module,
        name: &str,
    ) -> BResult<(Self::Function, FuncInfo)>;
    /// The number of kernels in the module (`cuModuleGetFunctionCount`).
    fn function_count(&mut self, module: &Self::Module) -> BResult<u32>;
    /// The names of the module's kernels, in the module's order.
    fn function_names(&mut self, module: &Self::Module) -> BResult<Vec<String>>;
    fn get_global(&mut self, module: &Self::Module, name: &str) -> BResult<(u64, u64)>;
    fn set_function_attribute(
        &mut self,
        func: &Self::Function,
        attr: u32,
        value: i32,
    ) -> BResult<()>;
    fn occupancy(
        &mut self,
        func: &Self::Function,
        block_size: u32,
        dynamic_shared: u64,
    ) -> BResult<u32>;

    fn launch(
        &mut self,
        ctx: &Self::Context,
        func: (&Self::Function, &Self::Module),
        stream: StreamRef<'_, Self>,
        launch: &LaunchParams<'_>,
        output: &mut dyn OutputSink,
    ) -> BResult<()>;

    fn create_stream(
        &mut self,
        ctx: &Self::Context,
        flags: u32,
        priority: i32,
    ) -> BResult<Self::Stream>;
    fn destroy_stream(&mut self, stream: Self::Stream) -> BResult<()>;
    fn stream_synchronize(
        &mut self,
        ctx: &Self::Context,
        stream: StreamRef<'_, Self>,
    ) -> BResult<()>;
    /// `Ok(true)` when all work is done, `Ok(false)` while pending.
    fn stream_query(&mut self, ctx: &Self::Context, stream: StreamRef<'_, Self>) -> BResult<bool>;
    fn stream_wait_event(
        &mut self,
        ctx: &Self::Context,
        stream: StreamRef<'_, Self>,
        event: &Self::Event,
    ) -> BResult<()>;

    fn create_event(&mut self, ctx: &Self::Context, flags: u32) -> BResult<Self::Event>;
    fn destroy_event(&mut self, event: Self::Event) -> BResult<()>;
    fn record_event(
        &mut self,
        ctx: &Self::Context,
        event: &Self::Event,
        stream: StreamRef<'_, Self>,
    ) -> BResult<()>;
    fn event_query(&mut self, event: &Self::Event) -> BResult<bool>;
    fn event_synchronize(&mut self, event: &Self::Event) -> BResult<()>;
    fn event_elapsed_ms(&mut self, start: &Self::Event, end: &Self::Event) -> BResult<f32>;
}
