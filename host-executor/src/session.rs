//! One client session: client handles → backend objects, validation, quota and latched errors.
//!
//! Every request of a session is handled here, in order, on the session's connection thread.
//! Client handles are only ever looked up in this session's own tables, so a forged or stale
//! handle can name nothing of another session. Errors of fire-and-forget calls are latched:
//! the first one is reported by the next synchronising call (`*Synchronize`, `MemcpyDtoH*`,
//! `MemFree`), and "sticky" errors (illegal address, launch timeout, …) poison their context
//! for every later call, as in CUDA.

use std::collections::HashMap;

use tracing::{debug, warn};
use virtio_cuda::protocol::{self as p, DevRegion, Empty, Request, Sink, Status, Wire, Writer};

use crate::backend::{Backend, BackendSession, LaunchParams, ObjId, OutputSink, DEFAULT_STREAM};
use crate::data::{source_bytes, DataAccess};
use crate::executor::LiveToken;

/// Cap on buffered device output per session (CUDA's default printf FIFO is 1 MiB).
pub const MAX_PENDING_OUTPUT: usize = 8 << 20;

/// Cap on bytes one strided copy may move (guards against absurd shapes).
const MAX_STRIDED_BYTES: u64 = 1 << 34;

/// Result of handling one request: the status and reply body for the client.
#[derive(Debug)]
pub struct Outcome {
    pub status: Status,
    pub body: Vec<u8>,
}

impl Outcome {
    fn ok<T: Wire>(v: &T) -> Self {
        let mut w = Writer::new();
        v.put(&mut w);
        Outcome {
            status: Status::SUCCESS,
            body: w.into_vec(),
        }
    }
    fn err(status: Status) -> Self {
        Outcome {
            status,
            body: Vec::new(),
        }
    }
}

struct CtxState {
    obj: ObjId,
    sticky: Option<Status>,
}

struct FuncState {
    module: u64,
    obj: ObjId,
    info: p::FuncInfo,
}

/// Device output collected until the next reply.
#[derive(Default)]
struct OutputBuf {
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

/// Handle ids granted to every session.
pub const HANDLE_BASE: u64 = p::handles::FIRST_GRANTABLE_HANDLE;
/// Number of handle ids granted to every session.
pub const HANDLE_COUNT: u64 = 1 << 40;

/// A client session.
pub struct Session {
    id: u64,
    backend_name: &'static str,
    quota: u64,
    be: Box<dyn BackendSession>,
    contexts: HashMap<u64, CtxState>,
    streams: HashMap<u64, (u64, ObjId)>,
    events: HashMap<u64, (u64, ObjId)>,
    modules: HashMap<u64, (u64, ObjId)>,
    funcs: HashMap<u64, FuncState>,
    pending: Option<Status>,
    output: OutputBuf,
    /// Declared last: dropped after the backend half has freed everything.
    _live: LiveToken,
}

impl Session {
    pub fn new(
        id: u64,
        backend_name: &'static str,
        quota: u64,
        be: Box<dyn BackendSession>,
        live: LiveToken,
    ) -> Self {
        Self {
            id,
            backend_name,
            quota,
            be,
            contexts: HashMap::new(),
            streams: HashMap::new(),
            events: HashMap::new(),
            modules: HashMap::new(),
            funcs: HashMap::new(),
            pending: None,
            output: OutputBuf::default(),
            _live: live,
        }
    }

    /// The session id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Device memory in use by this session.
    pub fn mem_used(&self) -> u64 {
        self.be.mem_used()
    }

    /// Takes the device output produced since the last call.
    pub fn take_output(&mut self) -> Vec<u8> {
        if std::mem::take(&mut self.output.dropped) {
            warn!(
                session = self.id,
                "device output exceeded {MAX_PENDING_OUTPUT} bytes; truncated"
            );
        }
        std::mem::take(&mut self.output.bytes)
    }

    /// Latches the error of a fire-and-forget request (the first one wins).
    pub fn latch(&mut self, status: Status) {
        if !status.is_ok() && self.pending.is_none() {
            self.pending = Some(status);
        }
    }

