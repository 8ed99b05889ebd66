//! Device memory of one session.
//!
//! With virtual memory management (VMM) support, the session reserves one VA window and maps
//! each allocation into it: physical memory from `cuMemCreate`, mapped with `cuMemMap` and made
//! accessible with `cuMemSetAccess`. Pointers therefore always lie in the window the session was
//! granted, and could be re-mapped at the same addresses after a restore. Allocation sizes are
//! rounded up to the driver's granularity (typically 2 MiB). Without VMM support, plain
//! `cuMemAlloc` is used and the window is the whole address space.

use std::collections::{BTreeMap, HashMap};

use cudarc::driver::sys;
use virtio_cuda::protocol::Status;

use super::ffi;
use crate::backend::{BResult, VaRange};

struct Mapping {
    handle: sys::CUmemGenericAllocationHandle,
    size: u64,
}

enum Strategy {
    Vmm {
        granularity: u64,
        /// Free ranges of the window: start → length.
        free: BTreeMap<u64, u64>,
        maps: HashMap<u64, Mapping>,
        prop: sys::CUmemAllocationProp,
        access: sys::CUmemAccessDesc,
    },
    Plain {
        allocs: HashMap<u64, u64>,
    },
}

pub(super) struct SessionMemory {
    window: VaRange,
    strategy: Strategy,
    used: u64,
}

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
        if !vmm {
            return Ok(Self {
                window: VaRange {
                    base: 0,
                    size: u64::MAX,
                },
                strategy: Strategy::Plain {
                    allocs: HashMap::new(),
                },
                used: 0,
            });
        }
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
        let mut free = BTreeMap::new();
        free.insert(base, size);
        Ok(Self {
            window: VaRange { base, size },
            strategy: Strategy::Vmm {
                granularity,
                free,
                maps: HashMap::new(),
                prop,
                access,
            },
            used: 0,
        })
    }

    pub(super) fn window(&self) -> VaRange {
        self.window
    }

    /// Bytes allocated (rounded sizes).
    pub(super) fn used(&self) -> u64 {
        self.used
    }

    pub(super) fn alloc(&mut self, size: u64) -> BResult<u64> {
        match &mut self.strategy {
            Strategy::Plain { allocs } => {
                // SAFETY: valid out-pointer; the session's context is current.
                let dptr: sys::CUdeviceptr =
                    ffi::out(|p| unsafe { sys::cuMemAlloc_v2(p, size as usize) })?;
                allocs.insert(dptr, size);
                self.used += size;
                Ok(dptr)
            }
            Strategy::Vmm {
                granularity,
                free,
                maps,
                prop,
                access,
            } => {
                let size = round_up(size, *granularity).ok_or(Status::ERROR_OUT_OF_MEMORY)?;
                let (&start, &len) = free
                    .iter()
                    .find(|(_, &len)| len >= size)
                    .ok_or(Status::ERROR_OUT_OF_MEMORY)?;
                // SAFETY: valid out-pointer and property struct.
                let handle = ffi::out(|p| unsafe { sys::cuMemCreate(p, size as usize, prop, 0) })?;
                // SAFETY: [start, start+size) lies in our reservation and is unmapped.
                let mapped =
                    ffi::call(|| unsafe { sys::cuMemMap(start, size as usize, 0, handle, 0) })
                        // SAFETY: the range was just mapped; `access` is a valid descriptor.
                        .and_then(|_| {
                            ffi::call(|| unsafe {
                                sys::cuMemSetAccess(start, size as usize, access, 1)
                            })
                        });
                if let Err(e) = mapped {
                    // SAFETY: unmapping a range we may have mapped, releasing our own handle.
                    let _ = ffi::call(|| unsafe { sys::cuMemUnmap(start, size as usize) });
                    // SAFETY: the handle came from cuMemCreate above.
                    let _ = ffi::call(|| unsafe { sys::cuMemRelease(handle) });
                    return Err(e);
                }
                free.remove(&start);
                if len > size {
                    free.insert(start + size, len - size);
                }
                maps.insert(start, Mapping { handle, size });
                self.used += size;
                Ok(start)
            }
        }
    }

    pub(super) fn free(&mut self, dptr: u64) -> BResult<()> {
        match &mut self.strategy {
            Strategy::Plain { allocs } => {
                let size = allocs.remove(&dptr).ok_or(Status::ERROR_INVALID_VALUE)?;
                // SAFETY: `dptr` came from cuMemAlloc and is freed once.
                ffi::call(|| unsafe { sys::cuMemFree_v2(dptr) })?;
                self.used -= size;
                Ok(())
            }
            Strategy::Vmm { free, maps, .. } => {
                let m = maps.remove(&dptr).ok_or(Status::ERROR_INVALID_VALUE)?;
                // SAFETY: the mapping was created by `alloc` and is removed once.
                ffi::call(|| unsafe { sys::cuMemUnmap(dptr, m.size as usize) })?;
                // SAFETY: the handle came from cuMemCreate and is released once.
                ffi::call(|| unsafe { sys::cuMemRelease(m.handle) })?;
                self.used -= m.size;
                insert_free(free, dptr, m.size);
                Ok(())
            }
        }
    }

    /// `(base, size)` of the allocation containing `dptr`.
    pub(super) fn range_of(&self, dptr: u64) -> Option<(u64, u64)> {
        let found = match &self.strategy {
            Strategy::Plain { allocs } => allocs
                .iter()
                .find(|(&b, &s)| dptr >= b && dptr - b < s)
                .map(|(&b, &s)| (b, s)),
            Strategy::Vmm { maps, .. } => maps
                .iter()
                .find(|(&b, m)| dptr >= b && dptr - b < m.size)
                .map(|(&b, m)| (b, m.size)),
        };
        found
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
        let addrs: Vec<u64> = match &self.strategy {
            Strategy::Plain { allocs } => allocs.keys().copied().collect(),
            Strategy::Vmm { maps, .. } => maps.keys().copied().collect(),
        };
        for a in addrs {
            let _ = self.free(a);
        }
        if let Strategy::Vmm { .. } = self.strategy {
            let w = self.window;
            // SAFETY: the reservation is ours and everything in it is unmapped now.
            let _ = ffi::call(|| unsafe { sys::cuMemAddressFree(w.base, w.size as usize) });
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
