//! The vhost-user backend state machine and its queue worker.
//!
//! Each frontend (one VM) is served on its own thread with its own device instance. The
//! connection thread handles messages (features, memory table, vring setup, config space); once
//! the request queue is fully configured, started (kick descriptor received) and enabled, a
//! worker thread owns the [`Queue`] and drives the device: kick →
//! [`CudaDevice::process_queue`] → call. While requests keep arriving the worker polls the ring
//! with notifications suppressed for a poll window ([`POLL_WINDOW`] by default) before it
//! re-enables them and sleeps, so a busy guest does not kick per request. Any vring or memory
//! change stops the worker first (it hands the queue back, keeping the ring position) and
//! restarts it after.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{debug, info, warn};
use virtio_queue::{Queue, QueueT};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

use super::message::{
    self as m, protocol_features as pf, ConfigMsg, MemRegion, Request, VringAddr, VringFd,
    VringState,
};
use super::socket::{Channel, Message};
use super::VhostUserError;
use crate::device::{config_space, CudaDevice, FEATURES, NUM_QUEUES, QUEUE_SIZE_MAX};
use crate::service::FrameService;

/// How long the worker keeps polling an idle ring before it re-enables notifications and sleeps,
/// by default.
pub const POLL_WINDOW: Duration = Duration::from_micros(50);

/// `VIRTIO_RING_F_EVENT_IDX`.
const F_EVENT_IDX: u64 = 1 << 29;

/// Protocol features we offer: reply-acks, the backend-request channel (UML allocates vring
/// interrupts only with it), config space access, and GET_QUEUE_NUM.
const PROTOCOL_FEATURES: u64 = pf::MQ | pf::REPLY_ACK | pf::BACKEND_REQ | pf::CONFIG;

type Device<S> = Arc<Mutex<CudaDevice<S>>>;

fn lock<S: FrameService>(d: &Mutex<CudaDevice<S>>) -> MutexGuard<'_, CudaDevice<S>> {
    d.lock().unwrap_or_else(|e| e.into_inner())
}

/// The virtio-cuda device served over vhost-user. Each frontend connection (one VM) gets its
/// own device instance over a clone of the service, so guests never share sessions.
pub struct VhostUserBackend<S: FrameService + Clone + 'static> {
    service: S,
    poll_window: Duration,
}

impl<S: FrameService + Clone + 'static> VhostUserBackend<S> {
    pub fn new(service: S) -> Self {
        Self {
            service,
            poll_window: POLL_WINDOW,
        }
    }

    /// How long the queue worker polls an idle ring before sleeping (0: sleep at once). Longer
    /// windows save the guest's kicks and the wake-up latency while it keeps sending, at the
    /// price of a busy host thread.
    pub fn with_poll_window(mut self, window: Duration) -> Self {
        self.poll_window = window;
        self
    }

    /// Serves frontends from `listener`, each on its own thread, forever. Only accept failures
    /// end it.
    pub fn serve(&self, listener: &UnixListener) -> Result<(), VhostUserError> {
        loop {
            let (stream, _) = listener.accept().map_err(VhostUserError::Io)?;
            let backend = Self {
                service: self.service.clone(),
                poll_window: self.poll_window,
            };
            let spawned = std::thread::Builder::new()
                .name("vcuda-vhost-user".into())
                .spawn(move || {
                    info!("vhost-user frontend connected");
                    match backend.serve_connection(stream) {
                        Ok(()) => info!("vhost-user frontend disconnected"),
                        Err(e) => warn!("vhost-user connection ended: {e}"),
                    }
                });
            if let Err(e) = spawned {
                warn!("cannot serve a vhost-user frontend: {e}");
            }
        }
    }

    /// Serves one frontend on this thread until it disconnects, with a fresh device; its guest
    /// sessions are closed afterwards.
    pub fn serve_connection(&self, stream: UnixStream) -> Result<(), VhostUserError> {
        let device = Arc::new(Mutex::new(CudaDevice::new(self.service.clone())));
        let mut conn = Connection::new(Arc::clone(&device), Channel::new(stream), self.poll_window);
        let result = conn.run();
        conn.shutdown();
        lock(&device).reset();
        result
    }
}

