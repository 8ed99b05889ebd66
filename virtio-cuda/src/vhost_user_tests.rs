//! The backend driven by a Rust test frontend over a socketpair: the UML-style handshake, a
//! request through a virtqueue in shared (memfd) memory, and hostile messages.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryMmap};

use virtio_common::vhost_user::message::{self as m, protocol_features as pf, *};
use virtio_common::vhost_user::socket::Channel;
use virtio_common::vhost_user::*;

use super::backend;
use crate::device::envelope::{Envelope, EnvelopeOp};
use crate::protocol::{self as p, DataAccess, Request as Req, ResponseKind, Status};
use crate::service::FrameService;

/// Answers every synchronous request with an empty success reply.
#[derive(Clone)]
struct Ok0;

impl FrameService for Ok0 {
    type Conn = ();

    fn connect(&self) {}

    fn frame(
        &self,
        _: &mut (),
        frame: &[u8],
        _: &dyn DataAccess,
        out: &mut Vec<u8>,
    ) -> Result<bool, String> {
        let (h, req) = p::decode_request(frame).map_err(|e| e.to_string())?;
        if !h.is_async() {
            p::encode_response(
                ResponseKind::Reply,
                h.seq,
                Status::SUCCESS,
                &p::Empty {},
                out,
            );
        }
        Ok(matches!(req, Req::Goodbye(_)))
    }
}

/// Guest memory layout of the test frontend.
const GPA_BASE: u64 = 0x4000_0000;
const MEM_SIZE: u64 = 0x40_0000;
/// Where the frontend "mapped" it in its own address space (only used for translation).
const UVA_BASE: u64 = 0x7f12_3400_0000;
const RING: u64 = GPA_BASE;
const BUF: u64 = GPA_BASE + 0x10_0000;

fn memfd(size: u64) -> File {
    // SAFETY: the name is a NUL-terminated literal; memfd_create returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(c"vhost-user-test".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create failed");
    // SAFETY: `fd` is a fresh descriptor we own.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(size).unwrap();
    f
}

fn eventfd() -> File {
    // SAFETY: no memory arguments.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: `fd` is a fresh descriptor we own.
    unsafe { File::from_raw_fd(fd) }
}

/// Waits up to `ms` for `f` to become readable.
fn readable(f: &File, ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd.
    unsafe { libc::poll(&mut pfd, 1, ms) == 1 }
}

struct Frontend {
    ch: Channel,
    backend: JoinHandle<Result<(), VhostUserError>>,
}

impl Frontend {
    fn start() -> Self {
        let (a, b) = UnixStream::pair().unwrap();
        let backend = std::thread::spawn(move || backend(Ok0).serve_connection(b));
        Self {
            ch: Channel::new(a),
            backend,
        }
    }

    fn send(&mut self, req: m::Request, flags: u32, payload: &[u8], fds: &[&File]) {
        let h = Header {
            request: req as u32,
            flags: VERSION | flags,
            size: payload.len() as u32,
        };
        let fds: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        self.ch.send(h, payload, &fds).unwrap();
    }

    fn reply(&mut self, req: m::Request) -> Vec<u8> {
        let msg = self.ch.recv().unwrap().expect("reply");
        assert_eq!(msg.header.request, req as u32);
        assert_eq!(msg.header.flags, VERSION | FLAG_REPLY);
        msg.payload
    }

    fn get_u64(&mut self, req: m::Request) -> u64 {
        self.send(req, 0, &[], &[]);
        m::u64_payload(&self.reply(req)).unwrap()
    }

    /// Sends with NEED_REPLY and returns the ack status (0 = success).
    fn acked(&mut self, req: m::Request, payload: &[u8], fds: &[&File]) -> u64 {
        self.send(req, FLAG_NEED_REPLY, payload, fds);
        m::u64_payload(&self.reply(req)).unwrap()
    }

    fn finish(self) -> Result<(), VhostUserError> {
        drop(self.ch);
        self.backend.join().unwrap()
    }
}

fn state(index: u32, num: u32) -> Vec<u8> {
    VringState { index, num }.encode().to_vec()
}

