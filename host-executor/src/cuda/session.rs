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
    BResult, BackendSession, Fill, LaunchParams, LoadError, OutputSink, StreamRef, VaRange,
};

/// A loaded module and, when its image carried PTX, the kernels' parameter layouts parsed from
/// it (used where the driver lacks `cuFuncGetParamInfo`, i.e. before CUDA 12.4).
pub(super) struct LoadedModule {
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
    let Ok(m) = vcuda_ptx::Module::parse(&ptx) else {
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

/// A kernel and its parameter layout.
pub(super) struct CudaFunc {
    raw: sys::CUfunction,
    params: Vec<ParamInfo>,
}

/// A created stream.
pub(super) struct CudaStream(sys::CUstream);
/// An event.
pub(super) struct CudaEvent(sys::CUevent);

// SAFETY: CUDA driver handles may be used from any thread; the session makes its context current
// on the calling thread before every use, and the executor uses a session (objects included)
// from one thread at a time.
unsafe impl Send for CudaStream {}
// SAFETY: as for `CudaStream`.
unsafe impl Send for CudaEvent {}
// SAFETY: as for `CudaStream`.
unsafe impl Send for CudaFunc {}
// SAFETY: as for `CudaStream`.
unsafe impl Send for LoadedModule {}

/// Driver handles of one session. They are only used with the session's context current.
pub(super) struct CudaSession {
    id: u64,
    ctx: sys::CUcontext,
    memory: Option<SessionMemory>,
    staging: Option<Staging>,
    allocated: Arc<AtomicU64>,
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
        };
        s.memory = Some(SessionMemory::new(dev, quota)?);
        Ok(s)
    }

    /// Makes the session's context current on this thread.
    fn enter(&self) -> BResult<()> {
        // SAFETY: `ctx` is a live context owned by this session.
        ffi::call(|| unsafe { sys::cuCtxSetCurrent(self.ctx) })
    }

    /// Enters the context and names the driver stream (null: the default stream).
    fn on(&self, s: Option<&CudaStream>) -> BResult<sys::CUstream> {
        self.enter()?;
        Ok(s.map(|s| s.0).unwrap_or(std::ptr::null_mut()))
    }

    fn mem(&mut self) -> BResult<&mut SessionMemory> {
        self.memory.as_mut().ok_or(Status::ERROR_INVALID_CONTEXT)
    }

