//! Kernel launches: marshalling `kernelParams` / `extra` into the packed parameter block the
//! executor expects (layout from `ModuleGetFunction`'s [`p::FuncInfo`]), then one
//! fire-and-forget request. A launch costs the caller a table lookup, a copy of the
//! parameters and an enqueue.

use std::ffi::{c_uint, c_void};

use virtio_cuda::protocol::{self as p, Status};

use crate::api::module::resolve_function;
use crate::driver::{driver, R};
use crate::ffi::{bytes, entry, get, h};
use crate::types::{
    Handle, LaunchAttribute, LaunchConfig, LAUNCH_ATTRIBUTE_COOPERATIVE,
    LAUNCH_PARAM_BUFFER_POINTER, LAUNCH_PARAM_BUFFER_SIZE, LAUNCH_PARAM_END,
};

/// One launch, as the C entry points describe it.
pub struct Launch {
    pub func: Handle,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared: u32,
    pub stream: Handle,
    pub params: *mut *mut c_void,
    pub extra: *mut *mut c_void,
    pub flags: u32,
    pub per_thread: bool,
}

/// Packs the parameters from the `extra` array (`CU_LAUNCH_PARAM_BUFFER_POINTER` form).
unsafe fn pack_extra(extra: *mut *mut c_void) -> R<Vec<u8>> {
    let mut buf: *const u8 = std::ptr::null();
    let mut size: Option<usize> = None;
    for i in (0..64).step_by(2) {
        // SAFETY: `extra` is a LAUNCH_PARAM_END-terminated list of (key, value) pairs.
        let key = unsafe { get(extra.add(i)) }? as usize;
        if key == LAUNCH_PARAM_END {
            break;
        }
        // SAFETY: as above; every key but END is followed by its value.
        let val = unsafe { get(extra.add(i + 1)) }?;
        match key {
            LAUNCH_PARAM_BUFFER_POINTER => buf = val.cast(),
            // SAFETY: the value of BUFFER_SIZE points to a size_t.
            LAUNCH_PARAM_BUFFER_SIZE => size = Some(unsafe { get(val.cast::<usize>()) }?),
            _ => return Err(Status::ERROR_INVALID_VALUE),
        }
    }
    let size = size.ok_or(Status::ERROR_INVALID_VALUE)?;
    // SAFETY: BUFFER_POINTER points to BUFFER_SIZE bytes.
    Ok(unsafe { bytes(buf, size) }?.to_vec())
}

/// `CUdevice_attribute` and `CUfunction_attribute` values the launch checks read.
mod limit {
    pub const MAX_THREADS_PER_BLOCK: u32 = 1;
    pub const MAX_BLOCK_DIM: [u32; 3] = [2, 3, 4];
    pub const MAX_GRID_DIM: [u32; 3] = [5, 6, 7];
    pub const MAX_SHARED_MEMORY_PER_BLOCK: u32 = 8;
    pub const MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: u32 = 97;
    /// `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`.
    pub const FUNC_MAX_DYNAMIC_SHARED: u32 = 8;
}

