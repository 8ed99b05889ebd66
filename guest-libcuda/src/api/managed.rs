//! Managed memory (`cuMemAllocManaged`), emulated with coherence at synchronisation points.
//!
//! A managed allocation is device memory whose address is also mapped, at the same numeric
//! address, as ordinary host memory in this process (the executor's device VA range is
//! otherwise unused here). The host mapping is authoritative until device work starts: before
//! the first launch or memset after a synchronisation, every managed range is copied to the
//! device; at the next synchronising call (context/stream/event synchronize, a copy that
//! involves managed memory) the ranges are copied back. This is the coherence model of GPUs
//! without concurrent managed access (`CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS = 0`): the
//! host must not touch managed memory while device work runs. Copies from or to managed
//! pointers use the host mapping.

use std::collections::BTreeMap;
use std::ffi::{c_uint, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use virtio_cuda::protocol::{self as p, Sink, Source, Status};

use crate::driver::{driver, Driver, R};
use crate::ffi::{entry, put};
use crate::types::{CUdeviceptr, Handle};

/// One managed range: its context, the device allocation holding it, its (page-rounded) length.
#[derive(Debug, Clone, Copy)]
struct Range {
    ctx: u64,
    base: u64,
    len: usize,
}

static RANGES: Mutex<BTreeMap<u64, Range>> = Mutex::new(BTreeMap::new());
/// Any managed memory exists (keeps launches free of a lock otherwise).
static ANY: AtomicBool = AtomicBool::new(false);
/// Device work ran since the ranges were last copied back.
static DEVICE_NEWER: AtomicBool = AtomicBool::new(false);

fn ranges() -> MutexGuard<'static, BTreeMap<u64, Range>> {
    RANGES.lock().unwrap_or_else(|e| e.into_inner())
}

/// True when `addr` lies in a managed allocation.
pub fn contains(addr: u64) -> bool {
    ANY.load(Ordering::Acquire)
        && ranges()
            .range(..=addr)
            .next_back()
            .is_some_and(|(start, r)| addr - start < r.len as u64)
}

/// Chunk of the coherence copies.
const CHUNK: usize = 16 << 20;

/// Before device work: the device copies get the host's contents (once per synchronisation).
pub fn before_device_work(d: &Driver) -> R<()> {
    if !ANY.load(Ordering::Acquire) || DEVICE_NEWER.swap(true, Ordering::AcqRel) {
        return Ok(());
    }
    for (&addr, r) in ranges().iter() {
        for off in (0..r.len).step_by(CHUNK) {
            let n = CHUNK.min(r.len - off);
            // SAFETY: the host mapping at `addr` spans `r.len` bytes (created by alloc below).
            let bytes =
                unsafe { std::slice::from_raw_parts((addr as usize + off) as *const u8, n) };
            d.call(&p::MemcpyHtoD {
                ctx: r.ctx,
                stream: 0,
                dst: addr + off as u64,
                src: Source::Inline(bytes.to_vec()),
            })?;
        }
    }
    Ok(())
}

/// At a synchronising call: the host mappings get the device's contents.
pub fn sync_point(d: &Driver) -> R<()> {
    if !ANY.load(Ordering::Acquire) || !DEVICE_NEWER.swap(false, Ordering::AcqRel) {
        return Ok(());
    }
    for (&addr, r) in ranges().iter() {
        for off in (0..r.len).step_by(CHUNK) {
            let n = CHUNK.min(r.len - off);
            let reply = d.call(&p::MemcpyDtoH {
                ctx: r.ctx,
                stream: 0,
                src: addr + off as u64,
                len: n as u64,
                dst: Sink::Reply,
            })?;
            if reply.data.len() != n {
                return Err(Status::ERROR_UNKNOWN);
            }
            // SAFETY: the host mapping at `addr` spans `r.len` bytes.
            let host =
                unsafe { std::slice::from_raw_parts_mut((addr as usize + off) as *mut u8, n) };
            host.copy_from_slice(&reply.data);
        }
    }
    Ok(())
}

const PAGE: u64 = 4096;

/// Allocates device memory with a page of slack on each side and maps the whole pages inside
/// it at the same addresses: the managed pointer is the first page boundary, so the mapping
/// never shares a page with another allocation.
fn alloc(size: usize) -> R<u64> {
    let d = driver()?;
    let ctx = d.current_ctx()?;
    if size == 0 {
        return Err(Status::ERROR_INVALID_VALUE);
    }
    let len = (size as u64).div_ceil(PAGE) * PAGE;
    let base = d
        .call(&p::MemAlloc {
            ctx,
            size: len + PAGE,
        })?
        .dptr;
    let addr = base.div_ceil(PAGE) * PAGE;
    // SAFETY: a fresh anonymous mapping at an address in the executor's device range, which
    // nothing in this process uses; MAP_FIXED_NOREPLACE refuses to replace any mapping.
    let m = unsafe {
        libc::mmap(
            addr as usize as *mut c_void,
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if m != addr as usize as *mut c_void {
        if m != libc::MAP_FAILED {
            // SAFETY: unmapping what we just mapped (at the wrong address).
            unsafe { libc::munmap(m, len as usize) };
        }
        let _ = d.call(&p::MemFree { ctx, dptr: base });
        tracing::warn!("vcuda: cannot map managed memory at {addr:#x}; cuMemAllocManaged fails");
        return Err(Status::ERROR_NOT_SUPPORTED);
    }
    // The first device work copies the (zero-filled) mapping to the device.
    ranges().insert(
        addr,
        Range {
            ctx,
            base,
            len: len as usize,
        },
    );
    ANY.store(true, Ordering::Release);
    Ok(addr)
}

/// Frees a managed allocation; `Ok(false)` when `dptr` is not one.
pub fn free(d: &Driver, dptr: u64) -> R<bool> {
    let Some(r) = ranges().remove(&dptr) else {
        return Ok(false);
    };
    // SAFETY: the mapping alloc created for this range.
    unsafe { libc::munmap(dptr as usize as *mut c_void, r.len) };
    d.call(&p::MemFree {
        ctx: r.ctx,
        dptr: r.base,
    })?;
    Ok(true)
}

entry! {
    fn cuMemAllocManaged(dptr: *mut CUdeviceptr, size: usize, _flags: c_uint) proc(cuMemAllocManaged 6000) {
        if dptr.is_null() {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        put(dptr, alloc(size)?)
    }

    fn cuMemPrefetchAsync(_dptr: CUdeviceptr, _count: usize, _dst: c_uint, _stream: Handle) proc(cuMemPrefetchAsync 8000, 12020) per_thread(cuMemPrefetchAsync_ptsz, _ptds) {
        // Placement hints have no effect on the emulation.
        driver().map(|_| ())
    }

    fn cuMemAdvise(_dptr: CUdeviceptr, _count: usize, _advice: c_uint, _device: c_uint) proc(cuMemAdvise 8000, 12020) {
        driver().map(|_| ())
    }
}
