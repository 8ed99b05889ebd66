//! The unix transport's shared-memory data window: bulk bytes outside the socket.

use host_executor::client::{InProcess, InProcessConfig};
use virtio_cuda::client::ClientError;
use virtio_cuda::protocol::{self as p, Sink, Source, Status};

#[test]
fn copies_go_through_the_window_and_ranges_are_checked() {
    let exec = InProcess::start_cpu(InProcessConfig::default()).unwrap();
    let c = exec.connect("window").unwrap();
    assert!(c.window_size() >= 1 << 20, "no data window attached");
    let ctx = c.create_context(0).unwrap();
    let n = 3 << 20;
    let dptr = ctx.alloc(n as u64).unwrap();
    let data: Vec<u8> = (0..n).map(|i| (i * 7 + i / 4096) as u8).collect();
    let h2d = p::MemcpyHtoD {
        ctx: ctx.handle(),
        stream: 0,
        dst: dptr,
        src: Source::Shm {
            offset: 0,
            len: n as u64,
        },
    };
    c.call_with_data(&h2d, &data, &mut []).unwrap();
    let mut back = vec![0u8; n];
    let d2h = p::MemcpyDtoH {
        ctx: ctx.handle(),
        stream: 0,
        src: dptr,
        len: n as u64,
        dst: Sink::Shm {
            offset: 0,
            len: n as u64,
        },
    };
    let r = c.call_with_data(&d2h, &[], &mut back).unwrap();
    assert!(
        r.data.is_empty(),
        "the bytes came through the window, not the reply"
    );
    assert!(back == data);
    // The same bytes read back inline agree.
    assert!(ctx.read(dptr, n as u64).unwrap() == data);
    // A range past the end of the window is refused, and the session lives on.
    let bad = p::MemcpyHtoD {
        ctx: ctx.handle(),
        stream: 0,
        dst: dptr,
        src: Source::Shm {
            offset: c.window_size() as u64 - 8,
            len: 64,
        },
    };
    match c.call_with_data(&bad, &[], &mut []) {
        Err(ClientError::Status(s)) => assert_eq!(s, Status::ERROR_INVALID_VALUE),
        other => panic!("expected INVALID_VALUE, got {other:?}"),
    }
    ctx.synchronize().unwrap();
}