/// The checks the driver makes before it accepts a launch, synchronously (a launch is
/// otherwise fire-and-forget): every grid and block dimension at least 1 and within the
/// device's limits, the block's threads within the device's and the function's limit, and the
/// dynamic shared memory within the function's `MAX_DYNAMIC_SHARED_SIZE_BYTES` (by default what
/// the per-block limit leaves beside its static shared memory; raised with
/// `cuFuncSetAttribute`, at most to the opt-in limit). `CUDA_ERROR_INVALID_VALUE` otherwise, as
/// the driver answers. A limit the device does not report is not checked.
fn check_launch(
    d: &crate::driver::Driver,
    device: i32,
    f: &crate::driver::FuncEntry,
    l: &Launch,
) -> R<()> {
    let bad = Err(Status::ERROR_INVALID_VALUE);
    let limit = |attr| {
        d.attribute(device, attr)
            .map(|v| u64::try_from(v).unwrap_or(0))
    };
    if l.grid.contains(&0) || l.block.contains(&0) {
        return bad;
    }
    for i in 0..3 {
        let (g, b) = (
            limit(limit::MAX_GRID_DIM[i])?,
            limit(limit::MAX_BLOCK_DIM[i])?,
        );
        if (g != 0 && u64::from(l.grid[i]) > g) || (b != 0 && u64::from(l.block[i]) > b) {
            return bad;
        }
    }
    let threads: u64 = l.block.iter().map(|&b| u64::from(b)).product();
    let device_max = limit(limit::MAX_THREADS_PER_BLOCK)?;
    let func_max = u64::from(f.info.max_threads_per_block);
    if (device_max != 0 && threads > device_max) || (func_max != 0 && threads > func_max) {
        return bad;
    }
    let per_block = limit(limit::MAX_SHARED_MEMORY_PER_BLOCK)?;
    if per_block != 0 {
        let static_bytes = u64::from(f.info.static_shared_bytes);
        let optin = limit(limit::MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?.max(per_block);
        let dynamic_max = f
            .attrs
            .iter()
            .find(|(a, _)| *a == limit::FUNC_MAX_DYNAMIC_SHARED)
            .map(|&(_, v)| u64::try_from(v).unwrap_or(0))
            .unwrap_or(per_block.saturating_sub(static_bytes))
            .min(optin.saturating_sub(static_bytes));
        if u64::from(l.shared) > dynamic_max {
            return bad;
        }
    }
    Ok(())
}

/// Enqueues a launch.
///
/// # Safety
/// `l.params`/`l.extra` follow the `cuLaunchKernel` contract.
pub unsafe fn launch(l: Launch) -> R<()> {
    let d = driver()?;
    let func = resolve_function(d, h(l.func))?;
    crate::api::managed::before_device_work(d)?;
    let (ctx, stream) = d.stream_ctx(h(l.stream), l.per_thread)?;
    let o = d.objects();
    let f = o.functions.get(&func).ok_or(Status::ERROR_INVALID_HANDLE)?;
    if f.ctx != ctx {
        // A function belongs to the context its module was loaded in.
        return Err(Status::ERROR_INVALID_HANDLE);
    }
    let device = o
        .contexts
        .get(&ctx)
        .map(|c| c.device)
        .ok_or(Status::ERROR_INVALID_CONTEXT)?;
    check_launch(d, device, f, &l)?;
    let params = if !l.params.is_null() {
        let layout = &f.info.params.0;
        let total = layout
            .iter()
            .map(|p| p.offset as usize + p.size as usize)
            .max()
            .unwrap_or(0);
        let mut block = vec![0u8; total];
        for (i, pi) in layout.iter().enumerate() {
            // SAFETY: `kernelParams` has one pointer per kernel parameter.
            let arg = unsafe { get(l.params.add(i)) }?;
            // SAFETY: each pointer addresses a value of the parameter's size.
            let src = unsafe { bytes(arg.cast(), pi.size as usize) }?;
            block[pi.offset as usize..(pi.offset + pi.size) as usize].copy_from_slice(src);
        }
        block
    } else if !l.extra.is_null() {
        // SAFETY: per this function's contract.
        unsafe { pack_extra(l.extra) }?
    } else if f.info.params.0.is_empty() {
        Vec::new()
    } else {
        return Err(Status::ERROR_INVALID_VALUE);
    };
    let req = p::Launch {
        ctx: f.ctx,
        func,
        stream,
        grid: l.grid,
        block: l.block,
        shared_bytes: l.shared,
        flags: l.flags,
        params,
    };
    drop(o);
    d.send(&req)
}

#[allow(clippy::too_many_arguments)]
fn classic(
    f: Handle,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    shared: c_uint,
    stream: Handle,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
    flags: u32,
    per_thread: bool,
) -> R<()> {
    let l = Launch {
        func: f,
        grid: [gx, gy, gz],
        block: [bx, by, bz],
        shared,
        stream,
        params,
        extra,
        flags,
        per_thread,
    };
    // SAFETY: the arguments come straight from the cuLaunchKernel contract.
    unsafe { launch(l) }
}

unsafe fn launch_ex(
    config: *const LaunchConfig,
    f: Handle,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
    per_thread: bool,
) -> R<()> {
    // SAFETY: cuda.h: `config` is null or a valid configuration.
    let c = unsafe { get(config) }?;
    let mut flags = 0;
    for i in 0..c.numAttrs as usize {
        // SAFETY: `attrs` holds `numAttrs` entries.
        let a: LaunchAttribute = unsafe { get(c.attrs.add(i)) }?;
        if a.id == LAUNCH_ATTRIBUTE_COOPERATIVE && a.value[0] as u32 != 0 {
            flags |= p::LAUNCH_FLAG_COOPERATIVE;
        }
    }
    let l = Launch {
        func: f,
        grid: [c.gridDimX, c.gridDimY, c.gridDimZ],
        block: [c.blockDimX, c.blockDimY, c.blockDimZ],
        shared: c.sharedMemBytes,
        stream: c.hStream,
        params,
        extra,
        flags,
        per_thread,
    };
    // SAFETY: per the cuLaunchKernelEx contract.
    unsafe { launch(l) }
}

entry! {
    fn cuLaunchKernel(f: Handle, gx: c_uint, gy: c_uint, gz: c_uint, bx: c_uint, by: c_uint, bz: c_uint, shared: c_uint, stream: Handle, params: *mut *mut c_void, extra: *mut *mut c_void) proc(cuLaunchKernel 4000) per_thread(cuLaunchKernel_ptsz, ptds) {
        classic(f, gx, gy, gz, bx, by, bz, shared, stream, params, extra, 0, ptds)
    }

    fn cuLaunchCooperativeKernel(f: Handle, gx: c_uint, gy: c_uint, gz: c_uint, bx: c_uint, by: c_uint, bz: c_uint, shared: c_uint, stream: Handle, params: *mut *mut c_void) proc(cuLaunchCooperativeKernel 9000) per_thread(cuLaunchCooperativeKernel_ptsz, ptds) {
        classic(f, gx, gy, gz, bx, by, bz, shared, stream, params, std::ptr::null_mut(), p::LAUNCH_FLAG_COOPERATIVE, ptds)
    }

    fn cuLaunchKernelEx(config: *const LaunchConfig, f: Handle, params: *mut *mut c_void, extra: *mut *mut c_void) proc(cuLaunchKernelEx 11060) per_thread(cuLaunchKernelEx_ptsz, ptds) {
        launch_ex(config, f, params, extra, ptds)
    }

}
