//! One session's objects in the cpu backend.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::{debug, warn};
use vcuda_ptx::memory::Arena;
use vcuda_ptx::{ExecError, LaunchConfig, LaunchOptions, LoadedModule, Module};
use virtio_cuda::protocol::{FuncInfo, List, ParamInfo, Status};
use virtio_cuda::shm::SharedRegion;

use super::device::{MAX_THREADS_PER_BLOCK, SHARED_PER_BLOCK, SHARED_PER_BLOCK_OPTIN};
use super::CpuConfig;
use crate::backend::{BResult, BackendSession, Fill, LaunchParams, LoadError, OutputSink, VaRange};
use crate::image;

/// `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`.
const ATTR_MAX_DYNAMIC_SHARED: u32 = 8;
/// Bounce-buffer size of window copies into an allocation a launch still holds.
const REGION_CHUNK: usize = 1 << 20;
/// `CU_EVENT_DISABLE_TIMING`.
const EVENT_DISABLE_TIMING: u32 = 0x2;

/// A kernel of a loaded module.
pub(super) struct CpuFunc {
    kernel: String,
    static_shared: u32,
    /// `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES` (set through a shared reference: the
    /// session hands backends their objects by reference).
    max_dynamic_shared: Cell<u32>,
}

/// An event: work runs eagerly, so an event is complete once recorded.
pub(super) struct CpuEvent {
    recorded: Cell<Option<Instant>>,
    timing: bool,
}

pub(super) struct CpuSession {
    arena: Arena,
    va: VaRange,
    config: CpuConfig,
    allocated: Arc<AtomicU64>,
    /// Sizes of live allocations (for accounting and `cuMemFree` validation).
    allocations: HashMap<u64, u64>,
    /// Set when the session's client is gone: a running launch ends at its next check.
    cancel: Arc<AtomicBool>,
}

impl CpuSession {
    pub(super) fn new(
        base: u64,
        span: u64,
        config: CpuConfig,
        allocated: Arc<AtomicU64>,
        cancel: Arc<AtomicBool>,
    ) -> Self {
        Self {
            arena: Arena::new(base, span),
            va: VaRange { base, size: span },
            config,
            allocated,
            allocations: HashMap::new(),
            cancel,
        }
    }
}

impl Drop for CpuSession {
    fn drop(&mut self) {
        let live: u64 = self.allocations.values().sum();
        self.allocated.fetch_sub(live, Ordering::SeqCst);
    }
}

/// Memory errors of host-initiated copies are invalid arguments (CUDA reports
/// `CUDA_ERROR_INVALID_VALUE` for a bad pointer passed to `cuMemcpy*`).
fn mem_status<E: std::fmt::Display>(e: E) -> Status {
    debug!("memory operation rejected: {e}");
    Status::ERROR_INVALID_VALUE
}

fn exec_status(e: &ExecError) -> Status {
    match e {
        ExecError::IllegalAddress { .. } => Status::ERROR_ILLEGAL_ADDRESS,
        ExecError::MisalignedAddress { .. } => Status::ERROR_MISALIGNED_ADDRESS,
        ExecError::LaunchTimeout | ExecError::WatchdogExpired => Status::ERROR_LAUNCH_TIMEOUT,
        ExecError::Cancelled => Status::ERROR_LAUNCH_FAILED,
        ExecError::InvalidConfig(_) => Status::ERROR_INVALID_VALUE,
        ExecError::Trap => Status::ERROR_LAUNCH_FAILED,
        ExecError::Unsupported { .. } => Status::ERROR_NOT_SUPPORTED,
        ExecError::NotFound(_) => Status::ERROR_NOT_FOUND,
        #[allow(unreachable_patterns)]
        _ => Status::ERROR_LAUNCH_FAILED,
    }
}

impl BackendSession for CpuSession {
    /// The device ordinal.
    type Context = u32;
    /// Work runs eagerly in submission order: a stream needs no state.
    type Stream = ();
    type Event = CpuEvent;
    type Module = LoadedModule;
    type Function = CpuFunc;

    fn va_range(&self) -> VaRange {
        self.va
    }

    fn create_context(&mut self, device: u32, _flags: u32) -> BResult<u32> {
        Ok(device)
    }

