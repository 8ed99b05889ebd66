//! Device memory, copies, memsets, pinned host memory (emulated) and pointer attributes.
//!
//! Copies are split into chunks of at most [`CHUNK`] bytes. Synchronous copies wait for the
//! executor; `*Async` host→device copies and all memsets are fire-and-forget (the bytes are
//! captured when the call returns, so the application may reuse its buffer at once, as with
//! pageable memory in CUDA). Device→host copies always wait: the bytes must land in the
//! application's buffer before the next synchronising call can observe them.

use std::ffi::{c_int, c_uint, c_void};

use virtio_cuda::client::Bulk;
use virtio_cuda::protocol::{self as p, DevRegion, Sink, Source, Status};

use crate::api::managed;
use crate::driver::{driver, Driver, HostRange, R};
use crate::ffi::{bytes, bytes_mut, entry, get, h, ptr, put};
use crate::types::{
    CUdeviceptr, Handle, Memcpy2D, Memcpy3D, MEMORYTYPE_DEVICE, MEMORYTYPE_HOST, MEMORYTYPE_UNIFIED,
};

/// Largest payload of one copy request.
pub const CHUNK: usize = 16 << 20;

/// Copies larger than this use the transport's data window when it has one.
const WINDOW_MIN: usize = 64 << 10;

/// Pitch alignment of `cuMemAllocPitch`.
const PITCH_ALIGN: usize = 512;

/// How a copy is ordered: on a stream (`*Async`), or synchronously.
#[derive(Debug, Clone, Copy)]
pub struct Order {
    pub ctx: u64,
    pub stream: u64,
    pub sync: bool,
}

impl Order {
    /// A synchronous copy on the current context's NULL stream (or the per-thread stream).
    pub fn sync(d: &Driver, per_thread: bool) -> R<Self> {
        let (ctx, stream) = d.stream_ctx(0, per_thread)?;
        Ok(Self {
            ctx,
            stream,
            sync: true,
        })
    }

    /// An asynchronous copy on `stream`.
    pub fn on(d: &Driver, stream: Handle, per_thread: bool) -> R<Self> {
        let (ctx, stream) = d.stream_ctx(h(stream), per_thread)?;
        Ok(Self {
            ctx,
            stream,
            sync: false,
        })
    }
}

/// Host → device (into the host mapping when `dst` is managed memory).
pub fn h2d(d: &Driver, o: Order, dst: u64, src: &[u8]) -> R<()> {
    if managed::contains(dst) {
        managed::sync_point(d)?;
        // SAFETY: the managed mapping covers the destination per the cuMemcpy contract.
        unsafe { std::ptr::copy(src.as_ptr(), dst as usize as *mut u8, src.len()) };
        return Ok(());
    }
    let window = d.client.window_size();
    if window >= WINDOW_MIN && src.len() > WINDOW_MIN {
        // Bulk bytes go through the data window, pipelined where the transport can (we copy
        // the next piece in while the executor copies the previous one out); the source is
        // pageable memory the caller may reuse as soon as we return, so the last piece waits.
        let piped = d.pipelined(Bulk::ToDevice(src), |c| p::MemcpyHtoD {
            ctx: o.ctx,
            stream: o.stream,
            dst: dst.wrapping_add(c.offset),
            src: Source::Shm {
                offset: c.window_offset,
                len: c.len,
            },
        })?;
        if piped {
            return Ok(());
        }
        for (i, chunk) in src.chunks(window).enumerate() {
            let req = p::MemcpyHtoD {
                ctx: o.ctx,
                stream: o.stream,
                dst: dst.wrapping_add((i * window) as u64),
                src: Source::Shm {
                    offset: 0,
                    len: chunk.len() as u64,
                },
            };
            d.call_with_data(&req, chunk, &mut [])?;
        }
        return Ok(());
    }
    for (i, chunk) in src.chunks(CHUNK).enumerate() {
        let req = p::MemcpyHtoD {
            ctx: o.ctx,
            stream: o.stream,
            dst: dst.wrapping_add((i * CHUNK) as u64),
            src: Source::Inline(chunk.to_vec()),
        };
        if o.sync {
            d.call(&req)?;
        } else {
            d.send(&req)?;
        }
    }
    Ok(())
}

