//! Shared memory between a client and an executor on the same host (the unix transport).
//!
//! * [`SharedRegion`]: bytes the peer may write at any time, only ever copied in and out;
//! * [`Mapping`]: a memfd mapped shared (created by the client, mapped by the executor);
//! * [`fdpass`]: handing the memfd over the unix socket (SCM_RIGHTS);
//! * [`channel`]: request/response rings and the data window in one memfd, with adaptive
//!   polling (docs/PROTOCOL.md §5).

pub mod channel;
pub use virtio_common::fdpass;
mod mapping;
mod region;

pub use channel::{Endpoint, Layout, ShmError, Side};
pub use mapping::Mapping;
pub use region::{OutOfRegion, SharedRegion};
