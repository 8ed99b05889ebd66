//! The virtio-cuda device model over guest memory the fuzzer controls completely: descriptor
//! table, avail ring, envelopes, frames and data windows. It must never panic, never hang and
//! never touch memory outside the guest's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio_cuda::device::CudaDevice;
use virtio_cuda::protocol::{self as p, DataAccess, Request, ResponseKind, Sink, Status};
use virtio_cuda::service::FrameService;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Exercises the data windows the way the executor does.
struct Probe;

impl FrameService for Probe {
    type Conn = ();
    fn connect(&self) {}
    fn frame(
        &self,
        _c: &mut (),
        frame: &[u8],
        data: &dyn DataAccess,
        out: &mut Vec<u8>,
    ) -> Result<bool, String> {
        let (h, req) = p::decode_request(frame).map_err(|e| e.to_string())?;
        let mut v = Vec::new();
        let status = match &req {
            Request::MemcpyHtoD(r) => data.read_source(&r.src, &mut v).err(),
            Request::MemcpyDtoH(r) if !matches!(r.dst, Sink::Reply) => data
                .write_sink(&r.dst, &vec![0x5a; (r.len as usize).min(1 << 16)])
                .err(),
            _ => None,
        };
        if !h.is_async() {
            p::encode_response(
                ResponseKind::Reply,
                h.seq,
                status.unwrap_or(Status::SUCCESS),
                &p::Empty {},
                out,
            );
        }
        Ok(matches!(req, Request::Goodbye(_)))
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let mem: GuestMemoryMmap = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
    let body = &data[4..];
    let _ = mem.write_slice(&body[..body.len().min(0x10000)], GuestAddress(0));
    let mut q = Queue::new(256).unwrap();
    q.set_size(1 << (data[0] % 9));
    q.set_desc_table_address(Some(0), Some(0));
    q.set_avail_ring_address(Some(0x1000 + u32::from(data[1]) * 16), Some(0));
    q.set_used_ring_address(Some(0x3000), Some(0));
    q.set_ready(true);
    let _ = mem.write_obj(
        u16::from_le_bytes([data[2], data[3]]),
        GuestAddress(0x1002 + u64::from(data[1]) * 16),
    );
    let mut dev = CudaDevice::new(Probe);
    let _ = dev.process_queue(&mem, &mut q);
});
