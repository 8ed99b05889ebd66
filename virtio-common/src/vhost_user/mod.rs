//! A vhost-user backend for any [`VhostUserDevice`] (a [`crate::device::QueueDevice`]: the
//! virtio-cuda device from the `virtio-cuda` crate, the virtio-gpu device from `virtio-gpu`), served to any vhost-user
//! frontend (User-Mode Linux's `virtio_uml`, QEMU, crosvm, Cloud Hypervisor).
//!
//! The backend protocol is implemented here rather than with the `vhost` crate because of two
//! frontends' quirks measured with UML 6.1 (docs/VIRTIO.md): its SET_MEM_TABLE carries room for
//! two regions while declaring one (the crate rejects the size), and it allocates virtqueue
//! interrupts only when the backend offers `BACKEND_REQ` (so we offer it, accept the
//! backend-request socket and keep it open).
//!
//! * [`message`]: the wire format (pure parsing, never panics),
//! * [`socket`]: messages with file descriptors over the unix socket,
//! * [`backend`]: the state machine (features, memory table, vring) and the queue worker.

pub mod backend;
pub mod message;
pub mod socket;

pub use backend::{VhostUserBackend, VhostUserDevice, POLL_WINDOW};

/// Why a vhost-user message or connection failed. Errors in one message are answered (or
/// logged) and the connection goes on; framing and I/O errors end the connection.
#[derive(Debug, thiserror::Error)]
pub enum VhostUserError {
    /// The socket failed.
    #[error("socket i/o: {0}")]
    Io(#[source] std::io::Error),
    /// The header's version bits are not 1.
    #[error("unsupported vhost-user version in flags {0:#x}")]
    BadVersion(u32),
    /// A payload larger than any message needs.
    #[error("payload of {0} bytes exceeds the limit")]
    PayloadTooLarge(u32),
    /// A payload ended before a field did.
    #[error("payload truncated")]
    Truncated,
    /// A payload of the wrong size for its request.
    #[error("payload of {0} bytes has the wrong size for its request")]
    PayloadSize(usize),
    /// A field with a value out of range.
    #[error("bad {0}: {1:#x}")]
    BadValue(&'static str, u64),
    /// A memory region that wraps around or is empty.
    #[error("bad memory region at {0:#x} of {1:#x} bytes")]
    BadRegion(u64, u64),
    /// More descriptors than any message carries.
    #[error("{0} file descriptors in one message")]
    TooManyFds(usize),
    /// A request that needs descriptors came with the wrong number.
    #[error("expected {expected} file descriptors, got {got}")]
    FdCount { expected: usize, got: usize },
    /// An unknown or unsupported request.
    #[error("unsupported request {0}")]
    Unsupported(u32),
    /// A request for a queue this device does not have.
    #[error("no virtqueue {0}")]
    BadQueue(u32),
    /// A request that needs a memory table before it.
    #[error("no memory table yet")]
    NoMemory,
    /// A ring address outside every memory region.
    #[error("ring address {0:#x} is outside guest memory")]
    BadRingAddress(u64),
    /// Mapping the frontend's memory failed.
    #[error("cannot map guest memory: {0}")]
    Mmap(String),
    /// The virtqueue configuration is invalid.
    #[error("invalid virtqueue: {0}")]
    Queue(String),
    /// The device refused a request or could not be created.
    #[error("device: {0}")]
    Device(String),
}
