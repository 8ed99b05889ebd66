//! Device global memory: [`Arena`], a virtual address range of bounds-checked allocations.
//!
//! # Memory model
//!
//! Blocks of a launch run on several host threads and CUDA kernels legitimately race on global memory
//! (benign races, flags, atomics). Plain Rust memory touched from several threads without
//! synchronisation is undefined behaviour, so every allocation's backing store is a `Box<[AtomicU64]>`
//! and all device accesses go through `AtomicU8/16/32/64` views of it:
//!
//! * ordinary naturally aligned loads and stores are `Relaxed` atomic loads/stores (plain `mov`s on
//!   x86-64 and aarch64, so they cost nothing over non-atomic code);
//! * `atom`/`red` are real atomic read-modify-writes (`fetch_add`, `compare_exchange`, …);
//! * `membar`/`fence` map to `std::sync::atomic::fence(SeqCst)`.
//!
//! PTX itself only promises relaxed semantics for non-atomic accesses, so `Relaxed` is faithful. The one
//! liberty taken is mixed-size access (a kernel may store a `u8` and load the enclosing `u32`): the
//! hardware handles it like the GPU does; Rust's model leaves racing mixed-size atomics unspecified but
//! never lets them corrupt the host, because no non-atomic reference to device memory ever exists.
//!
//! Host copies (`read`/`write`/`fill`/`copy`) use the same atomic views (8-byte words where aligned).
//! A launch takes a [`Snapshot`] of the allocation table (each allocation's store is reference
//! counted), so a concurrent `free` can never leave a kernel with a dangling pointer: at worst the
//! kernel writes into a store that is about to be dropped.
//!
//! # Address windows
//!
//! Generic addresses that fall into these windows (above every arena address: [`Arena`] clamps its range
//! below [`WINDOW_BASE`]) address the per-block shared memory, the per-thread local
//! memory and the kernel parameters; everything else is global memory (the arena). Space-specific
//! addresses (`ld.shared [%r1]`) are offsets from 0 in their space; `cvta` adds/removes the window base.
//!
//! | window                | base                    | size   |
//! |-----------------------|-------------------------|--------|
//! | shared                | `0xFF00_0000_0000_0000` | 4 GiB  |
//! | local                 | `0xFF00_0001_0000_0000` | 4 GiB  |
//! | kernel parameters     | `0xFF00_0002_0000_0000` | 4 GiB  |

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

pub use crate::error::MemError;

/// First address of the generic windows; the arena always lies below.
pub const WINDOW_BASE: u64 = 0xFF00_0000_0000_0000;
/// Generic address of shared-memory offset 0.
pub const SHARED_WINDOW: u64 = WINDOW_BASE;
/// Generic address of local-memory offset 0 (of the executing thread).
pub const LOCAL_WINDOW: u64 = WINDOW_BASE + (1 << 32);
/// Generic address of kernel-parameter offset 0.
pub const PARAM_WINDOW: u64 = WINDOW_BASE + (2 << 32);
/// Size of each window.
pub(crate) const WINDOW_SIZE: u64 = 1 << 32;
/// Per-thread local memory limit (all frames together), in bytes.
pub const LOCAL_LIMIT: u64 = 256 * 1024;

/// Minimum alignment (and spacing granule) of allocations, like `cudaMalloc`.
pub const MIN_ALIGN: u64 = 256;

/// The backing store of one allocation: 8-byte words accessed only through atomics.
pub(crate) struct Store {
    words: Box<[AtomicU64]>,
}

macro_rules! atomic_view {
    ($name:ident, $ty:ty, $n:expr) => {
        /// An atomic view of `$n` bytes at `off`, or `None` if out of range or misaligned.
        #[inline]
        #[allow(clippy::bad_bit_mask)]
        pub(crate) fn $name(&self, off: u64) -> Option<&$ty> {
            if off & ($n - 1) != 0 || off.checked_add($n)? > self.capacity() {
                return None;
            }
            let p = self
                .words
                .as_ptr()
                .cast::<u8>()
                .wrapping_add(off as usize)
                .cast_mut();
            // SAFETY: `p` is inside `self.words` (checked above), aligned for the view (words are
            // 8-aligned and `off` is a multiple of the view size), and lives as long as `&self`. All
            // accesses to the store are atomic (there is no `&mut` or non-atomic reference to it), so
            // creating an atomic view of these bytes cannot alias a non-atomic access.
            Some(unsafe { <$ty>::from_ptr(p.cast()) })
        }
    };
}