/// Device → host (always waits for the bytes; from the host mapping for managed memory).
pub fn d2h(d: &Driver, o: Order, dst: &mut [u8], src: u64) -> R<()> {
    if managed::contains(src) {
        managed::sync_point(d)?;
        // SAFETY: the managed mapping covers the source per the cuMemcpy contract.
        unsafe { std::ptr::copy(src as usize as *const u8, dst.as_mut_ptr(), dst.len()) };
        return Ok(());
    }
    let window = d.client.window_size();
    if window >= WINDOW_MIN && dst.len() > WINDOW_MIN {
        let piped = d.pipelined(Bulk::FromDevice(&mut *dst), |c| p::MemcpyDtoH {
            ctx: o.ctx,
            stream: o.stream,
            src: src.wrapping_add(c.offset),
            len: c.len,
            dst: Sink::Shm {
                offset: c.window_offset,
                len: c.len,
            },
        })?;
        if piped {
            return Ok(());
        }
        for (i, chunk) in dst.chunks_mut(window).enumerate() {
            let req = p::MemcpyDtoH {
                ctx: o.ctx,
                stream: o.stream,
                src: src.wrapping_add((i * window) as u64),
                len: chunk.len() as u64,
                dst: Sink::Shm {
                    offset: 0,
                    len: chunk.len() as u64,
                },
            };
            d.call_with_data(&req, &[], chunk)?;
        }
        return Ok(());
    }
    for (i, chunk) in dst.chunks_mut(CHUNK).enumerate() {
        let r = d.call(&p::MemcpyDtoH {
            ctx: o.ctx,
            stream: o.stream,
            src: src.wrapping_add((i * CHUNK) as u64),
            len: chunk.len() as u64,
            dst: Sink::Reply,
        })?;
        if r.data.len() != chunk.len() {
            return Err(Status::ERROR_UNKNOWN);
        }
        chunk.copy_from_slice(&r.data);
    }
    Ok(())
}

/// Device → device (through the host mappings when either side is managed memory).
pub fn d2d(d: &Driver, o: Order, dst: u64, src: u64, len: u64) -> R<()> {
    if managed::contains(dst) || managed::contains(src) {
        // SAFETY: both ranges are valid for `len` bytes per the cuMemcpy contract.
        return unsafe { copy_any(d, o, dst, src, len as usize) };
    }
    managed::before_device_work(d)?;
    let req = p::MemcpyDtoD {
        ctx: o.ctx,
        stream: o.stream,
        dst,
        src,
        len,
    };
    if o.sync {
        d.call(&req)?;
    } else {
        d.send(&req)?;
    }
    Ok(())
}

/// A copy between any two of host and device memory, classifying unified pointers.
unsafe fn copy_any(d: &Driver, o: Order, dst: u64, src: u64, len: usize) -> R<()> {
    let device = |p: u64| d.is_device_ptr(p) && !managed::contains(p);
    if managed::contains(dst) || managed::contains(src) {
        managed::sync_point(d)?;
    }
    match (device(dst), device(src)) {
        (true, true) => d2d(d, o, dst, src, len as u64),
        // SAFETY: a host pointer of `len` bytes per the cuMemcpy contract.
        (true, false) => h2d(d, o, dst, unsafe { bytes(src as usize as *const u8, len) }?),
        (false, true) => {
            // SAFETY: as above, writable.
            let out = unsafe { bytes_mut(dst as usize as *mut u8, len) }?;
            d2h(d, o, out, src)
        }
        (false, false) => {
            // SAFETY: both host buffers of `len` bytes per the contract; may overlap.
            unsafe { std::ptr::copy(src as usize as *const u8, dst as usize as *mut u8, len) };
            Ok(())
        }
    }
}

/// One side of a strided copy.
#[derive(Debug, Clone, Copy)]
enum Side {
    Host {
        ptr: usize,
        pitch: usize,
        slice: usize,
    },
    Device {
        addr: u64,
        pitch: u64,
        slice: u64,
    },
}

