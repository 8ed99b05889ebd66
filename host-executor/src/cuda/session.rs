//! One session's objects on the GPU.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cudarc::driver::sys;
use virtio_cuda::protocol::{FuncInfo, List, ParamInfo, Status};
use virtio_cuda::shm::SharedRegion;

use super::ffi;
use super::memory::SessionMemory;
use super::staging::Staging;
use crate::backend::{
    BResult, BackendSession, LaunchParams, LoadError, ObjId, OutputSink, VaRange, DEFAULT_STREAM,
};

/// A loaded module and, when its image carried PTX, the kernels' parameter layouts parsed from
/// it (used where the driver lacks `cuFuncGetParamInfo`, i.e. before CUDA 12.4).
struct LoadedModule {
    raw: sys::CUmodule,
    ptx_params: HashMap<String, Vec<ParamInfo>>,
}

/// Parameter layouts of the kernels in an image's PTX, if it has any that parses.
fn ptx_param_layouts(image: &[u8]) -> HashMap<String, Vec<ParamInfo>> {
    let Ok(img) = crate::image::parse(image) else {
        return HashMap::new();
    };
    let Some(ptx) = img.best_ptx() else {
        return HashMap::new();
    };
    let Ok(m) = vcuda_ptx::Module::parse(ptx) else {
        return HashMap::new();
    };
    m.kernels()
        .iter()
        .map(|k| {
            let params = k
                .params
                .iter()
                .map(|p| ParamInfo {
                    offset: p.offset,
                    size: p.size,
                })
                .collect();
            (k.name.clone(), params)
        })
        .collect()
}

struct Func {
    module: ObjId,
    raw: sys::CUfunction,
    params: Vec<ParamInfo>,
}

/// Driver handles of one session. They are only used with the session's context current.
pub(super) struct CudaSession {
    id: u64,
    ctx: sys::CUcontext,
    memory: Option<SessionMemory>,
    staging: Option<Staging>,
    allocated: Arc<AtomicU64>,
    next_id: ObjId,
    contexts: HashMap<ObjId, u32>,
    modules: HashMap<ObjId, LoadedModule>,
    funcs: HashMap<ObjId, Func>,
    streams: HashMap<ObjId, sys::CUstream>,
    events: HashMap<ObjId, sys::CUevent>,
}

// SAFETY: CUDA driver handles may be used from any thread; the session makes its context current
// on the calling thread before every use, and the executor uses a session from one thread at a
// time (`&mut self`).
unsafe impl Send for CudaSession {}

impl CudaSession {
    pub(super) fn new(
        id: u64,
        dev: sys::CUdevice,
        quota: u64,
        allocated: Arc<AtomicU64>,
    ) -> BResult<Self> {
        // SAFETY: valid out-pointer; creates a context current on this thread.
        let ctx = ffi::out_handle(|p| unsafe { sys::cuCtxCreate_v2(p, 0, dev) })?;
        let mut s = Self {
            id,
            ctx,
            memory: None,
            staging: Some(Staging::new()),
            allocated,
            next_id: 1,
            contexts: HashMap::new(),
            modules: HashMap::new(),
            funcs: HashMap::new(),
            streams: HashMap::new(),
            events: HashMap::new(),
        };
        s.memory = Some(SessionMemory::new(dev, quota)?);
        Ok(s)
    }

    /// Makes the session's context current on this thread.
    fn enter(&self) -> BResult<()> {
        // SAFETY: `ctx` is a live context owned by this session.
        ffi::call(|| unsafe { sys::cuCtxSetCurrent(self.ctx) })
    }

    fn new_id(&mut self) -> ObjId {
        self.next_id += 1;
        self.next_id
    }

    fn stream(&self, s: ObjId) -> BResult<sys::CUstream> {
        if s == DEFAULT_STREAM {
            return Ok(std::ptr::null_mut());
        }
        self.streams
            .get(&s)
            .copied()
            .ok_or(Status::ERROR_INVALID_HANDLE)
    }

    fn event(&self, e: ObjId) -> BResult<sys::CUevent> {
        self.events
            .get(&e)
            .copied()
            .ok_or(Status::ERROR_INVALID_HANDLE)
    }

    fn mem(&mut self) -> BResult<&mut SessionMemory> {
        self.memory.as_mut().ok_or(Status::ERROR_INVALID_CONTEXT)
    }

    fn staging(&mut self) -> BResult<&mut Staging> {
        self.staging.as_mut().ok_or(Status::ERROR_INVALID_CONTEXT)
    }

    fn check_ctx(&self, ctx: ObjId) -> BResult<()> {
        if self.contexts.contains_key(&ctx) {
            self.enter()
        } else {
            Err(Status::ERROR_INVALID_CONTEXT)
        }
    }
}

