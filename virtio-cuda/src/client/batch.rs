//! A [`Transport`] wrapper that batches fire-and-forget frames.
//!
//! `send` only appends the frame to a buffer, so a kernel launch costs the caller an encode and
//! a copy, not a system call. The buffer goes to the inner transport, in order, when a
//! synchronous call is made (before that call), when it holds [`BatchConfig::max_bytes`], or
//! when a background flusher finds it has waited [`BatchConfig::max_delay`] — so work also
//! starts when the program makes no further call. An error from a background flush is reported
//! by the next call.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use super::{Bulk, Chunk, Reply, Transport, TransportError};

/// When buffered frames are sent.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// Send once this many bytes are buffered.
    pub max_bytes: usize,
    /// Longest time a frame waits in the buffer.
    pub max_delay: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_bytes: 64 << 10,
            max_delay: Duration::from_micros(50),
        }
    }
}

struct Pending {
    buf: Vec<u8>,
    /// A background flush failed; reported by the next call.
    failed: Option<TransportError>,
}

struct Shared<T> {
    inner: T,
    pending: Mutex<Pending>,
    nonempty: Condvar,
    config: BatchConfig,
}

impl<T: Transport> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends the buffered frames (the lock keeps them ordered before any later frame).
    fn flush(&self, p: &mut Pending) -> Result<(), TransportError> {
        if let Some(e) = p.failed.take() {
            return Err(e);
        }
        if p.buf.is_empty() {
            return Ok(());
        }
        let r = self.inner.send(&p.buf);
        p.buf.clear();
        r
    }
}

/// Batches the fire-and-forget frames of an inner transport.
pub struct BatchTransport<T: Transport + 'static> {
    shared: Arc<Shared<T>>,
}

impl<T: Transport + 'static> BatchTransport<T> {
    /// Wraps `inner` and starts the background flusher.
    pub fn new(inner: T, config: BatchConfig) -> Result<Self, TransportError> {
        let shared = Arc::new(Shared {
            inner,
            pending: Mutex::new(Pending {
                buf: Vec::with_capacity(config.max_bytes),
                failed: None,
            }),
            nonempty: Condvar::new(),
            config,
        });
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("vcuda-flush".into())
            .spawn(move || flusher(weak))?;
        Ok(Self { shared })
    }
}

/// Flushes frames that have waited `max_delay`; exits when the transport is dropped.
fn flusher<T: Transport>(weak: Weak<Shared<T>>) {
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let delay = shared.config.max_delay;
        {
            let p = shared.lock();
            if p.buf.is_empty() {
                // Woken by the first frame of a batch, or periodically to notice a drop.
                let _ = shared
                    .nonempty
                    .wait_timeout(p, Duration::from_millis(100))
                    .map_err(|e| e.into_inner());
                drop(shared);
                continue;
            }
        }
        drop(shared);
        std::thread::sleep(delay);
        let Some(shared) = weak.upgrade() else { return };
        let mut p = shared.lock();
        if let Err(e) = shared.flush(&mut p) {
            p.failed = Some(e);
        }
    }
}

impl<T: Transport + 'static> Transport for BatchTransport<T> {
    fn send(&self, frame: &[u8]) -> Result<(), TransportError> {
        let s = &self.shared;
        let mut p = s.lock();
        let was_empty = p.buf.is_empty();
        p.buf.extend_from_slice(frame);
        if p.buf.len() >= s.config.max_bytes {
            return s.flush(&mut p);
        }
        if was_empty {
            s.nonempty.notify_one();
        }
        Ok(())
    }

    fn call(&self, frame: &[u8], seq: u32) -> Result<Reply, TransportError> {
        let s = &self.shared;
        let mut p = s.lock();
        s.flush(&mut p)?;
        s.inner.call(frame, seq)
    }

    fn window_size(&self) -> usize {
        self.shared.inner.window_size()
    }

    fn call_with_data(
        &self,
        frame: &[u8],
        seq: u32,
        h2d: &[u8],
        d2h: &mut [u8],
    ) -> Result<Option<Reply>, TransportError> {
        let s = &self.shared;
        let mut p = s.lock();
        s.flush(&mut p)?;
        s.inner.call_with_data(frame, seq, h2d, d2h)
    }

    fn copy_pipelined(
        &self,
        bulk: Bulk<'_>,
        encode: &mut dyn FnMut(Chunk, &mut Vec<u8>) -> u32,
    ) -> Result<Option<Reply>, TransportError> {
        let s = &self.shared;
        let mut p = s.lock();
        s.flush(&mut p)?;
        s.inner.copy_pipelined(bulk, encode)
    }

    fn attach_window(&self, seq: u32) -> Result<bool, TransportError> {
        let s = &self.shared;
        let mut p = s.lock();
        s.flush(&mut p)?;
        s.inner.attach_window(seq)
    }
}

impl<T: Transport + 'static> Drop for BatchTransport<T> {
    fn drop(&mut self) {
        let s = &self.shared;
        let mut p = s.lock();
        let _ = s.flush(&mut p);
        s.nonempty.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Status;

    /// Records what reaches the inner transport.
    #[derive(Default)]
    struct Recorder {
        sent: Mutex<Vec<Vec<u8>>>,
    }

    impl Transport for Arc<Recorder> {
        fn send(&self, frame: &[u8]) -> Result<(), TransportError> {
            self.sent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(frame.to_vec());
            Ok(())
        }
        fn call(&self, frame: &[u8], _seq: u32) -> Result<Reply, TransportError> {
            self.send(frame)?;
            Ok(Reply {
                status: Status::SUCCESS,
                body: Vec::new(),
            })
        }
    }

    fn sent(r: &Recorder) -> Vec<Vec<u8>> {
        r.sent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    #[test]
    fn sends_are_batched_and_flushed_before_a_call() {
        let rec = Arc::new(Recorder::default());
        let config = BatchConfig {
            max_bytes: 1 << 20,
            max_delay: Duration::from_secs(60),
        };
        let t = BatchTransport::new(Arc::clone(&rec), config).expect("transport");
        t.send(b"ab").expect("send");
        t.send(b"cd").expect("send");
        assert!(sent(&rec).is_empty());
        t.call(b"X", 1).expect("call");
        assert_eq!(sent(&rec), vec![b"abcd".to_vec(), b"X".to_vec()]);
    }

    #[test]
    fn full_buffers_and_idle_frames_are_flushed() {
        let rec = Arc::new(Recorder::default());
        let t = BatchTransport::new(
            Arc::clone(&rec),
            BatchConfig {
                max_bytes: 4,
                max_delay: Duration::from_micros(50),
            },
        )
        .expect("transport");
        t.send(b"abcd").expect("send");
        assert_eq!(sent(&rec), vec![b"abcd".to_vec()]);
        t.send(b"e").expect("send");
        for _ in 0..200 {
            if sent(&rec).len() == 2 {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("idle frame never flushed: {:?}", sent(&rec));
    }
}
