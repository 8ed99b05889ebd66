//! Streams, events, host callbacks, stream capture queries and occupancy.
//!
//! Creating, destroying, recording and waiting are fire-and-forget; synchronise, query and
//! elapsed-time wait for the executor. Host callbacks (`cuLaunchHostFunc`,
//! `cuStreamAddCallback`) run on the calling thread once the stream has drained, which keeps
//! stream order (work enqueued after the callback starts after it returns).

use std::cell::Cell;
use std::ffi::{c_float, c_int, c_uint, c_ulonglong, c_void};

use virtio_cuda::protocol::{self as p, Status};

use crate::api::context::{GREATEST_PRIORITY, LEAST_PRIORITY};
use crate::api::module::resolve_function;
use crate::driver::{driver, Driver, R};
use crate::ffi::{entry, h, ptr, put};
use crate::types::{Handle, HostFn, StreamCallback};

fn create(out: *mut Handle, flags: c_uint, priority: c_int) -> R<()> {
    if out.is_null() {
        return Err(Status::ERROR_INVALID_VALUE);
    }
    let d = driver()?;
    let ctx = d.current_ctx()?;
    let stream = d.alloc_handle()?;
    let priority = priority.clamp(GREATEST_PRIORITY, LEAST_PRIORITY);
    d.send(&p::StreamCreate {
        ctx,
        stream,
        flags,
        priority,
    })?;
    d.objects_mut()
        .streams
        .insert(stream, (ctx, flags, priority));
    // SAFETY: checked non-null; cuda.h: writable.
    unsafe { put(out, ptr(stream)) }
}

fn synchronize(stream: Handle, per_thread: bool) -> R<()> {
    let d = driver()?;
    let (ctx, stream) = d.stream_ctx(h(stream), per_thread)?;
    d.call(&p::StreamSynchronize { ctx, stream })?;
    crate::api::managed::sync_point(d)
}

fn query(stream: Handle, per_thread: bool) -> R<()> {
    let d = driver()?;
    let (ctx, stream) = d.stream_ctx(h(stream), per_thread)?;
    d.call(&p::StreamQuery { ctx, stream }).map(|_| ())
}

fn wait_event(stream: Handle, event: Handle, flags: c_uint, per_thread: bool) -> R<()> {
    let d = driver()?;
    let (ctx, stream) = d.stream_ctx(h(stream), per_thread)?;
    let event = h(event);
    if !d.objects().events.contains_key(&event) {
        return Err(Status::ERROR_INVALID_HANDLE);
    }
    d.send(&p::StreamWaitEvent {
        ctx,
        stream,
        event,
        flags,
    })
}

fn stream_info(d: &Driver, stream: Handle) -> R<(u64, u32, i32)> {
    match h(stream) {
        0..=2 => Ok((d.current_ctx()?, 0, 0)),
        s => d
            .objects()
            .streams
            .get(&s)
            .copied()
            .ok_or(Status::ERROR_INVALID_HANDLE),
    }
}

fn host_func(stream: Handle, f: HostFn, data: *mut c_void, per_thread: bool) -> R<()> {
    let f = f.ok_or(Status::ERROR_INVALID_VALUE)?;
    synchronize(stream, per_thread)?;
    // SAFETY: the application's callback, called with its own user data as cuda.h specifies.
    unsafe { f(data) };
    Ok(())
}

fn add_callback(stream: Handle, cb: StreamCallback, data: *mut c_void, per_thread: bool) -> R<()> {
    let cb = cb.ok_or(Status::ERROR_INVALID_VALUE)?;
    let status = match synchronize(stream, per_thread) {
        Ok(()) => Status::SUCCESS,
        Err(s) => s,
    };
    // SAFETY: the application's callback with the arguments cuda.h specifies.
    unsafe { cb(stream, status.0, data) };
    Ok(())
}

fn record(event: Handle, stream: Handle, per_thread: bool) -> R<()> {
    let d = driver()?;
    let (ctx, stream) = d.stream_ctx(h(stream), per_thread)?;
    let event = h(event);
    if !d.objects().events.contains_key(&event) {
        return Err(Status::ERROR_INVALID_HANDLE);
    }
    d.send(&p::EventRecord { ctx, event, stream })
}

fn event_ctx(d: &Driver, event: Handle) -> R<u64> {
    d.objects()
        .events
        .get(&h(event))
        .map(|(c, _)| *c)
        .ok_or(Status::ERROR_INVALID_HANDLE)
}

