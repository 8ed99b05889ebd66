//! Any [`QueueDevice`] on our MMIO transport: the virtio-cuda and virtio-gpu models, the same
//! code the vhost-user backend serves.
//!
//! Each queue is processed on a worker thread of its own, not the event loop: a long kernel or
//! a slow display must not stall the serial console or other devices. A worker polls its queue
//! with guest notifications suppressed while requests keep arriving (no VM exit per request;
//! `virtio_common::queue::drain_polling_with`) and re-enables them before it sleeps; a device
//! waiting on work of its own ([`QueueDevice::poll_interval`], a GPU's fences) is processed
//! again after that interval without a notification.

use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{debug, warn};
use virtio_common::device::QueueDevice;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::{ActivateError, Activation, Interrupt, VirtioDevice};

/// How long a worker keeps polling an idle queue before it re-enables notifications.
const POLL_WINDOW: Duration = Duration::from_micros(50);
/// How long a worker sleeps between checks when nothing is pending.
const IDLE_WAIT: Duration = Duration::from_secs(1);

enum Msg {
    Kick,
    Stop,
}

struct Worker {
    tx: Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

/// A [`QueueDevice`] as a [`VirtioDevice`] of our MMIO transport.
pub struct Queued<D: QueueDevice> {
    device: Arc<Mutex<D>>,
    name: &'static str,
    device_id: u32,
    features: u64,
    sizes: Vec<u16>,
    workers: Vec<Worker>,
}

fn lock<D>(m: &Mutex<D>) -> MutexGuard<'_, D> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<D: QueueDevice> Queued<D> {
    pub fn new(device: D) -> Self {
        Self {
            name: device.name(),
            device_id: device.device_id(),
            features: device.features(),
            sizes: vec![device.max_queue_size(); device.num_queues()],
            device: Arc::new(Mutex::new(device)),
            workers: Vec::new(),
        }
    }

    /// The device model (for statistics and tests).
    pub fn device(&self) -> MutexGuard<'_, D> {
        lock(&self.device)
    }

    fn stop_workers(&mut self) {
        for w in &self.workers {
            let _ = w.tx.send(Msg::Stop);
        }
        for mut w in self.workers.drain(..) {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// One queue's worker: processes the queue on each notification, and again after the device's
/// poll interval while it waits on work of its own.
struct QueueWorker<D: QueueDevice> {
    device: Arc<Mutex<D>>,
    index: usize,
    mem: GuestMemoryMmap,
    queue: Queue,
    interrupt: Interrupt,
    name: &'static str,
}

impl<D: QueueDevice> QueueWorker<D> {
    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            let wait = lock(&self.device)
                .poll_interval(self.index)
                .unwrap_or(IDLE_WAIT);
            match rx.recv_timeout(wait) {
                Ok(Msg::Kick) => self.drain(),
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {
                    if lock(&self.device).poll_interval(self.index).is_some() {
                        self.drain();
                    }
                }
            }
        }
    }

    fn drain(&mut self) {
        let (device, index, interrupt, name) =
            (&self.device, self.index, &self.interrupt, self.name);
        let usable = virtio_common::queue::drain_polling_with(
            &self.mem,
            &mut self.queue,
            POLL_WINDOW,
            |mem, queue| lock(device).process_queue(index, mem, queue),
            || {
                if let Err(e) = interrupt.signal_used_queue() {
                    warn!("virtio-{name}: interrupt failed: {e}");
                }
            },
        );
        if !usable {
            // Logged by the drain; the driver's reset makes a new queue.
            debug!("virtio-{name}: queue {index} unusable until the device is reset");
        }
    }
}

impl<D: QueueDevice> VirtioDevice for Queued<D> {
    fn device_type(&self) -> u32 {
        self.device_id
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.sizes
    }

