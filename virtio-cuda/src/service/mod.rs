//! [`FrameService`]: what a transport hands whole request frames to.
//!
//! The executor implements it; transports (the unix server, the virtio device over MMIO or
//! vhost-user) only move frames and data. Kept here, free of dependencies, so the device model
//! does not depend on the executor crate.

pub mod proxy;

use crate::protocol::DataAccess;

pub use proxy::RemoteExecutor;

/// Serves the request frames of many connections (sessions).
pub trait FrameService: Send + Sync {
    /// Per-connection state (the executor's session once `Hello` has opened it).
    type Conn: Send;

    /// State for a new connection.
    fn connect(&self) -> Self::Conn;

    /// Handles one complete request frame (header + body). Response frames (device output,
    /// then the reply; nothing for fire-and-forget requests) are appended to `out`.
    /// `Ok(true)` means the client said Goodbye; `Err` means the connection must be closed
    /// (the reason is for logs).
    fn frame(
        &self,
        conn: &mut Self::Conn,
        frame: &[u8],
        data: &dyn DataAccess,
        out: &mut Vec<u8>,
    ) -> Result<bool, String>;
}

impl<T: FrameService + ?Sized> FrameService for std::sync::Arc<T> {
    type Conn = T::Conn;

    fn connect(&self) -> Self::Conn {
        (**self).connect()
    }

    fn frame(
        &self,
        conn: &mut Self::Conn,
        frame: &[u8],
        data: &dyn DataAccess,
        out: &mut Vec<u8>,
    ) -> Result<bool, String> {
        (**self).frame(conn, frame, data, out)
    }
}