impl Store {
    fn new(size: u64) -> Result<Store, MemError> {
        let words = usize::try_from(size.div_ceil(8))
            .map_err(|_| MemError::OutOfMemory { requested: size })?;
        // Zeroed allocation: large stores come straight from the OS as untouched zero pages, so
        // an allocation costs host memory only where a kernel or copy actually touches it.
        let oom = MemError::OutOfMemory { requested: size };
        if words == 0 {
            return Ok(Store {
                words: Box::new([]),
            });
        }
        let layout = std::alloc::Layout::array::<AtomicU64>(words).map_err(|_| oom.clone())?;
        // SAFETY: `layout` has a non-zero size (words > 0).
        let p = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<AtomicU64>();
        if p.is_null() {
            return Err(oom);
        }
        // SAFETY: `p` is a fresh, zeroed allocation of `words` AtomicU64s made with the global
        // allocator and this exact layout (as `Box<[AtomicU64]>` expects); all-zero bytes are a
        // valid `AtomicU64`.
        let words = unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, words)) };
        Ok(Store { words })
    }

    #[inline]
    pub(crate) fn capacity(&self) -> u64 {
        self.words.len() as u64 * 8
    }

    atomic_view!(a8, AtomicU8, 1);
    atomic_view!(a16, AtomicU16, 2);
    atomic_view!(a32, AtomicU32, 4);
    atomic_view!(a64, AtomicU64, 8);

    /// The `n` consecutive 8-byte words at byte offset `off`, or `None` if out of range or
    /// misaligned (for whole-warp coalesced accesses).
    #[inline]
    pub(crate) fn words64(&self, off: u64, n: usize) -> Option<&[AtomicU64]> {
        if off & 7 != 0 {
            return None;
        }
        let i = usize::try_from(off / 8).ok()?;
        self.words.get(i..i.checked_add(n)?)
    }

    /// The `n` consecutive 4-byte words at byte offset `off`, or `None` if out of range or
    /// misaligned (for whole-warp coalesced accesses).
    #[inline]
    pub(crate) fn words32(&self, off: u64, n: usize) -> Option<&[AtomicU32]> {
        let end = off.checked_add(4 * n as u64)?;
        if off & 3 != 0 || end > self.capacity() {
            return None;
        }
        let p = self
            .words
            .as_ptr()
            .cast::<AtomicU32>()
            .wrapping_add((off / 4) as usize);
        // SAFETY: `[off, off + 4n)` lies inside `self.words` (checked above) and `p` is 4-aligned
        // (words are 8-aligned, `off` a multiple of 4); `AtomicU32` has the size and alignment of
        // `u32`, and every access to the store is atomic (no `&mut` or non-atomic reference to it
        // exists), so viewing these bytes as `AtomicU32`s for the lifetime of `&self` is sound, as
        // for the single-word views above.
        Some(unsafe { std::slice::from_raw_parts(p, n) })
    }

    /// Loads `size` (1, 2, 4, 8) bytes at `off`, little-endian, zero-extended.
    #[inline]
    pub(crate) fn load(&self, off: u64, size: u32) -> Option<u64> {
        Some(match size {
            1 => self.a8(off)?.load(Ordering::Relaxed) as u64,
            2 => self.a16(off)?.load(Ordering::Relaxed) as u64,
            4 => self.a32(off)?.load(Ordering::Relaxed) as u64,
            8 => self.a64(off)?.load(Ordering::Relaxed),
            _ => return None,
        })
    }

    /// Stores the low `size` (1, 2, 4, 8) bytes of `v` at `off`.
    #[inline]
    pub(crate) fn store(&self, off: u64, size: u32, v: u64) -> Option<()> {
        match size {
            1 => self.a8(off)?.store(v as u8, Ordering::Relaxed),
            2 => self.a16(off)?.store(v as u16, Ordering::Relaxed),
            4 => self.a32(off)?.store(v as u32, Ordering::Relaxed),
            8 => self.a64(off)?.store(v, Ordering::Relaxed),
            _ => return None,
        }
        Some(())
    }

    /// Copies bytes out; the caller has checked that `[off, off + out.len())` is in range.
    /// Whole words go through one slice of the store (no per-word bounds checks), the unaligned
    /// head and tail byte by byte.
    fn read_bytes(&self, off: u64, out: &mut [u8]) {
        let (head, words, tail) = self.split(off, out.len());
        for (i, b) in out[..head].iter_mut().enumerate() {
            *b = self
                .a8(off + i as u64)
                .map_or(0, |a| a.load(Ordering::Relaxed));
        }
        let body = &mut out[head..head + words.len() * 8];
        for (chunk, w) in body.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
        let t0 = head + words.len() * 8;
        for (i, b) in out[t0..t0 + tail].iter_mut().enumerate() {
            *b = self
                .a8(off + (t0 + i) as u64)
                .map_or(0, |a| a.load(Ordering::Relaxed));
        }
    }

    /// Copies bytes in; the caller has checked that `[off, off + data.len())` is in range.
    fn write_bytes(&self, off: u64, data: &[u8]) {
        let (head, words, tail) = self.split(off, data.len());
        for (i, b) in data[..head].iter().enumerate() {
            if let Some(a) = self.a8(off + i as u64) {
                a.store(*b, Ordering::Relaxed);
            }
        }
        let body = &data[head..head + words.len() * 8];
        for (chunk, w) in body.chunks_exact(8).zip(words) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            w.store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
        let t0 = head + words.len() * 8;
        for (i, b) in data[t0..t0 + tail].iter().enumerate() {
            if let Some(a) = self.a8(off + (t0 + i) as u64) {
                a.store(*b, Ordering::Relaxed);
            }
        }
    }

    /// Splits `[off, off + len)` into an unaligned head length, the whole words in between, and
    /// a tail length (all clamped to the store).
    fn split(&self, off: u64, len: usize) -> (usize, &[AtomicU64], usize) {
        let end = off.saturating_add(len as u64).min(self.capacity());
        let first_word = off.div_ceil(8);
        let last_word = end / 8;
        if first_word >= last_word {
            return (len, &[], 0);
        }
        let head = (first_word * 8 - off) as usize;
        let words = self
            .words
            .get(first_word as usize..last_word as usize)
            .unwrap_or(&[]);
        let tail = len - head - words.len() * 8;
        (head, words, tail)
    }
}

