//! The unix transport: a stream socket to set up the session, then (by default) a
//! shared-memory channel — request/response rings and a data window in one memfd — with
//! adaptive polling (docs/PROTOCOL.md §5). Without the channel (`VCUDA_WINDOW=0`, or an
//! executor that does not offer it) frames go over the socket.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use super::{Bulk, Chunk, Reply, Transport, TransportError};
use crate::protocol::{self, Reader, ResponseHeader, ResponseKind, HEADER_LEN};
use crate::shm::channel::{spin_from_env, DEFAULT_RING};
use crate::shm::{fdpass, Endpoint, Layout, Mapping, ShmError, Side};

/// Where device `printf` output goes.
pub type OutputSink = Box<dyn Fn(&[u8]) + Send + Sync>;

/// Default data-window size (`VCUDA_WINDOW` overrides; 0 disables the channel).
pub const DEFAULT_WINDOW: usize = 16 << 20;

/// Chunks of a pipelined copy: at least this large (per-chunk costs stay small)…
const MIN_CHUNK: usize = 64 << 10;
/// …and at most this large (a pipeline of several chunks even for the biggest copies).
const MAX_CHUNK: usize = 256 << 10;
/// Most data slots in flight at once.
const MAX_SLOTS: usize = 4;

/// Frames over a connected unix stream socket, or over the shared-memory channel once it is
/// attached. Calls from several threads are serialised; a synchronous call holds the transport
/// until its reply arrives, which keeps replies in order.
pub struct UnixTransport {
    stream: Mutex<UnixStream>,
    output: OutputSink,
    channel: OnceLock<Endpoint>,
}

impl From<ShmError> for TransportError {
    fn from(e: ShmError) -> Self {
        match e {
            ShmError::Closed => TransportError::Closed,
            ShmError::Io(e) => TransportError::Io(e),
            other => TransportError::Io(std::io::Error::other(other.to_string())),
        }
    }
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
            channel: OnceLock::new(),
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

    /// True once the shared-memory channel carries the frames.
    pub fn has_channel(&self) -> bool {
        self.channel.get().is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, UnixStream> {
        // A panic while holding the lock leaves the transport usable: frames are written whole.
        self.stream.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes a frame and, for the channel, wakes the executor if it sleeps.
    fn write_frame(&self, s: &mut UnixStream, frame: &[u8]) -> Result<(), TransportError> {
        match self.channel.get() {
            Some(ep) => {
                ep.write(frame)?;
                ep.notify_peer()?;
            }
            None => s.write_all(frame)?,
        }
        Ok(())
    }

    fn read_exact(&self, s: &mut UnixStream, buf: &mut [u8]) -> Result<(), TransportError> {
        match self.channel.get() {
            Some(ep) => Ok(ep.read_exact(buf)?),
            None => match s.read_exact(buf) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    Err(TransportError::Closed)
                }
                Err(e) => Err(e.into()),
            },
        }
    }

