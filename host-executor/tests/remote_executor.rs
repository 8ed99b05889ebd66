//! The proxy FrameService (VMM / vhost-user → out-of-process executor) against a real executor:
//! data-window sources and sinks are rewritten to inline transfers and back.

use std::cell::RefCell;

use host_executor::client::{InProcess, InProcessConfig};
use virtio_cuda::protocol::{self as p, DataAccess, Reader, ResponseHeader, Sink, Source, Status};
use virtio_cuda::service::{FrameService, RemoteExecutor};

/// A guest's data windows, as the virtio device would present them.
struct Windows {
    input: Vec<u8>,
    output: RefCell<Vec<u8>>,
}

impl DataAccess for Windows {
    fn read_source(&self, src: &Source, out: &mut Vec<u8>) -> Result<(), Status> {
        match src {
            Source::Shm { offset, len } => {
                let (o, l) = (*offset as usize, *len as usize);
                let s = self
                    .input
                    .get(o..o + l)
                    .ok_or(Status::ERROR_INVALID_VALUE)?;
                out.extend_from_slice(s);
                Ok(())
            }
            _ => Err(Status::ERROR_INVALID_VALUE),
        }
    }
    fn write_sink(&self, sink: &Sink, data: &[u8]) -> Result<(), Status> {
        match sink {
            Sink::Shm { offset, len } if data.len() as u64 <= *len => {
                let mut o = self.output.borrow_mut();
                let start = *offset as usize;
                if o.len() < start + data.len() {
                    o.resize(start + data.len(), 0);
                }
                o[start..start + data.len()].copy_from_slice(data);
                Ok(())
            }
            _ => Err(Status::ERROR_INVALID_VALUE),
        }
    }
}

fn call<C: p::Call>(
    svc: &RemoteExecutor,
    conn: &mut <RemoteExecutor as FrameService>::Conn,
    seq: u32,
    c: &C,
    w: &Windows,
) -> (Status, Vec<u8>) {
    let mut f = Vec::new();
    p::encode_call(seq, c, &mut f);
    if C::ASYNC {
        f[6] &= !1;
    }
    let mut out = Vec::new();
    svc.frame(conn, &f, w, &mut out).expect("frame");
    let h = ResponseHeader::get(&mut Reader::new(&out)).unwrap();
    assert_eq!(h.seq, seq);
    (h.status, out[p::HEADER_LEN..].to_vec())
}

#[test]
fn data_windows_cross_the_process_boundary() {
    let exec = InProcess::start_cpu(InProcessConfig::default()).unwrap();
    let svc = RemoteExecutor::new(exec.socket());
    let mut conn = svc.connect();
    let w = Windows {
        input: (0u8..=255).collect(),
        output: RefCell::new(Vec::new()),
    };
    let hello = p::Hello {
        version: 1,
        pid: 1,
        client: "proxy-test".into(),
    };
    assert_eq!(call(&svc, &mut conn, 1, &hello, &w).0, Status::SUCCESS);
    let ctx = 0x1000;
    let mut f = Vec::new();
    p::encode_call(
        2,
        &p::CtxCreate {
            ctx,
            device: 0,
            flags: 0,
        },
        &mut f,
    );
    let mut out = Vec::new();
    svc.frame(&mut conn, &f, &w, &mut out).unwrap();
    assert!(out.is_empty(), "fire-and-forget requests get no response");
    let (s, body) = call(&svc, &mut conn, 3, &p::MemAlloc { ctx, size: 64 }, &w);
    assert_eq!(s, Status::SUCCESS);
    let dptr = p::decode_reply::<p::MemAlloc>(&body).unwrap().dptr;
    let h2d = p::MemcpyHtoD {
        ctx,
        stream: 0,
        dst: dptr,
        src: Source::Shm {
            offset: 100,
            len: 64,
        },
    };
    assert_eq!(call(&svc, &mut conn, 4, &h2d, &w).0, Status::SUCCESS);
    let d2h = p::MemcpyDtoH {
        ctx,
        stream: 0,
        src: dptr,
        len: 64,
        dst: Sink::Shm { offset: 8, len: 64 },
    };
    let (s, body) = call(&svc, &mut conn, 5, &d2h, &w);
    assert_eq!(s, Status::SUCCESS);
    assert!(p::decode_reply::<p::MemcpyDtoH>(&body)
        .unwrap()
        .data
        .is_empty());
    assert_eq!(&w.output.borrow()[8..72], &w.input[100..164]);
    // A window range the guest does not have is refused locally.
    let bad = p::MemcpyHtoD {
        ctx,
        stream: 0,
        dst: dptr,
        src: Source::Shm {
            offset: 250,
            len: 64,
        },
    };
    assert_eq!(
        call(&svc, &mut conn, 6, &bad, &w).0,
        Status::ERROR_INVALID_VALUE
    );
    let bye = svc.frame(
        &mut conn,
        &{
            let mut f = Vec::new();
            p::encode_call(7, &p::Goodbye {}, &mut f);
            f
        },
        &w,
        &mut Vec::new(),
    );
    assert_eq!(bye, Ok(true));
}

#[test]
fn an_unreachable_executor_is_a_clear_error() {
    let svc = RemoteExecutor::new("/nonexistent/vcuda.sock");
    let mut conn = svc.connect();
    let mut f = Vec::new();
    p::encode_call(1, &p::Init { flags: 0 }, &mut f);
    let err = svc
        .frame(
            &mut conn,
            &f,
            &Windows {
                input: vec![],
                output: RefCell::new(vec![]),
            },
            &mut Vec::new(),
        )
        .unwrap_err();
    assert!(err.contains("cannot reach the executor"), "{err}");
}
