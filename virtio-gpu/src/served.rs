//! The virtio-gpu device as every transport serves it ([`QueueDevice`]): our VMM's virtio-mmio
//! transport and vhost-user (for QEMU's `vhost-user-gpu-pci`, [`crate::vhost_user`]).
//!
//! rutabaga_gfx and the display backends are not `Send`, so the model lives on a thread of its
//! own; the transports' queue workers hand it a queue to process and get the queue back. While
//! chains wait on fences (3D renderers) the control queue asks to be processed again every
//! [`FENCE_POLL`]. A reset makes a new model on the same thread and display.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{debug, warn};
use virtio_common::device::{copy_config, ConfigReadOnly, QueueDevice};
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

use crate::device::{
    ConfigSpace, GpuConfig, GpuDevice, CONFIG_SPACE_LEN, CONTROLQ, CURSORQ, DEVICE_ID, FEATURES,
    NUM_QUEUES, QUEUE_SIZE_MAX,
};
use crate::display::qemu::{lock, GpuSocket, QemuDisplay, SocketSlot};
use crate::display::{Display, DisplayError, DisplaySpec, Frame};

/// How often the control queue is processed while chains wait on fences.
pub const FENCE_POLL: Duration = Duration::from_millis(2);

/// One display kept across device resets (a reset makes a new [`GpuDevice`]; captures go on
/// numbering frames where they were).
struct SharedDisplay(Rc<RefCell<QemuDisplay>>);

impl Display for SharedDisplay {
    fn wants_frames(&self) -> bool {
        self.0.borrow().wants_frames()
    }

    fn present(&mut self, scanout: u32, frame: &Frame<'_>) -> Result<(), DisplayError> {
        self.0.borrow_mut().present(scanout, frame)
    }

    fn cursor(&mut self, scanout: u32, x: u32, y: u32, visible: bool) {
        self.0.borrow_mut().cursor(scanout, x, y, visible);
    }

    fn finish(&mut self) -> Result<(), DisplayError> {
        self.0.borrow_mut().finish()
    }
}

type Processed = (Queue, Result<bool, String>);

enum Msg {
    Process {
        index: usize,
        mem: GuestMemoryMmap,
        queue: Queue,
        done: Sender<Processed>,
    },
    Reset,
}

/// The virtio-gpu device, one per driver (a VM, a vhost-user frontend connection).
pub struct VirtioGpu {
    tx: Option<Sender<Msg>>,
    thread: Option<JoinHandle<()>>,
    config_space: ConfigSpace,
    socket: SocketSlot,
    /// Whether chains of the control queue wait on fences (set by the device thread).
    fences_pending: Arc<AtomicBool>,
}

