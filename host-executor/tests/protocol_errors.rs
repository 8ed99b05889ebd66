//! Bad input through the real protocol: each error reaches only the offending client, and the
//! executor keeps serving everyone else.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use host_executor::client::{InProcess, InProcessConfig};
use host_executor::ExecutorConfig;
use virtio_cuda::client::{Client, ClientError};
use virtio_cuda::protocol::{self as p, Reader, ResponseHeader, Source, Status, HEADER_LEN};

fn executor() -> InProcess {
    InProcess::start_cpu(InProcessConfig {
        executor: ExecutorConfig {
            session_quota: 64 << 20,
            ..Default::default()
        },
        ..Default::default()
    })
    .expect("start executor")
}

/// A session with one context; returns (client, ctx).
fn session(exec: &InProcess) -> (Client, u64) {
    let c = exec.connect("test").expect("connect");
    c.call(&p::Init { flags: 0 }).expect("init");
    let ctx = c.alloc_handle().unwrap();
    c.send(&p::CtxCreate {
        ctx,
        device: 0,
        flags: 0,
    })
    .unwrap();
    (c, ctx)
}

fn status_of<T: std::fmt::Debug>(r: Result<T, ClientError>) -> Status {
    match r {
        Err(ClientError::Status(s)) => s,
        other => panic!("expected a CUDA error status, got {other:?}"),
    }
}

/// Raw frames on a socket, for input no well-behaved client would send.
struct Raw(UnixStream);

impl Raw {
    fn connect(exec: &InProcess) -> Self {
        let s = UnixStream::connect(exec.socket()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Raw(s)
    }
    fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).unwrap();
    }
    fn call<C: p::Call>(&mut self, seq: u32, call: &C) -> (Status, Vec<u8>) {
        let mut f = Vec::new();
        p::encode_call(seq, call, &mut f);
        if C::ASYNC {
            f[6] &= !1;
        }
        self.send(&f);
        self.reply().expect("reply")
    }
    fn reply(&mut self) -> Option<(Status, Vec<u8>)> {
        let mut h = [0u8; HEADER_LEN];
        self.0.read_exact(&mut h).ok()?;
        let h = ResponseHeader::get(&mut Reader::new(&h)).unwrap();
        let mut body = vec![0; h.body_len as usize];
        self.0.read_exact(&mut body).ok()?;
        Some((h.status, body))
    }
    fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.0.read(&mut b), Ok(0) | Err(_))
    }
}

fn hello(raw: &mut Raw) {
    let (s, _) = raw.call(
        0,
        &p::Hello {
            version: 1,
            pid: 1,
            client: "raw".into(),
        },
    );
    assert_eq!(s, Status::SUCCESS);
}

/// Allocates, writes and reads back through a healthy session: proof the executor still serves.
fn still_serves(c: &Client, ctx: u64) {
    let dptr = c.call(&p::MemAlloc { ctx, size: 16 }).unwrap().dptr;
    c.send(&p::MemcpyHtoD {
        ctx,
        stream: 0,
        dst: dptr,
        src: Source::Inline((0u8..16).collect()),
    })
    .unwrap();
    let back = c
        .call(&p::MemcpyDtoH {
            ctx,
            stream: 0,
            src: dptr,
            len: 16,
            dst: p::Sink::Reply,
        })
        .unwrap();
    assert_eq!(back.data, (0u8..16).collect::<Vec<_>>());
    c.call(&p::MemFree { ctx, dptr }).unwrap();
}

fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn garbage_frame_closes_only_that_connection() {
    let exec = executor();
    let (good, ctx) = session(&exec);
    let mut bad = Raw::connect(&exec);
    hello(&mut bad);
    bad.send(b"this is not a vcuda frame at all");
    assert!(bad.is_closed());
    still_serves(&good, ctx);
}

#[test]
fn first_request_must_be_hello() {
    let exec = executor();
    let mut raw = Raw::connect(&exec);
    let mut f = Vec::new();
    p::encode_call(1, &p::Init { flags: 0 }, &mut f);
    raw.send(&f);
    assert!(raw.is_closed());
}

#[test]
fn unknown_opcode_and_malformed_body_get_errors_and_the_session_lives_on() {
    let exec = executor();
    let mut raw = Raw::connect(&exec);
    hello(&mut raw);
    // Unknown opcode, well framed.
    let mut w = p::Writer::new();
    p::RequestHeader {
        opcode: 0x7777,
        flags: 0,
        seq: 5,
        body_len: 3,
    }
    .put(&mut w);
    w.raw(&[1, 2, 3]);
    raw.send(w.as_slice());
    assert_eq!(raw.reply().unwrap().0, Status::ERROR_NOT_SUPPORTED);
    // Known opcode, body too short.
    let mut w = p::Writer::new();
    p::RequestHeader {
        opcode: <p::MemAlloc as p::Call>::OPCODE,
        flags: 0,
        seq: 6,
        body_len: 4,
    }
    .put(&mut w);
    w.u32(1);
    raw.send(w.as_slice());
    assert_eq!(raw.reply().unwrap().0, Status::ERROR_INVALID_VALUE);
    // The session still works.
    let (s, body) = raw.call(7, &p::Init { flags: 0 });
    assert_eq!(s, Status::SUCCESS);
    assert_eq!(
        p::decode_reply::<p::Init>(&body).unwrap().driver_version,
        13000
    );
}

