//! Bulk data by reference.
//!
//! Large copies never travel through the request ring. A request names where the bytes are:
//! inline (small payloads only, capped by [`MAX_INLINE`]), in the session's shared-memory window
//! (unix transport), or in guest memory as a scatter list of guest-physical ranges (virtio).
//! The executor resolves these through the transport's data-access object.

use super::codec::List;
use super::wire::{Reader, Writer};
use super::{DecodeError, Status, Wire};
use crate::shm::SharedRegion;

/// The largest payload a client may send inline in a request or ask for inline in a reply.
pub const MAX_INLINE: usize = 64 << 20;

/// The largest scatter list one request may carry.
pub const MAX_SG_ENTRIES: usize = 1 << 16;

crate::wire_struct! {
    /// One guest-physical range of a scatter list.
    pub struct SgEntry {
        pub gpa: u64,
        pub len: u32,
    }
}

/// Where the bytes of a host→device transfer come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// The bytes themselves (≤ [`MAX_INLINE`]).
    Inline(Vec<u8>),
    /// A range of the session's shared-memory data window.
    Shm { offset: u64, len: u64 },
    /// Guest-physical pages (virtio transport).
    Guest(List<SgEntry>),
}

/// Where the bytes of a device→host transfer go.
#[derive(Debug, Clone, PartialEq)]
pub enum Sink {
    /// Returned in the reply body (≤ [`MAX_INLINE`] bytes).
    Reply,
    /// A range of the session's shared-memory data window.
    Shm { offset: u64, len: u64 },
    /// Guest-physical pages (virtio transport).
    Guest(List<SgEntry>),
}

impl Source {
    /// Total byte length described.
    pub fn len(&self) -> u64 {
        match self {
            Source::Inline(v) => v.len() as u64,
            Source::Shm { len, .. } => *len,
            Source::Guest(l) => l.0.iter().map(|e| u64::from(e.len)).sum(),
        }
    }

    /// True when no bytes are described.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Wire for Source {
    const MIN_SIZE: usize = 5;
    fn put(&self, w: &mut Writer) {
        match self {
            Source::Inline(v) => {
                w.u8(0);
                w.bytes(v);
            }
            Source::Shm { offset, len } => {
                w.u8(1);
                w.u64(*offset);
                w.u64(*len);
            }
            Source::Guest(l) => {
                w.u8(2);
                l.put(w);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8()? {
            0 => {
                let b = r.bytes()?;
                if b.len() > MAX_INLINE {
                    return Err(DecodeError::TooLarge {
                        what: "inline payload",
                        len: b.len() as u64,
                        max: MAX_INLINE as u64,
                    });
                }
                Ok(Source::Inline(b.to_vec()))
            }
            1 => Ok(Source::Shm {
                offset: r.u64()?,
                len: r.u64()?,
            }),
            2 => Ok(Source::Guest(get_sg(r)?)),
            tag => Err(DecodeError::BadTag {
                what: "source",
                tag,
            }),
        }
    }
}

impl Wire for Sink {
    const MIN_SIZE: usize = 1;
    fn put(&self, w: &mut Writer) {
        match self {
            Sink::Reply => w.u8(0),
            Sink::Shm { offset, len } => {
                w.u8(1);
                w.u64(*offset);
                w.u64(*len);
            }
            Sink::Guest(l) => {
                w.u8(2);
                l.put(w);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8()? {
            0 => Ok(Sink::Reply),
            1 => Ok(Sink::Shm {
                offset: r.u64()?,
                len: r.u64()?,
            }),
            2 => Ok(Sink::Guest(get_sg(r)?)),
            tag => Err(DecodeError::BadTag { what: "sink", tag }),
        }
    }
}

fn get_sg(r: &mut Reader<'_>) -> Result<List<SgEntry>, DecodeError> {
    let list = List::<SgEntry>::get(r)?;
    if list.0.len() > MAX_SG_ENTRIES {
        return Err(DecodeError::TooLarge {
            what: "scatter list",
            len: list.0.len() as u64,
            max: MAX_SG_ENTRIES as u64,
        });
    }
    Ok(list)
}

/// Access to the out-of-band data of one session's transport: a shared-memory window (unix
/// transport) or guest memory (virtio). The executor resolves non-inline [`Source`]s and
/// [`Sink`]s through it; inline data and [`Sink::Reply`] never reach it.
pub trait DataAccess {
    /// Appends the bytes `src` describes to `out`.
    fn read_source(&self, src: &Source, out: &mut Vec<u8>) -> Result<(), Status>;
    /// Writes `data` to where `sink` says.
    fn write_sink(&self, sink: &Sink, data: &[u8]) -> Result<(), Status>;

    /// The shared memory `src` names, for a backend to copy from directly (no intermediate
    /// buffer). `Ok(None)` when `src` is not one contiguous shared range of this transport.
    fn source_region(&self, _src: &Source) -> Result<Option<SharedRegion<'_>>, Status> {
        Ok(None)
    }

    /// The first `len` bytes of the shared memory `sink` names, for a backend to copy into
    /// directly. `Ok(None)` as for [`DataAccess::source_region`].
    fn sink_region(&self, _sink: &Sink, _len: u64) -> Result<Option<SharedRegion<'_>>, Status> {
        Ok(None)
    }
}
