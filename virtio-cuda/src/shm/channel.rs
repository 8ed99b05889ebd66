//! The shared-memory channel: request and response rings plus the data window in one memfd,
//! with adaptive polling (spin briefly, then sleep until the peer rings the doorbell).
//!
//! ```text
//! offset 0            control page (4 KiB): one 64-byte line per word below
//! 4096                request ring  (ring_bytes, a power of two)   client → executor
//! 4096 + ring         response ring (ring_bytes)                   executor → client
//! 4096 + 2·ring       data window   (data_bytes)                   Source::Shm / Sink::Shm
//! ```
//!
//! Each ring is a single-producer single-consumer byte stream of whole protocol frames (a frame
//! larger than the ring streams through it in pieces). Positions are free-running u64 byte
//! counts: the producer publishes `head` (release) after copying bytes in, the consumer
//! publishes `tail` after copying them out. The executor also publishes `done`, the request
//! position up to which every frame has been *executed*, so a client can reuse a data slot as
//! soon as the request that read it has run (pipelined copies).
//!
//! Sleeping: a side with nothing to do polls for [`Endpoint::spin`], then sets its `sleeping`
//! word, re-checks, and blocks reading the unix socket the channel was set up on. A side that
//! publishes anything checks the peer's `sleeping` word and, if set, clears it and writes one
//! doorbell byte to the socket (a Dekker handshake: both sides store, fence, then load, so a
//! wake-up is never lost). The socket also reports the peer's death (EOF) to a sleeper.
//!
//! The executor trusts nothing in the control page: its own positions are kept privately, the
//! client's are validated on every read (a head more than a ring ahead of the tail is
//! corruption and ends the connection), and ring bytes are only copied with masked offsets.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Mapping, SharedRegion};

/// Size of the control page.
pub const CONTROL_BYTES: usize = 4096;
/// Smallest ring.
pub const MIN_RING: u64 = 4096;
/// Largest ring.
pub const MAX_RING: u64 = 16 << 20;
/// Default ring size (each direction).
pub const DEFAULT_RING: u64 = 256 << 10;
/// Largest data window an executor accepts.
pub const MAX_DATA: u64 = 1 << 30;
/// How long a side polls before it sleeps, unless configured (`VCUDA_SPIN_US`).
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

// Control words: byte offsets in the control page, one cache line each.
const REQ_HEAD: usize = 64;
const REQ_TAIL: usize = 128;
const REQ_DONE: usize = 192;
const RESP_HEAD: usize = 256;
const RESP_TAIL: usize = 320;
const EXEC_SLEEPING: usize = 384;
const CLIENT_SLEEPING: usize = 448;

/// Why the channel failed; every variant ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    #[error("shared-memory channel i/o: {0}")]
    Io(#[from] io::Error),
    #[error("the peer closed the connection")]
    Closed,
    #[error("the peer corrupted the {0} position of a ring")]
    Corrupt(&'static str),
    #[error("bad channel layout: {0}")]
    Layout(String),
}

/// Sizes of a channel's parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    ring: usize,
    data: usize,
}

impl Layout {
    /// Rings of `ring_bytes` (a power of two in [`MIN_RING`]..=[`MAX_RING`]) and a data window
    /// of `data_bytes` (at most [`MAX_DATA`]).
    pub fn new(ring_bytes: u64, data_bytes: u64) -> Result<Layout, ShmError> {
        if !ring_bytes.is_power_of_two() || !(MIN_RING..=MAX_RING).contains(&ring_bytes) {
            return Err(ShmError::Layout(format!(
                "ring of {ring_bytes} bytes (a power of two from {MIN_RING} to {MAX_RING})"
            )));
        }
        if data_bytes > MAX_DATA {
            return Err(ShmError::Layout(format!(
                "data window of {data_bytes} bytes (at most {MAX_DATA})"
            )));
        }
        Ok(Layout {
            ring: ring_bytes as usize,
            data: data_bytes as usize,
        })
    }

    /// Bytes of each ring.
    pub fn ring_bytes(&self) -> usize {
        self.ring
    }

    /// Bytes of the data window.
    pub fn data_bytes(&self) -> usize {
        self.data
    }

    /// Size of the whole memfd.
    pub fn total(&self) -> usize {
        CONTROL_BYTES + 2 * self.ring + self.data
    }

    fn ring_offset(&self, ring: Ring) -> usize {
        match ring {
            Ring::Request => CONTROL_BYTES,
            Ring::Response => CONTROL_BYTES + self.ring,
        }
    }

    fn data_offset(&self) -> usize {
        CONTROL_BYTES + 2 * self.ring
    }
}

/// Which end of the channel this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Executor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ring {
    Request,
    Response,
}

