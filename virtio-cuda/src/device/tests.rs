//! The device driven through real virtqueues in guest memory (virtio-queue's mock driver), with
//! well-formed and hostile chains.

use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::envelope::{Envelope, EnvelopeOp};
use super::*;
use crate::protocol::{self as p, DataAccess, Request, Sink, Source};

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

/// A service that answers with what it saw: H2D data comes back in a `DataReply`, D2H sinks are
/// filled with 0xAB.
struct Echo;

impl FrameService for Echo {
    type Conn = u32;

    fn connect(&self) -> u32 {
        0
    }

    fn frame(
        &self,
        frames: &mut u32,
        frame: &[u8],
        data: &dyn DataAccess,
        out: &mut Vec<u8>,
    ) -> Result<bool, String> {
        *frames += 1;
        let (h, req) = p::decode_request(frame).map_err(|e| e.to_string())?;
        let mut status = Status::SUCCESS;
        let mut reply = Vec::new();
        match req {
            Request::MemcpyHtoD(r) => {
                if let Err(s) = data.read_source(&r.src, &mut reply) {
                    status = s;
                }
            }
            Request::MemcpyDtoH(r) => {
                if let Err(s) = data.write_sink(&r.dst, &vec![0xAB; r.len as usize]) {
                    status = s;
                }
            }
            Request::Goodbye(_) => return Ok(true),
            _ => {}
        }
        if !h.is_async() {
            p::encode_response(
                ResponseKind::Reply,
                h.seq,
                status,
                &p::DataReply { data: reply },
                out,
            );
        }
        Ok(false)
    }
}

/// One descriptor: guest address, length, flags.
type Desc = (u64, u32, u16);

struct Rig {
    mem: GuestMemoryMmap,
}

const DATA: u64 = 0x10_0000;

impl Rig {
    fn new() -> Self {
        Rig {
            mem: GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap(),
        }
    }

    /// Writes `bytes` at `DATA + off` and returns a readable descriptor for them.
    fn put(&self, off: u64, bytes: &[u8]) -> Desc {
        self.mem
            .write_slice(bytes, GuestAddress(DATA + off))
            .unwrap();
        (DATA + off, bytes.len() as u32, 0)
    }

