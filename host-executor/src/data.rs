//! Resolving bulk data references ([`Source`]/[`Sink`]) through the transport that carried the
//! request: inline bytes are in the request itself, shared-memory windows and guest scatter
//! lists belong to the transport.

pub use virtio_cuda::protocol::DataAccess;
use virtio_cuda::protocol::{Sink, Source, Status};

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