fn elapsed(ms: *mut c_float, start: Handle, end: Handle) -> R<()> {
    let d = driver()?;
    let ctx = event_ctx(d, start)?;
    event_ctx(d, end)?;
    let r = d.call(&p::EventElapsedTime {
        ctx,
        start: h(start),
        end: h(end),
    })?;
    // SAFETY: cuda.h: `ms` is null or writable.
    unsafe { put(ms, r.ms) }
}

thread_local! {
    /// `cuThreadExchangeStreamCaptureMode` state (capture itself is not supported).
    static CAPTURE_MODE: Cell<c_uint> = const { Cell::new(0) };
}

fn occupancy(func: Handle, block_size: c_int, dyn_smem: usize, flags: c_uint) -> R<i32> {
    let d = driver()?;
    let f = resolve_function(d, h(func))?;
    let ctx = d
        .objects()
        .functions
        .get(&f)
        .map(|e| e.ctx)
        .ok_or(Status::ERROR_INVALID_HANDLE)?;
    let r = d.call(&p::Occupancy {
        ctx,
        func: f,
        block_size: u32::try_from(block_size).map_err(|_| Status::ERROR_INVALID_VALUE)?,
        dynamic_shared: dyn_smem as u64,
        flags,
    })?;
    Ok(i32::try_from(r.blocks_per_sm).unwrap_or(i32::MAX))
}

/// `CUoccupancyB2DSize`: dynamic shared memory needed for a block size.
type B2DSize = Option<unsafe extern "C" fn(block_size: c_int) -> usize>;

#[allow(clippy::too_many_arguments)]
unsafe fn potential_block_size(
    min_grid: *mut c_int,
    block_size: *mut c_int,
    func: Handle,
    b2d: B2DSize,
    dyn_smem: usize,
    limit: c_int,
    flags: c_uint,
) -> R<()> {
    let d = driver()?;
    let f = resolve_function(d, h(func))?;
    let max_threads = d
        .objects()
        .functions
        .get(&f)
        .map(|e| e.info.max_threads_per_block)
        .unwrap_or(1024) as c_int;
    let ctx = d.current_ctx()?;
    let dev = d
        .objects()
        .contexts
        .get(&ctx)
        .map(|c| c.device)
        .unwrap_or(0);
    let sms = d.attribute(dev, 16)?.max(1);
    let cap = if limit > 0 {
        limit.min(max_threads)
    } else {
        max_threads
    };
    let mut best = (0, 0);
    let mut bs = cap - cap % 32;
    while bs >= 32 {
        let smem = match b2d {
            // SAFETY: the application's callback, called as cuda.h specifies.
            Some(cb) => unsafe { cb(bs) },
            None => dyn_smem,
        };
        let blocks = occupancy(ptr(f), bs, smem, flags)?;
        if blocks * bs > best.0 * best.1 {
            best = (blocks, bs);
        }
        bs -= 32;
    }
    // SAFETY: cuda.h: both out-pointers are writable.
    unsafe {
        put(min_grid, best.0 * sms)?;
        put(block_size, best.1)
    }
}