    /// Handles one request. For fire-and-forget requests the caller latches a failing status.
    pub fn handle(
        &mut self,
        req: Request,
        devices: &dyn Backend,
        data: &dyn DataAccess,
    ) -> Outcome {
        let name = req.name();
        let out = match self.dispatch(req, devices, data) {
            Ok(o) => o,
            Err(s) => Outcome::err(s),
        };
        if !out.status.is_ok() {
            debug!(session = self.id, call = name, status = %out.status, "call failed");
        }
        out
    }

    fn ctx(&mut self, ctx: u64) -> Result<ObjId, Status> {
        let c = self
            .contexts
            .get(&ctx)
            .ok_or(Status::ERROR_INVALID_CONTEXT)?;
        match c.sticky {
            Some(s) => Err(s),
            None => Ok(c.obj),
        }
    }

    /// Reports the latched error, if any (synchronising calls).
    fn take_pending(&mut self) -> Result<(), Status> {
        match self.pending.take() {
            Some(s) => Err(s),
            None => Ok(()),
        }
    }

    fn stream(&self, ctx: u64, stream: u64) -> Result<ObjId, Status> {
        match stream {
            0..=2 => Ok(DEFAULT_STREAM),
            s => match self.streams.get(&s) {
                Some((c, obj)) if *c == ctx => Ok(*obj),
                Some(_) => Err(Status::ERROR_INVALID_HANDLE),
                None => Err(Status::ERROR_INVALID_HANDLE),
            },
        }
    }

    fn event(&self, ev: u64) -> Result<ObjId, Status> {
        self.events
            .get(&ev)
            .map(|(_, o)| *o)
            .ok_or(Status::ERROR_INVALID_HANDLE)
    }

    /// Runs a backend result through sticky-error bookkeeping for `ctx`.
    fn track<T>(&mut self, ctx: u64, r: Result<T, Status>) -> Result<T, Status> {
        if let Err(s) = &r {
            if s.is_sticky() {
                if let Some(c) = self.contexts.get_mut(&ctx) {
                    c.sticky.get_or_insert(*s);
                }
            }
        }
        r
    }

    fn fresh(map_has: bool) -> Result<(), Status> {
        if map_has {
            Err(Status::ERROR_INVALID_HANDLE)
        } else {
            Ok(())
        }
    }