    fn staging(&mut self) -> BResult<&mut Staging> {
        self.staging.as_mut().ok_or(Status::ERROR_INVALID_CONTEXT)
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
    /// All client contexts of a session share the session's CUDA context (one per session
    /// isolates sessions from each other's sticky errors): a client context is its device.
    type Context = u32;
    type Stream = CudaStream;
    type Event = CudaEvent;
    type Module = LoadedModule;
    type Function = CudaFunc;

    fn va_range(&self) -> VaRange {
        self.memory
            .as_ref()
            .map(|m| m.window())
            .unwrap_or(VaRange { base: 0, size: 0 })
    }

    fn create_context(&mut self, device: u32, _flags: u32) -> BResult<u32> {
        Ok(device)
    }

    fn destroy_context(&mut self, _ctx: u32) -> BResult<()> {
        Ok(())
    }

    fn synchronize(&mut self, _ctx: &u32) -> BResult<()> {
        self.enter()?;
        // SAFETY: synchronises the current (session) context.
        ffi::call(|| unsafe { sys::cuCtxSynchronize() })
    }

    fn mem_alloc(&mut self, _ctx: &u32, size: u64) -> BResult<u64> {
        self.enter()?;
        let before = self.mem()?.used();
        let dptr = self.mem()?.alloc(size)?;
        let after = self.mem()?.used();
        self.allocated.fetch_add(after - before, Ordering::SeqCst);
        Ok(dptr)
    }

    fn mem_free(&mut self, _ctx: &u32, dptr: u64) -> BResult<()> {
        self.enter()?;
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

    fn write(
        &mut self,
        _ctx: &u32,
        stream: StreamRef<'_, Self>,
        dst: u64,
        data: &[u8],
    ) -> BResult<()> {
        let s = self.on(stream)?;
        self.staging()?.write(s, dst, data)
    }

    fn read(
        &mut self,
        _ctx: &u32,
        stream: StreamRef<'_, Self>,
        src: u64,
        out: &mut [u8],
    ) -> BResult<()> {
        let s = self.on(stream)?;
        self.staging()?.read(s, src, out)
    }

    fn write_region(
        &mut self,
        ctx: &u32,
        stream: StreamRef<'_, Self>,
        dst: u64,
        src: SharedRegion<'_>,
    ) -> BResult<()> {
        if src.len() <= super::staging::DIRECT_MAX {
            let mut buf = vec![0u8; src.len()];
            src.read_at(0, &mut buf)
                .map_err(|_| Status::ERROR_INVALID_VALUE)?;
            return self.write(ctx, stream, dst, &buf);
        }
        let s = self.on(stream)?;
        // Window → pinned chunk → DMA: one host copy, as from a client buffer.
        self.staging()?
            .write_with(s, dst, src.len(), &mut |off, buf| {
                src.read_at(off as u64, buf)
                    .map_err(|_| Status::ERROR_INVALID_VALUE)
            })
    }

    fn read_region(
        &mut self,
        ctx: &u32,
        stream: StreamRef<'_, Self>,
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
        let s = self.on(stream)?;
        self.staging()?
            .read_with(s, src, dst.len(), &mut |off, bytes| {
                dst.write_at(off as u64, bytes)
                    .map_err(|_| Status::ERROR_INVALID_VALUE)
            })
    }

    fn copy(
        &mut self,
        _ctx: &u32,
        stream: StreamRef<'_, Self>,
        dst: u64,
        src: u64,
        len: u64,
    ) -> BResult<()> {
        let s = self.on(stream)?;
        // SAFETY: device-to-device copy on the session's stream; the driver validates pointers.
        ffi::call(|| unsafe { sys::cuMemcpyDtoDAsync_v2(dst, src, len as usize, s) })
    }

    fn memset(&mut self, _ctx: &u32, stream: StreamRef<'_, Self>, fill: Fill) -> BResult<()> {
        let s = self.on(stream)?;
        let (p, w, h) = (
            fill.pitch as usize,
            fill.width as usize,
            fill.height as usize,
        );
        // SAFETY: the driver validates the destination range; arguments are plain values.
        ffi::call(|| unsafe {
            match (fill.elem_size, fill.height) {
                (1, 1) => sys::cuMemsetD8Async(fill.dst, fill.value as u8, w, s),
                (2, 1) => sys::cuMemsetD16Async(fill.dst, fill.value as u16, w, s),
                (4, 1) => sys::cuMemsetD32Async(fill.dst, fill.value, w, s),
                (1, _) => sys::cuMemsetD2D8Async(fill.dst, p, fill.value as u8, w, h, s),
                (2, _) => sys::cuMemsetD2D16Async(fill.dst, p, fill.value as u16, w, h, s),
                _ => sys::cuMemsetD2D32Async(fill.dst, p, fill.value, w, h, s),
            }
        })
    }

    fn load_module(
        &mut self,
        _ctx: &u32,
        image: &[u8],
    ) -> Result<(LoadedModule, String), LoadError> {
        let le = |status| LoadError {
            status,
            log: String::new(),
        };
        self.enter().map_err(le)?;
        let load = |bytes: &[u8]| {
            // PTX images must be NUL-terminated; a trailing NUL is harmless for binary images.
            let mut owned = bytes.to_vec();
            owned.push(0);
            // SAFETY: valid out-pointer; `owned` outlives the call. The driver picks SASS or
            // JITs PTX (its on-disk JIT cache keeps repeated loads cheap).
            ffi::out_handle(|p| unsafe { sys::cuModuleLoadData(p, owned.as_ptr().cast()) })
        };
        // A linked image (relocatable device code, the driver's linker): the device-linked
        // part 0 where this GPU runs it, else the parts' PTX joined, as the cpu backend does.
        let m = match crate::image::format(image) {
            Ok(crate::image::Format::Linked) => {
                let parts = virtio_cuda::protocol::linked::decode(image)
                    .map_err(|_| le(Status::ERROR_INVALID_IMAGE))?;
                let primary = parts.first().filter(|p| !p.is_empty()).map(|p| load(p));
                match primary {
                    Some(Ok(m)) => m,
                    _ => {
                        let img = crate::image::parse(image)
                            .map_err(|_| le(Status::ERROR_INVALID_IMAGE))?;
                        let ptx = img.best_ptx().ok_or(le(Status::ERROR_NO_BINARY_FOR_GPU))?;
                        load(ptx.as_bytes()).map_err(le)?
                    }
                }
            }
            _ => load(image).map_err(le)?,
        };
        let module = LoadedModule {
            raw: m,
            ptx_params: ptx_param_layouts(image),
        };
        Ok((module, String::new()))
    }

    fn unload_module(&mut self, m: LoadedModule) -> BResult<()> {
        self.enter()?;
        // SAFETY: our module handle, unloaded once (the session hands it over by value).
        ffi::call(|| unsafe { sys::cuModuleUnload(m.raw) })
    }

    fn get_function(&mut self, loaded: &LoadedModule, name: &str) -> BResult<(CudaFunc, FuncInfo)> {
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
        Ok((CudaFunc { raw: f, params }, info))
    }

    fn function_count(&mut self, m: &LoadedModule) -> BResult<u32> {
        if !ffi::has_symbol("cuModuleGetFunctionCount") {
            return Err(Status::ERROR_NOT_SUPPORTED);
        }
        self.enter()?;
        // SAFETY: valid out-pointer and module handle.
        ffi::out::<u32>(|p| unsafe { sys::cuModuleGetFunctionCount(p, m.raw) })
    }

    fn function_names(&mut self, m: &LoadedModule) -> BResult<Vec<String>> {
        if !ffi::has_symbol("cuModuleEnumerateFunctions") || !ffi::has_symbol("cuFuncGetName") {
            return Err(Status::ERROR_NOT_SUPPORTED);
        }
        let n = self.function_count(m)?;
        let mut funcs: Vec<sys::CUfunction> = vec![std::ptr::null_mut(); n as usize];
        // SAFETY: `funcs` has room for `n` handles; the module handle is live.
        ffi::call(|| unsafe { sys::cuModuleEnumerateFunctions(funcs.as_mut_ptr(), n, m.raw) })?;
        let mut names = Vec::with_capacity(funcs.len());
        for f in funcs {
            let mut name: *const std::ffi::c_char = std::ptr::null();
            // SAFETY: a function handle the driver just returned; a valid out-pointer.
            ffi::call(|| unsafe { sys::cuFuncGetName(&mut name, f) })?;
            if name.is_null() {
                return Err(Status::ERROR_UNKNOWN);
            }
            // SAFETY: the driver returns a NUL-terminated name that lives as long as the module.
            names.push(
                unsafe { std::ffi::CStr::from_ptr(name) }
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        Ok(names)
    }

    fn get_global(&mut self, m: &LoadedModule, name: &str) -> BResult<(u64, u64)> {
        let m = m.raw;
        self.enter()?;
        let cname = std::ffi::CString::new(name).map_err(|_| Status::ERROR_INVALID_VALUE)?;
        let (mut dptr, mut size) = (0u64, 0usize);
        // SAFETY: valid out-pointers, module handle and NUL-terminated name.
        ffi::call(|| unsafe {
            sys::cuModuleGetGlobal_v2(&mut dptr, &mut size, m, cname.as_ptr())
        })?;
        Ok((dptr, size as u64))
    }

    fn set_function_attribute(&mut self, f: &CudaFunc, attr: u32, value: i32) -> BResult<()> {
        use sys::CUfunction_attribute as FA;
        let a = match attr {
            8 => FA::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            9 => FA::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
            _ => return Err(Status::ERROR_NOT_SUPPORTED),
        };
        self.enter()?;
        // SAFETY: valid function handle and attribute.
        ffi::call(|| unsafe { sys::cuFuncSetAttribute(f.raw, a, value) })
    }

    fn occupancy(&mut self, f: &CudaFunc, block_size: u32, dynamic_shared: u64) -> BResult<u32> {
        self.enter()?;
        // SAFETY: valid out-pointer and function handle.
        let n: i32 = ffi::out(|p| unsafe {
            sys::cuOccupancyMaxActiveBlocksPerMultiprocessor(
                p,
                f.raw,
                block_size as i32,
                dynamic_shared as usize,
            )
        })?;
        Ok(n.max(0) as u32)
    }

    fn launch(
        &mut self,
        _ctx: &u32,
        (f, _module): (&CudaFunc, &LoadedModule),
        stream: StreamRef<'_, Self>,
        launch: &LaunchParams<'_>,
        _output: &mut dyn OutputSink,
    ) -> BResult<()> {
        let s = self.on(stream)?;
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

    fn create_stream(&mut self, _ctx: &u32, flags: u32, priority: i32) -> BResult<CudaStream> {
        self.enter()?;
        // SAFETY: valid out-pointer; flags and priority are passed through as CUDA defines them.
        let s =
            ffi::out_handle(|p| unsafe { sys::cuStreamCreateWithPriority(p, flags, priority) })?;
        Ok(CudaStream(s))
    }

    fn destroy_stream(&mut self, s: CudaStream) -> BResult<()> {
        self.enter()?;
        // SAFETY: our stream, destroyed once (handed over by value).
        ffi::call(|| unsafe { sys::cuStreamDestroy_v2(s.0) })
    }

    fn stream_synchronize(&mut self, _ctx: &u32, stream: StreamRef<'_, Self>) -> BResult<()> {
        let s = self.on(stream)?;
        // SAFETY: our stream (or the null stream).
        ffi::call(|| unsafe { sys::cuStreamSynchronize(s) })
    }

    fn stream_query(&mut self, _ctx: &u32, stream: StreamRef<'_, Self>) -> BResult<bool> {
        let s = self.on(stream)?;
        // SAFETY: our stream (or the null stream).
        match ffi::call(|| unsafe { sys::cuStreamQuery(s) }) {
            Ok(()) => Ok(true),
            Err(Status::ERROR_NOT_READY) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn stream_wait_event(
        &mut self,
        _ctx: &u32,
        stream: StreamRef<'_, Self>,
        e: &CudaEvent,
    ) -> BResult<()> {
        let s = self.on(stream)?;
        // SAFETY: our stream and event.
        ffi::call(|| unsafe { sys::cuStreamWaitEvent(s, e.0, 0) })
    }

    fn create_event(&mut self, _ctx: &u32, flags: u32) -> BResult<CudaEvent> {
        self.enter()?;
        // SAFETY: valid out-pointer; flags as CUDA defines them.
        let e = ffi::out_handle(|p| unsafe { sys::cuEventCreate(p, flags) })?;
        Ok(CudaEvent(e))
    }

    fn destroy_event(&mut self, e: CudaEvent) -> BResult<()> {
        self.enter()?;
        // SAFETY: our event, destroyed once (handed over by value).
        ffi::call(|| unsafe { sys::cuEventDestroy_v2(e.0) })
    }

    fn record_event(
        &mut self,
        _ctx: &u32,
        e: &CudaEvent,
        stream: StreamRef<'_, Self>,
    ) -> BResult<()> {
        let s = self.on(stream)?;
        // SAFETY: our event and stream.
        ffi::call(|| unsafe { sys::cuEventRecord(e.0, s) })
    }

    fn event_query(&mut self, e: &CudaEvent) -> BResult<bool> {
        self.enter()?;
        // SAFETY: our event.
        match ffi::call(|| unsafe { sys::cuEventQuery(e.0) }) {
            Ok(()) => Ok(true),
            Err(Status::ERROR_NOT_READY) => Ok(false),
            Err(err) => Err(err),
        }
    }

    fn event_synchronize(&mut self, e: &CudaEvent) -> BResult<()> {
        self.enter()?;
        // SAFETY: our event.
        ffi::call(|| unsafe { sys::cuEventSynchronize(e.0) })
    }

    fn event_elapsed_ms(&mut self, a: &CudaEvent, b: &CudaEvent) -> BResult<f32> {
        self.enter()?;
        // SAFETY: valid out-pointer and our events.
        ffi::out(|p| unsafe { sys::cuEventElapsedTime(p, a.0, b.0) })
    }
}