    fn destroy_context(&mut self, _ctx: u32) -> BResult<()> {
        Ok(())
    }

    fn synchronize(&mut self, _ctx: &u32) -> BResult<()> {
        Ok(())
    }

    fn mem_alloc(&mut self, _ctx: &u32, size: u64) -> BResult<u64> {
        let addr = self
            .arena
            .alloc(size, 256)
            .map_err(|_| Status::ERROR_OUT_OF_MEMORY)?;
        self.allocations.insert(addr, size);
        self.allocated.fetch_add(size, Ordering::SeqCst);
        Ok(addr)
    }

    fn mem_free(&mut self, _ctx: &u32, dptr: u64) -> BResult<()> {
        let size = self
            .allocations
            .remove(&dptr)
            .ok_or(Status::ERROR_INVALID_VALUE)?;
        self.arena.free(dptr).map_err(mem_status)?;
        self.allocated.fetch_sub(size, Ordering::SeqCst);
        Ok(())
    }

    fn mem_used(&self) -> u64 {
        self.allocations.values().sum()
    }

    fn address_range(&self, dptr: u64) -> BResult<(u64, u64)> {
        self.arena
            .allocation_containing(dptr)
            .ok_or(Status::ERROR_NOT_FOUND)
    }

    fn write(&mut self, _ctx: &u32, _stream: Option<&()>, dst: u64, data: &[u8]) -> BResult<()> {
        self.arena.write(dst, data).map_err(mem_status)
    }

    fn read(&mut self, _ctx: &u32, _stream: Option<&()>, src: u64, out: &mut [u8]) -> BResult<()> {
        self.arena.read(src, out).map_err(mem_status)
    }

    fn write_region(
        &mut self,
        _ctx: &u32,
        _stream: Option<&()>,
        dst: u64,
        src: SharedRegion<'_>,
    ) -> BResult<()> {
        let bad = |_| Status::ERROR_INVALID_VALUE;
        // One copy, window → device memory, when no launch holds the allocation.
        match self
            .arena
            .with_bytes_mut(dst, src.len() as u64, |bytes| src.read_at(0, bytes))
            .map_err(mem_status)?
        {
            Some(r) => r.map_err(bad),
            None => {
                let mut buf = vec![0u8; src.len().min(REGION_CHUNK)];
                for off in (0..src.len()).step_by(REGION_CHUNK) {
                    let piece = &mut buf[..REGION_CHUNK.min(src.len() - off)];
                    src.read_at(off as u64, piece).map_err(bad)?;
                    self.arena
                        .write(dst + off as u64, piece)
                        .map_err(mem_status)?;
                }
                Ok(())
            }
        }
    }

    fn read_region(
        &mut self,
        _ctx: &u32,
        _stream: Option<&()>,
        src: u64,
        dst: SharedRegion<'_>,
    ) -> BResult<()> {
        let bad = |_| Status::ERROR_INVALID_VALUE;
        match self
            .arena
            .with_bytes_mut(src, dst.len() as u64, |bytes| dst.write_at(0, bytes))
            .map_err(mem_status)?
        {
            Some(r) => r.map_err(bad),
            None => {
                let mut buf = vec![0u8; dst.len().min(REGION_CHUNK)];
                for off in (0..dst.len()).step_by(REGION_CHUNK) {
                    let piece = &mut buf[..REGION_CHUNK.min(dst.len() - off)];
                    self.arena
                        .read(src + off as u64, piece)
                        .map_err(mem_status)?;
                    dst.write_at(off as u64, piece).map_err(bad)?;
                }
                Ok(())
            }
        }
    }

    fn copy(
        &mut self,
        _ctx: &u32,
        _stream: Option<&()>,
        dst: u64,
        src: u64,
        len: u64,
    ) -> BResult<()> {
        self.arena.copy(dst, src, len).map_err(mem_status)
    }

    fn memset(&mut self, _ctx: &u32, _stream: Option<&()>, fill: Fill) -> BResult<()> {
        let pattern = fill.value.to_le_bytes();
        let pattern = &pattern[..usize::from(fill.elem_size).min(4)];
        for row in 0..fill.height {
            let addr = fill.dst.wrapping_add(row.wrapping_mul(fill.pitch));
            self.arena
                .fill(addr, pattern, fill.width)
                .map_err(mem_status)?;
        }
        Ok(())
    }