fn side(
    d: &Driver,
    kind: c_uint,
    host: usize,
    dev: u64,
    pitch: usize,
    height: usize,
    offset: (usize, usize, usize),
) -> R<Side> {
    let (x, y, z) = offset;
    let slice = pitch
        .checked_mul(height)
        .ok_or(Status::ERROR_INVALID_VALUE)?;
    let off = z
        .checked_mul(slice)
        .and_then(|a| a.checked_add(y.checked_mul(pitch)?))
        .and_then(|a| a.checked_add(x))
        .ok_or(Status::ERROR_INVALID_VALUE)?;
    let is_dev = match kind {
        MEMORYTYPE_HOST => false,
        MEMORYTYPE_DEVICE => true,
        MEMORYTYPE_UNIFIED => d.is_device_ptr(dev),
        _ => return Err(Status::ERROR_NOT_SUPPORTED),
    };
    Ok(if is_dev {
        Side::Device {
            addr: dev.wrapping_add(off as u64),
            pitch: pitch as u64,
            slice: slice as u64,
        }
    } else {
        let base = if kind == MEMORYTYPE_UNIFIED {
            dev as usize
        } else {
            host
        };
        if base == 0 {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        Side::Host {
            ptr: base.wrapping_add(off),
            pitch,
            slice,
        }
    })
}

/// A 2D/3D copy of `width` bytes × `height` rows × `depth` slices, in row groups of at most
/// [`CHUNK`] bytes.
unsafe fn copy_strided(
    d: &Driver,
    o: Order,
    src: Side,
    dst: Side,
    width: usize,
    height: usize,
    depth: usize,
) -> R<()> {
    if width == 0 || height == 0 || depth == 0 {
        return Ok(());
    }
    let rows_per = (CHUNK / width).clamp(1, height);
    for z in 0..depth {
        let mut y = 0;
        while y < height {
            let n = rows_per.min(height - y);
            // SAFETY: the rows lie inside the application's buffers per the cuMemcpy2D/3D contract.
            unsafe { copy_rows(d, o, at(src, y, z), at(dst, y, z), width, n) }?;
            y += n;
        }
    }
    Ok(())
}

fn at(s: Side, y: usize, z: usize) -> Side {
    match s {
        Side::Host { ptr, pitch, slice } => Side::Host {
            ptr: ptr
                .wrapping_add(z.wrapping_mul(slice))
                .wrapping_add(y.wrapping_mul(pitch)),
            pitch,
            slice,
        },
        Side::Device { addr, pitch, slice } => Side::Device {
            addr: addr
                .wrapping_add((z as u64).wrapping_mul(slice))
                .wrapping_add((y as u64).wrapping_mul(pitch)),
            pitch,
            slice,
        },
    }
}

unsafe fn copy_rows(
    d: &Driver,
    o: Order,
    src: Side,
    dst: Side,
    width: usize,
    rows: usize,
) -> R<()> {
    let region = |addr, pitch| DevRegion {
        addr,
        pitch,
        slice_pitch: 0,
    };
    match (src, dst) {
        (
            Side::Host {
                ptr: s, pitch: sp, ..
            },
            Side::Device { addr, pitch, .. },
        ) => {
            let mut packed = Vec::with_capacity(width * rows);
            for r in 0..rows {
                // SAFETY: each row is `width` readable bytes per the contract.
                packed.extend_from_slice(unsafe { bytes((s + r * sp) as *const u8, width) }?);
            }
            let req = p::MemcpyHtoDStrided {
                ctx: o.ctx,
                stream: o.stream,
                dst: region(addr, pitch),
                width_bytes: width as u64,
                height: rows as u64,
                depth: 1,
                src: Source::Inline(packed),
            };
            if o.sync {
                d.call(&req).map(|_| ())
            } else {
                d.send(&req)
            }
        }
        (
            Side::Device { addr, pitch, .. },
            Side::Host {
                ptr: t, pitch: tp, ..
            },
        ) => {
            let r = d.call(&p::MemcpyDtoHStrided {
                ctx: o.ctx,
                stream: o.stream,
                src: region(addr, pitch),
                width_bytes: width as u64,
                height: rows as u64,
                depth: 1,
                dst: Sink::Reply,
            })?;
            if r.data.len() != width * rows {
                return Err(Status::ERROR_UNKNOWN);
            }
            for (i, row) in r.data.chunks_exact(width).enumerate() {
                // SAFETY: each row is `width` writable bytes per the contract.
                unsafe { bytes_mut((t + i * tp) as *mut u8, width) }?.copy_from_slice(row);
            }
            Ok(())
        }
        (
            Side::Device {
                addr: s, pitch: sp, ..
            },
            Side::Device {
                addr: t, pitch: tp, ..
            },
        ) => {
            let req = p::MemcpyDtoDStrided {
                ctx: o.ctx,
                stream: o.stream,
                dst: region(t, tp),
                src: region(s, sp),
                width_bytes: width as u64,
                height: rows as u64,
                depth: 1,
            };
            if o.sync {
                d.call(&req).map(|_| ())
            } else {
                d.send(&req)
            }
        }
        (
            Side::Host {
                ptr: s, pitch: sp, ..
            },
            Side::Host {
                ptr: t, pitch: tp, ..
            },
        ) => {
            for r in 0..rows {
                // SAFETY: rows of `width` bytes in the application's buffers.
                unsafe {
                    std::ptr::copy((s + r * sp) as *const u8, (t + r * tp) as *mut u8, width)
                };
            }
            Ok(())
        }
    }
}

unsafe fn memcpy2d(c: *const Memcpy2D, o: Order) -> R<()> {
    // SAFETY: cuda.h: `c` is null or a valid descriptor.
    let c = unsafe { get(c) }?;
    let d = driver()?;
    let src = side(
        d,
        c.srcMemoryType,
        c.srcHost as usize,
        c.srcDevice,
        c.srcPitch.max(c.WidthInBytes),
        c.Height,
        (c.srcXInBytes, c.srcY, 0),
    )?;
    let dst = side(
        d,
        c.dstMemoryType,
        c.dstHost as usize,
        c.dstDevice,
        c.dstPitch.max(c.WidthInBytes),
        c.Height,
        (c.dstXInBytes, c.dstY, 0),
    )?;
    // SAFETY: the descriptor's buffers are valid per the contract.
    unsafe { copy_strided(d, o, src, dst, c.WidthInBytes, c.Height, 1) }
}

unsafe fn memcpy3d(c: *const Memcpy3D, o: Order) -> R<()> {
    // SAFETY: cuda.h: `c` is null or a valid descriptor.
    let c = unsafe { get(c) }?;
    let d = driver()?;
    let src = side(
        d,
        c.srcMemoryType,
        c.srcHost as usize,
        c.srcDevice,
        c.srcPitch.max(c.WidthInBytes),
        c.srcHeight.max(c.Height),
        (c.srcXInBytes, c.srcY, c.srcZ),
    )?;
    let dst = side(
        d,
        c.dstMemoryType,
        c.dstHost as usize,
        c.dstDevice,
        c.dstPitch.max(c.WidthInBytes),
        c.dstHeight.max(c.Height),
        (c.dstXInBytes, c.dstY, c.dstZ),
    )?;
    // SAFETY: the descriptor's buffers are valid per the contract.
    unsafe { copy_strided(d, o, src, dst, c.WidthInBytes, c.Height, c.Depth) }
}

fn memset(
    o: Order,
    dst: u64,
    pitch: usize,
    elem: u8,
    value: u32,
    width: usize,
    height: usize,
) -> R<()> {
    let d = driver()?;
    managed::before_device_work(d)?;
    let req = p::Memset {
        ctx: o.ctx,
        stream: o.stream,
        dst,
        pitch: pitch as u64,
        elem_size: elem,
        value,
        width: width as u64,
        height: height as u64,
    };
    if o.sync {
        d.call(&req).map(|_| ())
    } else {
        d.send(&req)
    }
}

fn alloc_async(dptr: *mut CUdeviceptr, size: usize, stream: Handle, per_thread: bool) -> R<()> {
    let d = driver()?;
    let (ctx, _) = d.stream_ctx(h(stream), per_thread)?;
    if dptr.is_null() || size == 0 {
        return Err(Status::ERROR_INVALID_VALUE);
    }
    let dp = d
        .call(&p::MemAlloc {
            ctx,
            size: size as u64,
        })?
        .dptr;
    // SAFETY: checked non-null; cuda.h: writable.
    unsafe { put(dptr, dp) }
}

fn alloc(size: usize) -> R<u64> {
    let d = driver()?;
    let ctx = d.current_ctx()?;
    if size == 0 {
        return Err(Status::ERROR_INVALID_VALUE);
    }
    Ok(d.call(&p::MemAlloc {
        ctx,
        size: size as u64,
    })?
    .dptr)
}

fn free(dptr: u64) -> R<()> {
    let d = driver()?;
    let ctx = d.current_ctx()?;
    if dptr == 0 || managed::free(d, dptr)? {
        return Ok(());
    }
    d.call(&p::MemFree { ctx, dptr })?;
    Ok(())
}

/// Stream-ordered free: the memory must outlive the work queued before the free.
fn free_async(dptr: u64, stream: Handle, per_thread: bool) -> R<()> {
    let d = driver()?;
    let (ctx, s) = d.stream_ctx(h(stream), per_thread)?;
    d.call(&p::StreamSynchronize { ctx, stream: s })?;
    d.call(&p::MemFree { ctx, dptr })?;
    Ok(())
}

/// Host memory for `cuMemHostAlloc`: page-aligned anonymous memory.
fn host_alloc(size: usize, flags: u32) -> R<*mut c_void> {
    let d = driver()?;
    if size == 0 {
        return Err(Status::ERROR_INVALID_VALUE);
    }
    // SAFETY: an anonymous private mapping; no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Status::ERROR_OUT_OF_MEMORY);
    }
    d.objects_mut().host.insert(
        p as usize,
        HostRange {
            len: size,
            flags,
            owned: true,
        },
    );
    Ok(p)
}

