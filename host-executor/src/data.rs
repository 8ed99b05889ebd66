//! Resolving bulk data references ([`Source`]/[`Sink`]) through the transport that carried the
//! request: inline bytes are in the request itself, shared-memory windows and guest scatter
//! lists belong to the transport.

use virtio_cuda::protocol::{Sink, Source, Status};

/// Access to the out-of-band data of one session's transport.
pub trait DataAccess {
    /// Appends the bytes of a non-inline `src` to `out`.
    fn read_source(&self, src: &Source, out: &mut Vec<u8>) -> Result<(), Status>;
    /// Writes `data` to a non-reply `sink`.
    fn write_sink(&self, sink: &Sink, data: &[u8]) -> Result<(), Status>;
}

/// A transport with no shared memory: only inline data and reply sinks are valid.
#[derive(Debug, Default, Clone, Copy)]
pub struct InlineOnly;

impl DataAccess for InlineOnly {
    fn read_source(&self, _src: &Source, _out: &mut Vec<u8>) -> Result<(), Status> {
        Err(Status::ERROR_INVALID_VALUE)
    }
    fn write_sink(&self, _sink: &Sink, _data: &[u8]) -> Result<(), Status> {
        Err(Status::ERROR_INVALID_VALUE)
    }
}

/// The bytes a source describes (copied out of shared memory: the client may keep writing it).
pub fn source_bytes(data: &dyn DataAccess, src: Source) -> Result<Vec<u8>, Status> {
    match src {
        Source::Inline(v) => Ok(v),
        other => {
            let mut out = Vec::new();
            data.read_source(&other, &mut out)?;
            if out.len() as u64 != other.len() {
                return Err(Status::ERROR_INVALID_VALUE);
            }
            Ok(out)
        }
    }
}