impl Drop for CudaSession {
    fn drop(&mut self) {
        let _ = self.enter();
        let used = self.memory.as_ref().map(|m| m.used()).unwrap_or(0);
        // Free GPU memory and staging before the context goes away.
        self.staging = None;
        self.memory = None;
        self.allocated.fetch_sub(used, Ordering::SeqCst);
        let ctx = self.ctx;
        // SAFETY: destroying our own context once; every object in it is released with it.
        let _ = ffi::call(|| unsafe { sys::cuCtxDestroy_v2(ctx) });
        tracing::debug!(session = self.id, "cuda session released");
    }
}

/// Parameter layout from the driver (`cuFuncGetParamInfo`, CUDA ≥ 12.4): for images without
/// PTX (SASS-only cubins). Older drivers cannot describe such kernels: `NOT_SUPPORTED`.
fn driver_param_layout(f: sys::CUfunction) -> BResult<Vec<ParamInfo>> {
    if !ffi::has_symbol("cuFuncGetParamInfo") {
        return Err(Status::ERROR_NOT_SUPPORTED);
    }
    let mut params = Vec::new();
    for i in 0..4096usize {
        let (mut off, mut size) = (0usize, 0usize);
        // SAFETY: valid out-pointers; an index past the last parameter returns an error.
        match ffi::call(|| unsafe { sys::cuFuncGetParamInfo(f, i, &mut off, &mut size) }) {
            Ok(()) => params.push(ParamInfo {
                offset: off as u32,
                size: size as u32,
            }),
            Err(Status::ERROR_NOT_SUPPORTED) if i == 0 => return Err(Status::ERROR_NOT_SUPPORTED),
            Err(_) => break,
        }
    }
    Ok(params)
}

fn func_attr(f: sys::CUfunction, a: sys::CUfunction_attribute) -> u32 {
    // SAFETY: valid out-pointer and function handle.
    ffi::out::<i32>(|p| unsafe { sys::cuFuncGetAttribute(p, a, f) })
        .map(|v| v.max(0) as u32)
        .unwrap_or(0)
}

impl BackendSession for CudaSession {
    fn va_range(&self) -> VaRange {
        self.memory
            .as_ref()
            .map(|m| m.window())
            .unwrap_or(VaRange { base: 0, size: 0 })
    }

    fn create_context(&mut self, device: u32, _flags: u32) -> BResult<ObjId> {
        // All client contexts of a session share the session's CUDA context (one per session
        // isolates sessions from each other's sticky errors).
        let id = self.new_id();
        self.contexts.insert(id, device);
        Ok(id)
    }

    fn destroy_context(&mut self, ctx: ObjId) -> BResult<()> {
        self.contexts
            .remove(&ctx)
            .map(|_| ())
            .ok_or(Status::ERROR_INVALID_CONTEXT)
    }

    fn synchronize(&mut self, ctx: ObjId) -> BResult<()> {
        self.check_ctx(ctx)?;
        // SAFETY: synchronises the current (session) context.
        ffi::call(|| unsafe { sys::cuCtxSynchronize() })
    }

    fn mem_alloc(&mut self, ctx: ObjId, size: u64) -> BResult<u64> {
        self.check_ctx(ctx)?;
        let before = self.mem()?.used();
        let dptr = self.mem()?.alloc(size)?;
        let after = self.mem()?.used();
        self.allocated.fetch_add(after - before, Ordering::SeqCst);
        Ok(dptr)
    }

    fn mem_free(&mut self, ctx: ObjId, dptr: u64) -> BResult<()> {
        self.check_ctx(ctx)?;
        let before = self.mem()?.used();
        self.mem()?.free(dptr)?;
        let after = self.mem()?.used();
        self.allocated.fetch_sub(before - after, Ordering::SeqCst);
        Ok(())
    }

    fn mem_used(&self) -> u64 {
        self.memory.as_ref().map(|m| m.used()).unwrap_or(0)
    }

    fn address_range(&self, dptr: u64) -> BResult<(u64, u64)> {
        self.memory
            .as_ref()
            .and_then(|m| m.range_of(dptr))
            .ok_or(Status::ERROR_NOT_FOUND)
    }

    fn write(&mut self, ctx: ObjId, stream: ObjId, dst: u64, data: &[u8]) -> BResult<()> {
        self.check_ctx(ctx)?;
        let s = self.stream(stream)?;
        self.staging()?.write(s, dst, data)
    }

