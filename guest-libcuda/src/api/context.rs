//! Contexts: primary and regular, and the calling thread's context stack.
//!
//! Context creation is fire-and-forget (the handle is chosen here); the thread-local stack
//! lives only in the shim. Limits, cache and shared-memory configuration are kept locally.

use std::ffi::{c_int, c_uint, c_void};

use virtio_cuda::protocol::{self as p, Status};

use crate::driver::{self, driver, CtxInfo, Driver, R};
use crate::ffi::{entry, get, h, ptr, put};
use crate::types::{CUdevice, CtxCreateParams, Handle};

/// `cuCtxGetLimit` defaults: stack size, printf FIFO, malloc heap, sync depth, pending
/// launches, L2 fetch granularity, persisting L2 size.
const DEFAULT_LIMITS: [u64; 7] = [1024, 1 << 20, 8 << 20, 2, 2048, 32, 0];

/// Stream priorities: 0 is the lowest, -5 the highest (like current GPUs).
pub const LEAST_PRIORITY: i32 = 0;
pub const GREATEST_PRIORITY: i32 = -5;

/// Creates a context on `dev` and returns its handle.
fn create(d: &Driver, dev: CUdevice, flags: u32, primary: bool) -> R<u64> {
    d.device(dev)?;
    let ctx = d.alloc_handle()?;
    let wire_flags = if primary {
        flags | p::CTX_FLAG_PRIMARY
    } else {
        flags
    };
    d.send(&p::CtxCreate {
        ctx,
        device: u32::try_from(dev).map_err(|_| Status::ERROR_INVALID_DEVICE)?,
        flags: wire_flags,
    })?;
    d.objects_mut().contexts.insert(
        ctx,
        CtxInfo {
            device: dev,
            flags,
            primary,
            limits: DEFAULT_LIMITS,
        },
    );
    Ok(ctx)
}

/// Destroys a context and forgets every object it owned.
fn destroy(d: &Driver, ctx: u64) -> R<()> {
    {
        let mut o = d.objects_mut();
        o.contexts
            .remove(&ctx)
            .ok_or(Status::ERROR_INVALID_CONTEXT)?;
        o.streams.retain(|_, (c, _, _)| *c != ctx);
        o.events.retain(|_, (c, _)| *c != ctx);
        let dead: Vec<u64> = o
            .modules
            .iter()
            .filter(|(_, m)| m.ctx == ctx)
            .map(|(h, _)| *h)
            .collect();
        for m in &dead {
            o.modules.remove(m);
        }
        o.functions.retain(|_, f| f.ctx != ctx);
        for lib in o.libraries.values_mut() {
            lib.modules.remove(&ctx);
        }
    }
    d.send(&p::CtxDestroy { ctx })
}

/// The context `ctx` names, or the current one when it is NULL.
pub fn ctx_or_current(d: &Driver, ctx: u64) -> R<u64> {
    if ctx == 0 {
        return d.current_ctx();
    }
    if d.objects().contexts.contains_key(&ctx) {
        Ok(ctx)
    } else {
        Err(Status::ERROR_INVALID_CONTEXT)
    }
}

fn ctx_info(d: &Driver, ctx: u64) -> R<CtxInfo> {
    d.objects()
        .contexts
        .get(&ctx)
        .cloned()
        .ok_or(Status::ERROR_INVALID_CONTEXT)
}

/// Retains the primary context of `dev`, creating it on first use.
pub fn primary_retain(d: &Driver, dev: CUdevice) -> R<u64> {
    d.device(dev)?;
    let _g = d.lock_primary();
    if let Some((ctx, n)) = d.objects_mut().primary.get_mut(&dev) {
        *n += 1;
        return Ok(*ctx);
    }
    let flags = d.objects().primary_flags.get(&dev).copied().unwrap_or(0);
    let ctx = create(d, dev, flags, true)?;
    d.objects_mut().primary.insert(dev, (ctx, 1));
    Ok(ctx)
}

fn primary_release(dev: CUdevice) -> R<()> {
    let d = driver()?;
    d.device(dev)?;
    let _g = d.lock_primary();
    let ctx = {
        let mut o = d.objects_mut();
        let (ctx, n) = o
            .primary
            .get_mut(&dev)
            .ok_or(Status::ERROR_INVALID_CONTEXT)?;
        *n -= 1;
        if *n > 0 {
            return Ok(());
        }
        let ctx = *ctx;
        o.primary.remove(&dev);
        ctx
    };
    destroy(d, ctx)
}

fn primary_reset(dev: CUdevice) -> R<()> {
    let d = driver()?;
    d.device(dev)?;
    let _g = d.lock_primary();
    let entry = d.objects_mut().primary.remove(&dev);
    match entry {
        Some((ctx, _)) => destroy(d, ctx),
        None => Ok(()),
    }
}