/// One live allocation.
#[derive(Clone)]
pub(crate) struct Allocation {
    pub(crate) base: u64,
    pub(crate) size: u64,
    pub(crate) store: Arc<Store>,
}

/// Device global memory of one session: a virtual address range `[base, base+span)` with
/// bounds-checked allocations. `Send + Sync`; all methods take `&self`.
pub struct Arena {
    base: u64,
    span: u64,
    allocs: RwLock<BTreeMap<u64, Allocation>>,
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena")
            .field("base", &self.base)
            .field("span", &self.span)
            .finish()
    }
}

impl Arena {
    /// An empty arena over `[base, base+span)`. The range is clamped so that it ends below the
    /// interpreter's generic windows ([`WINDOW_BASE`]) and never contains address 0.
    pub fn new(base: u64, span: u64) -> Arena {
        let base = base.max(MIN_ALIGN);
        let end = base.saturating_add(span).min(WINDOW_BASE);
        Arena {
            base,
            span: end.saturating_sub(base),
            allocs: RwLock::new(BTreeMap::new()),
        }
    }

    fn read_map(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, Allocation>> {
        self.allocs.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Allocates `size` bytes aligned to `max(align, 256)`; returns the device address.
    pub fn alloc(&self, size: u64, align: u64) -> Result<u64, MemError> {
        if size == 0 {
            return Err(MemError::ZeroSize);
        }
        if align != 0 && !align.is_power_of_two() || align > 1 << 30 {
            return Err(MemError::BadAlign(align));
        }
        let align = align.max(MIN_ALIGN);
        let oom = MemError::OutOfMemory { requested: size };
        let reserve = size.checked_add(MIN_ALIGN - 1).ok_or(oom.clone())? & !(MIN_ALIGN - 1);
        let end = self.base + self.span;
        let mut map = self.allocs.write().unwrap_or_else(|e| e.into_inner());
        let mut cursor = self.base;
        let mut found = None;
        for a in map.values() {
            let start = cursor.checked_add(align - 1).ok_or(oom.clone())? & !(align - 1);
            if start.checked_add(reserve).is_some_and(|e| e <= a.base) {
                found = Some(start);
                break;
            }
            cursor = cursor.max(a.base + a.size.div_ceil(MIN_ALIGN) * MIN_ALIGN);
        }
        let addr = match found {
            Some(a) => a,
            None => {
                let start = cursor.checked_add(align - 1).ok_or(oom.clone())? & !(align - 1);
                if start.checked_add(reserve).is_none_or(|e| e > end) {
                    return Err(oom);
                }
                start
            }
        };
        let store = Arc::new(Store::new(size)?);
        map.insert(
            addr,
            Allocation {
                base: addr,
                size,
                store,
            },
        );
        tracing::trace!(addr, size, "arena alloc");
        Ok(addr)
    }

    /// Frees the allocation whose base is `addr`.
    pub fn free(&self, addr: u64) -> Result<(), MemError> {
        let mut map = self.allocs.write().unwrap_or_else(|e| e.into_inner());
        map.remove(&addr)
            .map(|_| ())
            .ok_or(MemError::NotAllocationBase(addr))
    }

    fn find(&self, addr: u64, len: u64) -> Result<(Arc<Store>, u64), MemError> {
        let map = self.read_map();
        let oob = MemError::OutOfBounds { addr, len };
        let (_, a) = map.range(..=addr).next_back().ok_or(oob.clone())?;
        let off = addr - a.base;
        if off.checked_add(len).is_none_or(|e| e > a.size) {
            return Err(oob);
        }
        Ok((a.store.clone(), off))
    }

    /// Copies device memory at `addr` into `out`; the range must lie inside one live allocation.
    pub fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), MemError> {
        let (s, off) = self.find(addr, out.len() as u64)?;
        s.read_bytes(off, out);
        Ok(())
    }

    /// Copies `data` to device memory at `addr`; the range must lie inside one live allocation.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        let (s, off) = self.find(addr, data.len() as u64)?;
        s.write_bytes(off, data);
        Ok(())
    }

