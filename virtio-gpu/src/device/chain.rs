//! One descriptor chain of the control or cursor queue, validated ([`virtio_common::chain`]):
//! the command bytes (the readable descriptors, copied out of guest memory so the guest cannot
//! change them while they are handled) and the response buffer (the writable descriptors).

use virtio_common::chain::Layout;
use virtio_queue::desc::split::Descriptor;
use vm_memory::GuestMemory;

pub use virtio_common::chain::ChainError;

/// Largest command the device reads: ATTACH_BACKING with the most entries it accepts.
pub const MAX_COMMAND_LEN: usize = 32 + crate::protocol::MAX_BACKING_ENTRIES as usize * 16;

/// A validated chain.
pub struct GpuChain {
    /// The readable bytes (at most [`MAX_COMMAND_LEN`]).
    pub command: Vec<u8>,
    layout: Layout,
}

impl GpuChain {
    /// Splits and validates the descriptors of one chain and copies its command bytes. Readable
    /// bytes past [`MAX_COMMAND_LEN`] are not read; no command is that long.
    pub fn new<M: GuestMemory>(mem: &M, descs: &[Descriptor]) -> Result<Self, ChainError> {
        let layout = Layout::new(mem, descs, u64::MAX)?;
        let n = layout.readable.len().min(MAX_COMMAND_LEN as u64) as usize;
        let mut command = vec![0u8; n];
        layout.readable.read(mem, 0, &mut command)?;
        Ok(GpuChain { command, layout })
    }

    /// Total size of the writable descriptors.
    pub fn response_capacity(&self) -> u64 {
        self.layout.writable.len()
    }

    /// Writes `bytes` across the writable descriptors, as much as fits; returns the bytes
    /// written.
    pub fn write_response<M: GuestMemory>(&self, mem: &M, bytes: &[u8]) -> Result<u32, ChainError> {
        let n = (bytes.len() as u64).min(self.response_capacity()) as usize;
        self.layout.writable.write(mem, 0, &bytes[..n])?;
        Ok(n as u32)
    }
}