impl VirtioGpu {
    /// Starts the device thread: the model with `config`'s scanouts, showing frames on
    /// `display` (and on QEMU's display once it passes its socket).
    pub fn new(config: GpuConfig, display: DisplaySpec) -> Result<Self, String> {
        let scanouts = config
            .scanouts
            .len()
            .clamp(1, crate::protocol::MAX_SCANOUTS);
        let config_space = ConfigSpace::new(scanouts as u32, 0);
        let socket: SocketSlot = Arc::new(Mutex::new(None));
        let fences_pending = Arc::new(AtomicBool::new(false));
        let (tx, rx) = channel();
        let (ready_tx, ready_rx) = channel();
        let (cs, slot) = (config_space.clone(), Arc::clone(&socket));
        let pending = Arc::clone(&fences_pending);
        let thread = std::thread::Builder::new()
            .name("virtio-gpu".into())
            .spawn(move || {
                let opened = display.open().map_err(|e| e.to_string()).and_then(|inner| {
                    let shared = Rc::new(RefCell::new(QemuDisplay::new(inner, slot)));
                    let dev = GpuDevice::with_config_space(
                        config.clone(),
                        Box::new(SharedDisplay(Rc::clone(&shared))),
                        cs.clone(),
                    )
                    .map_err(|e| e.to_string())?;
                    Ok((dev, shared))
                });
                match opened {
                    Ok((dev, shared)) => {
                        let _ = ready_tx.send(Ok(()));
                        run_device(dev, shared, config, cs, rx, &pending);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| format!("cannot start the device thread: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                tx: Some(tx),
                thread: Some(thread),
                config_space,
                socket,
                fences_pending,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(format!("virtio-gpu: {e}"))
            }
            Err(_) => {
                let _ = thread.join();
                Err("virtio-gpu: the device thread died while starting".into())
            }
        }
    }

    /// Whether QEMU has passed its display socket (and it is still usable).
    pub fn has_display_socket(&self) -> bool {
        lock(&self.socket).is_some()
    }

    /// Shows the guest on QEMU's display too, from the next frame on.
    pub fn set_display_socket(&self, socket: GpuSocket) {
        *lock(&self.socket) = Some(socket);
    }
}

fn run_device(
    mut dev: GpuDevice,
    display: Rc<RefCell<QemuDisplay>>,
    config: GpuConfig,
    cs: ConfigSpace,
    rx: Receiver<Msg>,
    fences_pending: &AtomicBool,
) {
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Process {
                index,
                mem,
                mut queue,
                done,
            } => {
                let r = if index == CURSORQ {
                    dev.process_cursorq(&mem, &mut queue)
                } else {
                    dev.process_controlq(&mem, &mut queue)
                };
                fences_pending.store(dev.has_pending_fences(), Ordering::Release);
                let _ = done.send((queue, r.map_err(|e| e.to_string())));
            }
            Msg::Reset => {
                debug!("virtio-gpu: reset");
                fences_pending.store(false, Ordering::Release);
                match GpuDevice::with_config_space(
                    config.clone(),
                    Box::new(SharedDisplay(Rc::clone(&display))),
                    cs.clone(),
                ) {
                    Ok(d) => dev = d,
                    Err(e) => warn!("virtio-gpu: cannot recreate the device on reset: {e}"),
                }
            }
        }
    }
    dev.finish();
}

impl QueueDevice for VirtioGpu {
    fn name(&self) -> &'static str {
        "gpu"
    }

    fn device_id(&self) -> u32 {
        DEVICE_ID
    }

    fn features(&self) -> u64 {
        FEATURES
    }

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> u16 {
        QUEUE_SIZE_MAX
    }

    fn read_config(&self, offset: u32, data: &mut [u8]) {
        let mut space = [0u8; CONFIG_SPACE_LEN];
        self.config_space.read(0, &mut space);
        copy_config(&space, offset, data);
    }

    fn write_config(&mut self, offset: u32, data: &[u8]) -> Result<(), ConfigReadOnly> {
        // QEMU writes the whole config space back (events_clear is the only writable field).
        let at = offset as usize;
        if at <= 4 && at + data.len() >= 8 {
            self.config_space.write(4, &data[4 - at..8 - at]);
        }
        Ok(())
    }

    fn process_queue(
        &mut self,
        index: usize,
        mem: &GuestMemoryMmap,
        queue: &mut Queue,
    ) -> Result<bool, String> {
        let tx = self.tx.as_ref().ok_or("the device thread is gone")?;
        let (done, result) = channel();
        tx.send(Msg::Process {
            index,
            mem: mem.clone(),
            queue: std::mem::take(queue),
            done,
        })
        .map_err(|_| "the device thread is gone".to_string())?;
        let (q, r) = result
            .recv()
            .map_err(|_| "the device thread died".to_string())?;
        *queue = q;
        r
    }

    fn poll_interval(&self, index: usize) -> Option<Duration> {
        (index == CONTROLQ && self.fences_pending.load(Ordering::Acquire)).then_some(FENCE_POLL)
    }

    fn reset(&mut self) {
        // A new model (on the same display) and no pending config events.
        self.config_space.write(4, &u32::MAX.to_le_bytes());
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Reset);
        }
    }
}

impl Drop for VirtioGpu {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
