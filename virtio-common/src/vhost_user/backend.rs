//! The vhost-user backend state machine and its queue workers, generic over the device
//! ([`VhostUserDevice`], a [`QueueDevice`] plus the requests only vhost-user has: virtio-cuda's
//! `CudaDevice`, virtio-gpu's `VirtioGpu`).
//!
//! Each frontend (one VM) is served on its own thread with its own device instance. The
//! connection thread handles messages (features, memory table, vring setup, config space); once
//! a queue is fully configured, started (kick descriptor received) and enabled, a worker thread
//! of its own owns the [`Queue`] and drives the device: kick →
//! [`QueueDevice::process_queue`] → call. While requests keep arriving the worker polls the ring
//! with notifications suppressed for a poll window ([`POLL_WINDOW`] by default) before it
//! re-enables them and sleeps, so a busy guest does not kick per request; a device waiting on
//! work of its own ([`QueueDevice::poll_interval`]) is processed again after that interval. Any vring or memory
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
use crate::device::QueueDevice;

/// How long the worker keeps polling an idle ring before it re-enables notifications and sleeps,
/// by default.
pub const POLL_WINDOW: Duration = Duration::from_micros(50);

/// `VIRTIO_RING_F_EVENT_IDX`.
const F_EVENT_IDX: u64 = 1 << 29;

/// Feature bits a frontend may set without our offering them, because it implements them
/// itself: `VIRTIO_F_RING_RESET` (QEMU's vhost-user-gpu passes the guest's features through
/// unfiltered; a queue reset reaches us as a ring stop and restart).
const FRONTEND_FEATURES: u64 = 1 << 40;

/// Protocol features we offer: reply-acks, the backend-request channel (UML allocates vring
/// interrupts only with it), config space access, and GET_QUEUE_NUM.
const PROTOCOL_FEATURES: u64 = pf::MQ | pf::REPLY_ACK | pf::BACKEND_REQ | pf::CONFIG;

/// A [`QueueDevice`] served over vhost-user, with the requests only this transport has. One
/// instance per frontend connection.
pub trait VhostUserDevice: QueueDevice {
    /// A request the generic backend does not know (such as `VHOST_USER_GPU_SET_SOCKET`),
    /// with its payload and descriptors. Answered with a reply-ack when the frontend asked.
    fn device_request(
        &mut self,
        code: u32,
        payload: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<(), VhostUserError> {
        let _ = (payload, fds);
        Err(VhostUserError::Unsupported(code))
    }
}

type Device<D> = Arc<Mutex<D>>;

fn lock<D>(d: &Mutex<D>) -> MutexGuard<'_, D> {
    d.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes the device of each new frontend connection.
type Factory<D> = dyn Fn() -> Result<D, String> + Send + Sync;

/// A device served over vhost-user. Each frontend connection (one VM) gets its own device
/// instance from the factory (for virtio-cuda: over a clone of the service, so guests never
/// share sessions).
pub struct VhostUserBackend<D: VhostUserDevice> {
    factory: Arc<Factory<D>>,
    poll_window: Duration,
}

impl<D: VhostUserDevice> VhostUserBackend<D> {
    /// Any device: `factory` makes one per frontend connection (an error refuses the
    /// connection).
    pub fn with_factory(factory: impl Fn() -> Result<D, String> + Send + Sync + 'static) -> Self {
        Self {
            factory: Arc::new(factory),
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
                factory: Arc::clone(&self.factory),
                poll_window: self.poll_window,
            };
            let spawned = std::thread::Builder::new()
                .name("vhost-user".into())
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
    /// state (sessions, resources) is dropped afterwards.
    pub fn serve_connection(&self, stream: UnixStream) -> Result<(), VhostUserError> {
        let device = (self.factory)().map_err(VhostUserError::Device)?;
        let device = Arc::new(Mutex::new(device));
        let mut conn = Connection::new(Arc::clone(&device), Channel::new(stream), self.poll_window);
        let result = conn.run();
        conn.shutdown();
        lock(&device).reset();
        result
    }
}

/// A queue's configuration as the frontend set it.
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

struct Connection<D: VhostUserDevice> {
    device: Device<D>,
    channel: Channel,
    poll_window: Duration,
    /// The device's constants, read once.
    offered: u64,
    num_queues: usize,
    max_queue_size: u16,
    name: &'static str,
    features: u64,
    protocol: u64,
    regions: Vec<MemRegion>,
    mem: Option<GuestMemoryMmap>,
    vrings: Vec<Vring>,
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

impl<D: VhostUserDevice> Connection<D> {
    fn new(device: Device<D>, channel: Channel, poll_window: Duration) -> Self {
        let (offered, num_queues, max_queue_size, name) = {
            let d = lock(&device);
            (d.features(), d.num_queues(), d.max_queue_size(), d.name())
        };
        Self {
            device,
            channel,
            poll_window,
            offered,
            num_queues,
            max_queue_size,
            name,
            features: 0,
            protocol: 0,
            regions: Vec::new(),
            mem: None,
            vrings: (0..num_queues).map(|_| Vring::default()).collect(),
            backend_req: None,
        }
    }

