//! The client side of the protocol: typed calls over a [`Transport`].
//!
//! [`Client`] numbers requests, allocates handles from the range the executor granted, sends
//! fire-and-forget calls without waiting and blocks only for synchronous ones. Transports carry
//! whole frames; [`unix::UnixTransport`] is the socket transport used by host-only mode and tests.

pub mod batch;
pub mod context;
pub mod unix;
pub mod virtio;

use std::sync::atomic::{AtomicU32, Ordering};

use crate::protocol::{
    self, Call, DecodeError, HandleAllocator, Hello, HelloReply, Status, PROTOCOL_VERSION,
};

pub use context::{from_bytes, to_bytes, Context, Function, KernelArg, Module, Scalar};
pub use unix::UnixTransport;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The executor answered with a CUDA error status.
    #[error("executor returned {0}")]
    Status(Status),
    /// The connection failed or closed.
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// The executor's reply could not be decoded.
    #[error("malformed reply to {call}: {source}")]
    Decode {
        call: &'static str,
        #[source]
        source: DecodeError,
    },
    /// The granted handle range is used up.
    #[error("handle range exhausted")]
    HandlesExhausted,
}

impl ClientError {
    /// The CUDA status to report to an application for this failure.
    pub fn status(&self) -> Status {
        match self {
            ClientError::Status(s) => *s,
            ClientError::HandlesExhausted => Status::ERROR_OUT_OF_MEMORY,
            ClientError::Transport(_) | ClientError::Decode { .. } => Status::ERROR_UNKNOWN,
        }
    }
}

/// Transport failures.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed response frame: {0}")]
    Decode(#[from] DecodeError),
    #[error("reply for request {got} while waiting for {expected}")]
    OutOfOrder { expected: u32, got: u32 },
    #[error("executor closed the connection")]
    Closed,
}

/// A synchronous call's reply: status and body.
#[derive(Debug)]
pub struct Reply {
    pub status: Status,
    pub body: Vec<u8>,
}

/// Carries complete request frames to an executor and replies back.
pub trait Transport: Send + Sync {
    /// Sends a fire-and-forget request frame.
    fn send(&self, frame: &[u8]) -> Result<(), TransportError>;
    /// Sends a synchronous request frame and waits for the reply with sequence number `seq`.
    /// Device output frames that arrive first are written to the client's stdout.
    fn call(&self, frame: &[u8], seq: u32) -> Result<Reply, TransportError>;

    /// Largest data window one call may use (0: the transport has none). With a window, bulk
    /// bytes travel outside the frame: `Source::Shm`/`Sink::Shm` ranges are offsets into the
    /// `h2d`/`d2h` buffers of [`Transport::call_with_data`].
    fn window_size(&self) -> usize {
        0
    }

    /// A synchronous call whose `Source::Shm` ranges refer to `h2d` and whose `Sink::Shm`
    /// ranges refer to `d2h` (each at most [`Transport::window_size`] bytes). `Ok(None)` when
    /// the transport has no window.
    fn call_with_data(
        &self,
        _frame: &[u8],
        _seq: u32,
        _h2d: &[u8],
        _d2h: &mut [u8],
    ) -> Result<Option<Reply>, TransportError> {
        Ok(None)
    }

    /// A bulk copy pipelined through the data window: the transport splits it into chunks,
    /// stages each in a window slot (host→device) or copies it out of one (device→host), and
    /// calls `encode` to append each chunk's request frame to the buffer it passes; `encode`
    /// returns the frame's sequence number. Every chunk's request is fire-and-forget except the
    /// last, whose reply is returned (it reports any error of the copy). `Ok(None)` when the
    /// transport cannot pipeline (no window): nothing was sent.
    fn copy_pipelined(
        &self,
        _bulk: Bulk<'_>,
        _encode: &mut dyn FnMut(Chunk, &mut Vec<u8>) -> u32,
    ) -> Result<Option<Reply>, TransportError> {
        Ok(None)
    }

    /// Sets up the transport's data window, if it has one to set up (`seq` numbers the
    /// request it may send). Returns whether a window is now available.
    fn attach_window(&self, _seq: u32) -> Result<bool, TransportError> {
        Ok(self.window_size() > 0)
    }
}

/// The host side of a bulk copy.
#[derive(Debug)]
pub enum Bulk<'a> {
    /// Host→device: the bytes to send.
    ToDevice(&'a [u8]),
    /// Device→host: where the bytes go.
    FromDevice(&'a mut [u8]),
}

impl Bulk<'_> {
    /// Bytes to copy.
    pub fn len(&self) -> usize {
        match self {
            Bulk::ToDevice(b) => b.len(),
            Bulk::FromDevice(b) => b.len(),
        }
    }

    /// True for an empty copy.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One piece of a pipelined copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Offset of the piece in the whole copy.
    pub offset: u64,
    /// Its length.
    pub len: u64,
    /// Where it is staged in the data window (`Source::Shm` / `Sink::Shm` offset).
    pub window_offset: u64,
    /// The last piece: sent synchronously.
    pub last: bool,
}

/// A connected session.
pub struct Client {
    transport: Box<dyn Transport>,
    seq: AtomicU32,
    hello: HelloReply,
    handles: HandleAllocator,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("hello", &self.hello)
            .finish()
    }
}

