//! The virtio-cuda device on our MMIO transport: an adapter from [`VirtioDevice`] to the device
//! model in `virtio_cuda::device`, served by a host executor.
//!
//! Requests are processed on a worker thread, not the event loop: a long kernel must not stall
//! the serial console or other devices. The worker polls the queue with guest notifications
//! suppressed while requests keep arriving (no VM exit per call) and re-enables them before it
//! sleeps (see docs/PROTOCOL.md §7).

use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{debug, warn};
use virtio_cuda::device::{
    config_space, drain_polling, CudaDevice, DEVICE_ID, FEATURES, QUEUE_SIZE_MAX,
};
use virtio_cuda::service::FrameService;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::{ActivateError, Activation, Interrupt, VirtioDevice};

/// How long the worker keeps polling an idle queue before it re-enables notifications.
const POLL_WINDOW: Duration = Duration::from_micros(50);

enum Msg {
    Kick,
    Stop,
}

struct Worker {
    tx: Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

/// The virtio-cuda device.
pub struct VirtioCuda<S: FrameService + 'static> {
    model: Arc<Mutex<CudaDevice<S>>>,
    config: [u8; 16],
    worker: Option<Worker>,
}

impl<S: FrameService + 'static> VirtioCuda<S> {
    pub fn new(service: S) -> Self {
        Self {
            model: Arc::new(Mutex::new(CudaDevice::new(service))),
            config: config_space(),
            worker: None,
        }
    }

    fn stop_worker(&mut self) {
        if let Some(mut w) = self.worker.take() {
            let _ = w.tx.send(Msg::Stop);
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

fn lock<S: FrameService>(m: &Mutex<CudaDevice<S>>) -> std::sync::MutexGuard<'_, CudaDevice<S>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Processes the queue until it stays empty for [`POLL_WINDOW`].
fn drain<S: FrameService>(
    model: &Mutex<CudaDevice<S>>,
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    interrupt: &Interrupt,
) {
    drain_polling(model, mem, queue, POLL_WINDOW, || {
        if let Err(e) = interrupt.signal_used_queue() {
            warn!("virtio-cuda: interrupt failed: {e}");
        }
    });
}

fn run_worker<S: FrameService>(
    model: Arc<Mutex<CudaDevice<S>>>,
    mem: GuestMemoryMmap,
    mut queue: Queue,
    interrupt: Interrupt,
    rx: Receiver<Msg>,
) {
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(Msg::Kick) => drain(&model, &mem, &mut queue, &interrupt),
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

impl<S: FrameService + 'static> VirtioDevice for VirtioCuda<S> {
    fn device_type(&self) -> u32 {
        DEVICE_ID
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE_MAX]
    }

    fn device_features(&self) -> u64 {
        FEATURES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        if let Some(src) = start
            .checked_add(data.len())
            .and_then(|end| self.config.get(start..end))
        {
            data.copy_from_slice(src);
        }
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        debug!("virtio-cuda: ignoring write to read-only config at {offset:#x}");
    }

    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        if a.queues.len() != 1 {
            return Err(ActivateError::QueueCount {
                expected: 1,
                got: a.queues.len(),
            });
        }
        let Some(queue) = a.queues.into_iter().next() else {
            return Err(ActivateError::QueueCount {
                expected: 1,
                got: 0,
            });
        };
        if !queue.ready() {
            return Err(ActivateError::QueueNotReady(0));
        }
        self.stop_worker();
        let (tx, rx) = channel();
        let model = Arc::clone(&self.model);
        let (mem, interrupt) = (a.mem, a.interrupt);
        let thread = std::thread::Builder::new()
            .name("virtio-cuda".into())
            .spawn(move || run_worker(model, mem, queue, interrupt, rx))
            .map_err(|e| ActivateError::Device(format!("cannot start the worker: {e}")))?;
        self.worker = Some(Worker {
            tx,
            thread: Some(thread),
        });
        Ok(())
    }

    fn queue_notify(&mut self, index: usize) {
        if index != 0 {
            return;
        }
        if let Some(w) = &self.worker {
            let _ = w.tx.send(Msg::Kick);
        }
    }

    fn reset(&mut self) {
        self.stop_worker();
        lock(&self.model).reset();
    }
}

impl<S: FrameService + 'static> Drop for VirtioCuda<S> {
    fn drop(&mut self) {
        self.stop_worker();
    }
}
