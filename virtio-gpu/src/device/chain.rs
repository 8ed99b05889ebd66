//! One descriptor chain of the control or cursor queue, validated: the command bytes (all
//! readable descriptors, copied out of guest memory so the guest cannot change them while they
//! are handled) and the response buffer (all writable descriptors).

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

/// Largest command the device reads: ATTACH_BACKING with the most entries it accepts.
pub const MAX_COMMAND_LEN: usize = 32 + crate::protocol::MAX_BACKING_ENTRIES as usize * 16;

/// Why a chain was rejected without a response.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("descriptor [{addr:#x}, +{len}) is outside guest memory")]
    OutOfGuestMemory { addr: u64, len: u32 },
    #[error("a readable descriptor follows a writable one")]
    WrongDirection,
    #[error("guest memory access failed")]
    Memory,
}

/// A validated chain.
pub struct GpuChain {
    /// The readable bytes (at most [`MAX_COMMAND_LEN`]).
    pub command: Vec<u8>,
    writable: Vec<(GuestAddress, u32)>,
}

impl GpuChain {
    /// Splits and validates the descriptors of one chain and copies its command bytes.
    pub fn new<M: GuestMemory>(mem: &M, descs: &[Descriptor]) -> Result<Self, ChainError> {
        let mut command = Vec::new();
        let mut writable = Vec::new();
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
                writable.push((addr, len));
                continue;
            }
            if !writable.is_empty() {
                return Err(ChainError::WrongDirection);
            }
            let room = MAX_COMMAND_LEN - command.len();
            let n = (len as usize).min(room);
            if n == 0 {
                continue;
            }
            let start = command.len();
            command.resize(start + n, 0);
            mem.read_slice(&mut command[start..], addr)
                .map_err(|_| ChainError::Memory)?;
        }
        Ok(GpuChain { command, writable })
    }

    /// Total size of the writable descriptors.
    pub fn response_capacity(&self) -> u64 {
        self.writable.iter().map(|(_, l)| u64::from(*l)).sum()
    }

    /// Writes `bytes` across the writable descriptors; returns the bytes written.
    pub fn write_response<M: GuestMemory>(&self, mem: &M, bytes: &[u8]) -> Result<u32, ChainError> {
        let mut done = 0usize;
        for (addr, len) in &self.writable {
            if done == bytes.len() {
                break;
            }
            let n = (*len as usize).min(bytes.len() - done);
            mem.write_slice(&bytes[done..done + n], *addr)
                .map_err(|_| ChainError::Memory)?;
            done += n;
            if addr.checked_add(u64::from(*len)).is_none() {
                return Err(ChainError::Memory);
            }
        }
        Ok(done as u32)
    }
}