/// Handshake as UML 6.1 does it, memory table with room for two regions.
fn handshake(
    fe: &mut Frontend,
    mem_file: &File,
    q: &MockSplitQueue<GuestMemoryMmap>,
    size: u32,
) -> [File; 2] {
    let features = fe.get_u64(m::Request::GetFeatures);
    assert_ne!(features & F_PROTOCOL_FEATURES, 0);
    fe.send(m::Request::SetFeatures, 0, &features.to_le_bytes(), &[]);
    let proto = fe.get_u64(m::Request::GetProtocolFeatures);
    let want = pf::REPLY_ACK | pf::BACKEND_REQ | pf::CONFIG;
    assert_eq!(proto & want, want);
    fe.send(m::Request::SetProtocolFeatures, 0, &want.to_le_bytes(), &[]);
    assert_eq!(fe.acked(m::Request::SetOwner, &[], &[]), 0);
    let (req_ours, req_theirs) = UnixStream::pair().unwrap();
    let req_file = File::from(std::os::fd::OwnedFd::from(req_theirs));
    assert_eq!(fe.acked(m::Request::SetBackendReqFd, &[], &[&req_file]), 0);
    std::mem::forget(req_ours);

    // Config space.
    let cfg = ConfigMsg {
        offset: 0,
        size: 16,
        flags: 0,
        payload: vec![0; 16],
    };
    fe.send(m::Request::GetConfig, 0, &cfg.encode(), &[]);
    let got = ConfigMsg::decode(&fe.reply(m::Request::GetConfig)).unwrap();
    assert_eq!(got.payload, crate::device::config_space().to_vec());

    let region = MemRegion {
        guest_phys_addr: GPA_BASE,
        memory_size: MEM_SIZE,
        userspace_addr: UVA_BASE,
        mmap_offset: 0,
    };
    let table = encode_mem_table(&[region], 2);
    assert_eq!(table.len(), 72);
    assert_eq!(fe.acked(m::Request::SetMemTable, &table, &[mem_file]), 0);

    let uva = |gpa: GuestAddress| gpa.0 - GPA_BASE + UVA_BASE;
    assert_eq!(fe.acked(m::Request::SetVringNum, &state(0, size), &[]), 0);
    let addr = VringAddr {
        index: 0,
        flags: 0,
        desc: uva(q.desc_table_addr()),
        used: uva(q.used_addr()),
        avail: uva(q.avail_addr()),
        log: 0,
    };
    assert_eq!(fe.acked(m::Request::SetVringAddr, &addr.encode(), &[]), 0);
    assert_eq!(fe.acked(m::Request::SetVringBase, &state(0, 0), &[]), 0);
    let call = eventfd();
    let kick = eventfd();
    assert_eq!(
        fe.acked(m::Request::SetVringCall, &0u64.to_le_bytes(), &[&call]),
        0
    );
    assert_eq!(
        fe.acked(m::Request::SetVringKick, &0u64.to_le_bytes(), &[&kick]),
        0
    );
    assert_eq!(fe.acked(m::Request::SetVringEnable, &state(0, 1), &[]), 0);
    [kick, call]
}

#[test]
fn uml_style_handshake_and_a_request_through_the_queue() {
    let (mem_file, mem) = shared_memory();
    let q = MockSplitQueue::create(&mem, GuestAddress(RING), 16);
    let mut fe = Frontend::start();
    let [mut kick, mut call] = handshake(&mut fe, &mem_file, &q, 16);

    // One Hello request: envelope + frame readable, a response buffer writable.
    let mut frame = Envelope {
        op: EnvelopeOp::Frame,
        session: 9,
    }
    .encode()
    .to_vec();
    p::encode_call(
        5,
        &p::Hello {
            version: 1,
            pid: 1,
            client: "t".into(),
        },
        &mut frame,
    );
    mem.write_slice(&frame, GuestAddress(BUF)).unwrap();
    let resp = BUF + 0x1000;
    let descs = [
        RawDescriptor::from(SplitDescriptor::new(BUF, frame.len() as u32, 1, 1)),
        RawDescriptor::from(SplitDescriptor::new(resp, 256, 2, 0)),
    ];
    q.add_desc_chains(&descs, 0).unwrap();
    kick.write_all(&1u64.to_le_bytes()).unwrap();
    assert!(readable(&call, 5000), "no interrupt from the backend");
    let mut n = [0u8; 8];
    call.read_exact(&mut n).unwrap();
    assert_eq!(q.used().idx().load(), 1);
    let used = q.used().ring().ref_at(0).unwrap().load();
    assert_eq!(used.len(), p::HEADER_LEN as u32);
    let mut hdr = [0u8; p::HEADER_LEN];
    mem.read_slice(&mut hdr, GuestAddress(resp)).unwrap();
    let h = p::ResponseHeader::get(&mut p::Reader::new(&hdr)).unwrap();
    assert_eq!((h.seq, h.status), (5, Status::SUCCESS));

    // Stopping the ring reports where it got to.
    fe.send(m::Request::GetVringBase, 0, &state(0, 0), &[]);
    let base = VringState::decode(&fe.reply(m::Request::GetVringBase)).unwrap();
    assert_eq!(base.num, 1);
    fe.finish().unwrap();
}