    /// Runs `f` on `[addr, addr + len)` (inside one live allocation) as plain bytes, for bulk
    /// host copies at memcpy speed. Only possible while no launch holds the allocation (a
    /// launch's snapshot shares its store): then `Ok(None)` is returned without calling `f`, and
    /// the caller falls back to [`Arena::read`]/[`Arena::write`].
    pub fn with_bytes_mut<R>(
        &self,
        addr: u64,
        len: u64,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<Option<R>, MemError> {
        let mut map = self.allocs.write().unwrap_or_else(|e| e.into_inner());
        let oob = MemError::OutOfBounds { addr, len };
        let (_, a) = map.range_mut(..=addr).next_back().ok_or(oob.clone())?;
        let off = addr - a.base;
        if off.checked_add(len).is_none_or(|e| e > a.size) {
            return Err(oob);
        }
        let Some(store) = Arc::get_mut(&mut a.store) else {
            return Ok(None);
        };
        let words: &mut [AtomicU64] = &mut store.words;
        // SAFETY: `words` is borrowed exclusively: `Arc::get_mut` proved that no snapshot or
        // in-flight copy shares the store, and the table's write lock keeps new ones from
        // appearing while `f` runs. `AtomicU64` has the size and alignment of `u64`, and any
        // byte pattern is a valid `u64`, so the words may be viewed as their bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8)
        };
        let (off, len) = (off as usize, len as usize);
        Ok(Some(f(&mut bytes[off..off + len])))
    }