    fn read(&mut self, ctx: ObjId, stream: ObjId, src: u64, out: &mut [u8]) -> BResult<()> {
        self.check_ctx(ctx)?;
        let s = self.stream(stream)?;
        self.staging()?.read(s, src, out)
    }

    fn write_region(
        &mut self,
        ctx: ObjId,
        stream: ObjId,
        dst: u64,
        src: SharedRegion<'_>,
    ) -> BResult<()> {
        if src.len() <= super::staging::DIRECT_MAX {
            let mut buf = vec![0u8; src.len()];
            src.read_at(0, &mut buf)
                .map_err(|_| Status::ERROR_INVALID_VALUE)?;
            return self.write(ctx, stream, dst, &buf);
        }
        self.check_ctx(ctx)?;
        let s = self.stream(stream)?;
        // Window → pinned chunk → DMA: one host copy, as from a client buffer.
        self.staging()?
            .write_with(s, dst, src.len(), &mut |off, buf| {
                src.read_at(off as u64, buf)
                    .map_err(|_| Status::ERROR_INVALID_VALUE)
            })
    }

    fn read_region(
        &mut self,
        ctx: ObjId,
        stream: ObjId,
        src: u64,
        dst: SharedRegion<'_>,
    ) -> BResult<()> {
        if dst.len() <= super::staging::DIRECT_MAX {
            let mut buf = vec![0u8; dst.len()];
            self.read(ctx, stream, src, &mut buf)?;
            return dst
                .write_at(0, &buf)
                .map_err(|_| Status::ERROR_INVALID_VALUE);
        }
        self.check_ctx(ctx)?;
        let s = self.stream(stream)?;
        self.staging()?
            .read_with(s, src, dst.len(), &mut |off, bytes| {
                dst.write_at(off as u64, bytes)
                    .map_err(|_| Status::ERROR_INVALID_VALUE)
            })
    }