    fn load_module(
        &mut self,
        _ctx: &u32,
        bytes: &[u8],
    ) -> Result<(LoadedModule, String), LoadError> {
        let img = image::parse(bytes).map_err(|e| LoadError {
            status: Status::ERROR_INVALID_IMAGE,
            log: e.to_string(),
        })?;
        let ptx = img.best_ptx().ok_or_else(|| LoadError {
            status: Status::ERROR_NO_BINARY_FOR_GPU,
            log: "the image has no PTX; the cpu backend cannot run SASS (compile with PTX, e.g. -gencode arch=compute_80,code=compute_80)".into(),
        })?;
        let module = Module::parse(&ptx).map_err(|e| LoadError {
            status: Status::ERROR_INVALID_PTX,
            log: e.to_string(),
        })?;
        let loaded = LoadedModule::load(Arc::new(module), &self.arena).map_err(|e| LoadError {
            status: Status::ERROR_OUT_OF_MEMORY,
            log: e.to_string(),
        })?;
        Ok((loaded, String::new()))
    }

    fn unload_module(&mut self, module: LoadedModule) -> BResult<()> {
        module.unload(&self.arena);
        Ok(())
    }

    fn get_function(&mut self, m: &LoadedModule, name: &str) -> BResult<(CpuFunc, FuncInfo)> {
        let k = m
            .module()
            .kernels()
            .iter()
            .find(|k| k.name == name)
            .ok_or(Status::ERROR_NOT_FOUND)?;
        let info = FuncInfo {
            params: List(
                k.params
                    .iter()
                    .map(|p| ParamInfo {
                        offset: p.offset,
                        size: p.size,
                    })
                    .collect(),
            ),
            static_shared_bytes: k.static_shared_bytes,
            local_bytes: 0,
            const_bytes: 0,
            num_regs: k.num_regs,
            max_threads_per_block: k
                .max_threads_per_block
                .unwrap_or(MAX_THREADS_PER_BLOCK as u32),
            ptx_version: 80,
            binary_version: 80,
        };
        let func = CpuFunc {
            kernel: k.name.clone(),
            static_shared: k.static_shared_bytes,
            max_dynamic_shared: Cell::new(
                (SHARED_PER_BLOCK as u32).saturating_sub(k.static_shared_bytes),
            ),
        };
        Ok((func, info))
    }

    fn function_count(&mut self, m: &LoadedModule) -> BResult<u32> {
        u32::try_from(m.module().kernels().len()).map_err(|_| Status::ERROR_INVALID_VALUE)
    }

    fn function_names(&mut self, m: &LoadedModule) -> BResult<Vec<String>> {
        Ok(m.module()
            .kernels()
            .iter()
            .map(|k| k.name.clone())
            .collect())
    }

    fn get_global(&mut self, m: &LoadedModule, name: &str) -> BResult<(u64, u64)> {
        m.global(name).ok_or(Status::ERROR_NOT_FOUND)
    }

    fn set_function_attribute(&mut self, f: &CpuFunc, attr: u32, value: i32) -> BResult<()> {
        if attr == ATTR_MAX_DYNAMIC_SHARED {
            let v = u32::try_from(value).map_err(|_| Status::ERROR_INVALID_VALUE)?;
            if v.saturating_add(f.static_shared) > SHARED_PER_BLOCK_OPTIN as u32 {
                return Err(Status::ERROR_INVALID_VALUE);
            }
            f.max_dynamic_shared.set(v);
        }
        Ok(())
    }

    fn occupancy(&mut self, f: &CpuFunc, block_size: u32, dynamic_shared: u64) -> BResult<u32> {
        if block_size == 0 || block_size > MAX_THREADS_PER_BLOCK as u32 {
            return Ok(0);
        }
        let by_threads = 2048 / block_size;
        let smem = u64::from(f.static_shared) + dynamic_shared;
        let by_smem = (164 * 1024u64).checked_div(smem).unwrap_or(32).min(32) as u32;
        Ok(by_threads.min(by_smem).min(32))
    }

