//! Device memory of one session.
//!
//! With virtual memory management (VMM) support, the session reserves one VA window and maps
//! each allocation into it: physical memory from `cuMemCreate`, mapped with `cuMemMap` and made
//! accessible with `cuMemSetAccess`. Pointers therefore always lie in the window the session was
//! granted, and could be re-mapped at the same addresses after a restore. Allocation sizes are
//! rounded up to the driver's granularity (typically 2 MiB). Without VMM support, the session's
//! quota is allocated up front as one pool (`cuMemAlloc`) and sub-allocated, so pointers still
//! lie in one window the client can tell from host pointers.

use std::collections::{BTreeMap, HashMap};

use cudarc::driver::sys;
use virtio_cuda::protocol::Status;

use super::ffi;
use crate::backend::{BResult, VaRange};

/// How the session's window is backed.
enum Backing {
    /// A reserved VA range; each allocation maps its own physical memory.
    Vmm {
        granularity: u64,
        handles: HashMap<u64, sys::CUmemGenericAllocationHandle>,
        prop: sys::CUmemAllocationProp,
        access: sys::CUmemAccessDesc,
    },
    /// One `cuMemAlloc` of the quota, sub-allocated (GPUs/drivers without VMM support).
    Pool,
}

pub(super) struct SessionMemory {
    window: VaRange,
    backing: Backing,
    /// Free ranges of the window: start → length.
    free: BTreeMap<u64, u64>,
    /// Live allocations: start → (rounded) length.
    sizes: HashMap<u64, u64>,
    used: u64,
}

/// Alignment of pool sub-allocations (as `cudaMalloc`'s).
const POOL_ALIGN: u64 = 256;

fn round_up(v: u64, to: u64) -> Option<u64> {
    v.checked_add(to - 1).map(|x| x / to * to)
}

impl SessionMemory {
    /// Sets up the session's memory on `dev` (its context must be current).
    pub(super) fn new(dev: sys::CUdevice, quota: u64) -> BResult<Self> {
        let vmm = super::attribute(
            dev,
            sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_VIRTUAL_ADDRESS_MANAGEMENT_SUPPORTED,
        )
        .unwrap_or(0)
            != 0;
        let (window, backing) = if vmm {
            Self::reserve(dev, quota)?
        } else {
            let size =
                round_up(quota.max(POOL_ALIGN), POOL_ALIGN).ok_or(Status::ERROR_INVALID_VALUE)?;
            // SAFETY: valid out-pointer; the session's context is current.
            let base: sys::CUdeviceptr =
                ffi::out(|p| unsafe { sys::cuMemAlloc_v2(p, size as usize) })?;
            (VaRange { base, size }, Backing::Pool)
        };
        let mut free = BTreeMap::new();
        free.insert(window.base, window.size);
        Ok(Self {
            window,
            backing,
            free,
            sizes: HashMap::new(),
            used: 0,
        })
    }

    fn reserve(dev: sys::CUdevice, quota: u64) -> BResult<(VaRange, Backing)> {
        // SAFETY: all-zero is a valid bit pattern for these plain C structs.
        let mut prop: sys::CUmemAllocationProp = unsafe { std::mem::zeroed() };
        prop.type_ = sys::CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED;
        prop.location.type_ = sys::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE;
        prop.location.id = dev;
        // SAFETY: as above.
        let mut access: sys::CUmemAccessDesc = unsafe { std::mem::zeroed() };
        access.location = prop.location;
        access.flags = sys::CUmemAccess_flags::CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
        // SAFETY: valid out-pointer and property struct.
        let granularity: usize = ffi::out(|p| unsafe {
            sys::cuMemGetAllocationGranularity(
                p,
                &prop,
                sys::CUmemAllocationGranularity_flags::CU_MEM_ALLOC_GRANULARITY_MINIMUM,
            )
        })?;
        let granularity = (granularity as u64).max(4096);
        // Twice the quota leaves room for fragmentation; never less than 1 GiB.
        let size = round_up(quota.saturating_mul(2).max(1 << 30), granularity)
            .ok_or(Status::ERROR_INVALID_VALUE)?;
        // SAFETY: valid out-pointer; the driver picks the address (hint 0).
        let base: sys::CUdeviceptr = ffi::out(|p| unsafe {
            sys::cuMemAddressReserve(p, size as usize, granularity as usize, 0, 0)
        })?;
        Ok((
            VaRange { base, size },
            Backing::Vmm {
                granularity,
                handles: HashMap::new(),
                prop,
                access,
            },
        ))
    }

    pub(super) fn window(&self) -> VaRange {
        self.window
    }