fn shared_memory() -> (File, GuestMemoryMmap) {
    let mem_file = memfd(MEM_SIZE);
    let mem = GuestMemoryMmap::<()>::from_ranges_with_files([(
        GuestAddress(GPA_BASE),
        MEM_SIZE as usize,
        Some(FileOffset::new(mem_file.try_clone().unwrap(), 0)),
    )])
    .unwrap();
    (mem_file, mem)
}

/// Waits until the used index reaches `idx`.
fn wait_used(q: &MockSplitQueue<GuestMemoryMmap>, idx: u16) {
    let t0 = std::time::Instant::now();
    while q.used().idx().load() != idx {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(5),
            "used index stuck at {} (want {idx})",
            q.used().idx().load()
        );
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
}

#[test]
fn hostile_chains_complete_empty_and_the_device_lives_on() {
    let (mem_file, mem) = shared_memory();
    let q = MockSplitQueue::create(&mem, GuestAddress(RING), 64);
    let mut fe = Frontend::start();
    let [mut kick, _call] = handshake(&mut fe, &mem_file, &q, 64);
    let d = |addr: u64, len: u32, flags: u16, next: u16| {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
    };
    const NEXT: u16 = 1;
    const WRITE: u16 = 2;
    let outside = GPA_BASE + MEM_SIZE + 0x1000;
    let chains: Vec<(u16, Vec<RawDescriptor>)> = vec![
        // Outside guest memory, straddling its end, below it.
        (0, vec![d(outside, 64, 0, 0)]),
        (1, vec![d(GPA_BASE + MEM_SIZE - 8, 64, 0, 0)]),
        (2, vec![d(0x1000, 64, 0, 0)]),
        // Readable after writable.
        (
            3,
            vec![d(BUF, 16, WRITE | NEXT, 4), d(BUF + 0x100, 32, 0, 0)],
        ),
        // A loop, a next index out of range.
        (5, vec![d(BUF, 16, NEXT, 5)]),
        (6, vec![d(BUF, 16, NEXT, 999)]),
        // A huge length; a zero envelope.
        (7, vec![d(BUF, u32::MAX, 0, 0)]),
        (
            8,
            vec![d(BUF + 0x2000, 48, NEXT, 9), d(BUF + 0x3000, 256, WRITE, 0)],
        ),
    ];
    for (i, (offset, descs)) in chains.iter().enumerate() {
        q.add_desc_chains(descs, *offset).unwrap();
        kick.write_all(&1u64.to_le_bytes()).unwrap();
        wait_used(&q, i as u16 + 1);
        let used = q.used().ring().ref_at(i).unwrap().load();
        assert_eq!(used.len(), 0, "hostile chain {i} earned a response");
    }

    // A well-formed request still works.
    let mut frame = Envelope {
        op: EnvelopeOp::Frame,
        session: 1,
    }
    .encode()
    .to_vec();
    p::encode_call(
        1,
        &p::Hello {
            version: 1,
            pid: 1,
            client: "t".into(),
        },
        &mut frame,
    );
    mem.write_slice(&frame, GuestAddress(BUF + 0x4000)).unwrap();
    let good = [
        d(BUF + 0x4000, frame.len() as u32, NEXT, 21),
        d(BUF + 0x5000, 256, WRITE, 0),
    ];
    q.add_desc_chains(&good, 20).unwrap();
    kick.write_all(&1u64.to_le_bytes()).unwrap();
    let n = chains.len();
    wait_used(&q, n as u16 + 1);
    assert_eq!(
        q.used().ring().ref_at(n).unwrap().load().len(),
        p::HEADER_LEN as u32
    );

    // An available index far ahead of the ring: the queue stops, the backend does not.
    mem.write_obj(1000u16, GuestAddress(q.avail_addr().0 + 2))
        .unwrap();
    kick.write_all(&1u64.to_le_bytes()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_ne!(fe.get_u64(m::Request::GetFeatures), 0);
    fe.send(m::Request::GetVringBase, 0, &state(0, 0), &[]);
    let base = VringState::decode(&fe.reply(m::Request::GetVringBase)).unwrap();
    assert_eq!(base.num, n as u32 + 1);
    fe.finish().unwrap();
}

#[test]
fn bad_requests_are_refused_and_the_connection_goes_on() {
    let mem_file = memfd(MEM_SIZE);
    let mut fe = Frontend::start();
    let proto = pf::REPLY_ACK;
    fe.send(
        m::Request::SetFeatures,
        0,
        &(FEATURES_ALL).to_le_bytes(),
        &[],
    );
    fe.send(
        m::Request::SetProtocolFeatures,
        0,
        &proto.to_le_bytes(),
        &[],
    );
    let region = MemRegion {
        guest_phys_addr: 0,
        memory_size: MEM_SIZE,
        userspace_addr: 0,
        mmap_offset: 0,
    };
    let table = encode_mem_table(&[region], 1);
    // Missing descriptor, wrong payload sizes, out-of-range queue, non-power-of-two size,
    // a region larger than its file, ring addresses outside memory, unknown request.
    assert_eq!(fe.acked(m::Request::SetMemTable, &table, &[]), 1);
    assert_eq!(
        fe.acked(m::Request::SetMemTable, &table[..39], &[&mem_file]),
        1
    );
    assert_eq!(fe.acked(m::Request::SetVringNum, &state(1, 16), &[]), 1);
    assert_eq!(fe.acked(m::Request::SetVringNum, &state(0, 17), &[]), 1);
    assert_eq!(fe.acked(m::Request::SetVringNum, &[0; 3], &[]), 1);
    let huge = encode_mem_table(
        &[MemRegion {
            memory_size: MEM_SIZE * 4,
            ..region
        }],
        1,
    );
    assert_eq!(fe.acked(m::Request::SetMemTable, &huge, &[&mem_file]), 1);
    let wrap = encode_mem_table(
        &[MemRegion {
            guest_phys_addr: u64::MAX - 10,
            ..region
        }],
        1,
    );
    assert_eq!(fe.acked(m::Request::SetMemTable, &wrap, &[&mem_file]), 1);
    assert_eq!(fe.acked(m::Request::SetMemTable, &table, &[&mem_file]), 0);
    assert_eq!(fe.acked(m::Request::SetVringNum, &state(0, 16), &[]), 0);
    let addr = VringAddr {
        index: 0,
        flags: 0,
        desc: MEM_SIZE + 0x1000,
        used: 0x2000,
        avail: 0x3000,
        log: 0,
    };
    assert_eq!(fe.acked(m::Request::SetVringAddr, &addr.encode(), &[]), 0);
    let kick = eventfd();
    assert_eq!(
        fe.acked(m::Request::SetVringKick, &0u64.to_le_bytes(), &[&kick]),
        0
    );
    // Completing the configuration with an unmappable ring fails that request.
    assert_eq!(fe.acked(m::Request::SetVringEnable, &state(0, 1), &[]), 1);
    fe.send(
        m::Request::SetVringCall,
        FLAG_NEED_REPLY,
        &0x100u64.to_le_bytes(),
        &[],
    );
    // Still alive: the features query answers.
    assert_eq!(
        m::u64_payload(&fe.reply(m::Request::SetVringCall)).unwrap(),
        1
    );
    assert_ne!(fe.get_u64(m::Request::GetFeatures), 0);
    let h = Header {
        request: 999,
        flags: VERSION | FLAG_NEED_REPLY,
        size: 0,
    };
    fe.ch.send(h, &[], &[]).unwrap();
    let r = fe.ch.recv().unwrap().unwrap();
    assert_eq!(m::u64_payload(&r.payload).unwrap(), 1);
    fe.finish().unwrap();
}

const FEATURES_ALL: u64 = crate::device::FEATURES | F_PROTOCOL_FEATURES;

#[test]
fn framing_errors_end_the_connection() {
    for bad in [
        Header {
            request: 1,
            flags: 2,
            size: 0,
        },
        Header {
            request: 1,
            flags: VERSION,
            size: 1 << 20,
        },
    ] {
        let fe = Frontend::start();
        let mut ch = fe.ch;
        ch.send(bad, &[], &[]).unwrap();
        let r = fe.backend.join().unwrap();
        assert!(r.is_err(), "{bad:?} accepted");
    }
    // A reply the frontend waits for cannot fail silently: the connection ends instead.
    let mut fe = Frontend::start();
    fe.send(m::Request::GetVringBase, 0, &state(3, 0), &[]);
    assert!(fe.finish().is_err());
}

#[test]
fn message_parsers_check_sizes() {
    assert!(decode_mem_table(&[]).is_err());
    let r = MemRegion {
        guest_phys_addr: 0x1000,
        memory_size: 0x1000,
        userspace_addr: 0x5000,
        mmap_offset: 0,
    };
    for slots in 1..=MAX_REGIONS {
        assert_eq!(
            decode_mem_table(&encode_mem_table(&[r], slots)).unwrap(),
            vec![r]
        );
    }
    assert!(decode_mem_table(&encode_mem_table(&[r], MAX_REGIONS + 1)).is_err());
    let mut t = encode_mem_table(&[r], 2);
    t.pop();
    assert!(decode_mem_table(&t).is_err());
    assert_eq!(r.translate(0x5000), Some(0x1000));
    assert_eq!(r.translate(0x5fff), Some(0x1fff));
    assert_eq!(r.translate(0x6000), None);
    assert_eq!(r.translate(0x4fff), None);
    assert!(VringAddr::decode(&[0; 39]).is_err());
    assert!(VringFd::decode(&0x200u64.to_le_bytes()).is_err());
    assert_eq!(
        VringFd::decode(&0x105u64.to_le_bytes()).unwrap(),
        VringFd {
            index: 5,
            no_fd: true
        }
    );
    assert!(ConfigMsg::decode(&[0; 11]).is_err());
    let mut c = ConfigMsg {
        offset: 0,
        size: 4,
        flags: 0,
        payload: vec![1, 2, 3, 4],
    }
    .encode();
    assert!(ConfigMsg::decode(&c).is_ok());
    c.push(0);
    assert!(ConfigMsg::decode(&c).is_err());
}

proptest::proptest! {
    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
        let _ = decode_mem_table(&bytes);
        let _ = VringAddr::decode(&bytes);
        let _ = VringState::decode(&bytes);
        let _ = VringFd::decode(&bytes);
        let _ = ConfigMsg::decode(&bytes);
        if bytes.len() >= HEADER_LEN {
            let mut h = [0u8; HEADER_LEN];
            h.copy_from_slice(&bytes[..HEADER_LEN]);
            let _ = Header::decode(&h);
        }
    }
}