#[test]
fn forged_and_stale_handles_are_rejected() {
    let exec = executor();
    let (c, ctx) = session(&exec);
    // A context that was never created.
    assert_eq!(
        status_of(c.call(&p::MemAlloc {
            ctx: 0xdead_beef,
            size: 16
        })),
        Status::ERROR_INVALID_CONTEXT
    );
    // A stream that was never created.
    assert_eq!(
        status_of(c.call(&p::StreamSynchronize {
            ctx,
            stream: 0x9999_9999
        })),
        Status::ERROR_INVALID_HANDLE
    );
    // A module/function that was never loaded.
    assert_eq!(
        status_of(c.call(&p::ModuleGetFunction {
            ctx,
            module: 0x5555,
            func: c.alloc_handle().unwrap(),
            name: "k".into()
        })),
        Status::ERROR_INVALID_HANDLE
    );
    // Handle ids below the granted range cannot be claimed.
    assert_eq!(
        status_of(c.call(&p::StreamCreate {
            ctx,
            stream: 7,
            flags: 0,
            priority: 0
        })),
        Status::ERROR_INVALID_HANDLE
    );
    // Freeing a pointer that is not an allocation, and freeing twice.
    let dptr = c.call(&p::MemAlloc { ctx, size: 64 }).unwrap().dptr;
    assert_eq!(
        status_of(c.call(&p::MemFree {
            ctx,
            dptr: dptr + 8
        })),
        Status::ERROR_INVALID_VALUE
    );
    c.call(&p::MemFree { ctx, dptr }).unwrap();
    assert_eq!(
        status_of(c.call(&p::MemFree { ctx, dptr })),
        Status::ERROR_INVALID_VALUE
    );
    // Out-of-range copies: past the end of an allocation, and a pointer from nowhere.
    let dptr = c.call(&p::MemAlloc { ctx, size: 64 }).unwrap().dptr;
    let read = |src, len| {
        c.call(&p::MemcpyDtoH {
            ctx,
            stream: 0,
            src,
            len,
            dst: p::Sink::Reply,
        })
    };
    assert_eq!(status_of(read(dptr + 32, 64)), Status::ERROR_INVALID_VALUE);
    assert_eq!(status_of(read(0x10, 4)), Status::ERROR_INVALID_VALUE);
    assert_eq!(status_of(read(dptr, u64::MAX)), Status::ERROR_INVALID_VALUE);
    still_serves(&c, ctx);
}

#[test]
fn another_sessions_pointers_are_not_reachable() {
    let exec = executor();
    let (a, actx) = session(&exec);
    let (b, bctx) = session(&exec);
    let secret = a
        .call(&p::MemAlloc {
            ctx: actx,
            size: 64,
        })
        .unwrap()
        .dptr;
    assert_eq!(
        status_of(b.call(&p::MemcpyDtoH {
            ctx: bctx,
            stream: 0,
            src: secret,
            len: 8,
            dst: p::Sink::Reply
        })),
        Status::ERROR_INVALID_VALUE
    );
    // B's handle ids name nothing in A's session either.
    assert_eq!(
        status_of(a.call(&p::CtxSynchronize { ctx: bctx + 1000 })),
        Status::ERROR_INVALID_CONTEXT
    );
}

#[test]
fn async_errors_are_latched_until_the_next_synchronising_call() {
    let exec = executor();
    let (c, ctx) = session(&exec);
    // Fire-and-forget copy to a bad pointer: no error now...
    c.send(&p::MemcpyHtoD {
        ctx,
        stream: 0,
        dst: 0x42,
        src: Source::Inline(vec![1, 2, 3]),
    })
    .unwrap();
    // ...non-synchronising calls are unaffected...
    c.call(&p::MemGetInfo { ctx }).unwrap();
    // ...the next synchronising call reports it, once.
    assert_eq!(
        status_of(c.call(&p::CtxSynchronize { ctx })),
        Status::ERROR_INVALID_VALUE
    );
    c.call(&p::CtxSynchronize { ctx }).unwrap();
}