    /// Bytes allocated (rounded sizes).
    pub(super) fn used(&self) -> u64 {
        self.used
    }

    pub(super) fn alloc(&mut self, size: u64) -> BResult<u64> {
        let align = match &self.backing {
            Backing::Vmm { granularity, .. } => *granularity,
            Backing::Pool => POOL_ALIGN,
        };
        let size = round_up(size.max(1), align).ok_or(Status::ERROR_OUT_OF_MEMORY)?;
        let (&start, &len) = self
            .free
            .iter()
            .find(|(_, &len)| len >= size)
            .ok_or(Status::ERROR_OUT_OF_MEMORY)?;
        if let Backing::Vmm {
            handles,
            prop,
            access,
            ..
        } = &mut self.backing
        {
            // SAFETY: valid out-pointer and property struct.
            let handle = ffi::out(|p| unsafe { sys::cuMemCreate(p, size as usize, prop, 0) })?;
            let mapped = ffi::call(|| {
                // SAFETY: [start, start+size) lies in our reservation and is unmapped.
                unsafe { sys::cuMemMap(start, size as usize, 0, handle, 0) }
            })
            .and_then(|_| {
                ffi::call(|| {
                    // SAFETY: the range was just mapped; `access` is a valid descriptor.
                    unsafe { sys::cuMemSetAccess(start, size as usize, access, 1) }
                })
            });
            if let Err(e) = mapped {
                // SAFETY: unmapping a range we may have mapped.
                let _ = ffi::call(|| unsafe { sys::cuMemUnmap(start, size as usize) });
                // SAFETY: the handle came from cuMemCreate above.
                let _ = ffi::call(|| unsafe { sys::cuMemRelease(handle) });
                return Err(e);
            }
            handles.insert(start, handle);
        }
        self.free.remove(&start);
        if len > size {
            self.free.insert(start + size, len - size);
        }
        self.sizes.insert(start, size);
        self.used += size;
        Ok(start)
    }

    pub(super) fn free(&mut self, dptr: u64) -> BResult<()> {
        let size = *self.sizes.get(&dptr).ok_or(Status::ERROR_INVALID_VALUE)?;
        if let Backing::Vmm { handles, .. } = &mut self.backing {
            let handle = handles.remove(&dptr).ok_or(Status::ERROR_INVALID_VALUE)?;
            // SAFETY: the mapping was created by `alloc` and is removed once.
            ffi::call(|| unsafe { sys::cuMemUnmap(dptr, size as usize) })?;
            // SAFETY: the handle came from cuMemCreate and is released once.
            ffi::call(|| unsafe { sys::cuMemRelease(handle) })?;
        }
        self.sizes.remove(&dptr);
        self.used -= size;
        insert_free(&mut self.free, dptr, size);
        Ok(())
    }

    /// `(base, size)` of the allocation containing `dptr`.
    pub(super) fn range_of(&self, dptr: u64) -> Option<(u64, u64)> {
        self.sizes
            .iter()
            .find(|(&b, &s)| dptr >= b && dptr - b < s)
            .map(|(&b, &s)| (b, s))
    }
}

/// Returns a range to the free list, merging it with its neighbours.
fn insert_free(free: &mut BTreeMap<u64, u64>, mut start: u64, mut len: u64) {
    if let Some((&ps, &pl)) = free.range(..start).next_back() {
        if ps + pl == start {
            free.remove(&ps);
            start = ps;
            len += pl;
        }
    }
    if let Some(&nl) = free.get(&(start + len)) {
        free.remove(&(start + len));
        len += nl;
    }
    free.insert(start, len);
}

impl Drop for SessionMemory {
    fn drop(&mut self) {
        let addrs: Vec<u64> = self.sizes.keys().copied().collect();
        for a in addrs {
            let _ = self.free(a);
        }
        let w = self.window;
        match self.backing {
            Backing::Vmm { .. } => {
                let _ = ffi::call(|| {
                    // SAFETY: the reservation is ours and everything in it is unmapped now.
                    unsafe { sys::cuMemAddressFree(w.base, w.size as usize) }
                });
            }
            Backing::Pool => {
                let _ = ffi::call(|| {
                    // SAFETY: the pool came from cuMemAlloc and is freed once.
                    unsafe { sys::cuMemFree_v2(w.base) }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ranges_merge() {
        let mut f = BTreeMap::new();
        insert_free(&mut f, 0, 10);
        insert_free(&mut f, 20, 10);
        insert_free(&mut f, 10, 10);
        assert_eq!(f.into_iter().collect::<Vec<_>>(), vec![(0, 30)]);
    }
}