    fn dispatch(
        &mut self,
        req: Request,
        devices: &dyn Backend,
        data: &dyn DataAccess,
    ) -> Result<Outcome, Status> {
        use Request as R;
        Ok(match req {
            R::Hello(_) => Outcome::ok(&p::HelloReply {
                session_id: self.id,
                handle_base: HANDLE_BASE,
                handle_count: HANDLE_COUNT,
                va_base: self.be.va_range().base,
                va_size: self.be.va_range().size,
                quota: self.quota,
                backend: self.backend_name.to_string(),
            }),
            R::Goodbye(_) => Outcome::ok(&Empty {}),
            // Handled by the unix transport (it carries a file descriptor); elsewhere meaningless.
            R::AttachChannel(_) => return Err(Status::ERROR_NOT_SUPPORTED),
            R::Init(_) => Outcome::ok(&p::InitReply {
                driver_version: devices.driver_version(),
                device_count: devices.device_count(),
            }),
            R::DeviceInfo(r) => Outcome::ok(&devices.device_info(r.ordinal)?),

            R::CtxCreate(r) => {
                Self::fresh(self.contexts.contains_key(&r.ctx) || r.ctx < HANDLE_BASE)?;
                if r.device >= devices.device_count() {
                    return Err(Status::ERROR_INVALID_DEVICE);
                }
                let obj = self.be.create_context(r.device, r.flags)?;
                self.contexts.insert(r.ctx, CtxState { obj, sticky: None });
                Outcome::ok(&Empty {})
            }
            R::CtxDestroy(r) => {
                let c = self
                    .contexts
                    .remove(&r.ctx)
                    .ok_or(Status::ERROR_INVALID_CONTEXT)?;
                self.streams.retain(|_, (ctx, _)| *ctx != r.ctx);
                self.events.retain(|_, (ctx, _)| *ctx != r.ctx);
                let dead: Vec<u64> = self
                    .modules
                    .iter()
                    .filter(|(_, (ctx, _))| *ctx == r.ctx)
                    .map(|(h, _)| *h)
                    .collect();
                for m in dead {
                    self.drop_module(m);
                }
                self.be.destroy_context(c.obj)?;
                Outcome::ok(&Empty {})
            }
            R::CtxSynchronize(r) => {
                let c = self.ctx(r.ctx)?;
                let res = self.be.synchronize(c);
                self.track(r.ctx, res)?;
                self.take_pending()?;
                Outcome::ok(&Empty {})
            }

            R::MemAlloc(r) => {
                self.ctx(r.ctx)?;
                if r.size == 0 {
                    return Err(Status::ERROR_INVALID_VALUE);
                }
                if self.be.mem_used().saturating_add(r.size) > self.quota {
                    return Err(Status::ERROR_OUT_OF_MEMORY);
                }
                let c = self.ctx(r.ctx)?;
                let dptr = self.be.mem_alloc(c, r.size)?;
                Outcome::ok(&p::MemAllocReply { dptr })
            }
            R::MemFree(r) => {
                let c = self.ctx(r.ctx)?;
                self.be.mem_free(c, r.dptr)?;
                self.take_pending()?;
                Outcome::ok(&Empty {})
            }
            R::MemGetInfo(r) => {
                self.ctx(r.ctx)?;
                let used = self.be.mem_used();
                Outcome::ok(&p::MemInfoReply {
                    free: self.quota.saturating_sub(used),
                    total: self.quota,
                })
            }
            R::MemGetAddressRange(r) => {
                self.ctx(r.ctx)?;
                let (base, size) = self.be.address_range(r.dptr)?;
                Outcome::ok(&p::AddressRangeReply { base, size })
            }
            R::MemcpyHtoD(r) => {
                let c = self.ctx(r.ctx)?;
                let s = self.stream(r.ctx, r.stream)?;
                let res = match data.source_region(&r.src)? {
                    // Straight from the shared window into device memory.
                    Some(region) => self.be.write_region(c, s, r.dst, region),
                    None => {
                        let bytes = source_bytes(data, r.src)?;
                        self.be.write(c, s, r.dst, &bytes)
                    }
                };
                // The last piece of a pipelined copy reports the earlier pieces' errors (once:
                // taken whether or not this piece failed too).
                let earlier = self.take_pending();
                self.track(r.ctx, res)?;
                earlier?;
                Outcome::ok(&Empty {})
            }
            R::MemcpyDtoH(r) => {
                let c = self.ctx(r.ctx)?;
                let s = self.stream(r.ctx, r.stream)?;
                let len = checked_len(r.len, &r.dst)?;
                if let Some(region) = data.sink_region(&r.dst, len as u64)? {
                    let res = self.be.read_region(c, s, r.src, region);
                    let earlier = self.take_pending();
                    self.track(r.ctx, res)?;
                    earlier?;
                    return Ok(Outcome::ok(&p::DataReply { data: Vec::new() }));
                }
                let mut buf = vec![0u8; len];
                let res = self.be.read(c, s, r.src, &mut buf);
                let earlier = self.take_pending();
                self.track(r.ctx, res)?;
                earlier?;
                self.deliver(data, &r.dst, buf)?
            }
            R::MemcpyDtoD(r) => {
                let c = self.ctx(r.ctx)?;
                let s = self.stream(r.ctx, r.stream)?;
                let res = self.be.copy(c, s, r.dst, r.src, r.len);
                self.track(r.ctx, res)?;
                Outcome::ok(&Empty {})
            }
            R::Memset(r) => {
                let c = self.ctx(r.ctx)?;
                let s = self.stream(r.ctx, r.stream)?;
                if !matches!(r.elem_size, 1 | 2 | 4) {
                    return Err(Status::ERROR_INVALID_VALUE);
                }
                let res = self.be.memset(
                    c,
                    s,
                    r.dst,
                    r.pitch,
                    r.elem_size,
                    r.value,
                    r.width,
                    r.height,
                );
                self.track(r.ctx, res)?;
                Outcome::ok(&Empty {})
            }
            R::MemcpyHtoDStrided(r) => {
                let c = self.ctx(r.ctx)?;
                let s = self.stream(r.ctx, r.stream)?;
                let total = strided_total(r.width_bytes, r.height, r.depth)?;
                let bytes = source_bytes(data, r.src)?;
                if bytes.len() as u64 != total {
                    return Err(Status::ERROR_INVALID_VALUE);
                }
                let res = for_each_row(&r.dst, r.height, r.depth, |i, addr| {
                    let off = (i * r.width_bytes) as usize;
                    self.be
                        .write(c, s, addr, &bytes[off..off + r.width_bytes as usize])
                });
                self.track(r.ctx, res)?;
                Outcome::ok(&Empty {})
            }
            R::MemcpyDtoHStrided(r) => {
                let c = self.ctx(r.ctx)?;
                let s = self.stream(r.ctx, r.stream)?;
                let total = strided_total(r.width_bytes, r.height, r.depth)?;
                let len = checked_len(total, &r.dst)?;
                let mut buf = vec![0u8; len];
                let res = for_each_row(&r.src, r.height, r.depth, |i, addr| {
                    let off = (i * r.width_bytes) as usize;
                    self.be
                        .read(c, s, addr, &mut buf[off..off + r.width_bytes as usize])
                });
                self.track(r.ctx, res)?;
                self.take_pending()?;
                self.deliver(data, &r.dst, buf)?
            }
            R::MemcpyDtoDStrided(r) => {
                let c = self.ctx(r.ctx)?;
                let s = self.stream(r.ctx, r.stream)?;
                strided_total(r.width_bytes, r.height, r.depth)?;
                let src = r.src.clone();
                let res = for_each_row(&r.dst, r.height, r.depth, |i, dst| {
                    let (z, y) = (i / r.height.max(1), i % r.height.max(1));
                    let saddr = src
                        .addr
                        .wrapping_add(z.wrapping_mul(src.slice_pitch))
                        .wrapping_add(y.wrapping_mul(src.pitch));
                    self.be.copy(c, s, dst, saddr, r.width_bytes)
                });
                self.track(r.ctx, res)?;
                Outcome::ok(&Empty {})
            }

            R::ModuleLoad(r) => {
                let c = self.ctx(r.ctx)?;
                Self::fresh(self.modules.contains_key(&r.module) || r.module < HANDLE_BASE)?;
                let image = source_bytes(data, r.image)?;
                match self.be.load_module(c, &image) {
                    Ok((obj, log)) => {
                        self.modules.insert(r.module, (r.ctx, obj));
                        Outcome::ok(&p::ModuleLoadReply { log })
                    }
                    Err(e) => {
                        warn!(session = self.id, status = %e.status, "module load failed: {}", e.log);
                        let mut w = Writer::new();
                        p::ModuleLoadReply { log: e.log }.put(&mut w);
                        Outcome {
                            status: e.status,
                            body: w.into_vec(),
                        }
                    }
                }
            }
            R::ModuleUnload(r) => {
                self.ctx(r.ctx)?;
                if !self.modules.contains_key(&r.module) {
                    return Err(Status::ERROR_INVALID_HANDLE);
                }
                self.drop_module(r.module);
                Outcome::ok(&Empty {})
            }
            R::ModuleGetFunction(r) => {
                self.ctx(r.ctx)?;
                Self::fresh(self.funcs.contains_key(&r.func) || r.func < HANDLE_BASE)?;
                let (_, m) = *self
                    .modules
                    .get(&r.module)
                    .ok_or(Status::ERROR_INVALID_HANDLE)?;
                let (obj, info) = self.be.get_function(m, &r.name)?;
                self.funcs.insert(
                    r.func,
                    FuncState {
                        module: r.module,
                        obj,
                        info: info.clone(),
                    },
                );
                Outcome::ok(&info)
            }
            R::ModuleGetGlobal(r) => {
                self.ctx(r.ctx)?;
                let (_, m) = *self
                    .modules
                    .get(&r.module)
                    .ok_or(Status::ERROR_INVALID_HANDLE)?;
                let (dptr, size) = self.be.get_global(m, &r.name)?;
                Outcome::ok(&p::GlobalReply { dptr, size })
            }
            R::FuncSetAttribute(r) => {
                self.ctx(r.ctx)?;
                let f = self
                    .funcs
                    .get(&r.func)
                    .ok_or(Status::ERROR_INVALID_HANDLE)?;
                self.be.set_function_attribute(f.obj, r.attr, r.value)?;
                Outcome::ok(&Empty {})
            }
            R::Occupancy(r) => {
                self.ctx(r.ctx)?;
                let f = self
                    .funcs
                    .get(&r.func)
                    .ok_or(Status::ERROR_INVALID_HANDLE)?;
                let blocks_per_sm = self.be.occupancy(f.obj, r.block_size, r.dynamic_shared)?;
                Outcome::ok(&p::OccupancyReply { blocks_per_sm })
            }

            R::Launch(r) => {
                let c = self.ctx(r.ctx)?;
                let s = self.stream(r.ctx, r.stream)?;
                let f = self
                    .funcs
                    .get(&r.func)
                    .ok_or(Status::ERROR_INVALID_HANDLE)?;
                let needed = f
                    .info
                    .params
                    .0
                    .iter()
                    .map(|p| u64::from(p.offset) + u64::from(p.size))
                    .max()
                    .unwrap_or(0);
                if (r.params.len() as u64) < needed {
                    return Err(Status::ERROR_INVALID_VALUE);
                }
                let obj = f.obj;
                let launch = LaunchParams {
                    grid: r.grid,
                    block: r.block,
                    shared_bytes: r.shared_bytes,
                    cooperative: r.flags & p::LAUNCH_FLAG_COOPERATIVE != 0,
                    params: &r.params,
                };
                let res = self.be.launch(c, obj, s, &launch, &mut self.output);
                self.track(r.ctx, res)?;
                Outcome::ok(&Empty {})
            }

            R::StreamCreate(r) => {
                let c = self.ctx(r.ctx)?;
                Self::fresh(self.streams.contains_key(&r.stream) || r.stream < HANDLE_BASE)?;
                let obj = self.be.create_stream(c, r.flags, r.priority)?;
                self.streams.insert(r.stream, (r.ctx, obj));
                Outcome::ok(&Empty {})
            }
            R::StreamDestroy(r) => {
                let (_, obj) = self
                    .streams
                    .remove(&r.stream)
                    .ok_or(Status::ERROR_INVALID_HANDLE)?;
                self.be.destroy_stream(obj)?;
                Outcome::ok(&Empty {})
            }
            R::StreamSynchronize(r) => {
                let c = self.ctx(r.ctx)?;
                let s = self.stream(r.ctx, r.stream)?;
                let res = self.be.stream_synchronize(c, s);
                self.track(r.ctx, res)?;
                self.take_pending()?;
                Outcome::ok(&Empty {})
            }
            R::StreamQuery(r) => {
                let c = self.ctx(r.ctx)?;
                let s = self.stream(r.ctx, r.stream)?;
                let res = self.be.stream_query(c, s);
                if !self.track(r.ctx, res)? {
                    return Err(Status::ERROR_NOT_READY);
                }
                Outcome::ok(&Empty {})
            }
            R::StreamWaitEvent(r) => {
                let c = self.ctx(r.ctx)?;
                let s = self.stream(r.ctx, r.stream)?;
                let e = self.event(r.event)?;
                self.be.stream_wait_event(c, s, e)?;
                Outcome::ok(&Empty {})
            }

            R::EventCreate(r) => {
                let c = self.ctx(r.ctx)?;
                Self::fresh(self.events.contains_key(&r.event) || r.event < HANDLE_BASE)?;
                let obj = self.be.create_event(c, r.flags)?;
                self.events.insert(r.event, (r.ctx, obj));
                Outcome::ok(&Empty {})
            }
            R::EventDestroy(r) => {
                let (_, obj) = self
                    .events
                    .remove(&r.event)
                    .ok_or(Status::ERROR_INVALID_HANDLE)?;
                self.be.destroy_event(obj)?;
                Outcome::ok(&Empty {})
            }
            R::EventRecord(r) => {
                let c = self.ctx(r.ctx)?;
                let s = self.stream(r.ctx, r.stream)?;
                let e = self.event(r.event)?;
                self.be.record_event(c, e, s)?;
                Outcome::ok(&Empty {})
            }
            R::EventQuery(r) => {
                self.ctx(r.ctx)?;
                let e = self.event(r.event)?;
                if !self.be.event_query(e)? {
                    return Err(Status::ERROR_NOT_READY);
                }
                Outcome::ok(&Empty {})
            }
            R::EventSynchronize(r) => {
                self.ctx(r.ctx)?;
                let e = self.event(r.event)?;
                let res = self.be.event_synchronize(e);
                self.track(r.ctx, res)?;
                self.take_pending()?;
                Outcome::ok(&Empty {})
            }
            R::EventElapsedTime(r) => {
                self.ctx(r.ctx)?;
                let (a, b) = (self.event(r.start)?, self.event(r.end)?);
                let ms = self.be.event_elapsed_ms(a, b)?;
                Outcome::ok(&p::ElapsedReply { ms })
            }
        })
    }