    fn device_features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        if let Ok(offset) = u32::try_from(offset) {
            lock(&self.device).read_config(offset, data);
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let refused = u32::try_from(offset)
            .map_err(|_| ())
            .and_then(|o| lock(&self.device).write_config(o, data).map_err(|_| ()));
        if refused.is_err() {
            debug!(
                "virtio-{}: ignoring a config write at {offset:#x}",
                self.name
            );
        }
    }

    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        if a.queues.len() != self.sizes.len() {
            return Err(ActivateError::QueueCount {
                expected: self.sizes.len(),
                got: a.queues.len(),
            });
        }
        if let Some(i) = a.queues.iter().position(|q| !q.ready()) {
            return Err(ActivateError::QueueNotReady(i));
        }
        self.stop_workers();
        for (index, queue) in a.queues.into_iter().enumerate() {
            let (tx, rx) = channel();
            let worker = QueueWorker {
                device: Arc::clone(&self.device),
                index,
                mem: a.mem.clone(),
                queue,
                interrupt: a.interrupt.clone(),
                name: self.name,
            };
            let thread = std::thread::Builder::new()
                .name(format!("virtio-{}-{index}", self.name))
                .spawn(move || worker.run(rx));
            match thread {
                Ok(t) => self.workers.push(Worker {
                    tx,
                    thread: Some(t),
                }),
                Err(e) => {
                    self.stop_workers();
                    return Err(ActivateError::Device(format!(
                        "cannot start the worker of queue {index}: {e}"
                    )));
                }
            }
        }
        Ok(())
    }

    fn queue_notify(&mut self, index: usize) {
        if let Some(w) = self.workers.get(index) {
            let _ = w.tx.send(Msg::Kick);
        }
    }

    fn reset(&mut self) {
        self.stop_workers();
        lock(&self.device).reset();
    }
}

impl<D: QueueDevice> Drop for Queued<D> {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

#[cfg(test)]
#[path = "queued_gpu_tests.rs"]
mod gpu_tests;

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use vm_memory::GuestAddress;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use super::*;

    /// Counts how often its queue is processed; asks to be polled until it was three times.
    struct Waiting(Arc<AtomicUsize>);

    impl QueueDevice for Waiting {
        fn name(&self) -> &'static str {
            "waiting"
        }
        fn device_id(&self) -> u32 {
            0xFFFF
        }
        fn features(&self) -> u64 {
            1 << 32
        }
        fn num_queues(&self) -> usize {
            1
        }
        fn max_queue_size(&self) -> u16 {
            16
        }
        fn read_config(&self, _offset: u32, data: &mut [u8]) {
            data.fill(7);
        }
        fn process_queue(
            &mut self,
            _index: usize,
            _mem: &GuestMemoryMmap,
            _queue: &mut Queue,
        ) -> Result<bool, String> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(false)
        }
        fn poll_interval(&self, _index: usize) -> Option<Duration> {
            (self.0.load(Ordering::SeqCst) < 3).then_some(Duration::from_millis(1))
        }
        fn reset(&mut self) {}
    }

    #[test]
    fn a_waiting_device_is_processed_again_without_a_notification() {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut dev = Queued::new(Waiting(Arc::clone(&calls)));
        assert_eq!(
            (dev.device_type(), dev.queue_max_sizes()),
            (0xFFFF, &[16u16][..])
        );
        let mut cfg = [0u8; 2];
        dev.read_config(0, &mut cfg);
        assert_eq!(cfg, [7, 7]);
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 16)]).unwrap();
        let mut queue = Queue::new(16).unwrap();
        queue.set_ready(true);
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        dev.activate(Activation {
            mem,
            queues: vec![queue],
            acked_features: 1 << 32,
            interrupt: Interrupt::new(irq),
        })
        .unwrap();
        // No notification at all: the device's poll interval alone brings it to three.
        let start = std::time::Instant::now();
        while calls.load(Ordering::SeqCst) < 3 {
            assert!(start.elapsed() < Duration::from_secs(10), "not polled");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Then it waits on nothing and is processed only when notified.
        std::thread::sleep(Duration::from_millis(50));
        let settled = calls.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(calls.load(Ordering::SeqCst), settled);
        dev.queue_notify(0);
        while calls.load(Ordering::SeqCst) == settled {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the notification was lost"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        dev.reset();
    }
}
