//! The virtio-cuda device through our MMIO transport, driven by a Rust test driver that plays
//! the guest: register-level negotiation, a split ring in guest memory, requests with data
//! windows exactly as the guest kernel module builds them, and hostile chains.

use std::sync::Arc;
use std::time::{Duration, Instant};

use host_executor::client::{InProcess, InProcessConfig};
use host_executor::cpu::{CpuBackend, CpuConfig};
use host_executor::{Executor, ExecutorConfig};
use virtio_cuda::device::envelope::{Envelope, EnvelopeOp};
use virtio_cuda::device::CudaDevice;
use virtio_cuda::protocol::{self as p, Reader, ResponseHeader, Sink, Source, Status};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::devices::virtio::mmio::{reg, MmioTransport};
use vmm::devices::virtio::queued::Queued;
use vmm::devices::virtio::{status, Interrupt};
use vmm::devices::BusDevice;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const QSIZE: u16 = 16;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
/// Where the driver puts request frames, responses and data windows.
const REQ: u64 = 0x10_0000;
const RESP: u64 = 0x20_0000;
const DATA_IN: u64 = 0x30_0000;
const DATA_OUT: u64 = 0x40_0000;
const MEM: usize = 8 << 20;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

/// The PTX of the demo kernels (nvcc 13 output checked into the repository).
const DEMO_PTX: &str = include_str!("../../cli/src/demo/demo.ptx");

struct Guest {
    t: MmioTransport,
    mem: GuestMemoryMmap,
    irq: EventFd,
    avail_idx: u16,
    used_seen: u16,
    seq: u32,
    session: u64,
}

impl Guest {
    fn new() -> Self {
        let exec = Executor::new(
            Arc::new(CpuBackend::new(CpuConfig::default())),
            ExecutorConfig::default(),
        );
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let t = MmioTransport::new(
            Box::new(Queued::new(CudaDevice::new(exec))),
            mem.clone(),
            Interrupt::new(irq.try_clone().unwrap()),
        )
        .unwrap();
        Guest {
            t,
            mem,
            irq,
            avail_idx: 0,
            used_seen: 0,
            seq: 1,
            session: 7,
        }
    }