/// The host range containing `addr`.
fn host_range(d: &Driver, addr: usize) -> Option<(usize, HostRange)> {
    d.objects()
        .host
        .range(..=addr)
        .next_back()
        .filter(|(start, r)| addr < **start + r.len.max(1))
        .map(|(s, r)| (*s, *r))
}

/// `CUpointer_attribute` values the shim answers.
mod attr {
    pub const CONTEXT: u32 = 1;
    pub const MEMORY_TYPE: u32 = 2;
    pub const DEVICE_POINTER: u32 = 3;
    pub const HOST_POINTER: u32 = 4;
    pub const SYNC_MEMOPS: u32 = 6;
    pub const BUFFER_ID: u32 = 7;
    pub const IS_MANAGED: u32 = 8;
    pub const DEVICE_ORDINAL: u32 = 9;
    pub const IS_LEGACY_CUDA_IPC_CAPABLE: u32 = 10;
    pub const RANGE_START_ADDR: u32 = 11;
    pub const RANGE_SIZE: u32 = 12;
    pub const MAPPED: u32 = 13;
    pub const ALLOWED_HANDLE_TYPES: u32 = 14;
    pub const IS_GPU_DIRECT_RDMA_CAPABLE: u32 = 15;
    pub const ACCESS_FLAGS: u32 = 16;
    pub const MEMPOOL_HANDLE: u32 = 17;
    pub const MAPPING_SIZE: u32 = 18;
    pub const MAPPING_BASE_ADDR: u32 = 19;
    pub const MEMORY_BLOCK_ID: u32 = 20;
    pub const IS_HW_DECOMPRESS_CAPABLE: u32 = 21;
    /// CUDA 13.5.
    pub const LOCALITY_DOMAIN_ORDINAL: u32 = 22;
    /// `CU_POINTER_ATTRIBUTE_ACCESS_FLAG_READWRITE`.
    pub const ACCESS_READWRITE: u32 = 3;
}

