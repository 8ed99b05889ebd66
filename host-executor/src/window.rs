//! The data window of a session's shared-memory channel, as the executor resolves
//! `Source::Shm` / `Sink::Shm` ranges (docs/PROTOCOL.md §5).
//!
//! The client may write the window at any time, so the executor never forms a reference to its
//! bytes: it copies in and out with raw copies ([`SharedRegion`]), or hands a backend the
//! region to copy from directly (one copy between the window and device memory).

use virtio_cuda::protocol::{DataAccess, Sink, Source, Status};
use virtio_cuda::shm::SharedRegion;

/// `Shm` ranges resolved against one channel's data window.
#[derive(Debug, Clone, Copy)]
pub struct ShmData<'a> {
    window: SharedRegion<'a>,
}

impl<'a> ShmData<'a> {
    /// Ranges of `window`.
    pub fn new(window: SharedRegion<'a>) -> Self {
        Self { window }
    }

    fn range(&self, offset: u64, len: u64) -> Result<SharedRegion<'a>, Status> {
        self.window
            .sub(offset, len)
            .map_err(|_| Status::ERROR_INVALID_VALUE)
    }
}

impl DataAccess for ShmData<'_> {
    fn read_source(&self, src: &Source, out: &mut Vec<u8>) -> Result<(), Status> {
        let Source::Shm { offset, len } = src else {
            return Err(Status::ERROR_INVALID_VALUE);
        };
        let r = self.range(*offset, *len)?;
        let start = out.len();
        out.resize(start + r.len(), 0);
        r.read_at(0, &mut out[start..])
            .map_err(|_| Status::ERROR_INVALID_VALUE)
    }

    fn write_sink(&self, sink: &Sink, data: &[u8]) -> Result<(), Status> {
        let Sink::Shm { offset, len } = sink else {
            return Err(Status::ERROR_INVALID_VALUE);
        };
        if data.len() as u64 > *len {
            return Err(Status::ERROR_INVALID_VALUE);
        }
        self.range(*offset, data.len() as u64)?
            .write_at(0, data)
            .map_err(|_| Status::ERROR_INVALID_VALUE)
    }

    fn source_region(&self, src: &Source) -> Result<Option<SharedRegion<'_>>, Status> {
        match src {
            Source::Shm { offset, len } => self.range(*offset, *len).map(Some),
            _ => Ok(None),
        }
    }

    fn sink_region(&self, sink: &Sink, len: u64) -> Result<Option<SharedRegion<'_>>, Status> {
        match sink {
            Sink::Shm { offset, len: cap } if len <= *cap => self.range(*offset, len).map(Some),
            Sink::Shm { .. } => Err(Status::ERROR_INVALID_VALUE),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked_against_the_window() {
        let mut backing = vec![0u8; 4096];
        // SAFETY: `backing` outlives the region and is only accessed through it.
        let w = unsafe { SharedRegion::new(backing.as_mut_ptr(), backing.len()) };
        let d = ShmData::new(w);
        let shm = |offset, len| Source::Shm { offset, len };
        assert!(d.source_region(&shm(4000, 96)).unwrap().is_some());
        assert_eq!(
            d.source_region(&shm(4000, 97)).unwrap_err(),
            Status::ERROR_INVALID_VALUE
        );
        assert_eq!(
            d.source_region(&shm(u64::MAX, 2)).unwrap_err(),
            Status::ERROR_INVALID_VALUE
        );
        assert!(d.source_region(&Source::Inline(vec![1])).unwrap().is_none());
        let sink = Sink::Shm {
            offset: 100,
            len: 10,
        };
        assert!(d.sink_region(&sink, 11).is_err());
        d.write_sink(&sink, b"0123456789").unwrap();
        let mut out = Vec::new();
        d.read_source(&shm(100, 10), &mut out).unwrap();
        assert_eq!(out, b"0123456789");
    }
}
