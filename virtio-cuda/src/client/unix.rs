//! The unix-socket transport: frames written and read on one stream socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Mutex;

use super::{Reply, Transport, TransportError};
use crate::protocol::{Reader, ResponseHeader, ResponseKind, HEADER_LEN};

/// Where device `printf` output goes.
pub type OutputSink = Box<dyn Fn(&[u8]) + Send + Sync>;

/// Frames over a connected unix stream socket. Calls from several threads are serialised; a
/// synchronous call holds the socket until its reply arrives, which keeps replies in order.
pub struct UnixTransport {
    stream: Mutex<UnixStream>,
    output: OutputSink,
}

impl UnixTransport {
    /// Connects to `path`; device output goes to this process's stdout.
    pub fn connect(path: &Path) -> Result<Self, TransportError> {
        let stream = UnixStream::connect(path)?;
        Ok(Self::from_stream(stream))
    }

    /// Wraps a connected stream.
    pub fn from_stream(stream: UnixStream) -> Self {
        Self {
            stream: Mutex::new(stream),
            output: Box::new(|bytes| {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(bytes);
                let _ = out.flush();
            }),
        }
    }

    /// Sends device output somewhere else (tests capture it).
    pub fn with_output(mut self, sink: OutputSink) -> Self {
        self.output = sink;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, UnixStream> {
        // A panic while holding the lock leaves the stream usable: frames are written whole.
        self.stream.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Transport for UnixTransport {
    fn send(&self, frame: &[u8]) -> Result<(), TransportError> {
        self.lock().write_all(frame)?;
        Ok(())
    }

    fn call(&self, frame: &[u8], seq: u32) -> Result<Reply, TransportError> {
        let mut s = self.lock();
        s.write_all(frame)?;
        loop {
            let mut hdr = [0u8; HEADER_LEN];
            read_exact_or_closed(&mut s, &mut hdr)?;
            let h = ResponseHeader::get(&mut Reader::new(&hdr))?;
            let mut body = vec![0u8; h.body_len as usize];
            read_exact_or_closed(&mut s, &mut body)?;
            match h.kind {
                ResponseKind::Stdout => (self.output)(&body),
                ResponseKind::Reply if h.seq == seq => {
                    return Ok(Reply {
                        status: h.status,
                        body,
                    })
                }
                ResponseKind::Reply => {
                    return Err(TransportError::OutOfOrder {
                        expected: seq,
                        got: h.seq,
                    })
                }
            }
        }
    }
}

fn read_exact_or_closed(s: &mut UnixStream, buf: &mut [u8]) -> Result<(), TransportError> {
    match s.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(TransportError::Closed),
        Err(e) => Err(e.into()),
    }
}