/// Writes one pointer attribute; `Ok(false)` when it does not apply to this pointer.
unsafe fn pointer_attribute(d: &Driver, data: *mut c_void, a: u32, p: u64) -> R<bool> {
    let ctx = crate::driver::current_ctx_raw();
    let device = d.is_device_ptr(p);
    let host = if device {
        None
    } else {
        host_range(d, p as usize)
    };
    if !device && host.is_none() {
        return Ok(false);
    }
    let range = if device {
        let ctx = d.current_ctx()?;
        let r = d.call(&p::MemGetAddressRange { ctx, dptr: p })?;
        (r.base, r.size)
    } else {
        host.map(|(s, r)| (s as u64, r.len as u64))
            .unwrap_or((0, 0))
    };
    // SAFETY: `data` points to storage of the attribute's type per cuPointerGetAttribute.
    unsafe {
        match a {
            attr::CONTEXT => put(data.cast::<Handle>(), ptr(ctx))?,
            attr::MEMORY_TYPE => put(
                data.cast::<c_uint>(),
                if device {
                    MEMORYTYPE_DEVICE
                } else {
                    MEMORYTYPE_HOST
                },
            )?,
            attr::DEVICE_POINTER => {
                if !device {
                    return Ok(false);
                }
                put(data.cast::<u64>(), p)?
            }
            attr::HOST_POINTER => {
                if device {
                    return Ok(false);
                }
                put(data.cast::<*mut c_void>(), p as usize as *mut c_void)?
            }
            attr::SYNC_MEMOPS | attr::MAPPED => put(data.cast::<c_uint>(), 1)?,
            attr::IS_MANAGED => put(data.cast::<c_uint>(), c_uint::from(managed::contains(p)))?,
            attr::BUFFER_ID => put(data.cast::<u64>(), range.0)?,
            attr::DEVICE_ORDINAL => put(data.cast::<c_int>(), 0)?,
            attr::RANGE_START_ADDR => put(data.cast::<u64>(), range.0)?,
            attr::RANGE_SIZE => put(data.cast::<usize>(), range.1 as usize)?,
            // One allocation is one mapping of one physical block.
            attr::MAPPING_SIZE => put(data.cast::<usize>(), range.1 as usize)?,
            attr::MAPPING_BASE_ADDR => put(data.cast::<u64>(), range.0)?,
            attr::MEMORY_BLOCK_ID => put(data.cast::<u64>(), range.0)?,
            // No IPC, no exportable handles, no RDMA, no decompression engine.
            attr::IS_LEGACY_CUDA_IPC_CAPABLE
            | attr::IS_GPU_DIRECT_RDMA_CAPABLE
            | attr::IS_HW_DECOMPRESS_CAPABLE => put(data.cast::<c_uint>(), 0)?,
            attr::ALLOWED_HANDLE_TYPES => put(data.cast::<u64>(), 0)?,
            // The device reads and writes its own allocations; host memory it reaches only
            // through copies (no zero-copy mapping).
            attr::ACCESS_FLAGS => put(
                data.cast::<c_uint>(),
                if device { attr::ACCESS_READWRITE } else { 0 },
            )?,
            attr::MEMPOOL_HANDLE => put(data.cast::<usize>(), 0)?,
            attr::LOCALITY_DOMAIN_ORDINAL => put(data.cast::<c_int>(), -1)?,
            // Not a `CUpointer_attribute` (as the real driver answers).
            _ => return Err(Status::ERROR_INVALID_VALUE),
        }
    }
    Ok(true)
}