/// The request queue's configuration as the frontend set it.
#[derive(Default)]
struct Vring {
    size: u16,
    addr: Option<VringAddr>,
    next_avail: u16,
    next_used: Option<u16>,
    kick: Option<Arc<File>>,
    call: Option<Arc<File>>,
    err: Option<OwnedFd>,
    /// A kick descriptor (or "no fd") was received and GET_VRING_BASE has not stopped it.
    started: bool,
    enabled: bool,
    worker: Option<Worker>,
}

struct Worker {
    stop: Arc<File>,
    thread: JoinHandle<Queue>,
}

struct Connection<S: FrameService + 'static> {
    device: Device<S>,
    channel: Channel,
    poll_window: Duration,
    features: u64,
    protocol: u64,
    regions: Vec<MemRegion>,
    mem: Option<GuestMemoryMmap>,
    vring: Vring,
    backend_req: Option<OwnedFd>,
}

/// Requests whose reply is their own payload (no reply-ack).
fn has_own_reply(r: Request) -> bool {
    matches!(
        r,
        Request::GetFeatures
            | Request::GetProtocolFeatures
            | Request::GetVringBase
            | Request::GetQueueNum
            | Request::GetConfig
            | Request::GetMaxMemSlots
    )
}

impl<S: FrameService + 'static> Connection<S> {
    fn new(device: Device<S>, channel: Channel, poll_window: Duration) -> Self {
        Self {
            device,
            channel,
            poll_window,
            features: 0,
            protocol: 0,
            regions: Vec::new(),
            mem: None,
            vring: Vring::default(),
            backend_req: None,
        }
    }

    fn run(&mut self) -> Result<(), VhostUserError> {
        while let Some(msg) = self.channel.recv()? {
            let header = msg.header;
            let req = Request::from_u32(header.request);
            debug!(request = ?req, code = header.request, size = header.size, "vhost-user message");
            let result = match req {
                Some(r) => self.handle(r, msg),
                None => Err(VhostUserError::Unsupported(header.request)),
            };
            match (req, result) {
                (Some(r), Ok(Some(reply))) if has_own_reply(r) => {
                    self.channel.send(header.reply(reply.len()), &reply, &[])?;
                }
                (Some(r), Err(e)) if has_own_reply(r) => {
                    // The frontend waits for this reply and cannot be told of the failure.
                    return Err(e);
                }
                (_, result) => {
                    let status = match &result {
                        Ok(_) => 0u64,
                        Err(e) => {
                            warn!(request = header.request, "vhost-user request failed: {e}");
                            1
                        }
                    };
                    if header.need_reply() && self.protocol & pf::REPLY_ACK != 0 {
                        self.channel
                            .send(header.reply(8), &status.to_le_bytes(), &[])?;
                    }
                }
            }
        }
        Ok(())
    }

    fn handle(&mut self, req: Request, msg: Message) -> Result<Option<Vec<u8>>, VhostUserError> {
        let p = &msg.payload[..];
        let no_fds = |msg: &Message| -> Result<(), VhostUserError> {
            if msg.fds.is_empty() {
                Ok(())
            } else {
                Err(VhostUserError::FdCount {
                    expected: 0,
                    got: msg.fds.len(),
                })
            }
        };
        match req {
            Request::GetFeatures => Ok(Some(
                (FEATURES | m::F_PROTOCOL_FEATURES).to_le_bytes().to_vec(),
            )),
            Request::SetFeatures => {
                no_fds(&msg)?;
                let v = m::u64_payload(p)?;
                if v & !(FEATURES | m::F_PROTOCOL_FEATURES) != 0 {
                    return Err(VhostUserError::BadValue("features", v));
                }
                self.features = v;
                self.restart_worker()?;
                Ok(None)
            }
            Request::GetProtocolFeatures => Ok(Some(PROTOCOL_FEATURES.to_le_bytes().to_vec())),
            Request::SetProtocolFeatures => {
                no_fds(&msg)?;
                let v = m::u64_payload(p)?;
                if v & !PROTOCOL_FEATURES != 0 {
                    return Err(VhostUserError::BadValue("protocol features", v));
                }
                self.protocol = v;
                Ok(None)
            }
            Request::SetOwner => Ok(None),
            Request::ResetOwner => {
                self.shutdown();
                lock(&self.device).reset();
                self.features = 0;
                self.protocol = 0;
                Ok(None)
            }
            Request::SetMemTable => self.set_mem_table(msg).map(|_| None),
            Request::SetVringNum => {
                no_fds(&msg)?;
                let s = VringState::decode(p)?;
                check_index(s.index)?;
                if s.num == 0 || s.num > u32::from(QUEUE_SIZE_MAX) || !s.num.is_power_of_two() {
                    return Err(VhostUserError::BadValue("queue size", u64::from(s.num)));
                }
                self.stop_worker();
                self.vring.size = s.num as u16;
                self.try_start()?;
                Ok(None)
            }
            Request::SetVringAddr => {
                no_fds(&msg)?;
                let a = VringAddr::decode(p)?;
                check_index(a.index)?;
                self.stop_worker();
                self.vring.addr = Some(a);
                self.vring.next_used = None;
                self.try_start()?;
                Ok(None)
            }
            Request::SetVringBase => {
                no_fds(&msg)?;
                let s = VringState::decode(p)?;
                check_index(s.index)?;
                let base = u16::try_from(s.num)
                    .map_err(|_| VhostUserError::BadValue("vring base", u64::from(s.num)))?;
                self.stop_worker();
                self.vring.next_avail = base;
                self.vring.next_used = None;
                self.try_start()?;
                Ok(None)
            }
            Request::GetVringBase => {
                let s = VringState::decode(p)?;
                check_index(s.index)?;
                self.stop_worker();
                self.vring.started = false;
                // Stopping the ring ends the device's life as the guest knew it.
                lock(&self.device).reset();
                let reply = VringState {
                    index: s.index,
                    num: u32::from(self.vring.next_avail),
                };
                self.vring.next_used = None;
                Ok(Some(reply.encode().to_vec()))
            }
            Request::SetVringKick | Request::SetVringCall | Request::SetVringErr => {
                let v = VringFd::decode(p)?;
                check_index(v.index)?;
                let mut fds = msg.fds;
                let expected = usize::from(!v.no_fd);
                if fds.len() != expected {
                    return Err(VhostUserError::FdCount {
                        expected,
                        got: fds.len(),
                    });
                }
                let fd = fds.pop();
                self.stop_worker();
                match req {
                    Request::SetVringKick => {
                        self.vring.kick = fd.map(|f| Arc::new(File::from(f)));
                        self.vring.started = true;
                    }
                    Request::SetVringCall => {
                        self.vring.call = fd.map(|f| Arc::new(File::from(f)));
                    }
                    _ => self.vring.err = fd,
                }
                self.try_start()?;
                Ok(None)
            }
            Request::SetVringEnable => {
                no_fds(&msg)?;
                let s = VringState::decode(p)?;
                check_index(s.index)?;
                self.stop_worker();
                self.vring.enabled = s.num != 0;
                self.try_start()?;
                Ok(None)
            }
            Request::GetQueueNum => Ok(Some((NUM_QUEUES as u64).to_le_bytes().to_vec())),
            Request::SetBackendReqFd => {
                let mut fds = msg.fds;
                if fds.len() != 1 {
                    return Err(VhostUserError::FdCount {
                        expected: 1,
                        got: fds.len(),
                    });
                }
                // Kept open for the life of the connection: UML drops the device when it closes.
                self.backend_req = fds.pop();
                Ok(None)
            }
            Request::GetConfig => {
                let c = ConfigMsg::decode(p)?;
                let space = config_space();
                let mut payload = vec![0u8; c.size as usize];
                for (i, b) in payload.iter_mut().enumerate() {
                    if let Some(v) = (c.offset as usize)
                        .checked_add(i)
                        .and_then(|at| space.get(at))
                    {
                        *b = *v;
                    }
                }
                Ok(Some(ConfigMsg { payload, ..c }.encode()))
            }
            Request::SetConfig => {
                ConfigMsg::decode(p)?;
                Err(VhostUserError::Unsupported(header_code(req)))
            }
            _ => Err(VhostUserError::Unsupported(header_code(req))),
        }
    }

    fn set_mem_table(&mut self, msg: Message) -> Result<(), VhostUserError> {
        let mut regions = m::decode_mem_table(&msg.payload)?;
        if msg.fds.len() != regions.len() {
            return Err(VhostUserError::FdCount {
                expected: regions.len(),
                got: msg.fds.len(),
            });
        }
        let mut mapped = Vec::with_capacity(regions.len());
        for (r, fd) in regions.iter().zip(msg.fds) {
            let size = usize::try_from(r.memory_size)
                .map_err(|_| VhostUserError::BadRegion(r.guest_phys_addr, r.memory_size))?;
            let file = File::from(fd);
            // Pages past the end of a shared file mapping raise SIGBUS when touched: the region
            // must lie inside a regular file.
            let meta = file.metadata().map_err(VhostUserError::Io)?;
            if !meta.is_file() || r.mmap_offset + r.memory_size > meta.len() {
                return Err(VhostUserError::BadRegion(r.guest_phys_addr, r.memory_size));
            }
            let file = FileOffset::new(file, r.mmap_offset);
            let region = MmapRegion::from_file(file, size)
                .map_err(|e| VhostUserError::Mmap(e.to_string()))?;
            let region = GuestRegionMmap::new(region, GuestAddress(r.guest_phys_addr))
                .ok_or(VhostUserError::BadRegion(r.guest_phys_addr, r.memory_size))?;
            mapped.push(region);
        }
        mapped.sort_by_key(vm_memory::GuestMemoryRegion::start_addr);
        let mem = GuestMemoryMmap::from_regions(mapped)
            .map_err(|e| VhostUserError::Mmap(e.to_string()))?;
        regions.sort_by_key(|r| r.guest_phys_addr);
        self.stop_worker();
        info!(
            regions = regions.len(),
            bytes = regions.iter().map(|r| r.memory_size).sum::<u64>(),
            "guest memory mapped"
        );
        self.regions = regions;
        self.mem = Some(mem);
        self.try_start()
    }

    fn translate(&self, uva: u64) -> Result<GuestAddress, VhostUserError> {
        self.regions
            .iter()
            .find_map(|r| r.translate(uva))
            .map(GuestAddress)
            .ok_or(VhostUserError::BadRingAddress(uva))
    }

    fn restart_worker(&mut self) -> Result<(), VhostUserError> {
        if self.vring.worker.is_some() {
            self.stop_worker();
            self.try_start()?;
        }
        Ok(())
    }

    /// Starts the worker if the ring is fully configured, started and enabled. A ring that the
    /// frontend configured wrongly (addresses outside its memory) is an error for the request
    /// that completed the configuration; the worker then stays stopped.
    fn try_start(&mut self) -> Result<(), VhostUserError> {
        let v = &self.vring;
        // Without the protocol-feature extension a ring is enabled as soon as it starts.
        let enabled = v.enabled || self.features & m::F_PROTOCOL_FEATURES == 0;
        let (Some(mem), Some(addr)) = (&self.mem, v.addr) else {
            return Ok(());
        };
        if v.worker.is_some() || !v.started || !enabled || v.size == 0 {
            return Ok(());
        }
        let mut q = Queue::new(v.size).map_err(|e| VhostUserError::Queue(e.to_string()))?;
        let q_err = |e: virtio_queue::Error| VhostUserError::Queue(e.to_string());
        q.try_set_desc_table_address(self.translate(addr.desc)?)
            .map_err(q_err)?;
        q.try_set_avail_ring_address(self.translate(addr.avail)?)
            .map_err(q_err)?;
        q.try_set_used_ring_address(self.translate(addr.used)?)
            .map_err(q_err)?;
        q.set_event_idx(self.features & F_EVENT_IDX != 0);
        q.set_ready(true);
        if !q.is_valid(mem) {
            return Err(VhostUserError::Queue(
                "rings do not fit in guest memory".into(),
            ));
        }
        q.set_next_avail(v.next_avail);
        let next_used = match v.next_used {
            Some(u) => u,
            None => q.used_idx(mem, Ordering::Acquire).map_err(q_err)?.0,
        };
        q.set_next_used(next_used);
        let stop = Arc::new(eventfd().map_err(VhostUserError::Io)?);
        let ctx = WorkerCtx {
            device: Arc::clone(&self.device),
            mem: mem.clone(),
            kick: v.kick.clone(),
            call: v.call.clone(),
            stop: Arc::clone(&stop),
            poll_window: self.poll_window,
        };
        let thread = std::thread::Builder::new()
            .name("vcuda-vhost-vq0".into())
            .spawn(move || ctx.run(q))
            .map_err(VhostUserError::Io)?;
        debug!(
            size = v.size,
            next_avail = v.next_avail,
            "request queue started"
        );
        self.vring.worker = Some(Worker { stop, thread });
        Ok(())
    }

    /// Stops the worker and keeps the ring position it reached.
    fn stop_worker(&mut self) {
        let Some(w) = self.vring.worker.take() else {
            return;
        };
        let _ = (&*w.stop).write_all(&1u64.to_le_bytes());
        match w.thread.join() {
            Ok(q) => {
                self.vring.next_avail = q.next_avail();
                self.vring.next_used = Some(q.next_used());
            }
            Err(_) => warn!("request-queue worker panicked"),
        }
    }

    fn shutdown(&mut self) {
        self.stop_worker();
        self.vring = Vring::default();
        self.mem = None;
        self.regions.clear();
        self.backend_req = None;
    }
}