    fn vring(&mut self, index: u32) -> Result<&mut Vring, VhostUserError> {
        self.vrings
            .get_mut(index as usize)
            .ok_or(VhostUserError::BadQueue(index))
    }

    fn run(&mut self) -> Result<(), VhostUserError> {
        while let Some(msg) = self.channel.recv()? {
            let header = msg.header;
            let req = Request::from_u32(header.request);
            debug!(request = ?req, code = header.request, size = header.size, "vhost-user message");
            let result = match req {
                Some(r) => self.handle(r, msg),
                None => lock(&self.device)
                    .device_request(header.request, &msg.payload, msg.fds)
                    .map(|()| None),
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
                (self.offered | m::F_PROTOCOL_FEATURES)
                    .to_le_bytes()
                    .to_vec(),
            )),
            Request::SetFeatures => {
                no_fds(&msg)?;
                let v = m::u64_payload(p)?;
                if v & !(self.offered | m::F_PROTOCOL_FEATURES | FRONTEND_FEATURES) != 0 {
                    return Err(VhostUserError::BadValue("features", v));
                }
                self.features = v & !FRONTEND_FEATURES;
                self.restart_workers()?;
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
                self.vring(s.index)?;
                if s.num == 0 || s.num > u32::from(self.max_queue_size) || !s.num.is_power_of_two()
                {
                    return Err(VhostUserError::BadValue("queue size", u64::from(s.num)));
                }
                self.stop_worker(s.index);
                self.vring(s.index)?.size = s.num as u16;
                self.try_start(s.index)?;
                Ok(None)
            }
            Request::SetVringAddr => {
                no_fds(&msg)?;
                let a = VringAddr::decode(p)?;
                self.vring(a.index)?;
                self.stop_worker(a.index);
                let v = self.vring(a.index)?;
                v.addr = Some(a);
                v.next_used = None;
                self.try_start(a.index)?;
                Ok(None)
            }
            Request::SetVringBase => {
                no_fds(&msg)?;
                let s = VringState::decode(p)?;
                self.vring(s.index)?;
                let base = u16::try_from(s.num)
                    .map_err(|_| VhostUserError::BadValue("vring base", u64::from(s.num)))?;
                self.stop_worker(s.index);
                let v = self.vring(s.index)?;
                v.next_avail = base;
                v.next_used = None;
                self.try_start(s.index)?;
                Ok(None)
            }
            Request::GetVringBase => {
                let s = VringState::decode(p)?;
                self.vring(s.index)?;
                self.stop_worker(s.index);
                let v = self.vring(s.index)?;
                v.started = false;
                v.next_used = None;
                let reply = VringState {
                    index: s.index,
                    num: u32::from(v.next_avail),
                };
                // Stopping a ring ends the device's life as the guest knew it.
                lock(&self.device).reset();
                Ok(Some(reply.encode().to_vec()))
            }
            Request::SetVringKick | Request::SetVringCall | Request::SetVringErr => {
                let v = VringFd::decode(p)?;
                self.vring(v.index)?;
                let mut fds = msg.fds;
                let expected = usize::from(!v.no_fd);
                if fds.len() != expected {
                    return Err(VhostUserError::FdCount {
                        expected,
                        got: fds.len(),
                    });
                }
                let fd = fds.pop();
                self.stop_worker(v.index);
                let ring = self.vring(v.index)?;
                match req {
                    Request::SetVringKick => {
                        ring.kick = fd.map(|f| Arc::new(File::from(f)));
                        ring.started = true;
                    }
                    Request::SetVringCall => {
                        ring.call = fd.map(|f| Arc::new(File::from(f)));
                    }
                    _ => ring.err = fd,
                }
                self.try_start(v.index)?;
                Ok(None)
            }
            Request::SetVringEnable => {
                no_fds(&msg)?;
                let s = VringState::decode(p)?;
                self.vring(s.index)?;
                self.stop_worker(s.index);
                self.vring(s.index)?.enabled = s.num != 0;
                self.try_start(s.index)?;
                Ok(None)
            }
            Request::GetQueueNum => Ok(Some((self.num_queues as u64).to_le_bytes().to_vec())),
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
                let mut payload = vec![0u8; c.size as usize];
                lock(&self.device).read_config(c.offset, &mut payload);
                Ok(Some(ConfigMsg { payload, ..c }.encode()))
            }
            Request::SetConfig => {
                no_fds(&msg)?;
                let c = ConfigMsg::decode(p)?;
                lock(&self.device)
                    .write_config(c.offset, &c.payload)
                    .map_err(|_| VhostUserError::Unsupported(Request::SetConfig as u32))?;
                Ok(None)
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
        self.stop_workers();
        info!(
            regions = regions.len(),
            bytes = regions.iter().map(|r| r.memory_size).sum::<u64>(),
            "guest memory mapped"
        );
        self.regions = regions;
        self.mem = Some(mem);
        self.try_start_all()
    }