    fn r(&mut self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn w(&mut self, off: u64, v: u32) {
        self.t.write(off, &v.to_le_bytes());
    }

    /// What Linux's virtio_mmio + our driver do at probe.
    fn probe(&mut self) {
        assert_eq!(self.r(reg::MAGIC_VALUE), 0x7472_6976);
        assert_eq!(self.r(reg::VERSION), 2);
        assert_eq!(self.r(reg::DEVICE_ID), 0xC0DA);
        self.w(reg::STATUS, 0);
        self.w(reg::STATUS, status::ACKNOWLEDGE);
        self.w(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        self.w(reg::DEVICE_FEATURES_SEL, 1);
        assert_ne!(
            self.r(reg::DEVICE_FEATURES) & 1,
            0,
            "VIRTIO_F_VERSION_1 offered"
        );
        self.w(reg::DRIVER_FEATURES_SEL, 1);
        self.w(reg::DRIVER_FEATURES, 1);
        self.w(reg::DRIVER_FEATURES_SEL, 0);
        self.w(reg::DRIVER_FEATURES, 0);
        self.w(
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_ne!(self.r(reg::STATUS) & status::FEATURES_OK, 0);
        // Config space: protocol version 1.
        assert_eq!(self.r(reg::CONFIG), 1);
        self.w(reg::QUEUE_SEL, 0);
        assert!(self.r(reg::QUEUE_NUM_MAX) >= u32::from(QSIZE));
        self.w(reg::QUEUE_NUM, u32::from(QSIZE));
        self.w(reg::QUEUE_DESC_LOW, DESC as u32);
        self.w(reg::QUEUE_DESC_HIGH, 0);
        self.w(reg::QUEUE_DRIVER_LOW, AVAIL as u32);
        self.w(reg::QUEUE_DRIVER_HIGH, 0);
        self.w(reg::QUEUE_DEVICE_LOW, USED as u32);
        self.w(reg::QUEUE_DEVICE_HIGH, 0);
        self.w(reg::QUEUE_READY, 1);
        self.w(
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
        assert!(self.t.is_activated());
    }

    /// Posts one chain and waits for its completion; returns the used length.
    fn submit(&mut self, descs: &[(u64, u32, u16)]) -> u32 {
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let last = i + 1 == descs.len();
            let d = DESC + 16 * i as u64;
            self.mem.write_obj(addr, GuestAddress(d)).unwrap();
            self.mem.write_obj(len, GuestAddress(d + 8)).unwrap();
            let f = if last { flags } else { flags | F_NEXT };
            self.mem.write_obj(f, GuestAddress(d + 12)).unwrap();
            self.mem
                .write_obj(i as u16 + 1, GuestAddress(d + 14))
                .unwrap();
        }
        let slot = AVAIL + 4 + 2 * u64::from(self.avail_idx % QSIZE);
        self.mem.write_obj(0u16, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(AVAIL + 2))
            .unwrap();
        // The event loop calls this when the queue's ioeventfd fires.
        self.t.notify(0);
        let t0 = Instant::now();
        loop {
            let used: u16 = self.mem.read_obj(GuestAddress(USED + 2)).unwrap();
            if used != self.used_seen {
                let elem = USED + 4 + 8 * u64::from(self.used_seen % QSIZE);
                self.used_seen = used;
                return self.mem.read_obj(GuestAddress(elem + 4)).unwrap();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "device never completed"
            );
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// Sends a request frame (+ optional data windows); returns (status, body) for sync calls.
    fn call<C: p::Call>(&mut self, c: &C, data_in: &[u8], data_out: u32) -> (Status, Vec<u8>) {
        let mut req = Envelope {
            op: EnvelopeOp::Frame,
            session: self.session,
        }
        .encode()
        .to_vec();
        self.seq += 1;
        p::encode_call(self.seq, c, &mut req);
        self.mem.write_slice(&req, GuestAddress(REQ)).unwrap();
        let mut descs = vec![(REQ, req.len() as u32, 0)];
        if !data_in.is_empty() {
            self.mem
                .write_slice(data_in, GuestAddress(DATA_IN))
                .unwrap();
            descs.push((DATA_IN, data_in.len() as u32, 0));
        }
        if !C::ASYNC {
            descs.push((RESP, 4096, F_WRITE));
        }
        if data_out > 0 {
            descs.push((DATA_OUT, data_out, F_WRITE));
        }
        let len = self.submit(&descs);
        if C::ASYNC {
            assert_eq!(len, 0);
            return (Status::SUCCESS, Vec::new());
        }
        let mut resp = vec![0u8; 4096];
        self.mem.read_slice(&mut resp, GuestAddress(RESP)).unwrap();
        let h = ResponseHeader::get(&mut Reader::new(&resp)).unwrap();
        let body = resp[p::HEADER_LEN..p::HEADER_LEN + h.body_len as usize].to_vec();
        (h.status, body)
    }
}

#[test]
fn a_kernel_runs_through_the_mmio_transport_with_zero_copy_windows() {
    let mut g = Guest::new();
    g.probe();
    let (s, _) = g.call(
        &p::Hello {
            version: 1,
            pid: 1,
            client: "mmio-test".into(),
        },
        &[],
        0,
    );
    assert_eq!(s, Status::SUCCESS);
    let ctx = 0x1000;
    g.call(
        &p::CtxCreate {
            ctx,
            device: 0,
            flags: 0,
        },
        &[],
        0,
    );
    // The module image travels in the H2D data window.
    let image = DEMO_PTX.as_bytes();
    let load = p::ModuleLoad {
        ctx,
        module: 0x1001,
        image: Source::Shm {
            offset: 0,
            len: image.len() as u64,
        },
    };
    assert_eq!(g.call(&load, image, 0).0, Status::SUCCESS);
    let n = 1000usize;
    let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..n).map(|i| 0.5 * i as f32).collect();
    let mut ptrs = Vec::new();
    for _ in 0..3 {
        let (s, body) = g.call(
            &p::MemAlloc {
                ctx,
                size: 4 * n as u64,
            },
            &[],
            0,
        );
        assert_eq!(s, Status::SUCCESS);
        ptrs.push(p::decode_reply::<p::MemAlloc>(&body).unwrap().dptr);
    }
    for (dst, v) in [(ptrs[0], &a), (ptrs[1], &b)] {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let h2d = p::MemcpyHtoD {
            ctx,
            stream: 0,
            dst,
            src: Source::Shm {
                offset: 0,
                len: bytes.len() as u64,
            },
        };
        g.call(&h2d, &bytes, 0);
    }
    let (s, body) = g.call(
        &p::ModuleGetFunction {
            ctx,
            module: 0x1001,
            func: 0x1002,
            name: "vadd".into(),
        },
        &[],
        0,
    );
    assert_eq!(s, Status::SUCCESS);
    let info = p::decode_reply::<p::ModuleGetFunction>(&body).unwrap();
    assert_eq!(info.params.0.len(), 4);
    let mut params = Vec::new();
    for v in &ptrs {
        params.extend_from_slice(&v.to_le_bytes());
    }
    params.extend_from_slice(&(n as u32).to_le_bytes());
    g.call(
        &p::Launch {
            ctx,
            func: 0x1002,
            stream: 0,
            grid: [4, 1, 1],
            block: [256, 1, 1],
            shared_bytes: 0,
            flags: 0,
            params,
        },
        &[],
        0,
    );
    let d2h = p::MemcpyDtoH {
        ctx,
        stream: 0,
        src: ptrs[2],
        len: 4 * n as u64,
        dst: Sink::Shm {
            offset: 0,
            len: 4 * n as u64,
        },
    };
    let (s, body) = g.call(&d2h, &[], 4 * n as u32);
    assert_eq!(s, Status::SUCCESS);
    assert!(p::decode_reply::<p::MemcpyDtoH>(&body)
        .unwrap()
        .data
        .is_empty());
    let mut out = vec![0u8; 4 * n];
    g.mem.read_slice(&mut out, GuestAddress(DATA_OUT)).unwrap();
    for i in 0..n {
        let got = f32::from_le_bytes([out[4 * i], out[4 * i + 1], out[4 * i + 2], out[4 * i + 3]]);
        assert_eq!(got, a[i] + b[i], "element {i}");
    }
    // The device interrupted the driver.
    assert!(g.irq.read().unwrap() > 0);
    assert_ne!(g.r(reg::INTERRUPT_STATUS) & 1, 0);
}

#[test]
fn hostile_chains_do_not_disturb_the_device() {
    let mut g = Guest::new();
    g.probe();
    // A descriptor far outside guest RAM, then a frame whose header lies.
    assert_eq!(g.submit(&[(0x7000_0000, 64, 0), (RESP, 4096, F_WRITE)]), 0);
    g.mem.write_slice(&[0xFF; 64], GuestAddress(REQ)).unwrap();
    assert_eq!(g.submit(&[(REQ, 64, 0), (RESP, 4096, F_WRITE)]), 0);
    // A huge D2H request whose window is not there.
    let (s, _) = g.call(
        &p::Hello {
            version: 1,
            pid: 1,
            client: "hostile".into(),
        },
        &[],
        0,
    );
    assert_eq!(s, Status::SUCCESS);
    let (s, _) = g.call(
        &p::MemcpyDtoH {
            ctx: 0x1000,
            stream: 0,
            src: 0,
            len: 1 << 30,
            dst: Sink::Shm {
                offset: 0,
                len: 1 << 30,
            },
        },
        &[],
        0,
    );
    assert_ne!(s, Status::SUCCESS);
    // The device still serves.
    let (s, body) = g.call(&p::Init { flags: 0 }, &[], 0);
    assert_eq!(s, Status::SUCCESS);
    assert_eq!(p::decode_reply::<p::Init>(&body).unwrap().device_count, 1);
}

#[test]
fn the_device_can_use_an_out_of_process_executor() {
    let exec = InProcess::start_cpu(InProcessConfig::default()).unwrap();
    let svc = virtio_cuda::service::RemoteExecutor::new(exec.socket());
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let t = MmioTransport::new(
        Box::new(Queued::new(CudaDevice::new(svc))),
        mem.clone(),
        Interrupt::new(irq.try_clone().unwrap()),
    )
    .unwrap();
    let mut g = Guest {
        t,
        mem,
        irq,
        avail_idx: 0,
        used_seen: 0,
        seq: 1,
        session: 3,
    };
    g.probe();
    let hello = p::Hello {
        version: 1,
        pid: 1,
        client: "remote".into(),
    };
    assert_eq!(g.call(&hello, &[], 0).0, Status::SUCCESS);
    assert_eq!(exec.stats().live_sessions, 1);
    g.call(
        &p::CtxCreate {
            ctx: 0x1000,
            device: 0,
            flags: 0,
        },
        &[],
        0,
    );
    let (s, body) = g.call(
        &p::MemAlloc {
            ctx: 0x1000,
            size: 16,
        },
        &[],
        0,
    );
    assert_eq!(s, Status::SUCCESS);
    let dptr = p::decode_reply::<p::MemAlloc>(&body).unwrap().dptr;
    let h2d = p::MemcpyHtoD {
        ctx: 0x1000,
        stream: 0,
        dst: dptr,
        src: Source::Shm { offset: 0, len: 16 },
    };
    g.call(&h2d, &[9u8; 16], 0);
    let d2h = p::MemcpyDtoH {
        ctx: 0x1000,
        stream: 0,
        src: dptr,
        len: 16,
        dst: Sink::Shm { offset: 0, len: 16 },
    };
    assert_eq!(g.call(&d2h, &[], 16).0, Status::SUCCESS);
    let mut out = [0u8; 16];
    g.mem.read_slice(&mut out, GuestAddress(DATA_OUT)).unwrap();
    assert_eq!(out, [9u8; 16]);
}