/// The spin budget: `VCUDA_SPIN_US` if set, else [`DEFAULT_SPIN`]; zero on a single CPU, where
/// spinning only delays the peer.
pub fn spin_from_env() -> Duration {
    if let Some(us) = std::env::var("VCUDA_SPIN_US")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return Duration::from_micros(us);
    }
    if std::thread::available_parallelism().map_or(1, |n| n.get()) <= 1 {
        return Duration::ZERO;
    }
    DEFAULT_SPIN
}

/// One end of a channel.
pub struct Endpoint {
    map: Mapping,
    layout: Layout,
    side: Side,
    bell: UnixStream,
    spin: Duration,
    /// What this side has produced into its transmit ring (private: never read back from the
    /// shared page, which the peer could overwrite).
    tx_head: AtomicU64,
    /// What this side has consumed from its receive ring (private, as above).
    rx_tail: AtomicU64,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("side", &self.side)
            .field("layout", &self.layout)
            .field("spin", &self.spin)
            .finish()
    }
}

impl Endpoint {
    /// One end over `map` (laid out as `layout`, positions all zero: a fresh memfd), ringing
    /// the peer through `bell` (a connected socket whose other end the peer reads).
    pub fn new(
        map: Mapping,
        layout: Layout,
        side: Side,
        bell: UnixStream,
        spin: Duration,
    ) -> Result<Self, ShmError> {
        if map.len() < layout.total() {
            return Err(ShmError::Layout(format!(
                "mapping of {} bytes is smaller than the layout's {}",
                map.len(),
                layout.total()
            )));
        }
        Ok(Self {
            map,
            layout,
            side,
            bell,
            spin,
            tx_head: AtomicU64::new(0),
            rx_tail: AtomicU64::new(0),
        })
    }

    /// The layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The polling budget before sleeping.
    pub fn spin(&self) -> Duration {
        self.spin
    }