    fn translate(&self, uva: u64) -> Result<GuestAddress, VhostUserError> {
        self.regions
            .iter()
            .find_map(|r| r.translate(uva))
            .map(GuestAddress)
            .ok_or(VhostUserError::BadRingAddress(uva))
    }

    fn restart_workers(&mut self) -> Result<(), VhostUserError> {
        for i in 0..self.vrings.len() {
            if self.vrings[i].worker.is_some() {
                self.stop_worker(i as u32);
                self.try_start(i as u32)?;
            }
        }
        Ok(())
    }

    fn try_start_all(&mut self) -> Result<(), VhostUserError> {
        for i in 0..self.vrings.len() {
            self.try_start(i as u32)?;
        }
        Ok(())
    }

    /// Starts queue `index`'s worker if the ring is fully configured, started and enabled. A
    /// ring that the frontend configured wrongly (addresses outside its memory) is an error for
    /// the request that completed the configuration; the worker then stays stopped.
    fn try_start(&mut self, index: u32) -> Result<(), VhostUserError> {
        // Without the protocol-feature extension a ring is enabled as soon as it starts.
        let implicit_enable = self.features & m::F_PROTOCOL_FEATURES == 0;
        let Some(v) = self.vrings.get(index as usize) else {
            return Err(VhostUserError::BadQueue(index));
        };
        let enabled = v.enabled || implicit_enable;
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
            index: index as usize,
            mem: mem.clone(),
            kick: v.kick.clone(),
            call: v.call.clone(),
            stop: Arc::clone(&stop),
            poll_window: self.poll_window,
        };
        let thread = std::thread::Builder::new()
            .name(format!("vhost-{}-vq{index}", self.name))
            .spawn(move || ctx.run(q))
            .map_err(VhostUserError::Io)?;
        debug!(
            queue = index,
            size = v.size,
            next_avail = v.next_avail,
            "queue started"
        );
        if let Some(v) = self.vrings.get_mut(index as usize) {
            v.worker = Some(Worker { stop, thread });
        }
        Ok(())
    }

    /// Stops queue `index`'s worker and keeps the ring position it reached.
    fn stop_worker(&mut self, index: u32) {
        let Some(v) = self.vrings.get_mut(index as usize) else {
            return;
        };
        let Some(w) = v.worker.take() else {
            return;
        };
        let _ = (&*w.stop).write_all(&1u64.to_le_bytes());
        match w.thread.join() {
            Ok(q) => {
                v.next_avail = q.next_avail();
                v.next_used = Some(q.next_used());
            }
            Err(_) => warn!(queue = index, "queue worker panicked"),
        }
    }

    fn stop_workers(&mut self) {
        for i in 0..self.vrings.len() {
            self.stop_worker(i as u32);
        }
    }

    fn shutdown(&mut self) {
        self.stop_workers();
        for v in &mut self.vrings {
            *v = Vring::default();
        }
        self.mem = None;
        self.regions.clear();
        self.backend_req = None;
    }
}

fn header_code(r: Request) -> u32 {
    r as u32
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

/// What a queue's worker thread needs.
struct WorkerCtx<D: VhostUserDevice> {
    device: Device<D>,
    index: usize,
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

impl<D: VhostUserDevice> WorkerCtx<D> {
    fn run(self, mut q: Queue) -> Queue {
        loop {
            if !self.drain(&mut q) {
                // The ring is unusable until the frontend reconfigures it: just wait for stop.
                while !matches!(self.wait(None), Wake::Stop) {}
                return q;
            }
            // Without a kick descriptor the frontend expects us to poll the ring; a device
            // waiting on work of its own (a GPU's fences) asks to be called again in a while.
            let pending = lock(&self.device)
                .poll_interval(self.index)
                .map(|d| d.as_millis().clamp(1, i32::MAX as u128) as i32);
            let timeout = if self.kick.is_none() {
                Some(1)
            } else {
                pending
            };
            if let Wake::Stop = self.wait(timeout) {
                return q;
            }
        }
    }

    /// Processes the ring until it stays empty for the poll window, then re-enables
    /// notifications. Returns false if the ring became unusable.
    fn drain(&self, q: &mut Queue) -> bool {
        crate::queue::drain_polling_with(
            &self.mem,
            q,
            self.poll_window,
            |mem, q| lock(&self.device).process_queue(self.index, mem, q),
            || self.signal(),
        )
    }

    /// Interrupts the driver (an eventfd or, with UML, a pipe: both take an 8-byte write).
    fn signal(&self) {
        if let Some(call) = &self.call {
            match (&**call).write(&1u64.to_le_bytes()) {
                Ok(_) => {}
                // A full pipe already holds pending interrupts.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => warn!(queue = self.index, "interrupt failed: {e}"),
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
