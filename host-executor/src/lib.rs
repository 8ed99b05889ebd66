//! host-executor: runs the CUDA driver calls of vcuda clients.
//!
//! * [`executor`]: the shared [`Executor`] and the loop serving one connection,
//! * [`session`]: per-client state (handles, quota, latched errors) and request dispatch,
//! * [`backend`]: the [`Backend`] trait, implemented by [`cpu`] (PTX interpreter),
//! * [`server`]: the unix-socket server (`vcuda executor`, in-process for `vcuda exec`/tests),
//! * [`client`]: starting an in-process executor and connecting to it (tests, tools),
//! * [`image`]: module image formats (fatbin, cubin, PTX).

pub mod backend;
pub mod client;
pub mod cpu;
pub mod cuda;
pub mod data;
pub mod executor;
pub mod image;
pub mod select;
pub mod server;
pub mod session;
pub mod window;

pub use backend::BackendSession;
pub use executor::{Executor, ExecutorConfig, ExecutorStats};
pub use server::{Server, ServerError, ServerHandle};
pub use session::Backend;