#[test]
fn a_frontend_that_hangs_up_ends_the_connection_cleanly() {
    let (a, b) = UnixStream::pair().unwrap();
    let t = std::thread::spawn(move || backend(Ok0).serve_connection(b));
    drop(a);
    assert!(t.join().unwrap().is_ok());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Arbitrary message sequences (any request code, flags, payload) never panic the backend:
    /// each ends with the connection served to its end or closed with an error.
    #[test]
    fn arbitrary_message_sequences_never_panic(
        msgs in proptest::collection::vec(
            (0u32..40, proptest::bool::ANY, proptest::collection::vec(proptest::num::u8::ANY, 0..80)),
            0..24,
        )
    ) {
        let (a, b) = UnixStream::pair().unwrap();
        let backend = std::thread::spawn(move || backend(Ok0).serve_connection(b));
        let mut ch = Channel::new(a);
        for (request, need_reply, payload) in msgs {
            let h = Header {
                request,
                flags: VERSION | if need_reply { FLAG_NEED_REPLY } else { 0 },
                size: payload.len() as u32,
            };
            if ch.send(h, &payload, &[]).is_err() {
                break; // the backend closed the connection
            }
        }
        drop(ch);
        // Joining proves the thread did not panic; its result may be an error.
        let _ = backend.join().expect("backend panicked");
    }
}