    /// Writes `count` copies of `pattern` (1, 2 or 4 bytes) starting at `addr` (`cuMemsetD8/16/32`).
    pub fn fill(&self, addr: u64, pattern: &[u8], count: u64) -> Result<(), MemError> {
        if !matches!(pattern.len(), 1 | 2 | 4) {
            return Err(MemError::BadPattern(pattern.len()));
        }
        let len = count
            .checked_mul(pattern.len() as u64)
            .ok_or(MemError::OutOfBounds {
                addr,
                len: u64::MAX,
            })?;
        let (s, off) = self.find(addr, len)?;
        let mut chunk = Vec::with_capacity(4096);
        while chunk.len() < 4096 {
            chunk.extend_from_slice(pattern);
        }
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(chunk.len() as u64) as usize;
            s.write_bytes(off + done, &chunk[..n]);
            done += n as u64;
        }
        Ok(())
    }

    /// Copies `len` bytes from `src` to `dst` (both inside live allocations; overlap allowed).
    pub fn copy(&self, dst: u64, src: u64, len: u64) -> Result<(), MemError> {
        let (ss, so) = self.find(src, len)?;
        let (ds, dof) = self.find(dst, len)?;
        const CHUNK: u64 = 1 << 20;
        let mut buf = vec![0u8; len.min(CHUNK) as usize];
        let backwards = Arc::ptr_eq(&ss, &ds) && dof > so;
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(CHUNK);
            let at = if backwards { len - done - n } else { done };
            let b = &mut buf[..n as usize];
            ss.read_bytes(so + at, b);
            ds.write_bytes(dof + at, b);
            done += n;
        }
        Ok(())
    }

    /// The `(base, size)` of the live allocation containing `addr`.
    pub fn allocation_containing(&self, addr: u64) -> Option<(u64, u64)> {
        let map = self.read_map();
        let (_, a) = map.range(..=addr).next_back()?;
        (addr - a.base < a.size).then_some((a.base, a.size))
    }

    /// Sum of the sizes of live allocations.
    pub fn used_bytes(&self) -> u64 {
        self.read_map().values().map(|a| a.size).sum()
    }

    /// The allocation table as it is now, for one launch.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            allocs: self.read_map().values().cloned().collect(),
        }
    }
}

/// An immutable copy of the allocation table taken at launch.
pub(crate) struct Snapshot {
    allocs: Vec<Allocation>,
}

impl Snapshot {
    /// All allocations, sorted by base.
    #[inline(always)]
    pub(crate) fn allocs(&self) -> &[Allocation] {
        &self.allocs
    }