    /// Runs one chain through a device; returns (used len, device).
    fn run(&self, dev: &mut CudaDevice<Echo>, descs: &[Desc]) -> u32 {
        let vq = MockSplitQueue::new(&self.mem, 16);
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, flags))| {
                let last = i + 1 == descs.len();
                let flags = if last { flags } else { flags | F_NEXT };
                RawDescriptor::from(SplitDescriptor::new(addr, len, flags, i as u16 + 1))
            })
            .collect();
        vq.add_desc_chains(&raw, 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        dev.process_queue(&self.mem, &mut q).unwrap();
        vq.used().ring().ref_at(0).unwrap().load().len()
    }

    fn read(&self, addr: u64, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

fn envelope(session: u64) -> Vec<u8> {
    Envelope {
        op: EnvelopeOp::Frame,
        session,
    }
    .encode()
    .to_vec()
}

fn request<C: p::Call>(seq: u32, call: &C, session: u64) -> Vec<u8> {
    let mut v = envelope(session);
    p::encode_call(seq, call, &mut v);
    v
}

fn reply_status(bytes: &[u8]) -> (Status, Vec<u8>) {
    let h = p::ResponseHeader::get(&mut p::Reader::new(bytes)).unwrap();
    let body = bytes[p::HEADER_LEN..p::HEADER_LEN + h.body_len as usize].to_vec();
    (h.status, body)
}

#[test]
fn a_sync_request_gets_its_reply_in_the_response_buffer() {
    let rig = Rig::new();
    let mut dev = CudaDevice::new(Echo);
    let req = rig.put(0, &request(9, &p::Init { flags: 0 }, 1));
    let resp = (DATA + 0x1000, 256, F_WRITE);
    let len = rig.run(&mut dev, &[req, resp]);
    assert!(len as usize >= p::HEADER_LEN);
    let (status, _) = reply_status(&rig.read(resp.0, len as usize));
    assert_eq!(status, Status::SUCCESS);
    assert_eq!(dev.session_count(), 1);
}

#[test]
fn data_windows_carry_bulk_data_both_ways() {
    let rig = Rig::new();
    let mut dev = CudaDevice::new(Echo);
    // H2D: the payload is a separate readable descriptor after the frame.
    let h2d = request(
        1,
        &p::MemcpyHtoD {
            ctx: 1,
            stream: 0,
            dst: 0,
            src: Source::Shm { offset: 2, len: 4 },
        },
        7,
    );
    let mut f = h2d;
    f[16 + 6] &= !1; // skip the envelope; clear FLAG_ASYNC // make it synchronous so the echo reply shows what was read
    let d0 = rig.put(0, &f);
    let d1 = rig.put(0x800, &[10, 11, 12, 13, 14, 15]);
    let resp = (DATA + 0x1000, 256, F_WRITE);
    let len = rig.run(&mut dev, &[d0, d1, resp]);
    let (status, body) = reply_status(&rig.read(resp.0, len as usize));
    assert_eq!(status, Status::SUCCESS);
    assert_eq!(
        p::decode_reply::<p::MemcpyDtoH>(&body).unwrap().data,
        vec![12, 13, 14, 15]
    );

    // D2H: the sink is a writable descriptor after the response buffer.
    let d2h = request(
        2,
        &p::MemcpyDtoH {
            ctx: 1,
            stream: 0,
            src: 0,
            len: 8,
            dst: Sink::Shm { offset: 0, len: 8 },
        },
        7,
    );
    let d0 = rig.put(0, &d2h);
    let out = (DATA + 0x2000, 8, F_WRITE);
    let len = rig.run(&mut dev, &[d0, resp, out]);
    assert_eq!(rig.read(out.0, 8), vec![0xAB; 8]);
    assert!(len >= 8 + p::HEADER_LEN as u32);
}

#[test]
fn shm_ranges_outside_the_window_are_rejected() {
    let rig = Rig::new();
    let mut dev = CudaDevice::new(Echo);
    let mut f = request(
        1,
        &p::MemcpyHtoD {
            ctx: 1,
            stream: 0,
            dst: 0,
            src: Source::Shm {
                offset: 4,
                len: u64::MAX,
            },
        },
        7,
    );
    f[16 + 6] &= !1; // skip the envelope; clear FLAG_ASYNC
    let d0 = rig.put(0, &f);
    let d1 = rig.put(0x800, &[1, 2, 3, 4]);
    let resp = (DATA + 0x1000, 256, F_WRITE);
    let len = rig.run(&mut dev, &[d0, d1, resp]);
    let (status, _) = reply_status(&rig.read(resp.0, len as usize));
    assert_eq!(status, Status::ERROR_INVALID_VALUE);
}

#[test]
fn guest_scatter_lists_outside_guest_memory_are_rejected() {
    let rig = Rig::new();
    let mut dev = CudaDevice::new(Echo);
    let mut f = request(
        1,
        &p::MemcpyHtoD {
            ctx: 1,
            stream: 0,
            dst: 0,
            src: Source::Guest(p::List(vec![p::SgEntry {
                gpa: 0x3F_FFF0,
                len: 64,
            }])),
        },
        7,
    );
    f[16 + 6] &= !1; // skip the envelope; clear FLAG_ASYNC
    let d0 = rig.put(0, &f);
    let resp = (DATA + 0x1000, 256, F_WRITE);
    let len = rig.run(&mut dev, &[d0, resp]);
    let (status, _) = reply_status(&rig.read(resp.0, len as usize));
    assert_eq!(status, Status::ERROR_INVALID_VALUE);
}

#[test]
fn hostile_chains_complete_empty_and_change_nothing() {
    let rig = Rig::new();
    let mut dev = CudaDevice::new(Echo);
    let good = rig.put(0, &request(1, &p::Init { flags: 0 }, 3));
    let resp = (DATA + 0x1000, 256, F_WRITE);
    let cases: Vec<(&str, Vec<Desc>)> = vec![
        (
            "descriptor outside guest RAM",
            vec![(0x1000_0000, 64, 0), resp],
        ),
        (
            "descriptor straddling the end of RAM",
            vec![(0x3F_FFF0, 64, 0), resp],
        ),
        ("huge length", vec![(DATA, u32::MAX, 0), resp]),
        ("readable after writable", vec![resp, good]),
        ("no descriptors with data", vec![(DATA, 0, 0)]),
        ("bad envelope", vec![rig.put(0x3000, &[0xFF; 48]), resp]),
        (
            "frame longer than the chain",
            vec![
                rig.put(0x3000, &request(1, &p::Init { flags: 0 }, 3)[..20]),
                resp,
            ],
        ),
        (
            "response buffer outside RAM",
            vec![good, (0x7000_0000, 256, F_WRITE)],
        ),
    ];
    for (what, chain) in cases {
        let before = dev.stats().bad_chains;
        let len = rig.run(&mut dev, &chain);
        assert_eq!(len, 0, "{what}: expected an empty completion");
        assert_eq!(
            dev.stats().bad_chains,
            before + 1,
            "{what}: not counted as bad"
        );
    }
    assert_eq!(dev.session_count(), 0);
}

#[test]
fn a_descriptor_loop_terminates() {
    let rig = Rig::new();
    let mut dev = CudaDevice::new(Echo);
    let vq = MockSplitQueue::new(&rig.mem, 16);
    let req = rig.put(0, &request(1, &p::Init { flags: 0 }, 3));
    // Descriptor 0 -> 1 -> 0 -> …
    let raw = [
        RawDescriptor::from(SplitDescriptor::new(req.0, req.1, F_NEXT, 1)),
        RawDescriptor::from(SplitDescriptor::new(DATA + 0x1000, 64, F_NEXT | F_WRITE, 0)),
    ];
    vq.add_desc_chains(&raw, 0).unwrap();
    let mut q: Queue = vq.create_queue().unwrap();
    dev.process_queue(&rig.mem, &mut q).unwrap();
    // The chain is cut at the queue size; alternating directions make it invalid.
    assert_eq!(vq.used().ring().ref_at(0).unwrap().load().len(), 0);
}

#[test]
fn sessions_are_per_envelope_and_closed_by_the_guest() {
    let rig = Rig::new();
    let mut dev = CudaDevice::new(Echo);
    let resp = (DATA + 0x1000, 256, F_WRITE);
    for s in [1u64, 2, 3] {
        let d = rig.put(0, &request(1, &p::Init { flags: 0 }, s));
        rig.run(&mut dev, &[d, resp]);
    }
    assert_eq!(dev.session_count(), 3);
    let close = Envelope {
        op: EnvelopeOp::Close,
        session: 2,
    }
    .encode();
    let d = rig.put(0, &close);
    assert_eq!(rig.run(&mut dev, &[d]), 0);
    assert_eq!(dev.session_count(), 2);
    let bye = rig.put(0, &request(5, &p::Goodbye {}, 3));
    rig.run(&mut dev, &[bye, resp]);
    assert_eq!(dev.session_count(), 1);
    dev.reset();
    assert_eq!(dev.session_count(), 0);
}

#[test]
fn async_frames_complete_with_zero_length() {
    let rig = Rig::new();
    let mut dev = CudaDevice::new(Echo);
    let d = rig.put(
        0,
        &request(
            1,
            &p::CtxCreate {
                ctx: 0x1000,
                device: 0,
                flags: 0,
            },
            4,
        ),
    );
    assert_eq!(rig.run(&mut dev, &[d]), 0);
    assert_eq!(dev.stats().bad_chains, 0);
}

mod fuzzish {
    use proptest::prelude::*;

    use super::*;

    /// Guest memory full of arbitrary bytes: descriptor table, rings, frames, everything.
    fn run_random(mem_bytes: &[u8], avail_idx: u16, queue_size_log2: u8) {
        let mem: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        mem.write_slice(mem_bytes, GuestAddress(0)).unwrap();
        let size = 1u16 << (queue_size_log2 % 5);
        let mut q = Queue::new(QUEUE_SIZE_MAX).unwrap();
        q.set_size(size);
        q.set_desc_table_address(Some(0x0), Some(0));
        q.set_avail_ring_address(Some(0x1000), Some(0));
        q.set_used_ring_address(Some(0x2000), Some(0));
        q.set_ready(true);
        mem.write_obj(avail_idx, GuestAddress(0x1002)).unwrap();
        let mut dev = CudaDevice::new(Echo);
        // Must terminate and must not panic, whatever the guest wrote.
        let _ = dev.process_queue(&mem, &mut q);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_guest_memory_never_panics_the_device(
            bytes in proptest::collection::vec(any::<u8>(), 0..0x3000),
            avail_idx in any::<u16>(),
            qs in any::<u8>(),
        ) {
            run_random(&bytes, avail_idx, qs);
        }

        /// Mostly-valid chains with random corruption: real envelopes and frames in the data
        /// area, descriptors pointing at them with random lengths and flags.
        #[test]
        fn corrupted_chains_never_panic_the_device(
            descs in proptest::collection::vec((0u64..0x11000, any::<u32>(), any::<u16>(), any::<u16>()), 1..16),
            flips in proptest::collection::vec((0usize..0x200, any::<u8>()), 0..16),
        ) {
            let mut mem = vec![0u8; 0x4000];
            for (i, (addr, len, flags, next)) in descs.iter().enumerate() {
                let d = i * 16;
                mem[d..d + 8].copy_from_slice(&addr.to_le_bytes());
                mem[d + 8..d + 12].copy_from_slice(&(len % 0x2000).to_le_bytes());
                mem[d + 12..d + 14].copy_from_slice(&(flags & 7).to_le_bytes());
                mem[d + 14..d + 16].copy_from_slice(&(next % 16).to_le_bytes());
            }
            // avail ring: one chain at head 0.
            mem[0x1004] = 0;
            let mut frame = request(1, &p::Init { flags: 0 }, 5);
            for (pos, v) in flips {
                if let Some(b) = frame.get_mut(pos) { *b = v; }
            }
            let at = 0x3000;
            let n = frame.len().min(mem.len() - at);
            mem[at..at + n].copy_from_slice(&frame[..n]);
            run_random(&mem, 1, 4);
        }
    }
}
