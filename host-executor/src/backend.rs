//! The [`Backend`] trait: what runs the calls of a session.
//!
//! The session layer ([`crate::session`]) owns client handles, validation, quotas and latched
//! errors; a backend only sees already-validated backend object ids. Two implementations:
//! [`crate::cpu`] (PTX interpreter) and, later, `cuda` (a real GPU through cudarc).

use virtio_cuda::protocol::{DeviceInfoReply, FuncInfo, Status};
use virtio_cuda::shm::SharedRegion;

/// Result of backend operations: CUDA status codes.
pub type BResult<T> = Result<T, Status>;

/// A backend-assigned object id (context, stream, event, module, function).
pub type ObjId = u64;

/// The stream id a backend uses for a context's default (NULL / legacy / per-thread) stream.
pub const DEFAULT_STREAM: ObjId = 0;

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

/// A provider of devices: creates one [`BackendSession`] per client session.
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
    /// Opens the backend half of a session with its device-pointer range and memory quota.
    fn open_session(&self, session_id: u64, quota: u64) -> BResult<Box<dyn BackendSession>>;
}

/// One client's objects inside a backend. Dropping it frees everything the session owns.
///
/// Streams are in-order queues of work; a backend may run work eagerly (the cpu backend does)
/// as long as stream order and event semantics hold.
pub trait BackendSession: Send {
    /// The session's device-pointer range.
    fn va_range(&self) -> VaRange;

    fn create_context(&mut self, device: u32, flags: u32) -> BResult<ObjId>;
    fn destroy_context(&mut self, ctx: ObjId) -> BResult<()>;
    /// Waits for all work of a context.
    fn synchronize(&mut self, ctx: ObjId) -> BResult<()>;

    fn mem_alloc(&mut self, ctx: ObjId, size: u64) -> BResult<u64>;
    fn mem_free(&mut self, ctx: ObjId, dptr: u64) -> BResult<()>;
    /// Bytes currently allocated by this session.
    fn mem_used(&self) -> u64;
    /// `(base, size)` of the allocation containing `dptr`.
    fn address_range(&self, dptr: u64) -> BResult<(u64, u64)>;

    /// Host→device copy of `data` to `dst`, in stream order.
    fn write(&mut self, ctx: ObjId, stream: ObjId, dst: u64, data: &[u8]) -> BResult<()>;
    /// Device→host copy into `out`; returns once the bytes are in `out`.
    fn read(&mut self, ctx: ObjId, stream: ObjId, src: u64, out: &mut [u8]) -> BResult<()>;
    /// Host→device copy straight out of shared memory (the client's data window). The default
    /// stages through a buffer; backends that can copy from the region directly override it.
    fn write_region(
        &mut self,
        ctx: ObjId,
        stream: ObjId,
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
        ctx: ObjId,
        stream: ObjId,
        src: u64,
        dst: SharedRegion<'_>,
    ) -> BResult<()> {
        let mut buf = vec![0u8; dst.len()];
        self.read(ctx, stream, src, &mut buf)?;
        dst.write_at(0, &buf)
            .map_err(|_| Status::ERROR_INVALID_VALUE)
    }
    /// Device→device copy.
    fn copy(&mut self, ctx: ObjId, stream: ObjId, dst: u64, src: u64, len: u64) -> BResult<()>;
    /// Fills `height` rows of `width` elements (`elem_size` 1, 2 or 4 bytes), `pitch` apart.
    #[allow(clippy::too_many_arguments)]
    fn memset(
        &mut self,
        ctx: ObjId,
        stream: ObjId,
        dst: u64,
        pitch: u64,
        elem_size: u8,
        value: u32,
        width: u64,
        height: u64,
    ) -> BResult<()>;

    fn load_module(&mut self, ctx: ObjId, image: &[u8]) -> Result<(ObjId, String), LoadError>;
    fn unload_module(&mut self, module: ObjId) -> BResult<()>;
    fn get_function(&mut self, module: ObjId, name: &str) -> BResult<(ObjId, FuncInfo)>;
    fn get_global(&mut self, module: ObjId, name: &str) -> BResult<(u64, u64)>;
    fn set_function_attribute(&mut self, func: ObjId, attr: u32, value: i32) -> BResult<()>;
    fn occupancy(&mut self, func: ObjId, block_size: u32, dynamic_shared: u64) -> BResult<u32>;

    fn launch(
        &mut self,
        ctx: ObjId,
        func: ObjId,
        stream: ObjId,
        launch: &LaunchParams<'_>,
        output: &mut dyn OutputSink,
    ) -> BResult<()>;

    fn create_stream(&mut self, ctx: ObjId, flags: u32, priority: i32) -> BResult<ObjId>;
    fn destroy_stream(&mut self, stream: ObjId) -> BResult<()>;
    fn stream_synchronize(&mut self, ctx: ObjId, stream: ObjId) -> BResult<()>;
    /// `Ok(true)` when all work is done, `Ok(false)` while pending.
    fn stream_query(&mut self, ctx: ObjId, stream: ObjId) -> BResult<bool>;
    fn stream_wait_event(&mut self, ctx: ObjId, stream: ObjId, event: ObjId) -> BResult<()>;

    fn create_event(&mut self, ctx: ObjId, flags: u32) -> BResult<ObjId>;
    fn destroy_event(&mut self, event: ObjId) -> BResult<()>;
    fn record_event(&mut self, ctx: ObjId, event: ObjId, stream: ObjId) -> BResult<()>;
    fn event_query(&mut self, event: ObjId) -> BResult<bool>;
    fn event_synchronize(&mut self, event: ObjId) -> BResult<()>;
    fn event_elapsed_ms(&mut self, start: ObjId, end: ObjId) -> BResult<f32>;
}
