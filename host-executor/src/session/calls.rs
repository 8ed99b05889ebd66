//! Every call's handler, and the dispatch generated from the protocol table.
//!
//! [`virtio_cuda::for_each_call!`] replays the table into `executor_calls!` below, which
//! generates, per call, `args::<Call>`: the request's fields with every role-carrying field
//! resolved ([`super::objects::Resolve`]), and its arm of `Core::dispatch` (resolve, run, then
//! the generic [`Core::finish`]). What is left here is one `impl Run` per call: the work, with
//! the objects already checked. A call without a handler does not compile.

use std::marker::PhantomData;

use tracing::warn;
use virtio_cuda::protocol::{self as p, Call, DevRegion, Empty, Request, Sink, Status};

use super::objects::{roles, FuncEntry, Resolve, Scope};
use super::{encode, Core, Cx, Failed, Handled, Run};
use crate::backend::{BackendSession, Fill, LaunchParams};
use crate::data::{source_bytes, DataAccess};
use crate::session::Backend;

/// Cap on bytes one strided copy may move (guards against absurd shapes).
const MAX_STRIDED_BYTES: u64 = 1 << 34;

/// The type a field has in `args::*`: its own, or what its role resolves to.
macro_rules! arg_ty {
    ($lt:lifetime, $t:ty) => { $t };
    ($lt:lifetime, $t:ty, $role:ident) => { <roles::$role as Resolve<B>>::Out<$lt> };
}

/// A field's value in `args::*`.
macro_rules! arg_val {
    ($scope:ident, $v:expr) => {
        $v
    };
    ($scope:ident, $v:expr, $role:ident) => {
        <roles::$role as Resolve<B>>::resolve($v, $scope)?
    };
}

