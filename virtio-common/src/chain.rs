//! One descriptor chain, validated: its readable guest regions, then its writable ones, every
//! descriptor checked against guest memory with the access it grants, and byte ranges read and
//! written across them as if each side were one contiguous buffer.
//!
//! The virtio-cuda device (request frame, response buffer, data windows) and the virtio-gpu
//! device (command bytes, response buffer) build their requests on [`Layout`]; what a chain means
//! stays in each device.

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

/// Why a chain, or an access to it, was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("descriptor [{addr:#x}, +{len}) is outside guest memory")]
    OutOfGuestMemory { addr: u64, len: u32 },
    #[error("a readable descriptor follows a writable one")]
    WrongDirection,
    #[error("chain is too long ({0} bytes)")]
    TooLong(u64),
    #[error("chain ends inside the envelope or frame")]
    Short,
    #[error("guest memory access failed")]
    Memory,
}

/// Guest regions seen as one contiguous byte range.
#[derive(Debug, Default, Clone)]
pub struct Regions(Vec<(GuestAddress, u32)>);

impl Regions {
    /// Total bytes.
    pub fn len(&self) -> u64 {
        self.0.iter().map(|(_, l)| u64::from(*l)).sum()
    }

    /// No bytes at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The regions, in chain order.
    pub fn regions(&self) -> &[(GuestAddress, u32)] {
        &self.0
    }

    /// Removes and returns the first region.
    pub fn take_first(&mut self) -> Option<(GuestAddress, u32)> {
        (!self.0.is_empty()).then(|| self.0.remove(0))
    }

    /// Calls `f(addr, range_in_buf)` for the guest pieces of `[offset, offset + n)`; the whole
    /// range must lie inside the regions.
    pub fn pieces(
        &self,
        offset: u64,
        n: usize,
        mut f: impl FnMut(GuestAddress, std::ops::Range<usize>) -> Result<(), ChainError>,
    ) -> Result<(), ChainError> {
        let end = offset.checked_add(n as u64).ok_or(ChainError::Short)?;
        if end > self.len() {
            return Err(ChainError::Short);
        }
        let mut pos = 0u64; // start of the current region in the concatenation
        let mut done = 0usize;
        for (addr, len) in &self.0 {
            let (rs, re) = (pos, pos + u64::from(*len));
            pos = re;
            let (s, e) = (offset.max(rs), end.min(re));
            if s >= e {
                continue;
            }
            let a = addr.checked_add(s - rs).ok_or(ChainError::Memory)?;
            let k = (e - s) as usize;
            f(a, done..done + k)?;
            done += k;
        }
        Ok(())
    }

    /// Fills `buf` from `[offset, offset + buf.len())`.
    pub fn read<M: GuestMemory>(
        &self,
        mem: &M,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), ChainError> {
        self.pieces(offset, buf.len(), |a, r| {
            mem.read_slice(&mut buf[r], a)
                .map_err(|_| ChainError::Memory)
        })
    }

    /// Writes `bytes` at `offset`.
    pub fn write<M: GuestMemory>(
        &self,
        mem: &M,
        offset: u64,
        bytes: &[u8],
    ) -> Result<(), ChainError> {
        self.pieces(offset, bytes.len(), |a, r| {
            mem.write_slice(&bytes[r], a)
                .map_err(|_| ChainError::Memory)
        })
    }
}

/// A chain split into its readable regions and the writable ones after them.
#[derive(Debug, Clone)]
pub struct Layout {
    pub readable: Regions,
    pub writable: Regions,
}

impl Layout {
    /// Splits and checks `descs`: each non-empty descriptor must lie in guest memory with the
    /// access it grants, no readable descriptor may follow a writable one, and neither side may
    /// exceed `max_len` bytes. Empty descriptors are skipped.
    pub fn new<M: GuestMemory>(
        mem: &M,
        descs: &[Descriptor],
        max_len: u64,
    ) -> Result<Self, ChainError> {
        let mut l = Layout {
            readable: Regions::default(),
            writable: Regions::default(),
        };
        for d in descs {
            let (addr, len) = (GuestAddress(d.addr().0), d.len());
            if len == 0 {
                continue;
            }
            let perm = if d.is_write_only() {
                Permissions::Write
            } else {
                Permissions::Read
            };
            if !mem.check_range(addr, len as usize, perm) {
                return Err(ChainError::OutOfGuestMemory { addr: addr.0, len });
            }
            if d.is_write_only() {
                l.writable.0.push((addr, len));
            } else if !l.writable.is_empty() {
                return Err(ChainError::WrongDirection);
            } else {
                l.readable.0.push((addr, len));
            }
        }
        for total in [l.readable.len(), l.writable.len()] {
            if total > max_len {
                return Err(ChainError::TooLong(total));
            }
        }
        Ok(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::split::Descriptor;
    use vm_memory::GuestMemoryMmap;

    const WRITE: u16 = 2; // VRING_DESC_F_WRITE

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    fn d(addr: u64, len: u32, flags: u16) -> Descriptor {
        Descriptor::new(addr, len, flags, 0)
    }

    #[test]
    fn splits_and_reads_across_regions() {
        let m = mem();
        m.write_slice(b"abc", GuestAddress(0x100)).unwrap();
        m.write_slice(b"defg", GuestAddress(0x800)).unwrap();
        let descs = [
            d(0x100, 3, 0),
            d(0x200, 0, 0),
            d(0x800, 4, 0),
            d(0x1000, 8, WRITE),
            d(0x2000, 8, WRITE),
        ];
        let l = Layout::new(&m, &descs, 1 << 20).unwrap();
        assert_eq!((l.readable.len(), l.writable.len()), (7, 16));
        let mut buf = [0u8; 5];
        l.readable.read(&m, 1, &mut buf).unwrap();
        assert_eq!(&buf, b"bcdef");
        l.writable.write(&m, 6, b"wxyz").unwrap();
        let mut out = [0u8; 2];
        m.read_slice(&mut out, GuestAddress(0x1006)).unwrap();
        assert_eq!(&out, b"wx");
        m.read_slice(&mut out, GuestAddress(0x2000)).unwrap();
        assert_eq!(&out, b"yz");
        assert_eq!(l.readable.read(&m, 5, &mut buf), Err(ChainError::Short));
        assert_eq!(
            l.readable.read(&m, u64::MAX, &mut buf),
            Err(ChainError::Short)
        );
    }

    #[test]
    fn rejects_bad_chains() {
        let m = mem();
        let out = Layout::new(&m, &[d(0xfff0, 0x20, 0)], 1 << 20).unwrap_err();
        assert_eq!(
            out,
            ChainError::OutOfGuestMemory {
                addr: 0xfff0,
                len: 0x20
            }
        );
        let order = Layout::new(&m, &[d(0, 8, WRITE), d(8, 8, 0)], 1 << 20).unwrap_err();
        assert_eq!(order, ChainError::WrongDirection);
        let long = Layout::new(&m, &[d(0, 0x100, 0), d(0x100, 0x100, 0)], 0x1ff).unwrap_err();
        assert_eq!(long, ChainError::TooLong(0x200));
    }
}
