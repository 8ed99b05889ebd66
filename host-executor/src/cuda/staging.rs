//! Pinned staging buffers: copies between client memory and the GPU without pinning client
//! memory. A session owns a few pinned chunks (allocated on first use); a transfer is split into
//! chunks and pipelined — while the GPU DMAs chunk n, the host copies chunk n+1.

use cudarc::driver::sys;

use super::ffi;
use crate::backend::BResult;

/// Bytes per staging chunk.
pub(super) const CHUNK: usize = 4 << 20;
/// Chunks per session (so at most `CHUNK * DEPTH` bytes pinned per session).
pub(super) const DEPTH: usize = 4;
/// Copies up to this size go straight through the driver (it stages small copies itself).
pub(super) const DIRECT_MAX: usize = 64 << 10;

struct Chunk {
    host: *mut u8,
    done: sys::CUevent,
    busy: bool,
}

/// The pool of one session.
pub(super) struct Staging {
    chunks: Vec<Chunk>,
}

// SAFETY: the pinned buffers and events are plain driver resources owned by this pool; the
// session that owns the pool uses them from one thread at a time (with its context current).
unsafe impl Send for Staging {}

impl Staging {
    pub(super) fn new() -> Self {
        Self { chunks: Vec::new() }
    }

    fn ensure(&mut self) -> BResult<()> {
        while self.chunks.len() < DEPTH {
            // SAFETY: valid out-pointer; CHUNK bytes of pinned host memory.
            let host = ffi::out_handle(|p| unsafe { sys::cuMemHostAlloc(p, CHUNK, 0) })? as *mut u8;
            // SAFETY: valid out-pointer; timing disabled for cheap events.
            let done = ffi::out_handle(|p| unsafe {
                sys::cuEventCreate(p, sys::CUevent_flags::CU_EVENT_DISABLE_TIMING as u32)
            })?;
            self.chunks.push(Chunk {
                host,
                done,
                busy: false,
            });
        }
        Ok(())
    }

    fn wait(c: &mut Chunk) -> BResult<()> {
        if c.busy {
            // SAFETY: the event belongs to this chunk and was recorded.
            ffi::call(|| unsafe { sys::cuEventSynchronize(c.done) })?;
            c.busy = false;
        }
        Ok(())
    }

    /// Host→device: returns once `data` has been consumed (the DMA may still be running).
    pub(super) fn write(&mut self, stream: sys::CUstream, dst: u64, data: &[u8]) -> BResult<()> {
        if data.len() <= DIRECT_MAX {
            // SAFETY: `data` is valid for its length; pageable async copies are staged by the
            // driver before returning.
            return ffi::call(|| unsafe {
                sys::cuMemcpyHtoDAsync_v2(dst, data.as_ptr().cast(), data.len(), stream)
            });
        }
        self.write_with(stream, dst, data.len(), &mut |off, buf| {
            buf.copy_from_slice(&data[off..off + buf.len()]);
            Ok(())
        })
    }

    /// Host→device of `len` bytes that `fill(offset, buf)` copies into each pinned chunk (from
    /// a client's buffer or straight from its shared-memory window).
    pub(super) fn write_with(
        &mut self,
        stream: sys::CUstream,
        dst: u64,
        len: usize,
        fill: &mut dyn FnMut(usize, &mut [u8]) -> BResult<()>,
    ) -> BResult<()> {
        self.ensure()?;
        for i in 0..len.div_ceil(CHUNK) {
            let piece = CHUNK.min(len - i * CHUNK);
            let c = &mut self.chunks[i % DEPTH];
            Self::wait(c)?;
            // SAFETY: `c.host` is a CHUNK-byte pinned buffer that no DMA is using (waited
            // above) and that nothing else references; `piece` ≤ CHUNK.
            let buf = unsafe { std::slice::from_raw_parts_mut(c.host, piece) };
            fill(i * CHUNK, buf)?;
            let at = dst + (i * CHUNK) as u64;
            // SAFETY: pinned source of `piece` bytes; the event marks its reuse point.
            ffi::call(|| unsafe { sys::cuMemcpyHtoDAsync_v2(at, c.host.cast(), piece, stream) })?;
            // SAFETY: recording our own event on the session's stream.
            ffi::call(|| unsafe { sys::cuEventRecord(c.done, stream) })?;
            c.busy = true;
        }
        Ok(())
    }

    /// Device→host: returns once all of `out` is filled.
    pub(super) fn read(&mut self, stream: sys::CUstream, src: u64, out: &mut [u8]) -> BResult<()> {
        if out.len() <= DIRECT_MAX {
            // SAFETY: `out` is valid for writes of its length; synchronised below.
            ffi::call(|| unsafe {
                sys::cuMemcpyDtoHAsync_v2(out.as_mut_ptr().cast(), src, out.len(), stream)
            })?;
            // SAFETY: waiting on the session's stream.
            return ffi::call(|| unsafe { sys::cuStreamSynchronize(stream) });
        }
        self.read_with(stream, src, out.len(), &mut |off, bytes| {
            out[off..off + bytes.len()].copy_from_slice(bytes);
            Ok(())
        })
    }

    /// Device→host of `total` bytes, handed chunk by chunk to `drain(offset, bytes)` (into a
    /// client's buffer or straight into its shared-memory window).
    pub(super) fn read_with(
        &mut self,
        stream: sys::CUstream,
        src: u64,
        total: usize,
        drain: &mut dyn FnMut(usize, &[u8]) -> BResult<()>,
    ) -> BResult<()> {
        self.ensure()?;
        let n = total.div_ceil(CHUNK);
        let issue = |chunks: &mut Vec<Chunk>, i: usize, len: usize| -> BResult<()> {
            let c = &mut chunks[i % DEPTH];
            // SAFETY: pinned destination of at least `len` bytes, idle (copied out before reuse).
            ffi::call(|| unsafe {
                sys::cuMemcpyDtoHAsync_v2(c.host.cast(), src + (i * CHUNK) as u64, len, stream)
            })?;
            // SAFETY: recording our own event on the session's stream.
            ffi::call(|| unsafe { sys::cuEventRecord(c.done, stream) })?;
            c.busy = true;
            Ok(())
        };
        let len_of = |i: usize| CHUNK.min(total - i * CHUNK);
        for i in 0..n.min(DEPTH) {
            issue(&mut self.chunks, i, len_of(i))?;
        }
        for i in 0..n {
            let len = len_of(i);
            let c = &mut self.chunks[i % DEPTH];
            Self::wait(c)?;
            // SAFETY: the DMA into `c.host` completed (waited), nothing else references the
            // buffer, and `len` ≤ CHUNK.
            drain(i * CHUNK, unsafe {
                std::slice::from_raw_parts(c.host, len)
            })?;
            if i + DEPTH < n {
                issue(&mut self.chunks, i + DEPTH, len_of(i + DEPTH))?;
            }
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        for c in self.chunks.drain(..) {
            // SAFETY: our own event; waits for any DMA still using the chunk.
            let _ = ffi::call(|| unsafe { sys::cuEventSynchronize(c.done) });
            // SAFETY: our own event, destroyed once.
            let _ = ffi::call(|| unsafe { sys::cuEventDestroy_v2(c.done) });
            // SAFETY: our own pinned buffer, idle (synchronised above), freed once.
            let _ = ffi::call(|| unsafe { sys::cuMemFreeHost(c.host.cast()) });
        }
    }
}