    fn drop_module(&mut self, module: u64) {
        if let Some((_, obj)) = self.modules.remove(&module) {
            self.funcs.retain(|_, f| f.module != module);
            if let Err(s) = self.be.unload_module(obj) {
                warn!(session = self.id, status = %s, "module unload failed");
            }
        }
    }

    /// Sends read bytes to their sink: the reply body, or out of band.
    fn deliver(&self, data: &dyn DataAccess, sink: &Sink, buf: Vec<u8>) -> Result<Outcome, Status> {
        match sink {
            Sink::Reply => Ok(Outcome::ok(&p::DataReply { data: buf })),
            other => {
                data.write_sink(other, &buf)?;
                Ok(Outcome::ok(&p::DataReply { data: Vec::new() }))
            }
        }
    }
}

/// Validates a device→host length against its sink (reply sinks are capped at MAX_INLINE).
fn checked_len(len: u64, sink: &Sink) -> Result<usize, Status> {
    let cap = match sink {
        Sink::Reply => p::MAX_INLINE as u64,
        Sink::Shm { len: l, .. } => *l,
        Sink::Guest(l) => l.0.iter().map(|e| u64::from(e.len)).sum(),
    };
    if len > cap {
        return Err(Status::ERROR_INVALID_VALUE);
    }
    usize::try_from(len).map_err(|_| Status::ERROR_INVALID_VALUE)
}

fn strided_total(width: u64, height: u64, depth: u64) -> Result<u64, Status> {
    width
        .checked_mul(height)
        .and_then(|v| v.checked_mul(depth))
        .filter(|t| *t <= MAX_STRIDED_BYTES)
        .ok_or(Status::ERROR_INVALID_VALUE)
}

/// Calls `f(row_index, row_address)` for every row of a strided region.
fn for_each_row(
    region: &DevRegion,
    height: u64,
    depth: u64,
    mut f: impl FnMut(u64, u64) -> Result<(), Status>,
) -> Result<(), Status> {
    let mut i = 0u64;
    for z in 0..depth {
        for y in 0..height {
            let addr = region
                .addr
                .wrapping_add(z.wrapping_mul(region.slice_pitch))
                .wrapping_add(y.wrapping_mul(region.pitch));
            f(i, addr)?;
            i += 1;
        }
    }
    Ok(())
}