macro_rules! executor_calls {
    ($(
        $(#[$m:meta])*
        $name:ident = $op:literal, $mode:ident $(+ $flag:ident)? {
            $($(#[$fm:meta])* $f:ident : $t:ty $(as $role:ident)?),* $(,)?
        } -> $reply:ty;
    )*) => {
        /// Each request with its handles resolved: what its handler receives.
        #[allow(dead_code)]
        pub mod args {
            use super::*;
            #[allow(unused_imports)]
            use virtio_cuda::protocol::*;
            $(
                pub struct $name<'t, B: BackendSession> {
                    $(pub $f: arg_ty!('t, $t $(, $role)?),)*
                    pub _session: PhantomData<&'t B>,
                }

                impl<'t, B: BackendSession> $name<'t, B> {
                    #[allow(unused_variables)]
                    pub(in crate::session) fn resolve(
                        r: p::$name,
                        scope: &Scope<'t, B>,
                    ) -> Result<Self, Status> {
                        Ok(Self {
                            $($f: arg_val!(scope, r.$f $(, $role)?),)*
                            _session: PhantomData,
                        })
                    }
                }
            )*
        }

        impl<B: BackendSession> Core<B> {
            /// Resolves, runs and finishes one request.
            pub(in crate::session) fn dispatch(
                &mut self,
                req: Request,
                devices: &dyn Backend,
                data: &dyn DataAccess,
            ) -> crate::session::Outcome {
                match req {
                    $(Request::$name(r) => {
                        let handles = r.handles();
                        let scope = Scope {
                            objs: &self.objs,
                            ctx: handles.ctx(),
                            mem_used: self.be.mem_used(),
                            quota: self.facts.quota,
                        };
                        let (res, created) = match args::$name::resolve(r, &scope) {
                            Ok(a) => {
                                let mut cx = Cx {
                                    be: &mut self.be,
                                    devices,
                                    data,
                                    output: &mut self.output,
                                    facts: self.facts,
                                    created: None,
                                };
                                let res: Handled<$reply> = a.run(&mut cx);
                                let res = res.map(|v| encode(&v)).map_err(|e| {
                                    (e.status, e.body.map(|b| encode(&b)).unwrap_or_default())
                                });
                                (res, cx.created)
                            }
                            // A handle that does not resolve: reported as is, nothing latched
                            // is consumed.
                            Err(s) => return self.finish(stringify!($name), handles, false, Err((s, Vec::new())), None),
                        };
                        self.finish(
                            stringify!($name),
                            handles,
                            <p::$name as Call>::REPORTS_LATCHED,
                            res,
                            created,
                        )
                    })*
                }
            }
        }
    };
}

/// The table's types are named as the protocol module names them.
mod table {
    use super::*;
    #[allow(unused_imports)]
    use virtio_cuda::protocol::*;
    virtio_cuda::for_each_call!(executor_calls);
}

use table::args as a;

/// `impl Run` for one call's arguments, with the reply type.
macro_rules! handler {
    ($call:ident -> $reply:ty, |$r:ident, $cx:ident| $body:block) => {
        impl<B: BackendSession> Run<B> for a::$call<'_, B> {
            type Reply = $reply;
            #[allow(unused_variables)]
            fn run(self, $cx: &mut Cx<'_, B>) -> Handled<$reply> {
                let $r = self;
                $body
            }
        }
    };
}

// ---- session -------------------------------------------------------------------------------

handler!(Hello -> p::HelloReply, |r, cx| {
    let va = cx.be.va_range();
    Ok(p::HelloReply {
        session_id: cx.facts.id,
        handle_base: super::HANDLE_BASE,
        handle_count: super::HANDLE_COUNT,
        va_base: va.base,
        va_size: va.size,
        quota: cx.facts.quota,
        backend: cx.facts.backend_name.to_string(),
    })
});

handler!(Goodbye -> Empty, |r, cx| { Ok(Empty {}) });

// Handled by the unix transport (it carries a file descriptor); elsewhere meaningless.
handler!(AttachChannel -> Empty, |r, cx| { Err(Status::ERROR_NOT_SUPPORTED.into()) });

handler!(Init -> p::InitReply, |r, cx| {
    Ok(p::InitReply {
        driver_version: cx.devices.driver_version(),
        device_count: cx.devices.device_count(),
    })
});

handler!(DeviceInfo -> p::DeviceInfoReply, |r, cx| { Ok(cx.devices.device_info(r.ordinal)?) });

// ---- contexts ------------------------------------------------------------------------------

handler!(CtxCreate -> Empty, |r, cx| {
    if r.device >= cx.devices.device_count() {
        return Err(Status::ERROR_INVALID_DEVICE.into());
    }
    let obj = cx.be.create_context(r.device, r.flags)?;
    cx.create(r.ctx, obj);
    Ok(Empty {})
});

// The session destroys the context and everything created in it.
handler!(CtxDestroy -> Empty, |r, cx| { Ok(Empty {}) });

handler!(CtxSynchronize -> Empty, |r, cx| {
    cx.be.synchronize(r.ctx)?;
    Ok(Empty {})
});

// ---- memory --------------------------------------------------------------------------------

handler!(MemAlloc -> p::MemAllocReply, |r, cx| {
    let dptr = cx.be.mem_alloc(r.ctx, r.size)?;
    Ok(p::MemAllocReply { dptr })
});

handler!(MemFree -> Empty, |r, cx| {
    cx.be.mem_free(r.ctx, r.dptr)?;
    Ok(Empty {})
});

handler!(MemGetInfo -> p::MemInfoReply, |r, cx| {
    let used = cx.be.mem_used();
    Ok(p::MemInfoReply {
        free: cx.facts.quota.saturating_sub(used),
        total: cx.facts.quota,
    })
});

handler!(MemGetAddressRange -> p::AddressRangeReply, |r, cx| {
    let (base, size) = cx.be.address_range(r.dptr)?;
    Ok(p::AddressRangeReply { base, size })
});

// The last piece of a pipelined copy reports the earlier pieces' errors (`latched`).
handler!(MemcpyHtoD -> Empty, |r, cx| {
    match cx.data.source_region(&r.src)? {
        // Straight from the shared window into device memory.
        Some(region) => cx.be.write_region(r.ctx, r.stream, r.dst, region)?,
        None => {
            let bytes = source_bytes(cx.data, r.src)?;
            cx.be.write(r.ctx, r.stream, r.dst, &bytes)?
        }
    }
    Ok(Empty {})
});

handler!(MemcpyDtoH -> p::DataReply, |r, cx| {
    let len = checked_len(r.len, &r.dst)?;
    if let Some(region) = cx.data.sink_region(&r.dst, len as u64)? {
        cx.be.read_region(r.ctx, r.stream, r.src, region)?;
        return Ok(p::DataReply { data: Vec::new() });
    }
    let mut buf = host_buffer(len as u64, cx.be.mem_used())?;
    cx.be.read(r.ctx, r.stream, r.src, &mut buf)?;
    Ok(deliver(cx.data, &r.dst, buf)?)
});

handler!(MemcpyDtoD -> Empty, |r, cx| {
    cx.be.copy(r.ctx, r.stream, r.dst, r.src, r.len)?;
    Ok(Empty {})
});

handler!(Memset -> Empty, |r, cx| {
    if !matches!(r.elem_size, 1 | 2 | 4) {
        return Err(Status::ERROR_INVALID_VALUE.into());
    }
    let row = r
        .width
        .checked_mul(u64::from(r.elem_size))
        .ok_or(Status::ERROR_INVALID_VALUE)?;
    if row == 0 || r.height == 0 {
        return Ok(Empty {});
    }
    check_region(r.pitch, 0, row, r.height, 1, cx.be.mem_used())?;
    let fill = Fill {
        dst: r.dst,
        pitch: r.pitch,
        elem_size: r.elem_size,
        value: r.value,
        width: r.width,
        height: r.height,
    };
    cx.be.memset(r.ctx, r.stream, fill)?;
    Ok(Empty {})
});

handler!(MemcpyHtoDStrided -> Empty, |r, cx| {
    let total = strided_total(r.width_bytes, r.height, r.depth)?;
    if total == 0 {
        return Ok(Empty {});
    }
    check_strided(&r.dst, r.width_bytes, r.height, r.depth, cx.be.mem_used())?;
    let bytes = source_bytes(cx.data, r.src)?;
    if bytes.len() as u64 != total {
        return Err(Status::ERROR_INVALID_VALUE.into());
    }
    let w = r.width_bytes as usize;
    for_each_row(&r.dst, r.height, r.depth, |i, addr| {
        let off = i as usize * w;
        cx.be.write(r.ctx, r.stream, addr, &bytes[off..off + w])
    })?;
    Ok(Empty {})
});

handler!(MemcpyDtoHStrided -> p::DataReply, |r, cx| {
    let total = strided_total(r.width_bytes, r.height, r.depth)?;
    if total == 0 {
        return Ok(deliver(cx.data, &r.dst, Vec::new())?);
    }
    check_strided(&r.src, r.width_bytes, r.height, r.depth, cx.be.mem_used())?;
    let len = checked_len(total, &r.dst)?;
    let mut buf = host_buffer(len as u64, cx.be.mem_used())?;
    let w = r.width_bytes as usize;
    for_each_row(&r.src, r.height, r.depth, |i, addr| {
        let off = i as usize * w;
        cx.be.read(r.ctx, r.stream, addr, &mut buf[off..off + w])
    })?;
    Ok(deliver(cx.data, &r.dst, buf)?)
});

handler!(MemcpyDtoDStrided -> Empty, |r, cx| {
    if strided_total(r.width_bytes, r.height, r.depth)? == 0 {
        return Ok(Empty {});
    }
    let used = cx.be.mem_used();
    check_strided(&r.src, r.width_bytes, r.height, r.depth, used)?;
    check_strided(&r.dst, r.width_bytes, r.height, r.depth, used)?;
    let src = &r.src;
    let rows = r.height.max(1);
    for_each_row(&r.dst, r.height, r.depth, |i, dst| {
        let (z, y) = (i / rows, i % rows);
        let saddr = src
            .addr
            .wrapping_add(z.wrapping_mul(src.slice_pitch))
            .wrapping_add(y.wrapping_mul(src.pitch));
        cx.be.copy(r.ctx, r.stream, dst, saddr, r.width_bytes)
    })?;
    Ok(Empty {})
});

// ---- modules and functions -----------------------------------------------------------------

handler!(ModuleLoad -> p::ModuleLoadReply, |r, cx| {
    let image = source_bytes(cx.data, r.image)?;
    match cx.be.load_module(r.ctx, &image) {
        Ok((obj, log)) => {
            cx.create(r.module, obj);
            Ok(p::ModuleLoadReply { log })
        }
        Err(e) => {
            warn!(session = cx.facts.id, status = %e.status, "module load failed: {}", e.log);
            Err(Failed {
                status: e.status,
                body: Some(p::ModuleLoadReply { log: e.log }),
            })
        }
    }
});

// The session unloads the module and forgets its functions.
handler!(ModuleUnload -> Empty, |r, cx| { Ok(Empty {}) });

handler!(ModuleGetFunction -> p::FuncInfo, |r, cx| {
    let (obj, info) = cx.be.get_function(r.module.obj, &r.name)?;
    let entry = FuncEntry {
        module: r.module.id,
        obj,
        info: info.clone(),
    };
    cx.create(r.func, entry);
    Ok(info)
});

handler!(ModuleGetFunctionCount -> p::CountReply, |r, cx| {
    Ok(p::CountReply {
        count: cx.be.function_count(r.module.obj)?,
    })
});

handler!(ModuleGetFunctionNames -> p::NamesReply, |r, cx| {
    Ok(p::NamesReply {
        names: p::List(cx.be.function_names(r.module.obj)?),
    })
});

handler!(ModuleGetGlobal -> p::GlobalReply, |r, cx| {
    let (dptr, size) = cx.be.get_global(r.module.obj, &r.name)?;
    Ok(p::GlobalReply { dptr, size })
});

handler!(FuncSetAttribute -> Empty, |r, cx| {
    cx.be.set_function_attribute(r.func.obj, r.attr, r.value)?;
    Ok(Empty {})
});

handler!(Occupancy -> p::OccupancyReply, |r, cx| {
    let blocks_per_sm = cx.be.occupancy(r.func.obj, r.block_size, r.dynamic_shared)?;
    Ok(p::OccupancyReply { blocks_per_sm })
});

// ---- execution -----------------------------------------------------------------------------

handler!(Launch -> Empty, |r, cx| {
    let needed = r
        .func
        .info
        .params
        .0
        .iter()
        .map(|p| u64::from(p.offset) + u64::from(p.size))
        .max()
        .unwrap_or(0);
    if (r.params.len() as u64) < needed {
        return Err(Status::ERROR_INVALID_VALUE.into());
    }
    let launch = LaunchParams {
        grid: r.grid,
        block: r.block,
        shared_bytes: r.shared_bytes,
        cooperative: r.flags & p::LAUNCH_FLAG_COOPERATIVE != 0,
        params: &r.params,
    };
    let func = (r.func.obj, r.func.module);
    cx.be.launch(r.ctx, func, r.stream, &launch, cx.output)?;
    Ok(Empty {})
});

// ---- streams -------------------------------------------------------------------------------

handler!(StreamCreate -> Empty, |r, cx| {
    let obj = cx.be.create_stream(r.ctx, r.flags, r.priority)?;
    cx.create(r.stream, obj);
    Ok(Empty {})
});

// The session destroys the stream.
handler!(StreamDestroy -> Empty, |r, cx| { Ok(Empty {}) });

handler!(StreamSynchronize -> Empty, |r, cx| {
    cx.be.stream_synchronize(r.ctx, r.stream)?;
    Ok(Empty {})
});

handler!(StreamQuery -> Empty, |r, cx| {
    if !cx.be.stream_query(r.ctx, r.stream)? {
        return Err(Status::ERROR_NOT_READY.into());
    }
    Ok(Empty {})
});

handler!(StreamWaitEvent -> Empty, |r, cx| {
    cx.be.stream_wait_event(r.ctx, r.stream, r.event)?;
    Ok(Empty {})
});

// ---- events --------------------------------------------------------------------------------

handler!(EventCreate -> Empty, |r, cx| {
    let obj = cx.be.create_event(r.ctx, r.flags)?;
    cx.create(r.event, obj);
    Ok(Empty {})
});

// The session destroys the event.
handler!(EventDestroy -> Empty, |r, cx| { Ok(Empty {}) });

handler!(EventRecord -> Empty, |r, cx| {
    cx.be.record_event(r.ctx, r.event, r.stream)?;
    Ok(Empty {})
});

handler!(EventQuery -> Empty, |r, cx| {
    if !cx.be.event_query(r.event)? {
        return Err(Status::ERROR_NOT_READY.into());
    }
    Ok(Empty {})
});

handler!(EventSynchronize -> Empty, |r, cx| {
    cx.be.event_synchronize(r.event)?;
    Ok(Empty {})
});

handler!(EventElapsedTime -> p::ElapsedReply, |r, cx| {
    let ms = cx.be.event_elapsed_ms(r.start, r.end)?;
    Ok(p::ElapsedReply { ms })
});

// ---- helpers -------------------------------------------------------------------------------

/// Sends read bytes to their sink: the reply body, or out of band.
fn deliver(data: &dyn DataAccess, sink: &Sink, buf: Vec<u8>) -> Result<p::DataReply, Status> {
    match sink {
        Sink::Reply => Ok(p::DataReply { data: buf }),
        other => {
            data.write_sink(other, &buf)?;
            Ok(p::DataReply { data: Vec::new() })
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

/// A host buffer for `len` bytes read from the device. A valid source lies in the session's
/// allocations, so `len` never exceeds what the session has allocated (`mem_used`), whatever
/// the request or its sink claims; the buffer is reserved fallibly besides.
fn host_buffer(len: u64, mem_used: u64) -> Result<Vec<u8>, Status> {
    if len > mem_used {
        return Err(Status::ERROR_INVALID_VALUE);
    }
    let len = usize::try_from(len).map_err(|_| Status::ERROR_INVALID_VALUE)?;
    let mut buf = Vec::new();
    buf.try_reserve_exact(len)
        .map_err(|_| Status::ERROR_OUT_OF_MEMORY)?;
    buf.resize(len, 0);
    Ok(buf)
}

/// Rows of `row` bytes, `pitch` apart, in slices `slice_pitch` apart: rows may not overlap
/// (as `cuMemcpy2D/3D` require: pitch ≥ width, slice pitch ≥ pitch × height), and the span
/// they cover must fit what the session has allocated, since every row must lie in an
/// allocation. This bounds the number of rows any request can make the executor walk.
fn check_region(
    pitch: u64,
    slice_pitch: u64,
    row: u64,
    height: u64,
    depth: u64,
    mem_used: u64,
) -> Result<(), Status> {
    let bad = Err(Status::ERROR_INVALID_VALUE);
    if row == 0 || height == 0 || depth == 0 {
        return Ok(());
    }
    if height > 1 && pitch < row {
        return bad;
    }
    let slice = pitch
        .checked_mul(height - 1)
        .and_then(|v| v.checked_add(row))
        .ok_or(Status::ERROR_INVALID_VALUE)?;
    if depth > 1 && slice_pitch < slice {
        return bad;
    }
    // The rows' addresses must not wrap around.
    slice_pitch
        .checked_mul(depth - 1)
        .and_then(|v| v.checked_add(slice))
        .ok_or(Status::ERROR_INVALID_VALUE)?;
    // Non-overlapping rows inside allocations: their bytes, and the span, fit what is allocated.
    let bytes = row.checked_mul(height).and_then(|v| v.checked_mul(depth));
    if bytes.is_none_or(|b| b > mem_used) {
        return bad;
    }
    Ok(())
}

fn check_strided(
    region: &DevRegion,
    width: u64,
    height: u64,
    depth: u64,
    mem_used: u64,
) -> Result<(), Status> {
    check_region(
        region.pitch,
        region.slice_pitch,
        width,
        height,
        depth,
        mem_used,
    )
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