fn primary_set_flags(dev: CUdevice, flags: c_uint) -> R<()> {
    let d = driver()?;
    d.device(dev)?;
    let mut o = d.objects_mut();
    o.primary_flags.insert(dev, flags);
    if let Some((ctx, _)) = o.primary.get(&dev).copied() {
        if let Some(c) = o.contexts.get_mut(&ctx) {
            c.flags = flags;
        }
    }
    Ok(())
}

fn ctx_create(pctx: *mut Handle, flags: c_uint, dev: CUdevice) -> R<()> {
    if pctx.is_null() {
        return Err(Status::ERROR_INVALID_VALUE);
    }
    let d = driver()?;
    let ctx = create(d, dev, flags, false)?;
    driver::push_current(ctx);
    // SAFETY: checked non-null above; cuda.h: `pctx` is writable.
    unsafe { put(pctx, ptr(ctx)) }
}

fn synchronize(ctx: u64) -> R<()> {
    let d = driver()?;
    let ctx = ctx_or_current(d, ctx)?;
    d.call(&p::CtxSynchronize { ctx })?;
    crate::api::managed::sync_point(d)
}

entry! {
    fn cuDevicePrimaryCtxRetain(pctx: *mut Handle, dev: CUdevice) proc(cuDevicePrimaryCtxRetain 7000) {
        if pctx.is_null() {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        let ctx = primary_retain(driver()?, dev)?;
        put(pctx, ptr(ctx))
    }

    fn cuDevicePrimaryCtxRelease(dev: CUdevice) proc(cuDevicePrimaryCtxRelease 7000) {
        primary_release(dev)
    }

    fn cuDevicePrimaryCtxRelease_v2(dev: CUdevice) proc(cuDevicePrimaryCtxRelease 11000) {
        primary_release(dev)
    }

    fn cuDevicePrimaryCtxReset(dev: CUdevice) proc(cuDevicePrimaryCtxReset 7000) {
        primary_reset(dev)
    }

    fn cuDevicePrimaryCtxReset_v2(dev: CUdevice) proc(cuDevicePrimaryCtxReset 11000) {
        primary_reset(dev)
    }

    fn cuDevicePrimaryCtxSetFlags(dev: CUdevice, flags: c_uint) proc(cuDevicePrimaryCtxSetFlags 7000) {
        primary_set_flags(dev, flags)
    }

    fn cuDevicePrimaryCtxSetFlags_v2(dev: CUdevice, flags: c_uint) proc(cuDevicePrimaryCtxSetFlags 11000) {
        primary_set_flags(dev, flags)
    }

    fn cuDevicePrimaryCtxGetState(dev: CUdevice, flags: *mut c_uint, active: *mut c_int) proc(cuDevicePrimaryCtxGetState 7000) {
        let d = driver()?;
        d.device(dev)?;
        let o = d.objects();
        let f = o.primary_flags.get(&dev).copied().unwrap_or(0);
        let a = o.primary.contains_key(&dev);
        put(flags, f)?;
        put(active, c_int::from(a))
    }

    fn cuCtxCreate_v2(pctx: *mut Handle, flags: c_uint, dev: CUdevice) proc(cuCtxCreate 3020) {
        ctx_create(pctx, flags, dev)
    }

    fn cuCtxCreate_v3(pctx: *mut Handle, params: *mut c_void, num_params: c_int, flags: c_uint, dev: CUdevice) proc(cuCtxCreate 11040) {
        if num_params > 0 && !params.is_null() {
            // SM-count affinity partitions a real GPU (MPS); a remote device has no such
            // partitions, which is what the driver says where it lacks them.
            return Err(Status::ERROR_UNSUPPORTED_EXEC_AFFINITY);
        }
        ctx_create(pctx, flags, dev)
    }

    fn cuCtxCreate_v4(pctx: *mut Handle, params: *mut CtxCreateParams, flags: c_uint, dev: CUdevice) proc(cuCtxCreate 12050) {
        if !params.is_null() {
            // SAFETY: cuda.h: a `CUctxCreateParams` when non-null.
            let p = unsafe { get(params) }?;
            if p.numExecAffinityParams > 0 && !p.execAffinityParams.is_null() {
                return Err(Status::ERROR_UNSUPPORTED_EXEC_AFFINITY);
            }
            if !p.cigParams.is_null() {
                // CUDA-in-graphics sharing needs a graphics API context on the same GPU.
                return Err(Status::ERROR_NOT_SUPPORTED);
            }
        }
        ctx_create(pctx, flags, dev)
    }

    fn cuCtxDestroy_v2(ctx: Handle) proc(cuCtxDestroy 4000) {
        let d = driver()?;
        let ctx = h(ctx);
        if ctx_info(d, ctx)?.primary {
            return Err(Status::ERROR_INVALID_CONTEXT);
        }
        destroy(d, ctx)?;
        if driver::current_ctx_raw() == ctx {
            driver::pop_current();
        }
        Ok(())
    }

    fn cuCtxPushCurrent_v2(ctx: Handle) proc(cuCtxPushCurrent 4000) {
        let d = driver()?;
        let ctx = h(ctx);
        ctx_info(d, ctx)?;
        driver::push_current(ctx);
        Ok(())
    }

    fn cuCtxPopCurrent_v2(pctx: *mut Handle) proc(cuCtxPopCurrent 4000) {
        driver()?;
        let ctx = driver::pop_current().ok_or(Status::ERROR_INVALID_CONTEXT)?;
        if !pctx.is_null() {
            put(pctx, ptr(ctx))?;
        }
        Ok(())
    }

    fn cuCtxSetCurrent(ctx: Handle) proc(cuCtxSetCurrent 4000) {
        let d = driver()?;
        let ctx = h(ctx);
        if ctx != 0 {
            ctx_info(d, ctx)?;
        }
        driver::set_current(ctx);
        Ok(())
    }

    fn cuCtxGetCurrent(pctx: *mut Handle) proc(cuCtxGetCurrent 4000) {
        driver()?;
        put(pctx, ptr(driver::current_ctx_raw()))
    }

    fn cuCtxGetDevice(dev: *mut CUdevice) proc(cuCtxGetDevice 2000) {
        let d = driver()?;
        let ctx = d.current_ctx()?;
        put(dev, ctx_info(d, ctx)?.device)
    }

    fn cuCtxGetDevice_v2(dev: *mut CUdevice, ctx: Handle) proc(cuCtxGetDevice 13000) {
        let d = driver()?;
        let ctx = ctx_or_current(d, h(ctx))?;
        put(dev, ctx_info(d, ctx)?.device)
    }

    fn cuCtxGetFlags(flags: *mut c_uint) proc(cuCtxGetFlags 7000) {
        let d = driver()?;
        let ctx = d.current_ctx()?;
        put(flags, ctx_info(d, ctx)?.flags)
    }

    fn cuCtxSetFlags(flags: c_uint) proc(cuCtxSetFlags 12010) {
        let d = driver()?;
        let ctx = d.current_ctx()?;
        if let Some(c) = d.objects_mut().contexts.get_mut(&ctx) {
            c.flags = flags;
        }
        Ok(())
    }

    fn cuCtxGetId(ctx: Handle, id: *mut u64) proc(cuCtxGetId 12000) {
        let d = driver()?;
        put(id, ctx_or_current(d, h(ctx))?)
    }

    fn cuCtxSynchronize() proc(cuCtxSynchronize 2000) {
        synchronize(0)
    }

    fn cuCtxSynchronize_v2(ctx: Handle) proc(cuCtxSynchronize 13000) {
        synchronize(h(ctx))
    }

    fn cuCtxGetApiVersion(ctx: Handle, version: *mut c_uint) proc(cuCtxGetApiVersion 3020) {
        let d = driver()?;
        ctx_or_current(d, h(ctx))?;
        put(version, 3020)
    }

    fn cuCtxGetLimit(value: *mut usize, limit: c_uint) proc(cuCtxGetLimit 3010) {
        let d = driver()?;
        let ctx = d.current_ctx()?;
        let limits = ctx_info(d, ctx)?.limits;
        let v = limits
            .get(limit as usize)
            .ok_or(Status::ERROR_UNSUPPORTED_LIMIT)?;
        put(value, usize::try_from(*v).unwrap_or(usize::MAX))
    }

    fn cuCtxSetLimit(limit: c_uint, value: usize) proc(cuCtxSetLimit 3010) {
        let d = driver()?;
        let ctx = d.current_ctx()?;
        let mut o = d.objects_mut();
        let c = o.contexts.get_mut(&ctx).ok_or(Status::ERROR_INVALID_CONTEXT)?;
        let slot = c
            .limits
            .get_mut(limit as usize)
            .ok_or(Status::ERROR_UNSUPPORTED_LIMIT)?;
        *slot = value as u64;
        Ok(())
    }

    fn cuCtxGetCacheConfig(config: *mut c_uint) proc(cuCtxGetCacheConfig 3020) {
        driver()?.current_ctx()?;
        put(config, 0)
    }

    fn cuCtxSetCacheConfig(_config: c_uint) proc(cuCtxSetCacheConfig 3020) {
        driver()?.current_ctx()?;
        Ok(())
    }

    fn cuCtxGetSharedMemConfig(config: *mut c_uint) proc(cuCtxGetSharedMemConfig 4020) {
        driver()?.current_ctx()?;
        put(config, 0)
    }

    fn cuCtxSetSharedMemConfig(_config: c_uint) proc(cuCtxSetSharedMemConfig 4020) {
        driver()?.current_ctx()?;
        Ok(())
    }

    fn cuCtxGetStreamPriorityRange(least: *mut c_int, greatest: *mut c_int) proc(cuCtxGetStreamPriorityRange 5050) {
        if !least.is_null() {
            put(least, LEAST_PRIORITY)?;
        }
        if !greatest.is_null() {
            put(greatest, GREATEST_PRIORITY)?;
        }
        Ok(())
    }

    fn cuCtxResetPersistingL2Cache() proc(cuCtxResetPersistingL2Cache 11000) {
        driver()?.current_ctx()?;
        Ok(())
    }
}
