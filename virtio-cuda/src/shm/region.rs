//! [`SharedRegion`]: bytes shared with another process, touched only with raw copies.

use std::marker::PhantomData;

/// A range of memory shared with a peer that may write it at any time (the other side of a
/// memfd mapping). No Rust reference to these bytes is ever formed: they are only copied in and
/// out, so a peer that races with a copy can corrupt the copied *values*, never our memory
/// safety. The lifetime ties the region to the mapping that backs it.
#[derive(Clone, Copy)]
pub struct SharedRegion<'a> {
    ptr: *mut u8,
    len: usize,
    _mapping: PhantomData<&'a ()>,
}

// SAFETY: a region is a pointer range into a shared mapping that outlives `'a`; all accesses
// are raw copies, which are as valid from any thread as from the one that made the region.
unsafe impl Send for SharedRegion<'_> {}
// SAFETY: as above; `&SharedRegion` only allows the same raw copies.
unsafe impl Sync for SharedRegion<'_> {}

impl std::fmt::Debug for SharedRegion<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRegion")
            .field("len", &self.len)
            .finish()
    }
}

/// A copy that would leave its region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{len} bytes at offset {offset} exceed a shared region of {size} bytes")]
pub struct OutOfRegion {
    pub offset: u64,
    pub len: u64,
    pub size: u64,
}

impl<'a> SharedRegion<'a> {
    /// A region over `[ptr, ptr + len)`.
    ///
    /// # Safety
    /// The range must be mapped, readable and writable for all of `'a`, and must not be memory
    /// that Rust code holds references to (it is the peer's as much as ours).
    pub unsafe fn new(ptr: *mut u8, len: usize) -> Self {
        Self {
            ptr,
            len,
            _mapping: PhantomData,
        }
    }

    /// A region of no bytes.
    pub fn empty() -> SharedRegion<'static> {
        SharedRegion {
            ptr: std::ptr::NonNull::dangling().as_ptr(),
            len: 0,
            _mapping: PhantomData,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty region.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The sub-range `[offset, offset + len)`, or an error if it does not fit.
    pub fn sub(&self, offset: u64, len: u64) -> Result<SharedRegion<'a>, OutOfRegion> {
        let (o, n) = self.check(offset, len)?;
        // SAFETY: `[o, o + n)` lies inside this region (checked), which is valid for `'a`.
        Ok(unsafe { SharedRegion::new(self.ptr.add(o), n) })
    }

    fn check(&self, offset: u64, len: u64) -> Result<(usize, usize), OutOfRegion> {
        let err = OutOfRegion {
            offset,
            len,
            size: self.len as u64,
        };
        let end = offset.checked_add(len).ok_or(err)?;
        if end > self.len as u64 {
            return Err(err);
        }
        Ok((offset as usize, len as usize))
    }

    /// Copies `out.len()` bytes starting at `offset` into `out`.
    pub fn read_at(&self, offset: u64, out: &mut [u8]) -> Result<(), OutOfRegion> {
        let (o, n) = self.check(offset, out.len() as u64)?;
        // SAFETY: `[o, o + n)` is inside the mapping (checked) and `out` has room for `n` bytes;
        // they cannot overlap, since no reference into the mapping exists.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(o), out.as_mut_ptr(), n) };
        Ok(())
    }

    /// Copies `data` into the region at `offset`.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), OutOfRegion> {
        let (o, n) = self.check(offset, data.len() as u64)?;
        // SAFETY: as in `read_at`, in the other direction.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(o), n) };
        Ok(())
    }

    /// The first byte, for code that hands the range to a copy engine (e.g. a DMA from
    /// registered host memory). Whoever dereferences it takes over the rules of [`Self::new`].
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_stay_inside_the_region() {
        let mut backing = vec![0u8; 64];
        // SAFETY: `backing` outlives the region and is only accessed through it below.
        let r = unsafe { SharedRegion::new(backing.as_mut_ptr(), backing.len()) };
        r.write_at(60, &[1, 2, 3, 4]).unwrap();
        assert!(r.write_at(61, &[1, 2, 3, 4]).is_err());
        assert!(r.write_at(u64::MAX, &[1]).is_err());
        let sub = r.sub(56, 8).unwrap();
        let mut out = [0u8; 8];
        sub.read_at(0, &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 0, 1, 2, 3, 4]);
        assert!(sub.read_at(1, &mut out).is_err());
        assert!(r.sub(60, 5).is_err());
    }
}