fn header_code(r: Request) -> u32 {
    r as u32
}

fn check_index(i: u32) -> Result<(), VhostUserError> {
    if (i as usize) < NUM_QUEUES {
        Ok(())
    } else {
        Err(VhostUserError::BadQueue(i))
    }
}

fn eventfd() -> std::io::Result<File> {
    // SAFETY: eventfd has no memory arguments; a valid descriptor is returned or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// What the worker thread needs.
struct WorkerCtx<S: FrameService + 'static> {
    device: Device<S>,
    mem: GuestMemoryMmap,
    kick: Option<Arc<File>>,
    call: Option<Arc<File>>,
    stop: Arc<File>,
    poll_window: Duration,
}

enum Wake {
    Kick,
    Stop,
    Timeout,
}

impl<S: FrameService + 'static> WorkerCtx<S> {
    fn run(self, mut q: Queue) -> Queue {
        loop {
            if !self.drain(&mut q) {
                // The ring is unusable until the frontend reconfigures it: just wait for stop.
                while !matches!(self.wait(None), Wake::Stop) {}
                return q;
            }
            // Without a kick descriptor the frontend expects us to poll the ring.
            let timeout = self.kick.is_none().then_some(1);
            if let Wake::Stop = self.wait(timeout) {
                return q;
            }
        }
    }

    /// Processes the ring until it stays empty for the poll window, then re-enables
    /// notifications. Returns false if the ring became unusable.
    fn drain(&self, q: &mut Queue) -> bool {
        crate::device::drain_polling(&self.device, &self.mem, q, self.poll_window, || {
            self.signal()
        })
    }

    /// Interrupts the driver (an eventfd or, with UML, a pipe: both take an 8-byte write).
    fn signal(&self) {
        if let Some(call) = &self.call {
            match (&**call).write(&1u64.to_le_bytes()) {
                Ok(_) => {}
                // A full pipe already holds pending interrupts.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => warn!("virtio-cuda: interrupt failed: {e}"),
            }
        }
    }

    /// Sleeps until a kick, a stop request, or `timeout_ms`.
    fn wait(&self, timeout_ms: Option<i32>) -> Wake {
        let mut fds = [
            libc::pollfd {
                fd: self.stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self
                    .kick
                    .as_ref()
                    .map(|k| k.as_fd().as_raw_fd())
                    .unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a live array of two pollfds (a negative fd is ignored by poll).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms.unwrap_or(-1)) };
        if n < 0 {
            return Wake::Timeout;
        }
        if fds[0].revents != 0 {
            return Wake::Stop;
        }
        if fds[1].revents & libc::POLLIN != 0 {
            if let Some(k) = &self.kick {
                let mut b = [0u8; 8];
                let _ = (&**k).read(&mut b);
            }
            return Wake::Kick;
        }
        if fds[1].revents != 0 {
            // The kick descriptor hung up or is invalid: fall back to polling slowly.
            std::thread::sleep(Duration::from_millis(1));
        }
        Wake::Timeout
    }
}