#[test]
fn quota_is_enforced_and_reported() {
    let exec = executor();
    let (c, ctx) = session(&exec);
    let info = c.call(&p::MemGetInfo { ctx }).unwrap();
    assert_eq!(info.total, 64 << 20);
    assert_eq!(info.free, 64 << 20);
    let a = c
        .call(&p::MemAlloc {
            ctx,
            size: 48 << 20,
        })
        .unwrap()
        .dptr;
    assert_eq!(c.call(&p::MemGetInfo { ctx }).unwrap().free, 16 << 20);
    assert_eq!(
        status_of(c.call(&p::MemAlloc {
            ctx,
            size: 32 << 20
        })),
        Status::ERROR_OUT_OF_MEMORY
    );
    assert_eq!(
        status_of(c.call(&p::MemAlloc { ctx, size: 0 })),
        Status::ERROR_INVALID_VALUE
    );
    c.call(&p::MemFree { ctx, dptr: a }).unwrap();
    c.call(&p::MemAlloc {
        ctx,
        size: 32 << 20,
    })
    .unwrap();
}

#[test]
fn disconnect_mid_stream_frees_the_session() {
    let exec = executor();
    let (good, gctx) = session(&exec);
    {
        let (c, ctx) = session(&exec);
        c.call(&p::MemAlloc { ctx, size: 1 << 20 }).unwrap();
        assert_eq!(exec.stats().live_sessions, 2);
        assert!(exec.stats().allocated_bytes >= 1 << 20);
        std::mem::forget(c); // no Goodbye; its socket stays open until the raw client below
    }
    let mut raw = Raw::connect(&exec);
    hello(&mut raw);
    let mut ctx_frame = Vec::new();
    p::encode_call(
        1,
        &p::CtxCreate {
            ctx: 0x1000,
            device: 0,
            flags: 0,
        },
        &mut ctx_frame,
    );
    raw.send(&ctx_frame);
    let (s, _) = raw.call(
        2,
        &p::MemAlloc {
            ctx: 0x1000,
            size: 4096,
        },
    );
    assert_eq!(s, Status::SUCCESS);
    // Half a frame, then the client vanishes.
    let mut f = Vec::new();
    p::encode_call(
        3,
        &p::MemAlloc {
            ctx: 0x1000,
            size: 8,
        },
        &mut f,
    );
    raw.send(&f[..10]);
    drop(raw);
    assert!(
        wait_until(|| exec.stats().live_sessions == 2),
        "the vanished client's session was not torn down: {:?}",
        exec.stats()
    );
    still_serves(&good, gctx);
}

#[test]
fn many_concurrent_clients() {
    let exec = executor();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let (c, ctx) = session(&exec);
                for _ in 0..50 {
                    still_serves(&c, ctx);
                }
            });
        }
    });
    assert!(wait_until(|| exec.stats().live_sessions == 0));
    assert_eq!(exec.stats().allocated_bytes, 0);
}