    /// Reads response frames until the reply to `seq`, passing device output on.
    fn read_reply(&self, s: &mut UnixStream, seq: u32) -> Result<Reply, TransportError> {
        loop {
            let mut hdr = [0u8; HEADER_LEN];
            self.read_exact(s, &mut hdr)?;
            let h = ResponseHeader::get(&mut Reader::new(&hdr))?;
            let mut body = vec![0u8; h.body_len as usize];
            self.read_exact(s, &mut body)?;
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

/// The chunk size of a pipelined copy of `total` bytes through a window of `window` bytes:
/// about a quarter of the copy, so that the client fills one slot while the executor drains
/// another, within [`MIN_CHUNK`]..[`MAX_CHUNK`].
fn chunk_size(total: usize, window: usize) -> usize {
    let c = total.div_ceil(4).clamp(MIN_CHUNK, MAX_CHUNK);
    let c = c.div_ceil(4096) * 4096;
    c.min(window).max(1)
}

impl Transport for UnixTransport {
    fn send(&self, frame: &[u8]) -> Result<(), TransportError> {
        let mut s = self.lock();
        self.write_frame(&mut s, frame)
    }

    fn call(&self, frame: &[u8], seq: u32) -> Result<Reply, TransportError> {
        let mut s = self.lock();
        self.write_frame(&mut s, frame)?;
        self.read_reply(&mut s, seq)
    }

    fn window_size(&self) -> usize {
        self.channel.get().map_or(0, |ep| ep.data().len())
    }

    fn call_with_data(
        &self,
        frame: &[u8],
        seq: u32,
        h2d: &[u8],
        d2h: &mut [u8],
    ) -> Result<Option<Reply>, TransportError> {
        let Some(ep) = self.channel.get() else {
            return Ok(None);
        };
        let data = ep.data();
        if h2d.len() > data.len() || d2h.len() > data.len() {
            return Ok(None);
        }
        // The transport lock also guards the window: one call uses it at a time.
        let mut s = self.lock();
        data.write_at(0, h2d)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.write_frame(&mut s, frame)?;
        let reply = self.read_reply(&mut s, seq)?;
        // The executor finished writing the window before it replied.
        data.read_at(0, d2h)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Some(reply))
    }

    fn copy_pipelined(
        &self,
        bulk: Bulk<'_>,
        encode: &mut dyn FnMut(Chunk, &mut Vec<u8>) -> u32,
    ) -> Result<Option<Reply>, TransportError> {
        let Some(ep) = self.channel.get() else {
            return Ok(None);
        };
        let data = ep.data();
        let total = bulk.len();
        if data.is_empty() || total == 0 {
            return Ok(None);
        }
        let chunk = chunk_size(total, data.len());
        let slots = (data.len() / chunk).clamp(1, MAX_SLOTS);
        let count = total.div_ceil(chunk);
        let io = |e: crate::shm::OutOfRegion| std::io::Error::other(e.to_string());
        let mut s = self.lock();
        let mut frame = Vec::with_capacity(128);
        // Request-ring position after the request that last used each slot: once the executor
        // has executed up to there, the slot may be reused.
        let mut slot_free_at = vec![0u64; slots];
        let mut issue = |i: usize, s: &mut UnixStream, slot_free_at: &mut [u64]| {
            let off = i * chunk;
            let n = chunk.min(total - off);
            let slot = i % slots;
            frame.clear();
            let seq = encode(
                Chunk {
                    offset: off as u64,
                    len: n as u64,
                    window_offset: (slot * chunk) as u64,
                    last: i + 1 == count,
                },
                &mut frame,
            );
            self.write_frame(s, &frame)?;
            slot_free_at[slot] = ep.written();
            Ok::<u32, TransportError>(seq)
        };
        match bulk {
            Bulk::ToDevice(src) => {
                let mut last_seq = 0;
                for i in 0..count {
                    let slot = i % slots;
                    ep.wait_done(slot_free_at[slot])?;
                    let off = i * chunk;
                    let n = chunk.min(total - off);
                    data.write_at((slot * chunk) as u64, &src[off..off + n])
                        .map_err(io)?;
                    last_seq = issue(i, &mut s, &mut slot_free_at)?;
                }
                self.read_reply(&mut s, last_seq).map(Some)
            }
            Bulk::FromDevice(dst) => {
                let mut issued = 0;
                let mut last_seq = 0;
                for i in 0..count {
                    // Keep every slot busy: requests run ahead of the copies out.
                    while issued < count && issued < i + slots {
                        last_seq = issue(issued, &mut s, &mut slot_free_at)?;
                        issued += 1;
                    }
                    let slot = i % slots;
                    let reply = if i + 1 == count {
                        // The last chunk is synchronous: its reply carries any error of the
                        // whole copy.
                        Some(self.read_reply(&mut s, last_seq)?)
                    } else {
                        ep.wait_done(slot_free_at[slot])?;
                        None
                    };
                    let off = i * chunk;
                    let n = chunk.min(total - off);
                    data.read_at((slot * chunk) as u64, &mut dst[off..off + n])
                        .map_err(io)?;
                    if let Some(r) = reply {
                        return Ok(Some(r));
                    }
                }
                Ok(None)
            }
        }
    }

    fn attach_window(&self, seq: u32) -> Result<bool, TransportError> {
        if self.channel.get().is_some() {
            return Ok(true);
        }
        let data = match std::env::var("VCUDA_WINDOW") {
            Ok(v) => v.trim().parse::<usize>().unwrap_or(DEFAULT_WINDOW),
            Err(_) => DEFAULT_WINDOW,
        };
        if data == 0 {
            return Ok(false);
        }
        let ring = std::env::var("VCUDA_RING")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_RING);
        let layout = Layout::new(ring, data as u64)?;
        let (map, fd) = Mapping::create(c"vcuda-channel", layout.total())?;
        let mut frame = Vec::new();
        protocol::encode_call(
            seq,
            &protocol::AttachChannel {
                ring_bytes: ring,
                data_bytes: data as u64,
            },
            &mut frame,
        );
        let mut s = self.lock();
        fdpass::send_with_fd(&s, &frame, fd.as_raw_fd())?;
        // The reply still comes over the socket; everything after it uses the channel.
        let reply = self.read_reply(&mut s, seq)?;
        if !reply.status.is_ok() {
            return Ok(false);
        }
        let bell = s.try_clone()?;
        let ep = Endpoint::new(map, layout, Side::Client, bell, spin_from_env())?;
        let _ = self.channel.set(ep);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_pipeline_every_size() {
        let w = DEFAULT_WINDOW;
        assert_eq!(chunk_size(1 << 20, w), 256 << 10);
        assert_eq!(chunk_size(100, w), MIN_CHUNK);
        assert_eq!(chunk_size(1 << 30, w), MAX_CHUNK);
        assert_eq!(chunk_size(1 << 20, 100_000), 100_000);
        assert!(chunk_size(3 << 20, w) % 4096 == 0);
    }
}