entry! {
    fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, size: usize) proc(cuMemAlloc 3020) {
        if dptr.is_null() {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        put(dptr, alloc(size)?)
    }

    fn cuMemAllocPitch_v2(dptr: *mut CUdeviceptr, pitch: *mut usize, width: usize, height: usize, _elem: c_uint) proc(cuMemAllocPitch 3020) {
        if dptr.is_null() || pitch.is_null() || width == 0 || height == 0 {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        let p = width.div_ceil(PITCH_ALIGN) * PITCH_ALIGN;
        let size = p.checked_mul(height).ok_or(Status::ERROR_INVALID_VALUE)?;
        put(dptr, alloc(size)?)?;
        put(pitch, p)
    }

    fn cuMemAllocAsync(dptr: *mut CUdeviceptr, size: usize, stream: Handle) proc(cuMemAllocAsync 11020) per_thread(cuMemAllocAsync_ptsz, ptds) {
        alloc_async(dptr, size, stream, ptds)
    }

    fn cuMemFree_v2(dptr: CUdeviceptr) proc(cuMemFree 3020) {
        free(dptr)
    }

    fn cuMemFreeAsync(dptr: CUdeviceptr, stream: Handle) proc(cuMemFreeAsync 11020) per_thread(cuMemFreeAsync_ptsz, ptds) {
        free_async(dptr, stream, ptds)
    }

    fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) proc(cuMemGetInfo 3020) {
        let d = driver()?;
        let ctx = d.current_ctx()?;
        let r = d.call(&p::MemGetInfo { ctx })?;
        put(free, usize::try_from(r.free).unwrap_or(usize::MAX))?;
        put(total, usize::try_from(r.total).unwrap_or(usize::MAX))
    }

    fn cuMemGetAddressRange_v2(base: *mut CUdeviceptr, size: *mut usize, dptr: CUdeviceptr) proc(cuMemGetAddressRange 3020) {
        let d = driver()?;
        let ctx = d.current_ctx()?;
        let r = d.call(&p::MemGetAddressRange { ctx, dptr })?;
        if !base.is_null() {
            put(base, r.base)?;
        }
        if !size.is_null() {
            put(size, r.size as usize)?;
        }
        Ok(())
    }

    fn cuMemcpy(dst: CUdeviceptr, src: CUdeviceptr, len: usize) proc(cuMemcpy 4000) per_thread(cuMemcpy_ptds, ptds) {
        let d = driver()?;
        copy_any(d, Order::sync(d, ptds)?, dst, src, len)
    }

    fn cuMemcpyAsync(dst: CUdeviceptr, src: CUdeviceptr, len: usize, stream: Handle) proc(cuMemcpyAsync 4000) per_thread(cuMemcpyAsync_ptsz, ptds) {
        let d = driver()?;
        copy_any(d, Order::on(d, stream, ptds)?, dst, src, len)
    }

    fn cuMemcpyPeer(dst: CUdeviceptr, _dc: Handle, src: CUdeviceptr, _sc: Handle, len: usize) proc(cuMemcpyPeer 4000) {
        let d = driver()?;
        d2d(d, Order::sync(d, false)?, dst, src, len as u64)
    }

    fn cuMemcpyPeerAsync(dst: CUdeviceptr, _dc: Handle, src: CUdeviceptr, _sc: Handle, len: usize, stream: Handle) proc(cuMemcpyPeerAsync 4000) {
        let d = driver()?;
        d2d(d, Order::on(d, stream, false)?, dst, src, len as u64)
    }

    fn cuMemcpyHtoD_v2(dst: CUdeviceptr, src: *const c_void, len: usize) proc(cuMemcpyHtoD 3020) per_thread(cuMemcpyHtoD_v2_ptds, ptds) {
        let d = driver()?;
        h2d(d, Order::sync(d, ptds)?, dst, bytes(src.cast(), len)?)
    }

    fn cuMemcpyHtoDAsync_v2(dst: CUdeviceptr, src: *const c_void, len: usize, stream: Handle) proc(cuMemcpyHtoDAsync 3020) per_thread(cuMemcpyHtoDAsync_v2_ptsz, ptds) {
        let d = driver()?;
        h2d(d, Order::on(d, stream, ptds)?, dst, bytes(src.cast(), len)?)
    }

    fn cuMemcpyDtoH_v2(dst: *mut c_void, src: CUdeviceptr, len: usize) proc(cuMemcpyDtoH 3020) per_thread(cuMemcpyDtoH_v2_ptds, ptds) {
        let d = driver()?;
        d2h(d, Order::sync(d, ptds)?, bytes_mut(dst.cast(), len)?, src)
    }

    fn cuMemcpyDtoHAsync_v2(dst: *mut c_void, src: CUdeviceptr, len: usize, stream: Handle) proc(cuMemcpyDtoHAsync 3020) per_thread(cuMemcpyDtoHAsync_v2_ptsz, ptds) {
        let d = driver()?;
        d2h(d, Order::on(d, stream, ptds)?, bytes_mut(dst.cast(), len)?, src)
    }

    fn cuMemcpyDtoD_v2(dst: CUdeviceptr, src: CUdeviceptr, len: usize) proc(cuMemcpyDtoD 3020) per_thread(cuMemcpyDtoD_v2_ptds, ptds) {
        let d = driver()?;
        d2d(d, Order::sync(d, ptds)?, dst, src, len as u64)
    }

    fn cuMemcpyDtoDAsync_v2(dst: CUdeviceptr, src: CUdeviceptr, len: usize, stream: Handle) proc(cuMemcpyDtoDAsync 3020) per_thread(cuMemcpyDtoDAsync_v2_ptsz, ptds) {
        let d = driver()?;
        d2d(d, Order::on(d, stream, ptds)?, dst, src, len as u64)
    }

    fn cuMemcpy2D_v2(c: *const Memcpy2D) proc(cuMemcpy2D 3020) per_thread(cuMemcpy2D_v2_ptds, ptds) {
        memcpy2d(c, Order::sync(driver()?, ptds)?)
    }

    fn cuMemcpy2DUnaligned_v2(c: *const Memcpy2D) proc(cuMemcpy2DUnaligned 3020) per_thread(cuMemcpy2DUnaligned_v2_ptds, ptds) {
        memcpy2d(c, Order::sync(driver()?, ptds)?)
    }

    fn cuMemcpy2DAsync_v2(c: *const Memcpy2D, stream: Handle) proc(cuMemcpy2DAsync 3020) per_thread(cuMemcpy2DAsync_v2_ptsz, ptds) {
        memcpy2d(c, Order::on(driver()?, stream, ptds)?)
    }

    fn cuMemcpy3D_v2(c: *const Memcpy3D) proc(cuMemcpy3D 3020) per_thread(cuMemcpy3D_v2_ptds, ptds) {
        memcpy3d(c, Order::sync(driver()?, ptds)?)
    }

    fn cuMemcpy3DAsync_v2(c: *const Memcpy3D, stream: Handle) proc(cuMemcpy3DAsync 3020) per_thread(cuMemcpy3DAsync_v2_ptsz, ptds) {
        memcpy3d(c, Order::on(driver()?, stream, ptds)?)
    }

    fn cuMemsetD8_v2(dst: CUdeviceptr, v: u8, n: usize) proc(cuMemsetD8 3020) per_thread(cuMemsetD8_v2_ptds, ptds) {
        memset(Order::sync(driver()?, ptds)?, dst, 0, 1, u32::from(v), n, 1)
    }

    fn cuMemsetD16_v2(dst: CUdeviceptr, v: u16, n: usize) proc(cuMemsetD16 3020) per_thread(cuMemsetD16_v2_ptds, ptds) {
        memset(Order::sync(driver()?, ptds)?, dst, 0, 2, u32::from(v), n, 1)
    }

    fn cuMemsetD32_v2(dst: CUdeviceptr, v: c_uint, n: usize) proc(cuMemsetD32 3020) per_thread(cuMemsetD32_v2_ptds, ptds) {
        memset(Order::sync(driver()?, ptds)?, dst, 0, 4, v, n, 1)
    }

    fn cuMemsetD2D8_v2(dst: CUdeviceptr, pitch: usize, v: u8, w: usize, hgt: usize) proc(cuMemsetD2D8 3020) per_thread(cuMemsetD2D8_v2_ptds, ptds) {
        memset(Order::sync(driver()?, ptds)?, dst, pitch, 1, u32::from(v), w, hgt)
    }

    fn cuMemsetD2D16_v2(dst: CUdeviceptr, pitch: usize, v: u16, w: usize, hgt: usize) proc(cuMemsetD2D16 3020) per_thread(cuMemsetD2D16_v2_ptds, ptds) {
        memset(Order::sync(driver()?, ptds)?, dst, pitch, 2, u32::from(v), w, hgt)
    }

    fn cuMemsetD2D32_v2(dst: CUdeviceptr, pitch: usize, v: c_uint, w: usize, hgt: usize) proc(cuMemsetD2D32 3020) per_thread(cuMemsetD2D32_v2_ptds, ptds) {
        memset(Order::sync(driver()?, ptds)?, dst, pitch, 4, v, w, hgt)
    }

    fn cuMemsetD8Async(dst: CUdeviceptr, v: u8, n: usize, s: Handle) proc(cuMemsetD8Async 3020) per_thread(cuMemsetD8Async_ptsz, ptds) {
        memset(Order::on(driver()?, s, ptds)?, dst, 0, 1, u32::from(v), n, 1)
    }

    fn cuMemsetD16Async(dst: CUdeviceptr, v: u16, n: usize, s: Handle) proc(cuMemsetD16Async 3020) per_thread(cuMemsetD16Async_ptsz, ptds) {
        memset(Order::on(driver()?, s, ptds)?, dst, 0, 2, u32::from(v), n, 1)
    }

    fn cuMemsetD32Async(dst: CUdeviceptr, v: c_uint, n: usize, s: Handle) proc(cuMemsetD32Async 3020) per_thread(cuMemsetD32Async_ptsz, ptds) {
        memset(Order::on(driver()?, s, ptds)?, dst, 0, 4, v, n, 1)
    }

    fn cuMemsetD2D8Async(dst: CUdeviceptr, pitch: usize, v: u8, w: usize, hgt: usize, s: Handle) proc(cuMemsetD2D8Async 3020) per_thread(cuMemsetD2D8Async_ptsz, ptds) {
        memset(Order::on(driver()?, s, ptds)?, dst, pitch, 1, u32::from(v), w, hgt)
    }

    fn cuMemsetD2D16Async(dst: CUdeviceptr, pitch: usize, v: u16, w: usize, hgt: usize, s: Handle) proc(cuMemsetD2D16Async 3020) per_thread(cuMemsetD2D16Async_ptsz, ptds) {
        memset(Order::on(driver()?, s, ptds)?, dst, pitch, 2, u32::from(v), w, hgt)
    }

    fn cuMemsetD2D32Async(dst: CUdeviceptr, pitch: usize, v: c_uint, w: usize, hgt: usize, s: Handle) proc(cuMemsetD2D32Async 3020) per_thread(cuMemsetD2D32Async_ptsz, ptds) {
        memset(Order::on(driver()?, s, ptds)?, dst, pitch, 4, v, w, hgt)
    }

    fn cuMemAllocHost_v2(pp: *mut *mut c_void, size: usize) proc(cuMemAllocHost 3020) {
        if pp.is_null() {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        put(pp, host_alloc(size, 0)?)
    }

    fn cuMemHostAlloc(pp: *mut *mut c_void, size: usize, flags: c_uint) proc(cuMemHostAlloc 2020) {
        if pp.is_null() {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        put(pp, host_alloc(size, flags)?)
    }

    fn cuMemFreeHost(p: *mut c_void) proc(cuMemFreeHost 2000) {
        let d = driver()?;
        let r = d
            .objects_mut()
            .host
            .remove(&(p as usize))
            .ok_or(Status::ERROR_INVALID_VALUE)?;
        if r.owned {
            // SAFETY: `p` and `r.len` are a mapping host_alloc created and nobody else unmaps.
            unsafe { libc::munmap(p, r.len) };
        }
        Ok(())
    }

    fn cuMemHostRegister_v2(p: *mut c_void, size: usize, flags: c_uint) proc(cuMemHostRegister 4000, 6050) {
        let d = driver()?;
        if p.is_null() || size == 0 {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        if host_range(d, p as usize).is_some() {
            return Err(Status::ERROR_HOST_MEMORY_ALREADY_REGISTERED);
        }
        d.objects_mut().host.insert(p as usize, HostRange { len: size, flags, owned: false });
        Ok(())
    }

    fn cuMemHostUnregister(p: *mut c_void) proc(cuMemHostUnregister 4000) {
        let d = driver()?;
        let mut o = d.objects_mut();
        match o.host.get(&(p as usize)) {
            Some(r) if !r.owned => {
                o.host.remove(&(p as usize));
                Ok(())
            }
            _ => Err(Status::ERROR_HOST_MEMORY_NOT_REGISTERED),
        }
    }

    fn cuMemHostGetFlags(flags: *mut c_uint, p: *mut c_void) proc(cuMemHostGetFlags 2030) {
        let d = driver()?;
        let (_, r) = host_range(d, p as usize).ok_or(Status::ERROR_INVALID_VALUE)?;
        put(flags, r.flags)
    }

    fn cuMemHostGetDevicePointer_v2(_dptr: *mut CUdeviceptr, _p: *mut c_void, _flags: c_uint) proc(cuMemHostGetDevicePointer 3020) {
        // Mapped (zero-copy) host memory needs the device to reach guest memory directly.
        Err(Status(crate::ffi::not_supported("cuMemHostGetDevicePointer")))
    }

    fn cuPointerGetAttribute(data: *mut c_void, attribute: c_uint, p: CUdeviceptr) proc(cuPointerGetAttribute 4000) {
        let d = driver()?;
        if data.is_null() {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        if pointer_attribute(d, data, attribute, p)? {
            Ok(())
        } else {
            Err(Status::ERROR_INVALID_VALUE)
        }
    }

    fn cuPointerGetAttributes(n: c_uint, attrs: *const c_uint, data: *mut *mut c_void, p: CUdeviceptr) proc(cuPointerGetAttributes 7000) {
        let d = driver()?;
        if attrs.is_null() || data.is_null() {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        for i in 0..n as usize {
            let a = get(attrs.add(i))?;
            let slot = get(data.add(i))?;
            if slot.is_null() {
                continue;
            }
            if !pointer_attribute(d, slot, a, p)? {
                // Unknown pointers and attributes that do not apply read as zero.
                match a {
                    attr::CONTEXT | attr::HOST_POINTER | attr::MEMPOOL_HANDLE => {
                        put(slot.cast::<usize>(), 0)?
                    }
                    attr::DEVICE_POINTER
                    | attr::BUFFER_ID
                    | attr::RANGE_START_ADDR
                    | attr::ALLOWED_HANDLE_TYPES
                    | attr::MAPPING_BASE_ADDR
                    | attr::MEMORY_BLOCK_ID => put(slot.cast::<u64>(), 0)?,
                    attr::RANGE_SIZE | attr::MAPPING_SIZE => put(slot.cast::<usize>(), 0)?,
                    attr::DEVICE_ORDINAL => put(slot.cast::<c_int>(), -2)?,
                    attr::LOCALITY_DOMAIN_ORDINAL => put(slot.cast::<c_int>(), -1)?,
                    _ => put(slot.cast::<c_uint>(), 0)?,
                }
            }
        }
        Ok(())
    }

    fn cuPointerSetAttribute(_value: *const c_void, _attribute: c_uint, _p: CUdeviceptr) proc(cuPointerSetAttribute 6000) {
        Ok(())
    }
}