    fn copy(&mut self, ctx: ObjId, stream: ObjId, dst: u64, src: u64, len: u64) -> BResult<()> {
        self.check_ctx(ctx)?;
        let s = self.stream(stream)?;
        // SAFETY: device-to-device copy on the session's stream; the driver validates pointers.
        ffi::call(|| unsafe { sys::cuMemcpyDtoDAsync_v2(dst, src, len as usize, s) })
    }

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
    ) -> BResult<()> {
        self.check_ctx(ctx)?;
        let s = self.stream(stream)?;
        let (p, w, h) = (pitch as usize, width as usize, height as usize);
        // SAFETY: the driver validates the destination range; arguments are plain values.
        ffi::call(|| unsafe {
            match (elem_size, height) {
                (1, 1) => sys::cuMemsetD8Async(dst, value as u8, w, s),
                (2, 1) => sys::cuMemsetD16Async(dst, value as u16, w, s),
                (4, 1) => sys::cuMemsetD32Async(dst, value, w, s),
                (1, _) => sys::cuMemsetD2D8Async(dst, p, value as u8, w, h, s),
                (2, _) => sys::cuMemsetD2D16Async(dst, p, value as u16, w, h, s),
                _ => sys::cuMemsetD2D32Async(dst, p, value, w, h, s),
            }
        })
    }

    fn load_module(&mut self, ctx: ObjId, image: &[u8]) -> Result<(ObjId, String), LoadError> {
        let le = |status| LoadError {
            status,
            log: String::new(),
        };
        self.check_ctx(ctx).map_err(le)?;
        // PTX images must be NUL-terminated; a trailing NUL is harmless for binary images.
        let mut owned = image.to_vec();
        owned.push(0);
        // SAFETY: valid out-pointer; `owned` outlives the call. The driver picks SASS or JITs PTX
        // (its on-disk JIT cache keeps repeated loads cheap).
        let m = ffi::out_handle(|p| unsafe { sys::cuModuleLoadData(p, owned.as_ptr().cast()) })
            .map_err(le)?;
        let id = self.new_id();
        self.modules.insert(
            id,
            LoadedModule {
                raw: m,
                ptx_params: ptx_param_layouts(image),
            },
        );
        Ok((id, String::new()))
    }

    fn unload_module(&mut self, module: ObjId) -> BResult<()> {
        let m = self
            .modules
            .remove(&module)
            .ok_or(Status::ERROR_INVALID_HANDLE)?;
        self.funcs.retain(|_, f| f.module != module);
        self.enter()?;
        // SAFETY: our module handle, unloaded once.
        ffi::call(|| unsafe { sys::cuModuleUnload(m.raw) })
    }

    fn get_function(&mut self, module: ObjId, name: &str) -> BResult<(ObjId, FuncInfo)> {
        let loaded = self
            .modules
            .get(&module)
            .ok_or(Status::ERROR_INVALID_HANDLE)?;
        let m = loaded.raw;
        let ptx_params = loaded.ptx_params.get(name).cloned();
        self.enter()?;
        let cname = std::ffi::CString::new(name).map_err(|_| Status::ERROR_INVALID_VALUE)?;
        // SAFETY: valid out-pointer, module handle and NUL-terminated name.
        let f = ffi::out_handle(|p| unsafe { sys::cuModuleGetFunction(p, m, cname.as_ptr()) })?;
        let params = match ptx_params {
            Some(p) => p,
            None => driver_param_layout(f)?,
        };
        use sys::CUfunction_attribute as FA;
        let info = FuncInfo {
            params: List(params.clone()),
            static_shared_bytes: func_attr(f, FA::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES),
            local_bytes: func_attr(f, FA::CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES),
            const_bytes: func_attr(f, FA::CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES),
            num_regs: func_attr(f, FA::CU_FUNC_ATTRIBUTE_NUM_REGS),
            max_threads_per_block: func_attr(f, FA::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK),
            ptx_version: func_attr(f, FA::CU_FUNC_ATTRIBUTE_PTX_VERSION),
            binary_version: func_attr(f, FA::CU_FUNC_ATTRIBUTE_BINARY_VERSION),
        };
        let id = self.new_id();
        self.funcs.insert(
            id,
            Func {
                module,
                raw: f,
                params,
            },
        );
        Ok((id, info))
    }

    fn get_global(&mut self, module: ObjId, name: &str) -> BResult<(u64, u64)> {
        let m = self
            .modules
            .get(&module)
            .ok_or(Status::ERROR_INVALID_HANDLE)?
            .raw;
        self.enter()?;
        let cname = std::ffi::CString::new(name).map_err(|_| Status::ERROR_INVALID_VALUE)?;
        let (mut dptr, mut size) = (0u64, 0usize);
        // SAFETY: valid out-pointers, module handle and NUL-terminated name.
        ffi::call(|| unsafe {
            sys::cuModuleGetGlobal_v2(&mut dptr, &mut size, m, cname.as_ptr())
        })?;
        Ok((dptr, size as u64))
    }

    fn set_function_attribute(&mut self, func: ObjId, attr: u32, value: i32) -> BResult<()> {
        use sys::CUfunction_attribute as FA;
        let f = self
            .funcs
            .get(&func)
            .ok_or(Status::ERROR_INVALID_HANDLE)?
            .raw;
        let a = match attr {
            8 => FA::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            9 => FA::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
            _ => return Err(Status::ERROR_NOT_SUPPORTED),
        };
        self.enter()?;
        // SAFETY: valid function handle and attribute.
        ffi::call(|| unsafe { sys::cuFuncSetAttribute(f, a, value) })
    }

    fn occupancy(&mut self, func: ObjId, block_size: u32, dynamic_shared: u64) -> BResult<u32> {
        let f = self
            .funcs
            .get(&func)
            .ok_or(Status::ERROR_INVALID_HANDLE)?
            .raw;
        self.enter()?;
        // SAFETY: valid out-pointer and function handle.
        let n: i32 = ffi::out(|p| unsafe {
            sys::cuOccupancyMaxActiveBlocksPerMultiprocessor(
                p,
                f,
                block_size as i32,
                dynamic_shared as usize,
            )
        })?;
        Ok(n.max(0) as u32)
    }

    fn launch(
        &mut self,
        ctx: ObjId,
        func: ObjId,
        stream: ObjId,
        launch: &LaunchParams<'_>,
        _output: &mut dyn OutputSink,
    ) -> BResult<()> {
        self.check_ctx(ctx)?;
        let s = self.stream(stream)?;
        let f = self.funcs.get(&func).ok_or(Status::ERROR_INVALID_HANDLE)?;
        // kernelParams: one pointer per parameter into a private copy of the packed block.
        let mut block = launch.params.to_vec();
        let base = block.as_mut_ptr();
        let mut ptrs: Vec<*mut c_void> = Vec::with_capacity(f.params.len());
        for p in &f.params {
            let end = p.offset as usize + p.size as usize;
            if end > block.len() {
                return Err(Status::ERROR_INVALID_VALUE);
            }
            // SAFETY: `offset` is within `block` (checked above).
            ptrs.push(unsafe { base.add(p.offset as usize) }.cast());
        }
        let (g, b) = (launch.grid, launch.block);
        let raw = f.raw;
        // SAFETY: the driver reads each parameter through `ptrs` (all inside `block`, alive for
        // the call) and copies them before returning.
        ffi::call(|| unsafe {
            if launch.cooperative {
                sys::cuLaunchCooperativeKernel(
                    raw,
                    g[0],
                    g[1],
                    g[2],
                    b[0],
                    b[1],
                    b[2],
                    launch.shared_bytes,
                    s,
                    ptrs.as_mut_ptr(),
                )
            } else {
                sys::cuLaunchKernel(
                    raw,
                    g[0],
                    g[1],
                    g[2],
                    b[0],
                    b[1],
                    b[2],
                    launch.shared_bytes,
                    s,
                    ptrs.as_mut_ptr(),
                    std::ptr::null_mut(),
                )
            }
        })
    }

    fn create_stream(&mut self, ctx: ObjId, flags: u32, priority: i32) -> BResult<ObjId> {
        self.check_ctx(ctx)?;
        // SAFETY: valid out-pointer; flags and priority are passed through as CUDA defines them.
        let s =
            ffi::out_handle(|p| unsafe { sys::cuStreamCreateWithPriority(p, flags, priority) })?;
        let id = self.new_id();
        self.streams.insert(id, s);
        Ok(id)
    }

    fn destroy_stream(&mut self, stream: ObjId) -> BResult<()> {
        let s = self
            .streams
            .remove(&stream)
            .ok_or(Status::ERROR_INVALID_HANDLE)?;
        self.enter()?;
        // SAFETY: our stream, destroyed once.
        ffi::call(|| unsafe { sys::cuStreamDestroy_v2(s) })
    }

    fn stream_synchronize(&mut self, ctx: ObjId, stream: ObjId) -> BResult<()> {
        self.check_ctx(ctx)?;
        let s = self.stream(stream)?;
        // SAFETY: our stream (or the null stream).
        ffi::call(|| unsafe { sys::cuStreamSynchronize(s) })
    }

    fn stream_query(&mut self, ctx: ObjId, stream: ObjId) -> BResult<bool> {
        self.check_ctx(ctx)?;
        let s = self.stream(stream)?;
        // SAFETY: our stream (or the null stream).
        match ffi::call(|| unsafe { sys::cuStreamQuery(s) }) {
            Ok(()) => Ok(true),
            Err(Status::ERROR_NOT_READY) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn stream_wait_event(&mut self, ctx: ObjId, stream: ObjId, event: ObjId) -> BResult<()> {
        self.check_ctx(ctx)?;
        let (s, e) = (self.stream(stream)?, self.event(event)?);
        // SAFETY: our stream and event.
        ffi::call(|| unsafe { sys::cuStreamWaitEvent(s, e, 0) })
    }

    fn create_event(&mut self, ctx: ObjId, flags: u32) -> BResult<ObjId> {
        self.check_ctx(ctx)?;
        // SAFETY: valid out-pointer; flags as CUDA defines them.
        let e = ffi::out_handle(|p| unsafe { sys::cuEventCreate(p, flags) })?;
        let id = self.new_id();
        self.events.insert(id, e);
        Ok(id)
    }

    fn destroy_event(&mut self, event: ObjId) -> BResult<()> {
        let e = self
            .events
            .remove(&event)
            .ok_or(Status::ERROR_INVALID_HANDLE)?;
        self.enter()?;
        // SAFETY: our event, destroyed once.
        ffi::call(|| unsafe { sys::cuEventDestroy_v2(e) })
    }

    fn record_event(&mut self, ctx: ObjId, event: ObjId, stream: ObjId) -> BResult<()> {
        self.check_ctx(ctx)?;
        let (e, s) = (self.event(event)?, self.stream(stream)?);
        // SAFETY: our event and stream.
        ffi::call(|| unsafe { sys::cuEventRecord(e, s) })
    }

    fn event_query(&mut self, event: ObjId) -> BResult<bool> {
        let e = self.event(event)?;
        self.enter()?;
        // SAFETY: our event.
        match ffi::call(|| unsafe { sys::cuEventQuery(e) }) {
            Ok(()) => Ok(true),
            Err(Status::ERROR_NOT_READY) => Ok(false),
            Err(err) => Err(err),
        }
    }

    fn event_synchronize(&mut self, event: ObjId) -> BResult<()> {
        let e = self.event(event)?;
        self.enter()?;
        // SAFETY: our event.
        ffi::call(|| unsafe { sys::cuEventSynchronize(e) })
    }

    fn event_elapsed_ms(&mut self, start: ObjId, end: ObjId) -> BResult<f32> {
        let (a, b) = (self.event(start)?, self.event(end)?);
        self.enter()?;
        // SAFETY: valid out-pointer and our events.
        ffi::out(|p| unsafe { sys::cuEventElapsedTime(p, a, b) })
    }
}