impl Client {
    /// Opens a session over `transport` (sends `Hello`).
    pub fn new(transport: Box<dyn Transport>, client_name: &str) -> Result<Self, ClientError> {
        let seq = AtomicU32::new(1);
        let hello = Hello {
            version: u32::from(PROTOCOL_VERSION),
            pid: std::process::id(),
            client: client_name.to_string(),
        };
        let mut frame = Vec::new();
        protocol::encode_call(0, &hello, &mut frame);
        let reply = transport.call(&frame, 0)?;
        if !reply.status.is_ok() {
            return Err(ClientError::Status(reply.status));
        }
        let hello =
            protocol::decode_reply::<Hello>(&reply.body).map_err(|source| ClientError::Decode {
                call: "Hello",
                source,
            })?;
        let handles = HandleAllocator::new(hello.handle_base, hello.handle_count);
        // Best effort: without a window, bulk data goes inline.
        let _ = transport.attach_window(seq.fetch_add(1, Ordering::Relaxed));
        Ok(Self {
            transport,
            seq,
            hello,
            handles,
        })
    }

    /// Connects to an executor listening on a unix socket.
    pub fn connect_unix(
        path: impl AsRef<std::path::Path>,
        client_name: &str,
    ) -> Result<Self, ClientError> {
        let t = UnixTransport::connect(path.as_ref())?;
        Self::new(Box::new(t), client_name)
    }

    /// What the executor granted this session.
    pub fn hello(&self) -> &HelloReply {
        &self.hello
    }

    /// A fresh handle id for a new context, stream, event, module or function.
    pub fn alloc_handle(&self) -> Result<u64, ClientError> {
        self.handles.alloc().ok_or(ClientError::HandlesExhausted)
    }

    fn next_seq(&self) -> u32 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Performs a synchronous call and decodes its reply.
    pub fn call<C: Call>(&self, req: &C) -> Result<C::Reply, ClientError> {
        let seq = self.next_seq();
        let mut frame = Vec::new();
        // A sync call of an async opcode is allowed: the flag decides who waits.
        protocol::encode_call(seq, req, &mut frame);
        if C::ASYNC {
            clear_async_flag(&mut frame);
        }
        let reply = self.transport.call(&frame, seq)?;
        if !reply.status.is_ok() {
            return Err(ClientError::Status(reply.status));
        }
        protocol::decode_reply::<C>(&reply.body).map_err(|source| ClientError::Decode {
            call: C::NAME,
            source,
        })
    }

    /// Largest transfer [`Client::call_with_data`] can carry in one call (0: no data window).
    pub fn window_size(&self) -> usize {
        self.transport.window_size()
    }

    /// A synchronous call whose bulk data travels in the transport's data window: the request's
    /// `Source::Shm`/`Sink::Shm` ranges are offsets into `h2d`/`d2h`. Fails with
    /// `CUDA_ERROR_NOT_SUPPORTED` when the transport has no window.
    pub fn call_with_data<C: Call>(
        &self,
        req: &C,
        h2d: &[u8],
        d2h: &mut [u8],
    ) -> Result<C::Reply, ClientError> {
        let seq = self.next_seq();
        let mut frame = Vec::new();
        protocol::encode_call(seq, req, &mut frame);
        if C::ASYNC {
            clear_async_flag(&mut frame);
        }
        let reply = self
            .transport
            .call_with_data(&frame, seq, h2d, d2h)?
            .ok_or(ClientError::Status(Status::ERROR_NOT_SUPPORTED))?;
        if !reply.status.is_ok() {
            return Err(ClientError::Status(reply.status));
        }
        protocol::decode_reply::<C>(&reply.body).map_err(|source| ClientError::Decode {
            call: C::NAME,
            source,
        })
    }

    /// A bulk copy pipelined through the transport's data window (see
    /// [`Transport::copy_pipelined`]): `request(chunk)` builds the request for each piece (its
    /// `Source::Shm`/`Sink::Shm` at `chunk.window_offset`). `Ok(false)` when the transport has
    /// no window; nothing was sent then.
    pub fn copy_pipelined<C: Call>(
        &self,
        bulk: Bulk<'_>,
        request: impl Fn(Chunk) -> C,
    ) -> Result<bool, ClientError> {
        let mut encode = |chunk: Chunk, out: &mut Vec<u8>| {
            let seq = self.next_seq();
            protocol::encode_call(seq, &request(chunk), out);
            set_async_flag(out, !chunk.last);
            seq
        };
        let Some(reply) = self.transport.copy_pipelined(bulk, &mut encode)? else {
            return Ok(false);
        };
        if !reply.status.is_ok() {
            return Err(ClientError::Status(reply.status));
        }
        protocol::decode_reply::<C>(&reply.body).map_err(|source| ClientError::Decode {
            call: C::NAME,
            source,
        })?;
        Ok(true)
    }

    /// Sends a call without waiting. Synchronous opcodes are sent as calls (their reply is read
    /// and discarded), so callers cannot desynchronise the stream by mistake.
    pub fn send<C: Call>(&self, req: &C) -> Result<(), ClientError> {
        if !C::ASYNC {
            return self.call(req).map(|_| ());
        }
        let seq = self.next_seq();
        let mut frame = Vec::new();
        protocol::encode_call(seq, req, &mut frame);
        self.transport.send(&frame)?;
        Ok(())
    }
}

fn clear_async_flag(frame: &mut [u8]) {
    set_async_flag(frame, false);
}

/// Sets or clears `FLAG_ASYNC` in an encoded request frame.
fn set_async_flag(frame: &mut [u8], async_: bool) {
    if let Some(flags) = frame.get_mut(6..8) {
        let mut v = u16::from_le_bytes([flags[0], flags[1]]) & !protocol::FLAG_ASYNC;
        if async_ {
            v |= protocol::FLAG_ASYNC;
        }
        flags.copy_from_slice(&v.to_le_bytes());
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let seq = self.next_seq();
        let mut frame = Vec::new();
        protocol::encode_call(seq, &protocol::Goodbye {}, &mut frame);
        // Best effort: the executor also cleans up when the connection just closes.
        let _ = self.transport.call(&frame, seq);
    }
}