    /// Index of the allocation containing `[addr, addr+len)`, with `addr`'s offset in it.
    #[inline]
    pub(crate) fn lookup(&self, addr: u64, len: u64) -> Option<(usize, u64)> {
        let i = self
            .allocs
            .partition_point(|a| a.base <= addr)
            .checked_sub(1)?;
        let a = &self.allocs[i];
        let off = addr - a.base;
        (off.checked_add(len)? <= a.size).then_some((i, off))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_byte_access_only_while_no_launch_holds_the_allocation() {
        let a = Arena::new(0x1000_0000, 1 << 24);
        let p = a.alloc(1000, 0).unwrap();
        let r = a.with_bytes_mut(p + 3, 5, |b| {
            b.copy_from_slice(b"hello");
            b.len()
        });
        assert_eq!(r.unwrap(), Some(5));
        let mut out = [0u8; 5];
        a.read(p + 3, &mut out).unwrap();
        assert_eq!(&out, b"hello");
        // Bounds are those of the allocation, not of its word-rounded store.
        assert!(a.with_bytes_mut(p + 996, 5, |_| ()).is_err());
        assert!(a.with_bytes_mut(p - 1, 1, |_| ()).is_err());
        // A launch's snapshot shares the store: no plain access until it is gone.
        let snap = a.snapshot();
        assert_eq!(a.with_bytes_mut(p, 1, |_| ()).unwrap(), None);
        drop(snap);
        assert_eq!(a.with_bytes_mut(p, 1, |_| ()).unwrap(), Some(()));
    }

    #[test]
    fn alloc_read_write_free() {
        let a = Arena::new(0x1000_0000, 1 << 24);
        assert_eq!(a.alloc(0, 1), Err(MemError::ZeroSize));
        let p = a.alloc(100, 4).unwrap();
        assert_eq!(p % 256, 0);
        let q = a.alloc(10, 4).unwrap();
        assert!(q >= p + 256);
        a.write(p + 3, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
            .unwrap();
        let mut out = [0u8; 11];
        a.read(p + 3, &mut out).unwrap();
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        assert!(a.read(p + 95, &mut [0u8; 6]).is_err());
        assert!(a.read(p + 100, &mut [0u8; 1]).is_err());
        assert_eq!(a.allocation_containing(p + 99), Some((p, 100)));
        assert_eq!(a.allocation_containing(p + 100), None);
        assert_eq!(a.used_bytes(), 110);
        assert!(a.free(p + 1).is_err());
        a.free(p).unwrap();
        assert!(a.read(p, &mut [0u8; 1]).is_err());
        let r = a.alloc(50, 4).unwrap();
        assert_eq!(r, p, "first fit reuses the freed range");
    }

    #[test]
    fn fill_and_copy() {
        let a = Arena::new(0x1000_0000, 1 << 24);
        let p = a.alloc(64, 8).unwrap();
        a.fill(p, &[0xab, 0xcd], 8).unwrap();
        let mut out = [0u8; 18];
        a.read(p, &mut out).unwrap();
        assert_eq!(&out[..4], &[0xab, 0xcd, 0xab, 0xcd]);
        assert_eq!(&out[16..], &[0, 0]);
        assert!(a.fill(p, &[1, 2, 3], 1).is_err());
        a.write(p, &(0u8..64).collect::<Vec<_>>()).unwrap();
        a.copy(p + 1, p, 32).unwrap();
        let mut out = [0u8; 34];
        a.read(p, &mut out).unwrap();
        assert_eq!(out[0], 0);
        assert_eq!(&out[1..33], &(0u8..32).collect::<Vec<_>>()[..]);
        assert_eq!(out[33], 33);
    }

    #[test]
    fn exhaustion_and_bad_args() {
        let a = Arena::new(0x1000, 4096);
        assert!(a.alloc(1 << 40, 1).is_err());
        assert!(a.alloc(8, 3).is_err());
        assert!(a.alloc(u64::MAX, 1).is_err());
        let p = a.alloc(4000, 1).unwrap();
        assert!(a.alloc(200, 1).is_err());
        a.free(p).unwrap();
    }

    #[test]
    fn bulk_copies_at_every_alignment_match_a_shadow_buffer() {
        let a = Arena::new(0x10_0000, 1 << 20);
        let base = a.alloc(256, 8).unwrap();
        let mut shadow = vec![0u8; 256];
        let mut seed = 7u32;
        for off in 0..24usize {
            for len in [0usize, 1, 3, 7, 8, 9, 15, 16, 17, 40, 100] {
                let data: Vec<u8> = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        (seed >> 16) as u8
                    })
                    .collect();
                a.write(base + off as u64, &data).unwrap();
                shadow[off..off + len].copy_from_slice(&data);
                let mut back = vec![0u8; 256];
                a.read(base, &mut back).unwrap();
                assert_eq!(back, shadow, "after writing {len} bytes at offset {off}");
                let mut part = vec![0u8; len];
                a.read(base + off as u64, &mut part).unwrap();
                assert_eq!(part, data);
            }
        }
    }
}
