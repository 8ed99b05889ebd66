//! One descriptor chain, validated: its readable and writable guest regions, the request frame,
//! the response buffer and the data windows.

use std::cell::Cell;

use virtio_common::chain::{ChainError as LayoutError, Layout, Regions};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::MAX_DATA_WINDOW;
use crate::protocol::{
    DataAccess, DecodeError, Reader, RequestHeader, SgEntry, Sink, Source, Status, HEADER_LEN,
    MAX_BODY_LEN,
};

/// Why a chain was rejected: its layout ([`virtio_common::chain`]) or what it carries.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Envelope(#[from] super::envelope::BadEnvelope),
    #[error("bad frame: {0}")]
    Frame(#[from] DecodeError),
    #[error("no writable response buffer for a synchronous request")]
    NoResponseBuffer,
    #[error("internal device error")]
    Internal,
}

impl ChainError {
    const SHORT: ChainError = ChainError::Layout(LayoutError::Short);
    const MEMORY: ChainError = ChainError::Layout(LayoutError::Memory);
}

/// A validated chain: the readable regions hold the envelope, the request frame and the H2D data
/// window; the first writable descriptor is the response buffer, the others the D2H window.
pub struct ChainData<'m, M: GuestMemory> {
    mem: &'m M,
    readable: Regions,
    response: Option<(GuestAddress, u32)>,
    writable: Regions,
}

impl<'m, M: GuestMemory> ChainData<'m, M> {
    /// Splits and validates the descriptors of one chain.
    pub fn new(mem: &'m M, descs: &[Descriptor]) -> Result<Self, ChainError> {
        let max = super::envelope::LEN + (HEADER_LEN + MAX_BODY_LEN) as u64 + MAX_DATA_WINDOW;
        let Layout {
            readable,
            mut writable,
        } = Layout::new(mem, descs, max)?;
        let response = writable.take_first();
        Ok(ChainData {
            mem,
            readable,
            response,
            writable,
        })
    }

    fn read_readable(&self, offset: u64, buf: &mut [u8]) -> Result<(), ChainError> {
        Ok(self.readable.read(self.mem, offset, buf)?)
    }

    /// The first `n` readable bytes.
    pub fn read_prefix(&self, n: u64) -> Result<Vec<u8>, ChainError> {
        let mut b = vec![0u8; n as usize];
        self.read_readable(0, &mut b)?;
        Ok(b)
    }

    /// The request frame starting at `offset`: header, then `body_len` bytes (copied out of guest
    /// memory, so the guest cannot change it while it is handled).
    pub fn read_frame(&self, offset: u64) -> Result<Vec<u8>, ChainError> {
        let mut hdr = [0u8; HEADER_LEN];
        self.read_readable(offset, &mut hdr)?;
        let h = RequestHeader::get(&mut Reader::new(&hdr))?;
        let total = HEADER_LEN + h.body_len as usize;
        let mut frame = vec![0u8; total];
        self.read_readable(offset, &mut frame)?;
        Ok(frame)
    }

    /// Size of the response buffer (0 when the chain has no writable descriptor).
    pub fn response_capacity(&self) -> u64 {
        self.response.map(|(_, l)| u64::from(l)).unwrap_or(0)
    }

    /// Writes response frames into the response buffer.
    pub fn write_response(&self, bytes: &[u8]) -> Result<(), ChainError> {
        let (addr, len) = self.response.ok_or(ChainError::NoResponseBuffer)?;
        if bytes.len() as u64 > u64::from(len) {
            return Err(ChainError::SHORT);
        }
        self.mem
            .write_slice(bytes, addr)
            .map_err(|_| ChainError::MEMORY)
    }

    /// The chain's data windows, for the executor: the readable bytes from `frame_end` on, and
    /// the writable descriptors after the response buffer.
    pub fn data_access(&self, frame_end: u64) -> ChainWindows<'_, 'm, M> {
        ChainWindows {
            chain: self,
            r_start: frame_end,
            written: Cell::new(0),
        }
    }
}

/// [`DataAccess`] over one chain: `Shm` ranges are offsets into the chain's data windows,
/// `Guest` scatter lists are guest-physical ranges (checked against guest memory).
pub struct ChainWindows<'c, 'm, M: GuestMemory> {
    chain: &'c ChainData<'m, M>,
    r_start: u64,
    written: Cell<u64>,
}

impl<M: GuestMemory> ChainWindows<'_, '_, M> {
    /// Bytes written into the D2H window (for the used-ring length).
    pub fn bytes_written(&self) -> u32 {
        self.written.get().min(u64::from(u32::MAX)) as u32
    }

    fn sg_total(list: &[SgEntry]) -> Result<usize, Status> {
        let total: u64 = list.iter().map(|e| u64::from(e.len)).sum();
        if total > MAX_DATA_WINDOW * 16 {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        Ok(total as usize)
    }
}

impl<M: GuestMemory> DataAccess for ChainWindows<'_, '_, M> {
    fn read_source(&self, src: &Source, out: &mut Vec<u8>) -> Result<(), Status> {
        let c = self.chain;
        match src {
            Source::Inline(v) => out.extend_from_slice(v),
            Source::Shm { offset, len } => {
                let window = c.readable.len().saturating_sub(self.r_start);
                let end = offset
                    .checked_add(*len)
                    .ok_or(Status::ERROR_INVALID_VALUE)?;
                if end > window {
                    return Err(Status::ERROR_INVALID_VALUE);
                }
                let start = out.len();
                out.resize(start + *len as usize, 0);
                c.read_readable(self.r_start + offset, &mut out[start..])
                    .map_err(|_| Status::ERROR_INVALID_VALUE)?;
            }
            Source::Guest(list) => {
                let total = Self::sg_total(&list.0)?;
                let mut pos = out.len();
                out.resize(pos + total, 0);
                for e in &list.0 {
                    let n = e.len as usize;
                    c.mem
                        .read_slice(&mut out[pos..pos + n], GuestAddress(e.gpa))
                        .map_err(|_| Status::ERROR_INVALID_VALUE)?;
                    pos += n;
                }
            }
        }
        Ok(())
    }

    fn write_sink(&self, sink: &Sink, data: &[u8]) -> Result<(), Status> {
        let c = self.chain;
        match sink {
            Sink::Reply => Err(Status::ERROR_INVALID_VALUE),
            Sink::Shm { offset, len } => {
                if data.len() as u64 > *len {
                    return Err(Status::ERROR_INVALID_VALUE);
                }
                c.writable
                    .write(c.mem, *offset, data)
                    .map_err(|_| Status::ERROR_INVALID_VALUE)?;
                let end = offset.saturating_add(data.len() as u64);
                self.written.set(self.written.get().max(end));
                Ok(())
            }
            Sink::Guest(list) => {
                let total = Self::sg_total(&list.0)?;
                if data.len() > total {
                    return Err(Status::ERROR_INVALID_VALUE);
                }
                let mut pos = 0usize;
                for e in &list.0 {
                    if pos >= data.len() {
                        break;
                    }
                    let n = (e.len as usize).min(data.len() - pos);
                    c.mem
                        .write_slice(&data[pos..pos + n], GuestAddress(e.gpa))
                        .map_err(|_| Status::ERROR_INVALID_VALUE)?;
                    pos += n;
                }
                Ok(())
            }
        }
    }
}