    fn launch(
        &mut self,
        _ctx: &u32,
        (f, module): (&CpuFunc, &LoadedModule),
        _stream: Option<&()>,
        launch: &LaunchParams<'_>,
        output: &mut dyn OutputSink,
    ) -> BResult<()> {
        if launch.shared_bytes > f.max_dynamic_shared.get() {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        let cfg = LaunchConfig {
            grid: launch.grid,
            block: launch.block,
            dynamic_shared_bytes: launch.shared_bytes,
        };
        let printed = Mutex::new(Vec::<u8>::new());
        let printf = |line: &str| {
            if let Ok(mut v) = printed.lock() {
                v.extend_from_slice(line.as_bytes());
            }
        };
        let opts = LaunchOptions {
            instruction_budget: self.config.instruction_budget,
            printf: &printf,
            parallel: self.config.parallel,
            time_limit: self.config.launch_time_limit,
            cancel: Some(&self.cancel),
        };
        let result = vcuda_ptx::launch(module, &f.kernel, &cfg, launch.params, &self.arena, &opts);
        let printed = printed.into_inner().unwrap_or_else(|e| e.into_inner());
        if !printed.is_empty() {
            output.write_output(&printed);
        }
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                // A limit of the executor ended the kernel: say which, and how to raise it.
                match &e {
                    ExecError::LaunchTimeout => warn!(
                        kernel = %f.kernel,
                        "launch ended after {} warp-instructions, the instruction budget \
                         (vcuda executor --instruction-budget)",
                        self.config.instruction_budget
                    ),
                    ExecError::WatchdogExpired => warn!(
                        kernel = %f.kernel,
                        "launch ended by the watchdog after {:?} (vcuda executor --launch-timeout)",
                        self.config.launch_time_limit.unwrap_or_default()
                    ),
                    _ => debug!(kernel = %f.kernel, "launch failed: {e}"),
                }
                Err(exec_status(&e))
            }
        }
    }

    fn create_stream(&mut self, _ctx: &u32, _flags: u32, _priority: i32) -> BResult<()> {
        Ok(())
    }

    fn destroy_stream(&mut self, _stream: ()) -> BResult<()> {
        Ok(())
    }

    fn stream_synchronize(&mut self, _ctx: &u32, _stream: Option<&()>) -> BResult<()> {
        Ok(())
    }

    fn stream_query(&mut self, _ctx: &u32, _stream: Option<&()>) -> BResult<bool> {
        Ok(true)
    }

    fn stream_wait_event(
        &mut self,
        _ctx: &u32,
        _stream: Option<&()>,
        _event: &CpuEvent,
    ) -> BResult<()> {
        // Work runs eagerly in submission order, so the event's work is already complete.
        Ok(())
    }

    fn create_event(&mut self, _ctx: &u32, flags: u32) -> BResult<CpuEvent> {
        Ok(CpuEvent {
            recorded: Cell::new(None),
            timing: flags & EVENT_DISABLE_TIMING == 0,
        })
    }

    fn destroy_event(&mut self, _event: CpuEvent) -> BResult<()> {
        Ok(())
    }

    fn record_event(&mut self, _ctx: &u32, e: &CpuEvent, _stream: Option<&()>) -> BResult<()> {
        e.recorded.set(Some(Instant::now()));
        Ok(())
    }

    fn event_query(&mut self, _event: &CpuEvent) -> BResult<bool> {
        Ok(true)
    }

    fn event_synchronize(&mut self, _event: &CpuEvent) -> BResult<()> {
        Ok(())
    }

    fn event_elapsed_ms(&mut self, a: &CpuEvent, b: &CpuEvent) -> BResult<f32> {
        if !a.timing || !b.timing {
            return Err(Status::ERROR_INVALID_HANDLE);
        }
        match (a.recorded.get(), b.recorded.get()) {
            (Some(t0), Some(t1)) => {
                let ms = if t1 >= t0 {
                    (t1 - t0).as_secs_f64() * 1e3
                } else {
                    -((t0 - t1).as_secs_f64() * 1e3)
                };
                Ok(ms as f32)
            }
            _ => Err(Status::ERROR_NOT_READY),
        }
    }
}