entry! {
    fn cuStreamCreate(stream: *mut Handle, flags: c_uint) proc(cuStreamCreate 2000) {
        create(stream, flags, 0)
    }

    fn cuStreamCreateWithPriority(stream: *mut Handle, flags: c_uint, priority: c_int) proc(cuStreamCreateWithPriority 5050) {
        create(stream, flags, priority)
    }

    fn cuStreamDestroy_v2(stream: Handle) proc(cuStreamDestroy 4000) {
        let d = driver()?;
        let s = h(stream);
        let (ctx, _, _) = d.objects_mut().streams.remove(&s).ok_or(Status::ERROR_INVALID_HANDLE)?;
        d.send(&p::StreamDestroy { ctx, stream: s })
    }

    fn cuStreamSynchronize(stream: Handle) proc(cuStreamSynchronize 2000) per_thread(cuStreamSynchronize_ptsz, ptds) {
        synchronize(stream, ptds)
    }

    fn cuStreamQuery(stream: Handle) proc(cuStreamQuery 2000) per_thread(cuStreamQuery_ptsz, ptds) {
        query(stream, ptds)
    }

    fn cuStreamWaitEvent(stream: Handle, event: Handle, flags: c_uint) proc(cuStreamWaitEvent 3020) per_thread(cuStreamWaitEvent_ptsz, ptds) {
        wait_event(stream, event, flags, ptds)
    }

    fn cuStreamGetPriority(stream: Handle, priority: *mut c_int) proc(cuStreamGetPriority 5050) per_thread(cuStreamGetPriority_ptsz, _ptds) {
        put(priority, stream_info(driver()?, stream)?.2)
    }

    fn cuStreamGetFlags(stream: Handle, flags: *mut c_uint) proc(cuStreamGetFlags 5050) per_thread(cuStreamGetFlags_ptsz, _ptds) {
        put(flags, stream_info(driver()?, stream)?.1)
    }

    fn cuStreamGetCtx(stream: Handle, ctx: *mut Handle) proc(cuStreamGetCtx 9020) per_thread(cuStreamGetCtx_ptsz, _ptds) {
        put(ctx, ptr(stream_info(driver()?, stream)?.0))
    }

    fn cuStreamGetCtx_v2(stream: Handle, ctx: *mut Handle, green: *mut Handle) proc(cuStreamGetCtx 12050) per_thread(cuStreamGetCtx_v2_ptsz, _ptds) {
        put(ctx, ptr(stream_info(driver()?, stream)?.0))?;
        if !green.is_null() {
            put(green, std::ptr::null_mut())?;
        }
        Ok(())
    }

    fn cuStreamGetId(stream: Handle, id: *mut c_ulonglong) proc(cuStreamGetId 12000) per_thread(cuStreamGetId_ptsz, _ptds) {
        stream_info(driver()?, stream)?;
        put(id, h(stream))
    }

    fn cuStreamGetDevice(stream: Handle, dev: *mut c_int) proc(cuStreamGetDevice 12080) per_thread(cuStreamGetDevice_ptsz, _ptds) {
        let d = driver()?;
        let ctx = stream_info(d, stream)?.0;
        let device = d.objects().contexts.get(&ctx).map(|c| c.device).ok_or(Status::ERROR_INVALID_CONTEXT)?;
        put(dev, device)
    }

    fn cuStreamIsCapturing(stream: Handle, status: *mut c_uint) proc(cuStreamIsCapturing 10000) per_thread(cuStreamIsCapturing_ptsz, _ptds) {
        stream_info(driver()?, stream)?;
        put(status, 0) // CU_STREAM_CAPTURE_STATUS_NONE
    }

    fn cuStreamGetCaptureInfo(stream: Handle, status: *mut c_uint, id: *mut u64) proc(cuStreamGetCaptureInfo 10010) per_thread(cuStreamGetCaptureInfo_ptsz, _ptds) {
        stream_info(driver()?, stream)?;
        put(status, 0)?;
        if !id.is_null() {
            put(id, 0)?;
        }
        Ok(())
    }

    fn cuProfilerStart() proc(cuProfilerStart 4000) {
        Ok(())
    }

    fn cuProfilerStop() proc(cuProfilerStop 4000) {
        Ok(())
    }

    fn cuStreamGetCaptureInfo_v2(stream: Handle, status: *mut c_uint, id: *mut u64, graph: *mut Handle, deps: *mut *const Handle, num: *mut usize) proc(cuStreamGetCaptureInfo 11030) {
        stream_info(driver()?, stream)?;
        put(status, 0)?;
        for (p, v) in [(id.cast::<usize>(), 0), (graph.cast(), 0), (deps.cast(), 0), (num, 0)] {
            if !p.is_null() {
                put(p, v)?;
            }
        }
        Ok(())
    }

    fn cuStreamGetCaptureInfo_v3(stream: Handle, status: *mut c_uint, id: *mut u64, graph: *mut Handle, deps: *mut *const Handle, edges: *mut *const c_void, num: *mut usize) proc(cuStreamGetCaptureInfo 12030) {
        stream_info(driver()?, stream)?;
        put(status, 0)?;
        for (p, v) in [(id.cast::<usize>(), 0), (graph.cast(), 0), (deps.cast(), 0), (edges.cast(), 0), (num, 0)] {
            if !p.is_null() {
                put(p, v)?;
            }
        }
        Ok(())
    }

    fn cuThreadExchangeStreamCaptureMode(mode: *mut c_uint) proc(cuThreadExchangeStreamCaptureMode 10010) {
        if mode.is_null() {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        let new = *mode;
        *mode = CAPTURE_MODE.try_with(|m| m.replace(new)).unwrap_or(0);
        Ok(())
    }

    fn cuLaunchHostFunc(stream: Handle, f: HostFn, data: *mut c_void) proc(cuLaunchHostFunc 10000) per_thread(cuLaunchHostFunc_ptsz, ptds) {
        host_func(stream, f, data, ptds)
    }

    fn cuStreamAddCallback(stream: Handle, cb: StreamCallback, data: *mut c_void, _flags: c_uint) proc(cuStreamAddCallback 5000) per_thread(cuStreamAddCallback_ptsz, ptds) {
        add_callback(stream, cb, data, ptds)
    }

    fn cuEventCreate(event: *mut Handle, flags: c_uint) proc(cuEventCreate 2000) {
        if event.is_null() {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        let d = driver()?;
        let ctx = d.current_ctx()?;
        let e = d.alloc_handle()?;
        d.send(&p::EventCreate { ctx, event: e, flags })?;
        d.objects_mut().events.insert(e, (ctx, flags));
        put(event, ptr(e))
    }

    fn cuEventDestroy_v2(event: Handle) proc(cuEventDestroy 4000) {
        let d = driver()?;
        let (ctx, _) = d.objects_mut().events.remove(&h(event)).ok_or(Status::ERROR_INVALID_HANDLE)?;
        d.send(&p::EventDestroy { ctx, event: h(event) })
    }

    fn cuEventRecord(event: Handle, stream: Handle) proc(cuEventRecord 2000) per_thread(cuEventRecord_ptsz, ptds) {
        record(event, stream, ptds)
    }

    fn cuEventRecordWithFlags(event: Handle, stream: Handle, _flags: c_uint) proc(cuEventRecordWithFlags 11010) per_thread(cuEventRecordWithFlags_ptsz, ptds) {
        record(event, stream, ptds)
    }

    fn cuEventQuery(event: Handle) proc(cuEventQuery 2000) {
        let d = driver()?;
        let ctx = event_ctx(d, event)?;
        d.call(&p::EventQuery { ctx, event: h(event) }).map(|_| ())
    }

    fn cuEventSynchronize(event: Handle) proc(cuEventSynchronize 2000) {
        let d = driver()?;
        let ctx = event_ctx(d, event)?;
        d.call(&p::EventSynchronize { ctx, event: h(event) })?;
        crate::api::managed::sync_point(d)
    }

    fn cuEventElapsedTime(ms: *mut c_float, start: Handle, end: Handle) proc(cuEventElapsedTime 2000) {
        elapsed(ms, start, end)
    }

    fn cuEventElapsedTime_v2(ms: *mut c_float, start: Handle, end: Handle) proc(cuEventElapsedTime 12080) {
        elapsed(ms, start, end)
    }

    fn cuOccupancyMaxActiveBlocksPerMultiprocessor(blocks: *mut c_int, func: Handle, block_size: c_int, dyn_smem: usize) proc(cuOccupancyMaxActiveBlocksPerMultiprocessor 6050) {
        put(blocks, occupancy(func, block_size, dyn_smem, 0)?)
    }

    fn cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(blocks: *mut c_int, func: Handle, block_size: c_int, dyn_smem: usize, flags: c_uint) proc(cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags 7000) {
        put(blocks, occupancy(func, block_size, dyn_smem, flags)?)
    }

    fn cuOccupancyMaxPotentialBlockSize(min_grid: *mut c_int, block_size: *mut c_int, func: Handle, b2d: B2DSize, dyn_smem: usize, limit: c_int) proc(cuOccupancyMaxPotentialBlockSize 6050) {
        potential_block_size(min_grid, block_size, func, b2d, dyn_smem, limit, 0)
    }

    fn cuOccupancyMaxPotentialBlockSizeWithFlags(min_grid: *mut c_int, block_size: *mut c_int, func: Handle, b2d: B2DSize, dyn_smem: usize, limit: c_int, flags: c_uint) proc(cuOccupancyMaxPotentialBlockSizeWithFlags 7000) {
        potential_block_size(min_grid, block_size, func, b2d, dyn_smem, limit, flags)
    }

    fn cuOccupancyAvailableDynamicSMemPerBlock(smem: *mut usize, func: Handle, _blocks: c_int, _block_size: c_int) proc(cuOccupancyAvailableDynamicSMemPerBlock 10020) {
        let d = driver()?;
        let f = resolve_function(d, h(func))?;
        let stat = d.objects().functions.get(&f).map(|e| e.info.static_shared_bytes).unwrap_or(0);
        put(smem, (48 * 1024usize).saturating_sub(stat as usize))
    }
}