    /// The data window.
    pub fn data(&self) -> SharedRegion<'_> {
        // The mapping holds at least `layout.total()` bytes (checked in `new`).
        self.map
            .region()
            .sub(self.layout.data_offset() as u64, self.layout.data as u64)
            .unwrap_or_else(|_| SharedRegion::empty())
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        // The control page is in every mapping `new` accepts, and the offsets are 8-aligned
        // constants below CONTROL_BYTES.
        self.map
            .atomic_at(offset)
            .unwrap_or_else(|| unreachable!("control word {offset} outside the control page"))
    }

    fn tx_ring(&self) -> (Ring, usize, usize) {
        match self.side {
            Side::Client => (Ring::Request, REQ_HEAD, REQ_TAIL),
            Side::Executor => (Ring::Response, RESP_HEAD, RESP_TAIL),
        }
    }

    fn rx_ring(&self) -> (Ring, usize, usize) {
        match self.side {
            Side::Client => (Ring::Response, RESP_HEAD, RESP_TAIL),
            Side::Executor => (Ring::Request, REQ_HEAD, REQ_TAIL),
        }
    }

    fn my_sleeping(&self) -> &AtomicU64 {
        self.word(match self.side {
            Side::Client => CLIENT_SLEEPING,
            Side::Executor => EXEC_SLEEPING,
        })
    }

    fn peer_sleeping(&self) -> &AtomicU64 {
        self.word(match self.side {
            Side::Client => EXEC_SLEEPING,
            Side::Executor => CLIENT_SLEEPING,
        })
    }

    /// Copies `bytes` into the transmit ring, waiting for room as needed (the peer is woken
    /// whenever the ring is full, so frames larger than the ring stream through it). Does not
    /// wake the peer for the last piece: call [`Self::notify_peer`] once a frame is complete.
    pub fn write(&self, mut bytes: &[u8]) -> Result<(), ShmError> {
        let (ring, head_w, tail_w) = self.tx_ring();
        let ring_len = self.layout.ring as u64;
        let base = self.layout.ring_offset(ring) as u64;
        let region = self.map.region();
        while !bytes.is_empty() {
            let head = self.tx_head.load(Ordering::Relaxed);
            let used = head.wrapping_sub(self.word(tail_w).load(Ordering::Acquire));
            if used > ring_len {
                return Err(ShmError::Corrupt("tail"));
            }
            let free = (ring_len - used) as usize;
            if free == 0 {
                self.notify_peer()?;
                self.wait_for(|| {
                    let used = head.wrapping_sub(self.word(tail_w).load(Ordering::Acquire));
                    if used > ring_len {
                        return Err(ShmError::Corrupt("tail"));
                    }
                    Ok(used < ring_len)
                })?;
                continue;
            }
            let at = (head % ring_len) as usize;
            let n = free.min(bytes.len()).min(self.layout.ring - at);
            region
                .write_at(base + at as u64, &bytes[..n])
                .map_err(|_| ShmError::Layout("ring outside the mapping".into()))?;
            let head = head.wrapping_add(n as u64);
            self.tx_head.store(head, Ordering::Relaxed);
            self.word(head_w).store(head, Ordering::Release);
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Fills `buf` from the receive ring, waiting (spin, then sleep) for the peer to produce.
    pub fn read_exact(&self, mut buf: &mut [u8]) -> Result<(), ShmError> {
        let (ring, head_w, tail_w) = self.rx_ring();
        let ring_len = self.layout.ring as u64;
        let base = self.layout.ring_offset(ring) as u64;
        let region = self.map.region();
        while !buf.is_empty() {
            let tail = self.rx_tail.load(Ordering::Relaxed);
            let avail = self.word(head_w).load(Ordering::Acquire).wrapping_sub(tail);
            if avail > ring_len {
                return Err(ShmError::Corrupt("head"));
            }
            if avail == 0 {
                self.wait_for(|| {
                    let avail = self.word(head_w).load(Ordering::Acquire).wrapping_sub(tail);
                    if avail > ring_len {
                        return Err(ShmError::Corrupt("head"));
                    }
                    Ok(avail > 0)
                })?;
                continue;
            }
            let at = (tail % ring_len) as usize;
            let n = (avail as usize).min(buf.len()).min(self.layout.ring - at);
            let (now, rest) = std::mem::take(&mut buf).split_at_mut(n);
            region
                .read_at(base + at as u64, now)
                .map_err(|_| ShmError::Layout("ring outside the mapping".into()))?;
            buf = rest;
            let tail = tail.wrapping_add(n as u64);
            self.rx_tail.store(tail, Ordering::Relaxed);
            self.word(tail_w).store(tail, Ordering::Release);
            // A producer blocked on a full ring waits for exactly this.
            self.notify_peer()?;
        }
        Ok(())
    }

    /// Request-ring position after everything this client has written so far.
    pub fn written(&self) -> u64 {
        self.tx_head.load(Ordering::Relaxed)
    }

    /// Executor: every request up to the current read position has been executed.
    pub fn mark_done(&self) {
        let pos = self.rx_tail.load(Ordering::Relaxed);
        self.word(REQ_DONE).store(pos, Ordering::Release);
    }

    /// Client: waits until the executor has executed every request up to position `pos`.
    pub fn wait_done(&self, pos: u64) -> Result<(), ShmError> {
        let done = self.word(REQ_DONE);
        self.wait_for(|| Ok(done.load(Ordering::Acquire).wrapping_sub(pos) as i64 >= 0))
    }

    /// Wakes the peer if it sleeps (after anything was published).
    pub fn notify_peer(&self) -> Result<(), ShmError> {
        fence(Ordering::SeqCst);
        let peer = self.peer_sleeping();
        if peer.load(Ordering::Relaxed) != 0 && peer.swap(0, Ordering::SeqCst) != 0 {
            self.ring_bell()?;
        }
        Ok(())
    }

    fn ring_bell(&self) -> Result<(), ShmError> {
        loop {
            // SAFETY: a one-byte send from a live buffer on our socket; non-blocking (a full
            // socket buffer already holds doorbells) and without SIGPIPE.
            let n = unsafe {
                libc::send(
                    self.bell.as_raw_fd(),
                    [1u8].as_ptr().cast(),
                    1,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(()),
                // The peer is gone; our next wait sees EOF.
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => return Ok(()),
                _ => return Err(e.into()),
            }
        }
    }

    /// Waits until `ready` holds: polls for [`Endpoint::spin`], then sleeps on the doorbell.
    /// The polling loop yields the CPU every microsecond or so: on an overloaded machine the
    /// peer may be waiting for this very CPU, and a poller that never yields would only delay
    /// it (measured: without yielding, a 200 µs budget made round trips *slower* than none).
    /// Budgets that adapt to past waits were tried and dropped: the executor's waits for the
    /// next pipelined chunk are naturally long, so they starved its polling exactly where it
    /// pays off (docs/BENCHMARKS.md, "Shim").
    fn wait_for(&self, mut ready: impl FnMut() -> Result<bool, ShmError>) -> Result<(), ShmError> {
        if ready()? {
            return Ok(());
        }
        let budget = self.spin.as_nanos() as u64;
        let start = Instant::now();
        if budget > 0 {
            let mut i = 0u32;
            loop {
                for _ in 0..16 {
                    std::hint::spin_loop();
                }
                if ready()? {
                    return Ok(());
                }
                i = i.wrapping_add(1);
                if i % 32 == 0 {
                    if start.elapsed().as_nanos() as u64 >= budget {
                        break;
                    }
                    std::thread::yield_now();
                }
            }
        }
        let mine = self.my_sleeping();
        loop {
            mine.store(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if ready()? {
                mine.store(0, Ordering::Relaxed);
                break;
            }
            let mut buf = [0u8; 64];
            match (&self.bell).read(&mut buf) {
                Ok(0) => return Err(ShmError::Closed),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(ShmError::Closed)
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