/// Requests whose sizes are claims: none may abort the executor or keep it busy, and each gets
/// its answer promptly (issue 15's single-request attacks).
#[test]
fn claimed_sizes_and_degenerate_shapes_are_answered_promptly() {
    let exec = executor();
    let (c, ctx) = session(&exec);
    let dptr = c.call(&p::MemAlloc { ctx, size: 4096 }).unwrap().dptr;
    let start = Instant::now();
    // A 16 TiB read into a sink that claims to be as large: refused before any buffer exists.
    assert_eq!(
        status_of(c.call(&p::MemcpyDtoH {
            ctx,
            stream: 0,
            src: dptr,
            len: 1 << 44,
            dst: p::Sink::Shm {
                offset: 0,
                len: 1 << 44
            },
        })),
        Status::ERROR_INVALID_VALUE
    );
    // Zero-width memset and copies with 2^63 rows: nothing to do, done at once.
    c.call(&p::Memset {
        ctx,
        stream: 0,
        dst: dptr,
        pitch: 0,
        elem_size: 1,
        value: 7,
        width: 0,
        height: u64::MAX,
    })
    .unwrap();
    let region = p::DevRegion {
        addr: dptr,
        pitch: 0,
        slice_pitch: 0,
    };
    c.call(&p::MemcpyDtoDStrided {
        ctx,
        stream: 0,
        dst: region.clone(),
        src: region.clone(),
        width_bytes: 0,
        height: 1 << 63,
        depth: 1,
    })
    .unwrap();
    // Overlapping rows (pitch 0) of a read that would be 16 GiB: refused, not walked.
    assert_eq!(
        status_of(c.call(&p::MemcpyDtoHStrided {
            ctx,
            stream: 0,
            src: region.clone(),
            width_bytes: 16,
            height: 1 << 30,
            depth: 1,
            dst: p::Sink::Reply,
        })),
        Status::ERROR_INVALID_VALUE
    );
    // A memset of 2^40 rows inside a 4 KiB allocation: refused by its span.
    assert_eq!(
        status_of(c.call(&p::Memset {
            ctx,
            stream: 0,
            dst: dptr,
            pitch: 4096,
            elem_size: 4,
            value: 1,
            width: 1,
            height: 1 << 40,
        })),
        Status::ERROR_INVALID_VALUE
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    still_serves(&c, ctx);
}

/// Before `Hello` a connection is nobody's: a first frame larger than any `Hello` ends it
/// without the executor buffering the claimed body.
#[test]
fn an_oversized_first_frame_closes_the_connection_at_once() {
    let exec = executor();
    let (good, ctx) = session(&exec);
    let mut raw = Raw::connect(&exec);
    let header = p::RequestHeader {
        opcode: <p::Hello as p::Call>::OPCODE,
        flags: 0,
        seq: 1,
        body_len: 60 << 20,
    };
    let mut w = p::Writer::new();
    header.put(&mut w);
    let start = Instant::now();
    raw.send(&w.into_vec());
    assert!(raw.is_closed());
    assert!(start.elapsed() < Duration::from_secs(5));
    still_serves(&good, ctx);
}

/// The executor serves at most `max_sessions` sessions at once; the next `Hello` is refused and
/// a freed slot is reusable.
#[test]
fn sessions_past_the_limit_are_refused() {
    let exec = InProcess::start_cpu(InProcessConfig {
        executor: ExecutorConfig {
            max_sessions: 2,
            ..Default::default()
        },
        ..Default::default()
    })
    .expect("start executor");
    let a = exec.connect("a").expect("first session");
    let b = exec.connect("b").expect("second session");
    assert!(exec.connect("c").is_err(), "a third session was opened");
    drop(a);
    assert!(
        wait_until(|| exec.connect("d").is_ok()),
        "a closed session's slot was not freed"
    );
    drop(b);
}

/// A client that vanishes (its socket closes) while its kernel runs has the kernel cancelled:
/// the session ends within a bounded time instead of when the kernel would (never, here: no
/// watchdog), and the executor goes on serving.
#[test]
fn a_client_that_hangs_up_mid_launch_has_its_kernel_cancelled() {
    const SPIN: &str = ".version 7.0\n.target sm_50\n.address_size 64\n\
        .visible .entry spin(.param .u64 p)\n{\n.reg .b64 %rd<2>;\n.reg .b32 %r<2>;\n.reg .pred %q<2>;\n\
        ld.param.u64 %rd1, [p];\ncvta.to.global.u64 %rd1, %rd1;\nLOOP:\n\
        ld.volatile.global.u32 %r1, [%rd1];\nsetp.eq.u32 %q1, %r1, 0;\n@%q1 bra LOOP;\nret;\n}\n";
    let exec = InProcess::start_cpu(InProcessConfig {
        executor: ExecutorConfig::default(),
        cpu: host_executor::cpu::CpuConfig {
            launch_time_limit: None,
            ..Default::default()
        },
    })
    .expect("start executor");
    let mut raw = Raw::connect(&exec);
    hello(&mut raw);
    let (ctx, module, func) = (0x1000, 0x1001, 0x1002);
    let (s, _) = raw.call(
        1,
        &p::CtxCreate {
            ctx,
            device: 0,
            flags: 0,
        },
    );
    assert_eq!(s, Status::SUCCESS);
    let mut image = SPIN.as_bytes().to_vec();
    image.push(0);
    let (s, _) = raw.call(
        2,
        &p::ModuleLoad {
            ctx,
            module,
            image: Source::Inline(image),
        },
    );
    assert_eq!(s, Status::SUCCESS);
    let (s, _) = raw.call(
        3,
        &p::ModuleGetFunction {
            ctx,
            module,
            func,
            name: "spin".into(),
        },
    );
    assert_eq!(s, Status::SUCCESS);
    let (s, body) = raw.call(4, &p::MemAlloc { ctx, size: 4 });
    assert_eq!(s, Status::SUCCESS);
    let flag = p::decode_reply::<p::MemAlloc>(&body).unwrap().dptr;
    let mut f = Vec::new();
    p::encode_call(
        5,
        &p::Launch {
            ctx,
            func,
            stream: 0,
            grid: [2, 1, 1],
            block: [64, 1, 1],
            shared_bytes: 0,
            flags: 0,
            params: flag.to_le_bytes().to_vec(),
        },
        &mut f,
    );
    raw.send(&f);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(exec.stats().live_sessions, 1);
    let start = Instant::now();
    drop(raw);
    assert!(
        wait_until(|| exec.stats().live_sessions == 0),
        "the session outlived its client by {:?}",
        start.elapsed()
    );
    let (c, ctx) = session(&exec);
    still_serves(&c, ctx);
}
