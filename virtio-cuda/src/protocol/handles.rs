//! Client-side handle allocation.
//!
//! The executor grants each session a range of handle ids in [`super::HelloReply`]. The client
//! names new contexts, streams, events, modules and functions itself from that range, so creating
//! them needs no round trip (the create request is fire-and-forget). Ids 0–2 are reserved for
//! "none" and the special streams `CU_STREAM_LEGACY` (1) and `CU_STREAM_PER_THREAD` (2); the
//! executor never grants them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Lowest id an executor may grant.
pub const FIRST_GRANTABLE_HANDLE: u64 = 0x1000;

/// Hands out ids from a granted range; thread-safe and lock-free.
#[derive(Debug)]
pub struct HandleAllocator {
    next: AtomicU64,
    end: u64,
}

impl HandleAllocator {
    /// An allocator over `[base, base + count)`.
    pub fn new(base: u64, count: u64) -> Self {
        Self {
            next: AtomicU64::new(base),
            end: base.saturating_add(count),
        }
    }

    /// The next unused id, or `None` once the range is exhausted.
    pub fn alloc(&self) -> Option<u64> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        (id < self.end).then_some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_within_the_range_then_stops() {
        let a = HandleAllocator::new(FIRST_GRANTABLE_HANDLE, 2);
        assert_eq!(a.alloc(), Some(0x1000));
        assert_eq!(a.alloc(), Some(0x1001));
        assert_eq!(a.alloc(), None);
        assert_eq!(a.alloc(), None);
    }
}
